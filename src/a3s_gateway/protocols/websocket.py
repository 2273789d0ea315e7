"""WebSocket (RFC 6455, and RFC 8441 over HTTP/2) for a relaying gateway: the opening
handshake's checks, the bytes of a Close frame, and the frame boundaries of a relayed byte
stream.

Ring 0: pure functions over a request head, a ``101``'s fields and stream bytes; no trio,
sockets, TLS, clocks or logging. Must not: terminate WebSocket connections (the gateway relays
the frames it does not read), decode or transform message payloads, negotiate extensions or
subprotocols (the upstream answers those), or decide what to do about a defect (it reports, the
caller answers 400/426, injects a Close or drops the connection).

Three parts, each used by the gateway's WebSocket relay:

- ``websocket_key`` tells a WebSocket upgrade request from any other request and checks it
  (RFC 6455 §4.2.1): a defect is a ``HandshakeError`` with the status to answer; ``accepts``
  checks that the upstream's ``101`` really accepts that request (§4.1, the client's checks,
  made by the gateway on the client's behalf), with ``accept_value`` as §1.3 defines it.
  ``websocket_connect`` is its sibling for an HTTP/2 client's extended ``CONNECT`` (RFC 8441
  §4-5), which carries no key: the gateway makes one (``new_key``, from random bytes the caller
  draws) for the HTTP/1.1 upgrade the upstream gets (``upgrade_fields``, SPEC §5.11 step 3),
  checks the upstream's ``101`` against it, and answers the client ``200`` with the ``101``'s
  fields that mean something in HTTP/2 (``connect_fields``).
- ``close_frame`` is the Close frame (§5.5.1) the gateway writes itself when it ends a relay,
  masked towards an upstream (a client's frames are masked, §5.3), unmasked towards a client.
- ``FrameTracker`` follows one direction of the relay frame by frame (§5.2), reading headers
  only (and the first two payload bytes of a Close, for its code): it says whether every byte so
  far belongs to complete frames, the only place where a Close of ours may be put in, and
  whether a Close passed. Payloads are skipped by count, never copied, so a read in the middle
  of a multi-MiB message costs the same as one of a few bytes, and the tracker's memory is
  bounded (a partial header of at most 13 bytes, two Close bytes). RSV bits pass unread: an
  extension negotiated end to end (permessage-deflate sets RSV1) is the peers' business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING, Final, TypeAlias

from a3s_gateway.protocols.headers import connection_tokens, strip_response_hop_by_hop

if TYPE_CHECKING:
    from collections.abc import Sequence

    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.headers import HeaderLine, Headers

__all__ = [
    "WEBSOCKET_VERSION",
    "FrameError",
    "FrameTracker",
    "HandshakeError",
    "accept_value",
    "accepts",
    "close_frame",
    "connect_fields",
    "new_key",
    "upgrade_fields",
    "websocket_connect",
    "websocket_key",
]

#: What a trio stream's read returns: ``bytes``, or a ``bytearray`` (TLS streams).
_Bytes: TypeAlias = bytes | bytearray
#: The only ``Sec-WebSocket-Version`` RFC 6455 defines (§4.1, §11.6).
WEBSOCKET_VERSION: Final = b"13"
#: Appended to the client's key before hashing (§1.3, §4.2.2).
_ACCEPT_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Optional whitespace around a field value or list element (RFC 9110 §5.6.3).
_OWS: Final = b" \t"
#: A key is 16 bytes in base64 with padding: 24 characters (§4.1 item 7).
_KEY_CHARS: Final = 24
_KEY_BYTES: Final = 16
#: The ``:protocol`` of a WebSocket in an HTTP/2 extended CONNECT (RFC 8441 §4).
_WEBSOCKET: Final = b"websocket"
#: The fields of the HTTP/1.1 upgrade the upstream gets for an HTTP/2 client (§4.1 items 5, 6).
_UPGRADE_FIELDS: Final = ((b"upgrade", b"websocket"), (b"connection", b"upgrade"))

_FIN: Final = 0x80
_MASK: Final = 0x80
_BINARY: Final = 0x2
_CLOSE: Final = 0x8
#: Opcodes 3-7 and 11-15 as bits of one int (§5.2: reserved for further frames).
_RESERVED_OPCODES: Final = 0b1111_1000_1111_1000
#: The largest payload of a control frame (§5.5).
_MAX_CONTROL_PAYLOAD: Final = 125
#: The 7-bit payload length values that announce a 16-bit and a 64-bit length.
_LENGTH_16: Final = 126
_LENGTH_64: Final = 127
#: The longest frame header: 2 bytes, a 64-bit length and a masking key.
_MAX_HEADER: Final = 14
#: Close codes the tracker reports when a Close has no code (§7.1.5) or a broken one (§5.5.1).
_NO_STATUS: Final = 1005
_PROTOCOL_ERROR: Final = 1002


class HandshakeError(Exception):
    """A WebSocket upgrade request with a defect.

    ``status`` is the response to send: 400, or 426 for a version other than 13 (§4.2.2, the
    ``101`` is then replaced by an answer naming ``Sec-WebSocket-Version: 13``); ``reason`` is a
    short, fixed, lower-case text that never echoes the peer's bytes.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


