"""The supervisor's management API (SPEC §13.4, §9.6, §9.1): the control-channel codec, the
merge of the workers' documents and metrics, and ``FleetManagementServer`` over a supervisor
with fake workers.

Covers: every message round-trips and the two directions do not accept each other's
messages; ``merge_documents`` adds counts, ORs flags, keeps settings, takes the worst state and
the latest ejection, and joins list elements by their names; ``/entrypoints`` unions the bound
addresses and sums connections; the metrics of two real in-process gateways merge into sums,
with the config gauges and the reload counter from the supervisor alone (a worker that
reloaded itself adds nothing); ``Gateway(management=False)`` binds no management listener;
and through the server: a request the token or the allow list refuses asks no worker,
``/ready`` is 503 with a reason while a worker is down, ``/health`` is ``degraded`` (200) then
and ``down`` (503, ``/ready`` too) while no worker serves, a reload publishes the new
generation to every worker, the workers' merged documents answer
``/services``, ``/services/{name}``, ``/backends`` (HEAD included) and ``/middlewares``, 503 when
no worker answers, and ``/routes`` needs no worker.
"""

from __future__ import annotations

import ipaddress
import json
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from a3s_gateway.app import Gateway
from a3s_gateway.config.load import load_text
from a3s_gateway.config.schema import Config
from a3s_gateway.errors import StartError
from a3s_gateway.management.api import ApiRequest, ApiResponse
from a3s_gateway.management.fleet import (
    FleetApi,
    FleetManagementServer,
    fleet_listeners,
    fleet_state,
    merge_documents,
    merge_services,
)
from a3s_gateway.providers import Reloader
from a3s_gateway.routing.request import PeerAddress
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.server.outbound_clients import Outbound
from a3s_gateway.state import GatewayState
from a3s_gateway.supervisor.worker_main import (
    DocumentsReply,
    MetricsReply,
    Query,
    Ready,
    Reply,
    StateReply,
    answer_query,
    decode_message,
    decode_query,
    encode_message,
)
from a3s_gateway.supervisor.workers import Fleet, Supervisor
from tests.supervisor.test_workers import Answer, FakeSpawner, state_of, supervise
from tests.support.gateway import free_port, load

LOCAL = ipaddress.ip_address("127.0.0.1")
OUTSIDE = ipaddress.ip_address("192.0.2.7")
TOKEN = "fleet-unit-token"
PREFIX = "/api/gateway"


# ------------------------------------------------------------------------------- codec


@pytest.mark.parametrize(
    "message",
    [
        Ready(pid=12, addresses={"web": [("127.0.0.1", 8080)]}),
        MetricsReply(3, b"\x92\x01\x90"),
        MetricsReply(4, None),
        StateReply(5, "running", {"web": 2}, 40, {"web": [("::1", 8080), ("127.0.0.1", 8080)]}),
        DocumentsReply(6, [{"name": "a", "in_flight": 1, "ok": True, "x": None, "l": [1.5]}]),
    ],
)
def test_every_worker_message_round_trips(message: object) -> None:
    assert isinstance(message, Ready | MetricsReply | StateReply | DocumentsReply)
    assert decode_message(encode_message(message)) == message


def test_a_query_round_trips_and_the_directions_do_not_mix() -> None:
    query = Query(9, "middlewares")
    assert decode_query(encode_message(query)) == query
    with pytest.raises(msgspec.DecodeError):
        decode_message(encode_message(query))  # a worker never sends a query
    with pytest.raises(msgspec.DecodeError):
        decode_query(encode_message(StateReply(1, "running", {}, 0, {})))
    with pytest.raises(msgspec.DecodeError):
        decode_query(msgspec.msgpack.encode({"type": "query", "id": 1, "kind": "secrets"}))
    with pytest.raises(msgspec.DecodeError):
        decode_message(b"\xc1 not msgpack")


# ------------------------------------------------------------------------------- merging


def backend(**fields: object) -> dict[str, object]:
    document: dict[str, object] = {
        "service": "api",
        "url": "http://10.0.0.1:80",
        "weight": 3,
        "revision": None,
        "healthy": True,
        "ejected": False,
        "ejected_until": None,
        "passive_state": "healthy",
        "available": True,
        "in_flight": 0,
        "requests_total": None,
        "errors_total": None,
    }
    document.update(fields)
    return document


