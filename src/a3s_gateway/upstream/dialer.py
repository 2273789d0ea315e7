"""Opening connections to backends, TLS included (SPEC §5.5 "Upstream connect" row, §5.7, §7.8).

Ring 1. Owns no long-lived nursery: ``connect_in_turn`` runs its staggered attempts in a
nursery local to the call (``trio.open_tcp_stream`` does the same for an IP literal), and the
dialer sets no deadline: the caller's cancel scope — the service's
``connect_timeout`` around the pool's ``acquire`` (``server/exchange/attempt.py``), a probe's
``timeout`` (``probes/checker.py``) or an outbound call's ``within`` (``upstream/caller.py``) —
bounds the whole dial: name resolution, the TCP connect, building a TLS context the first time
and the TLS handshake. A handshake that outlives that deadline is a connect timeout (504), like a
slow connect. A cancelled dial leaves no socket open (losing attempts are closed; a handshake
interrupted here closes its socket).

Addresses (SPEC §5.7 "DNS", ``open_tcp``): an IP literal is connected to directly, as
``trio.open_tcp_stream`` always did (no lookup). A host name is resolved by ``resolve.RESOLVER``
(``/etc/hosts``, then DNS through a TTL cache; see ``upstream/resolve.py``), and its addresses
(IPv6 and IPv4 interleaved) are tried in that order, RFC 8305 style: the next one starts when
the previous attempt failed or after ``ATTEMPT_DELAY`` (0.25 s) without an answer; the first to
connect wins and the others are cancelled and closed. A name that does not resolve is
``ConnectFailed("resolve", 'cannot resolve "<host>": <why>')``; when every address failed, the
reason is that of the first attempt with a specific one (``connect_reason``).

TCP_NODELAY: ``trio.SocketStream.__init__`` sets it on every TCP stream (and TCP_NOTSENT_LOWAT
where available), so nothing is set here; ``tests/upstream/test_dialer.py`` checks it. The
connected socket is then taken over by ``streams.RawSocketStream``, the hot path's lean stream.

TLS (``Peer.tls``): the stream is wrapped in ``trio.SSLStream`` with the peer's ``server_name``
as SNI and verified name, over the ``ssl.SSLContext`` of the peer's ``TlsIdentity`` from
``TlsContexts``: one context per distinct identity, built in a worker thread on first use (file
reads and the system store stay off the event loop), offering ALPN ``http/1.1``, then shared by
every connection, probe and outbound call with that identity. A context is rebuilt only when one
of its files changed (size, mtime or inode; checked with one ``stat`` per file per new
connection); if the changed files do not load, the previous context stays in use. Failures are
``ConnectFailed("tls", detail)`` whose ``detail`` says why in OpenSSL's words, e.g.
``TLS handshake failed: certificate verify failed: unable to get local issuer certificate``.

HTTP/2 (``dial_h2``, the dialer of ``upstream/http2_pool.py``): plaintext peers get the TCP
stream as it is (h2c with prior knowledge, SPEC §5.7); TLS peers offer ALPN ``h2``, ``http/1.1``
(``H2_ALPN``; contexts are kept per identity *and* ALPN list) and must agree on ``h2``, else
``ConnectFailed("tls", "backend did not negotiate h2")``.

Must not: take a timeout argument, retry (retries across backends belong to §7.8 in the exchange),
log, or read the wall clock.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Final, TypeAlias

import trio

from a3s_gateway.streams import from_trio
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.peer import Peer, TlsIdentity
from a3s_gateway.upstream.resolve import RESOLVER, Resolver, is_ip_literal

__all__ = [
    "ALPN",
    "ATTEMPT_DELAY",
    "CONTEXTS",
    "H2_ALPN",
    "Dialer",
    "TlsContexts",
    "build_context",
    "connect_in_turn",
    "connect_reason",
    "dial",
    "dial_h2",
    "open_tcp",
]

#: What the pool calls to open a stream; tests inject memory streams through it.
Dialer: TypeAlias = Callable[[Peer], Awaitable[trio.abc.Stream]]

#: Per file of an identity: (inode, size, mtime in ns), or None when it cannot be read.
_Stamp: TypeAlias = tuple[tuple[int, int, int] | None, ...]

_UNREACHABLE: Final = frozenset(
    {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.EADDRNOTAVAIL}
)
#: ALPN offered to TLS backends: only what the upstream client speaks (SPEC §5.7).
ALPN: Final = ("http/1.1",)
#: ALPN offered by the HTTP/2 pool (``dial_h2``); anything but ``h2`` agreed fails the dial.
H2_ALPN: Final = ("h2", "http/1.1")
#: RFC 8305 §5 "Connection Attempt Delay" (and trio's happy-eyeballs default): a host name's next
#: address is tried after this long without an answer from the previous one.
ATTEMPT_DELAY: Final = 0.25


async def dial(
    peer: Peer,
    *,
    context: ssl.SSLContext | None = None,
    alpn: tuple[str, ...] = ALPN,
    resolver: Resolver = RESOLVER,
) -> trio.abc.Stream:
    """Open a connection to ``peer``: TCP, then for TLS peers the handshake; a checkpoint; the
    caller closes the stream.

    ``context`` replaces the identity's shared context (tests, callers with their own trust);
    ``alpn`` chooses the shared context offering those protocols; ``resolver`` replaces the
    process's (tests).
    Raises ``ConnectFailed``: ``"resolve"`` (with ``detail``) when the host name does not
    resolve, ``reason`` from ``connect_reason`` for any ``OSError`` of the connect, ``"tls"``
    (with ``detail``) when the TLS context cannot be built or the handshake fails.
    """
    try:
        if is_ip_literal(peer.host):  # as before: no lookup, no extra coroutine (``open_tcp``)
            tcp = await trio.open_tcp_stream(peer.host, peer.port)
        else:
            tcp = await connect_in_turn(await resolver.resolve(peer.host), peer.port)
        stream = from_trio(tcp)
    except OSError as error:
        raise ConnectFailed(connect_reason(error)) from error
    if not peer.tls:
        return stream
    try:
        if context is None:
            context = await CONTEXTS.get(peer.identity, alpn)
        return await handshake(stream, context, peer.server_name)
    except BaseException:
        stream.close_nowait()  # a socket: closes at once, even when cancelled
        raise


async def open_tcp(host: str, port: int, resolver: Resolver = RESOLVER) -> trio.SocketStream:
    """A TCP connection to ``host`` (an IP literal or a name) and ``port``, as ``dial`` opens
    it, for other clients of backends; a checkpoint. Raises ``OSError`` (see
    ``connect_reason``), or ``ConnectFailed("resolve", detail)``."""
    if is_ip_literal(host):
        return await trio.open_tcp_stream(host, port)
    return await connect_in_turn(await resolver.resolve(host), port)


async def connect_in_turn(addresses: tuple[str, ...], port: int) -> trio.SocketStream:
    """A TCP connection to the first of ``addresses`` (IP literals) that accepts one: each
    attempt starts when the previous one failed or after ``ATTEMPT_DELAY``; the first connected
    wins, the others are cancelled and closed. A checkpoint. Raises ``OSError`` whose
    ``__cause__`` is an ``ExceptionGroup`` of every attempt's error (trio's shape, which
    ``connect_reason`` reads) when none connected."""
    race = _Race(port)
    try:
        async with trio.open_nursery() as nursery:
            for address in addresses:
                failed = trio.Event()
                nursery.start_soon(race.attempt, address, failed, nursery.cancel_scope)
                with trio.move_on_after(ATTEMPT_DELAY):
                    await failed.wait()
    except BaseException:
        race.close_winner()  # cancelled from outside just as one connected
        raise
    if race.winner is None:
        attempts = ExceptionGroup("connect attempts", race.errors)
        raise OSError(f"all attempts to connect to port {port} failed") from attempts
    return race.winner


class _Race:
    """The attempts of one ``connect_in_turn``: the winner, or every attempt's error."""

    __slots__ = ("errors", "port", "winner")

    def __init__(self, port: int) -> None:
        self.port = port
        self.errors: list[OSError] = []
        self.winner: trio.SocketStream | None = None

    async def attempt(self, address: str, failed: trio.Event, race: trio.CancelScope) -> None:
        """Connect to ``address``; set ``failed`` when it cannot, cancel ``race`` when it won."""
        family = trio.socket.AF_INET6 if ":" in address else trio.socket.AF_INET
        try:
            sock = trio.socket.socket(family, trio.socket.SOCK_STREAM)
        except OSError as error:  # no IPv6 on this host, out of descriptors
            self.failed(error, failed)
            return
        try:
            await sock.connect((address, self.port))
        except OSError as error:
            sock.close()
            self.failed(error, failed)
            return
        except BaseException:
            sock.close()
            raise
        if self.winner is not None:  # another one connected first
            sock.close()
            return
        self.winner = trio.SocketStream(sock)
        race.cancel()

    def failed(self, error: OSError, failed: trio.Event) -> None:
        self.errors.append(error)
        failed.set()

    def close_winner(self) -> None:
        if self.winner is not None:
            self.winner.socket.close()
            self.winner = None


