"""The JSON control protocol of the WebSocket multiplexer (SPEC §5.13).

Ring 0: pure and synchronous. ``parse_control`` turns one text message from the client into a
control frame (``Subscribe``, ``Unsubscribe``, ``Publish``, ``Ping``, ``ListChannels``) or a
``ControlError`` that says what was wrong, never an exception: whatever a client sends, the
session answers it with an ``error`` message and goes on. The ``encode_*`` functions build
every message the gateway sends (``ack``, ``pong``, ``channels``, ``message``, ``closed``,
``error``) as UTF-8 JSON bytes; ``encode_control`` builds the client's messages (for clients and
tests).

Validation is strict where a wrong value would be misread and lenient elsewhere: ``type`` must
be a known string, ``channel`` a non-empty string, ``id`` a string or an integer (not a boolean,
a float or a container; ``null`` counts as absent); ``publish`` takes exactly one of ``data``
(a string is sent as that text, any other JSON value as its JSON text, as written) and
``data_b64`` (standard base64 with padding, sent as a binary frame). Unknown fields are ignored,
so newer clients can add fields. An error echoes the ``id`` and ``channel`` when they were
valid.

JSON goes through one reused msgspec decoder (into a Struct whose ``data`` stays raw JSON, so a
large payload is not turned into Python objects) and one reused encoder.

Must not: import trio, sockets or clocks, log, or know about channels' configuration (whether a
channel exists is the session's question).
"""

from __future__ import annotations

import base64
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, TypeAlias, assert_never

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "ControlError",
    "ControlFrame",
    "ErrorCode",
    "List",
    "ListChannels",
    "MessageId",
    "Ping",
    "Publish",
    "Subscribe",
    "Unsubscribe",
    "encode_ack",
    "encode_channels",
    "encode_closed",
    "encode_control",
    "encode_error",
    "encode_message",
    "encode_pong",
    "parse_control",
    "utf8_size",
]

