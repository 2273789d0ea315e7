"""The retry middleware's request-body replay (SPEC §8.12 "Body replay").

Ring 1 (a ``Downstream`` wrapper; no IO of its own). ``ReplayBuffer`` records the request-body
events as the first attempt reads them from the client, up to a byte bound; each attempt reads
through its own ``ReplayDownstream``, which serves the recorded events first and then goes on
reading from the client (recording what it reads). So the first attempt is never delayed, a
later attempt sends exactly the same body, and a body the first attempt had not finished
reading is completed from the client. Over the bound the recording is dropped (``replayable``
turns false): later attempts are then impossible, unless no body event had been read at all
(a connect failure sends nothing).

Acknowledgements (flow control) reach the client once per byte: every attempt sends the same
body from its start, so an attempt acknowledges only what goes beyond the furthest point an
earlier attempt acknowledged (``ReplayBuffer.acknowledged``).

Must not: read ahead of the attempt (backpressure is kept), or change events.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from a3s_gateway.protocols.events import BodyChunk, EndOfBody

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import Informational, ResponseHead
    from a3s_gateway.server.downstream import Downstream
    from a3s_gateway.upstream.seam import Handover

__all__ = ["ReplayBuffer", "ReplayDownstream"]


class ReplayBuffer:
    """The recorded request body of one request; ``limit`` bytes at most."""

    __slots__ = ("_down", "_dropped", "_limit", "_size", "acknowledged", "events")

    def __init__(self, down: Downstream, limit: int) -> None:
        self._down = down
        self._limit = limit
        self._size = 0
        self._dropped = False
        self.events: list[BodyChunk | EndOfBody] = []
        #: Body bytes acknowledged to the client so far, by whichever attempt got furthest.
        self.acknowledged = 0

    @property
    def replayable(self) -> bool:
        """Whether another attempt can send the body again: nothing was read from the
        client yet, or everything read so far is recorded."""
        return not self._dropped

    def attempt(self) -> ReplayDownstream:
        """The downstream view for the next attempt (reads from the start of the body)."""
        return ReplayDownstream(self._down, self)

    def record(self, event: BodyChunk | EndOfBody) -> None:
        """Keep ``event`` for later attempts, unless the bound was crossed."""
        if self._dropped:
            return
        if isinstance(event, BodyChunk):
            self._size += len(event.data)
            if self._size > self._limit:
                self._dropped = True
                self.events = []
                return
        self.events.append(event)

    @property
    def complete(self) -> bool:
        """The whole body is recorded."""
        events = self.events
        return bool(events) and isinstance(events[-1], EndOfBody)


class ReplayDownstream:
    """One attempt's downstream: the recorded body first, then the client's."""

    __slots__ = ("_acknowledged", "_buffer", "_cursor", "_down")

    def __init__(self, down: Downstream, buffer: ReplayBuffer) -> None:
        self._down = down
        self._buffer = buffer
        self._cursor = 0
        self._acknowledged = 0  # body bytes this attempt had accepted upstream

    @property
    def http_version(self) -> bytes:
        return self._down.http_version

    @property
    def request_complete(self) -> bool:
        return self._cursor >= len(self._buffer.events) and self._down.request_complete

    @property
    def response_started(self) -> bool:
        return self._down.response_started

    async def receive_body(self) -> BodyChunk | EndOfBody:
        buffer = self._buffer
        if self._cursor < len(buffer.events):
            event = buffer.events[self._cursor]
            self._cursor += 1
            return event
        event = await self._down.receive_body()
        buffer.record(event)
        self._cursor = len(buffer.events)
        return event

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None:
        buffer = self._buffer
        if self._cursor < len(buffer.events):
            if not buffer.complete:
                return None  # the pump serves the recorded part, then reads the rest
            recorded = buffer.events[self._cursor :]
            self._cursor = len(buffer.events)
            return recorded
        body = self._down.take_buffered_body()
        if body is not None:
            for event in body:
                buffer.record(event)
            self._cursor = len(buffer.events)
        return body

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None:
        await self._down.send(event)

    async def send_batch(self, events: Sequence[ResponseHead | BodyChunk | EndOfBody]) -> None:
        await self._down.send_batch(events)

    def acknowledge(self, nbytes: int) -> None:
        """Pass on only bytes no earlier attempt acknowledged (see the module docstring)."""
        self._acknowledged += nbytes
        buffer = self._buffer
        beyond = self._acknowledged - buffer.acknowledged
        if beyond > 0:
            buffer.acknowledged = self._acknowledged
            self._down.acknowledge(beyond)

    def close_after_response(self) -> None:
        self._down.close_after_response()

    def abort(self) -> None:
        self._down.abort()

    def take_over(self) -> Handover:
        return self._down.take_over()
