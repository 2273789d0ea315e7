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
import random
import time
from functools import partial
from typing import TYPE_CHECKING, Final, Protocol

import trio

from a3s_gateway.middleware import Middleware, RequestState, through
from a3s_gateway.middleware.body_limit import too_large
from a3s_gateway.middleware.breaker import CircuitBreakerMiddleware
from a3s_gateway.middleware.compress import CompressMiddleware
from a3s_gateway.middleware.retry import RetryMiddleware, failure_kind
from a3s_gateway.observability.record import ExchangeObserver, ExchangeRecord, refusal_error
from a3s_gateway.observability.tracing import (
    extract,
    inject,
    request_id,
    set_request_id,
    start_span,
)
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
from a3s_gateway.server.context import DateCache
from a3s_gateway.server.forward import (
    AbortResponse,
    ConnectError,
    HeldResponse,
    UpstreamFailure,
    forward,
)
from a3s_gateway.server.generation import log_transition
from a3s_gateway.server.mirror import MirrorCopy, MirrorTee
from a3s_gateway.server.replay import ReplayBuffer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from a3s_gateway.config.runtime import (
        EntrypointRuntime,
        ObservabilityRuntime,
        RuntimeConfig,
        ServiceRuntime,
    )
    from a3s_gateway.middleware.compress import BodyFilter
    from a3s_gateway.observability.tracing import Span
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.server.connection import ConnInfo
    from a3s_gateway.server.context import ServerContext
    from a3s_gateway.services import Backend

__all__ = ["ClientTimeout", "Downstream", "handle_request", "send_generated"]

log: Final = logging.getLogger("a3s_gateway.exchange")

_END: Final = EndOfBody()
#: ``Date`` values for generated responses (formatted at most once a second; shared by the
#: gateways of a process, which is harmless: it only caches the time of day).
_DATES: Final = DateCache()
#: The debug-mode response field naming the failover service that served (SPEC §7.8).
_SERVED_BY: Final = b"x-a3s-failover"
#: The answer when a service has no available backend at all (SPEC §7.9 step 5).
_NO_BACKEND: Final = error_response(503, "no available backend")
#: The answer when a middleware fails (SPEC §8.1 "Errors").
_INTERNAL_ERROR: Final = error_response(500, "internal error")


class MiddlewareFailed(Exception):  # noqa: N818 -- an event
    """A middleware's response side raised (logged where it happened): answered 500."""


def _through(
    entered: Sequence[Middleware], state: RequestState, response: GeneratedResponse
) -> GeneratedResponse:
    """``phases.through``, but a response side that raises gives a 500 (SPEC §8.1 "Errors")."""
    try:
        return through(entered, state, response)
    except Exception:
        log.exception("a middleware failed on the response side")
        return _INTERNAL_ERROR


class ClientTimeout(Exception):  # noqa: N818 -- an event
    """The client was too slow with its request body: ``error`` is ``client_timeout`` for a
    gap longer than ``timeouts.body_idle``, ``body_timeout`` for a body not complete within
    ``timeouts.request_body`` of its head."""

    def __init__(self, error: str = "client_timeout") -> None:
        super().__init__(error)
        self.error = error


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


class ObservedDownstream(Downstream, Protocol):
    """The connection's own downstream, which also counts what crossed it for the record:
    the status of the response head sent and the body bytes read and written."""

    @property
    def status(self) -> int: ...

    @property
    def received_bytes(self) -> int: ...

    @property
    def sent_bytes(self) -> int: ...

    @property
    def head_sent(self) -> float: ...

    def add_response_field(self, line: tuple[bytes, bytes]) -> None: ...


async def send_generated(down: Downstream, response: GeneratedResponse, *, head_only: bool) -> None:
    """Send a gateway-generated response, with a ``Date`` field when it has none (RFC 9110
    §6.6.1: the gateway is the origin of this response)."""
    if response.close:
        down.close_after_response()
    head = response.head
    if not any(name == b"date" for name, _ in head.headers):
        head = ResponseHead(head.status, [*head.headers, (b"date", _DATES.value())], head.reason)
    if response.body and not head_only:
        await down.send_batch((head, BodyChunk(response.body), _END))
    else:
        await down.send_batch((head, _END))