def test_backends_add_counts_or_flags_keep_settings_and_take_the_worst_state() -> None:
    one = [
        backend(in_flight=2),
        backend(url="http://10.0.0.2:80", in_flight=1),
    ]
    two = [
        backend(
            in_flight=5,
            ejected=True,
            available=False,
            passive_state="ejected",
            ejected_until="2026-01-01T00:00:09.000Z",
        ),
        backend(url="http://10.0.0.3:80"),  # only this worker has it (a reload in progress)
    ]
    three = [backend(passive_state="probation", ejected_until="2026-01-01T00:00:05.000Z")]
    merged = merge_documents([one, two, three])
    assert [b["url"] for b in merged] == [
        "http://10.0.0.1:80",
        "http://10.0.0.2:80",
        "http://10.0.0.3:80",
    ]
    first = merged[0]
    assert first["in_flight"] == 7
    assert first["weight"] == 3  # a setting, not added up
    assert first["ejected"] is True  # in any worker
    assert first["available"] is True  # still selectable in another worker
    assert first["healthy"] is True
    assert first["passive_state"] == "ejected"
    assert first["ejected_until"] == "2026-01-01T00:00:09.000Z"
    assert first["requests_total"] is None
    assert merged[1]["in_flight"] == 1


def test_services_recount_available_backends_and_keep_their_totals() -> None:
    def service(*backends: dict[str, object]) -> dict[str, object]:
        return {
            "name": "api",
            "strategy": "round-robin",
            "source": "file",
            "backends_total": 2,
            "backends_available": sum(1 for b in backends if b["available"]),
            "backends": list(backends),
        }

    down = {"healthy": False, "available": False}
    # Each worker sees the first backend available: 1 + 1 would say 2 of 2 are.
    worker_a = [service(backend(), backend(url="http://10.0.0.2:80", **down))]
    worker_b = [service(backend(), backend(url="http://10.0.0.2:80", **down))]
    (merged,) = merge_services([worker_a, worker_b])
    assert merged["backends_total"] == 2
    assert merged["backends_available"] == 1  # recounted from the merged backends
    assert merged["strategy"] == "round-robin"


def test_middleware_states_merge_by_name() -> None:
    def breaker(state: str, failures: int, **transitions: int) -> dict[str, object]:
        return {
            "name": "cb",
            "type": "circuit-breaker",
            "routers": ["main"],
            "state": {
                "state": state,
                "in_flight": 1,
                "transitions": transitions,
                "services": {"api": {"state": state, "failures": failures}},
            },
        }

    def retry(*counts: tuple[str, str, int]) -> dict[str, object]:
        return {
            "name": "rt",
            "type": "retry",
            "routers": ["main"],
            "state": {
                "active_requests": 2,
                "budget": 1.5,
                "retries": [{"service": s, "reason": r, "count": c} for s, r, c in counts],
                "skipped": {"budget": 1},
            },
        }

    limit_a: dict[str, object] = {"name": "rl", "type": "rate-limit", "state": {"keys": 4}}
    limit_b: dict[str, object] = {"name": "rl", "type": "rate-limit", "state": {"keys": 6}}
    worker_a = [breaker("closed", 1), retry(("api", "502", 2)), limit_a]
    worker_b = [
        breaker("open", 5, open=1),
        retry(("api", "502", 3), ("api", "timeout", 1)),
        limit_b,
    ]
    cb, rt, rl = merge_documents([worker_a, worker_b])
    assert cb["state"] == {
        "state": "open",
        "in_flight": 2,
        "transitions": {"open": 1},
        "services": {"api": {"state": "open", "failures": 6}},
    }
    assert cb["routers"] == ["main"]
    assert rt["state"] == {
        "active_requests": 4,
        "budget": 3.0,
        "retries": [
            {"service": "api", "reason": "502", "count": 5},
            {"service": "api", "reason": "timeout", "count": 1},
        ],
        "skipped": {"budget": 2},
    }
    assert rl["state"] == {"keys": 10}


CONFIG = """
entrypoints "web" { address = "127.0.0.1:0" }
routers "main" {
  rule    = "PathPrefix(`/`)"
  service = "main"
}
services "main" {
  load_balancer { servers = [{ url = "http://127.0.0.1:1" }] }
}
management {
  address        = "127.0.0.1:9"
  auth_token_env = "FLEET_TOKEN"
}
"""


