"""What to order from ACME (``acme/order_plan.py``; SPEC §3.8, §12.1): settings resolved per
entrypoint, domains derived from the routers attached to it."""

from __future__ import annotations

import msgspec
import pytest

from a3s_gateway.acme.order_plan import (
    LETS_ENCRYPT_PRODUCTION,
    LETS_ENCRYPT_STAGING,
    AcmeEntry,
    derive_domains,
    plan_acme,
    rule_host_names,
)
from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.schema import Config
from a3s_gateway.config.schema_entrypoints import AcmeDns
from a3s_gateway.config.schema_routers import Router

SERVICE = """
services "app" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9000" }]
  }
}
"""


def secure(name: str = "websecure", port: int = 8443, tls: str = "") -> str:
    """An HTTP entrypoint with ACME on; ``tls`` adds lines to its ``tls`` block."""
    return f"""
entrypoints "{name}" {{
  address = "127.0.0.1:{port}"
  tls {{
    acme = true
    acme_email = "ops@example.com"
    {tls}
  }}
}}
"""


def plain(name: str, port: int, *, redirect_to: str | None = None) -> str:
    redirect = f'redirect_to = "{redirect_to}"' if redirect_to else ""
    return f'entrypoints "{name}" {{\n  address = "127.0.0.1:{port}"\n  {redirect}\n}}\n'


def router(name: str, rule: str, *, entrypoints: tuple[str, ...] = (), v2: bool = False) -> str:
    listed = ", ".join(f'"{entrypoint}"' for entrypoint in entrypoints)
    syntax = 'rule_syntax = "v2"' if v2 else ""
    return (
        f'routers "{name}" {{\n  rule = {msgspec.json.encode(rule).decode()}\n'
        f'  service = "app"\n  entrypoints = [{listed}]\n  {syntax}\n}}\n'
    )


def load(*blocks: str) -> Config:
    return load_config_text("".join(blocks) + SERVICE, filename="gateway.hcl")


def with_rule(config: Config, name: str, rule: str) -> Config:
    """``config`` with one more router whose rule the loader would refuse."""
    routers = {**config.routers, name: Router(rule=rule, service="app")}
    return msgspec.structs.replace(config, routers=routers)


# -- settings ------------------------------------------------------------------------------------


def test_an_acme_entrypoint_with_defaults() -> None:
    config = load(secure(), router("app", "Host(`www.example.com`)"))
    assert plan_acme(config) == (
        AcmeEntry(
            entrypoint="websecure",
            email="ops@example.com",
            directory_url=LETS_ENCRYPT_PRODUCTION,
            ca_file=None,
            storage_path="/etc/gateway/acme",
            challenge="http-01",
            renewal_days=30,
            key_type="ec256",
            dns=None,
            domains=("www.example.com",),
        ),
    )


def test_staging_and_an_explicit_directory() -> None:
    config = load(
        secure("a", 8443, "acme_staging = true"),
        secure(
            "b",
            8444,
            'acme_staging = true\nacme_directory_url = "https://127.0.0.1:14000/dir"\n'
            'acme_ca_file = "/tmp/pebble.minica.pem"',
        ),
        router("app", "Host(`www.example.com`)"),
    )
    first, second = plan_acme(config)
    assert first.directory_url == LETS_ENCRYPT_STAGING
    assert first.ca_file is None
    assert second.directory_url == "https://127.0.0.1:14000/dir"
    assert second.ca_file == "/tmp/pebble.minica.pem"


def test_every_setting_is_carried_and_acme_domains_win() -> None:
    tls = """
    acme_domains = ["WWW.Example.com.", "*.example.com", "www.example.com", "api.example.com"]
    acme_storage_path = "/var/lib/gateway/acme"
    acme_challenge = "dns-01"
    acme_renewal_days = 20
    acme_key_type = "rsa2048"
    acme_dns {
      provider = "challtestsrv"
      management_url = "http://127.0.0.1:8055"
      resolver = "127.0.0.1:8053"
    }
    """
    config = load(secure(tls=tls), router("app", "Host(`other.example.com`)"))
    (entry,) = plan_acme(config)
    assert entry.storage_path == "/var/lib/gateway/acme"
    assert entry.challenge == "dns-01"
    assert entry.renewal_days == 20
    assert entry.key_type == "rsa2048"
    assert isinstance(entry.dns, AcmeDns)
    assert entry.dns.provider == "challtestsrv"
    assert str(entry.dns.resolver) == "127.0.0.1:8053"
    # acme_domains replace derivation: lower-cased, trailing dot gone, unique, sorted.
    assert entry.domains == ("*.example.com", "api.example.com", "www.example.com")


def test_only_acme_entrypoints_are_planned_in_name_order() -> None:
    config = load(
        secure("zeta", 8443),
        plain("web", 8080),
        secure("alpha", 8444),
        router("app", "Host(`www.example.com`)"),
    )
    assert [entry.entrypoint for entry in plan_acme(config)] == ["alpha", "zeta"]


def test_no_acme_no_plan() -> None:
    assert plan_acme(load(plain("web", 8080), router("app", "Host(`a.example.com`)"))) == ()


# -- attachment ----------------------------------------------------------------------------------


def test_routers_without_entrypoints_attach_to_every_http_entrypoint() -> None:
    config = load(
        secure(),
        plain("web", 8080),
        router("all", "Host(`all.example.com`)"),
        router("web-only", "Host(`web.example.com`)", entrypoints=("web",)),
        router("secure-only", "Host(`secure.example.com`)", entrypoints=("websecure",)),
    )
    assert derive_domains(config, "websecure") == ("all.example.com", "secure.example.com")


