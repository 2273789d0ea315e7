"""Bookkeeping of the HTTP/1.1 upstream pool (SPEC §5.7 HTTP/1.1 pool row; DESIGN.md §3.2, §3.5).

Ring 0: synchronous and deterministic; time arrives as ``now`` (trio's clock, read by Ring 1).
Connections (``C``) and waiters (``W``) are opaque tokens chosen by ``upstream/pool.py``; this
module never calls them. Every method returns a *decision* value that Ring 1 executes.

Theory of operation. Per peer there is one ``_PeerRecord``:

- ``idle``: a LIFO stack (deque, newest on the right) of ``(idle_since, conn)``. Taking from the
  right reuses the warmest connection; since ``idle_since`` grows from left to right, the oldest
  entry is always on the left, so expiry only ever looks at the left end.
- ``busy`` (handed out) and ``connecting`` (slots reserved for a dial, including dial permits
  granted to waiters) are counters; ``total = len(idle) + busy + connecting`` is what
  ``max_conns_per_backend`` limits.
- ``waiters``: FIFO of acquirers blocked at the limit (an ordered dict: O(1) removal on cancel).
  A freed slot or a released connection goes to the first waiter before anyone else, so waiters
  do not starve. Invariant: ``waiters`` non-empty ⇒ ``idle`` empty.

Expiry is scheduled with a heap of ``(when, seq, record)``; ``record.due`` is the time of the
record's live entry (``inf`` when none). An entry is pushed only when it is earlier than ``due``
(a first idle connection, or a shortened ``idle_conn_timeout``), so the live entry may be early —
the stack emptied and refilled — but never late; entries superseded by an earlier push are
skipped when popped, and a popped live entry re-schedules its peer. ``expire`` therefore costs
O(expired + stale entries + log peers) and nothing here ever scans all peers or connections.

Must not: import trio, sockets or clocks; call or close connections; block.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Generic, TypeAlias, TypeVar

if TYPE_CHECKING:
    from a3s_gateway.upstream.peer import Peer, PoolSettings

C = TypeVar("C")
W = TypeVar("W")


# --- acquire decisions ---


@dataclass(frozen=True, slots=True)
class Reuse(Generic[C]):
    """Hand out this idle connection (now counted busy) after checking it is not dead."""

    conn: C


@dataclass(frozen=True, slots=True)
class Expired(Generic[C]):
    """Every idle connection of the peer had expired: close these, then ask again."""

    conns: tuple[C, ...]


@dataclass(frozen=True, slots=True)
class Dial:
    """A slot is reserved (counted connecting): dial, then report success or failure."""


@dataclass(frozen=True, slots=True)
class Wait:
    """The peer is at ``max_conns_per_backend`` (or others wait already): call ``wait``."""


_NEVER: Final = float("inf")
DIAL: Final = Dial()
WAIT: Final = Wait()

# --- release decisions ---


@dataclass(frozen=True, slots=True)
class Keep:
    """The connection went onto the idle stack."""


@dataclass(frozen=True, slots=True)
class HandOff(Generic[C, W]):
    """Give ``conn`` (still counted busy) to ``waiter``, the first in line."""

    waiter: W
    conn: C


@dataclass(frozen=True, slots=True)
class Close(Generic[C, W]):
    """Close ``conn``; its slot went to ``granted`` as dial permits (usually empty)."""

    conn: C
    granted: tuple[W, ...]


KEEP: Final = Keep()

AcquireDecision: TypeAlias = "Reuse[C] | Expired[C] | Dial | Wait"
ReleaseDecision: TypeAlias = "Keep | HandOff[C, W] | Close[C, W]"


@dataclass(frozen=True, slots=True)
class PeerStats:
    """Counts of one peer for tests and metrics; ``dials`` counts dial slots ever granted."""

    idle: int = 0
    busy: int = 0
    connecting: int = 0
    waiting: int = 0
    dials: int = 0

    @property
    def total(self) -> int:
        """Connections counted against ``max_conns_per_backend``."""
        return self.idle + self.busy + self.connecting


class _PeerRecord(Generic[C, W]):
    __slots__ = ("busy", "connecting", "dials", "due", "idle", "settings", "waiters")

    def __init__(self, settings: PoolSettings) -> None:
        self.settings = settings
        self.idle: deque[tuple[float, C]] = deque()
        self.busy = 0
        self.connecting = 0
        self.dials = 0
        self.waiters: OrderedDict[W, None] = OrderedDict()
        self.due = _NEVER  # time of this record's live entry in the expiry heap

    @property
    def total(self) -> int:
        return len(self.idle) + self.busy + self.connecting


class PoolState(Generic[C, W]):
    """Counts, idle stacks, waiter queues and the expiry schedule of every peer."""

    __slots__ = ("_heap", "_records", "_seq")

    def __init__(self) -> None:
        self._records: dict[Peer, _PeerRecord[C, W]] = {}
        self._heap: list[tuple[float, int, _PeerRecord[C, W]]] = []
        self._seq = 0  # heap tie-breaker: records are not comparable

    # --- acquiring ---

    def acquire(
        self, peer: Peer, settings: PoolSettings, now: float, *, fresh: bool = False
    ) -> AcquireDecision[C]:
        """Decide how to get a connection to ``peer``; ``settings`` become the peer's current.

        ``Expired`` and a dead ``Reuse`` (released with ``reusable=False``) mean "ask again".
        ``fresh`` never reuses an idle connection (the stale re-send of SPEC §5.7); idle ones
        still count against ``max_conns_per_backend``.
        """
        rec = self._records.get(peer)
        if rec is None:
            rec = self._records[peer] = _PeerRecord(settings)
        if settings is not rec.settings:
            rec.settings = settings
            if rec.idle:  # a shorter idle_conn_timeout may move the expiry earlier
                self._schedule(rec)
        if rec.idle and not fresh:
            since, conn = rec.idle[-1]
            if since + settings.idle_conn_timeout <= now:
                # The newest is expired, so all are: LIFO order is idle_since order.
                expired = tuple(conn for _, conn in rec.idle)
                rec.idle.clear()
                return Expired(expired)
            rec.idle.pop()
            rec.busy += 1
            return Reuse(conn)
        if rec.waiters or rec.total >= settings.max_conns_per_backend:
            return WAIT
        rec.connecting += 1
        rec.dials += 1
        return DIAL

    def reuse(self, peer: Peer, settings: PoolSettings, now: float) -> C | None:
        """The hot path's shortcut: the newest idle connection to ``peer`` (checked out) when
        ``acquire`` would certainly answer ``Reuse`` with it; else None and nothing changed.

        Only when ``settings`` are the peer's current ones and the newest idle connection has
        not expired, so the expiry schedule needs no update.
        """
        rec = self._records.get(peer)
        if rec is None or settings is not rec.settings or not rec.idle:
            return None
        since, conn = rec.idle[-1]
        if since + settings.idle_conn_timeout <= now:
            return None
        rec.idle.pop()
        rec.busy += 1
        return conn

    def wait(self, peer: Peer, waiter: W) -> list[W]:
        """Queue ``waiter`` after a ``Wait`` decision.

        Returns waiters granted a dial permit by spare capacity (possibly ``waiter`` itself, when
        the limit was raised while others waited); each must dial next.
        """
        rec = self._record(peer)
        rec.waiters[waiter] = None
        return self._grant_spare(rec)

    def cancel_wait(self, peer: Peer, waiter: W) -> bool:
        """Remove a waiter that gave up. False: it was already granted a connection or permit,
        which the caller must give back (``release`` or ``dial_failed``)."""
        waiters = self._record(peer).waiters
        if waiter in waiters:
            del waiters[waiter]
            return True
        return False

    def dial_succeeded(self, peer: Peer) -> None:
        """A reserved slot became a busy connection."""
        rec = self._record(peer)
        self._check(rec.connecting > 0, "dial_succeeded without a reserved slot")
        rec.connecting -= 1
        rec.busy += 1

    def dial_failed(self, peer: Peer) -> list[W]:
        """A reserved slot is free again (dial failed or was cancelled, or a permit was unused).

        Returns waiters granted a dial permit in its place.
        """
        rec = self._record(peer)
        self._check(rec.connecting > 0, "dial_failed without a reserved slot")
        rec.connecting -= 1
        return self._grant_spare(rec)

    def redial(self, peer: Peer) -> None:
        """A busy connection is discarded but its slot is kept to dial a replacement (a
        connection handed to a waiter turned out dead): busy → connecting."""
        rec = self._record(peer)
        self._check(rec.busy > 0, "redial without a busy connection")
        rec.busy -= 1
        rec.connecting += 1
        rec.dials += 1

    # --- releasing ---

    def release(self, peer: Peer, conn: C, *, reusable: bool, now: float) -> ReleaseDecision[C, W]:
        """Take back a busy connection: hand it to the first waiter, keep it idle, or close it."""
        rec = self._record(peer)
        self._check(rec.busy > 0, "release without a busy connection")
        rec.busy -= 1
        settings = rec.settings
        # total + 1 <= max: a lowered limit closes connections above it instead of keeping them.
        if reusable and rec.total < settings.max_conns_per_backend:
            if rec.waiters:
                waiter, _ = rec.waiters.popitem(last=False)
                rec.busy += 1
                return HandOff(waiter, conn)
            if len(rec.idle) < settings.max_idle_per_backend:
                rec.idle.append((now, conn))
                self._schedule(rec)
                return KEEP
        return Close(conn, tuple(self._grant_spare(rec)))

    # --- expiry ---

    def next_expiry(self) -> float:
        """When ``expire`` may next have work (``inf`` when nothing is idle); never late."""
        return self._heap[0][0] if self._heap else _NEVER

    def expire(self, now: float) -> list[C]:
        """Remove and return idle connections whose ``idle_conn_timeout`` has passed."""
        expired: list[C] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, rec = heapq.heappop(heap)
            if when != rec.due:
                continue  # superseded by an earlier entry, which already ran
            rec.due = _NEVER
            timeout = rec.settings.idle_conn_timeout
            idle = rec.idle
            while idle and idle[0][0] + timeout <= now:
                expired.append(idle.popleft()[1])
            if idle:
                self._schedule(rec)
        return expired

    def close_all(self) -> tuple[list[C], list[W]]:
        """Shutdown: remove every idle connection and every waiter (busy ones come back through
        ``release``, which the caller then makes non-reusable)."""
        conns: list[C] = []
        waiters: list[W] = []
        for rec in self._records.values():
            conns.extend(conn for _, conn in rec.idle)
            rec.idle.clear()
            waiters.extend(rec.waiters)
            rec.waiters.clear()
            rec.due = _NEVER
        self._heap.clear()
        return conns, waiters

    # --- inspection ---

    def stats(self, peer: Peer) -> PeerStats:
        """Current counts of ``peer`` (all zero for a peer never seen)."""
        rec = self._records.get(peer)
        if rec is None:
            return PeerStats()
        return PeerStats(len(rec.idle), rec.busy, rec.connecting, len(rec.waiters), rec.dials)

    def idle(self, peer: Peer) -> tuple[C, ...]:
        """The idle connections of ``peer``, oldest first (diagnostics; O(idle))."""
        rec = self._records.get(peer)
        return () if rec is None else tuple(conn for _, conn in rec.idle)

    def peers(self) -> list[Peer]:
        """Every peer seen so far (bounded by the configured backends)."""
        return list(self._records)

    # --- internals ---

    def _record(self, peer: Peer) -> _PeerRecord[C, W]:
        rec = self._records.get(peer)
        if rec is None:
            raise RuntimeError(f"pool state has no record of {peer}")
        return rec

    @staticmethod
    def _check(condition: bool, message: str) -> None:
        if not condition:
            raise RuntimeError(f"pool state misuse: {message}")

    def _grant_spare(self, rec: _PeerRecord[C, W]) -> list[W]:
        granted: list[W] = []
        limit = rec.settings.max_conns_per_backend
        while rec.waiters and rec.total < limit:
            waiter, _ = rec.waiters.popitem(last=False)
            rec.connecting += 1
            rec.dials += 1
            granted.append(waiter)
        return granted

    def _schedule(self, rec: _PeerRecord[C, W]) -> None:
        """Make sure the heap wakes ``expire`` no later than the oldest idle entry's expiry."""
        when = rec.idle[0][0] + rec.settings.idle_conn_timeout
        if when < rec.due:
            self._seq += 1
            heapq.heappush(self._heap, (when, self._seq, rec))
            rec.due = when
