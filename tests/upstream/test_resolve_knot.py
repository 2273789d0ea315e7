"""``upstream/resolve.py`` against real DNS (SPEC §5.7 "DNS"): dnspython asking a Knot server
(tests/support/knot.py) whose records change by dynamic update. A changed A record is followed
once its TTL ran out; both families and the smaller TTL come back; NXDOMAIN, a name without
addresses, a server refusing and a server that never answers each fail with their reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing

from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.resolve import LOOKUP_LIMIT, ResolveError, Resolver, SystemDns
from tests.support.knot import KnotServer, running_knot, silent_udp_nameserver


@pytest.fixture
def no_hosts(tmp_path: Path) -> str:
    path = tmp_path / "hosts"
    path.write_text("")
    return str(path)


def asking(knot: KnotServer) -> SystemDns:
    return SystemDns(nameservers=[("127.0.0.1", knot.port)])


async def test_changed_a_record_followed_after_its_ttl(no_hosts: str) -> None:
    with running_knot(records=["api 2 A 10.0.0.1"]) as knot:
        resolver = Resolver(asking(knot), hosts=no_hosts)
        start = trio.current_time()
        assert await resolver.resolve("api.test") == ("10.0.0.1",)
        knot.replace("api", "A", 2, "10.0.0.2")
        assert await resolver.resolve("api.test") == ("10.0.0.1",)  # cached for 2 s
        with trio.fail_after(10):
            while await resolver.resolve("api.test") != ("10.0.0.2",):  # noqa: ASYNC110 -- polling DNS
                await trio.sleep(0.05)
        assert trio.current_time() - start >= 2.0


async def test_both_families_interleaved_with_the_smaller_ttl() -> None:
    records = ["dual 30 A 10.0.0.1", "dual 30 A 10.0.0.2", "dual 5 AAAA fd00::1"]
    with running_knot(records=records) as knot:
        answer = await asking(knot)("dual.test")
    assert answer.addresses[0] == "fd00::1"  # IPv6 first, then alternating
    assert sorted(answer.addresses[1:]) == ["10.0.0.1", "10.0.0.2"]
    assert answer.ttl == 5


async def test_one_family_is_enough() -> None:
    with running_knot(records=["v6 60 AAAA fd00::2"]) as knot:
        answer = await asking(knot)("v6.test.")
    assert answer.addresses == ("fd00::2",)
    assert answer.ttl == 60


async def test_failures_say_why(no_hosts: str) -> None:
    with running_knot(records=["note 60 TXT hello"]) as knot:
        query = asking(knot)
        with pytest.raises(ResolveError, match=r"^no such host$"):
            await query("missing.test")
        with pytest.raises(ResolveError, match=r"^no A or AAAA records$"):
            await query("note.test")
        with pytest.raises(ResolveError, match=r"^no name server could answer \(REFUSED\)$"):
            await query("api.elsewhere")  # not knot's zone
        with pytest.raises(ConnectFailed) as caught:
            await Resolver(query, hosts=no_hosts).resolve("missing.test")
    assert caught.value.detail == 'cannot resolve "missing.test": no such host'


async def test_server_that_never_answers_times_out(
    autojump_clock: trio.testing.MockClock, no_hosts: str
) -> None:
    with silent_udp_nameserver() as address:
        host, port = address.rsplit(":", 1)
        resolver = Resolver(SystemDns(nameservers=[(host, int(port))]), hosts=no_hosts)
        start = trio.current_time()
        with pytest.raises(ConnectFailed) as caught:
            await resolver.resolve("api.test")
    assert caught.value.detail == 'cannot resolve "api.test": timed out'
    assert trio.current_time() - start == pytest.approx(LOOKUP_LIMIT)
