"""Compiling rules into matchers: every HTTP and TCP matcher of SPEC §4.3 and §4.10, the
argument checks, priorities, and Traefik v2 semantics (§4.9)."""

from __future__ import annotations

import pytest

from a3s_gateway.routing import (
    CompiledRule,
    HttpRequestInfo,
    RuleSyntaxError,
    TcpConnInfo,
    compile_rule,
)


def request(
    path: str = "/",
    *,
    host: str = "example.com",
    method: str = "GET",
    headers: tuple[tuple[str, str], ...] = (),
    query: str = "",
    remote: str = "192.0.2.10:40000",
) -> HttpRequestInfo:
    return HttpRequestInfo(method, host, path, headers, query, remote)


def matches(rule: str, info: HttpRequestInfo | TcpConnInfo, *, syntax: str = "v3") -> bool:
    kind = "tcp" if isinstance(info, TcpConnInfo) else "http"
    compiled = compile_rule(rule, kind=kind, syntax=syntax)  # type: ignore[arg-type]  # test helper takes plain str
    return compiled.matches(info)


def error(rule: str, *, kind: str = "http", syntax: str = "v3") -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as caught:
        compile_rule(rule, kind=kind, syntax=syntax)  # type: ignore[arg-type]  # plain str
    return caught.value


# -- Host ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", True),
        ("EXAMPLE.com", True),
        ("example.com:8080", True),
        ("example.com.", True),
        ("www.example.com", False),
        ("", False),
    ],
)
def test_host_ignores_case_port_and_trailing_dot(host: str, expected: bool) -> None:
    assert matches("Host(`Example.COM.`)", request(host=host)) is expected


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("a.example.com", True),
        ("example.com", False),
        ("a.b.example.com", False),
        (".example.com", False),
    ],
)
def test_host_wildcard_is_exactly_one_label(host: str, expected: bool) -> None:
    assert matches("Host(`*.example.com`)", request(host=host)) is expected


def test_host_star_matches_every_request_even_without_host() -> None:
    assert matches("Host(`*`)", request(host=""))


def test_host_with_an_inner_star_is_literal_and_warned() -> None:
    compiled = compile_rule("Host(`a*.example.com`)")
    assert compiled.warnings
    assert compiled.matches(request(host="a*.example.com"))
    assert not compiled.matches(request(host="ab.example.com"))


def test_host_must_be_ascii() -> None:
    assert "ASCII" in error("Host(`bücher.example`)").message


def test_host_regexp_searches_the_canonical_host() -> None:
    assert matches("HostRegexp(`^api[0-9]+\\.`)", request(host="API7.example.com"))
    assert not matches("HostRegexp(`[A-Z]`)", request(host="API.example.com"))


def test_ipv6_host_literal() -> None:
    assert matches("Host(`::1`)", request(host="[::1]:8443"))


# -- paths --------------------------------------------------------------------------------------


def test_path_prefix_is_a_plain_string_prefix() -> None:
    assert matches("PathPrefix(`/api`)", request("/apiary"))
    assert not matches("PathPrefix(`/api`)", request("/ap"))


def test_path_matches_the_decoded_routing_path_but_not_encoded_slashes() -> None:
    assert matches("Path(`/foo bar`)", request("/foo%20bar"))
    assert not matches("Path(`/foo/bar`)", request("/foo%2Fbar"))
    assert matches("PathPrefix(`/café`)", request("/caf%C3%A9/menu"))


def test_path_arguments_must_start_with_a_slash() -> None:
    failure = error("Path(`api`)")
    assert failure.message == 'Path argument must start with "/"'
    assert failure.column == 6
    assert "PathPrefix" in error("PathPrefix(`x`)").message


def test_path_regexp_is_unanchored_and_re2_flavoured() -> None:
    assert matches("PathRegexp(`/v[0-9]+/`)", request("/api/v2/users"))
    assert not matches("PathRegexp(`^/a$`)", request("/a%0A"))
    assert "not supported" in error("PathRegexp(`(?=x)`)").message


# -- method, headers, query, client ip -------------------------------------------------------------


def test_method_is_upper_cased_at_compile_and_compared_exactly() -> None:
    assert matches("Method(`get`)", request(method="GET"))
    assert not matches("Method(`GET`)", request(method="get"))


def test_header_name_is_case_insensitive_value_exact_any_line() -> None:
    headers = (("X-Env", "prod, staging"), ("x-env", "dev"))
    assert matches("Header(`x-ENV`, `dev`)", request(headers=headers))
    assert matches("Header(`X-Env`, `prod, staging`)", request(headers=headers))
    assert not matches("Header(`X-Env`, `prod`)", request(headers=headers))
    assert not matches("Header(`X-Env`, `DEV`)", request(headers=headers))