#: A tcp entrypoint: listed with the http ones (its workers reported nothing bound for it).
TCP_ENTRYPOINT = """
entrypoints "metrics" {
  address  = "127.0.0.1:0"
  protocol = "tcp"
}
"""


def test_entrypoints_union_the_bound_addresses_and_sum_connections() -> None:
    config = load_text(CONFIG + TCP_ENTRYPOINT, filename="t.hcl").config
    assert config is not None
    runtime = compile_runtime(config, 1, deps=Outbound().deps())
    states = [
        StateReply(1, "running", {"web": 2}, 0, {"web": [("127.0.0.1", 8080)]}),
        StateReply(2, "running", {"web": 3}, 0, {"web": [("127.0.0.1", 8080)]}),
    ]
    web, tcp = fleet_listeners(config, runtime, states)
    assert (web.name, web.bound, web.connections) == ("web", ("127.0.0.1:8080",), 5)
    assert (tcp.name, tcp.protocol, tcp.bound, tcp.connections) == ("metrics", "tcp", (), 0)
    silent, _ = fleet_listeners(config, runtime, [])
    assert (silent.bound, silent.connections) == ((), None)


# ------------------------------------------------------------------------------- fleet


@dataclass
class FleetUnderTest:
    supervisor: Supervisor
    spawn: FakeSpawner
    fleet: Fleet
    reloader: Reloader
    api: FleetApi
    server: FleetManagementServer

    async def get(self, path: str, *, token: str | None = TOKEN, method: str = "GET",
                  client: PeerAddress = LOCAL) -> ApiResponse:  # fmt: skip
        authorization = (f"Bearer {token}".encode(),) if token is not None else ()
        request = ApiRequest(method, f"{PREFIX}{path}", client, authorization)
        return await self.server.answer(request)


@asynccontextmanager
async def fleet_of(
    count: int, answers: dict[int, Answer], tmp_path: Path, config: Config | None = None
) -> AsyncIterator[FleetUnderTest]:
    config = config if config is not None else load(CONFIG)
    spawn = FakeSpawner(answers=answers)
    supervisor = Supervisor(count, spawn, drain_bound=40.0)
    deps = Outbound().deps()
    fleet = Fleet(supervisor, config, compile_runtime(config, 1, deps=deps), deps=deps)
    reloader = Reloader(fleet, str(tmp_path / "gateway.hcl"), watch=False, warm=False)
    api = FleetApi(supervisor, fleet, reloader, version="9.9.9")
    assert config.management is not None
    server = FleetManagementServer(config.management, api, environ={"FLEET_TOKEN": TOKEN})
    async with trio.open_nursery() as nursery:
        signals = await nursery.start(supervise, supervisor)
        await trio.testing.wait_all_tasks_blocked()
        yield FleetUnderTest(supervisor, spawn, fleet, reloader, api, server)
        await signals.send(signal.SIGTERM)


def body(response: ApiResponse) -> Any:
    return json.loads(response.body)


def documents(*found: dict[str, object]) -> Answer:
    def answer(query: Query) -> Reply | None:
        return DocumentsReply(query.id, list(found))

    return answer


