"""Dead idle connections over real 127.0.0.1 sockets (SPEC §5.7 "Reuse safety").

Real sockets and the real clock (no autojump: DESIGN.md §3.6 item 3); every wait is on socket
readiness, never a sleep.
"""

from __future__ import annotations

import socket
import ssl

import trio
import trio.testing

from a3s_gateway.streams import RawSocketStream
from a3s_gateway.upstream.peer import Peer, PoolSettings
from a3s_gateway.upstream.pool import UpstreamPool
from a3s_gateway.upstream.pool_state import PeerStats
from a3s_gateway.upstream.pooled_connection import UpstreamConnection

ONE = PoolSettings(max_conns_per_backend=1)
DEFAULT = PoolSettings()


async def open_listener() -> tuple[trio.SocketListener, Peer]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    return listener, Peer("http", "127.0.0.1", port)


def socket_of(conn: UpstreamConnection) -> socket.socket:
    """The dialled socket: the dialer hands the pool the hot path's ``RawSocketStream``."""
    assert isinstance(conn.stream, RawSocketStream)
    return conn.stream.socket


async def test_quiet_connection_is_alive_and_eof_is_dead(nursery: trio.Nursery) -> None:
    listener, peer = await open_listener()
    async with listener:
        pool = UpstreamPool()
        await nursery.start(pool.run)
        conn = await pool.acquire(peer, DEFAULT)
        server_end = await listener.accept()
        assert not conn.looks_dead()
        await server_end.aclose()
        await trio.lowlevel.wait_readable(socket_of(conn))
        assert conn.looks_dead()
        pool.release(conn, reusable=True)


async def test_stray_bytes_make_a_connection_dead(nursery: trio.Nursery) -> None:
    listener, peer = await open_listener()
    async with listener:
        pool = UpstreamPool()
        await nursery.start(pool.run)
        conn = await pool.acquire(peer, DEFAULT)
        async with await listener.accept() as server_end:
            await server_end.send_all(b"HTTP/1.1 200 OK\r\n")
            await trio.lowlevel.wait_readable(socket_of(conn))
            assert conn.looks_dead()
            pool.release(conn, reusable=False)
        assert socket_of(conn).fileno() == -1  # closed synchronously by release


async def test_dead_idle_connection_is_discarded_not_reused(nursery: trio.Nursery) -> None:
    listener, peer = await open_listener()
    async with listener:
        pool = UpstreamPool()
        await nursery.start(pool.run)
        old = await pool.acquire(peer, DEFAULT)
        server_end = await listener.accept()
        pool.release(old, reusable=True)
        await server_end.aclose()
        await trio.lowlevel.wait_readable(socket_of(old))
        fresh = await pool.acquire(peer, DEFAULT)
        assert fresh is not old
        assert not fresh.reused
        assert socket_of(old).fileno() == -1
        assert pool.stats(peer) == PeerStats(busy=1, dials=2)
        pool.release(fresh, reusable=True)
        assert socket_of(fresh).fileno() != -1
        await pool.aclose()
        assert socket_of(fresh).fileno() == -1  # idle sockets close in aclose


async def test_try_reuse_closes_a_dead_idle_connection_and_says_none(
    nursery: trio.Nursery,
) -> None:
    listener, peer = await open_listener()
    async with listener:
        pool = UpstreamPool()
        await nursery.start(pool.run)
        old = await pool.acquire(peer, DEFAULT)
        server_end = await listener.accept()
        pool.release(old, reusable=True)
        await server_end.aclose()
        await trio.lowlevel.wait_readable(socket_of(old))
        assert pool.try_reuse(peer, DEFAULT) is None
        assert socket_of(old).fileno() == -1
        assert pool.stats(peer) == PeerStats(dials=1)


async def test_dead_connection_handed_to_a_waiter_is_replaced(nursery: trio.Nursery) -> None:
    listener, peer = await open_listener()
    async with listener:
        pool = UpstreamPool()
        await nursery.start(pool.run)
        old = await pool.acquire(peer, ONE)
        got: list[UpstreamConnection] = []
        done = trio.Event()

        async def waiter() -> None:
            got.append(await pool.acquire(peer, ONE))
            done.set()

        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        async with await listener.accept() as server_end:
            await server_end.send_all(b"junk")
            await trio.lowlevel.wait_readable(socket_of(old))
            pool.release(old, reusable=True)
            await done.wait()  # the waiter dials a real socket
        assert got[0] is not old
        assert socket_of(old).fileno() == -1
        assert pool.stats(peer) == PeerStats(busy=1, dials=2)
        pool.release(got[0], reusable=False)


async def test_release_after_aclose_closes_the_socket(nursery: trio.Nursery) -> None:
    listener, peer = await open_listener()
    async with listener:
        pool = UpstreamPool()
        await nursery.start(pool.run)
        conn = await pool.acquire(peer, DEFAULT)
        await pool.aclose()
        pool.release(conn, reusable=True)
        assert socket_of(conn).fileno() == -1
        assert pool.stats(peer).total == 0


async def test_tls_over_a_socket_closes_synchronously() -> None:
    ours, theirs = trio.socket.socketpair()
    tls = trio.SSLStream(
        trio.SocketStream(ours), ssl.create_default_context(), server_hostname="backend.test"
    )
    conn = UpstreamConnection(tls, Peer("https", "backend.test", 443, tls=True), created_at=0.0)
    assert not conn.looks_dead()  # only plain sockets are checked (TLS may send tickets)
    assert conn.close_nowait()
    assert ours.fileno() == -1
    theirs.close()


async def test_default_adapter_is_the_default_engines_client() -> None:
    from a3s_gateway.protocols.http1_llhttp import LlhttpClient  # construction only

    ours, theirs = trio.socket.socketpair()
    conn = UpstreamConnection(trio.SocketStream(ours), Peer("http", "x", 80), created_at=0.0)
    assert isinstance(conn.adapter, LlhttpClient)  # http1_parser's default, llhttp
    await conn.aclose()
    assert ours.fileno() == -1
    theirs.close()
