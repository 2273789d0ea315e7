"""UDP entrypoints: their sockets, their receive loops and their sessions (SPEC §4.12, §6.5).

Ring 1. Nurseries: none of its own. ``UdpGroup.start`` runs one receive loop per socket in the
*connection handlers* nursery it is given (owned by ``app.py``; its deadline becomes now + grace
at drain), and every session's task (``server/udp_session.py``) in the same nursery, so that
the drain waits for sessions as it waits for connections. Deadlines: none set here but a
retired group's (``retire``: its sessions still open at the deadline are cancelled, SPEC
§10.2); the sessions own their idle timeouts.

``UdpGroup`` is one UDP entrypoint's bound sockets (several when its host resolves to several
addresses), a receive loop per socket, each in its own cancel scope (``stop`` cancels them; a
reload keeps a group whose address is unchanged and may start it again under a new name,
keeping its sockets and sessions), and its sessions, by socket and client address. A datagram
from a known client goes to its session's backend at once; from an unknown client it creates a
session: the entrypoint's router and service are read from ``ctx.runtime`` then (so new
sessions follow a reload), a backend is chosen by the service's strategy (the client IP is the
``consistent-hash`` key; passive re-admission and panic mode as for HTTP), and a connected
upstream socket of the backend's family is opened. A session whose backend has become
unavailable, or is no longer among its service's servers after a reload, is ended at its
client's next datagram and that datagram starts a new one. Datagrams are dropped and counted
(``ctx.streams``) with a reason: ``draining``, ``no_router``, ``no_backend``,
``max_sessions`` (at the limit, once the expired sessions are purged), ``send_buffer_full``,
``upstream_error``.

Each listening socket is read and written through a duplicate descriptor made non-blocking
(trio's socket methods wait for writability; here a full send buffer drops the datagram, so no
client holds up another). A loop receives into its own 64 KiB buffer and forwards from it
without a checkpoint in between (the sessions' replies share one more buffer per group, on the
same terms); the loops yield to the scheduler every ``_BURST`` datagrams.

Drain (SPEC §2.4): the group registers in ``ctx.drain.connections``; once the drain starts no
session is created (``reason="draining"``), the loops keep relaying for the sessions open, and
they stop when the last session has ended, so an idle entrypoint does not hold the drain until
its grace. So a group is not closed when the drain starts, as listeners are: only once the
handlers nursery is done (or with ``retire`` when a reload removes it).

``open_udp_sockets`` binds every address before anything is served, all or nothing, as
``open_http_listeners`` does (``StartError`` naming entrypoint and address; ``SO_REUSEPORT``
with ``reuse_port`` so that every worker binds the same address, SPEC §13.4).

Must not: interpret datagrams, keep per-client state beyond the sessions (at most
``udp_max_sessions`` per entrypoint), or block on one client.
"""

from __future__ import annotations

import logging
import math
import socket as stdlib_socket
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.errors import StartError
from a3s_gateway.server.generation import selection_panic
from a3s_gateway.server.udp_session import BUFFER_SIZE, UdpSession, connect_literal

if TYPE_CHECKING:
    from collections.abc import Mapping

    from a3s_gateway.runtime.compile import RuntimeConfig, ServiceRuntime, UdpEntrypointRuntime
    from a3s_gateway.server.server_context import Drain, ServerContext
    from a3s_gateway.server.udp_session import ClientAddress
    from a3s_gateway.services import Backend

__all__ = ["UdpGroup", "open_udp_sockets"]

log: Final = logging.getLogger("a3s_gateway.server")

#: Datagrams handled in a row before a receive loop yields to other tasks.
_BURST: Final = 32
#: A receive error other than a closed socket: pause this long before the next receive.
_ERROR_PAUSE: Final = 0.1


