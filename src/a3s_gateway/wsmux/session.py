"""One client of a WebSocket multiplexer: ``serve_mux`` (SPEC §5.13, §14.1 ws-mux row, §14.3).

Ring 1. The gateway has sent the ``101`` (no extension, no subprotocol) and hands over the
client's stream; ``serve_mux`` terminates the WebSocket with wsproto and serves the control
protocol (``protocol.py``) until the client leaves, the connection fails, or the caller cancels
it. It owns the client stream and closes it on every path.

Nurseries: one per session (the *session nursery*), owned by ``_Session.run``: the writer task,
one pump task per service channel (``subscriptions.py``) and the opener's channel tasks
(``upstream.py``). The reader runs in ``run``'s own task, inside the nursery's block, and the
cleanup runs there too, before the nursery is cancelled. Every task catches what it can expect
and turns a bug into the end of this session (close 1011, logged); ``serve_mux`` turns the
nursery's exception group back into one exception (a cancellation), so no group escapes.

Tasks and flow control:

- The *reader* (``run``'s task) reads 64 KiB at a time, feeds wsproto and handles each event in
  turn: control messages (``Subscriptions.handle``), pings (answered with pongs through the
  writer's queue), the client's Close. It awaits each action: opening an upstream, sending a
  publish upstream (so a blocked upstream pauses reading from the client, as the SPEC says),
  queuing each reply (so a client that does not read its replies stops being read).
- The *writer* is the only task that writes frames to the client; it takes items from the
  ``Outbox`` (``outbox.py``): FIFO order, at most ``queue_messages`` per channel and
  ``max_message_bytes`` × 4 bytes in all. A service channel's pump waits for room, so a slow
  client stops the reading of that upstream (trio-websocket's small queue fills, then TCP pushes
  back): nothing is dropped. A broadcast hub offers without waiting; a full queue evicts the
  subscriber with ``slow_consumer``. Acks and ordering: ``subscriptions.py``.

Limits and errors: a client message over ``max_message_bytes`` closes with 1009 as soon as its
size passes the limit (fragments are counted as they arrive, nothing past the limit is kept);
invalid UTF-8 closes with 1007 and any other protocol error with 1002 (wsproto's verdicts); a
binary message is answered with a ``bad_request`` error and the session goes on.

Deadlines: the cleanup is one shielded scope of ``CLOSE_BOUND`` (1 s): the writer is stopped,
every subscription dropped (hubs left, pumps cancelled: each closes its upstream with 1001,
shielded, within ``CLOSE_BOUND``, concurrently), the Close frame sent (1001 when cancelled from
outside; 1002, 1007, 1009 or 1011 after such an error; the client's code echoed after its
Close; none when the client is gone) and the client's Close awaited, then the stream closed. A
write that was interrupted leaves the stream unusable for frames: no Close frame follows it.
A cancellation propagates once the cleanup is done.

Must not: write to the client outside the writer (and the cleanup, which holds the send lock
and stops the writer first), buffer a client message past the limit, or let a client or an
upstream crash anything outside this session.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Pong, TextMessage
from wsproto.events import Ping as PingFrame

from a3s_gateway.wsmux.outbox import Outbox
from a3s_gateway.wsmux.protocol import ControlError, ErrorCode, parse_control, utf8_size
from a3s_gateway.wsmux.subscriptions import GOING_AWAY, INTERNAL_ERROR, REASONS, Subscriptions
from a3s_gateway.wsmux.upstream import CLOSE_BOUND, sole_exception

if TYPE_CHECKING:
    from wsproto.events import Event

    from a3s_gateway.config.schema_services import WebsocketMux
    from a3s_gateway.upstream.seam import Handover
    from a3s_gateway.wsmux.hub import HubRegistry
    from a3s_gateway.wsmux.upstream import ChannelOpener

__all__ = ["CLOSE_BOUND", "READ_SIZE", "MuxStats", "serve_mux"]

#: One read from the client (DESIGN.md §3.5).
READ_SIZE: Final = 65536
#: RFC 6455 §7.4.1: the client's message is too big; wsproto's verdict on invalid UTF-8.
MESSAGE_TOO_BIG: Final = 1009
_INVALID_UTF8: Final = 1007
_NO_CODE: Final = 1005
_BROKEN: Final = (trio.BrokenResourceError, trio.ClosedResourceError)

#: What the writer sends: a text frame or a pong.
_Outgoing: TypeAlias = TextMessage | Pong

log: Final = logging.getLogger("a3s_gateway.wsmux")


@dataclass(slots=True)
class MuxStats:
    """What one session did: bytes read from and written to the client (the handed-over
    leftover included), the close code the client sent and the one the gateway sent (None:
    none)."""

    bytes_in: int = 0
    bytes_out: int = 0
    close_client: int | None = None
    close_gateway: int | None = None


async def serve_mux(
    client: Handover,
    settings: WebsocketMux,
    opener: ChannelOpener,
    hubs: HubRegistry,
    *,
    service: str,
) -> MuxStats:
    """Serve one multiplexer client until it leaves (see the module docstring); returns what
    the session did. Closes ``client.stream`` on every path. A cancellation from outside
    still closes the client (1001) and every upstream (1001) within ``CLOSE_BOUND``, then
    propagates; a bug ends the session (1011, logged) and never raises."""
    session = _Session(client, settings, opener, hubs, service)
    try:
        await session.run()
    except BaseExceptionGroup as group:
        error = sole_exception(group)
        if not isinstance(error, Exception):
            raise error from None  # a cancellation (or KeyboardInterrupt), as one exception
        log.error("ws-mux session of %r failed", service, exc_info=error)
    finally:
        await _close_stream(client.stream)
    return session.stats


async def _close_stream(stream: trio.abc.Stream) -> None:
    """Close the client stream, bounded and even when cancelled (idempotent)."""
    with (
        trio.move_on_after(CLOSE_BOUND, shield=True),
        contextlib.suppress(*_BROKEN, OSError),
    ):
        await stream.aclose()


def _sent_code(code: int) -> int | None:
    """The code a Close frame carried: None for 1005, which stands for "no code" (RFC 6455
    §7.4.1: never sent, only reported)."""
    return None if code == _NO_CODE else int(code)


class _Session:
    """The state of one client; the reader and cleanup live in ``run``, see the docstring."""

    __slots__ = (
        "_channels",
        "_close",
        "_dirty",
        "_ended",
        "_max_message_bytes",
        "_outbox",
        "_parser_alive",
        "_parts",
        "_reading",
        "_send_lock",
        "_service",
        "_size",
        "_stream",
        "_writing",
        "_ws",
        "stats",
    )

    def __init__(
        self,
        client: Handover,
        settings: WebsocketMux,
        opener: ChannelOpener,
        hubs: HubRegistry,
        service: str,
    ) -> None:
        self._stream = client.stream
        self._service = service
        self._max_message_bytes = settings.max_message_bytes
        self.stats = MuxStats(bytes_in=len(client.leftover))
        self._ws = Connection(ConnectionType.SERVER)
        self._ws.receive_data(client.leftover)
        total = settings.max_message_bytes * 4
        self._outbox: Outbox[_Outgoing] = Outbox(
            per_lane=settings.queue_messages, total_bytes=total
        )
        self._channels = Subscriptions(
            settings, opener, hubs, service, self._outbox, on_bug=self._internal_error
        )
        self._reading = trio.CancelScope()
        self._writing = trio.CancelScope()
        self._send_lock = trio.Lock()
        #: A write to the client was interrupted: its framing is lost, no frame may follow.
        self._dirty = False
        #: Whether the session is ending, and the Close frame to send then (None: none).
        self._ended = False
        self._close: CloseConnection | None = None
        #: False once wsproto gave up on the client's bytes (1002, 1007): no Close to await.
        self._parser_alive = True
        #: The client message being received: its text fragments and its size so far.
        self._parts: list[str] = []
        self._size = 0

    # --- lifecycle ---

    async def run(self) -> None:
        """Read until the session ends, then clean up (shielded, bounded) and stop the tasks."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write)
            try:
                with self._reading:
                    await self._read(nursery)
            except Exception:
                log.exception("ws-mux session of %r failed", self._service)
                self._internal_error()
            finally:
                with trio.move_on_after(CLOSE_BOUND, shield=True):
                    await self._shut_down()
                nursery.cancel_scope.cancel()

    def _finish(self, close: CloseConnection | None) -> None:
        """End the session (the first reason wins): stop reading; ``close`` is the Close
        frame the cleanup sends (None: the client is gone)."""
        if not self._ended:
            self._ended = True
            self._close = close
        self._reading.cancel()

    def _internal_error(self) -> None:
        """A bug (logged where it was caught) ends the session with 1011."""
        self._finish(CloseConnection(INTERNAL_ERROR, REASONS[INTERNAL_ERROR]))

    async def _shut_down(self) -> None:
        """The cleanup of the module docstring; runs shielded within ``CLOSE_BOUND``."""
        if not self._ended:  # cancelled from outside: the gateway is going away
            self._finish(CloseConnection(GOING_AWAY, REASONS[GOING_AWAY]))
        self._writing.cancel()
        self._channels.drop_all()
        try:
            async with self._send_lock:  # the writer lets go of it once cancelled
                sent = self._close is not None and await self._send_close(self._close)
            if sent and self._parser_alive and self._ws.state is ConnectionState.LOCAL_CLOSING:
                await self._await_close_reply()
        except Exception:
            log.exception("ws-mux session of %r failed while closing", self._service)
        # Within the cleanup's deadline; cancelled, aclose still closes (without ceremony).
        with contextlib.suppress(*_BROKEN, OSError):
            await self._stream.aclose()

    async def _send_close(self, close: CloseConnection) -> bool:
        """Send ``close`` unless the stream is unusable or a Close was exchanged already."""
        state = self._ws.state
        if self._dirty or state not in {ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING}:
            return False
        data = self._ws.send(close)
        try:
            await self._stream.send_all(data)
        except _BROKEN:
            return False
        self.stats.bytes_out += len(data)
        self.stats.close_gateway = _sent_code(close.code)
        return True

    async def _await_close_reply(self) -> None:
        """Read (and drop) what the client still sends until its Close or its end."""
        ws = self._ws
        while True:
            for event in ws.events():
                if isinstance(event, CloseConnection):
                    if ws.state is ConnectionState.CLOSED:
                        self.stats.close_client = _sent_code(event.code)
                    return
            data = await self._receive()
            if not data:
                return
            ws.receive_data(data)

    # --- the writer ---

    async def _write(self) -> None:
        """The writer task: frames from the outbox to the client, in order."""
        try:
            with self._writing:
                while True:
                    item = await self._outbox.get()
                    async with self._send_lock:
                        if not await self._send(item):
                            return
        except Exception:
            log.exception("ws-mux writer of %r failed", self._service)
            self._internal_error()

    async def _send(self, event: Event) -> bool:
        """Write one frame (the send lock held); False once the client cannot take frames."""
        if self._dirty or self._ws.state is not ConnectionState.OPEN:
            return False  # (after the client's Close only the cleanup's echo goes out)
        data = self._ws.send(event)
        self._dirty = True
        try:
            await self._stream.send_all(data)
        except _BROKEN:
            self._finish(None)
            return False
        self._dirty = False
        self.stats.bytes_out += len(data)
        return True

    # --- the reader ---

    async def _read(self, nursery: trio.Nursery) -> None:
        """Handle the client's events until the session ends."""
        ws = self._ws
        while True:
            for event in ws.events():
                if await self._on_event(event, nursery):
                    return
            data = await self._receive()
            if not data:
                self._finish(None)  # the client left without a Close
                return
            ws.receive_data(data)

    async def _receive(self) -> bytes:
        """One read from the client; b"" at its end (or a reset)."""
        try:
            data = await self._stream.receive_some(READ_SIZE)
        except _BROKEN:
            return b""
        self.stats.bytes_in += len(data)
        return data if isinstance(data, bytes) else bytes(data)  # sockets give bytes

    async def _on_event(self, event: Event, nursery: trio.Nursery) -> bool:
        """Handle one wsproto event; True when the session ends with it."""
        match event:
            case TextMessage() | BytesMessage():
                return await self._on_data(event, nursery)
            case PingFrame():
                pong = event.response()
                await self._outbox.put(self._channels.control, pong, len(event.payload))
            case CloseConnection():
                if self._ws.state is ConnectionState.REMOTE_CLOSING:
                    self.stats.close_client = _sent_code(event.code)
                    self._finish(event.response())  # echo the client's code
                else:  # wsproto found a protocol error (1002) or invalid UTF-8 (1007)
                    self._parser_alive = False
                    code = int(event.code)
                    why = "invalid UTF-8" if code == _INVALID_UTF8 else "protocol error"
                    self._finish(CloseConnection(code, why))
                return True
            case _:
                pass  # a pong: nothing to do
        return False

    async def _on_data(self, event: TextMessage | BytesMessage, nursery: trio.Nursery) -> bool:
        """Count a fragment against the size limit; handle the message once it is complete."""
        data = event.data
        if isinstance(data, str):
            self._size += utf8_size(data)
            self._parts.append(data)
        else:
            self._size += len(data)  # a binary message is refused: counted, not kept
        if self._size > self._max_message_bytes:
            self._finish(CloseConnection(MESSAGE_TOO_BIG, "message too big"))
            return True
        if not event.message_finished:
            return False
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        if isinstance(event, BytesMessage):
            message = "binary frames are not accepted: control messages are JSON text"
            await self._channels.reply_error(ControlError(ErrorCode.BAD_REQUEST, message))
        else:
            await self._channels.handle(parse_control(text), nursery)
        return False
