"""The ``ip-allow`` middleware (SPEC §8.14): only addresses inside ``allowed_ips`` pass.

Ring 0: pure; no trio, sockets, TLS, clocks or logging.

The address is ``RequestState.client_ip`` (the client IP of SPEC §5.4, already resolved through
trusted proxies) with ``ip_source = "client"``, else ``RequestState.peer_ip``. It is parsed with
``routing.request.parse_peer``, so brackets, a port and a zone id are tolerated and an
IPv4-mapped IPv6 address is compared as IPv4; the configured networks were unmapped the same
way by ``IpNetwork``. Networks are kept per IP version as integer ``(network, mask)`` pairs, so a
check is a few integer operations per network. Anything not inside a network, including an
address that does not parse, is answered 403 ``forbidden``. There is no response side.

Must not: read ``X-Forwarded-For`` itself (the exchange resolved the client IP), resolve names,
or let an unparsable address through.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from typing import TYPE_CHECKING, Final, Literal, Self

from a3s_gateway.middleware.contract import Middleware
from a3s_gateway.protocols.responses import error_response
from a3s_gateway.routing.request import parse_peer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from a3s_gateway.config.schema_middlewares import IpAllow
    from a3s_gateway.middleware.contract import RequestState
    from a3s_gateway.protocols.responses import GeneratedResponse

__all__ = ["FORBIDDEN", "IpAllowMiddleware"]

#: The 403 ``error`` text (SPEC §8.14).
FORBIDDEN: Final = "forbidden"


class IpAllowMiddleware(Middleware):
    """``ip-allow``: 403 unless the client (or peer) IP is inside one of ``networks``.

    ``networks`` should already be unmapped (``IpNetwork`` does it); an IPv4-mapped IPv6
    network given here directly is unmapped too, so it matches the IPv4 addresses it maps.
    """

    __slots__ = ("_source", "_v4", "_v6")

    def __init__(
        self,
        name: str,
        *,
        networks: Iterable[IPv4Network | IPv6Network],
        ip_source: Literal["client", "peer"] = "client",
    ) -> None:
        super().__init__(name)
        v4: list[tuple[int, int]] = []
        v6: list[tuple[int, int]] = []
        for network in networks:
            unmapped = _unmap(network)
            pair = (int(unmapped.network_address), int(unmapped.netmask))
            (v4 if unmapped.version == 4 else v6).append(pair)
        self._v4 = tuple(v4)
        self._v6 = tuple(v6)
        self._source = ip_source

    @classmethod
    def from_config(cls, name: str, block: IpAllow) -> Self:
        """The middleware of the validated ``ip-allow`` definition ``name``."""
        return cls(
            name,
            networks=[entry.network for entry in block.allowed_ips],
            ip_source=block.ip_source,
        )

    async def request(self, state: RequestState) -> GeneratedResponse | None:
        """Pass an allowed address; otherwise answer 403 ``forbidden``."""
        text = state.client_ip if self._source == "client" else state.peer_ip
        if self.allows(text):
            return None
        return error_response(403, FORBIDDEN)

    def allows(self, address: str) -> bool:
        """Whether the IP text ``address`` is inside an allowed network (False if unparsable)."""
        parsed = parse_peer(address)
        if parsed is None:
            return False
        value = int(parsed)
        networks = self._v4 if parsed.version == 4 else self._v6
        return any(value & mask == network for network, mask in networks)


def _unmap(network: IPv4Network | IPv6Network) -> IPv4Network | IPv6Network:
    """An IPv4-mapped IPv6 network (``::ffff:0:0/96`` or narrower) as the IPv4 network."""
    if isinstance(network, IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return IPv4Network((mapped, network.prefixlen - 96))
    return network
