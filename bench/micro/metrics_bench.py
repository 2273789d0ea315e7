"""Micro-benchmark: what metrics cost the data plane and a scrape (SPEC §9.1, DESIGN.md §3.5).

*Per exchange*: ``GatewayMetrics.observe_exchange`` for a finished request (the requests
counter, the duration histogram and the two byte counters), once with one label set (the
steady state of a single route) and once spread over 100 routers × 3 methods/statuses (the
label-set caches are warm in both; the second shows the cost of a larger cache).
``observe_attempt`` (backend requests and the upstream histogram) is timed the same way, and
``exchange + attempt`` is one of each: the metric cost of a proxied request (DESIGN.md §3.5:
under 1 µs). Reported in nanoseconds per call, the median over rounds and the best round.

*Per scrape*: configs of 10 and 100 routers and services with two servers each (the shape of
``config_parse``), after traffic on every router and backend: ``collect`` (gauges and
instance counters from live state) and ``freeze`` (the cells copied), which run on the event
loop, and ``render`` (prometheus_client's exposition of the frozen snapshot), which the
gateway runs in a worker thread; in milliseconds, with the exposition's size. *Loop stall*: the
longest a 1 ms ticker on the trio loop waited past its deadline while scrapes ran, with the
render inline and in a thread (the GIL is shared, so the thread slows the loop but does not
stop it for the whole render).

Run alone with ``python -m bench.micro.metrics_bench``.
"""

from __future__ import annotations

import statistics
import time
from functools import partial
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway import load_config_text
from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.observability.metrics import render
from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.observability.stream_stats import StreamStats
from a3s_gateway.runtime.compile import compile_runtime
from a3s_gateway.upstream.pool_state import PeerStats
from bench.micro.config_parse import config_text

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from a3s_gateway.runtime.compile import RuntimeConfig
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
        self.http2_connections: Mapping[str, int] = {}
        self.rejected_connections: Mapping[tuple[str, str], int] = {}
        self.websockets: Mapping[str, int] = {}
        self.websocket_sessions: Mapping[str, int] = {}
        self.websocket_totals: Mapping[str, int] = {}
        self.sse_streams: Mapping[str, int] = {}
        self.streams = StreamStats()  # no TCP or UDP traffic here
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
        "exchange + attempt, 1 label set": _cycling(
            [partial(_both, metrics, one, backends[0][0], backends[0][1])]
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


def _both(metrics: GatewayMetrics, record: ExchangeRecord, service: str, backend: str) -> None:
    metrics.observe_exchange(record)
    metrics.observe_attempt(service, backend, 200, 0.003)


def _scraped(routers: int) -> tuple[GatewayMetrics, RuntimeConfig, _Context]:
    """Metrics after traffic on every router and backend of a ``routers``-router config."""
    runtime = compile_runtime(load_config_text(config_text(routers)), 1)
    metrics = GatewayMetrics(True)
    metrics.prepare(runtime)
    for n in range(routers):
        for method, status in SHAPES:
            metrics.observe_exchange(_record(n, method, status))
        for backend in runtime.services[f"s{n}"].backends:
            metrics.observe_attempt(f"s{n}", backend.url.text, 200, 0.003)
    return metrics, runtime, _Context()


def scrape(*, quick: bool, sizes: tuple[int, ...] = (10, ROUTERS)) -> list[dict[str, object]]:
    """ms per ``collect``, ``freeze`` and ``render`` with 10 and 100 routers and services."""
    rounds, scrapes = (3, 5) if quick else (5, 10)
    rows: list[dict[str, object]] = []
    for routers in sizes:
        metrics, runtime, ctx = _scraped(routers)
        metrics.collect(runtime, ctx)
        frozen = metrics.freeze()
        exposition = render(frozen)
        timed: dict[str, Callable[[], object]] = {
            "collect (loop)": partial(metrics.collect, runtime, ctx),
            "freeze (loop)": metrics.freeze,
            "render (thread)": partial(render, frozen),
        }
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
                    "routers": routers,
                    "exposition_bytes": len(exposition),
                    "exposition_lines": exposition.count(b"\n"),
                    "ms_per_scrape": round(statistics.median(samples), 3),
                    "ms_best": round(min(samples), 3),
                }
            )
    return rows


def loop_stall(*, quick: bool, routers: int = ROUTERS) -> list[dict[str, object]]:
    """The longest lateness (ms) of a 1 ms ticker on the trio loop during scrapes of
    ``routers`` routers, rendering inline and in a worker thread."""
    metrics, runtime, ctx = _scraped(routers)
    scrapes = 3 if quick else 10

    async def measure(threaded: bool) -> float:
        worst = 0.0
        done = trio.Event()

        async def ticker() -> None:
            nonlocal worst
            while not done.is_set():
                due = time.perf_counter() + 0.001
                await trio.sleep(0.001)
                worst = max(worst, time.perf_counter() - due)

        async def scraper() -> None:
            for _ in range(scrapes):
                metrics.collect(runtime, ctx)
                frozen = metrics.freeze()
                if threaded:
                    await trio.to_thread.run_sync(render, frozen)
                else:
                    render(frozen)
                await trio.sleep(0.005)
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ticker)
            nursery.start_soon(scraper)
        return worst * 1000

    return [
        {"render": mode, "routers": routers, "worst_tick_late_ms": round(trio.run(measure, t), 2)}
        for mode, t in (("inline", False), ("thread", True))
    ]


def run(*, quick: bool = False) -> list[dict[str, object]]:
    """Both tables, one row per measurement (``kind`` tells them apart)."""
    rows: list[dict[str, object]] = [{"kind": "hot path", **row} for row in hot_path(quick=quick)]
    rows.extend({"kind": "scrape", **row} for row in scrape(quick=quick))
    rows.extend({"kind": "loop stall", **row} for row in loop_stall(quick=quick))
    return rows


def main() -> None:
    hot = hot_path(quick=False)
    print(f"{'call':<40}{'ns/call':>10}{'best':>9}")
    for row in hot:
        print(f"{row['call']!s:<40}{row['ns_per_call']!s:>10}{row['ns_best']!s:>9}")
    rows = scrape(quick=False)
    print(f"\n{'routers':<9}{'lines':>7}{'step':>18}{'ms/scrape':>11}{'best':>9}")
    for row in rows:
        print(
            f"{row['routers']!s:<9}{row['exposition_lines']!s:>7}{row['step']!s:>18}"
            f"{row['ms_per_scrape']!s:>11}{row['ms_best']!s:>9}"
        )
    print("\nloop stall during scrapes (worst lateness of a 1 ms ticker)")
    for row in loop_stall(quick=False):
        late = row["worst_tick_late_ms"]
        print(f"render {row['render']!s:<8}{row['routers']!s:>5} routers {late} ms")


if __name__ == "__main__":
    main()
