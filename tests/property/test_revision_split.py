"""Properties of the revision traffic split (SPEC §11.7, §7.2; DESIGN.md §3.7 "revision split").

Without a key: every window of W consecutive picks (W = the eligible weights' sum, 100 when all
are eligible) gives each revision exactly its weight, from any starting point, and again from
every change of availability or weights; picks are evenly interleaved (the bounds nginx's
algorithm actually meets: see ``SmoothWeightedRoundRobin``). Unavailable and zero-weight
revisions are never chosen, by either method. With a key: the choice is stable, and a rollout
between two adjacent revisions only ever moves keys from ``from`` to ``to``.
"""

from __future__ import annotations

from collections import Counter

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.scaling.revisions import RevisionSplit

MAX_REVISIONS = 6


@st.composite
def splits(draw: st.DrawFn, min_size: int = 1, max_size: int = MAX_REVISIONS) -> list[int]:
    """Integer percents (zeros allowed) summing to 100."""
    size = draw(st.integers(min_size, max_size))
    cuts = sorted(draw(st.lists(st.integers(0, 100), min_size=size - 1, max_size=size - 1)))
    return [high - low for low, high in zip([0, *cuts], [*cuts, 100], strict=True)]


@st.composite
def availabilities(draw: st.DrawFn) -> tuple[list[int], list[bool]]:
    """A split and which revisions have an available backend."""
    percents = draw(splits())
    size = len(percents)
    return percents, draw(st.lists(st.booleans(), min_size=size, max_size=size))


def make_split(percents: list[int]) -> RevisionSplit:
    return RevisionSplit([f"r{i}" for i in range(len(percents))], percents, [None] * len(percents))


def prefix_counts(picks: list[int | None], index: int) -> list[int]:
    """``counts[n]``: how many of the first ``n`` picks chose ``index``."""
    counts = [0]
    for chosen in picks:
        counts.append(counts[-1] + (chosen == index))
    return counts


def eligible_weights(percents: list[int], available: list[bool]) -> list[int]:
    return [w if ok else 0 for w, ok in zip(percents, available, strict=True)]


# --- smooth weighted round robin ---


@given(splits())
def test_every_window_of_100_picks_is_exact(percents: list[int]) -> None:
    split = make_split(percents)
    everyone = [True] * len(percents)
    picks = [split.choose(everyone) for _ in range(300)]
    for index, weight in enumerate(percents):
        counts = prefix_counts(picks, index)
        # Every window, not only those aligned on a multiple of 100: the sequence is periodic.
        assert all(counts[start + 100] - counts[start] == weight for start in range(201))


@given(st.integers(0, 100))
@example(73)  # the pair that comes closest (0.99) to a whole pick off
def test_two_revisions_are_within_one_pick_in_every_window(first: int) -> None:
    split = make_split([first, 100 - first])
    picks = [split.choose([True, True]) for _ in range(200)]
    counts = prefix_counts(picks, 0)
    # |count − k·w/100| < 1 for every window of k picks (checked over one period from each
    # start; the other revision's deviation is the negation). Scaled by 100 to stay exact.
    for start in range(100):
        for length in range(1, 101):
            taken = counts[start + length] - counts[start]
            assert abs(taken * 100 - length * first) < 100


@given(availabilities())
@example(([1, 1, 1, 1, 48, 48], [True] * 6))  # a 48 falls 1.12 picks behind
def test_prefixes_are_evenly_interleaved(case: tuple[list[int], list[bool]]) -> None:
    percents, available = case
    weights = eligible_weights(percents, available)
    total, size = sum(weights), sum(1 for w in weights if w > 0)
    if total == 0:
        return
    split = make_split(percents)
    picks = [split.choose(available) for _ in range(2 * total)]
    for index, weight in enumerate(weights):
        counts = prefix_counts(picks, index)
        for n in range(1, len(counts)):
            deviation = counts[n] * total - n * weight  # W × (count − n·w/W)
            # Never a whole pick ahead; behind by less than one pick per other revision, and
            # by less than one pick outright with up to four eligible revisions (SPEC §7.2).
            assert -max(size - 1, 1) * total < deviation < total
            if size <= 4:
                assert abs(deviation) < total


