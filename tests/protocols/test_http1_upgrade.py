"""Protocol switches in the HTTP/1.1 adapters (issue #15, "upgrade hand-over"), no trio at all.

- ``asks_for_upgrade`` and ``switch_fields`` (``http1_upgrade.py``): which requests may be
  answered with a ``101``, and what a ``101`` carries;
- ``ResponseWriter`` and ``Http1Server`` with both request-head engines: the ``101`` is written
  as given, ends HTTP on the connection, and the bytes after the request head are handed out
  once; a real ``h11.Connection(CLIENT)`` reads what we wrote and pauses where we switched;
- ``Http1Client`` and ``LlhttpClient``: a ``101`` to an upgrade request is the last event, the
  bytes after its head are kept for the hand-over, a ``101`` to anything else stays a 502.
"""

from __future__ import annotations

from collections.abc import Callable

import h11
import pytest

from a3s_gateway.protocols.events import (
    EndOfBody,
    Event,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.http1 import Http1Client, Http1Server
from a3s_gateway.protocols.http1_engines import Http1Parser, request_head_parser
from a3s_gateway.protocols.http1_llhttp import LlhttpClient
from a3s_gateway.protocols.http1_response import ResponseWriter
from a3s_gateway.protocols.http1_upgrade import asks_for_upgrade, switch_fields

ENGINES: list[Http1Parser] = ["llhttp", "h11"]
Client = Http1Client | LlhttpClient

UPGRADE = b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
SWITCH_FIELDS: Headers = [(b"upgrade", b"websocket"), (b"connection", b"Upgrade")]
SWITCH = ResponseHead(101, SWITCH_FIELDS, b"Switching Protocols")
SWITCH_WIRE = (
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\r\n"
)
FRAME = b"\x81\x05hello"  # a first WebSocket frame, sent right behind the request


# --- which requests ask for a switch -------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "version", "headers", "has_body", "expected"),
    [
        (b"GET", b"1.1", [(b"connection", b"upgrade"), (b"upgrade", b"websocket")], False, True),
        (
            b"GET",
            b"1.1",
            [(b"connection", b"keep-alive, Upgrade"), (b"upgrade", b"a, b")],
            False,
            True,
        ),
        (
            b"GET",
            b"1.1",
            [(b"upgrade", b"x"), (b"connection", b"a"), (b"connection", b"UPGRADE")],
            False,
            True,
        ),
        (b"GET", b"1.1", [(b"connection", b"upgrade"), (b"upgrade", b" , ")], False, False),
        (b"GET", b"1.1", [(b"connection", b"upgrade")], False, False),
        (b"GET", b"1.1", [(b"upgrade", b"websocket")], False, False),  # RFC 9110 §7.8
        (b"GET", b"1.1", [(b"connection", b"upgraded"), (b"upgrade", b"websocket")], False, False),
        (b"GET", b"1.0", [(b"connection", b"upgrade"), (b"upgrade", b"websocket")], False, False),
        (b"POST", b"1.1", [(b"connection", b"upgrade"), (b"upgrade", b"websocket")], False, False),
        (b"GET", b"1.1", [(b"connection", b"upgrade"), (b"upgrade", b"websocket")], True, False),
    ],
)
def test_which_requests_ask_for_a_switch(
    method: bytes, version: bytes, headers: Headers, has_body: bool, expected: bool
) -> None:
    assert asks_for_upgrade(method, version, headers, has_body) is expected


def test_a_101_carries_no_framing_fields_and_must_name_a_protocol() -> None:
    fields: Headers = [(b"content-length", b"0"), (b"upgrade", b"ws"), (b"transfer-encoding", b"x")]
    assert switch_fields(fields) == [(b"upgrade", b"ws")]
    assert switch_fields([(b"connection", b"upgrade")]) is None
    assert switch_fields([(b"upgrade", b"")]) is None


# --- the response writer -------------------------------------------------------------------


def test_the_writer_writes_a_101_as_given_and_nothing_after_it() -> None:
    writer = ResponseWriter(b"GET", b"1.1", keep_alive=True, upgrade=True)
    fields = [*SWITCH_FIELDS, (b"content-length", b"0"), (b"x-id", b"7")]
    wire = writer.head(101, fields, b"", close=True)  # no Connection: close after a switch
    assert wire == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"upgrade: websocket\r\nconnection: Upgrade\r\nx-id: 7\r\n\r\n"
    )
    assert writer.switched
    assert not writer.done
    assert not writer.keep_alive
    calls: list[Callable[[], object]] = [
        lambda: writer.data(b"x"),
        lambda: writer.end([]),
        lambda: writer.head(200, [], b"", close=False),
        lambda: writer.informational(100, [], b""),
    ]
    for call in calls:
        with pytest.raises(ProtocolViolation) as caught:
            call()
        assert caught.value.status == 500


