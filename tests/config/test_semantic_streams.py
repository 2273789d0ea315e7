"""Service settings a TCP or UDP router cannot honour are refused by name, and a
``tls_passthrough`` that changes nothing is warned about (config/semantic_routers.py)."""

from __future__ import annotations

import pytest

from tests.support.semantic import Case, load, run_case

TCP = """
entrypoints "db" {
  address  = "127.0.0.1:5433"
  protocol = "tcp"
}
tcp_routers "db" {
  rule    = "HostSNI(`*`)"
  service = "db"
}
"""

UDP = """
entrypoints "dns" {
  address  = "127.0.0.1:5353"
  protocol = "udp"
}
udp_routers "dns" {
  service     = "dns"
  entrypoints = ["dns"]
}
"""


def tcp_service(body: str) -> str:
    return (
        TCP
        + 'services "db" {\n  load_balancer {\n    servers = [{ url = "tcp://127.0.0.1:5432" }]\n'
        + body
        + "  }\n}\n"
    )


def udp_service(body: str) -> str:
    return (
        UDP
        + 'services "dns" {\n  load_balancer {\n    servers = [{ url = "udp://127.0.0.1:53" }]\n'
        + body
        + "  }\n}\n"
    )


CASES = [
    Case(
        "sticky-on-tcp",
        tcp_service('    sticky {\n      secret = "0123456789abcdef0123456789abcdef"\n    }\n'),
        'services["db"].load_balancer.sticky',
        "sticky cookies need HTTP",
        "sticky {",
    ),
    Case(
        "hash-key-on-tcp",
        tcp_service('    strategy = "consistent-hash"\n    hash_key = "header:X-User"\n'),
        'services["db"].load_balancer.hash_key',
        "has only its client IP to hash",
        "hash_key",
    ),
    Case(
        "health-check-on-udp",
        udp_service('    health_check {\n      interval = "5s"\n    }\n'),
        'services["dns"].load_balancer.health_check',
        "UDP backends cannot be probed",
        "health_check {",
    ),
    Case(
        "sticky-on-udp",
        udp_service('    sticky {\n      secret = "0123456789abcdef0123456789abcdef"\n    }\n'),
        'services["dns"].load_balancer.sticky',
        "sticky cookies need HTTP",
        "sticky {",
    ),
    Case(
        "passthrough-without-tls",
        tcp_service("").replace(
            '  service = "db"\n}', '  service = "db"\n  tls_passthrough = true\n}'
        ),
        'tcp_routers["db"].tls_passthrough',
        "tls_passthrough has no effect",
        "tls_passthrough",
        severity="warning",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_each_rule(case: Case) -> None:
    run_case(case)


def test_what_a_tcp_service_may_have_loads_clean() -> None:
    ok = tcp_service('    strategy = "consistent-hash"\n    hash_key = "client-ip"\n')
    ok += 'services "probe" {\n  load_balancer {\n    servers = [{ url = "tcp://10.0.0.1:1" }]\n'
    ok += '    health_check {\n      interval = "5s"\n    }\n  }\n}\n'
    result = load(ok)
    assert result.errors == (), [p.format() for p in result.errors]
