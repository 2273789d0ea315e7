"""A real HTTP/2 origin for the upstream HTTP/2 pool's tests (trio + h2, optionally TLS with ALPN).

It shares no code with the gateway. Each accepted connection gets an ``OriginConnection``
record (its requests, the resets and the GOAWAY it received, whether it closed); each request
is answered by its own task once the request ended, by path:

- ``/hold``: waits for ``origin.release`` to be set, then 200 ``held``;
- ``/echo``: 200 with the request's body, and its trailers as response trailers;
- ``/big/<n>``: 200 with ``n`` bytes, sent as the client's windows allow (``blocked`` is set
  while the stream waits for window);
- ``/bad``: a malformed response (``connection: close`` in the head);
- ``/refuse``: RST_STREAM ``REFUSED_STREAM``;
- ``/die``: the head and some body, then the socket is closed;
- anything else: 200 ``conn <n> stream <id>``.

``goaway(last_stream_id)`` sends a GOAWAY frame without telling h2 (which would stop serving):
streams above it are then ignored, the others are answered. ``wait_for`` wakes on every change
instead of sleeping; the caller bounds every wait.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

READ_SIZE = 65536
Headers = list[tuple[bytes, bytes]]


@dataclass
class OriginRequest:
    stream_id: int
    headers: Headers
    body: bytearray = field(default_factory=bytearray)
    trailers: Headers = field(default_factory=list)

    @property
    def path(self) -> bytes:
        return dict(self.headers)[b":path"]


@dataclass
class OriginConnection:
    """What the origin saw of one connection."""

    number: int
    alpn: str | None = None
    requests: dict[int, OriginRequest] = field(default_factory=dict)
    resets: list[tuple[int, int]] = field(default_factory=list)
    goaway_received: bool = False
    goaway_sent: int | None = None
    closed: bool = False
    blocked: bool = False
    sent: dict[int, int] = field(default_factory=dict)  # body bytes sent per stream


class _Served:
    """One connection being served: the h2 state, the stream and the write lock."""

    def __init__(self, origin: H2Origin, stream: trio.abc.Stream, record: OriginConnection) -> None:
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        if origin.max_streams is not None:
            self.conn.local_settings = h2.settings.Settings(
                client=False,
                initial_values={
                    h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: origin.max_streams,
                    h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
                },
            )
        self.origin = origin
        self.stream = stream
        self.record = record
        self.lock = trio.Lock()
        self.window = trio.Event()

    async def flush(self, raw: bytes = b"") -> None:
        async with self.lock:
            data = self.conn.data_to_send() + raw
            if data:
                await self.stream.send_all(data)

    async def goaway(self, last_stream_id: int) -> None:
        frame = GoAwayFrame(0)
        frame.last_stream_id = last_stream_id
        frame.error_code = 0
        self.record.goaway_sent = last_stream_id
        await self.flush(frame.serialize())

    def answers(self, stream_id: int) -> bool:
        last = self.record.goaway_sent
        return last is None or stream_id <= last


class H2Origin:
    """An HTTP/2 origin on 127.0.0.1 (h2c, or TLS when ``tls`` is a server context)."""

    def __init__(
        self, *, max_streams: int | None = None, tls: ssl.SSLContext | None = None
    ) -> None:
        self.max_streams = max_streams
        self.port = 0
        self.connections: list[OriginConnection] = []
        self.release = trio.Event()
        self._tls = tls
        self._served: dict[int, _Served] = {}
        self._changed = trio.Event()

    @property
    def requests(self) -> int:
        return sum(len(conn.requests) for conn in self.connections)

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Wait (bounded by the caller) until ``predicate()`` holds."""
        while not predicate():
            await self._changed.wait()

    async def goaway(self, number: int, last_stream_id: int) -> None:
        """Send GOAWAY on connection ``number`` (1-based)."""
        await self._served[number].goaway(last_stream_id)
        self.notify()

    def notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started()
            async with listeners[0] as listener:
                while True:
                    tcp = await listener.accept()
                    nursery.start_soon(self._connection, tcp)

    async def _connection(self, tcp: trio.SocketStream) -> None:
        record = OriginConnection(len(self.connections) + 1)
        stream: trio.abc.Stream = tcp
        try:
            if self._tls is not None:
                tls = trio.SSLStream(tcp, self._tls, server_side=True)
                await tls.do_handshake()
                record.alpn = tls.selected_alpn_protocol()
                stream = tls
            self.connections.append(record)
            served = self._served[record.number] = _Served(self, stream, record)
            self.notify()
            await self._serve(served)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            record.closed = True
            self.notify()
            await trio.aclose_forcefully(stream)

    async def _serve(self, served: _Served) -> None:
        served.conn.initiate_connection()
        await served.flush()
        async with trio.open_nursery() as nursery:
            while await self._read(served, nursery):
                self.notify()
            nursery.cancel_scope.cancel()

    async def _read(self, served: _Served, nursery: trio.Nursery) -> bool:
        """One read and what it asks for; False once the connection is over."""
        try:
            data = await served.stream.receive_some(READ_SIZE)
            if not data:
                return False
            for event in served.conn.receive_data(data):
                self._on_event(served, event, nursery)
            await served.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.H2Error):
            return False
        return True

    def _on_event(self, served: _Served, event: h2.events.Event, nursery: trio.Nursery) -> None:
        record = served.record
        match event:
            case h2.events.RequestReceived(stream_id=sid, headers=headers):
                record.requests[sid] = OriginRequest(sid, list(headers))
            case h2.events.DataReceived(stream_id=sid, data=data, flow_controlled_length=n):
                record.requests[sid].body += data
                served.conn.acknowledge_received_data(n, sid)
            case h2.events.TrailersReceived(stream_id=sid, headers=headers):
                record.requests[sid].trailers = list(headers)
            case h2.events.StreamEnded(stream_id=sid):
                nursery.start_soon(self._respond, served, record.requests[sid])
            case h2.events.StreamReset(stream_id=sid, error_code=code):
                record.resets.append((sid, int(code)))
            case h2.events.WindowUpdated() | h2.events.RemoteSettingsChanged():
                served.window.set()
                served.window = trio.Event()
            case h2.events.ConnectionTerminated():
                record.goaway_received = True
            case _:
                pass

    async def _respond(self, served: _Served, request: OriginRequest) -> None:
        conn, sid = served.conn, request.stream_id
        path = request.path
        try:
            if path == b"/hold":
                await self.release.wait()
                await self._reply(served, sid, b"held")
            elif path == b"/echo":
                await self._reply(served, sid, bytes(request.body), request.trailers)
            elif path.startswith(b"/big/"):
                await self._big(served, sid, int(path[5:]))
            elif path == b"/bad":
                conn.send_headers(sid, [(b":status", b"200"), (b"connection", b"close")], True)
                await served.flush()
            elif path == b"/refuse":
                conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
                await served.flush()
            elif path == b"/die":
                conn.send_headers(sid, [(b":status", b"200")])
                conn.send_data(sid, b"partial")
                await served.flush()
                await trio.aclose_forcefully(served.stream)
            else:
                body = b"conn %d stream %d" % (served.record.number, sid)
                await self._reply(served, sid, body)
        except (trio.BrokenResourceError, trio.ClosedResourceError, h2.exceptions.H2Error):
            pass
        self.notify()

    async def _reply(
        self, served: _Served, sid: int, body: bytes, trailers: Headers | None = None
    ) -> None:
        if not served.answers(sid):
            return
        head = [(b":status", b"200"), (b"x-conn", str(served.record.number).encode())]
        served.conn.send_headers(sid, head, end_stream=not body and not trailers)
        if body:
            await self._send_body(served, sid, body, end_stream=not trailers)
        if trailers:
            served.conn.send_headers(sid, trailers, end_stream=True)
        await served.flush()

    async def _big(self, served: _Served, sid: int, size: int) -> None:
        served.conn.send_headers(sid, [(b":status", b"200")])
        await self._send_body(served, sid, b"x" * size, end_stream=True)

    async def _send_body(self, served: _Served, sid: int, body: bytes, *, end_stream: bool) -> None:
        """Send ``body`` as the client's windows allow (``blocked`` while they are shut)."""
        conn, record = served.conn, served.record
        sent = record.sent[sid] = 0
        while sent < len(body):
            window = conn.local_flow_control_window(sid)
            if window == 0:
                record.blocked = True
                self.notify()
                await served.window.wait()
                record.blocked = False
                continue
            step = min(window, conn.max_outbound_frame_size, len(body) - sent)
            conn.send_data(
                sid, body[sent : sent + step], end_stream=end_stream and sent + step == len(body)
            )
            sent = record.sent[sid] = sent + step
            await served.flush()
