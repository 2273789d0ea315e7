"""Trace context and request ids (SPEC §9.4 rows Extract, traceparent, B3, Gateway span, Inject;
§9.5), case by case. The properties are in tests/property/test_tracing_properties.py."""

from __future__ import annotations

import re
from random import Random

import pytest

from a3s_gateway.observability.tracing import (
    ALL_FORMS,
    B3,
    B3_MULTI,
    TRACE_HEADER_NAMES,
    W3C,
    Incoming,
    Span,
    extract,
    inject,
    new_request_id,
    propagation_forms,
    request_id,
    set_request_id,
    start_span,
    valid_request_id,
)

TRACE = b"4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = b"00f067aa0ba902b7"
PARENT = b"b7ad6b7169203331"
TRACE64 = b"a3ce929d0e0e4736"
TRACEPARENT = b"00-" + TRACE + b"-" + SPAN + b"-01"
HEX32 = re.compile(rb"[0-9a-f]{32}")
HEX16 = re.compile(rb"[0-9a-f]{16}")


def tp(
    *, version: bytes = b"00", trace: bytes = TRACE, span: bytes = SPAN, flags: bytes = b"01"
) -> list[tuple[bytes, bytes]]:
    return [(b"traceparent", b"-".join((version, trace, span, flags)))]


class ScriptedRandom(Random):
    """A Random whose ``getrandbits`` and ``random`` answers are scripted, then seeded ones."""

    def __init__(self, bits: list[int] | None = None, fraction: float | None = None) -> None:
        super().__init__(7)
        self.bits = list(bits or [])
        self.fraction = fraction
        self.random_calls = 0

    def getrandbits(self, k: int, /) -> int:
        return self.bits.pop(0) if self.bits else super().getrandbits(k)

    def random(self) -> float:
        self.random_calls += 1
        return super().random() if self.fraction is None else self.fraction


# --------------------------------------------------------------------------- traceparent


def test_valid_traceparent_is_extracted() -> None:
    assert extract([(b"host", b"a"), *tp()]) == Incoming(TRACE, SPAN, True, False, None, W3C)


@pytest.mark.parametrize(
    ("flags", "sampled"),
    [(b"01", True), (b"00", False), (b"03", True), (b"02", False), (b"ff", True), (b"fe", False)],
)
def test_traceparent_sampled_is_the_low_flag_bit(flags: bytes, sampled: bool) -> None:
    incoming = extract(tp(flags=flags))
    assert incoming is not None
    assert incoming.sampled is sampled


def test_surrounding_whitespace_is_ignored() -> None:
    assert extract([(b"traceparent", b" \t" + TRACEPARENT + b" ")]) is not None


def test_higher_version_may_carry_extra_fields() -> None:
    exact = extract(tp(version=b"01"))
    extra = extract([(b"traceparent", b"01-" + TRACE + b"-" + SPAN + b"-01-what-ever")])
    assert exact == extra == Incoming(TRACE, SPAN, True, False, None, W3C)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(TRACEPARENT.upper(), id="upper-case everything"),
        pytest.param(b"00-" + TRACE.upper() + b"-" + SPAN + b"-01", id="upper-case trace id"),
        pytest.param(b"00-" + TRACE + b"-" + b"00F067AA0BA902B7" + b"-01", id="upper-case span"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN + b"-0A", id="upper-case flags"),
        pytest.param(b"ff-" + TRACE + b"-" + SPAN + b"-01", id="version ff"),
        pytest.param(b"0g-" + TRACE + b"-" + SPAN + b"-01", id="version not hex"),
        pytest.param(TRACEPARENT + b"-extra", id="version 00 with a fifth field"),
        pytest.param(TRACEPARENT + b"0", id="version 00 too long"),
        pytest.param(b"01-" + TRACE + b"-" + SPAN + b"-01x", id="higher version, no dash after"),
        pytest.param(b"00-" + b"0" * 32 + b"-" + SPAN + b"-01", id="all-zero trace id"),
        pytest.param(b"00-" + TRACE + b"-" + b"0" * 16 + b"-01", id="all-zero parent id"),
        pytest.param(b"00-" + TRACE[:-1] + b"-" + SPAN + b"-01", id="short trace id"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN[:-1] + b"-01", id="short parent id"),
        pytest.param(b"00-" + TRACE + b"-" + SPAN + b"-1", id="one flag digit"),
        pytest.param(b"00_" + TRACE + b"_" + SPAN + b"_01", id="wrong separators"),
        pytest.param(b"00-" + TRACE[:-1] + b"x-" + SPAN + b"-01", id="non-hex in trace id"),
        pytest.param(b"", id="empty"),
        pytest.param(b"00", id="version only"),
        pytest.param(b"\xff" * 55, id="binary"),
    ],
)
def test_invalid_traceparent_is_absent(value: bytes) -> None:
    assert extract([(b"traceparent", value)]) is None


