"""The HTTP/2 upstream pool and its streams against a real h2 origin (SPEC §5.7 "HTTP/2 upstream").

Real sockets on 127.0.0.1 (``tests/support/h2_origin.py``), trio's real clock; every wait is on
an event (the origin's ``wait_for``, the pool's own) bounded by ``WAIT``, never a sleep.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trustme

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Event,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http2_client import CANCEL, STREAM_WINDOW
from a3s_gateway.upstream.connect_errors import ConnectFailed, PoolClosed
from a3s_gateway.upstream.http2_pool import Http2Pool, Http2Stats
from a3s_gateway.upstream.http2_upstream import Http2Upstream
from a3s_gateway.upstream.peer import Peer, PoolSettings, TlsIdentity
from a3s_gateway.upstream.pool import AcquireProgress, AcquireStage
from a3s_gateway.upstream.seam import UpgradeUnavailable, UpstreamGone
from tests.support.h2_origin import H2Origin
from tests.support.tls_origin import TlsOrigin, write_ca, write_leaf

WAIT = 10.0
DEFAULT = PoolSettings()


@dataclass
class Reply:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)


def peer_of(origin: H2Origin) -> Peer:
    return Peer("h2c", "127.0.0.1", origin.port)


def head(path: str, *, body: bool = False) -> RequestHead:
    method = b"POST" if body else b"GET"
    return RequestHead(method, path.encode(), b"", [(b"host", b"origin.test")], has_body=body)


async def read_all(up: Http2Upstream) -> Reply:
    """The response's events until its end."""
    reply = Reply()
    body = bytearray()
    while True:
        for event in await up.receive():
            match event:
                case ResponseHead(status=status, headers=headers):
                    reply.status, reply.headers = status, headers
                case BodyChunk(data=data):
                    body += data
                case EndOfBody(trailers=trailers):
                    reply.body, reply.trailers = bytes(body), trailers
                    return reply


async def fetch(pool: Http2Pool, peer: Peer, path: str, settings: PoolSettings = DEFAULT) -> Reply:
    up = await pool.open_stream(peer, settings)
    clean = False
    try:
        await up.send(head(path))
        reply = await read_all(up)
        clean = True
        return reply
    finally:
        up.release(clean=clean)


async def started_origin(nursery: trio.Nursery, origin: H2Origin) -> H2Origin:
    await nursery.start(origin.serve)
    return origin


async def started_pool(nursery: trio.Nursery) -> Http2Pool:
    pool = Http2Pool()
    await nursery.start(pool.run)
    return pool


# --- multiplexing ---


async def test_concurrent_streams_share_one_connection(nursery: trio.Nursery) -> None:
    origin = await started_origin(nursery, H2Origin(max_streams=10))
    pool = await started_pool(nursery)
    peer = peer_of(origin)
    replies: list[Reply] = []

    async def one() -> None:
        replies.append(await fetch(pool, peer, "/hold"))

    with trio.fail_after(WAIT):
        async with trio.open_nursery() as requests:
            for _ in range(3):
                requests.start_soon(one)
            await origin.wait_for(lambda: origin.requests == 3)
            assert len(origin.connections) == 1
            assert pool.stats(peer) == Http2Stats(connections=1, streams=3)
            origin.release.set()
        assert [reply.body for reply in replies] == [b"held"] * 3
        later = await fetch(pool, peer, "/")
    assert later.body == b"conn 1 stream 7"
    assert later.headers == [(b"x-conn", b"1")]
    assert pool.stats(peer) == Http2Stats(connections=1)
    request = origin.connections[0].requests[7]
    assert dict(request.headers)[b":authority"] == b"origin.test"
    assert dict(request.headers)[b":scheme"] == b"http"


async def test_a_second_connection_only_at_the_peer_stream_limit(nursery: trio.Nursery) -> None:
    origin = await started_origin(nursery, H2Origin(max_streams=2))
    pool = await started_pool(nursery)
    peer = peer_of(origin)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as requests:
            for _ in range(2):
                requests.start_soon(fetch, pool, peer, "/hold")
            await origin.wait_for(lambda: origin.requests == 2)
            assert len(origin.connections) == 1
            for _ in range(2):
                requests.start_soon(fetch, pool, peer, "/hold")
            await origin.wait_for(lambda: origin.requests == 4)
            assert [len(conn.requests) for conn in origin.connections] == [2, 2]
            origin.release.set()
    assert pool.stats(peer) == Http2Stats(connections=2)


