"""The gateway's Prometheus families (SPEC §9.1) and the calls that feed them.

Ring 0: pure; no trio, sockets, TLS or clocks (times and the wall clock arrive as arguments).

``GatewayMetrics`` owns a ``Registry`` (``metrics.py``: plain cells, exposed through
``prometheus_client`` at scrape time) with the SPEC §9.1 families that exist in this build,
and three ways in:

- **``prepare(runtime)``**, called when a config generation starts serving (``config_applied``
  does it): the cells of every configured (entrypoint, router, service) and (service, backend)
  are created ahead of traffic, so the request path finds them and their byte counters and
  upstream histograms are exposed from the start (at zero). Cells are never dropped: counters
  survive reloads (SPEC §9.1), and a router or backend that comes back finds its totals.
- **Events**, called by the data plane, each cheap (DESIGN.md §3.5: well under 1 µs for an
  exchange and its attempt together, measured by ``bench/micro/metrics_bench.py``):
  ``observe_exchange`` (one finished request: the requests counter, the duration histogram,
  the byte counters), ``observe_attempt`` (one upstream attempt: backend requests, upstream
  response time), ``connection_opened``, ``connection_rejected``, ``connect_error``,
  ``stale_retry``, ``failover``, ``lb_panic``, ``middleware_outcome``, ``health_check``,
  ``passive_ejection`` (``skipped=True``: max_ejection_percent refused one), ``reload``,
  ``config_applied`` and ``access_log_dropped``. The cells an exchange touches are found by
  one dict lookup per (entrypoint, router, service) and per (service, backend), then per status
  and method; an update is an attribute add, the histogram's a ``bisect`` and two adds, written
  out in the method rather than called. ``observe_exchange`` leaves the backend families
  alone: the data plane reports every attempt (retries and failover included) through
  ``ExchangeObserver.attempt`` to ``observe_attempt``, and counting the record's last backend
  as well would count twice.
- **``collect(runtime, ctx)``**, called at scrape time on the event loop just before
  ``freeze()`` (or ``render()``/``snapshot()``): gauges are set from live state (requests in
  flight and open connections per entrypoint, the pool's idle and active connections, each
  backend's in-flight count and health flags, rate-limit keys, breaker states, the config
  generation, the ``process_*`` sample when one is passed), and counters kept by the middleware
  instances and mirror states (retries, breaker transitions, Redis and JWKS errors, mirror
  outcomes) are read into their families. Gauges of objects that left the config are removed;
  counters stay (SPEC §9.1: counters survive reloads). ``freeze()`` is the immutable snapshot
  that the caller renders off the event loop (``metrics.render`` in a thread).

Counters kept by instances are per generation: a reload may rebuild or drop a middleware (a
changed definition) and rebuilds every mirror state. ``retire`` (or ``retire_generation``, which
finds them) hands over the instances that the new generation no longer uses; their totals are
carried, and the families report carried + live, so they never go down. A retired instance is
still read until the next reload (requests in flight finish on their snapshot and may still
count), then folded into the carried totals. Counter children only ever ``advance_to`` a
larger total.

``requests_by_backend()`` sums ``a3s_backend_requests_total`` per (service, backend) for the
management API's ``/backends`` ``requests_total``; ``semantic_warnings(config)`` counts the
semantic warnings of a config for ``a3s_config_warnings``.

With ``enabled=False`` (``metrics_enabled = false``) every method returns at once and nothing
is recorded; the management API answers 404 instead of calling ``render``.

TLS termination (``server/tls.py``) feeds ``a3s_tls_handshake_errors_total`` and
``a3s_tls_reload_errors_total`` through ``tls_handshake_error`` and ``tls_reload_error``, and
hands the whole set of loaded certificates to ``tls_certificates`` whenever it changes
(``a3s_tls_certificate_not_after_seconds``; a ``MAX`` gauge: every worker loads the same files).
ACME (``acme/manager.py``): ``a3s_acme_orders_total`` and
``a3s_acme_certificate_not_after_seconds`` through ``acme`` at scrape time from the process
that runs the manager; ``a3s_acme_challenges_served_total`` through ``acme_challenge_served``
where a challenge is answered.

WebSocket sessions and SSE streams (``a3s_websocket_sessions_active``/``_total``,
``a3s_sse_streams_active``, ``a3s_open_connections{protocol="websocket"}``) are read from the
data plane's counts at ``collect``, like the connection gauges; so are the ``a3s_tcp_*`` and
``a3s_udp_*`` families (``stream_metrics.py``, from ``ServerContext.streams``) and
``a3s_open_connections{protocol="tcp"}``. The ``a3s_autoscaler_*``, ``a3s_scale_buffer_*``,
``a3s_revision_traffic_percent`` and ``a3s_rollout_*`` families (``scaling_metrics.py``) are set
by the shell at scrape time from the scaling state (``collect_control`` by the process that runs
the autoscalers, ``collect_buffers`` by each serving process). Families of features that do not
exist yet arrive with their issues: ``a3s_acme_*`` (ACME). ``providers`` sets
``a3s_config_pending_references`` and the ``a3s_provider_*`` counters at scrape time from the
process that runs the dynamic providers (``providers/provider_hub.py``).

Must not: import Ring 1 modules at run time (the data plane is described by the ``Protocol``s
below), block, or raise from an event method on a well-formed call.
"""

from __future__ import annotations

import platform
from bisect import bisect_left
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

