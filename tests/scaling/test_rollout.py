"""The rollout controller (SPEC §11.8): settings from config, one test per rule of the table
(start, hold, roll back, advance, complete), the schedule, the management actions and their 409
on a finished rollout, the log line, the snapshot, and the interval statistics' edges. The
model-based properties are in tests/property/test_rollout_properties.py."""

from __future__ import annotations

from random import Random

import pytest

from a3s_gateway.config.schema_services import Rollout
from a3s_gateway.scaling.rollout import (
    RESERVOIR_SIZE,
    IntervalStats,
    InvalidAction,
    RolloutController,
    RolloutSettings,
    RolloutState,
    StepOutcome,
)

NAMES = ("stable", "other", "canary")
SETTINGS = RolloutSettings(
    from_index=0,
    to_index=2,
    step_percent=30,
    step_interval=60.0,
    error_rate_threshold=0.05,
    latency_threshold=0.5,
    min_requests=20,
    latency_percentile=99.0,
)


def controller(percents: tuple[int, ...] = (80, 10, 10)) -> RolloutController:
    return RolloutController(SETTINGS, percents, now=100.0, rng=Random(1))


def traffic(requests: int, errors: int = 0, latency: float | None = 0.1) -> IntervalStats:
    stats = IntervalStats()
    for n in range(requests):
        stats.record(error=n < errors, latency=latency, rng=Random(0))
    return stats


def stepped(rollout: RolloutController, stats: IntervalStats, now: float) -> StepOutcome:
    rollout.add(stats)
    outcome = rollout.step(now)
    assert outcome is not None
    return outcome


# --- settings ---


def test_settings_from_config_resolve_names_and_convert_units() -> None:
    rollout = Rollout(
        from_="stable",
        to="canary",
        step_percent=5,
        step_interval_secs=30,
        error_rate_threshold=0.1,
        latency_threshold_ms=250,
        min_requests=7,
        latency_percentile=99.9,
    )
    assert RolloutSettings.from_config(rollout, NAMES) == RolloutSettings(
        from_index=0,
        to_index=2,
        step_percent=5,
        step_interval=30.0,
        error_rate_threshold=0.1,
        latency_threshold=0.25,
        min_requests=7,
        latency_percentile=99.9,
    )


def test_settings_reject_unknown_names_and_bad_values() -> None:
    with pytest.raises(ValueError, match="not in"):
        RolloutSettings.from_config(Rollout(from_="stable", to="nope"), NAMES)
    with pytest.raises(ValueError, match="different"):
        RolloutSettings.from_config(Rollout(from_="stable", to="stable"), NAMES)
    with pytest.raises(ValueError, match="step_percent"):
        RolloutSettings.from_config(Rollout(from_="stable", to="canary", step_percent=0), NAMES)


def test_controller_rejects_a_bad_split_or_indices() -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        RolloutController(SETTINGS, (80, 10, 5), now=0.0)
    with pytest.raises(ValueError, match="beyond"):
        RolloutController(SETTINGS, (80, 20), now=0.0)


# --- the rules ---


def test_starts_in_progress_at_the_configured_split() -> None:
    rollout = controller()
    assert rollout.state is RolloutState.IN_PROGRESS
    assert rollout.percents == (80, 10, 10)  # the canary keeps its 10 %, not 0 (A3S)
    assert rollout.next_step == 160.0
    assert rollout.last is None
    assert rollout.steps == {"advanced": 0, "held": 0, "rolled_back": 0}


def test_no_step_before_it_is_due() -> None:
    rollout = controller()
    rollout.add(traffic(50))
    assert rollout.step(159.999) is None
    assert rollout.percents == (80, 10, 10)
    assert stepped(rollout, IntervalStats(), 160.0).result == "advanced"  # the 50 still count


def test_healthy_traffic_advances_by_step_percent_then_completes() -> None:
    rollout = controller()
    first = stepped(rollout, traffic(20), 160.0)
    assert (first.result, first.state, first.percents) == (
        "advanced",
        RolloutState.IN_PROGRESS,
        (50, 10, 40),
    )
    second = stepped(rollout, traffic(20), 220.0)
    assert second.percents == (20, 10, 70)
    # The last step moves only what is left on from.
    last = stepped(rollout, traffic(20), 280.0)
    assert (last.result, last.state, last.percents) == (
        "advanced",
        RolloutState.COMPLETED,
        (0, 10, 90),
    )
    assert rollout.steps == {"advanced": 3, "held": 0, "rolled_back": 0}
    assert rollout.step(10_000.0) is None


