"""The ``Upstream`` seam: the backend side of one exchange, whatever the upstream protocol.

Ring 1 (its implementations own trio streams). It mirrors ``server/downstream.py``: the
exchange sends the request's head and body (``EndOfBody.trailers`` for trailers), receives the
response's events (informational heads, the head, body chunks, the end with its trailers), may
take over the raw stream after a protocol switch, and finally releases the exchange, saying
whether it completed cleanly. ``Http1Upstream`` (``upstream/http1_upstream.py``) implements it
over one pooled connection; an HTTP/2 stream implements it next without touching the exchange.

Errors: ``UpstreamGone`` when the transport fails or closes with nothing to say,
``ProtocolViolation`` (from ``protocols``) for an invalid response. Every call runs under the
caller's cancel scopes (connect, response-header and body-idle deadlines belong to the
exchange); none sets a deadline of its own.

Must not: import the exchange (``server/``), decide retries, or map errors to statuses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    import trio

    from a3s_gateway.protocols.events import BodyChunk, EndOfBody, Event, RequestHead

__all__ = ["Handover", "UpgradeUnavailable", "Upstream", "UpstreamGone"]


class UpstreamGone(Exception):  # noqa: N818 -- an event
    """The upstream transport failed (a reset, a failed write) or closed with nothing said;
    ``detail`` says which, for the logs."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class UpgradeUnavailable(Exception):  # noqa: N818 -- an event
    """``take_over`` was called where the protocol cannot hand over its stream: no protocol
    switch happened, the stream was already taken over, or the protocol does not switch (yet).
    Both seams raise it."""


@dataclass(frozen=True, slots=True)
class Handover:
    """A raw stream taken over after a protocol switch, and the bytes already read from it
    that belong to the new protocol (to be relayed first). Whoever takes it closes it."""

    stream: trio.abc.Stream
    leftover: bytes


class Upstream(Protocol):
    """One exchange with one backend: send the request, receive the response, release."""

    @property
    def reused(self) -> bool:
        """The connection served an earlier exchange (SPEC §5.7's stale-reuse rule)."""
        ...

    @property
    def received_any(self) -> bool:
        """Some byte of this exchange's response arrived."""
        ...

    async def send(self, event: RequestHead | BodyChunk | EndOfBody) -> None:
        """Send one piece of the request. Raises ``UpstreamGone``; a failed write poisons the
        connection (never pooled again)."""
        ...

    async def send_batch(self, events: Sequence[RequestHead | BodyChunk | EndOfBody]) -> None:
        """``send`` for several pieces in one write (a head with the whole small body)."""
        ...

    async def receive(self) -> list[Event]:
        """The response events of one read (possibly none while a head is incomplete).
        Raises ``UpstreamGone`` or ``ProtocolViolation``."""
        ...

    def take_over(self) -> Handover:
        """After a ``101`` was received: the raw stream and the bytes read past the response
        head; the connection leaves the pool for good. Raises ``UpgradeUnavailable`` when no
        switch happened."""
        ...

    def release(self, *, clean: bool) -> None:
        """End the exchange: ``clean`` when the request was sent whole and the response read
        to its end with nothing failing; the connection is then reused if its protocol allows.
        Call exactly once, on every path; never blocks."""
        ...
