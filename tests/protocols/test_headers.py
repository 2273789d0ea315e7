"""Hop-by-hop removal, forwarding fields, Via, client IP and cookie joining (SPEC §5.4)."""

from __future__ import annotations

import copy
from dataclasses import FrozenInstanceError, replace
from ipaddress import ip_address, ip_network

import pytest

from a3s_gateway.protocols.headers import (
    HOP_BY_HOP,
    TE_TRAILERS,
    VIA_LOOP_LIMIT,
    ForwardingContext,
    Headers,
    client_ip,
    client_wants_trailers,
    connection_tokens,
    forwarding_headers,
    join_cookies,
    strip_hop_by_hop,
    strip_response_hop_by_hop,
    via_loop_count,
)
from a3s_gateway.routing.request import PeerAddress

TRUSTED_NETS = (ip_network("10.0.0.0/8"), ip_network("fd00::/8"))


def is_trusted(address: PeerAddress) -> bool:
    return any(address in net for net in TRUSTED_NETS)


def ctx(**changes: object) -> ForwardingContext:
    base = ForwardingContext(
        peer_ip="10.0.0.1",
        peer_trusted=True,
        client_ip="203.0.113.7",
        tls=False,
        authority=b"example.test:8080",
        via_protocol=b"1.1",
    )
    return replace(base, **changes)  # type: ignore[arg-type]  # test helper over known fields


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [value for field, value in headers if field == name]


FORWARDING_INPUT: Headers = [
    (b"host", b"example.test:8080"),
    (b"x-forwarded-for", b"198.51.100.1, 10.0.0.9"),
    (b"x-forwarded-proto", b"https"),
    (b"x-forwarded-host", b"public.test"),
    (b"x-forwarded-port", b"443"),
    (b"x-real-ip", b"198.51.100.1"),
    (b"forwarded", b"for=198.51.100.1;proto=https"),
    (b"x-forwarded-prefix", b"/api"),
    (b"accept", b"*/*"),
]


# --------------------------------------------------------------------------- hop-by-hop


def test_hop_by_hop_set_is_the_spec_list() -> None:
    assert {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"transfer-encoding",
        b"upgrade",
        b"trailer",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"http2-settings",
    } == HOP_BY_HOP


def test_connection_tokens_split_trim_lower_and_combine_lines() -> None:
    headers = [
        (b"connection", b" Keep-Alive ,\tX-Foo,,"),
        (b"accept", b"close"),
        (b"connection", b"UPGRADE"),
    ]
    assert connection_tokens(headers) == {b"keep-alive", b"x-foo", b"upgrade"}
    assert connection_tokens([]) == frozenset()


def test_strip_removes_every_hop_by_hop_field_and_keeps_the_rest_in_order() -> None:
    headers = [(name, b"v") for name in sorted(HOP_BY_HOP)]
    headers[3:3] = [(b"accept", b"1"), (b"x-a", b"2")]
    headers.append((b"x-b", b"3"))
    assert strip_hop_by_hop(headers) == [(b"accept", b"1"), (b"x-a", b"2"), (b"x-b", b"3")]


def test_strip_removes_fields_named_by_connection() -> None:
    headers = [
        (b"connection", b"X-Secret, close"),
        (b"x-secret", b"1"),
        (b"x-public", b"2"),
        (b"x-secret", b"3"),
    ]
    assert strip_hop_by_hop(headers) == [(b"x-public", b"2")]


def test_connection_cannot_remove_framing_or_routing_fields() -> None:
    headers = [
        (b":authority", b"a.test"),
        (b"connection", b"content-length, host, :authority"),
        (b"host", b"a.test"),
        (b"content-length", b"5"),
    ]
    assert strip_hop_by_hop(headers) == [
        (b":authority", b"a.test"),
        (b"host", b"a.test"),
        (b"content-length", b"5"),
    ]


