"""``Http2Downstream``: the ``Downstream`` seam over one HTTP/2 stream, and ``Http2Link``, what
the streams of one connection share (the adapter, the writer, the flow-control wake-ups).

Ring 1. Owns no nursery (the connection's driver, ``http2_driver.py``, runs each stream's
exchange in its own). Deadlines set here (SPEC §5.5, §5.8): in each request-body read, the
body idle gap and the request-body deadline (``ClientTimeout``, as on HTTP/1.1); while a
response waits for send credit, the body idle gap (a client that never opens its window, a
zero-window stall, loses the stream); around every socket write, the same gap (a client that
stops reading loses the connection).

Flow control: request DATA is acknowledged to the client (``acknowledge``) only after the
upstream took it, so at most one stream window is buffered per stream; a response's DATA is
sent only within the client's windows, one ``max_frame`` at a time, and a stream waits for a
WINDOW_UPDATE rather than buffering (the exchange stops reading its upstream meanwhile).

Aborting a stream resets only that stream (``INTERNAL_ERROR``); the client resetting it
(``cancel``) cancels its exchange's task (and with it the upstream attempt, whose connection is
then never pooled). ``close_after_response`` means nothing to one stream.

HTTP/2 has no protocol switch, but an extended ``CONNECT`` (RFC 8441; ``tunnel``: the head's
``upgrade``) turns its stream into a tunnel once a 2xx went out: ``take_over`` then hands the
stream itself to the WebSocket relay as an ``Http2Tunnel`` (``server/http2_tunnel.py``; this
class is its ``TunnelSide``: ``wait_data``, ``send_data``, ``end_data``, ``close_tunnel``).
Such a head has no request body: the client's DATA, including any it sent before the 2xx, stay
queued for the tunnel. Once taken over, the client's RST_STREAM no longer cancels the task (the
relay is in it): the tunnel's next read or write fails instead, and the relay ends the session
as for a client that went away. Any other ``take_over`` raises ``UpgradeUnavailable``.

Must not: parse bytes (``protocols/http2.py``), route or proxy (``exchange/``).
"""

from __future__ import annotations

import contextlib
import math
from collections import deque
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Informational,
    ProtocolViolation,
    ResponseHead,
)
from a3s_gateway.protocols.http2 import ErrorCode
from a3s_gateway.server.downstream import (
    ClientGone,
    ClientTimeout,
    Handover,
    UpgradeUnavailable,
    with_response_fields,
)
from a3s_gateway.server.http2_tunnel import Http2Tunnel

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.http2 import Http2Server

__all__ = ["Http2Downstream", "Http2Link"]

_END: Final = EndOfBody()


class Http2Link:
    """One HTTP/2 connection as its streams use it: the adapter, one writer at a time, and
    the wake-ups of streams waiting for send credit."""

    __slots__ = ("_done", "_writing", "adapter", "broken", "idle_gap", "stream", "waiting")

    def __init__(self, stream: trio.abc.Stream, adapter: Http2Server, idle_gap: float) -> None:
        self.stream = stream
        self.adapter = adapter
        self.idle_gap = idle_gap
        #: A write is in progress; the others wait in ``_done`` (a flag and a parking lot: no
        #: checkpoint when nobody writes, where a ``trio.Lock`` costs two).
        self._writing = False
        self._done = trio.lowlevel.ParkingLot()
        #: Streams waiting for send credit, by id (0 never: the connection wakes them all).
        self.waiting: dict[int, trio.Event] = {}
        #: A write failed or stalled: the connection is over.
        self.broken = False

    async def flush(self) -> None:
        """Write everything the adapter queued, one writer at a time, within the idle gap.
        A stream that waited for the writer usually finds its frames already sent with the
        writer's next batch. Raises ``ClientGone`` when the write fails or stalls (the
        connection is then broken)."""
        while self._writing:
            await self._done.park()
        if self.broken:
            raise ClientGone
        data = self.adapter.data_to_send()
        if not data:
            return
        self._writing = True
        try:
            with trio.move_on_after(self.idle_gap) as stall:
                try:
                    await self.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                    self.broken = True
                    raise ClientGone from error
            if stall.cancelled_caught:
                self.broken = True
                raise ClientGone
        finally:
            self._writing = False
            self._done.unpark_all()

    def window_opened(self, stream_id: int) -> None:
        """Wake the stream waiting for credit on ``stream_id`` (every one for 0)."""
        if stream_id == 0:
            events = list(self.waiting.values())
            self.waiting.clear()
            for event in events:
                event.set()
            return
        if stream_id in self.waiting:
            self.waiting.pop(stream_id).set()


