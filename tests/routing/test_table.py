"""Route tables: ordering (SPEC §4.7), entrypoint filtering (§4.8), the host index, TCP tables."""

from __future__ import annotations

import pytest

from a3s_gateway.routing import (
    HttpRequestInfo,
    Route,
    RouteTable,
    TcpConnInfo,
    TcpRoute,
    TcpRouteTable,
    compile_rule,
)


def route(
    name: str,
    rule: str,
    *,
    priority: int = 0,
    entrypoints: frozenset[str] | None = None,
    source_rank: int = 0,
) -> Route:
    return Route(
        name=name,
        rule=compile_rule(rule),
        service=f"svc-{name}",
        entrypoints=entrypoints,
        priority=priority,
        source_rank=source_rank,
    )


def get(path: str = "/", host: str = "example.com") -> HttpRequestInfo:
    return HttpRequestInfo("GET", host, path)


def selected(table: RouteTable, info: HttpRequestInfo, entrypoint: str = "web") -> str | None:
    found = table.select(info, entrypoint)
    return found.name if found is not None else None


def test_longer_rule_wins_by_default() -> None:
    table = RouteTable([route("short", "PathPrefix(`/`)"), route("long", "PathPrefix(`/api`)")])
    assert selected(table, get("/api/x")) == "long"
    assert selected(table, get("/other")) == "short"


def test_explicit_priority_beats_length_and_negative_sorts_last() -> None:
    table = RouteTable(
        [
            route("long", "PathPrefix(`/api/v1/users`)"),
            route("boosted", "PathPrefix(`/`)", priority=1000),
            route("sunk", "PathPrefix(`/api/v1/users/and/more`)", priority=-5),
        ]
    )
    assert selected(table, get("/api/v1/users/and/more")) == "boosted"
    assert [r.name for r in table.routes] == ["boosted", "long", "sunk"]


def test_ties_break_by_source_then_name() -> None:
    table = RouteTable(
        [
            route("b", "PathPrefix(`/x`)"),
            route("a", "PathPrefix(`/y`)", source_rank=1),
            route("c", "PathPrefix(`/z`)"),
        ]
    )
    assert [r.name for r in table.routes] == ["b", "c", "a"]


def test_entrypoint_filtering() -> None:
    table = RouteTable(
        [
            route("admin", "PathPrefix(`/`)", entrypoints=frozenset({"admin"})),
            route("public", "PathPrefix(`/api`)", entrypoints=frozenset({"web"})),
            route("everywhere", "Path(`/health`)"),
        ]
    )
    assert selected(table, get("/x"), "admin") == "admin"
    assert selected(table, get("/x"), "web") is None
    assert selected(table, get("/api"), "web") == "public"
    assert selected(table, get("/health"), "unknown") == "everywhere"
    assert selected(table, get("/api"), "unknown") is None


def test_host_index_keeps_global_order_with_unindexed_routes() -> None:
    table = RouteTable(
        [
            route("host-api", "Host(`a.test`) && PathPrefix(`/api`)"),
            route("catch", "PathPrefix(`/`)", priority=50),
            route("host-other", "Host(`b.test`)"),
        ]
    )
    assert selected(table, get("/api", "a.test")) == "catch"
    assert [r.name for r in table.candidates("a.test", "web")] == ["catch", "host-api"]
    assert [r.name for r in table.candidates("zzz", "web")] == ["catch"]


def test_host_index_examines_only_that_hosts_routes() -> None:
    routes = [route(f"h{n}", f"Host(`h{n}.test`) && PathPrefix(`/`)") for n in range(1000)]
    routes.append(route("fallback", "PathPrefix(`/static`)"))
    table = RouteTable(routes)
    assert [r.name for r in table.candidates("h500.test", "web")] == ["h500", "fallback"]
    assert selected(table, get("/x", "H500.TEST:443")) == "h500"
    assert selected(table, get("/static/a", "unknown.test")) == "fallback"


def test_lazy_merge_agrees_with_precomputed(monkeypatch: pytest.MonkeyPatch) -> None:
    from a3s_gateway.routing import table as table_module

    routes = [route(f"h{n}", f"Host(`h{n}.test`)") for n in range(5)]
    routes += [route(f"p{n}", f"PathPrefix(`/p{n}`)") for n in range(5)]
    eager = RouteTable(routes)
    monkeypatch.setattr(table_module, "MAX_PRECOMPUTED_PAIRS", 0)
    lazy = RouteTable(routes)
    for host in ("h1.test", "nope"):
        assert [r.name for r in lazy.candidates(host, "web")] == [
            r.name for r in eager.candidates(host, "web")
        ]


def test_a_tcp_rule_cannot_enter_an_http_table() -> None:
    with pytest.raises(ValueError, match="tcp rule"):
        RouteTable([Route(name="x", rule=compile_rule("HostSNI(`*`)", kind="tcp"), service="s")])


def tcp_route(name: str, rule: str, **extra: object) -> TcpRoute:
    return TcpRoute(name=name, rule=compile_rule(rule, kind="tcp"), service=name, **extra)  # type: ignore[arg-type]  # test helper


def test_tcp_catch_all_is_tried_last() -> None:
    table = TcpRouteTable([tcp_route("all", "HostSNI(`*`)"), tcp_route("db", "HostSNI(`db.test`)")])
    assert [r.name for r in table.routes] == ["db", "all"]
    found = table.select(TcpConnInfo(sni="db.test"), "tcp")
    assert found is not None
    assert found.name == "db"
    other = table.select(TcpConnInfo(sni="x"), "tcp")
    assert other is not None
    assert other.name == "all"


def test_tcp_client_hello_needed_only_for_sni_or_alpn() -> None:
    table = TcpRouteTable(
        [
            tcp_route("all", "HostSNI(`*`)", entrypoints=frozenset({"plain"})),
            tcp_route("ip", "ClientIP(`10.0.0.0/8`)", entrypoints=frozenset({"plain"})),
            tcp_route("sni", "HostSNI(`a.test`)", entrypoints=frozenset({"tls"})),
        ]
    )
    assert not table.needs_client_hello("plain")
    assert table.needs_client_hello("tls")
    assert table.select(TcpConnInfo(sni="a.test"), "other") is None
