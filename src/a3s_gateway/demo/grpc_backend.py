"""The demo's gRPC backend: service ``demo.Echo`` on grpcio, bytes in and bytes out.

Ring 1, a separate program: ``python -m a3s_gateway.demo.grpc_backend --port N`` listens on
127.0.0.1 (``--port 0`` picks a free port), prints ``listening on 127.0.0.1:<port>`` once it
serves, and stops cleanly on SIGTERM or SIGINT. It is the real gRPC peer behind the gateway in
the demo and in tests/integration/test_grpc.py. No protobuf: grpcio's generic handlers pass the
message bytes through unchanged (no serializers), so any client can speak to it.

Methods (``/demo.Echo/<Method>``):

- ``Unary``: answers the request bytes; the request's ``x-echo-*`` metadata comes back as
  initial metadata, and the trailing metadata has ``x-demo-size`` (the request's length).
- ``ServerStream``: the request is ``N`` or ``N:SIZE`` (ASCII); answers N messages, message i
  being ``stream_message(i, SIZE)``.
- ``ClientStream``: reads every message, then answers JSON ``{"messages", "bytes", "sha256"}``
  of what it read (``summary``).
- ``Bidi``: echoes each message as soon as it arrives.
- ``Fail``: the request is ``CODE:details`` (``NOT_FOUND:no such thing``); fails with that
  status code (a ``grpc.StatusCode`` name other than ``OK``) and details, with the trailing
  metadata ``x-demo-detail`` and ``x-demo-detail-bin`` (the request bytes).
- ``Slow``: the request is a number of milliseconds; waits that long, then answers
  ``slept <ms> ms``. A cancelled call (client gone, deadline passed) ends the wait at once and
  prints ``Slow cancelled after <ms> ms``.

grpcio is optional: only this module and ``grpc_client`` import it, inside their functions, and
nothing in the gateway imports either. Must not: bind anything but loopback.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final, NoReturn, Protocol, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

SERVICE: Final = "demo.Echo"
HOST: Final = "127.0.0.1"
#: Messages up to this size either way (grpcio's default limit is 4 MiB for receiving).
MAX_MESSAGE: Final = 64 * 1024 * 1024
MAX_COUNT: Final = 100_000
MAX_SLOW_MS: Final = 600_000
#: Threads serving calls; each streaming call holds one while it lasts.
WORKERS: Final = 32
STOP_GRACE: Final = 1.0

#: gRPC metadata: text values, or bytes for keys ending in ``-bin``.
Metadata: TypeAlias = tuple[tuple[str, str | bytes], ...]

_print_lock = threading.Lock()


class Context(Protocol):
    """The part of ``grpc.ServicerContext`` the handlers use (grpcio ships no types)."""

    def invocation_metadata(self) -> Metadata: ...
    def send_initial_metadata(self, metadata: Metadata) -> None: ...
    def set_trailing_metadata(self, metadata: Metadata) -> None: ...
    def abort(self, code: object, details: str) -> NoReturn: ...
    def add_callback(self, callback: Callable[[], None]) -> bool: ...


class Server(Protocol):
    """The part of ``grpc.Server`` this module uses."""

    def add_insecure_port(self, address: str) -> int: ...
    def start(self) -> None: ...
    def stop(self, grace: float | None) -> threading.Event: ...


def say(line: str) -> None:
    """One line on stdout, flushed (handlers print from several threads)."""
    with _print_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def abort(context: Context, code: str, details: str) -> NoReturn:
    """End the call with the status named ``code`` (a ``grpc.StatusCode`` member)."""
    import grpc  # here: grpcio is optional for the package

    context.abort(grpc.StatusCode[code], details)


def stream_message(number: int, size: int = 0) -> bytes:
    """Message ``number`` of ``ServerStream``: its number in ASCII, padded with ``.`` to
    ``size`` bytes."""
    return str(number).encode().ljust(size, b".")


def summary(messages: Iterable[bytes]) -> bytes:
    """``ClientStream``'s answer for ``messages``, read one at a time (none is kept)."""
    digest = hashlib.sha256()
    count = total = 0
    for message in messages:
        digest.update(message)
        count += 1
        total += len(message)
    document = {"messages": count, "bytes": total, "sha256": digest.hexdigest()}
    return json.dumps(document, sort_keys=True).encode()