async def open_udp_sockets(
    entrypoints: Mapping[str, UdpEntrypointRuntime], *, reuse_port: bool = False
) -> dict[str, list[trio.socket.SocketType]]:
    """Bind every UDP entrypoint's addresses; all or nothing.

    Raises ``StartError`` (naming entrypoint and address) if any bind fails; nothing stays
    bound then.
    """
    opened: dict[str, list[trio.socket.SocketType]] = {}
    try:
        for name, entry in entrypoints.items():
            opened[name] = await _open_one(name, entry, reuse_port=reuse_port)
    except BaseException:
        for sockets in opened.values():
            for sock in sockets:
                sock.close()
        raise
    return opened


async def _open_one(
    name: str, entry: UdpEntrypointRuntime, *, reuse_port: bool
) -> list[trio.socket.SocketType]:
    where = (
        f"{entry.host}:{entry.port}" if ":" not in entry.host else f"[{entry.host}]:{entry.port}"
    )
    try:
        # An empty host (":5353") means every interface: AI_PASSIVE gives the wildcard addresses.
        infos = await trio.socket.getaddrinfo(
            entry.host or None,
            entry.port,
            type=stdlib_socket.SOCK_DGRAM,
            flags=stdlib_socket.AI_PASSIVE,
        )
    except OSError as error:
        raise StartError(f'entrypoint "{name}": cannot resolve {where}: {error}') from error
    sockets: list[trio.socket.SocketType] = []
    seen: set[object] = set()
    try:
        for family, kind, proto, _, address in infos:
            if address in seen:
                continue
            seen.add(address)
            sockets.append(await _bind(family, kind, proto, address, reuse_port=reuse_port))
    except OSError as error:
        for sock in sockets:
            sock.close()
        reason = error.strerror or str(error)
        raise StartError(f'entrypoint "{name}": cannot listen on {where}: {reason}') from error
    return sockets


async def _bind(
    family: int, kind: int, proto: int, address: object, *, reuse_port: bool
) -> trio.socket.SocketType:
    sock = trio.socket.socket(family, kind, proto)
    try:
        if reuse_port:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
        if family == stdlib_socket.AF_INET6:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
        await sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


class _Listener:
    """One bound socket as the group uses it: a non-blocking duplicate of its descriptor, the
    loop's receive buffer, and the sessions of the clients that wrote to it."""

    __slots__ = ("raw", "sessions", "view")

    def __init__(self, sock: trio.socket.SocketType) -> None:
        raw = stdlib_socket.fromfd(sock.fileno(), sock.family, sock.type, sock.proto)
        raw.setblocking(False)
        self.raw = raw
        self.view = memoryview(bytearray(BUFFER_SIZE))
        self.sessions: dict[ClientAddress, UdpSession] = {}


