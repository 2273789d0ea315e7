"""Differential properties: llhttp against h11, the reference engine (DESIGN.md §0, issue #15).

Request heads: ``LlhttpHeads`` and ``H11Heads`` give the same parsed head, or both refuse with
the same status, for any bytes — and so does the whole request path they feed
(``inspect_request`` and the body decoders), after any split and on the request-smuggling corpus
of ``tests/integration/test_smuggling.py``. ``H11Heads`` is ``Http1Server``'s behaviour today.

Responses: ``LlhttpClient`` and ``Http1Client`` give the same events and reuse decisions, or
both raise (502), after any split — except where h11 is laxer and ``LlhttpClient`` refuses by
design (``STRICTER``); requests written upstream are byte-identical.

Every disagreement found while building the engines is pinned with ``@example`` next to the
property that covers it, with the resolution in a comment.
"""

from __future__ import annotations

import contextlib
import re
from typing import Final, cast

import h11
import httptools
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Event,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http1 import Http1Client, Http1Limits, Http1Server
from a3s_gateway.protocols.http1_heads import H11Heads, LlhttpHeads, ParsedHead, RequestHeadParser
from a3s_gateway.protocols.http1_llhttp import LlhttpClient
from a3s_gateway.protocols.http1_request import (
    CHUNKED,
    ChunkedDecoder,
    LengthDecoder,
    inspect_request,
)
from tests.integration.test_smuggling import ACCEPTED, REJECTED
from tests.property.strategies_differential import (
    Step,
    client_scripts,
    edge_requests,
    request_bytes,
    request_head_of,
    response_bytes,
)
from tests.property.strategies_http1 import splits

_LEADING_EMPTY: Final = re.compile(rb"\A(?:\r?\n)+")
H11: Final = H11Heads()
LLHTTP: Final = LlhttpHeads()
MAX_HEADERS: Final = 20

Outcome = tuple[object, ...]


# --- request heads -----------------------------------------------------------------------


def head_outcome(engine: RequestHeadParser, head: bytes) -> Outcome:
    """The engine's parsed head and what ``inspect_request`` makes of it, or the status."""
    try:
        parsed = engine.parse_request_head(head)
        headers = list(parsed.headers)
        # inspect_request reads only method, target and http_version (see the report: its
        # parameter becomes ParsedHead when Http1Server is wired to the engines).
        authority, length = inspect_request(cast("h11.Request", parsed), headers, MAX_HEADERS)
    except ProtocolViolation as violation:
        return ("refused", violation.status)
    return ("parsed", parsed, headers, authority, length)


def assert_engines_agree(head: bytes) -> None:
    expected = head_outcome(H11, head)
    assert head_outcome(LLHTTP, head) == expected
    if expected[0] == "parsed":  # the engines agree on the head itself, not only after it
        assert LLHTTP.parse_request_head(head) == H11.parse_request_head(head)


