"""Backend selection of scaled and split services in the running gateway (SPEC §7.9, §11.4–
§11.7, §11.8 "Step", §7.6): the container concurrency limiter, the scale-from-zero buffer, the
failover before the buffer, the revision split, the rollout's sample of its ``to`` revision,
and sticky cookies of revisions without traffic.

An in-process ``Gateway`` in front of real test origins (``tests/support/origin.py``) on
loopback, so the real clock: every wait is for a condition (what an origin received, a buffer
depth, a backend's health), polled under a deadline; never a sleep. Each origin answers with
its own name, so the tests see which backend served. Executors are ``mock``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import h11
import pytest
import trio

from a3s_gateway.scaling.executors import MockExecutor
from a3s_gateway.scaling.live import LiveService
from a3s_gateway.scaling.revisions import affinity_hash
from a3s_gateway.services import Backend
from tests.support.gateway import GatewayHandle, load, running_gateway
from tests.support.h2_client import H2Client
from tests.support.origin import Fixed, Origin, SlowHead

pytestmark = pytest.mark.integration

LOCAL: Final = "127.0.0.1"
#: Upper bound on one request, and on any condition awaited.
WAIT: Final = 10.0
#: A fast active check: a probe every 100 ms, one result flips the verdict.
CHECK: Final = """
    health_check {
      path                = "/health"
      interval            = "100ms"
      timeout             = "100ms"
      unhealthy_threshold = 1
      healthy_threshold   = 1
    }
"""


# -- a small HTTP/1.1 client ----------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        return next((value for key, value in self.headers if key == name), None)

    def error(self) -> object:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document.get("error")

    @property
    def origin(self) -> str:
        """The name of the test origin that answered (``Echo``)."""
        assert self.status == 200, (self.status, self.body)
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return str(document["origin"])


def request_bytes(path: str, headers: Sequence[tuple[str, str]]) -> tuple[h11.Connection, bytes]:
    conn = h11.Connection(h11.CLIENT)
    fields = [("Host", "gateway.test"), ("Connection", "close"), *headers]
    data = conn.send(h11.Request(method="GET", target=path, headers=fields))
    data += conn.send(h11.EndOfMessage())
    return conn, data


async def get(port: int, path: str = "/", headers: Sequence[tuple[str, str]] = ()) -> Answer:
    """One GET on a new connection: the whole response."""
    with trio.fail_after(WAIT):
        stream = await trio.open_tcp_stream(LOCAL, port)
        try:
            conn, data = request_bytes(path, headers)
            await stream.send_all(data)
            answer: Answer | None = None
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    fields = [(bytes(k), bytes(v)) for k, v in event.headers]
                    answer = Answer(event.status_code, fields, b"")
                elif isinstance(event, h11.Data):
                    assert answer is not None
                    answer.body += bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    assert answer is not None
                    return answer
                else:
                    raise AssertionError(f"unexpected {event!r}")
        finally:
            await trio.aclose_forcefully(stream)


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds (bounded)."""
    with trio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110 -- the gateway's state has no event
            await trio.sleep(0.005)


