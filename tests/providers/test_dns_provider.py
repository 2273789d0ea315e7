"""The DNS provider (SPEC §10.4) with a scripted resolver under trio's autojump clock: the
schedule (TTL, the 1 s floor, the ``refresh_interval_secs`` ceiling, the failure backoff), what
a snapshot holds for A, AAAA, A+AAAA and SRV answers, and how timeouts, SERVFAIL, NXDOMAIN and
NODATA change the servers, the status and the log. Partial failures: an ``A+AAAA`` entry whose
one family fails while the other answers (also with dnspython against an in-process nameserver
that never answers AAAA, on the real clock), SRV targets looked up concurrently (at most
``TARGET_LOOKUPS`` at once) where a failing target keeps its last known addresses, and a
``resolv.conf`` dnspython cannot use. ``test_dns_knot.py`` runs the same provider against a real
knotd; ``tests/property/test_dns_schedule_properties.py`` checks ``next_delay``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset
import pytest
import trio
import trio.testing

from a3s_gateway.config.schema import DnsProvider, DnsService
from a3s_gateway.providers.dns import TARGET_LOOKUPS, DnsDiscovery
from a3s_gateway.providers.dns_resolver import (
    DnspythonResolver,
    LookupFailed,
    NoRecords,
    RecordKind,
    Records,
    SrvRecord,
    TargetAddresses,
    parse_nameserver,
)
from a3s_gateway.providers.dynamic import Snapshot, build_server

Scripted = Records | NoRecords | LookupFailed | None


class ScriptedResolver:
    """Answers from ``answers`` (keyed by name and kind; an unknown key is NXDOMAIN, ``None``
    hangs until cancelled) after ``delay`` seconds, records when each question was asked, and
    the most questions it had in flight at once (``peak``)."""

    def __init__(
        self, answers: Mapping[tuple[str, RecordKind], Scripted] | None = None, delay: float = 0.0
    ) -> None:
        self.answers: dict[tuple[str, RecordKind], Scripted] = dict(answers or {})
        self.asked: list[tuple[float, str, RecordKind]] = []
        self.delay = delay
        self.in_flight = 0
        self.peak = 0

    async def query(self, name: str, kind: RecordKind, /) -> Records:
        self.asked.append((trio.current_time(), name, kind))
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await trio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        answer = self.answers.get((name, kind), NoRecords("NXDOMAIN"))
        if answer is None:
            await trio.sleep_forever()
        if isinstance(answer, NoRecords):
            raise NoRecords(answer.kind, answer.ttl)
        if isinstance(answer, LookupFailed):
            raise LookupFailed(str(answer))
        assert answer is not None
        return answer

    def times(self, name: str, kind: RecordKind) -> list[float]:
        return [when for when, n, k in self.asked if (n, k) == (name, kind)]


class Published:
    """The ``publish`` callback: every snapshot handed over."""

    def __init__(self) -> None:
        self.snapshots: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot, /) -> None:
        self.snapshots.append(snapshot)

    @property
    def last(self) -> Snapshot:
        assert self.snapshots, "nothing published yet"
        return self.snapshots[-1]

    def urls(self, name: str) -> list[str]:
        return [server.url.text for server in self.last.servers[name]]


def settings(refresh: int = 30, **services: DnsService) -> DnsProvider:
    return DnsProvider(refresh_interval_secs=refresh, services=services)


def a_records(ttl: int, *addresses: str) -> Records:
    return Records(ttl=ttl, addresses=addresses)


async def settle_at(when: float) -> None:
    """Let the clock reach ``when`` and everything due then run."""
    await trio.sleep_until(when)
    await trio.testing.wait_all_tasks_blocked()


def gaps(times: list[float]) -> list[float]:
    return [round(later - earlier, 6) for earlier, later in itertools.pairwise(times)]


def state(provider: DnsDiscovery) -> str:
    """The provider's state, read afresh (an attribute mypy would narrow across awaits)."""
    return provider.status.state


def details(provider: DnsDiscovery, name: str) -> dict[str, object]:
    services = provider.status.details["services"]
    assert isinstance(services, dict)
    found = services[name]
    assert isinstance(found, dict)
    return found


API = DnsService(hostname="api.test.", port=8080, record_type="A")


