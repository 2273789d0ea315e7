"""End-to-end helpers: gateway configs for test origins, an in-process gateway, and clients.

- ``server_entry`` / ``config_text`` write HCL for a gateway whose ``web`` entrypoint listens on
  ``127.0.0.1:0`` (or a given port) and routes to test origins; ``load`` parses it with
  ``load_config_text``.
- ``running_gateway`` runs ``Gateway.serve`` in a nursery and yields a ``GatewayHandle`` with
  the bound port; on exit it drains the gateway (``shutdown``) and waits for ``serve``.
- ``curl`` runs the real curl binary (``trio.run_process``) and parses its ``-i`` output into
  responses; ``curl_digest`` streams a download through SHA-256 without keeping it.
- ``RawClient`` speaks raw bytes for byte-exact cases and parses the gateway's answers with an
  h11 client as the oracle.

Everything uses real sockets on 127.0.0.1 and trio's real clock; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import h11
import pytest
import trio

from a3s_gateway.app import Gateway
from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema import Config
from tests.support.origin import Origin

LOCAL: Final = "127.0.0.1"
#: Upper bound on one client operation (a response, a close); the suite limit is 60 s.
CLIENT_WAIT: Final = 20.0


# -- configs --------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (bound to port 0, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOCAL, 0))
        port: int = probe.getsockname()[1]
    return port


def server_entry(target: Origin | int, *, path: str = "", weight: int = 1) -> str:
    """One ``servers`` element for an origin (or a bare port), with an optional path prefix."""
    port = target.port if isinstance(target, Origin) else target
    return f'{{ url = "http://{LOCAL}:{port}{path}", weight = {weight} }}'


def service_block(
    name: str,
    servers: Sequence[str],
    *,
    strategy: str = "round-robin",
    balancer: str = "",
    extra: str = "",
) -> str:
    """A ``services "<name>"`` block; ``balancer`` adds lines inside ``load_balancer``."""
    listed = ", ".join(servers)
    return (
        f'services "{name}" {{\n'
        "  load_balancer {\n"
        f'    strategy = "{strategy}"\n'
        f"    servers  = [{listed}]\n"
        f"{balancer}\n"
        "  }\n"
        f"{extra}\n"
        "}\n"
    )


def router_block(name: str, rule: str, service: str) -> str:
    return f'routers "{name}" {{\n  rule    = "{rule}"\n  service = "{service}"\n}}\n'


def config_text(
    servers: Sequence[str],
    *,
    strategy: str = "round-robin",
    balancer: str = "",
    service_extra: str = "",
    rule: str = "PathPrefix(`/`)",
    more: str = "",
    entrypoint: str = "",
    port: int = 0,
    shutdown_timeout_secs: int = 5,
) -> str:
    """A whole config: entrypoint ``web``, router ``main`` → service ``main`` on ``servers``.

    ``more`` is appended verbatim (extra services and routers); ``entrypoint`` adds lines
    inside the entrypoint block.
    """
    return (
        'entrypoints "web" {\n'
        f'  address = "{LOCAL}:{port}"\n'
        f"{entrypoint}\n"
        "}\n"
        + router_block("main", rule, "main")
        + service_block("main", servers, strategy=strategy, balancer=balancer, extra=service_extra)
        + more
        + f"shutdown_timeout_secs = {shutdown_timeout_secs}\n"
    )


def load(text: str) -> Config:
    """Parse and validate a config text (raises ``ConfigError`` with every problem)."""
    return load_config_text(text, filename="e2e.hcl")


# -- the in-process gateway -----------------------------------------------------------------


@dataclass
class GatewayHandle:
    """A running in-process gateway."""

    gateway: Gateway
    port: int

    def url(self, path: str = "/") -> str:
        return f"http://{LOCAL}:{self.port}{path}"

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples of ``name`` in the gateway's exposition whose labels include
        ``labels`` (0: none)."""
        text = self.gateway.metrics_text()
        assert text is not None
        total = 0.0
        for line in text.decode().splitlines():
            sample, _, value = line.rpartition(" ")
            family, _, label_text = sample.partition("{")
            if family != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
            if all(found.get(key) == wanted for key, wanted in labels.items()):
                total += float(value)
        return total


