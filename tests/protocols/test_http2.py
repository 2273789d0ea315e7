"""``Http2Server``: request translation, responses out, flow control, graceful GOAWAY and the
flood limits (SPEC §5.8, §14.1).

The peer is h2's own client-side ``H2Connection``: it writes the frames our server parses and
parses (and validates) the frames our server writes. Hand-made frames (``hyperframe``) stand in
for what a well-behaved client refuses to send (a CONTINUATION flood). Time is the ``now``
argument: a flood is "within one second" because the test says so.
"""

from __future__ import annotations

from typing import TypeVar

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
)

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Informational,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http2 import (
    PREFACE,
    ErrorCode,
    Http2Error,
    Http2Event,
    Http2Limits,
    Http2Server,
    PeerGoAway,
    PingAcked,
    StreamCancelled,
    WindowOpened,
    h2c_settings,
)
from tests.support.h2_client import frames_of

E = TypeVar("E", bound=h2.events.Event)

GET = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"example.com"),
    (b":path", b"/a?b=1"),
]
POST = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":authority", b"example.com"),
    (b":path", b"/upload"),
]


class Pair:
    """Our server and h2's client, wired by hand: ``to_server`` carries what the client
    queued, ``to_client`` what the server queued (and returns the client's events)."""

    def __init__(self, limits: Http2Limits | None = None) -> None:
        self.server = Http2Server(limits or Http2Limits())
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config=config)
        self.client.initiate_connection()
        self.server.initiate()
        self.now = 0.0

    def to_server(self, extra: bytes = b"") -> list[Http2Event]:
        return self.server.receive(self.client.data_to_send() + extra, self.now)

    def to_client(self) -> list[h2.events.Event]:
        return list(self.client.receive_data(self.server.data_to_send()))

    def settle(self) -> None:
        """Exchange the prefaces and SETTINGS acknowledgements."""
        self.to_server()
        self.to_client()
        self.to_server()

    def request(self, fields: list[tuple[bytes, bytes]], *, end: bool = True) -> int:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, fields, end_stream=end)
        return stream_id


def only_head(events: list[Http2Event]) -> RequestHead:
    heads = [event for event in events if isinstance(event, RequestHead)]
    assert len(heads) == 1, events
    return heads[0]


def of_type(events: list[h2.events.Event], kind: type[E]) -> list[E]:
    return [event for event in events if isinstance(event, kind)]


def terminated(events: list[h2.events.Event]) -> h2.events.ConnectionTerminated:
    [goaway] = of_type(events, h2.events.ConnectionTerminated)
    return goaway


# -- requests in ----------------------------------------------------------------------------


def test_the_first_bytes_of_a_client_are_the_preface() -> None:
    pair = Pair()
    assert pair.client.data_to_send().startswith(PREFACE)


def test_pseudo_headers_become_the_request_head() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request([*GET, (b"x-one", b"1")])
    head = only_head(pair.to_server())
    assert head.method == b"GET"
    assert head.target == b"/a?b=1"
    assert head.authority == b"example.com"
    assert head.http_version == b"2"
    assert head.stream_id == stream_id == 1
    assert not head.has_body
    # No pseudo-header reaches the head; the authority is its host line, first.
    assert head.headers == [(b"host", b"example.com"), (b"x-one", b"1")]


def test_cookies_are_joined_for_an_http1_hop() -> None:
    pair = Pair()
    pair.settle()
    pair.request([*GET, (b"cookie", b"a=1"), (b"x-between", b"y"), (b"cookie", b"b=2")])
    head = only_head(pair.to_server())
    assert [value for name, value in head.headers if name == b"cookie"] == [b"a=1; b=2"]
    assert (b"x-between", b"y") in head.headers


def test_a_request_without_end_stream_has_a_body_with_its_stream_id() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request(POST, end=False)
    pair.client.send_data(stream_id, b"hello ")
    pair.client.send_data(stream_id, b"world", end_stream=True)
    events = pair.to_server()
    head = only_head(events)
    assert head.has_body
    assert head.method == b"POST"
    chunks = [event for event in events if isinstance(event, BodyChunk)]
    assert b"".join(chunk.data for chunk in chunks) == b"hello world"
    assert {chunk.stream_id for chunk in chunks} == {stream_id}
    ends = [event for event in events if isinstance(event, EndOfBody)]
    assert [end.stream_id for end in ends] == [stream_id]
    assert isinstance(events[-1], EndOfBody)


