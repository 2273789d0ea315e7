"""The ``Downstream`` seam: the client side of one exchange, whatever the downstream protocol.

Ring 1 (its implementations own trio streams). An exchange (``server/exchange/``) talks to its
client only through this protocol: it reads the request body, sends the response's head, body
and trailers (``EndOfBody.trailers``), acknowledges request-body bytes once the upstream
accepted them (flow control), aborts its own exchange, and may take over the raw stream after
an upgrade. ``Http1Downstream`` (``server/http1_downstream.py``) implements it today; HTTP/2
streams and WebSocket sessions implement it next without touching the exchange. The wrappers
``RequestBodyTap`` (mirror, body-limit) and ``ReplayDownstream`` (retry) implement it too.

The exceptions here are the seam's, not one driver's: ``ClientGone`` (the client went away),
``ClientTimeout`` (the request body was too slow), ``ExchangeAborted`` (the exchange gave up
its response: raised by the exchange itself, through ``aborted``). A driver decides what they
mean for its connection: HTTP/1.1 closes it, HTTP/2 will reset one stream. ``Handover`` and
``UpgradeUnavailable`` are shared with the ``Upstream`` seam (``upstream/seam.py``).

Must not: import the exchange (it depends on this module, never the reverse), or hold
behaviour beyond the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.upstream.seam import Handover, UpgradeUnavailable

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import BodyChunk, EndOfBody, Informational

__all__ = [
    "ClientGone",
    "ClientTimeout",
    "ConnInfo",
    "Downstream",
    "ExchangeAborted",
    "Handover",
    "ObservedDownstream",
    "UpgradeUnavailable",
    "aborted",
    "with_response_fields",
]


class ClientGone(Exception):  # noqa: N818 -- an event, not a bug
    """The client closed or reset its side (of the connection, or of this stream)."""


class ClientTimeout(Exception):  # noqa: N818 -- an event
    """The client was too slow with its request body: ``error`` is ``client_timeout`` for a
    gap longer than ``timeouts.body_idle``, ``body_timeout`` for a body not complete within
    ``timeouts.request_body`` of its head."""

    def __init__(self, error: str = "client_timeout") -> None:
        super().__init__(error)
        self.error = error


class ExchangeAborted(Exception):  # noqa: N818 -- an event
    """The exchange ended without completing its response (``Downstream.abort`` was called):
    it unwinds the exchange's task up to the driver, which ends what its protocol must."""


@dataclass(frozen=True, slots=True)
class ConnInfo:
    """Who is on the other end of a downstream connection, and where it arrived.

    On a TLS entrypoint (``tls``) the handshake's facts (SPEC §5.9, §9.2): the protocol version
    (``"1.2"``, ``"1.3"``), the server name the client sent, the ALPN protocol agreed, and the
    subject of the client certificate that was verified (RFC 4514 text); ``""`` when absent.
    Plain connections leave them at their defaults (no cost on the plain path).
    """

    entrypoint: str
    peer_ip: str
    peer_port: int
    tls: bool = False
    tls_version: str = ""
    sni: str = ""
    alpn: str = ""
    client_subject: str = ""


class Downstream(Protocol):
    """The client side of one exchange.

    ``receive_body`` raises ``ClientTimeout``, ``ClientGone`` or ``ProtocolViolation`` (a
    malformed body); ``send``/``send_batch`` raise ``ClientGone`` when the client is gone. Both
    are checkpoints. ``take_buffered_body`` is the rest of a request body that already arrived
    with its head (None if not all of it did), so a small body needs no pump task.
    """

    @property
    def http_version(self) -> bytes: ...

    @property
    def request_complete(self) -> bool: ...

    @property
    def response_started(self) -> bool: ...

    async def receive_body(self) -> BodyChunk | EndOfBody: ...

    def take_buffered_body(self) -> list[BodyChunk | EndOfBody] | None: ...

    def acknowledge(self, nbytes: int) -> None:
        """``nbytes`` of request body were accepted by the upstream: the client may send as
        much again (an HTTP/2 WINDOW_UPDATE). Call it only after the upstream write returned.
        A no-op for HTTP/1.1, whose flow control is TCP's."""
        ...

    async def send(self, event: Informational | ResponseHead | BodyChunk | EndOfBody) -> None: ...

    async def send_batch(self, events: Sequence[ResponseHead | BodyChunk | EndOfBody]) -> None: ...

    def close_after_response(self) -> None:
        """This response is the last on the connection (HTTP/1.1 ``Connection: close``)."""
        ...

    def abort(self) -> None:
        """End this exchange unfinished: nothing more of its response is sent. Only this
        exchange: HTTP/1.1 must then close the connection (a response cut short cannot be
        delimited), HTTP/2 resets this stream. Idempotent; never blocks. Use ``aborted``."""
        ...

    def take_over(self) -> Handover:
        """After a protocol switch (a ``101`` sent): the raw stream and the bytes already read
        past the request, for a relay that owns them from now on; the exchange's protocol is
        done with the stream. Raises ``UpgradeUnavailable`` if no switch happened."""
        ...


class ObservedDownstream(Downstream, Protocol):
    """The connection's own downstream, which also counts what crossed it for the record:
    the status of the response head sent and the body bytes read and written."""

    @property
    def status(self) -> int: ...

    @property
    def received_bytes(self) -> int: ...

    @property
    def sent_bytes(self) -> int: ...

    @property
    def head_sent(self) -> float: ...

    @property
    def client_cancelled(self) -> bool:
        """The client cancelled this exchange on its own (an HTTP/2 RST_STREAM)."""
        ...

    @property
    def grpc_status(self) -> int:
        """The ``grpc-status`` sent (trailers, or a trailers-only head); -1: none."""
        ...

    def add_response_field(self, line: tuple[bytes, bytes]) -> None: ...


def with_response_fields(head: ResponseHead, fields: Sequence[tuple[bytes, bytes]]) -> ResponseHead:
    """``head`` carrying ``fields`` (the exchange's own response fields, such as the request
    id), which replace any line of the same name; every downstream adds them the same way."""
    names = {name for name, _ in fields}
    kept = [line for line in head.headers if line[0] not in names]
    return ResponseHead(head.status, [*kept, *fields], head.reason)


def aborted(down: Downstream) -> ExchangeAborted:
    """Abort ``down``'s exchange and return the exception that unwinds it: ``raise
    aborted(down)``. The only way an exchange gives up a response it started."""
    down.abort()
    return ExchangeAborted()
