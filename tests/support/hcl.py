"""Shared helpers of the HCL parser tests (``tests/config/test_hcl_*.py``, SPEC §3.2).

``raw`` calls python-hcl2 directly with the loader's options (``OPTIONS``), for the pinned-shape
tests and for comparing against it; ``parse``, ``ok`` and ``messages`` run the project's
``parse_hcl`` on a file named ``gateway.hcl``. ``README_CONFIG`` is the README's example config
(flush-left, so line and column numbers are easy to read off), which both the normalisation and
the position tests use.
"""

from __future__ import annotations

import hcl2
from hcl2.utils import SerializationOptions

from a3s_gateway.config.hcl import ParsedFile, parse_hcl

OPTIONS = SerializationOptions(
    strip_string_quotes=False,
    explicit_blocks=True,
    with_comments=False,
    preserve_heredocs=False,
    preserve_scientific_notation=False,
)


def raw(text: str) -> object:
    loaded: object = hcl2.loads(text, serialization_options=OPTIONS)
    return loaded


def parse(text: str) -> ParsedFile:
    return parse_hcl(text, filename="gateway.hcl")


def ok(text: str) -> dict[str, object]:
    """Parse text that must be valid and problem-free."""
    result = parse(text)
    assert result.ok
    assert result.problems == ()
    return result.data


def messages(text: str) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.path, p.message) for p in parse(text).problems]


README_CONFIG = """\
# Entrypoints — network listeners
entrypoints "web" {
address = "0.0.0.0:80"
}
entrypoints "websecure" {
address = "0.0.0.0:443"
tls {
cert_file = "/etc/certs/cert.pem"
key_file = "/etc/certs/key.pem"
}
}
entrypoints "tcp-db" {
address = "0.0.0.0:5432"
protocol = "tcp"
max_connections = 100
tcp_allowed_ips = ["10.0.0.0/8"]
}
# Routers — request matching
routers "api" {
rule = "Host(`api.example.com`) && PathPrefix(`/v1`)"
service = "api-service"
entrypoints = ["websecure"]
middlewares = ["auth-jwt", "rate-limit"]
}
# Services — backend pools
services "api-service" {
load_balancer {
strategy = "round-robin"
servers = [
{ url = "http://127.0.0.1:8001" },
{ url = "http://127.0.0.1:8002" }
]
health_check {
path = "/health"
interval = "10s"
}
sticky {
cookie = "srv_id"
}
}
# Traffic mirroring (optional)
mirror {
service = "shadow-backend"
percentage = 10
}
# Failover (optional)
failover {
service = "backup-pool"
}
# Autoscaling (optional)
scaling {
min_replicas = 0
max_replicas = 10
container_concurrency = 50
target_utilization = 0.7
buffer_enabled = true
executor = "box"
}
# Revision traffic splitting (optional)
revisions = [
{ name = "v1", traffic_percent = 90, strategy = "round-robin",
servers = [{ url = "http://127.0.0.1:8001" }] },
{ name = "v2", traffic_percent = 10, strategy = "round-robin",
servers = [{ url = "http://127.0.0.1:8003" }] }
]
# Gradual rollout (optional)
rollout {
from = "v1"
to = "v2"
step_percent = 10
step_interval_secs = 60
error_rate_threshold = 0.05
latency_threshold_ms = 5000
}
}
# Middlewares
middlewares "auth-jwt" {
type = "jwt"
value = "${JWT_SECRET}"
}
middlewares "rate-limit" {
type = "rate-limit"
rate = 100
burst = 50
}
# Providers
providers {
file {
watch = true
directory = "/etc/gateway/conf.d/"
}
discovery {
poll_interval_secs = 30
seeds = [
{ url = "http://10.0.0.5:8080" },
{ url = "http://10.0.0.6:8080" }
]
}
}
"""
