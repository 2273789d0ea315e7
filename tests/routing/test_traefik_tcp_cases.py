"""Traefik's own TCP matcher cases, replayed against our compiler (SPEC §4.7, §4.9, §4.10).

The rows below are data taken from Traefik's test tables (traefik/traefik, master, v3.x):

* ``pkg/muxer/tcp/mux_test.go`` — ``Test_addTCPRoute``, ``Test_Priority``,
  ``TestGetRulePriority`` (v3 syntax);
* ``pkg/muxer/tcp/matcher_test.go`` — ``Test_HostSNICatchAll``, ``Test_HostSNI``,
  ``Test_HostSNIRegexp``, ``Test_ClientIP``, ``Test_ALPN`` (v3 syntax);
* ``pkg/muxer/tcp/matcher_v2_test.go`` — ``Test_addTCPRouteV2``, ``Test_HostSNICatchAllV2``,
  ``Test_HostSNIV2``, ``Test_HostSNIRegexpV2``, ``Test_ClientIPV2``, ``Test_ALPNV2`` (v2).

Traefik's ``mux_test.go`` tables build the connection with ``NewConnData`` (the SNI is
lower-cased, as ours is); its ``matcher*_test.go`` tables build ``ConnData`` directly with the
raw server name. Rows where we differ on purpose carry a ``# differs:`` comment naming the rule
we follow instead, and assert our documented behaviour. Not ported: ``TestParseHostSNI`` /
``TestParseHostSNIV2`` (we have no HostSNI-extraction API) and the two ``Test_Priority`` rows
about provider precedence (our ties go by source, then router name: SPEC §4.7).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from a3s_gateway.routing import (
    RuleSyntaxError,
    TcpConnInfo,
    TcpRoute,
    TcpRouteTable,
    compile_rule,
)

#: Traefik's test connections come from 0.0.0.0:0 unless a row says otherwise.
NO_PEER = "0.0.0.0:0"
#: ``tlsalpn01.ACMETLS1Protocol``.
ACME = "acme-tls/1"


@dataclass(frozen=True)
class Row:
    """One connection tried against one rule; ``expected`` None means the rule is rejected."""

    desc: str
    rule: str
    expected: bool | None
    sni: str = ""
    alpn: tuple[str, ...] = ()
    remote: str = NO_PEER


def rejected(desc: str, rule: str) -> Row:
    return Row(desc, rule, None)


def each_sni(desc: str, rule: str, outcomes: dict[str, bool]) -> list[Row]:
    return [Row(f"{desc} [{sni!r}]", rule, hit, sni=sni) for sni, hit in outcomes.items()]


def each_peer(desc: str, rule: str, outcomes: dict[str, bool]) -> list[Row]:
    return [Row(f"{desc} [{ip}]", rule, hit, remote=ip) for ip, hit in outcomes.items()]


def each_alpn(desc: str, rule: str, outcomes: dict[str, bool]) -> list[Row]:
    return [Row(f"{desc} [{p!r}]", rule, hit, alpn=(p,)) for p, hit in outcomes.items()]


def check(row: Row, syntax: str) -> None:
    if row.expected is None:
        with pytest.raises(RuleSyntaxError):
            compile_rule(row.rule, kind="tcp", syntax=syntax)  # type: ignore[arg-type]  # str
        return
    compiled = compile_rule(row.rule, kind="tcp", syntax=syntax)  # type: ignore[arg-type]  # str
    connection = TcpConnInfo(sni=row.sni, alpn=row.alpn, remote_addr=row.remote)
    assert compiled.matches(connection) is row.expected


def ids(rows: list[Row]) -> list[str]:
    return [row.desc for row in rows]


# -- v3: mux_test.go Test_addTCPRoute ----------------------------------------------------------

ORG_OR_COM = "HostSNI(`example.org`) || HostSNI(`example.com`) && ClientIP(`10.0.0.1`)"
GROUPED = (
    "(HostSNI(`example.org`) || HostSNI(`example.com`)) "
    "&& (ClientIP(`10.0.0.1`) || ClientIP(`10.0.0.2`))"
)
ABSURD = (
    "(HostSNI(`example.org`) || (HostSNI(`example.com`) && !HostSNI(`example.org`))) "
    "&& ((ClientIP(`10.0.0.1`) && !ClientIP(`10.0.0.2`)) || ClientIP(`10.0.0.2`)) "
)
ALPN_OR_SNI = "ALPN(`h2c`) && (!ALPN(`h2`) || HostSNI(`example.eu`))"
NOT_BOTH = "!(HostSNI(`example.com`) && ClientIP(`10.0.0.2`))"

MUX_V3: list[Row] = [
    rejected("no tree", ""),
    rejected("rule with no matcher", "rulewithnotmatcher"),
    rejected("empty HostSNI", "HostSNI(``)"),
    Row("HostSNI matching", "HostSNI(`example.org`)", True, sni="example.org"),
    Row("negated HostSNI matching", "!HostSNI(`example.com`)", True, sni="example.org"),
    Row("lower-case name", "hostsni(`example.org`)", True, sni="example.org"),
    Row("upper-case name", "HOSTSNI(`example.org`)", True, sni="example.org"),
    Row("HostSNI not matching", "HostSNI(`example.org`)", False, sni="example.com"),
    Row("negated HostSNI not matching", "!HostSNI(`example.com`)", False, sni="example.com"),
    Row(
        "HostSNI and ClientIP",
        "HostSNI(`example.org`) && ClientIP(`10.0.0.1`)",
        True,
        sni="example.org",
        remote="10.0.0.1:80",
    ),
    Row(
        "negated HostSNI and ClientIP",
        "!HostSNI(`example.com`) && ClientIP(`10.0.0.1`)",
        True,
        sni="example.org",
        remote="10.0.0.1:80",
    ),
    Row(
        "HostSNI and negated ClientIP",
        "HostSNI(`example.org`) && !ClientIP(`10.0.0.2`)",
        True,
        sni="example.org",
        remote="10.0.0.1:80",
    ),
    Row(
        "negated HostSNI and negated ClientIP",
        "!HostSNI(`example.com`) && !ClientIP(`10.0.0.2`)",
        True,
        sni="example.org",
        remote="10.0.0.1:80",
    ),
    Row(
        "negated (HostSNI or ClientIP)",
        "!(HostSNI(`example.com`) || ClientIP(`10.0.0.2`))",
        True,
        sni="example.org",
        remote="10.0.0.1:80",
    ),
    Row("negated and: sni differs", NOT_BOTH, True, sni="example.org", remote="10.0.0.2:80"),
    Row("negated and: peer differs", NOT_BOTH, True, sni="example.com", remote="10.0.0.1:80"),
    Row("negated and: both match", NOT_BOTH, False, sni="example.com", remote="10.0.0.2:80"),
    Row("negated and: neither", NOT_BOTH, True, sni="example.org", remote="10.0.0.1:80"),
    Row(
        "HostSNI and ClientIP, wrong sni",
        "HostSNI(`example.org`) && ClientIP(`10.0.0.1`)",
        False,
        sni="example.com",
        remote="10.0.0.1:80",
    ),
    Row(
        "HostSNI and ClientIP, wrong peer",
        "HostSNI(`example.org`) && ClientIP(`10.0.0.1`)",
        False,
        sni="example.org",
        remote="10.0.0.2:80",
    ),
    *[
        Row(f"HostSNI or ClientIP [{sni} {peer}]", rule, hit, sni=sni, remote=peer)
        for rule in ["HostSNI(`example.org`) || ClientIP(`10.0.0.1`)"]
        for sni, peer, hit in [
            ("example.org", "10.0.0.1:80", True),
            ("example.com", "10.0.0.1:80", True),
            ("example.org", "10.0.0.2:80", True),
            ("example.com", "10.0.0.2:80", False),
        ]
    ],
    Row(
        "three HostSNI or-ed, matching",
        "HostSNI(`example.org`) || HostSNI(`example.eu`) || HostSNI(`example.com`)",
        True,
        sni="example.org",
    ),
    Row(
        "three HostSNI or-ed, not matching",
        "HostSNI(`example.org`) || HostSNI(`example.eu`) || HostSNI(`example.com`)",
        False,
        sni="baz",
    ),
    Row("&& binds tighter: first host", ORG_OR_COM, True, sni="example.org", remote="10.0.0.2:80"),
    Row("&& binds tighter: second", ORG_OR_COM, True, sni="example.com", remote="10.0.0.1:80"),
    Row("&& binds tighter: bad peer", ORG_OR_COM, False, sni="example.com", remote="10.0.0.2:80"),
    Row("&& binds tighter: bad sni", ORG_OR_COM, False, sni="baz", remote="10.0.0.1:80"),
    Row("grouped: matching", GROUPED, True, sni="example.com", remote="10.0.0.1:80"),
    Row("grouped: wrong sni", GROUPED, False, sni="baz", remote="10.0.0.1:80"),
    Row("grouped: wrong peer", GROUPED, False, sni="example.com", remote="10.0.0.3:80"),
    Row("absurd but valid", ABSURD, True, sni="example.com", remote="10.0.0.1:80"),
    Row("ALPN and SNI", ALPN_OR_SNI, True, sni="example.eu", alpn=("h2c", "mqtt")),
    Row(
        "ALPN and SNI, wrong sni",
        ALPN_OR_SNI,
        False,
        sni="example.com",
        alpn=("h2c", "http/1.1", "h2"),
    ),
    Row("ALPN and SNI, by ALPN", ALPN_OR_SNI, True, sni="example.com", alpn=("h2c", "http/1.1")),
    Row("ALPN and SNI, wrong protos", ALPN_OR_SNI, False, sni="example.com", alpn=("http/1.1",)),
    Row("IPv4 literal", "HostSNI(`127.0.0.1`)", True, sni="127.0.0.1"),
    Row("IPv6 literal", "HostSNI(`10::10`)", True, sni="10::10"),
]


@pytest.mark.parametrize("row", MUX_V3, ids=ids(MUX_V3))
def test_v3_mux_cases(row: Row) -> None:
    check(row, "v3")


# -- v3: matcher_test.go -----------------------------------------------------------------------

MATCHERS_V3: list[Row] = [
    # Test_HostSNI
    rejected("HostSNI: empty rule", ""),
    rejected("HostSNI: empty host", "HostSNI(``)"),
    rejected("HostSNI: two arguments", "HostSNI(`example.com`, `example.org`)"),
    rejected("HostSNI: non-ASCII", "HostSNI(`🦭.com`)"),
    Row("HostSNI: punycode", "HostSNI(`xn--9t9h.com`)", True, sni="xn--9t9h.com"),
    Row("HostSNI: punycode rule, emoji sni", "HostSNI(`xn--9t9h.com`)", False, sni="🦭.com"),
    Row("HostSNI: equal", "HostSNI(`example.com`)", True, sni="example.com"),
    Row("HostSNI: different", "HostSNI(`example.com`)", False, sni="example.org"),
    Row("HostSNI: star", "HostSNI(`*`)", True, sni="example.com"),
    Row("HostSNI: star, no sni", "HostSNI(`*`)", True, sni=""),
    Row("HostSNI: trailing dot in rule", "HostSNI(`example.com.`)", True, sni="example.com"),
    Row("HostSNI: subdomain", "HostSNI(`foo.example.com`)", True, sni="foo.example.com"),
    Row("HostSNI: underscore", "HostSNI(`foo_bar.example.com`)", True, sni="foo_bar.example.com"),
    Row("HostSNI: wildcard", "HostSNI(`*.example.com`)", True, sni="foo.example.com"),
    rejected("HostSNI: double wildcard", "HostSNI(`*.*.example.com`)"),
    # Test_HostSNIRegexp
    rejected("HostSNIRegexp: empty rule", ""),
    rejected("HostSNIRegexp: empty", "HostSNIRegexp(``)"),
    rejected("HostSNIRegexp: non-ASCII", "HostSNIRegexp(`🦭.com`)"),
    rejected("HostSNIRegexp: bad regexp", "HostSNIRegexp(`(example.com`)"),
    rejected("HostSNIRegexp: two arguments", "HostSNIRegexp(`example.com`, `example.org`)"),
    *each_sni(
        "HostSNIRegexp: regexp",
        r"HostSNIRegexp(`^example\.(com|org)$`)",
        {
            "example.com": True,
            # differs: Traefik's row skips NewConnData, so the name is not lower-cased; through
            # NewConnData (what a real connection gets) Traefik lower-cases it and matches too.
            "EXAMPLE.com": True,
            "example.org": True,
            "exampleuorg": False,
            "": False,
        },
    ),
    # differs: Traefik keeps the SNI's trailing dot, so "example.com." fails `...$`; our
    # ClientHello parser and TcpConnInfo canonicalise the SNI by dropping one trailing dot
    # (canonical_sni, tests/routing/test_request.py), so it matches here.
    Row(
        "HostSNIRegexp: regexp ['example.com.']",
        r"HostSNIRegexp(`^example\.(com|org)$`)",
        True,
        sni="example.com.",
    ),
    # A v2 template in a v3 rule is a plain RE2 regex: "{tld:" is literal text.
    *each_sni(
        "HostSNIRegexp: v2 template in v3",
        "HostSNIRegexp(`example.{tld:(com|org)}`)",
        {
            "example.com": False,
            "example.com.": False,
            "EXAMPLE.com": False,
            "example.org": False,
            "exampleuorg": False,
            "": False,
        },
    ),
    # Test_ClientIP (Traefik hands the bare IP over, without a port)
    rejected("ClientIP: empty rule", ""),
    rejected("ClientIP: empty", "ClientIP(``)"),
    rejected("ClientIP: non-ASCII", "ClientIP(`🦭/32`)"),
    rejected("ClientIP: two arguments", "ClientIP(`127.0.0.1`, `127.0.0.2`)"),
    *each_peer(
        "ClientIP: address",
        "ClientIP(`20.20.20.20`)",
        {"20.20.20.20": True, "10.10.10.10": False},
    ),
    *each_peer(
        "ClientIP: CIDR with host bits",
        "ClientIP(`20.20.20.20/24`)",
        {"20.20.20.20": True, "20.20.20.40": True, "10.10.10.10": False},
    ),
    # Test_ALPN
    rejected("ALPN: empty rule", ""),
    rejected("ALPN: ACME protocol", f"ALPN(`{ACME}`)"),
    rejected("ALPN: empty", "ALPN(``)"),
    rejected("ALPN: two arguments", "ALPN(`h2`, `mqtt`)"),
    *each_alpn("ALPN: h2", "ALPN(`h2`)", {"h2": True, "mqtt": False, "": False}),
]


@pytest.mark.parametrize("row", MATCHERS_V3, ids=ids(MATCHERS_V3))
def test_v3_matcher_cases(row: Row) -> None:
    check(row, "v3")


@pytest.mark.parametrize(
    ("rule", "catch_all"),
    [
        ("HostSNI(`example.com`)", False),
        ("HostSNI(`*`)", True),
        ("HostSNIRegexp(`.*`)", False),
    ],
)
def test_v3_catch_all(rule: str, catch_all: bool) -> None:
    compiled = compile_rule(rule, kind="tcp")
    assert compiled.matches(TcpConnInfo(sni="example.com"))
    assert compiled.catch_all is catch_all


@pytest.mark.parametrize(
    ("rule", "priority"),
    [
        ("HostSNI(`example.org`)", 22),
        ("HostSNI(`*`)", -1),
        ("   HostSNI ( `*` )       ", -1),
    ],
)
def test_default_priority(rule: str, priority: int) -> None:
    assert compile_rule(rule, kind="tcp").default_priority == priority


def tcp_table(*routes: tuple[str, int]) -> TcpRouteTable:
    return TcpRouteTable(
        TcpRoute(name=f"r{index}", rule=compile_rule(rule, kind="tcp"), service=rule, priority=p)
        for index, (rule, p) in enumerate(routes)
    )


@pytest.mark.parametrize(
    ("routes", "sni", "winner"),
    [
        # one matching rule, same priority
        (
            (("HostSNI(`example.com`)", 0), ("HostSNI(`example.org`)", 0)),
            "example.com",
            "r0",
        ),
        # one matching rule, custom priority
        (
            (("HostSNI(`example.com`)", 10000), ("HostSNI(`example.org`)", 0)),
            "example.org",
            "r1",
        ),
        # same rule: the higher explicit priority wins, whatever the provider
        (
            (("HostSNI(`example.org`)", 10), ("HostSNI(`example.org`)", 20)),
            "example.org",
            "r1",
        ),
    ],
)
def test_priority(routes: tuple[tuple[str, int], ...], sni: str, winner: str) -> None:
    found = tcp_table(*routes).select(TcpConnInfo(sni=sni), "tcp")
    assert found is not None
    assert found.name == winner


# -- v2: matcher_v2_test.go Test_addTCPRouteV2 -------------------------------------------------

FOO_OR_BAR = "HostSNI(`foobar`) || HostSNI(`bar`) && ClientIP(`10.0.0.1`)"
GROUPED_V2 = (
    "(HostSNI(`foobar`) || HostSNI(`bar`)) && (ClientIP(`10.0.0.1`) || ClientIP(`10.0.0.2`))"
)
ABSURD_V2 = (
    "(HostSNI(`foobar`) || (HostSNI(`bar`) && !HostSNI(`foobar`))) "
    "&& ((ClientIP(`10.0.0.1`) && !ClientIP(`10.0.0.2`)) || ClientIP(`10.0.0.2`)) "
)
NOT_BOTH_V2 = "!(HostSNI(`bar`) && ClientIP(`10.0.0.2`))"
ALPN_OR_SNI_V2 = "ALPN(`foo`) && (!alpn(`h2`) || hostsni(`foo`))"

MUX_V2: list[Row] = [
    rejected("no tree", ""),
    rejected("rule with no matcher", "rulewithnotmatcher"),
    rejected("HostSNI without arguments", "HostSNI()"),
    rejected("empty HostSNI", "HostSNI(``)"),
    Row("HostSNI matching", "HostSNI(`foobar`)", True, sni="foobar"),
    Row("negated HostSNI matching", "!HostSNI(`bar`)", True, sni="foobar"),
    Row("lower-case name", "hostsni(`foobar`)", True, sni="foobar"),
    Row("upper-case name", "HOSTSNI(`foobar`)", True, sni="foobar"),
    Row("HostSNI not matching", "HostSNI(`foobar`)", False, sni="bar"),
    rejected("HostSNIRegexp without arguments", "HostSNIRegexp()"),
    rejected("empty HostSNIRegexp", "HostSNIRegexp(``)"),
    Row("template", "HostSNIRegexp(`{subdomain:[a-z]+}.foobar`)", True, sni="sub.foobar"),
    Row("negated template", "!HostSNIRegexp(`bar`)", True, sni="foobar"),
    Row("lower-case HostSNIRegexp", "hostsniregexp(`foobar`)", True, sni="foobar"),
    Row("upper-case HostSNIRegexp", "HOSTSNIREGEXP(`foobar`)", True, sni="foobar"),
    Row("template not matching", "HostSNIRegexp(`foobar`)", False, sni="bar"),
    Row("negated HostSNI not matching", "!HostSNI(`bar`)", False, sni="bar"),
    Row("template matching the empty sni", "HostSNIRegexp(`{subdomain:[a-z]*}`)", True, sni=""),
    Row("bare variable", "HostSNIRegexp(`{dummy}`)", True, sni="toto"),
    Row("bare variable is one label", "HostSNIRegexp(`{dummy}`)", False, sni="toto.com"),
    rejected("ClientIP without arguments", "ClientIP()"),
    rejected("empty ClientIP", "ClientIP(``)"),
    rejected("bad ClientIP", "ClientIP(`invalid`)"),
    Row("unparsable peer", "ClientIP(`10.0.0.1`)", False, remote="not.an.IP:80"),
    Row("ClientIP matching", "ClientIP(`10.0.0.1`)", True, remote="10.0.0.1:80"),
    Row("negated ClientIP matching", "!ClientIP(`20.0.0.1`)", True, remote="10.0.0.1:80"),
    Row("lower-case ClientIP", "clientip(`10.0.0.1`)", True, remote="10.0.0.1:80"),
    Row("upper-case ClientIP", "CLIENTIP(`10.0.0.1`)", True, remote="10.0.0.1:80"),
    Row("ClientIP not matching", "ClientIP(`10.0.0.1`)", False, remote="10.0.0.2:80"),
    Row("negated ClientIP not matching", "!ClientIP(`10.0.0.2`)", False, remote="10.0.0.2:80"),
    Row("IPv6", "ClientIP(`10::10`)", True, remote="[10::10]:80"),
    Row("negated IPv6", "!ClientIP(`10::10`)", True, remote="[::1]:80"),
    Row("IPv6 not matching", "ClientIP(`10::10`)", False, remote="[::1]:80"),
    Row("several IPs", "ClientIP(`10.0.0.1`, `10.0.0.0`)", True, remote="10.0.0.0:80"),
    Row("CIDR", "ClientIP(`11.0.0.0/24`)", True, remote="11.0.0.0:80"),
    Row("CIDR not matching", "ClientIP(`11.0.0.0/24`)", False, remote="10.0.0.0:80"),
    Row("IPv6 CIDR", "ClientIP(`11::/16`)", True, remote="[11::]:80"),
    Row("IPv6 CIDR not matching", "ClientIP(`11::/16`)", False, remote="[10::]:80"),
    Row("several CIDRs", "ClientIP(`11.0.0.0/16`, `10.0.0.0/16`)", True, remote="10.0.0.0:80"),
    Row("CIDR then IP", "ClientIP(`11.0.0.0/16`, `10.0.0.0`)", True, remote="10.0.0.0:80"),
    Row("IP then CIDR", "ClientIP(`11.0.0.0`, `10.0.0.0/16`)", True, remote="10.0.0.0:80"),
    Row(
        "HostSNI and ClientIP",
        "HostSNI(`foobar`) && ClientIP(`10.0.0.1`)",
        True,
        sni="foobar",
        remote="10.0.0.1:80",
    ),
    Row(
        "negated HostSNI and ClientIP",
        "!HostSNI(`bar`) && ClientIP(`10.0.0.1`)",
        True,
        sni="foobar",
        remote="10.0.0.1:80",
    ),
    Row(
        "HostSNI and negated ClientIP",
        "HostSNI(`foobar`) && !ClientIP(`10.0.0.2`)",
        True,
        sni="foobar",
        remote="10.0.0.1:80",
    ),
    Row(
        "negated HostSNI and negated ClientIP",
        "!HostSNI(`bar`) && !ClientIP(`10.0.0.2`)",
        True,
        sni="foobar",
        remote="10.0.0.1:80",
    ),
    Row(
        "negated (HostSNI or ClientIP)",
        "!(HostSNI(`bar`) || ClientIP(`10.0.0.2`))",
        True,
        sni="foobar",
        remote="10.0.0.1:80",
    ),
    Row("negated and: sni differs", NOT_BOTH_V2, True, sni="foobar", remote="10.0.0.2:80"),
    Row("negated and: peer differs", NOT_BOTH_V2, True, sni="bar", remote="10.0.0.1:80"),
    Row("negated and: both match", NOT_BOTH_V2, False, sni="bar", remote="10.0.0.2:80"),
    Row("negated and: neither", NOT_BOTH_V2, True, sni="foobar", remote="10.0.0.1:80"),
    Row(
        "HostSNI and ClientIP, wrong sni",
        "HostSNI(`foobar`) && ClientIP(`10.0.0.1`)",
        False,
        sni="bar",
        remote="10.0.0.1:80",
    ),
    Row(
        "HostSNI and ClientIP, wrong peer",
        "HostSNI(`foobar`) && ClientIP(`10.0.0.1`)",
        False,
        sni="foobar",
        remote="10.0.0.2:80",
    ),
    *[
        Row(f"HostSNI or ClientIP [{sni} {peer}]", rule, hit, sni=sni, remote=peer)
        for rule in ["HostSNI(`foobar`) || ClientIP(`10.0.0.1`)"]
        for sni, peer, hit in [
            ("foobar", "10.0.0.1:80", True),
            ("bar", "10.0.0.1:80", True),
            ("foobar", "10.0.0.2:80", True),
            ("bar", "10.0.0.2:80", False),
        ]
    ],
    Row(
        "three HostSNI or-ed, matching",
        "HostSNI(`foobar`) || HostSNI(`foo`) || HostSNI(`bar`)",
        True,
        sni="foobar",
    ),
    Row(
        "three HostSNI or-ed, not matching",
        "HostSNI(`foobar`) || HostSNI(`foo`) || HostSNI(`bar`)",
        False,
        sni="baz",
    ),
    Row("&& binds tighter: first host", FOO_OR_BAR, True, sni="foobar", remote="10.0.0.2:80"),
    Row("&& binds tighter: second", FOO_OR_BAR, True, sni="bar", remote="10.0.0.1:80"),
    Row("&& binds tighter: bad peer", FOO_OR_BAR, False, sni="bar", remote="10.0.0.2:80"),
    Row("&& binds tighter: bad sni", FOO_OR_BAR, False, sni="baz", remote="10.0.0.1:80"),
    Row("grouped: matching", GROUPED_V2, True, sni="bar", remote="10.0.0.1:80"),
    Row("grouped: wrong sni", GROUPED_V2, False, sni="baz", remote="10.0.0.1:80"),
    Row("grouped: wrong peer", GROUPED_V2, False, sni="bar", remote="10.0.0.3:80"),
    Row("absurd but valid", ABSURD_V2, True, sni="bar", remote="10.0.0.1:80"),
    rejected("ALPN ACME", f"ALPN(`{ACME}`)"),
    Row("ALPN single protocol", "ALPN(`foo`)", True, alpn=("foo",)),
    Row("ALPN offered only ACME", "ALPN(`foo`)", False, alpn=(ACME,)),
    Row("ALPN other protocol", "ALPN(`foo`)", False, alpn=("bar",)),
    Row("ALPN without h2", "ALPN(`foo`) && !alpn(`h2`)", True, alpn=("foo", "bar")),
    Row("ALPN with h2", "ALPN(`foo`) && !alpn(`h2`)", False, alpn=("foo", "h2", "bar")),
    Row("ALPN and SNI", ALPN_OR_SNI_V2, True, sni="foo", alpn=("foo", "bar")),
    Row("ALPN and SNI, wrong sni", ALPN_OR_SNI_V2, False, sni="bar", alpn=("foo", "bar", "h2")),
    Row("ALPN and SNI, by ALPN", ALPN_OR_SNI_V2, True, sni="bar", alpn=("foo", "bar")),
    Row("ALPN and SNI, wrong protos", ALPN_OR_SNI_V2, False, sni="bar", alpn=("h2", "bar")),
]


@pytest.mark.parametrize("row", MUX_V2, ids=ids(MUX_V2))
def test_v2_mux_cases(row: Row) -> None:
    check(row, "v2")


# -- v2: matcher_v2_test.go, one matcher at a time ---------------------------------------------


def hosts(*names: str) -> str:
    return "HostSNI(" + ", ".join(f"`{name}`" for name in names) + ")"


def regexp(template: str) -> str:
    return f"HostSNIRegexp(`{template}`)"


def peers(*networks: str) -> str:
    return "ClientIP(" + ", ".join(f"`{network}`" for network in networks) + ")"


def protocols(*names: str) -> str:
    return "ALPN(" + ", ".join(f"`{name}`" for name in names) + ")"


MATCHERS_V2: list[Row] = [
    # Test_HostSNIV2
    rejected("HostSNI: no hosts", hosts()),
    rejected("HostSNI: non-ASCII", hosts("héhé")),
    Row("HostSNI: different", hosts("foobar"), False, sni="bar"),
    Row("HostSNI: star", hosts("*"), True, sni="foobar"),
    Row("HostSNI: star, no sni", hosts("*"), True, sni=""),
    Row("HostSNI: star second", hosts("foo", "*"), True, sni="bar"),
    # Traefik only short-circuits on a leading "*"; a later one needs a non-empty SNI.
    Row("HostSNI: star second, no sni", hosts("foo", "*"), False, sni=""),
    rejected("HostSNI: no wildcard in v2", hosts("*.bar")),
    Row("HostSNI: trailing dots on both sides", hosts("foobar."), True, sni="foobar."),
    Row("HostSNI: trailing dot in rule", hosts("foobar."), True, sni="foobar"),
    Row("HostSNI: several hosts", hosts("foobar", "foo-bar.baz"), True, sni="foobar"),
    Row("HostSNI: subdomain", hosts("foo.bar"), True, sni="foo.bar"),
    Row("HostSNI: underscore", hosts("foo_bar.example.com"), True, sni="foo_bar.example.com"),
    Row("HostSNI: IPv4", hosts("127.0.0.1"), True, sni="127.0.0.1"),
    Row("HostSNI: IPv6", hosts("10::10"), True, sni="10::10"),
    # Test_HostSNIRegexpV2
    rejected("HostSNIRegexp: unbalanced braces", regexp(r"subdomain:(foo\.)?bar\.com}")),
    rejected("HostSNIRegexp: empty group name", regexp(r"{:(foo\.)?bar\.com}")),
    rejected("HostSNIRegexp: empty pattern", regexp("{subdomain:}")),
    *each_sni(
        "HostSNIRegexp: no braces is literal",
        regexp("bar.com"),
        {"bar.com": True, "barucom": False},
    ),
    *each_sni(
        "HostSNIRegexp: capturing group",
        regexp(r"{subdomain:(foo\.)?bar\.com}"),
        {
            "foo.bar.com": True,
            "bar.com": True,
            "fooubar.com": False,
            "barucom": False,
            "barcom": False,
        },
    ),
    *each_sni(
        "HostSNIRegexp: non-capturing group",
        regexp(r"{subdomain:(?:foo\.)?bar\.com}"),
        {
            "foo.bar.com": True,
            "bar.com": True,
            "fooubar.com": False,
            "barucom": False,
            "barcom": False,
        },
    ),
    *each_sni(
        "HostSNIRegexp: mixed-case class",
        regexp(r"{dummy:[A-Za-z-]+\.bar\.com}"),
        {
            "FOO.bar.com": True,
            "foo.bar.com": True,
            "fooubar.com": False,
            "barucom": False,
            "barcom": False,
        },
    ),
    *each_sni(
        "HostSNIRegexp: lower-case class ignores case",
        regexp(r"{dummy:[a-z-]+\.bar\.com}"),
        {
            "FOO.bar.com": True,
            "foo.bar.com": True,
            "fooubar.com": False,
            "barucom": False,
            "barcom": False,
        },
    ),
    *each_sni(
        "HostSNIRegexp: literal ignores case",
        regexp("foo.bar.com"),
        {
            "FOO.bar.com": True,
            "foo.bar.com": True,
            "fooubar.com": False,
            "barucom": False,
            "barcom": False,
        },
    ),
    # Test_ClientIPV2 (bare IPs, as Traefik hands them over)
    rejected("ClientIP: none", peers()),
    rejected("ClientIP: malformed", peers("héhé")),
    Row("ClientIP: no peer", peers("20.20.20.20"), False, remote=""),
    Row("ClientIP: other IP", peers("20.20.20.20"), False, remote="10.10.10.10"),
    Row("ClientIP: same IP", peers("10.10.10.10"), True, remote="10.10.10.10"),
    Row(
        "ClientIP: none of several",
        peers("20.20.20.20", "30.30.30.30"),
        False,
        remote="10.10.10.10",
    ),
    Row(
        "ClientIP: one of several",
        peers("10.10.10.10", "20.20.20.20", "30.30.30.30"),
        True,
        remote="20.20.20.20",
    ),
    Row("ClientIP: outside CIDR", peers("20.0.0.0/24"), False, remote="10.10.10.10"),
    Row("ClientIP: inside CIDR", peers("20.0.0.0/8"), True, remote="20.10.10.10"),
    Row(
        "ClientIP: outside CIDRs", peers("10.0.0.0/24", "20.0.0.0/24"), False, remote="10.10.10.10"
    ),
    Row("ClientIP: inside a CIDR", peers("10.0.0.0/8", "20.0.0.0/8"), True, remote="20.10.10.10"),
    # Test_ALPNV2 (the connection offers exactly one protocol, maybe "")
    rejected("ALPN: none", protocols()),
    rejected("ALPN: ACME", protocols(ACME)),
    Row("ALPN: empty protocol offered", protocols("h2"), False, alpn=("",)),
    Row("ALPN: other protocol", protocols("h2"), False, alpn=("mqtt",)),
    Row("ALPN: same protocol", protocols("h2"), True, alpn=("h2",)),
    Row("ALPN: none of several", protocols("h2", "mqtt"), False, alpn=("h2c",)),
    Row("ALPN: one of several", protocols("h2", "h2c", "mqtt"), True, alpn=("h2c",)),
]


@pytest.mark.parametrize("row", MATCHERS_V2, ids=ids(MATCHERS_V2))
def test_v2_matcher_cases(row: Row) -> None:
    check(row, "v2")


def test_v2_template_whose_regex_does_not_compile_never_matches() -> None:
    # differs: Traefik's Test_HostSNIRegexpV2 "malformed capturing group" expects the rule to
    # be rejected. We follow SPEC §4.9 (a template regex that does not compile never matches
    # and warns), applied to TCP templates as to HTTP ones.
    compiled = compile_rule(regexp(r"{subdomain:(foo\.?bar\.com}"), kind="tcp", syntax="v2")
    assert compiled.warnings
    assert not compiled.matches(TcpConnInfo(sni="foo.bar.com"))
    assert not compiled.matches(TcpConnInfo(sni="(foo.bar.com"))


@pytest.mark.parametrize(
    ("rule", "catch_all"),
    [
        ("HostSNI(`foobar`)", False),
        ("HostSNI(`*`)", True),
        ("HOSTSNI(`*`)", True),
        ('HostSNI("*")', True),
    ],
)
def test_v2_catch_all(rule: str, catch_all: bool) -> None:
    compiled = compile_rule(rule, kind="tcp", syntax="v2")
    assert compiled.matches(TcpConnInfo(sni="foobar"))
    assert compiled.catch_all is catch_all
    assert (compiled.default_priority == -1) is catch_all
