"""A routed TCP connection: tcp-filter, TLS termination or passthrough, backend selection with
connect attempts and failover, then the relay (SPEC §6.1 steps 2–4, §6.2, §6.4).

Ring 1. Nurseries: none of its own (``tcp_relay.py`` owns the relay's). Deadlines: the TLS
handshake is bounded by ``timeouts.handshake`` (``server/tls.py``), each connect attempt by the
service's ``connect_timeout``; the relay by ``timeouts.idle``. The listener (``listeners.py``)
has already read any PROXY header and peeked at the ClientHello, and chosen the router; the
bytes it read come in as ``prefix`` and reach the backend first (passthrough, plaintext) or the
TLS engine (termination), unchanged.

Selection follows the HTTP path's rules without a request: the service's strategy, with the
client IP as ``consistent-hash`` key (sticky cookies do not apply), panic mode, up to
``connect_attempts`` backends, then the failover service when no backend could be reached. A
connect failure is a passive-health error and a connect a success (SPEC §6.3); the backend's
in-flight count is held for the whole connection. One access-log line (``type`` ``tcp``) per
connection, with the bytes each way.

Must not: read or interpret the relayed bytes.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.observability.tracing import start_span
from a3s_gateway.routing.request import parse_peer
from a3s_gateway.server.generation import record_passive, selection_panic
from a3s_gateway.server.tcp_relay import RelayStats, relay_tcp
from a3s_gateway.server.tls import handshake
from a3s_gateway.streams import PrefixedStream
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.dialer import dial

if TYPE_CHECKING:
    from a3s_gateway.routing.tcp import TcpRoute
    from a3s_gateway.runtime.compile import EntrypointRuntime, RuntimeConfig, ServiceRuntime
    from a3s_gateway.server.downstream import ConnInfo
    from a3s_gateway.server.server_context import ServerContext
    from a3s_gateway.server.tls import Terminator
    from a3s_gateway.services import Backend
    from a3s_gateway.services.backend import Lease
    from a3s_gateway.streams import RawSocketStream

__all__ = ["note_rejection", "serve_tcp"]

log: Final = logging.getLogger("a3s_gateway.server")

#: Rejected connections are summarised in the log at most this often (seconds).
_REPORT_EVERY: Final = 60.0
#: The access log's ``error`` word for each way a relay ends (``closed`` is no error).
_ENDINGS: Final = {
    "closed": "",
    "idle": "idle_timeout",
    "client_reset": "client_abort",
    "upstream_reset": "upstream_reset",
    "shutdown": "shutdown",
}


def note_rejection(ctx: ServerContext, name: str, reason: str) -> None:
    """Count a connection closed without a byte (SPEC §6.4), log it at debug level, and at
    most once a minute per entrypoint and reason an info summary."""
    key = (name, reason)
    count = ctx.rejected_connections.get(key, 0) + 1
    ctx.rejected_connections[key] = count
    log.debug("connection on %s rejected: %s", name, reason)
    now = trio.current_time()
    last_time, last_count = ctx.rejection_reports.get(key, (-_REPORT_EVERY, 0))
    if now - last_time >= _REPORT_EVERY:
        ctx.rejection_reports[key] = (now, count)
        log.info(
            "entrypoint %s rejected %d connection(s) (%s) in the last minute",
            name,
            count - last_count,
            reason,
        )


class _Connected:
    """An upstream connection and the lease on its backend."""

    __slots__ = ("backend", "lease", "stream")

    def __init__(self, stream: trio.abc.Stream, backend: Backend, lease: Lease) -> None:
        self.stream = stream
        self.backend = backend
        self.lease = lease


async def serve_tcp(
    stream: RawSocketStream,
    prefix: bytes,
    info: ConnInfo,
    entry: EntrypointRuntime,
    route: TcpRoute,
    ctx: ServerContext,
    terminator: Terminator | None,
    sni: str = "",
) -> None:
    """Serve one connection that ``route`` took (module docstring); closes ``stream``."""
    runtime = ctx.runtime
    record = ExchangeRecord(entry.name, trio.current_time())
    record.transport = "tcp"
    record.scheme = "tcp"
    record.protocol = ""
    record.router, record.service = route.name, route.service
    record.client_ip = record.peer_ip = info.peer_ip
    record.sni = sni
    tracing = runtime.observability
    if tracing.tracing:  # a new root span per connection (SPEC §9.4: ``tcp <router>``)
        span = start_span(None, ctx.rng, tracing.sample_rate)
        record.trace_id, record.span_id, record.sampled = span.trace_id, span.span_id, span.sampled
    with contextlib.ExitStack() as tickets:
        address = parse_peer(info.peer_ip)
        for name in route.middlewares:
            tcp_filter = runtime.tcp_filters.get(name)
            ticket = tcp_filter.admit(address) if tcp_filter is not None else None
            if ticket is None:
                stream.close_nowait()
                note_rejection(ctx, entry.name, "tcp_filter")
                return
            tickets.enter_context(ticket)
        client: trio.abc.Stream = stream
        if terminator is not None and not route.tls_passthrough:
            transport = PrefixedStream(stream, prefix) if prefix else stream
            done = await handshake(transport, terminator, info, entry, ctx.metrics)
            if done is None:
                return
            client, info = done
            prefix = b""
            record.tls_version, record.sni = info.tls_version, info.sni or sni
        try:
            await _proxy(client, prefix, entry, route, ctx, runtime, record)
        finally:
            record.ended = trio.current_time()
            record.wall = time.time()
            observer = ctx.observer
            if observer is not None:
                observer.stream_ended(record)


async def _proxy(
    client: trio.abc.Stream,
    prefix: bytes,
    entry: EntrypointRuntime,
    route: TcpRoute,
    ctx: ServerContext,
    runtime: RuntimeConfig,
    record: ExchangeRecord,
) -> None:
    """Connect to a backend of the route's service (or its failover) and relay."""
    connected = None
    service = runtime.services.get(route.service)
    if service is not None:
        connected = await _connect(ctx, service, record, primary=True)
        if connected is None and service.failover is not None:
            fallback = runtime.services.get(service.failover)
            if fallback is not None:
                reason = "no_backend" if record.attempts == 0 else "connect_failed"
                ctx.metrics.failover(service.name, reason)
                ctx.failover_requests += 1
                record.service = fallback.name
                connected = await _connect(ctx, fallback, record, primary=False)
    if connected is None:
        if not record.error:
            record.error = "no_backend"
        with trio.move_on_after(1.0) as cleanup:
            cleanup.shield = True
            await trio.aclose_forcefully(client)
        return
    record.error = ""
    streams = ctx.streams
    streams.tcp_opened(entry.name, route.name)
    stats = RelayStats()
    try:
        await relay_tcp(
            client,
            connected.stream,
            leftover=prefix,
            idle=entry.tcp_idle_timeout,
            stats=stats,
            hub=ctx.relay_hub,
        )
    finally:
        connected.lease.release()
        streams.tcp_closed(entry.name, route.name, stats.bytes_in, stats.bytes_out)
        record.request_bytes, record.response_bytes = stats.bytes_in, stats.bytes_out
        record.error = _ENDINGS.get(stats.ended, stats.ended)