def test_two_streams_interleave_and_keep_their_ids() -> None:
    pair = Pair()
    pair.settle()
    first = pair.request(POST, end=False)
    second = pair.request(POST, end=False)
    pair.client.send_data(second, b"2", end_stream=True)
    pair.client.send_data(first, b"1", end_stream=True)
    events = pair.to_server()
    bodies = {event.stream_id: event.data for event in events if isinstance(event, BodyChunk)}
    assert bodies == {first: b"1", second: b"2"}


def test_request_trailers_end_the_body_and_are_dropped() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request([*POST, (b"te", b"trailers")], end=False)
    pair.client.send_data(stream_id, b"x")
    pair.client.send_headers(stream_id, [(b"x-checksum", b"1")], end_stream=True)
    events = pair.to_server()
    assert events[-1] == EndOfBody(stream_id=stream_id)


MALFORMED = [
    pytest.param([*GET, (b"host", b"other.example")], id="host-differs"),
    pytest.param([*GET, (b"connection", b"close")], id="connection-specific"),
    pytest.param([*GET, (b"te", b"gzip")], id="te-not-trailers"),
    pytest.param([*GET, (b"X-Upper", b"1")], id="upper-case-name"),
    pytest.param([GET[0], GET[1], GET[2]], id="no-path"),
    pytest.param([*GET, (b":path", b"/again")], id="duplicate-path"),
    pytest.param([GET[0], (b"x-early", b"1"), *GET[1:]], id="late-pseudo-header"),
    pytest.param([*GET, (b":protocol", b"websocket")], id="protocol-without-connect"),
    pytest.param([*GET, (b":weird", b"1")], id="unknown-pseudo-header"),
]


def malformed_pair() -> Pair:
    pair = Pair()
    pair.settle()
    pair.to_client()
    pair.client.config.validate_outbound_headers = False
    pair.client.config.normalize_outbound_headers = False
    return pair


