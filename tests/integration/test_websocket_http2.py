"""WebSocket over HTTP/2 end to end (RFC 8441 extended CONNECT; SPEC §5.8, §5.11).

An in-process ``Gateway`` on 127.0.0.1 in front of the real upstream WebSocket server of
``tests/support/ws_origin.py`` (trio-websocket; raw bytes for defective answers), driven by a
real HTTP/2 client: the raw client of ``tests/support/h2_client.py`` (hyperframe and hpack on a
trio TCP stream, the gateway's windows obeyed, received DATA acknowledged) opens the extended
CONNECT once the gateway's SETTINGS allowed it, and a wsproto ``Connection`` (the post-
handshake frame protocol, client side) makes the masked frames it sends as DATA and reads the
frames that come back (``H2WebSocket``).

Covered: ``SETTINGS_ENABLE_CONNECT_PROTOCOL``; messages echoed, a 1 MiB one both ways through
the flow-control windows; the upstream's HTTP/1.1 ``GET`` upgrade with a key the gateway made
(the client's own ignored) and the ``200`` without ``Upgrade``/``Connection``/
``Sec-WebSocket-Accept``; the subprotocol chosen upstream; the router's middlewares on the
handshake; close codes both ways; the Close frames the gateway sends itself (upstream TCP loss
→ 1014, the client's RST_STREAM or lost connection → 1001 to the upstream, stream idle and the
drain's end → 1001 both ways); an upstream's refusal, a ``101`` that does not accept the
gateway's key, version 12, other ``:protocol`` values and a plain CONNECT; two sessions on one
connection, the backend's lease and the session metrics; the access log (``websocket``,
``HTTP/2``); a ``websocket_mux`` service serving an HTTP/2 client; and h2's own client, which
validates what the gateway sends, opening a session. Every wait is bounded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import h2.config
import h2.connection
import h2.events
import pytest
import trio
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, TextMessage

from tests.integration.test_websocket import (
    API_KEY,
    in_flight,
    log_lines,
    logging_to,
    metric,
    switching,
    until,
    ws_config,
)
from tests.support.gateway import CLIENT_WAIT, GatewayHandle, running_gateway
from tests.support.h2_client import H2Client, Reply
from tests.support.ws_origin import (
    CloseAfterFirst,
    DropAfterFirst,
    Echo,
    RawAnswer,
    Reject,
    Session,
    WsOrigin,
)

pytestmark = pytest.mark.integration

MIB: Final = 1 << 20
#: RFC 8441 §3: the SETTINGS parameter that allows an extended CONNECT.
ENABLE_CONNECT_PROTOCOL: Final = 0x8
#: RFC 9113 §7 error codes.
NO_ERROR: Final = 0x0
CANCEL: Final = 0x8


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> WsOrigin:
    server = WsOrigin(max_message_size=8 * MIB)
    await nursery.start(server.serve)
    return server


@asynccontextmanager
async def h2_connection(gw: GatewayHandle) -> AsyncIterator[H2Client]:
    """An HTTP/2 connection to the gateway whose SETTINGS arrived (RFC 8441 §3: a client
    waits for ``ENABLE_CONNECT_PROTOCOL`` before an extended CONNECT)."""
    client = await H2Client.connect(gw.port)
    try:
        with trio.fail_after(CLIENT_WAIT):
            await client.wait(lambda: ENABLE_CONNECT_PROTOCOL in client.server_settings)
        yield client
    finally:
        await client.aclose()


def connect_fields(
    path: str,
    *,
    protocol: bytes | None = b"websocket",
    version: bytes | None = b"13",
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> list[tuple[bytes, bytes]]:
    """An extended CONNECT (a plain one with ``protocol`` None)."""
    fields = [(b":method", b"CONNECT")]
    if protocol is None:
        return [*fields, (b":authority", b"gateway.test")]
    fields += [
        (b":protocol", protocol),
        (b":scheme", b"http"),
        (b":authority", b"gateway.test"),
        (b":path", path.encode()),
    ]
    if version is not None:
        fields.append((b"sec-websocket-version", version))
    return [*fields, *headers]


async def open_stream(client: H2Client, fields: list[tuple[bytes, bytes]]) -> Reply:
    """Send ``fields`` on a new stream (not ended) and wait for the response head."""
    stream_id = client.open_stream()
    await client.send_frames(*client.headers_frames(stream_id, fields, end=False))
    reply = client.replies[stream_id]
    with trio.fail_after(CLIENT_WAIT):
        await client.wait(lambda: reply.status != 0 or reply.done)
    return reply


@dataclass
class H2WebSocket:
    """One WebSocket session on one HTTP/2 stream, frames made and read by wsproto."""

    client: H2Client
    reply: Reply
    ws: Connection = field(default_factory=lambda: Connection(ConnectionType.CLIENT))
    #: How much of the stream's DATA wsproto has seen.
    fed: int = 0

    @property
    def stream_id(self) -> int:
        return self.reply.stream_id

    @classmethod
    async def open(
        cls, client: H2Client, path: str, headers: Iterable[tuple[bytes, bytes]] = ()
    ) -> H2WebSocket:
        """An extended CONNECT to ``path`` that the gateway answered 200."""
        reply = await open_stream(client, connect_fields(path, headers=headers))
        assert reply.status == 200, (reply.status, bytes(reply.body))
        return cls(client, reply)

    async def send(self, message: str | bytes) -> None:
        event = TextMessage(message) if isinstance(message, str) else BytesMessage(message)
        await self.client.send_body(self.stream_id, self.ws.send(event), end=False)

    async def event(self) -> Event:
        """The next wsproto event (pings answered on the way)."""
        with trio.fail_after(CLIENT_WAIT):
            while True:
                for event in self.ws.events():
                    if not isinstance(event, Ping):
                        return event
                    await self.client.send_body(
                        self.stream_id, self.ws.send(event.response()), end=False
                    )
                await self.client.wait(lambda: len(self.reply.body) > self.fed or self.reply.done)
                reply = self.reply
                if len(reply.body) > self.fed:
                    self.ws.receive_data(bytes(reply.body[self.fed :]))
                    self.fed = len(reply.body)
                else:
                    assert reply.ended, f"the stream was reset ({reply.reset})"
                    self.ws.receive_data(None)

    async def receive(self) -> str | bytes:
        """The next whole message."""
        text: list[str] = []
        binary = bytearray()
        while True:
            event = await self.event()
            if isinstance(event, TextMessage):
                text.append(event.data)
                if event.message_finished:
                    return "".join(text)
            elif isinstance(event, BytesMessage):
                binary += event.data
                if event.message_finished:
                    return bytes(binary)
            else:
                raise AssertionError(f"unexpected {event!r}")

    async def closed_by_peer(self) -> int:
        """Wait for the peer's Close, answer it; its code."""
        event = await self.event()
        assert isinstance(event, CloseConnection), event
        await self.client.send_body(self.stream_id, self.ws.send(event.response()), end=False)
        return event.code

    async def close(self, code: int) -> int:
        """Send a Close; the code of the Close that answers it."""
        await self.client.send_body(self.stream_id, self.ws.send(CloseConnection(code)), end=False)
        event = await self.event()
        assert isinstance(event, CloseConnection), event
        return event.code

    async def raw_close_code(self) -> int:
        """The code of a Close frame read from the wire without wsproto (which refuses the
        reserved 1014): the next frame must be it."""
        reply = self.reply
        with trio.fail_after(CLIENT_WAIT):
            await self.client.wait(lambda: len(reply.body) >= self.fed + 4)
        frame = bytes(reply.body[self.fed : self.fed + 4])
        assert frame[0] == 0x88  # FIN, Close
        assert frame[1] == 2  # unmasked (toward a client), a code and no reason
        self.fed += 4
        code: int = struct.unpack("!H", frame[2:4])[0]
        return code

    async def ended(self) -> Reply:
        """Wait until the gateway ended or reset the stream."""
        reply = self.reply
        with trio.fail_after(CLIENT_WAIT):
            await self.client.wait(lambda: reply.done)
        return reply


