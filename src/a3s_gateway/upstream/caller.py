"""``PooledHttpCaller``: the gateway's own HTTP/1.1 GETs to services it calls (SPEC §8.5, §5.7).

Ring 1. Implements ``middleware.outbound.HttpCaller`` for forward-auth (and JWKS fetching): a
``GET`` of an ``http``/``https`` URL whose whole reply is read into memory, bounded in time
(``within``) and size (``max_body``). It never follows redirects (SPEC §5.4 "Redirects"): a 3xx
is a reply like any other.

Connections: its own ``UpstreamPool`` (the data plane's pool is for backends), keyed by
``Peer`` (``https`` peers carry ``tls=True`` and the URL host as ``server_name``), over the
data plane's dialer (``upstream/dialer.py``), which wraps the TCP stream in ``trio.SSLStream``
for ``https`` and completes the handshake inside the caller's deadline, with the system trust
store's context shared with every other TLS client of the gateway (``dialer.CONTEXTS``).
Requests are written and responses read by the project's ``Http1Client`` adapter, as
``upstream/http1_upstream.py`` does for proxied requests. A connection goes back to the pool
only after a complete, clean response (the adapter's ``reusable``); a reply over ``max_body``,
a timeout or any error closes it. A *reused* connection that fails before any response byte is
replaced by a fresh one and the request sent once more (SPEC §5.7 "Stale reuse"; a GET without
a body is idempotent).

Nursery and deadlines: ``run`` is the pool's ``run`` (its idle reaper), started with
``nursery.start`` by ``server/outbound_clients.py`` in the gateway's root nursery; ``get`` sets
the only deadline (``within``) around everything: waiting for pool capacity, DNS, connect, TLS,
the request and the whole reply. ``aclose`` closes idle connections (bounded by the pool).

Errors: ``OutboundTimeout`` when ``within`` expired; ``ReplyTooLarge`` for a body over
``max_body``; ``OutboundFailed`` for everything else (refused, unreachable, reset, TLS failure,
an invalid or unsolicited-101 reply, a closed pool). Messages are for logs, never for clients.

Must not: follow redirects, send a body, reuse a connection after an incomplete exchange, or
share its pool with the data plane.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.middleware.outbound import (
    HttpReply,
    OutboundFailed,
    OutboundTimeout,
    ReplyTooLarge,
)
from a3s_gateway.protocols.events import (
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.headers import strip_hop_by_hop
from a3s_gateway.upstream.connect_errors import ConnectFailed, PoolClosed
from a3s_gateway.upstream.dialer import dial
from a3s_gateway.upstream.peer import Peer, PoolSettings
from a3s_gateway.upstream.pool import UpstreamPool

if TYPE_CHECKING:
    import ssl

    from a3s_gateway.config.urls import HttpUrl
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.upstream.pooled_connection import UpstreamConnection

__all__ = ["CALLER_POOL", "PooledHttpCaller"]

#: Pool limits per origin the gateway calls: a few idle connections kept for 30 s (auth servers
#: often close idle ones sooner; a dead idle connection is dropped or retried, SPEC §5.7).
CALLER_POOL: Final = PoolSettings(
    max_idle_per_backend=32, idle_conn_timeout=30.0, max_conns_per_backend=256
)
_READ_SIZE: Final = 65536
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: Fields the caller owns or that would change the framing of a bodiless GET.
_DROPPED: Final = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect"})


class _Stale(Exception):  # noqa: N818 -- a verdict about the connection, not an error
    """A reused connection failed before any response byte: send the request again."""


class PooledHttpCaller:
    """``GET`` over pooled HTTP/1.1 connections, plain or TLS (see the module docstring).

    ``ssl_context`` verifies ``https`` servers (default: the shared context of the system trust
    store, ``dialer.CONTEXTS``, offering ALPN ``http/1.1``).
    """

    __slots__ = ("_pool", "_settings", "_ssl_context")

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, settings: PoolSettings = CALLER_POOL
    ) -> None:
        self._ssl_context = ssl_context
        self._settings = settings
        self._pool = UpstreamPool(dialer=self._dial)

    # --- lifecycle ---

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the pool's idle reaper until cancelled or ``aclose``; start with
        ``nursery.start``."""
        await self._pool.run(task_status=task_status)

    async def aclose(self) -> None:
        """Close every idle connection; later calls fail with ``OutboundFailed``. A checkpoint."""
        await self._pool.aclose()

    # --- calls ---

    async def get(
        self, url: HttpUrl, headers: Headers, *, within: float, max_body: int
    ) -> HttpReply:
        """``GET url`` with ``headers`` (``Host`` from ``url``), the whole reply within
        ``within`` seconds. Raises ``OutboundTimeout``, ``ReplyTooLarge`` or ``OutboundFailed``.
        """
        peer = peer_of(url)
        head = request_head(url, headers)
        with trio.move_on_after(within):
            try:
                return await self._exchange(peer, head, max_body)
            except ConnectFailed as error:
                raise OutboundFailed(f"{peer}: {error}") from error
            except PoolClosed as error:
                raise OutboundFailed(f"{peer}: caller closed") from error
        raise OutboundTimeout(f"{peer}: no complete reply within {within:g}s")

    def stats(self, url: HttpUrl) -> tuple[int, int]:
        """(idle, busy) connections to ``url``'s origin (for tests and diagnostics)."""
        counts = self._pool.stats(peer_of(url))
        return counts.idle, counts.busy

    async def _exchange(self, peer: Peer, head: RequestHead, max_body: int) -> HttpReply:
        pool = self._pool
        conn = pool.try_reuse(peer, self._settings)
        if conn is None:
            conn = await pool.acquire(peer, self._settings)
        try:
            return await self._attempt(conn, head, max_body)
        except _Stale:
            pass
        conn = await pool.acquire(peer, self._settings, fresh=True)
        try:
            return await self._attempt(conn, head, max_body)
        except _Stale as stale:  # a fresh connection is never retried
            raise OutboundFailed(str(stale)) from stale.__cause__

    async def _attempt(
        self, conn: UpstreamConnection, head: RequestHead, max_body: int
    ) -> HttpReply:
        """One request on ``conn``; the connection is released here, reusable only when the
        reply was read completely and cleanly."""
        reusable = False
        adapter = conn.adapter
        try:
            try:
                wire = adapter.send(head)
            except ProtocolViolation as violation:  # a header the caller passed is invalid
                raise OutboundFailed(f"request not sent: {violation.reason}") from violation
            try:
                await conn.stream.send_all(wire)
            except BaseException as error:
                adapter.send_failed()
                if isinstance(error, (trio.BrokenResourceError, trio.ClosedResourceError, OSError)):
                    raise self._failure(conn, "write failed") from error
                raise
            reply = await self._read_reply(conn, max_body)
            reusable = adapter.reusable
            return reply
        finally:
            if reusable:
                adapter.start_next_cycle()
            self._pool.release(conn, reusable=reusable)

    async def _read_reply(self, conn: UpstreamConnection, max_body: int) -> HttpReply:
        adapter = conn.adapter
        response: ResponseHead | None = None
        body = bytearray()
        while True:
            try:
                data = await conn.stream.receive_some(_READ_SIZE)
                events = adapter.receive(bytes(data))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
                raise self._failure(conn, "read failed") from error
            except ProtocolViolation as violation:
                raise self._failure(conn, f"invalid reply: {violation.reason}") from violation
            if not events and not data:
                raise self._failure(conn, "connection closed")
            for event in events:
                match event:
                    case Informational():
                        continue  # 100 Continue, 103 Early Hints: not the answer
                    case ResponseHead():
                        response = event
                        _check_declared_length(event, max_body)
                    case BodyChunk(data=chunk):
                        body += chunk
                        if len(body) > max_body:
                            raise ReplyTooLarge(f"reply body over {max_body} bytes")
                    case EndOfBody():
                        if response is None:  # the adapter never ends a body before its head
                            raise OutboundFailed("reply body without a head")
                        return HttpReply(response.status, list(response.headers), bytes(body))
                    case ConnectionClosed():
                        raise self._failure(conn, "connection closed before a reply")
                    case _:
                        raise OutboundFailed("unexpected event in a reply")

    @staticmethod
    def _failure(conn: UpstreamConnection, detail: str) -> Exception:
        """``_Stale`` when a reused connection failed before any reply byte, else
        ``OutboundFailed``."""
        if conn.reused and not conn.adapter.received_any:
            return _Stale(f"{conn.peer}: {detail} (stale connection)")
        return OutboundFailed(f"{conn.peer}: {detail}")

    # --- dialling ---

    async def _dial(self, peer: Peer) -> trio.abc.Stream:
        """The pool's dialer: TCP, then TLS for ``https`` peers, handshake included, all in the
        caller's deadline. Raises ``ConnectFailed``."""
        return await dial(peer, context=self._ssl_context)


