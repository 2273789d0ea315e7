"""Scaling inside one gateway process (SPEC §11.1, §13.4): the glue between ``app.Gateway``,
the per-process state of its scaled and split services (``scaling/live.py``) and, in the
single process, the control side (``scaling/loop.py``).

Ring 1. ``ProcessScaling.on_generation`` is called with every generation the gateway starts
serving: it attaches the services' live state (kept across reloads where unchanged) and hands
the generation to the ``ScalingControl`` when this process runs one. In the single process the
control's feed is this object: the concurrency averages and rollout samples of its own live
state, and a new split set on its own live ``RevisionSplit``. A worker of ``--workers N`` runs no
control: its pokes go to the supervisor (``set_poke``), the supervisor's splits arrive through
``apply_split``, and the supervisor asks for ``report`` (the concurrency averages per service
and the rollout samples since the last report).

Nurseries: none of its own; ``run`` is the control's (``ScalingControl.run``) or sleeps.
Must not: choose backends or wait on a request.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.scaling.live import BufferCounts, attach, close_all
from a3s_gateway.scaling.loop import ScalingControl

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from a3s_gateway.runtime.compile import RuntimeConfig
    from a3s_gateway.scaling.concurrency import Averages
    from a3s_gateway.scaling.rollout import IntervalStats
    from a3s_gateway.scaling.service import ServiceScale

__all__ = ["ProcessScaling", "set_split"]

log: Final = logging.getLogger("a3s_gateway.scaling")


class ProcessScaling:
    """One process's scaling (module docstring)."""

    def __init__(self, current: Callable[[], RuntimeConfig | None], *, control: bool) -> None:
        self._current = current
        self.counts = BufferCounts()
        self.control = ScalingControl(self) if control else None
        self._poke: Callable[[str], None] | None = None
        #: The generation being attached (``on_generation``), before it is the current one.
        self._next: RuntimeConfig | None = None
        #: A worker: the splits the supervisor sent last, by service; each new generation
        #: gets them too (one may arrive while a reload is being applied).
        self._splits: dict[str, tuple[int, ...]] = {}

    def set_poke(self, poke: Callable[[str], None]) -> None:
        """A worker: where a request that found no backend sends its service's name."""
        self._poke = poke

    def poke(self, service: str) -> None:
        if self.control is not None:
            self.control.poke(service)
        elif self._poke is not None:
            self._poke(service)

    def on_generation(self, runtime: RuntimeConfig, previous: RuntimeConfig | None) -> None:
        """``runtime`` is served from now on (module docstring)."""
        attach(runtime, previous, poke=self.poke, counts=self.counts)
        self._next = runtime
        try:
            for service, percents in self._splits.items():
                self._set_split(service, percents)
            if self.control is not None:
                self.control.apply(runtime)
        finally:
            self._next = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.control is not None:
            await self.control.run(task_status=task_status)
            return
        task_status.started()
        await trio.sleep_forever()

    def drain(self) -> None:
        """The gateway drains: every buffered request gets 503 ``shutting down``."""
        close_all(self._current(), "shutting down")

    # -- the feed of the single process's control ----------------------------------------------

    def _scale(self, service: str) -> ServiceScale | None:
        runtime = self._next if self._next is not None else self._current()
        return runtime.scale_of(service) if runtime is not None else None

    async def concurrency(self, service: str) -> Averages | None:
        scale = self._scale(service)
        if scale is None or scale.live is None:
            return None
        return scale.live.averages()

    async def rollout_sample(self, service: str) -> IntervalStats | None:
        scale = self._scale(service)
        if scale is None or scale.live is None:
            return None
        return scale.live.take_sample()

    def publish(self, service: str, percents: tuple[int, ...]) -> None:
        self.apply_split(service, percents)

    def reset_sample(self, service: str) -> None:
        scale = self._scale(service)
        if scale is not None and scale.live is not None:
            scale.live.take_sample()

    # -- a worker ------------------------------------------------------------------------------

    def apply_split(self, service: str, percents: Sequence[int]) -> None:
        """Set the live split of ``service`` (the control's decision; a worker keeps it for
        the generations it serves later)."""
        if self.control is None:
            self._splits[service] = tuple(percents)
        self._set_split(service, percents)

    def forget_splits(self, keep: Collection[str]) -> None:
        """A worker: the supervisor's table no longer has the others (their rollout is gone):
        they are back at their configured split."""
        runtime = self._current()
        for name in [name for name in self._splits if name not in keep]:
            del self._splits[name]
            service = runtime.config.services.get(name) if runtime is not None else None
            if service is not None and service.revisions:
                self._set_split(name, [r.traffic_percent for r in service.revisions])

    def _set_split(self, service: str, percents: Sequence[int]) -> None:
        set_split(self._scale(service), service, percents)

    def report(self) -> dict[str, tuple[Averages | None, IntervalStats | None]]:
        """Per scaled or split service: this process's concurrency averages and its rollout
        sample since the last report (a new sample starts)."""
        runtime = self._current()
        found: dict[str, tuple[Averages | None, IntervalStats | None]] = {}
        if runtime is None:
            return found
        for name, service in runtime.services.items():
            scale = service.scale
            if scale is None or scale.live is None:
                continue
            sample = scale.live.take_sample() if scale.rollout_to is not None else None
            found[name] = (scale.live.averages(), sample)
        return found


def set_split(scale: ServiceScale | None, service: str, percents: Sequence[int]) -> bool:
    """Set the live split of ``service`` (``scale``: its scaling and revisions in the
    generation at hand; nothing to set without a split); False, with a warning, when the
    percents do not fit its revisions (the generation changed them meanwhile)."""
    if scale is None or scale.split is None:
        return True
    try:
        scale.split.set_percents(percents)
    except ValueError as error:
        log.warning("split for service %s not applied: %s", service, error)
        return False
    return True
