"""The active health prober (SPEC §7.4): one probe's request and verdict, and the schedule.

Most tests inject a dialer that hands out one end of ``trio.testing.memory_stream_pair()`` and
serves the other end with a scripted h11 server, and run on ``autojump_clock`` (the scripted
backend's delays are simulated latency; every wait on the test side is on an event). The last
tests probe the real test origin (``tests/support/origin.py``) over 127.0.0.1 with the real clock.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import TypeAlias

import h11
import pytest
import trio
import trio.testing
import trustme

from a3s_gateway.config.values import ServerUrl
from a3s_gateway.probes.checker import (
    BODY_LIMIT,
    ProbeResult,
    probe,
    probe_target,
    run_prober,
    user_agent,
)
from a3s_gateway.services.backend import Backend
from a3s_gateway.services.health import ActiveHealth, CheckSettings, parse_expected_status
from a3s_gateway.upstream.connect_errors import ConnectFailed
from a3s_gateway.upstream.peer import Peer, TlsIdentity, UpstreamTlsSettings
from tests.support.origin import Fixed, Origin
from tests.support.tls_origin import TlsOrigin, write_ca, write_leaf

URL = ServerUrl("http://10.0.0.1:8080/base/")
HTTP = CheckSettings(kind="http", path="/health?deep=1", interval=10.0, timeout=5.0)
TCP = CheckSettings(kind="tcp", path="", interval=10.0, timeout=5.0)
#: A short interval for schedules of many probes (the per-test limit is 60 s on trio's clock).
FAST = CheckSettings(kind="http", path="/h", interval=5.0, timeout=2.0)


# -- a scripted backend -------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """Answer ``status`` after ``delay`` seconds, with a Content-Length body of ``size`` bytes
    of which only ``sent`` are sent (None: all), then wait for the prober to close."""

    status: int = 200
    delay: float = 0.0
    size: int = 0
    sent: int | None = None


@dataclass(frozen=True)
class Hang:
    """Read the request and never answer."""


@dataclass(frozen=True)
class Raw:
    """Read the request, send ``data`` verbatim, then close."""

    data: bytes


@dataclass(frozen=True)
class Refuse:
    """The dial fails with ``ConnectFailed(reason)``."""

    reason: str = "refused"


@dataclass(frozen=True)
class SlowDial:
    """The dial never completes."""


Script: TypeAlias = Reply | Hang | Raw | Refuse | SlowDial


@dataclass
class ScriptedBackend:
    """A ``Dialer`` whose n-th dial is served per ``script(n)`` (n from 0)."""

    nursery: trio.Nursery
    script: Callable[[int], Script]
    peers: list[Peer] = field(default_factory=list)
    dial_times: list[float] = field(default_factory=list)
    requests: list[h11.Request] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    closed: int = 0  # connections whose prober end was closed
    changed: trio.Event = field(default_factory=trio.Event)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            await self.changed.wait()

    async def __call__(self, peer: Peer) -> trio.abc.Stream:
        number = len(self.dial_times)
        self.peers.append(peer)
        self.dial_times.append(trio.current_time())
        self._notify()
        step = self.script(number)
        if isinstance(step, SlowDial):
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()
        if isinstance(step, Refuse):
            raise ConnectFailed(step.reason)
        ours, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self._serve, theirs, step)
        return ours

    async def _serve(self, stream: trio.abc.Stream, step: Script) -> None:
        conn = h11.Connection(h11.SERVER)
        received = b""
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = bytes(await stream.receive_some())
                    received += data
                    conn.receive_data(data)
                    if not data and conn.their_state is h11.IDLE:
                        break  # a tcp probe: closed without a request
                elif isinstance(event, h11.Request):
                    self.requests.append(event)
                    self._notify()
                elif isinstance(event, h11.EndOfMessage):
                    break
            self.bodies.append(received)
            match step:
                case Reply(status=status, delay=delay, size=size, sent=sent):
                    await trio.sleep(delay)  # the backend's simulated latency
                    headers = [(b"content-length", str(size).encode())]
                    wire = conn.send(h11.Response(status_code=status, headers=headers))
                    await stream.send_all(wire)
                    payload = b"x" * (size if sent is None else sent)
                    if payload:
                        await stream.send_all(conn.send(h11.Data(data=payload)))
                    if sent is None:
                        await stream.send_all(conn.send(h11.EndOfMessage()))
                case Raw(data=data):
                    await stream.send_all(data)
                    await stream.aclose()
                case _:
                    pass
            while await stream.receive_some():
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        self.closed += 1
        self._notify()


def always(step: Script) -> Callable[[int], Script]:
    return lambda _: step


def sequence(*steps: Script) -> Callable[[int], Script]:
    return lambda number: steps[min(number, len(steps) - 1)]


# -- one probe ----------------------------------------------------------------------------------


async def test_http_probe_success_and_request(nursery: trio.Nursery) -> None:
    backend = ScriptedBackend(nursery, always(Reply(200, size=12)))
    settings = CheckSettings(kind="http", path="/health?deep=1", headers=((b"x-probe", b"yes"),))
    assert await probe(URL, settings, dialer=backend) == ProbeResult(True, "status 200")
    assert backend.peers == [Peer("http", "10.0.0.1", 8080)]
    [request] = backend.requests
    assert (request.method, request.target, request.http_version) == (
        b"GET",
        b"/base/health?deep=1",
        b"1.1",
    )
    assert list(request.headers) == [
        (b"host", b"10.0.0.1:8080"),
        (b"user-agent", user_agent()),
        (b"connection", b"close"),
        (b"x-probe", b"yes"),
    ]
    assert user_agent().startswith(b"a3s-gateway-health/")
    await backend.wait_for(lambda: backend.closed == 1)  # the connection is not kept


async def test_unexpected_status_is_a_failure(nursery: trio.Nursery) -> None:
    backend = ScriptedBackend(nursery, always(Reply(503, size=5)))
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, "status 503")


async def test_redirects_are_not_followed(nursery: trio.Nursery) -> None:
    backend = ScriptedBackend(nursery, always(Reply(302)))
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, "status 302")
    assert len(backend.dial_times) == 1


@pytest.mark.parametrize(("status", "success"), [(200, True), (204, True), (201, False)])
async def test_expected_status_list(nursery: trio.Nursery, status: int, success: bool) -> None:
    backend = ScriptedBackend(nursery, always(Reply(status)))
    settings = CheckSettings(kind="http", path="/", expected=parse_expected_status("200,204"))
    assert await probe(URL, settings, dialer=backend) == ProbeResult(success, f"status {status}")


async def test_head_probe(nursery: trio.Nursery) -> None:
    backend = ScriptedBackend(nursery, always(Reply(200)))
    settings = CheckSettings(kind="http", path="/h", method="HEAD")
    assert await probe(URL, settings, dialer=backend) == ProbeResult(True, "status 200")
    assert backend.requests[0].method == b"HEAD"


async def test_a_101_fails_a_probe_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    switch = (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    )

    async def quiet_after_101(stream: trio.abc.Stream) -> None:
        await stream.receive_some()
        await stream.send_all(switch)
        await trio.sleep_forever()  # a tunnel that says nothing more

    async def dial(peer: Peer) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(quiet_after_101, theirs)
        return ours

    upgrade = ((b"connection", b"upgrade"), (b"upgrade", b"websocket"))
    settings = CheckSettings(kind="http", path="/ws", headers=upgrade)
    began = trio.current_time()
    assert await probe(URL, settings, dialer=dial) == ProbeResult(False, "invalid response")
    assert trio.current_time() == began  # not the probe's timeout


async def test_configured_user_agent_replaces_ours(nursery: trio.Nursery) -> None:
    backend = ScriptedBackend(nursery, always(Reply(200)))
    settings = CheckSettings(kind="http", path="/h", headers=((b"user-agent", b"kube-probe"),))
    await probe(URL, settings, dialer=backend)
    assert [v for n, v in backend.requests[0].headers if n == b"user-agent"] == [b"kube-probe"]


async def test_timeout_is_a_failure_and_closes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    backend = ScriptedBackend(nursery, always(Hang()))
    start = trio.current_time()
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, "timeout")
    assert trio.current_time() - start == pytest.approx(HTTP.timeout)
    await backend.wait_for(lambda: backend.closed == 1)


async def test_slow_response_within_timeout_succeeds(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    backend = ScriptedBackend(nursery, always(Reply(200, delay=4.9)))
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(True, "status 200")
    backend = ScriptedBackend(nursery, always(Reply(200, delay=5.1)))
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, "timeout")


async def test_the_timeout_covers_the_dial(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        backend = ScriptedBackend(nursery, always(SlowDial()))
        assert await probe(URL, TCP, dialer=backend) == ProbeResult(False, "timeout")
        assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, "timeout")


async def test_the_timeout_covers_the_body(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    backend = ScriptedBackend(nursery, always(Reply(200, size=1000, sent=10)))
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, "timeout")


async def test_body_is_read_only_up_to_the_bound(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """A huge body that never ends does not hold the probe: the status decides."""
    step = Reply(200, size=10 * BODY_LIMIT, sent=2 * BODY_LIMIT)
    backend = ScriptedBackend(nursery, always(step))
    start = trio.current_time()
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(True, "status 200")
    assert trio.current_time() == start
    await backend.wait_for(lambda: backend.closed == 1)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"THIS IS NOT HTTP\r\n\r\n", "invalid response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "invalid response"),
        (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "invalid response"),
        (b"", "no response"),
    ],
)
async def test_invalid_or_missing_response_is_a_failure(
    nursery: trio.Nursery, data: bytes, reason: str
) -> None:
    backend = ScriptedBackend(nursery, always(Raw(data)))
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, reason)


async def test_close_delimited_body_is_fine(nursery: trio.Nursery) -> None:
    backend = ScriptedBackend(nursery, always(Raw(b"HTTP/1.1 200 OK\r\n\r\nbody until EOF")))
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(True, "status 200")


async def test_1xx_is_skipped(nursery: trio.Nursery) -> None:
    wire = b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    backend = ScriptedBackend(nursery, always(Raw(wire)))
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(True, "status 204")


async def test_connect_failure_is_a_failure(nursery: trio.Nursery) -> None:
    backend = ScriptedBackend(nursery, always(Refuse("refused")))
    assert await probe(URL, HTTP, dialer=backend) == ProbeResult(False, "refused")
    assert await probe(URL, TCP, dialer=backend) == ProbeResult(False, "refused")


async def test_udp_backends_cannot_be_probed() -> None:
    result = await probe(ServerUrl("udp://127.0.0.1:53"), TCP)
    assert result == ProbeResult(False, "unsupported transport")


async def test_invalid_configured_header_fails_the_probe(nursery: trio.Nursery) -> None:
    backend = ScriptedBackend(nursery, always(Reply(200)))
    settings = CheckSettings(kind="http", path="/h", headers=((b"x-bad", b"a\x01b"),))
    assert await probe(URL, settings, dialer=backend) == ProbeResult(False, "invalid probe request")


async def test_tcp_probe_only_connects(nursery: trio.Nursery) -> None:
    backend = ScriptedBackend(nursery, always(Hang()))
    assert await probe(ServerUrl("tcp://10.0.0.2:5432"), TCP, dialer=backend) == ProbeResult(
        True, "connected"
    )
    assert backend.peers == [Peer("tcp", "10.0.0.2", 5432)]
    await backend.wait_for(lambda: backend.closed == 1)
    assert backend.bodies == [b""]  # not a byte was sent


def test_probe_target() -> None:
    path = CheckSettings(kind="http", path="/health")
    assert probe_target(URL, path) == (
        Peer("http", "10.0.0.1", 8080),
        b"/base/health",
        b"10.0.0.1:8080",
    )
    plain = ServerUrl("http://backend.test")
    assert probe_target(plain, path) == (
        Peer("http", "backend.test", 80),
        b"/health",
        b"backend.test:80",
    )
    v6 = ServerUrl("h2c://[::1]:8080")
    moved = CheckSettings(kind="http", path="/h", port=9000)
    assert probe_target(v6, moved) == (Peer("h2c", "::1", 9000), b"/h", b"[::1]:9000")
    named = CheckSettings(kind="http", path="/h", hostname="svc.internal", port=9000)
    assert probe_target(v6, named)[2] == b"svc.internal"


# -- the prober ---------------------------------------------------------------------------------


def record_result(results: list[ProbeResult], backend: Backend, result: ProbeResult) -> None:
    results.append(result)


@dataclass
class Changes:
    seen: list[tuple[Backend, bool, str, float]] = field(default_factory=list)

    def __call__(self, backend: Backend, healthy: bool, reason: str) -> None:
        self.seen.append((backend, healthy, reason, trio.current_time()))


def make_backend(*, healthy: bool = True) -> Backend:
    return Backend(URL, active_healthy=healthy)


async def test_schedule_from_probe_start_with_a_random_offset(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """First probe at once; then t0 + offset + k·interval, although each probe takes 3 s."""
    scripted = ScriptedBackend(nursery, always(Reply(200, delay=3.0)))
    backend = make_backend()
    offset = Random(7).random() * HTTP.interval
    start = trio.current_time()
    async with trio.open_nursery() as probers:
        await probers.start(prober(backend, scripted, Random(7)))
        await scripted.wait_for(dials(scripted, 4))
        probers.cancel_scope.cancel()
    times = [when - start for when in scripted.dial_times]
    assert times == pytest.approx([0.0, offset + 10.0, offset + 20.0, offset + 30.0])
    assert times[0] == 0.0  # the first probe runs at start


def prober(
    backend: Backend,
    dialer: ScriptedBackend,
    rng: Random | None = None,
    *,
    settings: CheckSettings = HTTP,
    state: ActiveHealth | None = None,
    on_change: Changes | None = None,
    on_result: Callable[[Backend, ProbeResult], None] | None = None,
) -> Callable[..., Awaitable[object]]:
    """``run_prober`` for ``backend`` with its arguments bound, for ``start``/``start_soon``."""
    return functools.partial(
        run_prober,
        backend,
        settings,
        state if state is not None else ActiveHealth(backend, 1, 3),
        on_change=on_change if on_change is not None else Changes(),
        on_result=on_result,
        dialer=dialer,
        random=rng,
    )


def dials(scripted: ScriptedBackend, count: int) -> Callable[[], bool]:
    return lambda: len(scripted.dial_times) >= count


async def test_an_overrunning_probe_skips_the_missed_slots(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """With timeout > interval (the validator forbids it) probes do not pile up: the schedule
    keeps its phase and resumes at the next slot after the probe ended."""
    scripted = ScriptedBackend(nursery, always(Hang()))
    settings = CheckSettings(kind="http", path="/h", interval=2.0, timeout=5.0)
    offset = Random(5).random() * 2.0
    start = trio.current_time()
    async with trio.open_nursery() as probers:
        probers.start_soon(prober(make_backend(), scripted, Random(5), settings=settings))
        await scripted.wait_for(dials(scripted, 3))
        probers.cancel_scope.cancel()
    times = [when - start for when in scripted.dial_times]
    # slots at offset + 2k (offset ≈ 1.25): the first probe ends at 5, so offset + 4 is next;
    # that one ends at offset + 9, so offset + 10 follows
    assert 1.0 < offset < 1.5
    assert times == pytest.approx([0.0, offset + 4.0, offset + 10.0])


async def test_offsets_spread_probers(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Probers started together probe at once, then apart, each within [interval, 2·interval)."""
    start = trio.current_time()
    async with trio.open_nursery() as probers:
        scripts = [ScriptedBackend(nursery, always(Reply(200))) for _ in range(4)]
        for seed, scripted in enumerate(scripts):
            probers.start_soon(prober(make_backend(), scripted, Random(seed)))
        for scripted in scripts:
            await scripted.wait_for(dials(scripted, 2))
        probers.cancel_scope.cancel()
    firsts = {s.dial_times[0] - start for s in scripts}
    seconds = [s.dial_times[1] - start for s in scripts]
    assert firsts == {0.0}
    assert len(set(seconds)) == len(seconds)
    assert all(HTTP.interval <= second < 2 * HTTP.interval for second in seconds)