def test_connection_named_forwarding_fields_go_before_the_gateway_adds_its_own() -> None:
    # SPEC §5.4: step 1 runs before step 3, so the gateway's X-Forwarded-For survives.
    received = [
        (b"connection", b"X-Forwarded-For, keep-alive"),
        (b"keep-alive", b"timeout=5"),
        (b"x-forwarded-for", b"192.0.2.66"),
        (b"accept", b"*/*"),
    ]
    stripped = strip_hop_by_hop(received)
    assert stripped == [(b"accept", b"*/*")]
    out = forwarding_headers(stripped, ctx())
    assert values(out, b"x-forwarded-for") == [b"10.0.0.1"]


def test_keep_upgrade_keeps_upgrade_and_collapses_connection() -> None:
    headers = [
        (b"connection", b"keep-alive, Upgrade, X-Hop"),
        (b"upgrade", b"websocket"),
        (b"x-hop", b"1"),
        (b"sec-websocket-key", b"k"),
        (b"connection", b"close"),
        (b"keep-alive", b"timeout=5"),
    ]
    expected = [
        (b"connection", b"upgrade"),
        (b"upgrade", b"websocket"),
        (b"sec-websocket-key", b"k"),
    ]
    assert strip_hop_by_hop(headers, keep_upgrade=True) == expected
    assert strip_hop_by_hop(expected, keep_upgrade=True) == expected
    assert strip_hop_by_hop(headers) == [(b"sec-websocket-key", b"k")]


def test_response_stripping_keeps_set_cookie_lines_and_relayed_101() -> None:
    response = [
        (b"connection", b"keep-alive"),
        (b"transfer-encoding", b"chunked"),
        (b"trailer", b"grpc-status"),
        (b"proxy-authenticate", b"Basic"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-type", b"text/plain"),
    ]
    assert strip_response_hop_by_hop(response) == [
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"content-type", b"text/plain"),
    ]
    switching = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade"), (b"sec-x", b"y")]
    assert strip_response_hop_by_hop(switching, keep_upgrade=True) == [
        (b"upgrade", b"websocket"),
        (b"connection", b"upgrade"),
        (b"sec-x", b"y"),
    ]
    assert strip_response_hop_by_hop(switching) == [(b"sec-x", b"y")]


@pytest.mark.parametrize(
    ("te", "wanted"),
    [
        ([b"trailers"], True),
        ([b"gzip, Trailers"], True),
        ([b"deflate;q=0.5", b" trailers "], True),
        ([b"trailers;q=1"], True),
        ([b"gzip"], False),
        ([b"trailersx"], False),
        ([], False),
    ],
)
def test_client_wants_trailers(te: list[bytes], wanted: bool) -> None:
    headers = [(b"accept", b"trailers")] + [(b"te", value) for value in te]
    assert client_wants_trailers(headers) is wanted
    assert TE_TRAILERS == (b"te", b"trailers")


# --------------------------------------------------------------------------- forwarding table


@pytest.mark.parametrize(
    ("name", "trusted_value", "untrusted_value"),
    [
        (b"x-forwarded-for", [b"198.51.100.1, 10.0.0.9, 10.0.0.1"], [b"10.0.0.1"]),
        (b"x-forwarded-proto", [b"https"], [b"http"]),
        (b"x-forwarded-host", [b"public.test"], [b"example.test:8080"]),
        (b"x-forwarded-port", [b"443"], [b"8080"]),
        (b"x-real-ip", [b"198.51.100.1"], [b"203.0.113.7"]),
        (b"forwarded", [b"for=198.51.100.1;proto=https"], []),
        (b"x-forwarded-prefix", [b"/api"], []),
    ],
)
def test_forwarding_table_with_incoming_fields(
    name: bytes, trusted_value: list[bytes], untrusted_value: list[bytes]
) -> None:
    assert values(forwarding_headers(FORWARDING_INPUT, ctx()), name) == trusted_value
    untrusted = ctx(peer_ip="192.0.2.9", peer_trusted=False)
    expected = [b"192.0.2.9"] if name == b"x-forwarded-for" else untrusted_value
    assert values(forwarding_headers(FORWARDING_INPUT, untrusted), name) == expected


