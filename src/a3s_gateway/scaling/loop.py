"""The autoscaler loops and rollout controllers of one gateway (SPEC §11.1, §11.3, §11.4,
§11.8, §13.4): the control side of scaling, run by the single process or by the supervisor of
``--workers N``.

Ring 1. ``ScalingControl`` keeps, per service of the running generation, an *autoscaler* (when
``container_concurrency`` > 0: the service's executor, a ``ScalePlanner`` and a task that ticks
every ``tick_interval``) and a *rollout* (when ``rollout`` is set: a ``RolloutController`` and a
task that steps it every ``step_interval_secs``). ``apply`` is handed each new generation; an
autoscaler or rollout whose block is unchanged carries on (its state and, for an autoscaler,
its executor and the processes it runs), a changed one is restarted from the new block, a removed
one stopped (SPEC §10.2).

What a loop reads and where its decisions go is the ``ScalingFeed``: the concurrency averages of
the service (the process's own recorder, or the sum of every worker's), the rollout's traffic
sample for the last interval, and where a new split goes (the live ``RevisionSplit`` of the
process, and every worker's). The ready count is read from the control's own generation (the
backends' health as the prober of this process sees it). The replica count is only ever taken
from the executor (``current`` each tick); a failed call is counted, logged and retried at the
next tick. A request that finds no available backend ``poke``s the loop: it asks the executor at
once and, when the service is at zero, scales it to ``max(1, min_replicas)`` (SPEC §11.4).

Nurseries: ``run`` owns the *control* nursery for the gateway's lifetime, with one task per
autoscaler and per rollout, each under its own cancel scope (kept on its unit so ``apply`` can
stop it); an autoscaler's task owns a nursery for its executor's ``run``. Deadlines: each
executor call is bounded by the executor itself; an executor's ``aclose`` (children terminated)
by ``CLOSE_BOUND`` under a shield when its autoscaler stops.

Must not: choose backends, touch a request, or take the replica count from anything but the
executor.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, NamedTuple, Protocol

import trio

from a3s_gateway.observability.scaling_metrics import AutoscalerStat, ScalingStats
from a3s_gateway.scaling.autoscaler import ScalePlanner, ScalePolicy, kpa_spec
from a3s_gateway.scaling.executors import ExecutorError, make_executor
from a3s_gateway.scaling.rollout import (
    InvalidAction,
    RolloutController,
    RolloutSettings,
    RolloutState,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.config.schema_services import Rollout, Scaling
    from a3s_gateway.runtime.compile import RuntimeConfig
    from a3s_gateway.scaling.concurrency import Averages
    from a3s_gateway.scaling.executors import Executor
    from a3s_gateway.scaling.rollout import IntervalStats, StepOutcome

__all__ = [
    "CLOSE_BOUND",
    "InvalidAction",
    "ScalingControl",
    "ScalingFeed",
    "control_stats",
    "rollout_action_answer",
    "rollout_document",
    "rollout_documents",
    "scaling_documents",
]

log: Final = logging.getLogger("a3s_gateway.scaling")

#: Pokes of one service within this long are one activation (seconds; the tick's interval
#: when that is shorter).
ACTIVATION_GAP: Final = 1.0

#: How long a stopped autoscaler's executor may take to end (children get SIGTERM, then
#: SIGKILL after their ``stop_timeout``, so this bounds only a stuck executor).
CLOSE_BOUND: Final = 60.0


class ScalingFeed(Protocol):
    """Where the control reads its inputs and sends its splits (module docstring)."""

    async def concurrency(self, service: str) -> Averages | None:
        """The service's stable and panic concurrency now (None: no complete bucket yet)."""
        ...

    async def rollout_sample(self, service: str) -> IntervalStats | None:
        """The rollout's ``to`` traffic since the last call (None: nothing to add)."""
        ...

    def publish(self, service: str, percents: tuple[int, ...]) -> None:
        """A rollout changed the service's live split."""
        ...

    def reset_sample(self, service: str) -> None:
        """Drop the rollout traffic sampled so far (a rollout starts or resumes)."""
        ...


