"""The ``ip-allow`` middleware (SPEC §8.14)."""

from __future__ import annotations

import ipaddress
import json
from typing import Literal

import pytest

from a3s_gateway.config.schema_middlewares import IpAllow
from a3s_gateway.config.values import IpNetwork
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.ip_allow import IpAllowMiddleware

ALLOWED = ("10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "::1", "::ffff:198.51.100.0/120")


def make_state(client_ip: str, peer_ip: str = "203.0.113.9") -> RequestState:
    return RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=[(b"x-forwarded-for", client_ip.encode())],
        authority=b"example.com",
        client_ip=client_ip,
        peer_ip=peer_ip,
        tls=False,
    )


def ip_allow(*entries: str, ip_source: Literal["client", "peer"] = "client") -> IpAllowMiddleware:
    block = IpAllow(allowed_ips=tuple(IpNetwork(entry) for entry in entries), ip_source=ip_source)
    return IpAllowMiddleware.from_config("office", block)


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.0",
        "10.1.2.3",
        "10.255.255.255",
        "192.0.2.7",
        "2001:db8::1",
        "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
        "2001:DB8::abcd",
        "::1",
        "198.51.100.42",
        "::ffff:10.9.8.7",  # IPv4-mapped: compared as IPv4
        "::ffff:192.0.2.7",
        "::FFFF:198.51.100.1",
        "::ffff:a09:807",  # the same mapped address in hex
        "[2001:db8::5]",
        "[2001:db8::5]:443",
        "10.0.0.1:8080",
        "2001:db8::1%eth0",  # a zone id is ignored
    ],
)
async def test_addresses_inside_a_network_pass(address: str) -> None:
    state = make_state(address)
    assert await ip_allow(*ALLOWED).request(state) is None
    assert state.headers == [(b"x-forwarded-for", address.encode())]


@pytest.mark.parametrize(
    "address",
    [
        "11.0.0.0",
        "9.255.255.255",
        "192.0.2.8",
        "192.0.2.6",
        "2001:db9::1",
        "2001:db7:ffff::1",
        "::2",
        "198.51.101.1",
        "::ffff:11.0.0.1",
        "::10.1.2.3",  # IPv4-compatible (deprecated) is not IPv4-mapped
        "64:ff9b::a01:203",  # NAT64 of 10.1.2.3 is not 10.1.2.3
        "2002:a01:203::1",  # 6to4 of 10.1.2.3 either
    ],
)
async def test_addresses_outside_every_network_get_403(address: str) -> None:
    response = await ip_allow(*ALLOWED).request(make_state(address))
    assert response is not None
    assert response.head.status == 403
    assert response.body == b'{"error":"forbidden","status":403}'
    assert json.loads(response.body) == {"error": "forbidden", "status": 403}
    assert (b"content-type", b"application/json") in response.head.headers
    assert not any(name == b"www-authenticate" for name, _ in response.head.headers)


@pytest.mark.parametrize(
    "address",
    ["", "unknown", "example.com", "10.0.0", "10.0.0.1.2", "10.0.0.256", "10.0.0.1:http", "[::1"],
)
async def test_unparsable_addresses_get_403(address: str) -> None:
    response = await ip_allow("0.0.0.0/0", "::/0").request(make_state(address))
    assert response is not None
    assert response.head.status == 403


async def test_everything_networks() -> None:
    v4_only = ip_allow("0.0.0.0/0")
    assert await v4_only.request(make_state("203.0.113.1")) is None
    assert await v4_only.request(make_state("::ffff:203.0.113.1")) is None
    assert await v4_only.request(make_state("2001:db8::1")) is not None
    v6_only = ip_allow("::/0")
    assert await v6_only.request(make_state("2001:db8::1")) is None
    assert await v6_only.request(make_state("203.0.113.1")) is not None
    # Mapped addresses are IPv4, so ::/0 does not cover them.
    assert await v6_only.request(make_state("::ffff:203.0.113.1")) is not None


async def test_mapped_network_in_config_matches_plain_ipv4() -> None:
    middleware = ip_allow("::ffff:10.0.0.0/104")  # = 10.0.0.0/8
    assert await middleware.request(make_state("10.20.30.40")) is None
    assert await middleware.request(make_state("::ffff:10.20.30.40")) is None
    assert await middleware.request(make_state("11.0.0.1")) is not None


def test_mapped_network_given_directly_is_unmapped() -> None:
    middleware = IpAllowMiddleware(
        "direct", networks=[ipaddress.ip_network("::ffff:192.0.2.0/120")]
    )
    assert middleware.allows("192.0.2.200")
    assert middleware.allows("::ffff:192.0.2.1")
    assert not middleware.allows("192.0.3.1")


async def test_host_bits_in_config_are_cleared() -> None:
    middleware = ip_allow("10.1.2.3/8")
    assert await middleware.request(make_state("10.200.0.1")) is None


async def test_client_source_ignores_the_peer() -> None:
    middleware = ip_allow("10.0.0.0/8")
    assert await middleware.request(make_state("10.0.0.1", peer_ip="203.0.113.9")) is None
    response = await middleware.request(make_state("203.0.113.9", peer_ip="10.0.0.1"))
    assert response is not None
    assert response.head.status == 403


async def test_peer_source_ignores_the_client() -> None:
    middleware = ip_allow("10.0.0.0/8", ip_source="peer")
    assert await middleware.request(make_state("203.0.113.9", peer_ip="10.0.0.1")) is None
    response = await middleware.request(make_state("10.0.0.1", peer_ip="203.0.113.9"))
    assert response is not None
    assert response.head.status == 403


async def test_peer_source_with_mapped_ipv6_peer() -> None:
    middleware = ip_allow("127.0.0.1", ip_source="peer")
    assert await middleware.request(make_state("203.0.113.9", peer_ip="::ffff:127.0.0.1")) is None


def test_default_source_is_client() -> None:
    block = IpAllow(allowed_ips=(IpNetwork("10.0.0.0/8"),))
    middleware = IpAllowMiddleware.from_config("d", block)
    assert middleware.allows("10.0.0.1")
    assert not middleware.allows("192.0.2.1")


async def test_no_response_side() -> None:
    headers = [(b"content-type", b"text/plain")]
    ip_allow("10.0.0.0/8").response(make_state("10.0.0.1"), 200, headers)
    assert headers == [(b"content-type", b"text/plain")]


async def test_responses_are_fresh_objects() -> None:
    middleware = ip_allow("10.0.0.0/8")
    first = await middleware.request(make_state("1.1.1.1"))
    second = await middleware.request(make_state("1.1.1.1"))
    assert first is not None
    assert second is not None
    assert first.head.headers is not second.head.headers