@pytest.mark.parametrize("fields", MALFORMED)
def test_a_malformed_request_gets_a_400_and_ends_its_stream_only(
    fields: list[tuple[bytes, bytes]],
) -> None:
    pair = malformed_pair()
    stream_id = pair.request(fields, end=False)
    assert not [event for event in pair.to_server() if isinstance(event, RequestHead)]
    events = pair.to_client()
    [response] = of_type(events, h2.events.ResponseReceived)
    assert (response.stream_id, response.headers[0]) == (stream_id, (b":status", b"400"))
    # The client's half was still open: the stream error follows the 400 (SPEC §5.3).
    [reset] = of_type(events, h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (stream_id, ErrorCode.PROTOCOL_ERROR)
    assert not of_type(events, h2.events.ConnectionTerminated)
    # The connection goes on.
    later = pair.request(GET)
    assert only_head(pair.to_server()).stream_id == later


def test_a_malformed_request_without_body_gets_only_the_400() -> None:
    pair = malformed_pair()
    stream_id = pair.request([*GET, (b"host", b"other.example")], end=True)
    pair.to_server()
    events = pair.to_client()
    [response] = of_type(events, h2.events.ResponseReceived)
    assert response.stream_id == stream_id
    assert response.stream_ended is not None
    assert not of_type(events, h2.events.StreamReset)


def test_a_content_length_that_disagrees_with_the_data_is_a_connection_error() -> None:
    # h2's own check, a connection error (the adapter cannot make it a stream error).
    pair = Pair()
    pair.settle()
    stream_id = pair.request([*POST, (b"content-length", b"3")], end=False)
    pair.client.send_data(stream_id, b"four", end_stream=True)
    with pytest.raises(Http2Error) as caught:
        pair.to_server()
    assert caught.value.code == ErrorCode.PROTOCOL_ERROR


def test_a_client_reset_is_a_cancelled_stream() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request(POST, end=False)
    pair.client.reset_stream(stream_id, ErrorCode.CANCEL)
    events = pair.to_server()
    assert events[-1] == StreamCancelled(stream_id, ErrorCode.CANCEL)


def test_the_client_goaway_and_ping_ack_are_events() -> None:
    pair = Pair()
    pair.settle()
    pair.server.ping(b"12345678")
    pair.to_client()  # the client acknowledges at once
    assert pair.to_server() == [PingAcked(b"12345678")]
    pair.client.close_connection(ErrorCode.PROTOCOL_ERROR)
    assert pair.to_server() == [PeerGoAway(ErrorCode.PROTOCOL_ERROR, 0)]
    assert pair.server.closed  # an error: nothing more is served


def test_a_graceful_client_goaway_lets_the_open_streams_finish() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request(GET)
    pair.to_server()
    pair.server.acknowledge(stream_id, 0)  # something of the server's may be queued meanwhile
    pair.client.close_connection()  # GOAWAY NO_ERROR: no new streams, the open one finishes
    assert pair.to_server() == [PeerGoAway(0, 0)]
    assert not pair.server.closed
    pair.server.send_head(ResponseHead(200, [(b"content-length", b"2")]), stream_id, end=False)
    pair.server.send_data(stream_id, b"ok", end=True)
    frames = frames_of(pair.server.data_to_send())
    assert [type(frame).__name__ for frame in frames] == ["HeadersFrame", "DataFrame"]
    data = frames[-1]
    assert isinstance(data, DataFrame)
    assert data.stream_id == stream_id
    assert data.data == b"ok"
    assert "END_STREAM" in data.flags


# -- responses out --------------------------------------------------------------------------


def test_a_response_head_body_and_trailers_reach_the_client() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request(GET)
    pair.to_server()
    pair.server.send_head(Informational(103, [(b"link", b"</a.css>")]), stream_id, end=False)
    head = ResponseHead(
        200,
        [
            (b"content-type", b"text/plain"),
            (b"connection", b"keep-alive"),
            (b"keep-alive", b"timeout=5"),
            (b"transfer-encoding", b"chunked"),
            (b"upgrade", b"h2c"),
            (b"proxy-connection", b"keep-alive"),
            (b"x-kept", b"yes"),
        ],
    )
    pair.server.send_head(head, stream_id, end=False)
    pair.server.send_data(stream_id, b"body", end=False)
    pair.server.send_end(
        stream_id, [(b"grpc-status", b"0"), (b"connection", b"close"), (b"x-sum", b"9")]
    )
    events = pair.to_client()
    informational, final = (
        of_type(events, h2.events.InformationalResponseReceived),
        of_type(events, h2.events.ResponseReceived),
    )
    assert informational[0].headers == [(b":status", b"103"), (b"link", b"</a.css>")]
    assert final[0].headers == [
        (b":status", b"200"),
        (b"content-type", b"text/plain"),
        (b"x-kept", b"yes"),
    ]
    [data] = of_type(events, h2.events.DataReceived)
    assert data.data == b"body"
    [trailers] = of_type(events, h2.events.TrailersReceived)
    assert trailers.headers == [(b"grpc-status", b"0"), (b"x-sum", b"9")]
    assert of_type(events, h2.events.StreamEnded)


def test_a_bodiless_response_ends_the_stream_with_its_head() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request(GET)
    pair.to_server()
    pair.server.send_head(ResponseHead(204, []), stream_id, end=True)
    events = pair.to_client()
    [response] = of_type(events, h2.events.ResponseReceived)
    assert response.stream_ended is not None
    assert pair.server.open_streams == 0


def test_an_end_without_trailers_is_an_empty_data_frame() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request(GET)
    pair.to_server()
    pair.server.send_head(ResponseHead(200, []), stream_id, end=False)
    pair.server.send_data(stream_id, b"x", end=False)
    pair.server.send_end(stream_id, [])
    events = pair.to_client()
    assert not of_type(events, h2.events.TrailersReceived)
    assert [event.stream_id for event in of_type(events, h2.events.StreamEnded)] == [stream_id]


def test_resetting_a_closed_stream_is_a_no_op() -> None:
    pair = Pair()
    pair.settle()
    stream_id = pair.request(GET)
    pair.to_server()
    pair.server.send_head(ResponseHead(204, []), stream_id, end=True)
    pair.to_client()
    pair.server.reset(stream_id)
    assert pair.server.data_to_send() == b""


# -- flow control ---------------------------------------------------------------------------


def test_the_window_reopens_only_when_acknowledged() -> None:
    pair = Pair()
    pair.settle()
    pair.to_client()
    stream_id = pair.request(POST, end=False)
    window = pair.client.local_flow_control_window(stream_id)
    assert window == 65535
    for start in range(0, window, 16384):
        pair.client.send_data(stream_id, b"x" * min(16384, window - start))
    received = sum(len(e.data) for e in pair.to_server() if isinstance(e, BodyChunk))
    assert received == window
    # Nothing handed on yet: no WINDOW_UPDATE, the client may not send another byte.
    assert not of_type(pair.to_client(), h2.events.WindowUpdated)
    assert pair.client.local_flow_control_window(stream_id) == 0
    with pytest.raises(h2.exceptions.FlowControlError):
        pair.client.send_data(stream_id, b"y")
    pair.server.acknowledge(stream_id, 40000)
    updated = of_type(pair.to_client(), h2.events.WindowUpdated)
    assert {event.stream_id for event in updated} >= {stream_id}
    assert pair.client.local_flow_control_window(stream_id) == 40000


def test_the_connection_window_is_opened_at_the_start() -> None:
    pair = Pair(Http2Limits(connection_window_size=4 << 20))
    pair.settle()
    pair.to_client()
    # The connection window grew; each stream still gets the initial window.
    assert pair.client.outbound_flow_control_window == 4 << 20
    stream_id = pair.request(POST, end=False)
    assert pair.client.local_flow_control_window(stream_id) == 65535


def test_padding_is_acknowledged_at_once() -> None:
    pair = Pair()
    pair.settle()
    pair.to_client()
    stream_id = pair.request(POST, end=False)
    # Four padded frames fill the stream window exactly (each: data + 255 + the length byte).
    sizes = [16384 - 256] * 3 + [16383 - 256]
    for size in sizes:
        pair.client.send_data(stream_id, b"x" * size, pad_length=255)
    assert pair.client.local_flow_control_window(stream_id) == 0
    received = sum(len(e.data) for e in pair.to_server() if isinstance(e, BodyChunk))
    assert received == sum(sizes)
    # Handing on the data alone gives the whole window back: the padding was not withheld.
    pair.server.acknowledge(stream_id, received)
    pair.to_client()
    assert pair.client.local_flow_control_window(stream_id) == 65535


def test_the_send_window_follows_the_clients_settings_and_updates() -> None:
    pair = Pair()
    pair.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    pair.settle()
    stream_id = pair.request(GET)
    pair.to_server()
    pair.server.send_head(ResponseHead(200, []), stream_id, end=False)
    assert pair.server.send_window(stream_id) == 10
    pair.server.send_data(stream_id, b"0123456789", end=False)
    assert pair.server.send_window(stream_id) == 0
    with pytest.raises(h2.exceptions.FlowControlError):
        pair.server.send_data(stream_id, b"!", end=False)
    pair.to_client()
    pair.client.increment_flow_control_window(5, stream_id=stream_id)
    assert pair.to_server() == [WindowOpened(stream_id)]
    assert pair.server.send_window(stream_id) == 5
    # A settings change of the initial window opens every stream: reported as the connection.
    pair.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 100})
    assert WindowOpened(0) in pair.to_server()
    assert pair.server.send_window(stream_id) == 95
    assert pair.server.send_window(99) == 0
    assert pair.server.max_frame == 16384


