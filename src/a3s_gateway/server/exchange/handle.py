"""``handle_request``: one request through the stages of the exchange, from head to record.

Ring 1. Nurseries: none here (``attempt.py`` owns the pump nursery of one attempt). Deadlines:
none here (the total timeout is ``dispatch.py``'s, the upstream ones ``attempt.py``'s and
``relay.py``'s, the client's the driver's ``Downstream``).

The stages, over one ``Exchange`` (``context.py``):

1. ``prepare`` — prechecks, routing, the upstream plan (pure and synchronous);
2. ``middlewares`` — the request sides of the router's chain (then the plan from their result);
3. ``dispatch`` — body-limit, mirror, balancer, attempts, failover; ``retrying`` for a chain
   with ``retry``;
4. ``relay`` — each attempt's response, upstream seam → downstream seam;
5. ``record`` — the ``ExchangeRecord`` to the observers once the response went out.

Errors: a client too slow with its body (``ClientTimeout``) gets 408, a malformed body
(``ProtocolViolation``) 400 — or, once a response head went out, the exchange is aborted
through the ``Downstream`` seam (``aborted``), the only way an exchange gives up.

Must not: parse bytes, or know the downstream or upstream protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from a3s_gateway.observability.record import refusal_error
from a3s_gateway.protocols.events import ProtocolViolation
from a3s_gateway.protocols.grpc import GrpcTimeoutError, grpc_timeout
from a3s_gateway.protocols.responses import error_response
from a3s_gateway.server.acme_answer import http_challenge, wants_http_challenge
from a3s_gateway.server.downstream import ClientTimeout, aborted
from a3s_gateway.server.exchange.answer import answer
from a3s_gateway.server.exchange.context import Exchange
from a3s_gateway.server.exchange.dispatch import dispatch
from a3s_gateway.server.exchange.middlewares import (
    complete,
    request_sides,
    request_state,
    wrapper_index,
)
from a3s_gateway.server.exchange.plan import plan_chained
from a3s_gateway.server.exchange.prepare import prepare
from a3s_gateway.server.exchange.recording import end_cause, finish, start
from a3s_gateway.server.exchange.retrying import retrying
from a3s_gateway.server.exchange.upgrades import serve_mux_exchange

if TYPE_CHECKING:
    from a3s_gateway.observability.record import ExchangeRecord
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.responses import GeneratedResponse
    from a3s_gateway.server.downstream import ConnInfo, ObservedDownstream
    from a3s_gateway.server.server_context import ServerContext

__all__ = ["handle_request"]

_OVERLOADED: Final = error_response(503, "overloaded", extra=[(b"retry-after", b"1")])
_CLIENT_TIMEOUT: Final = error_response(408, close=True)


async def handle_request(
    head: RequestHead, down: ObservedDownstream, info: ConnInfo, ctx: ServerContext
) -> None:
    """Answer one request, by proxying it or by a generated response, then hand its record to
    the observers (metrics, access log) once the response has gone out.

    Raises only ``ClientGone`` (the client went away) or ``ExchangeAborted`` (the response had
    to be given up); the driver then ends what its protocol must. Everything else is answered
    here.
    """
    record = start(head, info)
    try:
        await _counted(head, down, info, ctx, record)
    except BaseException as error:
        if not (down.status and record.error):  # keep a cause only once a head went out
            # A stream the client reset is cancelled like a shutdown, but is the client's.
            record.error = "client_abort" if down.client_cancelled else end_cause(error)
        raise
    finally:
        finish(record, down, ctx)


async def _counted(
    head: RequestHead,
    down: ObservedDownstream,
    info: ConnInfo,
    ctx: ServerContext,
    record: ExchangeRecord,
) -> None:
    """The stages within the entrypoint's ``max_concurrent_requests`` (503 beyond it), with
    the client's body errors answered."""
    runtime = ctx.runtime
    name = info.entrypoint
    entry = runtime.entrypoints[name]
    ctx.total_requests += 1
    active = ctx.active_requests.get(name, 0)
    if active >= entry.max_concurrent_requests:
        record.error = "overloaded"
        await answer(down, head, _OVERLOADED)
        return
    ctx.active_requests[name] = active + 1
    try:
        # The stages, inline: every coroutine frame of the chain is resumed at each wait.
        ex = Exchange(head, down, info, ctx, runtime, entry, record)
        early = None
        if wants_http_challenge(head, info, ctx):  # SPEC §12.2: before redirects and routing
            early = await http_challenge(head, ctx)
        if early is None:
            early = prepare(ex) if not ex.grpc else _grpc_prepare(ex)
        if early is not None:
            await answer(down, head, early)
        elif ex.chain:
            await _chained(ex)
        elif ex.mux is None:
            await dispatch(ex, down)
        else:
            await serve_mux_exchange(ex)
    except ClientTimeout as timeout:
        record.error = timeout.error
        if down.response_started:
            raise aborted(down) from None
        await answer(down, head, _CLIENT_TIMEOUT)
    except ProtocolViolation as violation:
        # A malformed request body (bad chunking): 400 if we still can, else abort.
        record.error = refusal_error(violation.status)
        if down.response_started:
            raise aborted(down) from None
        text = f"bad request: {violation.reason}" if violation.status == 400 else None
        await answer(down, head, error_response(violation.status, text, close=True))
    finally:
        ctx.active_requests[name] -= 1


def _grpc_prepare(ex: Exchange) -> GeneratedResponse | None:
    """``prepare`` for a gRPC call, after its ``grpc-timeout`` was read (SPEC §5.10: a
    malformed one is answered ``grpc-status 13``)."""
    try:
        ex.grpc_timeout = grpc_timeout(ex.head) or 0.0
    except GrpcTimeoutError:
        ex.record.error = "bad_request"
        return error_response(400, "invalid grpc-timeout")
    return prepare(ex)


async def _chained(ex: Exchange) -> None:
    """The middlewares, then the dispatch (or the retry middleware's attempts of it)."""
    chain = ex.chain
    state = request_state(ex)
    split = wrapper_index(chain)
    stop = len(chain) if split is None else split + 1
    if await request_sides(ex, state, 0, stop) is not None:
        return  # a middleware answered
    if ex.mux is not None:  # the gateway serves the WebSocket itself: nothing to retry
        plan_chained(ex, state)
        try:
            await serve_mux_exchange(ex)
        finally:
            complete(chain[:stop], state, ex.status)
        return
    if split is not None:
        status = 0
        try:
            status = await retrying(ex, state, split)
        finally:
            complete(chain[:stop], state, status)
        return
    plan_chained(ex, state)
    try:
        await dispatch(ex, ex.down)
    finally:
        complete(chain, state, ex.status)
