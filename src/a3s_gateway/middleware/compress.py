"""The ``compress`` middleware (SPEC §8.15): response compression with br, gzip and deflate.

Ring 0: pure; no trio, sockets, TLS, clocks or logging. The relay (``server/exchange/``) asks
``CompressMiddleware.body_filter`` once per response, after every response side ran on the head
going to the client, and pushes the body through the ``BodyFilter`` it returns.

* **Negotiation** (RFC 9110 §12.5.3): the client's ``Accept-Encoding`` lines give each coding a
  weight (``q``, in thousandths); a coding not listed takes the weight of ``*``, or 0. The
  candidate with the highest weight > 0 wins, ties going to the earlier one in
  ``compress_encodings``. A coding listed more than once keeps its lowest weight, and a
  malformed ``q`` counts as 0: doubt never adds a coding. ``x-gzip`` is ``gzip`` (RFC 9110
  §8.4.1.3). Without an ``Accept-Encoding`` field nothing is compressed: RFC 9110 would allow
  any coding, but clients that send none (``curl`` without ``--compressed``) expect the bytes
  as they are.
* **Eligibility**: not HEAD; status not 1xx (upgrades included), 204, 206 or 304; no
  ``Content-Encoding`` line; no ``Cache-Control: no-transform``; exactly one ``Content-Type``
  whose media type (parameters ignored, case-insensitive) is listed, and is not a stream
  (``text/event-stream``, ``application/grpc*``) whatever the list says; a known
  ``Content-Length`` at least ``compress_min_bytes``. An eligible response gets
  ``Vary: Accept-Encoding`` (unless a ``Vary`` line already lists it or ``*``), compressed or
  not.
* **Unknown length** (no usable ``Content-Length``): when a coding was chosen, up to
  ``compress_min_bytes`` are held before the head may go out; a body that ends first is sent
  as it is, with a ``Content-Length`` and without ``Vary`` (not eligible by size). Without a
  chosen coding nothing is held and ``Vary`` is added (the body may be large; holding only to
  decide ``Vary`` would delay the stream).
* **Compressing**: ``Content-Length`` and ``Accept-Ranges`` removed, ``Content-Encoding`` set, a
  strong ``ETag`` weakened; every chunk is compressed and flushed (zlib ``Z_SYNC_FLUSH``,
  brotli flush) so that what was sent so far always decodes to the body so far. gzip is the
  RFC 1952 framing (zlib ``wbits=31``), deflate the zlib format of RFC 1950 (``wbits=15``);
  both at ``compress_level``, and brotli at quality ``compress_level``.

Must not: keep per-request state on the instance (the compressor lives in the filter, one per
response), hold more than ``compress_min_bytes`` plus one chunk, or raise on any client input.
"""

from __future__ import annotations

import re
import zlib
from typing import TYPE_CHECKING, Final, Protocol, Self

import brotli

from a3s_gateway.middleware.contract import Middleware

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from a3s_gateway.config.schema_middlewares import Compress
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.protocols.headers import Headers

__all__ = [
    "DEFAULT_CONTENT_TYPES",
    "BodyFilter",
    "CompressMiddleware",
    "MediaTypes",
    "accept_encoding_weights",
    "negotiate",
]

#: ``compress_content_types`` when the definition sets none (SPEC §8.15); ``text/event-stream``
#: is a stream and never compressed, so ``text/*`` needs no exception here.
DEFAULT_CONTENT_TYPES: Final = (
    "text/*",
    "application/json",
    "application/*+json",
    "application/javascript",
    "application/xml",
    "application/*+xml",
    "image/svg+xml",
    "application/wasm",
)

#: The weight of a coding listed without ``q`` (weights are in thousandths).
_FULL: Final = 1000
#: ``qvalue`` of RFC 9110 §12.4.2.
_QVALUE: Final = re.compile(rb"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)\Z")
_OWS: Final = b" \t"
_ALIASES: Final = {b"x-gzip": b"gzip"}
_NO_COMPRESS_STATUSES: Final = frozenset({204, 206, 304})
_VARY_COVERED: Final = frozenset({b"accept-encoding", b"*"})
_VARY_LINE: Final = (b"vary", b"Accept-Encoding")


def accept_encoding_weights(values: Iterable[bytes]) -> dict[bytes, int]:
    """The weight (0–1000) of each lower-case coding in ``Accept-Encoding`` field values.

    Never raises: empty list elements are skipped, parameters other than ``q`` ignored, a
    malformed ``q`` is 0, and a coding listed more than once keeps its lowest weight.
    """
    weights: dict[bytes, int] = {}
    for value in values:
        for element in value.split(b","):
            coding, *params = element.split(b";")
            coding = coding.strip(_OWS).lower()
            if not coding:
                continue
            coding = _ALIASES.get(coding, coding)
            weight = _FULL
            for param in params:
                name, _, raw = param.partition(b"=")
                if name.strip(_OWS).lower() == b"q":
                    weight = min(weight, _qvalue(raw.strip(_OWS)))
            weights[coding] = min(weights.get(coding, weight), weight)
    return weights


