"""Hypothesis strategies for the engine differential tests (``test_http1_differential.py``).

Kept apart from ``strategies.py`` and ``strategies_http1.py`` (owned by others); same
conventions. Three kinds of bytes for each direction: well-formed messages written by a real h11
peer, those messages mutated (``strategies_http1.mutated``), and messages assembled from pieces
that sit on the edges where parsers differ (line ends, folding, framing fields, versions,
methods, target forms, control bytes, chunk framing).
"""

from __future__ import annotations

import re
from typing import Final

import h11
from hypothesis import strategies as st

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead
from tests.property.strategies_http1 import header_lists, mutated, requests

_HEAD_END: Final = re.compile(rb"\n\r?\n")
_LEADING_EMPTY: Final = re.compile(rb"\A(?:\r?\n)+")

METHODS: Final = [
    b"GET",
    b"POST",
    b"HEAD",
    b"PUT",
    b"OPTIONS",
    b"CONNECT",
    b"get",
    b"FOO",
    b"PRI",
    b"M-SEARCH",
    b"PROPFIND",
    b"DESCRIBE",
    b"SETUP",
    b"B@D",
]
TARGETS: Final = [
    b"/",
    b"/a?b=c",
    b"*",
    b"http://a/b",
    b"https://a:1/",
    b"HTTP://A/",
    b"ftp://a/",
    b"http://u@h/",
    b"http://h{/",
    b"a:443",
    b"h",
    b"?",
    b"//",
    b"/a#b",
    b"/%zz",
    b"/%41",
    b'/a"b',
    b"/{}|\\^`<>",
    b"/a b",
    b"/\x80",
    b"/\t",
]
VERSIONS: Final = [b"1.1", b"1.0", b"2.0", b"0.9", b"1.2", b"3.7", b"1.10", b"11", b"1."]
PROTOCOLS: Final = [b"HTTP/", b"HTTP/", b"HTTP/", b"RTSP/", b"ICE/", b"http/"]
REQUEST_FIELDS: Final = [
    b"Host: h",
    b"host: a:80",
    b"Host:",
    b"Host: h h",
    b"Host: [::1]:8",
    b"Content-Length: 5",
    b"Content-Length: 5, 5",
    b"Content-Length: 5,",
    b"Content-Length: 010",
    b"Content-Length:  7 ",
    b"Content-Length: 6",
    b"Content-Length: +5",
    b"Content-Length: 0x5",
    b"Content-Length: 18446744073709551615",
    b"Content-Length: 18446744073709551616",
    b"Content-Length: 99999999999999999999",
    b"Content-Length: 000000000000000000005",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: Chunked",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: gzip, chunked",
    b"Transfer-Encoding: chunked, gzip",
    b"Transfer-Encoding: chunked, chunked",
    b"Transfer-Encoding:",
    b"Transfer-Encoding: identity",
    b"Expect: 100-continue",
    b"Expect: 100-Continue, x",
    b"Expect: foo",
    b"Connection: upgrade",
    b"Connection: close",
    b"Upgrade: websocket",
    b"X: a",
    b"X: a \t",
    b"X:  ",
    b"X:a",
    b" folded",
    b"\tfolded",
    b"X : a",
    b": a",
    b"X",
    b"X: a\rb",
    b"x-y: \x80\xff",
    b"X{: a",
    b"X: a\x01",
    b"X: \x7f",
    b"X: a\x00",
]
LINE_ENDS: Final = [b"\r\n", b"\r\n", b"\n", b"\r", b"\r\r\n"]


def request_head_of(wire: bytes) -> bytes | None:
    """The head ``Http1Server`` hands to an engine: leading empty lines skipped, up to and
    including the first empty line; None if ``wire`` has no complete head."""
    wire = _LEADING_EMPTY.sub(b"", wire)
    found = _HEAD_END.search(wire)
    return None if found is None else wire[: found.end()]


@st.composite
def edge_requests(draw: st.DrawFn) -> bytes:
    """Request heads assembled from pieces on the edges where h11 and llhttp differ."""
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    sp1, sp2 = (
        draw(st.sampled_from([b" ", b" ", b"  ", b"\t"])),
        draw(st.sampled_from([b" ", b"  "])),
    )
    protocol, version = draw(st.sampled_from(PROTOCOLS)), draw(st.sampled_from(VERSIONS))
    fields = draw(st.lists(st.sampled_from(REQUEST_FIELDS), max_size=7))
    ends = st.sampled_from(LINE_ENDS)
    wire = method + sp1 + target + sp2 + protocol + version + draw(ends)
    wire += b"".join(field + draw(ends) for field in fields)
    return wire + draw(st.sampled_from([b"\r\n", b"\n"]))