def _list_items(headers: Sequence[HeaderLine], name: bytes) -> list[bytes]:
    """The lower-cased, stripped, non-empty elements of every ``name`` line's comma list."""
    items: list[bytes] = []
    for field, value in headers:
        if field == name:
            items.extend(token for item in value.split(b",") if (token := item.strip(_OWS)))
    return [item.lower() for item in items]


def _values(headers: Sequence[HeaderLine], name: bytes) -> list[bytes]:
    """The stripped values of every ``name`` line, in order."""
    return [value.strip(_OWS) for field, value in headers if field == name]


def _asks_for_websocket(head: RequestHead) -> bool:
    """An HTTP/1.1 ``GET`` whose ``Upgrade`` lists ``websocket`` and whose ``Connection``
    names ``upgrade`` (§4.1 items 2, 5, 6): the requests ``websocket_key`` looks further at."""
    if head.method != b"GET" or head.http_version != b"1.1":
        return False
    if b"websocket" not in _list_items(head.headers, b"upgrade"):
        return False
    return b"upgrade" in connection_tokens(head.headers)


def _valid_key(key: bytes) -> bool:
    """Base64 with padding of exactly 16 bytes (§4.1 item 7)."""
    if len(key) != _KEY_CHARS:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == _KEY_BYTES
    except binascii.Error:
        return False


def websocket_key(head: RequestHead) -> bytes | None:
    """The ``Sec-WebSocket-Key`` of a WebSocket upgrade request, as sent (stripped), or None
    when ``head`` does not ask for a WebSocket: an HTTP/1.1 ``GET`` whose ``Upgrade`` lists the
    token ``websocket`` (any case; ``websocket/13`` is another protocol) and whose
    ``Connection`` names ``upgrade``. Everything else is the ordinary HTTP path's business (an
    HTTP/2 client's handshake is ``websocket_connect``'s).

    A request that asks is checked (§4.2.1) and a defect raises ``HandshakeError``, in this
    order: a body (400 "request body on websocket upgrade"); the key missing, repeated, or not
    16 bytes in padded base64 (400 "missing", "repeated", "invalid sec-websocket-key"); a
    version other than ``13``, repeated lines that disagree included (426 "unsupported
    websocket version"); no version (400 "missing sec-websocket-version").
    """
    if not _asks_for_websocket(head):
        return None
    if head.has_body:
        raise HandshakeError(400, "request body on websocket upgrade")
    keys = _values(head.headers, b"sec-websocket-key")
    if not keys:
        raise HandshakeError(400, "missing sec-websocket-key")
    if len(keys) > 1:
        raise HandshakeError(400, "repeated sec-websocket-key")
    if not _valid_key(keys[0]):
        raise HandshakeError(400, "invalid sec-websocket-key")
    _check_version(head)
    return keys[0]


