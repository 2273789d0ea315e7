"""The ``hypercorn-httpx`` peer: a streaming ASGI reverse proxy on one shared httpx client.

Runs in the peer's own virtualenv (``bench/.venvs/hypercorn-httpx``), not ours::

    python asgi_proxy.py --listen-port P --upstream-port UP

Every request is forwarded to ``http://127.0.0.1:UP`` with its method, raw path, query, headers
(hop-by-hop fields and those named by ``Connection`` removed; ``Host`` kept) and body, streamed
from ASGI ``receive``; the response's status, headers (less ``Date``, which hypercorn adds) and
body are streamed back as they arrive.
One ``httpx.AsyncClient`` (created at lifespan startup) holds a keep-alive pool large enough for
the benchmark's 64 connections. An upstream failure before the response starts is a 502.

Served by hypercorn in this process: one worker, its asyncio event loop (uvloop's when
installed), access log off, keep-alive without a per-connection request cap (hypercorn closes
a connection after 1,000 requests by default, which NGINX's upstream in the harness does not).

httpx and hypercorn are not installed in our virtualenv, so they are imported at run time with
``importlib`` and described by the small protocols below: mypy checks this file without them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from typing import TYPE_CHECKING, Final, Protocol, cast

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence

    Message = dict[str, object]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]

HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
POOL_CONNECTIONS: Final = 256
UPSTREAM_TIMEOUT_SECONDS: Final = 30.0
BAD_GATEWAY: Final = b'{"error": "bad gateway", "status": 502}'


class _Headers(Protocol):
    @property
    def raw(self) -> list[tuple[bytes, bytes]]: ...


class _Response(Protocol):
    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> _Headers: ...

    def aiter_raw(self) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None: ...


class _Client(Protocol):
    def build_request(
        self,
        method: str,
        url: str,
        *,
        headers: list[tuple[bytes, bytes]],
        content: AsyncIterator[bytes] | None,
    ) -> object: ...

    async def send(self, request: object, *, stream: bool) -> _Response: ...

    async def aclose(self) -> None: ...


def forwardable(headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` without hop-by-hop fields and the fields ``Connection`` names."""
    pairs = [(name.lower(), value) for name, value in headers]
    named = {
        token.strip().lower()
        for name, value in pairs
        if name == b"connection"
        for token in value.split(b",")
    }
    return [(name, value) for name, value in pairs if name not in HOP_BY_HOP and name not in named]


class ReverseProxy:
    """The ASGI application; ``upstream`` is ``http://host:port`` without a trailing slash."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.client: _Client | None = None

    def _new_client(self) -> _Client:
        httpx = importlib.import_module("httpx")
        limits = httpx.Limits(
            max_connections=POOL_CONNECTIONS,
            max_keepalive_connections=POOL_CONNECTIONS,
            keepalive_expiry=60.0,
        )
        client: _Client = httpx.AsyncClient(
            limits=limits,
            timeout=httpx.Timeout(UPSTREAM_TIMEOUT_SECONDS),
            follow_redirects=False,
            trust_env=False,
        )
        return client

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            await self._proxy(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.client = self._new_client()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _proxy(self, scope: Message, receive: Receive, send: Send) -> None:
        client = self.client
        if client is None:  # a server without lifespan support
            client = self.client = self._new_client()
        raw_headers = cast("Sequence[tuple[bytes, bytes]]", scope["headers"])
        headers = forwardable(raw_headers)
        has_body = any(name in (b"content-length", b"transfer-encoding") for name, _ in raw_headers)
        target = cast("bytes", scope.get("raw_path") or str(scope["path"]).encode())
        query = cast("bytes", scope.get("query_string", b""))
        url = self.upstream + (target + b"?" + query if query else target).decode("latin-1")
        request = client.build_request(
            str(scope["method"]),
            url,
            headers=headers,
            content=_request_body(receive) if has_body else None,
        )
        try:
            response = await client.send(request, stream=True)
        except Exception:  # any upstream failure before the head is a 502
            await _bad_gateway(send)
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        line for line in forwardable(response.headers.raw) if line[0] != b"date"
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] != "http.request":  # http.disconnect
            return
        body = cast("bytes", message.get("body", b""))
        if body:
            yield body
        if not message.get("more_body", False):
            return


async def _bad_gateway(send: Send) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(BAD_GATEWAY)),
    ]
    await send({"type": "http.response.start", "status": 502, "headers": headers})
    await send({"type": "http.response.body", "body": BAD_GATEWAY, "more_body": False})


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="hypercorn + httpx reverse proxy (bench peer)")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)
    config = importlib.import_module("hypercorn.config").Config()
    config.bind = [f"127.0.0.1:{args.listen_port}"]
    config.accesslog = None
    config.include_server_header = False  # the upstream's Server field is relayed instead
    config.backlog = 4096
    config.keep_alive_max_requests = 2**62
    serve = importlib.import_module("hypercorn.asyncio").serve
    app = ReverseProxy(f"http://127.0.0.1:{args.upstream_port}")
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        asyncio.run(serve(app, config))
    else:
        uvloop.run(serve(app, config))


if __name__ == "__main__":
    main(sys.argv[1:])
