"""One worker process of the multi-worker layout (SPEC §13.4): both ends of it.

The supervisor's end (Ring 1): ``ProcessWorker`` starts ``worker_main`` with the ``spawn``
start method and is the supervisor's handle on it — control channel, exit, signals (the
``Worker`` protocol, which tests fake). Inside the worker (Ring 2 for its process):
``worker_main`` plays the CLI's part — it installs the application log (every line naming the
worker: a last field ``worker=<n>``, ``observability/applog.py``) and its own signal handlers,
waits for its config from the supervisor, builds a ``Gateway`` with ``reuse_port=True`` and
serves it under ``trio.run``.

Config (issue #14): a worker never reads the operator's config file. Every generation it serves
comes from the supervisor, which validated it (at start and on each reload), over the control
channel as ``Apply``: the ``Config`` as loaded, every ``${VAR}`` already interpolated with the
supervisor's values (msgpack, value classes as their text: ``providers/candidate.py``'s codec),
and the interpolated strings to redact (``schema.secrets_of``), so it redacts as the original
does. The first message is the generation to start with — a restarted worker thus starts from
the supervisor's current generation, whatever the file on disk says now, or if it is gone —
and each later one is a reload. Nothing of it touches the disk or the log: the channel is a
socketpair between the two processes. ``_prepare`` applies the ``--listen`` override and the
reserved ports to every generation.

Active health (SPEC §7.4 "Multi-worker", §13.4): the supervisor probes every backend once for
all workers (``probes/broadcast.py``), so a worker runs ``Gateway(probes=False)``: no prober of
its own. The second message is the supervisor's whole table of verdicts (``Health``, ``full``),
which the gateway holds before it serves, so a started or restarted worker never routes to a
backend the supervisor knows is down; each later ``Health`` brings what changed (or the whole
table again after a reload) and the probe successes that re-admit a passively ejected backend,
and goes straight to ``Gateway.push_health``. Passive health stays the worker's own.

Control channel: one end of a ``multiprocessing`` duplex ``Pipe`` (a socketpair).
``Connection.send_bytes`` already frames each message with a 4-byte length prefix, and the
payload is a msgpack-encoded, tagged msgspec ``Struct`` (the SPEC's "length-prefixed msgspec
messages"). Worker → supervisor: ``Ready`` once every listener is bound, then one reply per
query. Supervisor → worker: ``Apply`` (``generation``, ``config``, ``secrets``) first, and again
on each reload; ``Health`` (``states``, ``passed``, ``full``) second, and again whenever the
supervisor's verdicts change; ``Query`` (``id``, ``kind``), answered with the same ``id`` by
``MetricsReply`` (``metrics``: ``Gateway.metrics_snapshot()``), ``StateReply`` (``state``:
lifecycle, connections per entrypoint, requests, bound addresses) or ``DocumentsReply``
(``services``, ``middlewares``: the management API's documents of this worker's running
generation, built by ``management/api.py``). End-of-file means the supervisor is gone and the
worker drains. The worker reads the channel from one task, each message in a thread once
readable (an ``Apply`` can be large), and answers queries one at a time, in order; each reply
is written from a thread too, so a large snapshot never blocks the event loop (one writer at a
time: the replies are sequential and ``Ready`` was written before the first query could
arrive). The supervisor sends queries only to workers that reported ``Ready``
(``supervisor/workers.py``), so replies always follow it; its ``ProcessWorker.send`` serialises
its writes and writes a large message from a thread.

Reload: ``_Generations`` applies the generations handed to a serving worker one at a time
(``Gateway.reload``: compile, bind, swap), a newer one replacing an older one still waiting,
and reopens the access log for each (as the SIGHUP that used to carry a reload did). One the
gateway refuses (a bind failure, a drain) is logged; the worker keeps the generation it
serves. Workers do not watch the file and never see the config's warnings (the CLI and the
supervisor's validation report each once).

Signals: SIGINT is ignored (a terminal's Ctrl-C reaches the whole process group; the supervisor
decides and forwards SIGTERM). SIGTERM starts the drain; repeated SIGTERMs change nothing
(a supervisor that wants it dead now uses SIGKILL), so a SIGTERM sent both to the process
group and by the supervisor does not skip the drain. SIGHUP only reopens the access log
(reloads come from the supervisor, above).

Nurseries: ``ProcessWorker`` owns none (its awaits run in the supervisor's slot task). In the
worker, ``_serve`` owns one nursery holding ``Gateway.serve``, the supervisor's channel reader,
the generations task and the drain task; it ends when ``Gateway.serve`` returns. Deadlines:
``FIRST_CONFIG_WAIT`` for the first ``Apply`` and ``Health``; the drain grace is the gateway's.
Must not: read the config file, bind sockets itself (nor the management listener, which the
supervisor owns: ``Gateway(management=False)``), probe backends (``Gateway(probes=False)``),
parse arguments, write to stdout, or log a config's contents.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias

import msgspec
import trio

from a3s_gateway.acme.board import BoardState
from a3s_gateway.app import Gateway
from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.schema import remember_secrets, secrets_of
from a3s_gateway.config.values import Address
from a3s_gateway.errors import GatewayError
from a3s_gateway.management.api import (
    Clock,
    middleware_documents,
    service_documents,
)
from a3s_gateway.observability import applog
from a3s_gateway.providers.candidate import decode_config, encode_config

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnContext

    from a3s_gateway.config.schema import Config

__all__ = [
    "FIRST_CONFIG_WAIT",
    "Apply",
    "Challenges",
    "Command",
    "DocumentsReply",
    "Health",
    "MetricsReply",
    "ProcessWorker",
    "Query",
    "QueryKind",
    "Ready",
    "Reply",
    "StateReply",
    "Worker",
    "WorkerMessage",
    "WorkerSpec",
    "answer_query",
    "apply_message",
    "config_of",
    "decode_command",
    "decode_message",
    "decode_query",
    "encode_message",
    "with_ports",
    "worker_main",
]

log: Final = logging.getLogger("a3s_gateway.worker")

EXIT_OK: Final = 0
EXIT_CONFIG: Final = 1
EXIT_START: Final = 3
#: A bug, not a config or start problem (sysexits ``EX_SOFTWARE``); the traceback is logged.
EXIT_CRASH: Final = 70
#: How long a started worker waits for its first ``Apply`` and ``Health`` (sent at once).
FIRST_CONFIG_WAIT: Final = 60.0
#: Messages up to this size are written on the supervisor's event loop (a writable socket has
#: far more room than this); longer ones (an ``Apply``) from a thread.
_INLINE_SEND: Final = 4096


class WorkerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How to run a worker, pickled to it by ``spawn`` (no live objects, and no config: that
    comes over the control channel as ``Apply``)."""

    index: int
    listen: str | None
    log_level: str
    log_format: applog.LogFormat
    #: Entrypoint name → the port the supervisor reserved for a configured port 0.
    ports: dict[str, int]


