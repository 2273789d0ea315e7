"""``wrk`` runs: the Lua script of a profile and the JSON its ``done`` callback prints.

The script sets the method, body and ``Host`` of the profile's request and, in
``done(summary, latency, requests)``, prints one line ``WRKJSON {...}``: requests, duration,
bytes, the error counters (connect, read, write, status, timeout) and latency percentiles in
microseconds. wrk counts a response with status > 399 as a ``status`` error; 1xx and 3xx are not
counted by wrk, which is why every product is first checked with one real request that must
answer 200 with the expected body size (``runner.preflight``). No ``response`` callback is
defined: it would make wrk parse every response into Lua and slow the client down.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from pathlib import Path

WRK: Final = "wrk"
MARKER: Final = "WRKJSON "
TIMEOUT_SECONDS: Final = 2
DONE_LUA: Final = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,'
    .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
    .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,'
    .. '"p50":%d,"p90":%d,"p99":%d,"max":%d}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


class WrkError(Exception):
    """wrk exited badly or printed no ``WRKJSON`` line."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One load run: wrk's, or h2load's in the same shape (``h2load.result``). Latencies are in
    microseconds."""

    requests: int
    duration_us: int
    bytes: int
    errors: dict[str, int]
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    mean_us: float

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())


def write_script(
    path: Path,
    *,
    method: str,
    body_bytes: int,
    host: str | None,
    headers: dict[str, str] | None = None,
) -> Path:
    """Write the Lua script for one request shape to ``path`` (``headers``: extra fields)."""
    lines = [f'wrk.method = "{method}"']
    if body_bytes:
        lines += [
            f'wrk.body = string.rep("b", {body_bytes})',
            'wrk.headers["Content-Type"] = "application/octet-stream"',
        ]
    if host is not None:
        lines.append(f'wrk.headers["Host"] = "{host}"')
    for name, value in (headers or {}).items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    path.write_text("\n".join(lines) + "\n" + DONE_LUA)
    return path


def parse(stdout: str) -> WrkResult:
    """The result in wrk's output; raises ``WrkError`` when the JSON line is missing."""
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            data = json.loads(line[len(MARKER) :])
            errors = data["errors"]
            latency = data["latency_us"]
            return WrkResult(
                requests=int(data["requests"]),
                duration_us=int(data["duration_us"]),
                bytes=int(data["bytes"]),
                errors={str(key): int(value) for key, value in errors.items()},
                p50_us=int(latency["p50"]),
                p90_us=int(latency["p90"]),
                p99_us=int(latency["p99"]),
                max_us=int(latency["max"]),
                mean_us=float(latency["mean"]),
            )
    raise WrkError(f"no {MARKER.strip()} line in wrk's output:\n{stdout[-2000:]}")


def run(url: str, *, script: Path, seconds: float, connections: int, threads: int) -> WrkResult:
    """Run wrk against ``url`` for ``seconds`` (bounded by a subprocess timeout)."""
    argv = [
        WRK,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={TIMEOUT_SECONDS}s",
        "-s",
        str(script),
        url,
    ]
    try:
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise WrkError(f"wrk did not finish within {seconds + 30:.0f} s") from error
    if result.returncode != 0:
        raise WrkError(f"wrk exited {result.returncode}: {result.stderr.strip()[-1000:]}")
    return parse(result.stdout)
