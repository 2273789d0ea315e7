"""Active health with ``run --workers 2`` through the real CLI (SPEC §7.4 "Multi-worker",
§13.4, issue #16 item 6): the supervisor probes, once; the workers follow what it pushes.

One supervisor subprocess with two spawned workers in front of two test origins, ``a`` and
``b``, checked every 300 ms. Every request goes on a new connection (one curl process each), so
``SO_REUSEPORT`` spreads them over both workers. Checked:

- ``a`` receives one probe per interval, not one per worker (eight probes take about eight
  intervals; two probers would send them in four);
- when ``a``'s ``/health`` fails, the supervisor logs the transition once, both workers are told
  (each notes it at debug level, naming itself), ``/backends`` and ``a3s_backend_healthy`` (the
  workers' reports, merged) show it unhealthy, and none of many requests reaches ``a``;
- a worker killed meanwhile comes back already knowing (its requests do not reach ``a`` either);
- when ``a`` recovers, both workers are told and route to it again; ``a3s_health_checks_total``
  counts the probes ``a`` received, each once.

Real sockets and processes, so the real clock: every wait is for a condition (a log line, a
probe count, an API answer), each bounded by a deadline; the subprocess is killed on the way
out.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Final

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.supervisor.test_workers import exited, worker_pids
from tests.support.cli import RunningGateway, cli_env, start_gateway
from tests.support.gateway import config_text, curl, free_port, need_tool, server_entry
from tests.support.health import probes
from tests.support.origin import Fixed, Origin

pytestmark = pytest.mark.integration

STARTUP_WAIT: Final = 40.0
#: Bound on each wait for a probe, a log line or an API answer.
STEP: Final = 15.0
INTERVAL: Final = 0.3
CHECK: Final = """
    health_check {
      path                = "/health"
      interval            = "300ms"
      timeout             = "250ms"
      unhealthy_threshold = 1
      healthy_threshold   = 1
    }
"""
#: Probes timed to tell one prober from two.
TIMED: Final = 8
#: Requests sent (each on a new connection) per check of where traffic goes.
REQUESTS: Final = 24


@pytest.fixture(autouse=True)
def need_curl() -> None:
    need_tool("curl", "to drive the gateway and its management API")


@pytest.fixture
async def origin_a(nursery: trio.Nursery) -> Origin:
    server = Origin("a")
    server.on("/health", Fixed(200, b"ok"))
    await nursery.start(server.serve)
    return server


@pytest.fixture
async def origin_b(nursery: trio.Nursery) -> Origin:
    server = Origin("b")
    server.on("/health", Fixed(200, b"ok"))
    await nursery.start(server.serve)
    return server


class LogTail:
    """The gateway's stderr, read all along (a debug log must never fill the pipe), split into
    lines that ``wait_for`` finds."""

    def __init__(self, gateway: RunningGateway) -> None:
        assert gateway.process.stderr is not None
        self._stream = gateway.process.stderr
        self.lines: list[str] = []
        self.closed = False
        self._changed = trio.Event()

    async def run(self) -> None:
        pending = b""
        while chunk := await self._stream.receive_some(65536):
            *complete, pending = (pending + chunk).split(b"\n")
            self.lines.extend(line.decode(errors="replace") for line in complete)
            self._notify()
        self.closed = True
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def count(self, *needles: str) -> int:
        return sum(1 for line in self.lines if all(needle in line for needle in needles))

    async def wait_for(self, *needles: str, times: int = 1) -> None:
        """Until ``times`` lines contain every one of ``needles`` (the caller bounds it)."""
        while self.count(*needles) < times:
            if self.closed:
                raise AssertionError(f"stderr closed before {needles!r}: {self.lines[-20:]}")
            await self._changed.wait()


def gateway_config(a: Origin, b: Origin, port: int, admin: int) -> str:
    more = (
        f'management {{\n  address = "127.0.0.1:{admin}"\n}}\n'
        "providers {\n  file {\n    watch = false\n  }\n}\n"
    )
    return config_text([server_entry(a), server_entry(b)], balancer=CHECK, port=port, more=more)


async def served_by(port: int, count: int) -> list[str]:
    """The origins that answered ``count`` requests, each on a new connection."""
    names = []
    for _ in range(count):
        result = await curl(f"http://127.0.0.1:{port}/work")
        assert result.response.status == 200, result.stderr
        names.append(str(result.response.json()["origin"]))
    return names


def traffic(origin: Origin) -> int:
    return sum(1 for request in origin.requests if request.path == b"/work")


async def backend_health(api: str, url: str) -> tuple[object, float]:
    """``/backends``' ``healthy`` of ``url`` and its ``a3s_backend_healthy`` in ``/metrics``
    (the workers' reports merged: true or 1 when any worker says so)."""
    listed = (await curl(f"{api}/backends")).response
    assert listed.status == 200
    healthy = next(entry["healthy"] for entry in json.loads(listed.body) if entry["url"] == url)
    scrape = (await curl(f"{api}/metrics")).response.body.decode()
    gauge = next(
        sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "a3s_backend_healthy" and sample.labels["backend"] == url
    )
    return healthy, gauge


async def probes_counted(api: str, url: str) -> float:
    """``a3s_health_checks_total`` of ``url`` (both results) in ``/metrics``."""
    scrape = (await curl(f"{api}/metrics")).response.body.decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(scrape)
        for sample in family.samples
        if sample.name == "a3s_health_checks_total" and sample.labels["backend"] == url
    )


