"""The TCP relay (SPEC §6.3): both directions copied until both ended, half-close, the idle
bound, resets, an outside cancellation, and the descriptor fast path between plain sockets.

Memory-stream tests run on trio's autojump clock, so every bound is exact virtual time; the
socket tests use real socket pairs and wait only on socket events."""

from __future__ import annotations

import socket
import struct

import pytest
import trio
import trio.testing

from a3s_gateway.server import tcp_relay
from a3s_gateway.server.tcp_relay import CLEANUP_GRACE, RelayStats, relay_tcp
from a3s_gateway.streams import RawSocketStream

MemoryStream = trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]


class Sides:
    """The relay's two streams and the peers at their other ends."""

    def __init__(self) -> None:
        self.client, self.client_peer = trio.testing.memory_stream_pair()
        self.upstream, self.upstream_peer = trio.testing.memory_stream_pair()
        self.stats = RelayStats()
        self.done = trio.Event()
        self.ended_at = -1.0

    async def relay(self, *, leftover: bytes = b"", idle: float = 0) -> None:
        try:
            await relay_tcp(
                self.client, self.upstream, leftover=leftover, idle=idle, stats=self.stats
            )
        finally:
            self.ended_at = trio.current_time()
            self.done.set()


async def read_until_eof(stream: trio.abc.ReceiveStream) -> bytes:
    out = bytearray()
    while data := await stream.receive_some():
        out += data
    return bytes(out)


