"""The supervisor's side of active health with ``--workers N`` (SPEC §7.4 "Multi-worker",
§13.4): ``HealthTable`` tells each worker what it has not heard of (the whole table first and
after a reload, then only changes, coalesced to the newest state), and ``FleetProbes`` probes
every backend once per interval on trio's virtual clock (an injected dialer reaching scripted h11
origins), records the transitions, counts the probes, and on ``offer`` carries the verdicts to
the next generation, whose probers replace the old ones (a replaced generation's late verdict
is dropped)."""

from __future__ import annotations

import trio
import trio.testing

from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.probes.broadcast import FleetProbes, HealthNews, HealthTable, verdicts
from a3s_gateway.runtime.compile import RuntimeConfig
from tests.server.test_generation import CHECK, Origins, runtime

A = "http://10.9.0.1:80"
B = "http://10.9.0.2:80"
PASSIVE = "\n passive_health {\n error_threshold = 1\n }"
NO_PASSIVE = "\n passive_health {\n enabled = false\n }"


# ----------------------------------------------------------------------------- the table


def test_a_worker_that_has_seen_nothing_gets_the_whole_table_even_an_empty_one() -> None:
    table = HealthTable()
    assert table.since(-1) == HealthNews((), (), True, 0)
    assert table.since(0) is None
    table.replace({("svc", A): True, ("svc", B): False})
    assert table.since(-1) == HealthNews((("svc", A, True), ("svc", B, False)), (), True, 1)
    assert table.since(0) == table.since(-1)  # replaced since: the whole table again
    assert table.since(1) is None


def test_after_the_whole_table_a_worker_hears_only_what_changed_newest_state_only() -> None:
    woken: list[int] = []
    table = HealthTable(on_change=lambda: woken.append(1))
    table.replace({("svc", A): True, ("svc", B): True})
    seen = table.version
    table.record("svc", B, False)
    table.record("svc", B, True)
    table.record("svc", B, False)  # three transitions while a send was under way
    table.record("svc", A, True)  # not a change: nothing
    table.record("other", A, False)  # not in the table: nothing
    assert table.since(seen) == HealthNews((("svc", B, False),), (), False, seen + 3)
    assert len(woken) == 4  # the replace and the three transitions
    table.passed("svc", A)
    assert table.since(seen + 3) == HealthNews((), (("svc", A),), False, seen + 4)
    table.replace({("svc", A): True})  # a new generation without B
    news = table.since(seen + 4)
    assert news is not None
    assert news.full
    assert news.states == (("svc", A, True),)
    assert news.passed == ()  # successes belong to the generation they were seen in


def test_a_new_generation_with_the_same_verdicts_tells_nobody_anything() -> None:
    woken: list[int] = []
    table = HealthTable(on_change=lambda: woken.append(1))
    table.replace({("svc", A): False})
    table.replace({("svc", A): False})
    assert len(woken) == 1
    assert table.since(table.version) is None


# ----------------------------------------------------------------------------- the probers


def probes_of(origins: Origins, host: str) -> int:
    return sum(probed == host for probed, _ in origins.probes)


async def test_each_backend_is_probed_once_per_interval_and_its_transitions_recorded(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    origins = Origins(nursery, {"10.9.0.1": 200, "10.9.0.2": 503})
    table = HealthTable()
    metrics = GatewayMetrics(enabled=True)
    probes = FleetProbes(table, runtime(CHECK), metrics=metrics, dialer=origins)
    assert table.states == {("svc", A): True, ("svc", B): True}
    await nursery.start(probes.run)
    await trio.sleep(0.5)
    assert table.states == {("svc", A): True, ("svc", B): False}
    before = probes_of(origins, "10.9.0.2")
    await trio.sleep(20)  # ten intervals of 2 s: 9 or 10 probes (the random offset), not 20
    assert probes_of(origins, "10.9.0.2") - before in (9, 10)
    counted = metrics.health_checks.labels("svc", B, "failure").value
    assert counted == probes_of(origins, "10.9.0.2")
    origins.status["10.9.0.2"] = 200
    await trio.sleep(2)
    assert table.states[("svc", B)] is True


async def test_a_new_generation_keeps_the_verdicts_and_replaces_the_probers(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    origins = Origins(nursery, {"10.9.0.1": 200, "10.9.0.2": 503, "10.9.0.3": 200})
    table = HealthTable()
    first = runtime(CHECK)
    probes = FleetProbes(table, first, dialer=origins)
    await nursery.start(probes.run)
    await trio.sleep(0.5)
    assert table.states[("svc", B)] is False
    second = runtime(CHECK, generation=2)
    probes.offer(second)
    assert probes.runtime is second
    # Carried over at once: B starts unhealthy in the new generation and in the table.
    assert [backend.active_healthy for backend in second.services["svc"].backends] == [True, False]
    assert table.states == {("svc", A): True, ("svc", B): False}
    # The old generation's prober of B is gone: B is probed once per interval, not twice.
    await trio.sleep(0.1)
    before = probes_of(origins, "10.9.0.2")
    await trio.sleep(10)  # 2 s apart after a random offset: 4 or 5, not 9 or 10
    assert probes_of(origins, "10.9.0.2") - before in (4, 5)
    # A late verdict of the replaced generation changes nothing.
    probes._changed(first, "svc", first.services["svc"].backends[1], True, "status 200")
    assert table.states[("svc", B)] is False


async def test_probe_successes_are_news_only_for_services_with_passive_health(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    origins = Origins(nursery, {"10.9.0.1": 200, "10.9.0.2": 200})
    table = HealthTable()
    await nursery.start(FleetProbes(table, runtime(CHECK + NO_PASSIVE), dialer=origins).run)
    await trio.sleep(5)
    assert table.version == 1  # the first replace only: no news of successes
    passive = HealthTable()  # passive health is on by default; explicit here
    await nursery.start(FleetProbes(passive, runtime(CHECK + PASSIVE), dialer=origins).run)
    await trio.sleep(0.5)
    news = passive.since(1)
    assert news is not None
    assert set(news.passed) == {("svc", A), ("svc", B)}


def test_only_services_with_a_health_check_have_verdicts() -> None:
    unchecked: RuntimeConfig = runtime("")
    assert verdicts(unchecked) == {}
    checked = runtime(CHECK)
    checked.services["svc"].backends[0].active_healthy = False
    assert verdicts(checked) == {("svc", A): False, ("svc", B): True}
