"""The host name cache of ``upstream/resolve.py`` (SPEC §5.7 "DNS") with a stand-in DNS query on
trio's autojump clock: TTLs and their clamp, one query per name in flight, short negative
caching, the cache's bound, ``/etc/hosts`` first, IP literals never looked up. dnspython against a
real server: tests/upstream/test_resolve_knot.py."""

from __future__ import annotations

import os
from pathlib import Path

import dns.exception
import dns.resolver
import pytest
import trio
import trio.testing

from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.resolve import (
    LOOKUP_LIMIT,
    LOOPBACK,
    DnsAnswer,
    HostsFile,
    ResolveError,
    Resolver,
    SystemDns,
    describe,
    interleave,
    is_ip_literal,
    parse_hosts,
)


class FakeDns:
    """A ``Query`` answering from a table (a string: the failure's reason), after ``delay``
    seconds, and noting every name asked."""

    def __init__(self, answers: dict[str, DnsAnswer | str], delay: float = 0.0) -> None:
        self.answers = answers
        self.delay = delay
        self.asked: list[str] = []

    async def __call__(self, name: str) -> DnsAnswer:
        self.asked.append(name)
        await trio.sleep(self.delay)
        answer = self.answers.get(name, "no such host")
        if isinstance(answer, str):
            raise ResolveError(answer)
        return answer


@pytest.fixture
def hosts(tmp_path: Path) -> Path:
    """An empty hosts file (the machine's /etc/hosts stays out of these tests)."""
    path = tmp_path / "hosts"
    path.write_text("")
    return path


def resolver_for(fake: FakeDns, hosts: Path, max_names: int = 4096) -> Resolver:
    return Resolver(fake, hosts=str(hosts), max_names=max_names)


def rewrite(path: Path, text: str, *, later_ns: int = 0) -> None:
    """Write ``text`` to ``path``, its mtime ``later_ns`` after the previous one (0: now)."""
    before = path.stat().st_mtime_ns if later_ns and path.exists() else 0
    path.write_text(text)
    if later_ns:
        os.utime(path, ns=(before + later_ns, before + later_ns))


def dns_error(
    kind: type[dns.exception.DNSException], *args: object, **kwargs: object
) -> dns.exception.DNSException:
    """One of dnspython's exceptions (their ``__init__`` is untyped)."""
    return kind(*args, **kwargs)


async def at(moment: float) -> None:
    """Sleep until ``moment`` on trio's clock."""
    await trio.sleep_until(moment)


# -- TTL ---------------------------------------------------------------------------------------


async def test_answer_kept_for_its_ttl(autojump_clock: trio.testing.MockClock, hosts: Path) -> None:
    fake = FakeDns({"api.internal": DnsAnswer(("10.0.0.1",), 30.0)})
    resolver = resolver_for(fake, hosts)
    start = trio.current_time()
    assert await resolver.resolve("api.internal") == ("10.0.0.1",)
    fake.answers["api.internal"] = DnsAnswer(("10.0.0.2",), 30.0)
    await at(start + 29.5)
    assert await resolver.resolve("api.internal") == ("10.0.0.1",)
    assert fake.asked == ["api.internal"]
    await at(start + 30.5)
    assert await resolver.resolve("api.internal") == ("10.0.0.2",)
    assert fake.asked == ["api.internal"] * 2


@pytest.mark.parametrize(("ttl", "kept"), [(0.0, 1.0), (0.2, 1.0), (float("nan"), 1.0)])
async def test_short_ttl_raised_to_one_second(
    autojump_clock: trio.testing.MockClock, hosts: Path, ttl: float, kept: float
) -> None:
    fake = FakeDns({"api.internal": DnsAnswer(("10.0.0.1",), ttl)})
    resolver = resolver_for(fake, hosts)
    start = trio.current_time()
    await resolver.resolve("api.internal")
    await at(start + kept - 0.01)
    await resolver.resolve("api.internal")
    assert len(fake.asked) == 1
    await at(start + kept + 0.01)
    await resolver.resolve("api.internal")
    assert len(fake.asked) == 2


