"""proxy.py as a reverse proxy of every path to one upstream (the ``proxy.py`` peer).

Runs in the peer's own virtualenv (``bench/.venvs/proxy.py``), not ours::

    python proxypy_reverse.py --upstream-port UP [proxy.py flags...]

proxy.py's reverse proxy (``--enable-reverse-proxy``) asks its ``ReverseProxyBasePlugin``
plugins for routes; its bundled ``ReverseProxyPlugin`` only knows httpbingo.org demo paths, and
a *static* route would replace the request path with the upstream URL's path. So this module
builds a plugin with one *dynamic* route, ``/.*``, whose handler returns
``http://127.0.0.1:UP`` + the request's path and query. The class is built at run time from
proxy.py's base class and handed to ``proxy.Proxy(plugins=[...])``: proxy.py is not installed
in our virtualenv, so nothing here imports it at type-check time. Its worker processes are
forked and inherit the class.

proxy.py opens a new upstream connection for each request (its reverse proxy has no upstream
pool); the downstream side is kept alive.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Protocol


class _Request(Protocol):
    """The part of proxy.py's ``HttpParser`` the route handler reads."""

    path: bytes | None


class _UrlFactory(Protocol):
    """proxy.py's ``Url`` class: ``Url.from_bytes(raw)``."""

    def from_bytes(self, raw: bytes) -> object: ...


def route_all_plugin(upstream: bytes) -> type:
    """A ``ReverseProxyBasePlugin`` subclass sending every path to ``upstream`` (no slash)."""
    base: type = importlib.import_module("proxy.http.server").ReverseProxyBasePlugin
    url: _UrlFactory = importlib.import_module("proxy.http").Url

    def routes(self: object) -> list[str]:
        return [r"/.*"]

    def handle_route(self: object, request: _Request, pattern: object) -> object:
        return url.from_bytes(upstream + (request.path or b"/"))

    return type("RouteAllToUpstream", (base,), {"routes": routes, "handle_route": handle_route})


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--upstream-port", type=int, required=True)
    ours, rest = parser.parse_known_args(argv)
    upstream = f"http://127.0.0.1:{ours.upstream_port}".encode()
    proxy = importlib.import_module("proxy")
    with proxy.Proxy(rest, plugins=[route_all_plugin(upstream)]) as running:
        proxy.sleep_loop(running)


if __name__ == "__main__":
    main(sys.argv[1:])
