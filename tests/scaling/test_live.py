"""The per-process side of scaled and split services (SPEC §11.2, §11.5, §11.8, §10.2):
``LiveService``, ``attach`` across reloads (the live state and the split kept when their blocks
are unchanged, the old buffer closed when not), ``close_all`` on a drain, and
``ProcessScaling``, the single process's feed and a worker's ``report``/``apply_split``.

Compiled runtimes from HCL text; trio's autojump clock; waiters are real buffer tickets in
their own tasks, synchronised with ``wait_all_tasks_blocked``.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from a3s_gateway.config.load import load_text
from a3s_gateway.config.urls import ServerUrl
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.scaling.buffer import BufferClosed
from a3s_gateway.scaling.concurrency import Averages
from a3s_gateway.scaling.host import ProcessScaling
from a3s_gateway.scaling.live import BufferCounts, LiveService, attach, close_all
from a3s_gateway.scaling.revisions import RevisionSplit
from a3s_gateway.scaling.service import ServiceScale
from a3s_gateway.server.generation import carry_in_flight
from a3s_gateway.services import Backend

SCALING = """
  scaling {
    executor              = "mock"
    container_concurrency = 10
    min_replicas          = 1
    buffer_enabled        = true
    buffer_size           = 5
    buffer_timeout_secs   = 30
    stable_window         = "6s"
%s  }
"""

REVISIONS = """
  revisions = [
    { name = "v1", traffic_percent = %d, servers = [{ url = "http://127.0.0.1:2" }] },
    { name = "v2", traffic_percent = %d, servers = [{ url = "http://127.0.0.1:3" }] },
  ]
  rollout {
    from               = "v1"
    to                 = "v2"
    step_percent       = %d
    step_interval_secs = 3600
  }
"""


def runtime(
    *,
    scaling: str | None = "",
    percents: tuple[int, int] | None = (80, 20),
    step: int = 10,
    service: str = "api",
    generation: int = 1,
) -> RuntimeConfig:
    """Service ``service`` (routed to): a health-checked backend, a ``scaling`` block with
    ``scaling`` added (None: no block) and revisions v1, v2 at ``percents`` with a rollout of
    ``step`` percent (None: neither)."""
    body = (
        "  load_balancer {\n"
        '    servers = [{ url = "http://127.0.0.1:1" }]\n'
        '    health_check { path = "/health" }\n'
        "  }\n"
    )
    if scaling is not None:
        body += SCALING % scaling
    if percents is not None:
        body += REVISIONS % (*percents, step)
    text = (
        'entrypoints "web" { address = "127.0.0.1:0" }\n'
        f'routers "r" {{\n  rule    = "PathPrefix(`/`)"\n  service = "{service}"\n}}\n'
        f'services "{service}" {{\n{body}}}\n'
    )
    result = load_text(text)
    assert result.config is not None, result.problems
    return compile_runtime(result.config, generation)


def scale_of(runtime: RuntimeConfig, name: str = "api") -> ServiceScale:
    scale = runtime.services[name].scale
    assert scale is not None
    return scale


def split_of(runtime: RuntimeConfig) -> RevisionSplit:
    split = scale_of(runtime).split
    assert split is not None
    return split


def live_of(runtime: RuntimeConfig, name: str = "api") -> LiveService:
    live = scale_of(runtime, name).live
    assert live is not None
    return live


class Waiters:
    """Requests waiting in a live service's buffer, each in its own task: how each ended
    (``released``, or the ``BufferClosed`` reason)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self.ended: list[str] = []

    def add(self, live: LiveService, count: int = 1) -> None:
        for _ in range(count):
            self._nursery.start_soon(self._wait, live)

    async def _wait(self, live: LiveService) -> None:
        buffer = live.buffer
        assert buffer is not None
        try:
            async with buffer.ticket() as ticket:
                await ticket.wait()
                self.ended.append("released")
        except BufferClosed as closed:
            self.ended.append(closed.reason)


class Pokes:
    def __init__(self) -> None:
        self.services: list[str] = []

    def __call__(self, service: str) -> None:
        self.services.append(service)


# -- attach -----------------------------------------------------------------------------------


async def test_an_unchanged_scaling_block_keeps_the_live_state_with_its_waiters() -> None:
    counts = BufferCounts()
    pokes = Pokes()
    first = runtime()
    attach(first, None, poke=pokes, counts=counts)
    live = live_of(first)
    async with trio.open_nursery() as nursery:
        waiters = Waiters(nursery)
        waiters.add(live, 2)
        await trio.testing.wait_all_tasks_blocked()
        live.enter()
        second = runtime(generation=2)
        attach(second, first, poke=pokes, counts=counts)
        assert live_of(second) is live
        assert counts.depths == {"api": 2}
        await trio.testing.wait_all_tasks_blocked()
        assert waiters.ended == []  # still waiting, in the same queue
        live_of(second).ready()  # a backend of the new generation became available
    assert waiters.ended == ["released", "released"]
    assert counts.results == {("api", "released"): 2}
    assert counts.depths == {"api": 0}
    recorder = live.recorder
    assert recorder is not None
    assert recorder.level == 1  # the request that entered before the reload still counts


