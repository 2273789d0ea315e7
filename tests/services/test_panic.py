"""Panic mode (SPEC §7.1, ``panic_threshold``): when it applies, and what ``pick(panic=True)``
chooses in each strategy. The decision's properties are in
tests/property/test_balancer_properties.py; these are the concrete cases."""

from __future__ import annotations

from collections import Counter
from random import Random

import pytest

from a3s_gateway import load_config_text
from a3s_gateway.config.values import ServerUrl
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.services import STRATEGIES, Backend, SmoothWeightedRoundRobin, make_balancer
from a3s_gateway.services.balancer import panic_mode

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def pool(*weights: int) -> list[Backend]:
    return [
        Backend(ServerUrl(f"http://10.0.0.{i + 1}:8080"), weight, i)
        for i, weight in enumerate(weights)
    ]


def down(*backends: Backend) -> None:
    """Half unhealthy, half ejected: both make a backend unavailable."""
    for position, backend in enumerate(backends):
        if position % 2:
            backend.passive_ejected = True
        else:
            backend.active_healthy = False


def letters(picks: list[Backend | None]) -> str:
    return "".join("-" if b is None else LETTERS[b.index] for b in picks)


# -- when -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("available", "total", "threshold", "panic"),
    [
        (1, 2, 50, False),  # exactly at the threshold: not panic
        (1, 2, 51, True),
        (1, 3, 34, True),  # 33.3 % < 34 %
        (1, 3, 33, False),  # 33.3 % ≥ 33 %
        (2, 3, 67, True),
        (2, 3, 66, False),
        (3, 3, 100, False),  # all available: never panic
        (2, 3, 100, True),
        (0, 3, 1, True),
        (0, 3, 0, False),  # 0 = off
        (3, 4, 0, False),
    ],
)
def test_threshold_boundary(available: int, total: int, threshold: int, panic: bool) -> None:
    backends = pool(*[1] * total)
    down(*backends[available:])
    assert panic_mode(backends, threshold) is panic


def test_shares_count_weight_positive_backends_not_weights() -> None:
    backends = pool(9, 1, 0, 0)
    down(backends[0])
    # Available: b of {a, b}: 50 % of the backends (10 % of the weight); c, d are drained.
    assert not panic_mode(backends, 50)
    assert panic_mode(backends, 51)
    down(backends[2], backends[3])  # the health of a drained backend does not matter
    assert not panic_mode(backends, 50)


def test_no_weight_positive_backend_is_never_panic() -> None:
    assert not panic_mode([], 100)
    backends = pool(0, 0)
    assert not panic_mode(backends, 100)
    down(*backends)
    assert not panic_mode(backends, 100)


def test_with_a_failover_service_a_pool_with_nothing_available_fails_over() -> None:
    backends = pool(1, 1, 1)
    down(*backends)
    assert panic_mode(backends, 50)
    assert not panic_mode(backends, 50, failover=True)
    backends[0].active_healthy = True  # one of three: panic, failover or not
    assert panic_mode(backends, 50, failover=True)


# -- what -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_panic_picks_unavailable_but_never_drained_or_excluded(strategy: str) -> None:
    backends = pool(1, 1, 0, 1, 1)
    down(backends[0], backends[1], backends[2])
    balancer = make_balancer(strategy, backends, rng=Random(7))
    keys = [f"client-{n}" for n in range(200)]
    normal = {balancer.pick(key=k) for k in keys}
    assert normal == {backends[3], backends[4]}
    panicked = {balancer.pick(key=k, panic=True) for k in keys}
    assert panicked == {backends[0], backends[1], backends[3], backends[4]}
    excluded = {balancer.pick(key=k, exclude=(backends[0],), panic=True) for k in keys}
    assert excluded == {backends[1], backends[3], backends[4]}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_panic_over_a_wholly_unavailable_pool(strategy: str) -> None:
    backends = pool(2, 1)
    down(*backends)
    balancer = make_balancer(strategy, backends, rng=Random(3))
    assert balancer.pick(key="k") is None
    assert balancer.pick(key="k", panic=True) in backends
    assert balancer.pick(key="k", exclude=backends, panic=True) is None


def test_round_robin_panic_follows_the_weights_of_every_backend() -> None:
    backends = pool(3, 1, 2)
    down(backends[0], backends[2])
    balancer = SmoothWeightedRoundRobin(backends)
    assert letters([balancer.pick() for _ in range(3)]) == "bbb"
    balancer.reset()
    picks = [balancer.pick(panic=True) for _ in range(12)]
    assert letters(picks[:6]) == "acabca"  # the smooth 3:1:2 sequence, health ignored
    assert Counter(picks) == {backends[0]: 6, backends[1]: 2, backends[2]: 4}


def test_consistent_hash_panic_keys_land_where_they_would_with_everyone_healthy() -> None:
    backends = pool(1, 2, 1, 1)
    balancer = make_balancer("consistent-hash", backends)
    keys = [f"user-{n}" for n in range(100)]
    healthy = [balancer.pick(key=k) for k in keys]
    down(backends[1], backends[3])
    assert [balancer.pick(key=k, panic=True) for k in keys] == healthy


# -- the compiled service -------------------------------------------------------------------------


def service_config(threshold: int | None, *, failover: bool) -> str:
    line = "" if threshold is None else f"    panic_threshold = {threshold}\n"
    block = '  failover {\n    service = "spare"\n  }\n' if failover else ""
    return (
        'entrypoints "web" {\n  address = "127.0.0.1:0"\n}\n'
        'routers "main" {\n  rule = "PathPrefix(`/`)"\n  service = "main"\n}\n'
        'services "main" {\n  load_balancer {\n'
        + line
        + '    servers = [{ url = "http://127.0.0.1:9001" }, { url = "http://127.0.0.1:9002" }]\n'
        "  }\n" + block + "}\n"
        'services "spare" {\n  load_balancer {\n'
        '    servers = [{ url = "http://127.0.0.1:9101" }]\n  }\n}\n'
    )


def test_panic_threshold_loads_and_compiles() -> None:
    runtime = compile_runtime(load_config_text(service_config(50, failover=False)), 1)
    main = runtime.services["main"]
    assert main.panic_threshold == 50
    assert runtime.services["spare"].panic_threshold == 0
    assert not main.in_panic()
    down(main.backends[0])
    assert not main.in_panic()  # one of two available: exactly 50 %
    down(*main.backends)
    assert main.in_panic()


def test_default_is_off() -> None:
    runtime = compile_runtime(load_config_text(service_config(None, failover=False)), 1)
    main = runtime.services["main"]
    assert main.panic_threshold == 0
    down(*main.backends)
    assert not main.in_panic()


def test_the_failover_service_takes_a_primary_with_nothing_available() -> None:
    runtime = compile_runtime(load_config_text(service_config(60, failover=True)), 1)
    main = runtime.services["main"]
    down(main.backends[0])
    assert main.in_panic()  # 50 % < 60 %: panic spreads over both
    down(main.backends[1])
    assert not main.in_panic()  # nothing available: the failover service serves
    # As another service's failover (no chaining) the pool panics even with nothing available.
    assert main.in_panic(primary=False)
