"""The ``compress`` middleware's core (SPEC §8.15): Accept-Encoding negotiation, every skip
rule, the head changes of a compressed response, ``Vary``, holding a body of unknown length
until the size decides, and per-chunk flushing (each output so far decodes to the input so
far) for br, gzip and deflate; the framing checked by standard decoders and by real curl."""

from __future__ import annotations

import gzip
import os
import shutil
import zlib
from collections.abc import Callable
from typing import Literal, TypeAlias

import brotli
import pytest
import trio

from a3s_gateway.config.schema_middlewares import Compress
from a3s_gateway.middleware.compress import (
    DEFAULT_CONTENT_TYPES,
    BodyFilter,
    CompressMiddleware,
    MediaTypes,
    accept_encoding_weights,
    negotiate,
)
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.protocols.headers import Headers
from tests.support.origin import Fixed, Origin

Coding: TypeAlias = Literal["br", "gzip", "deflate"]
CODINGS: tuple[Coding, ...] = ("br", "gzip", "deflate")
TEXT = b"".join(b"line %d of a compressible text body\n" % i for i in range(400))


def make(
    *,
    min_bytes: int = 1024,
    level: int = 6,
    encodings: tuple[Coding, ...] = CODINGS,
    content_types: tuple[str, ...] | None = None,
) -> CompressMiddleware:
    return CompressMiddleware.from_config(
        "zip",
        Compress(
            compress_min_bytes=min_bytes,
            compress_level=level,
            compress_encodings=encodings,
            compress_content_types=content_types,
        ),
    )


def request_state(
    accept: bytes | None = b"br, gzip, deflate", method: bytes = b"GET"
) -> RequestState:
    headers: Headers = [(b"host", b"api.example.com")]
    if accept is not None:
        headers.append((b"accept-encoding", accept))
    return RequestState(
        method=method,
        path=b"/",
        query=b"",
        headers=headers,
        authority=b"api.example.com",
        client_ip="198.51.100.7",
        peer_ip="198.51.100.7",
        tls=False,
    )


def response_headers(
    content_type: bytes | None = b"text/html; charset=utf-8",
    length: int | None = len(TEXT),
    *extra: tuple[bytes, bytes],
) -> Headers:
    headers: Headers = [(b"date", b"Mon, 01 Jan 2024 00:00:00 GMT")]
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    headers.extend(extra)
    return headers


def values(headers: Headers, name: bytes) -> list[bytes]:
    return [value for field, value in headers if field == name]


class Decoder:
    """A streaming decoder of one coding: ``push`` returns the bytes decoded so far."""

    def __init__(self, coding: str) -> None:
        self._push: Callable[[bytes], bytes]
        if coding == "br":
            self._push = brotli.Decompressor().process
        else:
            self._push = zlib.decompressobj(31 if coding == "gzip" else 15).decompress

    def push(self, data: bytes) -> bytes:
        return self._push(data)


def decode(coding: str, data: bytes) -> bytes:
    """``data`` decoded by the standard one-shot decoder of ``coding``."""
    if coding == "br":
        return brotli.decompress(data)
    if coding == "gzip":
        return gzip.decompress(data)
    return zlib.decompress(data)


def ready(body_filter: BodyFilter) -> bool:
    """``body_filter.ready``, read through a call: it changes under ``feed``/``finish``, which
    mypy's narrowing of a plain attribute does not see."""
    return body_filter.ready


