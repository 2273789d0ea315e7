"""Backend selection (SPEC §7): backends, in-flight leases and the load-balancing strategies.

Ring 0 for everything exported here: pure decisions over injected state, randomness and time.
Must not: import trio, socket, ssl or time (the Ring 1 health prober lives in ``checker.py``).
"""

from __future__ import annotations

from a3s_gateway.services.backend import Backend, Lease
from a3s_gateway.services.balancer import (
    STRATEGIES,
    Balancer,
    ConsistentHash,
    LeastConnections,
    PowerOfTwoChoices,
    SmoothWeightedRoundRobin,
    WeightedRandom,
    make_balancer,
)

__all__ = [
    "STRATEGIES",
    "Backend",
    "Balancer",
    "ConsistentHash",
    "Lease",
    "LeastConnections",
    "PowerOfTwoChoices",
    "SmoothWeightedRoundRobin",
    "WeightedRandom",
    "make_balancer",
]
