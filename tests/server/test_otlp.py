"""OTLP export of the gateway's spans (SPEC §9.4 "Export"): what ``OtlpExporter`` makes of
finished exchange records, checked with the SDK's ``InMemorySpanExporter`` behind the real
``BatchSpanProcessor``; the queue bound and drop count; the shutdown bound; and the ids that
the exchange (``server/exchange/``) puts on the record (through the connection-driver harness).

Needs the ``otel`` extra: without it these tests skip, except under ``CI=true`` where the
import error fails the run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence

import pytest
import trio
import trio.testing

from a3s_gateway.observability.record import ExchangeRecord
from tests.server.test_connection_driver import _sent_client, read_response, start
from tests.server.test_exchange_record import Capture

try:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, StatusCode

    from a3s_gateway.server.otlp import QUEUE_SIZE, OtlpExporter, traces_url
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("the otel extra is not installed", allow_module_level=True)

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = b"a3ce929d0e0e4736"
CALLER = b"00f067aa0ba902b7"
WALL = 1_700_000_000.5


def make_record(**fields: object) -> ExchangeRecord:
    """A finished, sampled, proxied GET that took 250 ms and ended at ``WALL``."""
    record = ExchangeRecord("web", 10.0)
    record.ended = 10.25
    record.wall = WALL
    record.method = b"GET"
    record.scheme = "https"
    record.host = b"Shop.Example:8443"
    record.path = b"/items/42"
    record.query = b"secret=1"
    record.protocol = "HTTP/1.1"
    record.client_ip = "203.0.113.9"
    record.router = "main"
    record.service = "shop"
    record.backend = "http://10.0.0.1:8080"
    record.status = 200
    record.trace_id = TRACE
    record.span_id = SPAN
    record.parent_span_id = CALLER
    record.sampled = True
    for name, value in fields.items():
        setattr(record, name, value)
    return record


@pytest.fixture
def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def exporter(memory: InMemorySpanExporter) -> Iterator[OtlpExporter]:
    made = OtlpExporter(
        "http://collector.test:4318", "edge-gw", version="9.9.9", span_exporter=memory
    )
    yield made
    made.shutdown()


def exported(exporter: OtlpExporter, memory: InMemorySpanExporter) -> tuple[ReadableSpan, ...]:
    assert exporter.flush()
    return memory.get_finished_spans()


def test_a_continued_trace_is_exported_with_our_ids_and_the_callers_parent(
    exporter: OtlpExporter, memory: InMemorySpanExporter
) -> None:
    exporter.submit(make_record())
    [span] = exported(exporter, memory)
    assert span.context is not None
    assert f"{span.context.trace_id:032x}" == TRACE.decode()
    assert f"{span.context.span_id:016x}" == SPAN.decode()
    assert span.context.trace_flags.sampled
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == CALLER.decode()
    assert span.parent.trace_id == span.context.trace_id
    assert span.parent.is_remote
    assert span.kind is SpanKind.SERVER
    assert span.name == "GET main"
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/items/42",
        "url.scheme": "https",
        "server.address": "shop.example",
        "client.address": "203.0.113.9",
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
        "a3s.entrypoint": "web",
        "a3s.router": "main",
        "a3s.service": "shop",
        "a3s.backend": "http://10.0.0.1:8080",
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.resource.attributes["service.name"] == "edge-gw"
    assert span.resource.attributes["service.version"] == "9.9.9"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "a3s_gateway"


def test_times_come_from_the_wall_clock_at_the_end_minus_the_duration(
    exporter: OtlpExporter, memory: InMemorySpanExporter
) -> None:
    exporter.submit(make_record())
    [span] = exported(exporter, memory)
    assert span.start_time is not None
    assert span.end_time is not None
    # A float Unix time has a resolution of a few hundred nanoseconds at this magnitude.
    assert abs(span.end_time - 1_700_000_000_500_000_000) < 1000
    assert span.end_time - span.start_time == 250_000_000


def test_a_new_root_has_no_parent_and_an_unrouted_request_is_named_by_its_method(
    exporter: OtlpExporter, memory: InMemorySpanExporter
) -> None:
    record = make_record(
        parent_span_id=b"", router="", service="", backend="", status=404, method=b"POST"
    )
    exporter.submit(record)
    [span] = exported(exporter, memory)
    assert span.parent is None
    assert span.name == "POST"
    attributes = dict(span.attributes or {})
    assert attributes["http.response.status_code"] == 404
    assert not {"a3s.router", "a3s.service", "a3s.backend"} & set(attributes)
    assert span.status.status_code is StatusCode.UNSET


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, StatusCode.ERROR), (503, StatusCode.ERROR), (499, StatusCode.UNSET)],
)
def test_a_5xx_is_an_error(
    exporter: OtlpExporter, memory: InMemorySpanExporter, status: int, code: StatusCode
) -> None:
    exporter.submit(make_record(status=status))
    [span] = exported(exporter, memory)
    assert span.status.status_code is code
    assert dict(span.attributes or {})["http.response.status_code"] == status


def test_an_exchange_without_a_response_has_no_status_code(
    exporter: OtlpExporter, memory: InMemorySpanExporter
) -> None:
    exporter.submit(make_record(status=0, error="client_abort", protocol="HTTP/2"))
    [span] = exported(exporter, memory)
    attributes = dict(span.attributes or {})
    assert "http.response.status_code" not in attributes
    assert attributes["network.protocol.version"] == "2"


def test_only_sampled_traced_exchanges_are_exported(
    exporter: OtlpExporter, memory: InMemorySpanExporter
) -> None:
    exporter.submit(make_record(sampled=False))
    exporter.submit(make_record(sampled=False, trace_id=b"", span_id=b""))
    exporter.submit(make_record(span_id=b"1111111111111111"))
    spans = exported(exporter, memory)
    assert [f"{s.context.span_id:016x}" for s in spans if s.context] == ["1111111111111111"]


def test_client_octets_are_shown_as_the_access_log_shows_them(
    exporter: OtlpExporter, memory: InMemorySpanExporter
) -> None:
    exporter.submit(make_record(path=b"/caf\xc3\xa9/\xff"))
    [span] = exported(exporter, memory)
    assert dict(span.attributes or {})["url.path"] == "/café/\\xff"


@pytest.mark.parametrize(
    ("endpoint", "url"),
    [
        ("http://collector:4318", "http://collector:4318/v1/traces"),
        ("http://collector:4318/", "http://collector:4318/v1/traces"),
        ("https://otel.example/v1/traces", "https://otel.example/v1/traces"),
        ("https://otel.example/custom/ingest", "https://otel.example/custom/ingest"),
    ],
)
def test_an_endpoint_without_a_path_gets_the_traces_path(endpoint: str, url: str) -> None:
    assert traces_url(endpoint) == url


@pytest.mark.parametrize("endpoint", ["collector:4318", "grpc://collector:4317", "http://"])
def test_an_endpoint_must_be_an_http_url(endpoint: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        traces_url(endpoint)


class Stalled(SpanExporter):
    """An exporter whose ``export`` waits until released (a slow collector)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.entered = threading.Event()
        self.spans: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        assert self.release.wait(20), "never released"
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class Messages(logging.Handler):
    """Keeps the messages logged to the loggers it is attached to (whatever the suite did to
    the ``a3s_gateway`` logger's propagation)."""

    def __init__(self, *names: str) -> None:
        super().__init__(logging.DEBUG)
        self.loggers = [logging.getLogger(name) for name in names]
        self.levels = [logger.level for logger in self.loggers]
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> Messages:
        for logger in self.loggers:
            logger.addHandler(self)
            logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *_: object) -> None:
        for logger, level in zip(self.loggers, self.levels, strict=True):
            logger.removeHandler(self)
            logger.setLevel(level)


