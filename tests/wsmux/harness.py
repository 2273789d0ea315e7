"""Drivers for multiplexer session tests: a wsproto client on one end of a stream pair, a fake
``ChannelOpener`` whose channels the test feeds and reads, and a runner for ``serve_mux``.

Everything is in memory; synchronisation is by events, channel hand-offs and
``trio.testing.wait_all_tasks_blocked`` (plus ``autojump_clock`` where a test waits for a
deadline), never by sleeping.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
import trio.testing
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import CloseConnection, Event, Message, Ping, Pong, TextMessage

from a3s_gateway.config.schema_services import MuxChannel, WebsocketMux
from a3s_gateway.upstream.seam import Handover
from a3s_gateway.wsmux.hub import HubRegistry
from a3s_gateway.wsmux.protocol import ControlFrame, encode_control
from a3s_gateway.wsmux.session import MuxStats, serve_mux
from a3s_gateway.wsmux.upstream import (
    ChannelClosed,
    ChannelOpener,
    ChannelRejected,
    ChannelUnavailable,
)

SERVICE = "mux"

#: Two broadcast channels (one with echo) and two service channels.
SETTINGS = WebsocketMux(
    max_channels=4,
    max_message_bytes=1024,
    queue_messages=4,
    channels={
        "news": MuxChannel(broadcast=True),
        "chat": MuxChannel(broadcast=True, echo=True),
        "prices": MuxChannel(service="px", path="/prices"),
        "orders": MuxChannel(service="ox", path="/orders"),
    },
)

Received = dict[str, object] | bytes | CloseConnection | Ping | Pong


class MuxClient:
    """A WebSocket client (post-handshake wsproto) that the test drives by hand."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.bytes_sent = 0
        self.bytes_received = 0
        self._events: deque[Event] = deque()
        self._parts: list[str | bytes] = []

    def encode(self, event: Event) -> bytes:
        """The bytes of ``event``, without sending them (for a handover's leftover)."""
        return self.ws.send(event)

    async def send_raw(self, data: bytes) -> None:
        self.bytes_sent += len(data)
        await self.stream.send_all(data)

    async def send(self, event: Event) -> None:
        await self.send_raw(self.ws.send(event))

    async def send_text(self, text: str) -> None:
        await self.send(TextMessage(text))

    async def send_json(self, value: object) -> None:
        await self.send_text(json.dumps(value))

    async def request(self, frame: ControlFrame) -> None:
        await self.send_text(encode_control(frame))

    async def receive(self) -> Received:
        """The next whole message (JSON text decoded, binary as bytes) or control event."""
        while True:
            while not self._events:
                data = await self.stream.receive_some(65536)
                self.bytes_received += len(data)
                self.ws.receive_data(bytes(data) or None)
                self._events.extend(self.ws.events())
            event = self._events.popleft()
            if isinstance(event, CloseConnection | Ping | Pong):
                return event
            assert isinstance(event, Message)
            self._parts.append(event.data)
            if event.message_finished:
                parts, self._parts = self._parts, []
                if isinstance(event, TextMessage):
                    return dict(json.loads("".join(str(part) for part in parts)))
                return b"".join(bytes(part) for part in parts if isinstance(part, bytes))

    async def message(self) -> dict[str, object]:
        """The next message, which must be JSON text."""
        received = await self.receive()
        assert isinstance(received, dict), received
        return received

    async def messages(self, count: int) -> list[dict[str, object]]:
        return [await self.message() for _ in range(count)]

    async def ping(self, message_id: str = "sync") -> list[dict[str, object]]:
        """Round trip a control ping: the messages received before its pong (everything the
        session had queued before it read the ping)."""
        await self.send_json({"type": "ping", "id": message_id})
        before: list[dict[str, object]] = []
        while (message := await self.message()) != {"type": "pong", "id": message_id}:
            before.append(message)
        return before

    async def expect_close(self, *, reply: bool = True) -> CloseConnection:
        """Skip messages until the gateway's Close; answer it unless ``reply`` is False."""
        while not isinstance(received := await self.receive(), CloseConnection):
            pass
        if reply and self.ws.state is ConnectionState.REMOTE_CLOSING:
            await self.send(received.response())
        return received


def masked_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """A client frame built by hand (for payloads wsproto would refuse to send)."""
    key = os.urandom(4)
    masked = bytes(byte ^ key[index % 4] for index, byte in enumerate(payload))
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", first, 0x80 | size)
    else:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    return header + key + masked


#: What an upstream "sends": a message, or an exception its ``get_message`` raises (a
#: ``ChannelClosed``, or anything else to play a bug).
Incoming = str | bytes | Exception


