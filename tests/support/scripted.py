"""A scriptable HTTP/1.1 server (trio + h11) for the gateway's outbound calls: auth services
(forward-auth), and the peers of ``upstream/caller.py``'s tests.

``ScriptedServer(handler)`` listens on 127.0.0.1:0, or a given ``port`` (plain, or TLS with an
``ssl.SSLContext``) and answers each request with what ``handler(seen)`` returns:

- ``Reply``: a status, header lines and a body (``Content-Length``, or chunked);
- ``Drop``: read the request, then close the connection without a byte of reply;
- ``Hang``: read the request, then say nothing until ``release`` is set (then close).

Every request is recorded (``requests``) with its connection number and its position on that
connection, so tests can tell a reused connection from a new one. Keep-alive is honoured as h11
decides. Waits are bounded by the caller (the suite's time limit, or a ``fail_after``).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

import h11
import trio

HeaderPairs: TypeAlias = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    connection: int
    index: int  # 0 for the first request on its connection
    method: bytes
    target: bytes
    headers: HeaderPairs

    def values(self, name: bytes) -> list[bytes]:
        """Every value of field ``name`` (lower case), in order."""
        return [value for key, value in self.headers if key == name]

    def header(self, name: bytes) -> bytes | None:
        """The only value of field ``name`` (asserts at most one line), or None."""
        found = self.values(name)
        assert len(found) <= 1, (name, found)
        return found[0] if found else None


@dataclass(frozen=True)
class Reply:
    """Answer with ``status``, ``headers`` (framing added) and ``body``."""

    status: int = 200
    headers: HeaderPairs = ()
    body: bytes = b""
    chunked: bool = False


@dataclass(frozen=True)
class Drop:
    """Read the request, then close without answering."""


@dataclass(frozen=True, eq=False)
class Hang:
    """Read the request, then answer nothing until ``release`` is set; then close."""

    release: trio.Event = field(default_factory=trio.Event)


Action: TypeAlias = Reply | Drop | Hang
Handler: TypeAlias = Callable[[Seen], Action]


class _Done(Exception):  # noqa: N818 -- an event
    """Stop serving this connection."""


class ScriptedServer:
    """See the module docstring."""

    def __init__(
        self, handler: Handler, *, ssl_context: ssl.SSLContext | None = None, port: int = 0
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self._bind_port = port  # 0: any free port (a given one lets a peer start "down")
        self.port = 0
        self.requests: list[Seen] = []
        self.connections = 0

    def url(self, path: str = "/") -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on 127.0.0.1 (port ``port``, by default any) and serve until cancelled."""
        (listener,) = await trio.open_tcp_listeners(self._bind_port, host="127.0.0.1")
        self.port = int(listener.socket.getsockname()[1])
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                self.connections += 1
                nursery.start_soon(self._connection, stream, self.connections)

    async def _connection(self, tcp: trio.SocketStream, number: int) -> None:
        stream: trio.abc.Stream = tcp
        if self.ssl_context is not None:
            stream = trio.SSLStream(tcp, self.ssl_context, server_side=True)
        conn = h11.Connection(h11.SERVER)
        index = 0
        try:
            while True:
                request = await self._request(stream, conn)
                seen = Seen(
                    number,
                    index,
                    request.method,
                    request.target,
                    tuple((bytes(k), bytes(v)) for k, v in request.headers),
                )
                self.requests.append(seen)
                index += 1
                await self._drain_body(stream, conn)
                action = self.handler(seen)
                if isinstance(action, Drop):
                    return
                if isinstance(action, Hang):
                    await action.release.wait()
                    return
                await self._reply(stream, conn, action, head_only=request.method == b"HEAD")
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()
        except (_Done, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def _next(self, stream: trio.abc.Stream, conn: h11.Connection) -> object:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as error:
                raise _Done from error
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
                continue
            if event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                raise _Done
            return event

    async def _request(self, stream: trio.abc.Stream, conn: h11.Connection) -> h11.Request:
        event = await self._next(stream, conn)
        if not isinstance(event, h11.Request):
            raise _Done
        return event

    async def _drain_body(self, stream: trio.abc.Stream, conn: h11.Connection) -> None:
        while not isinstance(await self._next(stream, conn), h11.EndOfMessage):
            pass

    async def _reply(
        self, stream: trio.abc.Stream, conn: h11.Connection, reply: Reply, *, head_only: bool
    ) -> None:
        framing = (
            (b"transfer-encoding", b"chunked")
            if reply.chunked
            else (b"content-length", str(len(reply.body)).encode())
        )
        headers = [*reply.headers]
        if reply.status not in (204, 304):
            headers.append(framing)
        data = conn.send(h11.Response(status_code=reply.status, headers=headers))
        if reply.body and not head_only and reply.status not in (204, 304):
            if reply.chunked:  # several chunks, so that a reader sees more than one
                for start in range(0, len(reply.body), 4096):
                    data += conn.send(h11.Data(data=reply.body[start : start + 4096]))
            else:
                data += conn.send(h11.Data(data=reply.body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
