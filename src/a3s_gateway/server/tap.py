"""``RequestBodyTap``: a ``Downstream`` that lets a subclass see every request-body event the
exchange reads, and passes everything else through unchanged.

Ring 1. Used by the mirror (copies the body, ``server/exchange/mirror.py``) and ``body-limit``
(counts it, ``server/limited_downstream.py``). A subclass overrides ``_see``; it may raise to
stop the body.

Must not: buffer, change or reorder events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import BodyChunk, EndOfBody, Informational, ResponseHead
    from a3s_gateway.server.downstream import Downstream
    from a3s_gateway.upstream.seam import Handover

__all__ = ["RequestBodyTap"]


class RequestBodyTap:
    """Wraps ``down``; ``_see`` is called with each body event the exchange takes from it."""

    __slots__ = ("_down",)

    def __init__(self, down: Downstream) -> None:
        self._down = down

    def _see(self, event: BodyChunk | EndOfBody) -> None:
        """Called for each request-body event, in order, before the exchange gets it."""

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
        self._see(event)
        return event

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None:
        body = self._down.take_buffered_body()
        if body is not None:
            for event in body:
                self._see(event)
        return body

    def acknowledge(self, nbytes: int) -> None:
        self._down.acknowledge(nbytes)

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None:
        await self._down.send(event)

    async def send_batch(self, events: Sequence[ResponseHead | BodyChunk | EndOfBody]) -> None:
        await self._down.send_batch(events)

    def close_after_response(self) -> None:
        self._down.close_after_response()

    def abort(self) -> None:
        self._down.abort()

    def take_over(self) -> Handover:
        return self._down.take_over()
