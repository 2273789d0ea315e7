"""The metrics registry (observability/metrics.py, SPEC §9.1): family declaration and
validation, the cells (counters that cannot go down, gauge removal, histogram buckets), the
exposition rendered by prometheus_client (HELP/TYPE, escaping, values, ``le`` labels, no
``_created``) checked with its parser, the frozen snapshot rendered from another thread, and the
workers' snapshots merged by the supervisor (SPEC §13.4)."""

from __future__ import annotations

import math
import threading

import msgspec
import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from a3s_gateway.observability.metrics import (
    CONTENT_TYPE,
    DEFAULT_BUCKETS,
    Counter,
    GaugeKind,
    Histogram,
    Registry,
    Snapshot,
    SnapshotCollector,
    decode,
    merge,
    monotonic_part,
    render,
)


def families(exposition: bytes) -> dict[str, tuple[str, str, list[Sample]]]:
    """Parse with prometheus_client: family name → (type, help, samples). The parser names a
    counter's family without ``_total``."""
    parsed = {}
    for family in text_string_to_metric_families(exposition.decode("utf-8")):
        assert family.name not in parsed, f"family {family.name} appears twice"
        parsed[family.name] = (family.type, family.documentation, family.samples)
    return parsed


def values(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample as (sample name, sorted labels) → value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for _, _, samples in families(exposition).values()
        for sample in samples
    }


# ------------------------------------------------------------------------------ the format


def test_counter_exposition_has_help_type_and_samples() -> None:
    registry = Registry()
    requests = registry.counter("app_requests_total", "Requests served.", ("route", "code"))
    requests.labels("home", "200").inc()
    requests.labels("home", "200").inc(2)
    requests.labels("api", "500").inc()
    text = registry.render().decode()
    # the library's text: labels sorted by name, values as Go floats, no _created sample
    assert text == (
        "# HELP app_requests_total Requests served.\n"
        "# TYPE app_requests_total counter\n"
        'app_requests_total{code="200",route="home"} 3.0\n'
        'app_requests_total{code="500",route="api"} 1.0\n'
    )
    parsed = families(registry.render())
    kind, help_text, samples = parsed["app_requests"]
    assert (kind, help_text) == ("counter", "Requests served.")
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("app_requests_total", {"route": "home", "code": "200"}, 3),
        ("app_requests_total", {"route": "api", "code": "500"}, 1),
    ]


def test_unlabelled_families_show_their_zero_and_labelled_ones_only_help_and_type() -> None:
    registry = Registry()
    registry.counter("dropped_total", "Dropped.")
    registry.gauge("generation", "Generation.")
    registry.gauge("keys", "Keys.", ("middleware",))
    registry.histogram("wait_seconds", "Wait.", ("queue",))
    text = registry.render().decode()
    assert "dropped_total 0.0\n" in text
    assert "generation 0.0\n" in text
    parsed = families(registry.render())
    assert parsed["keys"] == ("gauge", "Keys.", [])
    assert parsed["wait_seconds"] == ("histogram", "Wait.", [])
    for name in ("dropped_total", "generation", "keys", "wait_seconds"):
        assert f"# HELP {name} " in text
        assert f"# TYPE {name} " in text


def test_label_values_are_escaped_and_round_trip() -> None:
    registry = Registry()
    gauge = registry.gauge("odd", "Odd labels.", ("value",))
    awkward = ["back\\slash", 'quote"d', "new\nline", '\\"\n\\n', "ünïcødé ✓", "", "}{,="]
    for index, value in enumerate(awkward):
        gauge.labels(value).set(index)
    text = registry.render().decode()
    assert 'odd{value="back\\\\slash"} 0.0\n' in text
    assert 'odd{value="quote\\"d"} 1.0\n' in text
    assert 'odd{value="new\\nline"} 2.0\n' in text
    assert "\nnew" not in text  # no raw newline inside a sample line
    _, _, samples = families(registry.render())["odd"]
    assert [sample.labels["value"] for sample in samples] == awkward
    assert [sample.value for sample in samples] == list(range(len(awkward)))


def test_help_text_is_escaped_and_round_trips() -> None:
    registry = Registry()
    registry.counter("x_total", 'Line one\nline "two" with \\ backslash')
    text = registry.render().decode()
    assert text.startswith('# HELP x_total Line one\\nline "two" with \\\\ backslash\n')
    assert families(registry.render())["x"][1] == 'Line one\nline "two" with \\ backslash'