REQUEST_TOKENS: Final = [
    *METHODS,
    *TARGETS,
    *(p + v for p in PROTOCOLS[:1] for v in VERSIONS),
    *REQUEST_FIELDS,
    b" ",
    b"  ",
    b"\t",
    b"\r\n",
    b"\n",
    b"\r",
    b":",
    b",",
    b"chunked",
    b"5",
]


def request_soup() -> st.SearchStrategy[bytes]:
    """Random concatenations of request pieces (mostly invalid)."""
    return st.lists(st.sampled_from(REQUEST_TOKENS), max_size=24).map(b"".join)


def request_bytes() -> st.SearchStrategy[bytes]:
    """Valid requests (body and a pipelined next request included), mutated ones, edge heads
    followed by a chunked or sized body, and soup."""
    valid = requests().map(lambda request: request.h11_bytes())
    bodies = st.sampled_from(
        [b"", b"hello", b"5\r\nhello\r\n0\r\n\r\n", b"0\r\n\r\nGET / HTTP/1.1"]
    )
    return st.one_of(
        valid,
        valid.flatmap(mutated),
        st.tuples(edge_requests(), bodies).map(b"".join),
        request_soup(),
    )


# --- responses ---------------------------------------------------------------------------

STATUSES: Final = [b"200", b"204", b"304", b"404", b"100", b"103", b"101", b"099", b"999", b"20"]
REASONS: Final = [b" OK", b"", b" ", b"  x ", b" a\x01b", b" a\x00", b" \x80", b" a\x0bb"]
RESPONSE_FIELDS: Final = [
    b"Content-Length: 5",
    b"Content-Length: 5, 5",
    b"Content-Length:  05 ",
    b"Content-Length: 6",
    b"Content-Length: 99999999999999999999",
    b"Content-Length: 999999999999999999999",
    b"Transfer-Encoding: chunked",
    b"Transfer-Encoding: Chunked",
    b"Transfer-Encoding: gzip",
    b"Transfer-Encoding: gzip, chunked",
    b"Connection: close",
    b"Connection: keep-alive, Close",
    b"X: a",
    b"X: a\x01",
    b"X: a\x7f",
    b" fold",
    b"\tfold",
    b"X : a",
    b"X",
    b": a",
    b"X: \x80",
]
RESPONSE_BODIES: Final = [
    b"",
    b"hello",
    b"hellohello",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"5 \r\nhello\r\n0\r\n\r\n",
    b"5;a=b\r\nhello\r\n0\r\n\r\n",
    b"5;a\x01\r\nhello\r\n0\r\n\r\n",
    b"5\r\nhello\n0\r\n\r\n",
    b"0\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"0\r\nContent-Length: 1, 1\r\n\r\n",
    b"0\r\nX: a\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\nextra",
    b"00000000000000000005\r\nhello\r\n0\r\n\r\n",
]
INFORMATIONAL: Final = [
    b"",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Hints\r\nLink: a\r\n\r\n",
]


@st.composite
def edge_responses(draw: st.DrawFn) -> bytes:
    """Responses assembled from pieces on the edges where h11 and llhttp (or our decoders)
    differ."""
    head = b"HTTP/" + draw(st.sampled_from(VERSIONS[:4])) + b" " + draw(st.sampled_from(STATUSES))
    head += draw(st.sampled_from(REASONS)) + draw(st.sampled_from([b"\r\n", b"\n"]))
    ends = st.sampled_from([b"\r\n", b"\r\n", b"\n"])
    fields = draw(st.lists(st.sampled_from(RESPONSE_FIELDS), max_size=5))
    head += b"".join(field + draw(ends) for field in fields) + draw(ends)
    return draw(st.sampled_from(INFORMATIONAL)) + head + draw(st.sampled_from(RESPONSE_BODIES))


