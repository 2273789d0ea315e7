"""Properties of backend selection (SPEC §7.2, §7.3; DESIGN.md §3.7 "Balancers").

Smooth weighted round robin is exact per cycle and smooth in every prefix; the random strategies
converge to the weights (seeded, so deterministic); no strategy ever picks an unavailable or
excluded backend; rendezvous hashing moves only the keys of a removed or added backend; the
in-flight counters return to 0 after any interleaving of leases, errors and cancellations; and
panic mode (SPEC §7.1) starts strictly below its threshold, spreads picks over every
weight-positive backend by weight, never picks a drained one, and changes nothing while every
backend is available.
"""

from __future__ import annotations

import math
from collections import Counter
from fractions import Fraction
from random import Random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
)

from a3s_gateway.services import (
    Backend,
    ConsistentHash,
    Lease,
    LeastConnections,
    PowerOfTwoChoices,
    SmoothWeightedRoundRobin,
    WeightedRandom,
    make_balancer,
)
from a3s_gateway.services.balancer import panic_mode
from tests.property.strategies_services import (
    MAX_POOL,
    BackendSpec,
    hash_keys,
    in_flight_counts,
    make_pool,
    pool_specs,
    positive_weights,
    realise,
    seeds,
    server_url,
    strategy_names,
)

# --- smooth weighted round robin ---


@given(positive_weights())
def test_swrr_every_cycle_is_exact(weights: list[int]) -> None:
    backends = make_pool(weights)
    balancer = SmoothWeightedRoundRobin(backends)
    total = sum(weights)
    for _ in range(3):
        counts = Counter(balancer.pick() for _ in range(total))
        assert [counts[b] for b in backends] == weights


def swrr_deviations(weights: list[int], picks: int) -> list[list[int]]:
    """After each of ``picks`` picks: count·W − n·w per backend (W times the deviation)."""
    backends = make_pool(weights)
    balancer = SmoothWeightedRoundRobin(backends)
    total = sum(weights)
    counts = dict.fromkeys(backends, 0)
    rows = []
    for n in range(1, picks + 1):
        chosen = balancer.pick()
        assert chosen is not None
        counts[chosen] += 1
        rows.append([counts[b] * total - n * b.weight for b in backends])
    return rows


@given(positive_weights(max_size=4))
def test_swrr_every_prefix_is_within_one_up_to_four_backends(weights: list[int]) -> None:
    # |count − n·w/W| ≤ 1 (SPEC §7.2), multiplied through by W to stay in integers.
    total = sum(weights)
    for row in swrr_deviations(weights, 2 * total):
        assert all(abs(deviation) <= total for deviation in row)


@given(positive_weights())
@example([1, 1, 1, 1, 7, 7])  # the last backend falls 1.06 picks behind after 13 picks
def test_swrr_is_never_a_whole_pick_ahead(weights: list[int]) -> None:
    # Ahead: strictly under 1 in any pool. Behind: SPEC §7.2's "within 1" does not hold for
    # nginx's algorithm beyond four backends (see SmoothWeightedRoundRobin), so only the bound
    # that follows from Σcurrent = 0 and current > −W is asserted here: under k − 1 picks.
    total, size = sum(weights), len(weights)
    for row in swrr_deviations(weights, 2 * total):
        assert all(-(size - 1) * total <= deviation < total for deviation in row)


@given(pool_specs(min_size=1))
def test_swrr_cycle_is_exact_over_the_available_subset(specs: list[BackendSpec]) -> None:
    backends, excluded = realise(specs)
    balancer = SmoothWeightedRoundRobin(backends)
    total = sum(b.weight for b, s in zip(backends, specs, strict=True) if s.eligible)
    counts = Counter(balancer.pick(exclude=excluded) for _ in range(total))
    for backend, spec in zip(backends, specs, strict=True):
        assert counts[backend] == (backend.weight if spec.eligible else 0)


# --- convergence of the random strategies ---