def test_a_full_queue_drops_new_spans_and_counts_them() -> None:
    stalled = Stalled()
    drops: list[int] = []
    exporter = OtlpExporter(
        "http://collector.test:4318",
        "gw",
        span_exporter=stalled,
        on_drop=drops.append,
        queue_size=4,
        schedule_delay=600.0,
    )
    try:
        with Messages("a3s_gateway.otlp", "opentelemetry") as logged:
            for index in range(20):
                exporter.submit(make_record(span_id=b"%016x" % (index + 1)))
        # The processor's thread holds at most one batch (4) in export and 4 more queue.
        assert 12 <= exporter.dropped <= 16
        assert sum(drops) == exporter.dropped
    finally:
        stalled.release.set()
        assert exporter.shutdown()
    assert len(stalled.spans) == 20 - exporter.dropped
    # The SDK's own per-span "queue full" warning never fires: we drop before it would; ours
    # comes once per 10 s.
    assert not [m for m in logged.messages if "Queue full" in m]
    assert sum("OTLP span queue full" in m for m in logged.messages) == 1


def test_shutdown_gives_up_on_a_stuck_collector_within_its_bound() -> None:
    stalled = Stalled()
    exporter = OtlpExporter("http://collector.test:4318", "gw", span_exporter=stalled)
    try:
        exporter.submit(make_record())
        began = time.monotonic()
        assert not exporter.shutdown(timeout=0.3)
        assert time.monotonic() - began < 3.0
        assert stalled.entered.wait(10)
        assert exporter.queued == 0  # the stuck export took the span
        exporter.submit(make_record(span_id=b"2222222222222222"))  # closed: ignored
        assert exporter.queued == 0
    finally:
        stalled.release.set()


