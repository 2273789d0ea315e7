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

Must not: do IO (the key files a definition names are read once, when it is built, by the
shell's ``MiddlewareDeps.read_file``), read the time (``jwt`` gets the wall clock from the
caller), or know the downstream protocol.
"""

from __future__ import annotations

import importlib
from functools import partial
from typing import TYPE_CHECKING, Final, TypeAlias, TypeVar, cast

from a3s_gateway.errors import StartError
from a3s_gateway.middleware.outbound import MiddlewareDeps
from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.responses import GeneratedResponse

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.schema_middlewares import Middleware as MiddlewareBlock
    from a3s_gateway.middleware.contract import Middleware, RequestState

__all__ = ["Chains", "compile_chains", "through"]

Factory: TypeAlias = "Callable[[str, MiddlewareBlock, MiddlewareDeps], Middleware]"
Chains: TypeAlias = "Mapping[str, tuple[Middleware, ...]]"
_Block = TypeVar("_Block")


#: The types whose factory needs nothing but their block: the module (under
#: ``a3s_gateway.middleware``) and the class, imported only once a config names the type.
_PLAIN_TYPES: Final[Mapping[str, tuple[str, str]]] = {
    "api-key": ("auth", "ApiKeyMiddleware"),
    "basic-auth": ("auth", "BasicAuthMiddleware"),
    "body-limit": ("body_limit", "BodyLimitMiddleware"),
    "circuit-breaker": ("breaker", "CircuitBreakerMiddleware"),
    "cors": ("cors", "CorsMiddleware"),
    "headers": ("header_edits", "HeadersMiddleware"),
    "ip-allow": ("ip_allow", "IpAllowMiddleware"),
    "rate-limit": ("ratelimit", "RateLimitMiddleware"),
    "strip-prefix": ("rewrite", "StripPrefixMiddleware"),
    "compress": ("compress", "CompressMiddleware"),
    "retry": ("retry", "RetryMiddleware"),
}


def _factory(kind: str, deps: MiddlewareDeps) -> Factory | None:
    """The factory of a middleware type by its config ``type``; None for a type without an HTTP
    form (``tcp-filter``) or whose dependency is missing. Each module is imported only once a
    config uses its type. Types that need a dependency (a clock, an outbound client) get
    ``deps``."""
    plain = _PLAIN_TYPES.get(kind)
    if plain is not None:
        return _plain(_from_config(*plain))
    match kind:
        case "forward-auth":
            from a3s_gateway.middleware.forward_auth import ForwardAuthMiddleware

            return cast("Factory", ForwardAuthMiddleware.from_config)
        case "rate-limit-redis":
            from a3s_gateway.middleware.redis_ratelimit import RedisRateLimitMiddleware

            # from_config takes deps (for its Redis client) and its own block type.
            return cast("Factory", RedisRateLimitMiddleware.from_config)
        case "jwt":
            from a3s_gateway.middleware.jwt import JwtMiddleware

            clock = deps.clock
            if clock is None:
                return None
            # The outbound HTTP client fetches ``jwks_url``, the shell's reader reads
            # ``public_key_file`` (each refused without its dependency if set).
            return _plain(
                partial(
                    JwtMiddleware.from_config, clock=clock, http=deps.http, read_file=deps.read_file
                )
            )
    return None


def _from_config(module: str, name: str) -> Callable[[str, MiddlewareBlock], Middleware]:
    """``name.from_config`` of ``a3s_gateway.middleware.<module>``, imported now; its block
    type is the one its config ``type`` names (the schema's tagged union guarantees it)."""
    loaded = importlib.import_module(f"a3s_gateway.middleware.{module}")
    factory = getattr(getattr(loaded, name), "from_config")  # noqa: B009 -- a name held as data
    return cast("Callable[[str, MiddlewareBlock], Middleware]", factory)


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
