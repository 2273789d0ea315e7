"""The autoscaler loops and rollout controllers of one gateway (SPEC §11.2–§11.4, §11.8,
§10.2, §9.6): ``ScalingControl`` driven by a scripted ``ScalingFeed`` under the autojump clock.

The feed is a fake: the concurrency averages are set by the test (or computed by a real
``ConcurrencyRecorder`` whose level the test scripts, where the stable window matters), the
rollout samples are queued by the test, and every split the control publishes is recorded with
its time. Executors are the real ``mock`` one, or ``Recorder`` (below), swapped in for
``make_executor`` when a test needs call times, failures on demand or ``aclose``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from a3s_gateway.config.load import load_text
from a3s_gateway.config.schema_services import Scaling
from a3s_gateway.observability.scaling_metrics import AutoscalerStat
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.scaling import loop
from a3s_gateway.scaling.concurrency import Averages, ConcurrencyRecorder
from a3s_gateway.scaling.executors import Current, ExecutorError, MockExecutor, ScaleResult
from a3s_gateway.scaling.loop import (
    ScalingControl,
    control_stats,
    rollout_action_answer,
    rollout_documents,
    scaling_documents,
)
from a3s_gateway.scaling.rollout import IntervalStats, RolloutState

#: A rollout loop asking for samples more often than this at one instant is spinning.
SPIN_LIMIT = 50

# -- configs ----------------------------------------------------------------------------------

#: The scaling block's lines every autoscaler test starts from: a target of 10 per replica,
#: 1 to 5 replicas, a tick every 2 s, a 6 s stable window, 10 s of grace before zero, no
#: scale-down delay and no panic mode.
SCALING = """
    container_concurrency      = 10
    target_utilization         = 1.0
    max_replicas               = 5
    tick_interval              = "2s"
    stable_window              = "6s"
    scale_to_zero_grace        = "10s"
    scale_down_delay_secs      = 0
    panic_threshold_percentage = 1000
"""

ROLLOUT = """
  rollout {
    from                 = "v1"
    to                   = "v2"
    step_percent         = %(step)d
    step_interval_secs   = 10
    min_requests         = 5
    error_rate_threshold = 0.1
    latency_threshold_ms = 5000
  }
