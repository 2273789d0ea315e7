"""Request-side matcher inputs: canonical host, routing path, sanitising, query, peer, views.

SPEC §4.3 (query parsing, ClientIP peers), §4.4 (canonical host), §4.5 (routing path and
sanitising), §4.10 (SNI).
"""

from __future__ import annotations

from dataclasses import FrozenInstanceError, replace
from ipaddress import IPv4Address, IPv6Address

import pytest

from a3s_gateway.routing.request import (
    ConnView,
    HttpRequestInfo,
    InvalidPathEscape,
    RequestView,
    TcpConnInfo,
    canonical_host,
    canonical_sni,
    parse_peer,
    parse_query,
    routing_path,
    sanitize_path,
)

# --------------------------------------------------------------------------- §4.4 canonical host


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[::1]:8080", "::1"),
        ("[::1]", "::1"),
        ("[2001:DB8::1]:443", "2001:db8::1"),
        ("example.com:80", "example.com"),
        ("example.com", "example.com"),
        ("::1", "::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("Example.COM.", "example.com"),
        ("Example.COM.:8443", "example.com"),
        ("a..", "a."),
        ("  example.com  ", "example.com"),
        ("\texample.com:80 ", "example.com"),
        (" [::1]:80", "::1"),
        ("10.0.0.1:80", "10.0.0.1"),
        ("", ""),
        (".", ""),
        (":80", ""),
        ("[]", ""),
    ],
)
def test_canonical_host(value: str, expected: str) -> None:
    assert canonical_host(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        # Not "[v6]" or "[v6]:port": the colon rule applies to the whole value.
        ("[::1]x", "[::1]x"),
        ("[::1]:80:90", "[::1]:80:90"),
        ("[abc:80", "[abc"),
        ("a:b:c", "a:b:c"),
    ],
)
def test_canonical_host_leaves_malformed_brackets_to_the_colon_rule(
    value: str, expected: str
) -> None:
    assert canonical_host(value) == expected


def test_canonical_sni_lowercases_and_drops_one_trailing_dot() -> None:
    assert canonical_sni("API.Example.COM.") == "api.example.com"
    assert canonical_sni("a..") == "a."
    assert canonical_sni("") == ""


# --------------------------------------------------------------------------- §4.5 routing path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/foo%20bar", b"/foo bar"),
        ("/foo%2Fbar", b"/foo%2Fbar"),
        ("/foo%2fbar", b"/foo%2fbar"),
        ("/100%25", b"/100%25"),
        ("/a%3Fb%23c", b"/a%3Fb%23c"),
        ("/%41%62%7e", b"/Ab~"),
        ("/caf%C3%A9", "/café".encode()),
        ("/café", "/café".encode()),
        ("/%ff", b"/\xff"),
        ("/plain/path", b"/plain/path"),
        ("", b""),
    ],
)
def test_routing_path(raw: str, expected: bytes) -> None:
    assert routing_path(raw) == expected
    assert routing_path(raw.encode()) == expected


@pytest.mark.parametrize("kept", list(":/?#[]@!$&'()*+,;=%"))
def test_routing_path_keeps_every_delimiter_escape_in_both_cases(kept: str) -> None:
    upper = f"%{ord(kept):02X}"
    lower = f"%{ord(kept):02x}"
    assert routing_path(f"/a{upper}b") == f"/a{upper}b".encode()
    assert routing_path(f"/a{lower}b") == f"/a{lower}b".encode()


@pytest.mark.parametrize("raw", ["/%G1", "/a%4", "/a%", "/%%41", "/ok%20then%zz", "/%4G/x"])
def test_routing_path_rejects_invalid_escapes(raw: str) -> None:
    with pytest.raises(InvalidPathEscape, match="invalid percent-escape"):
        routing_path(raw)


def test_invalid_path_escape_is_a_value_error() -> None:
    assert issubclass(InvalidPathEscape, ValueError)