# -- graceful GOAWAY ------------------------------------------------------------------------


def test_a_stream_above_the_announced_last_id_is_refused() -> None:
    pair = Pair()
    pair.settle()
    first = pair.request(GET)
    assert only_head(pair.to_server()).stream_id == first
    pair.server.goaway(first)
    # The client opens another stream before it read the GOAWAY (the race GOAWAY resolves).
    later = pair.request(GET)
    assert not [event for event in pair.to_server() if isinstance(event, RequestHead)]
    # What went out: the GOAWAY first, then the refusal (h2's client would stop at the GOAWAY).
    frames = frames_of(pair.server.data_to_send())
    assert isinstance(frames[0], GoAwayFrame)
    assert frames[0].last_stream_id == first
    refusals = [frame for frame in frames if isinstance(frame, RstStreamFrame)]
    assert [(f.stream_id, f.error_code) for f in refusals] == [(later, ErrorCode.REFUSED_STREAM)]
    # The stream at or below the last id is still served.
    pair.server.send_head(ResponseHead(204, []), first, end=True)
    assert pair.server.data_to_send()


def test_the_goaway_announces_the_last_stream_and_the_code() -> None:
    pair = Pair()
    pair.settle()
    pair.to_client()
    pair.request(GET)
    pair.request(GET)
    pair.to_server()
    pair.server.goaway(pair.server.highest_stream)
    goaway = terminated(pair.to_client())
    assert goaway.last_stream_id == 3
    assert goaway.error_code == ErrorCode.NO_ERROR