def test_lone_surrogates_render_as_replacement_not_a_crash() -> None:
    registry = Registry()
    registry.gauge("g", "G.", ("v",)).labels("a\ud800b").set(1)
    _, _, samples = families(registry.render())["g"]
    assert samples[0].labels == {"v": "a?b"}


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0.0"),
        (7, "7.0"),
        (-3, "-3.0"),
        (0.5, "0.5"),
        (1e-05, "1e-05"),
        (math.inf, "+Inf"),
        (-math.inf, "-Inf"),
        (math.nan, "NaN"),
    ],
)
def test_values_are_written_by_the_library(value: float, text: str) -> None:
    registry = Registry()
    registry.gauge("g", "G.").labels().set(value)
    assert registry.render().decode().splitlines()[-1] == f"g {text}"


def test_special_values_parse() -> None:
    registry = Registry()
    gauge = registry.gauge("g", "G.", ("k",))
    gauge.labels("inf").set(math.inf)
    gauge.labels("ninf").set(-math.inf)
    gauge.labels("nan").set(math.nan)
    gauge.labels("small").set(1.5e-7)
    parsed = {s.labels["k"]: s.value for s in families(registry.render())["g"][2]}
    assert parsed["inf"] == math.inf
    assert parsed["ninf"] == -math.inf
    assert math.isnan(parsed["nan"])
    assert parsed["small"] == 1.5e-7


def test_content_type_is_format_004() -> None:
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


# ----------------------------------------------------------------------------- histograms


def test_default_buckets_are_the_spec_list() -> None:
    assert DEFAULT_BUCKETS == (
        0.001,
        0.0025,
        0.005,
        0.01,
        0.025,
        0.05,
        0.1,
        0.25,
        0.5,
        1,
        2.5,
        5,
        10,
        30,
        60,
    )


def test_histogram_buckets_are_cumulative_with_inclusive_bounds() -> None:
    registry = Registry()
    histogram = registry.histogram("wait_seconds", "Wait.", ("queue",), buckets=(0.1, 1, 10))
    child = histogram.labels("q")
    total = 0.0
    for value in (0.05, 0.1, 0.1000001, 1, 5, 10, 11, 1e9):
        child.observe(value)
        total += value
    assert child.counts == [2, 2, 2, 2]
    assert child.cumulative() == [2, 4, 6, 8]
    assert child.count == 8
    lines = registry.render().decode().splitlines()
    assert lines[2:-1] == [
        'wait_seconds_bucket{le="0.1",queue="q"} 2.0',
        'wait_seconds_bucket{le="1",queue="q"} 4.0',
        'wait_seconds_bucket{le="10",queue="q"} 6.0',
        'wait_seconds_bucket{le="+Inf",queue="q"} 8.0',
        'wait_seconds_count{queue="q"} 8.0',
    ]
    name, written = lines[-1].split(" ")
    assert name == 'wait_seconds_sum{queue="q"}'
    assert written == "1.0000000272500001e+09"  # Go's exponent form, as the library writes it
    assert float(written) == total
    samples = families(registry.render())["wait_seconds"][2]
    buckets = {s.labels["le"]: s.value for s in samples if s.name == "wait_seconds_bucket"}
    assert buckets == {"0.1": 2, "1": 4, "10": 6, "+Inf": 8}


def test_unlabelled_histogram_lines() -> None:
    registry = Registry()
    registry.histogram("h", "H.", buckets=(1,)).labels().observe(0.5)
    assert registry.render().decode().splitlines()[2:] == [
        'h_bucket{le="1"} 1.0',
        'h_bucket{le="+Inf"} 1.0',
        "h_count 1.0",
        "h_sum 0.5",
    ]


def test_default_bucket_lines() -> None:
    registry = Registry()
    registry.histogram("d_seconds", "D.").labels().observe(0.003)
    les = [
        s.labels["le"]
        for s in families(registry.render())["d_seconds"][2]
        if s.name == "d_seconds_bucket"
    ]
    assert les == [
        "0.001",
        "0.0025",
        "0.005",
        "0.01",
        "0.025",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "1",
        "2.5",
        "5",
        "10",
        "30",
        "60",
        "+Inf",
    ]


