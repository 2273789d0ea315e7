"""Properties of the rollout controller and its interval statistics (SPEC §11.8).

The controller is run against a small model through random interleavings of traffic, ticks and
management actions: the split always sums to 100, only ``from`` and ``to`` ever change, every
step's verdict follows the hold / roll back / advance rules, a paused rollout never steps, and
``completed`` / ``rolled_back`` are final. The latency reservoir holds ``min(seen, 2048)``
samples drawn from what was offered, all of them (so exact percentiles) while fewer, and stays
uniform when recorded into and when merged across workers.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction
from random import Random

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from a3s_gateway.scaling.rollout import (
    RESERVOIR_SIZE,
    IntervalStats,
    InvalidAction,
    RolloutController,
    RolloutSettings,
    RolloutState,
)

seeds = st.integers(0, 2**32 - 1)


def nearest_rank(values: list[float], percentile: Fraction) -> float:
    """The smallest value with at least ``percentile`` % of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(percentile * len(ordered) / 100))
    return ordered[rank - 1]


# --- the controller against a model ---


@dataclass(frozen=True)
class Scenario:
    percents: list[int]
    source: int
    target: int
    step_percent: int
    interval: int  # seconds
    min_requests: int
    error_percent: int  # the threshold, in percent
    latency_ms: int  # the threshold
    percentile_tenths: int  # latency_percentile × 10
    seed: int

    def settings(self) -> RolloutSettings:
        return RolloutSettings(
            from_index=self.source,
            to_index=self.target,
            step_percent=self.step_percent,
            step_interval=float(self.interval),
            error_rate_threshold=self.error_percent / 100,
            latency_threshold=self.latency_ms / 1000,
            min_requests=self.min_requests,
            latency_percentile=self.percentile_tenths / 10,
        )


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    size = draw(st.integers(2, 5))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=size - 1, max_size=size - 1)))
    percents = [high - low for low, high in zip([0, *cuts], [*cuts, 100], strict=True)]
    source = draw(st.integers(0, size - 1))
    target = draw(st.sampled_from([i for i in range(size) if i != source]))
    return Scenario(
        percents=percents,
        source=source,
        target=target,
        step_percent=draw(st.integers(1, 40) | st.integers(1, 100)),
        interval=draw(st.integers(1, 5)),
        min_requests=draw(st.integers(0, 6)),
        error_percent=draw(st.integers(0, 100)),
        latency_ms=draw(st.integers(0, 3000)),
        percentile_tenths=draw(st.integers(500, 1000)),
        seed=draw(seeds),
    )


FINISHED = (RolloutState.COMPLETED, RolloutState.ROLLED_BACK)


