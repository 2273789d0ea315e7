"""Broadcast hubs (SPEC §5.13): made on the first join, gone with the last member, delivery
in publish order, echo only when asked, and a full subscriber evicted without waiting."""

from __future__ import annotations

from a3s_gateway.wsmux.hub import Delivery, HubRegistry


class Member:
    """A hub member with a queue of ``room`` deliveries."""

    def __init__(self, room: int = 100) -> None:
        self.room = room
        self.received: list[tuple[str, str]] = []
        self.evictions: list[str] = []

    def offer(self, channel: str, delivery: Delivery) -> bool:
        if len(self.received) >= self.room:
            return False
        self.received.append((channel, delivery.text))
        return True

    def evicted(self, channel: str) -> None:
        self.evictions.append(channel)


def hello(text: str = "hi") -> Delivery:
    return Delivery(text, len(text))


def test_hubs_come_and_go_with_their_members() -> None:
    hubs = HubRegistry()
    alice, bob = Member(), Member()
    assert len(hubs) == 0
    assert hubs.join("mux", "news", alice)
    assert not hubs.join("mux", "news", alice)  # once
    assert hubs.join("mux", "news", bob)
    assert hubs.join("other", "news", bob)  # another multiplexer: another hub
    assert (len(hubs), hubs.members("mux", "news")) == (2, 2)
    assert hubs.leave("mux", "news", alice)
    assert not hubs.leave("mux", "news", alice)
    assert hubs.leave("mux", "news", bob)
    assert hubs.members("mux", "news") == 0
    assert len(hubs) == 1
    assert not hubs.leave("mux", "nowhere", bob)


def test_publish_reaches_members_in_order_and_echo_decides_for_the_sender() -> None:
    hubs = HubRegistry()
    alice, bob, carol = Member(), Member(), Member()
    for member in (alice, bob, carol):
        hubs.join("mux", "news", member)
    hubs.join("mux", "other", carol)
    assert hubs.publish("mux", "news", hello("1"), sender=alice) == 2
    assert hubs.publish("mux", "news", hello("2"), sender=alice, echo=True) == 3
    assert hubs.publish("mux", "news", hello("3")) == 3
    assert hubs.publish("mux", "nowhere", hello("4")) == 0
    assert alice.received == [("news", "2"), ("news", "3")]
    assert bob.received == carol.received == [("news", "1"), ("news", "2"), ("news", "3")]


def test_a_full_member_is_evicted_and_the_others_still_get_it() -> None:
    hubs = HubRegistry()
    slow, fast = Member(room=1), Member()
    hubs.join("mux", "news", slow)
    hubs.join("mux", "news", fast)
    assert hubs.publish("mux", "news", hello("1")) == 2
    assert hubs.publish("mux", "news", hello("2")) == 1
    assert slow.evictions == ["news"]
    assert hubs.members("mux", "news") == 1
    assert hubs.publish("mux", "news", hello("3")) == 1
    assert slow.received == [("news", "1")]
    assert fast.received == [("news", "1"), ("news", "2"), ("news", "3")]
    assert slow.evictions == ["news"]  # evicted once


def test_the_last_member_evicted_removes_the_hub() -> None:
    hubs = HubRegistry()
    slow = Member(room=0)
    hubs.join("mux", "news", slow)
    assert hubs.publish("mux", "news", hello()) == 0
    assert len(hubs) == 0
    assert slow.evictions == ["news"]


def test_a_member_that_leaves_while_evicted_is_told_once() -> None:
    hubs = HubRegistry()

    class Leaver(Member):
        def evicted(self, channel: str) -> None:
            super().evicted(channel)
            assert not hubs.leave("mux", channel, self)  # already gone

    leaver = Leaver(room=0)
    hubs.join("mux", "news", leaver)
    hubs.publish("mux", "news", hello())
    assert leaver.evictions == ["news"]