async def dial_h2(peer: Peer, *, context: ssl.SSLContext | None = None) -> trio.abc.Stream:
    """``dial`` for HTTP/2: TLS peers offer ``H2_ALPN`` and must agree on ``h2`` (see the module
    docstring); the stream is closed on any failure. Raises ``ConnectFailed``."""
    stream = await dial(peer, context=context, alpn=H2_ALPN)
    if isinstance(stream, trio.SSLStream) and stream.selected_alpn_protocol() != "h2":
        await trio.aclose_forcefully(stream)
        raise ConnectFailed("tls", "backend did not negotiate h2")
    return stream


async def handshake(
    stream: trio.abc.Stream, context: ssl.SSLContext, server_name: str
) -> trio.SSLStream[trio.abc.Stream]:
    """TLS over ``stream`` as a client of ``server_name`` (SNI and the name verified); the
    caller closes ``stream`` on any exception. Raises ``ConnectFailed("tls", detail)``."""
    tls = trio.SSLStream(
        stream, context, server_hostname=server_name or None, https_compatible=True
    )
    try:
        await tls.do_handshake()
    except (trio.BrokenResourceError, ssl.SSLError, OSError) as error:
        raise ConnectFailed("tls", f"TLS handshake failed: {handshake_failure(error)}") from error
    return tls


