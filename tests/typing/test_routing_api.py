"""Type-level checks over the pure routing API (SPEC §2.8), checked by ``mypy --strict``."""

from __future__ import annotations

from typing import assert_type

from a3s_gateway.routing import (
    CompiledRule,
    HttpRequestInfo,
    Route,
    RouteTable,
    TcpConnInfo,
    TcpRoute,
    TcpRouteTable,
    compile_rule,
)
from a3s_gateway.routing.clienthello import ClientHelloResult, parse_client_hello


def test_routing_api_is_typed() -> None:
    rule = compile_rule("PathPrefix(`/`)")
    assert_type(rule, CompiledRule)
    assert_type(rule.default_priority, int)
    assert_type(rule.matches(HttpRequestInfo("GET", "h", "/")), bool)
    table = RouteTable([Route(name="r", rule=rule, service="s")])
    assert_type(table.select(HttpRequestInfo("GET", "h", "/"), "web"), Route | None)
    tcp = TcpRouteTable(
        [TcpRoute(name="t", rule=compile_rule("HostSNI(`*`)", kind="tcp"), service="s")]
    )
    assert_type(tcp.select(TcpConnInfo(sni="a"), "tcp"), TcpRoute | None)
    assert_type(parse_client_hello(b"\x16\x03\x01"), ClientHelloResult)
