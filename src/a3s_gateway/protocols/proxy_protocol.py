"""PROXY protocol headers: the client address a trusted load balancer reports (SPEC §3.7).

Ring 0: a pure function over the bytes read so far from a trusted peer. No trio, sockets,
``ssl`` or clocks; the Ring 1 caller owns the reads, the handshake deadline and the decision
to interpret a peer's bytes at all (only peers in ``proxy_protocol { trusted_ips }``), and hands
the bytes after ``ProxyHeader.consumed`` to the application protocol unchanged.

Theory of operation. ``parse_proxy_header(buf)`` is called again after every read with the whole
buffer, and answers from the first bytes in three steps (HAProxy's proxy-protocol.txt):

1. **Signature.** Version 1 starts with ``b"PROXY "``, version 2 with the 12 bytes
   ``\\r\\n\\r\\n\\x00\\r\\nQUIT\\n``. The two differ in their first byte, so the first byte picks
   the one to follow, and the first byte that leaves it decides ``NotProxy`` (``b"GET"`` after
   one byte, ``b"proxy"`` too: the signature is case-sensitive). Nothing else is looked at
   before the signature is whole.
2. **Version 1** is one ASCII line, ``PROXY TCP4|TCP6 <src> <dst> <sport> <dport>\\r\\n`` or
   ``PROXY UNKNOWN<anything>\\r\\n``, at most 107 bytes with its CRLF. The line ends at its
   first CR or LF: a CR must be followed by LF, and a LF first is ``bad_line_end``. Fields are
   separated by exactly one space, so an empty field (two spaces, or a space before the CRLF)
   is malformed. Addresses are read by ``ipaddress`` in the family the protocol names (3.11
   refuses leading zeros in IPv4; ``%`` scope ids and non-ASCII are refused before it is
   asked), ports are 1 to 5 ASCII digits, 0..65535, and a port with a leading zero (``080``)
   is refused: senders print ports with ``%u``, so a zero in front is a broken or hostile
   sender, not a spelling to accept. After ``UNKNOWN`` and a space, anything up to the line's
   end is allowed and ignored, as the spec requires. Fields are checked while the line is
   still arriving, each against what its complete form could be (a prefix of a protocol name,
   a run of the address family's characters no longer than its longest spelling, digits),
   so a hostile or confused sender is refused before its line ends, with the reason the
   complete line would get.
3. **Version 2** is the signature, a version/command byte (version 2; command 0 LOCAL or
   1 PROXY), a family byte, and a 16-bit big-endian length of the block that follows. The
   block is ``MAX_V2_BLOCK_BYTES`` at most (``too_large`` as soon as the length is in). With
   PROXY, the family must be one the spec defines (0x00 UNSPEC; 0x11/0x12 TCP/UDP over IPv4;
   0x21/0x22 over IPv6; 0x31/0x32 AF_UNIX) and the block must hold its addresses (12, 36 or
   216 bytes); for IPv4, IPv6 and AF_UNIX the rest of the block is TLVs (type, 16-bit length,
   value), each of which must end within the block. The TLVs' contents are not read (the
   CRC32C of type 0x03 is not checked). With LOCAL (a sender's own health check) and with
   UNSPEC the spec says to discard the block, family included, so it is skipped unread.

A header whose addresses are unknown (v1 ``UNKNOWN``, v2 LOCAL, UNSPEC or AF_UNIX) gives
``source=None`` and ``destination=None``: the caller keeps the real peer address.

Until the answer is known the result is ``NeedMore(at_least)``: the length the buffer must
reach before a header can be complete (16 for a version 2 header until its length is in, then
its end; the next byte for a version 1 line, and 15, the shortest line, at first). A byte
arriving earlier may still decide ``NotProxy`` or ``Malformed``. ``at_least`` never exceeds
``MAX_PROXY_HEADER_BYTES``, and every answer but ``NeedMore`` is final: more bytes never change
it, since each check runs only on bytes that have arrived and a complete header ends where its
own bytes say.

``encode_v1`` and ``encode_v2`` build headers, for tests and for a test harness acting as a
load balancer; unlike the parser, they raise ``ValueError`` on arguments no header can carry.

Must not: raise from ``parse_proxy_header`` (every input yields one of the four results,
property-tested), look past ``MAX_PROXY_HEADER_BYTES``, keep a view of the caller's buffer
after returning (the caller grows its ``bytearray`` in place), or put attacker-chosen text into
``Malformed.reason`` (it is a metrics label; see ``MALFORMED_REASONS``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final, TypeAlias

Address: TypeAlias = tuple[str, int]
"""An IP address as ``ipaddress`` prints it (IPv6 compressed, lower case), and a port."""

MAX_V1_HEADER_BYTES: Final = 107
"""The longest version 1 line, CRLF included (the spec's worst case, ``PROXY UNKNOWN`` with two
full IPv6 addresses and ports)."""

V2_FIXED_BYTES: Final = 16
"""Signature, version/command, family and length: the part of a version 2 header always sent."""

MAX_V2_BLOCK_BYTES: Final = 4096
"""The longest version 2 address and TLV block accepted. Addresses take 216 bytes at most
(AF_UNIX); the rest is TLVs, none of which a gateway uses, though a sender may add kilobytes of
them (certificates, ids). 4096 bytes leaves room for the TLVs load balancers add (endpoint ids,
ALPN, authority, a unique id, TLS details) while bounding what a trusted but confused peer makes
the caller buffer before its connection is refused."""

MAX_PROXY_HEADER_BYTES: Final = V2_FIXED_BYTES + MAX_V2_BLOCK_BYTES
"""The most bytes a header may take (4112; a version 1 line is far shorter). ``NeedMore`` never
asks for more, so the caller's buffer is bounded by it."""

