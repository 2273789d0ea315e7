"""The background tasks one config generation owns: active health probers (SPEC §7.4) and the
passive-health tickers (SPEC §7.5), and the glue between the two (an active success re-admits
a passively ejected backend) and the logs of their transitions; and the runners of the
middlewares' ``Background`` work (``middleware/contract.py``; today ``jwt``'s JWKS refresh, SPEC
§8.4), which sleep on trio's clock until the work is due or a request asks for it early, and
log the warnings it returns.

Ring 1. Nursery: ``run_generation`` opens one per generation; ``app.Gateway`` starts it in its
root nursery and cancels it when a reload has started the next generation's, so probers and
refreshers never leak across reloads. Deadlines: none here (each probe is bounded by its own
timeout in ``probes/checker.py``, each ``Background.run`` by its own, e.g. 5 s per JWKS
fetch). The runners start with ``start_soon``, so no fetch delays the generation's start nor
traffic. A middleware instance kept by a reload is briefly run by both generations' runners;
its schedule lives on the instance, so the new runner picks it up where the old one was.

State across reloads (``carry_over``): the new generation's backends start with the active
health and passive state of the previous generation's backend with the same service and URL, so
a reload neither re-admits an unhealthy backend nor forgets an ejection.

Health pushed by a supervisor (SPEC §7.4 "Multi-worker", §13.4): a worker of ``run --workers N``
runs its generations with ``probes=False`` (tickers and background work, no prober: the
supervisor probes once for all workers, ``probes/broadcast.py``) and hands what the supervisor
pushes to ``receive_health``, which applies the worker's ``HealthBoard`` to the running
generation and lets a probe success re-admit a passively ejected backend, as ``_probed`` does
here; ``app.Gateway`` applies the board to each new generation at its swap. Every prober of the new
generation starts afresh (SPEC §7.4 keeps unchanged probers running; restarting them costs one
early probe per backend and keeps the generation's tasks in one nursery). A ``jwt`` definition
rebuilt by a reload starts with the keys of the previous instance of that name when its
``jwks_url`` is the same, so changing, say, its ``leeway`` opens no window of ``unknown key``.

Must not: choose backends, proxy, or change health flags itself (the health machines do).
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.middleware.jwt import JwtMiddleware
from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.probes.checker import run_prober
from a3s_gateway.services.health import ActiveHealth, carry_active_health
from a3s_gateway.services.passive import PassiveState
from a3s_gateway.upstream.dialer import dial

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from a3s_gateway.middleware.contract import Background, Middleware
    from a3s_gateway.probes.checker import ProbeResult
    from a3s_gateway.runtime.compile import RuntimeConfig, ServiceRuntime
    from a3s_gateway.services import Backend
    from a3s_gateway.services.health import HealthBoard
    from a3s_gateway.services.passive import OutlierDetector, Transition
    from a3s_gateway.upstream.dialer import Dialer

__all__ = [
    "apply_board",
    "became_available",
    "carry_in_flight",
    "carry_over",
    "log_transition",
    "receive_health",
    "record_passive",
    "run_background",
    "run_generation",
    "selection_panic",
]

log: Final = logging.getLogger("a3s_gateway.health")
middleware_log: Final = logging.getLogger("a3s_gateway.middleware")


async def run_generation(
    runtime: RuntimeConfig,
    *,
    dialer: Dialer = dial,
    metrics: GatewayMetrics | None = None,
    probes: bool = True,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the generation's probers, tickers and middleware background work until cancelled;
    ``started()`` once all of them are running (the first probes and fetches are under way, not
    finished). Probe results and passive ejections are counted in ``metrics``. ``probes=False``:
    no active prober (a worker told its health by the supervisor, module docstring). Tests
    inject ``dialer``.
    """
    metrics = GatewayMetrics(enabled=False) if metrics is None else metrics
    async with trio.open_nursery() as nursery:
        for service in runtime.services.values():
            _start_tasks(nursery, service, dialer, metrics, probes=probes)
        for name, middleware in runtime.middlewares.items():
            for work in middleware.background():
                nursery.start_soon(run_background, name, work)
        task_status.started()


