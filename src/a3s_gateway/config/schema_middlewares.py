"""Schema of ``middlewares "<name>"`` (SPEC §3.11): one flat block per middleware.

Ring 0: type definitions only. ``type`` is the tag of a msgspec tagged union, so each
middleware type is its own Struct holding only the fields that type accepts; a field of another
type is rejected as unknown, and the loader turns that into "does not apply to type X".
Must not: perform cross-field checks (``semantic.py``).
"""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypeAlias

import msgspec

from a3s_gateway.config.block import (
    Block,
    HeaderName,
    NonEmptyStr,
    NonNegativeInt,
    Percent,
    PositiveInt,
    StatusCode,
)
from a3s_gateway.config.schema_services import KeyExpression
from a3s_gateway.config.values import (
    ABSOLUTE_PATH_PATTERN,
    NO_COLON_PATTERN,
    NO_QUOTE_PATTERN,
    Duration,
    DurationOrZero,
    HttpUrl,
    IpNetwork,
    RedisUrl,
)

JwtAlgorithm = Literal[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512"
]
RetryCondition = Literal[
    "connect-failure", "reset", "timeout", "gateway-error", "5xx", "status-codes"
]
RateValue: TypeAlias = Annotated[float, msgspec.Meta(gt=0)]


class _Middleware(Block, tag_field="type", frozen=True, kw_only=True):
    """Common base: the ``type`` field is the union tag."""


class ApiKey(_Middleware, tag="api-key", frozen=True, kw_only=True):
    """``api-key`` (SPEC §8.2)."""

    header: HeaderName = "X-API-Key"
    keys: Annotated[tuple[NonEmptyStr, ...], msgspec.Meta(min_length=1)]


class BasicAuth(_Middleware, tag="basic-auth", frozen=True, kw_only=True):
    """``basic-auth`` (SPEC §8.3)."""

    username: Annotated[str, msgspec.Meta(min_length=1, pattern=NO_COLON_PATTERN)]
    password: NonEmptyStr
    realm: Annotated[str, msgspec.Meta(pattern=NO_QUOTE_PATTERN)] = "a3s-gateway"
    remove_header: bool = False


class Jwt(_Middleware, tag="jwt", frozen=True, kw_only=True):
    """``jwt`` (SPEC §8.4)."""

    header: HeaderName = "Authorization"
    value: str | None = None
    algorithms: Annotated[tuple[JwtAlgorithm, ...], msgspec.Meta(min_length=1)] = ("HS256",)
    public_key_file: str | None = None
    jwks_url: HttpUrl | None = None
    issuer: str | None = None
    audience: str | tuple[str, ...] | None = None
    leeway: DurationOrZero = DurationOrZero("60s")
    require_exp: bool = True
    subject_header: HeaderName = "X-JWT-Subject"
    claims_headers: dict[str, HeaderName] = {}


class ForwardAuth(_Middleware, tag="forward-auth", frozen=True, kw_only=True):
    """``forward-auth`` (SPEC §8.5)."""

    forward_auth_url: HttpUrl
    forward_auth_response_headers: tuple[HeaderName, ...] = ()
    forward_auth_request_headers: tuple[HeaderName, ...] = ()
    forward_auth_timeout: Duration = Duration("10s")


class RateLimit(_Middleware, tag="rate-limit", frozen=True, kw_only=True):
    """``rate-limit``: in-process token buckets (SPEC §8.6)."""

    rate: RateValue
    burst: PositiveInt | None = None
    rate_limit_key: KeyExpression = "client-ip"
    rate_limit_headers: bool = True
    max_keys: PositiveInt = 100000


class RateLimitRedis(_Middleware, tag="rate-limit-redis", frozen=True, kw_only=True):
    """``rate-limit-redis``: token buckets shared through Redis (SPEC §8.7)."""

    rate: RateValue
    burst: PositiveInt | None = None
    rate_limit_key: KeyExpression = "client-ip"
    rate_limit_headers: bool = True
    redis_url: RedisUrl
    redis_timeout: Duration = Duration("100ms")
    redis_key_prefix: str = "a3s:ratelimit:"
    fail_open: bool = True


class Cors(_Middleware, tag="cors", frozen=True, kw_only=True):
    """``cors`` (SPEC §8.8)."""

    allowed_origins: tuple[str, ...] = ("*",)
    allowed_methods: tuple[str, ...] = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
    allowed_headers: tuple[str, ...] = ("Content-Type", "Authorization")
    expose_headers: tuple[str, ...] = ()
    allow_credentials: bool = False
    max_age: NonNegativeInt = 86400


