"""The exchange's two seams over trio memory streams (DESIGN.md §3.6), issue #15:

- ``Upstream`` (``upstream/seam.py``), HTTP/1.1's ``Http1Upstream``: one exchange sent and
  read, the connection back to the pool only when clean, a failed write poisoning it;
- ``Downstream`` (``server/downstream.py``): request-body bytes are acknowledged only once the
  upstream accepted them (also across retry attempts, each byte once); an abort goes through
  the seam (HTTP/1.1 then ends the connection, the only thing its framing allows);
- the upgrade hand-over of both seams: without a protocol switch ``take_over`` raises rather
  than hand over a stream mid-protocol (the switch itself, with both parser engines, is tested
  in ``test_upgrade_handover.py`` and ``tests/upstream/test_http1_handover.py``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from a3s_gateway.config.load import load_config_text
from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.protocols.events import (
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    Informational,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http1 import Http1Server
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.server.downstream import ConnInfo, ExchangeAborted, aborted
from a3s_gateway.server.exchange.attempt import forward
from a3s_gateway.server.exchange.context import Exchange
from a3s_gateway.server.exchange.plan import plan_direct
from a3s_gateway.server.http1_downstream import Http1Downstream
from a3s_gateway.server.replay import ReplayBuffer
from a3s_gateway.server.server_context import ServerContext
from a3s_gateway.upstream.http1_upstream import Http1Upstream
from a3s_gateway.upstream.peer import Peer, PoolSettings
from a3s_gateway.upstream.pool import UpstreamPool
from a3s_gateway.upstream.seam import Handover, UpgradeUnavailable, UpstreamGone

PEER = Peer("http", "10.9.0.1", 80)
SETTINGS = PoolSettings()
HEAD = RequestHead(b"GET", b"/", b"up", [(b"host", b"up")])
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"


async def pool_of(nursery: trio.Nursery, streams: list[trio.abc.Stream]) -> UpstreamPool:
    """A pool whose dialer hands out ``streams`` in order."""
    queue = deque(streams)

    async def dial(peer: Peer) -> trio.abc.Stream:
        return queue.popleft()

    pool = UpstreamPool(dialer=dial)
    await nursery.start(pool.run)
    return pool


async def test_a_clean_exchange_goes_back_to_the_pool(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    pool = await pool_of(nursery, [ours])
    up = Http1Upstream(await pool.acquire(PEER, SETTINGS), pool)
    assert not up.reused
    await up.send_batch([HEAD])
    assert (await theirs.receive_some()).startswith(b"GET / HTTP/1.1\r\nhost: up\r\n")
    await theirs.send_all(OK)
    events = await up.receive()
    assert events[0] == ResponseHead(200, [(b"content-length", b"2")], b"OK")
    assert events[1:] == [BodyChunk(b"hi"), EndOfBody()]
    assert up.received_any
    up.release(clean=True)
    assert pool.stats(PEER).idle == 1
    again = Http1Upstream(await pool.acquire(PEER, SETTINGS), pool)
    assert again.reused  # the same connection...
    assert not again.received_any  # ...on a fresh cycle
    again.release(clean=False)
    assert pool.stats(PEER).idle == 0


async def test_an_exchange_that_was_not_clean_is_never_pooled(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    pool = await pool_of(nursery, [ours])
    up = Http1Upstream(await pool.acquire(PEER, SETTINGS), pool)
    await up.send(HEAD)
    await theirs.send_all(OK)
    await up.receive()
    up.release(clean=False)  # e.g. the client went away before the body was relayed
    assert pool.stats(PEER).idle == 0


async def test_a_failed_write_is_upstream_gone_and_poisons(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    pool = await pool_of(nursery, [ours])
    up = Http1Upstream(await pool.acquire(PEER, SETTINGS), pool)
    await theirs.aclose()
    await ours.aclose()  # the next write fails
    with pytest.raises(UpstreamGone, match="write failed"):
        await up.send(HEAD)
    up.release(clean=True)  # the adapter knows the write failed: not reusable
    assert pool.stats(PEER).idle == 0


async def test_eof_and_a_failed_read_reach_the_exchange(nursery: trio.Nursery) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    pool = await pool_of(nursery, [ours])
    up = Http1Upstream(await pool.acquire(PEER, SETTINGS), pool)
    await up.send(HEAD)
    await theirs.send_all(b"HTTP/1.1 200 OK\r\n\r\npartial")  # close-delimited
    assert await up.receive() == [ResponseHead(200, [], b"OK"), BodyChunk(b"partial")]
    await theirs.aclose()
    assert await up.receive() == [EndOfBody()]  # EOF ends a close-delimited body
    assert await up.receive() == [ConnectionClosed()]
    await ours.aclose()
    with pytest.raises(UpstreamGone, match="read failed"):
        await up.receive()
    up.release(clean=True)  # complete, but the server closed: never pooled
    assert pool.stats(PEER).idle == 0


async def test_neither_http1_seam_hands_over_a_stream_without_a_switch(
    nursery: trio.Nursery,
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    pool = await pool_of(nursery, [ours])
    up = Http1Upstream(await pool.acquire(PEER, SETTINGS), pool)
    with pytest.raises(UpgradeUnavailable):
        up.take_over()  # nothing sent
    await up.send(HEAD)
    await theirs.send_all(OK)
    await up.receive()
    with pytest.raises(UpgradeUnavailable):
        up.take_over()  # a final response, no switch
    up.release(clean=True)
    assert pool.stats(PEER).idle == 1  # take_over left the connection alone
    client, server = trio.testing.memory_stream_pair()
    down = Http1Downstream(server, Http1Server(), body_idle=5.0)
    with pytest.raises(UpgradeUnavailable):
        down.take_over()  # nothing read
    await client.send_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    await down.fill()
    await down.send(ResponseHead(200, [(b"content-length", b"0")]))
    with pytest.raises(UpgradeUnavailable):
        down.take_over()  # answered, no switch
    assert not down.handed_over


async def test_an_http1_abort_ends_the_connection_after_the_exchange() -> None:
    _, server = trio.testing.memory_stream_pair()
    down = Http1Downstream(server, Http1Server(), body_idle=5.0)
    down.acknowledge(10)  # a no-op: TCP is HTTP/1.1's flow control
    assert not down.closing
    error = aborted(down)
    assert isinstance(error, ExchangeAborted)
    assert down.closing  # the driver ends the connection once the exchange unwinds


class ScriptedClient:
    """A ``Downstream`` with a scripted request body that logs each acknowledgement with how
    many body bytes the upstream had received by then."""

    http_version = b"1.1"
    response_started = False
    status = 0
    received_bytes = 0
    sent_bytes = 0
    head_sent = -1.0
    grpc_status = -1
    client_cancelled = False

    def __init__(self, chunks: list[bytes], upstream_got: list[bytes]) -> None:
        self._events: deque[BodyChunk | EndOfBody] = deque(BodyChunk(c) for c in chunks)
        self._events.append(EndOfBody())
        self._upstream_got = upstream_got
        self.request_complete = False
        self.acks: list[tuple[int, bytes]] = []
        self.sent: list[ResponseHead | BodyChunk | EndOfBody | Informational] = []

    async def receive_body(self) -> BodyChunk | EndOfBody:
        await trio.lowlevel.checkpoint()
        event = self._events.popleft()
        self.request_complete = isinstance(event, EndOfBody)
        return event

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None:
        return None

    def acknowledge(self, nbytes: int) -> None:
        self.acks.append((nbytes, b"".join(self._upstream_got)))

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None:
        self.sent.append(event)

    async def send_batch(self, events: Sequence[ResponseHead | BodyChunk | EndOfBody]) -> None:
        self.sent.extend(events)

    def close_after_response(self) -> None: ...

    def abort(self) -> None: ...

    def take_over(self) -> Handover:
        raise UpgradeUnavailable

    def add_response_field(self, line: tuple[bytes, bytes]) -> None: ...


CONFIG = """
entrypoints "web" { address = "127.0.0.1:8080" }
routers "all" {
  rule    = "PathPrefix(`/`)"
  service = "svc"
}
services "svc" {
  load_balancer { servers = [{ url = "http://10.9.0.1:80" }] }
}
"""


async def test_request_body_bytes_are_acknowledged_only_after_the_upstream_took_them(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    # Lockstep: a write returns only once the origin read it, so "accepted" is observable.
    ours, theirs = trio.testing.lockstep_stream_pair()
    got: list[bytes] = []

    async def origin() -> None:
        while b"0\r\n\r\n" not in b"".join(got):  # the end of the chunked request body
            got.append(bytes(await theirs.receive_some()))
            await trio.sleep(1)  # a slow reader: the gateway's writes wait for it
        await theirs.send_all(OK)

    nursery.start_soon(origin)
    pool = await pool_of(nursery, [ours])
    runtime = compile_runtime(load_config_text(CONFIG), 1)
    ctx = ServerContext(runtime, pool)
    chunks = [b"first-chunk", b"second-chunk", b"third-chunk"]
    client = ScriptedClient(chunks, got)
    info = ConnInfo("web", "192.0.2.7", 40000)
    head = RequestHead(b"POST", b"/up", b"example.com", [(b"host", b"example.com")], has_body=True)
    record = ExchangeRecord("web", 0.0)
    ex = Exchange(head, client, info, ctx, runtime, runtime.entrypoints["web"], record)
    ex.path = b"/up"
    plan_direct(ex)
    service = runtime.services["svc"]
    backend = service.backends[0]
    assert await forward(ex, client, service, backend) == 200
    assert [nbytes for nbytes, _ in client.acks] == [len(chunk) for chunk in chunks]
    for (_, upstream_had), chunk in zip(client.acks, chunks, strict=True):
        assert chunk in upstream_had  # acknowledged only once the origin had read it
    assert client.sent[-1] == EndOfBody()


async def test_a_replayed_body_is_acknowledged_to_the_client_once() -> None:
    events: list[BodyChunk | EndOfBody] = [BodyChunk(b"abcd"), BodyChunk(b"ef"), EndOfBody()]
    client = ScriptedClient([b"abcd", b"ef"], [])
    buffer = ReplayBuffer(client, 100)
    first = buffer.attempt()
    assert await first.receive_body() == events[0]
    first.acknowledge(4)  # the first attempt sent 4 bytes, then failed
    second = buffer.attempt()
    for event in events:
        assert await second.receive_body() == event
        if isinstance(event, BodyChunk):
            second.acknowledge(len(event.data))
    assert [nbytes for nbytes, _ in client.acks] == [4, 2]  # the replayed 4 bytes not again
