"""The real CLI proxying real traffic (SPEC §2.1, §2.4, §5.5, §5.6): ``python -m a3s_gateway run``
as a subprocess on a fixed free port, a test origin in this process, curl as the client.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.support.cli import FIXTURES, RunningGateway, start_gateway
from tests.support.gateway import (
    CLIENT_WAIT,
    CurlResult,
    config_text,
    curl,
    free_port,
    router_block,
    server_entry,
    service_block,
    wait_refused,
)
from tests.support.origin import Fixed, Origin, SlowHead

pytestmark = pytest.mark.integration

#: Bound on the subprocess's start (interpreter, imports, bind); generous for loaded machines.
STARTUP_WAIT: Final = 40.0


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("cli")
    await nursery.start(server.serve)
    return server


@asynccontextmanager
async def cli_gateway(tmp_path: Path, text: str) -> AsyncIterator[RunningGateway]:
    """Run the CLI on ``text`` until the block ends; the process never outlives the test."""
    config = tmp_path / "gateway.hcl"
    config.write_text(text, encoding="utf-8")
    gateway = await start_gateway(str(config))
    try:
        with trio.fail_after(STARTUP_WAIT):
            # SPEC §2.6: one line per listener once it is bound.
            await gateway.wait_for_line("listening entrypoint=web")
        yield gateway
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()


async def stop(gateway: RunningGateway) -> int:
    """SIGTERM, then the exit code (bounded)."""
    gateway.process.send_signal(signal.SIGTERM)
    with trio.fail_after(CLIENT_WAIT):
        return await gateway.process.wait()


async def test_requests_are_proxied_through_the_cli(origin: Origin, tmp_path: Path) -> None:
    port = free_port()
    async with cli_gateway(tmp_path, config_text([server_entry(origin)], port=port)) as gateway:
        result = await curl(f"http://127.0.0.1:{port}/via-cli?x=1", "--data-binary", "hello")
        code = await stop(gateway)
    assert code == 0
    assert result.code == 0, result.stderr
    assert result.response.status == 200
    assert result.response.json()["origin"] == "cli"
    [seen] = origin.requests
    assert (seen.method, seen.target, seen.body_length) == (b"POST", b"/via-cli?x=1", 5)
    assert seen.values(b"via") == [b"1.1 a3s-gateway"]


async def test_the_seed_readme_quick_start_proxies_real_traffic(
    origin: Origin, tmp_path: Path
) -> None:
    # The seed README's quick-start file as it is, but for the backend's port (8001 there).
    seed = (FIXTURES / "quickstart.hcl").read_text(encoding="utf-8")
    assert '"http://127.0.0.1:8001"' in seed
    config = tmp_path / "gateway.hcl"
    config.write_text(seed.replace(":8001", f":{origin.port}"), encoding="utf-8")
    port = free_port()
    gateway = await start_gateway(str(config), "--listen", f"127.0.0.1:{port}")
    try:
        with trio.fail_after(STARTUP_WAIT):
            await gateway.wait_for_line("listening entrypoint=web")
        api = await curl(f"http://127.0.0.1:{port}/api/users?page=2")
        other = await curl(f"http://127.0.0.1:{port}/elsewhere")
        code = await stop(gateway)
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()
    assert code == 0
    assert api.response.status == 200, api.stderr
    assert api.response.json()["target"] == "/api/users?page=2"
    assert other.response.status == 404
    assert [seen.target for seen in origin.requests] == [b"/api/users?page=2"]


async def test_error_statuses_through_the_cli(origin: Origin, tmp_path: Path) -> None:
    release = trio.Event()
    origin.on("/slow/x", SlowHead(release))
    port = free_port()
    more = (
        router_block("refused", "PathPrefix(`/refused`)", "refused")
        + service_block("refused", [server_entry(free_port())], balancer="connect_attempts = 1")
        + router_block("drained", "PathPrefix(`/drained`)", "drained")
        + service_block("drained", [server_entry(origin, weight=0)])
        + router_block("slow", "PathPrefix(`/slow`)", "slow")
        + service_block(
            "slow", [server_entry(origin)], balancer='response_header_timeout = "200ms"'
        )
    )
    text = config_text([server_entry(origin)], rule="PathPrefix(`/ok`)", more=more, port=port)
    async with cli_gateway(tmp_path, text) as gateway:
        results = {
            path: await curl(f"http://127.0.0.1:{port}{path}")
            for path in ("/refused", "/drained", "/slow/x", "/ok", "/missing")
        }
        release.set()
        code = await stop(gateway)
    assert code == 0
    statuses = {path: result.response.status for path, result in results.items()}
    assert statuses == {
        "/refused": 502,
        "/drained": 503,
        "/slow/x": 504,
        "/ok": 200,
        "/missing": 404,
    }
    assert results["/refused"].response.json() == {"error": "bad gateway", "status": 502}
    assert results["/drained"].response.json() == {"error": "no available backend", "status": 503}
    assert results["/slow/x"].response.json() == {"error": "gateway timeout", "status": 504}


async def test_sigterm_lets_the_request_in_flight_finish(origin: Origin, tmp_path: Path) -> None:
    release = trio.Event()
    origin.on("/slow", SlowHead(release))
    port = free_port()
    results: list[CurlResult] = []

    async def slow_client() -> None:
        results.append(await curl(f"http://127.0.0.1:{port}/slow"))

    config = config_text([server_entry(origin)], port=port)
    async with cli_gateway(tmp_path, config) as gateway, trio.open_nursery() as nursery:
        nursery.start_soon(slow_client)
        with trio.fail_after(CLIENT_WAIT):
            await origin.wait_for(lambda: len(origin.completed) == 1)
            gateway.process.send_signal(signal.SIGTERM)
            await gateway.wait_for_line("draining")
            await wait_refused(port)
        assert gateway.process.returncode is None, "exited with a request in flight"
        release.set()
        with trio.fail_after(CLIENT_WAIT):
            code = await gateway.process.wait()
    assert code == 0
    [result] = results
    assert result.code == 0, result.stderr
    assert result.response.status == 200
    assert result.response.header(b"connection") == b"close"
    assert result.response.json()["target"] == "/slow"


async def test_sticky_affinity_and_health_survive_a_real_restart(
    origin: Origin, tmp_path: Path, nursery: trio.Nursery
) -> None:
    other = Origin("other")
    await nursery.start(other.serve)
    other.on("/health", Fixed(503, b"down"))
    port = free_port()
    balancer = (
        '    sticky {\n      cookie = "pin"\n      secret = "0123456789abcdef0123"\n    }\n'
        # (a probe timeout of 150 ms once failed "cli"'s own probe under a loaded CI machine:
        # both backends down, a 503 instead of the pinned answer)
        '    health_check {\n      path = "/health"\n      interval = "500ms"\n'
        '      timeout = "450ms"\n      unhealthy_threshold = 1\n    }\n'
    )
    text = config_text([server_entry(origin), server_entry(other)], balancer=balancer, port=port)
    async with cli_gateway(tmp_path, text) as gateway:
        # "other" fails its probes: once the gateway has seen one, it gets no traffic.
        with trio.fail_after(CLIENT_WAIT):
            await other.wait_for(lambda: sum(r.path == b"/health" for r in other.requests) >= 2)
        first = await curl(f"http://127.0.0.1:{port}/a")
        assert await stop(gateway) == 0
    cookie = (first.response.header(b"set-cookie") or b"").decode().split(";")[0]
    assert first.response.json()["origin"] == "cli"
    assert cookie.startswith("pin=1.")
    async with cli_gateway(tmp_path, text) as gateway:
        again = [await curl(f"http://127.0.0.1:{port}/b", "-b", cookie) for _ in range(3)]
        assert await stop(gateway) == 0
    assert [r.response.json()["origin"] for r in again] == ["cli"] * 3
    assert all(r.response.header(b"set-cookie") is None for r in again)
    assert not [r for r in other.requests if r.path != b"/health"]


async def test_a_backend_answering_5xx_is_drained_through_the_cli(
    origin: Origin, tmp_path: Path, nursery: trio.Nursery
) -> None:
    broken = Origin("broken")
    await nursery.start(broken.serve)
    broken.on("/work", Fixed(500, b"boom"))
    port = free_port()
    balancer = '    passive_health {\n      error_threshold = 2\n      window = "30s"\n    }\n'
    text = config_text([server_entry(origin), server_entry(broken)], balancer=balancer, port=port)
    async with cli_gateway(tmp_path, text) as gateway:
        first = [await curl(f"http://127.0.0.1:{port}/work") for _ in range(4)]
        after = [await curl(f"http://127.0.0.1:{port}/work") for _ in range(4)]
        assert await stop(gateway) == 0
    # Round-robin until the broken backend has answered 500 twice; then only the good one.
    assert [r.response.status for r in first] == [200, 500, 200, 500]
    assert [r.response.status for r in after] == [200] * 4
    assert sum(r.path == b"/work" for r in broken.requests) == 2
