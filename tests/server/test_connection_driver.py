"""The downstream connection driver and the exchange over trio memory streams (DESIGN.md §3.6).

Everything runs on trio's autojump clock: the client is scripted with raw bytes and an h11
client, the upstream is an in-test h11 origin on the far end of a memory stream that a fake
dialer hands to the pool. Every timeout of SPEC §5.5 that the HTTP/1.1 path owns is driven
past its deadline in virtual time, and in-flight counts are checked to return to zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import cast

import h11
import pytest
import trio
import trio.testing

from a3s_gateway.config.load import load_config_text
from a3s_gateway.middleware import Middleware, RequestState
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.protocols.responses import GeneratedResponse, error_response
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.server.downstream import ConnInfo
from a3s_gateway.server.http1_driver import LINGER_IDLE, LINGER_TIME, serve_http1
from a3s_gateway.server.server_context import ServerContext
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.peer import Peer
from a3s_gateway.upstream.pool import UpstreamPool

Origin = Callable[[trio.abc.Stream], Awaitable[None]]

CONFIG = """
entrypoints "web" {{
  address = "127.0.0.1:8080"
  timeouts {{
    idle         = "5s"
    request_head = "3s"
    body_idle    = "4s"
  }}
}}
routers "all" {{
  rule    = "PathPrefix(`/`)"
  service = "svc"
}}
services "svc" {{
  load_balancer {{
    servers = [{{ url = "http://10.9.0.1:80" }}, {{ url = "http://10.9.0.2:80" }}]
    {extra}
  }}
}}
"""


def runtime(extra: str = "") -> RuntimeConfig:
    return compile_runtime(load_config_text(CONFIG.format(extra=extra)), 1)


@dataclass
class Harness:
    """A served connection: ``client`` is our end; ``dials`` counts upstream connections."""

    client: trio.abc.Stream
    ctx: ServerContext
    dials: list[Peer] = field(default_factory=list)
    done: trio.Event = field(default_factory=trio.Event)


async def origin_ok(stream: trio.abc.Stream) -> None:
    """Answers every request with 200 and ``hello`` (keep-alive)."""
    conn = h11.Connection(h11.SERVER)
    while True:
        event = await _next(conn, stream)
        if isinstance(event, h11.Request):
            while not isinstance(part := await _next(conn, stream), h11.EndOfMessage):
                if isinstance(part, h11.ConnectionClosed):
                    return
            body = b"hello"
            headers = [(b"content-length", str(len(body)).encode())]
            await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
            await stream.send_all(conn.send(h11.Data(data=body)))
            await stream.send_all(conn.send(h11.EndOfMessage()))
            conn.start_next_cycle()
        else:
            return


async def _next(conn: h11.Connection, stream: trio.abc.Stream) -> object:
    """The origin's next h11 event; a peer that went away mid-message reads as closed."""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return h11.ConnectionClosed()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
            continue
        return event


async def start(
    nursery: trio.Nursery,
    origin: Origin | None = origin_ok,
    *,
    extra: str = "",
    dialer: Callable[[Peer], Awaitable[trio.abc.Stream]] | None = None,
) -> Harness:
    dials: list[Peer] = []

    async def fake_dial(peer: Peer) -> trio.abc.Stream:
        dials.append(peer)
        ours, theirs = trio.testing.memory_stream_pair()
        assert origin is not None
        nursery.start_soon(origin, theirs)
        return ours

    pool = UpstreamPool(dialer=dialer or fake_dial)
    await nursery.start(pool.run)
    ctx = ServerContext(runtime(extra), pool)
    client, server = trio.testing.memory_stream_pair()
    harness = Harness(client, ctx, dials)

    async def serve() -> None:
        await serve_http1(server, ConnInfo("web", "192.0.2.7", 40000), ctx)
        harness.done.set()

    nursery.start_soon(serve)
    return harness


