"""The compiled runtime snapshot: everything a request reads, built once per config generation.

Ring 0: pure construction from a validated ``Config``; no trio, sockets, TLS or clocks.

``compile_runtime(config, generation)`` resolves every effective value the schema leaves as
"not set" (entrypoint timeouts and limits by protocol, SPEC §3.7), compiles the HTTP route
table (SPEC §4.7), and builds one backend pool and balancer per service (SPEC §7). The result,
``RuntimeConfig``, is immutable at its top level and is swapped as one object on reload (SPEC
§10.1): a request reads ``gateway.runtime`` once at its start and keeps that snapshot to the
end, so a reload never changes the rules under an exchange in flight (issue #4 item 7).

The ``Backend`` objects inside are the one mutable part (their in-flight counts and health
flags change while requests run); they belong to this generation.

Must not: validate (``semantic.py`` did), open sockets, or read the environment.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.schema_middlewares import TcpFilter as TcpFilterBlock
from a3s_gateway.config.schema_services import LoadBalancer, Server
from a3s_gateway.config.urls import ServerUrl
from a3s_gateway.middleware.phases import compile_chains
from a3s_gateway.middleware.ratelimit import key_function
from a3s_gateway.middleware.tcp_filter import TcpFilter
from a3s_gateway.observability.tracing import propagation_forms
from a3s_gateway.protocols.http1 import Http1Limits
from a3s_gateway.protocols.http1_engines import request_head_parser
from a3s_gateway.protocols.http2 import Http2Limits
from a3s_gateway.routing import Route, RouteTable, compile_rule
from a3s_gateway.routing.tcp import TcpRoute, TcpRouteTable
from a3s_gateway.scaling.revisions import RevisionSplit
from a3s_gateway.scaling.service import RevisionPool, ServiceScale, signature_of
from a3s_gateway.services import Backend, Balancer, make_balancer
from a3s_gateway.services.balancer import panic_mode
from a3s_gateway.services.health import CheckSettings, kind_for_servers
from a3s_gateway.services.mirror_sampling import MirrorSettings, MirrorState
from a3s_gateway.services.passive import OutlierDetector, PassiveSettings
from a3s_gateway.services.sticky import StickyPool, StickySettings
from a3s_gateway.upstream.peer import Peer, PoolSettings, TlsIdentity, UpstreamTlsSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.schema_entrypoints import Entrypoint
    from a3s_gateway.config.schema_services import Scaling, Service, WebsocketMux
    from a3s_gateway.middleware.contract import Middleware, RequestState
    from a3s_gateway.middleware.outbound import MiddlewareDeps, WarningSink
    from a3s_gateway.protocols.headers import HeaderLine
    from a3s_gateway.protocols.http1_heads import RequestHeadParser
    from a3s_gateway.routing.request import PeerAddress

__all__ = [
    "SERVED_ALPN",
    "EntrypointRuntime",
    "Network",
    "RuntimeConfig",
    "ServiceRuntime",
    "TlsSettings",
    "UdpEntrypointRuntime",
    "compile_runtime",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Network = Network

#: SPEC §3.7 defaults for HTTP entrypoints, in seconds. ``request_body`` (issue #14) bounds a
#: request body trickled a byte at a time, which ``body_idle`` alone never ends; 5 minutes
#: leaves room for large uploads on slow links (Envoy's ``request_timeout`` is the same shape).
_HTTP_TIMEOUTS: Final = {
    "handshake": 10.0,
    "request_head": 30.0,
    "idle": 60.0,
    "body_idle": 60.0,
    "request_body": 300.0,
}
#: SPEC §3.7 defaults for TCP entrypoints, in seconds (``idle`` 0 disables the idle bound).
_TCP_TIMEOUTS: Final = {"handshake": 10.0, "idle": 600.0, "peek": 5.0}
_DEFAULT_MAX_CONNECTIONS: Final = 10000
#: SPEC §3.7 defaults of a UDP entrypoint.
_UDP_SESSION_TIMEOUT: Final = 30.0
_UDP_MAX_SESSIONS: Final = 10000

#: The HTTP/2 settings of an entrypoint without an ``http2 {}`` block.
DEFAULT_HTTP2: Final = Http2Limits()

#: The ALPN protocols an http entrypoint serves, in the default preference order (SPEC §3.8).
SERVED_ALPN: Final = ("h2", "http/1.1")


@dataclass(frozen=True, slots=True, kw_only=True)
class TlsSettings:
    """An entrypoint's effective ``tls`` block (SPEC §3.8, §5.9): what ``server/tls.py``
    builds its SSL contexts from. Equal settings mean the same contexts (a reload keeps them
    and only re-checks the files)."""

    #: (cert_file, key_file) pairs in configuration order: ``cert_file``/``key_file`` first
    #: (the default certificate), then ``certificates``.
    pairs: tuple[tuple[str, str], ...]
    min_version: str
    #: ALPN protocols offered, in server preference order: on http entrypoints restricted to
    #: ``SERVED_ALPN``; on tcp entrypoints exactly ``tls.alpn`` (none by default).
    alpn: tuple[str, ...]
    client_auth: str
    client_ca_file: str | None
    sni_strict: bool
    #: ``acme = true`` without ``cert_file``: the ``acme_storage_path`` where a generated
    #: self-signed certificate (``CN=a3s-gateway default``) is kept; it comes first, the
    #: default until and beside the ACME certificates, which the SNI map selects by name
    #: (SPEC §12.5). None: no fallback.
    fallback: str | None = None
    #: Indexes in ``pairs`` of the ACME manager's certificates: they claim their names in the
    #: SNI map before the configured ones (SPEC §12.5: the configured certificate serves a name
    #: until an ACME one exists).
    preferred: tuple[int, ...] = ()


def _tls_settings(entrypoint: Entrypoint) -> TlsSettings | None:
    tls = entrypoint.tls
    if tls is None:
        return None
    pairs: list[tuple[str, str]] = []
    if tls.cert_file is not None and tls.key_file is not None:
        pairs.append((tls.cert_file, tls.key_file))
    pairs.extend((pair.cert_file, pair.key_file) for pair in tls.certificates)
    if entrypoint.protocol == "tcp":
        # A terminated TCP connection offers exactly the listed protocols (none by default):
        # the gateway does not speak them, the backend does (SPEC §3.8).
        alpn = tls.alpn or ()
    else:
        served = SERVED_ALPN if tls.alpn is None else tls.alpn
        alpn = tuple(protocol for protocol in served if protocol in SERVED_ALPN)
    return TlsSettings(
        pairs=tuple(pairs),
        min_version=tls.min_version,
        alpn=alpn,
        client_auth=tls.client_auth,
        client_ca_file=tls.client_ca_file,
        sni_strict=tls.sni_strict,
        fallback=tls.acme_storage_path if tls.acme and tls.cert_file is None else None,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EntrypointRuntime:
    """An ``http`` or ``tcp`` entrypoint's effective settings (SPEC §3.7). A ``tcp`` one carries
    the HTTP fields too (at their defaults, unused), so that both kinds share the listener
    groups, the reload's socket plan and the TLS store."""

    name: str
    host: str
    port: int
    tls: bool
    max_connections: int
    limits: Http1Limits
    #: The request-head parser engine of its connections (``http1_parser``).
    heads: RequestHeadParser
    max_concurrent_requests: int
    max_requests_per_connection: int
    handshake_timeout: float
    request_head_timeout: float
    idle_timeout: float
    body_idle_timeout: float
    #: Request head → last byte of its body (``timeouts.request_body``).
    request_body_timeout: float
    via: bool
    sanitize_path: bool
    trust_all: bool
    trusted: tuple[_Network, ...]
    #: ``tcp_allowed_ips`` (SPEC §3.7): the peers whose connections are accepted; None means
    #: everyone.
    allowed: tuple[_Network, ...] | None = None
    #: The ``tls`` block's effective settings; None for plain HTTP (``tls`` is False).
    tls_settings: TlsSettings | None = None
    #: ``redirect_to`` (SPEC §3.7): the port of the TLS entrypoint every request (ACME HTTP-01
    #: excepted) is redirected to with 308; None when this entrypoint does not redirect.
    redirect_port: int | None = None
    #: ``h2c`` (SPEC §3.7): a plaintext entrypoint accepts HTTP/2 by prior knowledge.
    h2c: bool = False
    #: ``http2 {}``: the HTTP/2 settings and flood limits of its connections.
    http2: Http2Limits = DEFAULT_HTTP2
    #: ``http`` or ``tcp`` (``udp`` entrypoints are ``UdpEntrypointRuntime``).
    protocol: str = "http"
    #: ``timeouts.peek`` (SPEC §4.11): how long a ClientHello peek waits.
    peek_timeout: float = _TCP_TIMEOUTS["peek"]
    #: ``proxy_protocol.trusted_ips`` (SPEC §3.7): the peers whose PROXY header is read;
    #: None without the block.
    proxy_trusted: tuple[_Network, ...] | None = None
    #: The TCP relay's idle bound (SPEC §6.3): ``timeouts.idle`` of a tcp entrypoint (0: none);
    #: TCP routers on an http entrypoint use the tcp default, 10 minutes (its ``idle`` is the
    #: keep-alive bound between requests).
    tcp_idle_timeout: float = _TCP_TIMEOUTS["idle"]
    #: Whether a connection needs a look at its first bytes before its protocol runs: a tcp
    #: entrypoint, a PROXY header to read, or TCP routers to try on a TLS http entrypoint.
    preamble: bool = False
    #: A TLS http entrypoint that TCP routers share (SPEC §6.1): its TCP routers terminate TLS
    #: with a second set of contexts that offers no ALPN.
    shares_tcp: bool = False

    def proxy_from(self, address: PeerAddress | None) -> bool:
        """Whether a connection from ``address`` may start with a PROXY header."""
        trusted = self.proxy_trusted
        return (
            trusted is not None
            and address is not None
            and any(address in network for network in trusted)
        )

    def is_allowed(self, address: PeerAddress | None) -> bool:
        """Whether a connection from ``address`` passes ``tcp_allowed_ips`` (an address that
        does not parse passes only when there is no list)."""
        allowed = self.allowed
        if allowed is None:
            return True
        return address is not None and any(address in network for network in allowed)

    def is_trusted(self, address: PeerAddress) -> bool:
        """Whether ``address`` may supply forwarding headers (``forwarded_headers``)."""
        if self.trust_all:
            return True
        return any(address in network for network in self.trusted)


