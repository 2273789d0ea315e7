"""Properties of the HTTP/1.1 protocol switch (issue #15): the hand-over's leftover bytes.

Server side: for an upgrade request followed by arbitrary bytes of the new protocol, cut into
arbitrary reads, ``Http1Server`` gives the same ``RequestHead`` with either request-head engine,
writes the same ``101``, and hands over exactly the bytes after the head that it received (those
not yet read stay in the stream). The engines' own readings agree: h11 pauses after the request
and keeps those bytes as ``trailing_data``; llhttp stops with ``HttpParserUpgrade`` at the
offset where they begin.

Client side: for an upgrade request answered by interim responses, a ``101`` and arbitrary bytes,
cut anyhow, ``Http1Client`` and ``LlhttpClient`` give the same events (the ``101`` last) and the
same leftover, which is everything after the ``101``'s head that they read. For any response to
an upgrade request (the differential corpus of ``test_http1_differential.py``, malformed ``101``
heads included) they agree as they do for other requests: the same switch, the same events, or
both 502 (but where h11 is laxer by design, ``STRICTER``).
"""

from __future__ import annotations

from typing import Final

import h11
import httptools
from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.protocols.events import (
    EndOfBody,
    Event,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.http1 import Http1Client, Http1Server
from a3s_gateway.protocols.http1_heads import H11Heads, LlhttpHeads
from a3s_gateway.protocols.http1_llhttp import LlhttpClient
from tests.property.strategies_differential import response_bytes
from tests.property.strategies_http1 import header_lists, targets
from tests.property.test_http1_differential import Outcome, assert_same_or_stricter, joined

SWITCH: Final = ResponseHead(101, [(b"upgrade", b"websocket"), (b"connection", b"upgrade")])
CONNECTION_VALUES: Final = [b"upgrade", b"Upgrade", b"keep-alive, Upgrade", b"UPGRADE , x-y"]
UPGRADE_VALUES: Final = [b"websocket", b"h2c", b"foo/1, bar", b"WebSocket"]
#: A first WebSocket frame, and bytes that look like HTTP but belong to the new protocol.
NEW_PROTOCOL: Final = st.sampled_from([b"", b"\x81\x05hello", b"GET / HTTP/1.1\r\n\r\n"]) | (
    st.binary(max_size=120)
)


#: Where reads end (taken modulo the length of the bytes cut); an explicit example can name them.
CUTS: Final = st.lists(st.integers(min_value=1, max_value=1000), max_size=12)


def cut(wire: bytes, points: list[int]) -> list[bytes]:
    """``wire`` as consecutive non-empty reads ending at ``points`` (modulo its length)."""
    ends = sorted({point % len(wire) for point in points} - {0} | {len(wire)})
    return [wire[start:end] for start, end in zip([0, *ends], ends, strict=False)]


def cased(name: bytes) -> st.SearchStrategy[bytes]:
    return st.sampled_from([name, name.capitalize(), name.upper()])


@st.composite
def upgrade_requests(draw: st.DrawFn) -> bytes:
    """The head of an HTTP/1.1 GET that asks for a switch: ``Connection`` with the ``upgrade``
    option and an ``Upgrade`` field, in any order among other fields, names in any case."""
    lines = [
        (draw(cased(b"host")), b"example.com"),
        (draw(cased(b"connection")), draw(st.sampled_from(CONNECTION_VALUES))),
        (draw(cased(b"upgrade")), draw(st.sampled_from(UPGRADE_VALUES))),
        *draw(header_lists(max_size=4)),
    ]
    lines = draw(st.permutations(lines))
    fields = b"".join(b"%b: %b\r\n" % line for line in lines)
    return b"GET %b HTTP/1.1\r\n%b\r\n" % (draw(targets()), fields)


def serve_until_switch(
    server: Http1Server, reads: list[bytes], extra: int
) -> tuple[RequestHead, bytes, bytes, int]:
    """Feed reads until the head, then ``extra`` more; answer 101. The head, the 101's bytes,
    the hand-over's leftover and how many reads were fed."""
    events: list[Event] = []
    fed = 0
    while not events:
        events = server.receive(reads[fed])
        fed += 1
    for data in reads[fed : fed + extra]:  # arrived before the 101 (bounded by ``reads``)
        assert server.receive(data) == []
        fed += 1
    head = events[0]
    assert isinstance(head, RequestHead)
    assert events[1:] == [EndOfBody()]
    return head, server.send(SWITCH), server.take_leftover(), fed


def h11_trailing(reads: list[bytes]) -> tuple[h11.Request, bytes]:
    """h11's server after the same reads: the request, and the data it paused before."""
    conn = h11.Connection(h11.SERVER)
    request = None
    for data in reads:
        conn.receive_data(data)
    while (event := conn.next_event()) is not h11.PAUSED:
        assert event is not h11.NEED_DATA
        if isinstance(event, h11.Request):
            request = event
    assert isinstance(request, h11.Request)
    return request, conn.trailing_data[0]


def llhttp_trailing(reads: list[bytes]) -> bytes:
    """llhttp fed the same reads: the bytes from where it stopped with ``HttpParserUpgrade``."""
    parser = httptools.HttpRequestParser(object())
    for index, data in enumerate(reads):
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset: int = upgrade.args[0]
            return data[offset:] + b"".join(reads[index + 1 :])
    raise AssertionError("llhttp did not see an upgrade")


WS_HEAD: Final = b"GET / HTTP/1.1\r\nhost: h\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"


@given(upgrade_requests(), NEW_PROTOCOL, CUTS, st.integers(min_value=0, max_value=12))
@example(WS_HEAD, b"", [], 0)
@example(WS_HEAD, b"\x81\x05hello", [len(WS_HEAD) - 1, len(WS_HEAD) + 1], 1)  # frame in two
@example(WS_HEAD, b"\x81\x05hello", [3, 60], 0)  # the frame with the head's last read
def test_both_engines_hand_over_the_same_bytes_after_any_split(
    head: bytes, after: bytes, points: list[int], extra: int
) -> None:
    reads = cut(head + after, points)
    outcomes = []
    for engine in (LlhttpHeads(), H11Heads()):
        server = Http1Server(heads=engine)
        parsed, written, leftover, fed = serve_until_switch(server, reads, extra)
        assert leftover + b"".join(reads[fed:]) == after
        assert leftover == b"".join(reads[:fed])[len(head) :]
        outcomes.append((parsed, written))
        request, trailing = h11_trailing(reads[:fed])
        assert trailing == leftover
        assert (request.method, request.target) == (parsed.method, parsed.target)
        assert list(request.headers) == parsed.headers
    assert outcomes[0] == outcomes[1]
    assert llhttp_trailing(reads) == after


# --- the client side ---------------------------------------------------------------------

REQUEST: Final = RequestHead(
    b"GET",
    b"/ws",
    b"up",
    [(b"host", b"up"), (b"connection", b"upgrade"), (b"upgrade", b"websocket")],
)
INTERIM: Final = [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
]


@st.composite
def switching_heads(draw: st.DrawFn) -> bytes:
    """Interim responses, then a ``101`` with ``Upgrade``, ``Connection`` and other fields."""
    interim = b"".join(draw(st.lists(st.sampled_from(INTERIM), max_size=2)))
    line = draw(
        st.sampled_from([b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.1 101 ", b"HTTP/1.1 101"])
    )
    lines: Headers = [
        (draw(cased(b"upgrade")), b"websocket"),
        (draw(cased(b"connection")), b"Upgrade"),
        *draw(header_lists(max_size=4)),
    ]
    fields = b"".join(b"%b: %b\r\n" % line for line in draw(st.permutations(lines)))
    return interim + line + b"\r\n" + fields + b"\r\n"


def client_until_switch(
    client: Http1Client | LlhttpClient, reads: list[bytes]
) -> tuple[list[Event], bytes, int]:
    """Send the upgrade request, feed reads until the switch: events, leftover, reads fed."""
    client.send(REQUEST)
    client.send(EndOfBody())
    events: list[Event] = []
    fed = 0
    while not client.switched:
        events += client.receive(reads[fed])
        fed += 1
    return events, client.take_leftover(), fed


SWITCHING: Final = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
)


@given(switching_heads(), NEW_PROTOCOL, CUTS)
@example(SWITCHING, b"HTTP/1.1 200 OK\r\n\r\n", [])  # looks like HTTP, is not
@example(INTERIM[0] + SWITCHING, b"\x81\x05hello", [10, len(INTERIM[0]) + len(SWITCHING) + 2])
def test_both_clients_hand_over_the_same_bytes_after_any_split(
    head: bytes, after: bytes, points: list[int]
) -> None:
    reads = cut(head + after, points)
    reference = client_until_switch(Http1Client(), reads)
    events, leftover, fed = reference
    assert isinstance(events[-1], ResponseHead)
    assert events[-1].status == 101
    assert leftover + b"".join(reads[fed:]) == after
    assert client_until_switch(LlhttpClient(), reads) == reference


def switch_outcome(client: Http1Client | LlhttpClient, reads: list[bytes]) -> Outcome:
    """The upgrade request, then the reads and EOF: the switch with its events and leftover
    (the bytes read after the ``101`` and those never read), the events, or the refusal."""
    client.send(REQUEST)
    client.send(EndOfBody())
    events: list[Event] = []
    try:
        for index, data in enumerate([*reads, b""]):
            events += client.receive(data)
            if client.switched:
                rest = client.take_leftover() + b"".join(reads[index + 1 :])
                return ("switched", joined(events), rest)
    except ProtocolViolation as violation:
        return ("raised", violation.status, violation.reason, joined(events))
    return ("events", joined(events), client.reusable, client.received_any)


@given(response_bytes(), CUTS, st.sampled_from([(1024, 20), (60, 3)]))
@example(b"HTTP/1.1 101 \nUpgrade: a\nContent-Length: 5\n\nhello", [7], (1024, 20))
@example(b"HTTP/1.1 101 OK\r\nTransfer-Encoding: gzip\r\n\r\n", [], (1024, 20))
@example(b"HTTP/1.1 101 a\x01b\r\n\r\n", [], (60, 3))
# llhttp refuses a control character in a value (STRICTER), h11 switches: "invalid head" then,
# not "unexpected 101" (a 101 was asked for).
@example(b"HTTP/2.0 101  x \r\nContent-Length: 5, 5\r\nX: a\x01\nX: \r\n\r\n", [], (1024, 20))
def test_both_clients_read_any_response_to_an_upgrade_request_alike(
    wire: bytes, points: list[int], limits: tuple[int, int]
) -> None:
    reads = cut(wire, points) if wire else []
    max_head_bytes, max_headers = limits
    expected = switch_outcome(
        Http1Client(max_head_bytes=max_head_bytes, max_headers=max_headers), reads
    )
    got = switch_outcome(
        LlhttpClient(max_head_bytes=max_head_bytes, max_headers=max_headers), reads
    )
    assert_same_or_stricter(expected, got)
