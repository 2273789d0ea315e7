"""The discovery provider (SPEC §10.5) against real HTTP origins: each seed is a test origin
(``tests/support/origin.py``) serving a document and a health answer that the test rewrites
between polls. The tests drive ``ServiceDiscovery.poll`` directly (one real poll each); the
polling cadence and timeouts, which need virtual time, are in ``test_discovery_timing.py``.
"""

from __future__ import annotations

import json
import logging

import msgspec
import pytest
import trio

from a3s_gateway.config.schema import DiscoveryProvider
from a3s_gateway.config.values import dec_hook
from a3s_gateway.providers.discovery import WELL_KNOWN, ServiceDiscovery
from a3s_gateway.providers.dynamic import DynamicProvider, Snapshot
from tests.support.origin import Fixed, Origin, SlowHead

PATH_API = "PathPrefix(`/api`)"


def settings(*seeds: str, **fields: object) -> DiscoveryProvider:
    tree = {"seeds": [{"url": seed} for seed in seeds], **fields}
    return msgspec.convert(tree, type=DiscoveryProvider, dec_hook=dec_hook)


def document(
    name: str = "api",
    version: str = "1.0.0",
    routes: list[dict[str, object]] | None = None,
    **extra: object,
) -> dict[str, object]:
    return {
        "name": name,
        "version": version,
        "routes": [{"rule": PATH_API}] if routes is None else routes,
        **extra,
    }


class Seed:
    """One instance: a test origin answering the discovery document and its health path."""

    def __init__(self, origin: Origin, prefix: str = "") -> None:
        self.origin = origin
        self.prefix = prefix
        self.health(200)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.origin.port}{self.prefix}"

    def publish(self, tree: dict[str, object], status: int = 200) -> None:
        self.raw(json.dumps(tree).encode(), status)

    def raw(self, body: bytes, status: int = 200) -> None:
        self.origin.on(self.prefix + WELL_KNOWN, Fixed(status, body))

    def health(self, status: int, path: str = "/health") -> None:
        self.origin.on(self.prefix + path, Fixed(status, b"ok"))

    def paths(self) -> list[bytes]:
        return [request.target for request in self.origin.requests]


async def start_seed(nursery: trio.Nursery, prefix: str = "") -> Seed:
    origin = Origin()
    await nursery.start(origin.serve)
    return Seed(origin, prefix)


def servers(snapshot: Snapshot, service: str) -> list[tuple[str, int]]:
    balancer = snapshot.services[service].load_balancer
    assert balancer is not None
    return [(server.url.text, server.weight) for server in balancer.servers]


def state(provider: ServiceDiscovery) -> str:
    return provider.status.state


def seed_details(provider: ServiceDiscovery, seed: Seed) -> dict[str, object]:
    seeds = provider.status.details["seeds"]
    assert isinstance(seeds, dict)
    found = seeds[seed.url]
    assert isinstance(found, dict)
    return found


# -- instances appearing --------------------------------------------------------------------


