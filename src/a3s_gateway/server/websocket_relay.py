"""The raw WebSocket relay: after both handshakes, the client's and the upstream's byte streams
copied both ways until the session ends (SPEC §5.11 step 5 and its table).

Ring 1. Nurseries: one per session, holding the two pumps (client → upstream, upstream →
client) and the idle watch; a pump never lets an exception out, so no exception group escapes.
Deadlines: the idle watch cancels the session once no read in either direction returned bytes
for ``stream_idle_timeout`` (Close 1001 both ways); once a Close frame passed or one side
ended, the session's scope gets a fixed deadline of now + 5 s (the wait for the other side's
Close). A cancellation from outside (the gateway's shutdown grace ran out) sends Close 1001
both ways in a bounded, shielded cleanup, then unwinds.

Bytes are relayed as read, one read at a time per direction (backpressure: a pump reads again
only once the other side took the last read). Between two plain TCP sockets the copy works on
their descriptors, so that a read or write that does not block costs no trip through trio's
scheduler; TLS streams go through trio's ``Stream`` calls. A ``FrameTracker`` per direction
follows frame headers only, never payloads, so the gateway knows where it may inject its own
Close frame (masked toward the upstream, unmasked toward the client) and which close codes
passed; a direction whose bytes it cannot follow is relayed on untouched, and nothing is
injected into it.

Must not: parse or change payloads (permessage-deflate and subprotocols are end to end), know
HTTP, or outlive its streams: it closes both on every path.
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.websocket import FrameError, FrameTracker, close_frame
from a3s_gateway.server.relay_hub import HubRelay
from a3s_gateway.streams import RawSocketStream, socket_fd, write_fd

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.server.relay_hub import RelayHub
    from a3s_gateway.upstream.seam import Handover

__all__ = ["CLOSE_WAIT", "SessionStats", "relay_websocket"]

#: Read size per direction (SPEC §14.1: one 64 KiB read buffered per proxied direction).
READ_SIZE: Final = 65536
#: After a Close frame was sent (or one side ended): how long the other side has to finish.
CLOSE_WAIT: Final = 5.0
#: Bound on the cleanup after a cancellation (the Close frames and closing both streams).
CLEANUP_GRACE: Final = 1.0
#: RFC 6455 §7.4.1: going away (drain, idle), and the gateway's "bad gateway" (upstream lost).
GOING_AWAY: Final = 1001
BAD_GATEWAY: Final = 1014


@dataclass(slots=True)
class SessionStats:
    """What crossed one session: bytes each way, the close codes each peer sent (None: none),
    and how it ended (``closed``: a Close handshake or both sides ended; ``idle``: the stream
    idle timeout; ``client_gone`` / ``upstream_gone``: that side ended without a Close;
    ``shutdown``: cancelled from outside)."""

    bytes_in: int = 0
    bytes_out: int = 0
    close_client: int | None = None
    close_upstream: int | None = None
    ended: str = "closed"


class _Direction:
    """One direction of the relay: where it reads, where it writes, and what passed."""

    __slots__ = (
        "count",
        "dirty",
        "dst",
        "dst_fd",
        "ended",
        "gone_code",
        "injected",
        "leftover",
        "mask",
        "prefed",
        "src",
        "src_fd",
        "tracker",
    )

    def __init__(
        self, src: trio.abc.Stream, dst: trio.abc.Stream, leftover: bytes, *, from_client: bool
    ) -> None:
        self.src = src
        self.dst = dst
        self.leftover = leftover
        #: Client frames are masked; so must be a Close the gateway sends toward the upstream.
        self.tracker = FrameTracker(masked=from_client)
        self.mask = from_client
        #: The Close the gateway sends on when this direction's source ends without one.
        self.gone_code = GOING_AWAY if from_client else BAD_GATEWAY
        #: The source ended (EOF, reset) or the destination failed.
        self.ended = False
        #: A write to ``dst`` was cut short: where its frames stand is unknown.
        self.dirty = False
        #: The gateway wrote a Close of its own into ``dst``.
        self.injected = False
        #: Bytes relayed from ``src`` to ``dst``.
        self.count = 0
        #: ``leftover`` was already shown to the tracker (bytes the relay hub read and could
        #: not write yet when it handed the session back): the next ``follow`` skips it.
        self.prefed = False
        #: The descriptors of plain TCP streams (-1 for TLS and other streams): a session
        #: between two sockets is copied on them (``_Session._copy_sockets``).
        self.src_fd = socket_fd(src)
        self.dst_fd = socket_fd(dst)

    def follow(self, data: bytes | bytearray) -> None:
        """Let the tracker see ``data``; bytes it cannot follow are relayed all the same
        (the tracker is then broken, and nothing is injected into this direction)."""
        if self.prefed:
            self.prefed = False
            return
        try:  # noqa: SIM105 -- every read passes here: try costs nothing, suppress() a call
            self.tracker.feed(data)
        except FrameError:
            pass

    def may_inject(self) -> bool:
        """Whether the gateway may write a Close frame of its own into ``dst`` now."""
        tracker = self.tracker
        return tracker.at_boundary and not (tracker.closed or self.dirty or self.injected)

    async def inject_close(self, code: int) -> None:
        """Send a Close ``code`` into ``dst`` if that is safe; never raises for a broken
        stream (marks the direction dirty instead)."""
        if not self.may_inject():
            return
        frame = close_frame(code, mask_key=secrets.token_bytes(4) if self.mask else None)
        self.injected = self.dirty = True  # dirty until the write completed
        try:
            await self.dst.send_all(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        self.dirty = False


class _Session:
    """Both directions of one session, the scope that bounds it and its idle watch."""

    __slots__ = ("closing", "down", "hub", "idle", "idled", "last", "scope", "stats", "up")

    def __init__(
        self,
        client: Handover,
        upstream: Handover,
        idle: float,
        stats: SessionStats,
        hub: RelayHub | None = None,
    ) -> None:
        self.up = _Direction(client.stream, upstream.stream, client.leftover, from_client=True)
        self.down = _Direction(upstream.stream, client.stream, upstream.leftover, from_client=False)
        self.idle = idle if idle > 0 else math.inf
        self.scope = trio.CancelScope()
        #: When a read last returned bytes (either direction); the idle watch reads it.
        self.last = trio.current_time()
        #: A Close passed or one side ended: the deadline is fixed, the idle watch is over.
        self.closing = False
        self.idled = False
        self.stats = stats
        #: The worker's relay hub: the steady state of a session between two plain sockets
        #: is copied there (``_in_hub``); None or not running: the pumps copy it all.
        self.hub = hub

    async def run(self) -> None:
        hub = self.hub
        if (
            hub is not None
            and hub.running
            and isinstance(self.up.src, RawSocketStream)
            and isinstance(self.down.src, RawSocketStream)
            and not self.down.leftover
        ):
            if await self._in_hub(hub, self.up.src, self.down.src):
                return
            if self.up.tracker.closed or self.down.tracker.closed:
                self._start_closing()
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, self.up, self.down)
                nursery.start_soon(self._pump, self.down, self.up)
                if self.idle != math.inf:
                    nursery.start_soon(self._watch_idle)
        if self.idled:
            self.stats.ended = "idle"
            await self._idle_close()

    async def _in_hub(
        self, hub: RelayHub, client: RawSocketStream, upstream: RawSocketStream
    ) -> bool:
        """Let the hub copy the session until something needs this task: a Close frame or
        an EOF in either direction, a failed side, the idle bound, a cancellation. Each read
        goes through its direction's tracker first. Returns True when the session ended here
        (idle: Close 1001 both ways done); else the pumps carry on from where the hub stopped,
        with the bytes it could not write yet as their first write."""
        up, down = self.up, self.down
        leftover, up.leftover = up.leftover, b""
        if leftover:
            up.follow(leftover)
        relay = HubRelay(client.socket, upstream.socket, leftover, hand_back=True)
        relay.up.watch = _watcher(up)
        relay.down.watch = _watcher(down)
        try:
            if up.tracker.closed:  # a Close already in the client's first bytes
                up.leftover, up.prefed = leftover, bool(leftover)
                return False
            relay.last = self.last
            hub.add(relay)
            if not await relay.wait(self.idle):
                return False
            self.idled = True
        finally:
            hub.remove(relay)
            self.last = relay.last
            for mine, theirs in ((up, relay.up), (down, relay.down)):
                mine.count += theirs.count
                if theirs.pending is not None:  # read and shown to the tracker, not written
                    mine.leftover, mine.prefed = bytes(theirs.pending), True
                    mine.dirty = True  # until the pump writes it: no Close may go in first
        # Idle: the pumps do not run, so bytes the hub could not write stay unwritten. They
        # were shown to the tracker (``dirty`` keeps Close frames out of that direction), and
        # the reads ``_idle_close`` makes next must all be shown to it.
        for d in (up, down):
            d.leftover, d.prefed = b"", False
        self.stats.ended = "idle"
        await self._idle_close()
        return True

    async def _watch_idle(self) -> None:
        """Cancel the session once no read returned bytes for ``idle`` seconds (one
        ``current_time`` per read instead of moving a deadline per read)."""
        while not self.closing:
            due = self.last + self.idle
            if trio.current_time() >= due:
                self.idled = True
                self.scope.cancel()
                return
            await trio.sleep_until(due)

    async def _pump(self, d: _Direction, other: _Direction) -> None:
        """Copy ``d``'s source to its destination until the source ends; then send the Close
        the table says (if it is safe) and give the other direction ``CLOSE_WAIT`` to end."""
        if d.src_fd >= 0 and d.dst_fd >= 0:
            await self._copy_sockets(d)
        else:
            await self._copy_streams(d)
        d.ended = True
        if not d.dirty:  # the source ended (a failed write means the destination did)
            await self._source_ended(d, other)
        if other.ended or (d.tracker.closed and other.tracker.closed):
            # Both ended, or one ended after the Close handshake completed: the gateway, the
            # server to its client, closes both now (RFC 6455 §7.1.1) rather than wait.
            self.scope.cancel()
        elif not self.closing:
            self._start_closing()

    async def _copy_streams(self, d: _Direction) -> None:
        """The copy over trio streams (TLS on either side)."""
        data: bytes | bytearray = d.leftover
        d.leftover = b""
        try:
            while True:
                if data:
                    await self._forward(d, data)
                data = await d.src.receive_some(READ_SIZE)
                if not data:
                    return
                self.last = trio.current_time()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _forward(self, d: _Direction, data: bytes | bytearray) -> None:
        d.follow(data)
        d.dirty = True
        await d.dst.send_all(data)
        d.dirty = False
        d.count += len(data)
        if d.tracker.closed and not self.closing:
            self._start_closing()

    async def _copy_sockets(self, d: _Direction) -> None:
        """The copy between two plain TCP sockets, on their descriptors: one trip through
        trio's scheduler per read (the wait for readability), none for a write that does not
        block (a stream's ``send_all`` yields once more after every write)."""
        src, dst, tracker = d.src_fd, d.dst_fd, d.tracker
        data, d.leftover = d.leftover, b""
        try:
            while True:
                if data:
                    d.follow(data)
                    d.dirty = True
                    await write_fd(dst, data)
                    d.dirty = False
                    d.count += len(data)
                    if tracker.closed and not self.closing:
                        self._start_closing()
                await trio.lowlevel.wait_readable(src)
                try:
                    data = os.read(src, READ_SIZE)
                except BlockingIOError:
                    data = b""
                    continue
                if not data:
                    return
                self.last = trio.current_time()
        except (OSError, trio.ClosedResourceError, trio.BusyResourceError):
            return  # a reset, a broken pipe, a descriptor closed under us

    async def _source_ended(self, d: _Direction, other: _Direction) -> None:
        """``d``'s source ended: without a Close of its own (and while its destination is
        there) the gateway sends the table's Close on its behalf; then half-close. The
        destination is gone only when the other direction's source ended; a failed write of
        the other direction (``dirty``) was ``d``'s source failing, seen first there."""
        destination_gone = other.ended and not other.dirty
        if not d.tracker.closed and not destination_gone:
            if self.stats.ended == "closed":
                self.stats.ended = "client_gone" if d is self.up else "upstream_gone"
            await d.inject_close(d.gone_code)
        dst = d.dst
        if isinstance(dst, trio.abc.HalfCloseableStream) and not d.dirty:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await dst.send_eof()

    def _start_closing(self) -> None:
        self.closing = True
        self.scope.deadline = trio.current_time() + CLOSE_WAIT

    async def _idle_close(self) -> None:
        """The stream idle timeout: Close 1001 both ways, then up to ``CLOSE_WAIT`` for the
        peers' Close frames (read and dropped)."""
        with trio.move_on_after(CLOSE_WAIT):
            await self.up.inject_close(GOING_AWAY)
            await self.down.inject_close(GOING_AWAY)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_await_close, self.up)
                nursery.start_soon(_await_close, self.down)

    async def going_away(self) -> None:
        """After a cancellation from outside: Close 1001 both ways where it is safe, bounded
        and shielded."""
        self.stats.ended = "shutdown"
        with trio.move_on_after(CLEANUP_GRACE) as cleanup:
            cleanup.shield = True
            if not self.up.ended:
                await self.up.inject_close(GOING_AWAY)
            if not self.down.ended:
                await self.down.inject_close(GOING_AWAY)

    async def close(self) -> None:
        """Close both streams, bounded and shielded, and settle the close codes seen."""
        stats = self.stats
        stats.bytes_in, stats.bytes_out = self.up.count, self.down.count
        stats.close_client = self.up.tracker.close_code
        stats.close_upstream = self.down.tracker.close_code
        with trio.move_on_after(CLEANUP_GRACE) as cleanup:
            cleanup.shield = True
            for stream in (self.up.src, self.down.src):
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.aclose()


