"""Micro-benchmark: route-table matching with 10, 100 and 1,000 routers (issue #3).

Two mixes: *host-indexed* (``Host(`hN.example`) && PathPrefix(`/api`)``, the table's index
applies) and *prefix-only* (``PathPrefix(`/pN`)``, every router is a candidate). Requests are
prepared views, as the data plane will pass them, and hit routers spread over the table. Prints
the time per ``select`` call. Run: ``just bench`` (or ``python bench/bench_routing.py``).
Timings are for comparing tables of different sizes on one machine in one run, not claims
about the gateway's request rate (those come from the HTTP benchmark against NGINX).
"""

from __future__ import annotations

import statistics
import time
from typing import TYPE_CHECKING

from a3s_gateway.routing import HttpRequestInfo, Route, RouteTable, compile_rule
from a3s_gateway.routing.request import RequestView

if TYPE_CHECKING:
    from collections.abc import Callable

SIZES = (10, 100, 1000)
REQUESTS = 2000
ROUNDS = 5


def host_indexed(count: int) -> tuple[RouteTable, list[RequestView]]:
    routes = [
        Route(
            name=f"r{n:04d}",
            rule=compile_rule(f"Host(`h{n}.example`) && PathPrefix(`/api`)"),
            service="s",
        )
        for n in range(count)
    ]
    requests = [
        RequestView.from_info(HttpRequestInfo("GET", f"h{(i * 7919) % count}.example", "/api/x"))
        for i in range(REQUESTS)
    ]
    return RouteTable(routes), requests


def prefix_only(count: int) -> tuple[RouteTable, list[RequestView]]:
    routes = [
        Route(name=f"r{n:04d}", rule=compile_rule(f"PathPrefix(`/p{n}/`)"), service="s")
        for n in range(count)
    ]
    requests = [
        RequestView.from_info(HttpRequestInfo("GET", "example", f"/p{(i * 7919) % count}/x"))
        for i in range(REQUESTS)
    ]
    return RouteTable(routes), requests


def per_match_ns(table: RouteTable, requests: list[RequestView]) -> float:
    """Median over rounds of the mean time of one ``select`` call, in nanoseconds."""
    samples = []
    for _ in range(ROUNDS):
        start = time.perf_counter_ns()
        for request in requests:
            if table.select(request, "web") is None:
                raise AssertionError("every benchmark request must match")
        samples.append((time.perf_counter_ns() - start) / len(requests))
    return statistics.median(samples)


def main() -> None:
    mixes: dict[str, Callable[[int], tuple[RouteTable, list[RequestView]]]] = {
        "host-indexed": host_indexed,
        "prefix-only": prefix_only,
    }
    print(f"{'mix':<14}{'routers':>8}{'ns/match':>12}{'x vs 10':>10}")
    for mix, build in mixes.items():
        baseline = 0.0
        for size in SIZES:
            nanoseconds = per_match_ns(*build(size))
            baseline = baseline or nanoseconds
            print(f"{mix:<14}{size:>8}{nanoseconds:>12.0f}{nanoseconds / baseline:>10.2f}")


if __name__ == "__main__":
    main()
