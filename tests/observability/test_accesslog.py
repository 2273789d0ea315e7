"""The access-log line (SPEC §9.2): field names and order, values, ``query``, ``ts``, escaping."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import msgspec
import pytest

from a3s_gateway.observability.accesslog import AccessLine, encode_line, format_ts
from a3s_gateway.observability.record import ExchangeRecord

WALL = 1796223845.123  # 2026-12-02T15:04:05.123Z

#: Every key of a plain HTTP line, in SPEC §9.2 order (``query`` and ``user_agent`` aside).
CORE = [
    "ts",
    "type",
    "entrypoint",
    "router",
    "service",
    "backend",
    "client_ip",
    "peer_ip",
    "method",
    "scheme",
    "host",
    "path",
    "protocol",
    "status",
    "request_bytes",
    "response_bytes",
    "duration_ms",
    "upstream_ms",
    "attempts",
    "error",
    "middleware",
    "request_id",
    "trace_id",
    "span_id",
]


def keys_of(line: bytes) -> list[str]:
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return list(parsed)


def parsed(line: bytes) -> dict[str, object]:
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    value = json.loads(line)
    assert isinstance(value, dict)
    return value


def base(started: float = 100.0, duration: float = 0.0042) -> ExchangeRecord:
    record = ExchangeRecord("web", started)
    record.ended = started + duration
    record.wall = WALL
    record.client_ip = "203.0.113.7"
    record.peer_ip = "10.0.0.2"
    record.method = b"GET"
    record.host = b"api.example.com"
    record.path = b"/api/items"
    return record


def proxied_200() -> ExchangeRecord:
    record = base()
    record.router = "api"
    record.service = "api-svc"
    record.backend = "http://10.0.0.12:8080"
    record.status = 200
    record.request_bytes = 17
    record.response_bytes = 1834
    record.upstream_started = 100.0005
    record.upstream_head = 100.0031
    record.attempts = 1
    record.request_id = b"5f0c3a9be8d14e5b9c2f7a1d3e6b8c40"
    record.trace_id = b"4bf92f3577b34da6a3ce929d0e0e4736"
    record.span_id = b"00f067aa0ba902b7"
    record.user_agent = b"curl/8.5.0"
    record.query = b"page=2"
    return record


def test_a_proxied_200_has_every_field_in_spec_order() -> None:
    line = encode_line(proxied_200(), include_query=False)
    assert keys_of(line) == [*CORE, "user_agent"]
    assert parsed(line) == {
        "ts": "2026-12-02T15:04:05.123Z",
        "type": "http",
        "entrypoint": "web",
        "router": "api",
        "service": "api-svc",
        "backend": "http://10.0.0.12:8080",
        "client_ip": "203.0.113.7",
        "peer_ip": "10.0.0.2",
        "method": "GET",
        "scheme": "http",
        "host": "api.example.com",
        "path": "/api/items",
        "protocol": "HTTP/1.1",
        "status": 200,
        "request_bytes": 17,
        "response_bytes": 1834,
        "duration_ms": 4.2,
        "upstream_ms": 2.6,
        "attempts": 1,
        "error": "",
        "middleware": "",
        "request_id": "5f0c3a9be8d14e5b9c2f7a1d3e6b8c40",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "span_id": "00f067aa0ba902b7",
        "user_agent": "curl/8.5.0",
    }


def test_a_404_without_a_route_keeps_the_empty_names_and_a_null_upstream_time() -> None:
    record = base()
    record.status = 404
    record.response_bytes = 22
    record.error = "no_route"
    line = parsed(encode_line(record, include_query=False))
    assert list(line) == CORE  # no user agent sent: the key is left out
    assert line["router"] == ""
    assert line["service"] == ""
    assert line["backend"] == ""
    assert line["status"] == 404
    assert line["error"] == "no_route"
    assert line["upstream_ms"] is None
    assert line["attempts"] == 0


def test_a_short_circuit_names_the_middleware_that_answered() -> None:
    record = base()
    record.router = "api"
    record.service = "api-svc"
    record.status = 429
    record.middleware = "per-client"
    record.error = "rate_limited"
    line = parsed(encode_line(record, include_query=False))
    assert (line["status"], line["middleware"], line["error"]) == (
        429,
        "per-client",
        "rate_limited",
    )
    assert line["upstream_ms"] is None
    assert line["backend"] == ""


def test_a_502_carries_its_cause_and_the_attempts() -> None:
    record = base()
    record.router = "api"
    record.service = "api-svc"
    record.backend = "http://10.0.0.13:8080"
    record.status = 502
    record.error = "connect_refused"
    record.attempts = 3
    record.upstream_started = 100.001  # attempts started, no response head ever came
    line = parsed(encode_line(record, include_query=False))
    assert (line["status"], line["error"], line["attempts"]) == (502, "connect_refused", 3)
    assert line["backend"] == "http://10.0.0.13:8080"
    assert line["upstream_ms"] is None


def test_status_0_when_nothing_was_sent_is_logged_as_0() -> None:
    record = base()
    record.error = "client_abort"
    assert parsed(encode_line(record, include_query=False))["status"] == 0


def test_the_query_appears_only_with_include_query() -> None:
    record = proxied_200()
    assert "query" not in parsed(encode_line(record, include_query=False))
    assert b"page=2" not in encode_line(record, include_query=False)
    with_query = encode_line(record, include_query=True)
    assert keys_of(with_query) == [*CORE[:13], "query", *CORE[13:], "user_agent"]
    assert parsed(with_query)["query"] == "page=2"
    record.query = b""
    assert parsed(encode_line(record, include_query=True))["query"] == ""


def test_durations_are_milliseconds_with_three_decimals() -> None:
    record = base(started=50.0, duration=0.0123456)
    record.upstream_started = 50.0001
    record.upstream_head = 50.00123449
    line = parsed(encode_line(record, include_query=False))
    assert line["duration_ms"] == 12.346
    assert line["upstream_ms"] == 1.134
    assert b'"duration_ms":12.346,' in encode_line(record, include_query=False)


def test_an_exchange_that_has_not_ended_logs_zero_duration() -> None:
    record = base()
    record.ended = 0.0  # never set: duration clamps to 0, not a negative number
    assert parsed(encode_line(record, include_query=False))["duration_ms"] == 0.0


@pytest.mark.parametrize(
    ("wall", "text"),
    [
        (WALL, "2026-12-02T15:04:05.123Z"),
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1.0009994, "1970-01-01T00:00:01.000Z"),
        (1.9999996, "1970-01-01T00:00:02.000Z"),  # rounds to the µs first, as datetime does
        (1796223845.0005, "2026-12-02T15:04:05.000Z"),  # then truncates: never in the future
        (1715206297.0509994, "2024-05-08T22:11:37.050Z"),
        (-0.001, "1969-12-31T23:59:59.999Z"),
        (float("nan"), "1970-01-01T00:00:00.000Z"),
        (float("inf"), "9999-12-31T23:59:59.999Z"),
        (float("-inf"), "0001-01-01T00:00:00.000Z"),
        (1e300, "9999-12-31T23:59:59.999Z"),
    ],
)
def test_ts_is_rfc3339_utc_with_milliseconds(wall: float, text: str) -> None:
    assert format_ts(wall) == text


def test_ts_agrees_with_datetime_across_seconds_and_the_cached_prefix() -> None:
    shape = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    # Several values per second (the cached prefix) and across second, day and year ends.
    walls = [1798761599.0 + step * 0.1234567 for step in range(40)]
    walls += [1798761599.999, 1798761600.0, 1798761599.999]  # back to a previous second
    for wall in walls:
        expected = datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")
        assert format_ts(wall) == expected.replace("+00:00", "Z")
        assert shape.fullmatch(format_ts(wall))


def test_bytes_that_are_not_utf8_show_as_escapes_and_keep_the_line_valid() -> None:
    record = base()
    record.path = b"/caf\xc3\xa9/\xff\xfe"
    record.host = b"h\xe9st"  # latin-1
    record.user_agent = b"agent\x00\x1b[31m\r\n"
    record.method = b"G\x7fT"
    line = encode_line(record, include_query=False)
    value = parsed(line)
    assert value["path"] == "/café/\\xff\\xfe"
    assert value["host"] == "h\\xe9st"
    assert value["user_agent"] == "agent\x00\x1b[31m\r\n"
    assert value["method"] == "G\x7fT"
    assert b"\r" not in line
    assert b"\x00" not in line
    assert b"\x1b" not in line
    line.decode("utf-8")  # strict UTF-8


def test_text_utf8_cannot_encode_still_gives_a_valid_line() -> None:
    record = base()
    record.router = "r\udc80"  # a lone surrogate: a bug elsewhere, not a lost line
    record.error = "x\ud800y"
    value = parsed(encode_line(record, include_query=False))
    assert value["router"] == "r\\udc80"
    assert value["error"] == "x\\ud800y"
    assert value["path"] == "/api/items"


def test_control_characters_in_text_fields_are_escaped() -> None:
    record = base()
    record.middleware = 'id"\n\\\u2028'
    line = encode_line(record, include_query=False)
    assert parsed(line)["middleware"] == 'id"\n\\\u2028'


def test_one_reused_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_new_encoder(*args: object, **kwargs: object) -> msgspec.json.Encoder:
        raise AssertionError("encode_line built an Encoder")

    monkeypatch.setattr(msgspec.json, "Encoder", no_new_encoder)
    monkeypatch.setattr(msgspec.json, "encode", no_new_encoder)
    assert parsed(encode_line(proxied_200(), include_query=True))["status"] == 200


def test_the_struct_declares_the_spec_fields_in_order() -> None:
    assert AccessLine.__struct_fields__ == (
        *CORE[:13],
        "query",
        "status",
        "grpc_status",
        *CORE[14:],
        "user_agent",
        "tls_version",
        "sni",
        "ws_close_client",
        "ws_close_upstream",
    )
