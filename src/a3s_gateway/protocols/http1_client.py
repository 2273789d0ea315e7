"""``Http1Client``: the client side of one upstream HTTP/1.1 connection, over h11 (SPEC §5.7).

Ring 0: synchronous and deterministic; no trio, sockets, TLS, clocks or logging. Re-exported by
``http1.py``; ``upstream/pooled_connection.py`` drives it. Must not: do IO, read the time, or raise
anything but ``ProtocolViolation`` (502 for the upstream's faults, 500 for a caller bug).

Theory of operation: one ``h11.Connection(CLIENT)`` for the life of the upstream connection,
cycled with ``h11.start_next_cycle``. h11 parses the response (obs-fold replaced by a space,
framing from the request method, so HEAD/204/304 responses have no body) and writes the body;
we write the request head ourselves (always HTTP/1.1, ``host`` first, every field checked
against RFC 9110's grammar), as DESIGN.md §0 allows for heads the gateway already validated.
On top of it this adapter enforces SPEC §5.7's response
limits (head size and field count → 502) and tracks what makes the connection unfit for the
pool: a failed write, a violation, bytes after the response, or EOF. While the final head is
awaited, the received bytes are mirrored (bounded by h11's head limit plus one read; reset after
a 1xx once over it) so that an error can be told apart — an unsolicited 101 makes h11 raise a
state error rather than return the event.

Protocol switches (``http1_upgrade``): h11 is told of a request that asks for one (its ``Upgrade``
field), so it takes a ``101`` and pauses right after its head. The ``101`` is returned as a
``ResponseHead`` and ends HTTP on the connection (``switched``): nothing more is parsed,
``receive`` refuses to go on (500), and ``take_leftover`` hands out, once, the bytes after the
head (h11's ``trailing_data``). A ``101`` to any other request stays ``unexpected 101`` (502).
"""

from __future__ import annotations

import re
from typing import Final, assert_never

import h11

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
from a3s_gateway.protocols.http1_response import field_block
from a3s_gateway.protocols.http1_upgrade import asks_for_upgrade

__all__ = ["Http1Client"]

_TE_CHUNKED: Final = (b"transfer-encoding", b"chunked")
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_TARGET: Final = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_STATUS_101: Final = re.compile(rb"(?:\A|\n)HTTP/[0-9]\.[0-9] 101(?![0-9])")
#: What h11 needs to see of an upgrade request to take a 101: some ``Upgrade`` value (the
#: request itself is written by us, with the client's fields).
_UPGRADE: Final = (b"upgrade", b"protocol")


#: h11 state events for bodiless requests of the common methods: h11 only reads the method and
#: the framing of the event it is told about, so one frozen event per method serves them all.
_BODILESS: Final = {
    method: h11.Request(method=method, target=b"/", headers=[(b"host", b"upstream")])
    for method in (b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"POST", b"PUT", b"PATCH")
}


def _state_event(
    method: bytes, host: tuple[bytes, bytes], framing: tuple[bytes, bytes] | None, upgrade: bool
) -> h11.Request:
    """The event that tells h11 about a request we serialised ourselves."""
    if upgrade:  # asks_for_upgrade: a GET without a body
        return h11.Request(method=method, target=b"/", headers=[host, _UPGRADE])
    if framing is None:
        cached = _BODILESS.get(method)
        if cached is not None:
            return cached
        return h11.Request(method=method, target=b"/", headers=[host])
    return h11.Request(method=method, target=b"/", headers=[host, framing])