async def test_aclose_exports_what_is_queued(memory: InMemorySpanExporter) -> None:
    exporter = OtlpExporter(
        "http://collector.test:4318", "gw", span_exporter=memory, schedule_delay=600.0
    )
    exporter.submit(make_record())
    exporter.submit(make_record(span_id=b"2222222222222222"))
    assert memory.get_finished_spans() == ()
    await exporter.aclose()
    assert len(memory.get_finished_spans()) == 2


def test_the_queue_holds_2048_spans() -> None:
    """SPEC §9.4: queue 2048. With the collector stalled, the processor's thread holds one
    batch (512) and the queue the rest."""
    stalled = Stalled()
    exporter = OtlpExporter(
        "http://collector.test:4318", "gw", span_exporter=stalled, schedule_delay=600.0
    )
    try:
        for index in range(3000):
            exporter.submit(make_record(span_id=b"%016x" % (index + 1)))
        assert QUEUE_SIZE == 2048
        assert 3000 - QUEUE_SIZE - 512 <= exporter.dropped <= 3000 - QUEUE_SIZE
    finally:
        stalled.release.set()
        assert exporter.shutdown()
    assert len(stalled.spans) == 3000 - exporter.dropped


async def test_the_exchange_records_the_parent_and_the_sampling_decision(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The exchange (``server/exchange/prepare.py``) puts the caller's span id and the sampled
    flag on the record, and only the sampled exchanges become spans."""
    h = await start(nursery)
    seen = h.ctx.observer = Capture()
    requests = [
        b"traceparent: 00-" + TRACE + b"-" + CALLER + b"-01\r\n",
        b"traceparent: 00-" + TRACE + b"-" + CALLER + b"-00\r\n",
        b"",
    ]
    for extra in requests:
        seen.finished = trio.Event()
        await h.client.send_all(b"GET /x HTTP/1.1\r\nhost: example.com\r\n" + extra + b"\r\n")
        status, _, _ = await read_response(h.client, _sent_client())
        assert status == 200
        await seen.finished.wait()
    sampled, unsampled, root = seen.records
    assert (sampled.parent_span_id, sampled.sampled) == (CALLER, True)
    assert (unsampled.parent_span_id, unsampled.sampled) == (CALLER, False)
    assert (root.parent_span_id, root.sampled) == (b"", True)  # sample rate 1.0
    assert root.trace_id != TRACE

    memory = InMemorySpanExporter()
    exporter = OtlpExporter("http://collector.test:4318", "gw", span_exporter=memory)
    try:
        for record in seen.records:
            exporter.submit(record)
        spans = exported(exporter, memory)
    finally:
        exporter.shutdown()
    parents = [None if s.parent is None else s.parent.span_id for s in spans]
    assert [s.context.span_id for s in spans if s.context] == [
        int(sampled.span_id, 16),
        int(root.span_id, 16),
    ]
    assert parents == [int(CALLER, 16), None]
    assert [s.name for s in spans] == ["GET all", "GET all"]


@pytest.mark.parametrize(
    ("error", "code"), [("", StatusCode.UNSET), ("no_backend", StatusCode.ERROR)]
)
def test_a_tcp_connection_is_a_span_named_by_its_router(
    exporter: OtlpExporter, memory: InMemorySpanExporter, error: str, code: StatusCode
) -> None:
    record = make_record(
        transport="tcp", method=b"", router="pg", sni="db.example", error=error, status=0
    )
    exporter.submit(record)
    [span] = exported(exporter, memory)
    assert span.name == "tcp pg"
    attributes = dict(span.attributes or {})
    assert attributes["network.transport"] == "tcp"
    assert attributes["server.address"] == "db.example"
    assert attributes["a3s.router"] == "pg"
    assert "http.request.method" not in attributes
    assert span.parent is None
    assert span.status.status_code is code
