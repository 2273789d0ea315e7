"""Helpers for the CLI tests of autoscaling, revisions and rollouts (SPEC §11, §9.6).

- ``write_backend`` writes a tiny HTTP backend script for the ``local`` executor: it takes its
  port (and an optional start delay) from its arguments, prints ``backend port=<p> pid=<pid>``
  once it listens, answers every GET with ``{"port", "pid"}`` and sleeps first when asked
  (``?ms=300``). It is run with ``sys.executable``.
- ``free_port_range`` finds ``count`` consecutive free ports below the kernel's ephemeral
  range (the executor's replica ports, which no outgoing connection may take meanwhile).
- ``cli_gateway`` runs ``python -m a3s_gateway run <file> [args]`` as a subprocess with its
  stdout and stderr in a file (so neither the access log nor a chatty child can block it on a
  full pipe), waits until the management ``/ready`` answers 200, and on exit stops it with
  SIGTERM (the executor then terminates its children) and waits for it; a process that
  outlives ``STOP_WAIT`` is killed, and so are the replicas it could then not stop.
- ``replica_pids`` reads the replicas' process ids from the gateway's log (the backend's first
  line, which the executor logs with its replica prefix).
- ``request`` sends one HTTP/1.1 request on a fresh connection and reads the answer with the
  h11 oracle of ``tests/support/gateway.py``; ``CliGateway.api`` does the same on the
  management listener.

Every wait is bounded: the startup and stop by their constants, each response by
``CLIENT_WAIT``, and polling loops by the deadlines their callers pass.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import ROOT, cli_env
from tests.support.gateway import LOCAL, RawClient, RawResponse, free_port

#: Bound on the subprocess's start (interpreter, imports, bind, workers); generous for loaded
#: machines.
STARTUP_WAIT: Final = 40.0
#: Bound on the gateway's exit after SIGTERM (drain plus the children's ``stop_timeout``).
STOP_WAIT: Final = 20.0
#: Pause between two polls of an endpoint.
POLL: Final = 0.1
#: The lowest port ``free_port_range`` hands out.
REPLICA_PORTS_FROM: Final = 20000
#: The management API's default path prefix.
API: Final = "/api/gateway"

T = TypeVar("T")

#: The line the backend script prints once it listens, as the gateway logs it.
_STARTED: Final = re.compile(r"\] backend port=[0-9]+ pid=([0-9]+)$", re.MULTILINE)

BACKEND_SOURCE: Final = '''\
"""A backend replica for the local executor: python backend.py PORT [START_DELAY_SECONDS]."""
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PORT = int(sys.argv[1])
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        query = parse_qs(urlsplit(self.path).query)
        pause = int(query.get("ms", ["0"])[0])
        if pause:
            time.sleep(pause / 1000)
        body = json.dumps({"port": PORT, "pid": os.getpid()}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


time.sleep(DELAY)
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
server.daemon_threads = True
print(f"backend port={PORT} pid={os.getpid()}", flush=True)
server.serve_forever()
'''


def write_backend(directory: Path) -> Path:
    """The backend script (module docstring), written into ``directory``."""
    path = directory / "backend.py"
    path.write_text(BACKEND_SOURCE, encoding="utf-8")
    return path


def backend_command(script: Path, *, delay: float = 0.0) -> str:
    """The HCL list of ``local.command`` running ``script`` on ``{port}``."""
    parts = [sys.executable, str(script), "{port}"]
    if delay:
        parts.append(f"{delay:g}")
    return "[" + ", ".join(json.dumps(part) for part in parts) + "]"


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOCAL, port))
        except OSError:
            return False
    return True


def _ephemeral_start() -> int:
    """The first port the kernel hands out to outgoing connections (Linux; else 32768)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
    except OSError:
        return 32768
    return int(text.split()[0])


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free ports on 127.0.0.1, below the ephemeral range:
    an outgoing connection of the test (or of the gateway) never takes one of them while a
    replica is about to bind it."""
    top = min(_ephemeral_start(), 65536) - count
    chooser = random.Random()
    for _ in range(200):
        base = chooser.randrange(REPLICA_PORTS_FROM, top)
        if all(_bindable(base + i) for i in range(count)):
            return base
    raise AssertionError(f"no {count} consecutive free ports found")


def free_ports(count: int, *, avoid: Sequence[int] = ()) -> list[int]:
    """``count`` distinct free ports, none in ``avoid``."""
    found: list[int] = []
    while len(found) < count:
        port = free_port()
        if port not in found and port not in avoid:
            found.append(port)
    return found


def management_block(admin: int) -> str:
    """The management listener on ``admin`` and no file watcher (nothing reloads mid-test)."""
    return (
        f'management {{\n  address = "{LOCAL}:{admin}"\n}}\n'
        "providers {\n  file {\n    watch = false\n  }\n}\n"
    )


# -- HTTP ------------------------------------------------------------------------------------


async def request(
    port: int,
    target: str,
    *,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
) -> RawResponse:
    """One request on a fresh connection (``Connection: close``); the whole response."""
    lines = [f"{method} {target} HTTP/1.1", f"host: {LOCAL}:{port}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in headers]
    if method == "POST":
        lines.append("content-length: 0")
    client = await RawClient.connect(port)
    try:
        assert await client.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = await client.response(method.encode())
    finally:
        await client.aclose()
    assert response is not None, f"no response to {method} {target}"
    assert response.complete, response
    return response


def body_json(response: RawResponse) -> object:
    return json.loads(response.body)


def json_object(response: RawResponse) -> dict[str, object]:
    document = body_json(response)
    assert isinstance(document, dict), document
    return document


async def refused(port: int) -> bool:
    """Whether a connection to ``port`` on 127.0.0.1 is refused now."""
    try:
        stream = await trio.open_tcp_stream(LOCAL, port)
    except OSError:
        return True
    await trio.aclose_forcefully(stream)
    return False


def process_gone(pid: int) -> bool:
    """Whether no process ``pid`` exists (a zombie still counts as existing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # (another user's process took the pid)
        return True
    return False


# -- the gateway ---------------------------------------------------------------------------


@dataclass
class CliGateway:
    """A running ``python -m a3s_gateway run`` subprocess."""

    process: trio.Process
    port: int
    admin: int
    log_path: Path

    def log(self) -> str:
        """The gateway's stderr so far."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    async def get(self, target: str, *, headers: Sequence[tuple[str, str]] = ()) -> RawResponse:
        return await request(self.port, target, headers=headers)

    async def api(self, path: str, *, method: str = "GET") -> RawResponse:
        return await request(self.admin, API + path, method=method)

    async def scaling(self, service: str) -> dict[str, object]:
        """The ``GET /scaling`` document of ``service``."""
        response = await self.api("/scaling")
        assert response.status == 200, response
        documents = body_json(response)
        assert isinstance(documents, list), documents
        for document in documents:
            assert isinstance(document, dict)
            if document["service"] == service:
                return document
        raise AssertionError(f"no /scaling document for {service}: {documents}")

    async def rollout(self, service: str) -> dict[str, object]:
        """The ``GET /rollouts`` document of ``service``."""
        response = await self.api("/rollouts")
        assert response.status == 200, response
        documents = body_json(response)
        assert isinstance(documents, list), documents
        for document in documents:
            assert isinstance(document, dict)
            if document["service"] == service:
                return document
        raise AssertionError(f"no /rollouts document for {service}: {documents}")

    async def metric(self, name: str, **labels: str) -> float | None:
        """The sum of the samples ``name`` of a ``/metrics`` scrape whose labels include
        ``labels``; None when there is no such sample."""
        response = await self.api("/metrics")
        assert response.status == 200, response
        found: float | None = None
        for family in text_string_to_metric_families(response.body.decode("utf-8")):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(key) == value for key, value in labels.items()
                ):
                    found = (found or 0.0) + sample.value
        return found

    async def stop(self) -> int:
        """SIGTERM, then the exit code (bounded by ``STOP_WAIT``)."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        with trio.fail_after(STOP_WAIT):
            return await self.process.wait()


async def poll_until(
    what: str,
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    *,
    within: float,
) -> T:
    """Await ``probe()`` every ``POLL`` s until ``accept`` takes its value, which is returned;
    after ``within`` s an ``AssertionError`` shows the last value seen."""
    last: T | None = None
    with trio.move_on_after(within):
        while True:
            last = await probe()
            if accept(last):
                return last
            await trio.sleep(POLL)
    raise AssertionError(f"{what}: not within {within:g} s; last seen: {last!r}")


@asynccontextmanager
async def cli_gateway(
    directory: Path, text: str, *, port: int, admin: int, args: Sequence[str] = ()
) -> AsyncIterator[CliGateway]:
    """Run the CLI on config ``text`` until the block ends (module docstring)."""
    config = directory / "gateway.hcl"
    config.write_text(text, encoding="utf-8")
    log_path = directory / "gateway.log"
    with log_path.open("wb") as log_file:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "a3s_gateway", "run", str(config), *args],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=cli_env(),
            cwd=ROOT,
        )
    gateway = CliGateway(process, port, admin, log_path)
    try:
        await _wait_ready(gateway)
        yield gateway
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(STOP_WAIT):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
                _kill_orphans(gateway)


def replica_pids(log: str) -> set[int]:
    """The process ids of the replicas the gateway's log shows starting (their first line)."""
    return {int(found) for found in _STARTED.findall(log)}


def _kill_orphans(gateway: CliGateway) -> None:
    """Last resort after a SIGKILLed gateway, which could not stop its children: kill the
    replicas it started that are still running."""
    for pid in replica_pids(gateway.log()):
        if not process_gone(pid):
            os.kill(pid, signal.SIGKILL)


async def _wait_ready(gateway: CliGateway) -> None:
    with trio.move_on_after(STARTUP_WAIT):
        while gateway.process.returncode is None:
            try:
                response = await request(gateway.admin, API + "/ready")
            except OSError:
                response = None
            if response is not None and response.status == 200:
                return
            await trio.sleep(POLL)
        raise AssertionError(f"the gateway exited: {gateway.log()}")
    raise AssertionError(f"the gateway was not ready within {STARTUP_WAIT:g} s: {gateway.log()}")