_V1_SIGNATURE: Final = b"PROXY "
_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_SHORTEST: Final = len(b"PROXY UNKNOWN\r\n")  # 15
_V1_LINE_END_BEFORE: Final = MAX_V1_HEADER_BYTES - 1  # the CR must sit before index 106
_V1_PROTOCOLS: Final = {b"TCP4": 4, b"TCP6": 6, b"UNKNOWN": 0}
_V1_FIELDS: Final = 5  # protocol, source, destination, source port, destination port
_V1_ADDRESS_CHARS: Final = {4: b"0123456789.", 6: b"0123456789abcdefABCDEF:."}
_V1_ADDRESS_LONGEST: Final = {4: 15, 6: 45}  # 255.255.255.255; ffff:...:ffff:255.255.255.255
_DIGITS: Final = b"0123456789"
_PORT_DIGITS: Final = 5
_MAX_PORT: Final = 65535

_V2_VERSION: Final = 2
_V2_LOCAL: Final = 0
_V2_PROXY: Final = 1
_V2_UNSPEC: Final = 0x00
_V2_ADDRESS_BLOCK: Final = {0x00: 0, 0x11: 12, 0x12: 12, 0x21: 36, 0x22: 36, 0x31: 216, 0x32: 216}
"""Address block size by family byte, for every family the spec defines."""
_V2_IP_VERSION: Final = {0x11: 4, 0x12: 4, 0x21: 6, 0x22: 6}
_TLV_HEADER: Final = 3


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A complete, valid header.

    ``source`` and ``destination`` are the addresses the peer reports, or ``None`` when it
    reports none (v1 ``UNKNOWN``, v2 LOCAL, UNSPEC or AF_UNIX): keep the real peer address
    then. ``consumed`` is the length of the header; the bytes after it are the application's.
    ``version`` is 1 or 2.
    """

    source: Address | None
    destination: Address | None
    consumed: int
    version: int


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Undecided yet: no header can be complete before the buffer holds ``at_least`` bytes.

    Always ``len(buf) < at_least <= MAX_PROXY_HEADER_BYTES``. A byte arriving earlier may still
    decide ``NotProxy`` or ``Malformed``, so the caller parses again after every read. Every
    other result is final: appending bytes to the buffer never changes it.
    """

    at_least: int


@dataclass(frozen=True, slots=True)
class NotProxy:
    """The first bytes differ from both signatures: these bytes are the application's."""


