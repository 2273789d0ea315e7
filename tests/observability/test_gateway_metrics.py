"""The gateway's families (observability/gateway_metrics.py, SPEC §9.1): names, types and label
sets; what each data-plane event records; ``collect`` against a real ``RuntimeConfig`` compiled
from HCL with backends, middlewares and mirrors in various states; gauges of removed objects
dropped and counters kept across reloads (``retire``); the supervisor's merge of workers'
snapshots (SPEC §13.4); ``metrics_enabled = false``; the ``process_*`` readings."""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.urls import HttpUrl, RedisUrl
from a3s_gateway.middleware.breaker import CircuitBreakerMiddleware
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.jwt import JwtMiddleware
from a3s_gateway.middleware.outbound import (
    HttpReply,
    MiddlewareDeps,
    OutboundFailed,
    RedisClient,
)
from a3s_gateway.middleware.ratelimit import RateLimitMiddleware
from a3s_gateway.middleware.redis_ratelimit import RedisRateLimitMiddleware
from a3s_gateway.middleware.retry import RetryMiddleware
from a3s_gateway.observability.gateway_metrics import (
    GatewayMetrics,
    MetricsContext,
    normalise_method,
    semantic_warnings,
)
from a3s_gateway.observability.metrics import DEFAULT_BUCKETS, merge, render
from a3s_gateway.observability.process import (
    ProcessSample,
    parse_boot_time,
    parse_max_fds,
    parse_stat,
    sample,
)
from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.observability.scaling_metrics import AutoscalerStat, ScalingStats
from a3s_gateway.observability.stream_stats import StreamStats
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.server.exchange.recording import outcome
from a3s_gateway.server.process_metrics import read_process
from a3s_gateway.server.server_context import ServerContext
from a3s_gateway.upstream.peer import Peer
from a3s_gateway.upstream.pool import UpstreamPool
from a3s_gateway.upstream.pool_state import PeerStats
from tests.observability.test_metrics import families, values

# ---------------------------------------------------------------------------------- helpers

CONFIG = """
entrypoints "web" {{
  address = "127.0.0.1:0"
}}
entrypoints "admin" {{
  address = "127.0.0.1:0"
}}
routers "r" {{
  rule        = "PathPrefix(`/`)"
  service     = "svc"
  middlewares = ["keys", "cb", "rt", "auth", "shared"]
}}
middlewares "keys" {{
  type = "rate-limit"
  rate = 10
}}
middlewares "cb" {{
  type              = "circuit-breaker"
  failure_threshold = 1
}}
middlewares "rt" {{
  type        = "retry"
  max_retries = {retries}
}}
middlewares "auth" {{
  type       = "jwt"
  algorithms = ["RS256"]
  jwks_url   = "http://127.0.0.1:9/jwks"
}}
middlewares "shared" {{
  type      = "rate-limit-redis"
  rate      = 5
  redis_url = "redis://127.0.0.1:9"
}}
services "svc" {{
  load_balancer {{
    servers = [
      {{ url = "http://10.9.0.1:80" }},
      {{ url = "http://10.9.0.2:80" }},
      {{ url = "http://10.9.0.3:80" }},
      {{ url = "http://10.9.0.4:80", weight = 0 }},
    ]
  }}
  mirror {{
    service = "shadow"
  }}
}}
services "shadow" {{
  load_balancer {{
    servers = [{{ url = "http://10.9.0.9:80" }}]
  }}
}}
{extra}
"""

EXTRA_SERVICE = """
services "extra" {
  load_balancer {
    servers = [{ url = "http://10.9.1.1:80" }]
  }
}
"""

A, B, C, D = (f"http://10.9.0.{n}:80" for n in range(1, 5))


class _NoHttp:
    async def get(
        self, url: HttpUrl, headers: Headers, *, within: float, max_body: int
    ) -> HttpReply:
        raise OutboundFailed("no HTTP in these tests")


class _BrokenRedis:
    async def execute(self, *args: bytes | str | int, within: float) -> object:
        raise OutboundFailed("no Redis in these tests")


class _Redis:
    def client(self, url: RedisUrl) -> RedisClient:
        return _BrokenRedis()


DEPS = MiddlewareDeps(clock=lambda: 1_700_000_000.0, http=_NoHttp(), redis=_Redis())


def runtime(
    generation: int = 1,
    previous: RuntimeConfig | None = None,
    *,
    retries: int = 3,
    extra: str = "",
) -> RuntimeConfig:
    config = load_config_text(CONFIG.format(retries=retries, extra=extra))
    return compile_runtime(config, generation, previous, deps=DEPS)


@dataclass
class FakePool:
    stats_by_peer: dict[Peer, PeerStats] = field(default_factory=dict)

    def stats(self, peer: Peer) -> PeerStats:
        return self.stats_by_peer.get(peer, PeerStats())


@dataclass
class FakeContext:
    """The ``ServerContext`` attributes ``collect`` reads (the real one needs trio objects)."""

    active_requests: dict[str, int] = field(default_factory=dict)
    active_connections: dict[str, int] = field(default_factory=dict)
    http2_connections: dict[str, int] = field(default_factory=dict)
    rejected_connections: dict[tuple[str, str], int] = field(default_factory=dict)
    websockets: dict[str, int] = field(default_factory=dict)
    websocket_sessions: dict[str, int] = field(default_factory=lambda: {"r": 1})
    websocket_totals: dict[str, int] = field(default_factory=lambda: {"r": 3})
    sse_streams: dict[str, int] = field(default_factory=lambda: {"r": 0})
    streams: StreamStats = field(default_factory=lambda: _streams())
    pool: FakePool = field(default_factory=FakePool)


def _streams() -> StreamStats:
    """TCP and UDP counts with one of everything."""
    stats = StreamStats()
    stats.tcp_opened("db", "pg")
    stats.tcp_opened("db", "pg")
    stats.tcp_closed("db", "pg", 10, 20)
    stats.client_hello_error("db", "too_large")
    stats.udp_session_opened("dns")
    stats.udp_datagram("dns", "in", 40)
    stats.udp_dropped_one("dns", "max_sessions")
    return stats


