"""``Http2Tunnel`` and ``Http2Downstream.take_over``: one HTTP/2 stream of an extended CONNECT as
the byte stream a WebSocket relay reads and writes (RFC 8441 §5, SPEC §5.8, §5.11).

The gateway side is the real one (``Http2Server``, ``Http2Link``, ``Http2Downstream``) writing
into a ``Wire`` that keeps every byte; the client is h2's own ``H2Connection``, which parses
those bytes and sends what a browser would. The test plays the driver: it feeds the client's
bytes to the adapter and hands each event to the stream (``Peer.to_server``).

Covered: when ``take_over`` is possible; reads (DATA joined, split at ``max_bytes``, the
client's early DATA first, END_STREAM as ``b""``); flow control (a read's bytes acknowledged
only when the next read is asked for, so the client's window reopens then); writes within the
client's window, waiting for its WINDOW_UPDATE; ``send_eof`` as END_STREAM; ``aclose`` as
RST_STREAM ``CANCEL`` before it and ``NO_ERROR`` after it (nothing once both sides ended); the
client's RST_STREAM as a broken stream rather than a cancelled task.
"""

from __future__ import annotations

from typing import Final

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio
import trio.testing

from a3s_gateway.protocols.events import BodyChunk, EndOfBody, RequestHead, ResponseHead
from a3s_gateway.protocols.http2 import (
    ErrorCode,
    Http2Limits,
    Http2Server,
    StreamCancelled,
    WindowOpened,
)
from a3s_gateway.server.downstream import UpgradeUnavailable
from a3s_gateway.server.http2_downstream import Http2Downstream, Http2Link
from a3s_gateway.server.http2_tunnel import Http2Tunnel
from tests.protocols.test_http2 import of_type

CONNECT_WS: Final = [
    (b":method", b"CONNECT"),
    (b":protocol", b"websocket"),
    (b":scheme", b"http"),
    (b":authority", b"gateway.test"),
    (b":path", b"/chat"),
    (b"sec-websocket-version", b"13"),
]
GET: Final = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"gateway.test"),
    (b":path", b"/"),
]
#: The body idle gap: the bound on a write waiting for the client's window.
IDLE: Final = 5.0
WINDOW: Final = 65535


class Wire(trio.abc.Stream):
    """The client connection as the link writes to it: every byte kept."""

    def __init__(self) -> None:
        self.sent = bytearray()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def take(self) -> bytes:
        data = bytes(self.sent)
        self.sent.clear()
        return data


class Peer:
    """Our server side and h2's client, with the driver's dispatch done by hand."""

    def __init__(self) -> None:
        self.adapter = Http2Server(Http2Limits())
        self.wire = Wire()
        self.link = Http2Link(self.wire, self.adapter, IDLE)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.client = h2.connection.H2Connection(config=config)
        self.streams: dict[int, Http2Downstream] = {}

    async def start(self) -> None:
        self.client.initiate_connection()
        self.adapter.initiate()
        self.to_server()
        await self.link.flush()
        self.to_client()
        self.to_server()

    def to_server(self) -> list[RequestHead]:
        """The client's bytes into the adapter; events dispatched as the driver does."""
        heads: list[RequestHead] = []
        for event in self.adapter.receive(self.client.data_to_send(), trio.current_time()):
            if isinstance(event, RequestHead):
                down = Http2Downstream(self.link, event, IDLE, IDLE)
                self.streams[event.stream_id] = down
                heads.append(event)
            elif isinstance(event, BodyChunk | EndOfBody):
                self.streams[event.stream_id].deliver(event)
            elif isinstance(event, WindowOpened):
                self.link.window_opened(event.stream_id)
            elif isinstance(event, StreamCancelled):
                self.streams[event.stream_id].cancel()
        return heads

    def to_client(self) -> list[h2.events.Event]:
        """What the gateway wrote (the adapter's queue flushed or not), into the client."""
        data = self.wire.take() + self.adapter.data_to_send()
        return list(self.client.receive_data(data))

    async def open(self, fields: list[tuple[bytes, bytes]] = CONNECT_WS) -> Http2Downstream:
        stream_id = self.client.get_next_available_stream_id()
        self.client.send_headers(stream_id, fields, end_stream=False)
        [head] = self.to_server()
        return self.streams[head.stream_id]

    async def tunnel(self, early: bytes = b"") -> tuple[Http2Downstream, Http2Tunnel]:
        """An extended CONNECT answered 200 and taken over (``early``: DATA the client sent
        before the 200)."""
        down = await self.open()
        if early:
            self.client.send_data(down.stream_id, early)
            self.to_server()
        await down.send(ResponseHead(200, []))
        handover = down.take_over()
        assert handover.leftover == b""
        assert isinstance(handover.stream, Http2Tunnel)
        return down, handover.stream