async def handle_request(
    head: RequestHead, down: ObservedDownstream, info: ConnInfo, ctx: ServerContext
) -> None:
    """Answer one request, by proxying it or by a generated response, then hand its record to
    the observers (metrics, access log) once the response has gone out.

    Raises only ``ClientGone`` (the client went away, or the response had to be aborted): the
    connection then closes. Everything else is answered here.
    """
    record = ExchangeRecord(info.entrypoint, trio.current_time())
    record.method = head.method
    record.host = head.authority
    record.peer_ip = record.client_ip = info.peer_ip
    record.protocol = _PROTOCOLS.get(head.http_version, "HTTP/1.1")
    if info.tls:
        record.scheme = "https"
    try:
        await _handle_counted(head, down, info, ctx, record)
    except BaseException as error:
        if not (down.status and record.error):  # keep a cause only once a head went out
            record.error = _end_cause(error)
        raise
    finally:
        record.status = down.status
        record.head_sent = down.head_sent
        record.request_bytes = down.received_bytes
        record.response_bytes = down.sent_bytes
        record.ended = trio.current_time()
        record.wall = time.time()
        observer = ctx.observer
        if observer is not None:
            observer.finish(record)


def _end_cause(error: BaseException) -> str:
    """The ``error`` word for an exchange that ended by an exception: ``shutdown`` when the
    gateway cancelled it (only a scope outside the exchange can: the drain's grace ran out, a
    second signal stopped the gateway, a listener removed by a reload reached its grace), else
    ``client_abort`` (the client went away, or the response had to be aborted)."""
    if isinstance(error, trio.Cancelled):
        return "shutdown"
    if isinstance(error, BaseExceptionGroup):
        # A cancelled nursery (the request-body pump's) raises its tasks' Cancelled as a group.
        _, rest = error.split(trio.Cancelled)
        if rest is None:
            return "shutdown"
    return "client_abort"


async def _handle_counted(
    head: RequestHead,
    down: ObservedDownstream,
    info: ConnInfo,
    ctx: ServerContext,
    record: ExchangeRecord,
) -> None:
    runtime = ctx.runtime
    entry = runtime.entrypoints[info.entrypoint]
    ctx.total_requests += 1
    active = ctx.active_requests.get(info.entrypoint, 0)
    if active >= entry.max_concurrent_requests:
        record.error = "overloaded"
        extra = [(b"retry-after", b"1")]
        await _answer(down, head, error_response(503, "overloaded", extra=extra))
        return
    ctx.active_requests[info.entrypoint] = active + 1
    try:
        await _handle(head, down, info, ctx, runtime, entry, record)
    except ClientTimeout as timeout:
        record.error = timeout.error
        if not down.response_started:
            await _answer(down, head, error_response(408, close=True))
        else:
            raise _abort() from None
    except ProtocolViolation as violation:
        # A malformed request body (bad chunking): 400 if we still can, else abort.
        record.error = refusal_error(violation.status)
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
    down: ObservedDownstream,
    info: ConnInfo,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    entry: EntrypointRuntime,
    record: ExchangeRecord,
) -> None:
    for name, value in head.headers:
        if name == b"user-agent":
            record.user_agent = value
            break
    trace = _trace(head, down, info, ctx, runtime.observability, entry, record)
    raw_path, query = split_target(head.target)
    received = record.path = raw_path
    record.query = query
    early = precheck(head)
    if early is not None:
        record.error = "bad_request" if early.head.status >= 400 else ""
        await _answer(down, head, early)
        return
    if entry.sanitize_path:
        raw_path = sanitize_path(raw_path)
    try:
        path = routing_path(raw_path)
    except InvalidPathEscape:
        record.error = "bad_request"
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
        record.error = "no_route"
        await _answer(down, head, error_response(404))
        return
    record.router = route.name
    record.service = route.service
    service = runtime.services.get(route.service)
    if service is None:
        record.error = "no_backend"
        await _answer(down, head, error_response(503))
        return
    chain = runtime.chains.get(route.name)
    if not chain:
        target = raw_path + (b"?" + query if query else b"")
        upstream_headers, client = _upstream_headers(head, info, entry)
        record.client_ip = client
        if trace is not None:
            upstream_headers = trace.apply(upstream_headers)
        request = _Request(head, target, upstream_headers, client, entry.tls, record)
        await _dispatch(request, down, ctx, runtime, service)
        return
    trusted = _peer_trusted(info, entry)
    state = RequestState(
        method=head.method,
        path=raw_path,
        query=query,
        headers=list(head.headers),
        authority=head.authority,
        client_ip=client_ip(
            head.headers, info.peer_ip, peer_trusted=trusted, is_trusted=entry.is_trusted
        ),
        peer_ip=info.peer_ip,
        tls=entry.tls,
        now=trio.current_time(),
        service=route.service,
        peer_trusted=trusted,
        received=received + (b"?" + query if query else b""),
    )
    record.client_ip = state.client_ip
    if trace is not None:
        # The middlewares see the gateway's trace context and request id, so the calls they
        # make (forward-auth) carry them too (SPEC §9.4 "Inject").
        state.headers = trace.apply(state.headers)
    split = _wrapper_index(chain)
    stop = len(chain) if split is None else split + 1
    if await _request_sides(chain, 0, stop, state, head, down, record, ctx.observer) is not None:
        return  # a middleware answered
    if split is not None:
        status = 0
        try:
            status = await _retrying(
                chain, split, state, head, down, info, ctx, runtime, service, record, trace
            )
        finally:
            _complete(chain[:stop], state, status)
        return
    request = _chained_request(chain, state, head, info, entry, record, trace)
    try:
        await _dispatch(request, down, ctx, runtime, service)
    finally:
        _complete(request.chain, state, request.status)


