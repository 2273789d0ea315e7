"""The WebSocket relay on the relay hub (server/websocket_relay.py ``_in_hub``), over real
socket pairs.

Between two plain sockets the hub copies a session's steady state and hands it back to the
session's task at a Close frame, an EOF, a failure or the idle bound; the task then ends the
session as it always did (the Close frames the gateway injects, the close wait). These tests
drive that hand-back with raw frames: the far ends play client and upstream.
"""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, Final

import pytest
import trio

from a3s_gateway.protocols.websocket import close_frame
from a3s_gateway.server.relay_hub import RelayHub
from a3s_gateway.server.websocket_relay import SessionStats, relay_websocket
from a3s_gateway.streams import RawSocketStream
from a3s_gateway.upstream.seam import Handover

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BOUND: Final = 10.0
MASK: Final = b"\x01\x02\x03\x04"

#: The far ends opened by the running test (closed after it).
_OPEN: list[trio.socket.SocketType] = []


def frame(payload: bytes, *, masked: bool, opcode: int = 0x2) -> bytes:
    """One complete FIN frame (binary by default), masked as a client's must be."""
    size = len(payload)
    head = bytes([0x80 | opcode])
    bit = 0x80 if masked else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", size)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", size)
    if not masked:
        return head + payload
    body = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return head + MASK + body


def pair() -> tuple[RawSocketStream, trio.socket.SocketType]:
    near, far = socket.socketpair()
    peer = trio.socket.from_stdlib_socket(far)
    _OPEN.append(peer)
    return RawSocketStream(near), peer


@pytest.fixture(autouse=True)
async def _close_peers() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


@pytest.fixture
async def hub() -> AsyncIterator[RelayHub]:
    relay_hub = RelayHub()
    async with trio.open_nursery() as nursery:
        await nursery.start(relay_hub.run)
        yield relay_hub
        nursery.cancel_scope.cancel()


async def send_all(peer: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await peer.send(view) :]


async def read_exactly(peer: trio.socket.SocketType, size: int) -> bytes:
    data = b""
    while len(data) < size:
        more = await peer.recv(size - len(data))
        assert more, f"EOF after {data!r}"
        data += more
    return data


async def read_all(peer: trio.socket.SocketType) -> bytes:
    chunks = []
    while data := await peer.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


async def test_messages_then_a_close_handshake_end_the_session(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, upstream = pair()
    stats = SessionStats()
    message = frame(b"x" * 200_000, masked=True)
    reply = frame(b"y" * 70_000, masked=False)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay_websocket(
                    Handover(client_side, b""),
                    Handover(upstream_side, b""),
                    idle=0,
                    stats=stats,
                    hub=hub,
                )
            )
            await send_all(client, message)
            assert await read_exactly(upstream, len(message)) == message
            assert len(hub) == 1  # the steady state is the hub's
            await send_all(upstream, reply)
            assert await read_exactly(client, len(reply)) == reply
            closing = close_frame(4001, mask_key=MASK)
            await client.send(closing)
            assert await read_exactly(upstream, len(closing)) == closing
            assert len(hub) == 0  # handed back at the Close
            answer = close_frame(4001)
            await upstream.send(answer)
            assert await read_exactly(client, len(answer)) == answer
            upstream.shutdown(socket.SHUT_WR)
            client.shutdown(socket.SHUT_WR)
    assert (stats.close_client, stats.close_upstream) == (4001, 4001)
    assert stats.bytes_in == len(message) + len(closing)
    assert stats.bytes_out == len(reply) + len(answer)
    assert stats.ended == "closed"


