"""The per-process side of one scaled or split service (SPEC §11.2, §11.5, §11.8): its
concurrency recorder, its scale-from-zero buffer and the rollout's traffic sample, as the data
plane of this process (a worker, or the single process) feeds them.

Ring 1 (the buffer waits on trio). ``attach`` gives every ``ServiceScale`` of a new generation
its ``LiveService``: the previous generation's when the service's ``scaling`` block is
unchanged (its waiters, recorder and sample carry on; SPEC §10.2 "kept when their blocks are
unchanged"), else a new one, and the previous one's buffer is closed (its waiters get 503
``no available backend``; SPEC §11.5 "the service removed by a reload"). The previous split is
kept the same way when the revisions and rollout are unchanged.

The data plane calls ``enter``/``leave`` around every request of a scaled service (in flight or
waiting: what the autoscaler counts), ``capacity_freed`` after each attempt (a waiter may now
fit under ``container_concurrency``), ``ready`` when one of the service's backends becomes
available (health events release the waiters), ``activate`` when a request finds no available
backend (the autoscaler is poked at once, SPEC §11.4), and ``sample`` with each finished attempt
at the rollout's ``to`` revision.

Nurseries: none. Deadlines: the buffer's ``buffer_timeout_secs`` per waiter (``buffer.py``).
Must not: choose backends (``scaling/service.py`` and the dispatcher do), or block.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

import trio

from a3s_gateway.scaling.autoscaler import panic_window
from a3s_gateway.scaling.buffer import BufferResult, ScaleBuffer
from a3s_gateway.scaling.concurrency import ConcurrencyRecorder
from a3s_gateway.scaling.rollout import IntervalStats

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.config.schema_services import Scaling
    from a3s_gateway.runtime.compile import RuntimeConfig, ServiceRuntime
    from a3s_gateway.scaling.concurrency import Averages

__all__ = ["BufferCounts", "LiveService", "attach", "close_all"]


class BufferCounts:
    """The buffer outcomes of one process by (service, result), and the queue depths now: what
    ``a3s_scale_buffer_results_total`` and ``a3s_scale_buffer_queued`` show (summed over the
    workers by the supervisor)."""

    __slots__ = ("depths", "results")

    def __init__(self) -> None:
        self.results: dict[tuple[str, str], int] = {}
        self.depths: dict[str, int] = {}

    def result(self, service: str, result: BufferResult) -> None:
        key = (service, result.value)
        self.results[key] = self.results.get(key, 0) + 1


class LiveService:
    """One service's per-process scaling state (module docstring)."""

    __slots__ = ("buffer", "name", "poke", "recorder", "rng", "sample", "scaling")

    def __init__(
        self,
        name: str,
        scaling: Scaling | None,
        *,
        poke: Callable[[str], None],
        counts: BufferCounts,
    ) -> None:
        self.name = name
        self.scaling = scaling
        self.poke = poke
        self.rng = random.Random()
        self.sample = IntervalStats()
        now = trio.current_time()
        self.recorder: ConcurrencyRecorder | None = None
        self.buffer: ScaleBuffer | None = None
        if scaling is None:
            return
        self.recorder = ConcurrencyRecorder(
            now, stable_window=scaling.stable_window.seconds, panic_window=panic_window(scaling)
        )
        if scaling.buffer_enabled:

            def depth(value: int) -> None:
                counts.depths[name] = value

            self.buffer = ScaleBuffer(
                size=scaling.buffer_size,
                timeout=float(scaling.buffer_timeout_secs),
                on_result=lambda result: counts.result(name, result),
                on_change=depth,
            )

    def enter(self) -> None:
        """A request of this service starts (in flight or waiting)."""
        recorder = self.recorder
        if recorder is not None:
            recorder.add(trio.current_time(), 1)

    def leave(self) -> None:
        """A request of this service has ended."""
        recorder = self.recorder
        if recorder is not None:
            recorder.add(trio.current_time(), -1)

    def capacity_freed(self) -> None:
        """An attempt ended: the head waiter may fit now."""
        buffer = self.buffer
        if buffer is not None and buffer.depth:
            buffer.release(1)

    def ready(self) -> None:
        """A backend became available: every waiter re-runs its selection."""
        buffer = self.buffer
        if buffer is not None and buffer.depth:
            buffer.release()

    def activate(self) -> None:
        """No backend is available: poke the autoscaler (it scales from zero at once)."""
        if self.scaling is not None:
            self.poke(self.name)

    def record(self, *, error: bool, latency: float | None) -> None:
        """One finished attempt at the rollout's ``to`` revision."""
        self.sample.record(error=error, latency=latency, rng=self.rng)

    def take_sample(self) -> IntervalStats:
        """The rollout sample so far; a new one starts."""
        sample, self.sample = self.sample, IntervalStats()
        return sample

    def averages(self) -> Averages | None:
        """This process's stable and panic concurrency (None: no complete bucket yet)."""
        recorder = self.recorder
        return recorder.averages(trio.current_time()) if recorder is not None else None

    def close(self, reason: str) -> None:
        """The service is gone (or its scaling changed): waiters get 503 ``reason``."""
        if self.buffer is not None:
            self.buffer.close(reason)


def attach(
    runtime: RuntimeConfig,
    previous: RuntimeConfig | None,
    *,
    poke: Callable[[str], None],
    counts: BufferCounts,
) -> None:
    """Give ``runtime``'s scaled and split services their live state (module docstring)."""
    before: Mapping[str, ServiceRuntime] = previous.services if previous is not None else {}
    kept: set[int] = set()
    for name, service in runtime.services.items():
        scale = service.scale
        if scale is None:
            continue
        old_service = before.get(name)
        old = old_service.scale if old_service is not None else None
        if old is not None and old.signature == scale.signature and old.split is not None:
            scale.split = old.split  # the live weights carry on (SPEC §11.8 "Reload")
        if old is not None and old.live is not None and old.scaling == scale.scaling:
            scale.live = old.live
            kept.add(id(old.live))
        else:
            scale.live = LiveService(name, scale.scaling, poke=poke, counts=counts)
    for old_service in before.values():
        old_scale = old_service.scale
        if old_scale is not None and old_scale.live is not None and id(old_scale.live) not in kept:
            old_scale.live.close("no available backend")


def close_all(runtime: RuntimeConfig | None, reason: str) -> None:
    """A drain: every waiter of ``runtime`` gets 503 ``reason``."""
    if runtime is None:
        return
    for service in runtime.services.values():
        scale = service.scale
        if scale is not None and scale.live is not None:
            scale.live.close(reason)
