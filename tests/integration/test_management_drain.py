"""The management API started by ``Gateway.serve`` (SPEC §9.6): it answers while the gateway
drains (``/ready`` 503 so a load balancer stops sending, ``/live`` still 200), while the
entrypoints have already stopped accepting."""

from __future__ import annotations

import pytest
import trio

from a3s_gateway.app import Gateway
from tests.support.gateway import (
    LOCAL,
    config_text,
    curl,
    free_port,
    load,
    server_entry,
    wait_refused,
)
from tests.support.origin import Origin, SlowHead

pytestmark = pytest.mark.integration


async def test_probes_answer_during_the_drain(nursery: trio.Nursery) -> None:
    origin = Origin("a")
    await nursery.start(origin.serve)
    release = trio.Event()
    origin.on("/slow", SlowHead(release))
    admin = free_port()
    more = f'management {{\n  address = "{LOCAL}:{admin}"\n}}\n'
    gateway = Gateway(load(config_text([server_entry(origin)], more=more)))
    await nursery.start(gateway.serve)
    port = gateway.addresses()["web"][0][1]
    base = f"http://{LOCAL}:{admin}/api/gateway"
    ready = await curl(f"{base}/ready")
    assert ready.response.status == 200

    slow: list[int] = []
    answered = trio.Event()

    async def in_flight() -> None:
        result = await curl(f"http://{LOCAL}:{port}/slow")
        slow.append(result.response.status)
        answered.set()

    nursery.start_soon(in_flight)
    await origin.wait_for(lambda: bool(origin.requests))
    nursery.start_soon(gateway.shutdown, 10.0)
    with trio.fail_after(10):
        await wait_refused(port)  # the entrypoint stopped accepting
    draining = await curl(f"{base}/ready")
    live = await curl(f"{base}/live")
    release.set()
    with trio.fail_after(10):
        await answered.wait()
    assert draining.response.status == 503
    assert b"stopping" in draining.response.body
    assert live.response.status == 200
    assert slow == [200]