def test_close_queues_h2s_goaway_once() -> None:
    pair = Pair()
    pair.settle()
    pair.to_client()
    pair.server.close(ErrorCode.NO_ERROR)
    pair.server.close(ErrorCode.INTERNAL_ERROR)
    assert terminated(pair.to_client()).error_code == ErrorCode.NO_ERROR
    assert pair.server.closed


# -- floods ---------------------------------------------------------------------------------


def test_rapid_reset_over_the_limit_ends_the_connection() -> None:
    pair = Pair(Http2Limits(max_resets_per_second=10))
    pair.settle()
    pair.to_client()
    for _ in range(11):
        stream_id = pair.request(GET)
        pair.client.reset_stream(stream_id, ErrorCode.CANCEL)
    with pytest.raises(Http2Error) as caught:
        pair.to_server()
    assert caught.value.reason == "rapid_reset"
    assert caught.value.code == ErrorCode.ENHANCE_YOUR_CALM
    assert pair.server.closed
    assert terminated(pair.to_client()).error_code == ErrorCode.ENHANCE_YOUR_CALM


def test_resets_spread_over_seconds_are_allowed() -> None:
    pair = Pair(Http2Limits(max_resets_per_second=10))
    pair.settle()
    for second in range(5):
        pair.now = float(second)
        for _ in range(10):
            stream_id = pair.request(GET)
            pair.client.reset_stream(stream_id, ErrorCode.CANCEL)
        events = pair.to_server()
        assert sum(isinstance(event, StreamCancelled) for event in events) == 10
    assert not pair.server.closed


def flood(pair: Pair, kind: str, count: int) -> None:
    """Queue ``count`` control frames of ``kind`` on the client."""
    stream_id = pair.request(POST, end=False) if kind == "empty-data" else 0
    for index in range(count):
        match kind:
            case "ping":
                pair.client.ping(index.to_bytes(8, "big"))
            case "settings":
                pair.client.update_settings({h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 10})
            case "window-update":
                pair.client.increment_flow_control_window(1)
            case "priority":
                pair.client.prioritize(1, weight=16)
            case "empty-data":
                pair.client.send_data(stream_id, b"")
            case _:
                pytest.fail(kind)


