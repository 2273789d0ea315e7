"""Properties of the proxy header rules (SPEC §5.4, DESIGN.md §3.7 "Headers")."""

from __future__ import annotations

import copy

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.protocols.headers import (
    HOP_BY_HOP,
    VIA_PSEUDONYM,
    ForwardingContext,
    Headers,
    client_ip,
    connection_tokens,
    forwarding_headers,
    join_cookies,
    strip_hop_by_hop,
    via_loop_count,
)
from a3s_gateway.routing.request import PeerAddress, parse_peer
from tests.property.strategies import forwarding_contexts, header_lists

# The names forwarding_headers owns (SPEC §5.4 step 2–4); every other line must pass untouched.
FORWARDING_NAMES = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-real-ip",
        b"forwarded",
        b"x-forwarded-prefix",
        b"expect",
        b"via",
    }
)
NEVER_REMOVED_BY_CONNECTION = frozenset({b"content-length", b"host"})


def xff_entries(headers: Headers) -> list[bytes]:
    return [
        entry
        for name, value in headers
        if name == b"x-forwarded-for"
        for entry in (item.strip(b" \t") for item in value.split(b","))
        if entry
    ]


def removable_tokens(headers: Headers) -> frozenset[bytes]:
    return frozenset(
        token
        for token in connection_tokens(headers)
        if token not in NEVER_REMOVED_BY_CONNECTION and not token.startswith(b":")
    )


TRUSTED_EXAMPLE = ForwardingContext(
    peer_ip="10.0.0.1",
    peer_trusted=True,
    client_ip="10.0.0.1",
    tls=False,
    authority=b"a",
    via_protocol=b"1.1",
)


# --------------------------------------------------------------------------- hop-by-hop


@given(header_lists(), st.booleans())
def test_strip_is_idempotent(headers: Headers, keep_upgrade: bool) -> None:
    once = strip_hop_by_hop(headers, keep_upgrade=keep_upgrade)
    assert strip_hop_by_hop(once, keep_upgrade=keep_upgrade) == once


@given(header_lists())
@example([(b"connection", b"X-A, keep-alive"), (b"x-a", b"1"), (b"x-b", b"2")])
def test_strip_leaves_no_hop_field_and_keeps_every_other_line_in_order(headers: Headers) -> None:
    before = copy.deepcopy(headers)
    named = removable_tokens(headers)
    out = strip_hop_by_hop(headers)
    assert headers == before
    assert not any(name in HOP_BY_HOP or name in named for name, _ in out)
    survivors = [line for line in headers if line[0] not in HOP_BY_HOP and line[0] not in named]
    assert out == survivors


@given(header_lists())
def test_keep_upgrade_keeps_only_upgrade_and_one_connection_upgrade(headers: Headers) -> None:
    out = strip_hop_by_hop(headers, keep_upgrade=True)
    assert [line for line in out if line[0] == b"upgrade"] == [
        line for line in headers if line[0] == b"upgrade"
    ]
    connection_lines = [line for line in out if line[0] == b"connection"]
    expected = [(b"connection", b"upgrade")] if any(n == b"connection" for n, _ in headers) else []
    assert connection_lines == expected
    plain = strip_hop_by_hop(headers)
    assert [line for line in out if line[0] not in (b"upgrade", b"connection")] == plain


# --------------------------------------------------------------------------- forwarding


@given(header_lists(), forwarding_contexts(trusted=st.just(True)))
@example([(b"x-forwarded-for", b"a, ,b,"), (b"x-forwarded-for", b",")], TRUSTED_EXAMPLE)
def test_trusted_peer_never_drops_a_chain_entry(headers: Headers, ctx: ForwardingContext) -> None:
    out = forwarding_headers(headers, ctx)
    assert sum(name == b"x-forwarded-for" for name, _ in out) == 1
    assert xff_entries(out) == [*xff_entries(headers), ctx.peer_ip.encode()]


@given(header_lists(), forwarding_contexts(trusted=st.just(False)))
def test_untrusted_peer_gets_exactly_its_own_address(
    headers: Headers, ctx: ForwardingContext
) -> None:
    out = forwarding_headers(headers, ctx)
    assert [value for name, value in out if name == b"x-forwarded-for"] == [ctx.peer_ip.encode()]
    assert not any(name in (b"forwarded", b"x-forwarded-prefix") for name, _ in out)
    for name in (b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"x-real-ip"):
        assert sum(line[0] == name for line in out) == 1


@given(header_lists(), forwarding_contexts())
def test_other_fields_are_untouched_and_in_order(headers: Headers, ctx: ForwardingContext) -> None:
    before = copy.deepcopy(headers)
    out = forwarding_headers(headers, ctx)
    assert headers == before
    assert [line for line in out if line[0] not in FORWARDING_NAMES] == [
        line for line in headers if line[0] not in FORWARDING_NAMES
    ]
    assert not any(name == b"expect" for name, _ in out)
    gateway_via = [(b"via", ctx.via_protocol + b" " + VIA_PSEUDONYM)] if ctx.add_via else []
    incoming_via = [line for line in headers if line[0] == b"via"]
    assert [line for line in out if line[0] == b"via"] == incoming_via + gateway_via
    assert via_loop_count(out) == via_loop_count(headers) + ctx.add_via


@given(header_lists(), forwarding_contexts(trusted=st.just(True)))
def test_trusted_peer_fields_pass_unchanged(headers: Headers, ctx: ForwardingContext) -> None:
    passed = FORWARDING_NAMES - {b"x-forwarded-for", b"expect", b"via"}
    out = forwarding_headers(headers, ctx)
    incoming = [line for line in headers if line[0] in passed]
    assert [line for line in out if line[0] in passed][: len(incoming)] == incoming


# --------------------------------------------------------------------------- client IP


@given(header_lists(), st.ip_addresses().map(str), st.sets(st.ip_addresses(), max_size=4))
def test_client_ip_is_the_peer_or_a_chain_entry(
    headers: Headers, peer: str, trusted: set[PeerAddress]
) -> None:
    def is_trusted(address: PeerAddress) -> bool:
        return address in trusted

    chosen = client_ip(headers, peer, peer_trusted=True, is_trusted=is_trusted)
    parsed = [parse_peer(entry.decode("latin-1")) for entry in xff_entries(headers)]
    assert chosen == peer or chosen in {str(address) for address in parsed if address}
    assert client_ip(headers, peer, peer_trusted=False, is_trusted=is_trusted) == peer


@given(st.lists(st.ip_addresses(), min_size=1, max_size=6), st.ip_addresses().map(str))
def test_client_ip_with_nothing_trusted_is_the_rightmost(
    chain: list[PeerAddress], peer: str
) -> None:
    headers = [(b"x-forwarded-for", b", ".join(str(ip).encode() for ip in chain))]
    rightmost = parse_peer(str(chain[-1]))
    chosen = client_ip(headers, peer, peer_trusted=True, is_trusted=lambda _: False)
    assert chosen == str(rightmost)


# --------------------------------------------------------------------------- cookies


@given(header_lists())
def test_join_cookies_makes_one_line_and_keeps_the_rest(headers: Headers) -> None:
    out = join_cookies(headers)
    crumbs = [value for name, value in headers if name == b"cookie"]
    assert [value for name, value in out if name == b"cookie"] == (
        [b"; ".join(crumbs)] if crumbs else []
    )
    assert [line for line in out if line[0] != b"cookie"] == [
        line for line in headers if line[0] != b"cookie"
    ]