@dataclass(eq=False)
class _Autoscaler:
    """One service's autoscaler (module docstring) and what ``/scaling`` shows of it."""

    service: str
    scaling: Scaling
    executor: Executor
    planner: ScalePlanner | None = None
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    poked: trio.Event = field(default_factory=trio.Event)
    desired: int | None = None
    actual: int | None = None
    ready: int = 0
    stable: float | None = None
    panic_concurrency: float | None = None
    panic: bool = False
    excess_burst_capacity: int = 0
    reason: str = ""
    decided_at: float | None = None
    errors: int = 0
    status: str = "starting"
    #: When the last activation asked the executor (trio's clock); pokes are coalesced.
    activated_at: float = -math.inf
    #: The task ended by an unexpected error: the next ``apply`` starts a new one.
    ended: bool = False


@dataclass(eq=False)
class _Rollout:
    """One service's rollout controller and its revision names."""

    service: str
    block: Rollout
    names: tuple[str, ...]
    controller: RolloutController
    #: The service's revisions, selectors and rollout as configured: a reload that changes
    #: any of them restarts the rollout from the new configuration.
    signature: tuple[object, ...] = ()
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    changed: trio.Event = field(default_factory=trio.Event)


class _Wanted(NamedTuple):
    """A rollout a generation asks for."""

    block: Rollout
    names: tuple[str, ...]
    percents: tuple[int, ...]
    signature: tuple[object, ...]