async def read_exactly(stream: trio.abc.ReceiveStream, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        data = await stream.receive_some(size - len(out))
        assert data, f"EOF after {len(out)} of {size} bytes"
        out += data
    return bytes(out)


async def assert_closed(stream: MemoryStream) -> None:
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_all(b"x")
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()


# --- memory streams: flow, half-close, outcomes ---


async def test_bytes_flow_both_ways_with_the_leftover_first(nursery: trio.Nursery) -> None:
    sides = Sides()
    nursery.start_soon(lambda: sides.relay(leftover=b"peeked hello|"))
    await sides.client_peer.send_all(b"request")
    assert await read_exactly(sides.upstream_peer, 20) == b"peeked hello|request"
    await sides.upstream_peer.send_all(b"response")
    assert await read_exactly(sides.client_peer, 8) == b"response"
    await sides.client_peer.send_eof()
    await sides.upstream_peer.send_eof()
    await sides.done.wait()
    assert sides.stats == RelayStats(bytes_in=20, bytes_out=8, ended="closed")


async def test_client_eof_reaches_the_upstream_and_its_answer_still_flows_back(
    nursery: trio.Nursery,
) -> None:
    """Half-close: the request ends with the client's EOF; the response comes after it."""
    sides = Sides()
    nursery.start_soon(sides.relay)
    await sides.client_peer.send_all(b"whole request")
    await sides.client_peer.send_eof()
    assert await read_until_eof(sides.upstream_peer) == b"whole request"
    assert not sides.done.is_set()
    for piece in (b"answer ", b"after ", b"the client's EOF"):
        await sides.upstream_peer.send_all(piece)
    await sides.upstream_peer.send_eof()
    assert await read_until_eof(sides.client_peer) == b"answer after the client's EOF"
    await sides.done.wait()
    assert sides.stats == RelayStats(bytes_in=13, bytes_out=29, ended="closed")


async def test_upstream_eof_reaches_the_client_which_may_go_on_sending(
    nursery: trio.Nursery,
) -> None:
    sides = Sides()
    nursery.start_soon(sides.relay)
    await sides.upstream_peer.send_all(b"banner")
    await sides.upstream_peer.send_eof()
    assert await read_until_eof(sides.client_peer) == b"banner"
    await sides.client_peer.send_all(b"late")
    assert await read_exactly(sides.upstream_peer, 4) == b"late"
    await sides.client_peer.send_eof()
    assert await read_until_eof(sides.upstream_peer) == b""
    await sides.done.wait()
    assert sides.stats == RelayStats(bytes_in=4, bytes_out=6, ended="closed")


async def test_the_relay_closes_both_streams_when_it_ends(nursery: trio.Nursery) -> None:
    sides = Sides()
    nursery.start_soon(sides.relay)
    await sides.client_peer.send_eof()
    await sides.upstream_peer.send_eof()
    await sides.done.wait()
    await assert_closed(sides.client)
    await assert_closed(sides.upstream)
    assert await sides.client_peer.receive_some() == b""
    assert await sides.upstream_peer.receive_some() == b""


class WholeOnly(trio.abc.Stream):
    """A stream that cannot half-close (as a terminated TLS session)."""

    def __init__(self, inner: MemoryStream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_side_that_cannot_half_close_is_closed_only_when_both_directions_ended(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    sides = Sides()
    client = WholeOnly(sides.client)
    stats = RelayStats()
    done = trio.Event()

    async def relay() -> None:
        await relay_tcp(client, sides.upstream, idle=0, stats=stats)
        done.set()

    nursery.start_soon(relay)
    await sides.upstream_peer.send_all(b"all of it")
    await sides.upstream_peer.send_eof()
    assert await read_exactly(sides.client_peer, 9) == b"all of it"
    with trio.move_on_after(30) as waited:  # no EOF can reach the client yet
        await sides.client_peer.receive_some()
    assert waited.cancelled_caught
    await sides.client_peer.send_all(b"more")
    assert await read_exactly(sides.upstream_peer, 4) == b"more"
    await sides.client_peer.send_eof()
    await done.wait()
    assert await sides.client_peer.receive_some() == b""  # closed now that both ended
    assert stats == RelayStats(bytes_in=4, bytes_out=9, ended="closed")


# --- idle ---


async def test_idle_ends_the_relay_after_idle_seconds_of_silence_not_before(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    sides = Sides()
    start = trio.current_time()
    nursery.start_soon(lambda: sides.relay(idle=10))
    await trio.sleep(9)
    await sides.client_peer.send_all(b"ping")  # at 9: the bound moves to 19
    assert await read_exactly(sides.upstream_peer, 4) == b"ping"
    await trio.sleep(9)
    await sides.upstream_peer.send_all(b"pong")  # at 18: the bound moves to 28
    assert await read_exactly(sides.client_peer, 4) == b"pong"
    await trio.sleep(9.999)
    assert not sides.done.is_set()
    await sides.done.wait()
    assert sides.ended_at - start == pytest.approx(28)
    assert sides.stats == RelayStats(bytes_in=4, bytes_out=4, ended="idle")
    assert await sides.client_peer.receive_some() == b""
    assert await sides.upstream_peer.receive_some() == b""


async def test_idle_with_no_traffic_at_all_ends_at_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sides = Sides()
    start = trio.current_time()
    stats = await relay_tcp(sides.client, sides.upstream, leftover=b"hi", idle=3)
    assert trio.current_time() - start == pytest.approx(3)  # the leftover is no read
    assert stats == RelayStats(bytes_in=2, bytes_out=0, ended="idle")


async def test_idle_still_applies_after_one_direction_ended(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    sides = Sides()
    start = trio.current_time()
    nursery.start_soon(lambda: sides.relay(idle=5))
    await trio.sleep(2)
    await sides.client_peer.send_all(b"req")
    await sides.client_peer.send_eof()
    await sides.done.wait()
    assert sides.ended_at - start == pytest.approx(7)
    assert sides.stats.ended == "idle"


async def test_idle_zero_never_ends_the_relay(autojump_clock: trio.testing.MockClock) -> None:
    sides = Sides()
    with trio.move_on_after(50) as scope:  # (the suite's limit is 60 s of the test's clock)
        await sides.relay(idle=0)
    assert scope.cancelled_caught
    assert sides.stats.ended == "shutdown"


# --- resets ---


def fail_reads(stream: MemoryStream) -> None:
    """Every read of ``stream`` after the one in progress fails as a reset would."""

    async def hook() -> None:
        raise trio.BrokenResourceError("connection reset by peer")

    stream.receive_stream.receive_some_hook = hook


async def test_a_client_reset_ends_both_directions_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    sides = Sides()
    nursery.start_soon(sides.relay)
    await sides.upstream_peer.send_all(b"partial answer")
    assert await read_exactly(sides.client_peer, 14) == b"partial answer"
    fail_reads(sides.client)
    await sides.client_peer.send_all(b"last")  # wakes the pending read; the next one fails
    await sides.done.wait()
    assert sides.stats == RelayStats(bytes_in=4, bytes_out=14, ended="client_reset")
    assert await read_until_eof(sides.upstream_peer) == b"last"  # then closed, not hung
    await assert_closed(sides.upstream)


async def test_an_upstream_reset_ends_both_directions_at_once(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    sides = Sides()
    nursery.start_soon(sides.relay)
    await trio.testing.wait_all_tasks_blocked()  # both pumps wait in a read
    fail_reads(sides.upstream)
    await sides.upstream_peer.send_all(b"x")
    await sides.done.wait()
    assert sides.stats == RelayStats(bytes_in=0, bytes_out=1, ended="upstream_reset")
    assert await read_until_eof(sides.client_peer) == b"x"
    await assert_closed(sides.client)


async def test_a_failed_write_to_the_client_is_a_client_reset(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    sides = Sides()
    nursery.start_soon(sides.relay)
    await sides.client_peer.receive_stream.aclose()  # the client reads no more
    await sides.upstream_peer.send_all(b"undeliverable")
    await sides.done.wait()
    assert sides.stats == RelayStats(bytes_in=0, bytes_out=0, ended="client_reset")


async def test_a_failed_write_to_the_upstream_is_an_upstream_reset(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    sides = Sides()
    nursery.start_soon(lambda: sides.relay(leftover=b"peeked"))
    await sides.upstream_peer.receive_stream.aclose()
    await sides.done.wait()
    assert sides.stats == RelayStats(bytes_in=0, bytes_out=0, ended="upstream_reset")


async def test_a_failed_eof_to_the_upstream_is_an_upstream_reset(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    sides = Sides()

    def refuse() -> None:
        raise trio.BrokenResourceError("connection reset by peer")

    sides.upstream.send_stream.close_hook = refuse  # send_eof closes the memory send side
    nursery.start_soon(sides.relay)
    await sides.client_peer.send_all(b"req")
    await sides.client_peer.send_eof()
    await sides.done.wait()
    assert sides.stats == RelayStats(bytes_in=3, bytes_out=0, ended="upstream_reset")
    assert await sides.client_peer.receive_some() == b""  # the client side was closed too


# --- shutdown ---


async def test_an_outside_cancellation_is_shutdown_and_closes_both_streams(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sides = Sides()
    await sides.client_peer.send_all(b"abc")
    with trio.move_on_after(1) as scope:
        await sides.relay(idle=600)
    assert scope.cancelled_caught  # the cancellation propagated out of relay_tcp
    assert sides.stats == RelayStats(bytes_in=3, bytes_out=0, ended="shutdown")
    await assert_closed(sides.client)
    await assert_closed(sides.upstream)
    assert await read_until_eof(sides.upstream_peer) == b"abc"
    assert await read_until_eof(sides.client_peer) == b""


class HangingClose(WholeOnly):
    """A stream whose close does not finish until cancelled, and then closes its transport
    forcefully, as ``trio.SSLStream.aclose`` does when its close_notify cannot be sent (the
    client stopped reading)."""

    async def aclose(self) -> None:
        try:
            await trio.sleep_forever()
        finally:
            await trio.aclose_forcefully(self.inner)


async def test_the_cleanup_is_shielded_and_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sides = Sides()
    stats = RelayStats()
    start = trio.current_time()
    with trio.move_on_after(2) as scope:
        await relay_tcp(sides.client, HangingClose(sides.upstream), idle=0, stats=stats)
    assert scope.cancelled_caught
    assert trio.current_time() - start == pytest.approx(2 + CLEANUP_GRACE)
    assert stats.ended == "shutdown"
    await assert_closed(sides.client)
    await assert_closed(sides.upstream)


async def test_a_client_whose_close_hangs_does_not_keep_the_upstream_open(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """ "Closes both streams on every path": when the client's close (a TLS close_notify to a
    client that stopped reading) uses up the cleanup grace, the upstream must still be
    closed."""
    sides = Sides()
    stats = RelayStats()
    done = trio.Event()

    async def relay() -> None:
        await relay_tcp(HangingClose(sides.client), sides.upstream, idle=0, stats=stats)
        done.set()

    nursery.start_soon(relay)
    await sides.client_peer.send_eof()
    await sides.upstream_peer.send_eof()
    await done.wait()
    assert stats.ended == "closed"
    await assert_closed(sides.client)
    await assert_closed(sides.upstream)  # (once skipped: one grace shared by both closes)


async def test_a_stats_object_is_optional_and_returned() -> None:
    sides = Sides()
    await sides.client_peer.send_all(b"12345")
    await sides.client_peer.send_eof()
    await sides.upstream_peer.send_eof()
    stats = await relay_tcp(sides.client, sides.upstream, idle=5)
    assert stats == RelayStats(bytes_in=5, bytes_out=0, ended="closed")


# --- real sockets: the descriptor fast path ---


def socket_pair() -> tuple[RawSocketStream, socket.socket]:
    """The relay's end as the gateway holds it, and the test's blocking-free peer end."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    return RawSocketStream(ours), theirs


@pytest.fixture
def fast_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the relay copies through the trio streams instead of descriptors."""

    async def not_expected(self: object, pump: object) -> None:
        raise AssertionError("the relay took the stream path between two plain sockets")

    monkeypatch.setattr(tcp_relay._Relay, "_copy_streams", not_expected)


async def send_then_shut(sock: socket.socket, data: bytes, chunk: int) -> None:
    view = memoryview(data)
    while view:
        await trio.lowlevel.wait_writable(sock)
        try:
            view = view[sock.send(view[:chunk]) :]
        except BlockingIOError:
            continue
    sock.shutdown(socket.SHUT_WR)


async def receive_to_eof(sock: socket.socket, out: bytearray) -> None:
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        if not data:
            return
        out += data


@pytest.mark.usefixtures("fast_path_only")
async def test_sockets_relay_megabytes_both_ways_with_half_close(
    nursery: trio.Nursery,
) -> None:
    client, client_peer = socket_pair()
    upstream, upstream_peer = socket_pair()
    request = bytes(range(256)) * (6 * 4096)  # 6 MiB
    response = bytes(reversed(range(256))) * (5 * 4096)  # 5 MiB
    at_upstream, at_client = bytearray(), bytearray()
    stats = RelayStats()
    relayed = trio.Event()

    async def relay() -> None:
        await relay_tcp(client, upstream, leftover=b"HELLO", idle=30, stats=stats)
        relayed.set()

    async def upstream_side() -> None:
        await receive_to_eof(upstream_peer, at_upstream)  # the client's EOF arrives first ...
        await send_then_shut(upstream_peer, response, 300_000)  # ... then the answer flows

    with client_peer, upstream_peer:
        nursery.start_soon(relay)
        nursery.start_soon(upstream_side)
        nursery.start_soon(send_then_shut, client_peer, request, 100_000)
        await receive_to_eof(client_peer, at_client)
        await relayed.wait()
    assert at_upstream == b"HELLO" + request
    assert at_client == response
    assert stats == RelayStats(bytes_in=5 + len(request), bytes_out=len(response), ended="closed")
    assert client.socket.fileno() == -1
    assert upstream.socket.fileno() == -1


@pytest.mark.usefixtures("fast_path_only")
async def test_sockets_upstream_eof_first_leaves_the_client_direction_open(
    nursery: trio.Nursery,
) -> None:
    """A server-speaks-first exchange: the upstream's banner and EOF, then the client's
    command and EOF."""
    client, client_peer = socket_pair()
    upstream, upstream_peer = socket_pair()
    stats = RelayStats()
    done = trio.Event()

    async def relay() -> None:
        await relay_tcp(client, upstream, idle=0, stats=stats)
        done.set()

    with client_peer, upstream_peer:
        nursery.start_soon(relay)
        await send_then_shut(upstream_peer, b"220 ready\r\n", 4)
        banner, command = bytearray(), bytearray()
        await receive_to_eof(client_peer, banner)
        await send_then_shut(client_peer, b"QUIT\r\n", 1)
        await receive_to_eof(upstream_peer, command)
        await done.wait()
    assert banner == b"220 ready\r\n"
    assert command == b"QUIT\r\n"
    assert stats == RelayStats(bytes_in=6, bytes_out=11, ended="closed")


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair (a reset needs TCP: a Unix socket has no RST)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        outer = socket.create_connection(listener.getsockname())
        inner, _ = listener.accept()
    return inner, outer


async def test_sockets_a_client_reset_ends_the_relay_as_client_reset(
    nursery: trio.Nursery,
) -> None:
    inner, outer = tcp_pair()
    client = RawSocketStream(inner)
    upstream, upstream_peer = socket_pair()
    stats = RelayStats()
    done = trio.Event()

    async def relay() -> None:
        await relay_tcp(client, upstream, idle=0, stats=stats)
        done.set()

    with upstream_peer:
        nursery.start_soon(relay)
        outer.sendall(b"abc")
        got = bytearray()
        while len(got) < 3:
            await trio.lowlevel.wait_readable(upstream_peer)
            got += upstream_peer.recv(10)
        outer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        outer.close()  # linger 0: an RST instead of a FIN
        await done.wait()
        rest = bytearray()
        await receive_to_eof(upstream_peer, rest)  # the upstream side is closed too
    assert stats == RelayStats(bytes_in=3, bytes_out=0, ended="client_reset")


async def test_a_socket_and_a_memory_stream_relay_through_the_stream_path(
    nursery: trio.Nursery,
) -> None:
    client, client_peer = socket_pair()
    upstream, upstream_peer = trio.testing.memory_stream_pair()
    stats = RelayStats()
    with client_peer:
        nursery.start_soon(lambda: relay_tcp(client, upstream, idle=0, stats=stats))
        await send_then_shut(client_peer, b"over a socket", 5)
        assert await read_until_eof(upstream_peer) == b"over a socket"
        await upstream_peer.send_all(b"back")
        await upstream_peer.send_eof()
        got = bytearray()
        await receive_to_eof(client_peer, got)
    assert got == b"back"
