"""The ``tcp-filter`` middleware of TCP routers: a connection limit and an IP allowlist (SPEC
§6.4, §8.16).

Ring 0: pure counting, no sockets or clocks. One ``TcpFilter`` per middleware *definition*,
shared by every TCP router that lists it (SPEC §8.1), so its connection count is the number of
connections those routers hold together. ``admit`` checks a routed connection's client address
(after the PROXY protocol) and takes one count, returning a ``FilterTicket`` that gives the count
back exactly once, however the connection ends (a context manager, like ``Backend.lease``). A
reload that keeps the definition unchanged keeps the instance (``runtime/compile.py``), so the
connections it admitted are still counted against the limit.

Must not: block, or hold anything but the count and the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from a3s_gateway.config.schema_middlewares import TcpFilter as TcpFilterBlock
    from a3s_gateway.routing.request import PeerAddress
    from a3s_gateway.runtime.compile import Network

__all__ = ["FilterTicket", "TcpFilter"]


class TcpFilter:
    """One ``tcp-filter`` definition's settings and its shared connection count."""

    __slots__ = ("active", "allowed", "block", "max_connections", "name")

    def __init__(
        self,
        name: str,
        *,
        allowed: tuple[Network, ...] = (),
        max_connections: int | None = None,
        block: TcpFilterBlock | None = None,
    ) -> None:
        self.name = name
        #: The allowlist; empty: every address.
        self.allowed = allowed
        #: The most connections admitted at once; None: no limit.
        self.max_connections = max_connections
        #: The definition it was built from (a reload compares it to keep the instance).
        self.block = block
        #: Connections admitted and not yet released.
        self.active = 0

    @classmethod
    def from_config(cls, name: str, block: TcpFilterBlock) -> TcpFilter:
        """The filter of one ``tcp-filter`` definition."""
        return cls(
            name,
            allowed=tuple(network.network for network in block.allowed_ips),
            max_connections=block.max_connections,
            block=block,
        )

    def admit(self, address: PeerAddress | None) -> FilterTicket | None:
        """Take one count for a connection from ``address``; None when the filter refuses it
        (outside the allowlist, an address that does not parse while there is a list, or at
        the limit)."""
        allowed = self.allowed
        if allowed and (address is None or not any(address in net for net in allowed)):
            return None
        limit = self.max_connections
        if limit is not None and self.active >= limit:
            return None
        self.active += 1
        return FilterTicket(self)


class FilterTicket:
    """One connection admitted by a ``TcpFilter``; ``release`` gives its count back once."""

    __slots__ = ("_filter", "released")

    def __init__(self, owner: TcpFilter) -> None:
        self._filter = owner
        self.released = False

    def release(self) -> None:
        """Give the count back; idempotent."""
        if not self.released:
            self.released = True
            self._filter.active -= 1

    def __enter__(self) -> FilterTicket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
