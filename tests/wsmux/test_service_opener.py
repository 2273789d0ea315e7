"""``ServiceOpener`` against a real upstream WebSocket server (trio-websocket on 127.0.0.1):
the handshake's target, Host and forwarded fields, messages both ways, a refused handshake, a
refused port, no backend, a silent upstream, oversized upstream messages, and the backend's
in-flight count, which goes back to 0 when a channel closes. The last test runs ``serve_mux``
end to end over a real upstream.

Real sockets run on the real clock (each step waits on readiness, never on a sleep); the
connect-timeout test swaps the dialer for a memory stream and runs on the autojump clock."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
import trio_websocket
from trio.testing import MockClock
from wsproto.events import CloseConnection

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema_services import MuxChannel, WebsocketMux
from a3s_gateway.runtime.compile import ServiceRuntime, compile_runtime
from a3s_gateway.upstream.peer import Peer
from a3s_gateway.upstream.pool import UpstreamPool
from a3s_gateway.wsmux.upstream import (
    ChannelClosed,
    ChannelRejected,
    ChannelUnavailable,
    MessageTooLarge,
    ServiceOpener,
)
from tests.wsmux.harness import ack, message, start, subscribe

CONFIG = """
entrypoints "web" {{ address = "127.0.0.1:0" }}
routers "r" {{
  rule    = "PathPrefix(`/`)"
  service = "echo"
}}
services "echo" {{
  load_balancer {{
    servers = [{{ url = "http://127.0.0.1:{port}/base/" }}]
  }}
}}
"""
HEADERS = [(b"authorization", b"Bearer alice"), (b"x-request-id", b"r-1")]


@dataclass
class Upstream:
    """A WebSocket server: echoes text, answers "big" with 5000 bytes, refuses /reject."""

    requests: list[tuple[str, dict[bytes, bytes]]] = field(default_factory=list)
    closes: list[int] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        self.requests.append((request.path, dict(request.headers)))
        if request.path.endswith("/reject"):
            await request.reject(403, body=b"no")
            return
        websocket = await request.accept()
        try:
            while True:
                received = await websocket.get_message()
                await websocket.send_message("x" * 5000 if received == "big" else received)
        except trio_websocket.ConnectionClosed as closed:
            self.closes.append(-1 if closed.reason is None else closed.reason.code)
            self.closed.set()


async def serve(nursery: trio.Nursery) -> tuple[Upstream, ServiceRuntime]:
    upstream = Upstream()
    server = await nursery.start(
        trio_websocket.serve_websocket, upstream.handler, "127.0.0.1", 0, None
    )
    return upstream, runtime_for(server.port)


def runtime_for(port: int) -> ServiceRuntime:
    return compile_runtime(load_config_text(CONFIG.format(port=port)), 1).services["echo"]


def opener(runtime: ServiceRuntime, pool: UpstreamPool | None = None) -> ServiceOpener:
    return ServiceOpener(
        {"echo": runtime},
        pool or UpstreamPool(),
        HEADERS,
        max_message_bytes=1024,
        queue_messages=4,
    )


async def test_a_channel_talks_to_the_upstream_and_closes_1000(nursery: trio.Nursery) -> None:
    upstream, runtime = await serve(nursery)
    backend = runtime.backends[0]
    channel = await opener(runtime).open(nursery, "echo", "/chat")
    assert backend.in_flight == 1
    path, headers = upstream.requests[0]
    assert path == "/base/chat"  # the server URL's path prefix, then the channel's path
    assert (headers[b"authorization"], headers[b"x-request-id"]) == (b"Bearer alice", b"r-1")
    await channel.send_message("hello")
    assert await channel.get_message() == "hello"
    await channel.send_message(b"\x00bin")
    assert await channel.get_message() == b"\x00bin"
    await channel.aclose()
    assert backend.in_flight == 0
    await upstream.closed.wait()
    assert upstream.closes == [1000]
    with pytest.raises(ChannelClosed):
        await channel.send_message("after")
    await channel.aclose()  # idempotent
    assert backend.in_flight == 0


async def test_an_upstream_close_reaches_get_message(nursery: trio.Nursery) -> None:
    async def closing(request: trio_websocket.WebSocketRequest) -> None:
        websocket = await request.accept()
        await websocket.aclose(4000, "done here")

    server = await nursery.start(trio_websocket.serve_websocket, closing, "127.0.0.1", 0, None)
    runtime = runtime_for(server.port)
    channel = await opener(runtime).open(nursery, "echo", "/")
    with pytest.raises(ChannelClosed) as closed:
        await channel.get_message()
    assert (closed.value.code, closed.value.reason) == (4000, "done here")
    assert not isinstance(closed.value, MessageTooLarge)
    await channel.aclose(1001)
    assert runtime.backends[0].in_flight == 0


async def test_a_refused_handshake_is_channel_rejected(nursery: trio.Nursery) -> None:
    upstream, runtime = await serve(nursery)
    with pytest.raises(ChannelRejected) as rejected:
        await opener(runtime).open(nursery, "echo", "/reject")
    assert rejected.value.status == 403
    assert upstream.requests[0][0] == "/base/reject"
    assert runtime.backends[0].in_flight == 0


async def test_a_refused_port_is_channel_unavailable(nursery: trio.Nursery) -> None:
    with socket.socket() as probe:  # a port nobody listens on (bound, then released)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runtime = runtime_for(port)
    with pytest.raises(ChannelUnavailable) as unavailable:
        await opener(runtime).open(nursery, "echo", "/")
    assert unavailable.value.detail == "connect failed: refused"
    assert runtime.backends[0].in_flight == 0


async def test_no_backend_or_no_service_is_channel_unavailable(nursery: trio.Nursery) -> None:
    runtime = runtime_for(9)
    runtime.backends[0].active_healthy = False
    with pytest.raises(ChannelUnavailable, match="no backend"):
        await opener(runtime).open(nursery, "echo", "/")
    with pytest.raises(ChannelUnavailable, match="unknown service"):
        await opener(runtime).open(nursery, "nope", "/")
    assert runtime.backends[0].in_flight == 0


async def test_a_silent_upstream_times_out(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    remotes: list[trio.abc.Stream] = []

    async def dial(peer: Peer) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        remotes.append(theirs)  # reads the handshake, never answers
        await trio.lowlevel.checkpoint()
        return ours

    runtime = runtime_for(9)
    began = trio.current_time()
    with pytest.raises(ChannelUnavailable, match="connect timeout"):
        await opener(runtime, UpstreamPool(dialer=dial)).open(nursery, "echo", "silent")
    assert trio.current_time() - began == pytest.approx(runtime.connect_timeout)
    assert len(remotes) == 1
    assert runtime.backends[0].in_flight == 0
    handshake = b""
    while data := await remotes[0].receive_some():  # the handshake, then our end was closed
        handshake += data
    head = handshake.lower()
    assert head.startswith(b"get /base/silent http/1.1\r\n")
    assert b"\r\nhost: 127.0.0.1:9\r\n" in head
    assert b"\r\nauthorization: bearer alice\r\n" in head


async def test_an_oversized_upstream_message_is_message_too_large(
    nursery: trio.Nursery,
) -> None:
    upstream, runtime = await serve(nursery)
    channel = await opener(runtime).open(nursery, "echo", "/")
    await channel.send_message("big")
    with pytest.raises(MessageTooLarge) as too_large:
        await channel.get_message()
    assert too_large.value.code == 1009
    await upstream.closed.wait()
    assert upstream.closes == [1009]
    await channel.aclose(1009)
    assert runtime.backends[0].in_flight == 0


SETTINGS = WebsocketMux(
    max_message_bytes=1024,
    queue_messages=4,
    channels={"echo": MuxChannel(service="echo", path="/echo")},
)


@pytest.mark.parametrize("end", ["cancelled", "client close", "client gone", "unsubscribe"])
async def test_serve_mux_over_a_real_upstream(nursery: trio.Nursery, end: str) -> None:
    upstream, runtime = await serve(nursery)
    running = start(nursery, SETTINGS, real_opener=opener(runtime))
    client = running.client
    assert await subscribe(client, "echo") == ack("subscribe", "echo")
    assert runtime.backends[0].in_flight == 1
    await client.send_json({"type": "publish", "channel": "echo", "data": "round trip"})
    assert await client.message() == message("echo", "round trip")
    await client.send_json({"type": "publish", "channel": "echo", "data": "big"})
    assert [message["type"] for message in await client.messages(2)] == ["error", "closed"]
    await upstream.closed.wait()  # message_too_large closed the channel with 1009
    assert runtime.backends[0].in_flight == 0
    assert await subscribe(client, "echo", 2) == ack("subscribe", "echo", 2)
    assert runtime.backends[0].in_flight == 1
    upstream.closed = trio.Event()
    if end == "cancelled":
        running.scope.cancel()
        assert (await client.expect_close()).code == 1001
        await running.done.wait()
        assert type(running.raised) is trio.Cancelled
    else:
        if end == "unsubscribe":
            await client.send_json({"type": "unsubscribe", "channel": "echo", "id": 3})
            assert await client.message() == ack("unsubscribe", "echo", 3)
        if end == "client gone":
            await client.stream.aclose()
        else:
            await client.send(CloseConnection(1000))
            assert (await client.expect_close()).code == 1000
        await running.finished()  # (after every channel's close: the pumps are done)
    await upstream.closed.wait()
    assert upstream.closes == [1009, 1000 if end == "unsubscribe" else 1001]
    assert runtime.backends[0].in_flight == 0
