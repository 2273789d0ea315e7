"""Hypothesis strategies for the passive-health properties (SPEC §7.5).

Kept apart from ``strategies.py`` so the passive-health subject owns its generators. Durations
and time advances are multiples of a quarter second, so every sum and product the detector
computes is exact in binary floating point and the properties can compare times with ``==``.
Strategies generate plain values; ``make_pool`` (from the services strategies) turns weights
into fresh ``Backend`` objects inside each example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from hypothesis import strategies as st

from a3s_gateway.services.passive import PassiveSettings
from tests.property.strategies_services import MAX_POOL

StepKind = Literal["error", "success", "tick", "readmit"]

#: Errors dominate so that ejections, probation and the cap are all reached often.
STEP_KINDS: Final[tuple[StepKind, ...]] = ("error", "error", "error", "success", "tick", "readmit")


@dataclass(frozen=True, slots=True)
class Step:
    """One input to the detector, ``advance`` seconds after the previous one: ``repeat``
    attempt results, a tick or an active-check success on backend ``backend`` (an index, taken
    modulo the pool size). Repeats make bursts of errors, which is how ejections happen."""

    kind: StepKind
    backend: int
    advance: float
    repeat: int = 1


def quarters(low: int, high: int) -> st.SearchStrategy[float]:
    """Multiples of 0.25 s between ``low`` and ``high`` quarters."""
    return st.integers(low, high).map(lambda q: q / 4)


@st.composite
def passive_settings(
    draw: st.DrawFn, *, min_threshold: int = 1, max_threshold: int = 4
) -> PassiveSettings:
    """Small, exact settings: thresholds 1-4, windows and recovery times up to 10 s."""
    recovery = draw(quarters(1, 40))
    return PassiveSettings(
        error_threshold=draw(st.integers(min_threshold, max_threshold)),
        window=draw(quarters(1, 40)),
        recovery_time=recovery,
        max_recovery_time=recovery * draw(st.integers(1, 8)),
        max_ejection_percent=draw(st.integers(1, 100)),
        error_statuses=frozenset({500, 502, 503, 504}),
        error_grpc_statuses=frozenset({14}),
    )


def pool_weights() -> st.SearchStrategy[list[int]]:
    """Pools of 1-8 backends, mostly weight-positive, sometimes drained (weight 0)."""
    return st.lists(st.sampled_from((1, 1, 1, 2, 3, 0)), min_size=1, max_size=MAX_POOL)


def advances() -> st.SearchStrategy[float]:
    """Time between steps: often none, mostly under a few seconds, sometimes a long gap."""
    return st.one_of(st.just(0.0), quarters(0, 8), quarters(0, 40), quarters(0, 400))


def steps() -> st.SearchStrategy[Step]:
    return st.builds(
        Step,
        kind=st.sampled_from(STEP_KINDS),
        backend=st.integers(0, MAX_POOL - 1),
        advance=advances(),
        repeat=st.integers(1, 4),
    )


def step_lists(*, max_size: int = 80) -> st.SearchStrategy[list[Step]]:
    return st.lists(steps(), max_size=max_size)
