"""gRPC over HTTP/2, as a proxy sees it (SPEC §5.10): recognising a call, its deadline, and the
gateway's own failures answered as gRPC errors.

Ring 0: pure; no trio, sockets, clocks or logging.

- ``is_grpc``: an HTTP/2 request whose ``content-type`` is ``application/grpc`` or
  ``application/grpc+<codec>``; ``application/grpc-web*`` is ordinary HTTP, and an HTTP/1.1
  request is never gRPC.
- ``grpc_timeout``: the ``grpc-timeout`` field (1–8 digits and a unit ``H M S m u n``) in
  seconds; ``GrpcTimeoutError`` for a malformed one (answered ``grpc-status 13``).
- ``grpc_answer``: a gateway-generated response (``responses.py``) as a trailers-only gRPC
  response: HTTP 200, ``content-type: application/grpc``, ``grpc-status`` mapped from the HTTP
  status by SPEC §5.10's table, ``grpc-message`` percent-encoded; the fields middlewares added
  (CORS, ``www-authenticate``, the request id) are kept, the JSON body is dropped.

Must not: read clocks (the shell turns a timeout into a deadline) or touch the body of a call.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

import msgspec

from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.responses import ERROR_TEXTS, GeneratedResponse

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead

__all__ = [
    "GRPC_STATUS",
    "GrpcTimeoutError",
    "grpc_answer",
    "grpc_status_for",
    "grpc_timeout",
    "is_grpc",
    "percent_encode",
]

#: gRPC status codes used here (https://grpc.github.io/grpc/core/md_doc_statuscodes.html).
GRPC_STATUS: Final = {
    "OK": 0,
    "UNKNOWN": 2,
    "DEADLINE_EXCEEDED": 4,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "UNAUTHENTICATED": 16,
}

#: SPEC §5.10's mapping of the gateway's HTTP statuses; any other status is UNKNOWN (2).
_BY_HTTP: Final = {
    400: 13,
    401: 16,
    403: 7,
    404: 12,
    405: 12,
    408: 4,
    413: 8,
    429: 8,
    431: 8,
    500: 13,
    502: 14,
    503: 14,
    504: 4,
}

_UNITS: Final = {
    b"H": 3600.0,
    b"M": 60.0,
    b"S": 1.0,
    b"m": 1e-3,
    b"u": 1e-6,
    b"n": 1e-9,
}
_TIMEOUT: Final = re.compile(rb"([0-9]{1,8})([HMSmun])")
#: Bytes of ``grpc-message`` sent as they are (the gRPC spec: printable ASCII but ``%``).
_PLAIN: Final = frozenset(range(0x20, 0x7F)) - {ord("%")}
_GRPC_TYPE: Final = b"application/grpc"
#: Fields of a generated response that do not belong on a trailers-only gRPC answer.
_DROPPED: Final = frozenset({b"content-type", b"content-length", b"cache-control"})


class GrpcTimeoutError(ValueError):
    """The ``grpc-timeout`` field is malformed."""


class _Body(msgspec.Struct):
    error: str = ""


_DECODER: Final = msgspec.json.Decoder(_Body)


def is_grpc(head: RequestHead) -> bool:
    """Whether ``head`` is a gRPC call (HTTP/2 and a gRPC content type)."""
    if head.http_version != b"2":
        return False
    for name, value in head.headers:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == _GRPC_TYPE or kind.startswith(_GRPC_TYPE + b"+")
    return False


def grpc_timeout(head: RequestHead) -> float | None:
    """The call's ``grpc-timeout`` in seconds; None when it has none. Raises
    ``GrpcTimeoutError`` for a malformed value (or several values)."""
    values = [value for name, value in head.headers if name == b"grpc-timeout"]
    if not values:
        return None
    match = _TIMEOUT.fullmatch(values[0].strip()) if len(values) == 1 else None
    if match is None:
        raise GrpcTimeoutError("invalid grpc-timeout")
    return int(match.group(1)) * _UNITS[match.group(2)]


def encode_timeout(seconds: float) -> bytes:
    """``seconds`` as a ``grpc-timeout`` value (at most 8 digits, the finest unit that fits;
    never below 1 ns)."""
    for unit, scale in ((b"n", 1e-9), (b"u", 1e-6), (b"m", 1e-3), (b"S", 1.0), (b"M", 60.0)):
        amount = int(seconds / scale)
        if amount < 100_000_000:
            return str(max(amount, 1)).encode() + unit
    return str(min(int(seconds / 3600.0), 99_999_999)).encode() + b"H"


def grpc_status_for(http_status: int) -> int:
    """The ``grpc-status`` of a gateway answer with ``http_status`` (SPEC §5.10)."""
    return _BY_HTTP.get(http_status, GRPC_STATUS["UNKNOWN"])


def percent_encode(text: str) -> bytes:
    """``grpc-message`` encoding: UTF-8, bytes outside printable ASCII and ``%`` as ``%XX``."""
    return b"".join(
        bytes((byte,)) if byte in _PLAIN else b"%%%02X" % byte for byte in text.encode()
    )


def grpc_answer(response: GeneratedResponse, *, message: str | None = None) -> GeneratedResponse:
    """``response`` (a gateway answer) as a trailers-only gRPC error (module docstring);
    ``message`` replaces the text taken from the JSON body."""
    head = response.head
    status = grpc_status_for(head.status)
    if message is None:
        message = _text(response)
    fields = [line for line in head.headers if line[0] not in _DROPPED]
    fields[:0] = [(b"content-type", _GRPC_TYPE)]
    fields.append((b"grpc-status", str(status).encode()))
    if message:
        fields.append((b"grpc-message", percent_encode(message)))
    return GeneratedResponse(ResponseHead(200, fields), b"", close=False)


def _text(response: GeneratedResponse) -> str:
    status = response.head.status
    try:
        text = _DECODER.decode(response.body).error if response.body else ""
    except msgspec.DecodeError:
        text = ""
    return text or ERROR_TEXTS.get(status, f"HTTP {status}")
