"""Request smuggling defences on real sockets (SPEC §5.3, §14.3).

Each payload goes over a raw socket to an in-process gateway in front of a recording origin.
Most payloads also carry a hidden second request (``GET /smuggled``) where a parser that
framed the message differently would find one.

- Rejected payloads must get the SPEC §5.3 status with ``Connection: close``, the connection
  must then close, and the origin must receive no complete request and never ``/smuggled``.
- Accepted payloads must reach the origin as exactly one request with the body the gateway
  parsed; a sentinel request sent afterwards on the same connection must be the origin's next
  request, so nothing was hidden in between.
"""

from __future__ import annotations

import hashlib
from typing import Final

import pytest
import trio

from tests.support.gateway import RawClient, config_text, exchange, running_gateway, server_entry
from tests.support.origin import Origin

pytestmark = pytest.mark.integration

SMUGGLED: Final = b"GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n"
SENTINEL: Final = b"GET /sentinel HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("smuggling")
    await nursery.start(server.serve)
    return server


def post(*fields: bytes, body: bytes = b"", version: bytes = b"1.1") -> bytes:
    """A POST to ``/`` with ``Host: h``, the given raw field lines, then ``body``."""
    head = b"POST / HTTP/" + version + b"\r\nHost: h\r\n"
    return head + b"".join(field + b"\r\n" for field in fields) + b"\r\n" + body


CHUNKED: Final = b"Transfer-Encoding: chunked"
#: A zero-length chunked body followed by the hidden request.
EMPTY_CHUNKED_THEN_SMUGGLED: Final = b"0\r\n\r\n" + SMUGGLED