def _qvalue(text: bytes) -> int:
    """``text`` as thousandths if it is an RFC 9110 ``qvalue``, else 0."""
    if _QVALUE.match(text) is None:
        return 0
    whole, _, fraction = text.partition(b".")
    return int(whole) * _FULL + int(fraction.ljust(3, b"0"))


def negotiate(values: Sequence[bytes], encodings: Sequence[str]) -> str | None:
    """The coding of ``encodings`` (in preference order) to use for a client whose
    ``Accept-Encoding`` lines are ``values``; None for identity (also when there is no line)."""
    if not values:
        return None
    weights = accept_encoding_weights(values)
    other = weights.get(b"*", 0)
    best: str | None = None
    best_weight = 0
    for coding in encodings:
        weight = weights.get(coding.encode("ascii"), other)
        if weight > best_weight:
            best, best_weight = coding, weight
    return best


class MediaTypes:
    """A compiled ``compress_content_types`` list: ``type/subtype`` patterns in which ``*``
    stands for any run of characters other than ``/`` (``text/*``, ``application/*+json``);
    parameters and case are ignored."""

    __slots__ = ("_pattern",)

    def __init__(self, patterns: Iterable[str]) -> None:
        parts = []
        for pattern in patterns:
            media = pattern.split(";", 1)[0].strip(" \t").lower().encode()
            parts.append(b"[^/]*".join(re.escape(piece) for piece in media.split(b"*")))
        self._pattern: Final = re.compile(b"|".join(parts)) if parts else None

    def matches(self, media_type: bytes) -> bool:
        """Whether the lower-case ``type/subtype`` is listed."""
        return self._pattern is not None and self._pattern.fullmatch(media_type) is not None


def _media_type(headers: Headers) -> bytes | None:
    """The lower-case ``type/subtype`` of the only ``Content-Type`` line; None when there is
    none, more than one, or it is not a media type."""
    values = [value for name, value in headers if name == b"content-type"]
    if len(values) != 1:
        return None
    media = values[0].split(b";", 1)[0].strip(_OWS).lower()
    kind, slash, subtype = media.partition(b"/")
    if not slash or not kind or not subtype:
        return None
    return media


def _is_stream(media_type: bytes) -> bool:
    """Server-sent events and gRPC (any ``application/grpc*``), never compressed here."""
    return media_type == b"text/event-stream" or media_type.startswith(b"application/grpc")


def _content_length(headers: Headers) -> int | None:
    """The ``Content-Length``, or None when there is none or it is not one decimal number."""
    values = [value.strip(_OWS) for name, value in headers if name == b"content-length"]
    if not values or not values[0].isdigit() or any(v != values[0] for v in values[1:]):
        return None
    return int(values[0])


def _no_transform(headers: Headers) -> bool:
    """Whether a ``Cache-Control`` line carries ``no-transform`` (RFC 9111 §5.2.2.6)."""
    return any(
        directive.split(b"=", 1)[0].strip(_OWS).lower() == b"no-transform"
        for name, value in headers
        if name == b"cache-control"
        for directive in value.split(b",")
    )


def _add_vary(headers: Headers) -> None:
    """Append ``Vary: Accept-Encoding`` unless a ``Vary`` line lists it or ``*`` already."""
    for name, value in headers:
        if name == b"vary" and any(
            member.strip(_OWS).lower() in _VARY_COVERED for member in value.split(b",")
        ):
            return
    headers.append(_VARY_LINE)


def _weaken(etag: bytes) -> bytes:
    """``"x"`` → ``W/"x"``; weak or malformed tags unchanged."""
    tag = etag.strip(_OWS)
    return b"W/" + tag if tag.startswith(b'"') else etag


