"""Health and affinity in the running gateway (issue #6, SPEC §7.4–7.6): an in-process ``Gateway``
in front of two real test origins whose ``/health`` answer the tests change. Real sockets, so
the real clock: every wait is for a condition (probes the origin has received), bounded by the
test's time limit, never a sleep. Also a gateway built as a worker of ``--workers N`` builds it
(``probes=False``, SPEC §13.4): it probes nothing and routes by the health it is pushed, from
the start and across a reload; one that probes itself refuses pushes.
"""

from __future__ import annotations

import logging

import pytest
import trio

from a3s_gateway import Gateway
from a3s_gateway.errors import GatewayError
from a3s_gateway.services import PassiveState
from tests.support.gateway import (
    CurlResult,
    GatewayHandle,
    config_text,
    curl,
    free_port,
    load,
    running_gateway,
    server_entry,
    service_block,
)
from tests.support.health import CHECK, probed, probes, served_by
from tests.support.origin import Echo, Fixed, Origin

pytestmark = pytest.mark.integration


@pytest.fixture
async def origin_a(nursery: trio.Nursery) -> Origin:
    server = Origin("a")
    await nursery.start(server.serve)
    return server


@pytest.fixture
async def origin_b(nursery: trio.Nursery) -> Origin:
    server = Origin("b")
    await nursery.start(server.serve)
    return server


def two_origins(a: Origin, b: Origin | None) -> str:
    servers = [server_entry(a)] + ([server_entry(b)] if b is not None else [])
    return config_text(servers, balancer=CHECK)


async def test_a_failing_backend_gets_no_traffic_until_it_recovers(
    origin_a: Origin, origin_b: Origin
) -> None:
    origin_a.on("/health", Fixed(200, b"ok"))
    origin_b.on("/health", Fixed(503, b"down"))
    async with running_gateway(two_origins(origin_a, origin_b)) as gw:
        await probed(origin_b, 2)
        assert await served_by(gw, 4) == ["a"] * 4
        origin_b.on("/health", Fixed(200, b"ok"))
        await probed(origin_b, 2)
        assert sorted(await served_by(gw, 4)) == ["a", "a", "b", "b"]
    probe = next(r for r in origin_b.requests if r.path == b"/health")
    assert probe.method == b"GET"
    assert probe.values(b"connection") == [b"close"]
    assert probe.values(b"user-agent")[0].startswith(b"a3s-gateway-health/")


async def test_a_gateway_told_its_health_probes_nothing_and_routes_by_what_it_is_told(
    origin_a: Origin, origin_b: Origin
) -> None:
    url_b = f"http://127.0.0.1:{origin_b.port}"
    gateway = Gateway(load(two_origins(origin_a, origin_b)), probes=False)
    gateway.push_health([("main", url_b, False)], full=True)  # before it serves: from the start
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        handle = GatewayHandle(gateway, gateway.addresses()["web"][0][1])
        assert await served_by(handle, 4) == ["a"] * 4
        gateway.push_health([("main", url_b, True)])
        assert sorted(await served_by(handle, 4)) == ["a", "a", "b", "b"]
        gateway.push_health([("main", url_b, False)])
        await gateway.reload(load(two_origins(origin_a, origin_b)))  # the verdict carries on
        assert await served_by(handle, 4) == ["a"] * 4
        await gateway.shutdown(1.0)
    assert probes(origin_a) == probes(origin_b) == 0
    with pytest.raises(GatewayError, match="probes=False"):
        Gateway(load(two_origins(origin_a, origin_b))).push_health([("main", url_b, True)])


async def test_a_reload_keeps_the_health_state_and_stops_old_probers(
    origin_a: Origin, origin_b: Origin
) -> None:
    origin_a.on("/health", Fixed(200, b"ok"))
    origin_b.on("/health", Fixed(503, b"down"))
    async with running_gateway(two_origins(origin_a, origin_b)) as gw:
        await probed(origin_b, 2)
        # Same config again: the new generation's backends start unhealthy like the old ones,
        # so not one request reaches b in between.
        await gw.gateway.reload(load(two_origins(origin_a, origin_b)))
        assert await served_by(gw, 4) == ["a"] * 4
        # Without b: its prober is cancelled with the old generation.
        await gw.gateway.reload(load(two_origins(origin_a, None)))
        after_reload = probes(origin_b)
        await probed(origin_a, 3)
        assert probes(origin_b) <= after_reload + 1  # at most one probe already under way


PASSIVE = """
    passive_health {
      error_threshold   = 2
      window            = "30s"
      recovery_time     = "1s"
      max_recovery_time = "1s"
    }
"""


async def statuses(gateway: GatewayHandle, count: int) -> list[tuple[int, str]]:
    seen = []
    for _ in range(count):
        result = await curl(gateway.url("/work"))
        response = result.response
        origin = str(response.json()["origin"]) if response.status == 200 else "-"
        seen.append((response.status, origin))
    return seen


