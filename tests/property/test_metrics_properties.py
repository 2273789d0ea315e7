"""Properties of the metrics registry and the gateway's families (SPEC §9.1, §13.4):

- any label values and HELP text (any Unicode, quotes, backslashes, newlines) render an
  exposition that prometheus_client's parser reads back to the same values;
- histogram buckets hold exactly the observations ≤ each bound, and the count equals the
  number of observations;
- counters never decrease under random sequences of exchanges, middleware activity, reloads
  that rebuild or keep instances, late counts on retired generations, and scrapes; and the
  instance-kept counters equal the model's totals;
- merging workers' snapshots sums their counters and histograms, is the same whatever the
  order of the workers, and a merge of one snapshot renders what the worker renders;
- a frozen snapshot survives the msgpack round trip, and its rendering parses back to the
  cells' values (render → parse).
"""

from __future__ import annotations

import math
import string
import sys
from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from a3s_gateway.config.load import load_config_text
from a3s_gateway.middleware.breaker import BreakerState, CircuitBreakerMiddleware
from a3s_gateway.middleware.retry import RetryMiddleware
from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.observability.metrics import (
    Counter,
    GaugeKind,
    Histogram,
    Registry,
    decode,
    merge,
    render,
)
from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.observability.stream_stats import StreamStats
from a3s_gateway.runtime.compile import RuntimeConfig, compile_runtime
from a3s_gateway.upstream.peer import Peer
from a3s_gateway.upstream.pool_state import PeerStats

Parsed = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(exposition: bytes) -> Parsed:
    out: Parsed = {}
    for family in text_string_to_metric_families(exposition.decode("utf-8")):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in out, f"sample {key} appears twice"
            out[key] = sample.value
    return out


# ----------------------------------------------------------------------- escaping round trip

label_values = st.text(max_size=20)  # any code point but lone surrogates (UTF-8 cannot say them)


#: Every character ``str.strip`` removes, but the newline (a newline in HELP text is escaped).
_STRIPPED = "".join(
    chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace() and code != 10
)


def _as_parsed(help_text: str) -> str:
    """What prometheus_client's parser gives back for ``help_text``: it strips each line (all
    Unicode whitespace at the end of the HELP text goes) and skips ASCII whitespace before the
    text. Prometheus itself keeps both; everything else must round-trip."""
    return help_text.rstrip(_STRIPPED).lstrip(string.whitespace.replace("\n", ""))


@given(
    rows=st.lists(st.tuples(label_values, label_values, st.integers(0, 10**12)), max_size=6),
    help_text=st.text(max_size=40),
)
def test_any_label_values_render_parseable_text_that_round_trips(
    rows: list[tuple[str, str, int]], help_text: str
) -> None:
    registry = Registry()
    counter = registry.counter("p_total", help_text, ("first", "second"))
    gauge = registry.gauge("p_gauge", help_text, ("first", "second"))
    histogram = registry.histogram("p_seconds", help_text, ("first", "second"), buckets=(1, 10))
    expected: dict[tuple[str, str], int] = {}
    for first, second, value in rows:
        counter.labels(first, second).inc(value)
        gauge.labels(first, second).set(-value)
        histogram.labels(first, second).observe(value)
        expected[first, second] = expected.get((first, second), 0) + value
    families = list(text_string_to_metric_families(registry.render().decode("utf-8")))
    assert [f.name for f in families] == ["p", "p_gauge", "p_seconds"]
    for family in families:
        assert family.documentation == _as_parsed(help_text)
    counted = {(s.labels["first"], s.labels["second"]): s.value for s in families[0].samples}
    assert counted == expected
    gauged = {(s.labels["first"], s.labels["second"]): s.value for s in families[1].samples}
    assert set(gauged) == set(expected)
    counts = {
        (s.labels["first"], s.labels["second"]): s.value
        for s in families[2].samples
        if s.name == "p_seconds_count"
    }
    assert set(counts) == set(expected)


# ---------------------------------------------------------------------------- histograms

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
#: Bucket bounds: prometheus_client writes no ``_sum``/``_count`` for a histogram whose first
#: bound is negative (observations may be negative: the sum is then no counter), and every
#: histogram of the gateway measures durations, so the bounds here are ≥ 0.
bounds_at_or_above_zero = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(
    bounds=st.lists(bounds_at_or_above_zero, min_size=1, max_size=8, unique=True).map(sorted),
    observations=st.lists(finite, max_size=60),
)
def test_histogram_buckets_hold_the_observations_at_or_below_each_bound(
    bounds: list[float], observations: list[float]
) -> None:
    registry = Registry()
    child = registry.histogram("h", "H.", buckets=bounds).labels()
    for value in observations:
        child.observe(value)
    assert child.count == len(observations)
    assert child.cumulative() == [
        *(sum(1 for value in observations if value <= bound) for bound in bounds),
        len(observations),
    ]
    parsed = parse(registry.render())
    assert parsed["h_count", ()] == len(observations)
    assert parsed["h_bucket", (("le", "+Inf"),)] == len(observations)
    assert math.isclose(parsed["h_sum", ()], math.fsum(observations), abs_tol=1e-6)


