"""The writer's queue (SPEC §5.13, §14.1): FIFO across lanes, bounded per lane and in bytes,
waiting puts, closed lanes."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from a3s_gateway.wsmux.outbox import Lane, Outbox


def test_bounds_per_lane_and_in_bytes() -> None:
    box: Outbox[str] = Outbox(per_lane=2, total_bytes=10)
    a, b = Lane(), Lane()
    assert box.put_nowait(a, "a1", 3)
    assert box.put_nowait(a, "a2", 3)
    assert not box.put_nowait(a, "a3", 1)  # two per lane
    assert box.put_nowait(b, "b1", 4)  # 10 bytes: full
    assert not box.put_nowait(b, "b2", 1)
    assert box.put_nowait(b, "forced", 1, force=True)
    assert (len(box), box.queued_bytes) == (4, 11)


def test_an_oversized_item_is_taken_into_an_empty_queue() -> None:
    box: Outbox[str] = Outbox(per_lane=2, total_bytes=10)
    lane = Lane()
    assert box.put_nowait(lane, "big", 50)
    assert not box.put_nowait(Lane(), "small", 1)


def test_no_empty_outbox() -> None:
    with pytest.raises(ValueError, match="room"):
        Outbox[str](per_lane=0, total_bytes=1)


async def test_fifo_across_lanes_and_closing_a_lane_drops_its_items() -> None:
    box: Outbox[str] = Outbox(per_lane=10, total_bytes=100)
    a, b = Lane(), Lane()
    for item, lane in [("a1", a), ("b1", b), ("a2", a), ("b2", b)]:
        await box.put(lane, item, 1)
    assert box.close_lane(a) == 2
    assert box.close_lane(a) == 0
    assert box.put_nowait(a, "a3", 1)  # dropped: the lane is closed
    await box.put(a, "a4", 1)
    assert [await box.get(), await box.get()] == ["b1", "b2"]
    assert (len(box), box.queued_bytes, b.queued, b.size) == (0, 0, 0, 0)


async def test_put_waits_for_room_and_get_waits_for_items(nursery: trio.Nursery) -> None:
    box: Outbox[int] = Outbox(per_lane=1, total_bytes=100)
    lane = Lane()
    done: list[int] = []

    async def producer() -> None:
        for item in range(3):
            await box.put(lane, item, 1)
            done.append(item)

    nursery.start_soon(producer)
    await trio.testing.wait_all_tasks_blocked()
    assert done == [0]  # the second put waits: one per lane
    assert [await box.get() for _ in range(3)] == [0, 1, 2]
    await trio.testing.wait_all_tasks_blocked()
    assert done == [0, 1, 2]

    async def consumer() -> None:
        done.append(await box.get())

    nursery.start_soon(consumer)
    await trio.testing.wait_all_tasks_blocked()
    box.put_nowait(lane, 9, 1)
    await trio.testing.wait_all_tasks_blocked()
    assert done[-1] == 9


async def test_closing_a_lane_releases_a_waiting_put(nursery: trio.Nursery) -> None:
    box: Outbox[int] = Outbox(per_lane=1, total_bytes=100)
    lane = Lane()
    box.put_nowait(lane, 0, 1)
    finished = trio.Event()

    async def producer() -> None:
        await box.put(lane, 1, 1)
        finished.set()

    nursery.start_soon(producer)
    await trio.testing.wait_all_tasks_blocked()
    assert not finished.is_set()
    box.close_lane(lane)
    await finished.wait()
    assert len(box) == 0


async def test_a_cancelled_put_queues_nothing() -> None:
    box: Outbox[int] = Outbox(per_lane=1, total_bytes=100)
    lane = Lane()
    box.put_nowait(lane, 0, 1)
    with trio.CancelScope() as scope:
        scope.cancel()
        await box.put(Lane(), 1, 1)
    assert len(box) == 1
