"""Micro-benchmark: loading a config of 3, 30 and 300 services (HCL parse, schema, semantics).

Each generated file has one HTTP entrypoint and, per service, a router
(``Host(`sN.example`) && PathPrefix(`/api`)``) and a service with two servers, a strategy, a
health check and timeouts: the shape of a real deployment, scaled. One load is
``a3s_gateway.load_config_text``: HCL parsing (python-hcl2), normalisation, interpolation,
the msgspec schema and the semantic checks, everything ``validate --offline`` does short of
reading files. Reports milliseconds per load, the median over rounds and the best round (on a
shared machine the best is the steadier figure); it bounds how fast a reload of a big file
can be and how long ``run`` takes to start.
"""

from __future__ import annotations

import statistics
import time
from typing import Final

from a3s_gateway import load_config_text

SIZES: Final = (3, 30, 300)


def config_text(services: int) -> str:
    """An HCL config with ``services`` services, each with one router."""
    parts = [
        """\
entrypoints "web" {
  address = "127.0.0.1:8080"
  timeouts {
    request_head = "30s"
    idle         = "60s"
  }
}

observability {
  access_log_enabled = false
}
"""
    ]
    parts.extend(
        f"""
routers "r{n}" {{
  rule        = "Host(`s{n}.example`) && PathPrefix(`/api`)"
  service     = "s{n}"
  entrypoints = ["web"]
}}

services "s{n}" {{
  load_balancer {{
    strategy = "round-robin"
    servers = [
      {{ url = "http://10.0.{n // 250}.{n % 250 + 1}:8080" }},
      {{ url = "http://10.1.{n // 250}.{n % 250 + 1}:8080", weight = 2 }},
    ]
    health_check {{
      path     = "/health"
      interval = "10s"
      timeout  = "2s"
    }}
    connect_timeout         = "2s"
    response_header_timeout = "15s"
  }}
}}
"""
        for n in range(services)
    )
    return "".join(parts)


def ms_per_load(text: str, rounds: int, loads: int) -> list[float]:
    """The mean time of one load in each of ``rounds`` rounds, in milliseconds."""
    config = load_config_text(text)  # also proves the text is valid
    if len(config.services) != text.count('services "'):
        raise AssertionError("generated services went missing")
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(loads):
            load_config_text(text)
        samples.append((time.perf_counter() - start) * 1000 / loads)
    return samples


def run(*, quick: bool = False) -> list[dict[str, object]]:
    """One row per size: services, bytes of HCL, ms per load."""
    rounds = 3 if quick else 5
    rows: list[dict[str, object]] = []
    for size in SIZES:
        text = config_text(size)
        loads = max(1, (30 if quick else 100) // size)
        samples = ms_per_load(text, rounds, loads)
        rows.append(
            {
                "services": size,
                "routers": size,
                "hcl_bytes": len(text.encode()),
                "loads_per_round": loads,
                "rounds": rounds,
                "ms_per_load": round(statistics.median(samples), 3),
                "ms_best": round(min(samples), 3),
            }
        )
    return rows


def main() -> None:
    print(f"{'services':>8}{'HCL bytes':>11}{'ms/load':>10}{'best':>10}")
    for row in run():
        print(
            f"{row['services']:>8}{row['hcl_bytes']:>11}{row['ms_per_load']:>10.2f}"
            f"{row['ms_best']:>10.2f}"
        )


if __name__ == "__main__":
    main()