def real_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    framing: str,
    trailers: list[tuple[bytes, bytes]],
) -> bytes:
    """A response as a real h11 server writes it (``framing``: cl, chunked or close)."""
    server = h11.Connection(h11.SERVER)
    server.receive_data(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    server.next_event()
    server.next_event()
    fields = list(headers)
    if framing == "cl":
        fields.append((b"content-length", b"%d" % len(body)))
    elif framing == "chunked":
        fields.append((b"transfer-encoding", b"chunked"))
    else:
        fields.append((b"connection", b"close"))
    wire = server.send(h11.Response(status_code=status, headers=fields))
    if body:
        wire += server.send(h11.Data(data=body))
    chunked = framing == "chunked" and status not in (204, 304)
    return wire + server.send(h11.EndOfMessage(headers=trailers if chunked else []))


@st.composite
def real_responses(draw: st.DrawFn) -> bytes:
    """Well-formed responses written by h11, with or without a body and trailers."""
    status = draw(st.sampled_from([200, 201, 204, 304, 404, 500]))
    framing = draw(st.sampled_from(["cl", "chunked", "close"]))
    body = b"" if status in (204, 304) else draw(st.binary(max_size=30))
    trailers = draw(header_lists(max_size=2))
    return real_response(status, draw(header_lists(max_size=4)), body, framing, trailers)


RESPONSE_TOKENS: Final = [
    b"HTTP/1.1 ",
    b"HTTP/1.0 ",
    b"HTTP/2.0 ",
    *STATUSES,
    *REASONS,
    *RESPONSE_FIELDS,
    *RESPONSE_BODIES,
    b"\r\n",
    b"\n",
    b"\r",
    b": ",
    b"\r\n\r\n",
]


def response_bytes() -> st.SearchStrategy[bytes]:
    """Real responses, mutated ones, edge responses and soup."""
    return st.one_of(
        real_responses(),
        real_responses().flatmap(mutated),
        edge_responses(),
        st.lists(st.sampled_from(RESPONSE_TOKENS), max_size=20).map(b"".join),
    )


# --- requests written upstream ----------------------------------------------------------

_FIELD_NAMES: Final = [
    b"x-a",
    b"x-b",
    b"content-length",
    b"transfer-encoding",
    b"bad name",
    b"connection",  # with ``upgrade`` below: a request that asks for a protocol switch
    b"upgrade",
]
_FIELD_VALUES: Final = [b"1", b"chunked", b"gzip", b"a b", b" lead", b"", b"v\x01", b"upgrade"]


@st.composite
def upstream_heads(draw: st.DrawFn) -> RequestHead:
    """Heads the gateway may forward: ``host`` first or missing, at most one canonical
    ``Content-Length`` (the writers differ on purpose only in how they write others)."""
    fields = draw(
        st.lists(
            st.tuples(st.sampled_from(_FIELD_NAMES), st.sampled_from(_FIELD_VALUES)), max_size=4
        )
    )
    fields = [line for line in fields if line[0] != b"content-length"]
    length = draw(st.none() | st.integers(min_value=0, max_value=6))
    if length is not None:
        fields.insert(draw(st.integers(0, len(fields))), (b"content-length", b"%d" % length))
    if draw(st.integers(0, 9)):
        fields.insert(0, (b"host", draw(st.sampled_from([b"h", b"h:80", b"a b", b""]))))
    return RequestHead(
        draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"CONNECT", b"PATCH", b"B@D M"])),
        draw(st.sampled_from([b"/", b"/a?b", b"*", b"/ x", b"h:443"])),
        b"h",
        fields,
        has_body=draw(st.booleans()),
    )


#: One step of a client script: an event to send, or "response" (receive one) or "next".
Step = RequestHead | BodyChunk | EndOfBody | str


@st.composite
def client_scripts(draw: st.DrawFn) -> list[Step]:
    """A few request/response cycles on one connection, as the data plane drives it."""
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 3))):
        steps.append(draw(upstream_heads()))
        chunks = draw(st.lists(st.sampled_from([b"", b"ab", b"abc", b"hello"]), max_size=3))
        steps.extend(BodyChunk(data) for data in chunks)
        trailers = draw(
            st.sampled_from(
                [
                    [],
                    [(b"x-t", b"1")],
                    [(b"host", b"z"), (b"x", b"y")],
                    [(b"bad name", b"v")],
                    [(b"X-Up", b"v")],
                ]
            )
        )
        steps.append(EndOfBody(trailers))
        steps.extend(draw(st.sampled_from([["response", "next"], ["response"], ["next"]])))
    return steps
