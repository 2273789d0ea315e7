"""What ``Http2Client`` checks and filters in header blocks, both ways (SPEC §5.7, RFC 9113 §8).

Ring 0: pure functions over field lists; no trio, sockets, clocks or logging.

Received (``response_fields``, ``trailer_fields``): h2's own validation of inbound header
blocks is off in the client, since it would make a malformed response a connection error while
RFC 9113 §8.1.1 makes it a stream error. The checks here are: one ``:status`` of three digits,
first, within 100–599 and not ``101`` (RFC 9113 §8.6); no other pseudo-header, none in
trailers; lower-case token names; values without NUL/CR/LF or surrounding blanks; no
connection-specific field (``te`` only as ``trailers``); at most ``MAX_FIELDS`` fields. A
failure is a ``ProtocolViolation(502)`` with a fixed reason; the client resets the stream.

Sent (``request_fields``, ``sendable_trailers``): a ``RequestHead`` becomes pseudo-headers
(``:method``, ``:scheme``, ``:authority`` from the first ``host`` line, which is dropped,
``:path``) and its fields minus the connection-specific ones RFC 9113 §8.2.2 forbids (``te`` is
kept only as ``trailers``).

Must not: raise anything but ``ProtocolViolation``, or touch the h2 state machine.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from a3s_gateway.protocols.events import ProtocolViolation
from a3s_gateway.protocols.http2_events import CONNECTION_SPECIFIC

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.headers import Headers

__all__ = [
    "CONNECTION_FIELDS",
    "MAX_FIELDS",
    "request_fields",
    "response_fields",
    "sendable_trailers",
    "trailer_fields",
]

#: SPEC §5.7: at most 200 fields in a response head (its 64 KiB bound is h2's, while decoding).
MAX_FIELDS: Final = 200

#: RFC 9113 §8.2.2: connection-specific fields are malformed in HTTP/2 (``te`` is special);
#: the server adapter's set.
CONNECTION_FIELDS: Final = CONNECTION_SPECIFIC
_TOKEN_LOWER: Final = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
_BAD_VALUE: Final = re.compile(rb"[\x00\r\n]|\A[ \t]|[ \t]\Z")


def _violation(reason: str) -> ProtocolViolation:
    return ProtocolViolation(502, reason)


def _status(value: bytes) -> int:
    if len(value) != 3 or not value.isdigit():
        raise _violation("invalid :status in HTTP/2 response")
    return int(value)


def _check_fields(headers: Headers, *, trailers: bool) -> tuple[int, Headers]:
    """The ``:status`` (0 in trailers) and the regular fields of a received header block."""
    status = 0
    fields: Headers = []
    for name, value in headers:
        if name[:1] == b":":
            if trailers or fields or status or name != b":status":
                raise _violation("misplaced or unknown pseudo-header in HTTP/2 response")
            status = _status(value)
            continue
        if _TOKEN_LOWER.fullmatch(name) is None or _BAD_VALUE.search(value) is not None:
            raise _violation("invalid field in HTTP/2 response")
        if name in CONNECTION_FIELDS or (name == b"te" and value != b"trailers"):
            raise _violation("connection-specific field in HTTP/2 response")
        fields.append((name, value))
    if len(fields) > MAX_FIELDS:
        raise _violation("too many fields in HTTP/2 response")
    if not trailers and not status:
        raise _violation("missing :status in HTTP/2 response")
    return status, fields


def response_fields(headers: Headers) -> tuple[int, Headers]:
    """The status and regular fields of a received response (or informational) head. Raises
    ``ProtocolViolation(502)`` for a malformed one (see the module docstring)."""
    status, fields = _check_fields(headers, trailers=False)
    if status < 100 or status > 599 or status == 101:
        raise _violation("invalid :status in HTTP/2 response")
    return status, fields


def trailer_fields(headers: Headers) -> Headers:
    """The fields of received trailers. Raises ``ProtocolViolation(502)`` for malformed ones."""
    return _check_fields(headers, trailers=True)[1]


def request_fields(head: RequestHead, scheme: bytes) -> Headers:
    """The header block that sends ``head`` over HTTP/2 with ``:scheme`` ``scheme``."""
    authority = head.authority
    host_seen = False
    fields: Headers = []
    for line in head.headers:
        name = line[0]
        if name == b"host":
            if not host_seen:
                authority, host_seen = line[1], True
        elif name == b"te":
            if line[1].strip().lower() == b"trailers":
                fields.append((b"te", b"trailers"))
        elif name not in CONNECTION_FIELDS:
            fields.append(line)
    pseudo: Headers = [(b":method", head.method), (b":scheme", scheme)]
    if authority:
        pseudo.append((b":authority", authority))
    pseudo.append((b":path", head.target))
    return pseudo + fields


def sendable_trailers(trailers: Headers) -> Headers:
    """``trailers`` without connection-specific fields, ``te`` and pseudo-headers."""
    return [
        line
        for line in trailers
        if line[0] not in CONNECTION_FIELDS and line[0] != b"te" and line[0][:1] != b":"
    ]
