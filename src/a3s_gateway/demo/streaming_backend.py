"""The demo's streaming service: server-sent events and a WebSocket echo.

Ring 1. Endpoints (matched on the last path segment, so a gateway prefix does not matter):

- ``GET …/events``: ``text/event-stream`` with one ``data:`` event per interval carrying a
  counter, then the response ends; ``?count=N`` (1–``MAX_EVENTS``, default 10) and
  ``?interval_ms=M`` (0–``MAX_INTERVAL_MS``, default 1000) tune it. Each event is written as
  soon as it is made, so a client (or the gateway, SPEC §5.12) sees them one by one.
- ``GET …/ws``: a WebSocket echo (RFC 6455). h11 parses the upgrade request and sends the 101;
  the bytes after it go to a post-handshake ``wsproto.connection.Connection``. Text and binary
  messages are echoed frame by frame (so memory stays bounded), pings answered, and a Close
  is answered with a Close before the connection is closed.

Nurseries: none; each exchange runs in its connection's task. Must not: buffer a whole
WebSocket message or read faster than it writes (one ``MAX_READ`` read at a time).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.utilities import ProtocolError

from a3s_gateway.demo.exchange import MAX_READ

if TYPE_CHECKING:
    from a3s_gateway.demo.exchange import Exchange, Request

MAX_EVENTS: Final = 1000
MAX_INTERVAL_MS: Final = 60_000
#: RFC 6455 §1.3: appended to Sec-WebSocket-Key before hashing.
WEBSOCKET_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


async def handle_stream(exchange: Exchange, request: Request) -> None:
    """Answer one request (see the module docstring)."""
    endpoint = request.path.rstrip("/").rpartition("/")[2]
    if endpoint == "events" and request.method in ("GET", "HEAD"):
        await _events(exchange, request)
    elif endpoint == "ws":
        await _websocket(exchange, request)
    else:
        document: dict[str, object] = {
            "service": exchange.service,
            "error": f"no endpoint {request.path}",
            "endpoints": ["GET /events?count=N&interval_ms=M", "GET /ws (WebSocket echo)"],
        }
        await exchange.respond_json(404, document)


def _query_number(query: dict[str, list[str]], name: str, default: int, high: int) -> int | None:
    values = query.get(name)
    if not values:
        return default
    text = values[-1]
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) > high:
        return None
    return int(text)


async def _events(exchange: Exchange, request: Request) -> None:
    query = parse_qs(request.query)
    count = _query_number(query, "count", 10, MAX_EVENTS)
    interval_ms = _query_number(query, "interval_ms", 1000, MAX_INTERVAL_MS)
    if count is None or count < 1 or interval_ms is None:
        message = f"count is 1–{MAX_EVENTS}, interval_ms is 0–{MAX_INTERVAL_MS}"
        await exchange.respond_json(400, {"service": exchange.service, "error": message})
        return
    headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]
    await exchange.start_response(200, headers)
    for number in range(1, count + 1):
        if number > 1:
            await trio.sleep(interval_ms / 1000)
        data = json.dumps({"service": exchange.service, "count": number, "of": count})
        await exchange.send_body(f"id: {number}\ndata: {data}\n\n".encode())
    await exchange.end_response()


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",")}


def accept_token(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2 step 5.4)."""
    digest = hashlib.sha1(key.encode("ascii") + WEBSOCKET_GUID).digest()  # RFC 6455 says SHA-1
    return base64.b64encode(digest).decode("ascii")


def _handshake_problem(request: Request) -> tuple[int, str] | None:
    """Why the request is not a WebSocket handshake we accept (RFC 6455 §4.2.1), if it is not."""
    if request.method != "GET" or "websocket" not in _tokens(request.header("upgrade")):
        return 426, "GET /ws expects a WebSocket upgrade (Upgrade: websocket)"
    if "upgrade" not in _tokens(request.header("connection")):
        return 400, "a WebSocket upgrade needs Connection: Upgrade"
    if request.header("sec-websocket-version").strip() != "13":
        return 426, "only Sec-WebSocket-Version 13 is supported"
    try:
        key = base64.b64decode(request.header("sec-websocket-key"), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 16:
        return 400, "Sec-WebSocket-Key must be base64 of 16 bytes"
    return None


async def _websocket(exchange: Exchange, request: Request) -> None:
    problem = _handshake_problem(request)
    if problem is not None:
        status, message = problem
        body = json.dumps({"service": exchange.service, "error": message}).encode() + b"\n"
        headers = [("content-type", "application/json"), ("sec-websocket-version", "13")]
        if status == 426:
            headers += [("upgrade", "websocket"), ("connection", "upgrade")]
        await exchange.respond(status, body, headers)
        return
    accept = accept_token(request.header("sec-websocket-key").strip())
    trailing = await exchange.switch_protocols(
        [("upgrade", "websocket"), ("connection", "Upgrade"), ("sec-websocket-accept", accept)]
    )
    try:
        await echo_messages(exchange.stream, Connection(ConnectionType.SERVER, None, trailing))
    except ProtocolError:
        return  # a broken peer; the connection loop closes the stream


async def echo_messages(stream: trio.abc.Stream, websocket: Connection) -> None:
    """Echo until the peer closes: messages frame by frame, pongs for pings, Close for Close."""
    while websocket.state is not ConnectionState.CLOSED:
        for event in websocket.events():
            if isinstance(event, TextMessage):
                reply = TextMessage(data=event.data, message_finished=event.message_finished)
                await stream.send_all(websocket.send(reply))
            elif isinstance(event, BytesMessage):
                echo = BytesMessage(data=event.data, message_finished=event.message_finished)
                await stream.send_all(websocket.send(echo))
            elif isinstance(event, Ping):
                await stream.send_all(websocket.send(event.response()))
            elif isinstance(event, CloseConnection):
                # REMOTE_CLOSING: the peer's Close, answered. OPEN: wsproto failed to parse a
                # frame and reports it as a Close carrying the code to send (RFC 6455 §7.1.7).
                if websocket.state is ConnectionState.REMOTE_CLOSING:
                    await stream.send_all(websocket.send(event.response()))
                elif websocket.state is ConnectionState.OPEN:
                    await stream.send_all(websocket.send(event))
                return
        data = await stream.receive_some(MAX_READ)
        websocket.receive_data(bytes(data) if data else None)
