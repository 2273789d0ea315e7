"""``bench.harness.h2load``: h2load 1.52's summary and per-request log → the run's numbers.

The outputs in ``h2load-clean.txt`` and ``h2load-broken.txt`` are h2load 1.52.0's
(nghttp2-client on Debian 12), a few progress lines left out, from gRPC runs through NGINX: a
clean one, and one in which NGINX ended connections with GOAWAY (``keepalive_requests``) and
failed some calls with 502.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
from bench.harness import h2load
from bench.harness.wrk import WrkError

HERE: Final = Path(__file__).resolve().parent
CLEAN: Final = (HERE / "h2load-clean.txt").read_text()
BROKEN: Final = (HERE / "h2load-broken.txt").read_text()


def test_the_summary_of_a_clean_run() -> None:
    summary = h2load.parse_summary(CLEAN)
    assert summary == h2load.Summary(
        duration_us=3_010_000.0,
        done=27693,
        failed=0,
        errored=0,
        timeout=0,
        status=(27693, 0, 0, 0),
        total_bytes=3904909,
        data_bytes=1356957,
    )


@pytest.mark.parametrize(
    ("printed", "microseconds"),
    [("123us", 123.0), ("6.40ms", 6400.0), ("3.01s", 3_010_000.0), ("2m", 120e6)],
)
def test_the_duration_units(printed: str, microseconds: float) -> None:
    text = CLEAN.replace("finished in 3.01s,", f"finished in {printed},")
    assert h2load.parse_summary(text).duration_us == pytest.approx(microseconds)


@pytest.mark.parametrize("line", ["finished in", "requests:", "status codes:", "traffic:"])
def test_a_missing_summary_line_is_an_error(line: str) -> None:
    text = "\n".join(row for row in CLEAN.splitlines() if not row.startswith(line))
    with pytest.raises(h2load.H2loadError, match="no summary"):
        h2load.parse_summary(text)


def test_h2load_errors_are_the_runners_load_errors() -> None:
    # The runner catches WrkError around both tools.
    assert issubclass(h2load.H2loadError, WrkError)


def test_the_log_keeps_requests_with_a_status_sorted() -> None:
    lines = [
        "1796632245896474\t200\t11363\n",
        "1796632245896475\t-1\t225\n",  # a failed stream: no response, no latency
        "1796632245896476\t502\t3862\n",  # a response all the same, as wrk counts it
        "1796632245896477\t200\t95\n",
        "\n",
    ]
    assert h2load.read_log(lines) == [95, 3862, 11363]


def test_nearest_rank_percentiles() -> None:
    ordered = list(range(1, 101))  # 1..100
    assert h2load.percentile(ordered, 50) == 50
    assert h2load.percentile(ordered, 90) == 90
    assert h2load.percentile(ordered, 99) == 99
    assert h2load.percentile(ordered, 100) == 100
    assert h2load.percentile([7], 99) == 7
    assert h2load.percentile([1, 2, 3], 0) == 1


def test_the_result_of_a_clean_run() -> None:
    times = list(range(1, 1001))
    result = h2load.result(h2load.parse_summary(CLEAN), times, response_bytes=49)
    assert result.requests == 27693
    assert result.duration_us == 3_010_000
    assert result.rps == pytest.approx(27693 / 3.01)
    assert (result.p50_us, result.p90_us, result.p99_us, result.max_us) == (500, 900, 990, 1000)
    assert result.mean_us == pytest.approx(500.5)
    assert result.errors == {"status": 0, "stream": 0, "timeout": 0, "body": 0}
    assert result.error_count == 0


def test_the_errors_of_a_broken_run() -> None:
    result = h2load.result(h2load.parse_summary(BROKEN), [100, 200], response_bytes=49)
    # done - errored: the streams that ended with a response, whatever its status
    assert result.requests == 4000
    assert result.errors["status"] == 3
    assert result.errors["stream"] == 39
    # 196324 data bytes for 4000 responses of 49 bytes: 196000 expected, none missing
    assert result.errors["body"] == 0


def test_responses_without_their_body_are_errors() -> None:
    # gRPC errors are 200s without a body: 10 of 100 calls answered trailers-only.
    text = (
        "finished in 1.00s, 100.00 req/s, 1KB/s\n"
        "requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, "
        "0 timeout\n"
        "status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx\n"
        "traffic: 9KB (9000) total, 4KB (4000) headers (space savings 0%), 4KB (4410) data\n"
    )
    result = h2load.result(h2load.parse_summary(text), [1] * 100, response_bytes=49)
    assert result.errors["body"] == 10
    assert result.error_count == 10


def test_a_run_without_a_logged_request_is_an_error() -> None:
    with pytest.raises(h2load.H2loadError, match="no finished request"):
        h2load.result(h2load.parse_summary(CLEAN), [], response_bytes=49)


def test_the_command_of_a_get() -> None:
    argv = h2load.command(
        "https://127.0.0.1:8443/",
        h2load.Request(),
        seconds=10.4,
        threads=2,
        log=Path("/tmp/run.tsv"),
    )
    assert argv == [
        "h2load",
        "--duration=10",
        "--clients=4",
        "--max-concurrent-streams=16",
        "--threads=2",
        "--log-file=/tmp/run.tsv",
        "https://127.0.0.1:8443/",
    ]


def test_the_command_of_a_grpc_call() -> None:
    request = h2load.Request(
        (("content-type", "application/grpc"), ("te", "trailers")), Path("/tmp/call.grpc"), 49
    )
    argv = h2load.command(
        "http://127.0.0.1:8080/a3s.bench.Bench/Unary",
        request,
        seconds=0.2,  # at least one second
        threads=8,  # at most one thread per connection
        log=Path("/tmp/run.tsv"),
    )
    assert "--duration=1" in argv
    assert "--threads=4" in argv
    assert argv[-4:] == [
        "--data=/tmp/call.grpc",
        "--header=content-type: application/grpc",
        "--header=te: trailers",
        "http://127.0.0.1:8080/a3s.bench.Bench/Unary",
    ]