from a3s_gateway.observability.metrics import GaugeKind, Registry
from a3s_gateway.observability.scaling_metrics import ScalingFamilies
from a3s_gateway.observability.stream_metrics import StreamFamilies
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from a3s_gateway.config.schema import Config
    from a3s_gateway.middleware.contract import Middleware
    from a3s_gateway.observability.metrics import (
        Counter,
        CounterChild,
        HistogramChild,
        Snapshot,
    )
    from a3s_gateway.observability.process import ProcessSample
    from a3s_gateway.observability.record import ExchangeRecord
    from a3s_gateway.observability.stream_stats import StreamStats
    from a3s_gateway.runtime.compile import EntrypointRuntime, RuntimeConfig
    from a3s_gateway.services.mirror_sampling import MirrorState
    from a3s_gateway.upstream.peer import Peer
    from a3s_gateway.upstream.pool_state import PeerStats

__all__ = [
    "GatewayMetrics",
    "MetricsContext",
    "PoolView",
    "normalise_method",
    "semantic_warnings",
]

#: The nine standard methods (RFC 9110 §9, RFC 5789); any other is ``OTHER`` (SPEC §9.1).
#: Methods are case-sensitive, so ``get`` is ``OTHER`` too.
_METHODS: Final[dict[bytes, str]] = {
    method.encode(): method
    for method in ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
}

_ROUTE: Final = ("entrypoint", "router", "service")
_BACKEND: Final = ("service", "backend")

#: What the hot path's first lookups find for a router or service without cells (never
#: written to).
_NO_ROUTES: Final[Mapping[str, _Route]] = {}
_NO_UPSTREAMS: Final[Mapping[str, _Upstream]] = {}

#: The ``to`` label of ``a3s_circuit_breaker_transitions_total`` by ``BreakerState`` value.
_BREAKER_STATES: Final = {0: "closed", 1: "open", 2: "half_open"}


def normalise_method(method: bytes) -> str:
    """The ``method`` label: one of the nine standard methods, else ``OTHER``."""
    return _METHODS.get(method, "OTHER")


def semantic_warnings(
    config: Config, *, workers: int = 1, environ: Mapping[str, str] | None = None
) -> int:
    """How many warnings the semantic checks (SPEC §3.15, ``config.semantic``) find in
    ``config`` run by ``workers`` processes: ``a3s_config_warnings``. ``environ`` tells whether
    the management token variable is set (None: it is not). File and certificate checks
    (``validate``'s preflight) are not counted: they describe the disk, not the config."""
    from a3s_gateway.config.problems import SourceMap
    from a3s_gateway.config.semantic import SemanticContext, check_semantics

    management = config.management
    token_set = (
        environ is not None
        and management is not None
        and bool(environ.get(management.auth_token_env))
    )
    context = SemanticContext(
        sources=SourceMap(),
        default_file="",
        broken=frozenset(),
        workers=workers,
        admin_token_set=token_set,
    )
    problems = check_semantics(config, context)
    return sum(1 for problem in problems if problem.severity == "warning")


class PoolView(Protocol):
    """What ``collect`` reads of the upstream pool (``upstream/pool.py``'s ``UpstreamPool``)."""

    def stats(self, peer: Peer) -> PeerStats: ...


class MetricsContext(Protocol):
    """What ``collect`` reads of the data plane (``server_context.ServerContext``)."""

    @property
    def active_requests(self) -> Mapping[str, int]: ...

    @property
    def active_connections(self) -> Mapping[str, int]: ...

    @property
    def http2_connections(self) -> Mapping[str, int]:
        """Those of ``active_connections`` that speak HTTP/2."""
        ...

    @property
    def rejected_connections(self) -> Mapping[tuple[str, str], int]: ...

    @property
    def websockets(self) -> Mapping[str, int]:
        """WebSocket sessions open now, by entrypoint (each one an ``active_connection``)."""
        ...

    @property
    def websocket_sessions(self) -> Mapping[str, int]:
        """WebSocket sessions open now, by router."""
        ...

    @property
    def websocket_totals(self) -> Mapping[str, int]:
        """WebSocket sessions ever opened, by router."""
        ...

    @property
    def sse_streams(self) -> Mapping[str, int]:
        """SSE streams open now, by router."""
        ...

    @property
    def streams(self) -> StreamStats:
        """TCP connection and UDP session counts."""
        ...

    @property
    def pool(self) -> PoolView: ...


class _Route:
    """The cells of one (entrypoint, router, service): the byte counters, and per status the
    requests counters and the duration histogram of its class."""

    __slots__ = ("durations", "key", "request_bytes", "response_bytes", "service", "statuses")

    def __init__(self, metrics: GatewayMetrics, key: tuple[str, str, str]) -> None:
        self.key = key
        self.service = key[2]
        self.request_bytes = metrics.request_bytes.labels(*key)
        self.response_bytes = metrics.response_bytes.labels(*key)
        self.statuses: dict[int, _Status] = {}
        #: The duration histogram by status class (status // 100), shared by its statuses.
        self.durations: dict[int, HistogramChild] = {}

    def status(self, metrics: GatewayMetrics, status: int) -> _Status:
        """The cells of ``status`` on this route (created on first use)."""
        klass = status // 100
        duration = self.durations.get(klass)
        if duration is None:
            duration = self.durations[klass] = metrics.duration.labels(*self.key, f"{klass}xx")
        slot = self.statuses[status] = _Status(duration)
        return slot


class _Status:
    """The cells of one status on one route: the duration histogram of its class and the
    requests counter per method. ``methods`` is keyed by the request's method bytes, and only
    the nine standard methods are ever keys (any other goes to ``other``), so the cache stays
    bounded whatever methods clients send."""

    __slots__ = ("duration", "methods", "other")

    def __init__(self, duration: HistogramChild) -> None:
        self.duration = duration
        self.methods: dict[bytes, CounterChild] = {}
        self.other: CounterChild | None = None

    def counter(
        self, metrics: GatewayMetrics, route: _Route, method: bytes, status: int
    ) -> CounterChild:
        """The requests counter of ``method`` (created on first use)."""
        label = _METHODS.get(method)
        if label is None:
            if self.other is None:
                self.other = metrics.requests.labels(*route.key, "OTHER", str(status))
            return self.other
        child = self.methods[method] = metrics.requests.labels(*route.key, label, str(status))
        return child


