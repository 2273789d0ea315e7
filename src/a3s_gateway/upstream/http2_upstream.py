"""``Http2Upstream``: the ``Upstream`` seam over one stream of a pooled HTTP/2 connection
(SPEC §5.7, §5.8 "Client reset", §5.10).

Ring 1. Owns no nursery and sets no deadline: every call runs under the exchange's scopes.
``Http2Pool.open_stream`` (``upstream/http2_pool.py``) hands it out with a stream slot reserved
on a connection; ``send`` of the ``RequestHead`` opens the stream (ended at once when the head
has no body), body chunks go out as the peer's windows allow (waiting for a WINDOW_UPDATE when
they are shut), ``EndOfBody`` ends the stream, with HEADERS when it carries trailers. A ``send``
returns once the connection's writer put the bytes on the socket, so the exchange acknowledges
its client only then (DESIGN.md §3.13 rule 5). Writes never happen in the caller's task: a
cancelled exchange cannot cut a frame in half on a connection other streams share.

The connection's reader task delivers the response's events here; ``receive`` returns what
arrived (waiting when nothing did). Flow control is tied to the consumer: the body bytes one
``receive`` returned are acknowledged to HTTP/2 (re-opening the windows) at the next
``receive`` or at ``release``, that is once the exchange relayed them, so a slow client makes
the backend wait (DESIGN.md §3.5).

Failures: ``UpstreamGone`` when the connection dies, when the peer resets the stream, or when
the stream was not processed (``unprocessed``: REFUSED_STREAM, or above a GOAWAY's last stream
id, RFC 9113 §8.7: safe to send again whatever the method); ``ProtocolViolation(502)`` when the
response is malformed. Events that arrived before a failure are returned first.

``release`` never blocks: a stream not finished both ways is reset with ``CANCEL`` (queued; the
connection's writer sends it), the bytes not yet acknowledged are, and the slot is freed. With
HTTP/2 the connection outlives its streams, so ``clean`` changes nothing: completion decides.
``take_over`` always raises ``UpgradeUnavailable``: HTTP/2 streams do not switch protocols.

Must not: write to the socket, decide retries, or map errors to statuses.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    ProtocolViolation,
    RequestHead,
)
from a3s_gateway.protocols.http2_client import CANCEL, NO_ERROR, REFUSED_STREAM, error_name
from a3s_gateway.upstream.seam import UpgradeUnavailable, UpstreamGone

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import Event, Informational, ResponseHead
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.upstream.http2_pool import Http2Connection
    from a3s_gateway.upstream.seam import Handover

__all__ = ["Http2Upstream"]


class Http2Upstream:
    """One request/response exchange on one stream of ``conn`` (see the module docstring)."""

    __slots__ = (
        "_arrival",
        "_conn",
        "_failure",
        "_inbox",
        "_inbox_bytes",
        "_received_any",
        "_released",
        "_request_done",
        "_response_done",
        "_reused",
        "_unacked",
        "_unprocessed",
        "_window",
        "stream_id",
    )

    def __init__(self, conn: Http2Connection, *, reused: bool) -> None:
        self._conn = conn
        self._reused = reused
        #: 0 until the request head was sent.
        self.stream_id = 0
        self._inbox: deque[Event] = deque()
        self._inbox_bytes = 0  # body bytes in the inbox
        self._unacked = 0  # body bytes the last receive returned
        self._arrival = trio.Event()
        self._window = trio.Event()
        self._failure: UpstreamGone | ProtocolViolation | None = None
        self._unprocessed = False
        self._received_any = False
        self._request_done = False
        self._response_done = False
        self._released = False

    # --- the seam ---

    @property
    def reused(self) -> bool:
        return self._reused

    @property
    def received_any(self) -> bool:
        return self._received_any

    @property
    def unprocessed(self) -> bool:
        """The upstream did not process the request (REFUSED_STREAM, above a GOAWAY's last stream
        id, or a connection going away before the head was sent): it may be sent again."""
        return self._unprocessed

    async def send(self, event: RequestHead | BodyChunk | EndOfBody) -> None:
        await self.send_batch((event,))

    async def send_batch(self, events: Sequence[RequestHead | BodyChunk | EndOfBody]) -> None:
        for event in events:
            if isinstance(event, RequestHead):
                self._open(event)
            elif isinstance(event, BodyChunk):
                await self._send_body(event.data)
            else:
                self._end(event.trailers)
        await self._conn.flush()

    async def receive(self) -> list[Event]:
        self._acknowledge()
        inbox = self._inbox
        if inbox:
            await trio.lowlevel.checkpoint()
        while not inbox:
            failure = self._failure
            if isinstance(failure, ProtocolViolation):
                raise ProtocolViolation(failure.status, failure.reason)
            if failure is not None:
                raise UpstreamGone(failure.detail)
            if self._response_done:
                raise UpstreamGone("response already complete")
            self._arrival = trio.Event()
            await self._arrival.wait()
        events = list(inbox)
        inbox.clear()
        self._unacked, self._inbox_bytes = self._inbox_bytes, 0
        return events

    def take_over(self) -> Handover:
        raise UpgradeUnavailable("HTTP/2 streams do not switch protocols")

    def release(self, *, clean: bool) -> None:
        """See ``Upstream.release`` and the module docstring; ``clean`` is not needed."""
        del clean
        if self._released:
            return
        self._released = True
        stream_id = self.stream_id
        if stream_id:
            client = self._conn.client
            if not (self._request_done and self._response_done):
                client.reset(stream_id, CANCEL)
            client.acknowledge(stream_id, self._unacked + self._inbox_bytes)
        self._inbox.clear()
        self._unacked = self._inbox_bytes = 0
        self._conn.release(self)

    # --- sending ---

    def _open(self, head: RequestHead) -> None:
        if self.stream_id or self._released:
            raise RuntimeError("the request head was already sent")
        try:
            self.stream_id = self._conn.open(self, head, end_stream=not head.has_body)
        except UpstreamGone:
            self._unprocessed = True  # nothing was sent
            raise
        self._request_done = not head.has_body

    async def _send_body(self, data: bytes) -> None:
        view = memoryview(data)
        while view and not self._request_done:
            self._check_sendable()
            try:
                taken = self._conn.client.send_data(self.stream_id, view)
            except ProtocolViolation as violation:
                raise UpstreamGone(violation.reason) from violation
            if taken:
                view = view[taken:]
                self._conn.wake_writer()
            else:
                self._window = trio.Event()
                await self._window.wait()

    def _end(self, trailers: Headers) -> None:
        if self._request_done:
            return
        self._check_sendable()
        try:
            self._conn.client.send_trailers(self.stream_id, trailers)
        except ProtocolViolation as violation:
            raise UpstreamGone(violation.reason) from violation
        self._request_done = True
        self._conn.wake_writer()

    def _check_sendable(self) -> None:
        if not self.stream_id:
            raise RuntimeError("the request head was not sent")
        failure = self._failure
        if isinstance(failure, UpstreamGone):
            raise UpstreamGone(failure.detail)
        if failure is not None:
            raise UpstreamGone("the response was malformed")

    def _acknowledge(self) -> None:
        count = self._unacked
        if count:
            self._unacked = 0
            self._conn.client.acknowledge(self.stream_id, count)
            self._conn.wake_writer()

    # --- the connection's reader ---

    def deliver(self, event: ResponseHead | Informational | BodyChunk | EndOfBody) -> None:
        """A response event of this stream arrived."""
        if self._failure is not None or self._released:
            if isinstance(event, BodyChunk):
                self._conn.client.acknowledge(self.stream_id, len(event.data))
            return
        self._received_any = True
        if isinstance(event, BodyChunk):
            self._inbox_bytes += len(event.data)
        elif isinstance(event, EndOfBody):
            self._response_done = True
        self._inbox.append(event)
        self._arrival.set()

    def fail(self, error: UpstreamGone | ProtocolViolation, *, unprocessed: bool = False) -> None:
        """The stream failed (the first failure stays); wakes whoever waits on it."""
        if self._failure is None:
            self._failure = error
            self._unprocessed = unprocessed
        self._arrival.set()
        self._window.set()

    def reset_by_peer(self, error_code: int) -> None:
        """RST_STREAM from the peer. ``NO_ERROR`` after a complete response only stops the
        request body (RFC 9113 §8.1); anything else fails the stream."""
        if error_code == NO_ERROR and self._response_done:
            self._request_done = True
            self._window.set()
            return
        detail = f"stream reset by upstream ({error_name(error_code)})"
        self.fail(UpstreamGone(detail), unprocessed=error_code == REFUSED_STREAM)

    def window_opened(self) -> None:
        """Send credit grew (on this stream or the connection)."""
        self._window.set()
