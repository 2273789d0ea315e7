"""``Http2Tunnel``: one HTTP/2 stream as a byte stream, for a WebSocket carried by an extended
``CONNECT`` (RFC 8441) once its ``200`` went out (SPEC §5.11).

Ring 1. Nurseries: none. Deadlines: none of its own: a read waits for the client's next DATA as
long as it takes (the WebSocket relay's idle watch bounds a session), and a write waits for send
credit as ``Http2Downstream`` does (within the entrypoint's body idle gap, then the stream is
reset). ``Http2Downstream.take_over`` makes one and hands it to the relay
(``server/websocket_relay.py``) as the client's side of the session, so that the relay copies
frames between an HTTP/2 stream and an upstream's TCP connection as it does between two TCP
connections.

Mapping (RFC 8441 §5: END_STREAM is the TCP FIN, RST_STREAM the TCP reset):

- ``receive_some`` returns the payload of the client's next DATA frames (several queued ones
  joined, up to ``max_bytes``), and ``b""`` once the client ended the stream (END_STREAM).
  Flow control: the bytes a read returned are acknowledged to the client (its windows reopen,
  a WINDOW_UPDATE) when the next read is asked for, which the relay does only once it wrote the
  last read upstream; so the client never has more in flight than one stream window, and a
  backend that stops reading stops the client.
- ``send_all`` sends DATA within the client's windows and ``max_frame``, waiting for credit.
- ``send_eof`` ends the gateway's side of the stream (END_STREAM).
- ``aclose``: after ``send_eof`` the client is told to stop sending (RST_STREAM ``NO_ERROR``,
  RFC 9113 §8.1), unless it ended its side too (the stream is then closed and nothing is sent);
  before it, the stream is reset with ``CANCEL`` (the session did not end cleanly).
- The client's RST_STREAM, or the end of its connection, is a broken stream
  (``trio.BrokenResourceError`` from the next read or write), never a cancellation of the
  relay's task: the relay then ends the session as for a client that went away.

Must not: parse frames or know WebSocket (the relay does), or touch the connection beyond the
one stream (``TunnelSide``, which ``Http2Downstream`` implements, is all it sees).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol

import trio

from a3s_gateway.protocols.events import BodyChunk, EndOfBody
from a3s_gateway.server.downstream import ClientGone

if TYPE_CHECKING:
    from collections import deque

__all__ = ["Http2Tunnel", "TunnelSide"]

#: The most one read returns when the caller names no limit (the relay asks for 64 KiB).
DEFAULT_READ: Final = 65536


class TunnelSide(Protocol):
    """What a tunnel needs of its HTTP/2 stream (``Http2Downstream`` implements it)."""

    @property
    def inbound(self) -> deque[BodyChunk | EndOfBody]:
        """The client's DATA (and its end) received and not yet read, in order."""
        ...

    def acknowledge(self, nbytes: int) -> None:
        """``nbytes`` read were handed on: the client may send as much again."""
        ...

    async def wait_data(self) -> None:
        """Flush, then wait until ``inbound`` holds something (a checkpoint); ``ClientGone``
        when the client reset the stream (or its connection ended) with nothing queued."""
        ...

    async def send_data(self, data: bytes) -> None:
        """``data`` as DATA within the client's windows, flushed; ``ClientGone``."""
        ...

    async def end_data(self) -> None:
        """END_STREAM, flushed; ``ClientGone``."""
        ...

    async def close_tunnel(self) -> None:
        """The tunnel is done: RST_STREAM as the module docstring says; never raises."""
        ...


class Http2Tunnel(trio.abc.HalfCloseableStream):
    """One HTTP/2 stream as a ``trio`` byte stream (see the module docstring)."""

    def __init__(self, side: TunnelSide) -> None:
        self._side = side
        #: Bytes the last read returned, acknowledged when the next read is asked for.
        self._held = 0
        #: The client ended its side (END_STREAM read): every read returns ``b""``.
        self._eof_received = False
        self._eof_sent = False
        self._closed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The client's next bytes (``b""`` after its END_STREAM); acknowledges the previous
        read's first. Raises ``trio.BrokenResourceError`` once the client reset the stream."""
        if self._closed:
            raise trio.ClosedResourceError("the tunnel is closed")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        side = self._side
        if self._held:
            side.acknowledge(self._held)
            self._held = 0
        if self._eof_received:
            await trio.lowlevel.checkpoint()
            return b""
        try:
            await side.wait_data()
        except ClientGone as error:
            raise trio.BrokenResourceError("the client reset the stream") from error
        data = self._take(side.inbound, max_bytes or DEFAULT_READ)
        self._held = len(data)
        return data

    def _take(self, inbound: deque[BodyChunk | EndOfBody], limit: int) -> bytes:
        """Up to ``limit`` bytes from the front of ``inbound`` (a DATA payload longer than the
        room left is split); the END_STREAM when it comes first."""
        pieces: list[bytes] = []
        size = 0
        while inbound and size < limit:
            event = inbound[0]
            if isinstance(event, EndOfBody):
                if not pieces:
                    inbound.popleft()
                    self._eof_received = True
                break
            data = event.data
            room = limit - size
            if len(data) > room:
                pieces.append(data[:room])
                inbound[0] = BodyChunk(data[room:], event.stream_id)
                size = limit
                break
            inbound.popleft()
            pieces.append(data)
            size += len(data)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """``data`` to the client as DATA, within its windows. Raises
        ``trio.ClosedResourceError`` after ``send_eof`` or ``aclose``,
        ``trio.BrokenResourceError`` when the stream or its connection is gone."""
        if self._closed or self._eof_sent:
            raise trio.ClosedResourceError("the tunnel's sending side is closed")
        if not data:
            await trio.lowlevel.checkpoint()
            return
        try:
            await self._side.send_data(bytes(data))
        except ClientGone as error:
            raise trio.BrokenResourceError("the client's stream is gone") from error

    async def wait_send_all_might_not_block(self) -> None:
        """A checkpoint: whether a write blocks depends on the client's window, which only the
        write itself waits for."""
        if self._closed:
            raise trio.ClosedResourceError("the tunnel is closed")
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        """End the gateway's side of the stream (END_STREAM); idempotent."""
        if self._closed:
            raise trio.ClosedResourceError("the tunnel is closed")
        if self._eof_sent:
            await trio.lowlevel.checkpoint()
            return
        self._eof_sent = True
        try:
            await self._side.end_data()
        except ClientGone as error:
            raise trio.BrokenResourceError("the client's stream is gone") from error

    async def aclose(self) -> None:
        """Close the tunnel: RST_STREAM ``NO_ERROR`` after ``send_eof`` (unless the stream is
        closed already), else ``CANCEL``; idempotent, never raises for a gone stream."""
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        await self._side.close_tunnel()
        await trio.lowlevel.cancel_shielded_checkpoint()
