"""``python -m bench.micro [--quick] [--json PATH] [--only NAME...]``: every micro-benchmark.

Runs, in order: route matching (``bench/bench_routing.py``'s measurement, imported as
``bench.bench_routing`` when it runs; skipped with the reason if it doesn't import), config loading
(``config_parse``), the HTTP/1.1 adapters (``http1_adapter``) and the gateway's memory
(``memory``; needs NGINX and curl), and the per-request cost of observability (``metrics``,
``accesslog``, ``tracing``). Prints one table per benchmark; with ``--json`` also writes
``{"environment": {...}, "results": {name: rows or record}, "errors": {name: text}}``, which
the load harness merges into its report. ``--quick`` runs fewer rounds and smaller memory
loads (for a smoke test, not for numbers to publish). A benchmark that fails is recorded in
``errors`` and the others still run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Final, Protocol

from bench.micro import (
    accesslog_bench,
    config_parse,
    http1_adapter,
    memory,
    metrics_bench,
    tracing_bench,
)
from bench.procs import cpu_model

BENCH: Final = Path(__file__).resolve().parents[1]
REPO: Final = BENCH.parent
NAMES: Final = ("routing", "config", "http1", "metrics", "accesslog", "tracing", "memory")


class _Table(Protocol):
    def __call__(self, *, quick: bool) -> list[dict[str, object]]: ...


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def environment() -> dict[str, object]:
    """Where the numbers come from."""
    return {
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "gateway_commit": _git("rev-parse", "HEAD"),
        "gateway_tree_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "packages": {name: _version(name) for name in ("a3s-gateway", "trio", "h11", "msgspec")},
    }


# --- the benchmarks --------------------------------------------------------------------------


def routing(*, quick: bool) -> list[dict[str, object]]:
    """``bench/bench_routing.py``'s ns per ``select`` for both mixes and every table size."""
    module = importlib.import_module("bench.bench_routing")
    if quick:  # read at call time by its builders and its timing loop
        module.__dict__.update(REQUESTS=500, ROUNDS=3)
    mixes = {"host-indexed": module.host_indexed, "prefix-only": module.prefix_only}
    rows: list[dict[str, object]] = []
    for mix, build in mixes.items():
        baseline = 0.0
        for size in module.SIZES:
            nanoseconds = float(module.per_match_ns(*build(size)))
            baseline = baseline or nanoseconds
            rows.append(
                {
                    "mix": mix,
                    "routers": int(size),
                    "ns_per_match": round(nanoseconds, 1),
                    "x_vs_smallest": round(nanoseconds / baseline, 2),
                }
            )
    return rows


def config(*, quick: bool) -> list[dict[str, object]]:
    return config_parse.run(quick=quick)


def http1(*, quick: bool) -> list[dict[str, object]]:
    return http1_adapter.run(quick=quick)


def memory_record(*, quick: bool) -> memory.Memory:
    return memory.run(quick=quick)


def print_rows(title: str, rows: list[dict[str, object]], columns: list[str]) -> None:
    print(f"\n{title}")
    widths = [
        max(len(column), *(len(str(row.get(column, ""))) for row in rows)) for column in columns
    ]
    print("  ".join(column.rjust(width) for column, width in zip(columns, widths, strict=True)))
    for row in rows:
        cells = (
            str(row.get(column, "")).rjust(width)
            for column, width in zip(columns, widths, strict=True)
        )
        print("  ".join(cells))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.micro", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller loads")
    parser.add_argument("--json", type=Path, help="write environment and results here")
    parser.add_argument("--only", nargs="+", choices=NAMES, default=list(NAMES))
    args = parser.parse_args(argv)
    quick: bool = args.quick
    env = environment()
    results: dict[str, object] = {}
    errors: dict[str, str] = {}
    tables: dict[str, tuple[str, _Table, list[str]]] = {
        "routing": (
            "route matching (bench/bench_routing.py)",
            routing,
            ["mix", "routers", "ns_per_match", "x_vs_smallest"],
        ),
        "config": (
            "config load (parse + schema + semantics)",
            config,
            ["services", "hcl_bytes", "ms_per_load", "ms_best"],
        ),
        "http1": (
            "HTTP/1.1 adapters, one keep-alive cycle",
            http1,
            ["cycle", "us_per_cycle", "us_best"],
        ),
        "metrics": (
            "metrics: per-request updates and a scrape (observability/gateway_metrics.py)",
            metrics_bench.run,
            ["kind", "call", "step", "ns_per_call", "ns_best", "ms_per_scrape", "ms_best"],
        ),
        "accesslog": (
            "access log: encoding and queueing a line (observability/accesslog.py)",
            accesslog_bench.run,
            ["case", "us_per_op", "us_best"],
        ),
        "tracing": (
            "tracing: extract, new span, inject, request id (observability/tracing.py)",
            tracing_bench.run,
            ["cycle", "ns_per_request", "ns_best"],
        ),
    }
    for name in args.only:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        try:
            if name == "memory":
                record = memory_record(quick=quick)
                print("\nmemory of the gateway (--workers 1)")
                memory.print_report(record)
                results[name] = record.to_json()
            else:
                title, function, columns = tables[name]
                rows = function(quick=quick)
                print_rows(title, rows, columns)
                results[name] = rows
        except Exception as error:  # one broken benchmark must not hide the others
            errors[name] = f"{type(error).__name__}: {error}"
            print(f"\n{name}: FAILED: {errors[name]}", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)
    if args.json is not None:
        document = {"environment": env, "quick": quick, "results": results, "errors": errors}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
