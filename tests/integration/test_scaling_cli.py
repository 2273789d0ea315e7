"""Autoscaling with the ``local`` executor through the real CLI (SPEC §11.1–11.6, §11.9, §9.6
``/scaling``, §13.4).

``python -m a3s_gateway run <file>`` (and ``--workers 2``) as a subprocess in front of service
``app``, whose replicas are child processes of the gateway running ``tests/support/scaling.py``'s
backend script on ``base_port + i``. The tests read ``GET /scaling`` and ``GET /metrics`` on the
management listener, poll with deadlines instead of sleeping, and stop the gateway with SIGTERM,
after which no replica may be left running.

Timings: ``tick_interval`` 1 s; ``stable_window`` 6 s (the smallest allowed), so the panic window
is 1 s; a replica becomes available at its first passed health probe (every 300 ms).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.support.gateway import RawResponse
from tests.support.scaling import (
    CliGateway,
    backend_command,
    cli_gateway,
    free_port_range,
    free_ports,
    json_object,
    management_block,
    poll_until,
    process_gone,
    refused,
    replica_pids,
    request,
    write_backend,
)

pytestmark = pytest.mark.integration

SERVICE: Final = "app"
MAX_REPLICAS: Final = 3


@dataclass(frozen=True)
class Setup:
    """Ports and the backend script of one test."""

    port: int
    admin: int
    base: int
    script: Path
    directory: Path

    @property
    def replica_ports(self) -> list[int]:
        return [self.base + i for i in range(MAX_REPLICAS)]


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    base = free_port_range(MAX_REPLICAS)
    port, admin = free_ports(2, avoid=range(base, base + MAX_REPLICAS))
    return Setup(port, admin, base, write_backend(tmp_path), tmp_path)


def scaled_config(
    setup: Setup,
    *,
    container_concurrency: int = 2,
    buffer: str = "buffer_enabled = true",
    delay: float = 0.0,
) -> str:
    """Entrypoint ``web`` → service ``app`` scaled by the ``local`` executor, 0..3 replicas."""
    return (
        f'entrypoints "web" {{\n  address = "127.0.0.1:{setup.port}"\n}}\n'
        f'routers "r" {{\n  rule    = "PathPrefix(`/`)"\n  service = "{SERVICE}"\n}}\n'
        f'services "{SERVICE}" {{\n'
        "  load_balancer {\n"
        "    health_check {\n"
        '      path     = "/"\n'
        '      interval = "300ms"\n'
        '      timeout  = "300ms"\n'
        "    }\n"
        "  }\n"
        "  scaling {\n"
        '    executor              = "local"\n'
        "    min_replicas          = 0\n"
        f"    max_replicas          = {MAX_REPLICAS}\n"
        f"    container_concurrency = {container_concurrency}\n"
        f"    {buffer}\n"
        "    buffer_timeout_secs   = 20\n"
        '    stable_window         = "6s"\n'
        '    scale_to_zero_grace   = "1s"\n'
        "    scale_down_delay_secs = 0\n"
        '    tick_interval         = "1s"\n'
        "    local {\n"
        f"      command      = {backend_command(setup.script, delay=delay)}\n"
        f"      base_port    = {setup.base}\n"
        '      stop_timeout = "2s"\n'
        "    }\n"
        "  }\n"
        "}\n"
        "shutdown_timeout_secs = 2\n" + management_block(setup.admin)
    )


@dataclass
class Load:
    """What the load clients saw."""

    statuses: list[int] = field(default_factory=list)
    ports: set[int] = field(default_factory=set)
    pids: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def record(self, response: RawResponse) -> None:
        self.statuses.append(response.status)
        if response.status != 200:
            self.failures.append(f"{response.status} {response.body!r}")
            return
        document = json_object(response)
        port, pid = document["port"], document["pid"]
        assert isinstance(port, int)
        assert isinstance(pid, int)
        self.ports.add(port)
        self.pids.add(pid)


def pid(replica: dict[str, object]) -> int:
    """The process id a replica's answer names."""
    found = replica["pid"]
    assert isinstance(found, int)
    return found


async def keep_asking(port: int, target: str, load: Load, stop: trio.Event) -> None:
    """Requests one after the other, each on a new connection, until ``stop`` is set."""
    while not stop.is_set():
        load.record(await request(port, target))


