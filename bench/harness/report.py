"""Medians, ratios to NGINX, the SPEC §15 and issue #15 verdicts, and ``bench/results/``.

Per product and profile: the median over trials of req/s, of each latency percentile and of the
CPU µs per request of the product's processes (``cputime``). The throughput ratio is product ÷
NGINX of the same profile (higher is better), the p99 ratio is product p99 ÷ NGINX p99 (lower is
better). Target rows covered here:

- GET 42 B, 1 worker: a3s-1w ≥ 0.15 × NGINX, p99 ≤ 6 × NGINX;
- HTTPS GET 42 B, 1 worker: a3s-1w ≥ 0.12 × NGINX with ``ssl``, p99 ≤ 6 × NGINX;
- HTTP/2 over TLS and h2c prior knowledge (h2load, 4 connections × 16 streams), 1 worker:
  a3s-1w ≥ 0.15 × NGINX (``listen … http2``), p99 ≤ 6 ×;
- gRPC unary, 64 concurrent calls, 1 worker: a3s-1w ≥ 0.2 × NGINX ``grpc_pass``, p99 ≤ 5 ×;
- WebSocket 32-byte echo, 64 connections, 1 worker: a3s-1w messages/s ≥ 0.5 × NGINX (with the
  Upgrade headers), p99 per message ≤ 3 ×;
- SSE, 64 streams, 1 worker: a3s-1w events/s ≥ 0.3 × NGINX (``proxy_buffering off``), p99 per
  event ≤ 4 ×;
- TCP 32-byte echo, 64 connections, 1 worker: a3s-1w messages/s ≥ 0.5 × NGINX ``stream``
  (``proxy_pass``), p99 per message ≤ 3 ×;
- UDP 32-byte echo, 64 sockets, 1 worker: a3s-1w datagrams/s ≥ 0.3 × NGINX ``stream``
  (``listen … udp``), p99 per datagram ≤ 4 ×;
- GET 42 B, one worker per CPU: a3s-Nw ≥ 0.25 × NGINX (same worker count), p99 ≤ 4 ×;
- best Python peer ÷ a3s_gateway (1 worker, same run) ≤ 0.5;
- 1000 routers ÷ 10 routers (a3s-1w): throughput ≥ 0.83, p99 ≤ 1.2;
- README example chain (jwt + rate-limit) ÷ bare route (a3s-1w): throughput ≥ 0.8, p99 ≤ 1.3;
- issue #15: CPU per proxied GET (a3s-1w in ``get-42b-1w``) ≤ 150 µs;
- issue #15: GET 42 B, a3s-1w ÷ the ``aiohttp-uvloop`` peer (same run) ≥ 1.0.

In the streaming and echo profiles (``streamload``) "req/s" is messages echoed or events
received per second and "CPU µs/req" is per message or event. A row with load errors (wrk's,
h2load's failed streams and responses, streamload's failed connections, timeouts and wrong
echoes or events) in the products it compares is a MISS whatever the ratios; a row whose
products were not measured is "n/a". UDP datagrams lost (no echo within streamload's retry
time) are not errors, since UDP may drop: they are summed per product, shown with their share
of the datagrams sent in a table of their own, and named in the verdict's note. Files:
``run-<UTC>.json`` and ``latest.json`` (the same record), ``latest.md`` (the tables the README
embeds) and ``latest.png`` (throughput ratios).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bench.harness import plan, streamload

if TYPE_CHECKING:
    from pathlib import Path

    from bench.harness.runner import ProductRun, ProfileRun

LATENCIES: Final = ("p50_ms", "p90_ms", "p99_ms")
#: The peer issue #15 compares the 1-worker gateway with (``bench/peers``).
AIOHTTP_PEER: Final = "aiohttp-uvloop"
#: Issue #15: CPU per proxied GET (1 worker, default config), µs.
CPU_TARGET_US: Final = 150.0
TARGET_LINES: Final = {
    plan.GET_1W.name: 0.15,
    plan.HTTPS_1W.name: 0.12,
    plan.H2_1W.name: 0.15,
    plan.H2C_1W.name: 0.15,
    plan.GRPC_1W.name: 0.2,
    plan.WS_ECHO_1W.name: 0.5,
    plan.SSE_1W.name: 0.3,
    plan.TCP_ECHO_1W.name: 0.5,
    plan.UDP_ECHO_1W.name: 0.3,
    plan.GET_NW.name: 0.25,
}
#: The SPEC §15 rows that compare a gateway product with NGINX in the same profile: scenario,
#: profile, product, throughput target (at least) and p99 target (at most).
NGINX_ROWS: Final = (
    ("HTTP/1.1 GET 42 B, 1 worker (a3s-1w ÷ nginx)", plan.GET_1W.name, plan.A3S_1W, 0.15, 6.0),
    (
        "HTTPS/1.1 GET 42 B, 1 worker (a3s-1w ÷ nginx ssl)",
        plan.HTTPS_1W.name,
        plan.A3S_1W,
        0.12,
        6.0,
    ),
    (
        "HTTP/2 over TLS GET 42 B, h2load 4 × 16 streams, 1 worker (a3s-1w ÷ nginx ssl http2)",
        plan.H2_1W.name,
        plan.A3S_1W,
        0.15,
        6.0,
    ),
    (
        "h2c prior knowledge GET 42 B, h2load 4 × 16 streams, 1 worker (a3s-1w ÷ nginx http2)",
        plan.H2C_1W.name,
        plan.A3S_1W,
        0.15,
        6.0,
    ),
    (
        "gRPC unary, 64 concurrent calls, 1 worker (a3s-1w ÷ nginx grpc_pass)",
        plan.GRPC_1W.name,
        plan.A3S_1W,
        0.2,
        5.0,
    ),
    (
        "WebSocket 32-byte echo, messages/s, 64 connections, 1 worker (a3s-1w ÷ nginx)",
        plan.WS_ECHO_1W.name,
        plan.A3S_1W,
        0.5,
        3.0,
    ),
    (
        "SSE, events/s, 64 streams, 1 worker (a3s-1w ÷ nginx proxy_buffering off)",
        plan.SSE_1W.name,
        plan.A3S_1W,
        0.3,
        4.0,
    ),
    (
        "TCP 32-byte echo, messages/s, 64 connections, 1 worker (a3s-1w ÷ nginx stream)",
        plan.TCP_ECHO_1W.name,
        plan.A3S_1W,
        0.5,
        3.0,
    ),
    (
        "UDP 32-byte echo, datagrams/s, 64 sockets, 1 worker (a3s-1w ÷ nginx stream udp)",
        plan.UDP_ECHO_1W.name,
        plan.A3S_1W,
        0.3,
        4.0,
    ),
    (
        "HTTP/1.1 GET 42 B, one worker per CPU (a3s-Nw ÷ nginx auto)",
        plan.GET_NW.name,
        plan.A3S_NW,
        0.25,
        4.0,
    ),
)


@dataclass(frozen=True, slots=True)
class Summary:
    """Medians of one product in one profile, with its ratios to NGINX."""

    profile: str
    product: str
    status: str
    reason: str | None
    trials: int
    rps: float | None
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    errors: int
    rps_ratio: float | None
    p99_ratio: float | None
    #: Median CPU µs per request of the product's process tree (None for ``direct``).
    cpu_us_per_req: float | None = None
    #: Streaming profiles: median cores used by streamload's client and by its backend.
    load_tool_cores: float | None = None
    backend_cores: float | None = None
    #: UDP: datagrams lost and late over all trials, and the lost share of those sent
    #: (lost ÷ (lost + echoed)); None in the other profiles.
    lost: int | None = None
    late: int | None = None
    loss_rate: float | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target row: measured ratios (or CPU µs per request), targets, PASS/MISS/n/a, why."""

    scenario: str
    throughput_ratio: float | None
    throughput_target: str
    p99_ratio: float | None
    p99_target: str
    verdict: str
    note: str
    cpu_us_per_req: float | None = None
    cpu_target: str = "—"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def summarise(profiles: list[ProfileRun]) -> list[Summary]:
    """One summary per product per profile, in run order."""
    summaries: list[Summary] = []
    for profile in profiles:
        medians = {product.name: _medians(product) for product in profile.products}
        base = medians.get(plan.NGINX, {})
        for product in profile.products:
            own = medians[product.name]
            lost, late, loss_rate = _losses(product)
            summaries.append(
                Summary(
                    profile=profile.profile.name,
                    product=product.name,
                    status=product.status,
                    reason=product.reason,
                    trials=len(product.trials),
                    rps=own.get("rps"),
                    p50_ms=own.get("p50_ms"),
                    p90_ms=own.get("p90_ms"),
                    p99_ms=own.get("p99_ms"),
                    errors=sum(trial.error_total for trial in product.trials),
                    rps_ratio=_ratio(own.get("rps"), base.get("rps")),
                    p99_ratio=_ratio(own.get("p99_ms"), base.get("p99_ms")),
                    cpu_us_per_req=own.get("cpu_us_per_req"),
                    load_tool_cores=own.get("load_tool_cores"),
                    backend_cores=own.get("backend_cores"),
                    lost=lost,
                    late=late,
                    loss_rate=loss_rate,
                )
            )
    return summaries