def handshake_failure(error: BaseException) -> str:
    """Why a handshake failed, in OpenSSL's words (``certificate verify failed: …``)."""
    cause = error.__cause__ if isinstance(error, trio.BrokenResourceError) else error
    match cause:
        case ssl.SSLCertVerificationError():
            return f"certificate verify failed: {cause.verify_message}"
        case ssl.SSLEOFError() | ssl.SSLZeroReturnError() | None:
            return "connection closed during the handshake"
        case ssl.SSLError(reason=str(reason)):
            return reason.lower().replace("_", " ")
        case OSError():
            return f"connection {connect_reason(cause)} during the handshake"
        case _:
            return str(cause) or type(cause).__name__


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


# -- TLS contexts ---------------------------------------------------------------------------


def build_context(identity: TlsIdentity, alpn: tuple[str, ...] = ALPN) -> ssl.SSLContext:
    """A client context for ``identity`` offering ``alpn`` (blocking: reads files). Raises
    ``OSError`` or ``ssl.SSLError`` when a file cannot be read or does not hold what it should.

    Verifying: the system store, or only ``ca_file`` when set; host names checked; TLS ≥ 1.2
    (``create_default_context``). Not verifying: no certificate or name checks at all.
    """
    if identity.verify:
        context = ssl.create_default_context(cafile=identity.ca_file or None)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if identity.cert_file:
        context.load_cert_chain(identity.cert_file, identity.key_file or None)
    context.set_alpn_protocols(list(alpn))
    return context


def _stamp(identity: TlsIdentity) -> _Stamp:
    stamps: list[tuple[int, int, int] | None] = []
    for path in (identity.ca_file, identity.cert_file, identity.key_file):
        if not path:
            continue
        try:
            info = os.stat(path)
        except OSError:
            stamps.append(None)
        else:
            stamps.append((info.st_ino, info.st_size, info.st_mtime_ns))
    return tuple(stamps)


class TlsContexts:
    """``ssl.SSLContext`` per ``TlsIdentity`` and ALPN list: built on first use, shared, rebuilt
    when a file of the identity changed (see the module docstring)."""

    __slots__ = ("_built",)

    def __init__(self) -> None:
        self._built: dict[tuple[TlsIdentity, tuple[str, ...]], tuple[_Stamp, ssl.SSLContext]] = {}

    async def get(self, identity: TlsIdentity, alpn: tuple[str, ...] = ALPN) -> ssl.SSLContext:
        """The context of ``identity`` offering ``alpn``; a checkpoint only when it must be
        (re)built, in a worker thread. Raises ``ConnectFailed("tls", detail)`` when it cannot be
        built and there is no previous one."""
        stamp = _stamp(identity)
        known = self._built.get((identity, alpn))
        if known is not None and known[0] == stamp:
            return known[1]
        try:
            context = await trio.to_thread.run_sync(
                build_context, identity, alpn, abandon_on_cancel=True
            )
        except (OSError, ssl.SSLError, ValueError) as error:
            if known is not None:  # a file being replaced: keep what worked
                return known[1]
            raise ConnectFailed("tls", f"TLS settings unusable: {error}") from error
        self._built[(identity, alpn)] = (stamp, context)
        return context

    def __len__(self) -> int:
        return len(self._built)


#: The gateway's contexts, shared by the data plane's pool, the probes and the outbound caller.
CONTEXTS: Final = TlsContexts()
