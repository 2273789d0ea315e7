"""One downstream HTTP/1.1 connection: the read loop, keep-alive, pipelining and head timeouts.

Ring 1. Nurseries: none of its own (HTTP/1.1 serves one exchange at a time; the exchange owns
its pump nursery). Deadlines set here (SPEC §5.5, DESIGN.md §3.4): keep-alive idle (end of a
response → first byte of the next head; silent close), request head (first byte → head
complete; 408 and close), and, in the one scope of each request-body read, the client body
idle gap (between request-body reads) and the request-body deadline (request head → end of
its body, ``timeouts.request_body``: a body trickled a byte at a time would otherwise never
end); the exchange maps both to 408 or an abort. On drain the idle wait is cancelled (idle
connections close at once) and the response in progress carries ``Connection: close``.

A request refused while its head is read (a ``ProtocolViolation``, the head timeout, a bad
request pipelined behind a good one) is answered here with ``Connection: close`` and, like any
exchange that got a response, handed to the observer as an ``ExchangeRecord`` (issue #14).

Must not: route or proxy (``exchange.py``), or parse bytes itself (``protocols/http1.py``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.observability.record import ExchangeRecord, refusal_error
from a3s_gateway.protocols.events import (
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    Event,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http1 import Http1Server
from a3s_gateway.protocols.responses import error_response
from a3s_gateway.protocols.target import split_target
from a3s_gateway.server.exchange import ClientTimeout, handle_request, send_generated

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.config.runtime import EntrypointRuntime
    from a3s_gateway.server.context import ServerContext

__all__ = ["ClientGone", "ConnInfo", "Http1Downstream", "serve_http1"]

log: Final = logging.getLogger("a3s_gateway.server")

#: One read (DESIGN.md §3.5).
READ_SIZE: Final = 65536
#: Bound on closing a connection (a shielded cleanup always has a deadline).
CLOSE_GRACE: Final = 1.0
#: What the exchange gets at the end of every request body: request trailers are never passed
#: on (as NGINX does). RFC 9110 §6.5.1 forbids framing, routing, authentication and control
#: fields in trailers, and a trailer would bypass every header-side rule (hop-by-hop removal,
#: ``X-Forwarded-*``, the identity fields a jwt or forward-auth middleware sets).
END_WITHOUT_TRAILERS: Final = EndOfBody()


class ClientGone(Exception):  # noqa: N818 -- an event, not a bug
    """The client closed or reset the connection in the middle of something."""


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """Who is on the other end of a downstream connection, and where it arrived."""

    entrypoint: str
    peer_ip: str
    peer_port: int
    tls: bool = False


class Http1Downstream:
    """The downstream side of the exchange in progress: events in, events out.

    ``receive_body`` applies the client body-idle timeout and the request-body deadline;
    ``send`` poisons the adapter when a write fails. ``request_complete`` turns true once the
    request's ``EndOfBody`` was read.
    ``status``, ``received_bytes`` and ``sent_bytes`` describe the exchange in progress for
    the access log and metrics: the status of the response head sent, and the body bytes read
    and written (all reset per request).
    """

    __slots__ = (
        "_adapter",
        "_body_deadline",
        "_body_idle",
        "_request_body",
        "_stream",
        "closing",
        "head_sent",
        "http_version",
        "pending",
        "received_bytes",
        "request_complete",
        "response_fields",
        "response_started",
        "sent_bytes",
        "status",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        adapter: Http1Server,
        body_idle: float,
        request_body: float = math.inf,
    ) -> None:
        self._stream = stream
        self._adapter = adapter
        self._body_idle = body_idle
        #: ``timeouts.request_body``, and when the body of the exchange in progress must be
        #: complete (trio's clock; set by ``start_exchange`` for a request with a body).
        self._request_body = request_body
        self._body_deadline = math.inf
        self.pending: deque[Event] = deque()
        self.http_version = b"1.1"
        self.request_complete = False
        self.response_started = False
        #: The connection ends after the response in progress.
        self.closing = False
        self.status = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        #: When the response head was written (trio's clock; -1: not yet).
        self.head_sent = -1.0
        #: Fields every response head of the exchange carries (the request id, SPEC §9.5).
        self.response_fields: list[tuple[bytes, bytes]] = []

    def add_response_field(self, line: tuple[bytes, bytes]) -> None:
        """Add ``line`` to the response head of the exchange in progress, whoever makes it
        (the upstream, a middleware, the gateway)."""
        self.response_fields.append(line)

    def _with_fields(self, head: ResponseHead) -> ResponseHead:
        fields = self.response_fields
        names = {name for name, _ in fields}
        kept = [line for line in head.headers if line[0] not in names]
        return ResponseHead(head.status, [*kept, *fields], head.reason)

    def start_exchange(self, head: RequestHead) -> None:
        """Reset the per-request state for ``head``."""
        has_body = head.has_body
        self.request_complete = not has_body
        if has_body:
            self._body_deadline = trio.current_time() + self._request_body
        self.response_started = False
        self.http_version = head.http_version
        self.status = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        self.head_sent = -1.0
        if self.response_fields:
            self.response_fields = []

    def start_refusal(self) -> None:
        """Reset the per-request state for a request refused while it was read. Its rest may
        still be arriving, so it counts as incomplete: the close after the answer lingers."""
        self.request_complete = False
        self.response_started = False
        self.http_version = b"1.1"
        self.status = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        self.head_sent = -1.0
        if self.response_fields:
            self.response_fields = []

    async def fill(self) -> None:
        """Read once from the client and queue the resulting events.

        Raises ``ClientGone`` on a reset, ``ProtocolViolation`` on bad bytes.
        """
        try:
            data = await self._stream.receive_some(READ_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise ClientGone from error
        # Sockets give bytes; other trio streams may give a bytearray (typed as either).
        events = self._adapter.receive(data if isinstance(data, bytes) else bytes(data))
        if not events and not data:
            raise ClientGone
        self.pending.extend(events)

    async def receive_body(self) -> BodyChunk | EndOfBody:
        """The next piece of the request body, within the body-idle timeout and the
        request-body deadline.

        Raises ``ClientTimeout`` (``error`` says which ran out), ``ClientGone`` or
        ``ProtocolViolation``.
        """
        if not self.pending:
            idle_end = trio.current_time() + self._body_idle
            body_end = self._body_deadline
            with trio.CancelScope(deadline=min(idle_end, body_end)) as scope:
                while not self.pending:
                    await self.fill()
            if scope.cancelled_caught:
                raise ClientTimeout("body_timeout" if body_end <= idle_end else "client_timeout")
        event = self.pending.popleft()
        if isinstance(event, EndOfBody):
            self.request_complete = True
            return END_WITHOUT_TRAILERS
        if isinstance(event, BodyChunk):
            self.received_bytes += len(event.data)
            return event
        raise ProtocolViolation(400, "unexpected event in request body")

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None:
        """The rest of the request body if all of it has already been read (a small body sent
        with its head), consumed; else None and nothing changes."""
        pending = self.pending
        if self.request_complete or not pending or not isinstance(pending[-1], EndOfBody):
            return None
        body: list[BodyChunk | EndOfBody] = []
        size = 0
        for event in pending:
            if isinstance(event, BodyChunk):
                size += len(event.data)
            elif isinstance(event, EndOfBody):
                event = END_WITHOUT_TRAILERS
            else:
                return None
            body.append(event)
        self.received_bytes += size
        pending.clear()
        self.request_complete = True
        return body

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None:
        """Write one event to the client. Raises ``ClientGone`` if the write fails."""
        if isinstance(event, ResponseHead):
            self.response_started = True
            if self.response_fields:
                event = self._with_fields(event)
        data = self._adapter.send(event)
        if not data:
            return
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            self._adapter.send_failed()
            raise ClientGone from error
        except BaseException:
            self._adapter.send_failed()
            raise
        if isinstance(event, ResponseHead):
            self.status = event.status
            self.head_sent = trio.current_time()
        elif isinstance(event, BodyChunk):
            self.sent_bytes += len(event.data)

    async def send_batch(self, events: Sequence[ResponseHead | BodyChunk | EndOfBody]) -> None:
        """Write several events of one response in a single write (what one upstream read
        produced, or a whole generated response). Raises ``ClientGone`` if the write fails."""
        adapter = self._adapter
        parts: list[bytes] = []
        status = 0
        sent = 0
        for event in events:
            if isinstance(event, BodyChunk):
                sent += len(event.data)
            elif isinstance(event, ResponseHead):
                self.response_started = True
                status = event.status
                if self.response_fields:
                    event = self._with_fields(event)
            parts.append(adapter.send(event))
        data = b"".join(parts)
        if not data:
            return
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            adapter.send_failed()
            raise ClientGone from error
        except BaseException:
            adapter.send_failed()
            raise
        # Counted once written: the record shows what reached the client.
        if status:
            self.status = status
            self.head_sent = trio.current_time()
        self.sent_bytes += sent

    def close_after_response(self) -> None:
        """The response in progress ends the connection (``Connection: close``)."""
        self.closing = True
        self._adapter.close_after_response()


async def serve_http1(stream: trio.abc.Stream, info: ConnInfo, ctx: ServerContext) -> None:
    """Serve requests on one downstream connection until either side ends it; closes ``stream``.

    Never raises for anything a client does; a bug in one exchange ends only this connection.
    """
    entry = ctx.runtime.entrypoints[info.entrypoint]
    adapter = Http1Server(entry.limits, entry.heads)
    down = Http1Downstream(stream, adapter, entry.body_idle_timeout, entry.request_body_timeout)
    try:
        await _serve_requests(down, adapter, info, entry, ctx)
    except (ClientGone, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:
        log.exception("connection from %s failed", info.peer_ip)
    finally:
        if down.response_started and not down.request_complete:
            await _linger(stream)
        with trio.move_on_after(CLOSE_GRACE) as cleanup:
            cleanup.shield = True
            await stream.aclose()


#: Lingering close (RFC 9112 §9.6; NGINX's lingering_time/lingering_timeout): how long, in
#: all and per read, unread request bytes are drained after a response was sent early.
LINGER_TIME: Final = 5.0
LINGER_IDLE: Final = 2.0


async def _linger(stream: trio.abc.Stream) -> None:
    """Half-close, then read and drop what the client still sends, for a bounded time.

    Closing a socket with unread bytes makes the kernel send a reset, and a reset can destroy
    the response the client has not read yet (an early 413 during a large upload, say).
    """
    with trio.move_on_after(LINGER_TIME):
        try:
            if isinstance(stream, trio.abc.HalfCloseableStream):
                await stream.send_eof()
            while True:
                with trio.move_on_after(LINGER_IDLE) as idle:
                    if not await stream.receive_some(READ_SIZE):
                        return
                if idle.cancelled_caught:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            return


async def _serve_requests(
    down: Http1Downstream,
    adapter: Http1Server,
    info: ConnInfo,
    entry: EntrypointRuntime,
    ctx: ServerContext,
) -> None:
    served = 0
    while True:
        head = await _next_head(down, adapter, info, entry, ctx)
        if head is None:
            return
        served += 1
        down.start_exchange(head)
        limit = entry.max_requests_per_connection
        if ctx.drain.draining or (limit and served >= limit):
            down.close_after_response()
        await handle_request(head, down, info, ctx)
        if down.closing:
            return
        if not down.request_complete:
            await _discard_body(down, adapter)
        if not adapter.keep_alive or ctx.drain.draining:
            return
        try:
            down.pending.extend(adapter.start_next_cycle())
        except ProtocolViolation as violation:
            # A malformed request pipelined behind the one just answered (issue #14).
            await _refuse(down, adapter, info, ctx, _Refused(violation.status, violation.reason))
            return


async def _next_head(
    down: Http1Downstream,
    adapter: Http1Server,
    info: ConnInfo,
    entry: EntrypointRuntime,
    ctx: ServerContext,
) -> RequestHead | None:
    """The next request head, or None when the connection should end (quietly, or after
    refusing the request)."""
    try:
        return await _read_head(down, adapter, entry, ctx)
    except _Refused as refused:
        await _refuse(down, adapter, info, ctx, refused)
    return None


class _Refused(Exception):  # noqa: N818 -- an event
    """A request refused while its head was read: the status to answer (408 when the head did
    not complete within ``timeouts.request_head``), the violation's fixed reason, and when the
    head's first byte arrived (trio's clock; -1: with the read that was refused)."""

    def __init__(self, status: int, reason: str = "", began: float = -1.0) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason
        self.began = began


async def _read_head(
    down: Http1Downstream, adapter: Http1Server, entry: EntrypointRuntime, ctx: ServerContext
) -> RequestHead | None:
    """The next request head, or None at a clean end (EOF, keep-alive idle, drain). Raises
    ``_Refused`` for a violation or the head timeout, ``ClientGone`` on a reset."""
    drain = ctx.drain
    if drain.draining and not down.pending:
        return None
    idle = trio.CancelScope(deadline=trio.current_time() + entry.idle_timeout)
    began = -1.0
    drain.idle_scopes.add(idle)
    try:
        with idle:
            while True:
                while down.pending:
                    event = down.pending.popleft()
                    if isinstance(event, RequestHead):
                        return event
                    if isinstance(event, ConnectionClosed):
                        return None
                if began < 0.0 and adapter.head_started:
                    # The first byte of a head arrived (in the last read, or pipelined before):
                    # the head timer replaces the idle timer.
                    drain.idle_scopes.discard(idle)
                    began = trio.current_time()
                    idle.deadline = began + entry.request_head_timeout
                await down.fill()
    except ProtocolViolation as violation:
        raise _Refused(violation.status, violation.reason, began) from None
    finally:
        drain.idle_scopes.discard(idle)
    if began >= 0.0:
        raise _Refused(408, began=began)
    return None


async def _refuse(
    down: Http1Downstream,
    adapter: Http1Server,
    info: ConnInfo,
    ctx: ServerContext,
    refused: _Refused,
) -> None:
    """Answer a refused request with ``Connection: close``, then hand its record to the
    observer like any exchange's: router and service empty, the request line only if it was
    complete and well-formed (``Http1Server.refused_request``), the peer as the client (no
    forwarding field of a refused head is trusted)."""
    began = refused.began
    record = ExchangeRecord(info.entrypoint, began if began >= 0.0 else trio.current_time())
    record.peer_ip = record.client_ip = info.peer_ip
    if info.tls:
        record.scheme = "https"
    record.error = refusal_error(refused.status)
    line = adapter.refused_request
    if line is not None:
        record.method = line.method
        record.host = line.host
        record.path, record.query = split_target(line.target)
        if line.http_version == b"1.0":
            record.protocol = "HTTP/1.0"
    down.start_refusal()
    text = f"bad request: {refused.reason}" if refused.status == 400 else None
    try:
        await _answer_and_close(down, adapter, refused.status, text)
    finally:
        record.status = down.status
        record.head_sent = down.head_sent
        record.response_bytes = down.sent_bytes
        record.ended = trio.current_time()
        record.wall = time.time()
        observer = ctx.observer
        if observer is not None:
            observer.finish(record)


async def _answer_and_close(
    down: Http1Downstream, adapter: Http1Server, status: int, text: str | None
) -> None:
    """Send an error response if the adapter can still carry one; the connection then ends."""
    down.close_after_response()
    try:
        with trio.move_on_after(CLOSE_GRACE):
            await send_generated(down, error_response(status, text, close=True), head_only=False)
    except (ClientGone, ProtocolViolation):
        pass


#: Bounded discard of an unread request body after an early response (SPEC §5.2).
_DISCARD_BYTES: Final = 256 * 1024
_DISCARD_TIME: Final = 2.0


async def _discard_body(down: Http1Downstream, adapter: Http1Server) -> None:
    """Read and drop the rest of a request body (≤ 256 KiB within 2 s) or give up the
    connection, so the next request on it is framed correctly."""
    budget = _DISCARD_BYTES
    with trio.move_on_after(_DISCARD_TIME):
        try:
            while budget > 0:
                event = await down.receive_body()
                if isinstance(event, EndOfBody):
                    return
                budget -= len(event.data)
        except (ClientTimeout, ProtocolViolation):
            pass
    adapter.close_after_response()
    down.request_complete = False
    raise ClientGone
