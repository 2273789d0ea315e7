"""What every downstream connection of one gateway shares: the current runtime snapshot, the
upstream pool, the drain state, the cached ``Date`` and the request counters.

Ring 1. Owns no nursery and sets no deadline; ``app.py`` builds one ``ServerContext`` per
gateway inside its root nursery, which it hands in as ``background`` (fire-and-forget work:
mirror copies) for the context's whole life, and swaps ``runtime`` on reload (one attribute
assignment, so a request that read it keeps a consistent snapshot, SPEC §10.1). A context built
without a nursery (a test's) gets ``NOT_SERVING``, which refuses work the way a closed nursery
does (``RuntimeError``). Must not: hold per-request state, or have ``background`` replaced
(DESIGN.md §3.3: no nursery in an attribute that is set later and poked at).
"""

from __future__ import annotations

import random
import secrets
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Final, Protocol, TypeVarTuple

from a3s_gateway.acme.board import ChallengeBoard
from a3s_gateway.observability.gateway_metrics import GatewayMetrics
from a3s_gateway.observability.stream_stats import StreamStats
from a3s_gateway.server.relay_hub import RelayHub
from a3s_gateway.upstream.http2_pool import Http2Pool
from a3s_gateway.wsmux.hub import HubRegistry

if TYPE_CHECKING:
    import ssl
    from collections.abc import Awaitable, Callable

    from a3s_gateway.observability.record import ExchangeObserver
    from a3s_gateway.runtime.compile import RuntimeConfig
    from a3s_gateway.upstream.pool import UpstreamPool

__all__ = ["NOT_SERVING", "Background", "DateCache", "Drain", "Drainable", "ServerContext"]

_Args = TypeVarTuple("_Args")


class Background(Protocol):
    """Where fire-and-forget work starts: ``trio.Nursery.start_soon``'s shape, so the gateway's
    root nursery is one."""

    def start_soon(
        self,
        async_fn: Callable[[*_Args], Awaitable[object]],
        *args: *_Args,
        name: object = None,
    ) -> None:
        """Start ``async_fn(*args)`` as a task; ``RuntimeError`` when no more work is taken."""
        ...


class _NotServing:
    """The ``Background`` of a context no gateway serves: it takes no work."""

    __slots__ = ()

    def start_soon(
        self,
        async_fn: Callable[[*_Args], Awaitable[object]],
        *args: *_Args,
        name: object = None,
    ) -> None:
        """Refuse, as a closed nursery does."""
        del async_fn, args, name
        raise RuntimeError("no gateway serves this context: background work is refused")


#: The ``background`` of a ``ServerContext`` built without one (a test's bare context).
NOT_SERVING: Final[Background] = _NotServing()


