"""The HTTP/1.1 parser engines: request heads (``H11Heads``, ``LlhttpHeads``) and the llhttp
upstream client (``LlhttpClient`` with ``RequestWriter``), checked against ``Http1Client``.

Most tests run for both engines of a pair: they state the contract both keep. Tests named
``..._only_llhttp_...`` or ``..._llhttp_refuses_...`` state a deliberate difference. The
differential properties are in ``tests/property/test_http1_differential.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11
import pytest

from a3s_gateway.protocols import http1_heads
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
from a3s_gateway.protocols.http1 import Http1Client
from a3s_gateway.protocols.http1_engines import (
    UpstreamAdapter,
    request_head_parser,
    upstream_adapter_factory,
)
from a3s_gateway.protocols.http1_heads import H11Heads, LlhttpHeads, ParsedHead, RequestHeadParser
from a3s_gateway.protocols.http1_llhttp import LlhttpClient
from a3s_gateway.protocols.http1_request_writer import RequestWriter, WriterState
from a3s_gateway.protocols.http1_response_heads import parse_response_head

if TYPE_CHECKING:
    from collections.abc import Callable

ENGINES = [pytest.param(H11Heads(), id="h11"), pytest.param(LlhttpHeads(), id="llhttp")]
CLIENTS = [pytest.param(Http1Client, id="h11"), pytest.param(LlhttpClient, id="llhttp")]
HOST = (b"host", b"backend:8080")

Client = Http1Client | LlhttpClient


# --- request heads -------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_a_typical_head_in_h11s_normal_form(engine: RequestHeadParser) -> None:
    head = (
        b"POST /a?b=1 HTTP/1.1\r\nHost: api.test\r\nX-Multi:  a  b \t\r\n"
        b"Content-Length: 010\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    assert engine.parse_request_head(head) == ParsedHead(
        b"POST",
        b"/a?b=1",
        b"1.1",
        [
            (b"host", b"api.test"),
            (b"x-multi", b"a  b"),
            (b"content-length", b"10"),  # canonical (DESIGN.md §0)
            (b"transfer-encoding", b"chunked"),
            (b"expect", b"100-continue"),
        ],
        expect_continue=True,
    )


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("head", "headers"),
    [
        pytest.param(
            b"GET / HTTP/1.1\nHost: h\nX: 1\n\n", [(b"host", b"h"), (b"x", b"1")], id="bare-lf"
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n \t b\r\n\r\n",
            [(b"host", b"h"), (b"x", b"a b")],
            id="obs-fold",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX: 1\r\nContent-Length: 5\r\n\r\n",
            [(b"host", b"h"), (b"content-length", b"5"), (b"x", b"1")],
            id="repeated-content-length",
        ),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5 , 5\r\n\r\n",
            [(b"host", b"h"), (b"content-length", b"5")],
            id="content-length-list",
        ),
        pytest.param(b"GET / HTTP/1.0\r\n\r\n", [], id="http-1.0-without-host"),
    ],
)
def test_forms_h11_reads_are_read_alike(
    engine: RequestHeadParser, head: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    assert engine.parse_request_head(head).headers == headers


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("line", "method", "target"),
    [
        pytest.param(b"FOO / HTTP/1.1", b"FOO", b"/", id="extension-method"),
        pytest.param(b"get / HTTP/1.1", b"get", b"/", id="lower-case-method"),
        pytest.param(b"CONNECT h:443 HTTP/1.1", b"CONNECT", b"h:443", id="connect"),
        pytest.param(b"OPTIONS * HTTP/1.1", b"OPTIONS", b"*", id="asterisk"),
        pytest.param(b"GET http://h/a HTTP/1.1", b"GET", b"http://h/a", id="absolute"),
        pytest.param(b'GET /a"{}|^` HTTP/1.1', b"GET", b'/a"{}|^`', id="odd-target-bytes"),
    ],
)
def test_request_lines(
    engine: RequestHeadParser, line: bytes, method: bytes, target: bytes
) -> None:
    parsed = engine.parse_request_head(line + b"\r\nHost: h\r\n\r\n")
    assert (parsed.method, parsed.target, parsed.http_version) == (method, target, b"1.1")


@pytest.mark.parametrize("engine", ENGINES)
def test_an_upgrade_head_is_parsed_like_any_other(engine: RequestHeadParser) -> None:
    head = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert engine.parse_request_head(head).headers[-1] == (b"upgrade", b"websocket")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: foo, 100-continue\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nHost: h\r\nExpect: foo\r\n\r\n", False),
        (b"POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", False),  # RFC 9110 §10.1.1
    ],
)
def test_expect_continue(engine: RequestHeadParser, head: bytes, expected: bool) -> None:
    assert engine.parse_request_head(head).expect_continue is expected


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("head", "status"),
    [
        pytest.param(b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400, id="two-spaces"),
        pytest.param(b"GET / RTSP/1.0\r\nHost: h\r\n\r\n", 400, id="rtsp"),
        pytest.param(b"GET / HTTP/1.10\r\nHost: h\r\n\r\n", 505, id="two-digit-minor"),
        pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="no-host"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, id="two-hosts"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX : 1\r\n\r\n", 400, id="space-before-colon"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n", 400, id="control"),
        pytest.param(b"GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400, id="fold-at-start"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            id="te-gzip-chunked",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
            id="conflicting-lengths",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n",
            400,
            id="length-2**64",
        ),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 000000000000000000005\r\n\r\n",
            400,
            id="length-21-digits",
        ),
    ],
)
def test_refusals_have_h11s_status(engine: RequestHeadParser, head: bytes, status: int) -> None:
    with pytest.raises(ProtocolViolation) as caught:
        engine.parse_request_head(head)
    assert caught.value.status == status


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",  # inspect_request answers 505
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n",
    ],
)
def test_heads_left_to_inspect_request_are_parsed(engine: RequestHeadParser, head: bytes) -> None:
    engine.parse_request_head(head)


def test_a_typical_head_takes_llhttps_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_retry(head: bytes) -> ParsedHead:
        raise AssertionError("the slow path was taken")

    monkeypatch.setattr(http1_heads, "_retry", no_retry)
    head = b"GET /x HTTP/1.1\r\nHost: h\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n"
    assert LlhttpHeads().parse_request_head(head).target == b"/x"


def test_engines_by_name() -> None:
    assert isinstance(request_head_parser(), LlhttpHeads)
    assert isinstance(request_head_parser("h11"), H11Heads)
    adapter: UpstreamAdapter = upstream_adapter_factory()(max_head_bytes=100, max_headers=5)
    assert isinstance(adapter, LlhttpClient)
    assert upstream_adapter_factory("h11") is Http1Client


# --- response heads ------------------------------------------------------------------------


def test_response_head_in_h11s_normal_form() -> None:
    parsed = parse_response_head(
        b"HTTP/1.1 200  Fine \r\nContent-Length: 3, 3\r\nX: a\r\n\tb\r\nConnection: Close\r\n\r\n"
    )
    assert parsed is not None
    assert (parsed.status, parsed.reason, parsed.version) == (200, b" Fine ", b"1.1")
    assert parsed.headers == [(b"content-length", b"3"), (b"x", b"a b"), (b"connection", b"Close")]
    assert (parsed.length, parsed.chunked, parsed.keep_alive) == (3, False, False)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 O\x00K\r\n\r\n",
        b"HTTP/1.1 099 Low\r\n\r\n",
        b"HTTP/1.1  200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"ICE/1.0 200 OK\r\n\r\n",
    ],
)
def test_response_heads_h11_refuses(head: bytes) -> None:
    assert parse_response_head(head) is None


# --- the upstream client: one contract -----------------------------------------------------


def get(method: bytes = b"GET", *extra: tuple[bytes, bytes]) -> RequestHead:
    return RequestHead(method, b"/p?q=1", b"backend:8080", [HOST, *extra])


def reusable(client: Client) -> bool:
    """``client.reusable``, read afresh (mypy would carry a narrowed value across calls)."""
    return client.reusable


def receive_all(client: Client, data: bytes) -> list[Event]:
    """Feed ``data`` then EOF."""
    return client.receive(data) + client.receive(b"")


def exchange(client: Client, head: RequestHead, response: bytes) -> list[Event]:
    client.send(head)
    client.send(EndOfBody())
    return client.receive(response)


def failure(new: Callable[..., Client], response: bytes, method: bytes = b"GET") -> str:
    client = new(max_head_bytes=1024, max_headers=10)
    client.send(get(method))
    client.send(EndOfBody())
    with pytest.raises(ProtocolViolation) as caught:
        receive_all(client, response)
    assert caught.value.status == 502
    assert not client.reusable
    return caught.value.reason


@pytest.mark.parametrize("new", CLIENTS)
def test_content_length_response_and_reuse(new: Callable[[], Client]) -> None:
    client = new()
    for _ in range(2):
        events = exchange(client, get(), b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
        assert events == [
            ResponseHead(200, [(b"content-length", b"5")], b"OK"),
            BodyChunk(b"hello"),
            EndOfBody(),
        ]
        assert client.reusable
        client.start_next_cycle()


@pytest.mark.parametrize("new", CLIENTS)
def test_chunked_response_byte_by_byte_with_trailers(new: Callable[[], Client]) -> None:
    client, server = new(), h11.Connection(h11.SERVER)
    server.receive_data(client.send(get()) + client.send(EndOfBody()))
    server.next_event()
    server.next_event()
    wire = server.send(h11.Response(status_code=201, headers=[("Transfer-Encoding", "chunked")]))
    wire += server.send(h11.Data(data=b"part1")) + server.send(h11.Data(data=b"part2"))
    wire += server.send(h11.EndOfMessage(headers=[("Grpc-Status", "0")]))
    events: list[Event] = []
    for i in range(len(wire)):
        events += client.receive(wire[i : i + 1])
    assert b"".join(e.data for e in events if isinstance(e, BodyChunk)) == b"part1part2"
    assert events[-1] == EndOfBody([(b"grpc-status", b"0")])
    assert client.reusable


@pytest.mark.parametrize("new", CLIENTS)
@pytest.mark.parametrize(("method", "status"), [(b"HEAD", 200), (b"GET", 204), (b"GET", 304)])
def test_bodiless_responses(new: Callable[[], Client], method: bytes, status: int) -> None:
    client = new()
    events = exchange(client, get(method), b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status)
    assert [type(event) for event in events] == [ResponseHead, EndOfBody]
    assert client.reusable


@pytest.mark.parametrize("new", CLIENTS)
def test_close_delimited_body_ends_at_eof(new: Callable[[], Client]) -> None:
    client = new()
    assert exchange(client, get(), b"HTTP/1.1 200 OK\r\n\r\nsome")[1:] == [BodyChunk(b"some")]
    assert client.receive(b"") == [EndOfBody()]
    assert not client.reusable
    assert client.receive(b"") == [ConnectionClosed()]


@pytest.mark.parametrize("new", CLIENTS)
@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive, close\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200",  # stray bytes
    ],
)
def test_responses_that_end_the_connection(new: Callable[[], Client], response: bytes) -> None:
    client = new()
    exchange(client, get(), response)
    assert not client.reusable
    with pytest.raises(ProtocolViolation):
        client.start_next_cycle()


@pytest.mark.parametrize("new", CLIENTS)
def test_informational_responses_pass_through(new: Callable[[], Client]) -> None:
    events = exchange(
        new(),
        get(),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    )
    assert events[:2] == [
        Informational(100, [], b"Continue"),
        Informational(103, [(b"link", b"</a>")], b"Early"),
    ]


@pytest.mark.parametrize("new", CLIENTS)
def test_a_2xx_to_connect_opens_a_tunnel_nothing_more_is_read(new: Callable[[], Client]) -> None:
    client = new()
    events = exchange(client, get(b"CONNECT"), b"HTTP/1.1 200 OK\r\n\r\nbytes")
    assert events == [ResponseHead(200, [], b"OK")]
    assert client.receive(b"more") == []
    assert client.receive(b"") == []
    assert not client.reusable


@pytest.mark.parametrize("new", CLIENTS)
def test_an_unsolicited_final_response_is_read_a_1xx_is_not(new: Callable[[], Client]) -> None:
    client = new()
    events = client.receive(b"HTTP/1.1 408 Timeout\r\nContent-Length: 0\r\n\r\n")
    assert [type(event) for event in events] == [ResponseHead, EndOfBody]
    assert not client.reusable
    with pytest.raises(ProtocolViolation):
        new().receive(b"HTTP/1.1 100 Continue\r\n\r\n")


def test_no_request_after_an_unsolicited_response() -> None:
    """``Http1Client`` raises AttributeError from inside h11 here; a caller bug either way."""
    client = LlhttpClient()
    client.receive(b"HTTP/1.1 408 Timeout\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ProtocolViolation) as caught:
        client.send(get())
    assert caught.value.status == 500
    assert not client.reusable


@pytest.mark.parametrize("new", CLIENTS)
def test_eof_on_an_idle_connection(new: Callable[[], Client]) -> None:
    client = new()
    assert client.receive(b"") == [ConnectionClosed()]
    assert not client.reusable


@pytest.mark.parametrize("new", CLIENTS)
def test_early_response_is_reusable_once_the_request_is_sent(new: Callable[[], Client]) -> None:
    client = new()
    client.send(RequestHead(b"POST", b"/", b"b", [HOST, (b"content-length", b"2")], has_body=True))
    client.receive(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    assert not reusable(client)
    client.send(BodyChunk(b"ab"))
    client.send(EndOfBody())
    assert reusable(client)
    client.send_failed()
    assert not reusable(client)


@pytest.mark.parametrize("new", CLIENTS)
@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (b"", "connection closed before response"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "incomplete response head"),
        (b" HTTP/1.1 200 OK\r\n", "invalid head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort", "incomplete response body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid body"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX", "invalid body"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "invalid head"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "invalid head"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "invalid head"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 11 + b"\r\n", "too many response header fields"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 2000 + b"\r\n\r\n", "response head too large"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 2000, "response head too large"),
        (b"HTTP/1.1 103 Hints\r\n\r\nHTTP/1.1 101 Up\r\n\r\n", "unexpected 101"),
    ],
)
def test_bad_responses_are_502(new: Callable[..., Client], response: bytes, reason: str) -> None:
    assert failure(new, response) == reason


# --- the upstream client: deliberate differences -------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\x01\r\nContent-Length: 0\r\n\r\n", id="control"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 18446744073709551616\r\n\r\n", id="length-2**64"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
            id="space-after-chunk-size",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;\x01\r\nhello\r\n0\r\n\r\n",
            id="chunk-extension",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\r\n",
            id="bare-lf-in-trailers",
        ),
    ],
)
def test_llhttp_client_refuses_what_h11_lets_through(response: bytes) -> None:
    reference, client = Http1Client(), LlhttpClient()
    for adapter in (reference, client):
        adapter.send(get())
        adapter.send(EndOfBody())
    reference.receive(response)  # accepted by the reference ...
    with pytest.raises(ProtocolViolation) as caught:  # ... refused by design (module docstring)
        receive_all(client, response)
    assert caught.value.status == 502


def test_trailers_follow_h11s_field_rules() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
    events = exchange(LlhttpClient(), get(), chunked + b"Content-Length: 1, 1\r\n\r\n")
    assert events[-1] == EndOfBody([(b"content-length", b"1")])
    with pytest.raises(ProtocolViolation):
        exchange(LlhttpClient(), get(), chunked + b"Transfer-Encoding: gzip\r\n\r\n")


# --- writing requests ----------------------------------------------------------------------


def test_content_length_is_written_canonically() -> None:
    head = RequestHead(
        b"PUT", b"/", b"b", [HOST, (b"content-length", b"003"), (b"x", b"1")], has_body=True
    )
    wire = LlhttpClient().send(head)
    assert wire == b"PUT / HTTP/1.1\r\nhost: backend:8080\r\ncontent-length: 3\r\nx: 1\r\n\r\n"


def test_writer_states_follow_h11s_client() -> None:
    writer = RequestWriter()
    head = RequestHead(b"POST", b"/", b"b", [HOST], has_body=True)
    assert writer.head(head).endswith(b"transfer-encoding: chunked\r\n\r\n")
    states = [writer.state]
    assert writer.data(b"abc") == b"3\r\nabc\r\n"
    assert writer.end([(b"x-t", b"1"), (b"host", b"z")]) == b"0\r\nhost: z\r\nx-t: 1\r\n\r\n"
    states.append(writer.state)
    assert writer.end([]) == b""  # nothing in progress
    with pytest.raises(ProtocolViolation):
        writer.data(b"late")
    states.append(writer.state)
    assert states == [WriterState.BODY, WriterState.DONE, WriterState.ERROR]


@pytest.mark.parametrize(
    ("head", "state"),
    [
        pytest.param(RequestHead(b"GET", b"/", b"b", []), WriterState.IDLE, id="no-host"),
        pytest.param(
            RequestHead(b"GET", b"/", b"b", [HOST, (b"x", b" lead")]), WriterState.IDLE, id="value"
        ),
        pytest.param(
            RequestHead(b"GET", b"/", b"b", [HOST, (b"content-length", b"x")]),
            WriterState.ERROR,
            id="length",
        ),
        pytest.param(
            RequestHead(b"GET", b"/", b"b", [HOST, (b"content-length", b"2")]),
            WriterState.ERROR,
            id="bodiless-with-length",
        ),
    ],
)
def test_heads_that_cannot_be_written(head: RequestHead, state: WriterState) -> None:
    """As in ``Http1Client``: a head refused before h11 saw it leaves the connection usable."""
    writer = RequestWriter()
    with pytest.raises(ProtocolViolation) as caught:
        writer.head(head)
    assert caught.value.status == 500
    assert writer.state is state
