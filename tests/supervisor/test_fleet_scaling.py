"""Scaling with ``--workers N`` (SPEC §11.1, §11.2, §11.8, §13.4): the supervisor's
``FleetScaling`` (the workers' concurrency summed from their ``scaling`` replies, their rollout
samples merged, splits set on its own generation and pushed to every worker), the ``Splits``
each worker's feeder sends after its generation and health, a worker's ``Activate`` reaching
the autoscalers, and the worker's side of the channel (``_scaling_reply``, ``_forward_pokes``).

The supervisor is the real ``Supervisor`` with fake workers (``Worker`` below) under the
autojump clock; the last two tests use a real pipe and the real clock.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
from dataclasses import dataclass
from functools import partial
from typing import cast

import trio
import trio.testing

from a3s_gateway.app import Gateway
from a3s_gateway.config.load import load_text
from a3s_gateway.config.schema import Config
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.scaling.concurrency import Averages
from a3s_gateway.scaling.executors import MockExecutor
from a3s_gateway.scaling.host import ProcessScaling
from a3s_gateway.supervisor.scaling import FleetScaling
from a3s_gateway.supervisor.worker_main import (
    Activate,
    Apply,
    Command,
    Health,
    Query,
    Ready,
    ScalingPart,
    ScalingReply,
    Splits,
    WorkerMessage,
    _forward_pokes,
    _Outbox,
    answer_query,
    decode_command,
    decode_message,
    encode_message,
)
from a3s_gateway.supervisor.workers import Fleet, Supervisor

URL = "http://127.0.0.1:2"

# -- configs ----------------------------------------------------------------------------------


def load(service: str) -> Config:
    text = (
        'entrypoints "web" { address = "127.0.0.1:0" }\n'
        'routers "r" {\n  rule    = "PathPrefix(`/`)"\n  service = "api"\n}\n'
        'services "api" {\n' + service + "}\n"
    )
    result = load_text(text)
    assert result.config is not None, result.problems
    return result.config


SCALED = """
  load_balancer { servers = [{ url = "http://127.0.0.1:1" }] }
  scaling {
    executor                   = "mock"
    container_concurrency      = 10
    target_utilization         = 1.0
    max_replicas               = 5
    stable_window              = "6s"
    tick_interval              = "2s"
    panic_threshold_percentage = 1000
  }
"""


def split_service(first: int, second: int, *, rollout: bool = True) -> str:
    block = (
        '  rollout {\n    from = "v1"\n    to = "v2"\n    step_percent = 50\n'
        "    step_interval_secs = 10\n    min_requests = 5\n  }\n"
    )
    return (
        "  revisions = [\n"
        f'    {{ name = "v1", traffic_percent = {first}, '
        'servers = [{ url = "http://127.0.0.1:1" }] },\n'
        f'    {{ name = "v2", traffic_percent = {second}, servers = [{{ url = "{URL}" }}] }},\n'
        "  ]\n" + (block if rollout else "")
    )


def split_of(runtime: RuntimeConfig) -> tuple[int, ...]:
    scale = runtime.services["api"].scale
    assert scale is not None
    assert scale.split is not None
    return scale.split.percents


# -- fake workers -----------------------------------------------------------------------------


class Worker:
    """A worker that reports ready, answers ``scaling`` queries with ``parts`` (None: stays
    silent), pushes what the test gives it, records every command it is sent, and exits when
    told to."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.parts: dict[str, ScalingPart] | None = {}
        self.sent: list[Command] = []
        self._inbox: list[WorkerMessage] = [Ready(pid=pid, addresses={})]
        self._changed = trio.Event()
        self._exited = trio.Event()

    def push(self, message: WorkerMessage) -> None:
        self._inbox.append(message)
        self._changed.set()

    def exit(self) -> None:
        self._exited.set()
        self._changed.set()

    def queries(self) -> int:
        return sum(isinstance(command, Query) for command in self.sent)

    def kinds(self) -> list[str]:
        """What it was sent besides queries: ``apply``, ``health``, ``splits``."""
        return [type(c).__name__.lower() for c in self.sent if not isinstance(c, Query)]

    def splits(self) -> list[dict[str, list[int]]]:
        return [command.splits for command in self.sent if isinstance(command, Splits)]

    async def receive(self) -> WorkerMessage | None:
        while True:
            if self._inbox:
                await trio.lowlevel.checkpoint()
                return self._inbox.pop(0)
            if self._exited.is_set():
                await trio.lowlevel.checkpoint()
                return None
            self._changed = trio.Event()
            await self._changed.wait()

    async def send(self, message: Command) -> None:
        await trio.lowlevel.checkpoint()
        if self._exited.is_set():
            raise BrokenPipeError(32, "Broken pipe")
        self.sent.append(message)
        if isinstance(message, Query) and message.kind == "scaling" and self.parts is not None:
            self.push(ScalingReply(message.id, dict(self.parts)))

    async def wait(self) -> int:
        await self._exited.wait()
        return 0

    def signal(self, signum: int) -> None:
        if signum in (signal.SIGTERM, signal.SIGKILL):
            self.exit()


