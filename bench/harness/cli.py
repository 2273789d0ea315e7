"""Command line of ``bench/run_bench.py``: options, the run, and writing ``bench/results/``.

Exit codes: 0 when the run completed (even with target misses, wrk errors or a failed Python
peer: the report says so), 1 when it could not run or NGINX or the gateway failed, 2 for a
usage error.

``--ab`` is the quick A/B of the request path: ``--quick --profile get-42b-1w --product
a3s-1w,aiohttp-uvloop`` (NGINX is always added), about a minute; compare its CPU µs/req and
ratios between two builds. Quick runs write to ``bench/results/quick/`` (git-ignored) unless
``--results`` says otherwise, so they never replace the committed ``latest.*``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from bench.harness import environment, h2load, nginx, peerlink, plan, report, streamload
from bench.harness.environment import load_average
from bench.harness.runner import ProfileRun, Runner, Settings, say
from bench.procs import ChildError

RESULTS: Final = Path(__file__).resolve().parents[1] / "results"
QUICK_RESULTS: Final = RESULTS / "quick"
AB_PROFILES: Final = [plan.GET_1W.name]
AB_PRODUCTS: Final = [plan.A3S_1W, "aiohttp-uvloop"]
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run_bench.py",
        description=(
            "HTTP load benchmark of a3s_gateway against NGINX and Python proxies (SPEC §15, "
            "issue #15). Writes run-<UTC>.json, latest.json, latest.md and latest.png to "
            "bench/results (bench/results/quick with --quick or --ab)."
        ),
    )
    parser.add_argument(
        "--profile",
        "--profiles",
        action="append",
        default=[],
        metavar="NAME[,NAME...]",
        help=(
            "run these profiles (repeatable or comma-separated; default all): "
            f"{', '.join(plan.profile_names())}"
        ),
    )
    parser.add_argument(
        "--product",
        "--products",
        action="append",
        default=[],
        metavar="NAME[,NAME...]",
        help=(
            "measure these products (repeatable or comma-separated; default all; nginx is "
            f"always added as the baseline): {', '.join(plan.BUILTIN_PRODUCTS)}, a peer name "
            "or 'peers'"
        ),
    )
    parser.add_argument(
        "--ab",
        action="store_true",
        help=(
            "quick A/B of the request path (about a minute): --quick --profile "
            f"{','.join(AB_PROFILES)} --product {','.join(AB_PRODUCTS)} unless those are given"
        ),
    )
    parser.add_argument("--trials", type=_positive_int, default=None, help="default 3")
    parser.add_argument(
        "--duration", type=_positive_float, default=None, help="seconds per trial (default 10)"
    )
    parser.add_argument(
        "--warmup", type=_positive_float, default=None, help="warm-up seconds (default 2)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="development run: 2 trials × 3 s after 1 s warm-up (explicit options win)",
    )
    parser.add_argument(
        "--connections",
        type=_positive_int,
        default=64,
        help=(
            "wrk and streamload connections (default 64; the HTTP/2 profiles use h2load's "
            "4 × 16 streams)"
        ),
    )
    parser.add_argument(
        "--threads", type=_positive_int, default=2, help="wrk and h2load threads (default 2)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="output folder (default bench/results; bench/results/quick with --quick or --ab)",
    )
    return parser


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 (wrk counts whole seconds)")
    return value


def _names(values: list[str]) -> list[str]:
    """``--profile a,b --profile c`` → ``[a, b, c]``."""
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def apply_presets(args: argparse.Namespace) -> None:
    """Split the comma-separated names; ``--ab`` fills in what it stands for."""
    args.profile = _names(args.profile)
    args.product = _names(args.product)
    if args.ab:
        args.quick = True
        args.profile = args.profile or list(AB_PROFILES)
        args.product = args.product or list(AB_PRODUCTS)
    if args.results is None:
        args.results = QUICK_RESULTS if args.quick else RESULTS


def settings_from(args: argparse.Namespace) -> Settings:
    quick = bool(args.quick)
    trials: int = args.trials or (2 if quick else 3)
    duration: float = args.duration or (3.0 if quick else 10.0)
    warmup: float = args.warmup or (1.0 if quick else 2.0)
    return Settings(trials, duration, warmup, args.connections, args.threads)


def _tools_present(profiles: list[plan.Profile]) -> bool:
    """Whether wrk, h2load and NGINX (and gcc for the streaming and echo profiles, NGINX's
    stream module for the echo ones) are installed; says how to install them when not."""
    missing = environment.missing_tools(
        streaming=any(p.uses_streamload for p in profiles),
        stream_module=any(p.layer4 for p in profiles),
    )
    if missing:
        say(
            f"missing load tools: {', '.join(missing)}; install them with "
            "`bash bench/harness/install-debian-packages.sh` (part of `just bench`)"
        )
    return not missing


def _peer_record(peers: peerlink.Peers) -> dict[str, dict[str, str | None]]:
    """Each peer's version, or why it is unavailable."""
    return {
        name: {
            "version": peers.versions.get(name),
            "unavailable": peers.unavailable.get(name, peers.missing_reason),
        }
        for name in peers.names
    }