@pytest.mark.parametrize(
    ("upgrade", "fields"),
    [(False, SWITCH_FIELDS), (True, [(b"connection", b"upgrade")])],
    ids=["no-upgrade-request", "no-upgrade-field"],
)
def test_the_writer_refuses_a_101_out_of_place(upgrade: bool, fields: Headers) -> None:
    writer = ResponseWriter(b"GET", b"1.1", keep_alive=True, upgrade=upgrade)
    with pytest.raises(ProtocolViolation) as caught:
        writer.head(101, fields, b"", close=False)
    assert caught.value.status == 500
    assert not writer.switched
    assert writer.head(200, [(b"content-length", b"0")], b"", close=False)  # still usable


# --- the server adapter --------------------------------------------------------------------


def server(engine: Http1Parser) -> Http1Server:
    return Http1Server(heads=request_head_parser(engine))


def switched(adapter: Http1Server) -> bool:
    """Read afresh (mypy would carry a narrowed property across a state change)."""
    return adapter.switched


@pytest.mark.parametrize("engine", ENGINES)
def test_a_101_hands_over_the_bytes_behind_the_request_once(engine: Http1Parser) -> None:
    adapter = server(engine)
    events = adapter.receive(UPGRADE + FRAME[:3])
    assert isinstance(events[0], RequestHead)
    assert events[1:] == [EndOfBody()]
    assert adapter.receive(FRAME[3:]) == []  # still buffered, not parsed
    assert not switched(adapter)
    wire = adapter.send(SWITCH)
    assert wire == SWITCH_WIRE
    assert switched(adapter)
    assert not adapter.keep_alive
    assert adapter.take_leftover() == FRAME
    assert adapter.take_leftover() == b""
    # A real h11 client reads the 101 and stops there: the rest is the new protocol's.
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method="GET", target="/ws", headers=[*SWITCH_FIELDS, (b"host", b"h")]))
    client.send(h11.EndOfMessage())
    client.receive_data(wire + b"\x82\x00")
    response = client.next_event()
    assert isinstance(response, h11.InformationalResponse)
    assert response.status_code == 101
    assert client.next_event() is h11.PAUSED
    assert client.trailing_data == (b"\x82\x00", False)


@pytest.mark.parametrize("engine", ENGINES)
def test_nothing_is_parsed_or_written_after_a_switch(engine: Http1Parser) -> None:
    adapter = server(engine)
    adapter.receive(UPGRADE)
    adapter.send(SWITCH)
    calls: list[Callable[[], object]] = [
        lambda: adapter.receive(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"),
        lambda: adapter.receive(b""),
        lambda: adapter.send(EndOfBody()),
        adapter.start_next_cycle,
    ]
    for call in calls:
        with pytest.raises(ProtocolViolation) as caught:
            call()
        assert caught.value.status == 500
    assert switched(adapter)  # a caller's mistake does not lose the bytes
    assert adapter.take_leftover() == b""


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", id="plain"),
        pytest.param(
            b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n", id="no-connection"
        ),
        pytest.param(UPGRADE.replace(b"HTTP/1.1", b"HTTP/1.0"), id="http-1.0"),
        pytest.param(
            b"POST / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
            b"Content-Length: 2\r\n\r\nhi",
            id="with-body",
        ),
    ],
)
def test_a_101_to_a_request_that_asked_for_no_switch_is_a_500(
    engine: Http1Parser, request_bytes: bytes
) -> None:
    adapter = server(engine)
    adapter.receive(request_bytes)
    with pytest.raises(ProtocolViolation) as caught:
        adapter.send(SWITCH)
    assert caught.value.status == 500
    assert not switched(adapter)
    with pytest.raises(ProtocolViolation):
        adapter.take_leftover()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_declined_upgrade_goes_on_as_http(engine: Http1Parser) -> None:
    adapter = server(engine)
    adapter.receive(UPGRADE + b"GET /next HTTP/1.1\r\nHost: h\r\n\r\n")
    adapter.send(ResponseHead(200, [(b"content-length", b"0")]))
    adapter.send(EndOfBody())
    assert adapter.keep_alive
    following = adapter.start_next_cycle()
    assert isinstance(following[0], RequestHead)
    assert following[0].target == b"/next"
    with pytest.raises(ProtocolViolation):
        adapter.take_leftover()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_101_write_switches_nothing(engine: Http1Parser) -> None:
    adapter = server(engine)
    adapter.receive(UPGRADE + FRAME)
    adapter.send(SWITCH)
    adapter.send_failed()
    assert not switched(adapter)
    assert not adapter.keep_alive


# --- the client adapters -------------------------------------------------------------------

