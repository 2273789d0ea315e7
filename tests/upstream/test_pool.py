"""The async pool over memory streams and a fake dialer (SPEC §5.7 HTTP/1.1 pool, reuse safety).

Time-dependent tests use ``autojump_clock``; the tests with real sockets (dead-connection checks)
run on 127.0.0.1 with the real clock and wait on readiness, never on sleeps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias, cast

import pytest
import trio
import trio.testing

from a3s_gateway.upstream.connect_errors import ConnectFailed, PoolClosed
from a3s_gateway.upstream.peer import Peer, PoolSettings
from a3s_gateway.upstream.pool import AcquireProgress, AcquireStage, UpstreamPool
from a3s_gateway.upstream.pool_state import PeerStats
from a3s_gateway.upstream.pooled_connection import UpstreamConnection

if TYPE_CHECKING:
    from a3s_gateway.protocols.http1 import Http1Client

PEER = Peer("http", "backend.test", 80)
OTHER = Peer("http", "other.test", 80)
ONE = PoolSettings(max_conns_per_backend=1)
DEFAULT = PoolSettings()
MemoryEnd: TypeAlias = trio.StapledStream[
    trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream
]


class FakeDialer:
    """Returns one end of a memory stream pair and keeps the other (``remote``)."""

    def __init__(self) -> None:
        self.remote: list[MemoryEnd] = []
        self.gate: trio.Event | None = None
        self.failure: OSError | None = None

    async def __call__(self, peer: Peer) -> trio.abc.Stream:
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if self.failure is not None:
            raise ConnectFailed("refused") from self.failure
        ours, theirs = trio.testing.memory_stream_pair()
        self.remote.append(theirs)
        return ours


async def started(nursery: trio.Nursery, dialer: FakeDialer) -> UpstreamPool:
    pool = UpstreamPool(dialer=dialer)
    await nursery.start(pool.run)
    return pool


async def assert_closed(remote: trio.abc.ReceiveStream) -> None:
    """The pool closed our end: the remote end reads EOF."""
    assert await remote.receive_some() == b""


# --- reuse ---


async def test_dials_then_reuses_lifo(nursery: trio.Nursery) -> None:
    dialer = FakeDialer()
    pool = await started(nursery, dialer)
    first = await pool.acquire(PEER, DEFAULT)
    second = await pool.acquire(PEER, DEFAULT)
    assert (first.reused, second.reused) == (False, False)
    assert pool.stats(PEER) == PeerStats(busy=2, dials=2)
    pool.release(first, reusable=True)
    pool.release(second, reusable=True)
    assert first.idle_since <= second.idle_since <= trio.current_time()
    assert pool.stats(PEER) == PeerStats(idle=2, dials=2)
    with pytest.raises(RuntimeError, match="already running"):
        await pool.run()
    again = await pool.acquire(PEER, DEFAULT)
    assert again is second
    assert again.reused
    assert pool.stats(PEER) == PeerStats(idle=1, busy=1, dials=2)
    assert pool.peers() == [PEER]


async def test_try_reuse_is_the_synchronous_reuse_path(nursery: trio.Nursery) -> None:
    dialer = FakeDialer()
    pool = await started(nursery, dialer)
    assert pool.try_reuse(PEER, DEFAULT) is None  # nothing idle: acquire must dial
    assert pool.stats(PEER) == PeerStats()
    first = await pool.acquire(PEER, DEFAULT)
    second = await pool.acquire(PEER, DEFAULT)
    pool.release(first, reusable=True)
    pool.release(second, reusable=True)
    again = pool.try_reuse(PEER, DEFAULT)
    assert again is second  # LIFO, as acquire
    assert again.reused
    assert again.checked_out
    assert pool.stats(PEER) == PeerStats(idle=1, busy=1, dials=2)
    # Other settings (a reload changed them) go through acquire, which applies them.
    assert pool.try_reuse(PEER, PoolSettings(idle_conn_timeout=5.0)) is None
    assert pool.stats(PEER) == PeerStats(idle=1, busy=1, dials=2)


async def test_a_fresh_acquire_dials_even_with_idle_connections(nursery: trio.Nursery) -> None:
    pool = await started(nursery, FakeDialer())
    idle = await pool.acquire(PEER, DEFAULT)
    pool.release(idle, reusable=True)
    fresh = await pool.acquire(PEER, DEFAULT, fresh=True)
    assert fresh is not idle
    assert not fresh.reused
    assert pool.stats(PEER) == PeerStats(idle=1, busy=1, dials=2)


async def test_try_reuse_never_returns_an_expired_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pool = UpstreamPool(dialer=FakeDialer())
    settings = PoolSettings(idle_conn_timeout=10.0)
    conn = await pool.acquire(PEER, settings)
    pool.release(conn, reusable=True)
    await trio.sleep(10.0)
    assert pool.try_reuse(PEER, settings) is None
    assert pool.stats(PEER) == PeerStats(idle=1, dials=1)  # left for acquire or the reaper


async def test_try_reuse_after_aclose_is_none(nursery: trio.Nursery) -> None:
    pool = await started(nursery, FakeDialer())
    conn = await pool.acquire(PEER, DEFAULT)
    pool.release(conn, reusable=True)
    await pool.aclose()
    assert pool.try_reuse(PEER, DEFAULT) is None


async def test_peers_do_not_share_connections(nursery: trio.Nursery) -> None:
    pool = await started(nursery, FakeDialer())
    conn = await pool.acquire(PEER, DEFAULT)
    pool.release(conn, reusable=True)
    other = await pool.acquire(OTHER, DEFAULT)
    assert other is not conn
    assert pool.stats(OTHER) == PeerStats(busy=1, dials=1)


async def test_not_reusable_is_closed(nursery: trio.Nursery) -> None:
    dialer = FakeDialer()
    pool = await started(nursery, dialer)
    conn = await pool.acquire(PEER, DEFAULT)
    pool.release(conn, reusable=False)
    assert pool.stats(PEER).total == 0
    await assert_closed(dialer.remote[0])


async def test_full_idle_stack_closes_the_extra(nursery: trio.Nursery) -> None:
    dialer = FakeDialer()
    pool = await started(nursery, dialer)
    settings = PoolSettings(max_idle_per_backend=1)
    a = await pool.acquire(PEER, settings)
    b = await pool.acquire(PEER, settings)
    pool.release(a, reusable=True)
    pool.release(b, reusable=True)
    assert pool.stats(PEER) == PeerStats(idle=1, dials=2)
    await assert_closed(dialer.remote[1])


async def test_release_twice_is_a_bug(nursery: trio.Nursery) -> None:
    pool = await started(nursery, FakeDialer())
    conn = await pool.acquire(PEER, DEFAULT)
    pool.release(conn, reusable=True)
    with pytest.raises(RuntimeError, match="not checked out"):
        pool.release(conn, reusable=True)
    assert pool.stats(PEER) == PeerStats(idle=1, dials=1)


async def test_adapter_is_created_lazily_by_the_factory() -> None:
    ours, _ = trio.testing.memory_stream_pair()
    made: list[Http1Client] = []

    def factory() -> Http1Client:
        # A stand-in: the pool never calls the adapter, only the exchange does.
        made.append(cast("Http1Client", object()))
        return made[-1]

    conn = UpstreamConnection(ours, PEER, created_at=1.0, adapter_factory=factory)
    assert made == []
    assert conn.adapter is conn.adapter
    assert made == [conn.adapter]
    assert not conn.looks_dead()  # memory streams cannot be checked: assumed alive
    assert conn.close_nowait() is False
    assert "backend.test" in repr(conn)


async def test_a_failing_close_does_not_escape() -> None:
    class Broken(trio.abc.Stream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...
        async def wait_send_all_might_not_block(self) -> None: ...
        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            return b""

        async def send_eof(self) -> None: ...
        async def aclose(self) -> None:
            raise trio.BrokenResourceError

    await UpstreamConnection(Broken(), PEER, created_at=0.0).aclose()


# --- idle expiry ---


async def test_idle_connection_expires(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    dialer = FakeDialer()
    pool = await started(nursery, dialer)
    settings = PoolSettings(idle_conn_timeout=10.0)
    conn = await pool.acquire(PEER, settings)
    pool.release(conn, reusable=True)
    await trio.sleep(9.0)
    assert pool.stats(PEER).idle == 1
    await trio.sleep(1.0)
    await trio.testing.wait_all_tasks_blocked()
    assert pool.stats(PEER) == PeerStats(dials=1)
    await assert_closed(dialer.remote[0])


async def test_reaper_follows_a_shortened_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pool = await started(nursery, FakeDialer())
    long = PoolSettings(idle_conn_timeout=600.0)
    a = await pool.acquire(PEER, long)
    b = await pool.acquire(PEER, long)
    pool.release(a, reusable=True)
    pool.release(b, reusable=True)
    assert await pool.acquire(PEER, PoolSettings(idle_conn_timeout=5.0)) is b
    await trio.sleep(5.0)
    await trio.testing.wait_all_tasks_blocked()
    assert pool.stats(PEER) == PeerStats(busy=1, dials=2)


async def test_expired_idle_is_never_reused(autojump_clock: trio.testing.MockClock) -> None:
    # No reaper running: acquire itself must notice the expiry.
    pool = UpstreamPool(dialer=FakeDialer())
    settings = PoolSettings(idle_conn_timeout=10.0)
    conn = await pool.acquire(PEER, settings)
    pool.release(conn, reusable=True)
    await trio.sleep(10.0)
    fresh = await pool.acquire(PEER, settings)
    assert fresh is not conn
    assert pool.stats(PEER) == PeerStats(busy=1, dials=2)


# --- limits, waiting, cancellation ---


async def test_at_the_limit_a_release_wakes_the_waiter(nursery: trio.Nursery) -> None:
    pool = await started(nursery, FakeDialer())
    conn = await pool.acquire(PEER, ONE)
    got: list[UpstreamConnection] = []

    async def waiter() -> None:
        got.append(await pool.acquire(PEER, ONE))

    nursery.start_soon(waiter)
    await trio.testing.wait_all_tasks_blocked()
    assert pool.stats(PEER) == PeerStats(busy=1, waiting=1, dials=1)
    pool.release(conn, reusable=True)
    await trio.testing.wait_all_tasks_blocked()
    assert got == [conn]
    assert conn.reused
    assert pool.stats(PEER) == PeerStats(busy=1, dials=1)


async def test_waiters_are_served_in_arrival_order(nursery: trio.Nursery) -> None:
    pool = await started(nursery, FakeDialer())
    conn = await pool.acquire(PEER, ONE)
    order: list[int] = []

    async def waiter(n: int) -> None:
        mine = await pool.acquire(PEER, ONE)
        order.append(n)
        await trio.lowlevel.checkpoint()
        pool.release(mine, reusable=True)

    for n in range(4):
        nursery.start_soon(waiter, n)
        await trio.testing.wait_all_tasks_blocked()
    pool.release(conn, reusable=True)
    await trio.testing.wait_all_tasks_blocked()
    assert order == [0, 1, 2, 3]
    assert pool.stats(PEER) == PeerStats(idle=1, dials=1)


async def test_a_closed_connection_lets_the_waiter_dial(nursery: trio.Nursery) -> None:
    dialer = FakeDialer()
    pool = await started(nursery, dialer)
    conn = await pool.acquire(PEER, ONE)
    got: list[UpstreamConnection] = []

    async def waiter() -> None:
        got.append(await pool.acquire(PEER, ONE))

    nursery.start_soon(waiter)
    await trio.testing.wait_all_tasks_blocked()
    pool.release(conn, reusable=False)
    await trio.testing.wait_all_tasks_blocked()
    assert got[0] is not conn
    assert not got[0].reused
    assert pool.stats(PEER) == PeerStats(busy=1, dials=2)


async def test_capacity_wait_times_out_as_waiting(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    pool = await started(nursery, FakeDialer())
    conn = await pool.acquire(PEER, ONE)
    progress = AcquireProgress()
    with trio.move_on_after(5.0) as scope:
        await pool.acquire(PEER, ONE, progress)
    assert scope.cancelled_caught
    assert progress.stage is AcquireStage.WAITING  # → 503 backend connection limit reached
    assert pool.stats(PEER) == PeerStats(busy=1, dials=1)
    pool.release(conn, reusable=True)
    assert pool.stats(PEER) == PeerStats(idle=1, dials=1)


async def test_slow_dial_times_out_as_dialling_and_frees_its_slot(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    dialer = FakeDialer()
    dialer.gate = trio.Event()
    pool = await started(nursery, dialer)
    progress = AcquireProgress()
    with trio.move_on_after(5.0) as scope:
        await pool.acquire(PEER, ONE, progress)
    assert scope.cancelled_caught
    assert progress.stage is AcquireStage.DIALLING  # → 504
    assert pool.stats(PEER) == PeerStats(dials=1)
    dialer.gate.set()
    done = AcquireProgress()
    conn = await pool.acquire(PEER, ONE, done)
    assert done.stage is AcquireStage.DONE
    assert pool.stats(PEER) == PeerStats(busy=1, dials=2)
    pool.release(conn, reusable=True)


async def test_failed_dial_frees_its_slot_for_the_waiter(nursery: trio.Nursery) -> None:
    dialer = FakeDialer()
    dialer.gate = trio.Event()
    dialer.failure = ConnectionRefusedError()
    pool = await started(nursery, dialer)
    got: list[UpstreamConnection] = []

    async def first() -> None:
        with pytest.raises(ConnectFailed):
            await pool.acquire(PEER, ONE)
        dialer.failure = None

    async def second() -> None:
        got.append(await pool.acquire(PEER, ONE))

    nursery.start_soon(first)
    await trio.testing.wait_all_tasks_blocked()
    nursery.start_soon(second)
    await trio.testing.wait_all_tasks_blocked()
    assert pool.stats(PEER) == PeerStats(connecting=1, waiting=1, dials=1)
    dialer.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert len(got) == 1
    assert pool.stats(PEER) == PeerStats(busy=1, dials=2)


async def test_already_cancelled_acquire_changes_nothing(nursery: trio.Nursery) -> None:
    pool = await started(nursery, FakeDialer())
    progress = AcquireProgress()
    with trio.CancelScope() as scope:
        scope.cancel()
        await pool.acquire(PEER, ONE, progress)
    assert progress.stage is AcquireStage.STARTING
    assert pool.stats(PEER) == PeerStats()


# --- shutdown ---


async def test_aclose_closes_idle_and_wakes_waiters(nursery: trio.Nursery) -> None:
    dialer = FakeDialer()
    pool = await started(nursery, dialer)
    idle = await pool.acquire(OTHER, DEFAULT)
    pool.release(idle, reusable=True)
    busy = await pool.acquire(PEER, ONE)
    outcomes: list[str] = []

    async def waiter() -> None:
        with pytest.raises(PoolClosed):
            await pool.acquire(PEER, ONE)
        outcomes.append("closed")

    nursery.start_soon(waiter)
    await trio.testing.wait_all_tasks_blocked()
    await pool.aclose()
    await pool.aclose()  # idempotent
    await trio.testing.wait_all_tasks_blocked()
    assert outcomes == ["closed"]
    await assert_closed(dialer.remote[0])
    # Busy connections are closed when they come back (tested with sockets in test_dead.py;
    # a memory stream has no synchronous close and the pool nursery has ended).
    pool.release(busy, reusable=True)
    assert pool.stats(PEER).total == 0
    with pytest.raises(PoolClosed):
        await pool.acquire(PEER, ONE)


async def test_dial_finishing_after_aclose_is_closed(nursery: trio.Nursery) -> None:
    dialer = FakeDialer()
    dialer.gate = trio.Event()
    pool = await started(nursery, dialer)

    async def acquirer() -> None:
        with pytest.raises(PoolClosed):
            await pool.acquire(PEER, DEFAULT)

    nursery.start_soon(acquirer)
    await trio.testing.wait_all_tasks_blocked()
    await pool.aclose()
    dialer.gate.set()
    await trio.testing.wait_all_tasks_blocked()
    assert pool.stats(PEER).total == 0


async def test_cancelling_run_shuts_the_pool_down() -> None:
    dialer = FakeDialer()
    pool = UpstreamPool(dialer=dialer)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        conn = await pool.acquire(PEER, DEFAULT)
        pool.release(conn, reusable=True)
        nursery.cancel_scope.cancel()
    assert pool.stats(PEER).total == 0
    await assert_closed(dialer.remote[0])
    with pytest.raises(PoolClosed):
        await pool.acquire(PEER, DEFAULT)


# --- closes that need an await (no nursery attribute: a queue served in run's nursery) ---


async def test_a_stream_without_a_synchronous_close_is_closed_by_run(
    nursery: trio.Nursery,
) -> None:
    dialer = FakeDialer()
    pool = await started(nursery, dialer)
    conn = await pool.acquire(PEER, DEFAULT)
    assert conn.close_nowait() is False  # a memory stream: closing it needs an await
    pool.release(conn, reusable=False)
    await assert_closed(dialer.remote[0])
    assert pool.stats(PEER).total == 0


async def test_a_close_queued_before_run_starts_waits_for_it() -> None:
    dialer = FakeDialer()
    pool = UpstreamPool(dialer=dialer)
    conn = await pool.acquire(PEER, DEFAULT)
    pool.release(conn, reusable=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        await assert_closed(dialer.remote[0])
        await pool.aclose()


async def test_after_run_ended_a_slow_stream_is_dropped_without_error() -> None:
    dialer = FakeDialer()
    pool = UpstreamPool(dialer=dialer)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        conn = await pool.acquire(PEER, DEFAULT)
        await pool.aclose()
    pool.release(conn, reusable=True)  # run is over: the queue is closed, nothing raises
    assert pool.stats(PEER).total == 0
    async with trio.open_nursery() as nursery:  # run may start again and ends at once
        await nursery.start(pool.run)
