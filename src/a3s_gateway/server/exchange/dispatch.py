"""Stage 3, dispatch: the total timeout, body-limit, the mirror copy, the service's attempts
(balancer, sticky sessions, panic mode, connect attempts) and failover (SPEC §7).

Ring 1. Nurseries: none (``attempt.py`` owns the pump nursery of one attempt). Deadlines set
here: the total timeout (one scope around the whole dispatch when ``total_timeout`` is set).
Without a retry middleware (``ex.hold`` unset) every failure is answered here (502/503/504)
and None returned; with one, a failure is returned unanswered for the policy
(``retrying.py``) to judge.

Must not: parse bytes, or know the downstream or upstream protocol: it talks to the
``Downstream`` seam and, through ``attempt.py``, the ``Upstream`` seam.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, TypeAlias

import trio

from a3s_gateway.middleware.body_limit import too_large
from a3s_gateway.middleware.retry import failure_kind
from a3s_gateway.protocols.events import EndOfBody
from a3s_gateway.protocols.responses import error_response
from a3s_gateway.scaling.buffer import BufferClosed, BufferFull, BufferTimeout
from a3s_gateway.scaling.service import pick_limited
from a3s_gateway.server.downstream import ClientGone, aborted
from a3s_gateway.server.exchange.answer import INTERNAL_ERROR, answer
from a3s_gateway.server.exchange.attempt import forward
from a3s_gateway.server.exchange.failures import (
    NO_BACKEND_FAILURE,
    AbortResponse,
    ConnectError,
    Failure,
    HeldResponse,
    MiddlewareFailed,
    UpstreamFailure,
    failure_error,
)
from a3s_gateway.server.exchange.mirror import MirrorCopy, MirrorTee
from a3s_gateway.server.exchange.recording import attempt_started, outcome
from a3s_gateway.server.generation import selection_panic
from a3s_gateway.server.limited_downstream import BodyTooLarge, LimitedDownstream

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from a3s_gateway.protocols.headers import HeaderLine
    from a3s_gateway.runtime.compile import ServiceRuntime
    from a3s_gateway.scaling.buffer import ScaleBuffer
    from a3s_gateway.scaling.live import LiveService
    from a3s_gateway.server.downstream import Downstream
    from a3s_gateway.server.exchange.context import Exchange
    from a3s_gateway.services import Backend, Lease

__all__ = ["dispatch"]

log: Final = logging.getLogger("a3s_gateway.exchange")

#: The trailers that end a gRPC call whose deadline passed after its head was sent.
_DEADLINE_TRAILERS: Final = [(b"grpc-status", b"4"), (b"grpc-message", b"deadline exceeded")]

#: SPEC §11.5, §11.6: the scale buffer's and the limiter's answers.
_RETRY_SOON: Final = [(b"retry-after", b"1")]
_BUFFER_FULL: Final = error_response(503, "request buffer full", extra=_RETRY_SOON)
_SCALE_TIMEOUT: Final = error_response(504, "backend scale-up timed out")
_AT_CAPACITY: Final = error_response(503, "all backends at capacity")

#: The debug-mode response field naming the failover service that served (SPEC §7.8).
_SERVED_BY: Final = b"x-a3s-failover"


async def dispatch(ex: Exchange, down: Downstream) -> Failure | None:
    """Choose, connect, forward; failover once (see the module docstring)."""
    service = ex.service
    assert service is not None  # prepare routed the request
    # SPEC §5.5: the total timeout is for non-streaming exchanges; a WebSocket session is not.
    total = service.total_timeout if ex.ws_key is None else 0.0
    if ex.grpc_timeout:  # SPEC §5.10: the call's deadline, or total_timeout if earlier
        total = min(total, ex.grpc_timeout) if total > 0 else ex.grpc_timeout
    if total <= 0:  # no total timeout: no scope (the hot path)
        state = ex.state
        if (
            service.mirror is None
            and service.failover is None
            and (state is None or state.body_limit is None or down.request_complete)
        ):
            failure = await _try_service(ex, down, service)  # two coroutine frames fewer
        else:
            failure = await _limited(ex, down, service)
    else:
        failure = None
        with trio.move_on_after(total) as scope:
            ex.total_scope = scope  # an SSE response lifts it (relay.py)
            failure = await _limited(ex, down, service)
        if scope.cancelled_caught:  # the total timeout ends the request: never retried
            ex.record.error = "upstream_timeout"
            if down.response_started:
                if ex.grpc:  # the call ends with DEADLINE_EXCEEDED in its trailers
                    await down.send(EndOfBody(trailers=_DEADLINE_TRAILERS))
                    return None
                raise aborted(down)
            await answer(down, ex.request, ex.answer(error_response(504)))
            ex.status = 504
            return None
    if failure is None or ex.hold is not None:
        return failure
    assert failure.response is not None  # only a hold discards a response
    await answer(down, ex.request, ex.answer(failure.response))
    ex.status = failure.status
    return None


async def _limited(ex: Exchange, down: Downstream, service: ServiceRuntime) -> Failure | None:
    """``_mirrored`` with the request body counted against ``body-limit`` (SPEC §8.11)."""
    state = ex.state
    if state is None or state.body_limit is None or down.request_complete:
        return await _mirrored(ex, down, service)
    try:
        return await _mirrored(ex, LimitedDownstream(down, state.body_limit), service)
    except BodyTooLarge as error:
        ex.record.error = "body_too_large"
        if down.response_started:
            raise aborted(down) from None
        # Answered here, so the 413 passes the middlewares' response sides (SPEC §8.1).
        await answer(down, ex.request, ex.answer(too_large(error.limit)))
        ex.status = 413
        return None


async def _mirrored(ex: Exchange, down: Downstream, service: ServiceRuntime) -> Failure | None:
    """The service's attempts, a mirror copy of the first (SPEC §7.7), failover (§7.8)."""
    mirror = service.mirror
    # SPEC §7.7: WebSocket handshakes are not mirrored.
    if mirror is not None and ex.first and ex.ws_key is None and mirror.sampler.take():
        copy = MirrorCopy(ex.ctx, mirror, ex.request, ex.target, ex.headers, ex.client)
        down = MirrorTee(down, copy)
    failure = await _try_service(ex, down, service)
    # Failover only when no request byte reached a backend: no available backend, or every
    # connect attempt failed (SPEC §7.8). A backend that failed after the request was sent
    # (reset, invalid response, response timeout) or a pool at its connection limit answers
    # 502/503/504 here: the request body is gone, and a non-idempotent request may have acted.
    if (
        failure is None
        or failure.response is None
        or failure.kind != "connect-failure"
        or service.failover is None
    ):
        return failure
    fallback = ex.runtime.services.get(service.failover)
    if fallback is None:
        return failure
    reason = "no_backend" if failure is NO_BACKEND_FAILURE else "connect_failed"
    ctx = ex.ctx
    ctx.failover_requests += 1
    ctx.metrics.failover(service.name, reason)
    log.info(
        "service %s failed (%s): request goes to failover service %s",
        service.name,
        reason,
        fallback.name,
    )
    # SPEC §7.8: the failover service's own sticky settings do not apply. In debug mode
    # (--log-level debug) the response says which pool served it.
    debug = log.isEnabledFor(logging.DEBUG)
    served_by = ((_SERVED_BY, fallback.name.encode()),) if debug else ()
    second = await _try_service(ex, down, fallback, primary=False, extra=served_by)
    # SPEC §7.8: a failover without backends leaves the primary's 502/504 standing.
    if second is not NO_BACKEND_FAILURE or failure is NO_BACKEND_FAILURE:
        return second
    return failure