async def test_refused_requests_ask_no_worker(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with fleet_of(2, {}, tmp_path) as fleet:
        assert (await fleet.get("/metrics", token=None)).status == 401
        assert (await fleet.get("/services", token="wrong")).status == 401
        assert (await fleet.get("/backends", client=OUTSIDE)).status == 403
        assert (await fleet.get("/metrics", method="POST")).status == 405
        assert (await fleet.get("/routes")).status == 200  # the supervisor's own runtime
        assert (await fleet.get("/version")).status == 200
        assert trio.current_time() == 0.0
        assert [w.queries for _, _, w in fleet.spawn.started] == [[], []]


async def test_ready_is_503_with_a_reason_while_a_worker_is_down(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with fleet_of(2, {0: state_of(1), 1: state_of(2)}, tmp_path) as fleet:
        ready = await fleet.get("/ready", token=None)
        assert (ready.status, body(ready)) == (200, {"ready": True})
        fleet.spawn.latest(1).exit(-signal.SIGKILL)
        await trio.testing.wait_all_tasks_blocked()
        down = await fleet.get("/ready", token=None)
        assert (down.status, body(down)) == (
            503,
            {"ready": False, "reason": "1 of 2 workers ready (worker 1 down)"},
        )
        head = await fleet.get("/ready", token=None, method="HEAD")
        assert (head.status, head.body) == (503, b"")
        assert head.header("content-length") == down.header("content-length")
        health = await fleet.get("/health", token=None)
        assert health.status == 200  # the supervisor runs; the other worker serves
        shown = body(health)
        assert (shown["state"], shown["workers"], shown["workers_expected"]) == ("degraded", 1, 2)
        await trio.sleep(1.5)  # the restart after 1 s
        assert (await fleet.get("/ready", token=None)).status == 200
        again = await fleet.get("/health", token=None)
        assert (again.status, body(again)["state"], body(again)["workers"]) == (200, "running", 2)


async def test_health_and_ready_are_503_while_no_worker_serves(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with fleet_of(2, {0: state_of(1), 1: state_of(2)}, tmp_path) as fleet:
        for index in (0, 1):
            fleet.spawn.latest(index).exit(-signal.SIGKILL)
        await trio.testing.wait_all_tasks_blocked()
        health = await fleet.get("/health", token=None)
        ready = await fleet.get("/ready", token=None)
        head = await fleet.get("/health", token=None, method="HEAD")
        posted = await fleet.get("/health", token=None, method="POST")
        assert health.status == 503
        shown = body(health)
        assert (shown["state"], shown["workers"], shown["workers_expected"]) == ("down", 0, 2)
        assert shown["config_generation"] == 1
        assert (ready.status, body(ready)) == (
            503,
            {"ready": False, "reason": "0 of 2 workers ready (worker 0 down, worker 1 down)"},
        )
        assert (head.status, head.body) == (503, b"")
        assert head.header("content-length") == health.header("content-length")
        assert posted.status == 405  # the method check is still handle's
        await trio.sleep(1.5)  # both restarted after 1 s
        back = await fleet.get("/health", token=None)
        assert (back.status, body(back)["state"]) == (200, "running")


@pytest.mark.parametrize(
    ("lifecycle", "ready", "expected"),
    [
        (GatewayState.STARTING, 1, ("starting", False)),
        (GatewayState.RUNNING, 3, ("running", True)),
        (GatewayState.RUNNING, 2, ("degraded", True)),
        (GatewayState.RUNNING, 0, ("down", False)),
        (GatewayState.STOPPING, 3, ("stopping", False)),
    ],
)
def test_fleet_state(lifecycle: GatewayState, ready: int, expected: tuple[str, bool]) -> None:
    assert fleet_state(lifecycle, ready, 3) == expected


async def test_a_reload_publishes_the_new_generation_to_every_worker(tmp_path: Path) -> None:
    # The real clock: the reload compiles in a thread, which the autojump clock would not wait
    # for (it would jump to the test's time limit).
    async with fleet_of(2, {}, tmp_path) as fleet:
        assert [w.generations for _, _, w in fleet.spawn.started] == [[1], [1]]
        changed = load(CONFIG.replace('127.0.0.1:1" }', '127.0.0.1:2" }'))
        assert await fleet.fleet.reload(changed) == 2
        await trio.testing.wait_all_tasks_blocked()
        assert [w.generations for _, _, w in fleet.spawn.started] == [[1, 2], [1, 2]]
        assert fleet.supervisor.served() == {0: 2, 1: 2}
        assert fleet.fleet.config() == changed


def service(in_flight: int, available: bool) -> dict[str, object]:
    backends = [backend(service="main", url="http://127.0.0.1:1", in_flight=in_flight,
                        available=available, healthy=available)]  # fmt: skip
    return {
        "name": "main",
        "strategy": "round-robin",
        "source": "file",
        "backends_total": 1,
        "backends_available": int(available),
        "backends": backends,
    }


async def test_live_documents_are_the_workers_merged(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    answers = {0: documents(service(2, False)), 1: documents(service(3, True))}
    async with fleet_of(2, answers, tmp_path) as fleet:
        services = await fleet.get("/services")
        one = await fleet.get("/services/main")
        unknown = await fleet.get("/services/nope")
        backends = await fleet.get("/backends")
        head = await fleet.get("/backends", method="HEAD")
    assert services.status == one.status == backends.status == 200
    (merged,) = body(services)
    assert merged == body(one)
    assert merged["backends_available"] == 1
    assert [(b["in_flight"], b["available"]) for b in body(backends)] == [(5, True)]
    assert unknown.status == 404  # decided by the supervisor's runtime, no worker needed
    assert (head.status, head.body) == (200, b"")
    assert head.header("content-length") == backends.header("content-length")


async def test_no_answer_from_any_worker_is_503_after_the_timeout(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with fleet_of(2, {}, tmp_path) as fleet:
        middlewares = await fleet.get("/middlewares")
        assert trio.current_time() == pytest.approx(2.0)  # both asked at once
        assert (middlewares.status, body(middlewares)) == (503, {"error": "no worker answered"})
        assert fleet.supervisor.query_failures == {"middlewares": 2}
        # The exposition is rendered in a worker thread, which the clock cannot see: it jumps
        # only after 0.2 s of real idleness now, so the render finishes before the deadline.
        autojump_clock.autojump_threshold = 0.2
        scrape = await fleet.get("/metrics")
        assert scrape.status == 200  # the supervisor's own families still answer
        families = {f.name: f for f in text_string_to_metric_families(scrape.body.decode())}
        failures = {
            s.labels["query"]: s.value for s in families["a3s_worker_query_failures"].samples
        }
        assert failures == {"middlewares": 2.0, "metrics": 2.0}
        assert families["a3s_workers_ready"].samples[0].value == 2


# ------------------------------------------------------------------------------- real gateways


async def request(port: int, count: int) -> None:
    for _ in range(count):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            while await stream.receive_some(65536):
                pass


def by_gateway(gateway: Gateway) -> Answer:
    return lambda query: answer_query(query, gateway)


@asynccontextmanager
async def worker_gateway(config: Config) -> AsyncIterator[tuple[Gateway, int]]:
    """A gateway as a worker runs it (no management listener), and its ``web`` port."""
    gateway = Gateway(config, management=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(gateway.serve)
        try:
            yield gateway, gateway.addresses()["web"][0][1]
        finally:
            await gateway.shutdown(0.0)


@pytest.mark.integration
async def test_metrics_of_two_gateways_sum_and_config_families_are_the_supervisors(
    tmp_path: Path,
) -> None:
    text = CONFIG.replace("127.0.0.1:9", f"127.0.0.1:{free_port()}")
    config = load(text)
    async with worker_gateway(config) as (one, one_port), worker_gateway(config) as (two, two_port):
        await request(one_port, 3)
        await request(two_port, 2)
        await two.reload(config)  # a worker's own reload is not counted twice
        answers = {0: by_gateway(one), 1: by_gateway(two)}
        async with fleet_of(2, answers, tmp_path, config) as fleet:
            fleet.reloader.counts["ok"] = 4
            scrape = await fleet.get("/metrics")
            health = await fleet.get("/health", token=None)
            entrypoints = await fleet.get("/entrypoints")
    assert scrape.status == 200
    families = {f.name: f for f in text_string_to_metric_families(scrape.body.decode())}
    requests = [s for s in families["a3s_http_requests"].samples if s.name.endswith("_total")]
    assert [(s.labels["code"], s.value) for s in requests] == [("502", 5.0)]
    reloads = {s.labels["result"]: s.value for s in families["a3s_config_reloads"].samples}
    assert reloads == {"ok": 4.0, "error": 0.0, "unchanged": 0.0}
    assert [s.value for s in families["a3s_config_generation"].samples] == [1.0]
    assert [s.labels["version"] for s in families["a3s_build_info"].samples] == ["9.9.9"]
    connections = families["a3s_connections"].samples
    assert sum(s.value for s in connections if s.name == "a3s_connections_total") == 5
    assert (body(health)["total_requests"], body(health)["workers"]) == (5, 2)
    (web,) = body(entrypoints)  # one http entrypoint
    assert sorted(web["bound"]) == sorted(  # each in-process gateway bound its own port
        f"127.0.0.1:{port}" for port in (one_port, two_port)
    )


@pytest.mark.integration
async def test_a_worker_gateway_binds_no_management_listener() -> None:
    with trio.socket.socket() as taken:
        await taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = load(CONFIG.replace("127.0.0.1:9", f"127.0.0.1:{port}"))
        with pytest.raises(StartError, match="management API"):
            await Gateway(config).serve()  # binding fails before it would start
        worker = Gateway(config, management=False)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            assert worker.metrics_snapshot() is not None
            await worker.shutdown()
