"""The bounded queue in front of one multiplexer client's writer (SPEC §5.13 "Ordering and
backpressure", §14.1 ws-mux row).

Ring 1 (trio events wake the waiters). Owns no nursery and sets no deadline: waits run in the
caller's scopes.

One FIFO of items, each tagged with a ``Lane``: a channel's lane (one per subscription) or the
control lane (acks, pongs, errors). The writer takes items in FIFO order, so whatever was queued
first is sent first: an ``ack`` queued before a channel's first message precedes it, and each
lane keeps its order. Two bounds: at most ``per_lane`` items queued per lane, and at most
``total_bytes`` bytes over all lanes (an item larger than that is still taken when the queue is
empty, so no single item can wedge the queue). ``put`` waits for room (a service channel's pump
stops reading its upstream meanwhile: backpressure, nothing dropped); ``put_nowait`` answers
False instead (a broadcast hub then evicts the subscriber); ``force`` admits a small item over
the bounds (the ``slow_consumer`` error that follows an eviction, at most one per eviction).

Closing a lane drops what it has queued and silently ignores later puts on it, so after an
``unsubscribe`` nothing of that channel reaches the writer. Dropping is O(queued items), which
the bounds keep small.

Must not: send anything, know what an item is, or grow past its bounds except by ``force``.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

import trio

__all__ = ["Lane", "Outbox"]

T = TypeVar("T")


class Lane:
    """One channel's (or the control messages') share of an ``Outbox``."""

    __slots__ = ("closed", "queued", "size")

    def __init__(self) -> None:
        #: How many items of this lane are queued, and their bytes.
        self.queued = 0
        self.size = 0
        #: A closed lane takes nothing more (its channel ended for this client).
        self.closed = False


class Outbox(Generic[T]):
    """A FIFO of ``T`` items in lanes, bounded per lane (items) and in total (bytes)."""

    __slots__ = ("_arrived", "_items", "_per_lane", "_room", "_total", "_total_bytes")

    def __init__(self, *, per_lane: int, total_bytes: int) -> None:
        if per_lane < 1 or total_bytes < 1:
            raise ValueError("an outbox needs room for at least one item")
        self._per_lane = per_lane
        self._total_bytes = total_bytes
        self._items: deque[tuple[Lane, T, int]] = deque()
        self._total = 0
        # Replaced by a fresh event each time it is set (trio's idiom for a condition).
        self._arrived = trio.Event()
        self._room = trio.Event()

    @property
    def queued_bytes(self) -> int:
        """The bytes of every queued item."""
        return self._total

    def __len__(self) -> int:
        return len(self._items)

    def fits(self, lane: Lane, size: int) -> bool:
        """Whether an item of ``size`` bytes for ``lane`` would be taken now."""
        if lane.queued >= self._per_lane:
            return False
        return not self._items or self._total + size <= self._total_bytes

    def put_nowait(self, lane: Lane, item: T, size: int, *, force: bool = False) -> bool:
        """Queue ``item`` if it fits (or ``force``); False when it does not. An item for a
        closed lane is dropped (True: there is nothing to wait for)."""
        if lane.closed:
            return True
        if not force and not self.fits(lane, size):
            return False
        self._items.append((lane, item, size))
        lane.queued += 1
        lane.size += size
        self._total += size
        self._arrived.set()
        self._arrived = trio.Event()
        return True

    async def put(self, lane: Lane, item: T, size: int) -> None:
        """Queue ``item``, waiting for room first. Always a checkpoint; a cancellation leaves
        nothing queued."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while not lane.closed and not self.fits(lane, size):
            waited = True
            await self._room.wait()
        self.put_nowait(lane, item, size)
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def get(self) -> T:
        """The oldest item, waiting for one. Always a checkpoint."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while not self._items:
            waited = True
            await self._arrived.wait()
        lane, item, size = self._items.popleft()
        self._forget(lane, size)
        self._made_room()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def close_lane(self, lane: Lane) -> int:
        """Drop ``lane``'s queued items and refuse its later ones; how many were dropped."""
        lane.closed = True
        if not lane.queued:
            return 0
        dropped = lane.queued
        kept = [entry for entry in self._items if entry[0] is not lane]
        self._items = deque(kept)
        self._total -= lane.size
        lane.queued = lane.size = 0
        self._made_room()
        return dropped

    def _forget(self, lane: Lane, size: int) -> None:
        lane.queued -= 1
        lane.size -= size
        self._total -= size

    def _made_room(self) -> None:
        self._room.set()
        self._room = trio.Event()