class ScalingControl:
    """The autoscalers and rollouts of one gateway (module docstring)."""

    def __init__(self, feed: ScalingFeed, *, environ: Mapping[str, str] | None = None) -> None:
        self._feed = feed
        self._environ = dict(os.environ) if environ is None else dict(environ)
        self._runtime: RuntimeConfig | None = None
        self.autoscalers: dict[str, _Autoscaler] = {}
        self.rollouts: dict[str, _Rollout] = {}
        self._pending: list[_Autoscaler | _Rollout] = []
        self._wake = trio.Event()
        #: Executor call failures by service (``a3s_autoscaler_executor_errors_total``).
        self.executor_errors: dict[str, int] = {}
        #: Rollout steps by (service, result) (``a3s_rollout_steps_total``).
        self.rollout_steps: dict[tuple[str, str], int] = {}

    @property
    def runtime(self) -> RuntimeConfig | None:
        return self._runtime

    def apply(self, runtime: RuntimeConfig) -> None:
        """Serve ``runtime`` from now on (module docstring: kept, restarted, stopped)."""
        self._runtime = runtime
        now = trio.current_time()
        wanted: dict[str, Scaling] = {}
        rollouts: dict[str, _Wanted] = {}
        for name, service in runtime.services.items():
            scale = service.scale
            if scale is None:
                continue
            if scale.scaling is not None and scale.scaling.container_concurrency > 0:
                wanted[name] = scale.scaling
            if scale.rollout is not None and scale.split is not None:
                names = tuple(pool.name for pool in scale.pools)
                rollouts[name] = _Wanted(
                    scale.rollout, names, scale.split.percents, scale.signature
                )
        self._apply_autoscalers(wanted, runtime)
        self._apply_rollouts(rollouts, now)
        self._wake.set()

    def _apply_autoscalers(self, wanted: Mapping[str, Scaling], runtime: RuntimeConfig) -> None:
        for name in list(self.autoscalers):
            unit = self.autoscalers[name]
            scaling = wanted.get(name)
            if scaling == unit.scaling and not unit.ended:
                continue
            if scaling is not None and not unit.ended and _same_executor(scaling, unit.scaling):
                # The decider's settings changed, not the executor's: a new planner, and the
                # replicas the executor runs stay (a local one's children are not restarted).
                unit.scaling, unit.planner = scaling, None
                continue
            unit.scope.cancel()
            del self.autoscalers[name]
        for name, scaling in wanted.items():
            if name in self.autoscalers:
                self._retune(self.autoscalers[name], runtime)
                continue
            executor = make_executor(name, scaling, environ=self._environ, log=log)
            unit = _Autoscaler(name, scaling, executor)
            self.autoscalers[name] = unit
            self._pending.append(unit)

    def _retune(self, unit: _Autoscaler, runtime: RuntimeConfig) -> None:
        """An unchanged block keeps its planner; only its reachability may have changed."""
        if unit.planner is not None:
            spec = kpa_spec(unit.scaling, reachable=_reachable(runtime, unit.service))
            unit.planner.update(spec, unit.planner.policy)

    def _apply_rollouts(self, wanted: Mapping[str, _Wanted], now: float) -> None:
        for name in list(self.rollouts):
            unit = self.rollouts[name]
            found = wanted.get(name)
            if found is None or found.signature != unit.signature:
                unit.scope.cancel()
                del self.rollouts[name]
            else:
                # Kept: the new generation's split takes the live weights (SPEC §11.8 "Reload").
                self._feed.publish(name, unit.controller.percents)
        for name, (block, names, percents, signature) in wanted.items():
            if name in self.rollouts:
                continue
            settings = RolloutSettings.from_config(block, names)
            controller = RolloutController(settings, percents, now=now)
            unit = _Rollout(name, block, names, controller, signature=signature)
            self.rollouts[name] = unit
            self._pending.append(unit)
            self._feed.publish(name, controller.percents)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the loops until cancelled (then every executor is closed)."""
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                pending, self._pending = self._pending, []
                for unit in pending:
                    if isinstance(unit, _Autoscaler):
                        nursery.start_soon(self._autoscale, unit)
                    else:
                        nursery.start_soon(self._roll, unit)

    def poke(self, service: str) -> None:
        """A request of ``service`` found no available backend (SPEC §11.4)."""
        unit = self.autoscalers.get(service)
        if unit is not None:
            unit.poked.set()

    # -- autoscalers ---------------------------------------------------------------------------

    async def _autoscale(self, unit: _Autoscaler) -> None:
        with unit.scope:
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(unit.executor.run)
                    await self._ticks(unit)
            except* Exception as group:  # one service's autoscaler, not the gateway
                unit.ended = True
                first = group.exceptions[0]
                unit.status = f"stopped by an unexpected error: {first!r}"
                log.error(
                    "service %s: autoscaler stopped by an unexpected error (a reload restarts it)",
                    unit.service,
                    exc_info=group,
                )
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_BOUND):
                    await unit.executor.aclose()

    async def _ticks(self, unit: _Autoscaler) -> None:
        deadline = trio.current_time()
        while True:
            interval = unit.scaling.tick_interval.seconds  # a reload may change it
            with trio.move_on_at(deadline):
                await unit.poked.wait()
            now = trio.current_time()
            # A due tick goes first: a stream of pokes never starves the ticks (SPEC §11.3).
            activation = now < deadline and unit.poked.is_set()
            if activation:
                unit.poked = trio.Event()
                if not self._may_activate(unit, now):
                    continue
                unit.activated_at = now
            else:
                deadline = max(deadline + interval, now)
            try:
                await (self._activate(unit) if activation else self._tick(unit))
            except Exception as error:  # logged; the next tick tries again
                unit.status = f"tick failed: {error}"
                log.error("service %s: autoscaler tick failed", unit.service, exc_info=error)

    def _may_activate(self, unit: _Autoscaler, now: float) -> bool:
        """Whether a poke asks the executor now: at most one activation per ``ACTIVATION_GAP``
        (a burst of requests at zero is one activation, not one executor call each)."""
        return now - unit.activated_at >= min(ACTIVATION_GAP, unit.scaling.tick_interval.seconds)

    async def _current(self, unit: _Autoscaler) -> int | None:
        try:
            current = await unit.executor.current(unit.service)
        except ExecutorError as error:
            self._failed(unit, "current", error)
            return None
        unit.actual = current.replicas
        return current.replicas

    async def _activate(self, unit: _Autoscaler) -> None:
        current = await self._current(unit)
        if current != 0:
            return
        scaling = unit.scaling
        target = min(max(1, scaling.min_replicas, scaling.activation_scale), scaling.max_replicas)
        reason = f"up: activation (a request is waiting) current=0 desired={target}"
        if unit.planner is not None:
            unit.planner.activated(trio.current_time())
        await self._scale(unit, target, reason, current)

    async def _tick(self, unit: _Autoscaler) -> None:
        current = await self._current(unit)
        if current is None:
            return
        averages = await self._feed.concurrency(unit.service)
        runtime = self._runtime
        ready = _ready(runtime, unit.service)
        unit.ready = ready
        if averages is None or runtime is None:
            unit.status = "waiting for the first concurrency bucket"
            return
        now = trio.current_time()  # after the executor's and the feed's answers
        planner = unit.planner
        if planner is None:
            spec = kpa_spec(unit.scaling, reachable=_reachable(runtime, unit.service))
            planner = unit.planner = ScalePlanner(spec, _policy(unit.scaling), now=now, ready=ready)
        plan = planner.plan(
            now, ready=ready, current=current, stable=averages.stable, panic=averages.panic
        )
        unit.stable, unit.panic_concurrency = averages.stable, averages.panic
        unit.panic, unit.excess_burst_capacity = (
            plan.decision.panic,
            plan.decision.excess_burst_capacity,
        )
        unit.desired, unit.decided_at = plan.desired, now
        if plan.desired != current:
            unit.reason = plan.reason
            await self._scale(unit, plan.desired, plan.reason, current)
        else:
            unit.status = "ok"

    async def _scale(self, unit: _Autoscaler, desired: int, reason: str, current: int) -> None:
        unit.desired, unit.reason = desired, reason
        try:
            result = await unit.executor.scale(unit.service, desired, reason, current=current)
        except ExecutorError as error:
            self._failed(unit, "scale", error)
            return
        unit.actual = result.actual_replicas
        if not result.accepted:  # a refusal is a failed call: counted, retried next tick
            self._failed(unit, "scale", ExecutorError(f"not accepted: {result.message}"))
            return
        unit.status = "ok"
        log.info("service %s scaled (%s executor): %s", unit.service, unit.executor.name, reason)

    def _failed(self, unit: _Autoscaler, call: str, error: ExecutorError) -> None:
        unit.errors += 1
        self.executor_errors[unit.service] = self.executor_errors.get(unit.service, 0) + 1
        unit.status = f"{call} failed: {error}"
        log.warning(
            "service %s: %s executor %s failed (retried at the next tick): %s",
            unit.service,
            unit.executor.name,
            call,
            error,
        )

    # -- rollouts ------------------------------------------------------------------------------

    async def _roll(self, unit: _Rollout) -> None:
        controller = unit.controller
        with unit.scope:
            self._feed.reset_sample(unit.service)  # traffic from before this rollout started
            while controller.state not in _FINISHED:
                # Paused: nothing is due until an action (resume, rollback) changes it.
                paused = controller.state is RolloutState.PAUSED
                with trio.move_on_at(math.inf if paused else controller.next_step):
                    await unit.changed.wait()
                if unit.changed.is_set():
                    unit.changed = trio.Event()
                    if controller.state is RolloutState.IN_PROGRESS:  # resumed
                        self._feed.reset_sample(unit.service)
                    continue
                try:
                    await self._step(unit)
                except Exception as error:  # logged; the next step tries again
                    log.error("service %s: rollout step failed", unit.service, exc_info=error)
                    controller.next_step = trio.current_time() + controller.settings.step_interval

    async def _step(self, unit: _Rollout) -> None:
        controller = unit.controller
        sample = await self._feed.rollout_sample(unit.service)
        if sample is not None:
            controller.add(sample)
        available = _revision_available(self._runtime, unit)
        outcome = controller.step(trio.current_time(), to_available=available)
        if outcome is not None:
            self._stepped(unit, outcome)

    def _stepped(self, unit: _Rollout, outcome: StepOutcome) -> None:
        key = (unit.service, outcome.result)
        self.rollout_steps[key] = self.rollout_steps.get(key, 0) + 1
        level = logging.WARNING if outcome.result == "rolled_back" else logging.INFO
        message = outcome.message
        for index, name in enumerate(unit.names):
            message = message.replace(f"revisions[{index}]", f'"{name}"')
        log.log(level, "service %s: %s", unit.service, message)
        self._feed.publish(unit.service, outcome.percents)

    def rollout_action(self, service: str, action: str) -> _Rollout | None:
        """``pause``, ``resume`` or ``rollback`` the rollout of ``service``: its unit, None when
        it has none; ``InvalidAction`` when it has finished (the API answers 409)."""
        unit = self.rollouts.get(service)
        if unit is None:
            return None
        controller = unit.controller
        if action == "pause":
            controller.pause()
        elif action == "resume":
            controller.resume(trio.current_time())
        else:
            controller.rollback()
            key = (service, "rolled_back")
            self.rollout_steps[key] = self.rollout_steps.get(key, 0) + 1
            log.warning("rollout of service %s rolled back by the management API", service)
            self._feed.publish(service, controller.percents)
        unit.changed.set()
        return unit


_FINISHED: Final = frozenset({RolloutState.COMPLETED, RolloutState.ROLLED_BACK})


def _same_executor(one: Scaling, other: Scaling) -> bool:
    """Whether two ``scaling`` blocks make the same executor (the ``local`` one's replica
    slots are ``max_replicas``)."""

    def key(scaling: Scaling) -> tuple[object, ...]:
        local = scaling.executor == "local"
        slots = scaling.max_replicas if local else None
        return (scaling.executor, scaling.box, scaling.kubernetes, scaling.local, slots)

    return key(one) == key(other)


def _policy(scaling: Scaling) -> ScalePolicy:
    return ScalePolicy(
        min_replicas=scaling.min_replicas,
        max_replicas=scaling.max_replicas,
        scale_to_zero_grace=scaling.scale_to_zero_grace.seconds,
    )


def _ready(runtime: RuntimeConfig | None, name: str) -> int:
    """The service's available backends as this process sees them (SPEC §11.2 "Ready")."""
    service = runtime.services.get(name) if runtime is not None else None
    if service is None:
        return 0
    return sum(1 for backend in service.backends if backend.available)