def test_routers_of_an_entrypoint_redirecting_here_count() -> None:
    config = load(
        secure(),
        plain("web", 8080, redirect_to="websecure"),
        plain("other", 8081),
        router("redirected", "Host(`web.example.com`)", entrypoints=("web",)),
        router("elsewhere", "Host(`other.example.com`)", entrypoints=("other",)),
        router("both", "Host(`both.example.com`)", entrypoints=("other", "websecure")),
    )
    assert derive_domains(config, "websecure") == ("both.example.com", "web.example.com")


def test_two_acme_entrypoints_each_get_their_own_routers() -> None:
    config = load(
        secure("a", 8443),
        secure("b", 8444),
        router("one", "Host(`one.example.com`)", entrypoints=("a",)),
        router("two", "Host(`two.example.com`)", entrypoints=("b",)),
        router("all", "Host(`all.example.com`)"),
    )
    assert [entry.domains for entry in plan_acme(config)] == [
        ("all.example.com", "one.example.com"),
        ("all.example.com", "two.example.com"),
    ]


def test_an_unknown_entrypoint_has_no_domains() -> None:
    config = load(secure(), router("app", "Host(`www.example.com`)"))
    assert derive_domains(config, "missing") == ()


# -- rules ---------------------------------------------------------------------------------------


def test_names_under_a_negation_are_not_derived() -> None:
    rule = (
        "Host(`a.example.com`) && !Host(`b.example.com`) || !(Host(`c.example.com`) "
        "|| Host(`d.example.com`)) || !!Host(`e.example.com`) || (PathPrefix(`/x`) && "
        "Host(`f.example.com`))"
    )
    config = load(secure(), router("app", rule))
    assert derive_domains(config, "websecure") == ("a.example.com", "f.example.com")


def test_names_are_canonical_unique_and_sorted_across_routers() -> None:
    config = load(
        secure(),
        router("one", "Host(`B.Example.COM.`) || Host(`a.example.com`)"),
        router("two", "host(`b.example.com`) || HOST(`c.example.com`)"),
        router("three", "HostHeader(`d.example.com`) && Method(`GET`)"),
    )
    assert derive_domains(config, "websecure") == (
        "a.example.com",
        "b.example.com",
        "c.example.com",
        "d.example.com",
    )


@pytest.mark.parametrize(
    "rule",
    [
        "Host(`*`)",
        "Host(`*.example.com`)",
        "Host(`10.0.0.1`)",
        "Host(`[2001:db8::1]`)",
        "Host(`2001:db8::1`)",
        "Host(`www.example.com:8443`)",
        "Host(`a*b.example.com`)",
        "Host(`under_score.example.com`)",
        "HostRegexp(`^www\\.example\\.com$`)",
        "PathPrefix(`/www.example.com`)",
        "Header(`Host`, `www.example.com`)",
        "ClientIP(`10.0.0.0/8`)",
    ],
)
def test_what_is_never_derived(rule: str) -> None:
    config = load(secure(), router("app", rule))
    assert derive_domains(config, "websecure") == ()


def test_v2_rules_give_every_literal_argument_but_no_template() -> None:
    rule = (
        "Host(`a.example.com`, `B.example.com`) || HostHeader(`c.example.com`) || "
        "Host(`{sub:[a-z]+}.example.com`, `d.example.com`) || "
        "HostRegexp(`e.example.com`, `{any}.example.com`) || !Host(`f.example.com`)"
    )
    config = load(secure(), router("app", rule, v2=True))
    assert derive_domains(config, "websecure") == (
        "a.example.com",
        "b.example.com",
        "c.example.com",
        "d.example.com",
    )


def test_tcp_routers_are_not_http_routers() -> None:
    config = load(
        secure(),
        router("app", "Host(`www.example.com`)"),
        'tcp_routers "sni" {\n  rule = "HostSNI(`sni.example.com`)"\n  service = "db"\n'
        '  entrypoints = ["websecure"]\n}\n',
        'services "db" {\n  load_balancer {\n    servers = [{ url = "tcp://127.0.0.1:5432" }]\n'
        "  }\n}\n",
    )
    assert derive_domains(config, "websecure") == ("www.example.com",)


@pytest.mark.parametrize(
    "rule", ["Host(`broken.example.com`", "Nope(`broken.example.com`)", "Host(`é.example.com`)"]
)
def test_a_rule_that_does_not_compile_gives_nothing(rule: str) -> None:
    config = with_rule(load(secure(), router("app", "Host(`www.example.com`)")), "bad", rule)
    assert derive_domains(config, "websecure") == ("www.example.com",)
    assert rule_host_names(rule) == frozenset()


def test_v3_only_matchers_do_not_compile_as_v2() -> None:
    assert rule_host_names("Host(`a.example.com`) && Header(`X`, `y`)") == {"a.example.com"}
    assert rule_host_names("Host(`a.example.com`) && Header(`X`, `y`)", "v2") == frozenset()
    assert rule_host_names("Host(`a.example.com`, `b.example.com`)", "v2") == {
        "a.example.com",
        "b.example.com",
    }
    assert rule_host_names("Host(`a.example.com`, `b.example.com`)") == frozenset()


def test_a_deep_rule_is_walked_without_recursion() -> None:
    rule = " || ".join(f"Host(`h{index}.example.com`)" for index in range(150))
    assert len(rule_host_names(rule)) == 150