# ----------------------------------------------------------------------------- snapshots


async def test_a_records_become_sorted_servers_with_the_entry_weight_and_an_origin(
    autojump_clock: trio.testing.MockClock,
) -> None:
    entry = DnsService(hostname="api.test.", port=8080, record_type="A", weight=3)
    resolver = ScriptedResolver({("api.test.", "A"): a_records(60, "10.0.0.2", "10.0.0.1")})
    provider = DnsDiscovery(settings(api=entry), resolver=resolver)
    published = Published()
    assert state(provider) == "starting"
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        assert published.snapshots == [
            Snapshot(
                servers={
                    "api": (
                        build_server("http://10.0.0.1:8080", 3),
                        build_server("http://10.0.0.2:8080", 3),
                    )
                },
                origins={("services", "api"): "DNS api.test."},
            )
        ]
        assert state(provider) == "ok"
        found = details(provider, "api")
        assert found["servers"] == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
        assert (found["hostname"], found["record_type"]) == ("api.test.", "A")
        assert (found["ttl"], found["last_error"]) == (60, None)
        assert isinstance(found["resolved_at"], float)
        nursery.cancel_scope.cancel()


async def test_aaaa_addresses_are_bracketed_and_a_plus_aaaa_takes_both_families(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = ScriptedResolver(
        {
            ("v6.test.", "AAAA"): a_records(60, "2001:db8::1"),
            ("both.test.", "A"): a_records(60, "10.0.0.1"),
            ("both.test.", "AAAA"): a_records(60, "2001:DB8:0::2"),
            ("only4.test.", "A"): a_records(60, "10.0.0.4"),
            ("only4.test.", "AAAA"): NoRecords("NODATA", 5),
        }
    )
    provider = DnsDiscovery(
        settings(
            v6=DnsService(hostname="v6.test.", port=443, scheme="https", record_type="AAAA"),
            both=DnsService(hostname="both.test.", port=80),
            only4=DnsService(hostname="only4.test.", port=81),
        ),
        resolver=resolver,
    )
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        assert published.urls("v6") == ["https://[2001:db8::1]:443"]
        assert published.urls("both") == ["http://10.0.0.1:80", "http://[2001:db8::2]:80"]
        # an empty family is no problem, but its negative TTL bounds the next query
        assert published.urls("only4") == ["http://10.0.0.4:81"]
        assert details(provider, "only4")["ttl"] == 5
        assert details(provider, "only4")["last_error"] is None
        assert len(published.snapshots) == 1  # one snapshot once every entry answered
        nursery.cancel_scope.cancel()


async def test_srv_records_become_their_targets_addresses_at_the_record_ports(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = ScriptedResolver(
        {
            ("_http._tcp.api.test.", "SRV"): Records(
                ttl=60,
                srv=(
                    SrvRecord(priority=10, weight=0, port=8080, target="a.test."),
                    SrvRecord(priority=10, weight=5, port=8081, target="b.test."),
                    SrvRecord(priority=20, weight=2, port=9000, target="c.test."),
                    SrvRecord(priority=10, weight=7, port=9999, target="."),
                    SrvRecord(priority=30, weight=1, port=8080, target="a.test."),
                ),
                additional={
                    "a.test.": TargetAddresses(("10.0.0.1",), 60),
                    "b.test.": TargetAddresses(("10.0.0.2", "2001:db8::2"), 60),
                },
            ),
            ("c.test.", "A"): a_records(20, "10.0.0.3"),
            ("c.test.", "AAAA"): NoRecords("NODATA", 60),
        }
    )
    entry = DnsService(hostname="_http._tcp.api.test.", record_type="SRV", scheme="h2c")
    provider = DnsDiscovery(settings(api=entry), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        assert published.last.servers["api"] == (
            # weight 0 → 1, and the second record to the same address and port adds its weight
            build_server("h2c://10.0.0.1:8080", 2),
            build_server("h2c://10.0.0.2:8081", 5),
            build_server("h2c://10.0.0.3:9000", 2),
            build_server("h2c://[2001:db8::2]:8081", 5),
        )
        # the additional section answered for a and b; only c was looked up
        assert sorted((name, kind) for _, name, kind in resolver.asked) == [
            ("_http._tcp.api.test.", "SRV"),
            ("c.test.", "A"),
            ("c.test.", "AAAA"),
        ]
        assert details(provider, "api")["ttl"] == 20  # c's A record is the shortest
        nursery.cancel_scope.cancel()


async def test_srv_targets_without_addresses_leave_the_service_empty(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = ScriptedResolver(
        {
            ("_x._tcp.test.", "SRV"): Records(
                ttl=60, srv=(SrvRecord(priority=0, weight=1, port=80, target="gone.test."),)
            ),
        }
    )
    entry = DnsService(hostname="_x._tcp.test.", record_type="SRV")
    provider = DnsDiscovery(settings(x=entry), resolver=resolver)
    published = Published()
    with caplog.at_level(logging.WARNING, logger="a3s_gateway.providers.dns"):
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run, published)
            await settle_at(0.5)
            assert published.last.servers == {"x": ()}
            assert details(provider, "x")["last_error"] == "no addresses for the SRV targets"
            assert state(provider) == "ok"
            nursery.cancel_scope.cancel()
    assert [r.getMessage() for r in caplog.records] == [
        'dns: service "x" (_x._tcp.test.): no addresses for the SRV targets; the service has '
        "no servers until records return"
    ]


async def test_no_services_publish_an_empty_snapshot_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    provider = DnsDiscovery(settings(), resolver=ScriptedResolver())
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.1)
        assert published.snapshots == [Snapshot()]
        assert state(provider) == "ok"
        assert provider.status.details == {"services": {}}
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- schedule


@pytest.mark.parametrize(
    ("ttl", "refresh", "gap"),
    [
        (5, 30, 5.0),  # the TTL
        (0, 30, 1.0),  # never sooner than 1 s
        (1, 30, 1.0),
        (300, 15, 15.0),  # at least every refresh_interval_secs
        (300, 1, 1.0),
    ],
)
async def test_the_next_query_comes_when_the_ttl_runs_out_within_the_floor_and_ceiling(
    autojump_clock: trio.testing.MockClock, ttl: int, refresh: int, gap: float
) -> None:
    resolver = ScriptedResolver({("api.test.", "A"): a_records(ttl, "10.0.0.1")})
    provider = DnsDiscovery(settings(refresh, api=API), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(gap * 3 + 0.5)
        assert gaps(resolver.times("api.test.", "A")) == [gap, gap, gap]
        assert len(published.snapshots) == 1  # the same answer is not published again
        nursery.cancel_scope.cancel()


async def test_a_changed_answer_is_published_and_an_unchanged_one_is_not(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = ScriptedResolver({("api.test.", "A"): a_records(2, "10.0.0.1")})
    provider = DnsDiscovery(settings(api=API), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        assert published.urls("api") == ["http://10.0.0.1:8080"]
        resolver.answers[("api.test.", "A")] = a_records(2, "10.0.0.1", "10.0.0.9")
        await settle_at(2.5)
        assert published.urls("api") == ["http://10.0.0.1:8080", "http://10.0.0.9:8080"]
        await settle_at(8.5)
        assert len(published.snapshots) == 2
        resolver.answers[("api.test.", "A")] = a_records(2, "10.0.0.9")
        await settle_at(10.5)
        assert published.urls("api") == ["http://10.0.0.9:8080"]
        assert len(published.snapshots) == 3
        nursery.cancel_scope.cancel()


async def test_failures_back_off_from_1_s_doubling_up_to_the_refresh_interval(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = ScriptedResolver({("api.test.", "A"): LookupFailed("timed out after 5 s")})
    provider = DnsDiscovery(settings(8, api=API), resolver=resolver)
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, Published())
        await settle_at(32.0)
        assert gaps(resolver.times("api.test.", "A")) == [1, 2, 4, 8, 8, 8]
        # an answer ends the backoff: the TTL rules again
        resolver.answers[("api.test.", "A")] = a_records(3, "10.0.0.1")
        await settle_at(49.0)
        assert gaps(resolver.times("api.test.", "A"))[-3:] == [3, 3, 3]
        nursery.cancel_scope.cancel()


async def test_the_entries_run_independently(autojump_clock: trio.testing.MockClock) -> None:
    resolver = ScriptedResolver(
        {
            ("fast.test.", "A"): a_records(1, "10.0.0.1"),
            ("slow.test.", "A"): a_records(7, "10.0.0.2"),
        }
    )
    provider = DnsDiscovery(
        settings(
            fast=DnsService(hostname="fast.test.", port=80, record_type="A"),
            slow=DnsService(hostname="slow.test.", port=80, record_type="A"),
        ),
        resolver=resolver,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, Published())
        await settle_at(14.5)
        assert len(resolver.times("fast.test.", "A")) == 15
        assert gaps(resolver.times("slow.test.", "A")) == [7, 7]
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- failures


async def test_a_failure_keeps_the_last_good_set_and_reports_it_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = ScriptedResolver({("api.test.", "A"): a_records(2, "10.0.0.1")})
    provider = DnsDiscovery(settings(8, api=API), resolver=resolver)
    published = Published()
    with caplog.at_level(logging.INFO, logger="a3s_gateway.providers.dns"):
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run, published)
            await settle_at(0.5)
            assert state(provider) == "ok"
            resolver.answers[("api.test.", "A")] = LookupFailed(
                "no nameserver answered (127.0.0.1:53 SERVFAIL)"
            )
            await settle_at(20.0)
            assert len(published.snapshots) == 1  # the set is kept: nothing new to publish
            assert published.urls("api") == ["http://10.0.0.1:8080"]
            status = provider.status
            message = 'service "api" (api.test.): no nameserver answered (127.0.0.1:53 SERVFAIL)'
            assert (status.state, status.last_error) == ("error", message)
            assert status.errors >= 4  # every failed attempt counts
            found = details(provider, "api")
            assert found["servers"] == ["http://10.0.0.1:8080"]
            assert found["last_error"] == "no nameserver answered (127.0.0.1:53 SERVFAIL)"
            assert found["ttl"] == 2  # of the last answer
            resolver.answers[("api.test.", "A")] = LookupFailed("timed out after 5 s")
            await settle_at(30.0)
            resolver.answers[("api.test.", "A")] = a_records(2, "10.0.0.2")
            await settle_at(34.0)
            assert published.urls("api") == ["http://10.0.0.2:8080"]
            assert state(provider) == "ok"
            assert details(provider, "api")["last_error"] is None
            nursery.cancel_scope.cancel()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            'dns: service "api" (api.test.): no nameserver answered (127.0.0.1:53 SERVFAIL); '
            "keeping the last 1 servers",
        ),
        (
            "WARNING",
            'dns: service "api" (api.test.): timed out after 5 s; keeping the last 1 servers',
        ),
        ("INFO", 'dns: service "api" (api.test.) resolves again: 1 servers'),
    ]


async def test_nxdomain_and_nodata_empty_the_set_until_records_return(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    entry = DnsService(hostname="api.test.", port=8080)  # A+AAAA
    resolver = ScriptedResolver(
        {
            ("api.test.", "A"): a_records(60, "10.0.0.1"),
            ("api.test.", "AAAA"): NoRecords("NODATA", 60),
        }
    )
    provider = DnsDiscovery(settings(10, api=entry), resolver=resolver)
    published = Published()
    with caplog.at_level(logging.INFO, logger="a3s_gateway.providers.dns"):
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run, published)
            await settle_at(0.5)
            resolver.answers[("api.test.", "A")] = NoRecords("NXDOMAIN", 3)
            resolver.answers[("api.test.", "AAAA")] = NoRecords("NXDOMAIN", 3)
            await settle_at(20.5)
            assert published.last.servers == {"api": ()}
            assert state(provider) == "ok"  # an answer, not a failure
            assert details(provider, "api")["last_error"] == "no such name (NXDOMAIN)"
            assert details(provider, "api")["ttl"] == 3
            times = resolver.times("api.test.", "A")
            assert gaps(times)[-1] == 3  # the negative TTL drives the next query
            resolver.answers[("api.test.", "A")] = NoRecords("NODATA", None)
            resolver.answers[("api.test.", "AAAA")] = NoRecords("NODATA", None)
            await settle_at(23.0)
            assert details(provider, "api")["last_error"] == "no A+AAAA records"
            assert details(provider, "api")["ttl"] is None
            resolver.answers[("api.test.", "AAAA")] = a_records(60, "2001:db8::7")
            await settle_at(33.0)
            assert published.urls("api") == ["http://[2001:db8::7]:8080"]
            assert details(provider, "api")["last_error"] is None
            nursery.cancel_scope.cancel()
    assert [len(s.servers["api"]) for s in published.snapshots] == [1, 0, 1]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            'dns: service "api" (api.test.): no such name (NXDOMAIN); the service has no '
            "servers until records return",
        ),
        (
            "WARNING",
            'dns: service "api" (api.test.): no A+AAAA records; the service has no servers '
            "until records return",
        ),
        ("INFO", 'dns: service "api" (api.test.) resolves again: 1 servers'),
    ]