def _watcher(d: _Direction) -> Callable[[bytes], bool]:
    """The hub's view of ``d``: show each read to its tracker; True once a Close passed."""

    def watch(data: bytes) -> bool:
        d.follow(data)
        return d.tracker.closed

    return watch


async def _await_close(d: _Direction) -> None:
    """Read and drop ``d``'s source until its Close frame passed or it ended."""
    tracker = d.tracker
    try:
        while not tracker.closed:
            data = await d.src.receive_some(READ_SIZE)
            if not data:
                return
            d.follow(data)
            if tracker.broken:
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        return


async def relay_websocket(
    client: Handover,
    upstream: Handover,
    *,
    idle: float,
    stats: SessionStats | None = None,
    hub: RelayHub | None = None,
) -> SessionStats:
    """Relay one WebSocket session between ``client`` and ``upstream`` (both taken over after
    the ``101``, with the bytes each sent past its handshake) until it ends; ``idle`` is the
    stream idle timeout in seconds (0: none). Closes both streams; never raises for anything
    a peer does (a cancellation from outside propagates after the cleanup, with ``stats``, if
    given, filled in all the same)."""
    session = _Session(client, upstream, idle, SessionStats() if stats is None else stats, hub)
    try:
        await session.run()
    except BaseException:  # Cancelled, alone or as the pumps' group: from outside
        await session.going_away()
        raise
    finally:
        await session.close()
    return session.stats
