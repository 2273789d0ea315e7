"""The KPA decider and the scale planner: how many replicas a service wants (SPEC §11.3–11.4).

Ring 0: pure and synchronous. The trio loop (``scaling/loop.py``) measures the stable and panic
concurrency averages and the ready backends, reads the current replica count from the executor,
and calls ``ScalePlanner.plan`` once per tick; it hands the plan to the executor. Time is the
``now`` argument, in seconds on trio's clock.

Must not: import trio, socket, ssl, time, logging or os; call an executor, read metrics or log
(the ``Plan`` carries the reason text the caller logs and sends).

Theory of operation
-------------------
``KpaDecider`` is Knative's KPA decision (``pkg/autoscaler/scaling/autoscaler.go``,
``autoscaler.Scale``), step for step, so Knative's own decision sequences replay against it
(``tests/scaling/test_kpa_knative.py``). With ``readyF = max(1, ready)``::

    maxUp   = ⌈max_scale_up_rate × readyF⌉
    maxDown = ⌊readyF ÷ max_scale_down_rate⌋ if reachable else 0
    dspc    = ⌈stable ÷ target⌉            dppc = ⌈panic ÷ target⌉
    dStable = min(max(dspc, maxDown), maxUp) dPanic = min(max(dppc, maxDown), maxUp)
    activation_scale > 1: dStable ≥ activation_scale when dspc > 0, likewise dPanic (dppc > 0)
    over panic: dppc ÷ readyF ≥ panic_threshold → panic entered or extended (panic_since = now);
      not over and panic_since + stable_window < now → panic left, max_panic = 0
    desired = dStable; while panicking max(dStable, dPanic, max_panic) and max_panic = desired
    reachable and scale_down_delay > 0: desired = max of the desired values recorded in
      (now − scale_down_delay, now]

The delay window keeps a descending run of (time, value) samples, like Knative's
``aggregation/max`` window (which buckets by the 2 s tick; ours is exact time, which agrees at
tick-aligned times). It records nothing while the service is unreachable, as in Knative.

A decider created with more than one ready replica starts in panic with ``max_panic = ready``:
after a restart it never scales down on empty history. ``update`` swaps the spec and keeps the
panic state and the delay window's samples; a changed delay applies from the next step (samples
that already fell out of a shorter window do not come back). Knative instead fixes the window
when the decider is created and ignores later delay changes.

``ScalePlanner`` wraps the decider with the replica bounds and scale to zero (SPEC §11.4) and
writes the SPEC §11.3 reason text, which needs the current replica count the decider never sees.

Time never runs backwards: a ``now`` below the latest value seen is read as that latest value.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a3s_gateway.config.schema_services import Scaling

__all__ = [
    "Decision",
    "KpaDecider",
    "KpaSpec",
    "Observation",
    "Plan",
    "ScalePlanner",
    "ScalePolicy",
    "kpa_spec",
    "panic_window",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class KpaSpec:
    """The decider's parameters (Knative's ``DeciderSpec``).

    ``target`` is the per-replica target (SPEC §11.2: ``max(0.01, container_concurrency ×
    target_utilization)``), ``total`` one replica's full capacity (``container_concurrency``),
    ``panic_threshold`` a ratio (2.0 = 200 %), ``target_burst_capacity`` Knative's: 0 = none,
    negative = unlimited. Windows and delays are in seconds. ``reachable``: a router uses the
    service (SPEC §11.3 "max scale down"); an unreachable one may drop to zero at once.

    Raises ``ValueError`` for a non-positive target or rate, or a negative window or capacity.
    """

    target: float
    total: float
    target_burst_capacity: float
    panic_threshold: float
    max_scale_up_rate: float
    max_scale_down_rate: float
    stable_window: float
    reachable: bool
    activation_scale: int = 1
    scale_down_delay: float = 0.0

    def __post_init__(self) -> None:
        positive = {
            "target": self.target,
            "panic_threshold": self.panic_threshold,
            "max_scale_up_rate": self.max_scale_up_rate,
            "max_scale_down_rate": self.max_scale_down_rate,
        }
        non_negative = {
            "total": self.total,
            "stable_window": self.stable_window,
            "scale_down_delay": self.scale_down_delay,
        }
        for name, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, not {value!r}")
        for name, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative number, not {value!r}")
        if math.isnan(self.target_burst_capacity):
            raise ValueError("target_burst_capacity must be a number, not nan")


@dataclass(frozen=True, slots=True)
class Observation:
    """One tick's inputs: ready backends, stable and panic concurrency averages.

    Raises ``ValueError`` for a negative count or a negative or non-finite average.
    """

    ready: int
    stable: float
    panic: float

    def __post_init__(self) -> None:
        if self.ready < 0:
            raise ValueError(f"ready must be at least 0, not {self.ready}")
        for name, value in (("stable", self.stable), ("panic", self.panic)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite non-negative number, not {value!r}")


@dataclass(frozen=True, slots=True)
class Decision:
    """The decider's answer for one tick.

    ``desired`` is before the replica bounds and scale to zero (the planner's business);
    ``panic`` is the panic mode after this step; ``excess_burst_capacity`` is Knative's
    (``⌊ready × total − target_burst_capacity − panic⌋``, 0 without a burst capacity, −1 when it
    is unlimited); ``reason`` names what set ``desired``: ``"stable"``, ``"panic"`` or
    ``"scale-down delay"``.
    """

    desired: int
    panic: bool
    excess_burst_capacity: int
    reason: str


class _DelayWindow:
    """The maximum of the values recorded in the last ``delay`` seconds (half-open on the left).

    Holds a run of samples with strictly decreasing values and increasing times: a sample that
    is older and not larger than a newer one can never be the maximum again (Knative's
    "descending minima" window), so memory is bounded by the distinct values in the window.
    """

    __slots__ = ("_samples",)

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int]] = deque()

    def record(self, now: float, value: int, delay: float) -> int:
        """Record ``value`` at ``now`` and return the maximum over ``(now − delay, now]``."""
        samples = self._samples
        while samples and samples[-1][1] <= value:
            samples.pop()
        horizon = now - delay
        while samples and samples[0][0] <= horizon:
            samples.popleft()
        samples.append((now, value))
        return samples[0][1]

    def clear(self) -> None:
        self._samples.clear()


def _clamp(value: int, low: int, high: int) -> int:
    return min(max(value, low), high)


class KpaDecider:
    """Knative's KPA decision for one service (see the module docstring for the formulas).

    Not thread-safe; one caller steps it, once per tick.
    """

    __slots__ = ("_latest", "_max_panic", "_panic_since", "_spec", "_window")

    def __init__(self, spec: KpaSpec, *, now: float, ready: int) -> None:
        self._spec = spec
        self._latest = now
        # Knative keeps max_panic = ready even when it does not start in panic.
        self._max_panic = max(0, ready)
        self._panic_since: float | None = now if ready > 1 else None
        self._window = _DelayWindow()

    @property
    def spec(self) -> KpaSpec:
        return self._spec

    @property
    def panicking(self) -> bool:
        return self._panic_since is not None

    @property
    def max_panic(self) -> int:
        """The floor on desired while panicking (never lowered until panic ends)."""
        return self._max_panic

    def update(self, spec: KpaSpec) -> None:
        """Use ``spec`` from the next step on; panic state and delay samples stay."""
        self._spec = spec

    def step(self, now: float, observation: Observation) -> Decision:
        """Decide for ``now`` from ``observation`` (Knative's ``Scale``)."""
        now = max(now, self._latest)
        self._latest = now
        spec = self._spec
        ready_f = float(max(1, observation.ready))
        max_up = math.ceil(spec.max_scale_up_rate * ready_f)
        max_down = math.floor(ready_f / spec.max_scale_down_rate) if spec.reachable else 0
        dspc = math.ceil(observation.stable / spec.target)
        dppc = math.ceil(observation.panic / spec.target)
        d_stable = _clamp(dspc, max_down, max_up)
        d_panic = _clamp(dppc, max_down, max_up)
        # Knative raises each count to activation_scale after the rate clamp and before the
        # panic logic and the delay window, only when the unclamped demand is non-zero.
        if spec.activation_scale > 1:
            if dspc > 0:
                d_stable = max(d_stable, spec.activation_scale)
            if dppc > 0:
                d_panic = max(d_panic, spec.activation_scale)
        self._update_panic(now, over=dppc / ready_f >= spec.panic_threshold)
        desired, reason = d_stable, "stable"
        if self._panic_since is not None:
            # No scale-down while panicking: max_panic only grows until panic ends.
            self._max_panic = max(self._max_panic, d_stable, d_panic)
            desired, reason = self._max_panic, "panic"
        if spec.scale_down_delay <= 0:
            self._window.clear()
        elif spec.reachable:
            delayed = self._window.record(now, desired, spec.scale_down_delay)
            if delayed != desired:
                desired, reason = delayed, "scale-down delay"
        return Decision(
            desired=desired,
            panic=self._panic_since is not None,
            excess_burst_capacity=_excess_burst_capacity(spec, observation),
            reason=reason,
        )

    def _update_panic(self, now: float, *, over: bool) -> None:
        if over:
            self._panic_since = now  # entered, or extended
        elif self._panic_since is not None and self._panic_since + self._spec.stable_window < now:
            self._panic_since = None
            self._max_panic = 0


def _excess_burst_capacity(spec: KpaSpec, observation: Observation) -> int:
    """Knative's EBC: spare capacity beyond the burst target, from the *real* ready count."""
    burst = spec.target_burst_capacity
    if burst == 0:
        return 0
    if burst < 0:
        return -1
    return math.floor(observation.ready * spec.total - burst - observation.panic)


# --------------------------------------------------------------------------- planner


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalePolicy:
    """Replica bounds and the scale-to-zero grace (SPEC §11.3 "bounds", §11.4).

    Raises ``ValueError`` unless ``0 ≤ min_replicas ≤ max_replicas``, ``max_replicas ≥ 1`` and
    the grace is a non-negative number.
    """

    min_replicas: int
    max_replicas: int
    scale_to_zero_grace: float  # seconds

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas or self.max_replicas < 1:
            raise ValueError(
                f"need 0 <= min_replicas <= max_replicas and max_replicas >= 1, got "
                f"{self.min_replicas} and {self.max_replicas}"
            )
        grace = self.scale_to_zero_grace
        if not (math.isfinite(grace) and grace >= 0):
            raise ValueError(f"scale_to_zero_grace must be a non-negative number, not {grace!r}")


@dataclass(frozen=True, slots=True)
class Plan:
    """One tick's plan: the replica count to ask for, and why."""

    desired: int  # after bounds and the scale-to-zero rule (SPEC §11.4)
    decision: Decision  # the decider's raw decision
    reason: str  # the SPEC §11.3 reason text; "hold" when desired == current


class ScalePlanner:
    """The decider plus bounds and scale to zero; one per service, stepped by the trio loop."""

    __slots__ = ("_decider", "_latest", "_policy", "_zero_since")

    def __init__(self, spec: KpaSpec, policy: ScalePolicy, *, now: float, ready: int) -> None:
        self._decider = KpaDecider(spec, now=now, ready=ready)
        self._policy = policy
        self._latest = now
        self._zero_since: float | None = None

    @property
    def decider(self) -> KpaDecider:
        return self._decider

    @property
    def policy(self) -> ScalePolicy:
        return self._policy

    def update(self, spec: KpaSpec, policy: ScalePolicy) -> None:
        """Use the new settings from the next tick on; decider and idle-time state stay."""
        self._decider.update(spec)
        self._policy = policy

    def plan(self, now: float, *, ready: int, current: int, stable: float, panic: float) -> Plan:
        """Decide for ``now``. Raises ``ValueError`` for an invalid observation."""
        now = max(now, self._latest)
        self._latest = now
        decision = self._decider.step(now, Observation(ready, stable, panic))
        if stable != 0:
            self._zero_since = None
        elif self._zero_since is None:
            self._zero_since = now
        desired = self._bounded(decision.desired, now=now, current=current)
        return Plan(
            desired=desired,
            decision=decision,
            reason=_reason_text(
                self._decider.spec,
                stable=stable,
                panic=panic,
                ready=ready,
                current=current,
                desired=desired,
                panic_mode=decision.panic,
            ),
        )

    def activated(self, now: float) -> None:
        """The service was just scaled up from zero for a waiting request (SPEC §11.4): going
        back to zero needs a whole grace of zero demand from ``now`` on, so a tick that does
        not see the request in a complete bucket yet does not undo the activation."""
        self._latest = max(now, self._latest)
        self._zero_since = self._latest

    def activation(self, current: int) -> int | None:
        """SPEC §11.4 activation: the count to scale to at once when at zero, else ``None``."""
        if current == 0:
            return max(1, self._policy.min_replicas)
        return None

    def _bounded(self, wanted: int, *, now: float, current: int) -> int:
        policy = self._policy
        if wanted > 0 or policy.min_replicas > 0:
            return _clamp(wanted, policy.min_replicas, policy.max_replicas)
        # The decider says 0 and zero is allowed: only after a whole grace of zero stable demand.
        idle = self._zero_since is not None and now - self._zero_since >= policy.scale_to_zero_grace
        if idle or current == 0:
            return 0
        return 1


def _reason_text(
    spec: KpaSpec,
    *,
    stable: float,
    panic: float,
    ready: int,
    current: int,
    desired: int,
    panic_mode: bool,
) -> str:
    direction = "up" if desired > current else "down" if desired < current else "hold"
    return (
        f"{direction}: stable={stable:.2f} panic={panic:.2f} target={spec.target:.2f} "
        f"ready={ready} current={current} desired={desired} "
        f"panic_mode={'true' if panic_mode else 'false'}"
    )


# --------------------------------------------------------------------------- config


def kpa_spec(scaling: Scaling, *, reachable: bool) -> KpaSpec:
    """The decider spec for a ``scaling {}`` block (SPEC §11.2–11.3)."""
    concurrency = scaling.container_concurrency
    return KpaSpec(
        target=max(0.01, concurrency * scaling.target_utilization),
        total=float(concurrency),
        target_burst_capacity=float(scaling.target_burst_capacity),
        panic_threshold=scaling.panic_threshold_percentage / 100.0,
        max_scale_up_rate=scaling.max_scale_up_rate,
        max_scale_down_rate=scaling.max_scale_down_rate,
        stable_window=scaling.stable_window.seconds,
        reachable=reachable,
        activation_scale=scaling.activation_scale,
        scale_down_delay=float(scaling.scale_down_delay_secs),
    )


def panic_window(scaling: Scaling) -> float:
    """The panic window in seconds: stable window × percentage, to whole seconds, at least 1."""
    seconds = scaling.stable_window.seconds * scaling.panic_window_percentage / 100.0
    return float(max(1, math.floor(seconds + 0.5)))
