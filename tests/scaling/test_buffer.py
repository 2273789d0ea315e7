"""The scale-from-zero request buffer (SPEC §11.5): FIFO release, requeue to the head, the
timeout at exactly ``buffer_timeout_secs``, overflow, close, cancellation, the races between a
release and a deadline or a cancellation, and the depth reported on every change.

Time is trio's ``autojump_clock``; tasks are synchronised with ``wait_all_tasks_blocked``.
"""

from __future__ import annotations

from collections import Counter

import pytest
import trio
import trio.testing

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

TIMEOUT = 30.0


class Watched:
    """A buffer with its results and depth reports recorded."""

    def __init__(self, size: int = 100, timeout: float = TIMEOUT) -> None:
        self.results: Counter[BufferResult] = Counter()
        self.depths: list[int] = []
        self.buffer = ScaleBuffer(
            size=size, timeout=timeout, on_result=self.count, on_change=self.depths.append
        )
        self.woken: list[str] = []
        self.outcomes: dict[str, str] = {}

    def count(self, result: BufferResult) -> None:
        self.results[result] += 1

    async def request(self, name: str, *, requeues: int = 0) -> None:
        """One request: waits, requeues ``requeues`` times, then takes its backend."""
        try:
            async with self.buffer.ticket() as ticket:
                while True:
                    await ticket.wait()
                    self.woken.append(name)
                    if requeues == 0:
                        break
                    requeues -= 1
                    ticket.requeue()
            self.outcomes[name] = "released"
        except BufferTimeout:
            self.outcomes[name] = f"timeout at {trio.current_time()}"
        except BufferClosed as closed:
            self.outcomes[name] = f"closed: {closed.reason}"
        except BufferFull:
            self.outcomes[name] = "full"


async def test_release_wakes_waiters_in_fifo_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    watched = Watched()
    for name in "abcd":
        nursery.start_soon(watched.request, name)
        await trio.testing.wait_all_tasks_blocked()
    assert watched.buffer.depth == 4
    watched.buffer.release(1)
    await trio.testing.wait_all_tasks_blocked()
    assert watched.woken == ["a"]
    watched.buffer.release(2)
    await trio.testing.wait_all_tasks_blocked()
    assert sorted(watched.woken[1:]) == ["b", "c"]
    assert watched.buffer.depth == 1
    watched.buffer.release()
    await trio.testing.wait_all_tasks_blocked()
    assert watched.outcomes == dict.fromkeys("abcd", "released")
    assert watched.results == Counter({BufferResult.RELEASED: 4})
    assert watched.depths == [1, 2, 3, 4, 3, 1, 0]


