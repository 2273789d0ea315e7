"""Micro-benchmark: the access log's cost per request (SPEC §9.2), no sockets.

*Encoding* (``observability/accesslog.py``): ``encode_line`` for a proxied 200 (user agent,
upstream time, request id, trace ids), a minimal 404 and a line with its query, and
``format_ts`` with the per-second prefix cached (requests in the same second) and missed
(a new second each call).

*Queueing* (``server/accesslog_writer.py``): what the request's task pays in ``AccessLog.submit``
(encode, then ``send_nowait`` into the bounded channel), against the alternative of queueing
the record and leaving the encoding to the writer (``send_nowait`` alone), and what that
alternative would cost the writer in one step for a full default backlog of 10 000 records,
time during which the event loop runs nothing else. This is the measurement behind the choice
made in ``server/accesslog_writer.py`` (encode in ``submit``).

*End to end*: lines submitted in bursts of 1 000 through a running ``AccessLog`` into a file
in a temporary directory, until written (one thread hop and one write per batch), per line.

Reports microseconds per operation, the median over rounds and the best round (on a shared
machine the best is the steadier figure). Runs alone with
``python -m bench.micro.accesslog_bench [--quick]``.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.observability.accesslog import encode_line, format_ts
from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.server.accesslog_writer import AccessLog

if TYPE_CHECKING:
    from collections.abc import Callable

WALL: Final = 1796223845.123
BACKLOG: Final = 10_000
BURST: Final = 1_000


def proxied() -> ExchangeRecord:
    """A proxied GET answered 200 by its backend, with the fields a real request fills."""
    record = ExchangeRecord("web", 100.0)
    record.ended = 100.0042
    record.wall = WALL
    record.router = "api"
    record.service = "api-backend"
    record.backend = "http://10.0.0.12:8080"
    record.client_ip = "203.0.113.7"
    record.peer_ip = "10.0.0.2"
    record.method = b"GET"
    record.host = b"api.example.com"
    record.path = b"/api/items/1234"
    record.query = b"page=2&sort=name"
    record.status = 200
    record.response_bytes = 1834
    record.upstream_started = 100.0005
    record.upstream_head = 100.0031
    record.attempts = 1
    record.request_id = b"5f0c3a9be8d14e5b9c2f7a1d3e6b8c40"
    record.trace_id = b"4bf92f3577b34da6a3ce929d0e0e4736"
    record.span_id = b"00f067aa0ba902b7"
    record.user_agent = b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
    return record


def not_found() -> ExchangeRecord:
    """A request no router matched: 404, nothing upstream."""
    record = ExchangeRecord("web", 100.0)
    record.ended = 100.0001
    record.wall = WALL
    record.client_ip = record.peer_ip = "203.0.113.7"
    record.method = b"GET"
    record.host = b"example.com"
    record.path = b"/missing"
    record.status = 404
    record.response_bytes = 22
    record.error = "no_route"
    return record


def verify() -> None:
    """Check the measured lines once, so an error path is never what gets timed."""
    line = json.loads(encode_line(proxied(), include_query=True))
    if line["status"] != 200 or line["query"] != "page=2&sort=name" or line["upstream_ms"] != 2.6:
        raise AssertionError(f"unexpected line {line!r}")
    if "query" in json.loads(encode_line(not_found(), include_query=False)):
        raise AssertionError("query logged without include_query")
    if format_ts(WALL) != "2026-12-02T15:04:05.123Z":
        raise AssertionError(f"ts {format_ts(WALL)!r}")


def us_per_op(op: Callable[[], object], rounds: int, ops: int) -> list[float]:
    """The mean time of one ``op()`` in each of ``rounds`` rounds, in microseconds."""
    for _ in range(min(ops, 1000)):  # warm up
        op()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(ops):
            op()
        samples.append((time.perf_counter_ns() - start) / ops / 1000)
    return samples


def _ts_new_second() -> Callable[[], object]:
    wall = [WALL]

    def op() -> object:
        wall[0] += 1.0
        return format_ts(wall[0])

    return op


def _submit_inline(ops: int) -> Callable[[], object]:
    """``AccessLog.submit`` with room for ``ops`` lines and no writer: the request's share."""
    access_log = AccessLog("", ops)
    record = proxied()
    return lambda: access_log.submit(record)


