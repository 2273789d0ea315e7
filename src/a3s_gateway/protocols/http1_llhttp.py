"""``LlhttpClient``: the client side of one upstream HTTP/1.1 connection, heads parsed by llhttp.

Ring 0: synchronous and deterministic; no trio, sockets, TLS, clocks or logging. A drop-in for
``Http1Client`` (same constructor, methods, properties and events; ``upstream/pooled_connection.py``
drives either). Must not: do IO, read the time, or raise anything but ``ProtocolViolation``
(502 for the upstream's faults, 500 for a caller bug).

Theory of operation. Requests are written by ``RequestWriter`` (``http1_request_writer.py``),
which follows h11's client rules. Responses: bytes collect in our own buffer until a head is
complete (the head limit is enforced on it, as h11 does, → 502); the head goes to a fresh
``httptools.HttpResponseParser`` (``http1_response_heads``), out in h11's normal form; the
body is framed here by RFC 9112 §6.3 exactly as h11 frames it — none after HEAD, 1xx, 204, 304
or a 2xx to CONNECT (a tunnel: nothing more is read), else chunked, else ``Content-Length``,
else until EOF — and decoded by ``http1_request``'s ``LengthDecoder`` and strict
``ChunkedDecoder``, as on the server side. llhttp never sees a body: httptools 0.9 cannot tell it
that a response answers HEAD, nor pass EOF on (no ``llhttp_finish``), and our decoders pass
payload through without a copy. A ``101`` after a request that asked for a protocol switch
(``http1_upgrade``) is ``Http1Client``'s: returned as a ``ResponseHead``, the end of HTTP on the
connection (``switched``; llhttp stops there with ``HttpParserUpgrade``), the bytes after its head
kept for ``take_leftover``; a ``101`` to any other request is ``unexpected 101`` (502).

Compared with ``Http1Client`` (``tests/property/test_http1_differential.py``): the same events
and reuse decisions for every response both accept, and 502 for every response h11 refuses. Where
h11 is laxer this adapter refuses (disagreements are decided in favour of rejecting): control
characters in a header value (``ResponseWriter`` would refuse to relay them anyway), a
``Content-Length`` of 2⁶⁴ or more, and chunked framing outside RFC 9112 §7.1 — whitespace after
the chunk size, extensions that are not ``token[=token/quoted-string]``, sizes over 16 hex
digits, bare LF, obs-fold or control characters in trailers. Refusal reasons are
``Http1Client``'s.
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import Final, assert_never

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
from a3s_gateway.protocols.http1_request import ChunkedDecoder, LengthDecoder
from a3s_gateway.protocols.http1_request_writer import RequestWriter, WriterState
from a3s_gateway.protocols.http1_response_heads import (
    ParsedResponse,
    h11_fields,
    parse_response_head,
)
from a3s_gateway.protocols.http1_upgrade import SWITCHING, asks_for_upgrade

__all__ = ["LlhttpClient"]

_HEAD_END: Final = re.compile(rb"\n\r?\n")
_STATUS_101: Final = re.compile(rb"(?:\A|\n)HTTP/[0-9]\.[0-9] 101(?![0-9])")
_NO_BODY: Final = frozenset({204, 304})


class _Phase(Enum):
    HEAD = auto()  # waiting for the final response head (1xx heads pass through)
    BODY = auto()
    DONE = auto()  # EndOfBody returned
    TUNNEL = auto()  # a 2xx to CONNECT: h11 reads nothing more
    SWITCHED = auto()  # a 101 to an upgrade request: ``_buf`` holds the new protocol's bytes


class _Close:
    """A close-delimited body: everything until EOF."""

    __slots__ = ()
    done = False

    def decode(self, data: bytes, pos: int, out: list[Event]) -> int:
        if pos < len(data):
            out.append(BodyChunk(data[pos:] if pos else data))
        return len(data)


_Decoder = LengthDecoder | ChunkedDecoder | _Close


class LlhttpClient:
    """The client side of one upstream HTTP/1.1 connection (see the module docstring)."""

    __slots__ = (
        "_body",
        "_buf",
        "_head_len",
        "_keep_alive",
        "_max_head_bytes",
        "_max_headers",
        "_phase",
        "_received",
        "_scan",
        "_unusable",
        "_upgrade",
        "_writer",
    )

    def __init__(self, *, max_head_bytes: int = 65536, max_headers: int = 200) -> None:
        self._max_head_bytes = max_head_bytes
        self._max_headers = max_headers
        self._writer = RequestWriter()
        self._phase = _Phase.HEAD
        self._buf = bytearray()  # bytes not used yet: a partial head, chunk line or trailers
        self._scan = 0  # where the search for the end of a partial head resumes in ``_buf``
        self._body: _Decoder | None = None
        self._head_len = 0  # bytes received awaiting the final head (Http1Client's measure)
        self._keep_alive = True
        self._received = False
        self._unusable = False
        self._upgrade = False  # the request asked for a protocol switch

    # --- sending (Http1Client.send's contract) ---------------------------------------------

    def send(self, event: RequestHead | BodyChunk | EndOfBody) -> bytes:
        """Return the bytes to write for ``event`` (always HTTP/1.1, origin-form target).

        See ``Http1Client.send``; ``Content-Length`` is written canonically. Raises
        ``ProtocolViolation(500)`` for a request that cannot be written (a caller bug).
        """
        writer = self._writer
        try:
            match event:
                case BodyChunk(data=data):
                    return writer.data(data)
                case RequestHead():
                    if self._phase is not _Phase.HEAD and not writer.sent:
                        # An unsolicited response came first (h11 fails with AttributeError).
                        writer.failed()
                        raise ProtocolViolation(500, "request could not be serialised")
                    wire = writer.head(event)
                    self._upgrade = asks_for_upgrade(
                        event.method, b"1.1", event.headers, event.has_body
                    )
                    return wire
                case EndOfBody(trailers=trailers):
                    return writer.end(trailers)
                case _:
                    assert_never(event)
        except ProtocolViolation:
            if writer.state is WriterState.ERROR:
                self._unusable = True
            raise

    def send_failed(self) -> None:
        """The write of bytes from ``send`` failed: the connection must not be reused."""
        self._unusable = True
        self._writer.failed()

    # --- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes) -> list[Event]:
        """Feed received bytes (``b""`` = EOF); return the response's new events.

        After the response is complete, EOF gives ``ConnectionClosed`` and stray bytes are
        swallowed (both make the connection unusable). Raises ``ProtocolViolation(502)``, or
        ``ProtocolViolation(500)`` once a ``101`` switched protocols (a caller bug).
        """
        phase = self._phase
        if phase is _Phase.DONE:
            self._unusable = True
            return [] if data else [ConnectionClosed()]
        if phase is _Phase.SWITCHED:
            raise ProtocolViolation(500, "connection switched protocols")
        self._received = self._received or bool(data)
        if phase is _Phase.TUNNEL:
            return []
        events: list[Event] = []
        try:
            if phase is _Phase.HEAD:
                self._head_len += len(data)
                self._receive_heads(data, events)
            else:
                self._receive_body(data, events)
        except ProtocolViolation:
            self._unusable = True
            raise
        return events

    def _receive_heads(self, data: bytes, events: list[Event]) -> None:
        eof = not data
        buf = self._buf
        if buf:  # a partial head: resume the search for its end where it stopped
            buf += data
            if _HEAD_END.search(buf, self._scan) is None:
                self._partial_head(eof)
                return
            data = bytes(buf)
            buf.clear()
        pos = 0
        while self._phase is _Phase.HEAD:
            if pos == len(data):
                if eof:
                    self._eof_before_head(data, events)
                return
            if data[pos] < 0x21:  # h11 refuses at once: no status line starts so
                raise self._head_violation(data, eof=False)
            found = _HEAD_END.search(data, pos)
            if found is None:
                buf += memoryview(data)[pos:]
                self._scan = 0
                self._partial_head(eof)
                return
            self._head(data, pos, found.end(), events)
            pos = found.end()
        if self._phase is _Phase.SWITCHED:  # the rest is the new protocol's, for the hand-over
            buf += memoryview(data)[pos:]
            return
        self._decode(data, pos, eof, events)

    def _partial_head(self, eof: bool) -> None:
        """An incomplete head is held: bounded (h11's 431 → 502), and EOF truncates it."""
        buf = self._buf
        if len(buf) > self._max_head_bytes:
            raise ProtocolViolation(502, "response head too large")
        if eof:
            raise self._head_violation(bytes(buf), eof=True)
        self._scan = max(0, len(buf) - 2)  # a terminator is at most 3 bytes long

    def _eof_before_head(self, data: bytes, events: list[Event]) -> None:
        if not self._writer.sent:  # nothing asked, nothing owed: h11's ConnectionClosed
            self._unusable = True
            events.append(ConnectionClosed())
            return
        raise self._head_violation(data, eof=True)

    def _head(self, data: bytes, start: int, end: int, events: list[Event]) -> None:
        """Parse the head ``data[start:end]`` and emit its event; set up the body after it."""
        parsed = parse_response_head(data[start:end])
        if parsed is None or (parsed.status == SWITCHING and not self._upgrade):
            raise self._head_violation(data[start:], eof=False)
        if parsed.status == SWITCHING:  # the end of HTTP on this connection
            events.append(self._checked_head(parsed))
            self._phase = _Phase.SWITCHED
            self._unusable = True
            return
        if parsed.status < 200:
            if not self._writer.sent:  # h11 takes an unsolicited final response only
                raise self._head_violation(data[start:], eof=False)
            if self._head_len > self._max_head_bytes:  # Http1Client's bound across many 1xx
                self._head_len = 0
            events.append(Informational(parsed.status, parsed.headers, parsed.reason))
            return
        events.append(self._final_head(parsed))

    def _checked_head(self, parsed: ParsedResponse) -> ResponseHead:
        """The event of a final (or switching) head within the limits, as Http1Client's."""
        headers = parsed.headers
        if len(headers) > self._max_headers:
            raise ProtocolViolation(502, "too many response header fields")
        if self._head_len > self._max_head_bytes:  # Http1Client's measure of the head
            size = 15 + len(parsed.reason) + sum(len(n) + len(v) + 4 for n, v in headers)
            if size > self._max_head_bytes:
                raise ProtocolViolation(502, "response head too large")
        self._head_len = 0
        return ResponseHead(parsed.status, headers, parsed.reason, parsed.version)

    def _final_head(self, parsed: ParsedResponse) -> ResponseHead:
        head = self._checked_head(parsed)
        status = parsed.status
        self._keep_alive = parsed.keep_alive
        writer = self._writer
        writer.response_started(status)
        method = writer.method
        if method == b"CONNECT" and 200 <= status < 300:
            self._phase = _Phase.TUNNEL
        elif status in _NO_BODY or method == b"HEAD":
            self._body = LengthDecoder(0)
        elif parsed.chunked:
            self._body = ChunkedDecoder(
                max_trailer_bytes=self._max_head_bytes, max_fields=self._max_head_bytes
            )
        elif parsed.length is not None:
            self._body = LengthDecoder(parsed.length)
        else:
            self._body = _Close()
        if self._body is not None:
            self._phase = _Phase.BODY
        return head

    def _head_violation(self, rest: bytes, *, eof: bool) -> ProtocolViolation:
        """Http1Client's reason for a refused head (all 502); ``rest`` starts at the head.

        Http1Client looks for a 101 status line in all bytes received while awaiting the final
        head; the 1xx heads before ``rest`` passed, so none of them was one.
        """
        if not self._received:
            return ProtocolViolation(502, "connection closed before response")
        if not self._upgrade and _STATUS_101.search(rest) is not None:
            return ProtocolViolation(502, "unexpected 101")  # after an upgrade request: invalid
        return ProtocolViolation(502, "incomplete response head" if eof else "invalid head")

    def _receive_body(self, data: bytes, events: list[Event]) -> None:
        eof = not data
        buf = self._buf
        if buf:  # a partial chunk line, CRLF or trailer section from the previous read
            buf += data
            data = bytes(buf)
            buf.clear()
        self._decode(data, 0, eof, events)

    def _decode(self, data: bytes, pos: int, eof: bool, events: list[Event]) -> None:
        body = self._body
        if body is None:  # a tunnel
            return
        try:
            end = body.decode(data, pos, events)
        except ProtocolViolation as violation:
            if violation.status == 431:
                raise ProtocolViolation(502, "response head too large") from None
            raise ProtocolViolation(502, "invalid body") from None
        if body.done:
            if isinstance(body, ChunkedDecoder):
                self._normalise_trailers(events)
            self._finish(leftover=end < len(data) or eof)
        elif eof:
            if not isinstance(body, _Close):
                raise ProtocolViolation(502, "incomplete response body")
            events.append(EndOfBody())
            self._finish(leftover=True)
        elif end < len(data):  # a partial unit, bounded by the decoder
            self._buf += memoryview(data)[end:]
            if len(self._buf) > self._max_head_bytes:  # h11's limit on an incomplete line
                raise ProtocolViolation(502, "response head too large")

    @staticmethod
    def _normalise_trailers(events: list[Event]) -> None:
        """h11's field rules apply to trailers too (one chunked TE, one Content-Length)."""
        end = events[-1]
        assert isinstance(end, EndOfBody)
        if end.trailers:
            read = h11_fields(end.trailers)
            if read is None:
                raise ProtocolViolation(502, "invalid body")
            events[-1] = EndOfBody(read[0])

    def _finish(self, *, leftover: bool) -> None:
        """The response is complete; bytes or EOF right behind it make the connection unfit."""
        self._phase = _Phase.DONE
        self._body = None
        if leftover:
            self._unusable = True

    # --- reuse -----------------------------------------------------------------------------

    @property
    def switched(self) -> bool:
        """A ``101`` answered an upgrade request: the connection speaks another protocol."""
        return self._phase is _Phase.SWITCHED

    def take_leftover(self) -> bytes:
        """After a ``101``: the bytes received after its head, once (then ``b""``). Raises
        ``ProtocolViolation(500)`` if no switch happened."""
        if self._phase is not _Phase.SWITCHED:
            raise ProtocolViolation(500, "no protocol switch happened")
        leftover = bytes(self._buf)
        self._buf.clear()
        return leftover

    @property
    def received_any(self) -> bool:
        """Whether any byte of this cycle's response arrived (a stale connection sends none)."""
        return self._received

    @property
    def reusable(self) -> bool:
        """Request sent and response read completely, keep-alive on both sides, no error."""
        return (
            not self._unusable
            and self._phase is _Phase.DONE
            and self._keep_alive
            and self._writer.state is WriterState.DONE
        )

    def start_next_cycle(self) -> None:
        """Prepare for the next request; raises ``ProtocolViolation(500)`` if not ``reusable``."""
        if not self.reusable:
            raise ProtocolViolation(500, "connection is not reusable")
        self._writer.next_cycle()
        self._phase = _Phase.HEAD
        self._buf.clear()
        self._scan = 0
        self._body = None
        self._head_len = 0
        self._keep_alive = True
        self._received = False
        self._upgrade = False
