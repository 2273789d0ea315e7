"""The leaves of both rule syntaxes: argument checks, the matcher builders each leaf name
needs and ``build_matcher``, shared by ``compiler.py`` (Traefik v3 rules) and
``compiler_v2.py`` (v2 rules), which produce the same matcher objects.

Ring 0: pure, once per config. A bad argument raises ``RuleSyntaxError`` with its column.
Must not: parse rule text (``rules.py``) or choose a syntax (``compiler.py``); importing either
compiler would close the cycle this module exists to break.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Final, TypeAlias

from a3s_gateway.config.values import IpNetwork
from a3s_gateway.routing import matchers as m
from a3s_gateway.routing.regex import RegexError, compile_regex
from a3s_gateway.routing.request import ConnView, RequestView
from a3s_gateway.routing.rules import And, Call, Node, Not, Or, RuleSyntaxError

__all__ = [
    "ACME_ALPN",
    "TCP_ARITY",
    "HttpLeafBuilder",
    "HttpMatcher",
    "TcpLeafBuilder",
    "TcpMatcher",
    "alpn_matcher",
    "ascii_argument",
    "build_matcher",
    "client_ip_matcher",
    "host_matcher",
    "path_argument",
    "regex_argument",
    "sni_matcher",
]

HttpMatcher: TypeAlias = m.Matcher[RequestView]
TcpMatcher: TypeAlias = m.Matcher[ConnView]

TCP_ARITY: Final[Mapping[str, tuple[int, int]]] = {
    "HostSNI": (1, 1),
    "HostSNIRegexp": (1, 1),
    "ClientIP": (1, 1),
    "ALPN": (1, 1),
}
_SNI_SHAPE: Final = re.compile(r"(\*\.)?[A-Za-z0-9_.:-]+\Z")
ACME_ALPN: Final = "acme-tls/1"


HttpLeafBuilder: TypeAlias = Callable[[Call, list[str]], HttpMatcher]
TcpLeafBuilder: TypeAlias = Callable[[Call, list[str]], TcpMatcher]


def build_matcher(
    tree: Node,
    builders: Mapping[str, Callable[[Call, list[str]], m.Matcher[m.View]]],
    warnings: list[str],
) -> m.Matcher[m.View]:
    """Matcher objects for a checked tree; ``&&``/``||`` chains are flattened."""
    match tree:
        case Call():
            return builders[tree.name](tree, warnings)
        case Not():
            return m.Negated(build_matcher(tree.operand, builders, warnings))
        case And():
            return m.AllOf(tuple(build_matcher(p, builders, warnings) for p in _chain(tree, And)))
        case Or():
            return m.AnyOf(tuple(build_matcher(p, builders, warnings) for p in _chain(tree, Or)))


def _chain(tree: And | Or, kind: type[And] | type[Or]) -> list[Node]:
    """The operands of a left-associative chain of one operator, in order."""
    out: list[Node] = []
    stack: list[Node] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, kind):
            stack += [node.right, node.left]
        else:
            out.append(node)
    return out


def ascii_argument(call: Call, index: int) -> str:
    """Argument ``index``, which must be ASCII."""
    value = call.args[index]
    if not value.isascii():
        raise RuleSyntaxError(f"{call.name} argument must be ASCII", call.arg_columns[index])
    return value


def regex_argument(call: Call, index: int, *, ignore_case: bool = False) -> re.Pattern[str]:
    """Argument ``index`` compiled as an RE2-flavoured regex."""
    try:
        return compile_regex(call.args[index], ignore_case=ignore_case)
    except RegexError as error:
        raise RuleSyntaxError(f"{call.name}: {error}", call.arg_columns[index]) from None


def path_argument(call: Call, index: int = 0) -> bytes:
    """Argument ``index``, which must start with ``/``, as UTF-8 bytes."""
    value = call.args[index]
    if not value.startswith("/"):
        raise RuleSyntaxError(f'{call.name} argument must start with "/"', call.arg_columns[index])
    return value.encode()


def host_matcher(call: Call, index: int, warnings: list[str]) -> HttpMatcher:
    """``Host``: exact, ``*`` (everything) or ``*.suffix`` (exactly one more label)."""
    host = ascii_argument(call, index).lower().removesuffix(".")
    if host == "*":
        return m.Always()
    if host.startswith("*.") and "*" not in host[2:]:
        return m.HostUnder(host[1:])
    if "*" in host:
        warnings.append(
            f'Host argument "{host}" has "*" outside a leading "*." label; '
            "it is compared literally (use HostRegexp for patterns)"
        )
    return m.HostIs(host)


def client_ip_matcher(call: Call, index: int = 0) -> m.ClientIpIn:
    """``ClientIP``: an address or CIDR (host bits allowed)."""
    try:
        return m.ClientIpIn(IpNetwork(call.args[index]).network)
    except ValueError as error:
        raise RuleSyntaxError(f"{call.name}: {error}", call.arg_columns[index]) from None


def sni_matcher(call: Call, index: int) -> TcpMatcher:
    """``HostSNI``: ``*``, an exact name or ``*.suffix`` (SPEC §4.10)."""
    value = call.args[index]
    if value == "*":
        return m.Always()
    if not _SNI_SHAPE.match(value) or "*" in value[2:]:
        raise RuleSyntaxError(
            f'HostSNI argument "{value}" is not a host name, IP literal, "*" or "*.<domain>"',
            call.arg_columns[index],
        )
    name = value.lower().removesuffix(".")
    return m.SniUnder(name[1:]) if name.startswith("*.") else m.SniIs(name)


def alpn_matcher(call: Call, index: int) -> TcpMatcher:
    """``ALPN``: a protocol the ClientHello offers; ``acme-tls/1`` is reserved (SPEC §12.2)."""
    if call.args[index] == ACME_ALPN:
        raise RuleSyntaxError(f'ALPN "{ACME_ALPN}" is reserved for ACME', call.arg_columns[index])
    return m.AlpnOffers(call.args[index])
