"""A demo backend's connection that stays quiet ends cleanly (demo/exchange.py)."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from a3s_gateway.demo.exchange import IDLE_TIMEOUT, Exchange


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


@pytest.mark.time_limit(IDLE_TIMEOUT + 30)  # trio's clock (autojump): no real wait
async def test_a_quiet_keep_alive_connection_ends_without_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server, client = _tcp_pair()
    with server, client:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(server))
        exchange = Exchange("echo", stream)
        started = trio.current_time()
        assert await exchange.read_request() is None  # it used to raise UnboundLocalError
        assert trio.current_time() - started >= IDLE_TIMEOUT