async def test_a_failed_srv_target_lookup_keeps_the_last_good_set(
    autojump_clock: trio.testing.MockClock,
) -> None:
    srv = Records(ttl=2, srv=(SrvRecord(priority=0, weight=1, port=80, target="t.test."),))
    resolver = ScriptedResolver(
        {
            ("_x._tcp.test.", "SRV"): srv,
            ("t.test.", "A"): a_records(2, "10.0.0.1"),
            ("t.test.", "AAAA"): NoRecords("NODATA", 2),
        }
    )
    entry = DnsService(hostname="_x._tcp.test.", record_type="SRV")
    provider = DnsDiscovery(settings(x=entry), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        resolver.answers[("t.test.", "A")] = LookupFailed("timed out after 5 s")
        await settle_at(5.0)
        assert published.urls("x") == ["http://10.0.0.1:80"]
        assert state(provider) == "error"
        # its only target failed: the attempt failed as a whole
        message = 'service "x" (_x._tcp.test.): SRV target t.test.: timed out after 5 s'
        assert provider.status.last_error == message
        nursery.cancel_scope.cancel()


async def test_the_status_is_ok_only_while_every_entry_answered_its_latest_query(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = ScriptedResolver(
        {
            ("good.test.", "A"): a_records(1, "10.0.0.1"),
            ("bad.test.", "A"): LookupFailed("timed out after 5 s"),
        }
    )
    provider = DnsDiscovery(
        settings(
            10,
            good=DnsService(hostname="good.test.", port=80, record_type="A"),
            bad=DnsService(hostname="bad.test.", port=80, record_type="A"),
        ),
        resolver=resolver,
    )
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        # the first snapshot waits for every entry; a failed first attempt has no servers
        assert published.last.servers == {"bad": (), "good": (build_server("http://10.0.0.1:80"),)}
        await settle_at(9.5)  # "good" answered nine more times meanwhile
        assert state(provider) == "error"
        assert provider.status.last_sync is None
        resolver.answers[("bad.test.", "A")] = a_records(1, "10.0.0.2")
        await settle_at(30.0)
        assert state(provider) == "ok"
        assert published.urls("bad") == ["http://10.0.0.2:80"]
        nursery.cancel_scope.cancel()


async def test_the_first_snapshot_waits_for_every_first_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = ScriptedResolver(
        {("fast.test.", "A"): a_records(60, "10.0.0.1"), ("slow.test.", "A"): None}
    )
    provider = DnsDiscovery(
        settings(
            fast=DnsService(hostname="fast.test.", port=80, record_type="A"),
            slow=DnsService(hostname="slow.test.", port=80, record_type="A"),
        ),
        resolver=resolver,
    )
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(50.0)
        assert published.snapshots == []
        assert state(provider) == "starting"
        assert details(provider, "fast")["servers"] == ["http://10.0.0.1:80"]
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("10.0.0.2", ("10.0.0.2", 53)),
        ("10.0.0.2:5353", ("10.0.0.2", 5353)),
        ("::1", ("::1", 53)),
        ("[::1]", ("::1", 53)),
        ("[2001:DB8::1]:5353", ("2001:db8::1", 5353)),
    ],
)
def test_nameservers_parse_with_and_without_ports(text: str, parsed: tuple[str, int]) -> None:
    assert parse_nameserver(text) == parsed