class Ready(msgspec.Struct, frozen=True, tag="ready"):
    """Worker → supervisor: every listener is bound and accepting."""

    pid: int
    addresses: dict[str, list[tuple[str, int]]]


#: What the supervisor may ask a worker for.
QueryKind: TypeAlias = Literal["metrics", "state", "services", "middlewares", "scaling"]


class Query(msgspec.Struct, frozen=True, tag="query"):
    """Supervisor → worker: answer ``kind``, quoting ``id`` (unique per channel)."""

    id: int
    kind: QueryKind


class Apply(msgspec.Struct, frozen=True, tag="apply"):
    """Supervisor → worker: serve config generation ``generation`` (the supervisor's number),
    validated by the supervisor: the first one to start with, later ones as reloads."""

    generation: int
    #: ``encode_config`` of the ``Config`` as loaded (``${VAR}`` interpolated); secrets inside.
    config: bytes
    #: The interpolated strings its renderings must redact (``schema.secrets_of``).
    secrets: frozenset[str] = frozenset()

    def __repr__(self) -> str:
        # Never the config itself (it holds the secrets): a repr can end up in a log.
        return f"Apply(generation={self.generation}, config=<{len(self.config)} bytes>)"


class Health(msgspec.Struct, frozen=True, tag="health"):
    """Supervisor → worker: the supervisor's active health verdicts (module docstring)."""

    #: ``(service, server URL, healthy)``: the changed verdicts, or every one when ``full``.
    states: list[tuple[str, str, bool]]
    #: ``(service, server URL)`` of backends whose probe succeeded since the last ``Health``.
    passed: list[tuple[str, str]] = []
    #: ``states`` is the whole table: a verdict not in it is forgotten.
    full: bool = False