@pytest.fixture
async def peer() -> Peer:
    started = Peer()
    await started.start()
    return started


# -- take_over ------------------------------------------------------------------------------


async def test_take_over_needs_an_extended_connect_answered_2xx(peer: Peer) -> None:
    plain = await peer.open(GET)
    await plain.send(ResponseHead(200, []))
    with pytest.raises(UpgradeUnavailable):
        plain.take_over()  # not a CONNECT: a response, not a tunnel
    early = await peer.open()
    with pytest.raises(UpgradeUnavailable):
        early.take_over()  # nothing answered yet
    refused = await peer.open()
    await refused.send_batch([ResponseHead(403, []), EndOfBody()])
    with pytest.raises(UpgradeUnavailable):
        refused.take_over()  # refused: no tunnel
    peer.to_client()
    down, _ = await peer.tunnel()
    with pytest.raises(UpgradeUnavailable):
        down.take_over()  # once only
    [response] = of_type(peer.to_client(), h2.events.ResponseReceived)
    assert response.stream_id == down.stream_id
    assert response.stream_ended is None  # the 200 leaves the stream open


# -- reading --------------------------------------------------------------------------------


async def test_reads_join_queued_data_split_at_max_bytes_and_start_with_early_data(
    peer: Peer,
) -> None:
    down, tunnel = await peer.tunnel(early=b"early ")
    peer.client.send_data(down.stream_id, b"abc")
    peer.client.send_data(down.stream_id, b"def")
    peer.to_server()
    assert await tunnel.receive_some() == b"early abcdef"
    peer.client.send_data(down.stream_id, b"0123456789")
    peer.to_server()
    assert await tunnel.receive_some(4) == b"0123"
    assert await tunnel.receive_some(4) == b"4567"
    assert await tunnel.receive_some() == b"89"
    with pytest.raises(ValueError, match="max_bytes"):
        await tunnel.receive_some(0)


async def test_a_reads_bytes_are_acknowledged_when_the_next_read_is_asked_for(
    peer: Peer,
) -> None:
    down, tunnel = await peer.tunnel()
    stream_id = down.stream_id
    peer.to_client()
    for _ in range(4):  # 40000 bytes in frames of at most 16 KiB
        peer.client.send_data(stream_id, b"x" * 10000)
    peer.to_server()
    assert len(await tunnel.receive_some()) == 40000
    # Read, not yet handed on: the client's window stays spent.
    await peer.link.flush()
    assert not of_type(peer.to_client(), h2.events.WindowUpdated)
    assert peer.client.local_flow_control_window(stream_id) == WINDOW - 40000
    async with trio.open_nursery() as nursery:
        got: list[bytes] = []

        async def read() -> None:
            got.append(await tunnel.receive_some())

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        # Asking for the next read acknowledged the last: the window is back.
        updates = of_type(peer.to_client(), h2.events.WindowUpdated)
        assert [u.delta for u in updates if u.stream_id == stream_id] == [40000]
        assert peer.client.local_flow_control_window(stream_id) == WINDOW
        assert not got  # and the read waits for the client's next DATA
        peer.client.send_data(stream_id, b"next")
        peer.to_server()
    assert got == [b"next"]


async def test_end_stream_reads_as_eof_and_stays_so(peer: Peer) -> None:
    down, tunnel = await peer.tunnel()
    peer.client.send_data(down.stream_id, b"last", end_stream=True)
    peer.to_server()
    assert await tunnel.receive_some() == b"last"
    assert await tunnel.receive_some() == b""
    assert await tunnel.receive_some() == b""


# -- writing --------------------------------------------------------------------------------


async def test_writes_are_data_frames_on_the_stream(peer: Peer) -> None:
    down, tunnel = await peer.tunnel()
    await tunnel.send_all(b"hello")
    await tunnel.send_all(bytearray(b" world"))
    await tunnel.wait_send_all_might_not_block()
    data = of_type(peer.to_client(), h2.events.DataReceived)
    assert [(d.stream_id, d.data) for d in data] == [
        (down.stream_id, b"hello"),
        (down.stream_id, b" world"),
    ]