@pytest.mark.parametrize("trusted", [True, False])
@pytest.mark.parametrize(
    ("name", "plain", "with_tls"),
    [
        (b"x-forwarded-for", b"10.0.0.1", b"10.0.0.1"),
        (b"x-forwarded-proto", b"http", b"https"),
        (b"x-forwarded-host", b"example.test:8080", b"example.test:8080"),
        (b"x-forwarded-port", b"8080", b"8080"),
        (b"x-real-ip", b"203.0.113.7", b"203.0.113.7"),
    ],
)
def test_forwarding_table_without_incoming_fields(
    trusted: bool, name: bytes, plain: bytes, with_tls: bytes
) -> None:
    headers = [(b"accept", b"*/*")]
    assert values(forwarding_headers(headers, ctx(peer_trusted=trusted)), name) == [plain]
    out = forwarding_headers(headers, ctx(peer_trusted=trusted, tls=True))
    assert values(out, name) == [with_tls]


def test_untrusted_peer_output_is_exact() -> None:
    out = forwarding_headers(FORWARDING_INPUT, ctx(peer_trusted=False, tls=True))
    assert out == [
        (b"host", b"example.test:8080"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"x-forwarded-proto", b"https"),
        (b"x-forwarded-host", b"example.test:8080"),
        (b"x-forwarded-port", b"8080"),
        (b"x-real-ip", b"203.0.113.7"),
        (b"via", b"1.1 a3s-gateway"),
    ]


def test_trusted_peer_keeps_fields_in_place_and_appends_the_chain() -> None:
    out = forwarding_headers(FORWARDING_INPUT, ctx())
    assert out == [line for line in FORWARDING_INPUT if line[0] != b"x-forwarded-for"] + [
        (b"x-forwarded-for", b"198.51.100.1, 10.0.0.9, 10.0.0.1"),
        (b"via", b"1.1 a3s-gateway"),
    ]


def test_trusted_chain_combines_several_lines_in_order() -> None:
    headers = [
        (b"x-forwarded-for", b"192.0.2.1"),
        (b"accept", b"*/*"),
        (b"x-forwarded-for", b" 10.1.1.1 ,"),
        (b"x-forwarded-for", b""),
        (b"x-forwarded-for", b"10.2.2.2, 10.3.3.3"),
    ]
    out = forwarding_headers(headers, ctx())
    assert values(out, b"x-forwarded-for") == [b"192.0.2.1, 10.1.1.1, 10.2.2.2, 10.3.3.3, 10.0.0.1"]


@pytest.mark.parametrize(
    ("authority", "tls", "port"),
    [
        (b"a.test", False, b"80"),
        (b"a.test", True, b"443"),
        (b"a.test:8443", False, b"8443"),
        (b"a.test:", True, b"443"),
        (b"a.test:http", False, b"80"),
        (b"a.test:123456", False, b"80"),
        (b"[2001:db8::1]:8080", True, b"8080"),
        (b"[2001:db8::1]", True, b"443"),
        (b"[2001:db8::1]:", False, b"80"),
        (b"[2001:db8::1", False, b"80"),
        (b"2001:db8::1", False, b"80"),
        (b"192.0.2.1:81", True, b"81"),
        (b"", False, b"80"),
    ],
)
def test_forwarded_port_comes_from_the_authority(authority: bytes, tls: bool, port: bytes) -> None:
    out = forwarding_headers([], ctx(authority=authority, tls=tls, peer_trusted=False))
    assert values(out, b"x-forwarded-port") == [port]
    assert values(out, b"x-forwarded-host") == [authority]


def test_expect_is_removed_for_every_peer() -> None:
    headers = [(b"expect", b"100-continue"), (b"content-length", b"3")]
    for trusted in (True, False):
        out = forwarding_headers(headers, ctx(peer_trusted=trusted))
        assert values(out, b"expect") == []
        assert values(out, b"content-length") == [b"3"]


