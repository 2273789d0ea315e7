"""Passive health (SPEC §7.5): one test per row of the state table, plus the inputs
(``is_error``), the settings (``from_config``, ``tick_interval``), the max-ejection cap, late and
missing ticks, and reload (``adopt``). Time is a number passed in: no sleeps, no clock."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest

from a3s_gateway.config.schema_services import PassiveHealth
from a3s_gateway.config.values import Duration, ServerUrl
from a3s_gateway.services import Backend
from a3s_gateway.services.passive import (
    OutlierDetector,
    PassiveSettings,
    PassiveState,
    Transition,
)

HEALTHY, EJECTED, PROBATION = PassiveState.HEALTHY, PassiveState.EJECTED, PassiveState.PROBATION

SETTINGS = PassiveSettings(
    error_threshold=3,
    window=10.0,
    recovery_time=30.0,
    max_recovery_time=300.0,
    max_ejection_percent=50,
    error_statuses=frozenset({500, 502, 503, 504}),
    error_grpc_statuses=frozenset({14}),
)


def pool(*weights: int, base: int = 0) -> list[Backend]:
    return [
        Backend(ServerUrl(f"http://10.0.0.{base + i}:8080"), weight, i)
        for i, weight in enumerate(weights or (1,))
    ]


def detector(
    backends: list[Backend] | None = None, **changes: Any
) -> tuple[OutlierDetector, list[Backend]]:
    backends = pool(1, 1, 1, 1) if backends is None else backends
    settings = replace(SETTINGS, **changes)
    return OutlierDetector(backends, settings), backends


def errors(outliers: OutlierDetector, backend: Backend, *times: float) -> list[Transition | None]:
    return [outliers.record(backend, error=True, now=t) for t in times]


def eject(outliers: OutlierDetector, backend: Backend, now: float) -> Transition:
    """Errors at ``now`` until the backend is ejected: threshold errors at one instant when
    healthy, one error in probation."""
    count = 1 if outliers.state(backend) is PROBATION else outliers.settings.error_threshold
    *before, last = errors(outliers, backend, *[now] * count)
    assert before == [None] * len(before)
    assert last is not None
    assert last.new is EJECTED
    return last


# --- settings and inputs ---


def test_from_config_defaults() -> None:
    settings = PassiveSettings.from_config(PassiveHealth())
    assert settings == PassiveSettings(
        error_threshold=5,
        window=30.0,
        recovery_time=30.0,
        max_recovery_time=300.0,
        max_ejection_percent=50,
        error_statuses=frozenset({500, 502, 503, 504}),
        error_grpc_statuses=frozenset({14}),
    )
    assert settings.tick_interval == 5.0


def test_from_config_reads_every_field() -> None:
    block = PassiveHealth(
        error_threshold=2,
        window=Duration("1500ms"),
        error_status_codes=(429, 503, 503),
        error_grpc_status_codes=(4, 14),
        recovery_time=Duration("2s"),
        max_recovery_time=Duration("10s"),
        max_ejection_percent=100,
    )
    settings = PassiveSettings.from_config(block)
    assert (settings.error_threshold, settings.window) == (2, 1.5)
    assert (settings.recovery_time, settings.max_recovery_time) == (2.0, 10.0)
    assert settings.max_ejection_percent == 100
    assert settings.error_statuses == {429, 503}
    assert settings.error_grpc_statuses == {4, 14}


@pytest.mark.parametrize(
    ("recovery", "interval"), [(0.001, 1.0), (1.0, 1.0), (3.5, 3.5), (5.0, 5.0), (30.0, 5.0)]
)
def test_tick_interval_is_recovery_time_clamped_to_1_5_seconds(
    recovery: float, interval: float
) -> None:
    settings = replace(SETTINGS, recovery_time=recovery)
    assert settings.tick_interval == interval


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("error_threshold", 0),
        ("window", 0.0),
        ("window", math.nan),
        ("recovery_time", -1.0),
        ("max_recovery_time", math.inf),
        ("max_recovery_time", 29.0),
        ("max_ejection_percent", 0),
        ("max_ejection_percent", 101),
    ],
)
def test_settings_reject_values_the_schema_rejects(field: str, value: Any) -> None:
    with pytest.raises(ValueError, match=field):
        replace(SETTINGS, **{field: value})


def test_ejection_time_grows_linearly_up_to_the_cap() -> None:
    assert [SETTINGS.ejection_time(m) for m in (1, 2, 9, 10, 11, 50)] == [
        30.0,
        60.0,
        270.0,
        300.0,
        300.0,
        300.0,
    ]


@pytest.mark.parametrize(
    ("status", "grpc_status", "error"),
    [
        (200, None, False),
        (404, None, False),
        (500, None, True),
        (502, None, True),  # connection refused / reset / invalid response
        (504, None, True),  # timeouts
        (501, None, False),
        (200, 14, True),  # gRPC UNAVAILABLE in a 200 response
        (200, 2, False),
        (200, 0, False),
        (503, 0, True),
    ],
)
def test_is_error(status: int, grpc_status: int | None, error: bool) -> None:
    outliers, _ = detector()
    assert outliers.is_error(status, grpc_status) is error


def test_is_error_follows_the_configured_lists() -> None:
    outliers, _ = detector(error_statuses=frozenset({429}), error_grpc_statuses=frozenset())
    assert outliers.is_error(429)
    assert not outliers.is_error(502)  # a transport failure counts only if 502 is listed
    assert not outliers.is_error(200, 14)


# --- healthy ---


def test_constructor_starts_every_backend_healthy_and_clears_the_flag() -> None:
    backends = pool(1, 1)
    backends[0].passive_ejected = True
    outliers = OutlierDetector(backends, SETTINGS)
    assert [outliers.state(b) for b in backends] == [HEALTHY, HEALTHY]
    assert not backends[0].passive_ejected
    assert outliers.ejected_until(backends[0]) is None
    assert outliers.next_readmission is None
    assert outliers.skipped_ejections == 0


def test_healthy_error_below_threshold_is_recorded_only() -> None:
    outliers, (a, *_) = detector()
    assert errors(outliers, a, 1.0, 2.0) == [None, None]
    assert outliers.state(a) is HEALTHY
    assert a.available


def test_healthy_errors_reaching_threshold_within_window_eject() -> None:
    outliers, (a, *_) = detector()
    *_, change = errors(outliers, a, 1.0, 5.0, 11.0)  # 11 − 10 = 1: the first one still counts
    assert change == Transition(a, HEALTHY, EJECTED, ejected_until=41.0, multiplier=1)
    assert outliers.state(a) is EJECTED
    assert outliers.ejected_until(a) == 41.0
    assert outliers.multiplier(a) == 1
    assert a.passive_ejected
    assert not a.available
    assert outliers.next_readmission == 41.0


def test_records_older_than_the_window_are_dropped() -> None:
    outliers, (a, *_) = detector()
    assert errors(outliers, a, 0.0, 5.0, 10.5, 15.1) == [None] * 4  # never three within 10 s
    assert outliers.state(a) is HEALTHY
    assert outliers.record(a, error=True, now=15.2) is not None  # 10.5, 15.1, 15.2


def test_a_record_exactly_window_old_still_counts() -> None:
    outliers, (a, *_) = detector(error_threshold=2)
    assert errors(outliers, a, 0.0, 10.0)[-1] is not None


def test_healthy_success_changes_nothing() -> None:
    outliers, (a, *_) = detector()
    errors(outliers, a, 1.0, 2.0)
    for t in (2.5, 3.0, 4.0):
        assert outliers.record(a, error=False, now=t) is None
    # errors are counted in the window, not consecutively: successes do not reset them
    assert outliers.record(a, error=True, now=5.0) is not None


def test_threshold_one_ejects_on_the_first_error() -> None:
    outliers, (a, *_) = detector(error_threshold=1)
    assert outliers.record(a, error=True, now=0.0) is not None


# --- the max-ejection cap ---


def test_cap_refuses_ejections_beyond_the_percentage() -> None:
    outliers, (a, b, c, d) = detector()  # 50 % of 4: two may be ejected
    eject(outliers, a, 0.0)
    eject(outliers, b, 0.0)
    assert errors(outliers, c, 0.0, 0.0, 0.0) == [None] * 3
    assert outliers.state(c) is HEALTHY
    assert outliers.skipped_ejections == 1
    # the records stay: every further error in the window tries again
    assert outliers.record(c, error=True, now=1.0) is None
    assert outliers.skipped_ejections == 2
    assert [x.passive_ejected for x in (a, b, c, d)] == [True, True, False, False]


def test_cap_makes_room_once_an_ejected_backend_is_readmitted() -> None:
    outliers, (a, b, c, _) = detector()
    eject(outliers, a, 0.0)
    eject(outliers, b, 0.0)
    errors(outliers, c, 1.0, 1.0, 1.0)
    assert outliers.readmit(a, now=2.0) is not None
    assert outliers.record(c, error=True, now=2.0) is not None


@pytest.mark.parametrize(("size", "percent"), [(1, 1), (2, 1), (3, 10), (10, 9)])
def test_at_least_one_backend_may_always_be_ejected(size: int, percent: int) -> None:
    outliers, backends = detector(pool(*[1] * size), max_ejection_percent=percent)
    eject(outliers, backends[0], 0.0)
    if size > 1:
        errors(outliers, backends[1], 0.0, 0.0, 0.0)
        assert outliers.state(backends[1]) is HEALTHY
        assert outliers.skipped_ejections == 1


def test_hundred_percent_may_eject_the_whole_pool() -> None:
    outliers, backends = detector(pool(1, 1, 1), max_ejection_percent=100)
    for backend in backends:
        eject(outliers, backend, 0.0)
    assert not any(b.available for b in backends)


def test_weight_zero_backends_are_outside_the_cap() -> None:
    # Pool = the two weight-positive backends; 50 % of 2 is one ejection.
    outliers, (drained, a, b) = detector(pool(0, 1, 1))
    eject(outliers, drained, 0.0)  # costs no capacity, refused never
    eject(outliers, a, 0.0)  # still the first weight-positive ejection
    errors(outliers, b, 0.0, 0.0, 0.0)
    assert outliers.state(b) is HEALTHY
    assert outliers.skipped_ejections == 1


def test_probation_backends_do_not_count_as_ejected() -> None:
    outliers, (a, b, *_) = detector(pool(1, 1), max_ejection_percent=50)
    eject(outliers, a, 0.0)
    outliers.tick(30.0)
    assert outliers.state(a) is PROBATION
    eject(outliers, b, 30.0)


# --- ejected ---


def test_ejected_becomes_probation_when_ejected_until_is_reached() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 1.0)
    assert outliers.tick(30.999) == []
    assert outliers.state(a) is EJECTED
    assert outliers.tick(31.0) == [Transition(a, EJECTED, PROBATION, None, 1)]
    assert outliers.state(a) is PROBATION
    assert not a.passive_ejected
    assert a.available
    assert outliers.ejected_until(a) is None
    assert outliers.next_readmission is None


def test_late_tick_readmits_and_probation_runs_from_the_tick() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    assert outliers.tick(1000.0)[0].new is PROBATION  # no traffic, no ticks for ages
    assert outliers.tick(1009.0) == []  # a whole window of availability first
    assert outliers.tick(1010.0) == [Transition(a, PROBATION, HEALTHY, None, 1)]


def test_active_success_readmits_before_ejected_until() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    assert outliers.readmit(a, 5.0) == Transition(a, EJECTED, PROBATION, None, 1)
    assert outliers.state(a) is PROBATION
    assert a.available


def test_readmit_leaves_other_states_alone() -> None:
    outliers, (a, b, *_) = detector()
    assert outliers.readmit(a, 0.0) is None
    eject(outliers, b, 0.0)
    outliers.readmit(b, 1.0)
    assert outliers.readmit(b, 2.0) is None
    assert outliers.state(b) is PROBATION


def test_results_on_an_ejected_backend_are_ignored() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    assert errors(outliers, a, 1.0, 2.0, 3.0) == [None] * 3
    assert outliers.ejected_until(a) == 30.0
    # once due, the call readmits it but still ignores the stale result
    assert outliers.record(a, error=True, now=30.0) == Transition(a, EJECTED, PROBATION, None, 1)


def test_ejection_clears_the_records() -> None:
    # Only observable at the window's edge: readmitted at once, healthy exactly a window after
    # the ejection, when the errors that ejected it would still (just) be in the window.
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    outliers.readmit(a, 0.0)
    assert outliers.record(a, error=True, now=10.0) == Transition(a, PROBATION, HEALTHY, None, 1)
    assert outliers.record(a, error=True, now=10.0) is None  # needs three fresh errors
    assert outliers.record(a, error=True, now=10.0) is not None


def test_ejection_time_is_capped_by_max_recovery_time() -> None:
    outliers, (a, *_) = detector(max_recovery_time=50.0)
    eject(outliers, a, 0.0)
    now = 0.0
    expected = [30.0, 50.0, 50.0]
    for duration in expected:
        until = outliers.ejected_until(a)
        assert until is not None
        assert until - now == duration
        now = until
        outliers.tick(now)
        outliers.record(a, error=True, now=now)  # probation error: eject again
    assert outliers.multiplier(a) == 4


# --- probation ---


def test_probation_error_ejects_again_with_the_grown_multiplier() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    outliers.tick(30.0)
    change = outliers.record(a, error=True, now=35.0)
    assert change == Transition(a, PROBATION, EJECTED, ejected_until=95.0, multiplier=2)
    assert a.passive_ejected


def test_probation_success_changes_nothing() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    outliers.tick(30.0)
    assert outliers.record(a, error=False, now=31.0) is None
    assert outliers.state(a) is PROBATION


def test_probation_becomes_healthy_after_a_window_without_error() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    outliers.tick(30.0)
    assert outliers.tick(39.9) == []
    assert outliers.tick(40.0) == [Transition(a, PROBATION, HEALTHY, None, 1)]


def test_record_promotes_an_overdue_probation_before_counting() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    outliers.tick(30.0)
    # no tick since: at 45 the probation ended at 40, so this is a first healthy error
    assert outliers.record(a, error=True, now=45.0) == Transition(a, PROBATION, HEALTHY, None, 1)
    assert outliers.state(a) is HEALTHY


def test_refused_probation_ejection_stays_in_probation_and_restarts_the_window() -> None:
    outliers, (a, b) = detector(pool(1, 1), max_ejection_percent=50)
    eject(outliers, a, 0.0)
    outliers.tick(30.0)
    eject(outliers, b, 31.0)
    assert outliers.record(a, error=True, now=35.0) is None
    assert outliers.skipped_ejections == 1
    assert outliers.state(a) is PROBATION
    assert outliers.multiplier(a) == 1
    assert outliers.tick(44.0) == []  # 35 + 10 is the earliest promotion
    assert outliers.tick(45.0) == [Transition(a, PROBATION, HEALTHY, None, 1)]


# --- multiplier decay ---


def test_each_full_healthy_window_decays_the_multiplier() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)  # m = 1, until 30
    outliers.tick(30.0)
    eject(outliers, a, 30.0)  # probation error: m = 2, until 90
    outliers.tick(90.0)
    eject(outliers, a, 90.0)  # m = 3, until 180
    outliers.tick(180.0)
    outliers.tick(190.0)  # healthy from 190
    assert outliers.multiplier(a) == 3
    outliers.tick(199.0)
    assert outliers.multiplier(a) == 3
    outliers.tick(200.0)
    assert outliers.multiplier(a) == 2
    change = eject(outliers, a, 205.0)  # m = 3 again: 205 + 90
    assert (change.multiplier, change.ejected_until) == (3, 295.0)


def test_decay_catches_up_after_a_long_gap_and_stops_at_zero() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    outliers.tick(30.0)
    eject(outliers, a, 30.0)  # m = 2
    outliers.tick(90.0)
    # no tick until 1000: probation ended at 100, then 90 full windows healthy took m to 0
    first, second, third = errors(outliers, a, 1000.0, 1000.0, 1000.0)
    assert first == Transition(a, PROBATION, HEALTHY, None, multiplier=0)
    assert second is None
    assert third == Transition(a, HEALTHY, EJECTED, ejected_until=1030.0, multiplier=1)


def test_decay_needs_whole_windows_counted_from_becoming_healthy() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 0.0)
    outliers.tick(30.0)
    eject(outliers, a, 30.0)  # m = 2
    outliers.tick(90.0)  # probation until 100
    outliers.tick(105.0)  # healthy since 100
    outliers.tick(109.9)
    assert outliers.multiplier(a) == 2
    outliers.tick(110.0)
    assert outliers.multiplier(a) == 1
    outliers.tick(119.9)
    assert outliers.multiplier(a) == 1
    outliers.tick(120.0)
    assert outliers.multiplier(a) == 0


# --- robustness ---


def test_tick_is_robust_to_time_going_backwards_and_bad_numbers() -> None:
    outliers, (a, *_) = detector()
    eject(outliers, a, 100.0)
    for now in (50.0, math.nan, -math.inf, math.inf, 0.0):
        assert outliers.tick(now) == []
    assert outliers.state(a) is EJECTED
    assert outliers.tick(130.0)[0].new is PROBATION


def test_an_error_at_a_past_time_counts_at_the_latest_time() -> None:
    outliers, (a, *_) = detector()
    errors(outliers, a, 100.0, 100.0)
    assert outliers.record(a, error=True, now=0.0) is not None
    assert outliers.ejected_until(a) == 130.0


def test_unknown_backend_is_a_value_error() -> None:
    outliers, _ = detector()
    (stranger,) = pool(1, base=99)
    with pytest.raises(ValueError, match="not in this detector's pool"):
        outliers.record(stranger, error=True, now=0.0)
    with pytest.raises(ValueError, match="not in this detector's pool"):
        outliers.state(stranger)


def test_next_readmission_is_the_earliest_ejection_end() -> None:
    outliers, (a, b, *_) = detector()
    eject(outliers, a, 0.0)
    eject(outliers, b, 10.0)
    assert outliers.next_readmission == 30.0
    outliers.tick(30.0)
    assert outliers.next_readmission == 40.0
    outliers.readmit(b, 31.0)
    assert outliers.next_readmission is None


# --- reload ---


def test_adopt_keeps_state_per_url_when_settings_are_equal() -> None:
    old, (a, b, c, _) = detector()
    eject(old, a, 0.0)
    eject(old, b, 0.0)
    old.tick(30.0)  # both in probation, m = 1
    eject(old, b, 31.0)  # m = 2, until 91
    errors(old, c, 31.0, 31.0)

    # c and the fourth backend stay, b is dropped, a new backend (.7) arrives
    old_urls = [a.url, b.url, c.url]
    new_backends = [Backend(ServerUrl(u.text), 1, i) for i, u in enumerate(old_urls)]
    new_backends[1] = Backend(ServerUrl("http://10.0.0.7:8080"), 1, 1)
    new_backends.append(Backend(ServerUrl(b.url.text), 1, 3))  # b moved to the end
    new = OutlierDetector(new_backends, SETTINGS)
    new.adopt(old)
    na, fresh, nc, nb = new_backends

    assert new.state(na) is PROBATION
    assert new.state(fresh) is HEALTHY
    assert new.state(nb) is EJECTED
    assert new.ejected_until(nb) == 91.0
    assert new.multiplier(nb) == 2
    assert nb.passive_ejected
    assert not na.passive_ejected
    assert new.next_readmission == 91.0
    # c's two records came along: one more error within the window ejects it
    assert new.record(nc, error=True, now=32.0) is not None
    # the old generation is untouched
    assert old.state(c) is HEALTHY


def test_adopt_does_nothing_when_settings_changed() -> None:
    old, (a, *_) = detector()
    eject(old, a, 0.0)
    new_a = Backend(ServerUrl(a.url.text))
    new = OutlierDetector([new_a], replace(SETTINGS, window=20.0))
    new.adopt(old)
    assert new.state(new_a) is HEALTHY
    assert not new_a.passive_ejected


def test_adopt_keeps_time_monotonic() -> None:
    old, (a, *_) = detector()
    eject(old, a, 100.0)
    new_a = Backend(ServerUrl(a.url.text))
    new = OutlierDetector([new_a], SETTINGS)
    new.adopt(old)
    assert new.tick(0.0) == []  # read as 100: no earlier than the old generation's clock
    assert new.tick(130.0)[0].new is PROBATION
