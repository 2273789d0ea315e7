"""Micro-benchmark: the per-request cost of trace context (``observability/tracing.py``).

``python -m bench.micro.tracing_bench [--quick]``. For each request shape, the three calls the
data plane makes per proxied request with tracing on (SPEC §9.4): ``extract`` on the headers as
received, ``start_span`` (one seeded ``random.Random``, sample rate 1.0), and ``inject`` into the
upstream header list with the default ``tracing_propagation = ["w3c"]``; then the same request
with ``["w3c", "b3", "b3multi"]``, and the request-id pair of SPEC §9.5 (``request_id`` then
``set_request_id``) for an untrusted peer and a trusted one sending a valid id.

Request shapes: a browser-like GET with nine header fields and no trace header (the common case:
``extract`` is one pass of set lookups), the same with a ``traceparent`` and a ``tracestate``,
and the same with B3 single. Each shape is checked once before timing (the context found, the
ids injected), so a rejected header is never what gets timed. Reports nanoseconds per request,
the median over rounds and the best round (the steadier figure on a shared machine).
"""

from __future__ import annotations

import argparse
import statistics
import time
from random import Random
from typing import TYPE_CHECKING, Final

from a3s_gateway.observability.tracing import (
    extract,
    inject,
    propagation_forms,
    request_id,
    set_request_id,
    start_span,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from a3s_gateway.protocols.headers import Headers

TRACE: Final = b"4bf92f3577b34da6a3ce929d0e0e4736"
SPAN: Final = b"00f067aa0ba902b7"
BROWSER: Final[Headers] = [
    (b"host", b"api.example.com"),
    (b"user-agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"accept", b"application/json, text/plain, */*"),
    (b"accept-language", b"en-GB,en;q=0.5"),
    (b"accept-encoding", b"gzip, deflate, br"),
    (b"referer", b"https://app.example.com/items"),
    (b"x-forwarded-for", b"127.0.0.1"),
    (b"x-forwarded-proto", b"http"),
    (b"via", b"1.1 a3s-gateway"),
]
WITH_TRACEPARENT: Final[Headers] = [
    *BROWSER[:3],
    (b"traceparent", b"00-" + TRACE + b"-" + SPAN + b"-01"),
    (b"tracestate", b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    *BROWSER[3:],
]
WITH_B3: Final[Headers] = [*BROWSER[:3], (b"b3", TRACE + b"-" + SPAN + b"-1"), *BROWSER[3:]]
W3C_ONLY: Final = propagation_forms(["w3c"])
EVERY_FORM: Final = propagation_forms(["w3c", "b3", "b3multi"])
REQUEST_ID: Final = b"x-request-id"
WITH_ID: Final[Headers] = [*BROWSER, (REQUEST_ID, b"6f1c2a9b-3d4e-5f60-7182-93a4b5c6d7e8")]


def trace_cycle(headers: Headers, forms: int) -> Callable[[], None]:
    """extract + start_span + inject for one request."""
    rng = Random(20260)

    def cycle() -> None:
        inject(headers, start_span(extract(headers), rng, 1.0), forms)

    return cycle


def request_id_cycle(headers: Headers, *, trusted: bool) -> Callable[[], None]:
    """request_id + set_request_id (upstream headers) for one request."""
    rng = Random(20261)

    def cycle() -> None:
        set_request_id(
            headers, REQUEST_ID, request_id(headers, REQUEST_ID, trusted=trusted, rng=rng)
        )

    return cycle


def verify() -> None:
    """Check each measured shape once; raise if tracing did not do what is being timed."""
    rng = Random(1)
    if extract(BROWSER) is not None:
        raise AssertionError("a context found in a request without trace headers")
    for headers in (WITH_TRACEPARENT, WITH_B3):
        incoming = extract(headers)
        if incoming is None or incoming.trace_id != TRACE:
            raise AssertionError(f"no context extracted from {headers!r}")
        span = start_span(incoming, rng, 1.0)
        out = dict(inject(headers, span, EVERY_FORM))
        if out[b"traceparent"] != b"00-%s-%s-01" % (TRACE, span.span_id):
            raise AssertionError(f"injected {out!r}")
        if out[b"x-b3-parentspanid"] != SPAN or not out[b"b3"].startswith(TRACE):
            raise AssertionError(f"injected {out!r}")
    kept = request_id(WITH_ID, REQUEST_ID, trusted=True, rng=rng)
    if kept != WITH_ID[-1][1]:
        raise AssertionError(f"a trusted valid request id was replaced by {kept!r}")


def ns_per_cycle(cycle: Callable[[], None], rounds: int, cycles: int) -> list[float]:
    """The mean time of one ``cycle()`` in each of ``rounds`` rounds, in nanoseconds."""
    for _ in range(min(cycles, 2000)):  # warm up
        cycle()
    samples = []
    for _ in range(rounds):
        start = time.perf_counter_ns()
        for _ in range(cycles):
            cycle()
        samples.append((time.perf_counter_ns() - start) / cycles)
    return samples


def run(*, quick: bool = False) -> list[dict[str, object]]:
    """One row per measured cycle, nanoseconds per request."""
    verify()
    rounds, cycles = (3, 5_000) if quick else (7, 50_000)
    measured = {
        "trace, no trace headers, w3c": trace_cycle(BROWSER, W3C_ONLY),
        "trace, traceparent + tracestate, w3c": trace_cycle(WITH_TRACEPARENT, W3C_ONLY),
        "trace, b3 single, w3c (+ b3 answered)": trace_cycle(WITH_B3, W3C_ONLY),
        "trace, no trace headers, w3c + b3 + b3multi": trace_cycle(BROWSER, EVERY_FORM),
        "trace, traceparent, w3c + b3 + b3multi": trace_cycle(WITH_TRACEPARENT, EVERY_FORM),
        "request id, untrusted peer (new id)": request_id_cycle(WITH_ID, trusted=False),
        "request id, trusted peer, valid id kept": request_id_cycle(WITH_ID, trusted=True),
    }
    rows: list[dict[str, object]] = []
    for name, cycle in measured.items():
        samples = ns_per_cycle(cycle, rounds, cycles)
        rows.append(
            {
                "cycle": name,
                "rounds": rounds,
                "cycles_per_round": cycles,
                "ns_per_request": round(statistics.median(samples)),
                "ns_best": round(min(samples)),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.micro.tracing_bench", description=__doc__
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke test)")
    args = parser.parse_args(argv)
    print(f"{'cycle':<48}{'ns/request':>12}{'best':>8}")
    for row in run(quick=args.quick):
        print(f"{row['cycle']!s:<48}{row['ns_per_request']:>12}{row['ns_best']:>8}")


if __name__ == "__main__":
    main()
