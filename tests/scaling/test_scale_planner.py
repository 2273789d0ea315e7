"""The scale planner (SPEC §11.3 bounds and reason text, §11.4 scale to zero and activation),
and the spec it builds from a ``scaling {}`` block. The decider's own behaviour is in
test_kpa_knative.py and tests/property/test_kpa_decider.py; these are the concrete cases."""

from __future__ import annotations

from dataclasses import replace

import pytest

from a3s_gateway.config.schema_services import Scaling
from a3s_gateway.config.values import Duration
from a3s_gateway.scaling.autoscaler import (
    KpaSpec,
    Observation,
    ScalePlanner,
    ScalePolicy,
    kpa_spec,
    panic_window,
)

SPEC = KpaSpec(
    target=10.0,
    total=10.0,
    target_burst_capacity=0.0,
    panic_threshold=2.0,
    max_scale_up_rate=1000.0,
    max_scale_down_rate=2.0,
    stable_window=60.0,
    reachable=True,
)


def policy(low: int = 0, high: int = 10, grace: float = 30.0) -> ScalePolicy:
    return ScalePolicy(min_replicas=low, max_replicas=high, scale_to_zero_grace=grace)


# -- bounds ---------------------------------------------------------------------------------------


def test_desired_is_clamped_to_max_replicas() -> None:
    planner = ScalePlanner(SPEC, policy(high=4), now=0.0, ready=1)
    plan = planner.plan(0.0, ready=1, current=1, stable=100.0, panic=10.0)
    assert plan.decision.desired == 10
    assert plan.desired == 4


def test_desired_is_raised_to_min_replicas() -> None:
    planner = ScalePlanner(SPEC, policy(low=3), now=0.0, ready=1)
    plan = planner.plan(0.0, ready=1, current=3, stable=5.0, panic=5.0)
    assert plan.decision.desired == 1
    assert plan.desired == 3
    assert plan.reason.startswith("hold:")


def test_min_replicas_above_zero_never_scales_to_zero() -> None:
    planner = ScalePlanner(SPEC, policy(low=2, grace=0.0), now=0.0, ready=2)
    for now in (0.0, 100.0, 1000.0):
        plan = planner.plan(now, ready=2, current=2, stable=0.0, panic=0.0)
        assert plan.desired == 2


# -- scale to zero (SPEC §11.4) -------------------------------------------------------------------


def test_zero_only_after_the_grace_of_zero_stable_demand() -> None:
    planner = ScalePlanner(SPEC, policy(grace=30.0), now=0.0, ready=1)
    first = planner.plan(0.0, ready=1, current=1, stable=0.0, panic=0.0)
    assert first.decision.desired == 0
    assert first.desired == 1  # zero since t=0, grace not over
    assert planner.plan(29.9, ready=1, current=1, stable=0.0, panic=0.0).desired == 1
    last = planner.plan(30.0, ready=1, current=1, stable=0.0, panic=0.0)
    assert last.desired == 0  # exactly the grace: enough
    assert last.reason.startswith("down:")


def test_non_zero_stable_demand_restarts_the_grace() -> None:
    planner = ScalePlanner(SPEC, policy(grace=30.0), now=0.0, ready=1)
    planner.plan(0.0, ready=1, current=1, stable=0.0, panic=0.0)
    # a tiny demand: the decider wants 1, and the idle clock starts again
    assert planner.plan(20.0, ready=1, current=1, stable=0.001, panic=0.0).desired == 1
    assert planner.plan(21.0, ready=1, current=1, stable=0.0, panic=0.0).desired == 1
    assert planner.plan(50.9, ready=1, current=1, stable=0.0, panic=0.0).desired == 1
    assert planner.plan(51.0, ready=1, current=1, stable=0.0, panic=0.0).desired == 0


def test_at_zero_a_zero_decision_stays_at_zero() -> None:
    planner = ScalePlanner(SPEC, policy(grace=30.0), now=0.0, ready=0)
    plan = planner.plan(0.0, ready=0, current=0, stable=0.0, panic=0.0)
    assert plan.desired == 0
    assert plan.reason.startswith("hold:")


def test_zero_grace_scales_to_zero_at_the_first_zero() -> None:
    planner = ScalePlanner(SPEC, policy(grace=0.0), now=0.0, ready=1)
    assert planner.plan(0.0, ready=1, current=1, stable=0.0, panic=0.0).desired == 0


# -- activation (SPEC §11.4) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "current", "expected"),
    [(0, 0, 1), (3, 0, 3), (0, 1, None), (2, 5, None)],
)
def test_activation(low: int, current: int, expected: int | None) -> None:
    planner = ScalePlanner(SPEC, policy(low=low), now=0.0, ready=current)
    assert planner.activation(current) == expected


# -- reason text (SPEC §11.3) ---------------------------------------------------------------------


def test_reason_text_for_a_scale_up_in_panic() -> None:
    planner = ScalePlanner(SPEC, policy(), now=0.0, ready=1)
    plan = planner.plan(0.0, ready=1, current=1, stable=12.5, panic=40.0)
    assert plan.decision.panic
    assert plan.reason == (
        "up: stable=12.50 panic=40.00 target=10.00 ready=1 current=1 desired=4 panic_mode=true"
    )


