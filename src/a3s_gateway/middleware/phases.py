"""Middleware chains: built once per config generation, run per request (SPEC §8.1).

Ring 0. ``compile_chains`` makes one instance per middleware *definition* (shared by every
router that lists it) and one tuple per router, in the router's order. A definition whose
block is unchanged since the previous generation keeps its instance, and with it its state
(buckets, breaker state) across a reload.

Every type of SPEC §8 that applies to HTTP routers has a factory here (``tcp-filter`` applies
only to TCP routers; the semantic checks refuse it on an HTTP router). A router whose
middleware cannot be built (a ``jwt`` without the wall clock, a ``forward-auth`` or
``rate-limit-redis`` without its client) is refused with ``StartError``, and a reload with it
is refused: serving such a route without its auth or limits would fail open, silently.
Unreferenced definitions are not built.

Running (``server/exchange/``): ``request`` sides in chain order; a short-circuit answer goes
back through the ``response`` sides of the middlewares entered *before* the one that answered
(``through``), in reverse order; proxied responses and gateway errors go through the response
side of the whole chain.

Must not: do IO (but for the key files a definition names, read once when it is built), read
the time (``jwt`` gets the wall clock from the caller), or know the downstream protocol.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, TypeAlias, TypeVar, cast

from a3s_gateway.errors import StartError
from a3s_gateway.middleware.outbound import MiddlewareDeps
from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.responses import GeneratedResponse

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.schema_middlewares import Middleware as MiddlewareBlock
    from a3s_gateway.middleware.base import Middleware, RequestState

__all__ = ["Chains", "compile_chains", "through"]

Factory: TypeAlias = "Callable[[str, MiddlewareBlock, MiddlewareDeps], Middleware]"
Chains: TypeAlias = "Mapping[str, tuple[Middleware, ...]]"
_Block = TypeVar("_Block")


def _factory(kind: str, deps: MiddlewareDeps) -> Factory | None:
    """The factory of a middleware type by its config ``type``; None for a type without an HTTP
    form (``tcp-filter``) or whose dependency is missing. Each module is imported only once a
    config uses its type. Types that need a dependency (a clock, an outbound client) get
    ``deps``."""
    match kind:
        case "api-key":
            from a3s_gateway.middleware.auth import ApiKeyMiddleware

            return _plain(ApiKeyMiddleware.from_config)
        case "basic-auth":
            from a3s_gateway.middleware.auth import BasicAuthMiddleware

            return _plain(BasicAuthMiddleware.from_config)
        case "body-limit":
            from a3s_gateway.middleware.body_limit import BodyLimitMiddleware

            return _plain(BodyLimitMiddleware.from_config)
        case "circuit-breaker":
            from a3s_gateway.middleware.breaker import CircuitBreakerMiddleware

            return _plain(CircuitBreakerMiddleware.from_config)
        case "cors":
            from a3s_gateway.middleware.cors import CorsMiddleware

            return _plain(CorsMiddleware.from_config)
        case "headers":
            from a3s_gateway.middleware.headers import HeadersMiddleware

            return _plain(HeadersMiddleware.from_config)
        case "ip-allow":
            from a3s_gateway.middleware.ip_allow import IpAllowMiddleware

            return _plain(IpAllowMiddleware.from_config)
        case "rate-limit":
            from a3s_gateway.middleware.ratelimit import RateLimitMiddleware

            return _plain(RateLimitMiddleware.from_config)
        case "strip-prefix":
            from a3s_gateway.middleware.rewrite import StripPrefixMiddleware

            return _plain(StripPrefixMiddleware.from_config)
        case "compress":
            from a3s_gateway.middleware.compress import CompressMiddleware

            return _plain(CompressMiddleware.from_config)
        case "forward-auth":
            from a3s_gateway.middleware.forward_auth import ForwardAuthMiddleware

            return cast("Factory", ForwardAuthMiddleware.from_config)
        case "retry":
            from a3s_gateway.middleware.retry import RetryMiddleware

            return _plain(RetryMiddleware.from_config)
        case "rate-limit-redis":
            from a3s_gateway.middleware.redis_ratelimit import RedisRateLimitMiddleware

            # from_config takes deps (for its Redis client) and its own block type.
            return cast("Factory", RedisRateLimitMiddleware.from_config)
        case "jwt":
            from a3s_gateway.middleware.jwt import JwtMiddleware

            clock = deps.clock
            if clock is None:
                return None
            # The outbound HTTP client fetches ``jwks_url`` (refused without one if set).
            return _plain(partial(JwtMiddleware.from_config, clock=clock, http=deps.http))
    return None


def _plain(factory: Callable[[str, _Block], Middleware]) -> Factory:
    """A factory that needs no ``deps``; its block type is the one ``kind`` dispatched on."""

    def build(name: str, block: MiddlewareBlock, deps: MiddlewareDeps) -> Middleware:
        del deps
        return factory(name, cast("_Block", block))

    return build


def compile_chains(
    config: Config,
    previous: Config | None = None,
    previous_instances: Mapping[str, Middleware] | None = None,
    *,
    deps: MiddlewareDeps | None = None,
) -> tuple[dict[str, Middleware], dict[str, tuple[Middleware, ...]]]:
    """Instances by definition name and chains by router name; ``deps`` are what some types
    need (the wall clock for ``jwt``, outbound clients); a type whose dependency is missing
    cannot be built.

    Raises ``StartError`` naming every referenced definition that cannot be built here (its
    dependency is missing, or its type has no HTTP form), and for a definition whose own
    settings fail (a ``jwt`` key file that cannot be read, say).
    """
    referenced = {name for router in config.routers.values() for name in router.middlewares}
    deps = MiddlewareDeps() if deps is None else deps
    instances: dict[str, Middleware] = {}
    missing: list[str] = []
    for name in sorted(referenced):
        block = config.middlewares[name]
        kind = block_type(block)
        factory = _factory(kind, deps)
        if factory is None:
            missing.append(f'"{name}" ({kind})')
            continue
        old = previous.middlewares.get(name) if previous is not None else None
        kept = previous_instances.get(name) if previous_instances is not None else None
        if kept is not None and old is not None and old == block:
            instances[name] = kept  # unchanged definition: same instance, same state
        else:
            instance = instances[name] = factory(name, block, deps)
            instance.kind = kind
    if missing:
        raise StartError(
            "middleware cannot run on an http router of this gateway: " + ", ".join(missing)
        )
    chains = {
        name: tuple(instances[m] for m in router.middlewares)
        for name, router in config.routers.items()
        if router.middlewares
    }
    return instances, chains


def block_type(block: MiddlewareBlock) -> str:
    """The config ``type`` tag of a middleware block."""
    tag = type(block).__struct_config__.tag
    return str(tag)


def through(
    entered: Sequence[Middleware], state: RequestState, response: GeneratedResponse
) -> GeneratedResponse:
    """``response`` after the response sides of ``entered``, last first (a copy: generated
    responses may be shared constants)."""
    if not entered:
        return response
    head = response.head
    headers = list(head.headers)
    for middleware in reversed(entered):
        middleware.response(state, head.status, headers)
    return GeneratedResponse(
        head=ResponseHead(head.status, headers, head.reason),
        body=response.body,
        close=response.close,
    )