class _Upstream:
    """The cells of one (service, backend): the upstream response histogram and
    ``a3s_backend_requests_total`` by status."""

    __slots__ = ("codes", "key", "response_seconds")

    def __init__(self, metrics: GatewayMetrics, service: str, backend: str) -> None:
        self.key = (service, backend)
        self.response_seconds = metrics.upstream_response.labels(service, backend)
        self.codes: dict[int, CounterChild] = {}

    def code(self, metrics: GatewayMetrics, status: int) -> CounterChild:
        """The requests counter of ``status`` (created on first use)."""
        child = self.codes[status] = metrics.backend_requests.labels(*self.key, str(status))
        return child


_Totals: TypeAlias = "dict[tuple[Counter, tuple[str, ...]], float]"


class GatewayMetrics:
    """The SPEC §9.1 families of one process, and the calls that feed them."""

    def __init__(self, enabled: bool, *, version: str | None = None) -> None:
        if version is None:
            version = __version__
        self.enabled = enabled
        self.registry = registry = Registry()
        self._declare_http(registry)
        self._declare_tls(registry)
        self._declare_backends(registry)
        self._declare_middlewares(registry)
        self._declare_config(registry, version)
        self._declare_process(registry)
        #: The TCP and UDP families (SPEC §6, §9.1).
        self.streams = StreamFamilies(registry)

        #: Autoscaling, the scale buffer, revisions and rollouts (SPEC §11).
        self.scaling = ScalingFamilies(registry, enabled=enabled)

        # The families of ACME and providers arrive with their issues (listed in the module
        # docstring).

        #: The cells of the exchanges, by router then entrypoint (two lookups of interned
        #: names cost less than hashing a tuple); ``_all_routes`` has every route ever seen.
        self._routes: dict[str, dict[str, _Route]] = {}
        self._all_routes: dict[tuple[str, str, str], _Route] = {}
        #: The cells of the attempts, by service then backend URL.
        self._upstreams: dict[str, dict[str, _Upstream]] = {}
        #: Totals of instances retired and folded (see the module docstring).
        self._carried: _Totals = {}
        #: Instances retired at the last reload, still read until the next one.
        self._retiring: tuple[Middleware, ...] = ()
        self._retiring_mirrors: tuple[tuple[str, MirrorState], ...] = ()

    def _declare_http(self, registry: Registry) -> None:
        """The HTTP exchange and downstream connection families."""
        counter, gauge, histogram = registry.counter, registry.gauge, registry.histogram
        # --- HTTP exchanges and connections
        self.requests = counter(
            "a3s_http_requests_total",
            "HTTP requests answered, by entrypoint, router, service, method and status code.",
            (*_ROUTE, "method", "code"),
        )
        self.duration = histogram(
            "a3s_http_request_duration_seconds",
            "Time from the request head received to the end of the exchange, in seconds.",
            (*_ROUTE, "code_class"),
        )
        self.request_bytes = counter(
            "a3s_http_request_bytes_total", "Request body bytes received from clients.", _ROUTE
        )
        self.response_bytes = counter(
            "a3s_http_response_bytes_total", "Response body bytes sent to clients.", _ROUTE
        )
        self.in_flight = gauge(
            "a3s_http_requests_in_flight", "HTTP requests being handled now.", ("entrypoint",)
        )
        self.open_connections = gauge(
            "a3s_open_connections",
            "Downstream connections open now, by entrypoint and protocol.",
            ("entrypoint", "protocol"),
        )
        self.connections = counter(
            "a3s_connections_total", "Downstream connections accepted.", ("entrypoint",)
        )
        self.connections_rejected = counter(
            "a3s_connections_rejected_total",
            "Downstream connections closed at accept, by reason.",
            ("entrypoint", "reason"),
        )
        # --- streams (SPEC §5.11-§5.13)
        self.websocket_active = gauge(
            "a3s_websocket_sessions_active", "WebSocket sessions open now.", ("router",)
        )
        self.websocket_total = counter(
            "a3s_websocket_sessions_total",
            "WebSocket sessions opened (after the 101).",
            ("router",),
        )
        self.sse_active = gauge(
            "a3s_sse_streams_active", "Server-sent event streams open now.", ("router",)
        )

    def _declare_tls(self, registry: Registry) -> None:
        """The TLS termination families (SPEC §5.9)."""
        self.tls_handshake_errors = registry.counter(
            "a3s_tls_handshake_errors_total",
            "TLS handshakes that failed on an entrypoint, by reason.",
            ("entrypoint", "reason"),
        )
        self.grpc_responses = registry.counter(
            "a3s_grpc_responses_total",
            "gRPC calls answered, by router, service and grpc-status.",
            ("router", "service", "grpc_status"),
        )
        self.http2_connection_errors = registry.counter(
            "a3s_http2_connection_errors_total",
            "HTTP/2 connections ended by a connection error, by entrypoint and reason "
            "(protocol_error, rapid_reset, control_flood).",
            ("entrypoint", "reason"),
        )
        self.tls_reload_errors = registry.counter(
            "a3s_tls_reload_errors_total",
            "Changed certificate files that could not be loaded (the old certificate stays).",
            ("entrypoint",),
        )
        self.tls_not_after = registry.gauge(
            "a3s_tls_certificate_not_after_seconds",
            "Expiry (notAfter, Unix time) of every certificate an entrypoint serves.",
            ("entrypoint", "name"),
            kind=GaugeKind.MAX,
        )

        # --- ACME (SPEC §12): orders and the certificates' expiry come from the process that
        # runs the ACME manager (at scrape time, like the provider counters); challenge
        # answers are counted where they are served (every worker).
        self.acme_orders = registry.counter(
            "a3s_acme_orders_total",
            "ACME orders, by result (success, ca_error, rejected, invalid).",
            ("result",),
        )
        self.acme_challenges_served = registry.counter(
            "a3s_acme_challenges_served_total",
            "ACME validation requests answered, by challenge type (http-01, tls-alpn-01).",
            ("type",),
        )
        self.acme_not_after = registry.gauge(
            "a3s_acme_certificate_not_after_seconds",
            "Expiry (notAfter, Unix time) of each ACME certificate in the storage.",
            ("domain",),
            kind=GaugeKind.OWN,
        )

    def _declare_backends(self, registry: Registry) -> None:
        """The backend, pool, health and service families."""
        counter, gauge, histogram = registry.counter, registry.gauge, registry.histogram
        # --- backends and services
        self.backend_requests = counter(
            "a3s_backend_requests_total",
            "Upstream attempts, by service, backend and status (502/504 for transport failures).",
            (*_BACKEND, "code"),
        )
        self.upstream_response = histogram(
            "a3s_upstream_response_seconds",
            "Time from an upstream attempt's start to its response head, in seconds.",
            _BACKEND,
        )
        self.connect_errors = counter(
            "a3s_upstream_connect_errors_total",
            "Failed upstream connection attempts, by reason.",
            (*_BACKEND, "reason"),
        )
        self.stale_retries = counter(
            "a3s_upstream_stale_retries_total",
            "Requests re-sent on a fresh connection after a stale pooled one failed.",
            _BACKEND,
        )
        self.pool_connections = gauge(
            "a3s_upstream_pool_connections",
            "Pooled upstream connections now, by state (idle, active).",
            (*_BACKEND, "state"),
        )
        self.backend_in_flight = gauge(
            "a3s_backend_in_flight", "Upstream attempts in flight now.", _BACKEND
        )
        self.backend_available = gauge(
            "a3s_backend_available",
            "1 when the backend may be selected (weight > 0, healthy, not ejected).",
            _BACKEND,
            kind=GaugeKind.MAX,
        )
        self.backend_healthy = gauge(
            "a3s_backend_healthy",
            "1 when active health checks consider the backend healthy.",
            _BACKEND,
            kind=GaugeKind.MAX,
        )
        self.backend_ejected = gauge(
            "a3s_backend_ejected",
            "1 when passive health has ejected the backend.",
            _BACKEND,
            kind=GaugeKind.MAX,
        )
        self.service_available = gauge(
            "a3s_service_available_backends",
            "Backends of the service that may be selected now.",
            ("service",),
            kind=GaugeKind.MAX,
        )
        self._declare_health(registry)

    def _declare_health(self, registry: Registry) -> None:
        """The health, failover, panic and mirror families."""
        counter = registry.counter
        self.health_checks = counter(
            "a3s_health_checks_total", "Active health probes, by result.", (*_BACKEND, "result")
        )
        self.passive_ejections = counter(
            "a3s_passive_ejections_total", "Backends ejected by passive health.", _BACKEND
        )
        self.passive_ejections_skipped = counter(
            "a3s_passive_ejections_skipped_total",
            "Ejections refused because of max_ejection_percent.",
            _BACKEND,
        )
        self.failovers = counter(
            "a3s_failover_requests_total",
            "Requests sent to a failover service, by reason.",
            ("service", "reason"),
        )
        self.lb_panics = counter(
            "a3s_lb_panic_total",
            "Requests whose backend was chosen in panic mode, ignoring health.",
            ("service",),
        )
        self.mirror_requests = counter(
            "a3s_mirror_requests_total",
            "Mirrored request copies, by outcome.",
            ("service", "outcome"),
        )

    def _declare_middlewares(self, registry: Registry) -> None:
        """The middleware families."""
        counter, gauge, histogram = registry.counter, registry.gauge, registry.histogram
        # --- middlewares
        self.middleware_requests = counter(
            "a3s_middleware_requests_total",
            "Requests through a middleware, by outcome.",
            ("middleware", "type", "outcome"),
        )
        self.middleware_duration = histogram(
            "a3s_middleware_duration_seconds",
            "Time spent in a middleware's request side, in seconds.",
            ("middleware", "type"),
        )
        self.rate_limit_keys = gauge(
            "a3s_rate_limit_keys", "Keys with a token bucket now.", ("middleware",)
        )
        self.redis_errors = counter(
            "a3s_rate_limit_redis_errors_total",
            "Requests Redis could not decide (timeouts, errors).",
            ("middleware",),
        )
        self.breaker_state = gauge(
            "a3s_circuit_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open (the worst of its services).",
            ("middleware",),
            kind=GaugeKind.MAX,
        )
        self.breaker_transitions = counter(
            "a3s_circuit_breaker_transitions_total",
            "Circuit breaker transitions, by target state.",
            ("middleware", "to"),
        )
        self.retries = counter(
            "a3s_retries_total", "Retry attempts started.", ("middleware", "service")
        )
        self.retries_skipped = counter(
            "a3s_retries_skipped_total",
            "Retries that were due but not made, by reason.",
            ("middleware", "reason"),
        )
        self.jwks_errors = counter("a3s_jwks_errors_total", "Failed JWKS fetches.", ("middleware",))

    def _declare_config(self, registry: Registry, version: str) -> None:
        """The config, access-log and build families."""
        counter, gauge = registry.counter, registry.gauge
        # --- config, log, build
        self.config_generation = gauge(
            "a3s_config_generation", "The config generation serving now.", kind=GaugeKind.OWN
        )
        self.config_reload_time = gauge(
            "a3s_config_last_reload_timestamp_seconds",
            "Unix time the serving config was applied.",
            kind=GaugeKind.OWN,
        )
        self.config_warnings = gauge(
            "a3s_config_warnings", "Warnings of the serving config.", kind=GaugeKind.OWN
        )
        self.config_reloads = counter(
            "a3s_config_reloads_total", "Config reloads, by result.", ("result",)
        )
        self.access_log_dropped_lines = counter(
            "a3s_access_log_dropped_total", "Access-log entries dropped because the queue was full."
        )
        self.build_info = gauge(
            "a3s_build_info",
            "Always 1; the labels tell the gateway and Python versions.",
            ("version", "python"),
            kind=GaugeKind.OWN,
        )
        self.build_info.labels(version, platform.python_version()).set(1)
        # --- dynamic providers (SPEC §10.1, §3.15 check 3)
        self.config_pending = gauge(
            "a3s_config_pending_references",
            "References to services that no provider supplies yet (their routers are out of "
            "the table).",
            kind=GaugeKind.OWN,
        )
        self.provider_changes = counter(
            "a3s_provider_changes_total",
            "Changes a dynamic provider published (each starts a debounced reload).",
            ("provider",),
        )
        self.provider_errors = counter(
            "a3s_provider_errors_total",
            "Failures of a dynamic provider's peer (DNS, discovery seed, Kubernetes API).",
            ("provider",),
        )

    def _declare_process(self, registry: Registry) -> None:
        """The process families."""
        counter, gauge = registry.counter, registry.gauge
        # --- process (the standard names of the Prometheus client libraries). With workers
        # the supervisor's merge adds up CPU, memory and descriptors (every process's share)
        # and reports its own limit and start time.
        self.process_cpu = counter(
            "process_cpu_seconds_total", "Total user and system CPU time spent in seconds."
        )
        self.process_resident = gauge(
            "process_resident_memory_bytes", "Resident memory size in bytes."
        )
        self.process_virtual = gauge(
            "process_virtual_memory_bytes", "Virtual memory size in bytes."
        )
        self.process_open_fds = gauge("process_open_fds", "Number of open file descriptors.")
        self.process_max_fds = gauge(
            "process_max_fds", "Maximum number of open file descriptors.", kind=GaugeKind.OWN
        )
        self.process_start = gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            kind=GaugeKind.OWN,
        )

    # ---------------------------------------------------------------------- data-plane events

    def observe_exchange(self, record: ExchangeRecord) -> None:
        """One finished HTTP exchange: ``a3s_http_requests_total`` (status 0 when no response
        was sent; its class is ``0xx``), the duration histogram and the byte counters."""
        if not self.enabled:
            return
        route = self._routes.get(record.router, _NO_ROUTES).get(record.entrypoint)
        if route is None or route.service != record.service:
            route = self._route((record.entrypoint, record.router, record.service))
        status = record.status
        slot = route.statuses.get(status)
        if slot is None:
            slot = route.status(self, status)
        requests = slot.methods.get(record.method)
        if requests is None:
            requests = slot.counter(self, route, record.method, status)
        requests.value += 1
        received = record.request_bytes
        if received:  # most requests have no body
            route.request_bytes.value += received
        route.response_bytes.value += record.response_bytes
        # request head received → response head sent (§9.1): ExchangeRecord.head_seconds,
        # written out (a property call and max() cost more than the rest of the update)
        end = record.head_sent
        if end < 0.0:
            end = record.ended
        seconds = end - record.started
        if seconds < 0.0:
            seconds = 0.0
        duration = slot.duration  # HistogramChild.observe, written out
        duration.counts[bisect_left(duration.bounds, seconds)] += 1
        duration.sum += seconds
        if record.grpc_status >= 0:
            self.grpc_responses.labels(
                record.router, record.service, str(record.grpc_status)
            ).value += 1

    def observe_attempt(
        self, service: str, backend: str, status: int, seconds: float | None
    ) -> None:
        """One upstream attempt (``ExchangeObserver.attempt``): ``a3s_backend_requests_total``
        with its status (502/504 for transport failures) and, when a response head arrived,
        the seconds to it in ``a3s_upstream_response_seconds``."""
        if not self.enabled:
            return
        upstream = self._upstreams.get(service, _NO_UPSTREAMS).get(backend)
        if upstream is None:
            upstream = self._upstream(service, backend)
        codes = upstream.codes.get(status)
        if codes is None:
            codes = upstream.code(self, status)
        codes.value += 1
        if seconds is not None:
            histogram = upstream.response_seconds  # HistogramChild.observe, written out
            histogram.counts[bisect_left(histogram.bounds, seconds)] += 1
            histogram.sum += seconds

    def prepare(self, runtime: RuntimeConfig) -> None:
        """Create the cells of every route (entrypoint, router, service) and backend of
        ``runtime`` (module docstring); those that exist already are kept."""
        if not self.enabled:
            return
        for route in runtime.routes.routes:
            entrypoints = runtime.entrypoints if route.entrypoints is None else route.entrypoints
            for entrypoint in entrypoints:
                self._route((entrypoint, route.name, route.service))
        for name, service in runtime.services.items():
            for backend in service.backends:
                self._upstream(name, backend.url.text)

    def _route(self, key: tuple[str, str, str]) -> _Route:
        """The cells of ``key`` (created once), now the ones its (router, entrypoint) finds:
        a router whose service changed in a reload gets new cells, its old ones stay."""
        route = self._all_routes.get(key)
        if route is None:
            route = self._all_routes[key] = _Route(self, key)
        entrypoint, router, _ = key
        self._routes.setdefault(router, {})[entrypoint] = route
        return route

    def _upstream(self, service: str, backend: str) -> _Upstream:
        """The cells of (``service``, ``backend``), created once."""
        by_backend = self._upstreams.setdefault(service, {})
        upstream = by_backend.get(backend)
        if upstream is None:
            upstream = by_backend[backend] = _Upstream(self, service, backend)
        return upstream

    def connection_opened(self, entrypoint: str) -> None:
        """A downstream connection was accepted."""
        if self.enabled:
            self.connections.labels(entrypoint).value += 1

    def connection_rejected(self, entrypoint: str, reason: str) -> None:
        """A connection was closed at accept (``max_connections``, ``ip_not_allowed``).

        ``collect`` also reads ``ServerContext.rejected_connections``, which counts the same
        events; counters only advance to the larger total, so using both never counts twice.
        """
        if self.enabled:
            self.connections_rejected.labels(entrypoint, reason).value += 1

    def tls_handshake_error(self, entrypoint: str, reason: str) -> None:
        """A TLS handshake on ``entrypoint`` failed (``server/tls.py``'s reasons)."""
        if self.enabled:
            self.tls_handshake_errors.labels(entrypoint, reason).value += 1

    def http2_connection_error(self, entrypoint: str, reason: str) -> None:
        """An HTTP/2 connection on ``entrypoint`` ended with GOAWAY for ``reason``."""
        if self.enabled:
            self.http2_connection_errors.labels(entrypoint, reason).value += 1

    def tls_reload_error(self, entrypoint: str) -> None:
        """A changed certificate pair of ``entrypoint`` could not be loaded."""
        if self.enabled:
            self.tls_reload_errors.labels(entrypoint).value += 1

    def acme_challenge_served(self, kind: str) -> None:
        """A validation request of challenge type ``kind`` was answered."""
        if self.enabled:
            self.acme_challenges_served.labels(kind).value += 1

    def acme(self, orders: Mapping[str, int], not_after: Mapping[str, float]) -> None:
        """At scrape time: the ACME manager's order totals by result and each stored
        certificate's expiry (domains no longer managed are removed)."""
        if not self.enabled:
            return
        for result, total in orders.items():
            self.acme_orders.labels(result).advance_to(total)
        family = self.acme_not_after
        for domain, expiry in not_after.items():
            family.labels(domain).set(expiry)
        family.retain({(domain,) for domain in not_after})

    def tls_certificates(self, certificates: Iterable[tuple[str, str, float]]) -> None:
        """Every loaded certificate now, as (entrypoint, name, notAfter); others are removed."""
        if not self.enabled:
            return
        family = self.tls_not_after
        keep: set[tuple[str, ...]] = set()
        for entrypoint, name, not_after in certificates:
            family.labels(entrypoint, name).set(not_after)
            keep.add((entrypoint, name))
        family.retain(keep)

    def connect_error(self, service: str, backend: str, reason: str) -> None:
        """An upstream connection attempt failed (``refused``, ``timeout``, ...)."""
        if self.enabled:
            self.connect_errors.labels(service, backend, reason).value += 1

    def stale_retry(self, service: str, backend: str) -> None:
        """A request was re-sent after a stale pooled connection failed (SPEC §5.7)."""
        if self.enabled:
            self.stale_retries.labels(service, backend).value += 1

    def failover(self, service: str, reason: str) -> None:
        """A request of ``service`` went to its failover service."""
        if self.enabled:
            self.failovers.labels(service, reason).value += 1

    def lb_panic(self, service: str) -> None:
        """A request of ``service`` had its backend chosen in panic mode (SPEC §7.1)."""
        if self.enabled:
            self.lb_panics.labels(service).value += 1

    def middleware_outcome(self, name: str, type: str, outcome: str, seconds: float) -> None:
        """A middleware's request side finished with ``outcome`` after ``seconds``."""
        if not self.enabled:
            return
        self.middleware_requests.labels(name, type, outcome).value += 1
        self.middleware_duration.labels(name, type).observe(seconds)

    def health_check(self, service: str, backend: str, result: str) -> None:
        """An active health probe finished with ``result``."""
        if self.enabled:
            self.health_checks.labels(service, backend, result).value += 1

    def passive_ejection(self, service: str, backend: str, *, skipped: bool) -> None:
        """Passive health ejected ``backend`` (or would have, but for max_ejection_percent)."""
        if not self.enabled:
            return
        family = self.passive_ejections_skipped if skipped else self.passive_ejections
        family.labels(service, backend).value += 1

    def reload(self, result: str) -> None:
        """A reload finished: ``ok``, ``error`` or ``unchanged``."""
        if self.enabled:
            self.config_reloads.labels(result).value += 1

    def config_applied(
        self, *, wall: float, warnings: int, runtime: RuntimeConfig | None = None
    ) -> None:
        """A config generation started serving (at start and after each applied reload): the
        Unix time, its number of warnings (``semantic_warnings``) and, to ``prepare`` its
        cells, its compiled ``runtime``."""
        if not self.enabled:
            return
        self.config_reload_time.labels().set(wall)
        self.config_warnings.labels().set(warnings)
        if runtime is not None:
            self.prepare(runtime)

    def providers(self, counters: Mapping[str, tuple[int, int]], pending: int) -> None:
        """At scrape time: each dynamic provider's (changes, errors) totals and the number
        of pending references of the serving config."""
        if not self.enabled:
            return
        self.config_pending.labels().set(pending)
        for provider, (changes, errors) in counters.items():
            self.provider_changes.labels(provider).advance_to(changes)
            self.provider_errors.labels(provider).advance_to(errors)

    def access_log_dropped(self, n: int = 1) -> None:
        """``n`` access-log entries were dropped (queue full)."""
        if self.enabled and n > 0:
            self.access_log_dropped_lines.labels().value += n

    # ------------------------------------------------------------------------------- reloads

    def retire(
        self,
        instances: Iterable[Middleware],
        *,
        mirrors: Iterable[tuple[str, MirrorState]] = (),
    ) -> None:
        """Hand over the middleware instances (and ``(service, mirror state)`` pairs) that the
        new generation no longer uses, once per reload; their counts stay in the totals. The
        instances retired at the previous reload are folded into the carried totals now."""
        if not self.enabled:
            return
        folded: _Totals = {}
        self._instance_totals(self._retiring, self._retiring_mirrors, folded)
        carried = self._carried
        for key, value in folded.items():
            carried[key] = carried.get(key, 0) + value
        self._retiring = tuple(instances)
        self._retiring_mirrors = tuple(mirrors)

    def retire_generation(self, previous: RuntimeConfig, current: RuntimeConfig) -> None:
        """``retire`` what ``previous`` had and ``current`` does not: middleware instances not
        kept by the reload, and every replaced mirror state. Call it once per swap."""
        instances = [
            instance
            for name, instance in previous.middlewares.items()
            if current.middlewares.get(name) is not instance
        ]
        mirrors = []
        for name, service in previous.services.items():
            now = current.services.get(name)
            if service.mirror is not None and (now is None or now.mirror is not service.mirror):
                mirrors.append((name, service.mirror))
        self.retire(instances, mirrors=mirrors)

    # ------------------------------------------------------------------------------- scrape

    def collect(
        self,
        runtime: RuntimeConfig,
        ctx: MetricsContext,
        *,
        process: ProcessSample | None = None,
    ) -> None:
        """Set the gauges and instance-kept counters from live state (call before ``render``)."""
        if not self.enabled:
            return
        self.config_generation.labels().set(runtime.generation)
        self._collect_entrypoints(runtime, ctx)
        self._collect_services(runtime, ctx)
        self._collect_middlewares(runtime)
        if process is not None:
            self._collect_process(process)

    def freeze(self) -> Snapshot:
        """Every family now, immutable (``collect`` first for fresh gauges): what
        ``metrics.render`` turns into the exposition, on any thread."""
        return self.registry.freeze()

    def render(self) -> bytes:
        """The exposition of every family, on the calling thread (``collect`` first)."""
        return self.registry.render()

    def snapshot(self) -> bytes:
        """This worker's families for the supervisor's ``merge`` (SPEC §13.4)."""
        return self.registry.snapshot()

    def requests_by_backend(self) -> dict[tuple[str, str], int]:
        """``a3s_backend_requests_total`` summed over its codes, per (service, backend URL);
        every prepared backend is there (0 before its first attempt)."""
        totals = {
            (service, backend): 0
            for service, backends in self._upstreams.items()
            for backend in backends
        }
        for (service, backend, _code), child in self.backend_requests.children.items():
            key = (service, backend)
            totals[key] = totals.get(key, 0) + int(child.value)
        return totals

    def _collect_entrypoints(self, runtime: RuntimeConfig, ctx: MetricsContext) -> None:
        names = runtime.entrypoints
        http2, websockets = ctx.http2_connections, ctx.websockets
        # A tcp entrypoint's connections are all TCP; an http one's are TCP once a TCP router
        # took them (a TLS entrypoint shared with TCP routers).
        tcp: dict[str, int] = {}
        for (entrypoint, _router), count in ctx.streams.tcp_active.items():
            entry = names.get(entrypoint)
            if entry is not None and entry.protocol != "tcp":
                tcp[entrypoint] = tcp.get(entrypoint, 0) + count
        for name, entry in names.items():
            if entry.protocol == "tcp":
                tcp[name] = ctx.active_connections.get(name, 0)
        http1 = {
            name: n - http2.get(name, 0) - websockets.get(name, 0) - tcp.get(name, 0)
            for name, n in ctx.active_connections.items()
        }
        keep: dict[int, set[tuple[str, ...]]] = {}
        for family, counts, extra in (
            (self.in_flight, ctx.active_requests, ()),
            (self.open_connections, http1, ("http1",)),
            (self.open_connections, http2, ("http2",)),
            (self.open_connections, websockets, ("websocket",)),
            (self.open_connections, tcp, ("tcp",)),
        ):
            kept = keep.setdefault(id(family), set())
            for name in dict.fromkeys([*names, *counts]):  # in a stable order
                value = counts.get(name, 0)
                if value or _shown(names.get(name), extra):
                    labels = (name, *extra)
                    family.labels(*labels).set(value)
                    kept.add(labels)
        self.in_flight.retain(keep[id(self.in_flight)])
        self.open_connections.retain(keep[id(self.open_connections)])
        for (entrypoint, reason), total in ctx.rejected_connections.items():
            self.connections_rejected.labels(entrypoint, reason).advance_to(total)
        self._collect_streams(ctx)
        self.streams.collect(ctx.streams)

    def _collect_streams(self, ctx: MetricsContext) -> None:
        """The WebSocket and SSE families, by router (a router stays once it had one)."""
        for router, count in ctx.websocket_sessions.items():
            self.websocket_active.labels(router).set(count)
        for router, total in ctx.websocket_totals.items():
            self.websocket_total.labels(router).advance_to(total)
        for router, count in ctx.sse_streams.items():
            self.sse_active.labels(router).set(count)

    def _collect_services(self, runtime: RuntimeConfig, ctx: MetricsContext) -> None:
        pool = ctx.pool
        backends: set[tuple[str, ...]] = set()
        pooled: set[tuple[str, ...]] = set()
        services: set[tuple[str, ...]] = set()
        for name, service in runtime.services.items():
            available = 0
            for backend, peer in zip(service.backends, service.peers, strict=True):
                labels = (name, backend.url.text)
                backends.add(labels)
                is_available = backend.available
                available += is_available
                self.backend_in_flight.labels(*labels).set(backend.in_flight)
                self.backend_available.labels(*labels).set(int(is_available))
                self.backend_healthy.labels(*labels).set(int(backend.active_healthy))
                self.backend_ejected.labels(*labels).set(int(backend.passive_ejected))
                stats = pool.stats(peer)
                idle, active = (*labels, "idle"), (*labels, "active")
                self.pool_connections.labels(*idle).set(stats.idle)
                self.pool_connections.labels(*active).set(stats.busy)
                pooled.update((idle, active))
            self.service_available.labels(name).set(available)
            services.add((name,))
        for family in (
            self.backend_in_flight,
            self.backend_available,
            self.backend_healthy,
            self.backend_ejected,
        ):
            family.retain(backends)
        self.pool_connections.retain(pooled)
        self.service_available.retain(services)

    def _collect_middlewares(self, runtime: RuntimeConfig) -> None:
        from a3s_gateway.middleware.breaker import CircuitBreakerMiddleware
        from a3s_gateway.middleware.ratelimit import RateLimitMiddleware

        totals: _Totals = dict(self._carried)
        retiring = {id(instance) for instance in self._retiring}
        live = [m for m in runtime.middlewares.values() if id(m) not in retiring]
        mirrors = [
            (name, service.mirror)
            for name, service in runtime.services.items()
            if service.mirror is not None
        ]
        self._instance_totals(self._retiring, self._retiring_mirrors, totals)
        self._instance_totals(live, mirrors, totals)
        for (family, labels), total in totals.items():
            family.labels(*labels).advance_to(total)
        keys: set[tuple[str, ...]] = set()
        states: set[tuple[str, ...]] = set()
        for instance in runtime.middlewares.values():
            if isinstance(instance, RateLimitMiddleware):
                self.rate_limit_keys.labels(instance.name).set(instance.key_count)
                keys.add((instance.name,))
            elif isinstance(instance, CircuitBreakerMiddleware):
                self.breaker_state.labels(instance.name).set(int(instance.state))
                states.add((instance.name,))
        self.rate_limit_keys.retain(keys)
        self.breaker_state.retain(states)

    def _instance_totals(
        self,
        instances: Iterable[Middleware],
        mirrors: Iterable[tuple[str, MirrorState]],
        totals: _Totals,
    ) -> None:
        """Add the counts kept by ``instances`` and ``mirrors`` to ``totals``."""

        def add(family: Counter, labels: tuple[str, ...], value: float) -> None:
            key = (family, labels)
            totals[key] = totals.get(key, 0) + value

        for instance in instances:
            name = instance.name
            for family, labels, value in _middleware_counts(self, instance):
                add(family, (name, *labels), value)
        for service, mirror in mirrors:
            for outcome, count in mirror.outcomes.items():
                add(self.mirror_requests, (service, outcome), count)

    def _collect_process(self, process: ProcessSample) -> None:
        self.process_cpu.labels().advance_to(process.cpu_seconds)
        self.process_resident.labels().set(process.resident_bytes)
        self.process_virtual.labels().set(process.virtual_bytes)
        if process.open_fds is not None:
            self.process_open_fds.labels().set(process.open_fds)
        if process.max_fds is not None:
            self.process_max_fds.labels().set(process.max_fds)
        if process.start_time is not None:
            self.process_start.labels().set(process.start_time)


