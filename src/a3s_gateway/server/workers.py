"""The multi-worker supervisor of ``run --workers N`` with N > 1 (SPEC §13.4).

Ring 1 (trio, sockets, processes) with a Ring-0 core: ``restart_delay`` and ``after_crash`` are
plain functions of ``now``. One supervisor process serves no traffic; it starts N worker
processes with the ``spawn`` start method (``server/worker_main.py``), each of which loads the
config itself and binds every entrypoint with ``SO_REUSEPORT``, so the kernel spreads new
connections over the workers.

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

Reload (SPEC §13.4): the supervisor owns the file watching. SIGHUP and a change of the file
(``providers.Reloader`` with ``Fleet`` as its target, debounced, unchanged candidates
skipped) validate the file once, in the supervisor's candidate-builder child; a valid
candidate is forwarded as SIGHUP to every ready worker, which then reloads from the file
itself; an invalid one is logged by the supervisor and no worker reloads. (A file changed again
between the validation and a worker's read is read by the worker as it is then; the change
also triggers the next validation.) A worker that
exits unexpectedly is logged and restarted after ``restart_delay`` (1 s doubling to 30 s; the
count resets once a worker has run ``STABLE_AFTER`` seconds); the others keep serving. If a
worker fails during the initial start-up (config or bind error), the others are stopped and the
supervisor exits 1 (config) or 3 (anything else).

Nurseries: ``Supervisor.run`` owns the *supervisor* nursery (signal handling, the start-up
deadline, the drain bound) and inside it the *slots* nursery (one task per worker slot: spawn,
read the control channel, reap, restart); the supervisor nursery is cancelled once every slot
task has returned. Deadlines: ``START_DEADLINE`` for the first readiness of all workers, and the
drain bound (``shutdown_timeout_secs`` + ``DRAIN_MARGIN``) after which survivors get SIGKILL.

State per worker (SPEC §13.4) — every worker has its own: downstream connections and upstream
pools; balancer positions (round-robin, least-connections counts); in-memory ``rate-limit``
buckets (effective limit = N × configured); circuit breakers, retry budgets, passive health;
mirror sampling and concurrency; ws-mux hubs; UDP sessions; ``max_connections`` and tcp-filter
counts; request counters and metrics. Global state: the config file (each worker reads it),
Redis (``rate-limit-redis``), the stateless sticky cookie, ACME storage on the filesystem, and
the reserved port-0 sockets above (held here).

Must not: serve traffic, parse arguments, or signal a process it has already reaped (its pid
may have been reused).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import resource
import signal
import socket
from functools import partial
from typing import TYPE_CHECKING, Final

import msgspec
import trio

from a3s_gateway.config.load import LoadOptions, load
from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.values import Address
from a3s_gateway.errors import StartError
from a3s_gateway.observability import applog
from a3s_gateway.providers import Reloader
from a3s_gateway.server.worker_main import ProcessWorker, Ready, Worker, WorkerSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from multiprocessing.context import SpawnContext

    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.schema_entrypoints import Entrypoint

__all__ = [
    "Fleet",
    "Supervisor",
    "after_crash",
    "reserve_ports",
    "restart_delay",
    "run_supervisor",
]

log: Final = logging.getLogger("a3s_gateway.workers")

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 1
EXIT_START: Final = 3

BACKOFF_FIRST: Final = 1.0
BACKOFF_MAX: Final = 30.0
#: A worker that ran this long before exiting counts as stable: its backoff starts again at 1 s.
STABLE_AFTER: Final = 60.0
#: Every worker must report ready within this many seconds of the start, or the start failed.
START_DEADLINE: Final = 60.0
#: Added to ``shutdown_timeout_secs`` (the workers' drain grace and pool close) before SIGKILL.
DRAIN_MARGIN: Final = 10.0
_RESERVE_ATTEMPTS: Final = 5


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
    """Keeps ``count`` workers from ``spawn(index)`` running until a signal (module docstring).

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
    ) -> None:
        self._count = count
        self._spawn = spawn
        self._drain_bound = drain_bound
        self._start_deadline = start_deadline
        self._alive: dict[int, Worker] = {}
        self._ready: set[int] = set()
        self._reloader: Reloader | None = None
        self._nursery: trio.Nursery | None = None
        self._all_ready = trio.Event()
        self._stopping = trio.Event()
        self.exit_code = EXIT_OK
        #: Restarts done so far (for logs and tests).
        self.restarts = 0

    def pids(self) -> dict[int, int]:
        """Slot index → pid of its current worker."""
        return {index: worker.pid for index, worker in self._alive.items()}

    async def run(self, signals: AsyncIterator[int], *, reloader: Reloader | None = None) -> int:
        """Start the workers, supervise them until stopped; the process exit code.

        With ``reloader`` (whose target is a ``Fleet`` of this supervisor), the file is watched
        and SIGHUP goes through ``reloader.reload_now``; without, SIGHUP is forwarded as is.
        """
        async with trio.open_nursery() as supervisor:
            self._nursery = supervisor
            if reloader is not None:
                self._reloader = reloader
                await supervisor.start(reloader.run)
            supervisor.start_soon(self._handle_signals, signals)
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

    def reload(self) -> None:
        """SIGHUP to every ready worker (one still starting reads the file anyway)."""
        for index in sorted(self._ready):
            self._alive[index].signal(signal.SIGHUP)

    def _send_all(self, signum: int) -> None:
        for worker in self._alive.values():
            worker.signal(signum)

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                if self._reloader is not None and self._nursery is not None:
                    log.info("signal %s: validating the config file", name)
                    self._nursery.start_soon(partial(self._reloader.reload_now, force=True))
                else:
                    log.info("signal %s: reloading %d worker(s)", name, len(self._ready))
                    self.reload()
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
        if self._alive:
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
        self._alive[index] = worker
        try:
            while (message := await worker.receive()) is not None:
                self._on_message(index, worker, message)
            return await worker.wait(), f"worker {index} (pid {worker.pid})"
        finally:
            del self._alive[index]
            self._ready.discard(index)

    def _on_message(self, index: int, worker: Worker, message: Ready) -> None:
        self._ready.add(index)
        log.debug("worker %d ready pid=%d addresses=%s", index, worker.pid, message.addresses)
        if self._all_ready.is_set():
            log.info("worker %d restarted: pid %d", index, worker.pid)
        elif len(self._ready) == self._count:
            log.info("workers ready: %d", self._count)
            self._all_ready.set()


