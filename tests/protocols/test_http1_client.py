"""``Http1Client``: request serialisation, response parsing, SPEC §5.7 limits and reuse.

A real ``h11.Connection(SERVER)`` is the oracle: it parses what our client writes and writes the
responses our client parses.
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
from a3s_gateway.protocols.http1 import Http1Client

HOST = (b"host", b"backend:8080")


def get(method: bytes = b"GET", *extra: tuple[bytes, bytes]) -> RequestHead:
    return RequestHead(method, b"/p?q=1", b"backend:8080", [HOST, *extra])


def server_reads(server: h11.Connection, data: bytes) -> list[object]:
    """What a real h11 server makes of the bytes our client wrote."""
    server.receive_data(data)
    events: list[object] = []
    while (event := server.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    return events


def body_of(events: list[Event]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, BodyChunk))


def exchange(client: Http1Client, head: RequestHead, response: bytes) -> list[Event]:
    client.send(head)
    client.send(EndOfBody())
    return client.receive(response)


def receive_all(client: Http1Client, data: bytes) -> list[Event]:
    """Feed ``data`` then EOF."""
    return client.receive(data) + client.receive(b"")


def failure(response: bytes, head: RequestHead | None = None) -> ProtocolViolation:
    client = Http1Client(max_head_bytes=1024, max_headers=10)
    client.send(head or get())
    client.send(EndOfBody())
    with pytest.raises(ProtocolViolation) as caught:
        receive_all(client, response)
    assert not client.reusable
    return caught.value


# --- requests -------------------------------------------------------------------------------


def test_get_request_parses_in_a_real_server() -> None:
    client, server = Http1Client(), h11.Connection(h11.SERVER)
    wire = client.send(get(b"GET", (b"x-a", b"1"), (b"x-a", b"2"))) + client.send(EndOfBody())
    seen = server_reads(server, wire)
    request = seen[0]
    assert isinstance(request, h11.Request)
    assert (request.method, request.target, request.http_version) == (b"GET", b"/p?q=1", b"1.1")
    assert list(request.headers) == [HOST, (b"x-a", b"1"), (b"x-a", b"2")]
    assert isinstance(seen[1], h11.EndOfMessage)


def test_body_without_length_is_chunked_with_trailers() -> None:
    client, server = Http1Client(), h11.Connection(h11.SERVER)
    head = RequestHead(b"POST", b"/", b"b", [HOST, (b"transfer-encoding", b"gzip")], has_body=True)
    wire = client.send(head) + client.send(BodyChunk(b"abc")) + client.send(BodyChunk(b""))
    wire += client.send(BodyChunk(b"de")) + client.send(EndOfBody([(b"x-sum", b"5")]))
    seen = server_reads(server, wire)
    assert isinstance(seen[0], h11.Request)
    assert list(seen[0].headers) == [HOST, (b"transfer-encoding", b"chunked")]
    assert b"".join(bytes(e.data) for e in seen if isinstance(e, h11.Data)) == b"abcde"
    assert isinstance(seen[-1], h11.EndOfMessage)
    assert list(seen[-1].headers) == [(b"x-sum", b"5")]


def test_content_length_is_kept_and_trailers_dropped() -> None:
    client, server = Http1Client(), h11.Connection(h11.SERVER)
    head = RequestHead(b"PUT", b"/", b"b", [HOST, (b"content-length", b"3")], has_body=True)
    wire = (
        client.send(head) + client.send(BodyChunk(b"abc")) + client.send(EndOfBody([(b"t", b"1")]))
    )
    assert b"transfer-encoding" not in wire.lower()
    seen = server_reads(server, wire)
    assert isinstance(seen[-1], h11.EndOfMessage)
    assert list(seen[-1].headers) == []


def test_a_request_without_body_is_complete_after_its_head() -> None:
    client = Http1Client()
    assert client.send(get()).endswith(b"\r\n\r\n")
    client.receive(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert client.reusable
    assert client.send(EndOfBody()) == b""
    assert client.reusable


def test_request_without_host_is_a_caller_bug() -> None:
    with pytest.raises(ProtocolViolation) as caught:
        Http1Client().send(RequestHead(b"GET", b"/", b"", []))
    assert caught.value.status == 500


# --- responses ------------------------------------------------------------------------------


def test_response_with_content_length_and_reuse() -> None:
    client = Http1Client()
    for _ in range(2):
        events = exchange(
            client,
            get(),
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\nhello",
        )
        assert events[0] == ResponseHead(
            200, [(b"content-length", b"5"), (b"set-cookie", b"a"), (b"set-cookie", b"b")], b"OK"
        )
        assert body_of(events) == b"hello"
        assert events[-1] == EndOfBody()
        assert client.reusable
        client.start_next_cycle()


def test_chunked_response_from_a_real_server_with_trailers() -> None:
    client, server = Http1Client(), h11.Connection(h11.SERVER)
    server_reads(server, client.send(get()) + client.send(EndOfBody()))
    wire = server.send(h11.Response(status_code=201, headers=[("Transfer-Encoding", "chunked")]))
    wire += server.send(h11.Data(data=b"part1")) + server.send(h11.Data(data=b"part2"))
    wire += server.send(h11.EndOfMessage(headers=[("Grpc-Status", "0")]))
    events: list[Event] = []
    for i in range(len(wire)):  # one byte at a time
        events += client.receive(wire[i : i + 1])
    assert isinstance(events[0], ResponseHead)
    assert events[0].status == 201
    assert body_of(events) == b"part1part2"
    assert events[-1] == EndOfBody([(b"grpc-status", b"0")])
    assert client.reusable


@pytest.mark.parametrize(
    ("method", "status"),
    [
        pytest.param(b"HEAD", 200, id="head"),
        pytest.param(b"GET", 204, id="204"),
        pytest.param(b"GET", 304, id="304"),
    ],
)
def test_bodiless_responses(method: bytes, status: int) -> None:
    client = Http1Client()
    response = b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status
    events = exchange(client, get(method), response)
    assert [type(event) for event in events] == [ResponseHead, EndOfBody]
    assert client.reusable


def test_close_delimited_body_ends_at_eof() -> None:
    client = Http1Client()
    events = exchange(client, get(), b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert events[1:] == [BodyChunk(b"some")]
    assert client.receive(b"") == [EndOfBody()]
    assert not client.reusable
    assert client.receive(b"") == [ConnectionClosed()]


def test_http10_response_is_not_reusable() -> None:
    client = Http1Client()
    exchange(client, get(), b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert not client.reusable


def test_connection_close_response_is_not_reusable() -> None:
    client = Http1Client()
    exchange(client, get(), b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    assert not client.reusable
    with pytest.raises(ProtocolViolation):
        client.start_next_cycle()


def test_informational_responses_are_relayed() -> None:
    client = Http1Client()
    events = exchange(
        client,
        get(),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: </a>\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    )
    assert events[:2] == [
        Informational(100, [], b"Continue"),
        Informational(103, [(b"link", b"</a>")], b"Early"),
    ]
    assert isinstance(events[2], ResponseHead)


def test_obs_fold_in_a_response_becomes_a_space() -> None:
    events = exchange(
        Http1Client(), get(), b"HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(events[0], ResponseHead)
    assert events[0].headers == [(b"x", b"a b"), (b"content-length", b"0")]


def test_stray_bytes_after_the_response_poison_the_connection() -> None:
    client = Http1Client()
    exchange(client, get(), b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200")
    assert not client.reusable


def test_bytes_after_an_idle_response_poison_the_connection() -> None:
    client = Http1Client()
    exchange(client, get(), b"HTTP/1.1 204 No Content\r\n\r\n")
    assert client.reusable
    assert client.receive(b"x") == []
    assert not client.reusable


def test_eof_on_an_idle_connection_is_connection_closed() -> None:
    client = Http1Client()
    assert client.receive(b"") == [ConnectionClosed()]
    assert not client.reusable


def test_send_failed_poisons_the_connection() -> None:
    client = Http1Client()
    exchange(client, get(), b"HTTP/1.1 204 No Content\r\n\r\n")
    client.send_failed()
    assert not client.reusable


def test_early_response_is_not_reusable_until_the_request_is_sent() -> None:
    client = Http1Client()
    client.send(RequestHead(b"POST", b"/", b"b", [HOST, (b"content-length", b"2")], has_body=True))
    client.receive(b"HTTP/1.1 413 Too Large\r\nContent-Length: 0\r\n\r\n")
    assert not client.reusable
    client.send(BodyChunk(b"ab"))
    client.send(EndOfBody())
    assert client.reusable


# --- 502 cases ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        pytest.param(b"", "connection closed before response", id="eof-before-response"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Le", "incomplete response head", id="eof-mid-head"
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            "incomplete response body",
            id="short-cl",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "invalid body",
            id="bad-chunk-size",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX",
            "invalid body",
            id="bad-chunk-crlf",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab",
            "incomplete response body",
            id="eof-chunk",
        ),
        pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", "invalid head", id="bad-status-line"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX : 1\r\n\r\n", "invalid head", id="space-before-colon"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "invalid head",
            id="differing-cl",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\n" + b"X: 1\r\n" * 11 + b"\r\n",
            "too many response header fields",
            id="count",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX: " + b"a" * 2000 + b"\r\n\r\n",
            "response head too large",
            id="bytes-one-read",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nX: " + b"a" * 2000, "response head too large", id="bytes-partial"
        ),
        pytest.param(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "unexpected 101", id="101"),
        pytest.param(
            b"HTTP/1.1 103 Hints\r\n\r\nHTTP/1.1 101 Up\r\n\r\n",
            "unexpected 101",
            id="103-then-101",
        ),
    ],
)
def test_bad_responses_are_502(response: bytes, reason: str) -> None:
    violation = failure(response)
    assert (violation.status, violation.reason) == (502, reason)


def test_101_after_an_upgrade_request_ends_http_on_the_connection() -> None:
    """The 101 is the last event; h11 pauses after its head (see test_http1_upgrade.py)."""
    client = Http1Client()
    head = get(b"GET", (b"connection", b"upgrade"), (b"upgrade", b"websocket"))
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
    events = exchange(client, head, switching + b"\x81\x00")
    assert events == [ResponseHead(101, [(b"upgrade", b"websocket")], b"Switching Protocols")]
    assert client.switched
    assert not client.reusable
    assert client.take_leftover() == b"\x81\x00"


def test_101_after_an_upgrade_field_without_connection_upgrade_is_502() -> None:
    head = get(b"GET", (b"upgrade", b"websocket"))  # RFC 9110 §7.8: no Connection: upgrade
    violation = failure(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n", head)
    assert (violation.status, violation.reason) == (502, "unexpected 101")


def test_head_limit_boundary_is_inclusive() -> None:
    client = Http1Client(max_head_bytes=2048, max_headers=2)
    client.send(get())
    client.send(EndOfBody())
    head = b"HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 0\r\n\r\n"
    events = client.receive(head)
    assert isinstance(events[0], ResponseHead)
    assert client.reusable
