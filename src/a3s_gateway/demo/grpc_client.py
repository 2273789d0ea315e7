"""A gRPC client for the demo's ``demo.Echo`` service (``grpc_backend``), direct or through the
gateway: ``python -m a3s_gateway.demo.grpc_client --target 127.0.0.1:8080 unary hello``.

Ring 1, a separate program and a small library. Each call function (``unary``,
``server_stream``, ``client_stream``, ``bidi``) takes an open channel (``open_channel``: h2c, or
TLS with ``tls_ca``), sends bytes (no protobuf, no serializers), waits at most ``timeout``
seconds and returns an ``Outcome``: the status code's name, its details, the messages received
and both metadata sets. A failed call is an ``Outcome`` too, never an exception. ``bidi`` runs
in lockstep (send one message, wait for its echo, then send the next), so it also shows that
each message is relayed as it arrives.

The command line prints the outcome (initial metadata, messages, trailing metadata, status) and
exits 0 when the status is OK, 1 otherwise. Kinds: ``unary TEXT``, ``server-stream COUNT[:SIZE]``,
``client-stream TEXT…``, ``bidi TEXT…``, ``fail CODE:DETAILS``, ``slow MS``.

grpcio is optional for the package: it is imported inside the functions that need it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import queue
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

SERVICE: Final = "demo.Echo"
MAX_MESSAGE: Final = 64 * 1024 * 1024
#: Longest message shown whole on the command line.
SHOWN: Final = 120

#: gRPC metadata: text values, or bytes for keys ending in ``-bin``.
Metadata: TypeAlias = tuple[tuple[str, str | bytes], ...]


class StatusCode(Protocol):
    """A ``grpc.StatusCode`` member."""

    @property
    def name(self) -> str: ...


class Call(Protocol):
    """A finished or running call (grpcio ships no types)."""

    def code(self) -> StatusCode: ...
    def details(self) -> str | None: ...
    def initial_metadata(self) -> Metadata | None: ...
    def trailing_metadata(self) -> Metadata | None: ...


class FutureCall(Call, Protocol):
    def result(self) -> bytes: ...


class StreamCall(Call, Protocol):
    def __iter__(self) -> Iterator[bytes]: ...
    def __next__(self) -> bytes: ...


class UnaryUnary(Protocol):
    def future(self, request: bytes, *, timeout: float, metadata: Metadata) -> FutureCall: ...


class UnaryStream(Protocol):
    def __call__(self, request: bytes, *, timeout: float, metadata: Metadata) -> StreamCall: ...


class StreamUnary(Protocol):
    def future(
        self, requests: Iterator[bytes], *, timeout: float, metadata: Metadata
    ) -> FutureCall: ...


class StreamStream(Protocol):
    def __call__(
        self, requests: Iterator[bytes], *, timeout: float, metadata: Metadata
    ) -> StreamCall: ...


class Channel(Protocol):
    """The part of ``grpc.Channel`` this module uses."""

    def unary_unary(self, method: str) -> UnaryUnary: ...
    def unary_stream(self, method: str) -> UnaryStream: ...
    def stream_unary(self, method: str) -> StreamUnary: ...
    def stream_stream(self, method: str) -> StreamStream: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Outcome:
    """How a call ended: ``code`` is the status name (``"OK"``, ``"NOT_FOUND"``, …)."""

    code: str
    details: str
    messages: tuple[bytes, ...]
    initial: Metadata
    trailing: Metadata

    def trailer(self, key: str) -> str | bytes | None:
        """The first trailing metadata value for ``key``, if any."""
        return next((value for name, value in self.trailing if name == key), None)


def path(method: str) -> str:
    """The HTTP/2 ``:path`` of ``demo.Echo``'s ``method``."""
    return f"/{SERVICE}/{method}"


def open_channel(
    target: str, *, tls_ca: bytes | None = None, authority: str | None = None
) -> Channel:
    """A channel to ``target`` (``host:port``): h2c, or TLS trusting the PEM ``tls_ca``.
    ``authority`` is the ``:authority`` sent and, with TLS, the name the certificate must have.
    Proxy variables in the environment are ignored. Close it after use."""
    import grpc  # here: grpcio is optional for the package

    options: list[tuple[str, str | int]] = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.enable_http_proxy", 0),
    ]
    if authority is not None:
        options.append(("grpc.default_authority", authority))
    if tls_ca is None:
        channel: Channel = grpc.insecure_channel(target, options=options)
        return channel
    if authority is not None:
        options.append(("grpc.ssl_target_name_override", authority))
    credentials = grpc.ssl_channel_credentials(root_certificates=tls_ca)
    secure: Channel = grpc.secure_channel(target, credentials, options=options)
    return secure


def _finish(call: Call, receive: Callable[[list[bytes]], None]) -> Outcome:
    """Run ``receive`` (which appends the messages as they come) and read the status."""
    import grpc  # here: grpcio is optional for the package

    messages: list[bytes] = []
    with contextlib.suppress(grpc.RpcError):  # the call's status says why
        receive(messages)
    return Outcome(
        code=call.code().name,
        details=call.details() or "",
        messages=tuple(messages),
        initial=tuple((key, value) for key, value in call.initial_metadata() or ()),
        trailing=tuple((key, value) for key, value in call.trailing_metadata() or ()),
    )


