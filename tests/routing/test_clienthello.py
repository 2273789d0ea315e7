"""ClientHello parsing (SPEC §4.11): real hellos from Python's ssl module, and hand-built ones."""

from __future__ import annotations

import array
import ssl

import pytest

from a3s_gateway.routing.clienthello import (
    MALFORMED_REASONS,
    MAX_CLIENT_HELLO_BYTES,
    Complete,
    Malformed,
    NeedMore,
    NotTls,
    parse_client_hello,
)

# --- building hellos ---


def vec(length_size: int, data: bytes) -> bytes:
    """A TLS vector: ``data`` behind a big-endian length prefix of ``length_size`` bytes."""
    return len(data).to_bytes(length_size, "big") + data


def ext(ext_type: int, body: bytes) -> bytes:
    return ext_type.to_bytes(2, "big") + vec(2, body)


def sni_ext(*hosts: bytes, name_type: int = 0) -> bytes:
    return ext(0, vec(2, b"".join(bytes([name_type]) + vec(2, host) for host in hosts)))


def alpn_ext(*protocols: bytes) -> bytes:
    return ext(16, vec(2, b"".join(vec(1, p) for p in protocols)))


def padding_ext(size: int) -> bytes:
    return ext(21, bytes(size))


def hello_body(
    *,
    session_id: bytes = b"",
    suites: bytes = b"\x13\x01\x13\x02",
    compression: bytes = b"\x00",
    extensions: bytes | None = b"",
) -> bytes:
    """A ClientHello body; ``extensions=None`` leaves the extensions block out entirely."""
    body = b"\x03\x03" + bytes(range(32)) + vec(1, session_id) + vec(2, suites)
    body += vec(1, compression)
    return body if extensions is None else body + vec(2, extensions)


def handshake(body: bytes, msg_type: int = 1) -> bytes:
    return bytes([msg_type]) + vec(3, body)


def record(fragment: bytes, content_type: int = 22, version: bytes = b"\x03\x01") -> bytes:
    return bytes([content_type]) + version + vec(2, fragment)


def into_records(message: bytes, sizes: list[int]) -> bytes:
    """``message`` re-recorded: one handshake record per size, the last one taking the rest."""
    out, pos = b"", 0
    for size in sizes:
        out += record(message[pos : pos + size])
        pos += size
    if pos < len(message):
        out += record(message[pos:])
    return out


def in_records_of(message: bytes, size: int) -> bytes:
    return into_records(message, [size] * ((len(message) - 1) // size))


def hello(body: bytes) -> bytes:
    return in_records_of(handshake(body), 16384)


def handshake_of(records: bytes) -> bytes:
    """The handshake bytes of well-formed records (the inverse of ``into_records``)."""
    out, pos = b"", 0
    while pos < len(records):
        length = int.from_bytes(records[pos + 3 : pos + 5], "big")
        out += records[pos + 5 : pos + 5 + length]
        pos += 5 + length
    return out


def capture_hello(
    server_hostname: str | None,
    alpn: list[str] | None,
    maximum_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED,
) -> bytes:
    """The first flight of Python's ssl client: one ClientHello (no network)."""
    ctx = ssl.create_default_context()
    ctx.maximum_version = maximum_version
    if server_hostname is None:
        ctx.check_hostname = False
    if alpn is not None:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


@pytest.fixture(scope="module")
def real_hello() -> bytes:
    return capture_hello("example.com", ["h2", "http/1.1"])


def expect(
    buf: bytes, sni: str = "example.com", alpn: tuple[str, ...] = ("h2", "http/1.1")
) -> None:
    assert parse_client_hello(buf) == Complete(sni=sni, alpn=alpn, consumed=len(buf))


# --- real hellos ---


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED], ids=["tls12", "max"]
)
def test_real_hello_gives_sni_and_alpn(version: ssl.TLSVersion) -> None:
    expect(capture_hello("example.com", ["h2", "http/1.1"], version))


def test_real_hello_without_sni_or_alpn() -> None:
    expect(capture_hello(None, None), sni="", alpn=())


def test_real_hello_keeps_alpn_order_and_sni_case_folded() -> None:
    expect(
        capture_hello("API.Example.COM", ["http/1.1", "h2"]), "api.example.com", ("http/1.1", "h2")
    )


