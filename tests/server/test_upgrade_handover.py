"""The downstream hand-over after a protocol switch, over trio memory streams (issue #15).

``Http1Downstream`` with both request-head engines, driven the way ``serve_http1`` drives it
(``fill`` until a head, ``start_exchange``, the exchange's ``send``): after a ``101``,
``take_over`` returns the stream and exactly the bytes the client sent behind its request head,
whatever the reads were, once; the new owner then reads and writes raw bytes through the stream.
A ``101`` to a request that asked for no switch is refused before anything is written,
``take_over`` without a switch raises, and a declined upgrade leaves the connection serving
HTTP/1.1 (also through the real driver and exchange). Autojump clock throughout: every wait is
bounded in virtual time.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing

from a3s_gateway.config.load import load_config_text
from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http1 import Http1Server
from a3s_gateway.protocols.http1_engines import Http1Parser, request_head_parser
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.server.downstream import ClientGone, ConnInfo, UpgradeUnavailable
from a3s_gateway.server.http1_downstream import Http1Downstream
from a3s_gateway.server.http1_driver import serve_http1
from a3s_gateway.server.server_context import ServerContext
from a3s_gateway.upstream.peer import Peer
from a3s_gateway.upstream.pool import UpstreamPool

pytestmark = pytest.mark.parametrize("engine", ["llhttp", "h11"])

UPGRADE = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
FRAME = b"\x81\x05hello"  # a first WebSocket frame, right behind the request
SWITCH = ResponseHead(101, [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")])
SWITCH_WIRE = (
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n"
)


def downstream(engine: Http1Parser, stream: trio.abc.Stream) -> Http1Downstream:
    return Http1Downstream(stream, Http1Server(heads=request_head_parser(engine)), body_idle=5.0)


async def next_head(down: Http1Downstream) -> RequestHead:
    """What the driver does: read until a request head is pending (an earlier bodiless
    request's ``EndOfBody`` is skipped), then start its exchange."""
    while True:
        while not down.pending:
            await down.fill()
        head = down.pending.popleft()
        if isinstance(head, RequestHead):
            down.start_exchange(head)
            return head
        assert isinstance(head, EndOfBody)


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some()
        assert chunk, "EOF"
        data += chunk
    return data


async def nothing_arrives(stream: trio.abc.Stream) -> bool:
    with trio.move_on_after(1.0):
        await stream.receive_some()
        return False
    return True


async def test_the_stream_and_the_bytes_behind_the_head_are_handed_over_after_any_split(
    engine: Http1Parser, autojump_clock: trio.abc.Clock
) -> None:
    wire = UPGRADE + FRAME
    for cut in range(1, len(wire) + 1):
        client, server = trio.testing.memory_stream_pair()
        down = downstream(engine, server)
        await client.send_all(wire[:cut])
        if cut < len(UPGRADE):  # the head needs the second piece: the frame comes with it
            await client.send_all(wire[cut:])
        head = await next_head(down)
        assert (head.method, head.target, head.has_body) == (b"GET", b"/ws", False)
        if cut >= len(UPGRADE) and cut < len(wire):  # sent after the head was read
            await client.send_all(wire[cut:])
        with pytest.raises(UpgradeUnavailable):
            down.take_over()  # no 101 yet
        await down.send(SWITCH)
        assert await receive_exactly(client, len(SWITCH_WIRE)) == SWITCH_WIRE
        assert down.status == 101
        handover = down.take_over()
        assert handover.stream is server
        assert down.handed_over
        expected = FRAME if cut < len(UPGRADE) else wire[len(UPGRADE) : cut]
        assert handover.leftover == expected, cut
        rest = await receive_exactly(server, len(FRAME) - len(expected))
        assert handover.leftover + rest == FRAME
        with pytest.raises(UpgradeUnavailable):
            down.take_over()  # exactly once


async def test_the_new_owner_speaks_raw_bytes_both_ways(
    engine: Http1Parser, autojump_clock: trio.abc.Clock
) -> None:
    client, server = trio.testing.memory_stream_pair()
    down = downstream(engine, server)
    await client.send_all(UPGRADE + FRAME)
    await next_head(down)
    await down.send(SWITCH)
    handover = down.take_over()
    assert handover.leftover == FRAME
    await handover.stream.send_all(b"\x81\x02ok")
    assert await receive_exactly(client, len(SWITCH_WIRE) + 4) == SWITCH_WIRE + b"\x81\x02ok"
    await client.send_all(b"\x88\x00")
    assert await handover.stream.receive_some() == b"\x88\x00"
    with pytest.raises(ProtocolViolation) as caught:
        await down.fill()  # the HTTP side never reads the new owner's stream
    assert caught.value.status == 500
    await client.send_all(b"after")
    assert await handover.stream.receive_some() == b"after"
    await handover.stream.aclose()  # the new owner closes it
    assert await client.receive_some() == b""


async def test_a_101_to_a_request_that_asked_for_no_switch_is_refused(
    engine: Http1Parser, autojump_clock: trio.abc.Clock
) -> None:
    client, server = trio.testing.memory_stream_pair()
    down = downstream(engine, server)
    await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n")
    await next_head(down)
    with pytest.raises(ProtocolViolation) as caught:
        await down.send(SWITCH)
    assert caught.value.status == 500
    assert await nothing_arrives(client)
    with pytest.raises(UpgradeUnavailable):
        down.take_over()
    assert not down.handed_over


async def test_a_declined_upgrade_serves_the_next_request(
    engine: Http1Parser, autojump_clock: trio.abc.Clock
) -> None:
    client, server = trio.testing.memory_stream_pair()
    adapter = Http1Server(heads=request_head_parser(engine))
    down = Http1Downstream(server, adapter, body_idle=5.0)
    # A switch to a protocol the gateway does not proxy is declined (a WebSocket handshake
    # without a key would be refused with 400 instead).
    declined = UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: irc/6.9")
    await client.send_all(declined + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    await next_head(down)
    await down.send_batch(
        [ResponseHead(200, [(b"content-length", b"2")]), BodyChunk(b"no"), EndOfBody()]
    )
    with pytest.raises(UpgradeUnavailable):
        down.take_over()
    assert adapter.keep_alive
    down.pending.extend(adapter.start_next_cycle())
    head = await next_head(down)
    assert head.target == b"/next"


async def test_a_101_in_a_refused_batch_switches_nothing(
    engine: Http1Parser, autojump_clock: trio.abc.Clock
) -> None:
    client, server = trio.testing.memory_stream_pair()
    down = downstream(engine, server)
    await client.send_all(UPGRADE)
    await next_head(down)
    with pytest.raises(ProtocolViolation) as caught:
        await down.send_batch([SWITCH, BodyChunk(b"no body after a 101")])
    assert caught.value.status == 500
    assert await nothing_arrives(client)
    with pytest.raises(UpgradeUnavailable):
        down.take_over()


async def test_a_failed_101_write_hands_nothing_over(
    engine: Http1Parser, autojump_clock: trio.abc.Clock
) -> None:
    client, server = trio.testing.memory_stream_pair()
    down = downstream(engine, server)
    await client.send_all(UPGRADE)
    await next_head(down)
    await client.aclose()
    with pytest.raises(ClientGone):
        await down.send(SWITCH)
    with pytest.raises(UpgradeUnavailable):
        down.take_over()


# --- through the driver and the exchange: a declined upgrade ------------------------------

CONFIG = """
entrypoints "web" {{ address = "127.0.0.1:8080" }}
routers "all" {{
  rule    = "PathPrefix(`/`)"
  service = "svc"
}}
services "svc" {{
  load_balancer {{ servers = [{{ url = "http://10.9.0.1:80" }}] }}
}}
http1_parser = "{engine}"
"""


async def origin(stream: trio.abc.Stream) -> None:
    """Answers every request with 200 (it never sees an upgrade: the gateway strips it)."""
    conn = h11.Connection(h11.SERVER)
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some()
            if not data:
                return
            conn.receive_data(bytes(data))
        elif isinstance(event, h11.Request):
            assert not any(name == b"upgrade" for name, _ in event.headers)
        elif isinstance(event, h11.EndOfMessage):
            await stream.send_all(
                conn.send(h11.Response(status_code=200, headers=[("content-length", "2")]))
            )
            await stream.send_all(conn.send(h11.Data(data=b"ok")) + conn.send(h11.EndOfMessage()))
            conn.start_next_cycle()


async def test_the_driver_serves_on_after_a_declined_upgrade(
    engine: Http1Parser, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    async def dial(peer: Peer) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(origin, theirs)
        return ours

    pool = UpstreamPool(dialer=dial)
    await nursery.start(pool.run)
    ctx = ServerContext(compile_runtime(load_config_text(CONFIG.format(engine=engine)), 1), pool)
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_http1, server, ConnInfo("web", "192.0.2.7", 40000), ctx)
    reader = h11.Connection(h11.CLIENT)
    # A switch to a protocol the gateway does not proxy is declined (a WebSocket handshake
    # without a key would be refused with 400 instead).
    declined = UPGRADE.replace(b"Upgrade: websocket", b"Upgrade: irc/6.9")
    await client.send_all(declined + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    for target in ("/ws", "/next"):
        reader.send(h11.Request(method="GET", target=target, headers=[("host", "h")]))
        reader.send(h11.EndOfMessage())
        assert await response_status(client, reader) == 200, target
        reader.start_next_cycle()


async def response_status(stream: trio.abc.Stream, reader: h11.Connection) -> int:
    """The status of the next complete response on ``stream``."""
    status = 0
    while not isinstance(event := reader.next_event(), h11.EndOfMessage):
        if event is h11.NEED_DATA:
            reader.receive_data(bytes(await stream.receive_some()))
        elif isinstance(event, h11.Response):
            status = event.status_code
    return status


# --- through the driver: an accepted switch leaves the stream to its new owner ------------


async def test_the_driver_leaves_a_handed_over_stream_to_its_new_owner(
    engine: Http1Parser,
    nursery: trio.Nursery,
    autojump_clock: trio.abc.Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exchange that answers 101 and takes the stream over: ``serve_http1`` returns without
    reading, writing or closing it, and the new owner relays raw bytes both ways after."""
    owned: list[tuple[trio.abc.Stream, bytes]] = []

    async def switching_exchange(
        head: RequestHead, down: Http1Downstream, info: ConnInfo, ctx: ServerContext
    ) -> None:
        await down.send(SWITCH)
        handover = down.take_over()
        owned.append((handover.stream, handover.leftover))

    monkeypatch.setattr("a3s_gateway.server.http1_driver.handle_request", switching_exchange)
    pool = UpstreamPool()  # never dials: the exchange is replaced
    ctx = ServerContext(compile_runtime(load_config_text(CONFIG.format(engine=engine)), 1), pool)
    client, server = trio.testing.memory_stream_pair()
    served = trio.Event()

    async def serve() -> None:
        await serve_http1(server, ConnInfo("web", "192.0.2.7", 40000), ctx)
        served.set()

    nursery.start_soon(serve)
    await client.send_all(UPGRADE + FRAME)
    assert await receive_exactly(client, len(SWITCH_WIRE)) == SWITCH_WIRE
    await served.wait()
    assert ctx.drain.connections == set()
    [(stream, leftover)] = owned
    assert leftover == FRAME
    await client.send_all(b"\x81\x02hi")
    assert await receive_exactly(stream, 4) == b"\x81\x02hi"
    await stream.send_all(b"\x82\x01!")
    assert await receive_exactly(client, 3) == b"\x82\x01!"
    await stream.aclose()
    assert await client.receive_some() == b""
