"""The ``compress`` middleware in the running gateway (SPEC §8.15): an in-process ``Gateway`` in
front of the test origin. curl ``--compressed`` decodes what the gateway sends for each coding;
the skip rules leave bodies untouched; a compressed body keeps streaming (the first bytes reach
the client while the origin is still sending)."""

from __future__ import annotations

import json
import zlib

import pytest
import trio

from tests.support.gateway import (
    LOCAL,
    config_text,
    curl,
    running_gateway,
    server_entry,
)
from tests.support.origin import Fixed, Origin, Streamed

pytestmark = pytest.mark.integration

DOCUMENT = json.dumps([{"id": n, "name": f"item {n}", "tags": ["a", "b"]} for n in range(300)])
BODY = DOCUMENT.encode()
JSON = ((b"content-type", b"application/json"),)


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("a")
    await nursery.start(server.serve)
    origin = server
    origin.on("/doc", Fixed(200, BODY, JSON))
    origin.on("/tiny", Fixed(200, b'{"ok": true}', JSON))
    origin.on("/png", Fixed(200, b"\x89PNG" + bytes(4000), ((b"content-type", b"image/png"),)))
    origin.on("/sse", Streamed((b"data: " + b"x" * 3000 + b"\n\n",), _type(b"text/event-stream")))
    origin.on("/short-stream", Streamed((b'{"a":', b"1}"), JSON))
    origin.on("/coded", Fixed(200, BODY, (*JSON, (b"content-encoding", b"gzip"))))
    return server


def _type(value: bytes) -> tuple[tuple[bytes, bytes], ...]:
    return ((b"content-type", value),)


def compress_config(origin: Origin, settings: str = "") -> str:
    definition = 'middlewares "squeeze" {\n  type = "compress"\n' + settings + "}\n"
    text = config_text([server_entry(origin)], more=definition)
    return text.replace(
        'service = "main"\n}', 'service = "main"\n  middlewares = ["squeeze"]\n}', 1
    )


@pytest.mark.parametrize("coding", ["br", "gzip", "deflate"])
async def test_curl_decodes_each_coding(origin: Origin, coding: str) -> None:
    async with running_gateway(compress_config(origin)) as gw:
        raw = await curl(gw.url("/doc"), "-H", f"accept-encoding: {coding}")
        decoded = await curl(gw.url("/doc"), "--compressed", "-H", f"accept-encoding: {coding}")
    response = raw.response
    assert response.status == 200
    assert response.header(b"content-encoding") == coding.encode()
    assert response.header(b"content-length") is None
    assert b"accept-encoding" in (response.header(b"vary") or b"").lower()
    assert len(response.body) < len(BODY) // 3  # really compressed
    assert decoded.response.body == BODY


async def test_preference_follows_q_values(origin: Origin) -> None:
    async with running_gateway(compress_config(origin)) as gw:
        chosen = await curl(gw.url("/doc"), "-H", "accept-encoding: br;q=0.5, gzip;q=0.9")
        none = await curl(gw.url("/doc"), "-H", "accept-encoding: identity")
    assert chosen.response.header(b"content-encoding") == b"gzip"
    assert zlib.decompress(chosen.response.body, wbits=31) == BODY
    assert none.response.header(b"content-encoding") is None
    assert none.response.body == BODY
    assert b"accept-encoding" in (none.response.header(b"vary") or b"").lower()


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("/tiny", "below compress_min_bytes"),
        ("/png", "media type not listed"),
        ("/sse", "event streams are never compressed"),
        ("/coded", "already encoded"),
    ],
)
async def test_skipped_responses_pass_unchanged(origin: Origin, path: str, why: str) -> None:
    async with running_gateway(compress_config(origin)) as gw:
        result = await curl(gw.url(path), "-H", "accept-encoding: gzip, br")
        direct = await curl(f"http://{LOCAL}:{origin.port}{path}")
    response = result.response
    assert response.status == 200, why
    assert response.body == direct.response.body, why
    if path != "/coded":
        assert response.header(b"content-encoding") is None, why


async def test_a_short_body_of_unknown_length_goes_out_whole_with_a_length(
    origin: Origin,
) -> None:
    async with running_gateway(compress_config(origin)) as gw:
        result = await curl(gw.url("/short-stream"), "-H", "accept-encoding: gzip")
    response = result.response
    assert response.body == b'{"a":1}'
    assert response.header(b"content-encoding") is None
    assert response.header(b"content-length") == b"7"
    assert response.header(b"transfer-encoding") is None


async def test_head_requests_are_not_compressed(origin: Origin) -> None:
    async with running_gateway(compress_config(origin)) as gw:
        result = await curl("-I", gw.url("/doc"), "-H", "accept-encoding: gzip", head=True)
    assert result.response.status == 200
    assert result.response.header(b"content-encoding") is None


async def test_a_compressed_body_keeps_streaming(origin: Origin) -> None:
    """The first compressed chunk reaches the client while the origin holds the rest back:
    the gateway flushes per chunk instead of buffering the body."""
    release = trio.Event()
    first = b'{"part": "one", "filler": "' + b"abc" * 700 + b'"}'
    origin.on("/live", Streamed((first,), JSON, release=release))
    async with running_gateway(compress_config(origin)) as gw:
        stream = await trio.open_tcp_stream(LOCAL, gw.port)
        async with stream:
            await stream.send_all(b"GET /live HTTP/1.1\r\nhost: x\r\naccept-encoding: gzip\r\n\r\n")
            received = head = b""
            decoder = zlib.decompressobj(wbits=31)
            plain = b""
            with trio.fail_after(10):
                while len(plain) < len(first):
                    data = await stream.receive_some(65536)
                    assert data, "the connection closed before the first chunk"
                    received += data
                    head, _, body = received.partition(b"\r\n\r\n")
                    if body:
                        plain = decoder.decompress(_dechunk(body))
            assert not release.is_set()  # the origin has not finished: this was streamed
            assert b"content-encoding: gzip" in head.lower()
            release.set()
    assert plain == first


def _dechunk(data: bytes) -> bytes:
    """The payload of the complete chunks at the start of ``data`` (chunked framing)."""
    out = b""
    while True:
        size_line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return out
        size = int(size_line.split(b";")[0], 16)
        if size == 0 or len(rest) < size + 2:
            return out
        out += rest[:size]
        data = rest[size + 2 :]
