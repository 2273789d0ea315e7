"""An exchange the gateway cuts when the drain's grace runs out is recorded as ``shutdown``,
not ``client_abort`` (issue #13): a server-sent-events stream still open at the end of the
grace, and an upload still arriving then (cut while the request-body pump runs, so the
cancellation comes out of a nursery as a group). A client that goes away is still
``client_abort`` (``test_exchange_record.py``).

An in-process ``Gateway`` on real sockets with its access log in a file; real clock, every wait
bounded, the grace kept short (0.3 s).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
import trio

from a3s_gateway.app import Gateway
from tests.support.gateway import RawClient, config_text, load, server_entry
from tests.support.origin import Origin, Streamed

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

WAIT = 20.0
GRACE = 0.3
EVENT_STREAM = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"))


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("shutdown")
    await nursery.start(server.serve)
    return server


async def serve(nursery: trio.Nursery, origin: Origin, log: Path) -> tuple[Gateway, int]:
    more = f'observability {{\n  access_log_path = "{log}"\n}}\n'
    gateway = Gateway(load(config_text([server_entry(origin)], more=more)))
    await nursery.start(gateway.serve)
    return gateway, gateway.addresses()["web"][0][1]


async def read_until(client: RawClient, marker: bytes) -> bytes:
    received = b""
    while marker not in received:
        data = await client.stream.receive_some(65536)
        assert data, received
        received += data
    return received


def log_lines(log: Path) -> list[dict[str, object]]:
    # The access log is flushed before shutdown() returns.
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]


async def test_a_stream_cut_at_the_end_of_the_grace_is_recorded_as_shutdown(
    origin: Origin, nursery: trio.Nursery, tmp_path: Path
) -> None:
    never = trio.Event()
    origin.on("/events", Streamed((b"data: 1\n\n",), EVENT_STREAM, release=never))
    log = tmp_path / "access.log"
    gateway, port = await serve(nursery, origin, log)
    with trio.fail_after(WAIT):
        client = await RawClient.connect(port)
        assert await client.send(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        received = await read_until(client, b"data: 1\n\n")
        assert received.startswith(b"HTTP/1.1 200 ")
        started = trio.current_time()
        await gateway.shutdown(GRACE)
        assert trio.current_time() - started >= GRACE  # the stream kept the drain open
        assert await client.closed()  # cut, never ended with the last chunk
        await client.aclose()
    [line] = log_lines(log)
    assert (line["path"], line["status"], line["error"]) == ("/events", 200, "shutdown")


async def test_an_upload_cut_at_the_end_of_the_grace_is_recorded_as_shutdown(
    origin: Origin, nursery: trio.Nursery, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    gateway, port = await serve(nursery, origin, log)
    with trio.fail_after(WAIT):
        client = await RawClient.connect(port)
        # Half the body: the gateway's pump waits for the rest while the head is awaited.
        head = b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n"
        assert await client.send(head + b"12345")
        await origin.wait_for(lambda: origin.heads == 1)  # it waits for the rest, too
        await gateway.shutdown(GRACE)
        assert await client.closed()
        await client.aclose()
    [line] = log_lines(log)
    assert (line["path"], line["status"], line["error"]) == ("/upload", 0, "shutdown")
