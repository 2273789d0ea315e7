"""``h2load`` runs (nghttp2's HTTP/2 load generator): its command, summary and per-request log.

Each run is timing-based (``-D SECONDS``) with ``-c CLIENTS`` connections, ``-m STREAMS``
concurrent streams on each and ``-t THREADS`` threads, so ``-c 4 -m 16`` keeps 64 requests in
flight as wrk's 64 connections do. Plain ``http://`` URLs are HTTP/2 with prior knowledge
(h2c), ``https://`` ones negotiate ``h2`` by ALPN. A gRPC request is a POST of a file (``-d``)
with ``content-type: application/grpc`` and ``te: trailers``.

What is read, from h2load 1.52:

- the summary lines: ``finished in 3.01s, …`` (the measured duration), ``requests: … done, …
  succeeded, … failed, … errored, … timeout``, ``status codes: … 2xx, … 3xx, … 4xx, … 5xx`` and
  ``traffic: … (N) total, … (N) data``. h2load itself prints only min, max, mean and standard
  deviation of the request times, no percentiles;
- so the latencies come from ``--log-file``: one line per finished request, tab-separated,
  ``start (µs since the epoch)``, ``status`` (-1 for a failed stream) and ``µs until the end of
  the response``. p50, p90 and p99 are nearest-rank percentiles over every request with a
  status (as wrk's cover every response, whatever its status), the mean and max over the same.

Counts mirror wrk's: ``requests`` are the streams that ended with a complete response, whatever
its status (h2load's ``done - errored``, which is also what its own req/s divides), and the
errors are ``status`` (responses other than 2xx and 3xx), ``stream`` (streams reset or cut off,
h2load's ``errored``), ``timeout`` and ``body``: responses that came without their body, as far
as the DATA bytes received fall short of ``requests × expected size`` (a gRPC error is a 200
whose trailers carry the status and whose body is empty; h2load does not read trailers). The
body count is a lower bound: the bytes of streams still open when the run stops can hide up to
``clients × streams`` missing bodies.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from bench.harness.wrk import WrkError, WrkResult

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path

H2LOAD: Final = "h2load"
#: The SPEC §15 shape of the HTTP/2 rows: 4 connections × 16 concurrent streams.
CLIENTS: Final = 4
STREAMS: Final = 16
_FINISHED: Final = re.compile(r"^finished in ([0-9.]+)(us|ms|s|m|h),", re.MULTILINE)
_REQUESTS: Final = re.compile(
    r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout",
    re.MULTILINE,
)
_STATUS: Final = re.compile(
    r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", re.MULTILINE
)
_TRAFFIC: Final = re.compile(r"^traffic: .*?\((\d+)\) total, .*\((\d+)\) data", re.MULTILINE)
_UNIT_US: Final = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


class H2loadError(WrkError):
    """h2load exited badly, printed no summary, or its log has no request."""


@dataclass(frozen=True, slots=True)
class Request:
    """The request of a profile: method and body come from ``data`` (a POST when set)."""

    headers: tuple[tuple[str, str], ...] = ()
    #: A file h2load posts with every request (``-d``); None for a GET.
    data: Path | None = None
    #: The body size each response must have (the ``body`` error count).
    response_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Summary:
    """The numbers of h2load's summary lines."""

    duration_us: float
    done: int
    failed: int
    errored: int
    timeout: int
    status: tuple[int, int, int, int]  # 2xx, 3xx, 4xx, 5xx
    total_bytes: int
    data_bytes: int


def parse_summary(stdout: str) -> Summary:
    """The summary in h2load's output; raises ``H2loadError`` when a line is missing."""
    finished = _FINISHED.search(stdout)
    requests = _REQUESTS.search(stdout)
    status = _STATUS.search(stdout)
    traffic = _TRAFFIC.search(stdout)
    if finished is None or requests is None or status is None or traffic is None:
        raise H2loadError(f"no summary in h2load's output:\n{stdout[-2000:]}")
    counts = [int(value) for value in requests.groups()]
    codes = [int(value) for value in status.groups()]
    return Summary(
        duration_us=float(finished.group(1)) * _UNIT_US[finished.group(2)],
        done=counts[2],
        failed=counts[4],
        errored=counts[5],
        timeout=counts[6],
        status=(codes[0], codes[1], codes[2], codes[3]),
        total_bytes=int(traffic.group(1)),
        data_bytes=int(traffic.group(2)),
    )


def read_log(lines: Iterable[str]) -> list[int]:
    """The response times (µs) of the log's requests that got a status, sorted."""
    times: list[int] = []
    for line in lines:
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1].strip() != "-1":
            times.append(int(fields[2]))
    times.sort()
    return times


def percentile(ordered: list[int], share: float) -> int:
    """Nearest-rank percentile ``share`` (0–100) of the sorted ``ordered`` (not empty)."""
    rank = max(1, math.ceil(share / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def result(summary: Summary, times: list[int], response_bytes: int) -> WrkResult:
    """One run's ``WrkResult`` (the harness's record of a load run) from its two outputs."""
    if not times:
        raise H2loadError(
            f"h2load logged no finished request ({summary.done} done, {summary.errored} errored)"
        )
    requests = summary.done - summary.errored
    missing = 0
    if response_bytes and summary.data_bytes < requests * response_bytes:
        missing = math.ceil((requests * response_bytes - summary.data_bytes) / response_bytes)
    errors = {
        "status": summary.status[2] + summary.status[3] + _unstatused(summary, requests),
        "stream": summary.errored,
        "timeout": summary.timeout,
        "body": missing,
    }
    return WrkResult(
        requests=requests,
        duration_us=round(summary.duration_us),
        bytes=summary.total_bytes,
        errors=errors,
        p50_us=percentile(times, 50),
        p90_us=percentile(times, 90),
        p99_us=percentile(times, 99),
        max_us=times[-1],
        mean_us=round(sum(times) / len(times), 1),
    )


def _unstatused(summary: Summary, requests: int) -> int:
    """Complete responses h2load put in no status class (1xx, ≥ 600): failed all the same."""
    return max(0, requests - sum(summary.status))


def command(
    url: str,
    request: Request,
    *,
    seconds: float,
    threads: int,
    log: Path,
    clients: int = CLIENTS,
    streams: int = STREAMS,
) -> list[str]:
    """The argv of one timed run writing its per-request log to ``log``."""
    argv = [
        H2LOAD,
        f"--duration={max(1, round(seconds))}",
        f"--clients={clients}",
        f"--max-concurrent-streams={streams}",
        f"--threads={max(1, min(threads, clients))}",
        f"--log-file={log}",
    ]
    if request.data is not None:
        argv.append(f"--data={request.data}")
    for name, value in request.headers:
        argv.append(f"--header={name}: {value}")
    return [*argv, url]


def run(url: str, request: Request, *, seconds: float, threads: int, log: Path) -> WrkResult:
    """Run h2load against ``url`` for ``seconds`` (bounded by a subprocess timeout); the
    per-request log is read and removed."""
    argv = command(url, request, seconds=seconds, threads=threads, log=log)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise H2loadError(f"h2load did not finish within {seconds + 30:.0f} s") from error
    try:
        if done.returncode != 0:
            tail = (done.stderr.strip() or done.stdout.strip())[-1000:]
            raise H2loadError(f"h2load exited {done.returncode}: {tail}")
        summary = parse_summary(done.stdout)
        with log.open(encoding="ascii") as lines:
            times = read_log(lines)
    except OSError as error:
        raise H2loadError(f"h2load's log {log}: {error}") from error
    finally:
        log.unlink(missing_ok=True)
    return result(summary, times, request.response_bytes)