def _revision_available(runtime: RuntimeConfig | None, unit: _Rollout) -> bool:
    """Whether the rollout's ``to`` revision has an available backend in the control's
    generation (unknown counts as available)."""
    scale = runtime.scale_of(unit.service) if runtime is not None else None
    if scale is None or scale.rollout_to is None:
        return True
    return scale.pools[scale.rollout_to].available()


def _reachable(runtime: RuntimeConfig, name: str) -> bool:
    """A router uses the service, directly or as a mirror or failover target (SPEC §11.3)."""
    config = runtime.config
    used = {router.service for router in config.routers.values()}
    for service in config.services.values():
        if service.mirror is not None:
            used.add(service.mirror.service)
        if service.failover is not None:
            used.add(service.failover.service)
    return name in used


# -- what the management API and the metrics show ------------------------------------------------


def control_stats(control: ScalingControl) -> ScalingStats:
    """The metrics of ``control`` (``a3s_autoscaler_*``, ``a3s_revision_*``, ``a3s_rollout_*``)."""
    stats = ScalingStats(
        executor_errors=dict(control.executor_errors), rollout_steps=dict(control.rollout_steps)
    )
    for name, unit in control.autoscalers.items():
        stats.autoscalers[name] = AutoscalerStat(
            desired=unit.desired,
            actual=unit.actual,
            ready=unit.ready,
            panic=unit.panic,
            stable=unit.stable,
            panic_concurrency=unit.panic_concurrency,
        )
    runtime = control.runtime
    if runtime is not None:
        for name, service in runtime.services.items():
            scale = service.scale
            if scale is None or scale.split is None:
                continue
            for pool, percent in zip(scale.pools, scale.split.percents, strict=True):
                stats.revisions[(name, pool.name)] = percent
    for name, rollout in control.rollouts.items():
        stats.rollout_states[name] = rollout.controller.state.value
    return stats


