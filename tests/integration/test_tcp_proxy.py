"""Plain TCP proxying through the real CLI (issue #20; SPEC §6.1, §6.3, §6.4, §3.7).

``python -m a3s_gateway run`` with a ``tcp`` entrypoint in front of in-process echo backends
(``tests/support/tcp_peers.py``) that answer half-close: they echo until the client's EOF, then
write ``<bye:NAME>`` and shut down writing. Covered: the catch-all relays both ways and keeps
relaying after the client half-closes (and after the backend half-closes first); one access-log
line per connection (type ``tcp``, bytes each way) and the ``a3s_tcp_*`` counts; the listener's
log line; the idle timeout; the entrypoint's ``max_connections`` and ``tcp_allowed_ips`` and
the ``tcp-filter`` middleware shared by two routers (closed without a byte, counted in
``a3s_connections_rejected_total``); ``no_route``; connect attempts past an unreachable backend;
several MiB each way. Real sockets, real clock; every wait is bounded, conditions are polled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.support.gateway import CLIENT_WAIT, free_port
from tests.support.tcp_peers import (
    EchoBackend,
    PlainClient,
    cli_gateway,
    closed_at_once,
    echo_once,
    entrypoint,
    metric_sum,
    read_until,
    service,
    tcp_router,
)

pytestmark = pytest.mark.integration

MIB: Final = 1024 * 1024
#: An idle bound that does not interfere with the test's own steps.
IDLE: Final = 'timeouts {\n    idle = "10s"\n  }'


@pytest.fixture
async def echo(nursery: trio.Nursery) -> EchoBackend:
    backend = EchoBackend("one")
    await nursery.start(backend.serve)
    return backend


def catch_all(backend: EchoBackend, *lines: str, port: int) -> str:
    """Entrypoint ``tcp`` (with ``lines``) → router ``all`` (``HostSNI(`*`)``) → ``backend``."""
    return (
        entrypoint("tcp", port, *lines)
        + service("echo", backend.url)
        + tcp_router("all", "HostSNI(`*`)", "echo")
    )


async def test_half_close_echo_and_one_access_log_line_per_connection(
    echo: EchoBackend, tmp_path: Path
) -> None:
    port = free_port()
    async with cli_gateway(tmp_path, catch_all(echo, IDLE, port=port), free_port()) as gateway:
        # SPEC §2.6: the listener's line names its protocol.
        listening = f"listening entrypoint=tcp address=127.0.0.1:{port} protocol=tcp tls=no"
        assert any(line.endswith(listening) for line in gateway.process.lines)
        client = await PlainClient.connect(port)
        try:
            # Both directions move while the connection is open ...
            assert await client.send(b"hello")
            assert await client.receive_exactly(5) == b"hello"
            assert await client.send(b", world")
            assert await client.receive_exactly(7) == b", world"
            # ... and after the client's EOF the backend's answer still comes back.
            assert await client.half_close_and_read() == echo.trailer
        finally:
            await client.aclose()
        # A client that says nothing and half-closes gets the trailer alone.
        assert await echo_once(port, b"") == echo.trailer
        assert [seen.data for seen in echo.connections] == [b"hello, world", b""]
        assert all(seen.eof for seen in echo.connections)

        lines = await gateway.log_lines(2)
        metrics = await gateway.metrics()
    route = {"entrypoint": "tcp", "router": "all"}
    assert metric_sum(metrics, "a3s_tcp_connections_total", **route) == 2
    assert metric_sum(metrics, "a3s_tcp_connections_active", **route) == 0
    assert metric_sum(metrics, "a3s_tcp_bytes_total", **route, direction="in") == 12
    out = 12 + 2 * len(echo.trailer)
    assert metric_sum(metrics, "a3s_tcp_bytes_total", **route, direction="out") == out
    assert len(lines) == 2
    for line, sent in zip(lines, (12, 0), strict=True):
        assert line["type"] == "tcp"
        assert line["entrypoint"] == "tcp"
        assert line["router"] == "all"
        assert line["service"] == "echo"
        assert line["backend"] == echo.url
        assert line["client_ip"] == "127.0.0.1"
        assert line["request_bytes"] == sent
        assert line["response_bytes"] == sent + len(echo.trailer)
        assert line["error"] == ""
        assert line["attempts"] == 1


async def test_the_backend_half_closes_first_and_still_hears_the_client(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    speaker = EchoBackend("speaker", greeting=b"<hello:speaker>", speak_and_listen=True)
    await nursery.start(speaker.serve)
    port = free_port()
    async with cli_gateway(tmp_path, catch_all(speaker, IDLE, port=port), free_port()) as gateway:
        client = await PlainClient.connect(port)
        try:
            # The backend's EOF reaches the client as EOF after its greeting ...
            assert await read_until(client.stream, lambda _: False) == b"<hello:speaker>"
            # ... and the client's bytes still reach the backend, until the client's EOF.
            assert await client.send(b"still talking")
            assert await client.half_close_and_read() == b""
        finally:
            await client.aclose()
        await speaker.wait_for(lambda: speaker.connections[0].ended.is_set())
        [line] = await gateway.log_lines(1)
    assert speaker.connections[0].data == b"still talking"
    assert speaker.connections[0].eof
    assert line["request_bytes"] == len(b"still talking")
    assert line["response_bytes"] == len(b"<hello:speaker>")
    assert line["error"] == ""


async def test_an_idle_relay_is_closed_at_the_idle_timeout(
    echo: EchoBackend, tmp_path: Path
) -> None:
    port, idle = free_port(), 1.0
    text = catch_all(echo, f'timeouts {{\n    idle = "{idle}s"\n  }}', port=port)
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        client = await PlainClient.connect(port)
        try:
            # (The last byte moved after this instant: the relay cannot end before + idle.)
            last_sent = trio.current_time()
            assert await client.send(b"ping")
            assert await client.receive_exactly(4) == b"ping"
            # Nothing moves: the gateway ends the relay; the client sees the end, no byte.
            assert await read_until(client.stream, lambda _: False) == b""
            waited = trio.current_time() - last_sent
        finally:
            await client.aclose()
        assert idle - 0.05 <= waited <= idle + 5, waited
        await echo.wait_for(lambda: echo.connections[0].ended.is_set())
        [line] = await gateway.log_lines(1)
    assert line["error"] == "idle_timeout"
    assert line["request_bytes"] == line["response_bytes"] == 4


async def test_max_connections_closes_the_second_connection_without_a_byte(
    echo: EchoBackend, tmp_path: Path
) -> None:
    port = free_port()
    text = catch_all(echo, IDLE, "max_connections = 1", port=port)
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        first = await PlainClient.connect(port)
        try:
            assert await first.send(b"first")
            assert await first.receive_exactly(5) == b"first"
            assert await closed_at_once(port) == b""
            assert await gateway.rejected("tcp", "max_connections") == 1
            assert len(echo.connections) == 1
            assert await first.half_close_and_read() == echo.trailer
        finally:
            await first.aclose()
        # The count is given back when the connection ends: a new one is served.
        await gateway.wait_idle("tcp")
        assert await echo_once(port, b"third") == b"third" + echo.trailer
        assert await gateway.rejected("tcp", "max_connections") == 1


async def test_tcp_filter_limit_is_shared_by_two_routers_and_its_allowlist_applies(
    echo: EchoBackend, tmp_path: Path
) -> None:
    left, right, closed = free_port(), free_port(), free_port()
    text = (
        entrypoint("left", left, IDLE)
        + entrypoint("right", right, IDLE)
        + service("echo", echo.url)
        + tcp_router(
            "r1", "HostSNI(`*`)", "echo", 'entrypoints = ["left"]', 'middlewares = ["one"]'
        )
        + tcp_router(
            "r2", "HostSNI(`*`)", "echo", 'entrypoints = ["right"]', 'middlewares = ["one"]'
        )
        + entrypoint("closed", closed, IDLE)
        + tcp_router(
            "r3", "HostSNI(`*`)", "echo", 'entrypoints = ["closed"]', 'middlewares = ["far"]'
        )
        + 'middlewares "one" {\n  type = "tcp-filter"\n  max_connections = 1\n}\n'
        + 'middlewares "far" {\n  type = "tcp-filter"\n  allowed_ips = ["10.0.0.0/8"]\n}\n'
    )
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        holder = await PlainClient.connect(left)
        try:
            assert await holder.send(b"held")
            assert await holder.receive_exactly(4) == b"held"
            # The other router's connection finds the shared count taken.
            assert await closed_at_once(right) == b""
            assert await closed_at_once(left) == b""
            assert await gateway.rejected("right", "tcp_filter") == 1
            assert await gateway.rejected("left", "tcp_filter") == 1
            assert len(echo.connections) == 1
        finally:
            await holder.aclose()
        await gateway.wait_idle("left")
        assert await echo_once(right, b"now") == b"now" + echo.trailer
        assert await gateway.rejected("right", "tcp_filter") == 1
        # The middleware's allowlist, after routing: 127.0.0.1 is not in it.
        assert await closed_at_once(closed, b"let me in") == b""
        assert await gateway.rejected("closed", "tcp_filter") == 1
        assert len(echo.connections) == 2


async def test_an_outside_client_and_an_unrouted_one_are_closed_at_once(
    echo: EchoBackend, tmp_path: Path
) -> None:
    guarded, sni_only = free_port(), free_port()
    text = (
        entrypoint("guarded", guarded, IDLE, 'tcp_allowed_ips = ["10.0.0.0/8", "::1/128"]')
        + entrypoint("sni_only", sni_only, 'timeouts {\n    peek = "5s"\n  }')
        + service("echo", echo.url)
        + tcp_router("all", "HostSNI(`*`)", "echo", 'entrypoints = ["guarded"]')
        + tcp_router("sni", "HostSNI(`a.example.test`)", "echo", 'entrypoints = ["sni_only"]')
    )
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        # tcp_allowed_ips without 127.0.0.1: closed at accept, before any byte is read.
        started = trio.current_time()
        assert await closed_at_once(guarded) == b""
        assert trio.current_time() - started < 2.5  # at once: no peek, no timeout
        assert await closed_at_once(guarded, b"data") == b""
        assert await gateway.rejected("guarded", "ip_not_allowed") == 2
        # Only an SNI router and a plaintext client: not TLS at the first byte, so the peek
        # ends at once with no SNI, which no router matches.
        started = trio.current_time()
        assert await closed_at_once(sni_only, b"hello\n") == b""
        assert trio.current_time() - started < 2.5  # well before the peek bound
        assert await gateway.rejected("sni_only", "no_route") == 1
        assert echo.connections == []


async def test_connect_attempts_pass_an_unreachable_backend(
    echo: EchoBackend, tmp_path: Path
) -> None:
    port, dead = free_port(), free_port()
    dead_url = f"tcp://127.0.0.1:{dead}"
    text = (
        entrypoint("tcp", port, IDLE)
        + service("echo", dead_url, echo.url, extra='    connect_timeout = "2s"\n')
        + tcp_router("all", "HostSNI(`*`)", "echo")
    )
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        for turn in range(4):
            payload = f"turn {turn}".encode()
            assert await echo_once(port, payload) == payload + echo.trailer
        lines = await gateway.log_lines(4)
    assert len(echo.connections) == 4
    assert [line["backend"] for line in lines] == [echo.url] * 4
    assert all(line["error"] == "" for line in lines)
    # Round-robin put the unreachable server first for at least one of them.
    assert any(line["attempts"] == 2 for line in lines), lines


async def test_several_mib_each_way_arrive_intact(echo: EchoBackend, tmp_path: Path) -> None:
    port, size = free_port(), 4 * MIB
    payload = hashlib.shake_256(b"tcp relay").digest(size)
    async with cli_gateway(tmp_path, catch_all(echo, IDLE, port=port), free_port()) as gateway:
        client = await PlainClient.connect(port)
        received = bytearray()
        try:
            with trio.fail_after(CLIENT_WAIT):
                async with trio.open_nursery() as nursery:

                    async def send_then_half_close() -> None:
                        for offset in range(0, size, 100_000):
                            assert await client.send(payload[offset : offset + 100_000])
                        await client.stream.send_eof()

                    nursery.start_soon(send_then_half_close)
                    received += await read_until(client.stream, lambda _: False)
        finally:
            await client.aclose()
        [line] = await gateway.log_lines(1)
    assert len(received) == size + len(echo.trailer)
    assert hashlib.sha256(received[:size]).digest() == hashlib.sha256(payload).digest()
    assert received[size:] == echo.trailer
    assert echo.connections[0].total == size
    assert line["request_bytes"] == size
    assert line["response_bytes"] == size + len(echo.trailer)