async def test_a_backend_answering_5xx_is_ejected_then_readmitted(
    origin_a: Origin, origin_b: Origin
) -> None:
    origin_b.on("/work", Fixed(500, b"boom"))
    config = config_text([server_entry(origin_a), server_entry(origin_b)], balancer=PASSIVE)
    async with running_gateway(config) as gw:
        # Round-robin: b answers 500 twice and is ejected (max 50 % of two backends: one).
        assert await statuses(gw, 4) == [(200, "a"), (500, "-"), (200, "a"), (500, "-")]
        assert await statuses(gw, 4) == [(200, "a")] * 4
        runtime = gw.gateway.runtime
        assert runtime is not None
        service = runtime.services["main"]
        outliers = service.outliers
        assert outliers is not None
        backend_b = service.backends[1]
        until = outliers.ejected_until(backend_b)
        assert until is not None
        # b recovers; once its ejection time is over it is selected again.
        origin_b.on("/work", Echo())
        await trio.sleep_until(until)
        assert sorted(origin for _, origin in await statuses(gw, 4)) == ["a", "a", "b", "b"]


STICKY = """
    sticky {
      cookie = "pin"
    }
"""


def cookie_of(result: CurlResult) -> str:
    value = result.response.header(b"set-cookie")
    assert value is not None, result.stderr
    pair = value.decode().split(";")[0]
    assert pair.startswith("pin=")
    return pair


async def test_a_sticky_client_keeps_its_backend_across_a_restart(
    origin_a: Origin, origin_b: Origin
) -> None:
    config = config_text([server_entry(origin_a), server_entry(origin_b)], balancer=STICKY)
    async with running_gateway(config) as gw:
        first = await curl(gw.url("/work"))
        pinned = str(first.response.json()["origin"])
        cookie = cookie_of(first)
        again = [await curl(gw.url("/work"), "-b", cookie) for _ in range(4)]
        fresh = [await curl(gw.url("/work")) for _ in range(2)]
    assert [str(r.response.json()["origin"]) for r in again] == [pinned] * 4
    assert all(r.response.header(b"set-cookie") is None for r in again)  # valid: no new cookie
    # Without the cookie, round-robin goes on and every answer carries a cookie.
    assert all(r.response.header(b"set-cookie") is not None for r in fresh)
    # A new gateway process state (a restart): the cookie still names the same backend.
    async with running_gateway(config) as gw:
        after = [await curl(gw.url("/work"), "-b", cookie) for _ in range(4)]
        forged = await curl(gw.url("/work"), "-b", cookie[:-2] + "xx")
    assert [str(r.response.json()["origin"]) for r in after] == [pinned] * 4
    assert forged.response.header(b"set-cookie") is not None  # tampered: re-issued


async def test_a_sticky_client_moves_when_its_backend_is_ejected(
    origin_a: Origin, origin_b: Origin
) -> None:
    config = config_text(
        [server_entry(origin_a), server_entry(origin_b)], balancer=STICKY + PASSIVE
    )
    async with running_gateway(config) as gw:
        first = await curl(gw.url("/work"))
        pinned = str(first.response.json()["origin"])
        cookie = cookie_of(first)
        broken, healthy = (origin_a, "b") if pinned == "a" else (origin_b, "a")
        broken.on("/work", Fixed(500, b"boom"))
        for _ in range(2):  # two errors eject the pinned backend
            assert (await curl(gw.url("/work"), "-b", cookie)).response.status == 500
        moved = await curl(gw.url("/work"), "-b", cookie)
    assert str(moved.response.json()["origin"]) == healthy
    assert cookie_of(moved) != cookie


async def test_failover_serves_when_every_primary_backend_is_unhealthy(
    origin_a: Origin, origin_b: Origin, caplog: pytest.LogCaptureFixture
) -> None:
    origin_a.on("/health", Fixed(503, b"down"))
    config = config_text(
        [server_entry(origin_a)],
        balancer=CHECK,
        service_extra='  failover {\n    service = "backup"\n  }',
        more=service_block("backup", [server_entry(origin_b)]),
    )
    async with running_gateway(config) as gw:
        await probed(origin_a, 2)
        quiet = await curl(gw.url("/work"))
        caplog.set_level(logging.DEBUG, logger="a3s_gateway.exchange")
        debug = await curl(gw.url("/work"))
    assert quiet.response.json()["origin"] == "b"
    assert quiet.response.header(b"x-a3s-failover") is None
    # --log-level debug: the response names the pool that served it.
    assert debug.response.header(b"x-a3s-failover") == b"backup"
    assert "request goes to failover service backup" in caplog.text
    assert not [r for r in origin_a.requests if r.path == b"/work"]


async def test_a_stopped_backend_is_ejected_by_its_connect_failures(origin_a: Origin) -> None:
    # Nothing listens on the second server's port: every connect to it is refused (a 502 for
    # passive health), and the request moves on to the live backend (connect_attempts).
    config = config_text([server_entry(origin_a), server_entry(free_port())], balancer=PASSIVE)
    async with running_gateway(config) as gw:
        assert [status for status, _ in await statuses(gw, 4)] == [200] * 4
        runtime = gw.gateway.runtime
        assert runtime is not None
        service = runtime.services["main"]
        assert service.outliers is not None
        assert service.outliers.state(service.backends[1]) is PassiveState.EJECTED
        assert not service.backends[1].available
