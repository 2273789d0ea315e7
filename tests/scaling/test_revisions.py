"""The revision split (SPEC §11.7): header and tag lookup, the affinity ranges and their hash,
the smooth round robin's order, exclusion, and the validation of splits. The properties (exact
windows, interleaving, monotone affinity) are in tests/property/test_revision_split.py."""

from __future__ import annotations

import hashlib

import pytest

from a3s_gateway.scaling.revisions import RevisionSplit, affinity_hash

EVERYONE = [True, True, True]


def three() -> RevisionSplit:
    return RevisionSplit(["stable", "canary", "next"], [60, 30, 10], [None, "beta", "next"])


# --- revision_header ---


def test_header_names_a_revision_by_name_or_tag() -> None:
    split = three()
    assert split.by_header(b"stable") == 0
    assert split.by_header(b"canary") == 1
    assert split.by_header(b"beta") == 1
    assert split.by_header(b"next") == 2  # a tag may repeat its own revision's name


def test_header_lookup_is_exact_and_case_sensitive() -> None:
    split = three()
    for value in (b"Stable", b"BETA", b" stable", b"stable ", b"stab", b"stable2", b""):
        assert split.by_header(value) is None


def test_a_name_wins_over_another_revisions_tag() -> None:
    # Config validation rejects this (a tag that is another revision's name); the split stays
    # predictable anyway: a name always means its own revision.
    split = RevisionSplit(["a", "b"], [50, 50], ["b", None])
    assert split.by_header(b"b") == 1


def test_header_lookup_ignores_the_split() -> None:
    # A rolled-back canary is still reachable by header (SPEC §11.7 step 1 comes first);
    # whether its pool has an available backend is the caller's check.
    split = RevisionSplit(["stable", "canary"], [100, 0], [None, "beta"])
    assert split.by_header(b"beta") == 1


# --- smooth weighted round robin ---


def test_round_robin_interleaves_three_to_one_as_nginx_does() -> None:
    split = RevisionSplit(["a", "b"], [75, 25], [None, None])
    picks = [split.choose([True, True]) for _ in range(8)]
    assert picks == [0, 0, 1, 0, 0, 0, 1, 0]


def test_round_robin_alternates_an_even_split() -> None:
    split = RevisionSplit(["a", "b"], [50, 50], [None, None])
    assert [split.choose([True, True]) for _ in range(6)] == [0, 1, 0, 1, 0, 1]


def test_round_robin_gives_exact_percentages_per_hundred() -> None:
    split = three()
    picks = [split.choose(EVERYONE) for _ in range(100)]
    assert [picks.count(i) for i in range(3)] == [60, 30, 10]


def test_unavailable_revisions_are_excluded_and_the_rest_renormalised() -> None:
    split = three()
    picks = [split.choose([True, False, True]) for _ in range(70)]
    assert [picks.count(i) for i in range(3)] == [60, 0, 10]


def test_no_eligible_revision_means_the_fallback_pool() -> None:
    split = RevisionSplit(["stable", "canary"], [100, 0], [None, None])
    assert split.choose([False, True]) is None  # the canary is available but has weight 0
    assert split.choose([False, True], affinity=b"client") is None
    assert split.choose([False, False]) is None


def test_a_rolled_back_canary_gets_no_traffic() -> None:
    split = RevisionSplit(["stable", "canary"], [80, 20], [None, None])
    split.set_percents([100, 0])
    assert {split.choose([True, True]) for _ in range(200)} == {0}
    assert {split.choose([True, True], affinity=bytes([n])) for n in range(256)} == {0}


def test_a_weight_change_restarts_the_sequence() -> None:
    split = RevisionSplit(["a", "b"], [50, 50], [None, None])
    split.choose([True, True])  # a; b is now due
    split.set_percents([75, 25])
    assert [split.choose([True, True]) for _ in range(4)] == [0, 0, 1, 0]