class FakeChannel:
    """An ``UpstreamChannel``: the test ``push``es upstream messages (each hand-off waits for
    the session's pump to take it) and reads what the session sent from ``sent``."""

    def __init__(
        self, service: str, path: str, *, send_capacity: float, preload: int, close_hangs: bool
    ) -> None:
        self.service = service
        #: An upstream that never answers the closing handshake: ``aclose`` waits forever.
        self.close_hangs = close_hangs
        self.path = path
        self._push, self._incoming = trio.open_memory_channel[Incoming](preload)
        self._sent, self.sent = trio.open_memory_channel[str | bytes](send_capacity)
        self.closed_with: tuple[int, str] | None = None
        self.closed = trio.Event()

    async def push(self, message: Incoming) -> None:
        await self._push.send(message)

    def preload(self, message: Incoming) -> None:
        self._push.send_nowait(message)

    async def get_message(self) -> str | bytes:
        item = await self._incoming.receive()
        if isinstance(item, Exception):
            raise item
        return item

    async def send_message(self, message: str | bytes) -> None:
        if self.closed_with is not None:
            raise ChannelClosed(*self.closed_with)
        await self._sent.send(message)

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        if self.closed_with is None:
            self.closed_with = (code, reason)
            self.closed.set()
        if self.close_hangs:
            await trio.sleep_forever()
        await trio.lowlevel.checkpoint()


class FakeOpener:
    """A ``ChannelOpener`` of ``FakeChannel``s; per path it can reject or be unavailable."""

    def __init__(self, *, send_capacity: float = math.inf) -> None:
        self.send_capacity = send_capacity
        self.channels: list[FakeChannel] = []
        self.rejections: dict[str, int] = {}
        self.unavailable: set[str] = set()
        #: Messages a channel on that path has already received when it opens.
        self.preloads: dict[str, list[str]] = {}
        self.opening = trio.Event()
        self.gate: trio.Event | None = None
        self.close_hangs = False

    async def open(self, nursery: trio.Nursery, service: str, path: str) -> FakeChannel:
        self.opening.set()
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        if path in self.rejections:
            raise ChannelRejected(self.rejections[path])
        if path in self.unavailable:
            raise ChannelUnavailable("connect failed: refused")
        preload = self.preloads.get(path, [])
        channel = FakeChannel(
            service,
            path,
            send_capacity=self.send_capacity,
            preload=len(preload),
            close_hangs=self.close_hangs,
        )
        for message in preload:
            channel.preload(message)
        self.channels.append(channel)
        return channel

    def channel(self, path: str) -> FakeChannel:
        """The last channel opened to ``path``."""
        found = [channel for channel in self.channels if channel.path == path]
        assert found, f"no channel to {path}"
        return found[-1]


@dataclass
class Running:
    """One ``serve_mux`` run in the test's nursery."""

    client: MuxClient
    opener: FakeOpener
    hubs: HubRegistry
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    stats: MuxStats | None = None
    raised: BaseException | None = None
    #: The opener ``serve_mux`` uses when it is not ``opener`` (a real one).
    other_opener: ChannelOpener | None = None

    async def finished(self) -> MuxStats:
        """Wait for ``serve_mux`` to return; its stats."""
        await self.done.wait()
        assert self.raised is None, self.raised
        assert self.stats is not None
        return self.stats


StreamPair = Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]]


def start(
    nursery: trio.Nursery,
    settings: WebsocketMux = SETTINGS,
    *,
    opener: FakeOpener | None = None,
    hubs: HubRegistry | None = None,
    pair: StreamPair = trio.testing.memory_stream_pair,
    leftover: Callable[[MuxClient], bytes] | None = None,
    real_opener: ChannelOpener | None = None,
) -> Running:
    """Start ``serve_mux`` on one end of ``pair()``; the client drives the other end.
    ``leftover`` makes the handover's leftover bytes with the client's wsproto; with
    ``real_opener`` the session opens its channels there instead of with a ``FakeOpener``."""
    ours, theirs = pair()
    client = MuxClient(ours)
    running = Running(client, opener or FakeOpener(), hubs if hubs is not None else HubRegistry())
    running.other_opener = real_opener
    extra = b"" if leftover is None else leftover(client)
    nursery.start_soon(_serve, running, Handover(theirs, extra), settings)
    return running


async def _serve(running: Running, handover: Handover, settings: WebsocketMux) -> None:
    try:
        with running.scope:
            try:
                opener = running.other_opener or running.opener
                running.stats = await serve_mux(
                    handover, settings, opener, running.hubs, service=SERVICE
                )
            except BaseException as error:
                running.raised = error
                raise
    finally:
        running.done.set()


async def subscribe(client: MuxClient, channel: str, message_id: int = 1) -> dict[str, object]:
    """Subscribe and return the reply (an ack, or an error)."""
    await client.send_json({"type": "subscribe", "channel": channel, "id": message_id})
    return await client.message()


def ack(
    op: str, channel: str, message_id: int | str | None = 1, **extra: object
) -> dict[str, object]:
    reply: dict[str, object] = {"type": "ack", "op": op, "channel": channel}
    if message_id is not None:
        reply["id"] = message_id
    reply.update(extra)
    return reply


def message(channel: str, data: str) -> dict[str, object]:
    return {"type": "message", "channel": channel, "data": data}


def frames_of(messages: list[dict[str, object]], channel: str) -> list[object]:
    """The ``data`` of ``channel``'s messages, in order."""
    return [m["data"] for m in messages if m.get("type") == "message" and m["channel"] == channel]


__all__ = [
    "SERVICE",
    "SETTINGS",
    "FakeChannel",
    "FakeOpener",
    "MuxClient",
    "Running",
    "ack",
    "frames_of",
    "masked_frame",
    "message",
    "start",
    "subscribe",
]
