"""Routing: the rule language, compiled matchers and route tables (SPEC §4; pure API §2.8).

Ring 0: no trio, sockets, TLS, clock or logging. ``compile_rule`` turns rule text into a
``CompiledRule``; ``RouteTable`` and ``TcpRouteTable`` order routers (SPEC §4.7) and find the
first match for a request or connection; ``a3s_gateway.routing.clienthello.parse_client_hello``
reads SNI and ALPN from a peeked ClientHello. May import only ``config``'s value types and
"did you mean" helper; ``config`` imports this package to check rules at validation.
"""

from __future__ import annotations

from a3s_gateway.routing.compiler import CompiledRule, RuleKind, RuleSyntax, compile_rule
from a3s_gateway.routing.request import (
    ConnView,
    HttpRequestInfo,
    InvalidPathEscape,
    RequestView,
    TcpConnInfo,
)
from a3s_gateway.routing.rules import RuleSyntaxError
from a3s_gateway.routing.table import Route, RouteTable
from a3s_gateway.routing.tcp import TcpRoute, TcpRouteTable

__all__ = [
    "CompiledRule",
    "ConnView",
    "HttpRequestInfo",
    "InvalidPathEscape",
    "RequestView",
    "Route",
    "RouteTable",
    "RuleKind",
    "RuleSyntax",
    "RuleSyntaxError",
    "TcpConnInfo",
    "TcpRoute",
    "TcpRouteTable",
    "compile_rule",
]
