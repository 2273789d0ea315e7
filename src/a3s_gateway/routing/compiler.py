"""Rule compilation: text → parsed tree → checked names and arities → matcher objects
(SPEC §4.1–4.3, §4.7, §4.9, §4.10; the pure API ``compile_rule`` of SPEC §2.8).

Ring 0: pure. Every argument is validated and normalised here, once per config: hosts are
lower-cased, paths must start with ``/``, regexes are compiled in the RE2 flavour, CIDRs parsed.
A problem raises ``RuleSyntaxError`` with the 1-based column of the offending argument or name.
Traefik v2 rules (``syntax="v2"``) are handled by ``compiler_v2.py`` and produce the same
matcher objects; the argument checks and leaf builders both use live in ``leaves.py``. Must
not: match requests (that is ``matchers.py``) or read any clock or I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from a3s_gateway.routing import matchers as m
from a3s_gateway.routing.compiler_v2 import compile_v2_http, compile_v2_tcp
from a3s_gateway.routing.leaves import (
    TCP_ARITY,
    HttpLeafBuilder,
    HttpMatcher,
    TcpLeafBuilder,
    TcpMatcher,
    alpn_matcher,
    ascii_argument,
    build_matcher,
    client_ip_matcher,
    host_matcher,
    path_argument,
    regex_argument,
    sni_matcher,
)
from a3s_gateway.routing.request import ConnView, HttpRequestInfo, RequestView, TcpConnInfo
from a3s_gateway.routing.rules import (
    Call,
    Node,
    RuleSyntaxError,
    check_calls,
    leaves,
    parse_rule,
    resolve_name,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

RuleKind: TypeAlias = Literal["http", "tcp"]
RuleSyntax: TypeAlias = Literal["v3", "v2"]

HTTP_ARITY: Final[Mapping[str, tuple[int, int]]] = {
    "Host": (1, 1),
    "HostRegexp": (1, 1),
    "Path": (1, 1),
    "PathPrefix": (1, 1),
    "PathRegexp": (1, 1),
    "Method": (1, 1),
    "Header": (2, 2),
    "HeaderRegexp": (2, 2),
    "Query": (1, 2),
    "QueryRegexp": (1, 2),
    "ClientIP": (1, 1),
}
#: A3S spellings accepted in v3 rules (SPEC §4.2).
HTTP_ALIASES: Final[Mapping[str, str]] = {
    "Headers": "Header",
    "HeadersRegexp": "HeaderRegexp",
    "HostHeader": "Host",
}


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to match: ``matches(info)`` and ``default_priority`` (SPEC §2.8, §4.7).

    Exactly one of ``http`` and ``tcp`` is set, according to ``kind``.
    """

    text: str
    kind: RuleKind
    syntax: RuleSyntax
    http: HttpMatcher | None
    tcp: TcpMatcher | None
    default_priority: int
    #: Exact hosts one of which the rule requires (route-table index), or ``None``.
    hosts: frozenset[str] | None = None
    #: A byte prefix the routing path must start with (route-table index), or ``None``.
    path_prefix: bytes | None = None
    #: TCP: whether matching needs the ClientHello (SNI or ALPN) at all (SPEC §4.11).
    needs_client_hello: bool = False
    #: TCP: the rule is the single leaf ``HostSNI(`*`)`` (default priority −1, SPEC §4.7).
    catch_all: bool = False
    warnings: tuple[str, ...] = ()

    def matches(self, info: HttpRequestInfo | TcpConnInfo | RequestView | ConnView) -> bool:
        """Evaluate against raw request/connection info or a prepared view.

        Raises ``InvalidPathEscape`` for an HTTP path with a bad ``%`` escape (the data plane
        answers 400 before routing), and ``TypeError`` for info of the other kind.
        """
        if isinstance(info, HttpRequestInfo):
            info = RequestView.from_info(info)
        elif isinstance(info, TcpConnInfo):
            info = ConnView.from_info(info)
        if self.http is not None and isinstance(info, RequestView):
            return self.http.matches(info)
        if self.tcp is not None and isinstance(info, ConnView):
            return self.tcp.matches(info)
        raise TypeError(f"a {self.kind} rule cannot match {type(info).__name__}")


def compile_rule(text: str, *, kind: RuleKind = "http", syntax: RuleSyntax = "v3") -> CompiledRule:
    """Parse and compile ``text`` (SPEC §2.8). Raises ``RuleSyntaxError(message, column)``."""
    tree = parse_rule(text)
    warnings: list[str] = []
    if kind == "http":
        if syntax == "v2":
            http, tree = compile_v2_http(tree, warnings)
        else:
            http = build_matcher(_checked(tree, kind), _HTTP_LEAVES, warnings)
        return CompiledRule(
            text,
            kind,
            syntax,
            http=http,
            tcp=None,
            default_priority=len(text.encode()),
            hosts=required_hosts(http),
            path_prefix=required_prefix(http),
            warnings=tuple(warnings),
        )
    if syntax == "v2":
        tcp, tree = compile_v2_tcp(tree, warnings)
    else:
        tree = _checked(tree, kind)
        tcp = build_matcher(tree, _TCP_LEAVES, warnings)
    catch_all = isinstance(tree, Call) and tree.name == "HostSNI" and tree.args == ("*",)
    return CompiledRule(
        text,
        kind,
        syntax,
        http=None,
        tcp=tcp,
        default_priority=-1 if catch_all else len(text.encode()),
        needs_client_hello=_needs_client_hello(tree),
        catch_all=catch_all,
        warnings=tuple(warnings),
    )


