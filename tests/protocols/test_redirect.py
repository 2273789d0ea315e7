"""The ``redirect_to`` answer's pure parts (SPEC §3.7, §5.14 step 3): the ``Location`` builder,
the ACME HTTP-01 exception and the 308 response."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.protocols.responses import redirect_response
from a3s_gateway.protocols.target import is_acme_challenge, redirect_location


@pytest.mark.parametrize(
    ("authority", "port", "target", "expected"),
    [
        (b"example.com", 443, b"/", b"https://example.com/"),
        (b"example.com:80", 443, b"/a/b?x=1&y=%20", b"https://example.com/a/b?x=1&y=%20"),
        (b"example.com:8080", 8443, b"/p", b"https://example.com:8443/p"),
        (b"Example.COM", 443, b"/", b"https://Example.COM/"),
        (b"127.0.0.1:8080", 8443, b"/", b"https://127.0.0.1:8443/"),
        (b"[::1]:8080", 8443, b"/x?q", b"https://[::1]:8443/x?q"),
        (b"[2001:db8::1]", 443, b"/", b"https://[2001:db8::1]/"),
        (b"xn--bcher-kva.example:80", 443, b"/", b"https://xn--bcher-kva.example/"),
        (b"host:", 443, b"/", b"https://host/"),
        (b" host ", 443, b"/", b"https://host/"),
    ],
    ids=[
        "443-omitted",
        "port-dropped-target-kept",
        "other-port",
        "case-kept",
        "ipv4",
        "ipv6-port",
        "ipv6",
        "idn",
        "empty-port",
        "spaces",
    ],
)
def test_the_location(authority: bytes, port: int, target: bytes, expected: bytes) -> None:
    assert redirect_location(authority, port, target) == expected


@pytest.mark.parametrize(
    "authority",
    [
        b"",
        b":8080",
        b"::1",
        b"[::1",
        b"[::1]x",
        b"[not-v6]",
        b"[fe80::1%25eth0]",
        b"host:port",
        b"ho st",
        b"host/evil",
        b"user@host",
        b"host\r\nx: y",
    ],
)
def test_no_location_without_a_usable_host(authority: bytes) -> None:
    assert redirect_location(authority, 8443, b"/") is None


@given(st.binary(max_size=40), st.integers(min_value=1, max_value=65535))
def test_a_location_is_an_https_url_for_the_same_host(authority: bytes, port: int) -> None:
    location = redirect_location(authority, port, b"/p?q=1")
    if location is None:
        return
    parts = urlsplit(location.decode("ascii"))
    assert parts.scheme == "https"
    assert parts.port == (None if port == 443 else port)
    assert (parts.path, parts.query) == ("/p", "q=1")
    assert parts.hostname is not None
    assert parts.hostname.lower() in authority.decode("ascii").lower()


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (b"/.well-known/acme-challenge/LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", True),
        (b"/.well-known/acme-challenge/a_b-c", True),
        (b"/.well-known/acme-challenge/", False),
        (b"/.well-known/acme-challenge/../../admin", False),
        (b"/.well-known/acme-challenge/a/b", False),
        (b"/.well-known/acme-challenge/%2e%2e", False),
        (b"/.well-known/acme-challenge", False),
        (b"/.well-known/other/token", False),
        (b"/", False),
    ],
)
def test_acme_challenge_paths(path: bytes, expected: bool) -> None:
    assert is_acme_challenge(path) is expected


def test_the_308_response() -> None:
    response = redirect_response(b"https://example.com:8443/a?b")
    assert response.head.status == 308
    assert not response.close
    headers = dict(response.head.headers)
    assert headers[b"location"] == b"https://example.com:8443/a?b"
    assert headers[b"content-length"] == str(len(response.body)).encode()
    assert len(response.body) < 100
    assert json.loads(response.body) == {"location": "https://example.com:8443/a?b", "status": 308}