class Http2Downstream:
    """The client side of one HTTP/2 stream's exchange (see the module docstring)."""

    __slots__ = (
        "_body_deadline",
        "_body_idle",
        "_link",
        "_unacked",
        "_wake",
        "aborted",
        "cancelled",
        "grpc_status",
        "head_sent",
        "inbound",
        "received_bytes",
        "request_complete",
        "response_complete",
        "response_fields",
        "response_started",
        "scope",
        "sent_bytes",
        "status",
        "stream_id",
        "taken",
        "tunnel",
    )

    def __init__(
        self, link: Http2Link, head: RequestHead, body_idle: float, request_body: float
    ) -> None:
        self._link = link
        self.stream_id = head.stream_id
        self._body_idle = body_idle
        self._body_deadline = trio.current_time() + request_body if head.has_body else math.inf
        #: Request DATA and its end, as the driver received them (bounded by the window).
        self.inbound: deque[BodyChunk | EndOfBody] = deque()
        self._wake: trio.Event | None = None
        #: Body bytes received and not yet acknowledged (handed on or discarded at the end).
        self._unacked = 0
        self.request_complete = not head.has_body
        self.response_started = False
        self.response_complete = False
        self.aborted = False
        #: The client reset the stream.
        self.cancelled = False
        #: The exchange's cancel scope (the driver's), cancelled when the client resets.
        self.scope = trio.CancelScope()
        self.status = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        self.head_sent = -1.0
        self.response_fields: list[tuple[bytes, bytes]] = []
        #: The ``grpc-status`` sent to the client (trailers or trailers-only head); -1: none.
        self.grpc_status = -1
        #: An extended CONNECT (RFC 8441): the stream may become a tunnel after a 2xx.
        self.tunnel = head.upgrade
        #: ... and did: ``take_over`` handed it to an ``Http2Tunnel``.
        self.taken = False

    # -- the driver's side -----------------------------------------------------------------

    def deliver(self, event: BodyChunk | EndOfBody) -> None:
        """Queue request DATA (or its end) that arrived for this stream."""
        if isinstance(event, BodyChunk):
            self._unacked += len(event.data)
        self.inbound.append(event)
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()

    def cancel(self) -> None:
        """The client reset the stream: its exchange stops (``ClientGone`` where it waits);
        a tunnel's reads and writes fail instead, so that its relay ends the session."""
        self.cancelled = True
        if not self.taken:
            self.scope.cancel()
            return
        wake = self._wake
        if wake is not None:
            self._wake = None
            wake.set()
        self._link.window_opened(self.stream_id)  # a write waiting for credit sees it too

    def discard_rest(self) -> None:
        """The exchange is over: hand the window of every unread byte back to the client."""
        self.inbound.clear()
        unacked, self._unacked = self._unacked, 0
        self._link.adapter.acknowledge(self.stream_id, unacked)

    # -- the Downstream seam ---------------------------------------------------------------

    @property
    def http_version(self) -> bytes:
        return b"2"

    @property
    def client_cancelled(self) -> bool:
        """The client reset this stream."""
        return self.cancelled

    def add_response_field(self, line: tuple[bytes, bytes]) -> None:
        self.response_fields.append(line)

    async def receive_body(self) -> BodyChunk | EndOfBody:
        """The next piece of the request body within the body idle gap and the request-body
        deadline; flushes pending WINDOW_UPDATEs first, so the client can send more."""
        if not self.inbound:
            await self._link.flush()
            idle_end = trio.current_time() + self._body_idle
            body_end = self._body_deadline
            with trio.CancelScope(deadline=min(idle_end, body_end)) as scope:
                while not self.inbound:
                    if self.cancelled or self._link.broken:
                        raise ClientGone
                    wake = self._wake = trio.Event()
                    await wake.wait()
            if scope.cancelled_caught:
                raise ClientTimeout("body_timeout" if body_end <= idle_end else "client_timeout")
        event = self.inbound.popleft()
        if isinstance(event, EndOfBody):
            self.request_complete = True
            return _END
        self.received_bytes += len(event.data)
        return event

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None:
        inbound = self.inbound
        if self.request_complete or not inbound or not isinstance(inbound[-1], EndOfBody):
            return None
        body: list[BodyChunk | EndOfBody] = []
        for event in inbound:
            if isinstance(event, BodyChunk):
                self.received_bytes += len(event.data)
                body.append(event)
        body.append(_END)
        inbound.clear()
        self.request_complete = True
        return body

    def acknowledge(self, nbytes: int) -> None:
        """Give ``nbytes`` of window back (flushed with the next write or body read)."""
        nbytes = min(nbytes, self._unacked)
        self._unacked -= nbytes
        self._link.adapter.acknowledge(self.stream_id, nbytes)

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None:
        await self.send_batch((event,))

    async def send_batch(
        self, events: Sequence[Informational | ResponseHead | BodyChunk | EndOfBody]
    ) -> None:
        """Write the events of one response in order, within the client's windows; the last
        DATA (or the head, with no body) carries END_STREAM when a trailer-less end follows.
        Raises ``ClientGone`` when the stream or the connection is gone."""
        if self.cancelled:
            raise ClientGone
        count = len(events)
        for index, event in enumerate(events):
            ends = index + 1 < count and _plain_end(events[index + 1])
            if isinstance(event, BodyChunk):
                await self._data(event.data, end=ends)
            elif isinstance(event, ResponseHead):
                self._head(event, end=ends)
            elif isinstance(event, Informational):
                self._call(partial(self._link.adapter.send_head, event, self.stream_id, end=False))
            elif not self.response_complete:  # EndOfBody not folded into the frame before it
                if event.trailers:
                    self._note_grpc(event.trailers)
                self._call(partial(self._link.adapter.send_end, self.stream_id, event.trailers))
                self.response_complete = True
            if ends:
                self.response_complete = True
        await self._link.flush()

    def _head(self, head: ResponseHead, *, end: bool) -> None:
        if self.response_fields:
            head = with_response_fields(head, self.response_fields)
        if end:
            self._note_grpc(head.headers)
        self._call(partial(self._link.adapter.send_head, head, self.stream_id, end=end))
        self.response_started = True
        self.status = head.status
        self.head_sent = trio.current_time()

    async def _data(self, data: bytes, *, end: bool) -> None:
        """``data`` in frames within the windows, waiting (bounded) for credit."""
        link = self._link
        adapter = link.adapter
        view = memoryview(data)
        while view:
            window = adapter.send_window(self.stream_id)
            if window <= 0:
                await self._await_credit()
                continue
            size = min(window, adapter.max_frame, len(view))
            piece = bytes(view[:size])
            view = view[size:]
            last = end and not view
            self._call(partial(adapter.send_data, self.stream_id, piece, end=last))
            self.sent_bytes += size
            if view:
                await link.flush()

    async def _await_credit(self) -> None:
        """Flush, then wait for a WINDOW_UPDATE within the idle gap; a stall resets the
        stream (``ClientGone``)."""
        link = self._link
        await link.flush()
        if self.cancelled or link.broken:
            raise ClientGone
        if link.adapter.send_window(self.stream_id) > 0:
            return
        event = link.waiting[self.stream_id] = trio.Event()
        with trio.move_on_after(self._body_idle) as stall:
            await event.wait()
        if stall.cancelled_caught:
            link.waiting.pop(self.stream_id, None)
            self.abort()
            raise ClientGone

    def _call(self, send: Callable[[], None]) -> None:
        """Run an adapter send; h2 refusing it (the stream was reset meanwhile) is the client
        gone. A refused head that h2 judged invalid is our bug: a 500-class violation."""
        try:
            send()
        except Exception as error:
            if self.cancelled or self._link.adapter.closed:
                raise ClientGone from error
            raise ProtocolViolation(502, "response could not be sent over HTTP/2") from error

    def _note_grpc(self, fields: Sequence[tuple[bytes, bytes]]) -> None:
        for name, value in fields:
            if name == b"grpc-status":
                self.grpc_status = int(value) if value.isdigit() and len(value) < 4 else 2
                return

    def close_after_response(self) -> None:
        """Nothing for one stream: the connection carries on."""

    def abort(self) -> None:
        """Reset this stream (``INTERNAL_ERROR``): its response ends unfinished."""
        if not self.aborted and not self.response_complete:
            self.aborted = True
            self._link.adapter.reset(self.stream_id, ErrorCode.INTERNAL_ERROR)

    def take_over(self) -> Handover:
        """After the 2xx that opened an extended CONNECT's tunnel: the stream itself as an
        ``Http2Tunnel``, with the client's DATA queued so far as its first reads (no
        leftover). Raises ``UpgradeUnavailable`` for any other stream, before that 2xx, or a
        second time."""
        if (
            not self.tunnel
            or self.taken
            or self.cancelled
            or self.response_complete
            or not 200 <= self.status < 300
        ):
            raise UpgradeUnavailable("no HTTP/2 tunnel to take over")
        self.taken = True
        return Handover(Http2Tunnel(self), b"")

    # -- the tunnel's side (``TunnelSide``) --------------------------------------------------

    async def wait_data(self) -> None:
        """Flush (the WINDOW_UPDATEs of what was acknowledged), then wait until the client's
        DATA or END_STREAM is queued, with no deadline (the relay's idle watch bounds the
        session); always a checkpoint. ``ClientGone`` once the client reset the stream or the
        connection is over, with nothing queued."""
        await self._link.flush()
        if self.inbound:
            await trio.lowlevel.checkpoint()
            return
        while not self.inbound:
            if self.cancelled or self._link.broken:
                raise ClientGone
            wake = self._wake = trio.Event()
            await wake.wait()

    async def send_data(self, data: bytes) -> None:
        """A tunnel's bytes to the client: DATA within the windows (waiting for credit as a
        response does), flushed. ``ClientGone`` when the stream or the connection is gone."""
        if self.cancelled:
            raise ClientGone
        try:
            await self._data(data, end=False)
        except ProtocolViolation as error:  # h2 refused: the stream is no longer open
            raise ClientGone from error
        await self._link.flush()

    async def end_data(self) -> None:
        """END_STREAM on the tunnel (the gateway's side ends), flushed; ``ClientGone``."""
        if self.cancelled:
            raise ClientGone
        try:
            self._call(partial(self._link.adapter.send_end, self.stream_id, []))
        except ProtocolViolation as error:
            raise ClientGone from error
        self.response_complete = True
        await self._link.flush()

    async def close_tunnel(self) -> None:
        """The tunnel is done: after its END_STREAM the client is told to stop sending
        (RST_STREAM ``NO_ERROR``; nothing when the client ended too: the stream is closed),
        before it the stream is reset (``CANCEL``). Flushed; never raises ``ClientGone``."""
        if not self.cancelled and not self.aborted:
            if self.response_complete:
                code = ErrorCode.NO_ERROR
            else:
                code = ErrorCode.CANCEL
                self.aborted = True
            self._link.adapter.reset(self.stream_id, code)
        with contextlib.suppress(ClientGone):
            await self._link.flush()


def _plain_end(event: object) -> bool:
    return isinstance(event, EndOfBody) and not event.trailers
