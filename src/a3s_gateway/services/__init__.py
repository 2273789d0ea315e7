"""Backend selection (SPEC §7): backends, in-flight leases and the load-balancing strategies.

Ring 0 for everything here: pure decisions over injected state, randomness and time
(balancers, active-health thresholds, passive outlier ejection, sticky cookies, mirror
sampling). The Ring 1 prober that drives the active-health thresholds lives in ``probes/``.
Must not: import trio, socket, ssl, time or logging; may import ``config`` values and
``upstream.peer``.
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
