"""The demo's backends (SPEC §2.1 ``demo``): two HTTP echo services, a streaming service, a TCP
echo and a TLS echo (``demo.tcp_echo``) and, with grpcio, the gRPC service ``demo.Echo``.

Ring 1: starts three ``exchange.serve_backend`` listeners and the two TCP echoes on 127.0.0.1
with ephemeral ports, and the gRPC backend as a child process (``python -P -m
a3s_gateway.demo.grpc_backend --port 0``, which binds its own free port and prints ``listening
on 127.0.0.1:<port>``). Without grpcio (or when that child does not start) a loopback port is
held bound but not listening instead, so the demo's ``grpc`` service still points somewhere
honest: its connections are refused (gRPC clients get ``UNAVAILABLE``) and no other program can
listen there while the demo runs. The same goes for the TLS echo when it is given no server
context (the demo always gives it one, made from ``demo.certs``' ``echo.localhost`` pair).

Nurseries: none of its own; ``start_backends`` starts every listener, the child's task and the
held port in the nursery it is given, which owns them until it is cancelled. Deadlines: the
child's ready line within ``GRPC_STARTUP_WAIT``; on cancellation it gets SIGTERM and
``GRPC_STOP_WAIT`` to exit (it stops with a 1 s grace), then SIGKILL; it is always waited for.

Must not: bind anything but loopback, or use the gateway's own server code (the backends are
independent peers on h11, trio's sockets and TLS, and grpcio), or import grpcio (only the child
does).
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.demo.echo import handle_echo
from a3s_gateway.demo.exchange import HOST, serve_backend
from a3s_gateway.demo.streaming_backend import handle_stream
from a3s_gateway.demo.tcp_echo import serve_tcp_echo, serve_tls_echo

if TYPE_CHECKING:
    import ssl

log: Final = logging.getLogger("a3s_gateway.demo")

#: Bound on the gRPC backend's start (interpreter, grpcio import, bind).
GRPC_STARTUP_WAIT: Final = 20.0
#: Bound on its exit after SIGTERM, before SIGKILL.
GRPC_STOP_WAIT: Final = 5.0
#: The line the gRPC backend prints once it serves (the port follows).
GRPC_READY: Final = f"listening on {HOST}:"
#: Why the gRPC backend does not run when grpcio cannot be imported.
NO_GRPCIO: Final = "grpcio is not installed"
#: Longest line read from the gRPC backend before its ready line is given up on.
_MAX_LINE: Final = 4096


class GrpcBackendError(Exception):
    """The gRPC backend did not start; the message says how it failed."""


@dataclass(frozen=True, slots=True)
class BackendPorts:
    """Where the demo backends listen (all on 127.0.0.1)."""

    echo_a: int
    echo_b: int
    stream: int
    #: The port of ``demo.hcl``'s service ``grpc``: the gRPC backend's, or, when that does not
    #: run (``grpc_missing``), a port held closed (bound, not listening).
    grpc: int
    #: The plain TCP echo (``demo.hcl``'s service ``tcp-echo``).
    tcp_echo: int
    #: The TLS echo with its own ``echo.localhost`` certificate (service ``tls-echo``), or a
    #: port held closed when ``start_backends`` had no server context for it.
    tls_echo: int
    #: Why the gRPC backend is not running; None while it runs.
    grpc_missing: str | None = None


def grpc_importable() -> bool:
    """Whether grpcio can be imported here (the ``demo`` extra: ``a3s-gateway[demo]``)."""
    return importlib.util.find_spec("grpc") is not None


async def start_backends(
    nursery: trio.Nursery, *, grpc: bool = False, tls_echo: ssl.SSLContext | None = None
) -> BackendPorts:
    """Start ``echo-a``, ``echo-b``, ``stream``, ``tcp-echo`` and, with its server context
    ``tls_echo``, ``tls-echo`` in ``nursery`` (which owns them until it is cancelled) and, with
    ``grpc``, the gRPC backend; return their ports once all listen. Without ``grpc`` (as
    without grpcio), or when the gRPC backend fails to start (logged), the ``grpc`` port is one
    held closed; so is the ``tls_echo`` port without ``tls_echo``."""
    echo_a: int = await nursery.start(serve_backend, "echo-a", handle_echo)
    echo_b: int = await nursery.start(serve_backend, "echo-b", handle_echo)
    stream: int = await nursery.start(serve_backend, "stream", handle_stream)
    tcp: int = await nursery.start(serve_tcp_echo)
    if tls_echo is None:
        tls: int = await nursery.start(hold_closed_port)
    else:
        tls = await nursery.start(serve_tls_echo, tls_echo)
    missing = NO_GRPCIO
    if grpc:
        try:
            grpc_port: int = await nursery.start(serve_grpc_backend)
        except GrpcBackendError as error:
            log.warning("no gRPC example: %s", error)
            missing = str(error)
        else:
            return BackendPorts(echo_a, echo_b, stream, grpc_port, tcp, tls)
    closed: int = await nursery.start(hold_closed_port)
    return BackendPorts(echo_a, echo_b, stream, closed, tcp, tls, grpc_missing=missing)


async def hold_closed_port(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """Bind a loopback port without listening and hold it until cancelled: connections to it
    are refused, and no other socket can bind it meanwhile (no ``SO_REUSEADDR`` here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind((HOST, 0))
        port: int = held.getsockname()[1]
        task_status.started(port)
        await trio.sleep_forever()


async def serve_grpc_backend(
    *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Run the gRPC backend as a child process until cancelled; report its port once it prints
    its ready line. Raises ``GrpcBackendError`` (before reporting) if it exits first or is not
    ready within ``GRPC_STARTUP_WAIT``. The child is stopped and waited for however this ends;
    its later stdout lines (``Slow cancelled after …``) are logged at debug level."""
    command = [sys.executable, "-P", "-m", "a3s_gateway.demo.grpc_backend", "--port", "0"]
    process = await trio.lowlevel.open_process(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None
    )
    try:
        assert process.stdout is not None
        lines = _LineReader(process.stdout)
        try:
            with trio.fail_after(GRPC_STARTUP_WAIT):
                port = await _ready_port(lines, process)
        except trio.TooSlowError:
            message = f"the gRPC backend was not ready within {GRPC_STARTUP_WAIT:g} s"
            raise GrpcBackendError(message) from None
        task_status.started(port)
        while (line := await lines.next_line()) is not None:
            log.debug("grpc backend: %s", line)
        code = await process.wait()
        log.info("the demo's gRPC backend exited (code %d)", code)
    finally:
        await _stop(process)


async def _ready_port(lines: _LineReader, process: trio.Process) -> int:
    """The port in the backend's ready line; ``GrpcBackendError`` if it ends first."""
    while (line := await lines.next_line()) is not None:
        if line.startswith(GRPC_READY):
            port_text = line.removeprefix(GRPC_READY)
            if port_text.isdigit():
                return int(port_text)
    code = await process.wait()
    raise GrpcBackendError(f"the gRPC backend exited with code {code} before it listened")


async def _stop(process: trio.Process) -> None:
    """SIGTERM, ``GRPC_STOP_WAIT`` to exit, then SIGKILL; waited for (shielded)."""
    with trio.CancelScope(shield=True):
        process.terminate()  # (nothing when it has exited already)
        with trio.move_on_after(GRPC_STOP_WAIT):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()


class _LineReader:
    """Lines of a child's stdout, decoded (one over ``_MAX_LINE`` bytes is cut there)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._pending = b""

    async def next_line(self) -> str | None:
        """The next line without its newline; None at the end of the stream."""
        while b"\n" not in self._pending and len(self._pending) < _MAX_LINE:
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                break
            self._pending += chunk
        if not self._pending:
            return None
        line, newline, rest = self._pending.partition(b"\n")
        if not newline or len(line) > _MAX_LINE:  # the end of the stream, or a long line
            line, rest = self._pending[:_MAX_LINE], self._pending[_MAX_LINE:]
        self._pending = rest
        return line.decode("utf-8", "replace").rstrip("\r")
