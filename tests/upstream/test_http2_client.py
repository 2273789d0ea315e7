"""The HTTP/2 client adapter against h2's own server side as the peer (SPEC §5.7, §5.10).

No sockets and no event loop: the bytes each side queues are handed to the other. The peer is
an ``h2`` server ``H2Connection``, configured per test (its windows, its stream limit, and for
malformed responses no outbound validation); frames h2 cannot send after its own GOAWAY are
serialised with ``hyperframe``.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import DataFrame, GoAwayFrame

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http2_client import (
    CANCEL,
    CONNECTION_WINDOW,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CAP,
    STREAM_WINDOW,
    ClientEvent,
    GoAway,
    Http2Client,
    PeerSettings,
    StreamFailed,
    StreamReset,
    WindowOpened,
    error_name,
)

GET = RequestHead(b"GET", b"/a?b", b"ignored.test", [(b"host", b"origin.test")])


class Pair:
    """Our client and an h2 server peer, wired by hand."""

    def __init__(
        self,
        *,
        secure: bool = False,
        settings: dict[SettingCodes, int] | None = None,
        strict: bool = True,
    ) -> None:
        self.client = Http2Client(secure=secure)
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=strict,
            normalize_outbound_headers=strict,
        )
        self.server = h2.connection.H2Connection(config=config)
        if settings:
            self.server.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        self.client.start()
        self.server.initiate_connection()
        self.first_server_events = self.to_server()
        self.first_client_events = self.to_client()
        self.to_server()  # the SETTINGS acknowledgement

    def to_server(self) -> list[h2.events.Event]:
        return self.server.receive_data(self.client.data_to_send())

    def to_client(self, extra: bytes = b"") -> list[ClientEvent]:
        return self.client.receive(self.server.data_to_send() + extra)

    def request(self, head: RequestHead = GET, *, end_stream: bool = True) -> int:
        stream_id = self.client.open_stream(head, end_stream=end_stream)
        self.to_server()
        return stream_id


def _of(events: list[h2.events.Event], kind: type[h2.events.Event]) -> list[h2.events.Event]:
    return [event for event in events if isinstance(event, kind)]


# --- the connection's start ---


def test_start_sends_preface_settings_and_the_connection_window() -> None:
    pair = Pair()
    (settings,) = _of(pair.first_server_events, h2.events.RemoteSettingsChanged)
    assert isinstance(settings, h2.events.RemoteSettingsChanged)
    values = {code: change.new_value for code, change in settings.changed_settings.items()}
    assert values[SettingCodes.ENABLE_PUSH] == 0
    assert values[SettingCodes.INITIAL_WINDOW_SIZE] == STREAM_WINDOW
    (window,) = _of(pair.first_server_events, h2.events.WindowUpdated)
    assert isinstance(window, h2.events.WindowUpdated)
    assert (window.stream_id, window.delta) == (0, CONNECTION_WINDOW - 65535)
    assert PeerSettings(100) in pair.first_client_events  # h2's default limit
    assert pair.client.max_frame == 16384


def test_peer_settings_report_the_stream_limit_capped() -> None:
    pair = Pair(settings={SettingCodes.MAX_CONCURRENT_STREAMS: 5})
    assert PeerSettings(5) in pair.first_client_events
    pair.server.update_settings({SettingCodes.MAX_CONCURRENT_STREAMS: 2**31 - 1})
    assert pair.to_client() == [PeerSettings(STREAM_CAP)]
    assert pair.client.max_concurrent_streams == STREAM_CAP


# --- requests ---


def test_request_head_becomes_pseudo_headers_without_connection_fields() -> None:
    pair = Pair()
    fields = [
        (b"host", b"origin.test:8080"),
        (b"connection", b"keep-alive"),
        (b"keep-alive", b"timeout=5"),
        (b"proxy-connection", b"close"),
        (b"transfer-encoding", b"chunked"),
        (b"upgrade", b"websocket"),
        (b"te", b"Trailers"),
        (b"x-a", b"1"),
        (b"host", b"second.test"),
    ]
    head = RequestHead(b"POST", b"/p?q=1", b"client.test", fields, has_body=True)
    stream_id = pair.client.open_stream(head, end_stream=False)
    (received,) = pair.to_server()
    assert isinstance(received, h2.events.RequestReceived)
    assert received.stream_id == stream_id == 1
    assert received.headers == [
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"origin.test:8080"),
        (b":path", b"/p?q=1"),
        (b"te", b"trailers"),
        (b"x-a", b"1"),
    ]
    assert received.stream_ended is None


def test_tls_scheme_authority_fallback_and_te_other_than_trailers_dropped() -> None:
    pair = Pair(secure=True)
    head = RequestHead(b"GET", b"/", b"fallback.test", [(b"te", b"gzip")])
    pair.client.open_stream(head, end_stream=True)
    (received, ended) = pair.to_server()
    assert isinstance(received, h2.events.RequestReceived)
    assert isinstance(ended, h2.events.StreamEnded)
    assert received.headers == [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":authority", b"fallback.test"),
        (b":path", b"/"),
    ]


def test_request_body_and_trailers() -> None:
    pair = Pair()
    stream_id = pair.request(end_stream=False)
    assert pair.client.send_data(stream_id, b"abc") == 3
    pair.client.send_trailers(stream_id, [(b"grpc-x", b"1"), (b"te", b"x"), (b":bad", b"y")])
    data, trailers, ended = pair.to_server()
    assert isinstance(data, h2.events.DataReceived)
    assert data.data == b"abc"
    assert isinstance(trailers, h2.events.TrailersReceived)
    assert trailers.headers == [(b"grpc-x", b"1")]
    assert isinstance(ended, h2.events.StreamEnded)


def test_request_ends_with_empty_data_when_no_trailers_are_left() -> None:
    pair = Pair()
    first = pair.request(end_stream=False)
    second = pair.request(end_stream=False)
    pair.client.send_trailers(first, [(b"connection", b"close")])
    assert pair.client.send_data(second, b"xy", end_stream=True) == 2
    events = pair.to_server()
    ended = {event.stream_id for event in _of(events, h2.events.StreamEnded)}  # type: ignore[attr-defined]
    assert ended == {first, second}
    with pytest.raises(ProtocolViolation) as caught:
        pair.client.send_data(first, b"late")
    assert caught.value.status == 500
    with pytest.raises(ProtocolViolation):
        pair.client.send_trailers(first, [])


def test_open_stream_beyond_the_peer_limit_is_a_violation() -> None:
    pair = Pair(settings={SettingCodes.MAX_CONCURRENT_STREAMS: 1})
    pair.request(end_stream=False)
    with pytest.raises(ProtocolViolation) as caught:
        pair.client.open_stream(GET, end_stream=True)
    assert (caught.value.status, caught.value.reason) == (502, "request not sendable over HTTP/2")


# --- flow control when sending ---


def test_sending_never_exceeds_the_peer_windows_or_frame_size() -> None:
    pair = Pair(settings={SettingCodes.INITIAL_WINDOW_SIZE: 100})
    stream_id = pair.request(end_stream=False)
    assert pair.client.send_window(stream_id) == 100
    body = bytes(range(256)) * 4
    assert pair.client.send_data(stream_id, body, end_stream=True) == 100
    assert pair.client.send_data(stream_id, body[100:], end_stream=True) == 0
    received = bytearray()
    for _ in range(40):
        events = pair.to_server()
        for event in _of(events, h2.events.DataReceived):
            assert isinstance(event, h2.events.DataReceived)
            assert len(event.data) <= 100
            received += event.data
            pair.server.acknowledge_received_data(event.flow_controlled_length, stream_id)
        if _of(events, h2.events.StreamEnded):
            break
        opened = pair.to_client()
        assert WindowOpened(stream_id) in opened or WindowOpened(0) in opened
        sent = len(received)
        pair.client.send_data(stream_id, body[sent:], end_stream=True)
    assert bytes(received) == body


def test_large_bodies_go_out_in_frames_of_at_most_max_frame() -> None:
    pair = Pair()
    stream_id = pair.request(end_stream=False)
    assert pair.client.send_data(stream_id, memoryview(b"z" * 40000)) == 40000
    sizes = [len(e.data) for e in _of(pair.to_server(), h2.events.DataReceived)]  # type: ignore[attr-defined]
    assert sizes == [16384, 16384, 7232]


def test_a_settings_change_of_the_initial_window_opens_every_stream() -> None:
    pair = Pair(settings={SettingCodes.INITIAL_WINDOW_SIZE: 0})
    stream_id = pair.request(end_stream=False)
    assert pair.client.send_data(stream_id, b"abc") == 0
    pair.server.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 10})
    events = pair.to_client()
    assert WindowOpened(0) in events
    assert pair.client.send_window(stream_id) == 10


# --- responses ---


def test_response_head_body_and_trailers() -> None:
    pair = Pair()
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [(b":status", b"200"), (b"content-type", b"text/x")])
    pair.server.send_data(stream_id, b"hi")
    pair.server.send_headers(stream_id, [(b"grpc-status", b"0")], end_stream=True)
    assert pair.to_client() == [
        ResponseHead(200, [(b"content-type", b"text/x")], http_version=b"2", stream_id=1),
        BodyChunk(b"hi", 1),
        EndOfBody([(b"grpc-status", b"0")], 1),
    ]


def test_informational_then_a_head_that_ends_the_stream() -> None:
    pair = Pair()
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [(b":status", b"103"), (b"link", b"</a>")])
    pair.server.send_headers(stream_id, [(b":status", b"204")], end_stream=True)
    assert pair.to_client() == [
        Informational(103, [(b"link", b"</a>")], stream_id=1),
        ResponseHead(204, [], http_version=b"2", stream_id=1),
        EndOfBody([], 1),
    ]


def test_padding_is_acknowledged_at_once_and_not_delivered() -> None:
    pair = Pair()
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [(b":status", b"200")])
    pair.server.send_data(stream_id, b"abc", pad_length=200)
    events = pair.to_client()
    assert events[-1] == BodyChunk(b"abc", 1)


def test_received_data_is_acknowledged_only_when_the_consumer_took_it() -> None:
    pair = Pair()
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [(b":status", b"200")])
    frame = pair.server.max_outbound_frame_size
    while pair.server.local_flow_control_window(stream_id):
        size = min(frame, pair.server.local_flow_control_window(stream_id))
        pair.server.send_data(stream_id, b"d" * size)
    received = sum(len(e.data) for e in pair.to_client() if isinstance(e, BodyChunk))
    assert received == STREAM_WINDOW
    assert _of(pair.to_server(), h2.events.WindowUpdated) == []  # nothing re-granted
    assert pair.server.local_flow_control_window(stream_id) == 0
    pair.client.acknowledge(stream_id, received)
    updates = _of(pair.to_server(), h2.events.WindowUpdated)
    # The connection's window (CONNECTION_WINDOW) is re-granted after half of it was consumed.
    assert {e.stream_id for e in updates} == {stream_id}  # type: ignore[attr-defined]
    assert pair.server.local_flow_control_window(stream_id) == STREAM_WINDOW


# --- resets and GOAWAY ---


def test_peer_reset_and_our_reset() -> None:
    pair = Pair()
    first = pair.request()
    second = pair.request()
    pair.server.reset_stream(first, ErrorCodes.REFUSED_STREAM)
    assert pair.to_client() == [StreamReset(first, REFUSED_STREAM)]
    pair.client.reset(second)
    pair.client.reset(first)  # already closed: nothing
    (reset,) = pair.to_server()
    assert isinstance(reset, h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (second, CANCEL)
    assert (error_name(CANCEL), error_name(999)) == ("CANCEL", "999")


def test_streams_up_to_the_goaway_last_stream_id_still_complete() -> None:
    pair = Pair()
    first = pair.request()
    second = pair.request()
    pair.server.send_headers(first, [(b":status", b"200")])
    goaway = GoAwayFrame(0)
    goaway.last_stream_id = first
    data = DataFrame(first)
    data.data = b"after"
    data.flags.add("END_STREAM")
    pair.client.open_stream(GET, end_stream=True)  # queued before the GOAWAY arrives
    events = pair.to_client(goaway.serialize() + data.serialize())
    assert events == [
        ResponseHead(200, [], http_version=b"2", stream_id=first),
        GoAway(first, 0),
        BodyChunk(b"after", first),
        EndOfBody([], first),
    ]
    assert second not in {e.stream_id for e in events if isinstance(e, ResponseHead)}
    third = [e for e in pair.to_server() if isinstance(e, h2.events.RequestReceived)]
    assert [e.stream_id for e in third] == [5]  # our queued output survived the GOAWAY


def test_goaway_found_when_fed_one_byte_at_a_time() -> None:
    pair = Pair()
    first = pair.request()
    pair.server.send_headers(first, [(b":status", b"200")])
    goaway = GoAwayFrame(0)
    goaway.last_stream_id = first
    goaway.error_code = 2
    goaway.additional_data = b"debug"
    data = DataFrame(first)
    data.data = b"x"
    data.flags.add("END_STREAM")
    wire = pair.server.data_to_send() + goaway.serialize() + data.serialize()
    events: list[ClientEvent] = []
    for index in range(len(wire)):
        events += pair.client.receive(wire[index : index + 1])
    assert events == [
        ResponseHead(200, [], http_version=b"2", stream_id=first),
        GoAway(first, 2),
        BodyChunk(b"x", first),
        EndOfBody([], first),
    ]


# --- malformed responses and connection errors ---


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([(b"x-a", b"1")], "missing :status in HTTP/2 response"),
        ([(b":status", b"20")], "invalid :status in HTTP/2 response"),
        ([(b":status", b"600")], "invalid :status in HTTP/2 response"),
        ([(b":status", b"101")], "invalid :status in HTTP/2 response"),
        ([(b":status", b"200"), (b"X-Upper", b"1")], "invalid field in HTTP/2 response"),
        ([(b":status", b"200"), (b"x-a", b" lead")], "invalid field in HTTP/2 response"),
        ([(b":status", b"200"), (b"x-a", b"a\x00b")], "invalid field in HTTP/2 response"),
        (
            [(b":status", b"200"), (b"connection", b"close")],
            "connection-specific field in HTTP/2 response",
        ),
        ([(b":status", b"200"), (b"te", b"gzip")], "connection-specific field in HTTP/2 response"),
        (
            [(b":status", b"200"), (b":status", b"200")],
            "misplaced or unknown pseudo-header in HTTP/2 response",
        ),
        (
            [(b"x-a", b"1"), (b":status", b"200")],
            "misplaced or unknown pseudo-header in HTTP/2 response",
        ),
        (
            [(b":status", b"200"), (b":path", b"/")],
            "misplaced or unknown pseudo-header in HTTP/2 response",
        ),
        ([(b":status", b"200")] + [(b"x", b"1")] * 201, "too many fields in HTTP/2 response"),
    ],
)
def test_a_malformed_response_fails_only_its_stream(
    fields: list[tuple[bytes, bytes]], reason: str
) -> None:
    pair = Pair(strict=False)
    bad = pair.request()
    good = pair.request()
    pair.server.send_headers(bad, fields)
    if (b":status", b"101") not in fields:  # h2 itself refuses DATA after a 1xx
        pair.server.send_data(bad, b"dropped")
    pair.server.send_headers(good, [(b":status", b"200")], end_stream=True)
    events = pair.to_client()
    (failed,) = [e for e in events if isinstance(e, StreamFailed)]
    assert failed.stream_id == bad
    assert (failed.violation.status, failed.violation.reason) == (502, reason)
    assert [e for e in events if not isinstance(e, StreamFailed)] == [
        ResponseHead(200, [], http_version=b"2", stream_id=good),
        EndOfBody([], good),
    ]
    resets = [e for e in pair.to_server() if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in resets] == [(bad, PROTOCOL_ERROR)]


def test_malformed_trailers_fail_the_stream() -> None:
    pair = Pair(strict=False)
    stream_id = pair.request()
    pair.server.send_headers(stream_id, [(b":status", b"200")])
    pair.server.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
    events = pair.to_client()
    assert events[0] == ResponseHead(200, [], http_version=b"2", stream_id=stream_id)
    assert isinstance(events[1], StreamFailed)
    assert len(events) == 2


def test_a_connection_error_raises_and_queues_goaway() -> None:
    pair = Pair()
    data_on_stream_zero = b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x"
    with pytest.raises(ProtocolViolation) as caught:
        pair.client.receive(data_on_stream_zero)
    assert caught.value.status == 502
    assert caught.value.reason.startswith("HTTP/2 connection error")
    (terminated,) = pair.to_server()
    assert isinstance(terminated, h2.events.ConnectionTerminated)
    assert terminated.error_code == ErrorCodes.PROTOCOL_ERROR


def test_close_queues_goaway_once() -> None:
    pair = Pair()
    pair.client.close()
    pair.client.close()
    (terminated,) = pair.to_server()
    assert isinstance(terminated, h2.events.ConnectionTerminated)
    assert terminated.error_code == ErrorCodes.NO_ERROR
