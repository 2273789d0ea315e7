"""Properties of the scale-from-zero buffer (SPEC §11.5) under random sequences of arrivals,
releases, requeues, finishes, cancellations, the passing of time and close, checked against a
plain model after every step:

- every ticket ends exactly once, with the result the model expects, and its request saw the
  matching outcome (``BufferTimeout``, ``BufferClosed``, or its backend);
- a release wakes exactly the oldest waiters (FIFO; a requeued ticket keeps its place by
  arrival, ahead of later ones), even when the same step moves the clock past their deadline
  or cancels one of them just before the release;
- the depth is the number of waiting tickets, and ``on_change`` reports every change of it;
- ``on_result`` counts each ending (and each refusal) once.

Each example runs in its own ``trio.run`` on a ``MockClock`` that moves only when a step
jumps it; tasks settle through ``wait_all_tasks_blocked`` after every step.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from itertools import pairwise

import trio
import trio.testing
from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.scaling.buffer import (
    NO_AVAILABLE_BACKEND,
    SHUTTING_DOWN,
    BufferClosed,
    BufferFull,
    BufferResult,
    BufferTimeout,
    ScaleBuffer,
    Ticket,
)

TIMEOUT = 10.0


@dataclass(frozen=True)
class Enter:
    pass


@dataclass(frozen=True)
class Release:
    count: int | None
    jump: float  # the clock jumps this far in the same step, just before the release


@dataclass(frozen=True)
class Requeue:
    pick: int


@dataclass(frozen=True)
class RequeueAll:
    """Every holder requeues in one step (a health event woke them all and none found a
    backend); their tasks run in whatever order trio schedules them."""


@dataclass(frozen=True)
class Finish:
    pick: int


@dataclass(frozen=True)
class Cancel:
    pick: int
    then_release: bool  # a release(1) in the same step, before the cancelled task runs


@dataclass(frozen=True)
class Advance:
    seconds: float


@dataclass(frozen=True)
class Close:
    reason: str


Step = Enter | Release | Requeue | RequeueAll | Finish | Cancel | Advance | Close

#: Time mostly stands still within a release (a jump there races the deadlines); a step of
#: its own moves it by a part of the timeout or all of it.
releases = st.builds(
    Release, st.sampled_from([None, 0, 1, 1, 2, 3]), st.sampled_from([0.0] * 5 + [TIMEOUT])
)
seconds = st.sampled_from([0.5, 2.5, 5.0, TIMEOUT])
picks = st.integers(0, 20)
#: Each kind of step, and how often it is drawn: arrivals and releases often. (``one_of``
#: would not weight by repetition: equal strategies count once.)
kinds: dict[str, st.SearchStrategy[Step]] = {
    "enter": st.just(Enter()),
    "release": releases,
    "requeue": st.builds(Requeue, picks),
    "requeue all": st.just(RequeueAll()),
    "finish": st.builds(Finish, picks),
    "cancel": st.builds(Cancel, picks, st.booleans()),
    "advance": st.builds(Advance, seconds),
}
weights = {"enter": 4, "release": 3, "requeue": 1, "requeue all": 2, "finish": 1, "cancel": 1}
steps = st.lists(
    st.sampled_from([kind for kind in kinds for _ in range(weights.get(kind, 1))]).flatmap(
        kinds.__getitem__
    ),
    min_size=8,
    max_size=30,
)
closes = st.none() | st.tuples(
    st.integers(0, 30), st.sampled_from([SHUTTING_DOWN, NO_AVAILABLE_BACKEND])
)


@dataclass
class Model:
    """What the buffer should hold: waiting tickets by arrival, released ones whose request
    holds its backend (``holding``), and how each ended."""

    size: int
    now: float
    waiting: list[int] = field(default_factory=list)
    holding: set[int] = field(default_factory=set)
    deadlines: dict[int, float] = field(default_factory=dict)
    ended: dict[int, BufferResult] = field(default_factory=dict)
    refused: Counter[BufferResult] = field(default_factory=Counter)
    closed: str | None = None

    def enter(self, ident: int) -> None:
        if self.closed is not None:
            self.refused[BufferResult.SHUTDOWN] += 1
        elif len(self.waiting) >= self.size:
            self.refused[BufferResult.OVERFLOW] += 1
        else:
            self.waiting.append(ident)
            self.deadlines[ident] = self.now + TIMEOUT

    def release(self, count: int | None) -> set[int]:
        wake = len(self.waiting) if count is None else max(0, min(count, len(self.waiting)))
        woken, self.waiting = self.waiting[:wake], self.waiting[wake:]
        self.holding.update(woken)
        return set(woken)

    def expire(self) -> None:
        for ident in [each for each in self.waiting if self.deadlines[each] <= self.now]:
            self.waiting.remove(ident)
            self.ended[ident] = BufferResult.TIMEOUT

    def requeue(self, ident: int) -> None:
        self.holding.remove(ident)
        if self.closed is not None:
            self.ended[ident] = BufferResult.SHUTDOWN
        elif self.deadlines[ident] <= self.now:
            self.ended[ident] = BufferResult.TIMEOUT
        else:
            bisect.insort(self.waiting, ident)

    def leave(self, ident: int) -> None:
        if ident in self.holding:
            self.holding.remove(ident)
            self.ended[ident] = BufferResult.RELEASED
        else:
            self.waiting.remove(ident)
            self.ended[ident] = BufferResult.CANCELLED

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            for ident in self.waiting:
                self.ended[ident] = BufferResult.SHUTDOWN
            self.waiting = []


class Harness:
    """The real buffer, one task per request, and what the requests saw."""

    def __init__(self, nursery: trio.Nursery, clock: trio.testing.MockClock, size: int) -> None:
        self.nursery = nursery
        self.clock = clock
        self.results: Counter[BufferResult] = Counter()
        self.depths: list[int] = []
        self.buffer = ScaleBuffer(
            size=size, timeout=TIMEOUT, on_result=self.count, on_change=self.depths.append
        )
        self.tickets: dict[int, Ticket] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.orders: dict[int, trio.MemorySendChannel[str]] = {}
        self.seen: dict[int, str] = {}
        self.woken: list[int] = []
        self.entered = 0

    def count(self, result: BufferResult) -> None:
        self.results[result] += 1

    def start(self) -> int:
        """Start the next request's task; its identity (arrival number)."""
        ident = self.entered
        self.entered += 1
        self.nursery.start_soon(self.request, ident)
        return ident

    async def request(self, ident: int) -> None:
        send, receive = trio.open_memory_channel[str](1)
        self.orders[ident] = send
        with trio.CancelScope() as self.scopes[ident]:
            try:
                ticket = self.buffer.ticket()
                self.tickets[ident] = ticket
                async with ticket:
                    await self.serve(ident, ticket, receive)
                self.seen[ident] = "served"
            except BufferFull:
                self.seen[ident] = "full"
            except BufferTimeout:
                self.seen[ident] = "timeout"
            except BufferClosed as closed:
                self.seen[ident] = f"closed: {closed.reason}"
            except trio.Cancelled:
                self.seen[ident] = "cancelled"
                raise

    async def serve(
        self, ident: int, ticket: Ticket, orders: trio.MemoryReceiveChannel[str]
    ) -> None:
        while True:
            await ticket.wait()
            self.woken.append(ident)
            if await orders.receive() == "done":
                return
            ticket.requeue()


