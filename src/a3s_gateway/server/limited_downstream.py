"""Counting a request body as it streams, for ``body-limit`` (SPEC §8.11).

Ring 1. ``LimitedDownstream`` wraps the client side of one exchange: each body chunk read by
the request pump (or taken whole when it arrived with the head) is counted, and the chunk that
crosses the limit raises ``BodyTooLarge`` instead of being forwarded. The pump's failure ends
the upstream attempt (its connection is never pooled), and the exchange's dispatch answers
413 if no response head went out yet, else aborts the exchange.

Must not: buffer the body or answer anything itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, ProtocolViolation
from a3s_gateway.server.tap import RequestBodyTap

if TYPE_CHECKING:
    from a3s_gateway.server.downstream import Downstream

__all__ = ["BodyTooLarge", "LimitedDownstream"]


class BodyTooLarge(ProtocolViolation):
    """The request body crossed a ``body-limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "request body too large")
        self.limit = limit


class LimitedDownstream(RequestBodyTap):
    """A ``Downstream`` whose request body may not exceed ``limit`` bytes."""

    __slots__ = ("_limit", "_seen")

    def __init__(self, down: Downstream, limit: int) -> None:
        super().__init__(down)
        self._limit = limit
        self._seen = 0

    def _see(self, event: BodyChunk | EndOfBody) -> None:
        if isinstance(event, BodyChunk):
            self._seen += len(event.data)
            if self._seen > self._limit:
                raise BodyTooLarge(self._limit)
