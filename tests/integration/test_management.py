"""The management API over a running in-process ``Gateway`` (SPEC §9.6): the gateway and a
``ManagementServer`` with ``GatewayAdapter`` started side by side in the test nursery, in front
of real test origins, queried with curl.

Covers /health fields (and the request count moving), /ready, /version, /entrypoints with the
bound port, /routes in match order, /backends showing a backend ejected by the passive
detector after its 500s, POST /reload wired the way the CLI will wire it (a good config swaps
in a new generation whose routes are listed; a bad one is 422 and the old one keeps serving),
/metrics with and without a source, and the token in front of it all.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
import trio

from a3s_gateway import __version__
from a3s_gateway.app import Gateway
from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema import Management
from a3s_gateway.config.values import Address
from a3s_gateway.errors import ConfigError, GatewayError
from a3s_gateway.management.api import ReloadOutcome
from a3s_gateway.management.server import (
    GatewayAdapter,
    ManagementServer,
    open_management_listener,
)
from tests.support.gateway import (
    config_text,
    curl,
    need_tool,
    router_block,
    running_gateway,
    server_entry,
)
from tests.support.origin import Fixed, Origin

pytestmark = pytest.mark.integration

TOKEN = "integration-token-7c41"
PASSIVE = """
    passive_health {
      error_threshold   = 2
      window            = "30s"
      recovery_time     = "60s"
      max_recovery_time = "60s"
    }
