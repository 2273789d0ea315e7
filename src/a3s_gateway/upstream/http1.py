"""``Http1Upstream``: the ``Upstream`` seam over one pooled HTTP/1.1 connection (SPEC §5.7).

Ring 1. Owns no nursery and sets no deadline: every call runs under the exchange's scopes.
It writes what the connection's client adapter serialises, feeds what it reads back to the
adapter, poisons the adapter when a write fails (DESIGN.md §3.4: interrupted writes poison
connections) and, on ``release``, returns the connection to its pool, reusable only when the
exchange was clean and the adapter agrees (both messages complete, keep-alive, no error).

Must not: decide reusability beyond that rule, map errors to statuses, or retry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

import trio

from a3s_gateway.upstream.stream import UpgradeUnavailable, UpstreamGone

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import BodyChunk, EndOfBody, Event, RequestHead
    from a3s_gateway.upstream.connection import UpstreamConnection
    from a3s_gateway.upstream.pool import UpstreamPool
    from a3s_gateway.upstream.stream import Handover

__all__ = ["READ_SIZE", "ClientAdapter", "Http1Upstream"]

#: One read (DESIGN.md §3.5).
READ_SIZE: Final = 65536
_GONE: Final = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class ClientAdapter(Protocol):
    """What this seam needs of an HTTP/1.1 client adapter (any parser engine)."""

    def send(self, event: RequestHead | BodyChunk | EndOfBody) -> bytes: ...

    def receive(self, data: bytes) -> list[Event]: ...

    def send_failed(self) -> None: ...

    @property
    def received_any(self) -> bool: ...

    @property
    def reusable(self) -> bool: ...

    def start_next_cycle(self) -> None: ...


class Http1Upstream:
    """One request/response cycle on ``conn``; ``release`` hands ``conn`` back to ``pool``."""

    __slots__ = ("_adapter", "_conn", "_pool", "_stream")

    def __init__(self, conn: UpstreamConnection, pool: UpstreamPool) -> None:
        self._conn = conn
        self._pool = pool
        self._stream = conn.stream
        self._adapter: ClientAdapter = conn.adapter

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
        """The HTTP/1.1 client adapter refuses ``101`` until WebSocket relaying lands (it then
        hands over its stream and the bytes after the head): no switch can have happened."""
        raise UpgradeUnavailable("the HTTP/1.1 upstream adapter does not switch protocols")

    def release(self, *, clean: bool) -> None:
        adapter = self._adapter
        reusable = clean and adapter.reusable
        if reusable:
            adapter.start_next_cycle()
        self._pool.release(self._conn, reusable=reusable)