@pytest.mark.time_limit(900)
async def test_long_ttl_cut_to_five_minutes(
    autojump_clock: trio.testing.MockClock, hosts: Path
) -> None:
    fake = FakeDns({"api.internal": DnsAnswer(("10.0.0.1",), 86400.0)})
    resolver = resolver_for(fake, hosts)
    start = trio.current_time()
    await resolver.resolve("api.internal")
    await at(start + 299.0)
    await resolver.resolve("api.internal")
    assert len(fake.asked) == 1
    await at(start + 300.5)
    await resolver.resolve("api.internal")
    assert len(fake.asked) == 2


# -- one query in flight per name --------------------------------------------------------------


async def test_concurrent_lookups_share_one_query(
    autojump_clock: trio.testing.MockClock, hosts: Path
) -> None:
    fake = FakeDns({"api.internal": DnsAnswer(("10.0.0.1", "10.0.0.2"), 60.0)}, delay=0.5)
    resolver = resolver_for(fake, hosts)
    found: list[tuple[str, ...]] = []

    async def look_up() -> None:
        found.append(await resolver.resolve("api.internal"))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(look_up)
    assert found == [("10.0.0.1", "10.0.0.2")] * 20
    assert fake.asked == ["api.internal"]


async def test_failure_is_shared_too(autojump_clock: trio.testing.MockClock, hosts: Path) -> None:
    fake = FakeDns({}, delay=0.5)
    resolver = resolver_for(fake, hosts)
    reasons: list[str] = []

    async def look_up() -> None:
        with pytest.raises(ConnectFailed) as caught:
            await resolver.resolve("gone.internal")
        reasons.append(caught.value.detail)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(look_up)
    assert reasons == ['cannot resolve "gone.internal": no such host'] * 5
    assert fake.asked == ["gone.internal"]


async def test_a_waiter_asks_again_when_the_asker_is_cancelled(
    autojump_clock: trio.testing.MockClock, hosts: Path
) -> None:
    fake = FakeDns({"api.internal": DnsAnswer(("10.0.0.1",), 60.0)}, delay=1.0)
    resolver = resolver_for(fake, hosts)
    found: list[tuple[str, ...]] = []

    async def impatient() -> None:
        with trio.move_on_after(0.5):  # its connect deadline: the query it runs goes with it
            await resolver.resolve("api.internal")

    async def patient() -> None:
        await trio.sleep(0.1)  # after the impatient one started the query
        found.append(await resolver.resolve("api.internal"))

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(impatient)
        nursery.start_soon(patient)
    assert found == [("10.0.0.1",)]
    assert fake.asked == ["api.internal"] * 2
    assert trio.current_time() - start == pytest.approx(1.5)


async def test_names_are_looked_up_independently(
    autojump_clock: trio.testing.MockClock, hosts: Path
) -> None:
    fake = FakeDns(
        {"a.internal": DnsAnswer(("10.0.0.1",), 60.0), "b.internal": DnsAnswer(("::2",), 60.0)},
        delay=1.0,
    )
    resolver = resolver_for(fake, hosts)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(resolver.resolve, "a.internal")
        nursery.start_soon(resolver.resolve, "b.internal")
    assert trio.current_time() - start == pytest.approx(1.0)  # not one after the other
    assert sorted(fake.asked) == ["a.internal", "b.internal"]


# -- failures ----------------------------------------------------------------------------------


async def test_failure_is_a_connect_error_kept_one_second(
    autojump_clock: trio.testing.MockClock, hosts: Path
) -> None:
    fake = FakeDns({})
    resolver = resolver_for(fake, hosts)
    start = trio.current_time()
    with pytest.raises(ConnectFailed) as caught:
        await resolver.resolve("api.internal")
    assert caught.value.reason == "resolve"
    assert caught.value.detail == 'cannot resolve "api.internal": no such host'
    assert str(caught.value) == caught.value.detail
    await at(start + 0.9)
    with pytest.raises(ConnectFailed):
        await resolver.resolve("api.internal")
    assert len(fake.asked) == 1  # the failure was remembered ...
    fake.answers["api.internal"] = DnsAnswer(("10.0.0.1",), 60.0)
    await at(start + 1.01)
    assert await resolver.resolve("api.internal") == ("10.0.0.1",)  # ... for one second only
    assert len(fake.asked) == 2