def _losses(product: ProductRun) -> tuple[int | None, int | None, float | None]:
    """UDP datagrams lost and late over the product's trials, and the lost share of those sent;
    all None when no trial counted them (the other profiles)."""
    counted = [trial for trial in product.trials if trial.lost is not None]
    if not counted:
        return None, None, None
    lost = sum(trial.lost or 0 for trial in counted)
    late = sum(trial.late or 0 for trial in counted)
    sent = lost + sum(trial.requests for trial in counted)
    return lost, late, lost / sent if sent else None


def _medians(product: ProductRun) -> dict[str, float | None]:
    trials = product.trials
    medians: dict[str, float | None] = {"rps": _median([trial.rps for trial in trials])}
    for name in LATENCIES:
        medians[name] = _median([getattr(trial, name) for trial in trials])
    medians["cpu_us_per_req"] = _median(
        [trial.cpu_us_per_request for trial in trials if trial.cpu_us_per_request is not None]
    )
    for name in ("load_tool_cores", "backend_cores"):
        values = [getattr(trial, name) for trial in trials]
        medians[name] = _median([value for value in values if value is not None])
    return medians


def _find(summaries: list[Summary], profile: str, product: str) -> Summary | None:
    for summary in summaries:
        if summary.profile == profile and summary.product == product and summary.rps:
            return summary
    return None


