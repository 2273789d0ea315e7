"""Dialling backends on 127.0.0.1 and classifying connect failures (SPEC §5.5, §7.8); TLS
backends and their shared contexts: tests/upstream/test_dialer_tls.py."""

from __future__ import annotations

import errno
import socket

import pytest
import trio

from a3s_gateway.streams import RawSocketStream
from a3s_gateway.upstream.connect_errors import CONNECT_REASONS, ConnectFailed
from a3s_gateway.upstream.dialer import connect_reason, dial
from a3s_gateway.upstream.peer import Peer


async def test_dial_connects_with_nodelay() -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        stream = await dial(Peer("http", "127.0.0.1", port))
        async with stream, await listener.accept() as server_end:
            assert isinstance(stream, RawSocketStream)
            assert stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            await stream.send_all(b"ping")
            assert await server_end.receive_some() == b"ping"
            await server_end.send_all(b"pong")
            assert await stream.receive_some() == b"pong"


async def test_closed_port_is_refused() -> None:
    probe = trio.socket.socket()
    await probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    with pytest.raises(ConnectFailed) as caught:
        await dial(Peer("http", "127.0.0.1", port))
    assert caught.value.reason == "refused"
    assert isinstance(caught.value.__cause__, OSError)
    assert str(caught.value) == "connect failed: refused"


def all_attempts_failed(*errors: OSError) -> OSError:
    """The shape ``trio.open_tcp_stream`` raises when every address failed."""
    error = OSError("all attempts to connect to x:1 failed")
    error.__cause__ = ExceptionGroup("all failed", list(errors))
    return error


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (socket.gaierror(socket.EAI_NONAME, "unknown"), "resolve"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), "refused"),
        (ConnectionResetError(errno.ECONNRESET, "reset"), "reset"),
        (ConnectionAbortedError(errno.ECONNABORTED, "aborted"), "reset"),
        (TimeoutError(errno.ETIMEDOUT, "timed out"), "timeout"),
        (OSError(errno.ENETUNREACH, "network unreachable"), "unreachable"),
        (OSError(errno.EHOSTUNREACH, "no route"), "unreachable"),
        (OSError(errno.EACCES, "denied"), "error"),
        (OSError("no errno"), "error"),
        (all_attempts_failed(ConnectionRefusedError(), ConnectionRefusedError()), "refused"),
        (all_attempts_failed(OSError("odd"), OSError(errno.EHOSTUNREACH, "x")), "unreachable"),
        (all_attempts_failed(OSError("odd")), "error"),
    ],
)
def test_connect_reason(error: OSError, reason: str) -> None:
    assert connect_reason(error) == reason
    assert reason in CONNECT_REASONS