def scaling_documents(
    control: ScalingControl, depths: Mapping[str, int], timestamp: Callable[[float], str]
) -> list[dict[str, object]]:
    """``GET /scaling`` (SPEC §9.6): one document per autoscaled service."""
    documents: list[dict[str, object]] = []
    for name, unit in sorted(control.autoscalers.items()):
        scaling = unit.scaling
        documents.append(
            {
                "service": name,
                "executor": unit.executor.name,
                "min_replicas": scaling.min_replicas,
                "max_replicas": scaling.max_replicas,
                "target": max(0.01, scaling.container_concurrency * scaling.target_utilization),
                "desired": unit.desired,
                "actual": unit.actual,
                "ready": unit.ready,
                "panic": unit.panic,
                "stable_concurrency": unit.stable,
                "panic_concurrency": unit.panic_concurrency,
                "excess_burst_capacity": unit.excess_burst_capacity,
                "buffer_depth": depths.get(name, 0),
                "last_decision": (
                    timestamp(unit.decided_at) if unit.decided_at is not None else None
                ),
                "reason": unit.reason,
                "executor_status": unit.status,
                "executor_errors": unit.errors,
            }
        )
    return documents


def rollout_document(unit: _Rollout, timestamp: Callable[[float], str]) -> dict[str, object]:
    """One rollout as ``/rollouts`` shows it (SPEC §11.8)."""
    controller = unit.controller
    block = unit.block
    last = controller.last
    return {
        "service": unit.service,
        "state": controller.state.label,
        "from": block.from_,
        "to": block.to,
        "traffic": dict(zip(unit.names, controller.percents, strict=True)),
        "step_percent": block.step_percent,
        "step_interval_secs": block.step_interval_secs,
        "next_step": (
            None
            if controller.state in _FINISHED or controller.state is RolloutState.PAUSED
            else timestamp(controller.next_step)
        ),
        "steps": dict(controller.steps),
        "last_step": (
            None
            if last is None
            else {
                "result": last.result,
                "requests": last.requests,
                "errors": last.errors,
                "error_rate": last.error_rate,
                "latency_ms": None if last.latency is None else round(last.latency * 1000, 3),
            }
        ),
    }


def rollout_documents(
    control: ScalingControl, timestamp: Callable[[float], str]
) -> list[dict[str, object]]:
    """``GET /rollouts`` (SPEC §9.6)."""
    return [rollout_document(unit, timestamp) for _, unit in sorted(control.rollouts.items())]


def rollout_action_answer(
    control: ScalingControl | None, service: str, action: str, timestamp: Callable[[float], str]
) -> tuple[int, dict[str, object]]:
    """``POST /rollouts/{service}/{action}`` (SPEC §9.6): 200 with the new state, 404 for a
    service without a rollout, 409 for a finished one."""
    try:
        unit = control.rollout_action(service, action) if control is not None else None
    except InvalidAction as error:
        return 409, {"error": str(error)}
    if unit is None:
        return 404, {"error": "rollout not found"}
    return 200, rollout_document(unit, timestamp)
