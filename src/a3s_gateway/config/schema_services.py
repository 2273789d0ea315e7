"""Schema of ``services "<name>"`` (SPEC §3.10): pools, health, sticky, mirror, failover,
scaling, revisions, rollout and WebSocket multiplexing.

Ring 0: type definitions only. Must not: perform cross-field checks (``semantic.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

import msgspec

from a3s_gateway.config.block import (
    Block,
    HeaderName,
    NonNegativeInt,
    Percent,
    Port,
    PositiveInt,
    StatusCode,
)
from a3s_gateway.config.values import (
    COOKIE_NAME_PATTERN,
    DNS_LABEL_PATTERN,
    KEY_EXPRESSION_PATTERN,
    Duration,
    DurationOrZero,
    HttpUrl,
    ServerUrl,
)

Strategy = Literal[
    "round-robin", "weighted", "least-connections", "random", "p2c", "consistent-hash"
]
KeyExpression: TypeAlias = Annotated[str, msgspec.Meta(pattern=KEY_EXPRESSION_PATTERN)]
DnsLabel: TypeAlias = Annotated[str, msgspec.Meta(pattern=DNS_LABEL_PATTERN)]


class Server(Block, frozen=True, kw_only=True):
    """One backend: ``{ url = "...", weight = 1 }``."""

    url: ServerUrl
    weight: NonNegativeInt = 1


class HealthCheck(Block, frozen=True, kw_only=True):
    """``health_check {}``: active probes (SPEC §7.4)."""

    type: Literal["http", "tcp"] | None = None
    path: str | None = None
    method: Literal["GET", "HEAD"] = "GET"
    interval: Duration = Duration("10s")
    timeout: Duration = Duration("5s")
    unhealthy_threshold: PositiveInt = 3
    healthy_threshold: PositiveInt = 1
    expected_status: str = "200-299"
    headers: dict[HeaderName, str] = {}
    hostname: str | None = None
    port: Port | None = None


class PassiveHealth(Block, frozen=True, kw_only=True):
    """``passive_health {}``: outlier ejection (SPEC §7.5)."""

    enabled: bool = True
    error_threshold: PositiveInt = 5
    window: Duration = Duration("30s")
    error_status_codes: tuple[StatusCode, ...] = (500, 502, 503, 504)
    error_grpc_status_codes: tuple[Annotated[int, msgspec.Meta(ge=0, le=16)], ...] = (14,)
    recovery_time: Duration = Duration("30s")
    max_recovery_time: Duration = Duration("5m")
    max_ejection_percent: Annotated[int, msgspec.Meta(ge=1, le=100)] = 50


class Sticky(Block, frozen=True, kw_only=True):
    """``sticky {}``: cookie affinity (SPEC §7.6)."""

    cookie: Annotated[str, msgspec.Meta(pattern=COOKIE_NAME_PATTERN)] = "a3s_sticky"
    max_age: DurationOrZero = DurationOrZero("1h")
    secure: bool | None = None
    http_only: bool = True
    same_site: Literal["lax", "strict", "none"] = "lax"
    path: str = "/"
    domain: str | None = None
    secret: str | None = None


class UpstreamTls(Block, frozen=True, kw_only=True):
    """``upstream_tls {}``: TLS towards https/wss/tls backends."""

    ca_file: str | None = None
    insecure_skip_verify: bool = False
    server_name: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class LoadBalancer(Block, frozen=True, kw_only=True):
    """``load_balancer {}`` (SPEC §3.10)."""

    strategy: Strategy = "round-robin"
    servers: tuple[Server, ...] = ()
    hash_key: KeyExpression | None = None
    health_check: HealthCheck | None = None
    passive_health: PassiveHealth = PassiveHealth()
    sticky: Sticky | None = None
    upstream_tls: UpstreamTls | None = None
    connect_timeout: Duration = Duration("5s")
    response_header_timeout: Duration = Duration("30s")
    body_idle_timeout: Duration = Duration("60s")
    stream_idle_timeout: DurationOrZero = DurationOrZero("5m")
    total_timeout: DurationOrZero = DurationOrZero("0s")
    connect_attempts: Annotated[int, msgspec.Meta(ge=1, le=10)] = 2
    pass_host_header: bool = True
    max_idle_per_backend: NonNegativeInt = 100
    idle_conn_timeout: Duration = Duration("60s")
    max_conns_per_backend: PositiveInt = 1024
    panic_threshold: Percent = 0


class Mirror(Block, frozen=True, kw_only=True):
    """``mirror {}``: shadow a share of traffic (SPEC §7.7)."""

    service: str
    percentage: Annotated[float, msgspec.Meta(ge=0, le=100)] = 100.0
    mirror_body: bool = True
    max_body_bytes: NonNegativeInt = 1048576
    max_concurrency: PositiveInt = 64
    timeout: Duration = Duration("10s")


class Failover(Block, frozen=True, kw_only=True):
    """``failover {}``: the service used when this one has no available backend."""

    service: str


class BoxExecutor(Block, frozen=True, kw_only=True):
    """``box {}`` in ``scaling``: the A3S Box HTTP executor."""

    url: HttpUrl = HttpUrl("http://127.0.0.1:9090")
    token_env: str | None = None
    timeout: Duration = Duration("5s")


class KubernetesExecutor(Block, frozen=True, kw_only=True):
    """``kubernetes {}`` in ``scaling``: scales a Deployment or StatefulSet."""

    namespace: str | None = None
    name: str | None = None
    kind: Literal["deployments", "statefulsets"] = "deployments"


class LocalExecutor(Block, frozen=True, kw_only=True):
    """``local {}`` in ``scaling``: child processes on consecutive ports (SPEC §11.9)."""

    command: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)]
    base_port: Annotated[int, msgspec.Meta(ge=1, le=65535)]
    env: dict[str, str] = {}
    cwd: str | None = None
    stop_timeout: Duration = Duration("10s")


class Scaling(Block, frozen=True, kw_only=True):
    """``scaling {}``: Knative-style autoscaling (SPEC §11)."""

    min_replicas: NonNegativeInt = 0
    max_replicas: PositiveInt = 10
    container_concurrency: NonNegativeInt = 0
    target_utilization: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.7
    scale_down_delay_secs: NonNegativeInt = 300
    buffer_enabled: bool = False
    buffer_size: PositiveInt = 100
    buffer_timeout_secs: PositiveInt = 30
    executor: Literal["box", "kubernetes", "k8s", "local", "mock"] = "box"
    stable_window: Duration = Duration("60s")
    panic_window_percentage: Annotated[float, msgspec.Meta(ge=1, le=100)] = 10.0
    panic_threshold_percentage: Annotated[float, msgspec.Meta(ge=110)] = 200.0
    max_scale_up_rate: Annotated[float, msgspec.Meta(gt=1)] = 1000.0
    max_scale_down_rate: Annotated[float, msgspec.Meta(gt=1)] = 2.0
    scale_to_zero_grace: Duration = Duration("30s")
    tick_interval: Duration = Duration("2s")
    #: Knative's target burst capacity: spare concurrency kept beyond the demand (shown as the
    #: excess burst capacity in ``/scaling``); 0 = none, -1 = unlimited.
    target_burst_capacity: Annotated[float, msgspec.Meta(ge=-1)] = 200.0
    #: The least replicas a scale-up from zero starts (Knative's ``activation-scale``).
    activation_scale: PositiveInt = 1
    box: BoxExecutor | None = None
    kubernetes: KubernetesExecutor | None = None
    local: LocalExecutor | None = None


class Revision(Block, frozen=True, kw_only=True):
    """One entry of ``revisions`` (SPEC §11.7)."""

    name: DnsLabel
    traffic_percent: Percent = 100
    servers: tuple[Server, ...] = ()
    strategy: Strategy | None = None
    tag: DnsLabel | None = None


class Rollout(Block, frozen=True, kw_only=True):
    """``rollout {}``: gradual canary from one revision to another (SPEC §11.8)."""

    from_: str = msgspec.field(name="from")
    to: str
    step_percent: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10
    step_interval_secs: PositiveInt = 60
    error_rate_threshold: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.05
    latency_threshold_ms: PositiveInt = 5000
    min_requests: NonNegativeInt = 20
    latency_percentile: Annotated[float, msgspec.Meta(ge=50, le=100)] = 99.0


class MuxChannel(Block, frozen=True, kw_only=True):
    """``channels "<name>" {}`` inside ``websocket_mux``."""

    service: str | None = None
    path: str = "/"
    broadcast: bool = False
    echo: bool = False


class WebsocketMux(Block, frozen=True, kw_only=True):
    """``websocket_mux {}``: named channels over one WebSocket (SPEC §5.13)."""

    max_channels: PositiveInt = 64
    max_message_bytes: PositiveInt = 1048576
    queue_messages: PositiveInt = 256
    channels: dict[str, MuxChannel] = {}


class Service(Block, frozen=True, kw_only=True):
    """``services "<name>"`` (SPEC §3.10)."""

    load_balancer: LoadBalancer | None = None
    mirror: Mirror | None = None
    failover: Failover | None = None
    scaling: Scaling | None = None
    revisions: tuple[Revision, ...] = ()
    revision_affinity: str = ""
    revision_header: str = ""
    rollout: Rollout | None = None
    websocket_mux: WebsocketMux | None = None