def _judge(
    scenario: str,
    pair: tuple[Summary | None, Summary | None],
    targets: tuple[float, float | None],
    *,
    at_most: bool = False,
) -> Verdict:
    """Compare ``pair[0]`` to ``pair[1]``: throughput ≥ (or ≤ with ``at_most``), p99 ≤."""
    measured, base = pair
    throughput_target, p99_target = targets
    sign = "≤" if at_most else "≥"
    p99_text = f"≤ {p99_target:g}" if p99_target is not None else "—"
    if measured is None or base is None:
        return Verdict(
            scenario, None, f"{sign} {throughput_target:g}", None, p99_text, "n/a", "not measured"
        )
    throughput = _ratio(measured.rps, base.rps)
    p99 = _ratio(measured.p99_ms, base.p99_ms)
    misses: list[str] = []
    if throughput is not None and (
        throughput > throughput_target if at_most else throughput < throughput_target
    ):
        misses.append("throughput")
    if p99_target is not None and p99 is not None and p99 > p99_target:
        misses.append("p99")
    errors = measured.errors + base.errors
    if errors:
        misses.append(f"{errors} load errors")
    lost = [f"{s.product} {s.lost:,}" for s in (measured, base) if s.lost]
    losses = [f"datagrams lost: {', '.join(lost)}"] if lost else []
    note = ", ".join(misses + losses)
    return Verdict(
        scenario,
        throughput,
        f"{sign} {throughput_target:g}",
        p99 if p99_target is not None else None,
        p99_text,
        "MISS" if misses else "PASS",
        note,
    )


def _judge_cpu(scenario: str, measured: Summary | None, limit: float) -> Verdict:
    """``measured``'s median CPU µs per request against ``limit`` (at most)."""
    target = f"≤ {limit:g}"
    cpu = measured.cpu_us_per_req if measured is not None else None
    if measured is None or cpu is None:
        return Verdict(scenario, None, "—", None, "—", "n/a", "not measured", None, target)
    misses = ["CPU"] if cpu > limit else []
    if measured.errors:
        misses.append(f"{measured.errors} load errors")
    verdict = "MISS" if misses else "PASS"
    return Verdict(scenario, None, "—", None, "—", verdict, ", ".join(misses), cpu, target)


