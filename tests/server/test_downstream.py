"""``Http1Downstream`` pieces the exchange relies on, over a memory stream: taking a request body
that arrived with its head (sent upstream in one write, no pump task), and batching a response
into one write."""

from __future__ import annotations

import trio
import trio.testing

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead, ResponseHead
from a3s_gateway.protocols.http1 import Http1Server
from a3s_gateway.server.http1_downstream import Http1Downstream


async def downstream(data: bytes) -> tuple[Http1Downstream, RequestHead, trio.abc.Stream]:
    ours, theirs = trio.testing.memory_stream_pair()
    down = Http1Downstream(ours, Http1Server(), body_idle=5.0)
    await theirs.send_all(data)
    await down.fill()
    head = down.pending.popleft()
    assert isinstance(head, RequestHead)
    down.request_complete = not head.has_body
    return down, head, theirs


async def test_a_body_that_came_with_its_head_is_taken_whole() -> None:
    down, _, _ = await downstream(b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\n\r\nhello")
    body = down.take_buffered_body()
    assert body == [BodyChunk(b"hello"), EndOfBody()]
    assert down.request_complete
    assert not down.pending
    assert down.take_buffered_body() is None  # complete: nothing more to take


async def test_a_partial_body_is_left_for_the_pump() -> None:
    down, _, client = await downstream(
        b"POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 10\r\n\r\nhello"
    )
    assert down.take_buffered_body() is None
    assert list(down.pending) == [BodyChunk(b"hello")]
    assert not down.request_complete
    await client.send_all(b"world")
    assert await down.receive_body() == BodyChunk(b"hello")
    assert await down.receive_body() == BodyChunk(b"world")
    assert await down.receive_body() == EndOfBody()
    assert down.request_complete


async def test_a_bodiless_request_has_nothing_to_take() -> None:
    down, head, _ = await downstream(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
    assert not head.has_body
    assert down.take_buffered_body() is None


class CountingStream(trio.abc.Stream):
    """Records every ``send_all`` call separately."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return b"GET / HTTP/1.1\r\nhost: a\r\n\r\n"

    async def send_eof(self) -> None: ...

    async def aclose(self) -> None: ...


async def test_a_batch_is_one_write() -> None:
    stream = CountingStream()
    down = Http1Downstream(stream, Http1Server(), body_idle=5.0)
    await down.fill()
    head = ResponseHead(200, [(b"content-length", b"2")], b"OK")
    await down.send_batch([head, BodyChunk(b"hi"), EndOfBody()])
    assert down.response_started
    assert stream.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi"]
