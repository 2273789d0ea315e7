"""Properties of the HTTP/2 adapter's state (SPEC §5.8; DESIGN.md §3.7 "HTTP/2 adapter").

A ``RuleBasedStateMachine`` drives h2's own client against ``Http2Server`` through random
interleavings of: opening streams (with or without a body, sometimes above a graceful GOAWAY's
last stream id), request DATA within the client's window, request ends, the server handing
bytes on (``acknowledge``), client WINDOW_UPDATEs and larger INITIAL_WINDOW_SIZEs, response
heads, response DATA within ``send_window``, response ends with or without trailers, resets by
either side, and the graceful GOAWAY. Every byte the server writes is decoded by the client,
which raises on any violation (DATA beyond its window, frames on closed streams, bad headers).

Invariants: the client never triggers a connection error; no window is ever negative on
either side; the server's received-but-unacknowledged bytes per stream never exceed the
stream window it announced; after the GOAWAY no HEADERS or DATA goes out on a stream above
its last stream id and no request above it is handed out; and at the end, with every
exchange finished, every stream is closed on both sides.

The GOAWAY frames are taken out of what the client decodes (h2's client refuses every frame
after one, while the server rightly goes on serving the streams at or below it).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead, ResponseHead
from a3s_gateway.protocols.http2 import Http2Event, Http2Limits, Http2Server, StreamCancelled
from tests.support.h2_client import frames_of

LIMITS = Http2Limits(
    max_concurrent_streams=4,
    initial_window_size=65535,
    connection_window_size=131072,
    max_resets_per_second=1_000_000,
    max_control_frames=1_000_000,
)
GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a.test"), (b":path", b"/")]
POST = [(b":method", b"POST"), *GET[1:]]
PICK = st.integers(0, 1 << 16)


@dataclass
class Exchange:
    """The model of one stream the server handed out."""

    unacked: int = 0
    request_ended: bool = False
    response: str = "none"  # "none", "head", "ended"
    reset: bool = False

    @property
    def respondable(self) -> bool:
        return not self.reset and self.response != "ended"


class Http2StateMachine(RuleBasedStateMachine):
    """h2's client against our server, every byte decoded on both sides."""

    def __init__(self) -> None:
        super().__init__()
        self.server = Http2Server(LIMITS)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config=config)
        self.client.initiate_connection()
        self.server.initiate()
        self.exchanges: dict[int, Exchange] = {}
        #: Streams the client opened (handed out or not).
        self.opened: list[int] = []
        #: Streams whose request the client is still sending.
        self.sending: set[int] = set()
        #: Streams opened after the GOAWAY.
        self.refused = 0
        #: SETTINGS changes the client made (a few are enough).
        self.settings_changes = 0
        #: Response bytes the client received and has not handed on yet, per stream.
        self.unconsumed: dict[int, int] = {}
        #: The last stream id of the server's GOAWAY, once sent.
        self.last_id: int | None = None
        self.pump()

    # -- wiring ----------------------------------------------------------------------------

    def pump(self) -> None:
        """Move bytes both ways until neither side has anything to say."""
        for _ in range(10):
            to_server = self.client.data_to_send()
            to_client = self.server.data_to_send()
            if not to_server and not to_client:
                return
            if to_client:
                self.to_client(to_client)
            if to_server:
                for event in self.server.receive(to_server, 0.0):
                    self.server_saw(event)
        raise AssertionError("the peers keep talking")

    def to_client(self, data: bytes) -> None:
        kept = b""
        for frame in frames_of(data):
            if isinstance(frame, GoAwayFrame):
                continue
            if self.last_id is not None and frame.stream_id > self.last_id:
                assert not isinstance(frame, HeadersFrame | DataFrame), frame
            kept += frame.serialize()
        for event in self.client.receive_data(kept):
            if isinstance(event, h2.events.StreamReset):
                self.sending.discard(event.stream_id)
            if isinstance(event, h2.events.DataReceived):
                stream_id = event.stream_id
                self.unconsumed[stream_id] = (
                    self.unconsumed.get(stream_id, 0) + event.flow_controlled_length
                )

    def server_saw(self, event: Http2Event) -> None:
        if isinstance(event, RequestHead):
            assert self.last_id is None or event.stream_id <= self.last_id
            assert event.stream_id not in self.exchanges
            self.exchanges[event.stream_id] = Exchange(request_ended=not event.has_body)
            return
        exchange = self.exchanges.get(getattr(event, "stream_id", 0))
        if exchange is None:
            return
        if isinstance(event, BodyChunk):
            exchange.unacked += len(event.data)
        elif isinstance(event, EndOfBody):
            exchange.request_ended = True
        elif isinstance(event, StreamCancelled):
            exchange.reset = True

    def pick(self, ids: list[int], index: int) -> int | None:
        return ids[index % len(ids)] if ids else None

    def client_stream(self, index: int) -> int | None:
        """A stream whose request the client may still send on."""
        return self.pick(sorted(self.sending), index)

    def respondable(self, index: int) -> int | None:
        return self.pick([i for i, e in self.exchanges.items() if e.respondable], index)

    # -- the client's rules ----------------------------------------------------------------

    def can_open(self) -> bool:
        client = self.client
        if self.refused >= 2:  # after the GOAWAY, a couple of streams show the refusal
            return False
        return client.open_outbound_streams < client.remote_settings.max_concurrent_streams

    def waiting(self, response: str) -> list[int]:
        return [i for i, e in self.exchanges.items() if e.respondable and e.response == response]

    @precondition(lambda self: self.can_open())
    @rule(body=st.booleans())
    def open_stream(self, body: bool) -> None:
        client = self.client
        if client.open_outbound_streams >= client.remote_settings.max_concurrent_streams:
            return
        stream_id = client.get_next_available_stream_id()
        client.send_headers(stream_id, POST if body else GET, end_stream=not body)
        self.opened.append(stream_id)
        if self.last_id is not None:
            self.refused += 1
        if body:
            self.sending.add(stream_id)
        self.pump()

    @precondition(lambda self: self.sending)
    @rule(index=PICK, size=st.integers(1, 200_000), end=st.booleans())
    def send_request_data(self, index: int, size: int, end: bool) -> None:
        """Up to ``size`` bytes in frames, as far as the client's window goes."""
        stream_id = self.client_stream(index)
        if stream_id is None:
            return
        client = self.client
        while size > 0:
            piece = min(
                size, client.local_flow_control_window(stream_id), client.max_outbound_frame_size
            )
            if piece <= 0:
                break
            client.send_data(stream_id, b"q" * piece)
            size -= piece
        if end:
            client.end_stream(stream_id)
            self.sending.discard(stream_id)
        self.pump()

    @precondition(lambda self: self.sending)
    @rule(index=PICK)
    def end_request(self, index: int) -> None:
        stream_id = self.client_stream(index)
        if stream_id is not None:
            self.client.end_stream(stream_id)
            self.sending.discard(stream_id)
            self.pump()

    @precondition(lambda self: any(self.unconsumed.values()))
    @rule(index=PICK, nbytes=st.integers(1, 1 << 17))
    def client_consumes(self, index: int, nbytes: int) -> None:
        stream_id = self.pick([i for i, n in self.unconsumed.items() if n], index)
        if stream_id is None:
            return
        nbytes = min(nbytes, self.unconsumed[stream_id])
        self.unconsumed[stream_id] -= nbytes
        self.client.acknowledge_received_data(nbytes, stream_id)
        self.pump()

    @precondition(lambda self: self.waiting("none") or self.waiting("head"))
    @rule(index=PICK, increment=st.integers(1, 1 << 20), connection=st.booleans())
    def client_window_update(self, index: int, increment: int, connection: bool) -> None:
        if connection:
            self.client.increment_flow_control_window(increment)
        else:
            stream_id = self.client_stream(index)
            if stream_id is None:
                return
            self.client.increment_flow_control_window(increment, stream_id=stream_id)
        self.pump()

    @precondition(lambda self: self.settings_changes < 3)
    @rule(size=st.integers(65535, 1 << 20))
    def client_grows_its_initial_window(self, size: int) -> None:
        self.settings_changes += 1
        current = self.client.local_settings.initial_window_size
        self.client.update_settings(
            {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: max(size, current)}
        )
        self.pump()

    @precondition(lambda self: self.sending or self.waiting("none") or self.waiting("head"))
    @rule(index=PICK)
    def client_resets(self, index: int) -> None:
        ids = self.sending.union(self.waiting("none"), self.waiting("head"))
        stream_id = self.pick(sorted(ids), index)
        if stream_id is not None:
            self.client.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self.sending.discard(stream_id)
            self.pump()

    @precondition(lambda self: not self.can_open())
    @rule()
    def client_pings(self) -> None:
        """A PING round trip: what is left to do once no stream can be opened."""
        self.client.ping(b"property")
        self.pump()

    # -- the server's rules ----------------------------------------------------------------

    @precondition(lambda self: any(e.unacked for e in self.exchanges.values()))
    @rule(index=PICK, nbytes=st.integers(1, 1 << 17))
    def acknowledge(self, index: int, nbytes: int) -> None:
        stream_id = self.pick([i for i, e in self.exchanges.items() if e.unacked], index)
        if stream_id is None:
            return
        exchange = self.exchanges[stream_id]
        nbytes = min(nbytes, exchange.unacked)
        exchange.unacked -= nbytes
        self.server.acknowledge(stream_id, nbytes)
        self.pump()

    @precondition(lambda self: self.waiting("none"))
    @rule(index=PICK, end=st.booleans())
    def respond_head(self, index: int, end: bool) -> None:
        stream_id = self.pick(self.waiting("none"), index)
        if stream_id is None:
            return
        self.server.send_head(ResponseHead(200, [(b"x-a", b"1")]), stream_id, end=end)
        self.exchanges[stream_id].response = "ended" if end else "head"
        self.pump()

    @precondition(lambda self: self.waiting("head"))
    @rule(index=PICK, size=st.integers(0, 200_000), end=st.booleans())
    def respond_data(self, index: int, size: int, end: bool) -> None:
        """Up to ``size`` bytes in frames within ``send_window`` and ``max_frame`` (as the
        downstream sends), the last one ending the stream if ``end``."""
        stream_id = self.pick(self.waiting("head"), index)
        if stream_id is None:
            return
        server = self.server
        while True:
            piece = min(size, server.send_window(stream_id), server.max_frame)
            last = end and piece == size
            if piece <= 0 and not last:
                break
            server.send_data(stream_id, b"r" * max(piece, 0), end=last)
            size -= piece
            if last:
                self.exchanges[stream_id].response = "ended"
                break
        self.pump()

    @precondition(lambda self: self.waiting("head"))
    @rule(index=PICK, trailers=st.booleans())
    def respond_end(self, index: int, trailers: bool) -> None:
        stream_id = self.pick(self.waiting("head"), index)
        if stream_id is None:
            return
        self.server.send_end(stream_id, [(b"x-t", b"1")] if trailers else [])
        self.exchanges[stream_id].response = "ended"
        self.pump()

    @precondition(lambda self: self.waiting("none") or self.waiting("head"))
    @rule(index=PICK)
    def server_resets(self, index: int) -> None:
        stream_id = self.respondable(index)
        if stream_id is None:
            return
        self.server.reset(stream_id)
        self.exchanges[stream_id].reset = True
        self.pump()

    # Late in a run (after a few streams), so that the streams it lets finish are many.
    @precondition(lambda self: self.last_id is None and len(self.opened) >= 6)
    @rule()
    def goaway(self) -> None:
        if self.last_id is None:
            self.last_id = self.server.highest_stream
            self.server.goaway(self.last_id)
            self.pump()

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def no_window_is_negative(self) -> None:
        assert self.client.outbound_flow_control_window >= 0
        assert self.client.inbound_flow_control_window >= 0
        for stream_id in self.opened:
            assert self.server.send_window(stream_id) >= 0
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                assert self.client.local_flow_control_window(stream_id) >= 0

    @invariant()
    def only_bytes_handed_on_reopen_the_windows(self) -> None:
        # What the client may still send is at most the window minus what the server holds.
        held = 0
        for stream_id, exchange in self.exchanges.items():
            assert 0 <= exchange.unacked <= LIMITS.initial_window_size
            held += exchange.unacked
            if stream_id in self.sending:
                window = self.client.local_flow_control_window(stream_id)
                assert window <= LIMITS.initial_window_size - exchange.unacked
        assert self.client.outbound_flow_control_window <= LIMITS.connection_window_size - held

    def teardown(self) -> None:
        """Finish every exchange; then every stream is closed on both sides."""
        for stream_id in sorted(self.sending):
            self.client.end_stream(stream_id)
        self.sending.clear()
        self.pump()
        for stream_id, exchange in self.exchanges.items():
            if exchange.unacked:
                self.server.acknowledge(stream_id, exchange.unacked)
            if not exchange.respondable:
                continue
            if exchange.response == "none":
                self.server.send_head(ResponseHead(204, []), stream_id, end=True)
            else:
                self.server.send_end(stream_id, [])
        self.pump()
        assert self.server.open_streams == 0
        assert self.client.open_outbound_streams == 0


TestHttp2State = Http2StateMachine.TestCase
