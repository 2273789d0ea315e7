"""Stage 5, record: what one exchange and each of its attempts leave for the observers
(metrics, access log, tracing export, SPEC §9) and for passive health (§7.5).

Ring 1 (it reads trio's clock). ``start`` opens the ``ExchangeRecord`` from the head,
``attempt_started`` and ``outcome`` bracket each upstream attempt, ``finish`` completes the
record from the downstream's counts and hands it to the observer once the response went out.

Must not: block, raise, or format anything (the observers do, off the request's path where
they can).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.server.generation import record_passive

if TYPE_CHECKING:
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.runtime.compile import ServiceRuntime
    from a3s_gateway.scaling.service import ServiceScale
    from a3s_gateway.server.downstream import ConnInfo, ObservedDownstream
    from a3s_gateway.server.exchange.context import Exchange
    from a3s_gateway.server.server_context import ServerContext
    from a3s_gateway.services import Backend

__all__ = ["attempt_started", "end_cause", "finish", "outcome", "start"]

#: The ``protocol`` of the access log by the request's HTTP version.
_PROTOCOLS: Final = {b"1.1": "HTTP/1.1", b"1.0": "HTTP/1.0", b"2": "HTTP/2"}


def start(head: RequestHead, info: ConnInfo) -> ExchangeRecord:
    """The record of the exchange ``head`` begins, as far as the head tells."""
    record = ExchangeRecord(info.entrypoint, trio.current_time())
    record.method = head.method
    record.host = head.authority
    record.peer_ip = record.client_ip = info.peer_ip
    record.protocol = _PROTOCOLS.get(head.http_version, "HTTP/1.1")
    if info.tls:
        record.scheme = "https"
        record.tls_version = info.tls_version
        record.sni = info.sni
    return record


def end_cause(error: BaseException) -> str:
    """The ``error`` word for an exchange that ended by an exception: ``shutdown`` when the
    gateway cancelled it (only a scope outside the exchange can: the drain's grace ran out, a
    second signal stopped the gateway, a listener removed by a reload reached its grace), else
    ``client_abort`` (the client went away, or the exchange was aborted)."""
    if isinstance(error, trio.Cancelled):
        return "shutdown"
    if isinstance(error, BaseExceptionGroup):
        # A cancelled nursery (the request-body pump's) raises its tasks' Cancelled as a group.
        _, rest = error.split(trio.Cancelled)
        if rest is None:
            return "shutdown"
    return "client_abort"


def finish(record: ExchangeRecord, down: ObservedDownstream, ctx: ServerContext) -> None:
    """Complete ``record`` from what crossed the downstream and hand it to the observer."""
    record.status = down.status
    record.grpc_status = down.grpc_status
    record.head_sent = down.head_sent
    if not record.websocket:  # a session's bytes are counted by its relay
        record.request_bytes = down.received_bytes
        record.response_bytes = down.sent_bytes
    record.ended = trio.current_time()
    record.wall = time.time()
    observer = ctx.observer
    if observer is not None:
        observer.finish(record)


def attempt_started(record: ExchangeRecord, backend: Backend) -> None:
    """An upstream attempt at ``backend`` begins."""
    record.attempts += 1
    record.backend = backend.url.text
    record.upstream_started = trio.current_time()
    record.upstream_head = -1.0


def outcome(ex: Exchange, service: ServiceRuntime, backend: Backend, status: int) -> None:
    """Feed one finished attempt to the observers (per-backend counts and upstream time) and
    to the service's passive health (SPEC §7.5): transport failures arrive as 502 (refused,
    reset, invalid) or 504 (timeouts)."""
    ctx = ex.ctx
    observer = ctx.observer
    if observer is not None:
        observer.attempt(service.name, backend.url.text, status, ex.record.upstream_seconds)
    scale = service.scale
    if scale is not None and scale.rollout_to is not None:
        _sample(ex, scale, backend, status)
    outliers = service.outliers
    if outliers is None:
        return
    # A gRPC call's verdict is in its trailers (SPEC §5.10): the grpc-status the client got.
    grpc_status = ex.down.grpc_status if ex.grpc and ex.down.grpc_status >= 0 else None
    error = outliers.is_error(status, grpc_status)
    record_passive(service, backend, ctx.metrics, error=error)


def _sample(ex: Exchange, scale: ServiceScale, backend: Backend, status: int) -> None:
    """SPEC §11.8: an attempt at the rollout's ``to`` revision joins its interval's sample
    (an error: status >= 500, transport failures included; the upstream head latency)."""
    live = scale.live
    if live is not None and scale.revision_of[backend.index] == scale.rollout_to:
        live.record(error=status >= 500, latency=ex.record.upstream_seconds)
