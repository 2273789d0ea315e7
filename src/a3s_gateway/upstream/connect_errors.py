"""Errors of the upstream connection pool (SPEC §5.5 connect row, §5.7, §7.8).

Ring 0: plain exception classes; no trio, sockets or clocks. The exchange (``server/exchange/``)
maps them to responses: ``ConnectFailed`` → next backend, then 502 (or 504 for a connect timeout,
which is a cancel scope of the caller and never an exception from here); ``PoolClosed`` → 503
``shutting down``.

Must not: carry secrets or backend URLs into client-facing text (SPEC §5.6); ``reason`` is a short
fixed word for the access log, ``detail`` is for the application log only.
"""

from __future__ import annotations

from typing import Final

from a3s_gateway.errors import GatewayError

#: The ``reason`` words ``ConnectFailed`` uses (the access log turns them into ``connect_*``);
#: ``tls``: the TLS context could not be built or the handshake failed (``detail`` says why).
CONNECT_REASONS: Final = frozenset(
    {"refused", "unreachable", "reset", "timeout", "resolve", "error", "tls"}
)


class ConnectFailed(GatewayError):  # noqa: N818 -- name fixed by the pool contract (issue)
    """Opening a connection to a backend failed before any request byte was sent (SPEC §7.8).

    ``reason`` is one of ``CONNECT_REASONS``; the ``OSError`` (or ``ssl.SSLError``) is chained
    as ``__cause__``. ``detail`` is a longer explanation for logs, "" when the reason says it
    all; when given it is also the message (``TLS handshake failed: certificate verify failed:
    unable to get local issuer certificate``).
    Always safe to retry on another backend.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or f"connect failed: {reason}")
        self.reason = reason
        self.detail = detail


class PoolClosed(GatewayError):  # noqa: N818 -- a state of the pool, like trio.ClosedResourceError
    """The pool was closed (shutdown) while acquiring, or before it."""

    def __init__(self) -> None:
        super().__init__("upstream pool closed")
