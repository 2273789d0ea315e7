"""Serialising one HTTP/1.1 response without h11's writer (DESIGN.md §0, §3.5).

Ring 0. Parsing stays with h11; writing a head the gateway already holds as validated bytes
does not need h11's event objects, which re-validate every header on construction and cost
about a third of the server adapter's time per request. ``ResponseWriter`` writes exactly what
h11's server role would (status line with the given reason, headers in order, framing chosen
by the same rules) and keeps h11's refusals:

* framing (RFC 9112 §6): none for HEAD, 204 and 304 (body chunks dropped, headers as given);
  ``Content-Length`` when the head has one; else chunked for HTTP/1.1 clients and
  close-delimited for HTTP/1.0 ones (with ``Connection: close``);
* ``Connection: close`` when the client did not ask for keep-alive (``Connection: close`` or
  HTTP/1.0) or the caller ends the connection;
* a body longer or shorter than its ``Content-Length``, a second head, or a body before the
  head is ``ProtocolViolation(500)``: a bug upstream of the adapter, never sent;
* every header line and the reason phrase are checked against RFC 9110's grammar (one regular
  expression over the whole block), so no value can carry CR, LF or NUL into the response;
* a ``101`` only answers a request that asked for a protocol switch (``upgrade``, see
  ``http1_upgrade``) and must name the protocol in ``Upgrade``: its head is written with the
  fields as given but for the framing ones, with no framing and no ``Connection: close`` added,
  and it is the last thing written (``switched``); otherwise it is ``ProtocolViolation(500)``.

Must not: do IO, read the time, or decide whether the connection stays open beyond reporting
``keep_alive``.
"""

from __future__ import annotations

import re
from enum import Enum, auto
from http import HTTPStatus
from typing import Final

from a3s_gateway.protocols.events import ProtocolViolation
from a3s_gateway.protocols.http1_upgrade import SWITCHING, switch_fields

__all__ = ["ResponseWriter", "client_keep_alive", "field_block"]

# RFC 9110 §5.1 field-name (token) and §5.5 field-value (no leading or trailing whitespace).
_HEADER_BLOCK: Final = re.compile(
    rb"(?:[-!#$%&'*+.^_`|~0-9a-zA-Z]+: "
    rb"(?:[\x21-\x7e\x80-\xff](?:[\x20\t\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?\r\n)*"
)
_REASON: Final = re.compile(rb"[\x20\t\x21-\x7e\x80-\xff]*")
_DIGITS: Final = re.compile(rb"[0-9]{1,18}")
# Framing fields this writer owns: the caller's copies are dropped so none is ever doubled.
_OWN_FIELDS: Final = frozenset({b"connection", b"keep-alive", b"transfer-encoding"})
_NO_BODY_STATUS: Final = frozenset({204, 304})


class _Framing(Enum):
    NONE = auto()  # HEAD, 204, 304: chunks are dropped
    LENGTH = auto()
    CHUNKED = auto()
    CLOSE = auto()  # HTTP/1.0 client without Content-Length: the connection end delimits it


class _State(Enum):
    HEAD = auto()  # nothing but 1xx sent yet
    BODY = auto()
    DONE = auto()
    SWITCHED = auto()  # a 101 was written: nothing more is HTTP


