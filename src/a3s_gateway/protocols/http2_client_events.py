"""What ``Http2Client.receive`` returns besides the response's own events, and the RFC 9113 §7
error codes the HTTP/2 upstream names (SPEC §5.7, §5.10).

Ring 0: frozen value types and one pure function; no trio, sockets, clocks or logging.
``protocols/http2_client.py`` produces these events (and re-exports every name here), the shell
(``upstream/http2_connection.py``) consumes them.

Must not: hold state or import the h2 state machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias

from h2.errors import ErrorCodes

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, Informational, ResponseHead
from a3s_gateway.protocols.http2_events import WindowOpened

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import ProtocolViolation

__all__ = [
    "CANCEL",
    "NO_ERROR",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "ClientEvent",
    "GoAway",
    "PeerSettings",
    "StreamFailed",
    "StreamReset",
    "WindowOpened",
    "error_name",
]

NO_ERROR: Final = int(ErrorCodes.NO_ERROR)
PROTOCOL_ERROR: Final = int(ErrorCodes.PROTOCOL_ERROR)
REFUSED_STREAM: Final = int(ErrorCodes.REFUSED_STREAM)
CANCEL: Final = int(ErrorCodes.CANCEL)


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset ``stream_id`` (RST_STREAM ``error_code``); ``REFUSED_STREAM`` means it
    was not processed (RFC 9113 §8.7)."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """The response on ``stream_id`` was malformed; the stream is already reset."""

    stream_id: int
    violation: ProtocolViolation


@dataclass(frozen=True, slots=True)
class GoAway:
    """The peer sent GOAWAY: streams above ``last_stream_id`` were not processed."""

    last_stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """The peer's SETTINGS arrived (the first one completes the connection's setup);
    ``max_concurrent_streams`` is its limit, at most ``STREAM_CAP``."""

    max_concurrent_streams: int


#: Everything ``Http2Client.receive`` returns.
ClientEvent: TypeAlias = (
    ResponseHead
    | Informational
    | BodyChunk
    | EndOfBody
    | StreamReset
    | StreamFailed
    | WindowOpened
    | GoAway
    | PeerSettings
)


def error_name(code: int) -> str:
    """The RFC 9113 §7 name of an error code (``CANCEL``), or its number."""
    try:
        return ErrorCodes(code).name
    except ValueError:
        return str(code)
