"""``Http2Connection``: one pooled upstream HTTP/2 connection, its reader and its writer (SPEC
§5.7 "HTTP/2 upstream", §5.10); and ``PeerConns``, the connections of one peer.

Ring 1. ``Http2Pool`` (``upstream/http2_pool.py``) dials, builds an ``Http2Connection`` and
hands it to the *pool nursery*, where ``serve`` runs it: a reader and a writer in a nursery of
the connection's own, for as long as the connection lives (no nursery is kept in an
attribute). The reader feeds the adapter (``protocols/http2_client.py``) and delivers each
stream's events to its ``Http2Upstream``; the writer alone writes, so stream tasks never write
to the socket (a cancelled exchange cannot cut a frame other streams depend on): they queue
frames in the adapter and wait until the writer flushed them (``flush``), or only wake it
(acknowledgements, resets from ``release``).

Deadlines: the idle timeout is the reader's one cancel scope, whose deadline moves to
``idle_conn_timeout`` after the last stream left and back to infinity when a stream is taken; a
connection whose deadline passed takes no stream. Closing is bounded by ``CLOSE_BOUND`` (the
writer's last flush: our GOAWAY), then the socket is closed forcefully.

A connection is set up when the peer's first SETTINGS frame arrived (``established``); one that
dies before is a ``ConnectFailed``. GOAWAY from the peer (RFC 9113 §6.8): the connection takes no
new stream; streams above the last stream id fail at once with ``UpstreamGone``
(``unprocessed``: the caller may send them again); the others finish, then the connection
closes. A connection that dies (EOF, a failed read or write, an HTTP/2 connection error) fails
all its streams with ``UpstreamGone``.

Must not: dial, decide retries or statuses, read or write bodies for the exchange, or block in
``release``.
"""

from __future__ import annotations

import enum
import math
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Informational,
    ProtocolViolation,
    ResponseHead,
)
from a3s_gateway.protocols.http2_client import (
    CANCEL,
    GoAway,
    Http2Client,
    PeerSettings,
    StreamFailed,
    StreamReset,
    WindowOpened,
)
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.http2_upstream import Http2Upstream
from a3s_gateway.upstream.seam import UpstreamGone

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.http2_client import ClientEvent
    from a3s_gateway.upstream.peer import Peer

__all__ = ["CLOSE_BOUND", "READ_SIZE", "ConnState", "Http2Connection", "PeerConns"]

#: How long a closing connection may take to flush its last frames (our GOAWAY).
CLOSE_BOUND: Final = 1.0
#: One read (DESIGN.md §3.5).
READ_SIZE: Final = 65536
_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class ConnState(enum.Enum):
    """Where an ``Http2Connection`` is in its life."""

    CONNECTING = "connecting"  # waiting for the peer's first SETTINGS
    READY = "ready"
    DRAINING = "draining"  # the peer sent GOAWAY: no new streams
    CLOSED = "closed"


class PeerConns:
    """The connections of one peer, and the event its waiters wait on."""

    __slots__ = ("_changed", "conns", "dialing")

    def __init__(self) -> None:
        self.conns: list[Http2Connection] = []
        self.dialing = 0
        self._changed = trio.Event()

    def changed(self) -> None:
        """Something a waiter may care about changed: wake them all to look again."""
        event, self._changed = self._changed, trio.Event()
        event.set()

    async def wait(self) -> None:
        await self._changed.wait()

    def usable(self) -> Http2Connection | None:
        for conn in self.conns:
            if conn.usable:
                return conn
        return None

    def pending(self) -> bool:
        """A connection is being dialled or set up: its streams may serve the waiters."""
        return self.dialing > 0 or any(c.state is ConnState.CONNECTING for c in self.conns)

    def remove(self, conn: Http2Connection) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
            self.changed()


