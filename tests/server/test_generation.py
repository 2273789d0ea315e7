"""A config generation's background tasks on trio's virtual clock (issue #6): probers probe on
their interval until the generation is cancelled, passive tickers re-admit ejected backends
without traffic, and ``carry_over`` hands health state to the next generation. Probes go to a
scripted h11 origin over memory streams (the injected dialer).

Middleware background work (SPEC §8.4 "JWKS", with a fake ``HttpCaller``): the JWKS is fetched
at start without holding up the generation, then every 10 minutes; an unknown ``kid`` refreshes
at most once a minute while its request is answered at once; a failure keeps the keys and logs
a warning; a reload hands the schedule (and, for a rebuilt definition, the keys) over; a
cancelled generation fetches no more."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable

import h11
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.middleware.contract import RequestState
from a3s_gateway.middleware.jwt import JwtMiddleware
from a3s_gateway.middleware.outbound import HttpReply, MiddlewareDeps, OutboundFailed
from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.protocols.headers import Headers
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.server.generation import apply_board, carry_over, receive_health, run_generation
from a3s_gateway.services import PassiveState
from a3s_gateway.services.health import HealthBoard
from a3s_gateway.upstream.peer import Peer
from tests.middleware.test_jwks import document, ec_jwk

CONFIG = """
entrypoints "web" {{
  address = "127.0.0.1:0"
}}
routers "r" {{
  rule    = "PathPrefix(`/`)"
  service = "svc"
}}
services "svc" {{
  load_balancer {{
    servers = [{{ url = "http://10.9.0.1:80" }}, {{ url = "http://10.9.0.2:80" }}]
    {extra}
  }}
}}
"""

CHECK = """health_check {
      path = "/health"
      interval = "2s"
      timeout = "1s"
      unhealthy_threshold = 1
    }"""


def runtime(extra: str, generation: int = 1) -> RuntimeConfig:
    return compile_runtime(load_config_text(CONFIG.format(extra=extra)), generation)


class Origins:
    """A dialer whose connections reach an h11 server answering ``status`` per host."""

    def __init__(self, nursery: trio.Nursery, status: dict[str, int]) -> None:
        self.nursery = nursery
        self.status = status
        self.probes: list[tuple[str, float]] = []

    async def __call__(self, peer: Peer) -> trio.abc.Stream:
        ours, theirs = trio.testing.memory_stream_pair()
        self.probes.append((peer.host, trio.current_time()))
        self.nursery.start_soon(self._serve, theirs, self.status[peer.host])
        return ours

    async def _serve(self, stream: trio.abc.Stream, status: int) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(bytes(await stream.receive_some()))
            elif isinstance(event, h11.EndOfMessage):
                break
        response = h11.Response(status_code=status, headers=[(b"content-length", b"0")])
        await stream.send_all(conn.send(response) + conn.send(h11.EndOfMessage()))
        await stream.aclose()


async def test_probers_run_on_their_interval_until_the_generation_is_cancelled(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    origins = Origins(nursery, {"10.9.0.1": 200, "10.9.0.2": 503})
    current = runtime(CHECK)
    a, b = current.services["svc"].backends
    generation = trio.CancelScope()
    nursery.start_soon(_run, current, origins, generation)
    await trio.sleep(7)
    assert a.active_healthy
    assert not b.active_healthy
    hosts = ("10.9.0.1", "10.9.0.2")
    per_backend = [sum(probed == host for probed, _ in origins.probes) for host in hosts]
    # One at start, then every 2 s after a random offset below 2 s: 3 or 4 in 7 s.
    assert all(count in (3, 4) for count in per_backend)
    generation.cancel()
    probes = len(origins.probes)
    await trio.sleep(10)
    assert len(origins.probes) == probes  # a cancelled generation probes no more


async def _run(current: RuntimeConfig, origins: Origins, scope: trio.CancelScope) -> None:
    with scope:
        await run_generation(current, dialer=origins)


async def test_the_ticker_readmits_an_ejected_backend_without_traffic(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    current = runtime('passive_health {\n error_threshold = 1\n recovery_time = "3s"\n }')
    service = current.services["svc"]
    outliers = service.outliers
    assert outliers is not None
    backend = service.backends[0]
    outliers.record(backend, error=True, now=trio.current_time())
    assert outliers.state(backend) is PassiveState.EJECTED
    nursery.start_soon(run_generation, current)
    await trio.sleep(3.5)  # no request arrives: only the ticker can end the ejection
    assert backend.available
    assert outliers.state(backend) is PassiveState.PROBATION


def test_carry_over_keeps_health_by_url() -> None:
    old = runtime(CHECK + "\n passive_health {\n error_threshold = 1\n }")
    old.services["svc"].backends[1].active_healthy = False
    old_outliers = old.services["svc"].outliers
    assert old_outliers is not None
    old_outliers.record(old.services["svc"].backends[0], error=True, now=0.0)
    new = runtime(CHECK + "\n passive_health {\n error_threshold = 1\n }", generation=2)
    carry_over(old, new)
    a, b = new.services["svc"].backends
    assert not b.active_healthy
    assert a.passive_ejected


async def test_a_generation_without_probes_runs_no_prober_but_its_tickers(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    origins = Origins(nursery, {"10.9.0.1": 503, "10.9.0.2": 503})
    current = runtime(
        CHECK + '\n passive_health {\n error_threshold = 1\n recovery_time = "3s"\n }'
    )
    service = current.services["svc"]
    assert service.outliers is not None
    service.outliers.record(service.backends[0], error=True, now=trio.current_time())
    generation = trio.CancelScope()

    async def run() -> None:
        with generation:
            await run_generation(current, dialer=origins, probes=False)

    nursery.start_soon(run)
    await trio.sleep(5)
    assert origins.probes == []  # a worker told its health by the supervisor probes nothing
    assert all(backend.active_healthy for backend in service.backends)
    assert service.outliers.state(service.backends[0]) is PassiveState.PROBATION  # ticked
    generation.cancel()


async def test_pushed_health_is_applied_and_a_probe_success_readmits_an_ejection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    current = runtime(CHECK + "\n passive_health {\n error_threshold = 1\n }")
    service = current.services["svc"]
    a, b = service.backends
    outliers = service.outliers
    assert outliers is not None
    outliers.record(b, error=True, now=trio.current_time())
    assert outliers.state(b) is PassiveState.EJECTED
    board = HealthBoard()
    board.update([("svc", a.url.text, False), ("other", b.url.text, False)], full=True)
    metrics = GatewayMetrics(enabled=True)
    receive_health(current, board, metrics=metrics)
    assert (a.active_healthy, b.active_healthy) == (False, True)
    assert outliers.state(b) is PassiveState.EJECTED  # no success pushed yet
    board.update([("svc", a.url.text, True)])
    receive_health(current, board, passed=[("svc", b.url.text), ("gone", "x")], metrics=metrics)
    assert a.active_healthy
    assert b.available
    assert outliers.state(b) is PassiveState.PROBATION
    # A new generation takes the board's verdicts (as app.Gateway does at the swap).
    board.update([("svc", a.url.text, False)], full=True)
    following = runtime(CHECK, generation=2)
    assert [(name, backend.url.text) for name, backend in apply_board(board, following)] == [
        ("svc", a.url.text)
    ]
    assert not following.services["svc"].backends[0].active_healthy


# --------------------------------------------------------------------------- JWKS refresh
#
# These span more than the suite's 60 s limit of trio time (refreshes every 10 min), so each
# runs its own ``trio.run`` on an autojump ``MockClock`` (what the ``autojump_clock`` fixture
# installs) under its own limit: a hang still fails at once, in virtual time.

WALL = 1_700_000_000
ISSUER = "https://issuer.example/jwks"
JWKS_CONFIG = """
entrypoints "web" {{
  address = "127.0.0.1:0"
}}
routers "r" {{
  rule        = "PathPrefix(`/`)"
  service     = "svc"
  middlewares = ["auth"]
}}
services "svc" {{
  load_balancer {{
    servers = [{{ url = "http://10.9.0.1:80" }}]
  }}
}}
middlewares "auth" {{
  type       = "jwt"
  algorithms = ["ES256"]
  jwks_url   = "{issuer}"
  leeway     = "{leeway}"
}}
"""


def run_virtual(main: Callable[[], Awaitable[None]], limit: float = 4 * 3600) -> None:
    async def limited() -> None:
        with trio.fail_after(limit):
            await main()

    trio.run(limited, clock=trio.testing.MockClock(autojump_threshold=0))


class Issuer:
    """A fake ``HttpCaller`` serving the JWK Set of ``keys`` (by kid), or failing while
    ``down``; ``gate``, when set, holds each fetch until it is set. Records fetch times."""

    def __init__(self, **keys: ec.EllipticCurvePrivateKey) -> None:
        self.keys = keys
        self.down = False
        self.gate: trio.Event | None = None
        self.fetched_at: list[float] = []

    async def get(
        self, url: HttpUrl, headers: Headers, *, within: float, max_body: int
    ) -> HttpReply:
        assert (url.text, within, max_body) == (ISSUER, 5.0, 1024 * 1024)
        self.fetched_at.append(trio.current_time())
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise OutboundFailed("connection refused")
        body = document(*(ec_jwk(key, kid=kid) for kid, key in self.keys.items()))
        return HttpReply(200, [], body)


def jwks_runtime(
    issuer: Issuer, generation: int = 1, previous: RuntimeConfig | None = None, leeway: str = "60s"
) -> RuntimeConfig:
    config = load_config_text(JWKS_CONFIG.format(issuer=ISSUER, leeway=leeway))
    deps = MiddlewareDeps(clock=lambda: WALL, http=issuer)
    return compile_runtime(config, generation, previous, deps=deps)


def auth(runtime: RuntimeConfig) -> JwtMiddleware:
    middleware = runtime.middlewares["auth"]
    assert isinstance(middleware, JwtMiddleware)
    return middleware


def es256(key: ec.EllipticCurvePrivateKey, kid: str) -> bytes:
    def segment(value: object) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    signing_input = segment({"alg": "ES256", "kid": kid}) + b"." + segment({"exp": WALL + 300})
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")


async def answer(middleware: JwtMiddleware, token: bytes) -> str:
    """``pass`` or the 401's ``detail``, for a request arriving now (trio's clock)."""
    state = RequestState(
        method=b"GET",
        path=b"/",
        query=b"",
        headers=[(b"authorization", b"Bearer " + token)],
        authority=b"example.com",
        client_ip="192.0.2.1",
        peer_ip="192.0.2.1",
        tls=False,
        now=trio.current_time(),
    )
    response = await middleware.request(state)
    if response is None:
        return "pass"
    assert response.head.status == 401
    detail = json.loads(response.body)["detail"]
    assert isinstance(detail, str)
    return detail


async def sleep_until(moment: float) -> None:
    await trio.sleep_until(moment)
    await trio.testing.wait_all_tasks_blocked()


KEY_1 = ec.generate_private_key(ec.SECP256R1())
KEY_2 = ec.generate_private_key(ec.SECP256R1())
KEY_3 = ec.generate_private_key(ec.SECP256R1())


def test_jwks_is_fetched_at_start_without_blocking_and_every_ten_minutes() -> None:
    async def main() -> None:
        issuer = Issuer(k1=KEY_1)
        issuer.gate = trio.Event()  # the first fetch hangs until released
        current = jwks_runtime(issuer)
        async with trio.open_nursery() as nursery:
            await nursery.start(run_generation, current)
            await trio.testing.wait_all_tasks_blocked()
            assert issuer.fetched_at == [0.0]
            # The generation is running and requests are answered while the fetch hangs.
            assert await answer(auth(current), es256(KEY_1, "k1")) == "unknown key"
            issuer.gate.set()
            issuer.gate = None
            await trio.testing.wait_all_tasks_blocked()
            assert await answer(auth(current), es256(KEY_1, "k1")) == "pass"
            await sleep_until(1250.0)
            assert issuer.fetched_at == [0.0, 600.0, 1200.0]
            nursery.cancel_scope.cancel()

    run_virtual(main)


def test_an_unknown_kid_refreshes_at_most_once_a_minute() -> None:
    async def main() -> None:
        issuer = Issuer(k1=KEY_1)
        current = jwks_runtime(issuer)
        middleware = auth(current)
        async with trio.open_nursery() as nursery:
            await nursery.start(run_generation, current)
            await sleep_until(100.0)
            issuer.keys = {"k2": KEY_2}  # the issuer rotates its key
            assert await answer(middleware, es256(KEY_2, "k2")) == "unknown key"  # at once
            await trio.testing.wait_all_tasks_blocked()
            assert issuer.fetched_at == [0.0, 100.0]
            assert await answer(middleware, es256(KEY_2, "k2")) == "pass"
            assert await answer(middleware, es256(KEY_1, "k1")) == "unknown key"  # removed
            await sleep_until(130.0)
            issuer.keys = {"k3": KEY_3}
            assert await answer(middleware, es256(KEY_3, "k3")) == "unknown key"
            await sleep_until(159.0)
            assert await answer(middleware, es256(KEY_3, "k3")) == "unknown key"
            assert issuer.fetched_at == [0.0, 100.0]  # a minute has not passed since 100
            await sleep_until(161.0)
            assert await answer(middleware, es256(KEY_3, "k3")) == "unknown key"
            await trio.testing.wait_all_tasks_blocked()
            assert await answer(middleware, es256(KEY_3, "k3")) == "pass"
            await sleep_until(800.0)
            # The scheduled refresh counts from the last fetch.
            assert issuer.fetched_at == [0.0, 100.0, 161.0, 761.0]
            nursery.cancel_scope.cancel()

    run_virtual(main)


def test_a_failed_refresh_keeps_the_keys_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        issuer = Issuer(k1=KEY_1)
        current = jwks_runtime(issuer)
        middleware = auth(current)
        async with trio.open_nursery() as nursery:
            await nursery.start(run_generation, current)
            await sleep_until(300.0)
            issuer.down = True
            await sleep_until(650.0)
            assert issuer.fetched_at == [0.0, 600.0]
            assert middleware.jwks_errors == 1
            assert await answer(middleware, es256(KEY_1, "k1")) == "pass"
            issuer.down = False
            await sleep_until(1250.0)
            assert issuer.fetched_at == [0.0, 600.0, 1200.0]  # no faster retry
            assert middleware.jwks_errors == 1
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.WARNING, logger="a3s_gateway.middleware"):
        run_virtual(main)
    assert [record.getMessage() for record in caplog.records] == [
        f'middleware "auth": JWKS {ISSUER}: fetch failed: connection refused; keeping the 1 '
        "key fetched before"
    ]
    assert caplog.records[0].levelno == logging.WARNING


def test_a_jwks_down_at_start_recovers_through_unknown_kid_refreshes() -> None:
    async def main() -> None:
        issuer = Issuer(k1=KEY_1)
        issuer.down = True
        current = jwks_runtime(issuer)
        middleware = auth(current)
        token = es256(KEY_1, "k1")
        async with trio.open_nursery() as nursery:
            await nursery.start(run_generation, current)
            await sleep_until(10.0)
            assert await answer(middleware, token) == "unknown key"
            await trio.testing.wait_all_tasks_blocked()
            assert issuer.fetched_at == [0.0, 10.0]
            assert middleware.jwks_errors == 2
            issuer.down = False
            await sleep_until(40.0)
            assert await answer(middleware, token) == "unknown key"
            await sleep_until(70.0)
            assert await answer(middleware, token) == "unknown key"
            await trio.testing.wait_all_tasks_blocked()
            assert await answer(middleware, token) == "pass"
            assert issuer.fetched_at == [0.0, 10.0, 70.0]
            nursery.cancel_scope.cancel()

    run_virtual(main)


def test_a_reload_hands_the_refresh_over_without_a_gap_or_a_double() -> None:
    async def main() -> None:
        issuer = Issuer(k1=KEY_1)
        first = jwks_runtime(issuer)
        async with trio.open_nursery() as nursery:
            old = trio.CancelScope()

            async def generation_1(task_status: trio.TaskStatus[None]) -> None:
                with old:
                    await run_generation(first, task_status=task_status)

            await nursery.start(generation_1)
            await sleep_until(100.0)
            # Unchanged definition: the same instance (and schedule) serves generation 2.
            second = jwks_runtime(issuer, 2, first)
            assert auth(second) is auth(first)
            carry_over(first, second)
            await nursery.start(run_generation, second)
            old.cancel()
            await sleep_until(1250.0)
            assert issuer.fetched_at == [0.0, 600.0, 1200.0]
            # The new generation's runner answers the wake-ups.
            assert await answer(auth(second), es256(KEY_2, "k2")) == "unknown key"
            await trio.testing.wait_all_tasks_blocked()
            assert issuer.fetched_at == [0.0, 600.0, 1200.0, 1250.0]
            # A changed definition gets a new instance that starts with the old keys.
            issuer.gate = trio.Event()
            third = jwks_runtime(issuer, 3, second, leeway="30s")
            assert auth(third) is not auth(second)
            carry_over(second, third)
            await nursery.start(run_generation, third)
            await trio.testing.wait_all_tasks_blocked()
            assert issuer.fetched_at[-1] == 1250.0  # its first fetch is under way, held
            assert await answer(auth(third), es256(KEY_1, "k1")) == "pass"
            nursery.cancel_scope.cancel()

    run_virtual(main)


def test_a_cancelled_generation_fetches_no_more() -> None:
    async def main() -> None:
        issuer = Issuer(k1=KEY_1)
        current = jwks_runtime(issuer)
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def generation(task_status: trio.TaskStatus[None]) -> None:
                with scope:
                    await run_generation(current, task_status=task_status)

            await nursery.start(generation)
            await sleep_until(10.0)
            scope.cancel()
            await sleep_until(2000.0)
            assert issuer.fetched_at == [0.0]
            # No runner is left to wake: a demand changes the schedule, nobody fetches.
            assert await answer(auth(current), es256(KEY_2, "k2")) == "unknown key"
            await sleep_until(2100.0)
            assert issuer.fetched_at == [0.0]

    run_virtual(main)


async def test_probe_results_are_counted_in_the_metrics(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    origins = Origins(nursery, {"10.9.0.1": 200, "10.9.0.2": 503})
    current = runtime(CHECK)
    metrics = GatewayMetrics(enabled=True)
    scope = trio.CancelScope()

    async def run() -> None:
        with scope:
            await run_generation(current, dialer=origins, metrics=metrics)

    nursery.start_soon(run)
    await trio.sleep(7)
    scope.cancel()
    counts = {
        (labels[1], labels[2]): child.value
        for labels, child in metrics.health_checks.children.items()
    }
    probes = {
        host: sum(probed == host for probed, _ in origins.probes)
        for host in ("10.9.0.1", "10.9.0.2")
    }
    assert counts[("http://10.9.0.1:80", "success")] == probes["10.9.0.1"]
    assert counts[("http://10.9.0.2:80", "failure")] == probes["10.9.0.2"]
