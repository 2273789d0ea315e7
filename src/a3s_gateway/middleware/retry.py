"""The ``retry`` middleware's policy (SPEC §8.12): when an attempt may be retried, the backoff
before it, and the retry budget.

Ring 0: decisions only. The attempts themselves are run by ``server/exchange/`` (which re-runs
the middlewares listed after ``retry`` and the dispatch, replays the request body from a bounded
buffer and holds each attempt's response head until this policy has decided); the wait before
a retry is slept there too, with the delay computed here from a random number it passes in.

An attempt's outcome is classified into one of the kinds below; ``retry_on`` lists the kinds
that may be retried:

* ``connect-failure``: no connection to any backend, so no request byte was sent;
* ``reset``: the connection failed, or the response was invalid, before the response head;
* ``timeout``: the response head did not arrive within ``response_header_timeout``;
* ``gateway-error``: a 502, 503 or 504, from the upstream or from the dispatch;
* ``5xx``: any 5xx; ``status-codes``: a status in ``retry_status_codes``.

State (shared by every router that lists the definition, SPEC §8.1): the number of requests
inside the middleware and of retries in progress, for the budget, and counters of retries and
skipped retries by reason. Must not: sleep, read clocks or choose backends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Self

from a3s_gateway.middleware.contract import Middleware

if TYPE_CHECKING:
    from collections.abc import Iterable

    from a3s_gateway.config.schema_middlewares import Retry
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = ["IDEMPOTENT", "RetryMiddleware", "failure_kind"]

#: RFC 9110 §9.2.2: the methods a request may be repeated with, the same effect intended.
IDEMPOTENT: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})
_GATEWAY_ERRORS: Final = frozenset({502, 503, 504})


def failure_kind(status: int, *, connect: bool, before_head: bool) -> str:
    """The transport kind of a failed attempt: ``connect-failure`` when nothing was sent,
    ``timeout`` for a response-header timeout (504), ``reset`` for any other failure before the
    response head; ``status`` otherwise (a response head arrived)."""
    if connect:
        return "connect-failure"
    if before_head:
        return "timeout" if status == 504 else "reset"
    return "status"


class RetryMiddleware(Middleware):
    """``retry``: the policy and the shared counters of one definition."""

    __slots__ = (
        "active_requests",
        "active_retries",
        "budget_min",
        "budget_percent",
        "interval",
        "kinds",
        "max_body_bytes",
        "max_interval",
        "max_retries",
        "non_idempotent",
        "retries",
        "skipped",
        "status_codes",
    )

    def __init__(
        self,
        name: str,
        *,
        max_retries: int = 3,
        interval_ms: int = 100,
        max_interval_ms: int = 1000,
        retry_on: Iterable[str] = ("connect-failure", "reset", "timeout", "gateway-error"),
        status_codes: Iterable[int] = (),
        non_idempotent: bool = False,
        max_body_bytes: int = 1048576,
        budget_percent: int = 20,
        budget_min: int = 3,
    ) -> None:
        super().__init__(name)
        if max_retries < 0 or interval_ms < 0 or max_interval_ms < 0 or max_body_bytes < 0:
            raise ValueError("retry settings must not be negative")
        if not 0 <= budget_percent <= 100 or budget_min < 0:
            raise ValueError("retry budget out of range")
        self.max_retries = max_retries
        self.interval = interval_ms / 1000
        self.max_interval = max_interval_ms / 1000
        self.kinds = frozenset(retry_on)
        self.status_codes = frozenset(status_codes)
        self.non_idempotent = non_idempotent
        self.max_body_bytes = max_body_bytes
        self.budget_percent = budget_percent
        self.budget_min = budget_min
        #: Requests inside this middleware now (the budget's base).
        self.active_requests = 0
        #: Retry attempts in progress now.
        self.active_retries = 0
        #: Retries started, by (service, reason) (``a3s_retries_total`` once metrics land).
        self.retries: dict[tuple[str, str], int] = {}
        #: Retries that were due but not made, by reason: ``budget``, ``body_too_large``.
        self.skipped: dict[str, int] = {}

    @classmethod
    def from_config(cls, name: str, block: Retry) -> Self:
        """Build from a validated ``retry`` block."""
        return cls(
            name,
            max_retries=block.max_retries,
            interval_ms=block.retry_interval_ms,
            max_interval_ms=block.retry_max_interval_ms,
            retry_on=block.retry_on,
            status_codes=block.retry_status_codes,
            non_idempotent=block.retry_non_idempotent,
            max_body_bytes=block.retry_max_body_bytes,
            budget_percent=block.retry_budget_percent,
            budget_min=block.retry_budget_min,
        )

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Count the request for the budget (released in ``completed``)."""
        del state
        self.active_requests += 1
        return None

    def completed(self, state: RequestState, status: int) -> None:
        del state, status
        self.active_requests -= 1

    # --- decisions ---

    def reason(self, kind: str, status: int) -> str | None:
        """The ``retry_on`` condition an attempt's outcome meets, or None: ``kind`` is
        ``failure_kind``'s answer and ``status`` the attempt's (or the failure's) status."""
        if kind != "status" and kind in self.kinds:
            return kind
        if "gateway-error" in self.kinds and status in _GATEWAY_ERRORS:
            return "gateway-error"
        if "5xx" in self.kinds and 500 <= status <= 599:
            return "5xx"
        if "status-codes" in self.kinds and status in self.status_codes:
            return "status-codes"
        return None

    def may_repeat(self, reason: str, *, method: bytes, stream: bool) -> bool:
        """SPEC §8.12 "Safety": after ``connect-failure`` any request may be retried (nothing
        was sent); otherwise only idempotent methods (or all with ``retry_non_idempotent``), and
        never gRPC or WebSocket requests (``stream``)."""
        if reason == "connect-failure":
            return True
        if stream:
            return False
        return self.non_idempotent or method in IDEMPOTENT

    def begin_retry(self, service: str, reason: str) -> bool:
        """Take a slot of the budget for one retry (``end_retry`` gives it back); False, and
        counted as skipped, when the budget is used up."""
        allowed = max(self.budget_min, self.budget_percent * self.active_requests / 100)
        if self.active_retries >= allowed:
            self.skip("budget")
            return False
        self.active_retries += 1
        key = (service, reason)
        self.retries[key] = self.retries.get(key, 0) + 1
        return True

    def end_retry(self) -> None:
        """A retry attempt has finished."""
        self.active_retries -= 1

    def skip(self, reason: str) -> None:
        """Count a retry that was due but not made."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def backoff(self, retry: int, uniform: float) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first), given ``uniform``
        drawn from [0, 1): ``min(max_interval, interval × 2^(retry−1)) × U`` with U in
        [0.5, 1]."""
        if self.interval <= 0:
            return 0.0
        exponent = min(retry - 1, 60)  # 2^60 × any interval is past every cap
        base = min(self.max_interval, self.interval * 2.0**exponent)
        return base * (0.5 + 0.5 * uniform)
