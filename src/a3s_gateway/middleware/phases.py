"""Middleware chains: built once per config generation, run per request (SPEC §8.1).

Ring 0. ``compile_chains`` makes one instance per middleware *definition* (shared by every
router that lists it) and one tuple per router, in the router's order. A definition whose
block is unchanged since the previous generation keeps its instance, and with it its state
(buckets, breaker state) across a reload.

A router that lists a middleware type this build cannot run yet is refused with ``StartError``
(and a reload with it is refused): serving such a route without its auth or limits would fail
open, silently. Unreferenced definitions of such types are ignored.

Running (``server/exchange.py``): ``request`` sides in chain order; a short-circuit answer goes
back through the ``response`` sides of the middlewares entered *before* the one that answered
(``through``), in reverse order; proxied responses and gateway errors go through the response
side of the whole chain.

Must not: do IO (but for the key files a definition names, read once when it is built), read
the time (``jwt`` gets the wall clock from the caller), or know the downstream protocol.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, TypeAlias

from a3s_gateway.errors import StartError
from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.responses import GeneratedResponse

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from a3s_gateway.config.schema import Config
    from a3s_gateway.config.schema_middlewares import Middleware as MiddlewareBlock
    from a3s_gateway.middleware.base import Middleware, RequestState

__all__ = ["Chains", "compile_chains", "through"]

Factory: TypeAlias = "Callable[[str, MiddlewareBlock], Middleware]"
Chains: TypeAlias = "Mapping[str, tuple[Middleware, ...]]"


def _factories(clock: Callable[[], float] | None) -> dict[str, Factory]:
    """The middleware types this build runs, by their config ``type``; ``jwt`` needs the wall
    clock (``exp``/``nbf``), which Ring 0 takes from its caller."""
    # Imported here: each module is only needed once a config uses its type.
    from a3s_gateway.middleware.auth import ApiKeyMiddleware, BasicAuthMiddleware
    from a3s_gateway.middleware.body_limit import BodyLimitMiddleware
    from a3s_gateway.middleware.breaker import CircuitBreakerMiddleware
    from a3s_gateway.middleware.cors import CorsMiddleware
    from a3s_gateway.middleware.headers import HeadersMiddleware
    from a3s_gateway.middleware.ip_allow import IpAllowMiddleware
    from a3s_gateway.middleware.jwt import JwtMiddleware
    from a3s_gateway.middleware.ratelimit import RateLimitMiddleware
    from a3s_gateway.middleware.rewrite import StripPrefixMiddleware

    factories: dict[str, Factory] = {}
    for kind, cls in (
        ("api-key", ApiKeyMiddleware),
        ("basic-auth", BasicAuthMiddleware),
        ("body-limit", BodyLimitMiddleware),
        ("circuit-breaker", CircuitBreakerMiddleware),
        ("cors", CorsMiddleware),
        ("headers", HeadersMiddleware),
        ("ip-allow", IpAllowMiddleware),
        ("rate-limit", RateLimitMiddleware),
        ("strip-prefix", StripPrefixMiddleware),
    ):
        factories[kind] = cls.from_config  # type: ignore[assignment]  # each takes its own block type; dispatch is by the block's tag
    if clock is not None:
        factories["jwt"] = partial(JwtMiddleware.from_config, clock=clock)
    return factories


def compile_chains(
    config: Config,
    previous: Config | None = None,
    previous_instances: Mapping[str, Middleware] | None = None,
    *,
    clock: Callable[[], float] | None = None,
) -> tuple[dict[str, Middleware], dict[str, tuple[Middleware, ...]]]:
    """Instances by definition name and chains by router name; ``clock`` gives wall-clock Unix
    seconds (without it, ``jwt`` cannot be built).

    Raises ``StartError`` naming every router that lists a type not implemented yet, and for a
    definition that cannot be built (a ``jwt`` key file that cannot be read, say).
    """
    referenced = {name for router in config.routers.values() for name in router.middlewares}
    factories = _factories(clock)
    instances: dict[str, Middleware] = {}
    missing: list[str] = []
    for name in sorted(referenced):
        block = config.middlewares[name]
        kind = block_type(block)
        factory = factories.get(kind)
        if factory is None:
            missing.append(f'"{name}" ({kind})')
            continue
        old = previous.middlewares.get(name) if previous is not None else None
        kept = previous_instances.get(name) if previous_instances is not None else None
        if kept is not None and old is not None and old == block:
            instances[name] = kept  # unchanged definition: same instance, same state
        else:
            instances[name] = factory(name, block)
    if missing:
        raise StartError(
            "middleware type not implemented yet, used by a router: "
            + ", ".join(missing)
            + " (the remaining types arrive with issue #7)"
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
