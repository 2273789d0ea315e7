"""Active health for the workers of ``run --workers N`` (SPEC §7.4 "Multi-worker", §13.4): the
supervisor probes every backend once per interval, however many workers there are, and the
verdicts are pushed to the workers, which run no prober of their own.

Ring 1. Two parts:

* ``HealthTable``: the supervisor's record of the current generation's verdicts, one per
  ``(service, server URL)`` of every service with a ``health_check``, and of the probe successes
  of services with ``passive_health`` (SPEC §7.4 "With passive health": an active success
  re-admits a passively ejected backend, and ejections are per worker, so each worker is told).
  Every change bumps its ``version``; ``since(seen)`` says what a worker that has seen ``seen``
  is missing — the whole table when it has seen nothing yet or the generation changed since,
  else only what changed — so a slow worker gets the newest state at once instead of a queue of
  old transitions. It wakes ``on_change`` (the supervisor's feeders, ``supervisor/workers.py``,
  which send the news over each worker's control channel).
* ``FleetProbes``: runs the probers (``probes/checker.py``) of the supervisor's current
  generation, the compiled ``RuntimeConfig`` the supervisor holds but never serves, and writes
  their transitions to the table. ``offer`` hands it the next generation: the new backends take
  the verdicts of the old ones with the same URL (``carry_active_health``, as
  ``server/generation.py`` does in a single process) and the table is replaced at once, so the
  workers hear of the new generation's health together with its ``Apply``. A prober of a
  generation that has been replaced may still finish a probe: its transition is dropped (the
  new generation's prober starts from the state carried at ``offer``).

Nurseries: ``FleetProbes.run`` owns the *fleet probes* nursery (started by ``Supervisor.run`` in
the supervisor nursery, cancelled with it) for as long as the supervisor supervises; it holds
one *generation* task per config generation, each owning the nursery of that generation's
probers. A new generation's task starts before the previous one is cancelled. Deadlines: none
here; each probe is bounded by its check's timeout (``checker.py``).

Must not: talk to a worker (the feeders do), decide health (``services.health.ActiveHealth``
does), or serve traffic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, NoReturn

import trio

from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.probes.checker import run_prober
from a3s_gateway.services.health import ActiveHealth, carry_active_health
from a3s_gateway.upstream.dialer import dial

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.probes.checker import ProbeResult
    from a3s_gateway.runtime.compile import RuntimeConfig, ServiceRuntime
    from a3s_gateway.services import Backend
    from a3s_gateway.services.health import BackendKey
    from a3s_gateway.upstream.dialer import Dialer

__all__ = ["FleetProbes", "HealthNews", "HealthTable", "verdicts"]

log: Final = logging.getLogger("a3s_gateway.health")


@dataclass(frozen=True, slots=True)
class HealthNews:
    """What one worker has not been told yet (``HealthTable.since``)."""

    #: ``(service, url, healthy)``: every verdict when ``full``, else the changed ones.
    states: tuple[tuple[str, str, bool], ...]
    #: ``(service, url)`` of backends whose probe succeeded since (passive re-admission).
    passed: tuple[tuple[str, str], ...]
    #: ``states`` is the whole table: the worker forgets any verdict not in it.
    full: bool
    #: The table's version this news brings the worker to.
    version: int


class HealthTable:
    """The supervisor's verdicts (module docstring). ``on_change`` is called after every
    change."""

    __slots__ = ("_changed", "_on_change", "_passed", "_replaced", "_states", "_version")

    def __init__(self, on_change: Callable[[], None] | None = None) -> None:
        self._on_change = on_change
        self._states: dict[BackendKey, bool] = {}
        #: Key → the version at which its verdict last changed.
        self._changed: dict[BackendKey, int] = {}
        #: Key → the version of its last probe success (services with passive health only).
        self._passed: dict[BackendKey, int] = {}
        #: The version at which the table was last replaced (a new generation).
        self._replaced = 0
        self._version = 0

    @property
    def version(self) -> int:
        """0 for an empty table never changed; bumped by every change."""
        return self._version

    @property
    def states(self) -> Mapping[BackendKey, bool]:
        """The current verdicts."""
        return self._states

    def replace(self, states: Mapping[BackendKey, bool]) -> None:
        """The verdicts of a new generation. Nothing changes (and nobody is woken) when they
        are the ones the table holds."""
        if dict(states) == self._states:
            return
        self._version += 1
        self._replaced = self._version
        self._states = dict(states)
        self._changed = dict.fromkeys(self._states, self._version)
        self._passed = {}
        self._wake()

    def record(self, service: str, url: str, healthy: bool) -> None:
        """A prober's transition; ignored for a backend the table does not hold."""
        key = (service, url)
        if key not in self._states or self._states[key] == healthy:
            return
        self._version += 1
        self._states[key] = healthy
        self._changed[key] = self._version
        self._wake()

    def passed(self, service: str, url: str) -> None:
        """A probe of that backend succeeded (the workers re-admit it if ejected)."""
        key = (service, url)
        if key not in self._states:
            return
        self._version += 1
        self._passed[key] = self._version
        self._wake()

    def since(self, seen: int) -> HealthNews | None:
        """What a worker that has seen version ``seen`` is missing; None: nothing. A negative
        ``seen`` (nothing sent yet) always gets the whole table, even an empty one."""
        if seen >= 0 and seen >= self._version:
            return None
        full = seen < 0 or seen < self._replaced
        states = tuple(
            (service, url, healthy)
            for (service, url), healthy in self._states.items()
            if full or self._changed[service, url] > seen
        )
        passed = tuple(key for key, version in self._passed.items() if version > seen)
        return HealthNews(states, passed, full, self._version)

    def _wake(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def __repr__(self) -> str:
        down = sum(1 for healthy in self._states.values() if not healthy)
        return f"<HealthTable v{self._version} {len(self._states)} backend(s), {down} unhealthy>"


def verdicts(runtime: RuntimeConfig) -> dict[BackendKey, bool]:
    """The active health of every backend of ``runtime`` that has a ``health_check``."""
    return {
        (name, backend.url.text): backend.active_healthy
        for name, service in runtime.services.items()
        if service.health_check is not None
        for backend in service.backends
    }


class FleetProbes:
    """The supervisor's probers (module docstring): ``runtime`` is generation 1, ``offer`` the
    next ones; ``run`` probes until cancelled. Probes are counted in ``metrics``
    (``a3s_health_checks_total``, the supervisor's own family). Tests inject ``dialer``."""

    def __init__(
        self,
        table: HealthTable,
        runtime: RuntimeConfig,
        *,
        metrics: GatewayMetrics | None = None,
        dialer: Dialer = dial,
    ) -> None:
        self._table = table
        self._runtime = runtime
        self._metrics = GatewayMetrics(enabled=False) if metrics is None else metrics
        self._dialer = dialer
        #: Set (and replaced) by each ``offer``: the running generation task is to be replaced.
        self._offered = trio.Event()
        table.replace(verdicts(runtime))

    @property
    def runtime(self) -> RuntimeConfig:
        """The generation probed now (or about to be)."""
        return self._runtime

    def offer(self, runtime: RuntimeConfig) -> None:
        """Probe ``runtime`` from now on, its backends starting from the verdicts on the
        previous generation's backends with the same service and URL."""
        previous = self._runtime
        for name, service in runtime.services.items():
            old = previous.services.get(name)
            if old is not None and service.health_check is not None:
                carry_active_health(old.backends, service.backends)
        self._runtime = runtime
        self._table.replace(verdicts(runtime))
        offered, self._offered = self._offered, trio.Event()
        offered.set()

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Probe the current generation until cancelled; ``started()`` at once."""
        async with trio.open_nursery() as generations:
            task_status.started()
            running: trio.CancelScope | None = None
            while True:
                offered = self._offered
                scope = await generations.start(self._probe, self._runtime)
                if running is not None:
                    running.cancel()
                running = scope
                await offered.wait()

    async def _probe(
        self, runtime: RuntimeConfig, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """One generation's probers, until their scope is cancelled."""
        with trio.CancelScope() as scope:
            task_status.started(scope)
            async with trio.open_nursery() as probers:
                for service in runtime.services.values():
                    self._start(probers, runtime, service)

    def _start(
        self, probers: trio.Nursery, runtime: RuntimeConfig, service: ServiceRuntime
    ) -> None:
        settings = service.health_check
        if settings is None:
            return
        on_change = partial(self._changed, runtime, service.name)
        on_result = partial(self._probed, runtime, service)
        for backend in service.backends:
            state = ActiveHealth(backend, settings.healthy_threshold, settings.unhealthy_threshold)
            probers.start_soon(
                partial(
                    run_prober,
                    backend,
                    settings,
                    state,
                    on_change=on_change,
                    on_result=on_result,
                    dialer=self._dialer,
                )
            )

    def _changed(
        self, runtime: RuntimeConfig, service: str, backend: Backend, healthy: bool, reason: str
    ) -> None:
        if runtime is not self._runtime:  # a replaced generation's last word: dropped
            return
        log.info(
            "backend %s of service %s is now %s (%s)",
            backend.url.text,
            service,
            "healthy" if healthy else "unhealthy",
            reason,
        )
        self._table.record(service, backend.url.text, healthy)

    def _probed(
        self, runtime: RuntimeConfig, service: ServiceRuntime, backend: Backend, result: ProbeResult
    ) -> None:
        url = backend.url.text
        self._metrics.health_check(service.name, url, "success" if result.success else "failure")
        if result.success and service.outliers is not None and runtime is self._runtime:
            self._table.passed(service.name, url)
