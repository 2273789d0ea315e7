"""The check request of the HTTP/2 profiles: one real HTTP/2 exchange before any load.

wrk's profiles check each product with one HTTP/1.1 request (``runner.preflight``); h2load's
need the same over HTTP/2, which also proves that the product speaks it the way the profile
drives it: h2 negotiated by ALPN over TLS, or h2c with prior knowledge on a plain port (an
HTTP/1.1-only listener answers the preface with an error or closes). A client of the ``h2``
library (the gateway's own HTTP/2 dependency) on a blocking socket sends the request and reads
one response with its trailers. The response must be 200 with the expected body size; a gRPC
answer must also be ``content-type: application/grpc`` with the expected message and the
trailer ``grpc-status: 0``, since h2load counts any 200 as a success and never reads trailers.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass, field
from typing import Final

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from bench.procs import HOST

TIMEOUT_SECONDS: Final = 10.0
READ_BYTES: Final = 65536


class ExchangeError(Exception):
    """The exchange broke off: no HTTP/2, a reset stream, a closed connection."""


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP/2 request."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(slots=True)
class Answer:
    """What came back: status, fields, body and trailers (names lowercase)."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    trailers: dict[str, str] = field(default_factory=dict)
    ended: bool = False


def _text(value: bytes | str) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _fields(pairs: list[tuple[bytes | str, bytes | str]] | None) -> dict[str, str]:
    return {_text(name).lower(): _text(value) for name, value in pairs or []}


def _connect(port: int, tls: bool, timeout: float) -> socket.socket:
    raw = socket.create_connection((HOST, port), timeout=timeout)
    if not tls:
        return raw
    context = ssl.create_default_context()
    context.check_hostname = False  # the run's own certificate; only the proxy is measured
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        wrapped = context.wrap_socket(raw)
    except (OSError, ssl.SSLError):
        raw.close()
        raise
    if wrapped.selected_alpn_protocol() != "h2":
        wrapped.close()
        raise ExchangeError(f"ALPN agreed {wrapped.selected_alpn_protocol()!r}, not 'h2'")
    return wrapped


def _absorb(answer: Answer, event: h2.events.Event, connection: h2.connection.H2Connection) -> None:
    if isinstance(event, h2.events.ResponseReceived):
        answer.headers = _fields(list(event.headers))
        answer.status = int(answer.headers.get(":status", "0"))
    elif isinstance(event, h2.events.DataReceived):
        answer.body += event.data or b""
        connection.acknowledge_received_data(event.flow_controlled_length or 0, 1)
    elif isinstance(event, h2.events.TrailersReceived):
        answer.trailers = _fields(list(event.headers))
    elif isinstance(event, h2.events.StreamEnded):
        answer.ended = True
    elif isinstance(event, h2.events.StreamReset):
        raise ExchangeError(f"the stream was reset (error code {event.error_code})")
    elif isinstance(event, h2.events.ConnectionTerminated):
        raise ExchangeError(f"GOAWAY (error code {event.error_code})")


def exchange(port: int, request: Request, *, tls: bool, timeout: float = TIMEOUT_SECONDS) -> Answer:
    """Send ``request`` on a new HTTP/2 connection to ``port`` and read its answer."""
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    connection.initiate_connection()
    head = [
        (":method", request.method),
        (":scheme", "https" if tls else "http"),
        (":authority", f"{HOST}:{port}"),
        (":path", request.path),
        *request.headers,
    ]
    connection.send_headers(1, head, end_stream=not request.body)
    if request.body:
        connection.send_data(1, request.body, end_stream=True)
    answer = Answer()
    with _connect(port, tls, timeout) as sock:
        sock.sendall(connection.data_to_send())
        while not answer.ended:
            data = sock.recv(READ_BYTES)
            if not data:
                raise ExchangeError(
                    "the connection closed before the response ended"
                    + ("" if answer.status else " (no HTTP/2 response: does it speak HTTP/2?)")
                )
            try:
                events = connection.receive_data(data)
            except h2.exceptions.ProtocolError as error:
                raise ExchangeError(f"not HTTP/2: {error}") from error
            for event in events:
                _absorb(answer, event, connection)
            sock.sendall(connection.data_to_send())
    return answer


def judge(answer: Answer, *, size: int, grpc_body: bytes | None = None) -> str | None:
    """None when ``answer`` is a good one (module docstring), else what is wrong with it;
    ``grpc_body``: the gRPC message the answer must carry (its status is judged first: a gRPC
    error is a 200 without a body)."""
    body = bytes(answer.body)
    if answer.status != 200:
        return f"answered {answer.status} (expected 200): {body[:80]!r}"
    if grpc_body is not None:
        content_type = answer.headers.get("content-type", "")
        status = answer.trailers.get("grpc-status", answer.headers.get("grpc-status"))
        if not content_type.startswith("application/grpc") or status != "0":
            message = answer.trailers.get("grpc-message", answer.headers.get("grpc-message", ""))
            return (
                f"is not a gRPC success: content-type {content_type!r}, grpc-status {status!r}, "
                f"grpc-message {message!r}"
            )
        if body != grpc_body:
            return f"answered another gRPC message: {body[:80]!r}"
    if len(body) != size:
        return f"answered 200 with {len(body)} bytes (expected {size}): {body[:80]!r}"
    return None


def check(
    port: int, request: Request, *, tls: bool, size: int, grpc_body: bytes | None = None
) -> str | None:
    """One exchange and its judgement: None when good, else why not."""
    try:
        answer = exchange(port, request, tls=tls)
    except (OSError, ssl.SSLError, ExchangeError) as error:
        return f"HTTP/2 check request failed: {type(error).__name__}: {error}"
    reason = judge(answer, size=size, grpc_body=grpc_body)
    return None if reason is None else f"HTTP/2 check {request.method} {request.path} {reason}"
