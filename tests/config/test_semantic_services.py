"""Semantic checks of services: router kinds, backends, targets, load_balancer (SPEC §3.15).

Mirrors ``semantic_services``; helpers live in ``tests.support.semantic``.
"""

from __future__ import annotations

import pytest

from tests.support.semantic import TCP_SERVICE, TLS_ENTRYPOINT, Case, balanced, load, run_case

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
        "    container_concurrency = 10\n"
        '    local {\n      command = ["app", "--port", "{port}"]\n      base_port = 7000\n'
        "    }\n  }\n}\n"
    )
    assert load(local).problems == ()
    revisions = '\nservices "rev" {\n  revisions = [{ name = "v1" }]\n}\n'
    assert load(revisions).problems == ()


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
        "sticky-domain-injection",
        balanced(
            '    sticky {\n      secret = "0123456789abcdef0123"\n'
            '      domain = "example.com; Max-Age=0"\n    }\n'
        ),
        'services["api"].load_balancer.sticky.domain',
        "must be ASCII without control characters or ';'",
        "domain",
    ),
    Case(
        "sticky-without-secret",
        balanced('    sticky {\n      cookie = "srv"\n    }\n'),
        'services["api"].load_balancer.sticky',
        'sticky without "secret"',
        "sticky {",
        severity="warning",
    ),
    Case(
        "upstream-tls-skips-verification",
        balanced("    upstream_tls {\n      insecure_skip_verify = true\n    }\n"),
        'services["api"].load_balancer.upstream_tls.insecure_skip_verify',
        "insecure_skip_verify = true: the backends' certificates and names are not checked",
        "insecure_skip_verify",
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
