"""The access-log line: one JSON object per HTTP exchange (SPEC §9.2).

Ring 0: pure formatting. ``encode_line`` turns a finished ``ExchangeRecord`` into the bytes of
one line (UTF-8 JSON ending with ``\\n``) through ONE module-level ``msgspec.json.Encoder``;
``server/accesslog_writer.py`` (Ring 1) queues those lines and writes them off the event loop.

Shape of a line. The fields come in SPEC §9.2 order, declared once in ``AccessLine``. The fields
every HTTP exchange has are always present, with ``""`` (or ``null`` for ``upstream_ms``) when
there is nothing to say, so that a line has a stable schema and ``jq .router`` never needs a
default. The fields SPEC §9.2 qualifies ("only with ``access_log_include_query``", "when
present") are *omitted* when absent: ``query`` (only with ``include_query``), ``user_agent``
(only when the request had a non-empty one), ``tls_version`` and ``sni`` (only on a TLS
connection, ``sni`` only when the client sent a name), ``grpc_status`` (only for a gRPC call,
whose ``type`` is then ``grpc``), and the close codes of a WebSocket session
(``ws_close_client``, ``ws_close_upstream``: only for a session, whose ``type`` is then
``websocket``, and only for a peer that sent a Close), which would otherwise add meaningless
keys to every plain-HTTP line. Omission uses
``msgspec.UNSET``, which costs nothing when encoding.

Values. ``method``, ``host``, ``path``, ``query``, ``user_agent`` and the ids (``request_id``,
``trace_id``, ``span_id``) arrive as bytes (the client's octets, or the ids as they go on the
wire): they are decoded as UTF-8 with ``backslashreplace``, so valid UTF-8 reads
naturally and any other octet shows as the text ``\\xNN`` instead of breaking the line; msgspec
escapes quotes, backslashes and control characters (``\\n`` included). A ``str`` field holding
something UTF-8 cannot encode (a lone surrogate) takes a slow path that replaces it, so
``encode_line`` never raises for any record. ``ts`` is the end of the exchange (``record.wall``)
in RFC 3339 UTC with milliseconds, formatted from a per-second cached prefix; durations are
milliseconds rounded to 3 decimals.

Must not: log anything the record does not carry on purpose (no headers beyond ``User-Agent``,
no bodies: SPEC §9.2 "never logged"), or log the query unless asked to.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Final

import msgspec
from msgspec import UNSET, UnsetType

if TYPE_CHECKING:
    from a3s_gateway.observability.record import ExchangeRecord

__all__ = ["AccessLine", "encode_line", "format_ts"]


class AccessLine(msgspec.Struct, gc=False):
    """One access-log entry, fields in SPEC §9.2 order; ``UNSET`` fields are left out.

    Every field is required and ``encode_line`` passes them by position: building a Struct
    with 31 keyword arguments costs several times more, on every request
    (``bench/micro/accesslog_bench.py``).
    """

    ts: str
    type: str
    entrypoint: str
    router: str
    service: str
    backend: str
    client_ip: str
    peer_ip: str
    method: str
    scheme: str
    host: str
    path: str
    protocol: str
    query: str | UnsetType
    status: int
    grpc_status: int | UnsetType
    request_bytes: int
    response_bytes: int
    duration_ms: float
    upstream_ms: float | None
    attempts: int
    error: str
    middleware: str
    request_id: str
    trace_id: str
    span_id: str
    user_agent: str | UnsetType
    tls_version: str | UnsetType
    sni: str | UnsetType
    ws_close_client: int | UnsetType
    ws_close_upstream: int | UnsetType


_encoder: Final = msgspec.json.Encoder()
_NEWLINE: Final = b"\n"
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
#: The first and last second ``datetime`` can show (0001-01-01, 9999-12-31T23:59:59), Unix time.
_MIN_SECOND: Final = -62135596800
_MAX_SECOND: Final = 253402300799


#: ``"000Z"`` … ``"999Z"``: the end of a ``ts``, by millisecond.
_MILLIS: Final = tuple(f"{milli:03d}Z" for milli in range(1000))


class _SecondPrefix:
    """``YYYY-MM-DDTHH:MM:SS.`` of the last second formatted. One tuple, read and replaced in
    one step, so a reader never pairs one second with another second's text."""

    __slots__ = ("cached",)

    def __init__(self) -> None:
        self.cached: tuple[int, str] = (0, "1970-01-01T00:00:00.")

    def prefix(self, second: int) -> str:
        t = _EPOCH + timedelta(seconds=second)
        text = f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t:%H:%M:%S}."
        self.cached = (second, text)
        return text


