"""Semantic checks of an entrypoint's tls block (SPEC §3.15 check 9).

Mirrors ``semantic_tls``; helpers live in ``tests.support.semantic``.
"""

from __future__ import annotations

import pytest

from tests.support.semantic import Case, load, run_case, tls_entrypoint

# -- TLS (check 9) --------------------------------------------------------------------------------


TLS_CASES = [
    Case(
        "cert-without-key",
        tls_entrypoint('    cert_file = "/c.pem"\n'),
        'entrypoints["secure"].tls.key_file',
        "key_file is required with cert_file",
        "tls {",
    ),
    Case(
        "no-certificate-source",
        tls_entrypoint('    min_version = "1.3"\n'),
        'entrypoints["secure"].tls',
        "tls needs a certificate",
        "tls {",
    ),
    Case(
        "client-auth-needs-ca",
        tls_entrypoint(
            '    cert_file = "/c.pem"\n    key_file = "/k.pem"\n    client_auth = "require"\n'
        ),
        'entrypoints["secure"].tls.client_ca_file',
        'client_auth "require" needs client_ca_file',
        "tls {",
    ),
    Case(
        "acme-needs-email",
        tls_entrypoint("    acme = true\n"),
        'entrypoints["secure"].tls.acme_email',
        "acme = true needs acme_email",
        "tls {",
    ),
    Case(
        "dns01-needs-acme-dns",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n    acme_challenge = "dns-01"\n'
        ),
        'entrypoints["secure"].tls.acme_dns',
        'acme_challenge "dns-01" needs an acme_dns block',
        "tls {",
    ),
    Case(
        "acme-dns-only-with-dns01",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n    acme_dns {\n'
            '      provider = "challtestsrv"\n    }\n'
        ),
        'entrypoints["secure"].tls.acme_dns',
        'block "acme_dns" applies only to acme_challenge "dns-01"',
        "acme_dns {",
    ),
    Case(
        "wildcard-needs-dns01",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n'
            '    acme_domains = ["*.example.com"]\n'
        ),
        'entrypoints["secure"].tls.acme_domains[0]',
        'wildcard domain "*.example.com" needs acme_challenge "dns-01"',
        "acme_domains",
    ),
    Case(
        "acme-dns-field-of-other-provider",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n'
            '    acme_challenge = "dns-01"\n    acme_dns {\n      provider = "rfc2136"\n'
            '      nameserver = "10.0.0.53:53"\n      zone_id = "z1"\n    }\n'
        ),
        'entrypoints["secure"].tls.acme_dns.zone_id',
        'field "zone_id" does not apply to dns provider "rfc2136" (applies to: cloudflare, '
        "route53)",
        "zone_id",
    ),
    Case(
        "cloudflare-needs-token",
        tls_entrypoint(
            '    acme = true\n    acme_email = "ops@example.com"\n'
            '    acme_challenge = "dns-01"\n    acme_dns {\n      provider = "cloudflare"\n'
            '      zone_id = "z1"\n    }\n'
        ),
        'entrypoints["secure"].tls.acme_dns.api_token',
        'field "api_token" is required for dns provider "cloudflare"',
        "acme_dns {",
    ),
    Case(
        "alpn-reserved",
        tls_entrypoint(
            '    cert_file = "/c.pem"\n    key_file = "/k.pem"\n    alpn = ["h2", "acme-tls/1"]\n'
        ),
        'entrypoints["secure"].tls.alpn[1]',
        'alpn protocol "acme-tls/1" is reserved',
        "alpn",
    ),
    Case(
        "alpn-empty",
        tls_entrypoint('    cert_file = "/c.pem"\n    key_file = "/k.pem"\n    alpn = [""]\n'),
        'entrypoints["secure"].tls.alpn[0]',
        "alpn protocol names must not be empty",
        "alpn",
    ),
]


@pytest.mark.parametrize("case", TLS_CASES, ids=lambda c: c.id)
def test_tls(case: Case) -> None:
    run_case(case)


def test_acme_with_dns01_is_valid() -> None:
    snippet = tls_entrypoint(
        '    acme = true\n    acme_email = "ops@example.com"\n    acme_challenge = "dns-01"\n'
        '    acme_domains = ["*.example.com", "example.com"]\n    acme_dns {\n'
        '      provider = "cloudflare"\n      api_token = "t0ken-value"\n'
        '      zone_id = "z1"\n    }\n'
    )
    assert load(snippet).problems == ()


def test_acme_on_a_tcp_entrypoint_is_refused() -> None:
    snippet = tls_entrypoint(
        '    acme = true\n    acme_email = "ops@example.com"\n'
        '    acme_domains = ["db.example.com"]\n'
    ).replace('address = "127.0.0.1:8443"', 'address = "127.0.0.1:8443"\n  protocol = "tcp"')
    run_case(
        Case(
            "acme-on-tcp",
            snippet,
            'entrypoints["secure"].tls.acme',
            "acme = true applies to http entrypoints only",
            "acme = true",
        )
    )
