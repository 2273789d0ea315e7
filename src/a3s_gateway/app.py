"""The composition root: ``Gateway`` builds the running gateway from a ``Config`` and owns the
root nursery (DESIGN.md §3.1 Ring 2, §3.3).

Nurseries: ``serve`` opens the *root* nursery, which lives until shutdown completes; listener,
handler, pool, provider and health-check nurseries will hang off it as the data-plane issues
land. Deadlines: ``shutdown(grace)`` sets the drain grace (``shutdown_timeout_secs`` by default);
after it, whatever is left is cancelled. This module installs no signal handlers (the CLI does,
SPEC §2.4) and keeps no global state, so several gateways can run in one process.

Current scope (issue #2, the foundation): lifecycle, state, health snapshot, config swap on
reload. No listeners are opened yet; the HTTP data plane is issue #4.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.values import Address
from a3s_gateway.errors import GatewayError, StartError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from a3s_gateway.config.schema import Config

log: Final = logging.getLogger("a3s_gateway.app")


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


class Gateway:
    """One gateway instance, started inside the caller's trio nursery.

    ``Gateway(config)`` creates nothing async; ``await nursery.start(gateway.serve)`` runs it
    until ``await gateway.shutdown()``.
    """

    def __init__(
        self, config: Config, *, listen_override: str | None = None, workers: int = 1
    ) -> None:
        self._override = Address(listen_override) if listen_override is not None else None
        self._config = self._with_override(config)
        if workers != 1:
            raise StartError(
                "multi-worker mode (--workers) is not implemented yet; run with --workers 1"
            )
        self._state = GatewayState.CREATED
        self._generation = 1
        self._started_at: float | None = None
        self._last_reload: ReloadStatus | None = None
        self._shutdown_requested = trio.Event()
        self._stopped = trio.Event()
        self._grace: float | None = None

    def _with_override(self, config: Config) -> Config:
        if self._override is None:
            return config
        return apply_listen_override(config, self._override)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until shutdown; ``task_status.started()`` once running (SPEC §2.7).

        Raises ``StartError`` before ``started()`` if it cannot start. A checkpoint; may be
        called once.
        """
        if self._state is not GatewayState.CREATED:
            raise GatewayError(f"serve() called in state {self._state.value}")
        self._state = GatewayState.STARTING
        self._started_at = trio.current_time()
        try:
            async with trio.open_nursery() as root:
                self._state = GatewayState.RUNNING
                log.info(
                    "gateway running: %d entrypoint(s), %d router(s), %d service(s)",
                    len(self._config.entrypoints),
                    len(self._config.routers),
                    len(self._config.services),
                )
                task_status.started()
                await self._shutdown_requested.wait()
                self._state = GatewayState.STOPPING
                grace = self._grace
                if grace is None:
                    grace = float(self._config.shutdown_timeout_secs)
                root.cancel_scope.deadline = trio.current_time() + grace
        except BaseException:
            self._state = GatewayState.FAILED
            raise
        finally:
            self._stopped.set()
        self._state = GatewayState.STOPPED
        log.info("gateway stopped")

    async def shutdown(self, grace: float | None = None) -> None:
        """Drain gracefully within ``grace`` seconds (default ``shutdown_timeout_secs``) and
        wait until ``serve`` has returned. Idempotent; a checkpoint."""
        if self._state is GatewayState.CREATED:
            self._state = GatewayState.STOPPED
            self._stopped.set()
            return
        if not self._shutdown_requested.is_set():
            self._grace = grace
            self._shutdown_requested.set()
        await self._stopped.wait()

    async def reload(self, config: Config) -> int:
        """Swap in a new config atomically; returns the new generation number (SPEC §10.1).

        The ``--listen`` override is re-applied. A checkpoint.
        """
        await trio.lowlevel.checkpoint()
        previous = self._state
        self._state = GatewayState.RELOADING
        self._config = self._with_override(config)
        self._generation += 1
        self._last_reload = ReloadStatus(time=trio.current_time(), ok=True, problem_count=0)
        self._state = previous
        log.info("config reloaded: generation %d", self._generation)
        return self._generation

    def record_failed_reload(self, problem_count: int) -> None:
        """Note a reload that was rejected before reaching ``reload`` (bad config)."""
        self._last_reload = ReloadStatus(
            time=trio.current_time(), ok=False, problem_count=problem_count
        )

    def state(self) -> GatewayState:
        """The lifecycle state (SPEC §2.2)."""
        return self._state

    def config(self) -> Config:
        """The active config, with the ``--listen`` override applied."""
        return self._config

    def health(self) -> HealthSnapshot:
        """A health snapshot (SPEC §2.7)."""
        uptime = 0.0
        if self._started_at is not None and self._state is not GatewayState.STOPPED:
            uptime = trio.current_time() - self._started_at
        return HealthSnapshot(
            state=self._state,
            uptime_secs=uptime,
            active_connections=0,
            total_requests=0,
            config_generation=self._generation,
            last_reload=self._last_reload,
        )

    def addresses(self) -> Mapping[str, tuple[tuple[str, int], ...]]:
        """Bound addresses per entrypoint; empty until the data plane opens listeners."""
        return {}

    async def __aenter__(self) -> Gateway:
        if self._state is GatewayState.CREATED:
            raise GatewayError("start serve() in a nursery before entering the gateway")
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()