class RolloutMachine(RuleBasedStateMachine):
    """Traffic, ticks and actions in any order, checked step by step against the rules."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.requests = self.errors = 0
        self.latencies: list[int] = []
        self.verdicts: Counter[str] = Counter()

    @initialize(scenario=scenarios())
    def start(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.rng = Random(scenario.seed)
        self.controller = RolloutController(
            scenario.settings(), scenario.percents, now=self.now, rng=Random(scenario.seed)
        )
        self.split = list(scenario.percents)
        self.state = RolloutState.IN_PROGRESS
        self.next_step = float(scenario.interval)

    def stepping(self) -> bool:
        return self.state not in (*FINISHED, RolloutState.PAUSED)

    def reset_interval(self) -> None:
        self.requests = self.errors = 0
        self.latencies = []

    @rule(
        count=st.integers(0, 10),
        failing=st.integers(0, 3),
        slowest=st.integers(0, 2500),
        workers=st.integers(1, 3),
    )
    def traffic(self, count: int, failing: int, slowest: int, workers: int) -> None:
        # ``count`` requests spread over ``workers``; the first ``failing`` are errors (the very
        # first a transport failure, without a latency); latencies (ms) up to ``slowest``.
        stats = [IntervalStats() for _ in range(workers)]
        latencies: list[int] = []
        for position in range(count):
            latency = None if position == 0 and failing else self.rng.randint(0, slowest)
            if latency is not None:
                latencies.append(latency)
            seconds = None if latency is None else latency / 1000
            error = position < failing
            stats[position % workers].record(error=error, latency=seconds, rng=self.rng)
        for worker in stats:
            self.controller.add(worker)
        if self.stepping():
            self.requests += count
            self.errors += min(failing, count)
            self.latencies += latencies

    def expected_verdict(self) -> str:
        scenario = self.scenario
        if self.requests < scenario.min_requests:
            return "held"
        too_many_errors = self.errors * 100 > scenario.error_percent * self.requests
        percentile = Fraction(scenario.percentile_tenths, 10)
        slow = bool(self.latencies) and (
            nearest_rank([float(x) for x in self.latencies], percentile) > scenario.latency_ms
        )
        return "rolled_back" if too_many_errors or slow else "advanced"

    def apply(self, verdict: str) -> None:
        source, target = self.scenario.source, self.scenario.target
        if verdict == "held":
            self.state = RolloutState.WAITING
        elif verdict == "rolled_back":
            self.split[source] += self.split[target]
            self.split[target] = 0
            self.state = RolloutState.ROLLED_BACK
        else:
            moved = min(self.scenario.step_percent, self.split[source])
            self.split[source] -= moved
            self.split[target] += moved
            done = self.split[source] == 0
            self.state = RolloutState.COMPLETED if done else RolloutState.IN_PROGRESS

    @rule(late=st.integers(-4, 12))
    def tick(self, late: int) -> None:
        # Time moves to ``late`` half-seconds after the step the model expects (never back):
        # mostly due or late ticks, sometimes early ones.
        self.now = max(self.now, self.next_step + late / 2)
        outcome = self.controller.step(self.now)
        if not self.stepping() or self.now < self.next_step:
            assert outcome is None
            return
        assert outcome is not None
        verdict = self.expected_verdict()
        assert (outcome.result, outcome.requests, outcome.errors) == (
            verdict,
            self.requests,
            self.errors,
        )
        self.apply(verdict)
        self.verdicts[verdict] += 1
        event(f"step {verdict} -> {self.state.label}")
        assert outcome.state is self.state
        assert list(outcome.percents) == self.split
        self.next_step += self.scenario.interval
        if self.next_step <= self.now:
            self.next_step = self.now + self.scenario.interval
        assert self.controller.next_step == self.next_step
        self.reset_interval()

    @rule(action=st.sampled_from(("pause", "resume", "rollback")))
    def control(self, action: str) -> None:
        # One rule for the three actions, so a manual roll back does not end most runs early.
        if self.state in FINISHED:
            with pytest.raises(InvalidAction):
                self.act(action)
            return
        self.act(action)
        if action == "pause":
            self.state = RolloutState.PAUSED
        elif action == "rollback":
            self.apply("rolled_back")
        elif self.state is RolloutState.PAUSED:
            self.state = RolloutState.IN_PROGRESS
            self.next_step = self.now + self.scenario.interval
            self.reset_interval()

    def act(self, action: str) -> None:
        if action == "pause":
            self.controller.pause()
        elif action == "resume":
            self.controller.resume(self.now)
        else:
            self.controller.rollback()

    @invariant()
    def split_follows_the_model(self) -> None:
        percents = self.controller.percents
        assert sum(percents) == 100
        assert all(0 <= p <= 100 for p in percents)
        assert list(percents) == self.split
        untouched = {self.scenario.source, self.scenario.target}
        for index, (now, configured) in enumerate(
            zip(percents, self.scenario.percents, strict=True)
        ):
            assert index in untouched or now == configured

    @invariant()
    def state_follows_the_model(self) -> None:
        assert self.controller.state is self.state
        assert self.controller.steps == {
            result: self.verdicts[result] for result in ("advanced", "held", "rolled_back")
        }


# Twenty actions reach completion or roll back in most runs; more only slow the suite down.
RolloutMachine.TestCase.settings = settings(stateful_step_count=25)
TestRollout = RolloutMachine.TestCase


def interval(requests: int, latency_ms: int) -> IntervalStats:
    stats = IntervalStats()
    for _ in range(requests):
        stats.record(error=False, latency=latency_ms / 1000, rng=Random(0))
    return stats


@given(scenarios())
def test_healthy_traffic_completes_after_ceil_from_over_step_steps(scenario: Scenario) -> None:
    controller = RolloutController(scenario.settings(), scenario.percents, now=0.0)
    source, target = scenario.source, scenario.target
    steps = max(1, math.ceil(scenario.percents[source] / scenario.step_percent))
    now = 0.0
    for taken in range(1, steps + 1):
        # Latency 0 is never strictly above a threshold, and there are no errors.
        controller.add(interval(scenario.min_requests, 0))
        now += scenario.interval
        outcome = controller.step(now)
        assert outcome is not None
        assert outcome.result == "advanced"
        assert (outcome.state is RolloutState.COMPLETED) == (taken == steps)
    expected = list(scenario.percents)
    expected[target] += expected[source]
    expected[source] = 0
    assert list(controller.percents) == expected
    assert controller.steps == {"advanced": steps, "held": 0, "rolled_back": 0}
    assert controller.step(now + 1000 * scenario.interval) is None
    for action in (controller.pause, controller.rollback, lambda: controller.resume(now)):
        with pytest.raises(InvalidAction):
            action()
    assert list(controller.percents) == expected


@given(scenarios(), st.integers(0, 3))
def test_one_slow_interval_rolls_back_whatever_the_progress(
    scenario: Scenario, healthy: int
) -> None:
    controller = RolloutController(scenario.settings(), scenario.percents, now=0.0)
    now = 0.0
    for _ in range(healthy):
        if controller.state is RolloutState.COMPLETED:
            return
        controller.add(interval(scenario.min_requests, 0))
        now += scenario.interval
        assert controller.step(now) is not None
    if controller.state is RolloutState.COMPLETED:
        return
    before = controller.percents
    # Every latency 1 ms above the threshold: any percentile is strictly above it.
    controller.add(interval(max(scenario.min_requests, 1), scenario.latency_ms + 1))
    outcome = controller.step(now + scenario.interval)
    assert outcome is not None
    assert (outcome.result, outcome.state) == ("rolled_back", RolloutState.ROLLED_BACK)
    assert outcome.percents[scenario.target] == 0
    total = before[scenario.source] + before[scenario.target]
    assert outcome.percents[scenario.source] == total
    assert controller.step(now + 1000 * scenario.interval) is None


# --- the latency reservoir ---


@given(st.integers(0, 3 * RESERVOIR_SIZE), seeds)
def test_record_keeps_min_seen_samples_of_what_was_offered(count: int, seed: int) -> None:
    stats = IntervalStats()
    rng = Random(seed)
    for value in range(count):
        stats.record(error=value % 7 == 0, latency=float(value), rng=rng)
    assert (stats.requests, stats.seen) == (count, count)
    assert stats.errors == len(range(0, count, 7))
    assert len(stats.samples) == min(count, RESERVOIR_SIZE)
    assert len(set(stats.samples)) == len(stats.samples)
    assert all(0 <= x < count and x.is_integer() for x in stats.samples)
    if count <= RESERVOIR_SIZE:
        assert stats.samples == [float(v) for v in range(count)]


@given(st.lists(st.integers(0, 1500), min_size=1, max_size=4), seeds, st.integers(500, 1000))
def test_merge_keeps_a_bounded_sample_of_the_union(
    sizes: list[int], seed: int, tenths: int
) -> None:
    rng = Random(seed)
    parts, offered = [], []
    for worker, size in enumerate(sizes):
        stats = IntervalStats()
        values = [float(worker * 10_000 + i) for i in range(size)]
        for value in values:
            stats.record(error=False, latency=value, rng=rng)
        stats.record(error=True, latency=None, rng=rng)  # a request without a latency
        parts.append(stats)
        offered += values
    merged = IntervalStats()
    for part in parts:
        merged.merge(part, rng)
    assert (merged.requests, merged.errors) == (sum(sizes) + len(sizes), len(sizes))
    assert merged.seen == len(offered)
    assert len(merged.samples) == min(len(offered), RESERVOIR_SIZE)
    assert Counter(merged.samples) <= Counter(offered)  # drawn from the union, no repeats
    percentile = tenths / 10
    if len(offered) <= RESERVOIR_SIZE:
        assert sorted(merged.samples) == sorted(offered)
        expected = nearest_rank(offered, Fraction(tenths, 10)) if offered else None
        assert merged.percentile(percentile) == expected


def six_sigma(draws: int, population: int, share: Fraction) -> tuple[float, float]:
    """Hypergeometric mean and six-standard-deviation bound of how many of ``draws`` (without
    replacement, from ``population``) fall in a part holding ``share`` of it."""
    p = float(share)
    variance = draws * p * (1 - p) * (population - draws) / max(population - 1, 1)
    return draws * p, 6 * math.sqrt(variance) + 1


@given(st.integers(RESERVOIR_SIZE, 40_000), st.integers(RESERVOIR_SIZE, 40_000), seeds)
def test_merge_draws_from_each_side_by_its_seen_count(ours: int, theirs: int, seed: int) -> None:
    zeros = IntervalStats.from_wire((ours, 0, ours, [0.0] * RESERVOIR_SIZE))
    ones = IntervalStats.from_wire((theirs, 0, theirs, [1.0] * RESERVOIR_SIZE))
    zeros.merge(ones, Random(seed))
    mean, bound = six_sigma(RESERVOIR_SIZE, ours + theirs, Fraction(theirs, ours + theirs))
    assert abs(sum(zeros.samples) - mean) <= bound


@given(st.integers(2, 3), seeds)
def test_record_samples_every_part_of_the_interval_alike(multiple: int, seed: int) -> None:
    count = multiple * RESERVOIR_SIZE
    stats = IntervalStats()
    rng = Random(seed)
    for value in range(count):
        stats.record(error=False, latency=float(value), rng=rng)
    early = sum(1 for x in stats.samples if x < count // multiple)
    mean, bound = six_sigma(RESERVOIR_SIZE, count, Fraction(1, multiple))
    assert abs(early - mean) <= bound


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=50), st.integers(1, 1000))
def test_percentile_is_the_nearest_rank(values: list[float], tenths: int) -> None:
    stats = IntervalStats.from_wire((len(values), 0, len(values), values))
    chosen = stats.percentile(tenths / 10)
    assert chosen in values
    wanted = Fraction(tenths, 10) * len(values)
    assert sum(1 for x in values if x <= chosen) * 100 >= wanted
    assert sum(1 for x in values if x < chosen) * 100 < wanted


@given(
    st.integers(0, 50),
    st.integers(0, 50),
    st.lists(st.floats(0, 10, allow_nan=False), max_size=RESERVOIR_SIZE // 64),
)
def test_wire_round_trip(requests: int, errors: int, samples: list[float]) -> None:
    stats = IntervalStats(max(requests, errors), errors, len(samples), samples)
    assert IntervalStats.from_wire(stats.to_wire()) == stats