async def test_reuse_is_reported_per_stream(nursery: trio.Nursery) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = await started_pool(nursery)
    with trio.fail_after(WAIT):
        first = await pool.open_stream(peer_of(origin), DEFAULT)
        second = await pool.open_stream(peer_of(origin), DEFAULT)
        assert (first.reused, second.reused) == (False, True)
        assert not first.received_any
        with pytest.raises(UpgradeUnavailable):
            first.take_over()
        first.release(clean=True)
        second.release(clean=True)
        first.release(clean=True)  # a second release does nothing
        assert pool.stats(peer_of(origin)) == Http2Stats(connections=1)


async def test_waits_at_max_conns_per_backend_then_gets_the_freed_slot(
    nursery: trio.Nursery,
) -> None:
    origin = await started_origin(nursery, H2Origin(max_streams=1))
    pool = await started_pool(nursery)
    peer = peer_of(origin)
    one = PoolSettings(max_conns_per_backend=1)
    with trio.fail_after(WAIT):
        holder = await pool.open_stream(peer, one)
        progress = AcquireProgress()
        with trio.move_on_after(0.2) as scope:
            await pool.open_stream(peer, one, progress)
        assert scope.cancelled_caught
        assert progress.stage is AcquireStage.WAITING
        assert pool.stats(peer) == Http2Stats(connections=1, streams=1)

        async def release_soon() -> None:
            await trio.lowlevel.checkpoint()
            holder.release(clean=True)

        nursery.start_soon(release_soon)
        waiter = await pool.open_stream(peer, one)
        assert waiter.reused
        await waiter.send(head("/"))
        assert (await read_all(waiter)).body == b"conn 1 stream 1"
        waiter.release(clean=True)


# --- request bodies, trailers and flow control ---


async def test_request_body_beyond_the_peer_windows_and_trailers(nursery: trio.Nursery) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = await started_pool(nursery)
    body = bytes(range(256)) * 1200  # 300 KiB, over the origin's 64 KiB windows
    with trio.fail_after(WAIT):
        up = await pool.open_stream(peer_of(origin), DEFAULT)
        await up.send(head("/echo", body=True))
        await up.send(BodyChunk(body[:100_000]))
        await up.send_batch([BodyChunk(body[100_000:]), EndOfBody([(b"x-sum", b"42")])])
        reply = await read_all(up)
        up.release(clean=True)
    assert reply.body == body
    assert reply.trailers == [(b"x-sum", b"42")]
    request = origin.connections[0].requests[1]
    assert request.trailers == [(b"x-sum", b"42")]


async def test_a_slow_consumer_makes_the_backend_wait(nursery: trio.Nursery) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = await started_pool(nursery)
    size = 3 * STREAM_WINDOW
    with trio.fail_after(WAIT):
        up = await pool.open_stream(peer_of(origin), DEFAULT)
        await up.send(head(f"/big/{size}"))
        taken = 0
        while taken < STREAM_WINDOW // 2:
            events = await up.receive()
            taken += sum(len(e.data) for e in events if isinstance(e, BodyChunk))
        record = origin.connections[0]
        await origin.wait_for(lambda: record.blocked)
        # What the origin could send: the window plus what we acknowledged (at most `taken`).
        assert record.sent[1] <= taken + STREAM_WINDOW
        rest = await read_all(up)
        up.release(clean=True)
    assert taken + len(rest.body) == size


# --- failures ---


async def test_goaway_fails_unprocessed_streams_and_finishes_the_others(
    nursery: trio.Nursery,
) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = await started_pool(nursery)
    peer = peer_of(origin)
    with trio.fail_after(WAIT):
        kept = await pool.open_stream(peer, DEFAULT)
        dropped = await pool.open_stream(peer, DEFAULT)
        await kept.send(head("/hold"))
        await dropped.send(head("/hold"))
        await origin.wait_for(lambda: origin.requests == 2)
        await origin.goaway(1, last_stream_id=1)
        with pytest.raises(UpstreamGone, match="GOAWAY"):
            await dropped.receive()
        assert dropped.unprocessed
        dropped.release(clean=False)
        fresh = await fetch(pool, peer, "/")  # the draining connection takes no new stream
        assert fresh.body == b"conn 2 stream 1"
        origin.release.set()
        assert (await read_all(kept)).body == b"held"
        kept.release(clean=True)
        first = origin.connections[0]
        await origin.wait_for(lambda: first.closed)
    assert first.goaway_received  # we said goodbye too
    assert pool.stats(peer) == Http2Stats(connections=1)


