"""Profiles (request shapes and router tables) and products (what serves them).

Products: ``direct`` (the load tool straight at the upstream or backend: the ceiling), ``nginx``
(the reverse-proxy baseline, with the profile's worker count), ``a3s-1w`` and ``a3s-Nw`` (the
gateway with ``--workers 1`` and ``--workers 0``) and the Python peers of ``bench/peers``
(mitmproxy, proxy.py, hypercorn-httpx, aiohttp-uvloop; in ``get-42b-1w`` only). ``nginx`` is
always measured: every ratio is to the NGINX of the same profile.

A profile's ``protocol`` says how clients speak to the product: ``http/1.1`` (wrk), ``h2``
(h2load, 4 connections × 16 streams; HTTP/2 over TLS when the profile has ``tls``, else h2c
with prior knowledge), ``grpc`` (h2load's unary calls over h2c, to the gRPC backend instead
of the HTTP/1.1 upstream; ``direct`` is then h2load straight at that backend), ``websocket``
or ``sse`` (``streamload``, the harness's own C tool: 64 WebSocket connections echoing
32-byte messages in a closed loop, or 64 SSE streams; to its own echo or event backend, which
``direct`` measures), ``tcp`` or ``udp`` (``streamload`` again: 64 TCP connections each
echoing a 32-byte message in a closed loop, or 64 UDP sockets each with one 32-byte datagram
outstanding, through NGINX's ``stream`` module and the gateway's ``tcp`` or ``udp``
entrypoint, to streamload's TCP or UDP echo server, which ``direct`` measures). In the streaming
and echo profiles a "request" of the records is one echoed message or datagram or one received
event (``Profile.unit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal, TypeAlias

from bench.harness.nginx import BODY_42, DOWNLOAD_BYTES, GRPC_FRAME, GRPC_PATH, POST_BYTES
from bench.harness.streamload import EVENT_BYTES, MESSAGE_BYTES, RETRY_SECONDS

ClientProtocol: TypeAlias = Literal["http/1.1", "h2", "grpc", "websocket", "sse", "tcp", "udp"]

DIRECT: Final = "direct"
NGINX: Final = "nginx"
A3S_1W: Final = "a3s-1w"
A3S_NW: Final = "a3s-Nw"
PEERS_ALIAS: Final = "peers"
BUILTIN_PRODUCTS: Final = (DIRECT, NGINX, A3S_1W, A3S_NW)
GATEWAY_WORKERS: Final = {A3S_1W: 1, A3S_NW: 0}


@dataclass(frozen=True, slots=True)
class Profile:
    """One request shape against one configuration."""

    name: str
    description: str
    method: str
    path: str
    body_bytes: int
    response_bytes: int
    nginx_workers: str  # "1" or "auto" (NGINX's one per CPU, as --workers 0)
    routers: int
    products: tuple[str, ...]  # without the peers; `with_peers` adds them
    with_peers: bool = False
    #: The benchmarked router's middlewares, by name in ``gateway.MIDDLEWARES`` (gateway only).
    middlewares: tuple[str, ...] = ()
    #: The gateway's ``observability`` setting (``gateway.OBSERVABILITY``).
    observability: str = "default"
    #: Clients speak HTTPS to the proxy (NGINX ``ssl``, the gateway's ``tls`` block, one
    #: certificate made for the run); the upstream stays plain HTTP.
    tls: bool = False
    #: How clients speak to the product (module docstring).
    protocol: ClientProtocol = "http/1.1"

    @property
    def http2(self) -> bool:
        """Driven by h2load over HTTP/2 (``h2`` and ``grpc``) rather than by wrk."""
        return self.protocol in ("h2", "grpc")

    @property
    def streaming(self) -> bool:
        """Driven by ``streamload`` (``websocket`` and ``sse``) against its own backend."""
        return self.protocol in ("websocket", "sse")

    @property
    def layer4(self) -> bool:
        """A TCP or UDP echo through a layer-4 proxy (NGINX ``stream``, the gateway's ``tcp``
        and ``udp`` entrypoints): no HTTP anywhere."""
        return self.protocol in ("tcp", "udp")

    @property
    def uses_streamload(self) -> bool:
        """Driven by ``streamload`` against one of its backends (streaming or layer 4)."""
        return self.streaming or self.layer4

    @property
    def unit(self) -> str:
        """What one counted item is: ``req``, ``msg`` (a WebSocket, TCP or UDP echo) or
        ``event``."""
        return {"websocket": "msg", "sse": "event", "tcp": "msg", "udp": "msg"}.get(
            self.protocol, "req"
        )


GET_1W: Final = Profile(
    "get-42b-1w",
    "HTTP/1.1 GET, 42-byte response, one worker (NGINX worker_processes 1)",
    "GET",
    "/",
    0,
    len(BODY_42),
    "1",
    1,
    (DIRECT, NGINX, A3S_1W),
    with_peers=True,
)
HTTPS_1W: Final = Profile(
    "https-get-42b-1w",
    "HTTPS/1.1 GET (TLS 1.3, keep-alive), 42-byte response, one worker (NGINX ssl, 1 worker)",
    "GET",
    "/",
    0,
    len(BODY_42),
    "1",
    1,
    (NGINX, A3S_1W),
    tls=True,
)
H2_1W: Final = Profile(
    "h2-get-42b-1w",
    "HTTP/2 GET over TLS 1.3 (ALPN h2), 42-byte response, h2load 4 connections × 16 streams, "
    "one worker (NGINX listen ssl http2, 1 worker); the upstream stays HTTP/1.1",
    "GET",
    "/",
    0,
    len(BODY_42),
    "1",
    1,
    (NGINX, A3S_1W),
    tls=True,
    protocol="h2",
)
H2C_1W: Final = Profile(
    "h2c-get-42b-1w",
    "h2c (HTTP/2 prior knowledge) GET, 42-byte response, h2load 4 connections × 16 streams, "
    "one worker (NGINX listen http2, 1 worker); the upstream stays HTTP/1.1",
    "GET",
    "/",
    0,
    len(BODY_42),
    "1",
    1,
    (NGINX, A3S_1W),
    protocol="h2",
)
GRPC_1W: Final = Profile(
    "grpc-unary-1w",
    "gRPC unary calls (49-byte message each way), 64 concurrent (h2load 4 connections × 16 "
    "streams over h2c), one worker (NGINX grpc_pass; the gateway's h2c:// service); the "
    "backend is an NGINX h2c server answering every call",
    "POST",
    GRPC_PATH,
    len(GRPC_FRAME),
    len(GRPC_FRAME),
    "1",
    1,
    (DIRECT, NGINX, A3S_1W),
    protocol="grpc",
)
WS_ECHO_1W: Final = Profile(
    "ws-echo-32b-1w",
    "WebSocket echo of 32-byte binary messages (raw relay after the handshake), 64 "
    "connections in a closed loop (streamload), one worker (NGINX with the Upgrade headers; the "
    "gateway's ws:// server); the backend is streamload's echo server",
    "GET",
    "/ws",
    MESSAGE_BYTES,
    MESSAGE_BYTES,
    "1",
    1,
    (DIRECT, NGINX, A3S_1W),
    protocol="websocket",
)
SSE_1W: Final = Profile(
    "sse-events-1w",
    "SSE: 64 text/event-stream responses of small events (a 32-byte data field, each event "
    "its own chunk and write, as fast as the socket takes them), events/s (streamload), one "
    "worker (NGINX proxy_buffering off); the backend is streamload's event server",
    "GET",
    "/events",
    0,
    EVENT_BYTES,
    "1",
    1,
    (DIRECT, NGINX, A3S_1W),
    protocol="sse",
)
TCP_ECHO_1W: Final = Profile(
    "tcp-echo-32b-1w",
    "TCP echo of 32-byte messages (a byte relay, no HTTP), 64 connections in a closed loop "
    "(streamload), one worker (NGINX stream proxy_pass; the gateway's tcp entrypoint, "
    "tcp_router HostSNI(`*`) and tcp:// server); the backend is streamload's TCP echo server",
    "-",
    "/",
    MESSAGE_BYTES,
    MESSAGE_BYTES,
    "1",
    1,
    (DIRECT, NGINX, A3S_1W),
    protocol="tcp",
)
UDP_ECHO_1W: Final = Profile(
    "udp-echo-32b-1w",
    "UDP echo of 32-byte datagrams, 64 client sockets with one datagram outstanding each "
    f"(counted lost and the next sent after {RETRY_SECONDS * 1000:.0f} ms without its echo) "
    "(streamload), one worker "
    "(NGINX stream listen udp; the gateway's udp entrypoint, udp_router and udp:// server); the "
    "backend is streamload's UDP echo server",
    "-",
    "/",
    MESSAGE_BYTES,
    MESSAGE_BYTES,
    "1",
    1,
    (DIRECT, NGINX, A3S_1W),
    protocol="udp",
)
GET_NW: Final = Profile(
    "get-42b-Nw",
    "HTTP/1.1 GET, 42-byte response, one worker per CPU (gateway --workers 0, NGINX auto)",
    "GET",
    "/",
    0,
    len(BODY_42),
    "auto",
    1,
    (DIRECT, NGINX, A3S_NW),
)
POST_16K: Final = Profile(
    "post-16k",
    "HTTP/1.1 POST of a 16 KiB body, 42-byte response, one worker",
    "POST",
    "/post",
    POST_BYTES,
    len(BODY_42),
    "1",
    1,
    (DIRECT, NGINX, A3S_1W),
)
DOWNLOAD_1M: Final = Profile(
    "download-1m",
    "HTTP/1.1 GET of a 1 MiB static file, one worker",
    "GET",
    "/1m",
    0,
    DOWNLOAD_BYTES,
    "1",
    1,
    (DIRECT, NGINX, A3S_1W),
)
ROUTERS_10: Final = Profile(
    "routers-10",
    "HTTP/1.1 GET, 42-byte response, 10 routers (benchmarked one in the middle), one worker",
    "GET",
    "/api/bench",
    0,
    len(BODY_42),
    "1",
    10,
    (NGINX, A3S_1W),
)
ROUTERS_1000: Final = Profile(
    "routers-1000",
    "HTTP/1.1 GET, 42-byte response, 1000 routers (benchmarked one in the middle), one worker",
    "GET",
    "/api/bench",
    0,
    len(BODY_42),
    "1",
    1000,
    (NGINX, A3S_1W),
)
MIDDLEWARES_3: Final = Profile(
    "middlewares-3",
    "HTTP/1.1 GET, 42-byte response, 3 middlewares that pass (ip-allow, rate-limit, headers), "
    "one worker",
    "GET",
    "/",
    0,
    len(BODY_42),
    "1",
    1,
    (NGINX, A3S_1W),
    middlewares=("allow", "limit", "tag"),
)
MIDDLEWARES_6: Final = Profile(
    "middlewares-6",
    "HTTP/1.1 GET, 42-byte response, 6 middlewares that pass (the 3 above, cors, "
    "circuit-breaker, body-limit), one worker",
    "GET",
    "/",
    0,
    len(BODY_42),
    "1",
    1,
    (NGINX, A3S_1W),
    middlewares=("allow", "limit", "tag", "cors", "breaker", "limit-body"),
)
README_CHAIN: Final = Profile(
    "readme-chain",
    "HTTP/1.1 GET, 42-byte response, the README example chain (jwt HS256 with a valid bearer "
    "token, rate-limit that admits every request), one worker",
    "GET",
    "/",
    0,
    len(BODY_42),
    "1",
    1,
    (NGINX, A3S_1W),
    middlewares=("auth-jwt", "limit"),
)
OBSERVABILITY_OFF: Final = Profile(
    "observability-off",
    "HTTP/1.1 GET, 42-byte response, metrics, tracing, request ids and access log all off, "
    "one worker",
    "GET",
    "/",
    0,
    len(BODY_42),
    "1",
    1,
    (NGINX, A3S_1W),
    observability="off",
)
OBSERVABILITY_ON: Final = Profile(
    "observability-on",
    "HTTP/1.1 GET, 42-byte response, metrics, tracing, request ids and the access log (to a "
    "file) on, one worker",
    "GET",
    "/",
    0,
    len(BODY_42),
    "1",
    1,
    (NGINX, A3S_1W),
    observability="on",
)
PROFILES: Final = (
    GET_1W,
    HTTPS_1W,
    H2_1W,
    H2C_1W,
    GRPC_1W,
    WS_ECHO_1W,
    SSE_1W,
    TCP_ECHO_1W,
    UDP_ECHO_1W,
    GET_NW,
    POST_16K,
    DOWNLOAD_1M,
    ROUTERS_10,
    ROUTERS_1000,
    MIDDLEWARES_3,
    MIDDLEWARES_6,
    README_CHAIN,
    OBSERVABILITY_OFF,
    OBSERVABILITY_ON,
)
PROFILE_ALIASES: Final = {
    "get-42b": (GET_1W.name, GET_NW.name),
    "http2": (H2_1W.name, H2C_1W.name, GRPC_1W.name),
    "streams": (WS_ECHO_1W.name, SSE_1W.name),
    "tcp-udp": (TCP_ECHO_1W.name, UDP_ECHO_1W.name),
    "middlewares": (GET_1W.name, MIDDLEWARES_3.name, MIDDLEWARES_6.name, README_CHAIN.name),
    "observability": (OBSERVABILITY_OFF.name, GET_1W.name, OBSERVABILITY_ON.name),
}


def profile_names() -> list[str]:
    return [profile.name for profile in PROFILES] + list(PROFILE_ALIASES)


def select_profiles(names: list[str]) -> list[Profile]:
    """The profiles named (aliases expanded), in the canonical order; all when ``names`` is empty.

    Raises ``ValueError`` for an unknown name.
    """
    if not names:
        return list(PROFILES)
    wanted: set[str] = set()
    known = {profile.name for profile in PROFILES}
    for name in names:
        if name in PROFILE_ALIASES:
            wanted.update(PROFILE_ALIASES[name])
        elif name in known:
            wanted.add(name)
        else:
            raise ValueError(f"unknown profile {name!r}: use one of {', '.join(profile_names())}")
    return [profile for profile in PROFILES if profile.name in wanted]


def products_for(profile: Profile, peers: tuple[str, ...], selected: list[str]) -> list[str]:
    """The products to measure in ``profile``: ``selected`` (all when empty) plus ``nginx``."""
    candidates = [*profile.products, *(peers if profile.with_peers else ())]
    if not selected:
        return candidates
    wanted = set(selected) | {NGINX}
    if PEERS_ALIAS in wanted:
        wanted.update(peers)
    return [product for product in candidates if product in wanted]


def check_products(selected: list[str], peers: tuple[str, ...]) -> None:
    """Raise ``ValueError`` for a product name that is neither built in nor a peer."""
    known = {*BUILTIN_PRODUCTS, PEERS_ALIAS, *peers}
    for name in selected:
        if name not in known:
            raise ValueError(f"unknown product {name!r}: use one of {', '.join(sorted(known))}")
