"""Requests the gateway refuses while reading them, through the real CLI with raw sockets
(issue #14, items 5 and 6).

- Every refusal that got a response is an exchange like any other: one access-log line and one
  ``a3s_http_requests_total`` sample, its ``error`` naming the cause, router and service empty.
  Before, a request refused while its head was parsed (400, 408, 414, 431, 501, 505, a bad chunk
  sent with the head) left no trace at all.
- A malformed request pipelined behind a good one gets its 400 with ``Connection: close`` after
  the good response; before, the connection was closed silently (and a traceback logged).
- A request body trickled a byte at a time ends at ``timeouts.request_body`` with a 408; before,
  each byte restarted the body-idle timer and the request could last for ever.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import start_gateway
from tests.support.gateway import RawClient, RawResponse, free_port
from tests.support.origin import Origin

pytestmark = pytest.mark.integration

STARTUP_WAIT: Final = 40.0
#: ``request_head`` and ``request_body`` are short so that the timeouts run out quickly.
CONFIG: Final = """
entrypoints "web" {{
  address = "127.0.0.1:{port}"
  timeouts {{
    request_head = "500ms"
    request_body = "1s"
  }}
}}
routers "main" {{
  rule    = "PathPrefix(`/`)"
  service = "main"
}}
services "main" {{
  load_balancer {{
    servers = [{{ url = "http://127.0.0.1:{origin}" }}]
  }}
}}
management {{
  address = "127.0.0.1:{admin}"
}}
observability {{
  access_log_path = "{log}"
}}
shutdown_timeout_secs = 2
"""


class Gateway:
    """The CLI's ports and access-log file."""

    def __init__(self, port: int, admin: int, log: Path) -> None:
        self.port = port
        self.admin = admin
        self.log = log

    async def log_lines(self, count: int) -> list[dict[str, object]]:
        """The first ``count`` access-log lines, once written (the writer runs off the request
        path, so a line may land a moment after the response)."""
        log = trio.Path(self.log)
        with trio.fail_after(10):
            while True:
                if await log.exists():
                    lines = (await log.read_text(encoding="utf-8")).splitlines()
                    if len(lines) >= count:
                        return [json.loads(line) for line in lines]
                await trio.sleep(0.05)

    async def requests_total(self) -> Counter[tuple[str, str, str, str]]:
        """``a3s_http_requests_total`` by (router, service, method, code)."""
        client = await RawClient.connect(self.admin)
        try:
            await client.send(
                b"GET /api/gateway/metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
            )
            response = await client.response()
        finally:
            await client.aclose()
        assert response is not None
        assert response.status == 200
        totals: Counter[tuple[str, str, str, str]] = Counter()
        for family in text_string_to_metric_families(response.body.decode()):
            for sample in family.samples:
                if sample.name == "a3s_http_requests_total":
                    labels = sample.labels
                    key = (labels["router"], labels["service"], labels["method"], labels["code"])
                    totals[key] += int(sample.value)
        return totals


@pytest.fixture
async def gateway(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Gateway]:
    origin = Origin("refused")
    await nursery.start(origin.serve)
    port, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    config = tmp_path / "gateway.hcl"
    config.write_text(CONFIG.format(port=port, admin=admin, origin=origin.port, log=log))
    process = await start_gateway(str(config))
    try:
        with trio.fail_after(STARTUP_WAIT):
            await process.wait_for_line("listening entrypoint=web")
        yield Gateway(port, admin, log)
    finally:
        with trio.move_on_after(10):
            process.process.send_signal(signal.SIGTERM)
            await process.process.wait()
        if process.process.returncode is None:
            process.process.kill()
            with trio.CancelScope(shield=True):
                await process.process.wait()


async def _refused(port: int, data: bytes) -> tuple[RawResponse | None, bool]:
    """Send ``data`` on a new connection: the response and whether the gateway then closed."""
    client = await RawClient.connect(port)
    try:
        await client.send(data)
        response = await client.response()
        closed = await client.closed(5.0)
    finally:
        await client.aclose()
    return response, closed


#: (request, status, error word); each on its own connection.
REFUSALS: Final = (
    (b"GET / HTTP/1.1\r\nHost: h\r\nBad Field: x\r\n\r\n", 400, "bad_request"),
    (b"GET /x HTTP/1.1\r\nHost: h\r\n", 408, "head_timeout"),  # the head never ends
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n", 414, "target_too_long"),
    (b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 40000 + b"\r\n\r\n", 431, "head_too_large"),
    (
        b"POST /te HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        501,
        "unsupported_transfer_coding",
    ),
    (b"GET /v HTTP/2.0\r\nHost: h\r\n\r\n", 505, "version_not_supported"),
    (
        b"POST /chunks HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "bad_request",
    ),
)


