"""The DNS provider (SPEC §10.4) against a real Knot DNS server (``tests/support/knot.py``):
records added, changed and removed by RFC 2136 updates while it runs, TTLs of 1 s honoured,
AAAA and SRV answers (with the additional section knot fills), NXDOMAIN and NODATA, REFUSED,
and a nameserver that stops answering. Real clock and real sockets: every wait polls a
condition under a bounded deadline; TTLs are 1 s so that each step takes about a second.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
import trio

from a3s_gateway.config.schema import DnsProvider, DnsService
from a3s_gateway.providers.dns import DnsDiscovery
from a3s_gateway.providers.dns_resolver import DnspythonResolver, RecordKind, Records
from a3s_gateway.providers.dynamic import Snapshot, build_server
from tests.support.knot import KnotServer, running_knot, silent_udp_nameserver

pytestmark = pytest.mark.integration

WAIT: float = 10.0


class Recording:
    """The real resolver, noting when each question was asked (trio's clock)."""

    def __init__(self, resolver: DnspythonResolver) -> None:
        self.resolver = resolver
        self.asked: list[tuple[float, str, RecordKind]] = []

    async def query(self, name: str, kind: RecordKind, /) -> Records:
        self.asked.append((trio.current_time(), name, kind))
        return await self.resolver.query(name, kind)


class Published:
    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot, /) -> None:
        self.snapshots.append(snapshot)

    def urls(self, name: str) -> list[str]:
        if not self.snapshots:
            return []
        return [server.url.text for server in self.snapshots[-1].servers.get(name, ())]


@pytest.fixture
def knot_records() -> list[str]:
    return ["api 1 A 10.0.0.1"]


@pytest.fixture
def knot(knot_records: list[str]) -> Iterator[KnotServer]:
    with running_knot(zone="test.", records=knot_records) as server:
        yield server


async def eventually(condition: Callable[[], bool], seconds: float = WAIT) -> None:
    with trio.fail_after(seconds):
        while not condition():  # noqa: ASYNC110 -- polling what a real server made happen
            await trio.sleep(0.05)


def provider_for(
    knot: KnotServer, refresh: int = 30, query_timeout: float = 5.0, **services: DnsService
) -> DnsDiscovery:
    settings = DnsProvider(
        refresh_interval_secs=refresh, nameservers=(knot.address,), services=services
    )
    return DnsDiscovery(settings, query_timeout=query_timeout)


def last_error(provider: DnsDiscovery, name: str) -> object:
    services = provider.status.details["services"]
    assert isinstance(services, dict)
    return services[name]["last_error"]


API = DnsService(hostname="api.test.", port=8080, record_type="A")


@pytest.mark.parametrize("knot_records", [["api 1 A 10.0.0.1", "api 60 TXT kept"]])
async def test_a_records_added_changed_and_removed_are_followed(knot: KnotServer) -> None:
    provider = provider_for(knot, api=API)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await eventually(lambda: published.urls("api") == ["http://10.0.0.1:8080"])
        assert provider.status.state == "ok"

        knot.replace("api", "A", 1, "10.0.0.1", "10.0.0.2")
        await eventually(
            lambda: published.urls("api") == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
        )
        knot.replace("api", "A", 1, "10.0.0.3")
        await eventually(lambda: published.urls("api") == ["http://10.0.0.3:8080"])

        knot.delete("api", "A")  # the name stays (TXT): NODATA
        await eventually(lambda: published.urls("api") == [])
        assert last_error(provider, "api") == "no A records"
        assert provider.status.state == "ok"

        knot.replace("api", "A", 1, "10.0.0.4")
        await eventually(lambda: published.urls("api") == ["http://10.0.0.4:8080"])
        assert last_error(provider, "api") is None
        nursery.cancel_scope.cancel()
    assert [len(s.servers["api"]) for s in published.snapshots] == [1, 2, 1, 0, 1]


async def test_a_ttl_of_1_s_brings_the_next_query_after_about_a_second(knot: KnotServer) -> None:
    recording = Recording(DnspythonResolver([("127.0.0.1", knot.port)]))
    settings = DnsProvider(refresh_interval_secs=30, services={"api": API})
    provider = DnsDiscovery(settings, resolver=recording)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, Published())
        await eventually(lambda: len(recording.asked) >= 3)
        nursery.cancel_scope.cancel()
    times = [when for when, _, _ in recording.asked]
    for earlier, later in itertools.pairwise(times):
        assert 0.99 <= later - earlier < 3.0  # the TTL, not refresh_interval_secs (30 s)


