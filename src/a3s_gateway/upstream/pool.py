"""The HTTP/1.1 upstream connection pool: the async face of ``pool_state.py`` (SPEC §5.7).

Ring 1.

Nursery: ``run`` owns the *pool nursery* (DESIGN.md §3.3, "upstream pool" row). ``app.py`` starts
it with ``await nursery.start(pool.run)`` and it lives until ``aclose``. It runs the idle reaper
in ``run``'s own task and the occasional background close of a stream that cannot be closed
synchronously. The nursery stays a local of ``run`` (DESIGN.md §3.3: no nursery in an attribute
others poke at): ``release`` and the reaper queue such a stream on a memory channel, and a task
in the nursery starts one ``aclose`` per stream; what is still queued when ``run`` ends (even
cancelled) is started before the nursery closes. A stream queued before ``run`` starts waits for
it; after ``run`` has ended, nothing closes it (production streams close synchronously).

Deadlines: none of its own. ``acquire`` runs entirely in the caller's cancel scope, which carries
``connect_timeout`` (SPEC §5.5) and covers both waiting for capacity and dialling. The reaper
sleeps in a cancel scope whose deadline is the next idle expiry; ``release`` moves that deadline
earlier when needed, so there is no polling. Closing is bounded: sockets close synchronously,
other streams with ``trio.aclose_forcefully``, and ``aclose`` shields at most ``CLOSE_BOUND``.

Telling a capacity wait from a slow dial (SPEC §5.6: 503 ``backend connection limit reached`` vs
504). A cancel scope cannot say where it interrupted ``acquire``, and an exception raised from
an inner scope with the same deadline would lose to the caller's scope (trio delivers the
cancellation to the outermost cancelled scope). So the caller passes an ``AcquireProgress``
that ``acquire`` updates as it goes; after the scope expired, ``progress.stage`` is
``AcquireStage.WAITING`` if the time ran out at ``max_conns_per_backend`` (→ 503), and
``DIALLING`` (or ``STARTING``) if it ran out connecting (→ 504)::

    progress = AcquireProgress()
    with trio.move_on_after(connect_timeout) as scope:
        conn = await pool.acquire(peer, settings, progress)
    if scope.cancelled_caught:
        status = 503 if progress.stage is AcquireStage.WAITING else 504

Must not: read or write connections (the exchange does), decide reusability, take timeout
arguments, block in ``release``, or let an exception from closing a connection escape.
"""

from __future__ import annotations