async def at_zero(gateway: CliGateway, setup: Setup) -> dict[str, object]:
    """Wait for the first tick's ``/scaling`` at 0 replicas; no replica port is listening."""
    document = await poll_until(
        "the first tick at 0 replicas",
        lambda: gateway.scaling(SERVICE),
        lambda doc: doc["actual"] == 0,
        within=10,
    )
    for port in setup.replica_ports:
        assert await refused(port), f"replica port {port} is listening at 0 replicas"
    return document


async def all_gone(setup: Setup, gateway: CliGateway) -> None:
    """Every replica port refuses connections and every replica process the gateway's log
    shows starting has exited."""
    pids = replica_pids(gateway.log())

    async def gone() -> bool:
        ports = [await refused(port) for port in setup.replica_ports]
        return all(ports) and all(process_gone(pid) for pid in pids)

    await poll_until("the replicas are gone", gone, bool, within=10)


async def test_local_replicas_scale_from_zero_under_load_and_back_to_zero(setup: Setup) -> None:
    """0 replicas → the first 16 concurrent requests wait in the buffer and are all served →
    sustained load of 16 concurrent 300 ms requests scales to more than one replica (panic
    mode) → idle, the service goes back to 0 and its child processes exit."""
    async with cli_gateway(
        setup.directory, scaled_config(setup), port=setup.port, admin=setup.admin
    ) as gateway:
        first = await at_zero(gateway, setup)
        assert first["executor"] == "local"
        assert (first["min_replicas"], first["max_replicas"]) == (0, MAX_REPLICAS)
        assert first["ready"] == 0
        assert first["buffer_depth"] == 0

        load, stop = Load(), trio.Event()
        peak: dict[str, object] = {}
        async with trio.open_nursery() as nursery:
            for _ in range(16):
                nursery.start_soon(keep_asking, setup.port, "/slow?ms=300", load, stop)

            async def scaled_up() -> bool:
                document = await gateway.scaling(SERVICE)
                peak.update(document)
                actual, desired = document["actual"], document["desired"]
                return (
                    isinstance(actual, int)
                    and isinstance(desired, int)
                    and min(actual, desired) >= 2
                    and len(load.ports) >= 2
                )

            await poll_until("more than one replica serving", scaled_up, bool, within=20)
            stop.set()

        assert load.failures == []
        assert len(load.statuses) >= 16
        assert peak["panic"] is True, peak
        assert str(peak["reason"]).startswith("up: "), peak
        assert load.ports <= set(setup.replica_ports)
        # The first wave found no replica: every one of its 16 requests waited in the buffer.
        released = await gateway.metric(
            "a3s_scale_buffer_results_total", service=SERVICE, result="released"
        )
        assert released is not None
        assert released >= 16
        for result in ("timeout", "overflow", "shutdown"):
            assert not await gateway.metric(
                "a3s_scale_buffer_results_total", service=SERVICE, result=result
            )

        idle = await poll_until(
            "back to 0 replicas once idle",
            lambda: gateway.scaling(SERVICE),
            lambda doc: doc["actual"] == 0,
            within=25,
        )
        assert idle["desired"] == 0
        assert str(idle["reason"]).startswith("down: "), idle
        # SPEC §11.9: the children's output is in the gateway's log, prefixed with the replica.
        log = gateway.log()
        assert f"[{SERVICE}#0 :{setup.base}] backend port={setup.base} pid=" in log
        assert load.pids <= replica_pids(log)
        await all_gone(setup, gateway)
        assert await gateway.metric("a3s_autoscaler_actual_replicas", service=SERVICE) == 0
        assert await gateway.stop() == 0


async def test_without_the_buffer_a_request_at_zero_gets_503_and_activates(setup: Setup) -> None:
    """``buffer_enabled = false``: the request that finds the service at 0 is answered 503 at
    once, and it still scales the service to one replica, which then serves (SPEC §11.4)."""
    config = scaled_config(setup, buffer="buffer_enabled = false")
    async with cli_gateway(setup.directory, config, port=setup.port, admin=setup.admin) as gateway:
        await at_zero(gateway, setup)

        cold = await gateway.get("/cold")
        assert cold.status == 503
        assert json_object(cold)["error"] == "no available backend"

        activated = await poll_until(
            "activation to one replica",
            lambda: gateway.scaling(SERVICE),
            lambda doc: doc["actual"] == 1,
            within=5,
        )
        assert str(activated["reason"]).startswith("up: activation"), activated

        served = await poll_until(
            "the replica serving",
            lambda: gateway.get("/warm"),
            lambda response: response.status == 200,
            within=10,
        )
        replica = json_object(served)
        assert replica["port"] == setup.base
        assert await gateway.metric("a3s_scale_buffer_results_total", service=SERVICE) is None
        assert await gateway.stop() == 0
        assert pid(replica) in replica_pids(gateway.log())
        await all_gone(setup, gateway)