class Http2Connection:
    """One HTTP/2 connection: its transport, adapter, streams, reader and writer."""

    def __init__(
        self, transport: trio.abc.Stream, peer: Peer, owner: PeerConns, idle_timeout: float
    ) -> None:
        self.transport = transport
        self.peer = peer
        self.client = Http2Client(secure=peer.tls)
        self.state = ConnState.CONNECTING
        #: Streams whose head was sent, by id; ``active`` also counts those not sent yet.
        self.streams: dict[int, Http2Upstream] = {}
        self.active = 0
        self.served = 0
        self.idle_timeout = idle_timeout
        self.dead: UpstreamGone | None = None
        self._owner = owner
        self._was_ready = False
        self._ready = trio.Event()  # set when set up, or when that failed
        self._reader = trio.CancelScope()  # its deadline is the idle expiry
        self._wake = trio.Event()
        self._flushed = trio.Event()
        self._queued = 0  # wake_writer calls so far
        self._written = 0  # of those, the ones whose frames are on the socket
        self._closing = False
        self.client.start()
        self.wake_writer()

    # --- for the pool ---

    @property
    def usable(self) -> bool:
        """Set up, not going away or idle-expired, with a free stream slot."""
        return (
            self.state is ConnState.READY
            and not self._reader.cancel_called
            and self.active < self.client.max_concurrent_streams
        )

    def reserve(self, idle_timeout: float) -> Http2Upstream:
        """Take a stream slot (check ``usable`` first)."""
        upstream = Http2Upstream(self, reused=self.served > 0)
        self.served += 1
        self.active += 1
        self.idle_timeout = idle_timeout
        self._reader.deadline = math.inf
        return upstream

    async def established(self) -> None:
        """Wait until the peer's first SETTINGS arrived. Raises ``ConnectFailed`` if the
        connection ended before."""
        await self._ready.wait()
        if not self._was_ready:
            detail = self.dead.detail if self.dead is not None else "connection going away"
            raise ConnectFailed("error", f"HTTP/2 setup failed: {detail}")

    def close(self) -> None:
        """Close gracefully: GOAWAY, then the socket (the streams left fail). Never blocks."""
        if self.state is ConnState.CLOSED:
            return
        self.state = ConnState.CLOSED
        self.client.close()
        self._closing = True
        self.wake_writer()
        self._reader.cancel()

    # --- for the streams ---

    def open(self, upstream: Http2Upstream, head: RequestHead, *, end_stream: bool) -> int:
        """Send ``head`` on a new stream for ``upstream``; its id. Raises ``UpstreamGone`` when
        the connection died or is going away (nothing was sent)."""
        if self.dead is not None:
            raise UpstreamGone(self.dead.detail)
        if self.state is not ConnState.READY:
            raise UpstreamGone("connection going away")
        try:
            stream_id = self.client.open_stream(head, end_stream=end_stream)
        except ProtocolViolation as violation:
            raise UpstreamGone(violation.reason) from violation
        self.streams[stream_id] = upstream
        self.wake_writer()
        return stream_id

    def release(self, upstream: Http2Upstream) -> None:
        """``upstream`` is done with its slot."""
        self.streams.pop(upstream.stream_id, None)
        self.active -= 1
        self.wake_writer()
        if self.active == 0:
            if self.state is ConnState.DRAINING:
                self.close()
            elif self.state is ConnState.READY:
                self._reader.deadline = trio.current_time() + self.idle_timeout
        self._owner.changed()

    def wake_writer(self) -> None:
        """The adapter has frames queued: the writer sends them soon."""
        self._queued += 1
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything queued so far is on the socket. Raises ``UpstreamGone`` if
        the connection died first."""
        self.wake_writer()
        target = self._queued
        while self._written < target:
            if self.dead is not None:
                raise UpstreamGone(self.dead.detail)
            await self._flushed.wait()

    # --- the connection's task ---

    async def serve(self) -> None:
        """Run the reader and the writer until the connection ends; then fail what is left
        and close the socket. Never raises but for cancellation."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                await self._read_loop()
                self._closing = True  # the writer's last flush (a GOAWAY), bounded
                self.wake_writer()
                nursery.cancel_scope.deadline = trio.current_time() + CLOSE_BOUND
        finally:
            self._kill(UpstreamGone("connection closed"))
            await trio.aclose_forcefully(self.transport)

    async def _read_loop(self) -> None:
        with self._reader:
            while True:
                try:
                    data = await self.transport.receive_some(READ_SIZE)
                except _GONE as error:
                    self._kill(UpstreamGone(f"read failed: {error!r}"))
                    return
                if not data:
                    self._kill(UpstreamGone("connection closed by upstream"))
                    return
                try:
                    events = self.client.receive(data)
                except ProtocolViolation as violation:
                    self._kill(UpstreamGone(violation.reason))
                    return
                if self._dispatch(events) or self.client.wants_write:
                    self.wake_writer()
        if self.state is ConnState.READY:  # the idle deadline passed
            self.close()

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            target = self._queued
            data = self.client.data_to_send()
            if data:
                try:
                    await self.transport.send_all(data)
                except _GONE as error:
                    self._kill(UpstreamGone(f"write failed: {error!r}"))
                    return
            self._written = target
            self._notify_flushed()
            if self._closing:
                return

    def _notify_flushed(self) -> None:
        event, self._flushed = self._flushed, trio.Event()
        event.set()

    def _kill(self, error: UpstreamGone) -> None:
        """The connection is over: fail its streams, stop the reader, let the writer finish."""
        if self.dead is not None:
            return
        self.dead = error
        self.state = ConnState.CLOSED
        streams = list(self.streams.values())
        self.streams.clear()
        for upstream in streams:
            upstream.fail(error)
        self._ready.set()
        self._reader.cancel()
        self._closing = True
        self._wake.set()
        self._notify_flushed()
        self._owner.remove(self)

    # --- what the reader received ---

    def _dispatch(self, events: list[ClientEvent]) -> bool:
        """Hand ``events`` to their streams; True when acknowledgements were queued."""
        acked = False
        streams = self.streams
        for event in events:
            match event:
                case ResponseHead() | Informational() | BodyChunk() | EndOfBody():
                    upstream = streams.get(event.stream_id)
                    if upstream is not None:
                        upstream.deliver(event)
                    elif isinstance(event, BodyChunk):  # the stream was released: drop it
                        self.client.acknowledge(event.stream_id, len(event.data))
                        acked = True
                case StreamReset(stream_id=stream_id, error_code=code):
                    reset = streams.get(stream_id)
                    if reset is not None:
                        reset.reset_by_peer(code)
                case StreamFailed(stream_id=stream_id, violation=violation):
                    failed = streams.get(stream_id)
                    if failed is not None:
                        failed.fail(violation)
                case WindowOpened(stream_id=stream_id):
                    self._window_opened(stream_id)
                case GoAway(last_stream_id=last):
                    self._go_away(last)
                case PeerSettings():
                    self._settled()
        return acked

    def _window_opened(self, stream_id: int) -> None:
        if stream_id == 0:
            for upstream in self.streams.values():
                upstream.window_opened()
        else:
            one = self.streams.get(stream_id)
            if one is not None:
                one.window_opened()

    def _settled(self) -> None:
        if self.state is ConnState.CONNECTING:
            self.state = ConnState.READY
            self._was_ready = True
            self._ready.set()
            if self.active == 0:
                self._reader.deadline = trio.current_time() + self.idle_timeout
        self._owner.changed()  # the first SETTINGS, or a new stream limit

    def _go_away(self, last_stream_id: int) -> None:
        if self.state is ConnState.CLOSED:
            return
        self.state = ConnState.DRAINING
        self._ready.set()  # a connection going away before it was set up failed
        unprocessed = UpstreamGone("stream not processed: upstream going away (GOAWAY)")
        for stream_id in [sid for sid in self.streams if sid > last_stream_id]:
            upstream = self.streams.pop(stream_id)
            self.client.reset(stream_id, CANCEL)
            upstream.fail(unprocessed, unprocessed=True)
        self.wake_writer()
        if self.active == 0:
            self.close()
        self._owner.changed()