def test_header_regexp_and_a3s_headers_alias() -> None:
    headers = (("Accept", "application/json"),)
    assert matches("HeaderRegexp(`accept`, `json$`)", request(headers=headers))
    assert matches("Headers(`Accept`, `application/json`)", request(headers=headers))
    assert matches("HeadersRegexp(`Accept`, `^app`)", request(headers=headers))


@pytest.mark.parametrize(
    ("rule", "query", "expected"),
    [
        ("Query(`mobile`)", "mobile", True),
        ("Query(`mobile`)", "mobile=", True),
        ("Query(`mobile`)", "mobile=true", False),
        ("Query(`v`, `2`)", "v=1&v=2", True),
        ("Query(`v`, `2`)", "V=2", False),
        ("Query(`q`, `a b`)", "q=a+b", True),
        ("Query(`q`, `x`)", "q=x;y=1", False),
        ("QueryRegexp(`v`, `^[0-9]$`)", "v=7", True),
        ("QueryRegexp(`v`)", "v", True),
    ],
)
def test_query_follows_go_parse_query(rule: str, query: str, expected: bool) -> None:
    assert matches(rule, request(query=query)) is expected


@pytest.mark.parametrize(
    ("rule", "remote", "expected"),
    [
        ("ClientIP(`10.0.0.0/8`)", "10.1.2.3:5000", True),
        ("ClientIP(`10.1.2.3/8`)", "10.200.0.1", True),
        ("ClientIP(`10.0.0.0/8`)", "[::ffff:10.0.0.1]:443", True),
        ("ClientIP(`2001:db8::/32`)", "[2001:db8::5]:443", True),
        ("ClientIP(`10.0.0.0/8`)", "11.0.0.1:1", False),
        ("ClientIP(`10.0.0.0/8`)", "garbage", False),
        ("ClientIP(`10.0.0.0/8`)", "", False),
    ],
)
def test_client_ip_uses_the_peer(rule: str, remote: str, expected: bool) -> None:
    assert matches(rule, request(remote=remote)) is expected


def test_client_ip_ignores_forwarded_headers() -> None:
    spoofed = request(headers=(("X-Forwarded-For", "10.0.0.1"),), remote="192.0.2.1:1")
    assert not matches("ClientIP(`10.0.0.0/8`)", spoofed)


def test_client_ip_must_parse() -> None:
    assert "ClientIP" in error("ClientIP(`10.0.0.0/33`)").message


# -- operators, priorities ---------------------------------------------------------------------


def test_operators_and_precedence() -> None:
    rule = "Host(`a.test`) || Host(`b.test`) && !PathPrefix(`/admin`)"
    assert matches(rule, request("/admin", host="a.test"))
    assert matches(rule, request("/x", host="b.test"))
    assert not matches(rule, request("/admin", host="b.test"))


def test_default_priority_is_the_rule_length_in_bytes() -> None:
    assert compile_rule("Host(`example.org`)").default_priority == 19
    assert compile_rule("PathPrefix(`/é`)").default_priority == len("PathPrefix(`/é`)".encode())


def test_required_hosts_feed_the_index() -> None:
    assert compile_rule("Host(`a`) && PathPrefix(`/x`)").hosts == frozenset({"a"})
    assert compile_rule("Host(`a`) || Host(`B`)").hosts == frozenset({"a", "b"})
    assert compile_rule("Host(`a`) || PathPrefix(`/x`)").hosts is None
    assert compile_rule("!Host(`a`)").hosts is None
    assert compile_rule("Host(`*.a`)").hosts is None


def test_matcher_names_in_four_spellings_only() -> None:
    assert matches("pathprefix(`/`) && PATHPREFIX(`/`) && Pathprefix(`/`)", request("/"))
    assert "accepted spellings" in error("pathPrefix(`/`)").message


def test_empty_arguments_and_arity_are_errors() -> None:
    assert error("Host(``)").message
    assert "Query" in error("Query(`a`, `b`, `c`)").message


def test_tcp_matchers_are_not_valid_in_http_rules_and_vice_versa() -> None:
    assert error("HostSNI(`a`)").message == "matcher HostSNI is not valid in HTTP rules"
    assert error("Host(`a`)", kind="tcp").message == "matcher Host is not valid in TCP rules"


def test_a3s_readme_rules_work() -> None:
    rule = "Host(`api.example.com`) && PathPrefix(`/v1`)"
    assert matches(rule, request("/v1/users", host="api.example.com"))
    assert matches("PathPrefix(`/api`)", request("/api/orders"))