def run(body_filter: BodyFilter, chunks: list[bytes]) -> bytes:
    return b"".join(body_filter.feed(chunk) for chunk in chunks) + body_filter.finish()


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# -- negotiation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "encodings", "expected"),
    [
        pytest.param([], CODINGS, None, id="no-field"),
        pytest.param([b""], CODINGS, None, id="empty"),
        pytest.param([b"gzip"], CODINGS, "gzip", id="one"),
        pytest.param([b"gzip, deflate, br"], CODINGS, "br", id="tie-config-order"),
        pytest.param([b"br, gzip"], ("gzip", "br"), "gzip", id="tie-other-config-order"),
        pytest.param([b"gzip;q=1, br;q=0.5"], CODINGS, "gzip", id="highest-q"),
        pytest.param([b"br;q=0.2", b"gzip;q=0.3"], CODINGS, "gzip", id="two-lines"),
        pytest.param([b"*"], CODINGS, "br", id="star"),
        pytest.param([b"*;q=0"], CODINGS, None, id="star-excluded"),
        pytest.param([b"*, br;q=0"], CODINGS, "gzip", id="star-minus-br"),
        pytest.param([b"br;q=0, gzip;q=0, *;q=0.1"], CODINGS, "deflate", id="star-low"),
        pytest.param([b"gzip;q=0.5, *;q=0.9"], CODINGS, "br", id="star-beats-listed"),
        pytest.param([b"identity"], CODINGS, None, id="identity"),
        pytest.param([b"identity;q=0"], CODINGS, None, id="identity-refused-still-identity"),
        pytest.param([b"GZip;Q=0.5, DEFLATE;q=0.4"], CODINGS, "gzip", id="case"),
        pytest.param([b"x-gzip"], CODINGS, "gzip", id="x-gzip"),
        pytest.param([b"gzip ; q = 0.5 "], CODINGS, "gzip", id="whitespace"),
        pytest.param([b"br;q=0.001"], CODINGS, "br", id="smallest-q"),
        pytest.param([b"br;q=1.000"], CODINGS, "br", id="q-one-three-zeros"),
        pytest.param([b"br;q=0.0001"], CODINGS, None, id="q-four-digits"),
        pytest.param([b"br;q=1.001"], CODINGS, None, id="q-above-one"),
        pytest.param([b"br;q=2"], CODINGS, None, id="q-two"),
        pytest.param([b"br;q=-1"], CODINGS, None, id="q-negative"),
        pytest.param([b"br;q=bogus, gzip"], CODINGS, "gzip", id="q-garbage"),
        pytest.param([b"br;q, gzip;q=0.1"], CODINGS, "gzip", id="q-without-value"),
        pytest.param([b"gzip, gzip;q=0"], CODINGS, None, id="duplicate-keeps-lowest"),
        pytest.param([b"br;level=5"], CODINGS, "br", id="other-param"),
        pytest.param([b"zstd, gzip;q=0.5"], CODINGS, "gzip", id="unknown-coding"),
        pytest.param([b"gzip"], ("deflate",), None, id="not-configured"),
        pytest.param([b",,, ;;; =, ;q=1"], CODINGS, None, id="garbage"),
        pytest.param([b"\xff\xfe, gzip"], CODINGS, "gzip", id="non-ascii"),
    ],
)
def test_negotiation(accept: list[bytes], encodings: tuple[str, ...], expected: str | None) -> None:
    assert negotiate(accept, encodings) == expected


def test_weights_are_thousandths_per_lower_case_coding() -> None:
    weights = accept_encoding_weights([b"gzip;q=0.5, BR;q=1.000, deflate;q=0.25, *;q=0"])
    assert weights == {b"gzip": 500, b"br": 1000, b"deflate": 250, b"*": 0}


# -- media types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "media",
    [
        b"text/html",
        b"text/plain",
        b"text/css",
        b"application/json",
        b"application/problem+json",
        b"application/javascript",
        b"application/xml",
        b"application/atom+xml",
        b"image/svg+xml",
        b"application/wasm",
    ],
)
def test_default_types_listed(media: bytes) -> None:
    assert MediaTypes(DEFAULT_CONTENT_TYPES).matches(media)


@pytest.mark.parametrize(
    "media",
    [b"image/png", b"application/octet-stream", b"application/jsonx", b"xtext/html", b"video/mp4"],
)
def test_other_types_not_listed(media: bytes) -> None:
    assert not MediaTypes(DEFAULT_CONTENT_TYPES).matches(media)


