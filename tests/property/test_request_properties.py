"""Properties of the request-side matcher inputs (SPEC §4.3–4.5): paths, host, query, peer."""

from __future__ import annotations

import string
from ipaddress import IPv4Address, IPv6Address
from urllib.parse import quote_plus

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.routing.request import (
    InvalidPathEscape,
    canonical_host,
    parse_peer,
    parse_query,
    routing_path,
    sanitize_path,
)
from tests.property.strategies import (
    PeerIp,
    host_header_values,
    peer_addresses,
    percent_encoded_paths,
    query_pairs,
    raw_path_texts,
    raw_paths,
    raw_query_strings,
    value_junk,
)

_DOT_SEGMENTS = frozenset({".", ".."})
_SWAP_ASCII_CASE = str.maketrans(
    string.ascii_letters, string.ascii_lowercase.upper() + string.ascii_uppercase.lower()
)

# --------------------------------------------------------------------------- sanitize_path


@given(raw_paths())
@example(b"/a/b/..")
@example(b"/a/%2e%2E/")
@example(b"")
def test_sanitize_path_is_idempotent(path: bytes) -> None:
    once = sanitize_path(path)
    assert sanitize_path(once) == once


@given(raw_paths())
def test_sanitized_path_is_rooted_without_empty_or_dot_segments(path: bytes) -> None:
    clean = sanitize_path(path)
    assert clean.startswith(b"/")
    assert b"//" not in clean
    for segment in clean.split(b"/"):
        assert segment.lower().replace(b"%2e", b".").decode("latin-1") not in _DOT_SEGMENTS


@given(raw_paths())
def test_sanitize_path_keeps_a_trailing_slash(path: bytes) -> None:
    if path.endswith(b"/"):
        assert sanitize_path(path).endswith(b"/")


# --------------------------------------------------------------------------- routing_path


@given(st.one_of(raw_path_texts(), raw_paths()))
@example("/%")
@example(b"/%4")
def test_routing_path_raises_only_invalid_path_escape(path: str | bytes) -> None:
    try:
        result = routing_path(path)
    except InvalidPathEscape:
        return
    assert isinstance(result, bytes)


@given(st.binary(max_size=40).map(lambda data: data.replace(b"%", b"")))
def test_routing_path_is_the_identity_without_percent(path: bytes) -> None:
    assert routing_path(path) == path


@given(st.text(max_size=40).map(lambda text: text.replace("%", "")))
def test_routing_path_of_text_without_percent_is_its_utf8(path: str) -> None:
    assert routing_path(path) == path.encode()


@given(percent_encoded_paths())
@example(("/ä/b".encode(), "/%C3%a4/b"))
def test_routing_path_decodes_what_percent_encoding_produced(pair: tuple[bytes, str]) -> None:
    original, encoded = pair
    assert routing_path(encoded) == original
    assert routing_path(encoded.encode("ascii")) == original


# --------------------------------------------------------------------------- canonical_host


@given(host_header_values())
@example("Example.COM.:8080")
@example(" [::1]:80")
def test_canonical_host_is_idempotent(value: str) -> None:
    once = canonical_host(value)
    assert canonical_host(once) == once


@given(st.one_of(value_junk(), st.text(max_size=30)))
@example("a..")
@example("[a:b]")
def test_canonical_host_is_idempotent_outside_the_known_exceptions(value: str) -> None:
    # The §4.4 steps are not idempotent on garbage: one trailing dot goes per pass ("a.." →
    # "a."), and a result that again looks like "host:port" or "[x]" is stripped again.
    once = canonical_host(value)
    if once.endswith((".", " ", "\t")) or once.count(":") == 1 or once.startswith("["):
        return
    assert canonical_host(once) == once


@given(st.one_of(host_header_values(), value_junk(), st.text(max_size=30)))
def test_canonical_host_ignores_ascii_case(value: str) -> None:
    expected = canonical_host(value)
    assert canonical_host(value.translate(_SWAP_ASCII_CASE)) == expected
    assert expected == expected.lower()


@given(host_header_values())
def test_canonical_host_of_realistic_values_has_no_port_spaces_or_dot(value: str) -> None:
    host = canonical_host(value)
    assert host == host.strip()
    assert not host.endswith(".")
    assert "[" not in host
    assert host.count(":") != 1


# --------------------------------------------------------------------------- parse_query


@given(st.one_of(raw_query_strings(), value_junk()))
@example("a=%zz&b=%4&c;d&=&&")
def test_parse_query_never_raises(raw: str) -> None:
    parsed = parse_query(raw)
    assert sum(len(values) for values in parsed.values()) <= raw.count("&") + 1


@given(query_pairs())
@example([("a", "1"), ("b", "x;y"), ("a", "2")])
def test_parse_query_inverts_form_encoding(pairs: list[tuple[str, str]]) -> None:
    raw = "&".join(f"{quote_plus(key)}={quote_plus(value)}" for key, value in pairs)
    expected: dict[str, list[str]] = {}
    for key, value in pairs:
        expected.setdefault(key, []).append(value)
    assert {key: list(values) for key, values in parse_query(raw).items()} == expected


# --------------------------------------------------------------------------- parse_peer


@given(peer_addresses())
@example(("[::ffff:10.0.0.1]:443", IPv4Address("10.0.0.1")))
@example(("[fe80::1]:0", IPv6Address("fe80::1")))
def test_parse_peer_recovers_the_address(pair: tuple[str, PeerIp]) -> None:
    text, ip = pair
    assert parse_peer(text) == ip


@given(st.one_of(value_junk(), st.text(max_size=30)))
def test_parse_peer_never_raises(text: str) -> None:
    peer = parse_peer(text)
    assert peer is None or peer.version in (4, 6)