class Spawner:
    def __init__(self) -> None:
        self.started: list[tuple[int, Worker]] = []

    def __call__(self, index: int) -> Worker:
        worker = Worker(1000 + len(self.started))
        self.started.append((index, worker))
        return worker

    def latest(self, index: int) -> Worker:
        return [worker for slot, worker in self.started if slot == index][-1]


@dataclass
class Running:
    supervisor: Supervisor
    spawn: Spawner
    signals: trio.MemorySendChannel[int]

    async def stop(self) -> None:
        await self.signals.send(signal.SIGTERM)


async def supervise(
    supervisor: Supervisor,
    scaling: FleetScaling | None,
    task_status: trio.TaskStatus[trio.MemorySendChannel[int]],
) -> None:
    send, receive = trio.open_memory_channel[int](4)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(supervisor.run, receive, scaling=scaling))
        task_status.started(send)


async def running(
    nursery: trio.Nursery,
    count: int,
    *,
    supervisor: Supervisor | None = None,
    spawn: Spawner | None = None,
    scaling: FleetScaling | None = None,
) -> Running:
    spawn = spawn or Spawner()
    supervisor = supervisor or Supervisor(count, spawn, drain_bound=10.0)
    signals = await nursery.start(supervise, supervisor, scaling)
    await trio.testing.wait_all_tasks_blocked()
    return Running(supervisor, spawn, signals)


def part(stable: float | None, panic: float | None, buckets: int, depth: int = 0) -> ScalingPart:
    return ScalingPart(stable=stable, panic=panic, buckets=buckets, depth=depth)


# -- FleetScaling as the control's feed ---------------------------------------------------------


async def test_the_concurrency_is_the_sum_of_the_workers_averages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runtime = compile_runtime(load(SCALED), 1)
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 2)
        first, second = fleet.spawn.latest(0), fleet.spawn.latest(1)
        first.parts = {"api": part(2.0, 3.0, 6, depth=1)}
        second.parts = {"api": part(1.5, 0.5, 4, depth=2), "other": part(None, None, 0)}
        scaling = FleetScaling(fleet.supervisor, lambda: runtime)

        assert await scaling.concurrency("api") == Averages(stable=3.5, panic=3.5, buckets=6)
        assert scaling.depths == {"api": 3, "other": 0}
        assert await scaling.concurrency("other") is None  # no complete bucket anywhere
        assert await scaling.concurrency("missing") is None
        assert (first.queries(), second.queries()) == (1, 1)  # asked once for all three

        await trio.sleep(1.0)
        second.parts = {"api": part(None, None, 0)}  # restarted: no bucket yet
        assert await scaling.concurrency("api") == Averages(stable=3.5, panic=3.5, buckets=6)
        assert (first.queries(), second.queries()) == (2, 2)
        await trio.sleep(3.0)  # its last averages are stale now: left out
        assert await scaling.concurrency("api") == Averages(stable=2.0, panic=3.0, buckets=6)
        await fleet.stop()


async def test_the_workers_rollout_samples_are_merged_until_the_rollout_takes_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runtime = compile_runtime(load(split_service(80, 20)), 1)
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 2)
        first, second = fleet.spawn.latest(0), fleet.spawn.latest(1)
        first.parts = {"api": ScalingPart(None, None, 0, 0, (10, 1, 2, [0.1, 0.2]))}
        second.parts = {"api": ScalingPart(None, None, 0, 0, (5, 2, 1, [0.3]))}
        scaling = FleetScaling(fleet.supervisor, lambda: runtime)

        assert await scaling.concurrency("api") is None  # a tick's query brings samples too
        sample = await scaling.rollout_sample("api")  # asks again at once: the newest traffic
        assert (first.queries(), second.queries()) == (2, 2)
        assert sample is not None
        assert (sample.requests, sample.errors, sample.seen) == (30, 6, 6)
        assert sorted(sample.samples) == [0.1, 0.1, 0.2, 0.2, 0.3, 0.3]

        first.parts = second.parts = {"api": part(None, None, 0)}
        assert await scaling.rollout_sample("api") is None  # taken: nothing new since
        await fleet.stop()


