"""The HTTP/2 upstream pool: multiplexed streams over shared connections (SPEC §5.7 "HTTP/2
upstream", §5.10).

Ring 1. Public API::

    pool = Http2Pool(dialer=dial_h2)          # dialer: Peer -> connected trio stream
    await nursery.start(pool.run)             # the pool nursery, until aclose
    up = await pool.open_stream(peer, settings, progress=None)   # -> Http2Upstream
    await pool.aclose()

``open_stream`` takes a stream slot on a connection to ``peer`` that has one free (below the
peer's SETTINGS_MAX_CONCURRENT_STREAMS, at most ``STREAM_CAP``), else waits for a connection
being set up, else dials a new one when the peer has fewer than ``max_conns_per_backend``
(dialling, connecting and going-away connections count), else waits for a slot. The caller's
cancel scope bounds it all (the exchange's ``connect_timeout``); like ``UpstreamPool.acquire``
it writes its stage to ``progress`` (``WAITING`` at the limit → 503, else → 504). A new
connection is set up when the peer's first SETTINGS frame arrived (after TCP, TLS with ALPN
``h2`` for ``https`` peers, and our preface); a connection that dies before that is a
``ConnectFailed``. Raises ``ConnectFailed`` and ``PoolClosed`` (also before ``run`` started).

Nursery: ``run`` owns the *pool nursery* (DESIGN.md §3.3 "upstream pool" row): one task per
connection (``Http2Connection.serve``) holding the connection's reader and its writer, handed to
``run`` over a memory channel (no nursery in an attribute). The reader feeds the adapter
(``protocols/http2_client.py``) and delivers each stream's events to its ``Http2Upstream``; the
writer alone writes, so stream tasks never write to the socket (a cancelled exchange cannot cut
a frame other streams depend on): they queue frames in the adapter and wait until the writer
flushed them (``flush``), or only wake it (acknowledgements, resets from ``release``).

Deadlines: the idle timeout is the reader's one cancel scope, whose deadline moves to
``idle_conn_timeout`` after the last stream left and back to infinity when a stream is taken; a
connection whose deadline passed takes no stream. Closing is bounded by ``CLOSE_BOUND`` (the
writer's last flush: our GOAWAY), then the socket is closed forcefully.

GOAWAY from the peer (RFC 9113 §6.8): the connection takes no new stream; streams above the
last stream id fail at once with ``UpstreamGone`` (``unprocessed``: the caller may send them
again); the others finish, then the connection closes. A connection that dies (EOF, a failed
read or write, an HTTP/2 connection error) fails all its streams with ``UpstreamGone``.

Must not: decide retries or statuses, read or write bodies for the exchange, take timeout
arguments, or block in ``Http2Upstream.release``.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
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
from a3s_gateway.upstream.connect_errors import ConnectFailed, PoolClosed
from a3s_gateway.upstream.dialer import Dialer, dial_h2
from a3s_gateway.upstream.http2_upstream import Http2Upstream
from a3s_gateway.upstream.pool import AcquireProgress, AcquireStage
from a3s_gateway.upstream.seam import UpstreamGone

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.http2_client import ClientEvent
    from a3s_gateway.upstream.peer import Peer, PoolSettings

__all__ = ["CLOSE_BOUND", "Http2Connection", "Http2Pool", "Http2Stats"]

#: How long a closing connection may take to flush its last frames (our GOAWAY).
CLOSE_BOUND: Final = 1.0
#: One read (DESIGN.md §3.5).
READ_SIZE: Final = 65536
_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
#: Where ``open_stream`` writes when the caller passed no progress record; nobody reads it.
_UNOBSERVED: Final = AcquireProgress()


class _State(enum.Enum):
    CONNECTING = "connecting"  # waiting for the peer's first SETTINGS
    READY = "ready"
    DRAINING = "draining"  # the peer sent GOAWAY: no new streams
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Http2Stats:
    """A peer's connections (set up or not), streams taken and dials in progress."""

    connections: int = 0
    streams: int = 0
    dialing: int = 0


class _PeerConns:
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
        return self.dialing > 0 or any(c.state is _State.CONNECTING for c in self.conns)

    def remove(self, conn: Http2Connection) -> None:
        if conn in self.conns:
            self.conns.remove(conn)
            self.changed()