async def read_response(
    stream: trio.abc.Stream, conn: h11.Connection | None = None
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, headers, body, closed_cleanly) of the next response on ``stream``."""
    conn = conn or h11.Connection(h11.CLIENT)
    if conn.our_state is h11.IDLE:
        conn.send(h11.Request(method="GET", target="/", headers=[("host", "x")]))
        conn.send(h11.EndOfMessage())
    status, body = 0, b""
    headers: list[tuple[bytes, bytes]] = []
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(bytes(await stream.receive_some(65536)))
        elif isinstance(event, h11.Response):
            status, headers = event.status_code, list(event.headers)
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return status, headers, body
        else:
            raise AssertionError(event)


async def read_all(stream: trio.abc.Stream) -> bytes:
    data = b""
    while chunk := await stream.receive_some(65536):
        data += chunk
    return data


GET = b"GET /x HTTP/1.1\r\nhost: example.com\r\n\r\n"


async def test_get_is_proxied_and_the_upstream_connection_is_reused(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery)
    for _ in range(3):
        await h.client.send_all(GET)
        status, _, body = await read_response(h.client, _sent_client())
        assert (status, body) == (200, b"hello")
    # Round-robin over two backends: two upstream connections for three requests, one reused.
    assert len(h.dials) == 2
    assert all(b.in_flight == 0 for b in h.ctx.runtime.services["svc"].backends)


def _sent_client() -> h11.Connection:
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/x", headers=[("host", "example.com")]))
    conn.send(h11.EndOfMessage())
    return conn


async def test_keep_alive_idle_timeout_closes_silently(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery)
    await h.client.send_all(GET)
    await read_response(h.client, _sent_client())
    started = trio.current_time()
    assert await read_all(h.client) == b""
    assert trio.current_time() - started == pytest.approx(5.0, abs=0.01)


async def test_slow_head_gets_408_after_request_head_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, extra="")
    await h.client.send_all(b"GET / HTTP/1.1\r\nhost: a\r\n")
    started = trio.current_time()
    data = await read_all(h.client)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert b"request timeout" in data
    assert trio.current_time() - started == pytest.approx(3.0, abs=0.01)


async def test_no_bytes_at_all_closes_without_a_response(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery)
    started = trio.current_time()
    assert await read_all(h.client) == b""
    await h.done.wait()
    assert trio.current_time() - started == pytest.approx(5.0, abs=0.01)


async def test_client_body_idle_gives_408(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery)
    await h.client.send_all(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nhello")
    started = trio.current_time()
    data = await read_all(h.client)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert trio.current_time() - started == pytest.approx(4.0, abs=0.01)
    assert all(b.in_flight == 0 for b in h.ctx.runtime.services["svc"].backends)


async def origin_silent(stream: trio.abc.Stream) -> None:
    """Reads forever, never answers."""
    while await stream.receive_some(65536):
        pass


async def test_no_response_head_gives_504_after_response_header_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_silent, extra='response_header_timeout = "2s"')
    await h.client.send_all(GET)
    started = trio.current_time()
    status, _, body = await read_response(h.client, _sent_client())
    assert status == 504
    assert b"gateway timeout" in body
    assert trio.current_time() - started == pytest.approx(2.0, abs=0.01)
    assert all(b.in_flight == 0 for b in h.ctx.runtime.services["svc"].backends)


async def origin_stalls_mid_body(stream: trio.abc.Stream) -> None:
    await stream.receive_some(65536)
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
    await trio.sleep_forever()


async def test_upstream_body_idle_aborts_the_client_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_stalls_mid_body, extra='body_idle_timeout = "3s"')
    await h.client.send_all(GET)
    data = await read_all(h.client)
    # The head and the 10 bytes arrive; then the connection closes short of content-length.
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"0123456789")
    assert all(b.in_flight == 0 for b in h.ctx.runtime.services["svc"].backends)


async def origin_dies_mid_chunked(stream: trio.abc.Stream) -> None:
    await stream.receive_some(65536)
    await stream.send_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
    await stream.aclose()


async def test_upstream_death_mid_body_never_sends_the_final_chunk(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_dies_mid_chunked)
    await h.client.send_all(GET)
    data = await read_all(h.client)
    assert b"hello" in data
    assert not data.endswith(b"0\r\n\r\n")


async def test_connect_timeout_gives_504_after_every_attempt(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    async def hang(peer: Peer) -> trio.abc.Stream:
        await trio.sleep_forever()
        raise AssertionError

    h = await start(nursery, None, extra='connect_timeout = "1s"', dialer=hang)
    await h.client.send_all(GET)
    started = trio.current_time()
    status, _, _ = await read_response(h.client, _sent_client())
    assert status == 504
    # connect_attempts defaults to 2: both backends were tried, one second each.
    assert trio.current_time() - started == pytest.approx(2.0, abs=0.01)


async def test_refused_connects_try_the_next_backend_then_502(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    tried: list[Peer] = []

    async def refuse(peer: Peer) -> trio.abc.Stream:
        tried.append(peer)
        raise ConnectFailed("refused")

    h = await start(nursery, None, dialer=refuse)
    await h.client.send_all(GET)
    status, _, body = await read_response(h.client, _sent_client())
    assert status == 502
    assert b"bad gateway" in body
    assert len(set(tried)) == 2


async def test_pool_limit_wait_ends_in_503_backend_connection_limit(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(
        nursery,
        origin_silent,
        extra='max_conns_per_backend = 1\n connect_timeout = "1s"\n'
        'response_header_timeout = "100s"\n strategy = "least-connections"',
    )
    # Occupy both backends' single connection with requests that never get an answer.
    others = []
    for _ in range(2):
        client, server = trio.testing.memory_stream_pair()
        nursery.start_soon(serve_http1, server, ConnInfo("web", "192.0.2.8", 1), h.ctx)
        await client.send_all(GET)
        others.append(client)
    await trio.testing.wait_all_tasks_blocked()
    await h.client.send_all(GET)
    status, _, body = await read_response(h.client, _sent_client())
    assert status == 503
    assert b"backend connection limit reached" in body


async def test_drain_closes_idle_connections_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery)
    await h.client.send_all(GET)
    await read_response(h.client, _sent_client())
    started = trio.current_time()
    h.ctx.drain.start()
    assert await read_all(h.client) == b""
    assert trio.current_time() == started


async def test_drain_lets_a_head_that_began_finish_and_connections_unregister(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery)
    await trio.testing.wait_all_tasks_blocked()
    assert len(h.ctx.drain.connections) == 1  # registered once, for the connection
    await h.client.send_all(GET[:10])
    await trio.sleep(1)
    h.ctx.drain.start()
    await trio.sleep(1)
    await h.client.send_all(GET[10:])
    data = await read_all(h.client)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in data.lower()
    await h.done.wait()
    assert h.ctx.drain.connections == set()


async def origin_waits(stream: trio.abc.Stream) -> None:
    """Answers after 5 seconds."""
    await stream.receive_some(65536)
    await trio.sleep(5)
    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await trio.sleep_forever()


async def test_drain_lets_a_request_in_flight_finish_with_connection_close(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_waits)
    await h.client.send_all(GET)
    await trio.sleep(1)
    h.ctx.drain.start()
    data = await read_all(h.client)
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in data.lower()
    assert data.endswith(b"ok")


async def test_client_disconnect_mid_response_releases_in_flight(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_waits)
    await h.client.send_all(GET)
    await trio.sleep(1)
    backends = h.ctx.runtime.services["svc"].backends
    assert sum(b.in_flight for b in backends) == 1
    await h.client.aclose()
    await h.done.wait()
    assert sum(b.in_flight for b in backends) == 0


async def test_total_timeout_gives_504(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_waits, extra='total_timeout = "2s"')
    await h.client.send_all(GET)
    status, _, _ = await read_response(h.client, _sent_client())
    assert status == 504


async def origin_once(stream: trio.abc.Stream) -> None:
    """Answers one request with 200 ``once`` (keep-alive advertised), then closes: what an
    origin whose keep-alive timeout fired looks like to the pool."""
    conn = h11.Connection(h11.SERVER)
    while not isinstance(await _next(conn, stream), h11.EndOfMessage):
        pass
    headers = [(b"content-length", b"4")]
    await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=b"once")) + conn.send(h11.EndOfMessage()))
    await stream.aclose()


async def test_a_stale_pooled_connection_is_replaced_and_the_get_resent(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_once)
    for _ in range(3):  # round-robin over two backends: the third reuses the first connection
        await h.client.send_all(GET)
        status, _, body = await read_response(h.client, _sent_client())
        assert (status, body) == (200, b"once")
    assert len(h.dials) == 3  # the stale one was replaced by a fresh dial
    assert h.ctx.stale_retries == 1


async def test_a_request_with_a_body_is_not_resent_on_a_stale_connection(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_once)
    for _ in range(2):
        await h.client.send_all(GET)
        await read_response(h.client, _sent_client())
    await h.client.send_all(b"PUT /x HTTP/1.1\r\nhost: example.com\r\ncontent-length: 2\r\n\r\nhi")
    sent = h11.Connection(h11.CLIENT)
    framing = [("host", "a"), ("content-length", "2")]
    sent.send(h11.Request(method="PUT", target="/x", headers=framing))
    sent.send(h11.Data(data=b"hi"))
    sent.send(h11.EndOfMessage())
    status, _, _ = await read_response(h.client, sent)
    assert status == 502
    assert h.ctx.stale_retries == 0
    assert len(h.dials) == 2


async def origin_early(stream: trio.abc.Stream) -> None:
    """Answers 200 with ``Connection: close`` as soon as a head arrives, reading no body."""
    conn = h11.Connection(h11.SERVER)
    assert isinstance(await _next(conn, stream), h11.Request)
    headers = [(b"content-length", b"5"), (b"connection", b"close")]
    await stream.send_all(conn.send(h11.Response(status_code=200, headers=headers)))
    await stream.send_all(conn.send(h11.Data(data=b"early")) + conn.send(h11.EndOfMessage()))
    await stream.aclose()


UPLOAD = b"POST /x HTTP/1.1\r\nhost: example.com\r\ncontent-length: 100000000\r\n\r\n" + b"x" * 10


async def test_an_early_answer_is_followed_by_a_bounded_lingering_close(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_early)
    await h.client.send_all(UPLOAD)
    data = await read_all(h.client)  # the gateway half-closes after the response
    assert data.startswith(b"HTTP/1.1 200 ")
    assert data.endswith(b"early")
    answered = trio.current_time()

    async def trickle() -> None:  # a client that goes on uploading slowly
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await h.client.send_all(b"y" * 1000)
                await trio.sleep(1.0)

    nursery.start_soon(trickle)
    await h.done.wait()
    # Drained while the client kept sending, but never longer than LINGER_TIME in all.
    assert trio.current_time() - answered == pytest.approx(LINGER_TIME, abs=0.1)


async def test_a_silent_client_ends_the_lingering_close_after_the_idle_bound(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery, origin_early)
    await h.client.send_all(UPLOAD)
    await read_all(h.client)
    answered = trio.current_time()
    await h.done.wait()
    assert trio.current_time() - answered == pytest.approx(LINGER_IDLE, abs=0.1)


class Recorder(Middleware):
    """Records what the pipeline shows it; answers 403 when ``deny`` is set."""

    def __init__(self, name: str, log: list[str], *, deny: bool = False) -> None:
        super().__init__(name)
        self.log = log
        self.deny = deny

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        self.log.append(f"{self.name}.request")
        return error_response(403) if self.deny else None

    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        self.log.append(f"{self.name}.response {status}")

    def completed(self, state: RequestState, status: int) -> None:
        self.log.append(f"{self.name}.completed {status}")


async def test_the_pipeline_phases_run_in_onion_order(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery)
    log: list[str] = []
    chains = cast("dict[str, tuple[Middleware, ...]]", h.ctx.runtime.chains)
    chains["all"] = (Recorder("a", log), Recorder("b", log))
    await h.client.send_all(GET)
    status, _, _ = await read_response(h.client, _sent_client())
    assert status == 200
    assert log == [
        "a.request",
        "b.request",
        "b.response 200",
        "a.response 200",
        "b.completed 200",
        "a.completed 200",
    ]


async def test_a_short_circuit_passes_only_the_middlewares_entered_before(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery)
    log: list[str] = []
    chains = cast("dict[str, tuple[Middleware, ...]]", h.ctx.runtime.chains)
    chains["all"] = (Recorder("a", log), Recorder("b", log, deny=True), Recorder("c", log))
    await h.client.send_all(GET)
    status, _, _ = await read_response(h.client, _sent_client())
    assert status == 403
    assert log == ["a.request", "b.request", "a.response 403", "a.completed 403"]
    assert h.dials == []  # never dispatched


class Broken(Middleware):
    """A middleware with a bug: its request side (``on="request"``) or its response side
    raises."""

    def __init__(self, name: str, on: str) -> None:
        super().__init__(name)
        self.on = on

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        if self.on == "request":
            raise RuntimeError("request side bug")
        return None

    def response(self, state: RequestState, status: int, headers: Headers) -> None:
        raise RuntimeError("response side bug")


@pytest.mark.parametrize("on", ["request", "response"])
async def test_a_middleware_bug_answers_500_and_the_connection_survives(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, on: str
) -> None:
    """SPEC §8.1 "Errors": a request-side bug, or a response-side bug on a proxied head (and
    then on the 500 itself), gives 500 ``internal error``; the next request on the same
    connection is served."""
    h = await start(nursery)
    log: list[str] = []
    chains = cast("dict[str, tuple[Middleware, ...]]", h.ctx.runtime.chains)
    chains["all"] = (Recorder("a", log), Broken("b", on))
    client = _sent_client()
    await h.client.send_all(GET)
    status, _, body = await read_response(h.client, client)
    assert status == 500
    assert b"internal error" in body
    assert log[-1] == "a.completed 500"
    chains["all"] = ()
    client.start_next_cycle()
    await h.client.send_all(GET)
    status, _, _ = await read_response(h.client, client)
    assert status == 200


async def test_generated_responses_carry_date_and_a_reason_phrase(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    h = await start(nursery)
    chains = cast("dict[str, tuple[Middleware, ...]]", h.ctx.runtime.chains)
    chains["all"] = (Recorder("deny", [], deny=True),)
    await h.client.send_all(GET)
    head = b""
    while b"\r\n\r\n" not in head:
        head += await h.client.receive_some(65536)
    status_line, _, fields = head.partition(b"\r\n")
    assert status_line == b"HTTP/1.1 403 Forbidden"
    assert b"\r\ndate: " in b"\r\n" + fields.lower()