async def test_publish_sets_the_supervisors_split_and_every_worker_gets_it_after_its_health(
    autojump_clock: trio.testing.MockClock,
) -> None:
    runtime = compile_runtime(load(split_service(80, 20)), 1)
    spawn = Spawner()
    supervisor = Supervisor(2, spawn, drain_bound=10.0)
    supervisor.publish(Apply(1, b"config 1"))
    supervisor.health.replace({("api", URL): True})
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 2, supervisor=supervisor, spawn=spawn)
        assert [worker.kinds() for _, worker in spawn.started] == [["apply", "health"]] * 2
        scaling = FleetScaling(supervisor, lambda: runtime)

        scaling.publish("api", (50, 50))
        assert split_of(runtime) == (50, 50)
        assert supervisor.splits == {"api": [50, 50]}
        await trio.testing.wait_all_tasks_blocked()
        for _, worker in spawn.started:
            assert worker.kinds() == ["apply", "health", "splits"]
            assert worker.splits() == [{"api": [50, 50]}]

        scaling.publish("api", (0, 100))
        await trio.testing.wait_all_tasks_blocked()
        assert [worker.splits()[-1] for _, worker in spawn.started] == [{"api": [0, 100]}] * 2

        spawn.latest(0).exit()  # a worker started later: its generation, its health, the splits
        await trio.sleep(1.5)
        restarted = spawn.latest(0)
        assert restarted.kinds() == ["apply", "health", "splits"]
        assert restarted.splits() == [{"api": [0, 100]}]
        health = restarted.sent[1]
        assert isinstance(health, Health)
        assert health.full
        await fleet.stop()


async def test_no_splits_before_a_generation(autojump_clock: trio.testing.MockClock) -> None:
    spawn = Spawner()
    supervisor = Supervisor(1, spawn, drain_bound=10.0)
    supervisor.push_splits("api", [50, 50])
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 1, supervisor=supervisor, spawn=spawn)
        assert spawn.latest(0).kinds() == []  # a worker expects its config first
        supervisor.publish(Apply(1, b"config 1"))
        await trio.testing.wait_all_tasks_blocked()
        assert spawn.latest(0).kinds() == ["apply", "health", "splits"]
        await fleet.stop()


def test_the_scaling_messages_cross_the_channel_intact() -> None:
    reply = ScalingReply(7, {"api": ScalingPart(1.5, 2.5, 6, 3, (4, 1, 2, [0.25, 0.5]))})
    assert decode_message(encode_message(reply)) == reply
    assert decode_message(encode_message(Activate("api"))) == Activate("api")
    splits = Splits({"api": [30, 70]})
    assert decode_command(encode_message(splits)) == splits


# -- Activate ---------------------------------------------------------------------------------


async def test_an_activate_message_reaches_on_activate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    poked: list[str] = []
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 2)
        fleet.spawn.latest(1).push(Activate("api"))  # before anyone listens: dropped
        await trio.testing.wait_all_tasks_blocked()
        fleet.supervisor.on_activate = poked.append
        fleet.spawn.latest(0).push(Activate("api"))
        fleet.spawn.latest(1).push(Activate("other"))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(poked) == ["api", "other"]  # read by two slot tasks, in any order
        assert fleet.supervisor.ready() == (0, 1)  # not mistaken for anything else
        await fleet.stop()


async def test_a_workers_activate_scales_the_service_from_zero_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = load(SCALED)
    spawn = Spawner()
    supervisor = Supervisor(1, spawn, drain_bound=10.0)
    owner = Fleet(supervisor, config, compile_runtime(config, 1))
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 1, supervisor=supervisor, spawn=spawn, scaling=owner.scaling)
        worker = spawn.latest(0)
        worker.parts = {"api": part(None, None, 0)}  # no bucket yet: the ticks decide nothing
        executor = owner.scaling.control.autoscalers["api"].executor
        assert isinstance(executor, MockExecutor)
        await trio.sleep(0.5)
        assert executor.decisions == []
        worker.push(Activate("api"))
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == 0.5
        assert executor.decisions == [
            ("api", 1, "up: activation (a request is waiting) current=0 desired=1")
        ]
        await fleet.stop()