"""


@pytest.fixture(autouse=True)
def need_curl() -> None:
    need_tool("curl", "to query the management API")


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


class Api:
    """A management server started next to a gateway; ``get``/``post`` return curl results."""

    def __init__(self, port: int) -> None:
        self.port = port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/api/gateway{path}"

    async def json(self, path: str, *args: str) -> object:
        result = await curl(*args, self.url(path))
        assert result.response.status == 200, result
        document: object = json.loads(result.response.body)
        return document


async def start_api(
    nursery: trio.Nursery,
    gateway: Gateway,
    *,
    reload: Callable[[], Awaitable[ReloadOutcome]] | None = None,
    metrics: Callable[[], bytes | None] | None = None,
    environ: dict[str, str] | None = None,
) -> Api:
    settings = Management(address=Address("127.0.0.1:0"))
    listeners = await open_management_listener(settings)
    adapter = GatewayAdapter(gateway, reload=reload, metrics=metrics)
    server = ManagementServer(settings, adapter, environ=environ if environ is not None else {})
    await nursery.start(server.serve, listeners)
    return Api(int(listeners[0].socket.getsockname()[1]))


def as_dict(value: object) -> dict[str, object]:
    assert isinstance(value, dict)
    return value


def as_list(value: object) -> list[dict[str, object]]:
    assert isinstance(value, list)
    return [as_dict(item) for item in value]


async def test_health_ready_version_and_entrypoints(
    nursery: trio.Nursery, origin_a: Origin
) -> None:
    async with running_gateway(config_text([server_entry(origin_a)])) as gw:
        api = await start_api(nursery, gw.gateway)
        before = as_dict(await api.json("/health"))
        assert before["state"] == "running"
        assert before["version"] == __version__
        assert before["config_generation"] == 1
        assert before["workers"] == 1
        assert before["last_reload"] is None
        assert isinstance(before["uptime_secs"], float)
        for _ in range(3):
            assert (await curl(gw.url("/x"))).response.status == 200
        after = as_dict(await api.json("/health"))
        assert after["total_requests"] == as_int(before["total_requests"]) + 3
        assert await api.json("/ready") == {"ready": True}
        assert await api.json("/version") == {"name": "a3s-gateway", "version": __version__}
        (web,) = as_list(await api.json("/entrypoints"))
        assert web["name"] == "web"
        assert web["bound"] == [f"127.0.0.1:{gw.port}"]


def as_int(value: object) -> int:
    assert isinstance(value, int)
    return value


async def test_routes_are_listed_in_match_order(nursery: trio.Nursery, origin_a: Origin) -> None:
    more = (
        router_block("docs", "PathPrefix(`/docs`)", "main")
        + router_block("exact", "Path(`/docs/index`)", "main").replace("}", "  priority = 100\n}")
        + router_block("host", "Host(`api.example`)", "main").replace("}", "  priority = 50\n}")
    )
    async with running_gateway(config_text([server_entry(origin_a)], more=more)) as gw:
        api = await start_api(nursery, gw.gateway)
        routes = as_list(await api.json("/routes"))
        # Explicit priorities first, then the default (the rule's length, SPEC §4.7).
        assert [(route["name"], route["effective_priority"]) for route in routes] == [
            ("exact", 100),
            ("host", 50),
            ("docs", len("PathPrefix(`/docs`)")),
            ("main", len("PathPrefix(`/`)")),
        ]
        docs = as_dict(await api.json("/routes/docs"))
        assert (docs["rule"], docs["service"], docs["status"]) == (
            "PathPrefix(`/docs`)",
            "main",
            "active",
        )
        missing = await curl(api.url("/routes/nope"))
        assert missing.response.status == 404
        assert missing.response.json() == {"error": "route not found"}


async def test_backends_show_a_passively_ejected_backend(
    nursery: trio.Nursery, origin_a: Origin, origin_b: Origin
) -> None:
    origin_b.on("/work", Fixed(500, b"boom"))
    config = config_text([server_entry(origin_a), server_entry(origin_b)], balancer=PASSIVE)
    async with running_gateway(config) as gw:
        api = await start_api(nursery, gw.gateway)
        healthy = as_list(await api.json("/backends"))
        assert [backend["ejected"] for backend in healthy] == [False, False]
        # Round-robin: b answers 500 twice and is ejected.
        statuses = [(await curl(gw.url("/work"))).response.status for _ in range(4)]
        assert statuses == [200, 500, 200, 500]
        backends = as_list(await api.json("/backends"))
        a, b = backends
        assert (a["url"], a["ejected"], a["available"]) == (
            f"http://127.0.0.1:{origin_a.port}",
            False,
            True,
        )
        assert (b["url"], b["ejected"], b["available"], b["passive_state"]) == (
            f"http://127.0.0.1:{origin_b.port}",
            True,
            False,
            "ejected",
        )
        assert isinstance(b["ejected_until"], str)
        assert b["ejected_until"].endswith("Z")
        service = as_dict(await api.json("/services/main"))
        assert (service["backends_total"], service["backends_available"]) == (2, 1)


async def test_reload_through_the_api(nursery: trio.Nursery, origin_a: Origin) -> None:
    first = config_text([server_entry(origin_a)])
    current = [first]

    async with running_gateway(first) as gw:
        gateway = gw.gateway

        async def reload_from_file() -> ReloadOutcome:
            # What the CLI's reload does, reading ``current[0]`` instead of the file.
            try:
                config = load_config_text(current[0], filename="e2e.hcl")
            except ConfigError as error:
                gateway.record_failed_reload(len(error.problems))
                return ReloadOutcome(ok=False, problems=error.problems)
            try:
                generation = await gateway.reload(config)
            except GatewayError as error:
                gateway.record_failed_reload(1)
                return ReloadOutcome.failed(str(error))
            return ReloadOutcome(ok=True, generation=generation)

        api = await start_api(nursery, gateway, reload=reload_from_file)
        current[0] = first + router_block("added", "PathPrefix(`/added`)", "main")
        done = await curl("-X", "POST", api.url("/reload"))
        assert done.response.status == 200
        assert done.response.json() == {"ok": True, "generation": 2, "warnings": []}
        names = [route["name"] for route in as_list(await api.json("/routes"))]
        assert "added" in names
        health = as_dict(await api.json("/health"))
        assert health["config_generation"] == 2
        assert as_dict(health["last_reload"])["ok"] is True

        current[0] = first + 'routers "broken" {\n  rule = "Nope(`x`)"\n  service = "main"\n}\n'
        rejected = await curl("-X", "POST", api.url("/reload"))
        assert rejected.response.status == 422
        body = rejected.response.json()
        assert body["ok"] is False
        assert isinstance(body["problems"], list)
        assert body["problems"]
        health = as_dict(await api.json("/health"))
        assert health["config_generation"] == 2
        assert as_dict(health["last_reload"])["ok"] is False
        assert (await curl(gw.url("/added/x"))).response.status == 200  # old config serves


async def test_reload_without_a_file_and_metrics(nursery: trio.Nursery, origin_a: Origin) -> None:
    async with running_gateway(config_text([server_entry(origin_a)])) as gw:
        bare = await start_api(nursery, gw.gateway)
        assert (await curl("-X", "POST", bare.url("/reload"))).response.status == 409
        assert (await curl(bare.url("/metrics"))).response.status == 404
        scraped = await start_api(nursery, gw.gateway, metrics=lambda: b"a3s_config_generation 1\n")
        result = await curl(scraped.url("/metrics"))
        assert result.response.status == 200
        assert result.response.body == b"a3s_config_generation 1\n"


async def test_the_token_guards_everything_but_the_probes(
    nursery: trio.Nursery, origin_a: Origin
) -> None:
    async with running_gateway(config_text([server_entry(origin_a)])) as gw:
        api = await start_api(nursery, gw.gateway, environ={"A3S_GATEWAY_ADMIN_TOKEN": TOKEN})
        denied = await curl(api.url("/config"))
        assert denied.response.status == 401
        config = await curl("-H", f"Authorization: Bearer {TOKEN}", api.url("/config"))
        assert config.response.status == 200
        assert TOKEN.encode() not in config.response.body
        assert (await curl(api.url("/health"))).response.status == 200
