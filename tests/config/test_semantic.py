"""Semantic checks (SPEC §3.15): one bad config per rule, loaded through the whole pipeline.

Each case is an HCL snippet added to a minimal valid config (``BASE``: one http entrypoint, one
service, one router). The test asserts the problem's path, severity, a key part of the message
and its line, and that an error case reports no other error (no false positives).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import pytest

from a3s_gateway.config.load import LoadOptions, LoadResult, load_text
from a3s_gateway.config.problems import Problem, SourceMap
from a3s_gateway.config.schema import Config
from a3s_gateway.config.semantic import SemanticContext, check_semantics
from a3s_gateway.config.values import dec_hook

BASE = """\
entrypoints "web" {
  address = "127.0.0.1:8080"
}
services "app" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9000" }]
  }
}
routers "app" {
  rule    = "PathPrefix(`/`)"
  service = "app"
}
"""
BASE_LINES = BASE.count("\n")
TLS_ENTRYPOINT = """
entrypoints "secure" {
  address = "127.0.0.1:8443"
  tls {
    cert_file = "/c.pem"
    key_file  = "/k.pem"
  }
}
"""
TCP_SERVICE = """
services "db" {
  load_balancer {
    servers = [{ url = "tcp://127.0.0.1:5432" }]
  }
}
"""


def load(
    snippet: str, *, base: bool = True, env: dict[str, str] | None = None, workers: int = 1
) -> LoadResult:
    text = (BASE if base else "") + snippet
    return load_text(text, filename="t.hcl", env=env or {}, options=LoadOptions(workers=workers))


def line_of(snippet: str, needle: str, *, base: bool = True) -> int:
    """The 1-based line of the first line of ``snippet`` containing ``needle`` (after BASE)."""
    for number, line in enumerate(snippet.split("\n"), start=1):
        if needle in line:
            return number + (BASE_LINES if base else 0)
    raise AssertionError(f"{needle!r} not in snippet")


def find(result: LoadResult, path: str, severity: str, part: str) -> Problem:
    matches = [
        p
        for p in result.problems
        if p.path == path and p.severity == severity and part in p.message
    ]
    shown = "\n".join(p.format() for p in result.problems)
    assert len(matches) == 1, f"expected one {severity} at {path} with {part!r}, got:\n{shown}"
    return matches[0]


@dataclass(frozen=True)
class Case:
    """One rule: snippet → the problem it must produce."""

    id: str
    snippet: str
    path: str
    message: str
    #: Text on the problem's line in the snippet; ``None`` = the problem has no line.
    needle: str | None
    severity: str = "error"
    base: bool = True
    #: Other errors this snippet legitimately causes (an error case otherwise has exactly one).
    extra_errors: int = 0
    env: dict[str, str] = field(default_factory=dict)


def run_case(case: Case) -> None:
    result = load(case.snippet, base=case.base, env=case.env)
    problem = find(result, case.path, case.severity, case.message)
    assert problem.file == "t.hcl"
    expected = None if case.needle is None else line_of(case.snippet, case.needle, base=case.base)
    assert problem.line == expected
    if case.severity == "error":
        shown = "\n".join(p.format() for p in result.errors)
        assert len(result.errors) == 1 + case.extra_errors, shown


# -- names and references (checks 1-3) ------------------------------------------------------------

REFERENCE_CASES = [
    Case(
        "invalid-name",
        '\nmiddlewares "bad name" {\n  type = "body-limit"\n  max_body_bytes = 10\n}\n',
        'middlewares["bad name"]',
        'name "bad name" is invalid',
        'middlewares "bad name"',
    ),
    Case(
        "router-namespace",
        TCP_SERVICE
        + '\nentrypoints "db" {\n  address = "127.0.0.1:5432"\n  protocol = "tcp"\n}\n'
        + 'tcp_routers "app" {\n  rule = "HostSNI(`*`)"\n  service = "db"\n}\n',
        'tcp_routers["app"]',
        'router name "app" is already used by routers "app"',
        'tcp_routers "app"',
    ),
    Case(
        "no-entrypoints",
        'services "app" {\n  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n'
        "  }\n}\n",
        "entrypoints",
        "no entrypoints are defined",
        None,
        base=False,
    ),
    Case(
        "undefined-service",
        '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "billing"\n}\n',
        'routers["api"].service',
        'service "billing" is not defined (defined: app)',
        'service = "billing"',
    ),
    Case(
        "undefined-service-suggestion",
        '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "ap"\n}\n',
        'routers["api"].service',
        'service "ap" is not defined (did you mean "app"?)',
        'service = "ap"',
    ),
    Case(
        "pending-service",
        '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "billing"\n}\n'
        + 'providers {\n  discovery {\n    seeds = [{ url = "http://10.0.0.5:8080" }]\n  }\n}\n',
        'routers["api"].service',
        'service "billing" is not defined yet: pending until the discovery provider',
        'service = "billing"',
        severity="warning",
    ),
    Case(
        "undefined-entrypoint",
        '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "app"\n'
        '  entrypoints = ["websecure"]\n}\n',
        'routers["api"].entrypoints[0]',
        'entrypoint "websecure" is not defined (defined: web)',
        "entrypoints =",
    ),
    Case(
        "http-router-on-tcp-entrypoint",
        '\nentrypoints "raw" {\n  address = "127.0.0.1:9999"\n  protocol = "tcp"\n}\n'
        'routers "api" {\n  rule = "Path(`/x`)"\n  service = "app"\n  entrypoints = ["raw"]\n}\n',
        'routers["api"].entrypoints[0]',
        'entrypoint "raw" is a tcp entrypoint; http routers need http entrypoints',
        'entrypoints = ["raw"]',
    ),
    Case(
        "tcp-router-on-plain-http-entrypoint",
        TCP_SERVICE + '\ntcp_routers "db" {\n  rule = "HostSNI(`*`)"\n  service = "db"\n'
        '  entrypoints = ["web"]\n}\n',
        'tcp_routers["db"].entrypoints[0]',
        'entrypoint "web" is an http entrypoint without tls; tcp routers need tcp entrypoints',
        'entrypoints = ["web"]',
    ),
    Case(
        "udp-router-on-http-entrypoint",
        '\nservices "dns" {\n  load_balancer {\n    servers = [{ url = "udp://10.0.0.2:53" }]\n'
        '  }\n}\nudp_routers "dns" {\n  service = "dns"\n  entrypoints = ["web"]\n}\n',
        'udp_routers["dns"].entrypoints[0]',
        'entrypoint "web" is an http entrypoint; udp routers need udp entrypoints',
        'entrypoints = ["web"]',
    ),
    Case(
        "tcp-router-without-tcp-entrypoint",
        TCP_SERVICE + '\ntcp_routers "db" {\n  rule = "HostSNI(`*`)"\n  service = "db"\n}\n',
        'tcp_routers["db"].entrypoints',
        "no tcp entrypoint is defined",
        'tcp_routers "db"',
    ),
    Case(
        "http-router-without-http-entrypoint",
        '\nentrypoints "raw" {\n  address = "127.0.0.1:9999"\n  protocol = "tcp"\n}\n'
        'routers "api" {\n  rule = "Path(`/x`)"\n  service = "other"\n}\n'
        'services "other" {\n  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n'
        "  }\n}\n",
        'routers["api"].entrypoints',
        "no http entrypoint is defined",
        'routers "api"',
        base=False,
    ),
    Case(
        "undefined-middleware",
        '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "app"\n'
        '  middlewares = ["auth"]\n}\n',
        'routers["api"].middlewares[0]',
        'middleware "auth" is not defined (none is defined)',
        "middlewares =",
    ),
    Case(
        "tcp-filter-on-http-router",
        '\nmiddlewares "limit" {\n  type = "tcp-filter"\n  max_connections = 5\n}\n'
        'routers "api" {\n  rule = "Path(`/x`)"\n  service = "app"\n'
        '  middlewares = ["limit"]\n}\n',
        'routers["api"].middlewares[0]',
        'middleware "limit" has type "tcp-filter", which applies only to tcp routers',
        'middlewares = ["limit"]',
    ),
    Case(
        "http-middleware-on-tcp-router",
        TCP_SERVICE + TLS_ENTRYPOINT + '\nmiddlewares "auth" {\n  type = "api-key"\n'
        '  keys = ["k1"]\n}\ntcp_routers "db" {\n  rule = "HostSNI(`db.example.com`)"\n'
        '  service = "db"\n  entrypoints = ["secure"]\n  middlewares = ["auth"]\n}\n',
        'tcp_routers["db"].middlewares[0]',
        'middleware "auth" has type "api-key"; tcp routers accept only tcp-filter middlewares',
        'middlewares = ["auth"]',
    ),
    Case(
        "duplicate-middleware",
        '\nmiddlewares "limit" {\n  type = "body-limit"\n  max_body_bytes = 10\n}\n'
        'routers "api" {\n  rule = "Path(`/x`)"\n  service = "app"\n'
        '  middlewares = ["limit", "limit"]\n}\n',
        'routers["api"].middlewares[1]',
        'middleware "limit" is listed twice',
        'middlewares = ["limit", "limit"]',
    ),
    Case(
        "duplicate-entrypoint",
        '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "app"\n'
        '  entrypoints = ["web", "web"]\n}\n',
        'routers["api"].entrypoints[1]',
        'entrypoint "web" is listed twice',
        "entrypoints =",
    ),
    Case(
        "two-udp-routers",
        '\nentrypoints "dns" {\n  address = "127.0.0.1:5353"\n  protocol = "udp"\n}\n'
        'services "dns" {\n  load_balancer {\n    servers = [{ url = "udp://10.0.0.2:53" }]\n'
        '  }\n}\nudp_routers "a" {\n  service = "dns"\n  entrypoints = ["dns"]\n}\n'
        'udp_routers "b" {\n  service = "dns"\n  entrypoints = [ "dns" ]\n}\n',
        'udp_routers["b"].entrypoints[0]',
        'udp entrypoint "dns" already has udp router "a"',
        '[ "dns" ]',
    ),
]


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=lambda c: c.id)
def test_references(case: Case) -> None:
    run_case(case)


def test_reference_to_broken_block_is_not_reported() -> None:
    snippet = (
        '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "broken"\n'
        '  middlewares = ["bad"]\n}\nservices "broken" {\n  load_balancer {\n    serverz = []\n'
        '  }\n}\nmiddlewares "bad" {\n  type = "no-such-type"\n}\n'
    )
    result = load(snippet)
    messages = [p.message for p in result.errors]
    assert not any("is not defined" in m for m in messages), messages
    assert any('unknown field "serverz"' in m for m in messages), messages


def test_dns_provider_entry_defines_a_service() -> None:
    snippet = (
        '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "users"\n}\n'
        'providers {\n  dns {\n    services "users" {\n      hostname = "users.internal"\n'
        "      port = 8080\n    }\n  }\n}\n"
    )
    result = load(snippet)
    assert result.problems == ()


def test_dns_entry_needs_port_and_empty_servers() -> None:
    snippet = (
        '\nproviders {\n  dns {\n    services "app" {\n      hostname = "app.internal"\n'
        "    }\n  }\n}\n"
    )
    result = load(snippet)
    find(result, 'providers.dns.services["app"].port', "error", 'field "port" is required')
    problem = find(result, 'providers.dns.services["app"]', "error", "gets its servers from DNS")
    assert problem.line == line_of(snippet, 'services "app"')


# -- services and router kinds (check 5) ----------------------------------------------------------

SERVICE_KIND_CASES = [
    Case(
        "service-used-by-two-kinds",
        TLS_ENTRYPOINT + '\ntcp_routers "raw" {\n  rule = "HostSNI(`x.example.com`)"\n'
        '  service = "app"\n  entrypoints = ["secure"]\n}\n',
        'tcp_routers["raw"].service',
        'service "app" is used by http router "app" and tcp router "raw"',
        'service = "app"',
    ),
    Case(
        "server-scheme-does-not-fit",
        '\nrouters "db" {\n  rule = "Path(`/db`)"\n  service = "db"\n}\n' + TCP_SERVICE,
        'services["db"].load_balancer.servers[0].url',
        'server scheme "tcp" does not fit http router "db" (accepted: http, https, h2c, ws, wss)',
        "tcp://",
    ),
    Case(
        "mux-service-on-tcp-router",
        TLS_ENTRYPOINT + '\nservices "hub" {\n  websocket_mux {\n    channels "news" {\n'
        "      broadcast = true\n    }\n  }\n}\n"
        'tcp_routers "raw" {\n  rule = "HostSNI(`x.example.com`)"\n  service = "hub"\n'
        '  entrypoints = ["secure"]\n}\n',
        'tcp_routers["raw"].service',
        'service "hub" uses websocket_mux; only http routers can use it',
        'service = "hub"',
    ),
    Case(
        "duplicate-server-url",
        '\nservices "two" {\n  load_balancer {\n    servers = [\n'
        '      { url = "http://10.0.0.1:80" },\n      { url = "http://10.0.0.1" },\n    ]\n'
        "  }\n}\n",
        'services["two"].load_balancer.servers[1].url',
        'duplicate server url "http://10.0.0.1" (also servers[0])',
        '{ url = "http://10.0.0.1" }',
    ),
    Case(
        "service-without-backends",
        '\nservices "empty" {\n  load_balancer {\n    strategy = "random"\n  }\n}\n',
        'services["empty"]',
        'service "empty" has no backends',
        'services "empty"',
    ),
]


@pytest.mark.parametrize("case", SERVICE_KIND_CASES, ids=lambda c: c.id)
def test_service_kinds(case: Case) -> None:
    run_case(case)


def test_service_backend_sources() -> None:
    local = (
        '\nservices "dev" {\n  scaling {\n    executor = "local"\n    min_replicas = 1\n'
        '    local {\n      command = ["app", "--port", "{port}"]\n      base_port = 7000\n'
        "    }\n  }\n}\n"
    )
    assert load(local).problems == ()
    revisions = '\nservices "rev" {\n  revisions = [{ name = "v1" }]\n}\n'
    assert load(revisions).problems == ()


# -- revisions, rollout (check 6) -----------------------------------------------------------------


def service_with(body: str, name: str = "api") -> str:
    return f'\nservices "{name}" {{\n{body}}}\n'


REVISION_CASES = [
    Case(
        "revisions-sum",
        service_with(
            '  revisions = [\n    { name = "v1", traffic_percent = 80 },\n'
            '    { name = "v2", traffic_percent = 10 },\n  ]\n'
        ),
        'services["api"].revisions',
        'revisions of "api" sum to 90, must be 100',
        "revisions =",
    ),
    Case(
        "revision-names-unique",
        service_with(
            '  revisions = [\n    { name = "v1", traffic_percent = 60 },\n'
            '    { name = "v1", traffic_percent = 40 },\n  ]\n'
        ),
        'services["api"].revisions[1].name',
        'revision name "v1" is used twice (also revisions[0])',
        "traffic_percent = 40",
    ),
    Case(
        "revision-tags-unique",
        service_with(
            '  revisions = [\n    { name = "v1", traffic_percent = 50, tag = "t" },\n'
            '    { name = "v2", traffic_percent = 50, tag = "t" },\n  ]\n'
        ),
        'services["api"].revisions[1].tag',
        'revision tag "t" is used twice',
        'name = "v2"',
    ),
    Case(
        "rollout-unknown-revision",
        service_with(
            '  revisions = [{ name = "v1" }]\n  rollout {\n    from = "v1"\n    to = "v9"\n  }\n'
        ),
        'services["api"].rollout.to',
        'revision "v9" is not defined (defined: v1)',
        'to = "v9"',
    ),
    Case(
        "rollout-same-revision",
        service_with(
            '  revisions = [{ name = "v1" }]\n  rollout {\n    from = "v1"\n    to = "v1"\n  }\n'
        ),
        'services["api"].rollout.to',
        'rollout "from" and "to" must name different revisions',
        'to = "v1"',
    ),
    Case(
        "rollout-without-revisions",
        service_with(
            '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n  }\n'
            '  rollout {\n    from = "v1"\n    to = "v2"\n  }\n'
        ),
        'services["api"].rollout',
        "rollout needs revisions",
        "rollout {",
    ),
    Case(
        "servers-next-to-revisions",
        service_with(
            '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n  }\n'
            '  revisions = [{ name = "v1" }]\n'
        ),
        'services["api"].load_balancer.servers',
        "only the fallback pool",
        "servers =",
        severity="warning",
    ),
    Case(
        "revision-header-without-revisions",
        service_with(
            '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n  }\n'
            '  revision_header = "X-Revision"\n'
        ),
        'services["api"].revision_header',
        'field "revision_header" applies only to a service with revisions',
        "revision_header",
    ),
    Case(
        "revision-affinity-grammar",
        service_with('  revisions = [{ name = "v1" }]\n  revision_affinity = "ip"\n'),
        'services["api"].revision_affinity',
        "revision_affinity must be a key expression",
        "revision_affinity",
    ),
]


@pytest.mark.parametrize("case", REVISION_CASES, ids=lambda c: c.id)
def test_revisions(case: Case) -> None:
    run_case(case)


# -- scaling (check 7) ----------------------------------------------------------------------------


def scaled(scaling: str, *, health: bool = True) -> str:
    check = '    health_check {\n      path = "/health"\n    }\n' if health else ""
    return service_with(
        '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n'
        + check
        + "  }\n  scaling {\n"
        + scaling
        + "  }\n"
    )


SCALING_CASES = [
    Case(
        "min-above-max",
        scaled("    min_replicas = 5\n    max_replicas = 3\n"),
        'services["api"].scaling.min_replicas',
        "min_replicas (5) must be at most max_replicas (3)",
        "min_replicas = 5",
    ),
    Case(
        "buffer-needs-health-check",
        scaled("    min_replicas = 1\n    buffer_enabled = true\n", health=False),
        'services["api"].scaling.buffer_enabled',
        "buffer_enabled needs load_balancer.health_check",
        "buffer_enabled",
    ),
    Case(
        "executor-block-mismatch",
        scaled(
            '    min_replicas = 1\n    executor = "box"\n    local {\n'
            '      command = ["x", "{port}"]\n      base_port = 7000\n    }\n'
        ),
        'services["api"].scaling.local',
        'block "local" applies only to executor "local" (executor is "box")',
        "local {",
    ),
    Case(
        "local-executor-needs-block",
        scaled('    min_replicas = 1\n    executor = "local"\n'),
        'services["api"].scaling.local',
        'executor "local" needs a local block',
        "scaling {",
    ),
    Case(
        "local-command-placeholder",
        scaled(
            '    min_replicas = 1\n    executor = "local"\n    local {\n'
            '      command = ["x", "--port", "8000"]\n      base_port = 7000\n    }\n'
        ),
        'services["api"].scaling.local.command',
        'command must contain the "{port}" placeholder',
        "command =",
    ),
    Case(
        "stable-window-too-short",
        scaled('    min_replicas = 1\n    stable_window = "5s"\n'),
        'services["api"].scaling.stable_window',
        'stable_window ("5s") must be whole seconds from 6s to 1h',
        "stable_window",
    ),
    Case(
        "stable-window-fraction",
        scaled('    min_replicas = 1\n    stable_window = "6.5s"\n'),
        'services["api"].scaling.stable_window',
        "must be whole seconds",
        "stable_window",
    ),
    Case(
        "min-zero-without-buffer",
        scaled("    max_replicas = 3\n"),
        'services["api"].scaling.min_replicas',
        "min_replicas = 0 without buffer_enabled",
        "scaling {",
        severity="warning",
    ),
]


@pytest.mark.parametrize("case", SCALING_CASES, ids=lambda c: c.id)
def test_scaling(case: Case) -> None:
    run_case(case)


def test_k8s_is_an_alias_of_kubernetes() -> None:
    snippet = scaled(
        '    min_replicas = 1\n    executor = "k8s"\n    kubernetes {\n'
        '      kind = "statefulsets"\n    }\n'
    )
    assert load(snippet).problems == ()


# -- mirror, failover, websocket_mux (check 8, §5.13) ---------------------------------------------

TARGET_CASES = [
    Case(
        "mirror-self",
        '\nservices "app2" {\n  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n'
        '  }\n  mirror {\n    service = "app2"\n  }\n}\n',
        'services["app2"].mirror.service',
        'mirror target must be another service, not "app2" itself',
        'service = "app2"',
    ),
    Case(
        "failover-to-mux",
        '\nservices "hub" {\n  websocket_mux {\n    channels "news" {\n      broadcast = true\n'
        '    }\n  }\n}\nservices "app2" {\n  load_balancer {\n'
        '    servers = [{ url = "http://10.0.0.1" }]\n  }\n  failover {\n    service = "hub"\n'
        "  }\n}\n",
        'services["app2"].failover.service',
        'failover target "hub" uses websocket_mux',
        'service = "hub"',
    ),
    Case(
        "mirror-to-tcp-service",
        TCP_SERVICE + '\nservices "app2" {\n  load_balancer {\n'
        '    servers = [{ url = "http://10.0.0.1" }]\n  }\n  mirror {\n    service = "db"\n'
        "  }\n}\n",
        'services["app2"].mirror.service',
        'mirror target "db" is not an http service',
        'service = "db"',
    ),
    Case(
        "undefined-failover",
        '\nservices "app2" {\n  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n'
        '  }\n  failover {\n    service = "backup"\n  }\n}\n',
        'services["app2"].failover.service',
        'service "backup" is not defined',
        'service = "backup"',
    ),
    Case(
        "mux-excludes-other-fields",
        '\nservices "hub" {\n  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n'
        '  }\n  websocket_mux {\n    channels "news" {\n      broadcast = true\n    }\n  }\n}\n',
        'services["hub"].load_balancer',
        'field "load_balancer" cannot be combined with websocket_mux',
        "load_balancer {",
    ),
    Case(
        "mux-needs-channel",
        '\nservices "hub" {\n  websocket_mux {\n    max_channels = 4\n  }\n}\n',
        'services["hub"].websocket_mux.channels',
        "websocket_mux needs at least one channel",
        "websocket_mux {",
    ),
    Case(
        "mux-channel-service-and-broadcast",
        '\nservices "hub" {\n  websocket_mux {\n    channels "news" {\n      service = "app"\n'
        "      broadcast = true\n    }\n  }\n}\n",
        'services["hub"].websocket_mux.channels["news"]',
        'channel "news" needs exactly one of service or broadcast = true',
        'channels "news"',
    ),
    Case(
        "mux-echo-without-broadcast",
        '\nservices "hub" {\n  websocket_mux {\n    channels "news" {\n      service = "app"\n'
        "      echo = true\n    }\n  }\n}\n",
        'services["hub"].websocket_mux.channels["news"].echo',
        "echo applies only to broadcast channels",
        "echo = true",
    ),
]


@pytest.mark.parametrize("case", TARGET_CASES, ids=lambda c: c.id)
def test_targets(case: Case) -> None:
    run_case(case)


# -- load_balancer: health, passive, hash_key, sticky ---------------------------------------------


def balanced(body: str, name: str = "api") -> str:
    return service_with(
        '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n' + body + "  }\n", name
    )


BALANCER_CASES = [
    Case(
        "health-path-required",
        balanced('    health_check {\n      interval = "5s"\n    }\n'),
        'services["api"].load_balancer.health_check.path',
        'field "path" is required for http health checks',
        "health_check {",
    ),
    Case(
        "health-path-slash",
        balanced('    health_check {\n      path = "health"\n    }\n'),
        'services["api"].load_balancer.health_check.path',
        'path "health" must start with "/"',
        'path = "health"',
    ),
    Case(
        "health-timeout-above-interval",
        balanced(
            '    health_check {\n      path = "/h"\n      interval = "2s"\n'
            '      timeout = "3s"\n    }\n'
        ),
        'services["api"].load_balancer.health_check.timeout',
        'timeout ("3s") must be at most interval ("2s")',
        'timeout = "3s"',
    ),
    Case(
        "health-expected-status",
        balanced(
            '    health_check {\n      path = "/h"\n      expected_status = "200,600"\n    }\n'
        ),
        'services["api"].load_balancer.health_check.expected_status',
        'expected_status "200,600" is invalid',
        "expected_status",
    ),
    Case(
        "passive-recovery",
        balanced(
            '    passive_health {\n      recovery_time = "2m"\n      max_recovery_time = "1m"\n'
            "    }\n"
        ),
        'services["api"].load_balancer.passive_health.max_recovery_time',
        'max_recovery_time ("1m") must be at least recovery_time ("2m")',
        "max_recovery_time",
    ),
    Case(
        "hash-key-without-consistent-hash",
        balanced('    hash_key = "header:X-User"\n'),
        'services["api"].load_balancer.hash_key',
        'field "hash_key" applies only to strategy "consistent-hash"',
        "hash_key",
    ),
    Case(
        "sticky-short-secret",
        balanced('    sticky {\n      secret = "tooshort"\n    }\n'),
        'services["api"].load_balancer.sticky.secret',
        "secret must be at least 16 bytes",
        "secret =",
    ),
    Case(
        "sticky-same-site-none-insecure",
        balanced(
            '    sticky {\n      secret = "0123456789abcdef0123"\n      same_site = "none"\n'
            "      secure = false\n    }\n"
        ),
        'services["api"].load_balancer.sticky.same_site',
        'same_site "none" needs Secure cookies',
        "same_site",
    ),
    Case(
        "sticky-without-secret",
        balanced('    sticky {\n      cookie = "srv"\n    }\n'),
        'services["api"].load_balancer.sticky',
        'sticky without "secret"',
        "sticky {",
        severity="warning",
    ),
]


@pytest.mark.parametrize("case", BALANCER_CASES, ids=lambda c: c.id)
def test_load_balancer(case: Case) -> None:
    run_case(case)


def test_expected_status_grammar() -> None:
    for good in ("200", "200,204,300-399", "100-599", " 200 , 204 "):
        snippet = balanced(
            f'    health_check {{\n      path = "/h"\n      expected_status = "{good}"\n    }}\n'
        )
        assert load(snippet).problems == (), good
    for bad in ("", "2xx", "399-300", "99", "200,,204", "200-"):
        snippet = balanced(
            f'    health_check {{\n      path = "/h"\n      expected_status = "{bad}"\n    }}\n'
        )
        assert len(load(snippet).errors) == 1, bad


def test_tcp_health_check_needs_no_path() -> None:
    snippet = TCP_SERVICE.replace(
        '    servers = [{ url = "tcp://127.0.0.1:5432" }]\n',
        '    servers = [{ url = "tcp://127.0.0.1:5432" }]\n    health_check {\n'
        '      interval = "5s"\n    }\n',
    )
    assert load(snippet).problems == ()


# -- TLS (check 9) --------------------------------------------------------------------------------


def tls_entrypoint(body: str) -> str:
    return f'\nentrypoints "secure" {{\n  address = "127.0.0.1:8443"\n  tls {{\n{body}  }}\n}}\n'


TLS_CASES = [
    Case(
        "cert-without-key",
        tls_entrypoint('    cert_file = "/c.pem"\n'),
        'entrypoints["secure"].tls.key_file',
        "key_file is required with cert_file",
        "tls {",
    ),
    Case(
        "no-certificate-source",
        tls_entrypoint('    min_version = "1.3"\n'),
        'entrypoints["secure"].tls',
        "tls needs a certificate",
        "tls {",
    ),
    Case(
        "client-auth-needs-ca",
        tls_entrypoint(
            '    cert_file = "/c.pem"\n    key_file = "/k.pem"\n    client_auth = "require"\n'
        ),
        'entrypoints["secure"].tls.client_ca_file',
        'client_auth "require" needs client_ca_file',
        "tls {",
    ),
    Case(
        "acme-needs-email",
        tls_entrypoint("    acme = true\n"),
        'entrypoints["secure"].tls.acme_email',
        "acme = true needs acme_email",
        "tls {",
    ),
    Case(
        "dns01-needs-acme-dns",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n    acme_challenge = "dns-01"\n'
        ),
        'entrypoints["secure"].tls.acme_dns',
        'acme_challenge "dns-01" needs an acme_dns block',
        "tls {",
    ),
    Case(
        "acme-dns-only-with-dns01",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n    acme_dns {\n'
            '      provider = "challtestsrv"\n    }\n'
        ),
        'entrypoints["secure"].tls.acme_dns',
        'block "acme_dns" applies only to acme_challenge "dns-01"',
        "acme_dns {",
    ),
    Case(
        "wildcard-needs-dns01",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n'
            '    acme_domains = ["*.example.com"]\n'
        ),
        'entrypoints["secure"].tls.acme_domains[0]',
        'wildcard domain "*.example.com" needs acme_challenge "dns-01"',
        "acme_domains",
    ),
    Case(
        "acme-dns-field-of-other-provider",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n'
            '    acme_challenge = "dns-01"\n    acme_dns {\n      provider = "rfc2136"\n'
            '      nameserver = "10.0.0.53:53"\n      zone_id = "z1"\n    }\n'
        ),
        'entrypoints["secure"].tls.acme_dns.zone_id',
        'field "zone_id" does not apply to dns provider "rfc2136" (applies to: cloudflare, '
        "route53)",
        "zone_id",
    ),
    Case(
        "cloudflare-needs-token",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n'
            '    acme_challenge = "dns-01"\n    acme_dns {\n      provider = "cloudflare"\n'
            '      zone_id = "z1"\n    }\n'
        ),
        'entrypoints["secure"].tls.acme_dns.api_token',
        'field "api_token" is required for dns provider "cloudflare"',
        "acme_dns {",
    ),
    Case(
        "alpn-reserved",
        tls_entrypoint(
            '    cert_file = "/c.pem"\n    key_file = "/k.pem"\n    alpn = ["h2", "acme-tls/1"]\n'
        ),
        'entrypoints["secure"].tls.alpn[1]',
        'alpn protocol "acme-tls/1" is reserved',
        "alpn",
    ),
    Case(
        "alpn-empty",
        tls_entrypoint('    cert_file = "/c.pem"\n    key_file = "/k.pem"\n    alpn = [""]\n'),
        'entrypoints["secure"].tls.alpn[0]',
        "alpn protocol names must not be empty",
        "alpn",
    ),
]


@pytest.mark.parametrize("case", TLS_CASES, ids=lambda c: c.id)
def test_tls(case: Case) -> None:
    run_case(case)


def test_acme_with_dns01_is_valid() -> None:
    snippet = tls_entrypoint(
        '    acme = true\n    acme_email = "ops@example.com"\n    acme_challenge = "dns-01"\n'
        '    acme_domains = ["*.example.com", "example.com"]\n    acme_dns {\n'
        '      provider = "cloudflare"\n      api_token = "t0ken-value"\n'
        '      zone_id = "z1"\n    }\n'
    )
    assert load(snippet).problems == ()


# -- entrypoints (check 10, §3.7) -----------------------------------------------------------------

ENTRYPOINT_CASES = [
    Case(
        "udp-field-on-tcp",
        '\nentrypoints "raw" {\n  address = "127.0.0.1:9999"\n  protocol = "tcp"\n'
        "  udp_max_sessions = 5\n}\n",
        'entrypoints["raw"].udp_max_sessions',
        'field "udp_max_sessions" does not apply to a tcp entrypoint (applies to: udp)',
        "udp_max_sessions",
        extra_errors=0,
    ),
    Case(
        "h2c-with-tls",
        tls_entrypoint('    cert_file = "/c.pem"\n    key_file = "/k.pem"\n').replace(
            "  tls {", "  h2c = false\n  tls {"
        ),
        'entrypoints["secure"].h2c',
        'field "h2c" does not apply to an http entrypoint with tls',
        "h2c",
    ),
    Case(
        "timeout-field-of-other-protocol",
        '\nentrypoints "plain" {\n  address = "127.0.0.1:8081"\n  timeouts {\n'
        '    peek = "1s"\n  }\n}\n',
        'entrypoints["plain"].timeouts.peek',
        'field "peek" does not apply to an http entrypoint (applies to: tcp)',
        "peek",
    ),
    Case(
        "idle-zero-on-http",
        '\nentrypoints "plain" {\n  address = "127.0.0.1:8081"\n  timeouts {\n'
        '    idle = "0s"\n  }\n}\n',
        'entrypoints["plain"].timeouts.idle',
        'idle = "0s" (disabled) is accepted only on tcp entrypoints',
        "idle",
    ),
    Case(
        "http2-windows",
        '\nentrypoints "plain" {\n  address = "127.0.0.1:8081"\n  http2 {\n'
        "    initial_window_size = 2000000\n    connection_window_size = 1000000\n  }\n}\n",
        'entrypoints["plain"].http2.connection_window_size',
        "connection_window_size (1000000) must be at least initial_window_size (2000000)",
        "connection_window_size",
    ),
    Case(
        "redirect-to-plain",
        '\nentrypoints "plain" {\n  address = "127.0.0.1:8081"\n  redirect_to = "web"\n}\n',
        'entrypoints["plain"].redirect_to',
        'redirect_to target "web" must be an http entrypoint with tls',
        "redirect_to",
    ),
    Case(
        "redirect-to-undefined",
        '\nentrypoints "plain" {\n  address = "127.0.0.1:8081"\n  redirect_to = "websecure"\n}\n',
        'entrypoints["plain"].redirect_to',
        'entrypoint "websecure" is not defined',
        "redirect_to",
    ),
    Case(
        "address-collision",
        '\nentrypoints "other" {\n  address = ":8080"\n}\n',
        'entrypoints["other"].address',
        'address ":8080" collides with entrypoint "web" ("127.0.0.1:8080")',
        "address",
    ),
    Case(
        "management-collision",
        '\nmanagement {\n  address = "127.0.0.1:8080"\n}\n',
        "management.address",
        'management address "127.0.0.1:8080" collides with entrypoint "web"',
        "address",
    ),
    Case(
        "management-non-loopback",
        '\nmanagement {\n  address = "0.0.0.0:9901"\n  auth_token_env = "ADMIN_TOKEN"\n}\n',
        "management.address",
        "management API listens on a non-loopback address; set ADMIN_TOKEN to require a token",
        "address",
        severity="warning",
    ),
    Case(
        "tcp-entrypoint-without-router",
        '\nentrypoints "raw" {\n  address = "127.0.0.1:9999"\n  protocol = "tcp"\n}\n',
        'entrypoints["raw"]',
        'tcp entrypoint "raw" has no tcp router',
        'entrypoints "raw"',
        severity="warning",
    ),
    Case(
        "udp-entrypoint-without-router",
        '\nentrypoints "dns" {\n  address = "127.0.0.1:5353"\n  protocol = "udp"\n}\n',
        'entrypoints["dns"]',
        'udp entrypoint "dns" has no udp router',
        'entrypoints "dns"',
        severity="warning",
    ),
    Case(
        "catch-all-shadows-http",
        TCP_SERVICE + TLS_ENTRYPOINT + '\ntcp_routers "all" {\n  rule = "HostSNI(`*`)"\n'
        '  service = "db"\n  entrypoints = ["secure"]\n}\n',
        'tcp_routers["all"].entrypoints[0]',
        'catch-all tcp router takes every connection on http entrypoint "secure"',
        'entrypoints = ["secure"]',
        severity="warning",
    ),
]


@pytest.mark.parametrize("case", ENTRYPOINT_CASES, ids=lambda c: c.id)
def test_entrypoints(case: Case) -> None:
    run_case(case)


def test_udp_may_share_a_port_number_with_tcp() -> None:
    snippet = (
        '\nentrypoints "dns" {\n  address = "127.0.0.1:8080"\n  protocol = "udp"\n}\n'
        'services "dns" {\n  load_balancer {\n    servers = [{ url = "10.0.0.2:53" }]\n  }\n}\n'
        'udp_routers "dns" {\n  service = "dns"\n  entrypoints = ["dns"]\n}\n'
    )
    assert load(snippet).problems == ()


def test_idle_zero_on_tcp_and_loopback_management_are_fine() -> None:
    snippet = (
        '\nentrypoints "raw" {\n  address = "127.0.0.1:9999"\n  protocol = "tcp"\n'
        '  timeouts {\n    idle = "0s"\n  }\n}\n' + TCP_SERVICE + 'tcp_routers "db" {\n'
        '  rule = "HostSNI(`*`)"\n  service = "db"\n}\nmanagement {\n'
        '  address = "[::1]:9901"\n}\n'
    )
    assert load(snippet).problems == ()


# -- middlewares (check 11) -----------------------------------------------------------------------


def middleware(name: str, body: str) -> str:
    return f'\nmiddlewares "{name}" {{\n{body}}}\n'


MIDDLEWARE_CASES = [
    Case(
        "jwt-hs-needs-value",
        middleware("jwt", '  type = "jwt"\n  issuer = "me"\n'),
        'middlewares["jwt"].value',
        'field "value" is required when an HS algorithm is allowed',
        'middlewares "jwt"',
    ),
    Case(
        "jwt-rs-needs-key",
        middleware("jwt", '  type = "jwt"\n  algorithms = ["RS256"]\n'),
        'middlewares["jwt"]',
        "public_key_file or jwks_url is required when RS256 is allowed",
        'middlewares "jwt"',
    ),
    Case(
        "jwt-value-without-hs",
        middleware(
            "jwt",
            '  type = "jwt"\n  algorithms = ["ES256"]\n  public_key_file = "/k.pem"\n'
            '  value = "0123456789abcdef0123456789abcdef"\n',
        ),
        'middlewares["jwt"].value',
        'field "value" applies only when an HS algorithm is allowed',
        "value =",
    ),
    Case(
        "jwt-short-hs512-secret",
        middleware(
            "jwt",
            '  type = "jwt"\n  algorithms = ["HS256", "HS512"]\n'
            '  value = "0123456789abcdef0123456789abcdef"\n',
        ),
        'middlewares["jwt"].value',
        "HS512 secret",
        "value =",
        severity="warning",
    ),
    Case(
        "retry-intervals",
        middleware(
            "retry",
            '  type = "retry"\n  retry_interval_ms = 500\n  retry_max_interval_ms = 100\n',
        ),
        'middlewares["retry"].retry_max_interval_ms',
        "retry_max_interval_ms (100) must be at least retry_interval_ms (500)",
        "retry_max_interval_ms",
    ),
    Case(
        "retry-status-codes",
        middleware("retry", '  type = "retry"\n  retry_status_codes = [503]\n'),
        'middlewares["retry"].retry_status_codes',
        'retry_status_codes needs "status-codes" in retry_on',
        "retry_status_codes",
    ),
    Case(
        "tcp-filter-needs-limit",
        middleware("limit", '  type = "tcp-filter"\n  allowed_ips = []\n'),
        'middlewares["limit"]',
        "tcp-filter needs max_connections or allowed_ips",
        'middlewares "limit"',
    ),
    Case(
        "cors-origin",
        middleware("cors", '  type = "cors"\n  allowed_origins = ["https://a.*.example.com"]\n'),
        'middlewares["cors"].allowed_origins[0]',
        'origin "https://a.*.example.com" is invalid',
        "allowed_origins",
    ),
    Case(
        "cors-origin-with-path",
        middleware("cors", '  type = "cors"\n  allowed_origins = ["https://example.com/"]\n'),
        'middlewares["cors"].allowed_origins[0]',
        "is invalid: expected",
        "allowed_origins",
    ),
    Case(
        "cors-credentials-star",
        middleware("cors", '  type = "cors"\n  allow_credentials = true\n'),
        'middlewares["cors"].allowed_origins',
        'allow_credentials with origin "*"',
        'middlewares "cors"',
        severity="warning",
    ),
    Case(
        "headers-forbidden-name",
        middleware(
            "h", '  type = "headers"\n  response_headers = { "transfer-encoding" = "chunked" }\n'
        ),
        'middlewares["h"].response_headers["transfer-encoding"]',
        'header "transfer-encoding" cannot be set',
        "response_headers",
    ),
    Case(
        "headers-crlf-value",
        middleware(
            "h",
            '  type = "headers"\n  request_headers = {\n    "X-A" = "a\\r\\nInjected: 1"\n  }\n',
        ),
        'middlewares["h"].request_headers["X-A"]',
        'value of header "X-A" contains CR, LF or NUL',
        '"X-A"',
    ),
    Case(
        "compress-content-type",
        middleware("zip", '  type = "compress"\n  compress_content_types = ["text/*", "json"]\n'),
        'middlewares["zip"].compress_content_types[1]',
        'media type "json" is invalid',
        "compress_content_types",
    ),
]


@pytest.mark.parametrize("case", MIDDLEWARE_CASES, ids=lambda c: c.id)
def test_middlewares(case: Case) -> None:
    run_case(case)


def test_valid_cors_origins() -> None:
    origins = '["*", "https://app.example.com", "https://*.example.com:8443", "http://[::1]:3000"]'
    snippet = middleware("cors", f'  type = "cors"\n  allowed_origins = {origins}\n')
    assert load(snippet).problems == ()


def test_in_memory_rate_limit_with_workers() -> None:
    snippet = middleware("rl", '  type = "rate-limit"\n  rate = 10\n')
    assert load(snippet).problems == ()
    problem = find(load(snippet, workers=4), 'middlewares["rl"]', "warning", "per worker")
    assert "4 workers" in problem.message
    assert problem.line == line_of(snippet, 'middlewares "rl"')


def test_cors_after_auth_warns() -> None:
    snippet = (
        middleware("auth", '  type = "api-key"\n  keys = ["k1"]\n')
        + middleware("cors", '  type = "cors"\n  allowed_origins = ["https://a.example.com"]\n')
        + '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "app"\n'
        '  middlewares = ["auth", "cors"]\n}\n'
    )
    result = load(snippet)
    problem = find(result, 'routers["api"].middlewares[1]', "warning", "comes after auth")
    assert problem.line == line_of(snippet, 'middlewares = ["auth", "cors"]')
    assert result.errors == ()


# -- rules ----------------------------------------------------------------------------------------

RULE_CASES = [
    Case(
        "empty-rule",
        '\nrouters "api" {\n  rule = "  "\n  service = "app"\n}\n',
        'routers["api"].rule',
        "rule is empty",
        "rule =",
    ),
    Case(
        "unbalanced-rule",
        '\nrouters "api" {\n  rule = "(Path(`/x`)"\n  service = "app"\n}\n',
        'routers["api"].rule',
        "rule has unbalanced parentheses",
        "rule =",
    ),
    Case(
        "unterminated-rule",
        '\nrouters "api" {\n  rule = "Path(`/x)"\n  service = "app"\n}\n',
        'routers["api"].rule',
        "rule has an unterminated string",
        "rule =",
    ),
    Case(
        "host-star-inside",
        '\nrouters "api" {\n  rule = "Host(`a*.example.com`) || Host(`*.ok.com`)"\n'
        '  service = "app"\n}\n',
        'routers["api"].rule',
        'Host argument "a*.example.com" has "*" outside a leading "*." label',
        "rule =",
        severity="warning",
    ),
]


@pytest.mark.parametrize("case", RULE_CASES, ids=lambda c: c.id)
def test_rules(case: Case) -> None:
    run_case(case)


# -- secrets --------------------------------------------------------------------------------------

SECRETS = (
    "jwt-secret-AAAA",
    "sticky-BBBB",
    "basic-pass-CCCC",
    "api-key-DDDD",
    "cf-token-EEEE",
    "tsig-FFFF",
    "Bearer-GGGG",
    "redis-pass-HHHH",
)


def test_secrets_never_appear_in_messages() -> None:
    snippet = (
        middleware("jwt", f'  type = "jwt"\n  algorithms = ["RS256"]\n  value = "{SECRETS[0]}"\n')
        + balanced(f'    sticky {{\n      secret = "{SECRETS[1]}"\n    }}\n')
        + middleware(
            "basic", f'  type = "basic-auth"\n  username = "u"\n  password = "{SECRETS[2]}"\n'
        )
        + middleware("key", f'  type = "api-key"\n  keys = ["{SECRETS[3]}"]\n')
        + middleware(
            "h",
            f'  type = "headers"\n  request_headers = {{ "Authorization" = "{SECRETS[6]}\\n" }}\n',
        )
        + middleware(
            "rl",
            f'  type = "rate-limit-redis"\n  rate = 1\n  redis_url = "redis://u:{SECRETS[7]}@10.0.0.1"\n',
        )
        + '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "app"\n'
        '  middlewares = ["jwt", "basic", "key", "h", "rl", "missing"]\n}\n'
        + tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n    acme_dns {\n'
            f'      provider = "rfc2136"\n      api_token = "{SECRETS[4]}"\n'
            f'      tsig_secret = "{SECRETS[5]}"\n    }}\n'
        )
        + '\nentrypoints "other" {\n  address = "127.0.0.1:8082"\n  tls {\n    acme = true\n'
        '    acme_email = "ops@example.com"\n    acme_challenge = "dns-01"\n    acme_dns {\n'
        f'      provider = "rfc2136"\n      api_token = "{SECRETS[4]}"\n'
        f'      tsig_secret = "{SECRETS[5]}"\n    }}\n  }}\n}}\n'
    )
    result = load(snippet)
    assert len(result.problems) >= 8, [p.format() for p in result.problems]
    for problem in result.problems:
        for secret in SECRETS:
            assert secret not in problem.format(), problem.format()


# -- the README example (SPEC §1.4) ---------------------------------------------------------------

README_EXAMPLE = """\
entrypoints "web" {
  address = "0.0.0.0:80"
}
entrypoints "websecure" {
  address = "0.0.0.0:443"
  tls {
    cert_file = "/etc/certs/cert.pem"
    key_file  = "/etc/certs/key.pem"
  }
}
entrypoints "tcp-db" {
  address         = "0.0.0.0:5432"
  protocol        = "tcp"
  max_connections = 100
  tcp_allowed_ips = ["10.0.0.0/8"]
}
routers "api" {
  rule        = "Host(`api.example.com`) && PathPrefix(`/v1`)"
  service     = "api-service"
  entrypoints = ["websecure"]
  middlewares = ["auth-jwt", "rate-limit"]
}
services "api-service" {
  load_balancer {
    strategy = "round-robin"
    servers = [
      { url = "http://127.0.0.1:8001" },
      { url = "http://127.0.0.1:8002" }
    ]
    health_check {
      path     = "/health"
      interval = "10s"
    }
    sticky {
      cookie = "srv_id"
    }
  }
  mirror {
    service    = "shadow-backend"
    percentage = 10
  }
  failover {
    service = "backup-pool"
  }
  scaling {
    min_replicas          = 0
    max_replicas          = 10
    container_concurrency = 50
    target_utilization    = 0.7
    buffer_enabled        = true
    executor              = "box"
  }
  revisions = [
    { name = "v1", traffic_percent = 90, strategy = "round-robin",
      servers = [{ url = "http://127.0.0.1:8001" }] },
    { name = "v2", traffic_percent = 10, strategy = "round-robin",
      servers = [{ url = "http://127.0.0.1:8003" }] }
  ]
  rollout {
    from                 = "v1"
    to                   = "v2"
    step_percent         = 10
    step_interval_secs   = 60
    error_rate_threshold = 0.05
    latency_threshold_ms = 5000
  }
}
middlewares "auth-jwt" {
  type  = "jwt"
  value = "${JWT_SECRET}"
}
middlewares "rate-limit" {
  type  = "rate-limit"
  rate  = 100
  burst = 50
}
providers {
  file {
    watch     = true
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


def test_readme_example_has_only_the_expected_warnings() -> None:
    result = load(README_EXAMPLE, base=False, env={"JWT_SECRET": "change-me"})
    assert result.errors == (), [p.format() for p in result.errors]
    paths = sorted(p.path for p in result.warnings)
    assert paths == [
        'entrypoints["tcp-db"]',
        'middlewares["auth-jwt"].value',
        'services["api-service"].failover.service',
        'services["api-service"].load_balancer.servers',
        'services["api-service"].load_balancer.sticky',
        'services["api-service"].mirror.service',
    ]
    assert all("change-me" not in p.message for p in result.problems)


def test_readme_example_with_a_strong_secret_and_workers() -> None:
    env = {"JWT_SECRET": "x" * 32}
    result = load(README_EXAMPLE, base=False, env=env, workers=2)
    assert result.errors == ()
    assert any("per worker" in p.message for p in result.warnings)
    assert not any("shorter than" in p.message for p in result.warnings)


# -- direct use -----------------------------------------------------------------------------------


def test_check_semantics_on_a_built_config() -> None:
    config = msgspec.convert(
        {
            "entrypoints": {"web": {"address": ":80"}, "alt": {"address": "0.0.0.0:80"}},
            "routers": {"r": {"rule": "", "service": "gone"}},
        },
        Config,
        dec_hook=dec_hook,
    )
    context = SemanticContext(
        sources=SourceMap(), default_file="x.hcl", broken=frozenset({("services", "gone")})
    )
    problems = check_semantics(config, context)
    messages = [p.message for p in problems]
    assert any("collides" in m for m in messages), messages
    assert any("rule is empty" in m for m in messages), messages
    assert not any("not defined" in m for m in messages), messages
    assert all(p.file == "x.hcl" and p.line is None for p in problems)


def test_empty_config_reports_missing_entrypoints() -> None:
    context = SemanticContext(sources=SourceMap(), default_file="x.hcl", broken=frozenset())
    problems = check_semantics(Config(), context)
    assert [p.message for p in problems] == ["no entrypoints are defined; at least one is required"]