PICKS = 4000
#: The share-convergence properties make PICKS picks per example (the bulk of this file's time
#: under coverage): a quarter of the profile's examples covers the weight vectors well enough.
STATISTICAL = settings(max_examples=max(settings().max_examples // 4, 10))


def assert_shares_follow_weights(counts: Counter[Backend | None], backends: list[Backend]) -> None:
    total = sum(b.weight for b in backends)
    for backend in backends:
        expected = backend.weight / total
        # Six standard deviations plus a little slack: loose, and deterministic anyway.
        bound = 6 * math.sqrt(expected * (1 - expected) / PICKS) + 0.005
        assert abs(counts[backend] / PICKS - expected) <= bound


@STATISTICAL
@given(positive_weights(min_size=2, max_size=5), seeds())
def test_random_shares_converge(weights: list[int], seed: int) -> None:
    backends = make_pool(weights)
    balancer = WeightedRandom(backends, rng=Random(seed))
    assert_shares_follow_weights(Counter(balancer.pick() for _ in range(PICKS)), backends)


@STATISTICAL
@given(positive_weights(min_size=2, max_size=5), seeds())
def test_p2c_shares_converge_when_idle(weights: list[int], seed: int) -> None:
    # With equal (zero) load the first pick always wins, so shares follow the weights.
    backends = make_pool(weights)
    balancer = PowerOfTwoChoices(backends, rng=Random(seed))
    assert_shares_follow_weights(Counter(balancer.pick() for _ in range(PICKS)), backends)


# --- load-aware strategies ---


def load_below(one: Backend, other: Backend) -> bool:
    """``one`` carries strictly less in-flight per unit of weight than ``other``."""
    return one.in_flight * other.weight < other.in_flight * one.weight


def preload(backends: list[Backend], counts: list[int]) -> None:
    for backend, count in zip(backends, counts, strict=False):
        for _ in range(count):
            backend.lease()


@given(pool_specs(min_size=1), in_flight_counts(), seeds())
def test_p2c_never_picks_the_unique_most_loaded(
    specs: list[BackendSpec], flights: list[int], seed: int
) -> None:
    backends, excluded = realise(specs)
    preload(backends, flights)
    eligible = [b for b, s in zip(backends, specs, strict=True) if s.eligible]
    balancer = PowerOfTwoChoices(backends, rng=Random(seed))
    for _ in range(20):
        chosen = balancer.pick(exclude=excluded)
        assert chosen is not None or not eligible
        if chosen is not None and len(eligible) > 1:
            assert not all(load_below(b, chosen) for b in eligible if b is not chosen)


@given(pool_specs(min_size=1), in_flight_counts())
def test_least_connections_picks_a_least_loaded(
    specs: list[BackendSpec], flights: list[int]
) -> None:
    backends, excluded = realise(specs)
    preload(backends, flights)
    eligible = [b for b, s in zip(backends, specs, strict=True) if s.eligible]
    balancer = LeastConnections(backends)
    for _ in range(10):
        chosen = balancer.pick(exclude=excluded)
        if chosen is None:
            assert not eligible
            return
        assert not any(load_below(b, chosen) for b in eligible)


@given(pool_specs(min_size=1))
def test_least_connections_rotates_through_every_tied_backend(specs: list[BackendSpec]) -> None:
    backends, excluded = realise(specs)
    eligible = {b for b, s in zip(backends, specs, strict=True) if s.eligible}
    balancer = LeastConnections(backends)
    picks = [balancer.pick(exclude=excluded) for _ in range(2 * len(eligible))]
    if eligible:
        assert set(picks[: len(eligible)]) == eligible
        assert picks[: len(eligible)] == picks[len(eligible) :]


# --- every strategy: only eligible backends ---


@given(strategy_names(), pool_specs(), seeds(), hash_keys())
def test_only_eligible_backends_are_picked(
    strategy: str, specs: list[BackendSpec], seed: int, key: str
) -> None:
    backends, excluded = realise(specs)
    eligible = {b for b, s in zip(backends, specs, strict=True) if s.eligible}
    balancer = make_balancer(strategy, backends, rng=Random(seed))
    for _ in range(12):
        chosen = balancer.pick(exclude=excluded, key=key)
        if eligible:
            assert chosen in eligible
        else:
            assert chosen is None


# --- panic mode (SPEC §7.1) ---


def in_panic_pool(specs: list[BackendSpec]) -> set[int]:
    """Positions a panic pick may choose: weight-positive and not excluded, health ignored."""
    return {i for i, s in enumerate(specs) if s.weight > 0 and not s.excluded}


@given(strategy_names(), pool_specs(), seeds(), hash_keys())
def test_panic_picks_every_weight_positive_backend_but_never_a_drained_one(
    strategy: str, specs: list[BackendSpec], seed: int, key: str
) -> None:
    backends, excluded = realise(specs)
    allowed = {backends[i] for i in in_panic_pool(specs)}
    balancer = make_balancer(strategy, backends, rng=Random(seed))
    for _ in range(12):
        chosen = balancer.pick(exclude=excluded, key=key, panic=True)
        if allowed:
            assert chosen in allowed
        else:
            assert chosen is None


@given(pool_specs(min_size=1))
def test_swrr_panic_cycle_is_exact_over_the_weight_positive_backends(
    specs: list[BackendSpec],
) -> None:
    backends, excluded = realise(specs)
    allowed = in_panic_pool(specs)
    balancer = SmoothWeightedRoundRobin(backends)
    total = sum(backends[i].weight for i in allowed)
    for _ in range(2):
        counts = Counter(balancer.pick(exclude=excluded, panic=True) for _ in range(total))
        for position, backend in enumerate(backends):
            assert counts[backend] == (backend.weight if position in allowed else 0)


@STATISTICAL
@given(
    positive_weights(min_size=2, max_size=5),
    st.lists(st.booleans(), min_size=5, max_size=5),
    st.sampled_from(["random", "p2c"]),
    seeds(),
)
def test_random_panic_shares_follow_the_weights_of_every_backend(
    weights: list[int], unhealthy: list[bool], strategy: str, seed: int
) -> None:
    # Idle backends, so p2c's first draw always wins: both follow the weights, health ignored.
    backends = make_pool(weights)
    for backend, flag in zip(backends, unhealthy, strict=False):
        backend.active_healthy = not flag
    balancer = make_balancer(strategy, backends, rng=Random(seed))
    picks = Counter(balancer.pick(panic=True) for _ in range(PICKS))
    assert_shares_follow_weights(picks, backends)


@given(strategy_names(), positive_weights(), seeds(), st.lists(hash_keys(), max_size=20))
def test_panic_changes_nothing_while_every_backend_is_available(
    strategy: str, weights: list[int], seed: int, keys: list[str]
) -> None:
    calm = make_balancer(strategy, make_pool(weights), rng=Random(seed))
    panicked = make_balancer(strategy, make_pool(weights), rng=Random(seed))
    for key in [*keys, *keys]:
        first, second = calm.pick(key=key), panicked.pick(key=key, panic=True)
        assert first is not None
        assert second is not None
        assert first.index == second.index


@given(pool_specs(), st.integers(0, 100))
def test_panic_starts_strictly_below_the_threshold(
    specs: list[BackendSpec], threshold: int
) -> None:
    backends, _ = realise(specs)
    positive = sum(1 for s in specs if s.weight > 0)
    available = sum(1 for s in specs if s.weight > 0 and s.healthy and not s.ejected)
    expected = positive > 0 and Fraction(available, positive) < Fraction(threshold, 100)
    assert panic_mode(backends, threshold) is expected
    # A failover service takes a pool with nothing available instead.
    assert panic_mode(backends, threshold, failover=True) is (expected and available > 0)
    if positive and (100 * available) % positive == 0:
        # The share is a whole percentage: at it, no panic; one point above it, panic.
        share = 100 * available // positive
        assert not panic_mode(backends, share)
        if share < 100:
            assert panic_mode(backends, share + 1)


@given(pool_specs(), st.integers(0, 99))
def test_panic_is_monotone_in_the_threshold(specs: list[BackendSpec], threshold: int) -> None:
    backends, _ = realise(specs)
    assert panic_mode(backends, threshold) <= panic_mode(backends, threshold + 1)
    assert not panic_mode(backends, 0)


# --- consistent hash ---


@given(positive_weights(min_size=2), st.data(), st.lists(hash_keys(), max_size=40))
def test_hash_removal_moves_only_the_removed_backends_keys(
    weights: list[int], data: st.DataObject, keys: list[str]
) -> None:
    backends = make_pool(weights)
    removed = data.draw(st.sampled_from(backends))
    full = ConsistentHash(backends)
    smaller = ConsistentHash([b for b in backends if b is not removed])
    for key in keys:
        before, after = full.pick(key=key), smaller.pick(key=key)
        assert after is not removed
        assert before is removed or after is before


@given(positive_weights(max_size=MAX_POOL - 1), st.integers(1, 10), st.lists(hash_keys()))
def test_hash_addition_moves_keys_only_to_the_new_backend(
    weights: list[int], weight: int, keys: list[str]
) -> None:
    backends = make_pool(weights)
    added = Backend(server_url(len(backends)), weight, len(backends))
    small, large = ConsistentHash(backends), ConsistentHash([*backends, added])
    for key in keys:
        before, after = small.pick(key=key), large.pick(key=key)
        assert after is before or after is added


# --- in-flight accounting (SPEC §7.3) ---


class Cancelled(BaseException):
    """Stands in for trio's cancellation: a BaseException unwinding through the attempt."""


OUTCOMES = ("complete", "error", "cancel", "release-early", "release-twice")


class InFlightMachine(RuleBasedStateMachine):
    """Random interleavings of attempts against a model count per backend."""

    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__()
        self.backends = make_pool([1, 2, 3])
        self.balancer = LeastConnections(self.backends)
        self.model = dict.fromkeys(self.backends, 0)
        self.held: list[Lease] = []

    @rule(target=leases, position=st.integers(0, 2))
    def acquire(self, position: int) -> Lease:
        backend = self.backends[position]
        self.model[backend] += 1
        lease = backend.lease()
        self.held.append(lease)
        return lease

    @rule(target=leases)
    def pick_and_acquire(self) -> Lease:
        backend = self.balancer.pick()
        assert backend is not None
        self.model[backend] += 1
        lease = backend.lease()
        self.held.append(lease)
        return lease

    @rule(lease=leases)
    def release(self, lease: Lease) -> None:
        # Drawing the same lease again is a double release: it must be a no-op.
        if not lease.released:
            self.model[lease.backend] -= 1
        lease.release()

    @rule(lease=consumes(leases))
    def release_and_forget(self, lease: Lease) -> None:
        self.release(lease)

    @rule(position=st.integers(0, 2), outcome=st.sampled_from(OUTCOMES))
    def exchange(self, position: int, outcome: str) -> None:
        """One whole attempt under ``with``: the count is back where it was afterwards."""
        backend = self.backends[position]
        try:
            with backend.lease() as lease:
                assert backend.in_flight == self.model[backend] + 1
                run_attempt(lease, outcome)
        except (ValueError, Cancelled):
            pass

    @invariant()
    def counts_match_the_model(self) -> None:
        for backend in self.backends:
            assert backend.in_flight == self.model[backend] >= 0

    def teardown(self) -> None:
        for lease in self.held:
            lease.release()
        assert [b.in_flight for b in self.backends] == [0, 0, 0]


def run_attempt(lease: Lease, outcome: str) -> None:
    """The body of an attempt that ends the way ``outcome`` says."""
    match outcome:
        case "complete":
            pass
        case "error":
            raise ValueError("upstream reset")
        case "cancel":
            raise Cancelled
        case "release-early":
            lease.release()
        case "release-twice":
            lease.release()
            lease.release()
            raise ValueError("failed after releasing")
        case _:
            pytest.fail(f"unknown outcome {outcome}")


TestInFlight = InFlightMachine.TestCase
