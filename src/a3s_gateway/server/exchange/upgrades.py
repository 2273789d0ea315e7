"""WebSocket in the exchange (SPEC §5.11, §5.13): the handshake check after routing, the switch
once the upstream answered ``101``, and the multiplexer's own handshake; over HTTP/1.1 and, as
an extended ``CONNECT`` (RFC 8441), over HTTP/2.

Ring 1. Nurseries: none here (the relay's and the multiplexer's are theirs). Deadlines: none
of its own: a session is bounded by the stream idle timeout inside the relay, and the
attempt's response-header scope is lifted once the ``101`` arrived.

The proxied handshake goes upstream as the client sent it (after the middlewares), with the
client's own key; the client gets ``101`` only after the upstream's ``101`` and its
``Sec-WebSocket-Accept`` matched that key (a mismatch is a 502 like any invalid response). The
``101`` carries the upstream's fields (``Sec-WebSocket-Protocol``, ``-Extensions``,
``Set-Cookie``), the sticky cookie and the middlewares' response sides. Both streams are then
taken over from their protocols and relayed raw (``server/websocket_relay.py``); the session's
bytes, close codes and end go to the exchange's record, one access-log line at its end.

An HTTP/2 client's handshake (an extended ``CONNECT``, ``:protocol: websocket``) has no key:
``handshake`` makes one (16 random bytes), the plan sends the upstream an HTTP/1.1 upgrade with
it (``plan.py``), ``switch`` checks the ``101`` against it and answers the client ``200``
without ``Upgrade``, ``Connection`` and ``Sec-WebSocket-Accept`` (RFC 8441 §5); the client's
side of the session is then the HTTP/2 stream itself (``Http2Downstream.take_over``, a
``server/http2_tunnel.py`` stream). Such a session counts as a session in the metrics, but its
connection stays an ``http2`` connection (it carries other streams).

Must not: parse frames (the relay's tracker reads headers only; the multiplexer uses wsproto),
choose backends, or answer errors after the ``101``.
"""

from __future__ import annotations

import math
import secrets
from typing import TYPE_CHECKING, Final

from a3s_gateway.protocols.events import ResponseHead
from a3s_gateway.protocols.headers import strip_response_hop_by_hop
from a3s_gateway.protocols.responses import error_response
from a3s_gateway.protocols.websocket import (
    WEBSOCKET_VERSION,
    HandshakeError,
    accept_value,
    accepts,
    connect_fields,
    new_key,
    websocket_connect,
    websocket_key,
)
from a3s_gateway.server.exchange.failures import UpstreamFailure
from a3s_gateway.server.websocket_relay import SessionStats, relay_websocket
from a3s_gateway.wsmux.session import serve_mux
from a3s_gateway.wsmux.upstream import ServiceOpener

if TYPE_CHECKING:
    from collections.abc import Sequence

    import trio

    from a3s_gateway.protocols.headers import HeaderLine, Headers
    from a3s_gateway.protocols.responses import GeneratedResponse
    from a3s_gateway.server.downstream import Downstream
    from a3s_gateway.server.exchange.context import Exchange
    from a3s_gateway.upstream.seam import Upstream

__all__ = ["handshake", "serve_mux_exchange", "switch"]

_SWITCHING: Final = 101
#: RFC 8441 §5: an HTTP/2 client's WebSocket is open once its CONNECT got a 2xx.
_TUNNEL_OPEN: Final = 200
#: The random bytes of a key the gateway makes for an HTTP/2 client's handshake (RFC 6455 §4.1).
_KEY_NONCE: Final = 16
#: RFC 6455 §4.4: a server that does not speak the requested version says which it does.
_VERSION_FIELDS: Final = [(b"sec-websocket-version", WEBSOCKET_VERSION)]
#: SPEC §5.13: a plain HTTP request to a ``websocket_mux`` service.
_MUX_ONLY: Final = error_response(
    426,
    "upgrade required: this endpoint speaks WebSocket only",
    extra=[(b"upgrade", b"websocket"), *_VERSION_FIELDS],
)
#: The access log's ``error`` by how a session ended (an orderly Close leaves it empty).
_SESSION_ERRORS: Final = {
    "closed": "",
    "idle": "stream_idle",
    "client_gone": "client_abort",
    "upstream_gone": "upstream_reset",
    "shutdown": "shutdown",
}
#: Fields of the client's handshake a multiplexer channel does not pass on (its own
#: handshake has its own key and version).
_CHANNEL_DROPPED: Final = frozenset(
    {
        b"upgrade",
        b"connection",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    }
)


