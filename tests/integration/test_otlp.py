"""OTLP export end to end (SPEC §9.4 "Export"): a real in-process ``Gateway`` in front of a test
origin, driven by curl, exporting through the real OTLP/HTTP exporter to a collector played
by this file (trio + h11 on 127.0.0.1, ``POST /v1/traces``, protobuf bodies decoded with
``opentelemetry-proto``). The span that arrives must carry the request's trace id, the span id
the gateway sent upstream in ``traceparent``, the caller's span id as parent, the
attributes, and ERROR for a 5xx; an unsampled request sends nothing.

Needs the ``otel`` extra and curl: without them these tests skip, except under ``CI=true``
where they fail.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h11
import pytest
import trio

from tests.support.gateway import (
    LOCAL,
    GatewayHandle,
    config_text,
    curl,
    need_tool,
    running_gateway,
    server_entry,
)
from tests.support.origin import Fixed, Origin

try:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
        ExportTraceServiceResponse,
    )
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    from a3s_gateway.server.otlp import OtlpExporter
except ImportError:
    if os.environ.get("CI") == "true":
        raise
    pytest.skip("the otel extra is not installed", allow_module_level=True)

pytestmark = pytest.mark.integration

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"


@pytest.fixture(autouse=True)
def need_curl() -> None:
    need_tool("curl", "to send requests through the gateway")


# -- the collector --------------------------------------------------------------------------


@dataclass
class Export:
    """One ``POST`` the collector received."""

    target: bytes
    content_type: bytes | None
    request: ExportTraceServiceRequest


@dataclass
class Collector:
    """An OTLP/HTTP receiver: decodes every POSTed ``ExportTraceServiceRequest`` and answers
    200 with an empty ``ExportTraceServiceResponse``."""

    port: int = 0
    exports: list[Export] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=LOCAL)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                head: h11.Request | None = None
                body = bytearray()
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await stream.receive_some(65536)
                        conn.receive_data(bytes(data))
                        if not data:
                            return
                    elif isinstance(event, h11.Request):
                        head = event
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    else:  # ConnectionClosed
                        return
                assert head is not None
                request = ExportTraceServiceRequest()
                request.ParseFromString(bytes(body))
                content_type = dict(head.headers).get(b"content-type")
                self.exports.append(Export(bytes(head.target), content_type, request))
                self.changed.set()
                self.changed = trio.Event()
                reply = ExportTraceServiceResponse().SerializeToString()
                headers = [
                    (b"content-type", b"application/x-protobuf"),
                    (b"content-length", b"%d" % len(reply)),
                ]
                await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
                await stream.send_all(conn.send(h11.Data(data=reply)))
                await stream.send_all(conn.send(h11.EndOfMessage()))
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    return
                conn.start_next_cycle()

    def spans(self) -> list[Span]:
        return [
            span
            for export in self.exports
            for resource in export.request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]

    async def wait_for_spans(self, count: int) -> list[Span]:
        with trio.fail_after(20):
            while len(self.spans()) < count:
                await self.changed.wait()
        return self.spans()


# -- the gateway, with its exchanges exported ----------------------------------------------


@asynccontextmanager
async def exporting_gateway(
    origin: Origin, collector: Collector
) -> AsyncIterator[tuple[GatewayHandle, OtlpExporter]]:
    """A gateway whose config sets ``otlp_endpoint`` to ``collector``; the exporter is
    closed (its queue exported) when the block ends, by the gateway's drain."""
    observability = (
        "observability {\n"
        f'  otlp_endpoint = "http://{LOCAL}:{collector.port}"\n'
        '  service_name  = "edge-test"\n'
        "}\n"
    )
    config = config_text([server_entry(origin)], more=observability)
    async with running_gateway(config) as gw:
        context = gw.gateway._context
        assert context is not None
        wired = getattr(context.observer, "otlp", None)
        assert isinstance(wired, OtlpExporter)  # app.py built it from otlp_endpoint
        yield gw, wired


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("a")
    await nursery.start(server.serve)
    return server


