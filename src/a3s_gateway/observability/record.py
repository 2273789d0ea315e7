"""What one HTTP exchange leaves behind for metrics, the access log and tracing (SPEC §9).

Ring 0. ``ExchangeRecord`` is filled by the data plane as a request goes through it (routing,
middlewares, attempts, the response) and handed, once the exchange has ended, to the observers:
``observability/gateway_metrics.py`` (Prometheus families) and the access log
(``observability/accesslog.py``). One object per request, with slots and defaults, so that the
hot path pays for a few attribute writes and nothing else; everything derived (code class,
milliseconds, the JSON line) is computed by the observers, off the request's critical path.

Times are trio's clock in seconds (``started``, ``upstream_started``, ``upstream_head``,
``ended``); ``wall`` is the Unix time at the end, for the log's ``ts``. Fields copied from the
request as it arrived (``method``, ``host``, ``path``, ``query``, ``user_agent``) and the ids
(``request_id``, ``trace_id``, ``span_id``, ``parent_span_id``) stay ``bytes``
(the client's bytes, any octets): decoding them is the observers' work, not the request's.

Must not: hold request or response bodies, or any field the access log must never show
(``Authorization``, cookies, API keys: SPEC §9.2); the query string is kept only for
``access_log_include_query``.
"""

from __future__ import annotations

from typing import Final, Protocol

__all__ = ["ExchangeObserver", "ExchangeRecord", "refusal_error"]

#: The ``error`` word of a request refused while it was read, by the status it was answered
#: with (the adapters' ``ProtocolViolation`` statuses, and 408 for a head that did not arrive
#: within ``timeouts.request_head``); any other status is ``bad_request``. A 431 is also what
#: an oversized trailer section gets.
_REFUSAL_ERRORS: Final = {
    408: "head_timeout",
    414: "target_too_long",
    431: "head_too_large",
    501: "unsupported_transfer_coding",
    505: "version_not_supported",
}


def refusal_error(status: int) -> str:
    """The ``error`` word for a request refused with ``status`` while it was read."""
    return _REFUSAL_ERRORS.get(status, "bad_request")


class ExchangeObserver(Protocol):
    """Who receives finished records (``server/observe.py`` combines metrics and the access
    log). ``finish`` runs in the request's task after its response went out: it must not block
    or raise."""

    def finish(self, record: ExchangeRecord) -> None:
        """Account for one finished exchange."""
        ...

    def stream_ended(self, record: ExchangeRecord) -> None:
        """Account for one TCP connection or UDP session that ended (``record.transport``)."""
        ...

    def middleware(self, name: str, kind: str, outcome: str, seconds: float) -> None:
        """Account for one middleware's request side: ``pass`` or ``reject`` after
        ``seconds``."""
        ...

    def attempt(self, service: str, backend: str, status: int, seconds: float | None) -> None:
        """Account for one upstream attempt: its status (502/504 for transport failures) and
        the time to its response head (None without one)."""
        ...


