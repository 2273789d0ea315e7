"""The vocabulary of the HTTP/2 server adapter (``http2.py``): its limits, its connection
error, the events it adds to ``events.py``'s, and the protocol's constants.

Ring 0: frozen value objects and constants only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

import h2.errors

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead

__all__ = [
    "CONNECTION_SPECIFIC",
    "CONTROL_WINDOW",
    "DRAIN_PING",
    "MAX_STREAM_ID",
    "PREFACE",
    "ErrorCode",
    "Http2Error",
    "Http2Event",
    "Http2Limits",
    "PeerGoAway",
    "PingAcked",
    "StreamCancelled",
    "WindowOpened",
]

#: The client connection preface (RFC 9113 §3.4): HTTP/2 by prior knowledge starts with it.
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

#: RFC 9113 §8.2.2: fields an HTTP/2 message must not carry (``te`` is kept as ``trailers``).
CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)

#: The window over which control frames are counted (SPEC §5.8).
CONTROL_WINDOW: Final = 10.0
#: The largest stream id (2³¹−1): the first GOAWAY of a graceful drain announces it.
MAX_STREAM_ID: Final = 2**31 - 1
#: The PING payload of a drain's first GOAWAY: its ACK says the client saw the GOAWAY.
DRAIN_PING: Final = b"a3sdrain"

ErrorCode = h2.errors.ErrorCodes


@dataclass(frozen=True, slots=True)
class Http2Limits:
    """An entrypoint's ``http2 {}`` block (SPEC §3.7) and the flood limits."""

    max_concurrent_streams: int = 100
    initial_window_size: int = 65535
    connection_window_size: int = 1048576
    max_frame_size: int = 16384
    max_header_list_size: int = 32768
    max_resets_per_second: int = 200
    max_control_frames: int = 10000


class Http2Error(Exception):
    """A connection error: ``code`` went out in a GOAWAY (queued in ``data_to_send``);
    ``reason`` is a short fixed text for logs and metrics (``rapid_reset``, ``control_flood``,
    ``protocol_error``)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} ({code})")
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class StreamCancelled:
    """The client reset ``stream_id`` (RST_STREAM); its exchange must stop."""

    stream_id: int
    code: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """The peer granted send credit on ``stream_id`` (0: on the connection, or on every
    stream, after a SETTINGS change of the initial window). Both adapters report it."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PeerGoAway:
    """The client sent GOAWAY: no new streams; ``code`` non-zero means an error."""

    code: int
    last_stream_id: int


@dataclass(frozen=True, slots=True)
class PingAcked:
    """The client acknowledged our PING (``payload``)."""

    payload: bytes


Http2Event: TypeAlias = (
    RequestHead | BodyChunk | EndOfBody | StreamCancelled | WindowOpened | PeerGoAway | PingAcked
)