async def test_a_requeued_waiter_goes_back_to_the_head(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    watched = Watched()
    nursery.start_soon(lambda: watched.request("a", requeues=1))
    await trio.testing.wait_all_tasks_blocked()
    for name in "bc":
        nursery.start_soon(watched.request, name)
        await trio.testing.wait_all_tasks_blocked()
    watched.buffer.release(1)
    await trio.testing.wait_all_tasks_blocked()
    assert watched.woken == ["a"]
    assert watched.buffer.depth == 3  # a requeued, ahead of b and c
    watched.buffer.release(1)
    await trio.testing.wait_all_tasks_blocked()
    assert watched.woken == ["a", "a"]
    assert watched.outcomes == {"a": "released"}
    assert watched.results == Counter({BufferResult.RELEASED: 1})


async def test_waiters_released_together_requeue_in_arrival_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = ScaleBuffer(size=10, timeout=TIMEOUT)
    tickets = [buffer.ticket() for _ in range(4)]
    buffer.release(3)
    for ticket in tickets[:3]:
        await ticket.wait()
    for ticket in (tickets[2], tickets[0], tickets[1]):
        ticket.requeue()
    assert [ticket.waiting for ticket in tickets] == [True] * 4
    released: list[Ticket] = []
    for _ in range(4):
        buffer.release(1)
        released.extend(t for t in tickets if not t.waiting and t not in released)
    assert released == tickets
    for ticket in tickets:
        async with ticket:
            await ticket.wait()


async def test_the_timeout_fires_at_exactly_buffer_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    watched = Watched(timeout=12.5)
    start = trio.current_time()
    nursery.start_soon(watched.request, "a")
    await trio.sleep(12.5 - 0.001)
    assert watched.outcomes == {}
    assert watched.buffer.depth == 1
    await trio.sleep(0.002)
    assert watched.outcomes == {"a": f"timeout at {start + 12.5}"}
    assert watched.buffer.depth == 0
    assert watched.results == Counter({BufferResult.TIMEOUT: 1})
    assert watched.depths == [1, 0]


async def test_a_requeue_keeps_the_original_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = ScaleBuffer(size=10, timeout=TIMEOUT)
    start = trio.current_time()
    async with buffer.ticket() as ticket:
        assert ticket.deadline == start + TIMEOUT
        await trio.sleep(20)
        buffer.release()
        await ticket.wait()
        ticket.requeue()
        with pytest.raises(BufferTimeout):
            await ticket.wait()
        assert trio.current_time() == start + TIMEOUT
        with pytest.raises(BufferTimeout):  # asking again changes nothing
            await ticket.wait()
    assert ticket.result is BufferResult.TIMEOUT


async def test_a_requeue_after_the_deadline_times_out_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: list[BufferResult] = []
    buffer = ScaleBuffer(size=10, timeout=1.0, on_result=results.append)
    async with buffer.ticket() as ticket:
        buffer.release()
        await trio.sleep(5)
        await ticket.wait()
        ticket.requeue()
        now = trio.current_time()
        with pytest.raises(BufferTimeout):
            await ticket.wait()
        assert trio.current_time() == now
    assert results == [BufferResult.TIMEOUT]
    assert buffer.depth == 0


async def test_a_release_at_the_deadline_wins(autojump_clock: trio.testing.MockClock) -> None:
    results: list[BufferResult] = []
    buffer = ScaleBuffer(size=10, timeout=1.0, on_result=results.append)
    async with buffer.ticket() as ticket:
        autojump_clock.jump(5)
        buffer.release()
        await ticket.wait()
    assert results == [BufferResult.RELEASED]


async def test_overflow_raises_buffer_full(autojump_clock: trio.testing.MockClock) -> None:
    watched = Watched(size=2)
    first, second = watched.buffer.ticket(), watched.buffer.ticket()
    with pytest.raises(BufferFull):
        watched.buffer.ticket()
    assert watched.results == Counter({BufferResult.OVERFLOW: 1})
    assert watched.buffer.depth == 2
    watched.buffer.release(1)
    third = watched.buffer.ticket()  # a released ticket no longer takes a place
    for ticket in (first, second, third):
        async with ticket:
            pass
    assert watched.results == Counter({BufferResult.OVERFLOW: 1, BufferResult.CANCELLED: 3})


async def test_close_ends_every_waiter_and_refuses_later_tickets(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    watched = Watched()
    for name in "abc":
        nursery.start_soon(watched.request, name)
    await trio.testing.wait_all_tasks_blocked()
    watched.buffer.close(NO_AVAILABLE_BACKEND)
    watched.buffer.close(SHUTTING_DOWN)  # the first reason stays
    await trio.testing.wait_all_tasks_blocked()
    assert watched.outcomes == dict.fromkeys("abc", "closed: no available backend")
    assert watched.buffer.closed == NO_AVAILABLE_BACKEND
    with pytest.raises(BufferClosed) as refused:
        watched.buffer.ticket()
    assert refused.value.reason == NO_AVAILABLE_BACKEND
    assert watched.results == Counter({BufferResult.SHUTDOWN: 4})
    assert watched.depths == [1, 2, 3, 0]


async def test_a_released_ticket_that_requeues_after_close_is_shut_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: list[BufferResult] = []
    buffer = ScaleBuffer(size=10, timeout=TIMEOUT, on_result=results.append)
    async with buffer.ticket() as ticket:
        buffer.release()
        await ticket.wait()
        buffer.close(SHUTTING_DOWN)
        assert results == []  # a released ticket keeps its backend
        ticket.requeue()
        with pytest.raises(BufferClosed, match="shutting down"):
            await ticket.wait()
    assert results == [BufferResult.SHUTDOWN]
    assert buffer.depth == 0


async def test_cancellation_removes_the_waiter(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    watched = Watched()
    scopes: dict[str, trio.CancelScope] = {}

    async def cancellable(name: str) -> None:
        with trio.CancelScope() as scopes[name]:
            await watched.request(name)

    for name in "abc":
        nursery.start_soon(cancellable, name)
        await trio.testing.wait_all_tasks_blocked()
    scopes["a"].cancel()
    await trio.testing.wait_all_tasks_blocked()
    assert watched.buffer.depth == 2
    assert watched.results == Counter({BufferResult.CANCELLED: 1})
    watched.buffer.release(1)
    await trio.testing.wait_all_tasks_blocked()
    assert watched.woken == ["b"]
    assert watched.depths == [1, 2, 3, 2, 1]


async def test_a_release_that_races_a_cancellation_passes_to_the_next_waiter(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    watched = Watched()
    scopes: dict[str, trio.CancelScope] = {}

    async def cancellable(name: str) -> None:
        with trio.CancelScope() as scopes[name]:
            await watched.request(name)

    for name in "abc":
        nursery.start_soon(cancellable, name)
        await trio.testing.wait_all_tasks_blocked()
    scopes["a"].cancel()  # a's task is woken with Cancelled but has not run yet ...
    watched.buffer.release(1)  # ... when the release reaches it
    await trio.testing.wait_all_tasks_blocked()
    assert watched.woken == ["b"]
    assert watched.outcomes == {"b": "released"}
    assert watched.results == Counter({BufferResult.CANCELLED: 1, BufferResult.RELEASED: 1})
    assert watched.buffer.depth == 1


async def test_leaving_without_waiting_is_cancelled_and_counts_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    results: list[BufferResult] = []
    buffer = ScaleBuffer(size=10, timeout=TIMEOUT, on_result=results.append)
    ticket = buffer.ticket()
    with pytest.raises(KeyError):
        async with ticket:
            raise KeyError("boom")
    assert ticket.result is BufferResult.CANCELLED
    async with ticket:  # leaving again changes nothing
        pass
    assert results == [BufferResult.CANCELLED]
    with pytest.raises(RuntimeError, match="left the buffer"):
        await ticket.wait()


async def test_a_ticket_released_before_it_waits_returns_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = ScaleBuffer(size=10, timeout=TIMEOUT)
    async with buffer.ticket() as ticket:
        buffer.release()
        now = trio.current_time()
        await ticket.wait()
        await ticket.wait()
        assert trio.current_time() == now
    assert ticket.result is BufferResult.RELEASED


async def test_only_a_released_ticket_can_be_requeued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    buffer = ScaleBuffer(size=10, timeout=TIMEOUT)
    async with buffer.ticket() as ticket:
        with pytest.raises(RuntimeError, match="only a released ticket"):
            ticket.requeue()
    with pytest.raises(RuntimeError, match="only a released ticket"):
        ticket.requeue()


async def test_release_counts_are_bounded_by_the_queue(
    autojump_clock: trio.testing.MockClock,
) -> None:
    depths: list[int] = []
    buffer = ScaleBuffer(size=10, timeout=TIMEOUT, on_change=depths.append)
    buffer.release()
    buffer.release(3)
    tickets = [buffer.ticket() for _ in range(3)]
    buffer.release(0)
    buffer.release(-1)
    assert buffer.depth == 3
    buffer.release(10)
    assert buffer.depth == 0
    assert depths == [1, 2, 3, 0]
    for ticket in tickets:
        async with ticket:
            await ticket.wait()
        assert ticket.result is BufferResult.RELEASED


async def test_defaults_count_nothing(autojump_clock: trio.testing.MockClock) -> None:
    buffer = ScaleBuffer(size=1, timeout=1.0)
    async with buffer.ticket() as ticket:
        with pytest.raises(BufferFull):
            buffer.ticket()
        with pytest.raises(BufferTimeout):
            await ticket.wait()
    buffer.close(SHUTTING_DOWN)
    with pytest.raises(BufferClosed):
        buffer.ticket()