class MetricsReply(msgspec.Struct, frozen=True, tag="metrics"):
    """Worker → supervisor: ``GatewayMetrics.snapshot()`` (None: metrics are disabled)."""

    id: int
    snapshot: bytes | None


class StateReply(msgspec.Struct, frozen=True, tag="state"):
    """Worker → supervisor: a small state report."""

    id: int
    #: ``GatewayState`` value (``running``, ``reloading``, ``stopping``...).
    state: str
    #: Open downstream connections per entrypoint.
    connections: dict[str, int]
    #: Requests this worker has handled since it started.
    total_requests: int
    #: Bound addresses per entrypoint (port 0 resolved).
    addresses: dict[str, list[tuple[str, int]]]
    #: Per TLS entrypoint: each certificate it serves now, as (DNS names, notAfter).
    certificates: dict[str, list[tuple[list[str], float]]] = {}


class DocumentsReply(msgspec.Struct, frozen=True, tag="documents"):
    """Worker → supervisor: the management API's documents (``services``, ``middlewares``) of
    the worker's running generation (empty before it serves)."""

    id: int
    documents: list[dict[str, object]]


class ScalingPart(msgspec.Struct, frozen=True, array_like=True):
    """One scaled or split service in a ``ScalingReply``."""

    #: The worker's stable and panic concurrency averages (None: no complete bucket yet) and
    #: how many buckets they cover.
    stable: float | None
    panic: float | None
    buckets: int
    #: Requests in its scale-from-zero buffer now.
    depth: int
    #: The rollout's ``to`` traffic since the last report (``IntervalStats.to_wire``).
    sample: tuple[int, int, int, list[float]] | None = None


class ScalingReply(msgspec.Struct, frozen=True, tag="scaling"):
    """Worker → supervisor: its part of the autoscalers' and rollouts' inputs (SPEC §13.4)."""

    id: int
    services: dict[str, ScalingPart]


class Activate(msgspec.Struct, frozen=True, tag="activate"):
    """Worker → supervisor, unasked: a request of ``service`` found no available backend
    (SPEC §11.4: the autoscaler scales it from zero at once)."""

    service: str


class Splits(msgspec.Struct, frozen=True, tag="splits"):
    """Supervisor → worker: the live revision split of every service a rollout controls."""

    splits: dict[str, list[int]]


class Challenges(msgspec.Struct, frozen=True, tag="challenges"):
    """Supervisor → worker: every pending ACME challenge, to answer on its listeners
    (SPEC §12.2; the supervisor runs the orders)."""

    state: BoardState


Reply: TypeAlias = MetricsReply | StateReply | DocumentsReply | ScalingReply
WorkerMessage: TypeAlias = (
    Ready | MetricsReply | StateReply | DocumentsReply | ScalingReply | Activate
)
#: Supervisor → worker.
Command: TypeAlias = Query | Apply | Health | Splits | Challenges

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(WorkerMessage)
_query_decoder: Final = msgspec.msgpack.Decoder(Query)
_command_decoder: Final = msgspec.msgpack.Decoder(Command)


def encode_message(message: WorkerMessage | Command) -> bytes:
    """The payload of one control-channel message (either direction)."""
    return _encoder.encode(message)


