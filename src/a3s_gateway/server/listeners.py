"""Listening sockets for the ``http`` entrypoints and their accept loops.

Ring 1. Nurseries: none of its own. ``serve_listener`` runs inside the *listener group*
nursery (owned by ``app.py``, cancelled first when draining) and starts one task per accepted
connection in the *connection handlers* nursery it is given (also owned by ``app.py``; its
deadline becomes now + grace at drain), the shape of ``trio.serve_listeners`` (DESIGN.md §3.3).
Deadlines: a retired ``ListenerGroup``'s connections get now + grace (SPEC §10.2). On a TLS
entrypoint the connection's task runs the handshake first (``server/tls.py``, bounded by
``timeouts.handshake`` there) and serves HTTP/1.1 over the TLS stream; a plain entrypoint's
connection goes straight to the HTTP/1.1 driver over the raw socket stream (one ``None``
check more on its path).

``ListenerGroup`` is one entrypoint's bound sockets with their accept loops (one per socket,
each in its own cancel scope, so a reload can start and stop one entrypoint's loops without
touching the others) and the cancel scopes of the connections they accepted. A reload keeps a
group whose address is unchanged (the same sockets, never rebound), binds new ones before its
swap, and retires removed ones after it: their loops stop, their sockets close, and their
open connections are cancelled if still open when the grace ends.

``open_http_listeners`` binds every address before anything is served, so a bind failure is a
``StartError`` naming the entrypoint and address and nothing stays bound (SPEC §2.2). With
``reuse_port`` every socket gets ``SO_REUSEPORT`` so that several worker processes can bind the
same address and the kernel spreads connections (SPEC §13.4).

Must not: parse bytes or hold per-request state.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import math
import socket as stdlib_socket
from typing import TYPE_CHECKING, Final, NamedTuple

import trio

from a3s_gateway.errors import StartError
from a3s_gateway.protocols.http2 import PREFACE
from a3s_gateway.routing.request import TcpConnInfo, parse_peer
from a3s_gateway.server.acme_answer import tls_alpn_challenge
from a3s_gateway.server.downstream import ConnInfo
from a3s_gateway.server.http1_driver import serve_http1
from a3s_gateway.server.http2_driver import serve_http2
from a3s_gateway.server.preamble import ProxyHeaderError, peek_client_hello, read_proxy_header
from a3s_gateway.server.tcp_proxy import note_rejection, serve_tcp
from a3s_gateway.server.tls import handshake, tcp_key
from a3s_gateway.streams import PrefixedStream, RawSocketStream, from_trio

if TYPE_CHECKING:
    from collections.abc import Mapping

    from a3s_gateway.runtime.compile import EntrypointRuntime
    from a3s_gateway.server.server_context import ServerContext
    from a3s_gateway.server.tls import Terminator, TlsStore

__all__ = ["Connections", "ListenerGroup", "open_http_listeners", "serve_listener"]

log: Final = logging.getLogger("a3s_gateway.server")

_BACKLOG: Final = 4096
#: accept() errors that mean "out of resources right now": wait a little and go on, as
#: ``trio.serve_listeners`` does, instead of ending the accept loop.
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_RESOURCE_PAUSE: Final = 0.1


async def open_http_listeners(
    entrypoints: Mapping[str, EntrypointRuntime], *, reuse_port: bool = False
) -> dict[str, list[trio.SocketListener]]:
    """Bind and listen on every entrypoint's address; all or nothing.

    Raises ``StartError`` (naming entrypoint and address) if any bind fails.
    """
    opened: dict[str, list[trio.SocketListener]] = {}
    try:
        for name, entry in entrypoints.items():
            opened[name] = await _open_one(name, entry, reuse_port=reuse_port)
    except BaseException:
        for listeners in opened.values():
            for listener in listeners:
                listener.socket.close()
        raise
    return opened


async def _open_one(
    name: str, entry: EntrypointRuntime, *, reuse_port: bool
) -> list[trio.SocketListener]:
    where = (
        f"{entry.host}:{entry.port}" if ":" not in entry.host else f"[{entry.host}]:{entry.port}"
    )
    try:
        # An empty host (":8080") means every interface: AI_PASSIVE gives the wildcard addresses.
        infos = await trio.socket.getaddrinfo(
            entry.host or None,
            entry.port,
            type=stdlib_socket.SOCK_STREAM,
            flags=stdlib_socket.AI_PASSIVE,
        )
    except OSError as error:
        raise StartError(f'entrypoint "{name}": cannot resolve {where}: {error}') from error
    listeners: list[trio.SocketListener] = []
    seen: set[object] = set()
    try:
        for family, kind, proto, _, address in infos:
            if address in seen:
                continue
            seen.add(address)
            listeners.append(await _bind(family, kind, proto, address, reuse_port=reuse_port))
    except OSError as error:
        for listener in listeners:
            listener.socket.close()
        reason = error.strerror or str(error)
        raise StartError(f'entrypoint "{name}": cannot listen on {where}: {reason}') from error
    return listeners


async def _bind(
    family: int, kind: int, proto: int, address: object, *, reuse_port: bool
) -> trio.SocketListener:
    sock = trio.socket.socket(family, kind, proto)
    try:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
        if family == stdlib_socket.AF_INET6:
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 1)
        await sock.bind(address)
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


def bound_address(listener: trio.SocketListener) -> tuple[str, int]:
    """The (ip, port) a listener is actually bound to (port 0 resolved)."""
    sockname = listener.socket.getsockname()
    return str(sockname[0]), int(sockname[1])


class Connections:
    """The cancel scopes of the connections one listener group accepted, and the deadline
    they all get (infinite until the group is retired)."""

    __slots__ = ("deadline", "scopes")

    def __init__(self) -> None:
        self.deadline = math.inf
        self.scopes: set[trio.CancelScope] = set()

    def end_by(self, deadline: float) -> None:
        """Cancel every connection, current or starting, that is still open at ``deadline``."""
        self.deadline = min(self.deadline, deadline)
        for scope in self.scopes:
            scope.deadline = min(scope.deadline, deadline)


class ListenerGroup:
    """One entrypoint's sockets, accept loops and connections (module docstring)."""

    def __init__(
        self,
        name: str,
        address: tuple[str, int],
        listeners: list[trio.SocketListener],
        tls: TlsStore | None = None,
    ) -> None:
        #: The entrypoint whose connections the loops accept (a reload may rename it).
        self.name = name
        #: The configured (host, port): what a reload compares (port 0 stays 0 here).
        self.address = address
        self.listeners = listeners
        #: Where a TLS entrypoint's accept loop finds its current terminator.
        self.tls = tls
        self.connections = Connections()
        self._loops: list[trio.CancelScope] = []
        self.closed = False

    @property
    def accepting(self) -> bool:
        """Whether accept loops are running."""
        return bool(self._loops)

    def start(
        self,
        acceptors: trio.Nursery,
        handlers: trio.Nursery,
        ctx: ServerContext,
        entry: EntrypointRuntime,
    ) -> None:
        """Start one accept loop per socket in ``acceptors`` for ``entry`` (loops already
        running are stopped first: a renamed entrypoint keeps its sockets)."""
        self.stop()
        self.name = entry.name
        for listener in self.listeners:
            scope = trio.CancelScope()
            self._loops.append(scope)
            acceptors.start_soon(self._accept, scope, listener, entry, handlers, ctx)

    async def _accept(
        self,
        scope: trio.CancelScope,
        listener: trio.SocketListener,
        entry: EntrypointRuntime,
        handlers: trio.Nursery,
        ctx: ServerContext,
    ) -> None:
        with scope:
            try:
                await serve_listener(listener, entry, handlers, ctx, self.connections, self.tls)
            except trio.ClosedResourceError:
                if not self.closed:
                    raise

    def stop(self) -> None:
        """Stop the accept loops; the sockets stay open (new connections wait in the
        backlog). A pending accept is cancelled before it takes a connection."""
        for scope in self._loops:
            scope.cancel()
        self._loops.clear()

    def close(self) -> None:
        """Stop accepting and close the sockets. Idempotent."""
        self.stop()
        self.closed = True
        for listener in self.listeners:
            listener.socket.close()

    def retire(self, deadline: float) -> None:
        """Close, and cancel the connections still open at ``deadline`` (SPEC §10.2:
        a removed listener's connections drain within the grace)."""
        self.close()
        self.connections.end_by(deadline)

    def bound(self) -> tuple[tuple[str, int], ...]:
        """The addresses actually bound (port 0 resolved)."""
        return tuple(bound_address(listener) for listener in self.listeners)