@dataclass(frozen=True, slots=True)
class Malformed:
    """A header that breaks a rule of the spec; ``reason`` is one of ``MALFORMED_REASONS``."""

    reason: str


ProxyResult: TypeAlias = ProxyHeader | NeedMore | NotProxy | Malformed

MALFORMED_REASONS: Final = frozenset(
    {
        "too_long",  # v1: no CRLF within 107 bytes
        "bad_line_end",  # v1: a CR not followed by LF, or a LF before any CR
        "bad_protocol",  # v1: not TCP4, TCP6 or UNKNOWN
        "bad_address",  # v1: not an address of the protocol's family
        "bad_port",  # v1: not 1-5 digits without a leading zero, or over 65535
        "bad_fields",  # v1: not exactly five fields after PROXY
        "bad_version",  # v2: the version nibble is not 2
        "bad_command",  # v2: the command nibble is neither LOCAL nor PROXY
        "bad_family",  # v2: a family byte the spec does not define (PROXY only)
        "too_large",  # v2: a block over MAX_V2_BLOCK_BYTES
        "bad_length",  # v2: a block shorter than its family's addresses (PROXY only)
        "bad_tlv",  # v2: a TLV that does not end within the block
    }
)
"""Every ``Malformed.reason``: a fixed set, so the errors counter has bounded label values."""


def parse_proxy_header(buf: bytes | bytearray | memoryview) -> ProxyResult:
    """Classify the bytes read so far from a trusted peer; never raises.

    ``buf`` starts at the first byte the peer sent and may hold a partial header, or the header
    and application bytes after it. Only its first ``MAX_PROXY_HEADER_BYTES`` are read, and no
    view of it survives the call.
    """
    with memoryview(buf) as view:
        if view.ndim != 1 or view.format != "B":  # 2-D or "H": read as the raw bytes
            data = view.tobytes()[:MAX_PROXY_HEADER_BYTES]
        else:
            data = view[:MAX_PROXY_HEADER_BYTES].tobytes()
    if not data:
        return NeedMore(_V1_SHORTEST)
    if _V1_SIGNATURE.startswith(data[: len(_V1_SIGNATURE)]):
        return _parse_v1(data)
    if _V2_SIGNATURE.startswith(data[: len(_V2_SIGNATURE)]):
        return _parse_v2(data)
    return NotProxy()


# --- version 1 ---


def _parse_v1(data: bytes) -> ProxyResult:
    """A version 1 line, from ``data`` starting with (a prefix of) ``b"PROXY "``."""
    start = len(_V1_SIGNATURE)
    if len(data) < start:
        return NeedMore(_V1_SHORTEST)
    window = data[:_V1_LINE_END_BEFORE]
    end = _line_end(window, start)
    if end < 0:  # the line is still arriving: check it as far as it goes
        partial = _v1_fields(window[start:], complete=False)
        if isinstance(partial, str):
            return Malformed(partial)
        if len(data) >= _V1_LINE_END_BEFORE:
            return Malformed("too_long")
        return NeedMore(max(len(data) + 1, _V1_SHORTEST))
    fields = _v1_fields(data[start:end], complete=True)
    if isinstance(fields, str):
        return Malformed(fields)
    if data[end : end + 1] != b"\r":
        return Malformed("bad_line_end")
    if len(data) == end + 1:
        return NeedMore(end + 2)
    if data[end + 1 : end + 2] != b"\n":
        return Malformed("bad_line_end")
    source, destination = fields
    return ProxyHeader(source=source, destination=destination, consumed=end + 2, version=1)


def _line_end(window: bytes, start: int) -> int:
    """The index of the first CR or LF in ``window`` from ``start``, or -1."""
    found = [i for i in (window.find(b"\r", start), window.find(b"\n", start)) if i >= 0]
    return min(found, default=-1)


