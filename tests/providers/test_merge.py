"""Merging provider snapshots into a candidate (providers/merge.py, SPEC §10.1, §3.15 check 3):
static objects win with a warning, DNS servers fill an HCL service or create one, an invalid
provider object is dropped alone with a warning naming it, pending references leave the
table, certificates join every TLS entrypoint."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from a3s_gateway.config.load import load_text
from a3s_gateway.config.schema_entrypoints import CertificatePair
from a3s_gateway.providers.dynamic import (
    PemPair,
    Snapshot,
    build_router,
    build_server,
    build_service,
)
from a3s_gateway.providers.merge import Merged, Source, dynamic_kinds, merge
from tests.support.semantic import BASE

if TYPE_CHECKING:
    from a3s_gateway.config.schema import Config

DISCOVERY = """
providers {
  discovery {
    seeds = [{ url = "http://127.0.0.1:9100" }]
  }
}
"""
DNS = """
providers {
  dns {
    services "users" {
      hostname = "users.internal"
      port     = 8080
    }
  }
}
"""
SECURE = """
entrypoints "secure" {
  address = "127.0.0.1:8443"
  tls {
    cert_file = "/c.pem"
    key_file  = "/k.pem"
  }
}
"""


def config_of(text: str) -> Config:
    result = load_text(BASE + text, filename="t.hcl", env={})
    assert result.config is not None, [p.format() for p in result.errors]
    return result.config


def no_place(pair: PemPair) -> CertificatePair | str:
    raise AssertionError(f"unexpected certificate {pair.origin}")


def merged(config: Config, *snapshots: tuple[str, Snapshot]) -> Merged:
    return merge(config, [Source(kind, snap) for kind, snap in snapshots], place=no_place)


def discovered(name: str, rule: str, *, middlewares: tuple[str, ...] = ()) -> Snapshot:
    return Snapshot(
        routers={
            f"discovered-{name}": build_router(
                {"rule": rule, "service": name, "middlewares": list(middlewares)}
            )
        },
        services={
            name: build_service({"load_balancer": {"servers": [{"url": "http://127.0.0.1:9100"}]}})
        },
        origins={("routers", f"discovered-{name}"): f"seed of {name}"},
    )


def test_without_a_dynamic_provider_the_config_is_returned_as_it_is() -> None:
    config = config_of("")
    assert dynamic_kinds(config) == ()
    result = merged(config, ("discovery", discovered("x", "Path(`/x`)")))
    assert result.config is config
    assert result.warnings == ()


def test_provider_objects_join_the_config() -> None:
    config = config_of(DISCOVERY)
    result = merged(config, ("discovery", discovered("users", "PathPrefix(`/users`)")))
    assert set(result.config.routers) == {"app", "discovered-users"}
    assert set(result.config.services) == {"app", "users"}
    assert result.warnings == ()


def test_a_static_object_wins_with_a_warning() -> None:
    config = config_of(DISCOVERY)
    snapshot = discovered("app", "PathPrefix(`/other`)")
    result = merged(config, ("discovery", snapshot))
    assert result.config.services["app"] == config.services["app"]
    warning, router_warning = result.warnings
    assert warning.severity == "warning"
    assert warning.file == "provider discovery"
    assert warning.path == 'services["app"]'
    assert 'service "app" is already defined by the static config' in warning.message
    # Its router would reach the static service's backends, which it never named: left out.
    assert "discovered-app" not in result.config.routers
    assert 'its service "app" is hidden' in router_warning.message


def test_an_invalid_provider_object_is_dropped_alone() -> None:
    config = config_of(DISCOVERY)
    good = discovered("users", "PathPrefix(`/users`)")
    bad_rule = discovered("orders", "PathPrefix(`/orders`")
    bad_middleware = discovered("cart", "PathPrefix(`/cart`)", middlewares=("nope",))
    snapshot = Snapshot(
        routers={**good.routers, **bad_rule.routers, **bad_middleware.routers},
        services={**good.services, **bad_rule.services, **bad_middleware.services},
        origins={**good.origins, **bad_rule.origins, **bad_middleware.origins},
    )
    result = merged(config, ("discovery", snapshot))
    assert set(result.config.routers) == {"app", "discovered-users"}
    messages = {w.path: w.message for w in result.warnings}
    assert messages['routers["discovered-orders"]'].startswith("seed of orders: skipped: ")
    assert "nope" in messages['routers["discovered-cart"]']
    # The dropped routers' services stay: nothing wrong with them.
    assert {"orders", "cart"} <= set(result.config.services)


def test_dns_servers_fill_the_hcl_service_or_create_one() -> None:
    text = DNS + 'services "users" {\n  load_balancer {\n    strategy = "random"\n  }\n}\n'
    config = config_of(text)
    servers = (build_server("http://10.0.0.1:8080"), build_server("http://10.0.0.2:8080", 3))
    result = merged(config, ("dns", Snapshot(servers={"users": servers})))
    balancer = result.config.services["users"].load_balancer
    assert balancer is not None
    assert balancer.strategy == "random"
    assert balancer.servers == servers
    created = merged(config_of(DNS), ("dns", Snapshot(servers={"users": servers})))
    created_balancer = created.config.services["users"].load_balancer
    assert created_balancer is not None
    assert created_balancer.servers == servers


def test_an_empty_dns_answer_leaves_the_service_without_servers() -> None:
    config = config_of(DNS + 'routers "users" {\n  rule = "Path(`/u`)"\n  service = "users"\n}\n')
    result = merged(config, ("dns", Snapshot(servers={"users": ()})))
    assert "users" in result.config.routers
    balancer = result.config.services["users"].load_balancer
    assert balancer is not None
    assert balancer.servers == ()


def test_pending_references_leave_the_table_until_supplied() -> None:
    text = DISCOVERY + (
        'routers "users" {\n  rule = "Path(`/u`)"\n  service = "users"\n}\n'
        'services "mirrored" {\n  load_balancer {\n'
        '    servers = [{ url = "http://127.0.0.1:9001" }]\n  }\n'
        '  mirror {\n    service = "shadow"\n  }\n}\n'
    )
    config = config_of(text)
    result = merged(config, ("discovery", Snapshot()))
    assert "users" not in result.config.routers
    assert result.config.services["mirrored"].mirror is None
    assert result.pending == (
        'router "users" → service "users"',
        'service "mirrored" mirror → service "shadow"',
    )
    supplied = merged(config, ("discovery", discovered("users", "Path(`/x`)")))
    assert "users" in supplied.config.routers
    assert supplied.pending == ('service "mirrored" mirror → service "shadow"',)


def test_an_earlier_provider_wins_a_name() -> None:
    text = (
        'providers {\n  discovery {\n    seeds = [{ url = "http://127.0.0.1:9100" }]\n  }\n'
        '  kubernetes {\n    namespace = "default"\n  }\n}\n'
    )
    config = config_of(text)
    assert dynamic_kinds(config) == ("discovery", "kubernetes")
    first = discovered("users", "Path(`/a`)")
    second = discovered("users", "Path(`/b`)")
    result = merged(config, ("discovery", first), ("kubernetes", second))
    assert result.config.routers["discovered-users"].rule == "Path(`/a`)"
    assert {w.file for w in result.warnings} == {"provider kubernetes"}
    assert all("another provider" in w.message for w in result.warnings)


def test_certificates_join_every_tls_entrypoint() -> None:
    text = SECURE + 'providers {\n  kubernetes {\n    namespace = "default"\n  }\n}\n'
    config = config_of(text)
    pair = CertificatePair(cert_file="/tmp/x.crt", key_file="/tmp/x.key")
    placed: list[str] = []

    def place(pem: PemPair) -> CertificatePair | str:
        placed.append(pem.origin)
        return pair

    snapshot = Snapshot(
        certificates=(
            PemPair("Secret default/a", b"cert", b"key"),
            PemPair("Secret default/b", b"cert", b"key", entrypoints=("web",)),
        )
    )
    result = merge(config, [Source("kubernetes", snapshot)], place=place)
    tls = result.config.entrypoints["secure"].tls
    assert tls is not None
    assert tls.certificates == (pair,)
    assert placed == ["Secret default/a"]
    [warning] = result.warnings
    assert 'not loaded on entrypoint "web"' in warning.message


def test_an_unusable_certificate_is_a_warning() -> None:
    config = config_of(SECURE + 'providers {\n  kubernetes {\n    namespace = "a"\n  }\n}\n')
    snapshot = Snapshot(certificates=(PemPair("Secret a/bad", b"x", b"y"),))
    result = merge(config, [Source("kubernetes", snapshot)], place=lambda _: "does not load")
    tls = result.config.entrypoints["secure"].tls
    assert tls is not None
    assert tls.certificates == ()
    [warning] = result.warnings
    assert warning.message == "Secret a/bad: not loaded: does not load"


@pytest.mark.parametrize("broken", ["PathPrefix(`/x`", "Nope(`/x`)"])
def test_a_bad_rule_never_rejects_the_candidate(broken: str) -> None:
    config = config_of(DISCOVERY)
    result = merged(config, ("discovery", discovered("x", broken)))
    assert "discovered-x" not in result.config.routers
    assert result.config.routers["app"] == config.routers["app"]


def test_a_dns_service_without_an_answer_yet_answers_503_not_404() -> None:
    config = config_of(DNS + 'routers "users" {\n  rule = "Path(`/u`)"\n  service = "users"\n}\n')
    result = merged(config)
    assert "users" in result.config.routers
    assert result.pending == ()
    balancer = result.config.services["users"].load_balancer
    assert balancer is not None
    assert balancer.servers == ()


def test_provider_objects_are_marked_with_their_source() -> None:
    text = (
        'providers {\n  discovery {\n    seeds = [{ url = "http://127.0.0.1:9100" }]\n  }\n'
        '  kubernetes {\n    namespace = "default"\n  }\n}\n'
    )
    config = config_of(text)
    ingress_route = Snapshot(
        routers={"k8s-a-b-0": build_router({"rule": "Path(`/same`)", "service": "app"})},
        origins={("routers", "k8s-a-b-0"): "IngressRoute a/b"},
    )
    result = merged(
        config,
        ("discovery", discovered("users", "Path(`/same`)")),
        ("kubernetes", ingress_route),
    )
    assert result.config.provider_sources == {
        "routers/discovered-users": "discovery",
        "services/users": "discovery",
        "routers/k8s-a-b-0": "kubernetes-crd",
    }


def test_a_config_file_may_not_write_provider_sources() -> None:
    result = load_text(
        BASE + 'provider_sources = { "routers/app" = "discovery" }\n', filename="t.hcl", env={}
    )
    assert result.config is None
    [problem] = result.errors
    assert problem.path == "provider_sources"
    assert "set by the gateway's dynamic providers" in problem.message


DNS_AND_DISCOVERY = """
providers {
  dns {
    services "users" {
      hostname = "users.internal"
      port     = 8080
    }
  }
  discovery {
    seeds = [{ url = "http://127.0.0.1:9100" }]
  }
}
"""
STREAMS = """
entrypoints "db" {
  address  = "127.0.0.1:5432"
  protocol = "tcp"
}
services "db" {
  load_balancer {
    servers = [{ url = "tcp://127.0.0.1:15432" }]
  }
}
tcp_routers "db" {
  rule        = "HostSNI(`*`)"
  service     = "db"
  entrypoints = ["db"]
}
"""


def test_an_object_that_breaks_a_static_one_is_dropped_alone() -> None:
    """A discovered service named like a static TCP service: its router onto that service
    is the culprit (the errors are located in static objects), not every provider object."""
    config = config_of(STREAMS + DNS_AND_DISCOVERY)
    onto_tcp = discovered("db", "PathPrefix(`/db`)")
    result = merged(
        config,
        ("dns", Snapshot(servers={"users": (build_server("http://10.0.0.1:8080"),)})),
        ("discovery", onto_tcp),
    )
    assert "discovered-db" not in result.config.routers
    balancer = result.config.services["users"].load_balancer
    assert balancer is not None
    assert len(balancer.servers) == 1
    assert any("discovered-db" in w.path for w in result.warnings)


def test_a_stale_dns_answer_never_fills_a_service_no_longer_listed() -> None:
    config = config_of(DNS_AND_DISCOVERY.replace('"users"', '"other"'))
    stale = Snapshot(servers={"app": (build_server("http://10.9.9.9:8080"),)})
    result = merged(config, ("dns", stale))
    assert result.config.services["app"] == config.services["app"]


def test_a_stream_router_with_a_pending_service_leaves_the_table() -> None:
    config = config_of(
        DISCOVERY
        + 'entrypoints "raw" {\n  address = "127.0.0.1:7000"\n  protocol = "tcp"\n}\n'
        + 'tcp_routers "raw" {\n  rule = "HostSNI(`*`)"\n  service = "later"\n'
        + '  entrypoints = ["raw"]\n}\n'
    )
    result = merged(config, ("discovery", Snapshot()))
    assert "raw" not in result.config.tcp_routers
    assert result.pending == ('tcp router "raw" → service "later"',)