"""


def config_text(service: str) -> str:
    """A gateway whose router sends everything to service ``api``, defined by ``service``."""
    return (
        'entrypoints "web" { address = "127.0.0.1:0" }\n'
        'routers "r" {\n  rule    = "PathPrefix(`/`)"\n  service = "api"\n}\n'
        'services "api" {\n' + service + "}\n"
    )


def compiled(text: str, generation: int = 1) -> RuntimeConfig:
    result = load_text(text)
    assert result.config is not None, result.problems
    assert all(problem.severity == "warning" for problem in result.problems)
    return compile_runtime(result.config, generation)


def scaled(extra: str = "", generation: int = 1) -> RuntimeConfig:
    """Service ``api``: one backend and a ``mock`` autoscaler (``SCALING`` plus ``extra``)."""
    return compiled(
        config_text(
            '  load_balancer { servers = [{ url = "http://127.0.0.1:1" }] }\n'
            '  scaling {\n    executor = "mock"\n' + SCALING + extra + "  }\n"
        ),
        generation,
    )


def revisions(
    percents: tuple[int, int] = (80, 20),
    *,
    step: int = 30,
    extra: str = "",
    generation: int = 1,
) -> RuntimeConfig:
    """Service ``api``: revisions v1 and v2 (tag ``canary``) at ``percents`` with a rollout
    from v1 to v2 of ``step`` percent every 10 s (at least 5 requests, errors ≤ 10 %,
    latency ≤ 5 s); ``extra`` is added inside the service."""
    first, second = percents
    return compiled(
        config_text(
            "  revisions = [\n"
            f'    {{ name = "v1", traffic_percent = {first}, '
            'servers = [{ url = "http://127.0.0.1:1" }] },\n'
            f'    {{ name = "v2", traffic_percent = {second}, tag = "canary", '
            'servers = [{ url = "http://127.0.0.1:2" }] },\n'
            "  ]\n" + ROLLOUT % {"step": step} + extra
        ),
        generation,
    )


def unrelated(generation: int) -> RuntimeConfig:
    """The same router, but ``api`` neither scaled nor split."""
    return compiled(
        config_text('  load_balancer { servers = [{ url = "http://127.0.0.1:1" }] }\n'),
        generation,
    )


def stamp(when: float) -> str:
    return f"t={when:g}"


# -- the fake feed and executor ---------------------------------------------------------------


class Feed:
    """A scripted ``ScalingFeed`` (module docstring)."""

    def __init__(self) -> None:
        #: What ``concurrency`` answers when no ``recorder`` is set.
        self.averages: Averages | None = None
        #: When set, ``concurrency`` answers its averages at the current time.
        self.recorder: ConcurrencyRecorder | None = None
        #: Times ``concurrency`` was asked.
        self.asked: list[float] = []
        #: What ``rollout_sample`` answers next (None when empty).
        self.samples: list[IntervalStats] = []
        #: Times ``rollout_sample`` was asked.
        self.sampled: list[float] = []
        #: (time, service, percents) of every ``publish``.
        self.published: list[tuple[float, str, tuple[int, ...]]] = []
        #: Times ``reset_sample`` was called (a rollout started or resumed).
        self.resets: list[float] = []

    async def concurrency(self, service: str) -> Averages | None:
        assert service == "api"
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        self.asked.append(now)
        if self.recorder is not None:
            return self.recorder.averages(now)
        return self.averages

    async def rollout_sample(self, service: str) -> IntervalStats | None:
        assert service == "api"
        await trio.lowlevel.checkpoint()
        now = trio.current_time()
        self.sampled.append(now)
        if self.sampled.count(now) > SPIN_LIMIT:
            raise AssertionError(f"the rollout loop asks for samples without end at t={now:g}")
        return self.samples.pop(0) if self.samples else None

    def publish(self, service: str, percents: tuple[int, ...]) -> None:
        self.published.append((trio.current_time(), service, percents))

    def reset_sample(self, service: str) -> None:
        self.resets.append(trio.current_time())

    def splits(self) -> list[tuple[float, tuple[int, ...]]]:
        return [(when, percents) for when, _, percents in self.published]


@dataclass(eq=False)
class Recorder:
    """An ``Executor`` like ``mock`` (current = the last accepted desired count) that records
    when it was called and fails on demand."""

    name: str = "fake"
    replicas: int = 0
    fail_scale: bool = False
    fail_current: bool = False
    #: (time, desired, current as the caller passed it) of every ``scale`` call.
    scales: list[tuple[float, int, int]] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    currents: list[float] = field(default_factory=list)
    running: bool = False
    closed: bool = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.running = True
        task_status.started()
        await trio.sleep_forever()

    async def scale(self, service: str, desired: int, reason: str, *, current: int) -> ScaleResult:
        await trio.lowlevel.checkpoint()
        self.scales.append((trio.current_time(), desired, current))
        self.reasons.append(reason)
        if self.fail_scale:
            raise ExecutorError("executor down (HTTP 503)")
        self.replicas = desired
        return ScaleResult(True, desired, "done")

    async def current(self, service: str) -> Current:
        await trio.lowlevel.checkpoint()
        self.currents.append(trio.current_time())
        if self.fail_current:
            raise ExecutorError("no answer within 5s")
        return Current(self.replicas, None)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()
        self.closed = True

    def desired(self) -> list[tuple[float, int]]:
        return [(when, desired) for when, desired, _ in self.scales]


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Recorder]:
    """Every executor the control makes is a ``Recorder``; the list holds them in order."""
    executors: list[Recorder] = []

    def make(
        service: str, scaling: Scaling, *, environ: Mapping[str, str], log: object
    ) -> Recorder:
        executor = Recorder()
        executors.append(executor)
        return executor

    monkeypatch.setattr(loop, "make_executor", make)
    return executors


async def start(nursery: trio.Nursery, feed: Feed, runtime: RuntimeConfig) -> ScalingControl:
    control = ScalingControl(feed, environ={})
    control.apply(runtime)
    await nursery.start(control.run)
    return control


async def settle_at(when: float) -> None:
    """Let the clock reach ``when`` and everything due then run."""
    await trio.sleep_until(when)
    await trio.testing.wait_all_tasks_blocked()


def document(control: ScalingControl, depths: Mapping[str, int] | None = None) -> dict[str, object]:
    (found,) = scaling_documents(control, depths or {}, stamp)
    return found


def mock_of(control: ScalingControl) -> MockExecutor:
    executor = control.autoscalers["api"].executor
    assert isinstance(executor, MockExecutor)
    return executor


def recorder_feed(level: int) -> Feed:
    """A feed whose averages come from a real recorder (stable window 6 s, panic window 1 s)
    that holds ``level`` from time 0."""
    feed = Feed()
    feed.recorder = ConcurrencyRecorder(0.0, stable_window=6.0, panic_window=1.0)
    feed.recorder.add(0.0, level)
    return feed


# -- autoscaling ------------------------------------------------------------------------------


async def test_it_ticks_every_interval_and_follows_the_load_within_the_bounds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed()
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, scaled())
        mock = mock_of(control)
        await settle_at(5.0)
        assert feed.asked == [0.0, 2.0, 4.0]  # the first tick at once, then every 2 s
        assert mock.decisions == []  # no bucket yet: no decision
        assert document(control)["executor_status"] == "waiting for the first concurrency bucket"

        feed.averages = Averages(stable=25.0, panic=25.0, buckets=6)
        await settle_at(6.0)
        assert mock.decisions == [
            (
                "api",
                3,
                "up: stable=25.00 panic=25.00 target=10.00 ready=1 current=0 desired=3 "
                "panic_mode=false",
            )
        ]
        feed.averages = Averages(stable=80.0, panic=80.0, buckets=6)
        await settle_at(8.0)
        assert [desired for _, desired, _ in mock.decisions] == [3, 5]  # 8 wanted: max 5
        feed.averages = Averages(stable=90.0, panic=90.0, buckets=6)
        await settle_at(10.0)
        assert len(mock.decisions) == 2  # at the maximum already: nothing asked
        feed.averages = Averages(stable=12.0, panic=12.0, buckets=6)
        await settle_at(12.0)
        assert [desired for _, desired, _ in mock.decisions] == [3, 5, 2]
        assert mock.decisions[-1][2].startswith("down: stable=12.00")
        assert feed.asked == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
        nursery.cancel_scope.cancel()


async def test_idle_it_scales_down_and_to_zero_after_stable_window_plus_grace(
    autojump_clock: trio.testing.MockClock, made: list[Recorder]
) -> None:
    feed = recorder_feed(25)
    async with trio.open_nursery() as nursery:
        await start(nursery, feed, scaled())
        (executor,) = made
        await trio.sleep_until(20.0)
        assert feed.recorder is not None
        feed.recorder.add(20.0, -25)  # idle from t = 20
        await settle_at(50.0)
        nursery.cancel_scope.cancel()
    # 3 replicas for 25; the stable average falls over the 6 s window; it is 0 from t = 26,
    # and 10 s of grace later (t = 36 = 20 + 6 + 10) the service goes to zero.
    assert executor.desired() == [(2.0, 3), (22.0, 2), (24.0, 1), (36.0, 0)]
    assert executor.closed


async def test_it_never_goes_below_min_replicas(
    autojump_clock: trio.testing.MockClock, made: list[Recorder]
) -> None:
    feed = recorder_feed(25)
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, scaled("    min_replicas = 2\n"))
        (executor,) = made
        await trio.sleep_until(20.0)
        assert feed.recorder is not None
        feed.recorder.add(20.0, -25)
        await settle_at(50.0)
        assert document(control)["desired"] == 2
        nursery.cancel_scope.cancel()
    assert executor.desired() == [(2.0, 3), (22.0, 2)]


async def test_a_failed_scale_is_counted_shown_and_retried_at_the_next_tick(
    autojump_clock: trio.testing.MockClock, made: list[Recorder]
) -> None:
    feed = Feed()
    feed.averages = Averages(stable=25.0, panic=25.0, buckets=6)
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, scaled())
        (executor,) = made
        executor.fail_scale = True
        await settle_at(1.0)
        assert executor.scales == [(0.0, 3, 0)]
        assert control.executor_errors == {"api": 1}
        shown = document(control)
        assert (shown["desired"], shown["actual"]) == (3, 0)
        assert shown["executor_status"] == "scale failed: executor down (HTTP 503)"
        assert shown["executor_errors"] == 1

        await settle_at(3.0)  # retried, from what the executor still reports: 0
        assert executor.scales == [(0.0, 3, 0), (2.0, 3, 0)]
        assert control.executor_errors == {"api": 2}

        executor.fail_scale = False
        await settle_at(5.0)
        assert executor.scales[-1] == (4.0, 3, 0)
        shown = document(control)
        assert (shown["desired"], shown["actual"], shown["executor_status"]) == (3, 3, "ok")
        assert shown["executor_errors"] == 2
        assert control_stats(control).executor_errors == {"api": 2}
        await settle_at(9.0)
        assert len(executor.scales) == 3  # at 3: nothing more to ask
        nursery.cancel_scope.cancel()


async def test_the_replica_count_comes_only_from_the_executor(
    autojump_clock: trio.testing.MockClock, made: list[Recorder]
) -> None:
    feed = Feed()
    feed.averages = Averages(stable=25.0, panic=25.0, buckets=6)
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, scaled())
        (executor,) = made
        await settle_at(1.0)
        assert executor.scales == [(0.0, 3, 0)]
        executor.replicas = 1  # two replicas died: the next tick sees it and asks again
        await settle_at(3.0)
        assert executor.scales == [(0.0, 3, 0), (2.0, 3, 1)]

        executor.fail_current = True
        executor.replicas = 0
        await settle_at(5.0)
        assert executor.currents[-1] == 4.0
        assert len(executor.scales) == 2  # no count, no decision
        assert feed.asked == [0.0, 2.0]  # not even the averages are asked
        assert control.executor_errors == {"api": 1}
        shown = document(control)
        assert shown["executor_status"] == "current failed: no answer within 5s"
        assert shown["desired"] == 3

        executor.fail_current = False
        await settle_at(7.0)
        assert executor.scales[-1] == (6.0, 3, 0)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", 1),
        ("    min_replicas = 2\n", 2),
        ("    activation_scale = 3\n", 3),
    ],
)
async def test_a_poke_at_zero_scales_up_at_once_and_a_poke_above_zero_does_not(
    autojump_clock: trio.testing.MockClock, made: list[Recorder], extra: str, expected: int
) -> None:
    feed = Feed()  # no bucket ever: the ticks decide nothing
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, scaled(extra))
        (executor,) = made
        await settle_at(0.5)
        control.poke("api")
        await trio.testing.wait_all_tasks_blocked()
        assert trio.current_time() == 0.5  # without waiting for the tick at 2 s
        assert executor.scales == [(0.5, expected, 0)]
        assert executor.reasons == [
            f"up: activation (a request is waiting) current=0 desired={expected}"
        ]
        await settle_at(0.7)
        control.poke("api")
        control.poke("elsewhere")  # a service without an autoscaler: nothing
        await trio.testing.wait_all_tasks_blocked()
        assert 0.7 not in executor.currents  # within a second of the last: coalesced
        await settle_at(1.6)
        control.poke("api")
        await trio.testing.wait_all_tasks_blocked()
        assert executor.currents[-1] == 1.6  # asked, and it is not at zero
        assert len(executor.scales) == 1
        nursery.cancel_scope.cancel()


async def test_the_next_tick_does_not_undo_an_activation(
    autojump_clock: trio.testing.MockClock, made: list[Recorder]
) -> None:
    """SPEC §11.4: "waiting requests count as concurrency, so the next tick does not undo
    it". The recorder counts the waiting request from t = 20.3 on; the next tick (20.9) comes
    before the bucket holding it is complete."""
    feed = recorder_feed(0)
    await trio.sleep_until(0.9)  # the ticks fall at 0.9, 2.9, 4.9, ...
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, scaled())
        (executor,) = made
        await trio.sleep_until(20.3)  # long idle, at zero; a request arrives and waits
        assert feed.recorder is not None
        feed.recorder.add(20.3, 1)
        control.poke("api")
        await settle_at(30.0)  # the request still waits (no backend ready yet)
        nursery.cancel_scope.cancel()
    assert executor.desired() == [(20.3, 1)]  # no scale back to 0 while the request waits


# -- apply ------------------------------------------------------------------------------------


async def test_apply_keeps_an_unchanged_autoscaler_restarts_a_changed_one_stops_a_removed_one(
    autojump_clock: trio.testing.MockClock, made: list[Recorder]
) -> None:
    feed = Feed()
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, scaled())
        first = control.autoscalers["api"]
        await settle_at(1.0)
        assert [(e.running, e.closed) for e in made] == [(True, False)]

        control.apply(scaled(generation=2))  # the same block
        await settle_at(3.0)
        assert control.autoscalers["api"] is first
        assert [(e.running, e.closed) for e in made] == [(True, False)]
        assert feed.asked == [0.0, 2.0]  # its ticks go on as before

        control.apply(scaled("    min_replicas = 1\n", generation=3))  # the decider changed
        await settle_at(3.5)
        assert control.autoscalers["api"] is first  # same executor: kept, a new planner
        assert first.scaling.min_replicas == 1
        assert first.planner is None
        assert [(e.running, e.closed) for e in made] == [(True, False)]

        control.apply(
            compiled(
                config_text(
                    '  load_balancer { servers = [{ url = "http://127.0.0.1:1" }] }\n'
                    '  scaling {\n    executor = "box"\n' + SCALING + "  }\n"
                ),
                3,
            )
        )  # another executor: restarted
        await settle_at(3.6)
        second = control.autoscalers["api"]
        assert second is not first
        assert second.executor is made[1]
        assert [(e.running, e.closed) for e in made] == [(True, True), (True, False)]
        assert feed.asked[-1] == 3.5  # the new loop ticks at once (applied at 3.5)

        control.apply(unrelated(4))  # the service is no longer scaled
        await settle_at(4.0)
        assert [e.closed for e in made] == [True, True]
        assert control.autoscalers == {}
        assert scaling_documents(control, {}, stamp) == []
        control.apply(scaled(generation=5))  # scaled again: a new one
        await settle_at(5.0)
        assert len(made) == 3
        nursery.cancel_scope.cancel()
    assert made[2].closed  # the control's end closes the executors it runs


# -- rollouts ---------------------------------------------------------------------------------


def healthy(requests: int = 10) -> IntervalStats:
    return IntervalStats(requests=requests, errors=0)


async def test_a_healthy_rollout_advances_every_interval_until_completed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed()
    feed.samples = [healthy(), healthy(), healthy()]
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, revisions())
        await settle_at(50.0)
        assert control.rollouts["api"].controller.state is RolloutState.COMPLETED
        nursery.cancel_scope.cancel()
    assert feed.splits() == [(0.0, (80, 20)), (10.0, (50, 50)), (20.0, (20, 80)), (30.0, (0, 100))]
    assert feed.sampled == [10.0, 20.0, 30.0]  # nothing is asked once it has completed
    assert control.rollout_steps == {("api", "advanced"): 3}


async def test_too_few_requests_hold_the_split(autojump_clock: trio.testing.MockClock) -> None:
    feed = Feed()
    feed.samples = [IntervalStats(requests=4), healthy()]
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, revisions())
        await settle_at(15.0)
        (shown,) = rollout_documents(control, stamp)
        assert shown["state"] == "waiting"
        assert shown["traffic"] == {"v1": 80, "v2": 20}
        assert feed.splits()[-1][1] == (80, 20)  # held: the same split
        await settle_at(25.0)
        assert feed.splits()[-1] == (20.0, (50, 50))
        nursery.cancel_scope.cancel()
    assert control.rollout_steps == {("api", "held"): 1, ("api", "advanced"): 1}


def slow(requests: int, seconds: float) -> IntervalStats:
    stats = IntervalStats()
    rng = random.Random(7)
    for _ in range(requests):
        stats.record(error=False, latency=seconds, rng=rng)
    return stats


@pytest.mark.parametrize(
    ("sample", "errors", "rate", "latency"),
    [
        (IntervalStats(requests=10, errors=5), 5, 0.5, None),
        (slow(10, 6.0), 0, 0.0, 6000.0),
    ],
    ids=["errors", "latency"],
)
async def test_an_unhealthy_interval_rolls_back_and_publishes_the_split(
    autojump_clock: trio.testing.MockClock,
    sample: IntervalStats,
    errors: int,
    rate: float,
    latency: float | None,
) -> None:
    feed = Feed()
    feed.samples = [sample]
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, revisions())
        await settle_at(40.0)
        nursery.cancel_scope.cancel()
    assert feed.splits() == [(0.0, (80, 20)), (10.0, (100, 0))]
    assert feed.sampled == [10.0]
    assert control.rollout_steps == {("api", "rolled_back"): 1}
    (shown,) = rollout_documents(control, stamp)
    assert shown["state"] == "rolled_back"
    assert shown["traffic"] == {"v1": 100, "v2": 0}
    assert shown["next_step"] is None
    assert shown["steps"] == {"advanced": 0, "held": 0, "rolled_back": 1}
    assert shown["last_step"] == {
        "result": "rolled_back",
        "requests": 10,
        "errors": errors,
        "error_rate": rate,
        "latency_ms": latency,
    }


async def test_a_paused_rollout_does_not_step_until_resumed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed()
    feed.samples = [healthy()]
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, revisions())
        await settle_at(5.0)
        status, _ = rollout_action_answer(control, "api", "pause", stamp)
        assert status == 200
        await settle_at(30.0)  # two step times pass while paused
        assert control.rollout_steps == {}
        assert feed.splits() == [(0.0, (80, 20))]
        status, shown = rollout_action_answer(control, "api", "resume", stamp)
        assert (status, shown["state"], shown["next_step"]) == (200, "in_progress", "t=40")
        await settle_at(40.0)
        assert feed.splits()[-1] == (40.0, (50, 50))
        nursery.cancel_scope.cancel()


async def test_rollout_actions_answer_200_404_and_409(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed()
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, revisions())
        await settle_at(1.0)
        assert rollout_action_answer(control, "other", "pause", stamp) == (
            404,
            {"error": "rollout not found"},
        )
        assert rollout_action_answer(None, "api", "pause", stamp) == (
            404,
            {"error": "rollout not found"},
        )
        status, shown = rollout_action_answer(control, "api", "pause", stamp)
        assert (status, shown["state"]) == (200, "paused")
        status, shown = rollout_action_answer(control, "api", "resume", stamp)
        assert (status, shown["state"], shown["next_step"]) == (200, "in_progress", "t=11")
        await settle_at(2.0)
        status, shown = rollout_action_answer(control, "api", "rollback", stamp)
        assert (status, shown["state"]) == (200, "rolled_back")
        assert shown["traffic"] == {"v1": 100, "v2": 0}
        assert feed.splits() == [(0.0, (80, 20)), (2.0, (100, 0))]
        assert control.rollout_steps == {("api", "rolled_back"): 1}
        for action, verb in (("pause", "pause"), ("resume", "resume"), ("rollback", "roll back")):
            assert rollout_action_answer(control, "api", action, stamp) == (
                409,
                {"error": f"cannot {verb} a rollout that is rolled_back"},
            )
        await settle_at(30.0)
        assert feed.sampled == []  # a rolled-back rollout never steps
        nursery.cancel_scope.cancel()


async def test_a_reload_keeps_an_unchanged_rollout_and_republishes_its_live_split(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed()
    feed.samples = [healthy(), healthy()]
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, revisions())
        before = control.rollouts["api"]
        await settle_at(15.0)
        control.apply(revisions(generation=2))
        await settle_at(16.0)
        assert control.rollouts["api"] is before
        assert feed.splits()[-2:] == [(10.0, (50, 50)), (15.0, (50, 50))]
        await settle_at(20.0)
        assert feed.splits()[-1] == (20.0, (20, 80))  # on its old schedule
        nursery.cancel_scope.cancel()


async def test_a_reload_with_a_changed_rollout_restarts_it_from_the_config(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed()
    feed.samples = [healthy(), healthy()]
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, revisions())
        before = control.rollouts["api"]
        await settle_at(15.0)
        control.apply(revisions(step=40, generation=2))
        await settle_at(16.0)
        after = control.rollouts["api"]
        assert after is not before
        assert after.controller.percents == (80, 20)
        assert feed.splits()[-1] == (15.0, (80, 20))
        await settle_at(25.0)
        nursery.cancel_scope.cancel()
    assert feed.sampled == [10.0, 25.0]  # the old one stopped; the new one steps at 15 + 10
    assert feed.splits()[-1] == (25.0, (40, 60))


async def test_a_reload_with_changed_revision_percents_restarts_the_rollout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """SPEC §11.8 "Reload": only unchanged ``revisions`` *and* ``rollout`` blocks continue
    with the live split; here the revisions' percents changed and the rollout did not."""
    feed = Feed()
    feed.samples = [healthy()]
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, revisions())
        await settle_at(15.0)
        control.apply(revisions((60, 40), generation=2))
        await settle_at(16.0)
        assert control.rollouts["api"].controller.percents == (60, 40)
        assert feed.splits()[-1] == (15.0, (60, 40))
        nursery.cancel_scope.cancel()


