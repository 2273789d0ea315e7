"""Semantic checks of names, references and rules of routers (SPEC §3.15 checks 1-3, warnings).

Mirrors ``semantic_routers`` (plus the name rules of ``semantic``); helpers live in
``tests.support.semantic``.
"""

from __future__ import annotations

import pytest

from tests.support.semantic import (
    TCP_SERVICE,
    TLS_ENTRYPOINT,
    Case,
    find,
    line_of,
    load,
    middleware,
    run_case,
)

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
        "rule '  ': empty rule",
        "rule =",
    ),
    Case(
        "unbalanced-rule",
        '\nrouters "api" {\n  rule = "(Path(`/x`)"\n  service = "app"\n}\n',
        'routers["api"].rule',
        "rule '(Path(`/x`)': unexpected end of rule; expected \")\" (unbalanced parentheses) "
        "at column 12",
        "rule =",
    ),
    Case(
        "unterminated-rule",
        '\nrouters "api" {\n  rule = "Path(`/x)"\n  service = "app"\n}\n',
        'routers["api"].rule',
        "rule 'Path(`/x)': unterminated string at column 6",
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


def test_rule_errors_name_router_and_column_all_at_once() -> None:
    snippet = (
        '\nrouters "one" {\n  rule = "Host(`a`) &&"\n  service = "app"\n}\n'
        '\nrouters "two" {\n  rule = "pathPrefix(`/x`)"\n  service = "app"\n}\n'
        '\ntcp_routers "three" {\n  rule = "Host(`a`)"\n  service = "app"\n}\n'
        '\nrouters "four" {\n  rule = "Path(`{id}`)"\n  rule_syntax = "v2"\n  service = "app"\n}\n'
    )
    errors = {p.path: p.message for p in load(snippet).errors}
    assert errors['routers["one"].rule'] == (
        "rule 'Host(`a`) &&': unexpected end of rule; expected a matcher at column 13"
    )
    assert errors['routers["two"].rule'].startswith("rule 'pathPrefix(`/x`)': unknown matcher")
    assert errors['tcp_routers["three"].rule'] == (
        "rule 'Host(`a`)': matcher Host is not valid in TCP rules at column 1"
    )
    assert errors['routers["four"].rule'] == (
        "rule 'Path(`{id}`)': Path argument must start with \"/\" at column 6"
    )