class _Encoder(Protocol):
    """One response's compressor: ``chunk`` compresses and flushes, ``finish`` ends it."""

    def chunk(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class _ZlibEncoder:
    """gzip (``wbits=31``, RFC 1952) or deflate (``wbits=15``, the zlib format of RFC 1950)."""

    __slots__ = ("_compressor",)

    def __init__(self, level: int, wbits: int) -> None:
        self._compressor = zlib.compressobj(level, zlib.DEFLATED, wbits)

    def chunk(self, data: bytes) -> bytes:
        return self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def finish(self) -> bytes:
        return self._compressor.flush(zlib.Z_FINISH)


class _BrotliEncoder:
    """brotli (RFC 7932) at quality ``level``."""

    __slots__ = ("_compressor",)

    def __init__(self, level: int) -> None:
        self._compressor = brotli.Compressor(quality=level)

    def chunk(self, data: bytes) -> bytes:
        return self._compressor.process(data) + self._compressor.flush()

    def finish(self) -> bytes:
        return self._compressor.finish()


def _encoder(coding: str, level: int) -> _Encoder:
    if coding == "br":
        return _BrotliEncoder(level)
    return _ZlibEncoder(level, 31 if coding == "gzip" else 15)


class BodyFilter:
    """One response body on its way to the client, compressed with ``coding``.

    ``ready`` tells whether ``headers`` (the response head, edited in place) is final and may
    be sent. Given ``hold`` (a body of unknown length), the filter holds the first body bytes
    and ``ready`` stays False until ``hold`` bytes were seen (compress) or the body ended
    (send it as it is, with a ``Content-Length``).
    """

    __slots__ = (
        "_coding",
        "_encoder",
        "_headers",
        "_held",
        "_held_size",
        "_hold",
        "_level",
        "ready",
    )

    def __init__(self, headers: Headers, coding: str, level: int, *, hold: int = 0) -> None:
        self._headers = headers
        self._coding = coding
        self._level = level
        self._hold = hold
        self._held: list[bytes] = []
        self._held_size = 0
        self._encoder: _Encoder | None = None
        self.ready = False
        if hold <= 0:
            self._start()

    def _start(self) -> _Encoder:
        """Decide to compress: change the head and make the compressor."""
        headers = self._headers
        headers[:] = [
            (name, _weaken(value) if name == b"etag" else value)
            for name, value in headers
            if name not in (b"content-length", b"accept-ranges")
        ]
        headers.append((b"content-encoding", self._coding.encode("ascii")))
        _add_vary(headers)
        encoder = self._encoder = _encoder(self._coding, self._level)
        self.ready = True
        return encoder

    def feed(self, data: bytes) -> bytes:
        """One upstream body chunk in; the bytes to send now (maybe ``b""``)."""
        if self._encoder is not None:
            return self._encoder.chunk(data) if data else b""
        if self.ready:  # the body ended while held: nothing more is expected
            return data
        self._held.append(data)
        self._held_size += len(data)
        if self._held_size < self._hold:
            return b""
        encoder = self._start()
        held = b"".join(self._held)
        self._held = []
        return encoder.chunk(held)

    def finish(self) -> bytes:
        """End of body: the compressor's last block, or the held bytes as they are."""
        if self._encoder is not None:
            return self._encoder.finish()
        if self.ready:
            return b""
        held = b"".join(self._held)
        self._held = []
        headers = self._headers
        headers[:] = [line for line in headers if line[0] != b"content-length"]
        headers.append((b"content-length", str(len(held)).encode("ascii")))
        self.ready = True
        return held


class CompressMiddleware(Middleware):
    """``compress``: no request side; the relay calls ``body_filter`` for each response."""

    __slots__ = ("_encodings", "_level", "_min_bytes", "_types")

    def __init__(
        self,
        name: str,
        *,
        min_bytes: int = 1024,
        level: int = 6,
        encodings: Sequence[str] = ("br", "gzip", "deflate"),
        content_types: Iterable[str] | None = None,
    ) -> None:
        super().__init__(name)
        self._min_bytes: Final = min_bytes
        self._level: Final = level
        self._encodings: Final = tuple(encodings)
        self._types: Final = MediaTypes(
            DEFAULT_CONTENT_TYPES if content_types is None else content_types
        )

    @classmethod
    def from_config(cls, name: str, block: Compress) -> Self:
        """The middleware of the validated ``compress`` definition ``name``."""
        return cls(
            name,
            min_bytes=block.compress_min_bytes,
            level=block.compress_level,
            encodings=block.compress_encodings,
            content_types=block.compress_content_types,
        )

    def _eligible(self, status: int, headers: Headers) -> bool:
        """Whether the response may be compressed, by status, fields, type and known size."""
        if status < 200 or status in _NO_COMPRESS_STATUSES:
            return False
        if any(name == b"content-encoding" for name, _ in headers) or _no_transform(headers):
            return False
        media_type = _media_type(headers)
        if media_type is None or _is_stream(media_type) or not self._types.matches(media_type):
            return False
        length = _content_length(headers)
        return length is None or length >= self._min_bytes

    def body_filter(self, state: RequestState, status: int, headers: Headers) -> BodyFilter | None:
        """The filter for this response's body, or None when it goes out as it is.

        Called once per response on its final head (``headers``, changed in place: ``Vary``
        for an eligible response; the compression fields once compressing is decided).
        """
        if state.method == b"HEAD" or not self._eligible(status, headers):
            return None
        coding = negotiate(state.values(b"accept-encoding"), self._encodings)
        if coding is None:
            _add_vary(headers)
            return None
        if _content_length(headers) is None:
            return BodyFilter(headers, coding, self._level, hold=self._min_bytes)
        return BodyFilter(headers, coding, self._level)
