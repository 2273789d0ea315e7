"""The concurrency recorder and the fleet sum (SPEC §11.2): buckets, windows, the dropped
first bucket, idle seconds, retuning, clamping, and stale sources."""

from __future__ import annotations

import pytest

from a3s_gateway.scaling.concurrency import (
    Averages,
    ConcurrencyRecorder,
    FleetConcurrency,
    whole_seconds,
)


def recorder(now: float = 100.0, stable: float = 60, panic: float = 6) -> ConcurrencyRecorder:
    return ConcurrencyRecorder(now, stable_window=stable, panic_window=panic)


def test_no_complete_bucket_means_no_averages() -> None:
    concurrency = recorder()
    concurrency.add(100.2, 3)
    assert concurrency.averages(100.2) is None
    assert concurrency.averages(100.999) is None
    averages = concurrency.averages(101.0)  # the recorder saw the whole of second 100
    assert averages is not None
    assert averages.stable == averages.panic == pytest.approx(0.8 * 3)
    assert averages.buckets == 1


def test_the_bucket_the_recorder_was_born_in_is_dropped() -> None:
    concurrency = recorder(100.5)
    concurrency.add(100.5, 2)
    assert concurrency.averages(101.0) is None
    assert concurrency.averages(102.0) == Averages(stable=2.0, panic=2.0, buckets=1)
    assert concurrency.buckets == (2.0,)


def test_a_request_active_for_half_a_second_adds_half_to_its_bucket() -> None:
    concurrency = recorder()
    concurrency.add(100.25, 1)
    concurrency.add(100.75, -1)
    averages = concurrency.averages(102.0)
    assert concurrency.buckets == (0.5, 0.0)
    assert averages == Averages(stable=0.25, panic=0.25, buckets=2)


def test_a_request_across_a_boundary_splits_between_buckets() -> None:
    concurrency = recorder()
    concurrency.add(100.75, 1)
    concurrency.add(101.5, -1)
    concurrency.averages(102.0)
    assert concurrency.buckets == (0.25, 0.5)


def test_idle_seconds_hold_the_level() -> None:
    concurrency = recorder()
    concurrency.add(100.0, 4)
    averages = concurrency.averages(110.0)
    assert concurrency.buckets == (4.0,) * 10
    assert averages == Averages(stable=4.0, panic=4.0, buckets=10)
    assert concurrency.level == 4


def test_stable_and_panic_average_their_own_windows() -> None:
    concurrency = recorder(stable=4, panic=2)
    for second, level in enumerate([1, 2, 3, 4, 5, 6]):
        concurrency.add(100.0 + second, level - concurrency.level)
    averages = concurrency.averages(106.0)
    assert concurrency.buckets == (3.0, 4.0, 5.0, 6.0)  # at most the stable window kept
    assert averages == Averages(stable=4.5, panic=5.5, buckets=4)


def test_a_young_recorder_averages_the_buckets_it_has() -> None:
    concurrency = recorder(stable=60, panic=6)
    concurrency.add(100.0, 2)
    concurrency.add(102.0, 2)
    assert concurrency.averages(103.0) == Averages(stable=8 / 3, panic=8 / 3, buckets=3)


def test_a_long_idle_gap_keeps_memory_bounded() -> None:
    concurrency = recorder(stable=5, panic=2)
    concurrency.add(100.3, 1)
    concurrency.averages(1e9)
    assert concurrency.buckets == (1.0,) * 5


def test_the_level_never_goes_below_zero() -> None:
    concurrency = recorder()
    concurrency.add(100.0, -1)
    assert concurrency.level == 0
    concurrency.add(100.5, 1)
    assert concurrency.level == 1
    concurrency.averages(101.0)
    assert concurrency.buckets == (0.5,)


def test_time_never_runs_backwards() -> None:
    concurrency = recorder()
    concurrency.add(100.5, 1)
    concurrency.add(100.2, 1)  # read as 100.5
    concurrency.add(float("nan"), 1)  # read as 100.5
    assert concurrency.averages(float("inf")) is None
    assert concurrency.averages(101.0) == Averages(stable=1.5, panic=1.5, buckets=1)
    assert concurrency.averages(99.0) == Averages(stable=1.5, panic=1.5, buckets=1)


def test_retune_keeps_the_newest_buckets() -> None:
    concurrency = recorder(stable=10, panic=2)
    for second in range(6):
        concurrency.add(100.0 + second, 1)
    concurrency.averages(106.0)
    assert list(concurrency.buckets) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    concurrency.retune(stable_window=3, panic_window=1)
    assert list(concurrency.buckets) == [4.0, 5.0, 6.0]
    assert concurrency.averages(106.0) == Averages(stable=5.0, panic=6.0, buckets=3)
    concurrency.retune(stable_window=5, panic_window=2)
    assert concurrency.averages(108.0) == Averages(stable=5.4, panic=6.0, buckets=5)
    assert list(concurrency.buckets) == [4.0, 5.0, 6.0, 6.0, 6.0]


def test_windows_round_to_whole_seconds_at_least_one() -> None:
    assert [whole_seconds(value) for value in (0.0, 0.4, 0.5, 1.49, 2.5, 6.0)] == [1, 1, 1, 1, 3, 6]
    with pytest.raises(ValueError, match="finite"):
        whole_seconds(float("inf"))


def test_fleet_sums_its_sources() -> None:
    fleet = FleetConcurrency()
    assert fleet.total(10.0) is None
    fleet.report(1, 10.0, Averages(stable=2.0, panic=3.0, buckets=60))
    fleet.report(2, 10.5, Averages(stable=1.5, panic=0.5, buckets=4))
    assert fleet.total(11.0) == Averages(stable=3.5, panic=3.5, buckets=60)
    fleet.report(2, 11.0, Averages(stable=1.0, panic=1.0, buckets=5))
    assert fleet.total(11.0) == Averages(stable=3.0, panic=4.0, buckets=60)


def test_fleet_drops_stale_and_forgotten_sources() -> None:
    fleet = FleetConcurrency(stale_after=3.0)
    fleet.report(1, 10.0, Averages(stable=2.0, panic=3.0, buckets=60))
    fleet.report(2, 12.0, Averages(stable=1.0, panic=1.0, buckets=5))
    assert fleet.total(13.0) == Averages(stable=3.0, panic=4.0, buckets=60)  # 3 s old: fresh
    assert fleet.total(13.5) == Averages(stable=1.0, panic=1.0, buckets=5)
    fleet.forget(2)
    fleet.forget(7)
    assert fleet.total(13.5) is None
    fleet.report(1, 14.0, Averages(stable=2.0, panic=2.0, buckets=60))
    assert fleet.total(14.0) == Averages(stable=2.0, panic=2.0, buckets=60)
    assert fleet.total(20.0) is None  # all silent: no decision on missing data


def test_fleet_ignores_a_report_older_than_the_one_it_has() -> None:
    fleet = FleetConcurrency()
    fleet.report(1, 10.0, Averages(stable=2.0, panic=2.0, buckets=3))
    fleet.report(1, 9.0, Averages(stable=9.0, panic=9.0, buckets=3))
    assert fleet.total(10.0) == Averages(stable=2.0, panic=2.0, buckets=3)