async def test_a_removed_rollout_stops(autojump_clock: trio.testing.MockClock) -> None:
    feed = Feed()
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, revisions())
        await settle_at(5.0)
        control.apply(unrelated(2))
        await settle_at(30.0)
        assert control.rollouts == {}
        assert rollout_documents(control, stamp) == []
        nursery.cancel_scope.cancel()
    assert feed.sampled == []


# -- what /scaling, /rollouts and the metrics show ----------------------------------------------


async def test_documents_and_stats_show_the_autoscaler_and_the_rollout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = Feed()
    feed.averages = Averages(stable=25.0, panic=25.0, buckets=6)
    runtime = revisions(extra='  scaling {\n    executor = "mock"\n' + SCALING + "  }\n")
    async with trio.open_nursery() as nursery:
        control = await start(nursery, feed, runtime)
        await settle_at(1.0)
        # Two ready backends (v1's and v2's): a new decider starts in panic mode.
        assert document(control, {"api": 4}) == {
            "service": "api",
            "executor": "mock",
            "min_replicas": 0,
            "max_replicas": 5,
            "target": 10.0,
            "desired": 3,
            "actual": 3,
            "ready": 2,
            "panic": True,
            "stable_concurrency": 25.0,
            "panic_concurrency": 25.0,
            "excess_burst_capacity": 2 * 10 - 200 - 25,
            "buffer_depth": 4,
            "last_decision": "t=0",
            "reason": "up: stable=25.00 panic=25.00 target=10.00 ready=2 current=0 desired=3 "
            "panic_mode=true",
            "executor_status": "ok",
            "executor_errors": 0,
        }
        assert rollout_documents(control, stamp) == [
            {
                "service": "api",
                "state": "in_progress",
                "from": "v1",
                "to": "v2",
                "traffic": {"v1": 80, "v2": 20},
                "step_percent": 30,
                "step_interval_secs": 10,
                "next_step": "t=10",
                "steps": {"advanced": 0, "held": 0, "rolled_back": 0},
                "last_step": None,
            }
        ]
        stats = control_stats(control)
        assert stats.autoscalers == {
            "api": AutoscalerStat(
                desired=3, actual=3, ready=2, panic=True, stable=25.0, panic_concurrency=25.0
            )
        }
        assert stats.revisions == {("api", "v1"): 80, ("api", "v2"): 20}
        assert stats.rollout_states == {"api": RolloutState.IN_PROGRESS.value}
        assert stats.executor_errors == {}
        assert stats.rollout_steps == {}

        feed.samples = [healthy(12)]
        await settle_at(10.0)
        (shown,) = rollout_documents(control, stamp)
        assert shown["last_step"] == {
            "result": "advanced",
            "requests": 12,
            "errors": 0,
            "error_rate": 0.0,
            "latency_ms": None,
        }
        assert shown["steps"] == {"advanced": 1, "held": 0, "rolled_back": 0}
        assert shown["next_step"] == "t=20"
        assert control_stats(control).rollout_steps == {("api", "advanced"): 1}
        nursery.cancel_scope.cancel()


