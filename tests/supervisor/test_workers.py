"""The multi-worker supervisor (SPEC §13.4, §2.4, §2.5): the pure restart policy, port
reservation, the supervisor loop with fake workers under the autojump clock (restarts,
signals, the config generations each worker is sent — the current one first, then each new
one; a restarted worker the newest only; several published during a slow send coalesced — and
the control channel's queries: replies matched by id, a silent or dying worker left out
within the timeout, late replies dropped; the active health each worker is told — the whole
table right after its generation, then each change, coalesced during a slow send; SIGHUP with a
reloader starting a reload), and the real thing end to end — a supervisor subprocess, two
spawned workers and a trio backend."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

import pytest
import trio
import trio.testing

from a3s_gateway.acme.board import ChallengeBoard
from a3s_gateway.config.load import load_text
from a3s_gateway.state import GatewayState
from a3s_gateway.supervisor.worker_main import (
    Apply,
    Challenges,
    Command,
    Health,
    MetricsReply,
    Query,
    Ready,
    Reply,
    Splits,
    StateReply,
    WorkerMessage,
    with_ports,
)
from a3s_gateway.supervisor.workers import (
    BACKOFF_MAX,
    STABLE_AFTER,
    Supervisor,
    after_crash,
    reserve_ports,
    restart_delay,
)
from tests.support.cli import ROOT, RunningGateway, cli_env

if TYPE_CHECKING:
    from a3s_gateway.providers import Reloader

# ----------------------------------------------------------------------------- pure policy


def test_restart_delay_doubles_from_one_second_up_to_thirty() -> None:
    delays = [restart_delay(n) for n in range(1, 9)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert restart_delay(10_000) == BACKOFF_MAX


def test_a_quick_crash_backs_off_further_and_a_stable_run_resets() -> None:
    assert after_crash(0, started_at=100.0, now=100.5) == (1, 1.0)
    assert after_crash(3, started_at=100.0, now=101.0) == (4, 8.0)
    assert after_crash(5, started_at=100.0, now=100.0 + STABLE_AFTER) == (1, 1.0)


CONFIG_PORT_0 = """
entrypoints "web" { address = "127.0.0.1:0" }
entrypoints "admin" { address = "127.0.0.1:9999" }
routers "all" {
  rule = "PathPrefix(`/`)"
  service = "backend"
}
services "backend" {
  load_balancer { servers = [{ url = "http://127.0.0.1:1" }] }
}
"""


def test_port_0_is_reserved_by_a_reuse_port_socket_that_a_worker_can_share() -> None:
    config = load_text(CONFIG_PORT_0).config
    assert config is not None
    ports, held = reserve_ports(config)
    try:
        assert set(ports) == {"web"}
        assert [s.getsockname() for s in held] == [("127.0.0.1", ports["web"])]
        with socket.socket() as worker:  # what a worker's listener does
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", ports["web"]))
            worker.listen()
        resolved = with_ports(config, ports)
        assert resolved.entrypoints["web"].address.port == ports["web"]
        assert resolved.entrypoints["admin"] == config.entrypoints["admin"]
    finally:
        for sock in held:
            sock.close()


# ----------------------------------------------------------------------------- fake workers


#: How a fake worker answers a query: a reply, or None to stay silent.
Answer = Callable[[Query], Reply | None]


def silent(query: Query) -> Reply | None:
    del query
    return None


def state_of(pid: int) -> Answer:
    """Answers every query with a state report whose ``total_requests`` is ``pid``."""

    def answer(query: Query) -> Reply | None:
        return StateReply(query.id, "running", {"web": 1}, pid, {})

    return answer


class FakeWorker:
    """A worker that reports ready (unless told not to), answers queries with ``answer``,
    records the generations and health messages it is sent (``generations``, ``health``, both
    in ``sent`` in order) and exits when told to. Messages queued before the exit are still
    received (as from a real pipe), then ``receive`` returns None. While ``hold`` is set, an
    ``Apply`` being sent waits for ``release``; while ``hold_health`` is, a ``Health``."""

    def __init__(
        self,
        pid: int,
        *,
        ready: bool,
        obeys_sigterm: bool,
        start_code: int,
        answer: Answer = silent,
    ) -> None:
        self.pid = pid
        self.signals: list[int] = []
        self.queries: list[Query] = []
        self.generations: list[int] = []
        self.health: list[Health] = []
        self.sent: list[Apply | Health | Splits | Challenges] = []
        self.hold = False
        self.hold_health = False
        self.release = trio.Event()
        self.answer = answer
        self._obeys_sigterm = obeys_sigterm
        self._code = start_code
        self._exited = trio.Event()
        self._messages: list[WorkerMessage] = []
        self._changed = trio.Event()
        if ready:
            self.push(Ready(pid=pid, addresses={}))
        else:
            self.exit(start_code)

    def push(self, message: WorkerMessage) -> None:
        """Queue ``message`` for the supervisor (a late reply, say)."""
        self._messages.append(message)
        self._changed.set()

    def exit(self, code: int) -> None:
        if not self._exited.is_set():
            self._code = code
            self._exited.set()
            self._changed.set()

    async def receive(self) -> WorkerMessage | None:
        while True:
            if self._messages:
                await trio.lowlevel.checkpoint()
                return self._messages.pop(0)
            if self._exited.is_set():
                await trio.lowlevel.checkpoint()
                return None
            self._changed = trio.Event()
            await self._changed.wait()

    async def send(self, message: Command) -> None:
        await trio.lowlevel.checkpoint()
        if self._exited.is_set():
            raise BrokenPipeError(32, "Broken pipe")
        if isinstance(message, Apply):
            if self.hold:
                await self.release.wait()
            self.generations.append(message.generation)
            self.sent.append(message)
            return
        if isinstance(message, Health):
            if self.hold_health:
                await self.release.wait()
            self.health.append(message)
            self.sent.append(message)
            return
        if isinstance(message, Splits | Challenges):
            self.sent.append(message)
            return
        self.queries.append(message)
        reply = self.answer(message)
        if reply is not None:
            self.push(reply)

    async def wait(self) -> int:
        await self._exited.wait()
        return self._code

    def signal(self, signum: int) -> None:
        self.signals.append(signum)
        if signum == signal.SIGKILL:
            self.exit(-signal.SIGKILL)
        elif signum == signal.SIGTERM and self._obeys_sigterm:
            self.exit(0)


class FakeSpawner:
    """``Supervisor``'s ``spawn``: records (time, slot, worker) for every start. ``answers``
    gives a slot's workers their way of answering queries (default: silent)."""

    def __init__(
        self,
        *,
        obeys_sigterm: bool = True,
        failing: dict[int, int] | None = None,
        answers: dict[int, Answer] | None = None,
    ):
        self.started: list[tuple[float, int, FakeWorker]] = []
        self.spawned = trio.Event()
        self._obeys_sigterm = obeys_sigterm
        self._failing = failing or {}
        self._answers = answers or {}

    def __call__(self, index: int) -> FakeWorker:
        code = self._failing.get(index)
        worker = FakeWorker(
            1000 + len(self.started),
            ready=code is None,
            obeys_sigterm=self._obeys_sigterm,
            start_code=code or 0,
            answer=self._answers.get(index, silent),
        )
        self.started.append((trio.current_time(), index, worker))
        self.spawned.set()
        self.spawned = trio.Event()
        return worker

    def latest(self, index: int) -> FakeWorker:
        return [w for _, i, w in self.started if i == index][-1]


