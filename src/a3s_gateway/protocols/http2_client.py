"""``Http2Client``: the client side of one upstream HTTP/2 connection, over h2 (SPEC §5.7, §5.10).

Ring 0: synchronous and deterministic; no trio, sockets, TLS, clocks or logging. The shell
(``upstream/http2_connection.py``, or a health probe in ``probes/checker.py``) owns the socket:
it writes ``data_to_send()`` and feeds what it reads to ``receive``. Must not: do I/O, read the
time, keep received body bytes, or raise anything but ``ProtocolViolation`` (502: the upstream
broke HTTP/2; 500: a caller bug, such as sending on a stream that is closed).

Requests: ``open_stream`` translates a ``RequestHead`` into pseudo-headers and fields
(``protocols/http2_client_checks.py``; ``:scheme`` ``http`` for h2c and ``https`` over TLS).
``send_data`` queues as much of a body as the peer's windows allow, in frames of at most
``max_frame``, and says how much it took; the shell waits for a ``WindowOpened`` before offering
the rest, so no frame ever exceeds a window.

Responses: ``receive`` returns ``ResponseHead`` (``http_version`` ``b"2"``), ``Informational``,
``BodyChunk`` and ``EndOfBody`` (with the trailers) carrying their ``stream_id``, and the
connection's own events (``protocols/http2_client_events.py``, re-exported here):
``StreamReset`` (by the peer), ``StreamFailed`` (a malformed response), ``WindowOpened``,
``GoAway`` and ``PeerSettings``. h2's own validation of inbound header blocks is off (a
malformed response is a stream error, RFC 9113 §8.1.1): the checks of
``protocols/http2_client_checks.py`` judge each received head and trailers, and one that fails
resets the stream with ``PROTOCOL_ERROR`` and fails it with a fixed 502 reason. What h2 still
checks as a connection error (framing, HPACK, the header-list size, ``content-length`` against
the DATA received) makes ``receive`` raise; h2 has then queued its GOAWAY.

Flow control: received DATA is acknowledged only through ``acknowledge`` (the shell calls it
when the consumer took the bytes), so a slow client makes the backend wait. Padding, and DATA
of streams that failed, are acknowledged here at once. Windows: ``STREAM_WINDOW`` per stream,
``CONNECTION_WINDOW`` for the connection.

GOAWAY (RFC 9113 §6.8): streams up to the last stream id may still complete, but h2 closes its
connection state machine on receiving one and then refuses every frame, and drops what it had
queued to send (h2 issue #1181). So ``receive`` finds GOAWAY frames in the byte stream (frame
headers are nine bytes: a 24-bit length and a type), takes h2's queued output aside before one
is processed and puts the state machine back afterwards. Refusing new streams is the shell's.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.settings import SettingCodes

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Informational,
    ProtocolViolation,
    ResponseHead,
)
from a3s_gateway.protocols.http2_client_checks import (
    MAX_FIELDS,
    request_fields,
    response_fields,
    sendable_trailers,
    trailer_fields,
)
from a3s_gateway.protocols.http2_client_events import (
    CANCEL,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    ClientEvent,
    GoAway,
    PeerSettings,
    StreamFailed,
    StreamReset,
    WindowOpened,
    error_name,
)

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.headers import Headers

__all__ = [
    "CANCEL",
    "CONNECTION_WINDOW",
    "MAX_FIELDS",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "STREAM_CAP",
    "STREAM_WINDOW",
    "ClientEvent",
    "GoAway",
    "Http2Client",
    "PeerSettings",
    "StreamFailed",
    "StreamReset",
    "WindowOpened",
    "error_name",
]

#: Receive window of each stream: what one response may have in flight unacknowledged.
STREAM_WINDOW: Final = 1 << 20
#: Receive window of the connection: what all its responses together may have in flight.
CONNECTION_WINDOW: Final = 8 << 20
#: Streams per connection when the peer sets no limit (RFC 9113 §6.5.2 recommends ≥ 100).
STREAM_CAP: Final = 100
#: SPEC §5.7: a response head of at most 64 KiB (h2 enforces it while decoding; the field count
#: is ``MAX_FIELDS``, checked in ``protocols/http2_client_checks.py``).
MAX_HEADER_LIST_SIZE: Final = 65536

_GOAWAY_TYPE: Final = 0x7
_FRAME_HEADER: Final = 9
_DEFAULT_WINDOW: Final = 65535


class _GoAwayFinder:
    """Follows frame boundaries through the received bytes to find GOAWAY frames."""

    __slots__ = ("_header", "_left", "_start")

    def __init__(self) -> None:
        self._header = bytearray()
        self._left = 0  # payload bytes of the current frame still to come
        self._start: int | None = None  # where the GOAWAY being read began (in this chunk)

    def find(self, data: bytes | bytearray) -> list[tuple[int, int]]:
        """(start, end) in ``data`` of the part of each GOAWAY frame that completes in it."""
        found: list[tuple[int, int]] = []
        if self._start is not None:
            self._start = 0  # it began in an earlier chunk
        pos, size = 0, len(data)
        while pos < size:
            if self._left:
                step = min(self._left, size - pos)
                pos += step
                self._left -= step
            else:
                begin = 0 if self._header else pos
                take = data[pos : pos + _FRAME_HEADER - len(self._header)]
                self._header += take
                pos += len(take)
                if len(self._header) < _FRAME_HEADER:
                    break
                self._left = int.from_bytes(self._header[:3], "big")
                if self._header[3] == _GOAWAY_TYPE:
                    self._start = begin
                self._header.clear()
            if not self._left and self._start is not None:
                found.append((self._start, pos))
                self._start = None
        return found


class Http2Client:
    """The client side of one upstream HTTP/2 connection (see the module docstring).

    ``secure``: the connection runs over TLS (``:scheme`` ``https``).
    """

    __slots__ = ("_failed", "_finder", "_h2", "_held", "_scheme", "_trailers")

    def __init__(self, *, secure: bool) -> None:
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_inbound_headers=False,
            # What we send was validated where it came from (the client's head by h11, llhttp
            # or our HTTP/2 server; fields middlewares add by the config's checks), and
            # ``request_fields`` drops what HTTP/2 forbids; h2's normalising (never-indexed
            # authorization and short cookies) stays on.
            validate_outbound_headers=False,
        )
        conn = h2.connection.H2Connection(config=config)
        # Set before the preface: initial values count as acknowledged, and the peer can only
        # send less than they allow until it read them.
        conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.MAX_CONCURRENT_STREAMS: 100,
                SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            },
        )
        self._h2 = conn
        self._scheme = b"https" if secure else b"http"
        self._held = b""  # output h2 queued before a GOAWAY or while receiving
        self._finder = _GoAwayFinder()
        self._failed: set[int] = set()  # streams failed in the current receive
        self._trailers: dict[int, Headers] = {}

    # --- the connection ---

    def start(self) -> None:
        """Queue the preface, SETTINGS and the connection window's increment."""
        self._h2.initiate_connection()
        self._h2.increment_flow_control_window(CONNECTION_WINDOW - _DEFAULT_WINDOW)

    def data_to_send(self) -> bytes:
        """Everything queued to send, once."""
        held = self._held
        if held:
            self._held = b""
            return held + self._h2.data_to_send()
        return self._h2.data_to_send()

    @property
    def wants_write(self) -> bool:
        """``receive`` queued something (acknowledgements of SETTINGS and PING, a GOAWAY)."""
        return bool(self._held)

    @property
    def max_concurrent_streams(self) -> int:
        """The peer's limit of concurrent streams, at most ``STREAM_CAP``."""
        return min(self._h2.remote_settings.max_concurrent_streams, STREAM_CAP)

    @property
    def max_frame(self) -> int:
        """The largest DATA frame the peer accepts."""
        return self._h2.max_outbound_frame_size

    def close(self, error_code: int = NO_ERROR) -> None:
        """Queue a GOAWAY (unless one was: ours, or h2's for a connection error); nothing
        more is sent after it."""
        if self._h2.state_machine.state is not h2.connection.ConnectionState.CLOSED:
            self._h2.close_connection(error_code)

    # --- sending ---

    def open_stream(self, head: RequestHead, *, end_stream: bool) -> int:
        """Queue ``head`` on a new stream (ended at once when ``end_stream``); its id. Raises
        ``ProtocolViolation(502)`` when the head cannot be sent (no stream id left, the peer's
        limit reached, a field HTTP/2 forbids)."""
        try:
            stream_id = self._h2.get_next_available_stream_id()
            fields = request_fields(head, self._scheme)
            self._h2.send_headers(stream_id, fields, end_stream=end_stream)
        except h2.exceptions.H2Error as error:
            raise ProtocolViolation(502, "request not sendable over HTTP/2") from error
        return stream_id

    def send_window(self, stream_id: int) -> int:
        """How many body bytes ``stream_id`` may send now (0 if it is closed)."""
        try:
            return self._h2.local_flow_control_window(stream_id)
        except h2.exceptions.H2Error:
            return 0

    def send_data(
        self, stream_id: int, data: bytes | memoryview, *, end_stream: bool = False
    ) -> int:
        """Queue as much of ``data`` as the windows allow, in frames of at most ``max_frame``;
        how many bytes were taken. ``end_stream`` ends the stream only if all were taken.
        Raises ``ProtocolViolation(500)`` if the stream is closed."""
        h2conn = self._h2
        try:
            count = min(len(data), h2conn.local_flow_control_window(stream_id))
            frame = h2conn.max_outbound_frame_size
            sent = 0
            while sent < count:
                size = min(frame, count - sent)
                last = end_stream and sent + size == len(data)
                h2conn.send_data(stream_id, data[sent : sent + size], end_stream=last)
                sent += size
            if end_stream and not data:
                h2conn.end_stream(stream_id)
        except h2.exceptions.H2Error as error:
            raise ProtocolViolation(500, "HTTP/2 stream is closed") from error
        return sent

    def send_trailers(self, stream_id: int, trailers: Headers) -> None:
        """End the stream's request with ``trailers`` (connection-specific fields and pseudo-
        headers dropped), or with an empty DATA frame when none are left. Raises
        ``ProtocolViolation(500)`` if the stream is closed."""
        fields = sendable_trailers(trailers)
        try:
            if fields:
                self._h2.send_headers(stream_id, fields, end_stream=True)
            else:
                self._h2.end_stream(stream_id)
        except h2.exceptions.H2Error as error:
            raise ProtocolViolation(500, "HTTP/2 stream is closed") from error

    def reset(self, stream_id: int, error_code: int = CANCEL) -> None:
        """Queue RST_STREAM for ``stream_id`` unless it is closed already."""
        with contextlib.suppress(h2.exceptions.H2Error):
            self._h2.reset_stream(stream_id, error_code)

    def acknowledge(self, stream_id: int, count: int) -> None:
        """The consumer took ``count`` body bytes of ``stream_id``: they may be re-granted (a
        WINDOW_UPDATE is queued once enough accumulated). The connection's window is re-opened
        even when the stream is closed."""
        if count > 0:
            with contextlib.suppress(h2.exceptions.H2Error):
                self._h2.acknowledge_received_data(count, stream_id)

    # --- receiving ---

    def receive(self, data: bytes | bytearray) -> list[ClientEvent]:
        """The events of ``data`` (see the module docstring). Raises ``ProtocolViolation(502)``
        for a connection error; the GOAWAY that says so is then queued."""
        out: list[ClientEvent] = []
        start = 0
        try:
            for begin, end in self._finder.find(data):
                if begin > start:
                    self._feed(data[start:begin], out)
                self._feed_goaway(data[begin:end], out)
                start = end
            if start < len(data):
                self._feed(data[start:] if start else data, out)
        finally:
            self._failed.clear()
            self._held += self._h2.data_to_send()
        return out

    def _feed_goaway(self, data: bytes | bytearray, out: list[ClientEvent]) -> None:
        machine = self._h2.state_machine
        state = machine.state
        self._held += self._h2.data_to_send()  # h2 drops its queue on GOAWAY
        self._feed(data, out)
        if state is not h2.connection.ConnectionState.CLOSED:
            machine.state = state

    def _feed(self, data: bytes | bytearray, out: list[ClientEvent]) -> None:
        try:
            events = self._h2.receive_data(data)
        except h2.exceptions.H2Error as error:
            raise ProtocolViolation(
                502, f"HTTP/2 connection error ({type(error).__name__})"
            ) from error
        for event in events:
            self._translate(event, out)

    def _translate(self, event: h2.events.Event, out: list[ClientEvent]) -> None:
        match event:
            case h2.events.DataReceived():
                self._data(event, out)
            case h2.events.ResponseReceived() | h2.events.InformationalResponseReceived():
                self._head(event, out)
            case h2.events.TrailersReceived():
                self._received_trailers(event, out)
            case h2.events.StreamEnded(stream_id=stream_id):
                if stream_id not in self._failed:
                    out.append(EndOfBody(self._trailers.pop(stream_id, []), stream_id))
            case h2.events.StreamReset(stream_id=stream_id, error_code=code):
                self._trailers.pop(stream_id, None)
                if stream_id not in self._failed:
                    out.append(StreamReset(stream_id, int(code)))
            case h2.events.WindowUpdated(stream_id=stream_id):
                out.append(WindowOpened(stream_id))
            case h2.events.RemoteSettingsChanged(changed_settings=changed):
                if SettingCodes.INITIAL_WINDOW_SIZE in changed:
                    out.append(WindowOpened(0))
                out.append(PeerSettings(self.max_concurrent_streams))
            case h2.events.ConnectionTerminated(last_stream_id=last, error_code=code):
                out.append(GoAway(last or 0, int(code or 0)))
            case _:  # PING (h2 answers), SETTINGS acks, PRIORITY, unknown frames
                pass

    def _data(self, event: h2.events.DataReceived, out: list[ClientEvent]) -> None:
        stream_id, data = event.stream_id, event.data
        counted = event.flow_controlled_length
        if stream_id in self._failed:
            self.acknowledge(stream_id, counted)
            return
        self.acknowledge(stream_id, counted - len(data))  # padding: nobody consumes it
        if data:
            out.append(BodyChunk(data, stream_id))

    def _head(
        self,
        event: h2.events.ResponseReceived | h2.events.InformationalResponseReceived,
        out: list[ClientEvent],
    ) -> None:
        stream_id = event.stream_id
        try:
            status, fields = response_fields(event.headers)
        except ProtocolViolation as violation:
            self._fail(stream_id, violation, out)
            return
        if status < 200:
            out.append(Informational(status, fields, stream_id=stream_id))
        else:
            out.append(ResponseHead(status, fields, http_version=b"2", stream_id=stream_id))

    def _received_trailers(self, event: h2.events.TrailersReceived, out: list[ClientEvent]) -> None:
        try:
            fields = trailer_fields(event.headers)
        except ProtocolViolation as violation:
            self._fail(event.stream_id, violation, out)
            return
        self._trailers[event.stream_id] = fields

    def _fail(self, stream_id: int, violation: ProtocolViolation, out: list[ClientEvent]) -> None:
        self._failed.add(stream_id)
        self._trailers.pop(stream_id, None)
        self.reset(stream_id, PROTOCOL_ERROR)
        out.append(StreamFailed(stream_id, violation))