async def serve_listener(
    listener: trio.SocketListener,
    entry: EntrypointRuntime,
    handlers: trio.Nursery,
    ctx: ServerContext,
    connections: Connections | None = None,
    tls: TlsStore | None = None,
) -> None:
    """Accept connections forever, each served in ``handlers``; cancel to stop. With
    ``connections``, each connection runs in a cancel scope registered there. A TLS
    entrypoint's connections take the terminator ``tls`` holds for it at their accept (a
    TLS entrypoint without one, or without ``tls``, has its connections closed at once).

    The entrypoint's current settings are read from ``ctx.runtime`` at each accept, so a
    reload's limits apply to the next connection. Over ``max_connections``, or from a peer
    outside ``tcp_allowed_ips``, a connection is accepted and closed at once, before any byte
    is read or written (SPEC §3.7, §6.4), and counted in ``ctx.rejected_connections``.
    """
    name = entry.name
    while True:
        try:
            accepted = await listener.accept()
        except OSError as error:
            if error.errno not in _RESOURCE_ERRORS:
                raise
            log.warning("accept on %s: %s; pausing", name, error.strerror)
            await trio.sleep(_RESOURCE_PAUSE)
            continue
        entry = ctx.runtime.entrypoints.get(name, entry)
        active = ctx.active_connections.get(name, 0)
        if active >= entry.max_connections:
            _reject(accepted, ctx, name, "max_connections")
            continue
        if entry.allowed is not None and not _allowed(accepted, entry):
            _reject(accepted, ctx, name, "ip_not_allowed")
            continue
        terminators = _NO_TLS
        if entry.tls:
            terminators = _terminators(tls, entry)
            if terminators.http is None or terminators.tcp is None:
                _reject(accepted, ctx, name, "tls_unavailable")
                continue
        stream = from_trio(accepted)
        ctx.active_connections[name] = active + 1
        ctx.metrics.connection_opened(name)
        handlers.start_soon(_handle, stream, entry, ctx, connections, terminators)


