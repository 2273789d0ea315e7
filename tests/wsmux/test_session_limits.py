"""``serve_mux``: limits, backpressure, frame errors and the ends of a session (SPEC §5.13,
§14.1 ws-mux row, §14.3): slow broadcast subscribers, a slow client on a service channel,
oversized and invalid frames, too many channels, the client's Close or disappearance, a bug,
and a cancellation from outside.

Everything is in memory and runs on the autojump clock (see ``test_session_channels.py``)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from trio.testing import MockClock
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.frame_protocol import CloseReason

from a3s_gateway.config.schema_services import MuxChannel, WebsocketMux
from a3s_gateway.wsmux.hub import HubRegistry
from a3s_gateway.wsmux.protocol import encode_message
from a3s_gateway.wsmux.session import CLOSE_BOUND
from tests.wsmux.harness import (
    SERVICE,
    SETTINGS,
    FakeOpener,
    ack,
    frames_of,
    masked_frame,
    message,
    start,
    subscribe,
)

#: Small queues so that a test fills them with a few messages.
TIGHT = WebsocketMux(
    max_channels=2,
    max_message_bytes=1024,
    queue_messages=2,
    channels={
        "news": MuxChannel(broadcast=True),
        "prices": MuxChannel(service="px", path="/prices"),
        "orders": MuxChannel(service="ox", path="/orders"),
    },
)


async def test_a_slow_broadcast_subscriber_is_evicted_and_nobody_waits(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    hubs = HubRegistry()
    slow = start(nursery, TIGHT, hubs=hubs, pair=trio.testing.lockstep_stream_pair).client
    fast = start(nursery, TIGHT, hubs=hubs).client
    assert await subscribe(slow, "news") == ack("subscribe", "news")
    assert await subscribe(fast, "news") == ack("subscribe", "news")
    # ``slow`` reads nothing now: its writer blocks on the first message, two more wait in its
    # queue, the next one does not fit and evicts it. ``fast`` publishes on regardless.
    for index in range(10):
        await fast.send_json({"type": "publish", "channel": "news", "data": f"n{index}"})
    assert await fast.ping() == []
    assert hubs.members(SERVICE, "news") == 1
    received = await slow.messages(4)
    assert received == [
        message("news", "n0"),
        message("news", "n1"),
        message("news", "n2"),
        {
            "type": "error",
            "channel": "news",
            "code": "slow_consumer",
            "message": "the client read too slowly: unsubscribed",
        },
    ]
    await fast.send_json({"type": "publish", "channel": "news", "data": "later"})
    assert await fast.ping() == []
    assert await slow.ping() == []  # nothing of the channel any more
    await slow.send_json({"type": "list", "id": 1})
    assert (await slow.message())["channels"] == []
    assert await subscribe(slow, "news", 2) == ack("subscribe", "news", 2)  # it may come back
    assert hubs.members(SERVICE, "news") == 2


async def test_a_slow_client_stops_the_reading_of_its_upstream(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery, TIGHT, pair=trio.testing.lockstep_stream_pair)
    client = running.client
    await subscribe(client, "prices")
    upstream = running.opener.channel("/prices")
    # The client reads nothing: the upstream's pushes are taken until the queue is full and
    # the pump waits for room; then a push waits (the upstream is not read any more).
    pushed = 0
    while True:
        with trio.move_on_after(5) as scope:
            await upstream.push(f"m{pushed}")
        if scope.cancelled_caught:
            break
        pushed += 1
        assert pushed < 10, "the upstream is read without bound"
    # One being written, two queued (queue_messages), one held by the pump.
    assert pushed == 4

    async def push_the_rest() -> None:
        for index in range(pushed, 20):
            await upstream.push(f"m{index}")

    nursery.start_soon(push_the_rest)
    received = await client.messages(20)
    assert frames_of(received, "prices") == [f"m{index}" for index in range(20)]


async def test_the_byte_budget_also_bounds_the_queue(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    settings = WebsocketMux(
        max_message_bytes=100,
        queue_messages=100,
        channels={"prices": MuxChannel(service="px", path="/prices")},
    )
    running = start(nursery, settings, pair=trio.testing.lockstep_stream_pair)
    client = running.client
    await subscribe(client, "prices")
    upstream = running.opener.channel("/prices")
    frame_size = len(encode_message("prices", "x" * 80))
    assert 400 // frame_size == 3  # the budget (4 x 100 bytes) holds three such frames
    pushed = 0
    while True:
        with trio.move_on_after(5) as scope:
            await upstream.push("x" * 80)
        if scope.cancelled_caught:
            break
        pushed += 1
        assert pushed < 20, "the queue grows past its byte budget"
    assert pushed == 5  # one being written, three queued, one held by the pump
    received = await client.messages(pushed)
    assert frames_of(received, "prices") == ["x" * 80] * pushed


async def test_an_oversized_upstream_message_closes_that_channel(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    await subscribe(client, "prices")
    await subscribe(client, "orders")
    prices = running.opener.channel("/prices")
    await prices.push("é" * 600)  # 1200 bytes in UTF-8 (over 1024), 600 characters
    assert await client.messages(2) == [
        {
            "type": "error",
            "channel": "prices",
            "code": "message_too_large",
            "message": "the upstream sent a message over 1024 bytes: channel closed",
        },
        {"type": "closed", "channel": "prices", "code": 1009, "reason": "message too large"},
    ]
    await prices.closed.wait()
    assert prices.closed_with == (1009, "message too large")
    await running.opener.channel("/orders").push("fine")
    assert await client.message() == message("orders", "fine")


async def test_a_client_frame_over_the_limit_closes_1009(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    await client.send_text("x" * 1025)
    assert (await client.expect_close()).code == 1009
    stats = await running.finished()
    assert (stats.close_gateway, stats.close_client) == (1009, 1009)


async def test_a_fragmented_message_is_stopped_as_it_passes_the_limit(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    for _ in range(3):
        await client.send(TextMessage("y" * 400, message_finished=False))
    # The message is not finished, but 1200 bytes are over the limit already.
    assert (await client.expect_close()).code == 1009
    stats = await running.finished()
    assert stats.close_gateway == 1009


async def test_a_binary_frame_over_the_limit_closes_1009_too(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    await running.client.send(BytesMessage(b"\x00" * 2000))
    assert (await running.client.expect_close()).code == 1009


async def test_invalid_utf8_closes_1007(nursery: trio.Nursery, autojump_clock: MockClock) -> None:
    running = start(nursery)
    await running.client.send_raw(masked_frame(0x1, b'{"type":"ping","x":"\xff\xfe"}'))
    close = await running.client.expect_close(reply=False)
    assert (close.code, close.reason) == (1007, "invalid UTF-8")
    stats = await running.finished()
    assert (stats.close_gateway, stats.close_client) == (1007, None)


async def test_a_protocol_error_closes_1002(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    await running.client.send_raw(b"\x81\x02hi")  # unmasked: clients must mask (RFC 6455 §5.1)
    close = await running.client.expect_close(reply=False)
    assert (close.code, close.reason) == (1002, "protocol error")
    assert (await running.finished()).close_gateway == 1002


async def test_binary_frames_are_an_error_not_an_end(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    client = start(nursery).client
    await client.send(BytesMessage(b'{"type":"ping"}'))
    assert await client.message() == {
        "type": "error",
        "code": "bad_request",
        "message": "binary frames are not accepted: control messages are JSON text",
    }
    await client.send_json({"type": "ping", "id": 1})
    assert await client.message() == {"type": "pong", "id": 1}


async def test_ping_frames_get_pong_frames(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    client = start(nursery).client
    await client.send(Ping(b"are you there"))
    assert await client.receive() == Pong(b"are you there")


async def test_too_many_channels(nursery: trio.Nursery, autojump_clock: MockClock) -> None:
    running = start(nursery, TIGHT)
    client = running.client
    await subscribe(client, "news", 1)
    await subscribe(client, "prices", 2)
    assert await subscribe(client, "orders", 3) == {
        "type": "error",
        "id": 3,
        "channel": "orders",
        "code": "too_many_channels",
        "message": "at most 2 channels",
    }
    assert [channel.path for channel in running.opener.channels] == ["/prices"]
    await client.send_json({"type": "unsubscribe", "channel": "news", "id": 4})
    assert await client.message() == ack("unsubscribe", "news", 4)
    assert await subscribe(client, "orders", 5) == ack("subscribe", "orders", 5)


async def test_a_client_close_is_echoed_and_closes_the_upstreams_1001(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    await subscribe(client, "prices")
    await subscribe(client, "news")
    await client.send(CloseConnection(1000, "bye"))
    close = await client.expect_close()
    assert (close.code, close.reason) == (1000, "bye")
    stats = await running.finished()
    assert (stats.close_client, stats.close_gateway) == (1000, 1000)
    assert (stats.bytes_in, stats.bytes_out) == (client.bytes_sent, client.bytes_received)
    assert running.opener.channel("/prices").closed_with == (1001, "going away")
    assert len(running.hubs) == 0
    assert await client.stream.receive_some() == b""  # the gateway closed the stream


async def test_a_close_without_a_code_is_echoed_without_one(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    await running.client.send(CloseConnection(CloseReason.NO_STATUS_RCVD))
    assert (await running.client.expect_close()).code == CloseReason.NO_STATUS_RCVD
    stats = await running.finished()
    assert (stats.close_client, stats.close_gateway) == (None, None)


async def test_a_client_that_vanishes_leaves_nothing_behind(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    await subscribe(client, "prices")
    await subscribe(client, "orders")
    await subscribe(client, "news")
    await client.stream.aclose()
    stats = await running.finished()
    assert (stats.close_client, stats.close_gateway) == (None, None)
    assert [channel.closed_with for channel in running.opener.channels] == [
        (1001, "going away"),
        (1001, "going away"),
    ]
    assert len(running.hubs) == 0


async def test_cancellation_closes_client_and_upstreams_1001_then_propagates(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    await subscribe(client, "prices")
    await subscribe(client, "orders")
    await subscribe(client, "news")
    running.scope.cancel()  # the gateway's drain grace ran out
    close = await client.expect_close()
    assert (close.code, close.reason) == (1001, "going away")
    await running.done.wait()
    assert type(running.raised) is trio.Cancelled  # no exception group
    assert running.scope.cancelled_caught
    assert await client.stream.receive_some() == b""  # closed after the Close handshake
    assert [channel.closed_with for channel in running.opener.channels] == [
        (1001, "going away"),
        (1001, "going away"),
    ]
    assert len(running.hubs) == 0


async def test_cancellation_cleanup_is_bounded_when_nobody_answers(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery, pair=trio.testing.lockstep_stream_pair)
    client = running.client
    await subscribe(client, "prices")
    await running.opener.channel("/prices").push("unread")  # the writer blocks on it
    await trio.testing.wait_all_tasks_blocked()
    began = trio.current_time()
    running.scope.cancel()
    await running.done.wait()
    assert trio.current_time() - began <= CLOSE_BOUND
    assert type(running.raised) is trio.Cancelled
    assert running.opener.channel("/prices").closed_with == (1001, "going away")


async def test_cancellation_cleanup_is_bounded_when_nobody_closes(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    opener = FakeOpener()
    opener.close_hangs = True  # the upstreams never finish their closing handshake
    running = start(nursery, opener=opener)
    client = running.client
    await subscribe(client, "prices")
    await subscribe(client, "orders")
    began = trio.current_time()
    running.scope.cancel()
    assert (await client.expect_close(reply=False)).code == 1001  # nor does the client
    await running.done.wait()
    assert trio.current_time() - began == pytest.approx(CLOSE_BOUND)
    assert type(running.raised) is trio.Cancelled
    assert [channel.closed_with for channel in opener.channels] == [
        (1001, "going away"),
        (1001, "going away"),
    ]


async def test_cancellation_while_opening_an_upstream(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    opener = FakeOpener()
    opener.gate = trio.Event()  # never set: the handshake hangs
    running = start(nursery, opener=opener)
    await running.client.send_json({"type": "subscribe", "channel": "prices"})
    await opener.opening.wait()
    running.scope.cancel()
    assert (await running.client.expect_close()).code == 1001
    await running.done.wait()
    assert type(running.raised) is trio.Cancelled
    assert opener.channels == []


async def test_a_bug_ends_the_session_with_1011_and_nothing_escapes(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    await subscribe(client, "prices")
    await subscribe(client, "orders")
    await running.opener.channel("/prices").push(RuntimeError("a bug in the channel"))
    assert (await client.expect_close()).code == 1011
    stats = await running.finished()
    assert stats.close_gateway == 1011
    assert running.opener.channel("/orders").closed_with == (1001, "going away")


async def test_settings_from_the_spec_defaults(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    # SPEC §14.1: 64 channels, 256 queued messages per channel, 1 MiB messages.
    defaults = WebsocketMux(channels=SETTINGS.channels)
    assert (defaults.max_channels, defaults.queue_messages) == (64, 256)
    assert defaults.max_message_bytes == 1 << 20
    running = start(nursery, defaults)
    client = running.client
    await client.send_text('{"type":"ping","pad":"' + "z" * 1_000_000 + '"}')
    assert await client.message() == {"type": "pong"}
    await client.send_text("z" * ((1 << 20) + 1))
    assert (await client.expect_close()).code == 1009
