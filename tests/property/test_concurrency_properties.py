"""Properties of the concurrency recorder and the fleet sum (SPEC §11.2): a constant level
averages to itself, a half-second request adds half to one bucket, the buckets preserve the
integral of the level, memory stays bounded, and the fleet sums fresh sources only.

Times are whole milliseconds, so the reference integral is exact (``Fraction``) and the
recorder's floats are compared with a small tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.scaling.concurrency import Averages, ConcurrencyRecorder, FleetConcurrency

TOLERANCE = 1e-9

starts = st.integers(0, 10_000_000).map(lambda ms: ms / 1000)
windows = st.integers(1, 90)


@dataclass(frozen=True)
class Event:
    """``delta`` applied ``after_ms`` milliseconds after the previous event."""

    after_ms: int
    delta: int


events = st.lists(
    st.builds(Event, st.integers(0, 2500), st.integers(-3, 3)), min_size=0, max_size=40
)


def close(left: float, right: float) -> bool:
    return math.isclose(left, right, rel_tol=TOLERANCE, abs_tol=TOLERANCE)


def reference_buckets(start_ms: int, steps: list[Event], end_ms: int) -> list[Fraction]:
    """Every complete bucket between the recorder's first whole second and ``end_ms``, from
    the level clamped at zero as the recorder does."""
    first = -(-start_ms // 1000)  # the first second boundary at or after the start
    last = end_ms // 1000
    values = [Fraction(0)] * max(0, last - first)
    changes: list[tuple[int, int]] = []
    level, at = 0, start_ms
    for step in steps:
        at += step.after_ms
        level = max(0, level + step.delta)
        changes.append((at, level))
    level, since = 0, start_ms
    for at, new in [*changes, (end_ms, 0)]:
        _integrate(values, first, level, since, at)
        level, since = new, at
    return values


def _integrate(values: list[Fraction], first: int, level: int, begin: int, end: int) -> None:
    """Add ``level`` held from ``begin`` to ``end`` (ms) to the buckets it overlaps."""
    low_second = max(0, begin // 1000 - first)
    high_second = min(len(values), -(-end // 1000) - first)
    for second in range(low_second, high_second):
        low, high = max(begin, (first + second) * 1000), min(end, (first + second + 1) * 1000)
        if high > low:
            values[second] += Fraction(level * (high - low), 1000)


@given(start=starts, level=st.integers(0, 1000), stable=windows, panic=windows, span=windows)
def test_a_constant_level_averages_to_itself(
    start: float, level: int, stable: int, panic: int, span: int
) -> None:
    concurrency = ConcurrencyRecorder(start, stable_window=stable, panic_window=panic)
    concurrency.add(start, level)
    averages = concurrency.averages(math.ceil(start) + span)
    assert averages is not None
    assert close(averages.stable, level)
    assert close(averages.panic, level)
    assert averages.buckets == min(span, stable)


@given(start=starts, second=st.integers(1, 50), offset_ms=st.integers(0, 500))
def test_a_request_active_half_a_second_adds_half_to_one_bucket(
    start: float, second: int, offset_ms: int
) -> None:
    concurrency = ConcurrencyRecorder(start, stable_window=200, panic_window=1)
    boundary = math.ceil(start) + second
    concurrency.add(boundary + offset_ms / 1000, 1)
    concurrency.add(boundary + (offset_ms + 500) / 1000, -1)
    averages = concurrency.averages(boundary + 3)
    buckets = concurrency.buckets
    assert len(buckets) == second + 3
    assert close(buckets[second], 0.5)
    assert all(value == 0 for at, value in enumerate(buckets) if at != second)
    assert averages is not None
    assert close(averages.stable * averages.buckets, 0.5)


@given(start_ms=st.integers(0, 10_000_000), steps=events, tail_ms=st.integers(0, 5000))
def test_buckets_preserve_the_integral_of_the_level(
    start_ms: int, steps: list[Event], tail_ms: int
) -> None:
    concurrency = ConcurrencyRecorder(start_ms / 1000, stable_window=1000, panic_window=1)
    at = start_ms
    for step in steps:
        at += step.after_ms
        concurrency.add(at / 1000, step.delta)
        assert concurrency.level >= 0
    end_ms = at + tail_ms
    averages = concurrency.averages(end_ms / 1000)
    expected = reference_buckets(start_ms, steps, end_ms)
    assert len(concurrency.buckets) == len(expected)
    assert all(
        close(got, float(want)) for got, want in zip(concurrency.buckets, expected, strict=True)
    )
    if expected:
        assert averages is not None
        assert close(averages.stable * averages.buckets, float(sum(expected)))
    else:
        assert averages is None


@given(
    start_ms=st.integers(0, 10_000_000),
    steps=st.lists(st.builds(Event, st.integers(0, 100_000), st.integers(-3, 3)), max_size=30),
    stable=st.integers(1, 12),
    panic=st.integers(1, 12),
)
def test_memory_is_bounded_by_the_window_and_holds_the_newest_buckets(
    start_ms: int, steps: list[Event], stable: int, panic: int
) -> None:
    concurrency = ConcurrencyRecorder(start_ms / 1000, stable_window=stable, panic_window=panic)
    at = start_ms
    for step in steps:
        at += step.after_ms
        concurrency.add(at / 1000, step.delta)
        assert len(concurrency.buckets) <= max(stable, panic)
    concurrency.averages(at / 1000 + 1)
    kept = concurrency.buckets
    expected = reference_buckets(start_ms, steps, at + 1000)[-max(stable, panic) :]
    assert len(kept) == len(expected)
    assert all(close(got, float(want)) for got, want in zip(kept, expected, strict=True))


reports = st.lists(
    st.tuples(
        st.integers(0, 5),
        st.integers(0, 20_000).map(lambda ms: ms / 1000),
        st.builds(
            Averages,
            st.floats(0, 1000, allow_nan=False),
            st.floats(0, 1000, allow_nan=False),
            st.integers(1, 60),
        ),
    ),
    max_size=30,
)


@given(reports=reports, stale_after=st.floats(0.5, 5.0), asked=st.integers(0, 25_000))
def test_the_fleet_sums_the_latest_fresh_report_of_each_source(
    reports: list[tuple[int, float, Averages]], stale_after: float, asked: int
) -> None:
    fleet = FleetConcurrency(stale_after=stale_after)
    latest: dict[int, tuple[float, Averages]] = {}
    for source, at, averages in sorted(reports, key=lambda report: report[1]):
        fleet.report(source, at, averages)
        latest[source] = (at, averages)
    now = asked / 1000
    fresh = [averages for at, averages in latest.values() if now - at <= stale_after]
    total = fleet.total(now)
    if not fresh:
        assert total is None
        return
    assert total is not None
    assert close(total.stable, math.fsum(each.stable for each in fresh))
    assert close(total.panic, math.fsum(each.panic for each in fresh))
    assert total.buckets == max(each.buckets for each in fresh)