def _check_version(head: RequestHead) -> None:
    """§4.2.1 item 6: ``13`` on every ``Sec-WebSocket-Version`` line (426 otherwise), and at
    least one line (400)."""
    versions = _values(head.headers, b"sec-websocket-version")
    if any(version != WEBSOCKET_VERSION for version in versions):
        raise HandshakeError(426, "unsupported websocket version")
    if not versions:
        raise HandshakeError(400, "missing sec-websocket-version")


def websocket_connect(head: RequestHead) -> bool:
    """Whether ``head`` is an HTTP/2 client's WebSocket handshake: an extended ``CONNECT``
    whose ``:protocol`` is ``websocket`` (RFC 8441 §4-5; the adapter validated ``:scheme``,
    ``:path`` and ``:authority``). Such a request carries no ``Sec-WebSocket-Key`` (one sent
    anyway is ignored: the gateway makes the upstream's, ``new_key``) and no body; its version
    is checked as ``websocket_key`` checks it: a ``HandshakeError`` 426 "unsupported websocket
    version" for anything but ``13``, 400 "missing sec-websocket-version" for none."""
    if head.protocol != _WEBSOCKET or head.method != b"CONNECT" or head.http_version != b"2":
        return False
    _check_version(head)
    return True


def new_key(nonce: bytes) -> bytes:
    """A ``Sec-WebSocket-Key`` for ``nonce``, 16 bytes the caller drew at random for this one
    handshake (§4.1 item 7): their padded base64. Raises ValueError for any other length."""
    if len(nonce) != _KEY_BYTES:
        raise ValueError(f"a websocket key is {_KEY_BYTES} random bytes")
    return base64.b64encode(nonce)


def upgrade_fields(headers: Sequence[HeaderLine], key: bytes) -> Headers:
    """The fields of the HTTP/1.1 upgrade request an HTTP/2 client's WebSocket becomes
    upstream (SPEC §5.11 step 3): ``headers`` (the forwarded fields: subprotocols, extensions,
    the version, cookies, ...) without any ``Sec-WebSocket-Key`` of the client's, then
    ``Upgrade: websocket``, ``Connection: upgrade`` and ``Sec-WebSocket-Key: key``."""
    fields = [line for line in headers if line[0] != b"sec-websocket-key"]
    fields.extend(_UPGRADE_FIELDS)
    fields.append((b"sec-websocket-key", key))
    return fields


def connect_fields(headers: Sequence[HeaderLine]) -> Headers:
    """The fields of an upstream's accepting ``101`` that an HTTP/2 client's ``200`` carries
    (RFC 8441 §5): the subprotocol, the extensions, cookies and the rest, without the
    hop-by-hop fields (``Upgrade``, ``Connection``: connection-specific, forbidden in HTTP/2)
    and without ``Sec-WebSocket-Accept`` (it answers the gateway's key, not the client's)."""
    return [
        line for line in strip_response_hop_by_hop(headers) if line[0] != b"sec-websocket-accept"
    ]


def accept_value(key: bytes) -> bytes:
    """The ``Sec-WebSocket-Accept`` that answers ``key``: base64 of the SHA-1 of ``key`` and
    the protocol's GUID (§1.3, §4.2.2 item 5.4)."""
    return base64.b64encode(hashlib.sha1(key + _ACCEPT_GUID, usedforsecurity=False).digest())


def accepts(key: bytes, headers: Sequence[HeaderLine]) -> bool:
    """Whether a ``101``'s fields (lower-case names) accept the request that sent ``key``:
    exactly one ``Sec-WebSocket-Accept`` line with the expected value, and ``Upgrade`` naming
    ``websocket`` in any case (§4.1, the client's checks 2 and 4)."""
    answers = _values(headers, b"sec-websocket-accept")
    if len(answers) != 1 or answers[0] != accept_value(key):
        return False
    return b"websocket" in _list_items(headers, b"upgrade")


