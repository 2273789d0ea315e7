"""The request side of ``Http1Server``: head rules on top of h11 and body decoding (SPEC §5.3).

Ring 0: pure functions and small decoders over bytes; no trio, sockets, TLS, clocks or logging.
Must not: echo peer bytes in a reason, decode header values, copy body payload more than once,
read past the end of a message, or raise anything but ``ProtocolViolation``.

**Head rules.** h11 already rejects a malformed request line or field line (whitespace before
``:``, invalid name characters, bare CR and NUL in values), a missing or repeated ``Host`` on
HTTP/1.1, and a non-numeric or conflicting ``Content-Length``; it joins obs-fold lines with a
space and accepts bare LF line ends. It does *not* reject ``Content-Length`` together with
``Transfer-Encoding``, chunked on HTTP/1.0, control characters other than NUL in values,
versions like ``HTTP/2.0``, ``#``, bad ``%`` escapes or the wrong target form, or bad ``Host``
syntax, and it answers every unsupported transfer coding with one 501. ``check_raw_head`` and
``inspect_request`` add those rules; ``violation_for`` turns an h11 ``RemoteProtocolError`` into
the right status by looking at the raw head again (only on that error path, so the hot path
reads each field name once).

**Body decoding.** The body is decoded here, not by h11, because h11's chunked reader accepts
any bytes in a chunk extension (bare CR and NUL included: its ``chunk_ext`` is ``;.*``) and
keeps the bytes after the message in its private buffer, where the server could neither bound
nor reuse them for the next pipelined request.

Theory of operation: a decoder is fed an immutable ``bytes`` object and an offset; ``decode``
appends ``BodyChunk``/``EndOfBody`` events to ``out`` and returns the offset it consumed up to.
Bytes it cannot use yet (half a chunk-size line, one byte of a CRLF, part of the trailer
section) are left to the caller, who feeds them again, prefixed, with the next read; each such
partial unit is bounded, so the caller's buffer is too. Payload is never held back: all chunk
data that has arrived is emitted at once as a slice of the input (the input object itself when
it is all payload, so a read of pure body is not copied). After ``EndOfBody`` the decoder is
``done`` and the rest of the input belongs to the next request.

Strictness: chunk lines end in CRLF (no bare LF, no whitespace around the size or ``;``), the
size is 1–16 hex digits, extensions follow ``token [= token / quoted-string]``, chunk data is
followed by exactly CRLF, and trailer fields are ``token ":" value`` lines without obs-fold or
control characters. Anything else is a 400; an oversized trailer section is a 431.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto
from typing import TYPE_CHECKING, Final, Protocol

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, ProtocolViolation

if TYPE_CHECKING:
    from collections.abc import Sequence

    import h11

    from a3s_gateway.protocols.events import Event
    from a3s_gateway.protocols.headers import HeaderLine, Headers

__all__ = [
    "CHUNKED",
    "MAX_CHUNK_LINE_BYTES",
    "ChunkedDecoder",
    "LengthDecoder",
    "RefusedRequest",
    "check_raw_head",
    "inspect_request",
    "refused_head",
    "refused_request",
    "violation_for",
]


class ParsedRequest(Protocol):
    """A parsed request head as the rules here read it: ``http1_heads.ParsedHead`` (either
    engine) or an ``h11.Request`` (the differential tests)."""

    @property
    def method(self) -> bytes: ...

    @property
    def target(self) -> bytes: ...

    @property
    def http_version(self) -> bytes: ...

    @property
    def headers(self) -> Sequence[tuple[bytes, bytes]]: ...


#: ``inspect_request``'s body length for a chunked body.
CHUNKED: Final = -1

# Control characters other than HTAB, CR and LF (line ends are h11's business; a bare CR inside
# a line makes h11's field regex fail). RFC 9110 §5.5: field values are VCHAR, SP, HTAB, obs-text.
_CTL: Final = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# RFC 3986 host [":" port]: IP-literal or reg-name (unreserved / pct-encoded / sub-delims).
_HOST: Final = re.compile(
    rb"(?:\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)(?::[0-9]*)?"
)
_ABSOLUTE: Final = re.compile(rb"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?]*)(.*)")
_SCHEMES: Final = frozenset({b"http", b"https"})
_BAD_ESCAPE: Final = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_VERSIONS: Final = frozenset({b"1.0", b"1.1"})
# A request line that is well-formed but for its version (``HTTP/2``, ``HTTP/1.10``) → 505.
_LOOSE_LINE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/([0-9.]+)\r?")
_STRICT_LINE: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\r?")
# The same line, its parts captured, to say what a refused request was (``refused_head``).
_LINE_PARTS: Final = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/([0-9.]+)\r?\n"
)
_UNFOLD: Final = re.compile(rb"\r?\n[ \t]+")
_TE_LINE: Final = re.compile(
    rb"^transfer-encoding:[ \t]*(.*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE
)
_CL_LINE: Final = re.compile(rb"^content-length:", re.IGNORECASE | re.MULTILINE)
_HOST_LINE: Final = re.compile(rb"^host:", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class RefusedRequest:
    """What the access log may say about a request refused once its head was complete: the
    request line's parts and the ``Host`` value as received (``b""`` when unknown)."""

    method: bytes
    target: bytes
    host: bytes
    http_version: bytes


