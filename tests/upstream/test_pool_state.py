"""Pure bookkeeping of the HTTP/1.1 pool (SPEC §5.7): LIFO reuse, limits, FIFO waiters, expiry."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from a3s_gateway.upstream.peer import Peer, PoolSettings
from a3s_gateway.upstream.pool_state import (
    DIAL,
    KEEP,
    WAIT,
    Close,
    Expired,
    HandOff,
    PeerStats,
    PoolState,
    Reuse,
)

A = Peer("http", "10.0.0.1", 80)
B = Peer("http", "10.0.0.2", 80)
DEFAULT = PoolSettings()


def dialled(state: PoolState[str, str], peer: Peer, settings: PoolSettings, n: int) -> None:
    """Dial ``n`` connections successfully (they are busy afterwards)."""
    for _ in range(n):
        assert state.acquire(peer, settings, 0.0) is DIAL
        state.dial_succeeded(peer)


def test_first_acquire_dials_and_counts_connecting_then_busy() -> None:
    state: PoolState[str, str] = PoolState()
    assert state.acquire(A, DEFAULT, 0.0) is DIAL
    assert state.stats(A) == PeerStats(connecting=1, dials=1)
    state.dial_succeeded(A)
    assert state.stats(A) == PeerStats(busy=1, dials=1)
    assert state.stats(A).total == 1
    assert state.stats(B) == PeerStats()


def test_reuse_is_lifo() -> None:
    state: PoolState[str, str] = PoolState()
    dialled(state, A, DEFAULT, 3)
    for i, conn in enumerate(("c1", "c2", "c3")):
        assert state.release(A, conn, reusable=True, now=float(i)) is KEEP
    assert state.stats(A) == PeerStats(idle=3, dials=3)
    assert state.idle(A) == ("c1", "c2", "c3")
    assert state.acquire(A, DEFAULT, 3.0) == Reuse("c3")
    assert state.acquire(A, DEFAULT, 3.0) == Reuse("c2")
    assert state.stats(A) == PeerStats(idle=1, busy=2, dials=3)
    assert state.idle(A) == ("c1",)
    assert state.idle(B) == ()


def test_peers_are_independent() -> None:
    state: PoolState[str, str] = PoolState()
    dialled(state, A, DEFAULT, 1)
    state.release(A, "a", reusable=True, now=0.0)
    assert state.acquire(B, DEFAULT, 0.0) is DIAL
    assert state.stats(A) == PeerStats(idle=1, dials=1)
    assert state.peers() == [A, B]


def test_not_reusable_is_closed() -> None:
    state: PoolState[str, str] = PoolState()
    dialled(state, A, DEFAULT, 1)
    assert state.release(A, "c", reusable=False, now=0.0) == Close("c", ())
    assert state.stats(A).total == 0


def test_idle_stack_is_capped() -> None:
    state: PoolState[str, str] = PoolState()
    settings = PoolSettings(max_idle_per_backend=1)
    dialled(state, A, settings, 2)
    assert state.release(A, "c1", reusable=True, now=0.0) is KEEP
    assert state.release(A, "c2", reusable=True, now=0.0) == Close("c2", ())
    assert state.stats(A) == PeerStats(idle=1, dials=2)


def test_zero_idle_disables_reuse() -> None:
    state: PoolState[str, str] = PoolState()
    settings = PoolSettings(max_idle_per_backend=0)
    dialled(state, A, settings, 1)
    assert state.release(A, "c", reusable=True, now=0.0) == Close("c", ())


def test_limit_makes_acquirers_wait_in_fifo_order() -> None:
    state: PoolState[str, str] = PoolState()
    settings = PoolSettings(max_conns_per_backend=1)
    dialled(state, A, settings, 1)
    assert state.acquire(A, settings, 0.0) is WAIT
    assert state.wait(A, "w1") == []
    assert state.acquire(A, settings, 0.0) is WAIT
    assert state.wait(A, "w2") == []
    assert state.stats(A) == PeerStats(busy=1, waiting=2, dials=1)
    # A reusable release goes straight to the first waiter: nobody can jump the queue.
    assert state.release(A, "c", reusable=True, now=1.0) == HandOff("w1", "c")
    assert state.stats(A) == PeerStats(busy=1, waiting=1, dials=1)
    # A closed connection's slot becomes a dial permit for the next waiter.
    assert state.release(A, "c", reusable=False, now=2.0) == Close("c", ("w2",))
    assert state.stats(A) == PeerStats(connecting=1, dials=2)


def test_newcomer_queues_behind_waiters_even_with_spare_capacity() -> None:
    state: PoolState[str, str] = PoolState()
    one = PoolSettings(max_conns_per_backend=1)
    dialled(state, A, one, 1)
    assert state.acquire(A, one, 0.0) is WAIT
    assert state.wait(A, "w1") == []
    # The limit is raised by a reload: the newcomer must not overtake w1, but both get slots.
    two = PoolSettings(max_conns_per_backend=3)
    assert state.acquire(A, two, 0.0) is WAIT
    assert state.wait(A, "w2") == ["w1", "w2"]
    assert state.stats(A) == PeerStats(busy=1, connecting=2, dials=3)


def test_failed_dial_frees_its_slot_for_a_waiter() -> None:
    state: PoolState[str, str] = PoolState()
    settings = PoolSettings(max_conns_per_backend=1)
    assert state.acquire(A, settings, 0.0) is DIAL
    assert state.acquire(A, settings, 0.0) is WAIT
    state.wait(A, "w")
    assert state.dial_failed(A) == ["w"]
    assert state.stats(A) == PeerStats(connecting=1, dials=2)
    assert state.dial_failed(A) == []
    assert state.stats(A) == PeerStats(dials=2)


def test_cancelled_waiter_leaves_the_queue() -> None:
    state: PoolState[str, str] = PoolState()
    settings = PoolSettings(max_conns_per_backend=1)
    dialled(state, A, settings, 1)
    state.acquire(A, settings, 0.0)
    state.wait(A, "w")
    assert state.cancel_wait(A, "w") is True
    assert state.cancel_wait(A, "w") is False
    assert state.release(A, "c", reusable=True, now=0.0) is KEEP


def test_redial_turns_a_busy_slot_into_a_connecting_one() -> None:
    state: PoolState[str, str] = PoolState()
    dialled(state, A, DEFAULT, 1)
    state.redial(A)
    assert state.stats(A) == PeerStats(connecting=1, dials=2)


def test_lowered_limit_closes_instead_of_keeping_or_handing_off() -> None:
    state: PoolState[str, str] = PoolState()
    dialled(state, A, PoolSettings(max_conns_per_backend=3), 3)
    one = PoolSettings(max_conns_per_backend=1)
    assert state.acquire(A, one, 0.0) is WAIT
    state.wait(A, "w")
    assert state.release(A, "c1", reusable=True, now=0.0) == Close("c1", ())
    assert state.release(A, "c2", reusable=True, now=0.0) == Close("c2", ())
    assert state.release(A, "c3", reusable=True, now=0.0) == HandOff("w", "c3")


def test_expire_removes_oldest_first_and_schedules_the_rest() -> None:
    state: PoolState[str, str] = PoolState()
    settings = PoolSettings(idle_conn_timeout=10.0)
    dialled(state, A, settings, 2)
    assert state.next_expiry() == math.inf
    state.release(A, "old", reusable=True, now=0.0)
    state.release(A, "new", reusable=True, now=4.0)
    assert state.next_expiry() == 10.0
    assert state.expire(9.9) == []
    assert state.expire(10.0) == ["old"]
    assert state.next_expiry() == 14.0
    assert state.expire(20.0) == ["new"]
    assert state.next_expiry() == math.inf
    assert state.stats(A) == PeerStats(dials=2)


def test_acquire_never_reuses_an_expired_connection() -> None:
    state: PoolState[str, str] = PoolState()
    settings = PoolSettings(idle_conn_timeout=10.0)
    dialled(state, A, settings, 2)
    state.release(A, "c1", reusable=True, now=0.0)
    state.release(A, "c2", reusable=True, now=1.0)
    assert state.acquire(A, settings, 11.0) == Expired(("c1", "c2"))
    assert state.stats(A) == PeerStats(dials=2)
    assert state.acquire(A, settings, 11.0) is DIAL
    # The stale heap entry costs one early wake-up and nothing else.
    assert state.expire(11.0) == []


def test_emptied_and_refilled_stack_is_still_expired_on_time() -> None:
    state: PoolState[str, str] = PoolState()
    settings = PoolSettings(idle_conn_timeout=10.0)
    dialled(state, A, settings, 1)
    state.release(A, "c", reusable=True, now=0.0)
    assert state.acquire(A, settings, 5.0) == Reuse("c")
    state.release(A, "c", reusable=True, now=8.0)
    assert state.next_expiry() == 10.0  # early, never late
    assert state.expire(10.0) == []
    assert state.next_expiry() == 18.0
    assert state.expire(18.0) == ["c"]


def test_shorter_timeout_moves_the_expiry_earlier() -> None:
    state: PoolState[str, str] = PoolState()
    dialled(state, A, PoolSettings(idle_conn_timeout=60.0), 2)
    state.release(A, "c1", reusable=True, now=0.0)
    state.release(A, "c2", reusable=True, now=0.0)
    assert state.next_expiry() == 60.0
    short = PoolSettings(idle_conn_timeout=5.0)
    assert state.acquire(A, short, 1.0) == Reuse("c2")
    assert state.next_expiry() == 5.0
    assert state.expire(5.0) == ["c1"]
    assert state.expire(60.0) == []  # the superseded entry is skipped
    assert state.next_expiry() == math.inf


def test_close_all_returns_idle_and_waiters() -> None:
    state: PoolState[str, str] = PoolState()
    one = PoolSettings(max_conns_per_backend=1)
    dialled(state, A, one, 1)
    state.acquire(A, one, 0.0)
    state.wait(A, "w")
    dialled(state, B, DEFAULT, 1)
    state.release(B, "b", reusable=True, now=0.0)
    assert state.close_all() == (["b"], ["w"])
    assert state.next_expiry() == math.inf
    assert state.stats(A) == PeerStats(busy=1, dials=1)
    assert state.release(A, "a", reusable=False, now=0.0) == Close("a", ())


@pytest.mark.parametrize(
    "misuse",
    [
        lambda s: s.dial_succeeded(A),
        lambda s: s.dial_failed(A),
        lambda s: s.redial(A),
        lambda s: s.release(A, "x", reusable=True, now=0.0),
    ],
)
def test_misuse_raises_instead_of_going_negative(
    misuse: Callable[[PoolState[str, str]], object],
) -> None:
    state: PoolState[str, str] = PoolState()
    with pytest.raises(RuntimeError, match="pool state"):
        misuse(state)
    state.acquire(A, DEFAULT, 0.0)
    state.dial_failed(A)
    with pytest.raises(RuntimeError, match="misuse"):
        misuse(state)
    assert state.stats(A) == PeerStats(dials=1)