@pytest.fixture
async def collector(nursery: trio.Nursery) -> Collector:
    server = Collector()
    await nursery.start(server.serve)
    return server


def attributes(span: Span) -> dict[str, object]:
    values: dict[str, object] = {}
    for pair in span.attributes:
        value: AnyValue = pair.value
        kind = value.WhichOneof("value")
        values[pair.key] = value.int_value if kind == "int_value" else value.string_value
    return values


def upstream_ids(origin: Origin, index: int) -> tuple[str, str]:
    """The trace id and span id the origin's ``index``-th request carried in ``traceparent``."""
    traceparent = origin.requests[index].header(b"traceparent")
    assert traceparent is not None
    _, trace, span, _ = traceparent.decode().split("-")
    return trace, span


async def test_the_exported_span_carries_the_ids_on_the_wire(
    origin: Origin, collector: Collector
) -> None:
    origin.on("/broken", Fixed(503, b"down"))
    async with exporting_gateway(origin, collector) as (gw, _):
        sampled = await curl(gw.url("/items/42"), "-H", f"traceparent: 00-{TRACE}-{CALLER}-01")
        unsampled = await curl(gw.url("/quiet"), "-H", f"traceparent: 00-{TRACE}-{CALLER}-00")
        root = await curl(gw.url("/broken"))
    # The drain above (aclose) exported what was queued.
    assert [sampled.response.status, unsampled.response.status] == [200, 200]
    assert root.response.status == 503
    [export] = collector.exports
    assert export.target == b"/v1/traces"
    assert export.content_type == b"application/x-protobuf"
    [resource] = export.request.resource_spans
    service = {a.key: a.value.string_value for a in resource.resource.attributes}
    assert service["service.name"] == "edge-test"
    [scope] = resource.scope_spans
    assert scope.scope.name == "a3s_gateway"

    first, last = scope.spans  # the unsampled exchange sent nothing
    assert first.trace_id.hex() == TRACE
    assert upstream_ids(origin, 0) == (TRACE, first.span_id.hex())
    assert first.parent_span_id.hex() == CALLER
    assert first.kind == Span.SpanKind.SPAN_KIND_SERVER
    assert first.name == "GET main"
    assert first.status.code == Status.StatusCode.STATUS_CODE_UNSET
    assert 0 < first.end_time_unix_nano - first.start_time_unix_nano < 20 * 10**9
    assert attributes(first) == {
        "http.request.method": "GET",
        "url.path": "/items/42",
        "url.scheme": "http",
        "server.address": LOCAL,
        "client.address": LOCAL,
        "http.response.status_code": 200,
        "network.protocol.version": "1.1",
        "a3s.entrypoint": "web",
        "a3s.router": "main",
        "a3s.service": "main",
        "a3s.backend": f"http://{LOCAL}:{origin.port}",
    }

    assert last.trace_id.hex() != TRACE
    assert upstream_ids(origin, 2) == (last.trace_id.hex(), last.span_id.hex())
    assert last.parent_span_id == b""
    assert last.status.code == Status.StatusCode.STATUS_CODE_ERROR
    assert attributes(last)["http.response.status_code"] == 503
    assert last.start_time_unix_nano >= first.end_time_unix_nano


async def test_spans_are_exported_while_the_gateway_runs(
    origin: Origin, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch processor's thread sends on its schedule (here 50 ms instead of 5 s), not
    only at the drain."""
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    async with exporting_gateway(origin, collector) as (gw, exporter):
        result = await curl(gw.url("/x"), "-H", f"traceparent: 00-{TRACE}-{CALLER}-01")
        [span] = await collector.wait_for_spans(1)
        assert exporter.dropped == 0
    assert result.response.status == 200
    assert upstream_ids(origin, 0) == (TRACE, span.span_id.hex())
    assert span.parent_span_id.hex() == CALLER