PINNED_HEADS: Final = [
    # h11 reads bare LF line ends (RFC 9112 §2.2); llhttp refuses them even with
    # lenient_optional_cr_before_lf after the request line → rewritten to CRLF, parsed again.
    b"POST / HTTP/1.1\nHost: h\nContent-Length: 5\n\n",
    b"GET / HTTP/1.1\r\nHost: h\nX: b\r\n\r\n",
    # obs-fold: h11 joins with a SP; llhttp refuses (lenient_headers would also let invalid
    # value bytes through) → unfolded as h11 does, parsed again. A fold at the start: both refuse.
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb  \r\n\r\n",
    b"GET / HTTP/1.1\r\n Host: h\r\n\r\n",
    b"GET /\r\n HTTP/1.1\r\nHost: h\r\n\r\n",
    # repeated identical Content-Length, or a list of one value: h11 merges (RFC 9110 §8.6),
    # llhttp refuses → merged, parsed again; differing values: both refuse.
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\n",
    # Content-Length: llhttp refuses 2**64 and more (h11 took 20 digits) → both refuse now;
    # h11 refuses more than 20 digits (llhttp took leading zeros) → both refuse; canonical.
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 000000000000000000005\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length:  010 \r\n\r\n",
    # Content-Length with Transfer-Encoding: llhttp refuses, h11 parses and inspect_request
    # refuses (400) → lenient_chunked_length, so both reach the same 400.
    b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    # Transfer-Encoding: llhttp takes any list ending in chunked, case kept; h11 only one
    # field, exactly chunked (501 or 400) → checked on llhttp's fields, lower-cased.
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n",
    b"POST / HTTP/1.0\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    # methods llhttp does not know (extension, lower-case, RTSP's, PRI without its preface):
    # h11 takes any token → parsed again behind a stand-in request line.
    b"FOO / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"get / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"DESCRIBE / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\n",
    b"B@D / HTTP/1.1\r\nHost: h\r\n\r\n",
    # targets llhttp refuses and h11's grammar takes: inspect_request refuses them all, but
    # after the version (505) → parsed behind a stand-in line, so the statuses agree.
    b"FOO a:443 HTTP/1.2\r\nHost: h\r\n\r\n",
    b"GET ? HTTP/1.0\r\n\r\n",
    b"GET http://h{/ HTTP/1.1\r\nHost: h\r\n\r\n",
    # versions: llhttp refuses 1.2 (h11 parses it, inspect_request answers 505) →
    # lenient_version; HTTP/1.10: both refuse with 505.
    b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.10\r\nHost: h\r\n\r\n",
    # llhttp accepts, h11 refuses: repeated SP, RTSP/ICE lines, trailing SP → request line
    # re-serialised and compared with the bytes received.
    b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /  HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET / RTSP/1.0\r\nHost: h\r\n\r\n",
    b"GET / HTTP/1.1 \r\nHost: h\r\n\r\n",
    # llhttp accepts, h11 refuses: Host missing on HTTP/1.1 or repeated → counted.
    b"GET / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    # normal form: llhttp keeps names' case and trailing whitespace.
    b"GET / HTTP/1.1\r\nHOST: h\r\nX-A: a \t\r\nX:\r\n\r\n",
    # CONNECT and Upgrade make llhttp stop with HttpParserUpgrade after a complete head.
    b"CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    # Expect: h11's reading (any case, in a list, HTTP/1.1 only).
    b"POST / HTTP/1.1\r\nHost: h\r\nExpect: x, 100-Continue\r\nContent-Length: 1\r\n\r\n",
    b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
    # control bytes and bare CR: both refuse.
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\r\n\r\n",
    b"GET /\x80 HTTP/1.1\r\nHost: h\r\n\r\n",
]


@pytest.mark.parametrize("head", PINNED_HEADS)
def test_pinned_disagreements_are_resolved(head: bytes) -> None:
    assert_engines_agree(head)


