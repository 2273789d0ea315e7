"""Load-balancing strategies: choose one backend of a pool per attempt (SPEC §7.2).

Ring 0: pure and synchronous. Each strategy is built once per pool from an immutable tuple of
``Backend`` objects and answers ``pick()`` by reading the backends' live state (weight, health
flags, in-flight count), so health changes need no rebuild. Randomness comes from an injected
``random.Random``; nothing here reads a clock.

Shared contract of ``pick(exclude=..., key=..., panic=...)``:

- it never returns a backend that is unavailable (SPEC §7.1) or in ``exclude``; ``exclude``
  holds the backends a connect retry already tried (SPEC §7.8);
- with ``panic=True`` (panic mode, SPEC §7.1) health is ignored: every weight-positive backend
  not in ``exclude`` qualifies, as if it were available; a weight-0 backend never does;
- it returns ``None`` when nothing qualifies (the caller then fails over, buffers or answers
  503, SPEC §7.9);
- it costs at most a few linear passes over the pool and allocates nothing per backend.

"Eligible" below means ``backend.available and backend not in exclude`` (``backend.weight > 0``
in place of ``available`` in panic); the test is written out in each loop rather than called,
since it runs once per backend per request. ``panic_mode`` decides whether a request's
selection is in panic, in one pass over the pool; the caller asks it only for services with a
``panic_threshold``, so the others pay nothing.

Must not: import trio, socket, ssl or time; change a backend's health or in-flight count (the
lease does that); apply stickiness, revisions or concurrency limits, or decide on its own to
panic — those are the selection-order layer's job (SPEC §7.9) around these strategies.
"""

from __future__ import annotations

import math
import secrets
from hashlib import blake2b
from random import Random
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from a3s_gateway.services.backend import Backend

__all__ = [
    "STRATEGIES",
    "Balancer",
    "ConsistentHash",
    "LeastConnections",
    "PowerOfTwoChoices",
    "SmoothWeightedRoundRobin",
    "WeightedRandom",
    "make_balancer",
    "panic_mode",
]


class Balancer(Protocol):
    """A load-balancing strategy over one pool (see the module docstring for the contract)."""

    backends: tuple[Backend, ...]

    def pick(
        self, *, exclude: Collection[Backend] = (), key: str | None = None, panic: bool = False
    ) -> Backend | None:
        """Choose an available backend not in ``exclude``, or ``None``.

        ``key`` matters to ``ConsistentHash`` only; the other strategies ignore it. ``panic``
        makes every weight-positive backend eligible, healthy or not (SPEC §7.1).
        """
        ...


class SmoothWeightedRoundRobin:
    """nginx's smooth weighted round robin (``round-robin`` and ``weighted``, SPEC §7.2).

    Each backend keeps a ``current`` value, starting at 0. Per pick every eligible backend adds
    its weight to its ``current``; the largest ``current`` wins (ties: earliest in pool order)
    and the sum of the eligible weights is subtracted from the winner's ``current``. Ineligible
    backends keep their value. Weights 3:1 give ``a a b a``, 5:1:1 give ``a a b a c a a``.

    From a reset state with a fixed eligible set, every run of W = Σw picks gives each backend
    exactly w picks, and after any n picks no backend is a whole pick ahead of n·w/W (a winner's
    ``current`` is at least the average W/k before it drops by W, so it stays above −W). The
    shortfall is below 1 in pools of up to four backends, but this algorithm can fall slightly
    more than one pick behind in larger pools, unlike what SPEC §7.2 states: weights
    1:1:1:1:7:7 give ``e f a e f b e f c e f d e`` for 13 picks, 4 for ``f`` against 5.06.
    """

    __slots__ = ("_current", "backends")

    backends: tuple[Backend, ...]

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._current = [0] * len(self.backends)

    def pick(
        self, *, exclude: Collection[Backend] = (), key: str | None = None, panic: bool = False
    ) -> Backend | None:
        """The next backend of the smooth sequence, or ``None``; ``key`` is ignored."""
        current = self._current
        best = -1
        best_value = 0
        total = 0
        for position, backend in enumerate(self.backends):
            if (backend.weight <= 0 if panic else not backend.available) or (
                exclude and backend in exclude
            ):
                continue
            weight = backend.weight
            value = current[position] + weight
            current[position] = value
            total += weight
            # Strictly greater: on a tie the earlier backend keeps the lead.
            if best < 0 or value > best_value:
                best, best_value = position, value
        if best < 0:
            return None
        current[best] = best_value - total
        return self.backends[best]

    def reset(self) -> None:
        """Forget the sequence position: every ``current`` back to 0."""
        self._current = [0] * len(self.backends)


