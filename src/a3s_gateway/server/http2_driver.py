"""The HTTP/2 connection driver: the read loop, one task per stream, idle timeout and drain.

Ring 1. Nurseries: one per connection (``serve_http2``), holding each stream's exchange task
and the drain's task; the connection's own task reads. Deadlines set here (SPEC §5.5, §5.8):
keep-alive idle (no stream open and nothing read for ``timeouts.idle``: GOAWAY ``NO_ERROR`` and
close); the drain's PING wait (1 s); the bounded close. Each stream's body and write deadlines
are ``Http2Downstream``'s.

Every request stream runs ``handle_request`` in its own task inside its ``Http2Downstream``'s
cancel scope, so a client RST_STREAM cancels that exchange alone (its upstream attempt ends
unclean and the HTTP/1.1 connection it held is closed, never pooled). Streams beyond
``max_concurrent_streams`` are the adapter's to refuse; floods end the connection with GOAWAY
``ENHANCE_YOUR_CALM`` (``protocols/http2.py``), counted in ``a3s_http2_connection_errors``.

Drain (SPEC §5.8): GOAWAY with the largest stream id and a PING; on the PING's ACK (or after
1 s) a second GOAWAY with the highest stream id accepted; streams at or below it finish, then
the connection closes. Streams opened after the GOAWAY are refused.

WebSocket sessions (RFC 8441): an extended CONNECT's stream runs its exchange like any other,
and once it became a tunnel (``Http2Downstream.take_over``) the session's relay runs in that
stream's task; a drain lets it run like any stream. When the connection ends under it (the
client closed or broke it, or a connection error), its tunnels are told first (their client is
gone: the relay sends the upstream its Close 1001 and records the session) and given up to
``TUNNEL_GRACE`` to finish before the connection's nursery is cancelled.

Must not: parse bytes (``protocols/http2.py``) or route and proxy (``exchange/``).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead
from a3s_gateway.protocols.http2 import (
    DRAIN_PING,
    MAX_STREAM_ID,
    ErrorCode,
    Http2Error,
    Http2Event,
    Http2Server,
    PeerGoAway,
    PingAcked,
    StreamCancelled,
    WindowOpened,
)
from a3s_gateway.server.downstream import ClientGone, ExchangeAborted
from a3s_gateway.server.exchange import handle_request
from a3s_gateway.server.http1_downstream import READ_SIZE
from a3s_gateway.server.http2_downstream import Http2Downstream, Http2Link
from a3s_gateway.server.websocket_relay import CLOSE_WAIT

if TYPE_CHECKING:
    from a3s_gateway.runtime.compile import EntrypointRuntime
    from a3s_gateway.server.downstream import ConnInfo
    from a3s_gateway.server.server_context import ServerContext

__all__ = ["serve_http2"]

log: Final = logging.getLogger("a3s_gateway.server")

#: Bound on the last writes and the close (a shielded cleanup always has a deadline).
CLOSE_GRACE: Final = 1.0
#: How long the drain waits for the ACK of its PING before the second GOAWAY.
DRAIN_PING_WAIT: Final = 1.0
#: How long WebSocket sessions over a connection that ended get to finish: the relay's wait
#: for the upstream's Close, and the bound on its cleanup.
TUNNEL_GRACE: Final = CLOSE_WAIT + CLOSE_GRACE


async def serve_http2(
    stream: trio.abc.Stream,
    info: ConnInfo,
    ctx: ServerContext,
    *,
    received: bytes = b"",
    upgraded: tuple[RequestHead, bytes] | None = None,
) -> None:
    """Serve HTTP/2 on ``stream`` until either side ends it; closes ``stream``. ``received``:
    bytes already read from the client (the preface that told us it speaks HTTP/2).
    ``upgraded``: after a ``101`` to ``Upgrade: h2c``, the request (served as stream 1) and
    its ``HTTP2-Settings`` (``h2c_settings``)."""
    entry = ctx.runtime.entrypoints[info.entrypoint]
    adapter = Http2Server(entry.http2)
    link = Http2Link(stream, adapter, entry.body_idle_timeout)
    counts = ctx.http2_connections  # a3s_open_connections{protocol="http2"}
    counts[info.entrypoint] = counts.get(info.entrypoint, 0) + 1
    try:
        async with trio.open_nursery() as nursery:
            connection = _Connection(link, info, ctx, entry, nursery)
            ctx.drain.connections.add(connection)
            try:
                await connection.run(received, upgraded)
            finally:
                ctx.drain.connections.discard(connection)
                nursery.cancel_scope.cancel()
    except Exception:
        log.exception("HTTP/2 connection from %s failed", info.peer_ip)
    finally:
        counts[info.entrypoint] -= 1
        with trio.move_on_after(CLOSE_GRACE) as cleanup:
            cleanup.shield = True
            with contextlib.suppress(ClientGone):
                await link.flush()
            await stream.aclose()


class _Connection:
    """One HTTP/2 connection's streams, and its drain (a ``Drainable``)."""

    __slots__ = (
        "_drained",
        "_draining",
        "_idle",
        "_ping_acked",
        "_tunnels_done",
        "ctx",
        "entry",
        "info",
        "link",
        "nursery",
        "streams",
    )

    def __init__(
        self,
        link: Http2Link,
        info: ConnInfo,
        ctx: ServerContext,
        entry: EntrypointRuntime,
        nursery: trio.Nursery,
    ) -> None:
        self.link = link
        self.info = info
        self.ctx = ctx
        self.entry = entry
        self.nursery: Final = nursery
        self.streams: dict[int, Http2Downstream] = {}
        self._draining = False
        self._ping_acked = trio.Event()
        #: Set when the drain's second GOAWAY went out and no stream is left.
        self._drained = trio.Event()
        self._idle = trio.CancelScope()
        #: Set once no tunnel is left, while the connection's end waits for its tunnels.
        self._tunnels_done: trio.Event | None = None

    async def run(self, received: bytes, upgraded: tuple[RequestHead, bytes] | None) -> None:
        """The read loop: bytes in, events dispatched, the adapter's answers flushed; then,
        when the connection ended under them, its tunnels' end (``_end_tunnels``)."""
        link = self.link
        if upgraded is None:
            link.adapter.initiate()
        else:  # the upgraded request is stream 1, already complete
            head, settings = upgraded
            link.adapter.initiate_upgrade(settings)
            self._start(head)
        if self.ctx.drain.draining:
            self.drain()
        try:
            await self._serve(received)
        except Http2Error as error:
            self.ctx.metrics.http2_connection_error(self.info.entrypoint, error.reason)
            log.debug("HTTP/2 connection from %s ended: %s", self.info.peer_ip, error.reason)
        except (ClientGone, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await self._end_tunnels()

    async def _serve(self, received: bytes) -> None:
        link = self.link
        if received:
            self._receive(received)
        await link.flush()
        while not link.adapter.closed:
            data = await self._read()
            if not data:
                return
            self._receive(data)
            await link.flush()
            if self._drained.is_set():
                return

    async def _end_tunnels(self) -> None:
        """The connection is over: each open tunnel's client is gone (its relay sees its
        stream broken, closes the upstream and ends); wait for them, up to
        ``TUNNEL_GRACE``."""
        tunnels = [down for down in self.streams.values() if down.taken]
        if not tunnels:
            return
        done = self._tunnels_done = trio.Event()
        for down in tunnels:
            down.cancel()
        with trio.move_on_after(TUNNEL_GRACE):
            await done.wait()

    async def _read(self) -> bytes:
        """One read; with no stream open it waits at most ``timeouts.idle`` and then ends
        the connection with GOAWAY (b"" as if the client closed)."""
        stream = self.link.stream
        if self.streams:
            return bytes(await stream.receive_some(READ_SIZE))
        with trio.move_on_after(self.entry.idle_timeout):
            return bytes(await stream.receive_some(READ_SIZE))
        self.link.adapter.close(ErrorCode.NO_ERROR)
        return b""

    def _receive(self, data: bytes) -> None:
        for event in self.link.adapter.receive(data, trio.current_time()):
            self._dispatch(event)

    def _dispatch(self, event: Http2Event) -> None:
        if isinstance(event, RequestHead):
            self._start(event)
        elif isinstance(event, BodyChunk | EndOfBody):
            down = self.streams.get(event.stream_id)
            if down is not None:
                down.deliver(event)
            elif isinstance(event, BodyChunk):  # its exchange is over: discard, reopen
                self.link.adapter.acknowledge(event.stream_id, len(event.data))
        elif isinstance(event, WindowOpened):
            self.link.window_opened(event.stream_id)
        elif isinstance(event, StreamCancelled):
            down = self.streams.get(event.stream_id)
            if down is not None:
                down.cancel()
        elif isinstance(event, PingAcked):
            if event.payload == DRAIN_PING:
                self._ping_acked.set()
        elif isinstance(event, PeerGoAway):
            if event.code:  # the client ended the connection for an error: so do its streams
                for down in self.streams.values():
                    down.cancel()
            else:  # a graceful GOAWAY: the open streams finish, then the connection closes
                self.drain()

    def _start(self, head: RequestHead) -> None:
        entry = self.entry
        down = Http2Downstream(self.link, head, entry.body_idle_timeout, entry.request_body_timeout)
        self.streams[head.stream_id] = down
        self.nursery.start_soon(self._serve_stream, head, down)

    async def _serve_stream(self, head: RequestHead, down: Http2Downstream) -> None:
        """One stream's exchange; whatever happens ends only this stream."""
        try:
            with down.scope:
                await handle_request(head, down, self.info, self.ctx)
        except (ClientGone, ExchangeAborted):
            pass
        except Exception:
            log.exception("HTTP/2 stream from %s failed", self.info.peer_ip)
        finally:
            self._finish(down)
        with contextlib.suppress(ClientGone):
            await self.link.flush()

    def _finish(self, down: Http2Downstream) -> None:
        """The stream's exchange ended: reset it if its response is unfinished, tell the
        client to stop sending a body nobody reads (or into an extended CONNECT's tunnel that
        was refused), give back the window of unread bytes."""
        del self.streams[down.stream_id]
        adapter = self.link.adapter
        self.link.waiting.pop(down.stream_id, None)
        if not down.response_complete:
            if not down.aborted:
                code = ErrorCode.CANCEL if down.cancelled else ErrorCode.INTERNAL_ERROR
                adapter.reset(down.stream_id, code)
        elif not down.request_complete or (down.tunnel and not down.taken):
            adapter.reset(down.stream_id, ErrorCode.NO_ERROR)  # RFC 9113 §8.1: stop sending
        down.discard_rest()
        if self._draining and not self.streams:
            self._drained.set()
        done = self._tunnels_done
        if done is not None and not any(other.taken for other in self.streams.values()):
            done.set()

    # -- drain -----------------------------------------------------------------------------

    def drain(self) -> None:
        """Start the graceful GOAWAY sequence (idempotent, never blocks)."""
        if self._draining:
            return
        self._draining = True
        try:
            self.nursery.start_soon(self._drain)
        except RuntimeError:  # the connection is closing anyway
            return

    async def _drain(self) -> None:
        adapter = self.link.adapter
        adapter.goaway(MAX_STREAM_ID)
        adapter.ping(DRAIN_PING)
        try:
            await self.link.flush()
            with trio.move_on_after(DRAIN_PING_WAIT):
                await self._ping_acked.wait()
            adapter.goaway(adapter.highest_stream)
            await self.link.flush()
        except ClientGone:
            pass
        if not self.streams:
            self._drained.set()
        await self._drained.wait()
        adapter.close(ErrorCode.NO_ERROR)
        self.nursery.cancel_scope.cancel()
