"""The pool key of an upstream connection and the per-service pool limits (SPEC §5.7).

Ring 0: frozen values only; no trio, sockets, TLS or clocks, and no name resolution.

``Peer`` is the key the pool groups connections by: two requests may share a connection only if
their peers are equal. SPEC §5.7 lists the full key — scheme, host, port, resolved IP, protocol
and TLS identity (server name, CA, client certificate, verify flag). Today it holds scheme, host,
port, ``tls`` and ``server_name``; the remaining TLS identity fields arrive with upstream TLS as
further defaulted fields, which keeps every existing construction and the hash/equality (generated
by the dataclass over all fields) correct without other changes.

Must not: hold anything mutable or unhashable (it is a dict key), or anything secret (it appears
in logs and metrics labels via ``str``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from a3s_gateway.config.urls import ServerUrl

#: ``ServerUrl.transport`` → (``Peer.scheme``, ``Peer.tls``). A bare ``host:port`` in an HTTP
#: service means plaintext HTTP/1.1; ``ws``/``wss`` already map to ``http``/``https``.
_TRANSPORT_KEYS: Final[dict[str, tuple[str, bool]]] = {
    "http": ("http", False),
    "bare": ("http", False),
    "https": ("https", True),
    "h2c": ("h2c", False),
    "tcp": ("tcp", False),
    "tls": ("tls", True),
}


@dataclass(frozen=True, slots=True)
class Peer:
    """Where and how to connect: the pool key (hashable, compared by value).

    ``scheme`` is the transport (``http``, ``https``, ``h2c``, ``tcp``, ``tls``), not the URL's
    spelling: ``ws://`` and bare ``host:port`` backends share ``http`` connections. ``host`` is a
    name or an IP literal without brackets. ``server_name`` is the TLS name to send and verify;
    empty for plaintext.
    """

    scheme: str
    host: str
    port: int
    tls: bool = False
    server_name: str = ""

    @classmethod
    def from_url(cls, url: ServerUrl) -> Peer:
        """The peer of a backend URL; raises ``ValueError`` for a ``udp`` URL (no pool)."""
        key = _TRANSPORT_KEYS.get(url.transport)
        if key is None:
            raise ValueError(f"no connection pool for {url.transport} backends")
        scheme, tls = key
        return cls(scheme, url.host, url.port, tls=tls, server_name=url.host if tls else "")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """A service's pool limits (SPEC §3.10 service fields, §5.7 HTTP/1.1 pool row).

    ``max_idle_per_backend`` ≥ 0 (0 disables keep-alive reuse), ``idle_conn_timeout`` seconds
    ≥ 0, ``max_conns_per_backend`` ≥ 1 counts idle, busy and connecting connections together.
    """

    max_idle_per_backend: int = 100
    idle_conn_timeout: float = 60.0
    max_conns_per_backend: int = 1024

    def __post_init__(self) -> None:
        if self.max_idle_per_backend < 0:
            raise ValueError("max_idle_per_backend must be >= 0")
        if not self.idle_conn_timeout >= 0:  # also rejects NaN
            raise ValueError("idle_conn_timeout must be >= 0")
        if self.max_conns_per_backend < 1:
            raise ValueError("max_conns_per_backend must be >= 1")