def test_configured_patterns_ignore_case_and_parameters() -> None:
    types = MediaTypes(["Application/VND.*", "text/plain; charset=utf-8", "font/*2"])
    assert types.matches(b"application/vnd.api+json")
    assert types.matches(b"text/plain")
    assert types.matches(b"font/woff2")
    assert not types.matches(b"font/woff")
    assert not types.matches(b"text/html")
    assert not MediaTypes([]).matches(b"text/plain")


@pytest.mark.parametrize(
    "content_type",
    [b"text/html", b"TEXT/HTML; Charset=UTF-8", b" application/json ;charset=utf-8"],
)
def test_media_type_of_the_response_ignores_case_and_parameters(content_type: bytes) -> None:
    headers = response_headers(content_type)
    assert make().body_filter(request_state(), 200, headers) is not None


# -- skip rules -----------------------------------------------------------------------------

SKIPS = [
    pytest.param(b"HEAD", 200, response_headers(), None, id="head"),
    pytest.param(b"GET", 101, response_headers(), None, id="101-upgrade"),
    pytest.param(b"GET", 103, response_headers(), None, id="1xx"),
    pytest.param(b"GET", 204, response_headers(), None, id="204"),
    pytest.param(b"GET", 206, response_headers(), None, id="206"),
    pytest.param(b"GET", 304, response_headers(), None, id="304"),
    pytest.param(
        b"GET",
        200,
        response_headers(None, 5000, (b"content-encoding", b"gzip")),
        None,
        id="encoded",
    ),
    pytest.param(
        b"GET",
        200,
        response_headers(b"text/plain", 5000, (b"content-encoding", b"identity")),
        None,
        id="encoded-identity",
    ),
    pytest.param(
        b"GET",
        200,
        response_headers(b"text/plain", 5000, (b"cache-control", b"public, No-Transform")),
        None,
        id="no-transform",
    ),
    pytest.param(
        b"GET",
        200,
        response_headers(
            b"text/plain",
            5000,
            (b"cache-control", b"max-age=60"),
            (b"cache-control", b"no-transform"),
        ),
        None,
        id="no-transform-second-line",
    ),
    pytest.param(b"GET", 200, response_headers(None), None, id="no-content-type"),
    pytest.param(b"GET", 200, response_headers(b"text"), None, id="not-a-media-type"),
    pytest.param(
        b"GET",
        200,
        response_headers(b"text/plain", 5000, (b"content-type", b"text/html")),
        None,
        id="two-content-types",
    ),
    pytest.param(b"GET", 200, response_headers(b"image/png"), None, id="type-not-listed"),
    pytest.param(b"GET", 200, response_headers(b"text/plain", 1023), None, id="below-min"),
    pytest.param(b"GET", 200, response_headers(b"text/plain", 0), None, id="empty"),
    pytest.param(
        b"GET", 200, response_headers(b"text/event-stream", None), None, id="sse-default-list"
    ),
    pytest.param(
        b"GET",
        200,
        response_headers(b"text/event-stream", None),
        ("text/*",),
        id="sse-even-if-listed",
    ),
    pytest.param(
        b"GET",
        200,
        response_headers(b"application/grpc", None),
        ("application/*",),
        id="grpc",
    ),
    pytest.param(
        b"GET",
        200,
        response_headers(b"application/grpc-web+proto", None),
        ("application/*",),
        id="grpc-web",
    ),
]


@pytest.mark.parametrize(("method", "status", "headers", "content_types"), SKIPS)
def test_skipped_responses_are_left_alone(
    method: bytes, status: int, headers: Headers, content_types: tuple[str, ...] | None
) -> None:
    original = list(headers)
    middleware = make(content_types=content_types)
    assert middleware.body_filter(request_state(method=method), status, headers) is None
    assert headers == original  # no Vary either: not eligible


@pytest.mark.parametrize("status", [200, 201, 404, 500])
def test_other_statuses_are_compressed(status: int) -> None:
    headers = response_headers()
    assert make().body_filter(request_state(), status, headers) is not None
    assert values(headers, b"content-encoding") == [b"br"]


