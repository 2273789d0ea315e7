"""``streams.PrefixedStream``: the bytes read before a stream's owner was known (a PROXY header's
leftovers, a peeked ClientHello) come back first, in pieces no larger than ``max_bytes``, never
merged with the inner stream's bytes; then the inner stream's reads. Writes, EOF and closing go
straight to the inner stream (SPEC §4.11: every peeked byte is replayed unchanged)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from a3s_gateway.streams import PrefixedStream

MemoryStream = trio.StapledStream[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]


def prefixed(prefix: bytes) -> tuple[PrefixedStream, MemoryStream]:
    """A ``PrefixedStream`` over one end of a memory pair, and the other end."""
    inner, peer = trio.testing.memory_stream_pair()
    return PrefixedStream(inner, prefix), peer


async def test_without_max_bytes_the_whole_prefix_comes_first_then_the_inner_stream() -> None:
    stream, peer = prefixed(b"peeked")
    await peer.send_all(b"live")
    assert await stream.receive_some() == b"peeked"  # not merged with the waiting inner bytes
    assert await stream.receive_some() == b"live"


async def test_the_prefix_comes_in_pieces_no_larger_than_max_bytes() -> None:
    stream, peer = prefixed(b"abcdefg")
    await peer.send_all(b"hij")
    assert await stream.receive_some(3) == b"abc"
    assert await stream.receive_some(3) == b"def"
    assert await stream.receive_some(3) == b"g"  # the last piece is short, not topped up
    assert await stream.receive_some(3) == b"hij"


async def test_max_bytes_larger_than_the_prefix_returns_only_the_prefix() -> None:
    stream, peer = prefixed(b"ab")
    await peer.send_all(b"cd")
    assert await stream.receive_some(100) == b"ab"
    assert await stream.receive_some(100) == b"cd"


async def test_an_empty_prefix_reads_the_inner_stream_at_once() -> None:
    stream, peer = prefixed(b"")
    await peer.send_all(b"xyz")
    assert await stream.receive_some(2) == b"xy"
    assert await stream.receive_some() == b"z"


async def test_max_bytes_below_one_is_refused_while_the_prefix_lasts() -> None:
    stream, _ = prefixed(b"abc")
    with pytest.raises(ValueError, match="max_bytes"):
        await stream.receive_some(0)
    assert await stream.receive_some() == b"abc"  # the refused read took nothing


async def test_eof_of_the_inner_stream_comes_after_the_prefix() -> None:
    stream, peer = prefixed(b"hello")
    await peer.send_eof()
    assert await stream.receive_some(4) == b"hell"
    assert await stream.receive_some(4) == b"o"
    assert await stream.receive_some(4) == b""
    assert await stream.receive_some(4) == b""


async def test_a_prefix_read_is_a_checkpoint() -> None:
    stream, _ = prefixed(b"abc")
    with trio.CancelScope() as scope:
        scope.cancel()
        await stream.receive_some()
    assert scope.cancelled_caught
    assert await stream.receive_some() == b"abc"  # the cancelled read took nothing


async def test_writes_eof_and_close_go_to_the_inner_stream() -> None:
    stream, peer = prefixed(b"unread")
    await stream.send_all(b"to the peer")
    await stream.wait_send_all_might_not_block()
    assert await peer.receive_some() == b"to the peer"
    await stream.send_eof()
    assert await peer.receive_some() == b""
    await peer.send_all(b"still readable after our EOF")
    assert await stream.receive_some() == b"unread"
    assert await stream.receive_some() == b"still readable after our EOF"
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.inner.receive_some()
    with pytest.raises(trio.BrokenResourceError):
        await peer.send_all(b"x")


@given(
    st.binary(max_size=300),
    st.lists(st.binary(min_size=1, max_size=50), max_size=5),
    st.lists(st.integers(1, 70) | st.none(), min_size=1, max_size=10),
)
def test_reads_give_the_prefix_then_the_inner_bytes_unchanged(
    prefix: bytes, chunks: list[bytes], sizes: list[int | None]
) -> None:
    """Whatever the read sizes: no read exceeds its ``max_bytes``, no read mixes prefix and
    inner bytes, and the reads concatenate to ``prefix`` + the inner bytes."""

    async def main() -> None:
        stream, peer = prefixed(prefix)
        for chunk in chunks:
            await peer.send_all(chunk)
        await peer.send_eof()
        got = bytearray()
        for turn in range(10_000):
            size = sizes[turn % len(sizes)]
            piece = await stream.receive_some(size)
            if not piece:
                break
            assert size is None or len(piece) <= size
            assert len(got) >= len(prefix) or len(got) + len(piece) <= len(prefix)
            got += piece
        assert got == prefix + b"".join(chunks)

    trio.run(main)
