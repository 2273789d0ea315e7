"""The HTTP/2 server end to end (issue #18; SPEC §5.1, §5.5, §5.8): real clients through an
in-process gateway to HTTP/1.1 test origins.

- ``curl --http2-prior-knowledge`` (h2c) downloads and uploads 5 MiB, checked by SHA-256;
  ``curl --http2`` over TLS agrees on h2 by ALPN.
- ``nghttp`` runs several streams on one connection while one of them is held upstream;
  ``h2load -n 500 -c 2 -m 16`` gets 500 2xx answers.
- The raw client (``tests/support/h2_client.py``) checks what the tools cannot show: trailers
  of a chunked upstream relayed as HTTP/2 trailers; a client RST_STREAM closing that stream's
  upstream connection while another stream on the same connection carries on; the drain's
  GOAWAY pair with an in-flight stream finishing and a later stream refused; the idle GOAWAY
  after ``timeouts.idle``; the access log's ``HTTP/2``.

Real sockets mean trio's real clock: every wait is bounded, conditions are awaited (the
origin's ``wait_for``, the client's ``wait``), never slept on.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest
import trio
from hyperframe.frame import GoAwayFrame, WindowUpdateFrame

from tests.support.gateway import (
    CLIENT_WAIT,
    GatewayHandle,
    config_text,
    curl,
    curl_digest,
    curl_lines,
    need_tool,
    running_gateway,
    server_entry,
)
from tests.support.h2_client import H2Client
from tests.support.origin import (
    BLOCK,
    ChunkedWithTrailers,
    Download,
    Origin,
    SlowHead,
    pattern,
    pattern_sha256,
)
from tests.support.tls import Authority

pytestmark = pytest.mark.integration

MIB: Final = 1 << 20
H2C: Final = "--http2-prior-knowledge"
#: RFC 9113 §7 error codes.
NO_ERROR: Final = 0x0
CANCEL: Final = 0x8
REFUSED_STREAM: Final = 0x7
LAST_STREAM: Final = 2**31 - 1


@pytest.fixture(autouse=True)
def need_curl() -> None:
    need_tool("curl", "to speak HTTP/2 to the gateway")


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("h2")
    await nursery.start(server.serve)
    return server


@asynccontextmanager
async def gateway_for(
    origin: Origin, entrypoint: str = "", more: str = ""
) -> AsyncIterator[GatewayHandle]:
    async with running_gateway(
        config_text([server_entry(origin)], entrypoint=entrypoint, more=more)
    ) as handle:
        yield handle


# -- curl -----------------------------------------------------------------------------------


async def test_curl_prior_knowledge_downloads_5_mib(origin: Origin) -> None:
    origin.on("/big", Download(5 * MIB))
    origin.on("/big-chunked", Download(5 * MIB, chunked=True))
    async with gateway_for(origin) as handle:
        for path in ("/big", "/big-chunked"):
            got = await curl_digest(H2C, handle.url(path))
            assert (got.code, got.status) == (0, 200), got.stderr
            assert got.size == 5 * MIB
            assert got.sha256 == pattern_sha256(5 * MIB)
        code, lines, stderr = await curl_lines(
            H2C, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", handle.url("/big")
        )
        assert (code, lines) == (0, ["2 200"]), stderr


async def test_curl_prior_knowledge_uploads_5_mib(origin: Origin, tmp_path: Path) -> None:
    upload = tmp_path / "upload.bin"
    with upload.open("wb") as out:
        for piece in pattern(5 * MIB):
            out.write(piece)
    async with gateway_for(origin) as handle:
        done = await curl(
            H2C, "--data-binary", f"@{upload}", "-H", "content-type: x/y", handle.url("/up")
        )
    assert done.code == 0, done.stderr
    echoed = done.response.json()
    assert echoed["method"] == "POST"
    assert echoed["body_length"] == 5 * MIB
    assert echoed["body_sha256"] == pattern_sha256(5 * MIB)
    [seen] = origin.requests
    assert seen.complete
    assert seen.header(b"content-length") == str(5 * MIB).encode()
    assert seen.header(b"host") == f"127.0.0.1:{handle.port}".encode()


async def test_curl_agrees_on_h2_by_alpn_over_tls(origin: Origin, tmp_path: Path) -> None:
    authority = Authority(tmp_path / "pki")
    cert, key = authority.server_pair("site", "site.example.test")
    tls = f'  tls {{\n    cert_file = "{cert}"\n    key_file = "{key}"\n  }}\n'
    origin.on("/big", Download(MIB))
    async with gateway_for(origin, entrypoint=tls) as handle:
        url = f"https://site.example.test:{handle.port}"
        resolve = ("--resolve", f"site.example.test:{handle.port}:127.0.0.1")
        ca = ("--cacert", str(authority.ca_file))
        code, lines, stderr = await curl_lines(
            "--http2", *resolve, *ca, "-o", "/dev/null", "-w", "%{http_version}", f"{url}/"
        )
        assert (code, lines) == (0, ["2"]), stderr
        got = await curl_digest("--http2", *resolve, *ca, f"{url}/big")
        assert (got.code, got.status, got.sha256) == (0, 200, pattern_sha256(MIB)), got.stderr
        # Offered only HTTP/1.1, the same entrypoint answers HTTP/1.1.
        code, lines, stderr = await curl_lines(
            "--http1.1", *resolve, *ca, "-o", "/dev/null", "-w", "%{http_version}", f"{url}/"
        )
        assert (code, lines) == (0, ["1.1"]), stderr
    forwarded = dict(origin.requests[0].headers)
    assert forwarded[b"x-forwarded-proto"] == b"https"


# -- nghttp and h2load ----------------------------------------------------------------------

_NGHTTP_ROW: Final = re.compile(r"^\s*\d+\s+\S+\s+\S+\s+\S+\s+(\d{3})\s+\S+\s+(\S+)\s*$")


async def test_nghttp_streams_run_concurrently_on_one_connection(origin: Origin) -> None:
    need_tool("nghttp", "to open several HTTP/2 streams at once")
    release = trio.Event()
    origin.on("/held", SlowHead(release))
    fast = [f"/fast/{index}" for index in range(8)]
    async with gateway_for(origin) as handle, trio.open_nursery() as nursery:
        result: list[subprocess.CompletedProcess[bytes]] = []

        async def run() -> None:
            urls = [handle.url("/held"), *(handle.url(path) for path in fast)]
            done = await trio.run_process(
                ["nghttp", "-n", "-s", "-t", "20", *urls],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            result.append(done)

        nursery.start_soon(run)
        # Every other stream reaches the origin while the first one is still held.
        with trio.fail_after(CLIENT_WAIT):
            await origin.wait_for(lambda: len(origin.completed) == 1 + len(fast))
        assert not result
        release.set()
    [done] = result
    assert done.returncode == 0, done.stderr
    rows = [_NGHTTP_ROW.match(line) for line in done.stdout.decode().splitlines()]
    answered = sorted((row[2], int(row[1])) for row in rows if row is not None)
    assert answered == sorted([("/held", 200), *((path, 200) for path in fast)])
    assert origin.connections >= 2  # the held stream kept its upstream connection busy


async def test_h2load_gets_only_2xx(origin: Origin) -> None:
    need_tool("h2load", "to run many HTTP/2 streams on a few connections")
    async with gateway_for(origin) as handle:
        done = await trio.run_process(
            ["h2load", "-n", "500", "-c", "2", "-m", "16", handle.url("/api/hello")],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert "requests: 500 total, 500 started, 500 done, 500 succeeded, 0 failed" in out, out
    assert "status codes: 500 2xx, 0 3xx, 0 4xx, 0 5xx" in out, out
    assert len(origin.completed) == 500


# -- the raw client -------------------------------------------------------------------------


async def test_upstream_trailers_reach_the_client_as_trailers(origin: Origin) -> None:
    trailers = ((b"x-checksum", b"abc"), (b"grpc-status", b"0"))
    origin.on("/trailers", ChunkedWithTrailers((b"one,", b"two"), trailers))
    async with gateway_for(origin) as handle:
        client = await H2Client.connect(handle.port)
        try:
            reply = await client.reply(await client.request("/trailers"))
        finally:
            await client.aclose()
    assert reply.status == 200
    assert bytes(reply.body) == b"one,two"
    assert reply.trailers == list(trailers)
    # The HTTP/1.1 framing stayed behind: no connection-specific field in the head.
    names = {name for name, _ in reply.headers}
    assert names.isdisjoint({b"transfer-encoding", b"connection", b"keep-alive"})


class HoldingOrigin:
    """An HTTP/1.1 origin that starts a chunked response to ``/slow`` and then only watches
    for the gateway closing the connection (``closed``); other paths get a whole response."""

    def __init__(self) -> None:
        self.port = 0
        self.slow_started = trio.Event()
        self.closed = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = int(listeners[0].socket.getsockname()[1])
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
            if not head.startswith(b"GET /slow "):
                body = b"quick"
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\n" + body
                )
                return
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"
            )
            self.slow_started.set()
            try:
                while await stream.receive_some(65536):
                    pass
            except trio.BrokenResourceError:
                pass
            self.closed.set()


async def test_a_client_reset_closes_its_upstream_and_spares_the_other_streams(
    origin: Origin, nursery: trio.Nursery, tmp_path: Path
) -> None:
    holding = HoldingOrigin()
    await nursery.start(holding.serve)
    release = trio.Event()
    origin.on("/held", SlowHead(release))
    more = (
        'routers "slow" {\n  rule = "PathPrefix(`/slow`) || PathPrefix(`/quick`)"\n'
        '  service = "slow"\n}\n'
        f'services "slow" {{\n  load_balancer {{\n    servers = [{server_entry(holding.port)}]\n'
        "  }\n}\n"
        f'observability {{\n  access_log_path = "{tmp_path / "access.log"}"\n}}\n'
    )
    async with gateway_for(origin, more=more) as handle:
        client = await H2Client.connect(handle.port)
        try:
            held = await client.request("/held")
            slow = await client.request("/slow")
            with trio.fail_after(CLIENT_WAIT):
                await holding.slow_started.wait()
                await client.wait(lambda: bytes(client.replies[slow].body) == b"first")
                await origin.wait_for(lambda: origin.heads == 1)
            await client.reset(slow, CANCEL)
            # The exchange is cancelled: its upstream HTTP/1.1 connection is closed.
            with trio.fail_after(CLIENT_WAIT):
                await holding.closed.wait()
            # The connection and its other streams carry on.
            quick = await client.reply(await client.request("/quick"))
            assert (quick.status, bytes(quick.body)) == (200, b"quick")
            release.set()
            reply = await client.reply(held)
            assert reply.status == 200
            assert reply.ended
            assert json.loads(reply.body)["target"] == "/held"
            assert client.replies[slow].reset is None  # the client reset it: no answer
            assert client.goaways == []
        finally:
            await client.aclose()
    lines = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
    errors = {line["path"]: line["error"] for line in lines}
    assert errors["/slow"] == "client_abort"  # the client's doing, not a shutdown
    assert errors["/held"] == ""


async def test_a_drain_sends_goaway_and_finishes_the_stream_in_flight(origin: Origin) -> None:
    release = trio.Event()
    origin.on("/held", SlowHead(release))
    async with gateway_for(origin) as handle:
        client = await H2Client.connect(handle.port)
        try:
            held = await client.request("/held")
            with trio.fail_after(CLIENT_WAIT):
                await origin.wait_for(lambda: origin.heads == 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handle.gateway.shutdown, 10.0)
                with trio.fail_after(CLIENT_WAIT):
                    # The first GOAWAY announces every stream, its PING is answered (the
                    # client does), the second names the last stream really accepted.
                    await client.wait(lambda: len(client.goaways) >= 2)
                assert [f.last_stream_id for f in client.goaways] == [LAST_STREAM, held]
                assert client.goaway_codes() == [NO_ERROR, NO_ERROR]
                # A stream opened after the GOAWAY is refused; the one in flight finishes.
                late = await client.request("/late")
                refused = await client.reply(late)
                assert refused.reset == REFUSED_STREAM
                release.set()
                reply = await client.reply(held)
                assert (reply.status, reply.ended) == (200, True)
                assert await client.closed()
        finally:
            await client.aclose()
    assert [request.path for request in origin.requests] == [b"/held"]


async def test_a_client_goaway_lets_its_stream_in_flight_finish(origin: Origin) -> None:
    release = trio.Event()
    origin.on("/held", SlowHead(release))
    async with gateway_for(origin) as handle:
        client = await H2Client.connect(handle.port)
        try:
            held = await client.request("/held")
            with trio.fail_after(CLIENT_WAIT):
                await origin.wait_for(lambda: origin.heads == 1)
            # The client says it is done (GOAWAY NO_ERROR) while its stream is in flight.
            goaway = GoAwayFrame(0)
            goaway.last_stream_id = 0
            goaway.error_code = NO_ERROR
            assert await client.send_frames(goaway)
            release.set()
            reply = await client.reply(held)
            assert (reply.status, reply.ended, reply.reset) == (200, True, None)
            assert await client.closed()  # then the gateway ends the connection
        finally:
            await client.aclose()


async def test_an_idle_connection_gets_goaway_after_the_idle_timeout(origin: Origin) -> None:
    entry = '  timeouts {\n    idle = "1s"\n  }\n'
    async with gateway_for(origin, entrypoint=entry) as handle:
        client = await H2Client.connect(handle.port)
        try:
            reply = await client.reply(await client.request("/one"))
            assert reply.status == 200
            answered = trio.current_time()
            assert await client.closed(wait=10.0)
            waited = trio.current_time() - answered
        finally:
            await client.aclose()
    assert client.goaway_codes() == [NO_ERROR]
    assert client.goaways[0].last_stream_id == 1
    assert 0.8 <= waited < 5.0


async def test_a_stream_in_flight_is_not_idle(origin: Origin) -> None:
    entry = '  timeouts {\n    idle = "1s"\n  }\n'
    release = trio.Event()
    origin.on("/held", SlowHead(release))
    async with gateway_for(origin, entrypoint=entry) as handle:
        client = await H2Client.connect(handle.port)
        try:
            held = await client.request("/held")
            with trio.fail_after(CLIENT_WAIT):
                await origin.wait_for(lambda: origin.heads == 1)
            # Well past the idle timeout with the stream open: no GOAWAY, no close.
            assert not await client.closed(wait=2.0)
            assert client.goaways == []
            release.set()
            assert (await client.reply(held)).status == 200
        finally:
            await client.aclose()


async def test_the_access_log_says_http2(origin: Origin, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    more = f'observability {{\n  access_log_path = "{log}"\n}}\n'
    async with gateway_for(origin, more=more) as handle:
        done = await curl(H2C, handle.url("/logged"))
        assert done.code == 0, done.stderr
        done = await curl("--http1.1", handle.url("/logged"))
        assert done.code == 0, done.stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["protocol"] for line in lines] == ["HTTP/2", "HTTP/1.1"]
    assert [line["status"] for line in lines] == [200, 200]


async def test_open_connections_counts_http2_as_http2(origin: Origin) -> None:
    async with gateway_for(origin) as handle:
        client = await H2Client.connect(handle.port)
        try:
            await client.reply(await client.request("/counted"))
            text = await handle.gateway.metrics_exposition()
        finally:
            await client.aclose()
    assert text is not None
    assert 'a3s_open_connections{entrypoint="web",protocol="http2"} 1.0' in text.decode()


async def test_an_upload_goes_on_only_with_the_gateways_window_updates(origin: Origin) -> None:
    # 3 MiB through a stream window of 64 KiB: the client sends only within the windows, so
    # the upload completes only because the gateway re-opens them as the origin takes bytes.
    body = BLOCK * 48
    async with gateway_for(origin) as handle:
        client = await H2Client.connect(handle.port)
        try:
            stream_id = await client.request("/upload", method="POST", body=body)
            reply = await client.reply(stream_id)
        finally:
            await client.aclose()
    assert reply.status == 200
    echoed = json.loads(reply.body)
    assert echoed["body_length"] == len(body)
    assert echoed["body_sha256"] == hashlib.sha256(body).hexdigest()
    updates = [f for f in client.frames if isinstance(f, WindowUpdateFrame)]
    assert sum(f.window_increment for f in updates if f.stream_id == stream_id) >= len(body) // 2


# -- h2c upgrade (SPEC §5.1 item 3) -----------------------------------------------------------


async def test_curl_upgrades_plain_http_to_h2c(origin: Origin) -> None:
    async with gateway_for(origin) as handle:
        code, lines, stderr = await curl_lines(
            "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", handle.url("/up")
        )
        assert (code, lines) == (0, ["2 200"]), stderr
        # With a body the request is not upgraded (bodiless GETs only): HTTP/1.1 answers.
        code, lines, stderr = await curl_lines(
            "--http2", "-d", "abc", "-o", "/dev/null", "-w", "%{http_version}", handle.url("/up")
        )
        assert (code, lines) == (0, ["1.1"]), stderr
    upgraded, posted = origin.requests
    for seen in (upgraded, posted):
        names = {name for name, _ in seen.headers}
        assert names.isdisjoint({b"upgrade", b"http2-settings", b"connection"})
    assert upgraded.values(b"via") == [b"2 a3s-gateway"]
    assert posted.values(b"via") == [b"1.1 a3s-gateway"]


async def test_nghttp_upgrades_and_goes_on_with_more_streams(origin: Origin) -> None:
    need_tool("nghttp", "to upgrade with Upgrade: h2c")
    async with gateway_for(origin) as handle:
        urls = [handle.url(f"/u/{index}") for index in range(4)]
        done = await trio.run_process(
            ["nghttp", "-u", "-n", "-s", "-t", "20", *urls],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    rows = [_NGHTTP_ROW.match(line) for line in done.stdout.decode().splitlines()]
    answered = sorted((row[2], int(row[1])) for row in rows if row is not None)
    assert answered == [(f"/u/{index}", 200) for index in range(4)]
    assert sorted(r.target for r in origin.completed) == [f"/u/{i}".encode() for i in range(4)]


async def test_without_h2c_the_upgrade_is_ignored(origin: Origin) -> None:
    async with gateway_for(origin, entrypoint="  h2c = false\n") as handle:
        code, lines, stderr = await curl_lines(
            "--http2", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", handle.url("/up")
        )
        assert (code, lines) == (0, ["1.1 200"]), stderr
    [seen] = origin.requests
    assert seen.header(b"upgrade") is None