def test_length_equal_to_the_minimum_is_compressed() -> None:
    headers = response_headers(b"text/plain", 1024)
    assert make().body_filter(request_state(), 200, headers) is not None


async def test_the_request_side_does_nothing() -> None:
    state = request_state()
    before = list(state.headers)
    assert await make().request(state) is None
    assert state.headers == before
    assert state.method == b"GET"


# -- compressing: the head ------------------------------------------------------------------


def test_compressing_changes_the_head() -> None:
    headers = response_headers(
        b"application/json",
        len(TEXT),
        (b"accept-ranges", b"bytes"),
        (b"etag", b'"v1"'),
        (b"x-app", b"kept"),
    )
    body_filter = make().body_filter(request_state(b"gzip"), 200, headers)
    assert body_filter is not None
    assert ready(body_filter)
    assert headers == [
        (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"content-type", b"application/json"),
        (b"etag", b'W/"v1"'),
        (b"x-app", b"kept"),
        (b"content-encoding", b"gzip"),
        (b"vary", b"Accept-Encoding"),
    ]


@pytest.mark.parametrize(
    ("etag", "expected"),
    [
        (b'"abc"', b'W/"abc"'),
        (b'W/"abc"', b'W/"abc"'),
        (b'""', b'W/""'),
        (b"unquoted", b"unquoted"),
    ],
)
def test_etag_weakening(etag: bytes, expected: bytes) -> None:
    headers = response_headers(b"text/plain", 5000, (b"etag", etag))
    assert make().body_filter(request_state(), 200, headers) is not None
    assert values(headers, b"etag") == [expected]


def test_etag_untouched_when_not_compressing() -> None:
    headers = response_headers(b"text/plain", 5000, (b"etag", b'"abc"'))
    assert make().body_filter(request_state(b"identity"), 200, headers) is None
    assert values(headers, b"etag") == [b'"abc"']
    assert values(headers, b"content-length") == [b"5000"]


# -- Vary -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        pytest.param([], [b"Accept-Encoding"], id="none"),
        pytest.param([b"Origin"], [b"Origin", b"Accept-Encoding"], id="other"),
        pytest.param([b"Origin, accept-encoding"], [b"Origin, accept-encoding"], id="in-list"),
        pytest.param(
            [b"Origin", b" ACCEPT-ENCODING "], [b"Origin", b" ACCEPT-ENCODING "], id="case"
        ),
        pytest.param([b"*"], [b"*"], id="star"),
        pytest.param(
            [b"Accept-Encoding-X"], [b"Accept-Encoding-X", b"Accept-Encoding"], id="prefix"
        ),
    ],
)
@pytest.mark.parametrize("accept", [b"gzip", b"identity", None], ids=["gzip", "identity", "absent"])
def test_vary_on_every_eligible_response(
    existing: list[bytes], expected: list[bytes], accept: bytes | None
) -> None:
    headers = response_headers(b"text/plain", 5000, *((b"vary", v) for v in existing))
    make().body_filter(request_state(accept), 200, headers)
    assert values(headers, b"vary") == expected


def test_unknown_length_without_a_coding_adds_vary_and_holds_nothing() -> None:
    headers = response_headers(b"text/plain", None)
    assert make().body_filter(request_state(b"identity"), 200, headers) is None
    assert values(headers, b"vary") == [b"Accept-Encoding"]
    assert values(headers, b"content-length") == []


# -- unknown length: hold, then decide ------------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
def test_held_body_reaching_the_minimum_is_compressed(coding: str) -> None:
    headers = response_headers(b"text/plain", None, (b"etag", b'"t"'))
    body_filter = make(min_bytes=100).body_filter(request_state(coding.encode()), 200, headers)
    assert body_filter is not None
    assert not ready(body_filter)
    assert body_filter.feed(TEXT[:40]) == b""
    assert body_filter.feed(TEXT[40:80]) == b""
    assert not ready(body_filter)
    assert values(headers, b"content-encoding") == []  # nothing decided yet
    out = body_filter.feed(TEXT[80:120])  # 120 >= 100: compress, the held bytes included
    assert ready(body_filter)
    assert values(headers, b"content-encoding") == [coding.encode()]
    assert values(headers, b"vary") == [b"Accept-Encoding"]
    assert values(headers, b"etag") == [b'W/"t"']
    assert values(headers, b"content-length") == []
    assert Decoder(coding).push(out) == TEXT[:120]
    rest = run(body_filter, chunked(TEXT[120:], 500))
    assert decode(coding, out + rest) == TEXT


