"""Backend selection (SPEC §7): backends, in-flight leases and the load-balancing strategies.

Ring 0 for everything exported here: pure decisions over injected state, randomness and time
(balancers, active-health thresholds, passive outlier ejection, sticky cookies).
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
from a3s_gateway.services.health import ActiveHealth, CheckSettings, parse_expected_status
from a3s_gateway.services.passive import (
    OutlierDetector,
    PassiveSettings,
    PassiveState,
    Transition,
)
from a3s_gateway.services.sticky import StickyCodec, StickyPool, StickySettings

__all__ = [
    "STRATEGIES",
    "ActiveHealth",
    "Backend",
    "Balancer",
    "CheckSettings",
    "ConsistentHash",
    "Lease",
    "LeastConnections",
    "OutlierDetector",
    "PassiveSettings",
    "PassiveState",
    "PowerOfTwoChoices",
    "SmoothWeightedRoundRobin",
    "StickyCodec",
    "StickyPool",
    "StickySettings",
    "Transition",
    "WeightedRandom",
    "make_balancer",
    "parse_expected_status",
]