@pytest.mark.parametrize(
    "text", ["ns.example", "10.0.0.2:", "10.0.0.2:0", "10.0.0.2:65536", "[::1]x", "[::1]:x", ""]
)
def test_invalid_nameservers_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="nameserver"):
        parse_nameserver(text)
    with pytest.raises(ValueError, match="nameserver"):
        DnsDiscovery(DnsProvider(nameservers=(text,)))


def test_an_address_entry_needs_a_port() -> None:
    entry = DnsService(hostname="api.test.", record_type="A")
    with pytest.raises(ValueError, match=r'service "api" \(api.test.\): a port is required'):
        DnsDiscovery(settings(api=entry), resolver=ScriptedResolver())


async def test_without_nameservers_a_missing_resolv_conf_fails_each_query(
    tmp_path: Path,
) -> None:
    resolver = DnspythonResolver(resolv_conf=str(tmp_path / "resolv.conf"))
    with pytest.raises(LookupFailed, match=r"^no resolver configuration \(.*resolv.conf\): "):
        await resolver.query("api.test.", "A")
    (tmp_path / "resolv.conf").write_text("# no nameserver line\n")
    with pytest.raises(LookupFailed, match="no resolver configuration"):
        await resolver.query("api.test.", "A")


# ----------------------------------------------------------------------------- partial failures

