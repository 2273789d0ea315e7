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

from a3s_gateway.config.schema_services import LoadBalancer
from a3s_gateway.middleware.phases import compile_chains
from a3s_gateway.middleware.ratelimit import key_function
from a3s_gateway.observability.tracing import propagation_forms
from a3s_gateway.protocols.http1 import Http1Limits
from a3s_gateway.protocols.http1_engines import request_head_parser
from a3s_gateway.protocols.http2 import Http2Limits
from a3s_gateway.routing import Route, RouteTable, compile_rule
from a3s_gateway.services import Backend, Balancer, make_balancer
from a3s_gateway.services.balancer import panic_mode
from a3s_gateway.services.health import CheckSettings, kind_for_servers
from a3s_gateway.services.mirror_sampling import MirrorSettings, MirrorState
from a3s_gateway.services.passive import OutlierDetector, PassiveSettings
from a3s_gateway.services.sticky import StickyPool, StickySettings
from a3s_gateway.upstream.peer import Peer, PoolSettings, TlsIdentity, UpstreamTlsSettings

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.schema_entrypoints import Entrypoint
    from a3s_gateway.config.schema_services import Service, WebsocketMux
    from a3s_gateway.middleware.contract import Middleware, RequestState
    from a3s_gateway.middleware.outbound import MiddlewareDeps, WarningSink
    from a3s_gateway.protocols.http1_heads import RequestHeadParser
    from a3s_gateway.routing.request import PeerAddress

__all__ = [
    "SERVED_ALPN",
    "EntrypointRuntime",
    "RuntimeConfig",
    "ServiceRuntime",
    "TlsSettings",
    "compile_runtime",
]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

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
_DEFAULT_MAX_CONNECTIONS: Final = 10000

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
    #: ALPN protocols offered, in server preference order, restricted to ``SERVED_ALPN``.
    alpn: tuple[str, ...]
    client_auth: str
    client_ca_file: str | None
    sni_strict: bool


def _tls_settings(entrypoint: Entrypoint) -> TlsSettings | None:
    tls = entrypoint.tls
    if tls is None:
        return None
    pairs: list[tuple[str, str]] = []
    if tls.cert_file is not None and tls.key_file is not None:
        pairs.append((tls.cert_file, tls.key_file))
    pairs.extend((pair.cert_file, pair.key_file) for pair in tls.certificates)
    alpn = SERVED_ALPN if tls.alpn is None else tls.alpn
    return TlsSettings(
        pairs=tuple(pairs),
        min_version=tls.min_version,
        alpn=tuple(protocol for protocol in alpn if protocol in SERVED_ALPN),
        client_auth=tls.client_auth,
        client_ca_file=tls.client_ca_file,
        sni_strict=tls.sni_strict,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EntrypointRuntime:
    """An ``http`` entrypoint's effective settings (SPEC §3.7)."""

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
    entrypoints = {
        name: _entrypoint(
            name,
            entrypoint,
            request_head_parser(config.http1_parser),
            redirect_port=_redirect_port(config, entrypoint),
        )
        for name, entrypoint in config.entrypoints.items()
        if entrypoint.protocol == "http"
    }
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
    )


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
    seconds = dict(_HTTP_TIMEOUTS)
    if timeouts is not None:
        for field in seconds:
            value = getattr(timeouts, field)
            if value is not None:
                seconds[field] = value.seconds
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
        h2c=entrypoint.tls is None and entrypoint.h2c is not False,
        http2=_http2_limits(entrypoint),
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


def _route_table(config: Config) -> RouteTable:
    routes = []
    for name, router in config.routers.items():
        rule = compile_rule(router.rule, kind="http", syntax=router.rule_syntax)
        routes.append(
            Route(
                name=name,
                rule=rule,
                service=router.service,
                entrypoints=frozenset(router.entrypoints) if router.entrypoints else None,
                priority=router.priority,
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
    servers = balancer_config.servers
    tls = _upstream_tls(balancer_config)
    if not servers and service.revisions:
        # Revisions and traffic split are issue #10; until then their servers form one pool.
        servers = tuple(server for revision in service.revisions for server in revision.servers)
    backends = tuple(
        Backend(url=server.url, weight=server.weight, index=index)
        for index, server in enumerate(servers)
    )
    return ServiceRuntime(
        name=name,
        backends=backends,
        peers=tuple(Peer.from_url(backend.url, tls) for backend in backends),
        prefixes=tuple(backend.url.path.encode() for backend in backends),
        balancer=make_balancer(balancer_config.strategy, backends),
        pool=_pool_settings(balancer_config),
        connect_timeout=balancer_config.connect_timeout.seconds,
        response_header_timeout=balancer_config.response_header_timeout.seconds,
        body_idle_timeout=balancer_config.body_idle_timeout.seconds,
        stream_idle_timeout=balancer_config.stream_idle_timeout.seconds,
        total_timeout=balancer_config.total_timeout.seconds,
        connect_attempts=balancer_config.connect_attempts,
        pass_host_header=balancer_config.pass_host_header,
        failover=service.failover.service if service.failover else None,
        health_check=_health_check(service, balancer_config, tls),
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
    )


def _health_check(
    service: Service, balancer: LoadBalancer, tls: UpstreamTlsSettings | None
) -> CheckSettings | None:
    block = balancer.health_check
    if block is None:
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