async def _connect(
    ctx: ServerContext, service: ServiceRuntime, record: ExchangeRecord, *, primary: bool
) -> _Connected | None:
    """Up to ``connect_attempts`` backends of ``service``, each within ``connect_timeout``;
    the first that connects, or None."""
    panic = selection_panic(service, ctx.metrics, primary=primary)
    tried: list[Backend] = []
    key = record.client_ip
    for _ in range(service.connect_attempts):
        backend = service.balancer.pick(exclude=tried, key=key, panic=panic)
        if backend is None:
            break
        tried.append(backend)
        record.attempts += 1
        record.backend = backend.url.text
        lease = backend.lease()
        reason = ""
        upstream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(service.connect_timeout):
                upstream = await dial(service.peers[backend.index], alpn=())
        except trio.TooSlowError:
            reason = "timeout"
        except ConnectFailed as error:
            reason = "tls" if error.reason == "tls" else "refused"
            log.info("connect to %s failed: %s", backend.url.text, error)
        except BaseException:
            lease.release()
            raise
        if upstream is not None:
            _passive(ctx, service, backend, status=0)
            return _Connected(upstream, backend, lease)
        lease.release()
        record.error = f"connect_{reason}"
        ctx.metrics.connect_error(service.name, backend.url.text, reason)
        _passive(ctx, service, backend, status=504 if reason == "timeout" else 502)
    return None


def _passive(ctx: ServerContext, service: ServiceRuntime, backend: Backend, *, status: int) -> None:
    """Feed one connect outcome to the service's passive health (SPEC §6.3, §7.5): a failure
    counts as the status an HTTP request would have got (504 for a timeout, else 502), so
    ``error_status_codes`` decides for TCP as it does for HTTP; 0 is a connect."""
    outliers = service.outliers
    if outliers is not None:
        error = status != 0 and outliers.is_error(status)
        record_passive(service, backend, ctx.metrics, error=error)