#: The ``protocol`` of the access log by the request's HTTP version.
_PROTOCOLS: Final = {b"1.1": "HTTP/1.1", b"1.0": "HTTP/1.0", b"2": "HTTP/2"}
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


def _answered_error(middleware: Middleware, status: int) -> str:
    """The ``error`` word for a middleware's own answer ("" for a CORS preflight 204)."""
    if status < 400:
        return ""
    if status == 503 and isinstance(middleware, CircuitBreakerMiddleware):
        return "breaker_open"
    return _ANSWER_ERRORS.get(status, "denied")


def _failure_error(error: UpstreamFailure) -> str:
    """The ``error`` word for an upstream failure before any response byte was relayed."""
    if error.status == 504:
        return "upstream_timeout"
    if error.status == 503:
        return "at_capacity" if "limit" in error.detail else "shutting_down"
    return "bad_response" if error.detail.startswith("invalid") else "upstream_reset"


class _Trace:
    """The exchange's span and request id, and how they go on every upstream request."""

    __slots__ = ("forms", "name", "request_id", "span")

    def __init__(self, span: Span | None, forms: int, name: bytes, request_id: bytes) -> None:
        self.span = span
        self.forms = forms
        self.name = name
        self.request_id = request_id

    def apply(self, headers: Headers) -> Headers:
        """``headers`` with the trace headers replaced by the span's (SPEC §9.4 "Inject") and
        the request id set (§9.5)."""
        if self.span is not None:
            headers = inject(headers, self.span, self.forms)
        if self.name:
            headers = set_request_id(headers, self.name, self.request_id)
        return headers


def _trace(
    head: RequestHead,
    down: ObservedDownstream,
    info: ConnInfo,
    ctx: ServerContext,
    settings: ObservabilityRuntime,
    entry: EntrypointRuntime,
    record: ExchangeRecord,
) -> _Trace | None:
    """Continue the request's trace and settle its request id (SPEC §9.4, §9.5); None when
    both are off. The request id also goes on the response, whoever answers."""
    name = settings.request_id
    if not settings.tracing and not name:
        return None
    span = None
    if settings.tracing:
        span = start_span(extract(head.headers), ctx.rng, settings.sample_rate)
        record.trace_id = span.trace_id
        record.span_id = span.span_id
        record.parent_span_id = span.parent_id
        record.sampled = span.sampled
    rid = b""
    if name:
        trusted = _peer_trusted(info, entry)
        rid = record.request_id = request_id(head.headers, name, trusted=trusted, rng=ctx.rng)
        down.add_response_field((name, rid))
    return _Trace(span, settings.forms, name, rid)


def _wrapper_index(chain: tuple[Middleware, ...]) -> int | None:
    """The position of the first ``retry`` in ``chain`` (it runs the rest per attempt)."""
    for index, middleware in enumerate(chain):
        if isinstance(middleware, RetryMiddleware):
            return index
    return None


