"""The Prometheus families of TCP connections and UDP sessions (SPEC §9.1).

Ring 0. ``StreamFamilies`` declares the ``a3s_tcp_*`` and ``a3s_udp_*`` families on the
gateway's registry and, at scrape time, sets them from the data plane's ``StreamStats`` (plain
counts kept as traffic moves, ``observability/stream_stats.py``): gauges are set, counters
advanced to the running totals. Nothing here runs per byte or per datagram.

Must not: keep per-client labels (addresses are never labels).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from a3s_gateway.observability.metrics import Registry
    from a3s_gateway.observability.stream_stats import StreamStats

__all__ = ["StreamFamilies"]


class StreamFamilies:
    """The TCP and UDP families of one registry."""

    def __init__(self, registry: Registry) -> None:
        counter, gauge = registry.counter, registry.gauge
        self.tcp_active = gauge(
            "a3s_tcp_connections_active",
            "TCP connections relayed now, by entrypoint and TCP router.",
            ("entrypoint", "router"),
        )
        self.tcp_total = counter(
            "a3s_tcp_connections_total",
            "TCP connections routed to a backend, by entrypoint and TCP router.",
            ("entrypoint", "router"),
        )
        self.tcp_bytes = counter(
            "a3s_tcp_bytes_total",
            "Bytes relayed on TCP connections (in: from clients, out: to clients).",
            ("entrypoint", "router", "direction"),
        )
        self.client_hello_errors = counter(
            "a3s_tcp_client_hello_errors_total",
            "Malformed or oversized TLS ClientHellos seen while peeking for SNI, by reason.",
            ("entrypoint", "reason"),
        )
        self.udp_active = gauge(
            "a3s_udp_sessions_active", "UDP sessions open now.", ("entrypoint",)
        )
        self.udp_total = counter("a3s_udp_sessions_total", "UDP sessions created.", ("entrypoint",))
        self.udp_datagrams = counter(
            "a3s_udp_datagrams_total",
            "UDP datagrams relayed (in: from clients, out: to clients).",
            ("entrypoint", "direction"),
        )
        self.udp_bytes = counter(
            "a3s_udp_bytes_total",
            "UDP payload bytes relayed (in: from clients, out: to clients).",
            ("entrypoint", "direction"),
        )
        self.udp_dropped = counter(
            "a3s_udp_dropped_total", "UDP datagrams dropped, by reason.", ("entrypoint", "reason")
        )

    def collect(self, stats: StreamStats) -> None:
        """Set the families from ``stats`` (a label set stays once it was seen)."""
        for (entrypoint, router), count in stats.tcp_active.items():
            self.tcp_active.labels(entrypoint, router).set(count)
        for counts, family in (
            (stats.tcp_total, self.tcp_total),
            (stats.tcp_bytes, self.tcp_bytes),
            (stats.client_hello_errors, self.client_hello_errors),
            (stats.udp_datagrams, self.udp_datagrams),
            (stats.udp_bytes, self.udp_bytes),
            (stats.udp_dropped, self.udp_dropped),
        ):
            for labels, total in counts.items():
                family.labels(*labels).advance_to(total)
        for entrypoint, count in stats.udp_sessions.items():
            self.udp_active.labels(entrypoint).set(count)
        for entrypoint, total in stats.udp_sessions_total.items():
            self.udp_total.labels(entrypoint).advance_to(total)