def client_keep_alive(version: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the client allows another request on the connection (h11's rule: HTTP/1.1
    without a ``close`` token in ``Connection``; HTTP/1.0 keep-alive is not offered)."""
    if version != b"1.1":
        return False
    for name, value in headers:
        if name == b"connection" and any(
            token.strip().lower() == b"close" for token in value.split(b",")
        ):
            return False
    return True


def field_block(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """``name: value CRLF`` for every line, or None if any line breaks RFC 9110's grammar."""
    block = b"".join(b"%b: %b\r\n" % line for line in headers)
    return block if _HEADER_BLOCK.fullmatch(block) is not None else None


#: RFC 9110's reason phrases, written when a head has none (clients and people reading
#: ``curl -i`` expect ``401 Unauthorized``, not ``401``).
PHRASES: Final = {int(status): status.phrase.encode("ascii") for status in HTTPStatus}


def _fail(reason: str) -> ProtocolViolation:
    return ProtocolViolation(500, reason)


class ResponseWriter:
    """The bytes of one response to a request with ``method`` from an HTTP ``version`` client
    (``b""`` when the request could not be parsed: the most cautious framing is used);
    ``upgrade`` when the request asked for a protocol switch (a ``101`` may answer it)."""

    __slots__ = (
        "_framing",
        "_keep_alive",
        "_method",
        "_remaining",
        "_state",
        "_upgrade",
        "_version",
    )

    def __init__(
        self, method: bytes, version: bytes, keep_alive: bool, *, upgrade: bool = False
    ) -> None:
        self._method = method
        self._version = version
        self._keep_alive = keep_alive
        self._framing = _Framing.NONE
        self._remaining = 0
        self._state = _State.HEAD
        self._upgrade = upgrade

    @property
    def upgrade(self) -> bool:
        """The request asked for a protocol switch (``http1_upgrade.asks_for_upgrade``)."""
        return self._upgrade

    @property
    def done(self) -> bool:
        """The whole response was serialised."""
        return self._state is _State.DONE

    @property
    def switched(self) -> bool:
        """A ``101`` was serialised: the connection speaks another protocol after it."""
        return self._state is _State.SWITCHED

    @property
    def keep_alive(self) -> bool:
        """The response allows another request afterwards (not close-delimited, no close)."""
        return self._keep_alive and self._framing is not _Framing.CLOSE

    def informational(
        self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes
    ) -> bytes:
        """A 1xx response (``b""`` for HTTP/1.0 clients, which do not expect one)."""
        if self._state is not _State.HEAD or not 100 <= status < 200 or status == 101:
            raise _fail("informational response out of place")
        if self._version != b"1.1":
            return b""
        return self._head_bytes(status, reason, headers)

    def head(
        self, status: int, headers: list[tuple[bytes, bytes]], reason: bytes, *, close: bool
    ) -> bytes:
        """The status line and header block; ``close`` adds ``Connection: close`` (not to a
        ``101``, after which the connection is no longer HTTP's to close)."""
        if status == SWITCHING:
            return self._switch(headers, reason)
        if self._state is not _State.HEAD or not 200 <= status <= 999:
            raise _fail("response head out of place")
        lines = [line for line in headers if line[0] not in _OWN_FIELDS]
        length = -1
        for name, value in lines:
            if name == b"content-length":
                if _DIGITS.fullmatch(value) is None:
                    raise _fail("invalid content-length")
                length = int(value)
                break
        if status in _NO_BODY_STATUS or self._method == b"HEAD":
            self._framing = _Framing.NONE
            if length < 0 and status not in _NO_BODY_STATUS:
                # The framing a GET would carry (RFC 9110 §9.3.2), without sending a body.
                self._add_unknown_length_framing(lines)
        elif length >= 0:
            self._framing = _Framing.LENGTH
            self._remaining = length
        else:
            self._add_unknown_length_framing(lines)
            self._framing = _Framing.CHUNKED if self._version == b"1.1" else _Framing.CLOSE
        if close or not self.keep_alive:
            lines.append((b"connection", b"close"))
        self._state = _State.BODY
        return self._head_bytes(status, reason, lines)

    def _switch(self, headers: list[tuple[bytes, bytes]], reason: bytes) -> bytes:
        """A ``101``: the fields as given (no framing ones), nothing added, nothing after it."""
        if self._state is not _State.HEAD or not self._upgrade:
            raise _fail("101 without an upgrade request")
        lines = switch_fields(headers)
        if lines is None:
            raise _fail("101 without an upgrade field")
        head = self._head_bytes(SWITCHING, reason, lines)
        self._state = _State.SWITCHED
        self._keep_alive = False
        return head

    def _add_unknown_length_framing(self, lines: list[tuple[bytes, bytes]]) -> None:
        """Chunked for HTTP/1.1; for HTTP/1.0 the connection end delimits the body."""
        if self._version == b"1.1":
            lines.append((b"transfer-encoding", b"chunked"))
        elif self._method != b"HEAD":
            self._keep_alive = False

    def data(self, data: bytes) -> bytes:
        """One piece of the body, framed."""
        if self._state is not _State.BODY:
            raise _fail("body data out of place")
        framing = self._framing
        if not data or framing is _Framing.NONE:
            return b""
        if framing is _Framing.LENGTH:
            if len(data) > self._remaining:
                raise _fail("body longer than its content-length")
            self._remaining -= len(data)
            return data
        if framing is _Framing.CHUNKED:
            return b"%x\r\n%b\r\n" % (len(data), data)
        return data

    def end(self, trailers: list[tuple[bytes, bytes]]) -> bytes:
        """The end of the body; trailers only travel with chunked framing."""
        if self._state is not _State.BODY:
            raise _fail("end of body out of place")
        framing = self._framing
        if framing is _Framing.LENGTH and self._remaining:
            raise _fail("body shorter than its content-length")
        self._state = _State.DONE
        if framing is not _Framing.CHUNKED:
            return b""
        if not trailers:
            return b"0\r\n\r\n"
        block = field_block(trailers)
        if block is None:
            raise _fail("invalid trailer field")
        return b"0\r\n" + block + b"\r\n"

    @staticmethod
    def _head_bytes(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
        block = field_block(headers)
        if block is None or _REASON.fullmatch(reason) is None:
            raise _fail("invalid response header field")
        if not reason:  # a generated response, or an upstream that sent none: the usual phrase
            reason = PHRASES.get(status, b"")
        return b"HTTP/1.1 %d %b\r\n%b\r\n" % (status, reason, block)