async def _try_service(
    ex: Exchange,
    down: Downstream,
    service: ServiceRuntime,
    *,
    primary: bool = True,
    extra: tuple[HeaderLine, ...] = (),
) -> Failure | None:
    """Up to ``connect_attempts`` backends (SPEC §7.8); None once a response was relayed,
    else the failure that describes the last attempt."""
    scale = service.scale
    if scale is not None and primary and scale.live is not None and scale.scaling is not None:
        # SPEC §7.8: a failover service's own scaling does not apply.
        return await _scaled(ex, down, service, scale.live, extra)
    # The loop of ``_attempts``, inline: one coroutine frame fewer on the hot path.
    picker = _Picker(ex, service, primary)
    failure: Failure | None = NO_BACKEND_FAILURE
    for _ in range(service.connect_attempts):
        backend = picker.pick()
        if backend is None:
            break
        failure = await _attempt(ex, down, service, backend, picker.fields(backend, extra))
        if failure is None or failure.kind != "connect-failure":
            return failure
    if failure is NO_BACKEND_FAILURE and not picker.tried:
        ex.record.error = "no_backend"
    return failure


async def _attempts(
    ex: Exchange,
    down: Downstream,
    service: ServiceRuntime,
    picker: _Picker,
    backend: Backend | None,
    extra: tuple[HeaderLine, ...],
    live: LiveService,
    reserved: Lease | None = None,
) -> Failure | None:
    """The attempts of a scaled service, ``backend`` (already picked) first; ``reserved`` is
    the in-flight place a buffered request took on it when it was released, given back just
    as the attempt takes its own (no checkpoint between: the limiter is never bypassed). Each
    attempt's end, however it ends, frees a place for a waiter of the buffer."""
    failure: Failure | None = NO_BACKEND_FAILURE
    try:
        for attempt in range(1, service.connect_attempts + 1):
            if backend is None:
                break
            if reserved is not None:
                reserved.release()
                reserved = None
            try:
                fields = picker.fields(backend, extra)
                failure = await _attempt(ex, down, service, backend, fields)
            finally:
                live.capacity_freed()
            if failure is None or failure.kind != "connect-failure":
                return failure
            # Picked only for an attempt that will be made: a pick is recorded as tried (and,
            # under a retry policy, avoided by the retries).
            backend = picker.pick() if attempt < service.connect_attempts else None
    finally:
        if reserved is not None:
            reserved.release()
    return failure