def _v1_fields(content: bytes, *, complete: bool) -> str | tuple[Address | None, Address | None]:
    """The addresses of the line after ``PROXY ``, or the reason it is malformed.

    With ``complete=False`` the last field may still grow, so it is only checked as a prefix of
    a valid field, and a passing line gives ``(None, None)``. A failure here is the failure of
    every longer line: each prefix check is a condition of the complete check, and it fails on
    a field for good once it fails (a bad character stays, a long field only grows).
    """
    fields = content.split(b" ")
    growing = -1 if complete else len(fields) - 1  # the field more bytes may extend
    if growing == 0:
        known = any(name.startswith(fields[0]) for name in _V1_PROTOCOLS)
        return (None, None) if known else "bad_protocol"
    version = _V1_PROTOCOLS.get(fields[0])
    if version is None:
        return "bad_protocol"
    if version == 0:  # UNKNOWN: the rest of the line is ignored
        return (None, None)
    for index, field in enumerate(fields[1:_V1_FIELDS], start=1):
        partial = index == growing
        if index <= 2 and not _v1_address_ok(field, version, partial=partial):
            return "bad_address"
        if index > 2 and not _v1_port_ok(field, partial=partial):
            return "bad_port"
    if len(fields) > _V1_FIELDS or (complete and len(fields) < _V1_FIELDS):
        return "bad_fields"
    if not complete:
        return (None, None)
    source = (_ip_text(fields[1]), int(fields[3]))
    destination = (_ip_text(fields[2]), int(fields[4]))
    return source, destination


def _v1_address_ok(field: bytes, version: int, *, partial: bool) -> bool:
    """Whether ``field`` is (or, if ``partial``, may still become) an address of ``version``."""
    if len(field) > _V1_ADDRESS_LONGEST[version] or field.translate(
        None, delete=_V1_ADDRESS_CHARS[version]
    ):
        return False
    if partial:
        return True
    try:
        address = ipaddress.ip_address(field.decode("ascii"))
    except ValueError:
        return False
    return address.version == version


def _v1_port_ok(field: bytes, *, partial: bool) -> bool:
    """Whether ``field`` is (or, if ``partial``, may still become) a port: 0..65535, no ``0``
    in front of other digits."""
    if len(field) > _PORT_DIGITS or field.translate(None, delete=_DIGITS):
        return False
    if len(field) > 1 and field.startswith(b"0"):
        return False
    return partial or (field != b"" and int(field) <= _MAX_PORT)


def _ip_text(field: bytes) -> str:
    """An address field already checked by ``_v1_address_ok``, as ``ipaddress`` prints it."""
    return str(ipaddress.ip_address(field.decode("ascii")))


# --- version 2 ---


def _parse_v2(data: bytes) -> ProxyResult:
    """A version 2 header, from ``data`` starting with (a prefix of) the 12-byte signature."""
    signature = len(_V2_SIGNATURE)
    if len(data) <= signature:
        return NeedMore(V2_FIXED_BYTES)
    version, command = data[signature] >> 4, data[signature] & 0x0F
    if version != _V2_VERSION:
        return Malformed("bad_version")
    if command not in (_V2_LOCAL, _V2_PROXY):
        return Malformed("bad_command")
    if len(data) <= signature + 1:
        return NeedMore(V2_FIXED_BYTES)
    family = data[signature + 1]
    if command == _V2_PROXY and family not in _V2_ADDRESS_BLOCK:
        return Malformed("bad_family")
    if len(data) < V2_FIXED_BYTES:
        return NeedMore(V2_FIXED_BYTES)
    length = int.from_bytes(data[signature + 2 : V2_FIXED_BYTES], "big")
    if length > MAX_V2_BLOCK_BYTES:
        return Malformed("too_large")
    if command == _V2_PROXY and length < _V2_ADDRESS_BLOCK[family]:
        return Malformed("bad_length")
    end = V2_FIXED_BYTES + length
    if len(data) < end:
        return NeedMore(end)
    if command == _V2_LOCAL or family == _V2_UNSPEC:  # the block is discarded unread
        return ProxyHeader(source=None, destination=None, consumed=end, version=2)
    addresses_end = V2_FIXED_BYTES + _V2_ADDRESS_BLOCK[family]
    if not _tlvs_ok(data[addresses_end:end]):
        return Malformed("bad_tlv")
    ip_version = _V2_IP_VERSION.get(family)
    if ip_version is None:  # AF_UNIX: no address the gateway can use
        return ProxyHeader(source=None, destination=None, consumed=end, version=2)
    source, destination = _v2_addresses(data[V2_FIXED_BYTES:addresses_end], ip_version)
    return ProxyHeader(source=source, destination=destination, consumed=end, version=2)


