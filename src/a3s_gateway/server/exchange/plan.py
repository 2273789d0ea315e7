"""The upstream plan: what every attempt sends upstream (SPEC §5.4), built once per request (once
per retry attempt when middlewares ran), and the per-backend head built from it.

Ring 1 by placement; pure and synchronous (no IO, no clock). ``plan_direct`` serves a router
without middlewares, ``plan_chained`` the request as the request sides left it; both leave the
fields on the ``Exchange``. ``upstream_head`` adds what depends on the backend (its path
prefix, ``Host``), per attempt and for mirror copies.

An HTTP/2 client's WebSocket (an extended ``CONNECT``, RFC 8441) is planned as the HTTP/1.1
upgrade every upstream gets (SPEC §5.11 step 3): the request becomes a bodiless ``GET`` and its
fields gain ``Upgrade: websocket``, ``Connection: upgrade`` and the key ``handshake`` made
(``upgrades.py``), the client's subprotocols, extensions, version and cookies forwarded as for
any handshake.

Must not: do IO or choose backends.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from a3s_gateway.middleware.compress import CompressMiddleware
from a3s_gateway.protocols.events import RequestHead
from a3s_gateway.protocols.headers import (
    ForwardingContext,
    client_ip,
    client_wants_trailers,
    forwarding_headers,
    strip_hop_by_hop,
)
from a3s_gateway.protocols.target import decrement_max_forwards
from a3s_gateway.protocols.websocket import upgrade_fields
from a3s_gateway.routing.request import parse_peer

if TYPE_CHECKING:
    from a3s_gateway.middleware import RequestState
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.runtime.compile import EntrypointRuntime, ServiceRuntime
    from a3s_gateway.server.downstream import ConnInfo
    from a3s_gateway.server.exchange.context import Exchange
    from a3s_gateway.services import Backend

__all__ = ["peer_trusted", "plan_chained", "plan_direct", "upstream_head", "upstream_headers"]


def peer_trusted(info: ConnInfo, entry: EntrypointRuntime) -> bool:
    """Whether the connection's peer is a trusted proxy (its forwarding fields count)."""
    if entry.trust_all:
        return True
    if entry.trusted:  # parse the peer only when some network is trusted
        peer = parse_peer(info.peer_ip)
        return peer is not None and entry.is_trusted(peer)
    return False


def upstream_headers(
    head: RequestHead, info: ConnInfo, entry: EntrypointRuntime, *, websocket: bool = False
) -> tuple[Headers, str]:
    """SPEC §5.4 steps 1–5 (``Host`` is set per backend in ``upstream_head``), and the client
    IP. A ``websocket`` handshake keeps its ``Upgrade`` (SPEC §5.1: the only one forwarded)."""
    received = head.headers
    trusted = peer_trusted(info, entry)
    stripped = strip_hop_by_hop(received, keep_upgrade=websocket)
    client = client_ip(received, info.peer_ip, peer_trusted=trusted, is_trusted=entry.is_trusted)
    forwarding = ForwardingContext(
        peer_ip=info.peer_ip,
        peer_trusted=trusted,
        client_ip=client,
        tls=entry.tls,
        authority=head.authority,
        via_protocol=head.http_version,
        add_via=entry.via,
    )
    headers = forwarding_headers(stripped, forwarding)
    if head.method == b"OPTIONS":
        headers = decrement_max_forwards(headers)
    if client_wants_trailers(received):
        headers.append((b"te", b"trailers"))
    return [line for line in headers if line[0] != b"host"], client


def plan_direct(ex: Exchange) -> None:
    """The plan of a router without middlewares: the request as received (its path sanitised
    when the entrypoint says so)."""
    query = ex.query
    ex.target = ex.path + (b"?" + query if query else b"")
    websocket = ex.ws_key is not None
    headers, client = upstream_headers(ex.head, ex.info, ex.entry, websocket=websocket)
    if websocket and ex.head.protocol:
        headers = _http2_websocket(ex, ex.head, headers)
    ex.record.client_ip = ex.client = client
    trace = ex.trace
    ex.headers = headers if trace is None else trace.apply(headers)


def plan_chained(ex: Exchange, state: RequestState) -> None:
    """The plan once the request sides ran: the head as they changed it, ``X-Forwarded-Prefix``
    after the forwarding rules (so they cannot strip it), a ``Host`` the headers middleware set
    (SPEC §8.9), and the chain's body filter (``compress``)."""
    head = ex.head
    changed = RequestHead(  # not dataclasses.replace: it costs as much as the rest of the plan
        method=state.method,
        target=head.target,
        authority=head.authority,
        headers=state.headers,
        http_version=head.http_version,
        has_body=head.has_body,
        expect_continue=head.expect_continue,
        stream_id=head.stream_id,
    )
    ex.request = changed
    ex.state = state
    ex.status = 0
    ex.target = state.path + (b"?" + state.query if state.query else b"")
    websocket = ex.ws_key is not None
    headers, ex.client = upstream_headers(changed, ex.info, ex.entry, websocket=websocket)
    if websocket and head.protocol:
        headers = _http2_websocket(ex, changed, headers)
    if state.forwarded_prefix is not None:
        headers.append((b"x-forwarded-prefix", state.forwarded_prefix))
    trace = ex.trace
    ex.headers = headers if trace is None else trace.apply(headers)
    hosts = state.values(b"host")
    ex.host = hosts[0] if hosts and hosts[0] != head.authority else None
    ex.body_filter = None
    for middleware in ex.chain:
        if isinstance(middleware, CompressMiddleware):
            ex.body_filter = partial(middleware.body_filter, state)
            break


def _http2_websocket(ex: Exchange, head: RequestHead, headers: Headers) -> Headers:
    """An HTTP/2 client's WebSocket handshake (``head``: the extended ``CONNECT`` as received
    or as the middlewares left it): the request becomes a bodiless ``GET`` (``ex.request``) and
    ``headers`` the fields of an HTTP/1.1 upgrade with the gateway's key."""
    key = ex.ws_key
    assert key is not None  # handshake() made one
    ex.request = RequestHead(
        method=b"GET",
        target=head.target,
        authority=head.authority,
        headers=head.headers,
        http_version=head.http_version,
        stream_id=head.stream_id,
        upgrade=True,
        protocol=ex.head.protocol,
    )
    return upgrade_fields(headers, key)


def upstream_head(
    head: RequestHead,
    target: bytes,
    headers: Headers,
    service: ServiceRuntime,
    backend: Backend,
    override: bytes | None = None,
) -> RequestHead:
    """The request as the backend sees it: origin-form target under the server's path prefix,
    ``Host`` per ``pass_host_header`` (SPEC §5.4 step 6)."""
    prefix = service.prefixes[backend.index]
    if prefix:
        target = prefix.rstrip(b"/") + target
    if override is not None:
        host = override
    elif service.pass_host_header and head.authority:
        host = head.authority
    else:
        url = backend.url
        host = url.host.encode() if ":" not in url.host else b"[" + url.host.encode() + b"]"
        host += b":" + str(url.port).encode()
    return RequestHead(
        method=head.method,
        target=target,
        authority=host,
        headers=[(b"host", host), *headers],
        http_version=b"1.1",
        has_body=head.has_body,
    )
