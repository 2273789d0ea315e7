"""Stage 4, relay: the response half of one attempt, from the ``Upstream`` seam to the
``Downstream`` seam.

Ring 1. Nurseries: none. Deadlines: it moves the attempt's one cancel scope (``timer``, owned
by ``attempt.py``): the response-header deadline until the head arrives, then now +
``body_idle`` (a stream: ``stream_idle``) before every upstream read (SPEC §5.5; DESIGN.md §3.4
"reuse one scope"); of its own only the bound on writing a timed-out stream's end
(``timed_out``, one ``body_idle``).
Backpressure (SPEC §5.2): one read at a time, and whatever one read produced (head, body, end)
goes to the client in one write before the next read.

On the head: hop-by-hop fields go, ``Date`` is added when missing, then the attempt's extra
fields (a sticky cookie), the middlewares' response sides, ``Connection: close`` while
draining; the retry policy may hold the head (discarded with its body, bounded); a body filter
(``compress``) may transform the body, the head then waiting until the filter is ready.

Must not: send the request, choose backends, or answer errors (``dispatch.py`` does).
"""

from __future__ import annotations

import math
from collections import deque
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.events import (
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    Event,
    Informational,
    ProtocolViolation,
    ResponseHead,
)
from a3s_gateway.protocols.headers import strip_response_hop_by_hop
from a3s_gateway.protocols.http1_upgrade import SWITCHING
from a3s_gateway.server.downstream import aborted
from a3s_gateway.server.exchange.failures import AbortResponse, HeldResponse, UpstreamFailure
from a3s_gateway.server.exchange.upgrades import switch
from a3s_gateway.upstream.seam import UpstreamGone

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.middleware.compress import BodyFilter
    from a3s_gateway.protocols.headers import HeaderLine, Headers
    from a3s_gateway.runtime.compile import ServiceRuntime
    from a3s_gateway.server.downstream import Downstream
    from a3s_gateway.server.exchange.context import Exchange
    from a3s_gateway.upstream.seam import Upstream

__all__ = ["ResponseRelay"]

#: SPEC §5.12: a response with this content type is a stream, whatever the request asked for.
_EVENT_STREAM: Final = b"text/event-stream"
#: The trailers that end a gRPC call whose stream was idle too long (SPEC §5.5).
_IDLE_TRAILERS: Final = [(b"grpc-status", b"4"), (b"grpc-message", b"stream idle timeout")]
#: A discarded (retried) response's body is drained up to this many bytes for reuse (§8.12).
_DISCARD_LIMIT: Final = 65536