TIMED_OUT = LookupFailed("timed out after 5 s")
BOTH = DnsService(hostname="api.test.", port=8080)  # A+AAAA


# ----------------------------------------------------------------------------- A+AAAA


@pytest.mark.parametrize("failing", ["A", "AAAA"])
async def test_a_plus_aaaa_uses_the_family_that_answered_when_the_other_fails(
    autojump_clock: trio.testing.MockClock, failing: RecordKind
) -> None:
    answers: dict[tuple[str, RecordKind], Scripted] = {
        ("api.test.", "A"): a_records(20, "10.0.0.1"),
        ("api.test.", "AAAA"): a_records(30, "2001:db8::1"),
    }
    answers[("api.test.", failing)] = TIMED_OUT
    resolver = ScriptedResolver(answers, delay=0.2)
    provider = DnsDiscovery(settings(api=BOTH), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        expected = "http://[2001:db8::1]:8080" if failing == "A" else "http://10.0.0.1:8080"
        assert published.urls("api") == [expected]
        # the failed family counts as missing: no error, and the TTL of what answered
        assert state(provider) == "ok"
        assert details(provider, "api")["last_error"] is None
        assert details(provider, "api")["ttl"] == (30 if failing == "A" else 20)
        # both families were asked at once
        assert resolver.times("api.test.", "A") == resolver.times("api.test.", "AAAA") == [0.0]
        assert resolver.peak == 2
        nursery.cancel_scope.cancel()


async def test_a_plus_aaaa_without_addresses_and_a_failed_family_keeps_the_last_set(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = ScriptedResolver(
        {
            ("api.test.", "A"): a_records(2, "10.0.0.1"),
            ("api.test.", "AAAA"): NoRecords("NODATA", 2),
        }
    )
    provider = DnsDiscovery(settings(api=BOTH), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        # A now fails and AAAA still has nothing: the failure could hide addresses, so the
        # last good set stays (it is not emptied as for NODATA)
        resolver.answers[("api.test.", "A")] = TIMED_OUT
        await settle_at(3.5)
        assert published.urls("api") == ["http://10.0.0.1:8080"]
        assert state(provider) == "error"
        assert provider.status.last_error == 'service "api" (api.test.): timed out after 5 s'
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def nameserver_ignoring_aaaa() -> AsyncIterator[tuple[str, int]]:
    """A UDP nameserver on loopback answering every A question with 10.1.2.3 (TTL 60) and never
    answering an AAAA one; stopped at the end."""
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))

    async def serve() -> None:
        while True:
            data, peer = await sock.recvfrom(4096)
            query = dns.message.from_wire(data)
            question = query.question[0]
            if question.rdtype != dns.rdatatype.A:
                continue
            response = dns.message.make_response(query)
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "A", "10.1.2.3"))
            await sock.sendto(response.to_wire(), peer)

    with sock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            yield "127.0.0.1", sock.getsockname()[1]
            nursery.cancel_scope.cancel()