def record(
    *,
    entrypoint: str = "web",
    router: str = "r",
    service: str = "svc",
    method: bytes = b"GET",
    status: int = 200,
    seconds: float = 0.02,
    request_bytes: int = 0,
    response_bytes: int = 0,
) -> ExchangeRecord:
    exchange = ExchangeRecord(entrypoint, 100.0)
    exchange.ended = 100.0 + seconds
    exchange.router = router
    exchange.service = service
    exchange.method = method
    exchange.status = status
    exchange.request_bytes = request_bytes
    exchange.response_bytes = response_bytes
    return exchange


def request_state(service: str = "svc") -> RequestState:
    return RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=[],
        authority=b"example.com",
        client_ip="192.0.2.1",
        peer_ip="192.0.2.1",
        tls=False,
        service=service,
    )


def scrape(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return values(metrics.render())


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


# ---------------------------------------------------------------------- the families table

#: SPEC §9.1's families that exist in this build: parsed family name → (type, label names).
FAMILIES = {
    "a3s_autoscaler_desired_replicas": ("gauge", {"service"}),
    "a3s_autoscaler_actual_replicas": ("gauge", {"service"}),
    "a3s_autoscaler_ready_backends": ("gauge", {"service"}),
    "a3s_autoscaler_panic": ("gauge", {"service"}),
    "a3s_autoscaler_observed_concurrency": ("gauge", {"service", "window"}),
    "a3s_autoscaler_executor_errors": ("counter", {"service"}),
    "a3s_scale_buffer_queued": ("gauge", {"service"}),
    "a3s_scale_buffer_results": ("counter", {"service", "result"}),
    "a3s_revision_traffic_percent": ("gauge", {"service", "revision"}),
    "a3s_rollout_state": ("gauge", {"service"}),
    "a3s_rollout_steps": ("counter", {"service", "result"}),
    "a3s_http_requests": ("counter", {"entrypoint", "router", "service", "method", "code"}),
    "a3s_http_request_duration_seconds": (
        "histogram",
        {"entrypoint", "router", "service", "code_class"},
    ),
    "a3s_http_request_bytes": ("counter", {"entrypoint", "router", "service"}),
    "a3s_http_response_bytes": ("counter", {"entrypoint", "router", "service"}),
    "a3s_http_requests_in_flight": ("gauge", {"entrypoint"}),
    "a3s_open_connections": ("gauge", {"entrypoint", "protocol"}),
    "a3s_websocket_sessions_active": ("gauge", {"router"}),
    "a3s_websocket_sessions": ("counter", {"router"}),
    "a3s_sse_streams_active": ("gauge", {"router"}),
    "a3s_tcp_connections_active": ("gauge", {"entrypoint", "router"}),
    "a3s_tcp_connections": ("counter", {"entrypoint", "router"}),
    "a3s_tcp_bytes": ("counter", {"entrypoint", "router", "direction"}),
    "a3s_tcp_client_hello_errors": ("counter", {"entrypoint", "reason"}),
    "a3s_udp_sessions_active": ("gauge", {"entrypoint"}),
    "a3s_udp_sessions": ("counter", {"entrypoint"}),
    "a3s_udp_datagrams": ("counter", {"entrypoint", "direction"}),
    "a3s_udp_bytes": ("counter", {"entrypoint", "direction"}),
    "a3s_udp_dropped": ("counter", {"entrypoint", "reason"}),
    "a3s_connections": ("counter", {"entrypoint"}),
    "a3s_connections_rejected": ("counter", {"entrypoint", "reason"}),
    "a3s_tls_handshake_errors": ("counter", {"entrypoint", "reason"}),
    "a3s_tls_reload_errors": ("counter", {"entrypoint"}),
    "a3s_http2_connection_errors": ("counter", {"entrypoint", "reason"}),
    "a3s_grpc_responses": ("counter", {"router", "service", "grpc_status"}),
    "a3s_tls_certificate_not_after_seconds": ("gauge", {"entrypoint", "name"}),
    "a3s_backend_requests": ("counter", {"service", "backend", "code"}),
    "a3s_upstream_response_seconds": ("histogram", {"service", "backend"}),
    "a3s_upstream_connect_errors": ("counter", {"service", "backend", "reason"}),
    "a3s_upstream_stale_retries": ("counter", {"service", "backend"}),
    "a3s_upstream_pool_connections": ("gauge", {"service", "backend", "state"}),
    "a3s_backend_in_flight": ("gauge", {"service", "backend"}),
    "a3s_backend_available": ("gauge", {"service", "backend"}),
    "a3s_backend_healthy": ("gauge", {"service", "backend"}),
    "a3s_backend_ejected": ("gauge", {"service", "backend"}),
    "a3s_service_available_backends": ("gauge", {"service"}),
    "a3s_health_checks": ("counter", {"service", "backend", "result"}),
    "a3s_passive_ejections": ("counter", {"service", "backend"}),
    "a3s_passive_ejections_skipped": ("counter", {"service", "backend"}),
    "a3s_failover_requests": ("counter", {"service", "reason"}),
    "a3s_lb_panic": ("counter", {"service"}),
    "a3s_mirror_requests": ("counter", {"service", "outcome"}),
    "a3s_middleware_requests": ("counter", {"middleware", "type", "outcome"}),
    "a3s_middleware_duration_seconds": ("histogram", {"middleware", "type"}),
    "a3s_rate_limit_keys": ("gauge", {"middleware"}),
    "a3s_rate_limit_redis_errors": ("counter", {"middleware"}),
    "a3s_circuit_breaker_state": ("gauge", {"middleware"}),
    "a3s_circuit_breaker_transitions": ("counter", {"middleware", "to"}),
    "a3s_retries": ("counter", {"middleware", "service"}),
    "a3s_retries_skipped": ("counter", {"middleware", "reason"}),
    "a3s_jwks_errors": ("counter", {"middleware"}),
    "a3s_config_generation": ("gauge", set()),
    "a3s_config_last_reload_timestamp_seconds": ("gauge", set()),
    "a3s_config_warnings": ("gauge", set()),
    "a3s_config_reloads": ("counter", {"result"}),
    "a3s_config_pending_references": ("gauge", set()),
    "a3s_provider_changes": ("counter", {"provider"}),
    "a3s_provider_errors": ("counter", {"provider"}),
    "a3s_acme_orders": ("counter", {"result"}),
    "a3s_acme_challenges_served": ("counter", {"type"}),
    "a3s_acme_certificate_not_after_seconds": ("gauge", {"domain"}),
    "a3s_access_log_dropped": ("counter", set()),
    "a3s_build_info": ("gauge", {"version", "python"}),
    "process_cpu_seconds": ("counter", set()),
    "process_resident_memory_bytes": ("gauge", set()),
    "process_virtual_memory_bytes": ("gauge", set()),
    "process_open_fds": ("gauge", set()),
    "process_max_fds": ("gauge", set()),
    "process_start_time_seconds": ("gauge", set()),
}


def _exercise(metrics: GatewayMetrics) -> None:
    """One call of every event, so that every labelled family has a sample."""
    metrics.observe_exchange(record())
    grpc_call = record()
    grpc_call.grpc_status = 14
    metrics.observe_exchange(grpc_call)
    metrics.http2_connection_error("web", "rapid_reset")
    metrics.observe_attempt("svc", A, 200, 0.01)
    metrics.connection_opened("web")
    metrics.connection_rejected("web", "max_connections")
    metrics.connect_error("svc", A, "refused")
    metrics.stale_retry("svc", A)
    metrics.failover("svc", "no_backend")
    metrics.lb_panic("svc")
    metrics.middleware_outcome("keys", "rate-limit", "pass", 0.0001)
    metrics.health_check("svc", A, "success")
    metrics.passive_ejection("svc", A, skipped=False)
    metrics.passive_ejection("svc", B, skipped=True)
    metrics.reload("ok")
    metrics.config_applied(wall=1_700_000_000.5, warnings=2)
    metrics.access_log_dropped(3)
    metrics.tls_handshake_error("web", "timeout")
    metrics.tls_reload_error("web")
    metrics.tls_certificates([("web", "site.test", 1_800_000_000.0)])
    stats = ScalingStats(
        autoscalers={"svc": AutoscalerStat(2, 1, 1, True, 3.5, 7.0)},
        executor_errors={"svc": 1},
        revisions={("svc", "v1"): 90},
        rollout_states={"svc": 0},
        rollout_steps={("svc", "advanced"): 2},
    )
    metrics.scaling.collect_control(stats)
    metrics.scaling.collect_buffers({("svc", "released"): 4}, {"svc": 1})
    metrics.providers({"dns": (3, 1)}, 2)
    metrics.acme({"success": 2, "ca_error": 1}, {"shop.example.com": 1.9e9})
    metrics.acme_challenge_served("http-01")


def test_every_spec_family_has_its_type_labels_help_and_type_lines() -> None:
    metrics = GatewayMetrics(True, version="9.9.9")
    current = runtime()
    rate_limit = current.middlewares["keys"]
    assert isinstance(rate_limit, RateLimitMiddleware)
    rate_limit.table.take(b"k", 0.0)
    retry = current.middlewares["rt"]
    assert isinstance(retry, RetryMiddleware)
    retry.begin_retry("svc", "reset")
    retry.skip("budget")
    _exercise(metrics)
    sample_of_process = ProcessSample(1.5, 4096, 8192, 1000.0, 7, 1024)
    metrics.collect(current, FakeContext(), process=sample_of_process)
    exposition = metrics.render()
    text = exposition.decode()
    parsed = families(exposition)
    assert set(parsed) == set(FAMILIES)
    for name, (kind, label_names) in FAMILIES.items():
        parsed_kind, help_text, samples = parsed[name]
        assert parsed_kind == kind, name
        assert help_text, name
        assert samples, f"{name} has no sample"
        for sample_ in samples:
            assert set(sample_.labels) - {"le"} == label_names, (name, sample_.labels)
        full = f"{name}_total" if kind == "counter" else name
        assert f"# HELP {full} " in text
        assert f"# TYPE {full} {kind}\n" in text


def test_build_info_and_default_version() -> None:
    scraped = scrape(GatewayMetrics(True))
    python = f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    from a3s_gateway import __version__

    assert scraped["a3s_build_info", labels(version=__version__, python=python)] == 1


# ------------------------------------------------------------------------------ exchanges


@pytest.mark.parametrize(
    ("method", "label"),
    [
        (b"GET", "GET"),
        (b"HEAD", "HEAD"),
        (b"POST", "POST"),
        (b"PUT", "PUT"),
        (b"DELETE", "DELETE"),
        (b"CONNECT", "CONNECT"),
        (b"OPTIONS", "OPTIONS"),
        (b"TRACE", "TRACE"),
        (b"PATCH", "PATCH"),
        (b"get", "OTHER"),
        (b"PURGE", "OTHER"),
        (b"", "OTHER"),
        (b"\xff\x00", "OTHER"),
    ],
)
def test_methods_are_the_nine_standard_or_other(method: bytes, label: str) -> None:
    assert normalise_method(method) == label


def test_observe_exchange_counts_requests_bytes_and_durations() -> None:
    metrics = GatewayMetrics(True)
    metrics.observe_exchange(record(status=200, seconds=0.003, response_bytes=42))
    metrics.observe_exchange(record(status=200, seconds=0.2, request_bytes=10, response_bytes=8))
    metrics.observe_exchange(record(method=b"get", status=201, seconds=0.0))
    metrics.observe_exchange(record(method=b"POST", status=503, seconds=75.0))
    metrics.observe_exchange(record(router="", service="", status=404, seconds=0.0001))
    metrics.observe_exchange(record(entrypoint="admin", status=0, seconds=1.0))
    scraped = scrape(metrics)
    route = {"entrypoint": "web", "router": "r", "service": "svc"}
    requests = "a3s_http_requests_total"
    assert scraped[requests, labels(**route, method="GET", code="200")] == 2
    assert scraped[requests, labels(**route, method="OTHER", code="201")] == 1
    assert scraped[requests, labels(**route, method="POST", code="503")] == 1
    unmatched = {"entrypoint": "web", "router": "", "service": ""}
    assert scraped[requests, labels(**unmatched, method="GET", code="404")] == 1
    gone = {"entrypoint": "admin", "router": "r", "service": "svc"}
    assert scraped[requests, labels(**gone, method="GET", code="0")] == 1
    assert scraped["a3s_http_request_bytes_total", labels(**route)] == 10
    assert scraped["a3s_http_response_bytes_total", labels(**route)] == 50
    duration = "a3s_http_request_duration_seconds"
    ok = labels(**route, code_class="2xx")
    assert scraped[f"{duration}_count", ok] == 3
    assert scraped[f"{duration}_sum", ok] == pytest.approx(0.203)
    assert scraped[f"{duration}_bucket", labels(**route, code_class="2xx", le="0.001")] == 1
    assert scraped[f"{duration}_bucket", labels(**route, code_class="2xx", le="0.005")] == 2
    assert scraped[f"{duration}_bucket", labels(**route, code_class="2xx", le="0.25")] == 3
    assert scraped[f"{duration}_bucket", labels(**route, code_class="5xx", le="60")] == 0
    assert scraped[f"{duration}_bucket", labels(**route, code_class="5xx", le="+Inf")] == 1
    assert scraped[f"{duration}_count", labels(**unmatched, code_class="4xx")] == 1
    assert scraped[f"{duration}_count", labels(**gone, code_class="0xx")] == 1


def test_a_negative_clock_difference_counts_as_zero_seconds() -> None:
    metrics = GatewayMetrics(True)
    metrics.observe_exchange(record(seconds=-5.0))
    child = metrics.duration.labels("web", "r", "svc", "2xx")
    assert child.counts[0] == 1
    assert child.sum == 0.0


def test_observe_attempt_counts_backend_codes_and_upstream_time() -> None:
    metrics = GatewayMetrics(True)
    metrics.observe_attempt("svc", A, 200, 0.004)
    metrics.observe_attempt("svc", A, 200, 0.5)
    metrics.observe_attempt("svc", A, 502, None)  # connect failure: no response head
    metrics.observe_attempt("svc", B, 504, None)
    scraped = scrape(metrics)
    assert scraped["a3s_backend_requests_total", labels(service="svc", backend=A, code="200")] == 2
    assert scraped["a3s_backend_requests_total", labels(service="svc", backend=A, code="502")] == 1
    assert scraped["a3s_backend_requests_total", labels(service="svc", backend=B, code="504")] == 1
    upstream = metrics.upstream_response.children
    assert upstream["svc", A].count == 2
    assert upstream["svc", A].sum == pytest.approx(0.504)
    assert upstream["svc", B].count == 0  # the label set exists, with no observation


def test_event_methods() -> None:
    metrics = GatewayMetrics(True)
    _exercise(metrics)
    metrics.connection_opened("web")
    metrics.access_log_dropped(0)
    metrics.reload("error")
    scraped = scrape(metrics)
    assert scraped["a3s_connections_total", labels(entrypoint="web")] == 2
    rejected = labels(entrypoint="web", reason="max_connections")
    assert scraped["a3s_connections_rejected_total", rejected] == 1
    connect = labels(service="svc", backend=A, reason="refused")
    assert scraped["a3s_upstream_connect_errors_total", connect] == 1
    assert scraped["a3s_upstream_stale_retries_total", labels(service="svc", backend=A)] == 1
    failover = labels(service="svc", reason="no_backend")
    assert scraped["a3s_failover_requests_total", failover] == 1
    assert scraped["a3s_lb_panic_total", labels(service="svc")] == 1
    outcome = labels(middleware="keys", type="rate-limit", outcome="pass")
    assert scraped["a3s_middleware_requests_total", outcome] == 1
    timing = labels(middleware="keys", type="rate-limit")
    assert scraped["a3s_middleware_duration_seconds_count", timing] == 1
    probe = labels(service="svc", backend=A, result="success")
    assert scraped["a3s_health_checks_total", probe] == 1
    assert scraped["a3s_passive_ejections_total", labels(service="svc", backend=A)] == 1
    assert ("a3s_passive_ejections_total", labels(service="svc", backend=B)) not in scraped
    skipped = labels(service="svc", backend=B)
    assert scraped["a3s_passive_ejections_skipped_total", skipped] == 1
    assert scraped["a3s_config_reloads_total", labels(result="ok")] == 1
    assert scraped["a3s_config_reloads_total", labels(result="error")] == 1
    assert scraped["a3s_config_last_reload_timestamp_seconds", ()] == 1_700_000_000.5
    assert scraped["a3s_config_warnings", ()] == 2
    assert scraped["a3s_access_log_dropped_total", ()] == 3


def test_disabled_metrics_record_nothing() -> None:
    metrics = GatewayMetrics(False)
    before = metrics.render()
    _exercise(metrics)
    current = runtime()
    metrics.collect(current, FakeContext(active_requests={"web": 4}))
    metrics.retire_generation(current, runtime(2, current, retries=2))
    assert metrics.render() == before
    assert all(
        child.value == 0
        for family in (metrics.requests, metrics.connections, metrics.config_reloads)
        for child in family.children.values()
    )


# --------------------------------------------------------------------------- collect()


async def test_collect_reads_backends_pool_middlewares_and_mirrors() -> None:
    metrics = GatewayMetrics(True)
    current = runtime(generation=4)
    svc = current.services["svc"]
    a, b, c, _ = svc.backends
    b.active_healthy = False
    c.passive_ejected = True
    lease = a.lease()
    a.lease()
    pool = FakePool({svc.peers[0]: PeerStats(idle=3, busy=2, connecting=1)})
    ctx = FakeContext(
        active_requests={"web": 5},
        active_connections={"web": 7, "admin": 1},
        http2_connections={"web": 2},
        rejected_connections={("web", "ip_not_allowed"): 4},
        websockets={"web": 1},
        websocket_sessions={"chat": 1, "old": 0},
        websocket_totals={"chat": 6, "old": 2},
        sse_streams={"feed": 2},
        pool=pool,
    )
    rate_limit = current.middlewares["keys"]
    assert isinstance(rate_limit, RateLimitMiddleware)
    for key in (b"a", b"b", b"c"):
        rate_limit.table.take(key, 0.0)
    breaker = current.middlewares["cb"]
    assert isinstance(breaker, CircuitBreakerMiddleware)
    state = request_state()
    assert await breaker.request(state) is None
    breaker.completed(state, 500)  # failure_threshold = 1: open
    retry = current.middlewares["rt"]
    assert isinstance(retry, RetryMiddleware)
    assert retry.begin_retry("svc", "reset")
    assert retry.begin_retry("svc", "timeout")
    assert retry.begin_retry("other", "reset")
    retry.skip("budget")
    redis = current.middlewares["shared"]
    assert isinstance(redis, RedisRateLimitMiddleware)
    assert await redis.request(request_state()) is None  # Redis fails, fail-open
    jwt = current.middlewares["auth"]
    assert isinstance(jwt, JwtMiddleware)
    assert jwt.jwks is not None
    jwt.jwks.errors += 2  # as two failed JWKS fetches would (tests/middleware/test_jwks.py)
    mirror = svc.mirror
    assert mirror is not None
    mirror.count("sent")
    mirror.count("sent")
    mirror.count("timeout")

    metrics.collect(current, ctx)
    scraped = scrape(metrics)

    assert scraped["a3s_config_generation", ()] == 4
    assert scraped["a3s_http_requests_in_flight", labels(entrypoint="web")] == 5
    assert scraped["a3s_http_requests_in_flight", labels(entrypoint="admin")] == 0
    # 7 open on web, 2 of them HTTP/2 and 1 a WebSocket session
    assert scraped["a3s_open_connections", labels(entrypoint="web", protocol="http1")] == 4
    assert scraped["a3s_open_connections", labels(entrypoint="web", protocol="http2")] == 2
    assert scraped["a3s_open_connections", labels(entrypoint="web", protocol="websocket")] == 1
    assert scraped["a3s_websocket_sessions_active", labels(router="chat")] == 1
    assert scraped["a3s_websocket_sessions_active", labels(router="old")] == 0
    assert scraped["a3s_websocket_sessions_total", labels(router="chat")] == 6
    assert scraped["a3s_sse_streams_active", labels(router="feed")] == 2
    assert scraped["a3s_open_connections", labels(entrypoint="admin", protocol="http1")] == 1
    assert scraped["a3s_open_connections", labels(entrypoint="admin", protocol="http2")] == 0
    rejected = labels(entrypoint="web", reason="ip_not_allowed")
    assert scraped["a3s_connections_rejected_total", rejected] == 4
    expected = {  # backend: (in flight, available, healthy, ejected)
        A: (2, 1, 1, 0),
        B: (0, 0, 0, 0),
        C: (0, 0, 1, 1),
        D: (0, 0, 1, 0),  # weight 0: drained
    }
    for url, (in_flight, available, healthy, ejected) in expected.items():
        backend = labels(service="svc", backend=url)
        assert scraped["a3s_backend_in_flight", backend] == in_flight, url
        assert scraped["a3s_backend_available", backend] == available, url
        assert scraped["a3s_backend_healthy", backend] == healthy, url
        assert scraped["a3s_backend_ejected", backend] == ejected, url
    assert scraped["a3s_service_available_backends", labels(service="svc")] == 1
    assert scraped["a3s_service_available_backends", labels(service="shadow")] == 1
    pooled = "a3s_upstream_pool_connections"
    assert scraped[pooled, labels(service="svc", backend=A, state="idle")] == 3
    assert scraped[pooled, labels(service="svc", backend=A, state="active")] == 2
    assert scraped[pooled, labels(service="svc", backend=B, state="idle")] == 0
    assert scraped["a3s_rate_limit_keys", labels(middleware="keys")] == 3
    assert scraped["a3s_circuit_breaker_state", labels(middleware="cb")] == 1
    transitions = "a3s_circuit_breaker_transitions_total"
    assert scraped[transitions, labels(middleware="cb", to="open")] == 1
    assert scraped[transitions, labels(middleware="cb", to="closed")] == 0
    assert scraped[transitions, labels(middleware="cb", to="half_open")] == 0
    assert scraped["a3s_retries_total", labels(middleware="rt", service="svc")] == 2
    assert scraped["a3s_retries_total", labels(middleware="rt", service="other")] == 1
    assert scraped["a3s_retries_skipped_total", labels(middleware="rt", reason="budget")] == 1
    assert scraped["a3s_rate_limit_redis_errors_total", labels(middleware="shared")] == 1
    assert scraped["a3s_jwks_errors_total", labels(middleware="auth")] == 2
    mirrored = "a3s_mirror_requests_total"
    assert scraped[mirrored, labels(service="svc", outcome="sent")] == 2
    assert scraped[mirrored, labels(service="svc", outcome="timeout")] == 1
    assert scraped[mirrored, labels(service="svc", outcome="saturated")] == 0

    # live state moves: gauges follow it at the next scrape
    lease.release()
    b.active_healthy = True
    metrics.collect(current, FakeContext(active_requests={"web": 0}))
    scraped = scrape(metrics)
    assert scraped["a3s_backend_in_flight", labels(service="svc", backend=A)] == 1
    assert scraped["a3s_backend_available", labels(service="svc", backend=B)] == 1
    assert scraped["a3s_service_available_backends", labels(service="svc")] == 2
    assert scraped["a3s_http_requests_in_flight", labels(entrypoint="web")] == 0
    # the pool emptied; the rejected count of the context is lower now: counters stay
    assert scraped[pooled, labels(service="svc", backend=A, state="idle")] == 0
    assert scraped["a3s_connections_rejected_total", rejected] == 4


def test_collect_reads_the_real_server_context_and_pool() -> None:
    current = runtime()
    ctx = ServerContext(current, UpstreamPool())
    ctx.active_requests["web"] = 2
    ctx.active_connections["web"] = 3
    ctx.rejected_connections["web", "ip_not_allowed"] = 1
    view: MetricsContext = ctx  # the Protocol is what ServerContext offers (checked by mypy)
    metrics = GatewayMetrics(True)
    metrics.collect(current, view)
    scraped = scrape(metrics)
    assert scraped["a3s_http_requests_in_flight", labels(entrypoint="web")] == 2
    assert scraped["a3s_open_connections", labels(entrypoint="web", protocol="http1")] == 3
    rejected = labels(entrypoint="web", reason="ip_not_allowed")
    assert scraped["a3s_connections_rejected_total", rejected] == 1
    idle = labels(service="svc", backend=A, state="idle")
    assert scraped["a3s_upstream_pool_connections", idle] == 0


def test_rejections_counted_by_both_paths_are_not_counted_twice() -> None:
    metrics = GatewayMetrics(True)
    metrics.connection_rejected("web", "max_connections")
    metrics.connection_rejected("web", "max_connections")
    metrics.collect(runtime(), FakeContext(rejected_connections={("web", "max_connections"): 2}))
    key = labels(entrypoint="web", reason="max_connections")
    assert scrape(metrics)["a3s_connections_rejected_total", key] == 2


def test_gauges_of_removed_objects_go_and_counters_stay() -> None:
    metrics = GatewayMetrics(True)
    first = runtime(1, extra=EXTRA_SERVICE)
    metrics.observe_attempt("extra", "http://10.9.1.1:80", 200, 0.01)
    ctx = FakeContext(active_requests={"web": 1, "gone": 2}, active_connections={"gone": 0})
    metrics.collect(first, ctx)
    scraped = scrape(metrics)
    extra = labels(service="extra", backend="http://10.9.1.1:80")
    assert scraped["a3s_backend_in_flight", extra] == 0
    assert scraped["a3s_service_available_backends", labels(service="extra")] == 1
    assert scraped["a3s_http_requests_in_flight", labels(entrypoint="gone")] == 2
    assert ("a3s_open_connections", labels(entrypoint="gone", protocol="http1")) not in scraped

    second = runtime(2, first)  # "extra" removed
    metrics.retire_generation(first, second)
    metrics.collect(second, FakeContext())
    scraped = scrape(metrics)
    for family in ("in_flight", "available", "healthy", "ejected"):
        assert (f"a3s_backend_{family}", extra) not in scraped
    assert ("a3s_service_available_backends", labels(service="extra")) not in scraped
    for state in ("idle", "active"):
        pooled = labels(service="extra", backend="http://10.9.1.1:80", state=state)
        assert ("a3s_upstream_pool_connections", pooled) not in scraped
    assert ("a3s_http_requests_in_flight", labels(entrypoint="gone")) not in scraped
    code = labels(service="extra", backend="http://10.9.1.1:80", code="200")
    assert scraped["a3s_backend_requests_total", code] == 1


def test_removed_middlewares_lose_their_gauges() -> None:
    metrics = GatewayMetrics(True)
    first = runtime(1)
    metrics.collect(first, FakeContext())
    text = metrics.render().decode()
    assert 'a3s_rate_limit_keys{middleware="keys"}' in text
    config = load_config_text(CONFIG.format(retries=3, extra="").replace('"keys", "cb", ', ""))
    second = compile_runtime(config, 2, first, deps=DEPS)
    assert "keys" not in second.middlewares
    metrics.retire_generation(first, second)
    metrics.collect(second, FakeContext())
    text = metrics.render().decode()
    assert 'a3s_rate_limit_keys{middleware="keys"}' not in text
    assert 'a3s_circuit_breaker_state{middleware="cb"}' not in text
    assert 'a3s_circuit_breaker_transitions_total{middleware="cb",to="open"} 0' in text


def _retry(current: RuntimeConfig) -> RetryMiddleware:
    instance = current.middlewares["rt"]
    assert isinstance(instance, RetryMiddleware)
    return instance


def retried(current: RuntimeConfig, service: str = "svc") -> None:
    """One retry started and finished on ``current``'s retry instance (within its budget)."""
    instance = _retry(current)
    assert instance.begin_retry(service, "reset")
    instance.end_retry()


def test_instance_counters_carry_across_reloads() -> None:
    metrics = GatewayMetrics(True)
    retries = labels(middleware="rt", service="svc")
    mirrored = labels(service="svc", outcome="sent")

    first = runtime(1)
    for _ in range(3):
        retried(first)
    assert first.services["svc"].mirror is not None
    first.services["svc"].mirror.count("sent")
    metrics.collect(first, FakeContext())
    assert scrape(metrics)["a3s_retries_total", retries] == 3

    # the definition changed: a new instance, which starts at zero; the mirror is rebuilt too
    second = runtime(2, first, retries=4)
    assert _retry(second) is not _retry(first)
    assert second.services["svc"].mirror is not first.services["svc"].mirror
    metrics.retire_generation(first, second)
    retried(second)
    # a request still running on the first generation retries after the swap
    retried(first)
    first.services["svc"].mirror.count("sent")
    metrics.collect(second, FakeContext())
    scraped = scrape(metrics)
    assert scraped["a3s_retries_total", retries] == 5
    assert scraped["a3s_mirror_requests_total", mirrored] == 2

    # unchanged definition: the instance is kept, nothing is retired or counted twice
    third = runtime(3, second, retries=4)
    assert _retry(third) is _retry(second)
    metrics.retire_generation(second, third)
    metrics.collect(third, FakeContext())
    scraped = scrape(metrics)
    assert scraped["a3s_retries_total", retries] == 5
    assert scraped["a3s_mirror_requests_total", mirrored] == 2

    # the first generation was folded at this reload: later counts on it are no longer read,
    # but nothing goes down
    retried(first)
    fourth = runtime(4, third, retries=5)
    metrics.retire_generation(third, fourth)
    metrics.collect(fourth, FakeContext())
    scraped = scrape(metrics)
    assert scraped["a3s_retries_total", retries] == 5
    retried(fourth)
    metrics.collect(fourth, FakeContext())
    assert scrape(metrics)["a3s_retries_total", retries] == 6


def test_retire_of_an_instance_still_live_is_not_counted_twice() -> None:
    metrics = GatewayMetrics(True)
    current = runtime(1)
    retried(current)
    metrics.retire([_retry(current)])  # a caller's mistake: it is still in use
    metrics.collect(current, FakeContext())
    assert scrape(metrics)["a3s_retries_total", labels(middleware="rt", service="svc")] == 1


# ----------------------------------------------------------------------------- workers


def test_supervisor_merges_worker_snapshots() -> None:
    supervisor = GatewayMetrics(True)
    supervisor.config_applied(wall=1_800_000_000.0, warnings=1)
    supervisor.collect(runtime(9), FakeContext())
    workers = []
    for in_flight in (2, 3):
        worker = GatewayMetrics(True)
        current = runtime(8)
        current.services["svc"].backends[0].in_flight = in_flight
        worker.observe_exchange(record())
        worker.observe_attempt("svc", A, 200, 0.01)
        worker.config_applied(wall=1_700_000_000.0, warnings=5)
        worker.collect(current, FakeContext(active_requests={"web": in_flight}))
        workers.append(worker.snapshot())
    merged = values(render(merge(workers, own=supervisor.freeze())))
    route = labels(entrypoint="web", router="r", service="svc", method="GET", code="200")
    assert merged["a3s_http_requests_total", route] == 2
    assert merged["a3s_http_requests_in_flight", labels(entrypoint="web")] == 5
    assert merged["a3s_backend_in_flight", labels(service="svc", backend=A)] == 5
    assert merged["a3s_backend_available", labels(service="svc", backend=A)] == 1
    # MAX over the processes, not a sum: three of the four backends (one has weight 0)
    assert merged["a3s_service_available_backends", labels(service="svc")] == 3
    count = labels(service="svc", backend=A)
    assert merged["a3s_upstream_response_seconds_count", count] == 2
    assert merged["a3s_config_generation", ()] == 9
    assert merged["a3s_config_warnings", ()] == 1
    assert merged["a3s_config_last_reload_timestamp_seconds", ()] == 1_800_000_000.0
    assert sum(v for (name, _), v in merged.items() if name == "a3s_build_info") == 1


# ------------------------------------------------------------------------------ process

STAT = (
    "4242 (a3s (gw) x) S 1 4242 4242 0 -1 4194560 1500 0 0 0 "
    "250 50 0 0 20 0 3 0 12000 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 "
    "16781312 16386 0 0 0 17 1 0 0 0 0 0\n"
)


def test_parse_stat_counts_from_the_last_parenthesis() -> None:
    fields = parse_stat(STAT, ticks_per_second=100, page_size=4096)
    assert fields is not None
    assert fields.cpu_seconds == 3.0
    assert fields.started_after_boot == 120.0
    assert fields.virtual_bytes == 104857600
    assert fields.resident_bytes == 2560 * 4096


@pytest.mark.parametrize("text", ["", "no parenthesis 1 2 3", "1 (x) S 1 2", "1 (x) " + "z " * 30])
def test_parse_stat_refuses_what_it_cannot_read(text: str) -> None:
    assert parse_stat(text, ticks_per_second=100, page_size=4096) is None


def test_parse_limits_and_boot_time() -> None:
    limits = (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        "Max open files            1024                 524288               files     \n"
    )
    assert parse_max_fds(limits) == 1024
    assert parse_max_fds(limits.replace("1024 ", "unlimited ")) is None
    assert parse_max_fds("") is None
    assert parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n") == 1_700_000_000.0
    assert parse_boot_time("cpu 1\n") is None
    assert parse_boot_time("btime soon\n") is None


def test_sample_combines_the_pieces() -> None:
    combined = sample(
        STAT, ticks_per_second=100, page_size=4096, boot_time=1e9, open_fds=9, max_fds=None
    )
    assert combined == ProcessSample(3.0, 2560 * 4096, 104857600, 1e9 + 120, 9, None)
    assert sample("", ticks_per_second=100, page_size=1, boot_time=None, open_fds=None,
                  max_fds=None) is None  # fmt: skip


def test_read_process_from_a_fake_proc(tmp_path: Path) -> None:
    (tmp_path / "self" / "fd").mkdir(parents=True)
    for n in range(4):
        (tmp_path / "self" / "fd" / str(n)).touch()
    (tmp_path / "self" / "stat").write_text(STAT)
    (tmp_path / "self" / "limits").write_text("Max open files  4096  8192  files\n")
    (tmp_path / "stat").write_text("btime 1000\n")
    reading = read_process(tmp_path)
    ticks = os.sysconf("SC_CLK_TCK")
    assert reading == ProcessSample(
        cpu_seconds=300 / ticks,
        resident_bytes=2560 * os.sysconf("SC_PAGE_SIZE"),
        virtual_bytes=104857600,
        start_time=1000 + 12000 / ticks,
        open_fds=4,
        max_fds=4096,
    )
    assert read_process(tmp_path / "missing") is None


def test_read_process_of_this_process() -> None:
    if not Path("/proc/self/stat").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("/proc is needed for the process_* metrics test (Linux)")
        pytest.skip("no /proc on this system")
    reading = read_process()
    assert reading is not None
    assert reading.resident_bytes > 1 << 20
    assert reading.virtual_bytes >= reading.resident_bytes
    assert reading.cpu_seconds > 0
    assert reading.open_fds is not None
    assert reading.open_fds >= 3
    assert reading.start_time is not None
    assert 1.6e9 < reading.start_time < 4e9
    metrics = GatewayMetrics(True)
    metrics.collect(runtime(), FakeContext(), process=reading)
    scraped = scrape(metrics)
    assert scraped["process_resident_memory_bytes", ()] == reading.resident_bytes
    assert scraped["process_cpu_seconds_total", ()] == reading.cpu_seconds
    assert not math.isnan(scraped["process_start_time_seconds", ()])


def test_process_cpu_never_goes_back() -> None:
    metrics = GatewayMetrics(True)
    current = runtime()
    metrics.collect(current, FakeContext(), process=ProcessSample(5.0, 1, 1, None, None, None))
    metrics.collect(current, FakeContext(), process=ProcessSample(4.0, 1, 1, None, None, None))
    assert scrape(metrics)["process_cpu_seconds_total", ()] == 5.0


def test_default_buckets_on_gateway_histograms() -> None:
    metrics = GatewayMetrics(True)
    for family in (metrics.duration, metrics.upstream_response, metrics.middleware_duration):
        assert family.buckets == DEFAULT_BUCKETS


# ------------------------------------------------------- prepared cells, issue #16 item 4 and 6


def test_prepare_creates_the_cells_of_every_configured_route_and_backend() -> None:
    metrics = GatewayMetrics(True)
    current = runtime()
    metrics.config_applied(wall=1.0, warnings=0, runtime=current)
    scraped = scrape(metrics)
    for entrypoint in ("web", "admin"):  # the router has no entrypoints: it is on every one
        route = labels(entrypoint=entrypoint, router="r", service="svc")
        assert scraped["a3s_http_request_bytes_total", route] == 0
        assert scraped["a3s_http_response_bytes_total", route] == 0
    for url in ("http://10.9.0.1:80", "http://10.9.0.4:80", "http://10.9.0.9:80"):
        service = "shadow" if url.endswith(".9:80") else "svc"
        backend = labels(service=service, backend=url)
        assert scraped["a3s_upstream_response_seconds_count", backend] == 0
    # the hot path finds the prepared cells: nothing new is declared by traffic
    before = {name: len(f.children) for name, f in metrics.registry.families.items()}
    metrics.observe_exchange(record(entrypoint="admin", response_bytes=7))
    metrics.observe_attempt("svc", "http://10.9.0.1:80", 200, 0.01)
    after = {name: len(f.children) for name, f in metrics.registry.families.items()}
    grown = {name for name in after if after[name] != before[name]}
    assert grown == {
        "a3s_http_requests_total",  # a (method, code) label set: not known ahead
        "a3s_http_request_duration_seconds",  # its status class
        "a3s_backend_requests_total",  # its code
    }
    route = labels(entrypoint="admin", router="r", service="svc")
    assert scrape(metrics)["a3s_http_response_bytes_total", route] == 7


def test_a_router_whose_service_changes_gets_new_cells_and_the_old_ones_stay() -> None:
    metrics = GatewayMetrics(True)
    metrics.observe_exchange(record(service="svc"))
    metrics.observe_exchange(record(service="shadow"))
    metrics.observe_exchange(record(service="svc", response_bytes=3))
    scraped = scrape(metrics)
    for service, sent, count in (("svc", 3, 2), ("shadow", 0, 1)):
        route = labels(entrypoint="web", router="r", service=service)
        assert scraped["a3s_http_response_bytes_total", route] == sent
        requests = labels(entrypoint="web", router="r", service=service, method="GET", code="200")
        assert scraped["a3s_http_requests_total", requests] == count


def test_requests_by_backend_sums_the_codes_and_lists_prepared_backends() -> None:
    metrics = GatewayMetrics(True)
    metrics.prepare(runtime())
    for status in (200, 200, 502, 404):
        metrics.observe_attempt("svc", "http://10.9.0.2:80", status, None)
    metrics.observe_attempt("elsewhere", "http://10.0.0.1:1", 200, 0.1)
    counts = metrics.requests_by_backend()
    assert counts["svc", "http://10.9.0.2:80"] == 4
    assert counts["svc", "http://10.9.0.1:80"] == 0
    assert counts["shadow", "http://10.9.0.9:80"] == 0
    assert counts["elsewhere", "http://10.0.0.1:1"] == 1
    assert GatewayMetrics(False).requests_by_backend() == {}


WARNED = """
entrypoints "web" {
  address = "127.0.0.1:0"
}
routers "main" {
  rule    = "PathPrefix(`/`)"
  service = "main"
}
middlewares "open-cors" {
  type              = "cors"
  allowed_origins   = ["*"]
  allow_credentials = true
}
middlewares "limit" {
  type = "rate-limit"
  rate = 100
}
services "main" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:1" }]
  }
}
"""


def test_semantic_warnings_counts_the_warnings_of_the_config() -> None:
    config = load_config_text(WARNED)
    assert semantic_warnings(config) == 1  # allow_credentials with origin "*"
    assert semantic_warnings(config, workers=2) == 2  # and the rate limit is per worker
    public = load_config_text(
        WARNED + 'management {\n  address = "0.0.0.0:9900"\n  auth_token_env = "T_TOKEN"\n}\n'
    )
    assert semantic_warnings(public) == 2  # no token set: anyone on the network may call it
    assert semantic_warnings(public, environ={"T_TOKEN": "secret"}) == 1
    assert semantic_warnings(load_config_text(CONFIG.format(retries=1, extra=""))) == 0


def test_config_applied_sets_the_warnings_gauge() -> None:
    metrics = GatewayMetrics(True)
    metrics.config_applied(wall=5.0, warnings=semantic_warnings(load_config_text(WARNED)))
    scraped = scrape(metrics)
    assert scraped["a3s_config_warnings", ()] == 1
    assert scraped["a3s_config_last_reload_timestamp_seconds", ()] == 5


PASSIVE = """
entrypoints "web" {
  address = "127.0.0.1:0"
}
routers "main" {
  rule    = "PathPrefix(`/`)"
  service = "pair"
}
services "pair" {
  load_balancer {
    servers = [{ url = "http://10.8.0.1:80" }, { url = "http://10.8.0.2:80" }]
    passive_health {
      error_threshold      = 1
      max_ejection_percent = 50
    }
  }
}
"""


@dataclass
class _Exchange:
    """What ``recording.outcome`` reads of an exchange."""

    ctx: ServerContext
    record: ExchangeRecord
    grpc: bool = False


async def test_an_ejection_refused_by_max_ejection_percent_is_counted_skipped() -> None:
    current = compile_runtime(load_config_text(PASSIVE), 1)
    ctx = ServerContext(current, UpstreamPool())
    ctx.metrics = metrics = GatewayMetrics(True)
    service = current.services["pair"]
    first, second = service.backends
    exchange = _Exchange(ctx, ExchangeRecord("web", 0.0))
    # an error each: the first backend is ejected, the second may not be (50 % of 2 are out)
    outcome(exchange, service, first, 502)  # type: ignore[arg-type]  # the fields it reads
    outcome(exchange, service, second, 502)  # type: ignore[arg-type]  # the fields it reads
    outcome(exchange, service, second, 503)  # type: ignore[arg-type]  # the fields it reads
    assert first.passive_ejected
    assert not second.passive_ejected
    scraped = scrape(metrics)
    one, two = (labels(service="pair", backend=b.url.text) for b in (first, second))
    assert scraped["a3s_passive_ejections_total", one] == 1
    assert scraped["a3s_passive_ejections_skipped_total", two] == 2
    assert ("a3s_passive_ejections_skipped_total", one) not in scraped
    assert ("a3s_passive_ejections_total", two) not in scraped


def test_tcp_and_udp_counts_become_their_families() -> None:
    metrics = GatewayMetrics(True)
    metrics.collect(runtime(), FakeContext(streams=_streams()))
    scraped = scrape(metrics)
    pg = labels(entrypoint="db", router="pg")
    assert scraped["a3s_tcp_connections_active", pg] == 1
    assert scraped["a3s_tcp_connections_total", pg] == 2
    assert (
        scraped["a3s_tcp_bytes_total", labels(entrypoint="db", router="pg", direction="in")] == 10
    )
    out = labels(entrypoint="db", router="pg", direction="out")
    assert scraped["a3s_tcp_bytes_total", out] == 20
    hello = labels(entrypoint="db", reason="too_large")
    assert scraped["a3s_tcp_client_hello_errors_total", hello] == 1
    assert scraped["a3s_udp_sessions_active", labels(entrypoint="dns")] == 1
    assert scraped["a3s_udp_sessions_total", labels(entrypoint="dns")] == 1
    inbound = labels(entrypoint="dns", direction="in")
    assert scraped["a3s_udp_datagrams_total", inbound] == 1
    assert scraped["a3s_udp_bytes_total", inbound] == 40
    dropped = labels(entrypoint="dns", reason="max_sessions")
    assert scraped["a3s_udp_dropped_total", dropped] == 1