async def supervise(
    supervisor: Supervisor, task_status: trio.TaskStatus[trio.MemorySendChannel[int]]
) -> int:
    send, receive = trio.open_memory_channel[int](10)
    async with trio.open_nursery() as nursery:
        result: list[int] = []

        async def run() -> None:
            result.append(await supervisor.run(receive))

        nursery.start_soon(run)
        task_status.started(send)
    return result[0]


async def test_a_crashed_worker_restarts_after_1_2_4_8_seconds_the_other_keeps_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        assert len(spawn.started) == 2
        other = spawn.latest(1).pid
        gaps = []
        for run_for in (0.5, 0.5, 0.5, 0.5):
            await trio.sleep(run_for)
            crashed_at = trio.current_time()
            respawned = spawn.spawned
            spawn.latest(0).exit(-signal.SIGSEGV)
            await respawned.wait()
            gaps.append(round(spawn.started[-1][0] - crashed_at, 1))
            assert supervisor.pids()[1] == other  # the other worker never stopped
        assert gaps == [1.0, 2.0, 4.0, 8.0]  # the reset after STABLE_AFTER: see above
        assert supervisor.restarts == 4
        await signals.send(signal.SIGTERM)
    assert spawn.latest(0).signals == spawn.latest(1).signals == [signal.SIGTERM]


