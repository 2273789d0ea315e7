"""Peers for the TCP proxy tests (SPEC §6, §4.10, §4.11): backends, clients, and the real CLI.

- ``EchoBackend`` is a plain TCP backend in the test process: it optionally writes a greeting
  first (a server-speaks-first protocol), echoes every byte until the peer's EOF, then writes
  ``<bye:NAME>`` and shuts down its writing side: a peer that answers half-close correctly.
  With ``speak_and_listen`` it half-closes first instead: greeting, EOF, then it only reads.
  Each accepted connection is a ``Seen`` (bytes received, whether the EOF came, when it ended).
- ``TlsEchoBackend`` terminates TLS itself with its own certificate (``Authority.server_pair``),
  records the SNI its handshake saw and the ALPN protocol it selected, greets with
  ``<hello:NAME sni=… alpn=…>\\n``, echoes, and on a line ``STOP\\n`` writes its trailer and
  closes (TLS has no half-close a client could use, so the line ends the session).
- ``TlsClient`` opens a TLS connection with Python ``ssl`` for a given SNI and trust;
  ``PlainClient`` a plain one. Both bound every wait with ``CLIENT_WAIT``.
- ``cli_gateway`` runs ``python -m a3s_gateway run`` on a config text (``tests/support/cli.py``),
  waits for it to serve, keeps its stderr drained for the failure message, and on exit checks
  that it is still running and kills it. ``CliGateway`` scrapes the management API's
  metrics and reads the access log, polling with a bound where the gateway's state has no event.

Every peer listens on 127.0.0.1, port 0; every wait is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import signal
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import h11
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import RunningGateway, start_gateway
from tests.support.gateway import CLIENT_WAIT, LOCAL

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.tls import Authority

__all__ = [
    "STOP",
    "CliGateway",
    "EchoBackend",
    "PlainClient",
    "Seen",
    "TlsClient",
    "TlsEchoBackend",
    "cli_gateway",
    "metric_sum",
]

READ_SIZE: Final = 65536
#: How many received bytes a backend keeps per connection (the rest is only counted).
KEEP: Final = 1 << 20
#: The line that ends a ``TlsEchoBackend`` session.
STOP: Final = b"STOP\n"
#: Bound on the CLI's start (interpreter, imports, bind) and on its exit once killed.
STARTUP_WAIT: Final = 40.0
STOP_WAIT: Final = 20.0
#: How often polled gateway state is looked at again.
POLL: Final = 0.02


# -- backends -------------------------------------------------------------------------------


@dataclass
class Seen:
    """One connection a backend accepted."""

    #: The first ``KEEP`` bytes received, and how many arrived in all.
    data: bytearray = field(default_factory=bytearray)
    total: int = 0
    #: The peer sent EOF (half-close), rather than resetting or being cut off.
    eof: bool = False
    #: TLS only: the SNI the handshake saw (``""``: none) and the selected ALPN protocol.
    sni: str = ""
    alpn: str = ""
    ended: trio.Event = field(default_factory=trio.Event)

    def add(self, chunk: bytes | bytearray) -> None:
        room = KEEP - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.total += len(chunk)


class _Backend:
    """What both backends share: the listener, the connection records, waiting on them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.port = 0
        self.connections: list[Seen] = []
        self._changed = trio.Event()

    @property
    def url(self) -> str:
        return f"tcp://{LOCAL}:{self.port}"

    @property
    def trailer(self) -> bytes:
        """What the backend writes after the client's EOF (or ``STOP``)."""
        return f"<bye:{self.name}>".encode()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, re-checked on every change (bounded here)."""
        with trio.fail_after(CLIENT_WAIT):
            while not predicate():
                await self._changed.wait()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1:0 and serve until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host=LOCAL)
        self.port = int(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            task_status.started()
            await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    async def _connection(self, stream: trio.SocketStream) -> None:
        seen = Seen()
        self.connections.append(seen)
        self._notify()
        try:
            await self._serve_one(stream, seen)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError):
            pass
        finally:
            await trio.aclose_forcefully(stream)
            seen.ended.set()
            self._notify()

    async def _serve_one(self, stream: trio.SocketStream, seen: Seen) -> None:
        raise NotImplementedError


class EchoBackend(_Backend):
    """A plain TCP echo backend that answers half-close (module docstring)."""

    def __init__(self, name: str, *, greeting: bytes = b"", speak_and_listen: bool = False) -> None:
        super().__init__(name)
        self.greeting = greeting
        #: Write the greeting, shut down writing at once, then only read until the peer's EOF
        #: (the backend half-closes first).
        self.speak_and_listen = speak_and_listen

    async def _serve_one(self, stream: trio.SocketStream, seen: Seen) -> None:
        if self.greeting:
            await stream.send_all(self.greeting)
        if self.speak_and_listen:
            await stream.send_eof()
            while data := await stream.receive_some(READ_SIZE):
                seen.add(data)
            seen.eof = True
            return
        while data := await stream.receive_some(READ_SIZE):
            seen.add(data)
            await stream.send_all(data)
        seen.eof = True
        self._notify()
        await stream.send_all(self.trailer)
        await stream.send_eof()


class TlsEchoBackend(_Backend):
    """A TLS echo backend with its own certificate (module docstring)."""

    def __init__(
        self, name: str, authority: Authority, *names: str, alpn: tuple[str, ...] = ()
    ) -> None:
        super().__init__(name)
        self.names = list(names)
        self.cert_file, self.key_file = authority.server_pair(f"backend-{name}", *names)
        self.alpn = alpn

    @property
    def certificate_pem(self) -> bytes:
        """The leaf certificate this backend presents (the first PEM of its chain file)."""
        text = self.cert_file.read_bytes()
        end = b"-----END CERTIFICATE-----"
        return text[: text.index(end) + len(end)]

    def _context(self, seen: Seen) -> ssl.SSLContext:
        """A fresh server context per connection, so that its SNI callback knows whose it is."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.alpn:
            context.set_alpn_protocols(list(self.alpn))

        def note_sni(_: ssl.SSLObject, name: str | None, __: ssl.SSLContext) -> None:
            seen.sni = name or ""

        context.sni_callback = note_sni
        return context

    async def _serve_one(self, stream: trio.SocketStream, seen: Seen) -> None:
        tls = trio.SSLStream(stream, self._context(seen), server_side=True)
        with trio.fail_after(CLIENT_WAIT):
            await tls.do_handshake()
        seen.alpn = tls.selected_alpn_protocol() or ""
        self._notify()
        await tls.send_all(f"<hello:{self.name} sni={seen.sni} alpn={seen.alpn}>\n".encode())
        while data := await tls.receive_some(READ_SIZE):
            seen.add(data)
            await tls.send_all(data)
            if seen.data.endswith(STOP):
                break
        else:
            seen.eof = True
        self._notify()
        await tls.send_all(self.trailer)
        await tls.aclose()


