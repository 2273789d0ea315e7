"""Traefik's own v2-syntax HTTP matcher cases, replayed against our compiler (SPEC §4.9).

The rows below are data taken from ``pkg/muxer/http/matcher_v2_test.go`` (traefik/traefik,
master, v3.x): ``TestClientIPV2Matcher``, ``TestMethodV2Matcher``, ``TestHostV2Matcher``,
``TestHostRegexpV2Matcher``, ``TestPathV2Matcher``, ``TestPathPrefixV2Matcher``,
``TestHeadersMatcher``, ``TestHeaderRegexpV2Matcher``, ``TestHostRegexp`` and
``Test_addRoute`` (itself a copy of the v2 branch's ``mux_test.go``). Their semantics come from
``pkg/muxer/http/matcher_v2.go`` and the gorilla/mux fork (containous/mux) it builds on.

A Traefik row is a rule plus URLs (or header sets, methods, peers) and the status each gets:
200 is ``True`` here, 404 ``False``; a rule Traefik rejects is ``None``. Rows where we differ on
purpose carry a ``# differs:`` comment naming the rule we follow, and assert our behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest

from a3s_gateway.routing import HttpRequestInfo, RuleSyntaxError, compile_rule


@dataclass(frozen=True)
class Row:
    """One request tried against one rule; ``expected`` None means the rule is rejected."""

    desc: str
    rule: str
    expected: bool | None
    url: str = "https://example.com"
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    remote: str = "192.0.2.1:1234"

    def request(self) -> HttpRequestInfo:
        parts = urlsplit(self.url)
        return HttpRequestInfo(
            self.method,
            parts.netloc,
            parts.path or "/",
            self.headers,
            parts.query,
            self.remote,
        )


def rejected(desc: str, rule: str) -> Row:
    return Row(desc, rule, None)


def each_url(desc: str, rule: str, outcomes: dict[str, bool]) -> list[Row]:
    return [Row(f"{desc} [{url}]", rule, hit, url=url) for url, hit in outcomes.items()]


def each_method(desc: str, rule: str, outcomes: dict[str, bool]) -> list[Row]:
    return [Row(f"{desc} [{m}]", rule, hit, method=m) for m, hit in outcomes.items()]


def each_peer(desc: str, rule: str, outcomes: dict[str, bool]) -> list[Row]:
    return [Row(f"{desc} [{ip}]", rule, hit, remote=ip) for ip, hit in outcomes.items()]


def with_headers(
    desc: str, rule: str, outcomes: list[tuple[dict[str, list[str]], bool]]
) -> list[Row]:
    rows: list[Row] = []
    for fields, hit in outcomes:
        lines = tuple((name, value) for name, values in fields.items() for value in values)
        rows.append(Row(f"{desc} {lines}", rule, hit, headers=lines))
    return rows


def ids(rows: list[Row]) -> list[str]:
    return [row.desc for row in rows]


def check(row: Row) -> None:
    if row.expected is None:
        with pytest.raises(RuleSyntaxError):
            compile_rule(row.rule, syntax="v2")
        return
    assert compile_rule(row.rule, syntax="v2").matches(row.request()) is row.expected


# -- one matcher at a time ----------------------------------------------------------------------

PROTO = "X-Forwarded-Proto"
HOST_HEADER = "X-Forwarded-Host"
# Traefik's rows also try a header map keyed "x-forwarded-proto" and expect 404: Go's
# http.Header is looked up by canonical key, and those rows bypass the canonicalisation that
# net/http applies to every real request. HTTP field names are case-insensitive (RFC 9110 §5.1,
# SPEC §4.3), and ours are.
LOWER_PROTO = "x-forwarded-proto"

MATCHERS: list[Row] = [
    # TestClientIPV2Matcher (peers as Go's RemoteAddr, with or without a port)
    rejected("ClientIP: not an address", "ClientIP(`1`)"),
    rejected("ClientIP: no argument", "ClientIP()"),
    rejected("ClientIP: empty", "ClientIP(``)"),
    *each_peer(
        "ClientIP: several",
        "ClientIP(`127.0.0.1`, `192.168.1.0/24`)",
        {"127.0.0.1": True, "192.168.1.1": True},
    ),
    *each_peer("ClientIP: one", "ClientIP(`127.0.0.1`)", {"127.0.0.1": True, "192.168.1.1": False}),
    *each_peer("ClientIP: unparsable peer", "ClientIP(`127.0.0.1`)", {"1": False}),
    *each_peer(
        "ClientIP: CIDR",
        "ClientIP(`192.168.1.0/24`)",
        {"192.168.1.1": True, "192.168.1.100": True, "192.168.2.1": False},
    ),
    # TestMethodV2Matcher
    rejected("Method: no argument", "Method()"),
    rejected("Method: empty", "Method(``)"),
    *each_method("Method: several", "Method(`GET`, `POST`)", {"GET": True, "POST": True}),
    *each_method("Method: one", "Method(`GET`)", {"GET": True, "POST": False, "get": False}),
    *each_method(
        "Method: lower-case rule", "Method(`get`)", {"GET": True, "POST": False, "get": False}
    ),
    # TestHostV2Matcher
    rejected("Host: no argument", "Host()"),
    rejected("Host: empty", "Host(``)"),
    rejected("Host: non-ASCII", "Host(`🦭.com`)"),
    *each_url(
        "Host: several",
        "Host(`example.com`, `example.org`)",
        {
            "https://example.com": True,
            "https://example.com:8080": True,
            "https://example.com/path": True,
            "https://EXAMPLE.COM/path": True,
            "https://example.org": True,
            "https://example.org/path": True,
        },
    ),
    *each_url(
        "Host: one",
        "Host(`example.com`)",
        {
            "https://example.com": True,
            "https://example.com:8080": True,
            "https://example.com/path": True,
            "https://EXAMPLE.COM/path": True,
            "https://example.org": False,
            "https://example.org/path": False,
        },
    ),
    *each_url(
        "Host: trailing dot in rule",
        "Host(`example.com.`)",
        {
            "https://example.com": True,
            "https://example.com/path": True,
            "https://example.org": False,
            "https://example.org/path": False,
            "https://example.com.": True,
            "https://example.com./path": True,
            "https://example.org.": False,
            "https://example.org./path": False,
        },
    ),
    *each_url(
        "Host: trailing dot in URL",
        "Host(`example.com`)",
        {
            "https://example.com.": True,
            "https://example.com./path": True,
            "https://example.org.": False,
            "https://example.org./path": False,
        },
    ),
    *each_url(
        "Host: upper-case rule",
        "Host(`EXAMPLE.COM`)",
        {
            "https://example.com": True,
            "https://example.com/path": True,
            "https://example.org": False,
            "https://example.org/path": False,
        },
    ),
    *each_url(
        "Host: punycode",
        "Host(`xn--9t9h.com`)",
        {
            "https://xn--9t9h.com": True,
            "https://xn--9t9h.com/path": True,
            "https://example.com": False,
            "https://example.com/path": False,
            "https://🦭.com": False,  # the client must send punycode
        },
    ),
    # TestHostRegexpV2Matcher
    rejected("HostRegexp: no argument", "HostRegexp()"),
    rejected("HostRegexp: empty", "HostRegexp(``)"),
    rejected("HostRegexp: non-ASCII", "HostRegexp(`🦭.com`)"),
    # Without braces the argument is a literal name, so a broken regex is just odd text.
    *each_url(
        "HostRegexp: not a template, not a regex",
        "HostRegexp(`(example.com`)",
        {
            "https://example.com": False,
            "https://example.com:8080": False,
            "https://example.com/path": False,
            "https://example.org": False,
            "https://example.org/path": False,
        },
    ),
    *each_url(
        "HostRegexp: several",
        "HostRegexp(`example.com`, `example.org`)",
        {
            "https://example.com": True,
            "https://example.com:8080": True,
            "https://example.com/path": True,
            "https://example.org": True,
            "https://example.org/path": True,
        },
    ),
    *each_url(
        "HostRegexp: regex syntax outside braces is literal",
        r"HostRegexp(`^[A-Z]+\.com$`)",
        {
            "https://example.com": False,
            "https://EXAMPLE.com": False,
            "https://example.com/path": False,
            "https://example.org": False,
            "https://example.org/path": False,
        },
    ),
    *each_url(
        "HostRegexp: template",
        r"HostRegexp(`{domain:[a-zA-Z-]+\.com}`)",
        {
            "https://example.com": True,
            "https://example.com/path": True,
            "https://example.org": False,
            "https://example.org/path": False,
        },
    ),
    # TestPathV2Matcher
    rejected("Path: no argument", "Path()"),
    rejected("Path: empty", "Path(``)"),
    rejected("Path: no leading slash", "Path(`css`)"),
    *each_url(
        "Path: several",
        "Path(`/css`, `/js`)",
        {
            "https://example.com": False,
            "https://example.com/html": False,
            "https://example.org/css": True,
            "https://example.com/css": True,
            "https://example.com/css/": False,
            "https://example.com/css/main.css": False,
            "https://example.com/js": True,
            "https://example.com/js/main.js": False,
        },
    ),
    *each_url(
        "Path: one",
        "Path(`/css`)",
        {
            "https://example.com": False,
            "https://example.com/html": False,
            "https://example.org/css": True,
            "https://example.com/css": True,
            "https://example.com/css/": False,
            "https://example.com/css/main.css": False,
        },
    ),
    *each_url(
        "Path: template",
        "Path(`/css{path:(/.*)?}`)",
        {
            "https://example.com": False,
            "https://example.com/css/main.css": True,
            "https://example.org/css/main.css": True,
            "https://example.com/css/components/component.css": True,
            "https://example.com/css.css": False,
            "https://example.com/js/main.js": False,
        },
    ),
    # TestPathPrefixV2Matcher
    rejected("PathPrefix: no argument", "PathPrefix()"),
    rejected("PathPrefix: empty", "PathPrefix(``)"),
    rejected("PathPrefix: no leading slash", "PathPrefix(`css`)"),
    *each_url(
        "PathPrefix: several",
        "PathPrefix(`/css`, `/js`)",
        {
            "https://example.com": False,
            "https://example.com/html": False,
            "https://example.org/css": True,
            "https://example.com/css": True,
            "https://example.com/css/": True,
            "https://example.com/css/main.css": True,
            "https://example.com/js/": True,
            "https://example.com/js/main.js": True,
        },
    ),
    *each_url(
        "PathPrefix: one, double-quoted",
        'PathPrefix("/css")',
        {
            "https://example.com": False,
            "https://example.com/html": False,
            "https://example.org/css": True,
            "https://example.com/css": True,
            "https://example.com/css/": True,
            "https://example.com/css/main.css": True,
        },
    ),
    *each_url(
        "PathPrefix: template",
        "PathPrefix(`/css-{name:[0-9]?}`)",
        {
            "https://example.com": False,
            "https://example.com/css-1/main.css": True,
            "https://example.org/css-222/main.css": True,
            "https://example.com/css-333333/components/component.css": True,
            "https://example.com/css.css": False,
            "https://example.com/js/main.js": False,
        },
    ),
    # TestHeadersMatcher
    rejected("Headers: no argument", "Headers()"),
    rejected("Headers: one argument", f"Headers(`{HOST_HEADER}`)"),
    rejected("Headers: empty value", f"Headers(`{HOST_HEADER}`, ``)"),
    rejected("Headers: empty name", "Headers(``, `example.com`)"),
    rejected("Headers: three arguments", f"Headers(`{HOST_HEADER}`, `example.com`, `example.org`)"),
    *[
        row
        for name in (PROTO, LOWER_PROTO)
        for row in with_headers(
            f"Headers: rule names {name}",
            f"Headers(`{name}`, `https`)",
            [
                ({PROTO: ["https"]}, True),
                # differs: Traefik expects no match (see LOWER_PROTO above).
                ({LOWER_PROTO: ["https"]}, True),
                ({PROTO: ["http", "https"]}, True),
                ({PROTO: ["https", "http"]}, True),
                ({HOST_HEADER: ["example.com"]}, False),
            ],
        )
    ],
    # TestHeaderRegexpV2Matcher
    rejected("HeaderRegexp (v3 name), no argument", "HeaderRegexp()"),
    rejected("HeadersRegexp: one argument", f"HeadersRegexp(`{HOST_HEADER}`)"),
    rejected("HeadersRegexp: empty value", f"HeadersRegexp(`{HOST_HEADER}`, ``)"),
    rejected("HeadersRegexp: empty name", "HeadersRegexp(``, `example.com`)"),
    rejected("HeadersRegexp: bad regexp", f"HeadersRegexp(`{HOST_HEADER}`,`(example.com`)"),
    rejected(
        "HeadersRegexp: three arguments",
        f"HeadersRegexp(`{HOST_HEADER}`, `example.com`, `example.org`)",
    ),
    *[
        row
        for name in (PROTO, LOWER_PROTO)
        for row in with_headers(
            f"HeadersRegexp: rule names {name}",
            f"HeadersRegexp(`{name}`, `^https?$`)",
            [
                ({PROTO: ["http"]}, True),
                # differs: Traefik expects no match (see LOWER_PROTO above).
                ({LOWER_PROTO: ["http"]}, True),
                ({PROTO: ["https"]}, True),
                ({PROTO: ["HTTPS"]}, False),
                ({PROTO: ["ws", "https"]}, True),
                ({HOST_HEADER: ["example.com"]}, False),
            ],
        )
    ],
    # HeadersRegexp has no template form in Traefik v2: "{secure:s?}" is RE2 text where "{"
    # starts no repetition, so it is literal.
    *with_headers(
        "HeadersRegexp: braces are not a template",
        f"HeadersRegexp(`{PROTO}`, `http{{secure:s?}}`)",
        [
            ({PROTO: ["http"]}, False),
            ({PROTO: ["https"]}, False),
            ({PROTO: ["http{secure:}"]}, True),
            ({PROTO: ["HTTP{secure:}"]}, False),
            ({PROTO: ["http{secure:s}"]}, True),
            ({PROTO: ["http{secure:S}"]}, False),
            ({PROTO: ["HTTPS"]}, False),
            ({PROTO: ["ws", "http{secure:s}"]}, True),
            ({HOST_HEADER: ["example.com"]}, False),
        ],
    ),
]


@pytest.mark.parametrize("row", MATCHERS, ids=ids(MATCHERS))
def test_v2_matcher_cases(row: Row) -> None:
    check(row)


# -- TestHostRegexp ------------------------------------------------------------------------------

SUBDOMAIN_OUTCOMES = {
    "http://foo.bar.com": True,
    "http://bar.com": True,
    "http://fooubar.com": False,
    "http://barucom": False,
    "http://barcom": False,
}
CASE_OUTCOMES = {
    "http://FOO.bar.com": True,
    "http://foo.bar.com": True,
    "http://fooubar.com": False,
    "http://barucom": False,
    "http://barcom": False,
}

HOST_REGEXP: list[Row] = [
    *each_url("capturing group", r"HostRegexp(`{subdomain:(foo\.)?bar\.com}`)", SUBDOMAIN_OUTCOMES),
    *each_url(
        "non-capturing group", r"HostRegexp(`{subdomain:(?:foo\.)?bar\.com}`)", SUBDOMAIN_OUTCOMES
    ),
    *each_url("mixed-case class", r"HostRegexp(`{dummy:[A-Za-z-]+\.bar\.com}`)", CASE_OUTCOMES),
    *each_url("lower-case class", r"HostRegexp(`{dummy:[a-z-]+\.bar\.com}`)", CASE_OUTCOMES),
    *each_url("literal", "HostRegexp(`foo.bar.com`)", CASE_OUTCOMES),
]


@pytest.mark.parametrize("row", HOST_REGEXP, ids=ids(HOST_REGEXP))
def test_v2_host_regexp_cases(row: Row) -> None:
    check(row)


# -- Test_addRoute (the v2 branch's mux tests) -----------------------------------------------------

LOCAL = "http://localhost/foo"
TITI = '(Host("tchouk") && PathPrefix("/titi"))'

ADD_ROUTE: list[Row] = [
    rejected("no tree", ""),
    rejected("rule with no matcher", "rulewithnotmatcher"),
    rejected("Host empty", "Host(``)"),
    rejected("PathPrefix empty", "PathPrefix(``)"),
    Row("PathPrefix", "PathPrefix(`/foo`)", True, url=LOCAL),
    Row("wrong PathPrefix", "PathPrefix(`/bar`)", False, url=LOCAL),
    Row("Host", "Host(`localhost`)", True, url=LOCAL),
    Row("Host IPv4", "Host(`127.0.0.1`)", True, url="http://127.0.0.1/foo"),
    Row("Host IPv6", "Host(`10::10`)", True, url="http://[10::10]/foo"),
    rejected("non-ASCII Host", "Host(`locàlhost`)"),
    rejected("non-ASCII HostRegexp", "HostRegexp(`locàlhost`)"),
    *each_url(
        "HostHeader is Host",
        "HostHeader(`localhost`)",
        {LOCAL: True, "http://bar/foo": False},
    ),
    Row("trailing dot in rule", "Host(`localhost.`)", True, url=LOCAL),
    Row("trailing dot in host", "Host(`localhost`)", True, url="http://localhost./foo"),
    Row("trailing dot in both", "Host(`localhost.`)", True, url="http://localhost./foo"),
    Row("wrong Host", "Host(`nope`)", False, url=LOCAL),
    Row("Host and PathPrefix", "Host(`localhost`) && PathPrefix(`/foo`)", True, url=LOCAL),
    Row("wrong PathPrefix", "Host(`localhost`) && PathPrefix(`/bar`)", False, url=LOCAL),
    Row("wrong Host", "Host(`nope`) && PathPrefix(`/foo`)", False, url=LOCAL),
    Row("Host or-ed: first", "Host(`nope`,`localhost`) && PathPrefix(`/foo`)", True, url=LOCAL),
    Row(
        "Host or-ed: second",
        "Host(`nope`,`localhost`) && PathPrefix(`/foo`)",
        True,
        url="http://nope/foo",
    ),
    Row(
        "comma inside one argument",
        "Host(`nope,localhost`) && PathPrefix(`/bar`)",
        False,
        url=LOCAL,
    ),
    *each_url(
        "HostRegexp capturing group",
        r"HostRegexp(`{subdomain:(foo\.)?bar\.com}`)",
        SUBDOMAIN_OUTCOMES,
    ),
    *each_url(
        "HostRegexp non-capturing group",
        r"HostRegexp(`{subdomain:(?:foo\.)?bar\.com}`)",
        SUBDOMAIN_OUTCOMES,
    ),
    Row("Method GET", "Method(`GET`)", True, url=LOCAL),
    Row("Method GET or POST", "Method(`GET`,`POST`)", True, url=LOCAL),
    Row("Method POST", "Method(`POST`)", False, url=LOCAL),  # 404, never 405 (SPEC §4.8)
    Row(
        "Headers matching",
        "Headers(`Content-Type`,`application/json`)",
        True,
        url=LOCAL,
        headers=(("Content-Type", "application/json"),),
    ),
    Row(
        "Headers not matching",
        "Headers(`Content-Type`,`application/foo`)",
        False,
        url=LOCAL,
        headers=(("Content-Type", "application/json"),),
    ),
    *[
        Row(
            f"HeadersRegexp [{value}]",
            "HeadersRegexp(`Content-Type`, `application/(text|json)`)",
            hit,
            url=LOCAL,
            headers=(("Content-Type", value),),
        )
        for value, hit in [
            ("application/json", True),
            ("application/foo", False),
            ("application/text", True),
        ]
    ],
    *each_url(
        "Query pairs",
        "Query(`foo=bar`, `bar=baz`)",
        {"http://localhost/foo?foo=bar&bar=baz": True, "http://localhost/foo?bar=baz": False},
    ),
    *each_url(
        "Query value with =",
        "Query(`foo=b=ar`)",
        {"http://localhost/foo?foo=b=ar": True, "http://localhost/foo?foo=bar": False},
    ),
    Row("simple path", 'Path("/a")', True, url="http://plop/a"),
    Row("simple host", 'Host("plop")', True, url="http://plop"),
    *each_url(
        "Path and Host",
        'Path("/a") && Host("plop")',
        {"http://plop/a": True, "http://plopi/a": False},
    ),
    *each_url(
        "Host or Host",
        'Host("tchouk") || Host("pouet")',
        {"http://tchouk/toto": True, "http://pouet/a": True, "http://plopi/a": False},
    ),
    *[
        row
        for rule in [
            'Host("tchouk") || (Host("pouet") && Path("/powpow"))',
            'Host("tchouk") || Host("pouet") && Path("/powpow")',
        ]
        for row in each_url(
            f"or / and precedence {rule}",
            rule,
            {
                "http://tchouk/toto": True,
                "http://tchouk/powpow": True,
                "http://pouet/powpow": True,
                "http://pouet/toto": False,
                "http://plopi/a": False,
            },
        )
    ],
    *[
        row
        for rule in [
            '(Host("tchouk") || Host("pouet")) && Path("/powpow")',
            '(Host("tchouk","pouet")) && Path("/powpow")',
        ]
        for row in each_url(
            f"grouped {rule}",
            rule,
            {
                "http://tchouk/toto": False,
                "http://tchouk/powpow": True,
                "http://pouet/powpow": True,
                "http://pouet/toto": False,
                "http://plopi/a": False,
            },
        )
    ],
    *each_url(
        "several hosts and paths",
        'Host("tchouk","pouet") && Path("/powpow", "/titi")',
        {
            "http://tchouk/toto": False,
            "http://tchouk/powpow": True,
            "http://pouet/powpow": True,
            "http://tchouk/titi": True,
            "http://pouet/titi": True,
            "http://pouet/toto": False,
            "http://plopi/a": False,
        },
    ),
    *each_url(
        "(host and path) or (host and path)",
        '(Host("tchouk") && Path("/titi")) || ((Host("pouet")) && Path("/powpow"))',
        {
            "http://tchouk/titi": True,
            "http://tchouk/powpow": False,
            "http://pouet/powpow": True,
            "http://pouet/toto": False,
            "http://plopi/a": False,
        },
    ),
    rejected("unquoted argument", "Host(tchouk)"),
    *[
        row
        for rule in [
            '(HOST("tchouk") && PATHPREFIX("/titi"))',
            '(host("tchouk") && pathprefix("/titi"))',
            TITI,
            '(Host("tchouk") && Pathprefix("/titi"))',
        ]
        for row in each_url(
            f"name spelling {rule}",
            rule,
            {"http://tchouk/titi": True, "http://tchouk/powpow": False},
        )
    ],
    rejected("Path without slash", 'Path("titi")'),
    rejected("PathPrefix without slash", 'PathPrefix("titi")'),
    rejected("HostRegexp unbalanced brace", 'HostRegexp("{test")'),
    rejected("Headers with one argument", 'Headers("titi")'),
    rejected("HeadersRegexp with one argument", 'HeadersRegexp("titi")'),
    rejected("Query without =", 'Query("titi")'),
    rejected("Query unbalanced brace", 'Query("titi={test")'),
    rejected("Path without arguments", 'Host("tchouk") && Path()'),
    rejected("empty Path", 'Host("tchouk") && Path("")'),
    rejected("empty Path among others", 'Host("tchouk") && Path("", "/titi")'),
    *each_url(
        "not Host", '!Host("tchouk")', {"http://tchouk/titi": False, "http://test/powpow": True}
    ),
    *each_url(
        "not Path", '!Path("/titi")', {"http://tchouk/titi": False, "http://tchouk/powpow": True}
    ),
    *each_url(
        "not (or)",
        '!(Host("tchouk") || Host("toto"))',
        {"http://tchouk/titi": False, "http://toto/powpow": False, "http://test/powpow": True},
    ),
    *each_url(
        "not (and)",
        '!(Host("tchouk") && Path("/titi"))',
        {"http://tchouk/titi": False, "http://tchouk/toto": True, "http://test/titi": True},
    ),
    *each_url(
        "not (and not)",
        '!(Host("tchouk") && !Path("/titi"))',
        {"http://tchouk/titi": True, "http://toto/titi": True, "http://tchouk/toto": False},
    ),
    *each_url(
        "not or not",
        '!Host("tchouk") || !Path("/titi")',
        {"http://tchouk/titi": False, "http://tchouk/toto": True, "http://test/titi": True},
    ),
    *each_url(
        "double not",
        '!(!(Host("tchouk") && Pathprefix("/titi")))',
        {"http://tchouk/titi": True, "http://tchouk/powpow": False, "http://test/titi": False},
    ),
    *each_url(
        "not host and prefix",
        '!Host("tchouk") && Pathprefix("/titi")',
        {
            "http://tchouk/titi": False,
            "http://tchouk/powpow": False,
            "http://toto/powpow": False,
            "http://toto/titi": True,
        },
    ),
    *each_url(
        "not (several hosts and paths)",
        '!(Host("tchouk","pouet") && Path("/powpow", "/titi"))',
        {
            "http://tchouk/toto": True,
            "http://tchouk/powpow": False,
            "http://pouet/powpow": False,
            "http://tchouk/titi": False,
            "http://pouet/titi": False,
            "http://pouet/toto": True,
            "http://plopi/a": True,
        },
    ),
    rejected("ClientIP empty", "ClientIP(``)"),
    rejected("ClientIP invalid", "ClientIP(`invalid`)"),
    *[
        Row(f"ClientIP {rule} [{peer}]", rule, hit, url="http://tchouk/toto", remote=peer)
        for rule, peer, hit in [
            ("ClientIP(`10.10.1.1`)", "10.0.0.0", False),
            ("ClientIP(`10::10`)", "::1", False),
            ("ClientIP(`10.0.0.0`)", "10.0.0.0:8456", True),
            ("ClientIP(`10::10`)", "10::10", True),
            ("ClientIP(`10.0.0.1`, `10.0.0.0`)", "10.0.0.0", True),
            ("ClientIP(`11.0.0.0/24`)", "10.0.0.0", False),
            ("ClientIP(`11::/16`)", "10::", False),
            ("ClientIP(`10.0.0.0/16`)", "10.0.0.0", True),
            ("ClientIP(`10::/16`)", "10::10", True),
            ("ClientIP(`11.0.0.0/16`, `10.0.0.0/16`)", "10.0.0.0", True),
            ("ClientIP(`11.0.0.0/16`, `10.0.0.0`)", "10.0.0.0", True),
            ("ClientIP(`11.0.0.0`, `10.0.0.0/16`)", "10.0.0.0", True),
        ]
    ],
]


@pytest.mark.parametrize("row", ADD_ROUTE, ids=ids(ADD_ROUTE))
def test_v2_add_route_cases(row: Row) -> None:
    check(row)


# -- gorilla/mux query templates (semantics behind the Query rows above) --------------------------


@pytest.mark.parametrize(
    ("rule", "query", "expected"),
    [
        ("Query(`id={id:[0-9]+}`)", "id=42", True),
        ("Query(`id={id:[0-9]+}`)", "id=4x", False),
        ("Query(`id={id}`)", "id=", True),  # {name} in a query value is ".*"
        ("Query(`id=`)", "id=7", True),  # an empty value accepts any value of a present key
        ("Query(`id=`)", "other=7", False),
        ("Query(`id=7`)", "id=8&id=7", False),  # only the first value is tested
        ("Query(`id=7`)", "id=7&id=8", True),
    ],
)
def test_v2_query_templates(rule: str, query: str, expected: bool) -> None:
    info = HttpRequestInfo("GET", "example.com", "/", (), query)
    assert compile_rule(rule, syntax="v2").matches(info) is expected


@pytest.mark.parametrize(
    "rule",
    [
        "HostRegexp(`{:[a-z]+}.example.com`)",  # empty variable name
        "HostRegexp(`{sub:}.example.com`)",  # empty pattern
        "HostRegexp(`sub}.example.com`)",  # unbalanced
        "Path(`/users/{id`)",
        "PathPrefix(`/users/id}`)",
        "Host(`{sub.example.com`)",
    ],
)
def test_v2_malformed_templates_are_errors(rule: str) -> None:
    with pytest.raises(RuleSyntaxError):
        compile_rule(rule, syntax="v2")