def test_compiled_rule_refuses_the_other_kind() -> None:
    compiled: CompiledRule = compile_rule("PathPrefix(`/`)")
    with pytest.raises(TypeError):
        compiled.matches(TcpConnInfo(sni="a"))


# -- TCP ---------------------------------------------------------------------------------------


def conn(sni: str = "", alpn: tuple[str, ...] = (), remote: str = "192.0.2.1:1") -> TcpConnInfo:
    return TcpConnInfo(sni=sni, alpn=alpn, remote_addr=remote)


@pytest.mark.parametrize(
    ("rule", "connection", "expected"),
    [
        ("HostSNI(`*`)", conn(), True),
        ("HostSNI(`db.example.com`)", conn("DB.example.com"), True),
        ("HostSNI(`db.example.com.`)", conn("db.example.com"), True),
        ("HostSNI(`db.example.com`)", conn(""), False),
        ("HostSNI(`*.example.com`)", conn("db.example.com"), True),
        ("HostSNI(`*.example.com`)", conn("a.db.example.com"), False),
        ("HostSNI(`*.example.com`)", conn(""), False),
        ("HostSNIRegexp(`^db[0-9]`)", conn("db1.x"), True),
        ("ALPN(`h2`)", conn("a", ("http/1.1", "h2")), True),
        ("ALPN(`h2`)", conn("a", ("http/1.1",)), False),
        ("ClientIP(`192.0.2.0/24`) && HostSNI(`*`)", conn(), True),
    ],
)
def test_tcp_matchers(rule: str, connection: TcpConnInfo, expected: bool) -> None:
    assert matches(rule, connection) is expected


def test_tcp_catch_all_priority_and_client_hello_needs() -> None:
    catch_all = compile_rule(' hostsni( "*" ) ', kind="tcp")
    assert catch_all.default_priority == -1
    assert catch_all.catch_all
    assert not catch_all.needs_client_hello
    assert not compile_rule("ClientIP(`10.0.0.0/8`)", kind="tcp").needs_client_hello
    assert compile_rule("HostSNI(`a`)", kind="tcp").needs_client_hello
    assert compile_rule("ALPN(`h2`)", kind="tcp").needs_client_hello
    assert compile_rule("HostSNI(`*`) && HostSNI(`*`)", kind="tcp").default_priority > 0


@pytest.mark.parametrize("argument", ["*.*.example.com", "a b", "", "ex/ample"])
def test_bad_host_sni_arguments(argument: str) -> None:
    error(f"HostSNI(`{argument}`)", kind="tcp")


def test_alpn_acme_is_reserved() -> None:
    assert "reserved" in error("ALPN(`acme-tls/1`)", kind="tcp").message


# -- v2 ----------------------------------------------------------------------------------------


def test_v2_matchers_take_several_arguments_or_ed() -> None:
    rule = "Host(`a.test`, `b.test`) && Method(`GET`, `POST`)"
    assert matches(rule, request(host="b.test", method="POST"), syntax="v2")
    assert not matches(rule, request(host="c.test"), syntax="v2")


def test_v2_query_pairs_all_match() -> None:
    rule = "Query(`a=1`, `b=2`)"
    assert matches(rule, request(query="a=1&b=2"), syntax="v2")
    assert not matches(rule, request(query="a=1"), syntax="v2")
    assert "key=value" in error("Query(`a`)", syntax="v2").message


def test_v2_templates() -> None:
    assert matches("Host(`{sub}.example.com`)", request(host="API.example.com"), syntax="v2")
    assert not matches("Host(`{sub}.example.com`)", request(host="a.b.example.com"), syntax="v2")
    assert matches(
        "HostRegexp(`{sub:[a-z]+}.example.com`)", request(host="abc.example.com"), syntax="v2"
    )
    assert matches("Path(`/users/{id:[0-9]+}`)", request("/users/42"), syntax="v2")
    assert not matches("Path(`/users/{id:[0-9]+}`)", request("/users/42/x"), syntax="v2")
    assert matches("PathPrefix(`/users/{id}`)", request("/users/42/x"), syntax="v2")


def test_v2_bad_template_never_matches_and_warns() -> None:
    compiled = compile_rule("Path(`/x/{id:(}`)", syntax="v2")
    assert compiled.warnings
    assert not compiled.matches(request("/x/("))


def test_v2_has_no_v3_only_matchers() -> None:
    assert error("Header(`a`, `b`)", syntax="v2").message
    assert error("PathRegexp(`x`)", syntax="v2").message


def test_v2_tcp_variadic() -> None:
    assert matches("HostSNI(`a.test`, `b.test`)", conn("b.test"), syntax="v2")