@given(availabilities(), st.lists(st.binary(max_size=16), max_size=20))
def test_unavailable_and_zero_weight_revisions_never_chosen(
    case: tuple[list[int], list[bool]], keys: list[bytes]
) -> None:
    percents, available = case
    weights = eligible_weights(percents, available)
    total = sum(weights)
    split = make_split(percents)
    if total == 0:
        assert split.choose(available) is None
        assert all(split.choose(available, affinity=key) is None for key in keys)
        return
    # The proportions among the eligible revisions are exact, cycle after cycle.
    for _ in range(2):
        counts = Counter(split.choose(available) for _ in range(total))
        assert [counts[i] for i in range(len(percents))] == weights
    for key in keys:
        chosen = split.choose(available, affinity=key)
        assert chosen is not None
        assert weights[chosen] > 0


@given(splits(min_size=2), st.data())
def test_exact_again_from_every_change(percents: list[int], data: st.DataObject) -> None:
    size = len(percents)
    split = make_split(percents)
    flags = st.lists(st.booleans(), min_size=size, max_size=size)
    available = [True] * size
    for _ in range(4):
        for _ in range(data.draw(st.integers(0, 150), label="picks before the change")):
            split.choose(available)
        if data.draw(st.booleans(), label="change weights"):
            split.set_percents(data.draw(splits(min_size=size, max_size=size)))
        else:
            available = data.draw(flags, label="availability")
        weights = eligible_weights(list(split.percents), available)
        total = sum(weights)
        if total == 0:
            assert split.choose(available) is None
            continue
        counts = Counter(split.choose(available) for _ in range(total))
        assert [counts[i] for i in range(size)] == weights


@given(splits(), st.integers(0, 250))
def test_an_unchanged_split_keeps_the_sequence(percents: list[int], prefix: int) -> None:
    everyone = [True] * len(percents)
    steady, refreshed = make_split(percents), make_split(percents)
    for _ in range(prefix):
        steady.choose(everyone)
        refreshed.choose(everyone)
    refreshed.set_percents(list(percents))  # what a tick that changed nothing does
    assert [steady.choose(everyone) for _ in range(100)] == [
        refreshed.choose(everyone) for _ in range(100)
    ]


# --- affinity ---


@st.composite
def adjacent_rollouts(draw: st.DrawFn) -> tuple[list[int], int, int, list[bool]]:
    """A split, ``from`` and ``to`` with no eligible revision between them, and availability
    (``from`` and ``to`` available; the others anything)."""
    percents = draw(splits(min_size=2))
    size = len(percents)
    source = draw(st.integers(0, size - 1))
    target = draw(st.sampled_from([i for i in range(size) if i != source]))
    available = draw(st.lists(st.booleans(), min_size=size, max_size=size))
    available[source] = available[target] = True
    for between in range(min(source, target) + 1, max(source, target)):
        if draw(st.booleans()):
            available[between] = False
        else:  # eligible-looking but zero weight: its range is empty; give its share to from
            percents[source] += percents[between]
            percents[between] = 0
    return percents, source, target, available


@given(adjacent_rollouts(), st.integers(1, 100), st.lists(st.binary(max_size=12), max_size=60))
def test_rollout_steps_only_move_keys_from_from_to_to(
    rollout: tuple[list[int], int, int, list[bool]], step: int, keys: list[bytes]
) -> None:
    percents, source, target, available = rollout
    split = make_split(percents)
    owners = {key: split.choose(available, affinity=key) for key in keys}
    live = list(percents)
    while live[source] > 0:
        moved = min(step, live[source])
        live[source] -= moved
        live[target] += moved
        split.set_percents(live)
        for key in keys:
            now = split.choose(available, affinity=key)
            assert now == owners[key] or (owners[key] == source and now == target)
            owners[key] = now
    # Completed: nobody is left on from.
    assert all(owner != source for owner in owners.values())


@given(splits(), st.binary(max_size=32), st.integers(0, 50))
def test_affinity_is_stable_and_independent_of_round_robin(
    percents: list[int], key: bytes, interleaved: int
) -> None:
    split = make_split(percents)
    everyone = [True] * len(percents)
    first = split.choose(everyone, affinity=key)
    for _ in range(interleaved):
        split.choose(everyone)
    assert split.choose(everyone, affinity=key) == first
    assert make_split(percents).choose(everyone, affinity=key) == first