@pytest.mark.parametrize(
    "buckets", [(), (1, 1), (2, 1), (math.nan,), (1, math.inf, 2), (-math.inf, 1)]
)
def test_bad_buckets_are_refused(buckets: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="bucket"):
        Histogram("h", "H.", buckets=buckets)


def test_a_trailing_inf_bucket_is_implied() -> None:
    assert Histogram("h", "H.", buckets=(1, 2, math.inf)).buckets == (1.0, 2.0)


def test_le_is_reserved_in_histograms() -> None:
    with pytest.raises(ValueError, match="le"):
        Histogram("h", "H.", ("le",))


# ------------------------------------------------------------------ children and validation


def test_children_are_cached_per_label_set() -> None:
    counter = Counter("c_total", "C.", ("a", "b"))
    child = counter.labels("x", "y")
    assert counter.labels("x", "y") is child
    assert counter.labels("x", "z") is not child
    assert list(counter.children) == [("x", "y"), ("x", "z")]


def test_counters_never_go_down() -> None:
    child = Counter("c_total", "C.").labels()
    child.inc(5)
    with pytest.raises(ValueError, match="decrease"):
        child.inc(-1)
    child.advance_to(3)
    assert child.value == 5
    child.advance_to(9)
    assert child.value == 9
    child.inc(0.5)
    assert child.value == 9.5


def test_counters_have_no_remove() -> None:
    assert not hasattr(Counter("c_total", "C."), "remove")


def test_gauge_set_inc_dec_remove_retain() -> None:
    registry = Registry()
    gauge = registry.gauge("g", "G.", ("k",))
    gauge.labels("a").set(5)
    gauge.labels("a").inc(2)
    gauge.labels("a").dec()
    gauge.labels("b").set(-1.5)
    gauge.labels("c").set(3)
    assert {k: c.value for k, c in gauge.children.items()} == {("a",): 6, ("b",): -1.5, ("c",): 3}
    gauge.remove("b")
    gauge.remove("never-there")
    assert list(gauge.children) == [("a",), ("c",)]
    gauge.retain({("c",), ("z",)})
    assert list(gauge.children) == [("c",)]
    assert 'g{k="a"}' not in registry.render().decode()


def test_label_count_and_type_are_checked() -> None:
    counter = Counter("c_total", "C.", ("a", "b"))
    with pytest.raises(ValueError, match="labels"):
        counter.labels("only-one")
    with pytest.raises(TypeError, match="str"):
        counter.labels("x", 3)  # type: ignore[arg-type]  # deliberately wrong at run time


@pytest.mark.parametrize("name", ["", "1abc", "a-b", "a b", "é"])
def test_bad_metric_names(name: str) -> None:
    with pytest.raises(ValueError, match="metric name"):
        Registry().gauge(name, "G.")


@pytest.mark.parametrize("label", ["", "1a", "a-b", "__reserved", "a:b"])
def test_bad_label_names(label: str) -> None:
    with pytest.raises(ValueError, match="label name"):
        Registry().gauge("g", "G.", (label,))


def test_duplicate_label_names() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        Registry().gauge("g", "G.", ("a", "a"))


def test_counter_names_end_in_total() -> None:
    with pytest.raises(ValueError, match="_total"):
        Registry().counter("requests", "R.")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("gauge", "x"), ("gauge", "x")),
        (("histogram", "x"), ("gauge", "x_count")),
        (("histogram", "x"), ("gauge", "x_bucket")),
        (("gauge", "x_sum"), ("histogram", "x")),
        (("counter", "x_total"), ("gauge", "x")),
    ],
)
def test_names_in_use_are_refused(first: tuple[str, str], second: tuple[str, str]) -> None:
    registry = Registry()

    def declare(kind: str, name: str) -> None:
        match kind:
            case "gauge":
                registry.gauge(name, "G.")
            case "histogram":
                registry.histogram(name, "H.")
            case "counter":
                registry.counter(name, "C.")

    declare(*first)
    with pytest.raises(ValueError, match="already in use"):
        declare(*second)


def test_families_render_in_declaration_order() -> None:
    registry = Registry()
    for name in ("zeta", "alpha", "mid"):
        registry.gauge(name, name)
    assert [f.name for f in text_string_to_metric_families(registry.render().decode())] == [
        "zeta",
        "alpha",
        "mid",
    ]
    assert list(registry.families) == ["zeta", "alpha", "mid"]


# --------------------------------------------------------------------- snapshots and merge