def unary(
    channel: Channel,
    request: bytes,
    *,
    timeout: float,
    metadata: Metadata = (),
    method: str = path("Unary"),
) -> Outcome:
    """One request, one answer."""
    call = channel.unary_unary(method).future(request, timeout=timeout, metadata=metadata)
    return _finish(call, lambda into: into.append(call.result()))


def server_stream(
    channel: Channel,
    request: bytes,
    *,
    timeout: float,
    metadata: Metadata = (),
    method: str = path("ServerStream"),
) -> Outcome:
    """One request, a stream of answers."""
    call = channel.unary_stream(method)(request, timeout=timeout, metadata=metadata)
    return _finish(call, lambda into: into.extend(call))


def client_stream(
    channel: Channel,
    requests: Iterable[bytes],
    *,
    timeout: float,
    metadata: Metadata = (),
    method: str = path("ClientStream"),
) -> Outcome:
    """A stream of requests, one answer."""
    stub = channel.stream_unary(method)
    call = stub.future(iter(requests), timeout=timeout, metadata=metadata)
    return _finish(call, lambda into: into.append(call.result()))


def _queued(outgoing: queue.SimpleQueue[bytes | None]) -> Iterator[bytes]:
    while (message := outgoing.get()) is not None:
        yield message


def bidi(
    channel: Channel,
    requests: Iterable[bytes],
    *,
    timeout: float,
    metadata: Metadata = (),
    method: str = path("Bidi"),
) -> Outcome:
    """Both ways in lockstep: each request is sent once the answer to the one before came."""
    outgoing: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    call = channel.stream_stream(method)(_queued(outgoing), timeout=timeout, metadata=metadata)

    def receive(into: list[bytes]) -> None:
        try:
            for request in requests:
                outgoing.put(request)
                answer = next(call, None)
                if answer is None:
                    break
                into.append(answer)
        finally:
            outgoing.put(None)  # half-close (also ends grpcio's thread reading the requests)
        into.extend(call)

    return _finish(call, receive)


def _show(message: bytes) -> str:
    text = message.decode("utf-8", "backslashreplace")
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}… ({len(message)} bytes)"


def print_outcome(outcome: Outcome) -> None:
    """The outcome as the command line prints it."""
    for key, value in outcome.initial:
        print(f"header {key}: {value!r}" if isinstance(value, bytes) else f"header {key}: {value}")
    for message in outcome.messages:
        print(f"message: {_show(message)}")
    for key, value in outcome.trailing:
        shown = repr(value) if isinstance(value, bytes) else value
        print(f"trailer {key}: {shown}")
    print(f"status: {outcome.code}" + (f" ({outcome.details})" if outcome.details else ""))


def _pair(text: str) -> tuple[str, str]:
    key, _, value = text.partition("=")
    return key.strip().lower(), value


def _call(channel: Channel, args: argparse.Namespace) -> Outcome:
    words: list[bytes] = [word.encode() for word in args.words]
    joined = b" ".join(words)
    metadata: Metadata = tuple(_pair(text) for text in args.metadata)
    timeout: float = args.timeout
    kind: str = args.kind
    if kind == "server-stream":
        return server_stream(channel, joined, timeout=timeout, metadata=metadata)
    if kind == "client-stream":
        return client_stream(channel, words, timeout=timeout, metadata=metadata)
    if kind == "bidi":
        return bidi(channel, words, timeout=timeout, metadata=metadata)
    method = path({"unary": "Unary", "fail": "Fail", "slow": "Slow"}[kind])
    return unary(channel, joined, timeout=timeout, metadata=metadata, method=method)


def main(argv: Sequence[str] | None = None) -> int:
    """Make one call and print it; 0 if its status is OK, 1 if not, 2 without grpcio."""
    parser = argparse.ArgumentParser(
        prog="python -m a3s_gateway.demo.grpc_client", description="Call demo.Echo over gRPC."
    )
    parser.add_argument("--target", default="127.0.0.1:8080", help="host:port")
    parser.add_argument("--tls-ca", type=Path, help="use TLS, trusting this CA (PEM)")
    parser.add_argument("--authority", help=":authority, and the TLS name to verify")
    parser.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    parser.add_argument("-H", dest="metadata", action="append", default=[], help="KEY=VALUE")
    kinds = ["unary", "server-stream", "client-stream", "bidi", "fail", "slow"]
    parser.add_argument("kind", choices=kinds)
    parser.add_argument("words", nargs="*", help="the request (several: one message each)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("grpc") is None:
        print("grpcio is needed: pip install 'grpcio>=1.60'", file=sys.stderr)
        return 2
    ca = args.tls_ca.read_bytes() if args.tls_ca is not None else None
    channel = open_channel(args.target, tls_ca=ca, authority=args.authority)
    try:
        outcome = _call(channel, args)
    finally:
        channel.close()
    print_outcome(outcome)
    return 0 if outcome.code == "OK" else 1


if __name__ == "__main__":
    raise SystemExit(main())