class _Terminators(NamedTuple):
    """A TLS entrypoint's terminators at one accept: HTTPS's, and its TCP routers' (the same
    on a tcp entrypoint; on an http one that TCP routers share, the one without ALPN)."""

    http: Terminator | None
    tcp: Terminator | None


#: The terminators of a plain entrypoint's connections.
_NO_TLS: Final = _Terminators(None, None)


def _terminators(tls: TlsStore | None, entry: EntrypointRuntime) -> _Terminators:
    if tls is None:
        return _NO_TLS
    main = tls.get(entry.name)
    return _Terminators(main, tls.get(tcp_key(entry.name)) if entry.shares_tcp else main)


def _allowed(accepted: trio.SocketStream, entry: EntrypointRuntime) -> bool:
    """Whether ``tcp_allowed_ips`` admits the peer; a peer that may send a PROXY header is
    checked later, against the source its header names (SPEC §6.1)."""
    try:
        peer = accepted.socket.getpeername()
    except OSError:  # already gone
        return False
    address = parse_peer(str(peer[0]))
    return entry.is_allowed(address) or entry.proxy_from(address)


def _reject(accepted: trio.SocketStream, ctx: ServerContext, name: str, reason: str) -> None:
    """Close a just-accepted connection without a byte; counted, logged at debug level, with
    an info summary at most once a minute per entrypoint and reason."""
    accepted.socket.close()
    note_rejection(ctx, name, reason)


async def _handle(
    stream: RawSocketStream,
    entry: EntrypointRuntime,
    ctx: ServerContext,
    connections: Connections | None,
    terminators: _Terminators = _NO_TLS,
) -> None:
    try:
        peer = stream.socket.getpeername()
        info = ConnInfo(entry.name, str(peer[0]), int(peer[1]), entry.tls)
    except OSError:
        stream.socket.close()
        ctx.active_connections[entry.name] -= 1
        return
    if connections is None:
        try:
            await _serve(stream, info, entry, ctx, terminators)
        finally:
            stream.close_nowait()  # on every path (a no-op when its driver closed it)
            ctx.active_connections[entry.name] -= 1
        return
    scope = trio.CancelScope(deadline=connections.deadline)
    connections.scopes.add(scope)
    try:
        with scope:
            await _serve(stream, info, entry, ctx, terminators)
    finally:
        stream.close_nowait()  # on every path (a no-op when its driver closed it)
        connections.scopes.discard(scope)
        ctx.active_connections[entry.name] -= 1


async def _serve(
    stream: RawSocketStream,
    info: ConnInfo,
    entry: EntrypointRuntime,
    ctx: ServerContext,
    terminators: _Terminators,
) -> None:
    terminator = terminators.http
    if entry.preamble:
        await _serve_preamble(stream, info, entry, ctx, terminators)
    elif terminator is None:
        await _serve_plain(stream, info, entry, ctx)
    else:
        await _serve_tls(stream, terminator, info, entry, ctx)


