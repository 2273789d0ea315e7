"""Properties of the ``rate-limit`` token buckets (SPEC §8.6).

For generated rates, bursts and request times (sorted, with long jumps of the clock between
bursts of requests), one bucket never admits more than ``rate × t + burst`` requests in any
window of length ``t``; after any jump the tokens equal an independent replay of the rule
(``min(burst, tokens + elapsed × rate)``, minus one per admitted request); the table never holds
more than ``max_keys`` buckets, and a key evicted for another one starts full. Out-of-order times
never credit a bucket with time it has already been credited with. Float arithmetic is allowed a
tolerance of ``EPSILON`` tokens.
"""

from __future__ import annotations

from collections import OrderedDict
from itertools import accumulate

from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.middleware.ratelimit import BucketTable

#: Tokens of rounding error tolerated: time × rate stays below about 2e6 tokens, so one step
#: rounds by well under 1e-9 of a token.
EPSILON = 1e-6

rates = st.one_of(
    st.sampled_from([0.5, 1.0, 2.0, 3.0, 10.0]),
    st.floats(min_value=0.01, max_value=1000.0, allow_nan=False, allow_infinity=False),
)
bursts = st.integers(min_value=1, max_value=20)
#: Gaps between requests in tokens' worth of time (so every rate sees fractional refills):
#: often none (bursts of requests at one instant), often a fraction of a few tokens, sometimes a
#: jump of the clock far longer than a bucket needs to fill.
token_gaps = st.one_of(
    st.just(0.0),
    st.sampled_from([0.25, 0.5, 0.75, 1.0, 1.5]),
    st.floats(min_value=0.0, max_value=3.0),
    st.floats(min_value=0.0, max_value=10_000.0),
)


@st.composite
def request_times(draw: st.DrawFn, rate: float) -> list[float]:
    """Sorted request times for a bucket refilled at ``rate``."""
    start = draw(st.floats(min_value=0.0, max_value=1000.0))
    steps = draw(st.lists(token_gaps, min_size=1, max_size=80))
    return [start + tokens / rate for tokens in accumulate(steps)]


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[float, int, list[float]]:
    """A rate, a burst and sorted request times that fit the rate."""
    rate = draw(rates)
    return rate, draw(bursts), draw(request_times(rate))


@given(scenario=scenarios())
def test_no_window_admits_more_than_rate_times_length_plus_burst(
    scenario: tuple[float, int, list[float]],
) -> None:
    rate, burst, times = scenario
    table = BucketTable(rate=rate, burst=burst, max_keys=1)
    admitted = [now for now in times if table.take(b"k", now).allowed]
    for first, start in enumerate(admitted):
        for last in range(first, len(admitted)):
            count = last - first + 1
            assert count <= rate * (admitted[last] - start) + burst + EPSILON


@given(scenario=scenarios())
def test_tokens_follow_the_refill_rule_across_jumps(
    scenario: tuple[float, int, list[float]],
) -> None:
    rate, burst, times = scenario
    table = BucketTable(rate=rate, burst=burst, max_keys=1)
    tokens = float(burst)
    previous = times[0]
    for now in times:
        tokens = min(float(burst), tokens + (now - previous) * rate)
        previous = now
        decision = table.take(b"k", now)
        expected_allowed = tokens >= 1.0
        if abs(tokens - 1.0) > EPSILON:  # exactly at one token, rounding may decide either way
            assert decision.allowed is expected_allowed
        if decision.allowed:
            tokens -= 1.0
        assert abs(decision.tokens - tokens) <= EPSILON
        tokens = decision.tokens  # follow the table past a boundary decision
        assert 0.0 <= decision.tokens <= burst
        assert decision.remaining == int(decision.tokens // 1)
        assert decision.limit == burst


@given(scenario=scenarios())
def test_a_jump_longer_than_the_fill_time_leaves_a_full_bucket(
    scenario: tuple[float, int, list[float]],
) -> None:
    rate, burst, times = scenario
    table = BucketTable(rate=rate, burst=burst, max_keys=1)
    for now in times:
        table.take(b"k", now)
    later = times[-1] + burst / rate + 1.0
    decision = table.take(b"k", later)
    assert decision.allowed
    assert decision.tokens == burst - 1


@given(
    rate=rates,
    burst=bursts,
    times=st.lists(st.floats(min_value=0.0, max_value=10_000.0), min_size=1, max_size=60),
)
def test_out_of_order_times_never_credit_time_twice(
    rate: float, burst: int, times: list[float]
) -> None:
    table = BucketTable(rate=rate, burst=burst, max_keys=1)
    admitted = sum(table.take(b"k", now).allowed for now in times)
    # Every token came from the full start or from the clock moving past its latest value.
    assert admitted <= burst + rate * (max(times) - times[0]) + EPSILON
    assert 0.0 <= (table.tokens(b"k") or 0.0) <= burst


@given(
    max_keys=st.integers(min_value=1, max_value=6),
    burst=bursts,
    requests=st.lists(
        st.tuples(st.integers(min_value=0, max_value=9), st.floats(0.0, 1.0)),
        min_size=1,
        max_size=120,
    ),
)
def test_lru_bound_and_evicted_keys_start_full(
    max_keys: int, burst: int, requests: list[tuple[int, float]]
) -> None:
    # A very slow rate keeps refills far below one token, so a full bucket shows an eviction.
    table = BucketTable(rate=1e-9, burst=burst, max_keys=max_keys)
    model: OrderedDict[bytes, None] = OrderedDict()
    now = 0.0
    for number, gap in requests:
        now += gap
        key = str(number).encode()
        was_kept = key in model
        assert (key in table) is was_kept
        before = table.tokens(key)
        decision = table.take(key, now)
        if not was_kept:
            assert before is None
            assert decision.allowed
            assert decision.tokens == burst - 1  # a new or evicted key starts full
            if len(model) == max_keys:
                model.popitem(last=False)
        model[key] = None
        model.move_to_end(key)
        assert len(table) == len(model) <= max_keys
        assert all(kept in table for kept in model)
