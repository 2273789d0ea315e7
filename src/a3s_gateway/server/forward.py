"""One attempt at one backend: connect, send the request, pump the bodies, relay the response.

Ring 1. Nurseries: one per attempt, holding the request-body pump (client → upstream) while the
attempt's own task waits for the response head and then relays the response (upstream →
client); the pump never lets an exception out (it records it and cancels the wait), so no
exception group escapes. Deadlines set here (SPEC §5.5): upstream connect (around the pool's
acquire), response header (moved to now + timeout once the request is fully sent; one scope),
upstream body idle (between response chunks). Interrupted writes poison the upstream
connection: it goes back to the pool only when both halves completed cleanly (SPEC §5.7).

Backpressure (SPEC §5.2): each direction holds at most one read (64 KiB); the next read
happens only after the previous bytes were written to the other side.

Must not: choose backends or answer errors itself (``exchange.py`` does), or parse bytes.
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Final

import trio

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
from a3s_gateway.protocols.headers import strip_response_hop_by_hop
from a3s_gateway.upstream import AcquireProgress, AcquireStage, ConnectFailed, PoolClosed

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from a3s_gateway.config.runtime import ServiceRuntime
    from a3s_gateway.middleware.compress import BodyFilter
    from a3s_gateway.observability.record import ExchangeRecord
    from a3s_gateway.protocols.headers import HeaderLine, Headers
    from a3s_gateway.server.context import ServerContext
    from a3s_gateway.server.exchange import Downstream
    from a3s_gateway.services import Backend
    from a3s_gateway.upstream import Peer, UpstreamConnection

__all__ = [
    "AbortResponse",
    "ConnectError",
    "HeldResponse",
    "UpstreamFailure",
    "forward",
    "upstream_head",
]

READ_SIZE: Final = 65536
#: A discarded (retried) response's body is drained up to this many bytes for reuse (§8.12).
_DISCARD_LIMIT: Final = 65536
_CONTINUE: Final = Informational(100, [])
#: RFC 9110 §9.2.2 idempotent methods: the ones a stale connection's request may be re-sent for.
_IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


class ConnectError(Exception):
    """No connection to the backend: refused or unreachable (502) or too slow (504).

    No request byte was sent, so another backend may be tried (SPEC §7.8).
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class UpstreamFailure(Exception):  # noqa: N818 -- the backend's failure, not ours
    """The backend failed before the response head: reset, garbage, or too slow.

    ``before_response`` is true when not one response byte arrived (a stale reused connection
    may then be retried, SPEC §5.7).
    """

    def __init__(
        self, status: int, detail: str, *, before_response: bool = True, text: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.before_response = before_response
        #: The client-facing error text when not the status's default (SPEC §5.6).
        self.text = text


class HeldResponse(Exception):  # noqa: N818 -- an event
    """The response head was held and discarded because the attempt will be retried (the
    ``hold`` callback said so); nothing was sent downstream. ``status`` is the upstream's."""

    def __init__(self, status: int) -> None:
        super().__init__(f"held response {status}")
        self.status = status


class AbortResponse(Exception):  # noqa: N818 -- an event
    """The response was started and cannot be completed: the client connection must close."""


async def forward(
    head: RequestHead,
    target: bytes,
    headers: Headers,
    down: Downstream,
    ctx: ServerContext,
    service: ServiceRuntime,
    backend: Backend,
    extra: Sequence[HeaderLine] = (),
    *,
    on_response: Callable[[int, Headers], None] | None = None,
    host: bytes | None = None,
    hold: Callable[[int], bool] | None = None,
    body_filter: Callable[[int, Headers], BodyFilter | None] | None = None,
    record: ExchangeRecord | None = None,
) -> int:
    """Proxy one request to ``backend``, relay the response to ``down``; its status.
    ``extra`` fields are added to the response (a sticky ``Set-Cookie``); ``on_response``
    (the middlewares' response sides) may change the response head's fields before it is
    sent; ``host`` replaces the ``Host`` the backend would get (a headers middleware);
    ``hold`` (the retry middleware) sees the response status before anything is sent and,
    when it answers True, the response is discarded and ``HeldResponse`` raised;
    ``body_filter`` (compress) may transform the response body on its way out (SPEC §8.1
    phase 5), after the response sides ran on the head.

    Raises ``ConnectError`` (nothing sent), ``UpstreamFailure`` (nothing relayed yet),
    ``HeldResponse`` or ``AbortResponse`` (the response is cut short); client failures
    propagate as they are.
    A reused connection that fails before any response byte, for an idempotent request
    without a body, is replaced by a fresh one and the request re-sent once (SPEC §5.7).
    """
    peer = service.peers[backend.index]
    up_head = upstream_head(head, target, headers, service, backend, host)
    # The hot path: an idle pooled connection needs no connect deadline and no checkpoint.
    conn = ctx.pool.try_reuse(peer, service.pool)
    if conn is None:
        conn = await _connect(ctx, service, peer)
    try:
        return await _attempt(
            conn,
            up_head,
            down,
            ctx,
            service,
            head.expect_continue,
            extra,
            on_response,
            hold,
            body_filter,
            record,
        )
    except UpstreamFailure as failure:
        if not _stale(conn, failure, head, down):
            raise
    ctx.stale_retries += 1
    ctx.metrics.stale_retry(service.name, backend.url.text)
    conn = await _connect(ctx, service, peer, fresh=True)
    return await _attempt(
        conn,
        up_head,
        down,
        ctx,
        service,
        head.expect_continue,
        extra,
        on_response,
        hold,
        body_filter,
        record,
    )


def _stale(
    conn: UpstreamConnection, failure: UpstreamFailure, head: RequestHead, down: Downstream
) -> bool:
    """SPEC §5.7 "Stale reuse": may this failure be a keep-alive connection the backend had
    already closed, with nothing lost by sending the request again?"""
    return (
        conn.reused
        and failure.status == 502
        and not conn.adapter.received_any
        and not head.has_body
        and head.method in _IDEMPOTENT
        and not down.response_started
    )


async def _attempt(
    conn: UpstreamConnection,
    up_head: RequestHead,
    down: Downstream,
    ctx: ServerContext,
    service: ServiceRuntime,
    expect_continue: bool,
    extra: Sequence[HeaderLine],
    on_response: Callable[[int, Headers], None] | None,
    hold: Callable[[int], bool] | None,
    body_filter: Callable[[int, Headers], BodyFilter | None] | None,
    record: ExchangeRecord | None,
) -> int:
    attempt = _Attempt(conn, down, service, ctx, extra, on_response, hold, body_filter, record)
    try:
        return await attempt.run(up_head, expect_continue)
    finally:
        if attempt.reusable:
            conn.adapter.start_next_cycle()
        ctx.pool.release(conn, reusable=attempt.reusable)


async def _connect(
    ctx: ServerContext, service: ServiceRuntime, peer: Peer, *, fresh: bool = False
) -> UpstreamConnection:
    progress = AcquireProgress()
    with trio.move_on_after(service.connect_timeout):
        try:
            return await ctx.pool.acquire(peer, service.pool, progress, fresh=fresh)
        except ConnectFailed as error:
            raise ConnectError(502, str(error)) from error
        except PoolClosed as error:
            raise UpstreamFailure(503, "pool closed", text="shutting down") from error
    if progress.stage is AcquireStage.WAITING:
        # SPEC §5.7: at max_conns_per_backend the wait is bounded by connect_timeout, then 503.
        raise UpstreamFailure(503, "pool wait timed out", text="backend connection limit reached")
    raise ConnectError(504, "connect timeout")


def upstream_head(
    head: RequestHead,
    target: bytes,
    headers: Headers,
    service: ServiceRuntime,
    backend: Backend,
    override: bytes | None = None,
) -> RequestHead:
    """The request as the backend sees it: origin-form target under the server's path prefix,
    ``Host`` per ``pass_host_header`` (SPEC §5.4 step 6)."""
    prefix = service.prefixes[backend.index]
    if prefix:
        target = prefix.rstrip(b"/") + target
    if override is not None:
        host = override
    elif service.pass_host_header and head.authority:
        host = head.authority
    else:
        url = backend.url
        host = url.host.encode() if ":" not in url.host else b"[" + url.host.encode() + b"]"
        host += b":" + str(url.port).encode()
    return RequestHead(
        method=head.method,
        target=target,
        authority=host,
        headers=[(b"host", host), *headers],
        http_version=b"1.1",
        has_body=head.has_body,
    )


class _Attempt:
    """The state of one attempt; ``reusable`` tells the pool whether the connection is clean.

    One cancel scope (``_timer``) bounds the response: its deadline is the response-header
    deadline until the head arrives, then it moves to now + body idle before every read.
    ``_in_body`` tells which of the two expired.
    """

    __slots__ = (
        "_body_filter",
        "_conn",
        "_ctx",
        "_down",
        "_extra",
        "_hold",
        "_in_body",
        "_on_response",
        "_pending",
        "_pump_done",
        "_pump_error",
        "_service",
        "_timer",
        "record",
        "reusable",
    )

    def __init__(
        self,
        conn: UpstreamConnection,
        down: Downstream,
        service: ServiceRuntime,
        ctx: ServerContext,
        extra: Sequence[HeaderLine],
        on_response: Callable[[int, Headers], None] | None = None,
        hold: Callable[[int], bool] | None = None,
        body_filter: Callable[[int, Headers], BodyFilter | None] | None = None,
        record: ExchangeRecord | None = None,
    ) -> None:
        self._conn = conn
        self._hold = hold
        self._body_filter = body_filter
        self._extra = extra
        self._on_response = on_response
        self._down = down
        self._service = service
        self._ctx = ctx
        self._pending: deque[Event] = deque()
        self._pump_error: BaseException | None = None
        self._pump_done = down.request_complete
        self._timer: trio.CancelScope | None = None
        self._in_body = False
        self.reusable = False
        #: Gets the time the response head arrived (the access log's ``upstream_ms``).
        self.record = record

    async def run(self, up_head: RequestHead, expect_continue: bool) -> int:
        """Send, wait, relay; the response's status."""
        adapter = self._conn.adapter
        wire = adapter.send(up_head)
        body = None if self._pump_done else self._down.take_buffered_body()
        if body is not None:
            # The whole body came with the head (a small POST): one write, no pump task.
            wire += b"".join([adapter.send(event) for event in body])
            self._pump_done = True
        await self._write(wire, before_response=True)
        if expect_continue and not self._down.request_complete:
            # SPEC §5.4: 100 Continue once routing and the upstream connection succeeded.
            await self._down.send(_CONTINUE)
        if self._pump_done:
            # No request body to pump (the common case): no nursery, one scope.
            timer = self._timer = trio.CancelScope(
                deadline=trio.current_time() + self._service.response_header_timeout
            )
            with timer:
                response = await self._response_head()
                await self._relay(response)
        else:
            response = await self._request_phase()
            timer = self._timer = trio.CancelScope()
            with timer:
                await self._relay(response)
        if timer.cancelled_caught:
            if not self._in_body:
                raise UpstreamFailure(504, "response header timeout")
            raise AbortResponse("upstream body idle timeout")
        self.reusable = self._pump_done and self._conn.adapter.reusable
        return response.status

    async def _request_phase(self) -> ResponseHead:
        """Pump the request body while waiting for the response head."""
        wait = trio.CancelScope()
        failure: Exception | None = None
        response: ResponseHead | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, wait)
            with wait:
                # Caught here and raised after the nursery, so no exception group escapes.
                try:
                    response = await self._response_head()
                except Exception as error:  # re-raised below, unwrapped
                    failure = error
            nursery.cancel_scope.cancel()
        if failure is not None:
            raise failure
        if self._pump_error is not None:
            raise self._pump_error
        if response is None:
            raise UpstreamFailure(504, "response header timeout")
        return response

    async def _pump(self, wait: trio.CancelScope) -> None:
        """Client body → upstream, one chunk at a time; on completion start the head timer."""
        try:
            while True:
                event = await self._down.receive_body()
                await self._write(self._conn.adapter.send(event), before_response=True)
                if isinstance(event, EndOfBody):
                    break
        except UpstreamFailure:
            # The backend stopped reading; it may still answer (early response).
            return
        except Exception as error:  # recorded and re-raised by the attempt's task
            self._pump_error = error
            wait.cancel()
            return
        self._pump_done = True
        wait.deadline = trio.current_time() + self._service.response_header_timeout

    async def _response_head(self) -> ResponseHead:
        while True:
            event = await self._next_event(before_response=True)
            if isinstance(event, ResponseHead):
                return event
            if isinstance(event, Informational):
                await self._down.send(event)
            elif isinstance(event, ConnectionClosed):
                raise UpstreamFailure(502, "connection closed before a response")
            else:
                raise UpstreamFailure(502, "unexpected event before the response head")

    async def _relay(self, response: ResponseHead) -> None:
        """Send the head and the body; whatever is already read goes out in one write."""
        if self.record is not None:
            self.record.upstream_head = trio.current_time()
        timer = self._timer
        assert timer is not None  # set by run
        if self._hold is not None and self._hold(response.status):
            timer.deadline = math.inf  # the discard has its own bound
            await self._discard()
            raise HeldResponse(response.status)
        self._in_body = True
        timer.deadline = trio.current_time() + self._service.body_idle_timeout
        headers = strip_response_hop_by_hop(response.headers)
        if not any(name == b"date" for name, _ in headers):
            headers.append((b"date", self._ctx.dates.value()))
        if self._extra:
            headers.extend(self._extra)
        if self._on_response is not None:
            self._on_response(response.status, headers)
        if self._ctx.drain.draining:
            self._down.close_after_response()
        if self._body_filter is not None:
            body_filter = self._body_filter(response.status, headers)
            if body_filter is not None:
                await self._relay_filtered(response, headers, body_filter)
                return
        batch: list[ResponseHead | BodyChunk | EndOfBody] = [
            ResponseHead(response.status, headers, response.reason)
        ]
        pending = self._pending
        while True:
            while pending:
                event = pending.popleft()
                if isinstance(event, BodyChunk):
                    batch.append(event)
                elif isinstance(event, EndOfBody):
                    batch.append(event)
                    await self._down.send_batch(batch)
                    return
                else:
                    raise AbortResponse("unexpected event in the response body")
            if batch:
                await self._down.send_batch(batch)
                batch = []
            try:
                await self._fill(before_response=False)
            except UpstreamFailure as error:
                raise AbortResponse(error.detail) from error

    async def _relay_filtered(
        self, response: ResponseHead, headers: Headers, body_filter: BodyFilter
    ) -> None:
        """``_relay`` through a body filter: each chunk goes out as the filter makes it, and the
        head only once the filter says it is final (it may hold the first bytes to decide)."""
        batch: list[ResponseHead | BodyChunk | EndOfBody] = []
        head_sent = False
        pending = self._pending
        while True:
            while pending:
                event = pending.popleft()
                if isinstance(event, BodyChunk):
                    data = body_filter.feed(event.data)
                elif isinstance(event, EndOfBody):
                    data = body_filter.finish()
                else:
                    raise AbortResponse("unexpected event in the response body")
                if not head_sent and body_filter.ready:
                    batch.append(ResponseHead(response.status, headers, response.reason))
                    head_sent = True
                if data:
                    batch.append(BodyChunk(data))
                if isinstance(event, EndOfBody):
                    batch.append(event)
                    await self._down.send_batch(batch)
                    return
            if batch:
                await self._down.send_batch(batch)
                batch = []
            try:
                await self._fill(before_response=False)
            except UpstreamFailure as error:
                raise AbortResponse(error.detail) from error

    async def _discard(self) -> None:
        """Read and drop a held response's body, up to ``_DISCARD_LIMIT`` bytes within one
        body-idle timeout, so the connection can be reused; else it is closed (SPEC §8.12)."""
        if not self._pump_done:
            return  # the request was not fully sent: the connection cannot be reused
        seen = 0
        with trio.move_on_after(self._service.body_idle_timeout):
            while seen <= _DISCARD_LIMIT:
                try:
                    event = await self._next_event(before_response=False)
                except UpstreamFailure:
                    return
                if isinstance(event, EndOfBody):
                    self.reusable = self._conn.adapter.reusable
                    return
                if isinstance(event, BodyChunk):
                    seen += len(event.data)

    async def _next_event(self, *, before_response: bool) -> Event:
        if not self._pending:
            await self._fill(before_response=before_response)
        return self._pending.popleft()

    async def _fill(self, *, before_response: bool) -> None:
        """Read from the upstream until at least one event is pending."""
        pending = self._pending
        while not pending:
            if self._in_body:
                timer = self._timer
                assert timer is not None  # set before the relay starts
                timer.deadline = trio.current_time() + self._service.body_idle_timeout
            try:
                data = await self._conn.stream.receive_some(READ_SIZE)
                if not isinstance(data, bytes):  # sockets give bytes; other streams may not
                    data = bytes(data)
                events = self._conn.adapter.receive(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
                raise UpstreamFailure(502, f"read failed: {error!r}") from error
            except ProtocolViolation as violation:
                raise UpstreamFailure(
                    502, f"invalid response: {violation.reason}", before_response=before_response
                ) from violation
            if not events and not data:
                raise UpstreamFailure(502, "connection closed")
            pending.extend(events)

    async def _write(self, data: bytes, *, before_response: bool) -> None:
        if not data:
            return
        try:
            await self._conn.stream.send_all(data)
        except BaseException as error:
            self._conn.adapter.send_failed()
            if isinstance(error, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
                raise UpstreamFailure(
                    502, "write failed", before_response=before_response
                ) from error
            raise
