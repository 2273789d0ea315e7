"""Gateway-generated responses: the JSON error form of SPEC §5.6.

Ring 0: pure; no trio, sockets, clocks or logging.

Every error the gateway answers itself has a JSON body ``{"error": "...", "status": N}`` encoded
by msgspec (so any text is escaped correctly; A3S built these bodies by string formatting),
``Content-Type: application/json``, ``Cache-Control: no-store`` and ``Server: a3s-gateway``.
Bodies for the fixed texts are encoded once, at import. Details of a cause never go into the
body: they belong in the logs.

Must not: add ``Date`` (the trio shell owns the clock) or decide framing (the adapter does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec

from a3s_gateway.protocols.events import ResponseHead

if TYPE_CHECKING:
    from a3s_gateway.protocols.headers import Headers

__all__ = [
    "ERROR_TEXTS",
    "GeneratedResponse",
    "error_response",
    "options_response",
    "redirect_response",
]

#: The default ``error`` text per status (SPEC §5.6).
ERROR_TEXTS: Final[dict[int, str]] = {
    400: "bad request",
    404: "no route matched",
    405: "method not allowed",
    408: "request timeout",
    413: "request body too large",
    414: "request-target too long",
    417: "expectation failed",
    431: "request header fields too large",
    500: "internal error",
    501: "unsupported transfer-encoding",
    502: "bad gateway",
    503: "no available backend",
    504: "gateway timeout",
    505: "http version not supported",
    508: "forwarding loop detected",
}

_ENCODER: Final = msgspec.json.Encoder()
_BASE_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"content-type", b"application/json"),
    (b"cache-control", b"no-store"),
    (b"server", b"a3s-gateway"),
)
#: Statuses whose response always closes the connection (framing may be unreliable).
_CLOSING: Final = frozenset({400, 408, 414, 431, 501, 505})
#: The methods the gateway proxies (``Allow`` on 405 and on OPTIONS answered locally).
ALLOW: Final = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"


class _ErrorBody(msgspec.Struct, frozen=True):
    error: str
    status: int


class _RedirectBody(msgspec.Struct, frozen=True):
    location: str
    status: int


@dataclass(frozen=True, slots=True)
class GeneratedResponse:
    """A response head plus its whole body; ``close`` asks the caller to end the connection."""

    head: ResponseHead
    body: bytes
    close: bool


def _encode(status: int, text: str) -> bytes:
    return _ENCODER.encode(_ErrorBody(error=text, status=status))


_BODIES: Final[dict[tuple[int, str], bytes]] = {
    (status, text): _encode(status, text) for status, text in ERROR_TEXTS.items()
}


def error_response(
    status: int,
    text: str | None = None,
    *,
    extra: Headers | None = None,
    close: bool = False,
) -> GeneratedResponse:
    """The JSON error response for ``status`` with ``text`` (default from ``ERROR_TEXTS``).

    ``extra`` header lines (lower-case names) are appended, e.g. ``Allow`` or ``Retry-After``.
    400, 408, 414, 431, 501 and 505 always close (SPEC §5.6 ``Connection: close``).
    """
    if text is None:
        text = ERROR_TEXTS.get(status, "error")
    body = _BODIES.get((status, text))
    if body is None:
        body = _encode(status, text)
    headers = [*_BASE_HEADERS, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    return GeneratedResponse(
        ResponseHead(status=status, headers=headers), body, close or status in _CLOSING
    )


def options_response() -> GeneratedResponse:
    """``OPTIONS *`` and ``OPTIONS`` with ``Max-Forwards: 0``: 200, ``Allow``, no body."""
    headers = [(b"allow", ALLOW), (b"server", b"a3s-gateway"), (b"content-length", b"0")]
    return GeneratedResponse(ResponseHead(status=200, headers=headers), b"", close=False)


def redirect_response(location: bytes) -> GeneratedResponse:
    """``308 Permanent Redirect`` to ``location`` (an entrypoint's ``redirect_to``, SPEC §3.7):
    the method and body are to be repeated there. The small JSON body names the location too;
    no ``Cache-Control``, so clients may remember a permanent redirect."""
    body = _ENCODER.encode(_RedirectBody(location=location.decode("latin-1"), status=308))
    headers = [
        (b"location", location),
        (b"content-type", b"application/json"),
        (b"server", b"a3s-gateway"),
        (b"content-length", str(len(body)).encode()),
    ]
    return GeneratedResponse(ResponseHead(status=308, headers=headers), body, close=False)
