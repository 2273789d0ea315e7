"""Stage 1, prepare: the prechecks, routing and, for a router without middlewares, the upstream
plan. On an entrypoint with ``redirect_to`` every request but an ACME HTTP-01 challenge is
answered ``308`` to the TLS entrypoint here, before the prechecks and routing (SPEC §5.14
step 3). Pure and synchronous: it decides, and ``handle.py`` sends whatever it decided to answer.

Ring 1 by placement; no IO, no clock (routing reads the request only). The trace context and
the request id start here (``Trace``, SPEC §9.4, §9.5), so every answer carries the request id.

Must not: send, await, or choose backends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from a3s_gateway.observability.tracing import extract, request_id, start_span
from a3s_gateway.protocols.responses import error_response, redirect_response
from a3s_gateway.protocols.target import (
    is_acme_challenge,
    precheck,
    redirect_location,
    split_target,
)
from a3s_gateway.routing.paths import InvalidPathEscape, routing_path, sanitize_path
from a3s_gateway.routing.request import RequestView, canonical_host
from a3s_gateway.server.exchange.plan import peer_trusted, plan_direct
from a3s_gateway.server.exchange.trace import Trace
from a3s_gateway.server.exchange.upgrades import handshake

if TYPE_CHECKING:
    from collections.abc import Iterator

    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.protocols.responses import GeneratedResponse
    from a3s_gateway.routing import Route
    from a3s_gateway.server.exchange.context import Exchange

__all__ = ["prepare"]

_INVALID_ESCAPE: Final = error_response(400, "bad request: invalid escape", close=True)
_NO_ROUTE: Final = error_response(404)
_NO_SERVICE: Final = error_response(503)
_NO_REDIRECT_HOST: Final = error_response(400, "bad request: no host to redirect to")


def prepare(ex: Exchange) -> GeneratedResponse | None:
    """Check and route the request; None when it goes on to the middlewares and dispatch
    (``ex.service`` and ``ex.chain`` set, and the plan when the chain is empty), else the
    answer to send (``record.error`` says why)."""
    head, record = ex.head, ex.record
    for name, value in head.headers:
        if name == b"user-agent":
            record.user_agent = value
            break
    ex.trace = _start_trace(ex)
    raw_path, query = split_target(head.target)
    ex.received = raw_path + (b"?" + query if query else b"")
    record.path = raw_path
    record.query = query
    port = ex.entry.redirect_port
    if port is not None and raw_path[:1] == b"/" and not is_acme_challenge(raw_path):
        return _redirect(ex, port)
    early = precheck(head)
    if early is not None:
        record.error = "bad_request" if early.head.status >= 400 else ""
        return early
    if ex.entry.sanitize_path:
        raw_path = sanitize_path(raw_path)
    ex.path = raw_path
    ex.query = query
    try:
        path = routing_path(raw_path)
    except InvalidPathEscape:
        record.error = "bad_request"
        return _INVALID_ESCAPE
    view = RequestView(
        head.method.decode("latin-1"),
        canonical_host(head.authority.decode("latin-1")),
        path,
        headers=_TextHeaders(head.headers),
        query=query.decode("latin-1"),
        remote_addr=ex.info.peer_ip,
    )
    runtime = ex.runtime
    route = runtime.routes.select(view, ex.info.entrypoint)
    if route is None:
        record.error = "no_route"
        return _NO_ROUTE
    return _routed(ex, route)


def _routed(ex: Exchange, route: Route) -> GeneratedResponse | None:
    """The routed request's service (or multiplexer), its WebSocket handshake if it has one,
    its chain, and without a chain its plan."""
    record, runtime = ex.record, ex.runtime
    record.router = route.name
    record.service = route.service
    service = ex.service = runtime.services.get(route.service)
    if service is None:
        ex.mux = runtime.muxes.get(route.service)
        if ex.mux is None:
            record.error = "no_backend"
            return _NO_SERVICE
    if ex.head.upgrade or ex.mux is not None:  # SPEC §5.11: a WebSocket handshake, checked
        early = handshake(ex)
        if early is not None:
            return early
    chain = runtime.chains.get(route.name)
    if chain:
        ex.chain = chain
    else:
        plan_direct(ex)
    return None


def _redirect(ex: Exchange, port: int) -> GeneratedResponse:
    """308 to the same host and target on the TLS entrypoint's ``port`` (``redirect_to``); 400
    when the request names no host a ``Location`` can carry."""
    location = redirect_location(ex.head.authority, port, ex.received)
    if location is None:
        ex.record.error = "bad_request"
        return _NO_REDIRECT_HOST
    return redirect_response(location)


def _start_trace(ex: Exchange) -> Trace | None:
    """Continue the request's trace and settle its request id; None when both are off. The
    request id also goes on the response, whoever answers."""
    settings = ex.runtime.observability
    name = settings.request_id
    if not settings.tracing and not name:
        return None
    head, record = ex.head, ex.record
    span = None
    if settings.tracing:
        span = start_span(extract(head.headers), ex.ctx.rng, settings.sample_rate)
        record.trace_id = span.trace_id
        record.span_id = span.span_id
        record.parent_span_id = span.parent_id
        record.sampled = span.sampled
    rid = b""
    if name:
        trusted = peer_trusted(ex.info, ex.entry)
        rid = record.request_id = request_id(head.headers, name, trusted=trusted, rng=ex.ctx.rng)
        ex.down.add_response_field((name, rid))
    return Trace(span, settings.forms, name, rid)


class _TextHeaders:
    """Header lines decoded lazily, for the matchers that read headers (most never do)."""

    __slots__ = ("_lines",)

    def __init__(self, lines: Headers) -> None:
        self._lines = lines

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for name, value in self._lines:
            yield name.decode("latin-1"), value.decode("latin-1")
