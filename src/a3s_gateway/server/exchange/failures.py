"""How an upstream attempt or a dispatch ends without a relayed response.

Ring 1 (only exceptions and values). The attempt (``attempt.py``, ``relay.py``) raises the
exceptions; the dispatch (``dispatch.py``) maps them to the access log's ``error`` word, passive
health, and a ``Failure`` that the retry policy judges or the dispatch answers (SPEC §5.5's rule
of thumb: refused/reset/garbage → 502, too slow → 504, nothing available → 503).

Must not: do IO.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from a3s_gateway.protocols.responses import error_response

if TYPE_CHECKING:
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = [
    "NO_BACKEND_FAILURE",
    "AbortResponse",
    "ConnectError",
    "Failure",
    "HeldResponse",
    "MiddlewareFailed",
    "UpstreamFailure",
    "failure_error",
]


class ConnectError(Exception):
    """No connection to the backend: refused, unreachable or a failed TLS handshake (502) or
    too slow (504).

    No request byte was sent, so another backend may be tried (SPEC §7.8).
    """

    def __init__(self, status: int, detail: str, reason: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        #: The dialer's ``ConnectFailed.reason`` (``refused``, ``tls``, ...); "" for a timeout.
        self.reason = reason


class UpstreamFailure(Exception):  # noqa: N818 -- the backend's failure, not ours
    """The backend failed before the response head: reset, garbage, or too slow.

    ``before_response`` is true when not one response byte arrived (a stale reused connection
    may then be retried, SPEC §5.7).
    """

    def __init__(
        self, status: int, detail: str, *, before_response: bool = True, text: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.before_response = before_response
        #: The client-facing error text when not the status's default (SPEC §5.6).
        self.text = text


class HeldResponse(Exception):  # noqa: N818 -- an event
    """The response head was held and discarded because the attempt will be retried (the
    ``hold`` callback said so); nothing was sent downstream. ``status`` is the upstream's."""

    def __init__(self, status: int) -> None:
        super().__init__(f"held response {status}")
        self.status = status


class AbortResponse(Exception):  # noqa: N818 -- an event
    """The response was started and cannot be completed: the exchange must be aborted."""


class MiddlewareFailed(Exception):  # noqa: N818 -- an event
    """A middleware's response side raised (logged where it happened): answered 500."""


class Failure:
    """A dispatch that relayed no response: the error to answer (None when an upstream
    response was held and discarded for a retry), its status, and its kind for the retry
    policy (``middleware.retry.failure_kind``)."""

    __slots__ = ("kind", "response", "status")

    def __init__(self, response: GeneratedResponse | None, status: int, kind: str) -> None:
        self.response = response
        self.status = status
        self.kind = kind


#: The answer when a service has no available backend at all (SPEC §7.9 step 5).
NO_BACKEND_FAILURE: Final = Failure(
    error_response(503, "no available backend"), 503, "connect-failure"
)


def failure_error(error: UpstreamFailure) -> str:
    """The ``error`` word for an upstream failure before any response byte was relayed."""
    if error.status == 504:
        return "upstream_timeout"
    if error.status == 503:
        return "at_capacity" if "limit" in error.detail else "shutting_down"
    return "bad_response" if error.detail.startswith("invalid") else "upstream_reset"