# -- clients --------------------------------------------------------------------------------


async def read_until(stream: trio.abc.ReceiveStream, done: Callable[[bytes], bool]) -> bytes:
    """Read until ``done(received)`` holds or the stream ends (EOF, reset); bounded."""
    received = bytearray()
    with trio.fail_after(CLIENT_WAIT):
        while not done(bytes(received)):
            try:
                chunk = await stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                break
            if not chunk:
                break
            received += chunk
    return bytes(received)


async def read_to_end(stream: trio.abc.ReceiveStream) -> bytes:
    """Every byte until the stream ends (EOF or reset); bounded."""
    return await read_until(stream, lambda _: False)


class PlainClient:
    """A plain TCP client of the gateway."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    @classmethod
    async def connect(cls, port: int) -> PlainClient:
        with trio.fail_after(CLIENT_WAIT):
            return cls(await trio.open_tcp_stream(LOCAL, port))

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False if the connection is already gone."""
        try:
            with trio.fail_after(CLIENT_WAIT):
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def receive_exactly(self, size: int) -> bytes:
        """``size`` bytes, or fewer if the stream ends first."""
        return await read_until(self.stream, lambda got: len(got) >= size)

    async def half_close_and_read(self) -> bytes:
        """Shut down writing, then read until the gateway ends the connection."""
        await self.stream.send_eof()
        return await read_to_end(self.stream)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def echo_once(port: int, payload: bytes) -> bytes:
    """Connect, send ``payload``, half-close, and return every byte the gateway sent back."""
    client = await PlainClient.connect(port)
    try:
        await client.send(payload)
        return await client.half_close_and_read()
    finally:
        await client.aclose()