async def _request_sides(
    chain: tuple[Middleware, ...],
    start: int,
    stop: int,
    state: RequestState,
    head: RequestHead,
    down: Downstream,
    record: ExchangeRecord,
    observer: ExchangeObserver | None,
) -> int | None:
    """The request sides of ``chain[start:stop]`` (SPEC §8.1); None when all passed, else the
    status a middleware answered with (0 if it could not be sent). The answer goes back
    through the response sides of the middlewares entered before it (``chain[:index]``); the
    ones entered here complete. Each request side's outcome and time go to ``observer``."""
    for index in range(start, stop):
        middleware = chain[index]
        began = trio.current_time() if observer is not None else 0.0
        try:
            answer = await middleware.request(state)
        except Exception:  # a middleware bug answers 500; the connection survives (SPEC §8.1)
            log.exception("middleware %s failed", middleware.name)
            answer = _INTERNAL_ERROR
        if observer is not None:
            outcome = "pass" if answer is None else "reject"
            spent = trio.current_time() - began
            observer.middleware(middleware.name, middleware.kind, outcome, spent)
        if answer is not None:
            record.middleware = middleware.name
            record.error = _answered_error(middleware, answer.head.status)
            sent = 0
            try:
                await _answer(down, head, _through(chain[:index], state, answer))
                sent = answer.head.status
            finally:
                _complete(chain[start:index], state, sent)
            return sent
    return None


def _chained_request(
    chain: tuple[Middleware, ...],
    state: RequestState,
    head: RequestHead,
    info: ConnInfo,
    entry: EntrypointRuntime,
    record: ExchangeRecord,
    trace: _Trace | None,
) -> _Request:
    """The request to dispatch once the request sides ran: the head as they changed it."""
    changed = dataclasses.replace(head, method=state.method, headers=state.headers)
    target = state.path + (b"?" + state.query if state.query else b"")
    upstream_headers, client = _upstream_headers(changed, info, entry)
    if state.forwarded_prefix is not None:
        upstream_headers.append((b"x-forwarded-prefix", state.forwarded_prefix))
    if trace is not None:
        upstream_headers = trace.apply(upstream_headers)
    hosts = state.values(b"host")
    request = _Request(changed, target, upstream_headers, client, entry.tls, record)
    request.chain = chain
    request.state = state
    if hosts and hosts[0] != head.authority:  # the headers middleware set Host (SPEC §8.9)
        request.host = hosts[0]
    for middleware in chain:
        if isinstance(middleware, CompressMiddleware):
            request.body_filter = partial(middleware.body_filter, state)
            break
    return request


async def _retrying(
    chain: tuple[Middleware, ...],
    split: int,
    base: RequestState,
    head: RequestHead,
    down: Downstream,
    info: ConnInfo,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    service: ServiceRuntime,
    record: ExchangeRecord,
    trace: _Trace | None,
) -> int:
    """SPEC §8.12: attempts of the rest of the chain and the dispatch, each on a fresh copy of
    the request as it reached ``retry`` (``chain[split]``); the status sent to the client.

    A response head the policy wants to retry is held and discarded (``forward``'s ``hold``),
    so nothing reaches the client before the decision. The body is replayed from a bounded
    buffer. Every attempt excludes the backends tried before it while others are available.
    """
    retry = chain[split]
    assert isinstance(retry, RetryMiddleware)
    entry = runtime.entrypoints[info.entrypoint]
    replay = ReplayBuffer(down, retry.max_body_bytes)
    tried: list[Backend] = []
    stream = _is_stream(base)
    number = 0  # the retry number of the current attempt (0: the first attempt)
    slots = 0  # budget slots taken and not yet given back
    reason = ""
    state = base

    def decide(kind: str, status: int) -> bool:
        """Whether the current attempt's outcome is retried (takes a budget slot if so)."""
        nonlocal slots, reason
        if number >= retry.max_retries:
            return False
        why = retry.reason(kind, status)
        if why is None or not retry.may_repeat(why, method=state.method, stream=stream):
            return False
        if not replay.replayable:
            retry.skip("body_too_large")
            return False
        if not retry.begin_retry(service.name, why):
            return False
        slots += 1
        reason = why
        return True

    try:
        while True:
            state = base.copy()
            try:
                sent = await _request_sides(
                    chain, split + 1, len(chain), state, head, down, record, ctx.observer
                )
                if sent is not None:
                    return sent
                request = _chained_request(chain, state, head, info, entry, record, trace)
                request.tried = tried
                request.first = number == 0
                request.hold = partial(decide, "status")
                failure = await _dispatch(request, replay.attempt(), ctx, runtime, service)
                if failure is not None and failure.response is None:
                    held = True  # the head was held and discarded: decided already
                else:
                    held = failure is not None and decide(failure.kind, failure.status)
                if not held:
                    if failure is not None and failure.response is not None:
                        await _answer(down, request.head, request.answer(failure.response))
                        request.status = failure.status
                    _complete(chain[split + 1 :], state, request.status)
                    return request.status
                assert failure is not None
                # Retried: the later middlewares saw this attempt end with its status.
                _complete(chain[split + 1 :], state, failure.status)
            finally:
                if number > 0:  # this attempt was a retry: its budget slot is free again
                    slots -= 1
                    retry.end_retry()
            number += 1
            log.info(
                "retrying request to service %s (retry %d of %d: %s)",
                service.name,
                number,
                retry.max_retries,
                reason,
            )
            await trio.sleep(retry.backoff(number, random.random()))
    finally:
        for _ in range(slots):  # taken for a retry that never ran (the client went away)
            retry.end_retry()


