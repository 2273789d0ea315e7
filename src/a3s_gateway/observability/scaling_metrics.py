"""The Prometheus families of autoscaling, the scale-from-zero buffer, revisions and rollouts
(SPEC §9.1, §11).

Ring 0. ``ScalingFamilies`` declares the ``a3s_autoscaler_*``, ``a3s_scale_buffer_*``,
``a3s_revision_traffic_percent`` and ``a3s_rollout_*`` families on the gateway's registry and,
at scrape time, sets them from plain values: ``ScalingStats`` (what the process that runs the
autoscalers and rollouts decided: the single process, or the supervisor of ``--workers N``) and
the buffer counts of the process. The autoscaler, revision and rollout gauges are the
controlling process's own values (``GaugeKind.OWN``: a worker never sets them, the supervisor's
value is the fleet's); the buffer's depth is a per-worker quantity (summed); counters are
advanced to the running totals.

Must not: run per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from a3s_gateway.observability.metrics import GaugeKind

if TYPE_CHECKING:
    from collections.abc import Mapping

    from a3s_gateway.observability.metrics import Gauge, Registry

__all__ = ["AutoscalerStat", "ScalingFamilies", "ScalingStats"]


@dataclass(frozen=True, slots=True)
class AutoscalerStat:
    """One service's autoscaler at its last tick (None: not known yet)."""

    desired: int | None
    actual: int | None
    ready: int
    panic: bool
    stable: float | None
    panic_concurrency: float | None


@dataclass(slots=True)
class ScalingStats:
    """What the controlling process reports (module docstring)."""

    autoscalers: dict[str, AutoscalerStat] = field(default_factory=dict)
    executor_errors: dict[str, int] = field(default_factory=dict)
    #: Live split: (service, revision) → percent.
    revisions: dict[tuple[str, str], int] = field(default_factory=dict)
    #: ``a3s_rollout_state`` values by service.
    rollout_states: dict[str, int] = field(default_factory=dict)
    rollout_steps: dict[tuple[str, str], int] = field(default_factory=dict)


class ScalingFamilies:
    """The scaling families of one registry."""

    def __init__(self, registry: Registry, *, enabled: bool = True) -> None:
        #: With ``metrics_enabled = false`` nothing is ever set.
        self.enabled = enabled
        counter, gauge = registry.counter, registry.gauge

        def own(name: str, help: str, *labels: str) -> Gauge:
            return gauge(name, help, labels or ("service",), kind=GaugeKind.OWN)

        self.desired = own("a3s_autoscaler_desired_replicas", "Replicas the autoscaler asked for.")
        self.actual = own("a3s_autoscaler_actual_replicas", "Replicas the executor reports.")
        self.ready = own(
            "a3s_autoscaler_ready_backends", "Available backends of the service at the last tick."
        )
        self.panic = own("a3s_autoscaler_panic", "1 while the decider is in panic mode.")
        self.observed = own(
            "a3s_autoscaler_observed_concurrency",
            "Average concurrency over the stable and the panic window.",
            "service",
            "window",
        )
        self.executor_errors = counter(
            "a3s_autoscaler_executor_errors_total",
            "Executor calls that failed (retried at the next tick).",
            ("service",),
        )
        self.buffer_queued = gauge(
            "a3s_scale_buffer_queued",
            "Requests waiting in the scale-from-zero buffer now.",
            ("service",),
        )
        self.buffer_results = counter(
            "a3s_scale_buffer_results_total",
            "Requests that left the scale-from-zero buffer, by result.",
            ("service", "result"),
        )
        self.revision_percent = own(
            "a3s_revision_traffic_percent",
            "The live traffic split between a service's revisions.",
            "service",
            "revision",
        )
        self.rollout_state = own(
            "a3s_rollout_state",
            "Rollout state: 0 in progress, 1 waiting, 2 paused, 3 completed, 4 rolled back.",
        )
        self.rollout_steps = counter(
            "a3s_rollout_steps_total", "Rollout steps by result.", ("service", "result")
        )

    def collect_control(self, stats: ScalingStats) -> None:
        """Set the controlling process's values."""
        if not self.enabled:
            return
        # Services and revisions that are gone (a reload) leave no stale gauge behind.
        services = {(service,) for service in stats.autoscalers}
        for family in (self.desired, self.actual, self.ready, self.panic):
            family.retain(services)
        windows = ("stable", "panic")
        self.observed.retain({(service, window) for (service,) in services for window in windows})
        self.revision_percent.retain(set(stats.revisions))
        self.rollout_state.retain({(service,) for service in stats.rollout_states})
        for service, stat in stats.autoscalers.items():
            if stat.desired is not None:
                self.desired.labels(service).set(stat.desired)
            if stat.actual is not None:
                self.actual.labels(service).set(stat.actual)
            self.ready.labels(service).set(stat.ready)
            self.panic.labels(service).set(1 if stat.panic else 0)
            if stat.stable is not None:
                self.observed.labels(service, "stable").set(stat.stable)
            if stat.panic_concurrency is not None:
                self.observed.labels(service, "panic").set(stat.panic_concurrency)
        for service, total in stats.executor_errors.items():
            self.executor_errors.labels(service).advance_to(total)
        for (service, revision), percent in stats.revisions.items():
            self.revision_percent.labels(service, revision).set(percent)
        for service, state in stats.rollout_states.items():
            self.rollout_state.labels(service).set(state)
        for (service, result), total in stats.rollout_steps.items():
            self.rollout_steps.labels(service, result).advance_to(total)

    def collect_buffers(
        self, results: Mapping[tuple[str, str], int], depths: Mapping[str, int]
    ) -> None:
        """Set this process's buffer families."""
        if not self.enabled:
            return
        for service, depth in depths.items():
            self.buffer_queued.labels(service).set(depth)
        for (service, result), total in results.items():
            self.buffer_results.labels(service, result).advance_to(total)
