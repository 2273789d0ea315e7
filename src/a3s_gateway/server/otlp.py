"""OTLP/HTTP export of the gateway's spans (SPEC §9.4 "Export"), behind the ``otel`` extra.

Ring 1 (a thread of its own, the OpenTelemetry SDK's). Importing this module imports the SDK
and its OTLP/HTTP exporter, so it fails with ``ImportError`` when the ``otel`` extra is not
installed: import it only when ``observability.otlp_endpoint`` is set (``preflight`` reports
the missing packages as a config error before ``run`` gets here).

One SERVER span per sampled exchange, built from its finished ``ExchangeRecord`` with the ids
the gateway already put on the wire (``observability/tracing.py``): trace id, span id (the one
upstreams saw in ``traceparent``) and parent (the caller's span id, absent for a new root).
The SDK's ``Tracer`` always draws span ids from its ``IdGenerator``; the maintainers' answer for
imposed ids is a custom generator primed before each ``start_span`` (opentelemetry-python
issues #2366 and #3091). Our spans are already finished when we see them, so this module builds
the SDK's finished-span type, ``ReadableSpan``, with a ``SpanContext`` of our ids and hands it
to a ``BatchSpanProcessor`` through ``on_end``, the same call a ``Tracer``'s span makes when it
ends. That skips the live span (its lock, attribute validation, the start/end processor calls):
about 4 µs per span instead of about 28 µs through a primed ``Tracer`` (measured with
opentelemetry-sdk 1.45). The export tests decode what the real exporter sends, so a change of
that class in a later SDK shows there.

Times: the record's are trio's clock; the span's are Unix nanoseconds, from ``record.wall`` (the
wall time at the end) minus the exchange's duration. Name ``<METHOD> <router>`` (the method
alone when no router matched); attributes as SPEC §9.4 lists them, an empty value left out;
status ERROR for a 5xx.

Cost and blocking (``submit`` runs on the event loop, from the observer, once per exchange):
building the span and one ``deque`` append. The batch processor's thread encodes and POSTs
batches (``OTLPSpanExporter``, ``requests``). Its queue holds ``QUEUE_SIZE`` spans; when full,
the SDK would silently push the oldest out (and log a warning per span, on the event loop), so
this module keeps its own count of spans handed over minus spans taken by the exporter thread
(always at least the real queue length), drops the new span itself when that reaches the
capacity, and counts it (``dropped``, ``on_drop`` for a metric, a warning at most every 10 s).

Endpoint: ``otlp_endpoint`` is the collector's URL. With no path (``http://collector:4318``)
the OTLP/HTTP traces path ``/v1/traces`` is appended, as the OpenTelemetry SDKs do for
``OTEL_EXPORTER_OTLP_ENDPOINT``; a URL with a path is used as it is. The SDK's ``OTEL_*``
variables (headers, timeout, compression, certificates) still apply.

Lifecycle: built when the gateway starts, ``submit`` per exchange, ``aclose`` (or the blocking
``shutdown``) at the end of the drain: the queue is exported within ``SHUTDOWN_GRACE`` seconds
at most, and a stuck export is abandoned (the SDK's thread is a daemon). Build it in the
process that serves (the workers of ``run --workers N`` are spawned, not forked).

Must not: block or raise in ``submit``, export unsampled spans, or export any attribute SPEC
§9.4 does not list (no headers, no query string).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Final

import trio
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.routing.request import canonical_host

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from opentelemetry.util.types import AttributeValue

    from a3s_gateway.observability.record import ExchangeRecord

__all__ = ["QUEUE_SIZE", "SHUTDOWN_GRACE", "TRACES_PATH", "OtlpExporter", "traces_url"]

log: Final = logging.getLogger("a3s_gateway.otlp")

#: The batch processor's queue (SPEC §9.4).
QUEUE_SIZE: Final = 2048
#: The longest ``shutdown`` waits for the queue to be exported.
SHUTDOWN_GRACE: Final = 5.0
#: The OTLP/HTTP traces path, appended to an endpoint given without a path.
TRACES_PATH: Final = "/v1/traces"
#: The SDK's default export batch (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``).
_SDK_BATCH_SIZE: Final = 512
#: At most one warning about dropped spans per this many seconds.
_WARN_EVERY: Final = 10.0

_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_ERROR: Final = Status(StatusCode.ERROR)
_UNSET: Final = Status(StatusCode.UNSET)
_SCOPE_NAME: Final = "a3s_gateway"


def traces_url(endpoint: str) -> str:
    """Where spans are POSTed: ``endpoint`` plus ``/v1/traces`` when it has no path of its own
    (module docstring). Raises ``ValueError`` for anything but an http(s) URL."""
    url = HttpUrl(endpoint)
    if url.target == "/":
        return endpoint.rstrip("/") + TRACES_PATH
    return endpoint


def _text(raw: bytes) -> str:
    """The client's octets as text, as the access log shows them."""
    return raw.decode("utf-8", "backslashreplace")


