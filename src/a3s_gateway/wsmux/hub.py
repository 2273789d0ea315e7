"""Broadcast hubs of the WebSocket multiplexer (SPEC §5.13 "broadcast channel", §14 per-worker).

Ring 1 by package, but synchronous and trio-free: a hub only calls its members; it owns no
nursery and sets no deadline. A hub is keyed
by (multiplexer service name, channel name), created when its first member joins and removed
when its last member leaves, so an idle worker holds no hubs. ``HubRegistry`` is per worker
(the ``ServerContext`` holds one); hubs are not shared between workers.

A publish is delivered synchronously to every member, in join order, with one call each
(``HubMember.offer``); the frame is encoded once by the publisher and shared. A hub never waits
for a member: a member whose queue for the channel is full answers False, is removed from the
hub at once and told so (``HubMember.evicted``, which sends ``slow_consumer``). Since every
publish is delivered before the next one starts, each member sees the channel's messages in
publish order, whoever published them. The publisher receives its own publish only with
``echo``.

Must not: block, await, queue anything itself, or encode messages; its members must not call
back into the registry from ``offer`` (``evicted`` may).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Delivery", "HubMember", "HubRegistry"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One published message as every member sends it: the ``message`` frame's JSON ``text``
    and its UTF-8 ``size`` in bytes."""

    text: str
    size: int


class HubMember(Protocol):
    """A subscriber of hubs (one client session, whatever its number of channels)."""

    def offer(self, channel: str, delivery: Delivery) -> bool:
        """Queue ``delivery`` for ``channel`` without waiting; False when the queue is full."""
        ...

    def evicted(self, channel: str) -> None:
        """The member was removed from ``channel``'s hub because its queue was full."""
        ...


class HubRegistry:
    """The broadcast hubs of one worker, by (service, channel)."""

    __slots__ = ("_hubs",)

    def __init__(self) -> None:
        # A dict keeps join order and removes in O(1): the members of one hub.
        self._hubs: dict[tuple[str, str], dict[HubMember, None]] = {}

    def join(self, service: str, channel: str, member: HubMember) -> bool:
        """Add ``member`` to the hub (made if needed); False when it was a member already."""
        members = self._hubs.setdefault((service, channel), {})
        if member in members:
            return False
        members[member] = None
        return True

    def leave(self, service: str, channel: str, member: HubMember) -> bool:
        """Remove ``member`` (the hub goes when empty); False when it was not a member."""
        key = (service, channel)
        members = self._hubs.get(key)
        if members is None or member not in members:
            return False
        del members[member]
        if not members:
            del self._hubs[key]
        return True

    def publish(
        self,
        service: str,
        channel: str,
        delivery: Delivery,
        *,
        sender: HubMember | None = None,
        echo: bool = False,
    ) -> int:
        """Offer ``delivery`` to every member (``sender`` only with ``echo``); a member that
        refuses it is evicted. Returns how many members took it. Never blocks."""
        members = self._hubs.get((service, channel))
        if members is None:
            return 0
        taken = 0
        refused: list[HubMember] = []
        for member in list(members):  # a copy: evictions below change the hub
            if member is sender and not echo:
                continue
            if member.offer(channel, delivery):
                taken += 1
            else:
                refused.append(member)
        for member in refused:
            if self.leave(service, channel, member):
                member.evicted(channel)
        return taken

    def members(self, service: str, channel: str) -> int:
        """How many members the hub has (0: there is no hub)."""
        members = self._hubs.get((service, channel))
        return 0 if members is None else len(members)

    def __len__(self) -> int:
        """How many hubs exist (each has at least one member)."""
        return len(self._hubs)