def _number(text: bytes, high: int, context: Context) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 9 or int(text) > high:
        abort(context, "INVALID_ARGUMENT", f"expected a number 0–{high}, got {text[:40]!r}")
    return int(text)


def _echoed(context: Context) -> Metadata:
    """The request's ``x-echo-*`` metadata, to send back as initial metadata."""
    return tuple(pair for pair in context.invocation_metadata() if pair[0].startswith("x-echo-"))


def unary(request: bytes, context: Context) -> bytes:
    context.send_initial_metadata(_echoed(context))
    context.set_trailing_metadata((("x-demo-size", str(len(request))),))
    return request


def server_stream(request: bytes, context: Context) -> Iterator[bytes]:
    count_text, _, size_text = request.partition(b":")
    count = _number(count_text, MAX_COUNT, context)
    size = _number(size_text, MAX_MESSAGE, context) if size_text else 0
    context.send_initial_metadata(_echoed(context))
    for number in range(count):
        yield stream_message(number, size)


def client_stream(requests: Iterator[bytes], context: Context) -> bytes:
    context.send_initial_metadata(_echoed(context))
    return summary(requests)


def bidi(requests: Iterator[bytes], context: Context) -> Iterator[bytes]:
    context.send_initial_metadata(_echoed(context))
    yield from requests


def fail(request: bytes, context: Context) -> bytes:
    import grpc  # here: grpcio is optional for the package

    code, _, details = request.decode("utf-8", "replace").partition(":")
    if code == "OK" or code not in grpc.StatusCode.__members__:
        abort(context, "INVALID_ARGUMENT", f"Fail needs CODE:details, got {code[:40]!r}")
    detail = f"{code} requested"
    context.set_trailing_metadata((("x-demo-detail", detail), ("x-demo-detail-bin", request)))
    abort(context, code, details)


def slow(request: bytes, context: Context) -> bytes:
    milliseconds = _number(request, MAX_SLOW_MS, context)
    ended = threading.Event()  # set when the call ends, by cancellation before we answer
    started = time.monotonic()
    if not context.add_callback(ended.set) or ended.wait(milliseconds / 1000):
        waited = round((time.monotonic() - started) * 1000)
        say(f"Slow cancelled after {waited} ms")
        return b""  # the call is over: grpcio discards this
    return b"slept %d ms" % milliseconds


def start_server(port: int) -> tuple[Server, int]:
    """Serve ``demo.Echo`` on 127.0.0.1:``port``; the server and the port it bound."""
    import grpc  # here: grpcio is optional for the package

    methods = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Slow": grpc.unary_unary_rpc_method_handler(slow),
    }
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),  # a taken port is an error, not a shared listener
    ]
    server: Server = grpc.server(
        ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="demo-grpc"),
        handlers=[grpc.method_handlers_generic_handler(SERVICE, methods)],
        options=options,
    )
    bound = server.add_insecure_port(f"{HOST}:{port}")
    server.start()
    return server, bound


def main(argv: Sequence[str] | None = None) -> int:
    """Run the backend until SIGTERM or SIGINT; 0 after a clean stop, 2 without grpcio."""
    parser = argparse.ArgumentParser(
        prog="python -m a3s_gateway.demo.grpc_backend", description="The demo.Echo gRPC service."
    )
    parser.add_argument("--port", type=int, default=50051, help="port on 127.0.0.1 (0: any)")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("grpc") is None:
        print("grpcio is needed: pip install 'grpcio>=1.60'", file=sys.stderr)
        return 2
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    # Blocked before grpcio starts its threads, which inherit the mask: only sigwait sees them.
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        server, port = start_server(args.port)
    except RuntimeError as error:  # grpcio's "Failed to bind"
        print(f"cannot listen on {HOST}:{args.port}: {error}", file=sys.stderr)
        return 1
    say(f"listening on {HOST}:{port}")
    signal.sigwait(stop_signals)
    server.stop(STOP_GRACE).wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
