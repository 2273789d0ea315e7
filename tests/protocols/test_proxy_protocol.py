"""PROXY protocol headers (SPEC §3.7): the spec's examples, truncations, and every refusal."""

from __future__ import annotations

import array

import pytest

from a3s_gateway.protocols.proxy_protocol import (
    MALFORMED_REASONS,
    MAX_PROXY_HEADER_BYTES,
    MAX_V1_HEADER_BYTES,
    MAX_V2_BLOCK_BYTES,
    Malformed,
    NeedMore,
    NotProxy,
    ProxyHeader,
    encode_v1,
    encode_v2,
    parse_proxy_header,
)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
FFFF = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
TCP4_EXAMPLE = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
TCP6_EXAMPLE = f"PROXY TCP6 {FFFF} {FFFF} 65535 65535\r\n".encode()
UNKNOWN_LONGEST = f"PROXY UNKNOWN {FFFF} {FFFF} 65535 65535\r\n".encode()


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def v2(ver_cmd: int, family: int, block: bytes, *, length: int | None = None) -> bytes:
    """A version 2 header built by hand; ``length`` overrides the declared block length."""
    declared = len(block) if length is None else length
    return SIG + bytes([ver_cmd, family]) + declared.to_bytes(2, "big") + block


V4_BLOCK = bytes([192, 168, 0, 1, 192, 168, 0, 11]) + (56324).to_bytes(2, "big") + b"\x01\xbb"
V6_BLOCK = bytes(15) + b"\x01" + b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02" + b"\x00\x50\x01\xbb"
V4_PAIR = (("192.168.0.1", 56324), ("192.168.0.11", 443))
V6_PAIR = (("::1", 80), ("2001:db8::2", 443))


def header(
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None,
    buf: bytes,
    version: int,
) -> ProxyHeader:
    return ProxyHeader(source=source, destination=destination, consumed=len(buf), version=version)


# --- version 1: the spec's examples ---


def test_tcp4_example() -> None:
    assert parse_proxy_header(TCP4_EXAMPLE) == header(*V4_PAIR, TCP4_EXAMPLE, 1)


def test_tcp6_longest_example() -> None:
    assert parse_proxy_header(TCP6_EXAMPLE) == header((FFFF, 65535), (FFFF, 65535), TCP6_EXAMPLE, 1)


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"PROXY UNKNOWN\r\n", id="bare"),
        pytest.param(b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n", id="with-addresses"),
        pytest.param(b"PROXY UNKNOWN   any\x00thing\xff  \r\n", id="anything"),
        pytest.param(UNKNOWN_LONGEST, id="longest-107"),
    ],
)
def test_unknown_keeps_the_real_peer(line: bytes) -> None:
    assert parse_proxy_header(line) == header(None, None, line, 1)


def test_longest_line_is_107_bytes() -> None:
    assert len(UNKNOWN_LONGEST) == MAX_V1_HEADER_BYTES


def test_ipv6_addresses_are_printed_as_ipaddress_prints_them() -> None:
    line = b"PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 ::FFFF:192.0.2.1 1 65535\r\n"
    expected = header(("2001:db8::1", 1), ("::ffff:c000:201", 65535), line, 1)
    assert parse_proxy_header(line) == expected


def test_port_zero_and_the_extremes_are_accepted() -> None:
    line = b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n"
    assert parse_proxy_header(line) == header(("0.0.0.0", 0), ("255.255.255.255", 65535), line, 1)


def test_bytes_after_the_line_are_not_consumed() -> None:
    buf = TCP4_EXAMPLE + b"GET / HTTP/1.1\r\n\r\n"
    assert parse_proxy_header(buf) == header(*V4_PAIR, TCP4_EXAMPLE, 1)


def test_a_second_header_after_the_first_is_application_data() -> None:
    buf = b"PROXY UNKNOWN\r\n" + TCP4_EXAMPLE
    assert parse_proxy_header(buf) == header(None, None, b"PROXY UNKNOWN\r\n", 1)