def _is_stream(state: RequestState) -> bool:
    """gRPC and WebSocket requests (retried only after a connect failure, SPEC §8.12)."""
    for name, value in state.headers:
        if name == b"upgrade" or (
            name == b"content-type" and value.lower().startswith(b"application/grpc")
        ):
            return True
    return False


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

    __slots__ = (
        "body_filter",
        "chain",
        "client",
        "first",
        "head",
        "headers",
        "hold",
        "host",
        "record",
        "state",
        "status",
        "target",
        "tls",
        "tried",
    )

    def __init__(
        self,
        head: RequestHead,
        target: bytes,
        headers: Headers,
        client: str,
        tls: bool,
        record: ExchangeRecord,
    ) -> None:
        self.head = head
        #: What the observers will see of this exchange (attempts, backend, errors).
        self.record = record
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
        #: Backends earlier attempts used (retry avoids them while others are available).
        self.tried: list[Backend] = []
        #: The first attempt (mirroring and sticky pinning happen once per request).
        self.first = True
        #: The retry policy's look at a response status before it is sent (``forward``).
        self.hold: Callable[[int], bool] | None = None
        #: The body transform of the chain (``compress``), given the final response head.
        self.body_filter: Callable[[int, Headers], BodyFilter | None] | None = None

    def respond(self, status: int, headers: Headers) -> None:
        """The response sides of the whole chain, last first, on a proxied response head."""
        state = self.state
        assert state is not None  # only called when there is a chain
        for middleware in reversed(self.chain):
            try:
                middleware.response(state, status, headers)
            except Exception as error:  # a bug: 500 instead of this response (SPEC §8.1)
                log.exception("middleware %s failed on the response", middleware.name)
                raise MiddlewareFailed from error

    def hash_key(self, derive: Callable[[RequestState], bytes]) -> str:
        """The ``consistent-hash`` key ``hash_key`` derives from this request (the middlewares'
        view when there is one, else the request as received); the client IP when the request
        has no such key (SPEC §7.2)."""
        state = self.state
        if state is None:
            path, _, query = self.target.partition(b"?")
            head = self.head
            state = RequestState(
                method=head.method,
                path=path,
                query=query,
                headers=head.headers,
                authority=head.authority,
                client_ip=self.client,
                peer_ip=self.client,
                tls=self.tls,
            )
        value = derive(state)
        return value.decode("utf-8", "surrogateescape") if value else self.client

    def answer(self, response: GeneratedResponse) -> GeneratedResponse:
        """A gateway-generated answer after dispatch, through every response side."""
        if self.state is None:
            return response
        return _through(self.chain, self.state, response)


def _peer_trusted(info: ConnInfo, entry: EntrypointRuntime) -> bool:
    if entry.trust_all:
        return True
    if entry.trusted:  # parse the peer only when some network is trusted
        peer = parse_peer(info.peer_ip)
        return peer is not None and entry.is_trusted(peer)
    return False


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


