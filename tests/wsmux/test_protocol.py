"""The multiplexer's control protocol (SPEC §5.13): what ``parse_control`` accepts, what it
refuses and why, and the exact JSON of every message the gateway sends."""

from __future__ import annotations

import json

import pytest

from a3s_gateway.wsmux.protocol import (
    ControlError,
    ErrorCode,
    List,
    ListChannels,
    Ping,
    Publish,
    Subscribe,
    Unsubscribe,
    encode_ack,
    encode_channels,
    encode_closed,
    encode_control,
    encode_error,
    encode_message,
    encode_pong,
    parse_control,
    utf8_size,
)

BAD = ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    ("text", "frame"),
    [
        ('{"type":"subscribe","channel":"c","id":1}', Subscribe("c", 1)),
        ('{"type":"subscribe","channel":"c"}', Subscribe("c")),
        ('{"type":"unsubscribe","channel":"c","id":"x"}', Unsubscribe("c", "x")),
        ('{"type":"publish","channel":"c","data":"hi"}', Publish("c", "hi")),
        ('{"type":"publish","channel":"c","data":"\\u00e9\\n"}', Publish("c", "é\n")),
        (
            '{"type":"publish","channel":"c","data":{"a": [1, 2.5]}}',
            Publish("c", '{"a": [1, 2.5]}'),
        ),
        ('{"type":"publish","channel":"c","data":null,"id":0}', Publish("c", "null", 0)),
        ('{"type":"publish","channel":"c","data":-1e3}', Publish("c", "-1e3")),
        ('{"type":"publish","channel":"c","data_b64":"AP8="}', Publish("c", b"\x00\xff")),
        ('{"type":"publish","channel":"c","data_b64":""}', Publish("c", b"")),
        ('{"type":"ping","id":-5}', Ping(-5)),
        ('{"type":"ping","id":null}', Ping()),
        ('{"type":"ping","channel":42}', Ping()),  # a field the type does not use: ignored
        ('{"type":"list"}', ListChannels()),
        ('{"id":"a","type":"subscribe","channel":"c","future":{"x":[1]}}', Subscribe("c", "a")),
        (
            '{"type":"ping","id":123456789012345678901234567890}',
            Ping(123456789012345678901234567890),
        ),
    ],
)
def test_valid_messages(text: str, frame: object) -> None:
    assert parse_control(text) == frame


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", ControlError(BAD, "invalid JSON")),
        ("{", ControlError(BAD, "invalid JSON")),
        ('{"type":"ping"} x', ControlError(BAD, "invalid JSON")),
        ("[1]", ControlError(BAD, "a control message is a JSON object")),
        ('"ping"', ControlError(BAD, "a control message is a JSON object")),
        ("{}", ControlError(BAD, 'missing "type"')),
        ('{"type":"PING","id":1}', ControlError(BAD, 'unknown "type"', 1)),
        ('{"type":7,"channel":"c"}', ControlError(BAD, 'unknown "type"', None, "c")),
        ('{"type":"ping","id":true}', ControlError(BAD, '"id" must be a string or an integer')),
        ('{"type":"ping","id":1.5}', ControlError(BAD, '"id" must be a string or an integer')),
        (
            '{"type":"subscribe","id":[1],"channel":"c"}',
            ControlError(BAD, '"id" must be a string or an integer', None, "c"),
        ),
        (
            '{"type":"subscribe","id":2}',
            ControlError(BAD, '"channel" must be a non-empty string', 2),
        ),
        (
            '{"type":"subscribe","channel":"","id":2}',
            ControlError(BAD, '"channel" must be a non-empty string', 2),
        ),
        (
            '{"type":"unsubscribe","channel":["c"]}',
            ControlError(BAD, '"channel" must be a non-empty string'),
        ),
        (
            '{"type":"publish","channel":"c","id":3}',
            ControlError(BAD, '"publish" needs "data" or "data_b64"', 3, "c"),
        ),
        (
            '{"type":"publish","channel":"c","data":"a","data_b64":"YQ=="}',
            ControlError(BAD, 'give "data" or "data_b64", not both', None, "c"),
        ),
        (
            '{"type":"publish","channel":"c","data_b64":"YQ"}',
            ControlError(BAD, '"data_b64" is not valid base64', None, "c"),
        ),
        (
            '{"type":"publish","channel":"c","data_b64":"é==="}',
            ControlError(BAD, '"data_b64" is not valid base64', None, "c"),
        ),
        (
            '{"type":"publish","channel":"c","data_b64":"a b="}',
            ControlError(BAD, '"data_b64" is not valid base64', None, "c"),
        ),
        (
            '{"type":"publish","channel":"c","data_b64":5}',
            ControlError(BAD, '"data_b64" must be a base64 string', None, "c"),
        ),
        ('{"type":"ping","x":"\\ud800"}', ControlError(BAD, "invalid JSON")),  # lone surrogate
    ],
)
def test_invalid_messages(text: str, error: ControlError) -> None:
    assert parse_control(text) == error


