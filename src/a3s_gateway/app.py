"""The composition root: ``Gateway`` builds the running gateway from a ``Config`` and owns the
root nursery (DESIGN.md §3.1 Ring 2, §3.3).

Nurseries (DESIGN.md §3.3): ``serve`` opens the *root* nursery (until shutdown completes),
which holds the upstream pool's task, the running config generation's background tasks
(health probers and tickers, ``server/generation.py``; a reload starts the next generation's
before cancelling the old one's) and the *connection handlers* nursery, which in turn holds
the *listener group* (one accept loop per bound socket). The nurseries are locals of ``_run``:
the root one is handed to the ``ServerContext`` it builds (``background``, for mirror copies),
and while the gateway accepts, all three are published as one ``_Serving`` handle, through which
``reload`` starts the next generation and new accept loops (no nursery sits in an attribute that
may be None, DESIGN.md §3.3). Drain (SPEC §2.4): cancel the listener
group, close the sockets, flag the drain (idle keep-alive connections close, responses in
progress carry ``Connection: close``), move the handlers' deadline to now + grace, then close
the pool with a bounded shield. This module installs no signal handlers (the CLI does) and
keeps no global state, so several gateways can run in one process.

Runtime snapshot (issue #4 item 7): ``reload`` compiles a new ``RuntimeConfig`` and swaps it in
with one assignment; each request reads the snapshot once at its start.

Listeners on reload (SPEC §10.2): each http entrypoint's sockets are a
``server.listeners.ListenerGroup``. ``reload`` diffs them by configured address: an entrypoint
whose address is unchanged keeps its group (the same sockets, its accept loops untouched; a
renamed entrypoint on the same address keeps the sockets and restarts its loops under the new
name); new addresses are bound *before* the swap, and a bind failure aborts the whole reload
with ``ReloadError`` (nothing changed, the new sockets closed); after the swap the new groups
start accepting and the removed ones stop accepting, close their sockets and have their
connections cancelled if still open when the grace (``shutdown_timeout_secs``) ends. An
entrypoint that a reload removed stays in the runtime's entrypoint map while connections
accepted under its name are open, so their next request still finds its settings. Reloads
are serialised; a reload during a drain is refused.

The reload sources (file watcher, SIGHUP, management API) share ``providers.Reloader``, which
the CLI attaches with ``attach_reloader``; ``reloader`` is how the management API finds it.

Management listener: the gateway serves its own (``management {}``) unless built with
``management=False``, which is how a worker of ``run --workers N`` runs: there the supervisor
owns the listener and asks each worker for ``metrics_snapshot()`` and state (SPEC §13.4,
``supervisor/workers.py``).

Active health: the gateway probes its backends itself unless built with ``probes=False``,
which is the other mark of such a worker: the supervisor probes once for all workers and
pushes its verdicts (``push_health``); they are kept on a ``HealthBoard`` that is applied to the
running generation at once and to each new one at its swap (``server/generation.py``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, Generic, Protocol, TypeVar

import trio

from a3s_gateway.acme.board import ChallengeBoard
from a3s_gateway.config.availability import check_availability
from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.problems import SourceMap
from a3s_gateway.config.values import Address
from a3s_gateway.errors import ConfigError, GatewayError, ReloadError, StartError
from a3s_gateway.management.server import (
    GatewayAdapter,
    ManagementServer,
    open_management_listener,
)
from a3s_gateway.observability.gateway_metrics import GatewayMetrics, semantic_warnings
from a3s_gateway.observability.metrics import render as render_metrics
from a3s_gateway.preflight import OTEL_EXTRA_HINT
from a3s_gateway.protocols.http1_engines import upstream_adapter_factory
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.scaling.host import ProcessScaling
from a3s_gateway.scaling.loop import control_stats
from a3s_gateway.server.accesslog_writer import access_log_for
from a3s_gateway.server.generation import apply_board, carry_over, receive_health, run_generation
from a3s_gateway.server.listeners import ListenerGroup, bound_address, open_http_listeners
from a3s_gateway.server.observe import Observer
from a3s_gateway.server.outbound_clients import Outbound
from a3s_gateway.server.process_metrics import read_process
from a3s_gateway.server.server_context import ServerContext
from a3s_gateway.server.tls import TlsStore
from a3s_gateway.server.udp import UdpGroup, open_udp_sockets
from a3s_gateway.services.health import HealthBoard
from a3s_gateway.state import GatewayState, HealthSnapshot, ReloadStatus
from a3s_gateway.upstream.http2_pool import Http2Pool
from a3s_gateway.upstream.pool import UpstreamPool
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from types import TracebackType

    from a3s_gateway.config.problems import Problem
    from a3s_gateway.config.schema import Config, Observability
    from a3s_gateway.observability.metrics import Snapshot as MetricsSnapshot
    from a3s_gateway.protocols.http1_engines import Http1Parser, UpstreamAdapter
    from a3s_gateway.providers import Reloader
    from a3s_gateway.providers.aggregator import ReloadOutcome
    from a3s_gateway.runtime.compile import EntrypointRuntime, UdpEntrypointRuntime
    from a3s_gateway.server.otlp import OtlpExporter

log: Final = logging.getLogger("a3s_gateway.app")


def _otlp_exporter(settings: Observability) -> OtlpExporter | None:
    """The span exporter for ``otlp_endpoint`` (SPEC §9.4); None when nothing is exported.
    The ``otel`` extra is imported only then (preflight reported its absence already)."""
    if not settings.otlp_endpoint or not settings.tracing_enabled:
        return None
    try:
        from a3s_gateway.server.otlp import OtlpExporter
    except ImportError as error:
        raise StartError(f"otlp_endpoint: {error}; {OTEL_EXTRA_HINT}") from error
    try:
        return OtlpExporter(settings.otlp_endpoint, settings.service_name, version=_version())
    except ValueError as error:
        raise StartError(f"otlp_endpoint: {error}") from error


def _restart_only(config: Config) -> dict[str, object]:
    """The settings a running gateway reads only at start (a reload cannot apply them)."""
    observability = config.observability
    management = config.management
    return {
        "observability.metrics_enabled": observability.metrics_enabled,
        "observability.access_log_enabled": observability.access_log_enabled,
        "observability.access_log_path": observability.access_log_path,
        "observability.access_log_buffer": observability.access_log_buffer,
        "observability.otlp_endpoint": observability.otlp_endpoint,
        "observability.service_name": observability.service_name,
        "management.enabled": management is not None and management.enabled,
        "management.address": management.address.text if management is not None else "",
    }


def _warn_restart_only(previous: Config, current: Config) -> None:
    """Say which changed settings a reload leaves as they were (they need a restart)."""
    before, after = _restart_only(previous), _restart_only(current)
    changed = [name for name, value in after.items() if before[name] != value]
    if changed:
        log.warning(
            "reload: %s changed; these settings apply after a restart, the running ones stay",
            ", ".join(changed),
        )


class _UpstreamEngine:
    """The upstream pool's adapter factory: a fresh client adapter of the configured
    ``http1_parser`` engine; a reload that changes the setting applies to new upstream
    connections (pooled ones keep theirs)."""

    __slots__ = ("_factory",)

    def __init__(self, name: Http1Parser) -> None:
        self._factory = upstream_adapter_factory(name)

    def use(self, name: Http1Parser) -> None:
        self._factory = upstream_adapter_factory(name)

    def __call__(self) -> UpstreamAdapter:
        return self._factory()


def _unavailable(config: Config) -> tuple[Problem, ...]:
    """Settings ``config`` uses whose feature has not landed (``load`` reports them for files;
    a ``Config`` built in code is checked here, so it cannot run with a setting ignored)."""
    return tuple(check_availability(config, SourceMap(), default_file="<config>"))


def _version() -> str:
    return __version__


#: Bound on exporting the queued spans at the end of a drain.
_OTLP_FLUSH_GRACE: Final = 5.0
#: Bound on closing the upstream pool at the end of a drain.
_POOL_CLOSE_GRACE: Final = 5.0


class _Group(Protocol):
    """What a reload's plan reads of a listener group (``ListenerGroup``, ``UdpGroup``)."""

    name: str
    address: tuple[str, int]


