"""One proxied request: prechecks, routing, backend choice, connect attempts and failover.

Ring 1. Nurseries: none here (``forward.py`` owns the pump nursery of one attempt). Deadlines
set here: the upstream connect timeout (one scope per attempt, SPEC §5.5) and the total
timeout (one scope around the whole dispatch when ``total_timeout`` is set). Status mapping
follows SPEC §5.5's rule of thumb: refused/reset/garbage → 502, too slow → 504, nothing
available → 503, client too slow → 408.

The runtime snapshot is read once, at the start (``ctx.runtime``), and used to the end.

Must not: parse bytes (the adapters do) or know the downstream protocol: it talks to a
``Downstream`` (``Http1Downstream`` today, an HTTP/2 stream later).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Final, Protocol

import trio

from a3s_gateway.middleware import Middleware, RequestState, through
from a3s_gateway.middleware.body_limit import too_large
from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.headers import (
    ForwardingContext,
    client_ip,
    client_wants_trailers,
    forwarding_headers,
    strip_hop_by_hop,
)
from a3s_gateway.protocols.responses import GeneratedResponse, error_response
from a3s_gateway.protocols.target import decrement_max_forwards, precheck, split_target
from a3s_gateway.routing.paths import InvalidPathEscape, routing_path, sanitize_path
from a3s_gateway.routing.request import RequestView, canonical_host, parse_peer
from a3s_gateway.server.body_limit import BodyTooLarge, LimitedDownstream
from a3s_gateway.server.forward import AbortResponse, ConnectError, UpstreamFailure, forward
from a3s_gateway.server.generation import log_transition
from a3s_gateway.server.mirror import MirrorCopy, MirrorTee

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from a3s_gateway.config.runtime import EntrypointRuntime, RuntimeConfig, ServiceRuntime
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.server.connection import ConnInfo
    from a3s_gateway.server.context import ServerContext
    from a3s_gateway.services import Backend

__all__ = ["ClientTimeout", "Downstream", "handle_request", "send_generated"]

log: Final = logging.getLogger("a3s_gateway.exchange")

_END: Final = EndOfBody()
#: The debug-mode response field naming the failover service that served (SPEC §7.8).
_SERVED_BY: Final = b"x-a3s-failover"
#: The answer when a service has no available backend at all (SPEC §7.9 step 5).
_NO_BACKEND: Final = error_response(503, "no available backend")


class ClientTimeout(Exception):  # noqa: N818 -- an event
    """The client left a gap longer than ``timeouts.body_idle`` in its request body."""


class Downstream(Protocol):
    """The client side of one exchange, whatever the downstream protocol."""

    @property
    def http_version(self) -> bytes: ...

    @property
    def request_complete(self) -> bool: ...

    @property
    def response_started(self) -> bool: ...

    async def receive_body(self) -> BodyChunk | EndOfBody: ...

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None: ...

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None: ...

    async def send_batch(self, events: Sequence[ResponseHead | BodyChunk | EndOfBody]) -> None: ...

    def close_after_response(self) -> None: ...


async def send_generated(down: Downstream, response: GeneratedResponse, *, head_only: bool) -> None:
    """Send a gateway-generated response (``Date`` is added by the caller's adapter path)."""
    if response.close:
        down.close_after_response()
    if response.body and not head_only:
        await down.send_batch((response.head, BodyChunk(response.body), _END))
    else:
        await down.send_batch((response.head, _END))


async def handle_request(
    head: RequestHead, down: Downstream, info: ConnInfo, ctx: ServerContext
) -> None:
    """Answer one request, by proxying it or by a generated response.

    Raises only ``ClientGone`` (the client went away, or the response had to be aborted): the
    connection then closes. Everything else is answered here.
    """
    runtime = ctx.runtime
    entry = runtime.entrypoints[info.entrypoint]
    ctx.total_requests += 1
    active = ctx.active_requests.get(info.entrypoint, 0)
    if active >= entry.max_concurrent_requests:
        extra = [(b"retry-after", b"1")]
        await _answer(down, head, error_response(503, "overloaded", extra=extra))
        return
    ctx.active_requests[info.entrypoint] = active + 1
    try:
        await _handle(head, down, info, ctx, runtime, entry)
    except ClientTimeout:
        if not down.response_started:
            await _answer(down, head, error_response(408, close=True))
        else:
            raise _abort() from None
    except ProtocolViolation as violation:
        # A malformed request body (bad chunking): 400 if we still can, else abort.
        if down.response_started:
            raise _abort() from None
        text = f"bad request: {violation.reason}" if violation.status == 400 else None
        await _answer(down, head, error_response(violation.status, text, close=True))
    finally:
        ctx.active_requests[info.entrypoint] -= 1


def _abort() -> Exception:
    from a3s_gateway.server.connection import ClientGone

    return ClientGone()


async def _answer(down: Downstream, head: RequestHead, response: GeneratedResponse) -> None:
    await send_generated(down, response, head_only=head.method == b"HEAD")


async def _handle(
    head: RequestHead,
    down: Downstream,
    info: ConnInfo,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    entry: EntrypointRuntime,
) -> None:
    early = precheck(head)
    if early is not None:
        await _answer(down, head, early)
        return
    raw_path, query = split_target(head.target)
    if entry.sanitize_path:
        raw_path = sanitize_path(raw_path)
    try:
        path = routing_path(raw_path)
    except InvalidPathEscape:
        await _answer(down, head, error_response(400, "bad request: invalid escape", close=True))
        return
    view = RequestView(
        head.method.decode("latin-1"),
        canonical_host(head.authority.decode("latin-1")),
        path,
        headers=_TextHeaders(head.headers),
        query=query.decode("latin-1"),
        remote_addr=info.peer_ip,
    )
    route = runtime.routes.select(view, info.entrypoint)
    if route is None:
        await _answer(down, head, error_response(404))
        return
    service = runtime.services.get(route.service)
    if service is None:
        await _answer(down, head, error_response(503))
        return
    chain = runtime.chains.get(route.name)
    if chain:
        request = await _run_chain(chain, head, raw_path, query, down, info, entry, route.service)
        if request is None:  # a middleware answered
            return
    else:
        target = raw_path + (b"?" + query if query else b"")
        upstream_headers, client = _upstream_headers(head, info, entry)
        request = _Request(head, target, upstream_headers, client, entry.tls)
    if request.state is None:
        await _dispatch(request, down, ctx, runtime, service)
        return
    try:
        await _dispatch(request, down, ctx, runtime, service)
    finally:
        _complete(request.chain, request.state, request.status)


async def _run_chain(
    chain: tuple[Middleware, ...],
    head: RequestHead,
    raw_path: bytes,
    query: bytes,
    down: Downstream,
    info: ConnInfo,
    entry: EntrypointRuntime,
    service: str,
) -> _Request | None:
    """The request sides of ``chain`` (SPEC §8.1); the request to dispatch, or None when a
    middleware answered (its answer went back through the sides entered before it)."""
    state = RequestState(
        method=head.method,
        path=raw_path,
        query=query,
        headers=list(head.headers),
        authority=head.authority,
        client_ip=_client(head.headers, info, entry),
        peer_ip=info.peer_ip,
        tls=entry.tls,
        now=trio.current_time(),
        service=service,
    )
    for index, middleware in enumerate(chain):
        try:
            answer = await middleware.request(state)
        except Exception:  # a middleware bug answers 500; the connection survives (SPEC §8.1)
            log.exception("middleware %s failed", middleware.name)
            answer = error_response(500, "internal error")
        if answer is not None:
            entered = chain[:index]
            sent = 0
            try:
                await _answer(down, head, through(entered, state, answer))
                sent = answer.head.status
            finally:
                _complete(entered, state, sent)
            return None
    changed = dataclasses.replace(head, method=state.method, headers=state.headers)
    target = state.path + (b"?" + state.query if state.query else b"")
    upstream_headers, client = _upstream_headers(changed, info, entry)
    if state.forwarded_prefix is not None:
        upstream_headers.append((b"x-forwarded-prefix", state.forwarded_prefix))
    hosts = state.values(b"host")
    request = _Request(changed, target, upstream_headers, client, entry.tls)
    request.chain = chain
    request.state = state
    if hosts and hosts[0] != head.authority:  # the headers middleware set Host (SPEC §8.9)
        request.host = hosts[0]
    return request


def _complete(entered: Sequence[Middleware], state: RequestState, status: int) -> None:
    """The completion phase (SPEC §8.1 phase 6) of the middlewares a request entered."""
    for middleware in reversed(entered):
        try:
            middleware.completed(state, status)
        except Exception:  # a middleware bug must not end the connection
            log.exception("middleware %s failed to complete", middleware.name)


class _TextHeaders:
    """Header lines decoded lazily, for the matchers that read headers (most never do)."""

    __slots__ = ("_lines",)

    def __init__(self, lines: Headers) -> None:
        self._lines = lines

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for name, value in self._lines:
            yield name.decode("latin-1"), value.decode("latin-1")


class _Request:
    """What every attempt at a request shares: the head as received, the origin-form target,
    the forwarded headers (without ``Host``) and the client IP (the consistent-hash key);
    with middlewares, their chain and request state (for the response sides) and a ``Host``
    a middleware set."""

    __slots__ = ("chain", "client", "head", "headers", "host", "state", "status", "target", "tls")

    def __init__(
        self, head: RequestHead, target: bytes, headers: Headers, client: str, tls: bool
    ) -> None:
        self.head = head
        self.target = target
        self.headers = headers
        self.client = client
        #: The request arrived over TLS (a sticky cookie is then ``Secure`` by default).
        self.tls = tls
        self.chain: tuple[Middleware, ...] = ()
        self.state: RequestState | None = None
        self.host: bytes | None = None
        #: The status sent to the client once the exchange ended (0: none completed).
        self.status = 0

    def respond(self, status: int, headers: Headers) -> None:
        """The response sides of the whole chain, last first, on a proxied response head."""
        state = self.state
        assert state is not None  # only called when there is a chain
        for middleware in reversed(self.chain):
            middleware.response(state, status, headers)

    def answer(self, response: GeneratedResponse) -> GeneratedResponse:
        """A gateway-generated answer after dispatch, through every response side."""
        if self.state is None:
            return response
        return through(self.chain, self.state, response)


def _peer_trusted(info: ConnInfo, entry: EntrypointRuntime) -> bool:
    if entry.trust_all:
        return True
    if entry.trusted:  # parse the peer only when some network is trusted
        peer = parse_peer(info.peer_ip)
        return peer is not None and entry.is_trusted(peer)
    return False


def _client(received: Headers, info: ConnInfo, entry: EntrypointRuntime) -> str:
    """The client IP by the trusted-proxy rule (SPEC §5.4)."""
    trusted = _peer_trusted(info, entry)
    return client_ip(received, info.peer_ip, peer_trusted=trusted, is_trusted=entry.is_trusted)


def _upstream_headers(
    head: RequestHead, info: ConnInfo, entry: EntrypointRuntime
) -> tuple[Headers, str]:
    """SPEC §5.4 steps 1–5 (``Host`` is set per backend in ``forward``), and the client IP."""
    received = head.headers
    trusted = _peer_trusted(info, entry)
    stripped = strip_hop_by_hop(received)
    client = client_ip(received, info.peer_ip, peer_trusted=trusted, is_trusted=entry.is_trusted)
    forwarding = ForwardingContext(
        peer_ip=info.peer_ip,
        peer_trusted=trusted,
        client_ip=client,
        tls=entry.tls,
        authority=head.authority,
        via_protocol=head.http_version,
        add_via=entry.via,
    )
    headers = forwarding_headers(stripped, forwarding)
    if head.method == b"OPTIONS":
        headers = decrement_max_forwards(headers)
    if client_wants_trailers(received):
        headers.append((b"te", b"trailers"))
    return [line for line in headers if line[0] != b"host"], client


async def _dispatch(
    request: _Request,
    down: Downstream,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    service: ServiceRuntime,
) -> None:
    """Choose, connect, forward; failover once; answer 502/503/504 when all else fails."""
    total = service.total_timeout
    if total <= 0:  # no total timeout: no scope (the hot path)
        await _dispatch_within(request, down, ctx, runtime, service)
        return
    with trio.move_on_after(total) as scope:
        await _dispatch_within(request, down, ctx, runtime, service)
        return
    if scope.cancelled_caught:
        if down.response_started:
            raise _abort()
        await _answer(down, request.head, request.answer(error_response(504)))
        request.status = 504


async def _dispatch_within(
    request: _Request,
    down: Downstream,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    service: ServiceRuntime,
) -> None:
    state = request.state
    if state is not None and state.body_limit is not None and not down.request_complete:
        try:
            await _dispatch_limited(
                request, LimitedDownstream(down, state.body_limit), ctx, runtime, service
            )
        except BodyTooLarge as error:
            if down.response_started:
                raise _abort() from None
            # Answered here, so the 413 passes the middlewares' response sides (SPEC §8.1).
            await _answer(down, request.head, request.answer(too_large(error.limit)))
            request.status = 413
        return
    await _dispatch_limited(request, down, ctx, runtime, service)


async def _dispatch_limited(
    request: _Request,
    down: Downstream,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    service: ServiceRuntime,
) -> None:
    mirror = service.mirror
    if mirror is not None and mirror.sampler.take():
        copy = MirrorCopy(
            ctx, mirror, request.head, request.target, request.headers, request.client
        )
        down = MirrorTee(down, copy)
    failure = await _try_service(request, down, ctx, service)
    if failure is not None and service.failover is not None:
        fallback = runtime.services.get(service.failover)
        if fallback is not None:
            reason = "no_backend" if failure is _NO_BACKEND else "connect_failed"
            ctx.failover_requests += 1
            log.info(
                "service %s failed (%s): request goes to failover service %s",
                service.name,
                reason,
                fallback.name,
            )
            # SPEC §7.8: the failover service's own sticky settings do not apply. In debug
            # mode (--log-level debug) the response says which pool served it.
            served_by = (
                ((_SERVED_BY, fallback.name.encode()),) if log.isEnabledFor(logging.DEBUG) else ()
            )
            second = await _try_service(
                request, down, ctx, fallback, primary=False, extra=served_by
            )
            # SPEC §7.8: a failover without backends leaves the primary's 502/504 standing.
            failure = second if second is not _NO_BACKEND or failure is _NO_BACKEND else failure
    if failure is not None:
        await _answer(down, request.head, request.answer(failure))
        request.status = failure.head.status


async def _try_service(
    request: _Request,
    down: Downstream,
    ctx: ServerContext,
    service: ServiceRuntime,
    *,
    primary: bool = True,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> GeneratedResponse | None:
    """Up to ``connect_attempts`` backends (SPEC §7.8); None once a response was relayed,
    else the error response that describes the last failure.

    Sticky sessions (SPEC §7.6, §7.9 step 1), for the primary service only: a valid cookie
    naming an available backend picks it for the first attempt, without ``Set-Cookie``; any
    other backend that serves gets a cookie naming it.
    """
    tried: list[Backend] = []
    failure = _NO_BACKEND
    sticky = service.sticky if primary else None
    pinned = sticky.lookup(request.head.headers, ctx.dates.unix()) if sticky else None
    outliers = service.outliers
    if outliers is not None:
        # SPEC §7.5: an ejection that has run out ends when selecting, not only on the ticker.
        due = outliers.next_readmission
        now = trio.current_time() if due is not None else 0.0
        if due is not None and due <= now:
            for transition in outliers.tick(now):
                log_transition(service.name, transition)
    for _ in range(service.connect_attempts):
        if pinned is not None and not tried:
            backend: Backend | None = pinned
        else:
            backend = service.balancer.pick(exclude=tried, key=request.client)
        if backend is None:
            break
        tried.append(backend)
        added = extra
        if sticky is not None and backend is not pinned:
            added = (*extra, sticky.set_cookie(backend, ctx.dates.unix(), tls=request.tls))
        with backend.lease():
            try:
                status = await forward(
                    request.head,
                    request.target,
                    request.headers,
                    down,
                    ctx,
                    service,
                    backend,
                    added,
                    on_response=request.respond if request.chain else None,
                    host=request.host,
                )
            except ConnectError as error:
                log.info("connect to %s failed: %s", backend.url.text, error.detail)
                _outcome(service, backend, error.status)
                failure = error_response(error.status)
                continue
            except UpstreamFailure as error:
                log.info("upstream %s failed: %s", backend.url.text, error.detail)
                if error.status != 503:  # 503: our own pool limit or shutdown, not the backend
                    _outcome(service, backend, error.status)
                if down.response_started:
                    raise _abort() from error
                return error_response(error.status, error.text)
            except AbortResponse as error:
                log.info("response from %s aborted: %s", backend.url.text, error)
                _outcome(service, backend, 502)
                raise _abort() from error
            _outcome(service, backend, status)
            request.status = status
            return None
    return failure


def _outcome(service: ServiceRuntime, backend: Backend, status: int) -> None:
    """Feed one finished attempt to the service's passive health (SPEC §7.5): transport
    failures arrive as 502 (refused, reset, invalid) or 504 (timeouts)."""
    outliers = service.outliers
    if outliers is None:
        return
    transition = outliers.record(backend, error=outliers.is_error(status), now=trio.current_time())
    if transition is not None:
        log_transition(service.name, transition)