class _Failure:
    """A dispatch that relayed no response: the error to answer (None when an upstream
    response was held and discarded for a retry), its status, and its kind for the retry
    policy (``middleware.retry.failure_kind``)."""

    __slots__ = ("kind", "response", "status")

    def __init__(self, response: GeneratedResponse | None, status: int, kind: str) -> None:
        self.response = response
        self.status = status
        self.kind = kind


_NO_BACKEND_FAILURE: Final = _Failure(_NO_BACKEND, 503, "connect-failure")


async def _dispatch(
    request: _Request,
    down: Downstream,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    service: ServiceRuntime,
) -> _Failure | None:
    """Choose, connect, forward; failover once. Without a retry middleware (``request.hold``
    unset) every failure is answered here (502/503/504) and None returned; with one, a
    failure is returned unanswered for the policy to judge."""
    total = service.total_timeout
    if total <= 0:  # no total timeout: no scope (the hot path)
        failure = await _dispatch_within(request, down, ctx, runtime, service)
    else:
        failure = None
        with trio.move_on_after(total) as scope:
            failure = await _dispatch_within(request, down, ctx, runtime, service)
        if scope.cancelled_caught:  # the total timeout ends the request: never retried
            request.record.error = "upstream_timeout"
            if down.response_started:
                raise _abort()
            await _answer(down, request.head, request.answer(error_response(504)))
            request.status = 504
            return None
    if failure is None or request.hold is not None:
        return failure
    assert failure.response is not None  # only a hold discards a response
    await _answer(down, request.head, request.answer(failure.response))
    request.status = failure.status
    return None


async def _dispatch_within(
    request: _Request,
    down: Downstream,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    service: ServiceRuntime,
) -> _Failure | None:
    state = request.state
    if state is not None and state.body_limit is not None and not down.request_complete:
        try:
            return await _dispatch_limited(
                request, LimitedDownstream(down, state.body_limit), ctx, runtime, service
            )
        except BodyTooLarge as error:
            request.record.error = "body_too_large"
            if down.response_started:
                raise _abort() from None
            # Answered here, so the 413 passes the middlewares' response sides (SPEC §8.1).
            await _answer(down, request.head, request.answer(too_large(error.limit)))
            request.status = 413
            return None
    return await _dispatch_limited(request, down, ctx, runtime, service)


async def _dispatch_limited(
    request: _Request,
    down: Downstream,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    service: ServiceRuntime,
) -> _Failure | None:
    mirror = service.mirror
    if mirror is not None and request.first and mirror.sampler.take():
        copy = MirrorCopy(
            ctx, mirror, request.head, request.target, request.headers, request.client
        )
        down = MirrorTee(down, copy)
    failure = await _try_service(request, down, ctx, service)
    # Failover only when no request byte reached a backend: no available backend, or every
    # connect attempt failed (SPEC §7.8). A backend that failed after the request was sent
    # (reset, invalid response, response timeout) or a pool at its connection limit answers
    # 502/503/504 here: the request body is gone, and a non-idempotent request may have acted.
    if (
        failure is not None
        and failure.response is not None
        and failure.kind == "connect-failure"
        and service.failover is not None
    ):
        fallback = runtime.services.get(service.failover)
        if fallback is not None:
            reason = "no_backend" if failure is _NO_BACKEND_FAILURE else "connect_failed"
            ctx.failover_requests += 1
            ctx.metrics.failover(service.name, reason)
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
            if second is not _NO_BACKEND_FAILURE or failure is _NO_BACKEND_FAILURE:
                failure = second
    return failure


