"""The pool key of an upstream connection and the per-service pool limits (SPEC §5.7).

Ring 0: frozen values only; no trio, sockets, TLS or clocks, and no name resolution.

``Peer`` is the key the pool groups connections by: two requests may share a connection only if
their peers are equal. SPEC §5.7 lists the full key — scheme, host, port, resolved IP, protocol
and TLS identity (server name, CA, client certificate, verify flag). ``Peer`` holds the scheme,
host, port, ``tls``, the ``server_name`` sent as SNI and verified, and the rest of the TLS
identity as a ``TlsIdentity`` (CA file, client certificate and key files, verify flag): plain
paths and a flag, never an ``ssl`` object, so two backends on one host and port with different
server names or client certificates never share a connection, and the dialer (Ring 1) builds one
``ssl.SSLContext`` per distinct ``TlsIdentity``. The resolved IP is not part of the key: names
are resolved at connect time.

``UpstreamTlsSettings`` is a service's compiled ``upstream_tls`` block; ``Peer.from_url`` applies
it to each ``https``/``wss``/``tls`` backend (``server_name`` defaults to the URL's host).

The hash of a ``Peer`` is computed once (the pool looks peers up on every request).

Must not: hold anything mutable or unhashable (it is a dict key), or anything secret (it appears
in logs and metrics labels via ``str``; file paths are not secrets, the files' contents never
come here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
class TlsIdentity:
    """What a client TLS context is made of (SPEC §3.10 ``upstream_tls``, §5.7 "TLS").

    ``ca_file`` "" trusts the system store; ``cert_file``/``key_file`` "" present no client
    certificate (both or neither); ``verify`` False accepts any certificate and name
    (``insecure_skip_verify``). The server name is not part of it: one context serves every
    name, given per connection.
    """

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    verify: bool = True


#: The default identity: the system trust store, no client certificate, verification on.
SYSTEM_TLS: Final = TlsIdentity()


@dataclass(frozen=True, slots=True)
class UpstreamTlsSettings:
    """A service's ``upstream_tls`` block, compiled: ``server_name`` "" means each backend's
    URL host."""

    server_name: str = ""
    identity: TlsIdentity = SYSTEM_TLS


@dataclass(frozen=True, slots=True)
class Peer:
    """Where and how to connect: the pool key (hashable, compared by value).

    ``scheme`` is the transport (``http``, ``https``, ``h2c``, ``tcp``, ``tls``), not the URL's
    spelling: ``ws://`` and bare ``host:port`` backends share ``http`` connections. ``host`` is a
    name or an IP literal without brackets. ``server_name`` is the TLS name to send and verify;
    empty for plaintext. ``identity`` is the rest of the TLS identity (ignored for plaintext).
    """

    scheme: str
    host: str
    port: int
    tls: bool = False
    server_name: str = ""
    identity: TlsIdentity = SYSTEM_TLS
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        key = (self.scheme, self.host, self.port, self.tls, self.server_name, self.identity)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[Peer], tuple[str, str, int, bool, str, TlsIdentity]]:
        # The cached hash of a str differs between processes: rebuild it where unpickled.
        return (
            Peer,
            (self.scheme, self.host, self.port, self.tls, self.server_name, self.identity),
        )

    @classmethod
    def from_url(cls, url: ServerUrl, tls: UpstreamTlsSettings | None = None) -> Peer:
        """The peer of a backend URL with its service's ``upstream_tls`` (None: defaults);
        raises ``ValueError`` for a ``udp`` URL (no pool)."""
        key = _TRANSPORT_KEYS.get(url.transport)
        if key is None:
            raise ValueError(f"no connection pool for {url.transport} backends")
        scheme, secure = key
        if not secure:
            return cls(scheme, url.host, url.port)
        settings = tls if tls is not None else _DEFAULT_SETTINGS
        name = settings.server_name or url.host
        return cls(
            scheme, url.host, url.port, tls=True, server_name=name, identity=settings.identity
        )

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


_DEFAULT_SETTINGS: Final = UpstreamTlsSettings()


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