EMPTY = Registry().freeze()


def _worker(requests: int, in_flight: int, ejected: int, generation: int) -> Registry:
    registry = Registry()
    registry.counter("req_total", "Requests.", ("route",)).labels("a").inc(requests)
    registry.gauge("in_flight", "In flight.", ("route",)).labels("a").set(in_flight)
    registry.gauge("ejected", "Ejected.", ("backend",), kind=GaugeKind.MAX).labels("b").set(ejected)
    registry.gauge("generation", "Generation.", kind=GaugeKind.OWN).labels().set(generation)
    histogram = registry.histogram("lat_seconds", "Latency.", ("route",), buckets=(1, 2))
    for _ in range(requests):
        histogram.labels("a").observe(1.5)
    return registry


def test_merge_sums_counters_histograms_and_sum_gauges() -> None:
    supervisor = _worker(0, 0, 0, generation=7)
    workers = [_worker(3, 1, 0, generation=6), _worker(4, 2, 1, generation=5)]
    merged = values(render(merge([w.snapshot() for w in workers], own=supervisor.freeze())))
    assert merged["req_total", (("route", "a"),)] == 7
    assert merged["in_flight", (("route", "a"),)] == 3
    assert merged["ejected", (("backend", "b"),)] == 1
    assert merged["generation", ()] == 7  # the supervisor's own
    assert merged["lat_seconds_bucket", (("le", "1"), ("route", "a"))] == 0
    assert merged["lat_seconds_bucket", (("le", "2"), ("route", "a"))] == 7
    assert merged["lat_seconds_bucket", (("le", "+Inf"), ("route", "a"))] == 7
    assert merged["lat_seconds_count", (("route", "a"),)] == 7
    assert merged["lat_seconds_sum", (("route", "a"),)] == 7 * 1.5


def test_merge_includes_the_supervisors_own_counts() -> None:
    supervisor = Registry()
    supervisor.counter("reloads_total", "Reloads.", ("result",)).labels("ok").inc(2)
    worker = Registry()
    worker.counter("reloads_total", "Reloads.", ("result",)).labels("ok").inc(1)
    worker.counter("only_worker_total", "Worker.").labels().inc(4)
    merged = values(render(merge([worker.snapshot()], own=supervisor.freeze())))
    assert merged["reloads_total", (("result", "ok"),)] == 3
    assert merged["only_worker_total", ()] == 4


def test_merge_max_gauges_take_the_largest_even_when_negative() -> None:
    snaps = []
    for value in (-5, -2, -9):
        registry = Registry()
        registry.gauge("m", "M.", ("k",), kind=GaugeKind.MAX).labels("x").set(value)
        snaps.append(registry.snapshot())
    assert values(render(merge(snaps, own=EMPTY)))["m", (("k", "x"),)] == -2


def test_merge_own_gauge_missing_from_own_comes_from_the_first_snapshot() -> None:
    snaps = []
    for value in (11, 12):
        registry = Registry()
        registry.gauge("cfg", "Cfg.", kind=GaugeKind.OWN).labels().set(value)
        snaps.append(registry.snapshot())
    assert values(render(merge(snaps, own=EMPTY)))["cfg", ()] == 11


def test_merge_ignores_an_incompatible_family() -> None:
    first = Registry()
    first.gauge("x", "X.", ("a",)).labels("1").set(1)
    second = Registry()
    second.gauge("x", "X.", ("b",)).labels("2").set(2)
    third = Registry()
    third.histogram("x", "X.", ("a",)).labels("1").observe(1)
    fourth = Registry()
    fourth.gauge("x", "X.", ("a",), kind=GaugeKind.OWN).labels("1").set(4)
    snaps = [s.snapshot() for s in (first, second, third, fourth)]
    merged = values(render(merge(snaps, own=EMPTY)))
    assert merged == {("x", (("a", "1"),)): 1}


def test_merge_ignores_histograms_with_other_buckets() -> None:
    first = Registry()
    first.histogram("h", "H.", buckets=(1,)).labels().observe(0.5)
    second = Registry()
    second.histogram("h", "H.", buckets=(1, 2)).labels().observe(0.5)
    merged = values(render(merge([first.snapshot(), second.snapshot()], own=EMPTY)))
    assert merged["h_count", ()] == 1