CLIENTS: list[Callable[..., Client]] = [LlhttpClient, Http1Client]  # ENGINES' order
WS_REQUEST = RequestHead(
    b"GET", b"/ws", b"h", [(b"host", b"h"), (b"connection", b"upgrade"), (b"upgrade", b"websocket")]
)
UPSTREAM_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"
)


def sent(new: Callable[..., Client], head: RequestHead = WS_REQUEST) -> Client:
    client = new()
    client.send(head)
    client.send(EndOfBody())
    return client


def client_switched(client: Client) -> bool:
    return client.switched


@pytest.mark.parametrize("new", CLIENTS, ids=ENGINES)
def test_the_request_is_written_as_any_other(new: Callable[..., Client]) -> None:
    wire = new().send(WS_REQUEST)
    assert (
        wire == b"GET /ws HTTP/1.1\r\nhost: h\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"
    )


@pytest.mark.parametrize("new", CLIENTS, ids=ENGINES)
def test_a_101_to_an_upgrade_request_is_the_last_event(new: Callable[..., Client]) -> None:
    client = sent(new)
    response = b"HTTP/1.1 100 Continue\r\n\r\n" + UPSTREAM_101 + FRAME
    events = client.receive(response)
    expected: list[Event] = [
        Informational(100, [], b"Continue"),
        ResponseHead(
            101, [(b"upgrade", b"websocket"), (b"connection", b"upgrade")], b"Switching Protocols"
        ),
    ]
    assert events == expected
    assert client_switched(client)
    assert not client.reusable
    assert client.received_any
    assert client.take_leftover() == FRAME
    assert client.take_leftover() == b""
    for data in (b"more", b""):
        with pytest.raises(ProtocolViolation) as caught:
            client.receive(data)
        assert caught.value.status == 500
    with pytest.raises(ProtocolViolation):
        client.start_next_cycle()


@pytest.mark.parametrize("new", CLIENTS, ids=ENGINES)
def test_a_101_read_byte_by_byte(new: Callable[..., Client]) -> None:
    client = sent(new)
    wire = UPSTREAM_101 + FRAME
    events: list[Event] = []
    at = 0
    while not client_switched(client):
        events += client.receive(wire[at : at + 1])
        at += 1
    assert at == len(UPSTREAM_101)
    assert [type(event) for event in events] == [ResponseHead]
    assert client.take_leftover() == b""  # the rest was never read


@pytest.mark.parametrize("new", CLIENTS, ids=ENGINES)
@pytest.mark.parametrize(
    "head",
    [
        pytest.param(RequestHead(b"GET", b"/", b"h", [(b"host", b"h")]), id="plain"),
        pytest.param(
            RequestHead(b"GET", b"/", b"h", [(b"host", b"h"), (b"upgrade", b"websocket")]),
            id="no-connection-upgrade",
        ),
        pytest.param(
            RequestHead(
                b"POST",
                b"/",
                b"h",
                [(b"host", b"h"), (b"connection", b"upgrade"), (b"upgrade", b"websocket")],
            ),
            id="post",
        ),
    ],
)
def test_an_unsolicited_101_stays_a_502(new: Callable[..., Client], head: RequestHead) -> None:
    client = sent(new, head)
    with pytest.raises(ProtocolViolation) as caught:
        client.receive(UPSTREAM_101 + FRAME)
    assert (caught.value.status, caught.value.reason) == (502, "unexpected 101")
    assert not client_switched(client)
    with pytest.raises(ProtocolViolation):
        client.take_leftover()


@pytest.mark.parametrize("new", CLIENTS, ids=ENGINES)
def test_a_declined_upgrade_leaves_the_connection_reusable(new: Callable[..., Client]) -> None:
    client = sent(new)
    events = client.receive(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno")
    assert isinstance(events[0], ResponseHead)
    assert events[-1] == EndOfBody()
    assert not client_switched(client)
    assert client.reusable
    client.start_next_cycle()
    client.send(RequestHead(b"GET", b"/", b"h", [(b"host", b"h")]))
    with pytest.raises(ProtocolViolation) as caught:  # the next request asked for no switch
        client.receive(UPSTREAM_101)
    assert caught.value.reason == "unexpected 101"


@pytest.mark.parametrize("new", CLIENTS, ids=ENGINES)
def test_a_101_head_obeys_the_head_limits(new: Callable[..., Client]) -> None:
    client = new(max_head_bytes=1024, max_headers=2)
    client.send(WS_REQUEST)
    with pytest.raises(ProtocolViolation) as caught:
        client.receive(UPSTREAM_101.replace(b"\r\n\r\n", b"\r\nX: 1\r\n\r\n"))
    assert (caught.value.status, caught.value.reason) == (502, "too many response header fields")
