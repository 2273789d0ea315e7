"""``Http1Downstream``: the ``Downstream`` seam over one HTTP/1.1 connection's exchange in progress.

Ring 1. Owns no nursery. Deadlines set here (SPEC §5.5): in the one scope of each request-body
read, the client body idle gap and the request-body deadline (``timeouts.request_body``,
request head → end of its body); both raise ``ClientTimeout``, which the exchange maps to 408 or
an abort. ``server/http1_driver.py`` (the HTTP/1.1 driver) owns the connection: it reads request
heads into ``pending``, calls ``start_exchange`` per request and ends the connection when this
object says ``closing``.

HTTP/1.1 serves one exchange at a time, so aborting the exchange ends the connection (a
response cut short cannot be delimited) and acknowledging request-body bytes is a no-op (TCP is
the flow control).

A protocol switch: once a ``101`` answering an upgrade request was written (the adapter writes
one only then), ``take_over`` hands the stream and every byte the client sent after its request
head to the new protocol's owner, once, and sets ``handed_over``. From then on the stream is not
this connection's: the driver must neither read, write nor close it (nor linger on it), and
``fill`` refuses to read it. A ``101`` does not end the connection by itself: until
``take_over``, the driver still owns (and closes) the stream.

Must not: route or proxy (``exchange/``), or parse bytes itself (``protocols/http1.py``).
"""

from __future__ import annotations

import math
import select
from collections import deque
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.events import (
    BodyChunk,
    EndOfBody,
    Event,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.server.downstream import (
    ClientGone,
    ClientTimeout,
    Handover,
    UpgradeUnavailable,
    with_response_fields,
)
from a3s_gateway.streams import PrefixedStream, socket_fd

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.http1 import Http1Server

__all__ = ["END_WITHOUT_TRAILERS", "GONE_POLL", "READ_SIZE", "Http1Downstream"]

#: How often ``wait_gone`` asks the kernel whether a waiting client hung up (seconds).
GONE_POLL: Final = 0.25
#: The ``poll`` events that mean the peer is gone: its FIN (Linux), a hang-up or an error.
_HUNG_UP: Final = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)

#: One read (DESIGN.md §3.5).
READ_SIZE: Final = 65536
#: What the exchange gets at the end of every request body: request trailers are never passed
#: on (as NGINX does). RFC 9110 §6.5.1 forbids framing, routing, authentication and control
#: fields in trailers, and a trailer would bypass every header-side rule (hop-by-hop removal,
#: ``X-Forwarded-*``, the identity fields a jwt or forward-auth middleware sets).
END_WITHOUT_TRAILERS: Final = EndOfBody()


