"""The contract between the middleware pipeline and each middleware (SPEC §8.1).

Ring 0 for the types here: ``RequestState`` is what a middleware sees of one request and may
change, and ``Middleware`` is the base class with the two sides of the onion:

* ``request(state)`` runs in chain order before dispatch. It may change the request (method,
  raw path, query, the client's header lines, ``forwarded_prefix``) or answer it by returning a
  ``GeneratedResponse`` (a short-circuit: 401, 403, 429, a CORS 204...). It is ``async`` so that
  middlewares that talk to other services (forward-auth, Redis) share one shape; pure ones just
  do not await.
* ``response(state, status, headers)`` runs in reverse chain order on the response head that
  goes to the client (proxied, gateway-generated errors, and short-circuits of middlewares
  listed later), changing ``headers`` in place.
* ``completed(state, status)`` runs once the exchange has ended, for outcome accounting (a
  circuit breaker's verdict, a retry budget).

One instance per middleware *definition*, shared by every router that lists it (SPEC §8.1
"Shared state"). Must not: do IO outside ``request`` (and only through the clients they own),
read the time except through a ``now`` given to them, or keep per-request state on the
instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = ["Middleware", "RequestState"]


class RequestState:
    """One request as the middlewares see it; mutable, created per request by the exchange.

    ``headers`` are the client's field lines (lower-case names) before the forwarding rules of
    SPEC §5.4 are applied, so a middleware's changes are forwarded and hop-by-hop and
    forwarding fields are still handled by the gateway. ``path`` is the raw (escaped) path and
    ``query`` the raw query without ``?``. ``forwarded_prefix`` is sent as
    ``X-Forwarded-Prefix`` (strip-prefix) after the forwarding rules, so it survives them.
    ``now`` is trio's clock at the request's start (monotonic seconds, not wall time).
    """

    __slots__ = (
        "authority",
        "body_limit",
        "client_ip",
        "forwarded_prefix",
        "headers",
        "method",
        "now",
        "path",
        "peer_ip",
        "query",
        "service",
        "tls",
    )

    def __init__(
        self,
        *,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: Headers,
        authority: bytes,
        client_ip: str,
        peer_ip: str,
        tls: bool,
        now: float = 0.0,
        service: str = "",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.authority = authority
        self.client_ip = client_ip
        self.peer_ip = peer_ip
        self.tls = tls
        #: The request's arrival on trio's clock (seconds): the time rate limits and token
        #: checks use, so that they run on ``autojump_clock`` in tests.
        self.now = now
        #: The routed service's name (per-service state such as a circuit breaker's).
        self.service = service
        #: The most request-body bytes any middleware allows (``body-limit``); None: no limit.
        self.body_limit: int | None = None
        self.forwarded_prefix: bytes | None = None

    def values(self, name: bytes) -> list[bytes]:
        """The values of every field line called ``name`` (lower case), in order."""
        return [value for field, value in self.headers if field == name]


class Middleware:
    """Base class: both sides do nothing. ``name`` is the definition's name in the config."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """The request side; a response short-circuits the chain (SPEC §8.1)."""
        del state
        return None

    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        """The response side: change ``headers`` of the response going to the client."""
        del state, status, headers

    def completed(self, state: RequestState, status: int) -> None:
        """The completion phase (SPEC §8.1 phase 6): called once per request that entered this
        middleware, when its exchange has ended, in reverse chain order. ``status`` is the
        status sent to the client, or 0 when no response completed (the client went away, the
        response was cut short)."""
        del state, status

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