def test_repeated_traceparent_is_invalid() -> None:
    assert extract(tp() + tp()) is None


# --------------------------------------------------------------------------- tracestate


def members(count: int) -> bytes:
    return b",".join(b"k%d=v" % index for index in range(count))


@pytest.mark.parametrize(
    "state",
    [
        b"rojo=00f067aa0ba902b7,congo=t61rcWkgMzE",
        members(32),
        members(32) + b", ,,",  # empty members do not count
        b"a=" + b"x" * 510,  # exactly 512 bytes
        b"a=1, ,b=2",  # an empty member does not count and is passed on as received
    ],
)
def test_tracestate_within_bounds_is_kept_unchanged(state: bytes) -> None:
    incoming = extract([*tp(), (b"tracestate", state)])
    assert incoming is not None
    assert incoming.tracestate == state


@pytest.mark.parametrize(
    "state",
    [members(33), b"a=" + b"x" * 511, b"", b" , "],
    ids=["33 members", "513 bytes", "empty", "no member"],
)
def test_tracestate_out_of_bounds_is_dropped_but_the_context_stays(state: bytes) -> None:
    incoming = extract([*tp(), (b"tracestate", state)])
    assert incoming is not None
    assert incoming.trace_id == TRACE
    assert incoming.tracestate is None


def test_tracestate_lines_are_joined_and_counted_together() -> None:
    incoming = extract([(b"tracestate", b"a=1"), *tp(), (b"tracestate", b"b=2")])
    assert incoming is not None
    assert incoming.tracestate == b"a=1,b=2"
    over = extract([*tp(), (b"tracestate", members(20)), (b"tracestate", members(13))])
    assert over is not None
    assert over.tracestate is None


def test_tracestate_is_dropped_with_an_invalid_traceparent() -> None:
    headers = [(b"traceparent", b"ff" + TRACEPARENT[2:]), (b"tracestate", b"a=1")]
    assert extract(headers) is None
    fallback = extract([*headers, (b"b3", TRACE + b"-" + SPAN)])
    assert fallback is not None
    assert fallback.tracestate is None


def test_tracestate_alone_is_no_context() -> None:
    assert extract([(b"tracestate", b"a=1")]) is None