async def test_refusals_are_logged_and_counted(gateway: Gateway) -> None:
    for data, status, _ in REFUSALS:
        response, closed = await _refused(gateway.port, data)
        assert response is not None, data[:40]
        assert response.status == status
        assert response.header(b"connection") == b"close"
        assert closed
    lines = await gateway.log_lines(len(REFUSALS))
    assert [(line["status"], line["error"]) for line in lines] == [
        (status, error) for _, status, error in REFUSALS
    ]
    for line in lines:
        assert (line["entrypoint"], line["router"], line["service"]) == ("web", "", "")
        assert (line["backend"], line["attempts"], line["upstream_ms"]) == ("", 0, None)
        assert line["peer_ip"] == line["client_ip"] == "127.0.0.1"
        assert isinstance(line["response_bytes"], int)
        assert line["response_bytes"] > 0
    # The request line of a complete head (Host once the head parsed); nothing otherwise.
    assert (lines[0]["method"], lines[0]["path"], lines[0]["host"]) == ("GET", "/", "")
    for incomplete in (lines[1], lines[2], lines[3]):
        assert (incomplete["method"], incomplete["path"]) == ("", "")
    assert (lines[4]["method"], lines[4]["path"]) == ("POST", "/te")
    assert (lines[5]["method"], lines[5]["path"], lines[5]["host"]) == ("GET", "/v", "h")
    assert (lines[6]["method"], lines[6]["path"], lines[6]["host"]) == ("POST", "/chunks", "h")
    # The 408 took the configured request_head, not zero.
    assert isinstance(lines[1]["duration_ms"], float)
    assert lines[1]["duration_ms"] >= 400
    totals = await gateway.requests_total()
    codes = Counter[str]()
    for (router, service, _, code), value in totals.items():
        assert (router, service) == ("", "")
        codes[code] += value
    assert codes == Counter({"400": 2, "408": 1, "414": 1, "431": 1, "501": 1, "505": 1})
    assert totals[("", "", "POST", "501")] == 1
    assert totals[("", "", "OTHER", "414")] == 1  # no method was read


async def test_a_malformed_request_behind_a_good_one_gets_its_400(gateway: Gateway) -> None:
    client = await RawClient.connect(gateway.port)
    try:
        await client.send(
            b"GET /good HTTP/1.1\r\nHost: h\r\n\r\n"
            b"GET /bad HTTP/1.1\r\nHost: h\r\nBad Field: x\r\n\r\n"
        )
        good = await client.response()
        bad = await client.response()
        closed = await client.closed(5.0)
    finally:
        await client.aclose()
    assert good is not None
    assert good.status == 200
    assert good.header(b"connection") is None
    assert bad is not None
    assert bad.status == 400
    assert bad.header(b"connection") == b"close"
    assert b"bad request" in bad.body
    assert closed
    lines = await gateway.log_lines(2)
    assert [(line["path"], line["status"], line["error"]) for line in lines] == [
        ("/good", 200, ""),
        ("/bad", 400, "bad_request"),
    ]
    assert lines[1]["router"] == ""
    totals = await gateway.requests_total()
    assert totals[("main", "main", "GET", "200")] == 1
    assert totals[("", "", "GET", "400")] == 1


async def test_a_trickled_request_body_ends_at_the_request_body_deadline(
    gateway: Gateway,
) -> None:
    """One byte every 100 ms never trips ``body_idle`` (60 s); ``request_body`` (1 s) ends it."""
    client = await RawClient.connect(gateway.port)
    sent = 0
    try:
        await client.send(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n")
        started = trio.current_time()

        async def trickle(cancel: trio.CancelScope) -> None:
            nonlocal sent
            with cancel:
                while sent < 1000 and await client.send(b"x"):
                    sent += 1
                    await trio.sleep(0.1)

        async with trio.open_nursery() as nursery:
            cancel = trio.CancelScope()
            nursery.start_soon(trickle, cancel)
            with trio.fail_after(8):
                response = await client.response(b"POST")
            elapsed = trio.current_time() - started
            cancel.cancel()
        closed = await client.closed(10.0)
    finally:
        await client.aclose()
    assert response is not None
    assert response.status == 408
    assert response.header(b"connection") == b"close"
    assert 0.9 <= elapsed < 5
    assert closed
    [line] = await gateway.log_lines(1)
    assert (line["status"], line["error"]) == (408, "body_timeout")
    assert (line["router"], line["method"], line["path"]) == ("main", "POST", "/upload")
    assert isinstance(line["request_bytes"], int)
    assert 1 <= line["request_bytes"] <= sent
    totals = await gateway.requests_total()
    assert totals[("main", "main", "POST", "408")] == 1