class ExchangeRecord:
    """One HTTP exchange as observed; mutable while the exchange runs.

    ``error`` is a short cause when the gateway answered or aborted (SPEC §9.2 ``error`` words;
    set in ``server/exchange/``): ``no_route``, ``no_backend``, ``at_capacity``,
    ``connect_refused``, ``connect_tls``, ``connect_timeout``, ``upstream_timeout``,
    ``upstream_reset``, ``bad_response``, ``client_abort`` (the client went away, or the
    response had to be cut),
    ``client_timeout`` (a gap in the request body over ``timeouts.body_idle``),
    ``body_timeout`` (the body not complete within ``timeouts.request_body``), ``overloaded``,
    ``shutting_down`` (a 503: the upstream pool is closing), ``shutdown`` (the gateway cut the
    exchange while stopping: the drain's grace ran out, a second signal, a retired listener's
    grace), ``internal_error``; for a request refused while it was read (``refusal_error``,
    set in ``server/http1_driver.py`` for the head and in ``server/exchange/`` for the body)
    ``bad_request``, ``head_timeout``, ``target_too_long``, ``head_too_large``,
    ``unsupported_transfer_coding``, ``version_not_supported``; for middleware answers
    ``unauthorized``, ``forbidden``, ``rate_limited``, ``body_too_large``, ``breaker_open``,
    ``auth_unavailable``, ``auth_timeout``, ``unavailable``, ``denied``.
    """

    __slots__ = (
        "attempts",
        "backend",
        "client_ip",
        "ended",
        "entrypoint",
        "error",
        "grpc_status",
        "head_sent",
        "host",
        "method",
        "middleware",
        "parent_span_id",
        "path",
        "peer_ip",
        "protocol",
        "query",
        "request_bytes",
        "request_id",
        "response_bytes",
        "router",
        "sampled",
        "scheme",
        "service",
        "sni",
        "span_id",
        "started",
        "status",
        "tls_version",
        "trace_id",
        "transport",
        "upstream_head",
        "upstream_started",
        "user_agent",
        "wall",
        "websocket",
        "ws_close_client",
        "ws_close_upstream",
    )

    def __init__(self, entrypoint: str, started: float) -> None:
        self.entrypoint = entrypoint
        self.started = started
        #: When the exchange ended (trio's clock); 0 until it did.
        self.ended = 0.0
        #: When the response head went out (trio's clock); -1: it did not.
        self.head_sent = -1.0
        #: The ``grpc-status`` the client got (a gRPC call's trailers); -1: not a gRPC call.
        self.grpc_status = -1
        #: Unix time at the end (the access log's ``ts``).
        self.wall = 0.0
        self.router = self.service = ""
        #: The server URL of the backend that answered (or the last one tried).
        self.backend = ""
        self.client_ip = self.peer_ip = ""
        self.method = b""
        self.scheme = "http"
        #: The request's authority (``Host``) as received.
        self.host = b""
        #: The path without the query, as received.
        self.path = b""
        self.query = b""
        #: ``HTTP/1.0``, ``HTTP/1.1`` or ``HTTP/2``.
        self.protocol = "HTTP/1.1"
        #: The final status sent to the client; 0 when none was (the client went away, the
        #: response was cut short).
        self.status = 0
        #: Request and response body bytes that crossed the gateway.
        self.request_bytes = 0
        self.response_bytes = 0
        #: When the last upstream attempt started and when its response head arrived (trio's
        #: clock; -1: none).
        self.upstream_started = -1.0
        self.upstream_head = -1.0
        #: Upstream attempts (connect attempts and retries included).
        self.attempts = 0
        #: A short cause when the gateway answered or aborted (see the class docstring).
        self.error = ""
        #: The middleware that answered, if one did.
        self.middleware = ""
        #: The request id and the gateway span's ids (lower-case hex), as they go on the wire.
        self.request_id = b""
        self.trace_id = b""
        self.span_id = b""
        #: The caller's span id (our span's parent; empty for a new root) and whether the
        #: gateway's span is sampled (only sampled spans are exported, SPEC §9.4).
        self.parent_span_id = b""
        self.sampled = False
        self.user_agent = b""
        #: On a TLS connection: the protocol version (``1.2``, ``1.3``) and the server name
        #: the client sent (lower case); ``""`` otherwise.
        self.tls_version = ""
        self.sni = ""
        #: A WebSocket session (SPEC §5.11): the bytes are then those each way after the
        #: ``101``, and the close codes each peer sent (-1: none) are logged.
        self.websocket = False
        #: ``tcp``/``udp``: a TCP connection or UDP session (bytes in and out, no status).
        self.transport = ""
        self.ws_close_client = -1
        self.ws_close_upstream = -1

    @property
    def duration(self) -> float:
        """Seconds from the request head to the end of the exchange."""
        return max(0.0, self.ended - self.started)

    @property
    def head_seconds(self) -> float:
        """Seconds from the request head to the response head sent (SPEC §9.1's request
        duration); the whole exchange when no head went out."""
        end = self.head_sent if self.head_sent >= 0.0 else self.ended
        return max(0.0, end - self.started)

    @property
    def upstream_seconds(self) -> float | None:
        """Seconds from the last attempt's start to its response head; None without one."""
        if self.upstream_head < 0.0 or self.upstream_started < 0.0:
            return None
        return max(0.0, self.upstream_head - self.upstream_started)
