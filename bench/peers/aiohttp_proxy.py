"""The ``aiohttp-uvloop`` peer: a featureless reverse proxy on aiohttp under uvloop.

Runs in the peer's own virtualenv (``bench/.venvs/aiohttp-uvloop``), not ours::

    python aiohttp_proxy.py --listen-port P --upstream-port UP

The fastest mainstream Python stack (aiohttp's server and client with their C HTTP parser, on
uvloop) in one process, doing only what a proxy must: one ``ClientSession`` (made at start-up)
whose ``TCPConnector`` keeps up to 256 upstream connections alive; every request goes to
``http://127.0.0.1:UP`` with its method, raw path and query (not requoted), headers (hop-by-hop
fields and those ``Connection`` names removed, ``Host`` kept) and body (streamed); the
response's status and headers (hop-by-hop ones removed) are sent back and its body streamed as
it arrives. aiohttp adds its default ``Accept``, ``Accept-Encoding`` and ``User-Agent`` when the
client sent none: its ``skip_auto_headers`` would cost more per request (about 8 µs, a
``CIMultiDict`` built per request) than the three extra lines. An upstream failure before the
response starts is a 502. No routing, middlewares, logging or metrics: it is the floor of what
a Python proxy costs per request (issue #15's target is that a3s_gateway with one worker at
least matches it), not a product. It refuses to start when aiohttp would parse HTTP in pure
Python.

aiohttp, yarl and uvloop are not installed in our virtualenv, so they are imported at run time
with ``importlib`` and the parts the handler uses are described by the protocols below: mypy
checks this file without them.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, Final, Protocol

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterable

HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
POOL_CONNECTIONS: Final = 256
UPSTREAM_TIMEOUT_SECONDS: Final = 30.0
BAD_GATEWAY: Final = b'{"error": "bad gateway", "status": 502}'


class _Headers(Protocol):
    """A ``multidict.CIMultiDictProxy`` (case-insensitive keys)."""

    def items(self) -> Iterable[tuple[str, str]]: ...

    def getall(self, key: str, default: tuple[str, ...]) -> list[str] | tuple[str, ...]: ...


class _Body(Protocol):
    def iter_any(self) -> AsyncIterator[bytes]: ...


class _Request(Protocol):
    """The part of ``aiohttp.web.Request`` the handler reads."""

    @property
    def method(self) -> str: ...

    @property
    def raw_path(self) -> str: ...

    @property
    def headers(self) -> _Headers: ...

    @property
    def body_exists(self) -> bool: ...

    @property
    def content(self) -> object: ...


class _Reply(Protocol):
    """The part of ``aiohttp.ClientResponse`` the handler reads."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> _Headers: ...

    @property
    def content(self) -> _Body: ...

    def release(self) -> object: ...


def forwardable(headers: _Headers) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop fields and the fields ``Connection`` names."""
    named = [
        token.strip().lower()
        for value in headers.getall("Connection", ())
        for token in value.split(",")
    ]
    drop = HOP_BY_HOP.union(named) if named else HOP_BY_HOP
    return [(name, value) for name, value in headers.items() if name.lower() not in drop]


def serve(listen_port: int, upstream_port: int) -> None:
    """Serve on ``127.0.0.1:listen_port`` until SIGINT/SIGTERM."""
    aiohttp = importlib.import_module("aiohttp")
    web = importlib.import_module("aiohttp.web")
    url = importlib.import_module("yarl").URL
    upstream = f"http://127.0.0.1:{upstream_port}"
    app = web.Application()
    client = web.AppKey("client", aiohttp.ClientSession)

    async def session(_app: object) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=POOL_CONNECTIONS, keepalive_timeout=60.0)
        app[client] = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=UPSTREAM_TIMEOUT_SECONDS),
        )
        yield
        await app[client].close()

    async def proxy(request: _Request) -> object:
        try:
            reply: _Reply = await app[client].request(
                request.method,
                url(upstream + request.raw_path, encoded=True),
                headers=forwardable(request.headers),
                data=request.content if request.body_exists else None,
                allow_redirects=False,
            )
        except (aiohttp.ClientError, OSError, TimeoutError):
            return web.Response(status=502, body=BAD_GATEWAY, content_type="application/json")
        try:
            response = web.StreamResponse(status=reply.status, headers=forwardable(reply.headers))
            await response.prepare(request)
            async for chunk in reply.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            reply.release()

    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    web.run_app(
        app,
        host="127.0.0.1",
        port=listen_port,
        access_log=None,
        backlog=4096,
        print=None,
        loop=importlib.import_module("uvloop").new_event_loop(),
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description="aiohttp + uvloop reverse proxy (bench peer)")
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)
    parsers = importlib.import_module("aiohttp.http_parser")
    if parsers.HttpRequestParser is not parsers.HttpRequestParserC:
        sys.exit("aiohttp-uvloop: aiohttp's C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS?)")
    serve(args.listen_port, args.upstream_port)


if __name__ == "__main__":
    main(sys.argv[1:])