# --------------------------------------------------------------------------- B3 single


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (TRACE + b"-" + SPAN, Incoming(TRACE, SPAN, None, False, None, B3)),
        (TRACE + b"-" + SPAN + b"-1", Incoming(TRACE, SPAN, True, False, None, B3)),
        (TRACE + b"-" + SPAN + b"-0", Incoming(TRACE, SPAN, False, False, None, B3)),
        (TRACE + b"-" + SPAN + b"-d", Incoming(TRACE, SPAN, True, True, None, B3)),
        (TRACE + b"-" + SPAN + b"-1-" + PARENT, Incoming(TRACE, SPAN, True, False, None, B3)),
        (TRACE64 + b"-" + SPAN + b"-1", Incoming(b"0" * 16 + TRACE64, SPAN, True, False, None, B3)),
        (b"1", Incoming(b"", b"", True, False, None, B3)),
        (b"0", Incoming(b"", b"", False, False, None, B3)),
        (b"d", Incoming(b"", b"", True, True, None, B3)),
    ],
)
def test_valid_b3_single(value: bytes, expected: Incoming) -> None:
    assert extract([(b"b3", value)]) == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(TRACE.upper() + b"-" + SPAN, id="upper-case"),
        pytest.param(TRACE[:-2] + b"-" + SPAN, id="30 hex trace id"),
        pytest.param(TRACE64[:-1] + b"-" + SPAN, id="15 hex trace id"),
        pytest.param(TRACE + b"-" + SPAN + b"ab", id="18 hex span id"),
        pytest.param(b"0" * 32 + b"-" + SPAN, id="all-zero trace id"),
        pytest.param(b"0" * 16 + b"-" + SPAN, id="all-zero 64-bit trace id"),
        pytest.param(TRACE + b"-" + b"0" * 16, id="all-zero span id"),
        pytest.param(TRACE + b"-" + SPAN + b"-2", id="unknown sampling state"),
        pytest.param(TRACE + b"-" + SPAN + b"-true", id="true is multi-only"),
        pytest.param(TRACE + b"-" + SPAN + b"-", id="empty sampling state"),
        pytest.param(TRACE + b"-" + SPAN + b"-1-" + PARENT[:-1], id="short parent"),
        pytest.param(TRACE + b"-" + SPAN + b"-1-" + b"0" * 16, id="all-zero parent"),
        pytest.param(TRACE + b"-" + SPAN + b"-1-" + PARENT + b"-x", id="five fields"),
        pytest.param(TRACE + b"-" + PARENT + b"-" + SPAN, id="parent without sampling"),
        pytest.param(TRACE, id="trace id only"),
        pytest.param(b"true", id="lone true"),
        pytest.param(b"", id="empty"),
        pytest.param(b"-" * 300, id="long"),
    ],
)
def test_invalid_b3_single_is_absent(value: bytes) -> None:
    assert extract([(b"b3", value)]) is None


# --------------------------------------------------------------------------- B3 multi


def multi(**fields: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"x-b3-" + name.encode(), value) for name, value in fields.items()]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (multi(traceid=TRACE, spanid=SPAN), Incoming(TRACE, SPAN, None, False, None, B3_MULTI)),
        (
            multi(traceid=TRACE64, spanid=SPAN, parentspanid=PARENT, sampled=b"1"),
            Incoming(b"0" * 16 + TRACE64, SPAN, True, False, None, B3_MULTI),
        ),
        (
            multi(traceid=TRACE, spanid=SPAN, sampled=b"0"),
            Incoming(TRACE, SPAN, False, False, None, B3_MULTI),
        ),
        (
            multi(traceid=TRACE, spanid=SPAN, sampled=b"true"),
            Incoming(TRACE, SPAN, True, False, None, B3_MULTI),
        ),
        (
            multi(traceid=TRACE, spanid=SPAN, sampled=b"false"),
            Incoming(TRACE, SPAN, False, False, None, B3_MULTI),
        ),
        (
            multi(traceid=TRACE, spanid=SPAN, flags=b"1"),
            Incoming(TRACE, SPAN, True, True, None, B3_MULTI),
        ),
        (
            multi(traceid=TRACE, spanid=SPAN, sampled=b"0", flags=b"1"),
            Incoming(TRACE, SPAN, True, True, None, B3_MULTI),
        ),
        (
            multi(traceid=TRACE, spanid=SPAN, flags=b"0"),
            Incoming(TRACE, SPAN, None, False, None, B3_MULTI),
        ),
        (multi(sampled=b"0"), Incoming(b"", b"", False, False, None, B3_MULTI)),
        (multi(flags=b"1"), Incoming(b"", b"", True, True, None, B3_MULTI)),
    ],
)
def test_valid_b3_multi(headers: list[tuple[bytes, bytes]], expected: Incoming) -> None:
    assert extract(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(multi(traceid=TRACE), id="trace id without span id"),
        pytest.param(multi(spanid=SPAN, sampled=b"1"), id="span id without trace id"),
        pytest.param(multi(parentspanid=PARENT), id="parent only"),
        pytest.param(multi(traceid=TRACE, spanid=SPAN, sampled=b"yes"), id="unknown sampled"),
        pytest.param(multi(traceid=TRACE, spanid=SPAN, sampled=b"True"), id="True capitalised"),
        pytest.param(multi(traceid=TRACE, spanid=SPAN, flags=b"2"), id="unknown flags"),
        pytest.param(multi(traceid=TRACE, spanid=SPAN, parentspanid=b"x"), id="bad parent"),
        pytest.param(multi(traceid=TRACE.upper(), spanid=SPAN), id="upper-case trace id"),
        pytest.param(multi(traceid=TRACE, spanid=b"0" * 16), id="all-zero span id"),
        pytest.param(multi(traceid=b"0" * 32, spanid=SPAN), id="all-zero trace id"),
        pytest.param(
            [*multi(traceid=TRACE, spanid=SPAN), *multi(traceid=TRACE)], id="repeated trace id"
        ),
    ],
)
def test_invalid_b3_multi_is_absent(headers: list[tuple[bytes, bytes]]) -> None:
    assert extract(headers) is None