@pytest.mark.parametrize(
    "knot_records",
    [["v6 1 AAAA 2001:db8::1", "dual 1 A 10.0.0.5", "dual 1 AAAA 2001:DB8:0:0::5"]],
)
async def test_aaaa_addresses_are_bracketed(knot: KnotServer) -> None:
    provider = provider_for(
        knot,
        v6=DnsService(hostname="v6.test.", port=443, scheme="https", record_type="AAAA"),
        dual=DnsService(hostname="dual.test", port=80),
    )
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await eventually(lambda: bool(published.snapshots))
        assert published.urls("v6") == ["https://[2001:db8::1]:443"]
        assert published.urls("dual") == ["http://10.0.0.5:80", "http://[2001:db8::5]:80"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "knot_records",
    [
        [
            "_http._tcp 1 SRV 10 0 8080 a",
            "_http._tcp 1 SRV 10 5 8081 b",
            "_http._tcp 1 SRV 20 1 9000 missing",
            "a 1 A 10.0.0.1",
            "b 1 A 10.0.0.2",
            "b 1 AAAA 2001:db8::2",
        ]
    ],
)
async def test_srv_records_give_their_targets_addresses_with_weights_and_ports(
    knot: KnotServer,
) -> None:
    recording = Recording(DnspythonResolver([("127.0.0.1", knot.port)]))
    settings = DnsProvider(
        services={"web": DnsService(hostname="_http._tcp.test.", record_type="SRV")}
    )
    provider = DnsDiscovery(settings, resolver=recording)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await eventually(lambda: bool(published.snapshots))
        assert published.snapshots[-1].servers["web"] == (
            build_server("http://10.0.0.1:8080", 1),  # SRV weight 0 → 1
            build_server("http://10.0.0.2:8081", 5),
            build_server("http://[2001:db8::2]:8081", 5),
        )
        # knot put a's and b's addresses in the additional section; only "missing" was asked
        assert {name for _, name, _ in recording.asked} == {"_http._tcp.test.", "missing.test."}

        knot.replace("_http._tcp", "SRV", 1, "10 3 8080 a")
        await eventually(lambda: published.urls("web") == ["http://10.0.0.1:8080"])
        assert published.snapshots[-1].servers["web"][0].weight == 3
        nursery.cancel_scope.cancel()


async def test_nxdomain_empties_the_set_and_records_coming_back_restore_it(
    knot: KnotServer,
) -> None:
    provider = provider_for(knot, api=API)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await eventually(lambda: published.urls("api") == ["http://10.0.0.1:8080"])
        knot.delete("api")
        await eventually(lambda: published.urls("api") == [])
        assert last_error(provider, "api") == "no such name (NXDOMAIN)"
        assert provider.status.state == "ok"
        knot.replace("api", "A", 1, "10.0.0.8")
        await eventually(lambda: published.urls("api") == ["http://10.0.0.8:8080"])
        nursery.cancel_scope.cancel()


async def test_a_silent_nameserver_keeps_the_last_good_set_and_reports_the_timeout(
    knot: KnotServer,
) -> None:
    provider = provider_for(knot, query_timeout=1.0, api=API)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await eventually(lambda: published.urls("api") == ["http://10.0.0.1:8080"])
        knot.stop()
        with silent_udp_nameserver(knot.port):
            await eventually(lambda: last_error(provider, "api") == "timed out after 1 s")
            assert provider.status.state == "error"
            assert provider.status.last_error == 'service "api" (api.test.): timed out after 1 s'
            assert published.urls("api") == ["http://10.0.0.1:8080"]
            assert len(published.snapshots) == 1
        knot.start()
        await eventually(lambda: provider.status.state == "ok", seconds=15)
        assert published.urls("api") == ["http://10.0.0.1:8080"]
        nursery.cancel_scope.cancel()


async def test_a_refused_query_is_a_failure_naming_the_nameserver(knot: KnotServer) -> None:
    provider = provider_for(knot, other=DnsService(hostname="api.example.", port=80))
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await eventually(lambda: bool(published.snapshots))
        assert published.snapshots[-1].servers == {"other": ()}
        assert provider.status.state == "error"
        expected = f"no nameserver answered (127.0.0.1:{knot.port} REFUSED)"
        assert last_error(provider, "other") == expected
        assert provider.status.last_error == f'service "other" (api.example.): {expected}'
        nursery.cancel_scope.cancel()
