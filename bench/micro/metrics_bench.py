"""Micro-benchmark: what metrics cost the data plane and a scrape (SPEC §9.1, DESIGN.md §3.5).

*Per exchange*: ``GatewayMetrics.observe_exchange`` for a finished request (the requests
counter, the duration histogram and the two byte counters), once with one label set (the
steady state of a single route) and once spread over 100 routers × 3 methods/statuses (the
label-set caches are warm in both; the second shows the cost of a larger cache).
``observe_attempt`` (backend requests and the upstream histogram) is timed the same way.
Reported in nanoseconds per call, the median over rounds and the best round.

*Per scrape*: a config of 100 routers and 100 services with two servers each (the shape of
``config_parse``), after traffic on every router and backend: ``collect`` (gauges and
instance counters from live state) and ``render`` (the text exposition), in milliseconds, with
the exposition's size. A scrape costs ``collect + render``.

Run alone with ``python -m bench.micro.metrics_bench``.
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import TYPE_CHECKING, Final

from a3s_gateway import load_config_text
from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.upstream.pool_state import PeerStats

from .config_parse import config_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.upstream.peer import Peer

ROUTERS: Final = 100
SHAPES: Final = ((b"GET", 200), (b"GET", 404), (b"POST", 201))


class _Pool:
    def stats(self, peer: Peer) -> PeerStats:
        return PeerStats(idle=4, busy=2)


class _Context:
    """What ``collect`` reads of ``ServerContext``."""

    def __init__(self) -> None:
        self.active_requests: Mapping[str, int] = {"web": 12}
        self.active_connections: Mapping[str, int] = {"web": 64}
        self.rejected_connections: Mapping[tuple[str, str], int] = {}
        self.pool = _Pool()


def _record(router: int, method: bytes, status: int) -> ExchangeRecord:
    record = ExchangeRecord("web", 1000.0)
    record.ended = 1000.0042
    record.router = f"r{router}"
    record.service = f"s{router}"
    record.method = method
    record.status = status
    record.request_bytes = 0
    record.response_bytes = 42
    return record


def _noop(record: ExchangeRecord) -> None:
    del record


def _per_call_ns(
    call: Callable[[], None], baseline: Callable[[], None], rounds: int, calls: int
) -> list[float]:
    """ns per ``call`` minus ns per ``baseline`` (the loop and the call through a partial),
    one sample per round; the two run back to back in each round so load changes on a shared
    machine hit both."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(calls):
            baseline()
        middle = time.perf_counter_ns()
        for _ in range(calls):
            call()
        end = time.perf_counter_ns()
        samples.append(((end - middle) - (middle - start)) / calls)
    return samples


def _cycling(calls: list[Callable[[], None]]) -> Callable[[], None]:
    """One call per invocation, going round ``calls`` (the loop's own cost is included in
    every row, so rows compare)."""
    position = [0]
    size = len(calls)

    def step() -> None:
        index = position[0]
        calls[index]()
        position[0] = index + 1 if index + 1 < size else 0

    return step


def hot_path(*, quick: bool) -> list[dict[str, object]]:
    """ns per ``observe_exchange`` / ``observe_attempt``."""
    rounds, calls = (3, 20_000) if quick else (7, 100_000)
    metrics = GatewayMetrics(True)
    one = _record(0, b"GET", 200)
    spread = [_record(n, m, s) for n in range(ROUTERS) for m, s in SHAPES]
    backends = [(f"s{n}", f"http://10.0.0.{n % 250 + 1}:8080") for n in range(ROUTERS)]
    for record in spread:  # warm the label-set caches: the steady state is what is measured
        metrics.observe_exchange(record)
    for service, backend in backends:
        metrics.observe_attempt(service, backend, 200, 0.003)
    # every row calls through functools.partial from the same loop; the loop with a no-op
    # partial is subtracted, so a row is the method's own cost
    baseline = _cycling([partial(_noop, one)])
    disabled = GatewayMetrics(False)
    measured: dict[str, Callable[[], None]] = {
        "observe_exchange, 1 label set": _cycling([partial(metrics.observe_exchange, one)]),
        f"observe_exchange, {len(spread)} label sets": _cycling(
            [partial(metrics.observe_exchange, record) for record in spread]
        ),
        f"observe_attempt, {len(backends)} backends": _cycling(
            [partial(metrics.observe_attempt, s, b, 200, 0.003) for s, b in backends]
        ),
        "observe_exchange, disabled": _cycling([partial(disabled.observe_exchange, one)]),
    }
    rows: list[dict[str, object]] = []
    for name, call in measured.items():
        samples = _per_call_ns(call, baseline, rounds, calls)
        rows.append(
            {
                "call": name,
                "ns_per_call": round(statistics.median(samples), 1),
                "ns_best": round(min(samples), 1),
            }
        )
    return rows


def scrape(*, quick: bool) -> list[dict[str, object]]:
    """ms per ``collect`` and per ``render`` with 100 routers and services."""
    rounds, scrapes = (3, 20) if quick else (7, 50)
    runtime = compile_runtime(load_config_text(config_text(ROUTERS)), 1)
    metrics = GatewayMetrics(True)
    for n in range(ROUTERS):
        for method, status in SHAPES:
            metrics.observe_exchange(_record(n, method, status))
        for backend in runtime.services[f"s{n}"].backends:
            metrics.observe_attempt(f"s{n}", backend.url.text, 200, 0.003)
    ctx = _Context()
    metrics.collect(runtime, ctx)
    exposition = metrics.render()

    def both() -> bytes:
        metrics.collect(runtime, ctx)
        return metrics.render()

    timed: dict[str, Callable[[], object]] = {
        "collect": partial(metrics.collect, runtime, ctx),
        "render": metrics.render,
        "collect + render": both,
    }
    rows: list[dict[str, object]] = []
    for name, call in timed.items():
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(scrapes):
                call()
            samples.append((time.perf_counter() - start) * 1000 / scrapes)
        rows.append(
            {
                "step": name,
                "routers": ROUTERS,
                "services": ROUTERS,
                "exposition_bytes": len(exposition),
                "exposition_lines": exposition.count(b"\n"),
                "ms_per_scrape": round(statistics.median(samples), 3),
                "ms_best": round(min(samples), 3),
            }
        )
    return rows


def run(*, quick: bool = False) -> list[dict[str, object]]:
    """Both tables, one row per measurement (``kind`` tells them apart)."""
    rows: list[dict[str, object]] = [{"kind": "hot path", **row} for row in hot_path(quick=quick)]
    rows.extend({"kind": "scrape", **row} for row in scrape(quick=quick))
    return rows


def main() -> None:
    hot = hot_path(quick=False)
    print(f"{'call':<40}{'ns/call':>10}{'best':>9}")
    for row in hot:
        print(f"{row['call']!s:<40}{row['ns_per_call']!s:>10}{row['ns_best']!s:>9}")
    rows = scrape(quick=False)
    first = rows[0]
    print(
        f"\nscrape of {first['routers']} routers and {first['services']} services: "
        f"{first['exposition_bytes']} bytes, {first['exposition_lines']} lines"
    )
    print(f"{'step':<20}{'ms/scrape':>10}{'best':>9}")
    for row in rows:
        print(f"{row['step']!s:<20}{row['ms_per_scrape']!s:>10}{row['ms_best']!s:>9}")


if __name__ == "__main__":
    main()
