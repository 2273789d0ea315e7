"""``streams.RawSocketStream`` over real socket pairs: the trio stream contract it promises
(ordering, large writes under backpressure, EOF, half-close, errors, close wake-ups) and the
dead-connection probe the pool uses. Real sockets, so no autojump clock; every wait is on a
socket event or a task, never a sleep."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from a3s_gateway.streams import RawSocketStream, from_trio


def pair() -> tuple[RawSocketStream, RawSocketStream]:
    a, b = socket.socketpair()
    return RawSocketStream(a), RawSocketStream(b)


async def test_bytes_flow_both_ways_in_order() -> None:
    a, b = pair()
    async with a, b:
        await a.send_all(b"one ")
        await a.send_all(bytearray(b"two ") + memoryview(b"three"))
        got = b""
        while len(got) < 13:
            got += await b.receive_some(100)
        assert got == b"one two three"
        await b.send_all(b"back")
        assert await a.receive_some() == b"back"


async def test_a_write_larger_than_the_kernel_buffers_waits_for_the_reader(
    nursery: trio.Nursery,
) -> None:
    a, b = pair()
    payload = bytes(range(256)) * 40_000  # ~10 MiB: far beyond the socket buffers
    received = bytearray()
    done = trio.Event()

    async def reader() -> None:
        while len(received) < len(payload):
            received.extend(await b.receive_some(65536))
        done.set()

    async with a, b:
        nursery.start_soon(reader)
        await a.send_all(payload)
        await done.wait()
    assert received == payload


async def test_max_bytes_bounds_a_read_and_must_be_positive() -> None:
    a, b = pair()
    async with a, b:
        await a.send_all(b"abcdef")
        assert await b.receive_some(4) == b"abcd"
        assert await b.receive_some(4) == b"ef"
        with pytest.raises(ValueError, match="max_bytes"):
            await b.receive_some(0)


async def test_send_eof_half_closes() -> None:
    a, b = pair()
    async with a, b:
        await a.send_eof()
        assert await b.receive_some() == b""
        await b.send_all(b"still open this way")
        assert await a.receive_some() == b"still open this way"


async def test_use_after_close_is_closed_resource_error() -> None:
    a, b = pair()
    await a.aclose()
    await a.aclose()  # idempotent
    for call in (a.receive_some(), a.send_all(b"x"), a.send_eof()):
        with pytest.raises(trio.ClosedResourceError):
            await call
    with pytest.raises(trio.ClosedResourceError):
        await a.wait_send_all_might_not_block()
    await b.aclose()


async def test_closing_wakes_a_blocked_reader(nursery: trio.Nursery) -> None:
    a, b = pair()
    failures: list[BaseException] = []

    async def reader(task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        try:
            await a.receive_some()
        except trio.ClosedResourceError as error:
            failures.append(error)

    await nursery.start(reader)
    await trio.testing.wait_all_tasks_blocked()
    await a.aclose()
    await trio.testing.wait_all_tasks_blocked()
    assert len(failures) == 1
    await b.aclose()


async def test_a_reset_peer_is_broken_resource_error() -> None:
    a, b = pair()
    # SO_LINGER 0 makes close() send a RST instead of a FIN.
    b.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    await b.aclose()
    async with a:
        with pytest.raises(trio.BrokenResourceError):
            await flood(a)


async def flood(stream: RawSocketStream) -> None:
    for _ in range(100):  # the first writes may still be buffered
        await stream.send_all(b"x" * 65536)


async def test_is_readable_tells_an_idle_socket_from_eof_and_stray_bytes() -> None:
    a, b = pair()
    assert not a.is_readable()
    await b.send_all(b"stray")
    await trio.lowlevel.wait_readable(a.socket)
    assert a.is_readable()
    assert await a.receive_some() == b"stray"  # the probe only peeked
    assert not a.is_readable()
    await b.aclose()
    await trio.lowlevel.wait_readable(a.socket)
    assert a.is_readable()
    a.close_nowait()
    assert a.socket.fileno() == -1
    assert a.is_readable()  # a closed stream is never reusable
    await a.aclose()


async def test_from_trio_takes_over_the_socket_with_its_options() -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        client = from_trio(await trio.open_tcp_stream("127.0.0.1", port))
        server = from_trio(await listener.accept())
        async with client, server:
            assert client.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert client.socket.getblocking() is False
            await client.send_all(b"hello")
            assert await server.receive_some() == b"hello"
