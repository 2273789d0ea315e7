"""The TCP relay: a routed connection's client and backend byte streams copied both ways until
both directions ended (SPEC §6.3).

Ring 1. Nurseries: one per connection, holding the two pumps and the idle watch; a pump never
lets a peer's error out, so no exception group escapes. Deadlines: the idle watch cancels the
relay once no read in either direction returned bytes for ``timeouts.idle`` (0: never). A
cancellation from outside (the drain's grace ran out, a retired listener) closes both streams in
a bounded, shielded cleanup and propagates.

Each pump reads at most 64 KiB and writes it completely before reading again (backpressure).
**Half-close**: when a source ends (EOF), the pump shuts down writing on the other side and the
opposite direction goes on; the relay ends when both directions ended. A TLS side that the
gateway terminated cannot half-close (its close_notify ends the session), so it is only closed
when both directions are done. A reset or failed write on either side ends both at once.
Between two plain sockets the copy works on their descriptors (one scheduler trip per read,
none for a write that does not block), as the WebSocket relay does.

Must not: look at the bytes, or outlive its streams: it closes both on every path.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from typing import Final

import trio

from a3s_gateway.server.relay_hub import HubRelay, RelayHub
from a3s_gateway.streams import RawSocketStream, socket_fd, write_fd

__all__ = ["READ_SIZE", "RelayStats", "relay_tcp"]

#: Read size per direction (SPEC §14.1: one 64 KiB read buffered per proxied direction).
READ_SIZE: Final = 65536
#: Bound on closing both streams after the relay (TLS close_notify included).
CLEANUP_GRACE: Final = 1.0


@dataclass(slots=True)
class RelayStats:
    """What crossed one connection: bytes from the client (``bytes_in``) and to it
    (``bytes_out``), and how it ended: ``closed`` (both directions ended), ``idle``,
    ``client_reset`` / ``upstream_reset`` (that side failed), ``shutdown`` (cancelled from
    outside)."""

    bytes_in: int = 0
    bytes_out: int = 0
    ended: str = "closed"


class _Pump:
    """One direction: where it reads, where it writes, what passed."""

    __slots__ = ("count", "dst", "dst_fd", "failed", "from_client", "leftover", "src", "src_fd")

    def __init__(
        self, src: trio.abc.Stream, dst: trio.abc.Stream, leftover: bytes, *, from_client: bool
    ) -> None:
        self.src = src
        self.dst = dst
        self.leftover = leftover
        self.from_client = from_client
        self.count = 0
        #: Which side failed: ``src`` (a reset while reading) or ``dst`` (a failed write).
        self.failed = ""
        self.src_fd = socket_fd(src)
        self.dst_fd = socket_fd(dst)


class _Relay:
    __slots__ = ("down", "idle", "idled", "last", "open", "scope", "up")

    def __init__(
        self,
        client: trio.abc.Stream,
        upstream: trio.abc.Stream,
        client_leftover: bytes,
        idle: float,
    ) -> None:
        self.up = _Pump(client, upstream, client_leftover, from_client=True)
        self.down = _Pump(upstream, client, b"", from_client=False)
        self.idle = idle if idle > 0 else math.inf
        self.scope = trio.CancelScope()
        self.last = trio.current_time()
        self.idled = False
        #: Directions still copying.
        self.open = 2

    async def run(self) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, self.up)
                nursery.start_soon(self._pump, self.down)
                if self.idle != math.inf:
                    nursery.start_soon(self._watch_idle)

    async def _watch_idle(self) -> None:
        """Cancel the relay once no read returned bytes for ``idle`` seconds (one
        ``current_time`` per read instead of a deadline moved per read)."""
        while True:
            due = self.last + self.idle
            if trio.current_time() >= due:
                self.idled = True
                self.scope.cancel()
                return
            await trio.sleep_until(due)

    async def _pump(self, pump: _Pump) -> None:
        if pump.src_fd >= 0 and pump.dst_fd >= 0:
            await self._copy_sockets(pump)
        else:
            await self._copy_streams(pump)
        self.open -= 1
        if pump.failed:
            self.scope.cancel()  # a reset or failed write: both sides end now
            return
        if self.open == 0:
            self.scope.cancel()  # both directions ended: the idle watch is done too
            return
        dst = pump.dst
        if isinstance(dst, trio.abc.HalfCloseableStream):
            try:
                await dst.send_eof()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pump.failed = "dst"
                self.scope.cancel()

    async def _copy_streams(self, pump: _Pump) -> None:
        """The copy over trio streams (a TLS side)."""
        data: bytes | bytearray = pump.leftover
        pump.leftover = b""
        src, dst = pump.src, pump.dst
        while True:
            if data:
                try:
                    await dst.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pump.failed = "dst"
                    return
                pump.count += len(data)
            try:
                data = await src.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pump.failed = "src"
                return
            if not data:
                return
            self.last = trio.current_time()

    async def _copy_sockets(self, pump: _Pump) -> None:
        """The copy between two plain TCP sockets, on their descriptors."""
        src, dst = pump.src_fd, pump.dst_fd
        data, pump.leftover = pump.leftover, b""
        while True:
            if data:
                try:
                    await write_fd(dst, data)
                except (OSError, trio.ClosedResourceError, trio.BusyResourceError):
                    pump.failed = "dst"
                    return
                pump.count += len(data)
            try:
                await trio.lowlevel.wait_readable(src)
                data = os.read(src, READ_SIZE)
            except BlockingIOError:
                data = b""
                continue
            except (OSError, trio.ClosedResourceError, trio.BusyResourceError):
                pump.failed = "src"
                return
            if not data:
                return
            self.last = trio.current_time()

    def outcome(self) -> str:
        """How the relay ended, as ``RelayStats.ended`` words."""
        if self.idled:
            return "idle"
        for pump in (self.up, self.down):
            if pump.failed:
                client_side = (pump.failed == "src") == pump.from_client
                return "client_reset" if client_side else "upstream_reset"
        return "closed"


async def _in_tasks(
    client: trio.abc.Stream,
    upstream: trio.abc.Stream,
    leftover: bytes,
    idle: float,
    stats: RelayStats,
) -> None:
    """The relay as two pump tasks (a TLS side, or no hub)."""
    relay = _Relay(client, upstream, leftover, idle)
    try:
        await relay.run()
        stats.ended = relay.outcome()
    finally:
        stats.bytes_in, stats.bytes_out = relay.up.count, relay.down.count


async def _in_hub(
    hub: RelayHub,
    client: RawSocketStream,
    upstream: RawSocketStream,
    leftover: bytes,
    idle: float,
    stats: RelayStats,
) -> None:
    """The relay done by the worker's hub (``relay_hub.py``); this task only waits for its
    end or its idle bound, and takes it out of the hub however it ends."""
    relay = HubRelay(client.socket, upstream.socket, leftover)
    try:
        hub.add(relay)
        if await relay.wait(idle if idle > 0 else math.inf):
            stats.ended = "idle"
            return
        if relay.failed:
            stats.ended = "client_reset" if relay.failed == "client" else "upstream_reset"
    finally:
        hub.remove(relay)
        stats.bytes_in, stats.bytes_out = relay.up.count, relay.down.count


async def _close_both(client: trio.abc.Stream, upstream: trio.abc.Stream) -> None:
    """Close both streams at once, shielded: each gets ``CLEANUP_GRACE`` for a graceful close
    (a TLS close_notify), then is closed forcefully, so a side whose close hangs never keeps
    the other open."""
    with trio.CancelScope(shield=True):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_close, client)
            nursery.start_soon(_close, upstream)


async def _close(stream: trio.abc.Stream) -> None:
    with trio.move_on_after(CLEANUP_GRACE) as graceful:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.aclose()
    if graceful.cancelled_caught:
        await trio.aclose_forcefully(stream)


async def relay_tcp(
    client: trio.abc.Stream,
    upstream: trio.abc.Stream,
    *,
    leftover: bytes = b"",
    idle: float,
    stats: RelayStats | None = None,
    hub: RelayHub | None = None,
) -> RelayStats:
    """Relay ``client`` ↔ ``upstream`` until both directions ended (module docstring);
    ``leftover``: client bytes already read (sent to the upstream first); ``idle`` in seconds
    (0: no bound). Two plain sockets go to ``hub`` when it runs. Closes both streams; never
    raises for what a peer does. A cancellation from outside propagates after the cleanup,
    with ``stats`` (if given) filled in."""
    stats = RelayStats() if stats is None else stats
    try:
        if (
            hub is not None
            and hub.running
            and isinstance(client, RawSocketStream)
            and isinstance(upstream, RawSocketStream)
        ):
            await _in_hub(hub, client, upstream, leftover, idle, stats)
        else:
            await _in_tasks(client, upstream, leftover, idle, stats)
    except BaseException:
        stats.ended = "shutdown"
        raise
    finally:
        await _close_both(client, upstream)
    return stats