class _Waker:
    """The wake-up a runner registers with its ``Background``: sets the current event."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = trio.Event()

    def __call__(self) -> None:
        self.event.set()


async def run_background(name: str, work: Background) -> None:
    """Run ``work`` (of the middleware definition ``name``) whenever it is due, until
    cancelled; its warnings are logged naming the middleware."""
    waker = _Waker()
    unwatch = work.watch(waker)
    try:
        while True:
            # A fresh event before reading the schedule: a wake-up after this point is seen.
            waker.event = trio.Event()
            now = trio.current_time()
            due = work.next_run()
            if due > now:
                with trio.move_on_at(due):
                    await waker.event.wait()
                continue
            warning = await work.run(now)
            if warning is not None:
                middleware_log.warning('middleware "%s": %s', name, warning)
    finally:
        unwatch()


def _start_tasks(
    nursery: trio.Nursery,
    service: ServiceRuntime,
    dialer: Dialer,
    metrics: GatewayMetrics,
    *,
    probes: bool,
) -> None:
    outliers = service.outliers
    if outliers is not None:
        nursery.start_soon(_tick, service, outliers, metrics)
    settings = service.health_check
    if settings is None or not probes:
        return
    on_change = partial(_health_changed, service)
    on_result = partial(_probed, service, outliers, metrics)
    for backend in service.backends:
        state = ActiveHealth(backend, settings.healthy_threshold, settings.unhealthy_threshold)
        prober = partial(
            run_prober, backend, settings, state, on_change=on_change, on_result=on_result
        )
        nursery.start_soon(partial(prober, dialer=dialer))


async def _tick(
    service: ServiceRuntime, outliers: OutlierDetector, metrics: GatewayMetrics
) -> None:
    """SPEC §7.5's ticker: ejections that have run out end even without traffic."""
    interval = outliers.settings.tick_interval
    while True:
        await trio.sleep(interval)
        _readmitted(service, outliers.tick(trio.current_time()), metrics)


def _readmitted(
    service: ServiceRuntime, transitions: Iterable[Transition], metrics: GatewayMetrics
) -> None:
    """Log passive-health transitions; one that ends an ejection releases the service's scale
    buffer (a backend may be available again)."""
    released = False
    for transition in transitions:
        log_transition(service.name, transition, metrics)
        released = released or transition.new is not PassiveState.EJECTED
    if released:
        became_available(service)


def _probed(
    service: ServiceRuntime,
    outliers: OutlierDetector | None,
    metrics: GatewayMetrics,
    backend: Backend,
    result: ProbeResult,
) -> None:
    """Count the probe (``a3s_health_checks_total``); SPEC §7.4 "With passive health": an
    active success re-admits an ejected backend."""
    outcome = "success" if result.success else "failure"
    metrics.health_check(service.name, backend.url.text, outcome)
    if result.success and outliers is not None:
        transition = outliers.readmit(backend, trio.current_time())
        if transition is not None:
            _readmitted(service, (transition,), metrics)


def log_transition(service: str, transition: Transition, metrics: GatewayMetrics) -> None:
    """Log a passive-health transition (ejections as warnings, recoveries as info) and count
    ejections (``a3s_passive_ejections_total``)."""
    backend = transition.backend.url.text
    if transition.new is PassiveState.EJECTED:
        metrics.passive_ejection(service, backend, skipped=False)
        assert transition.ejected_until is not None  # set for every ejection
        log.warning(
            "backend %s of service %s ejected for %.1f s (passive health, ejection %d)",
            backend,
            service,
            transition.ejected_until - trio.current_time(),
            transition.multiplier,
        )
    else:
        log.info(
            "backend %s of service %s: passive health %s -> %s",
            backend,
            service,
            transition.old.value,
            transition.new.value,
        )


def selection_panic(service: ServiceRuntime, metrics: GatewayMetrics, *, primary: bool) -> bool:
    """Before choosing backends of ``service`` (a request, a TCP connection, a UDP session):
    end the passive ejections that have run out (SPEC §7.5: at selection, not only on the
    ticker), and say whether the choice is in panic mode (SPEC §7.1; counted)."""
    outliers = service.outliers
    if outliers is not None:
        due = outliers.next_readmission
        if due is not None and due <= (now := trio.current_time()):
            _readmitted(service, outliers.tick(now), metrics)
    panic = service.panic_threshold > 0 and service.in_panic(primary=primary)
    if panic:
        metrics.lb_panic(service.name)
    return panic


