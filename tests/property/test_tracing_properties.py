"""Properties of trace context and request ids (SPEC §9.4, §9.5): format → parse round trips for
``traceparent`` and B3 (single and multi), arbitrary header bytes never raise and give either no
context or a valid one, injected headers parse back to the gateway's ids in every form, and
request ids always match the §9.5 pattern.

The strategies are local: they serve this subject only (tests/property/strategies.py is shared).
"""

from __future__ import annotations

import re
from random import Random

from hypothesis import example, given
from hypothesis import strategies as st

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
    request_id,
    set_request_id,
    start_span,
)
from a3s_gateway.protocols.headers import Headers
from tests.property.strategies import header_lines

HEX32 = re.compile(rb"[0-9a-f]{32}")
HEX16 = re.compile(rb"[0-9a-f]{16}")
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
B3_MULTI_NAMES = sorted(name for name in TRACE_HEADER_NAMES if name.startswith(b"x-b3-"))

trace_ids = st.integers(1, 2**128 - 1)
span_ids = st.integers(1, 2**64 - 1)
b3_trace_ids = st.one_of(
    st.integers(1, 2**64 - 1).map(lambda n: b"%016x" % n), trace_ids.map(lambda n: b"%032x" % n)
)
rngs = st.integers(0, 2**32).map(Random)
forms = st.integers(0, ALL_FORMS)

#: Bytes dense in the characters of every trace grammar, so near-valid values are common.
TRACE_ALPHABET = b"0123456789abcdefABF-dtrue \t,=x"
near_valid = st.one_of(
    st.binary(max_size=80),
    st.lists(st.sampled_from(list(TRACE_ALPHABET)), max_size=80).map(bytes),
    # A valid traceparent or b3 value with one byte changed, inserted or removed.
    st.tuples(
        st.sampled_from(
            [
                b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                b"4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-b7ad6b7169203331",
                b"a3ce929d0e0e4736-00f067aa0ba902b7",
            ]
        ),
        st.integers(0, 70),
        st.sampled_from([b"", b"0", b"-", b"F", b"g", b" "]),
        st.booleans(),
    ).map(lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + (1 if t[3] else 0) :]),
)
hex32 = trace_ids.map(lambda n: b"%032x" % n)
hex16 = span_ids.map(lambda n: b"%016x" % n)
#: Well-formed lines of every form (each may still clash with another line of the same name).
valid_lines = st.one_of(
    st.tuples(
        st.just(b"traceparent"),
        st.builds(lambda t, s, f: b"00-%s-%s-%02x" % (t, s, f), hex32, hex16, st.integers(0, 255)),
    ),
    st.tuples(
        st.just(b"tracestate"),
        st.lists(st.sampled_from([b"a=1", b"vendor=x:y", b" b=2"]), max_size=3).map(b",".join),
    ),
    st.tuples(
        st.just(b"b3"),
        st.builds(
            lambda t, s, rest: b"-".join([t, s, *rest]),
            b3_trace_ids,
            hex16,
            st.sampled_from([(), (b"1",), (b"0",), (b"d",)]) | st.tuples(st.just(b"1"), hex16),
        ),
    ),
    st.tuples(st.just(b"b3"), st.sampled_from([b"0", b"1", b"d"])),
    st.tuples(st.just(b"x-b3-traceid"), b3_trace_ids),
    st.tuples(st.sampled_from([b"x-b3-spanid", b"x-b3-parentspanid"]), hex16),
    st.tuples(st.just(b"x-b3-sampled"), st.sampled_from([b"1", b"0", b"true", b"false"])),
    st.tuples(st.just(b"x-b3-flags"), st.sampled_from([b"1", b"0"])),
)
trace_lines = st.one_of(
    valid_lines, st.tuples(st.sampled_from(sorted(TRACE_HEADER_NAMES)), near_valid)
)
#: Header lists mixing trace lines (valid, near-valid, garbage; repeats included) with ordinary
#: ones.
mixed_headers = st.lists(st.one_of(trace_lines, header_lines()), max_size=12)