def verdicts(summaries: list[Summary], peers: tuple[str, ...]) -> list[Verdict]:
    """The SPEC §15 and issue #15 rows this harness covers."""
    get1 = plan.GET_1W.name
    rows = [
        _judge(
            scenario,
            (_find(summaries, profile, product), _find(summaries, profile, plan.NGINX)),
            (throughput, p99),
        )
        for scenario, profile, product, throughput, p99 in NGINX_ROWS
    ]
    measured_peers = [found for name in peers if (found := _find(summaries, get1, name))]
    best = max(measured_peers, key=lambda summary: summary.rps or 0.0, default=None)
    label = f"best Python peer ({best.product}) ÷ a3s-1w" if best else "best Python peer ÷ a3s-1w"
    rows.append(
        _judge(
            f"HTTP/1.1 GET, {label}",
            (best, _find(summaries, get1, plan.A3S_1W)),
            (0.5, None),
            at_most=True,
        )
    )
    rows.append(
        _judge(
            "HTTP/1.1 GET, 1000 routers ÷ 10 routers (a3s-1w)",
            (
                _find(summaries, plan.ROUTERS_1000.name, plan.A3S_1W),
                _find(summaries, plan.ROUTERS_10.name, plan.A3S_1W),
            ),
            (0.83, 1.2),
        )
    )
    rows.append(
        _judge(
            "README example chain (jwt + rate-limit) ÷ bare route (a3s-1w)",
            (
                _find(summaries, plan.README_CHAIN.name, plan.A3S_1W),
                _find(summaries, get1, plan.A3S_1W),
            ),
            (0.8, 1.3),
        )
    )
    rows.append(
        _judge_cpu(
            "Issue #15: CPU per proxied GET (a3s-1w in get-42b-1w: 1 worker, default config "
            "but the access log), µs",
            _find(summaries, get1, plan.A3S_1W),
            CPU_TARGET_US,
        )
    )
    rows.append(
        _judge(
            f"Issue #15: HTTP/1.1 GET 42 B, 1 worker (a3s-1w ÷ {AIOHTTP_PEER} proxy)",
            (_find(summaries, get1, plan.A3S_1W), _find(summaries, get1, AIOHTTP_PEER)),
            (1.0, None),
        )
    )
    return rows


def record(
    *,
    meta: dict[str, object],
    environment: dict[str, object],
    profiles: list[ProfileRun],
    summaries: list[Summary],
    rows: list[Verdict],
) -> dict[str, object]:
    """The JSON document of one run."""
    return {
        "meta": meta,
        "environment": environment,
        "profiles": [dataclasses.asdict(profile) for profile in profiles],
        "summary": [dataclasses.asdict(summary) for summary in summaries],
        "targets": [dataclasses.asdict(row) for row in rows],
    }