class _CountingExporter(SpanExporter):
    """The real exporter, counting the spans the processor's thread takes from its queue."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        #: Spans taken from the queue so far; written by the exporting thread only (the
        #: processor exports under a lock), read by the event loop.
        self.taken = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.taken += len(spans)
        return self.inner.export(spans)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


#: The access-log ``error`` words of a TCP connection that failed on the gateway's side (the
#: span's status is ERROR, as a 5xx is for HTTP).
_STREAM_FAILURES: Final = frozenset(
    {"no_backend", "connect_refused", "connect_timeout", "connect_tls", "upstream_reset"}
)


class OtlpExporter:
    """Sampled exchanges as SERVER spans to an OTLP/HTTP collector (module docstring)."""

    __slots__ = (
        "_capacity",
        "_closed",
        "_counter",
        "_last_warning",
        "_on_drop",
        "_processor",
        "_resource",
        "_scope",
        "_submitted",
        "dropped",
        "endpoint",
    )

    def __init__(
        self,
        endpoint: str,
        service_name: str,
        *,
        version: str = "",
        on_drop: Callable[[int], None] | None = None,
        span_exporter: SpanExporter | None = None,
        queue_size: int = QUEUE_SIZE,
        batch_size: int | None = None,
        schedule_delay: float | None = None,
    ) -> None:
        """``endpoint`` is ``otlp_endpoint`` (``ValueError`` if not an http(s) URL);
        ``span_exporter`` replaces the OTLP/HTTP one (tests); ``batch_size`` and
        ``schedule_delay`` (seconds) default to the SDK's (512 spans, 5 s, or the
        ``OTEL_BSP_*`` variables)."""
        self.endpoint = traces_url(endpoint)
        if span_exporter is None:
            span_exporter = OTLPSpanExporter(endpoint=self.endpoint)
        self._counter = _CountingExporter(span_exporter)
        if batch_size is not None or queue_size < _SDK_BATCH_SIZE:
            # The SDK refuses a batch larger than its queue.
            batch_size = min(batch_size or _SDK_BATCH_SIZE, queue_size)
        self._processor = BatchSpanProcessor(
            self._counter,
            max_queue_size=queue_size,
            max_export_batch_size=batch_size,
            schedule_delay_millis=None if schedule_delay is None else schedule_delay * 1000.0,
        )
        attributes: dict[str, AttributeValue] = {SERVICE_NAME: service_name}
        if version:
            attributes[SERVICE_VERSION] = version
        self._resource = Resource.create(attributes)
        self._scope = InstrumentationScope(_SCOPE_NAME, version or None)
        self._capacity = queue_size
        self._on_drop = on_drop
        #: Spans handed to the processor.
        self._submitted = 0
        #: Spans dropped because the queue was full.
        self.dropped = 0
        self._last_warning = -_WARN_EVERY
        self._closed = False

    @property
    def queued(self) -> int:
        """Spans handed over and not yet taken by the exporting thread (an upper bound on the
        processor's queue length)."""
        return self._submitted - self._counter.taken

    def submit(self, record: ExchangeRecord) -> None:
        """Queue ``record``'s span if it is sampled; never blocks, never raises."""
        if not record.sampled or not record.trace_id or self._closed:
            return
        if self._submitted - self._counter.taken >= self._capacity:
            self._drop()
            return
        try:
            span = self.span(record)
        except Exception:  # a bug here must not fail the request's task
            log.exception("span not exported")
            return
        self._submitted += 1
        self._processor.on_end(span)

    def span(self, record: ExchangeRecord) -> ReadableSpan:
        """The SERVER span of a finished, traced exchange."""
        trace_id = int(record.trace_id, 16)
        context = SpanContext(trace_id, int(record.span_id, 16), False, _SAMPLED)
        parent = None
        if record.parent_span_id:
            parent = SpanContext(trace_id, int(record.parent_span_id, 16), True, _SAMPLED)
        end = int(record.wall * 1e9)
        start = end - int(record.duration * 1e9)
        if record.transport:
            return self._stream_span(record, context, start, end)
        method = _text(record.method)
        status = record.status
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": _text(record.path),
            "url.scheme": record.scheme,
            "network.protocol.version": record.protocol.removeprefix("HTTP/"),
            "a3s.entrypoint": record.entrypoint,
        }
        host = canonical_host(_text(record.host))
        if host:
            attributes["server.address"] = host
        if record.client_ip:
            attributes["client.address"] = record.client_ip
        if status:
            attributes["http.response.status_code"] = status
        if record.router:
            attributes["a3s.router"] = record.router
        if record.service:
            attributes["a3s.service"] = record.service
        if record.backend:
            attributes["a3s.backend"] = record.backend
        return ReadableSpan(
            f"{method} {record.router}" if record.router else method,
            context,
            parent,
            self._resource,
            attributes,
            kind=SpanKind.SERVER,
            status=_ERROR if status >= 500 else _UNSET,
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope,
        )

    def _stream_span(
        self, record: ExchangeRecord, context: SpanContext, start: int, end: int
    ) -> ReadableSpan:
        """The SERVER span of a TCP connection: ``tcp <router>``, with its network facts."""
        attributes: dict[str, AttributeValue] = {
            "network.transport": record.transport,
            "a3s.entrypoint": record.entrypoint,
            "a3s.router": record.router,
            "a3s.service": record.service,
        }
        if record.client_ip:
            attributes["client.address"] = record.client_ip
        if record.sni:
            attributes["server.address"] = record.sni
        if record.backend:
            attributes["a3s.backend"] = record.backend
        failed = record.error in _STREAM_FAILURES
        return ReadableSpan(
            f"{record.transport} {record.router}",
            context,
            None,
            self._resource,
            attributes,
            kind=SpanKind.SERVER,
            status=_ERROR if failed else _UNSET,
            start_time=start,
            end_time=end,
            instrumentation_scope=self._scope,
        )

    def _drop(self) -> None:
        self.dropped += 1
        if self._on_drop is not None:
            self._on_drop(1)
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY:
            self._last_warning = now
            log.warning(
                "OTLP span queue full (%d spans): %d span(s) dropped so far",
                self._capacity,
                self.dropped,
            )

    def flush(self) -> bool:
        """Export everything queued now, in the calling thread (blocks: not on the event
        loop). False once shut down."""
        return self._processor.force_flush()

    def shutdown(self, timeout: float = SHUTDOWN_GRACE) -> bool:
        """Stop taking spans, export the queue and close the exporter, waiting at most
        ``timeout`` seconds (blocks: not on the event loop). True if it finished in time; a
        stuck export is left to its daemon thread. Idempotent."""
        self._closed = True
        closing = threading.Thread(
            target=self._processor.shutdown, name="a3s-otlp-shutdown", daemon=True
        )
        closing.start()
        closing.join(timeout)
        return not closing.is_alive()

    async def aclose(self, grace: float = SHUTDOWN_GRACE) -> None:
        """``shutdown`` from the event loop, in a worker thread; returns within ``grace``
        seconds, or at once when cancelled."""
        self._closed = True
        finished = await trio.to_thread.run_sync(self.shutdown, grace, abandon_on_cancel=True)
        if not finished:
            log.warning("OTLP export did not finish within %.0f s: spans lost", grace)