async def _serve_preamble(
    stream: RawSocketStream,
    info: ConnInfo,
    entry: EntrypointRuntime,
    ctx: ServerContext,
    terminators: _Terminators,
) -> None:
    """SPEC §6.1: the PROXY header (from a trusted peer) and the allowlist on its source, then
    the TCP routers (with a ClientHello peek when a rule needs SNI or ALPN); an unmatched
    connection is closed on a tcp entrypoint and served as HTTP(S) on an http one, with every
    byte read so far replayed."""
    prefix = b""
    if entry.proxy_from(parse_peer(info.peer_ip)):
        try:
            header, prefix = await read_proxy_header(stream, entry.handshake_timeout)
        except ProxyHeaderError as error:
            log.debug("bad PROXY header from %s on %s: %s", info.peer_ip, entry.name, error)
            stream.close_nowait()
            note_rejection(ctx, entry.name, "proxy_header")
            return
        if header is not None and header.source is not None:
            ip, port = header.source
            info = dataclasses.replace(info, peer_ip=ip, peer_port=port)
        if not entry.is_allowed(parse_peer(info.peer_ip)):
            stream.close_nowait()
            note_rejection(ctx, entry.name, "ip_not_allowed")
            return
    table = ctx.runtime.tcp_routes
    routes = table.routes_for(entry.name) if entry.protocol == "tcp" or entry.tls else ()
    if routes:
        sni: str = ""
        alpn: tuple[str, ...] = ()
        if any(route.rule.needs_client_hello for route in routes):
            hello = await peek_client_hello(
                stream, prefix, entry.peek_timeout, stats=ctx.streams, entrypoint=entry.name
            )
            if hello is None:  # the client left before its hello was whole
                stream.close_nowait()
                return
            sni, alpn, prefix = hello.sni, hello.alpn, hello.data
        route = table.select(TcpConnInfo(sni, alpn, info.peer_ip), entry.name)
        if route is not None:
            await serve_tcp(stream, prefix, info, entry, route, ctx, terminators.tcp, sni)
            return
    terminator = terminators.http
    if entry.protocol == "tcp":
        stream.close_nowait()
        note_rejection(ctx, entry.name, "no_route")
    elif terminator is None:
        await _serve_plain(stream, info, entry, ctx, received=prefix)
    else:
        transport = PrefixedStream(stream, prefix) if prefix else stream
        await _serve_tls(transport, terminator, info, entry, ctx)


async def _serve_tls(
    stream: trio.abc.HalfCloseableStream,
    terminator: Terminator,
    info: ConnInfo,
    entry: EntrypointRuntime,
    ctx: ServerContext,
) -> None:
    """The handshake (bounded by ``timeouts.handshake``), then HTTP/2 or HTTP/1.1 over TLS,
    as ALPN agreed (SPEC §5.1). While a TLS-ALPN-01 challenge is pending, the ClientHello is
    peeked first and a validation answered instead (``acme_answer.py``)."""
    if ctx.challenges.has_alpn:
        answered = await tls_alpn_challenge(stream, info, entry, ctx)
        if answered is None:
            return
        stream = answered
    done = await handshake(stream, terminator, info, entry, ctx.metrics)
    if done is not None:
        tls_stream, tls_info = done
        if tls_info.alpn == "h2":
            await serve_http2(tls_stream, tls_info, ctx)
        else:
            await serve_http1(tls_stream, tls_info, ctx)


async def _serve_plain(
    stream: RawSocketStream,
    info: ConnInfo,
    entry: EntrypointRuntime,
    ctx: ServerContext,
    received: bytes = b"",
) -> None:
    """A plaintext connection: HTTP/2 by prior knowledge when ``h2c`` is on and the client
    starts with the HTTP/2 preface, else HTTP/1.1 (SPEC §5.1). The bytes read to tell (after
    ``received``, read before: a PROXY header's leftovers) are handed to the driver chosen;
    no read happens here without ``h2c``."""
    if not entry.h2c:
        await serve_http1(stream, info, ctx, received=received)
        return
    first = received
    with trio.move_on_after(entry.idle_timeout):
        try:
            while len(first) < len(PREFACE) and PREFACE.startswith(first):
                data = await stream.receive_some(65536)
                if not data:
                    break
                first += data
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            first = b""
    if not first:
        stream.close_nowait()
        return
    if first.startswith(PREFACE):
        await serve_http2(stream, info, ctx, received=first)
    else:
        await serve_http1(stream, info, ctx, received=first)
