"""The HTTP/1.1 server side of the demo backends: a listener and an h11-driven connection loop.

Ring 1: owns listening sockets and one task per client connection. Built on h11 directly and
never on the gateway's own server code, so the demo shows the gateway talking to an independent
peer. ``Exchange`` drives one connection; the services (``demo.echo``, ``demo.stream``) only see
a parsed ``Request`` and answer through the ``Exchange``.

Nurseries: ``serve_backend`` runs ``trio.serve_listeners``, whose handler nursery holds one task
per connection; the listener and every connection end when the caller's nursery is cancelled.
Deadlines: a keep-alive connection idle for ``IDLE_TIMEOUT`` between requests is closed.
Must not: buffer without a bound (reads are ``MAX_READ`` bytes, a request head at most
``MAX_HEAD``, request bodies are counted and dropped), or let one bad connection stop a server.
"""

from __future__ import annotations

import functools
import http
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import h11
import trio

from a3s_gateway.errors import StartError

log: Final = logging.getLogger("a3s_gateway.demo")

MAX_READ: Final = 64 * 1024
MAX_HEAD: Final = 16 * 1024
IDLE_TIMEOUT: Final = 60.0
HOST: Final = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Request:
    """One request as a demo service sees it, after its body was read and counted."""

    method: str
    target: str
    http_version: str
    #: Header fields as received: original name case, order and repetition.
    headers: tuple[tuple[str, str], ...]
    body_bytes: int

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    def header(self, name: str) -> str:
        """The comma-joined values of header ``name`` (any case); ``""`` if absent."""
        wanted = name.lower()
        return ", ".join(value for key, value in self.headers if key.lower() == wanted)

    def header_map(self) -> dict[str, str]:
        """Headers as a JSON object: the first spelling of each name, repeated values joined."""
        merged: dict[str, str] = {}
        spelling: dict[str, str] = {}
        for key, value in self.headers:
            key = spelling.setdefault(key.lower(), key)
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        return merged


Handler = Callable[["Exchange", Request], Awaitable[None]]


