"""The semantic-check driver as a whole (SPEC §3.15): providers, secrets, README, direct use.

Mirrors ``semantic`` (the driver and the provider references): the DNS provider entries,
no secret in any message across all checks, the README example (read from
``tests/fixtures/readme-example.hcl``) and ``check_semantics`` called on a built ``Config``.
"""

from __future__ import annotations

import msgspec

from a3s_gateway.config.problems import SourceMap
from a3s_gateway.config.schema import Config
from a3s_gateway.config.semantic import SemanticContext, check_semantics
from a3s_gateway.config.values import dec_hook
from tests.support.cli import FIXTURES
from tests.support.semantic import (
    balanced,
    find,
    line_of,
    load,
    middleware,
    tls_entrypoint,
)

# -- providers ------------------------------------------------------------------------------------


def test_dns_provider_entry_defines_a_service() -> None:
    snippet = (
        '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "users"\n}\n'
        'providers {\n  dns {\n    services "users" {\n      hostname = "users.internal"\n'
        "      port = 8080\n    }\n  }\n}\n"
    )
    result = load(snippet)
    assert result.problems == ()


def test_dns_entry_needs_port_and_empty_servers() -> None:
    snippet = (
        '\nproviders {\n  dns {\n    services "app" {\n      hostname = "app.internal"\n'
        "    }\n  }\n}\n"
    )
    result = load(snippet)
    find(result, 'providers.dns.services["app"].port', "error", 'field "port" is required')
    problem = find(result, 'providers.dns.services["app"]', "error", "gets its servers from DNS")
    assert problem.line == line_of(snippet, 'services "app"')


# -- secrets --------------------------------------------------------------------------------------

SECRETS = (
    "jwt-secret-AAAA",
    "sticky-BBBB",
    "basic-pass-CCCC",
    "api-key-DDDD",
    "cf-token-EEEE",
    "tsig-FFFF",
    "Bearer-GGGG",
    "redis-pass-HHHH",
)


def test_secrets_never_appear_in_messages() -> None:
    snippet = (
        middleware("jwt", f'  type = "jwt"\n  algorithms = ["RS256"]\n  value = "{SECRETS[0]}"\n')
        + balanced(f'    sticky {{\n      secret = "{SECRETS[1]}"\n    }}\n')
        + middleware(
            "basic", f'  type = "basic-auth"\n  username = "u"\n  password = "{SECRETS[2]}"\n'
        )
        + middleware("key", f'  type = "api-key"\n  keys = ["{SECRETS[3]}"]\n')
        + middleware(
            "h",
            f'  type = "headers"\n  request_headers = {{ "Authorization" = "{SECRETS[6]}\\n" }}\n',
        )
        + middleware(
            "rl",
            f'  type = "rate-limit-redis"\n  rate = 1\n  redis_url = "redis://u:{SECRETS[7]}@10.0.0.1"\n',
        )
        + '\nrouters "api" {\n  rule = "Path(`/x`)"\n  service = "app"\n'
        '  middlewares = ["jwt", "basic", "key", "h", "rl", "missing"]\n}\n'
        + tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n    acme_dns {\n'
            f'      provider = "rfc2136"\n      api_token = "{SECRETS[4]}"\n'
            f'      tsig_secret = "{SECRETS[5]}"\n    }}\n'
        )
        + '\nentrypoints "other" {\n  address = "127.0.0.1:8082"\n  tls {\n    acme = true\n'
        '    acme_email = "ops@example.com"\n    acme_challenge = "dns-01"\n    acme_dns {\n'
        f'      provider = "rfc2136"\n      api_token = "{SECRETS[4]}"\n'
        f'      tsig_secret = "{SECRETS[5]}"\n    }}\n  }}\n}}\n'
    )
    result = load(snippet)
    assert len(result.problems) >= 8, [p.format() for p in result.problems]
    for problem in result.problems:
        for secret in SECRETS:
            assert secret not in problem.format(), problem.format()


# -- the README example (SPEC §1.4) ---------------------------------------------------------------

README_EXAMPLE = (FIXTURES / "readme-example.hcl").read_text(encoding="utf-8")


def test_readme_example_has_only_the_expected_warnings() -> None:
    result = load(README_EXAMPLE, base=False, env={"JWT_SECRET": "change-me"})
    assert result.errors == (), [p.format() for p in result.errors]
    paths = sorted(p.path for p in result.warnings)
    assert paths == [
        'entrypoints["tcp-db"]',
        'middlewares["auth-jwt"].value',
        'services["api-service"].failover.service',
        'services["api-service"].load_balancer.servers',
        'services["api-service"].load_balancer.sticky',
        'services["api-service"].mirror.service',
        'services["api-service"].revisions[0].servers[0].url',  # also in load_balancer.servers
    ]
    assert all("change-me" not in p.message for p in result.problems)


def test_readme_example_with_a_strong_secret_and_workers() -> None:
    env = {"JWT_SECRET": "x" * 32}
    result = load(README_EXAMPLE, base=False, env=env, workers=2)
    assert result.errors == ()
    assert any("per worker" in p.message for p in result.warnings)
    assert not any("shorter than" in p.message for p in result.warnings)


# -- direct use -----------------------------------------------------------------------------------


def test_check_semantics_on_a_built_config() -> None:
    config = msgspec.convert(
        {
            "entrypoints": {"web": {"address": ":80"}, "alt": {"address": "0.0.0.0:80"}},
            "routers": {"r": {"rule": "", "service": "gone"}},
        },
        Config,
        dec_hook=dec_hook,
    )
    context = SemanticContext(
        sources=SourceMap(), default_file="x.hcl", broken=frozenset({("services", "gone")})
    )
    problems = check_semantics(config, context)
    messages = [p.message for p in problems]
    assert any("collides" in m for m in messages), messages
    assert any("empty rule" in m for m in messages), messages
    assert not any("not defined" in m for m in messages), messages
    assert all(p.file == "x.hcl" and p.line is None for p in problems)


def test_empty_config_reports_missing_entrypoints() -> None:
    context = SemanticContext(sources=SourceMap(), default_file="x.hcl", broken=frozenset())
    problems = check_semantics(Config(), context)
    assert [p.message for p in problems] == ["no entrypoints are defined; at least one is required"]


def test_a_discovery_seed_url_may_not_have_a_query() -> None:
    result = load(
        'providers {\n  discovery {\n    seeds = [{ url = "http://10.0.0.5:8080/?token=abc" }]'
        "\n  }\n}\n"
    )
    [problem] = result.errors
    assert problem.path == "providers.discovery.seeds[0].url"
    assert "may not have a query" in problem.message
    assert "abc" not in problem.message