def _meta(
    command: str, started: datetime, wall: float, settings: Settings, runner: Runner
) -> dict[str, object]:
    """The run's ``meta`` record: the command, the load shapes, the upstream."""
    meta: dict[str, object] = {
        "command": command,
        "via": "just bench (./dev bench) runs the same command",
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_seconds": round(wall, 1),
        "trials": settings.trials,
        "duration_s": settings.duration,
        "warmup_s": settings.warmup,
        "connections": settings.connections,
        "wrk_threads": settings.threads,
        "wrk_timeout_s": 2,
        "product_order": "profile order on odd-numbered trials, reversed on even-numbered ones",
        "upstream_port": runner.upstream_port,
        "upstream_nginx_config": runner.upstream_config,
    }
    if any(profile.http2 for profile in runner.profiles):
        meta["h2load"] = {
            "clients": h2load.CLIENTS,
            "streams": h2load.STREAMS,
            "threads": max(1, min(settings.threads, h2load.CLIENTS)),
            "latency": "nearest-rank percentiles of the per-request times of --log-file",
        }
    if runner.grpc_port:
        meta["grpc_backend_port"] = runner.grpc_port
    if any(profile.uses_streamload for profile in runner.profiles):
        meta["streamload"] = _streamload_meta(settings, runner)
    return meta


def _streamload_meta(settings: Settings, runner: Runner) -> dict[str, object]:
    """The ``streamload`` record of a run with streaming or echo profiles: the load shape of
    the kinds it has (WebSocket and SSE; TCP and UDP echo) and how latency is taken."""
    protocols = {profile.protocol for profile in runner.profiles}
    record: dict[str, object] = {"connections": settings.connections}
    latency: list[str] = []
    if protocols & {"websocket", "sse"}:
        record |= {
            "websocket_message_bytes": streamload.MESSAGE_BYTES,
            "sse_event_bytes": streamload.EVENT_BYTES,
            "sse_window": streamload.SSE_WINDOW,
        }
        latency.append(
            "WebSocket: send to echo per message; SSE: arrival minus the time stamp the "
            "backend wrote into the event (same host, CLOCK_MONOTONIC)"
        )
    if protocols & {"tcp", "udp"}:
        record |= {
            "echo_message_bytes": streamload.MESSAGE_BYTES,
            "udp_retry_s": streamload.RETRY_SECONDS,
            "nginx_stream_module": str(nginx.STREAM_MODULE),
        }
        latency.append("TCP and UDP: send to echo per message or datagram")
    latency.append("nearest-rank percentiles of a log-linear histogram (within 0.2 %)")
    return record | {
        "timeout_s": streamload.TIMEOUT_SECONDS,
        "source": "bench/tools/streamload.c",
        "cflags": " ".join(streamload.CFLAGS),
        "backends": runner.stream_backends,
        "latency": "; ".join(latency),
    }


def _write_results(
    results: Path,
    started: datetime,
    *,
    meta: dict[str, object],
    environment: dict[str, object],
    runs: list[ProfileRun],
    summaries: list[report.Summary],
    peers: peerlink.Peers,
) -> None:
    """``run-<stamp>.json``, ``latest.json``, ``latest.md`` and ``latest.png`` in ``results``;
    the table also goes to stdout."""
    rows = report.verdicts(summaries, peers.names)
    document = report.record(
        meta=meta, environment=environment, profiles=runs, summaries=summaries, rows=rows
    )
    results.mkdir(parents=True, exist_ok=True)
    raw = results / f"run-{started:%Y%m%dT%H%M%SZ}.json"
    report.write_json(document, raw)
    shutil.copyfile(raw, results / "latest.json")
    table = report.markdown(
        meta=meta,
        environment=environment,
        summaries=summaries,
        rows=rows,
        peer_notes=dict(peers.unavailable),
    )
    (results / "latest.md").write_text(table)
    report.chart(
        summaries,
        results / "latest.png",
        title=f"a3s_gateway throughput ÷ NGINX, {started:%Y-%m-%d %H:%M} UTC\n{meta['command']}",
    )
    print(table)
    say(f"wrote {raw}, latest.json, latest.md, latest.png in {results}")


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(arguments)
    apply_presets(args)
    peers = peerlink.load()
    try:
        profiles = plan.select_profiles(args.profile)
        plan.check_products(args.product, peers.names)
    except ValueError as error:
        parser.print_usage(sys.stderr)
        print(f"run_bench.py: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not _tools_present(profiles):
        return EXIT_FAILED
    settings = settings_from(args)
    command = shlex.join(["python", "bench/run_bench.py", *arguments])
    started = datetime.now(UTC)
    products = sum(
        len(plan.products_for(profile, peers.names, args.product)) for profile in profiles
    )
    estimate = products * settings.trials * (settings.duration + settings.warmup)
    say(
        f"a3s bench {started:%Y%m%dT%H%M%SZ}: {len(profiles)} profile(s), {settings.trials} × "
        f"{settings.duration:g} s trials, about {estimate / 60:.1f} min of load plus start-up"
    )
    env = environment.collect(wrk_threads=settings.threads)
    if not peers.module:
        say(f"peers: {peers.missing_reason}")
    clock = time.monotonic()
    runner = Runner(settings, profiles, args.product, peers)
    # SIGTERM unwinds like Ctrl-C, so the `finally` blocks stop every started process.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        runs = runner.run()
    except KeyboardInterrupt:
        say("interrupted: every started process was stopped; no results written")
        return EXIT_FAILED
    except (RuntimeError, OSError, ChildError) as error:
        say(f"benchmark failed: {error}")
        return EXIT_FAILED
    env["load_average_end"] = load_average()
    env["peers"] = _peer_record(peers)
    meta = _meta(command, started, time.monotonic() - clock, settings, runner)
    summaries = report.summarise(runs)
    _write_results(
        args.results,
        started,
        meta=meta,
        environment=env,
        runs=runs,
        summaries=summaries,
        peers=peers,
    )
    failed = any(
        summary.status == "failed" and summary.product not in peers.names for summary in summaries
    )
    return EXIT_FAILED if failed else EXIT_OK
