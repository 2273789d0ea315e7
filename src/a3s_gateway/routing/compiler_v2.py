"""Traefik v2 rule semantics (SPEC §4.9, extension; a router's ``rule_syntax = "v2"``).

Ring 0: pure. Same lexer, parser and operators as v3; the differences are in the matchers:
most take several arguments that are OR-ed, ``Query`` takes ``k=v`` pairs that must all match,
and ``Host``, ``HostRegexp``, ``Path`` and ``PathPrefix`` accept ``{name}`` / ``{name:re}``
templates. A template whose regex does not compile never matches and adds a warning, as in
Traefik. Must not: accept v3-only matchers (``Header``, ``HeaderRegexp``, ``PathRegexp``,
``QueryRegexp``).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from a3s_gateway.routing import matchers as m
from a3s_gateway.routing.leaves import (
    TCP_ARITY,
    alpn_matcher,
    ascii_argument,
    build_matcher,
    client_ip_matcher,
    host_matcher,
    path_argument,
    regex_argument,
    sni_matcher,
)
from a3s_gateway.routing.regex import RegexError, compile_regex
from a3s_gateway.routing.rules import Call, Node, RuleSyntaxError, check_calls

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.routing.leaves import (
        HttpLeafBuilder,
        HttpMatcher,
        TcpLeafBuilder,
        TcpMatcher,
    )
    from a3s_gateway.routing.request import ConnView, RequestView

MANY: Final = 1 << 16
HTTP_V2_ARITY: Final[Mapping[str, tuple[int, int]]] = {
    "Host": (1, MANY),
    "HostHeader": (1, MANY),
    "HostRegexp": (1, MANY),
    "Path": (1, MANY),
    "PathPrefix": (1, MANY),
    "Method": (1, MANY),
    "ClientIP": (1, MANY),
    "Headers": (2, 2),
    "HeadersRegexp": (2, 2),
    "Query": (1, MANY),
}
TCP_V2_ARITY: Final[Mapping[str, tuple[int, int]]] = dict.fromkeys(TCP_ARITY, (1, MANY))


def compile_v2_http(tree: Node, warnings: list[str]) -> tuple[HttpMatcher, Node]:
    """Check an HTTP rule against the v2 tables and build its matchers."""
    checked = check_calls(tree, HTTP_V2_ARITY)
    return build_matcher(checked, _HTTP_V2_LEAVES, warnings), checked


def compile_v2_tcp(tree: Node, warnings: list[str]) -> tuple[TcpMatcher, Node]:
    """Check a TCP rule against the v2 tables and build its matchers."""
    checked = check_calls(tree, TCP_V2_ARITY)
    return build_matcher(checked, _TCP_V2_LEAVES, warnings), checked


def _any(call: Call, one: Callable[[int], m.Matcher[RequestView]]) -> m.Matcher[RequestView]:
    parts = tuple(one(index) for index in range(len(call.args)))
    return parts[0] if len(parts) == 1 else m.AnyOf(parts)


def _any_tcp(call: Call, one: Callable[[int], m.Matcher[ConnView]]) -> m.Matcher[ConnView]:
    parts = tuple(one(index) for index in range(len(call.args)))
    return parts[0] if len(parts) == 1 else m.AnyOf(parts)


# -- templates ------------------------------------------------------------------------------------


def template_regex(text: str, *, host: bool) -> str:
    """``{name}`` / ``{name:re}`` templates → one regex body; text outside braces is literal."""
    out: list[str] = []
    index = 0
    while index < len(text):
        start = text.find("{", index)
        if start < 0:
            out.append(re.escape(text[index:]))
            break
        out.append(re.escape(text[index:start]))
        end = _closing_brace(text, start)
        _, _, pattern = text[start + 1 : end].partition(":")  # the name is not used
        default = "[^.]+" if host else "[^/]+"
        out.append(f"(?:{pattern or default})")
        index = end + 1
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "{":
            depth += 1
        elif text[index] == "}":
            depth -= 1
            if depth == 0:
                return index
    raise ValueError("unbalanced braces in template")


def _template(
    call: Call, index: int, warnings: list[str], *, host: bool, anchor_end: bool
) -> m.Matcher[RequestView]:
    text = call.args[index]
    try:
        body = template_regex(text, host=host)
        pattern = compile_regex("^" + body + ("$" if anchor_end else ""), ignore_case=host)
    except (RegexError, ValueError) as error:
        warnings.append(f'{call.name} template "{text}" never matches: {error}')
        return m.Never()
    if host:
        return m.HostPattern(pattern)
    return m.PathPattern(pattern)


# -- leaves ---------------------------------------------------------------------------------------


def _host(call: Call, warnings: list[str]) -> HttpMatcher:
    def one(index: int) -> HttpMatcher:
        ascii_argument(call, index)
        if "{" in call.args[index]:
            return _template(call, index, warnings, host=True, anchor_end=True)
        return host_matcher(call, index, warnings)

    return _any(call, one)


def _host_regexp(call: Call, warnings: list[str]) -> HttpMatcher:
    return _any(call, lambda i: _template(call, i, warnings, host=True, anchor_end=True))


def _path(call: Call, warnings: list[str], *, prefix: bool) -> HttpMatcher:
    def one(index: int) -> HttpMatcher:
        path = path_argument(call, index)
        if "{" in call.args[index]:
            return _template(call, index, warnings, host=False, anchor_end=not prefix)
        return m.PathStartsWith(path) if prefix else m.PathIs(path)

    return _any(call, one)


def _method(call: Call, warnings: list[str]) -> HttpMatcher:
    return _any(call, lambda i: m.MethodIs(call.args[i].upper()))


def _client_ip(call: Call, warnings: list[str]) -> HttpMatcher:
    return _any(call, lambda i: client_ip_matcher(call, i))


def _headers(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.HeaderIs(call.args[0].lower(), call.args[1])


def _headers_regexp(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.HeaderPattern(call.args[0].lower(), regex_argument(call, 1))


def _query(call: Call, warnings: list[str]) -> HttpMatcher:
    pairs: list[HttpMatcher] = []
    for index, argument in enumerate(call.args):
        key, equals, value = argument.partition("=")
        if not equals:
            raise RuleSyntaxError(
                f'Query argument "{argument}" must be key=value (v2 syntax)',
                call.arg_columns[index],
            )
        pairs.append(m.QueryIs(key, value))
    return pairs[0] if len(pairs) == 1 else m.AllOf(tuple(pairs))


_HTTP_V2_LEAVES: Final[Mapping[str, HttpLeafBuilder]] = {
    "Host": _host,
    "HostHeader": _host,
    "HostRegexp": _host_regexp,
    "Path": lambda call, warnings: _path(call, warnings, prefix=False),
    "PathPrefix": lambda call, warnings: _path(call, warnings, prefix=True),
    "Method": _method,
    "ClientIP": _client_ip,
    "Headers": _headers,
    "HeadersRegexp": _headers_regexp,
    "Query": _query,
}


def _sni(call: Call, warnings: list[str]) -> TcpMatcher:
    return _any_tcp(call, lambda i: sni_matcher(call, i))


def _sni_regexp(call: Call, warnings: list[str]) -> TcpMatcher:
    def one(index: int) -> TcpMatcher:
        ascii_argument(call, index)
        return m.SniPattern(regex_argument(call, index))

    return _any_tcp(call, one)


def _tcp_client_ip(call: Call, warnings: list[str]) -> TcpMatcher:
    return _any_tcp(call, lambda i: client_ip_matcher(call, i))


def _alpn(call: Call, warnings: list[str]) -> TcpMatcher:
    return _any_tcp(call, lambda i: alpn_matcher(call, i))


_TCP_V2_LEAVES: Final[Mapping[str, TcpLeafBuilder]] = {
    "HostSNI": _sni,
    "HostSNIRegexp": _sni_regexp,
    "ClientIP": _tcp_client_ip,
    "ALPN": _alpn,
}
