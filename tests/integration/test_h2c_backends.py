"""``h2c://`` backends in the running gateway (SPEC §5.7 "HTTP/2 upstream", §7.4, §7.7): active
health probes over HTTP/2, mirror copies to an h2c service, and HTTP/1.1 and HTTP/2 clients
relayed to an HTTP/2-only backend, including a backend that dies before or during its answer.

The backends are real: the test HTTP/2 origin (``tests/support/h2_origin.py``: trio + h2, no
HTTP/1.1 at all) and, for response trailers, the demo's grpcio ``demo.Echo`` backend in its own
process (``tests/support/grpc_peer.py``). The gateway is in-process (``running_gateway``) and
the clients are curl (HTTP/1.1, and ``--http2-prior-knowledge``). Real sockets, so the real
clock: every wait is for a condition on a peer, bounded by the test's time limit or curl's
``--max-time``, never a sleep.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.support.gateway import (
    LOCAL,
    CurlResult,
    GatewayHandle,
    config_text,
    curl,
    free_port,
    running_gateway,
    server_entry,
    service_block,
)
from tests.support.grpc_peer import grpc_backend
from tests.support.h2_client import H2Client
from tests.support.h2_origin import H2Origin, OriginRequest
from tests.support.health import CHECK
from tests.support.origin import Origin

pytestmark = pytest.mark.integration

HTTP2: Final = "--http2-prior-knowledge"
#: curl's own flag for each client protocol the gateway is reached with.
CLIENTS: Final = ("--http1.1", HTTP2)


def h2c(port: int) -> str:
    """One ``servers`` element for an HTTP/2-only backend on ``port``."""
    return f'{{ url = "h2c://{LOCAL}:{port}" }}'


def requests_to(origin: H2Origin, path: bytes) -> list[OriginRequest]:
    """Every request ``origin`` received for ``path``, over all its connections."""
    return [
        request
        for conn in origin.connections
        for request in conn.requests.values()
        if request.path == path
    ]


def probes(origin: H2Origin) -> int:
    return len(requests_to(origin, b"/health"))


def copies(origin: H2Origin) -> list[tuple[bytes, int]]:
    """(path, body bytes received so far) of every request ``origin`` received."""
    return [
        (request.path, len(request.body))
        for conn in origin.connections
        for request in conn.requests.values()
    ]


@pytest.fixture
async def origin(nursery: trio.Nursery) -> H2Origin:
    server = H2Origin()
    await nursery.start(server.serve)
    return server


# -- active health over HTTP/2 ------------------------------------------------------------------


async def test_probes_speak_http2_and_a_dead_backend_is_marked_down(origin: H2Origin) -> None:
    """The live backend answers its probes (it speaks nothing but HTTP/2, so an HTTP/1.1 probe
    would have failed it) and keeps its traffic; the dead one is marked down, so with one
    connect attempt no request is sent there (a 502 otherwise, every second request)."""
    dead = free_port()
    config = config_text(
        [h2c(origin.port), h2c(dead)], balancer=CHECK + "    connect_attempts = 1\n"
    )
    async with running_gateway(config) as gw:
        # Every prober probes at once, then every 200 ms: by the live backend's third probe
        # the dead one's first (refused at once; one failure flips it) is long over.
        await origin.wait_for(lambda: probes(origin) >= 3)
        runtime = gw.gateway.runtime
        assert runtime is not None
        live_backend, dead_backend = runtime.services["main"].backends
        assert (live_backend.active_healthy, dead_backend.active_healthy) == (True, False)
        results = [await curl(gw.url(f"/work/{n}")) for n in range(6)]
    assert [r.response.status for r in results] == [200] * 6, [r.stderr for r in results]
    assert len(requests_to(origin, b"/work/5")) == 1
    probe = requests_to(origin, b"/health")[0]
    fields = dict(probe.headers)
    assert (fields[b":method"], fields[b":authority"]) == (
        b"GET",
        f"{LOCAL}:{origin.port}".encode(),
    )
    assert fields[b"user-agent"].startswith(b"a3s-gateway-health/")


# -- mirroring to an h2c service ----------------------------------------------------------------


async def test_a_mirror_copy_reaches_an_h2c_service(
    nursery: trio.Nursery, origin: H2Origin
) -> None:
    primary = Origin("primary")
    await nursery.start(primary.serve)
    mirror = '  mirror {\n    service = "shadow"\n    percentage = 100\n  }\n'
    config = config_text(
        [server_entry(primary)],
        service_extra=mirror,
        more=service_block("shadow", [h2c(origin.port)]),
    )
    async with running_gateway(config) as gw:
        posted = await curl(gw.url("/copy?n=1"), "--data-binary", "m" * 1000)
        fetched = await curl(gw.url("/copy?n=2"))
        await origin.wait_for(
            lambda: sorted(copies(origin)) == [(b"/copy?n=1", 1000), (b"/copy?n=2", 0)]
        )
    assert (posted.response.json()["origin"], fetched.response.json()["origin"]) == (
        "primary",
        "primary",
    )
    [copy] = requests_to(origin, b"/copy?n=1")
    fields = dict(copy.headers)
    assert (fields[b":method"], bytes(copy.body)) == (b"POST", b"m" * 1000)
    assert fields[b"x-forwarded-for"] == LOCAL.encode()  # as forwarded to the primary
    assert [r.target for r in primary.requests] == [b"/copy?n=1", b"/copy?n=2"]


# -- clients of either protocol -----------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_request_body_and_the_response_headers_cross(origin: H2Origin, client: str) -> None:
    async with running_gateway(config_text([h2c(origin.port)])) as gw:
        result = await curl(gw.url("/echo"), client, "--data-binary", "ping " * 2000)
    response = result.response
    assert (result.code, response.status, response.body) == (0, 200, b"ping " * 2000)
    assert response.header(b"x-conn") == b"1"  # the backend's own response header
    [request] = requests_to(origin, b"/echo")
    fields = dict(request.headers)
    assert (fields[b":method"], fields[b":scheme"]) == (b"POST", b"http")
    assert b"connection" not in fields  # no HTTP/1.1 hop-by-hop field on HTTP/2
    assert fields[b"via"] == (b"1.1 a3s-gateway" if client == "--http1.1" else b"2 a3s-gateway")


def split_dump(dump: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    """curl ``-D -`` output: the status line, and the trailers after the head's blank line."""
    head, _, trailers = dump.partition(b"\r\n\r\n")
    fields = {}
    for line in trailers.split(b"\r\n"):
        if line:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip()
    return head.split(b"\r\n")[0], fields


