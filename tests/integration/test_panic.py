"""Panic mode in the running gateway (SPEC §7.1, §9.1): an in-process ``Gateway`` in front of
three real origins, two of them made unavailable by active health checks or passive ejection.
Below ``panic_threshold`` every weight-positive backend serves again and each such request is
counted in ``a3s_lb_panic_total``; without it only the available one serves. Real sockets, so
the real clock: every wait is for a condition, never a sleep.
"""

from __future__ import annotations

import re

import pytest
import trio

from tests.support.gateway import (
    GatewayHandle,
    config_text,
    curl,
    running_gateway,
    server_entry,
    service_block,
)
from tests.support.health import CHECK, probed, served_by
from tests.support.origin import Echo, Fixed, Origin

pytestmark = pytest.mark.integration


#: One error ejects, for a minute; every backend may be ejected.
PASSIVE = """
    passive_health {
      error_threshold      = 1
      recovery_time        = "1m"
      max_recovery_time    = "1m"
      max_ejection_percent = 100
    }
"""


@pytest.fixture
async def origins(nursery: trio.Nursery) -> list[Origin]:
    servers = [Origin(name) for name in "abc"]
    for server in servers:
        await nursery.start(server.serve)
    return servers


async def unhealthy(*origins: Origin) -> None:
    """Make ``origins`` fail their probes, and wait until the gateway has seen a failure."""
    for origin in origins:
        origin.on("/health", Fixed(503, b"down"))
    for origin in origins:
        await probed(origin, 2)


def panics(gateway: GatewayHandle, service: str = "main") -> float:
    """``a3s_lb_panic_total{service}`` from the gateway's exposition (0 when absent)."""
    text = gateway.gateway.metrics_text()
    assert text is not None
    found = re.search(
        rf'^a3s_lb_panic_total\{{service="{service}"\}} (\S+)$', text.decode(), re.MULTILINE
    )
    return float(found[1]) if found else 0.0


def panic_line(threshold: int | None) -> str:
    return "" if threshold is None else f"    panic_threshold = {threshold}\n"


async def test_below_the_threshold_unhealthy_backends_serve_again(origins: list[Origin]) -> None:
    a, b, c = origins
    config = config_text([server_entry(o) for o in origins], balancer=CHECK + panic_line(50))
    async with running_gateway(config) as gw:
        await unhealthy(b, c)
        # One of three available: 33 % < 50 %, so round-robin spreads over all three.
        assert sorted(await served_by(gw, 6)) == ["a", "a", "b", "b", "c", "c"]
        assert panics(gw) == 6
        # b recovers: two of three (67 %) is not below 50 %, so c gets nothing.
        b.on("/health", Fixed(200, b"ok"))
        await probed(b, 2)
        assert sorted(await served_by(gw, 4)) == ["a", "a", "b", "b"]
        assert panics(gw) == 6
    assert a.requests  # the healthy one was probed and served too


async def test_without_a_threshold_only_the_healthy_backend_serves(
    origins: list[Origin],
) -> None:
    _, b, c = origins
    config = config_text([server_entry(o) for o in origins], balancer=CHECK + panic_line(None))
    async with running_gateway(config) as gw:
        await unhealthy(b, c)
        assert await served_by(gw, 6) == ["a"] * 6
        assert panics(gw) == 0


async def test_ejected_backends_serve_again_in_panic(origins: list[Origin]) -> None:
    a, b, c = origins
    for origin in (b, c):
        origin.on("/work", Fixed(500, b"boom"))
    config = config_text([server_entry(o) for o in origins], balancer=PASSIVE + panic_line(50))
    async with running_gateway(config) as gw:
        # Round-robin a, b, c: b and c answer 500 once each and are ejected for a minute.
        statuses = [(await curl(gw.url("/work"))).response.status for _ in range(3)]
        assert statuses == [200, 500, 500]
        runtime = gw.gateway.runtime
        assert runtime is not None
        assert [backend.available for backend in runtime.services["main"].backends] == [
            True,
            False,
            False,
        ]
        before = panics(gw)
        for origin in (b, c):
            origin.on("/work", Echo())
        # Still ejected, yet they serve: one of three available is below 50 %.
        assert set(await served_by(gw, 6)) == {"a", "b", "c"}
        assert panics(gw) == before + 6
    assert a.requests


async def test_a_failover_service_takes_a_primary_with_nothing_available(
    origins: list[Origin],
) -> None:
    a, b, c = origins
    config = config_text(
        [server_entry(a), server_entry(b)],
        balancer=CHECK + panic_line(50),
        service_extra='  failover {\n    service = "backup"\n  }',
        more=service_block("backup", [server_entry(c)]),
    )
    async with running_gateway(config) as gw:
        await unhealthy(a, b)
        assert await served_by(gw, 3) == ["c"] * 3
        assert panics(gw) == 0


async def test_without_a_failover_panic_serves_a_pool_with_nothing_available(
    origins: list[Origin],
) -> None:
    a, b, _ = origins
    config = config_text([server_entry(a), server_entry(b)], balancer=CHECK + panic_line(50))
    async with running_gateway(config) as gw:
        await unhealthy(a, b)
        # 0 % available: rather than 503, the unhealthy backends are tried (Envoy's choice).
        assert sorted(await served_by(gw, 4)) == ["a", "a", "b", "b"]
        assert panics(gw) == 4
