"""What a middleware may call outside the gateway: the seams for forward-auth, JWKS and Redis,
and the shell's file reading and logging.

Ring 0: protocols, value types and exceptions only. The implementations are Ring 1
(``upstream/caller.py`` for HTTP, ``upstream/redis.py`` for Redis, ``server/outbound_clients.py``
for reading a key file and writing a warning to the log) and are handed to the middleware
factories by the composition root through ``MiddlewareDeps``; tests hand in fakes.

Every call is bounded by the timeout the caller passes and raises only the exceptions named
here (``OutboundTimeout``, ``OutboundFailed`` and its subclasses), so a middleware maps
failures to statuses without knowing about sockets.

Must not: import trio, sockets or ssl, or hold connections (the implementations do).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.config.urls import HttpUrl, RedisUrl
    from a3s_gateway.protocols.headers import Headers

__all__ = [
    "FileReader",
    "HttpCaller",
    "HttpReply",
    "MiddlewareDeps",
    "OutboundFailed",
    "OutboundTimeout",
    "RedisClient",
    "RedisConnector",
    "RedisReplyError",
    "ReplyTooLarge",
    "WarningSink",
]


class OutboundTimeout(Exception):  # noqa: N818 -- an event, like TimeoutError
    """The call did not finish within its timeout."""


class OutboundFailed(Exception):  # noqa: N818 -- the peer's failure, not ours
    """The call failed: connect refused or unreachable, reset, or an invalid reply."""


class ReplyTooLarge(OutboundFailed):
    """The reply's body is larger than the caller's ``max_body``."""


class RedisReplyError(OutboundFailed):
    """Redis answered with an error reply (``-ERR ...``, ``-NOSCRIPT ...``); ``str`` is its
    text without the leading ``-``."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    """One HTTP response read whole: status, header lines (lower-case names), body."""

    status: int
    headers: Headers
    body: bytes


class HttpCaller(Protocol):
    """HTTP/1.1 requests to a service the gateway calls (auth server, JWKS endpoint).

    Connections are pooled per origin; redirects are never followed; no request body.
    """

    async def get(
        self, url: HttpUrl, headers: Headers, *, within: float, max_body: int
    ) -> HttpReply:
        """``GET url`` with ``headers`` (``Host`` is set from ``url``; a ``host`` line in
        ``headers`` is ignored). The whole exchange is bounded by ``within`` seconds.

        Raises ``OutboundTimeout``, ``ReplyTooLarge`` (body over ``max_body`` bytes) or
        ``OutboundFailed``.
        """
        ...


class RedisClient(Protocol):
    """Commands to one Redis server (a small connection pool behind it)."""

    async def execute(self, *args: bytes | str | int, within: float) -> object:
        """Send one command, its reply decoded (bytes, int, list, None).

        Raises ``OutboundTimeout``, ``RedisReplyError`` or ``OutboundFailed``. A connection
        whose call failed or timed out is never reused.
        """
        ...


class RedisConnector(Protocol):
    """The Redis clients of one gateway process, one per URL (shared by middlewares)."""

    def client(self, url: RedisUrl) -> RedisClient:
        """The client for ``url`` (created on first use; connects lazily)."""
        ...


class FileReader(Protocol):
    """Reads a file a definition names (``jwt``'s ``public_key_file``) when it is built."""

    def __call__(self, path: str, limit: int) -> bytes:
        """At most the first ``limit`` bytes of the file ``path``; ``OSError`` when it cannot be
        read (its ``strerror`` says why)."""
        ...


class WarningSink(Protocol):
    """Where a middleware hands a warning for the operator (the shell logs it)."""

    def __call__(self, topic: str, message: str) -> None:
        """Report ``message`` (already formatted, secrets left out) under ``topic``: the shell
        writes it to the ``a3s_gateway.<topic>`` logger at warning level. Never raises."""
        ...


@dataclass(frozen=True, slots=True)
class MiddlewareDeps:
    """What middleware factories may be given by the composition root.

    ``clock`` is the wall clock in Unix seconds (``jwt``'s ``exp``/``nbf``); ``http`` and
    ``redis`` are the outbound clients; ``read_file`` reads a key file a definition names;
    ``warn`` takes the warnings a middleware has for the operator (none given: they are
    dropped). A middleware whose dependency is missing cannot be built (``StartError`` naming
    it).
    """

    clock: Callable[[], float] | None = None
    http: HttpCaller | None = None
    redis: RedisConnector | None = None
    read_file: FileReader | None = None
    warn: WarningSink | None = None