class Http1Client:
    """The client side of one upstream HTTP/1.1 connection (see the module docstring)."""

    __slots__ = (
        "_chunked",
        "_done",
        "_h11",
        "_head_bytes",
        "_in_head",
        "_leftover_taken",
        "_max_head_bytes",
        "_max_headers",
        "_received",
        "_switched",
        "_unusable",
        "_upgrade",
    )

    def __init__(self, *, max_head_bytes: int = 65536, max_headers: int = 200) -> None:
        self._max_head_bytes = max_head_bytes
        self._max_headers = max_headers
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_bytes)
        self._chunked = False  # the request body being sent is chunked
        self._in_head = True  # waiting for the final response head
        self._head_bytes = bytearray()  # bytes received while waiting for it (error path only)
        self._received = False  # any byte of this cycle's response arrived
        self._done = False  # the response's EndOfBody was returned
        self._unusable = False  # failed write, violation, stray bytes or EOF
        self._upgrade = False  # the request asked for a protocol switch
        self._switched = False  # ... and a 101 came: the connection is not HTTP's any more
        self._leftover_taken = False

    def send(self, event: RequestHead | BodyChunk | EndOfBody) -> bytes:
        """Return the bytes to write for ``event`` (always HTTP/1.1, origin-form target).

        A ``content-length`` header is kept; otherwise a request with ``has_body`` is chunked,
        and one without has no body and is complete once its head is sent (an ``EndOfBody``
        after it returns ``b""``). Trailers are dropped unless the body is chunked. Raises
        ``ProtocolViolation(500)`` when h11 refuses the event (e.g. no ``host``): a caller bug.
        """
        try:
            match event:
                case BodyChunk(data=data):
                    return self._h11.send(h11.Data(data=data)) if data else b""
                case RequestHead():
                    wire = self._send_head(event)
                    if not event.has_body:  # complete already: a later EndOfBody is a no-op
                        self._h11.send(h11.EndOfMessage())
                    return wire
                case EndOfBody(trailers=trailers):
                    if self._h11.our_state is not h11.SEND_BODY:
                        return b""
                    chunked = self._chunked
                    return self._h11.send(h11.EndOfMessage(headers=trailers if chunked else None))
                case _:
                    assert_never(event)
        except h11.LocalProtocolError as exc:
            self._unusable = True
            raise ProtocolViolation(500, "request could not be serialised") from exc

    def _send_head(self, head: RequestHead) -> bytes:
        """The request line and header block, written by us (``host`` first, as h11 does).

        h11 still learns of the request, so that it frames the response (HEAD) and writes
        the body, but from an event with only ``host`` and the framing field: building h11's
        event from every forwarded field would re-validate each of them per request.
        """
        host: tuple[bytes, bytes] | None = None
        framing: tuple[bytes, bytes] | None = None
        rest: list[tuple[bytes, bytes]] = []
        for line in head.headers:
            name = line[0]
            if name == b"host":
                if host is not None:
                    raise ProtocolViolation(500, "request could not be serialised")
                host = line
            elif name == b"transfer-encoding":
                continue
            else:
                if name == b"content-length":
                    framing = line
                rest.append(line)
        self._chunked = head.has_body and framing is None
        upgrade = asks_for_upgrade(head.method, b"1.1", head.headers, head.has_body)
        if self._chunked:
            framing = _TE_CHUNKED
            rest.append(_TE_CHUNKED)
        if host is None:
            raise ProtocolViolation(500, "request could not be serialised")
        block = field_block([host, *rest])
        if (
            block is None
            or _TOKEN.fullmatch(head.method) is None
            or _TARGET.fullmatch(head.target) is None
        ):
            raise ProtocolViolation(500, "request could not be serialised")
        self._h11.send(_state_event(head.method, host, framing, upgrade))
        self._upgrade = upgrade
        return b"%b %b HTTP/1.1\r\n%b\r\n" % (head.method, head.target, block)

    def receive(self, data: bytes) -> list[Event]:
        """Feed received bytes (``b""`` = EOF); return the response's new events.

        After the response is complete, EOF gives ``ConnectionClosed`` and stray bytes are
        swallowed (both make the connection unusable). Raises ``ProtocolViolation(502)``, or
        ``ProtocolViolation(500)`` once a ``101`` switched protocols (a caller bug).
        """
        if self._done:
            self._unusable = True
            return [] if data else [ConnectionClosed()]
        if self._switched:
            raise ProtocolViolation(500, "connection switched protocols")
        if self._in_head:
            self._head_bytes += data
        self._received = self._received or bool(data)
        conn = self._h11
        conn.receive_data(data)
        events: list[Event] = []
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or event is h11.PAUSED or self._translate(event, events):
                    break
        except h11.RemoteProtocolError as exc:
            self._unusable = True
            raise self._violation(exc, eof=not data) from exc
        except ProtocolViolation:
            self._unusable = True
            raise
        return events

    def _translate(self, event: object, events: list[Event]) -> bool:
        """Append our event for h11's ``event``; return True when no more should be read."""
        if isinstance(event, h11.Data):
            events.append(BodyChunk(event.data))
        elif isinstance(event, h11.Response):
            events.append(self._response_head(event))
        elif isinstance(event, h11.InformationalResponse):
            if event.status_code == 101:  # h11 takes it only after an upgrade request
                events.append(self._response_head(event))
                self._switched = self._unusable = True
                return True
            if len(self._head_bytes) > self._max_head_bytes:  # bounded across many 1xx
                self._head_bytes.clear()
            events.append(Informational(event.status_code, list(event.headers), event.reason))
        elif isinstance(event, h11.EndOfMessage):
            events.append(EndOfBody(list(event.headers)))
            self._done = True
            self._check_after_response()
            return True
        else:  # h11.ConnectionClosed: EOF with no request in progress
            events.append(ConnectionClosed())
            self._unusable = True
            return True
        return False

    def _response_head(self, event: h11.Response | h11.InformationalResponse) -> ResponseHead:
        headers = list(event.headers)
        if len(headers) > self._max_headers:
            raise ProtocolViolation(502, "too many response header fields")
        # h11 checks its limit only while a head is incomplete, so a large head that arrives
        # in one read passes; measure it when the bytes of this read could exceed the limit.
        if len(self._head_bytes) > self._max_head_bytes:
            size = 15 + len(event.reason) + sum(len(n) + len(v) + 4 for n, v in headers)
            if size > self._max_head_bytes:
                raise ProtocolViolation(502, "response head too large")
        self._in_head = False
        self._head_bytes = bytearray()
        return ResponseHead(event.status_code, headers, event.reason, event.http_version)

    def _violation(self, error: h11.RemoteProtocolError, *, eof: bool) -> ProtocolViolation:
        if error.error_status_hint == 431:  # h11 hints 431 only for its buffer limit
            return ProtocolViolation(502, "response head too large")
        if not self._in_head:
            return ProtocolViolation(502, "incomplete response body" if eof else "invalid body")
        if not self._received:
            return ProtocolViolation(502, "connection closed before response")
        if not self._upgrade and _STATUS_101.search(self._head_bytes) is not None:
            return ProtocolViolation(502, "unexpected 101")  # after an upgrade request: invalid
        return ProtocolViolation(502, "incomplete response head" if eof else "invalid head")

    def _check_after_response(self) -> None:
        """Bytes or EOF right behind the response make the connection unfit for reuse."""
        try:
            after = self._h11.next_event()
        except h11.RemoteProtocolError:
            after = h11.PAUSED
        if after is not h11.NEED_DATA:
            self._unusable = True

    def send_failed(self) -> None:
        """The write of bytes from ``send`` failed: the connection must not be reused."""
        self._unusable = True
        self._h11.send_failed()

    @property
    def switched(self) -> bool:
        """A ``101`` answered an upgrade request: the connection speaks another protocol."""
        return self._switched

    def take_leftover(self) -> bytes:
        """After a ``101``: the bytes received after its head, once (then ``b""``). Raises
        ``ProtocolViolation(500)`` if no switch happened."""
        if not self._switched:
            raise ProtocolViolation(500, "no protocol switch happened")
        if self._leftover_taken:
            return b""
        self._leftover_taken = True
        return self._h11.trailing_data[0]

    @property
    def received_any(self) -> bool:
        """Whether any byte of this cycle's response arrived (a stale connection sends none)."""
        return self._received

    @property
    def reusable(self) -> bool:
        """Request sent and response read completely, keep-alive on both sides, no error."""
        conn = self._h11
        return not self._unusable and conn.our_state is h11.DONE and conn.their_state is h11.DONE

    def start_next_cycle(self) -> None:
        """Prepare for the next request; raises ``ProtocolViolation(500)`` if not ``reusable``."""
        if not self.reusable:
            raise ProtocolViolation(500, "connection is not reusable")
        self._h11.start_next_cycle()
        self._chunked = self._done = self._received = self._upgrade = False
        self._in_head = True
        self._head_bytes = bytearray()