@pytest.mark.parametrize(
    ("protocol", "line"),
    [(b"1.0", b"1.0 a3s-gateway"), (b"1.1", b"1.1 a3s-gateway"), (b"2", b"2 a3s-gateway")],
)
def test_via_is_appended_as_a_new_line(protocol: bytes, line: bytes) -> None:
    headers = [(b"via", b"1.1 edge-proxy"), (b"accept", b"*/*")]
    out = forwarding_headers(headers, ctx(via_protocol=protocol))
    assert values(out, b"via") == [b"1.1 edge-proxy", line]
    assert out[-1] == (b"via", line)


def test_via_is_not_added_when_disabled() -> None:
    headers = [(b"via", b"1.1 edge-proxy")]
    out = forwarding_headers(headers, ctx(add_via=False))
    assert values(out, b"via") == [b"1.1 edge-proxy"]


def test_unusual_via_protocol_is_rendered_too() -> None:
    out = forwarding_headers([], ctx(via_protocol=b"3"))
    assert values(out, b"via") == [b"3 a3s-gateway"]


def test_forwarding_context_is_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        ctx().tls = True  # type: ignore[misc]  # the point of the test


# --------------------------------------------------------------------------- loop detection


def test_via_loop_count_counts_received_by_elements() -> None:
    headers = [
        (b"via", b"1.1 a3s-gateway, 1.0 fred, 2 A3S-Gateway (comment)"),
        (b"x-note", b"1.1 a3s-gateway"),
        (b"via", b"1.1\ta3s-gateway"),
        (b"via", b"1.1 a3s-gateway-2, 1.1 my-a3s-gateway, a3s-gateway"),
    ]
    assert via_loop_count(headers) == 3
    assert via_loop_count([(b"via", b"1.1 proxy")]) == 0
    assert via_loop_count([]) == 0


def test_via_loop_limit_is_reached_after_ten_passes() -> None:
    headers: Headers = []
    for _ in range(VIA_LOOP_LIMIT):
        assert via_loop_count(headers) < VIA_LOOP_LIMIT
        headers = forwarding_headers(headers, ctx())
    assert via_loop_count(headers) == VIA_LOOP_LIMIT == 10


# --------------------------------------------------------------------------- client IP


@pytest.mark.parametrize(
    ("xff", "expected"),
    [
        ([], "10.0.0.1"),
        ([b"198.51.100.1"], "198.51.100.1"),
        ([b"198.51.100.1, 10.0.0.9"], "198.51.100.1"),
        ([b"192.0.2.1, 198.51.100.1, 10.0.0.9, 10.0.0.8"], "198.51.100.1"),
        ([b"10.0.0.5, 192.0.2.1, 10.0.0.9"], "192.0.2.1"),
        ([b"10.0.0.5, 10.0.0.6"], "10.0.0.5"),
        ([b"192.0.2.1", b"10.0.0.6"], "192.0.2.1"),
        ([b"192.0.2.1,", b"", b" , 10.0.0.6 "], "192.0.2.1"),
        ([b"2001:db8::7, fd00::1"], "2001:db8::7"),
        ([b"[2001:db8::7]:4711"], "2001:db8::7"),
        ([b"192.0.2.1:4711"], "192.0.2.1"),
        ([b"::ffff:192.0.2.1"], "192.0.2.1"),
        ([b"fd00::2, fd00::1"], "fd00::2"),
        # Garbage cuts the chain: what is left of it was not vouched for by a trusted hop.
        ([b"unknown"], "10.0.0.1"),
        ([b"192.0.2.1, unknown"], "10.0.0.1"),
        ([b"192.0.2.1, unknown, 10.0.0.9"], "10.0.0.9"),
        ([b"192.0.2.1, host.test, 10.0.0.9, 10.0.0.8"], "10.0.0.9"),
        ([b"192.0.2.1, 198.51.100.1:x, 10.0.0.9"], "10.0.0.9"),
        ([b"unknown, 198.51.100.1, 10.0.0.9"], "198.51.100.1"),
        ([b"\xff\xfe, 10.0.0.9"], "10.0.0.9"),
    ],
)
def test_client_ip_walks_the_chain_from_a_trusted_peer(xff: list[bytes], expected: str) -> None:
    headers = [(b"x-forwarded-for", value) for value in xff]
    assert client_ip(headers, "10.0.0.1", peer_trusted=True, is_trusted=is_trusted) == expected


