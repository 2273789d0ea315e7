"""The supervisor's side of scaling with ``--workers N`` (SPEC §11.1, §13.4): the autoscalers,
executors and rollouts run here, once for all workers.

Ring 1. ``FleetScaling`` is the ``ScalingFeed`` of the supervisor's ``ScalingControl``: the
concurrency of a service is the sum of every worker's stable and panic averages (each worker
averages its own 1-second buckets; the sum of the means over equal windows is the mean of the
summed buckets), asked of the ready workers with a ``scaling`` query at most once a second and
kept per worker in a ``FleetConcurrency`` (a worker that stops answering is left out after a few
seconds). The same replies bring each worker's rollout sample since its last reply (merged into
one per service until the rollout takes it) and its buffer depths (``/scaling``,
``a3s_scale_buffer_queued`` comes from the workers' own metrics). A new split is set on the
supervisor's compiled generation (``/rollouts`` and ``a3s_revision_traffic_percent`` read it) and
handed to ``Supervisor.push_splits``, whose feeders send it to every worker (a worker started
later gets the current table first thing). A worker's ``Activate`` reaches ``poke``.

Nurseries: none of its own (``run`` is the control's). Deadlines: each query's timeout.
Must not: serve traffic or choose backends.
"""

from __future__ import annotations

import logging
import random
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.scaling.concurrency import Averages, FleetConcurrency
from a3s_gateway.scaling.host import set_split
from a3s_gateway.scaling.loop import ScalingControl
from a3s_gateway.scaling.rollout import IntervalStats
from a3s_gateway.supervisor.worker_main import ScalingReply

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.runtime.compile import RuntimeConfig
    from a3s_gateway.supervisor.workers import Supervisor

__all__ = ["FleetScaling"]

log: Final = logging.getLogger("a3s_gateway.scaling")

#: The workers are asked at most this often (seconds): every tick of every autoscaler and every
#: rollout step reads the same answers within it.
REFRESH: Final = 1.0
#: Each worker's answer is awaited at most this long.
QUERY_TIMEOUT: Final = 2.0


class FleetScaling:
    """The supervisor's scaling (module docstring)."""

    def __init__(self, supervisor: Supervisor, runtime: Callable[[], RuntimeConfig]) -> None:
        self._supervisor = supervisor
        self._runtime = runtime
        self.control = ScalingControl(self)
        self._concurrency: dict[str, FleetConcurrency] = {}
        self._samples: dict[str, IntervalStats] = {}
        #: Requests in each service's buffers over all workers, at the last answers.
        self.depths: dict[str, int] = {}
        self._asked_at: float | None = None
        self._asking = trio.Lock()
        self._rng = random.Random()

    def apply(self, runtime: RuntimeConfig) -> None:
        """A new generation: the control serves it; the splits of rollouts it no longer has
        are not sent to workers any more."""
        self.control.apply(runtime)
        self._supervisor.keep_splits(self.control.rollouts)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the generation current now and every later one ``apply`` hands over."""
        self.apply(self._runtime())
        await self.control.run(task_status=task_status)

    def poke(self, service: str) -> None:
        self.control.poke(service)

    async def _refresh(self) -> None:
        async with self._asking:
            now = trio.current_time()
            if self._asked_at is not None and now - self._asked_at < REFRESH:
                return
            self._asked_at = now
            answers = await self._supervisor.query("scaling", ScalingReply, within=QUERY_TIMEOUT)
            now = trio.current_time()
            depths: dict[str, int] = {}
            for index, reply in answers.replies.items():
                for name, part in reply.services.items():
                    depths[name] = depths.get(name, 0) + part.depth
                    if part.stable is not None and part.panic is not None:
                        averages = Averages(part.stable, part.panic, part.buckets)
                        fleet = self._concurrency.setdefault(name, FleetConcurrency())
                        fleet.report(index, now, averages)
                    if part.sample is not None:
                        self._merge(index, name, part.sample)
            self.depths = depths

    def _merge(self, index: int, name: str, wire: tuple[int, int, int, list[float]]) -> None:
        try:
            sample = IntervalStats.from_wire(wire)
        except ValueError as error:
            log.warning("worker %d: rollout sample of %s ignored: %s", index, name, error)
            return
        self._samples.setdefault(name, IntervalStats()).merge(sample, self._rng)

    async def concurrency(self, service: str) -> Averages | None:
        await self._refresh()
        fleet = self._concurrency.get(service)
        return None if fleet is None else fleet.total(trio.current_time())

    async def rollout_sample(self, service: str) -> IntervalStats | None:
        self._asked_at = None  # the step needs the traffic up to now
        await self._refresh()
        return self._samples.pop(service, None)

    def reset_sample(self, service: str) -> None:
        """Drop what the workers reported so far (what they sampled since their last report,
        at most a second's traffic, still joins the next interval)."""
        self._samples.pop(service, None)

    def publish(self, service: str, percents: tuple[int, ...]) -> None:
        if set_split(self._runtime().scale_of(service), service, percents):
            self._supervisor.push_splits(service, list(percents))
