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
connection (``Http2Connection.serve``, ``upstream/http2_connection.py``: the connection's reader
and writer, its idle deadline, GOAWAY and failures), handed to ``run`` over a memory channel (no
nursery in an attribute). Sets no deadline of its own; ``aclose`` leaves each connection
``CLOSE_BOUND`` to flush its GOAWAY.

Must not: decide retries or statuses, read or write bodies for the exchange, or take timeout
arguments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.upstream.connect_errors import ConnectFailed, PoolClosed
from a3s_gateway.upstream.dialer import Dialer, dial_h2
from a3s_gateway.upstream.http2_connection import (
    CLOSE_BOUND,
    ConnState,
    Http2Connection,
    PeerConns,
)
from a3s_gateway.upstream.pool import AcquireProgress, AcquireStage

if TYPE_CHECKING:
    from a3s_gateway.upstream.http2_upstream import Http2Upstream
    from a3s_gateway.upstream.peer import Peer, PoolSettings

# Http2Connection and CLOSE_BOUND are defined in upstream/http2_connection.py; named here too.
__all__ = ["CLOSE_BOUND", "Http2Connection", "Http2Pool", "Http2Stats"]

#: Where ``open_stream`` writes when the caller passed no progress record; nobody reads it.
_UNOBSERVED: Final = AcquireProgress()


@dataclass(frozen=True, slots=True)
class Http2Stats:
    """A peer's connections (set up or not), streams taken and dials in progress."""

    connections: int = 0
    streams: int = 0
    dialing: int = 0


class Http2Pool:
    """HTTP/2 connections per ``Peer``, shared by concurrent streams (see the module docstring)."""

    def __init__(self, *, dialer: Dialer = dial_h2) -> None:
        self._dialer = dialer
        self._peers: dict[Peer, PeerConns] = {}
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
            entry = self._peers[peer] = PeerConns()
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
        self, peer: Peer, entry: PeerConns, settings: PoolSettings, progress: AcquireProgress
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
            if conn.state is ConnState.CONNECTING:
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