def _tlvs_ok(block: bytes) -> bool:
    """Whether ``block`` is a run of whole TLVs (type byte, 16-bit length, value)."""
    pos = 0
    while pos < len(block):
        if len(block) - pos < _TLV_HEADER:
            return False
        pos += _TLV_HEADER + int.from_bytes(block[pos + 1 : pos + _TLV_HEADER], "big")
    return pos == len(block)


def _v2_addresses(block: bytes, ip_version: int) -> tuple[Address, Address]:
    """Source and destination from an IPv4 (12-byte) or IPv6 (36-byte) address block."""
    kind = ipaddress.IPv4Address if ip_version == 4 else ipaddress.IPv6Address
    size = 4 if ip_version == 4 else 16
    source, destination = kind(block[:size]), kind(block[size : 2 * size])
    source_port = int.from_bytes(block[2 * size : 2 * size + 2], "big")
    destination_port = int.from_bytes(block[2 * size + 2 : 2 * size + 4], "big")
    return (str(source), source_port), (str(destination), destination_port)


# --- building headers (tests, and a harness acting as a load balancer) ---


def encode_v1(source: Address | None, destination: Address | None) -> bytes:
    """The version 1 line for these addresses; ``PROXY UNKNOWN\\r\\n`` when both are ``None``.

    Raises ``ValueError`` when only one is ``None``, an address is not an IP address without
    a scope id, the two are of different families, or a port is outside 0..65535.
    """
    pair = _address_pair(source, destination)
    if pair is None:
        return b"PROXY UNKNOWN\r\n"
    (src, sport), (dst, dport) = pair
    protocol = "TCP4" if src.version == 4 else "TCP6"
    return f"PROXY {protocol} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def encode_v2(
    source: Address | None,
    destination: Address | None,
    *,
    tlvs: bytes = b"",
    local: bool = False,
) -> bytes:
    """A version 2 header: TCP over the addresses' family, then ``tlvs`` (sent as given).

    Both addresses ``None`` give the PROXY command with family UNSPEC; ``local=True`` gives the
    LOCAL command (family UNSPEC), and then both must be ``None``. Raises ``ValueError`` as
    ``encode_v1`` does, with ``local=True`` and an address, or when the block would not fit
    the 16-bit length (the parser's smaller limit is not enforced, so tests can exceed it).
    """
    pair = _address_pair(source, destination)
    if local and pair is not None:
        raise ValueError("a LOCAL header carries no addresses")
    command = _V2_LOCAL if local else _V2_PROXY
    family, block = _V2_UNSPEC, b""
    if pair is not None:
        (src, sport), (dst, dport) = pair
        family = 0x11 if src.version == 4 else 0x21
        ports = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
        block = src.packed + dst.packed + ports
    block += bytes(tlvs)
    if len(block) > 0xFFFF:
        raise ValueError("a version 2 block holds at most 65535 bytes")
    head = bytes([_V2_VERSION << 4 | command, family]) + len(block).to_bytes(2, "big")
    return _V2_SIGNATURE + head + block


_IpAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address_pair(
    source: Address | None, destination: Address | None
) -> tuple[tuple[_IpAddress, int], tuple[_IpAddress, int]] | None:
    """Both addresses checked and parsed, or ``None`` when both are ``None``."""
    if source is None and destination is None:
        return None
    if source is None or destination is None:
        raise ValueError("give both addresses or neither")
    pair = (_checked(source), _checked(destination))
    if pair[0][0].version != pair[1][0].version:
        raise ValueError("the two addresses are of different families")
    return pair


def _checked(address: Address) -> tuple[_IpAddress, int]:
    host, port = address
    ip = ipaddress.ip_address(host)
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ValueError("a PROXY header carries no IPv6 scope id")
    if not 0 <= port <= _MAX_PORT:
        raise ValueError(f"port {port} is outside 0..65535")
    return ip, port
