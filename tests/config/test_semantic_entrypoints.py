"""Semantic checks of entrypoints and management (SPEC §3.7, §3.15 check 10).

Mirrors ``semantic_entrypoints``; helpers live in ``tests.support.semantic``.
"""

from __future__ import annotations

import pytest

from tests.support.semantic import TCP_SERVICE, TLS_ENTRYPOINT, Case, load, run_case, tls_entrypoint

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
        "request-body-on-tcp",
        '\nentrypoints "raw" {\n  address = "127.0.0.1:9999"\n  protocol = "tcp"\n'
        '  timeouts {\n    request_body = "1m"\n  }\n}\n',
        'entrypoints["raw"].timeouts.request_body',
        'field "request_body" does not apply to a tcp entrypoint (applies to: http)',
        "request_body",
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
        "redirect-to-self",
        '\nentrypoints "plain" {\n  address = "127.0.0.1:8081"\n  redirect_to = "plain"\n}\n',
        'entrypoints["plain"].redirect_to',
        "redirect_to must name another entrypoint, not this one",
        "redirect_to",
    ),
    Case(
        "redirect-to-tcp-with-tls",
        TLS_ENTRYPOINT.replace(
            'address = "127.0.0.1:8443"', 'address = "127.0.0.1:8443"\n  protocol = "tcp"'
        )
        + TCP_SERVICE
        + '\ntcp_routers "db" {\n  rule = "HostSNI(`*`)"\n  service = "db"\n'
        + '  entrypoints = ["secure"]\n}\n'
        + '\nentrypoints "plain" {\n  address = "127.0.0.1:8081"\n  redirect_to = "secure"\n}\n',
        'entrypoints["plain"].redirect_to',
        'redirect_to target "secure" must be an http entrypoint with tls',
        "redirect_to",
    ),
    Case(
        "redirect-to-port-zero",
        TLS_ENTRYPOINT.replace("127.0.0.1:8443", "127.0.0.1:0")
        + '\nentrypoints "plain" {\n  address = "127.0.0.1:8081"\n  redirect_to = "secure"\n}\n',
        'entrypoints["plain"].redirect_to',
        'redirect_to target "secure" listens on port 0 (any free port): a redirect needs the port '
        "clients should use; give it a fixed port",
        "redirect_to",
    ),
    Case(
        "redirect-from-tls",
        TLS_ENTRYPOINT.replace("  tls {", '  redirect_to = "web"\n  tls {'),
        'entrypoints["secure"].redirect_to',
        'field "redirect_to" does not apply to an http entrypoint with tls (applies to: http '
        "without tls)",
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


def test_management_on_a_public_address_with_a_token_set_does_not_warn() -> None:
    snippet = '\nmanagement {\n  address = "0.0.0.0:9901"\n  auth_token_env = "ADMIN_TOKEN"\n}\n'
    assert [p for p in load(snippet).warnings if p.path == "management.address"]
    quiet = load(snippet, env={"ADMIN_TOKEN": "t0ken"}).warnings
    assert [p for p in quiet if p.path == "management.address"] == []
