"""The multi-worker supervisor of ``run --workers N`` with N > 1 (SPEC §13.4).

Ring 1 (trio, sockets, processes) with a Ring-0 core: ``restart_delay`` and ``after_crash`` are
plain functions of ``now``. One supervisor process serves no traffic; it starts N worker
processes with the ``spawn`` start method (``supervisor/worker_main.py``), each of which serves the
config the supervisor hands it and binds every entrypoint with ``SO_REUSEPORT``, so the kernel
spreads new connections over the workers.

Port 0: a worker that binds port 0 itself would get a port of its own, so ``reserve_ports``
binds first, in the supervisor: one ``SO_REUSEPORT`` socket per port-0 entrypoint address,
bound but never listening (a TCP socket that does not listen never receives connections), held
until the supervisor exits so the port stays ours across worker restarts. The chosen ports
reach the workers in ``WorkerSpec.ports`` and replace the configured 0 on start and on every
reload. A ``udp`` socket cannot be held that way (a bound UDP socket in the reuse group would
get datagrams), so its port is learnt and released at once.

Processes and signals (SPEC §2.4): the supervisor owns the signals. First SIGINT/SIGTERM →
SIGTERM to every worker (each drains), wait, exit 0; a second → SIGKILL, exit 128+n; SIGHUP →
a reload (below).

Config generations (SPEC §13.4, issue #14): workers never read the config file. The
supervisor loads and checks it at start (generation 1) and owns the file watching: SIGHUP and a
change of the file (``providers.Reloader`` with ``Fleet`` as its target, debounced, unchanged
candidates skipped) validate the file once, in the supervisor's candidate-builder child; a
valid candidate is compiled once and becomes the current generation (``Fleet.reload``); an
invalid one is logged by the supervisor (once, though an edit and a SIGHUP both validate it:
``providers/aggregator.py``) and nothing changes. The current generation, encoded once as an
``Apply`` message (the ``Config`` with its ``${VAR}`` values as the supervisor interpolated
them), is what every worker is handed over its control channel: each slot's *feeder* sends it
to a new worker as its first message — a worker restarted after a rejected reload, a deleted
file or an edit not reloaded (``watch = false``) starts from the supervisor's current
generation, like the others — and sends each newer generation as it is published (a reload),
the newest only if several came meanwhile. The config's warnings are the supervisor's to
report, once per start (the CLI) and per reload; every line a worker logs names it (a last
field ``worker=<n>``). A worker that exits unexpectedly is logged and restarted after
``restart_delay`` (1 s doubling to 30 s; the count resets once a worker has run
``STABLE_AFTER`` seconds); the others keep serving. If a worker fails during the initial
start-up (config or bind error), the others are stopped and the supervisor exits 1 (config) or
3 (anything else).

Management API and metrics (SPEC §13.4, §9.6): the supervisor binds the ``management``
listener (workers run ``Gateway(management=False)``) and serves it with
``management/fleet.py``, which asks the ready workers over the control channel for
metrics snapshots, state reports and documents (``Supervisor.query``) and merges them. The
Fleet compiles each validated config once (``compile_runtime``, with outbound clients that are
never started): a config the workers could not compile is rejected before any SIGHUP, and the
API reads routes from it.

Active health (SPEC §7.4 "Multi-worker", §13.4, ``probes/broadcast.py``): the supervisor runs
the probers, once for all workers, on the backends of its own compiled generation
(``FleetProbes``, restarted by each reload with the verdicts carried over by service and URL),
and keeps the verdicts in ``Supervisor.health`` (a ``HealthTable``). The feeders push them: a
worker's second message is the whole table (``Health``), before it serves, and each later one
what changed since the last it was sent (the whole table again after a reload; the newest state
only, if several changes came during a send), plus the probe successes that re-admit a
backend its passive health ejected. Workers run ``Gateway(probes=False)`` and apply what they
are told; the transitions are logged and the probes counted (``a3s_health_checks_total``) here,
once.

Control channel (``supervisor/worker_main.py`` has the messages): one task per worker slot reads
its channel — ``Ready`` and replies alike — so nothing else ever calls ``receive``; the slot's
feeder (``Apply``, ``Health``) and the queries write to it, one at a time
(``ProcessWorker.send``). Each query carries an id, unique per channel; ``_Link`` keeps the
queries awaiting a reply by id and the slot task hands each reply to its waiter. A query is sent
only to a worker that has reported ``Ready``, and waits at most its timeout (the send included);
a reply that comes later finds no waiter and is dropped, and a worker that exits wakes its
waiters at once with no answer. Unanswered queries are logged and counted (``query_failures``),
and the caller leaves that worker out.

Nurseries: ``Supervisor.run`` owns the *supervisor* nursery (the reloader, one reload per
SIGHUP, signal handling, the start-up deadline, the drain bound, and ``FleetProbes.run``, which
owns the nursery of the current generation's probers) and inside it the *slots* nursery (one
task per worker slot: spawn, read the control channel, reap, restart); the supervisor nursery is
cancelled once every slot task has returned. No nursery is kept in an attribute: the SIGHUP
handler gets a function that starts the reload in the supervisor nursery. Each slot task owns a
*channel* nursery per worker it spawned, holding that worker's feeder, from the spawn until the
worker's channel ends. ``_supervise`` wraps it all in one more nursery for the management
server, which answers until the last worker has exited. ``Supervisor.query`` opens a nursery per
call (one task per ready worker). Deadlines: ``START_DEADLINE`` for the first readiness of all
workers, the drain bound (``shutdown_timeout_secs`` + ``DRAIN_MARGIN``) after which survivors
get SIGKILL, and each query's timeout.

State per worker (SPEC §13.4) — every worker has its own: downstream connections and upstream
pools; balancer positions (round-robin, least-connections counts); in-memory ``rate-limit``
buckets (effective limit = N × configured); circuit breakers, retry budgets, passive health;
mirror sampling and concurrency; ws-mux hubs; UDP sessions; ``max_connections`` and tcp-filter
counts; request counters and metrics. Global state: the config generation (the supervisor's,
handed to each worker), active health (the supervisor's verdicts, pushed), Redis
(``rate-limit-redis``), the stateless sticky cookie, ACME storage on the filesystem, and the
reserved port-0 sockets above (held here).

Must not: serve traffic, parse arguments, signal a process it has already reaped (its pid
may have been reused), let a worker read the config file, or log a generation's contents.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import resource
import signal
import socket
import time
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Final, Generic, TypeVar

import msgspec
import trio

from a3s_gateway.acme.board import BoardState, ChallengeBoard
from a3s_gateway.acme.manager import acme_factory
from a3s_gateway.config.load import LoadOptions, load
from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.values import Address
from a3s_gateway.errors import ReloadError, StartError
from a3s_gateway.management.fleet import FleetApi, FleetManagementServer
from a3s_gateway.management.server import open_management_listener
from a3s_gateway.observability import applog
from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.preflight import check
from a3s_gateway.probes.broadcast import FleetProbes, HealthTable
from a3s_gateway.providers import ProviderHub, Reloader
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.server.outbound_clients import Outbound
from a3s_gateway.state import GatewayState, ReloadStatus
from a3s_gateway.supervisor.scaling import FleetScaling
from a3s_gateway.supervisor.worker_main import (
    EXIT_CONFIG,
    EXIT_OK,
    EXIT_START,
    Activate,
    Apply,
    Challenges,
    Command,
    DocumentsReply,
    Health,
    MetricsReply,
    ProcessWorker,
    Query,
    Ready,
    Reply,
    ScalingReply,
    Splits,
    StateReply,
    Worker,
    WorkerMessage,
    WorkerSpec,
    apply_message,
)
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Collection
    from multiprocessing.context import SpawnContext

    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.schema_entrypoints import Entrypoint
    from a3s_gateway.middleware.outbound import MiddlewareDeps
    from a3s_gateway.runtime.compile import RuntimeConfig
    from a3s_gateway.supervisor.worker_main import QueryKind

__all__ = [
    "Answers",
    "Fleet",
    "Supervisor",
    "after_crash",
    "reserve_ports",
    "restart_delay",
    "run_supervisor",
]

log: Final = logging.getLogger("a3s_gateway.workers")

BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 30.0
#: A worker that ran this long before exiting counts as stable: its backoff starts again at 1 s.
STABLE_AFTER: Final = 60.0
#: Every worker must report ready within this many seconds of the start, or the start failed.
START_DEADLINE: Final = 60.0
#: Added to ``shutdown_timeout_secs`` (the workers' drain grace and pool close) before SIGKILL.
DRAIN_MARGIN: Final = 10.0
#: Bound on waiting until every worker has been sent a new ACME challenge.
CHALLENGE_WAIT: Final = 5.0
_RESERVE_ATTEMPTS: Final = 5
R = TypeVar("R", MetricsReply, StateReply, DocumentsReply, ScalingReply)


# ----------------------------------------------------------------------------- restart policy


def restart_delay(failures: int) -> float:
    """Seconds to wait before restarting after ``failures`` (≥ 1) consecutive crashes."""
    return min(BACKOFF_FIRST * 2.0 ** min(max(failures, 1) - 1, 16), BACKOFF_MAX)


def after_crash(failures: int, *, started_at: float, now: float) -> tuple[int, float]:
    """A worker started at ``started_at`` exited at ``now``: the new consecutive-crash count
    and the delay before its restart. A worker that ran ``STABLE_AFTER`` resets the count."""
    count = 1 if now - started_at >= STABLE_AFTER else failures + 1
    return count, restart_delay(count)


# ----------------------------------------------------------------------------- port 0


def reserve_ports(config: Config) -> tuple[dict[str, int], list[socket.socket]]:
    """Choose a port for every port-0 entrypoint: name → port, and the sockets that hold them
    (the caller closes them when the workers are gone). Raises ``StartError``."""
    ports: dict[str, int] = {}
    held: list[socket.socket] = []
    try:
        for name, entry in config.entrypoints.items():
            if entry.address.port == 0:
                ports[name], sockets = _reserve(name, entry)
                held.extend(sockets)
    except BaseException:
        for sock in held:
            sock.close()
        raise
    return ports, held


def _reserve(name: str, entry: Entrypoint) -> tuple[int, list[socket.socket]]:
    """Bind every address of ``entry`` on one free port (retrying if the second family's port
    is taken); ``udp`` sockets are released at once (see the module docstring)."""
    kind = socket.SOCK_DGRAM if entry.protocol == "udp" else socket.SOCK_STREAM
    where = entry.address.text
    try:
        infos = socket.getaddrinfo(
            entry.address.host or None, 0, type=kind, flags=socket.AI_PASSIVE
        )
    except OSError as error:
        raise StartError(f'entrypoint "{name}": cannot resolve {where}: {error}') from error
    targets = list(dict.fromkeys((family, address) for family, _, _, _, address in infos))
    reason = "no address"
    for _ in range(_RESERVE_ATTEMPTS):
        held: list[socket.socket] = []
        try:
            port = 0
            for family, address in targets:
                held.append(_bound_socket(family, kind, (address[0], port, *address[2:])))
                port = int(held[-1].getsockname()[1])
        except OSError as error:
            reason = error.strerror or str(error)
            for sock in held:
                sock.close()
            continue
        if kind == socket.SOCK_DGRAM:
            for sock in held:
                sock.close()
            held = []
        return port, held
    raise StartError(f'entrypoint "{name}": cannot reserve a port on {where}: {reason}')


def _bound_socket(family: int, kind: int, address: tuple[object, ...]) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


# ----------------------------------------------------------------------------- supervisor


class Supervisor:
    """Keeps ``count`` workers from ``spawn(index)`` running until a signal (module docstring),
    each fed the generation ``publish`` made current.

    ``spawn`` starts a worker synchronously; tests pass fakes and drive time with the autojump
    clock. ``run`` takes the signal numbers as an async iterator (``trio.open_signal_receiver``).
    """

    def __init__(
        self,
        count: int,
        spawn: Callable[[int], Worker],
        *,
        drain_bound: float,
        start_deadline: float = START_DEADLINE,
        serving: trio.Event | None = None,
    ) -> None:
        self._count = count
        self._spawn = spawn
        self._drain_bound = drain_bound
        self._start_deadline = start_deadline
        #: Slot index → the link to its current (spawned, not yet reaped) worker.
        self._links: dict[int, _Link] = {}
        self._ready: set[int] = set()
        self._all_ready = trio.Event()
        self._stopping = trio.Event()
        #: The generation every worker is to serve (``publish``); None: none yet.
        self._current: Apply | None = None
        #: Set (and replaced) by each ``publish`` and each change of ``health``: wakes the
        #: feeders.
        self._news = trio.Event()
        #: The active health verdicts every worker is told (``probes/broadcast.py``).
        self.health = HealthTable(on_change=self._wake_feeders)
        self.exit_code = EXIT_OK
        #: Restarts done so far (for logs, metrics and tests).
        self.restarts = 0
        #: Queries a ready worker did not answer in time, by kind (logged as they happen).
        self.query_failures: dict[QueryKind, int] = {}
        #: When ``run`` started (trio clock); None before.
        self.started_at: float | None = None
        #: The live revision splits the rollouts set (``supervisor/scaling.py``), sent to
        #: every worker by its feeder; the version counts the changes.
        self.splits: dict[str, list[int]] = {}
        self._splits_version = 0
        #: The pending ACME challenges every worker is to answer, and their version.
        self._challenges = BoardState()
        self._challenges_version = 0
        #: Set (and replaced) whenever a worker has been sent a challenges version.
        self._challenges_news = trio.Event()
        #: Set once every worker first said ``Ready`` (the ACME manager orders only then:
        #: before, no listener would answer the CA's validation).
        self.serving = serving if serving is not None else trio.Event()
        #: Where a worker's ``Activate`` goes (the autoscalers' ``poke``).
        self.on_activate: Callable[[str], None] | None = None

    @property
    def count(self) -> int:
        """Worker slots (``--workers``)."""
        return self._count

    def pids(self) -> dict[int, int]:
        """Slot index → pid of its current worker."""
        return {index: link.worker.pid for index, link in self._links.items()}

    def ready(self) -> tuple[int, ...]:
        """The slots whose current worker has reported ``Ready``, in order."""
        return tuple(sorted(self._ready))

    def spawned(self) -> tuple[int, ...]:
        """The slots with a worker process (ready or still starting), in order."""
        return tuple(sorted(self._links))

    @property
    def generation(self) -> int | None:
        """The number of the generation the workers are handed (None before ``publish``)."""
        return None if self._current is None else self._current.generation

    def served(self) -> dict[int, int]:
        """Slot index → the generation last handed to its current worker (sent, not
        necessarily applied yet); a worker not handed one yet is not listed."""
        return {index: link.sent for index, link in self._links.items() if link.sent}

    def publish(self, message: Apply) -> None:
        """Make ``message`` the generation every worker serves: each current worker is sent it
        (by its feeder, after any it is still being sent), and every worker started from now
        on starts from it."""
        self._current = message
        self._wake_feeders()

    def push_splits(self, service: str, percents: list[int]) -> None:
        """Every worker is to use ``percents`` as the live split of ``service``."""
        self.splits[service] = percents
        self._splits_version += 1
        self._wake_feeders()

    def push_challenges(self, state: BoardState) -> None:
        """Every worker is to answer the ACME challenges of ``state`` (SPEC §12.2)."""
        self._challenges = state
        self._challenges_version += 1
        self._wake_feeders()

    async def challenges_sent(self) -> None:
        """Until every ready worker has been sent the latest challenges (at most
        ``CHALLENGE_WAIT`` seconds: a stuck worker must not hold up the order)."""
        version = self._challenges_version
        with trio.move_on_after(CHALLENGE_WAIT):
            while any(
                link.challenges_seen < version
                for index, link in self._links.items()
                if index in self._ready
            ):
                await self._challenges_news.wait()

    def keep_splits(self, services: Collection[str]) -> None:
        """Forget the splits of the services not in ``services`` (their rollout is gone: a
        worker started from now on uses its generation's configured split)."""
        gone = [name for name in self.splits if name not in services]
        for name in gone:
            del self.splits[name]
        if gone:  # the workers forget them too
            self._splits_version += 1
            self._wake_feeders()

    def _wake_feeders(self) -> None:
        news, self._news = self._news, trio.Event()
        news.set()

    def state(self) -> GatewayState:
        """``starting`` until every worker has been ready once, ``running``, then ``stopping``
        from the first stop signal (a worker missing later does not change it: ``/ready``
        and ``/health`` report that, ``management/fleet.py``)."""
        if self._stopping.is_set():
            return GatewayState.STOPPING
        if not self._all_ready.is_set():
            return GatewayState.STARTING
        return GatewayState.RUNNING

    async def query(self, kind: QueryKind, expect: type[R], *, within: float) -> Answers[R]:
        """Ask every ready worker for ``kind`` at once; wait at most ``within`` seconds for each.

        A worker that does not answer in time, exits meanwhile, or answers with the wrong
        message is left out (``Answers.missing``), logged and counted in ``query_failures``.
        """
        asked = [(index, self._links[index]) for index in self.ready()]
        replies: dict[int, R] = {}
        missing: list[int] = []

        async def ask(index: int, link: _Link) -> None:
            reply = await link.ask(kind, within)
            if isinstance(reply, expect):
                replies[index] = reply
                return
            missing.append(index)
            self.query_failures[kind] = self.query_failures.get(kind, 0) + 1
            why = "no answer" if reply is None else f"a {type(reply).__name__}"
            log.warning(
                "worker %d (pid %d): %s to the %s query within %gs; left out",
                index,
                link.worker.pid,
                why,
                kind,
                within,
            )

        async with trio.open_nursery() as nursery:
            for index, link in asked:
                nursery.start_soon(ask, index, link)
        return Answers({index: replies[index] for index in sorted(replies)}, tuple(sorted(missing)))

    async def run(
        self,
        signals: AsyncIterator[int],
        *,
        reloader: Reloader | None = None,
        probes: FleetProbes | None = None,
        scaling: FleetScaling | None = None,
    ) -> int:
        """Start the workers, supervise them until stopped; the process exit code.

        With ``reloader`` (whose target is a ``Fleet`` of this supervisor), the file is watched
        and SIGHUP goes through ``reloader.reload_now``; without, SIGHUP is forwarded as is.
        ``probes`` (writing to ``health``) run for as long as the workers are supervised.
        """
        self.started_at = trio.current_time()
        async with trio.open_nursery() as supervisor:
            on_sighup: Callable[[], None] = self._forward_sighup
            if reloader is not None:
                await supervisor.start(reloader.run)
                on_sighup = partial(_start_reload, supervisor, reloader)
            if probes is not None:
                await supervisor.start(probes.run)
            if scaling is not None:
                await supervisor.start(scaling.run)
            supervisor.start_soon(self._handle_signals, signals, on_sighup)
            supervisor.start_soon(self._watch_start_up)
            supervisor.start_soon(self._bound_drain)
            async with trio.open_nursery() as slots:
                for index in range(self._count):
                    slots.start_soon(self._keep_running, index)
            supervisor.cancel_scope.cancel()
        return self.exit_code

    def stop(self, exit_code: int) -> None:
        """Drain: SIGTERM to every worker; ``run`` returns ``exit_code`` once all have exited.
        Does nothing if already stopping."""
        if self._stopping.is_set():
            return
        self.exit_code = exit_code
        self._stopping.set()
        self._send_all(signal.SIGTERM)

    def kill(self, exit_code: int) -> None:
        """Stop now: SIGKILL to every worker."""
        self.exit_code = exit_code
        self._stopping.set()
        self._send_all(signal.SIGKILL)

    def forward_sighup(self) -> None:
        """SIGHUP to every ready worker: each reopens its access log (reloads reach workers
        as ``Apply``, never as a signal)."""
        for index in self.ready():
            self._links[index].worker.signal(signal.SIGHUP)

    def _send_all(self, signum: int) -> None:
        for link in self._links.values():
            link.worker.signal(signum)

    def _forward_sighup(self) -> None:
        log.info("signal SIGHUP: forwarded to %d worker(s)", len(self._ready))
        self.forward_sighup()

    async def _handle_signals(
        self, signals: AsyncIterator[int], on_sighup: Callable[[], None]
    ) -> None:
        """Act on each signal (module docstring); SIGHUP calls ``on_sighup``."""
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                on_sighup()
            elif not self._stopping.is_set():
                log.info("signal %s: draining workers", name)
                self.stop(EXIT_OK)
            else:
                log.warning("second signal %s: killing workers", name)
                self.kill(128 + signum)

    async def _watch_start_up(self) -> None:
        with trio.move_on_after(self._start_deadline) as scope:
            await self._all_ready.wait()
        if scope.cancelled_caught and not self._stopping.is_set():
            log.error("workers not ready after %gs: stopping", self._start_deadline)
            self.stop(EXIT_START)

    async def _bound_drain(self) -> None:
        await self._stopping.wait()
        await trio.sleep(self._drain_bound)
        if self._links:
            log.error("workers still running %gs after the stop: killing them", self._drain_bound)
            self._send_all(signal.SIGKILL)

    async def _keep_running(self, index: int) -> None:
        """One slot: spawn, follow, reap; restart with backoff until stopping."""
        failures = 0
        while not self._stopping.is_set():
            started_at = trio.current_time()
            code, what = await self._run_once(index)
            if self._stopping.is_set():
                return
            if not self._all_ready.is_set():
                log.error("%s failed to start: %s", what, _how(code))
                self.stop(EXIT_CONFIG if code == EXIT_CONFIG else EXIT_START)
                return
            now = trio.current_time()
            failures, delay = after_crash(failures, started_at=started_at, now=now)
            log.error("%s %s; restarting in %gs", what, _how(code), delay)
            with trio.move_on_after(delay):
                await self._stopping.wait()
            if not self._stopping.is_set():
                self.restarts += 1

    async def _run_once(self, index: int) -> tuple[int, str]:
        """Spawn slot ``index``'s worker and follow it until it has exited and been reaped:
        its exit code and a name for the logs. A failed spawn counts as exit code 3."""
        try:
            worker = self._spawn(index)
        except OSError as error:
            await trio.lowlevel.checkpoint()
            return EXIT_START, f"worker {index} (spawn: {error.strerror or error})"
        link = self._links[index] = _Link(worker)
        try:
            async with trio.open_nursery() as channel:
                channel.start_soon(self._feed, index, link)
                # The only reader of this channel (module docstring): readiness and replies.
                while (message := await worker.receive()) is not None:
                    self._on_message(index, link, message)
                channel.cancel_scope.cancel()
            return await worker.wait(), f"worker {index} (pid {worker.pid})"
        finally:
            link.close()
            del self._links[index]
            self._ready.discard(index)

    async def _feed(self, index: int, link: _Link) -> None:
        """Send slot ``index``'s worker the current generation and then the whole health
        table, first thing; then each newer generation ``publish`` makes current and what
        changed in ``health`` (the newest only, if several came meanwhile), until cancelled or
        the channel breaks."""
        while True:
            news = self._news
            outgoing = self._next_for(link)
            if outgoing is None:
                await news.wait()
                continue
            message, mark = outgoing
            try:
                await link.worker.send(message)
            except OSError as error:  # it exited: the slot task sees the end of the channel
                what = type(message).__name__
                log.debug("worker %d: %s message not sent: %s", index, what, error)
                return
            if isinstance(message, Apply):
                link.sent = mark
            elif isinstance(message, Health):
                link.health_seen = mark
            elif isinstance(message, Challenges):
                link.challenges_seen = mark
                self._challenges_news.set()
                self._challenges_news = trio.Event()
            else:
                link.splits_seen = mark

    def _next_for(self, link: _Link) -> tuple[Command, int] | None:
        """What ``link``'s worker is to be sent next, with the generation or health version
        it brings the worker to; None: nothing. A newer generation comes before the health
        news, and the health only once the worker has a generation (``worker_main``)."""
        current = self._current
        if current is not None and current.generation > link.sent:
            return current, current.generation
        if not link.sent:
            return None
        news = self.health.since(link.health_seen)
        if news is not None:
            return Health(list(news.states), list(news.passed), news.full), news.version
        if link.splits_seen < self._splits_version:
            return Splits(dict(self.splits)), self._splits_version
        if link.challenges_seen < self._challenges_version:
            return Challenges(self._challenges), self._challenges_version
        return None

    def _on_message(self, index: int, link: _Link, message: WorkerMessage) -> None:
        if isinstance(message, Activate):
            if self.on_activate is not None:
                self.on_activate(message.service)
            return
        if not isinstance(message, Ready):
            link.deliver(message)
            return
        worker = link.worker
        if index in self._ready:
            log.warning("worker %d (pid %d): a second Ready ignored", index, worker.pid)
            return
        self._ready.add(index)
        log.debug("worker %d ready pid=%d addresses=%s", index, worker.pid, message.addresses)
        if self._all_ready.is_set():
            log.info("worker %d restarted: pid %d", index, worker.pid)
        elif len(self._ready) == self._count:
            log.info("workers ready: %d", self._count)
            self._all_ready.set()
            self.serving.set()


@dataclass(frozen=True, slots=True)
class Answers(Generic[R]):
    """What ``Supervisor.query`` collected: slot index → reply, and the ready slots that gave
    none (in slot order)."""

    replies: dict[int, R]
    missing: tuple[int, ...]


@dataclass(slots=True)
class _Waiter:
    """One query awaiting its reply (``None``: none came)."""

    done: trio.Event = field(default_factory=trio.Event)
    reply: Reply | None = None


class _Link:
    """The supervisor's end of one worker's control channel (module docstring): the worker,
    and the queries awaiting a reply by id. ``deliver`` is called by the slot task, the only
    reader; ``close`` when the worker has exited."""

    __slots__ = (
        "_closed",
        "_last_id",
        "_waiting",
        "challenges_seen",
        "health_seen",
        "sent",
        "splits_seen",
        "worker",
    )

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        #: The last generation sent to this worker (0: none yet).
        self.sent = 0
        #: The ``HealthTable`` version this worker has been told (-1: nothing yet).
        self.health_seen = -1
        #: The splits version this worker has been sent (0: none).
        self.splits_seen = 0
        #: The ACME challenges version this worker has been sent (0: none).
        self.challenges_seen = 0
        self._last_id = 0
        self._waiting: dict[int, _Waiter] = {}
        self._closed = False

    async def ask(self, kind: QueryKind, within: float) -> Reply | None:
        """Send a ``kind`` query and wait for its reply, at most ``within`` seconds (the
        send included); None when none came (timeout, exit, broken channel)."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return None
        self._last_id += 1
        query_id = self._last_id
        waiter = self._waiting[query_id] = _Waiter()
        try:
            with trio.move_on_after(within):
                await self.worker.send(Query(query_id, kind))
                await waiter.done.wait()
        except OSError as error:
            log.debug("worker pid %d: query not sent: %s", self.worker.pid, error)
        finally:
            self._waiting.pop(query_id, None)
        return waiter.reply

    def deliver(self, reply: Reply) -> None:
        """Hand ``reply`` to the query with its id; a reply nobody waits for any more (it
        came after the timeout) is dropped."""
        waiter = self._waiting.pop(reply.id, None)
        if waiter is None:
            log.debug("worker pid %d: late reply %d dropped", self.worker.pid, reply.id)
            return
        waiter.reply = reply
        waiter.done.set()

    def close(self) -> None:
        """The worker exited: every waiting query ends now, without a reply."""
        self._closed = True
        for waiter in self._waiting.values():
            waiter.done.set()
        self._waiting.clear()


class Fleet:
    """The supervisor as a reload target (``providers.ReloadTarget``) and the owner of the
    config generations: the start's config is generation 1; a valid candidate is compiled once
    (``compile_runtime``; a failure rejects it, no worker sees it), recorded as the running
    config, published to the workers (``Supervisor.publish``: module docstring) and handed to
    ``probes`` (the supervisor's probers, which probe that runtime's backends). ``listeners``
    are told of every applied config (the management API's settings)."""

    def __init__(
        self,
        supervisor: Supervisor,
        config: Config,
        runtime: RuntimeConfig,
        *,
        deps: MiddlewareDeps | None = None,
        probes: FleetProbes | None = None,
    ) -> None:
        self._supervisor = supervisor
        #: The autoscalers and rollouts (SPEC §11), told of every generation.
        self.scaling = FleetScaling(supervisor, lambda: self._runtime)
        supervisor.on_activate = self.scaling.poke
        self._config = config
        self._runtime = runtime
        self._deps = deps
        self._probes = probes
        self._generation = runtime.generation
        supervisor.publish(apply_message(config, self._generation))
        #: Candidates rejected before reaching the workers.
        self.failed_reloads = 0
        #: The last reload attempt (trio clock), as ``Gateway.health().last_reload``.
        self.last_reload: ReloadStatus | None = None
        #: Unix time the running config was applied (``a3s_config_last_reload_timestamp_…``).
        self.applied_at = time.time()
        self.listeners: list[Callable[[Config], None]] = []

    @property
    def config_generation(self) -> int:
        """Validated generations so far (1 = the start)."""
        return self._generation

    @property
    def runtime(self) -> RuntimeConfig:
        """The running config compiled by the supervisor (never serves traffic)."""
        return self._runtime

    def config(self) -> Config:
        return self._config

    def health(self) -> Fleet:
        return self

    async def reload(self, config: Config) -> int:
        generation = self._generation + 1
        compile_new = partial(_compile, config, generation, self._deps)
        try:
            # As in ``Gateway.reload``: ~70 ms of CPU for 300 rules, off the event loop.
            runtime, message = await trio.to_thread.run_sync(compile_new)
        except StartError as error:
            self.record_failed_reload(1)
            raise ReloadError(str(error)) from error
        self._config = config
        self._runtime = runtime
        self._generation = generation
        self.applied_at = time.time()
        self.last_reload = ReloadStatus(time=trio.current_time(), ok=True, problem_count=0)
        for listener in self.listeners:
            listener(config)
        log.info(
            "config validated: generation %d; reloading %d worker(s)",
            self._generation,
            len(self._supervisor.pids()),
        )
        if self._probes is not None:
            self._probes.offer(runtime)  # its health news follows the generation's Apply
        self._supervisor.publish(message)
        self.scaling.apply(runtime)
        return self._generation

    def record_failed_reload(self, problem_count: int) -> None:
        self.failed_reloads += 1
        self.last_reload = ReloadStatus(
            time=trio.current_time(), ok=False, problem_count=problem_count
        )


def _compile(
    config: Config, generation: int, deps: MiddlewareDeps | None
) -> tuple[RuntimeConfig, Apply]:
    """``config`` compiled (``StartError`` if it cannot be) and encoded for the workers."""
    return compile_runtime(config, generation, deps=deps), apply_message(config, generation)


def _start_reload(nursery: trio.Nursery, reloader: Reloader) -> None:
    """SIGHUP with a reloader: a reload of the file, as a task of ``nursery`` (the
    supervisor's, handed over by ``Supervisor.run``; the reloader serialises reloads)."""
    log.info("signal SIGHUP: validating the config file")
    nursery.start_soon(partial(reloader.reload_now, force=True))


def _how(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


# ----------------------------------------------------------------------------- entry point


def run_supervisor(
    path: str,
    *,
    workers: int,
    listen: str | None,
    log_level: str,
    log_format: str,
    config: Config | None = None,
) -> int:
    """``run --workers N`` (N > 1): supervise N workers until a signal; the exit code (SPEC
    §2.5). ``config``: the config the CLI loaded and checked from ``path`` (without
    ``--listen``), handed to the workers as generation 1; None: ``path`` is loaded and checked
    again here. Blocking (runs ``trio.run``)."""
    fmt: applog.LogFormat = "json" if log_format == "json" else "text"
    applog.install(log_level, fmt)
    if not hasattr(socket, "SO_REUSEPORT"):
        log.error("--workers > 1 needs SO_REUSEPORT, which this platform lacks")
        return EXIT_START
    if config is None:
        config = _load(path, workers)
        if config is None:
            return EXIT_CONFIG
    # ``--listen`` applies to every generation (the workers re-apply it, with their ports).
    prepare = (
        partial(apply_listen_override, address=Address(listen)) if listen is not None else None
    )
    if prepare is not None:
        config = prepare(config)
    serving = trio.Event()
    hub, challenges, config = _providers(config, workers, path, serving)
    _raise_file_limit()  # inherited by the workers
    # The supervisor compiles every generation once but never serves: its outbound clients
    # (which middleware factories need) are never started.
    deps = Outbound().deps()
    held: list[socket.socket] = []
    try:
        runtime = compile_runtime(config, 1, deps=deps)
        ports, held = reserve_ports(config)
        template = WorkerSpec(
            index=0, listen=listen, log_level=log_level, log_format=fmt, ports=ports
        )
        spawn = partial(_spawn, multiprocessing.get_context("spawn"), template)
        drain_bound = config.shutdown_timeout_secs + DRAIN_MARGIN
        supervisor = Supervisor(workers, spawn, drain_bound=drain_bound, serving=serving)
        challenges.on_change = lambda: supervisor.push_challenges(challenges.state())
        challenges.delivered = supervisor.challenges_sent
        # Probes run here, once for all workers (SPEC §13.4); counted in the API's metrics.
        metrics = GatewayMetrics(True, version=__version__)
        probes = FleetProbes(supervisor.health, runtime, metrics=metrics)
        fleet = Fleet(supervisor, config, runtime, deps=deps, probes=probes)
        reloader = Reloader(fleet, path, workers=workers, prepare=prepare, hub=hub)
        server = _management_server(config, supervisor, fleet, reloader, metrics)
        return trio.run(_supervise, supervisor, reloader, server, probes, fleet)
    except StartError as error:
        log.error("%s", error)
        return EXIT_START
    finally:
        for sock in held:
            sock.close()


def _providers(
    config: Config, workers: int, path: str, serving: trio.Event
) -> tuple[ProviderHub, ChallengeBoard, Config]:
    """The dynamic providers run here (SPEC §13.4): generation 1 leaves pending references out
    and has the stored ACME certificates; the ACME challenges are pushed to every worker."""
    challenges = ChallengeBoard()
    hub = ProviderHub(acme=acme_factory(challenges, serving=serving))
    hub.apply(config)
    return hub, challenges, hub.merge(config, workers=workers, default_file=path).config


def _spawn(context: SpawnContext, template: WorkerSpec, index: int) -> Worker:
    return ProcessWorker(context, msgspec.structs.replace(template, index=index))


def _management_server(
    config: Config,
    supervisor: Supervisor,
    fleet: Fleet,
    reloader: Reloader,
    metrics: GatewayMetrics,
) -> FleetManagementServer | None:
    """The supervisor's management API when ``management {}`` enables it (``StartError`` when
    its TLS files are unusable), its own families in ``metrics``; reloads update its
    settings."""
    settings = config.management
    if settings is None or not settings.enabled:
        return None
    api = FleetApi(supervisor, fleet, reloader, metrics=metrics)
    server = FleetManagementServer(settings, api)
    fleet.listeners.append(server.apply)
    return server


async def _supervise(
    supervisor: Supervisor,
    reloader: Reloader,
    server: FleetManagementServer | None,
    probes: FleetProbes,
    fleet: Fleet,
) -> int:
    """Bind the management listener (exit 3 if it cannot be bound), then supervise; the API
    answers until every worker has exited."""
    listeners: list[trio.SocketListener] = []
    if server is not None:
        try:
            listeners = await open_management_listener(server.settings)
        except StartError as error:
            log.error("%s", error)
            return EXIT_START
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            if server is not None:
                await nursery.start(server.serve, listeners)
            code = await supervisor.run(
                signals, reloader=reloader, probes=probes, scaling=fleet.scaling
            )
            nursery.cancel_scope.cancel()
    return code


def _load(path: str, workers: int) -> Config | None:
    """Load and check ``path`` as the CLI does (its warnings were reported there); None, with
    the problems logged, if it has an error."""
    result = load(path, options=LoadOptions(workers=workers))
    problems = check(result, offline=False)
    if result.config is None or any(problem.severity == "error" for problem in problems):
        for problem in problems:
            log.error("%s", problem.format())
        return None
    return result.config


def _raise_file_limit() -> None:
    """SPEC §2.6: RLIMIT_NOFILE soft limit up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