def assert_valid(incoming: Incoming | None, headers: Headers) -> None:
    """A context ``extract`` may return: ids well-formed (or both empty with a decision)."""
    if incoming is None:
        return
    if incoming.trace_id or incoming.span_id:
        assert HEX32.fullmatch(incoming.trace_id)
        assert HEX16.fullmatch(incoming.span_id)
        assert incoming.trace_id != b"0" * 32
        assert incoming.span_id != b"0" * 16
    else:
        assert incoming.sampled is not None
    assert not incoming.debug or incoming.sampled
    if incoming.tracestate is not None:
        assert incoming.forms & W3C
        assert 0 < len(incoming.tracestate) <= 512
        assert incoming.tracestate == b",".join(v for n, v in headers if n == b"tracestate")
    assert incoming.forms
    assert incoming.forms & ~ALL_FORMS == 0
    present = {name for name, _ in headers}
    assert bool(incoming.forms & W3C) == (b"traceparent" in present)
    assert bool(incoming.forms & B3) == (b"b3" in present)
    assert bool(incoming.forms & B3_MULTI) == any(name in present for name in B3_MULTI_NAMES)


@given(trace_ids, span_ids, st.integers(0, 255), st.integers(0, 254), st.binary(max_size=20))
@example(1, 1, 0, 0, b"")
@example(2**128 - 1, 2**64 - 1, 255, 254, b"x")
def test_traceparent_round_trip(
    trace: int, span: int, flags: int, version: int, extra: bytes
) -> None:
    value = b"%02x-%032x-%016x-%02x" % (version, trace, span, flags)
    if version and extra:
        value += b"-" + extra.replace(b"\n", b"").replace(b"\r", b"")
    incoming = extract([(b"traceparent", value)])
    assert incoming == Incoming(
        b"%032x" % trace, b"%016x" % span, bool(flags & 1), False, None, W3C
    )


@given(b3_trace_ids, span_ids, st.sampled_from([None, b"0", b"1", b"d"]), st.none() | span_ids)
def test_b3_single_round_trip(
    trace: bytes, span: int, state: bytes | None, parent: int | None
) -> None:
    fields = [trace, b"%016x" % span]
    if state is not None:
        fields.append(state)
        if parent is not None:
            fields.append(b"%016x" % parent)
    incoming = extract([(b"b3", b"-".join(fields))])
    assert incoming is not None
    assert incoming.trace_id == trace.rjust(32, b"0")
    assert incoming.span_id == b"%016x" % span
    assert incoming.sampled == (None if state is None else state != b"0")
    assert incoming.debug == (state == b"d")
    assert incoming.forms == B3


@given(
    b3_trace_ids,
    span_ids,
    st.none() | span_ids,
    st.sampled_from([None, b"0", b"1", b"true", b"false"]),
    st.sampled_from([None, b"0", b"1"]),
    st.permutations(range(5)),
)
def test_b3_multi_round_trip(
    trace: bytes,
    span: int,
    parent: int | None,
    sampled: bytes | None,
    flags: bytes | None,
    order: list[int],
) -> None:
    lines: list[tuple[bytes, bytes | None]] = [
        (b"x-b3-traceid", trace),
        (b"x-b3-spanid", b"%016x" % span),
        (b"x-b3-parentspanid", None if parent is None else b"%016x" % parent),
        (b"x-b3-sampled", sampled),
        (b"x-b3-flags", flags),
    ]
    headers = [(name, value) for name, value in (lines[i] for i in order) if value is not None]
    incoming = extract(headers)
    debug = flags == b"1"
    expected_sampled = True if debug else None if sampled is None else sampled in (b"1", b"true")
    assert incoming == Incoming(
        trace.rjust(32, b"0"), b"%016x" % span, expected_sampled, debug, None, B3_MULTI
    )


spans = st.builds(
    Span,
    trace_id=hex32,
    span_id=hex16,
    parent_id=st.just(b"") | hex16,
    sampled=st.booleans(),
    debug=st.booleans(),
    tracestate=st.none(),
    forms=forms,
).map(lambda span: span._replace(sampled=span.sampled or span.debug))