@asynccontextmanager
async def running_gateway(
    config: Config | str, *, grace: float = 2.0
) -> AsyncIterator[GatewayHandle]:
    """Serve ``config`` (a ``Config`` or HCL text) until the block ends, then drain it."""
    if isinstance(config, str):
        config = load(config)
    gateway = Gateway(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        port = gateway.addresses()["web"][0][1]
        try:
            yield GatewayHandle(gateway, port)
        finally:
            with trio.move_on_after(grace + 5) as cleanup:
                cleanup.shield = True
                await gateway.shutdown(grace)
            if cleanup.cancelled_caught:
                nursery.cancel_scope.cancel()


async def wait_refused(port: int) -> None:
    """Poll (bounded by the caller) until connecting to ``port`` is refused."""
    while True:
        try:
            stream = await trio.open_tcp_stream(LOCAL, port)
        except OSError:
            return
        await trio.aclose_forcefully(stream)
        await trio.sleep(0.02)


# -- curl -----------------------------------------------------------------------------------

CURL_BASE: Final = ("curl", "-sS", "--noproxy", "*", "--max-time", "30")


@dataclass(frozen=True)
class HttpResponse:
    """One response as curl printed it with ``-i`` (``body`` is decoded of chunked framing)."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    informational: tuple[int, ...] = ()

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> dict[str, object]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


@dataclass(frozen=True)
class CurlResult:
    """A finished curl run: its exit code, the parsed responses, stderr."""

    code: int
    responses: tuple[HttpResponse, ...]
    stderr: str

    @property
    def response(self) -> HttpResponse:
        """The only response (asserts there is exactly one)."""
        assert len(self.responses) == 1, (self.code, self.responses, self.stderr)
        return self.responses[0]


_STATUS_LINE: Final = re.compile(rb"HTTP/[0-9.]+ ([0-9]{3})[^\r\n]*\r?\n")


def parse_curl_output(output: bytes, *, head: bool = False) -> tuple[HttpResponse, ...]:
    """Split ``curl -i`` output into responses, framed by ``Content-Length`` (a response
    without one takes the rest); with ``head`` no response has a body."""
    responses: list[HttpResponse] = []
    informational: list[int] = []
    position = 0
    while position < len(output):
        match = _STATUS_LINE.match(output, position)
        if match is None:
            raise AssertionError(f"no status line at {position}: {output[position:][:200]!r}")
        status = int(match[1])
        end = output.find(b"\r\n\r\n", match.end() - 2)
        if end < 0:
            raise AssertionError(f"unterminated head: {output[position:][:200]!r}")
        lines = output[match.end() : end].split(b"\r\n")
        headers = []
        for line in lines:
            if not line:
                continue
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        position = end + 4
        if 100 <= status < 200:
            informational.append(status)
            continue
        length = next((int(v) for k, v in headers if k == b"content-length"), None)
        if head:
            length = 0
        elif length is None:
            length = len(output) - position
        body = output[position : position + length]
        position += length
        responses.append(HttpResponse(status, tuple(headers), body, tuple(informational)))
        informational = []
    return tuple(responses)


async def curl(*args: str, stdin: bytes | None = None, head: bool = False) -> CurlResult:
    """Run ``curl -sS -i ARGS`` to completion; never raises for curl's exit code. Pass
    ``head=True`` for HEAD requests (``-I``) so that no body is expected."""
    command = [*CURL_BASE, "-i", *args]
    done = await trio.run_process(
        command,
        stdin=stdin if stdin is not None else b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )
    return CurlResult(
        done.returncode,
        parse_curl_output(done.stdout, head=head),
        done.stderr.decode(errors="replace"),
    )


async def curl_lines(*args: str) -> tuple[int, list[str], str]:
    """Run ``curl -sS ARGS`` (typically with ``-o /dev/null -w ...``); stdout as lines."""
    done = await trio.run_process(
        [*CURL_BASE, *args], stdin=b"", capture_stdout=True, capture_stderr=True, check=False
    )
    lines = done.stdout.decode(errors="replace").splitlines()
    return done.returncode, lines, done.stderr.decode(errors="replace")


@dataclass(frozen=True)
class Digest:
    """A streamed download: curl's exit code, the final status, the body's size and SHA-256."""

    code: int
    status: int
    size: int
    sha256: str
    stderr: str


_STATUS_MARK: Final = re.compile(r"STATUS=([0-9]{3})")


async def curl_digest(*args: str) -> Digest:
    """Run curl with the body on a pipe and hash it as it arrives (bounded memory)."""
    process = await trio.lowlevel.open_process(
        [*CURL_BASE, "-w", "%{stderr}\nSTATUS=%{http_code}\n", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    assert process.stderr is not None
    errors = bytearray()
    digest = hashlib.sha256()
    size = 0

    async def collect_stderr(pipe: trio.abc.ReceiveStream) -> None:
        while chunk := await pipe.receive_some(65536):
            errors.extend(chunk)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect_stderr, process.stderr)
            while chunk := await process.stdout.receive_some(1 << 20):
                digest.update(chunk)
                size += len(chunk)
        code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
    text = errors.decode(errors="replace")
    found = _STATUS_MARK.search(text)
    return Digest(code, int(found[1]) if found else 0, size, digest.hexdigest(), text)


# -- raw sockets ----------------------------------------------------------------------------


@dataclass
class RawResponse:
    """A response read by ``RawClient``: ``complete`` is False when the body was cut short."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    informational: list[int] = field(default_factory=list)

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class RawClient:
    """A client that writes raw bytes and parses responses with h11 (the oracle)."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = b""
        self.eof = False

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream(LOCAL, port))

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False if the gateway already closed the connection."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def _read(self) -> bytes:
        if self.eof:
            return b""
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
        return data

    async def response(self, method: bytes = b"GET") -> RawResponse | None:
        """The next response (to a request with ``method``), or None if the connection closed
        before a response head."""
        oracle = h11.Connection(h11.CLIENT)
        oracle.send(h11.Request(method=method, target="/", headers=[("host", "oracle")]))
        oracle.send(h11.EndOfMessage())
        if self._buffer:  # (an empty receive_data means EOF to h11)
            oracle.receive_data(self._buffer)
        self._buffer = b""
        result: RawResponse | None = None
        informational: list[int] = []
        with trio.fail_after(CLIENT_WAIT):
            while True:
                try:
                    event = oracle.next_event()
                except h11.RemoteProtocolError:
                    if result is not None:
                        result.complete = False
                    return result
                if event is h11.NEED_DATA:
                    oracle.receive_data(await self._read())
                    continue
                if isinstance(event, h11.InformationalResponse):
                    informational.append(event.status_code)
                elif isinstance(event, h11.Response):
                    headers = [(bytes(k), bytes(v)) for k, v in event.headers]
                    result = RawResponse(event.status_code, headers, b"", False)
                    result.informational = informational
                elif isinstance(event, h11.Data):
                    assert result is not None
                    result.body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    assert result is not None
                    result.complete = True
                    result.trailers = [(bytes(k), bytes(v)) for k, v in event.headers]
                    self._buffer = oracle.trailing_data[0]
                    return result
                else:  # ConnectionClosed or PAUSED
                    return result

    async def closed(self, wait: float = CLIENT_WAIT) -> bool:
        """True if the gateway closes the connection (EOF or reset) within ``wait`` seconds;
        False if it sends more bytes or keeps it open."""
        if self._buffer:
            return False
        with trio.move_on_after(wait):
            data = await self._read()
            self._buffer += data
            return not data
        return False

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def exchange(
    port: int, data: bytes, method: bytes = b"GET", *, close_wait: float = CLIENT_WAIT
) -> tuple[RawResponse | None, bool]:
    """Send ``data`` on a fresh connection; the first response and whether the gateway then
    closed the connection within ``close_wait`` seconds."""
    client = await RawClient.connect(port)
    try:
        await client.send(data)
        response = await client.response(method)
        closed = await client.closed(close_wait)
    finally:
        await client.aclose()
    return response, closed


def need_tool(name: str, why: str) -> None:
    """Skip the test when the program ``name`` is missing, or fail it under CI (``CI=true``):
    there a missing peer is a broken run, never a silent skip."""
    if shutil.which(name) is None:
        message = f"{name} is needed {why}" if why else f"{name} is needed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