async def test_the_supervisor_probes_once_and_both_workers_stop_routing_to_a_failing_backend(
    origin_a: Origin, origin_b: Origin, tmp_path: Path
) -> None:
    port, admin = free_port(), free_port()
    url_a = f"http://127.0.0.1:{origin_a.port}"
    path = tmp_path / "gateway.hcl"
    path.write_text(gateway_config(origin_a, origin_b, port, admin), encoding="utf-8")
    gateway = await start_gateway(
        str(path), "--workers", "2", "--log-level", "debug", env=cli_env()
    )
    api = f"http://127.0.0.1:{admin}/api/gateway"
    told = "(the supervisor's health check)"
    try:
        async with trio.open_nursery() as nursery:
            log = LogTail(gateway)
            nursery.start_soon(log.run)
            with trio.fail_after(STARTUP_WAIT):
                await log.wait_for("workers ready: 2")

            # One probe per interval, whatever the number of workers.
            with trio.fail_after(STEP):
                await origin_a.wait_for(lambda: probes(origin_a) >= 2)
                first, started = probes(origin_a), trio.current_time()
                await origin_a.wait_for(lambda: probes(origin_a) >= first + TIMED)
                elapsed = trio.current_time() - started
            # One prober: TIMED intervals (2.4 s); one per worker: half of that.
            assert elapsed > 0.75 * TIMED * INTERVAL, elapsed
            # Each worker alternates a and b (round-robin): about half each.
            share = (await served_by(port, REQUESTS)).count("a")
            assert abs(share - REQUESTS // 2) <= 2, share

            # a fails: the supervisor notices once; each worker is told.
            origin_a.on("/health", Fixed(503, b"down"))
            with trio.fail_after(STEP):
                await log.wait_for(f"backend {url_a} of service main is now unhealthy (status 503)")
                for worker in ("worker=0", "worker=1"):
                    await log.wait_for(f"backend {url_a}", f"is now unhealthy {told}", worker)
            assert await backend_health(api, url_a) == (False, 0.0)
            before = traffic(origin_a)
            assert await served_by(port, REQUESTS) == ["b"] * REQUESTS
            assert traffic(origin_a) == before

            # A worker restarted meanwhile starts knowing it.
            supervisor = gateway.process.pid
            killed = min(worker_pids(supervisor))
            os.kill(killed, signal.SIGKILL)
            with trio.fail_after(STARTUP_WAIT):
                await log.wait_for("restarted: pid")
                while not exited(killed):  # noqa: ASYNC110 -- /proc state; no event to wait on
                    await trio.sleep(0.05)
            assert await served_by(port, REQUESTS) == ["b"] * REQUESTS
            assert traffic(origin_a) == before

            # a recovers: both workers route to it again.
            origin_a.on("/health", Fixed(200, b"ok"))
            with trio.fail_after(STEP):
                await log.wait_for(f"backend {url_a} of service main is now healthy (status 200)")
                for worker in ("worker=0", "worker=1"):
                    await log.wait_for(f"backend {url_a}", f"is now healthy {told}", worker)
            assert await backend_health(api, url_a) == (True, 1.0)
            # Each worker alternates a and b again: about half (a worker still avoiding a
            # would leave it a quarter).
            share = (await served_by(port, REQUESTS)).count("a")
            assert abs(share - REQUESTS // 2) <= 2, share
            # Counted by the supervisor alone: what a received (the last one may still be
            # under way when it is scraped).
            low = probes(origin_a)
            counted = await probes_counted(api, url_a)
            assert low - 1 <= counted <= probes(origin_a), (low, counted)
            # Logged by the supervisor alone, once per transition.
            assert log.count(f"backend {url_a}", "(status 503)") == 1
            assert log.count(f"backend {url_a}", "(status 200)") == 1

            gateway.process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                assert await gateway.process.wait() == 0
            nursery.cancel_scope.cancel()
    finally:
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()
