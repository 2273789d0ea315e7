"""Self-check of the peers: ``python -m bench.peers --check [--peers NAME...] [--json PATH]``.

Starts an NGINX upstream (42-byte body) in a temporary prefix, then for each peer: installs it
if needed (``ensure_peer``), runs ``peer_command`` in front of the upstream, and checks with
curl that two GETs on one connection come back with the upstream's body (the second without a
new connect: keep-alive) and that a 64 KiB POST is forwarded; then a short ``wrk -c64`` run
(``--duration``, 3 s by default) must finish without socket errors or non-2xx answers and leave
the peer serving. It also counts the upstream connections opened during the wrk run (from
``/proc/net/tcp``), which shows whether the peer keeps its upstream connections alive.

Prints one line per peer: version, ok / FAILED / unavailable (with the reason), requests per
second and latency. Exits 1 if an installed peer failed, 0 otherwise. Every process is stopped
by PID before it returns; the numbers are a smoke test, not the benchmark (that is
``bench/run_bench.py``).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

from bench.harness import nginx
from bench.peers import PEERS, PeerUnavailable, ensure_peer, peer_command, peer_version
from bench.procs import Child, ChildError, free_port, tcp_connections

START_TIMEOUT_SECONDS: Final = 60.0
CURL_TIMEOUT_SECONDS: Final = 10
POST_BYTES: Final = 64 * 1024
_UNIT_MS: Final = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass(slots=True)
class PeerResult:
    """What the self-check found for one peer."""

    peer: str
    status: str = "FAILED"  # "ok", "FAILED" or "unavailable"
    version: str = ""
    problems: list[str] = field(default_factory=list)
    requests_per_second: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    socket_errors: int | None = None
    non_2xx: int | None = None
    requests: int | None = None
    upstream_connections: int | None = None


def _curl(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "-sS", "--max-time", str(CURL_TIMEOUT_SECONDS), *argv],
        capture_output=True,
        text=True,
        timeout=CURL_TIMEOUT_SECONDS * 3,
        check=False,
    )


def curl_problems(port: int, workdir: Path) -> list[str]:
    """Two keep-alive GETs and one POST through the proxy; what went wrong, if anything."""
    base = f"http://127.0.0.1:{port}"
    first, second, posted = workdir / "get1", workdir / "get2", workdir / "post"
    problems: list[str] = []
    result = _curl(
        [
            "-w",
            "%{http_code} %{num_connects}\\n",
            f"{base}/check/one?x=1",
            "-o",
            str(first),
            f"{base}/check/two",
            "-o",
            str(second),
        ]
    )
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 4:
        return [f"GET failed (curl exit {result.returncode}): {result.stderr.strip()[-200:]}"]
    if lines[0] != "200" or lines[2] != "200":
        problems.append(f"GET statuses {lines[0]}, {lines[2]} (expected 200)")
    problems.extend(
        f"GET body {path.read_bytes()[:60]!r} is not the upstream's"
        for path in (first, second)
        if path.read_bytes() != nginx.BODY_42.encode()
    )
    if lines[3] != "0":
        problems.append("the second GET opened a new connection: no downstream keep-alive")
    payload = workdir / "payload"
    payload.write_bytes(b"x" * POST_BYTES)
    result = _curl(
        ["-w", "%{http_code}", "--data-binary", f"@{payload}", "-o", str(posted), f"{base}/post"]
    )
    if result.returncode != 0 or result.stdout != "200":
        problems.append(f"POST failed (curl exit {result.returncode}, status {result.stdout!r})")
    elif posted.read_bytes() != nginx.BODY_42.encode():
        problems.append("POST answer is not the upstream's body")
    return problems


def _milliseconds(value: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", value)
    return float(match.group(1)) * _UNIT_MS[match.group(2)] if match else float("nan")


def run_wrk(port: int, *, seconds: int, connections: int, result: PeerResult) -> None:
    """One ``wrk --latency`` run; fill ``result``'s throughput, latency and error fields."""
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    argv.append(f"http://127.0.0.1:{port}/")
    try:
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        ).stdout
    except subprocess.TimeoutExpired:
        result.problems.append("wrk did not finish")
        return
    if rate := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result.requests_per_second = float(rate.group(1))
    if done := re.search(r"(\d+) requests in", out):
        result.requests = int(done.group(1))
    for percentile, value in re.findall(r"^\s+(50|90|99)%\s+(\S+)$", out, re.MULTILINE):
        result.latency_ms[f"p{percentile}"] = round(_milliseconds(value), 3)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result.socket_errors = sum(int(n) for n in errors.groups()) if errors else 0
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result.non_2xx = int(non_2xx.group(1)) if non_2xx else 0
    if result.requests_per_second is None:
        result.problems.append(f"no wrk result: {out.strip()[-200:]}")
    if result.socket_errors or result.non_2xx:
        result.problems.append(
            f"wrk saw {result.socket_errors} socket errors, {result.non_2xx} non-2xx answers"
        )


