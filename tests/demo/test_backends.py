"""The demo backends (``a3s_gateway.demo``) on real loopback sockets, checked with curl, an h11
client and trio-websocket. Real time, no autojump clock: these are socket tests."""

from __future__ import annotations

import json

import pytest
import trio
import trio_websocket

from a3s_gateway.demo import BackendPorts, start_backends
from a3s_gateway.demo.echo import MAX_BYTES
from a3s_gateway.demo.streaming_backend import accept_token
from tests.demo.client import H11Client, curl

pytestmark = pytest.mark.integration


@pytest.fixture
async def backends(nursery: trio.Nursery) -> BackendPorts:
    return await start_backends(nursery)


def url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


async def test_the_backends_listen_on_three_distinct_ports(backends: BackendPorts) -> None:
    assert len({backends.echo_a, backends.echo_b, backends.stream}) == 3


async def test_echo_describes_the_request_in_json(backends: BackendPorts) -> None:
    out = await curl(
        "-H", "X-Forwarded-For: 203.0.113.7", "--data", "name=demo",
        url(backends.echo_b, "/api/orders?sort=asc&page=2"),
    )  # fmt: skip
    document = json.loads(out)
    assert document["service"] == "echo-b"
    assert document["method"] == "POST"
    assert document["path"] == "/api/orders"
    assert document["query"] == "sort=asc&page=2"
    assert document["body_bytes"] == len("name=demo")
    assert document["headers"]["X-Forwarded-For"] == "203.0.113.7"  # as received, case kept
    assert document["headers"]["Host"] == f"127.0.0.1:{backends.echo_b}"
    assert document["client"].startswith("127.0.0.1:")
    assert set(document) == {
        "service", "method", "path", "query", "headers", "body_bytes", "client",
    }  # fmt: skip


async def test_echo_counts_a_large_body_without_keeping_it(backends: BackendPorts) -> None:
    # More than 1 KiB: curl sends "Expect: 100-continue" and the backend answers 100 at once.
    body = b"x" * 3_000_000
    out = await curl("--data-binary", "@-", url(backends.echo_a, "/upload"), stdin=body)
    document = json.loads(out)
    assert document["body_bytes"] == len(body)
    assert document["headers"]["Expect"] == "100-continue"


async def test_repeated_headers_are_joined(backends: BackendPorts) -> None:
    out = await curl("-H", "X-Tag: a", "-H", "x-tag: b", url(backends.echo_a, "/"))
    assert json.loads(out)["headers"]["X-Tag"] == "a, b"


async def test_status_answers_the_code_asked_for(backends: BackendPorts) -> None:
    client = await H11Client.open(backends.echo_a)
    try:
        reply = await client.request("GET", "/api/status/503")
        assert reply.status == 503
        assert reply.json() == {"service": "echo-a", "status": 503}
        no_content = await client.request("GET", "/status/204")
        assert (no_content.status, no_content.body) == (204, b"")
        for bad in ("/status/99", "/status/600", "/status/abc"):
            assert (await client.request("GET", bad)).status == 400
    finally:
        await client.aclose()


async def test_post_to_status_is_an_echo(backends: BackendPorts) -> None:
    out = await curl("-X", "POST", url(backends.echo_a, "/status/503"))
    assert json.loads(out)["path"] == "/status/503"


async def test_bytes_streams_the_requested_length(backends: BackendPorts) -> None:
    client = await H11Client.open(backends.echo_a)
    try:
        size = 300_000
        reply = await client.request("GET", f"/api/bytes/{size}")
        assert reply.status == 200
        assert reply.headers["content-length"] == str(size)
        assert reply.headers["content-type"] == "application/octet-stream"
        assert len(reply.body) == size
        assert len(reply.pieces) > 1
        assert (await client.request("GET", f"/bytes/{MAX_BYTES + 1}")).status == 400
        head = await client.request("HEAD", f"/bytes/{size}")
        assert (head.headers["content-length"], head.body) == (str(size), b"")
    finally:
        await client.aclose()


async def test_delay_waits_then_echoes(backends: BackendPorts) -> None:
    start = trio.current_time()
    document = json.loads(await curl(url(backends.echo_a, "/api/delay/50")))
    assert trio.current_time() - start >= 0.05
    assert document["delay_ms"] == 50
    assert document["path"] == "/api/delay/50"
    assert "error" in json.loads(await curl(url(backends.echo_a, "/delay/10001")))


