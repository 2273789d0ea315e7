""" "Did you mean" suggestions for misspelt names (SPEC §3.4: edit distance ≤ 2).

Ring 0: pure string functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

MAX_DISTANCE: Final = 2


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions each cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name nearest to ``name`` within ``MAX_DISTANCE`` (ties: first in order)."""
    best: tuple[int, str] | None = None
    for candidate in known:
        distance = edit_distance(name, candidate)
        if distance <= MAX_DISTANCE and (best is None or distance < best[0]):
            best = (distance, candidate)
    return best[1] if best is not None else None


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` (did you mean "x"?)`` or ``""``."""
    found = closest(name, known)
    return f' (did you mean "{found}"?)' if found is not None else ""
