"""The traffic split between a service's revisions (SPEC §11.7).

Ring 0: pure and synchronous. ``RevisionSplit`` holds the live split (``traffic_percent`` per
revision, changed only by a rollout through ``set_percents``) and answers one question per
request: which revision? The caller does the rest of §11.7 and §7.9: it reads the
``revision_header`` value and calls ``by_header`` (falling through when the named revision has
no available backend), computes the ``revision_affinity`` key, tells ``choose`` which revisions
have an available backend, and uses the fallback pool when ``choose`` answers ``None``.

Must not: import trio, socket, ssl, time, logging or os; use randomness (every answer is a
function of the split, the availability, the affinity key and the round-robin position); choose
a backend inside a revision (each revision's pool has its own balancer).

Theory of operation
-------------------
A revision is *eligible* when it has an available backend and a live weight above 0; a
rolled-back canary (weight 0) therefore never gets traffic, with or without a key. The weights
of the eligible revisions are renormalised by using them as they are, over their sum ``W``.

- **With an affinity key**: the key's 64-bit BLAKE2b digest ``h`` is the point ``h / 2⁶⁴ · 100``
  in [0, 100); the eligible revisions own consecutive ranges of width ``w · 100 / W`` in list
  order. The comparison is done in integers (``h · W`` against ``cumulative weight · 2⁶⁴``), so
  no float rounding moves a key across a boundary. When a rollout moves percent between two
  revisions that are adjacent among the eligible ones, the boundary between them moves and
  nothing else does (``W`` is unchanged): keys only move from ``from`` to ``to``.
- **Without a key**: nginx's smooth weighted round robin (SPEC §7.2) over the eligible
  revisions. From a reset state the sequence repeats every ``W`` picks, each revision getting
  exactly ``w`` of them, so *every* window of ``W`` consecutive picks is exact (``W`` = 100 when
  every revision is eligible). The state is reset whenever the eligible set or the weights
  change, so the exactness holds from the change on.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Sequence

TOTAL_PERCENT: Final = 100
_DIGEST_BITS: Final = 64


def validate_percents(percents: Sequence[int], count: int) -> tuple[int, ...]:
    """``percents`` as a tuple; ``ValueError`` unless ``count`` of them, each 0-100, summing
    to 100."""
    values = tuple(percents)
    if len(values) != count:
        raise ValueError(f"expected {count} percents, got {len(values)}")
    for value in values:
        if type(value) is not int or not 0 <= value <= 100:
            raise ValueError(f"a traffic percent must be an integer 0-100, got {value!r}")
    if sum(values) != TOTAL_PERCENT:
        raise ValueError(f"traffic percents must sum to 100, got {sum(values)}")
    return values


def affinity_hash(key: bytes) -> int:
    """The 64-bit BLAKE2b digest of ``key`` as an integer in [0, 2⁶⁴)."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=_DIGEST_BITS // 8).digest(), "big")


class RevisionSplit:
    """The live traffic split of one service's revisions and the per-request choice.

    ``names`` and ``tags`` are in configuration order (the order that lays out the affinity
    ranges and breaks round-robin ties). Raises ``ValueError`` when the lengths differ, a name
    repeats, or the percents are not a valid split (see ``set_percents``).
    """

    __slots__ = ("_current", "_eligible", "_lookup", "_percents", "names", "tags")

    names: tuple[str, ...]
    tags: tuple[str | None, ...]

    def __init__(
        self, names: Sequence[str], percents: Sequence[int], tags: Sequence[str | None]
    ) -> None:
        self.names = tuple(names)
        self.tags = tuple(tags)
        if len(self.tags) != len(self.names):
            raise ValueError(f"expected {len(self.names)} tags, got {len(self.tags)}")
        if len(set(self.names)) != len(self.names):
            raise ValueError("revision names must be unique")
        self._percents = validate_percents(percents, len(self.names))
        # Names first, so a name always means its own revision even if a tag repeats it.
        lookup = {name.encode(): index for index, name in enumerate(self.names)}
        for index, tag in enumerate(self.tags):
            if tag is not None:
                lookup.setdefault(tag.encode(), index)
        self._lookup: dict[bytes, int] = lookup
        self._eligible: tuple[int, ...] = ()
        self._current: list[int] = []

    @property
    def percents(self) -> tuple[int, ...]:
        """The live split, in revision order; always sums to 100."""
        return self._percents

    def set_percents(self, percents: Sequence[int]) -> None:
        """Replace the live split. ``ValueError`` unless one integer 0-100 per revision,
        summing to 100. An unchanged split keeps the round-robin position (so calling this on
        every tick does not disturb the sequence); a changed one resets it."""
        values = validate_percents(percents, len(self.names))
        if values != self._percents:
            self._percents = values
            self._eligible = ()
            self._current = []

    def by_header(self, value: bytes) -> int | None:
        """The index of the revision whose name or tag is exactly ``value`` (case-sensitive),
        else ``None``. Availability is the caller's to check (SPEC §11.7 step 1)."""
        return self._lookup.get(value)

    def choose(self, available: Sequence[bool], *, affinity: bytes | None = None) -> int | None:
        """The revision for one request (SPEC §11.7 steps 2-3), or ``None`` when no revision
        with a live weight above 0 is available (the caller then uses the fallback pool).

        ``available[i]`` tells whether revision ``i`` has an available backend (``ValueError``
        on a length mismatch). With ``affinity`` (the request's key) the choice is the stable
        hash range; without it, the next pick of the smooth weighted round robin.
        """
        if len(available) != len(self.names):
            raise ValueError(f"expected {len(self.names)} availability flags, got {len(available)}")
        percents = self._percents
        eligible = tuple(i for i, ok in enumerate(available) if ok and percents[i] > 0)
        if not eligible:
            return None
        if affinity is not None:
            return self._by_range(eligible, affinity_hash(affinity))
        return self._next_smooth(eligible)

    def _by_range(self, eligible: tuple[int, ...], point: int) -> int:
        percents = self._percents
        total = sum(percents[i] for i in eligible)
        # point / 2⁶⁴ · total < cumulative  ⇔  point · total < cumulative · 2⁶⁴ (exact integers).
        scaled = point * total
        cumulative = 0
        for index in eligible:
            cumulative += percents[index]
            if scaled < cumulative << _DIGEST_BITS:
                return index
        return eligible[-1]  # unreachable: point < 2⁶⁴ puts it below the last boundary

    def _next_smooth(self, eligible: tuple[int, ...]) -> int:
        if eligible != self._eligible:
            self._eligible = eligible
            self._current = [0] * len(eligible)
        percents = self._percents
        current = self._current
        best = -1
        best_value = 0
        total = 0
        for position, index in enumerate(eligible):
            weight = percents[index]
            value = current[position] + weight
            current[position] = value
            total += weight
            # Strictly greater: on a tie the earlier revision keeps the lead.
            if best < 0 or value > best_value:
                best, best_value = position, value
        current[best] = best_value - total
        return eligible[best]