async def _try_service(
    request: _Request,
    down: Downstream,
    ctx: ServerContext,
    service: ServiceRuntime,
    *,
    primary: bool = True,
    extra: tuple[tuple[bytes, bytes], ...] = (),
) -> _Failure | None:
    """Up to ``connect_attempts`` backends (SPEC §7.8); None once a response was relayed,
    else the failure that describes the last attempt.

    Sticky sessions (SPEC §7.6, §7.9 step 1), for the primary service and the first attempt
    only: a valid cookie naming an available backend picks it first, without ``Set-Cookie``;
    any other backend that serves gets a cookie naming it. Backends earlier retry attempts
    used (``request.tried``) are avoided while others are available (SPEC §8.12). Panic mode
    (SPEC §7.1) is decided once, for services with a ``panic_threshold``, and then applies to
    the cookie and every attempt.
    """
    tried: list[Backend] = []
    failure = _NO_BACKEND_FAILURE
    key = request.client if service.hash_key is None else request.hash_key(service.hash_key)
    avoid = request.tried
    outliers = service.outliers
    if outliers is not None:
        # SPEC §7.5: an ejection that has run out ends when selecting, not only on the ticker.
        due = outliers.next_readmission
        now = trio.current_time() if due is not None else 0.0
        if due is not None and due <= now:
            for transition in outliers.tick(now):
                log_transition(service.name, transition, ctx.metrics)
    panic = service.panic_threshold > 0 and service.in_panic(primary=primary)
    if panic:
        ctx.metrics.lb_panic(service.name)
    sticky = service.sticky if primary else None
    pinned = (
        sticky.lookup(request.head.headers, ctx.dates.unix(), panic=panic)
        if sticky is not None and request.first
        else None
    )
    for _ in range(service.connect_attempts):
        if pinned is not None and not tried:
            backend: Backend | None = pinned
        elif avoid:
            backend = service.balancer.pick(exclude=[*tried, *avoid], key=key, panic=panic)
            if backend is None:
                backend = service.balancer.pick(exclude=tried, key=key, panic=panic)
        else:
            backend = service.balancer.pick(exclude=tried, key=key, panic=panic)
        if backend is None:
            break
        tried.append(backend)
        if request.hold is not None:
            avoid.append(backend)
        record = request.record
        record.attempts += 1
        record.backend = backend.url.text
        record.upstream_started = trio.current_time()
        record.upstream_head = -1.0
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
                    hold=request.hold,
                    body_filter=request.body_filter,
                    record=record,
                )
            except ConnectError as error:
                log.info("connect to %s failed: %s", backend.url.text, error.detail)
                record.error = "connect_timeout" if error.status == 504 else "connect_refused"
                ctx.metrics.connect_error(
                    service.name, backend.url.text, "timeout" if error.status == 504 else "refused"
                )
                _outcome(ctx, service, backend, error.status, record)
                failure = _Failure(error_response(error.status), error.status, "connect-failure")
                continue
            except UpstreamFailure as error:
                log.info("upstream %s failed: %s", backend.url.text, error.detail)
                record.error = _failure_error(error)
                if error.status != 503:  # 503: our own pool limit or shutdown, not the backend
                    _outcome(ctx, service, backend, error.status, record)
                if down.response_started:
                    raise _abort() from error
                kind = failure_kind(error.status, connect=False, before_head=True)
                return _Failure(error_response(error.status, error.text), error.status, kind)
            except HeldResponse as held:
                record.error = ""
                log.info("response %d from %s held for a retry", held.status, backend.url.text)
                _outcome(ctx, service, backend, held.status, record)
                return _Failure(None, held.status, "status")
            except MiddlewareFailed:
                # A response side failed on the proxied head, before it was sent (SPEC §8.1).
                record.error = "internal_error"
                if down.response_started:
                    raise _abort() from None
                await _answer(down, request.head, _INTERNAL_ERROR)
                request.status = 500
                return None
            except AbortResponse as error:
                log.info("response from %s aborted: %s", backend.url.text, error)
                record.error = "upstream_reset"
                _outcome(ctx, service, backend, 502, record)
                raise _abort() from error
            _outcome(ctx, service, backend, status, record)
            request.status = status
            record.error = ""
            return None
    if failure is _NO_BACKEND_FAILURE and not tried:
        request.record.error = "no_backend"
    return failure


def _outcome(
    ctx: ServerContext,
    service: ServiceRuntime,
    backend: Backend,
    status: int,
    record: ExchangeRecord,
) -> None:
    """Feed one finished attempt to the observers (per-backend counts and upstream time) and
    to the service's passive health (SPEC §7.5): transport failures arrive as 502 (refused,
    reset, invalid) or 504 (timeouts)."""
    observer = ctx.observer
    if observer is not None:
        observer.attempt(service.name, backend.url.text, status, record.upstream_seconds)
    outliers = service.outliers
    if outliers is None:
        return
    transition = outliers.record(backend, error=outliers.is_error(status), now=trio.current_time())
    if transition is not None:
        log_transition(service.name, transition, ctx.metrics)