# -------------------------------------------------------------------- counters never go down

CONFIG = """
entrypoints "web" {{
  address = "127.0.0.1:0"
}}
routers "r" {{
  rule        = "PathPrefix(`/`)"
  service     = "svc"
  middlewares = ["cb", "rt"]
}}
middlewares "cb" {{
  type              = "circuit-breaker"
  failure_threshold = {threshold}
}}
middlewares "rt" {{
  type        = "retry"
  max_retries = {retries}
}}
services "svc" {{
  load_balancer {{
    servers = [{{ url = "http://10.9.0.1:80" }}]
  }}
  mirror {{
    service = "shadow"
  }}
}}
services "shadow" {{
  load_balancer {{
    servers = [{{ url = "http://10.9.0.2:80" }}]
  }}
}}
"""

#: Compiled once per (retries, threshold): hypothesis runs many examples.
_CONFIGS = {
    (retries, threshold): load_config_text(CONFIG.format(retries=retries, threshold=threshold))
    for retries in (1, 2)
    for threshold in (1, 2)
}


@dataclass
class _Pool:
    def stats(self, peer: Peer) -> PeerStats:
        return PeerStats(idle=1)


@dataclass
class _Context:
    active_requests: dict[str, int] = field(default_factory=dict)
    active_connections: dict[str, int] = field(default_factory=dict)
    http2_connections: dict[str, int] = field(default_factory=dict)
    rejected_connections: dict[tuple[str, str], int] = field(default_factory=dict)
    websockets: dict[str, int] = field(default_factory=dict)
    websocket_sessions: dict[str, int] = field(default_factory=dict)
    websocket_totals: dict[str, int] = field(default_factory=dict)
    sse_streams: dict[str, int] = field(default_factory=dict)
    streams: StreamStats = field(default_factory=StreamStats)
    pool: _Pool = field(default_factory=_Pool)


def _retry(runtime: RuntimeConfig) -> RetryMiddleware:
    instance = runtime.middlewares["rt"]
    assert isinstance(instance, RetryMiddleware)
    return instance


def _breaker(runtime: RuntimeConfig) -> CircuitBreakerMiddleware:
    instance = runtime.middlewares["cb"]
    assert isinstance(instance, CircuitBreakerMiddleware)
    return instance


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("exchange"), st.sampled_from([b"GET", b"POST", b"x"]), st.integers(0, 599)
        ),
        st.tuples(st.just("retry"), st.sampled_from(["svc", "other"]), st.booleans()),
        st.tuples(st.just("skip"), st.sampled_from(["budget", "body_too_large"]), st.booleans()),
        st.tuples(st.just("transition"), st.sampled_from(list(BreakerState)), st.booleans()),
        st.tuples(st.just("mirror"), st.sampled_from(["sent", "error"]), st.booleans()),
        st.tuples(st.just("reload"), st.integers(1, 2), st.integers(1, 2)),
        st.tuples(st.just("scrape"), st.none(), st.none()),
    ),
    max_size=25,
)


def _counters(metrics: GatewayMetrics) -> Parsed:
    """Every counter sample and histogram count, read from the registry (the exposition is
    parsed once at the end of each example; parsing it at every scrape would be slow)."""
    out: Parsed = {}
    for family in metrics.registry.families.values():
        if isinstance(family, Counter):
            for values, counter in family.children.items():
                labels = tuple(sorted(zip(family.labelnames, values, strict=True)))
                out[family.name, labels] = counter.value
        elif isinstance(family, Histogram):
            for values, histogram in family.children.items():
                labels = tuple(sorted(zip(family.labelnames, values, strict=True)))
                out[f"{family.name}_count", labels] = histogram.count
    return out