class LeastConnections:
    """Fewest in-flight attempts per unit of weight (``least-connections``, SPEC §7.2).

    Loads are compared as ``a.in_flight * b.weight`` against ``b.in_flight * a.weight`` (exact
    integers, no floats). Ties rotate round-robin: the winner is the first tied backend at or
    after the position following the previous winner, wrapping around.
    """

    __slots__ = ("_cursor", "backends")

    backends: tuple[Backend, ...]

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        self._cursor = 0

    def pick(
        self, *, exclude: Collection[Backend] = (), key: str | None = None, panic: bool = False
    ) -> Backend | None:
        """The least loaded eligible backend, or ``None``; ``key`` is ignored."""
        cursor = self._cursor
        # Best load so far as the fraction flights / weight, and two tied candidates: the first
        # one in pool order and the first one at or after the cursor.
        flights, weight = 0, 0
        first = after = -1
        for position, backend in enumerate(self.backends):
            if (backend.weight <= 0 if panic else not backend.available) or (
                exclude and backend in exclude
            ):
                continue
            mine = backend.in_flight * weight
            theirs = flights * backend.weight
            if first < 0 or mine < theirs:
                flights, weight = backend.in_flight, backend.weight
                first = position
                after = position if position >= cursor else -1
            elif mine == theirs and after < 0 and position >= cursor:
                after = position
        if first < 0:
            return None
        chosen = after if after >= 0 else first
        self._cursor = chosen + 1
        return self.backends[chosen]


def _default_rng() -> Random:
    """A generator seeded from ``secrets`` (SPEC §7.2: never from the clock)."""
    return Random(secrets.randbits(128))


def _eligible_weight(
    backends: tuple[Backend, ...], exclude: Collection[Backend], panic: bool
) -> int:
    """Sum of the weights of the eligible backends."""
    total = 0
    for backend in backends:
        if (backend.weight > 0 if panic else backend.available) and not (
            exclude and backend in exclude
        ):
            total += backend.weight
    return total


def _weighted_draw(
    backends: tuple[Backend, ...],
    exclude: Collection[Backend],
    skip: Backend | None,
    ticket: int,
    panic: bool,
) -> Backend:
    """The eligible backend (other than ``skip``) whose weight interval holds ``ticket``.

    ``ticket`` must be below the eligible weight (less ``skip``'s) of the same arguments,
    computed with no state change in between (picks are synchronous, so nothing can
    interleave).
    """
    for backend in backends:
        if (
            backend is not skip
            and (backend.weight > 0 if panic else backend.available)
            and not (exclude and backend in exclude)
        ):
            ticket -= backend.weight
            if ticket < 0:
                return backend
    raise RuntimeError("backend state changed during a weighted draw")


class WeightedRandom:
    """Weighted random choice (``random``, SPEC §7.2): P(b) = w_b / Σw over eligible backends.

    ``rng`` defaults to a generator seeded from ``secrets``; tests inject a seeded one.
    """

    __slots__ = ("_rng", "backends")

    backends: tuple[Backend, ...]

    def __init__(self, backends: Sequence[Backend], *, rng: Random | None = None) -> None:
        self.backends = tuple(backends)
        self._rng = rng if rng is not None else _default_rng()

    def pick(
        self, *, exclude: Collection[Backend] = (), key: str | None = None, panic: bool = False
    ) -> Backend | None:
        """A weighted random eligible backend, or ``None``; ``key`` is ignored."""
        total = _eligible_weight(self.backends, exclude, panic)
        if total == 0:
            return None
        return _weighted_draw(self.backends, exclude, None, self._rng.randrange(total), panic)


class PowerOfTwoChoices:
    """Power of two choices (``p2c``, SPEC §7.2).

    Two distinct weighted random picks; the one with the lower in-flight ÷ weight wins (compared
    by cross-multiplication), a tie goes to the first pick. A single eligible backend is chosen
    without drawing.
    """

    __slots__ = ("_rng", "backends")

    backends: tuple[Backend, ...]

    def __init__(self, backends: Sequence[Backend], *, rng: Random | None = None) -> None:
        self.backends = tuple(backends)
        self._rng = rng if rng is not None else _default_rng()

    def pick(
        self, *, exclude: Collection[Backend] = (), key: str | None = None, panic: bool = False
    ) -> Backend | None:
        """The less loaded of two weighted random eligible backends, or ``None``."""
        backends = self.backends
        total = count = 0
        last: Backend | None = None
        for backend in backends:
            if (backend.weight > 0 if panic else backend.available) and not (
                exclude and backend in exclude
            ):
                total += backend.weight
                count += 1
                last = backend
        if count <= 1:
            return last
        first = _weighted_draw(backends, exclude, None, self._rng.randrange(total), panic)
        rest = total - first.weight
        second = _weighted_draw(backends, exclude, first, self._rng.randrange(rest), panic)
        if second.in_flight * first.weight < first.in_flight * second.weight:
            return second
        return first


#: 2⁵³: the 52 high bits ``x`` of a 64-bit hash map to (2x + 1) / 2⁵³, an exact double strictly
#: inside (0, 1) (64 bits would round up to 1.0 near the top of the range).
_UNIT_DENOMINATOR: Final = float(1 << 53)