def test_routing_path_of_text_round_trips_surrogateescape_and_never_fails_on_surrogates() -> None:
    assert routing_path("/\udcff") == b"/\xff"  # a wire byte decoded with surrogateescape
    assert routing_path("/\ud800") == b"/\xed\xa0\x80"  # no wire bytes give this; still no error


def test_routing_path_does_not_decode_plus() -> None:
    assert routing_path("/a+b") == b"/a+b"


# --------------------------------------------------------------------------- §4.5 sanitize_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"//a///b", b"/a/b"),
        (b"/a/./b/../c/", b"/a/c/"),
        (b"/../../x", b"/x"),
        (b"/a/%2e%2E/b", b"/b"),
        (b"/a/%2E%2e/b", b"/b"),
        (b"/a/.%2e/b", b"/b"),
        (b"/a/%2e/b", b"/a/b"),
        (b"/a/..", b"/"),
        (b"/.", b"/"),
        (b"/", b"/"),
        (b"", b"/"),
        (b"/a/b/", b"/a/b/"),
        (b"/a//", b"/a/"),
        (b"/a/b/..", b"/a/"),  # RFC 3986 §5.2.4: a final dot segment leaves a "/"
        (b"/a/b/.", b"/a/b/"),
        (b"/a/b/../", b"/a/"),
        (b"/a/...", b"/a/..."),
        (b"/a/.b/..c", b"/a/.b/..c"),
        (b"/a/%2e%41", b"/a/%2e%41"),
        (b"/a%2F../b", b"/a%2F../b"),
        (b"/a/%2f/../b", b"/a/b"),
        (b"/already/clean", b"/already/clean"),
        (b"relative/./x", b"/relative/x"),
    ],
)
def test_sanitize_path(raw: bytes, expected: bytes) -> None:
    assert sanitize_path(raw) == expected


def test_sanitize_path_leaves_other_escapes_alone() -> None:
    assert sanitize_path(b"//x/%2F%20/./y") == b"/x/%2F%20/y"


# --------------------------------------------------------------------------- §4.3 query


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a=1&a=2&b", {"a": ("1", "2"), "b": ("",)}),
        ("a=1;b=2", {}),
        ("a=1;b=2&c=3", {"c": ("3",)}),
        ("x=%zz&y=1", {"y": ("1",)}),
        ("%zz=1", {}),
        ("x=%4", {}),
        ("q=a+b%2Bc", {"q": ("a b+c",)}),
        ("=v", {"": ("v",)}),
        ("a=1&&b=2&", {"a": ("1",), "b": ("2",)}),
        ("k=a=b", {"k": ("a=b",)}),
        ("k%20x=%C3%A9", {"k x": ("é",)}),
        ("mobile", {"mobile": ("",)}),
        ("mobile=", {"mobile": ("",)}),
        ("K=1&k=2", {"K": ("1",), "k": ("2",)}),
        ("", {}),
    ],
)
def test_parse_query_follows_go(raw: str, expected: dict[str, tuple[str, ...]]) -> None:
    assert dict(parse_query(raw)) == expected


def test_parse_query_keeps_non_utf8_bytes_distinct_from_replacement_character() -> None:
    value = parse_query("v=%FF")["v"][0]
    assert value != "\ufffd"
    assert value.encode("utf-8", "surrogateescape") == b"\xff"


# --------------------------------------------------------------------------- §4.3 ClientIP peer


@pytest.mark.parametrize(
    ("remote_addr", "expected"),
    [
        ("10.0.0.1:5000", IPv4Address("10.0.0.1")),
        ("10.0.0.1", IPv4Address("10.0.0.1")),
        ("[2001:db8::1]:443", IPv6Address("2001:db8::1")),
        ("[2001:db8::1]", IPv6Address("2001:db8::1")),
        ("2001:db8::1", IPv6Address("2001:db8::1")),
        ("fe80::1%eth0", IPv6Address("fe80::1")),
        ("[fe80::1%eth0]:8080", IPv6Address("fe80::1")),
        ("::ffff:10.0.0.1", IPv4Address("10.0.0.1")),
        ("[::ffff:10.0.0.1]:1234", IPv4Address("10.0.0.1")),
    ],
)
def test_parse_peer(remote_addr: str, expected: IPv4Address | IPv6Address) -> None:
    assert parse_peer(remote_addr) == expected


