"""Server-sent events through the gateway end to end (SPEC §5.12, §5.5 stream idle timeout).

An in-process ``Gateway`` on 127.0.0.1 in front of ``EventSource``, a raw trio upstream that
answers with a chunked ``text/event-stream`` whose events the test controls: one at a time
(``push``, so the test decides when the next one is written), or on a schedule. Clients are
curl and a raw socket parsed with h11.

Covered: each event reaches the client before the upstream writes the next one (no buffering
in the gateway); a stream outlives ``total_timeout`` and ``body_idle_timeout`` and ends
properly after ``stream_idle_timeout``; the ``compress`` middleware leaves an event stream alone
while it compresses a JSON response on the same router; a client that leaves releases the
backend (the upstream connection is closed, the in-flight count returns to 0); and
``a3s_sse_streams_active`` counts open streams. Every wait is bounded; none stands in for
synchronisation.
"""

from __future__ import annotations

import contextlib
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

import h11
import pytest
import trio

from tests.support.gateway import (
    CLIENT_WAIT,
    LOCAL,
    GatewayHandle,
    config_text,
    curl,
    running_gateway,
)

pytestmark = pytest.mark.integration

READ_SIZE: Final = 65536
EVENT_STREAM_HEAD: Final = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Connection: close\r\n\r\n"
)
#: A JSON document well above the compress middleware's 1 KiB threshold.
DOCUMENT: Final = json.dumps([{"id": n, "name": f"item {n}"} for n in range(400)]).encode()


def event(number: int, pad: int = 0) -> bytes:
    return f"id: {number}\ndata: event {number} {'x' * pad}\n\n".encode()


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class EventSource:
    """A raw HTTP/1.1 upstream: ``/json`` gets ``DOCUMENT``; any other path a chunked event
    stream, every response with ``Connection: close``.

    Events are either pushed by the test (``push``; ``end`` writes the last chunk) or, with
    ``every``, written on a schedule: ``count`` events (None: until the connection breaks)
    ``every`` seconds apart, each padded with ``pad`` bytes, then the response ends if
    ``end_after`` is set, else the stream stays open and silent. ``gone`` is set once the
    gateway closed (or broke) a stream's connection; ``sent`` counts the events written.
    """

    def __init__(
        self,
        *,
        every: float | None = None,
        count: int | None = None,
        pad: int = 0,
        end_after: bool = False,
    ) -> None:
        self.port = 0
        self.every = every
        self.count = count
        self.pad = pad
        self.end_after = end_after
        self.connections = 0
        self.sent = 0
        self.gone = trio.Event()
        self._pushes, self._pushed = trio.open_memory_channel[bytes | None](0)

    async def push(self, data: bytes) -> None:
        """Hand the stream its next event (returns once the stream took it)."""
        await self._pushes.send(data)

    async def end(self) -> None:
        """End the pushed stream with its last chunk."""
        await self._pushes.send(None)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=LOCAL)
        listener = listeners[0]
        self.port = int(listener.socket.getsockname()[1])
        async with listener, trio.open_nursery() as nursery:
            task_status.started()
            while True:
                stream = await listener.accept()
                self.connections += 1
                nursery.start_soon(self._connection, stream)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            head = bytearray()
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    return
                head += data
            if head.startswith(b"GET /json "):
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(DOCUMENT), DOCUMENT)
                )
                return
            await stream.send_all(EVENT_STREAM_HEAD)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, stream, nursery.cancel_scope)
                ended = await self._events(stream)
                if ended:
                    nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.gone.set()
        finally:
            await trio.aclose_forcefully(stream)

    async def _watch(self, stream: trio.SocketStream, scope: trio.CancelScope) -> None:
        """Read until the gateway closes the connection, then stop the stream."""
        try:
            while await stream.receive_some(READ_SIZE):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self.gone.set()
        scope.cancel()

    async def _events(self, stream: trio.SocketStream) -> bool:
        """Write the events; True once the response ended (its last chunk written)."""
        if self.every is None:
            while (data := await self._pushed.receive()) is not None:
                await stream.send_all(chunk(data))
                self.sent += 1
            await stream.send_all(b"0\r\n\r\n")
            return True
        while self.count is None or self.sent < self.count:
            await stream.send_all(chunk(event(self.sent, self.pad)))
            self.sent += 1
            await trio.sleep(self.every)  # the schedule itself, not a synchronisation
        if self.end_after:
            await stream.send_all(b"0\r\n\r\n")
            return True
        await trio.sleep_forever()  # silent until the gateway gives up on the stream


@pytest.fixture
async def pushed(nursery: trio.Nursery) -> EventSource:
    source = EventSource()
    await nursery.start(source.serve)
    return source


def sse_config(source: EventSource, *, balancer: str = "", more: str = "") -> str:
    return config_text(
        [f'{{ url = "http://{LOCAL}:{source.port}" }}'], balancer=balancer, more=more
    )


