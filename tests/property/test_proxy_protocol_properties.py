"""Properties of the PROXY protocol parser (SPEC §3.7): total, final, prefix-honest, round-trip.

The strategies live here rather than in ``strategies.py``: nothing else generates PROXY headers.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.protocols.proxy_protocol import (
    MALFORMED_REASONS,
    MAX_PROXY_HEADER_BYTES,
    Malformed,
    NeedMore,
    NotProxy,
    ProxyHeader,
    ProxyResult,
    encode_v1,
    encode_v2,
    parse_proxy_header,
)

V1_SIGNATURE = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
Address = tuple[str, int]
Pair = tuple[Address, Address] | None
Generated = tuple[bytes, Pair]  # the header's bytes, and the addresses it must parse to

# --- strategies ---


def _address_pair(version: Literal[4, 6]) -> st.SearchStrategy[tuple[Address, Address]]:
    address = st.builds(
        lambda ip, port: (str(ip), port), st.ip_addresses(v=version), st.integers(0, 65535)
    )
    return st.tuples(address, address)


@st.composite
def v1_lines(draw: st.DrawFn) -> Generated:
    """TCP4 and TCP6 lines in the spellings senders use (IPv6 compressed, exploded or upper
    case), and UNKNOWN lines with or without a tail."""
    kind = draw(st.sampled_from(["tcp4", "tcp6", "unknown"]))
    if kind == "unknown":
        tail = draw(st.binary(max_size=91)).translate(None, delete=b"\r\n")  # 107 in all
        return b"PROXY UNKNOWN" + (b" " + tail if draw(st.booleans()) else b"") + b"\r\n", None
    pair = draw(_address_pair(4 if kind == "tcp4" else 6))
    if kind == "tcp4" or draw(st.booleans()):
        return encode_v1(*pair), pair
    exploded = draw(st.booleans())
    (source, sport), (destination, dport) = pair
    addresses = [ipaddress.IPv6Address(text) for text in (source, destination)]
    texts = [a.exploded if exploded else str(a).upper() for a in addresses]
    return f"PROXY TCP6 {texts[0]} {texts[1]} {sport} {dport}\r\n".encode(), pair


def tlv_blocks() -> st.SearchStrategy[bytes]:
    """A run of whole TLVs, including empty ones and types the parser does not know."""
    one = st.builds(
        lambda kind, value: bytes([kind]) + len(value).to_bytes(2, "big") + value,
        st.integers(0, 255),
        st.binary(max_size=40),
    )
    return st.lists(one, max_size=5).map(b"".join)


@st.composite
def v2_headers(draw: st.DrawFn) -> Generated:
    """PROXY over IPv4 and IPv6 (TCP or UDP), UNSPEC, AF_UNIX and LOCAL, with random TLVs."""
    tlvs = draw(tlv_blocks())
    kind = draw(st.sampled_from(["v4", "v6", "unspec", "local", "unix"]))
    if kind in ("v4", "v6"):
        pair = draw(_address_pair(4 if kind == "v4" else 6))
        header = bytearray(encode_v2(*pair, tlvs=tlvs))
        header[13] += draw(st.sampled_from([0, 1]))  # 0x11 -> 0x12: the same over UDP
        return bytes(header), pair
    if kind == "unix":
        block = draw(st.binary(min_size=216, max_size=216)) + tlvs
        family = draw(st.sampled_from([0x31, 0x32]))
        return V2_SIGNATURE + bytes([0x21, family]) + len(block).to_bytes(2, "big") + block, None
    if kind == "local":
        # The block of a LOCAL header is never read: any bytes, and any family byte.
        header = bytearray(encode_v2(None, None, tlvs=draw(st.binary(max_size=60)), local=True))
        header[13] = draw(st.integers(0, 255))
        return bytes(header), None
    return encode_v2(None, None, tlvs=tlvs), None


def proxy_headers() -> st.SearchStrategy[Generated]:
    return st.one_of(v1_lines(), v2_headers())


@st.composite
def mutated_headers(draw: st.DrawFn) -> bytes:
    """Valid headers with one to four bytes overwritten, inserted or deleted.

    Positions are counted from either end, so that Hypothesis' lean towards small numbers hits
    the line end and the TLVs as often as the signature and the fixed fields.
    """
    data = bytearray(draw(proxy_headers())[0])
    signature = len(V1_SIGNATURE if data.startswith(V1_SIGNATURE) else V2_SIGNATURE)
    for _ in range(draw(st.integers(1, 4))):
        # The first byte stays; the rest of the signature is hit one time in three (a mutated
        # signature is NotProxy, and other tests cover that).
        first = draw(st.sampled_from([1, signature, signature]))
        offset = draw(st.integers(0, len(data) - 1 - first))
        pos = len(data) - 1 - offset if draw(st.booleans()) else first + offset
        match draw(st.sampled_from(["set", "insert", "delete"])):
            case "set":
                data[pos] = draw(st.sampled_from([0, 0x0D, 0x0A, 0x20, 0x21, 0xFF, *b"0:.9fP"]))
            case "insert":
                data.insert(pos, draw(st.integers(0, 255)))
            case _:
                del data[pos]
    return bytes(data)


def v1_like_bytes() -> st.SearchStrategy[bytes]:
    """The v1 signature, a protocol (or a near miss), then the fields' own alphabet."""
    protocol = st.sampled_from([b"TCP4 ", b"TCP6 ", b"TCP6 ", b"UNKNOWN", b"UNKNOWN ", b"TCP"])
    alphabet = st.sampled_from([*b"0123456789abcdefABCDEF.:.: \r\n%+-x", 0, 0xFF])
    tail = st.lists(alphabet, max_size=110).map(bytes)
    return st.builds(lambda p, t: V1_SIGNATURE + p + t, protocol, tail)