@given(ops=operations)
def test_counters_never_decrease_and_instance_counts_add_up(
    ops: list[tuple[str, object, object]],
) -> None:
    metrics = GatewayMetrics(True)
    settings = (1, 1)
    current = compile_runtime(_CONFIGS[settings], 1)
    previous: RuntimeConfig | None = None  # the generation retired at the last reload
    generation = 1
    model: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    highest: Parsed = {}

    def count(name: str, value: float = 1, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        model[key] = model.get(key, 0) + value

    for kind, first, second in ops:
        # "late" operations act on the previous generation, as a request still running on
        # its snapshot would (they count until the next reload folds that generation)
        target = previous if second is True and previous is not None else current
        match kind:
            case "exchange":
                assert isinstance(first, bytes)
                assert isinstance(second, int)
                record = ExchangeRecord("web", 0.0)
                record.method, record.status, record.ended = first, second, 0.1
                metrics.observe_exchange(record)
            case "retry":
                assert isinstance(first, str)
                retry = _retry(target)
                assert retry.begin_retry(first, "reset")
                retry.end_retry()
                count("a3s_retries_total", middleware="rt", service=first)
            case "skip":
                assert isinstance(first, str)
                _retry(target).skip(first)
                count("a3s_retries_skipped_total", middleware="rt", reason=first)
            case "transition":
                assert isinstance(first, BreakerState)
                _breaker(target).transitions[first] += 1  # as a breaker's hook does
                to = {0: "closed", 1: "open", 2: "half_open"}[int(first)]
                count("a3s_circuit_breaker_transitions_total", middleware="cb", to=to)
            case "mirror":
                assert isinstance(first, str)
                mirror = target.services["svc"].mirror
                assert mirror is not None
                mirror.count(first)
                count("a3s_mirror_requests_total", service="svc", outcome=first)
            case "reload":
                assert isinstance(first, int)
                assert isinstance(second, int)
                settings = (first, second)
                generation += 1
                following = compile_runtime(_CONFIGS[settings], generation, current)
                metrics.retire_generation(current, following)
                previous, current = current, following
            case "scrape":
                metrics.collect(current, _Context())
                scraped = _counters(metrics)
                for key, value in scraped.items():
                    assert value >= highest.get(key, 0), key
                    highest[key] = value
                for key, value in model.items():
                    assert scraped.get(key, 0) == value, key

    metrics.collect(current, _Context())
    scraped = parse(metrics.render())
    for key, value in model.items():
        assert scraped.get(key, 0) == value, key
    for key, value in highest.items():
        assert scraped[key] >= value, key
    exchanges = sum(1 for kind, _, _ in ops if kind == "exchange")
    requests = sum(v for (name, _), v in scraped.items() if name == "a3s_http_requests_total")
    assert requests == exchanges


# --------------------------------------------------------------------------------- merge


@given(
    workers=st.lists(
        st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 1000)), max_size=6),
        max_size=5,
    )
)
def test_merge_sums_every_workers_counters_and_histograms(
    workers: list[list[tuple[str, int]]],
) -> None:
    snapshots = []
    totals: dict[str, int] = {}
    observations: dict[str, int] = {}
    for rows in workers:
        registry = Registry()
        counter = registry.counter("w_total", "W.", ("k",))
        histogram = registry.histogram("w_seconds", "W.", ("k",), buckets=(1, 5))
        registry.gauge("w_cfg", "W.", kind=GaugeKind.OWN).labels().set(len(rows))
        for key, value in rows:
            counter.labels(key).inc(value)
            histogram.labels(key).observe(value / 100)
            totals[key] = totals.get(key, 0) + value
            observations[key] = observations.get(key, 0) + 1
        snapshots.append(registry.snapshot())
    own = Registry()
    own.gauge("w_cfg", "W.", kind=GaugeKind.OWN).labels().set(-1)
    merged = parse(render(merge(snapshots, own=own.freeze())))
    reversed_order = parse(render(merge(snapshots[::-1], own=own.freeze())))
    assert reversed_order.keys() == merged.keys()
    assert all(math.isclose(reversed_order[key], merged[key]) for key in merged)
    assert {k[1][0][1]: v for k, v in merged.items() if k[0] == "w_total"} == totals
    counts = {k[1][0][1]: v for k, v in merged.items() if k[0] == "w_seconds_count"}
    assert counts == observations
    assert merged["w_cfg", ()] == -1


rows_of_cells = st.lists(
    st.tuples(
        st.sampled_from(["counter", "gauge", "histogram"]),
        label_values,
        st.integers(0, 10**6),
    ),
    max_size=12,
)


@given(rows=rows_of_cells)
def test_a_snapshot_round_trips_and_renders_what_the_cells_hold(
    rows: list[tuple[str, str, int]],
) -> None:
    registry = Registry()
    counter = registry.counter("r_total", "R.", ("k",))
    gauge = registry.gauge("r_max", "R.", ("k",), kind=GaugeKind.MAX)
    histogram = registry.histogram("r_seconds", "R.", ("k",), buckets=(0.5, 2))
    for kind, key, value in rows:
        match kind:
            case "counter":
                counter.labels(key).inc(value)
            case "gauge":
                gauge.labels(key).set(value)
            case _:
                histogram.labels(key).observe(value / 10)
    frozen = registry.freeze()
    assert decode(registry.snapshot()) == frozen
    parsed = parse(render(frozen))
    for values, child in counter.children.items():
        assert parsed["r_total", (("k", values[0]),)] == child.value
    for values, cell in gauge.children.items():
        assert parsed["r_max", (("k", values[0]),)] == cell.value
    for values, buckets in histogram.children.items():
        assert parsed["r_seconds_count", (("k", values[0]),)] == buckets.count
        assert parsed["r_seconds_bucket", (("k", values[0]), ("le", "0.5"))] == buckets.counts[0]
    # one worker merged with an empty supervisor renders as the worker itself
    assert parse(render(merge([registry.snapshot()], own=Registry().freeze()))) == parsed
