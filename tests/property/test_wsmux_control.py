"""Properties of the multiplexer's control protocol (SPEC §5.13, DESIGN.md §3.7).

Whatever a client sends — any text, any JSON value, any object with any mix of valid and
invalid fields — ``parse_control`` answers with a frame or a ``ControlError`` and never raises;
what it accepts it accepts exactly (the frame carries the fields as sent, an error echoes only
valid ids and channels); and every frame survives ``encode_control`` → ``parse_control``, every
gateway message is the JSON the SPEC shows.

The strategies are local: they describe this protocol only (``strategies.py`` holds the shared
ones).
"""

from __future__ import annotations

import base64
import json

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.wsmux.protocol import (
    ControlError,
    ControlFrame,
    ErrorCode,
    ListChannels,
    MessageId,
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
    parse_control,
)

KINDS = ("subscribe", "unsubscribe", "publish", "ping", "list")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
message_ids: st.SearchStrategy[MessageId] = st.one_of(st.text(max_size=12), st.integers())
channels = st.text(min_size=1, max_size=16)
payloads: st.SearchStrategy[str | bytes] = st.one_of(st.text(), st.binary())


def frames() -> st.SearchStrategy[ControlFrame]:
    ids = st.none() | message_ids
    return st.one_of(
        st.builds(Subscribe, channels, ids),
        st.builds(Unsubscribe, channels, ids),
        st.builds(Publish, channels, payloads, ids),
        st.builds(Ping, ids),
        st.builds(ListChannels, ids),
    )


#: A field of a control object: absent, valid-looking, or any JSON value at all.
MISSING = object()
type_fields = st.sampled_from((*KINDS, "PING", "", MISSING)) | json_values
channel_fields = st.just(MISSING) | channels | json_values
id_fields = st.just(MISSING) | message_ids | json_values
data_fields = st.just(MISSING) | json_values
b64_fields = (
    st.just(MISSING)
    | st.binary().map(lambda raw: base64.b64encode(raw).decode())
    | st.text(max_size=8)
    | json_values
)


@st.composite
def control_objects(draw: st.DrawFn) -> dict[str, object]:
    fields = {
        "type": draw(type_fields),
        "channel": draw(channel_fields),
        "id": draw(id_fields),
        "data": draw(data_fields),
        "data_b64": draw(b64_fields),
    }
    extra = draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2))
    return {**extra, **{name: value for name, value in fields.items() if value is not MISSING}}


def valid_id(value: object) -> bool:
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def check_shape(result: object) -> None:
    """A parse result is a frame or an error whose echoed fields are valid."""
    assert isinstance(
        result, Subscribe | Unsubscribe | Publish | Ping | ListChannels | ControlError
    )
    if isinstance(result, ControlError):
        assert result.code is ErrorCode.BAD_REQUEST
        assert result.id is None or valid_id(result.id)
        assert result.channel != ""
        encode_error(result)  # and it can be sent back
    else:
        assert result.id is None or valid_id(result.id)


@given(st.text())
@example("")
@example("[" * 50_000)
@example('{"type":"publish","channel":"c","data":' + "[" * 50_000 + "]" * 50_000 + "}")
def test_any_text_is_a_frame_or_an_error(text: str) -> None:
    check_shape(parse_control(text))


@given(json_values, st.booleans())
def test_any_json_value_is_a_frame_or_an_error(value: object, ascii_only: bool) -> None:
    result = parse_control(json.dumps(value, ensure_ascii=ascii_only))
    check_shape(result)
    if not isinstance(value, dict):
        assert result == ControlError(ErrorCode.BAD_REQUEST, "a control message is a JSON object")


@given(control_objects())
@example({"type": "ping", "id": True})
@example({"type": "publish", "channel": "c", "data": None, "data_b64": "AA=="})
@example({"type": "publish", "channel": "c", "data_b64": "é"})
def test_control_objects_are_read_exactly(value: dict[str, object]) -> None:
    result = parse_control(json.dumps(value))
    check_shape(result)
    message_id = value.get("id")
    if isinstance(result, ControlError):
        # An error echoes the id when (and only when) it was valid.
        assert result.id == (message_id if valid_id(message_id) else None)
        return
    assert value["type"] in KINDS
    assert result.id == (message_id if valid_id(message_id) else None)
    if isinstance(result, Subscribe | Unsubscribe | Publish):
        assert result.channel == value["channel"]
    if isinstance(result, Publish):
        data = value.get("data")
        if "data_b64" in value:
            assert "data" not in value
            assert isinstance(value["data_b64"], str)
            assert result.payload == base64.b64decode(value["data_b64"], validate=True)
        elif isinstance(data, str):
            assert result.payload == data
        else:  # any other JSON value: its JSON text
            assert isinstance(result.payload, str)
            assert json.loads(result.payload) == data


@given(frames())
@example(Publish("c", "", 0))
@example(Publish("c", b""))
@example(Ping(-(2**70)))
def test_frames_round_trip(frame: ControlFrame) -> None:
    assert parse_control(encode_control(frame)) == frame


@given(channels, payloads)
def test_messages_carry_their_data(channel: str, data: str | bytes) -> None:
    sent = json.loads(encode_message(channel, data))
    assert (sent["type"], sent["channel"]) == ("message", channel)
    if isinstance(data, str):
        assert set(sent) == {"type", "channel", "data"}
        assert sent["data"] == data
    else:
        assert set(sent) == {"type", "channel", "data_b64"}
        assert base64.b64decode(sent["data_b64"], validate=True) == data


@given(st.sampled_from(ErrorCode), st.text(), st.none() | message_ids, st.none() | channels)
def test_errors_echo_what_was_valid(
    code: ErrorCode, text: str, message_id: MessageId | None, channel: str | None
) -> None:
    sent = json.loads(encode_error(ControlError(code, text, message_id, channel)))
    expected: dict[str, object] = {"type": "error", "code": code.value, "message": text}
    if message_id is not None:
        expected["id"] = message_id
    if channel is not None:
        expected["channel"] = channel
    assert sent == expected


@given(
    st.sampled_from(("subscribe", "unsubscribe")),
    channels,
    st.none() | message_ids,
    st.booleans(),
    st.lists(channels, max_size=5),
    st.integers(1000, 4999),
    st.text(),
)
def test_acks_lists_and_closes_are_the_spec_json(
    op: str,
    channel: str,
    message_id: MessageId | None,
    already: bool,
    names: list[str],
    code: int,
    reason: str,
) -> None:
    acked = json.loads(encode_ack(op, channel, message_id, already=already))
    assert acked.pop("already", False) is already
    assert acked == {"type": "ack", "op": op, "channel": channel} | (
        {} if message_id is None else {"id": message_id}
    )
    listed = json.loads(encode_channels(names, None))
    assert listed == {"type": "channels", "channels": sorted(names)}
    closed = json.loads(encode_closed(channel, code, reason))
    assert closed == {"type": "closed", "channel": channel, "code": code, "reason": reason}
