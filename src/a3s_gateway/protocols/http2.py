"""``Http2Server``: the HTTP/2 server adapter over ``h2`` (SPEC §5.8), sans-IO.

Ring 0: no trio, sockets, TLS, clocks or logging; time arrives as ``now`` arguments. ``h2``
parses and validates every frame and header block (RFC 9113 §8: pseudo-headers, connection-
specific fields, upper-case names, ``te``, ``:authority`` against ``Host``, ``content-length``
against the DATA received, flow-control windows, the HPACK table and the header-list size);
this adapter only translates between its events and the protocol-neutral ones of
``events.py`` and adds the gateway's own limits on top. Two of h2's answers are connection
errors where RFC 9113 wants stream errors, so the adapter gives them itself: a malformed
request header block (h2's validation, run per stream: a ``400`` then ``PROTOCOL_ERROR``) and
a stream over ``max_concurrent_streams`` (``REFUSED_STREAM``). A ``content-length`` that is
not digits or disagrees with the DATA stays h2's connection error.

- **Floods** (SPEC §5.8 "Abuse protection"): more than ``max_resets_per_second`` streams the
  client cancels within one second (rapid reset, CVE-2023-44487; a reset the client provokes
  with a frame that is a stream error counts too, CVE-2025-8671), or more than
  ``max_control_frames`` control frames (SETTINGS, PING, PRIORITY, WINDOW_UPDATE, empty DATA)
  within 10 s, end the connection with GOAWAY ``ENHANCE_YOUR_CALM``. CONTINUATION floods are
  bounded by ``h2`` itself (at most 64 CONTINUATION frames per header block, each at most
  ``max_frame_size``, and the decoded list at most ``max_header_list_size``).
- **Graceful GOAWAY** (``goaway``): ``h2`` refuses to send anything once it sent a GOAWAY, so
  the drain's GOAWAY frames are serialised here with ``hyperframe`` (``h2``'s own framing
  library) without telling ``h2``; streams the client opens above the announced last stream id
  are refused with ``REFUSED_STREAM``.

Events out of ``receive`` are ``RequestHead`` (``http_version`` ``b"2"``, ``:authority`` as the
routing authority and as a ``host`` line, cookies joined with ``"; "``; an extended CONNECT,
RFC 8441, with ``upgrade`` and its ``protocol``, see ``http2_request.py``), ``BodyChunk`` and
``EndOfBody`` (request trailers are dropped, as on HTTP/1.1), all with their ``stream_id``;
plus ``StreamCancelled`` (the client reset a stream), ``WindowOpened`` (send credit grew; 0 is
the connection), ``PeerGoAway`` and ``PingAcked``. ``receive`` raises ``Http2Error`` for a
connection error (the GOAWAY to send is already queued).

Flow control: received DATA is acknowledged only through ``acknowledge`` (after the upstream
took the bytes, or when a stream's rest is discarded), so a client can never have more in
flight than the windows: ``initial_window_size`` per stream, ``connection_window_size`` in all.

SETTINGS (SPEC §5.8): the entrypoint's ``http2 {}`` values, ``ENABLE_PUSH`` 0 and
``ENABLE_CONNECT_PROTOCOL`` 1 (RFC 8441 §3), so that a client may carry a WebSocket in an
extended CONNECT stream: h2 accepts ``:protocol`` on a CONNECT whatever was announced, and the
per-stream validation (``http2_request.valid_request``) refuses it anywhere else. After the
response head such a stream is a tunnel: its DATA both ways are the WebSocket's bytes.

Its vocabulary (limits, events, constants) is ``http2_events.py``; the request-side checks and
translation are ``http2_request.py``.

Must not: do I/O, read a clock, or decide anything about routing or proxying.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import h2.utilities
from hyperframe.frame import GoAwayFrame, PingFrame

from a3s_gateway.protocols.events import BodyChunk, EndOfBody
from a3s_gateway.protocols.http2_events import (
    CONNECTION_SPECIFIC,
    CONTROL_WINDOW,
    DRAIN_PING,
    MAX_STREAM_ID,
    PREFACE,
    ErrorCode,
    Http2Error,
    Http2Event,
    Http2Limits,
    PeerGoAway,
    PingAcked,
    StreamCancelled,
    WindowOpened,
)
from a3s_gateway.protocols.http2_request import h2c_settings, request_head, valid_request

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import Informational, ResponseHead
    from a3s_gateway.protocols.headers import Headers

__all__ = [
    "CONNECTION_SPECIFIC",
    "DRAIN_PING",
    "MAX_STREAM_ID",
    "PREFACE",
    "ErrorCode",
    "Http2Error",
    "Http2Event",
    "Http2Limits",
    "Http2Server",
    "PeerGoAway",
    "PingAcked",
    "StreamCancelled",
    "WindowOpened",
    "h2c_settings",
]

_END: Final = EndOfBody()


class _Window:
    """Counts events within a fixed window of ``length`` seconds."""

    __slots__ = ("count", "length", "start")

    def __init__(self, length: float) -> None:
        self.length = length
        self.start = -1e18
        self.count = 0

    def add(self, now: float, n: int = 1) -> int:
        if now - self.start >= self.length:
            self.start = now
            self.count = 0
        self.count += n
        return self.count


class Http2Server:
    """One HTTP/2 server connection (see the module docstring)."""

    __slots__ = (
        "_conn",
        "_controls",
        "_extra",
        "_header_priority",
        "_limits",
        "_live",
        "_now",
        "_refuse_above",
        "_resets",
        "_state_before",
        "closed",
        "highest_stream",
    )

    def __init__(self, limits: Http2Limits) -> None:
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            # A malformed request is a stream error (RFC 9113 §8.1.1, SPEC §5.3), but h2's
            # inbound validation ends the whole connection: ``_request`` runs the same
            # validation per stream instead.
            validate_inbound_headers=False,
            normalize_inbound_headers=True,
            # What we send was validated where it came from (h11/llhttp heads, our HTTP/2
            # client's checks, the config); connection-specific fields are dropped here.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        conn = h2.connection.H2Connection(config=config)
        conn.local_settings = _settings(limits, limits.max_concurrent_streams)
        # h2 applies the header-list limit once the client acknowledged our SETTINGS; the
        # client's first header block may come before that, so the decoder gets it now.
        conn.decoder.max_header_list_size = limits.max_header_list_size
        conn.max_inbound_frame_size = limits.max_frame_size
        self._conn = conn
        self._limits = limits
        self._resets = _Window(1.0)
        self._now = 0.0
        #: h2's connection state before the bytes being received (a graceful GOAWAY's undo).
        self._state_before = conn.state_machine.state
        self._controls = _Window(CONTROL_WINDOW)
        #: Frames serialised here rather than by h2 (the drain's GOAWAYs and PING).
        self._extra: list[bytes] = []
        #: Streams above this id are refused (after a graceful GOAWAY announced it).
        self._refuse_above = MAX_STREAM_ID
        #: The PRIORITY of the last HEADERS frame (its own event follows the request's).
        self._header_priority: h2.events.PriorityUpdated | None = None
        #: Streams accepted that may still be open (``_at_stream_limit``).
        self._live: set[int] = set()
        #: The highest stream id accepted (a request handed out).
        self.highest_stream = 0
        #: A connection error went out (or the client's GOAWAY arrived): no more streams.
        self.closed = False

    # -- start -----------------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue the server preface (SETTINGS) and the connection window's increase."""
        self._conn.initiate_connection()
        self._started()

    def initiate_upgrade(self, settings: bytes) -> None:
        """After a ``101`` for ``Upgrade: h2c`` (``settings``: the ``HTTP2-Settings`` value as
        ``h2c_settings`` returns it): stream 1 is the upgraded request, half-closed by the
        client (RFC 7540 §3.2)."""
        self._conn.initiate_upgrade_connection(settings)
        self._started()
        self.highest_stream = 1
        self._live.add(1)

    def _started(self) -> None:
        """The SETTINGS frame went out: h2 is told a stream limit no client reaches, since
        it treats a stream over its limit as a connection error, where RFC 9113 §5.1.2 allows
        and SPEC §5.8 wants ``REFUSED_STREAM`` for that stream alone (``_request`` refuses).
        A client may open more than the limit before it saw our SETTINGS."""
        self._conn.local_settings = _settings(self._limits, MAX_STREAM_ID)
        self._open_connection_window()

    def _open_connection_window(self) -> None:
        extra = self._limits.connection_window_size - 65535
        if extra > 0:
            self._conn.increment_flow_control_window(extra)

    # -- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes, now: float) -> list[Http2Event]:
        """The events of ``data`` read from the client. Raises ``Http2Error`` when the
        connection must end (a protocol error or a flood; the GOAWAY is queued)."""
        self._now = now
        conn = self._conn
        # h2 drops what it had queued when a GOAWAY arrives (h2 issue #1181): keep it.
        held = conn.data_to_send()
        if held:
            self._extra.append(held)
        self._state_before = conn.state_machine.state
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            self.closed = True
            code = int(getattr(error, "error_code", ErrorCode.PROTOCOL_ERROR))
            raise Http2Error(code, "protocol_error") from None
        out: list[Http2Event] = []
        controls = 0
        for event in events:
            controls += self._translate(event, out)
        if controls and self._controls.add(now, controls) > self._limits.max_control_frames:
            raise self._calm("control_flood")
        return out

    def _translate(self, event: h2.events.Event, out: list[Http2Event]) -> int:  # noqa: C901 -- one flat dispatch over h2's event types
        """Append the translation of one h2 event to ``out``; 1 if it was a control frame."""
        if isinstance(event, h2.events.DataReceived):
            stream_id = event.stream_id
            data = event.data
            padding = event.flow_controlled_length - len(data)
            if padding > 0:  # padding carries nothing to forward: acknowledge it at once
                self._conn.acknowledge_received_data(padding, stream_id)
            if data:
                out.append(BodyChunk(data, stream_id))
                return 0
            return 0 if event.stream_ended is not None else 1
        if isinstance(event, h2.events.RequestReceived):
            # A PRIORITY flag in the HEADERS frame comes next as its own event: part of the
            # request, not a control frame.
            self._header_priority = event.priority_updated
            self._request(event, out)
        elif isinstance(event, h2.events.StreamEnded):
            out.append(EndOfBody(stream_id=event.stream_id))
        elif isinstance(event, h2.events.TrailersReceived):
            self._header_priority = event.priority_updated
        elif isinstance(event, h2.events.StreamReset):
            out.append(StreamCancelled(event.stream_id, int(event.error_code or 0)))
            # Ours too: h2 reports only resets the client caused, by RST_STREAM or by a frame
            # that is a stream error (MadeYouReset, CVE-2025-8671: same effect, no RST).
            self._count_reset()
        elif isinstance(event, h2.events.WindowUpdated):
            out.append(WindowOpened(event.stream_id or 0))
            return 1
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            if h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings:
                out.append(WindowOpened(0))  # every stream's send window changed
            return 1
        elif isinstance(event, h2.events.PingAckReceived):
            out.append(PingAcked(bytes(event.ping_data or b"")))
            return 1
        elif isinstance(event, h2.events.PriorityUpdated):
            return 0 if event is self._header_priority else 1
        elif isinstance(event, h2.events.PingReceived | h2.events.SettingsAcknowledged):
            return 1
        elif isinstance(event, h2.events.ConnectionTerminated):
            out.append(self._peer_goaway(event))
        return 0

    def _peer_goaway(self, event: h2.events.ConnectionTerminated) -> PeerGoAway:
        code = int(event.error_code or 0)
        if code:
            self.closed = True
        else:
            # A graceful GOAWAY: the client opens no more streams, but those open may finish
            # (RFC 9113 §6.8), which h2, having closed its state machine, would refuse to
            # send: it is put back as it was, and any later stream is refused.
            self._conn.state_machine.state = self._state_before
            self._refuse_above = min(self._refuse_above, self.highest_stream)
        return PeerGoAway(code, int(event.last_stream_id or 0))

    def _count_reset(self) -> None:
        # Called from _translate: raising here ends the whole receive with the GOAWAY queued.
        if self._resets.add(self._now) > self._limits.max_resets_per_second:
            raise self._calm("rapid_reset")

    def _request(self, event: h2.events.RequestReceived, out: list[Http2Event]) -> None:
        stream_id = event.stream_id
        conn = self._conn
        if stream_id > self._refuse_above or self.closed or self._at_stream_limit():
            conn.reset_stream(stream_id, ErrorCode.REFUSED_STREAM)
            return
        fields = event.headers or []
        ended = event.stream_ended is not None
        head = request_head(fields, stream_id, ended=ended) if valid_request(fields) else None
        if head is None:  # malformed
            # SPEC §5.3: a 400 while headers can still be sent, then the stream error.
            conn.send_headers(stream_id, _BAD_REQUEST, end_stream=True)
            if not ended:
                conn.reset_stream(stream_id, ErrorCode.PROTOCOL_ERROR)
            return
        self.highest_stream = max(self.highest_stream, stream_id)
        self._live.add(stream_id)
        out.append(head)

    def _at_stream_limit(self) -> bool:
        """Whether the streams accepted and not closed yet fill ``max_concurrent_streams``
        (counted in the order the client opened them, which h2's count after a whole read
        is not); closed ones are forgotten only when the set is full."""
        live = self._live
        limit = self._limits.max_concurrent_streams
        if len(live) >= limit:
            streams = self._conn.streams
            live.intersection_update([i for i in live if i in streams and not streams[i].closed])
        return len(live) >= limit

    def _calm(self, reason: str) -> Http2Error:
        """End the connection: GOAWAY ``ENHANCE_YOUR_CALM`` (SPEC §5.8)."""
        self.closed = True
        self._conn.close_connection(ErrorCode.ENHANCE_YOUR_CALM)
        return Http2Error(ErrorCode.ENHANCE_YOUR_CALM, reason)

    # -- flow control ----------------------------------------------------------------------

    def acknowledge(self, stream_id: int, nbytes: int) -> None:
        """``nbytes`` of ``stream_id``'s DATA were handed on (or discarded): the client may
        send as much again (a WINDOW_UPDATE once enough accumulated; h2 decides)."""
        if nbytes <= 0 or self.closed:
            return
        try:
            self._conn.acknowledge_received_data(nbytes, stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            # The stream is gone: the connection window is what matters, and h2 gives it
            # back for closed streams too; a closed connection needs nothing.
            return

    def send_window(self, stream_id: int) -> int:
        """How many DATA bytes ``stream_id`` may send now (0 when closed or blocked)."""
        try:
            return self._conn.local_flow_control_window(stream_id)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return 0

    @property
    def max_frame(self) -> int:
        """The largest DATA payload the client accepts in one frame."""
        return self._conn.max_outbound_frame_size

    # -- sending ---------------------------------------------------------------------------

    def send_head(self, head: ResponseHead | Informational, stream_id: int, *, end: bool) -> None:
        """A response head (or a 1xx) on ``stream_id``; ``end``: nothing follows (no body)."""
        fields: list[tuple[bytes, bytes]] = [(b":status", str(head.status).encode())]
        fields.extend(line for line in head.headers if line[0] not in CONNECTION_SPECIFIC)
        self._conn.send_headers(stream_id, fields, end_stream=end)

    def send_data(self, stream_id: int, data: bytes, *, end: bool) -> None:
        """``data`` on ``stream_id``, within its window (``send_window``) and ``max_frame``
        (the caller splits)."""
        self._conn.send_data(stream_id, data, end_stream=end)

    def send_end(self, stream_id: int, trailers: Headers) -> None:
        """End ``stream_id``'s response: trailers in a HEADERS frame, or an empty DATA."""
        if trailers:
            lines = [line for line in trailers if line[0] not in CONNECTION_SPECIFIC]
            self._conn.send_headers(stream_id, lines, end_stream=True)
        else:
            self._conn.end_stream(stream_id)

    def reset(self, stream_id: int, code: int = ErrorCode.INTERNAL_ERROR) -> None:
        """RST_STREAM ``stream_id`` (an exchange aborted, or cancelled by us); no-op when the
        stream is already closed."""
        if self.closed:
            return
        try:
            self._conn.reset_stream(stream_id, code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return

    def goaway(self, last_stream_id: int, code: int = ErrorCode.NO_ERROR) -> None:
        """Queue a graceful GOAWAY announcing ``last_stream_id`` (streams above it are then
        refused); the connection goes on serving the streams at or below it."""
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = code
        self._extra.append(frame.serialize())
        self._refuse_above = min(self._refuse_above, last_stream_id)

    def ping(self, payload: bytes = DRAIN_PING) -> None:
        """Queue a PING (8 bytes of ``payload``); its ACK arrives as ``PingAcked``."""
        frame = PingFrame(0)
        frame.opaque_data = payload[:8].ljust(8, b"\0")
        self._extra.append(frame.serialize())

    def close(self, code: int = ErrorCode.NO_ERROR) -> None:
        """Queue h2's final GOAWAY (last stream id: the highest processed); nothing after."""
        if not self.closed:
            self.closed = True
            self._conn.close_connection(code)

    def data_to_send(self) -> bytes:
        """Everything queued for the client, in order (our own frames go first: a GOAWAY
        must not wait behind DATA)."""
        data = self._conn.data_to_send()
        if self._extra:
            data = b"".join(self._extra) + data
            self._extra.clear()
        return data

    @property
    def open_streams(self) -> int:
        """Streams the client opened that are not closed yet (h2's count)."""
        return self._conn.open_inbound_streams


_BAD_REQUEST: Final = [(b":status", b"400"), (b"content-length", b"0")]


def _settings(limits: Http2Limits, max_streams: int) -> h2.settings.Settings:
    """Our SETTINGS (SPEC §5.8), in force at once (h2 sends them with the preface)."""
    return h2.settings.Settings(
        client=False,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
            h2.settings.SettingCodes.HEADER_TABLE_SIZE: 4096,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
            # RFC 8441 §3: clients may open WebSockets with an extended CONNECT.
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
        },
    )