@st.composite
def v2_like_bytes(draw: st.DrawFn) -> bytes:
    """The v2 signature, plausible version, family and length bytes, then anything."""
    ver_cmd = draw(st.sampled_from([0x21, 0x21, 0x21, 0x20, 0x22, 0x11]))
    family = draw(st.sampled_from([0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, 0x13, 0x41]))
    tail = draw(st.binary(max_size=300))
    length = draw(st.one_of(st.just(len(tail)), st.integers(0, 300), st.integers(0, 0xFFFF)))
    return V2_SIGNATURE + bytes([ver_cmd, family]) + length.to_bytes(2, "big") + tail


# --- the checks every result obeys ---


def check_result(buf: bytes, result: ProxyResult) -> None:
    """The invariants every result obeys, whatever the input."""
    match result:
        case ProxyHeader(source=source, destination=destination, consumed=consumed):
            assert 0 < consumed <= min(len(buf), MAX_PROXY_HEADER_BYTES)
            assert (source is None) == (destination is None)
            assert result.version == (1 if buf.startswith(V1_SIGNATURE) else 2)
        case NeedMore(at_least=at_least):
            assert len(buf) < at_least <= MAX_PROXY_HEADER_BYTES
        case Malformed(reason=reason):
            assert reason in MALFORMED_REASONS
        case NotProxy():
            assert not V1_SIGNATURE.startswith(buf[:6])
            assert not V2_SIGNATURE.startswith(buf[:12])


def check_total_and_final(buf: bytes, suffix: bytes) -> None:
    """Never raises; any answer but NeedMore is final (more bytes cannot change it)."""
    result = parse_proxy_header(buf)
    check_result(buf, result)
    longer = parse_proxy_header(buf + suffix)
    check_result(buf + suffix, longer)
    if not isinstance(result, NeedMore):
        assert longer == result
    elif len(buf + suffix) < result.at_least:
        assert not isinstance(longer, ProxyHeader)


def check_every_cut(buf: bytes) -> None:
    """Fed one byte at a time, the answer settles once and never moves again."""
    settled: ProxyResult | None = None
    previous = 0
    for cut in range(len(buf) + 1):
        result = parse_proxy_header(buf[:cut])
        check_result(buf[:cut], result)
        if settled is not None:
            assert result == settled, (cut, result, settled)
        elif isinstance(result, NeedMore):
            assert result.at_least >= previous
            previous = result.at_least
        else:
            assert previous <= cut or not isinstance(result, ProxyHeader)
            settled = result


# --- properties ---


@given(st.binary(max_size=400), st.binary(max_size=40))
@example(b"", b"")
@example(b"PROXY ", b"UNKNOWN\r\n")
@example(V2_SIGNATURE, b"\x21\x11\x00\x0c")
def test_arbitrary_bytes_never_raise(buf: bytes, suffix: bytes) -> None:
    check_total_and_final(buf, suffix)


@given(st.one_of(v1_like_bytes(), v2_like_bytes()), st.binary(max_size=40))
@example(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", b"\n")
@example(b"PROXY TCP6 ::1 ::2 0 0", b"\r\n")
def test_bytes_that_look_like_headers_never_raise(buf: bytes, suffix: bytes) -> None:
    check_total_and_final(buf, suffix)


@given(mutated_headers(), st.binary(max_size=40))
def test_mutated_headers_never_raise(buf: bytes, suffix: bytes) -> None:
    check_total_and_final(buf, suffix)


@given(st.one_of(mutated_headers(), v1_like_bytes(), v2_like_bytes().map(lambda b: b[:80])))
def test_answers_settle_once_byte_by_byte(buf: bytes) -> None:
    check_every_cut(buf)


@given(proxy_headers(), st.binary(max_size=60))
def test_generated_header_round_trips(generated: Generated, payload: bytes) -> None:
    """A header followed by anything parses to its addresses and consumes exactly itself."""
    header, pair = generated
    source, destination = (None, None) if pair is None else pair
    version = 1 if header.startswith(V1_SIGNATURE) else 2
    expected = ProxyHeader(source, destination, consumed=len(header), version=version)
    assert parse_proxy_header(header + payload) == expected
    assert parse_proxy_header(bytearray(header + payload)) == expected
    assert parse_proxy_header(memoryview(b"\x00" + header + payload)[1:]) == expected


@given(proxy_headers())
def test_every_proper_prefix_needs_more(generated: Generated) -> None:
    """Each prefix gives NeedMore(n) with len(prefix) < n <= len(header), and n only grows."""
    header, _ = generated
    previous = 0
    for cut in range(len(header)):
        result = parse_proxy_header(header[:cut])
        assert isinstance(result, NeedMore), (cut, result)
        assert cut < result.at_least <= len(header)
        assert result.at_least >= previous
        previous = result.at_least


@given(st.binary(min_size=1, max_size=60), st.binary(max_size=40))
def test_bytes_off_both_signatures_are_not_proxy(buf: bytes, suffix: bytes) -> None:
    """The first byte that leaves both signatures decides NotProxy, whatever follows."""
    diverges = not V1_SIGNATURE.startswith(buf[:6]) and not V2_SIGNATURE.startswith(buf[:12])
    if diverges:
        assert parse_proxy_header(buf + suffix) == NotProxy()


@given(_address_pair(4) | _address_pair(6), tlv_blocks())
def test_both_versions_carry_the_same_addresses(pair: tuple[Address, Address], tlvs: bytes) -> None:
    first = parse_proxy_header(encode_v1(*pair))
    second = parse_proxy_header(encode_v2(*pair, tlvs=tlvs))
    assert isinstance(first, ProxyHeader)
    assert isinstance(second, ProxyHeader)
    assert (first.source, first.destination) == (second.source, second.destination) == pair
