"""Sending mirror copies (SPEC §7.7): fire-and-forget requests to the mirror service, isolated
from the primary exchange.

Ring 1. Nursery: copies run in ``ServerContext.background`` (a nursery in the gateway's root,
for the gateway's life); each copy is bounded by the mirror's ``timeout`` and at most
``max_concurrency`` run per mirror, so nothing grows without bound. ``MirrorTee`` wraps the
client side of the primary exchange: it copies the request body as the primary reads it (never
waiting for the copy, abandoning it past ``max_body_bytes``) and starts the copy once the body
is complete. The copy's response is read and dropped; its failures are counted and logged at
debug level, never reported to the primary or to passive health.

The copy talks to its backend through the ``Upstream`` seam (``upstream/seam.py``), like the
primary's attempts. Part of the dispatch stage (``dispatch.py`` starts it).

Must not: block or fail the primary exchange, follow redirects, or retry.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.protocols.events import (
    BodyChunk,
    ConnectionClosed,
    EndOfBody,
    ProtocolViolation,
    RequestHead,
)
from a3s_gateway.protocols.grpc import is_grpc
from a3s_gateway.server.exchange.plan import upstream_head
from a3s_gateway.server.tap import RequestBodyTap
from a3s_gateway.services.mirror_sampling import BodyCopy
from a3s_gateway.upstream.connect_errors import ConnectFailed, PoolClosed
from a3s_gateway.upstream.http1_upstream import Http1Upstream
from a3s_gateway.upstream.seam import UpstreamGone

if TYPE_CHECKING:
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.server.downstream import Downstream
    from a3s_gateway.server.server_context import ServerContext
    from a3s_gateway.services.mirror_sampling import MirrorState
    from a3s_gateway.upstream.seam import Upstream

__all__ = ["MirrorCopy", "MirrorTee"]

log: Final = logging.getLogger("a3s_gateway.mirror")
_FRAMING: Final = frozenset({b"content-length", b"transfer-encoding"})


class MirrorCopy:
    """One request to be mirrored: the head as forwarded to the primary, the body copy."""

    __slots__ = ("_ctx", "_state", "body", "client", "head", "headers", "target")

    def __init__(
        self,
        ctx: ServerContext,
        state: MirrorState,
        head: RequestHead,
        target: bytes,
        headers: Headers,
        client: str,
    ) -> None:
        self._ctx = ctx
        self._state = state
        self.head = head
        self.target = target
        self.headers = headers
        self.client = client
        with_body = head.has_body and state.settings.mirror_body
        self.body = BodyCopy(state.settings.max_body_bytes) if with_body else None

    def start(self) -> None:
        """Send the copy in the background (or count why not); never blocks or raises."""
        state = self._state
        body = self.body
        if body is not None and body.overflowed:
            state.count("body_too_large")
            return
        if state.in_flight >= state.settings.max_concurrency:
            state.count("saturated")
            return
        state.in_flight += 1
        try:
            self._ctx.background.start_soon(self._run, body.value() if body is not None else b"")
        except RuntimeError:  # no gateway serves the context (a test's bare one: NOT_SERVING)
            state.in_flight -= 1
            state.count("error")

    async def _run(self, body: bytes) -> None:
        state = self._state
        try:
            with trio.move_on_after(state.settings.timeout) as scope:
                state.count(await self._send(body))
            if scope.cancelled_caught:
                state.count("timeout")
        finally:
            state.in_flight -= 1

    async def _send(self, body: bytes) -> str:
        ctx = self._ctx
        service = ctx.runtime.services.get(self._state.settings.service)
        if service is None:
            return "unresolved"
        backend = service.pick_backend(key=self.client, headers=self.headers)
        if backend is None:
            return "no_backend"
        headers = [line for line in self.headers if line[0] not in _FRAMING]
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        head = RequestHead(
            method=self.head.method,
            target=self.target,
            authority=self.head.authority,
            headers=headers,
            http_version=b"1.1",
            has_body=bool(body),
        )
        peer = service.peers[backend.index]
        with backend.lease():
            up: Upstream
            try:
                if peer.scheme == "h2c" or is_grpc(self.head):  # as the primary goes (§5.7)
                    up = await ctx.h2pool.open_stream(peer, service.pool)
                else:
                    up = Http1Upstream(await ctx.pool.acquire(peer, service.pool), ctx.pool)
            except (ConnectFailed, PoolClosed) as error:
                log.debug("mirror to %s: %s", backend.url.text, error)
                return "error"
            clean = False
            try:
                request = upstream_head(head, self.target, headers, service, backend)
                await up.send_batch([request, BodyChunk(body), EndOfBody()] if body else [request])
                await _read_response(up)
                clean = True
            except (UpstreamGone, ProtocolViolation) as error:
                log.debug("mirror to %s failed: %s", backend.url.text, error)
                return "error"
            finally:
                up.release(clean=clean)
        return "sent"


async def _read_response(up: Upstream) -> None:
    """Read and drop the response, bounded by the mirror's timeout. Raises ``UpstreamGone``
    when the connection ends before the response does."""
    while True:
        for event in await up.receive():
            if isinstance(event, EndOfBody):
                return
            if isinstance(event, ConnectionClosed):
                raise UpstreamGone("connection closed")


class MirrorTee(RequestBodyTap):
    """The primary exchange's ``Downstream``, with the request body copied for the mirror.

    The copy starts when the request body is complete (at once for a request without one).
    """

    __slots__ = ("_copy", "_started")

    def __init__(self, down: Downstream, copy: MirrorCopy) -> None:
        super().__init__(down)
        self._copy = copy
        self._started = False
        if down.request_complete:
            self._start()

    def _start(self) -> None:
        if not self._started:
            self._started = True
            self._copy.start()

    def _see(self, event: BodyChunk | EndOfBody) -> None:
        body = self._copy.body
        if isinstance(event, BodyChunk):
            if body is not None:
                body.add(event.data)
        else:
            self._start()
