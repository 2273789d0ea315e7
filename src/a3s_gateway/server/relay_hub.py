"""One task that copies the bytes of every plain-socket TCP relay of a worker (SPEC §6.3).

Ring 1. Nurseries: none of its own; ``RelayHub.run`` runs in the gateway's root nursery for the
gateway's life (``app.py``). Deadlines: none here; each relay's own task (``tcp_relay.py``) owns
its idle bound and its cancellation, and takes its connection out of the hub before it closes
the sockets.

Why a hub. A relay made of two trio tasks pays, per read, a trip through trio's scheduler and
two ``epoll_ctl`` calls (trio registers a descriptor one-shot for each wait). For a byte relay
that is most of the cost: the WebSocket relay built that way reached about a third of NGINX's
message rate. The hub keeps its own level-triggered epoll set, with every relayed socket
registered once for as long as its relay lasts, and waits on that set's descriptor through trio
(one re-arm per wake-up, however many sockets are ready). On a wake-up it reads each ready
source once (at most 64 KiB) and writes that to the other side at once.

Per direction the rules are those of the two-task relay: a direction reads again only once its
last read was written completely (backpressure: while bytes are pending, the source is taken
out of the read interest and the destination waits for writability); an EOF shuts down writing
on the other side (half-close) and the opposite direction goes on; a reset or failed write ends
both directions; the relay ends when both directions ended. The interest set of a descriptor
changes only on those transitions, so a steady echo makes no ``epoll_ctl`` call at all.

Fairness: one read per ready source per wake-up, then the hub yields to trio.

Must not: close a descriptor (the relay's task owns its sockets), look at the bytes, or block.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["HubRelay", "RelayHub"]

#: Read size per direction (SPEC §14.1: one 64 KiB read buffered per proxied direction).
READ_SIZE: Final = 65536
#: Most events taken from the epoll set per wake-up.
_BATCH: Final = 512
_IN: Final = select.EPOLLIN | select.EPOLLRDHUP
_OUT: Final = select.EPOLLOUT
_WRITABLE: Final = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
_READABLE: Final = _IN | select.EPOLLHUP | select.EPOLLERR


class _Direction:
    """One direction of a relay: source and destination descriptors, bytes not yet written."""

    __slots__ = ("count", "dst", "dst_sock", "ended", "pending", "src", "watch")

    def __init__(self, src: socket.socket, dst: socket.socket, pending: bytes) -> None:
        #: Sees every read before it is written; True hands the relay back (``HubRelay``).
        self.watch: Callable[[bytes], bool] | None = None
        self.src = src.fileno()
        self.dst = dst.fileno()
        #: The destination socket (to shut down its writing half at the source's EOF).
        self.dst_sock = dst
        #: Bytes read but not yet written (None: nothing pending; reading goes on).
        self.pending: memoryview | None = memoryview(pending) if pending else None
        #: The source ended (EOF) and everything it sent was written.
        self.ended = False
        self.count = 0


class HubRelay:
    """One connection relayed by the hub: two plain sockets, its counts and its end.

    A relay that only needs the steady state copied (the WebSocket relay: frames are
    followed, and Close frames injected, by the session's own task) sets ``watch`` on its
    directions and ``hand_back``: the hub then ends the relay, with ``handed_back`` set and
    nothing shut down, at a source's EOF or as soon as a ``watch`` returns True (after the
    bytes it saw were written, or with them still ``pending``), so that its task carries on.
    """

    __slots__ = (
        "client_fd",
        "done",
        "down",
        "failed",
        "hand_back",
        "handed_back",
        "last",
        "up",
        "upstream_fd",
    )

    def __init__(
        self,
        client: socket.socket,
        upstream: socket.socket,
        leftover: bytes,
        *,
        hand_back: bool = False,
    ) -> None:
        self.client_fd = client.fileno()
        self.upstream_fd = upstream.fileno()
        self.up = _Direction(client, upstream, leftover)
        self.down = _Direction(upstream, client, b"")
        #: Set once both directions ended or one side failed (or the relay was handed back).
        self.done = trio.Event()
        #: ``client`` or ``upstream``: that side failed (a reset, a failed write); "" if none.
        self.failed = ""
        #: When a read last returned bytes (trio's clock): the idle bound's reference.
        self.last = trio.current_time()
        self.hand_back = hand_back
        #: The hub ended the relay to give it back to its task (see the class docstring).
        self.handed_back = False

    async def wait(self, idle: float) -> bool:
        """Wait for the relay's end (False) or until no read returned bytes for ``idle``
        seconds (True; ``math.inf``: never). Its task still removes it from the hub."""
        while not self.done.is_set():
            due = self.last + idle
            if trio.current_time() >= due:
                return True
            with trio.move_on_at(due):
                await self.done.wait()
        return False

    def mask(self, fd: int) -> int:
        """The events ``fd`` waits for now: readable while its direction reads, writable
        while the other direction has bytes pending for it."""
        reading = self.up if fd == self.client_fd else self.down
        writing = self.down if fd == self.client_fd else self.up
        mask = 0
        if not reading.ended and reading.pending is None:
            mask |= _IN
        if writing.pending is not None:
            mask |= _OUT
        return mask


class RelayHub:
    """The worker's relay hub (module docstring). ``running`` tells a relay whether it may
    hand its sockets over; a hub that is not running (a test's bare context) takes none."""

    __slots__ = ("_by_fd", "_epoll", "_masks", "running")

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        #: Descriptor → the relay it belongs to.
        self._by_fd: dict[int, HubRelay] = {}
        #: Descriptor → its registered event mask.
        self._masks: dict[int, int] = {}
        self.running = False

    def __len__(self) -> int:
        """Relays in the hub now."""
        return len(self._by_fd) // 2

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve relays until cancelled."""
        epoll = self._epoll = select.epoll()
        self.running = True
        task_status.started()
        try:
            while True:
                await trio.lowlevel.wait_readable(epoll.fileno())
                for fd, events in epoll.poll(0, _BATCH):
                    relay = self._by_fd.get(fd)
                    if relay is not None:
                        self._service(relay, fd, events)
        finally:
            self.running = False
            for relay in list(self._by_fd.values()):
                self._finish(relay)
            self._epoll = None
            trio.lowlevel.notify_closing(epoll.fileno())
            epoll.close()

    def add(self, relay: HubRelay) -> None:
        """Start relaying ``relay``'s sockets (both non-blocking, connected)."""
        self._by_fd[relay.client_fd] = relay
        self._by_fd[relay.upstream_fd] = relay
        for fd in (relay.client_fd, relay.upstream_fd):
            self._set_mask(relay, fd)
        if relay.up.pending is not None:
            self._write(relay, relay.up)

    def remove(self, relay: HubRelay) -> None:
        """Stop relaying ``relay`` (idempotent); its sockets may be closed afterwards."""
        epoll = self._epoll
        for fd in (relay.client_fd, relay.upstream_fd):
            if self._by_fd.get(fd) is relay:
                del self._by_fd[fd]
                if self._masks.pop(fd, 0) and epoll is not None:
                    with contextlib.suppress(OSError):  # not registered after all: nothing to do
                        epoll.unregister(fd)

    def _set_mask(self, relay: HubRelay, fd: int) -> None:
        """Register, modify or unregister ``fd`` for the events it waits for now. A refusal
        of the kernel (``ENOSPC`` at ``fs.epoll.max_user_watches``, ``ENOMEM``) fails this
        relay alone; it never escapes into the hub's loop."""
        if relay.done.is_set():  # finished (and removed): it registers nothing any more
            return
        mask = relay.mask(fd)
        old = self._masks.get(fd, 0)
        epoll = self._epoll
        if mask == old or epoll is None:
            return
        try:
            if not old:
                epoll.register(fd, mask)
            elif not mask:
                epoll.unregister(fd)
            else:
                epoll.modify(fd, mask)
        except OSError:
            self._masks.pop(fd, None)
            if not relay.done.is_set():
                self._fail(relay, fd)
            return
        if mask:
            self._masks[fd] = mask
        else:
            self._masks.pop(fd, None)

    def _service(self, relay: HubRelay, fd: int, events: int) -> None:
        # A hang-up or error is reported whatever the interest: a pending write then fails
        # (and ends the relay) instead of the event coming back at every wake-up.
        if events & _WRITABLE:
            writing = relay.down if fd == relay.client_fd else relay.up
            if writing.pending is not None:
                self._write(relay, writing)
        if events & _READABLE and not relay.done.is_set():
            reading = relay.up if fd == relay.client_fd else relay.down
            if not reading.ended and reading.pending is None:
                self._read(relay, reading)

    def _read(self, relay: HubRelay, d: _Direction) -> None:
        try:
            data = os.read(d.src, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._fail(relay, d.src)
            return
        if not data:
            if relay.hand_back:
                relay.handed_back = True
                self._finish(relay)
                return
            self._eof(relay, d)
            return
        relay.last = trio.current_time()
        d.pending = memoryview(data)
        watch = d.watch
        give_back = watch is not None and watch(data)
        self._write(relay, d)
        if give_back and not relay.done.is_set():
            relay.handed_back = True
            self._finish(relay)

    def _write(self, relay: HubRelay, d: _Direction) -> None:
        pending = d.pending
        if pending is None:
            return
        try:
            sent = os.write(d.dst, pending)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._fail(relay, d.dst)
            return
        d.count += sent
        rest = pending[sent:]
        d.pending = rest or None
        self._set_mask(relay, d.src)
        self._set_mask(relay, d.dst)

    def _eof(self, relay: HubRelay, d: _Direction) -> None:
        d.ended = True
        other = relay.down if d is relay.up else relay.up
        if other.ended:
            self._finish(relay)
            return
        try:
            d.dst_sock.shutdown(socket.SHUT_WR)
        except OSError as error:
            if error.errno != errno.ENOTCONN:
                self._fail(relay, d.dst)
                return
        self._set_mask(relay, d.src)

    def _fail(self, relay: HubRelay, fd: int) -> None:
        relay.failed = "client" if fd == relay.client_fd else "upstream"
        self._finish(relay)

    def _finish(self, relay: HubRelay) -> None:
        self.remove(relay)
        relay.done.set()
