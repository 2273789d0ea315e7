"""Revisions, the rollout controller and its management actions through the real CLI (SPEC
§11.7, §11.8, §9.6 ``/rollouts``, §9.1).

``python -m a3s_gateway run <file>`` as a subprocess in front of service ``app`` with two
revisions, ``v1`` and ``v2`` (tag ``canary``), each one test origin in this process; which
revision served a request is read from the origins' own records. Traffic is driven by a few
clients in a loop (one connection per request) while ``GET /rollouts`` is polled with a
deadline. Passive health is off so that a failing canary keeps getting its share of the traffic
and is judged by the rollout alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.support.gateway import server_entry
from tests.support.origin import Fixed, Origin
from tests.support.scaling import (
    CliGateway,
    cli_gateway,
    free_ports,
    json_object,
    management_block,
    poll_until,
    request,
)

pytestmark = pytest.mark.integration

SERVICE: Final = "app"
#: Requests sent after a rollout ended, to see where the split sends them.
AFTER: Final = 20
#: Concurrent clients of the steady traffic.
CLIENTS: Final = 4
#: Pause of each client between two requests, in seconds.
PACE: Final = 0.01


@dataclass(frozen=True)
class Revisions:
    v1: Origin
    v2: Origin


@pytest.fixture
async def revisions(nursery: trio.Nursery) -> Revisions:
    v1, v2 = Origin("v1"), Origin("v2")
    await nursery.start(v1.serve)
    await nursery.start(v2.serve)
    return Revisions(v1, v2)


def rollout_config(
    revisions: Revisions, port: int, admin: int, *, step_interval_secs: int = 1
) -> str:
    """``app`` with revisions v1 (90 %) and v2 (10 %, tag ``canary``), ``revision_header``
    ``X-Revision``, and a rollout from v1 to v2 in steps of 30 % every ``step_interval_secs``
    after at least 5 requests to v2."""
    return (
        f'entrypoints "web" {{\n  address = "127.0.0.1:{port}"\n}}\n'
        f'routers "r" {{\n  rule    = "PathPrefix(`/`)"\n  service = "{SERVICE}"\n}}\n'
        f'services "{SERVICE}" {{\n'
        "  load_balancer {\n"
        "    passive_health {\n"
        "      enabled = false\n"
        "    }\n"
        "  }\n"
        "  revisions = [\n"
        f'    {{ name = "v1", traffic_percent = 90, servers = [{server_entry(revisions.v1)}] }},\n'
        f'    {{ name = "v2", traffic_percent = 10, tag = "canary", '
        f"servers = [{server_entry(revisions.v2)}] }},\n"
        "  ]\n"
        '  revision_header = "X-Revision"\n'
        "  rollout {\n"
        '    from               = "v1"\n'
        '    to                 = "v2"\n'
        "    step_percent       = 30\n"
        f"    step_interval_secs = {step_interval_secs}\n"
        "    min_requests       = 5\n"
        "  }\n"
        "}\n"
        "shutdown_timeout_secs = 2\n" + management_block(admin)
    )


@asynccontextmanager
async def rollout_gateway(
    directory: Path, revisions: Revisions, *, step_interval_secs: int = 1
) -> AsyncIterator[CliGateway]:
    port, admin = free_ports(2)
    text = rollout_config(revisions, port, admin, step_interval_secs=step_interval_secs)
    async with cli_gateway(directory, text, port=port, admin=admin) as gateway:
        yield gateway


async def steady(port: int, stop: trio.Event, statuses: list[int]) -> None:
    """Requests one after the other until ``stop`` is set, ``PACE`` apart (a hundred or so a
    second in all: v2 gets its 5 a second at 10 % without the clients hogging the CPU)."""
    while not stop.is_set():
        statuses.append((await request(port, "/steady")).status)
        await trio.sleep(PACE)


async def roll_until(gateway: CliGateway, state: str, statuses: list[int]) -> dict[str, object]:
    """Drive steady traffic until the rollout reaches ``state``; its document then. The
    traffic shares seen on the way (``v2``'s percent) must only move one way."""
    shares: list[object] = []

    async def probe() -> dict[str, object]:
        document = await gateway.rollout(SERVICE)
        traffic = document["traffic"]
        assert isinstance(traffic, dict)
        if not shares or shares[-1] != traffic["v2"]:
            shares.append(traffic["v2"])
        return document

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(CLIENTS):
            nursery.start_soon(steady, gateway.port, stop, statuses)
        document = await poll_until(
            f"the rollout {state}", probe, lambda doc: doc["state"] == state, within=15
        )
        stop.set()
    numbers = [share for share in shares if isinstance(share, int)]
    assert numbers == shares
    assert numbers in (sorted(numbers), sorted(numbers, reverse=True)), shares
    return document


async def where_requests_go(
    gateway: CliGateway, revisions: Revisions, headers: tuple[tuple[str, str], ...] = ()
) -> tuple[int, int]:
    """Send ``AFTER`` requests; how many reached v1 and v2."""
    before = len(revisions.v1.requests), len(revisions.v2.requests)
    for _ in range(AFTER):
        await gateway.get("/after", headers=headers)
    return len(revisions.v1.requests) - before[0], len(revisions.v2.requests) - before[1]


async def test_a_healthy_canary_is_rolled_out_to_100_percent(
    revisions: Revisions, tmp_path: Path
) -> None:
    """90/10 at the start; steady traffic; steps of 30 % every second: 10 → 40 → 70 → 100, then
    ``completed``, every request reaches v2, and an action on the finished rollout is 409."""
    async with rollout_gateway(tmp_path, revisions) as gateway:
        start = await gateway.rollout(SERVICE)
        assert start["state"] == "in_progress"
        assert (start["from"], start["to"]) == ("v1", "v2")
        assert start["traffic"] == {"v1": 90, "v2": 10}
        assert start["step_percent"] == 30
        assert start["last_step"] is None

        statuses: list[int] = []
        done = await roll_until(gateway, "completed", statuses)
        assert set(statuses) == {200}
        assert done["traffic"] == {"v1": 0, "v2": 100}
        assert done["next_step"] is None
        steps = done["steps"]
        assert isinstance(steps, dict)
        assert (steps["advanced"], steps["rolled_back"]) == (3, 0)
        last = done["last_step"]
        assert isinstance(last, dict)
        assert last["result"] == "advanced"
        assert last["errors"] == 0
        assert isinstance(last["requests"], int)
        assert last["requests"] >= 5

        assert await where_requests_go(gateway, revisions) == (0, AFTER)
        assert await gateway.metric("a3s_rollout_state", service=SERVICE) == 3
        for revision, percent in (("v1", 0), ("v2", 100)):
            assert (
                await gateway.metric(
                    "a3s_revision_traffic_percent", service=SERVICE, revision=revision
                )
                == percent
            )
        assert (
            await gateway.metric("a3s_rollout_steps_total", service=SERVICE, result="advanced") == 3
        )

        late = await gateway.api(f"/rollouts/{SERVICE}/pause", method="POST")
        assert late.status == 409
        assert "completed" in str(json_object(late)["error"])
        assert await gateway.stop() == 0


async def test_a_failing_canary_is_rolled_back(revisions: Revisions, tmp_path: Path) -> None:
    """v2 answers 500: at the first step with enough requests its error rate is above 0.05,
    the split goes back to v1 100 / v2 0 (``rolled_back``, logged at warning), and every
    request then reaches v1."""
    revisions.v2.default = Fixed(500, b"canary broken")
    async with rollout_gateway(tmp_path, revisions) as gateway:
        statuses: list[int] = []
        done = await roll_until(gateway, "rolled_back", statuses)
        assert set(statuses) == {200, 500}
        assert done["traffic"] == {"v1": 100, "v2": 0}
        last = done["last_step"]
        assert isinstance(last, dict)
        assert last["result"] == "rolled_back"
        assert isinstance(last["requests"], int)
        assert last["requests"] >= 5
        assert last["errors"] == last["requests"]
        assert last["error_rate"] == 1.0

        assert await where_requests_go(gateway, revisions) == (AFTER, 0)
        assert await gateway.metric("a3s_rollout_state", service=SERVICE) == 4
        assert (
            await gateway.metric("a3s_rollout_steps_total", service=SERVICE, result="rolled_back")
            == 1
        )
        assert await gateway.stop() == 0
    warnings = [line for line in gateway.log().splitlines() if "rollout rolled_back" in line]
    assert len(warnings) == 1, gateway.log()
    assert "WARNING" in warnings[0].upper()


async def test_pause_resume_and_rollback_through_the_api(
    revisions: Revisions, tmp_path: Path
) -> None:
    """``POST /rollouts/app/pause|resume|rollback`` answer 200 with the new state; a finished
    rollout answers 409 and an unknown service 404; a GET on an action is 405. After the
    rollback every request reaches v1 (SPEC §9.6, §11.8 "Control")."""
    async with rollout_gateway(tmp_path, revisions, step_interval_secs=60) as gateway:
        api = f"/rollouts/{SERVICE}"
        paused = await gateway.api(f"{api}/pause", method="POST")
        assert paused.status == 200
        document = json_object(paused)
        assert document["state"] == "paused"
        assert document["traffic"] == {"v1": 90, "v2": 10}
        assert (await gateway.rollout(SERVICE))["state"] == "paused"
        assert (await gateway.api(f"{api}/pause", method="POST")).status == 200

        resumed = await gateway.api(f"{api}/resume", method="POST")
        assert resumed.status == 200
        assert json_object(resumed)["state"] == "in_progress"
        assert json_object(resumed)["next_step"] is not None

        rolled = await gateway.api(f"{api}/rollback", method="POST")
        assert rolled.status == 200
        document = json_object(rolled)
        assert document["state"] == "rolled_back"
        assert document["traffic"] == {"v1": 100, "v2": 0}
        assert await gateway.metric("a3s_rollout_state", service=SERVICE) == 4

        for action in ("pause", "resume", "rollback"):
            late = await gateway.api(f"{api}/{action}", method="POST")
            assert late.status == 409, (action, late)
            assert "rolled_back" in str(json_object(late)["error"])
        unknown = await gateway.api("/rollouts/nope/pause", method="POST")
        assert unknown.status == 404
        assert json_object(unknown)["error"] == "rollout not found"
        wrong_method = await gateway.api(f"{api}/pause")
        assert wrong_method.status == 405
        assert wrong_method.header(b"allow") == b"POST"

        assert await where_requests_go(gateway, revisions) == (AFTER, 0)
        assert await gateway.stop() == 0


async def test_the_revision_header_picks_a_revision_by_name_or_tag(
    revisions: Revisions, tmp_path: Path
) -> None:
    """``revision_header = "X-Revision"``: ``v2`` or its tag ``canary`` reaches v2 (even at 0 %
    after a rollback), ``v1`` reaches v1, an unknown value falls through to the split."""
    async with rollout_gateway(tmp_path, revisions, step_interval_secs=60) as gateway:
        for value in ("v2", "canary"):
            assert await where_requests_go(gateway, revisions, (("X-Revision", value),)) == (
                0,
                AFTER,
            )
        assert await where_requests_go(gateway, revisions, (("X-Revision", "v1"),)) == (AFTER, 0)
        # An unknown value: the 90/10 split of the smooth weighted round robin (100 requests).
        before = len(revisions.v1.requests), len(revisions.v2.requests)
        for _ in range(5):
            await where_requests_go(gateway, revisions, (("X-Revision", "v3"),))
        assert (
            len(revisions.v1.requests) - before[0],
            len(revisions.v2.requests) - before[1],
        ) == (90, 10)

        assert (await gateway.api(f"/rollouts/{SERVICE}/rollback", method="POST")).status == 200
        assert await where_requests_go(gateway, revisions, (("X-Revision", "canary"),)) == (
            0,
            AFTER,
        )
        assert await where_requests_go(gateway, revisions) == (AFTER, 0)
        assert await gateway.stop() == 0