def _masked(payload: bytes, mask_key: bytes) -> bytes:
    """``payload`` XOR the repeated ``mask_key`` (§5.3), as one big-integer operation."""
    size = len(payload)
    key = (mask_key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


def close_frame(code: int, reason: bytes = b"", *, mask_key: bytes | None = None) -> bytes:
    """One complete Close frame (FIN, opcode 8) carrying ``code`` and ``reason`` (§5.5.1).

    ``reason`` is cut so that the payload stays within 125 bytes, at a UTF-8 character
    boundary when a character straddles the cut (the reason is UTF-8, §5.5.1). ``mask_key``
    (4 bytes) masks the frame, as frames towards a server must be; None leaves it unmasked, as
    frames towards a client must be. Raises ValueError for a code outside 0-65535 or a mask key
    that is not 4 bytes.
    """
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f"close code out of range: {code}")
    room = _MAX_CONTROL_PAYLOAD - 2
    if len(reason) > room:
        while room and reason[room] & 0xC0 == 0x80:  # a continuation byte: back to its lead
            room -= 1
        reason = reason[:room]
    payload = code.to_bytes(2, "big") + reason
    if mask_key is None:
        return bytes((_FIN | _CLOSE, len(payload))) + payload
    if len(mask_key) != 4:
        raise ValueError("a masking key is 4 bytes")
    return bytes((_FIN | _CLOSE, _MASK | len(payload))) + mask_key + _masked(payload, mask_key)


class FrameError(Exception):
    """A malformed frame header in a relayed WebSocket stream (§5.2, §5.5): the relay can no
    longer tell where frames begin and should fail the connection (Close 1002 if it can)."""


def _parse_header(data: _Bytes, pos: int, end: int, mask_bit: int) -> tuple[int, int, int] | None:
    """``(header size, payload length, opcode)`` of the frame header at ``data[pos:end]``, or
    None while it is incomplete. Raises FrameError as soon as its first two bytes are wrong:
    a reserved opcode, a fragmented or long control frame, the mask bit not ``mask_bit``; and
    for a 64-bit length with the top bit set."""
    if end - pos < 2:
        return None
    first = data[pos]
    second = data[pos + 1]
    opcode = first & 0x0F
    if _RESERVED_OPCODES >> opcode & 1:
        raise FrameError(f"reserved opcode {opcode:#x}")
    length = second & 0x7F
    if opcode >= _CLOSE:
        if not first & _FIN:
            raise FrameError("fragmented control frame")
        if length > _MAX_CONTROL_PAYLOAD:
            raise FrameError("control frame payload over 125 bytes")
    if second & _MASK != mask_bit:
        raise FrameError("unmasked frame from a client" if mask_bit else "masked frame to a client")
    size = 6 if mask_bit else 2
    if length < _LENGTH_16:
        return (size, length, opcode) if end - pos >= size else None
    if length == _LENGTH_16:
        size += 2
        if end - pos < size:
            return None
        return size, int.from_bytes(data[pos + 2 : pos + 4], "big"), opcode
    size += 8
    if end - pos < size:
        return None
    length = int.from_bytes(data[pos + 2 : pos + 10], "big")
    if length >> 63:
        raise FrameError("64-bit payload length with the top bit set")
    return size, length, opcode