async def closed_at_once(port: int, payload: bytes = b"") -> bytes:
    """Connect (sending ``payload`` if any) and read until the gateway closes; returns what it
    sent, which for a rejected connection is nothing."""
    client = await PlainClient.connect(port)
    try:
        if payload:
            await client.send(payload)
        return await read_to_end(client.stream)
    finally:
        await client.aclose()


class TlsClient:
    """A TLS client (Python ``ssl``) of the gateway, for one SNI."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream

    @classmethod
    async def connect(
        cls,
        port: int,
        server_name: str,
        context: ssl.SSLContext,
        *,
        alpn: tuple[str, ...] = (),
    ) -> TlsClient:
        """Connect and finish the handshake (with ``server_name`` as SNI and verified name)."""
        if alpn:
            context.set_alpn_protocols(list(alpn))
        with trio.fail_after(CLIENT_WAIT):
            tcp = await trio.open_tcp_stream(LOCAL, port)
        stream = trio.SSLStream(tcp, context, server_hostname=server_name)
        try:
            with trio.fail_after(CLIENT_WAIT):
                await stream.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return cls(stream)

    @property
    def names(self) -> list[str]:
        """The DNS names of the certificate the client was shown."""
        peer = self.stream.getpeercert()
        assert peer is not None
        return [value for kind, value in peer.get("subjectAltName", ()) if kind == "DNS"]

    async def greeting(self) -> bytes:
        """A ``TlsEchoBackend``'s first line."""
        return await read_until(self.stream, lambda got: got.endswith(b"\n"))

    async def echo(self, data: bytes) -> bytes:
        with trio.fail_after(CLIENT_WAIT):
            await self.stream.send_all(data)
        return await read_until(self.stream, lambda got: len(got) >= len(data))

    async def stop(self, trailer: bytes) -> bytes:
        """Send ``STOP``; what came back up to and including ``trailer`` (or the end)."""
        with trio.fail_after(CLIENT_WAIT):
            await self.stream.send_all(STOP)
        return await read_until(self.stream, lambda got: got.endswith(trailer))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


# -- configs --------------------------------------------------------------------------------


def entrypoint(name: str, port: int, *lines: str, protocol: str = "tcp") -> str:
    """An ``entrypoints`` block on 127.0.0.1:``port``; ``lines`` go inside it verbatim."""
    body = "".join(f"  {line}\n" for line in lines)
    return (
        f'entrypoints "{name}" {{\n  address  = "{LOCAL}:{port}"\n'
        f'  protocol = "{protocol}"\n{body}}}\n'
    )


def service(name: str, *urls: str, extra: str = "") -> str:
    """A ``services`` block whose ``load_balancer`` has these server URLs (and ``extra``)."""
    servers = ", ".join(f'{{ url = "{url}" }}' for url in urls)
    return f'services "{name}" {{\n  load_balancer {{\n    servers = [{servers}]\n{extra}  }}\n}}\n'


def tcp_router(name: str, rule: str, target: str, *lines: str) -> str:
    """A ``tcp_routers`` block; ``lines`` (``entrypoints = [...]`` and so on) go inside."""
    body = "".join(f"  {line}\n" for line in lines)
    return f'tcp_routers "{name}" {{\n  rule    = "{rule}"\n  service = "{target}"\n{body}}}\n'


# -- the gateway through the real CLI -------------------------------------------------------


def metric_sum(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0: none)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


async def http_get(port: int, target: str) -> tuple[int, bytes]:
    """One HTTP/1.1 GET to 127.0.0.1:``port`` (h11 as the client); status and body."""
    client = h11.Connection(h11.CLIENT)
    request = h11.Request(
        method="GET", target=target, headers=[("Host", LOCAL), ("Connection", "close")]
    )
    status, body = 0, bytearray()
    with trio.fail_after(CLIENT_WAIT):
        stream = await trio.open_tcp_stream(LOCAL, port)
        async with stream:
            await stream.send_all(client.send(request) + client.send(h11.EndOfMessage()))
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some(READ_SIZE))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
    return status, bytes(body)