def _submit_deferred(ops: int) -> Callable[[], object]:
    """The alternative: queue the record itself and leave the encoding to the writer."""
    send, _receive = trio.open_memory_channel[ExchangeRecord](ops)
    record = proxied()
    return lambda: send.send_nowait(record)


def queue_us(make: Callable[[int], Callable[[], object]], rounds: int, ops: int) -> list[float]:
    """Like ``us_per_op`` with a fresh queue of ``ops`` entries per round (a first round, not
    counted, warms up)."""
    samples = []
    for _ in range(rounds + 1):
        op = make(ops)
        start = time.perf_counter_ns()
        for _ in range(ops):
            op()
        samples.append((time.perf_counter_ns() - start) / ops / 1000)
    return samples[1:]


def _backlog() -> Callable[[], object]:
    """The deferred design's writer step: encode a full backlog in one go."""
    records = [proxied() for _ in range(BACKLOG)]

    def op() -> object:
        return [encode_line(record, include_query=False) for record in records]

    return op


def end_to_end_us(rounds: int, bursts: int) -> list[float]:
    """Microseconds per line through a running ``AccessLog`` into a temporary file."""

    async def one_round(path: str) -> float:
        access_log = AccessLog(path, BURST * 2)
        record = proxied()
        async with trio.open_nursery() as nursery:
            await nursery.start(access_log.run)
            start = time.perf_counter_ns()
            for _ in range(bursts):
                for _ in range(BURST):
                    access_log.submit(record)
                await access_log.flush()
            elapsed = time.perf_counter_ns() - start
            await access_log.aclose()
        if access_log.dropped or access_log.written != bursts * BURST:
            raise AssertionError(f"written {access_log.written}, dropped {access_log.dropped}")
        return elapsed / (bursts * BURST) / 1000

    with tempfile.TemporaryDirectory() as directory:
        path = str(Path(directory) / "access.log")
        return [trio.run(one_round, path) for _ in range(rounds)]


def run(*, quick: bool = False) -> list[dict[str, object]]:
    """One row per measured operation, microseconds per operation."""
    verify()
    rounds, ops = (3, 5_000) if quick else (7, 50_000)
    record, missing = proxied(), not_found()
    measured: dict[str, tuple[Callable[[], object], int]] = {
        "encode_line: proxied 200 (UA, upstream, ids)": (
            lambda: encode_line(record, include_query=False),
            ops,
        ),
        "encode_line: 404, no upstream, no UA": (
            lambda: encode_line(missing, include_query=False),
            ops,
        ),
        "encode_line: proxied 200 with its query": (
            lambda: encode_line(record, include_query=True),
            ops,
        ),
        "format_ts: same second (cached prefix)": (lambda: format_ts(WALL), ops),
        "format_ts: a new second each call": (_ts_new_second(), ops),
        f"deferred writer step: {BACKLOG} records encoded at once": (
            _backlog(),
            max(1, ops // BACKLOG),
        ),
    }
    rows: list[dict[str, object]] = []
    for name, (op, count) in measured.items():
        samples = us_per_op(op, rounds, count)
        rows.append(_row(name, rounds, count, statistics.median(samples), min(samples)))
    queued = {
        "submit, encode inline (chosen): encode + send_nowait": _submit_inline,
        "submit, deferred (rejected): send_nowait of the record": _submit_deferred,
    }
    for name, make in queued.items():
        samples = queue_us(make, rounds, ops)
        rows.append(_row(name, rounds, ops, statistics.median(samples), min(samples)))
    bursts = 5 if quick else 20
    samples = end_to_end_us(rounds, bursts)
    rows.append(
        _row(
            f"end to end: bursts of {BURST} lines to a file, per line",
            rounds,
            bursts * BURST,
            statistics.median(samples),
            min(samples),
        )
    )
    return rows


def _row(name: str, rounds: int, ops: int, median: float, best: float) -> dict[str, object]:
    return {
        "case": name,
        "rounds": rounds,
        "ops_per_round": ops,
        "us_per_op": round(median, 3),
        "us_best": round(best, 3),
    }


def main() -> None:
    quick = "--quick" in sys.argv[1:]
    print(f"{'case':<60}{'µs/op':>12}{'best':>12}")
    for row in run(quick=quick):
        print(f"{row['case']!s:<60}{row['us_per_op']:>12.3f}{row['us_best']:>12.3f}")


if __name__ == "__main__":
    main()