async def test_an_instance_registers_its_service_and_router(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    seed.raw(b"not yet", status=404)
    provider = ServiceDiscovery(settings(seed.url))
    as_provider: DynamicProvider = provider  # (checked by mypy: the hub's interface)
    assert as_provider.status.name == "discovery"
    assert state(provider) == "starting"

    snapshot = await provider.poll()
    assert snapshot == Snapshot()
    assert state(provider) == "error"
    assert seed_details(provider, seed)["last_error"] == (f"GET {seed.url}{WELL_KNOWN}: HTTP 404")

    seed.publish(document(routes=[{"rule": PATH_API, "middlewares": ["auth"], "priority": 7}]))
    snapshot = await provider.poll()
    assert state(provider) == "ok"
    assert servers(snapshot, "api") == [(seed.url, 1)]
    router = snapshot.routers["discovered-api"]
    assert (router.rule, router.service, router.middlewares, router.priority) == (
        PATH_API,
        "api",
        ("auth",),
        7,
    )
    assert router.entrypoints == ()  # every http entrypoint
    assert snapshot.origins == {
        ("services", "api"): f"discovery {seed.url}",
        ("routers", "discovered-api"): f"discovery {seed.url} route 0",
    }
    assert snapshot.skipped == ()
    assert seed_details(provider, seed) == {
        "service": "api",
        "version": "1.0.0",
        "registered": True,
        "healthy": True,
        "available": True,
        "consecutive_failures": 0,
        "last_error": None,
        "unknown_fields": [],
    }
    assert seed.paths()[-2:] == [WELL_KNOWN.encode(), b"/health"]


async def test_several_routes_are_numbered_and_use_the_configured_entrypoints(
    nursery: trio.Nursery,
) -> None:
    seed = await start_seed(nursery)
    routes: list[dict[str, object]] = [
        {"rule": PATH_API},
        {"rule": "Host(`b.test`)", "priority": 3},
    ]
    seed.publish(document(routes=routes))
    provider = ServiceDiscovery(settings(seed.url, entrypoints=["web", "websecure"]))
    snapshot = await provider.poll()
    assert sorted(snapshot.routers) == ["discovered-api-0", "discovered-api-1"]
    assert snapshot.routers["discovered-api-1"].rule == "Host(`b.test`)"
    assert snapshot.routers["discovered-api-1"].priority == 3
    assert all(r.entrypoints == ("web", "websecure") for r in snapshot.routers.values())
    assert snapshot.origins["routers", "discovered-api-1"] == f"discovery {seed.url} route 1"


async def test_a_document_without_routes_registers_only_the_service(
    nursery: trio.Nursery,
) -> None:
    seed = await start_seed(nursery)
    seed.publish({"name": "bare", "version": "0"})
    snapshot = await ServiceDiscovery(settings(seed.url)).poll()
    assert list(snapshot.services) == ["bare"]
    assert snapshot.routers == {}


async def test_two_seeds_naming_two_services_register_both(nursery: trio.Nursery) -> None:
    first, second = await start_seed(nursery), await start_seed(nursery)
    first.publish(document(name="api"))
    second.publish(document(name="web", routes=[{"rule": "Host(`web.test`)"}]))
    snapshot = await ServiceDiscovery(settings(first.url, second.url)).poll()
    assert servers(snapshot, "api") == [(first.url, 1)]
    assert servers(snapshot, "web") == [(second.url, 1)]
    assert snapshot.routers["discovered-api"].service == "api"
    assert snapshot.routers["discovered-web"].service == "web"


async def test_instances_of_one_service_are_its_servers_with_their_weights(
    nursery: trio.Nursery,
) -> None:
    first, second, third = [await start_seed(nursery) for _ in range(3)]
    first.publish(document(weight=5))
    second.publish(document(weight=0))
    third.publish(document())
    provider = ServiceDiscovery(settings(first.url, second.url, third.url))
    snapshot = await provider.poll()
    assert servers(snapshot, "api") == [(first.url, 5), (second.url, 0), (third.url, 1)]
    assert snapshot.origins["services", "api"] == (
        f"discovery {first.url}, {second.url}, {third.url}"
    )
    assert list(snapshot.routers) == ["discovered-api"]


async def test_the_seed_path_prefixes_the_document_and_the_health_path(
    nursery: trio.Nursery,
) -> None:
    seed = await start_seed(nursery, prefix="/base")
    seed.publish(document(health_path="/status?deep=1"))
    seed.health(200, "/status")
    provider = ServiceDiscovery(settings(seed.url + "/"))
    snapshot = await provider.poll()
    assert seed.paths() == [b"/base" + WELL_KNOWN.encode(), b"/base/status?deep=1"]
    assert servers(snapshot, "api") == [(seed.url + "/", 1)]


async def test_a_duplicate_seed_is_polled_once(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    seed.publish(document())
    provider = ServiceDiscovery(settings(seed.url, seed.url))
    snapshot = await provider.poll()
    assert servers(snapshot, "api") == [(seed.url, 1)]
    assert len(seed.origin.requests) == 2


# -- versions -------------------------------------------------------------------------------


async def test_an_upgrade_serves_the_newest_routes_and_warns_while_they_differ(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = await start_seed(nursery), await start_seed(nursery)
    old.publish(document(version="1.9.0", routes=[{"rule": "Path(`/v1`)"}]))
    new.raw(b"", status=503)
    provider = ServiceDiscovery(settings(old.url, new.url))
    snapshot = await provider.poll()
    assert snapshot.routers["discovered-api"].rule == "Path(`/v1`)"
    assert provider.status.details["warnings"] == []

    new.publish(document(version="1.10.0", routes=[{"rule": "Path(`/v2`)"}]))
    with caplog.at_level(logging.WARNING, logger="a3s_gateway.providers"):
        for _ in range(3):
            snapshot = await provider.poll()
    assert snapshot.routers["discovered-api"].rule == "Path(`/v2`)"  # 1.10.0 > 1.9.0
    assert snapshot.origins["routers", "discovered-api"] == f"discovery {new.url} route 0"
    assert servers(snapshot, "api") == [(old.url, 1), (new.url, 1)]
    warning = (
        f"service api: the routes differ between its instances ({old.url}, {new.url}); "
        f"serving those of {new.url} (version 1.10.0)"
    )
    assert provider.status.details["warnings"] == [warning]
    logged = [r.getMessage() for r in caplog.records if "routes differ" in r.getMessage()]
    assert logged == [f"discovery: {warning}"]  # once per change, not per poll

    old.publish(document(version="1.10.0", routes=[{"rule": "Path(`/v2`)"}]))
    snapshot = await provider.poll()
    assert provider.status.details["warnings"] == []
    # Equal versions: the seed listed first wins.
    assert snapshot.origins["routers", "discovered-api"] == f"discovery {old.url} route 0"


async def test_a_semantic_version_outranks_a_free_form_one(nursery: trio.Nursery) -> None:
    first, second = await start_seed(nursery), await start_seed(nursery)
    first.publish(document(version="zzz-latest", routes=[{"rule": "Path(`/free`)"}]))
    second.publish(document(version="0.0.1", routes=[{"rule": "Path(`/semver`)"}]))
    snapshot = await ServiceDiscovery(settings(first.url, second.url)).poll()
    assert snapshot.routers["discovered-api"].rule == "Path(`/semver`)"


async def test_routes_come_from_the_newest_healthy_instance(nursery: trio.Nursery) -> None:
    old, new = await start_seed(nursery), await start_seed(nursery)
    old.publish(document(version="1.0.0", routes=[{"rule": "Path(`/v1`)"}]))
    new.publish(document(version="2.0.0", routes=[{"rule": "Path(`/v2`)"}]))
    new.health(500)
    provider = ServiceDiscovery(settings(old.url, new.url))
    snapshot = await provider.poll()
    assert snapshot.routers["discovered-api"].rule == "Path(`/v1`)"
    assert servers(snapshot, "api") == [(old.url, 1)]

    new.health(200)
    snapshot = await provider.poll()
    assert snapshot.routers["discovered-api"].rule == "Path(`/v2`)"


async def test_with_no_healthy_instance_the_last_routes_stay(nursery: trio.Nursery) -> None:
    old, new = await start_seed(nursery), await start_seed(nursery)
    old.publish(document(version="1.0.0", routes=[{"rule": "Path(`/v1`)"}]))
    new.publish(document(version="2.0.0", routes=[{"rule": "Path(`/v2`)"}]))
    old.health(500)
    provider = ServiceDiscovery(settings(old.url, new.url, remove_after_failures=5))
    snapshot = await provider.poll()
    assert snapshot.routers["discovered-api"].rule == "Path(`/v2`)"

    # The newest instance fails, the old one recovers, then fails again: the routes follow the
    # healthy one, then stay with the last instance that was healthy.
    new.health(500)
    old.health(200)
    snapshot = await provider.poll()
    assert snapshot.routers["discovered-api"].rule == "Path(`/v1`)"
    old.health(500)
    snapshot = await provider.poll()
    assert snapshot.routers["discovered-api"].rule == "Path(`/v1`)"
    assert servers(snapshot, "api") == []


async def test_an_instance_never_healthy_still_gets_its_routers(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    seed.publish(document())
    seed.health(503)
    snapshot = await ServiceDiscovery(settings(seed.url)).poll()
    assert servers(snapshot, "api") == []
    assert list(snapshot.routers) == ["discovered-api"]


# -- unhealthy and failing instances --------------------------------------------------------


async def test_an_unhealthy_instance_is_unavailable_then_removed(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    seed.publish(document())
    provider = ServiceDiscovery(settings(seed.url, remove_after_failures=3))
    await provider.poll()

    seed.health(503)
    for failures in (1, 2):
        snapshot = await provider.poll()
        # Unavailable: the service stays without servers (503), the routers stay.
        assert servers(snapshot, "api") == []
        assert list(snapshot.routers) == ["discovered-api"]
        details = seed_details(provider, seed)
        assert details["healthy"] is False
        assert details["available"] is False
        assert details["registered"] is True
        assert details["consecutive_failures"] == failures
        assert details["last_error"] == f"health check GET {seed.url}/health: HTTP 503"
        # The seed answered: an unhealthy instance is not a provider failure.
        assert state(provider) == "ok"

    snapshot = await provider.poll()
    assert snapshot == Snapshot()  # removed with its routers after 3 failed polls
    assert seed_details(provider, seed)["registered"] is False
    snapshot = await provider.poll()
    assert snapshot == Snapshot()  # the document is still readable: it stays removed

    seed.health(200)
    snapshot = await provider.poll()
    assert servers(snapshot, "api") == [(seed.url, 1)]
    assert seed_details(provider, seed)["consecutive_failures"] == 0


async def test_a_failing_instance_leaves_the_healthy_ones_serving(nursery: trio.Nursery) -> None:
    first, second = await start_seed(nursery), await start_seed(nursery)
    first.publish(document())
    second.publish(document())
    provider = ServiceDiscovery(settings(first.url, second.url, remove_after_failures=2))
    assert servers(await provider.poll(), "api") == [(first.url, 1), (second.url, 1)]

    second.raw(b"{", status=200)
    snapshot = await provider.poll()
    assert servers(snapshot, "api") == [(first.url, 1)]
    assert snapshot.origins["services", "api"] == f"discovery {first.url}, {second.url}"
    assert state(provider) == "error"
    snapshot = await provider.poll()
    assert snapshot.origins["services", "api"] == f"discovery {first.url}"
    assert list(snapshot.routers) == ["discovered-api"]


async def test_a_seed_that_goes_away_is_removed_after_its_failures(
    nursery: trio.Nursery,
) -> None:
    seed = await start_seed(nursery)
    seed.publish(document())
    provider = ServiceDiscovery(settings(seed.url, remove_after_failures=2))
    await provider.poll()
    seed.raw(b"gone", status=404)
    assert list((await provider.poll()).services) == ["api"]
    assert await provider.poll() == Snapshot()


async def test_a_renamed_instance_moves_to_its_new_service(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    seed.publish(document(name="old"))
    provider = ServiceDiscovery(settings(seed.url))
    await provider.poll()
    seed.publish(document(name="new"))
    snapshot = await provider.poll()
    assert list(snapshot.services) == ["new"]
    assert list(snapshot.routers) == ["discovered-new"]


# -- invalid documents ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object, got list"),
        (json.dumps({"version": "1"}).encode(), "missing required field `name`"),
        (json.dumps({"name": "bad name!", "version": "1"}).encode(), "at `$.name`"),
        (json.dumps({"name": "api", "version": 1}).encode(), "at `$.version`"),
        (json.dumps(document(weight=-1)).encode(), "at `$.weight`"),
        (json.dumps(document(weight="2")).encode(), "at `$.weight`"),
        (json.dumps(document(routes=[{"priority": 1}])).encode(), "`rule`"),
        (json.dumps(document(routes=[{"rule": 1}])).encode(), "at `$.routes[0].rule`"),
        (json.dumps(document(health_path="health")).encode(), "at `$.health_path`"),
        (json.dumps(document(pad="x" * 300)).encode(), "longer than 256 bytes"),
        (b"[" * 200, "not JSON"),
    ],
)
async def test_an_invalid_document_is_a_failed_poll_logged_with_the_seed(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture, body: bytes, reason: str
) -> None:
    seed = await start_seed(nursery)
    seed.raw(body)
    provider = ServiceDiscovery(settings(seed.url, max_document_bytes=256))
    with caplog.at_level(logging.WARNING, logger="a3s_gateway.providers"):
        snapshot = await provider.poll()
    assert snapshot == Snapshot()
    assert state(provider) == "error"
    assert provider.status.errors == 1
    error = seed_details(provider, seed)["last_error"]
    assert isinstance(error, str)
    assert reason in error
    assert "\n" not in error
    assert provider.status.last_error == f"seed {seed.url}: {error}"
    [record] = [r for r in caplog.records if r.name == "a3s_gateway.providers"]
    assert record.getMessage() == f"discovery: seed {seed.url}: {error}"
    assert seed.paths() == [WELL_KNOWN.encode()]  # no health check without a document


async def test_a_failure_is_logged_as_a_warning_only_when_its_reason_changes(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    seed = await start_seed(nursery)
    seed.raw(b"{")
    provider = ServiceDiscovery(settings(seed.url))
    with caplog.at_level(logging.WARNING, logger="a3s_gateway.providers"):
        await provider.poll()
        await provider.poll()
        seed.raw(b"[]")
        await provider.poll()
    assert [r.getMessage().count("not JSON") for r in caplog.records] == [1, 0]
    assert provider.status.errors == 3


async def test_an_invalid_document_keeps_a_registered_seed_until_its_failures(
    nursery: trio.Nursery,
) -> None:
    seed = await start_seed(nursery)
    seed.publish(document(version="1.0.0"))
    provider = ServiceDiscovery(settings(seed.url, remove_after_failures=2))
    await provider.poll()
    seed.publish({"name": "api"})  # no version
    snapshot = await provider.poll()
    assert servers(snapshot, "api") == []
    assert list(snapshot.routers) == ["discovered-api"]
    details = seed_details(provider, seed)
    assert (details["version"], details["healthy"], details["available"]) == ("1.0.0", False, False)
    assert await provider.poll() == Snapshot()


async def test_a_redirect_is_not_followed(nursery: trio.Nursery) -> None:
    seed, target = await start_seed(nursery), await start_seed(nursery)
    target.publish(document())
    location = (target.url + WELL_KNOWN).encode()
    seed.origin.on(WELL_KNOWN, Fixed(301, b"", ((b"location", location),)))
    provider = ServiceDiscovery(settings(seed.url))
    assert await provider.poll() == Snapshot()
    assert seed_details(provider, seed)["last_error"] == (
        f"GET {seed.url}{WELL_KNOWN}: HTTP 301 (redirects are not followed)"
    )
    assert target.origin.requests == []


async def test_a_redirected_health_check_is_unhealthy(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    seed.publish(document())
    seed.origin.on("/health", Fixed(302, b"", ((b"location", b"/elsewhere"),)))
    provider = ServiceDiscovery(settings(seed.url))
    snapshot = await provider.poll()
    assert servers(snapshot, "api") == []
    assert seed_details(provider, seed)["healthy"] is False
    assert b"/elsewhere" not in seed.paths()


async def test_a_request_is_bounded_by_timeout_secs(nursery: trio.Nursery) -> None:
    # Real sockets, so real time: the smallest timeout_secs (1 s) once; the fake-fetch tests in
    # test_discovery_timing.py cover the rest in virtual time.
    seed = await start_seed(nursery)
    release = trio.Event()
    seed.origin.on(WELL_KNOWN, SlowHead(release))
    provider = ServiceDiscovery(settings(seed.url, timeout_secs=1))
    started = trio.current_time()
    try:
        assert await provider.poll() == Snapshot()
    finally:
        release.set()
    assert 1 <= trio.current_time() - started < 3
    assert seed_details(provider, seed)["last_error"] == (
        f"GET {seed.url}{WELL_KNOWN}: no complete answer within 1 s"
    )


async def test_an_unreachable_seed_fails_and_the_others_apply(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    seed.publish(document())
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    dead = f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
    await listener.aclose()
    provider = ServiceDiscovery(settings(dead, seed.url))
    snapshot = await provider.poll()
    assert servers(snapshot, "api") == [(seed.url, 1)]
    assert state(provider) == "error"
    assert (provider.status.last_error or "").startswith(f"seed {dead}: GET {dead}")


# -- unknown fields and dropped routes ------------------------------------------------------


async def test_unknown_fields_are_ignored_and_listed(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    routes: list[dict[str, object]] = [{"rule": PATH_API, "canary": True}]
    seed.publish(document(routes=routes, owner="team-a", labels={"x": 1}))
    provider = ServiceDiscovery(settings(seed.url))
    snapshot = await provider.poll()
    assert list(snapshot.routers) == ["discovered-api"]
    assert seed_details(provider, seed)["unknown_fields"] == ["owner", "labels", "routes[0].canary"]


async def test_a_nested_too_deeply_document_is_invalid(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    seed.raw(b'{"name": "api", "version": "1", "x": ' + b"[" * 100_000)
    provider = ServiceDiscovery(settings(seed.url))
    assert await provider.poll() == Snapshot()
    assert "not JSON" in str(seed_details(provider, seed)["last_error"])


async def test_the_list_of_unknown_fields_is_bounded(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    extra = {f"f{i:03}": i for i in range(40)}
    seed.publish({**document(), **extra, "y" * 500: 1})
    provider = ServiceDiscovery(settings(seed.url))
    assert list((await provider.poll()).services) == ["api"]
    unknown = seed_details(provider, seed)["unknown_fields"]
    assert unknown == [f"f{i:03}" for i in range(32)] + ["… and 9 more"]


async def test_a_route_the_router_schema_refuses_is_left_out(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    routes: list[dict[str, object]] = [
        {"rule": PATH_API, "priority": 2**40},
        {"rule": "Path(`/ok`)"},
    ]
    seed.publish(document(routes=routes))
    provider = ServiceDiscovery(settings(seed.url))
    snapshot = await provider.poll()
    assert list(snapshot.routers) == ["discovered-api-1"]
    [skipped] = snapshot.skipped
    assert skipped.startswith(f"discovery {seed.url} route 0 (service api): left out: ")
    assert "priority" in skipped
    assert state(provider) == "ok"


async def test_a_router_name_over_the_name_limit_is_left_out(nursery: trio.Nursery) -> None:
    seed = await start_seed(nursery)
    name = "s" * 128
    seed.publish(document(name=name))
    snapshot = await ServiceDiscovery(settings(seed.url)).poll()
    assert list(snapshot.services) == [name]
    assert snapshot.routers == {}
    [skipped] = snapshot.skipped
    assert "is not a valid name" in skipped


async def test_a_router_name_taken_by_another_service_is_left_out(nursery: trio.Nursery) -> None:
    first, second = await start_seed(nursery), await start_seed(nursery)
    first.publish(document(name="a", routes=[{"rule": "Path(`/0`)"}, {"rule": "Path(`/1`)"}]))
    second.publish(document(name="a-0", routes=[{"rule": "Path(`/other`)"}]))
    snapshot = await ServiceDiscovery(settings(first.url, second.url)).poll()
    assert snapshot.routers["discovered-a-0"].service == "a"
    [skipped] = snapshot.skipped
    assert skipped == (
        f"discovery {second.url} route 0 (service a-0): left out: the router name "
        f"discovered-a-0 is taken by discovery {first.url} route 0"
    )