async def test_lookup_that_hangs_times_out(
    autojump_clock: trio.testing.MockClock, hosts: Path
) -> None:
    fake = FakeDns({"slow.internal": DnsAnswer(("10.0.0.1",), 60.0)}, delay=3600.0)
    resolver = resolver_for(fake, hosts)
    start = trio.current_time()
    with pytest.raises(ConnectFailed) as caught:
        await resolver.resolve("slow.internal")
    assert trio.current_time() - start == pytest.approx(LOOKUP_LIMIT)
    assert caught.value.detail == 'cannot resolve "slow.internal": timed out'
    with pytest.raises(ConnectFailed):
        await resolver.resolve("slow.internal")
    assert len(fake.asked) == 1
    await at(trio.current_time() + 1.01)
    fake.delay = 0.0
    assert await resolver.resolve("slow.internal") == ("10.0.0.1",)


async def test_empty_answer_is_a_failure(
    autojump_clock: trio.testing.MockClock, hosts: Path
) -> None:
    resolver = resolver_for(FakeDns({"none.internal": DnsAnswer((), 60.0)}), hosts)
    with pytest.raises(ConnectFailed, match="no A or AAAA records"):
        await resolver.resolve("none.internal")


# -- the bound ---------------------------------------------------------------------------------


async def test_cache_keeps_at_most_max_names(
    autojump_clock: trio.testing.MockClock, hosts: Path
) -> None:
    names = ["a.internal", "b.internal", "c.internal", "d.internal"]
    fake = FakeDns({name: DnsAnswer(("10.0.0.1",), 300.0) for name in names})
    resolver = resolver_for(fake, hosts, max_names=3)
    for name in names:  # "a" makes room for "d"
        await resolver.resolve(name)
    fake.asked.clear()
    for name in ["b.internal", "c.internal", "d.internal"]:
        await resolver.resolve(name)
    assert fake.asked == []
    await resolver.resolve("a.internal")  # asked again; "b", stored longest ago, makes room
    assert fake.asked == ["a.internal"]
    await resolver.resolve("b.internal")
    assert fake.asked == ["a.internal", "b.internal"]
    await resolver.resolve("d.internal")
    assert fake.asked == ["a.internal", "b.internal"]


def test_max_names_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_names"):
        Resolver(FakeDns({}), max_names=0)


async def test_each_trio_run_has_its_own_cache(hosts: Path) -> None:
    # Expiry times are on one run's clock: a new run (a new test) starts empty.
    fake = FakeDns({"api.internal": DnsAnswer(("10.0.0.1",), 300.0)})
    resolver = resolver_for(fake, hosts)
    await resolver.resolve("api.internal")
    await trio.to_thread.run_sync(trio.run, resolver.resolve, "api.internal")
    await resolver.resolve("api.internal")
    assert fake.asked == ["api.internal"] * 2


# -- /etc/hosts --------------------------------------------------------------------------------


async def test_hosts_file_comes_first(autojump_clock: trio.testing.MockClock, hosts: Path) -> None:
    rewrite(hosts, "# static\n10.9.9.9  api.internal api  # the API\nfd00::9 api.internal\n")
    fake = FakeDns({"api.internal": DnsAnswer(("10.0.0.1",), 60.0)})
    resolver = resolver_for(fake, hosts)
    assert await resolver.resolve("api.internal") == ("10.9.9.9", "fd00::9")
    assert await resolver.resolve("API.Internal.") == ("10.9.9.9", "fd00::9")
    assert await resolver.resolve("api") == ("10.9.9.9",)
    assert fake.asked == []
    with pytest.raises(ConnectFailed):
        await resolver.resolve("other.internal")
    assert fake.asked == ["other.internal"]


async def test_hosts_file_read_again_when_it_changes(
    autojump_clock: trio.testing.MockClock, hosts: Path
) -> None:
    fake = FakeDns({"api.internal": DnsAnswer(("10.0.0.1",), 300.0)})
    resolver = resolver_for(fake, hosts)
    assert await resolver.resolve("api.internal") == ("10.0.0.1",)  # from DNS, cached
    rewrite(hosts, "10.9.9.9 api.internal\n")
    assert await resolver.resolve("api.internal") == ("10.9.9.9",)
    # The same size: only the mtime tells.
    rewrite(hosts, "10.9.9.8 api.internal\n", later_ns=1_000_000_000)
    assert await resolver.resolve("api.internal") == ("10.9.9.8",)
    rewrite(hosts, "")
    assert await resolver.resolve("api.internal") == ("10.0.0.1",)  # the cached DNS answer
    assert fake.asked == ["api.internal"]


