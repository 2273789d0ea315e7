"""Traefik v2 rule semantics (SPEC §4.9, extension; a router's ``rule_syntax = "v2"``).

Ring 0: pure. Same lexer, parser and operators as v3; the differences are in the matchers,
which follow Traefik's v2 matchers (``pkg/muxer/http/matcher_v2.go``,
``pkg/muxer/tcp/matcher_v2.go``) and the gorilla/mux templates they build on:

* Most matchers take several arguments, OR-ed. ``Headers`` and ``HeadersRegexp`` take two.
* Templates ``{name}`` / ``{name:re}`` in ``Host``, ``HostRegexp``, ``Path``, ``PathPrefix``,
  ``Query`` and ``HostSNIRegexp``: text outside braces is literal, the whole argument is
  anchored (``PathPrefix`` at the start only), host and SNI templates ignore case. ``{name}``
  means ``[^.]+`` in hosts and SNIs, ``[^/]+`` in paths and ``.*`` in query values. So a
  ``HostRegexp`` or ``HostSNIRegexp`` argument without braces is a literal name, not a regex.
  Unbalanced braces, an empty name or an empty ``:re`` are errors, as in Traefik. A template
  whose regex does not compile never matches and adds a warning (SPEC §4.9; Traefik rejects
  the rule instead).
* ``HeadersRegexp`` has no template form (gorilla/mux ``HeadersRegexp`` compiles its value as
  a plain regex), so ``{`` there is RE2's literal brace.
* ``Query(`k=v`)``: ``k=<first value of k>`` must match the anchored template ``k=v``; an empty
  ``v`` accepts any value of a present key. All arguments must match.
* ``HostSNI``: exact names and IP literals, lower-cased, one trailing dot ignored; no ``*.``
  wildcard (an error, as in Traefik v2). ``*`` as the first argument matches every connection;
  ``*`` elsewhere matches any non-empty SNI (Traefik's v2 matcher tests ``hosts[0]`` first).

Must not: accept v3-only matchers (``Header``, ``HeaderRegexp``, ``PathRegexp``,
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

#: Default patterns of ``{name}`` (gorilla/mux ``newRouteRegexp``, Traefik ``preparePattern``).
HOST_PART: Final = "[^.]+"
PATH_PART: Final = "[^/]+"
QUERY_PART: Final = ".*"

#: Traefik v2 ``hostOrIPv2``: ``^[[:word:]\.\-\:]+$`` (no ``*.`` wildcard in v2).
_SNI_V2_SHAPE: Final = re.compile(r"[A-Za-z0-9_.:-]+\Z")
#: The characters Go's ``regexp.QuoteMeta`` escapes.
_META: Final = frozenset("\\.+*?()|[]{}^$")


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


class TemplateError(ValueError):
    """A malformed ``{name:re}`` template (unbalanced braces, empty name or pattern)."""


def quote_meta(text: str) -> str:
    """``text`` as a regex matching it literally (Go's ``regexp.QuoteMeta``)."""
    return "".join("\\" + char if char in _META else char for char in text)


def template_regex(text: str, *, default: str) -> str:
    """The regex body (no anchors, no flags) of a template; ``{name}`` stands for ``default``.

    Built like gorilla/mux ``newRouteRegexp``: top-level brace pairs are variables, split at
    their first ``:`` into a name (unused) and a pattern; everything else is quoted.
    Raises ``TemplateError``.
    """
    out: list[str] = []
    end = 0
    for start, stop in _brace_spans(text):
        out.append(quote_meta(text[end:start]))
        name, colon, pattern = text[start + 1 : stop - 1].partition(":")
        if not colon:
            pattern = default
        if not name or not pattern:
            raise TemplateError(f'missing name or pattern in "{text[start:stop]}"')
        out.append(f"(?:{pattern})")
        end = stop
    out.append(quote_meta(text[end:]))
    return "".join(out)


def _brace_spans(text: str) -> list[tuple[int, int]]:
    """``(start, stop)`` of each top-level ``{…}`` (gorilla/mux ``braceIndices``)."""
    spans: list[tuple[int, int]] = []
    level = start = 0
    for index, char in enumerate(text):
        if char == "{":
            level += 1
            if level == 1:
                start = index
        elif char == "}":
            level -= 1
            if level == 0:
                spans.append((start, index + 1))
            elif level < 0:
                break
    if level != 0:
        raise TemplateError(f'unbalanced braces in "{text}"')
    return spans


def _template(
    call: Call,
    index: int,
    warnings: list[str],
    *,
    default: str,
    ignore_case: bool = False,
    anchor_end: bool = True,
    suffix: str = "",
) -> re.Pattern[str] | None:
    """Argument ``index`` compiled as an anchored template, or None (a warning is added) when
    its regex does not compile. A malformed template raises ``RuleSyntaxError``."""
    text = call.args[index]
    try:
        body = template_regex(text, default=default) + suffix
    except TemplateError as error:
        raise RuleSyntaxError(f"{call.name}: {error}", call.arg_columns[index]) from None
    try:
        return compile_regex("^" + body + ("$" if anchor_end else ""), ignore_case=ignore_case)
    except RegexError as error:
        warnings.append(f'{call.name} template "{text}" never matches: {error}')
        return None


def _host_template(call: Call, index: int, warnings: list[str]) -> HttpMatcher:
    pattern = _template(call, index, warnings, default=HOST_PART, ignore_case=True)
    return m.Never() if pattern is None else m.HostPattern(pattern)


def _path_template(call: Call, index: int, warnings: list[str], *, prefix: bool) -> HttpMatcher:
    pattern = _template(call, index, warnings, default=PATH_PART, anchor_end=not prefix)
    return m.Never() if pattern is None else m.PathPattern(pattern)


# -- HTTP leaves ----------------------------------------------------------------------------------


def _host(call: Call, warnings: list[str]) -> HttpMatcher:
    # Host templates are SPEC §4.9's extension: Traefik's hostV2 compares names only (no
    # templates, and "*" is literal there), so only a "{" makes an argument a template.
    def one(index: int) -> HttpMatcher:
        ascii_argument(call, index)
        if "{" in call.args[index]:
            return _host_template(call, index, warnings)
        return host_matcher(call, index, warnings)

    return _any(call, one)


def _host_regexp(call: Call, warnings: list[str]) -> HttpMatcher:
    def one(index: int) -> HttpMatcher:
        ascii_argument(call, index)  # Traefik's hostRegexpV2 rejects non-ASCII
        return _host_template(call, index, warnings)

    return _any(call, one)


def _path(call: Call, warnings: list[str], *, prefix: bool) -> HttpMatcher:
    def one(index: int) -> HttpMatcher:
        path = path_argument(call, index)
        # gorilla/mux parses every Path as a template, so a stray "}" is an error there too.
        if "{" in call.args[index] or "}" in call.args[index]:
            return _path_template(call, index, warnings, prefix=prefix)
        return m.PathStartsWith(path) if prefix else m.PathIs(path)

    return _any(call, one)


def _method(call: Call, warnings: list[str]) -> HttpMatcher:
    return _any(call, lambda i: m.MethodIs(call.args[i].upper()))


def _client_ip(call: Call, warnings: list[str]) -> HttpMatcher:
    return _any(call, lambda i: client_ip_matcher(call, i))


def _headers(call: Call, warnings: list[str]) -> HttpMatcher:
    return m.HeaderIs(call.args[0].lower(), call.args[1])


def _headers_regexp(call: Call, warnings: list[str]) -> HttpMatcher:
    # No template form: gorilla/mux HeadersRegexp compiles the value as a plain regex, so
    # ``http{secure:s?}`` matches the text "http{secure:s}" (Traefik's own v2 test says so).
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
        # gorilla/mux appends the default pattern when the value is empty: any value matches.
        suffix = "" if value else QUERY_PART
        pattern = _template(call, index, warnings, default=QUERY_PART, suffix=suffix)
        pairs.append(m.Never() if pattern is None else m.QueryTemplate(key, pattern))
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


# -- TCP leaves -----------------------------------------------------------------------------------


def _sni(call: Call, warnings: list[str]) -> TcpMatcher:
    names: list[str] = []
    for index, value in enumerate(call.args):
        if value != "*" and not _SNI_V2_SHAPE.match(value):
            raise RuleSyntaxError(
                f'HostSNI argument "{value}" is not a host name, IP literal or "*" '
                '(v2 syntax has no "*." wildcard)',
                call.arg_columns[index],
            )
        names.append(value.lower().removesuffix("."))
    if names[0] == "*":
        return m.Always()
    # A later "*" matches any SNI but the empty one: Traefik's hostSNIV2 returns early only
    # for hosts[0] == "*", then rejects an empty server name before looking at the others.
    parts = tuple(m.Negated(m.SniIs("")) if name == "*" else m.SniIs(name) for name in names)
    return parts[0] if len(parts) == 1 else m.AnyOf(parts)


def _sni_regexp(call: Call, warnings: list[str]) -> TcpMatcher:
    # Traefik's hostSNIRegexpV2 has no ASCII check (its v3 HostSNIRegexp and v2 HostRegexp do).
    def one(index: int) -> TcpMatcher:
        pattern = _template(call, index, warnings, default=HOST_PART, ignore_case=True)
        return m.Never() if pattern is None else m.SniPattern(pattern)

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
