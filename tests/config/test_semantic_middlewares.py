"""Semantic checks of middlewares (SPEC §3.11, §3.15 check 11).

Mirrors ``semantic_middlewares``; helpers live in ``tests.support.semantic``.
"""

from __future__ import annotations

import pytest

from tests.support.semantic import Case, find, line_of, load, middleware, run_case

# -- middlewares (check 11) -----------------------------------------------------------------------


MIDDLEWARE_CASES = [
    Case(
        "jwt-hs-needs-value",
        middleware("jwt", '  type = "jwt"\n  issuer = "me"\n'),
        'middlewares["jwt"].value',
        'field "value" is required when an HS algorithm is allowed',
        'middlewares "jwt"',
    ),
    Case(
        "jwt-rs-needs-key",
        middleware("jwt", '  type = "jwt"\n  algorithms = ["RS256"]\n'),
        'middlewares["jwt"]',
        "public_key_file or jwks_url is required when RS256 is allowed",
        'middlewares "jwt"',
    ),
    Case(
        "jwt-value-without-hs",
        middleware(
            "jwt",
            '  type = "jwt"\n  algorithms = ["ES256"]\n  public_key_file = "/k.pem"\n'
            '  value = "0123456789abcdef0123456789abcdef"\n',
        ),
        'middlewares["jwt"].value',
        'field "value" applies only when an HS algorithm is allowed',
        "value =",
    ),
    Case(
        "jwt-short-hs512-secret",
        middleware(
            "jwt",
            '  type = "jwt"\n  algorithms = ["HS256", "HS512"]\n'
            '  value = "0123456789abcdef0123456789abcdef"\n',
        ),
        'middlewares["jwt"].value',
        "HS512 secret",
        "value =",
        severity="warning",
    ),
    Case(
        "jwt-pem-as-hs-secret",
        middleware(
            "jwt",
            '  type = "jwt"\n'
            '  value = "-----BEGIN PUBLIC KEY-----\\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\\n'
            '-----END PUBLIC KEY-----"\n',
        ),
        'middlewares["jwt"].value',
        'field "value" holds a key (a PEM block, an SSH key or a JWK), not a shared secret',
        "value =",
    ),
    Case(
        "retry-intervals",
        middleware(
            "retry",
            '  type = "retry"\n  retry_interval_ms = 500\n  retry_max_interval_ms = 100\n',
        ),
        'middlewares["retry"].retry_max_interval_ms',
        "retry_max_interval_ms (100) must be at least retry_interval_ms (500)",
        "retry_max_interval_ms",
    ),
    Case(
        "retry-status-codes",
        middleware("retry", '  type = "retry"\n  retry_status_codes = [503]\n'),
        'middlewares["retry"].retry_status_codes',
        'retry_status_codes needs "status-codes" in retry_on',
        "retry_status_codes",
    ),
    Case(
        "tcp-filter-needs-limit",
        middleware("limit", '  type = "tcp-filter"\n  allowed_ips = []\n'),
        'middlewares["limit"]',
        "tcp-filter needs max_connections or allowed_ips",
        'middlewares "limit"',
    ),
    Case(
        "cors-origin",
        middleware("cors", '  type = "cors"\n  allowed_origins = ["https://a.*.example.com"]\n'),
        'middlewares["cors"].allowed_origins[0]',
        'origin "https://a.*.example.com" is invalid',
        "allowed_origins",
    ),
    Case(
        "cors-origin-with-path",
        middleware("cors", '  type = "cors"\n  allowed_origins = ["https://example.com/"]\n'),
        'middlewares["cors"].allowed_origins[0]',
        "is invalid: expected",
        "allowed_origins",
    ),
    Case(
        "cors-credentials-star",
        middleware("cors", '  type = "cors"\n  allow_credentials = true\n'),
        'middlewares["cors"].allowed_origins',
        'allow_credentials with origin "*"',
        'middlewares "cors"',
        severity="warning",
    ),
    Case(
        "headers-forbidden-name",
        middleware(
            "h", '  type = "headers"\n  response_headers = { "transfer-encoding" = "chunked" }\n'
        ),
        'middlewares["h"].response_headers["transfer-encoding"]',
        'header "transfer-encoding" cannot be set',
        "response_headers",
    ),
    Case(
        "headers-crlf-value",
        middleware(
            "h",
            '  type = "headers"\n  request_headers = {\n    "X-A" = "a\\r\\nInjected: 1"\n  }\n',
        ),
        'middlewares["h"].request_headers["X-A"]',
        'value of header "X-A" contains CR, LF or NUL',
        '"X-A"',
    ),
    Case(
        "headers-control-value",
        middleware(
            "h",
            '  type = "headers"\n  response_headers = {\n    "X-B" = "a\\u0007b"\n  }\n',
        ),
        'middlewares["h"].response_headers["X-B"]',
        'value of header "X-B" contains a control character',
        '"X-B"',
    ),
    Case(
        "headers-delete-value",
        middleware(
            "h",
            '  type = "headers"\n  response_headers = {\n    "X-C" = "ab\\u007f"\n  }\n',
        ),
        'middlewares["h"].response_headers["X-C"]',
        'value of header "X-C" contains a control character',
        '"X-C"',
    ),
    Case(
        "headers-padded-value",
        middleware(
            "h",
            '  type = "headers"\n  request_headers = {\n    "X-D" = " padded"\n  }\n',
        ),
        'middlewares["h"].request_headers["X-D"]',
        'value of header "X-D" starts or ends with whitespace',
        '"X-D"',
    ),
    Case(
        "compress-content-type",
        middleware("zip", '  type = "compress"\n  compress_content_types = ["text/*", "json"]\n'),
        'middlewares["zip"].compress_content_types[1]',
        'media type "json" is invalid',
        "compress_content_types",
    ),
]


@pytest.mark.parametrize("case", MIDDLEWARE_CASES, ids=lambda c: c.id)
def test_middlewares(case: Case) -> None:
    run_case(case)


def test_valid_cors_origins() -> None:
    origins = '["*", "https://app.example.com", "https://*.example.com:8443", "http://[::1]:3000"]'
    snippet = middleware("cors", f'  type = "cors"\n  allowed_origins = {origins}\n')
    assert load(snippet).problems == ()


def test_in_memory_rate_limit_with_workers() -> None:
    snippet = middleware("rl", '  type = "rate-limit"\n  rate = 10\n')
    assert load(snippet).problems == ()
    problem = find(load(snippet, workers=4), 'middlewares["rl"]', "warning", "per worker")
    assert "4 workers" in problem.message
    assert problem.line == line_of(snippet, 'middlewares "rl"')