def refused_request(request: ParsedRequest) -> RefusedRequest:
    """A request h11 parsed but the gateway refused (``inspect_request``, a bad body)."""
    host = b""
    for name, value in request.headers:
        if name == b"host":
            host = value
            break
    return RefusedRequest(request.method, request.target, host, request.http_version)


def refused_head(head: bytes) -> RefusedRequest | None:
    """A complete raw head refused before h11 parsed it: its request line if that is
    well-formed but for the version (only printable bytes), else None. The error path only."""
    line = _LINE_PARTS.match(head)
    if line is None:
        return None
    return RefusedRequest(line[1], line[2], b"", line[3])


def check_raw_head(head: bytes) -> None:
    """Reject control characters anywhere in a complete raw head (h11 lets most of them pass)."""
    if _CTL.search(head) is not None:
        raise ProtocolViolation(400, "invalid character in request head")


def inspect_request(
    request: ParsedRequest, headers: list[HeaderLine], max_headers: int
) -> tuple[bytes, int]:
    """Apply the SPEC §5.3 rules h11 leaves out; return ``(authority, body length)``.

    The body length is ``CHUNKED`` or the ``Content-Length`` (0 without a body). The authority
    is the absolute-form target's authority, else the ``Host`` value (RFC 9112 §3.2.2: the
    target wins; ``Host`` must still be present on HTTP/1.1 and valid), else ``b""``.

    With an absolute-form target, ``headers`` is changed in place so that its ``Host`` line
    carries that authority (RFC 9112 §3.2.2: a proxy ignores the received ``Host`` and replaces
    it with the target's host): the authority is then the one truth every later stage reads,
    routing, middlewares, forwarding headers and the upstream ``Host`` alike, and a client
    cannot be routed by one host while the middlewares and the backend see another.
    """
    version = request.http_version
    if version not in _VERSIONS:
        raise ProtocolViolation(505, "http version not supported")
    if len(headers) > max_headers:
        raise ProtocolViolation(431, "too many header fields")
    host: bytes | None = None
    length = 0
    chunked = has_length = False
    for name, value in headers:
        if name == b"host":
            host = value
        elif name == b"content-length":
            has_length, length = True, int(value)
        elif name == b"transfer-encoding":
            chunked = True  # h11 only lets a single, exact ``chunked`` through
    if chunked and has_length:
        raise ProtocolViolation(400, "conflicting content-length and transfer-encoding")
    if chunked and version == b"1.0":
        raise ProtocolViolation(400, "transfer-encoding on an http/1.0 request")
    authority = _target_authority(request.method, request.target)
    if host is not None and _HOST.fullmatch(host) is None:
        raise ProtocolViolation(400, "invalid host")
    if authority is None:
        authority = host if host is not None else b""
    elif host != authority:
        _replace_host(headers, authority)
    return authority, CHUNKED if chunked else length


def _replace_host(headers: list[HeaderLine], authority: bytes) -> None:
    """Make ``authority`` the only ``Host`` line, where the received one was (or last)."""
    for index, (name, _) in enumerate(headers):
        if name == b"host":
            headers[index] = (b"host", authority)
            return
    headers.append((b"host", authority))