async def test_unchanged_revisions_and_rollout_keep_the_live_split() -> None:
    counts = BufferCounts()
    first = runtime()
    attach(first, None, poke=Pokes(), counts=counts)
    split = split_of(first)
    split.set_percents((50, 50))  # a rollout stepped
    second = runtime(generation=2)
    attach(second, first, poke=Pokes(), counts=counts)
    assert scale_of(second).split is split
    assert split.percents == (50, 50)

    third = runtime(percents=(70, 30), generation=3)  # the revisions changed
    attach(third, second, poke=Pokes(), counts=counts)
    assert scale_of(third).split is not split
    assert split_of(third).percents == (70, 30)
    assert live_of(third) is live_of(first)  # the scaling block did not change

    fourth = runtime(percents=(70, 30), step=20, generation=4)  # the rollout changed
    attach(fourth, third, poke=Pokes(), counts=counts)
    assert scale_of(fourth).split is not scale_of(third).split
    assert live_of(fourth) is live_of(first)


async def test_a_changed_scaling_block_closes_the_old_buffer() -> None:
    counts = BufferCounts()
    first = runtime()
    attach(first, None, poke=Pokes(), counts=counts)
    old = live_of(first)
    async with trio.open_nursery() as nursery:
        waiters = Waiters(nursery)
        waiters.add(old, 3)
        await trio.testing.wait_all_tasks_blocked()
        second = runtime(scaling="    max_replicas = 6\n", generation=2)
        attach(second, first, poke=Pokes(), counts=counts)
    assert waiters.ended == ["no available backend"] * 3
    assert counts.results == {("api", "shutdown"): 3}
    new = live_of(second)
    assert new is not old
    assert new.buffer is not None
    assert new.buffer.closed is None
    assert new.scaling is not None
    assert new.scaling.max_replicas == 6
    assert old.buffer is not None
    with pytest.raises(BufferClosed, match="no available backend"):
        old.buffer.ticket()


async def test_a_removed_service_closes_its_buffer() -> None:
    counts = BufferCounts()
    first = runtime()
    attach(first, None, poke=Pokes(), counts=counts)
    async with trio.open_nursery() as nursery:
        waiters = Waiters(nursery)
        waiters.add(live_of(first))
        await trio.testing.wait_all_tasks_blocked()
        attach(runtime(service="other", generation=2), first, poke=Pokes(), counts=counts)
    assert waiters.ended == ["no available backend"]


async def test_a_service_without_scaling_keeps_nothing_to_close() -> None:
    counts = BufferCounts()
    first = runtime(scaling=None)
    attach(first, None, poke=Pokes(), counts=counts)
    live = live_of(first)
    assert (live.buffer, live.recorder) == (None, None)
    second = runtime(scaling="", generation=2)  # scaling added: a new live state
    attach(second, first, poke=Pokes(), counts=counts)
    assert live_of(second) is not live
    assert live_of(second).buffer is not None


async def test_close_all_answers_every_waiter_shutting_down() -> None:
    counts = BufferCounts()
    current = runtime()
    attach(current, None, poke=Pokes(), counts=counts)
    live = live_of(current)
    async with trio.open_nursery() as nursery:
        waiters = Waiters(nursery)
        waiters.add(live, 2)
        await trio.testing.wait_all_tasks_blocked()
        close_all(current, "shutting down")
    assert waiters.ended == ["shutting down"] * 2
    assert live.buffer is not None
    with pytest.raises(BufferClosed, match="shutting down"):
        live.buffer.ticket()
    close_all(None, "shutting down")  # before the first generation: nothing to do


# -- one live service -------------------------------------------------------------------------


async def test_a_live_service_counts_pokes_releases_and_samples(
    autojump_clock: trio.testing.MockClock,
) -> None:
    counts = BufferCounts()
    pokes = Pokes()
    current = runtime()
    attach(current, None, poke=pokes, counts=counts)
    live = live_of(current)
    assert live.averages() is None  # no complete bucket yet
    live.enter()
    live.enter()
    await trio.sleep(1.0)
    live.leave()
    await trio.sleep(1.0)
    assert live.averages() == Averages(stable=1.5, panic=1.0, buckets=2)

    live.activate()
    assert pokes.services == ["api"]

    async with trio.open_nursery() as nursery:
        waiters = Waiters(nursery)
        waiters.add(live, 3)
        await trio.testing.wait_all_tasks_blocked()
        live.capacity_freed()  # room for one: the oldest
        await trio.testing.wait_all_tasks_blocked()
        assert waiters.ended == ["released"]
        live.ready()  # a backend became available: all of them
    assert waiters.ended == ["released"] * 3

    live.record(error=False, latency=0.25)
    live.record(error=True, latency=None)
    sample = live.take_sample()
    assert (sample.requests, sample.errors, sample.samples) == (2, 1, [0.25])
    assert live.take_sample().requests == 0  # a new interval


