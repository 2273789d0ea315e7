"""Stage 2, the middlewares (SPEC §8.1): the request state built from the head, the request
sides in order, a middleware's own answer back through the response sides of those entered
before it, and the completion phase.

Ring 1 (request sides are awaited: forward-auth and JWKS call out through ``middleware/
outbound.py``'s seams; the others return without suspending). Response sides run on proxied
heads in ``relay.py`` (``Exchange.respond``) and on gateway errors (``Exchange.answer``).

Must not: dispatch (``handle.py`` and ``retrying.py`` do, after this stage).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.middleware import Middleware, RequestState
from a3s_gateway.middleware.breaker import CircuitBreakerMiddleware
from a3s_gateway.middleware.retry import RetryMiddleware
from a3s_gateway.protocols.headers import client_ip
from a3s_gateway.server.exchange.answer import INTERNAL_ERROR, answer, through_safely
from a3s_gateway.server.exchange.plan import peer_trusted

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.server.exchange.context import Exchange

__all__ = ["complete", "is_stream", "request_sides", "request_state", "wrapper_index"]

log: Final = logging.getLogger("a3s_gateway.exchange")

#: The access log's ``error`` for a middleware's answer, by status (SPEC §9.2).
_ANSWER_ERRORS: Final = {
    401: "unauthorized",
    403: "forbidden",
    413: "body_too_large",
    429: "rate_limited",
    500: "internal_error",
    502: "auth_unavailable",
    503: "unavailable",
    504: "auth_timeout",
}


def request_state(ex: Exchange) -> RequestState:
    """What the middlewares see of the request (and may change), with the gateway's trace
    context and request id already on it, so the calls they make carry them (SPEC §9.4)."""
    head, info, entry = ex.head, ex.info, ex.entry
    trusted = peer_trusted(info, entry)
    service = ex.service
    assert service is not None  # prepare routed the request
    state = RequestState(
        method=head.method,
        path=ex.path,
        query=ex.query,
        headers=list(head.headers),
        authority=head.authority,
        client_ip=client_ip(
            head.headers, info.peer_ip, peer_trusted=trusted, is_trusted=entry.is_trusted
        ),
        peer_ip=info.peer_ip,
        tls=entry.tls,
        now=trio.current_time(),
        service=service.name,
        peer_trusted=trusted,
        received=ex.received,
    )
    ex.record.client_ip = state.client_ip
    trace = ex.trace
    if trace is not None:
        state.headers = trace.apply(state.headers)
    return state


def wrapper_index(chain: tuple[Middleware, ...]) -> int | None:
    """The position of the first ``retry`` in ``chain`` (it runs the rest per attempt)."""
    for index, middleware in enumerate(chain):
        if isinstance(middleware, RetryMiddleware):
            return index
    return None


async def request_sides(ex: Exchange, state: RequestState, start: int, stop: int) -> int | None:
    """The request sides of ``chain[start:stop]``; None when all passed, else the status a
    middleware answered with (0 if it could not be sent). The answer goes back through the
    response sides of the middlewares entered before it (``chain[:index]``); the ones entered
    here complete. Each request side's outcome and time go to the observer."""
    chain, observer = ex.chain, ex.ctx.observer
    for index in range(start, stop):
        middleware = chain[index]
        began = trio.current_time() if observer is not None else 0.0
        try:
            response = await middleware.request(state)
        except Exception:  # a middleware bug answers 500; the connection survives (SPEC §8.1)
            log.exception("middleware %s failed", middleware.name)
            response = INTERNAL_ERROR
        if observer is not None:
            outcome = "pass" if response is None else "reject"
            observer.middleware(
                middleware.name, middleware.kind, outcome, trio.current_time() - began
            )
        if response is not None:
            ex.record.middleware = middleware.name
            ex.record.error = _answered_error(middleware, response.head.status)
            sent = 0
            try:
                await answer(ex.down, ex.head, through_safely(chain[:index], state, response))
                sent = response.head.status
            finally:
                complete(chain[start:index], state, sent)
            return sent
    return None


def _answered_error(middleware: Middleware, status: int) -> str:
    """The ``error`` word for a middleware's own answer ("" for a CORS preflight 204)."""
    if status < 400:
        return ""
    if status == 503 and isinstance(middleware, CircuitBreakerMiddleware):
        return "breaker_open"
    return _ANSWER_ERRORS.get(status, "denied")


def complete(entered: Sequence[Middleware], state: RequestState, status: int) -> None:
    """The completion phase (SPEC §8.1 phase 6) of the middlewares a request entered."""
    for middleware in reversed(entered):
        try:
            middleware.completed(state, status)
        except Exception:  # a middleware bug must not end the connection
            log.exception("middleware %s failed to complete", middleware.name)


def is_stream(state: RequestState) -> bool:
    """gRPC and WebSocket requests (retried only after a connect failure, SPEC §8.12): an
    HTTP/1.1 handshake has ``Upgrade``, an HTTP/2 one is an extended ``CONNECT``."""
    if state.method == b"CONNECT":
        return True
    for name, value in state.headers:
        if name == b"upgrade" or (
            name == b"content-type" and value.lower().startswith(b"application/grpc")
        ):
            return True
    return False