@pytest.mark.parametrize("sizes", [[1], [100], [4], [2, 1], [1] * 40, [300, 7]])
def test_real_hello_split_into_records_parses_the_same(real_hello: bytes, sizes: list[int]) -> None:
    message = handshake_of(real_hello)
    split = into_records(message, sizes)
    assert split != real_hello
    expect(split)


def test_real_hello_one_byte_per_record(real_hello: bytes) -> None:
    expect(in_records_of(handshake_of(real_hello), 1))


@pytest.mark.parametrize("record_size", [16384, 200, 1])
def test_every_truncation_needs_more(real_hello: bytes, record_size: int) -> None:
    buf = in_records_of(handshake_of(real_hello), record_size)
    for cut in range(len(buf)):
        result = parse_client_hello(buf[:cut])
        assert isinstance(result, NeedMore), (cut, result)
        assert cut < result.at_least <= len(buf)


def test_truncation_asks_for_the_end_of_the_current_record(real_hello: bytes) -> None:
    assert parse_client_hello(real_hello[:3]) == NeedMore(5)
    assert parse_client_hello(real_hello[:6]) == NeedMore(len(real_hello))


def test_bytes_after_the_hello_are_not_consumed(real_hello: bytes) -> None:
    result = parse_client_hello(real_hello + record(b"\x01\x02", content_type=23))
    assert result == Complete("example.com", ("h2", "http/1.1"), consumed=len(real_hello))


def test_accepts_every_buffer_type(real_hello: bytes) -> None:
    expected = Complete("example.com", ("h2", "http/1.1"), consumed=len(real_hello))
    assert parse_client_hello(bytearray(real_hello)) == expected
    assert parse_client_hello(memoryview(b"xx" + real_hello)[2:]) == expected
    assert parse_client_hello(memoryview(b"x" + real_hello + b"y")[1::1]) == Complete(
        "example.com", ("h2", "http/1.1"), consumed=len(real_hello)
    )


def test_strided_memoryview_is_read_as_its_bytes(real_hello: bytes) -> None:
    doubled = bytes(byte for byte in real_hello for _ in range(2))
    assert parse_client_hello(memoryview(doubled)[::2]) == parse_client_hello(real_hello)


def test_non_byte_memoryview_is_read_as_its_bytes(real_hello: bytes) -> None:
    padded = real_hello + bytes(len(real_hello) % 2)
    words = memoryview(array.array("H", padded))
    assert parse_client_hello(words) == parse_client_hello(padded)