@given(st.one_of(request_bytes(), edge_requests()))
@example(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
def test_both_engines_parse_or_refuse_every_head_alike(wire: bytes) -> None:
    head = request_head_of(wire)
    if head is not None:
        assert_engines_agree(head)


@given(st.one_of(request_bytes(), edge_requests()))
def test_llhttp_engine_takes_no_request_line_that_llhttp_refuses(wire: bytes) -> None:
    """Where llhttp's request line was replaced by a stand-in (its method or target refused),
    ``inspect_request`` still refuses every target llhttp does not parse: disagreements on the
    target are decided by rejecting."""
    head = request_head_of(wire)
    if head is None:
        return
    outcome = head_outcome(LLHTTP, head)
    if outcome[0] != "parsed":
        return
    parsed = outcome[1]
    assert isinstance(parsed, ParsedHead)
    method = parsed.method if parsed.method == b"CONNECT" else b"GET"
    line = b"%b %b HTTP/1.1\r\nHost: h\r\n\r\n" % (method, parsed.target)
    with contextlib.suppress(httptools.HttpParserUpgrade):
        httptools.HttpRequestParser(object()).feed_data(line)


# --- the request path an engine feeds ----------------------------------------------------


def serve(engine: RequestHeadParser, reads: list[bytes]) -> Outcome:
    """``Http1Server``'s path for one request with ``engine`` (head found on the raw bytes,
    parsed, inspected, body decoded), then EOF: the events' content or the status."""
    buf = b""
    decoder: LengthDecoder | ChunkedDecoder | None = None
    head: RequestHead | None = None
    events: list[Event] = []
    try:
        for data in [*reads, b""]:
            buf += data
            if head is None:
                raw = request_head_of(buf)
                if raw is None:
                    if not data and _LEADING_EMPTY.sub(b"", buf):
                        raise ProtocolViolation(400, "incomplete request head")
                    continue
                buf = _LEADING_EMPTY.sub(b"", buf)[len(raw) :]
                head, decoder = start(engine, raw)
                events.append(head)
            if decoder is None or decoder.done:
                break
            pos = decoder.decode(buf, 0, events)
            buf = buf[pos:]
            if not data and not decoder.done:
                raise ProtocolViolation(400, "incomplete request body")
    except ProtocolViolation as violation:
        return ("refused", violation.status)
    body = b"".join(bytes(event.data) for event in events if isinstance(event, BodyChunk))
    ends = [event for event in events if isinstance(event, EndOfBody)]
    return ("served", head, body, ends)


def start(
    engine: RequestHeadParser, raw: bytes, max_headers: int = MAX_HEADERS
) -> tuple[RequestHead, LengthDecoder | ChunkedDecoder | None]:
    """``Http1Server._start_request`` with an engine in place of h11."""
    parsed = engine.parse_request_head(raw)
    headers = list(parsed.headers)
    authority, length = inspect_request(cast("h11.Request", parsed), headers, max_headers)
    head = RequestHead(
        parsed.method,
        parsed.target,
        authority,
        headers,
        parsed.http_version,
        has_body=length != 0,
        expect_continue=length != 0 and parsed.expect_continue,
    )
    if not length:
        return head, None
    if length == CHUNKED:
        return head, ChunkedDecoder(max_trailer_bytes=4096, max_fields=MAX_HEADERS)
    return head, LengthDecoder(length)


@given(st.data(), st.one_of(request_bytes(), edge_requests()))
def test_both_engines_serve_a_request_alike_after_any_split(
    data: st.DataObject, wire: bytes
) -> None:
    reads = data.draw(splits(wire))
    assert serve(LLHTTP, reads) == serve(H11, reads) == serve(H11, [wire])


@pytest.mark.parametrize(("payload", "status"), REJECTED)
@pytest.mark.parametrize("engine", [H11, LLHTTP], ids=["h11", "llhttp"])
def test_smuggling_corpus_is_refused_by_both_engines(
    engine: RequestHeadParser, payload: bytes, status: int
) -> None:
    assert serve(engine, [payload]) == ("refused", status)


@pytest.mark.parametrize(("payload", "body"), ACCEPTED)
@pytest.mark.parametrize("engine", [H11, LLHTTP], ids=["h11", "llhttp"])
def test_smuggling_corpus_accepted_by_both_engines(
    engine: RequestHeadParser, payload: bytes, body: bytes
) -> None:
    outcome = serve(engine, [payload])
    assert outcome[0] == "served"
    assert outcome[2] == body
    assert outcome == serve(H11, [payload])


@given(request_bytes())
@example(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 005\r\n\r\nhello")
def test_h11_engine_is_http1_server_today(wire: bytes) -> None:
    """``H11Heads`` + ``inspect_request`` is what ``Http1Server`` does now, but for the
    ``Content-Length`` value, which the engines write canonically (``010`` → ``10``), and
    one of 2**64 or more, which both engines refuse (``Http1Server`` takes up to 20 digits)."""
    head = request_head_of(wire)
    if head is None:
        return
    try:
        events = Http1Server().receive(head)  # the head only: body errors are not compared
    except ProtocolViolation as violation:
        expected: Outcome = ("refused", violation.status)
    else:
        assert isinstance(events[0], RequestHead)
        expected = ("served", events[0])
    try:
        got: Outcome = ("served", start(H11, head, Http1Limits().max_headers)[0])
    except ProtocolViolation as violation:
        got = ("refused", violation.status)
    if got[0] == "served" and expected[0] == "served":
        mine, theirs = got[1], expected[1]
        assert isinstance(mine, RequestHead)
        assert isinstance(theirs, RequestHead)
        lengths = [
            (name, b"%d" % int(value)) if name == b"content-length" else (name, value)
            for name, value in theirs.headers
        ]
        assert mine == RequestHead(
            theirs.method,
            theirs.target,
            theirs.authority,
            lengths,
            theirs.http_version,
            theirs.has_body,
            theirs.expect_continue,
        )
    elif expected[0] == "served":
        assert got == ("refused", 400)  # Content-Length of 2**64 or more
        assert isinstance(expected[1], RequestHead)
        assert any(
            name == b"content-length" and int(value) >= 2**64 for name, value in expected[1].headers
        )
    else:
        assert got == expected


# --- responses ---------------------------------------------------------------------------

#: Reasons LlhttpClient may give where Http1Client accepts: h11 is laxer there, we refuse.
STRICTER: Final = {
    "invalid head",  # a control character in a field value, a Content-Length of 2**64 or more
    "invalid body",  # chunked framing outside RFC 9112 §7.1 (ChunkedDecoder)
    "incomplete response body",  # a trailer section ended by bare LF is never complete
    "response head too large",  # ... and grows until the head limit
}


def client_outcome(
    client: Http1Client | LlhttpClient, method: bytes, reads: list[bytes]
) -> Outcome:
    client.send(RequestHead(method, b"/", b"h", [(b"host", b"h")]))
    client.send(EndOfBody())
    events: list[Event] = []
    try:
        for data in [*reads, b""]:
            events += client.receive(data)
    except ProtocolViolation as violation:
        return ("raised", violation.status, violation.reason, joined(events))
    return ("events", joined(events), client.reusable, client.received_any)


def joined(events: list[Event]) -> list[Event]:
    """Events with adjacent body chunks joined (their boundaries follow the reads)."""
    out: list[Event] = []
    for event in events:
        last = out[-1] if out else None
        if isinstance(event, BodyChunk) and isinstance(last, BodyChunk):
            out[-1] = BodyChunk(bytes(last.data) + bytes(event.data))
        elif isinstance(event, BodyChunk):
            out.append(BodyChunk(bytes(event.data)))
        else:
            out.append(event)
    return out


_CONTROL: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def laxer_in_h11(reason: str, expected: Outcome) -> bool:
    """Whether h11's events show what LlhttpClient refuses by design with ``reason``."""
    events = expected[1]
    assert isinstance(events, list)
    fields = [
        line
        for event in events
        if isinstance(event, ResponseHead | Informational)
        for line in event.headers
    ]
    if reason == "invalid head":
        return any(_CONTROL.search(value) for _, value in fields) or any(
            name == b"content-length" and int(value) >= 2**64 for name, value in fields
        )
    return any(name == b"transfer-encoding" for name, _ in fields)  # chunked framing


def assert_clients_agree(method: bytes, reads: list[bytes], limits: tuple[int, int]) -> None:
    max_head_bytes, max_headers = limits
    expected = client_outcome(
        Http1Client(max_head_bytes=max_head_bytes, max_headers=max_headers), method, reads
    )
    got = client_outcome(
        LlhttpClient(max_head_bytes=max_head_bytes, max_headers=max_headers), method, reads
    )
    assert_same_or_stricter(expected, got)


def assert_same_or_stricter(expected: Outcome, got: Outcome) -> None:
    """LlhttpClient's outcome ``got`` against h11's ``expected``: both refuse with 502, or
    LlhttpClient refuses what it refuses by design (``STRICTER``), or they agree exactly."""
    if expected[0] == "raised":
        assert got[0] == "raised"
        assert got[1] == expected[1] == 502
    elif got[0] == "raised":
        assert got[2] in STRICTER
        assert isinstance(got[2], str)
        assert laxer_in_h11(got[2], expected), (expected, got)
    else:
        assert got == expected


PINNED_RESPONSES: Final = [
    # bare LF, obs-fold, repeated Content-Length: read as h11 does (see PINNED_HEADS).
    (b"GET", b"HTTP/1.1 200 OK\nX: a\n b\nContent-Length: 5\nContent-Length: 5\n\nhello"),
    # llhttp takes a reason with NUL or VT and status codes under 100; h11 refuses both.
    (b"GET", b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n"),
    (b"GET", b"HTTP/1.1 200 O\x0bK\r\nContent-Length: 0\r\n\r\n"),
    (b"GET", b"HTTP/1.1 099 X\r\n\r\n"),
    # llhttp refuses a status line with two SP; both refuse.
    (b"GET", b"HTTP/1.1  200 OK\r\n\r\n"),
    # versions other than 1.x: h11 accepts any DIGIT.DIGIT → lenient_version.
    (b"GET", b"HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n"),
    (b"GET", b"HTTP/2.0 204 No\r\n\r\n"),
    # Transfer-Encoding other than chunked: llhttp reads until EOF, h11 refuses → refused.
    (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc"),
    # Content-Length with chunked: chunked wins in both (lenient_chunked_length).
    (
        b"GET",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    # trailers obey h11's field rules too (one chunked TE, one Content-Length value).
    (
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\nTransfer-Encoding: gzip\r\n\r\n",
    ),
    (
        b"GET",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 1, 1\r\n\r\n",
    ),
    # h11 accepts an unsolicited final response (server IDLE → Response), not a 1xx; here the
    # request is sent first, so these check 1xx handling and HEAD/CONNECT framing.
    (b"HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"),
    (b"CONNECT", b"HTTP/1.1 200 OK\r\n\r\ntunnel bytes"),
    (b"CONNECT", b"HTTP/1.1 407 Auth\r\nContent-Length: 0\r\n\r\n"),
    (b"GET", b"HTTP/1.1 100 Continue\r\n\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"),
    (b"GET", b"HTTP/1.1 103 Hints\r\n\r\nHTTP/1.1 101 Up\r\n\r\n"),
    # stricter by design (STRICTER): control bytes in values, huge lengths, chunk framing.
    (b"GET", b"HTTP/1.1 200 OK\r\nX: a\x01b\r\nContent-Length: 0\r\n\r\n"),
    (b"GET", b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n"),
    (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
    (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01\r\nhello\r\n0\r\n\r\n"),
    (b"GET", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: a\n\r\n"),
]


@pytest.mark.parametrize(("method", "wire"), PINNED_RESPONSES)
@pytest.mark.parametrize("limits", [(1024, 20), (60, 3)], ids=["roomy", "tight"])
def test_pinned_response_disagreements_are_resolved(
    method: bytes, wire: bytes, limits: tuple[int, int]
) -> None:
    assert_clients_agree(method, [wire], limits)
    assert_clients_agree(method, [wire[i : i + 1] for i in range(len(wire))], limits)


@given(
    st.data(),
    st.sampled_from([b"GET", b"HEAD", b"POST", b"CONNECT"]),
    response_bytes(),
    st.sampled_from([(1024, 20), (60, 3)]),
)
def test_both_clients_read_any_response_alike_after_any_split(
    data: st.DataObject, method: bytes, wire: bytes, limits: tuple[int, int]
) -> None:
    assert_clients_agree(method, data.draw(splits(wire)), limits)


# --- requests written upstream -----------------------------------------------------------

RESPONSE: Final = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


def script_outcome(client: Http1Client | LlhttpClient, steps: list[Step]) -> list[object]:
    """What ``client`` writes and answers for each step, until the first refusal."""
    out: list[object] = []
    for step in steps:
        try:
            if step == "response":
                out.append(client.receive(RESPONSE))
            elif step == "next":
                client.start_next_cycle()
            else:
                assert not isinstance(step, str)
                out.append(client.send(step))
        except ProtocolViolation as violation:
            out.append((violation.status, violation.reason, client.reusable))
            return out
        out.append(client.reusable)
    return out


@given(client_scripts())
def test_both_clients_write_the_same_requests(steps: list[Step]) -> None:
    assert script_outcome(LlhttpClient(), steps) == script_outcome(Http1Client(), steps)
