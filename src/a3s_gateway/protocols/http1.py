"""HTTP/1.x sans-IO adapters: ``Http1Server`` (downstream) and ``Http1Client`` (upstream).

Ring 0: synchronous and deterministic; no trio, sockets, TLS, clocks or logging. The trio
drivers (``server/http1_driver.py``, ``upstream/pooled_connection.py``) feed received bytes to
``receive`` (``b""`` means EOF), write whatever ``send`` returns, call ``send_failed`` when that
write fails, and own every timeout. Must not: do IO, read the time, forward raw peer bytes,
decode header values, or raise anything but ``ProtocolViolation`` (whose reason is a fixed,
client-safe text, never peer bytes).

Theory of operation — server. One request/response cycle at a time (SPEC §5.2), in phases:

* ``HEAD``: bytes collect in our own buffer. Empty lines before the request line are skipped
  (RFC 9112 §2.2); the request line is measured (414) and the head's total size bounded (431)
  on the raw bytes before an engine sees them. The complete head goes to the connection's
  request-head engine (``http1_heads``: llhttp by default, h11 the reference; both give the
  same ``ParsedHead`` or both refuse, a differential property test holds them to it: obs-fold
  joined, bare LF accepted, Host and Content-Length rules); ``http1_request`` adds the SPEC
  §5.3 rules the engines leave out.
* ``BODY``: ``http1_request`` decodes Content-Length or (strict) chunked framing; no engine
  sees body bytes, so the bytes after the message stay in *our* buffer.
* ``DONE``: the request is complete; further bytes (pipelining) are only buffered, bounded by
  ``max_header_bytes + PIPELINE_SLACK``. ``start_next_cycle`` (after a complete keep-alive
  response) parses what is buffered.
* ``SWITCHED`` after a ``101`` answered a request that asked for a protocol switch
  (``http1_upgrade``). Nothing more is parsed or written: the bytes buffered after the request
  head are the new protocol's, handed out once by ``take_leftover`` (h11 pauses there and keeps
  them as ``trailing_data``; engines only see heads, so the bytes are ours with either engine).
  A ``101`` to any other request is ``ProtocolViolation(500)``; another answer declines it.
* ``CLOSED`` after a clean EOF between requests; ``ERROR`` after a ``ProtocolViolation``.
  ``refused_request`` then says what is known of a request refused once its head was complete
  (for the access log), worked out on that error path only.

Parsing only complete heads is what lets us own the between-requests buffer. Responses are
written by ``http1_response.ResponseWriter`` with h11's framing rules but without h11's event
objects, which re-validate every header per response (DESIGN.md §0); it checks the header block
against RFC 9110's grammar, so an upstream can never make us split a response.

``Http1Client`` lives in ``http1_client.py`` and is re-exported here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto
from typing import TYPE_CHECKING, Final, assert_never

from a3s_gateway.protocols.events import (
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    Event,
    Informational,
    ProtocolViolation,
    RequestHead,
    ResponseHead,
)
from a3s_gateway.protocols.http1_client import Http1Client
from a3s_gateway.protocols.http1_engines import request_head_parser
from a3s_gateway.protocols.http1_request import (
    CHUNKED,
    ChunkedDecoder,
    LengthDecoder,
    RefusedRequest,
    inspect_request,
    refused_head,
    refused_request,
)
from a3s_gateway.protocols.http1_response import ResponseWriter, client_keep_alive
from a3s_gateway.protocols.http1_upgrade import SWITCHING, asks_for_upgrade

if TYPE_CHECKING:
    from a3s_gateway.protocols.http1_heads import RequestHeadParser

__all__ = ["PIPELINE_SLACK", "Http1Client", "Http1Limits", "Http1Server", "RefusedRequest"]

#: Pipelined bytes the server buffers beyond ``max_header_bytes`` while a response is in
#: progress: one 64 KiB read (SPEC §5.2). More is a 400: the excess may hold several complete
#: requests, so "header fields too large" (431) would be a false statement about them.
PIPELINE_SLACK: Final = 65536

_HEAD_END: Final = re.compile(rb"\n\r?\n")
_LEADING_EMPTY: Final = re.compile(rb"(?:\r?\n)+")


@dataclass(frozen=True, slots=True)
class Http1Limits:
    """Downstream head limits (SPEC §3.7 ``limits``)."""

    max_request_line_bytes: int = 8192
    max_header_bytes: int = 32768
    max_headers: int = 100


class _Phase(Enum):
    HEAD = auto()
    BODY = auto()
    DONE = auto()
    SWITCHED = auto()  # a 101 was written: the bytes are another protocol's
    CLOSED = auto()
    ERROR = auto()


class Http1Server:
    """The server side of one downstream HTTP/1.x connection (see the module docstring)."""

    __slots__ = (
        "_body",
        "_buf",
        "_closing",
        "_eof",
        "_failed",
        "_heads",
        "_limits",
        "_line_seen",
        "_phase",
        "_refused",
        "_scan",
        "_writer",
    )

    def __init__(
        self, limits: Http1Limits = Http1Limits(), heads: RequestHeadParser | None = None
    ) -> None:
        self._limits = limits
        #: The engine that parses complete request heads (llhttp by default, h11 the reference).
        self._heads = heads if heads is not None else request_head_parser()
        self._phase = _Phase.HEAD
        self._buf = bytearray()
        self._scan = 0  # where the next line / head-end search resumes in ``_buf``
        self._line_seen = False  # the request line's LF is in ``_buf``
        self._body: LengthDecoder | ChunkedDecoder | None = None
        self._eof = False
        self._closing = False
        self._failed = False
        self._refused: RefusedRequest | None = None  # set with the ERROR phase
        self._writer = ResponseWriter(b"", b"", keep_alive=False)

    def receive(self, data: bytes) -> list[Event]:
        """Feed received bytes (``b""`` = EOF); return the current request's new events.

        Raises ``ProtocolViolation`` (400, 414, 431, 501, 505); the connection is then unusable
        except for sending one error response.
        """
        try:
            phase = self._phase
            if phase is _Phase.BODY:
                return self._receive_body(data)
            if phase is _Phase.HEAD:
                if not data:
                    self._eof = True
                    return self._apply_eof([])
                self._buf += data
                return self._parse_head()
            if phase is _Phase.DONE:
                if data:
                    self._buffer_next(data)
                else:
                    self._eof = True
                return []
            if phase is _Phase.CLOSED:
                return []
        except ProtocolViolation:
            self._phase = _Phase.ERROR
            raise
        if phase is _Phase.SWITCHED:  # a caller bug: the bytes belong to the new protocol
            raise ProtocolViolation(500, "connection switched protocols")
        raise ProtocolViolation(400, "connection already failed")

    @property
    def head_started(self) -> bool:
        """Whether some bytes of a not-yet-complete request head are being held."""
        return self._phase is _Phase.HEAD and bool(self._buf)

    @property
    def refused_request(self) -> RefusedRequest | None:
        """After a ``ProtocolViolation``: the request line (and ``Host`` once h11 parsed the
        head) of a request refused with a complete head, else None."""
        return self._refused if self._phase is _Phase.ERROR else None

    @property
    def upgrade_requested(self) -> bool:
        """The request in progress asks for a protocol switch (an HTTP/1.1 ``GET`` without a
        body, ``Connection: upgrade`` and an ``Upgrade`` field; ``http1_upgrade``)."""
        return self._writer.upgrade

    @property
    def switched(self) -> bool:
        """A ``101`` was written (and its write did not fail): the connection is not HTTP's."""
        return self._phase is _Phase.SWITCHED

    def take_leftover(self) -> bytes:
        """After a ``101``: the bytes received after the request head, once (then ``b""``).
        Raises ``ProtocolViolation(500)`` if no switch happened."""
        if self._phase is not _Phase.SWITCHED:
            raise ProtocolViolation(500, "no protocol switch happened")
        leftover = bytes(self._buf)
        self._buf.clear()
        return leftover

    @property
    def keep_alive(self) -> bool:
        """Whether, now that the response is complete, another request may be served."""
        return (
            self._phase is _Phase.DONE
            and not self._closing
            and not self._failed
            and self._writer.done
            and self._writer.keep_alive
        )

    def close_after_response(self) -> None:
        """End the connection after this response; a head not yet sent gets ``Connection: close``.

        If the head was already sent without it, the response still ends the connection (the
        client sees EOF after a complete message, which HTTP/1.1 allows).
        """
        self._closing = True

    def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> bytes:
        """Return the bytes to write for ``event``.

        ``Informational`` is dropped (``b""``) for HTTP/1.0 clients. A ``ResponseHead``'s
        ``content-length`` is kept; otherwise the body is chunked (HTTP/1.1) or close-delimited
        (HTTP/1.0). Chunks of a bodiless response (HEAD, 204, 304) and trailers without chunked
        framing are dropped. A body that ends short of its Content-Length is the caller's to
        handle: it closes the connection instead of sending ``EndOfBody`` (which would raise).
        A ``ResponseHead(101)`` to a request that asked for an upgrade switches the connection
        (``SWITCHED``). Raises ``ProtocolViolation(500)`` when the writer refuses the event (an
        invalid header, a 101 to any other request or anything after one, too much or too
        little body): a bug upstream of this adapter.
        """
        writer = self._writer
        try:
            match event:
                case BodyChunk(data=data):
                    return writer.data(data)
                case ResponseHead(status=status, headers=headers, reason=reason):
                    if status == SWITCHING:
                        return self._switch(headers, reason)
                    close = self._closing or self._phase is _Phase.ERROR
                    return writer.head(status, headers, reason, close=close)
                case EndOfBody(trailers=trailers):
                    return writer.end(trailers)
                case Informational(status=status, headers=headers, reason=reason):
                    return writer.informational(status, headers, reason)
                case _:
                    assert_never(event)
        except ProtocolViolation:
            self._failed = True
            raise

    def _switch(self, headers: list[tuple[bytes, bytes]], reason: bytes) -> bytes:
        if self._phase is not _Phase.DONE:  # an upgrade request is complete with its head
            raise ProtocolViolation(500, "101 without an upgrade request")
        wire = self._writer.head(SWITCHING, headers, reason, close=False)
        self._phase = _Phase.SWITCHED
        return wire

    def send_failed(self) -> None:
        """The write of bytes from ``send`` failed: the connection must not be reused (nor,
        after a ``101``, handed over)."""
        self._failed = True
        if self._phase is _Phase.SWITCHED:
            self._phase = _Phase.ERROR

    def start_next_cycle(self) -> list[Event]:
        """Begin the next request after a complete keep-alive response; return buffered events.

        Raises ``ProtocolViolation(500)`` if ``keep_alive`` is false (a caller bug), or any
        request violation found in the buffered (pipelined) bytes.
        """
        if not self.keep_alive:
            raise ProtocolViolation(500, "connection cannot serve another request")
        self._phase = _Phase.HEAD
        self._writer = ResponseWriter(b"", b"", keep_alive=False)
        try:
            return self._apply_eof(self._parse_head() if self._buf else [])
        except ProtocolViolation:
            self._phase = _Phase.ERROR
            raise

    # --- receiving -------------------------------------------------------------------------

    def _parse_head(self) -> list[Event]:
        buf = self._buf
        if buf.startswith((b"\r", b"\n")):  # RFC 9112 §2.2: ignore empty lines before a request
            empty = _LEADING_EMPTY.match(buf)
            if empty is not None:
                del buf[: empty.end()]
                self._scan = 0
        end = self._head_end()
        if end < 0:
            return []
        head = bytes(buf[:end])
        rest = bytes(buf[end:])
        buf.clear()
        self._scan = 0
        self._line_seen = False
        return self._start_request(head, rest)

    def _head_end(self) -> int:
        """The offset just past the complete head in ``_buf``, or -1; enforce 414 and 431."""
        buf = self._buf
        limits = self._limits
        if not self._line_seen:
            line_end = buf.find(b"\n", self._scan)
            if line_end < 0:
                if len(buf) > limits.max_request_line_bytes:
                    raise ProtocolViolation(414, "request-target too long")
                self._scan = len(buf)
                return -1
            length = line_end - 1 if line_end and buf[line_end - 1] == 0x0D else line_end
            if length > limits.max_request_line_bytes:
                raise ProtocolViolation(414, "request-target too long")
            self._line_seen = True
            self._scan = line_end
        found = _HEAD_END.search(buf, self._scan)
        if found is None:
            if len(buf) > limits.max_header_bytes:
                raise ProtocolViolation(431, "request header fields too large")
            self._scan = max(self._scan, len(buf) - 2)  # a terminator is at most 3 bytes long
            return -1
        if found.end() > limits.max_header_bytes:
            raise ProtocolViolation(431, "request header fields too large")
        return found.end()

    def _start_request(self, head: bytes, rest: bytes) -> list[Event]:
        try:
            request = self._heads.parse_request_head(head)
        except ProtocolViolation:
            self._refused = refused_head(head)
            raise
        headers = request.headers  # a fresh list: inspect_request may set the Host line
        try:
            authority, length = inspect_request(request, headers, self._limits.max_headers)
        except ProtocolViolation:
            self._refused = refused_request(request)
            raise
        method, version = request.method, request.http_version
        upgrade = asks_for_upgrade(method, version, headers, length != 0)
        keep_alive = client_keep_alive(version, headers)
        self._writer = ResponseWriter(method, version, keep_alive, upgrade=upgrade)
        events: list[Event] = [
            RequestHead(
                method=request.method,
                target=request.target,
                authority=authority,
                headers=headers,
                http_version=request.http_version,
                has_body=length != 0,
                expect_continue=length != 0 and request.expect_continue,
                upgrade=upgrade,
            )
        ]
        if not length:
            events.append(EndOfBody())
            self._phase = _Phase.DONE
            self._buffer_next(rest)
            return events
        limits = self._limits
        self._body = (
            ChunkedDecoder(max_trailer_bytes=limits.max_header_bytes, max_fields=limits.max_headers)
            if length == CHUNKED
            else LengthDecoder(length)
        )
        self._phase = _Phase.BODY
        try:
            self._decode(rest, events)
        except ProtocolViolation:  # a bad body that came with the head: the head is lost
            self._refused = refused_request(request)
            raise
        return events

    def _receive_body(self, data: bytes) -> list[Event]:
        if not data:
            raise ProtocolViolation(400, "incomplete request body")
        if self._buf:  # a partial chunk line or CRLF from the previous read
            self._buf += data
            data = bytes(self._buf)
            self._buf.clear()
        events: list[Event] = []
        self._decode(data, events)
        return events

    def _decode(self, data: bytes, events: list[Event]) -> None:
        body = self._body
        assert body is not None  # set whenever the phase is BODY
        pos = body.decode(data, 0, events)
        if body.done:
            self._body = None
            self._phase = _Phase.DONE
            self._buffer_next(data[pos:])
        elif pos < len(data):
            self._buf += memoryview(data)[pos:]

    def _buffer_next(self, data: bytes) -> None:
        """Hold bytes that arrive after the current request (pipelining), bounded."""
        self._buf += data
        if len(self._buf) > self._limits.max_header_bytes + PIPELINE_SLACK:
            raise ProtocolViolation(400, "too much pipelined data")

    def _apply_eof(self, events: list[Event]) -> list[Event]:
        """After parsing: an EOF already seen ends the connection or truncates a message."""
        if not self._eof or self._phase is _Phase.DONE:
            return events
        if self._phase is _Phase.BODY:
            raise ProtocolViolation(400, "incomplete request body")
        if self._buf:
            raise ProtocolViolation(400, "incomplete request head")
        self._phase = _Phase.CLOSED
        events.append(ConnectionClosed())
        return events