def test_two_dimensional_memoryview_is_read_as_its_bytes(real_hello: bytes) -> None:
    data = real_hello + bytes(len(real_hello) % 2)
    grid = memoryview(data).cast("B", (2, len(data) // 2))
    assert parse_client_hello(grid) == parse_client_hello(real_hello)


def test_leaves_no_export_on_a_bytearray(real_hello: bytes) -> None:
    """The peeker grows its buffer in place after each parse; a lingering view would forbid it."""
    for cut in (0, 3, 40, len(real_hello)):
        buf = bytearray(real_hello[:cut])
        parse_client_hello(buf)
        buf.extend(b"more")  # raises BufferError if a view survived
    garbage = bytearray(record(handshake(b"\x03\x03")))
    assert isinstance(parse_client_hello(garbage), Malformed)
    garbage.extend(b"more")


# --- not TLS, and the first bytes ---


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n", id="http"),
        pytest.param(b"\x80\x2e\x01\x03\x01\x00\x15\x00\x00\x00\x10" + bytes(37), id="sslv2"),
        pytest.param(b"\x16\x02\x00\x00\x10", id="major-2"),
        pytest.param(b"\x16\x04", id="major-4-short"),
        pytest.param(b"\x17", id="one-byte"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n", id="ssh"),
        pytest.param(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", id="h2-preface"),
    ],
)
def test_not_tls(buf: bytes) -> None:
    assert parse_client_hello(buf) == NotTls()


@pytest.mark.parametrize("buf", [b"", b"\x16", b"\x16\x03", b"\x16\x03\x01", b"\x16\x03\x01\x02"])
def test_plausible_first_bytes_need_a_whole_header(buf: bytes) -> None:
    assert parse_client_hello(buf) == NeedMore(5)


# --- record layer ---


def test_record_of_exactly_16384_bytes_is_allowed() -> None:
    buf = b"\x16\x03\x01\x40\x00" + handshake(b"")[:1]
    assert parse_client_hello(buf) == NeedMore(5 + 16384)


@pytest.mark.parametrize(
    ("buf", "reason"),
    [
        pytest.param(b"\x16\x03\x01\x00\x00", "empty record", id="empty-first"),
        pytest.param(b"\x16\x03\x01\x40\x01", "record too long", id="16385"),
        pytest.param(b"\x16\x03\x03\xff\xff" + bytes(100), "record too long", id="65535"),
        pytest.param(
            into_records(handshake(hello_body()), [10])[:15] + b"\x16\x03\x01\x00\x00",
            "empty record",
            id="empty-later",
        ),
        pytest.param(record(b"\x01\x00") + b"\x15", "non-handshake record", id="alert-type-only"),
        pytest.param(
            record(b"\x01\x00") + record(b"\x00" * 20, content_type=23),
            "non-handshake record",
            id="application-data",
        ),
        pytest.param(
            record(b"\x01\x00") + record(b"\x00", content_type=20),
            "non-handshake record",
            id="change-cipher-spec",
        ),
        pytest.param(record(b"\x01\x00") + b"\x16\x02", "bad record version", id="later-major-2"),
    ],
)
def test_record_layer_errors(buf: bytes, reason: str) -> None:
    assert parse_client_hello(buf) == Malformed(reason)


def test_record_after_the_hello_is_not_inspected() -> None:
    buf = hello(hello_body()) + b"\x15\x09"
    assert parse_client_hello(buf) == Complete("", (), consumed=len(buf) - 2)


# --- handshake layer ---


@pytest.mark.parametrize("msg_type", [0, 2, 11, 20, 255])
def test_other_handshake_messages_are_malformed_from_the_first_byte(msg_type: int) -> None:
    assert parse_client_hello(b"\x16\x03\x01\x01\x00" + bytes([msg_type])) == Malformed(
        "not a client hello"
    )


def test_handshake_header_split_across_records() -> None:
    message = handshake(hello_body(extensions=sni_ext(b"a.example")))
    expect(into_records(message, [1, 1, 1, 1]), "a.example", ())
    split = into_records(message, [1, 2])  # records at 0 (1 byte) and 6 (2 bytes), then the rest
    assert parse_client_hello(split[:9]) == NeedMore(11)
    assert parse_client_hello(split[:12]) == NeedMore(13)
    assert parse_client_hello(split[:13]) == NeedMore(18)


def test_hello_ending_inside_a_record_consumes_the_whole_record() -> None:
    message = handshake(hello_body()) + handshake(b"", msg_type=20)
    buf = record(message)
    assert parse_client_hello(buf) == Complete("", (), consumed=len(buf))
    assert parse_client_hello(buf[:-1]) == NeedMore(len(buf))


def _padded_message(length: int) -> bytes:
    """A valid ClientHello handshake message of exactly ``length`` bytes."""
    bare = handshake(hello_body(extensions=padding_ext(0)))
    message = handshake(hello_body(extensions=padding_ext(length - len(bare))))
    assert len(message) == length
    return message


def test_hello_spanning_exactly_the_maximum_is_complete() -> None:
    message = _padded_message(MAX_CLIENT_HELLO_BYTES - 4 * 5)
    buf = in_records_of(message, 16384)
    assert len(buf) == MAX_CLIENT_HELLO_BYTES
    assert parse_client_hello(buf) == Complete("", (), consumed=MAX_CLIENT_HELLO_BYTES)


@pytest.mark.parametrize(
    "buf",
    [
        pytest.param(in_records_of(_padded_message(65536 - 19), 16384), id="one-byte-over"),
        pytest.param(in_records_of(_padded_message(65536 - 20), 13200), id="five-records"),
        pytest.param(record(handshake(bytes(100_000))[:1000]), id="declared-100000"),
        pytest.param(b"\x16\x03\x01\x00\x04\x01\xff\xff\xff", id="declared-max-24-bit"),
    ],
)
def test_too_large_is_decided_as_soon_as_it_is_certain(buf: bytes) -> None:
    assert parse_client_hello(buf) == Malformed("too large")
    head = parse_client_hello(buf[:9])  # the first record header and the handshake header
    assert head == Malformed("too large") or (
        isinstance(head, NeedMore) and head.at_least <= MAX_CLIENT_HELLO_BYTES
    )


def test_need_more_never_asks_beyond_the_maximum() -> None:
    buf = in_records_of(_padded_message(65536 - 20), 16384)
    for cut in range(0, len(buf), 997):
        result = parse_client_hello(buf[:cut])
        assert isinstance(result, NeedMore)
        assert result.at_least <= MAX_CLIENT_HELLO_BYTES


# --- hello fields ---


def test_hello_without_extensions_block() -> None:
    assert parse_client_hello(hello(hello_body(extensions=None))) == Complete(
        "", (), consumed=len(hello(hello_body(extensions=None)))
    )


def test_hello_with_empty_extensions_block() -> None:
    expect(hello(hello_body(extensions=b"")), "", ())


def test_longest_session_id_and_many_fields() -> None:
    body = hello_body(
        session_id=bytes(32),
        suites=bytes(200),
        compression=b"\x01\x00",
        extensions=padding_ext(3) + alpn_ext(b"h2") + ext(0xFFFF, b"x") + sni_ext(b"b.example"),
    )
    expect(hello(body), "b.example", ("h2",))


@pytest.mark.parametrize(
    ("raw", "sni"),
    [
        (b"WWW.Example.COM.", "www.example.com"),
        (b"a..", "a."),
        (b"192.0.2.1", "192.0.2.1"),  # RFC 6066 §3 forbids IP literals; parse what is there
        (b"2001:DB8::1", "2001:db8::1"),
        (b"_acme.x", "_acme.x"),
        (b"*.weird", "*.weird"),
    ],
)
def test_sni_is_lower_cased_with_one_trailing_dot_removed(raw: bytes, sni: str) -> None:
    expect(hello(hello_body(extensions=sni_ext(raw))), sni, ())


def test_sni_takes_the_first_host_name_entry() -> None:
    names = b"\x07" + vec(2, b"opaque") + b"\x00" + vec(2, b"first") + b"\x00" + vec(2, b"second")
    expect(hello(hello_body(extensions=ext(0, vec(2, names)))), "first", ())


def test_sni_without_a_host_name_entry_is_empty() -> None:
    expect(hello(hello_body(extensions=sni_ext(b"x", name_type=1))), "", ())


def test_alpn_names_round_trip_as_latin_1() -> None:
    extensions = alpn_ext(b"\xff\x00", b"h2", b"h2", b"x" * 255)
    expect(hello(hello_body(extensions=extensions)), "", ("\xff\x00", "h2", "h2", "x" * 255))


BASE = b"\x03\x03" + bytes(32)
SESSION_SUITES = BASE + b"\x00" + vec(2, b"\x13\x01")
FIXED = SESSION_SUITES + b"\x01\x00"  # everything up to the extensions block


def with_ext(extension: bytes) -> bytes:
    return FIXED + vec(2, extension)


MALFORMED_HELLOS = [
    pytest.param(b"", "truncated hello", id="empty-body"),
    pytest.param(BASE[:-1], "truncated hello", id="short-random"),
    pytest.param(BASE, "bad session id length", id="no-session-id"),
    pytest.param(BASE + vec(1, bytes(33)) + FIXED[35:], "bad session id length", id="session-33"),
    pytest.param(BASE + b"\x05abcd", "bad session id length", id="session-past-end"),
    pytest.param(
        BASE + b"\x00" + vec(2, b"\x13") + b"\x01\x00", "bad cipher suites length", id="odd"
    ),
    pytest.param(BASE + b"\x00" + vec(2, b"") + b"\x01\x00", "bad cipher suites length", id="none"),
    pytest.param(BASE + b"\x00\x00\x04\x13\x01", "bad cipher suites length", id="suites-past-end"),
    pytest.param(SESSION_SUITES + b"\x00", "bad compression methods length", id="no-methods"),
    pytest.param(SESSION_SUITES, "bad compression methods length", id="methods-missing"),
    pytest.param(SESSION_SUITES + b"\x02\x00", "bad compression methods length", id="methods-past"),
    pytest.param(FIXED + b"\x00", "bad extensions length", id="one-byte-block-length"),
    pytest.param(FIXED + b"\x00\x05" + padding_ext(0), "bad extensions length", id="block-long"),
    pytest.param(FIXED + vec(2, padding_ext(0)) + b"\x00", "bad extensions length", id="trailing"),
    pytest.param(FIXED + vec(2, b"\x00\x15\x00"), "truncated extension", id="short-ext-header"),
    pytest.param(
        FIXED + vec(2, b"\x00\x15\x00\x02\x00"), "truncated extension", id="ext-past-block"
    ),
    pytest.param(
        with_ext(padding_ext(1) + padding_ext(2)), "duplicate extension", id="duplicate-padding"
    ),
    pytest.param(
        with_ext(sni_ext(b"a") + sni_ext(b"a")), "duplicate extension", id="duplicate-sni"
    ),
    pytest.param(with_ext(ext(0, b"")), "bad server name list", id="sni-empty-body"),
    pytest.param(with_ext(ext(0, vec(2, b""))), "bad server name list", id="sni-empty-list"),
    pytest.param(with_ext(ext(0, b"\x00")), "bad server name list", id="sni-short-list-length"),
    pytest.param(
        with_ext(ext(0, b"\x00\x09" + b"\x00" + vec(2, b"a"))),
        "bad server name list",
        id="sni-list-past-body",
    ),
    pytest.param(
        with_ext(ext(0, vec(2, b"\x00" + vec(2, b"a")) + b"\x00")),
        "bad server name list",
        id="sni-trailing-after-list",
    ),
    pytest.param(
        with_ext(ext(0, vec(2, b"\x00\x00\x05ab"))), "bad server name list", id="sni-name-past-list"
    ),
    pytest.param(
        with_ext(ext(0, vec(2, b"\x00\x00"))), "bad server name list", id="sni-short-entry"
    ),
    pytest.param(with_ext(sni_ext(b"")), "empty sni", id="sni-empty"),
    pytest.param(with_ext(sni_ext(b".")), "empty sni", id="sni-dot"),
    pytest.param(with_ext(sni_ext("bücher.de".encode())), "sni not ascii", id="sni-utf8"),
    pytest.param(with_ext(sni_ext(b"a\x00b")), "bad sni character", id="sni-nul"),
    pytest.param(with_ext(sni_ext(b"a b")), "bad sni character", id="sni-space"),
    pytest.param(with_ext(sni_ext(b"a\r\nb")), "bad sni character", id="sni-crlf"),
    pytest.param(with_ext(sni_ext(b"a\x7f")), "bad sni character", id="sni-del"),
    pytest.param(
        with_ext(sni_ext(b"ok") + padding_ext(0)[:2] + b"\x00"), "truncated extension", id="tail"
    ),
    pytest.param(with_ext(ext(16, b"")), "bad alpn list", id="alpn-empty-body"),
    pytest.param(with_ext(ext(16, vec(2, b""))), "bad alpn list", id="alpn-empty-list"),
    pytest.param(with_ext(ext(16, vec(2, b"\x05h2"))), "bad alpn list", id="alpn-name-past-list"),
    pytest.param(
        with_ext(ext(16, vec(2, vec(1, b"h2")) + b"x")), "bad alpn list", id="alpn-trailing"
    ),
    pytest.param(with_ext(ext(16, b"\x00\x09\x02h2")), "bad alpn list", id="alpn-list-past-body"),
    pytest.param(with_ext(alpn_ext(b"h2", b"")), "empty alpn protocol", id="alpn-empty-name"),
]


@pytest.mark.parametrize(("body", "reason"), MALFORMED_HELLOS)
def test_malformed_hello_fields(body: bytes, reason: str) -> None:
    assert parse_client_hello(hello(body)) == Malformed(reason)


@pytest.mark.parametrize(("body", "reason"), MALFORMED_HELLOS)
def test_malformed_hello_fields_split_into_records(body: bytes, reason: str) -> None:
    assert parse_client_hello(in_records_of(handshake(body), 3)) == Malformed(reason)


def test_every_reason_is_covered_and_listed() -> None:
    reasons = {param.values[1] for param in MALFORMED_HELLOS} | {
        "empty record",
        "record too long",
        "bad record version",
        "non-handshake record",
        "not a client hello",
        "too large",
    }
    assert reasons == MALFORMED_REASONS