class DateCache:
    """The ``Date`` value (RFC 9110 §6.6.1), formatted at most once per wall-clock second.

    The wall clock is right here: ``Date`` states the time of day, which trio's clock is not.
    """

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def value(self) -> bytes:
        """The current ``Date`` field value as bytes."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._value = formatdate(second, usegmt=True).encode("ascii")
        return self._value

    @staticmethod
    def unix() -> int:
        """Wall-clock Unix seconds (sticky-cookie expiry, SPEC §7.6)."""
        return int(time.time())


class Drainable(Protocol):
    """A downstream connection, as the drain sees it: each connection driver registers one
    for its lifetime (``Drain.connections``), whatever its protocol."""

    def drain(self) -> None:
        """Start ending the connection gracefully; never blocks, idempotent. HTTP/1.1 closes
        at once if it waits for a request and otherwise after the response in progress
        (``Connection: close``); HTTP/2 will send ``GOAWAY`` and let its open streams finish."""
        ...


class Drain:
    """The graceful-drain flag of SPEC §2.4 and the connections it tells.

    Every connection driver adds its ``Drainable`` to ``connections`` while it runs (once per
    connection, not per request); ``start()`` sets ``draining`` and calls each one's
    ``drain()``. Exchanges still in progress read ``draining`` and end their connection after
    the response (``Downstream.close_after_response``).
    """

    __slots__ = ("connections", "draining")

    def __init__(self) -> None:
        self.draining = False
        self.connections: set[Drainable] = set()

    def start(self) -> None:
        """Begin draining; idempotent."""
        self.draining = True
        for connection in list(self.connections):
            connection.drain()


class ServerContext:
    """The shared state of one gateway's data plane (see the module docstring)."""

    __slots__ = (
        "active_connections",
        "active_requests",
        "alpn_contexts",
        "background",
        "challenges",
        "dates",
        "drain",
        "failover_requests",
        "h2pool",
        "http2_connections",
        "metrics",
        "mux_hubs",
        "observer",
        "pool",
        "rejected_connections",
        "rejection_reports",
        "relay_hub",
        "rng",
        "runtime",
        "sse_streams",
        "stale_retries",
        "streams",
        "total_requests",
        "websocket_sessions",
        "websocket_totals",
        "websockets",
    )

    def websocket_opened(self, entrypoint: str, router: str, *, connection: bool) -> None:
        """A WebSocket session begins (after its ``101``, or an HTTP/2 client's ``200``);
        ``connection``: it holds its own downstream connection (HTTP/1.1), counted under
        ``websocket`` instead of ``http1`` until it ends."""
        if connection:
            self.websockets[entrypoint] = self.websockets.get(entrypoint, 0) + 1
        self.websocket_sessions[router] = self.websocket_sessions.get(router, 0) + 1
        self.websocket_totals[router] = self.websocket_totals.get(router, 0) + 1

    def websocket_closed(self, entrypoint: str, router: str, *, connection: bool) -> None:
        """A WebSocket session ended (``connection`` as when it was opened)."""
        if connection:
            self.websockets[entrypoint] -= 1
        self.websocket_sessions[router] -= 1

    def sse_opened(self, router: str) -> None:
        """An SSE stream's head went out."""
        self.sse_streams[router] = self.sse_streams.get(router, 0) + 1

    def sse_closed(self, router: str) -> None:
        """An SSE stream ended."""
        self.sse_streams[router] -= 1

    def __init__(
        self,
        runtime: RuntimeConfig,
        pool: UpstreamPool,
        background: Background = NOT_SERVING,
        h2pool: Http2Pool | None = None,
        challenges: ChallengeBoard | None = None,
    ) -> None:
        self.runtime = runtime
        #: The pending ACME challenges the listeners answer (``server/acme_answer.py``); the
        #: gateway's own board, which its ACME manager (or the supervisor's push) fills.
        self.challenges: Final = challenges if challenges is not None else ChallengeBoard()
        #: TLS-ALPN-01 challenge certificates' server contexts, by certificate PEM.
        self.alpn_contexts: dict[bytes, ssl.SSLContext] = {}
        self.pool = pool
        #: HTTP/2 connections to backends (``h2c://`` servers, gRPC calls); a context built
        #: without one (a test's) gets a pool that was never started, which refuses streams.
        self.h2pool: Final = h2pool if h2pool is not None else Http2Pool()
        self.drain = Drain()
        self.dates = DateCache()
        self.active_connections: dict[str, int] = {}
        self.active_requests: dict[str, int] = {}
        #: Those of ``active_connections`` that speak HTTP/2, by entrypoint.
        self.http2_connections: dict[str, int] = {}
        self.total_requests = 0
        #: WebSocket sessions open now, by entrypoint (``a3s_open_connections{protocol=
        #: "websocket"}``) and by router (``a3s_websocket_sessions_active``), and those ever
        #: opened by router (``a3s_websocket_sessions_total``).
        self.websockets: dict[str, int] = {}
        self.websocket_sessions: dict[str, int] = {}
        self.websocket_totals: dict[str, int] = {}
        #: SSE streams open now, by router (``a3s_sse_streams_active``).
        self.sse_streams: dict[str, int] = {}
        #: TCP connections and UDP sessions: counts for the metrics (SPEC §6, §9.1).
        self.streams = StreamStats()
        #: The task that copies plain-socket TCP relays (``relay_hub.py``); ``app.py`` runs it
        #: in the root nursery. A context nobody runs it for relays with two tasks per
        #: connection instead.
        self.relay_hub: Final = RelayHub()
        #: The multiplexers' broadcast hubs of this worker (SPEC §5.13).
        self.mux_hubs = HubRegistry()
        #: Connections closed at accept, by (entrypoint, reason) (SPEC §6.4 reasons
        #: ``max_connections`` and ``ip_not_allowed``; a metric once metrics land).
        self.rejected_connections: dict[tuple[str, str], int] = {}
        #: When each (entrypoint, reason) was last summarised in the log, and its count then.
        self.rejection_reports: dict[tuple[str, str], tuple[float, int]] = {}
        #: Requests re-sent on a fresh connection after a stale pooled one (SPEC §5.7).
        self.stale_retries = 0
        #: Requests sent to a failover service (SPEC §7.8; a metric once metrics land).
        self.failover_requests = 0
        #: Where fire-and-forget work runs (mirror copies): the gateway's root nursery, given
        #: at construction and never replaced; a plain attribute read on the request path.
        self.background: Final = background
        #: The Prometheus families (a disabled instance records nothing: the null object).
        self.metrics = GatewayMetrics(enabled=False)
        #: Receives each finished exchange's record (metrics, access log); None: nobody.
        self.observer: ExchangeObserver | None = None
        #: Span and request ids (SPEC §9.4: ``random.Random`` seeded from ``secrets``), one per
        #: process: each worker builds its own context after it was spawned.
        self.rng = random.Random(secrets.randbits(128))