def decode_message(data: bytes) -> WorkerMessage:
    """Decode one worker → supervisor message; raises ``msgspec.DecodeError`` if malformed."""
    return _decoder.decode(data)


def decode_query(data: bytes) -> Query:
    """Decode a ``Query``; raises ``msgspec.DecodeError`` if malformed (or another message)."""
    return _query_decoder.decode(data)


def decode_command(data: bytes) -> Command:
    """Decode one supervisor → worker message; raises ``msgspec.DecodeError`` if malformed."""
    return _command_decoder.decode(data)


def apply_message(config: Config, generation: int) -> Apply:
    """The ``Apply`` that hands ``config`` (validated) to the workers as ``generation``."""
    return Apply(generation, encode_config(config), secrets_of(config))


def config_of(message: Apply) -> Config:
    """The exact ``Config`` that ``message`` carries, its secrets remembered (for redaction).
    Raises ``msgspec.DecodeError`` if it does not decode."""
    config = decode_config(message.config)
    remember_secrets(config, message.secrets)
    return config


# ------------------------------------------------------------------ the supervisor's side


class Worker(Protocol):
    """One started worker process, as the supervisor sees it."""

    @property
    def pid(self) -> int: ...

    async def receive(self) -> WorkerMessage | None:
        """The next control message; ``None`` once the channel is closed (the worker exited)."""

    async def send(self, message: Command) -> None:
        """Write ``message`` to the worker (writes never interleave). Raises ``OSError`` when
        the channel is broken or closed."""

    async def wait(self) -> int:
        """Wait for the exit and reap; the exit code (−n for signal n)."""

    def signal(self, signum: int) -> None:
        """Send ``signum``; does nothing once the worker has been reaped."""


class ProcessWorker:
    """A ``spawn``-started ``worker_main`` and the supervisor's end of its duplex pipe."""

    def __init__(self, context: SpawnContext, spec: WorkerSpec) -> None:
        self._channel, theirs = context.Pipe(duplex=True)
        self._process = context.Process(
            target=worker_main, args=(spec, theirs), name=f"a3s-worker-{spec.index}", daemon=True
        )
        try:
            self._process.start()
        finally:
            theirs.close()
        assert self._process.pid is not None
        self._pid: int = self._process.pid
        self._reaped = False
        self._writing = trio.Lock()

    @property
    def pid(self) -> int:
        return self._pid

    async def receive(self) -> WorkerMessage | None:
        # The worker writes each message whole (a reply from its thread), so once the first
        # bytes are readable ``recv_bytes`` returns as fast as the kernel moves the rest.
        while True:
            await trio.lowlevel.wait_readable(self._channel.fileno())
            try:
                data = self._channel.recv_bytes()
            except (EOFError, OSError):
                return None
            try:
                return decode_message(data)
            except msgspec.DecodeError as error:
                log.warning("worker pid %d: bad control message: %s", self._pid, error)

    async def send(self, message: Command) -> None:
        # A query is a few dozen bytes: once the socket is writable (Linux: at most half of its
        # buffer in use) the write completes at once. A worker that stops reading thus makes
        # ``send`` wait here, under the caller's timeout, instead of blocking the loop. An
        # ``Apply`` can be megabytes: written from a thread (not cancellable once started; it
        # ends when the worker has read it or has exited), one writer at a time.
        payload = encode_message(message)
        async with self._writing:
            try:
                await trio.lowlevel.wait_writable(self._channel.fileno())
            except trio.ClosedResourceError:  # ``wait`` closed the channel meanwhile
                raise BrokenPipeError(f"worker pid {self._pid}: channel closed") from None
            if len(payload) <= _INLINE_SEND:
                self._channel.send_bytes(payload)
            else:
                await trio.to_thread.run_sync(self._channel.send_bytes, payload)

    async def wait(self) -> int:
        await trio.lowlevel.wait_readable(self._process.sentinel)
        self._process.join()  # the sentinel closed as the process exited: returns at once
        self._reaped = True
        code = self._process.exitcode
        trio.lowlevel.notify_closing(self._channel.fileno())
        self._channel.close()
        self._process.close()
        return -1 if code is None else code

    def signal(self, signum: int) -> None:
        if not self._reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signum)