async def test_the_backend_dying_mid_stream_fails_it_with_upstream_gone(
    nursery: trio.Nursery,
) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = await started_pool(nursery)
    peer = peer_of(origin)
    with trio.fail_after(WAIT):
        up = await pool.open_stream(peer, DEFAULT)
        await up.send(head("/die"))
        events: list[Event] = []
        with pytest.raises(UpstreamGone):  # noqa: PT012 -- reads until the failure
            while True:
                events += await up.receive()
        assert up.received_any
        assert not up.unprocessed
        assert events == [
            ResponseHead(200, [], http_version=b"2", stream_id=1),
            BodyChunk(b"partial", 1),
        ]
        up.release(clean=False)
        assert pool.stats(peer) == Http2Stats()
        assert (await fetch(pool, peer, "/")).body == b"conn 2 stream 1"


async def test_a_malformed_response_fails_its_stream_not_the_connection(
    nursery: trio.Nursery,
) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = await started_pool(nursery)
    peer = peer_of(origin)
    with trio.fail_after(WAIT):
        up = await pool.open_stream(peer, DEFAULT)
        await up.send(head("/bad"))
        with pytest.raises(ProtocolViolation) as caught:
            await up.receive()
        assert caught.value.status == 502
        up.release(clean=False)
        assert (await fetch(pool, peer, "/")).body == b"conn 1 stream 3"


async def test_a_refused_stream_is_unprocessed(nursery: trio.Nursery) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = await started_pool(nursery)
    with trio.fail_after(WAIT):
        up = await pool.open_stream(peer_of(origin), DEFAULT)
        await up.send(head("/refuse"))
        with pytest.raises(UpstreamGone, match="REFUSED_STREAM"):
            await up.receive()
        assert up.unprocessed
        assert not up.received_any
        up.release(clean=False)


async def test_release_of_an_unfinished_stream_resets_it_with_cancel(
    nursery: trio.Nursery,
) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = await started_pool(nursery)
    peer = peer_of(origin)
    with trio.fail_after(WAIT):
        up = await pool.open_stream(peer, DEFAULT)
        await up.send(head("/hold"))
        with trio.move_on_after(0.05):  # the client went away while waiting
            await up.receive()
        up.release(clean=False)
        record = origin.connections[0]
        await origin.wait_for(lambda: record.resets == [(1, CANCEL)])
        assert pool.stats(peer) == Http2Stats(connections=1)


async def test_idle_connections_close_after_the_idle_timeout(nursery: trio.Nursery) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = await started_pool(nursery)
    peer = peer_of(origin)
    quick = PoolSettings(idle_conn_timeout=0.05)
    with trio.fail_after(WAIT):
        assert (await fetch(pool, peer, "/", quick)).status == 200
        record = origin.connections[0]
        await origin.wait_for(lambda: record.closed)
    assert record.goaway_received
    assert pool.stats(peer) == Http2Stats()


# --- lifecycle ---


async def test_cancellation_and_shutdown_leave_no_task_behind(nursery: trio.Nursery) -> None:
    origin = await started_origin(nursery, H2Origin())
    pool = Http2Pool()
    peer = peer_of(origin)
    with pytest.raises(PoolClosed):  # not running yet
        await pool.open_stream(peer, DEFAULT)
    with trio.fail_after(WAIT):
        async with trio.open_nursery() as owner:
            await owner.start(pool.run)
            async with trio.open_nursery() as exchanges:
                for _ in range(2):
                    exchanges.start_soon(fetch, pool, peer, "/hold")
                await origin.wait_for(lambda: origin.requests == 2)
                exchanges.cancel_scope.cancel()  # the clients went away
            assert pool.stats(peer) == Http2Stats(connections=1)
            record = origin.connections[0]
            await origin.wait_for(lambda: len(record.resets) == 2)
            await pool.aclose()
        # ``owner`` ended: the pool's connection tasks all returned.
        await origin.wait_for(lambda: record.closed)
    with pytest.raises(PoolClosed):
        await pool.open_stream(peer, DEFAULT)
    assert len(origin.connections) == 1
    assert {sid for sid, _ in record.resets} == {1, 3}


