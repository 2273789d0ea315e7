"""Scale executors (SPEC §11.9): the ``Executor`` interface the autoscaler loop calls, the
``mock`` executor, and ``make_executor``, which builds the executor a service's ``scaling``
block names (``box``, ``kubernetes`` or its alias ``k8s``, ``local``, ``mock``).

Ring 1. Nurseries: none here; an executor's background work runs in ``Executor.run``, which
its owner starts with ``nursery.start`` (only ``local`` does real work there: its children
belong to that nursery). Deadlines: none here; each executor bounds its own calls (``box``:
``box.timeout``; ``kubernetes``: 10 s; ``local``: ``stop_timeout`` for stops and 10 s for an
answer from ``run``), see ``executor_http.py`` and ``executor_local.py``. The value types
(``ScaleResult``, ``Current``, ``ExecutorError``) are defined in ``executor_http.py`` and
re-exported here, so that module and ``executor_local.py`` need not import this one.

Must not: decide how many replicas a service needs (``autoscaler.py`` does), or retry a failed
call (the loop asks again at its next tick).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, assert_never

import trio

from a3s_gateway.config.schema_services import BoxExecutor as BoxSettings
from a3s_gateway.config.schema_services import KubernetesExecutor as KubernetesSettings
from a3s_gateway.scaling.executor_http import (
    BoxExecutor,
    Current,
    ExecutorError,
    KubernetesExecutor,
    ScaleResult,
)
from a3s_gateway.scaling.executor_local import LocalExecutor

if TYPE_CHECKING:
    import logging
    from collections.abc import Mapping

    from a3s_gateway.config.schema_services import Scaling

__all__ = [
    "BoxExecutor",
    "Current",
    "Executor",
    "ExecutorError",
    "KubernetesExecutor",
    "LocalExecutor",
    "MockExecutor",
    "ScaleResult",
    "make_executor",
]


class Executor(Protocol):
    """What the autoscaler loop needs from an executor. ``name`` is ``box``, ``kubernetes``,
    ``local`` or ``mock``. Every call is bounded by the executor's own deadline; ``scale`` and
    ``current`` raise ``ExecutorError`` (one line, no secrets) when a call fails, times out or
    is answered with something invalid."""

    name: str

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Background work until cancelled (``local``: its children); started with
        ``nursery.start``. The others report started and sleep."""
        ...

    async def scale(self, service: str, desired: int, reason: str, *, current: int) -> ScaleResult:
        """Ask for ``desired`` replicas of ``service`` (``current`` is what the caller last
        saw). Raises ``ExecutorError``."""
        ...

    async def current(self, service: str) -> Current:
        """The replicas the executor reports now. Raises ``ExecutorError``."""
        ...

    async def aclose(self) -> None:
        """Release what the executor holds (``local``: stop every child); bounded."""
        ...


class MockExecutor:
    """The ``mock`` executor: records every decision in ``decisions`` as ``(service,
    desired, reason)``, reports the last desired count (0 before any) and accepts everything.
    For tests and dry runs."""

    name = "mock"

    def __init__(self) -> None:
        self.decisions: list[tuple[str, int, str]] = []
        self._desired: dict[str, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Nothing runs in the background: report started and sleep until cancelled."""
        task_status.started()
        await trio.sleep_forever()

    async def scale(self, service: str, desired: int, reason: str, *, current: int) -> ScaleResult:
        """Record the decision (a negative count as 0) and accept it."""
        await trio.lowlevel.checkpoint()
        desired = max(0, desired)
        self.decisions.append((service, desired, reason))
        self._desired[service] = desired
        return ScaleResult(True, desired, "recorded")

    async def current(self, service: str) -> Current:
        """The last desired count of ``service`` (0 before any decision)."""
        await trio.lowlevel.checkpoint()
        return Current(self._desired.get(service, 0), None)

    async def aclose(self) -> None:
        """Nothing to release."""
        await trio.lowlevel.checkpoint()


def make_executor(
    service: str, scaling: Scaling, *, environ: Mapping[str, str], log: logging.Logger
) -> Executor:
    """The executor ``scaling.executor`` names for ``service``, configured by its block (the
    defaults when the block is absent). ``environ`` is where ``box.token_env``, the Kubernetes
    settings and the ``local`` children's environment come from. No I/O happens here. Raises
    ``ExecutorError`` for ``local`` without a ``local`` block (config validation requires one)."""
    match scaling.executor:
        case "box":
            return BoxExecutor(service, scaling.box or BoxSettings(), environ=environ, log=log)
        case "kubernetes" | "k8s":
            settings = scaling.kubernetes or KubernetesSettings()
            return KubernetesExecutor(service, settings, environ=environ, log=log)
        case "local":
            if scaling.local is None:
                raise ExecutorError(f"service {service}: executor local needs a local block")
            return LocalExecutor(
                service, scaling.local, environ=environ, log=log, slots=scaling.max_replicas
            )
        case "mock":
            return MockExecutor()
        case unknown:
            assert_never(unknown)
