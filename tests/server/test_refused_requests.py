"""Requests refused while they are read, and the request-body deadline (issue #14, items 5, 6a
and 6c), over memory streams on the autojump clock (DESIGN.md §3.6).

- ``Http1Downstream.receive_body``: one scope per wait whose deadline is the nearer of the body
  idle gap and ``timeouts.request_body`` (request head → end of its body); ``ClientTimeout``
  says which ran out.
- ``serve_http1``: every refusal that got a response is handed to the observer as an
  ``ExchangeRecord``; a malformed request pipelined behind a good one gets its 400; a trickled
  body gets a 408 at the deadline; a silent connection still closes without a record.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import h11
import pytest
import trio
import trio.testing

from a3s_gateway.config.load import load_config_text
from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead
from a3s_gateway.protocols.http1 import Http1Server
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.server.downstream import ClientTimeout, ConnInfo
from a3s_gateway.server.http1_downstream import Http1Downstream
from a3s_gateway.server.http1_driver import serve_http1
from a3s_gateway.server.server_context import ServerContext
from a3s_gateway.upstream.peer import Peer
from a3s_gateway.upstream.pool import UpstreamPool
from tests.server.test_connection_driver import origin_ok, read_all, read_response
from tests.server.test_exchange_record import Capture

CONFIG = """
entrypoints "web" {
  address = "127.0.0.1:8080"
  timeouts {
    idle         = "5s"
    request_head = "3s"
    body_idle    = "4s"
    request_body = "10s"
  }
}
routers "all" {
  rule    = "PathPrefix(`/`)"
  service = "svc"
}
services "svc" {
  load_balancer {
    servers = [{ url = "http://10.9.0.1:80" }]
  }
}
"""


# -- the deadline logic of one downstream -----------------------------------------------------


async def downstream(
    request_body: float, body_idle: float = 4.0
) -> tuple[Http1Downstream, trio.abc.Stream]:
    """A downstream whose exchange has just started on a POST with a 100-byte body."""
    ours, theirs = trio.testing.memory_stream_pair()
    down = Http1Downstream(ours, Http1Server(), body_idle, request_body)
    await theirs.send_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n")
    await down.fill()
    head = down.pending.popleft()
    assert isinstance(head, RequestHead)
    down.start_exchange(head)
    return down, theirs


async def trickle(client: trio.abc.Stream, every: float) -> None:
    """One byte every ``every`` seconds until the other side is gone."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while True:
            await client.send_all(b"x")
            await trio.sleep(every)


async def read_body(down: Http1Downstream) -> None:
    """Read the request body to its end."""
    while not isinstance(await down.receive_body(), EndOfBody):
        pass


async def test_a_trickled_body_ends_at_the_request_body_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    started = trio.current_time()
    down, client = await downstream(request_body=10.0)
    nursery.start_soon(trickle, client, 1.0)  # each gap is well within body_idle (4 s)
    with pytest.raises(ClientTimeout) as caught:
        await read_body(down)
    assert caught.value.error == "body_timeout"
    assert trio.current_time() - started == pytest.approx(10.0, abs=0.01)
    assert down.received_bytes == 10


async def test_a_gap_longer_than_body_idle_is_still_a_client_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    down, _ = await downstream(request_body=10.0)
    with pytest.raises(ClientTimeout) as caught:
        await down.receive_body()
    assert caught.value.error == "client_timeout"
    assert trio.current_time() - started == pytest.approx(4.0, abs=0.01)


async def test_the_deadline_cuts_a_wait_short_of_the_idle_gap(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    down, _ = await downstream(request_body=2.5)
    with pytest.raises(ClientTimeout) as caught:
        await down.receive_body()
    assert caught.value.error == "body_timeout"
    assert trio.current_time() - started == pytest.approx(2.5, abs=0.01)


async def test_a_body_that_keeps_up_is_not_cut(autojump_clock: trio.testing.MockClock) -> None:
    down, client = await downstream(request_body=10.0)
    for _ in range(4):
        await trio.sleep(2.0)
        await client.send_all(b"y" * 25)
        assert await down.receive_body() == BodyChunk(b"y" * 25)
    assert await down.receive_body() == EndOfBody()
    assert down.request_complete


# -- the connection driver -------------------------------------------------------------------


@dataclass
class Served:
    client: trio.abc.Stream
    seen: Capture
    ctx: ServerContext
    done: trio.Event = field(default_factory=trio.Event)


async def serve(nursery: trio.Nursery) -> Served:
    """One connection to a gateway whose only backend answers 200 ``hello``."""

    async def dial(peer: Peer) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(origin_ok, theirs)
        return ours

    pool = UpstreamPool(dialer=dial)
    await nursery.start(pool.run)
    ctx = ServerContext(compile_runtime(load_config_text(CONFIG), 1), pool)
    seen = Capture()
    ctx.observer = seen
    client, server = trio.testing.memory_stream_pair()
    served = Served(client, seen, ctx)

    async def run() -> None:
        await serve_http1(server, ConnInfo("web", "192.0.2.7", 40000), ctx)
        served.done.set()

    nursery.start_soon(run)
    return served


def sent_get(target: str = "/x") -> h11.Connection:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target=target, headers=[("host", "a")]))
    conn.send(h11.EndOfMessage())
    return conn