def test_client_ip_of_an_untrusted_peer_ignores_the_header() -> None:
    headers = [(b"x-forwarded-for", b"198.51.100.1")]
    assert client_ip(headers, "192.0.2.9", peer_trusted=False, is_trusted=is_trusted) == (
        "192.0.2.9"
    )


def test_client_ip_with_insecure_trust_gives_the_leftmost() -> None:
    headers = [(b"x-forwarded-for", b"198.51.100.1, 192.0.2.3")]
    got = client_ip(headers, "192.0.2.9", peer_trusted=True, is_trusted=lambda _: True)
    assert got == "198.51.100.1"


def test_client_ip_passes_parsed_addresses_to_the_trust_check() -> None:
    seen: list[PeerAddress] = []

    def record(address: PeerAddress) -> bool:
        seen.append(address)
        return True

    headers = [(b"x-forwarded-for", b"192.0.2.1, [fd00::1]:80")]
    client_ip(headers, "10.0.0.1", peer_trusted=True, is_trusted=record)
    assert seen == [ip_address("fd00::1"), ip_address("192.0.2.1")]


# --------------------------------------------------------------------------- cookies


def test_join_cookies_joins_in_place_of_the_first_line() -> None:
    headers = [
        (b":method", b"GET"),
        (b"cookie", b"a=1"),
        (b"accept", b"*/*"),
        (b"cookie", b"b=2"),
        (b"cookie", b"c=3; d=4"),
    ]
    assert join_cookies(headers) == [
        (b":method", b"GET"),
        (b"cookie", b"a=1; b=2; c=3; d=4"),
        (b"accept", b"*/*"),
    ]


@pytest.mark.parametrize(
    "headers",
    [[], [(b"accept", b"*/*")], [(b"cookie", b"a=1"), (b"accept", b"*/*")]],
)
def test_join_cookies_leaves_zero_or_one_line_alone(headers: Headers) -> None:
    out = join_cookies(headers)
    assert out == headers
    assert out is not headers


# --------------------------------------------------------------------------- purity


def test_no_function_mutates_its_input() -> None:
    headers = [
        (b"connection", b"upgrade, x-hop"),
        (b"upgrade", b"websocket"),
        (b"x-hop", b"1"),
        (b"te", b"trailers"),
        (b"cookie", b"a=1"),
        (b"cookie", b"b=2"),
        (b"via", b"1.1 a3s-gateway"),
        *FORWARDING_INPUT,
        (b"expect", b"100-continue"),
    ]
    before = copy.deepcopy(headers)
    results = [
        strip_hop_by_hop(headers),
        strip_hop_by_hop(headers, keep_upgrade=True),
        strip_response_hop_by_hop(headers),
        forwarding_headers(headers, ctx()),
        forwarding_headers(headers, ctx(peer_trusted=False)),
        join_cookies(headers),
    ]
    connection_tokens(headers)
    client_wants_trailers(headers)
    via_loop_count(headers)
    client_ip(headers, "10.0.0.1", peer_trusted=True, is_trusted=is_trusted)
    assert headers == before
    assert all(result is not headers for result in results)


def test_h11_headers_objects_are_accepted() -> None:
    import h11

    request = h11.Request(
        method="GET",
        target="/",
        headers=[("Host", "a.test"), ("Connection", "X-Drop"), ("X-Drop", "1"), ("Cookie", "a")],
    )
    assert strip_hop_by_hop(request.headers) == [(b"host", b"a.test"), (b"cookie", b"a")]