async def test_keep_alive_serves_several_requests_on_one_connection(
    backends: BackendPorts,
) -> None:
    client = await H11Client.open(backends.echo_a)
    try:
        first = (await client.request("GET", "/one")).json()
        second = (await client.request("POST", "/two", b"abc")).json()
        third = (await client.request("GET", "/status/404")).status
    finally:
        await client.aclose()
    assert first["client"] == second["client"]  # same peer port: the connection was reused
    assert (first["path"], second["path"], second["body_bytes"], third) == ("/one", "/two", 3, 404)


async def test_http_1_0_is_answered_and_closed(backends: BackendPorts) -> None:
    out = await curl("-i", "--http1.0", url(backends.echo_a, "/old"))
    head, _, body = out.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200")
    assert "connection: close" in head.lower()
    assert json.loads(body)["path"] == "/old"


async def test_a_malformed_request_gets_400_and_the_connection_closes(
    backends: BackendPorts,
) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", backends.echo_a)
    async with stream:
        await stream.send_all(b"NOT A REQUEST\r\n\r\n")
        received = b""
        while chunk := await stream.receive_some(65536):
            received += chunk
    assert received.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in received.lower()


async def test_events_are_sent_one_by_one_then_the_stream_ends(backends: BackendPorts) -> None:
    client = await H11Client.open(backends.stream)
    try:
        reply = await client.request("GET", "/events?count=3&interval_ms=10")
    finally:
        await client.aclose()
    assert reply.status == 200
    assert reply.headers["content-type"] == "text/event-stream"
    assert reply.headers["transfer-encoding"] == "chunked"
    assert [piece.count(b"data: ") for piece in reply.pieces] == [1, 1, 1]  # a chunk per event
    events = [block for block in reply.body.decode().split("\n\n") if block]
    assert events[0] == 'id: 1\ndata: {"service": "stream", "count": 1, "of": 3}'
    assert [json.loads(e.split("data: ")[1])["count"] for e in events] == [1, 2, 3]


async def test_an_event_arrives_before_the_next_one_is_made(backends: BackendPorts) -> None:
    client = await H11Client.open(backends.stream)
    try:
        reply = await client.start("GET", "/api/events?count=2&interval_ms=30000")
        assert reply.status == 200
        with trio.fail_after(10):  # the second event is 30 s away: the first was not held back
            first = await client.next_piece()
        assert first is not None
        assert first.startswith(b"id: 1\n")
    finally:
        await client.aclose()


async def test_events_parameters_are_bounded(backends: BackendPorts) -> None:
    for query in ("count=0", "count=1001", "interval_ms=60001", "count=x"):
        out = await curl(
            "-w", "%{http_code}", "-o", "/dev/null", url(backends.stream, f"/events?{query}")
        )
        assert out == "400", query


async def test_stream_answers_404_elsewhere(backends: BackendPorts) -> None:
    out = await curl("-w", "\n%{http_code}", url(backends.stream, "/nothing"))
    body, _, status = out.rpartition("\n")
    assert status == "404"
    assert "/events" in body


async def test_websocket_echoes_text_and_binary_and_closes_cleanly(
    backends: BackendPorts,
) -> None:
    ws_url = f"ws://127.0.0.1:{backends.stream}/ws"
    async with trio_websocket.open_websocket_url(ws_url) as websocket:
        await websocket.send_message("héllo, gateway")
        assert await websocket.get_message() == "héllo, gateway"
        await websocket.send_message(b"\x00\x01\xff")
        assert await websocket.get_message() == b"\x00\x01\xff"
        large = "z" * 300_000  # several reads and frames on the way back
        await websocket.send_message(large)
        assert await websocket.get_message() == large
    assert websocket.closed is not None
    assert websocket.closed.code == 1000


async def test_a_plain_get_to_ws_gets_426(backends: BackendPorts) -> None:
    out = await curl("-i", url(backends.stream, "/ws"))
    assert out.startswith("HTTP/1.1 426 ")
    assert "sec-websocket-version: 13" in out.lower()


async def test_a_bad_websocket_key_gets_400(backends: BackendPorts) -> None:
    headers = ["Connection: Upgrade", "Upgrade: websocket", "Sec-WebSocket-Version: 13"]
    args = [arg for header in headers for arg in ("-H", header)]
    out = await curl("-i", *args, "-H", "Sec-WebSocket-Key: short", url(backends.stream, "/ws"))
    assert out.startswith("HTTP/1.1 400 ")


def test_accept_token_matches_rfc_6455_example() -> None:
    assert accept_token("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="  # §1.3