def test_exactly_the_minimum_held_decides() -> None:
    headers = response_headers(b"text/plain", None)
    body_filter = make(min_bytes=100).body_filter(request_state(b"gzip"), 200, headers)
    assert body_filter is not None
    assert body_filter.feed(TEXT[:99]) == b""
    assert not ready(body_filter)
    assert body_filter.feed(TEXT[99:100]) != b""
    assert ready(body_filter)


def test_held_body_ending_short_goes_out_as_it_is_with_a_length() -> None:
    headers = response_headers(b"text/plain", None, (b"etag", b'"t"'))
    body_filter = make(min_bytes=100).body_filter(request_state(b"br"), 200, headers)
    assert body_filter is not None
    assert body_filter.feed(b"x" * 30) == b""
    assert body_filter.feed(b"y" * 30) == b""
    assert not ready(body_filter)
    assert body_filter.finish() == b"x" * 30 + b"y" * 30
    assert ready(body_filter)
    assert headers == [
        (b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"),
        (b"content-type", b"text/plain"),
        (b"etag", b'"t"'),
        (b"content-length", b"60"),
    ]


def test_held_empty_body_gets_a_zero_length() -> None:
    headers = response_headers(b"text/plain", None)
    body_filter = make().body_filter(request_state(b"gzip"), 200, headers)
    assert body_filter is not None
    assert body_filter.feed(b"") == b""
    assert body_filter.finish() == b""
    assert ready(body_filter)
    assert values(headers, b"content-length") == [b"0"]
    assert values(headers, b"content-encoding") == []


def test_minimum_zero_decides_at_once_for_unknown_length() -> None:
    headers = response_headers(b"text/plain", None)
    body_filter = make(min_bytes=0).body_filter(request_state(b"gzip"), 200, headers)
    assert body_filter is not None
    assert ready(body_filter)
    assert values(headers, b"content-encoding") == [b"gzip"]
    assert gzip.decompress(run(body_filter, [])) == b""


def test_unparsable_length_is_treated_as_unknown() -> None:
    headers = response_headers(b"text/plain", None, (b"content-length", b"12x"))
    body_filter = make(min_bytes=10).body_filter(request_state(b"gzip"), 200, headers)
    assert body_filter is not None
    assert not ready(body_filter)
    out = run(body_filter, [b"0123456789abc"])
    assert values(headers, b"content-length") == []
    assert gzip.decompress(out) == b"0123456789abc"


# -- compressing: the body ------------------------------------------------------------------


@pytest.mark.parametrize("coding", CODINGS)
def test_each_feed_output_decodes_to_the_input_so_far(coding: str) -> None:
    headers = response_headers()
    body_filter = make().body_filter(request_state(coding.encode()), 200, headers)
    assert body_filter is not None
    decoder = Decoder(coding)
    decoded = b""
    sent = b""
    fed = 0
    for chunk in chunked(TEXT, 333):
        out = body_filter.feed(chunk)
        fed += len(chunk)
        assert out != b""  # flushed: nothing of this chunk stays inside the compressor
        sent += out
        decoded += decoder.push(out)
        assert decoded == TEXT[:fed]
    sent += body_filter.finish()
    assert decode(coding, sent) == TEXT
    assert len(sent) < len(TEXT) // 3  # it does compress


def test_empty_chunks_produce_nothing() -> None:
    body_filter = make().body_filter(request_state(b"gzip"), 200, response_headers())
    assert body_filter is not None
    assert body_filter.feed(b"") == b""


def test_framing_is_standard() -> None:
    outputs = {}
    for coding in CODINGS:
        body_filter = make().body_filter(request_state(coding.encode()), 200, response_headers())
        assert body_filter is not None
        outputs[coding] = run(body_filter, chunked(TEXT, 4096))
    assert outputs["gzip"][:3] == b"\x1f\x8b\x08"  # RFC 1952 magic, deflate method
    assert gzip.decompress(outputs["gzip"]) == TEXT
    assert outputs["deflate"][0] & 0x0F == 8  # RFC 1950 header: CM = 8 (deflate)
    assert int.from_bytes(outputs["deflate"][:2], "big") % 31 == 0  # FCHECK
    assert zlib.decompress(outputs["deflate"]) == TEXT
    assert brotli.decompress(outputs["br"]) == TEXT


@pytest.mark.parametrize(
    ("level", "xfl", "zlib_header"), [(1, 4, b"\x78\x01"), (9, 2, b"\x78\xda")]
)
def test_level_applies_to_gzip_and_deflate(level: int, xfl: int, zlib_header: bytes) -> None:
    middleware = make(level=level)
    gz = middleware.body_filter(request_state(b"gzip"), 200, response_headers())
    zl = middleware.body_filter(request_state(b"deflate"), 200, response_headers())
    assert gz is not None
    assert zl is not None
    assert gz.feed(TEXT)[8] == xfl  # gzip XFL: 4 = fastest, 2 = best
    assert zl.feed(TEXT)[:2] == zlib_header  # zlib FLEVEL


@pytest.mark.parametrize("level", [1, 5, 9])
def test_brotli_quality_is_the_level(level: int) -> None:
    body_filter = make(level=level).body_filter(request_state(b"br"), 200, response_headers())
    assert body_filter is not None
    chunks = chunked(TEXT, 2000)
    reference = brotli.Compressor(quality=level)
    expected = (
        b"".join(reference.process(c) + reference.flush() for c in chunks) + reference.finish()
    )
    assert run(body_filter, chunks) == expected


def test_defaults_of_an_empty_definition() -> None:
    middleware = CompressMiddleware.from_config("zip", Compress())
    small = response_headers(b"text/plain", 1023)
    assert middleware.body_filter(request_state(b"*"), 200, small) is None
    headers = response_headers(b"image/svg+xml", 1024)
    assert middleware.body_filter(request_state(b"*"), 200, headers) is not None
    assert values(headers, b"content-encoding") == [b"br"]


def test_one_instance_serves_interleaved_responses() -> None:
    middleware = make()
    first_headers, second_headers = response_headers(), response_headers()
    first = middleware.body_filter(request_state(b"gzip"), 200, first_headers)
    second = middleware.body_filter(request_state(b"br"), 200, second_headers)
    assert first is not None
    assert second is not None
    outs: dict[str, bytes] = {"gzip": b"", "br": b""}
    for chunk in chunked(TEXT, 1000):
        outs["gzip"] += first.feed(chunk)
        outs["br"] += second.feed(chunk)
    assert gzip.decompress(outs["gzip"] + first.finish()) == TEXT
    assert brotli.decompress(outs["br"] + second.finish()) == TEXT


# -- real decoder: curl --compressed --------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("coding", CODINGS)
async def test_curl_decodes_the_output(nursery: trio.Nursery, coding: str) -> None:
    if shutil.which("curl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("curl is required under CI=true")
        pytest.skip("curl not installed")
    headers = response_headers()
    body_filter = make().body_filter(request_state(coding.encode()), 200, headers)
    assert body_filter is not None
    body = run(body_filter, chunked(TEXT, 700))
    origin = Origin()
    origin.on(
        "/z",
        Fixed(
            200, body, ((b"content-type", b"text/plain"), (b"content-encoding", coding.encode()))
        ),
    )
    await nursery.start(origin.serve)
    done = await trio.run_process(
        ["curl", "-sS", "--noproxy", "*", "--max-time", "30", "--compressed",
         f"http://127.0.0.1:{origin.port}/z"],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == TEXT