@pytest.mark.parametrize("field", ["x", "data", "channel", "id"])
def test_deep_nesting_is_refused_not_raised(field: str) -> None:
    # msgspec answers very deep nesting with RecursionError, in skipped fields too.
    deep = "[" * 100_000 + "]" * 100_000
    text = f'{{"type":"ping","{field}":{deep}}}'
    assert parse_control(text) == ControlError(BAD, "invalid JSON")


def test_text_that_no_frame_carries_is_refused_not_raised() -> None:
    assert parse_control("\ud800") == ControlError(BAD, "invalid JSON")  # a lone surrogate
    assert parse_control("[" * 100_000) == ControlError(BAD, "a control message is a JSON object")


def test_list_is_the_spec_name_of_list_channels() -> None:
    assert List is ListChannels


def test_replies_are_the_spec_json() -> None:
    assert json.loads(encode_ack("subscribe", "c", 1)) == {
        "type": "ack",
        "op": "subscribe",
        "channel": "c",
        "id": 1,
    }
    assert encode_ack("unsubscribe", "c", None, already=True) == (
        b'{"type":"ack","op":"unsubscribe","channel":"c","already":true}'
    )
    assert encode_pong("p") == b'{"type":"pong","id":"p"}'
    assert encode_pong(None) == b'{"type":"pong"}'
    assert (
        encode_channels({"b": 1, "a": 2}, 3) == b'{"type":"channels","channels":["a","b"],"id":3}'
    )
    assert encode_message("c", "é") == '{"type":"message","channel":"c","data":"é"}'.encode()
    assert encode_message("c", b"\x00") == b'{"type":"message","channel":"c","data_b64":"AA=="}'
    assert encode_closed("c", 1006, "") == (
        b'{"type":"closed","channel":"c","code":1006,"reason":""}'
    )


def test_errors_echo_what_they_know_in_spec_order() -> None:
    assert encode_error(ControlError(BAD, "invalid JSON")) == (
        b'{"type":"error","code":"bad_request","message":"invalid JSON"}'
    )
    rejected = ControlError(ErrorCode.UPSTREAM_REJECTED, "no", "i", "c", 403)
    assert encode_error(rejected) == (
        b'{"type":"error","id":"i","channel":"c","code":"upstream_rejected",'
        b'"message":"no","status":403}'
    )


def test_every_error_code_is_the_spec_word() -> None:
    assert {code.value for code in ErrorCode} == {
        "bad_request",
        "unknown_channel",
        "not_subscribed",
        "too_many_channels",
        "upstream_unavailable",
        "upstream_rejected",
        "message_too_large",
        "slow_consumer",
    }


@pytest.mark.parametrize(
    "frame",
    [
        Subscribe("c", 1),
        Unsubscribe("c", "x"),
        Publish("c", "text", 2),
        Publish("c", b"\x00\x01"),
        Publish("c", ""),
        Ping(),
        ListChannels("l"),
    ],
)
def test_encode_control_round_trips(frame: Subscribe) -> None:
    assert parse_control(encode_control(frame)) == frame


def test_utf8_size() -> None:
    assert utf8_size("abc") == 3
    assert utf8_size("é€😀") == 2 + 3 + 4