class _Bindable(Protocol):
    """What a reload's plan reads of an entrypoint's settings."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


_G = TypeVar("_G", bound=_Group)


@dataclass(slots=True)
class _ListenerPlan(Generic[_G]):
    """How a reload changes the listener groups (see the module docstring)."""

    #: Entrypoint name → the existing group it keeps (same address).
    kept: dict[str, _G]
    #: Entrypoints that need new sockets.
    to_bind: dict[str, _Bindable]
    #: Groups no entrypoint keeps: retired after the swap.
    removed: list[_G]


def _plan_listeners(
    groups: Mapping[str, _G], entrypoints: Mapping[str, _Bindable]
) -> _ListenerPlan[_G]:
    """Match the new entrypoints to the running groups: by name and address first, then by
    address alone (a renamed entrypoint; never for port 0, which means "any free port")."""
    unclaimed = dict(groups)
    kept: dict[str, _G] = {}
    for name, entry in entrypoints.items():
        group = unclaimed.get(name)
        if group is not None and group.address == (entry.host, entry.port):
            kept[name] = unclaimed.pop(name)
    by_address = {group.address: group for group in unclaimed.values() if group.address[1] != 0}
    to_bind: dict[str, _Bindable] = {}
    for name, entry in entrypoints.items():
        if name in kept:
            continue
        moved = by_address.pop((entry.host, entry.port), None) if entry.port != 0 else None
        if moved is None:
            to_bind[name] = entry
        else:
            kept[name] = moved
            del unclaimed[moved.name]
    return _ListenerPlan(kept, to_bind, list(unclaimed.values()))


@dataclass(slots=True)
class _NewSockets:
    """What a reload bound before its swap, with the plans it follows."""

    plan: _ListenerPlan[ListenerGroup]
    added: dict[str, ListenerGroup]
    udp_plan: _ListenerPlan[UdpGroup]
    udp_added: dict[str, UdpGroup]

    def close(self) -> None:
        """Close every socket bound (the reload did not go ahead)."""
        for group in self.added.values():
            group.close()
        for udp in self.udp_added.values():
            udp.close()


class _GenerationTask(Protocol):
    """``Gateway._generation_task``'s shape: run ``runtime``'s generation, handing back its
    cancel scope through ``task_status``."""

    async def __call__(
        self, runtime: RuntimeConfig, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None: ...


class _Serving:
    """The nurseries of a gateway that accepts connections (DESIGN.md §3.3), made inside
    ``_run``'s ``async with`` blocks, so each is a plain, never-None field.

    ``_run`` publishes it as ``Gateway._serving`` while it accepts and withdraws it (in a
    ``finally``) before the acceptors are cancelled, so ``reload`` either finds it or knows the
    gateway no longer takes new work; nothing else holds a nursery of the gateway. Through it a
    reload starts the next generation (before cancelling the running one) and new accept loops.
    """

    __slots__ = ("_acceptors", "_ctx", "_generation_scope", "_handlers", "_root")

    def __init__(
        self,
        root: trio.Nursery,
        handlers: trio.Nursery,
        acceptors: trio.Nursery,
        ctx: ServerContext,
        generation: trio.CancelScope,
    ) -> None:
        self._root = root
        self._handlers = handlers
        self._acceptors = acceptors
        self._ctx = ctx
        #: The cancel scope of the running generation's probers and tickers.
        self._generation_scope = generation

    def listen(self, group: ListenerGroup, entry: EntrypointRuntime) -> None:
        """Start ``group``'s accept loops (its connections go to the handlers nursery)."""
        group.start(self._acceptors, self._handlers, self._ctx, entry)

    def listen_udp(self, group: UdpGroup) -> None:
        """Start a UDP group's receive loops in the handlers nursery: they relay for its
        sessions until the drain's grace, not only while connections are accepted."""
        group.start(self._handlers, self._ctx)

    async def next_generation(self, task: _GenerationTask, runtime: RuntimeConfig) -> None:
        """Start ``task(runtime)`` in the root nursery (it hands back its cancel scope), then
        cancel the running generation's: the new probers start before the old ones stop."""
        previous = self._generation_scope
        self._generation_scope = await self._root.start(task, runtime)
        previous.cancel()


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
        management: bool = True,
        probes: bool = True,
        challenges: ChallengeBoard | None = None,
    ) -> None:
        self._override = Address(listen_override) if listen_override is not None else None
        #: The ACME challenges its listeners answer: its ACME manager's board, or a worker's.
        self.challenges = challenges if challenges is not None else ChallengeBoard()
        if unavailable := _unavailable(config):
            raise ConfigError(unavailable)
        self._config = self._with_override(config)
        #: The upstream pool's client adapters: the ``http1_parser`` engine, across reloads.
        self._upstream_engine = _UpstreamEngine(self._config.http1_parser)
        if workers != 1:
            raise StartError(
                "Gateway runs one worker in-process; multi-worker mode is the CLI's "
                "(`run --workers N`, SPEC §13.4)"
            )
        self._reuse_port = reuse_port
        self._serve_management = management  # binds ``management {}`` (module docstring)
        #: ``probes=False``: the active health pushed to this gateway (module docstring).
        self._board = None if probes else HealthBoard()
        #: Listener groups (http, tcp) and sockets with sessions (udp) by entrypoint name.
        self._groups: dict[str, ListenerGroup] = {}
        self._udp: dict[str, UdpGroup] = {}
        self._context: ServerContext | None = None
        #: The nurseries while accepting (``_Serving``); ``_run`` alone sets and withdraws it.
        self._serving: _Serving | None = None
        self._reload_lock = trio.Lock()
        self._reloader: Reloader | None = None
        self._state = GatewayState.CREATED
        self._generation = 1
        self._started_at: float | None = None
        self._grace: float | None = None
        self._last_reload: ReloadStatus | None = None
        self._shutdown_requested, self._stopped = trio.Event(), trio.Event()
        #: Outbound clients for middlewares (forward-auth, JWKS, Redis); run in the root nursery.
        self._outbound = Outbound()
        observability = self._config.observability
        #: Prometheus families (SPEC §9.1); counters live as long as the gateway, across reloads.
        self._metrics = GatewayMetrics(observability.metrics_enabled, version=_version())
        #: TLS entrypoints' certificates across generations (poller in the root nursery).
        self._tls = TlsStore(self._metrics)
        #: The access log (SPEC §9.2): its writer runs in the root nursery.
        self._access_log = access_log_for(observability, on_drop=self._metrics.access_log_dropped)
        #: The management API (SPEC §9.6): its listeners, bound in ``serve`` with the others.
        self._management: ManagementServer | None = None
        self._management_listeners: list[trio.SocketListener] = []
        #: The OTLP span exporter (``otlp_endpoint``), made in ``_run``; None: no export.
        self._otlp: OtlpExporter | None = None
        #: Reloads by result (``a3s_config_reloads_total``; ``unchanged``: the reloader's).
        self._reload_counts: dict[str, int] = {"ok": 0, "error": 0}
        #: Scaling here (SPEC §11); the supervisor runs the autoscalers for a worker.
        self.scaling = ProcessScaling(lambda: self.runtime, control=probes)

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
            self._tls.install(await self._tls.prepare(runtime.entrypoints))
            opened = await open_http_listeners(runtime.entrypoints, reuse_port=self._reuse_port)
            self._groups = {
                name: ListenerGroup(name, (entry.host, entry.port), opened[name], self._tls)
                for name, entry in runtime.entrypoints.items()
            }
            self._udp = await self._bind_udp(runtime.udp_entrypoints)
            await self._open_observability()
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
        pool = UpstreamPool(adapter_factory=self._upstream_engine)
        h2pool = Http2Pool()
        if self._board is not None:
            apply_board(self._board, runtime)
        otlp = self._otlp = _otlp_exporter(self._config.observability)
        observer = None
        if self._metrics.enabled or self._access_log.enabled or otlp is not None:
            observer = Observer(self._metrics, self._access_log, otlp)
        self._metrics.config_applied(wall=time.time(), warnings=self._warnings(), runtime=runtime)
        async with trio.open_nursery() as root:
            # Made here so that its background (mirror copies) is the root nursery from the
            # start: a field that is never None and never replaced.
            ctx = self._context = ServerContext(
                runtime, pool, background=root, h2pool=h2pool, challenges=self.challenges
            )
            self.scaling.on_generation(runtime, None)
            ctx.metrics = self._metrics
            ctx.observer = observer
            await root.start(pool.run)
            await root.start(h2pool.run)
            await root.start(ctx.relay_hub.run)
            await root.start(self._outbound.run)
            await root.start(self._access_log.run)
            await root.start(self._tls.run)
            await root.start(self.scaling.run)
            if self._management is not None:
                await root.start(self._management.serve, self._management_listeners)
            generation = await root.start(self._generation_task, runtime)
            async with trio.open_nursery() as handlers:
                async with trio.open_nursery() as acceptors:
                    serving = _Serving(root, handlers, acceptors, ctx, generation)
                    await self._accept_until_shutdown(serving, runtime, task_status)
                    ctx.drain.start()
                    self.scaling.drain()
                    acceptors.cancel_scope.cancel()
                self._close_entrypoints()  # the management API answers until the end
                handlers.cancel_scope.deadline = trio.current_time() + self._grace_secs()
            with trio.move_on_after(_POOL_CLOSE_GRACE) as cleanup:
                cleanup.shield = True
                await pool.aclose()
                await h2pool.aclose()
                await self._outbound.aclose()
                await self._access_log.aclose()
            if otlp is not None:
                with trio.move_on_after(_OTLP_FLUSH_GRACE) as flush:
                    flush.shield = True
                    await otlp.aclose()
            root.cancel_scope.cancel()

    async def _accept_until_shutdown(
        self, serving: _Serving, runtime: RuntimeConfig, task_status: trio.TaskStatus[None]
    ) -> None:
        """Start every listener group's accept loops and wait for ``shutdown``; meanwhile
        ``serving`` is published as ``_serving`` (the reload's way to the nurseries), and it
        is withdrawn however this ends, before the caller cancels the acceptors."""
        self._serving = serving
        try:
            for name, group in self._groups.items():
                entry = runtime.entrypoints[name]
                serving.listen(group, entry)
                self._log_listening(name, group, entry)
            for udp in self._udp.values():
                serving.listen_udp(udp)
                self._log_udp(udp)
            self._state = GatewayState.RUNNING
            log.info(
                "gateway running: %d entrypoint(s), %d router(s), %d service(s)",
                len(self._config.entrypoints),
                len(self._config.routers)
                + len(self._config.tcp_routers)
                + len(self._config.udp_routers),
                len(self._config.services),
            )
            task_status.started()
            await self._shutdown_requested.wait()
        finally:
            self._serving = None
        self._state = GatewayState.STOPPING

    async def _generation_task(
        self, runtime: RuntimeConfig, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """One generation's probers and tickers, in the root nursery until cancelled."""
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await run_generation(runtime, metrics=self._metrics, probes=self._board is None)

    def _grace_secs(self) -> float:
        grace = self._grace
        return float(self._config.shutdown_timeout_secs) if grace is None else grace

    def _log_listening(self, name: str, group: ListenerGroup, entry: EntrypointRuntime) -> None:
        for listener in group.listeners:
            host, port = bound_address(listener)
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info(
                "listening entrypoint=%s address=%s protocol=%s tls=%s",
                name,
                shown,
                entry.protocol,
                "yes" if entry.tls else "no",
            )

    def _log_udp(self, group: UdpGroup) -> None:
        for host, port in group.bound():
            shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            log.info("listening entrypoint=%s address=%s protocol=udp tls=no", group.name, shown)

    def _close_entrypoints(self) -> None:
        """Stop accepting connections. UDP groups stay: their sessions relay until the
        drain ends (``_close_listeners`` closes them)."""
        for group in self._groups.values():
            group.close()

    def _close_listeners(self) -> None:
        self._close_entrypoints()
        for udp in self._udp.values():
            udp.close()
        for listener in self._management_listeners:
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

        The ``--listen`` override is re-applied. Listeners are diffed (module docstring): new
        addresses are bound before the swap. Raises ``ReloadError`` with nothing changed if the
        config cannot be compiled, a new address cannot be bound, or the gateway is draining
        (the failure is recorded in ``health().last_reload``). A checkpoint.
        """
        await trio.lowlevel.checkpoint()
        async with self._reload_lock:
            try:
                unavailable = _unavailable(config)
                if unavailable:
                    raise ReloadError(str(ConfigError(unavailable)))
                return await self._reload(self._with_override(config))
            except ReloadError:
                self.record_failed_reload(1)
                raise

    async def _reload(self, config: Config) -> int:
        if self._state in (GatewayState.STOPPING, GatewayState.STOPPED, GatewayState.FAILED):
            raise ReloadError(f"the gateway is {self._state.value}: reload refused")
        previous = self._state
        self._state = GatewayState.RELOADING
        try:
            ctx = self._context
            previous_runtime = ctx.runtime if ctx is not None else None
            try:
                # Compiling 300 rules costs ~70 ms of CPU: in a thread, the event loop gets
                # the GIL back every switch interval instead of stalling for all of it.
                # compile_runtime is Ring 0 (no trio) and only reads the previous snapshot.
                runtime = await trio.to_thread.run_sync(
                    partial(
                        compile_runtime,
                        config,
                        self._generation + 1,
                        previous_runtime,
                        deps=self._outbound.deps(),
                    )
                )
                certificates = await self._tls.prepare(runtime.entrypoints)
            except StartError as error:
                raise ReloadError(str(error)) from error
            sockets = serving = None
            if ctx is not None:
                sockets = await self._new_sockets(runtime)
                runtime = self._with_draining_entrypoints(runtime, ctx)
                serving = self._serving
                if serving is None:  # a drain started while binding
                    sockets.close()
                    raise ReloadError("the gateway is stopping: reload refused")
        finally:
            self._state = previous
        _warn_restart_only(self._config, config)
        self._config = config
        self._upstream_engine.use(config.http1_parser)
        self._generation += 1
        if ctx is not None:
            carry_over(ctx.runtime, runtime)
            assert serving is not None  # checked after binding, no checkpoint since
            # The new generation's probers start before the old ones stop: no gap.
            await serving.next_generation(self._generation_task, runtime)
            previous_runtime = ctx.runtime
            if self._board is not None:  # what was pushed meanwhile, up to the swap
                apply_board(self._board, runtime)
            self._tls.install(certificates)
            self.scaling.on_generation(runtime, previous_runtime)
            ctx.runtime = runtime
            assert sockets is not None
            self._swap_listeners(runtime, sockets.plan, sockets.added)
            self._swap_udp(sockets.udp_plan, sockets.udp_added)
            self._metrics.retire_generation(previous_runtime, runtime)
        self._apply_observability(config)
        self._reload_counts["ok"] += 1
        self._metrics.config_applied(wall=time.time(), warnings=self._warnings(), runtime=runtime)
        self._last_reload = ReloadStatus(time=trio.current_time(), ok=True, problem_count=0)
        log.info("config reloaded: generation %d", self._generation)
        return self._generation

    async def _new_sockets(self, runtime: RuntimeConfig) -> _NewSockets:
        """Bind what a reload to ``runtime`` adds, TCP and UDP; all or nothing
        (``ReloadError``)."""
        plan = _plan_listeners(self._groups, runtime.entrypoints)
        udp_plan = _plan_listeners(self._udp, runtime.udp_entrypoints)
        added = await self._bind({name: runtime.entrypoints[name] for name in plan.to_bind})
        try:
            udp_added = await self._bind_udp(
                {name: runtime.udp_entrypoints[name] for name in udp_plan.to_bind}
            )
        except BaseException as error:
            for group in added.values():
                group.close()
            if isinstance(error, StartError):
                raise ReloadError(str(error)) from error
            raise
        return _NewSockets(plan, added, udp_plan, udp_added)

    def _with_draining_entrypoints(
        self, runtime: RuntimeConfig, ctx: ServerContext
    ) -> RuntimeConfig:
        """``runtime`` plus the removed entrypoints whose connections are still open."""
        draining = {
            name: entry
            for name, entry in ctx.runtime.entrypoints.items()
            if name not in runtime.entrypoints and ctx.active_connections.get(name, 0) > 0
        }
        if not draining:
            return runtime
        return dataclasses.replace(runtime, entrypoints={**runtime.entrypoints, **draining})

    async def _bind(self, entrypoints: Mapping[str, EntrypointRuntime]) -> dict[str, ListenerGroup]:
        """New listener groups for ``entrypoints``; all or nothing (``ReloadError``)."""
        try:
            opened = await open_http_listeners(entrypoints, reuse_port=self._reuse_port)
        except StartError as error:
            raise ReloadError(str(error)) from error
        return {
            name: ListenerGroup(name, (entry.host, entry.port), opened[name], self._tls)
            for name, entry in entrypoints.items()
        }

    def _swap_listeners(
        self,
        runtime: RuntimeConfig,
        plan: _ListenerPlan[ListenerGroup],
        added: dict[str, ListenerGroup],
    ) -> None:
        """After the swap: start the new groups, restart renamed ones, retire removed ones."""
        serving = self._serving  # read again: a drain may have started since the bind
        groups = {**plan.kept, **added}
        if serving is None:  # draining: nothing accepts any more
            for group in added.values():
                group.close()
            groups = plan.kept
        else:
            for name, group in groups.items():
                entry = runtime.entrypoints[name]
                if name in added or group.name != name or not group.accepting:
                    serving.listen(group, entry)
                if name in added:
                    self._log_listening(name, group, entry)
        deadline = trio.current_time() + self._grace_secs()
        for group in plan.removed:
            group.retire(deadline)
            log.info("stopped listening entrypoint=%s", group.name)
        self._groups = groups

    async def _bind_udp(
        self, entrypoints: Mapping[str, UdpEntrypointRuntime]
    ) -> dict[str, UdpGroup]:
        """New UDP groups for ``entrypoints``; all or nothing (``StartError``)."""
        opened = await open_udp_sockets(entrypoints, reuse_port=self._reuse_port)
        return {
            name: UdpGroup(name, (entry.host, entry.port), opened[name])
            for name, entry in entrypoints.items()
        }

    def _swap_udp(self, plan: _ListenerPlan[UdpGroup], added: dict[str, UdpGroup]) -> None:
        """After the swap: start the new UDP groups, restart renamed ones, retire removed
        ones (their sessions end within the grace)."""
        serving = self._serving
        groups = {**plan.kept, **added}
        if serving is None:
            for group in added.values():
                group.close()
            groups = plan.kept
        else:
            for name, group in groups.items():
                if name in added or group.name != name:
                    group.name = name
                    serving.listen_udp(group)
                if name in added:
                    self._log_udp(group)
        deadline = trio.current_time() + self._grace_secs()
        for group in plan.removed:
            group.retire(deadline)
            log.info("stopped listening entrypoint=%s", group.name)
        self._udp = groups

    def push_health(
        self,
        states: Iterable[tuple[str, str, bool]],
        *,
        passed: Iterable[tuple[str, str]] = (),
        full: bool = False,
    ) -> None:
        """Active health decided elsewhere, for a gateway built with ``probes=False`` (module
        docstring): ``(service, server URL, healthy)`` verdicts (``full``: all there are),
        applied now and to every later generation; ``passed``: backends whose probe just
        succeeded, re-admitted if passive health ejected them. Raises ``GatewayError`` for a
        gateway that probes itself."""
        board = self._board
        if board is None:
            raise GatewayError("push_health needs a gateway built with probes=False")
        board.update(states, full=full)
        ctx = self._context
        if ctx is not None:
            receive_health(ctx.runtime, board, passed=passed, metrics=self._metrics)

    def attach_reloader(self, reloader: Reloader) -> None:
        """Make ``reloader`` the gateway's reload path (the management API's ``POST /reload``
        calls ``gateway.reloader.reload_now()``)."""
        self._reloader = reloader

    @property
    def reloader(self) -> Reloader | None:
        """The reload path the CLI attached; ``None`` for a gateway without a config file."""
        return self._reloader

    @property
    def runtime(self) -> RuntimeConfig | None:
        """The compiled snapshot of the running generation (backends with their health
        state); None before ``serve`` started."""
        return self._context.runtime if self._context is not None else None

    def record_failed_reload(self, problem_count: int) -> None:
        """Note a reload that was rejected before reaching ``reload`` (bad config)."""
        self._reload_counts["error"] += 1
        self._last_reload = ReloadStatus(
            time=trio.current_time(), ok=False, problem_count=problem_count
        )

    # --- observability ---

    async def _open_observability(self) -> None:
        """Open the access-log file and bind the management listener, before ``started()``:
        either failing is a ``StartError`` and nothing stays open."""
        try:
            await self._access_log.open()
        except OSError as error:
            path = self._config.observability.access_log_path
            raise StartError(f"cannot open access log {path}: {error.strerror or error}") from error
        settings = self._config.management
        if settings is None or not settings.enabled or not self._serve_management:
            return
        self._management = ManagementServer(
            settings,
            GatewayAdapter(
                self,
                reload=self._management_reload,
                metrics=self.metrics_exposition,
                backend_requests=self.backend_requests,
            ),
        )
        self._management_listeners = await open_management_listener(settings)

    def _apply_observability(self, config: Config) -> None:
        """What a reload changes in place: the access log's query setting and the management
        API's prefix, allow list, token and TLS (its address and the log's file need a
        restart)."""
        self._access_log.include_query = config.observability.access_log_include_query
        settings = config.management
        if self._management is not None and settings is not None and settings.enabled:
            try:
                self._management.update(settings)
            except ReloadError as error:
                log.error("management settings not applied: %s", error)

    async def _management_reload(self) -> ReloadOutcome | None:
        reloader = self._reloader
        return None if reloader is None else await reloader.reload_now()

    def metrics_text(self) -> bytes | None:
        """The Prometheus exposition of this gateway (SPEC §9.1), rendered on the calling
        thread; None with ``metrics_enabled = false``. ``metrics_exposition`` renders off the
        event loop."""
        snapshot = self._metrics_freeze()
        return None if snapshot is None else render_metrics(snapshot)

    async def metrics_exposition(self) -> bytes | None:
        """``metrics_text``, with the gauges read and the cells copied on the event loop and
        the exposition rendered in a worker thread (tens of ms for thousands of samples)."""
        snapshot = self._metrics_freeze()
        if snapshot is None:
            return None
        return await trio.to_thread.run_sync(render_metrics, snapshot)

    def _metrics_freeze(self) -> MetricsSnapshot | None:
        metrics = self._metrics
        ctx = self._context
        if not metrics.enabled or ctx is None:
            return None
        counts = dict(self._reload_counts)
        if self._reloader is not None:
            counts["unchanged"] = self._reloader.counts.get("unchanged", 0)
            hub = self._reloader.hub
            metrics.providers(hub.counters(), len(hub.pending()))
            metrics.acme(*hub.acme_totals())
        for result, total in counts.items():
            metrics.config_reloads.labels(result).advance_to(total)
        metrics.collect(ctx.runtime, ctx, process=read_process())
        scaling = self.scaling
        metrics.scaling.collect_buffers(scaling.counts.results, scaling.counts.depths)
        if scaling.control is not None:
            metrics.scaling.collect_control(control_stats(scaling.control))
        return metrics.freeze()

    def backend_requests(self) -> Mapping[tuple[str, str], int] | None:
        """Upstream attempts per (service, backend URL) since the start (``/backends``'s
        ``requests_total``); None with ``metrics_enabled = false``."""
        metrics = self._metrics
        return metrics.requests_by_backend() if metrics.enabled else None

    def _warnings(self) -> int:
        """``a3s_config_warnings`` of the config now serving."""
        if not self._metrics.enabled:
            return 0
        return semantic_warnings(self._config, environ=os.environ)

    def metrics_snapshot(self) -> bytes | None:
        """This gateway's families, fresh (``collect`` runs first), as ``Registry.snapshot()``
        for a supervisor's ``merge`` (SPEC §13.4); None with ``metrics_enabled = false`` or
        before ``serve``. ``a3s_config_reloads_total`` is left empty: with workers the
        supervisor counts reloads (it validates every candidate once)."""
        metrics = self._metrics
        ctx = self._context
        if not metrics.enabled or ctx is None:
            return None
        metrics.collect(ctx.runtime, ctx, process=read_process())
        counts = self.scaling.counts
        metrics.scaling.collect_buffers(counts.results, counts.depths)
        return metrics.snapshot()

    def connections(self) -> Mapping[str, int]:
        """Open downstream connections per entrypoint."""
        ctx = self._context
        return dict(ctx.active_connections) if ctx is not None else {}

    def reopen_access_log(self) -> None:
        """Reopen the access-log file (SIGHUP, after logrotate moved it)."""
        self._access_log.reopen()

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

    def tls_certificates(self, name: str) -> tuple[tuple[tuple[str, ...], float], ...]:
        """The certificates TLS entrypoint ``name`` serves now: (DNS names, notAfter)."""
        return tuple((c.names, c.not_after) for c in self._tls.certificates(name))

    def addresses(self) -> Mapping[str, tuple[tuple[str, int], ...]]:
        """Bound addresses per entrypoint (port 0 resolved); empty before ``serve`` binds."""
        bound = {name: group.bound() for name, group in self._groups.items()}
        bound.update((name, group.bound()) for name, group in self._udp.items())
        return bound

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
