"""Listening sockets for the ``http`` entrypoints and their accept loops.

Ring 1. Nurseries: none of its own. ``serve_listener`` runs inside the *listener group*
nursery (owned by ``app.py``, cancelled first when draining) and starts one task per accepted
connection in the *connection handlers* nursery it is given (also owned by ``app.py``; its
deadline becomes now + grace at drain), the shape of ``trio.serve_listeners`` (DESIGN.md §3.3).
Deadlines: none.

``open_http_listeners`` binds every address before anything is served, so a bind failure is a
``StartError`` naming the entrypoint and address and nothing stays bound (SPEC §2.2). With
``reuse_port`` every socket gets ``SO_REUSEPORT`` so that several worker processes can bind the
same address and the kernel spreads connections (SPEC §13.4).

Must not: parse bytes or hold per-request state.
"""

from __future__ import annotations

import errno
import logging
import socket as stdlib_socket
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.errors import StartError
from a3s_gateway.routing.request import parse_peer
from a3s_gateway.server.connection import ConnInfo, serve_http1
from a3s_gateway.streams import RawSocketStream, from_trio

if TYPE_CHECKING:
    from collections.abc import Mapping

    from a3s_gateway.config.runtime import EntrypointRuntime
    from a3s_gateway.server.context import ServerContext

__all__ = ["open_http_listeners", "serve_listener"]

log: Final = logging.getLogger("a3s_gateway.server")

_BACKLOG: Final = 4096
#: accept() errors that mean "out of resources right now": wait a little and go on, as
#: ``trio.serve_listeners`` does, instead of ending the accept loop.
_RESOURCE_ERRORS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_RESOURCE_PAUSE: Final = 0.1
#: Rejected connections are summarised in the log at most this often (seconds).
_REPORT_EVERY: Final = 60.0


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


async def serve_listener(
    listener: trio.SocketListener,
    entry: EntrypointRuntime,
    handlers: trio.Nursery,
    ctx: ServerContext,
) -> None:
    """Accept connections forever, each served in ``handlers``; cancel to stop.

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
        stream = from_trio(accepted)
        ctx.active_connections[name] = active + 1
        handlers.start_soon(_handle, stream, entry, ctx)


def _allowed(accepted: trio.SocketStream, entry: EntrypointRuntime) -> bool:
    try:
        peer = accepted.socket.getpeername()
    except OSError:  # already gone
        return False
    return entry.is_allowed(parse_peer(str(peer[0])))


def _reject(accepted: trio.SocketStream, ctx: ServerContext, name: str, reason: str) -> None:
    """Close a just-accepted connection without a byte; counted, logged at debug level, with
    an info summary at most once a minute per entrypoint and reason."""
    accepted.socket.close()
    key = (name, reason)
    count = ctx.rejected_connections.get(key, 0) + 1
    ctx.rejected_connections[key] = count
    log.debug("connection on %s rejected: %s", name, reason)
    now = trio.current_time()
    last_time, last_count = ctx.rejection_reports.get(key, (-_REPORT_EVERY, 0))
    if now - last_time >= _REPORT_EVERY:
        ctx.rejection_reports[key] = (now, count)
        log.info(
            "entrypoint %s rejected %d connection(s) (%s) in the last minute",
            name,
            count - last_count,
            reason,
        )


async def _handle(stream: RawSocketStream, entry: EntrypointRuntime, ctx: ServerContext) -> None:
    try:
        peer = stream.socket.getpeername()
        info = ConnInfo(entry.name, str(peer[0]), int(peer[1]), entry.tls)
    except OSError:
        stream.socket.close()
        ctx.active_connections[entry.name] -= 1
        return
    try:
        await serve_http1(stream, info, ctx)
    finally:
        ctx.active_connections[entry.name] -= 1
