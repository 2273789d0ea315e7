"""A restarted worker of ``run --workers 2`` serves the supervisor's current config, and the
management API tells the truth when no worker serves (issue #14, item 3; SPEC §13.4, §9.6).

Through the real CLI as a subprocess, with two test origins ``old`` and ``new`` whose echoed
JSON names them, so each response says which config served it; every request on a new
connection, so ``SO_REUSEPORT`` spreads them over both workers (20 requests all reaching the
same one: odds of 2^-19). Checked:

- after a rejected reload — the file made invalid, or deleted — a worker killed with SIGKILL
  comes back serving the last good config (generation 2, reloaded through ``POST /reload``),
  like the other one, and never logs a problem of the file;
- with ``watch = false``, a file edited but not reloaded does not reach a restarted worker:
  both keep serving the running (old) config;
- while no worker serves (both killed, and their restarts failing: the access log's directory
  is gone), ``/health`` is 503 ``down`` with 0 of 2 workers and ``/ready`` 503 with the
  reason; once the directory is back the workers come back and both answer 200.

Every wait is bounded; on the way out the supervisor and its workers are killed if still
running.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.supervisor.test_workers import exited, worker_pids
from tests.support.cli import RunningGateway, cli_env, start_gateway
from tests.support.gateway import (
    LOCAL,
    RawClient,
    RawResponse,
    config_text,
    free_port,
    server_entry,
)
from tests.support.origin import Origin

STARTUP_WAIT: Final = 40.0
#: A reload, a restart (1 s backoff plus a worker's start), a failed restart: well within this.
STEP_WAIT: Final = 30.0

# Each step is bounded above; a test is a start and at most five steps, which on a loaded
# 2-core machine can take longer together than the suite's per-test limit.
pytestmark = [pytest.mark.integration, pytest.mark.time_limit(STARTUP_WAIT + 5 * STEP_WAIT)]

#: Requests on new connections per check: both workers get some (see the module docstring).
SPREAD: Final = 20


def fleet_config(origin: Origin, port: int, admin: int, more: str = "") -> str:
    """Entrypoint ``web`` on ``port`` → ``origin``; the management API on ``admin``; no file
    watcher (reloads come from ``POST /reload`` only); ``more`` appended."""
    more = (
        f'management {{\n  address = "{LOCAL}:{admin}"\n}}\n'
        "providers {\n  file {\n    watch = false\n  }\n}\n"
        f"{more}"
    )
    return config_text([server_entry(origin)], port=port, more=more)


def write(path: Path, text: str) -> None:
    """An editor's save: a new file renamed over the old one."""
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)


