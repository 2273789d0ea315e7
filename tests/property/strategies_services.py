"""Hypothesis strategies for the backend-selection properties (SPEC §7.1–7.3).

Kept apart from ``strategies.py`` so the services subject owns its generators. Strategies
generate plain values (weights, flags, seeds, keys); ``make_pool`` and ``realise`` turn them into
fresh mutable ``Backend`` objects inside each example, so no state leaks between examples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from hypothesis import strategies as st

from a3s_gateway.config.values import ServerUrl
from a3s_gateway.services import STRATEGIES, Backend

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Every ``load_balancer.strategy`` name, in a stable order for ``sampled_from``.
STRATEGY_NAMES: Final = tuple(sorted(STRATEGIES))
MAX_POOL: Final = 8
MAX_WEIGHT: Final = 10


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """How one generated backend starts: its weight, its health flags, and whether the pick
    excludes it (as a connect retry would, SPEC §7.8)."""

    weight: int
    healthy: bool = True
    ejected: bool = False
    excluded: bool = False

    @property
    def eligible(self) -> bool:
        return self.weight > 0 and self.healthy and not self.ejected and not self.excluded


def server_url(position: int) -> ServerUrl:
    """A distinct backend URL per pool position."""
    return ServerUrl(f"http://10.0.{position // 256}.{position % 256}:8080")


def make_pool(weights: Sequence[int]) -> list[Backend]:
    """Fresh, healthy backends with these weights, in pool order."""
    return [Backend(server_url(i), weight, i) for i, weight in enumerate(weights)]


def realise(specs: Sequence[BackendSpec]) -> tuple[list[Backend], tuple[Backend, ...]]:
    """Fresh backends in the states ``specs`` describe, and the tuple to pass as ``exclude``."""
    backends = make_pool([spec.weight for spec in specs])
    for backend, spec in zip(backends, specs, strict=True):
        backend.active_healthy = spec.healthy
        backend.passive_ejected = spec.ejected
    excluded = tuple(b for b, spec in zip(backends, specs, strict=True) if spec.excluded)
    return backends, excluded


def positive_weights(
    *, min_size: int = 1, max_size: int = MAX_POOL, max_weight: int = MAX_WEIGHT
) -> st.SearchStrategy[list[int]]:
    """Pools of weights, every one at least 1."""
    return st.lists(st.integers(1, max_weight), min_size=min_size, max_size=max_size)


def backend_specs() -> st.SearchStrategy[BackendSpec]:
    """One backend's weight (0 drains it) and flags; mostly healthy, sometimes not."""
    return st.builds(
        BackendSpec,
        weight=st.integers(0, MAX_WEIGHT),
        healthy=st.booleans(),
        ejected=st.booleans(),
        excluded=st.booleans(),
    )


def pool_specs(*, min_size: int = 0) -> st.SearchStrategy[list[BackendSpec]]:
    """Pools in arbitrary states, including empty and wholly unavailable ones."""
    return st.lists(backend_specs(), min_size=min_size, max_size=MAX_POOL)


def strategy_names() -> st.SearchStrategy[str]:
    """A ``load_balancer.strategy`` name."""
    return st.sampled_from(STRATEGY_NAMES)


def seeds() -> st.SearchStrategy[int]:
    """A seed for an injected ``random.Random`` (examples stay deterministic)."""
    return st.integers(0, 2**32 - 1)


def hash_keys() -> st.SearchStrategy[str]:
    """Consistent-hash keys: client-IP-like text and arbitrary text (NUL included)."""
    ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda parts: ".".join(map(str, parts)))
    return ipv4 | st.text(max_size=20)


def in_flight_counts() -> st.SearchStrategy[list[int]]:
    """In-flight counts to preload a pool with (paired position by position)."""
    return st.lists(st.integers(0, 6), min_size=MAX_POOL, max_size=MAX_POOL)