class Exchange:
    """One client connection of a demo backend, driven by an ``h11.Connection``.

    The connection loop reads a request (``read_request``), hands it to the service, then starts
    the next cycle if both sides are done. Every send is a checkpoint and may raise
    ``trio.BrokenResourceError``; the connection loop owns the stream and closes it.
    """

    def __init__(self, service: str, stream: trio.SocketStream) -> None:
        self.service = service
        self.stream = stream
        self.connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.client = _peer(stream)
        self._head_only = False

    async def next_event(self) -> h11.Event | None:
        """The next h11 event, reading as needed; ``None`` when h11 is paused (after an
        upgrade request or a finished request, until the cycle is restarted)."""
        while True:
            event = self.connection.next_event()
            if isinstance(event, h11.Event):
                return event
            if event is h11.PAUSED:
                return None
            self.connection.receive_data(await self.stream.receive_some(MAX_READ))

    async def read_request(self) -> Request | None:
        """The next request with its body counted; ``None`` if the client closed or went
        quiet for ``IDLE_TIMEOUT``. Raises ``h11.RemoteProtocolError`` for a malformed one."""
        event: h11.Event | None = None
        with trio.move_on_after(IDLE_TIMEOUT):
            event = await self.next_event()
        if not isinstance(event, h11.Request):
            return None
        self._head_only = event.method == b"HEAD"
        headers = tuple(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in event.headers.raw_items()
        )
        body_bytes = await self._count_body()
        return Request(
            method=event.method.decode("ascii"),
            target=event.target.decode("latin-1"),
            http_version=event.http_version.decode("ascii"),
            headers=headers,
            body_bytes=body_bytes,
        )

    async def _count_body(self) -> int:
        if self.connection.they_are_waiting_for_100_continue:
            await self.send(h11.InformationalResponse(status_code=100, headers=[]))
        count = 0
        while True:
            event = await self.next_event()
            if isinstance(event, h11.Data):
                count += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                return count
            else:
                raise trio.BrokenResourceError("connection ended inside a request body")

    async def send(self, event: h11.Event) -> None:
        data = self.connection.send(event)
        if data:
            await self.stream.send_all(data)

    async def start_response(self, status: int, headers: Sequence[tuple[str, str]]) -> None:
        """Send the response head; the body follows with ``send_body`` and ``end_response``."""
        reason = _reason(status)
        fields = [*headers, ("server", f"a3s-demo/{self.service}")]
        await self.send(h11.Response(status_code=status, headers=fields, reason=reason))

    async def send_body(self, data: bytes) -> None:
        """Send a piece of the response body (nothing for a HEAD request)."""
        if data and not self._head_only:
            await self.send(h11.Data(data=data))

    async def end_response(self) -> None:
        await self.send(h11.EndOfMessage())

    async def respond(
        self, status: int, body: bytes, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """A whole response with a ``Content-Length`` (none for 204 and 304, RFC 9110 §8.6)."""
        bodiless = status in (204, 304)
        length = () if bodiless else (("content-length", str(len(body))),)
        await self.start_response(status, [*headers, *length])
        if not bodiless:
            await self.send_body(body)
        await self.end_response()

    async def respond_json(self, status: int, document: dict[str, object]) -> None:
        body = json.dumps(document, indent=2).encode() + b"\n"
        await self.respond(status, body, [("content-type", "application/json")])

    async def switch_protocols(self, headers: Sequence[tuple[str, str]]) -> bytes:
        """Accept the client's upgrade with a 101; returns the bytes already received after
        the request, which belong to the new protocol. The stream is then the caller's."""
        await self.send(h11.InformationalResponse(status_code=101, headers=list(headers)))
        data, _closed = self.connection.trailing_data
        return data

    def next_cycle(self) -> bool:
        """Prepare for the next request on this connection; whether keep-alive goes on."""
        if self.connection.our_state is h11.DONE and self.connection.their_state is h11.DONE:
            self.connection.start_next_cycle()
            return True
        return False

    async def reject(self, error: h11.RemoteProtocolError) -> None:
        """Answer a malformed request (400, or h11's hint such as 431) and close."""
        if self.connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        document: dict[str, object] = {"service": self.service, "error": str(error)}
        body = json.dumps(document).encode() + b"\n"
        headers = [("content-type", "application/json"), ("connection", "close")]
        await self.respond(error.error_status_hint, body, headers)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


def _peer(stream: trio.SocketStream) -> str:
    host, port, *_ = stream.socket.getpeername()
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


async def serve_connection(service: str, handler: Handler, stream: trio.SocketStream) -> None:
    """Serve requests on one connection until it closes; never raises for peer trouble."""
    exchange = Exchange(service, stream)
    try:
        async with stream:
            while True:
                try:
                    request = await exchange.read_request()
                except h11.RemoteProtocolError as error:
                    await exchange.reject(error)
                    return
                if request is None:
                    return
                await handler(exchange, request)
                if not exchange.next_cycle():
                    return
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError) as error:
        log.debug("demo backend %s: connection from %s ended: %s", service, exchange.client, error)


async def serve_backend(
    service: str,
    handler: Handler,
    *,
    port: int = 0,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on 127.0.0.1 ``port`` (0: a free one), report the bound port through
    ``task_status.started`` and serve until cancelled. Raises ``StartError`` if the listener
    cannot be opened."""
    try:
        listeners = await trio.open_tcp_listeners(port, host=HOST)
    except OSError as error:
        raise StartError(f"demo backend {service}: cannot listen on {HOST}: {error}") from error
    port = int(listeners[0].socket.getsockname()[1])
    log.debug("demo backend %s listening on %s:%d", service, HOST, port)
    task_status.started(port)
    await trio.serve_listeners(functools.partial(serve_connection, service, handler), listeners)