class Headers(_Middleware, tag="headers", frozen=True, kw_only=True):
    """``headers``: set or remove request and response headers (SPEC §8.9)."""

    request_headers: dict[HeaderName, str] = {}
    response_headers: dict[HeaderName, str] = {}


class StripPrefix(_Middleware, tag="strip-prefix", frozen=True, kw_only=True):
    """``strip-prefix`` (SPEC §8.10)."""

    prefixes: Annotated[
        tuple[Annotated[str, msgspec.Meta(pattern=ABSOLUTE_PATH_PATTERN)], ...],
        msgspec.Meta(min_length=1),
    ]


class BodyLimit(_Middleware, tag="body-limit", frozen=True, kw_only=True):
    """``body-limit`` (SPEC §8.11)."""

    max_body_bytes: PositiveInt


class Retry(_Middleware, tag="retry", frozen=True, kw_only=True):
    """``retry`` (SPEC §8.12)."""

    max_retries: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    retry_interval_ms: NonNegativeInt = 100
    retry_max_interval_ms: NonNegativeInt = 1000
    retry_on: tuple[RetryCondition, ...] = ("connect-failure", "reset", "timeout", "gateway-error")
    retry_status_codes: tuple[StatusCode, ...] = ()
    retry_non_idempotent: bool = False
    retry_max_body_bytes: NonNegativeInt = 1048576
    retry_budget_percent: Percent = 20
    retry_budget_min: NonNegativeInt = 3


class CircuitBreaker(_Middleware, tag="circuit-breaker", frozen=True, kw_only=True):
    """``circuit-breaker`` (SPEC §8.13)."""

    failure_threshold: PositiveInt = 5
    cooldown_secs: PositiveInt = 30
    success_threshold: PositiveInt = 1
    half_open_max_requests: PositiveInt = 1


class IpAllow(_Middleware, tag="ip-allow", frozen=True, kw_only=True):
    """``ip-allow`` (SPEC §8.14)."""

    allowed_ips: tuple[IpNetwork, ...]
    ip_source: Literal["client", "peer"] = "client"


class Compress(_Middleware, tag="compress", frozen=True, kw_only=True):
    """``compress`` (SPEC §8.15); ``None`` content types = the built-in list."""

    compress_min_bytes: NonNegativeInt = 1024
    compress_level: Annotated[int, msgspec.Meta(ge=1, le=9)] = 6
    compress_encodings: Annotated[
        tuple[Literal["br", "gzip", "deflate"], ...], msgspec.Meta(min_length=1)
    ] = ("br", "gzip", "deflate")
    compress_content_types: tuple[str, ...] | None = None


class TcpFilter(_Middleware, tag="tcp-filter", frozen=True, kw_only=True):
    """``tcp-filter``: connection limit and IP allowlist for TCP routers (SPEC §8.16)."""

    allowed_ips: tuple[IpNetwork, ...] = ()
    max_connections: PositiveInt | None = None


Middleware: TypeAlias = (
    ApiKey
    | BasicAuth
    | Jwt
    | ForwardAuth
    | RateLimit
    | RateLimitRedis
    | Cors
    | Headers
    | StripPrefix
    | BodyLimit
    | Retry
    | CircuitBreaker
    | IpAllow
    | Compress
    | TcpFilter
)

#: Middleware type name → its Struct, in the order SPEC §3.11 lists them.
MIDDLEWARE_TYPES: Final[dict[str, type[Middleware]]] = {
    "api-key": ApiKey,
    "basic-auth": BasicAuth,
    "jwt": Jwt,
    "forward-auth": ForwardAuth,
    "rate-limit": RateLimit,
    "rate-limit-redis": RateLimitRedis,
    "cors": Cors,
    "headers": Headers,
    "strip-prefix": StripPrefix,
    "body-limit": BodyLimit,
    "retry": Retry,
    "circuit-breaker": CircuitBreaker,
    "ip-allow": IpAllow,
    "compress": Compress,
    "tcp-filter": TcpFilter,
}

#: Middleware types allowed on TCP routers; every other type is HTTP-only.
TCP_MIDDLEWARE_TYPES: Final = frozenset({"tcp-filter"})
#: Auth middlewares: a ``cors`` after one of these rejects preflights (SPEC §3.15 warning).
AUTH_MIDDLEWARE_TYPES: Final = frozenset({"api-key", "basic-auth", "jwt", "forward-auth"})


def middleware_type(middleware: Middleware) -> str:
    """The ``type`` tag of a middleware block."""
    tag = type(middleware).__struct_config__.tag
    assert isinstance(tag, str)
    return tag
