"""ClientHello peek: the SNI and ALPN list of a TLS ClientHello (SPEC §4.11).

Ring 0: a pure function over the bytes peeked so far. No trio, sockets, ``ssl`` or clocks; the
peeker in Ring 1 owns the reads, the 65536-byte cap on its buffer and the ``timeouts.peek``
deadline, and replays every peeked byte unchanged afterwards.

Theory of operation. ``parse_client_hello(buf)`` is called again after every read with the whole
buffer, and answers in three layers:

1. **Records** (RFC 8446 §5.1). Walk the TLS record headers from offset 0: content type 22
   (handshake), major version 3, length 1..16384. The first two bytes decide *not TLS*; a bad
   header later on (or a non-handshake record before the hello is complete) is *malformed*.
2. **Handshake reassembly** (RFC 8446 §4). The record fragments are concatenated; their first
   four bytes are the handshake header (type 1, 24-bit length), which says how many handshake
   bytes to wait for, possibly across many records. Only whole records count, so
   ``Complete.consumed`` is a record boundary. The walk copies nothing but the handshake header;
   the fragments are joined once, when the whole message is there.
3. **Hello fields** (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2). A bounds-checked cursor reads legacy
   version, random, session id, cipher suites, compression methods and the extensions block;
   ``server_name`` (RFC 6066 §3) and ``application_layer_protocol_negotiation`` (RFC 7301 §3.1)
   are decoded, every other extension is only bounds-checked. Each length is checked against
   both the bytes left and its enclosing vector, and an enclosing vector must be used up exactly.

Until the answer is known the result is ``NeedMore(at_least)``, the length the buffer must reach
before the hello can be complete (the end of the next record header or of the current record).
``at_least`` never exceeds ``MAX_CLIENT_HELLO_BYTES``: as soon as a lower bound on the end of the
hello's records passes it, the answer is ``Malformed("too large")``. Each check runs as soon as
its bytes are in, and every answer but ``NeedMore`` is final: more bytes never change it.

Must not: raise (every input yields one of the four results, property-tested), keep a view of
the caller's buffer after returning (the peeker grows its ``bytearray`` in place), or put
attacker-chosen text into ``Malformed.reason`` (it is a metrics label; see ``MALFORMED_REASONS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NoReturn, TypeAlias

MAX_CLIENT_HELLO_BYTES: Final = 65536
"""The most bytes the records carrying one ClientHello may span, headers included."""

_RECORD_HEADER: Final = 5
_MAX_FRAGMENT: Final = 16384  # 2**14, RFC 8446 §5.1
_CONTENT_HANDSHAKE: Final = 22
_MAJOR_VERSION: Final = 3
_HANDSHAKE_HEADER: Final = 4
_CLIENT_HELLO: Final = 1
_EXT_SERVER_NAME: Final = 0
_EXT_ALPN: Final = 16
_NAME_TYPE_HOST: Final = 0
_MAX_SESSION_ID: Final = 32


@dataclass(frozen=True, slots=True)
class Complete:
    """A whole, well-formed ClientHello.

    ``sni`` is the first ``host_name`` entry of ``server_name``, ASCII, lower-cased, with one
    trailing dot removed, and otherwise as received (IP literals, which RFC 6066 forbids, pass
    through); ``""`` without the extension or without a ``host_name`` entry. ``alpn`` lists the
    offered protocols in order, each decoded as latin-1 so that any bytes round-trip
    (``p.encode("latin-1")`` gives the wire bytes back). ``consumed`` is the length of the
    records that carried the hello, which may be less than the buffer.
    """

    sni: str
    alpn: tuple[str, ...]
    consumed: int


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Undecided yet: the hello cannot be complete before the buffer holds ``at_least`` bytes.

    Always ``len(buf) < at_least <= MAX_CLIENT_HELLO_BYTES``. It is the end of the next record
    header or of the current record; a byte arriving earlier may still decide ``NotTls`` or
    ``Malformed``, so the peeker parses again after every read. Every other result is final:
    appending bytes to the buffer never changes it.
    """

    at_least: int