async def test_a_full_buffer_answers_503_with_retry_after(setup: Setup) -> None:
    """``buffer_size = 1`` and a replica that takes 1.5 s to listen: of three concurrent
    requests at 0 replicas, the first waits in the buffer and is served; the other two find it
    full and get 503 ``request buffer full`` with ``Retry-After: 1`` at once (SPEC §11.5)."""
    buffer = "buffer_enabled = true\n    buffer_size           = 1"
    config = scaled_config(setup, buffer=buffer, delay=1.5)
    async with cli_gateway(setup.directory, config, port=setup.port, admin=setup.admin) as gateway:
        await at_zero(gateway, setup)

        responses: list[RawResponse] = []

        async def one() -> None:
            responses.append(await gateway.get("/burst"))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(one)

        statuses = sorted(response.status for response in responses)
        assert statuses == [200, 503, 503], [(r.status, r.body) for r in responses]
        [admitted] = [response for response in responses if response.status == 200]
        replica = json_object(admitted)
        assert replica["port"] == setup.base
        for response in responses:
            if response.status == 503:
                assert json_object(response)["error"] == "request buffer full"
                assert response.header(b"retry-after") == b"1"
        results = {
            result: await gateway.metric(
                "a3s_scale_buffer_results_total", service=SERVICE, result=result
            )
            for result in ("released", "overflow")
        }
        assert results == {"released": 1.0, "overflow": 2.0}
        assert await gateway.stop() == 0
        assert pid(replica) in replica_pids(gateway.log())
        await all_gone(setup, gateway)


HELD: Final = 16


async def hold(port: int, load: Load) -> None:
    """One request that the replica answers after 2.5 s."""
    load.record(await request(port, "/slow?ms=2500"))


async def test_two_workers_sum_their_concurrency(setup: Setup) -> None:
    """``--workers 2``: 16 slow requests on 16 connections are held open together;
    ``SO_REUSEPORT`` spreads them over both workers by their addresses (all on one worker has
    odds of 2⁻¹⁵). The supervisor's ``/scaling`` shows a panic concurrency near 16 — the sum
    of both workers' shares, not one worker's ~8 — and scales up; the metrics sum the buffer
    results of both workers (SPEC §11.2, §13.4)."""
    config = scaled_config(setup, container_concurrency=8)
    async with cli_gateway(
        setup.directory, config, port=setup.port, admin=setup.admin, args=("--workers", "2")
    ) as gateway:
        await at_zero(gateway, setup)

        load = Load()
        seen: list[dict[str, object]] = []

        async def summed() -> bool:
            document = await gateway.scaling(SERVICE)
            seen.append(document)
            panic, actual = document["panic_concurrency"], document["actual"]
            return (
                isinstance(panic, float)
                and panic >= 0.8 * HELD
                and isinstance(actual, int)
                and actual >= 2
            )

        async with trio.open_nursery() as nursery:
            for _ in range(HELD):
                nursery.start_soon(hold, setup.port, load)
            await poll_until("the summed concurrency and a scale-up", summed, bool, within=15)

        assert load.failures == []
        assert len(load.statuses) == HELD
        peak = seen[-1]
        assert peak["panic"] is True, peak
        panic_concurrency = peak["panic_concurrency"]
        assert isinstance(panic_concurrency, float)
        assert panic_concurrency <= HELD + 0.01
        print(f"two workers: panic concurrency {panic_concurrency:.2f} of {HELD} held")
        desired = await gateway.metric("a3s_autoscaler_desired_replicas", service=SERVICE)
        assert desired is not None
        assert desired >= 2
        observed = await gateway.metric(
            "a3s_autoscaler_observed_concurrency", service=SERVICE, window="panic"
        )
        assert observed is not None
        released = await gateway.metric(
            "a3s_scale_buffer_results_total", service=SERVICE, result="released"
        )
        assert released is not None
        assert 1 <= released <= HELD
        assert await gateway.stop() == 0
        assert load.pids <= replica_pids(gateway.log())
        await all_gone(setup, gateway)
