"""``serve_mux``: the control protocol over a real WebSocket client, with fake upstreams
(SPEC §5.13): subscribe, publish, unsubscribe, ordering per channel, acks before messages,
broadcast hubs with and without echo, and an upstream that goes away.

Everything is in memory, so every test runs on the autojump clock: a wait that must time out
(to show that nothing arrives) and the end of each session (cancelled with the test's nursery;
its cleanup waits for a Close the client never sends) take no real time."""

from __future__ import annotations

import base64

import trio
import trio.testing
from trio.testing import MockClock
from wsproto.events import TextMessage

from a3s_gateway.wsmux.hub import HubRegistry
from a3s_gateway.wsmux.upstream import ChannelClosed
from tests.wsmux.harness import (
    SERVICE,
    FakeOpener,
    MuxClient,
    ack,
    frames_of,
    message,
    start,
    subscribe,
)


async def test_ping_list_and_a_bad_request(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    client = start(nursery).client
    await client.send_json({"type": "ping", "id": 7})
    assert await client.message() == {"type": "pong", "id": 7}
    await client.send_json({"type": "list", "id": "l"})
    assert await client.message() == {"type": "channels", "channels": [], "id": "l"}
    await client.send_text("{nope")
    assert await client.message() == {
        "type": "error",
        "code": "bad_request",
        "message": "invalid JSON",
    }
    await client.send_json({"type": "dance", "id": 3, "channel": "news"})
    reply = await client.message()
    assert (reply["code"], reply["id"], reply["channel"]) == ("bad_request", 3, "news")


async def test_two_service_channels_interleaved_keep_each_order(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client, opener = running.client, running.opener
    assert await subscribe(client, "prices", 1) == ack("subscribe", "prices", 1)
    assert await subscribe(client, "orders", 2) == ack("subscribe", "orders", 2)
    prices, orders = opener.channel("/prices"), opener.channel("/orders")
    assert (prices.service, orders.service) == ("px", "ox")
    for index in range(10):
        await prices.push(f"p{index}")
        await orders.push(f"o{index}")
        await client.send_json({"type": "publish", "channel": "prices", "data": f"P{index}"})
        await client.send_json({"type": "publish", "channel": "orders", "data": f"O{index}"})
    received = await client.messages(20)
    assert frames_of(received, "prices") == [f"p{index}" for index in range(10)]
    assert frames_of(received, "orders") == [f"o{index}" for index in range(10)]
    assert [prices.sent.receive_nowait() for _ in range(10)] == [f"P{i}" for i in range(10)]
    assert [orders.sent.receive_nowait() for _ in range(10)] == [f"O{i}" for i in range(10)]
    await client.send_json({"type": "list", "id": 9})
    reply = await client.message()
    assert reply == {"type": "channels", "channels": ["orders", "prices"], "id": 9}


async def test_the_ack_precedes_messages_the_upstream_had_ready(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    opener = FakeOpener()
    opener.preloads["/prices"] = ["first", "second"]
    client = start(nursery, opener=opener).client
    await client.send_json({"type": "subscribe", "channel": "prices", "id": "s"})
    assert await client.messages(3) == [
        ack("subscribe", "prices", "s"),
        message("prices", "first"),
        message("prices", "second"),
    ]


async def nothing_arrives(client: MuxClient) -> bool:
    """True when the client receives nothing for a (virtual) second: every task is blocked."""
    with trio.move_on_after(1) as scope:
        await client.receive()
    return scope.cancelled_caught


async def test_the_ack_waits_for_the_upstream_handshake(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    opener = FakeOpener()
    opener.gate = trio.Event()
    client = start(nursery, opener=opener).client
    await client.send_json({"type": "subscribe", "channel": "prices", "id": 1})
    await opener.opening.wait()
    assert await nothing_arrives(client)
    opener.gate.set()
    assert await client.message() == ack("subscribe", "prices", 1)


async def test_subscribing_twice_acks_again_with_already(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    assert await subscribe(client, "prices") == ack("subscribe", "prices")
    assert await subscribe(client, "prices", 2) == ack("subscribe", "prices", 2, already=True)
    assert await subscribe(client, "news", 3) == ack("subscribe", "news", 3)
    assert await subscribe(client, "news", 4) == ack("subscribe", "news", 4, already=True)
    assert len(running.opener.channels) == 1
    assert running.hubs.members(SERVICE, "news") == 1


async def test_publish_sends_text_json_text_and_binary_upstream(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    await subscribe(client, "prices")
    upstream = running.opener.channel("/prices")
    await client.send_text('{"type":"publish","channel":"prices","data":"plain"}')
    await client.send_text('{"type":"publish","channel":"prices","data":{"a": [1, 2]}}')
    await client.send_text('{"type":"publish","channel":"prices","data":null}')
    encoded = base64.b64encode(b"\x00\xffbin").decode()
    await client.send_json({"type": "publish", "channel": "prices", "data_b64": encoded})
    assert await client.ping() == []  # no reply to a publish
    assert [upstream.sent.receive_nowait() for _ in range(4)] == [
        "plain",
        '{"a": [1, 2]}',
        "null",
        b"\x00\xffbin",
    ]


async def test_upstream_binary_messages_arrive_as_data_b64(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    await subscribe(client, "prices")
    await running.opener.channel("/prices").push(b"\x01\x02")
    assert await client.message() == {
        "type": "message",
        "channel": "prices",
        "data_b64": base64.b64encode(b"\x01\x02").decode(),
    }


async def test_publishing_needs_a_subscription(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    client = start(nursery).client
    await client.send_json({"type": "publish", "channel": "prices", "data": "x", "id": 1})
    assert await client.message() == {
        "type": "error",
        "id": 1,
        "channel": "prices",
        "code": "not_subscribed",
        "message": "not subscribed",
    }
    await client.send_json({"type": "publish", "channel": "nowhere", "data": "x", "id": 2})
    reply = await client.message()
    assert (reply["code"], reply["channel"], reply["id"]) == ("unknown_channel", "nowhere", 2)
    await client.send_json({"type": "unsubscribe", "channel": "news", "id": 3})
    assert (await client.message())["code"] == "not_subscribed"
    assert (await subscribe(client, "nowhere", 4))["code"] == "unknown_channel"


async def test_unsubscribe_acks_drops_what_was_queued_and_closes_1000(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    # A client that does not read (lockstep): the channel's messages wait in the queue.
    running = start(nursery, pair=trio.testing.lockstep_stream_pair)
    client = running.client
    await subscribe(client, "prices")
    upstream = running.opener.channel("/prices")
    for index in range(4):
        await upstream.push(f"m{index}")
    await trio.testing.wait_all_tasks_blocked()
    await client.send_json({"type": "unsubscribe", "channel": "prices", "id": 5})
    await upstream.closed.wait()
    assert upstream.closed_with == (1000, "unsubscribed")
    before = []
    while (reply := await client.message())["type"] != "ack":
        before.append(reply)
    assert reply == ack("unsubscribe", "prices", 5)
    # At most the message the writer had started on came before; nothing comes after.
    assert frames_of(before, "prices") in ([], ["m0"])
    assert await client.ping() == []
    await client.send_json({"type": "list", "id": 6})
    assert (await client.message())["channels"] == []


async def test_an_upstream_that_goes_away_is_reported_as_closed(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery)
    client = running.client
    await subscribe(client, "prices")
    upstream = running.opener.channel("/prices")
    await upstream.push("last words")
    await upstream.push(ChannelClosed(1011, "backend restarting"))
    assert await client.messages(2) == [
        message("prices", "last words"),
        {"type": "closed", "channel": "prices", "code": 1011, "reason": "backend restarting"},
    ]
    await upstream.closed.wait()  # the session let go of it
    await client.send_json({"type": "list"})
    assert await client.message() == {"type": "channels", "channels": []}
    # A new subscription opens a new upstream.
    assert await subscribe(client, "prices", 2) == ack("subscribe", "prices", 2)
    assert len(running.opener.channels) == 2


async def test_a_rejected_or_unavailable_upstream_is_an_error(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    opener = FakeOpener()
    opener.rejections["/prices"] = 403
    opener.unavailable.add("/orders")
    client = start(nursery, opener=opener).client
    assert await subscribe(client, "prices", 1) == {
        "type": "error",
        "id": 1,
        "channel": "prices",
        "code": "upstream_rejected",
        "message": "the upstream answered 403",
        "status": 403,
    }
    assert await subscribe(client, "orders", 2) == {
        "type": "error",
        "id": 2,
        "channel": "orders",
        "code": "upstream_unavailable",
        "message": "connect failed: refused",
    }
    await client.send_json({"type": "list"})
    assert (await client.message())["channels"] == []


async def test_a_publish_blocked_upstream_pauses_reading(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    running = start(nursery, opener=FakeOpener(send_capacity=0))
    client = running.client
    await subscribe(client, "prices")
    upstream = running.opener.channel("/prices")
    await client.send_json({"type": "publish", "channel": "prices", "data": "one"})
    await client.send_json({"type": "ping", "id": "p"})
    assert await nothing_arrives(client)  # the ping is not read while the publish waits
    assert await upstream.sent.receive() == "one"
    assert await client.message() == {"type": "pong", "id": "p"}


async def test_broadcast_reaches_the_other_subscribers_not_the_publisher(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    hubs = HubRegistry()
    alice, bob = start(nursery, hubs=hubs).client, start(nursery, hubs=hubs).client
    assert await subscribe(alice, "news") == ack("subscribe", "news")
    assert await subscribe(bob, "news") == ack("subscribe", "news")
    for index in range(3):
        await alice.send_json({"type": "publish", "channel": "news", "data": f"n{index}"})
    await bob.send_json({"type": "publish", "channel": "news", "data": {"from": "bob"}})
    assert await bob.messages(3) == [message("news", f"n{index}") for index in range(3)]
    assert await alice.ping() == [message("news", '{"from": "bob"}')]
    assert hubs.members(SERVICE, "news") == 2


async def test_broadcast_with_echo_reaches_the_publisher_too(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    hubs = HubRegistry()
    alice, bob = start(nursery, hubs=hubs).client, start(nursery, hubs=hubs).client
    await subscribe(alice, "chat")
    await subscribe(bob, "chat")
    await alice.send_json({"type": "publish", "channel": "chat", "data": "hi"})
    encoded = base64.b64encode(b"\x00").decode()
    await bob.send_json({"type": "publish", "channel": "chat", "data_b64": encoded})
    binary = {"type": "message", "channel": "chat", "data_b64": encoded}
    assert await alice.messages(2) == [message("chat", "hi"), binary]
    assert await bob.messages(2) == [message("chat", "hi"), binary]


async def test_unsubscribing_from_a_hub_leaves_it(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    hubs = HubRegistry()
    alice, bob = start(nursery, hubs=hubs).client, start(nursery, hubs=hubs).client
    await subscribe(alice, "news")
    await subscribe(bob, "news")
    await alice.send_json({"type": "unsubscribe", "channel": "news", "id": 2})
    assert await alice.message() == ack("unsubscribe", "news", 2)
    assert hubs.members(SERVICE, "news") == 1
    await bob.send_json({"type": "publish", "channel": "news", "data": "x"})
    assert await bob.ping() == []
    assert await alice.ping() == []
    await bob.send_json({"type": "unsubscribe", "channel": "news"})
    assert await bob.message() == ack("unsubscribe", "news", None)
    assert len(hubs) == 0


async def test_the_handover_leftover_is_read_first(
    nursery: trio.Nursery, autojump_clock: MockClock
) -> None:
    def leftover(client: MuxClient) -> bytes:
        return client.encode(TextMessage('{"type":"ping","id":"early"}'))

    running = start(nursery, leftover=leftover)
    assert await running.client.message() == {"type": "pong", "id": "early"}