@dataclass(frozen=True, slots=True)
class NotTls:
    """The first byte is not 22 (handshake) or the first major version is not 3."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """TLS framing that breaks a rule of SPEC §4.11; ``reason`` is one of ``MALFORMED_REASONS``."""

    reason: str


ClientHelloResult: TypeAlias = Complete | NeedMore | NotTls | Malformed

MALFORMED_REASONS: Final = frozenset(
    {
        "empty record",  # a record of length 0 (RFC 8446 §5.1 forbids empty handshake fragments)
        "record too long",  # a record over 16384 bytes
        "bad record version",  # a later record whose major version is not 3
        "non-handshake record",  # a later record that is not a handshake record
        "not a client hello",  # the first handshake message is not of type 1
        "too large",  # the hello's records would span over MAX_CLIENT_HELLO_BYTES
        "truncated hello",  # the hello ends inside legacy version or random
        "bad session id length",  # over 32, or past the end of the hello
        "bad cipher suites length",  # odd, under 2, or past the end of the hello
        "bad compression methods length",  # 0, or past the end of the hello
        "bad extensions length",  # not exactly the rest of the hello
        "truncated extension",  # an extension header or body past the end of the block
        "duplicate extension",  # an extension type sent twice (RFC 8446 §4.2)
        "bad server name list",  # server_name framing does not add up
        "empty sni",  # a zero-length host name (or just ".")
        "sni not ascii",  # a host name byte over 0x7f
        "bad sni character",  # a host name with a control character or space
        "bad alpn list",  # ALPN framing does not add up, or an empty list
        "empty alpn protocol",  # a zero-length protocol name (RFC 7301 §3.1)
    }
)
"""Every ``Malformed.reason``: a fixed set, so the errors counter has bounded label values."""


def parse_client_hello(buf: bytes | bytearray | memoryview) -> ClientHelloResult:
    """Classify the bytes peeked so far from a connection; never raises.

    ``buf`` starts at the first byte the client sent and may hold a partial hello, or more than
    the hello. The buffer is only read, and no view of it survives the call.
    """
    with memoryview(buf) as view:
        if view.ndim != 1 or view.format != "B" or not view.c_contiguous:  # 2-D, "H", strides
            return _walk_records(memoryview(view.tobytes()))
        return _walk_records(view)


# --- layers 1 and 2: records and handshake reassembly ---


def _walk_records(view: memoryview) -> ClientHelloResult:
    """Find the records that carry the hello, then hand the joined message to ``_read_hello``."""
    fragments: list[tuple[int, int]] = []  # (start, end) of each record's fragment in ``view``
    declared = 0  # handshake bytes in the records walked, as their headers declare
    total: int | None = None  # the handshake message length, header included, once known
    pos = 0
    while total is None or declared < total:
        length = _record_length(view, pos)
        if not isinstance(length, int):
            return length
        start, end = pos + _RECORD_HEADER, pos + _RECORD_HEADER + length
        fragments.append((start, end))
        declared += length
        if total is None:
            header = _handshake_total(view, fragments)
            if isinstance(header, Malformed):
                return header
            total = header
        if _lowest_end(end, declared, total) > MAX_CLIENT_HELLO_BYTES:
            return Malformed("too large")
        if end > len(view):
            return NeedMore(end)
        pos = end
    message = b"".join(view[start:end] for start, end in fragments)
    return _read_hello(message, total, consumed=pos)


def _record_length(view: memoryview, pos: int) -> int | ClientHelloResult:
    """The fragment length of the record header at ``pos``, or the result it decides."""
    available = view[pos : pos + _RECORD_HEADER]
    first = pos == 0
    if len(available) >= 1 and available[0] != _CONTENT_HANDSHAKE:
        return NotTls() if first else Malformed("non-handshake record")
    if len(available) >= 2 and available[1] != _MAJOR_VERSION:
        return NotTls() if first else Malformed("bad record version")
    if len(available) < _RECORD_HEADER:
        return NeedMore(pos + _RECORD_HEADER)
    length = int.from_bytes(available[3:5], "big")
    if length == 0:
        return Malformed("empty record")
    if length > _MAX_FRAGMENT:
        return Malformed("record too long")
    return length


def _handshake_total(view: memoryview, fragments: list[tuple[int, int]]) -> int | Malformed | None:
    """The handshake message length (header included) if its header is in, else ``None``.

    Looks at the bytes that have arrived only: a type other than ClientHello is decided on the
    first handshake byte.
    """
    header = bytearray()
    for start, end in fragments:
        header += view[start : min(end, start + _HANDSHAKE_HEADER - len(header))]
        if len(header) == _HANDSHAKE_HEADER or end > len(view):
            break
    if header and header[0] != _CLIENT_HELLO:
        return Malformed("not a client hello")
    if len(header) < _HANDSHAKE_HEADER:
        return None
    return _HANDSHAKE_HEADER + int.from_bytes(header[1:4], "big")


def _lowest_end(end: int, declared: int, total: int | None) -> int:
    """A lower bound on the end of the hello's records, given the current record ends at ``end``.

    Handshake bytes not yet declared need at least one more record per 16384 of them.
    """
    missing = 0 if total is None else total - declared
    if missing <= 0:
        return end
    records = -(-missing // _MAX_FRAGMENT)
    return end + missing + records * _RECORD_HEADER


# --- layer 3: the hello's fields ---


class _HelloError(Exception):
    """Raised inside layer 3 only, and always caught by ``_read_hello``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Cursor:
    """A bounds-checked reader over ``data[pos:end]``; reading past ``end`` raises."""

    __slots__ = ("_data", "_end", "_pos")

    def __init__(self, data: bytes, pos: int, end: int) -> None:
        self._data, self._pos, self._end = data, pos, end

    def remaining(self) -> int:
        return self._end - self._pos

    def take(self, size: int, reason: str) -> bytes:
        """The next ``size`` bytes."""
        if size > self.remaining():
            _fail(reason)
        self._pos += size
        return self._data[self._pos - size : self._pos]

    def uint(self, size: int, reason: str) -> int:
        """The next ``size``-byte big-endian unsigned integer."""
        return int.from_bytes(self.take(size, reason), "big")

    def vector(self, length_size: int, reason: str) -> _Cursor:
        """A cursor over the next vector, whose length is a ``length_size``-byte prefix."""
        length = self.uint(length_size, reason)
        if length > self.remaining():
            _fail(reason)
        self._pos += length
        return _Cursor(self._data, self._pos - length, self._pos)

    def rest(self) -> bytes:
        """Everything up to ``end``."""
        return self.take(self.remaining(), "")