def record_passive(
    service: ServiceRuntime, backend: Backend, metrics: GatewayMetrics, *, error: bool
) -> None:
    """Feed one outcome at ``backend`` to ``service``'s passive health (SPEC §7.5): an
    ejection ``max_ejection_percent`` refused is counted, a transition logged."""
    outliers = service.outliers
    if outliers is None:
        return
    skipped = outliers.skipped_ejections
    transition = outliers.record(backend, error=error, now=trio.current_time())
    if outliers.skipped_ejections != skipped:
        metrics.passive_ejection(service.name, backend.url.text, skipped=True)
    if transition is not None:
        log_transition(service.name, transition, metrics)


def _health_changed(service: ServiceRuntime, backend: Backend, healthy: bool, reason: str) -> None:
    log.info(
        "backend %s of service %s is now %s (%s)",
        backend.url.text,
        service.name,
        "healthy" if healthy else "unhealthy",
        reason,
    )
    if healthy:
        became_available(service)


def became_available(service: ServiceRuntime) -> None:
    """A backend of ``service`` became healthy: requests waiting in its scale-from-zero buffer
    re-run their selection (SPEC §11.5)."""
    scale = service.scale
    if scale is not None and scale.live is not None:
        scale.live.ready()


def carry_over(previous: RuntimeConfig, current: RuntimeConfig) -> None:
    """Give ``current``'s backends the health state of ``previous``'s backends with the same
    service name and server URL (see the module docstring)."""
    for name, service in current.services.items():
        old = previous.services.get(name)
        if old is None:
            continue
        carry_in_flight(old.backends, service.backends)
        if service.health_check is not None:
            carry_active_health(old.backends, service.backends)
        if service.outliers is not None and old.outliers is not None:
            service.outliers.adopt(old.outliers)  # only when the settings are unchanged
    for name, middleware in current.middlewares.items():
        _adopt_keys(middleware, previous.middlewares.get(name))


def carry_in_flight(before: Iterable[Backend], after: Iterable[Backend]) -> None:
    """Each backend of ``after`` starts with the in-flight count of the backend of ``before``
    with the same URL (the n-th such, when a URL is in two pools) and becomes its successor,
    so the requests still running on the previous generation keep counting (SPEC §10.2)."""
    earlier = dict(_numbered(before))
    for key, backend in _numbered(after):
        previous = earlier.get(key)
        if previous is not None and previous is not backend:
            backend.in_flight = previous.in_flight
            previous.successor = backend


def _numbered(backends: Iterable[Backend]) -> Iterator[tuple[tuple[str, int], Backend]]:
    seen: dict[str, int] = {}
    for backend in backends:
        url = backend.url.text
        number = seen[url] = seen.get(url, -1) + 1
        yield (url, number), backend


def apply_board(board: HealthBoard, runtime: RuntimeConfig) -> list[tuple[str, Backend]]:
    """Set ``runtime``'s active health flags from ``board`` (a worker: what the supervisor
    pushed); the ``(service, backend)`` pairs whose flag changed."""
    return [
        (name, backend)
        for name, service in runtime.services.items()
        for backend in board.apply(name, service.backends)
    ]


def receive_health(
    runtime: RuntimeConfig,
    board: HealthBoard,
    *,
    passed: Iterable[tuple[str, str]] = (),
    metrics: GatewayMetrics,
) -> None:
    """A push from the supervisor (module docstring), already recorded on ``board``: apply the
    board to the running ``runtime`` and re-admit the passively ejected backends among
    ``passed`` (``(service, url)`` of backends whose probe just succeeded, SPEC §7.4 "With
    passive health"). The supervisor logged the transitions; a worker notes them at debug."""
    for name, backend in apply_board(board, runtime):
        log.debug(
            "backend %s of service %s is now %s (the supervisor's health check)",
            backend.url.text,
            name,
            "healthy" if backend.active_healthy else "unhealthy",
        )
        if backend.active_healthy:
            became_available(runtime.services[name])
    now = trio.current_time()
    for name, url in passed:
        service = runtime.services.get(name)
        if service is None or service.outliers is None:
            continue
        for backend in service.backends:
            if backend.url.text == url:
                transition = service.outliers.readmit(backend, now)
                if transition is not None:
                    _readmitted(service, (transition,), metrics)


def _adopt_keys(middleware: Middleware, before: Middleware | None) -> None:
    """A rebuilt ``jwt`` definition starts with its predecessor's JWKS keys (same URL only)."""
    if (
        isinstance(middleware, JwtMiddleware)
        and isinstance(before, JwtMiddleware)
        and middleware is not before
        and middleware.jwks is not None
        and before.jwks is not None
    ):
        middleware.jwks.adopt(before.jwks)
