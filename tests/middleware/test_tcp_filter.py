"""The ``tcp-filter`` middleware (SPEC §6.4, §8.16): an IP allowlist checked on the client
address (as ``parse_peer`` reads it, IPv4-mapped IPv6 as IPv4), a connection limit shared by
every router that uses the definition, and tickets that give their count back exactly once."""

from __future__ import annotations

import ipaddress

import pytest

from a3s_gateway.config.schema_middlewares import TcpFilter as TcpFilterBlock
from a3s_gateway.config.values import IpNetwork
from a3s_gateway.middleware.tcp_filter import FilterTicket, TcpFilter
from a3s_gateway.routing.request import parse_peer


def allowlist(*texts: str, limit: int | None = None) -> TcpFilter:
    """A filter built as the runtime builds it, from a ``tcp-filter`` block."""
    block = TcpFilterBlock(
        allowed_ips=tuple(IpNetwork(text) for text in texts), max_connections=limit
    )
    return TcpFilter.from_config("filter", block)


def admitted(tcp_filter: TcpFilter, peer: str) -> bool:
    """Whether a connection from ``peer`` (an ``ip``/``ip:port`` text) gets a ticket; the
    ticket, if any, is released at once."""
    ticket = tcp_filter.admit(parse_peer(peer))
    if ticket is None:
        return False
    ticket.release()
    return True


def fail(message: str) -> None:
    raise RuntimeError(message)


def test_from_config_keeps_the_settings_and_the_block() -> None:
    block = TcpFilterBlock(allowed_ips=(IpNetwork("10.0.0.0/8"),), max_connections=3)
    tcp_filter = TcpFilter.from_config("limits", block)
    assert tcp_filter.name == "limits"
    assert tcp_filter.allowed == (ipaddress.ip_network("10.0.0.0/8"),)
    assert tcp_filter.max_connections == 3
    assert tcp_filter.block is block
    assert tcp_filter.active == 0


