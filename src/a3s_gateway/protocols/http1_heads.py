"""Request-head engines for ``Http1Server``: h11 (the reference) and llhttp (the fast default).

Ring 0: synchronous and deterministic; no trio, sockets, TLS, clocks or logging. Must not: see
body bytes, echo peer bytes in a reason, or raise anything but ``ProtocolViolation``.

``Http1Server`` finds a complete head in its own buffer (leading empty lines skipped, 414 and
431 enforced on the raw bytes) and hands it to an engine's ``parse_request_head``, then applies
``inspect_request`` (SPEC §5.3) to the ``ParsedHead``. Both engines run ``check_raw_head`` first
and give the same result for every head — the same ``ParsedHead`` or a ``ProtocolViolation``
with the same status — which ``tests/property/test_http1_differential.py`` checks with h11 as
the oracle (DESIGN.md §0). The parsed head is h11's normal form: lower-case names, values without
leading or trailing SP/HTAB, obs-fold joined with one SP, repeated identical ``Content-Length``
values merged into one line, ``Transfer-Encoding`` lower-cased. On top of h11, both engines write
``Content-Length`` canonically (``010`` → ``10``) and refuse one of 2⁶⁴ or more (llhttp's limit).

Theory of operation — llhttp. A fresh ``httptools.HttpRequestParser`` (0.3 µs) is fed the head
only; its callbacks collect the target and the field lines, and the head counts as parsed when
``on_headers_complete`` fired for exactly one message with nothing after it. The result is
accepted only if it is also h11's: the request line must re-serialise to exactly the bytes
received (one SP, a visible-ASCII target, ``HTTP/`` and one digit each side of the dot, so
llhttp's tolerance of repeated spaces or of ``RTSP/`` lines is not inherited), ``Host`` must be
there once on HTTP/1.1 and at most once otherwise, ``Transfer-Encoding`` must be a single
``chunked``, ``Content-Length`` at most 20 digits. That is the fast path of every ordinary head.

Where llhttp refuses what h11 takes (``_retry``), the head is read the way h11 reads it: bare LF
line ends become CRLF (RFC 9112 §2.2), obs-fold is joined (§5.2), repeated identical
``Content-Length`` values are merged (RFC 9110 §8.6), the request line is matched with h11's own
grammar, and llhttp parses the field lines once more behind a stand-in ``GET / HTTP/x.y`` line,
so that extension methods llhttp does not list (``FOO``, a lower-case ``get``) and target forms
it refuses reach ``inspect_request``, which judges the target for both engines (it refuses every
target form llhttp refuses; the differential test checks that too). Whatever is still refused
goes to the reference engine, whose ``ProtocolViolation`` is raised, so every refusal has h11's
status; should h11 accept such a head, the engines disagree and the head is refused (400):
disagreements are decided in favour of rejecting. A refusal costs what it cost before (h11 runs).

Leniencies asked of llhttp, each one only to agree with h11 on a head h11 accepts: versions other
than 1.0/1.1 (``inspect_request`` answers 505 for them, as for h11), and ``Content-Length``
together with ``Transfer-Encoding`` (``inspect_request`` answers 400, as for h11).
"""

from __future__ import annotations

import re
from typing import Final, Protocol

import h11
import httptools
import msgspec

from a3s_gateway.protocols.events import ProtocolViolation
from a3s_gateway.protocols.headers import HeaderLine
from a3s_gateway.protocols.http1_request import check_raw_head, violation_for

__all__ = [
    "MAX_CONTENT_LENGTH",
    "H11Heads",
    "LlhttpHeads",
    "ParsedHead",
    "RequestHeadParser",
    "crlf_lines",
    "merge_lengths",
    "unfold",
]

#: llhttp keeps ``Content-Length`` in an unsigned 64-bit integer and refuses more; h11 takes up
#: to 20 digits. Both engines refuse a value of 2⁶⁴ or more: no such body can exist.
MAX_CONTENT_LENGTH: Final = 2**64 - 1
_CL_DIGITS: Final = 20  # h11's CONTENT_LENGTH_MAX_DIGITS

_BARE_LF: Final = re.compile(rb"(?<!\r)\n")
_OBS_FOLD: Final = re.compile(rb"\r\n[ \t]+")
_CL_FIELD: Final = re.compile(
    rb"^content-length:[ \t]*([^\r]*?)[ \t]*\r\n", re.IGNORECASE | re.MULTILINE
)
# h11's request-line grammar (h11/_abnf.py), the line's CRLF excluded.
_REQUEST_LINE: Final = re.compile(
    rb"([-!#$%&'*+.^_`|~0-9a-zA-Z]+) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])"
)
#: The fields whose value h11 reads while parsing a request head.
_READ_FIELDS: Final = frozenset({b"host", b"content-length", b"transfer-encoding", b"expect"})