SEEN: dict[BufferResult, tuple[str, ...]] = {
    BufferResult.RELEASED: ("served", "cancelled"),
    BufferResult.TIMEOUT: ("timeout",),
    BufferResult.CANCELLED: ("cancelled",),
}


def check(model: Model, harness: Harness) -> None:
    buffer = harness.buffer
    assert buffer.depth == len(model.waiting)
    assert (harness.depths[-1] if harness.depths else 0) == buffer.depth
    assert all(a != b for a, b in pairwise(harness.depths))
    for ident, ticket in harness.tickets.items():
        assert ticket.result is model.ended.get(ident)
        assert ticket.waiting == (ident in model.waiting)
        result = model.ended.get(ident)
        if result is BufferResult.SHUTDOWN:
            assert harness.seen.get(ident) == f"closed: {model.closed}"
        elif result is not None:
            assert harness.seen.get(ident) in SEEN[result]
    assert harness.results == Counter(model.ended.values()) + model.refused


def pick(candidates: set[int] | list[int], index: int) -> int | None:
    ordered = sorted(candidates)
    return ordered[index % len(ordered)] if ordered else None


async def apply(step: Step, model: Model, harness: Harness) -> set[int]:
    """Run ``step`` on both; the tickets the step should wake."""
    match step:
        case Enter():
            ident = harness.start()
            model.enter(ident)
        case Release(count, jump):
            harness.clock.jump(jump)
            model.now += jump
            harness.buffer.release(count)
            woken = model.release(count)
            model.expire()
            return woken
        case Requeue(index) | Finish(index):
            holder = pick(model.holding, index)
            if holder is not None:
                if isinstance(step, Requeue):
                    model.requeue(holder)
                else:
                    model.leave(holder)
                harness.orders[holder].send_nowait(
                    "requeue" if isinstance(step, Requeue) else "done"
                )
        case RequeueAll():
            for holder in sorted(model.holding):
                model.requeue(holder)
                harness.orders[holder].send_nowait("requeue")
        case Cancel(index, then_release):
            target = pick(model.holding | set(model.waiting), index)
            if target is not None:
                harness.scopes[target].cancel()
                model.leave(target)
            if then_release:
                harness.buffer.release(1)
                return model.release(1)
        case Advance(jump):
            harness.clock.jump(jump)
            model.now += jump
            model.expire()
        case Close(reason):
            harness.buffer.close(reason)
            model.close(reason)
    return set()


