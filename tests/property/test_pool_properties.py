"""The pool bookkeeping agrees with a naive model (SPEC §5.7 HTTP/1.1 pool; DESIGN.md §3.7 "Pool").

The model keeps the ground truth as explicit collections — which connections are idle (with
their idle-since times), which are held by exchanges or handed to waiters, which dials are in
progress, who waits in which order — and derives every count with ``len`` and every expiry by
scanning. After each random operation: the state's counts equal the model's, no count is
negative, ``total ≤ max_conns_per_backend``, ``idle ≤ max_idle_per_backend``, nobody waits while
a connection is idle, no connection is both idle and handed out, and the reaper's next wake-up
is never later than the earliest real expiry. Each decision is checked against the model too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from hypothesis import example, given

from a3s_gateway.upstream.peer import Peer, PoolSettings
from a3s_gateway.upstream.pool_state import (
    Close,
    Dial,
    Expired,
    HandOff,
    Keep,
    PeerStats,
    PoolState,
    ReleaseDecision,
    Reuse,
    Wait,
)
from tests.property.strategies_upstream import (
    PEERS,
    Acquire,
    Advance,
    Cancel,
    FinishDial,
    PoolOp,
    Release,
    Resume,
    peer_settings,
    pool_op_sequences,
)


@dataclass
class Naive:
    """Ground truth as collections; see the module docstring."""

    settings: dict[Peer, PoolSettings]
    idle: dict[Peer, list[tuple[float, int]]] = field(default_factory=dict)  # oldest first
    held: dict[int, Peer] = field(default_factory=dict)  # connection → peer
    dialling: list[Peer] = field(default_factory=list)
    queued: dict[Peer, list[int]] = field(default_factory=dict)  # FIFO of waiters
    granted: dict[int, tuple[Peer, int | None]] = field(default_factory=dict)  # None: permit
    dials: dict[Peer, int] = field(default_factory=dict)

    def stats(self, peer: Peer) -> PeerStats:
        grants = [conn for p, conn in self.granted.values() if p == peer]
        return PeerStats(
            idle=len(self.idle.get(peer, [])),
            busy=sum(p == peer for p in self.held.values()) + sum(c is not None for c in grants),
            connecting=self.dialling.count(peer) + grants.count(None),
            waiting=len(self.queued.get(peer, [])),
            dials=self.dials.get(peer, 0),
        )

    def expected_grants(self, peer: Peer) -> list[int]:
        spare = self.settings[peer].max_conns_per_backend - self.stats(peer).total
        return self.queued.get(peer, [])[: max(0, spare)]

    def grant(self, peer: Peer, waiters: list[int] | tuple[int, ...]) -> None:
        assert list(waiters) == self.expected_grants(peer)
        for waiter in waiters:
            self.queued[peer].remove(waiter)
            self.granted[waiter] = (peer, None)
            self.dials[peer] = self.dials.get(peer, 0) + 1


class Run:
    """Drives a ``PoolState`` and the model side by side."""

    def __init__(self, settings: tuple[PoolSettings, ...]) -> None:
        self.state: PoolState[int, int] = PoolState()
        self.model = Naive(dict(zip(PEERS, settings, strict=True)))
        self.now = 0.0
        self.next_id = 0

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    # --- operations ---

    def acquire(self, op: Acquire) -> None:
        peer, model = PEERS[op.peer], self.model
        if op.timeout is not None:
            model.settings[peer] = replace(model.settings[peer], idle_conn_timeout=op.timeout)
        settings = model.settings[peer]
        while True:
            before = model.stats(peer)
            idle = model.idle.setdefault(peer, [])
            match self.state.acquire(peer, settings, self.now):
                case Reuse(conn=conn):
                    assert idle
                    assert idle[-1][1] == conn, "reuse must be LIFO"
                    assert idle[-1][0] + settings.idle_conn_timeout > self.now
                    idle.pop()
                    model.held[conn] = peer
                    if not op.dead:
                        return
                    self.release_checked(conn, reusable=False)  # found dead: ask again
                case Expired(conns=conns):
                    assert idle
                    assert idle[-1][0] + settings.idle_conn_timeout <= self.now
                    assert list(conns) == [conn for _, conn in idle]
                    idle.clear()
                case Dial():
                    assert not idle
                    assert before.waiting == 0
                    assert before.total < settings.max_conns_per_backend
                    model.dialling.append(peer)
                    model.dials[peer] = model.dials.get(peer, 0) + 1
                    return
                case Wait():
                    assert not idle
                    assert before.waiting or before.total >= settings.max_conns_per_backend
                    waiter = self.new_id()
                    model.queued.setdefault(peer, []).append(waiter)
                    model.grant(peer, self.state.wait(peer, waiter))
                    return

    def release(self, op: Release) -> None:
        for _ in range(op.count):
            if self.model.held:
                conn = sorted(self.model.held)[op.pick % len(self.model.held)]
                self.release_checked(conn, reusable=op.reusable)

    def release_checked(self, conn: int, *, reusable: bool) -> None:
        peer = self.model.held.pop(conn)
        decision = self.state.release(peer, conn, reusable=reusable, now=self.now)
        self.check_release(peer, conn, reusable, decision)

    def check_release(
        self, peer: Peer, conn: int, reusable: bool, decision: ReleaseDecision[int, int]
    ) -> None:
        model = self.model
        settings, stats = model.settings[peer], model.stats(peer)
        fits = reusable and stats.total < settings.max_conns_per_backend
        queue, idle = model.queued.get(peer, []), model.idle.setdefault(peer, [])
        match decision:
            case HandOff(waiter=waiter, conn=handed):
                assert fits
                assert queue
                assert queue[0] == waiter
                assert handed == conn
                queue.pop(0)
                model.granted[waiter] = (peer, conn)
            case Keep():
                assert fits
                assert not queue
                assert len(idle) < settings.max_idle_per_backend
                idle.append((self.now, conn))
            case Close(conn=closed, granted=granted):
                assert closed == conn
                assert not fits or (not queue and len(idle) >= settings.max_idle_per_backend)
                model.grant(peer, granted)

    def finish_dial(self, op: FinishDial) -> None:
        model = self.model
        if not model.dialling:
            return
        peer = model.dialling.pop(op.pick % len(model.dialling))
        if op.ok:
            self.state.dial_succeeded(peer)
            model.held[self.new_id()] = peer
        else:
            model.grant(peer, self.state.dial_failed(peer))

    def resume(self, op: Resume) -> None:
        model = self.model
        if not model.granted:
            return
        waiter = sorted(model.granted)[op.pick % len(model.granted)]
        peer, conn = model.granted.pop(waiter)
        if conn is None:
            model.dialling.append(peer)  # the permit is used to dial
        elif op.dead:
            self.state.redial(peer)
            model.dialling.append(peer)
            model.dials[peer] += 1
        else:
            model.held[conn] = peer

    def cancel(self, op: Cancel) -> None:
        model = self.model
        queued = [(w, p) for p, ws in model.queued.items() for w in ws]
        candidates = sorted(queued + [(w, p) for w, (p, _) in model.granted.items()])
        if not candidates:
            return
        waiter, peer = candidates[op.pick % len(candidates)]
        still_queued = waiter not in model.granted
        assert self.state.cancel_wait(peer, waiter) is still_queued
        if still_queued:
            model.queued[peer].remove(waiter)
            return
        _, conn = model.granted.pop(waiter)
        if conn is None:
            model.grant(peer, self.state.dial_failed(peer))
        else:  # what the pool does with a connection its waiter no longer wants
            model.held[conn] = peer
            self.release_checked(conn, reusable=True)

    def advance(self, op: Advance) -> None:
        self.now += op.seconds
        expected = set()
        for peer, idle in self.model.idle.items():
            timeout = self.model.settings[peer].idle_conn_timeout
            expected |= {conn for since, conn in idle if since + timeout <= self.now}
            idle[:] = [(since, conn) for since, conn in idle if conn not in expected]
        assert set(self.state.expire(self.now)) == expected

    # --- invariants ---

    def check(self) -> None:
        earliest = math.inf
        for peer in PEERS:
            settings, stats = self.model.settings[peer], self.state.stats(peer)
            assert stats == self.model.stats(peer)
            assert min(stats.idle, stats.busy, stats.connecting, stats.waiting) >= 0
            assert stats.total <= settings.max_conns_per_backend
            assert stats.idle <= settings.max_idle_per_backend
            assert not (stats.waiting and stats.idle), "waiting while a connection is idle"
            idle = self.model.idle.get(peer, [])
            assert self.state.idle(peer) == tuple(conn for _, conn in idle)
            for since, conn in idle:
                assert conn not in self.model.held
                earliest = min(earliest, since + settings.idle_conn_timeout)
        assert self.state.next_expiry() <= earliest, "the reaper would wake too late"

    def apply(self, op: PoolOp) -> None:
        match op:
            case Acquire():
                self.acquire(op)
            case Release():
                self.release(op)
            case FinishDial():
                self.finish_dial(op)
            case Resume():
                self.resume(op)
            case Cancel():
                self.cancel(op)
            case Advance():
                self.advance(op)
        self.check()


ONE = PoolSettings(max_idle_per_backend=1, idle_conn_timeout=1.0, max_conns_per_backend=1)


@given(settings=peer_settings(), ops=pool_op_sequences())
@example(  # limit 1: a waiter gets the handed-over connection, then another waits for a permit
    settings=(ONE, ONE, ONE),
    ops=[
        Acquire(0, dead=False),
        FinishDial(0, ok=True),
        Acquire(0, dead=False),
        Acquire(0, dead=False),
        Release(0, reusable=True),
        Cancel(0),
        Resume(0, dead=True),
        FinishDial(0, ok=False),
        Resume(0, dead=False),
        Advance(4.0),
    ],
)
@example(  # the reaper expires the older of two idle connections and re-schedules the newer
    settings=(PoolSettings(max_idle_per_backend=3, idle_conn_timeout=2.5), ONE, ONE),
    ops=[
        Acquire(0, dead=False),
        Acquire(0, dead=False),
        FinishDial(0, ok=True),
        FinishDial(0, ok=True),
        Release(0, reusable=True),
        Advance(1.0),
        Release(0, reusable=True),
        Advance(2.0),
        Advance(1.0),
    ],
)
@example(  # LIFO: the last connection released is the first reused, over a deep stack
    settings=(PoolSettings(), ONE, ONE),
    ops=[
        *[Acquire(0, dead=False)] * 3,
        *[FinishDial(0, ok=True)] * 3,
        Release(0, reusable=True, count=3),
        Acquire(0, dead=False),
        Acquire(0, dead=True),
        Release(0, reusable=True),
    ],
)
@example(  # acquire itself finds the idle stack expired, before the reaper ran
    settings=(ONE, ONE, ONE),
    ops=[
        Acquire(0, dead=False),
        FinishDial(0, ok=True),
        Release(0, reusable=True),
        Acquire(0, dead=False, timeout=0.0),
        Advance(0.0),
    ],
)
def test_pool_state_matches_the_naive_model(
    settings: tuple[PoolSettings, ...], ops: list[PoolOp]
) -> None:
    run = Run(settings)
    for op in ops:
        run.apply(op)
    # Whatever happened, giving everything back leaves no busy or connecting slot behind.
    for conn in sorted(run.model.held):
        run.release_checked(conn, reusable=False)
        run.check()