# --- version 1: truncations ---


@pytest.mark.parametrize(
    "line", [TCP4_EXAMPLE, TCP6_EXAMPLE, UNKNOWN_LONGEST, b"PROXY UNKNOWN\r\n"]
)
def test_every_truncated_line_needs_more(line: bytes) -> None:
    for cut in range(len(line)):
        result = parse_proxy_header(line[:cut])
        assert isinstance(result, NeedMore), (cut, result)
        assert cut < result.at_least <= len(line)


@pytest.mark.parametrize(
    ("buf", "at_least"),
    [
        (b"", 15),
        (b"P", 15),
        (b"PROXY", 15),
        (b"PROXY ", 15),
        (b"PROXY TCP4 192.168.0.1", 23),
        (TCP4_EXAMPLE[:-1], len(TCP4_EXAMPLE)),
    ],
)
def test_need_more_asks_for_what_a_header_needs(buf: bytes, at_least: int) -> None:
    assert parse_proxy_header(buf) == NeedMore(at_least)


# --- version 1: refusals ---


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        pytest.param(b"PROXY TCP6 192.168.0.1 ::1 1 2\r\n", "bad_address", id="ipv4-in-tcp6"),
        pytest.param(b"PROXY TCP4 ::1 192.168.0.1 1 2\r\n", "bad_address", id="ipv6-in-tcp4"),
        pytest.param(b"PROXY TCP4 1.2.3.4 ::ffff:1.2.3.4 1 2\r\n", "bad_address", id="mapped-tcp4"),
        pytest.param(b"PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n", "bad_address", id="ipv4-zero"),
        pytest.param(b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n", "bad_address", id="three-octets"),
        pytest.param(b"PROXY TCP4 1.2.3.256 1.2.3.4 1 2\r\n", "bad_address", id="octet-256"),
        pytest.param(b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "bad_address", id="scope-id"),
        pytest.param(b"PROXY TCP6 ::1 1::2::3 1 2\r\n", "bad_address", id="two-gaps"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 1\r\n", "bad_port", id="port-65536"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "bad_port", id="port-99999"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 080 1\r\n", "bad_port", id="port-zero-first"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 00 1\r\n", "bad_port", id="port-00"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 1\r\n", "bad_port", id="port-plus"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 1\r\n", "bad_port", id="port-minus"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1_0 1\r\n", "bad_port", id="port-underscore"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 000080 1\r\n", "bad_port", id="port-six"),
        pytest.param(b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "bad_address", id="double-space"),
        pytest.param(b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad_protocol", id="space-first"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "bad_fields", id="space-last"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "bad_port", id="space-in-ports"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "bad_fields", id="six-fields"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "bad_fields", id="one-port"),
        pytest.param(b"PROXY TCP4\r\n", "bad_fields", id="protocol-only"),
        pytest.param(b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "bad_address", id="tab"),
        pytest.param(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "bad_protocol", id="tcp5"),
        pytest.param(b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "bad_protocol", id="lower-tcp4"),
        pytest.param(b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", "bad_protocol", id="udp4"),
        pytest.param(b"PROXY UNKNOWNX\r\n", "bad_protocol", id="unknownx"),
        pytest.param(b"PROXY \r\n", "bad_protocol", id="empty"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "bad_line_end", id="cr-without-lf"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "bad_line_end", id="cr-cr-lf"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "bad_line_end", id="lf-only"),
        pytest.param(b"PROXY UNKNOWN\n", "bad_line_end", id="unknown-lf-only"),
        pytest.param(b"PROXY UNKNOWN x\ny\r\n", "bad_line_end", id="lf-inside-unknown"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r", "bad_line_end", id="lf-cr"),
    ],
)
def test_malformed_v1(line: bytes, reason: str) -> None:
    assert parse_proxy_header(line) == Malformed(reason)


@pytest.mark.parametrize(
    ("prefix", "reason"),
    [
        pytest.param(b"PROXY TCP5", "bad_protocol", id="protocol"),
        pytest.param(b"PROXY X", "bad_protocol", id="protocol-first-byte"),
        pytest.param(b"PROXY TCP4 1.2.3.4x", "bad_address", id="address-character"),
        pytest.param(b"PROXY TCP4 1234567890123456", "bad_address", id="address-length"),
        pytest.param(b"PROXY TCP6 ::g", "bad_address", id="ipv6-character"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 123456", "bad_port", id="port-length"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 0", None, id="port-zero-may-end"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 01", "bad_port", id="port-zero-first"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", "bad_fields", id="sixth-field"),
        pytest.param(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2", None, id="all-but-crlf"),
    ],
)
def test_v1_fields_are_refused_before_the_line_ends(prefix: bytes, reason: str | None) -> None:
    """A field that no line could complete is refused at once, with the complete line's reason."""
    expected = NeedMore(max(len(prefix) + 1, 15)) if reason is None else Malformed(reason)
    assert parse_proxy_header(prefix) == expected
    if reason is not None:
        assert parse_proxy_header(prefix + b"5 6 7\r\n") == Malformed(reason)


def test_no_crlf_within_107_bytes_is_too_long() -> None:
    junk = b"PROXY UNKNOWN " + b"x" * 200
    for cut in range(15, 106):
        assert parse_proxy_header(junk[:cut]) == NeedMore(cut + 1)
    for cut in (106, 107, 108, 200):
        assert parse_proxy_header(junk[:cut]) == Malformed("too_long")


def test_line_of_108_bytes_is_too_long() -> None:
    line = UNKNOWN_LONGEST[:-2] + b"5\r\n"
    assert len(line) == MAX_V1_HEADER_BYTES + 1
    assert parse_proxy_header(line) == Malformed("too_long")


def test_a_bad_field_is_reported_before_too_long() -> None:
    line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 " + b"x" * 100
    assert parse_proxy_header(line) == Malformed("bad_fields")


def test_cr_at_the_end_of_the_buffer_waits_for_lf() -> None:
    assert parse_proxy_header(TCP4_EXAMPLE[:-1]) == NeedMore(len(TCP4_EXAMPLE))
    assert parse_proxy_header(b"PROXY UNKNOWN\r") == NeedMore(15)


def test_a_bad_field_is_reported_before_the_line_end() -> None:
    assert parse_proxy_header(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\rX") == Malformed("bad_port")


# --- not a PROXY header ---


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", id="tls-hello"),
        pytest.param(b"\x16", id="tls-first-byte"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", id="http"),
        pytest.param(b"G", id="http-first-byte"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="h2-preface"),
        pytest.param(b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", id="lowercase-proxy"),
        pytest.param(b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", id="no-space"),
        pytest.param(b"PROXY\tTCP4", id="tab-after-proxy"),
        pytest.param(b" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", id="leading-space"),
        pytest.param(b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8), id="v2-signature-typo"),
        pytest.param(b"\r\n\r\nGET", id="crlf-then-text"),
        pytest.param(b"\r\r", id="cr-cr"),
        pytest.param(b"\x00", id="nul"),
    ],
)
def test_not_proxy(buf: bytes) -> None:
    assert parse_proxy_header(buf) == NotProxy()


@pytest.mark.parametrize(
    ("buf", "at_least"),
    [(b"P", 15), (b"PROX", 15), (b"\r", 16), (b"\r\n\r\n\x00", 16), (SIG, 16)],
)
def test_signature_prefixes_need_more(buf: bytes, at_least: int) -> None:
    assert parse_proxy_header(buf) == NeedMore(at_least)


# --- version 2 ---


@pytest.mark.parametrize(
    ("family", "block", "pair"),
    [
        pytest.param(0x11, V4_BLOCK, V4_PAIR, id="tcp4"),
        pytest.param(0x12, V4_BLOCK, V4_PAIR, id="udp4"),
        pytest.param(0x21, V6_BLOCK, V6_PAIR, id="tcp6"),
        pytest.param(0x22, V6_BLOCK, V6_PAIR, id="udp6"),
    ],
)
def test_v2_proxy_addresses(
    family: int, block: bytes, pair: tuple[tuple[str, int], tuple[str, int]]
) -> None:
    buf = v2(0x21, family, block)
    assert parse_proxy_header(buf + b"payload") == header(*pair, buf, 2)


def test_v2_with_tlvs() -> None:
    tlvs = tlv(0x01, b"h2") + tlv(0x02, b"example.com") + tlv(0xEA, b"vpce-0123") + tlv(0x04, b"")
    buf = v2(0x21, 0x11, V4_BLOCK + tlvs)
    assert parse_proxy_header(buf + b"\x16\x03\x01") == header(*V4_PAIR, buf, 2)


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(v2(0x20, 0x00, b""), id="local"),
        pytest.param(v2(0x20, 0x11, V4_BLOCK), id="local-with-addresses"),
        pytest.param(v2(0x20, 0x11, b""), id="local-family-ignored"),
        pytest.param(v2(0x20, 0xFF, b"\x01\x02\x03"), id="local-any-family-and-block"),
        pytest.param(v2(0x21, 0x00, b""), id="unspec"),
        pytest.param(v2(0x21, 0x00, b"\x01\xff\xff"), id="unspec-block-unread"),
        pytest.param(v2(0x21, 0x31, bytes(216)), id="unix-stream"),
        pytest.param(v2(0x21, 0x32, bytes(216) + tlv(1, b"h2")), id="unix-dgram-tlv"),
    ],
)
def test_v2_without_usable_addresses_keeps_the_real_peer(buf: bytes) -> None:
    assert parse_proxy_header(buf + b"GET") == header(None, None, buf, 2)


@pytest.mark.parametrize("ver_cmd", [0x11, 0x31, 0x01, 0xF1, 0x10, 0x00])
def test_v2_wrong_version_nibble(ver_cmd: int) -> None:
    assert parse_proxy_header(SIG + bytes([ver_cmd])) == Malformed("bad_version")


@pytest.mark.parametrize("ver_cmd", [0x22, 0x2F, 0x23])
def test_v2_bad_command(ver_cmd: int) -> None:
    assert parse_proxy_header(SIG + bytes([ver_cmd])) == Malformed("bad_command")


@pytest.mark.parametrize("family", [0x01, 0x10, 0x13, 0x20, 0x33, 0x41, 0xFF])
def test_v2_bad_family(family: int) -> None:
    assert parse_proxy_header(SIG + bytes([0x21, family])) == Malformed("bad_family")


@pytest.mark.parametrize(
    ("family", "length"),
    [(0x11, 11), (0x11, 0), (0x12, 4), (0x21, 12), (0x22, 35), (0x31, 215), (0x32, 36)],
)
def test_v2_block_shorter_than_the_addresses(family: int, length: int) -> None:
    assert parse_proxy_header(v2(0x21, family, b"", length=length)) == Malformed("bad_length")


@pytest.mark.parametrize(
    "tlvs",
    [
        pytest.param(b"\x01", id="one-byte"),
        pytest.param(b"\x01\x00", id="two-bytes"),
        pytest.param(b"\x01\x00\x03ab", id="value-overruns"),
        pytest.param(tlv(1, b"h2") + b"\x02\xff\xff", id="second-overruns"),
        pytest.param(tlv(1, b"h2") + b"\x00", id="trailing-byte"),
    ],
)
def test_v2_tlv_overrunning_the_block(tlvs: bytes) -> None:
    assert parse_proxy_header(v2(0x21, 0x11, V4_BLOCK + tlvs)) == Malformed("bad_tlv")
    assert parse_proxy_header(v2(0x21, 0x21, V6_BLOCK + tlvs)) == Malformed("bad_tlv")


def test_v2_block_of_exactly_the_maximum_is_accepted() -> None:
    filler = tlv(0xEE, bytes(MAX_V2_BLOCK_BYTES - len(V4_BLOCK) - 3))
    buf = v2(0x21, 0x11, V4_BLOCK + filler)
    assert len(buf) == MAX_PROXY_HEADER_BYTES == 4112
    assert parse_proxy_header(buf) == header(*V4_PAIR, buf, 2)
    assert parse_proxy_header(buf[:16]) == NeedMore(MAX_PROXY_HEADER_BYTES)


@pytest.mark.parametrize("length", [MAX_V2_BLOCK_BYTES + 1, 0xFFFF])
@pytest.mark.parametrize("ver_cmd", [0x20, 0x21])
def test_v2_too_large_as_soon_as_the_length_is_in(length: int, ver_cmd: int) -> None:
    assert parse_proxy_header(v2(ver_cmd, 0x11, b"", length=length)) == Malformed("too_large")


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(v2(0x21, 0x11, V4_BLOCK + tlv(1, b"h2")), id="tcp4-tlv"),
        pytest.param(v2(0x21, 0x21, V6_BLOCK), id="tcp6"),
        pytest.param(v2(0x20, 0x00, b""), id="local"),
    ],
)
def test_every_truncated_v2_header_needs_more(buf: bytes) -> None:
    for cut in range(len(buf)):
        result = parse_proxy_header(buf[:cut])
        assert isinstance(result, NeedMore), (cut, result)
        assert cut < result.at_least <= len(buf)
        assert result.at_least == (15 if cut == 0 else 16 if cut < 16 else len(buf))


def test_v2_fields_are_checked_as_they_arrive() -> None:
    assert parse_proxy_header(SIG + b"\x21") == NeedMore(16)
    assert parse_proxy_header(SIG + b"\x21\x11") == NeedMore(16)
    assert parse_proxy_header(SIG + b"\x21\x11\x00") == NeedMore(16)
    assert parse_proxy_header(SIG + b"\x21\x11\x00\x0c") == NeedMore(28)


# --- the reasons, buffers and encoders ---


def test_every_reason_is_reachable() -> None:
    reachable = {
        parse_proxy_header(buf)
        for buf in [
            b"PROXY UNKNOWN " + b"x" * 100,
            b"PROXY UNKNOWN\rx",
            b"PROXY X",
            b"PROXY TCP4 x",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 x",
            b"PROXY TCP4\r\n",
            SIG + b"\x11",
            SIG + b"\x2f",
            SIG + b"\x21\x41",
            SIG + b"\x21\x11\xff\xff",
            SIG + b"\x21\x11\x00\x00",
            v2(0x21, 0x11, V4_BLOCK + b"\x00"),
        ]
    }
    assert {result.reason for result in reachable if isinstance(result, Malformed)} == (
        MALFORMED_REASONS
    )


def test_accepts_every_buffer_type() -> None:
    expected = header(*V4_PAIR, TCP4_EXAMPLE, 1)
    assert parse_proxy_header(bytearray(TCP4_EXAMPLE)) == expected
    assert parse_proxy_header(memoryview(b"xx" + TCP4_EXAMPLE)[2:]) == expected
    doubled = bytes(byte for byte in TCP4_EXAMPLE for _ in range(2))
    assert parse_proxy_header(memoryview(doubled)[::2]) == expected


def test_non_byte_memoryview_is_read_as_its_bytes() -> None:
    padded = TCP4_EXAMPLE + bytes(len(TCP4_EXAMPLE) % 2)
    assert parse_proxy_header(memoryview(array.array("H", padded))) == parse_proxy_header(padded)
    grid = memoryview(padded).cast("B", (2, len(padded) // 2))
    assert parse_proxy_header(grid) == parse_proxy_header(padded)


def test_reads_no_further_than_the_maximum() -> None:
    filler = tlv(0xEE, bytes(MAX_V2_BLOCK_BYTES - len(V4_BLOCK) - 3))
    buf = v2(0x21, 0x11, V4_BLOCK + filler)
    assert isinstance(parse_proxy_header(buf), ProxyHeader)
    assert parse_proxy_header(bytearray(buf + b"\xff" * 100_000)) == parse_proxy_header(buf)


def test_leaves_no_export_on_a_bytearray() -> None:
    """The caller grows its buffer in place after each parse; a lingering view would forbid it."""
    for cut in (0, 3, 20, len(TCP4_EXAMPLE)):
        buf = bytearray(TCP4_EXAMPLE[:cut])
        parse_proxy_header(buf)
        buf.extend(b"more")  # raises BufferError if a view survived


def test_results_are_frozen() -> None:
    result = parse_proxy_header(TCP4_EXAMPLE)
    assert isinstance(result, ProxyHeader)
    with pytest.raises(AttributeError):
        result.consumed = 0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("source", "destination", "line"),
    [
        (("192.168.0.1", 56324), ("192.168.0.11", 443), TCP4_EXAMPLE),
        ((FFFF, 65535), (FFFF, 65535), TCP6_EXAMPLE),
        (("2001:DB8::0:1", 1), ("::1", 0), b"PROXY TCP6 2001:db8::1 ::1 1 0\r\n"),
        (None, None, b"PROXY UNKNOWN\r\n"),
    ],
)
def test_encode_v1(
    source: tuple[str, int] | None, destination: tuple[str, int] | None, line: bytes
) -> None:
    assert encode_v1(source, destination) == line


def test_encode_v2_matches_the_hand_built_headers() -> None:
    assert encode_v2(*V4_PAIR) == v2(0x21, 0x11, V4_BLOCK)
    assert encode_v2(*V6_PAIR, tlvs=tlv(1, b"h2")) == v2(0x21, 0x21, V6_BLOCK + tlv(1, b"h2"))
    assert encode_v2(None, None) == v2(0x21, 0x00, b"")
    assert encode_v2(None, None, local=True) == v2(0x20, 0x00, b"")
    assert encode_v2(None, None, tlvs=b"\x01", local=True) == v2(0x20, 0x00, b"\x01")


NOT_AN_ADDRESS = "does not appear to be an IPv4 or IPv6 address"


@pytest.mark.parametrize(
    ("source", "destination", "message"),
    [
        (("1.2.3.4", 1), None, "both addresses or neither"),
        (None, ("1.2.3.4", 1), "both addresses or neither"),
        (("1.2.3.4", 1), ("::1", 2), "different families"),
        (("1.2.3.4", 65536), ("1.2.3.4", 1), "outside 0..65535"),
        (("1.2.3.4", 1), ("1.2.3.4", -1), "outside 0..65535"),
        (("fe80::1%eth0", 1), ("::1", 2), "scope id"),
        (("example.com", 1), ("1.2.3.4", 2), NOT_AN_ADDRESS),
        (("01.2.3.4", 1), ("1.2.3.4", 2), NOT_AN_ADDRESS),
    ],
)
def test_encoders_refuse_what_no_header_carries(
    source: tuple[str, int] | None, destination: tuple[str, int] | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_v1(source, destination)
    with pytest.raises(ValueError, match=message):
        encode_v2(source, destination)


def test_encode_v2_refuses_a_local_header_with_addresses_or_an_oversized_block() -> None:
    with pytest.raises(ValueError, match="LOCAL"):
        encode_v2(*V4_PAIR, local=True)
    with pytest.raises(ValueError, match="65535"):
        encode_v2(None, None, tlvs=bytes(65536))
    assert len(encode_v2(None, None, tlvs=bytes(65535))) == 16 + 65535