class ConsistentHash:
    """Weighted rendezvous hashing (``consistent-hash``, SPEC §7.2).

    For key k and backend b: h = BLAKE2b(k + NUL + b.url.text) with an 8-byte digest, read as
    a big-endian unsigned integer and mapped into (0, 1) (see ``_unit``); score = −w_b ÷ ln(h);
    the highest score wins (ties: earliest in pool order). A backend's score depends on the key
    and that backend only, so adding or removing a backend moves only the keys it wins.

    The caller derives ``key`` from ``hash_key`` and passes the client IP when the request has
    no such key (SPEC §7.2). ``key=None`` is hashed as the empty key, which sends every keyless
    request to one backend — callers should not rely on it.
    """

    __slots__ = ("_suffixes", "backends")

    backends: tuple[Backend, ...]

    def __init__(self, backends: Sequence[Backend]) -> None:
        self.backends = tuple(backends)
        # NUL + URL text, encoded once; the per-key hash state is copied and fed this.
        self._suffixes = tuple(b"\0" + b.url.text.encode() for b in self.backends)

    def pick(
        self, *, exclude: Collection[Backend] = (), key: str | None = None, panic: bool = False
    ) -> Backend | None:
        """The eligible backend with the highest rendezvous score for ``key``, or ``None``."""
        prefix = blake2b(b"" if key is None else key.encode(), digest_size=8)
        best: Backend | None = None
        best_score = 0.0
        for backend, suffix in zip(self.backends, self._suffixes, strict=True):
            if (backend.weight <= 0 if panic else not backend.available) or (
                exclude and backend in exclude
            ):
                continue
            state = prefix.copy()
            state.update(suffix)
            # _unit, inlined: this loop runs once per backend per request.
            high = int.from_bytes(state.digest(), "big") >> 12
            score = -backend.weight / math.log((2 * high + 1) / _UNIT_DENOMINATOR)
            if best is None or score > best_score:
                best, best_score = backend, score
        return best

    def score(self, backend: Backend, key: str) -> float:
        """The rendezvous score of ``backend`` for ``key`` (for tests and diagnostics)."""
        digest = blake2b(key.encode() + b"\0" + backend.url.text.encode(), digest_size=8)
        return -backend.weight / math.log(_unit(digest.digest()))


def _unit(digest: bytes) -> float:
    """A 64-bit digest → a double strictly inside (0, 1)."""
    high = int.from_bytes(digest, "big") >> 12
    return (2 * high + 1) / _UNIT_DENOMINATOR


def panic_mode(backends: Sequence[Backend], threshold: int, *, failover: bool = False) -> bool:
    """Whether a selection over ``backends`` is in panic mode (SPEC §7.1, ``panic_threshold``).

    Panic: fewer than ``threshold`` percent of the weight-positive backends are available, so
    ``pick(panic=True)`` spreads the request over all of them rather than overload the few
    available ones or answer 503 (Envoy's healthy panic threshold). Shares count backends, not
    weights, as Envoy's do. Exactly at the threshold is not panic; ``threshold`` 0 never is, and
    neither is a pool without a weight-positive backend (there is nothing to spread over).

    ``failover`` says the service has a failover service: then a pool with no available
    backend at all is not in panic either, and the failover service takes the request (SPEC
    §7.8 (a)), as a healthy lower priority level does in Envoy before a level panics.

    One pass over the pool, reading the flags ``available`` combines.
    """
    positive = available = 0
    for backend in backends:
        if backend.weight > 0:
            positive += 1
            if backend.active_healthy and not backend.passive_ejected:
                available += 1
    if failover and available == 0:
        return False
    # available / positive < threshold / 100, in integers.
    return available * 100 < threshold * positive


#: Strategy names of ``load_balancer.strategy`` (SPEC §3.10); ``weighted`` is round-robin.
STRATEGIES: Final = frozenset(
    {"round-robin", "weighted", "least-connections", "random", "p2c", "consistent-hash"}
)


def make_balancer(
    strategy: str, backends: Sequence[Backend], *, rng: Random | None = None
) -> Balancer:
    """The balancer for a ``load_balancer.strategy`` name over ``backends`` (in pool order).

    ``rng`` feeds ``random`` and ``p2c`` (default: seeded from ``secrets``); the other
    strategies are deterministic. Raises ``ValueError`` for an unknown strategy name.
    """
    match strategy:
        case "round-robin" | "weighted":
            return SmoothWeightedRoundRobin(backends)
        case "least-connections":
            return LeastConnections(backends)
        case "random":
            return WeightedRandom(backends, rng=rng)
        case "p2c":
            return PowerOfTwoChoices(backends, rng=rng)
        case "consistent-hash":
            return ConsistentHash(backends)
    expected = ", ".join(sorted(STRATEGIES))
    raise ValueError(f"unknown load-balancing strategy {strategy!r}: expected one of {expected}")