async def test_a_spawned_worker_appears_only_after_the_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        spawn.latest(1).exit(1)
        await trio.sleep(0.9)
        assert set(supervisor.pids()) == {0}
        await trio.sleep(0.2)
        assert supervisor.pids()[1] == spawn.latest(1).pid == 1002
        await signals.send(signal.SIGINT)


async def test_the_first_signal_drains_the_workers_and_exits_0(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(3, spawn, drain_bound=40.0)
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        await signals.send(signal.SIGTERM)
    assert supervisor.exit_code == 0
    assert [w.signals for _, _, w in spawn.started] == [[signal.SIGTERM]] * 3


async def test_a_second_signal_kills_the_draining_workers_and_exits_128_plus_n(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner(obeys_sigterm=False)  # still draining
    supervisor = Supervisor(3, spawn, drain_bound=40.0)
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        await signals.send(signal.SIGTERM)
        await trio.sleep(1.0)
        await signals.send(signal.SIGINT)
    assert supervisor.exit_code == 128 + signal.SIGINT
    assert trio.current_time() == pytest.approx(1.0)  # not the 40 s drain bound
    assert [w.signals for _, _, w in spawn.started] == [[signal.SIGTERM, signal.SIGKILL]] * 3


async def test_workers_that_do_not_drain_in_time_are_killed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner(obeys_sigterm=False)
    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        stopped_at = trio.current_time()
        await signals.send(signal.SIGTERM)
    assert trio.current_time() - stopped_at == pytest.approx(40.0)
    assert supervisor.exit_code == 0
    assert [w.signals for _, _, w in spawn.started] == [[signal.SIGTERM, signal.SIGKILL]] * 2


async def test_sighup_without_a_reloader_is_forwarded_to_every_ready_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        await signals.send(signal.SIGHUP)
        await trio.testing.wait_all_tasks_blocked()
        assert [w.signals for _, _, w in spawn.started] == [[signal.SIGHUP]] * 2
        await signals.send(signal.SIGTERM)


def generation(number: int) -> Apply:
    """A generation as the supervisor publishes it (fake workers never decode the config)."""
    return Apply(number, b"config %d" % number)


async def test_every_worker_is_sent_the_current_generation_first_then_each_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    supervisor.publish(generation(1))
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        assert [w.generations for _, _, w in spawn.started] == [[1], [1]]
        supervisor.publish(generation(2))
        await trio.testing.wait_all_tasks_blocked()
        assert [w.generations for _, _, w in spawn.started] == [[1, 2], [1, 2]]
        assert supervisor.served() == {0: 2, 1: 2}
        assert supervisor.generation == 2
        await signals.send(signal.SIGTERM)
    assert [w.signals for _, _, w in spawn.started] == [[signal.SIGTERM]] * 2  # no SIGHUP


async def test_a_restarted_worker_starts_from_the_newest_generation_not_the_first(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    supervisor.publish(generation(1))
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        supervisor.publish(generation(2))
        await trio.testing.wait_all_tasks_blocked()
        crashed = spawn.latest(0)
        crashed.exit(-signal.SIGKILL)
        await trio.testing.wait_all_tasks_blocked()
        supervisor.publish(generation(3))  # while slot 0 waits for its restart
        await trio.sleep(1.5)  # the 1 s backoff
        restarted = spawn.latest(0)
        assert restarted is not crashed
        assert restarted.generations == [3]  # started from the current one, nothing older
        assert crashed.generations == [1, 2]
        assert spawn.latest(1).generations == [1, 2, 3]
        await signals.send(signal.SIGTERM)


async def test_generations_published_while_one_is_sent_are_coalesced_into_the_newest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(1, spawn, drain_bound=40.0)
    supervisor.publish(generation(1))
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        worker = spawn.latest(0)
        worker.hold = True  # a worker slow to read a large generation
        supervisor.publish(generation(2))
        await trio.testing.wait_all_tasks_blocked()
        for number in (3, 4, 5):
            supervisor.publish(generation(number))
        worker.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert worker.generations == [1, 2, 5]
        await signals.send(signal.SIGTERM)


A: Final = "http://10.0.0.1:80"
B: Final = "http://10.0.0.2:80"


def kinds(worker: FakeWorker) -> list[str]:
    """What ``worker`` was sent, in order: ``apply N``, ``health full``, ``health``,
    ``splits`` or ``challenges``."""
    return [
        f"apply {message.generation}"
        if isinstance(message, Apply)
        else "splits"
        if isinstance(message, Splits)
        else "challenges"
        if isinstance(message, Challenges)
        else ("health full" if message.full else "health")
        for message in worker.sent
    ]


async def test_every_worker_hears_the_whole_health_table_after_its_generation_then_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    supervisor.health.replace({("svc", A): True, ("svc", B): False})
    supervisor.publish(generation(1))
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        for _, _, worker in spawn.started:
            assert kinds(worker) == ["apply 1", "health full"]
            assert worker.health[0].states == [("svc", A, True), ("svc", B, False)]
        supervisor.health.record("svc", B, True)
        await trio.testing.wait_all_tasks_blocked()
        for _, _, worker in spawn.started:
            assert kinds(worker) == ["apply 1", "health full", "health"]
            assert worker.health[-1].states == [("svc", B, True)]
        supervisor.health.passed("svc", A)
        await trio.testing.wait_all_tasks_blocked()
        assert [w.health[-1].passed for _, _, w in spawn.started] == [[("svc", A)]] * 2

        # A restarted worker: its generation, then the table as it is now.
        spawn.latest(0).exit(-signal.SIGKILL)
        await trio.testing.wait_all_tasks_blocked()
        supervisor.health.record("svc", A, False)  # while slot 0 waits for its restart
        await trio.sleep(1.5)
        restarted = spawn.latest(0)
        assert kinds(restarted) == ["apply 1", "health full"]
        assert restarted.health[0].states == [("svc", A, False), ("svc", B, True)]
        assert restarted.health[0].passed == [("svc", A)]
        assert spawn.latest(1).health[-1].states == [("svc", A, False)]

        # A reload: the new generation first, then its whole table.
        supervisor.health.replace({("svc", A): False})
        supervisor.publish(generation(2))
        await trio.testing.wait_all_tasks_blocked()
        assert kinds(restarted)[2:] == ["apply 2", "health full"]
        assert restarted.health[-1].states == [("svc", A, False)]
        await signals.send(signal.SIGTERM)


async def test_health_changes_during_a_slow_send_are_coalesced_into_the_newest_state(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(1, spawn, drain_bound=40.0)
    supervisor.health.replace({("svc", A): True, ("svc", B): True})
    supervisor.publish(generation(1))
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        worker = spawn.latest(0)
        worker.hold_health = True  # a worker slow to read
        supervisor.health.record("svc", A, False)
        await trio.testing.wait_all_tasks_blocked()
        for healthy in (True, False, True):
            supervisor.health.record("svc", B, healthy)  # flaps while the send waits
        worker.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert kinds(worker) == ["apply 1", "health full", "health", "health"]
        assert [message.states for message in worker.health[1:]] == [
            [("svc", A, False)],
            [("svc", B, True)],
        ]
        await signals.send(signal.SIGTERM)


async def test_without_a_generation_no_worker_is_told_any_health(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(1, spawn, drain_bound=40.0)
    supervisor.health.replace({("svc", A): False})
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        assert spawn.latest(0).sent == []  # worker_main expects its config first
        await signals.send(signal.SIGTERM)


class FakeReloader:
    """What ``Supervisor.run`` uses of a ``Reloader``: ``run`` and ``reload_now``."""

    def __init__(self) -> None:
        self.running = False
        self.reloads: list[bool] = []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        await trio.sleep_forever()

    async def reload_now(self, *, force: bool = True) -> None:
        self.reloads.append(force)
        await trio.sleep(1)  # a reload takes a while: the signal handler does not wait


async def test_sighup_with_a_reloader_starts_a_forced_reload_and_signals_no_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    spawn = FakeSpawner()
    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    reloader = FakeReloader()
    send, receive = trio.open_memory_channel[int](10)
    async with trio.open_nursery() as nursery:
        run = partial(supervisor.run, receive, reloader=cast("Reloader", reloader))
        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        assert reloader.running
        await send.send(signal.SIGHUP)
        await send.send(signal.SIGHUP)
        await trio.testing.wait_all_tasks_blocked()
        assert reloader.reloads == [True, True]  # both under way at once
        assert [w.signals for _, _, w in spawn.started] == [[], []]
        await send.send(signal.SIGTERM)
    assert supervisor.exit_code == 0


@pytest.mark.parametrize(("code", "expected"), [(1, 1), (3, 3), (-9, 3)])
async def test_a_worker_failing_at_start_stops_the_others(
    autojump_clock: trio.testing.MockClock, code: int, expected: int
) -> None:
    spawn = FakeSpawner(failing={1: code})
    supervisor = Supervisor(3, spawn, drain_bound=40.0)
    with trio.fail_after(1.0):
        assert await supervisor.run(trio.open_memory_channel[int](1)[1]) == expected
    assert len(spawn.started) == 3  # no restart
    signals = {index: w.signals for _, index, w in spawn.started}
    assert signals == {0: [signal.SIGTERM], 1: [], 2: [signal.SIGTERM]}


async def test_a_spawn_that_fails_at_start_exits_3(autojump_clock: trio.testing.MockClock) -> None:
    def spawn(index: int) -> FakeWorker:
        raise OSError(24, "Too many open files")

    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    assert await supervisor.run(trio.open_memory_channel[int](1)[1]) == 3


async def test_workers_not_ready_by_the_start_deadline_fail_the_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Silent(FakeWorker):
        async def receive(self) -> WorkerMessage | None:
            await self.wait()
            return None

    def spawn(index: int) -> FakeWorker:
        return Silent(2000 + index, ready=True, obeys_sigterm=True, start_code=0)

    supervisor = Supervisor(2, spawn, drain_bound=40.0, start_deadline=20.0)
    assert await supervisor.run(trio.open_memory_channel[int](1)[1]) == 3
    assert trio.current_time() == pytest.approx(20.0)


# ----------------------------------------------------------------------------- queries


@dataclass
class Running:
    supervisor: Supervisor
    spawn: FakeSpawner
    signals: trio.MemorySendChannel[int]


async def running(nursery: trio.Nursery, count: int, answers: dict[int, Answer]) -> Running:
    spawn = FakeSpawner(answers=answers)
    supervisor = Supervisor(count, spawn, drain_bound=40.0)
    signals = await nursery.start(supervise, supervisor)
    await trio.testing.wait_all_tasks_blocked()
    return Running(supervisor, spawn, signals)


async def test_every_ready_worker_answers_under_its_own_query_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answers = {0: state_of(1000), 1: state_of(1001)}
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 2, answers)
        first = await fleet.supervisor.query("state", StateReply, within=2.0)
        second = await fleet.supervisor.query("state", StateReply, within=2.0)
        assert trio.current_time() == 0.0  # no waiting for a timeout
        await fleet.signals.send(signal.SIGTERM)
    assert {index: reply.total_requests for index, reply in first.replies.items()} == {
        0: 1000,
        1: 1001,
    }
    assert first.missing == second.missing == ()
    queries = fleet.spawn.latest(0).queries
    assert [q.kind for q in queries] == ["state", "state"]
    assert queries[0].id != queries[1].id
    assert [reply.id for reply in (first.replies[0], second.replies[0])] == [q.id for q in queries]
    assert fleet.supervisor.query_failures == {}


async def test_a_silent_worker_is_left_out_after_the_timeout_and_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 2, {0: state_of(7)})  # slot 1 never answers
        answers = await fleet.supervisor.query("state", StateReply, within=2.0)
        assert trio.current_time() == pytest.approx(2.0)
        assert list(answers.replies) == [0]
        assert answers.missing == (1,)
        assert fleet.supervisor.query_failures == {"state": 1}

        # Its reply arrives late: nobody waits for that id any more, so it is dropped, and
        # the next query is answered with its own reply, not the stale one.
        late = fleet.spawn.latest(1)
        late.push(StateReply(late.queries[0].id, "running", {}, -1, {}))
        late.answer = state_of(8)
        again = await fleet.supervisor.query("state", StateReply, within=2.0)
        assert {index: reply.total_requests for index, reply in again.replies.items()} == {
            0: 7,
            1: 8,
        }
        await fleet.signals.send(signal.SIGTERM)


async def test_a_worker_that_dies_during_a_query_is_left_out_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 2, {0: state_of(7)})
        dying = fleet.spawn.latest(1)

        async def kill_soon() -> None:
            await trio.sleep(0.25)
            dying.exit(-signal.SIGKILL)

        nursery.start_soon(kill_soon)
        answers = await fleet.supervisor.query("state", StateReply, within=10.0)
        assert trio.current_time() == pytest.approx(0.25)  # not the 10 s timeout
        assert answers.missing == (1,)
        assert list(answers.replies) == [0]
        assert fleet.supervisor.ready() == (0,)
        await fleet.signals.send(signal.SIGTERM)


async def test_a_reply_of_the_wrong_kind_counts_as_no_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def metrics(query: Query) -> Reply | None:
        return MetricsReply(query.id, b"")

    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 1, {0: metrics})
        answers = await fleet.supervisor.query("state", StateReply, within=2.0)
        assert answers.replies == {}
        assert answers.missing == (0,)
        assert fleet.supervisor.query_failures == {"state": 1}
        await fleet.signals.send(signal.SIGTERM)


async def test_only_ready_workers_are_asked_and_the_state_follows_the_fleet(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        fleet = await running(nursery, 2, {0: state_of(1), 1: state_of(2)})
        supervisor = fleet.supervisor
        assert supervisor.state() is GatewayState.RUNNING
        crashed = fleet.spawn.latest(1)
        crashed.exit(-signal.SIGSEGV)
        await trio.testing.wait_all_tasks_blocked()
        assert supervisor.ready() == (0,)
        assert supervisor.spawned() == (0,)  # backing off before the restart
        assert supervisor.state() is GatewayState.RUNNING
        answers = await supervisor.query("state", StateReply, within=2.0)
        assert list(answers.replies) == [0]
        assert answers.missing == ()  # a worker that is not ready is not asked
        assert crashed.queries == []
        await trio.sleep(1.5)  # the 1 s backoff
        assert supervisor.ready() == (0, 1)
        await fleet.signals.send(signal.SIGTERM)
        await trio.testing.wait_all_tasks_blocked()
        assert supervisor.state() is GatewayState.STOPPING


# ----------------------------------------------------------------------------- end to end


def command(config: Path, workers: int) -> list[str]:
    """The supervisor as users run it: ``run CONFIG --workers N``."""
    return [sys.executable, "-m", "a3s_gateway", "run", str(config), "--workers", str(workers)]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def exited(pid: int) -> bool:
    """Whether ``pid`` is gone, or a zombie whose every thread has exited. Its command line
    empties earlier, while the process is still closing its files (its listening socket could
    still take a connection, which the kernel then resets); and the main thread of a killed
    process can be a zombie while its other threads (a worker's ``trio.to_thread`` threads)
    are still exiting, holding the files they share."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        threads = len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] in {"Z", "X"} and threads <= 1


def worker_pids(supervisor: int) -> set[int]:
    """The supervisor's ``spawn`` children (not its multiprocessing resource tracker)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == supervisor and b"spawn_main" in cmdline:
            found.add(int(entry.name))
    return found


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition()`` (state of other processes, which no trio event reports) until true;
    the caller's ``fail_after`` bounds the wait."""
    while not condition():  # noqa: ASYNC110 -- polling /proc; no event to wait for
        await trio.sleep(0.05)


class Backend:
    """A tiny HTTP/1.1 backend: ``/slow`` waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.slow_started = trio.Event()

    async def handle(self, stream: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            head += chunk
        if head.startswith(b"GET /slow"):
            self.slow_started.set()
            await self.release.wait()
        reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        try:
            await stream.send_all(reply)
        except trio.BrokenResourceError:
            return
        await stream.aclose()


async def get(port: int, path: str = "/") -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n".encode()
        )
        reply = b""
        while chunk := await stream.receive_some(65536):
            reply += chunk
    return reply


def write_config(directory: Path, address: str, backend_port: int) -> Path:
    config = directory / "gateway.hcl"
    config.write_text(
        f'entrypoints "web" {{ address = "{address}" }}\n'
        'routers "all" {\n  rule = "PathPrefix(`/`)"\n  service = "backend"\n}\n'
        'services "backend" {\n  load_balancer {\n'
        f'    servers = [{{ url = "http://127.0.0.1:{backend_port}" }}]\n  }}\n}}\n'
    )
    return config


async def start(nursery: trio.Nursery, config: Path) -> RunningGateway:
    process = await trio.lowlevel.open_process(
        command(config, 2),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=cli_env(),
        cwd=ROOT,
    )
    nursery.start_soon(_reap_on_failure, process)
    return RunningGateway(process)


async def _reap_on_failure(process: trio.Process) -> None:
    try:
        await process.wait()
    finally:
        if process.returncode is None:
            process.kill()


async def serving_backend(nursery: trio.Nursery) -> tuple[Backend, int]:
    backend = Backend()
    listeners = await nursery.start(partial(trio.serve_tcp, backend.handle, 0, host="127.0.0.1"))
    return backend, int(listeners[0].socket.getsockname()[1])


@pytest.mark.integration
async def test_two_workers_serve_and_sigterm_drains_them_all(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        _, backend_port = await serving_backend(nursery)
        port = free_port()
        gateway = await start(nursery, write_config(tmp_path, f"127.0.0.1:{port}", backend_port))
        pid = gateway.process.pid
        with trio.fail_after(30):
            await gateway.wait_for_line("workers ready: 2")
            workers = worker_pids(pid)
            assert len(workers) == 2
            for _ in range(6):
                assert (await get(port)).startswith(b"HTTP/1.1 200 ")
            gateway.process.send_signal(signal.SIGTERM)
            assert await gateway.process.wait() == 0
            await until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers))
        nursery.cancel_scope.cancel()


@pytest.mark.integration
async def test_a_killed_worker_is_restarted_while_the_other_keeps_serving(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        _, backend_port = await serving_backend(nursery)
        port = free_port()
        gateway = await start(nursery, write_config(tmp_path, f"127.0.0.1:{port}", backend_port))
        pid = gateway.process.pid
        with trio.fail_after(30):
            await gateway.wait_for_line("workers ready: 2")
            first, second = sorted(worker_pids(pid))
            os.kill(first, signal.SIGKILL)
            await until(lambda: exited(first))
            for _ in range(6):  # only the survivor is listening now (1 s backoff)
                assert (await get(port)).startswith(b"HTTP/1.1 200 ")
            await gateway.wait_for_line("restarting in 1s")
            await gateway.wait_for_line("restarted")
            now = worker_pids(pid)
            assert second in now
            assert len(now) == 2
            assert (await get(port)).startswith(b"HTTP/1.1 200 ")
            gateway.process.send_signal(signal.SIGTERM)
            assert await gateway.process.wait() == 0
        nursery.cancel_scope.cancel()


@pytest.mark.integration
async def test_a_second_sigterm_during_the_drain_exits_143(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        backend, backend_port = await serving_backend(nursery)
        port = free_port()
        gateway = await start(nursery, write_config(tmp_path, f"127.0.0.1:{port}", backend_port))
        with trio.fail_after(30):
            await gateway.wait_for_line("workers ready: 2")
            workers = worker_pids(gateway.process.pid)
            nursery.start_soon(get_until_cut, port, "/slow")
            await backend.slow_started.wait()
            gateway.process.send_signal(signal.SIGTERM)
            await gateway.wait_for_line("draining workers")
            gateway.process.send_signal(signal.SIGTERM)
            assert await gateway.process.wait() == 128 + signal.SIGTERM
            await until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers))
        backend.release.set()
        nursery.cancel_scope.cancel()


@pytest.mark.integration
async def test_port_0_gives_every_worker_the_same_port(tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        _, backend_port = await serving_backend(nursery)
        gateway = await start(nursery, write_config(tmp_path, "127.0.0.1:0", backend_port))
        with trio.fail_after(30):
            lines = [await gateway.wait_for_line("listening entrypoint=web") for _ in range(2)]
            addresses = {line.split("address=")[1].split()[0] for line in lines}
            assert len(addresses) == 1
            port = int(addresses.pop().rsplit(":", 1)[1])
            assert port != 0
            await gateway.wait_for_line("workers ready: 2")
            for _ in range(6):
                assert (await get(port)).startswith(b"HTTP/1.1 200 ")
            gateway.process.send_signal(signal.SIGINT)
            assert await gateway.process.wait() == 0
        nursery.cancel_scope.cancel()


@pytest.mark.integration
async def test_a_port_taken_by_another_process_fails_the_start_with_3(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        async with trio.open_nursery() as nursery:
            gateway = await start(nursery, write_config(tmp_path, f"127.0.0.1:{port}", 1))
            with trio.fail_after(30):
                assert await gateway.process.wait() == 3
                await gateway.wait_for_line("failed to start")


async def get_until_cut(port: int, path: str) -> None:
    """A request whose connection the test expects to be cut."""
    with contextlib.suppress(OSError, trio.BrokenResourceError):
        await get(port, path)


async def test_acme_challenges_reach_every_worker_and_challenges_sent_waits_for_them(
    autojump_clock: trio.testing.MockClock,
) -> None:
    board = ChallengeBoard()
    spawn = FakeSpawner()
    supervisor = Supervisor(2, spawn, drain_bound=40.0)
    board.on_change = lambda: supervisor.push_challenges(board.state())
    supervisor.publish(generation(1))
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        board.add_http("tok", "tok.thumb")
        with trio.fail_after(1):
            await supervisor.challenges_sent()
        for _, _, worker in spawn.started:
            [sent] = [m for m in worker.sent if isinstance(m, Challenges)]
            assert sent.state.http == {"tok": "tok.thumb"}
        board.remove_http("tok")
        await supervisor.challenges_sent()
        for _, _, worker in spawn.started:
            last = [m for m in worker.sent if isinstance(m, Challenges)][-1]
            assert last.state.http == {}
        await signals.send(signal.SIGTERM)