class FrameTracker:
    """The frame boundaries of ONE direction of a raw WebSocket relay (see the module docstring).

    ``masked`` is the direction: True from a client (every frame must be masked), False from a
    server (none may be). ``feed`` takes the stream in any chunking. A malformed header raises
    FrameError once; the tracker is then ``broken``, ``feed`` ignores everything after and
    ``at_boundary`` stays False. Frames after a Close are still followed; ``close_code`` keeps
    the first Close's code.
    """

    __slots__ = (
        "_broken",
        "_close_code",
        "_close_head",
        "_close_key",
        "_frames",
        "_in_close",
        "_mask_bit",
        "_pending",
        "_skip",
    )

    def __init__(self, *, masked: bool) -> None:
        self._mask_bit = _MASK if masked else 0
        #: The start of a header cut by the end of a read (fewer than 14 bytes).
        self._pending = b""
        #: Payload bytes of the current frame still to pass (0 between frames).
        self._skip = 0
        #: The current frame is a Close: its first two payload bytes and its masking key.
        self._in_close = False
        self._close_head = b""
        self._close_key = b""
        self._close_code: int | None = None
        self._frames = 0
        self._broken = False

    @property
    def at_boundary(self) -> bool:
        """Every byte fed so far belongs to complete frames (True before any byte)."""
        return not (self._skip or self._pending or self._broken)

    @property
    def close_code(self) -> int | None:
        """The first complete Close's status code (unmasked): 1005 for an empty payload, 1002
        for a one-byte payload (§5.5.1 asks for two); None before any Close completed."""
        return self._close_code

    @property
    def closed(self) -> bool:
        """A complete Close frame passed."""
        return self._close_code is not None

    @property
    def broken(self) -> bool:
        """A malformed header was fed: frame boundaries are unknown from there on."""
        return self._broken

    @property
    def frames(self) -> int:
        """How many complete frames passed."""
        return self._frames

    def feed(self, data: _Bytes) -> None:
        """Follow the next bytes of the stream; raises FrameError once, on a malformed header."""
        if self._broken:
            return
        try:
            self._consume(data)
        except FrameError:
            self._broken = True
            self._pending = b""
            self._skip = 0
            raise

    def _consume(self, data: _Bytes) -> None:
        end = len(data)
        pos = 0
        if self._pending:
            pos = self._resume(data, end)
        elif self._skip:
            pos = self._pass(data, 0, end)
        mask_bit = self._mask_bit
        while pos < end:
            pos = self._skim(data, pos, end)
            if pos == end:
                return
            header = _parse_header(data, pos, end, mask_bit)
            if header is None:
                self._pending = bytes(data[pos:])
                return
            size, length, opcode = header
            pos += size
            if opcode == _CLOSE:
                self._open_close(bytes(data[pos - 4 : pos]) if mask_bit else b"")
            elif pos + length <= end:  # the whole payload is in this read
                pos += length
                self._frames += 1
                continue
            self._skip = length
            pos = self._pass(data, pos, end)

    def _skim(self, data: _Bytes, pos: int, end: int) -> int:
        """Pass the whole data frames (opcode 0-2) with a 7-bit length from ``pos`` on, the
        common case of small messages, in a tight loop; where the first other frame begins."""
        mask_bit = self._mask_bit
        short = 6 if mask_bit else 2  # the header size with a 7-bit length
        count = 0
        while pos + short <= end:
            length = data[pos + 1] ^ mask_bit  # under 126 only with the right mask bit
            if length >= _LENGTH_16 or data[pos] & 0x0F > _BINARY:
                break
            following = pos + short + length
            if following > end:
                break
            pos = following
            count += 1
        self._frames += count
        return pos

    def _resume(self, data: _Bytes, end: int) -> int:
        """Complete the pending header with the first bytes of ``data``; where the payload (or
        the next header) begins in ``data``, ``end`` when the header is still incomplete."""
        held = len(self._pending)
        joined = self._pending + data[: _MAX_HEADER - held]
        header = _parse_header(joined, 0, len(joined), self._mask_bit)
        if header is None:  # then ``joined`` is under 14 bytes: all of ``data`` is in it
            self._pending = joined
            return end
        self._pending = b""
        size, length, opcode = header
        if opcode == _CLOSE:
            self._open_close(joined[size - 4 : size] if self._mask_bit else b"")
        self._skip = length
        return self._pass(data, size - held, end)

    def _open_close(self, mask_key: bytes) -> None:
        self._in_close = True
        self._close_head = b""
        self._close_key = mask_key

    def _pass(self, data: _Bytes, pos: int, end: int) -> int:
        """Pass what ``data[pos:end]`` holds of the current payload; where it stops."""
        take = min(self._skip, end - pos)
        if self._in_close and len(self._close_head) < 2:
            self._close_head += data[pos : pos + min(take, 2 - len(self._close_head))]
        self._skip -= take
        if not self._skip:
            self._frames += 1
            if self._in_close:
                self._in_close = False
                if self._close_code is None:
                    self._close_code = self._read_close_code()
        return pos + take

    def _read_close_code(self) -> int:
        head = self._close_head
        if not head:
            return _NO_STATUS
        if len(head) == 1:
            return _PROTOCOL_ERROR
        key = self._close_key
        if key:
            return (head[0] ^ key[0]) << 8 | (head[1] ^ key[1])
        return head[0] << 8 | head[1]
