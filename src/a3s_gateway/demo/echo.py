"""The demo's HTTP echo service: every request answered with a JSON picture of itself.

Ring 1 (it sleeps with ``trio.sleep`` and writes through an ``Exchange``). Endpoints, matched
on the *last two* path segments so they work both directly and behind a gateway prefix
(``/status/503`` and ``/api/status/503`` alike), for GET and HEAD:

- ``…/status/<code>``: answers that status (200–599);
- ``…/bytes/<n>``: ``n`` bytes (at most ``MAX_BYTES``), streamed in ``CHUNK``-sized pieces;
- ``…/delay/<ms>``: waits (at most ``MAX_DELAY_MS``), then echoes;
- anything else, any method: the echo document ``{"service", "method", "path", "query",
  "headers", "body_bytes", "client"}`` with headers exactly as received (so forwarding headers
  the gateway adds, such as ``X-Forwarded-For`` and ``Via``, are visible).

Nurseries: none; each request runs in its connection's task. Must not: keep request bodies
(they are only counted), or build a large response in memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

if TYPE_CHECKING:
    from a3s_gateway.demo.exchange import Exchange, Request

MAX_BYTES: Final = 16 * 1024 * 1024
MAX_DELAY_MS: Final = 10_000
CHUNK: Final = b"0123456789abcdef" * 4096  # 64 KiB


def echo_document(exchange: Exchange, request: Request) -> dict[str, object]:
    """What the echo service answers for ``request``."""
    return {
        "service": exchange.service,
        "method": request.method,
        "path": request.path,
        "query": request.query,
        "headers": request.header_map(),
        "body_bytes": request.body_bytes,
        "client": exchange.client,
    }


def _number(text: str, low: int, high: int) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        return None
    value = int(text)
    return value if low <= value <= high else None


async def handle_echo(exchange: Exchange, request: Request) -> None:
    """Answer one request (see the module docstring)."""
    *_, kind, argument = ["", "", *request.path.split("/")]
    if request.method not in ("GET", "HEAD") or kind not in ("status", "bytes", "delay"):
        await exchange.respond_json(200, echo_document(exchange, request))
    elif kind == "status":
        await _status(exchange, argument)
    elif kind == "bytes":
        await _bytes(exchange, argument)
    else:
        await _delay(exchange, request, argument)


async def _bad_argument(exchange: Exchange, message: str) -> None:
    await exchange.respond_json(400, {"service": exchange.service, "error": message})


async def _status(exchange: Exchange, argument: str) -> None:
    status = _number(argument, 200, 599)
    if status is None:
        await _bad_argument(exchange, "/status/<code> takes a status code from 200 to 599")
        return
    await exchange.respond_json(status, {"service": exchange.service, "status": status})


async def _bytes(exchange: Exchange, argument: str) -> None:
    size = _number(argument, 0, MAX_BYTES)
    if size is None:
        await _bad_argument(exchange, f"/bytes/<n> takes a byte count from 0 to {MAX_BYTES}")
        return
    headers = [("content-type", "application/octet-stream"), ("content-length", str(size))]
    await exchange.start_response(200, headers)
    remaining = size
    while remaining > 0:
        piece = CHUNK if remaining >= len(CHUNK) else CHUNK[:remaining]
        await exchange.send_body(piece)
        remaining -= len(piece)
    await exchange.end_response()


async def _delay(exchange: Exchange, request: Request, argument: str) -> None:
    delay_ms = _number(argument, 0, MAX_DELAY_MS)
    if delay_ms is None:
        await _bad_argument(exchange, f"/delay/<ms> takes milliseconds from 0 to {MAX_DELAY_MS}")
        return
    await trio.sleep(delay_ms / 1000)
    document = echo_document(exchange, request)
    document["delay_ms"] = delay_ms
    await exchange.respond_json(200, document)