class ParsedHead(msgspec.Struct, frozen=True, gc=False):
    """A request head in h11's normal form (see the module docstring), not yet inspected.

    ``expect_continue`` is h11's ``they_are_waiting_for_100_continue``: HTTP/1.1 or later and a
    ``100-continue`` element in an ``Expect`` field. A Struct (built in 0.1 µs, a frozen
    dataclass takes 0.9 µs); ``gc=False`` holds: it refers to bytes and tuples of bytes only.
    """

    method: bytes
    target: bytes
    http_version: bytes
    headers: list[HeaderLine]
    expect_continue: bool = False


class RequestHeadParser(Protocol):
    """An engine that parses one complete request head (request line to the empty line)."""

    def parse_request_head(self, head: bytes) -> ParsedHead:
        """The parsed head; raises ``ProtocolViolation`` (400, 501, 505) for a malformed one."""
        ...


class H11Heads:
    """The reference engine: a fresh ``h11.Connection(SERVER)`` per head (today's behaviour)."""

    __slots__ = ()

    def parse_request_head(self, head: bytes) -> ParsedHead:
        """See ``RequestHeadParser``."""
        check_raw_head(head)
        conn = h11.Connection(h11.SERVER)  # its size limit only applies to incomplete heads
        conn.receive_data(head)
        try:
            request = conn.next_event()
        except h11.RemoteProtocolError as exc:
            raise violation_for(exc, head) from exc
        if not isinstance(request, h11.Request):  # unreachable: the head is complete
            raise ProtocolViolation(400, "invalid request head")
        headers = list(request.headers)
        for index, (name, value) in enumerate(headers):
            if name == b"content-length":  # h11 keeps a single line (checked, digits only)
                headers[index] = (name, _canonical_length(value))
                break
        return ParsedHead(
            request.method,
            request.target,
            request.http_version,
            headers,
            conn.they_are_waiting_for_100_continue,
        )


def _canonical_length(value: bytes) -> bytes:
    length = int(value)
    if length > MAX_CONTENT_LENGTH:
        raise ProtocolViolation(400, "invalid content-length")
    return b"%d" % length


_REFERENCE: Final = H11Heads()


class HeadCollector:
    """httptools callbacks shared by both directions: the raw field lines of one head.

    ``extra`` records anything llhttp found after the head (a second message, body, chunks):
    never expected, as only a head is fed, but then the head is not what llhttp parsed.
    """

    __slots__ = ("complete", "extra", "fields", "messages")

    def __init__(self) -> None:
        self.fields: list[HeaderLine] = []
        self.complete = False
        self.messages = 0
        self.extra = False

    def on_message_begin(self) -> None:
        self.messages += 1

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))

    def on_headers_complete(self) -> None:
        self.complete = True

    def on_body(self, body: bytes) -> None:
        self.extra = True

    def on_chunk_header(self) -> None:
        self.extra = True


class _Collector(HeadCollector):
    """A request head's callbacks: the target too."""

    __slots__ = ("line", "target")

    def __init__(self) -> None:
        super().__init__()
        self.target = b""
        self.line = (b"", b"", b"")  # method, target, version once complete

    def on_url(self, url: bytes) -> None:
        self.target += url


class LlhttpHeads:
    """The fast engine: llhttp through httptools, agreeing with ``H11Heads`` (module docstring)."""

    __slots__ = ()

    def parse_request_head(self, head: bytes) -> ParsedHead:
        """See ``RequestHeadParser``."""
        check_raw_head(head)
        collector = _llhttp(head)
        if collector is not None:
            method, target, version = collector.line
            # The request line exactly as h11's grammar has it: one SP each, HTTP/DIGIT.DIGIT,
            # a target of visible ASCII (llhttp has its own, different, rules for all three;
            # control characters are out already, and llhttp ends a target at SP).
            line = b"%b %b HTTP/%b" % collector.line
            end = head[len(line) : len(line) + 2]
            if (
                (end == b"\r\n" or end[:1] == b"\n")
                and head.startswith(line)
                and len(version) == 3
                and target.isascii()
                and b"\t" not in target
                and b" " not in target
            ):
                parsed = _normal_form(method, target, version, collector.fields)
                if parsed is not None:
                    return parsed
        return _retry(head)