def test_a_control_without_units_shows_nothing() -> None:
    control = ScalingControl(Feed(), environ={})
    assert scaling_documents(control, {}, stamp) == []
    assert rollout_documents(control, stamp) == []
    stats = control_stats(control)
    assert (stats.autoscalers, stats.revisions, stats.rollout_states) == ({}, {}, {})


class BrokenFeed(Feed):
    """A feed whose concurrency read fails with a bug (not an executor error) ``failures``
    times, then answers ``averages``."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def concurrency(self, service: str) -> Averages | None:
        if self.failures:
            self.failures -= 1
            await trio.lowlevel.checkpoint()
            raise RuntimeError("a bug in the feed")
        return await super().concurrency(service)


async def test_an_unexpected_error_in_a_tick_is_logged_and_the_next_tick_runs(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    made: list[Recorder],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """DESIGN §3.4: a background loop that meets an unexpected exception logs it and goes on;
    it never takes the gateway (or the other services' autoscalers) down."""
    feed = BrokenFeed(failures=2)
    feed.averages = Averages(25.0, 25.0, 6)
    control = await start(nursery, feed, scaled())
    await settle_at(5.0)
    assert [desired for _, desired in made[0].desired()] == [3]  # the third tick decided
    assert "autoscaler tick failed" in caplog.text
    assert control.autoscalers["api"].status == "ok"


async def test_an_executor_whose_run_breaks_stops_only_its_autoscaler(
    autojump_clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    made: list[Recorder],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(1.0)
        raise RuntimeError("the executor's supervisor crashed")

    monkeypatch.setattr(Recorder, "run", lambda self, **kw: broken(**kw))
    feed = Feed()
    control = await start(nursery, feed, scaled())
    await settle_at(3.0)
    unit = control.autoscalers["api"]
    assert unit.status.startswith("stopped by an unexpected error")
    assert made[0].closed  # its executor was closed all the same
    assert "autoscaler stopped by an unexpected error" in caplog.text
