"""The upstream hand-over after a protocol switch, over trio memory streams (issue #15).

``Http1Upstream`` over a pooled connection, with both client engines: after a ``101`` to an
upgrade request, ``take_over`` returns the stream and exactly the bytes read past the ``101``'s
head, whatever the reads were, once; the connection leaves the pool for good (its slot freed, never
reused), ``release`` afterwards neither pools nor closes it, and the new owner reads and writes
raw bytes through it. An unsolicited ``101`` stays a 502, interim ``1xx`` pass as before,
``take_over`` without a switch raises, and a declined upgrade leaves the connection reusable.
Autojump clock throughout: every wait is bounded in virtual time.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from a3s_gateway.protocols.events import (
    EndOfBody,
    Event,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http1_engines import Http1Parser, upstream_adapter_factory
from a3s_gateway.upstream.http1_upstream import Http1Upstream
from a3s_gateway.upstream.peer import Peer, PoolSettings
from a3s_gateway.upstream.pool import UpstreamPool
from a3s_gateway.upstream.pool_state import PeerStats
from a3s_gateway.upstream.seam import UpgradeUnavailable

pytestmark = pytest.mark.parametrize("engine", ["llhttp", "h11"])

PEER = Peer("http", "10.9.0.1", 80)
SETTINGS = PoolSettings()
UPGRADE = RequestHead(
    b"GET", b"/ws", b"up", [(b"host", b"up"), (b"connection", b"upgrade"), (b"upgrade", b"ws")]
)
PLAIN = RequestHead(b"GET", b"/", b"up", [(b"host", b"up")])
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: ws\r\nConnection: upgrade\r\n\r\n"
SWITCH_HEAD = ResponseHead(
    101, [(b"upgrade", b"ws"), (b"connection", b"upgrade")], b"Switching Protocols"
)
FRAME = b"\x81\x05hello"  # the origin's first bytes of the new protocol, right behind its 101
OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"


class Origins:
    """A pool whose dialer opens a memory stream pair per connection; ``theirs`` are the
    origin ends, in dial order."""

    def __init__(self, engine: Http1Parser) -> None:
        self.theirs: list[trio.abc.Stream] = []
        self.pool = UpstreamPool(dialer=self.dial, adapter_factory=upstream_adapter_factory(engine))

    async def dial(self, peer: Peer) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        self.theirs.append(theirs)
        return ours

    async def start(
        self, settings: PoolSettings = SETTINGS
    ) -> tuple[Http1Upstream, trio.abc.Stream]:
        """A new exchange whose request (``UPGRADE``) the origin has read."""
        up = Http1Upstream(await self.pool.acquire(PEER, settings), self.pool)
        await up.send_batch([UPGRADE])
        origin = self.theirs[-1]
        assert (await origin.receive_some()).startswith(b"GET /ws HTTP/1.1\r\nhost: up\r\n")
        return up, origin


async def origins(nursery: trio.Nursery, engine: Http1Parser) -> Origins:
    made = Origins(engine)
    await nursery.start(made.pool.run)
    return made


async def receive_until_head(up: Http1Upstream) -> list[Event]:
    """What the exchange does: read until a final (or switching) head arrived."""
    events: list[Event] = []
    while not any(isinstance(event, ResponseHead) for event in events):
        events += await up.receive()
    return events


async def receive_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = await stream.receive_some()
        assert chunk, "EOF"
        data += chunk
    return data


async def test_the_stream_and_the_bytes_after_the_101_are_handed_over_after_any_split(
    engine: Http1Parser, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    made = await origins(nursery, engine)
    wire = SWITCHING + FRAME
    for cut in range(1, len(wire) + 1):
        up, origin = await made.start()
        await origin.send_all(wire[:cut])
        if cut < len(SWITCHING):  # the head needs the second piece: the frame comes with it
            assert await up.receive() == []
            await origin.send_all(wire[cut:])
        events = await receive_until_head(up)
        assert events == [SWITCH_HEAD]
        if cut >= len(SWITCHING) and cut < len(wire):  # sent after the head was read
            await origin.send_all(wire[cut:])
        handover = up.take_over()
        expected = FRAME if cut < len(SWITCHING) else wire[len(SWITCHING) : cut]
        assert handover.leftover == expected, cut
        rest = await receive_exactly(handover.stream, len(FRAME) - len(expected))
        assert handover.leftover + rest == FRAME
        assert made.pool.stats(PEER).total == 0  # out of the pool at once
        with pytest.raises(UpgradeUnavailable):
            up.take_over()  # exactly once
        up.release(clean=True)  # the exchange's release: nothing to do
        assert made.pool.stats(PEER).total == 0
        await handover.stream.aclose()
    assert made.pool.stats(PEER).dials == len(wire)  # never reused


async def test_the_new_owner_keeps_the_stream_the_pool_lets_go(
    engine: Http1Parser, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    made = await origins(nursery, engine)
    up, origin = await made.start(PoolSettings(max_conns_per_backend=1))
    await origin.send_all(b"HTTP/1.1 100 Continue\r\n\r\n" + SWITCHING)
    events = await receive_until_head(up)
    assert events == [Informational(100, [], b"Continue"), SWITCH_HEAD]
    await origin.send_all(FRAME)
    with pytest.raises(ProtocolViolation) as caught:
        await up.receive()  # HTTP reads no more: the frame stays in the stream
    assert caught.value.status == 500
    handover = up.take_over()
    assert handover.leftover == b""
    up.release(clean=False)  # neither pools nor closes the new owner's stream
    # The slot is free: the limit of one connection lets a new exchange dial at once.
    again = Http1Upstream(
        await made.pool.acquire(PEER, PoolSettings(max_conns_per_backend=1)), made.pool
    )
    assert not again.reused
    assert made.pool.stats(PEER) == PeerStats(busy=1, dials=2)
    again.release(clean=False)
    await made.pool.aclose()
    assert await handover.stream.receive_some() == FRAME
    await handover.stream.send_all(b"\x82\x00")
    assert await origin.receive_some() == b"\x82\x00"
    await origin.send_all(b"later")
    assert await handover.stream.receive_some() == b"later"


async def test_an_unsolicited_101_is_refused(
    engine: Http1Parser, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    made = await origins(nursery, engine)
    up = Http1Upstream(await made.pool.acquire(PEER, SETTINGS), made.pool)
    await up.send(PLAIN)
    await made.theirs[-1].send_all(SWITCHING + FRAME)
    with pytest.raises(ProtocolViolation) as caught:
        await up.receive()
    assert (caught.value.status, caught.value.reason) == (502, "unexpected 101")
    with pytest.raises(UpgradeUnavailable):
        up.take_over()
    up.release(clean=False)
    assert made.pool.stats(PEER).total == 0


async def test_take_over_without_a_switch_raises(
    engine: Http1Parser, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    made = await origins(nursery, engine)
    up, origin = await made.start()
    with pytest.raises(UpgradeUnavailable):
        up.take_over()  # nothing received yet
    await origin.send_all(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert await up.receive() == [Informational(100, [], b"Continue")]
    with pytest.raises(UpgradeUnavailable):
        up.take_over()  # an interim response switches nothing
    up.release(clean=False)


async def test_a_declined_upgrade_leaves_the_connection_reusable(
    engine: Http1Parser, nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    made = await origins(nursery, engine)
    up, origin = await made.start()
    await origin.send_all(OK)
    events = await up.receive()
    assert events[0] == ResponseHead(200, [(b"content-length", b"2")], b"OK")
    assert events[-1] == EndOfBody()
    with pytest.raises(UpgradeUnavailable):
        up.take_over()
    up.release(clean=True)
    assert made.pool.stats(PEER).idle == 1
    again, origin = await made.start()
    assert again.reused
    await origin.send_all(SWITCHING)
    assert await receive_until_head(again) == [SWITCH_HEAD]  # this time the switch is taken
    assert again.take_over().leftover == b""
    again.release(clean=True)
    assert made.pool.stats(PEER) == PeerStats(dials=1)
