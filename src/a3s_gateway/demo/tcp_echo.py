"""The demo's TCP echo backends (issue #20 item 6): what a client sends comes back, byte for
byte, over plain TCP (``serve_tcp_echo``) or inside TLS with the backend's own certificate for
``echo.localhost`` (``serve_tls_echo``; ``demo.certs`` makes it, ``demo.hcl`` routes to it by
SNI and the gateway relays its TLS unopened).

Ring 1: owns listening sockets on 127.0.0.1 and one task per client connection. Each read (at
most ``CHUNK`` bytes) is written back whole before the next read. Endings:

- plain TCP, half-close correct: on the client's EOF the backend sends its own EOF (write
  shutdown) after the last echoed byte, then closes; a client that shuts down writing reads
  everything back and then the end;
- TLS, which cannot half-close: the client's ``close_notify`` (or its EOF) ends the session and
  the backend answers with its own ``close_notify``.

Nurseries: ``trio.serve_listeners``' handler nursery holds one task per connection; the listener
and every connection end when the caller's nursery is cancelled. Deadlines: the TLS handshake
within ``HANDSHAKE_WAIT``; otherwise none (a relayed connection is bounded by the gateway's
idle timeout). Must not: bind anything but loopback, keep what it echoes, or let one client's
trouble stop a listener.
"""

from __future__ import annotations

import functools
import logging
import ssl
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.demo.exchange import HOST
from a3s_gateway.errors import StartError

if TYPE_CHECKING:
    from pathlib import Path

log: Final = logging.getLogger("a3s_gateway.demo")

#: The most one read takes (and so the most the backend holds at a time).
CHUNK: Final = 64 * 1024
#: Bound on a TLS client's handshake.
HANDSHAKE_WAIT: Final = 10.0


def tls_echo_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """The TLS echo backend's server context (reads the two files: call it off the event
    loop)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context


async def echo_until_eof(stream: trio.abc.Stream) -> int:
    """Write back every read until the peer's EOF; the number of bytes echoed."""
    echoed = 0
    while data := await stream.receive_some(CHUNK):
        await stream.send_all(data)
        echoed += len(data)
    return echoed


async def serve_tcp_echo(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
    """The plain TCP echo on a free loopback port, reported through ``task_status``, until
    cancelled. Raises ``StartError`` if it cannot listen."""
    listeners = await _listen("tcp-echo")
    task_status.started(_port(listeners))
    await trio.serve_listeners(_echo_tcp, listeners)


async def serve_tls_echo(
    context: ssl.SSLContext, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """The TLS echo with ``context`` (``tls_echo_context``) on a free loopback port, reported
    through ``task_status``, until cancelled. Raises ``StartError`` if it cannot listen."""
    listeners = await _listen("tls-echo")
    task_status.started(_port(listeners))
    await trio.serve_listeners(functools.partial(_echo_tls, context), listeners)


async def _listen(service: str) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(0, host=HOST)
    except OSError as error:
        raise StartError(f"demo backend {service}: cannot listen on {HOST}: {error}") from error


def _port(listeners: list[trio.SocketListener]) -> int:
    port = int(listeners[0].socket.getsockname()[1])
    log.debug("demo TCP backend listening on %s:%d", HOST, port)
    return port


async def _echo_tcp(stream: trio.SocketStream) -> None:
    """One plain connection: echo, then EOF for EOF (never raises for peer trouble)."""
    try:
        async with stream:
            echoed = await echo_until_eof(stream)
            await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
        log.debug("demo backend tcp-echo: a connection ended: %s", error)
    else:
        log.debug("demo backend tcp-echo: %d byte(s) echoed", echoed)


async def _echo_tls(context: ssl.SSLContext, stream: trio.SocketStream) -> None:
    """One TLS connection: handshake, echo, ``close_notify`` (never raises for peer trouble)."""
    tls = trio.SSLStream(stream, context, server_side=True)
    try:
        with trio.move_on_after(HANDSHAKE_WAIT) as waited:
            await tls.do_handshake()
        if waited.cancelled_caught:
            log.debug("demo backend tls-echo: no handshake within %g s", HANDSHAKE_WAIT)
            return
        echoed = await echo_until_eof(tls)
        await tls.aclose()  # sends close_notify
        log.debug("demo backend tls-echo: %d byte(s) echoed", echoed)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
        log.debug("demo backend tls-echo: a connection ended: %s", error)
    finally:
        await trio.aclose_forcefully(tls)  # (nothing when closed already)