#: What a client may put in ``id``: echoed back unchanged.
MessageId: TypeAlias = str | int


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` message (SPEC §5.13 "Errors")."""

    BAD_REQUEST = "bad_request"
    UNKNOWN_CHANNEL = "unknown_channel"
    NOT_SUBSCRIBED = "not_subscribed"
    TOO_MANY_CHANNELS = "too_many_channels"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    UPSTREAM_REJECTED = "upstream_rejected"
    MESSAGE_TOO_LARGE = "message_too_large"
    SLOW_CONSUMER = "slow_consumer"


# --- client → gateway ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``{"type":"subscribe","channel":C,"id":I}``."""

    channel: str
    id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``{"type":"unsubscribe","channel":C,"id":I}``."""

    channel: str
    id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class Publish:
    """``{"type":"publish","channel":C,"data":D,"id":I}`` (or ``data_b64``): ``payload`` is the
    text to send as a text frame (``data``), or the bytes to send as a binary frame
    (``data_b64``, decoded)."""

    channel: str
    payload: str | bytes
    id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """``{"type":"ping","id":I}``."""

    id: MessageId | None = None


@dataclass(frozen=True, slots=True)
class ListChannels:
    """``{"type":"list","id":I}``: which channels is this client subscribed to?"""

    id: MessageId | None = None


#: The SPEC's name for ``ListChannels`` (a class of its own name would read like ``typing.List``).
List = ListChannels

ControlFrame: TypeAlias = Subscribe | Unsubscribe | Publish | Ping | ListChannels


@dataclass(frozen=True, slots=True)
class ControlError:
    """An ``error`` for the client: a control message it sent was wrong (``parse_control``), or
    the session refused or lost something (the other codes). ``status`` is the upstream's HTTP
    status, for ``upstream_rejected`` only."""

    code: ErrorCode
    message: str
    id: MessageId | None = None
    channel: str | None = None
    status: int | None = None


class _Incoming(msgspec.Struct, frozen=True):
    """One client message as decoded, before validation; unknown fields are skipped."""

    type: object = msgspec.UNSET
    channel: object = msgspec.UNSET
    id: object = msgspec.UNSET
    data: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    data_b64: object = msgspec.UNSET


_DECODER: Final = msgspec.json.Decoder(_Incoming)
_ENCODER: Final = msgspec.json.Encoder()
_STRING: Final = msgspec.json.Decoder(str)
_KINDS: Final = frozenset({"subscribe", "unsubscribe", "publish", "ping", "list"})
_CHANNEL_KINDS: Final = frozenset({"subscribe", "unsubscribe", "publish"})


def parse_control(text: str) -> ControlFrame | ControlError:
    """The control frame ``text`` carries, or the ``bad_request`` error that explains why it
    carries none. Never raises."""
    try:
        incoming = _DECODER.decode(text)
    except msgspec.ValidationError:
        return _bad("a control message is a JSON object")
    except (msgspec.DecodeError, RecursionError, UnicodeError):
        # RecursionError: msgspec's answer to very deep nesting; UnicodeError: a str holding a
        # lone surrogate (never from a WebSocket text frame, which is valid UTF-8).
        return _bad("invalid JSON")
    message_id = _message_id(incoming.id)
    channel = incoming.channel
    known_channel = channel if isinstance(channel, str) and channel else None
    if isinstance(message_id, ControlError):
        return ControlError(message_id.code, message_id.message, None, known_channel)
    kind = incoming.type
    if not isinstance(kind, str) or kind not in _KINDS:
        what = "missing" if kind is msgspec.UNSET else "unknown"
        return _bad(f'{what} "type"', message_id, known_channel)
    if kind not in _CHANNEL_KINDS:
        return Ping(message_id) if kind == "ping" else ListChannels(message_id)
    if known_channel is None:
        return _bad('"channel" must be a non-empty string', message_id)
    if kind == "subscribe":
        return Subscribe(known_channel, message_id)
    if kind == "unsubscribe":
        return Unsubscribe(known_channel, message_id)
    payload = _payload(incoming)
    if isinstance(payload, str | bytes):
        return Publish(known_channel, payload, message_id)
    return _bad(payload.message, message_id, known_channel)


def _bad(
    message: str, message_id: MessageId | None = None, channel: str | None = None
) -> ControlError:
    return ControlError(ErrorCode.BAD_REQUEST, message, message_id, channel)


def _message_id(value: object) -> MessageId | ControlError | None:
    """The ``id`` field: absent or null → None; a string or an integer; else an error."""
    if value is msgspec.UNSET or value is None:
        return None
    # bool is an int subclass: true/false are not identifiers.
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return _bad('"id" must be a string or an integer')


def _payload(incoming: _Incoming) -> str | bytes | ControlError:
    """What a ``publish`` sends: ``data`` as text, or ``data_b64`` decoded; exactly one."""
    data, encoded = incoming.data, incoming.data_b64
    if data is not msgspec.UNSET and encoded is not msgspec.UNSET:
        return _bad('give "data" or "data_b64", not both')
    if data is not msgspec.UNSET:
        raw = bytes(data)
        if raw[:1] != b'"':
            return raw.decode()  # msgspec checked it as JSON, from UTF-8
        try:
            return _STRING.decode(raw)
        except msgspec.DecodeError:  # (validated once already: not expected)
            return _bad('"data" is not a valid JSON string')
    if encoded is msgspec.UNSET:
        return _bad('"publish" needs "data" or "data_b64"')
    if not isinstance(encoded, str):
        return _bad('"data_b64" must be a base64 string')
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        return _bad('"data_b64" is not valid base64')


# --- gateway → client ---------------------------------------------------------------------


class _Reply(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """A message the gateway sends; ``type`` (the tag) comes first, None fields are left out."""


class _Ack(_Reply, frozen=True, kw_only=True, omit_defaults=True, tag="ack"):
    op: str
    channel: str
    id: MessageId | None = None
    already: bool = False


class _Pong(_Reply, frozen=True, kw_only=True, omit_defaults=True, tag="pong"):
    id: MessageId | None = None


class _Channels(_Reply, frozen=True, kw_only=True, omit_defaults=True, tag="channels"):
    channels: list[str]
    id: MessageId | None = None


class _Message(_Reply, frozen=True, kw_only=True, omit_defaults=True, tag="message"):
    channel: str
    data: str | None = None
    data_b64: str | None = None


class _Closed(_Reply, frozen=True, kw_only=True, omit_defaults=True, tag="closed"):
    channel: str
    code: int
    reason: str


class _Error(_Reply, frozen=True, kw_only=True, omit_defaults=True, tag="error"):
    id: MessageId | None = None
    channel: str | None = None
    code: str
    message: str
    status: int | None = None


def encode_ack(
    op: str, channel: str, message_id: MessageId | None, *, already: bool = False
) -> bytes:
    """``{"type":"ack","op":op,"channel":C,"id":I}``, with ``"already":true`` when asked."""
    return _ENCODER.encode(_Ack(op=op, channel=channel, id=message_id, already=already))


def encode_pong(message_id: MessageId | None) -> bytes:
    """``{"type":"pong","id":I}``."""
    return _ENCODER.encode(_Pong(id=message_id))


def encode_channels(names: Iterable[str], message_id: MessageId | None) -> bytes:
    """``{"type":"channels","channels":[…],"id":I}`` with the names sorted."""
    return _ENCODER.encode(_Channels(channels=sorted(names), id=message_id))


def encode_message(channel: str, data: str | bytes) -> bytes:
    """``{"type":"message","channel":C,"data":…}``; bytes go as ``data_b64``."""
    if isinstance(data, str):
        return _ENCODER.encode(_Message(channel=channel, data=data))
    return _ENCODER.encode(_Message(channel=channel, data_b64=base64.b64encode(data).decode()))


def encode_closed(channel: str, code: int, reason: str) -> bytes:
    """``{"type":"closed","channel":C,"code":N,"reason":R}``: the upstream channel ended."""
    return _ENCODER.encode(_Closed(channel=channel, code=code, reason=reason))


def encode_error(error: ControlError) -> bytes:
    """``{"type":"error","id":I,"channel":C,"code":K,"message":M}`` (+ ``status``)."""
    return _ENCODER.encode(
        _Error(
            id=error.id,
            channel=error.channel,
            code=error.code.value,
            message=error.message,
            status=error.status,
        )
    )


# --- client side (for clients and tests) ---------------------------------------------------


class _Request(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, tag_field="type"):
    """A message a client sends."""


class _SubscribeRequest(_Request, frozen=True, kw_only=True, omit_defaults=True, tag="subscribe"):
    channel: str
    id: MessageId | None = None


class _UnsubscribeRequest(
    _Request, frozen=True, kw_only=True, omit_defaults=True, tag="unsubscribe"
):
    channel: str
    id: MessageId | None = None


class _PublishRequest(_Request, frozen=True, kw_only=True, omit_defaults=True, tag="publish"):
    channel: str
    data: str | None = None
    data_b64: str | None = None
    id: MessageId | None = None


class _PingRequest(_Request, frozen=True, kw_only=True, omit_defaults=True, tag="ping"):
    id: MessageId | None = None


class _ListRequest(_Request, frozen=True, kw_only=True, omit_defaults=True, tag="list"):
    id: MessageId | None = None


def encode_control(frame: ControlFrame) -> str:
    """The JSON text a client sends for ``frame`` (``parse_control``'s inverse)."""
    request: _Request
    match frame:
        case Subscribe():
            request = _SubscribeRequest(channel=frame.channel, id=frame.id)
        case Unsubscribe():
            request = _UnsubscribeRequest(channel=frame.channel, id=frame.id)
        case Publish():
            request = _publish_request(frame)
        case Ping():
            request = _PingRequest(id=frame.id)
        case ListChannels():
            request = _ListRequest(id=frame.id)
        case _:
            assert_never(frame)
    return _ENCODER.encode(request).decode()


def _publish_request(frame: Publish) -> _PublishRequest:
    payload = frame.payload
    if isinstance(payload, str):
        return _PublishRequest(channel=frame.channel, data=payload, id=frame.id)
    encoded = base64.b64encode(payload).decode()
    return _PublishRequest(channel=frame.channel, data_b64=encoded, id=frame.id)


def utf8_size(text: str) -> int:
    """The UTF-8 length of ``text`` (no copy for ASCII, the common case)."""
    return len(text) if text.isascii() else len(text.encode())
