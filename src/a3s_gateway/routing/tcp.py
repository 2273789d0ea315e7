"""The compiled TCP route table (SPEC §4.10, §4.11, §6.1).

Ring 0: pure. TCP routers are few, so the table is an ordered tuple per entrypoint (same order
as HTTP: effective priority, where a lone ``HostSNI(`*`)`` defaults to −1, then name) and
``select`` returns the first match. ``needs_client_hello`` tells the connection handler whether
it must peek at the ClientHello on an entrypoint at all. Must not: read sockets or time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from a3s_gateway.routing.request import ConnView, TcpConnInfo

if TYPE_CHECKING:
    from collections.abc import Iterable

    from a3s_gateway.routing.compiler import CompiledRule


@dataclass(frozen=True, slots=True)
class TcpRoute:
    """One TCP router as the table sees it."""

    name: str
    rule: CompiledRule
    service: str
    #: Entrypoints the router is attached to; ``None`` = every tcp entrypoint.
    entrypoints: frozenset[str] | None = None
    priority: int = 0
    tls_passthrough: bool = False
    middlewares: tuple[str, ...] = ()

    @property
    def effective_priority(self) -> int:
        """``priority`` if not 0, else the rule's default (−1 for a lone ``HostSNI(`*`)``)."""
        return self.priority if self.priority != 0 else self.rule.default_priority


class TcpRouteTable:
    """All TCP routes of one config generation."""

    __slots__ = ("_by_entrypoint", "_default", "routes")

    def __init__(self, routes: Iterable[TcpRoute]) -> None:
        ordered = sorted(routes, key=lambda r: (-r.effective_priority, r.name))
        for route in ordered:
            if route.rule.tcp is None:
                raise ValueError(f"route {route.name!r} has a {route.rule.kind} rule")
        self.routes: tuple[TcpRoute, ...] = tuple(ordered)
        names = {ep for route in ordered if route.entrypoints for ep in route.entrypoints}
        self._by_entrypoint = {
            name: tuple(r for r in ordered if r.entrypoints is None or name in r.entrypoints)
            for name in names
        }
        self._default = tuple(r for r in ordered if r.entrypoints is None)

    def routes_for(self, entrypoint: str) -> tuple[TcpRoute, ...]:
        """The routes attached to ``entrypoint``, in match order."""
        return self._by_entrypoint.get(entrypoint, self._default)

    def select(self, connection: TcpConnInfo | ConnView, entrypoint: str) -> TcpRoute | None:
        """The first route attached to ``entrypoint`` whose rule matches, or ``None``."""
        view = ConnView.from_info(connection) if isinstance(connection, TcpConnInfo) else connection
        for route in self.routes_for(entrypoint):
            matcher = route.rule.tcp
            if matcher is not None and matcher.matches(view):
                return route
        return None

    def needs_client_hello(self, entrypoint: str) -> bool:
        """Whether any route on ``entrypoint`` reads SNI or ALPN (SPEC §4.11)."""
        return any(route.rule.needs_client_hello for route in self.routes_for(entrypoint))
