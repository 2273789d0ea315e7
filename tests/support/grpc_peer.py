"""Real gRPC peers for tests: the demo's grpcio backend as a subprocess, and grpcio calls.

- ``grpc_backend()`` starts ``python -m a3s_gateway.demo.grpc_backend --port 0`` (the backend
  binds the port itself, so no other process can take it between a probe and the bind), waits
  for its ``listening on 127.0.0.1:<port>`` line and yields a ``GrpcBackend``; at the end it
  sends SIGTERM, waits (bounded) and kills it if it is still there. ``wait_for_line`` reads the
  backend's later lines (``Slow cancelled after …``).
- ``GrpcClient`` makes calls with ``a3s_gateway.demo.grpc_client`` (grpcio's synchronous API)
  in a worker thread (``trio.to_thread.run_sync``): one fresh channel per call, closed after
  it, and a grpcio deadline on every call (``CALL_WAIT`` unless the test gives a ``deadline``),
  so the thread always ends and trio never waits on it unbounded. A call returns an ``Outcome``
  (status name, details, messages, initial and trailing metadata), failed or not.
- ``run_client()`` runs the client's command line as a subprocess.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import trio

from a3s_gateway.demo import grpc_client
from a3s_gateway.demo.grpc_client import Channel, Metadata, Outcome, path
from tests.support.cli import ROOT, Completed, cli_env
from tests.support.gateway import LOCAL

#: Bound on the backend's start (interpreter, grpcio import, bind).
STARTUP_WAIT: Final = 30.0
#: Bound on the backend's exit after SIGTERM (it stops with a 1 s grace).
STOP_WAIT: Final = 10.0
#: The grpcio deadline of a call when the test gives none.
CALL_WAIT: Final = 20.0
READY: Final = f"listening on {LOCAL}:"


@dataclass
class GrpcBackend:
    """A running ``demo.Echo`` backend; ``lines`` holds its stdout lines not yet waited for."""

    process: trio.Process
    port: int = 0
    lines: list[str] = field(default_factory=list)
    _pending: bytes = b""

    @property
    def target(self) -> str:
        return f"{LOCAL}:{self.port}"

    async def wait_for_line(self, needle: str) -> str:
        """Read stdout until a line containing ``needle`` appears (the caller bounds the wait)."""
        assert self.process.stdout is not None
        while True:
            for line in self.lines:
                if needle in line:
                    self.lines.remove(line)
                    return line
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"the backend's stdout closed before {needle!r}: {self.lines}")
            self._pending += chunk
            *complete, self._pending = self._pending.split(b"\n")
            self.lines.extend(part.decode(errors="replace") for part in complete)

    async def stop(self) -> int:
        """SIGTERM, then wait (bounded; killed after ``STOP_WAIT``); the exit code."""
        with trio.CancelScope(shield=True):
            if self.process.returncode is None:
                self.process.terminate()
            with trio.move_on_after(STOP_WAIT):
                await self.process.wait()
            if self.process.returncode is None:
                self.process.kill()
            await self.process.wait()
        code = self.process.returncode
        assert code is not None
        return code


@asynccontextmanager
async def grpc_backend() -> AsyncIterator[GrpcBackend]:
    """A ``demo.Echo`` backend on 127.0.0.1 for the block; stopped (or killed) at its end."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "a3s_gateway.demo.grpc_backend", "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=None,  # grpcio's own log lines, if any, go to the test's captured stderr
        env=cli_env(),
        cwd=ROOT,
    )
    backend = GrpcBackend(process)
    try:
        with trio.fail_after(STARTUP_WAIT):
            line = await backend.wait_for_line(READY)
        backend.port = int(line.rpartition(":")[2])
        yield backend
    finally:
        await backend.stop()


@dataclass(frozen=True)
class GrpcClient:
    """Calls toward ``target`` (``host:port``): h2c, or TLS trusting ``tls_ca`` (PEM bytes) and
    verifying the name ``authority``."""

    target: str
    tls_ca: bytes | None = None
    authority: str | None = None

    async def _run(self, call: Callable[[Channel], Outcome]) -> Outcome:
        def in_thread() -> Outcome:
            channel = grpc_client.open_channel(
                self.target, tls_ca=self.tls_ca, authority=self.authority
            )
            try:
                return call(channel)
            finally:
                channel.close()

        return await trio.to_thread.run_sync(in_thread)

    async def unary(
        self,
        request: bytes,
        *,
        method: str = "Unary",
        full_path: str | None = None,
        metadata: Metadata = (),
        deadline: float = CALL_WAIT,
    ) -> Outcome:
        """A unary call to ``demo.Echo/<method>`` (or to ``full_path``)."""
        where = full_path or path(method)
        return await self._run(
            functools.partial(
                grpc_client.unary,
                request=request,
                timeout=deadline,
                metadata=metadata,
                method=where,
            )
        )

    async def server_stream(
        self, request: bytes, *, metadata: Metadata = (), deadline: float = CALL_WAIT
    ) -> Outcome:
        return await self._run(
            functools.partial(
                grpc_client.server_stream, request=request, timeout=deadline, metadata=metadata
            )
        )

    async def client_stream(
        self, requests: Iterable[bytes], *, metadata: Metadata = (), deadline: float = CALL_WAIT
    ) -> Outcome:
        return await self._run(
            functools.partial(
                grpc_client.client_stream, requests=requests, timeout=deadline, metadata=metadata
            )
        )

    async def bidi(
        self, requests: Iterable[bytes], *, metadata: Metadata = (), deadline: float = CALL_WAIT
    ) -> Outcome:
        """Lockstep: each message is sent once the echo of the one before arrived."""
        return await self._run(
            functools.partial(
                grpc_client.bidi, requests=requests, timeout=deadline, metadata=metadata
            )
        )


async def run_client(*args: str) -> Completed:
    """``python -m a3s_gateway.demo.grpc_client ARGS`` to completion (bounded by the caller;
    give it ``--timeout``)."""
    done = await trio.run_process(
        [sys.executable, "-m", "a3s_gateway.demo.grpc_client", *args],
        stdin=b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=cli_env(),
        cwd=ROOT,
    )
    return Completed(done.returncode, done.stdout.decode(), done.stderr.decode())
