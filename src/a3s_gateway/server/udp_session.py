"""One UDP session (SPEC §6.5): a client address of a UDP entrypoint, the backend chosen for it
and the connected upstream socket between them, from its first datagram to its end.

Ring 1. Nurseries: none of its own; ``UdpSession.run`` is the session's one task, started by
``server/udp.py`` in the *connection handlers* nursery (owned by ``app.py``; its deadline
becomes now + grace at drain, which ends the session with ``error = "shutdown"``). Deadlines:
the session's own cancel scope (``scope``: cancelled by ``end``, and moved to a retired group's
deadline, SPEC §10.2), the idle timeout (``udp_session_timeout_secs``) and, for a backend named
by a host name, the service's ``connect_timeout`` around the name's resolution.

Idle timeout, refreshed by traffic either way: ``last`` is the trio time of the session's latest
datagram in either direction, one float stored per datagram and nothing else. The task waits
for replies in a scope whose deadline is ``last + timeout`` *as it was when the scope was
entered*; when that deadline passes, the task compares it with the current ``last`` and either
ends the session (nothing moved) or waits again until the new ``last + timeout``. So a busy
session costs one new scope per timeout period rather than a deadline update per datagram.

Sockets: the upstream socket is a plain non-blocking socket, read with
``trio.lowlevel.wait_readable`` and written without waiting: a full send buffer drops the
datagram (``reason="send_buffer_full"``) instead of holding up the receive loop or the replies.
There is no checkpoint between reading a reply and sending it on, so every session of a group
reads into the group's one 64 KiB buffer. ICMP port or host unreachable arrives as
``ECONNREFUSED`` / ``EHOSTUNREACH`` on the connected socket: a passive-health error for the
backend (SPEC §7.5 "UDP ICMP errors") and the end of the session.

Ending: every way out (idle, upstream error, cancellation at drain or retirement, the group
closing it at a client datagram) goes through ``end``, which runs its work once: the session
leaves its group's table, its lease is released, its upstream socket closed, the gauge
decremented, and one access-log record handed to the observer.

Must not: choose backends (``server/udp.py`` does), block on a send, or keep per-datagram
objects beyond the slice handed to a send.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket as stdlib_socket
import time
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

import trio

from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.server.generation import record_passive

if TYPE_CHECKING:
    from a3s_gateway.config.urls import ServerUrl
    from a3s_gateway.runtime.compile import RuntimeConfig, ServiceRuntime
    from a3s_gateway.server.server_context import ServerContext
    from a3s_gateway.services import Backend

__all__ = ["BUFFER_SIZE", "ClientAddress", "SessionOwner", "UdpSession", "connect_literal"]

log: Final = logging.getLogger("a3s_gateway.server")

#: A client's address as ``recvfrom`` gives it: ``(ip, port)`` or IPv6's 4-tuple.
ClientAddress: TypeAlias = tuple[object, ...]
_SocketAddress: TypeAlias = tuple[str, int] | tuple[str, int, int, int] | tuple[int, bytes]

#: Receive buffers hold any UDP payload (at most 65 507 bytes over IPv4, 65 527 over IPv6):
#: nothing is ever truncated, merged or split.
BUFFER_SIZE: Final = 65536
#: Datagrams a session holds while its backend's name is being resolved; later ones are dropped
#: (``send_buffer_full``). Bounded, as every buffer is (DESIGN.md §3.5).
_PENDING_MAX: Final = 4
#: Replies relayed in a row before the task yields to others (a checkpoint per datagram would
#: cost a scheduler round each; none would let one busy backend starve the rest).
_BURST: Final = 32
#: errno values that mean the backend is unreachable (ICMP): a passive-health error.
_UNREACHABLE: Final = {
    errno.ECONNREFUSED: "upstream_refused",
    errno.EHOSTUNREACH: "upstream_unreachable",
    errno.ENETUNREACH: "upstream_unreachable",
}


class SessionOwner(Protocol):
    """What a session needs of the group it belongs to (``server/udp.py``'s ``UdpGroup``)."""

    def forget(self, session: UdpSession) -> None:
        """Take ``session`` out of the group's table; called once, when it ends."""
        ...


def connect_literal(url: ServerUrl) -> stdlib_socket.socket | None:
    """A non-blocking UDP socket connected to ``url``'s address when its host is an IP literal
    (the family follows the address); None for a host name (the session resolves it).

    Raises ``OSError`` when no socket can be made or connected (no route, no descriptors).
    """
    try:
        address = ipaddress.ip_address(url.host)
    except ValueError:
        return None
    family = stdlib_socket.AF_INET6 if address.version == 6 else stdlib_socket.AF_INET
    return _connected(family, 0, (url.host, url.port))


def _connected(family: int, proto: int, address: _SocketAddress) -> stdlib_socket.socket:
    sock = stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM, proto)
    try:
        sock.setblocking(False)
        sock.connect(address)  # UDP: no packet is sent; sets the peer and the source address
    except BaseException:
        sock.close()
        raise
    return sock


