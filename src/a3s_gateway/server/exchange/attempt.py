"""One attempt at one backend: take or open a connection, send the request (pumping its body),
then hand the response to ``relay.py``.

Ring 1. Nurseries: one per attempt whose request body did not arrive whole with its head,
holding the request-body pump (client → upstream) while the attempt's own task waits for the
response head; the pump never lets an exception out (it records it and cancels the wait), so
no exception group escapes. Deadlines set here (SPEC §5.5): upstream connect (around the pool's
acquire: dialling, and for an ``https`` backend its TLS handshake, so a stalled handshake is a
504 like a slow connect and a failed one a 502 ``ConnectError`` naming the reason), response
header (one scope per attempt, moved to now + timeout once the request is
fully sent; ``relay.py`` then moves it per body read). The upstream is reached only through
the ``Upstream`` seam; it goes back to its pool clean only when both halves completed (SPEC
§5.7), and interrupted writes poison it.

Flow control: request-body bytes are acknowledged to the ``Downstream`` only once the upstream
write that carried them returned (DESIGN.md §3.13 rule 5).

Must not: choose backends or answer errors (``dispatch.py``), or parse bytes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, Informational, RequestHead
from a3s_gateway.protocols.grpc import encode_timeout
from a3s_gateway.server.exchange.failures import ConnectError, UpstreamFailure
from a3s_gateway.server.exchange.plan import upstream_head
from a3s_gateway.server.exchange.relay import ResponseRelay
from a3s_gateway.upstream.connect_errors import ConnectFailed, PoolClosed
from a3s_gateway.upstream.http1_upstream import Http1Upstream
from a3s_gateway.upstream.http2_upstream import Http2Upstream
from a3s_gateway.upstream.pool import AcquireProgress, AcquireStage
from a3s_gateway.upstream.seam import UpstreamGone

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import ResponseHead
    from a3s_gateway.protocols.headers import HeaderLine
    from a3s_gateway.runtime.compile import ServiceRuntime
    from a3s_gateway.server.downstream import Downstream
    from a3s_gateway.server.exchange.context import Exchange
    from a3s_gateway.server.server_context import ServerContext
    from a3s_gateway.services import Backend
    from a3s_gateway.upstream.peer import Peer
    from a3s_gateway.upstream.seam import Upstream

__all__ = ["forward"]

_CONTINUE: Final = Informational(100, [])
#: RFC 9110 §9.2.2 idempotent methods: the ones a stale connection's request may be re-sent for.
_IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


async def forward(
    ex: Exchange,
    down: Downstream,
    service: ServiceRuntime,
    backend: Backend,
    extra: Sequence[HeaderLine] = (),
) -> int:
    """Proxy the planned request to ``backend`` and relay the response to ``down``; its status.
    ``extra`` fields are added to the response (a sticky ``Set-Cookie``).

    Raises ``ConnectError`` (nothing sent), ``UpstreamFailure`` (nothing relayed yet),
    ``HeldResponse`` or ``AbortResponse`` (the response is cut short); client failures
    propagate as they are. A reused connection that fails before any response byte, for an
    idempotent request without a body, is replaced by a fresh one and the request re-sent once
    (SPEC §5.7).
    """
    ctx = ex.ctx
    peer = service.peers[backend.index]
    head = ex.request
    up_head = upstream_head(head, ex.target, ex.headers, service, backend, ex.host)
    # SPEC §5.7 "Protocol": gRPC always HTTP/2; a WebSocket handshake always HTTP/1.1.
    http2 = (ex.grpc or peer.scheme == "h2c") and ex.ws_key is None
    if http2:
        if ex.grpc_timeout:
            up_head = _grpc_deadline(up_head, ex)
        up = await _connect(ctx, service, peer, http2=True)
    else:
        # The hot path: an idle pooled connection needs no connect deadline and no checkpoint.
        conn = ctx.pool.try_reuse(peer, service.pool)
        if conn is not None:
            up = Http1Upstream(conn, ctx.pool)
        else:
            up = await _connect(ctx, service, peer)
    try:
        return await _Attempt(ex, up, down, service, extra).run(up_head, head.expect_continue)
    except UpstreamFailure as failure:
        if not _stale(up, failure, head, down):
            raise
    ctx.stale_retries += 1
    ctx.metrics.stale_retry(service.name, backend.url.text)
    up = await _connect(ctx, service, peer, fresh=True, http2=http2)
    return await _Attempt(ex, up, down, service, extra).run(up_head, head.expect_continue)


def _grpc_deadline(head: RequestHead, ex: Exchange) -> RequestHead:
    """``head`` with ``grpc-timeout`` reduced by the time the call already spent here
    (SPEC §5.10)."""
    left = ex.grpc_timeout - (trio.current_time() - ex.record.started)
    value = encode_timeout(max(left, 1e-9))
    fields = [line for line in head.headers if line[0] != b"grpc-timeout"]
    fields.append((b"grpc-timeout", value))
    return RequestHead(
        method=head.method,
        target=head.target,
        authority=head.authority,
        headers=fields,
        http_version=head.http_version,
        has_body=head.has_body,
    )


def _stale(up: Upstream, failure: UpstreamFailure, head: RequestHead, down: Downstream) -> bool:
    """SPEC §5.7 "Stale reuse": may this failure be a keep-alive connection the backend had
    already closed, with nothing lost by sending the request again? An HTTP/2 stream the
    backend refused or never processed (RFC 9113 §8.7) may be, whatever the method."""
    if isinstance(up, Http2Upstream) and up.unprocessed:
        return not head.has_body and not down.response_started
    return (
        up.reused
        and failure.status == 502
        and not up.received_any
        and not head.has_body
        and head.method in _IDEMPOTENT
        and not down.response_started
    )


async def _connect(
    ctx: ServerContext,
    service: ServiceRuntime,
    peer: Peer,
    *,
    fresh: bool = False,
    http2: bool = False,
) -> Upstream:
    """A new (or, waiting at the pool's limit, a released) connection within
    ``connect_timeout``, as an ``Upstream``: an HTTP/1.1 exchange, or a stream on a pooled
    HTTP/2 connection (``http2``: an ``h2c://`` server, or any gRPC call)."""
    progress = AcquireProgress()
    with trio.move_on_after(service.connect_timeout):
        try:
            if http2:
                return await ctx.h2pool.open_stream(peer, service.pool, progress)
            conn = await ctx.pool.acquire(peer, service.pool, progress, fresh=fresh)
        except ConnectFailed as error:
            raise ConnectError(502, str(error), error.reason) from error
        except PoolClosed as error:
            raise UpstreamFailure(503, "pool closed", text="shutting down") from error
        return Http1Upstream(conn, ctx.pool)
    if progress.stage is AcquireStage.WAITING:
        # SPEC §5.7: at max_conns_per_backend the wait is bounded by connect_timeout, then 503.
        raise UpstreamFailure(503, "pool wait timed out", text="backend connection limit reached")
    raise ConnectError(504, "connect timeout")


class _Attempt:
    """The request half of one attempt, and the release of its upstream exchange."""

    __slots__ = (
        "_down",
        "_duplex",
        "_header_timeout",
        "_pump_done",
        "_pump_error",
        "_relay",
        "_service",
        "_up",
    )

    def __init__(
        self,
        ex: Exchange,
        up: Upstream,
        down: Downstream,
        service: ServiceRuntime,
        extra: Sequence[HeaderLine],
    ) -> None:
        self._up = up
        self._down = down
        self._service = service
        self._relay = ResponseRelay(ex, up, down, service, extra)
        self._pump_error: BaseException | None = None
        self._pump_done = down.request_complete
        #: SPEC §5.10: ``response_header_timeout`` does not apply to gRPC (a client-streaming
        #: call's head comes only after the last message; its deadline bounds the wait).
        self._header_timeout = math.inf if ex.grpc else service.response_header_timeout
        #: The request body streams on while the response is relayed (gRPC).
        self._duplex = ex.grpc

    async def run(self, up_head: RequestHead, expect_continue: bool) -> int:
        """Send, wait, relay; the response's status. Releases the upstream on every path (one
        coroutine frame: every frame of the chain is resumed at each of the attempt's waits)."""
        down, relay = self._down, self._relay
        response: ResponseHead | None = None
        try:
            body = None if self._pump_done else down.take_buffered_body()
            try:
                if body is None:
                    await self._up.send(up_head)
                else:  # the whole body came with the head (a small POST): one write, no pump
                    await self._up.send_batch([up_head, *body])
            except UpstreamGone as error:
                raise UpstreamFailure(502, error.detail) from error
            if body is not None:
                self._pump_done = True
                down.acknowledge(sum(len(e.data) for e in body if isinstance(e, BodyChunk)))
            if expect_continue and not down.request_complete:
                # SPEC §5.4: 100 Continue once routing and the upstream connection succeeded.
                await down.send(_CONTINUE)
            if self._pump_done:
                # No request body to pump (the common case): no nursery, one scope, made with
                # its deadline (setting one afterwards costs as much again).
                deadline = trio.current_time() + self._header_timeout
                timer = relay.timer = trio.CancelScope(deadline=deadline)
                with timer:
                    response = await relay.response_head()
                    await relay.relay(response, request_sent=True)
            elif self._duplex:
                response = await self._duplex_phase()
            else:
                response = await self._request_phase()
                timer = relay.timer = trio.CancelScope()
                with timer:
                    await relay.relay(response, request_sent=self._pump_done)
        finally:
            self._up.release(clean=self._pump_done and relay.complete)
            if relay.sse:
                relay.close_stream()
        if relay.timer.cancelled_caught:
            if not relay.in_body:
                raise UpstreamFailure(504, "response header timeout")
            await relay.timed_out()  # aborts, or ends an idle stream (SPEC §5.5)
        return relay.status

    async def _duplex_phase(self) -> ResponseHead | None:
        """A gRPC call (SPEC §5.10): the request body keeps streaming upstream while the
        response is relayed, both directions at once, each half-closing on its own; the
        attempt ends with the response. None when the relay's timer ran out."""
        relay = self._relay
        response: ResponseHead | None = None
        failure: Exception | None = None
        timer = relay.timer = trio.CancelScope(deadline=trio.current_time() + self._header_timeout)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, timer)
            with timer:
                try:  # caught here and raised after the nursery: no exception group escapes
                    response = await relay.response_head()
                    await relay.relay(response, request_sent=False)
                except Exception as error:
                    failure = error
            nursery.cancel_scope.cancel()
        if self._pump_error is not None:
            raise self._pump_error
        if failure is not None:
            raise failure
        return response

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
                    response = await self._relay.response_head()
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
        """Client body → upstream, one chunk at a time, each acknowledged to the client once
        the upstream took it; on completion start the response-header timer."""
        down = self._down
        try:
            while True:
                event = await down.receive_body()
                await self._send(event)
                if isinstance(event, EndOfBody):
                    break
                down.acknowledge(len(event.data))
        except UpstreamFailure:
            # The backend stopped reading; it may still answer (early response).
            return
        except Exception as error:  # recorded and re-raised by the attempt's task
            self._pump_error = error
            wait.cancel()
            return
        self._pump_done = True
        if not self._duplex:  # the wait for the head starts now (the duplex timer runs on)
            wait.deadline = trio.current_time() + self._header_timeout

    async def _send(self, event: BodyChunk | EndOfBody) -> None:
        try:
            await self._up.send(event)
        except UpstreamGone as error:
            raise UpstreamFailure(502, error.detail) from error