def test_an_availability_change_restarts_the_sequence() -> None:
    split = RevisionSplit(["a", "b", "c"], [50, 25, 25], [None, None, None])
    for _ in range(3):
        split.choose(EVERYONE)
    split.choose([True, False, True])
    assert [split.choose([True, False, True]) for _ in range(3)] == [2, 0, 0]
    # Back to everyone: a fresh cycle of 100.
    picks = [split.choose(EVERYONE) for _ in range(100)]
    assert [picks.count(i) for i in range(3)] == [50, 25, 25]


# --- affinity ---


def test_the_affinity_hash_is_64_bit_blake2b() -> None:
    digest = hashlib.blake2b(b"alice", digest_size=8).digest()
    assert affinity_hash(b"alice") == int.from_bytes(digest, "big")
    assert 0 <= affinity_hash(b"") < 2**64


@pytest.mark.parametrize(
    ("key", "owner"),
    [
        # Points h / 2⁶⁴ · 100: alice 30.44, bob 45.68, carol 66.16, dave 2.27, "" 89.32.
        (b"alice", 0),
        (b"bob", 0),
        (b"carol", 1),
        (b"dave", 0),
        (b"", 1),
    ],
)
def test_affinity_ranges_follow_list_order(key: bytes, owner: int) -> None:
    # stable [0, 60), canary [60, 90), next [90, 100).
    split = three()
    assert split.choose(EVERYONE, affinity=key) == owner


def test_affinity_ranges_are_renormalised_over_available_revisions() -> None:
    # Without canary: stable [0, 60·100/70 = 85.7), next [85.7, 100): "" (89.32) moves to next;
    # carol (66.16) moves from canary to stable.
    split = three()
    available = [True, False, True]
    assert split.choose(available, affinity=b"") == 2
    assert split.choose(available, affinity=b"carol") == 0
    assert split.choose(available, affinity=b"alice") == 0


def test_affinity_matches_the_float_formula_away_from_boundaries() -> None:
    split = three()
    for n in range(500):
        key = f"client-{n}".encode()
        point = affinity_hash(key) / 2**64 * 100
        if min(abs(point - 60), abs(point - 90)) < 1e-9:
            continue
        expected = 0 if point < 60 else 1 if point < 90 else 2
        assert split.choose(EVERYONE, affinity=key) == expected


def test_affinity_does_not_disturb_the_round_robin() -> None:
    split = RevisionSplit(["a", "b"], [75, 25], [None, None])
    picks = []
    for n in range(8):
        split.choose([True, True], affinity=str(n).encode())
        picks.append(split.choose([True, True]))
    assert picks == [0, 0, 1, 0, 0, 0, 1, 0]


# --- validation ---


def test_percents_are_live_and_validated() -> None:
    split = three()
    assert split.percents == (60, 30, 10)
    split.set_percents([50, 40, 10])
    assert split.percents == (50, 40, 10)
    for bad in ([50, 40], [50, 40, 20], [110, -10, 0], [50, 40, 9], [50.0, 40, 10], [True, 89, 10]):
        with pytest.raises(ValueError, match="percent"):
            split.set_percents(bad)  # type: ignore[arg-type]
    assert split.percents == (50, 40, 10)


def test_construction_checks_lengths_and_names() -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        RevisionSplit(["a", "b"], [50, 40], [None, None])
    with pytest.raises(ValueError, match="tags"):
        RevisionSplit(["a", "b"], [50, 50], [None])
    with pytest.raises(ValueError, match="unique"):
        RevisionSplit(["a", "a"], [50, 50], [None, None])
    split = RevisionSplit(["a", "b"], [50, 50], [None, "x"])
    assert split.names == ("a", "b")
    assert split.tags == (None, "x")


def test_choose_needs_one_flag_per_revision() -> None:
    with pytest.raises(ValueError, match="availability"):
        three().choose([True, True])
