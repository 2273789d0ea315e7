"""The protocol-neutral event vocabulary between the sans-IO adapters and the trio shell.

Ring 0: frozen, slotted value objects only; no trio, sockets, TLS, clocks or logging.

Every adapter (``http1.py``, ``http2.py``) turns received bytes into these events and these
events into bytes to send, so the drivers (``server/http1_driver.py``, ``http2_driver.py``) and
``server/exchange/`` speak one vocabulary whatever the wire protocol (DESIGN.md §3.2). Events
carry a ``stream_id``: HTTP/1.1 uses ``0`` for the one exchange in progress; HTTP/2 uses the
stream's id.

Header lists are h11's representation (``list[tuple[bytes, bytes]]``) with **lower-case**
names and values as received; ``protocols/headers.py`` holds the forwarding rules over them.
Must not: hold behaviour. An event is a fact about the wire, not an instruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from a3s_gateway.protocols.headers import Headers

__all__ = [
    "BodyChunk",
    "ConnectionClosed",
    "EndOfBody",
    "Event",
    "Informational",
    "ProtocolViolation",
    "RequestHead",
    "ResponseHead",
]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A request's head, validated by the adapter that produced it.

    ``target`` is the request-target exactly as received (origin-form ``/a?b``, absolute-form
    ``http://h/a``, authority-form ``h:443`` or ``*``); ``authority`` is the routing authority:
    the absolute-form target's authority if there is one, else the ``Host`` value (``:authority``
    on HTTP/2), as received, port included (SPEC §5.4). ``http_version`` is ``b"1.0"``,
    ``b"1.1"`` or ``b"2"``. ``expect_continue`` is true when the client sent
    ``Expect: 100-continue`` and waits for it before sending the body.
    """

    method: bytes
    target: bytes
    authority: bytes
    headers: Headers
    http_version: bytes = b"1.1"
    #: The request has a body to follow (``BodyChunk``s then ``EndOfBody``); false means the
    #: adapter will emit ``EndOfBody`` without any chunk.
    has_body: bool = False
    expect_continue: bool = False
    stream_id: int = 0
    #: An HTTP/1.1 ``GET`` without a body that asks for a protocol switch (``Connection:
    #: upgrade`` and an ``Upgrade`` list; ``http1_upgrade.asks_for_upgrade``), or an HTTP/2
    #: extended ``CONNECT`` (RFC 8441, ``protocol`` below): the exchange looks for a WebSocket
    #: handshake only then.
    upgrade: bool = False
    #: An HTTP/2 extended ``CONNECT``'s ``:protocol`` (RFC 8441 §4), lower-cased, such as
    #: ``b"websocket"``; empty for every other request (a plain ``CONNECT`` included).
    protocol: bytes = b""


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A final response's head (status 200–599, or 101 for a relayed upgrade)."""

    status: int
    headers: Headers
    reason: bytes = b""
    http_version: bytes = b"1.1"
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class Informational:
    """A 1xx response other than 101 (e.g. ``100 Continue``, ``103 Early Hints``)."""

    status: int
    headers: Headers
    reason: bytes = b""
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class BodyChunk:
    """Some bytes of a message body, in order; never empty."""

    data: bytes
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class EndOfBody:
    """The body is complete; ``trailers`` holds trailer fields (lower-case names), if any."""

    trailers: Headers = field(default_factory=list)
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its sending side (EOF) between messages, with nothing half-received.

    EOF in the middle of a message is a ``ProtocolViolation`` instead.
    """

    stream_id: int = 0


#: Everything an adapter's ``receive`` can return.
Event: TypeAlias = (
    RequestHead | ResponseHead | Informational | BodyChunk | EndOfBody | ConnectionClosed
)


class ProtocolViolation(Exception):  # noqa: N818 -- a fact about the peer, not our error
    """The peer broke the protocol (or a configured limit); the only exception adapters raise.

    ``status`` is the response the gateway should send if it still can (400, 408, 414, 431, 501,
    505; 502 for an upstream's reply); ``reason`` is a short, fixed, client-safe text such as
    ``"conflicting content-length and transfer-encoding"`` (it never echoes peer bytes). After a
    violation the connection is not reused: the caller answers (if no response started) and
    closes.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason
