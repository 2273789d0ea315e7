"""Response heads parsed by llhttp into h11's normal form, for ``LlhttpClient``.

Ring 0: pure functions over one complete head (status line to the empty line); no trio,
sockets, TLS, clocks or logging. Must not: see body bytes, or decide the response's framing
beyond reporting its framing fields (``http1_llhttp.py`` frames the body).

``parse_response_head`` gives what h11's client would make of the head — lower-case names,
values without outer SP/HTAB, obs-fold joined, repeated identical ``Content-Length`` merged,
``Transfer-Encoding`` lower-cased — or None where h11 or llhttp refuses it (the caller answers
502). It works like ``http1_heads.LlhttpHeads``: a fresh ``httptools.HttpResponseParser`` fed
the head only; the status line must re-serialise to the bytes received under h11's grammar
(``HTTP/DIGIT.DIGIT SP 3DIGIT [SP reason]``, status 100–999, no NUL or CR in the reason, which
llhttp lets through); where llhttp refuses, the head is read the way h11 reads it (bare LF line
ends, obs-fold, repeated ``Content-Length``) behind a stand-in status line and tried once more.
h11's field rules come last (``h11_fields``): at most one ``Content-Length`` value (of up to 20
digits) and at most one ``Transfer-Encoding`` field, which must be ``chunked``. llhttp is asked
for two leniencies, both where h11 accepts: any ``HTTP/DIGIT.DIGIT`` version, and
``Content-Length`` with ``Transfer-Encoding`` (chunked framing wins, as in h11 and RFC 9112 §6.3).
"""

from __future__ import annotations

import re
from typing import Final

import httptools
import msgspec

from a3s_gateway.protocols.headers import HeaderLine
from a3s_gateway.protocols.http1_heads import HeadCollector, crlf_lines, merge_lengths, unfold

__all__ = ["ParsedResponse", "h11_fields", "parse_response_head"]

# h11's status-line grammar (h11/_abnf.py), CRLF excluded.
_STATUS_LINE: Final = re.compile(rb"HTTP/([0-9]\.[0-9]) ([0-9]{3})(?: ([ \t\x01-\x08\x0e-\xff]*))?")
_REASON: Final = re.compile(rb"[ \t\x01-\x08\x0e-\x1f\x21-\xff]*")
_DIGITS: Final = re.compile(rb"[0-9]{1,20}")
_CL_DIGITS: Final = 20  # h11's CONTENT_LENGTH_MAX_DIGITS
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})


class ParsedResponse(msgspec.Struct, frozen=True, gc=False):
    """A response head: h11's view of it, with the framing fields already read (a Struct for
    the same reason as ``http1_heads.ParsedHead``)."""

    status: int
    reason: bytes
    version: bytes
    headers: list[HeaderLine]
    #: ``Content-Length`` (None without one); ``chunked`` wins when both are there.
    length: int | None
    chunked: bool
    #: No ``close`` in ``Connection`` and HTTP/1.1 or later (h11's rule).
    keep_alive: bool


class _Collector(HeadCollector):
    """A response head's callbacks: the reason phrase too."""

    __slots__ = ("reason",)

    def __init__(self) -> None:
        super().__init__()
        self.reason = b""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason


def parse_response_head(head: bytes) -> ParsedResponse | None:
    """h11's reading of one complete response head, or None if h11 or llhttp refuses it."""
    parsed = _llhttp(head)
    if parsed is not None:
        collector, status, version = parsed
        reason = collector.reason
        line = b"HTTP/%b %03d" % (version, status)
        first = head[: head.find(b"\n")]
        if first[-1:] == b"\r":
            first = first[:-1]
        if (
            (first == line or first == line + b" " + reason)
            and len(version) == 3
            and status >= 100
            and _REASON.fullmatch(reason) is not None
        ):
            return _response(status, reason, version, collector.fields)
    wire = crlf_lines(head)
    line_end = wire.find(b"\r\n")
    match = _STATUS_LINE.fullmatch(wire, 0, line_end)
    if match is None or int(match[2]) < 100:
        return None
    parsed = _llhttp(b"HTTP/1.1 200 \r\n" + merge_lengths(unfold(wire[line_end + 2 :])))
    if parsed is None:
        return None
    return _response(int(match[2]), match[3] or b"", match[1], parsed[0].fields)


def _llhttp(wire: bytes) -> tuple[_Collector, int, bytes] | None:
    collector = _Collector()
    parser = httptools.HttpResponseParser(collector)
    parser.set_dangerous_leniencies(lenient_version=True, lenient_chunked_length=True)
    try:
        parser.feed_data(wire)
    except httptools.HttpParserUpgrade as upgrade:  # a 101: the head is complete
        if upgrade.args[0] != len(wire):
            return None
    except httptools.HttpParserError:
        return None
    if not collector.complete or collector.extra or collector.messages != 1:
        return None
    return collector, parser.get_status_code(), parser.get_http_version().encode()


def _response(
    status: int, reason: bytes, version: bytes, fields: list[HeaderLine]
) -> ParsedResponse | None:
    read = h11_fields(fields)
    if read is None:
        return None
    headers, length, chunked = read
    keep_alive = version >= b"1.1"
    if keep_alive:
        for name, value in headers:
            if name == b"connection" and b"close" in value.lower():
                keep_alive = not any(t.strip() == b"close" for t in value.lower().split(b","))
                if not keep_alive:
                    break
    return ParsedResponse(status, reason, version, headers, length, chunked, keep_alive)


def h11_fields(fields: list[HeaderLine]) -> tuple[list[HeaderLine], int | None, bool] | None:
    """h11's normal form of field lines (``normalize_and_validate``), or None if it refuses.

    Returns the lines, the ``Content-Length`` value and whether ``Transfer-Encoding`` is
    ``chunked``. Used for heads and for trailers alike, as h11 does.
    """
    headers = [(name.lower(), value.strip(b" \t")) for name, value in fields]
    framing = [line for line in headers if line[0] in _FRAMING]
    if not framing:
        return headers, None, False
    if len(framing) == 1:  # the usual case, without the general loop
        name, value = framing[0]
        if name == b"content-length" and value.isdigit() and len(value) <= _CL_DIGITS:
            return headers, int(value), False
        if name == b"transfer-encoding" and value == b"chunked":
            return headers, None, True
    normal: list[HeaderLine] = []
    length: bytes | None = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            values = {part.strip() for part in value.split(b",")}
            if len(values) != 1:
                return None
            value = values.pop()
            if _DIGITS.fullmatch(value) is None or (length is not None and value != length):
                return None
            if length is not None:
                continue  # a repeat of the same value: h11 keeps the first line
            length = value
        elif name == b"transfer-encoding":
            value = value.lower()
            if chunked or value != b"chunked":
                return None
            chunked = True
        normal.append((name, value))
    return normal, None if length is None else int(length), chunked