async def _scaled(
    ex: Exchange,
    down: Downstream,
    service: ServiceRuntime,
    live: LiveService,
    extra: tuple[HeaderLine, ...],
) -> Failure | None:
    """A request of a scaled service (SPEC §7.9 steps 4–5, §11.5): counted as concurrency while
    it waits or runs; nothing chosen → failover, the buffer, or 503."""
    live.enter()
    try:
        picker = _Picker(ex, service, True)
        backend = picker.pick()
        reserved: Lease | None = None
        if backend is None:
            if not picker.full:
                live.activate()  # SPEC §11.4: scale from zero without waiting for the tick
                if service.failover is not None and _failover_ready(ex, service.failover):
                    ex.record.error = "no_backend"
                    return NO_BACKEND_FAILURE
            waited = await _buffered(ex, service, live, picker.full)
            if isinstance(waited, Failure):
                return waited
            service, picker, reserved = waited
            backend = reserved.backend
        return await _attempts(ex, down, service, picker, backend, extra, live, reserved)
    finally:
        live.leave()


def _failover_ready(ex: Exchange, name: str) -> bool:
    fallback = ex.runtime.services.get(name)
    return fallback is not None and any(backend.available for backend in fallback.backends)


#: A released waiter: the service as the running generation has it, its picker, and the
#: in-flight place taken on the chosen backend.
_Released: TypeAlias = tuple["ServiceRuntime", "_Picker", "Lease"]


async def _buffered(
    ex: Exchange, service: ServiceRuntime, live: LiveService, full: bool
) -> Failure | _Released:
    """Wait in the service's scale-from-zero buffer until a backend can take the request
    (SPEC §11.5); each release re-runs the whole selection."""
    buffer = live.buffer
    if buffer is None:
        if full:
            ex.record.error = "at_capacity"
            return Failure(_AT_CAPACITY, 503, "status")
        ex.record.error = "no_backend"
        return NO_BACKEND_FAILURE
    waited: list[Failure | _Released] = []
    try:
        async with trio.open_nursery() as watcher:
            # A client that leaves while it waits leaves the queue (SPEC §11.5, "cancelled").
            gone = getattr(ex.down, "wait_gone", None)
            if gone is not None:
                watcher.start_soon(_cancel_when_done, gone, watcher.cancel_scope)
            waited.append(await _wait_in_buffer(ex, service.name, live, buffer))
            watcher.cancel_scope.cancel()
    except BaseException:
        _give_back(waited)
        raise
    if not waited:
        ex.record.error = "client_abort"
        raise ClientGone
    return waited[0]


