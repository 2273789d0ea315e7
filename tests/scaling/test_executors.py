"""``make_executor`` for every executor kind (and the ``k8s`` alias), and the ``mock`` executor."""

from __future__ import annotations

import logging
import sys
from typing import Literal

import pytest
import trio

from a3s_gateway.config.schema_services import BoxExecutor as BoxSettings
from a3s_gateway.config.schema_services import KubernetesExecutor as KubernetesSettings
from a3s_gateway.config.schema_services import LocalExecutor as LocalSettings
from a3s_gateway.config.schema_services import Scaling
from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.scaling.executors import (
    BoxExecutor,
    Current,
    Executor,
    ExecutorError,
    KubernetesExecutor,
    LocalExecutor,
    MockExecutor,
    ScaleResult,
    make_executor,
)

LOG = logging.getLogger("tests.scaling.executors")
LOCAL = LocalSettings(command=(sys.executable, "-c", "pass", "{port}"), base_port=9100)
IN_CLUSTER = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


def make(scaling: Scaling, environ: dict[str, str] | None = None) -> Executor:
    return make_executor("api", scaling, environ=environ or {}, log=LOG)


def test_box_is_the_default() -> None:
    executor = make(Scaling())
    assert isinstance(executor, BoxExecutor)
    assert executor.name == "box"


def test_box_with_its_block() -> None:
    block = BoxSettings(url=HttpUrl("https://box.example:9443/api"), token_env="BOX_TOKEN")
    executor = make(Scaling(executor="box", box=block), {"BOX_TOKEN": "t"})
    assert isinstance(executor, BoxExecutor)


@pytest.mark.parametrize("kind", ["kubernetes", "k8s"])
def test_kubernetes_and_its_alias(
    kind: Literal["kubernetes", "k8s"], caplog: pytest.LogCaptureFixture
) -> None:
    block = KubernetesSettings(namespace="shop", kind="statefulsets")
    scaling = Scaling(executor=kind, kubernetes=block)
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        executor = make(scaling, IN_CLUSTER)
    assert isinstance(executor, KubernetesExecutor)
    assert executor.name == "kubernetes"
    assert caplog.records == []  # (an API server was found)
    assert isinstance(make(Scaling(executor="k8s"), IN_CLUSTER), KubernetesExecutor)


def test_local() -> None:
    executor = make(Scaling(executor="local", local=LOCAL))
    assert isinstance(executor, LocalExecutor)
    assert executor.name == "local"
    with pytest.raises(ExecutorError, match="needs a local block"):
        make(Scaling(executor="local"))


async def test_mock_records_decisions_and_accepts_them() -> None:
    executor = make(Scaling(executor="mock"))
    assert isinstance(executor, MockExecutor)
    assert executor.name == "mock"
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(executor.run)
            assert await executor.current("api") == Current(0, None)
            assert await executor.scale("api", 3, "load", current=0) == ScaleResult(
                True, 3, "recorded"
            )
            assert await executor.current("api") == Current(3, None)
            assert await executor.scale("api", -1, "idle", current=3) == ScaleResult(
                True, 0, "recorded"
            )
            await executor.scale("web", 2, "load", current=0)
            assert await executor.current("api") == Current(0, None)
            assert await executor.current("web") == Current(2, None)
            nursery.cancel_scope.cancel()
        await executor.aclose()
    assert executor.decisions == [("api", 3, "load"), ("api", 0, "idle"), ("web", 2, "load")]