async def test_a_plus_aaaa_with_a_nameserver_that_never_answers_aaaa() -> None:
    # dnspython for real: the AAAA query times out after query_timeout, the A answer is used.
    async with nameserver_ignoring_aaaa() as (host, port):
        resolver = DnspythonResolver([(host, port)], query_timeout=0.5)
        provider = DnsDiscovery(settings(api=BOTH), resolver=resolver)
        published = Published()
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run, published)
            with trio.fail_after(5):
                while not published.snapshots:  # noqa: ASYNC110 -- waiting on real sockets
                    await trio.sleep(0.05)
            assert published.urls("api") == ["http://10.1.2.3:8080"]
            assert state(provider) == "ok"
            assert details(provider, "api")["ttl"] == 60
            nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- SRV targets


def srv_answer(ttl: int, *targets: str) -> Records:
    return Records(
        ttl=ttl, srv=tuple(SrvRecord(priority=0, weight=1, port=80, target=t) for t in targets)
    )


async def test_srv_targets_are_looked_up_concurrently_within_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    names = [f"t{index:02}.test." for index in range(40)]
    answers: dict[tuple[str, RecordKind], Scripted] = {
        ("_x._tcp.test.", "SRV"): srv_answer(60, *names)
    }
    for index, name in enumerate(names):
        answers[(name, "A")] = a_records(60, f"10.0.1.{index}")
        answers[(name, "AAAA")] = NoRecords("NODATA", 60)
    resolver = ScriptedResolver(answers, delay=1.0)
    entry = DnsService(hostname="_x._tcp.test.", record_type="SRV")
    provider = DnsDiscovery(settings(x=entry), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        # one second for the SRV query, then 40 targets 16 at once: three rounds of one second
        await settle_at(3.9)
        assert published.snapshots == []
        await settle_at(4.0)
        assert len(published.urls("x")) == 40
        assert resolver.peak == 2 * TARGET_LOOKUPS  # each target's A and AAAA together
        nursery.cancel_scope.cancel()


async def test_a_failed_srv_target_keeps_its_last_addresses_while_the_others_update(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    resolver = ScriptedResolver(
        {
            ("_x._tcp.test.", "SRV"): srv_answer(30, "a.test.", "b.test.", "c.test."),
            ("a.test.", "A"): a_records(30, "10.0.0.1"),
            ("b.test.", "A"): a_records(30, "10.0.0.2"),
            ("c.test.", "A"): a_records(30, "10.0.0.3"),
        }
    )
    for name in ("a.test.", "b.test.", "c.test."):
        resolver.answers[(name, "AAAA")] = NoRecords("NODATA", 30)
    entry = DnsService(hostname="_x._tcp.test.", record_type="SRV")
    provider = DnsDiscovery(settings(30, x=entry), resolver=resolver)
    published = Published()
    with caplog.at_level(logging.INFO, logger="a3s_gateway.providers.dns"):
        async with trio.open_nursery() as nursery:
            await nursery.start(provider.run, published)
            await settle_at(0.5)
            resolver.answers[("b.test.", "A")] = TIMED_OUT
            resolver.answers[("a.test.", "A")] = a_records(30, "10.0.0.11")
            await settle_at(30.5)
            # a's new address is used; b failed and keeps 10.0.0.2
            assert published.urls("x") == [
                "http://10.0.0.11:80",
                "http://10.0.0.2:80",
                "http://10.0.0.3:80",
            ]
            problem = "SRV target b.test.: timed out after 5 s"
            assert details(provider, "x")["last_error"] == problem
            assert state(provider) == "error"
            assert provider.status.last_error == f'service "x" (_x._tcp.test.): {problem}'
            # the failed target is retried on the failure backoff, not after the 30 s TTL
            await settle_at(34.5)
            assert gaps(resolver.times("b.test.", "A")) == [30, 1, 2]
            resolver.answers[("b.test.", "A")] = a_records(30, "10.0.0.22")
            await settle_at(38.5)
            assert "http://10.0.0.22:80" in published.urls("x")
            assert state(provider) == "ok"
            assert details(provider, "x")["last_error"] is None
            nursery.cancel_scope.cancel()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            'dns: service "x" (_x._tcp.test.): SRV target b.test.: timed out after 5 s; those '
            "targets keep their last known addresses (3 servers)",
        ),
        ("INFO", 'dns: service "x" (_x._tcp.test.) resolves again: 3 servers'),
    ]


