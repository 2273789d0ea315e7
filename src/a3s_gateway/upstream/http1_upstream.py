"""``Http1Upstream``: the ``Upstream`` seam over one pooled HTTP/1.1 connection (SPEC §5.7).

Ring 1. Owns no nursery and sets no deadline: every call runs under the exchange's scopes.
It writes what the connection's client adapter serialises, feeds what it reads back to the
adapter, poisons the adapter when a write fails (DESIGN.md §3.4: interrupted writes poison
connections) and, on ``release``, returns the connection to its pool, reusable only when the
exchange was clean and the adapter agrees (both messages complete, keep-alive, no error).

A ``101`` to a request that asked for a protocol switch ends HTTP on the connection (the adapter
returns it as a ``ResponseHead`` and parses nothing more). ``take_over`` then hands the stream
and the bytes read past the ``101``'s head to a new owner and takes the connection out of the
pool for good: it detaches the stream (``UpstreamConnection.detach``: the pool can no longer
close it) and releases the emptied connection at once, not reusable, which frees its slot under
``max_conns_per_backend``; the exchange's ``release`` afterwards does nothing.

Must not: decide reusability beyond that rule, map errors to statuses, or retry; touch the
stream after a protocol switch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.events import ProtocolViolation
from a3s_gateway.upstream.seam import Handover, UpgradeUnavailable, UpstreamGone

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import BodyChunk, EndOfBody, Event, RequestHead
    from a3s_gateway.protocols.http1_engines import UpstreamAdapter
    from a3s_gateway.upstream.pool import UpstreamPool
    from a3s_gateway.upstream.pooled_connection import UpstreamConnection

__all__ = ["READ_SIZE", "Http1Upstream"]

#: One read (DESIGN.md §3.5).
READ_SIZE: Final = 65536
_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Http1Upstream:
    """One request/response cycle on ``conn``; ``release`` hands ``conn`` back to ``pool``."""

    __slots__ = ("_adapter", "_conn", "_handed_over", "_pool", "_stream")

    def __init__(self, conn: UpstreamConnection, pool: UpstreamPool) -> None:
        self._conn = conn
        self._pool = pool
        self._stream = conn.stream
        self._adapter: UpstreamAdapter = conn.adapter
        self._handed_over = False

    @property
    def reused(self) -> bool:
        return self._conn.reused

    @property
    def received_any(self) -> bool:
        return self._adapter.received_any

    async def send(self, event: RequestHead | BodyChunk | EndOfBody) -> None:
        await self._write(self._adapter.send(event))

    async def send_batch(self, events: Sequence[RequestHead | BodyChunk | EndOfBody]) -> None:
        adapter = self._adapter
        await self._write(b"".join([adapter.send(event) for event in events]))

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        try:
            await self._stream.send_all(data)
        except BaseException as error:
            self._adapter.send_failed()
            if isinstance(error, _GONE):
                raise UpstreamGone("write failed") from error
            raise

    async def receive(self) -> list[Event]:
        """See ``Upstream.receive``; after a ``101`` it raises ``ProtocolViolation(500)``
        without reading (a caller bug: the stream's bytes are the new protocol's)."""
        if self._adapter.switched:
            raise ProtocolViolation(500, "connection switched protocols")
        try:
            data = await self._stream.receive_some(READ_SIZE)
        except _GONE as error:
            raise UpstreamGone(f"read failed: {error!r}") from error
        if not isinstance(data, bytes):  # sockets give bytes; other streams may not
            data = bytes(data)
        events = self._adapter.receive(data)
        if not events and not data:
            raise UpstreamGone("connection closed")
        return events

    def take_over(self) -> Handover:
        """After a ``101`` was received: the stream and the bytes read past its head, once; the
        connection leaves the pool for good (see the module docstring). Never blocks.

        Raises ``UpgradeUnavailable`` when no ``101`` was received or the stream was already
        taken over.
        """
        if self._handed_over:
            raise UpgradeUnavailable("the stream was already taken over")
        adapter = self._adapter
        if not adapter.switched:
            raise UpgradeUnavailable("no protocol switch happened")
        self._handed_over = True
        conn = self._conn
        handover = Handover(conn.detach(), adapter.take_leftover())
        self._pool.release(conn, reusable=False)  # closes nothing: the stream is detached
        return handover

    def release(self, *, clean: bool) -> None:
        """See ``Upstream.release``; a no-op after ``take_over``, which released already."""
        if self._handed_over:
            return
        adapter = self._adapter
        reusable = clean and adapter.reusable
        if reusable:
            adapter.start_next_cycle()
        self._pool.release(self._conn, reusable=reusable)
