"""Properties of the KPA decider and the scale planner (SPEC §11.3–11.4; DESIGN.md §3.7).

Random specs (rates, thresholds, burst capacity, activation scale, delay, reachability) and
random tick sequences, sometimes with spec updates: the decider agrees with a small reference
model of SPEC §11.3 (as Knative orders it) written here; it never scales down while panicking;
it respects the rate bounds; the scale-down delay result is the maximum of the undelayed values
in the window; a decider created above one ready replica starts in panic. The planner keeps
within the replica bounds and scales to zero only after the grace.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from itertools import pairwise

from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.scaling.autoscaler import (
    Decision,
    KpaDecider,
    KpaSpec,
    Observation,
    ScalePlanner,
    ScalePolicy,
)


@dataclass(frozen=True)
class Tick:
    advance: float  # seconds since the previous tick
    observation: Observation
    update: KpaSpec | None = None  # applied before this tick


@st.composite
def specs(draw: st.DrawFn) -> KpaSpec:
    target = draw(st.sampled_from([0.5, 1.0, 7.0, 10.0, 35.0]))
    return KpaSpec(
        target=target,
        total=target / draw(st.sampled_from([0.5, 0.7, 1.0])),
        target_burst_capacity=draw(st.sampled_from([-1.0, 0.0, 10.0, 200.0])),
        panic_threshold=draw(st.sampled_from([1.1, 2.0, 3.5])),
        max_scale_up_rate=draw(st.sampled_from([1.1, 2.0, 10.0, 1000.0])),
        max_scale_down_rate=draw(st.sampled_from([1.1, 2.0, 10.0])),
        stable_window=draw(st.sampled_from([0.0, 6.0, 20.0, 60.0])),
        reachable=draw(st.booleans()),
        activation_scale=draw(st.integers(1, 4)),
        scale_down_delay=draw(st.sampled_from([0.0, 2.0, 10.0, 30.0])),
    )


concurrency = st.one_of(
    st.just(0.0), st.floats(0.0, 400.0, allow_nan=False), st.integers(0, 400).map(float)
)
observations = st.builds(Observation, st.integers(0, 60), concurrency, concurrency)
# Whole seconds mostly, so samples land exactly on a window's edge now and then.
advances = st.one_of(st.integers(0, 15).map(float), st.floats(0.0, 15.0, allow_nan=False))


def ticks(*, updates: bool) -> st.SearchStrategy[list[Tick]]:
    update = st.one_of(st.none(), st.none(), st.none(), specs()) if updates else st.none()
    return st.lists(st.builds(Tick, advances, observations, update), min_size=1, max_size=20)


# -- the reference model --------------------------------------------------------------------------


@dataclass
class Reference:
    """SPEC §11.3 in Knative's order, the plain way: the delay window keeps every sample that
    is still inside it (the decider keeps only those that can still be the maximum)."""

    spec: KpaSpec
    panic_since: float | None
    max_panic: int
    samples: list[tuple[float, int]] = field(default_factory=list)

    @classmethod
    def created(cls, spec: KpaSpec, now: float, ready: int) -> Reference:
        return cls(spec, now if ready > 1 else None, ready)

    def step(self, now: float, seen: Observation) -> Decision:
        spec = self.spec
        ready_f = max(1, seen.ready)
        top = math.ceil(spec.max_scale_up_rate * ready_f)
        bottom = math.floor(ready_f / spec.max_scale_down_rate) if spec.reachable else 0
        counts = []
        for value in (seen.stable, seen.panic):
            demand = math.ceil(value / spec.target)
            count = max(bottom, min(demand, top)) if bottom <= top else top
            if demand > 0 and spec.activation_scale > 1:
                count = max(count, spec.activation_scale)
            counts.append(count)
        stable_count, panic_count = counts
        over = math.ceil(seen.panic / spec.target) / ready_f >= spec.panic_threshold
        if over:
            self.panic_since = now
        elif self.panic_since is not None and now > self.panic_since + spec.stable_window:
            self.panic_since, self.max_panic = None, 0
        desired = stable_count
        if self.panic_since is not None:
            self.max_panic = max(self.max_panic, stable_count, panic_count)
            desired = self.max_panic
        if spec.scale_down_delay == 0:
            self.samples = []
        elif spec.reachable:
            # a sample out of the window is gone, even if a later update lengthens the delay
            horizon = now - spec.scale_down_delay
            self.samples = [(t, v) for t, v in self.samples if t > horizon] + [(now, desired)]
            desired = max(v for _, v in self.samples)
        burst = spec.target_burst_capacity
        ebc = -1 if burst < 0 else 0 if burst == 0 else seen.ready * spec.total - burst - seen.panic
        return Decision(desired, self.panic_since is not None, math.floor(ebc), "")


def replay(decider: KpaDecider, steps: list[Tick], start: float = 0.0) -> list[Decision]:
    now, decisions = start, []
    for tick in steps:
        now += tick.advance
        if tick.update is not None:
            decider.update(tick.update)
        decisions.append(decider.step(now, tick.observation))
    return decisions


def times(steps: list[Tick], start: float = 0.0) -> list[float]:
    out, now = [], start
    for tick in steps:
        now += tick.advance
        out.append(now)
    return out


# -- decider --------------------------------------------------------------------------------------


@given(specs(), st.integers(0, 60), ticks(updates=True))
def test_decider_matches_the_reference_model(spec: KpaSpec, ready: int, steps: list[Tick]) -> None:
    decider = KpaDecider(spec, now=0.0, ready=ready)
    model = Reference.created(spec, 0.0, ready)
    for now, tick, got in zip(times(steps), steps, replay(decider, steps), strict=True):
        if tick.update is not None:
            model.spec = tick.update
        want = model.step(now, tick.observation)
        assert (got.desired, got.panic, got.excess_burst_capacity) == (
            want.desired,
            want.panic,
            want.excess_burst_capacity,
        )
        assert got.reason in {"stable", "panic", "scale-down delay"}


@given(specs(), st.integers(0, 60), ticks(updates=False))
def test_never_scales_down_while_panicking(spec: KpaSpec, ready: int, steps: list[Tick]) -> None:
    # Without the delay window: the window may still hold a larger value from before the
    # panic began, and that one expires (the pre-window value is what panic holds).
    spec = replace(spec, scale_down_delay=0.0)
    decisions = replay(KpaDecider(spec, now=0.0, ready=ready), steps)
    for before, after in pairwise(decisions):
        if before.panic and after.panic:
            assert after.desired >= before.desired


@given(specs(), st.integers(0, 60), ticks(updates=False))
def test_rate_bounds(spec: KpaSpec, ready: int, steps: list[Tick]) -> None:
    decisions = replay(KpaDecider(spec, now=0.0, ready=ready), steps)
    for tick, decision in zip(steps, decisions, strict=True):
        ready_f = max(1, tick.observation.ready)
        if spec.reachable:
            # panic, activation and the delay window only ever raise the count
            assert decision.desired >= math.floor(ready_f / spec.max_scale_down_rate)
        delayed = spec.reachable and spec.scale_down_delay > 0
        if not decision.panic and not delayed:
            top = math.ceil(spec.max_scale_up_rate * ready_f)
            assert decision.desired <= max(top, spec.activation_scale)
            if spec.activation_scale == 1:
                assert decision.desired <= top


@given(specs(), st.integers(0, 60), ticks(updates=False))
def test_delay_window_is_the_max_over_the_window(
    spec: KpaSpec, ready: int, steps: list[Tick]
) -> None:
    spec = replace(spec, reachable=True)
    undelayed = replay(KpaDecider(replace(spec, scale_down_delay=0.0), now=0.0, ready=ready), steps)
    delayed = replay(KpaDecider(spec, now=0.0, ready=ready), steps)
    clock = times(steps)
    for i, decision in enumerate(delayed):
        horizon = clock[i] - spec.scale_down_delay
        window = [undelayed[j].desired for j in range(i + 1) if clock[j] > horizon]
        expected = max(window) if spec.scale_down_delay > 0 else undelayed[i].desired
        assert decision.desired == expected
        # the window changes nothing else
        assert decision.panic is undelayed[i].panic
        assert decision.excess_burst_capacity == undelayed[i].excess_burst_capacity


@given(specs(), st.integers(2, 60), observations)
def test_created_above_one_ready_starts_in_panic(
    spec: KpaSpec, ready: int, seen: Observation
) -> None:
    decider = KpaDecider(spec, now=5.0, ready=ready)
    assert decider.panicking
    decision = decider.step(5.0, seen)
    assert decision.panic
    assert decision.desired >= ready


# -- planner --------------------------------------------------------------------------------------


policies = st.builds(
    lambda low, extra, grace: ScalePolicy(
        min_replicas=low, max_replicas=max(1, low + extra), scale_to_zero_grace=grace
    ),
    st.integers(0, 3),
    st.integers(0, 20),
    st.sampled_from([0.0, 2.0, 10.0, 30.0]),
)


@given(specs(), policies, st.integers(0, 10), ticks(updates=False), st.booleans())
def test_planner_bounds_and_scale_to_zero_grace(
    spec: KpaSpec, policy: ScalePolicy, start: int, steps: list[Tick], follow: bool
) -> None:
    planner = ScalePlanner(spec, policy, now=0.0, ready=start)
    current, zero_since = start, None
    for now, tick in zip(times(steps), steps, strict=True):
        seen = tick.observation
        zero_since = (zero_since if zero_since is not None else now) if seen.stable == 0 else None
        idle = zero_since is not None and now - zero_since >= policy.scale_to_zero_grace
        plan = planner.plan(
            now, ready=seen.ready, current=current, stable=seen.stable, panic=seen.panic
        )
        wanted = plan.decision.desired
        if plan.desired == 0:
            assert policy.min_replicas == 0
            assert wanted == 0
            assert idle or current == 0
        else:
            assert policy.min_replicas <= plan.desired <= policy.max_replicas
        if wanted > 0 or policy.min_replicas > 0:
            assert plan.desired == min(max(wanted, policy.min_replicas), policy.max_replicas)
        elif idle or current == 0:
            assert plan.desired == 0
        else:
            assert plan.desired == 1  # zero waits for the grace (SPEC §11.4)
        direction = "up" if plan.desired > current else "down" if plan.desired < current else "hold"
        assert plan.reason.startswith(f"{direction}: ")
        assert f" current={current} desired={plan.desired} " in plan.reason
        # either the executor follows the plan, or the replica count drifts on its own
        current = plan.desired if follow else seen.ready
