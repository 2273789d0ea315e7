"""HTTP/2 abuse protection end to end (issue #18; SPEC §5.8 "Abuse protection", §14.1, §14.2):
raw frames from a client over a real socket to an in-process gateway.

Each attack runs while a second client (curl, HTTP/2 prior knowledge) is served normally:

- rapid reset (streams opened and reset at once, CVE-2023-44487), SETTINGS, PING and empty
  DATA floods: GOAWAY ``ENHANCE_YOUR_CALM``, the connection closed, counted in
  ``a3s_http2_connection_errors_total`` by reason;
- a CONTINUATION flood (a HEADERS frame without END_HEADERS and CONTINUATION frames that never
  end it): GOAWAY ``PROTOCOL_ERROR`` (h2 refuses more than 64), counted as ``protocol_error``;
- a zero-window stall (INITIAL_WINDOW_SIZE 0, never a WINDOW_UPDATE, a large response): the
  stream is reset once ``timeouts.body_idle`` passed, and the connection serves on.

"Bounded" is checked where it can fail: the attacker writes without pause until the gateway
cuts it off, and must be cut off before ``FLOOD_LIMIT`` bytes (an attack the gateway tolerated
would go on to the limit: the test then fails). Every wait is bounded.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Final

import pytest
import trio
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from tests.support.gateway import (
    CLIENT_WAIT,
    GatewayHandle,
    config_text,
    curl,
    need_tool,
    running_gateway,
    server_entry,
)
from tests.support.h2_client import H2Client
from tests.support.origin import Download, Origin, SlowHead

pytestmark = pytest.mark.integration

ENHANCE_YOUR_CALM: Final = 0xB
PROTOCOL_ERROR: Final = 0x1
INTERNAL_ERROR: Final = 0x2
CANCEL: Final = 0x8
#: The most an attacker may write before the gateway cuts it off (socket buffers included).
FLOOD_LIMIT: Final = 32 << 20
RESETS_PER_SECOND: Final = 50
BODY_IDLE: Final = 1.0


@pytest.fixture(autouse=True)
def need_curl() -> None:
    need_tool("curl", "to be the well-behaved client next to the attacker")


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("floods")
    await nursery.start(server.serve)
    return server


@asynccontextmanager
async def flood_gateway(origin: Origin) -> AsyncIterator[GatewayHandle]:
    entrypoint = (
        f"  http2 {{\n    max_resets_per_second = {RESETS_PER_SECOND}\n  }}\n"
        f'  timeouts {{\n    body_idle = "{BODY_IDLE}s"\n  }}\n'
    )
    async with running_gateway(
        config_text([server_entry(origin)], entrypoint=entrypoint)
    ) as handle:
        yield handle


async def connection_errors(handle: GatewayHandle, reason: str) -> float:
    text = await handle.gateway.metrics_exposition()
    assert text is not None
    prefix = f'a3s_http2_connection_errors_total{{entrypoint="web",reason="{reason}"}} '
    for line in text.decode().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


async def flood(client: H2Client, batches: Iterator[bytes]) -> int:
    """Write the batches without pause while reading everything, until the gateway closes
    the connection; the bytes written. Fails if the gateway lets ``FLOOD_LIMIT`` through."""
    sent = 0
    async with trio.open_nursery() as nursery:

        async def write() -> None:
            nonlocal sent
            for batch in batches:
                if not await client.send_raw(batch):
                    return
                sent += len(batch)
                assert sent < FLOOD_LIMIT, "the gateway never cut the attacker off"

        nursery.start_soon(write)
        with trio.fail_after(CLIENT_WAIT):
            while await client.read_once():
                pass
        nursery.cancel_scope.cancel()
    return sent


def repeat(batch: bytes) -> Iterator[bytes]:
    return itertools.repeat(batch)


async def well_served(handle: GatewayHandle, attack_started: trio.Event) -> None:
    """A second client's requests while the attack runs: all answered normally."""
    await attack_started.wait()
    for _ in range(3):
        done = await curl("--http2-prior-knowledge", handle.url("/neighbour"))
        assert done.code == 0, done.stderr
        assert done.response.status == 200


@asynccontextmanager
async def neighbour(handle: GatewayHandle) -> AsyncIterator[trio.Event]:
    started = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(well_served, handle, started)
        yield started


def get(client: H2Client, stream_id: int, path: str = "/x") -> list[HeadersFrame]:
    fields = client.request_fields(path)
    frames = client.headers_frames(stream_id, fields, end=True)
    assert all(isinstance(frame, HeadersFrame) for frame in frames)
    return [frame for frame in frames if isinstance(frame, HeadersFrame)]


def rapid_resets(client: H2Client) -> Iterator[bytes]:
    """Batches of 20 streams, each opened and reset at once (ids never reused)."""
    stream_id = 1
    while True:
        frames = b""
        for _ in range(20):
            frames += b"".join(frame.serialize() for frame in get(client, stream_id))
            frames += RstStreamFrame(stream_id, CANCEL).serialize()
            stream_id += 2
        yield frames