@dataclass(frozen=True, slots=True, kw_only=True)
class UdpEntrypointRuntime:
    """A ``udp`` entrypoint's effective settings and its one router (SPEC §3.7, §4.12, §6.5)."""

    name: str
    host: str
    port: int
    #: ``udp_session_timeout_secs``: a session with no datagram either way for this long ends.
    session_timeout: float = _UDP_SESSION_TIMEOUT
    #: ``udp_max_sessions`` (per worker).
    max_sessions: int = _UDP_MAX_SESSIONS
    #: The UDP router attached and its service; None when no router is (datagrams dropped,
    #: ``reason="no_router"``).
    router: str | None = None
    service: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRuntime:
    """One service's backends, balancer and upstream settings (SPEC §3.10, §7)."""

    name: str
    backends: tuple[Backend, ...]
    #: The pool key of each backend, index for index.
    peers: tuple[Peer, ...]
    #: Each backend's URL path prefix as bytes ("" when none), index for index (SPEC §3).
    prefixes: tuple[bytes, ...]
    balancer: Balancer
    pool: PoolSettings
    connect_timeout: float
    response_header_timeout: float
    body_idle_timeout: float
    total_timeout: float  # 0 = off
    #: SSE, WebSocket and gRPC streams: no byte either way for this long ends them (0 = off).
    stream_idle_timeout: float
    connect_attempts: int
    pass_host_header: bool
    failover: str | None
    #: Active health checks (SPEC §7.4); None when the service has no ``health_check`` block.
    health_check: CheckSettings | None = None
    #: Passive health (SPEC §7.5) over ``backends``; None when ``passive_health`` is disabled.
    outliers: OutlierDetector | None = None
    #: Sticky sessions (SPEC §7.6); None without a ``sticky`` block.
    sticky: StickyPool | None = None
    #: Traffic mirroring (SPEC §7.7); None without a ``mirror`` block.
    mirror: MirrorState | None = None
    #: ``consistent-hash``'s key (``hash_key``) from the request; None: the client IP.
    hash_key: Callable[[RequestState], bytes] | None = None
    #: ``panic_threshold`` (SPEC §7.1), percent: below this share of available backends the
    #: selection ignores health (``services.balancer.panic_mode``); 0 = off.
    panic_threshold: int = 0
    #: ``scaling`` and ``revisions`` (SPEC §11); None with neither. With revisions,
    #: ``backends`` holds the load-balancer pool's (``balancer``'s) first, then each revision's.
    scale: ServiceScale | None = None

    def pick_backend(
        self, *, key: str | None = None, headers: Sequence[HeaderLine] = ()
    ) -> Backend | None:
        """One backend chosen outside a request's own selection (a mirror copy, a ws-mux
        channel): within the revision the split chooses when the service has revisions."""
        balancer = self.balancer
        scale = self.scale
        if scale is not None and scale.split is not None:
            balancer = scale.choose(balancer, headers, None).balancer
        return balancer.pick(key=key)

    def in_panic(self, *, primary: bool = True) -> bool:
        """Whether a request's selection over this pool is in panic mode now (SPEC §7.1): one
        pass over the backends, so ask only when ``panic_threshold`` is set.

        ``primary`` is False when this service serves as another's failover: its own failover
        is not used then (no chaining, SPEC §7.8), so even a pool with no available backend
        panics. As the primary with a failover service, such a pool fails over instead.
        """
        return panic_mode(
            self.backends, self.panic_threshold, failover=primary and self.failover is not None
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeConfig:
    """One config generation, compiled; immutable at the top level."""

    generation: int
    config: Config
    entrypoints: Mapping[str, EntrypointRuntime]
    routes: RouteTable
    services: Mapping[str, ServiceRuntime]
    #: Middleware instances by definition name (shared by the routers that list them).
    middlewares: Mapping[str, Middleware]
    #: Each router's middleware chain, in order; routers without middlewares are absent.
    chains: Mapping[str, tuple[Middleware, ...]]
    #: Tracing and request-id settings (SPEC §9.4, §9.5).
    observability: ObservabilityRuntime
    #: The ``websocket_mux`` services by name (SPEC §5.13); they have no backends of their own.
    muxes: Mapping[str, WebsocketMux] = dataclasses.field(default_factory=dict)
    #: The TCP routers (SPEC §3.9, §4.10), tried on ``tcp`` entrypoints and on TLS ``http``
    #: entrypoints before HTTP (SPEC §6.1).
    tcp_routes: TcpRouteTable = dataclasses.field(default_factory=lambda: TcpRouteTable(()))
    #: The ``tcp-filter`` instances by definition name (shared by the TCP routers listing them).
    tcp_filters: Mapping[str, TcpFilter] = dataclasses.field(default_factory=dict)
    #: The ``udp`` entrypoints by name.
    udp_entrypoints: Mapping[str, UdpEntrypointRuntime] = dataclasses.field(default_factory=dict)
    #: The ``acme_storage_path`` of every entrypoint ordering with HTTP-01: its
    #: ``challenges/`` directory holds the tokens another gateway sharing the storage presents
    #: (SPEC §12.2), answered when this process has no such token pending itself.
    acme_storage: tuple[str, ...] = ()

    def scale_of(self, service: str) -> ServiceScale | None:
        """The scaling and revisions of ``service`` (None: no such service, or it has
        neither)."""
        found = self.services.get(service)
        return found.scale if found is not None else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservabilityRuntime:
    """What the data plane needs of ``observability {}`` per request."""

    #: Extract, continue and inject trace context (``tracing_enabled``).
    tracing: bool
    sample_rate: float
    #: ``tracing_propagation`` as ``observability.tracing`` form flags.
    forms: int
    #: The request-id field name, lower case (``b""``: no request ids).
    request_id: bytes


def _observability(config: Config) -> ObservabilityRuntime:
    settings = config.observability
    return ObservabilityRuntime(
        tracing=settings.tracing_enabled,
        sample_rate=settings.tracing_sample_rate,
        forms=propagation_forms(settings.tracing_propagation),
        request_id=settings.request_id_header.lower().encode("ascii"),
    )


def compile_runtime(
    config: Config,
    generation: int,
    previous: RuntimeConfig | None = None,
    *,
    deps: MiddlewareDeps | None = None,
) -> RuntimeConfig:
    """Build the snapshot of a validated config (rules were already compiled once at load).

    ``previous`` (on reload) lends its middleware instances to unchanged definitions; ``deps``
    are what some middleware types need (the wall clock, outbound clients); its ``warn`` also
    gets one warning per service with ``upstream_tls.insecure_skip_verify = true``. Raises
    ``StartError`` if a router lists a middleware type that cannot run yet.
    """
    instances, chains = compile_chains(
        config,
        previous.config if previous is not None else None,
        previous.middlewares if previous is not None else None,
        deps=deps,
    )
    tcp_routes = _tcp_route_table(config)
    entrypoints = _entrypoints(config, tcp_routes)
    services = {
        name: _service(name, service)
        for name, service in config.services.items()
        if service.websocket_mux is None
    }
    if deps is not None and deps.warn is not None:
        _warn_insecure(config, deps.warn)
    return RuntimeConfig(
        generation=generation,
        config=config,
        entrypoints=entrypoints,
        routes=_route_table(config),
        services=services,
        middlewares=instances,
        chains=chains,
        observability=_observability(config),
        muxes={
            name: service.websocket_mux
            for name, service in config.services.items()
            if service.websocket_mux is not None
        },
        tcp_routes=tcp_routes,
        tcp_filters=_tcp_filters(config, previous),
        udp_entrypoints=_udp_entrypoints(config),
        acme_storage=_acme_storage(config),
    )


def _acme_storage(config: Config) -> tuple[str, ...]:
    """``RuntimeConfig.acme_storage``: each HTTP-01 storage path once, in entrypoint order."""
    paths: list[str] = []
    for entrypoint in config.entrypoints.values():
        tls = entrypoint.tls
        if (
            tls is not None
            and tls.acme
            and tls.acme_challenge == "http-01"
            and tls.acme_storage_path not in paths
        ):
            paths.append(tls.acme_storage_path)
    return tuple(paths)


def _tcp_route_table(config: Config) -> TcpRouteTable:
    """The TCP routes; a router without ``entrypoints`` is attached to every tcp entrypoint
    (never to an http one: those take TCP routers only by name, SPEC §3.9)."""
    every_tcp = frozenset(
        name for name, entrypoint in config.entrypoints.items() if entrypoint.protocol == "tcp"
    )
    routes = [
        TcpRoute(
            name=name,
            rule=compile_rule(router.rule, kind="tcp", syntax=router.rule_syntax),
            service=router.service,
            entrypoints=frozenset(router.entrypoints) if router.entrypoints else every_tcp,
            priority=router.priority,
            tls_passthrough=router.tls_passthrough,
            middlewares=router.middlewares,
        )
        for name, router in config.tcp_routers.items()
    ]
    return TcpRouteTable(routes)


def _tcp_filters(config: Config, previous: RuntimeConfig | None) -> dict[str, TcpFilter]:
    """One instance per ``tcp-filter`` definition a TCP router lists; an unchanged definition
    keeps the previous generation's instance (and so its count of open connections)."""
    kept = previous.tcp_filters if previous is not None else {}
    filters: dict[str, TcpFilter] = {}
    for router in config.tcp_routers.values():
        for name in router.middlewares:
            block = config.middlewares.get(name)
            if name in filters or not isinstance(block, TcpFilterBlock):
                continue
            before = kept.get(name)
            filters[name] = (
                before
                if before is not None and before.block == block
                else TcpFilter.from_config(name, block)
            )
    return filters


def _udp_entrypoints(config: Config) -> dict[str, UdpEntrypointRuntime]:
    owners = {
        entrypoint: (name, router.service)
        for name, router in config.udp_routers.items()
        for entrypoint in router.entrypoints
    }
    found: dict[str, UdpEntrypointRuntime] = {}
    for name, entrypoint in config.entrypoints.items():
        if entrypoint.protocol != "udp":
            continue
        router, service = owners.get(name, (None, None))
        found[name] = UdpEntrypointRuntime(
            name=name,
            host=entrypoint.address.host,
            port=entrypoint.address.port,
            session_timeout=float(entrypoint.udp_session_timeout_secs or _UDP_SESSION_TIMEOUT),
            max_sessions=entrypoint.udp_max_sessions or _UDP_MAX_SESSIONS,
            router=router,
            service=service,
        )
    return found


def _entrypoints(config: Config, tcp_routes: TcpRouteTable) -> dict[str, EntrypointRuntime]:
    """The http and tcp entrypoints; a TLS http entrypoint with TCP routers attached looks at
    its connections' first bytes (``preamble``) before serving HTTPS (SPEC §6.1)."""
    heads = request_head_parser(config.http1_parser)
    entrypoints: dict[str, EntrypointRuntime] = {}
    for name, entrypoint in config.entrypoints.items():
        if entrypoint.protocol == "udp":
            continue
        entry = _entrypoint(
            name, entrypoint, heads, redirect_port=_redirect_port(config, entrypoint)
        )
        if entry.tls and tcp_routes.routes_for(name):
            entry = dataclasses.replace(entry, preamble=True, shares_tcp=True)
        settings = entry.tls_settings
        if settings is not None and config.provider_sources:
            preferred = tuple(
                index
                for index, (cert_file, _) in enumerate(settings.pairs)
                if config.provider_sources.get(f"certificates/{cert_file}") == "acme"
            )
            if preferred:
                settings = dataclasses.replace(settings, preferred=preferred)
                entry = dataclasses.replace(entry, tls_settings=settings)
        entrypoints[name] = entry
    return entrypoints


def _redirect_port(config: Config, entrypoint: Entrypoint) -> int | None:
    """The port of ``entrypoint``'s ``redirect_to`` target (validated: an http entrypoint with
    tls on a fixed port), or None."""
    target = entrypoint.redirect_to
    if target is None or target not in config.entrypoints:
        return None
    return config.entrypoints[target].address.port


def _entrypoint(
    name: str,
    entrypoint: Entrypoint,
    heads: RequestHeadParser,
    *,
    redirect_port: int | None = None,
) -> EntrypointRuntime:
    limits = entrypoint.limits
    timeouts = entrypoint.timeouts
    tcp = entrypoint.protocol == "tcp"
    seconds = dict(_HTTP_TIMEOUTS)
    if tcp:
        seconds.update(_TCP_TIMEOUTS)
    if timeouts is not None:
        for field in seconds:
            value = getattr(timeouts, field)
            if value is not None:
                seconds[field] = value.seconds
    proxy = entrypoint.proxy_protocol
    forwarded = entrypoint.forwarded_headers
    return EntrypointRuntime(
        name=name,
        host=entrypoint.address.host,
        port=entrypoint.address.port,
        tls=entrypoint.tls is not None,
        max_connections=entrypoint.max_connections or _DEFAULT_MAX_CONNECTIONS,
        limits=Http1Limits(
            max_request_line_bytes=limits.max_request_line_bytes if limits else 8192,
            max_header_bytes=limits.max_header_bytes if limits else 32768,
            max_headers=limits.max_headers if limits else 100,
        ),
        heads=heads,
        max_concurrent_requests=limits.max_concurrent_requests if limits else 10000,
        max_requests_per_connection=limits.max_requests_per_connection if limits else 0,
        handshake_timeout=seconds["handshake"],
        request_head_timeout=seconds["request_head"],
        idle_timeout=seconds["idle"],
        body_idle_timeout=seconds["body_idle"],
        request_body_timeout=seconds["request_body"],
        via=entrypoint.via is not False,
        sanitize_path=entrypoint.sanitize_path is not False,
        trust_all=forwarded is not None and forwarded.insecure,
        trusted=tuple(n.network for n in forwarded.trusted_ips) if forwarded else (),
        allowed=(
            tuple(n.network for n in entrypoint.tcp_allowed_ips)
            if entrypoint.tcp_allowed_ips
            else None
        ),
        tls_settings=_tls_settings(entrypoint),
        redirect_port=redirect_port,
        h2c=not tcp and entrypoint.tls is None and entrypoint.h2c is not False,
        http2=_http2_limits(entrypoint),
        protocol=entrypoint.protocol,
        peek_timeout=seconds.get("peek", _TCP_TIMEOUTS["peek"]),
        tcp_idle_timeout=seconds["idle"] if tcp else _TCP_TIMEOUTS["idle"],
        preamble=tcp or proxy is not None,
        proxy_trusted=(
            tuple(network.network for network in proxy.trusted_ips) if proxy is not None else None
        ),
    )


def _http2_limits(entrypoint: Entrypoint) -> Http2Limits:
    settings = entrypoint.http2
    if settings is None:
        return DEFAULT_HTTP2
    return Http2Limits(
        max_concurrent_streams=settings.max_concurrent_streams,
        initial_window_size=settings.initial_window_size,
        connection_window_size=settings.connection_window_size,
        max_frame_size=settings.max_frame_size,
        max_header_list_size=settings.max_header_list_size,
        max_resets_per_second=settings.max_resets_per_second,
    )


#: The route order's tie-break by source (SPEC §4.7): the files, then discovery, then
#: Kubernetes Ingress, then IngressRoute (``Config.provider_sources``; DNS adds no routers).
SOURCE_RANKS: Final = {"discovery": 1, "kubernetes": 2, "kubernetes-crd": 3, "dns": 4}


def _route_table(config: Config) -> RouteTable:
    routes = []
    provenance = config.provider_sources
    for name, router in config.routers.items():
        rule = compile_rule(router.rule, kind="http", syntax=router.rule_syntax)
        source = provenance.get(f"routers/{name}")
        routes.append(
            Route(
                name=name,
                rule=rule,
                service=router.service,
                entrypoints=frozenset(router.entrypoints) if router.entrypoints else None,
                priority=router.priority,
                source_rank=SOURCE_RANKS[source] if source is not None else 0,
                middlewares=router.middlewares,
            )
        )
    return RouteTable(routes)


def _hash_key(balancer: LoadBalancer) -> Callable[[RequestState], bytes] | None:
    """The key function of ``hash_key`` (SPEC §7.2); None for the client IP, the default."""
    expression = balancer.hash_key
    if balancer.strategy != "consistent-hash" or expression in (None, "client-ip"):
        return None
    return key_function(expression)


def _service(name: str, service: Service) -> ServiceRuntime:
    balancer_config = service.load_balancer
    if balancer_config is None:
        balancer_config = LoadBalancer()
    tls = _upstream_tls(balancer_config)
    pool = (*balancer_config.servers, *_replica_servers(service.scaling))
    servers = (*pool, *(server for revision in service.revisions for server in revision.servers))
    health_check = _health_check(service, balancer_config, tls)
    # SPEC §7.1: a scaled service's backends start unhealthy until their first good probe.
    unready = service.scaling is not None and health_check is not None
    backends = tuple(
        Backend(url=server.url, weight=server.weight, index=index, active_healthy=not unready)
        for index, server in enumerate(servers)
    )
    balancer = make_balancer(balancer_config.strategy, backends[: len(pool)])
    return ServiceRuntime(
        name=name,
        backends=backends,
        peers=tuple(_peer(backend.url, tls) for backend in backends),
        prefixes=tuple(backend.url.path.encode() for backend in backends),
        balancer=balancer,
        pool=_pool_settings(balancer_config),
        connect_timeout=balancer_config.connect_timeout.seconds,
        response_header_timeout=balancer_config.response_header_timeout.seconds,
        body_idle_timeout=balancer_config.body_idle_timeout.seconds,
        stream_idle_timeout=balancer_config.stream_idle_timeout.seconds,
        total_timeout=balancer_config.total_timeout.seconds,
        connect_attempts=balancer_config.connect_attempts,
        pass_host_header=balancer_config.pass_host_header,
        failover=service.failover.service if service.failover else None,
        health_check=health_check,
        outliers=(
            OutlierDetector(backends, PassiveSettings.from_config(balancer_config.passive_health))
            if balancer_config.passive_health.enabled
            else None
        ),
        sticky=(
            StickyPool(name, backends, StickySettings.from_config(balancer_config.sticky, name))
            if balancer_config.sticky is not None
            else None
        ),
        hash_key=_hash_key(balancer_config),
        panic_threshold=balancer_config.panic_threshold,
        mirror=(
            MirrorState(MirrorSettings.from_config(service.mirror))
            if service.mirror is not None
            else None
        ),
        scale=_scale(service, balancer_config, backends, len(pool)),
    )


def _replica_servers(scaling: Scaling | None) -> tuple[Server, ...]:
    """The ``local`` executor's replicas as servers (SPEC §11.9): one per possible replica, on
    consecutive ports; those not running fail their probes and stay unavailable."""
    if scaling is None or scaling.executor != "local" or scaling.local is None:
        return ()
    base = scaling.local.base_port
    return tuple(
        Server(url=ServerUrl(f"http://127.0.0.1:{base + i}")) for i in range(scaling.max_replicas)
    )


def _scale(
    service: Service, balancer: LoadBalancer, backends: tuple[Backend, ...], pooled: int
) -> ServiceScale | None:
    """The revision pools and scaling settings of a service that has either (SPEC §11)."""
    if service.scaling is None and not service.revisions:
        return None
    pools: list[RevisionPool] = []
    revision_of = [-1] * pooled
    start = pooled
    for number, revision in enumerate(service.revisions):
        members = backends[start : start + len(revision.servers)]
        start += len(revision.servers)
        revision_of += [number] * len(members)
        strategy = revision.strategy or balancer.strategy
        pools.append(
            RevisionPool(revision.name, revision.tag, members, make_balancer(strategy, members))
        )
    revisions = service.revisions
    split = (
        RevisionSplit(
            [r.name for r in revisions],
            [r.traffic_percent for r in revisions],
            [r.tag for r in revisions],
        )
        if revisions
        else None
    )
    affinity = service.revision_affinity
    return ServiceScale(
        scaling=service.scaling,
        pools=tuple(pools),
        split=split,
        header=service.revision_header.lower().encode() if service.revision_header else None,
        affinity=key_function(affinity) if affinity else None,
        rollout=service.rollout,
        revision_of=tuple(revision_of),
        signature=signature_of(service),
    )


def _peer(url: ServerUrl, tls: UpstreamTlsSettings | None) -> Peer:
    """A backend's connection key; a ``udp://`` server's is only its address (no pool)."""
    if url.transport == "udp":
        return Peer("udp", url.host, url.port)
    return Peer.from_url(url, tls)


def _health_check(
    service: Service, balancer: LoadBalancer, tls: UpstreamTlsSettings | None
) -> CheckSettings | None:
    block = balancer.health_check
    if block is None:
        if service.scaling is not None and service.scaling.executor == "local":
            # The local executor's replicas need a readiness signal: connect, every second.
            return CheckSettings(
                kind="tcp", path="", interval=1.0, timeout=1.0, unhealthy_threshold=1
            )
        return None
    urls = [server.url for server in balancer.servers]
    urls += [server.url for revision in service.revisions for server in revision.servers]
    settings = CheckSettings.from_config(block, default_kind=kind_for_servers(urls))
    return settings if tls is None else dataclasses.replace(settings, tls=tls)


def _upstream_tls(balancer: LoadBalancer) -> UpstreamTlsSettings | None:
    """``upstream_tls`` (SPEC §3.10) as the values ``Peer`` keys connections by; None without
    the block (every TLS backend then uses the system store and its URL host)."""
    block = balancer.upstream_tls
    if block is None:
        return None
    identity = TlsIdentity(
        ca_file=block.ca_file or "",
        cert_file=block.cert_file or "",
        key_file=block.key_file or "",
        verify=not block.insecure_skip_verify,
    )
    return UpstreamTlsSettings(server_name=block.server_name or "", identity=identity)


def _warn_insecure(config: Config, warn: WarningSink) -> None:
    """One warning per service whose ``upstream_tls`` turns verification off, when a config is
    applied (the shell logs it on ``a3s_gateway.upstream``)."""
    for name, service in config.services.items():
        block = service.load_balancer.upstream_tls if service.load_balancer else None
        if block is not None and block.insecure_skip_verify:
            warn(
                "upstream",
                f'service "{name}": upstream_tls.insecure_skip_verify = true: backend '
                "certificates and names are not verified",
            )


def _pool_settings(balancer: LoadBalancer) -> PoolSettings:
    return PoolSettings(
        max_idle_per_backend=balancer.max_idle_per_backend,
        idle_conn_timeout=balancer.idle_conn_timeout.seconds,
        max_conns_per_backend=balancer.max_conns_per_backend,
    )