# --------------------------------------------------------------------------- precedence


OTHER_TRACE = b"11111111111111111111111111111111"
OTHER_SPAN = b"2222222222222222"


def test_no_trace_headers_is_none() -> None:
    assert extract([]) is None
    assert extract([(b"host", b"a"), (b"x-b3", b"1"), (b"b3x", b"1"), (b"trace", b"1")]) is None


def test_valid_traceparent_wins_and_every_present_form_is_recorded() -> None:
    headers = [
        *multi(traceid=OTHER_TRACE, spanid=OTHER_SPAN),
        (b"b3", OTHER_TRACE + b"-" + OTHER_SPAN + b"-0"),
        *tp(),
    ]
    assert extract(headers) == Incoming(TRACE, SPAN, True, False, None, W3C | B3 | B3_MULTI)


def test_invalid_traceparent_falls_back_to_b3_single() -> None:
    headers = [*tp(version=b"ff"), (b"b3", OTHER_TRACE + b"-" + OTHER_SPAN + b"-0")]
    assert extract(headers) == Incoming(OTHER_TRACE, OTHER_SPAN, False, False, None, W3C | B3)


def test_b3_single_wins_over_multi() -> None:
    headers = [*multi(traceid=TRACE, spanid=SPAN), (b"b3", OTHER_TRACE + b"-" + OTHER_SPAN)]
    incoming = extract(headers)
    assert incoming is not None
    assert (incoming.trace_id, incoming.span_id) == (OTHER_TRACE, OTHER_SPAN)


def test_invalid_b3_single_falls_back_to_multi() -> None:
    headers = [(b"b3", b"nonsense"), *multi(traceid=TRACE, spanid=SPAN, sampled=b"1")]
    assert extract(headers) == Incoming(TRACE, SPAN, True, False, None, B3 | B3_MULTI)


def test_every_form_invalid_is_none() -> None:
    headers = [(b"traceparent", b"x"), (b"b3", b"x"), (b"x-b3-traceid", b"x")]
    assert extract(headers) is None


# --------------------------------------------------------------------------- gateway span


def test_new_root_span() -> None:
    span = start_span(None, Random(1), 1.0)
    assert HEX32.fullmatch(span.trace_id)
    assert HEX16.fullmatch(span.span_id)
    assert span.trace_id != b"0" * 32
    assert span.span_id != b"0" * 16
    assert (span.parent_id, span.sampled, span.debug, span.tracestate, span.forms) == (
        b"",
        True,
        False,
        None,
        0,
    )


def test_ids_are_never_all_zero() -> None:
    span = start_span(None, ScriptedRandom([0, 0, 5, 0, 9]), 1.0)
    assert span.trace_id == b"0" * 31 + b"5"
    assert span.span_id == b"0" * 15 + b"9"