class UdpGroup:
    """One UDP entrypoint's sockets, receive loops and sessions (module docstring)."""

    def __init__(
        self, name: str, address: tuple[str, int], sockets: list[trio.socket.SocketType]
    ) -> None:
        #: The entrypoint whose datagrams the loops serve (a reload may rename it).
        self.name = name
        #: The configured (host, port): what a reload compares (port 0 stays 0 here).
        self.address = address
        self.sockets = sockets
        self.closed = False
        self._listeners = [_Listener(sock) for sock in sockets]
        #: The replies' buffer, shared by every session of the group.
        self._replies = memoryview(bytearray(BUFFER_SIZE))
        self._loops: list[trio.CancelScope] = []
        self._count = 0
        #: When a retired group's sessions are cancelled (infinite until it is retired).
        self._deadline = math.inf
        #: No session can have expired before this time (``_room``'s scan is not repeated).
        self._next_purge = -math.inf
        self._draining = False
        self._drain: Drain | None = None

    @property
    def serving(self) -> bool:
        """Whether receive loops are running."""
        return bool(self._loops)

    @property
    def session_count(self) -> int:
        """Sessions open now."""
        return self._count

    def sessions(self) -> list[UdpSession]:
        """The sessions open now, a snapshot (ending one while walking it is safe)."""
        return [session for listener in self._listeners for session in listener.sessions.values()]

    def start(self, handlers: trio.Nursery, ctx: ServerContext) -> None:
        """Start one receive loop per socket in ``handlers`` for the entrypoint ``name`` (loops
        already running are stopped first; sessions are kept). A closed group starts nothing;
        once the drain has started, loops start only for the sessions still open."""
        self.stop()
        if self.closed:
            return
        self._drain = ctx.drain
        ctx.drain.connections.add(self)
        if ctx.drain.draining:
            self._draining = True
            if self._count == 0:
                return
        for listener in self._listeners:
            scope = trio.CancelScope()
            self._loops.append(scope)
            handlers.start_soon(self._receive, scope, listener, handlers, ctx)

    def stop(self) -> None:
        """Stop the receive loops; sockets and sessions stay (datagrams wait in the socket
        buffers, replies still go out)."""
        for scope in self._loops:
            scope.cancel()
        self._loops.clear()

    def drain(self) -> None:
        """The drain began (``ctx.drain``): no new session, and the loops stop with the last
        session. Idempotent, never blocks."""
        self._draining = True
        if self._count == 0:
            self.stop()

    def close(self) -> None:
        """Stop and close the sockets. Idempotent. Open sessions stay until they end (a reply
        can no longer reach its client: that ends its session), or until ``retire``'s
        deadline."""
        self.stop()
        if self.closed:
            return
        self.closed = True
        if self._drain is not None:
            self._drain.connections.discard(self)
        for listener in self._listeners:
            trio.lowlevel.notify_closing(listener.raw)
            listener.raw.close()
        for sock in self.sockets:
            sock.close()

    def retire(self, deadline: float) -> None:
        """Close, and cancel the sessions still open at ``deadline`` (SPEC §10.2)."""
        self.close()
        self._deadline = min(self._deadline, deadline)
        for session in self.sessions():
            session.scope.deadline = min(session.scope.deadline, deadline)

    def bound(self) -> tuple[tuple[str, int], ...]:
        """The addresses actually bound (port 0 resolved)."""
        names = [sock.getsockname() for sock in self.sockets]
        return tuple((str(name[0]), int(name[1])) for name in names)

    def forget(self, session: UdpSession) -> None:
        """``session`` ended: out of its table (``SessionOwner``); the loops stop with the
        last session once draining."""
        table, client = session.table, session.client
        if table.get(client) is session:
            del table[client]
            self._count -= 1
            if self._draining and self._count == 0:
                self.stop()

    # --- the receive loops ---

    async def _receive(
        self,
        scope: trio.CancelScope,
        listener: _Listener,
        handlers: trio.Nursery,
        ctx: ServerContext,
    ) -> None:
        raw, view = listener.raw, listener.view
        burst = 0
        with scope:
            while True:
                try:
                    size, client = raw.recvfrom_into(view)
                except BlockingIOError:
                    try:
                        await trio.lowlevel.wait_readable(raw)
                    except trio.ClosedResourceError:
                        if self.closed:
                            return
                        raise
                    burst = 0
                    continue
                except OSError as error:
                    if self.closed:
                        return
                    log.warning("udp entrypoint %s: receive failed: %s", self.name, error)
                    await trio.sleep(_ERROR_PAUSE)
                    continue
                self._datagram(listener, client, size, handlers, ctx)
                burst += 1
                if burst == _BURST:
                    burst = 0
                    await trio.lowlevel.checkpoint()

    def _datagram(
        self,
        listener: _Listener,
        client: ClientAddress,
        size: int,
        handlers: trio.Nursery,
        ctx: ServerContext,
    ) -> None:
        """One datagram of ``size`` bytes (in ``listener.view``) from ``client``."""
        now = trio.current_time()
        runtime = ctx.runtime
        session = listener.sessions.get(client)
        # The common case costs two reads: same snapshot, backend still available.
        if session is not None and (
            session.runtime is not runtime or not session.backend.available
        ):
            ending = self._ending(session, runtime)
            if ending:
                session.end(ending)
                session = None
        if session is None:
            session = self._open(listener, client, handlers, ctx, now)
            if session is None:
                return
        session.last = now
        session.forward(listener.view[:size])

    def _ending(self, session: UdpSession, runtime: RuntimeConfig) -> str:
        """Why ``session`` cannot take its client's next datagram, or ``""`` if it can."""
        if session.runtime is not runtime and not session.follow(runtime, self._service(runtime)):
            return "backend_removed"
        if session.backend.available:
            return ""
        service = session.service
        if service.panic_threshold > 0 and service.in_panic(primary=False):
            return ""  # panic: every backend serves, healthy or not (SPEC §7.1)
        return "backend_unavailable"

    def _service(self, runtime: RuntimeConfig) -> ServiceRuntime | None:
        entry = runtime.udp_entrypoints.get(self.name)
        if entry is None or entry.router is None or entry.service is None:
            return None
        return runtime.services.get(entry.service)

    # --- new sessions ---

    def _open(
        self,
        listener: _Listener,
        client: ClientAddress,
        handlers: trio.Nursery,
        ctx: ServerContext,
        now: float,
    ) -> UdpSession | None:
        """A new session for ``client``, started; None when the datagram is dropped."""
        runtime = ctx.runtime
        route = self._route(runtime, str(client[0]), ctx, now)
        if isinstance(route, str):
            ctx.streams.udp_dropped_one(self.name, route)
            return None
        entry, router, service, backend = route
        try:
            upstream = connect_literal(backend.url)
        except OSError as error:
            log.debug("udp backend %s: cannot connect: %s", backend.url.text, error)
            ctx.streams.udp_dropped_one(self.name, "upstream_error")
            return None
        session = UdpSession(
            owner=self,
            ctx=ctx,
            downstream=listener.raw,
            table=listener.sessions,
            view=self._replies,
            client=client,
            entrypoint=self.name,
            router=router,
            timeout=entry.session_timeout,
            runtime=runtime,
            service=service,
            backend=backend,
            upstream=upstream,
            now=now,
        )
        session.scope.deadline = self._deadline
        listener.sessions[client] = session
        self._count += 1
        handlers.start_soon(session.run)
        return session

    def _route(
        self, runtime: RuntimeConfig, client_ip: str, ctx: ServerContext, now: float
    ) -> tuple[UdpEntrypointRuntime, str, ServiceRuntime, Backend] | str:
        """Where a new session goes (the entrypoint's settings, router, service, backend), or
        the reason its first datagram is dropped."""
        if self._draining or ctx.drain.draining:
            return "draining"
        entry = runtime.udp_entrypoints.get(self.name)
        if entry is None or entry.router is None or entry.service is None:
            return "no_router"
        service = runtime.services.get(entry.service)
        if service is None:
            return "no_backend"
        if not self._room(entry.max_sessions, now):
            return "max_sessions"
        backend = _choose(service, client_ip, ctx)
        if backend is None:
            return "no_backend"
        return entry, entry.router, service, backend

    def _room(self, limit: int, now: float) -> bool:
        """Whether a session may be added under ``limit``, once the expired sessions (whose
        tasks have not run yet) are ended. The scan is skipped until a session can have
        expired since the last one, so a flood of new clients at the limit costs O(1) each."""
        if self._count < limit:
            return True
        if now < self._next_purge:
            return False
        earliest = math.inf
        for session in self.sessions():
            expires = session.last + session.timeout
            if expires <= now:
                session.end("idle_timeout")
            else:
                earliest = min(earliest, expires)
        self._next_purge = earliest
        return self._count < limit


def _choose(service: ServiceRuntime, client_ip: str, ctx: ServerContext) -> Backend | None:
    """A backend for a new session, as the HTTP path chooses (``exchange/dispatch.py``'s
    ``_Picker``): ejections that ran out end first, panic mode applies (SPEC §7.1, §7.5);
    the client IP is the ``consistent-hash`` key. UDP has no failover, so a pool with no
    available backend panics when ``panic_threshold`` is set."""
    panic = selection_panic(service, ctx.metrics, primary=False)
    return service.balancer.pick(key=client_ip, panic=panic)
