"""``Http1Server``: request parsing, SPEC §5.3 rejections and response framing (SPEC §5.2).

A real ``h11.Connection(CLIENT)`` is the oracle where it helps: it writes the requests our server
parses and parses the responses our server writes.
"""

from __future__ import annotations

import h11
import pytest

from a3s_gateway.protocols.events import (
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    Event,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.http1 import PIPELINE_SLACK, Http1Limits, Http1Server
from a3s_gateway.protocols.http1_request import RefusedRequest

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def head_of(events: list[Event]) -> RequestHead:
    assert isinstance(events[0], RequestHead)
    return events[0]


def body_of(events: list[Event]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, BodyChunk))


def receive_all(server: Http1Server, data: bytes) -> list[Event]:
    """Feed ``data`` then EOF."""
    return server.receive(data) + server.receive(b"")


def rejection(data: bytes, limits: Http1Limits | None = None) -> ProtocolViolation:
    server = Http1Server(limits or Http1Limits())
    with pytest.raises(ProtocolViolation) as caught:
        receive_all(server, data)
    return caught.value


# Read through functions so that mypy does not narrow a property across a state change.
def started(server: Http1Server) -> bool:
    return server.head_started


def alive(server: Http1Server) -> bool:
    return server.keep_alive


def respond(server: Http1Server, head: ResponseHead, body: bytes = b"") -> bytes:
    out = server.send(head)
    if body:
        out += server.send(BodyChunk(body))
    return out + server.send(EndOfBody())


