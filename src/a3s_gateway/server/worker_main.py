"""One worker process of the multi-worker layout (SPEC §13.4): both ends of it.

The supervisor's end (Ring 1): ``ProcessWorker`` starts ``worker_main`` with the ``spawn``
start method and is the supervisor's handle on it — control channel, exit, signals (the
``Worker`` protocol, which tests fake). Inside the worker (Ring 2 for its process):
``worker_main`` plays the CLI's part — it installs the application log (every line naming the
worker: a last field ``worker=<n>``, ``observability/applog.py``) and its own signal handlers,
loads the config from the file, builds a ``Gateway`` with ``reuse_port=True`` and serves it
under ``trio.run``.

Control channel: one end of a ``multiprocessing`` duplex ``Pipe`` (a socketpair).
``Connection.send_bytes`` already frames each message with a 4-byte length prefix, and the
payload is a msgpack-encoded, tagged msgspec ``Struct`` (the SPEC's "length-prefixed msgspec
messages"). Worker → supervisor: ``Ready`` once every listener is bound, then one reply per
query. Supervisor → worker: ``Query`` (``id``, ``kind``), answered with the same ``id`` by
``MetricsReply`` (``metrics``: ``Gateway.metrics_snapshot()``), ``StateReply`` (``state``:
lifecycle, connections per entrypoint, requests, bound addresses) or ``DocumentsReply``
(``services``, ``middlewares``: the management API's documents of this worker's running
generation, built by ``observability/management_api.py``). End-of-file means the supervisor is
gone and the worker drains. The worker answers queries one at a time, in order, from the task
that reads the channel; each reply is written from a worker thread, so a large snapshot never
blocks the worker's event loop (one writer at a time: the replies are sequential and ``Ready``
was written before the first query could arrive). The supervisor sends queries only to workers
that reported ``Ready`` (``server/workers.py``), so replies always follow it.

Signals: SIGINT is ignored (a terminal's Ctrl-C reaches the whole process group; the supervisor
decides and forwards SIGTERM). SIGTERM starts the drain; repeated SIGTERMs change nothing
(a supervisor that wants it dead now uses SIGKILL), so a SIGTERM sent both to the process
group and by the supervisor does not skip the drain. SIGHUP (sent by the supervisor once it
has validated the file, ``server/workers.py``) reloads the config from the file through
``providers.Reloader.reload_now`` — the candidate is built in a child process, off the event
loop — with the ``--listen`` override and the reserved ports re-applied; it is ignored until
the worker is serving. Workers do not watch the file: the supervisor does. Nor do they repeat
the config's warnings (at start or on a reload): the CLI and the supervisor's validation
reported each once, so a worker logs them at debug level only.

Nurseries: ``ProcessWorker`` owns none (its awaits run in the supervisor's slot task). In the
worker, ``_serve`` owns one nursery holding ``Gateway.serve``, the supervisor's channel reader, the
reloader (which owns the candidate-builder child, started at the first reload) and the drain
and reload tasks; it ends when ``Gateway.serve`` returns. Deadlines: none of its own (the
drain grace is the gateway's). Must not: bind sockets itself (nor the management listener,
which the supervisor owns: ``Gateway(management=False)``), parse arguments, or write to stdout.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from functools import partial
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeAlias

import msgspec
import trio

from a3s_gateway.app import Gateway
from a3s_gateway.config.load import LoadOptions, load
from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.schema import remember_secrets, secrets_of
from a3s_gateway.config.values import Address
from a3s_gateway.errors import GatewayError
from a3s_gateway.observability import applog
from a3s_gateway.observability.management_api import (
    Clock,
    middleware_documents,
    service_documents,
)
from a3s_gateway.preflight import check
from a3s_gateway.providers import Reloader

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.context import SpawnContext

    from a3s_gateway.config.schema import Config

__all__ = [
    "DocumentsReply",
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


class WorkerSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a worker needs, pickled to it by ``spawn`` (no live objects)."""

    index: int
    path: str
    workers: int
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
QueryKind: TypeAlias = Literal["metrics", "state", "services", "middlewares"]


class Query(msgspec.Struct, frozen=True, tag="query"):
    """Supervisor → worker: answer ``kind``, quoting ``id`` (unique per channel)."""

    id: int
    kind: QueryKind


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


class DocumentsReply(msgspec.Struct, frozen=True, tag="documents"):
    """Worker → supervisor: the management API's documents (``services``, ``middlewares``) of
    the worker's running generation (empty before it serves)."""

    id: int
    documents: list[dict[str, object]]


Reply: TypeAlias = MetricsReply | StateReply | DocumentsReply
WorkerMessage: TypeAlias = Ready | MetricsReply | StateReply | DocumentsReply

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(WorkerMessage)
_query_decoder: Final = msgspec.msgpack.Decoder(Query)