REJECTED: Final = [
    # Content-Length and Transfer-Encoding together (RFC 9112 §6.1).
    pytest.param(
        post(b"Content-Length: 6", CHUNKED, body=b"0\r\n\r\nG" + SMUGGLED), 400, id="cl-then-te"
    ),
    pytest.param(
        post(CHUNKED, b"Content-Length: 40", body=EMPTY_CHUNKED_THEN_SMUGGLED), 400, id="te-then-cl"
    ),
    pytest.param(
        post(b"Content-Length: 5", b"Transfer-Encoding:\r\n chunked", body=b"0\r\n\r\n" + SMUGGLED),
        400,
        id="cl-and-obs-folded-te",
    ),
    # Content-Length forms.
    pytest.param(
        post(b"Content-Length: 5", b"Content-Length: 40", body=b"hello" + SMUGGLED),
        400,
        id="duplicate-differing-cl",
    ),
    pytest.param(
        post(b"Content-Length: 5, 40", body=b"hello" + SMUGGLED), 400, id="cl-list-differing"
    ),
    pytest.param(post(b"Content-Length: +5", body=b"hello" + SMUGGLED), 400, id="cl-plus-sign"),
    pytest.param(post(b"Content-Length: 0x5", body=b"hello" + SMUGGLED), 400, id="cl-hex"),
    pytest.param(
        post(b"Content-Length : 5", body=b"hello" + SMUGGLED), 400, id="cl-space-before-colon"
    ),
    # Transfer-Encoding forms.
    pytest.param(
        post(b"Transfer-Encoding: chunked, chunked", body=EMPTY_CHUNKED_THEN_SMUGGLED),
        400,
        id="te-chunked-chunked",
    ),
    pytest.param(
        post(CHUNKED, CHUNKED, body=EMPTY_CHUNKED_THEN_SMUGGLED), 400, id="te-two-chunked-fields"
    ),
    pytest.param(post(b"Transfer-Encoding: identity", body=SMUGGLED), 400, id="te-identity"),
    pytest.param(
        post(b"Transfer-Encoding: chunked, identity", body=EMPTY_CHUNKED_THEN_SMUGGLED),
        400,
        id="te-chunked-identity",
    ),
    pytest.param(
        post(b"Transfer-Encoding: gzip, chunked", body=EMPTY_CHUNKED_THEN_SMUGGLED),
        501,
        id="te-gzip-chunked",
    ),
    pytest.param(
        post(b"Transfer-Encoding: xchunked", body=EMPTY_CHUNKED_THEN_SMUGGLED),
        400,
        id="te-xchunked",
    ),
    pytest.param(
        post(b"Transfer-Encoding: \x0bchunked", body=EMPTY_CHUNKED_THEN_SMUGGLED),
        400,
        id="te-vertical-tab",
    ),
    pytest.param(
        post(b"Transfer-Encoding : chunked", body=EMPTY_CHUNKED_THEN_SMUGGLED),
        400,
        id="te-space-before-colon",
    ),
    pytest.param(
        post(b"Transfer-Encoding: chunked\r\n , identity", body=EMPTY_CHUNKED_THEN_SMUGGLED),
        400,
        id="te-obs-fold-identity",
    ),
    pytest.param(
        post(CHUNKED, body=EMPTY_CHUNKED_THEN_SMUGGLED, version=b"1.0"), 400, id="te-on-http-1.0"
    ),
    # Chunk framing (strict: SPEC §5.3 "bad chunk size, chunk extension or missing CRLF").
    pytest.param(
        post(CHUNKED, body=b"-1\r\nx\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-size-negative"
    ),
    pytest.param(
        post(CHUNKED, body=b"0x10\r\n" + SMUGGLED[:16] + b"\r\n0\r\n\r\n"), 400, id="chunk-size-0x"
    ),
    pytest.param(
        post(CHUNKED, body=b"1 ;ext\r\nx\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-size-space-ext"
    ),
    pytest.param(
        post(CHUNKED, body=b" 1\r\nx\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-size-leading-space"
    ),
    pytest.param(
        post(CHUNKED, body=b"1\t\r\nx\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-size-trailing-tab"
    ),
    pytest.param(
        post(CHUNKED, body=b"1" * 17 + b"\r\nx\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-size-huge"
    ),
    pytest.param(post(CHUNKED, body=b"\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-size-empty"),
    pytest.param(
        post(CHUNKED, body=b"5\nhello\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-size-bare-lf"
    ),
    pytest.param(
        post(CHUNKED, body=b"5\r\nhello\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-data-bare-lf"
    ),
    pytest.param(
        post(CHUNKED, body=b"3\r\nhello\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-data-too-long"
    ),
    pytest.param(
        post(CHUNKED, body=b"5;a\rb\r\nhello\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-ext-bare-cr"
    ),
    pytest.param(
        post(CHUNKED, body=b"5;a\x00\r\nhello\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-ext-nul"
    ),
    pytest.param(
        post(CHUNKED, body=b"5;\r\nhello\r\n0\r\n\r\n" + SMUGGLED), 400, id="chunk-ext-empty"
    ),
    # Field lines and request lines.
    pytest.param(
        post(b"X Foo: bar", b"Content-Length: 0", body=SMUGGLED), 400, id="space-in-field-name"
    ),
    pytest.param(
        post(b"X-Foo: a\x00b", b"Content-Length: 0", body=SMUGGLED), 400, id="nul-in-value"
    ),
    pytest.param(
        post(b"X-Foo: a\rb", b"Content-Length: 0", body=SMUGGLED), 400, id="bare-cr-in-value"
    ),
    pytest.param(
        post(b"X-Foo: a\x01b", b"Content-Length: 0", body=SMUGGLED), 400, id="ctl-in-value"
    ),
    pytest.param(
        post(b"X-Foo", b"Content-Length: 0", body=SMUGGLED), 400, id="field-without-colon"
    ),
    pytest.param(
        post(b" X-Foo: a", b"Content-Length: 0", body=SMUGGLED), 400, id="leading-obs-fold"
    ),
    pytest.param(
        b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n" + SMUGGLED, 400, id="double-space-request-line"
    ),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n" + SMUGGLED, 400, id="missing-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nHost: i\r\n\r\n" + SMUGGLED, 400, id="two-hosts"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n" + SMUGGLED, 505, id="version-2.0"),
    pytest.param(b"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n" + SMUGGLED, 400, id="fragment-in-target"),
    pytest.param(
        b"GET http://u@h/ HTTP/1.1\r\nHost: h\r\n\r\n" + SMUGGLED, 400, id="userinfo-in-target"
    ),
    pytest.param(b"GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n" + SMUGGLED, 400, id="bad-percent-escape"),
]


@pytest.mark.parametrize(("payload", "status"), REJECTED)
async def test_ambiguous_requests_are_rejected(origin: Origin, payload: bytes, status: int) -> None:
    async with running_gateway(config_text([server_entry(origin)])) as gw:
        response, closed = await exchange(gw.port, payload, close_wait=5.0)
    assert response is not None, "the gateway closed without answering"
    assert response.status == status
    assert response.header(b"connection") == b"close"
    assert closed, "the connection stayed open after a framing error"
    assert origin.completed == [], [r.target for r in origin.completed]
    assert origin.heads <= 1
    assert not any(b"smuggled" in r.target for r in origin.requests)


HIDDEN_IN_BODY: Final = b"POST /smuggled HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"

ACCEPTED: Final = [
    pytest.param(
        post(b"Content-Length: %d" % len(HIDDEN_IN_BODY), body=HIDDEN_IN_BODY),
        HIDDEN_IN_BODY,
        id="request-hidden-in-cl-body",
    ),
    pytest.param(
        post(CHUNKED, body=b"%x\r\n" % len(HIDDEN_IN_BODY) + HIDDEN_IN_BODY + b"\r\n0\r\n\r\n"),
        HIDDEN_IN_BODY,
        id="request-hidden-in-chunked-body",
    ),
    pytest.param(
        post(b"Transfer-Encoding:\r\n chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
        b"hello",
        id="obs-folded-te-chunked",
    ),
    pytest.param(
        post(b"Transfer-Encoding: Chunked", body=b"5\r\nhello\r\n0\r\n\r\n"),
        b"hello",
        id="te-upper-case-chunked",
    ),
    pytest.param(
        post(b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
        b"hello",
        id="identical-duplicate-cl",
    ),
    pytest.param(
        post(CHUNKED, body=b'5;name=value;q="a b"\r\nhello\r\n0\r\n\r\n'),
        b"hello",
        id="valid-chunk-extensions",
    ),
    pytest.param(
        post(CHUNKED, body=b"5\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n"),
        b"hello",
        id="chunked-with-trailer",
    ),
    pytest.param(
        b"POST / HTTP/1.1\nHost: h\nContent-Length: 5\n\nhello", b"hello", id="bare-lf-head"
    ),
]


@pytest.mark.parametrize(("payload", "body"), ACCEPTED)
async def test_accepted_requests_reach_the_origin_exactly_as_parsed(
    origin: Origin, payload: bytes, body: bytes
) -> None:
    # No idle upstream connections: each request gets a fresh one, so this test sees framing
    # only (pooled reuse is test_http1_proxy's business).
    config = config_text([server_entry(origin)], balancer="    max_idle_per_backend = 0")
    async with running_gateway(config) as gw:
        client = await RawClient.connect(gw.port)
        try:
            await client.send(payload)
            first = await client.response(b"POST")
            assert first is not None
            assert (first.status, first.complete) == (200, True)
            await client.send(SENTINEL)
            sentinel = await client.response()
        finally:
            await client.aclose()
    assert sentinel is not None
    assert sentinel.status == 200
    assert [r.target for r in origin.requests] == [b"/", b"/sentinel"]
    forwarded = origin.requests[0]
    assert forwarded.complete
    assert forwarded.body_length == len(body)
    assert forwarded.body_sha256 == hashlib.sha256(body).hexdigest()