def handshake(ex: Exchange) -> GeneratedResponse | None:
    """After routing: note a WebSocket handshake's key on ``ex`` (``ws_key``: the client's, or
    for an HTTP/2 client one made here), or the answer to a defective one (400, 426 for a
    version other than 13) or to a plain request for a multiplexer (426). None: the request
    goes on."""
    head = ex.head
    key = None
    if head.upgrade:
        try:
            if not head.protocol:
                key = websocket_key(head)
            elif websocket_connect(head):  # RFC 8441: no key from the client, one of ours
                key = new_key(secrets.token_bytes(_KEY_NONCE))
        except HandshakeError as error:
            ex.record.error = "bad_request"
            extra = _VERSION_FIELDS if error.status == 426 else None
            return error_response(error.status, f"bad request: {error.reason}", extra=extra)
    ex.ws_key = key
    if key is None and ex.mux is not None:
        ex.record.error = "bad_request"
        return _MUX_ONLY
    return None


async def switch(
    ex: Exchange,
    up: Upstream,
    down: Downstream,
    response: ResponseHead,
    extra: Sequence[HeaderLine],
    timer: trio.CancelScope,
) -> None:
    """The upstream answered ``101``: check it, send the client its ``101`` (an HTTP/2 client
    its ``200``), then relay the session to its end. Raises ``UpstreamFailure(502)`` (nothing
    sent) for a ``101`` that does not accept the key sent upstream."""
    key = ex.ws_key
    if key is None or not accepts(key, response.headers):
        raise UpstreamFailure(502, "101 without a matching sec-websocket-accept")
    if ex.head.protocol:  # an HTTP/2 client: the stream is open once it got a 2xx
        status, reason = _TUNNEL_OPEN, b""
        headers = connect_fields(response.headers)
    else:
        status, reason = _SWITCHING, response.reason
        headers = strip_response_hop_by_hop(response.headers, keep_upgrade=True)
    if extra:
        headers.extend(extra)
    if ex.chain:
        ex.respond(status, headers)
    await down.send(ResponseHead(status, headers, reason))
    client = down.take_over()
    upstream = up.take_over()
    timer.deadline = math.inf  # the session has its own idle bound
    service = ex.service
    assert service is not None  # a proxied exchange is routed to a service
    entrypoint, router = ex.info.entrypoint, ex.record.router
    _opened(ex, entrypoint, router)
    stats = SessionStats()
    try:
        await relay_websocket(
            client,
            upstream,
            idle=service.stream_idle_timeout,
            stats=stats,
            hub=ex.ctx.relay_hub,
        )
    finally:  # a shutdown's cancellation included: the record says what the session did
        _closed(ex, entrypoint, router)
        _record(ex, stats)


def _opened(ex: Exchange, entrypoint: str, router: str) -> None:
    """A session begins: counted per router, and its connection under ``websocket`` unless it
    is an HTTP/2 stream (that connection carries other streams and stays ``http2``)."""
    ex.ctx.websocket_opened(entrypoint, router, connection=not ex.head.protocol)


def _closed(ex: Exchange, entrypoint: str, router: str) -> None:
    """A session ended: ``_opened``'s counts undone."""
    ex.ctx.websocket_closed(entrypoint, router, connection=not ex.head.protocol)


def _record(ex: Exchange, stats: SessionStats) -> None:
    record = ex.record
    record.websocket = True
    record.request_bytes = stats.bytes_in
    record.response_bytes = stats.bytes_out
    record.ws_close_client = -1 if stats.close_client is None else stats.close_client
    record.ws_close_upstream = -1 if stats.close_upstream is None else stats.close_upstream
    record.error = _SESSION_ERRORS.get(stats.ended, "")


async def serve_mux_exchange(ex: Exchange) -> None:
    """A handshake to a ``websocket_mux`` service, after the request middlewares: the gateway
    answers ``101`` itself and serves the channels (SPEC §5.13) until the client leaves."""
    mux, key = ex.mux, ex.ws_key
    assert mux is not None  # handle.py sends only a multiplexer's requests here
    assert key is not None  # and handshake() only its WebSocket handshakes
    status = _SWITCHING
    headers: Headers = []
    if ex.head.protocol:  # an HTTP/2 client (RFC 8441 §5): a 200 opens the stream's tunnel
        status = _TUNNEL_OPEN
    else:
        headers += [
            (b"upgrade", b"websocket"),
            (b"connection", b"Upgrade"),
            (b"sec-websocket-accept", accept_value(key)),
        ]
    if ex.chain:
        ex.respond(status, headers)
    down = ex.down
    await down.send(ResponseHead(status, headers))
    ex.status = status
    client = down.take_over()
    ctx = ex.ctx
    forwarded = [line for line in ex.headers if line[0] not in _CHANNEL_DROPPED]
    opener = ServiceOpener(
        ex.runtime.services,
        ctx.pool,
        forwarded,
        max_message_bytes=mux.max_message_bytes,
        queue_messages=mux.queue_messages,
    )
    record = ex.record
    record.websocket = True  # a session's line even when a shutdown cuts it (no stats then)
    _opened(ex, ex.info.entrypoint, record.router)
    try:
        stats = await serve_mux(client, mux, opener, ctx.mux_hubs, service=record.service)
    finally:
        _closed(ex, ex.info.entrypoint, record.router)
    record.request_bytes = stats.bytes_in
    record.response_bytes = stats.bytes_out
    record.ws_close_client = -1 if stats.close_client is None else stats.close_client