def _fail(reason: str) -> NoReturn:
    raise _HelloError(reason)


def _read_hello(message: bytes, total: int, *, consumed: int) -> ClientHelloResult:
    """Read the ClientHello body ``message[4:total]`` into a ``Complete`` or a ``Malformed``."""
    body = _Cursor(message, _HANDSHAKE_HEADER, total)
    try:
        body.take(2 + 32, "truncated hello")  # legacy_version, random
        if body.vector(1, "bad session id length").remaining() > _MAX_SESSION_ID:
            _fail("bad session id length")
        suites = body.vector(2, "bad cipher suites length").remaining()
        if suites < 2 or suites % 2:
            _fail("bad cipher suites length")
        if body.vector(1, "bad compression methods length").remaining() == 0:
            _fail("bad compression methods length")
        if body.remaining() == 0:  # no extensions block at all: valid (RFC 5246 §7.4.1.2)
            return Complete(sni="", alpn=(), consumed=consumed)
        extensions = body.vector(2, "bad extensions length")
        if body.remaining():
            _fail("bad extensions length")
        sni, alpn = _read_extensions(extensions)
    except _HelloError as error:
        return Malformed(error.reason)
    return Complete(sni=sni, alpn=alpn, consumed=consumed)


def _read_extensions(block: _Cursor) -> tuple[str, tuple[str, ...]]:
    """SNI and ALPN from the extensions block; every other extension is skipped."""
    seen: set[int] = set()
    sni: str = ""
    alpn: tuple[str, ...] = ()
    while block.remaining():
        ext_type = block.uint(2, "truncated extension")
        ext_body = block.vector(2, "truncated extension")
        if ext_type in seen:
            _fail("duplicate extension")
        seen.add(ext_type)
        if ext_type == _EXT_SERVER_NAME:
            sni = _read_server_name(ext_body)
        elif ext_type == _EXT_ALPN:
            alpn = _read_alpn(ext_body)
    return sni, alpn


def _read_server_name(ext_body: _Cursor) -> str:
    """The first ``host_name`` of a ``server_name`` extension (RFC 6066 §3), or ``""``.

    Every entry is framed as type + 16-bit length, as deployed stacks do, so entries of unknown
    name types are bounds-checked and skipped.
    """
    names = ext_body.vector(2, "bad server name list")
    if ext_body.remaining() or names.remaining() == 0:
        _fail("bad server name list")
    host: bytes | None = None
    while names.remaining():
        name_type = names.uint(1, "bad server name list")
        name = names.vector(2, "bad server name list").rest()
        if name_type == _NAME_TYPE_HOST and host is None:
            host = name
    return "" if host is None else _host_name(host)


def _host_name(raw: bytes) -> str:
    """The SNI as matched by ``HostSNI``: lower-cased, one trailing dot removed (SPEC §4.10).

    Control characters and spaces are refused as well as non-ASCII bytes: a host name never has
    them, and the SNI reaches logs and metrics.
    """
    if not raw.isascii():
        _fail("sni not ascii")
    if any(byte <= 0x20 or byte == 0x7F for byte in raw):
        _fail("bad sni character")
    host = raw.decode("ascii").lower().removesuffix(".")
    if not host:
        _fail("empty sni")
    return host


def _read_alpn(ext_body: _Cursor) -> tuple[str, ...]:
    """The protocol names of an ALPN extension (RFC 7301 §3.1), decoded as latin-1."""
    protocols = ext_body.vector(2, "bad alpn list")
    if ext_body.remaining() or protocols.remaining() == 0:
        _fail("bad alpn list")
    names: list[str] = []
    while protocols.remaining():
        name = protocols.vector(1, "bad alpn list").rest()
        if not name:
            _fail("empty alpn protocol")
        names.append(name.decode("latin-1"))
    return tuple(names)
