"""Properties of the access-log line (SPEC §9.2).

For any record — text fields with any code point (control characters, quotes, backslashes,
U+2028, lone surrogates), byte fields with any octets (invalid UTF-8, latin-1, NULs, CR/LF), any
counters and any float times (NaN and infinities included) — ``encode_line`` returns exactly one
line: strict UTF-8, one ``\\n`` at the end and no other, one JSON object whose keys follow the
SPEC order, with ``query`` exactly when asked for and ``user_agent`` exactly when there is one.
Every value round-trips through ``json.loads``: text as it was (a lone surrogate as its
``\\udXXX`` escape), bytes as their UTF-8 reading with invalid octets as ``\\xNN``.
"""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.observability.accesslog import AccessLine, encode_line
from a3s_gateway.observability.record import ExchangeRecord

TEXT_FIELDS = (
    "entrypoint",
    "router",
    "service",
    "backend",
    "client_ip",
    "peer_ip",
    "scheme",
    "protocol",
    "error",
    "middleware",
)
BYTE_FIELDS = ("method", "host", "path", "query", "request_id", "trace_id", "span_id", "user_agent")
COUNT_FIELDS = ("status", "request_bytes", "response_bytes", "attempts")
TIME_FIELDS = ("started", "ended", "upstream_started", "upstream_head", "wall")
ORDER = AccessLine.__struct_fields__

#: Characters that break naive JSON or line splitting.
AWKWARD = ("\n", "\r", "\x00", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", '"', "\\", "\udc80")

texts = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=()), st.sampled_from(AWKWARD)),
    max_size=30,
)
octets = st.one_of(
    st.binary(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=30).map(
        lambda text: text.encode("latin-1")
    ),
    texts.map(lambda text: text.encode("utf-8", "surrogatepass")),
)
counts = st.integers(min_value=0, max_value=2**62)
times = st.one_of(
    st.floats(min_value=0.0, max_value=1e6),
    st.floats(min_value=1.6e9, max_value=2.2e9),
    st.floats(),
)


@st.composite
def records(draw: st.DrawFn) -> ExchangeRecord:
    record = ExchangeRecord(draw(texts), draw(times))
    for name in TEXT_FIELDS[1:]:
        setattr(record, name, draw(texts))
    for name in BYTE_FIELDS:
        setattr(record, name, draw(octets))
    for name in COUNT_FIELDS:
        setattr(record, name, draw(counts))
    for name in TIME_FIELDS[1:]:
        setattr(record, name, draw(times))
    return record


def _shown(text: str) -> str:
    """What a text field reads as once logged."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@given(records(), st.booleans())
@example(ExchangeRecord("\udcff\n", float("nan")), True)
def test_any_record_gives_one_valid_json_line_that_round_trips(
    record: ExchangeRecord, include_query: bool
) -> None:
    line = encode_line(record, include_query=include_query)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b"\r" not in line
    value = json.loads(line.decode("utf-8"))  # strict UTF-8
    assert isinstance(value, dict)

    keys = list(value)
    assert keys == [name for name in ORDER if name in value]
    assert ("query" in value) is include_query
    assert ("user_agent" in value) is bool(record.user_agent)
    optional = {"query", "user_agent", "grpc_status", "tls_version", "sni"}
    assert {name for name in ORDER if name not in optional and "ws_close" not in name} <= set(keys)

    for name in TEXT_FIELDS:
        assert value[name] == _shown(getattr(record, name)), name
    for name in BYTE_FIELDS:
        if name in value:
            assert value[name] == getattr(record, name).decode("utf-8", "backslashreplace")
    for name in COUNT_FIELDS:
        assert value[name] == getattr(record, name)
    assert value["type"] == "http"
    assert isinstance(value["ts"], str)
    assert len(value["ts"]) == len("2026-12-02T15:04:05.123Z")


@given(records(), octets)
def test_without_include_query_the_line_does_not_depend_on_the_query(
    record: ExchangeRecord, other_query: bytes
) -> None:
    line = encode_line(record, include_query=False)
    record.query = other_query
    assert encode_line(record, include_query=False) == line