async def scenario(size: int, script: list[Step], clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        harness = Harness(nursery, clock, size)
        model = Model(size=size, now=trio.current_time())
        for step in script:
            before = len(harness.woken)
            expected = await apply(step, model, harness)
            await trio.testing.wait_all_tasks_blocked()
            assert set(harness.woken[before:]) == expected
            assert len(harness.woken) - before == len(expected)
            check(model, harness)
        # Wind down: every ticket still alive ends (waiters shut down, holders done).
        await apply(Close(SHUTTING_DOWN), model, harness)
        for ident in sorted(model.holding):
            model.leave(ident)
            harness.orders[ident].send_nowait("done")
        await trio.testing.wait_all_tasks_blocked()
        check(model, harness)
        assert set(model.ended) == set(harness.tickets)
        assert sum(harness.results.values()) == sum(isinstance(s, Enter) for s in script)


@given(size=st.integers(1, 5), script=steps, close=closes)
# Two released waiters requeued youngest last: the older one is woken first.
@example(
    size=5,
    script=[Enter(), Enter(), Enter(), Release(2, 0.0), Requeue(0), Requeue(0), Release(1, 0.0)],
    close=None,
)
# The head waiter is cancelled and released in the same step: its release goes to the next.
@example(size=5, script=[Enter(), Enter(), Cancel(0, then_release=True)], close=None)
# A release in the step that passes the deadline: released, the other waiter times out.
@example(size=5, script=[Enter(), Enter(), Release(1, 10.0), Requeue(0)], close=(3, SHUTTING_DOWN))
def test_every_ticket_ends_once_and_releases_are_fifo(
    size: int, script: list[Step], close: tuple[int, str] | None
) -> None:
    if close is not None:
        at, reason = close
        script = [*script[:at], Close(reason), *script[at:]]
    clock = trio.testing.MockClock()

    async def main() -> None:
        await scenario(size, script, clock)

    trio.run(main, clock=clock)