async def test_a_split_only_service_neither_pokes_nor_buffers() -> None:
    pokes = Pokes()
    current = runtime(scaling=None)
    attach(current, None, poke=pokes, counts=BufferCounts())
    live = live_of(current)
    live.enter()
    live.activate()
    live.capacity_freed()
    live.ready()
    live.close("shutting down")
    assert pokes.services == []
    assert live.averages() is None


# -- ProcessScaling ---------------------------------------------------------------------------


class Holder:
    def __init__(self) -> None:
        self.runtime: RuntimeConfig | None = None

    def __call__(self) -> RuntimeConfig | None:
        return self.runtime


async def test_the_single_process_feed_reads_and_sets_its_own_live_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    holder = Holder()
    scaling = ProcessScaling(holder, control=True)
    assert await scaling.concurrency("api") is None  # nothing served yet
    holder.runtime = current = runtime()
    scaling.on_generation(current, None)
    control = scaling.control
    assert control is not None
    assert set(control.autoscalers) == {"api"}
    assert set(control.rollouts) == {"api"}
    live = live_of(current)
    live.enter()
    await trio.sleep(2.0)
    assert await scaling.concurrency("api") == Averages(stable=1.0, panic=1.0, buckets=2)
    assert await scaling.concurrency("missing") is None
    live.record(error=True, latency=0.1)
    sample = await scaling.rollout_sample("api")
    assert sample is not None
    assert (sample.requests, sample.errors) == (1, 1)
    scaling.publish("api", (40, 60))
    assert split_of(current).percents == (40, 60)


async def test_a_worker_reports_its_part_and_applies_the_supervisors_splits(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    holder = Holder()
    scaling = ProcessScaling(holder, control=False)
    assert scaling.control is None
    assert scaling.report() == {}
    pokes = Pokes()
    scaling.set_poke(pokes)
    holder.runtime = current = runtime()
    scaling.on_generation(current, None)
    live = live_of(current)
    live.activate()  # a request found no backend: the supervisor is told
    assert pokes.services == ["api"]

    live.enter()
    live.record(error=False, latency=0.5)
    await trio.sleep(1.0)
    report = scaling.report()
    assert list(report) == ["api"]
    averages, sample = report["api"]
    assert averages == Averages(stable=1.0, panic=1.0, buckets=1)
    assert sample is not None
    assert (sample.requests, sample.errors, sample.samples) == (1, 0, [0.5])
    again = scaling.report()["api"][1]
    assert again is not None
    assert again.requests == 0  # each report carries the traffic since the last one

    scaling.apply_split("api", [30, 70])
    assert split_of(current).percents == (30, 70)
    scaling.apply_split("missing", [30, 70])  # not served here: ignored
    with caplog.at_level(logging.WARNING, logger="a3s_gateway.scaling"):
        scaling.apply_split("api", [30, 60])  # not a split: logged, not applied
    assert split_of(current).percents == (30, 70)
    assert "split for service api not applied" in caplog.text


async def test_a_worker_without_a_rollout_reports_no_sample(
    autojump_clock: trio.testing.MockClock,
) -> None:
    holder = Holder()
    scaling = ProcessScaling(holder, control=False)
    holder.runtime = current = runtime(percents=None)
    scaling.on_generation(current, None)
    assert scaling.report() == {"api": (None, None)}


async def test_a_drain_answers_the_waiters_shutting_down() -> None:
    holder = Holder()
    scaling = ProcessScaling(holder, control=False)
    holder.runtime = current = runtime()
    scaling.on_generation(current, None)
    async with trio.open_nursery() as nursery:
        waiters = Waiters(nursery)
        waiters.add(live_of(current))
        await trio.testing.wait_all_tasks_blocked()
        assert scaling.counts.depths == {"api": 1}
        scaling.drain()
    assert waiters.ended == ["shutting down"]
    assert scaling.counts.results == {("api", "shutdown"): 1}


def test_in_flight_carries_over_a_reload_both_ways() -> None:
    """SPEC §10.2: in-flight is kept per (service, URL): the new generation's backend starts
    with the old one's count, and a request still running on the old one keeps counting in
    the new one until it ends (the limiter and least-loaded choices see it)."""
    url = ServerUrl("http://127.0.0.1:9001")
    old = Backend(url)
    running = old.lease()
    new = Backend(url)
    carry_in_flight([old], [new])
    assert new.in_flight == 1
    late = old.lease()  # a request of the old generation after the carry (before the swap)
    assert (old.in_flight, new.in_flight) == (2, 2)
    fresh = new.lease()
    assert (old.in_flight, new.in_flight) == (2, 3)
    running.release()
    late.release()
    fresh.release()
    assert (old.in_flight, new.in_flight) == (0, 0)
    newest = Backend(url)
    carry_in_flight([new], [newest])
    again = old.lease()  # three generations: counted in all of them
    assert newest.in_flight == 1
    again.release()
    assert newest.in_flight == 0
