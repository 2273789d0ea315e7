"""Value types shared by the composition root, the management API and the supervisor: the
gateway's lifecycle state, its health snapshot and the outcome of the last reload.

Ring 0: plain frozen values, no trio, no I/O. Kept apart from ``app.py`` so that the management
API and the supervisor can name them without importing the composition root.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class GatewayState(enum.Enum):
    """Run lifecycle (SPEC §2.2)."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ReloadStatus:
    """The outcome of the last reload attempt."""

    time: float
    ok: bool
    problem_count: int


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    """``gateway.health()`` (SPEC §2.7)."""

    state: GatewayState
    uptime_secs: float
    active_connections: int
    total_requests: int
    config_generation: int
    last_reload: ReloadStatus | None