class UdpSession:
    """One client's session (module docstring). Built by the group with the backend's lease
    taken and ``udp_session_opened`` counted; ``run`` is its task; ``end`` ends it once."""

    __slots__ = (
        "backend",
        "client",
        "ctx",
        "downstream",
        "ended",
        "entrypoint",
        "last",
        "lease",
        "owner",
        "pending",
        "record",
        "runtime",
        "scope",
        "service",
        "table",
        "timeout",
        "upstream",
        "view",
    )

    def __init__(
        self,
        *,
        owner: SessionOwner,
        ctx: ServerContext,
        downstream: stdlib_socket.socket,
        table: dict[ClientAddress, UdpSession],
        view: memoryview,
        client: ClientAddress,
        entrypoint: str,
        router: str,
        timeout: float,
        runtime: RuntimeConfig,
        service: ServiceRuntime,
        backend: Backend,
        upstream: stdlib_socket.socket | None,
        now: float,
    ) -> None:
        self.owner = owner
        self.ctx = ctx
        #: The listening socket the client wrote to: replies leave from it (``sendto``).
        self.downstream = downstream
        #: The group's table this session is in, by ``client``.
        self.table = table
        #: The group's reply buffer, shared by its sessions.
        self.view = view
        self.client = client
        self.entrypoint = entrypoint
        self.timeout = timeout
        #: The snapshot ``service`` and ``backend`` belong to (re-checked after a reload).
        self.runtime = runtime
        self.service = service
        self.backend = backend
        self.lease = backend.lease()  # in flight for the session's life (SPEC §7.3)
        #: The connected upstream socket; None while a host name is being resolved.
        self.upstream = upstream
        #: Client datagrams waiting for that resolution (None once connected).
        self.pending: list[bytes] | None = [] if upstream is None else None
        self.last = now
        self.ended = False
        self.scope = trio.CancelScope()
        record = self.record = ExchangeRecord(entrypoint, now)
        record.transport = "udp"
        record.scheme = "udp"
        record.protocol = ""
        record.router = router
        record.service = service.name
        record.backend = backend.url.text
        record.client_ip = record.peer_ip = str(client[0])
        record.attempts = 1
        ctx.streams.udp_session_opened(entrypoint)

    # --- client → backend (the group's receive loop) ---

    def forward(self, data: memoryview) -> None:
        """Send one client datagram to the backend, now; never waits. A full send buffer drops
        it; an ICMP error pending on the socket drops it and ends the session."""
        upstream = self.upstream
        if upstream is None:
            pending = self.pending
            if pending is not None and len(pending) < _PENDING_MAX:
                pending.append(bytes(data))
            else:
                self.ctx.streams.udp_dropped_one(self.entrypoint, "send_buffer_full")
            return
        try:
            upstream.send(data)
        except BlockingIOError:
            self.ctx.streams.udp_dropped_one(self.entrypoint, "send_buffer_full")
        except OSError as error:
            self.ctx.streams.udp_dropped_one(self.entrypoint, "upstream_error")
            if error.errno in _UNREACHABLE:
                self.end(self.upstream_failed(error))
        else:
            size = len(data)
            self.ctx.streams.udp_datagram(self.entrypoint, "in", size)
            self.record.request_bytes += size

    def follow(self, runtime: RuntimeConfig, service: ServiceRuntime | None) -> bool:
        """After a reload: carry the session over to ``runtime``'s ``service`` (the
        entrypoint's service now) when its backend's URL is still one of that service's
        servers, moving the lease to that generation's backend; False when it is not."""
        self.runtime = runtime
        if service is None:
            return False
        backend = self.backend
        if backend not in service.backends:
            match = next((b for b in service.backends if b.url == backend.url), None)
            if match is None:
                return False
            self.lease.release()
            self.lease = match.lease()
            self.backend = match
        self.service = service
        return True

    # --- the session's task ---

    async def run(self) -> None:
        """Relay the backend's replies until the session ends (module docstring); ``end``
        runs on every way out."""
        error = "shutdown"  # cancelled from outside: the drain's grace, a retired group
        try:
            with self.scope:
                error = await self._relay()
        except trio.ClosedResourceError:  # ``end`` closed the upstream socket under us
            pass
        finally:
            self.end(error)

    async def _relay(self) -> str:
        if self.upstream is None:
            error = await self._connect()
            if error:
                return error
        timeout = self.timeout
        while True:
            with trio.move_on_at(self.last + timeout):
                return await self._replies()
            if self.last + timeout <= trio.current_time():
                return "idle_timeout"

    async def _connect(self) -> str:
        """Resolve the backend's host name, connect, and send what the client sent meanwhile;
        an error word, or ``""``."""
        found = await self._resolve()
        pending, self.pending = self.pending or [], None
        if self.ended:  # ended while the answer was on its way back: open nothing
            return "shutdown"
        error = self._open_upstream(found)
        if error:
            for _ in pending:
                self.ctx.streams.udp_dropped_one(self.entrypoint, "upstream_error")
            return error
        for data in pending:
            self.forward(memoryview(data))
        return ""

    def _open_upstream(self, found: tuple[int, int, _SocketAddress] | None) -> str:
        """Connect to the resolved address; an error word, or ``""``. A name that did not
        resolve is a passive-health error, as a refused connection is."""
        if found is None:
            self._passive_error()
            return "resolve_failed"
        family, proto, address = found
        try:
            self.upstream = _connected(family, proto, address)
        except OSError as error:
            log.debug("udp backend %s: cannot connect: %s", self.backend.url.text, error)
            return "upstream_error"
        return ""

    async def _resolve(self) -> tuple[int, int, _SocketAddress] | None:
        """The first address of the backend's host name (family, protocol, address), within
        the service's ``connect_timeout``; None when there is none in time."""
        url = self.backend.url
        with trio.move_on_after(self.service.connect_timeout):
            try:
                infos = await trio.socket.getaddrinfo(
                    url.host, url.port, type=stdlib_socket.SOCK_DGRAM
                )
            except OSError as error:
                log.debug("udp backend %s: cannot resolve: %s", url.text, error)
                return None
            for family, _, proto, _, address in infos:
                return family, proto, address
        return None

    async def _replies(self) -> str:
        """Every datagram from the backend, sent to the client from the listening socket; an
        error word when the upstream socket fails."""
        upstream = self.upstream
        assert upstream is not None  # connected by ``_relay``
        downstream, client, view = self.downstream, self.client, self.view
        streams, entrypoint, record = self.ctx.streams, self.entrypoint, self.record
        burst = 0
        while True:
            try:
                size = upstream.recv_into(view)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(upstream)
                burst = 0
                continue
            except OSError as error:
                return self.upstream_failed(error)
            self.last = trio.current_time()
            try:
                downstream.sendto(view[:size], client)
            except BlockingIOError:
                streams.udp_dropped_one(entrypoint, "send_buffer_full")
            except OSError:  # the listening socket was closed (a retired group)
                return "shutdown"
            else:
                streams.udp_datagram(entrypoint, "out", size)
                record.response_bytes += size
            burst += 1
            if burst == _BURST:
                burst = 0
                await trio.lowlevel.checkpoint()

    # --- the end ---

    def upstream_failed(self, error: OSError) -> str:
        """The error word for ``error`` on the upstream socket; an ICMP unreachable is also a
        passive-health error for the backend (SPEC §7.5)."""
        if self.ended:
            return "shutdown"
        word = _UNREACHABLE.get(error.errno or 0)
        if word is None:
            log.debug("udp backend %s: %s", self.backend.url.text, error)
            return "upstream_error"
        self._passive_error()
        return word

    def _passive_error(self) -> None:
        outliers = self.service.outliers
        if outliers is not None:
            # An ICMP error is the 502 an HTTP request would have got: error_status_codes decides.
            error = outliers.is_error(502)
            record_passive(self.service, self.backend, self.ctx.metrics, error=error)

    def end(self, error: str) -> None:
        """End the session with ``error`` (its access-log cause); only the first call acts.
        Never blocks; the task, if still running, is cancelled."""
        if self.ended:
            return
        self.ended = True
        self.owner.forget(self)
        self.scope.cancel()
        upstream = self.upstream
        if upstream is not None:
            trio.lowlevel.notify_closing(upstream)
            upstream.close()
        self.pending = None
        self.lease.release()
        ctx = self.ctx
        ctx.streams.udp_session_closed(self.entrypoint)
        record = self.record
        record.error = error
        record.ended = trio.current_time()
        record.wall = time.time()
        observer = ctx.observer
        if observer is not None:
            observer.stream_ended(record)
