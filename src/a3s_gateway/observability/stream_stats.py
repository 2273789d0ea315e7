"""The counters of TCP connections and UDP sessions (SPEC §6, §9.1), kept by the data plane and
read by the metrics collector at scrape time.

Ring 0: plain dicts of ints, no locks (one trio thread), no clocks. The TCP relay and the UDP
proxy add to them as bytes and datagrams move (a dict update per read, as the WebSocket and SSE
counters on ``ServerContext`` do); ``observability/gateway_metrics.py`` turns them into the
``a3s_tcp_*`` and ``a3s_udp_*`` families when Prometheus scrapes. Keys are label tuples.

Must not: hold anything but counts (no addresses: a client address is not a metric label).
"""

from __future__ import annotations

__all__ = ["StreamStats"]


class StreamStats:
    """Per-worker counts of TCP and UDP traffic (see the module docstring)."""

    __slots__ = (
        "client_hello_errors",
        "tcp_active",
        "tcp_bytes",
        "tcp_total",
        "udp_bytes",
        "udp_datagrams",
        "udp_dropped",
        "udp_sessions",
        "udp_sessions_total",
    )

    def __init__(self) -> None:
        #: TCP connections relayed now, by (entrypoint, router): ``a3s_tcp_connections_active``.
        self.tcp_active: dict[tuple[str, str], int] = {}
        #: TCP connections routed so far, by (entrypoint, router).
        self.tcp_total: dict[tuple[str, str], int] = {}
        #: Bytes relayed, by (entrypoint, router, direction): ``in`` from the client, ``out``
        #: to it (``a3s_tcp_bytes_total``).
        self.tcp_bytes: dict[tuple[str, str, str], int] = {}
        #: Malformed or oversized ClientHellos, by (entrypoint, reason)
        #: (``a3s_tcp_client_hello_errors_total``).
        self.client_hello_errors: dict[tuple[str, str], int] = {}
        #: UDP sessions open now and ever opened, by entrypoint.
        self.udp_sessions: dict[str, int] = {}
        self.udp_sessions_total: dict[str, int] = {}
        #: UDP datagrams and their bytes, by (entrypoint, direction) (``in``: from clients).
        self.udp_datagrams: dict[tuple[str, str], int] = {}
        self.udp_bytes: dict[tuple[str, str], int] = {}
        #: UDP datagrams dropped, by (entrypoint, reason): ``no_router``, ``no_backend``,
        #: ``max_sessions``, ``send_buffer_full``, ``draining``, ``upstream_error``.
        self.udp_dropped: dict[tuple[str, str], int] = {}

    def tcp_opened(self, entrypoint: str, router: str) -> None:
        """A routed TCP connection starts its relay."""
        key = (entrypoint, router)
        self.tcp_active[key] = self.tcp_active.get(key, 0) + 1
        self.tcp_total[key] = self.tcp_total.get(key, 0) + 1

    def tcp_closed(self, entrypoint: str, router: str, received: int, sent: int) -> None:
        """A TCP relay ended, after ``received`` bytes from the client and ``sent`` to it."""
        key = (entrypoint, router)
        self.tcp_active[key] -= 1
        for direction, count in (("in", received), ("out", sent)):
            if count:
                labels = (entrypoint, router, direction)
                self.tcp_bytes[labels] = self.tcp_bytes.get(labels, 0) + count

    def client_hello_error(self, entrypoint: str, reason: str) -> None:
        """A peeked ClientHello was malformed (``reason`` is a fixed word)."""
        key = (entrypoint, reason)
        self.client_hello_errors[key] = self.client_hello_errors.get(key, 0) + 1

    def udp_dropped_one(self, entrypoint: str, reason: str) -> None:
        """One datagram was dropped for ``reason``."""
        key = (entrypoint, reason)
        self.udp_dropped[key] = self.udp_dropped.get(key, 0) + 1

    def udp_datagram(self, entrypoint: str, direction: str, size: int) -> None:
        """One datagram of ``size`` bytes was relayed (``in``: client → backend)."""
        key = (entrypoint, direction)
        self.udp_datagrams[key] = self.udp_datagrams.get(key, 0) + 1
        self.udp_bytes[key] = self.udp_bytes.get(key, 0) + size

    def udp_session_opened(self, entrypoint: str) -> None:
        """A UDP session was created."""
        self.udp_sessions[entrypoint] = self.udp_sessions.get(entrypoint, 0) + 1
        self.udp_sessions_total[entrypoint] = self.udp_sessions_total.get(entrypoint, 0) + 1

    def udp_session_closed(self, entrypoint: str) -> None:
        """A UDP session ended."""
        self.udp_sessions[entrypoint] -= 1