class Http2Connection:
    """One HTTP/2 connection: its transport, adapter, streams, reader and writer."""

    def __init__(
        self, transport: trio.abc.Stream, peer: Peer, owner: _PeerConns, idle_timeout: float
    ) -> None:
        self.transport = transport
        self.peer = peer
        self.client = Http2Client(secure=peer.tls)
        self.state = _State.CONNECTING
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
            self.state is _State.READY
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
        if self.state is _State.CLOSED:
            return
        self.state = _State.CLOSED
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
        if self.state is not _State.READY:
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
            if self.state is _State.DRAINING:
                self.close()
            elif self.state is _State.READY:
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
        if self.state is _State.READY:  # the idle deadline passed
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
        self.state = _State.CLOSED
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
        if self.state is _State.CONNECTING:
            self.state = _State.READY
            self._was_ready = True
            self._ready.set()
            if self.active == 0:
                self._reader.deadline = trio.current_time() + self.idle_timeout
        self._owner.changed()  # the first SETTINGS, or a new stream limit

    def _go_away(self, last_stream_id: int) -> None:
        if self.state is _State.CLOSED:
            return
        self.state = _State.DRAINING
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


class Http2Pool:
    """HTTP/2 connections per ``Peer``, shared by concurrent streams (see the module docstring)."""

    def __init__(self, *, dialer: Dialer = dial_h2) -> None:
        self._dialer = dialer
        self._peers: dict[Peer, _PeerConns] = {}
        self._closed = False
        self._running = False
        self._starts, self._to_start = trio.open_memory_channel[Http2Connection](math.inf)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the connections until ``aclose``; start with ``nursery.start(pool.run)``.

        Cancelling ``run`` also shuts the pool down. Raises ``RuntimeError`` if the pool is
        already running.
        """
        if self._running:
            raise RuntimeError("Http2Pool.run is already running")
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                task_status.started()
                try:
                    async for conn in self._to_start:
                        nursery.start_soon(conn.serve)
                finally:
                    self._shutdown()
                    while True:  # closed by _shutdown: start what is queued, to close it
                        try:
                            conn = self._to_start.receive_nowait()
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                        nursery.start_soon(conn.serve)
        finally:
            self._running = False

    async def aclose(self) -> None:
        """Close every connection (GOAWAY, then the socket; streams left fail) and wake waiters
        with ``PoolClosed``; ``run`` returns once the connections' tasks ended, each within
        ``CLOSE_BOUND``. A checkpoint."""
        self._shutdown()
        await trio.lowlevel.checkpoint()

    async def open_stream(
        self, peer: Peer, settings: PoolSettings, progress: AcquireProgress | None = None
    ) -> Http2Upstream:
        """A stream slot on a connection to ``peer`` (see the module docstring). Cancellation
        at any point takes no slot."""
        await trio.lowlevel.checkpoint_if_cancelled()
        progress = _UNOBSERVED if progress is None else progress
        entry = self._peers.get(peer)
        if entry is None:
            entry = self._peers[peer] = _PeerConns()
        while True:
            if self._closed or not self._running:
                raise PoolClosed
            conn = entry.usable()
            if conn is not None:
                progress.stage = AcquireStage.DONE
                upstream = conn.reserve(settings.idle_conn_timeout)
                await trio.lowlevel.cancel_shielded_checkpoint()
                return upstream
            if entry.pending():
                progress.stage = AcquireStage.DIALLING
                await entry.wait()
            elif len(entry.conns) + entry.dialing < settings.max_conns_per_backend:
                conn = await self._establish(peer, entry, settings, progress)
                if conn.usable:
                    progress.stage = AcquireStage.DONE
                    return conn.reserve(settings.idle_conn_timeout)
            else:
                progress.stage = AcquireStage.WAITING
                await entry.wait()

    def stats(self, peer: Peer) -> Http2Stats:
        """Counts of ``peer``'s connections, streams taken and dials in progress."""
        entry = self._peers.get(peer)
        if entry is None:
            return Http2Stats()
        streams = sum(conn.active for conn in entry.conns)
        return Http2Stats(len(entry.conns), streams, entry.dialing)

    async def _establish(
        self, peer: Peer, entry: _PeerConns, settings: PoolSettings, progress: AcquireProgress
    ) -> Http2Connection:
        """Dial, hand the connection to ``run`` and wait until it is set up; a failure or a
        cancellation before that closes it."""
        progress.stage = AcquireStage.DIALLING
        entry.dialing += 1
        try:
            transport = await self._dialer(peer)
        finally:
            entry.dialing -= 1
            entry.changed()
        if self._closed:
            await trio.aclose_forcefully(transport)
            raise PoolClosed
        conn = Http2Connection(transport, peer, entry, settings.idle_conn_timeout)
        entry.conns.append(conn)
        self._starts.send_nowait(conn)
        try:
            await conn.established()
        except ConnectFailed:
            if self._closed:  # closed by aclose while it was being set up
                raise PoolClosed from None
            raise
        except BaseException:
            if conn.state is _State.CONNECTING:
                conn.close()
            raise
        return conn

    def _shutdown(self) -> None:
        """Mark closed, close every connection and wake every waiter."""
        if self._closed:
            return
        self._closed = True
        self._starts.close()
        for entry in self._peers.values():
            for conn in list(entry.conns):
                conn.close()
            entry.changed()
