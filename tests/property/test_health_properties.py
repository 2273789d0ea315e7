"""Properties of active health (SPEC §7.4 "Thresholds", §3.10 ``expected_status``).

The threshold machine flips a backend only after the configured number of consecutive opposite
results, checked against a naive reference that looks at the tail of the whole result history;
``parse_expected_status`` round-trips generated range lists, its membership matches a naive
reference, and it accepts exactly the texts the config validator accepts.
"""

from __future__ import annotations

import itertools

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.config.semantic_services import _valid_status_list
from a3s_gateway.config.values import ServerUrl
from a3s_gateway.services.backend import Backend
from a3s_gateway.services.health import ActiveHealth, parse_expected_status

thresholds = st.integers(min_value=1, max_value=6)
results = st.lists(st.booleans(), max_size=80)
codes = st.integers(min_value=100, max_value=599)
ranges = st.lists(
    st.tuples(codes, codes).map(lambda pair: (min(pair), max(pair))), min_size=1, max_size=8
)
blanks = st.sampled_from(["", " ", "  ", "\t"])


def reference_health(
    initial: bool, history: list[bool], healthy_at: int, unhealthy_at: int
) -> bool:
    """Health after ``history``, from the definition: flip when the last N results (N the
    threshold for the current state) are all the opposite outcome."""
    health = initial
    for end in range(1, len(history) + 1):
        need = unhealthy_at if health else healthy_at
        tail = history[max(0, end - need) : end]
        if len(tail) == need and all(result is not health for result in tail):
            health = not health
    return health


@given(thresholds, thresholds, st.booleans(), results)
@example(1, 1, True, [False, True, False])
@example(2, 3, True, [False, False, True, False, False, False, True, True])
def test_machine_matches_the_reference(
    healthy_at: int, unhealthy_at: int, initial: bool, history: list[bool]
) -> None:
    backend = Backend(ServerUrl("http://10.0.0.1:80"), active_healthy=initial)
    state = ActiveHealth(backend, healthy_threshold=healthy_at, unhealthy_threshold=unhealthy_at)
    before = initial
    for index, success in enumerate(history):
        flipped = state.record(success)
        after = reference_health(initial, history[: index + 1], healthy_at, unhealthy_at)
        assert backend.active_healthy is after
        assert flipped == (after if after is not before else None)
        successes, failures = state.streak
        assert (successes == 0) if not success else (failures == 0)  # opposite streak reset
        before = after


@given(thresholds, thresholds, st.integers(min_value=0, max_value=5))
def test_healthy_to_unhealthy_after_exactly_the_threshold(
    healthy_at: int, unhealthy_at: int, noise: int
) -> None:
    """From healthy, after any mix of results that left it healthy, exactly ``unhealthy_at``
    consecutive failures flip it, and not one fewer."""
    backend = Backend(ServerUrl("http://10.0.0.1:80"))
    state = ActiveHealth(backend, healthy_at, unhealthy_at)
    for _ in range(noise):  # streaks of failures cut short by a success never count
        for _ in range(unhealthy_at - 1):
            assert state.record(False) is None
        assert state.record(True) is None
    for _ in range(unhealthy_at - 1):
        assert state.record(False) is None
        assert backend.active_healthy
    assert state.record(False) is False
    assert not backend.active_healthy


@given(thresholds, thresholds, st.integers(min_value=0, max_value=5))
def test_unhealthy_to_healthy_after_exactly_the_threshold(
    healthy_at: int, unhealthy_at: int, noise: int
) -> None:
    backend = Backend(ServerUrl("http://10.0.0.1:80"), active_healthy=False)
    state = ActiveHealth(backend, healthy_at, unhealthy_at)
    for _ in range(noise):
        for _ in range(healthy_at - 1):
            assert state.record(True) is None
        assert state.record(False) is None
    for _ in range(healthy_at - 1):
        assert state.record(True) is None
        assert not backend.active_healthy
    assert state.record(True) is True
    assert backend.active_healthy


def render(items: list[tuple[int, int]], spaces: list[str]) -> str:
    parts = []
    for index, (low, high) in enumerate(items):
        pad = spaces[index % len(spaces)]
        item = str(low) if low == high and index % 2 == 0 else f"{low}{pad}-{pad}{high}"
        parts.append(f"{pad}{item}{pad}")
    return ",".join(parts)


@given(ranges, st.lists(blanks, min_size=1, max_size=4))
@example([(200, 299)], [""])
@example([(200, 200), (201, 201)], [" "])
def test_expected_status_round_trips_and_matches_reference(
    items: list[tuple[int, int]], spaces: list[str]
) -> None:
    parsed = parse_expected_status(render(items, spaces))
    for code in range(90, 610):
        assert (code in parsed) == any(low <= code <= high for low, high in items)
    assert parse_expected_status(str(parsed)) == parsed
    # canonical: sorted, disjoint and not adjacent, each range in order
    bounds = parsed.ranges
    assert all(low <= high for low, high in bounds)
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(bounds))


@given(st.text(alphabet="0123456789-, \t", max_size=24))
@example("200-299,301")
@example("600")
@example("299-200")
@example(" ")
def test_parser_accepts_exactly_what_the_validator_accepts(text: str) -> None:
    try:
        parse_expected_status(text)
    except ValueError:
        accepted = False
    else:
        accepted = True
    assert accepted is _valid_status_list(text)