_prefix: Final = _SecondPrefix()


def format_ts(wall: float) -> str:
    """Unix time ``wall`` as RFC 3339 UTC with milliseconds (``2026-12-02T15:04:05.123Z``).

    Like ``datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")``: rounded to
    the microsecond, then truncated to the millisecond. NaN shows as the epoch and anything
    beyond years 1–9999 as the nearest of those; never raises.
    """
    try:
        second = math.floor(wall)
    except (OverflowError, ValueError):  # infinite, NaN
        second = 0 if wall != wall else _MAX_SECOND + 1 if wall > 0 else _MIN_SECOND - 1
        micros = 0
    else:
        # The fraction first, as datetime does: ``wall * 1e6`` would round in the product.
        micros = round((wall - second) * 1_000_000.0)
        if micros == 1_000_000:
            second, micros = second + 1, 0
    if second > _MAX_SECOND:
        second, micros = _MAX_SECOND, 999_999
    elif second < _MIN_SECOND:
        second, micros = _MIN_SECOND, 0
    cached_second, prefix = _prefix.cached
    if second != cached_second:
        prefix = _prefix.prefix(second)
    return prefix + _MILLIS[micros // 1000]


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def encode_line(record: ExchangeRecord, *, include_query: bool) -> bytes:
    """The access-log line for ``record``: one JSON object, UTF-8, ending with ``\\n``.

    ``include_query`` is ``access_log_include_query``: without it the query never appears,
    whatever the record holds. Never raises.
    """
    upstream = record.upstream_seconds
    user_agent = record.user_agent
    line = AccessLine(
        format_ts(record.wall),  # ts
        _type(record),  # type
        record.entrypoint,
        record.router,
        record.service,
        record.backend,
        record.client_ip,
        record.peer_ip,
        _text(record.method),
        record.scheme,
        _text(record.host),
        _text(record.path),
        record.protocol,
        _text(record.query) if include_query else UNSET,  # query
        record.status,
        record.grpc_status if record.grpc_status >= 0 else UNSET,  # grpc_status
        record.request_bytes,
        record.response_bytes,
        round(record.duration * 1000.0, 3),  # duration_ms
        None if upstream is None else round(upstream * 1000.0, 3),  # upstream_ms
        record.attempts,
        record.error,
        record.middleware,
        _text(record.request_id),
        _text(record.trace_id),
        _text(record.span_id),
        _text(user_agent) if user_agent else UNSET,  # user_agent
        record.tls_version or UNSET,  # tls_version
        record.sni or UNSET,  # sni
        record.ws_close_client if record.ws_close_client >= 0 else UNSET,  # ws_close_client
        record.ws_close_upstream if record.ws_close_upstream >= 0 else UNSET,
    )
    try:
        return _encoder.encode(line) + _NEWLINE
    except UnicodeEncodeError:
        return _encoder.encode(_scrubbed(line)) + _NEWLINE


def _type(record: ExchangeRecord) -> str:
    if record.transport:
        return record.transport
    if record.websocket:
        return "websocket"
    return "grpc" if record.grpc_status >= 0 else "http"


def _scrubbed(line: AccessLine) -> AccessLine:
    """``line`` with every string made encodable: a lone surrogate becomes ``\\udXXX`` text.

    The slow path: record strings come from the config and the gateway's own code, which
    produce no surrogates; this only keeps a bug elsewhere from costing the line.
    """
    changes: dict[str, str] = {}
    for name in AccessLine.__struct_fields__:
        value: object = getattr(line, name)
        if isinstance(value, str):
            changes[name] = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return msgspec.structs.replace(line, **changes)
