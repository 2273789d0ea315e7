"""The composition root: ``Gateway`` builds the running gateway from a ``Config`` and owns the
root nursery (DESIGN.md §3.1 Ring 2, §3.3).

Nurseries (DESIGN.md §3.3): ``serve`` opens the *root* nursery (until shutdown completes),
which holds the upstream pool's task, the running config generation's background tasks
(health probers and tickers, ``server/generation.py``; a reload starts the next generation's
before cancelling the old one's) and the *connection handlers* nursery, which in turn holds
the *listener group* (one accept loop per bound socket). Drain (SPEC §2.4): cancel the listener
group, close the sockets, flag the drain (idle keep-alive connections close, responses in
progress carry ``Connection: close``), move the handlers' deadline to now + grace, then close
the pool with a bounded shield. This module installs no signal handlers (the CLI does) and
keeps no global state, so several gateways can run in one process.

Runtime snapshot (issue #4 item 7): ``reload`` compiles a new ``RuntimeConfig`` and swaps it in
with one assignment; each request reads the snapshot once at its start. Listener changes on
reload need a restart for now (hot listener changes are the reload issue).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.runtime import RuntimeConfig, compile_runtime
from a3s_gateway.config.values import Address
from a3s_gateway.errors import GatewayError, ReloadError, StartError
from a3s_gateway.server.context import ServerContext
from a3s_gateway.server.generation import carry_over, run_generation
from a3s_gateway.server.listeners import bound_address, open_http_listeners, serve_listener
from a3s_gateway.server.outbound import Outbound
from a3s_gateway.upstream import UpstreamPool

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from a3s_gateway.config.schema import Config

log: Final = logging.getLogger("a3s_gateway.app")

#: Bound on closing the upstream pool at the end of a drain.
_POOL_CLOSE_GRACE: Final = 5.0


def _listening(config: Config) -> dict[str, tuple[str, str, int]]:
    """What the listeners depend on: each entrypoint's protocol and address."""
    return {
        name: (entry.protocol, entry.address.host, entry.address.port)
        for name, entry in config.entrypoints.items()
    }


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
        self,
        config: Config,
        *,
        listen_override: str | None = None,
        workers: int = 1,
        reuse_port: bool = False,
    ) -> None:
        self._override = Address(listen_override) if listen_override is not None else None
        self._config = self._with_override(config)
        if workers != 1:
            raise StartError(
                "Gateway runs one worker in-process; multi-worker mode is the CLI's "
                "(`run --workers N`, SPEC §13.4)"
            )
        self._reuse_port = reuse_port
        self._listeners: dict[str, list[trio.SocketListener]] = {}
        self._context: ServerContext | None = None
        self._root: trio.Nursery | None = None
        #: The cancel scope of the running generation's probers and tickers.
        self._generation_scope: trio.CancelScope | None = None
        self._state = GatewayState.CREATED
        self._generation = 1
        self._started_at: float | None = None
        self._last_reload: ReloadStatus | None = None
        self._shutdown_requested = trio.Event()
        self._stopped = trio.Event()
        self._grace: float | None = None
        #: Outbound clients for middlewares (forward-auth, JWKS, Redis); run in the root nursery.
        self._outbound = Outbound()

    def _with_override(self, config: Config) -> Config:
        if self._override is None:
            return config
        return apply_listen_override(config, self._override)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until shutdown; ``task_status.started()`` once every listener is bound (SPEC §2.7).

        Raises ``StartError`` before ``started()`` if a listener cannot be bound (nothing stays
        bound). A checkpoint; may be called once.
        """
        if self._state is not GatewayState.CREATED:
            raise GatewayError(f"serve() called in state {self._state.value}")
        self._state = GatewayState.STARTING
        self._started_at = trio.current_time()
        try:
            runtime = compile_runtime(self._config, self._generation, deps=self._outbound.deps())
            self._listeners = await open_http_listeners(
                runtime.entrypoints, reuse_port=self._reuse_port
            )
            await self._run(runtime, task_status)
        except BaseException:
            self._state = GatewayState.FAILED
            raise
        finally:
            self._close_listeners()
            self._stopped.set()
        self._state = GatewayState.STOPPED
        log.info("gateway stopped")

    async def _run(self, runtime: RuntimeConfig, task_status: trio.TaskStatus[None]) -> None:
        """The nursery tree of DESIGN.md §3.3: root ⊃ pool, handlers ⊃ acceptors."""
        pool = UpstreamPool()
        ctx = self._context = ServerContext(runtime, pool)
        async with trio.open_nursery() as root:
            await root.start(pool.run)
            await root.start(self._outbound.run)
            self._root = root
            ctx.background = root
            self._generation_scope = await root.start(self._generation_task, runtime)
            async with trio.open_nursery() as handlers:
                async with trio.open_nursery() as acceptors:
                    for name, listeners in self._listeners.items():
                        for listener in listeners:
                            entry = runtime.entrypoints[name]
                            acceptors.start_soon(serve_listener, listener, entry, handlers, ctx)
                            self._log_listening(name, listener, entry.tls)
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
                    ctx.drain.start()
                    acceptors.cancel_scope.cancel()
                self._close_listeners()
                handlers.cancel_scope.deadline = trio.current_time() + self._grace_secs()
            with trio.move_on_after(_POOL_CLOSE_GRACE) as cleanup:
                cleanup.shield = True
                await pool.aclose()
                await self._outbound.aclose()
            root.cancel_scope.cancel()

    async def _generation_task(
        self, runtime: RuntimeConfig, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """One generation's probers and tickers, in the root nursery until cancelled."""
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await run_generation(runtime)

    def _grace_secs(self) -> float:
        grace = self._grace
        return float(self._config.shutdown_timeout_secs) if grace is None else grace

    def _log_listening(self, name: str, listener: trio.SocketListener, tls: bool) -> None:
        host, port = bound_address(listener)
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info(
            "listening entrypoint=%s address=%s protocol=http tls=%s",
            name,
            shown,
            "yes" if tls else "no",
        )

    def _close_listeners(self) -> None:
        for listeners in self._listeners.values():
            for listener in listeners:
                listener.socket.close()

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
        config = self._with_override(config)
        if self._context is not None and _listening(config) != _listening(self._config):
            raise ReloadError(
                "entrypoint addresses changed: restart the gateway to apply listener changes"
            )
        previous = self._state
        self._state = GatewayState.RELOADING
        try:
            try:
                previous_runtime = self._context.runtime if self._context is not None else None
                runtime = compile_runtime(
                    config, self._generation + 1, previous_runtime, deps=self._outbound.deps()
                )
            except StartError as error:
                raise ReloadError(str(error)) from error
        finally:
            self._state = previous
        self._config = config
        self._generation += 1
        if self._context is not None:
            carry_over(self._context.runtime, runtime)
            if self._root is not None:
                # The new generation's probers start before the old ones stop: no gap.
                previous_scope = self._generation_scope
                self._generation_scope = await self._root.start(self._generation_task, runtime)
                if previous_scope is not None:
                    previous_scope.cancel()
            self._context.runtime = runtime
        self._last_reload = ReloadStatus(time=trio.current_time(), ok=True, problem_count=0)
        self._state = previous
        log.info("config reloaded: generation %d", self._generation)
        return self._generation

    @property
    def runtime(self) -> RuntimeConfig | None:
        """The compiled snapshot of the running generation (backends with their health
        state); None before ``serve`` started."""
        return self._context.runtime if self._context is not None else None

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
        ctx = self._context
        return HealthSnapshot(
            state=self._state,
            uptime_secs=uptime,
            active_connections=sum(ctx.active_connections.values()) if ctx else 0,
            total_requests=ctx.total_requests if ctx else 0,
            config_generation=self._generation,
            last_reload=self._last_reload,
        )

    def addresses(self) -> Mapping[str, tuple[tuple[str, int], ...]]:
        """Bound addresses per entrypoint (port 0 resolved); empty before ``serve`` binds."""
        return {
            name: tuple(bound_address(listener) for listener in listeners)
            for name, listeners in self._listeners.items()
        }

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
