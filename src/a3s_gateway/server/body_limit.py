"""Counting a request body as it streams, for ``body-limit`` (SPEC §8.11).

Ring 1. ``LimitedDownstream`` wraps the client side of one exchange: each body chunk read by
the request pump (or taken whole when it arrived with the head) is counted, and the chunk that
crosses the limit raises ``BodyTooLarge`` instead of being forwarded. The pump's failure ends
the upstream attempt (its connection is never pooled), and ``exchange.handle_request`` answers
413 if no response head went out yet, else cuts the exchange short.

Must not: buffer the body or answer anything itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, ProtocolViolation

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import Informational, ResponseHead
    from a3s_gateway.server.exchange import Downstream

__all__ = ["BodyTooLarge", "LimitedDownstream"]


class BodyTooLarge(ProtocolViolation):
    """The request body crossed a ``body-limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "request body too large")
        self.limit = limit


class LimitedDownstream:
    """A ``Downstream`` whose request body may not exceed ``limit`` bytes."""

    __slots__ = ("_down", "_limit", "_seen")

    def __init__(self, down: Downstream, limit: int) -> None:
        self._down = down
        self._limit = limit
        self._seen = 0

    def _count(self, event: BodyChunk | EndOfBody) -> None:
        if isinstance(event, BodyChunk):
            self._seen += len(event.data)
            if self._seen > self._limit:
                raise BodyTooLarge(self._limit)

    @property
    def http_version(self) -> bytes:
        return self._down.http_version

    @property
    def request_complete(self) -> bool:
        return self._down.request_complete

    @property
    def response_started(self) -> bool:
        return self._down.response_started

    async def receive_body(self) -> BodyChunk | EndOfBody:
        event = await self._down.receive_body()
        self._count(event)
        return event

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None:
        body = self._down.take_buffered_body()
        if body is not None:
            for event in body:
                self._count(event)
        return body

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None:
        await self._down.send(event)

    async def send_batch(self, events: Sequence[ResponseHead | BodyChunk | EndOfBody]) -> None:
        await self._down.send_batch(events)

    def close_after_response(self) -> None:
        self._down.close_after_response()