async def test_flips_after_the_thresholds(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    script = sequence(
        Reply(200), Reply(503), Reply(503), Reply(503), Reply(503), Reply(200), Reply(200)
    )
    scripted = ScriptedBackend(nursery, script)
    backend = make_backend()
    settings = CheckSettings(
        kind="http", path="/h", healthy_threshold=2, unhealthy_threshold=3, interval=5.0
    )
    state = ActiveHealth(backend, settings.healthy_threshold, settings.unhealthy_threshold)
    changes = Changes()
    results: list[ProbeResult] = []
    start = trio.current_time()
    async with trio.open_nursery() as probers:
        on_result = functools.partial(record_result, results)
        await probers.start(
            prober(
                backend,
                scripted,
                Random(1),
                settings=settings,
                state=state,
                on_change=changes,
                on_result=on_result,
            )
        )
        await scripted.wait_for(dials(scripted, 8))  # the 7th probe has been judged
        probers.cancel_scope.cancel()
    assert [r.reason for r in results[:7]] == [
        "status 200",
        "status 503",
        "status 503",
        "status 503",
        "status 503",
        "status 200",
        "status 200",
    ]
    offset = Random(1).random() * 5.0
    assert [(b, healthy, reason) for b, healthy, reason, _ in changes.seen] == [
        (backend, False, "status 503"),
        (backend, True, "status 200"),
    ]
    # the 4th probe (index 3) marked it unhealthy, the 7th (index 6) healthy again
    flip_times = [when - start for *_, when in changes.seen]
    assert flip_times == pytest.approx([offset + 15.0, offset + 30.0])
    assert backend.active_healthy


async def test_failures_never_raise(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Timeouts, refusals and garbage are results; the prober goes on and flips once."""
    script = sequence(Hang(), Refuse(), Raw(b"junk\r\n\r\n"), Raw(b""), Reply(200))
    scripted = ScriptedBackend(nursery, script)
    backend = make_backend()
    state = ActiveHealth(backend, 1, 4)
    changes = Changes()
    results: list[ProbeResult] = []
    start = trio.current_time()
    async with trio.open_nursery() as probers:
        on_result = functools.partial(record_result, results)
        probers.start_soon(
            prober(
                backend,
                scripted,
                Random(3),
                settings=FAST,
                state=state,
                on_change=changes,
                on_result=on_result,
            )
        )
        await scripted.wait_for(dials(scripted, 6))  # the 5th probe has been judged
        probers.cancel_scope.cancel()
    reasons = [result.reason for result in results[:5]]
    assert reasons == ["timeout", "refused", "invalid response", "no response", "status 200"]
    assert [(healthy, reason) for _, healthy, reason, _ in changes.seen] == [
        (False, "no response"),
        (True, "status 200"),
    ]
    assert changes.seen[0][3] - start == pytest.approx(Random(3).random() * 5.0 + 15.0)


async def test_scaling_backends_become_healthy_on_the_first_success(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """SPEC §7.1: a backend that starts unhealthy is admitted by its first good probe."""
    scripted = ScriptedBackend(nursery, always(Reply(200)))
    backend = make_backend(healthy=False)
    changes = Changes()
    start = trio.current_time()
    async with trio.open_nursery() as probers:
        probers.start_soon(prober(backend, scripted, on_change=changes))
        await scripted.wait_for(dials(scripted, 2))
        probers.cancel_scope.cancel()
    assert [(b, healthy, reason, when - start) for b, healthy, reason, when in changes.seen] == [
        (backend, True, "status 200", 0.0)
    ]


@pytest.mark.parametrize("during", ["probe", "sleep"])
async def test_cancellation_stops_the_prober_at_once(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock, during: str
) -> None:
    scripted = ScriptedBackend(nursery, always(Hang() if during == "probe" else Reply(200)))
    backend = make_backend()
    state = ActiveHealth(backend, 1, 3)
    ended = trio.Event()

    async def run() -> None:
        try:
            await prober(backend, scripted, state=state)()
        finally:
            ended.set()

    async with trio.open_nursery() as probers:
        probers.start_soon(run)
        if during == "probe":
            await scripted.wait_for(lambda: len(scripted.requests) == 1)
        else:
            await scripted.wait_for(lambda: scripted.closed == 1)  # the probe is over
        cancelled_at = trio.current_time()
        probers.cancel_scope.cancel()
    assert ended.is_set()
    assert trio.current_time() == cancelled_at  # no virtual time passed while stopping
    await scripted.wait_for(lambda: scripted.closed == 1)  # the probe's connection was closed
    assert len(scripted.dial_times) == 1
    assert state.streak == ((1, 0) if during == "sleep" else (0, 0))


# -- real sockets -------------------------------------------------------------------------------


@pytest.mark.integration
async def test_real_origin_receives_the_probe(nursery: trio.Nursery) -> None:
    origin = Origin()
    await nursery.start(origin.serve)
    origin.on("/base/health", Fixed(200, b"ok"))
    url = ServerUrl(f"http://127.0.0.1:{origin.port}/base")
    settings = CheckSettings(
        kind="http", path="/health?deep=1", headers=((b"x-probe", b"yes"),), timeout=10.0
    )
    assert await probe(url, settings) == ProbeResult(True, "status 200")
    [request] = origin.requests
    assert (request.method, request.target, request.http_version) == (
        b"GET",
        b"/base/health?deep=1",
        b"1.1",
    )
    assert request.header(b"host") == f"127.0.0.1:{origin.port}".encode()
    assert request.header(b"user-agent") == user_agent()
    assert request.header(b"connection") == b"close"
    assert request.header(b"x-probe") == b"yes"

    origin.on("/base/down", Fixed(503, b"down"))
    down = CheckSettings(kind="http", path="/down", hostname="svc.internal", timeout=10.0)
    assert await probe(url, down) == ProbeResult(False, "status 503")
    assert origin.requests[-1].header(b"host") == b"svc.internal"
    assert origin.connections == 2  # a fresh connection per probe


@pytest.mark.integration
async def test_real_tcp_probe_and_refusal(nursery: trio.Nursery) -> None:
    origin = Origin()
    await nursery.start(origin.serve)
    settings = CheckSettings(kind="tcp", path="", timeout=10.0)
    url = ServerUrl(f"tcp://127.0.0.1:{origin.port}")
    assert await probe(url, settings) == ProbeResult(True, "connected")
    await origin.wait_for(lambda: origin.connections == 1)
    assert origin.heads == 0
    # a port with no listener: bind one, note it, close it before probing
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    refused = await probe(ServerUrl(f"tcp://127.0.0.1:{port}"), settings)
    assert refused == ProbeResult(False, "refused")


@pytest.mark.integration
async def test_real_tls_probe_uses_the_services_upstream_tls(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """SPEC §7.4: an https backend is probed over TLS with ``upstream_tls`` (CA, server name,
    client certificate); a certificate the proxy would refuse fails the probe."""
    ca, other = trustme.CA(), trustme.CA()
    ca_file = write_ca(ca, tmp_path / "ca.pem")
    client = write_leaf(ca.issue_cert("probe.test", common_name="prober"), tmp_path, "client")
    origin = TlsOrigin(write_leaf(ca.issue_cert("svc.test"), tmp_path, "server"), client_ca=ca_file)
    await nursery.start(origin.serve)
    url = ServerUrl(origin.url("/base"))
    identity = TlsIdentity(
        ca_file=str(ca_file), cert_file=str(client.cert), key_file=str(client.key)
    )
    tls = UpstreamTlsSettings(server_name="svc.test", identity=identity)
    settings = CheckSettings(kind="http", path="/health", timeout=10.0, tls=tls)
    assert probe_target(url, settings)[0] == Peer(
        "https", "127.0.0.1", origin.port, tls=True, server_name="svc.test", identity=identity
    )
    assert await probe(url, settings) == ProbeResult(True, "status 200")
    [conn] = origin.connections
    assert (conn.sni, conn.client, conn.targets) == ("svc.test", "prober", ["/base/health"])

    origin.status = 503
    assert await probe(url, settings) == ProbeResult(False, "status 503")

    untrusting = CheckSettings(
        kind="http",
        path="/health",
        timeout=10.0,
        tls=UpstreamTlsSettings(
            server_name="svc.test",
            identity=TlsIdentity(ca_file=str(write_ca(other, tmp_path / "o.pem"))),
        ),
    )
    failed = await probe(url, untrusting)
    assert not failed.success
    # (The origin sends its CA along, trusting it for client certificates: OpenSSL's words
    # are then "self-signed certificate in certificate chain".)
    assert failed.reason.startswith("TLS handshake failed: certificate verify failed: ")
    # Without upstream_tls the URL host is the name checked: the certificate is for svc.test.
    plain = await probe(url, CheckSettings(kind="http", path="/health", timeout=10.0))
    assert not plain.success
    assert plain.reason.startswith("TLS handshake failed: certificate verify failed")
    assert len(origin.connections) == 2