def test_too_few_requests_hold_and_the_next_advance_resumes() -> None:
    rollout = controller()
    held = stepped(rollout, traffic(19), 160.0)
    assert (held.result, held.state, held.percents) == ("held", RolloutState.WAITING, (80, 10, 10))
    assert rollout.state is RolloutState.WAITING
    # The interval restarted: the 19 do not count towards the next step.
    again = stepped(rollout, traffic(1), 220.0)
    assert again.result == "held"
    advanced = stepped(rollout, traffic(20), 280.0)
    assert (advanced.result, advanced.state) == ("advanced", RolloutState.IN_PROGRESS)
    assert rollout.steps == {"advanced": 1, "held": 2, "rolled_back": 0}


def test_an_error_rate_above_the_threshold_rolls_back() -> None:
    rollout = controller()
    stepped(rollout, traffic(20), 160.0)  # (50, 10, 40)
    outcome = stepped(rollout, traffic(40, errors=3), 220.0)  # 7.5 % > 5 %
    assert (outcome.result, outcome.state) == ("rolled_back", RolloutState.ROLLED_BACK)
    assert outcome.percents == (90, 10, 0)
    assert (outcome.requests, outcome.errors, outcome.error_rate) == (40, 3, 0.075)


def test_thresholds_are_strict() -> None:
    rollout = controller()
    # Exactly 5 % errors and a p99 of exactly 0.5 s: not above either threshold.
    outcome = stepped(rollout, traffic(40, errors=2, latency=0.5), 160.0)
    assert (outcome.result, outcome.error_rate, outcome.latency) == ("advanced", 0.05, 0.5)


def test_a_latency_percentile_above_the_threshold_rolls_back() -> None:
    rollout = controller()
    stats = traffic(98, latency=0.1)
    stats.merge(traffic(2, latency=0.9), Random(0))
    # p99 of 100 samples is the 99th smallest: 0.9 > 0.5.
    outcome = stepped(rollout, stats, 160.0)
    assert (outcome.result, outcome.latency) == ("rolled_back", 0.9)
    assert outcome.percents == (90, 10, 0)


def test_one_slow_request_in_a_hundred_is_within_p99() -> None:
    rollout = controller()
    stats = traffic(99, latency=0.1)
    stats.merge(traffic(1, latency=9.0), Random(0))
    outcome = stepped(rollout, stats, 160.0)
    assert (outcome.result, outcome.latency) == ("advanced", 0.1)


def test_errors_without_latency_still_count() -> None:
    rollout = controller()
    outcome = stepped(rollout, traffic(20, errors=20, latency=None), 160.0)
    assert (outcome.result, outcome.error_rate, outcome.latency) == ("rolled_back", 1.0, None)


def test_from_at_zero_completes_on_the_first_healthy_step() -> None:
    rollout = controller((0, 10, 90))
    outcome = stepped(rollout, traffic(20), 160.0)
    assert (outcome.state, outcome.percents) == (RolloutState.COMPLETED, (0, 10, 90))


def test_min_requests_zero_advances_without_traffic() -> None:
    settings = RolloutSettings(
        from_index=1,
        to_index=0,
        step_percent=10,
        step_interval=5.0,
        error_rate_threshold=0.0,
        latency_threshold=0.0,
        min_requests=0,
        latency_percentile=50.0,
    )
    rollout = RolloutController(settings, (50, 50), now=0.0)
    outcome = rollout.step(5.0)
    assert outcome is not None
    assert (outcome.result, outcome.percents, outcome.error_rate) == ("advanced", (60, 40), 0.0)


# --- schedule ---


def test_a_late_tick_does_not_bring_the_next_step_forward() -> None:
    rollout = controller()
    stepped(rollout, traffic(20), 170.0)  # 10 s late
    assert rollout.next_step == 220.0  # still on the 60 s grid
    stepped(rollout, traffic(20), 500.0)  # several intervals late
    assert rollout.next_step == 560.0  # one full interval after now, no burst of steps


# --- actions ---


