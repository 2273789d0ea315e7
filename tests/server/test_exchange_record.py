"""What the exchange tells its observers (SPEC §9.1, §9.2): one ``ExchangeRecord`` per request
once its response went out, and one ``attempt`` per upstream attempt. Driven over memory
streams on the autojump clock with the connection-driver harness."""

from __future__ import annotations

from typing import cast

import h11
import trio
import trio.testing

from a3s_gateway.middleware import Middleware
from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.peer import Peer
from tests.server.test_connection_driver import (
    GET,
    Recorder,
    _sent_client,
    origin_ok,
    read_response,
    start,
)


class Capture:
    """An observer that keeps what it is shown."""

    def __init__(self) -> None:
        self.records: list[ExchangeRecord] = []
        self.attempts: list[tuple[str, str, int, float | None]] = []
        self.middlewares: list[tuple[str, str, str]] = []
        self.finished = trio.Event()

    def finish(self, record: ExchangeRecord) -> None:
        self.records.append(record)
        self.finished.set()

    def attempt(self, service: str, backend: str, status: int, seconds: float | None) -> None:
        self.attempts.append((service, backend, status, seconds))

    def stream_ended(self, record: ExchangeRecord) -> None:
        self.records.append(record)

    def middleware(self, name: str, kind: str, outcome: str, seconds: float) -> None:
        self.middlewares.append((name, kind, outcome))


async def _read_request(stream: trio.abc.Stream, conn: h11.Connection) -> None:
    """Read one whole request (head and body) with ``conn``."""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.EndOfMessage):
            return


async def origin_slow(stream: trio.abc.Stream) -> None:
    """Answers after 250 ms (virtual) with a 7-byte body."""
    await _read_request(stream, conn := h11.Connection(h11.SERVER))
    await trio.sleep(0.25)
    headers = [(b"content-length", b"7")]
    await stream.send_all(conn.send(h11.Response(status_code=201, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=b"created")))
    await stream.send_all(conn.send(h11.EndOfMessage()))


async def test_a_proxied_request_is_recorded_whole(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_slow)
    seen = h.ctx.observer = Capture()
    await h.client.send_all(
        b"POST /items?x=1 HTTP/1.1\r\nhost: shop.example\r\nuser-agent: t/1\r\n"
        b"content-length: 5\r\n\r\nhello"
    )
    status, _, body = await read_response(h.client, _sent_client())
    await seen.finished.wait()
    assert (status, body) == (201, b"created")
    record = seen.records[0]
    assert (record.entrypoint, record.router, record.service) == ("web", "all", "svc")
    assert record.backend.startswith("http://10.9.0.")
    assert (record.method, record.host, record.path, record.query) == (
        b"POST",
        b"shop.example",
        b"/items",
        b"x=1",
    )
    assert (record.status, record.request_bytes, record.response_bytes) == (201, 5, 7)
    assert record.user_agent == b"t/1"
    assert (record.client_ip, record.peer_ip, record.protocol) == (
        "192.0.2.7",
        "192.0.2.7",
        "HTTP/1.1",
    )
    assert record.attempts == 1
    assert record.error == ""
    upstream = record.upstream_seconds
    assert upstream is not None
    assert 0.25 <= upstream < 0.3
    assert record.duration >= upstream
    assert record.wall > 0
    assert seen.attempts == [("svc", record.backend, 201, upstream)]


async def test_no_route_and_middleware_answers_name_their_cause(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_ok)
    seen = h.ctx.observer = Capture()
    chains = cast("dict[str, tuple[Middleware, ...]]", h.ctx.runtime.chains)
    chains["all"] = (Recorder("gate", [], deny=True),)
    await h.client.send_all(GET)
    status, _, _ = await read_response(h.client, _sent_client())
    await seen.finished.wait()
    record = seen.records[0]
    assert status == record.status == 403
    assert (record.middleware, record.error, record.attempts) == ("gate", "forbidden", 0)
    assert seen.middlewares == [("gate", "Recorder", "reject")]
    assert record.response_bytes > 0
    assert seen.attempts == []


async def test_connect_failures_count_each_attempt(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def refuse(peer: Peer) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        raise ConnectFailed("refused")

    h = await start(nursery, None, dialer=refuse)
    seen = h.ctx.observer = Capture()
    await h.client.send_all(GET)
    status, _, _ = await read_response(h.client, _sent_client())
    await seen.finished.wait()
    record = seen.records[0]
    assert status == record.status == 502
    assert (record.attempts, record.error) == (2, "connect_refused")
    assert record.upstream_seconds is None
    assert [(service, code, seconds) for service, _, code, seconds in seen.attempts] == [
        ("svc", 502, None),
        ("svc", 502, None),
    ]


async def test_a_client_that_goes_away_is_recorded_as_an_abort(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    release = trio.Event()

    async def origin_stalls(stream: trio.abc.Stream) -> None:
        await _read_request(stream, h11.Connection(h11.SERVER))
        await release.wait()

    h = await start(nursery, origin_stalls)
    seen = h.ctx.observer = Capture()
    await h.client.send_all(GET)
    await trio.sleep(1)
    await h.client.aclose()
    await seen.finished.wait()
    record = seen.records[0]
    assert record.status == 0
    assert record.error == "client_abort"
    release.set()


async def test_trace_context_and_request_id_reach_the_upstream_and_the_client(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """SPEC §9.4/§9.5: the incoming trace continues with a new span id whose parent is the
    caller's; the upstream gets the same ids the record shows; an untrusted client's request
    id is replaced and the response carries the gateway's."""
    seen_upstream: list[list[tuple[bytes, bytes]]] = []

    async def origin_headers(stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some(65536)))
            elif isinstance(event, h11.Request):
                seen_upstream.append(list(event.headers))
            elif isinstance(event, h11.EndOfMessage):
                break
        headers = [(b"content-length", b"2")]
        await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
        await stream.send_all(conn.send(h11.Data(data=b"ok")))
        await stream.send_all(conn.send(h11.EndOfMessage()))

    h = await start(nursery, origin_headers)
    seen = h.ctx.observer = Capture()
    trace = b"4bf92f3577b34da6a3ce929d0e0e4736"
    caller = b"00f067aa0ba902b7"
    await h.client.send_all(
        b"GET / HTTP/1.1\r\nhost: x\r\ntraceparent: 00-" + trace + b"-" + caller + b"-01\r\n"
        b"x-request-id: forged-by-client\r\n\r\n"
    )
    status, headers, _ = await read_response(h.client, _sent_client())
    await seen.finished.wait()
    record = seen.records[0]
    assert status == 200
    assert record.trace_id == trace
    assert len(record.span_id) == 16
    assert record.span_id != caller
    upstream = dict(seen_upstream[0])
    assert upstream[b"traceparent"] == b"00-" + trace + b"-" + record.span_id + b"-01"
    assert record.request_id != b"forged-by-client"
    assert len(record.request_id) == 32
    assert upstream[b"x-request-id"] == record.request_id
    assert dict(headers)[b"x-request-id"] == record.request_id