def client_reads(client: h11.Connection, data: bytes) -> list[object]:
    """What a real h11 client makes of the bytes our server wrote."""
    client.receive_data(data)
    events: list[object] = []
    while (event := client.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        events.append(event)
        if isinstance(event, (h11.EndOfMessage, h11.ConnectionClosed)):
            break
    return events


# --- parsing -----------------------------------------------------------------------------------


def test_simple_get_yields_head_then_end() -> None:
    events = Http1Server().receive(GET)
    assert events == [
        RequestHead(b"GET", b"/", b"example.com", [(b"host", b"example.com")], b"1.1"),
        EndOfBody(),
    ]


def test_real_h11_client_request_with_body_round_trips() -> None:
    client = h11.Connection(h11.CLIENT)
    wire = client.send(
        h11.Request(
            method="POST",
            target="/up?x=1",
            headers=[("Host", "h:8080"), ("X-A", "1"), ("Transfer-Encoding", "chunked")],
        )
    )
    wire += client.send(h11.Data(data=b"abc")) + client.send(h11.Data(data=b"def"))
    wire += client.send(h11.EndOfMessage(headers=[("Checksum", "9")]))
    events = Http1Server().receive(wire)
    head = head_of(events)
    assert (head.method, head.target, head.authority, head.has_body) == (
        b"POST",
        b"/up?x=1",
        b"h:8080",
        True,
    )
    assert head.headers == [
        (b"host", b"h:8080"),
        (b"x-a", b"1"),
        (b"transfer-encoding", b"chunked"),
    ]
    assert body_of(events) == b"abcdef"
    assert events[-1] == EndOfBody([(b"checksum", b"9")])


def test_content_length_body_is_streamed_as_it_arrives() -> None:
    server = Http1Server()
    first = server.receive(b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nab")
    assert head_of(first).has_body
    assert first[1:] == [BodyChunk(b"ab")]
    assert server.receive(b"cd") == [BodyChunk(b"cd")]
    assert server.receive(b"ef") == [BodyChunk(b"ef"), EndOfBody()]


def test_zero_content_length_means_no_body() -> None:
    events = Http1Server().receive(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n")
    assert not head_of(events).has_body
    assert events[1:] == [EndOfBody()]


def test_obs_fold_is_joined_into_one_line() -> None:
    events = Http1Server().receive(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: one\r\n  two\r\n\r\n")
    assert head_of(events).headers == [(b"host", b"a"), (b"x-long", b"one two")]


def test_bare_lf_line_endings_are_accepted() -> None:
    events = Http1Server().receive(b"GET / HTTP/1.1\nHost: a\nX: 1\n\n")
    assert head_of(events).headers == [(b"host", b"a"), (b"x", b"1")]


def test_identical_content_lengths_collapse_to_one_line() -> None:
    data = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    events = Http1Server().receive(data)
    assert head_of(events).headers == [(b"host", b"a"), (b"content-length", b"2")]
    assert body_of(events) == b"ok"


def test_empty_lines_before_the_request_line_are_ignored() -> None:
    assert head_of(Http1Server().receive(b"\r\n\n" + GET)).target == b"/"


def test_absolute_form_target_authority_wins_over_host() -> None:
    data = b"GET http://api.example:8080/p?q=1 HTTP/1.1\r\nHost: other\r\n\r\n"
    head = head_of(Http1Server().receive(data))
    assert (head.target, head.authority) == (b"http://api.example:8080/p?q=1", b"api.example:8080")


@pytest.mark.parametrize(
    ("data", "target"),
    [
        pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", b"*", id="options-asterisk"),
        pytest.param(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", b"a:443", id="connect"),
        pytest.param(b"GET /a%20b HTTP/1.1\r\nHost: a\r\n\r\n", b"/a%20b", id="escape"),
        pytest.param(b"GET /a?%zz HTTP/1.1\r\nHost: a\r\n\r\n", b"/a?%zz", id="query-percent"),
    ],
)
def test_other_valid_target_forms_parse(data: bytes, target: bytes) -> None:
    assert head_of(Http1Server().receive(data)).target == target


def test_http10_request_without_host_has_empty_authority() -> None:
    head = head_of(Http1Server().receive(b"GET / HTTP/1.0\r\n\r\n"))
    assert (head.http_version, head.authority) == (b"1.0", b"")


def test_expect_continue_is_reported_for_http11_with_body_only() -> None:
    data = b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    assert head_of(Http1Server().receive(data)).expect_continue
    no_body = b"GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n"
    assert not head_of(Http1Server().receive(no_body)).expect_continue
    old = b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n"
    assert not head_of(Http1Server().receive(old)).expect_continue


# --- EOF and head_started ---------------------------------------------------------------------


def test_clean_eof_between_requests_is_connection_closed() -> None:
    server = Http1Server()
    assert server.receive(b"") == [ConnectionClosed()]
    assert server.receive(b"") == []


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"GET / HT", id="mid-request-line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\n", id="mid-head"),
        pytest.param(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab", id="short-body"),
        pytest.param(
            b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", id="chunk"
        ),
    ],
)
def test_eof_inside_a_message_is_400(data: bytes) -> None:
    assert rejection(data).status == 400


def test_head_started_only_while_a_head_is_incomplete() -> None:
    server = Http1Server()
    assert not started(server)
    server.receive(b"\r\n")
    assert not started(server)
    server.receive(b"GET / HTTP/1.1\r\n")
    assert started(server)
    server.receive(b"Host: a\r\n\r\n")
    assert not started(server)


# --- keep-alive, pipelining, response framing ----------------------------------------------


def test_keep_alive_cycle_with_a_real_client() -> None:
    server, client = Http1Server(), h11.Connection(h11.CLIENT)
    for target in ("/one", "/two"):
        wire = client.send(h11.Request(method="GET", target=target, headers=[("Host", "a")]))
        wire += client.send(h11.EndOfMessage())
        events = server.receive(wire)
        assert head_of(events).target == target.encode()
        assert not alive(server)  # no response yet
        out = respond(server, ResponseHead(200, [(b"content-length", b"2")]), b"ok")
        seen = client_reads(client, out)
        assert isinstance(seen[0], h11.Response)
        assert seen[0].status_code == 200
        assert isinstance(seen[1], h11.Data)
        assert seen[1].data == b"ok"
        assert alive(server)
        assert server.start_next_cycle() == []
        client.start_next_cycle()


def test_pipelined_requests_wait_for_the_next_cycle() -> None:
    server = Http1Server()
    events = server.receive(GET + b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3 HT")
    assert [type(event) for event in events] == [RequestHead, EndOfBody]
    assert server.receive(b"TP/1.1\r\nHost: a\r\n\r\n") == []
    respond(server, ResponseHead(204, []))
    assert head_of(server.start_next_cycle()).target == b"/2"
    respond(server, ResponseHead(204, []))
    assert head_of(server.start_next_cycle()).target == b"/3"


def test_pipelined_bytes_are_bounded() -> None:
    limits = Http1Limits(max_header_bytes=1024)
    server = Http1Server(limits)
    server.receive(GET)
    server.receive(b"x" * (1024 + PIPELINE_SLACK))
    with pytest.raises(ProtocolViolation) as caught:
        server.receive(b"x")
    assert caught.value.status == 400
    assert not alive(server)


def test_eof_after_a_request_is_reported_after_the_response() -> None:
    server = Http1Server()
    assert len(server.receive(GET)) == 2
    assert server.receive(b"") == []
    respond(server, ResponseHead(204, []))
    assert server.start_next_cycle() == [ConnectionClosed()]


def test_chunked_response_to_http11_with_trailers() -> None:
    server, client = Http1Server(), h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
    client.send(h11.EndOfMessage())
    server.receive(GET)
    out = server.send(ResponseHead(200, [(b"transfer-encoding", b"chunked"), (b"x", b"1")]))
    assert out.lower().count(b"transfer-encoding") == 1
    out += server.send(BodyChunk(b"hello")) + server.send(EndOfBody([(b"grpc-status", b"0")]))
    seen = client_reads(client, out)
    assert isinstance(seen[-1], h11.EndOfMessage)
    assert list(seen[-1].headers) == [(b"grpc-status", b"0")]
    assert b"".join(bytes(e.data) for e in seen if isinstance(e, h11.Data)) == b"hello"
    assert alive(server)


def test_http10_client_gets_a_close_delimited_body_and_no_informational() -> None:
    server = Http1Server()
    server.receive(b"GET / HTTP/1.0\r\n\r\n")
    assert server.send(Informational(103, [(b"link", b"</s>")])) == b""
    out = server.send(ResponseHead(200, [(b"x", b"1")]))
    assert b"connection: close" in out.lower()
    assert b"transfer-encoding" not in out.lower()
    assert server.send(BodyChunk(b"data")) == b"data"
    assert server.send(EndOfBody([(b"t", b"dropped")])) == b""
    assert not alive(server)


def test_informational_100_continue_to_http11() -> None:
    server = Http1Server()
    server.receive(
        b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"
    )
    assert server.send(Informational(100, [])).startswith(b"HTTP/1.1 100 ")
    assert server.receive(b"x") == [BodyChunk(b"x"), EndOfBody()]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n", 200, id="head"),
        pytest.param(GET, 204, id="204"),
        pytest.param(GET, 304, id="304"),
    ],
)
def test_bodiless_responses_drop_body_chunks(request_bytes: bytes, status: int) -> None:
    server, client = Http1Server(), h11.Connection(h11.CLIENT)
    method = request_bytes.split(b" ")[0]
    client.send(h11.Request(method=method, target="/", headers=[("Host", "a")]))
    client.send(h11.EndOfMessage())
    server.receive(request_bytes)
    out = respond(server, ResponseHead(status, [(b"content-length", b"4")]), b"body")
    assert not out.endswith(b"body")
    seen = client_reads(client, out)
    assert not any(isinstance(event, h11.Data) for event in seen)
    assert alive(server)


def test_close_after_response_adds_connection_close() -> None:
    server = Http1Server()
    server.receive(GET)
    server.close_after_response()
    out = respond(server, ResponseHead(200, [(b"content-length", b"0"), (b"connection", b"x")]))
    assert out.lower().count(b"connection:") == 1
    assert b"connection: close" in out.lower()
    assert not alive(server)
    with pytest.raises(ProtocolViolation):
        server.start_next_cycle()


def test_client_connection_close_ends_keep_alive() -> None:
    server = Http1Server()
    server.receive(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert b"connection: close" in respond(server, ResponseHead(204, [])).lower()
    assert not alive(server)


def test_send_failed_poisons_keep_alive() -> None:
    server = Http1Server()
    server.receive(GET)
    respond(server, ResponseHead(204, []))
    server.send_failed()
    assert not alive(server)


def test_response_not_fully_read_request_is_not_kept_alive() -> None:
    server = Http1Server()
    server.receive(b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    respond(server, ResponseHead(413, [(b"content-length", b"0")]))
    assert not alive(server)
    assert server.receive(b"cde") == [BodyChunk(b"cde"), EndOfBody()]
    assert alive(server)


def test_an_error_response_can_follow_a_violation() -> None:
    server = Http1Server()
    with pytest.raises(ProtocolViolation):
        server.receive(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n")
    out = respond(server, ResponseHead(400, [(b"content-length", b"2")]), b"no")
    assert out.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in out.lower()
    assert out.endswith(b"\r\n\r\nno")
    assert not alive(server)
    with pytest.raises(ProtocolViolation):
        server.receive(b"more")


def test_short_content_length_body_cannot_end() -> None:
    server = Http1Server()
    server.receive(GET)
    server.send(ResponseHead(200, [(b"content-length", b"5")]))
    server.send(BodyChunk(b"ab"))
    with pytest.raises(ProtocolViolation) as caught:
        server.send(EndOfBody())
    assert caught.value.status == 500
    assert not alive(server)


# --- SPEC §5.3: the smuggling table -----------------------------------------------------------

H = b"Host: a\r\n"


def req(*lines: bytes, line: bytes = b"POST / HTTP/1.1", body: bytes = b"") -> bytes:
    return line + b"\r\n" + b"".join(x + b"\r\n" for x in lines) + b"\r\n" + body


TE = b"Transfer-Encoding: chunked"
SMUGGLING = [
    ("cl-and-te", req(H[:-2], b"Content-Length: 3", TE, body=b"0\r\n\r\n"), 400),
    ("te-and-cl", req(H[:-2], TE, b"Content-Length: 3", body=b"0\r\n\r\n"), 400),
    ("cl-differing", req(H[:-2], b"Content-Length: 1", b"Content-Length: 2"), 400),
    ("cl-list-differing", req(H[:-2], b"Content-Length: 1, 2"), 400),
    ("cl-sign", req(H[:-2], b"Content-Length: +1"), 400),
    ("cl-hex", req(H[:-2], b"Content-Length: 0x1"), 400),
    ("cl-empty", req(H[:-2], b"Content-Length:"), 400),
    ("te-chunked-twice", req(H[:-2], b"Transfer-Encoding: chunked, chunked"), 400),
    ("te-two-lines", req(H[:-2], TE, TE), 400),
    ("te-identity", req(H[:-2], b"Transfer-Encoding: identity"), 400),
    ("te-chunked-then-gzip", req(H[:-2], b"Transfer-Encoding: chunked, gzip"), 400),
    ("te-gzip-chunked", req(H[:-2], b"Transfer-Encoding: gzip, chunked"), 501),
    ("te-gzip-line-chunked-line", req(H[:-2], b"Transfer-Encoding: gzip", TE), 501),
    (
        "te-gzip-chunked-and-cl",
        req(H[:-2], b"Transfer-Encoding: gzip, chunked", b"Content-Length: 1"),
        400,
    ),
    ("te-on-http10", req(TE, line=b"POST / HTTP/1.0", body=b"0\r\n\r\n"), 400),
    ("te-gzip-on-http10", req(b"Transfer-Encoding: gzip, chunked", line=b"POST / HTTP/1.0"), 400),
    ("chunk-size-negative", req(H[:-2], TE, body=b"-1\r\nx\r\n0\r\n\r\n"), 400),
    ("chunk-size-0x", req(H[:-2], TE, body=b"0x10\r\n" + b"x" * 16 + b"\r\n0\r\n\r\n"), 400),
    ("chunk-size-space-semicolon", req(H[:-2], TE, body=b"1 ;x\r\nx\r\n0\r\n\r\n"), 400),
    ("chunk-size-too-long", req(H[:-2], TE, body=b"1" * 17 + b"\r\n"), 400),
    ("chunk-ext-bare-cr", req(H[:-2], TE, body=b"1;a\rb\r\nx\r\n0\r\n\r\n"), 400),
    ("chunk-ext-nul", req(H[:-2], TE, body=b"1;a\x00\r\nx\r\n0\r\n\r\n"), 400),
    ("chunk-bare-lf", req(H[:-2], TE, body=b"1\nx\n0\n\n"), 400),
    ("chunk-missing-crlf", req(H[:-2], TE, body=b"1\r\nxy\r\n0\r\n\r\n"), 400),
    ("chunk-trailer-fold", req(H[:-2], TE, body=b"0\r\nA: 1\r\n  2\r\n\r\n"), 400),
    ("obs-fold-first-line", req(b" X: 1", H[:-2], line=b"GET / HTTP/1.1"), 400),
    ("space-before-colon", req(H[:-2], b"X-A : 1", line=b"GET / HTTP/1.1"), 400),
    ("invalid-name", req(H[:-2], b"X(A): 1", line=b"GET / HTTP/1.1"), 400),
    ("nul-in-value", req(H[:-2], b"X: a\x00b", line=b"GET / HTTP/1.1"), 400),
    ("cr-in-value", req(H[:-2], b"X: a\rb", line=b"GET / HTTP/1.1"), 400),
    ("ctl-in-value", req(H[:-2], b"X: a\x01b", line=b"GET / HTTP/1.1"), 400),
    ("del-in-value", req(H[:-2], b"X: a\x7fb", line=b"GET / HTTP/1.1"), 400),
    ("no-colon", req(H[:-2], b"Xyz", line=b"GET / HTTP/1.1"), 400),
    ("missing-host", req(line=b"GET / HTTP/1.1"), 400),
    ("two-hosts", req(H[:-2], b"Host: b", line=b"GET / HTTP/1.1"), 400),
    ("bad-host", req(b"Host: a b/c", line=b"GET / HTTP/1.1"), 400),
    ("host-userinfo", req(b"Host: u@a", line=b"GET / HTTP/1.1"), 400),
    ("version-2.0", req(H[:-2], line=b"GET / HTTP/2.0"), 505),
    ("version-1.2", req(H[:-2], line=b"GET / HTTP/1.2"), 505),
    ("version-0.9", req(H[:-2], line=b"GET / HTTP/0.9"), 505),
    ("version-2", req(H[:-2], line=b"GET / HTTP/2"), 505),
    ("version-lowercase", req(H[:-2], line=b"GET / http/1.1"), 400),
    ("two-spaces", req(H[:-2], line=b"GET  / HTTP/1.1"), 400),
    ("target-empty", req(H[:-2], line=b"GET  HTTP/1.1"), 400),
    ("target-fragment", req(H[:-2], line=b"GET /a#b HTTP/1.1"), 400),
    ("target-non-ascii", req(H[:-2], line=b"GET /\xc3\xa9 HTTP/1.1"), 400),
    ("target-asterisk-get", req(H[:-2], line=b"GET * HTTP/1.1"), 400),
    ("target-relative", req(H[:-2], line=b"GET a/b HTTP/1.1"), 400),
    ("target-bad-escape", req(H[:-2], line=b"GET /a%2 HTTP/1.1"), 400),
    ("target-bad-escape-hex", req(H[:-2], line=b"GET /a%g1 HTTP/1.1"), 400),
    ("absolute-bad-escape", req(H[:-2], line=b"GET http://a/%%41 HTTP/1.1"), 400),
    ("absolute-userinfo", req(H[:-2], line=b"GET http://u@a/ HTTP/1.1"), 400),
    ("absolute-empty-host", req(H[:-2], line=b"GET http:///x HTTP/1.1"), 400),
    ("absolute-ftp", req(H[:-2], line=b"GET ftp://a/ HTTP/1.1"), 400),
    ("absolute-without-host-header", req(line=b"GET http://a/ HTTP/1.1"), 400),
    ("bare-cr-line-end", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400),
    ("leading-space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
]


@pytest.mark.parametrize(("data", "status"), [pytest.param(d, s, id=i) for i, d, s in SMUGGLING])
def test_smuggling_table(data: bytes, status: int) -> None:
    violation = rejection(data)
    assert violation.status == status
    assert violation.reason.isascii()
    assert violation.reason not in data.decode("latin-1")  # fixed texts, never peer bytes


@pytest.mark.parametrize(
    ("data", "limits", "status"),
    [
        pytest.param(
            b"GET /" + b"a" * 100, Http1Limits(max_request_line_bytes=64), 414, id="414-partial"
        ),
        pytest.param(
            b"GET /" + b"a" * 100 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
            Http1Limits(max_request_line_bytes=64),
            414,
            id="414-whole",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 300,
            Http1Limits(max_header_bytes=256),
            431,
            id="431-bytes-partial",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 300 + b"\r\n\r\n",
            Http1Limits(max_header_bytes=256),
            431,
            id="431-bytes-whole",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 10 + b"\r\n",
            Http1Limits(max_headers=10),
            431,
            id="431-count",
        ),
        pytest.param(
            req(H[:-2], TE, body=b"0\r\n" + b"T: 1\r\n" * 11 + b"\r\n"),
            Http1Limits(max_headers=10),
            431,
            id="431-trailer-count",
        ),
        pytest.param(
            req(H[:-2], TE, body=b"0\r\nT: " + b"a" * 300),
            Http1Limits(max_header_bytes=256),
            431,
            id="431-trailer-bytes",
        ),
    ],
)
def test_limits(data: bytes, limits: Http1Limits, status: int) -> None:
    assert rejection(data, limits).status == status


def test_limits_are_inclusive() -> None:
    line = b"GET /" + b"a" * 59 + b" HTTP/1.1"  # exactly 73 bytes
    server = Http1Server(Http1Limits(max_request_line_bytes=len(line), max_headers=1))
    assert head_of(server.receive(line + b"\r\nHost: a\r\n\r\n")).target.startswith(b"/aaa")


def test_trailers_are_lower_cased_and_kept_in_order() -> None:
    data = req(H[:-2], TE, body=b'1;ext="q"\r\nx\r\n0\r\nB: 2\r\nA: 1\r\n\r\n')
    events = Http1Server().receive(data)
    assert events[-1] == EndOfBody([(b"b", b"2"), (b"a", b"1")])


def test_chunk_extensions_with_tokens_and_quoted_strings_are_accepted() -> None:
    data = req(H[:-2], TE, body=b'3;a;b=c;d="x y"\r\nabc\r\n0\r\n\r\n')
    assert body_of(Http1Server().receive(data)) == b"abc"


def test_headers_passed_as_given() -> None:
    headers: Headers = [(b"host", b"a"), (b"x-b", b"1"), (b"x-a", b"2"), (b"x-b", b"3")]
    wire = b"GET / HTTP/1.1\r\nHost: a\r\nX-B: 1\r\nx-a: 2\r\nX-b: 3\r\n\r\n"
    assert head_of(Http1Server().receive(wire)).headers == headers


# --- what is known of a refused request (the access log's fields, issue #14) -------------------


@pytest.mark.parametrize(
    ("data", "known"),
    [
        # h11 refuses the head: the request line is read from the raw head (no Host).
        pytest.param(
            b"GET /a?q=1 HTTP/1.1\r\nHost: h\r\nBad Field: x\r\n\r\n",
            RefusedRequest(b"GET", b"/a?q=1", b"", b"1.1"),
            id="h11-error",
        ),
        pytest.param(
            b"POST /te HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            RefusedRequest(b"POST", b"/te", b"", b"1.1"),
            id="501",
        ),
        pytest.param(
            b"GET / HTTP/2\r\nHost: h\r\n\r\n", RefusedRequest(b"GET", b"/", b"", b"2"), id="505"
        ),
        pytest.param(
            b"GET /\x01 HTTP/1.1\r\nHost: h\r\n\r\n", None, id="control-character-in-line"
        ),
        # h11 parsed it, the gateway's rules refused it: Host too.
        pytest.param(
            b"GET /%zz HTTP/1.1\r\nHost: h\r\n\r\n",
            RefusedRequest(b"GET", b"/%zz", b"h", b"1.1"),
            id="inspect",
        ),
        pytest.param(
            b"GET /v HTTP/1.2\r\nHost: h\r\n\r\n",
            RefusedRequest(b"GET", b"/v", b"h", b"1.2"),
            id="505-h11-parsed",
        ),
        # A bad chunk that came with its head: the head is lost, not what it said.
        pytest.param(
            b"POST /up HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            RefusedRequest(b"POST", b"/up", b"h", b"1.1"),
            id="bad-chunk-with-head",
        ),
        # The head never completed: nothing.
        pytest.param(b"GET /" + b"a" * 9000, None, id="414"),
        pytest.param(b"GET / HTTP/1.1\r\nX: " + b"b" * 40000, None, id="431"),
    ],
)
def test_a_refused_request_says_what_was_read_of_it(
    data: bytes, known: RefusedRequest | None
) -> None:
    server = Http1Server()
    with pytest.raises(ProtocolViolation):
        server.receive(data)
    assert server.refused_request == known


def test_nothing_is_refused_without_a_violation() -> None:
    server = Http1Server()
    server.receive(GET)
    assert server.refused_request is None


def test_a_malformed_pipelined_request_is_refused_at_the_next_cycle() -> None:
    server = Http1Server()
    events = server.receive(GET + b"GET /bad HTTP/1.1\r\nHost: a\r\nBad Field: x\r\n\r\n")
    assert [type(event) for event in events] == [RequestHead, EndOfBody]
    respond(server, ResponseHead(200, [(b"content-length", b"0")]))
    with pytest.raises(ProtocolViolation) as caught:
        server.start_next_cycle()
    assert caught.value.status == 400
    assert server.refused_request == RefusedRequest(b"GET", b"/bad", b"", b"1.1")
    out = respond(server, ResponseHead(400, [(b"content-length", b"0")]))
    assert b"connection: close" in out.lower()
