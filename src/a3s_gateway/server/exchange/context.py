"""``Exchange``: the one per-request context object every stage of the exchange reads and fills.

Ring 1 (a plain object; no IO). ``handle.py`` creates it from the request head; ``prepare``
fills the route, the service and the chain, and (with no middlewares) the upstream plan;
``middlewares`` fills the plan from the request as the request sides left it (again for every
retry attempt); ``dispatch`` reads the plan and writes the outcome (``status``, ``tried``);
``record`` turns it into the ``ExchangeRecord`` the observers get. One object instead of the
11–13 arguments the stages used to pass each other.

Must not: do IO, or hold connection-level state (that is ``ServerContext`` and the driver's).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final

from a3s_gateway.middleware import RequestState
from a3s_gateway.protocols.grpc import is_grpc
from a3s_gateway.server.exchange.answer import through_safely
from a3s_gateway.server.exchange.failures import MiddlewareFailed

if TYPE_CHECKING:
    from collections.abc import Callable

    import trio

    from a3s_gateway.config.schema_services import WebsocketMux
    from a3s_gateway.middleware import Middleware
    from a3s_gateway.middleware.compress import BodyFilter
    from a3s_gateway.observability.record import ExchangeRecord
    from a3s_gateway.protocols.events import RequestHead
    from a3s_gateway.protocols.headers import Headers
    from a3s_gateway.protocols.responses import GeneratedResponse
    from a3s_gateway.runtime.compile import EntrypointRuntime, RuntimeConfig, ServiceRuntime
    from a3s_gateway.server.downstream import ConnInfo, ObservedDownstream
    from a3s_gateway.server.exchange.trace import Trace
    from a3s_gateway.server.server_context import ServerContext
    from a3s_gateway.services import Backend

__all__ = ["Exchange"]

log: Final = logging.getLogger("a3s_gateway.exchange")


class Exchange:
    """One request from its head to its record (see the module docstring)."""

    __slots__ = (
        "body_filter",
        "chain",
        "client",
        "ctx",
        "down",
        "entry",
        "first",
        "grpc",
        "grpc_timeout",
        "head",
        "headers",
        "hold",
        "host",
        "info",
        "mux",
        "path",
        "query",
        "received",
        "record",
        "request",
        "runtime",
        "service",
        "state",
        "status",
        "target",
        "total_scope",
        "trace",
        "tried",
        "ws_key",
    )

    def __init__(
        self,
        head: RequestHead,
        down: ObservedDownstream,
        info: ConnInfo,
        ctx: ServerContext,
        runtime: RuntimeConfig,
        entry: EntrypointRuntime,
        record: ExchangeRecord,
    ) -> None:
        self.head = head
        self.down = down
        self.info = info
        self.ctx = ctx
        #: The snapshot read once, at the start, and used to the end (SPEC §10.1).
        self.runtime = runtime
        self.entry = entry
        #: What the observers will see of this exchange (attempts, backend, errors).
        self.record = record
        # --- prepare
        self.trace: Trace | None = None
        self.service: ServiceRuntime | None = None
        self.chain: tuple[Middleware, ...] = ()
        #: The request path (sanitised when the entrypoint says so, not decoded) and query.
        self.path = b""
        self.query = b""
        #: The request-target as received (path and query), for the middlewares' view.
        self.received = b""
        # --- the upstream plan (what every attempt sends; per retry attempt with middlewares)
        #: The head as the request sides left it (the received one without middlewares).
        self.request = head
        #: The origin-form target, the forwarded fields (without ``Host``), the client IP (the
        #: consistent-hash key) and a ``Host`` a headers middleware set.
        self.target = b""
        self.headers: Headers = []
        self.client = info.peer_ip
        self.host: bytes | None = None
        #: The middlewares' request state (for their response sides), when there is a chain.
        self.state: RequestState | None = None
        #: The body transform of the chain (``compress``), given the final response head.
        self.body_filter: Callable[[int, Headers], BodyFilter | None] | None = None
        # --- dispatch
        #: The retry policy's look at a response status before it is sent (``relay.py``).
        self.hold: Callable[[int], bool] | None = None
        #: Backends earlier attempts used (retry avoids them while others are available).
        self.tried: list[Backend] = []
        #: The first attempt (mirroring and sticky pinning happen once per request).
        self.first = True
        #: The status sent to the client once the exchange ended (0: none completed).
        self.status = 0
        #: The total timeout's scope while one runs (``dispatch.py``); a stream lifts it.
        self.total_scope: trio.CancelScope | None = None
        #: A gRPC call (SPEC §5.10): HTTP/2 with a gRPC content type.
        self.grpc = head.http_version == b"2" and is_grpc(head)
        #: Its ``grpc-timeout`` in seconds (0: none); set by ``handle.py``.
        self.grpc_timeout = 0.0
        #: A WebSocket handshake's ``Sec-WebSocket-Key`` (SPEC §5.11), set by ``prepare``.
        self.ws_key: bytes | None = None
        #: The routed service when it is a ``websocket_mux`` (SPEC §5.13), set by ``prepare``.
        self.mux: WebsocketMux | None = None

    @property
    def tls(self) -> bool:
        """The request arrived over TLS (a sticky cookie is then ``Secure`` by default)."""
        return self.entry.tls

    def respond(self, status: int, headers: Headers) -> None:
        """The response sides of the whole chain, last first, on a proxied response head.
        Raises ``MiddlewareFailed`` (logged) when one raises: 500 instead (SPEC §8.1)."""
        state = self.state
        assert state is not None  # only called when there is a chain
        for middleware in reversed(self.chain):
            try:
                middleware.response(state, status, headers)
            except Exception as error:
                log.exception("middleware %s failed on the response", middleware.name)
                raise MiddlewareFailed from error

    def answer(self, response: GeneratedResponse) -> GeneratedResponse:
        """A gateway-generated answer after dispatch, through every response side."""
        if self.state is None:
            return response
        return through_safely(self.chain, self.state, response)

    def hash_key(self, derive: Callable[[RequestState], bytes]) -> str:
        """The ``consistent-hash`` key ``hash_key`` derives from this request (the middlewares'
        view when there is one, else the request as received); the client IP when the request
        has no such key (SPEC §7.2)."""
        state = self.state
        if state is None:
            path, _, query = self.target.partition(b"?")
            head = self.request
            state = RequestState(
                method=head.method,
                path=path,
                query=query,
                headers=head.headers,
                authority=head.authority,
                client_ip=self.client,
                peer_ip=self.client,
                tls=self.tls,
            )
        value = derive(state)
        return value.decode("utf-8", "surrogateescape") if value else self.client