async def request(port: int, path: str, method: str = "GET") -> RawResponse:
    """One request on a new connection; the whole response."""
    client = await RawClient.connect(port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nhost: t\r\ncontent-length: 0\r\n"
        await client.send(f"{head}connection: close\r\n\r\n".encode())
        response = await client.response(method.encode())
    finally:
        await client.aclose()
    assert response is not None, f"{method} {path}: no response"
    return response


def document(response: RawResponse) -> dict[str, object]:
    found = json.loads(response.body)
    assert isinstance(found, dict)
    return found


@dataclass
class Fleet:
    """The running CLI: the config path, the entrypoint and management ports."""

    gateway: RunningGateway
    path: Path
    port: int
    admin: int

    @property
    def pid(self) -> int:
        return self.gateway.process.pid

    async def api(self, endpoint: str, method: str = "GET") -> RawResponse:
        return await request(self.admin, f"/api/gateway/{endpoint}", method)

    async def origins(self) -> set[str]:
        """The origins that answered ``SPREAD`` requests (each must be a 200)."""
        names: set[str] = set()
        for _ in range(SPREAD):
            response = await request(self.port, "/which")
            assert response.status == 200, response
            origin = document(response)["origin"]
            assert isinstance(origin, str)
            names.add(origin)
        return names

    async def kill_one_worker(self) -> int:
        """SIGKILL to one worker; waits until it is gone and the supervisor restarted it."""
        victim = min(worker_pids(self.pid))
        os.kill(victim, signal.SIGKILL)
        with trio.fail_after(STEP_WAIT):
            await self.gateway.wait_for_line(f"(pid {victim}) was killed by SIGKILL")
            await self.gateway.wait_for_line("restarted: pid")
        return victim


@asynccontextmanager
async def running_fleet(tmp_path: Path, origin: Origin, more: str = "") -> AsyncIterator[Fleet]:
    port, admin = free_port(), free_port()
    path = tmp_path / "gateway.hcl"
    write(path, fleet_config(origin, port, admin, more))
    gateway = await start_gateway(str(path), "--workers", "2", env=cli_env())
    process = gateway.process
    try:
        with trio.fail_after(STARTUP_WAIT):
            await gateway.wait_for_line("workers ready: 2")
        yield Fleet(gateway, path, port, admin)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(STEP_WAIT):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            workers = worker_pids(process.pid)
            process.kill()
            for pid in workers:  # orphans would drain on their own; do not wait for that
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with trio.CancelScope(shield=True), trio.move_on_after(STEP_WAIT):
            await process.wait()
        print("\n".join(gateway.lines))  # shown when the test fails


@pytest.fixture
async def old(nursery: trio.Nursery) -> Origin:
    origin = Origin("old")
    await nursery.start(origin.serve)
    return origin


@pytest.fixture
async def new(nursery: trio.Nursery) -> Origin:
    origin = Origin("new")
    await nursery.start(origin.serve)
    return origin


@pytest.mark.parametrize("breakage", ["invalid", "deleted"])
async def test_a_worker_killed_after_a_rejected_reload_comes_back_with_the_last_good_config(
    tmp_path: Path, old: Origin, new: Origin, breakage: str
) -> None:
    async with running_fleet(tmp_path, old) as fleet:
        assert await fleet.origins() == {"old"}
        write(fleet.path, fleet_config(new, fleet.port, fleet.admin))
        reloaded = await fleet.api("reload", "POST")
        assert (reloaded.status, document(reloaded)["generation"]) == (200, 2)
        with trio.fail_after(STEP_WAIT):
            for _ in range(2):  # each worker applies generation 2 on its own
                await fleet.gateway.wait_for_line("serving config generation 2")
        assert await fleet.origins() == {"new"}

        if breakage == "invalid":
            write(fleet.path, "routers {\n")
        else:
            fleet.path.unlink()
        rejected = await fleet.api("reload", "POST")
        assert rejected.status == 422
        health = document(await fleet.api("health"))
        assert health["config_generation"] == 2
        last = health["last_reload"]
        assert isinstance(last, dict)
        assert last["ok"] is False

        await fleet.kill_one_worker()
        with trio.fail_after(STEP_WAIT):
            # The restarted worker started from the supervisor's generation, not the file.
            started = await fleet.gateway.wait_for_line("serving config generation 2")
        assert "worker=" in started
        ready = await fleet.api("ready")
        assert (ready.status, document(ready)) == (200, {"ready": True})
        health = document(await fleet.api("health"))
        assert (health["state"], health["workers"], health["config_generation"]) == (
            "running",
            2,
            2,
        )
        assert await fleet.origins() == {"new"}  # both workers: the last good config
    # No worker ever read the broken (or missing) file.
    worker_errors = [line for line in fleet.gateway.lines if "ERROR" in line and "worker=" in line]
    assert worker_errors == []


async def test_with_watch_off_an_edit_not_reloaded_never_reaches_a_restarted_worker(
    tmp_path: Path, old: Origin, new: Origin
) -> None:
    async with running_fleet(tmp_path, old) as fleet:
        write(fleet.path, fleet_config(new, fleet.port, fleet.admin))  # no reload asked
        await fleet.kill_one_worker()
        assert await fleet.origins() == {"old"}  # one config across the fleet: the running one
        health = document(await fleet.api("health"))
        assert (health["state"], health["config_generation"]) == ("running", 1)

        # The edit takes effect when asked for, in both workers.
        reloaded = await fleet.api("reload", "POST")
        assert (reloaded.status, document(reloaded)["generation"]) == (200, 2)
        with trio.fail_after(STEP_WAIT):
            for _ in range(2):
                await fleet.gateway.wait_for_line("serving config generation 2")
        assert await fleet.origins() == {"new"}


async def test_health_and_ready_tell_the_truth_while_no_worker_serves(
    tmp_path: Path, old: Origin
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    access_log = f'observability {{\n  access_log_path = "{logs / "access.log"}"\n}}\n'
    async with running_fleet(tmp_path, old, more=access_log) as fleet:
        # From now on a (re)started worker cannot open its access log: it exits 3 at start.
        shutil.rmtree(logs)
        workers = worker_pids(fleet.pid)
        assert len(workers) == 2
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        with trio.fail_after(STEP_WAIT):
            for _ in range(2):  # each slot's restart failed, and it backs off again
                await fleet.gateway.wait_for_line("exited with code 3; restarting in 2s")
        health = await fleet.api("health")
        ready = await fleet.api("ready")
        shown = document(health)
        assert health.status == 503
        assert (shown["state"], shown["workers"], shown["workers_expected"]) == ("down", 0, 2)
        assert ready.status == 503
        reason = document(ready)["reason"]
        assert isinstance(reason, str)
        assert reason.startswith("0 of 2 workers ready (worker 0 ")
        assert all(exited(pid) for pid in workers)

        logs.mkdir()  # the next restarts succeed
        with trio.fail_after(STEP_WAIT):
            for _ in range(2):
                await fleet.gateway.wait_for_line("restarted: pid")
        back = await fleet.api("health")
        assert (back.status, document(back)["state"], document(back)["workers"]) == (
            200,
            "running",
            2,
        )
        assert (await fleet.api("ready")).status == 200
        assert await fleet.origins() == {"old"}