def encode_message(message: WorkerMessage | Query) -> bytes:
    """The payload of one control-channel message (either direction)."""
    return _encoder.encode(message)


def decode_message(data: bytes) -> WorkerMessage:
    """Decode one worker → supervisor message; raises ``msgspec.DecodeError`` if malformed."""
    return _decoder.decode(data)


def decode_query(data: bytes) -> Query:
    """Decode one supervisor → worker message; raises ``msgspec.DecodeError`` if malformed."""
    return _query_decoder.decode(data)


# ------------------------------------------------------------------ the supervisor's side


class Worker(Protocol):
    """One started worker process, as the supervisor sees it."""

    @property
    def pid(self) -> int: ...

    async def receive(self) -> WorkerMessage | None:
        """The next control message; ``None`` once the channel is closed (the worker exited)."""

    async def send(self, message: Query) -> None:
        """Write ``message`` to the worker. Raises ``OSError`` when the channel is broken or
        closed."""

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

    async def send(self, message: Query) -> None:
        # A query is a few dozen bytes: once the socket is writable (Linux: at most a quarter
        # of its buffer in use) the write completes at once. A worker that stops reading thus
        # makes ``send`` wait here, under the caller's timeout, instead of blocking the loop.
        await trio.lowlevel.wait_writable(self._channel.fileno())
        self._channel.send_bytes(encode_message(message))

    async def wait(self) -> int:
        await trio.lowlevel.wait_readable(self._process.sentinel)
        self._process.join()  # the sentinel closed as the process exited: returns at once
        self._reaped = True
        code = self._process.exitcode
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


def _load(spec: WorkerSpec) -> Config | None:
    """Load and check the file at start; log the problems; ``None`` if there is an error."""
    result = load(spec.path, options=LoadOptions(workers=spec.workers))
    problems = check(result, offline=False)
    if any(p.severity == "error" for p in problems) or result.config is None:
        for problem in problems:
            log.error("%s", problem.format())
        return None
    # The CLI already logged the start-up warnings once; N more copies would be noise.
    for problem in problems:
        log.debug("%s", problem.format())
    return _prepare(result.config, spec)


def worker_main(spec: WorkerSpec, channel: Connection[object, object]) -> None:
    """The ``multiprocessing`` target: serve until told to stop; exits 0, 1 (config) or 3."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # Every line this process logs names its slot (``worker=<n>``; the supervisor's do not).
    applog.install(spec.log_level, spec.log_format, worker=spec.index)
    sys.exit(_run(spec, channel))


def _run(spec: WorkerSpec, channel: Connection[object, object]) -> int:
    config = _load(spec)
    if config is None:
        return EXIT_CONFIG
    try:
        gateway = Gateway(config, reuse_port=True, management=False)
        return trio.run(_serve, gateway, spec, channel)
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


async def _serve(gateway: Gateway, spec: WorkerSpec, channel: Connection[object, object]) -> int:
    """Serve until the gateway has stopped; see the module docstring for the signals."""
    reloader = Reloader(
        gateway,
        spec.path,
        workers=spec.workers,
        prepare=partial(_prepare, spec=spec),
        watch=False,
        warm=False,
        report_warnings=False,  # the supervisor reported them when it validated the file
    )
    gateway.attach_reloader(reloader)
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(_serve_then_cancel, gateway, nursery.cancel_scope)
            await nursery.start(reloader.run)
            addresses = {name: list(bound) for name, bound in gateway.addresses().items()}
            channel.send_bytes(encode_message(Ready(pid=os.getpid(), addresses=addresses)))
            nursery.start_soon(_serve_supervisor, channel, gateway)
            draining = False
            async for signum in signals:
                if signum == signal.SIGHUP:
                    gateway.reopen_access_log()
                    nursery.start_soon(partial(reloader.reload_now, force=True))
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


async def _serve_supervisor(channel: Connection[object, object], gateway: Gateway) -> None:
    """Answer the supervisor's queries in order; end-of-file on the channel: the supervisor
    died, so drain instead of lingering."""
    while True:
        await trio.lowlevel.wait_readable(channel.fileno())
        try:
            data = channel.recv_bytes()
        except (EOFError, OSError):
            log.warning("supervisor is gone: draining")
            await gateway.shutdown()
            return
        try:
            query = decode_query(data)
        except msgspec.DecodeError as error:
            log.warning("bad control message from the supervisor: %s", error)
            continue
        reply = encode_message(answer_query(query, gateway))
        try:
            await trio.to_thread.run_sync(channel.send_bytes, reply)
        except OSError:
            continue  # the supervisor is gone: the next read sees the end of the file


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
            )
        case "services":
            clock = Clock(trio.current_time(), time.time())
            return DocumentsReply(query.id, service_documents(gateway.runtime, clock))
        case "middlewares":
            return DocumentsReply(query.id, middleware_documents(gateway.runtime))