# ------------------------------------------------------------------ inside the worker


def _format_address(host: str, port: int) -> str:
    if not host:
        return f":{port}"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def with_ports(config: Config, ports: dict[str, int]) -> Config:
    """``config`` with each named entrypoint's port replaced (the supervisor's port-0 choice)."""
    if not ports:
        return config
    entrypoints = dict(config.entrypoints)
    for name, port in ports.items():
        entry = entrypoints.get(name)
        if entry is not None and entry.address.port == 0:
            address = Address(_format_address(entry.address.host, port))
            entrypoints[name] = msgspec.structs.replace(entry, address=address)
    replaced = msgspec.structs.replace(config, entrypoints=entrypoints)
    remember_secrets(replaced, secrets_of(config))
    return replaced


def _prepare(config: Config, spec: WorkerSpec) -> Config:
    """The ``--listen`` override, then the reserved ports — on start and on every reload."""
    if spec.listen is not None:
        config = apply_listen_override(config, Address(spec.listen))
    return with_ports(config, spec.ports)


def worker_main(spec: WorkerSpec, channel: Connection[object, object]) -> None:
    """The ``multiprocessing`` target: serve until told to stop; exits 0, 1 (config) or 3."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Every line this process logs names its slot (``worker=<n>``; the supervisor's do not).
    applog.install(spec.log_level, spec.log_format, worker=spec.index)
    sys.exit(_run(spec, channel))


def _run(spec: WorkerSpec, channel: Connection[object, object]) -> int:
    try:
        return trio.run(_start, spec, channel)
    except (GatewayError, BaseExceptionGroup) as error:
        # A bind failure leaves ``nursery.start`` inside the nursery body, so it arrives
        # wrapped in an exception group (strict exception groups, trio ≥ 0.25).
        found = _gateway_error(error)
        if found is None:
            log.exception("crashed")
            return EXIT_CRASH
        log.error("%s", found)
        return EXIT_START
    except Exception:
        # Not exit 1, which the supervisor reads as "config error" during the start.
        log.exception("crashed")
        return EXIT_CRASH
    finally:
        channel.close()


def _gateway_error(error: BaseException) -> GatewayError | None:
    """``error`` itself or the first ``GatewayError`` inside it (exception groups)."""
    if isinstance(error, GatewayError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _gateway_error(inner)
            if found is not None:
                return found
    return None


async def _start(spec: WorkerSpec, channel: Connection[object, object]) -> int:
    """Wait for the first generation and the health table, then serve (``_serve``)."""
    opening = await _opening(channel)
    if opening is None:
        return EXIT_START
    first, health = opening
    try:
        config = _prepare(config_of(first), spec)
    except msgspec.DecodeError as error:
        log.error("config generation %d from the supervisor: %s", first.generation, error)
        return EXIT_CONFIG
    gateway = Gateway(config, reuse_port=True, management=False, probes=False)
    _push(gateway, health)
    return await _serve(gateway, spec, channel, first.generation)


async def _opening(channel: Connection[object, object]) -> tuple[Apply, Health] | None:
    """The supervisor's first messages: an ``Apply`` (a newer one before the ``Health``
    replaces it), then the whole health table; None (logged) if they do not come in time."""
    first: Apply | None = None
    with trio.move_on_after(FIRST_CONFIG_WAIT):
        while True:
            command = await _receive(channel)
            if isinstance(command, Apply):
                if first is None or command.generation > first.generation:
                    first = command
                continue
            if isinstance(command, Health) and first is not None:
                return first, command
            what = (
                "the supervisor is gone"
                if command is None
                else f"a {type(command).__name__.lower()} message came first"
            )
            log.error("no config from the supervisor: %s", what)
            return None
    log.error("no config from the supervisor within %gs", FIRST_CONFIG_WAIT)
    return None


def _push(gateway: Gateway, message: Health) -> None:
    """Hand the supervisor's verdicts to the gateway (module docstring)."""
    gateway.push_health(message.states, passed=message.passed, full=message.full)


