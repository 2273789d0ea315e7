"""The HTTP/1.1 connection driver: the read loop, keep-alive, pipelining and head timeouts.

Ring 1. Nurseries: none of its own (HTTP/1.1 serves one exchange at a time, inline in the
connection's task: no task per request; the exchange owns its pump nursery). Deadlines set
here (SPEC §5.5, DESIGN.md §3.4): keep-alive idle (end of a response → first byte of the next
head; silent close) and request head (first byte → head complete; 408 and close); the request
body's idle gap and deadline are ``Http1Downstream``'s (``http1_downstream.py``), the client
side each exchange talks to through the ``Downstream`` seam. Drain: each connection registers
one ``Drainable`` (``context.Drain``) for its lifetime; a drain cancels its wait for the next
request (idle connections close at once), a head that began is still answered, and the
response in progress carries ``Connection: close``. An exchange that ends by ``ClientGone`` or
``ExchangeAborted`` ends the connection: HTTP/1.1 cannot carry on after a response cut short.
After a protocol switch (``Http1Downstream.handed_over``) the driver stops and leaves the
stream to its new owner: no read, no write, no linger, no close. One switch is the driver's
own (SPEC §5.1 item 3): a bodiless ``GET`` with ``Upgrade: h2c`` on a plaintext entrypoint
with ``h2c`` gets ``101`` here and the connection goes on as HTTP/2 (``serve_http2``), the
request served as stream 1; every other ``Upgrade`` is the exchange's.

A request refused while its head is read (a ``ProtocolViolation``, the head timeout, a bad
request pipelined behind a good one) is answered here with ``Connection: close`` and, like any
exchange that got a response, handed to the observer as an ``ExchangeRecord`` (issue #14).

Must not: route or proxy (``exchange/``), or parse bytes itself (``protocols/http1.py``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.observability.record import ExchangeRecord, refusal_error
from a3s_gateway.protocols.events import (
    ConnectionClosed,
    EndOfBody,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http1 import Http1Server
from a3s_gateway.protocols.http2 import h2c_settings
from a3s_gateway.protocols.responses import error_response
from a3s_gateway.protocols.target import split_target
from a3s_gateway.server.downstream import ClientGone, ClientTimeout, ExchangeAborted
from a3s_gateway.server.exchange import handle_request, send_generated
from a3s_gateway.server.http1_downstream import READ_SIZE, Http1Downstream
from a3s_gateway.server.http2_driver import serve_http2

if TYPE_CHECKING:
    from a3s_gateway.runtime.compile import EntrypointRuntime
    from a3s_gateway.server.downstream import ConnInfo, Handover
    from a3s_gateway.server.server_context import ServerContext

__all__ = ["CLOSE_GRACE", "LINGER_IDLE", "LINGER_TIME", "serve_http1"]

log: Final = logging.getLogger("a3s_gateway.server")

#: Bound on closing a connection (a shielded cleanup always has a deadline).
CLOSE_GRACE: Final = 1.0


async def serve_http1(
    stream: trio.abc.Stream, info: ConnInfo, ctx: ServerContext, *, received: bytes = b""
) -> None:
    """Serve requests on one downstream connection until either side ends it; closes ``stream``.
    ``received``: bytes already read from the client (to tell HTTP/1.1 from HTTP/2).

    Never raises for anything a client does; a bug in one exchange ends only this connection.
    """
    entry = ctx.runtime.entrypoints[info.entrypoint]
    adapter = Http1Server(entry.limits, entry.heads)
    down = Http1Downstream(stream, adapter, entry.body_idle_timeout, entry.request_body_timeout)
    down.received = received
    idle = _IdleWait()
    connections = ctx.drain.connections
    connections.add(idle)
    h2c: _H2cSwitch | None = None
    try:
        h2c = await _serve_requests(down, adapter, info, entry, ctx, idle)
    except (ClientGone, ExchangeAborted, trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # HTTP/1.1: a client gone or an exchange aborted ends the connection
    except Exception:
        log.exception("connection from %s failed", info.peer_ip)
    finally:
        connections.discard(idle)
        if not down.handed_over:  # after a protocol switch the stream is its new owner's
            if down.response_started and not down.request_complete:
                await _linger(stream)
            with trio.move_on_after(CLOSE_GRACE) as cleanup:
                cleanup.shield = True
                await stream.aclose()
    if h2c is not None:  # switched to h2c: the same stream, HTTP/2 from here on
        handover = h2c.handover
        upgraded = (h2c.head, h2c.settings)
        await serve_http2(handover.stream, info, ctx, received=handover.leftover, upgraded=upgraded)


#: Lingering close (RFC 9112 §9.6; NGINX's lingering_time/lingering_timeout): how long, in
#: all and per read, unread request bytes are drained after a response was sent early.
LINGER_TIME: Final = 5.0
LINGER_IDLE: Final = 2.0


class _IdleWait:
    """The connection as the drain sees it (``Drainable``): while it waits for the next
    request, ``scope`` is that wait's cancel scope, which a drain cancels (the connection then
    closes at once); during a request there is none, and the driver sees ``draining`` after
    the response."""

    __slots__ = ("scope",)

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None

    def drain(self) -> None:
        scope = self.scope
        if scope is not None:
            scope.cancel()


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
    idle: _IdleWait,
) -> _H2cSwitch | None:
    """Serve requests in turn; an h2c upgrade ends HTTP/1.1 with the switch to make."""
    served = 0
    while True:
        head = await _next_head(down, adapter, info, entry, ctx, idle)
        if head is None:
            return None
        if adapter.upgrade_requested and entry.h2c and not ctx.drain.draining:
            settings = h2c_settings(head)  # plaintext entrypoints (SPEC §5.1 item 3)
            if settings is not None:
                return await _switch_to_h2c(down, head, settings)
        served += 1
        down.start_exchange(head)
        limit = entry.max_requests_per_connection
        if ctx.drain.draining or (limit and served >= limit):
            down.close_after_response()
        await handle_request(head, down, info, ctx)
        if down.handed_over or down.closing:  # a protocol switch ends HTTP/1.1 here too
            return None
        if not down.request_complete:
            await _discard_body(down, adapter)
        if not adapter.keep_alive or ctx.drain.draining:
            return None
        try:
            down.pending.extend(adapter.start_next_cycle())
        except ProtocolViolation as violation:
            # A malformed request pipelined behind the one just answered (issue #14).
            await _refuse(down, adapter, info, ctx, _Refused(violation.status, violation.reason))
            return None


@dataclass(frozen=True, slots=True)
class _H2cSwitch:
    """A ``101`` went out for ``Upgrade: h2c``: the stream and the bytes after the request
    head, the request to serve as HTTP/2 stream 1 and its ``HTTP2-Settings``."""

    handover: Handover
    head: RequestHead
    settings: bytes


#: RFC 7540 §3.2: the ``101`` names the protocol switched to.
_H2C_SWITCH: Final = ResponseHead(101, [(b"connection", b"Upgrade"), (b"upgrade", b"h2c")])


async def _switch_to_h2c(down: Http1Downstream, head: RequestHead, settings: bytes) -> _H2cSwitch:
    """Answer ``101 Switching Protocols`` and take the stream over; the request becomes
    stream 1 of the HTTP/2 connection (it has no body: ``h2c_settings``). Raises
    ``ClientGone`` when the ``101`` cannot be written."""
    down.start_exchange(head)
    await down.send(_H2C_SWITCH)
    upgraded = RequestHead(
        method=head.method,
        target=head.target,
        authority=head.authority,
        headers=head.headers,
        http_version=b"2",
        stream_id=1,
    )
    return _H2cSwitch(down.take_over(), upgraded, settings)


async def _next_head(
    down: Http1Downstream,
    adapter: Http1Server,
    info: ConnInfo,
    entry: EntrypointRuntime,
    ctx: ServerContext,
    idle: _IdleWait,
) -> RequestHead | None:
    """The next request head, or None when the connection should end (quietly, or after
    refusing the request)."""
    try:
        return await _read_head(down, adapter, entry, ctx, idle)
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
    down: Http1Downstream,
    adapter: Http1Server,
    entry: EntrypointRuntime,
    ctx: ServerContext,
    wait: _IdleWait,
) -> RequestHead | None:
    """The next request head, or None at a clean end (EOF, keep-alive idle, drain). Raises
    ``_Refused`` for a violation or the head timeout, ``ClientGone`` on a reset."""
    if ctx.drain.draining and not down.pending:
        return None
    idle = wait.scope = trio.CancelScope(deadline=trio.current_time() + entry.idle_timeout)
    began = -1.0
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
                    # the head timer replaces the idle timer, and a drain no longer cuts it.
                    wait.scope = None
                    began = trio.current_time()
                    idle.deadline = began + entry.request_head_timeout
                await down.fill()
    except ProtocolViolation as violation:
        raise _Refused(violation.status, violation.reason, began) from None
    finally:
        wait.scope = None
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
        record.tls_version = info.tls_version
        record.sni = info.sni
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