def _target_authority(method: bytes, target: bytes) -> bytes | None:
    """Check the request-target's form (RFC 9112 §3.2); the authority of an absolute form."""
    if b"#" in target:
        raise ProtocolViolation(400, "invalid request-target")
    if target[:1] == b"/":
        _check_path(target.partition(b"?")[0])
        return None
    if target == b"*":
        if method != b"OPTIONS":
            raise ProtocolViolation(400, "asterisk-form target requires OPTIONS")
        return None
    if method == b"CONNECT":
        if _HOST.fullmatch(target) is None:
            raise ProtocolViolation(400, "invalid request-target")
        return None
    match = _ABSOLUTE.fullmatch(target)
    if match is None:
        raise ProtocolViolation(400, "invalid request-target")
    if match[1].lower() not in _SCHEMES:
        raise ProtocolViolation(400, "unsupported request-target scheme")
    authority: bytes = match[2]
    # RFC 9110 §4.2.1/§4.2.4: an empty host is invalid and userinfo is treated as an error.
    if b"@" in authority or authority[:1] in (b"", b":") or _HOST.fullmatch(authority) is None:
        raise ProtocolViolation(400, "invalid request-target authority")
    _check_path(match[3].partition(b"?")[0])
    return authority


def _check_path(path: bytes) -> None:
    if b"%" in path and _BAD_ESCAPE.search(path) is not None:
        raise ProtocolViolation(400, "invalid percent-encoding in path")


def violation_for(error: h11.RemoteProtocolError, head: bytes) -> ProtocolViolation:
    """The status and fixed reason for an h11 error on a complete raw request head."""
    # h11 hints 501 only for Transfer-Encoding and 431 only for its receive-buffer limit.
    if error.error_status_hint == 501:
        return _transfer_coding_violation(head)
    if error.error_status_hint == 431:
        return ProtocolViolation(431, "request header fields too large")
    line, _, fields = head.partition(b"\n")
    if _STRICT_LINE.fullmatch(line) is None:
        loose = _LOOSE_LINE.fullmatch(line)
        if loose is not None and loose[1] not in _VERSIONS:
            return ProtocolViolation(505, "http version not supported")
        return ProtocolViolation(400, "invalid request line")
    hosts = len(_HOST_LINE.findall(fields))
    if hosts > 1 or (hosts == 0 and line.rstrip(b"\r").endswith(b"1.1")):
        return ProtocolViolation(400, "missing or repeated host")
    if _CL_LINE.search(fields) is not None:
        return ProtocolViolation(400, "invalid content-length")
    return ProtocolViolation(400, "invalid header field")


def _transfer_coding_violation(head: bytes) -> ProtocolViolation:
    """Classify what h11 calls an unsupported Transfer-Encoding (SPEC §5.3 rows)."""
    unfolded = _UNFOLD.sub(b" ", head)
    if _CL_LINE.search(unfolded) is not None:
        return ProtocolViolation(400, "conflicting content-length and transfer-encoding")
    if unfolded.partition(b"\n")[0].rstrip(b"\r").endswith(b"HTTP/1.0"):
        return ProtocolViolation(400, "transfer-encoding on an http/1.0 request")
    codings = [
        coding.partition(b";")[0].strip().lower()
        for value in _TE_LINE.findall(unfolded)
        for coding in value.split(b",")
    ]
    codings = [coding for coding in codings if coding]
    if not codings or codings[-1] != b"chunked" or codings.count(b"chunked") > 1:
        return ProtocolViolation(400, "invalid transfer-encoding")
    if len(codings) > 1:
        return ProtocolViolation(501, "unsupported transfer-encoding")
    return ProtocolViolation(400, "invalid transfer-encoding")


# --- body decoding ------------------------------------------------------------------------------

#: The longest chunk-size line (size plus extensions) accepted, CRLF excluded. Extensions carry
#: nothing we forward, so a small bound costs nothing and bounds the partial-line buffer.
MAX_CHUNK_LINE_BYTES: Final = 4096

_TOKEN: Final = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED: Final = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE: Final = re.compile(
    rb"([0-9A-Fa-f]{1,16})(?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?)*"
)
_VCHAR: Final = rb"[\x21-\x7e\x80-\xff]"
_FIELD_LINE: Final = re.compile(
    rb"(" + _TOKEN + rb"):[ \t]*(" + _VCHAR + rb"(?:[ \t]*" + _VCHAR + rb")*)?[ \t]*"
)