class Fleet:
    """The supervisor as a reload target (``providers.ReloadTarget``): a valid candidate is
    recorded as the running config and forwarded to the ready workers as SIGHUP."""

    def __init__(self, supervisor: Supervisor, config: Config) -> None:
        self._supervisor = supervisor
        self._config = config
        self._generation = 1
        #: Candidates rejected before reaching the workers.
        self.failed_reloads = 0

    @property
    def config_generation(self) -> int:
        """Validated generations so far (1 = the start)."""
        return self._generation

    def config(self) -> Config:
        return self._config

    def health(self) -> Fleet:
        return self

    async def reload(self, config: Config) -> int:
        await trio.lowlevel.checkpoint()
        self._config = config
        self._generation += 1
        log.info(
            "config validated: generation %d; reloading %d worker(s)",
            self._generation,
            len(self._supervisor.pids()),
        )
        self._supervisor.reload()
        return self._generation

    def record_failed_reload(self, problem_count: int) -> None:
        del problem_count
        self.failed_reloads += 1


def _how(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


# ----------------------------------------------------------------------------- entry point


def run_supervisor(
    path: str, *, workers: int, listen: str | None, log_level: str, log_format: str
) -> int:
    """``run --workers N`` (N > 1): supervise N workers until a signal; the exit code (SPEC
    §2.5). The CLI has already loaded and validated ``path``; blocking (runs ``trio.run``)."""
    fmt: applog.LogFormat = "json" if log_format == "json" else "text"
    applog.install(log_level, fmt)
    if not hasattr(socket, "SO_REUSEPORT"):
        log.error("--workers > 1 needs SO_REUSEPORT, which this platform lacks")
        return EXIT_START
    config = _load(path, workers, listen)
    if config is None:
        return EXIT_CONFIG
    _raise_file_limit()  # inherited by the workers
    try:
        ports, held = reserve_ports(config)
    except StartError as error:
        log.error("%s", error)
        return EXIT_START
    template = WorkerSpec(
        index=0, path=path, workers=workers, listen=listen, log_level=log_level,
        log_format=fmt, ports=ports,
    )  # fmt: skip
    context = multiprocessing.get_context("spawn")
    spawn = partial(_spawn, context, template)
    supervisor = Supervisor(workers, spawn, drain_bound=config.shutdown_timeout_secs + DRAIN_MARGIN)
    prepare = (
        partial(apply_listen_override, address=Address(listen)) if listen is not None else None
    )
    reloader = Reloader(Fleet(supervisor, config), path, workers=workers, prepare=prepare)
    try:
        return trio.run(_supervise, supervisor, reloader)
    finally:
        for sock in held:
            sock.close()


def _spawn(context: SpawnContext, template: WorkerSpec, index: int) -> Worker:
    return ProcessWorker(context, msgspec.structs.replace(template, index=index))


async def _supervise(supervisor: Supervisor, reloader: Reloader) -> int:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        return await supervisor.run(signals, reloader=reloader)


def _load(path: str, workers: int, listen: str | None) -> Config | None:
    """The config as the workers will see it (``--listen`` applied), for ports and the grace."""
    result = load(path, options=LoadOptions(workers=workers))
    if result.config is None:
        for problem in result.problems:
            log.error("%s", problem.format())
        return None
    if listen is None:
        return result.config
    return apply_listen_override(result.config, Address(listen))


def _raise_file_limit() -> None:
    """SPEC §2.6: RLIMIT_NOFILE soft limit up to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