class Calls:
    """Requests sent in the background and their answers, in the order they came back."""

    def __init__(self, nursery: trio.Nursery, port: int) -> None:
        self._nursery = nursery
        self._port = port
        self.answers: list[Answer] = []

    def start(self, path: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        self._nursery.start_soon(self._run, path, headers)

    async def _run(self, path: str, headers: Sequence[tuple[str, str]]) -> None:
        self.answers.append(await get(self._port, path, headers))


# -- configs and helpers ----------------------------------------------------------------------


def server(origin: Origin) -> str:
    return f'{{ url = "http://{LOCAL}:{origin.port}" }}'


def config(services: str) -> str:
    """Entrypoint ``web`` on port 0; router ``main`` sends everything to service ``main``."""
    return (
        f'entrypoints "web" {{ address = "{LOCAL}:0" }}\n'
        'routers "main" {\n  rule    = "PathPrefix(`/`)"\n  service = "main"\n}\n'
        + services
        + "shutdown_timeout_secs = 2\n"
    )


def scaling(*lines: str) -> str:
    body = "".join(f"    {line}\n" for line in lines)
    return '  scaling {\n    executor = "mock"\n' + body + "  }\n"


async def serving(nursery: trio.Nursery, *names: str) -> list[Origin]:
    origins = []
    for name in names:
        origin = Origin(name)
        await nursery.start(origin.serve)
        origins.append(origin)
    return origins


def heads(*origins: Origin, path: bytes) -> int:
    return sum(1 for origin in origins for request in origin.requests if request.path == path)


def backend(gw: GatewayHandle, origin: Origin, service: str = "main") -> Backend:
    runtime = gw.gateway.runtime
    assert runtime is not None
    url = f"http://{LOCAL}:{origin.port}"
    return next(b for b in runtime.services[service].backends if b.url.text.rstrip("/") == url)


def live(gw: GatewayHandle, service: str = "main") -> LiveService:
    runtime = gw.gateway.runtime
    assert runtime is not None
    scale = runtime.services[service].scale
    assert scale is not None
    assert scale.live is not None
    return scale.live


def results(gw: GatewayHandle) -> dict[tuple[str, str], int]:
    return dict(gw.gateway.scaling.counts.results)


def depth(gw: GatewayHandle) -> int:
    return gw.gateway.scaling.counts.depths.get("main", 0)


def decisions(gw: GatewayHandle) -> list[tuple[str, int, str]]:
    control = gw.gateway.scaling.control
    assert control is not None
    executor = control.autoscalers["main"].executor
    assert isinstance(executor, MockExecutor)
    return executor.decisions


# -- container concurrency (SPEC §11.6) ---------------------------------------------------------


async def test_the_limiter_spreads_and_answers_503_at_capacity_without_failover(
    nursery: trio.Nursery,
) -> None:
    a, b, spare = await serving(nursery, "a", "b", "spare")
    release = trio.Event()
    a.on("/slow", SlowHead(release))
    b.on("/slow", SlowHead(release))
    text = config(
        'services "main" {\n'
        f"  load_balancer {{ servers = [{server(a)}, {server(b)}] }}\n"
        '  failover { service = "spare" }\n'
        + scaling("container_concurrency = 1", "min_replicas = 1")
        + "}\n"
        f'services "spare" {{\n  load_balancer {{ servers = [{server(spare)}] }}\n}}\n'
    )
    async with running_gateway(load(text)) as gw, trio.open_nursery() as calls_nursery:
        calls = Calls(calls_nursery, gw.port)
        calls.start("/slow")
        await until(lambda: heads(a, b, path=b"/slow") == 1)
        calls.start("/slow")
        await until(lambda: heads(a, b, path=b"/slow") == 2)
        assert (heads(a, path=b"/slow"), heads(b, path=b"/slow")) == (1, 1)

        full = await get(gw.port, "/slow")  # both at their limit of one
        assert full.status == 503
        assert full.error() == "all backends at capacity"
        assert spare.requests == []  # at capacity is not "no available backend"
        assert gw.metric("a3s_failover_requests_total") == 0

        release.set()
        await until(lambda: len(calls.answers) == 2)
        assert sorted(answer.origin for answer in calls.answers) == ["a", "b"]
        assert (await get(gw.port, "/after")).status == 200


async def test_the_least_loaded_backend_is_chosen_before_the_strategys_turn(
    nursery: trio.Nursery,
) -> None:
    a, b = await serving(nursery, "a", "b")
    release = trio.Event()
    a.on("/slow", SlowHead(release))
    b.on("/slow", SlowHead(release))
    text = config(
        'services "main" {\n'
        f"  load_balancer {{ servers = [{server(a)}, {server(b)}] }}\n"
        + scaling("container_concurrency = 5", "min_replicas = 1")
        + "}\n"
    )
    async with running_gateway(load(text)) as gw, trio.open_nursery() as calls_nursery:
        calls = Calls(calls_nursery, gw.port)
        calls.start("/slow")
        await until(lambda: heads(a, b, path=b"/slow") == 1)
        busy, idle = (a, b) if heads(a, path=b"/slow") else (b, a)
        # Round-robin alone would alternate; one request in flight makes ``busy`` the more
        # loaded, so every short request goes to ``idle``.
        served = [(await get(gw.port, "/quick")).origin for _ in range(4)]
        assert served == [idle.name] * 4
        assert heads(busy, path=b"/quick") == 0
        release.set()
        await until(lambda: len(calls.answers) == 1)
        assert calls.answers[0].origin == busy.name


async def test_a_request_at_capacity_waits_in_the_buffer_until_capacity_frees(
    nursery: trio.Nursery,
) -> None:
    (a,) = await serving(nursery, "a")
    release = trio.Event()
    a.on("/slow", SlowHead(release))
    text = config(
        'services "main" {\n'
        f"  load_balancer {{\n    servers = [{server(a)}]\n{CHECK}  }}\n"
        + scaling(
            "container_concurrency = 1",
            "min_replicas = 1",
            "buffer_enabled = true",
            "buffer_timeout_secs = 10",
        )
        + "}\n"
    )
    async with running_gateway(load(text)) as gw, trio.open_nursery() as calls_nursery:
        await until(lambda: backend(gw, a).available)
        calls = Calls(calls_nursery, gw.port)
        calls.start("/slow")
        await until(lambda: heads(a, path=b"/slow") == 1)
        calls.start("/next")
        await until(lambda: depth(gw) == 1)  # at capacity: it waits
        assert heads(a, path=b"/next") == 0
        release.set()
        await until(lambda: len(calls.answers) == 2)
        assert [answer.status for answer in calls.answers] == [200, 200]
        assert results(gw) == {("main", "released"): 1}


# -- the scale-from-zero buffer (SPEC §11.4, §11.5) ---------------------------------------------


def buffered(origin: Origin, *, size: int = 1, timeout: int = 10, extra: str = "") -> str:
    return config(
        'services "main" {\n'
        f"  load_balancer {{\n    servers = [{server(origin)}]\n{CHECK}  }}\n"
        + scaling(
            "container_concurrency = 10",
            "buffer_enabled = true",
            f"buffer_size = {size}",
            f"buffer_timeout_secs = {timeout}",
        )
        + extra
        + "}\n"
    )


async def test_a_buffered_request_is_served_once_the_backend_is_healthy(
    nursery: trio.Nursery,
) -> None:
    (a,) = await serving(nursery, "a")
    a.on("/health", Fixed(503, b"starting"))
    async with running_gateway(load(buffered(a))) as gw, trio.open_nursery() as calls_nursery:
        calls = Calls(calls_nursery, gw.port)
        calls.start("/first")
        await until(lambda: depth(gw) == 1)
        # The autoscaler was poked at once: the mock executor scaled from zero.
        await until(lambda: decisions(gw) != [])
        assert decisions(gw)[0][:2] == ("main", 1)
        assert decisions(gw)[0][2].startswith("up: activation")

        full = await get(gw.port, "/second")
        assert full.status == 503
        assert full.error() == "request buffer full"
        assert full.header(b"retry-after") == b"1"

        a.on("/health", Fixed(200, b"ok"))  # the replica is up
        await until(lambda: len(calls.answers) == 1)
        assert calls.answers[0].origin == "a"
        assert heads(a, path=b"/first") == 1
        assert heads(a, path=b"/second") == 0
        assert results(gw) == {("main", "overflow"): 1, ("main", "released"): 1}


async def test_a_buffered_request_times_out_with_504(nursery: trio.Nursery) -> None:
    (a,) = await serving(nursery, "a")
    a.on("/health", Fixed(503, b"never"))
    async with running_gateway(load(buffered(a, timeout=1))) as gw:
        started = trio.current_time()
        answer = await get(gw.port, "/")
        assert trio.current_time() - started >= 1.0
        assert answer.status == 504
        assert answer.error() == "backend scale-up timed out"
        assert results(gw) == {("main", "timeout"): 1}


async def test_the_access_log_names_the_buffers_outcomes(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """SPEC §9.2: the ``error`` field says ``buffer_full`` and ``buffer_timeout``."""
    (a,) = await serving(nursery, "a")
    a.on("/health", Fixed(503, b"never"))
    log = tmp_path / "access.log"
    text = buffered(a, timeout=1) + f'observability {{\n  access_log_path = "{log}"\n}}\n'
    async with running_gateway(load(text)) as gw, trio.open_nursery() as calls_nursery:
        calls = Calls(calls_nursery, gw.port)
        calls.start("/waits")
        await until(lambda: depth(gw) == 1)
        assert (await get(gw.port, "/overflows")).status == 503
        await until(lambda: len(calls.answers) == 1)
        assert calls.answers[0].status == 504
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted((line["path"], line["status"], line["error"]) for line in lines) == [
        ("/overflows", 503, "buffer_full"),
        ("/waits", 504, "buffer_timeout"),
    ]


async def test_a_client_that_leaves_while_buffered_is_counted_cancelled(
    nursery: trio.Nursery,
) -> None:
    (a,) = await serving(nursery, "a")
    a.on("/health", Fixed(503, b"never"))
    async with running_gateway(load(buffered(a, timeout=3))) as gw:
        stream = await trio.open_tcp_stream(LOCAL, gw.port)
        _, data = request_bytes("/", ())
        await stream.send_all(data)
        await until(lambda: depth(gw) == 1)
        await stream.aclose()  # the client gives up
        await until(lambda: results(gw) != {})
        assert results(gw) == {("main", "cancelled"): 1}  # not the timeout 3 s later
        assert depth(gw) == 0


async def test_a_stream_reset_while_buffered_is_counted_cancelled(nursery: trio.Nursery) -> None:
    (a,) = await serving(nursery, "a")
    a.on("/health", Fixed(503, b"never"))
    async with running_gateway(load(buffered(a, timeout=3))) as gw:
        client = await H2Client.connect(gw.port)
        try:
            stream_id = await client.request("/")
            await until(lambda: depth(gw) == 1)
            await client.reset(stream_id)  # the client gives up on this request
            await until(lambda: results(gw) != {})
        finally:
            await client.aclose()
        assert results(gw) == {("main", "cancelled"): 1}
        assert depth(gw) == 0


async def test_a_backend_readmitted_by_passive_health_releases_the_waiters(
    nursery: trio.Nursery,
) -> None:
    """SPEC §11.5: a backend that becomes available releases the buffer; here it comes back
    from a passive-health ejection (§7.5) while its active health never changed."""
    (a,) = await serving(nursery, "a")
    a.on("/boom", Fixed(500, b"broken"))
    slow_check = CHECK.replace('"100ms"', '"10s"')
    passive = """
    passive_health {
      error_threshold      = 1
      recovery_time        = "1s"
      max_recovery_time    = "1s"
      max_ejection_percent = 100
    }
"""
    text = config(
        'services "main" {\n'
        f"  load_balancer {{\n    servers = [{server(a)}]\n{slow_check}{passive}  }}\n"
        + scaling(
            "container_concurrency = 10",
            "buffer_enabled = true",
            "buffer_timeout_secs = 4",
        )
        + "}\n"
    )
    async with running_gateway(load(text)) as gw:
        await until(lambda: backend(gw, a).available)
        assert (await get(gw.port, "/boom")).status == 500
        assert backend(gw, a).passive_ejected  # for one second
        started = trio.current_time()
        answer = await get(gw.port, "/after")  # waits in the buffer meanwhile
        elapsed = trio.current_time() - started
        assert backend(gw, a).available  # readmitted about a second after the ejection
        assert answer.status == 200, f"{answer.status} {answer.body!r} after {elapsed:.2f}s"
        assert elapsed < 3.0
        assert results(gw) == {("main", "released"): 1}


async def test_an_available_failover_is_used_before_the_buffer(nursery: trio.Nursery) -> None:
    a, spare = await serving(nursery, "a", "spare")
    a.on("/health", Fixed(503, b"scaled to zero"))
    extra = '  failover { service = "spare" }\n'
    text = buffered(a, extra=extra) + (
        f'services "spare" {{\n  load_balancer {{ servers = [{server(spare)}] }}\n}}\n'
    )
    async with running_gateway(load(text)) as gw:
        started = trio.current_time()
        answer = await get(gw.port, "/")
        assert answer.origin == "spare"
        assert trio.current_time() - started < 5.0  # not held for the 10 s buffer timeout
        assert results(gw) == {}  # it never waited in the buffer
        await until(lambda: decisions(gw) != [])  # the autoscaler was poked all the same
        assert decisions(gw)[0][:2] == ("main", 1)
        assert gw.metric("a3s_failover_requests_total", reason="no_backend") == 1


# -- revisions (SPEC §11.7) ---------------------------------------------------------------------


def revisions(
    a: Origin, b: Origin, *, percents: tuple[int, int] = (70, 30), extra: str = ""
) -> str:
    first, second = percents
    return (
        "  revisions = [\n"
        f'    {{ name = "v1", traffic_percent = {first}, servers = [{server(a)}] }},\n'
        f'    {{ name = "v2", traffic_percent = {second}, tag = "canary", '
        f"servers = [{server(b)}] }},\n"
        "  ]\n" + extra
    )


async def origins_of(
    gw: GatewayHandle, count: int, headers: Sequence[tuple[str, str]] = ()
) -> list[str]:
    return [(await get(gw.port, "/", headers)).origin for _ in range(count)]


async def test_the_split_is_exact_and_the_revision_header_selects_by_name_or_tag(
    nursery: trio.Nursery,
) -> None:
    a, b = await serving(nursery, "a", "b")
    text = config(
        'services "main" {\n' + revisions(a, b, extra='  revision_header = "X-Revision"\n') + "}\n"
    )
    async with running_gateway(load(text)) as gw:
        assert Counter(await origins_of(gw, 100)) == {"a": 70, "b": 30}
        assert await origins_of(gw, 3, [("X-Revision", "v2")]) == ["b"] * 3
        assert await origins_of(gw, 3, [("X-Revision", "canary")]) == ["b"] * 3
        assert await origins_of(gw, 3, [("X-Revision", "v1")]) == ["a"] * 3


async def test_unavailable_revisions_are_left_out_then_the_fallback_pool_serves(
    nursery: trio.Nursery,
) -> None:
    a, b, fallback = await serving(nursery, "a", "b", "fallback")
    text = config(
        'services "main" {\n'
        f"  load_balancer {{\n    servers = [{server(fallback)}]\n{CHECK}  }}\n"
        + revisions(a, b)
        + "}\n"
    )
    async with running_gateway(load(text)) as gw:
        b.on("/health", Fixed(503, b"down"))
        await until(lambda: not backend(gw, b).available)
        assert await origins_of(gw, 10) == ["a"] * 10  # v2 left out: v1 takes 100 %
        a.on("/health", Fixed(503, b"down"))
        await until(lambda: not backend(gw, a).available)
        assert await origins_of(gw, 4) == ["fallback"] * 4  # no revision: the fallback pool
        b.on("/health", Fixed(200, b"ok"))
        await until(lambda: backend(gw, b).available)
        assert await origins_of(gw, 4) == ["b"] * 4
        assert heads(fallback, path=b"/") == 4


async def test_revision_affinity_keeps_each_user_on_one_revision(nursery: trio.Nursery) -> None:
    a, b = await serving(nursery, "a", "b")
    text = config(
        'services "main" {\n'
        + revisions(a, b, extra='  revision_affinity = "header:X-User"\n')
        + "}\n"
    )
    async with running_gateway(load(text)) as gw:
        for number in range(12):
            user = f"user-{number}"
            # The key's hash is a point in [0, 100): below 70 is v1's range.
            expected = "a" if affinity_hash(user.encode()) * 100 < 70 << 64 else "b"
            assert await origins_of(gw, 3, [("X-User", user)]) == [expected] * 3, user


# -- the rollout's sample (SPEC §11.8 "Step") -----------------------------------------------------


async def test_requests_to_the_rollouts_to_revision_are_sampled(nursery: trio.Nursery) -> None:
    a, b = await serving(nursery, "a", "b")
    b.on("/boom", Fixed(500, b"broken"))
    rollout = (
        '  revision_header = "X-Revision"\n'
        '  rollout {\n    from = "v1"\n    to = "v2"\n    step_interval_secs = 3600\n  }\n'
    )
    text = config('services "main" {\n' + revisions(a, b, extra=rollout) + "}\n")
    async with running_gateway(load(text)) as gw:
        state = live(gw)
        state.take_sample()  # from here on
        assert await origins_of(gw, 2, [("X-Revision", "v1")]) == ["a", "a"]  # not sampled
        assert await origins_of(gw, 3, [("X-Revision", "v2")]) == ["b"] * 3
        assert (await get(gw.port, "/boom", [("X-Revision", "v2")])).status == 500
        sample = state.take_sample()
        assert (sample.requests, sample.errors) == (4, 1)
        assert len(sample.samples) == 4  # each with its upstream latency
        assert all(0 <= latency < WAIT for latency in sample.samples)


# -- sticky cookies and the live split (SPEC §7.6, §7.9 step 1) -----------------------------------


async def test_a_cookie_naming_a_revision_without_traffic_is_not_honoured(
    nursery: trio.Nursery,
) -> None:
    a, b = await serving(nursery, "a", "b")
    text = config(
        'services "main" {\n'
        '  load_balancer { sticky { cookie = "pin" } }\n'
        + revisions(a, b, percents=(100, 0), extra='  revision_header = "X-Revision"\n')
        + "}\n"
    )
    async with running_gateway(load(text)) as gw:
        pinned = await get(gw.port, "/", [("X-Revision", "v2")])
        assert pinned.origin == "b"  # the header still reaches v2
        cookie_b = pinned.header(b"set-cookie")
        assert cookie_b is not None
        value_b = cookie_b.split(b";")[0].decode()

        answer = await get(gw.port, "/", [("Cookie", value_b)])
        assert answer.origin == "a"  # v2 has no share: the cookie is not honoured
        cookie_a = answer.header(b"set-cookie")
        assert cookie_a is not None  # and the client is pinned anew
        value_a = cookie_a.split(b";")[0].decode()

        again = await get(gw.port, "/", [("Cookie", value_a)])
        assert again.origin == "a"
        assert again.header(b"set-cookie") is None  # a cookie with a share is honoured