def test_pause_stops_stepping_and_resume_starts_a_fresh_interval() -> None:
    rollout = controller()
    rollout.add(traffic(20))
    rollout.pause()
    assert rollout.state.label == "paused"
    rollout.pause()  # idempotent
    assert rollout.step(1_000.0) is None
    rollout.add(traffic(20))  # traffic while paused is not judged
    rollout.resume(1_000.0)
    assert rollout.state is RolloutState.IN_PROGRESS
    assert rollout.next_step == 1_060.0
    assert rollout.step(1_059.0) is None
    held = stepped(rollout, traffic(5), 1_060.0)
    assert (held.result, held.requests) == ("held", 5)


def test_resume_of_a_running_rollout_changes_nothing() -> None:
    rollout = controller()
    rollout.add(traffic(20))
    rollout.resume(130.0)
    assert (rollout.state, rollout.next_step) == (RolloutState.IN_PROGRESS, 160.0)
    assert stepped(rollout, IntervalStats(), 160.0).result == "advanced"


def test_manual_rollback_from_any_active_state() -> None:
    for prepare in ("in_progress", "waiting", "paused"):
        rollout = controller()
        stepped(rollout, traffic(20), 160.0)  # (50, 10, 40)
        if prepare == "waiting":
            stepped(rollout, IntervalStats(), 220.0)
        elif prepare == "paused":
            rollout.pause()
        rollout.rollback()
        assert (rollout.state, rollout.percents) == (RolloutState.ROLLED_BACK, (90, 10, 0))
        assert rollout.steps["rolled_back"] == 0  # an action, not a step


@pytest.mark.parametrize("finish", ["completed", "rolled back by a step", "rolled back by hand"])
def test_every_action_on_a_finished_rollout_is_invalid(finish: str) -> None:
    rollout = controller((10, 10, 80))
    if finish == "completed":
        stepped(rollout, traffic(20), 160.0)
    elif finish == "rolled back by a step":
        stepped(rollout, traffic(20, errors=20), 160.0)
    else:
        rollout.rollback()
    assert rollout.state in (RolloutState.COMPLETED, RolloutState.ROLLED_BACK)
    before = (rollout.state, rollout.percents, rollout.last)
    with pytest.raises(InvalidAction, match="cannot pause a rollout that is"):
        rollout.pause()
    with pytest.raises(InvalidAction, match="cannot resume"):
        rollout.resume(200.0)
    with pytest.raises(InvalidAction, match="cannot roll back"):
        rollout.rollback()
    rollout.add(traffic(20))
    assert rollout.step(10_000.0) is None
    assert (rollout.state, rollout.percents, rollout.last) == before


# --- visibility ---


def test_state_values_and_labels_match_the_metric() -> None:
    assert [(s.value, s.label) for s in RolloutState] == [
        (0, "in_progress"),
        (1, "waiting"),
        (2, "paused"),
        (3, "completed"),
        (4, "rolled_back"),
    ]


def test_the_log_line_carries_the_measured_values() -> None:
    rollout = controller()
    advanced = stepped(rollout, traffic(40, errors=1, latency=0.125), 160.0)
    assert advanced.message == (
        "rollout advanced: revisions[2] served 40 requests, 1 errors (error rate 0.025, "
        "threshold 0.05), p99 latency 0.125s (threshold 0.5s); moved 30%; "
        "revisions[0] 80% -> 50%, revisions[2] 10% -> 40%"
    )
    held = stepped(rollout, traffic(3, latency=None), 220.0)
    assert held.message == (
        "rollout held: revisions[2] served 3 requests, 0 errors (error rate 0, threshold "
        "0.05), p99 latency n/a (threshold 0.5s); fewer than min_requests 20; "
        "revisions[0] 50% -> 50%, revisions[2] 40% -> 40%"
    )
    stats = traffic(20, errors=5, latency=2.0)
    rolled = stepped(rollout, stats, 280.0)
    assert rolled.message == (
        "rollout rolled_back: revisions[2] served 20 requests, 5 errors (error rate 0.25, "
        "threshold 0.05), p99 latency 2s (threshold 0.5s); error rate above threshold; "
        "latency above threshold; revisions[0] 50% -> 90%, revisions[2] 40% -> 0%"
    )


def test_the_completing_step_says_so() -> None:
    outcome = stepped(controller((20, 10, 70)), traffic(20), 160.0)
    assert "moved 20%, rollout completed;" in outcome.message