async def test_the_fleets_autoscaler_scales_on_the_summed_concurrency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = load(SCALED)
    spawn = Spawner()
    supervisor = Supervisor(2, spawn, drain_bound=10.0)
    owner = Fleet(supervisor, config, compile_runtime(config, 1))
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 2, supervisor=supervisor, spawn=spawn, scaling=owner.scaling)
        spawn.latest(0).parts = {"api": part(12.0, 12.0, 6)}
        spawn.latest(1).parts = {"api": part(13.0, 13.0, 6)}
        executor = owner.scaling.control.autoscalers["api"].executor
        assert isinstance(executor, MockExecutor)
        await trio.sleep(2.5)
        assert executor.decisions == [
            (
                "api",
                3,
                "up: stable=25.00 panic=25.00 target=10.00 ready=1 current=0 desired=3 "
                "panic_mode=false",
            )
        ]
        await fleet.stop()


async def test_a_rollout_removed_by_a_reload_is_not_pushed_to_workers_started_later(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A completed rollout left ``[0, 100]``; the reload removes the rollout and splits 50/50.
    A worker started afterwards must serve the new config's split, like the others."""
    spawn = Spawner()
    supervisor = Supervisor(1, spawn, drain_bound=10.0)
    supervisor.publish(Apply(1, b"config 1"))
    first = compile_runtime(load(split_service(80, 20)), 1)
    scaling = FleetScaling(supervisor, lambda: first)
    scaling.apply(first)
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 1, supervisor=supervisor, spawn=spawn)
        scaling.publish("api", (0, 100))  # as the completed rollout did
        second = compile_runtime(load(split_service(50, 50, rollout=False)), 2)
        scaling.apply(second)
        supervisor.publish(Apply(2, b"config 2"))
        await trio.testing.wait_all_tasks_blocked()
        spawn.latest(0).exit()
        await trio.sleep(1.5)
        pushed = [found.get("api") for found in spawn.latest(0).splits()]
        assert pushed in ([], [None], [[50, 50]]), pushed
        await fleet.stop()


# -- the worker's side ------------------------------------------------------------------------


@dataclass
class FakeGateway:
    """What ``_scaling_reply`` and ``_forward_pokes`` use of a worker's ``Gateway``."""

    scaling: ProcessScaling


def worker_scaling(service: str) -> tuple[ProcessScaling, RuntimeConfig]:
    runtime = compile_runtime(load(service), 1)
    scaling = ProcessScaling(lambda: runtime, control=False)
    scaling.on_generation(runtime, None)
    return scaling, runtime


async def test_a_workers_scaling_reply_carries_its_averages_depth_and_sample(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scaling, runtime = worker_scaling(SCALED + split_service(80, 20))
    gateway = cast("Gateway", FakeGateway(scaling))
    assert answer_query(Query(3, "scaling"), gateway) == ScalingReply(
        3, {"api": ScalingPart(None, None, 0, 0, (0, 0, 0, []))}
    )
    scale = runtime.services["api"].scale
    assert scale is not None
    assert scale.live is not None
    scale.live.enter()
    scale.live.record(error=True, latency=0.5)
    scaling.counts.depths["api"] = 2
    await trio.sleep(1.0)
    assert answer_query(Query(4, "scaling"), gateway) == ScalingReply(
        4, {"api": ScalingPart(1.0, 1.0, 1, 2, (1, 1, 1, [0.5]))}
    )


async def test_a_workers_pokes_reach_the_supervisor_as_activate_once_each() -> None:
    scaling, _ = worker_scaling(SCALED)
    ours, theirs = multiprocessing.Pipe(duplex=True)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _forward_pokes, cast("Gateway", FakeGateway(scaling)), _Outbox(ours)
                )
                await trio.testing.wait_all_tasks_blocked()
                scaling.poke("api")
                scaling.poke("api")  # already waiting to be sent: not queued twice
                scaling.poke("other")
                received = [await receive(theirs), await receive(theirs)]
                assert received == [Activate("api"), Activate("other")]
                scaling.poke("api")  # sent already: a new poke is sent again
                assert await receive(theirs) == Activate("api")
                nursery.cancel_scope.cancel()
    finally:
        ours.close()
        theirs.close()


async def receive(channel: multiprocessing.connection.Connection) -> WorkerMessage:
    """The next message the supervisor's end reads (bounded by the caller)."""
    while not await trio.to_thread.run_sync(channel.poll, 0.1):
        pass
    return decode_message(channel.recv_bytes())