def metric(gw: GatewayHandle, name: str, **labels: str) -> float:
    return gw.metric(name, **labels)


def in_flight(gw: GatewayHandle) -> int:
    runtime = gw.gateway.runtime
    assert runtime is not None
    return sum(backend.in_flight for backend in runtime.services["main"].backends)


def streams_open(gw: GatewayHandle) -> float:
    return metric(gw, "a3s_sse_streams_active", router="main")


async def until(predicate: Callable[[], bool]) -> None:
    """Poll the gateway's observable state until ``predicate()`` holds (bounded)."""
    with trio.fail_after(CLIENT_WAIT):
        while not predicate():  # noqa: ASYNC110 -- the gateway's counters have no event
            await trio.sleep(0.01)


class StreamClient:
    """A GET over a raw socket whose response is parsed with h11 as it arrives."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = h11.Connection(h11.CLIENT)
        self.response: h11.Response | None = None
        self.body = bytearray()
        self.ended = False

    @classmethod
    async def get(cls, port: int, target: str) -> StreamClient:
        client = cls(await trio.open_tcp_stream(LOCAL, port))
        request = h11.Request(
            method="GET", target=target, headers=[("host", "sse"), ("accept", "text/event-stream")]
        )
        await client.stream.send_all(client.parser.send(request) or b"")
        await client.stream.send_all(client.parser.send(h11.EndOfMessage()) or b"")
        return client

    async def until(self, predicate: Callable[[StreamClient], bool]) -> None:
        """Read (bounded) until ``predicate(self)`` holds; fails if the response ends first."""
        with trio.fail_after(CLIENT_WAIT):
            while not predicate(self):
                assert not self.ended, f"the response ended: {bytes(self.body)!r}"
                event = self.parser.next_event()
                if event is h11.NEED_DATA:
                    self.parser.receive_data(await self.stream.receive_some(READ_SIZE))
                elif isinstance(event, h11.Response):
                    self.response = event
                elif isinstance(event, h11.Data):
                    self.body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    self.ended = True
                else:
                    raise AssertionError(f"unexpected {event!r}")

    def header(self, name: bytes) -> bytes | None:
        assert self.response is not None
        return next((bytes(v) for k, v in self.response.headers if k == name), None)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def has(data: bytes) -> Callable[[StreamClient], bool]:
    return lambda client: data in client.body


async def test_each_event_reaches_the_client_before_the_next_is_sent(pushed: EventSource) -> None:
    async with running_gateway(sse_config(pushed)) as gw:
        client = await StreamClient.get(gw.port, "/events")
        try:
            for number in range(5):
                # The upstream writes event N+1 only after the client holds event N: any
                # buffering in the gateway would leave the client waiting here.
                await pushed.push(event(number))
                await client.until(has(event(number)))
            await pushed.end()
            await client.until(lambda c: c.ended)
        finally:
            await client.aclose()
    assert client.response is not None
    assert client.response.status_code == 200
    assert client.header(b"content-type") == b"text/event-stream"
    assert client.header(b"content-length") is None
    assert bytes(client.body) == b"".join(event(number) for number in range(5))


async def test_a_stream_outlives_the_total_and_body_timeouts_until_it_is_idle(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    source = EventSource(every=0.5, count=6)  # ~3 s of events, then silence
    await nursery.start(source.serve)
    log = tmp_path / "access.log"
    balancer = (
        '    total_timeout       = "1s"\n'
        '    body_idle_timeout   = "1s"\n'
        '    stream_idle_timeout = "1500ms"'
    )
    more = f'observability {{\n  access_log_path = "{log}"\n}}\n'
    async with running_gateway(sse_config(source, balancer=balancer, more=more)) as gw:
        started = trio.current_time()
        result = await curl("-N", gw.url("/events"))
        took = trio.current_time() - started
        with trio.fail_after(CLIENT_WAIT):
            await source.gone.wait()  # the gateway let go of the upstream too
    assert result.code == 0, result.stderr  # the chunked body was properly terminated
    assert result.response.status == 200
    assert result.response.body == b"".join(event(number) for number in range(6))
    assert took >= 2.5 + 1.4  # six events 0.5 s apart, then the stream idle timeout
    [line] = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["status"] == 200
    assert line["error"] == "stream_idle"


async def test_compress_skips_event_streams_but_not_json(nursery: trio.Nursery) -> None:
    source = EventSource(every=0.0, count=3, pad=2000, end_after=True)
    await nursery.start(source.serve)
    definition = 'middlewares "squeeze" {\n  type = "compress"\n}\n'
    config = sse_config(source, more=definition).replace(
        'service = "main"\n}', 'service = "main"\n  middlewares = ["squeeze"]\n}', 1
    )
    async with running_gateway(config) as gw:
        events = await curl("-N", "-H", "Accept-Encoding: gzip", gw.url("/events"))
        document = await curl("-H", "Accept-Encoding: gzip", gw.url("/json"))
    assert events.code == 0, events.stderr
    assert events.response.header(b"content-type") == b"text/event-stream"
    assert events.response.header(b"content-encoding") is None
    assert events.response.body == b"".join(event(number, 2000) for number in range(3))
    assert document.code == 0, document.stderr
    assert document.response.header(b"content-encoding") == b"gzip"
    assert gzip.decompress(document.response.body) == DOCUMENT


async def test_a_client_that_leaves_releases_the_backend(nursery: trio.Nursery) -> None:
    source = EventSource(every=0.1)  # until the gateway closes the connection
    await nursery.start(source.serve)
    async with running_gateway(sse_config(source)) as gw:
        client = await StreamClient.get(gw.port, "/events")
        try:
            await client.until(has(event(0)))
            assert in_flight(gw) == 1
            assert streams_open(gw) == 1
        finally:
            await client.aclose()
        # The gateway notices at its next write to the client, at most ~100 ms later.
        with trio.fail_after(5):
            await source.gone.wait()
            await until(lambda: in_flight(gw) == 0 and streams_open(gw) == 0)
        assert metric(gw, "a3s_backend_in_flight", service="main") == 0
    assert source.connections == 1


async def test_sse_streams_active_counts_open_streams(pushed: EventSource) -> None:
    async with running_gateway(sse_config(pushed)) as gw:
        assert streams_open(gw) == 0
        client = await StreamClient.get(gw.port, "/events")
        try:
            await pushed.push(event(1))
            await client.until(has(event(1)))
            assert streams_open(gw) == 1
            assert in_flight(gw) == 1
            await pushed.end()
            await client.until(lambda c: c.ended)
        finally:
            await client.aclose()
        await until(lambda: streams_open(gw) == 0 and in_flight(gw) == 0)


class FixedUpstream:
    """An upstream that answers any request with ``head`` and then, after ``pause`` seconds,
    ``tail`` (if any), and holds the connection open until the test ends."""

    def __init__(self, head: bytes, tail: bytes = b"", pause: float = 0.0) -> None:
        self.head, self.tail, self.pause = head, tail, pause
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host=LOCAL)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._answer, listeners)

    async def _answer(self, stream: trio.SocketStream) -> None:
        received = b""
        with trio.move_on_after(CLIENT_WAIT):
            while b"\r\n\r\n" not in received:
                received += await stream.receive_some(READ_SIZE)
            await stream.send_all(self.head)
            if self.tail:
                await trio.sleep(self.pause)
                with contextlib.suppress(trio.BrokenResourceError):
                    await stream.send_all(self.tail)
            await trio.sleep_forever()


async def test_a_repeated_event_stream_type_is_counted_once(nursery: trio.Nursery) -> None:
    """Two ``Content-Type: text/event-stream`` lines open one stream, not two (the gauge
    returned to 1, not 0, before the fix)."""
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Content-Type: text/event-stream\r\nContent-Length: 10\r\n\r\ndata: hi\n\n"
    )
    source = FixedUpstream(head)
    await nursery.start(source.serve)
    config = config_text([f'{{ url = "http://{LOCAL}:{source.port}" }}'])
    async with running_gateway(config) as gw:
        client = await StreamClient.get(gw.port, "/events")
        try:
            await client.until(lambda c: c.ended)
        finally:
            await client.aclose()
        await until(lambda: streams_open(gw) == 0 and in_flight(gw) == 0)


@pytest.mark.time_limit(40)
async def test_a_client_that_stops_reading_a_stream_is_cut_after_the_idle_bound(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """The stream's idle bound catches a write to a client that stopped reading: the response
    is aborted (no final chunk after a partial one) as the client's fault, and the exchange
    ends instead of waiting for the client forever."""
    big = b"x" * (16 << 20)
    source = FixedUpstream(
        EVENT_STREAM_HEAD + chunk(event(0)), tail=chunk(big) + chunk(event(1)), pause=0.2
    )
    await nursery.start(source.serve)
    log = tmp_path / "access.log"
    config = config_text(
        [f'{{ url = "http://{LOCAL}:{source.port}" }}'],
        balancer='    stream_idle_timeout = "1s"',
        more=f'observability {{\n  access_log_path = "{log}"\n}}\n',
    )
    async with running_gateway(config) as gw:
        client = await StreamClient.get(gw.port, "/events")
        try:
            await client.until(has(event(0)))  # then read nothing more
            await until(lambda: in_flight(gw) == 0 and streams_open(gw) == 0)
        finally:
            await client.aclose()
        with trio.fail_after(CLIENT_WAIT):
            while not log.exists() or not log.read_text():  # noqa: ASYNC110 -- a file
                await trio.sleep(0.01)
    [line] = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["error"] == "client_timeout"