def _retry(head: bytes) -> ParsedHead:
    """Parse ``head`` as h11 reads it (module docstring), or raise the reference's violation.

    The request line is matched with h11's own grammar and llhttp parses the field lines behind
    a stand-in ``GET / HTTP/x.y`` line: ``inspect_request`` judges the method and the target's
    form after either engine, and would refuse every target llhttp does not parse.
    """
    wire = crlf_lines(head)
    line_end = wire.find(b"\r\n")
    line = _REQUEST_LINE.fullmatch(wire, 0, line_end)
    if line is not None:
        fields = merge_lengths(unfold(wire[line_end + 2 :]))
        version: bytes = line[3]
        collector = _llhttp(b"GET / HTTP/%b\r\n%b" % (version, fields))
        if collector is not None:
            parsed = _normal_form(line[1], line[2], version, collector.fields)
            if parsed is not None:
                return parsed
    try:
        _REFERENCE.parse_request_head(head)
    except ProtocolViolation as violation:
        raise violation from None
    raise ProtocolViolation(400, "invalid request head")  # accepted by h11 only


def crlf_lines(head: bytes) -> bytes:
    """``head`` with every bare LF line end made CRLF: the lines h11 reads (RFC 9112 §2.2)."""
    if head.count(b"\n") == head.count(b"\r\n"):
        return head
    return _BARE_LF.sub(b"\r\n", head)


def unfold(fields: bytes) -> bytes:
    """CRLF-ended field lines with obs-fold replaced by one SP, as h11 does (RFC 9112 §5.2).

    A fold at the very start stays (h11 refuses it, and so does llhttp).
    """
    if b"\n " in fields or b"\n\t" in fields:
        return _OBS_FOLD.sub(b" ", fields)
    return fields


def merge_lengths(fields: bytes) -> bytes:
    """Repeated ``Content-Length`` values merged into one line if all equal (RFC 9110 §8.6).

    h11 reads ``5, 5`` or two ``5`` lines as one ``5``; llhttp refuses both. Conflicting values
    are left for llhttp (and h11) to refuse.
    """
    found: list[bytes] = _CL_FIELD.findall(fields)
    if len(found) < 2 and b"," not in b"".join(found):
        return fields
    values = {part.strip() for value in found for part in value.split(b",")}
    if len(values) != 1:
        return fields
    first = _CL_FIELD.search(fields)
    assert first is not None
    single = b"Content-Length: " + values.pop() + b"\r\n"
    rest = _CL_FIELD.sub(b"", fields[first.end() :])
    return fields[: first.start()] + single + rest


def _llhttp(wire: bytes) -> _Collector | None:
    """Feed one head to a fresh llhttp parser; the collected head, or None if llhttp refused."""
    collector = _Collector()
    parser = httptools.HttpRequestParser(collector)
    parser.set_dangerous_leniencies(lenient_version=True, lenient_chunked_length=True)
    try:
        parser.feed_data(wire)
    except httptools.HttpParserUpgrade as upgrade:  # CONNECT, or Upgrade: the head is complete
        if upgrade.args[0] != len(wire):
            return None
    except httptools.HttpParserError:
        return None
    if not collector.complete or collector.extra or collector.messages != 1:
        return None
    collector.line = (parser.get_method(), collector.target, parser.get_http_version().encode())
    return collector


def _normal_form(
    method: bytes, target: bytes, version: bytes, fields: list[HeaderLine]
) -> ParsedHead | None:
    """h11's view of llhttp's field lines, or None where h11 would refuse them."""
    headers = [(name.lower(), value.rstrip(b" \t")) for name, value in fields]
    hosts = 0
    length = chunked = expect = False
    for line in headers:
        name = line[0]
        if name not in _READ_FIELDS:
            continue
        value = line[1]
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            # llhttp checked digits and refused a repeat; h11 allows at most 20 digits.
            if length or len(value) > _CL_DIGITS or not value.isdigit():
                return None
            length = True
            if value[0] == 0x30 or len(value) == _CL_DIGITS:  # a leading 0, or maybe ≥ 2**64
                headers[headers.index(line)] = (name, _canonical_length(value))
        elif name == b"transfer-encoding":
            if chunked or value.lower() != b"chunked":
                return None  # h11 takes one field, exactly ``chunked`` (501 or 400 otherwise)
            chunked = True
            if value != b"chunked":
                headers[headers.index(line)] = (name, b"chunked")
        else:  # expect
            expect = expect or any(
                part.strip() == b"100-continue" for part in value.lower().split(b",")
            )
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        return None
    return ParsedHead(method, target, version, headers, expect and version >= b"1.1")