def peer_of(url: HttpUrl) -> Peer:
    """The pool key of ``url``'s origin."""
    if url.scheme == "https":
        return Peer("https", url.host, url.port, tls=True, server_name=url.host)
    return Peer("http", url.host, url.port)


def host_field(url: HttpUrl) -> bytes:
    """``Host`` for ``url``: its host (IPv6 in brackets), and the port unless the default."""
    host = f"[{url.host}]" if ":" in url.host else url.host
    if url.port != _DEFAULT_PORTS[url.scheme]:
        host = f"{host}:{url.port}"
    return host.encode("ascii")


def request_head(url: HttpUrl, headers: Headers) -> RequestHead:
    """``GET url.target`` with ``Host`` first and ``headers`` without hop-by-hop fields, any
    ``Host`` of theirs, or fields that would give the GET a body."""
    host = host_field(url)
    kept = [line for line in strip_hop_by_hop(headers) if line[0] not in _DROPPED]
    return RequestHead(
        method=b"GET",
        target=url.target.encode("ascii"),
        authority=host,
        headers=[(b"host", host), *kept],
    )


def _check_declared_length(head: ResponseHead, max_body: int) -> None:
    """A ``Content-Length`` over ``max_body`` is too large before any body byte is read."""
    for name, value in head.headers:
        if name == b"content-length" and value.isdigit() and int(value) > max_body:
            raise ReplyTooLarge(f"reply declares {int(value)} bytes, over {max_body}")
