"""Redis clients for middlewares (SPEC §8.7 "Client"): RESP2 over TCP or TLS, pooled per URL.

Ring 1. ``RedisClients`` is the ``RedisConnector`` of one gateway process
(``server/outbound_clients.py`` owns it): one ``RedisPool`` per ``RedisUrl``, created on first
use. Replies are parsed by ``hiredis.Reader``; commands are encoded here (a RESP array of bulk
strings).

A pool keeps at most ``max_idle`` idle connections and has at most ``max_open`` calls in
flight, each on one connection, so at most ``max_open`` connections are open. Connections are
opened lazily in the caller's task (TCP, then TLS for ``rediss://`` with the injected
``SSLContext`` or ``ssl.create_default_context()``, then ``AUTH`` and ``SELECT`` from the URL,
pipelined); there is no background task and no nursery here.

Deadlines: every ``execute`` runs under one ``trio.move_on_after(within)`` that covers waiting
for a free slot, connecting, the TLS handshake, ``AUTH``/``SELECT``, sending and reading the
reply; expiry raises ``OutboundTimeout``. A connection whose call failed, timed out or was
cancelled is closed at once and never reused; an error reply (``RedisReplyError``) leaves its
connection in the pool, since the reply was read whole.

Reuse: an idle connection is taken from the top of the stack only if its socket is not
readable (an idle Redis connection has nothing to say, so readable means EOF, a reset or stray
bytes: the server restarted, timed the client out or killed it); others are closed on the way.
A command is never sent twice: a connection that dies between that check and the reply fails
its call.

Must not: start tasks, read the wall clock, log, or put the URL's password in any message.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Final, TypeAlias

import hiredis
import trio

from a3s_gateway.middleware.outbound import OutboundFailed, OutboundTimeout, RedisReplyError
from a3s_gateway.upstream.dialer import connect_reason

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from a3s_gateway.config.urls import RedisUrl

__all__ = [
    "MAX_IDLE",
    "MAX_OPEN",
    "MAX_REPLY_BYTES",
    "RedisClients",
    "RedisPool",
    "encode_command",
]

#: Idle connections kept per URL (per worker).
MAX_IDLE: Final = 8
#: Calls in flight (and so open connections) per URL (per worker).
MAX_OPEN: Final = 16
#: The most bytes one call reads before its reply is complete (a runaway reply is an error).
MAX_REPLY_BYTES: Final = 16 * 1024 * 1024
_READ_SIZE: Final = 65536
#: What ``hiredis.Reader.gets`` returns while a reply is incomplete.
_INCOMPLETE: Final = object()

Argument: TypeAlias = bytes | str | int


def encode_command(args: Sequence[Argument]) -> bytes:
    """One command as a RESP array of bulk strings (``str`` as UTF-8, ``int`` in decimal)."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _ProtocolError(OutboundFailed):
    """What ``hiredis.Reader`` raises for bytes that are not RESP."""


class _Connection:
    """One connection: a TCP stream (TLS on top when ``rediss``) and its reply reader."""

    __slots__ = ("_reader", "_stream", "_tcp", "_where")

    def __init__(self, tcp: trio.SocketStream, stream: trio.abc.Stream, where: str) -> None:
        self._tcp = tcp
        self._stream = stream
        self._where = where
        self._reader = hiredis.Reader(
            protocolError=_ProtocolError,
            replyError=RedisReplyError,
            notEnoughData=_INCOMPLETE,
        )

    async def call(self, payload: bytes, replies: int = 1) -> list[object]:
        """Send ``payload`` (``replies`` commands) and read that many replies.

        Error replies are returned as ``RedisReplyError`` values. Raises ``OutboundFailed``.
        """
        stream = self._stream
        results: list[object] = []
        received = 0
        try:
            await stream.send_all(payload)
            while len(results) < replies:
                reply: object = self._reader.gets()
                if reply is not _INCOMPLETE:
                    results.append(reply)
                    continue
                data = await stream.receive_some(_READ_SIZE)
                if not data:
                    raise OSError("closed by the server")
                received += len(data)
                if received > MAX_REPLY_BYTES:
                    raise OutboundFailed(
                        f"redis {self._where}: reply larger than {MAX_REPLY_BYTES} bytes"
                    )
                self._reader.feed(bytes(data))  # no copy of the bytes a socket returns
        except _ProtocolError as error:
            raise OutboundFailed(f"redis {self._where}: invalid reply ({error})") from error
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise OutboundFailed(
                f"redis {self._where}: connection lost: {str(error) or type(error).__name__}"
            ) from error
        return results

    def looks_dead(self) -> bool:
        """True if this idle connection must not be used: closed, or readable (see the module
        doc). Never blocks."""
        sock = self._tcp.socket
        return sock.fileno() == -1 or sock.is_readable()

    def close(self) -> None:
        """Close the socket now (no TLS close_notify); a task blocked on it gets an error."""
        self._tcp.socket.close()