@dataclass
class CliGateway:
    """A running ``python -m a3s_gateway run`` (see ``cli_gateway``)."""

    process: RunningGateway
    admin: int
    access_log: Path
    stderr: bytearray = field(default_factory=bytearray)

    async def metrics(self) -> str:
        """The management API's Prometheus exposition."""
        status, body = await http_get(self.admin, "/api/gateway/metrics")
        assert status == 200, body[:300]
        return body.decode()

    async def metric(self, name: str, **labels: str) -> float:
        return metric_sum(await self.metrics(), name, **labels)

    async def rejected(self, entrypoint: str, reason: str) -> float:
        """``a3s_connections_rejected_total{entrypoint, reason}``."""
        return await self.metric(
            "a3s_connections_rejected_total", entrypoint=entrypoint, reason=reason
        )

    async def wait_metric(self, name: str, wanted: float, **labels: str) -> None:
        """Poll the metrics until ``name{labels}`` equals ``wanted`` (bounded)."""
        value = -1.0
        with trio.move_on_after(CLIENT_WAIT):
            while (value := await self.metric(name, **labels)) != wanted:  # noqa: ASYNC110
                await trio.sleep(POLL)  # (a count in another process: no event to wait on)
        assert value == wanted, (name, labels, value, wanted)

    async def wait_idle(self, entrypoint: str) -> None:
        """Until the entrypoint holds no connection (every count it took is given back)."""
        await self.wait_metric("a3s_open_connections", 0.0, entrypoint=entrypoint)

    async def log_lines(self, count: int) -> list[dict[str, object]]:
        """Every access-log line, once at least ``count`` are written (polled, bounded: the
        gateway's writer thread writes them shortly after each connection ends)."""
        lines: list[str] = []
        with trio.move_on_after(CLIENT_WAIT):
            while True:
                if self.access_log.exists():
                    text = self.access_log.read_text(encoding="utf-8")
                    lines = [line for line in text.splitlines() if line.endswith("}")]
                if len(lines) >= count:
                    break
                await trio.sleep(POLL)  # (a file another process writes: no event to wait on)
        assert len(lines) >= count, (lines, self.stderr.decode(errors="replace"))
        parsed: list[dict[str, object]] = [json.loads(line) for line in lines]
        return parsed


async def _drain(process: trio.Process, sink: bytearray) -> None:
    """Keep the gateway's stderr pipe empty (its text is kept for failure messages)."""
    assert process.stderr is not None
    while chunk := await process.stderr.receive_some(READ_SIZE):
        sink += chunk


@asynccontextmanager
async def cli_gateway(directory: Path, text: str, admin: int) -> AsyncIterator[CliGateway]:
    """Write ``text`` (plus management on ``admin`` and an access log in ``directory``) and run
    it through the CLI until the block ends; see the module docstring."""
    access_log = directory / "access.log"
    config = directory / "gateway.hcl"
    config.write_text(
        text
        + f'management {{\n  address = "{LOCAL}:{admin}"\n}}\n'
        + "providers {\n  file {\n    watch = false\n  }\n}\n"
        + f'observability {{\n  access_log_path = "{access_log}"\n}}\n'
        + "shutdown_timeout_secs = 1\n",
        encoding="utf-8",
    )
    running = await start_gateway(str(config))
    gateway = CliGateway(running, admin, access_log)
    try:
        with trio.fail_after(STARTUP_WAIT):
            await running.wait_for_line("gateway running")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drain, running.process, gateway.stderr)
            yield gateway
            # Still serving at the end (it did not crash under the test) ...
            assert running.process.returncode is None, gateway.stderr.decode(errors="replace")
            # ... then stopped as an operator would (SIGTERM, a 1 s grace), so that the
            # process writes its coverage data; its stderr is drained meanwhile.
            running.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_WAIT):
                await running.process.wait()
            nursery.cancel_scope.cancel()
    finally:
        # Killed only if the drain did not end in time (or the test failed first); the config
        # build child ends with the pipe its parent held.
        if running.process.returncode is None:
            running.process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(STOP_WAIT):
            await running.process.wait()
