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
* ``background()`` names the timed work the middleware needs done outside requests (``jwt``'s
  JWKS refresh), as ``Background`` objects. A middleware owns no task and never sleeps: the
  runner in ``server/generation.py`` (Ring 1) runs each one in its config generation's nursery
  and logs the warnings it returns.

One instance per middleware *definition*, shared by every router that lists it (SPEC §8.1
"Shared state"). Must not: do IO outside ``request`` and ``Background.run`` (and only through
the clients they own), read the time except through a ``now`` given to them, or keep
per-request state on the instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = ["Background", "Middleware", "RequestState"]


class Background(Protocol):
    """Timed work of a middleware, driven by a Ring 1 runner on trio's clock.

    The runner calls ``run(now)`` whenever ``next_run()`` is at or before ``now``, one call at a
    time, and otherwise waits until ``next_run()`` or until a callback it registered with
    ``watch`` is called, whichever comes first. A reload may briefly run two runners for one
    instance that both generations keep, so ``run`` must tolerate a concurrent call.
    """

    def next_run(self) -> float:
        """When ``run`` is due next (trio's clock, seconds; ``-inf`` at once, ``inf`` never)."""
        ...

    async def run(self, now: float) -> str | None:
        """Do the work due at ``now``, bounded in time by its own timeouts, and move
        ``next_run`` past ``now``. Returns a warning for the log, or None. Raises nothing for
        a peer's failure."""
        ...

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` whenever ``next_run`` moves earlier; returns the function that stops
        it (called when the runner ends)."""
        ...


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
        "peer_trusted",
        "query",
        "received",
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
        peer_trusted: bool = False,
        received: bytes | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.authority = authority
        self.client_ip = client_ip
        self.peer_ip = peer_ip
        self.tls = tls
        #: The peer may supply forwarding fields (``forwarded_headers``, SPEC §5.4): its
        #: ``X-Forwarded-For`` chain is kept when the gateway forwards on its behalf.
        self.peer_trusted = peer_trusted
        #: The path and query as the client sent them (before sanitising and any middleware's
        #: rewrite): what ``X-Forwarded-Uri`` reports.
        self.received = (
            received if received is not None else path + (b"?" + query if query else b"")
        )
        #: The request's arrival on trio's clock (seconds): the time rate limits and token
        #: checks use, so that they run on ``autojump_clock`` in tests.
        self.now = now
        #: The routed service's name (per-service state such as a circuit breaker's).
        self.service = service
        #: The most request-body bytes any middleware allows (``body-limit``); None: no limit.
        self.body_limit: int | None = None
        self.forwarded_prefix: bytes | None = None

    def copy(self) -> RequestState:
        """A copy whose changes do not reach this one (the header list is copied; the values
        are immutable): a retry attempt's fresh request (SPEC §8.1 "Wrappers")."""
        twin = RequestState.__new__(RequestState)
        for slot in RequestState.__slots__:
            setattr(twin, slot, getattr(self, slot))
        twin.headers = list(self.headers)
        return twin

    def values(self, name: bytes) -> list[bytes]:
        """The values of every field line called ``name`` (lower case), in order."""
        return [value for field, value in self.headers if field == name]


class Middleware:
    """Base class: both sides do nothing. ``name`` is the definition's name in the config."""

    __slots__ = ("kind", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        #: The config ``type`` (set by ``compile_chains``; metrics label ``type``).
        self.kind = type(self).__name__

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """The request side; a response short-circuits the chain (SPEC §8.1)."""
        del state
        return None

    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        """The response side: change ``headers`` of the response going to the client."""
        del state, status, headers

    def background(self) -> tuple[Background, ...]:
        """The timed work this instance needs run while a config generation that lists it is
        live (none by default); see ``Background``."""
        return ()

    def completed(self, state: RequestState, status: int) -> None:
        """The completion phase (SPEC §8.1 phase 6): called once per request that entered this
        middleware, when its exchange has ended, in reverse chain order. ``status`` is the
        status sent to the client, or 0 when no response completed (the client went away, the
        response was cut short)."""
        del state, status

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
