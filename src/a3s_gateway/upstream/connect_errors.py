"""Errors of the upstream connection pool (SPEC §5.5 connect row, §5.7, §7.8).

Ring 0: plain exception classes; no trio, sockets or clocks. The exchange (``server/exchange/``)
maps them to responses: ``ConnectFailed`` → next backend, then 502 (or 504 for a connect timeout,
which is a cancel scope of the caller and never an exception from here); ``PoolClosed`` → 503
``shutting down``.

Must not: carry secrets or backend URLs into client-facing text (SPEC §5.6); ``reason`` is a short
fixed word for the access log.
"""

from __future__ import annotations

from typing import Final

from a3s_gateway.errors import GatewayError

#: The ``reason`` words ``ConnectFailed`` uses (the access log turns them into ``connect_*``).
CONNECT_REASONS: Final = frozenset(
    {"refused", "unreachable", "reset", "timeout", "resolve", "error", "tls not supported yet"}
)


class ConnectFailed(GatewayError):  # noqa: N818 -- name fixed by the pool contract (issue)
    """Opening a connection to a backend failed before any request byte was sent (SPEC §7.8).

    ``reason`` is one of ``CONNECT_REASONS``; the ``OSError`` is chained as ``__cause__``.
    Always safe to retry on another backend.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"connect failed: {reason}")
        self.reason = reason


class PoolClosed(GatewayError):  # noqa: N818 -- a state of the pool, like trio.ClosedResourceError
    """The pool was closed (shutdown) while acquiring, or before it."""

    def __init__(self) -> None:
        super().__init__("upstream pool closed")
