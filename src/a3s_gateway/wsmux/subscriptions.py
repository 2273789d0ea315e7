"""The subscriptions of one multiplexer client (SPEC §5.13): what the control messages do.

Ring 1. ``Subscriptions`` is the session's half that knows channels: it answers each control
message (``handle``), holds the client's subscriptions, is the client's ``HubMember`` for
broadcast channels, and runs one *pump* per service channel. It owns no nursery: it starts the
pumps (and the opener starts its channel tasks) in the session nursery it is handed
(``session.py``), and it only queues what the client gets, in the session's ``Outbox``.

- ``subscribe``: a broadcast channel is joined after its ``ack`` was queued; a service
  channel's upstream is opened first (the reader waits: the ack follows the upstream's
  acceptance), then the ack is queued and only then its pump starts, so the ack precedes every
  message of the channel. Subscribing twice acks again with ``"already": true``.
- ``unsubscribe``: the channel's queued messages are dropped before its ack is queued (nothing
  of it follows the ack); a broadcast hub is left, a pump is cancelled and closes its upstream
  with 1000.
- ``publish``: a service channel's upstream send is awaited (the reader, hence the client,
  waits while the upstream does not read); a broadcast channel's message is encoded once and
  offered to every member at once.
- A pump moves upstream messages into the channel's lane and waits for room (backpressure:
  the upstream is not read meanwhile, nothing is dropped). The upstream's end becomes a
  ``closed`` message; an oversized message ``message_too_large`` then ``closed`` (1009). The
  pump closes its upstream on every path, shielded, within ``CLOSE_BOUND`` (1001 unless the
  client unsubscribed or the message was too large).

Must not: write to the client, wait for a broadcast subscriber (``offer`` never blocks; a full
queue evicts with ``slow_consumer``), or let a bug out of a pump (it is logged and ends the
session through ``on_bug``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Final, assert_never

import trio
from wsproto.events import TextMessage

from a3s_gateway.wsmux.hub import Delivery
from a3s_gateway.wsmux.outbox import Lane
from a3s_gateway.wsmux.protocol import (
    ControlError,
    ControlFrame,
    ErrorCode,
    ListChannels,
    MessageId,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    encode_ack,
    encode_channels,
    encode_closed,
    encode_error,
    encode_message,
    encode_pong,
    utf8_size,
)
from a3s_gateway.wsmux.upstream import (
    CLOSE_BOUND,
    ChannelClosed,
    ChannelRejected,
    ChannelUnavailable,
    MessageTooLarge,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from wsproto.events import Pong

    from a3s_gateway.config.schema_services import MuxChannel, WebsocketMux
    from a3s_gateway.wsmux.hub import HubRegistry
    from a3s_gateway.wsmux.outbox import Outbox
    from a3s_gateway.wsmux.upstream import ChannelOpener, UpstreamChannel

__all__ = ["GOING_AWAY", "INTERNAL_ERROR", "NORMAL", "REASONS", "Subscriptions"]

#: RFC 6455 §7.4.1 close codes sent to upstreams (and, some, to the client).
NORMAL: Final = 1000
GOING_AWAY: Final = 1001
MESSAGE_TOO_BIG: Final = 1009
INTERNAL_ERROR: Final = 1011
REASONS: Final = {
    NORMAL: "unsubscribed",
    GOING_AWAY: "going away",
    MESSAGE_TOO_BIG: "message too large",
    INTERNAL_ERROR: "internal error",
}

log: Final = logging.getLogger("a3s_gateway.wsmux")


class _Subscription:
    """One subscribed channel: its lane in the outbox and, for a service channel, its upstream
    and the scope of its pump."""

    __slots__ = ("close_code", "lane", "name", "scope", "upstream")

    def __init__(self, name: str, upstream: UpstreamChannel | None) -> None:
        self.name = name
        self.lane = Lane()
        self.upstream = upstream
        self.scope = trio.CancelScope()
        #: The code the pump closes the upstream with (changed before cancelling the pump).
        self.close_code = GOING_AWAY


class Subscriptions:
    """The channels of one client (see the module docstring)."""

    __slots__ = (
        "_control",
        "_hubs",
        "_on_bug",
        "_opener",
        "_outbox",
        "_service",
        "_settings",
        "_subs",
    )

    def __init__(
        self,
        settings: WebsocketMux,
        opener: ChannelOpener,
        hubs: HubRegistry,
        service: str,
        outbox: Outbox[TextMessage | Pong],
        *,
        on_bug: Callable[[], None],
    ) -> None:
        self._settings = settings
        self._opener = opener
        self._hubs = hubs
        self._service = service
        self._outbox = outbox
        self._on_bug = on_bug
        #: Acks, pongs, errors and channel lists share this lane.
        self._control = Lane()
        self._subs: dict[str, _Subscription] = {}

    @property
    def control(self) -> Lane:
        """The lane of control messages (the session queues pongs there too)."""
        return self._control

    async def reply(self, data: bytes) -> None:
        """Queue a control message (waits while the control lane is full)."""
        await self._outbox.put(self._control, TextMessage(data.decode()), len(data))

    async def reply_error(self, error: ControlError) -> None:
        """Queue an ``error`` message."""
        await self.reply(encode_error(error))

    async def handle(self, frame: ControlFrame | ControlError, nursery: trio.Nursery) -> None:
        """Act on one control message (``nursery``: where upstream channels run)."""
        match frame:
            case ControlError():
                await self.reply_error(frame)
            case Subscribe():
                await self._subscribe(frame, nursery)
            case Unsubscribe():
                await self._unsubscribe(frame)
            case Publish():
                await self._publish(frame)
            case Ping():
                await self.reply(encode_pong(frame.id))
            case ListChannels():
                await self.reply(encode_channels(self._subs, frame.id))
            case _:
                assert_never(frame)

    def _missing(self, channel: str, message_id: MessageId | None) -> ControlError:
        """The error for a channel the client is not subscribed to."""
        if channel not in self._settings.channels:
            return ControlError(ErrorCode.UNKNOWN_CHANNEL, "no such channel", message_id, channel)
        return ControlError(ErrorCode.NOT_SUBSCRIBED, "not subscribed", message_id, channel)

    # --- subscriptions ---

    async def _subscribe(self, frame: Subscribe, nursery: trio.Nursery) -> None:
        name, message_id = frame.channel, frame.id
        config = self._settings.channels.get(name)
        if config is None:
            await self.reply_error(self._missing(name, message_id))
        elif name in self._subs:
            await self.reply(encode_ack("subscribe", name, message_id, already=True))
        elif len(self._subs) >= self._settings.max_channels:
            limit = self._settings.max_channels
            error = ControlError(
                ErrorCode.TOO_MANY_CHANNELS, f"at most {limit} channels", message_id, name
            )
            await self.reply_error(error)
        elif config.broadcast:
            await self.reply(encode_ack("subscribe", name, message_id))
            self._subs[name] = _Subscription(name, None)
            self._hubs.join(self._service, name, self)
        else:
            upstream = await self._open(frame, config, nursery)
            if upstream is not None:
                await self._start_channel(frame, upstream, nursery)

    async def _open(
        self, frame: Subscribe, config: MuxChannel, nursery: trio.Nursery
    ) -> UpstreamChannel | None:
        """The channel's upstream, or None after replying with the error."""
        name, message_id = frame.channel, frame.id
        if config.service is None:  # (config validation rules this out)
            detail = "the channel has no service"
            error = ControlError(ErrorCode.UPSTREAM_UNAVAILABLE, detail, message_id, name)
        else:
            try:
                return await self._opener.open(nursery, config.service, config.path)
            except ChannelRejected as rejected:
                status = rejected.status
                detail = f"the upstream answered {status}"
                code = ErrorCode.UPSTREAM_REJECTED
                error = ControlError(code, detail, message_id, name, status)
            except ChannelUnavailable as unavailable:
                code = ErrorCode.UPSTREAM_UNAVAILABLE
                error = ControlError(code, unavailable.detail, message_id, name)
        await self.reply_error(error)
        return None

    async def _start_channel(
        self, frame: Subscribe, upstream: UpstreamChannel, nursery: trio.Nursery
    ) -> None:
        """Ack, then start the pump, which owns the upstream from then on."""
        try:
            await self.reply(encode_ack("subscribe", frame.channel, frame.id))
        except BaseException:
            with trio.move_on_after(CLOSE_BOUND, shield=True):
                await upstream.aclose(GOING_AWAY, REASONS[GOING_AWAY])
            raise
        sub = _Subscription(frame.channel, upstream)
        self._subs[frame.channel] = sub
        nursery.start_soon(self._pump, sub)

    async def _unsubscribe(self, frame: Unsubscribe) -> None:
        sub = self._subs.get(frame.channel)
        if sub is None:
            await self.reply_error(self._missing(frame.channel, frame.id))
            return
        self._drop(sub, NORMAL)
        await self.reply(encode_ack("unsubscribe", frame.channel, frame.id))

    def drop_all(self) -> None:
        """The session ends: drop every subscription (upstreams close with 1001)."""
        for sub in list(self._subs.values()):
            self._drop(sub, GOING_AWAY)

    def _drop(self, sub: _Subscription, code: int) -> None:
        """End ``sub`` for this client: nothing more of it is queued or sent; a service
        channel's pump closes its upstream with ``code``."""
        if self._subs.get(sub.name) is sub:
            del self._subs[sub.name]
        self._outbox.close_lane(sub.lane)
        if sub.upstream is None:
            self._hubs.leave(self._service, sub.name, self)
        else:
            sub.close_code = code
            sub.scope.cancel()

    async def _publish(self, frame: Publish) -> None:
        sub = self._subs.get(frame.channel)
        if sub is None:
            await self.reply_error(self._missing(frame.channel, frame.id))
            return
        payload = frame.payload
        size = utf8_size(payload) if isinstance(payload, str) else len(payload)
        limit = self._settings.max_message_bytes
        if size > limit:
            message = f"a message may have at most {limit} bytes"
            error = ControlError(ErrorCode.MESSAGE_TOO_LARGE, message, frame.id, frame.channel)
            await self.reply_error(error)
        elif sub.upstream is None:
            data = encode_message(sub.name, payload)
            echo = self._settings.channels[sub.name].echo
            delivery = Delivery(data.decode(), len(data))
            self._hubs.publish(self._service, sub.name, delivery, sender=self, echo=echo)
        else:
            # A send to a channel that just ended is lost: its pump reports the end (closed).
            with contextlib.suppress(ChannelClosed):
                await sub.upstream.send_message(payload)

    # --- broadcast (HubMember) ---

    def offer(self, channel: str, delivery: Delivery) -> bool:
        """``HubMember.offer``: queue a hub's message without waiting."""
        sub = self._subs.get(channel)
        if sub is None or sub.upstream is not None:
            return True  # (not subscribed any more: nothing to deliver, nothing to evict)
        return self._outbox.put_nowait(sub.lane, TextMessage(delivery.text), delivery.size)

    def evicted(self, channel: str) -> None:
        """``HubMember.evicted``: the queue was full; the subscription is over."""
        sub = self._subs.get(channel)
        if sub is not None and sub.upstream is None:
            del self._subs[channel]
        message = "the client read too slowly: unsubscribed"
        data = encode_error(ControlError(ErrorCode.SLOW_CONSUMER, message, None, channel))
        # Over the bounds if need be: one small error per eviction, after the channel's queue.
        self._outbox.put_nowait(self._control, TextMessage(data.decode()), len(data), force=True)

    # --- service channels ---

    async def _pump(self, sub: _Subscription) -> None:
        """A service channel's task: upstream messages to the outbox until the channel ends;
        closes the upstream on every path (shielded, bounded)."""
        upstream = sub.upstream
        assert upstream is not None  # only service channels have pumps
        try:
            with sub.scope:
                await self._relay(sub, upstream)
        except Exception:
            log.exception("ws-mux channel %r of %r failed", sub.name, self._service)
            sub.close_code = INTERNAL_ERROR
            self._on_bug()
        finally:
            if self._subs.get(sub.name) is sub:
                del self._subs[sub.name]
            with trio.move_on_after(CLOSE_BOUND, shield=True):
                await upstream.aclose(sub.close_code, REASONS.get(sub.close_code, ""))

    async def _relay(self, sub: _Subscription, upstream: UpstreamChannel) -> None:
        limit = self._settings.max_message_bytes
        while True:
            try:
                message = await upstream.get_message()
            except MessageTooLarge:
                await self._too_large(sub)
                return
            except ChannelClosed as closed:
                await self._queue(sub, encode_closed(sub.name, closed.code, closed.reason))
                return
            size = utf8_size(message) if isinstance(message, str) else len(message)
            if size > limit:  # (an opener that does not enforce the limit itself)
                await self._too_large(sub)
                return
            await self._queue(sub, encode_message(sub.name, message))

    async def _too_large(self, sub: _Subscription) -> None:
        sub.close_code = MESSAGE_TOO_BIG
        limit = self._settings.max_message_bytes
        message = f"the upstream sent a message over {limit} bytes: channel closed"
        error = ControlError(ErrorCode.MESSAGE_TOO_LARGE, message, None, sub.name)
        await self._queue(sub, encode_error(error))
        await self._queue(sub, encode_closed(sub.name, MESSAGE_TOO_BIG, REASONS[MESSAGE_TOO_BIG]))

    async def _queue(self, sub: _Subscription, data: bytes) -> None:
        """Queue a message of ``sub``'s channel, waiting for room (backpressure)."""
        await self._outbox.put(sub.lane, TextMessage(data.decode()), len(data))
