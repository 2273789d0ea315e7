"""The discovery provider through the real CLI (SPEC §10.5, §10.1, §9.6 ``/providers``).

``python -m a3s_gateway run`` with two seeds, each a real HTTP origin in this test's trio loop
serving ``/.well-known/a3s-service.json`` and ``/health`` documents the test rewrites, and
answering every other path with its own name. Traffic follows each change: an instance
appearing, a newer version whose routes win, an instance failing health (unavailable, then
removed), and the last instance going away with its routes. Polls every second; the file
provider's debounce is 100 ms, so each change is served within about two seconds.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Final

import pytest
import trio

from tests.support.gateway import LOCAL
from tests.support.origin import Fixed, Origin
from tests.support.scaling import (
    cli_gateway,
    free_ports,
    poll_until,
)

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.scaling import CliGateway

pytestmark = pytest.mark.integration

DOCUMENT: Final = "/.well-known/a3s-service.json"
#: A change must be served within this many seconds (1 s polls, 100 ms debounce, margin).
WITHIN: Final = 10.0


def serve(origin: Origin, *, version: str, rules: list[str], health: int = 200) -> None:
    document = {
        "name": "users",
        "version": version,
        "routes": [{"rule": rule} for rule in rules],
        "health_path": "/healthz",
        "future_field": True,
    }
    origin.on(DOCUMENT, Fixed(200, json.dumps(document).encode()))
    origin.on("/healthz", Fixed(health, b"ok"))


def config(port: int, admin: int, *seeds: Origin) -> str:
    listed = ", ".join(f'{{ url = "http://{LOCAL}:{seed.port}" }}' for seed in seeds)
    return (
        f'entrypoints "web" {{\n  address = "{LOCAL}:{port}"\n}}\n'
        f'management {{\n  address = "{LOCAL}:{admin}"\n}}\n'
        "providers {\n"
        '  file {\n    watch = false\n    debounce = "100ms"\n  }\n'
        "  discovery {\n"
        f"    seeds                 = [{listed}]\n"
        "    poll_interval_secs    = 1\n"
        "    timeout_secs          = 1\n"
        "    remove_after_failures = 2\n"
        "  }\n"
        "}\n"
        "shutdown_timeout_secs = 2\n"
    )


async def bodies(gateway: CliGateway, target: str, count: int = 6) -> set[str]:
    """The bodies of ``count`` requests for ``target`` (status appended when not 200)."""
    seen: set[str] = set()
    for _ in range(count):
        response = await gateway.get(target)
        text = response.body.decode(errors="replace")
        seen.add(text if response.status == 200 else f"{response.status}")
    return seen


async def discovery_status(gateway: CliGateway) -> dict[str, object]:
    response = await gateway.api("/providers")
    assert response.status == 200, response
    documents = json.loads(response.body)
    assert isinstance(documents, list)
    for document in documents:
        if document["name"] == "discovery":
            assert isinstance(document, dict)
            return document
    raise AssertionError(f"no discovery provider in {documents}")


def seeds_of(status: dict[str, object]) -> dict[str, dict[str, object]]:
    details = status["details"]
    assert isinstance(details, dict)
    seeds = details["seeds"]
    assert isinstance(seeds, dict)
    return seeds


async def test_discovered_instances_serve_traffic_and_follow_every_change(
    tmp_path: Path,
) -> None:
    a, b = Origin("a"), Origin("b")
    a.default, b.default = Fixed(200, b"from-a"), Fixed(200, b"from-b")
    serve(a, version="1.0.0", rules=["PathPrefix(`/users`)"])
    b.on(DOCUMENT, Fixed(404, b"not yet"))
    port, admin = free_ports(2)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.serve)
        await nursery.start(b.serve)
        text = config(port, admin, a, b)
        async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
            # A registers: its route serves; B's 404 document is a failed poll.
            await poll_until(
                "A's route", lambda: bodies(gateway, "/users/1"), {"from-a"}.__eq__, within=WITHIN
            )
            assert await bodies(gateway, "/v2") == {"404"}
            status = await discovery_status(gateway)
            seeds = seeds_of(status)
            seed_a = seeds[f"http://{LOCAL}:{a.port}"]
            assert seed_a["version"] == "1.0.0"
            assert seed_a["unknown_fields"] == ["future_field"]
            assert status["last_error"] is not None  # B's document

            # B appears with a newer version: its routes win, both instances serve.
            serve(b, version="1.2.0", rules=["PathPrefix(`/users`)", "PathPrefix(`/v2`)"])
            await poll_until(
                "B's routes",
                lambda: bodies(gateway, "/v2", 10),
                {"from-a", "from-b"}.__eq__,
                within=WITHIN,
            )
            routes = json.loads((await gateway.api("/routes")).body)
            names = {route["name"] for route in routes}
            assert {"discovered-users-0", "discovered-users-1"} <= names

            # B fails health: unavailable at once (A's routes again), removed after 2 polls.
            serve(b, version="1.2.0", rules=["PathPrefix(`/v2`)"], health=503)
            await poll_until(
                "B unavailable", lambda: bodies(gateway, "/v2"), {"404"}.__eq__, within=WITHIN
            )
            assert await bodies(gateway, "/users/2") == {"from-a"}
            await poll_until(
                "B removed",
                lambda: discovery_status(gateway),
                lambda status: seeds_of(status)[f"http://{LOCAL}:{b.port}"]["registered"] is False,
                within=WITHIN,
            )

            # A goes away: after 2 failed polls the service and its routes are gone.
            a.on(DOCUMENT, Fixed(500, b"down"))
            await poll_until(
                "A removed", lambda: bodies(gateway, "/users/3"), {"404"}.__eq__, within=WITHIN
            )
            changes = await gateway.metric("a3s_provider_changes_total", provider="discovery")
            assert changes is not None
            assert changes >= 4
            errors = await gateway.metric("a3s_provider_errors_total", provider="discovery")
            assert errors is not None
            assert errors >= 2
        nursery.cancel_scope.cancel()


async def test_an_invalid_discovered_route_is_skipped_while_the_rest_apply(
    tmp_path: Path,
) -> None:
    a = Origin("a")
    a.default = Fixed(200, b"from-a")
    serve(a, version="2.0.0", rules=["PathPrefix(`/good`)", "PathPrefix(`/bad`"])
    port, admin = free_ports(2)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.serve)
        text = config(port, admin, a)
        async with cli_gateway(tmp_path, text, port=port, admin=admin) as gateway:
            await poll_until(
                "the good route",
                lambda: bodies(gateway, "/good"),
                {"from-a"}.__eq__,
                within=WITHIN,
            )
            assert await bodies(gateway, "/bad") == {"404"}
            status = await discovery_status(gateway)
            warnings = status["warnings"]
            assert isinstance(warnings, list)
            assert any("discovered-users-1" in warning for warning in warnings), warnings
            assert "discovered-users-1" in gateway.log()
        nursery.cancel_scope.cancel()