async def test_a_new_srv_target_that_fails_gives_nothing_until_it_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = ScriptedResolver(
        {
            ("_x._tcp.test.", "SRV"): srv_answer(2, "a.test.", "new.test."),
            ("a.test.", "A"): a_records(2, "10.0.0.1"),
            ("a.test.", "AAAA"): NoRecords("NODATA", 2),
            ("new.test.", "A"): TIMED_OUT,
            ("new.test.", "AAAA"): TIMED_OUT,
        }
    )
    entry = DnsService(hostname="_x._tcp.test.", record_type="SRV")
    provider = DnsDiscovery(settings(x=entry), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        assert published.last.servers["x"] == (build_server("http://10.0.0.1:80"),)
        assert details(provider, "x")["last_error"] == "SRV target new.test.: timed out after 5 s"
        nursery.cancel_scope.cancel()


async def test_every_srv_target_failing_fails_the_attempt_and_keeps_the_last_set(
    autojump_clock: trio.testing.MockClock,
) -> None:
    resolver = ScriptedResolver(
        {
            ("_x._tcp.test.", "SRV"): srv_answer(2, "a.test.", "b.test.", "c.test."),
            ("a.test.", "A"): a_records(2, "10.0.0.1"),
            ("b.test.", "A"): a_records(2, "10.0.0.2"),
            ("c.test.", "A"): NoRecords("NODATA", 2),  # no addresses, and no failure
        }
    )
    for name in ("a.test.", "b.test.", "c.test."):
        resolver.answers[(name, "AAAA")] = NoRecords("NODATA", 2)
    entry = DnsService(hostname="_x._tcp.test.", record_type="SRV")
    provider = DnsDiscovery(settings(x=entry), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        await settle_at(0.5)
        for name in ("a.test.", "b.test.", "c.test."):
            resolver.answers[(name, "A")] = TIMED_OUT
            resolver.answers[(name, "AAAA")] = TIMED_OUT
        await settle_at(2.5)
        assert published.urls("x") == ["http://10.0.0.1:80", "http://10.0.0.2:80"]
        problem = "3 of 3 SRV targets failed (a.test.: timed out after 5 s; …)"
        assert provider.status.last_error == f'service "x" (_x._tcp.test.): {problem}'
        assert details(provider, "x")["ttl"] == 2  # of the last answer
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- resolv.conf


def last_error(provider: DnsDiscovery) -> str | None:
    return provider.status.last_error


LONG_LABEL = "x" * 70
BROKEN_CONFIGURATIONS = [
    ("nameserver bogus\n", "nameserver bogus is not"),
    ("nameserver 10.0.0.1:53\n", "nameserver 10.0.0.1:53 is not"),
    (f"nameserver 127.0.0.1\nsearch {LONG_LABEL}.example\n", "label is > 63 octets"),
]


@pytest.mark.parametrize(("text", "why"), BROKEN_CONFIGURATIONS)
async def test_an_unusable_resolv_conf_fails_each_query_with_its_reason(
    tmp_path: Path, text: str, why: str
) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(text)
    resolver = DnspythonResolver(resolv_conf=str(conf))
    with pytest.raises(LookupFailed) as caught:
        await resolver.query("api.test.", "A")
    assert str(caught.value).startswith(f"invalid resolver configuration ({conf}): ")
    assert why in str(caught.value)


async def test_the_provider_reports_an_unusable_resolv_conf(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver bogus\n")
    resolver = DnspythonResolver(resolv_conf=str(conf))
    provider = DnsDiscovery(settings(api=BOTH), resolver=resolver)
    published = Published()
    async with trio.open_nursery() as nursery:
        await nursery.start(provider.run, published)
        with trio.fail_after(5):
            while (message := last_error(provider)) is None:  # noqa: ASYNC110 -- a worker thread
                await trio.sleep(0.01)
        assert message.startswith(
            f'service "api" (api.test.): invalid resolver configuration ({conf}): nameserver bogus'
        )
        assert "unusable answer" not in message
        assert published.urls("api") == []
        nursery.cancel_scope.cancel()