class ResponseRelay:
    """The response of one attempt. ``timer`` is the attempt's scope (set before any read);
    ``in_body`` tells which deadline it holds; ``complete`` turns true once the response was
    read to its end (relayed, or discarded for a retry)."""

    __slots__ = (
        "_down",
        "_ex",
        "_extra",
        "_pending",
        "_service",
        "_up",
        "complete",
        "idle",
        "in_body",
        "reading",
        "sse",
        "status",
        "stream",
        "timer",
    )

    #: The attempt's one cancel scope, made by ``attempt.py`` before the first upstream read
    #: (with the response-header deadline when it can be set at once).
    timer: trio.CancelScope

    def __init__(
        self,
        ex: Exchange,
        up: Upstream,
        down: Downstream,
        service: ServiceRuntime,
        extra: Sequence[HeaderLine],
    ) -> None:
        self._ex = ex
        self._up = up
        self._down = down
        self._service = service
        self._extra = extra
        self._pending: deque[Event] = deque()
        self.in_body = False
        self.complete = False
        #: The response is a stream (SPEC §5.12; a gRPC call is one), an SSE one in particular.
        self.stream = self.sse = False
        #: The status of the response relayed (0 until its head arrived).
        self.status = 0
        #: An upstream read is in progress (else a write to the client, or nothing).
        self.reading = False
        #: The bound on each body read: ``body_idle_timeout``, for a stream
        #: ``stream_idle_timeout`` (``inf`` when 0).
        self.idle = service.body_idle_timeout
        if ex.grpc:
            self._open_stream(sse=False)

    async def response_head(self) -> ResponseHead:
        """The final response head; informational responses go to the client on the way."""
        while True:
            event = await self._next_event(before_response=True)
            if isinstance(event, ResponseHead):
                return event
            if isinstance(event, Informational):
                await self._down.send(event)
            elif isinstance(event, ConnectionClosed):
                raise UpstreamFailure(502, "connection closed before a response")
            else:
                raise UpstreamFailure(502, "unexpected event before the response head")

    async def relay(self, response: ResponseHead, *, request_sent: bool) -> None:
        """Send the head and the body. Raises ``HeldResponse`` when the retry policy holds the
        head (nothing sent), ``AbortResponse`` when the body cannot be completed."""
        ex = self._ex
        ex.record.upstream_head = now = trio.current_time()
        timer = self.timer
        self.status = response.status
        if response.status == SWITCHING:  # only ever to a WebSocket handshake (the adapters)
            await switch(ex, self._up, self._down, response, self._extra, timer)
            return
        hold = ex.hold
        if hold is not None and hold(response.status):
            timer.deadline = math.inf  # the discard has its own bound
            await self._discard(request_sent)
            raise HeldResponse(response.status)
        self.in_body = True
        headers = self._final_headers(response)
        timer.deadline = now + self.idle
        body_filter = ex.body_filter
        if body_filter is not None and not self.stream:  # SPEC §5.12: streams not compressed
            found = body_filter(response.status, headers)
            if found is not None:
                await self._relay_filtered(response, headers, found)
                return
        # The plain relay, inline (one coroutine frame fewer on every read).
        batch: list[ResponseHead | BodyChunk | EndOfBody] = [
            ResponseHead(response.status, headers, response.reason)
        ]
        pending = self._pending
        down = self._down
        while True:
            while pending:
                event = pending.popleft()
                if isinstance(event, BodyChunk):
                    batch.append(event)
                elif isinstance(event, EndOfBody):
                    batch.append(event)
                    await down.send_batch(batch)
                    self.complete = True
                    return
                else:
                    raise AbortResponse("unexpected event in the response body")
            if batch:
                await down.send_batch(batch)
                batch = []
            try:
                await self._fill(before_response=False)
            except UpstreamFailure as error:
                raise AbortResponse(error.detail) from error

    def _final_headers(self, response: ResponseHead) -> Headers:
        """The response head's fields as the client gets them (see the module docstring); an
        event stream (SPEC §5.12) is noted on the way."""
        ex = self._ex
        headers = strip_response_hop_by_hop(response.headers)
        dated = False
        for name, value in headers:
            if name == b"date":
                dated = True
            elif name == b"content-type" and value[:17].lower() == _EVENT_STREAM:
                self._open_stream(sse=True)
        if not dated:
            headers.append((b"date", ex.ctx.dates.value()))
        if self._extra:
            headers.extend(self._extra)
        if ex.chain:
            ex.respond(response.status, headers)
        if ex.ctx.drain.draining:
            self._down.close_after_response()
        return headers

    def _open_stream(self, *, sse: bool) -> None:
        """The response is a stream (SPEC §5.12): every read goes out at once (it always
        does), under ``stream_idle_timeout`` instead of ``body_idle_timeout``, never
        compressed; an SSE stream also escapes the total timeout and is counted while open
        (once, however many ``Content-Type`` lines say so)."""
        if sse and self.sse:
            return
        self.stream = True
        idle = self._service.stream_idle_timeout
        self.idle = idle if idle > 0 else math.inf
        if sse:
            ex = self._ex
            self.sse = True
            scope = ex.total_scope
            if scope is not None:
                scope.deadline = math.inf
            ex.ctx.sse_opened(ex.record.router)

    def close_stream(self) -> None:
        """The SSE stream ended, however it did (called once, by the attempt)."""
        ex = self._ex
        ex.ctx.sse_closed(ex.record.router)

    async def timed_out(self) -> None:
        """The attempt's timer ran out in the body. A plain response is cut short
        (``AbortResponse``); a stream whose upstream read waited ``stream_idle_timeout`` ends
        properly (SPEC §5.5: SSE ends; a gRPC call with ``grpc-status: 4``), within one
        ``body_idle_timeout``; a stream whose write to the client outlived that bound is
        aborted, the client's fault (``client_timeout``), not the backend's."""
        if not self.stream:
            raise AbortResponse("upstream body idle timeout")
        ex, down = self._ex, self._down
        if not self.reading:
            ex.record.error = "client_timeout"
            raise aborted(down)
        ex.record.error = "stream_idle"
        end = EndOfBody(trailers=_IDLE_TRAILERS) if ex.grpc else EndOfBody()
        try:
            with trio.move_on_after(self._service.body_idle_timeout) as bound:
                await down.send(end)
        except ProtocolViolation:  # a body with a Content-Length cannot end early
            raise aborted(down) from None
        if bound.cancelled_caught:
            raise aborted(down)

    async def _relay_filtered(
        self, response: ResponseHead, headers: Headers, body_filter: BodyFilter
    ) -> None:
        """The relay through a body filter: each chunk goes out as the filter makes it,
        and the head only once the filter says it is final (it may hold the first bytes)."""
        batch: list[ResponseHead | BodyChunk | EndOfBody] = []
        head_sent = False
        pending = self._pending
        while True:
            while pending:
                event = pending.popleft()
                if isinstance(event, BodyChunk):
                    data = body_filter.feed(event.data)
                elif isinstance(event, EndOfBody):
                    data = body_filter.finish()
                else:
                    raise AbortResponse("unexpected event in the response body")
                if not head_sent and body_filter.ready:
                    batch.append(ResponseHead(response.status, headers, response.reason))
                    head_sent = True
                if data:
                    batch.append(BodyChunk(data))
                if isinstance(event, EndOfBody):
                    batch.append(event)
                    await self._down.send_batch(batch)
                    self.complete = True
                    return
            if batch:
                await self._down.send_batch(batch)
                batch = []
            try:
                await self._fill(before_response=False)
            except UpstreamFailure as error:
                raise AbortResponse(error.detail) from error

    async def _discard(self, request_sent: bool) -> None:
        """Read and drop a held response's body, up to ``_DISCARD_LIMIT`` bytes within one
        body-idle timeout, so the connection can be reused; else it is closed (SPEC §8.12)."""
        if not request_sent:
            return  # the request was not fully sent: the connection cannot be reused
        seen = 0
        with trio.move_on_after(self._service.body_idle_timeout):
            while seen <= _DISCARD_LIMIT:
                try:
                    event = await self._next_event(before_response=False)
                except UpstreamFailure:
                    return
                if isinstance(event, EndOfBody):
                    self.complete = True
                    return
                if isinstance(event, BodyChunk):
                    seen += len(event.data)

    async def _next_event(self, *, before_response: bool) -> Event:
        if not self._pending:
            await self._fill(before_response=before_response)
        return self._pending.popleft()

    async def _fill(self, *, before_response: bool) -> None:
        """Read from the upstream until at least one event is pending; in the body, each read
        gets a fresh body-idle deadline."""
        pending = self._pending
        while not pending:
            if self.in_body:
                self.timer.deadline = trio.current_time() + self.idle
            self.reading = True  # the timer, if it fires now, found the upstream idle
            try:
                events = await self._up.receive()
            except UpstreamGone as error:
                raise UpstreamFailure(502, error.detail) from error
            except ProtocolViolation as violation:
                raise UpstreamFailure(
                    502, f"invalid response: {violation.reason}", before_response=before_response
                ) from violation
            self.reading = False
            pending.extend(events)
