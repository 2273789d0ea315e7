"""Properties of the HTTP/1.1 adapters (DESIGN.md §3.7): chunking invariance, only
``ProtocolViolation`` escapes on arbitrary input, bounded buffering, and round trips through a
real h11 peer in both directions.
"""

from __future__ import annotations

from collections.abc import Callable

import h11
from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Event,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http1 import PIPELINE_SLACK, Http1Client, Http1Limits, Http1Server
from tests.property.strategies_http1 import (
    GeneratedRequest,
    header_lists,
    mutated,
    requests,
    splits,
    targets,
)

LIMITS = Http1Limits(max_request_line_bytes=200, max_header_bytes=600, max_headers=12)
Outcome = tuple[object, ...]


def server_outcome(reads: list[bytes]) -> Outcome:
    """Heads, the concatenated body and the end of one request, or the violation's status."""
    server = Http1Server(LIMITS)
    events: list[Event] = []
    try:
        for data in [*reads, b""]:
            events += server.receive(data)
    except ProtocolViolation as exc:
        return ("violation", exc.status)
    heads = [event for event in events if isinstance(event, RequestHead)]
    body = b"".join(event.data for event in events if isinstance(event, BodyChunk))
    ends = [event for event in events if not isinstance(event, (RequestHead, BodyChunk))]
    return ("events", heads, body, ends)


def pipelined(request: GeneratedRequest) -> bytes:
    return request.h11_bytes() + b"GET /next HTTP/1.1\r\nHost: n\r\n\r\n"


@given(st.data(), requests())
def test_any_split_of_a_valid_request_gives_the_same_events(
    data: st.DataObject, request: GeneratedRequest
) -> None:
    wire = pipelined(request)
    assert server_outcome(data.draw(splits(wire))) == server_outcome([wire])


@given(st.data(), requests())
@example(data=None, request=GeneratedRequest(b"POST", b"/", [], [b"x"], chunked=True))
def test_any_split_of_a_mutated_request_gives_the_same_outcome(
    data: st.DataObject | None, request: GeneratedRequest
) -> None:
    if data is None:  # the pinned example: a bare CR in a chunk extension, split mid-line
        wire = request.h11_bytes().replace(b"1\r\nx", b"1;a\rb\r\nx")
        reads = [wire[: wire.index(b"\rb") + 1], wire[wire.index(b"\rb") + 1 :]]
    else:
        wire = data.draw(mutated(request.h11_bytes()))
        reads = data.draw(splits(wire))
    assert server_outcome(reads) == server_outcome([wire])


def violation_status(feed: list[bytes], receive: Callable[[bytes], object]) -> int | None:
    """Feed every read then EOF; the status of the ``ProtocolViolation`` raised, if any.

    Any other exception propagates and fails the property.
    """
    try:
        for chunk in [*feed, b""]:
            receive(chunk)
    except ProtocolViolation as exc:
        return exc.status
    return None


@given(st.data(), st.binary(max_size=400) | requests().map(GeneratedRequest.h11_bytes))
def test_arbitrary_bytes_only_ever_raise_protocol_violation(
    data: st.DataObject, wire: bytes
) -> None:
    wire = data.draw(st.just(wire) | mutated(wire))
    server = Http1Server(LIMITS)

    def receive_bounded(chunk: bytes) -> None:
        server.receive(chunk)
        # Bounded buffering: never more than the head limit plus the pipelining slack.
        assert len(server._buf) <= LIMITS.max_header_bytes + PIPELINE_SLACK + len(chunk)

    status = violation_status(data.draw(splits(wire)), receive_bounded)
    assert status in {None, 400, 414, 431, 501, 505}


@given(st.data(), st.binary(max_size=400))
def test_arbitrary_response_bytes_only_ever_raise_protocol_violation(
    data: st.DataObject, response: bytes
) -> None:
    wire = data.draw(
        st.just(response) | mutated(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + response)
    )
    client = Http1Client(max_head_bytes=300, max_headers=8)
    client.send(RequestHead(b"GET", b"/", b"h", [(b"host", b"h")]))
    client.send(EndOfBody())
    assert violation_status(data.draw(splits(wire)), client.receive) in {None, 502}


