"""Properties of the DNS provider's schedule (SPEC §10.4, ``providers.dns.next_delay``): the next
query comes when the TTL runs out, never sooner than 1 s and never later than
``refresh_interval_secs``; after failures it backs off from 1 s, doubling, up to the same
ceiling, whatever the TTL of an older answer said."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.providers.dns import MIN_DELAY, next_delay

ttls = st.none() | st.integers(min_value=0, max_value=2**31 - 1)
refreshes = st.integers(min_value=1, max_value=86_400)
failure_counts = st.integers(min_value=0, max_value=10_000)


@given(ttls, failure_counts, refreshes)
@example(None, 10_000, 1)
@example(0, 0, 1)
def test_the_delay_is_between_the_floor_and_the_ceiling(
    ttl: int | None, failures: int, refresh: int
) -> None:
    assert MIN_DELAY <= next_delay(ttl, failures, refresh) <= max(MIN_DELAY, refresh)


@given(st.integers(min_value=0, max_value=2**31 - 1), refreshes)
def test_after_an_answer_the_ttl_is_the_delay_clamped_to_the_floor_and_ceiling(
    ttl: int, refresh: int
) -> None:
    delay = next_delay(ttl, 0, refresh)
    if MIN_DELAY <= ttl <= refresh:
        assert delay == ttl
    elif ttl < MIN_DELAY:
        assert delay == MIN_DELAY
    else:
        assert delay == refresh


@given(refreshes)
def test_an_answer_without_a_ttl_waits_the_refresh_interval(refresh: int) -> None:
    assert next_delay(None, 0, refresh) == refresh


@given(ttls, ttls, st.integers(min_value=1, max_value=10_000), refreshes)
def test_after_failures_the_ttl_no_longer_counts(
    ttl: int | None, other: int | None, failures: int, refresh: int
) -> None:
    assert next_delay(ttl, failures, refresh) == next_delay(other, failures, refresh)


@given(failure_counts, refreshes)
@example(62, 86_400)
def test_the_backoff_starts_at_1_s_doubles_and_stops_at_the_ceiling(
    failures: int, refresh: int
) -> None:
    assert next_delay(None, 1, refresh) == MIN_DELAY  # refresh_interval_secs is >= 1
    this, following = (
        next_delay(None, failures + 1, refresh),
        next_delay(None, failures + 2, refresh),
    )
    assert this <= following <= 2 * this
    assert following == 2 * this or following == refresh
    # enough failures always reach the ceiling (1 s · 2^17 is past a day)
    assert next_delay(None, 18, refresh) == refresh
