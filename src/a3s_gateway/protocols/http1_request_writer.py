"""``RequestWriter``: the bytes of requests to an upstream, with h11's client rules, without h11.

Ring 0: synchronous and deterministic; no trio, sockets, TLS, clocks or logging. Used by
``LlhttpClient`` (``http1_llhttp.py``). Must not: parse anything the upstream sends, or raise
anything but ``ProtocolViolation(500)`` (a caller bug: the gateway validated the head).

It writes exactly what ``Http1Client`` writes (``tests/property/test_http1_differential.py``
compares them): the request line (always HTTP/1.1), ``host`` first, every field checked against
RFC 9110's grammar, ``Transfer-Encoding`` replaced by our own framing; the body passed through
under ``Content-Length`` or chunked, trailers only with chunked framing. One deliberate
difference: ``Content-Length`` is re-serialised canonically (``010`` → ``10``, ``5, 5`` → ``5``;
DESIGN.md §0), where ``Http1Client`` forwards the value as given. The state machine is h11's
client side, reduced to what a proxy does: ``IDLE`` → ``BODY`` → ``DONE`` (``SWITCH`` after a
``CONNECT``, until the response says whether the tunnel opened), ``ERROR`` after a refused event
or a failed write; refusals are h11's (a second head, body after the end, more or less body than
``Content-Length``, an invalid trailer).
"""

from __future__ import annotations

import re
from enum import Enum, auto
from typing import TYPE_CHECKING, Final, NoReturn

import h11

from a3s_gateway.protocols.events import ProtocolViolation
from a3s_gateway.protocols.http1_response import field_block

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.headers import HeaderLine, Headers

__all__ = ["RequestWriter", "WriterState"]

_TE_CHUNKED: Final = (b"transfer-encoding", b"chunked")
_TOKEN: Final = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_TARGET: Final = re.compile(rb"[\x21-\x7e\x80-\xff]+")
_DIGITS: Final = re.compile(rb"[0-9]{1,20}")  # h11's Content-Length rule


class WriterState(Enum):
    """Where the request on the connection is (h11's ``our_state``, for a client)."""

    IDLE = auto()
    BODY = auto()
    DONE = auto()
    SWITCH = auto()  # CONNECT sent: h11's MIGHT_SWITCH_PROTOCOL
    ERROR = auto()


def _refuse() -> NoReturn:
    raise ProtocolViolation(500, "request could not be serialised")


class RequestWriter:
    """One request at a time on one upstream connection (see the module docstring)."""

    __slots__ = ("_chunked", "_method", "_remaining", "sent", "state")

    def __init__(self) -> None:
        self.state = WriterState.IDLE
        self.sent = False  # this cycle's head went out: a response may now arrive
        self._method = b""
        self._chunked = False
        self._remaining = 0  # body bytes still owed under Content-Length

    @property
    def method(self) -> bytes:
        """The method of the request being (or last) sent; frames the response."""
        return self._method

    def head(self, head: RequestHead) -> bytes:
        """The request line and header block; a request without body is then complete.

        Raises ``ProtocolViolation(500)``: without a state change for a head that cannot be
        written (no or two ``host`` lines, an invalid field, method or target), and with the
        writer in ``ERROR`` for one in the wrong state or with an invalid ``Content-Length``.
        """
        host: HeaderLine | None = None
        length: HeaderLine | None = None
        rest: Headers = []
        for line in head.headers:
            name = line[0]
            if name == b"host":
                if host is not None:
                    _refuse()
                host = line
            elif name == b"transfer-encoding":
                continue
            else:
                if name == b"content-length":
                    length = line
                rest.append(line)
        chunked = head.has_body and length is None
        if chunked:
            rest.append(_TE_CHUNKED)
        if host is None:
            _refuse()
        block = field_block([host, *rest])
        if (
            block is None
            or _TOKEN.fullmatch(head.method) is None
            or _TARGET.fullmatch(head.target) is None
        ):
            _refuse()
        if self.state is not WriterState.IDLE:
            self._fail()
        remaining = 0
        if length is not None:  # one line, canonical, where the first one was
            remaining = self._length(length[1])
            canonical = (b"content-length", b"%d" % remaining)
            at = next(i for i, line in enumerate(rest) if line[0] == b"content-length")
            rest = [line for line in rest if line[0] != b"content-length"]
            rest.insert(at, canonical)
            block = b"".join(b"%b: %b\r\n" % line for line in [host, *rest])
        self._method, self._chunked, self._remaining = head.method, chunked, remaining
        self.state = WriterState.BODY
        self.sent = True
        wire = b"%b %b HTTP/1.1\r\n%b\r\n" % (head.method, head.target, block)
        if not head.has_body:
            self.end([])
        return wire

    def _length(self, value: bytes) -> int:
        """h11's reading of a ``Content-Length`` value (a list of one repeated number)."""
        values = {part.strip() for part in value.split(b",")}
        single = values.pop() if len(values) == 1 else b""
        if _DIGITS.fullmatch(single) is None:
            self._fail()
        return int(single)

    def data(self, data: bytes) -> bytes:
        """One piece of the body, framed (``b""`` for an empty piece, in any state)."""
        if not data:
            return b""
        if self.state is not WriterState.BODY:
            self._fail()
        if self._chunked:
            return b"%x\r\n%b\r\n" % (len(data), data)
        if len(data) > self._remaining:
            self._fail()
        self._remaining -= len(data)
        return data

    def end(self, trailers: Headers) -> bytes:
        """The end of the body (``b""`` unless a body is in progress); trailers if chunked."""
        if self.state is not WriterState.BODY:
            return b""
        wire = b""
        if self._chunked:
            wire = b"0\r\n" + self._trailer_block(trailers) + b"\r\n"
        elif self._remaining:
            self._fail()
        self.state = WriterState.SWITCH if self._method == b"CONNECT" else WriterState.DONE
        return wire

    def _trailer_block(self, trailers: Headers) -> bytes:
        """Trailers as h11 writes them: validated and normalised by h11, ``host`` first."""
        if not trailers:
            return b""
        try:
            fields = h11.EndOfMessage(headers=trailers).headers.raw_items()
        except h11.LocalProtocolError:
            self._fail()
        ordered = [line for line in fields if line[0].lower() == b"host"]
        ordered += [line for line in fields if line[0].lower() != b"host"]
        return b"".join(b"%b: %b\r\n" % line for line in ordered)

    def response_started(self, status: int) -> None:
        """A final response arrived: after a ``CONNECT``, a 2xx opened a tunnel, else not."""
        if self.state is WriterState.SWITCH and not 200 <= status < 300:
            self.state = WriterState.DONE

    def failed(self) -> None:
        """A write failed (or the connection is being abandoned): no further request."""
        self.state = WriterState.ERROR

    def _fail(self) -> NoReturn:
        self.state = WriterState.ERROR
        _refuse()

    def next_cycle(self) -> None:
        """Ready for the next request (the caller checked the previous one is ``DONE``)."""
        self.state = WriterState.IDLE
        self.sent = False
        self._method = b""
        self._chunked = False
        self._remaining = 0