@pytest.mark.parametrize(
    ("peer", "allowed"),
    [
        ("10.1.2.3", True),
        ("10.1.2.3:5555", True),
        ("10.255.255.255", True),
        ("11.0.0.1", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("[2001:db8::1]:443", True),
        ("2001:db8:ffff::1", True),
        ("2001:db9::1", False),
        ("::1", False),
    ],
)
def test_the_allowlist_admits_only_addresses_inside_it(peer: str, allowed: bool) -> None:
    tcp_filter = allowlist("10.0.0.0/8", "192.0.2.7", "2001:db8::/32")
    assert admitted(tcp_filter, peer) is allowed
    assert tcp_filter.active == 0


@pytest.mark.parametrize(
    "peer", ["::ffff:10.1.2.3", "[::ffff:10.1.2.3]:80", "::FFFF:10.9.9.9", "[::ffff:a01:203]"]
)
def test_an_ipv4_mapped_ipv6_client_is_checked_as_ipv4(peer: str) -> None:
    assert admitted(allowlist("10.0.0.0/8"), peer)
    assert not admitted(allowlist("192.0.2.0/24"), peer)


def test_an_ipv4_mapped_network_in_the_list_matches_ipv4_clients() -> None:
    tcp_filter = allowlist("::ffff:10.0.0.0/104")  # the config reads it as 10.0.0.0/8
    assert tcp_filter.allowed == (ipaddress.ip_network("10.0.0.0/8"),)
    assert admitted(tcp_filter, "10.20.30.40")
    assert admitted(tcp_filter, "::ffff:10.20.30.40")
    assert not admitted(tcp_filter, "11.0.0.1")


def test_an_ipv4_client_never_matches_an_ipv6_network_or_the_reverse() -> None:
    assert not admitted(allowlist("::/0"), "10.0.0.1")
    assert not admitted(allowlist("0.0.0.0/0"), "2001:db8::1")
    assert admitted(allowlist("0.0.0.0/0", "::/0"), "10.0.0.1")
    assert admitted(allowlist("0.0.0.0/0", "::/0"), "2001:db8::1")


def test_an_unparsable_address_is_refused_only_when_there_is_a_list() -> None:
    assert parse_peer("not an address") is None
    with_list = allowlist("0.0.0.0/0", "::/0")
    assert with_list.admit(None) is None
    assert with_list.active == 0
    without_list = TcpFilter("open")
    ticket = without_list.admit(None)
    assert ticket is not None
    assert without_list.active == 1
    ticket.release()
    assert without_list.active == 0


def test_without_a_list_or_limit_every_connection_is_admitted_and_counted() -> None:
    tcp_filter = TcpFilter("open")
    tickets = [tcp_filter.admit(parse_peer(f"198.51.100.{i}")) for i in range(50)]
    assert all(ticket is not None for ticket in tickets)
    assert tcp_filter.active == 50
    for ticket in tickets:
        assert ticket is not None
        ticket.release()
    assert tcp_filter.active == 0


def test_the_limit_refuses_the_connection_past_it_until_one_is_released() -> None:
    tcp_filter = TcpFilter("limit", max_connections=2)
    address = parse_peer("10.0.0.1")
    first, second = tcp_filter.admit(address), tcp_filter.admit(address)
    assert first is not None
    assert second is not None
    assert tcp_filter.admit(address) is None
    assert tcp_filter.active == 2  # a refusal takes no count
    first.release()
    third = tcp_filter.admit(address)
    assert third is not None
    assert tcp_filter.active == 2
    assert tcp_filter.admit(address) is None


def test_an_address_outside_the_list_takes_no_count_even_below_the_limit() -> None:
    tcp_filter = allowlist("10.0.0.0/8", limit=1)
    assert tcp_filter.admit(parse_peer("192.0.2.1")) is None
    assert tcp_filter.active == 0
    ticket = tcp_filter.admit(parse_peer("10.0.0.1"))
    assert ticket is not None
    assert tcp_filter.admit(parse_peer("10.0.0.2")) is None  # at the limit
    assert tcp_filter.active == 1


def test_release_is_idempotent() -> None:
    tcp_filter = TcpFilter("limit", max_connections=1)
    ticket = tcp_filter.admit(None)
    assert ticket is not None
    assert [ticket.released] == [False]
    ticket.release()
    ticket.release()
    ticket.release()
    assert [ticket.released] == [True]
    assert tcp_filter.active == 0
    assert tcp_filter.admit(None) is not None
    ticket.release()  # a late duplicate does not give back the new connection's count
    assert tcp_filter.active == 1


def test_a_ticket_is_a_context_manager_that_releases_on_every_exit() -> None:
    tcp_filter = TcpFilter("cm")
    ticket = tcp_filter.admit(None)
    assert ticket is not None
    with ticket as entered:
        assert entered is ticket
        assert tcp_filter.active == 1
    assert tcp_filter.active == 0
    failing = tcp_filter.admit(None)
    assert failing is not None
    with pytest.raises(RuntimeError, match="relay failed"), failing:
        fail("relay failed")
    assert tcp_filter.active == 0
    released_early = tcp_filter.admit(None)
    assert released_early is not None
    with released_early:
        released_early.release()
    assert tcp_filter.active == 0


def test_filters_count_independently_and_a_ticket_belongs_to_its_filter() -> None:
    a, b = TcpFilter("a", max_connections=1), TcpFilter("b", max_connections=1)
    ticket_a = a.admit(None)
    assert isinstance(ticket_a, FilterTicket)
    assert b.admit(None) is not None
    assert (a.active, b.active) == (1, 1)
    ticket_a.release()
    assert (a.active, b.active) == (0, 1)


def test_a_shared_definition_counts_the_connections_of_every_router_using_it() -> None:
    shared = TcpFilter("shared", max_connections=2)
    router_one = [shared.admit(parse_peer("10.0.0.1"))]
    router_two = [shared.admit(parse_peer("10.0.0.2"))]
    assert all(ticket is not None for ticket in router_one + router_two)
    assert shared.admit(parse_peer("10.0.0.3")) is None
