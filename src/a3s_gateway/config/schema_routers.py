"""Schema of ``routers``, ``tcp_routers`` and ``udp_routers`` (SPEC §3.9).

Ring 0: type definitions only. Rules are kept as text here; ``semantic.py`` compiles them.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias

import msgspec

from a3s_gateway.config.block import Block, Names

#: SPEC §3.9: priority range −2³¹ … 2³¹−1001 (room above for internal routers).
Priority: TypeAlias = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1001)]


class Router(Block, frozen=True, kw_only=True):
    """``routers "<name>"``: an HTTP router."""

    rule: str
    service: str
    entrypoints: Names = ()
    middlewares: Names = ()
    priority: Priority = 0
    rule_syntax: Literal["v3", "v2"] = "v3"


class TcpRouter(Block, frozen=True, kw_only=True):
    """``tcp_routers "<name>"``: a TCP router (SNI, ALPN, ClientIP rules)."""

    rule: str
    service: str
    entrypoints: Names = ()
    middlewares: Names = ()
    priority: Priority = 0
    tls_passthrough: bool = False
    #: Traefik v2 syntax for this router's rule (SPEC §4.9: several arguments OR-ed,
    #: ``{name:re}`` templates in ``HostSNIRegexp``).
    rule_syntax: Literal["v3", "v2"] = "v3"


class UdpRouter(Block, frozen=True, kw_only=True):
    """``udp_routers "<name>"``: binds a UDP entrypoint to a service (no rule)."""

    service: str
    entrypoints: Annotated[Names, msgspec.Meta(min_length=1)]