def _give_back(waited: list[Failure | _Released]) -> None:
    for found in waited:
        if not isinstance(found, Failure):
            found[2].release()


async def _cancel_when_done(wait: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
    await wait()
    scope.cancel()


async def _wait_in_buffer(
    ex: Exchange, name: str, live: LiveService, buffer: ScaleBuffer
) -> Failure | _Released:
    """The ticket's loop: each release picks again in the running generation's service (a
    reload since the request came in has new backends), and the backend chosen is leased at
    once, before any other task runs."""
    try:
        async with buffer.ticket() as ticket:
            while True:
                await ticket.wait()
                service = ex.ctx.runtime.services.get(name)
                scale = service.scale if service is not None else None
                if service is None or scale is None or scale.live is not live:
                    ex.record.error = "no_backend"  # removed, or its scaling replaced
                    return NO_BACKEND_FAILURE
                picker = _Picker(ex, service, True)
                backend = picker.pick()
                if backend is not None:
                    return service, picker, backend.lease()
                ticket.requeue()
    except BufferFull:
        ex.record.error = "buffer_full"
        return Failure(_BUFFER_FULL, 503, "status")
    except BufferTimeout:
        ex.record.error = "buffer_timeout"
        return Failure(_SCALE_TIMEOUT, 504, "status")
    except BufferClosed as closed:
        ex.record.error = "shutting_down" if closed.reason == "shutting down" else "no_backend"
        return Failure(error_response(503, closed.reason), 503, "status")


class _Picker:
    """The backends of one service for one request, in the order they are tried.

    Sticky sessions (SPEC §7.6, §7.9 step 1), for the primary service and the first attempt
    only: a valid cookie naming an available backend picks it first, without ``Set-Cookie``;
    any other backend that serves gets a cookie naming it. Backends earlier retry attempts
    used (``ex.tried``) are avoided while others are available (SPEC §8.12). Panic mode
    (SPEC §7.1) is decided once, for services with a ``panic_threshold``, and then applies to
    the cookie and every attempt. A service with revisions picks within the pool its split
    chose (SPEC §11.7); with ``container_concurrency`` (the primary only) within the backends
    under that limit, least loaded first (SPEC §11.6), and ``full`` tells whether the pick
    found nothing only because all of them were at the limit.
    """

    __slots__ = (
        "_balancer",
        "_ex",
        "_key",
        "_limit",
        "_panic",
        "_pinned",
        "_service",
        "_sticky",
        "full",
        "tried",
    )

    def __init__(self, ex: Exchange, service: ServiceRuntime, primary: bool) -> None:
        self._ex = ex
        self._service = service
        self.tried: list[Backend] = []
        self.full = False
        self._key = ex.client if service.hash_key is None else ex.hash_key(service.hash_key)
        panic = self._panic = selection_panic(service, ex.ctx.metrics, primary=primary)
        sticky = self._sticky = service.sticky if primary else None
        pinned = (
            sticky.lookup(ex.request.headers, ex.ctx.dates.unix(), panic=panic)
            if sticky is not None and ex.first
            else None
        )
        scale = service.scale
        self._balancer = service.balancer
        self._limit = 0
        if scale is not None:
            if scale.scaling is not None and primary:
                # A scaled service never panics: its backends are unavailable because they are
                # not running yet, and the buffer is where its requests wait (SPEC §11.5).
                self._panic = False
                self._limit = scale.concurrency
            if pinned is not None and not _sticky_fits(
                scale.live_share(pinned), pinned, self._limit
            ):
                pinned = None
            if scale.split is not None and pinned is None:  # a cookie's backend decides
                affinity = scale.affinity
                choice = scale.choose(
                    service.balancer,
                    ex.request.headers,
                    None if affinity is None else lambda: ex.hash_key(affinity).encode(),
                )
                self._balancer = choice.balancer
        self._pinned = pinned

    def pick(self) -> Backend | None:
        """The next backend to try (recorded as tried), or None when none is left."""
        tried, avoid = self.tried, self._ex.tried
        balancer, key, panic = self._balancer, self._key, self._panic
        if self._pinned is not None and not tried:
            backend: Backend | None = self._pinned
        elif self._limit:
            backend = self._limited([*tried, *avoid]) if avoid else None
            if backend is None:
                backend = self._limited(tried)
        elif avoid:
            backend = balancer.pick(exclude=[*tried, *avoid], key=key, panic=panic)
            if backend is None:
                backend = balancer.pick(exclude=tried, key=key, panic=panic)
        else:
            backend = balancer.pick(exclude=tried, key=key, panic=panic)
        if backend is not None:
            tried.append(backend)
            if self._ex.hold is not None:
                avoid.append(backend)
        return backend

    def _limited(self, exclude: list[Backend]) -> Backend | None:
        backend, self.full = pick_limited(
            self._balancer,
            self._balancer.backends,
            self._limit,
            exclude=exclude,
            key=self._key,
            panic=self._panic,
        )
        return backend

    def fields(self, backend: Backend, extra: tuple[HeaderLine, ...]) -> tuple[HeaderLine, ...]:
        """``extra`` and, when ``backend`` is not the cookie's, a sticky ``Set-Cookie``."""
        sticky = self._sticky
        if sticky is None or backend is self._pinned:
            return extra
        ex = self._ex
        return (*extra, sticky.set_cookie(backend, ex.ctx.dates.unix(), tls=ex.tls))


def _sticky_fits(shared: bool, backend: Backend, limit: int) -> bool:
    """A cookie's backend still qualifies: its revision has traffic and it is under the
    concurrency limit (SPEC §7.6)."""
    return shared and (not limit or backend.in_flight < limit)


async def _attempt(
    ex: Exchange,
    down: Downstream,
    service: ServiceRuntime,
    backend: Backend,
    extra: tuple[HeaderLine, ...],
) -> Failure | None:
    """One attempt at ``backend``, its outcome fed to the observers and passive health; None
    once a response was relayed, else the failure (kind ``connect-failure``: try the next)."""
    record = ex.record
    attempt_started(record, backend)
    record.error = ""  # an earlier attempt's cause; a stream may note how it ended
    with backend.lease():
        try:
            status = await forward(ex, down, service, backend, extra)
        except ConnectError as error:
            log.info("connect to %s failed: %s", backend.url.text, error.detail)
            kind = (
                "timeout" if error.status == 504 else "tls" if error.reason == "tls" else "refused"
            )
            record.error = f"connect_{kind}"
            ex.ctx.metrics.connect_error(service.name, backend.url.text, kind)
            outcome(ex, service, backend, error.status)
            return Failure(error_response(error.status), error.status, "connect-failure")
        except UpstreamFailure as error:
            log.info("upstream %s failed: %s", backend.url.text, error.detail)
            record.error = failure_error(error)
            if error.status != 503:  # 503: our own pool limit or shutdown, not the backend
                outcome(ex, service, backend, error.status)
            if down.response_started:
                raise aborted(down) from error
            kind = failure_kind(error.status, connect=False, before_head=True)
            return Failure(error_response(error.status, error.text), error.status, kind)
        except HeldResponse as held:
            record.error = ""
            log.info("response %d from %s held for a retry", held.status, backend.url.text)
            outcome(ex, service, backend, held.status)
            return Failure(None, held.status, "status")
        except MiddlewareFailed:
            # A response side failed on the proxied head, before it was sent (SPEC §8.1).
            record.error = "internal_error"
            if down.response_started:
                raise aborted(down) from None
            await answer(down, ex.request, INTERNAL_ERROR)
            ex.status = 500
            return None
        except AbortResponse as error:
            log.info("response from %s aborted: %s", backend.url.text, error)
            record.error = "upstream_reset"
            outcome(ex, service, backend, 502)
            raise aborted(down) from error
        outcome(ex, service, backend, status)
        ex.status = status
        return None