@pytest.mark.parametrize("client", CLIENTS)
async def test_response_trailers_reach_either_client(tmp_path: Path, client: str) -> None:
    """A grpcio backend ends its answer with trailers: over chunked encoding to an HTTP/1.1
    client, as an HTTP/2 HEADERS frame to an HTTP/2 one; the request body (one gRPC message)
    reaches it, and its answer comes back."""
    message = b"over h2c"
    frame = tmp_path / "request.bin"
    frame.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)
    body = tmp_path / "response.bin"
    async with grpc_backend() as backend, running_gateway(config_text([h2c(backend.port)])) as gw:
        done = await trio.run_process(
            [
                *("curl", "-sS", "--noproxy", "*", "--max-time", "30", client),
                *("-D", "-", "-o", str(body), "--data-binary", f"@{frame}"),
                *("-H", "content-type: application/grpc", "-H", "te: trailers"),
                gw.url("/demo.Echo/Unary"),
            ],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr
    status, trailers = split_dump(done.stdout)
    assert status.split()[1] == b"200"
    assert trailers[b"grpc-status"] == b"0"
    assert trailers[b"x-demo-size"] == str(len(message)).encode()
    assert body.read_bytes() == frame.read_bytes()  # the message, echoed in its frame


async def test_a_backend_dying_mid_body_cuts_the_response(origin: H2Origin) -> None:
    """``/die``: the head and some body, then the backend's socket closes. The client got a
    200 head, so the gateway can only cut the response: an HTTP/1.1 chunked body without its
    last chunk, an HTTP/2 stream reset after the DATA. (The HTTP/2 side is read frame by frame:
    curl drops what it buffered of a stream whose reset arrives in the same read, so its output
    there depends on how the bytes were segmented.)"""
    async with running_gateway(config_text([h2c(origin.port)])) as gw:
        result = await curl(gw.url("/die"), "--http1.1")
        client = await H2Client.connect(gw.port)
        try:
            reply = await client.reply(await client.request("/die"))
        finally:
            await client.aclose()
        also = await curl(gw.url("/die"), HTTP2)
    assert result.code == 18, result.stderr  # curl: "transfer closed with outstanding data"
    assert (result.response.status, result.response.body) == (200, b"partial")
    assert (reply.status, bytes(reply.body), reply.ended) == (200, b"partial", False)
    assert reply.reset not in (None, 0)  # reset, and not with NO_ERROR: the answer is cut
    assert also.code == 92, also.stderr  # curl: "stream was not closed cleanly"


@pytest.mark.parametrize("client", CLIENTS)
async def test_a_backend_dying_before_its_head_is_a_502(nursery: trio.Nursery, client: str) -> None:
    """``/hold`` waits; the backend then goes away (its connections close) with the request
    unanswered: the client gets a 502."""
    origin = H2Origin()
    alive = trio.CancelScope()
    outcome: list[CurlResult] = []

    async def serve(*, task_status: trio.TaskStatus[None]) -> None:
        with alive:
            await origin.serve(task_status=task_status)

    async def ask(gw: GatewayHandle) -> None:
        outcome.append(await curl(gw.url("/hold"), client))

    await nursery.start(serve)
    config = config_text([h2c(origin.port)])
    async with running_gateway(config) as gw, trio.open_nursery() as clients:
        clients.start_soon(ask, gw)
        await origin.wait_for(lambda: len(requests_to(origin, b"/hold")) == 1)
        alive.cancel()  # the origin's listener and connections close
    [result] = outcome
    assert (result.code, result.response.status) == (0, 502), result.stderr