def test_continued_span_keeps_trace_and_state_and_has_the_caller_as_parent() -> None:
    incoming = Incoming(TRACE, SPAN, False, False, b"a=1", W3C | B3)
    span = start_span(incoming, ScriptedRandom([0xABC]), 1.0)
    assert span == Span(TRACE, b"0000000000000abc", SPAN, False, False, b"a=1", W3C | B3)


@pytest.mark.parametrize(
    ("rate", "fraction", "sampled"),
    [(0.5, 0.3, True), (0.5, 0.5, False), (0.2, 0.3, False), (1.0, 0.99, True), (0.0, 0.0, False)],
)
def test_sampling_without_a_decision_uses_the_rate(
    rate: float, fraction: float, sampled: bool
) -> None:
    assert start_span(None, ScriptedRandom(fraction=fraction), rate).sampled is sampled
    deferred = Incoming(TRACE, SPAN, None, False, None, B3)
    assert start_span(deferred, ScriptedRandom(fraction=fraction), rate).sampled is sampled


def test_rate_one_and_zero_draw_nothing() -> None:
    rng = ScriptedRandom(fraction=0.5)
    start_span(None, rng, 1.0)
    start_span(None, rng, 0.0)
    assert rng.random_calls == 0


@pytest.mark.parametrize("decision", [True, False])
def test_the_callers_decision_beats_the_rate(decision: bool) -> None:
    incoming = Incoming(TRACE, SPAN, decision, False, None, W3C)
    rate = 0.0 if decision else 1.0
    assert start_span(incoming, ScriptedRandom(fraction=0.5), rate).sampled is decision


def test_sampling_only_context_starts_a_new_trace_with_the_decision() -> None:
    span = start_span(Incoming(b"", b"", True, True, None, B3), Random(3), 0.0)
    assert HEX32.fullmatch(span.trace_id)
    assert (span.parent_id, span.sampled, span.debug, span.forms) == (b"", True, True, B3)


# --------------------------------------------------------------------------- inject


SPAN_OUT = Span(TRACE, b"1234567890abcdef", SPAN, True, False, None, 0)


def test_inject_replaces_every_trace_header_and_keeps_the_rest_in_order() -> None:
    headers = [
        (b"host", b"h"),
        (b"traceparent", b"stale"),
        (b"accept", b"*/*"),
        (b"tracestate", b"stale=1"),
        (b"b3", b"stale"),
        *[(name, b"stale") for name in sorted(TRACE_HEADER_NAMES) if name.startswith(b"x-b3-")],
        (b"x-other", b"1"),
    ]
    original = list(headers)
    out = inject(headers, SPAN_OUT, W3C)
    assert headers == original
    assert out == [
        (b"host", b"h"),
        (b"accept", b"*/*"),
        (b"x-other", b"1"),
        (b"traceparent", b"00-" + TRACE + b"-1234567890abcdef-01"),
    ]


def test_inject_flags_and_tracestate() -> None:
    span = SPAN_OUT._replace(sampled=False, tracestate=b"a=1,b=2")
    assert inject([], span, W3C) == [
        (b"traceparent", b"00-" + TRACE + b"-1234567890abcdef-00"),
        (b"tracestate", b"a=1,b=2"),
    ]


def test_traceparent_is_always_sent() -> None:
    assert [name for name, _ in inject([], SPAN_OUT, 0)] == [b"traceparent"]
    assert [name for name, _ in inject([], SPAN_OUT, B3)] == [b"traceparent", b"b3"]


def test_b3_forms_from_the_config() -> None:
    assert inject([], SPAN_OUT, ALL_FORMS)[1:] == [
        (b"b3", TRACE + b"-1234567890abcdef-1-" + SPAN),
        (b"x-b3-traceid", TRACE),
        (b"x-b3-spanid", b"1234567890abcdef"),
        (b"x-b3-parentspanid", SPAN),
        (b"x-b3-sampled", b"1"),
    ]