def generated_key(session: Session) -> bytes:
    """The ``Sec-WebSocket-Key`` the upstream got, checked to be 16 bytes in base64."""
    [key] = session.values(b"sec-websocket-key")
    try:
        assert len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error as error:
        raise AssertionError(f"not base64: {key!r}") from error
    return key


# -- the handshake and messages ---------------------------------------------------------------


async def test_an_extended_connect_session_echoes_through_an_http1_upgrade(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    client_key = (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")
    async with (
        running_gateway(ws_config(upstream, more=logging_to(log))) as gw,
        h2_connection(gw) as client,
    ):
        assert client.server_settings[ENABLE_CONNECT_PROTOCOL] == 1
        session = await H2WebSocket.open(client, "/chat?room=1", headers=[client_key])
        names = {name for name, _ in session.reply.headers}
        assert not names & {b"upgrade", b"connection", b"sec-websocket-accept"}
        await session.send("hello")
        assert await session.receive() == "hello"
        await session.send(b"\x00\x01binary")
        assert await session.receive() == b"\x00\x01binary"
        assert await session.close(4001) == 4001
        await session.ended()
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
    [seen] = upstream.sessions
    assert (seen.method, seen.target) == (b"GET", b"/chat?room=1")
    assert seen.values(b"upgrade") == [b"websocket"]
    assert seen.values(b"connection") == [b"upgrade"]
    assert seen.values(b"sec-websocket-version") == [b"13"]
    assert generated_key(seen) != client_key[1]  # the gateway's own key, not the client's
    assert seen.values(b"host") == [b"gateway.test"]  # the :authority (pass_host_header)
    assert seen.values(b"via") == [b"2 a3s-gateway"]
    assert seen.received == 2
    assert seen.close_code == 4001
    [line] = log_lines(log)
    assert (line["type"], line["protocol"], line["method"]) == ("websocket", "HTTP/2", "CONNECT")
    assert line["status"] == 200
    assert line["path"] == "/chat"
    assert (line["ws_close_client"], line["ws_close_upstream"]) == (4001, 4001)
    assert line["error"] == ""
    # "hello" (2 + 4 + 5), the binary (2 + 4 + 8) and the Close (2 + 4 + 2), masked; unmasked
    # back: 2 + 5, 2 + 8 and 2 + 2.
    assert (line["request_bytes"], line["response_bytes"]) == (33, 21)


async def test_a_mib_both_ways_goes_through_the_windows(upstream: WsOrigin) -> None:
    message = bytes(range(256)) * (4 * 1024)  # 1 MiB: many windows' worth each way
    async with running_gateway(ws_config(upstream)) as gw, h2_connection(gw) as client:
        session = await H2WebSocket.open(client, "/big")
        await session.send(message)
        echoed = await session.receive()
        assert isinstance(echoed, bytes)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(message).digest()
        await session.send("and after it")
        assert await session.receive() == "and after it"


async def test_the_client_sees_the_subprotocol_the_upstream_chose(upstream: WsOrigin) -> None:
    upstream.on("/chat", Echo(subprotocols=("chat.v1",)))
    offered = (b"sec-websocket-protocol", b"chat.v2, chat.v1")
    async with running_gateway(ws_config(upstream)) as gw, h2_connection(gw) as client:
        session = await H2WebSocket.open(client, "/chat", headers=[offered])
        assert (b"sec-websocket-protocol", b"chat.v1") in session.reply.headers
        await session.send("on v1")
        assert await session.receive() == "on v1"
    assert upstream.sessions[0].values(b"sec-websocket-protocol") == [b"chat.v2, chat.v1"]


async def test_the_routers_middlewares_run_on_the_handshake(upstream: WsOrigin) -> None:
    definitions = (
        API_KEY
        + """
middlewares "strip" {
  type     = "strip-prefix"
  prefixes = ["/api"]
}
middlewares "hdrs" {
  type             = "headers"
  request_headers  = { "X-Env" = "prod" }
  response_headers = { "X-Frame-Options" = "DENY" }
}
"""
    )
    config = ws_config(upstream, more=definitions, middlewares=("key", "strip", "hdrs"))
    async with running_gateway(config) as gw, h2_connection(gw) as client:
        refused = await open_stream(client, connect_fields("/api/chat"))
        assert refused.status == 401
        assert upstream.connections == 0
        key = (b"x-api-key", b"k-1234567890abcdef")
        session = await H2WebSocket.open(client, "/api/chat?x=1", headers=[key])
        assert (b"x-frame-options", b"DENY") in session.reply.headers
        await session.send("rewritten")
        assert await session.receive() == "rewritten"
    [seen] = upstream.sessions
    assert (seen.method, seen.target) == (b"GET", b"/chat?x=1")
    assert seen.values(b"x-forwarded-prefix") == [b"/api"]
    assert seen.values(b"x-env") == [b"prod"]
    assert seen.values(b"upgrade") == [b"websocket"]
    generated_key(seen)


async def test_two_sessions_share_a_connection_and_hold_their_backend(
    upstream: WsOrigin,
) -> None:
    async with running_gateway(ws_config(upstream)) as gw, h2_connection(gw) as client:
        first = await H2WebSocket.open(client, "/one")
        second = await H2WebSocket.open(client, "/two")
        await second.send("2")
        await first.send("1")
        assert await first.receive() == "1"
        assert await second.receive() == "2"
        assert in_flight(gw) == [2]
        assert metric(gw, "a3s_websocket_sessions_active", router="main") == 2
        # The connection stays one HTTP/2 connection; no connection became a WebSocket one.
        assert metric(gw, "a3s_open_connections", protocol="http2") == 1
        assert metric(gw, "a3s_open_connections", protocol="websocket") == 0
        assert metric(gw, "a3s_open_connections", protocol="http1") == 0
        assert await first.close(1000) == 1000
        await until(lambda: in_flight(gw) == [1])
        assert await second.close(1000) == 1000
        await until(lambda: in_flight(gw) == [0])
        await until(lambda: metric(gw, "a3s_websocket_sessions_active", router="main") == 0)
        assert metric(gw, "a3s_websocket_sessions_total", router="main") == 2
        assert metric(gw, "a3s_open_connections", protocol="http2") == 1
    assert [seen.path for seen in upstream.sessions] == [b"/one", b"/two"]


# -- closing ----------------------------------------------------------------------------------


async def test_an_upstream_close_code_reaches_the_client(upstream: WsOrigin) -> None:
    upstream.on("/bye", CloseAfterFirst(4002))
    async with running_gateway(ws_config(upstream)) as gw, h2_connection(gw) as client:
        session = await H2WebSocket.open(client, "/bye")
        await session.send("anything")
        assert await session.closed_by_peer() == 4002
        reply = await session.ended()
        assert reply.ended  # END_STREAM once the upstream closed its side
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
    assert upstream.sessions[0].close_code == 4002


async def test_upstream_tcp_loss_closes_the_client_with_1014(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    upstream.on("/fragile", DropAfterFirst())
    log = tmp_path / "access.log"
    async with (
        running_gateway(ws_config(upstream, more=logging_to(log))) as gw,
        h2_connection(gw) as client,
    ):
        session = await H2WebSocket.open(client, "/fragile")
        await session.send("goodbye?")
        assert await session.raw_close_code() == 1014
        await session.ended()
    [line] = log_lines(log)
    assert line["error"] == "upstream_reset"
    assert "ws_close_upstream" not in line


async def test_a_client_reset_closes_the_upstream_with_1001(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    async with (
        running_gateway(ws_config(upstream, more=logging_to(log))) as gw,
        h2_connection(gw) as client,
    ):
        session = await H2WebSocket.open(client, "/echo")
        await session.send("one")
        assert await session.receive() == "one"
        await client.reset(session.stream_id, CANCEL)
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
        await until(lambda: in_flight(gw) == [0])
        # The connection carries on.
        again = await H2WebSocket.open(client, "/again")
        await again.send("two")
        assert await again.receive() == "two"
    assert upstream.sessions[0].close_code == 1001
    first = log_lines(log)[0]
    assert (first["type"], first["error"]) == ("websocket", "client_abort")
    assert "ws_close_client" not in first


async def test_a_lost_client_connection_closes_the_upstream_with_1001(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    async with running_gateway(ws_config(upstream, more=logging_to(log))) as gw:
        async with h2_connection(gw) as client:
            session = await H2WebSocket.open(client, "/echo")
            await session.send("one")
            assert await session.receive() == "one"
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
    assert upstream.sessions[0].close_code == 1001
    [line] = log_lines(log)
    assert (line["type"], line["protocol"]) == ("websocket", "HTTP/2")
    assert line["error"] == "client_abort"


async def test_the_stream_idle_timeout_closes_both_sides_with_1001(upstream: WsOrigin) -> None:
    config = ws_config(upstream, balancer='    stream_idle_timeout = "1s"')
    async with running_gateway(config) as gw, h2_connection(gw) as client:
        session = await H2WebSocket.open(client, "/quiet")
        await session.send("then silence")
        assert await session.receive() == "then silence"
        quiet_since = trio.current_time()
        assert await session.closed_by_peer() == 1001
        assert trio.current_time() - quiet_since >= 0.9
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
    assert upstream.sessions[0].close_code == 1001


async def test_a_drain_lets_sessions_run_then_closes_them_with_1001(upstream: WsOrigin) -> None:
    async with (
        running_gateway(ws_config(upstream), grace=1.0) as gw,
        h2_connection(gw) as client,
    ):
        session = await H2WebSocket.open(client, "/long")
        await session.send("before")
        assert await session.receive() == "before"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(gw.gateway.shutdown, 1.0)
            draining_since = trio.current_time()
            with trio.fail_after(CLIENT_WAIT):
                await client.wait(lambda: bool(client.goaways))
            assert client.goaway_codes()[0] == NO_ERROR
            await session.send("during")
            assert await session.receive() == "during"
            assert await session.closed_by_peer() == 1001
            assert trio.current_time() - draining_since >= 0.9
        with trio.fail_after(CLIENT_WAIT):
            await upstream.wait_for(lambda: upstream.sessions[0].ended)
    assert upstream.sessions[0].close_code == 1001


# -- refusals ---------------------------------------------------------------------------------


async def test_an_upstream_refusal_reaches_the_client_as_a_response(
    upstream: WsOrigin, tmp_path: Path
) -> None:
    upstream.on("/private", Reject(403, b"no entry here"))
    log = tmp_path / "access.log"
    async with (
        running_gateway(ws_config(upstream, more=logging_to(log))) as gw,
        h2_connection(gw) as client,
    ):
        reply = await open_stream(client, connect_fields("/private"))
        with trio.fail_after(CLIENT_WAIT):
            await client.wait(lambda: reply.done and reply.reset is not None)
        # The client's side of a refused tunnel is stopped without error (RFC 9113 §8.1).
        assert reply.reset == NO_ERROR
    assert reply.status == 403
    assert bytes(reply.body) == b"no entry here"
    assert upstream.sessions[0].accepted is False
    [line] = log_lines(log)
    assert (line["type"], line["status"], line["protocol"]) == ("http", 403, "HTTP/2")


async def test_a_101_that_does_not_accept_the_gateways_key_is_a_502(upstream: WsOrigin) -> None:
    # The accept value of RFC 6455's sample key: right for that key, wrong for the gateway's.
    upstream.on("/liar", RawAnswer(switching("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")))
    key = (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")
    async with running_gateway(ws_config(upstream)) as gw, h2_connection(gw) as client:
        reply = await open_stream(client, connect_fields("/liar", headers=[key]))
    assert reply.status == 502
    assert upstream.connections == 1


@pytest.mark.parametrize(
    ("version", "status"),
    [(b"12", 426), (None, 400)],
    ids=["version-12", "no-version"],
)
async def test_a_defective_handshake_is_answered_without_the_upstream(
    upstream: WsOrigin, version: bytes | None, status: int
) -> None:
    async with running_gateway(ws_config(upstream)) as gw, h2_connection(gw) as client:
        reply = await open_stream(client, connect_fields("/echo", version=version))
        with trio.fail_after(CLIENT_WAIT):
            await client.wait(lambda: reply.done)
    assert reply.status == status
    if status == 426:
        assert (b"sec-websocket-version", b"13") in reply.headers
    assert json.loads(bytes(reply.body))["status"] == status
    assert upstream.connections == 0


async def test_other_protocols_and_plain_connect_are_refused(upstream: WsOrigin) -> None:
    async with running_gateway(ws_config(upstream)) as gw, h2_connection(gw) as client:
        udp = await open_stream(client, connect_fields("/", protocol=b"connect-udp"))
        tunnel = await open_stream(client, connect_fields("/", protocol=None))
        with trio.fail_after(CLIENT_WAIT):
            await client.wait(lambda: udp.done and tunnel.done)
    assert udp.status == 501
    assert json.loads(bytes(udp.body)) == {"error": "unsupported protocol", "status": 501}
    assert tunnel.status == 405
    assert (b"allow", b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS") in tunnel.headers
    assert upstream.connections == 0


# -- the multiplexer --------------------------------------------------------------------------

MUX: Final = """
entrypoints "web" {
  address = "127.0.0.1:0"
}
routers "live" {
  rule    = "Path(`/live`)"
  service = "live"
}
services "live" {
  websocket_mux {
    channels "chat" {
      broadcast = true
      echo      = true
    }
  }
}
"""


async def test_a_multiplexer_serves_an_http2_client() -> None:
    async with running_gateway(MUX) as gw, h2_connection(gw) as client:
        session = await H2WebSocket.open(client, "/live")
        assert not {name for name, _ in session.reply.headers} & {b"sec-websocket-accept"}
        await session.send('{"type":"subscribe","channel":"chat","id":1}')
        ack = json.loads(await session.receive())
        assert ack == {"type": "ack", "op": "subscribe", "channel": "chat", "id": 1}
        await session.send('{"type":"publish","channel":"chat","data":"hello"}')
        message = json.loads(await session.receive())
        assert message == {"type": "message", "channel": "chat", "data": "hello"}
        assert metric(gw, "a3s_websocket_sessions_active", router="live") == 1
        assert metric(gw, "a3s_open_connections", protocol="websocket") == 0
        assert await session.close(1000) == 1000
        await until(lambda: metric(gw, "a3s_websocket_sessions_active", router="live") == 0)


# -- h2's own client ------------------------------------------------------------------------


async def test_h2s_own_client_opens_a_session(upstream: WsOrigin) -> None:
    """h2's ``H2Connection`` validates everything the gateway sends (no connection-specific
    field in the 200, flow control) and sends ``:protocol`` only once allowed."""
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    ws = Connection(ConnectionType.CLIENT)
    async with running_gateway(ws_config(upstream)) as gw:
        stream = await trio.open_tcp_stream("127.0.0.1", gw.port)
        events: list[h2.events.Event] = []

        async def until_event(predicate: Callable[[h2.events.Event], bool]) -> h2.events.Event:
            with trio.fail_after(CLIENT_WAIT):
                while True:
                    for event in events:
                        if predicate(event):
                            events.remove(event)
                            return event
                    data = await stream.receive_some(65536)
                    assert data, "the gateway closed the connection"
                    events.extend(conn.receive_data(data))
                    await stream.send_all(conn.data_to_send())

        try:
            conn.initiate_connection()
            await stream.send_all(conn.data_to_send())
            await until_event(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
            assert conn.remote_settings.enable_connect_protocol == 1
            conn.send_headers(1, connect_fields("/h2"), end_stream=False)
            await stream.send_all(conn.data_to_send())
            response = await until_event(lambda e: isinstance(e, h2.events.ResponseReceived))
            assert isinstance(response, h2.events.ResponseReceived)
            assert (b":status", b"200") in response.headers
            conn.send_data(1, ws.send(TextMessage("from h2")))
            await stream.send_all(conn.data_to_send())
            data = await until_event(lambda e: isinstance(e, h2.events.DataReceived))
            assert isinstance(data, h2.events.DataReceived)
            conn.acknowledge_received_data(data.flow_controlled_length, 1)
            ws.receive_data(data.data)
            [echo] = list(ws.events())
            assert isinstance(echo, TextMessage)
            assert echo.data == "from h2"
        finally:
            await trio.aclose_forcefully(stream)
    assert upstream.sessions[0].method == b"GET"
