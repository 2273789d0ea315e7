"""Opening connections to backends (SPEC §5.5 "Upstream connect" row, §5.7, §7.8).

Ring 1. Owns no nursery of its own (``trio.open_tcp_stream`` runs its happy-eyeballs attempts in
a nursery local to the call) and sets no deadline: the caller's cancel scope, set from the
service's ``connect_timeout`` in exactly one place (``server/exchange/attempt.py``), bounds the
whole dial, including name resolution. A cancelled dial leaves no socket open (trio closes
losing attempts).

TCP_NODELAY: ``trio.SocketStream.__init__`` sets it on every TCP stream (and TCP_NOTSENT_LOWAT
where available), so nothing is set here; ``tests/upstream/test_dialer.py`` checks it. The
connected socket is then taken over by ``streams.RawSocketStream``, the hot path's lean stream.

Must not: take a timeout argument, retry (retries across backends belong to §7.8 in the exchange),
log, or read the wall clock.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

import trio

from a3s_gateway.streams import from_trio
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.peer import Peer

#: What the pool calls to open a stream; tests inject memory streams through it.
Dialer: TypeAlias = Callable[[Peer], Awaitable[trio.abc.Stream]]

_UNREACHABLE: Final = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}
)


async def dial(peer: Peer) -> trio.abc.Stream:
    """Open a TCP connection to ``peer``; a checkpoint; the caller closes the stream.

    Raises ``ConnectFailed`` (``reason`` from ``connect_reason``) for any ``OSError``, and for
    TLS peers with reason ``"tls not supported yet"``: upstream TLS (``https``, ``tls``) arrives
    with a later issue and will wrap the stream in ``trio.SSLStream`` here, inside the same
    caller-owned deadline.
    """
    if peer.tls:
        await trio.lowlevel.checkpoint()
        raise ConnectFailed("tls not supported yet")
    try:
        return from_trio(await trio.open_tcp_stream(peer.host, peer.port))
    except OSError as error:
        raise ConnectFailed(connect_reason(error)) from error


def connect_reason(error: OSError) -> str:
    """A short reason word for a failed connect.

    ``trio.open_tcp_stream`` reports "every address failed" as a bare ``OSError`` whose
    ``__cause__`` is an ``ExceptionGroup`` of the per-address errors; the first of those that
    has a specific classification decides.
    """
    cause = error.__cause__
    attempts: tuple[BaseException, ...] = (error,)
    if isinstance(cause, ExceptionGroup):
        attempts = (*cause.exceptions, error)
    for attempt in attempts:
        reason = _classify(attempt)
        if reason != "error":
            return reason
    return "error"


def _classify(error: BaseException) -> str:
    match error:
        case socket.gaierror():
            return "resolve"
        case ConnectionRefusedError():
            return "refused"
        case ConnectionResetError() | ConnectionAbortedError():
            return "reset"
        case TimeoutError():
            return "timeout"
        case OSError(errno=code) if code in _UNREACHABLE:
            return "unreachable"
        case _:
            return "error"