@given(spans)
def test_span_formats_round_trip(span: Span) -> None:
    for headers, debug, form in (
        ([(b"traceparent", span.traceparent())], False, W3C),
        ([(b"b3", span.b3())], span.debug, B3),
        (span.b3_multi(), span.debug, B3_MULTI),
    ):
        assert extract(headers) == Incoming(
            span.trace_id, span.span_id, span.sampled, debug, None, form
        )


@given(mixed_headers)
@example([(b"b3", b"d"), (b"x-b3-flags", b"1")])
@example([(b"traceparent", b"01-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01-"), (b"tracestate", b",")])
def test_arbitrary_trace_headers_never_raise_and_give_none_or_a_valid_context(
    headers: Headers,
) -> None:
    assert_valid(extract(headers), headers)


@given(mixed_headers, rngs, st.floats(0, 1), forms)
def test_injected_headers_parse_back_to_the_gateways_ids_in_every_form(
    headers: Headers, rng: Random, rate: float, config_forms: int
) -> None:
    span = start_span(extract(headers), rng, rate)
    out = inject(headers, span, config_forms)
    again = extract(out)
    assert again is not None
    assert (again.trace_id, again.span_id, again.sampled) == (
        span.trace_id,
        span.span_id,
        span.sampled,
    )
    assert again.tracestate == span.tracestate
    # Each form alone carries the same ids; exactly the wanted forms are present.
    wanted = config_forms | span.forms | W3C
    assert again.forms == wanted
    for form, prefix in ((W3C, b"traceparent"), (B3, b"b3"), (B3_MULTI, b"x-b3-")):
        alone = [
            line for line in out if line[0] in TRACE_HEADER_NAMES and line[0].startswith(prefix)
        ]
        if not wanted & form:
            assert not alone
            continue
        parsed = extract(alone)
        assert parsed is not None
        assert (parsed.trace_id, parsed.span_id, parsed.sampled) == (
            span.trace_id,
            span.span_id,
            span.sampled,
        )
        assert parsed.debug == (span.debug and form != W3C)
    # Lines that are not trace headers pass through in order.
    assert [line for line in out if line[0] not in TRACE_HEADER_NAMES] == [
        line for line in headers if line[0] not in TRACE_HEADER_NAMES
    ]


sampling_only = st.builds(
    Incoming, st.just(b""), st.just(b""), st.booleans(), st.booleans(), st.none(), st.just(B3)
)


@given(rngs, st.none() | sampling_only, st.floats(0, 1))
def test_new_trace_ids_are_well_formed(rng: Random, incoming: Incoming | None, rate: float) -> None:
    span = start_span(incoming, rng, rate)
    assert HEX32.fullmatch(span.trace_id)
    assert HEX16.fullmatch(span.span_id)
    assert span.trace_id != b"0" * 32
    assert span.span_id != b"0" * 16
    assert span.parent_id == b""


request_id_values = st.one_of(
    st.binary(max_size=140),
    st.text(alphabet="Az09._:-/ ", min_size=0, max_size=130).map(str.encode),
)


@given(
    st.lists(
        st.tuples(st.sampled_from([b"x-request-id", b"host", b"x-id"]), request_id_values),
        max_size=5,
    ),
    st.booleans(),
    rngs,
)
def test_request_ids_always_match_the_pattern(headers: Headers, trusted: bool, rng: Random) -> None:
    value = request_id(headers, b"x-request-id", trusted=trusted, rng=rng)
    assert REQUEST_ID.fullmatch(value)
    sent = [v for n, v in headers if n == b"x-request-id"]
    if trusted and len(sent) == 1 and REQUEST_ID.fullmatch(sent[0]):
        assert value == sent[0]
    else:
        assert HEX32.fullmatch(value)
    upstream = set_request_id(headers, b"x-request-id", value)
    assert [v for n, v in upstream if n == b"x-request-id"] == [value]