@given(requests())
def test_server_parses_what_a_real_h11_client_sends(request: GeneratedRequest) -> None:
    events = Http1Server().receive(request.h11_bytes())
    head = events[0]
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.authority) == (
        request.method,
        request.target,
        b"backend.test",
    )
    assert head.headers == request.wire_headers()
    assert head.has_body == bool(request.chunked or request.body)
    assert b"".join(e.data for e in events if isinstance(e, BodyChunk)) == b"".join(request.body)
    assert events[-1] == EndOfBody(request.trailers)


@given(requests())
def test_client_output_parses_in_a_real_h11_server_to_the_same_request(
    request: GeneratedRequest,
) -> None:
    client, server = Http1Client(), h11.Connection(h11.SERVER)
    head = RequestHead(
        request.method,
        request.target,
        b"backend.test",
        request.wire_headers(),
        has_body=request.chunked or bool(request.body),
    )
    wire = client.send(head)
    for chunk in request.body:
        wire += client.send(BodyChunk(chunk))
    server.receive_data(wire + client.send(EndOfBody(request.trailers)))
    seen: list[object] = []
    while not isinstance(event := server.next_event(), h11.EndOfMessage):
        seen.append(event)
    parsed = seen[0]
    assert isinstance(parsed, h11.Request)
    assert (parsed.method, parsed.target) == (request.method, request.target)
    assert list(parsed.headers) == request.wire_headers()
    assert b"".join(bytes(e.data) for e in seen if isinstance(e, h11.Data)) == b"".join(
        request.body
    )
    assert list(event.headers) == (request.trailers if request.chunked else [])


@given(st.data(), requests(), st.binary(max_size=60))
def test_client_response_events_do_not_depend_on_read_boundaries(
    data: st.DataObject, request: GeneratedRequest, body: bytes
) -> None:
    server = h11.Connection(h11.SERVER)
    server.receive_data(request.h11_bytes())
    while not isinstance(server.next_event(), h11.EndOfMessage):
        pass
    wire = server.send(h11.Response(status_code=200, headers=[("X-A", "1")]))
    if body and request.method != b"HEAD":  # a response to HEAD has no body
        wire += server.send(h11.Data(data=body))
    wire += server.send(h11.EndOfMessage())

    def outcome(reads: list[bytes]) -> Outcome:
        client = Http1Client()
        has_body = request.chunked or bool(request.body)
        client.send(
            RequestHead(
                request.method, request.target, b"h", request.wire_headers(), has_body=has_body
            )
        )
        events: list[Event] = []
        for chunk in reads:
            events += client.receive(chunk)
        heads = [e for e in events if isinstance(e, ResponseHead)]
        return (heads, b"".join(e.data for e in events if isinstance(e, BodyChunk)), events[-1])

    assert outcome(data.draw(splits(wire))) == outcome([wire])


HOSTS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=20).filter(
    lambda host: host[0] not in "-." and host[-1] not in "-."
)


@given(
    HOSTS,
    st.none() | st.integers(min_value=1, max_value=65535),
    HOSTS,
    st.booleans(),
    targets(),
    header_lists(max_size=3),
)
@example("app.example", None, "admin.example", True, b"/admin", [])
def test_an_absolute_form_target_is_the_only_host(
    target_host: str,
    port: int | None,
    header_host: str,
    host_first: bool,
    path: bytes,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """RFC 9112 §3.2.2: the target's authority replaces the received ``Host``, so whatever
    reads the head (routing, middlewares, forwarding) sees one host, the one routed by."""
    authority = target_host.encode() + (b"" if port is None else b":%d" % port)
    host_line = (b"Host", header_host.encode())
    lines = [host_line, *extra] if host_first else [*extra, host_line]
    raw = b"GET http://" + authority + path + b" HTTP/1.1\r\n"
    raw += b"".join(name + b": " + value + b"\r\n" for name, value in lines) + b"\r\n"
    [head, end] = Http1Server().receive(raw)
    assert isinstance(head, RequestHead)
    assert isinstance(end, EndOfBody)
    assert head.authority == authority
    assert [value for name, value in head.headers if name == b"host"] == [authority]
    assert [line for line in head.headers if line[0] != b"host"] == extra