class Http1Downstream:
    """The downstream side of the exchange in progress: events in, events out.

    ``receive_body`` applies the client body-idle timeout and the request-body deadline;
    ``send`` poisons the adapter when a write fails. ``request_complete`` turns true once the
    request's ``EndOfBody`` was read.
    ``status``, ``received_bytes`` and ``sent_bytes`` describe the exchange in progress for
    the access log and metrics: the status of the response head sent, and the body bytes read
    and written (all reset per request). ``handed_over`` turns true with ``take_over``.
    """

    #: HTTP/1.1 carries no gRPC (SPEC §5.10): never a ``grpc-status``.
    grpc_status = -1
    #: A client that leaves closes the connection (``ClientGone``); it cancels nothing alone.
    client_cancelled = False

    __slots__ = (
        "_adapter",
        "_body_deadline",
        "_body_idle",
        "_request_body",
        "_stream",
        "closing",
        "handed_over",
        "head_sent",
        "http_version",
        "pending",
        "received",
        "received_bytes",
        "request_complete",
        "response_fields",
        "response_started",
        "sent_bytes",
        "status",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        adapter: Http1Server,
        body_idle: float,
        request_body: float = math.inf,
    ) -> None:
        self._stream = stream
        self._adapter = adapter
        self._body_idle = body_idle
        #: ``timeouts.request_body``, and when the body of the exchange in progress must be
        #: complete (trio's clock; set by ``start_exchange`` for a request with a body).
        self._request_body = request_body
        self._body_deadline = math.inf
        self.pending: deque[Event] = deque()
        #: Bytes read before this object took the stream over (the protocol detection's),
        #: consumed by the first ``fill``.
        self.received = b""
        self.http_version = b"1.1"
        self.request_complete = False
        self.response_started = False
        #: The connection ends after the response in progress.
        self.closing = False
        #: ``take_over`` gave the stream to a new owner: the driver must leave it alone.
        self.handed_over = False
        self.status = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        #: When the response head was written (trio's clock; -1: not yet).
        self.head_sent = -1.0
        #: Fields every response head of the exchange carries (the request id, SPEC §9.5).
        self.response_fields: list[tuple[bytes, bytes]] = []

    def add_response_field(self, line: tuple[bytes, bytes]) -> None:
        """Add ``line`` to the response head of the exchange in progress, whoever makes it
        (the upstream, a middleware, the gateway)."""
        self.response_fields.append(line)

    def start_exchange(self, head: RequestHead) -> None:
        """Reset the per-request state for ``head``."""
        has_body = head.has_body
        self.request_complete = not has_body
        if has_body:
            self._body_deadline = trio.current_time() + self._request_body
        self.response_started = False
        self.http_version = head.http_version
        self.status = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        self.head_sent = -1.0
        if self.response_fields:
            self.response_fields = []

    def start_refusal(self) -> None:
        """Reset the per-request state for a request refused while it was read. Its rest may
        still be arriving, so it counts as incomplete: the close after the answer lingers."""
        self.request_complete = False
        self.response_started = False
        self.http_version = b"1.1"
        self.status = 0
        self.received_bytes = 0
        self.sent_bytes = 0
        self.head_sent = -1.0
        if self.response_fields:
            self.response_fields = []

    async def fill(self) -> None:
        """Read once from the client and queue the resulting events.

        Raises ``ClientGone`` on a reset, ``ProtocolViolation`` on bad bytes, and
        ``ProtocolViolation(500)`` without reading once a ``101`` was sent (a caller bug: the
        stream's bytes are the new protocol's).
        """
        if self._adapter.switched:
            raise ProtocolViolation(500, "connection switched protocols")
        if self.received:
            data: bytes | bytearray = self.received
            self.received = b""
        else:
            try:
                data = await self._stream.receive_some(READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
                raise ClientGone from error
        # Sockets give bytes; other trio streams may give a bytearray (typed as either).
        events = self._adapter.receive(data if isinstance(data, bytes) else bytes(data))
        if not events and not data:
            raise ClientGone
        self.pending.extend(events)

    async def receive_body(self) -> BodyChunk | EndOfBody:
        """The next piece of the request body, within the body-idle timeout and the
        request-body deadline.

        Raises ``ClientTimeout`` (``error`` says which ran out), ``ClientGone`` or
        ``ProtocolViolation``.
        """
        if not self.pending:
            idle_end = trio.current_time() + self._body_idle
            body_end = self._body_deadline
            with trio.CancelScope(deadline=min(idle_end, body_end)) as scope:
                while not self.pending:
                    await self.fill()
            if scope.cancelled_caught:
                raise ClientTimeout("body_timeout" if body_end <= idle_end else "client_timeout")
        event = self.pending.popleft()
        if isinstance(event, EndOfBody):
            self.request_complete = True
            return END_WITHOUT_TRAILERS
        if isinstance(event, BodyChunk):
            self.received_bytes += len(event.data)
            return event
        raise ProtocolViolation(400, "unexpected event in request body")

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None:
        """The rest of the request body if all of it has already been read (a small body sent
        with its head), consumed; else None and nothing changes."""
        pending = self.pending
        if self.request_complete or not pending or not isinstance(pending[-1], EndOfBody):
            return None
        body: list[BodyChunk | EndOfBody] = []
        size = 0
        for event in pending:
            if isinstance(event, BodyChunk):
                size += len(event.data)
            elif isinstance(event, EndOfBody):
                event = END_WITHOUT_TRAILERS
            else:
                return None
            body.append(event)
        self.received_bytes += size
        pending.clear()
        self.request_complete = True
        return body

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None:
        """Write one event to the client. Raises ``ClientGone`` if the write fails."""
        if isinstance(event, ResponseHead):
            self.response_started = True
            if self.response_fields:
                event = with_response_fields(event, self.response_fields)
        data = self._adapter.send(event)
        if not data:
            return
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            self._adapter.send_failed()
            raise ClientGone from error
        except BaseException:
            self._adapter.send_failed()
            raise
        if isinstance(event, ResponseHead):
            self.status = event.status
            self.head_sent = trio.current_time()
        elif isinstance(event, BodyChunk):
            self.sent_bytes += len(event.data)

    async def send_batch(self, events: Sequence[ResponseHead | BodyChunk | EndOfBody]) -> None:
        """Write several events of one response in a single write (what one upstream read
        produced, or a whole generated response). Raises ``ClientGone`` if the write fails."""
        adapter = self._adapter
        parts: list[bytes] = []
        status = 0
        sent = 0
        try:
            for event in events:
                if isinstance(event, BodyChunk):
                    sent += len(event.data)
                elif isinstance(event, ResponseHead):
                    self.response_started = True
                    status = event.status
                    if self.response_fields:
                        event = with_response_fields(event, self.response_fields)
                parts.append(adapter.send(event))
        except ProtocolViolation:
            adapter.send_failed()  # nothing of the batch is written: a 101 in it switched nothing
            raise
        data = b"".join(parts)
        if not data:
            return
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            adapter.send_failed()
            raise ClientGone from error
        except BaseException:
            adapter.send_failed()
            raise
        # Counted once written: the record shows what reached the client.
        if status:
            self.status = status
            self.head_sent = trio.current_time()
        self.sent_bytes += sent

    def close_after_response(self) -> None:
        """The response in progress ends the connection (``Connection: close``)."""
        self.closing = True
        self._adapter.close_after_response()

    def acknowledge(self, nbytes: int) -> None:
        """A no-op: HTTP/1.1 has no flow control of its own (TCP's window does it)."""

    def abort(self) -> None:
        """End the exchange unfinished: HTTP/1.1 cannot delimit a response cut short, so the
        connection ends once the exchange unwinds (the driver sees ``closing``)."""
        self.closing = True
        self._adapter.close_after_response()

    async def wait_gone(self) -> None:
        """Return once the client has closed or reset the connection while its request waits
        (the scale buffer, SPEC §11.5). The kernel is asked, every ``GONE_POLL`` seconds,
        whether the peer hung up (``POLLRDHUP``: its FIN; ``POLLHUP``/``POLLERR``: a reset),
        on the TCP socket under TLS too; nothing is read, so bytes already sent (a body, a
        pipelined request) stay where they are. A client that half-closes after its request
        counts as gone, as NGINX's 499 does. Without a socket (a test's memory stream), it
        waits for ever."""
        fd = _socket_under(self._stream)
        if fd < 0:
            await trio.sleep_forever()
        poller = select.poll()
        poller.register(fd, _HUNG_UP)
        while True:  # polling: trio's own wait cannot ask for POLLRDHUP
            if poller.poll(0):
                return
            await trio.sleep(GONE_POLL)

    def take_over(self) -> Handover:
        """After a ``101`` was written: the stream and the bytes the client sent after its
        request head, once; ``handed_over`` is then true (see the module docstring).

        Raises ``UpgradeUnavailable`` when no ``101`` was sent (or its write failed), or the
        stream was already taken over.
        """
        if self.handed_over:
            raise UpgradeUnavailable("the stream was already taken over")
        adapter = self._adapter
        if not adapter.switched:
            raise UpgradeUnavailable("no protocol switch happened")
        self.handed_over = True
        self.pending.clear()  # at most the upgrade request's EndOfBody
        return Handover(self._stream, adapter.take_leftover())


def _socket_under(stream: trio.abc.Stream) -> int:
    """The TCP socket's descriptor under ``stream`` (through TLS and a replayed prefix), or
    -1 when there is none."""
    while True:
        fd = socket_fd(stream)
        if fd >= 0:
            return fd
        if isinstance(stream, trio.SSLStream):
            stream = stream.transport_stream
        elif isinstance(stream, PrefixedStream):
            stream = stream.inner
        else:
            return -1