@pytest.mark.parametrize(
    "remote_addr",
    [
        "",
        "garbage",
        "10.0.0.1:port",
        "10.0.0.1:",
        "10.0.0.256",
        "010.0.0.1",
        "[2001:db8::1",
        "[2001:db8::1]x",
        "[2001:db8::1]:",
        "[10.0.0.1]:80:90",
        "example.com:80",
        "unix:/run/sock",
    ],
)
def test_parse_peer_gives_none_for_garbage(remote_addr: str) -> None:
    assert parse_peer(remote_addr) is None


# --------------------------------------------------------------------------- views


_BASE = HttpRequestInfo(method="GET", host="Example.COM:8080", path="/a%20b")


def test_request_view_from_info_canonicalises_host_and_path() -> None:
    view = RequestView.from_info(_BASE)
    assert view.method == "GET"
    assert view.host == "example.com"
    assert view.path == b"/a b"
    assert view.path_text == "/a b"


def test_request_view_from_info_does_not_sanitise() -> None:
    view = RequestView.from_info(replace(_BASE, path="//a/../b"))
    assert view.path == b"//a/../b"


def test_request_view_from_info_raises_on_bad_escape() -> None:
    with pytest.raises(InvalidPathEscape):
        RequestView.from_info(replace(_BASE, path="/%G1"))


def test_path_text_replaces_invalid_utf8_and_is_cached() -> None:
    view = RequestView.from_info(replace(_BASE, path="/%FFx"))
    assert view.path == b"/\xffx"
    assert view.path_text == "/\ufffdx"
    assert view.path_text is view.path_text


def test_header_values_names_are_case_insensitive_and_values_not_split() -> None:
    headers = [
        ("X-Env", "prod, staging"),
        ("Accept", "text/html"),
        ("x-env", "Canary"),
        ("X-ENV", ""),
    ]
    view = RequestView.from_info(replace(_BASE, headers=headers))
    assert view.header_values("x-env") == ("prod, staging", "Canary", "")
    assert view.header_values("accept") == ("text/html",)
    assert view.header_values("missing") == ()
    assert view.header_values("x-env") is view.header_values("x-env")


def test_query_is_parsed_once_on_first_use() -> None:
    view = RequestView.from_info(replace(_BASE, query="a=1&a=2&b"))
    assert view.query == {"a": ("1", "2"), "b": ("",)}
    assert view.query is view.query


def test_peer_is_parsed_and_cached_including_none() -> None:
    view = RequestView.from_info(replace(_BASE, remote_addr="[::ffff:192.0.2.7]:443"))
    assert view.peer == IPv4Address("192.0.2.7")
    assert view.peer is view.peer
    garbage = RequestView.from_info(replace(_BASE, remote_addr="nope"))
    assert garbage.peer is None
    assert garbage.peer is None


def test_request_view_defaults_and_has_no_instance_dict() -> None:
    view = RequestView("GET", "", b"/")
    assert view.header_values("host") == ()
    assert dict(view.query) == {}
    assert view.peer is None
    assert not hasattr(view, "__dict__")


def test_conn_view_from_info() -> None:
    view = ConnView.from_info(
        TcpConnInfo(sni="DB.Example.com.", alpn=["h2", "postgresql"], remote_addr="10.1.2.3:999")
    )
    assert view.sni == "db.example.com"
    assert view.alpn == ("h2", "postgresql")
    assert view.peer == IPv4Address("10.1.2.3")
    assert view.peer is view.peer
    assert not hasattr(view, "__dict__")


def test_conn_view_defaults() -> None:
    view = ConnView.from_info(TcpConnInfo())
    assert (view.sni, view.alpn, view.peer) == ("", (), None)


def test_info_records_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        _BASE.method = "POST"  # type: ignore[misc]  # checking the runtime guard
    assert TcpConnInfo() == TcpConnInfo(sni="", alpn=(), remote_addr="")