class LengthDecoder:
    """A body of a known ``Content-Length`` (greater than zero)."""

    __slots__ = ("_remaining", "done")

    def __init__(self, length: int) -> None:
        self._remaining = length
        self.done = False

    def decode(self, data: bytes, pos: int, out: list[Event]) -> int:
        """Emit the payload in ``data[pos:]`` up to the declared length; return the new offset."""
        take = min(self._remaining, len(data) - pos)
        if take:
            out.append(BodyChunk(data[pos : pos + take]))
            self._remaining -= take
        if not self._remaining:
            self.done = True
            out.append(EndOfBody())
        return pos + take


class _Step(Enum):
    SIZE = auto()
    DATA = auto()
    DATA_CRLF = auto()
    TRAILERS = auto()


class ChunkedDecoder:
    """A ``Transfer-Encoding: chunked`` body, decoded strictly (see the module docstring)."""

    __slots__ = ("_max_fields", "_max_trailer_bytes", "_remaining", "_step", "done")

    def __init__(self, *, max_trailer_bytes: int, max_fields: int) -> None:
        self._max_trailer_bytes = max_trailer_bytes
        self._max_fields = max_fields
        self._step = _Step.SIZE
        self._remaining = 0
        self.done = False

    def decode(self, data: bytes, pos: int, out: list[Event]) -> int:
        """Emit the events in ``data[pos:]``; return the offset of the first unused byte."""
        end = len(data)
        while not self.done:
            step = self._step
            if step is _Step.DATA:
                take = min(self._remaining, end - pos)
                if not take:
                    return pos
                out.append(BodyChunk(data[pos : pos + take]))
                pos += take
                self._remaining -= take
                if self._remaining:
                    return pos
                self._step = _Step.DATA_CRLF
            elif step is _Step.DATA_CRLF:
                if end - pos < 2:
                    if pos < end and data[pos] != 0x0D:  # fail early on a wrong first byte
                        raise ProtocolViolation(400, "missing CRLF after chunk data")
                    return pos
                if data[pos : pos + 2] != b"\r\n":
                    raise ProtocolViolation(400, "missing CRLF after chunk data")
                pos += 2
                self._step = _Step.SIZE
            elif step is _Step.SIZE:
                line_end = self._size_line(data, pos)
                if line_end < 0:
                    return pos
                pos = line_end
            else:
                section_end = self._trailers(data, pos, out)
                if section_end < 0:
                    return pos
                pos = section_end
        return pos

    def _size_line(self, data: bytes, pos: int) -> int:
        """Parse one chunk-size line; return the offset after its CRLF, or -1 for more data."""
        line_end = data.find(b"\r\n", pos)
        if line_end < 0:
            if len(data) - pos > MAX_CHUNK_LINE_BYTES:
                raise ProtocolViolation(400, "chunk header too long")
            return -1
        match = _CHUNK_LINE.fullmatch(data, pos, line_end)
        if match is None:
            raise ProtocolViolation(400, "invalid chunk header")
        size = int(match[1], 16)
        if size:
            self._remaining = size
            self._step = _Step.DATA
        else:
            self._step = _Step.TRAILERS
        return line_end + 2

    def _trailers(self, data: bytes, pos: int, out: list[Event]) -> int:
        """Parse the trailer section; return the offset after it, or -1 for more data."""
        if data.startswith(b"\r\n", pos):
            section_end, trailers = pos + 2, []
        else:
            blank = data.find(b"\r\n\r\n", pos)
            if blank < 0:
                if len(data) - pos > self._max_trailer_bytes:
                    raise ProtocolViolation(431, "trailer section too large")
                return -1
            if blank - pos > self._max_trailer_bytes:
                raise ProtocolViolation(431, "trailer section too large")
            section_end, trailers = blank + 4, self._fields(data[pos:blank])
        self.done = True
        out.append(EndOfBody(trailers))
        return section_end

    def _fields(self, section: bytes) -> Headers:
        lines = section.split(b"\r\n")
        if len(lines) > self._max_fields:
            raise ProtocolViolation(431, "too many trailer fields")
        trailers: Headers = []
        for line in lines:
            match = _FIELD_LINE.fullmatch(line)
            if match is None:
                raise ProtocolViolation(400, "invalid trailer field")
            trailers.append((match[1].lower(), match[2] or b""))
        return trailers