async def test_rapid_reset_ends_the_connection(origin: Origin) -> None:
    async with flood_gateway(origin) as handle:
        client = await H2Client.connect(handle.port)
        try:
            async with neighbour(handle) as started:
                started.set()
                sent = await flood(client, rapid_resets(client))
        finally:
            await client.aclose()
        assert client.goaway_codes() == [ENHANCE_YOUR_CALM]
        assert await connection_errors(handle, "rapid_reset") == 1
    assert sent > 0
    # The resets cancelled the exchanges: far fewer requests reached the origin than were sent.
    flood_requests = [r for r in origin.requests if r.path == b"/x"]
    assert len(flood_requests) <= 4 * RESETS_PER_SECOND


async def test_resets_under_the_limit_are_served(origin: Origin) -> None:
    async with flood_gateway(origin) as handle:
        client = await H2Client.connect(handle.port)
        try:
            for stream_id in range(1, 2 * (RESETS_PER_SECOND // 2), 2):
                await client.send_frames(*get(client, stream_id))
                await client.reset(stream_id)
            client.next_stream = 2 * (RESETS_PER_SECOND // 2) + 1
            reply = await client.reply(await client.request("/after"))
        finally:
            await client.aclose()
        assert reply.status == 200
        assert client.goaways == []
        assert await connection_errors(handle, "rapid_reset") == 0


async def test_continuation_flood_is_a_protocol_error(origin: Origin) -> None:
    async with flood_gateway(origin) as handle:
        client = await H2Client.connect(handle.port)
        try:
            # The server's SETTINGS answered first: nothing may come between the frames of
            # a header block, not even a SETTINGS ACK.
            with trio.fail_after(CLIENT_WAIT):
                await client.wait(lambda: bool(client.server_settings))
            async with neighbour(handle) as started:
                head = HeadersFrame(1, client.encoder.encode(client.request_fields("/c")))
                # A literal field of 16 000 bytes in each CONTINUATION, never END_HEADERS.
                piece = ContinuationFrame(1, b"\x00" + b"\x7f" * 16000).serialize()

                # One frame per write, so that the count of bytes written is close.
                batches = itertools.chain([head.serialize()], repeat(piece))
                started.set()
                sent = await flood(client, batches)
        finally:
            await client.aclose()
        assert client.goaway_codes() == [PROTOCOL_ERROR]
        assert await connection_errors(handle, "protocol_error") == 1
    # h2 holds at most 64 CONTINUATION frames of one block before it refuses (the last one
    # may still have been on its way when the gateway closed).
    assert sent >= 63 * 16000
    assert origin.requests == [] or all(r.path != b"/c" for r in origin.requests)


CONTROL_FLOODS: Final = {
    "settings": SettingsFrame(0, {0x3: 100}).serialize(),
    "ping": PingFrame(0, b"flooding").serialize(),
    "window-update": WindowUpdateFrame(0, 1).serialize(),
}


@pytest.mark.parametrize("kind", [*CONTROL_FLOODS, "empty-data"])
async def test_control_flood_ends_the_connection(origin: Origin, kind: str) -> None:
    release = trio.Event()
    origin.on("/upload", SlowHead(release))
    async with flood_gateway(origin) as handle:
        client = await H2Client.connect(handle.port)
        try:
            async with neighbour(handle) as started:
                if kind == "empty-data":
                    # An open request body, fed nothing but empty DATA frames.
                    stream_id = client.open_stream()
                    fields = client.request_fields("/upload", method="POST")
                    opening = client.headers_frames(stream_id, fields, end=False)
                    await client.send_frames(*opening, DataFrame(stream_id, b"a"))
                    frame = DataFrame(stream_id, b"").serialize()
                else:
                    frame = CONTROL_FLOODS[kind]
                started.set()
                sent = await flood(client, repeat(frame * 1000))
        finally:
            release.set()
            await client.aclose()
        assert client.goaway_codes() == [ENHANCE_YOUR_CALM]
        assert await connection_errors(handle, "control_flood") == 1
    # Cut off a little after 10 000 frames, not at the limit.
    assert sent < 200 * 1000 * len(frame)


async def test_a_zero_window_stall_resets_the_stream(origin: Origin) -> None:
    origin.on("/big", Download(4 << 20))
    async with flood_gateway(origin) as handle:
        client = await H2Client.connect(handle.port, {0x4: 0}, window_updates=False)
        try:
            async with neighbour(handle) as started:
                started.set()
                asked = trio.current_time()
                stream_id = await client.request("/big")
                reply = await client.reply(stream_id)
                waited = trio.current_time() - asked
                # The connection itself goes on serving (its connection window is open).
                client.window_updates = True
                await client.send_frames(SettingsFrame(0, {0x4: 65535}))
                small = await client.reply(await client.request("/small"))
        finally:
            await client.aclose()
        assert await connection_errors(handle, "control_flood") == 0
    assert reply.status == 200
    assert bytes(reply.body) == b""
    assert reply.reset == INTERNAL_ERROR
    assert BODY_IDLE * 0.8 <= waited < BODY_IDLE + 5
    assert small.status == 200
    assert client.goaways == []