import contextlib
import enum
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.upstream.connect_errors import PoolClosed
from a3s_gateway.upstream.dialer import Dialer, dial
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
from a3s_gateway.upstream.pooled_connection import (
    AdapterFactory,
    UpstreamConnection,
    new_http1_client,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from a3s_gateway.upstream.peer import Peer, PoolSettings

#: Upper bound of the shielded close of idle connections in ``aclose``.
CLOSE_BOUND: Final = 1.0


class AcquireStage(enum.Enum):
    """Where an ``acquire`` is (or was when its caller's deadline expired)."""

    STARTING = "starting"
    WAITING = "waiting"  # at max_conns_per_backend, queued for a free connection
    DIALLING = "dialling"
    DONE = "done"


@dataclass(slots=True)
class AcquireProgress:
    """Written by ``UpstreamPool.acquire``; read by its caller after a timeout."""

    stage: AcquireStage = AcquireStage.STARTING


#: Where ``acquire`` writes when the caller passed no progress record; nobody reads it.
_UNOBSERVED: Final = AcquireProgress()


class _Waiter:
    """An ``acquire`` queued at the limit; woken with a connection, a dial permit or shutdown."""

    __slots__ = ("conn", "event", "permit")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.conn: UpstreamConnection | None = None
        self.permit = False


class UpstreamPool:
    """HTTP/1.1 connections per ``Peer``: LIFO reuse, limits, FIFO waiting and idle expiry."""

    def __init__(
        self, *, dialer: Dialer = dial, adapter_factory: AdapterFactory = new_http1_client
    ) -> None:
        self._dialer = dialer
        self._adapter_factory = adapter_factory
        self._state: PoolState[UpstreamConnection, _Waiter] = PoolState()
        self._closed = False
        self._running = False
        #: Streams that need an await to close, for ``run``'s nursery (module docstring).
        self._slow_closes, self._slow_queue = trio.open_memory_channel[UpstreamConnection](math.inf)
        self._reaper: trio.CancelScope | None = None

    # --- lifecycle ---

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the idle reaper until ``aclose``; start with ``nursery.start(pool.run)``.

        Cancelling ``run`` also shuts the pool down (idle connections closed, waiters woken).
        Raises ``RuntimeError`` if the pool is already running.
        """
        if self._running:
            raise RuntimeError("UpstreamPool.run is already running")
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._close_slowly, nursery)
                task_status.started()
                try:
                    await self._reap_until_closed()
                finally:
                    for conn in self._shutdown():
                        self._close(conn)
                    self._slow_closes.close()  # ends _close_slowly once the queue is empty
                    self._start_queued_closes(nursery)  # now: it may have been cancelled
        finally:
            self._running = False

    async def aclose(self) -> None:
        """Close every idle connection, wake waiters with ``PoolClosed``, stop the reaper.

        Busy connections are closed when released. A checkpoint; bounded by ``CLOSE_BOUND``.
        """
        slow = [conn for conn in self._shutdown() if not conn.close_nowait()]
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_BOUND):
            for conn in slow:
                await conn.aclose()
        await trio.lowlevel.checkpoint()

    # --- acquiring ---

    async def acquire(
        self,
        peer: Peer,
        settings: PoolSettings,
        progress: AcquireProgress | None = None,
        *,
        fresh: bool = False,
    ) -> UpstreamConnection:
        """A connection to ``peer``, checked out to the caller until ``release``.

        In order: the most recently idled live connection (dead and expired ones are closed on
        the way); else a new one if under ``max_conns_per_backend``; else wait in FIFO order
        for a released connection or a freed slot (``fresh``: never an idle one; a waiter may
        still be handed a released connection). Always a checkpoint. Cancellation at any
        point leaves the counts as they were. Raises ``ConnectFailed`` from the dialer and
        ``PoolClosed``.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise PoolClosed
        progress = _UNOBSERVED if progress is None else progress
        state = self._state
        while True:
            decision = state.acquire(peer, settings, trio.current_time(), fresh=fresh)
            self._nudge_reaper()  # changed settings may have moved an expiry earlier
            match decision:
                case Reuse(conn=conn):
                    if conn.looks_dead():
                        now = trio.current_time()
                        self._apply(state.release(peer, conn, reusable=False, now=now))
                        continue
                    progress.stage = AcquireStage.DONE
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    return self._hand_out(conn, reused=True)
                case Expired(conns=conns):
                    for conn in conns:
                        self._close(conn)
                case Dial():
                    return await self._dial(peer, progress)
                case Wait():
                    return await self._wait(peer, progress)

    def try_reuse(self, peer: Peer, settings: PoolSettings) -> UpstreamConnection | None:
        """The newest live idle connection to ``peer``, checked out, without a checkpoint; None
        when ``acquire`` must decide (nothing idle, an expiry or a settings change to apply).

        Dead idle connections met on the way are closed, as ``acquire`` would.
        """
        if self._closed:
            return None
        state = self._state
        now = trio.current_time()
        while True:
            conn = state.reuse(peer, settings, now)
            if conn is None:
                return None
            if not conn.looks_dead():
                return self._hand_out(conn, reused=True)
            self._apply(state.release(peer, conn, reusable=False, now=now))

    def release(self, conn: UpstreamConnection, *, reusable: bool) -> None:
        """Give back a connection from ``acquire``; never blocks, never raises for closing.

        ``reusable`` only if the exchange completed cleanly (SPEC §5.7 "Reuse safety"); then the
        connection goes to the first waiter or onto the idle stack (closed if the stack is full).
        Otherwise it is closed and its slot wakes one waiter. Releasing twice is a bug
        (``RuntimeError``).
        """
        if not conn.checked_out:
            raise RuntimeError(f"{conn!r} released but not checked out")
        conn.checked_out = False
        reusable = reusable and not self._closed
        now = conn.idle_since = trio.current_time()
        self._apply(self._state.release(conn.peer, conn, reusable=reusable, now=now))

    # --- inspection ---

    def stats(self, peer: Peer) -> PeerStats:
        """Counts of ``peer``: idle, busy, connecting, waiting, dials (and ``total``)."""
        return self._state.stats(peer)

    def peers(self) -> list[Peer]:
        """Every peer the pool has seen."""
        return self._state.peers()

    # --- internals ---

    async def _dial(self, peer: Peer, progress: AcquireProgress) -> UpstreamConnection:
        """Dial into a slot already reserved in the state; a failure or cancellation frees it."""
        progress.stage = AcquireStage.DIALLING
        try:
            stream = await self._dialer(peer)
        except BaseException:
            self._grant(self._state.dial_failed(peer))
            raise
        now = trio.current_time()
        self._state.dial_succeeded(peer)
        conn = UpstreamConnection(
            stream, peer, created_at=now, adapter_factory=self._adapter_factory
        )
        if self._closed:
            self._apply(self._state.release(peer, conn, reusable=False, now=now))
            raise PoolClosed
        progress.stage = AcquireStage.DONE
        return self._hand_out(conn, reused=False)

    async def _wait(self, peer: Peer, progress: AcquireProgress) -> UpstreamConnection:
        """Queue at the limit; whatever the waiter is granted is used or given back."""
        waiter = _Waiter()
        progress.stage = AcquireStage.WAITING
        self._grant(self._state.wait(peer, waiter))
        try:
            await waiter.event.wait()
        except BaseException:
            self._abandon(peer, waiter)
            raise
        conn = waiter.conn
        if conn is not None:
            if not conn.looks_dead():
                progress.stage = AcquireStage.DONE
                return self._hand_out(conn, reused=True)
            self._state.redial(peer)  # keep the slot we were given, for a fresh connection
            self._close(conn)
            return await self._dial(peer, progress)
        if waiter.permit:
            return await self._dial(peer, progress)
        raise PoolClosed

    def _abandon(self, peer: Peer, waiter: _Waiter) -> None:
        """A waiter was cancelled: leave the queue, or pass on what it was already granted."""
        if self._state.cancel_wait(peer, waiter):
            return
        if waiter.conn is not None:
            reusable = not self._closed
            now = trio.current_time()
            self._apply(self._state.release(peer, waiter.conn, reusable=reusable, now=now))
        elif waiter.permit:
            self._grant(self._state.dial_failed(peer))

    def _hand_out(self, conn: UpstreamConnection, *, reused: bool) -> UpstreamConnection:
        conn.checked_out = True
        conn.reused = reused
        return conn

    def _apply(self, decision: ReleaseDecision[UpstreamConnection, _Waiter]) -> None:
        match decision:
            case Keep():
                self._nudge_reaper()
            case HandOff(waiter=waiter, conn=conn):
                waiter.conn = conn
                waiter.event.set()
            case Close(conn=conn, granted=granted):
                self._close(conn)
                self._grant(granted)

    def _nudge_reaper(self) -> None:
        """Wake the reaper earlier if the state's next expiry moved before its deadline."""
        reaper = self._reaper
        if reaper is not None:
            expiry = self._state.next_expiry()
            if expiry < reaper.deadline:  # setting a deadline costs, even an unchanged one
                reaper.deadline = expiry

    @staticmethod
    def _grant(waiters: Iterable[_Waiter]) -> None:
        for waiter in waiters:
            waiter.permit = True
            waiter.event.set()

    def _close(self, conn: UpstreamConnection) -> None:
        """Close without blocking: synchronously if possible, else queued for ``run``'s nursery."""
        if conn.close_nowait():
            return
        # Once ``run`` has ended the queue is closed and such a stream is dropped unclosed.
        # Production streams (sockets, TLS over sockets) always close synchronously; only
        # exotic test streams can get here.
        with contextlib.suppress(trio.ClosedResourceError):
            self._slow_closes.send_nowait(conn)

    async def _close_slowly(self, nursery: trio.Nursery) -> None:
        """``run``'s closer: one ``aclose`` task in ``nursery`` per queued stream, until the
        queue is closed."""
        async for conn in self._slow_queue:
            nursery.start_soon(conn.aclose)

    def _start_queued_closes(self, nursery: trio.Nursery) -> None:
        """Start the closes still queued, without a checkpoint (``run`` is ending)."""
        while True:
            try:
                conn = self._slow_queue.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            nursery.start_soon(conn.aclose)

    def _shutdown(self) -> list[UpstreamConnection]:
        """Mark closed; return idle connections to close; wake waiters; stop the reaper."""
        if self._closed:
            return []
        self._closed = True
        idle, waiters = self._state.close_all()
        for waiter in waiters:
            waiter.event.set()  # neither conn nor permit: PoolClosed
        if self._reaper is not None:
            self._reaper.cancel()
        return idle

    async def _reap_until_closed(self) -> None:
        while not self._closed:
            with trio.CancelScope(deadline=self._state.next_expiry()) as scope:
                self._reaper = scope
                await trio.sleep_forever()
            self._reaper = None
            for conn in self._state.expire(trio.current_time()):
                self._close(conn)