def write_json(document: dict[str, object], *paths: Path) -> None:
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    for path in paths:
        path.write_text(text)


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio_text(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown(
    *,
    meta: dict[str, object],
    environment: dict[str, object],
    summaries: list[Summary],
    rows: list[Verdict],
    peer_notes: dict[str, str],
) -> str:
    """``latest.md``: the command and machine, the results table, the SPEC §15 verdicts."""
    lines = [
        *_header_lines(meta, environment),
        *_result_lines(summaries),
        *_side_lines(summaries),
        *_loss_lines(summaries),
        *_target_lines(rows),
        *_note_lines(summaries, peer_notes),
    ]
    return "\n".join(lines) + "\n"


def _header_lines(meta: dict[str, object], environment: dict[str, object]) -> list[str]:
    """The title, the command, the machine and the versions, and how to read the table."""
    gateway_info = environment.get("gateway")
    commit = subject = dirty = override = "?"
    digest = ""
    if isinstance(gateway_info, dict):
        commit = str(gateway_info.get("commit", "?"))[:12]
        subject = str(gateway_info.get("subject", ""))
        dirty = str(gateway_info.get("dirty", "?"))
        override = str(gateway_info.get("source_override") or "no")
        if gateway_info.get("source_sha256"):
            digest = f", source digest `{gateway_info['source_sha256']}` (`.py` files, SHA-256)"
    return [
        "# a3s_gateway HTTP benchmark (latest run)",
        "",
        f"- Command: `{meta['command']}` (started {meta['started_utc']}, "
        f"{meta['trials']} × {meta['duration_s']} s trials after {meta['warmup_s']} s warm-up, "
        f"wrk {meta['connections']} connections × {meta['wrk_threads']} threads"
        f"{_h2load_shape(meta)}{_streamload_shape(meta)})",
        f"- Machine: {environment['cpu_model']}, {environment['cpu_count']} CPUs "
        f"(affinity {environment['sched_getaffinity']}), {environment['memory']}, "
        f"{environment['kernel']}",
        f"- CPU pinning: {environment['pinning']}",
        f"- Load average at start / end: {environment['load_average_start']} / "
        f"{environment.get('load_average_end', '?')}",
        f"- Versions: {environment['nginx']}; {environment['wrk']}; "
        f"{environment.get('h2load', 'h2load ?')}; Python {environment['python']}",
        f"- Gateway: commit `{commit}` ({subject}), uncommitted changes in its tree: {dirty}, "
        f"A3S_BENCH_GATEWAY_SRC: {override}{digest}",
        "",
        "Medians over trials. Ratios are product ÷ NGINX of the same profile (throughput: "
        "higher is better; p99: lower is better). `direct` is the load tool straight at the "
        "upstream (at the gRPC backend in the gRPC profile). "
        "CPU µs/req is the CPU time (user + system, from `/proc/<pid>/stat`) of the product's "
        "processes (the one started and its descendants: NGINX's master and workers, the "
        "gateway's supervisor and workers) during the measured load run ÷ the requests "
        "completed in it. "
        "Errors are wrk's connect/read/write/timeout errors plus responses with status ≥ 400; "
        "in the HTTP/2 profiles (h2load) failed streams, responses other than 2xx and 3xx, and "
        "responses without their body (a gRPC error has none). The HTTP/2 profiles' "
        "percentiles come from h2load's per-request log (`--log-file`).",
        *_streamload_note(meta),
        "",
    ]


def _result_lines(summaries: list[Summary]) -> list[str]:
    """The results table: one row per product per profile."""
    lines = [
        "| profile | product | req/s | ratio to NGINX | p50 ms | p90 ms | p99 ms | p99 ratio "
        "| CPU µs/req | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for summary in summaries:
        if summary.status != "ok" and summary.rps is None:
            reason = (summary.reason or summary.status).splitlines()[0][:120]
            lines.append(
                f"| {summary.profile} | {summary.product} | {summary.status}: {reason} "
                "| | | | | | | |"
            )
            continue
        flag = "" if summary.status == "ok" else f" ({summary.status})"
        lines.append(
            f"| {summary.profile} | {summary.product}{flag} | {_num(summary.rps, 0)} "
            f"| {_ratio_text(summary.rps_ratio)} | {_num(summary.p50_ms)} "
            f"| {_num(summary.p90_ms)} | {_num(summary.p99_ms)} "
            f"| {_ratio_text(summary.p99_ratio)} | {_num(summary.cpu_us_per_req, 0)} "
            f"| {summary.errors} |"
        )
    return lines


def _side_lines(summaries: list[Summary]) -> list[str]:
    """The streaming profiles' load tool and backend CPU (nothing when none was measured)."""
    measured = [
        summary
        for summary in summaries
        if summary.load_tool_cores is not None or summary.backend_cores is not None
    ]
    if not measured:
        return []
    lines = [
        "",
        "Streaming and echo profiles, CPU of the load tool and of the backend during the "
        "measured runs (cores: CPU time ÷ duration, medians; one near 1.0 was the limit, not "
        "the product):",
        "",
        "| profile | product | streamload client cores | backend cores |",
        "|---|---|---:|---:|",
    ]
    lines += [
        f"| {summary.profile} | {summary.product} | {_num(summary.load_tool_cores)} "
        f"| {_num(summary.backend_cores)} |"
        for summary in measured
    ]
    return lines


def _loss_lines(summaries: list[Summary]) -> list[str]:
    """The UDP profile's datagrams lost and late per product (nothing without UDP rows)."""
    counted = [summary for summary in summaries if summary.lost is not None]
    if not counted:
        return []
    lines = [
        "",
        f"UDP datagrams lost (no echo within {streamload.RETRY_SECONDS * 1000:.0f} ms: counted, "
        "then the socket's next datagram sent) and late (the echo of a lost one, after that), "
        "summed over the measured runs; loss rate = lost ÷ (lost + echoed):",
        "",
        "| profile | product | lost | late | loss rate |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {summary.profile} | {summary.product} | {summary.lost:,} | {summary.late or 0:,} "
        f"| {_percent(summary.loss_rate)} |"
        for summary in counted
    ]
    return lines


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.3f} %"


def _target_lines(rows: list[Verdict]) -> list[str]:
    """The verdicts table of the target rows."""
    lines = [
        "",
        "## Targets covered by this run (SPEC §15, issue #15)",
        "",
        "| scenario | throughput ratio | target | p99 ratio | target | CPU µs/req | target "
        "| verdict |",
        "|---|---:|---|---:|---|---:|---|---|",
    ]
    for row in rows:
        verdict = f"**{row.verdict}**" + (f" ({row.note})" if row.note else "")
        lines.append(
            f"| {row.scenario} | {_ratio_text(row.throughput_ratio)} | {row.throughput_target} "
            f"| {_ratio_text(row.p99_ratio)} | {row.p99_target} "
            f"| {_num(row.cpu_us_per_req, 0)} | {row.cpu_target} | {verdict} |"
        )
    return lines


def _note_lines(summaries: list[Summary], peer_notes: dict[str, str]) -> list[str]:
    """The notes: errors, failed products, peers not measured (nothing when all went well)."""
    notes = [
        f"- **This run has errors**: {summary.profile}/{summary.product}: "
        f"{summary.errors} over {summary.trials} trial(s)."
        for summary in summaries
        if summary.errors
    ]
    notes += [
        f"- {summary.profile}/{summary.product}: {summary.status}: "
        f"{(summary.reason or '').splitlines()[0][:300] if summary.reason else ''}"
        for summary in summaries
        if summary.status == "failed"
    ]
    notes += [f"- Peer {name} not measured: {reason}" for name, reason in peer_notes.items()]
    return ["", "## Notes", "", *notes] if notes else []


def _h2load_shape(meta: dict[str, object]) -> str:
    """``; h2load …`` when the run's meta records h2load's shape (runs with HTTP/2 profiles)."""
    shape = meta.get("h2load")
    if not isinstance(shape, dict):
        return ""
    return (
        f"; HTTP/2 profiles: h2load {shape.get('clients')} connections × "
        f"{shape.get('streams')} streams, {shape.get('threads')} threads"
    )


def _streamload_shape(meta: dict[str, object]) -> str:
    """``; streaming profiles: …`` and ``; echo profiles: …`` for the kinds the run's meta
    records streamload's shape of."""
    shape = meta.get("streamload")
    if not isinstance(shape, dict):
        return ""
    text = ""
    if "websocket_message_bytes" in shape:
        text += (
            f"; streaming profiles: streamload {shape.get('connections')} connections "
            f"({shape.get('websocket_message_bytes')}-byte WebSocket messages, "
            f"{shape.get('sse_event_bytes')}-byte SSE events, at most {shape.get('sse_window')} "
            "in flight per stream)"
        )
    if "echo_message_bytes" in shape:
        retry = shape.get("udp_retry_s")
        retry_ms = f"{retry * 1000:.0f}" if isinstance(retry, float | int) else "?"
        text += (
            f"; echo profiles: streamload {shape.get('connections')} TCP connections or UDP "
            f"sockets ({shape.get('echo_message_bytes')}-byte messages, one outstanding each; "
            f"UDP retry after {retry_ms} ms)"
        )
    return text


def _streamload_note(meta: dict[str, object]) -> list[str]:
    """How to read the streaming and echo profiles' rows (nothing when the run has none)."""
    shape = meta.get("streamload")
    if not isinstance(shape, dict):
        return []
    lines = _streaming_note() if "websocket_message_bytes" in shape else []
    return lines + (_echo_note() if "echo_message_bytes" in shape else [])


def _echo_note() -> list[str]:
    """How to read the TCP and UDP echo profiles' rows."""
    return [
        "",
        "In the echo profiles (`tcp-echo-32b-1w`, `udp-echo-32b-1w`; load tool and backends "
        "`bench/tools/streamload.c`) req/s is messages echoed per second: each of 64 TCP "
        "connections, or each of 64 connected UDP sockets, sends its next 32-byte message once "
        "the last one's echo is back, and a message's latency runs from its send to its echo. "
        "NGINX proxies with its `stream` module (`proxy_pass` to an `upstream` of the echo "
        "backend; `listen … udp` with one session per client socket), the gateway with a "
        "`tcp` entrypoint and `tcp_routers` rule ``HostSNI(`*`)`` or a `udp` entrypoint and "
        "`udp_routers`; `direct` is streamload straight at its echo backend (the ceiling). "
        "Every TCP connection and UDP socket gets one echo before the measured window. A UDP "
        "datagram whose echo does not come within the retry time is counted as lost and the "
        "socket's next one sent (the loop never stalls); losses are not errors but are "
        "tabled below. Errors are failed connections, socket errors and wrong echoes.",
    ]


def _streaming_note() -> list[str]:
    """How to read the WebSocket and SSE profiles' rows."""
    return [
        "",
        "In the streaming profiles (`ws-echo-32b-1w`, `sse-events-1w`; load tool and backends "
        "`bench/tools/streamload.c`) req/s is WebSocket messages echoed per second (each "
        "connection sends its next message once the last one's echo is back) or SSE events "
        "received per second, CPU µs/req is per message or event, and `direct` is streamload "
        "straight at its own backend (the ceiling). A WebSocket message's latency runs from "
        "its send to its echo; an SSE event's from the time stamp the backend wrote into it "
        "to its arrival. The SSE backend writes each event as its own chunk and `send()` as "
        "fast as the socket takes them, but keeps at most a window of events per stream in "
        "flight (the client reports what it received over a side channel), so both profiles "
        "are closed loops with a fixed number in flight, like wrk's, and a proxy slower than "
        "the backend shows as latency ≈ events in flight ÷ its rate, not as seconds of "
        "events queued in socket buffers. Errors are connections that failed or timed out "
        "(no echo or no byte for 5 s), wrong echoes and malformed events.",
    ]


def chart(summaries: list[Summary], path: Path, *, title: str) -> None:
    """A bar chart of throughput ratios to NGINX per profile, with SPEC §15 target lines.

    ``direct`` (the upstream's own ceiling, about 2× NGINX) is left out so the products stay
    readable; it is in the table.
    """
    import matplotlib  # heavy: imported only once a run is done

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after choosing the backend

    profiles = list(dict.fromkeys(summary.profile for summary in summaries))
    bars = {
        profile: [
            summary
            for summary in summaries
            if summary.profile == profile
            and summary.product not in (plan.NGINX, plan.DIRECT)
            and summary.rps_ratio is not None
        ]
        for profile in profiles
    }
    width = max((len(items) for items in bars.values()), default=1) or 1
    figure, axes = plt.subplots(figsize=(max(8.0, 1.8 * len(profiles) + 3), 5.0))
    colours = {plan.A3S_1W: "#1f77b4", plan.A3S_NW: "#2ca02c"}
    step = 0.8 / width
    highest = 0.3
    for index, profile in enumerate(profiles):
        items = bars[profile]
        start = index - 0.4 + step * (width - len(items)) / 2
        for offset, summary in enumerate(items):
            x = start + step * (offset + 0.5)
            ratio = summary.rps_ratio or 0.0
            highest = max(highest, ratio)
            axes.bar(x, ratio, width=step * 0.9, color=colours.get(summary.product, "#ff7f0e"))
            crowded = len(items) > 2  # side-by-side labels would overlap: write them upwards
            axes.annotate(
                f"{summary.product} {ratio:.3f}" if crowded else f"{summary.product}\n{ratio:.3f}",
                (x, ratio),
                xytext=(0, 2),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90 if crowded else 0,
            )
        target = TARGET_LINES.get(profile)
        if target is not None:
            axes.hlines(target, index - 0.45, index + 0.45, colors="#d62728", linestyles="--")
            axes.annotate(
                f"SPEC §15 target {target:g}",
                (index - 0.44, target),
                xytext=(0, 2),
                textcoords="offset points",
                fontsize=7,
                color="#d62728",
            )
    if highest >= 0.9:
        axes.axhline(1.0, color="#555555", linewidth=0.8)
    axes.set_ylim(0, highest * 1.25)
    axes.set_xlim(-0.5, len(profiles) - 0.5)
    axes.set_xticks(range(len(profiles)), profiles)
    axes.set_ylabel("throughput ÷ NGINX (same profile)")
    axes.set_title(title, fontsize=8, wrap=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
