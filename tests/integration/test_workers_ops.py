"""The management API of ``run --workers 2`` through the real CLI (SPEC §13.4, §9.6, §9.1).

One supervisor subprocess with two spawned workers in front of the test origin; every request
on a new connection (one curl process each), so ``SO_REUSEPORT`` spreads them over both
workers. Checked on the supervisor's management port: ``/metrics`` (parsed with
``prometheus_client``) sums ``a3s_http_requests_total`` over the workers to exactly the number
of requests sent; ``/health`` reports 2 workers and the summed requests; ``/ready`` is 200;
``/entrypoints`` and ``/backends`` come from the workers' reports; the token is required and a
reloaded allow list that excludes the client answers 403 (through ``POST /reload``, the
supervisor's reload path). Killing one worker (SIGKILL) makes ``/ready`` 503 with a reason until
it is restarted, while the scrape still answers with the whole total (the gone worker's counts
are kept) and ``/health`` with the survivor's share — strictly between 0 and the total, which
shows the traffic reached both workers.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path
from typing import Final

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.supervisor.test_workers import exited, worker_pids
from tests.support.cli import cli_env, start_gateway
from tests.support.gateway import CurlResult, config_text, curl, free_port, need_tool, server_entry
from tests.support.origin import Origin

pytestmark = pytest.mark.integration

STARTUP_WAIT: Final = 40.0
TOKEN: Final = "fleet-test-token-5f1c0a9e"
REQUESTS: Final = 24


@pytest.fixture(autouse=True)
def need_curl() -> None:
    need_tool("curl", "to drive the gateway and its management API")


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("fleet")
    await nursery.start(server.serve)
    return server


def fleet_config(origin: Origin, port: int, admin: int, *, allowed: str | None = None) -> str:
    allowed_line = f"  allowed_ips = [{allowed}]\n" if allowed is not None else ""
    more = (
        "management {\n"
        f'  address = "127.0.0.1:{admin}"\n'
        '  auth_token_env = "FLEET_ADMIN_TOKEN"\n'
        f"{allowed_line}"
        "}\n"
        # Reloads come from POST /reload only (no file watcher racing it).
        "providers {\n  file {\n    watch = false\n  }\n}\n"
    )
    return config_text([server_entry(origin)], port=port, more=more)


def served(scrape: CurlResult) -> float:
    """``a3s_http_requests_total`` of router ``main`` with code 200 in a scrape."""
    families = text_string_to_metric_families(scrape.response.body.decode())
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "a3s_http_requests_total"
        and sample.labels["router"] == "main"
        and sample.labels["code"] == "200"
    )


async def test_the_supervisor_serves_one_management_api_for_both_workers(
    origin: Origin, tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    path = tmp_path / "gateway.hcl"
    path.write_text(fleet_config(origin, port, admin), encoding="utf-8")
    gateway = await start_gateway(
        str(path), "--workers", "2", env=cli_env({"FLEET_ADMIN_TOKEN": TOKEN})
    )
    api = f"http://127.0.0.1:{admin}/api/gateway"
    bearer = ("-H", f"authorization: Bearer {TOKEN}")
    try:
        with trio.fail_after(STARTUP_WAIT):
            await gateway.wait_for_line("workers ready: 2")
        for _ in range(REQUESTS):  # one curl process each: a new connection per request
            assert (await curl(f"http://127.0.0.1:{port}/spread")).response.status == 200

        started = time.perf_counter()
        scrape = await curl(f"{api}/metrics", *bearer)
        scrape_ms = (time.perf_counter() - started) * 1000
        health = await curl(f"{api}/health")
        ready = await curl(f"{api}/ready")
        entrypoints = await curl(f"{api}/entrypoints", *bearer)
        backends = await curl(f"{api}/backends", *bearer)
        config = await curl(f"{api}/config", *bearer)
        routes = await curl(f"{api}/routes", *bearer)
        version = await curl(f"{api}/version", *bearer)
        no_token = await curl(f"{api}/metrics")
        wrong_token = await curl(f"{api}/metrics", "-H", "authorization: Bearer nope")

        assert scrape.response.status == 200
        assert served(scrape) == REQUESTS
        assert TOKEN not in scrape.response.body.decode()
        print(f"scrape with 2 workers (curl included): {scrape_ms:.1f} ms")
        assert health.response.status == 200
        document = health.response.json()
        assert document["workers"] == 2
        assert document["state"] == "running"
        assert document["total_requests"] == REQUESTS
        assert ready.response.status == 200
        assert [(e["name"], e["bound"]) for e in json.loads(entrypoints.response.body)] == [
            ("web", [f"127.0.0.1:{port}"])
        ]
        listed = json.loads(backends.response.body)
        assert [(b["url"], b["in_flight"], b["healthy"]) for b in listed] == [
            (f"http://127.0.0.1:{origin.port}", 0, True)
        ]
        shown = json.loads(config.response.body)  # the supervisor's validated config
        assert shown["entrypoints"]["web"]["address"] == f"127.0.0.1:{port}"
        assert [r["name"] for r in json.loads(routes.response.body)] == ["main"]
        assert version.response.json()["name"] == "a3s-gateway"
        assert no_token.response.status == wrong_token.response.status == 401

        # One worker killed: /ready is 503 until its restart; the scrape still answers.
        supervisor = gateway.process.pid
        first, second = sorted(worker_pids(supervisor))
        os.kill(first, signal.SIGKILL)
        with trio.fail_after(STARTUP_WAIT):
            # "worker N (pid P) was killed by SIGKILL; restarting in 1s": slot N is not ready.
            crash = await gateway.wait_for_line("restarting in 1s")
            missing = await curl(f"{api}/ready")
            during = await curl(f"{api}/metrics", *bearer)
            health_during = await curl(f"{api}/health")
            while not exited(first):  # noqa: ASYNC110 -- /proc state; no event to wait for
                await trio.sleep(0.05)
            await gateway.wait_for_line("restarted")
        found = re.search(r"worker (\d+) \(pid (\d+)\)", crash)
        assert found is not None
        slot, pid = found.groups()
        assert int(pid) == first
        assert missing.response.status == 503
        assert missing.response.json() == {
            "ready": False,
            "reason": f"1 of 2 workers ready (worker {slot} down)",
        }
        assert during.response.status == 200
        # The gone worker's counts stay in the totals (no dip, no false counter reset)...
        assert served(during) == REQUESTS
        # ...while the live report is the survivor's share alone: both workers served.
        live = health_during.response.json()["total_requests"]
        assert isinstance(live, int)
        assert 0 < live < REQUESTS
        back = await curl(f"{api}/ready")
        assert back.response.status == 200
        assert (await curl(f"{api}/health")).response.json()["workers"] == 2
        assert second in worker_pids(supervisor)

        # A reloaded allow list without 127.0.0.1: 403 even with the token; probes stay open.
        path.write_text(fleet_config(origin, port, admin, allowed='"10.0.0.0/8"'), "utf-8")
        reloaded = await curl("-X", "POST", f"{api}/reload", *bearer)
        assert reloaded.response.status == 200
        assert reloaded.response.json()["generation"] == 2
        refused = await curl(f"{api}/metrics", *bearer)
        assert refused.response.status == 403
        assert (await curl(f"{api}/live")).response.status == 200

        gateway.process.send_signal(signal.SIGTERM)
        with trio.fail_after(30):
            assert await gateway.process.wait() == 0
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()


async def test_a_taken_management_port_fails_the_start_before_any_worker(
    origin: Origin, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        admin = int(taken.getsockname()[1])
        path = tmp_path / "gateway.hcl"
        path.write_text(fleet_config(origin, free_port(), admin), encoding="utf-8")
        gateway = await start_gateway(str(path), "--workers", "2", env=cli_env())
        with trio.fail_after(STARTUP_WAIT):
            assert await gateway.process.wait() == 3
            line = await gateway.wait_for_line("management API: cannot listen")
            assert gateway.process.stderr is not None
            rest = b""
            while chunk := await gateway.process.stderr.receive_some(65536):
                rest += chunk
    assert f"127.0.0.1:{admin}" in line
    everything = "\n".join(gateway.lines) + rest.decode(errors="replace")
    assert "listening entrypoint" not in everything  # the start failed before any worker