def test_reason_text_for_a_scale_down() -> None:
    planner = ScalePlanner(SPEC, policy(), now=0.0, ready=1)
    plan = planner.plan(0.0, ready=4, current=4, stable=20.0, panic=20.0)
    assert plan.desired == 2
    assert plan.reason == (
        "down: stable=20.00 panic=20.00 target=10.00 ready=4 current=4 desired=2 panic_mode=false"
    )


# -- update ---------------------------------------------------------------------------------------


def test_update_keeps_panic_and_applies_the_new_bounds() -> None:
    planner = ScalePlanner(SPEC, policy(), now=0.0, ready=1)
    assert planner.plan(0.0, ready=1, current=1, stable=10.0, panic=50.0).desired == 5
    planner.update(SPEC, policy(high=3))
    plan = planner.plan(2.0, ready=5, current=5, stable=10.0, panic=10.0)
    assert plan.decision.panic
    assert plan.decision.desired == 5  # no scale-down while panicking
    assert plan.desired == 3


def test_update_keeps_the_idle_clock() -> None:
    planner = ScalePlanner(SPEC, policy(grace=30.0), now=0.0, ready=1)
    planner.plan(0.0, ready=1, current=1, stable=0.0, panic=0.0)
    planner.update(SPEC, policy(grace=10.0))
    assert planner.plan(10.0, ready=1, current=1, stable=0.0, panic=0.0).desired == 0


def test_time_never_runs_backwards() -> None:
    planner = ScalePlanner(SPEC, policy(grace=30.0), now=100.0, ready=1)
    planner.plan(100.0, ready=1, current=1, stable=0.0, panic=0.0)
    # an earlier now reads as 100: the grace has not passed
    assert planner.plan(0.0, ready=1, current=1, stable=0.0, panic=0.0).desired == 1


# -- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("low", "high", "grace"),
    [(-1, 3, 1.0), (4, 3, 1.0), (0, 0, 1.0), (0, 3, -1.0), (0, 3, float("nan"))],
)
def test_invalid_policy(low: int, high: int, grace: float) -> None:
    with pytest.raises(ValueError, match=r"replicas|grace"):
        ScalePolicy(min_replicas=low, max_replicas=high, scale_to_zero_grace=grace)


@pytest.mark.parametrize(
    ("ready", "stable", "panic"),
    [(-1, 0.0, 0.0), (1, -0.5, 0.0), (1, 0.0, float("inf")), (1, float("nan"), 0.0)],
)
def test_invalid_observation(ready: int, stable: float, panic: float) -> None:
    with pytest.raises(ValueError, match=r"ready|stable|panic"):
        Observation(ready, stable, panic)


@pytest.mark.parametrize(
    ("field", "changes"),
    [
        ("target", {"target": 0.0}),
        ("max_scale_up_rate", {"max_scale_up_rate": 0.0}),
        ("max_scale_down_rate", {"max_scale_down_rate": -1.0}),
        ("panic_threshold", {"panic_threshold": float("nan")}),
        ("stable_window", {"stable_window": -1.0}),
        ("scale_down_delay", {"scale_down_delay": float("inf")}),
        ("target_burst_capacity", {"target_burst_capacity": float("nan")}),
    ],
)
def test_invalid_spec(field: str, changes: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=field):
        replace(SPEC, **changes)  # type: ignore[arg-type]  # every change is a float field


# -- from config ----------------------------------------------------------------------------------


def test_kpa_spec_from_the_defaults() -> None:
    scaling = Scaling(container_concurrency=50)
    spec = kpa_spec(scaling, reachable=True)
    assert spec.target == pytest.approx(35.0)  # 50 × 0.7
    assert spec.total == 50.0
    assert spec.panic_threshold == 2.0
    assert spec.max_scale_up_rate == 1000.0
    assert spec.max_scale_down_rate == 2.0
    assert spec.stable_window == 60.0
    assert spec.scale_down_delay == 300.0
    assert spec.reachable
    assert spec.target_burst_capacity == 200.0
    assert spec.activation_scale == 1


def test_kpa_spec_target_floor_and_settings() -> None:
    scaling = Scaling(
        container_concurrency=0,
        panic_threshold_percentage=150.0,
        stable_window=Duration("2m"),
        scale_down_delay_secs=0,
        max_scale_up_rate=3.0,
        max_scale_down_rate=4.0,
    )
    spec = kpa_spec(scaling, reachable=False)
    assert spec.target == 0.01
    assert spec.panic_threshold == 1.5
    assert spec.stable_window == 120.0
    assert spec.scale_down_delay == 0.0
    assert (spec.max_scale_up_rate, spec.max_scale_down_rate) == (3.0, 4.0)
    assert not spec.reachable


@pytest.mark.parametrize(
    ("window", "percentage", "seconds"),
    [("60s", 10.0, 6.0), ("60s", 1.0, 1.0), ("5s", 10.0, 1.0), ("25s", 10.0, 3.0), ("2m", 50, 60)],
)
def test_panic_window(window: str, percentage: float, seconds: float) -> None:
    scaling = Scaling(stable_window=Duration(window), panic_window_percentage=percentage)
    assert panic_window(scaling) == seconds