async def test_run_twice_is_refused(nursery: trio.Nursery) -> None:
    pool = await started_pool(nursery)
    with pytest.raises(RuntimeError, match="already running"):
        await pool.run()
    await pool.aclose()


async def test_a_backend_that_does_not_speak_http2_fails_the_connect(
    nursery: trio.Nursery,
) -> None:
    async def http1(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
        await stream.aclose()

    listeners = await nursery.start(trio.serve_tcp, http1, 0)
    port = listeners[0].socket.getsockname()[1]
    pool = await started_pool(nursery)
    with trio.fail_after(WAIT), pytest.raises(ConnectFailed) as caught:
        await pool.open_stream(Peer("h2c", "127.0.0.1", port), DEFAULT)
    assert caught.value.reason == "error"
    assert "HTTP/2 setup failed" in str(caught.value)
    assert pool.stats(Peer("h2c", "127.0.0.1", port)) == Http2Stats()


class SilentBackend:
    """Accepts, reads our preface and never answers; counts the connections that ended."""

    def __init__(self) -> None:
        self.greeted = 0
        self.ended = 0
        self.changed = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            await stream.receive_some(65536)
            self._count("greeted")
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass
        self._count("ended")

    def _count(self, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, what: str, count: int) -> None:
        while getattr(self, what) < count:
            await self.changed.wait()


async def test_setup_bounded_by_the_caller_then_closed_and_pool_closed_while_setting_up(
    nursery: trio.Nursery,
) -> None:
    backend = SilentBackend()
    listeners = await nursery.start(trio.serve_tcp, backend.handle, 0)
    peer = Peer("h2c", "127.0.0.1", listeners[0].socket.getsockname()[1])
    pool = await started_pool(nursery)
    with trio.fail_after(WAIT):
        progress = AcquireProgress()
        with trio.move_on_after(0.1) as scope:  # the connect timeout, while waiting for SETTINGS
            await pool.open_stream(peer, DEFAULT, progress)
        assert scope.cancelled_caught
        assert progress.stage is AcquireStage.DIALLING
        await backend.wait_for("ended", 1)  # the half-open connection was closed
        assert pool.stats(peer) == Http2Stats()

        async def close_when_greeted() -> None:
            await backend.wait_for("greeted", 2)
            await pool.aclose()

        nursery.start_soon(close_when_greeted)
        with pytest.raises(PoolClosed):
            await pool.open_stream(peer, DEFAULT)


async def test_a_refused_connect_is_connect_failed(nursery: trio.Nursery) -> None:
    pool = await started_pool(nursery)
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with trio.fail_after(WAIT), pytest.raises(ConnectFailed) as caught:
        await pool.open_stream(Peer("h2c", "127.0.0.1", port), DEFAULT)
    assert caught.value.reason == "refused"


# --- TLS ---


def tls_origin_context(ca: trustme.CA, alpn: list[str]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("a.test").configure_cert(context)
    context.set_alpn_protocols(alpn)
    return context


async def test_tls_with_alpn_h2(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    origin = await started_origin(nursery, H2Origin(tls=tls_origin_context(ca, ["h2"])))
    identity = TlsIdentity(ca_file=str(write_ca(ca, tmp_path / "ca.pem")))
    peer = Peer(
        "https", "127.0.0.1", origin.port, tls=True, server_name="a.test", identity=identity
    )
    pool = await started_pool(nursery)
    with trio.fail_after(WAIT):
        reply = await fetch(pool, peer, "/")
    assert reply.body == b"conn 1 stream 1"
    record = origin.connections[0]
    assert record.alpn == "h2"
    assert dict(record.requests[1].headers)[b":scheme"] == b"https"


async def test_tls_without_h2_is_refused(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    server = write_leaf(ca.issue_cert("a.test"), tmp_path, "server")
    origin = TlsOrigin(server)
    await nursery.start(origin.serve)
    identity = TlsIdentity(ca_file=str(write_ca(ca, tmp_path / "ca.pem")))
    peer = Peer(
        "https", "127.0.0.1", origin.port, tls=True, server_name="a.test", identity=identity
    )
    pool = await started_pool(nursery)
    with trio.fail_after(WAIT), pytest.raises(ConnectFailed) as caught:
        await pool.open_stream(peer, DEFAULT)
    assert (caught.value.reason, caught.value.detail) == ("tls", "backend did not negotiate h2")
    assert pool.stats(peer) == Http2Stats()