class RedisPool:
    """The ``RedisClient`` of one URL: a bounded pool of connections (see the module doc)."""

    __slots__ = (
        "_closed",
        "_context",
        "_handshake",
        "_idle",
        "_max_idle",
        "_open",
        "_slots",
        "_url",
        "where",
    )

    def __init__(
        self,
        url: RedisUrl,
        *,
        context: Callable[[], ssl.SSLContext],
        max_idle: int = MAX_IDLE,
        max_open: int = MAX_OPEN,
    ) -> None:
        if max_open < 1 or max_idle < 0:
            raise ValueError(f"bad pool bounds: max_idle={max_idle}, max_open={max_open}")
        self._url = url
        self._context = context
        self._max_idle = max_idle
        self._slots = trio.Semaphore(max_open)
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()
        self._closed = False
        self._handshake = _handshake(url)
        #: ``host:port`` for messages (never the password).
        self.where = f"[{url.host}]:{url.port}" if ":" in url.host else f"{url.host}:{url.port}"

    @property
    def open_connections(self) -> int:
        """Connections open now (idle and in use)."""
        return len(self._open)

    @property
    def idle_connections(self) -> int:
        """Connections waiting in the pool now."""
        return len(self._idle)

    async def execute(self, *args: Argument, within: float) -> object:
        """Send one command; its reply (bytes, int, list, None; error replies nested in a list
        are ``RedisReplyError`` values). Always a checkpoint.

        Raises ``OutboundTimeout`` when ``within`` seconds pass first (waiting for a slot
        included), ``RedisReplyError`` for an error reply, ``OutboundFailed`` otherwise.
        """
        if self._closed:
            await trio.lowlevel.checkpoint()
            raise OutboundFailed(f"redis {self.where}: client closed")
        if not within > 0:
            await trio.lowlevel.checkpoint()
            raise OutboundTimeout(f"redis {self.where}: no time left")
        payload = encode_command(args)
        reply: object = _INCOMPLETE
        with trio.move_on_after(within):
            async with self._slots:
                reply = await self._call(payload)
        if reply is _INCOMPLETE:
            raise OutboundTimeout(f"redis {self.where}: no reply within {within:g}s")
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def close_now(self) -> None:
        """Close every connection, idle or in use (their calls fail); later calls fail."""
        self._closed = True
        for connection in list(self._open):
            self._discard(connection)
        self._idle.clear()

    async def aclose(self) -> None:
        """``close_now``, then a checkpoint."""
        self.close_now()
        await trio.lowlevel.checkpoint()

    async def _call(self, payload: bytes) -> object:
        idle = self._idle
        while idle:
            connection = idle.pop()
            if not connection.looks_dead():
                return await self._use(connection, payload)
            self._discard(connection)
        return await self._use(await self._connect(), payload)

    async def _use(self, connection: _Connection, payload: bytes) -> object:
        try:
            (reply,) = await connection.call(payload)
        except BaseException:
            self._discard(connection)
            raise
        if self._closed or len(self._idle) >= self._max_idle:
            self._discard(connection)
        else:
            self._idle.append(connection)
        return reply

    async def _connect(self) -> _Connection:
        url = self._url
        try:
            tcp = await trio.open_tcp_stream(url.host, url.port)
        except OSError as error:
            raise OutboundFailed(
                f"redis {self.where}: connect failed ({connect_reason(error)})"
            ) from error
        try:
            stream: trio.abc.Stream = tcp
            if url.tls:
                stream = trio.SSLStream(tcp, self._context(), server_hostname=url.host)
                try:
                    await stream.do_handshake()
                except trio.BrokenResourceError as error:
                    reason = error.__cause__ or error
                    raise OutboundFailed(
                        f"redis {self.where}: TLS handshake failed ({reason})"
                    ) from error
            connection = _Connection(tcp, stream, self.where)
            if self._handshake is not None:
                commands, names = self._handshake
                replies = await connection.call(commands, len(names))
                for name, reply in zip(names, replies, strict=True):
                    if isinstance(reply, RedisReplyError):
                        raise RedisReplyError(f"{name} refused: {reply}")
        except BaseException:
            tcp.socket.close()
            raise
        self._open.add(connection)
        return connection

    def _discard(self, connection: _Connection) -> None:
        self._open.discard(connection)
        connection.close()


def _handshake(url: RedisUrl) -> tuple[bytes, tuple[str, ...]] | None:
    """``AUTH`` and ``SELECT`` for a new connection, pipelined, with their names; None if
    neither is needed. A user without a password authenticates with an empty one (what an ACL
    user marked ``nopass`` accepts)."""
    commands: list[bytes] = []
    names: list[str] = []
    if url.password is not None or url.username is not None:
        password = url.password or ""
        if url.username is None:
            commands.append(encode_command(("AUTH", password)))
        else:
            commands.append(encode_command(("AUTH", url.username, password)))
        names.append("AUTH")
    if url.db:
        commands.append(encode_command(("SELECT", url.db)))
        names.append("SELECT")
    return (b"".join(commands), tuple(names)) if commands else None


class RedisClients:
    """The ``RedisConnector`` of one gateway process: one ``RedisPool`` per URL.

    ``ssl_context`` is used for ``rediss://`` URLs; by default ``ssl.create_default_context()``
    (made on the first TLS connect).
    """

    __slots__ = ("_closed", "_context", "_max_idle", "_max_open", "_pools")

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = MAX_IDLE,
        max_open: int = MAX_OPEN,
    ) -> None:
        self._context = ssl_context
        self._max_idle = max_idle
        self._max_open = max_open
        self._pools: dict[RedisUrl, RedisPool] = {}
        self._closed = False

    def client(self, url: RedisUrl) -> RedisPool:
        """The pool for ``url`` (created on first use; connects lazily). After ``aclose``
        every client's calls fail with ``OutboundFailed``."""
        pool = self._pools.get(url)
        if pool is None:
            pool = RedisPool(
                url, context=self._ssl_context, max_idle=self._max_idle, max_open=self._max_open
            )
            if self._closed:
                pool.close_now()
            self._pools[url] = pool
        return pool

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            self._context = ssl.create_default_context()
        return self._context

    async def aclose(self) -> None:
        """Close every pool's connections. A checkpoint."""
        self._closed = True
        for pool in self._pools.values():
            pool.close_now()
        await trio.lowlevel.checkpoint()