def test_hosts_file_parsed_once_while_unchanged(hosts: Path) -> None:
    hosts.write_text("10.9.9.9 api.internal\n")
    table = HostsFile(str(hosts))
    assert table.lookup("api.internal") == ("10.9.9.9",)
    info = hosts.stat()
    hosts.write_text("10.9.9.8 api.internal\n")  # same inode and size ...
    os.utime(hosts, ns=(info.st_atime_ns, info.st_mtime_ns))  # ... and mtime: not read again
    assert table.lookup("api.internal") == ("10.9.9.9",)


@pytest.mark.parametrize(
    ("text", "name", "expected"),
    [
        ("", "localhost", LOOPBACK),
        ("10.0.0.1 other\n", "localhost", LOOPBACK),
        ("", "app.localhost", LOOPBACK),
        ("::1 localhost\n", "localhost", ("::1",)),
        ("127.0.1.1 localhost\n", "localhost", ("127.0.1.1",)),
        ("", "notlocalhost", None),
    ],
)
def test_localhost_without_the_file(
    hosts: Path, text: str, name: str, expected: tuple[str, ...] | None
) -> None:
    hosts.write_text(text)
    assert HostsFile(str(hosts)).lookup(name) == expected


def test_missing_hosts_file_still_knows_localhost(tmp_path: Path) -> None:
    table = HostsFile(str(tmp_path / "absent"))
    assert table.lookup("localhost") == LOOPBACK
    assert table.lookup("api.internal") is None


def test_parse_hosts() -> None:
    text = (
        "127.0.0.1\tlocalhost\n"
        "  # a comment line\n"
        "\n"
        "10.0.0.1 API.example.  api # trailing comment\n"
        "10.0.0.2 api\n"
        "10.0.0.1 api\n"  # again: once
        "not-an-address api\n"
        "10.0.0.3\n"  # no name
        "fe80::1%eth0 link\n"
    )
    assert parse_hosts(text) == {
        "localhost": ("127.0.0.1",),
        "api.example": ("10.0.0.1",),
        "api": ("10.0.0.1", "10.0.0.2"),
        "link": ("fe80::1%eth0",),
    }


# -- IP literals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "literal"),
    [
        ("10.0.0.1", True),
        ("127.0.0.1", True),
        ("::1", True),
        ("fd00::1", True),
        ("localhost", False),
        ("backend1", False),
        ("1.example", False),
        ("api.internal", False),
        ("example.com.", False),
    ],
)
def test_is_ip_literal(host: str, literal: bool) -> None:
    assert is_ip_literal(host) is literal


async def test_ip_literal_never_asks(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    fake = FakeDns({})
    resolver = resolver_for(fake, tmp_path / "absent")
    assert await resolver.resolve("10.0.0.1") == ("10.0.0.1",)
    assert await resolver.resolve("fd00::1") == ("fd00::1",)
    assert fake.asked == []


# -- pieces of SystemDns -----------------------------------------------------------------------


def test_interleave_starts_with_the_first_family() -> None:
    assert interleave(["::1", "::2", "::3"], ["10.0.0.1"]) == ("::1", "10.0.0.1", "::2", "::3")
    assert interleave([], ["10.0.0.1", "10.0.0.2"]) == ("10.0.0.1", "10.0.0.2")
    assert interleave([], []) == ()


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (dns_error(dns.resolver.NXDOMAIN), "no such host"),
        (dns_error(dns.resolver.NoAnswer), "no A or AAAA records"),
        (dns_error(dns.resolver.LifetimeTimeout, timeout=1.0, errors=[]), "timed out"),
        (dns_error(dns.exception.Timeout), "timed out"),
        (dns_error(dns.exception.SyntaxError, "bad name"), "bad name"),
    ],
)
def test_describe(error: dns.exception.DNSException, why: str) -> None:
    assert describe(error) == why


async def test_no_name_servers_configured(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search example.com\n")
    with pytest.raises(ResolveError, match=r"no name servers configured in .*resolv\.conf"):
        await SystemDns(resolv_conf=str(conf))("api.internal")
    with pytest.raises(ResolveError, match="no name servers configured"):
        await SystemDns(resolv_conf=str(tmp_path / "absent"))("api.internal")