def _checked(tree: Node, kind: RuleKind) -> Node:
    own, other = (HTTP_ARITY, TCP_ARITY) if kind == "http" else (TCP_ARITY, HTTP_ARITY)
    aliases = HTTP_ALIASES if kind == "http" else {}
    for call in leaves(tree):
        known = resolve_name(call.name, [*own, *aliases]) is not None
        foreign = resolve_name(call.name, [*other, *(HTTP_ALIASES if kind == "tcp" else {})])
        if not known and foreign is not None:
            where = "TCP" if kind == "tcp" else "HTTP"
            raise RuleSyntaxError(f"matcher {foreign} is not valid in {where} rules", call.column)
    return check_calls(tree, own, aliases=aliases)


# -- HTTP leaves -----------------------------------------------------------------------------------


def _host(call: Call, warnings: list[str]) -> HttpMatcher:
    return host_matcher(call, 0, warnings)


def _host_regexp(call: Call, warnings: list[str]) -> HttpMatcher:
    ascii_argument(call, 0)
    return m.HostPattern(regex_argument(call, 0))


def _path(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.PathIs(path_argument(call))


def _path_prefix(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.PathStartsWith(path_argument(call))


def _path_regexp(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.PathPattern(regex_argument(call, 0))


def _method(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.MethodIs(call.args[0].upper())


def _header(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.HeaderIs(call.args[0].lower(), call.args[1])


def _header_regexp(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.HeaderPattern(call.args[0].lower(), regex_argument(call, 1))


def _query(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.QueryIs(call.args[0], call.args[1] if len(call.args) == 2 else "")


def _query_regexp(call: Call, warnings: list[str]) -> HttpMatcher:
    if len(call.args) == 1:
        return m.QueryIs(call.args[0], "")
    return m.QueryPattern(call.args[0], regex_argument(call, 1))


def _client_ip(call: Call, warnings: list[str]) -> m.ClientIpIn:
    return client_ip_matcher(call)


def _tcp_client_ip(call: Call, warnings: list[str]) -> TcpMatcher:
    return client_ip_matcher(call)


_HTTP_LEAVES: Final[Mapping[str, HttpLeafBuilder]] = {
    "Host": _host,
    "HostRegexp": _host_regexp,
    "Path": _path,
    "PathPrefix": _path_prefix,
    "PathRegexp": _path_regexp,
    "Method": _method,
    "Header": _header,
    "HeaderRegexp": _header_regexp,
    "Query": _query,
    "QueryRegexp": _query_regexp,
    "ClientIP": _client_ip,
}


# -- TCP leaves ------------------------------------------------------------------------------------


def _host_sni(call: Call, warnings: list[str]) -> TcpMatcher:
    return sni_matcher(call, 0)


def _host_sni_regexp(call: Call, warnings: list[str]) -> TcpMatcher:
    ascii_argument(call, 0)
    return m.SniPattern(regex_argument(call, 0))


def _alpn(call: Call, warnings: list[str]) -> TcpMatcher:
    return alpn_matcher(call, 0)


_TCP_LEAVES: Final[Mapping[str, TcpLeafBuilder]] = {
    "HostSNI": _host_sni,
    "HostSNIRegexp": _host_sni_regexp,
    "ClientIP": _tcp_client_ip,
    "ALPN": _alpn,
}


# -- facts about compiled rules --------------------------------------------------------------------


def required_hosts(matcher: HttpMatcher) -> frozenset[str] | None:
    """Exact hosts of which a request must have one to match, if the rule says so."""
    if isinstance(matcher, m.HostIs):
        return frozenset({matcher.host})
    if isinstance(matcher, m.AllOf):
        found = [required_hosts(part) for part in matcher.parts]
        known = [hosts for hosts in found if hosts is not None]
        return frozenset.intersection(*known) if known else None
    if isinstance(matcher, m.AnyOf):
        found = [required_hosts(part) for part in matcher.parts]
        if all(hosts is not None for hosts in found):
            return frozenset().union(*(h for h in found if h is not None))
    return None


def required_prefix(matcher: HttpMatcher) -> bytes | None:
    """A byte prefix every matching routing path starts with, if the rule says so (the
    longest one found among the top-level ``&&`` parts)."""
    if isinstance(matcher, m.PathStartsWith):
        return matcher.prefix
    if isinstance(matcher, m.PathIs):
        return matcher.path
    if isinstance(matcher, m.AllOf):
        found = [required_prefix(part) for part in matcher.parts]
        known = [prefix for prefix in found if prefix is not None]
        return max(known, key=len) if known else None
    return None


def _needs_client_hello(tree: Node) -> bool:
    """False when every leaf is ``HostSNI(`*`)`` or ``ClientIP`` (SPEC §4.11)."""
    return any(
        not (call.name == "ClientIP" or (call.name == "HostSNI" and call.args == ("*",)))
        for call in leaves(tree)
    )
