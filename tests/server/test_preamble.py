"""What a connection sends before its protocol (SPEC §3.7, §4.11): ``read_proxy_header`` and
``peek_client_hello`` over memory streams, on trio's autojump clock where a bound is measured.

Both read through ``Reader``, a receive-only view of the stream that records every read, so a
test also sees that they never write, never ask for more than the answer needs (the bytes
after a header or a hello stay in the stream) and give back every byte they took."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from a3s_gateway.observability.stream_stats import StreamStats
from a3s_gateway.protocols.proxy_protocol import (
    MAX_PROXY_HEADER_BYTES,
    ProxyHeader,
    encode_v1,
    encode_v2,
)
from a3s_gateway.server.preamble import (
    Hello,
    ProxyHeaderError,
    peek_client_hello,
    read_proxy_header,
)
from tests.routing.test_clienthello import (
    alpn_ext,
    capture_hello,
    handshake,
    hello,
    hello_body,
    in_records_of,
    padding_ext,
    record,
    sni_ext,
)

MemoryStream = trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]

PROXY_SECONDS = 3.0
PEEK_SECONDS = 5.0
#: The Python ssl client's first flight, for SNI example.com and ALPN h2, http/1.1.
REAL_HELLO = capture_hello("example.com", ["h2", "http/1.1"])


class Reader(trio.abc.ReceiveStream):
    """A receive-only view of a memory stream that records each read's ``max_bytes`` and
    result; ``broken``: reads raise ``BrokenResourceError`` once the data runs out."""

    def __init__(self, inner: MemoryStream, *, broken: bool = False) -> None:
        self.inner = inner
        self.broken = broken
        self.asked: list[int | None] = []
        self.got = bytearray()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self.asked.append(max_bytes)
        data = await self.inner.receive_some(max_bytes)
        if not data and self.broken:
            raise trio.BrokenResourceError("connection reset")
        self.got += data
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


def pair(*, broken: bool = False) -> tuple[Reader, MemoryStream]:
    """The reader the code under test gets, and the peer that writes to it."""
    ours, peer = trio.testing.memory_stream_pair()
    return Reader(ours, broken=broken), peer


async def remaining(reader: Reader) -> bytes:
    """What is left in the stream after the call under test (the peer must have sent EOF)."""
    out = bytearray()
    while data := await reader.inner.receive_some():
        out += data
    return bytes(out)


async def trickle(peer: MemoryStream, data: bytes, every: float, *, eof: bool = False) -> None:
    """``data`` one byte at a time, ``every`` seconds apart; then EOF or silence."""
    for byte in data:
        await trio.sleep(every)
        await peer.send_all(bytes([byte]))
    if eof:
        await peer.send_eof()


# --- read_proxy_header ---


@pytest.mark.parametrize(
    ("header", "source", "destination", "version"),
    [
        (
            encode_v1(("192.0.2.1", 5555), ("198.51.100.2", 443)),
            ("192.0.2.1", 5555),
            ("198.51.100.2", 443),
            1,
        ),
        (
            encode_v1(("2001:db8::1", 1), ("2001:db8::2", 65535)),
            ("2001:db8::1", 1),
            ("2001:db8::2", 65535),
            1,
        ),
        (encode_v1(None, None), None, None, 1),
        (
            encode_v2(("192.0.2.1", 5555), ("198.51.100.2", 443), tlvs=b"\x04\x00\x02ok"),
            ("192.0.2.1", 5555),
            ("198.51.100.2", 443),
            2,
        ),
        (
            encode_v2(("2001:db8::1", 40000), ("2001:db8::2", 8443)),
            ("2001:db8::1", 40000),
            ("2001:db8::2", 8443),
            2,
        ),
        (encode_v2(None, None, local=True), None, None, 2),
    ],
    ids=["v1-tcp4", "v1-tcp6", "v1-unknown", "v2-tcp4-tlv", "v2-tcp6", "v2-local"],
)
async def test_a_header_is_parsed_and_the_bytes_after_it_are_kept(
    header: bytes,
    source: tuple[str, int] | None,
    destination: tuple[str, int] | None,
    version: int,
) -> None:
    reader, peer = pair()
    payload = b"GET / HTTP/1.1\r\nhost: example.com\r\n\r\n"
    await peer.send_all(header + payload)
    await peer.send_eof()
    parsed, leftover = await read_proxy_header(reader, PROXY_SECONDS)
    assert parsed == ProxyHeader(source, destination, consumed=len(header), version=version)
    assert leftover + await remaining(reader) == payload
    assert leftover == payload  # one read takes the header and what follows it, handed back
    assert bytes(reader.got) == header + leftover


async def test_a_header_arriving_a_byte_at_a_time_within_the_bound_is_parsed(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    reader, peer = pair()
    header = encode_v1(("203.0.113.9", 1234), ("203.0.113.10", 80))
    every = (PROXY_SECONDS - 0.1) / len(header)
    nursery.start_soon(trickle, peer, header + b"after", every)
    start = trio.current_time()
    parsed, leftover = await read_proxy_header(reader, PROXY_SECONDS)
    assert parsed is not None
    assert parsed.source == ("203.0.113.9", 1234)
    assert b"after".startswith(leftover)
    assert trio.current_time() - start == pytest.approx(every * len(header))


@pytest.mark.parametrize(
    "first",
    [
        b"GET / HTTP/1.1\r\nhost: a\r\n\r\n",
        b"\x16\x03\x01\x00\x05hello",
        b"proxy TCP4 1.2.3.4 1.2.3.5 1 2\r\n",  # the signature is case-sensitive
        b"PROXZ",
        b"\r\n\r\n\x00\r\nQUIZ\n",
        b"S",
    ],
)
async def test_bytes_without_a_signature_are_given_back_as_leftover(first: bytes) -> None:
    reader, peer = pair()
    await peer.send_all(first)
    await peer.send_eof()
    parsed, leftover = await read_proxy_header(reader, PROXY_SECONDS)
    assert parsed is None
    assert leftover
    assert first.startswith(leftover)
    assert leftover + await remaining(reader) == first


async def test_silence_is_no_header_after_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reader, _peer = pair()
    start = trio.current_time()
    assert await read_proxy_header(reader, PROXY_SECONDS) == (None, b"")
    assert trio.current_time() - start == pytest.approx(PROXY_SECONDS)


@pytest.mark.parametrize("partial", [b"P", b"PROXY ", b"PROXY TCP4 1.2", b"\r\n\r\n\x00", b"\r\n"])
async def test_a_partial_header_then_silence_is_an_error_at_the_bound(
    autojump_clock: trio.testing.MockClock, partial: bytes
) -> None:
    reader, peer = pair()
    await peer.send_all(partial)
    start = trio.current_time()
    with pytest.raises(ProxyHeaderError, match="timeout"):
        await read_proxy_header(reader, PROXY_SECONDS)
    assert trio.current_time() - start == pytest.approx(PROXY_SECONDS)


async def test_a_header_trickled_past_the_bound_is_an_error_at_the_bound(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """A slow sender cannot stretch the deadline: each byte does not restart it."""
    reader, peer = pair()
    header = encode_v1(("192.0.2.1", 1), ("192.0.2.2", 2))
    nursery.start_soon(trickle, peer, header, 1.0)
    start = trio.current_time()
    with pytest.raises(ProxyHeaderError, match="timeout"):
        await read_proxy_header(reader, PROXY_SECONDS)
    assert trio.current_time() - start == pytest.approx(PROXY_SECONDS)


@pytest.mark.parametrize(
    "partial",
    [
        b"P",
        b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r",
        encode_v2(("192.0.2.1", 1), ("192.0.2.2", 2))[:-1],
        encode_v2(None, None)[:13],
    ],
)
async def test_eof_inside_a_header_is_an_error(partial: bytes) -> None:
    reader, peer = pair()
    await peer.send_all(partial)
    await peer.send_eof()
    with pytest.raises(ProxyHeaderError, match="eof"):
        await read_proxy_header(reader, PROXY_SECONDS)


async def test_a_reset_inside_a_header_is_an_error_and_before_one_is_no_header() -> None:
    reader, peer = pair(broken=True)
    await peer.send_all(b"PROXY TCP4 ")
    await peer.send_eof()
    with pytest.raises(ProxyHeaderError, match="eof"):
        await read_proxy_header(reader, PROXY_SECONDS)
    reader, peer = pair(broken=True)
    await peer.send_eof()
    assert await read_proxy_header(reader, PROXY_SECONDS) == (None, b"")


async def test_eof_before_any_byte_is_no_header() -> None:
    reader, peer = pair()
    await peer.send_eof()
    assert await read_proxy_header(reader, PROXY_SECONDS) == (None, b"")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"PROXY TCP5 1.2.3.4 1.2.3.5 1 2\r\n", "bad_protocol"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.5 1 080\r\n", "bad_port"),
        (b"PROXY TCP4 1.2.3.4 1.2.3.5 1 2\n", "bad_line_end"),
        (b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c", "bad_version"),
        (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff", "too_large"),
    ],
)
async def test_a_malformed_header_is_an_error_with_its_reason_without_waiting(
    autojump_clock: trio.testing.MockClock, data: bytes, reason: str
) -> None:
    reader, peer = pair()
    await peer.send_all(data)  # no EOF: the answer must not wait for more bytes
    start = trio.current_time()
    with pytest.raises(ProxyHeaderError, match=reason):
        await read_proxy_header(reader, PROXY_SECONDS)
    assert trio.current_time() == start


async def test_reads_ask_for_the_header_cap_and_hand_back_the_rest() -> None:
    """A v1 line must not cost a read per byte: every read asks for what the cap leaves, and
    the bytes past the header come back as the leftover."""
    reader, peer = pair()
    header = encode_v1(("192.0.2.1", 1), ("192.0.2.2", 2))
    await peer.send_all(header + b"x" * 10_000)
    parsed, leftover = await read_proxy_header(reader, PROXY_SECONDS)
    assert parsed is not None
    assert reader.asked == [MAX_PROXY_HEADER_BYTES]
    assert bytes(reader.got) == header + leftover
    assert leftover == b"x" * (len(reader.got) - len(header))


# --- peek_client_hello ---


async def peek(
    reader: Reader, buffered: bytes = b"", stats: StreamStats | None = None
) -> Hello | None:
    return await peek_client_hello(
        reader, buffered, PEEK_SECONDS, stats=stats or StreamStats(), entrypoint="tls"
    )


async def test_a_real_hello_gives_sni_alpn_and_every_byte_read() -> None:
    reader, peer = pair()
    await peer.send_all(REAL_HELLO + b"\x17\x03\x03 application data")
    await peer.send_eof()
    stats = StreamStats()
    got = await peek(reader, stats=stats)
    assert got == Hello("example.com", ("h2", "http/1.1"), REAL_HELLO)
    assert await remaining(reader) == b"\x17\x03\x03 application data"  # not read
    assert stats.client_hello_errors == {}


async def test_a_hello_split_across_records_and_reads_is_reassembled(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    message = handshake(hello_body(extensions=sni_ext(b"Split.Example.") + alpn_ext(b"h2")))
    records = in_records_of(message, 7)
    every = (PEEK_SECONDS - 0.5) / len(records)
    reader, peer = pair()
    nursery.start_soon(trickle, peer, records, every)
    got = await peek(reader)
    assert got == Hello("split.example", ("h2",), records)


async def test_buffered_bytes_come_first_and_a_whole_hello_in_them_reads_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reader, peer = pair()
    await peer.send_all(b"not to be read")
    start = trio.current_time()
    assert await peek(reader, REAL_HELLO) == Hello("example.com", ("h2", "http/1.1"), REAL_HELLO)
    assert reader.asked == []
    assert trio.current_time() == start
    reader, peer = pair()
    await peer.send_all(REAL_HELLO[10:])
    got = await peek(reader, REAL_HELLO[:10])
    assert got == Hello("example.com", ("h2", "http/1.1"), REAL_HELLO)


@pytest.mark.parametrize(
    "first", [b"SSH-2.0-OpenSSH_9.6\r\n", b"GET / HTTP/1.1\r\n\r\n", b"\x16\x02", b"\x00"]
)
async def test_bytes_that_are_not_tls_give_no_sni_and_are_all_returned(first: bytes) -> None:
    reader, peer = pair()
    await peer.send_all(first)
    await peer.send_eof()
    stats = StreamStats()
    got = await peek(reader, stats=stats)
    assert got is not None
    assert (got.sni, got.alpn) == ("", ())
    assert got.data
    assert got.data + await remaining(reader) == first
    assert stats.client_hello_errors == {}  # not TLS is not an error


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (record(handshake(hello_body(), msg_type=2)), "not a client hello"),
        (record(b""), "empty record"),
        (record(handshake(hello_body(extensions=sni_ext(b"")))), "empty sni"),
        (record(handshake(hello_body(extensions=sni_ext(b"a b")))), "bad sni character"),
        (record(handshake(hello_body(extensions=alpn_ext(b"")))), "empty alpn protocol"),
        (record(b"\x01\x01\x00\x00" + bytes(100)), "too large"),
        (record(b"\x01\x00\x00\x40") + record(b"x", content_type=23), "non-handshake record"),
    ],
)
async def test_a_malformed_hello_is_counted_and_gives_no_sni(data: bytes, reason: str) -> None:
    reader, peer = pair()
    await peer.send_all(data + b"more")
    await peer.send_eof()
    stats = StreamStats()
    got = await peek(reader, stats=stats)
    assert got is not None
    assert (got.sni, got.alpn) == ("", ())
    assert got.data + await remaining(reader) == data + b"more"
    assert stats.client_hello_errors == {("tls", reason): 1}


async def test_malformed_hellos_add_up_per_entrypoint_and_reason() -> None:
    stats = StreamStats()
    bad = record(handshake(hello_body(), msg_type=2))
    for entrypoint in ("a", "a", "b"):
        reader, peer = pair()
        await peer.send_all(bad)
        await peek_client_hello(reader, b"", PEEK_SECONDS, stats=stats, entrypoint=entrypoint)
    assert stats.client_hello_errors == {
        ("a", "not a client hello"): 2,
        ("b", "not a client hello"): 1,
    }


@pytest.mark.parametrize("cut", [0, 1, 5, 6, len(REAL_HELLO) - 1])
async def test_eof_before_the_hello_is_complete_is_none(cut: int) -> None:
    reader, peer = pair()
    await peer.send_all(REAL_HELLO[:cut])
    await peer.send_eof()
    stats = StreamStats()
    assert await peek(reader, stats=stats) is None
    assert stats.client_hello_errors == {}


async def test_eof_with_only_buffered_bytes_is_none() -> None:
    reader, peer = pair()
    await peer.send_eof()
    assert await peek(reader, REAL_HELLO[:20]) is None


async def test_a_reset_before_the_hello_is_complete_is_none() -> None:
    reader, peer = pair(broken=True)
    await peer.send_all(REAL_HELLO[:30])
    await peer.send_eof()
    assert await peek(reader) is None


async def test_silence_gives_no_sni_and_no_bytes_at_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reader, _peer = pair()
    start = trio.current_time()
    assert await peek(reader) == Hello("", (), b"")
    assert trio.current_time() - start == pytest.approx(PEEK_SECONDS)


async def test_a_partial_hello_then_silence_gives_its_bytes_at_the_bound_uncounted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    reader, peer = pair()
    await peer.send_all(REAL_HELLO[:50])
    stats = StreamStats()
    start = trio.current_time()
    assert await peek(reader, b"", stats) == Hello("", (), REAL_HELLO[:50])
    assert trio.current_time() - start == pytest.approx(PEEK_SECONDS)
    assert stats.client_hello_errors == {}


async def test_a_hello_trickled_past_the_bound_is_cut_off_at_the_bound(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    reader, peer = pair()
    nursery.start_soon(trickle, peer, REAL_HELLO, 0.9)
    start = trio.current_time()
    got = await peek(reader)
    assert trio.current_time() - start == pytest.approx(PEEK_SECONDS)
    assert got is not None
    assert (got.sni, got.alpn) == ("", ())
    assert REAL_HELLO.startswith(got.data)
    assert len(got.data) == 5  # the bytes sent at 0.9, 1.8, 2.7, 3.6 and 4.5 s


async def test_a_hello_near_the_size_limit_is_read_whole() -> None:
    records = hello(hello_body(extensions=sni_ext(b"big.example") + padding_ext(65_000)))
    assert 65_000 < len(records) <= 65536
    reader, peer = pair()
    await peer.send_all(records)
    got = await peek(reader)
    assert got == Hello("big.example", (), records)
    assert all(size is not None and size <= 65536 for size in reader.asked)