def test_merge_keeps_escaping_and_help() -> None:
    worker = Registry()
    worker.counter("e_total", 'Help "q" \\ \n.', ("v",)).labels('a"b\\c\nd').inc()
    parsed = families(render(merge([worker.snapshot(), worker.snapshot()], own=EMPTY)))
    kind, help_text, samples = parsed["e"]
    assert (kind, help_text) == ("counter", 'Help "q" \\ \n.')
    assert [(s.labels, s.value) for s in samples] == [({"v": 'a"b\\c\nd'}, 2)]


def test_merge_of_nothing_is_own() -> None:
    own = _worker(2, 1, 1, generation=3)
    assert merge([], own=own.freeze()) == own.freeze()
    assert render(merge([], own=own.freeze())) == own.render()


def test_merge_refuses_garbage() -> None:
    with pytest.raises(msgspec.DecodeError):
        merge([b"not a snapshot"], own=EMPTY)
    with pytest.raises(msgspec.DecodeError):
        decode(b"\x93garbage")


def test_the_monotonic_part_of_a_snapshot_keeps_counters_and_histograms_only() -> None:
    worker = Registry()
    worker.counter("a_total", "A counter.").labels().inc(3)
    worker.gauge("b", "A gauge.").labels().set(7)
    worker.histogram("c_seconds", "A histogram.").labels().observe(0.2)
    kept = monotonic_part(worker.snapshot())
    text = render(merge([kept], own=EMPTY)).decode()
    assert "a_total 3.0" in text
    assert "c_seconds_count 1.0" in text
    assert "\nb " not in text
    assert not text.startswith("b ")


# ---------------------------------------------------------------- the library's exposition


def test_no_created_samples_and_counters_keep_their_total_suffix() -> None:
    registry = Registry()
    registry.counter("c_total", "C.", ("k",)).labels("a").inc(2)
    registry.histogram("h_seconds", "H.").labels().observe(0.2)
    text = registry.render().decode()
    assert "_created" not in text
    assert "# TYPE c_total counter" in text
    assert 'c_total{k="a"} 2.0' in text


def test_the_collector_registry_is_the_librarys_over_the_live_cells() -> None:
    registry = Registry()
    child = registry.counter("c_total", "C.").labels()
    collectors = registry.collector_registry
    assert registry.collector_registry is collectors
    child.inc(3)
    assert collectors.get_sample_value("c_total") == 3
    child.inc()
    assert collectors.get_sample_value("c_total") == 4
    assert generate_latest(collectors) == registry.render()


def test_a_frozen_snapshot_does_not_change_with_the_cells() -> None:
    registry = Registry()
    counter = registry.counter("c_total", "C.", ("k",))
    histogram = registry.histogram("h", "H.", buckets=(1,))
    counter.labels("a").inc()
    histogram.labels().observe(0.5)
    frozen = registry.freeze()
    before = render(frozen)
    counter.labels("a").inc(5)
    counter.labels("b").inc()
    histogram.labels().observe(3)
    assert render(frozen) == before
    assert render(registry.freeze()) != before


def test_a_snapshot_renders_on_another_thread() -> None:
    registry = Registry()
    registry.gauge("g", "G.", ("k",)).labels("x").set(2)
    frozen = registry.freeze()
    out: list[bytes] = []
    thread = threading.Thread(target=lambda: out.append(render(frozen)))
    thread.start()
    thread.join(timeout=10)
    assert out == [registry.render()]


def test_the_snapshot_collector_yields_the_library_families() -> None:
    registry = Registry()
    registry.counter("c_total", "C.").labels().inc(2)
    registry.gauge("g", "G.", kind=GaugeKind.MAX).labels().set(1)
    registry.histogram("h", "H.", buckets=(1,)).labels().observe(2)
    metrics = list(SnapshotCollector(registry.freeze()).collect())
    assert [(m.name, m.type) for m in metrics] == [
        ("c", "counter"),
        ("g", "gauge"),
        ("h", "histogram"),
    ]
    assert [(s.name, s.value) for s in metrics[2].samples] == [
        ("h_bucket", 0),
        ("h_bucket", 1),
        ("h_count", 1),
        ("h_sum", 2.0),
    ]


def test_snapshots_encode_and_decode() -> None:
    worker = _worker(3, 1, 1, generation=2)
    decoded = decode(worker.snapshot())
    assert isinstance(decoded, Snapshot)
    assert decoded == worker.freeze()