@pytest.mark.parametrize("kind", ["ping", "settings", "window-update", "priority", "empty-data"])
def test_a_control_flood_ends_the_connection(kind: str) -> None:
    pair = Pair(Http2Limits(max_control_frames=50))
    pair.to_server()  # the preface and the client's SETTINGS: two control frames so far
    flood(pair, kind, 50)
    with pytest.raises(Http2Error) as caught:
        pair.to_server()
    assert caught.value.reason == "control_flood"
    assert caught.value.code == ErrorCode.ENHANCE_YOUR_CALM
    goaways = [f for f in frames_of(pair.server.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert [frame.error_code for frame in goaways] == [ErrorCode.ENHANCE_YOUR_CALM]


def test_control_frames_in_a_new_window_start_counting_afresh() -> None:
    pair = Pair(Http2Limits(max_control_frames=50))
    pair.to_server()
    for window in range(4):
        pair.now = 10.0 * (window + 1)
        flood(pair, "ping", 45)
        pair.to_server()
    assert not pair.server.closed


def test_a_continuation_flood_is_a_protocol_error() -> None:
    pair = Pair()
    pair.settle()
    headers = HeadersFrame(1)
    headers.data = pair.client.encoder.encode(GET)
    frames = headers.serialize()
    for _ in range(70):
        continuation = ContinuationFrame(1)
        continuation.data = b"\x40\x01a\x01b"  # a literal header field, never ended
        frames += continuation.serialize()
    with pytest.raises(Http2Error) as caught:
        pair.server.receive(frames, 0.0)
    assert caught.value.reason == "protocol_error"
    assert caught.value.code == ErrorCode.PROTOCOL_ERROR
    assert terminated(pair.to_client()).error_code == ErrorCode.PROTOCOL_ERROR


def test_a_header_list_over_the_limit_is_a_connection_error() -> None:
    pair = Pair(Http2Limits(max_header_list_size=4096))
    pair.settle()
    # Spread over CONTINUATION frames (each 16 KiB at most): the decoded list is what counts.
    pair.request([*GET, (b"x-big", b"v" * 40000)])
    with pytest.raises(Http2Error) as caught:
        pair.to_server()
    assert caught.value.code == ErrorCode.ENHANCE_YOUR_CALM
    assert pair.server.closed
    assert terminated(pair.to_client()).error_code == ErrorCode.ENHANCE_YOUR_CALM


def test_a_header_list_before_the_settings_ack_is_limited_too() -> None:
    pair = Pair(Http2Limits(max_header_list_size=4096))
    # The client's first request rides with its preface, before it saw our SETTINGS.
    pair.request([*GET, (b"x-big", b"v" * 8000)])
    with pytest.raises(Http2Error):
        pair.to_server()


def test_streams_over_the_concurrency_limit_are_refused_alone() -> None:
    pair = Pair(Http2Limits(max_concurrent_streams=2))
    # The client opens its streams with its preface, before it saw our SETTINGS (RFC 9113
    # §5.1.2: until then there is no limit); the third one is refused, not the connection.
    ids = [pair.request(GET) for _ in range(3)]
    heads = [event for event in pair.to_server() if isinstance(event, RequestHead)]
    assert [head.stream_id for head in heads] == ids[:2]
    events = pair.to_client()
    assert pair.client.remote_settings.max_concurrent_streams == 2
    [reset] = of_type(events, h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (ids[2], ErrorCode.REFUSED_STREAM)
    assert not of_type(events, h2.events.ConnectionTerminated)
    # Once one finishes, a new stream is accepted.
    pair.server.send_head(ResponseHead(204, []), ids[0], end=True)
    pair.to_client()
    later = pair.request(GET)
    assert only_head(pair.to_server()).stream_id == later


# -- h2c upgrade (SPEC §5.1 item 3) -----------------------------------------------------------

#: What curl sends: MAX_CONCURRENT_STREAMS 100, INITIAL_WINDOW_SIZE 32 MiB, ENABLE_PUSH 0.
CURL_SETTINGS = b"AAMAAABkAAQCAAAAAAIAAAAA"


def upgrade_head(
    *extra: tuple[bytes, bytes], method: bytes = b"GET", has_body: bool = False
) -> RequestHead:
    fields = [
        (b"host", b"a.test"),
        (b"connection", b"Upgrade, HTTP2-Settings"),
        (b"upgrade", b"h2c"),
        *extra,
    ]
    return RequestHead(method, b"/", b"a.test", fields, has_body=has_body)


def test_an_h2c_upgrade_request_gives_its_settings() -> None:
    head = upgrade_head((b"http2-settings", CURL_SETTINGS))
    assert h2c_settings(head) == CURL_SETTINGS
    # Padding is restored for the decoder; other protocols may be listed too.
    odd = upgrade_head((b"http2-settings", b"AAMAAABk"), (b"upgrade", b"websocket"))
    assert h2c_settings(odd) == b"AAMAAABk"


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(RequestHead(b"GET", b"/", b"a", [(b"host", b"a")]), id="plain-get"),
        pytest.param(upgrade_head(), id="no-settings"),
        pytest.param(
            upgrade_head((b"http2-settings", CURL_SETTINGS), method=b"POST", has_body=True),
            id="with-body",
        ),
        pytest.param(
            upgrade_head((b"http2-settings", CURL_SETTINGS), (b"http2-settings", b"")),
            id="two-settings",
        ),
        pytest.param(upgrade_head((b"http2-settings", b"AAMAAAB")), id="not-six-bytes"),
        pytest.param(upgrade_head((b"http2-settings", b"AAMA+AB/")), id="not-base64url"),
        # INITIAL_WINDOW_SIZE 2^31: over the largest window.
        pytest.param(upgrade_head((b"http2-settings", b"AASAAAAA")), id="invalid-value"),
        pytest.param(
            RequestHead(
                b"GET",
                b"/",
                b"a",
                [(b"connection", b"Upgrade"), (b"upgrade", b"h2c"), (b"http2-settings", b"")],
            ),
            id="connection-without-http2-settings",
        ),
        pytest.param(
            RequestHead(
                b"GET",
                b"/",
                b"a",
                [
                    (b"connection", b"Upgrade, HTTP2-Settings"),
                    (b"upgrade", b"websocket"),
                    (b"http2-settings", CURL_SETTINGS),
                ],
            ),
            id="another-protocol",
        ),
    ],
)
def test_other_requests_are_no_h2c_upgrade(head: RequestHead) -> None:
    assert h2c_settings(head) is None


def test_the_upgraded_request_is_answered_on_stream_1() -> None:
    server = Http2Server(Http2Limits(max_concurrent_streams=1))
    config = h2.config.H2Configuration(client_side=True, header_encoding=None)
    client = h2.connection.H2Connection(config=config)
    settings = client.initiate_upgrade_connection()
    assert settings is not None
    server.initiate_upgrade(settings)
    assert server.highest_stream == 1
    events = server.receive(client.data_to_send(), 0.0)
    assert not [event for event in events if isinstance(event, RequestHead)]
    client.receive_data(server.data_to_send())
    # Stream 1 counts against the limit: another stream (sent past h2's client, which knows
    # the limit) is refused while it is open.
    extra = HeadersFrame(3, client.encoder.encode(GET), flags=["END_HEADERS", "END_STREAM"])
    assert not [e for e in server.receive(extra.serialize(), 0.0) if isinstance(e, RequestHead)]
    [refusal] = frames_of(server.data_to_send())
    assert isinstance(refusal, RstStreamFrame)
    assert (refusal.stream_id, refusal.error_code) == (3, ErrorCode.REFUSED_STREAM)
    server.send_head(ResponseHead(200, [(b"x-up", b"1")]), 1, end=False)
    server.send_data(1, b"upgraded", end=True)
    received = list(client.receive_data(server.data_to_send()))
    [response] = of_type(received, h2.events.ResponseReceived)
    assert response.stream_id == 1
    [data] = of_type(received, h2.events.DataReceived)
    assert (data.stream_id, data.data) == (1, b"upgraded")
    assert server.open_streams == 0


def test_priority_in_a_headers_frame_is_no_control_frame() -> None:
    # A browser may put PRIORITY in each request's HEADERS: that is a request, not a flood.
    pair = Pair(Http2Limits(max_control_frames=50, max_concurrent_streams=1000))
    pair.settle()
    pair.to_client()
    for _ in range(60):
        stream_id = pair.client.get_next_available_stream_id()
        pair.client.send_headers(stream_id, GET, end_stream=True, priority_weight=200)
    heads = [event for event in pair.to_server() if isinstance(event, RequestHead)]
    assert len(heads) == 60
    assert not pair.server.closed


def test_resets_the_client_provokes_count_as_resets() -> None:
    # "MadeYouReset" (CVE-2025-8671): no RST_STREAM from the client, but a frame that makes
    # the server reset the stream (DATA after END_STREAM) ends each request as surely.
    pair = Pair(Http2Limits(max_resets_per_second=10))
    pair.settle()
    pair.to_client()
    frames = b""
    for _ in range(11):
        stream_id = pair.request(GET)
        frames += DataFrame(stream_id, b"x").serialize()
    with pytest.raises(Http2Error) as caught:
        pair.to_server(frames)
    assert caught.value.reason == "rapid_reset"