async def test_idle_in_the_hub_sends_1001_both_ways(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, upstream = pair()
    stats = SessionStats()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay_websocket(
                    Handover(client_side, b""),
                    Handover(upstream_side, b""),
                    idle=0.2,
                    stats=stats,
                    hub=hub,
                )
            )
            await client.send(frame(b"hi", masked=True))
            await read_exactly(upstream, 8)
            to_client = await read_exactly(client, 4)
            assert to_client == close_frame(1001)
            masked = await read_exactly(upstream, 8)
            assert masked[:2] == b"\x88\x82"  # a masked Close with a 2-byte code
            # Both peers answer; the session ends.
            await client.send(close_frame(1001, mask_key=MASK))
            await upstream.send(close_frame(1001))
    assert stats.ended == "idle"


async def test_upstream_loss_in_the_hub_gets_the_client_1014(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, upstream = pair()
    stats = SessionStats()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay_websocket(
                    Handover(client_side, b"" + frame(b"early", masked=True)),
                    Handover(upstream_side, b""),
                    idle=0,
                    stats=stats,
                    hub=hub,
                )
            )
            assert await read_exactly(upstream, 11) == frame(b"early", masked=True)
            upstream.close()
            bad_gateway = close_frame(1014)
            assert await read_exactly(client, len(bad_gateway)) == bad_gateway
            await client.send(close_frame(1014, mask_key=MASK))  # the client answers
            assert await read_all(client) == b""
    assert stats.ended == "upstream_gone"
    assert stats.bytes_in == 11


async def test_idle_with_bytes_the_hub_could_not_write_still_follows_the_peers_close(
    hub: RelayHub,
) -> None:
    """The upstream stops reading in the middle of a large frame, so the idle bound passes
    with bytes pending in the hub: the client gets its 1001, none goes to the upstream (it
    would land inside that frame). The gateway then reads and drops the rest of the client's
    frame until its Close: every byte read after the idle bound is shown to the tracker, so
    the client's Close and the upstream's end the session at once, not after the close wait."""
    client_side, client = pair()
    upstream_side, upstream = pair()
    stats = SessionStats()
    big = frame(b"z" * 4_000_000, masked=True)
    closing = close_frame(1000, mask_key=MASK)
    with trio.fail_after(BOUND):
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay_websocket(
                    Handover(client_side, b""),
                    Handover(upstream_side, b""),
                    idle=0.3,
                    stats=stats,
                    hub=hub,
                )
            )

            async def send_then_close() -> None:
                await send_all(client, big)
                await send_all(client, closing)

            nursery.start_soon(send_then_close)
            going_away = close_frame(1001)
            assert await read_exactly(client, len(going_away)) == going_away
            await upstream.send(close_frame(1000))
        took = trio.current_time() - start
    assert stats.ended == "idle"
    assert (stats.close_client, stats.close_upstream) == (1000, 1000)
    assert took < 4  # not the 5 s close wait: the client's Close was seen


async def test_a_close_in_the_client_s_first_bytes_skips_the_hub(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, upstream = pair()
    stats = SessionStats()
    closing = close_frame(4000, mask_key=MASK)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay_websocket(
                    Handover(client_side, closing),
                    Handover(upstream_side, b""),
                    idle=0,
                    stats=stats,
                    hub=hub,
                )
            )
            assert await read_exactly(upstream, len(closing)) == closing
            assert len(hub) == 0
            await upstream.send(close_frame(4000))
            assert await read_exactly(client, 4) == close_frame(4000)
            client.shutdown(socket.SHUT_WR)
            upstream.shutdown(socket.SHUT_WR)
    assert (stats.close_client, stats.close_upstream) == (4000, 4000)
    assert stats.bytes_in == len(closing)


async def test_a_cancellation_in_the_hub_sends_1001_both_ways(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, upstream = pair()
    stats = SessionStats()
    with trio.fail_after(BOUND):
        with trio.move_on_after(0.2):
            await relay_websocket(
                Handover(client_side, b""),
                Handover(upstream_side, b""),
                idle=0,
                stats=stats,
                hub=hub,
            )
        assert len(hub) == 0
        assert await read_exactly(client, 4) == close_frame(1001)
        masked = await read_exactly(upstream, 8)
        assert masked[:2] == b"\x88\x82"
    assert stats.ended == "shutdown"