async def _receive(channel: Connection[object, object]) -> Command | None:
    """The next message from the supervisor (malformed ones are logged and skipped); None at
    the end of the channel. Read in a thread once readable: an ``Apply`` can be large."""
    while True:
        await trio.lowlevel.wait_readable(channel.fileno())
        try:
            data = await trio.to_thread.run_sync(channel.recv_bytes)
        except (EOFError, OSError):
            return None
        try:
            return decode_command(data)
        except msgspec.DecodeError as error:
            log.warning("bad control message from the supervisor: %s", error)


async def _serve(
    gateway: Gateway, spec: WorkerSpec, channel: Connection[object, object], generation: int
) -> int:
    """Serve until the gateway has stopped; see the module docstring for the signals."""
    generations = _Generations(gateway, spec, generation)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve_then_cancel, gateway, nursery.cancel_scope)
            addresses = {name: list(bound) for name, bound in gateway.addresses().items()}
            channel.send_bytes(encode_message(Ready(pid=os.getpid(), addresses=addresses)))
            log.info("serving config generation %d", generation)
            nursery.start_soon(generations.run)
            outbox = _Outbox(channel)
            nursery.start_soon(_serve_supervisor, channel, gateway, generations, outbox)
            nursery.start_soon(_forward_pokes, gateway, outbox)
            draining = False
            async for signum in signals:
                if signum == signal.SIGHUP:
                    gateway.reopen_access_log()
                elif not draining:
                    draining = True
                    log.info("draining")
                    nursery.start_soon(gateway.shutdown)
    return EXIT_OK