async def test_a_write_waits_for_the_clients_window(peer: Peer) -> None:
    peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 10})
    peer.to_server()
    down, tunnel = await peer.tunnel()
    stream_id = down.stream_id
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tunnel.send_all, b"y" * 25)
        await trio.testing.wait_all_tasks_blocked()
        first = of_type(peer.to_client(), h2.events.DataReceived)
        assert b"".join(d.data for d in first) == b"y" * 10  # the window, and no more
        peer.client.increment_flow_control_window(15, stream_id=stream_id)
        peer.to_server()
    rest = of_type(peer.to_client(), h2.events.DataReceived)
    assert b"".join(d.data for d in rest) == b"y" * 15


async def test_send_eof_ends_the_stream_and_then_writes_are_refused(peer: Peer) -> None:
    down, tunnel = await peer.tunnel()
    await tunnel.send_eof()
    await tunnel.send_eof()  # idempotent
    [ended] = of_type(peer.to_client(), h2.events.StreamEnded)
    assert ended.stream_id == down.stream_id
    assert down.response_complete
    with pytest.raises(trio.ClosedResourceError):
        await tunnel.send_all(b"late")
    # Reading goes on: the client's side is still open.
    peer.client.send_data(down.stream_id, b"still")
    peer.to_server()
    assert await tunnel.receive_some() == b"still"


# -- closing --------------------------------------------------------------------------------


async def test_aclose_before_the_end_resets_the_stream_with_cancel(peer: Peer) -> None:
    down, tunnel = await peer.tunnel()
    peer.to_client()
    await tunnel.aclose()
    await tunnel.aclose()  # idempotent
    [reset] = of_type(peer.to_client(), h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (down.stream_id, ErrorCode.CANCEL)
    assert down.aborted
    with pytest.raises(trio.ClosedResourceError):
        await tunnel.receive_some()
    with pytest.raises(trio.ClosedResourceError):
        await tunnel.send_all(b"x")


async def test_aclose_after_the_end_tells_the_client_to_stop_sending(peer: Peer) -> None:
    down, tunnel = await peer.tunnel()
    await tunnel.send_eof()
    peer.to_client()
    await tunnel.aclose()
    [reset] = of_type(peer.to_client(), h2.events.StreamReset)
    assert (reset.stream_id, reset.error_code) == (down.stream_id, ErrorCode.NO_ERROR)


async def test_aclose_once_both_sides_ended_sends_nothing(peer: Peer) -> None:
    down, tunnel = await peer.tunnel()
    peer.client.end_stream(down.stream_id)
    peer.to_server()
    assert await tunnel.receive_some() == b""
    await tunnel.send_eof()
    assert of_type(peer.to_client(), h2.events.StreamEnded)
    await tunnel.aclose()
    assert peer.to_client() == []


async def test_a_client_reset_breaks_the_tunnel_without_cancelling_its_task(
    peer: Peer,
) -> None:
    down, tunnel = await peer.tunnel()
    stream_id = down.stream_id
    async with trio.open_nursery() as nursery:
        outcome: list[str] = []

        async def read() -> None:
            try:
                await tunnel.receive_some()
            except trio.BrokenResourceError:
                outcome.append("broken")

        nursery.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        peer.client.reset_stream(stream_id, ErrorCode.CANCEL)
        peer.to_server()
    assert outcome == ["broken"]
    assert down.cancelled
    assert not down.scope.cancel_called  # the relay in the task ends the session itself
    with pytest.raises(trio.BrokenResourceError):
        await tunnel.send_all(b"x")
    with pytest.raises(trio.BrokenResourceError):
        await tunnel.send_eof()
    peer.to_client()
    await tunnel.aclose()  # nothing left to reset
    assert not of_type(peer.to_client(), h2.events.StreamReset)


async def test_a_write_waiting_for_credit_sees_the_client_reset(peer: Peer) -> None:
    peer.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4})
    peer.to_server()
    down, tunnel = await peer.tunnel()
    async with trio.open_nursery() as nursery:
        outcome: list[str] = []

        async def write() -> None:
            try:
                await tunnel.send_all(b"z" * 10)
            except trio.BrokenResourceError:
                outcome.append("broken")

        nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        peer.client.reset_stream(down.stream_id, ErrorCode.CANCEL)
        peer.to_server()
    assert outcome == ["broken"]
