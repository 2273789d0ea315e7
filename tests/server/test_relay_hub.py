"""The relay hub (server/relay_hub.py) through ``relay_tcp``, over real socket pairs.

Each test runs a hub in a nursery and relays between two ``socket.socketpair()`` ends wrapped
in ``RawSocketStream`` (what the gateway hands over): the far ends play client and backend.
"""

from __future__ import annotations

import errno
import hashlib
import os
import select
import socket
from typing import TYPE_CHECKING

import pytest
import trio

from a3s_gateway.server.relay_hub import RelayHub
from a3s_gateway.server.tcp_relay import RelayStats, relay_tcp
from a3s_gateway.streams import RawSocketStream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BOUND = 10.0


class Peer:
    """The far end of one socket pair, driven with trio's socket wrapper."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = trio.socket.from_stdlib_socket(sock)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[await self.sock.send(view) :]

    async def read_all(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            data = await self.sock.recv(65536)
            if not data:
                return b"".join(chunks)
            chunks.append(data)

    async def read_exactly(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            more = await self.sock.recv(size - len(data))
            assert more, "EOF too early"
            data += more
        return data

    def shutdown_write(self) -> None:
        self.sock.shutdown(socket.SHUT_WR)


#: The far ends opened by the running test (closed after it).
_OPEN: list[Peer] = []


def pair(*, tcp: bool = False) -> tuple[RawSocketStream, Peer]:
    """A connected pair: a Unix socket pair, or loopback TCP (which can be reset)."""
    if tcp:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            far = socket.create_connection(listener.getsockname())
            near, _ = listener.accept()
    else:
        near, far = socket.socketpair()
    peer = Peer(far)
    _OPEN.append(peer)
    return RawSocketStream(near), peer


@pytest.fixture(autouse=True)
async def _close_peers() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().sock.close()


@pytest.fixture
async def hub() -> AsyncIterator[RelayHub]:
    relay_hub = RelayHub()
    async with trio.open_nursery() as nursery:
        await nursery.start(relay_hub.run)
        yield relay_hub
        nursery.cancel_scope.cancel()


async def test_bytes_both_ways_then_half_close_each_way(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, backend = pair()
    stats = RelayStats()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay_tcp(
                    client_side, upstream_side, leftover=b"peeked:", idle=0, stats=stats, hub=hub
                )
            )
            await client.send(b"hello")
            assert await backend.read_exactly(12) == b"peeked:hello"
            assert len(hub) == 1
            client.shutdown_write()
            # The backend sees the EOF and may still answer: the other direction goes on.
            assert await backend.read_all() == b""
            await backend.send(b"answer after the client's EOF")
            backend.shutdown_write()
            assert await client.read_all() == b"answer after the client's EOF"
    assert stats.ended == "closed"
    assert (stats.bytes_in, stats.bytes_out) == (12, len(b"answer after the client's EOF"))
    assert len(hub) == 0


async def test_a_large_transfer_keeps_backpressure_and_arrives_whole(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, backend = pair()
    payload = os.urandom(8 * 1024 * 1024)
    received: list[bytes] = []

    async def slow_backend() -> None:
        chunks = []
        while True:
            data = await backend.sock.recv(4096)
            if not data:
                break
            chunks.append(data)
            if len(chunks) % 64 == 0:
                await trio.lowlevel.checkpoint()
        received.append(b"".join(chunks))
        backend.shutdown_write()

    async def send_then_close() -> None:
        await client.send(payload)
        client.shutdown_write()

    with trio.fail_after(BOUND * 3):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: relay_tcp(client_side, upstream_side, idle=0, hub=hub))
            nursery.start_soon(slow_backend)
            nursery.start_soon(send_then_close)
            assert await client.read_all() == b""
    assert hashlib.sha256(received[0]).digest() == hashlib.sha256(payload).digest()


async def test_a_reset_backend_ends_both_sides(hub: RelayHub) -> None:
    client_side, client = pair(tcp=True)
    upstream_side, backend = pair(tcp=True)
    stats = RelayStats()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay_tcp(client_side, upstream_side, idle=0, stats=stats, hub=hub)
            )
            await client.send(b"x")
            assert await backend.read_exactly(1) == b"x"
            backend.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            backend.sock.close()
            assert await client.read_all() == b""
    assert stats.ended == "upstream_reset"
    assert len(hub) == 0


async def test_idle_relay_ends_after_its_bound(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, backend = pair()
    stats = RelayStats()
    with trio.fail_after(BOUND):
        start = trio.current_time()
        await relay_tcp(client_side, upstream_side, idle=0.2, stats=stats, hub=hub)
        assert trio.current_time() - start >= 0.2
    assert stats.ended == "idle"
    assert await client.read_all() == b""
    assert await backend.read_all() == b""
    assert len(hub) == 0


async def test_traffic_refreshes_the_idle_bound(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, backend = pair()
    stats = RelayStats()
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                lambda: relay_tcp(client_side, upstream_side, idle=0.3, stats=stats, hub=hub)
            )
            for _ in range(4):  # 4 x 0.15 s: longer than the bound, never idle that long
                await trio.sleep(0.15)
                await client.send(b"ping")
                assert await backend.read_exactly(4) == b"ping"
            client.shutdown_write()
            backend.shutdown_write()
    assert stats.ended == "closed"


async def test_a_cancelled_relay_leaves_the_hub_and_closes_both(hub: RelayHub) -> None:
    client_side, client = pair()
    upstream_side, backend = pair()
    stats = RelayStats()
    with trio.fail_after(BOUND):
        with trio.move_on_after(0.1):
            await relay_tcp(client_side, upstream_side, idle=0, stats=stats, hub=hub)
        assert stats.ended == "shutdown"
        assert len(hub) == 0
        assert await client.read_all() == b""
        assert await backend.read_all() == b""


async def test_without_a_running_hub_the_tasks_relay() -> None:
    client_side, client = pair()
    upstream_side, backend = pair()
    idle_hub = RelayHub()  # never run
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: relay_tcp(client_side, upstream_side, idle=0, hub=idle_hub))
            await client.send(b"abc")
            assert await backend.read_exactly(3) == b"abc"
            client.shutdown_write()
            backend.shutdown_write()
            assert await client.read_all() == b""
    assert len(idle_hub) == 0


class RefusingEpoll:
    """The hub's epoll set, whose next ``register`` the kernel refuses (ENOSPC)."""

    def __init__(self, real: select.epoll) -> None:
        self.real = real
        self.refuse = True

    def register(self, fd: int, mask: int) -> None:
        if self.refuse:
            self.refuse = False
            raise OSError(errno.ENOSPC, "max_user_watches reached")
        self.real.register(fd, mask)

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


async def test_a_refused_registration_fails_that_relay_alone(hub: RelayHub) -> None:
    real = hub._epoll  # the kernel's refusal is simulated there
    assert real is not None
    hub._epoll = RefusingEpoll(real)  # type: ignore[assignment]  # a stand-in: same methods
    client_side, client = pair()
    upstream_side, _backend = pair()
    stats = RelayStats()
    with trio.fail_after(BOUND):
        await relay_tcp(client_side, upstream_side, idle=0, stats=stats, hub=hub)
        assert stats.ended == "client_reset"
        assert await client.read_all() == b""
        assert len(hub) == 0
        # The hub goes on serving the next relay.
        client_side, client = pair()
        upstream_side, backend = pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: relay_tcp(client_side, upstream_side, idle=0, hub=hub))
            await client.send(b"still")
            assert await backend.read_exactly(5) == b"still"
            client.shutdown_write()
            backend.shutdown_write()
            assert await client.read_all() == b""