def test_snapshot() -> None:
    rollout = controller()
    assert rollout.snapshot() == {
        "state": "in_progress",
        "from": 0,
        "to": 2,
        "percents": [80, 10, 10],
        "next_step": 160.0,
        "last": None,
        "steps": {"advanced": 0, "held": 0, "rolled_back": 0},
    }
    outcome = stepped(rollout, traffic(20), 160.0)
    rollout.pause()
    snapshot = rollout.snapshot()
    assert (snapshot["state"], snapshot["next_step"]) == ("paused", None)
    assert snapshot["last"] == {
        "result": "advanced",
        "state": "in_progress",
        "percents": [50, 10, 40],
        "requests": 20,
        "errors": 0,
        "error_rate": 0.0,
        "latency": 0.1,
        "message": outcome.message,
    }
    assert snapshot["steps"] == {"advanced": 1, "held": 0, "rolled_back": 0}


# --- interval statistics ---


def test_percentile_is_nearest_rank() -> None:
    stats = IntervalStats.from_wire((5, 0, 5, [5.0, 1.0, 4.0, 2.0, 3.0]))
    assert [stats.percentile(p) for p in (1, 20, 20.1, 50, 80, 99, 100)] == [
        1.0,
        1.0,
        2.0,
        3.0,
        4.0,
        5.0,
        5.0,
    ]
    assert IntervalStats().percentile(99) is None


def test_percentile_reads_the_decimal_it_prints_as() -> None:
    # 99.9 % of 1000 is rank 999 exactly; float arithmetic would round up to 1000.
    stats = IntervalStats.from_wire((1000, 0, 1000, [float(n) for n in range(1, 1001)]))
    assert stats.percentile(99.9) == 999.0


def test_reservoir_is_capped_and_exact_below_the_cap() -> None:
    stats = IntervalStats()
    rng = Random(3)
    for n in range(RESERVOIR_SIZE):
        stats.record(error=False, latency=float(n), rng=rng)
    assert stats.samples == [float(n) for n in range(RESERVOIR_SIZE)]
    stats.record(error=True, latency=1e6, rng=rng)
    assert (stats.requests, stats.errors, stats.seen) == (RESERVOIR_SIZE + 1, 1, RESERVOIR_SIZE + 1)
    assert len(stats.samples) == RESERVOIR_SIZE


def test_merge_of_small_reservoirs_is_their_union() -> None:
    ours, theirs = traffic(3, errors=1, latency=0.1), traffic(2, latency=0.2)
    ours.merge(theirs, Random(0))
    assert ours == IntervalStats(5, 1, 5, [0.1, 0.1, 0.1, 0.2, 0.2])


def test_from_wire_rejects_inconsistent_stats() -> None:
    for wire in (
        (1, 2, 0, []),  # more errors than requests
        (-1, 0, 0, []),
        (1, 0, 2, [0.1]),  # a sample missing
        (1, 0, 0, [0.1]),  # a sample too many
        (True, 0, 0, []),
    ):
        with pytest.raises(ValueError, match="interval stats"):
            IntervalStats.from_wire(wire)
    big = IntervalStats.from_wire((5000, 0, 5000, [0.0] * RESERVOIR_SIZE))
    assert (big.seen, len(big.samples)) == (5000, RESERVOIR_SIZE)
    assert IntervalStats.from_wire((2, 1, 1, [3])).samples == [3.0]


def test_a_to_revision_without_an_available_backend_is_rolled_back() -> None:
    """A canary whose backends are all unhealthy or ejected gets no traffic, so it could never
    reach min_requests: the step rolls it back instead of holding for ever."""
    settings = RolloutSettings(
        from_index=0,
        to_index=1,
        step_percent=10,
        step_interval=1.0,
        error_rate_threshold=0.05,
        latency_threshold=5.0,
        min_requests=20,
        latency_percentile=99.0,
    )
    controller = RolloutController(settings, (90, 10), now=0.0)
    failing = IntervalStats()
    for _ in range(5):
        failing.record(error=True, latency=None, rng=Random(1))
    controller.add(failing)
    outcome = controller.step(1.0, to_available=False)
    assert outcome is not None
    assert outcome.result == "rolled_back"
    assert controller.percents == (100, 0)
    assert "no available backend" in outcome.message
    # Unavailable without errors (scaled to zero while idle, one failed probe): held.
    idle = RolloutController(settings, (90, 10), now=0.0).step(1.0, to_available=False)
    assert idle is not None
    assert idle.result == "held"