def _shown(entry: EntrypointRuntime | None, extra: tuple[str, ...]) -> bool:
    """Whether an entrypoint's row of a connection family is shown while its count is 0:
    a tcp entrypoint's only under ``protocol="tcp"``, an http one's under every protocol
    but ``tcp`` (unless TCP routers share it)."""
    if entry is None:
        return False
    if entry.protocol == "tcp":
        return extra in ((), ("tcp",))
    return extra != ("tcp",) or entry.shares_tcp


def _middleware_counts(
    metrics: GatewayMetrics, instance: Middleware
) -> Iterable[tuple[Counter, tuple[str, ...], float]]:
    """The counters an instance keeps: (family, labels after ``middleware``, value).

    Dispatches on the instance's module before importing its class, so a type no config uses
    is never imported (``jwt`` would bring in ``cryptography``).
    """
    match type(instance).__module__:
        case "a3s_gateway.middleware.retry":
            from a3s_gateway.middleware.retry import RetryMiddleware

            if isinstance(instance, RetryMiddleware):
                by_service: dict[str, int] = {}
                for (service, _reason), count in instance.retries.items():
                    by_service[service] = by_service.get(service, 0) + count
                for service, count in by_service.items():
                    yield metrics.retries, (service,), count
                for reason, count in instance.skipped.items():
                    yield metrics.retries_skipped, (reason,), count
        case "a3s_gateway.middleware.breaker":
            from a3s_gateway.middleware.breaker import CircuitBreakerMiddleware

            if isinstance(instance, CircuitBreakerMiddleware):
                for state, count in instance.transitions.items():
                    yield metrics.breaker_transitions, (_BREAKER_STATES[int(state)],), count
        case "a3s_gateway.middleware.redis_ratelimit":
            from a3s_gateway.middleware.redis_ratelimit import (
                RedisRateLimitMiddleware,
            )

            if isinstance(instance, RedisRateLimitMiddleware):
                yield metrics.redis_errors, (), instance.errors
        case "a3s_gateway.middleware.jwt":
            from a3s_gateway.middleware.jwt import JwtMiddleware

            if isinstance(instance, JwtMiddleware):
                yield metrics.jwks_errors, (), instance.jwks_errors
        case _:
            pass
