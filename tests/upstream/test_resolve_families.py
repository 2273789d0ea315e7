"""``upstream/resolve.py`` when one address family does not answer (SPEC §5.7 "DNS", RFC 8305
§3): ``both_families`` with stand-in family queries on trio's autojump clock (once one family
has addresses the other gets ``RESOLUTION_DELAY``, then counts as missing; a failure or an empty
family does not start that delay), the cache keeping such an answer for its TTL, and
``SystemDns`` against an in-process nameserver that never answers AAAA. Also a ``resolv.conf``
dnspython cannot use, and dnspython errors during a query: ``ResolveError``, never anything
else."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import dns.asyncresolver
import dns.message
import dns.rdatatype
import dns.rrset
import pytest
import trio
import trio.testing

from a3s_gateway.upstream import resolve
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.resolve import (
    LOOKUP_LIMIT,
    RESOLUTION_DELAY,
    DnsAnswer,
    ResolveError,
    Resolver,
    SystemDns,
    both_families,
)

AAAA = dns.rdatatype.AAAA
A = dns.rdatatype.A
#: A family's scripted result: after how many seconds (None: never) what (a string: the
#: failure's reason).
Script = tuple[float | None, DnsAnswer | str]


class Families:
    """A ``FamilyQuery`` answering each family as scripted; notes what was asked and which
    queries were cancelled."""

    def __init__(self, aaaa: Script, a: Script) -> None:
        self.scripts = {AAAA: aaaa, A: a}
        self.asked: list[tuple[str, dns.rdatatype.RdataType]] = []
        self.cancelled: list[dns.rdatatype.RdataType] = []

    async def __call__(self, name: str, rdtype: dns.rdatatype.RdataType) -> DnsAnswer:
        self.asked.append((name, rdtype))
        delay, answer = self.scripts[rdtype]
        try:
            if delay is None:
                await trio.sleep_forever()
            else:
                await trio.sleep(delay)
        except trio.Cancelled:
            self.cancelled.append(rdtype)
            raise
        if isinstance(answer, str):
            raise ResolveError(answer)
        return answer


def v4(ttl: float = 60.0) -> DnsAnswer:
    return DnsAnswer(("10.0.0.1", "10.0.0.2"), ttl)


def v6(ttl: float = 60.0) -> DnsAnswer:
    return DnsAnswer(("fd00::1",), ttl)


NONE = DnsAnswer((), 0.0)  # NODATA: no records of the type


async def timed(families: Families) -> tuple[DnsAnswer, float]:
    start = trio.current_time()
    answer = await both_families("api.internal", families)
    return answer, trio.current_time() - start


@pytest.fixture
def hosts(tmp_path: Path) -> str:
    path = tmp_path / "hosts"
    path.write_text("")
    return str(path)


# -- the resolution delay ----------------------------------------------------------------------


async def test_a_does_not_wait_for_an_aaaa_that_never_comes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    families = Families(aaaa=(None, v6()), a=(0.1, v4(30.0)))
    answer, took = await timed(families)
    assert answer == v4(30.0)  # the TTL of what answered
    assert took == pytest.approx(0.1 + RESOLUTION_DELAY)
    assert families.cancelled == [AAAA]


async def test_aaaa_first_gives_a_the_resolution_delay_too(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answer, took = await timed(Families(aaaa=(0.1, v6(10.0)), a=(0.12, v4(60.0))))
    assert answer == DnsAnswer(("fd00::1", "10.0.0.1", "10.0.0.2"), 10.0)  # in time: both
    assert took == pytest.approx(0.12)
    families = Families(aaaa=(0.1, v6(10.0)), a=(0.2, v4(60.0)))
    answer, took = await timed(families)
    assert answer == v6(10.0)  # too late: without it
    assert took == pytest.approx(0.1 + RESOLUTION_DELAY)
    assert families.cancelled == [A]


@pytest.mark.parametrize("first", [NONE, "no name server could answer (SERVFAIL)"])
async def test_a_family_without_addresses_does_not_start_the_delay(
    autojump_clock: trio.testing.MockClock, first: DnsAnswer | str
) -> None:
    families = Families(aaaa=(0.1, first), a=(3.0, v4()))
    answer, took = await timed(families)
    assert answer == v4()
    assert took == pytest.approx(3.0)
    assert families.cancelled == []


@pytest.mark.parametrize(
    ("aaaa", "a", "why"),
    [
        (NONE, NONE, "no A or AAAA records"),
        ("no such host", NONE, "no such host"),
        (NONE, "timed out", "timed out"),
        ("no such host", "timed out", "no such host"),
    ],
)
async def test_neither_family_with_addresses_fails_with_the_first_reason(
    autojump_clock: trio.testing.MockClock, aaaa: DnsAnswer | str, a: DnsAnswer | str, why: str
) -> None:
    with pytest.raises(ResolveError) as caught:
        await both_families("api.internal", Families(aaaa=(0.1, aaaa), a=(0.2, a)))
    assert caught.value.why == why


async def test_an_answer_without_aaaa_is_cached_for_its_ttl(
    autojump_clock: trio.testing.MockClock, hosts: str
) -> None:
    families = Families(aaaa=(None, v6()), a=(0.0, v4(30.0)))
    resolver = Resolver(functools.partial(both_families, ask=families), hosts=hosts)
    start = trio.current_time()
    assert await resolver.resolve("api.internal") == ("10.0.0.1", "10.0.0.2")
    await trio.sleep_until(start + 29.5)
    assert await resolver.resolve("api.internal") == ("10.0.0.1", "10.0.0.2")
    assert len(families.asked) == 2  # AAAA and A once
    await trio.sleep_until(start + 30.5)
    await resolver.resolve("api.internal")
    assert len(families.asked) == 4


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


async def test_system_dns_with_a_server_that_never_answers_aaaa(hosts: str) -> None:
    # dnspython for real, on the real clock: the A answer comes at once, AAAA never.
    async with nameserver_ignoring_aaaa() as address:
        resolver = Resolver(SystemDns(nameservers=[address]), hosts=hosts)
        start = trio.current_time()
        assert await resolver.resolve("api.example.") == ("10.1.2.3",)
    assert trio.current_time() - start < LOOKUP_LIMIT / 5  # not the 5 s bound


# -- resolv.conf and dnspython errors ----------------------------------------------------------

LONG_LABEL = "x" * 70
BROKEN_CONFIGURATIONS = [
    ("nameserver bogus-entry\n", "nameserver bogus-entry is not"),
    ("nameserver 127.0.0.1\nnameserver 10.0.0.1:53\n", "nameserver 10.0.0.1:53 is not"),
    (f"nameserver 127.0.0.1\nsearch {LONG_LABEL}.example\n", "label is > 63 octets"),
]


@pytest.mark.parametrize(("text", "why"), BROKEN_CONFIGURATIONS)
async def test_an_unusable_resolv_conf_is_a_resolve_error(
    tmp_path: Path, hosts: str, text: str, why: str
) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text(text)
    with pytest.raises(ResolveError) as caught:
        await SystemDns(resolv_conf=str(conf))("api.internal")
    assert caught.value.why.startswith(f"unusable {conf} (")
    assert why in caught.value.why
    with pytest.raises(ConnectFailed) as failed:
        await Resolver(SystemDns(resolv_conf=str(conf)), hosts=hosts).resolve("api.internal")
    assert failed.value.reason == "resolve"
    assert failed.value.detail.startswith(f'cannot resolve "api.internal": unusable {conf} (')


async def test_an_unusable_resolv_conf_is_read_again_only_when_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    build = resolve._configured_resolver

    def counting(path: str) -> dns.asyncresolver.Resolver:
        reads.append(path)
        return build(path)

    monkeypatch.setattr(resolve, "_configured_resolver", counting)
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver bogus\n")
    query = SystemDns(resolv_conf=str(conf))
    for _ in range(3):
        with pytest.raises(ResolveError, match="unusable"):
            await query("api.internal")
    assert len(reads) == 1
    conf.write_text("search example.com\n")  # changed (its size): read again
    with pytest.raises(ResolveError, match="no name servers configured"):
        await query("api.internal")
    assert len(reads) == 2


@pytest.mark.parametrize("error", [ValueError("bad input"), OSError(101, "Network unreachable")])
async def test_a_dnspython_error_during_a_query_is_a_resolve_error(
    monkeypatch: pytest.MonkeyPatch, hosts: str, error: Exception
) -> None:
    async def failing(*args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(dns.asyncresolver.Resolver, "resolve", failing)
    resolver = Resolver(SystemDns(nameservers=[("127.0.0.1", 53)]), hosts=hosts)
    with pytest.raises(ConnectFailed) as caught:
        await resolver.resolve("api.internal")
    assert caught.value.detail == f'cannot resolve "api.internal": {error}'


async def test_an_invalid_name_is_a_resolve_error(hosts: str) -> None:
    # dnspython refuses it before sending anything
    query = SystemDns(nameservers=[("127.0.0.1", 53)])
    with pytest.raises(ResolveError, match="label is > 63 octets"):
        await query(f"{LONG_LABEL}.internal")


async def test_any_query_raising_a_dns_value_or_os_error_fails_the_lookup(hosts: str) -> None:
    async def broken(name: str) -> DnsAnswer:
        raise ValueError("not a valid name")

    with pytest.raises(ConnectFailed) as caught:
        await Resolver(broken, hosts=hosts).resolve("api.internal")
    assert caught.value.detail == 'cannot resolve "api.internal": not a valid name'