async def _serve_then_cancel(
    gateway: Gateway,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    await gateway.serve(task_status=task_status)
    scope.cancel()


class _Generations:
    """The generations a serving worker is handed (module docstring): ``offer`` keeps the
    newest not yet applied; ``run`` applies them one at a time until cancelled."""

    def __init__(self, gateway: Gateway, spec: WorkerSpec, serving: int) -> None:
        self._gateway = gateway
        self._spec = spec
        #: The supervisor's number of the generation this worker serves.
        self.serving = serving
        self._newest = serving
        self._pending: Apply | None = None
        self._offered = trio.Event()

    def offer(self, message: Apply) -> None:
        """Apply ``message`` next (replacing one still waiting); an older one is ignored."""
        if message.generation <= self._newest:
            log.debug("config generation %d ignored: not newer", message.generation)
            return
        self._newest = message.generation
        self._pending = message
        self._offered.set()

    async def run(self) -> None:
        while True:
            await self._offered.wait()
            self._offered = trio.Event()
            message, self._pending = self._pending, None
            if message is not None:
                await self._apply(message)

    async def _apply(self, message: Apply) -> None:
        gateway = self._gateway
        # A reload used to reach a worker as SIGHUP, which also reopened the access log.
        gateway.reopen_access_log()
        try:
            await gateway.reload(_prepare(config_of(message), self._spec))
        except (GatewayError, msgspec.DecodeError) as error:
            log.error(
                "config generation %d not applied (still serving %d): %s",
                message.generation,
                self.serving,
                error,
            )
            return
        self.serving = message.generation
        log.info("serving config generation %d", message.generation)


class _Outbox:
    """The worker's end of the channel for writing: one message at a time (a query's reply
    and an unasked ``Activate`` may be ready together), each written from a thread."""

    def __init__(self, channel: Connection[object, object]) -> None:
        self._channel = channel
        self._lock = trio.Lock()

    async def send(self, payload: bytes) -> None:
        async with self._lock:
            await trio.to_thread.run_sync(self._channel.send_bytes, payload)


async def _serve_supervisor(
    channel: Connection[object, object],
    gateway: Gateway,
    generations: _Generations,
    outbox: _Outbox,
) -> None:
    """Answer the supervisor's queries in order and hand its generations on; end-of-file on
    the channel: the supervisor died, so drain instead of lingering."""
    while True:
        command = await _receive(channel)
        if command is None:
            log.warning("supervisor is gone: draining")
            await gateway.shutdown()
            return
        if isinstance(command, Apply):
            generations.offer(command)
            continue
        if isinstance(command, Health):
            _push(gateway, command)
            continue
        if isinstance(command, Challenges):
            gateway.challenges.replace(command.state)
            continue
        if isinstance(command, Splits):
            gateway.scaling.forget_splits(command.splits)
            for service, percents in command.splits.items():
                gateway.scaling.apply_split(service, percents)
            continue
        reply = encode_message(answer_query(command, gateway))
        try:
            await outbox.send(reply)
        except OSError:
            continue  # the supervisor is gone: the next read sees the end of the file


#: Pokes waiting to be sent at most; more are dropped (one per service is all it takes).
_POKE_BACKLOG: Final = 64


async def _forward_pokes(gateway: Gateway, outbox: _Outbox) -> None:
    """Send the supervisor an ``Activate`` for each service whose request found no available
    backend (SPEC §11.4); a service already waiting to be sent is not queued twice."""
    sender, receiver = trio.open_memory_channel[str](_POKE_BACKLOG)
    queued: set[str] = set()

    def poke(service: str) -> None:
        if service in queued:
            return
        try:
            sender.send_nowait(service)
        except trio.WouldBlock:
            return
        queued.add(service)

    gateway.scaling.set_poke(poke)
    async for service in receiver:
        queued.discard(service)
        try:
            await outbox.send(encode_message(Activate(service)))
        except OSError:
            return


def answer_query(query: Query, gateway: Gateway) -> Reply:
    """This worker's answer to ``query`` (cheap: a scrape's ``collect`` and encoding)."""
    match query.kind:
        case "metrics":
            return MetricsReply(query.id, gateway.metrics_snapshot())
        case "state":
            health = gateway.health()
            return StateReply(
                query.id,
                state=health.state.value,
                connections=dict(gateway.connections()),
                total_requests=health.total_requests,
                addresses={name: list(bound) for name, bound in gateway.addresses().items()},
                certificates=_certificates(gateway),
            )
        case "services":
            clock = Clock(trio.current_time(), time.time())
            documents = service_documents(gateway.runtime, clock, gateway.backend_requests())
            return DocumentsReply(query.id, documents)
        case "middlewares":
            return DocumentsReply(query.id, middleware_documents(gateway.runtime))
        case "scaling":
            return _scaling_reply(query.id, gateway)


def _scaling_reply(query_id: int, gateway: Gateway) -> ScalingReply:
    """This worker's concurrency, buffer depths and rollout samples, per service."""
    depths = gateway.scaling.counts.depths
    services: dict[str, ScalingPart] = {}
    for name, (averages, sample) in gateway.scaling.report().items():
        services[name] = ScalingPart(
            stable=None if averages is None else averages.stable,
            panic=None if averages is None else averages.panic,
            buckets=0 if averages is None else averages.buckets,
            depth=depths.get(name, 0),
            sample=None if sample is None else sample.to_wire(),
        )
    return ScalingReply(query_id, services)


def _certificates(gateway: Gateway) -> dict[str, list[tuple[list[str], float]]]:
    """The certificates each TLS entrypoint of ``gateway`` serves now (for ``/entrypoints``)."""
    found: dict[str, list[tuple[list[str], float]]] = {}
    runtime = gateway.runtime
    if runtime is None:
        return found
    for name, entry in runtime.entrypoints.items():
        if entry.tls:
            found[name] = [
                (list(names), expiry) for names, expiry in gateway.tls_certificates(name)
            ]
    return found