def check_peer(
    name: str, upstream_port: int, workdir: Path, *, seconds: int, connections: int
) -> PeerResult:
    """Install, start, curl, load and stop one peer."""
    result = PeerResult(name)
    try:
        ensure_peer(name)
        result.version = peer_version(name)
    except PeerUnavailable as error:
        result.status = "unavailable"
        result.problems.append(str(error))
        return result
    port = free_port()
    argv = peer_command(name, listen_port=port, upstream_port=upstream_port)
    child = Child(name, argv, log_path=workdir / f"{name}.log")
    try:
        child.wait_for_port(port, timeout=START_TIMEOUT_SECONDS)
        result.problems += curl_problems(port, workdir)
        before = tcp_connections(upstream_port)
        run_wrk(port, seconds=seconds, connections=connections, result=result)
        result.upstream_connections = len(tcp_connections(upstream_port) - before)
        if not child.alive():
            result.problems.append(f"exited during the load run:\n{child.log_tail()}")
        else:
            result.problems += [f"after load: {p}" for p in curl_problems(port, workdir)]
    except ChildError as error:
        result.problems.append(str(error))
    finally:
        child.stop()
    if not result.problems:
        result.status = "ok"
    return result


def check(names: list[str], *, seconds: int, connections: int) -> list[PeerResult]:
    """``check_peer`` for each of ``names`` behind one NGINX upstream."""
    results: list[PeerResult] = []
    with tempfile.TemporaryDirectory(prefix="a3s-bench-peers-") as temp:
        workdir = Path(temp)
        prefix = workdir / "nginx"
        upstream_port = free_port()
        conf = nginx.write_upstream(prefix, upstream_port)
        upstream = Child("nginx", nginx.command(conf, prefix), log_path=workdir / "nginx.out")
        try:
            upstream.wait_for_port(upstream_port, timeout=10)
            for name in names:
                print(f"checking {name} ...", file=sys.stderr, flush=True)
                results.append(
                    check_peer(
                        name, upstream_port, workdir, seconds=seconds, connections=connections
                    )
                )
        finally:
            upstream.stop()
    return results


def print_table(results: list[PeerResult]) -> None:
    print(
        f"{'peer':<17}{'status':<13}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'upstream conns':>16}  version"
    )
    for r in results:
        rate = f"{r.requests_per_second:.0f}" if r.requests_per_second is not None else "-"
        p50 = f"{r.latency_ms['p50']:.1f}" if "p50" in r.latency_ms else "-"
        p99 = f"{r.latency_ms['p99']:.1f}" if "p99" in r.latency_ms else "-"
        errors = "-" if r.socket_errors is None else str((r.socket_errors or 0) + (r.non_2xx or 0))
        upstream = "-" if r.upstream_connections is None else str(r.upstream_connections)
        print(
            f"{r.peer:<17}{r.status:<13}{rate:>9}{p50:>9}{p99:>9}{errors:>8}{upstream:>16}"
            f"  {r.version}"
        )
    for r in results:
        for problem in r.problems:
            print(f"  {r.peer}: {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("--check", action="store_true", help="install, run and load each peer")
    parser.add_argument("--peers", nargs="+", choices=PEERS, default=list(PEERS))
    parser.add_argument("--duration", type=int, default=3, help="wrk seconds per peer")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if not args.check:
        parser.print_usage()
        return 2
    results = check(args.peers, seconds=args.duration, connections=args.connections)
    print_table(results)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
    return 1 if any(r.status == "FAILED" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
