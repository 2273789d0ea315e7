"""The upstream side of the data plane: pool keys, connection pooling and dialling (SPEC §5.7).

``peer`` and ``pool_state`` are Ring 0 (pure); ``dialer``, ``pooled_connection`` and ``pool``
are Ring 1 (trio). This package owns the pool nursery (``UpstreamPool.run``) and no deadlines: every
connect is bounded by the caller's ``connect_timeout`` scope.
"""

from __future__ import annotations

from a3s_gateway.upstream.connect_errors import CONNECT_REASONS, ConnectFailed, PoolClosed
from a3s_gateway.upstream.dialer import Dialer, connect_reason, dial
from a3s_gateway.upstream.peer import Peer, PoolSettings
from a3s_gateway.upstream.pool import AcquireProgress, AcquireStage, UpstreamPool
from a3s_gateway.upstream.pool_state import PeerStats, PoolState
from a3s_gateway.upstream.pooled_connection import (
    AdapterFactory,
    UpstreamConnection,
    new_http1_client,
)

__all__ = [
    "CONNECT_REASONS",
    "AcquireProgress",
    "AcquireStage",
    "AdapterFactory",
    "ConnectFailed",
    "Dialer",
    "Peer",
    "PeerStats",
    "PoolClosed",
    "PoolSettings",
    "PoolState",
    "UpstreamConnection",
    "UpstreamPool",
    "connect_reason",
    "dial",
    "new_http1_client",
]