async def test_a_trickled_body_gets_408_at_the_deadline_and_is_recorded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    s = await serve(nursery)
    started = trio.current_time()
    await s.client.send_all(b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n")
    nursery.start_soon(trickle, s.client, 1.0)
    status, headers, _ = await read_response(s.client)
    assert status == 408
    assert (b"connection", b"close") in headers
    assert trio.current_time() - started == pytest.approx(10.0, abs=0.01)
    await s.done.wait()
    [record] = s.seen.records
    assert (record.status, record.error) == (408, "body_timeout")
    assert (record.router, record.method, record.path) == ("all", b"POST", b"/up")
    assert 9 <= record.request_bytes <= 11
    assert all(b.in_flight == 0 for b in s.ctx.runtime.services["svc"].backends)


async def test_a_slow_head_is_recorded_as_head_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    s = await serve(nursery)
    await trio.sleep(1.0)  # idle before the first byte: not part of the exchange
    await s.client.send_all(b"GET /slow HTTP/1.1\r\nhost: a\r\n")
    data = await read_all(s.client)
    assert data.startswith(b"HTTP/1.1 408 ")
    await s.done.wait()
    [record] = s.seen.records
    assert (record.status, record.error, record.router, record.service) == (
        408,
        "head_timeout",
        "",
        "",
    )
    assert (record.method, record.path, record.peer_ip) == (b"", b"", "192.0.2.7")
    assert record.duration == pytest.approx(3.0, abs=0.01)
    assert record.head_seconds == pytest.approx(3.0, abs=0.01)
    assert record.response_bytes > 0


@pytest.mark.parametrize(
    ("data", "status", "error"),
    [
        (b"GET / HTTP/1.1\r\nhost: a\r\nbad field: x\r\n\r\n", 400, "bad_request"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n", 414, "target_too_long"),
        (b"GET / HTTP/1.1\r\nx: " + b"b" * 40000 + b"\r\n\r\n", 431, "head_too_large"),
        (b"GET / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip, chunked\r\n\r\n", 501, ""),
        (b"GET / HTTP/2.0\r\nhost: a\r\n\r\n", 505, "version_not_supported"),
    ],
)
async def test_each_refusal_is_recorded_with_its_cause(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    data: bytes,
    status: int,
    error: str,
) -> None:
    s = await serve(nursery)
    await s.client.send_all(data)
    answer, headers, _ = await read_response(s.client)
    assert answer == status
    assert (b"connection", b"close") in headers
    await s.done.wait()
    [record] = s.seen.records
    assert record.status == status
    assert record.error == (error or "unsupported_transfer_coding")
    assert (record.router, record.service, record.attempts) == ("", "", 0)
    assert record.duration == 0.0  # refused with the read that brought it


async def test_a_malformed_request_pipelined_behind_a_good_one_gets_its_400(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    s = await serve(nursery)
    await s.client.send_all(
        b"GET /x HTTP/1.1\r\nhost: a\r\n\r\nGET /bad HTTP/1.1\r\nhost: a\r\nbad field: x\r\n\r\n"
    )
    status, good_headers, body = await read_response(s.client, sent_get())
    assert (status, body) == (200, b"hello")
    status, headers, body = await read_response(s.client)
    assert status == 400
    assert (b"connection", b"close") in headers
    assert b"bad request" in body
    # The good exchange's request id is its own, not the refused one's.
    assert any(name == b"x-request-id" for name, _ in good_headers)
    assert not any(name == b"x-request-id" for name, _ in headers)
    assert await read_all(s.client) == b""
    await s.done.wait()
    good, bad = s.seen.records
    assert (good.status, good.error, good.router) == (200, "", "all")
    assert (bad.status, bad.error, bad.router) == (400, "bad_request", "")
    assert (bad.method, bad.path, bad.request_bytes) == (b"GET", b"/bad", 0)


async def test_a_partial_head_pipelined_behind_a_good_one_gets_the_head_timer(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    s = await serve(nursery)
    await s.client.send_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\nGET /y HTTP/1.1\r\n")
    status, _, _ = await read_response(s.client, sent_get())
    assert status == 200
    answered = trio.current_time()
    data = await read_all(s.client)
    assert data.startswith(b"HTTP/1.1 408 ")
    # request_head (3 s), not the keep-alive idle timeout (5 s) with a silent close.
    assert trio.current_time() - answered == pytest.approx(3.0, abs=0.01)
    await s.done.wait()
    assert [record.error for record in s.seen.records] == ["", "head_timeout"]


async def test_a_connection_closed_without_a_request_leaves_no_record(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    s = await serve(nursery)
    await s.client.send_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
    await read_response(s.client, sent_get())
    assert await read_all(s.client) == b""  # the keep-alive idle timeout: a silent close
    await s.done.wait()
    assert [record.status for record in s.seen.records] == [200]


async def test_each_request_on_a_connection_gets_its_own_deadline(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    s = await serve(nursery)
    started = trio.current_time()
    post = b"POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: 4\r\n\r\n"
    for _ in range(2):
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="POST", target="/up", headers=[("host", "a")]))
        await s.client.send_all(post)
        for piece in (b"a", b"b", b"c", b"d"):  # 6 s of body, each piece within body_idle
            await trio.sleep(2.0)
            await s.client.send_all(piece)
        status, _, _ = await read_response(s.client, conn)
        assert status == 200
        await trio.sleep(4.0)  # within the keep-alive idle timeout (5 s)
    # 20 s after the first head: the second body had a deadline of its own.
    assert trio.current_time() - started >= 20.0
    assert [(record.status, record.error) for record in s.seen.records] == [(200, ""), (200, "")]


def test_request_body_defaults_to_five_minutes_and_follows_the_config() -> None:
    default = CONFIG.replace('    request_body = "10s"\n', "")
    assert (
        compile_runtime(load_config_text(default), 1).entrypoints["web"].request_body_timeout == 300
    )
    assert (
        compile_runtime(load_config_text(CONFIG), 1).entrypoints["web"].request_body_timeout == 10
    )
