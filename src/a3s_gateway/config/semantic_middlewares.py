"""Semantic checks of ``middlewares`` (SPEC §3.11, §3.15 check 11 and the middleware warnings).

Ring 0: pure. The schema already rejects fields of other types and checks each field's own
range; this module checks what spans fields: the ``jwt`` key sources against the allowed
algorithms, retry intervals and status codes, ``tcp-filter`` needing a limit, CORS origins,
methods and header names, the ``headers`` rules (no hop-by-hop or framing headers, no CR/LF/NUL
in values), compress media types, and warns about weak HS secrets, credentialed CORS for ``*``
and per-worker in-memory rate limits.

Must not: raise, or echo a secret (``value``, ``password``, ``keys``) or a header value (a
configured header may carry a token).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from jwt import PyJWTError, get_algorithm_by_name

from a3s_gateway.config.schema_middlewares import (
    Compress,
    Cors,
    Headers,
    Jwt,
    Middleware,
    RateLimit,
    Retry,
    TcpFilter,
)
from a3s_gateway.config.values import HEADER_NAME_PATTERN, quote_value

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from a3s_gateway.config.problems import Path
    from a3s_gateway.config.semantic_report import Report

#: HS algorithm → the minimum secret length in bytes (the hash size, RFC 7518 §3.2).
HS_SECRET_BYTES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
#: Headers the ``headers`` middleware may not set (connection management and framing).
FORBIDDEN_HEADERS: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    }
)
_TOKEN: Final = re.compile(HEADER_NAME_PATTERN)
_LABEL: Final = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST: Final = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])"
_ORIGIN: Final = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]*://(?:\*\.)?{_HOST}(?::[0-9]{{1,5}})?")
_MEDIA_PART: Final = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*"
_MEDIA_TYPE: Final = re.compile(rf"{_MEDIA_PART}/(?:\*|\*[A-Za-z0-9!#$&^_.+-]+|{_MEDIA_PART}\*?)")
_BAD_VALUE_CHARS: Final = ("\r", "\n", "\x00")


def check_middlewares(report: Report) -> None:
    """Check every middleware in config order."""
    for name, middleware in report.config.middlewares.items():
        _check_middleware(report, ("middlewares", name), middleware)


def _check_middleware(report: Report, base: Path, middleware: Middleware) -> None:
    match middleware:
        case Jwt():
            _check_jwt(report, base, middleware)
        case RateLimit():
            if report.context.workers > 1:
                report.warning(
                    base,
                    f"rate-limit is per worker: with {report.context.workers} workers each one "
                    "allows the full rate; use rate-limit-redis for one shared limit",
                )
        case Retry():
            _check_retry(report, base, middleware)
        case TcpFilter():
            if middleware.max_connections is None and not middleware.allowed_ips:
                report.error(base, "tcp-filter needs max_connections or allowed_ips")
        case Cors():
            _check_cors(report, base, middleware)
        case Headers():
            for field in ("request_headers", "response_headers"):
                headers = getattr(middleware, field)
                _check_forbidden_headers(report, (*base, field), headers)
                check_header_values(report, (*base, field), headers)
        case Compress():
            for index, media in enumerate(middleware.compress_content_types or ()):
                if _MEDIA_TYPE.fullmatch(media) is None:
                    report.error(
                        (*base, "compress_content_types", index),
                        f"media type {quote_value(media)} is invalid: expected a type like "
                        '"text/*" or "application/json"',
                    )
        case _:
            pass


def _usable_hmac_secret(value: str, algorithms: Sequence[str]) -> bool:
    """Whether PyJWT, which verifies the tokens, takes ``value`` as the HMAC secret of each
    HS algorithm (it refuses keys, its guard against algorithm confusion)."""
    for algorithm in algorithms:
        try:
            get_algorithm_by_name(algorithm).prepare_key(value.encode())
        except PyJWTError:
            return False
    return True


def _check_jwt(report: Report, base: Path, jwt: Jwt) -> None:
    hs = [algorithm for algorithm in jwt.algorithms if algorithm.startswith("HS")]
    asymmetric = [algorithm for algorithm in jwt.algorithms if not algorithm.startswith("HS")]
    if hs and jwt.value is None:
        report.error((*base, "value"), 'field "value" is required when an HS algorithm is allowed')
    elif hs and jwt.value == "":
        report.error((*base, "value"), 'field "value" must not be empty')
    elif not hs and jwt.value is not None:
        report.error((*base, "value"), 'field "value" applies only when an HS algorithm is allowed')
    elif hs and jwt.value is not None:
        if not _usable_hmac_secret(jwt.value, hs):
            report.error(
                (*base, "value"),
                'field "value" holds a key (a PEM block, an SSH key or a JWK), not a shared '
                "secret; HS tokens are verified with random bytes, RS and ES tokens with "
                '"public_key_file" or "jwks_url"',
            )
            return
        needed = max(HS_SECRET_BYTES[algorithm] for algorithm in hs)
        if len(jwt.value.encode()) < needed:
            strongest = max(hs, key=lambda algorithm: HS_SECRET_BYTES[algorithm])
            report.warning(
                (*base, "value"),
                f'the {strongest} secret in "value" is shorter than {needed} bytes; use at '
                f"least {needed} random bytes",
            )
    sources = [
        field for field in ("public_key_file", "jwks_url") if getattr(jwt, field) is not None
    ]
    if asymmetric and not sources:
        report.error(
            base,
            f"public_key_file or jwks_url is required when {asymmetric[0]} is allowed",
        )
    elif asymmetric and len(sources) > 1:
        report.error((*base, "jwks_url"), "set only one of public_key_file and jwks_url")
    elif not asymmetric:
        for field in sources:
            report.error(
                (*base, field),
                f'field "{field}" applies only when an RS or ES algorithm is allowed',
            )


def _check_retry(report: Report, base: Path, retry: Retry) -> None:
    if retry.retry_max_interval_ms < retry.retry_interval_ms:
        report.error(
            (*base, "retry_max_interval_ms"),
            f"retry_max_interval_ms ({retry.retry_max_interval_ms}) must be at least "
            f"retry_interval_ms ({retry.retry_interval_ms})",
        )
    if retry.retry_status_codes and "status-codes" not in retry.retry_on:
        report.error(
            (*base, "retry_status_codes"),
            'retry_status_codes needs "status-codes" in retry_on',
        )
    elif "status-codes" in retry.retry_on and not retry.retry_status_codes:
        report.error(
            (*base, "retry_on"),
            'retry_on "status-codes" needs retry_status_codes (the codes to retry)',
        )


def _check_cors(report: Report, base: Path, cors: Cors) -> None:
    for index, origin in enumerate(cors.allowed_origins):
        if origin != "*" and _ORIGIN.fullmatch(origin) is None:
            report.error(
                (*base, "allowed_origins", index),
                f'origin {quote_value(origin)} is invalid: expected "*" or '
                'scheme://host[:port], e.g. "https://app.example.com" or '
                '"https://*.example.com"',
            )
    if cors.allow_credentials and "*" in cors.allowed_origins:
        report.warning(
            (*base, "allowed_origins"),
            'allow_credentials with origin "*" gives every site credentialed access; list the '
            "allowed origins instead",
        )
    for field in ("allowed_methods", "allowed_headers", "expose_headers"):
        values: tuple[str, ...] = getattr(cors, field)
        for index, value in enumerate(values):
            if value != "*" and _TOKEN.match(value) is None:
                noun = "method" if field == "allowed_methods" else "header name"
                report.error(
                    (*base, field, index),
                    f'{noun} {quote_value(value)} is invalid: expected an RFC 9110 token or "*"',
                )


def _check_forbidden_headers(report: Report, base: Path, headers: Mapping[str, str]) -> None:
    for name in headers:
        if name.lower() in FORBIDDEN_HEADERS:
            report.error(
                (*base, name),
                f'header "{name}" cannot be set: connection and framing headers are managed by '
                "the gateway",
            )


def check_header_values(report: Report, base: Path, headers: Mapping[str, str]) -> None:
    """Header values must be RFC 9110 field values once UTF-8 encoded (the value itself is never
    echoed): otherwise every response that sets one would fail with a 500 at run time."""
    for name, value in headers.items():
        if any(char in value for char in _BAD_VALUE_CHARS):
            report.error((*base, name), f'value of header "{name}" contains CR, LF or NUL')
        elif any(char != "\t" and (char < " " or char == "\x7f") for char in value):
            report.error(
                (*base, name),
                f'value of header "{name}" contains a control character (only tab is allowed)',
            )
        elif value != value.strip(" \t"):
            report.error((*base, name), f'value of header "{name}" starts or ends with whitespace')