def test_b3_forms_the_request_used_are_answered() -> None:
    span = SPAN_OUT._replace(forms=B3_MULTI, parent_id=b"", sampled=False)
    assert inject([], span, W3C)[1:] == [
        (b"x-b3-traceid", TRACE),
        (b"x-b3-spanid", b"1234567890abcdef"),
        (b"x-b3-sampled", b"0"),
    ]
    span = span._replace(forms=B3)
    assert inject([], span, W3C)[1:] == [(b"b3", TRACE + b"-1234567890abcdef-0")]


def test_debug_is_propagated_as_debug() -> None:
    span = SPAN_OUT._replace(debug=True)
    out = dict(inject([], span, ALL_FORMS))
    assert out[b"b3"] == TRACE + b"-1234567890abcdef-d-" + SPAN
    assert out[b"x-b3-flags"] == b"1"
    assert b"x-b3-sampled" not in out
    assert out[b"traceparent"].endswith(b"-01")


def test_a_continued_b3_request_leaves_with_consistent_ids_in_every_form() -> None:
    received = [(b"b3", TRACE64 + b"-" + SPAN + b"-1"), (b"traceparent", b"stale")]
    incoming = extract(received)
    assert incoming is not None
    span = start_span(incoming, Random(5), 0.0)
    out = inject(received, span, B3_MULTI)
    for form in (b"traceparent", b"b3", b"x-b3-"):
        alone = [line for line in out if line[0].startswith(form)]
        again = extract(alone)
        assert again is not None
        assert (again.trace_id, again.span_id, again.sampled) == (
            b"0" * 16 + TRACE64,
            span.span_id,
            True,
        )


def test_propagation_forms() -> None:
    assert propagation_forms(()) == 0
    assert propagation_forms(("w3c",)) == W3C
    assert propagation_forms(["b3", "b3multi"]) == B3 | B3_MULTI
    assert propagation_forms(("w3c", "b3", "b3multi", "jaeger")) == ALL_FORMS


# --------------------------------------------------------------------------- request id


NAME = b"x-request-id"


@pytest.mark.parametrize(
    "value", [b"abc", b"A.b_c:d-9", b"x" * 128, b"0", b"550e8400-e29b-41d4-a716-446655440000"]
)
def test_a_valid_id_from_a_trusted_peer_is_kept(value: bytes) -> None:
    assert request_id([(b"host", b"a"), (NAME, value)], NAME, trusted=True, rng=Random(1)) == value


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param([], id="absent"),
        pytest.param([(NAME, b"")], id="empty"),
        pytest.param([(NAME, b"x" * 129)], id="129 characters"),
        pytest.param([(NAME, b"a b")], id="space"),
        pytest.param([(NAME, b"a/b")], id="slash"),
        pytest.param([(NAME, b"abc\n")], id="trailing newline"),
        pytest.param([(NAME, "é".encode())], id="non-ASCII"),
        pytest.param([(NAME, b"abc"), (NAME, b"abc")], id="repeated"),
        pytest.param([(b"x-correlation-id", b"abc")], id="another header"),
    ],
)
def test_otherwise_a_new_id_is_made(headers: list[tuple[bytes, bytes]]) -> None:
    new = request_id(headers, NAME, trusted=True, rng=Random(1))
    assert new == new_request_id(Random(1))
    assert HEX32.fullmatch(new)


def test_an_untrusted_peers_id_is_replaced() -> None:
    new = request_id([(NAME, b"abc")], NAME, trusted=False, rng=Random(2))
    assert new != b"abc"
    assert HEX32.fullmatch(new)


def test_valid_request_id() -> None:
    assert valid_request_id(b"a")
    assert not valid_request_id(b"")
    assert not valid_request_id(b"a+b")


def test_set_request_id_replaces_client_copies() -> None:
    headers = [(NAME, b"client"), (b"host", b"h"), (NAME, b"again"), (b"x-other", b"1")]
    original = list(headers)
    assert set_request_id(headers, NAME, b"ours") == [
        (b"host", b"h"),
        (b"x-other", b"1"),
        (NAME, b"ours"),
    ]
    assert headers == original
