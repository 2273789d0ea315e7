"""The data plane's observer: each finished exchange and upstream attempt to the Prometheus
families, the access log and the OTLP span exporter (SPEC §9.1, §9.2, §9.4).

Ring 1 (it holds the access log's writer). ``Observer`` is the ``ExchangeObserver`` that
``app.Gateway`` puts on ``ServerContext.observer``; it runs in the request's task after the
response went out, so it only updates counters and queues a line (``AccessLog.submit`` never
blocks: a full queue drops and counts).

Must not: block, raise, or keep records.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a3s_gateway.observability.gateway_metrics import GatewayMetrics
    from a3s_gateway.observability.record import ExchangeRecord
    from a3s_gateway.server.accesslog_writer import AccessLog, DisabledAccessLog
    from a3s_gateway.server.otlp import OtlpExporter

__all__ = ["Observer"]


class Observer:
    """Metrics and access log behind the ``ExchangeObserver`` interface."""

    __slots__ = ("access_log", "metrics", "otlp")

    def __init__(
        self,
        metrics: GatewayMetrics,
        access_log: AccessLog | DisabledAccessLog,
        otlp: OtlpExporter | None = None,
    ) -> None:
        self.metrics = metrics
        self.access_log = access_log
        #: The span exporter (``otlp_endpoint``, SPEC §9.4); None: spans are not exported.
        self.otlp = otlp

    def finish(self, record: ExchangeRecord) -> None:
        """One finished exchange: its request metrics and its access-log line."""
        self.metrics.observe_exchange(record)
        access_log = self.access_log
        if access_log.enabled:
            access_log.submit(record)
        otlp = self.otlp
        if otlp is not None and record.sampled:
            otlp.submit(record)

    def stream_ended(self, record: ExchangeRecord) -> None:
        """One TCP connection or UDP session ended: its access-log line and, for a sampled TCP
        connection, its span (its counts are in ``ServerContext.streams``, not the HTTP request
        families)."""
        access_log = self.access_log
        if access_log.enabled:
            access_log.submit(record)
        otlp = self.otlp
        if otlp is not None and record.sampled:
            otlp.submit(record)

    def attempt(self, service: str, backend: str, status: int, seconds: float | None) -> None:
        """One upstream attempt: per-backend counts and the upstream response time."""
        self.metrics.observe_attempt(service, backend, status, seconds)

    def middleware(self, name: str, kind: str, outcome: str, seconds: float) -> None:
        """One middleware request side: ``pass`` or ``reject``, and its time."""
        self.metrics.middleware_outcome(name, kind, outcome, seconds)
