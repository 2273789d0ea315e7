"""PROXY protocol v1 and v2 through the real CLI (issue #20; SPEC §3.7 ``proxy_protocol``, §6.1).

The test acts as the load balancer in front of ``python -m a3s_gateway run``: it writes headers
made by ``encode_v1``/``encode_v2`` (``protocols/proxy_protocol.py``) on connections from
127.0.0.1, which the config trusts or not. Behind the gateway are an in-process TCP echo backend
(``tests/support/tcp_peers.py``) and an HTTP origin that records request headers
(``tests/support/origin.py``). Covered: the source a trusted header names is what
``tcp_allowed_ips`` checks, what the access log shows as ``client_ip`` and, on an http
entrypoint, what ``X-Forwarded-For`` carries; the header is never relayed; a malformed,
truncated or stalled header from a trusted peer closes the connection without a byte (counted
``proxy_header``); an untrusted peer's PROXY-looking bytes are never interpreted: relayed as
they are on a tcp entrypoint, plain (bad) HTTP on an http one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import pytest
import trio

from a3s_gateway.protocols.proxy_protocol import encode_v1, encode_v2
from tests.support.gateway import RawClient, free_port
from tests.support.origin import Origin
from tests.support.tcp_peers import (
    EchoBackend,
    PlainClient,
    cli_gateway,
    closed_at_once,
    echo_once,
    entrypoint,
    read_until,
    service,
    tcp_router,
)

pytestmark = pytest.mark.integration

#: The PROXY header deadline (``timeouts.handshake``) in these tests.
HANDSHAKE: Final = 1.0
TIMEOUTS: Final = f'timeouts {{\n    handshake = "{HANDSHAKE}s"\n    idle = "10s"\n  }}'
TRUST_LOCAL: Final = 'proxy_protocol {\n    trusted_ips = ["127.0.0.1/32"]\n  }'
TRUST_OTHER: Final = 'proxy_protocol {\n    trusted_ips = ["10.9.9.9/32"]\n  }'
#: The destination the load balancer reports (the gateway does not use it).
FRONT: Final = ("127.0.0.1", 443)
FRONT6: Final = ("::1", 443)
REQUEST: Final = b"GET /who HTTP/1.1\r\nHost: proxied.test\r\nConnection: close\r\n\r\n"


@pytest.fixture
async def echo(nursery: trio.Nursery) -> EchoBackend:
    backend = EchoBackend("echo")
    await nursery.start(backend.serve)
    return backend


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("site")
    await nursery.start(server.serve)
    return server


def tcp_part(echo: EchoBackend, port: int, *lines: str) -> str:
    """Entrypoint ``tcp`` (with ``lines``) and a catch-all to ``echo``."""
    return (
        entrypoint("tcp", port, TIMEOUTS, *lines)
        + service("echo", echo.url)
        + tcp_router("all", "HostSNI(`*`)", "echo", 'entrypoints = ["tcp"]')
    )


def http_part(origin: Origin, port: int, *lines: str) -> str:
    """Entrypoint ``web`` (http, with ``lines``) and a router to ``origin``."""
    return (
        entrypoint("web", port, TIMEOUTS, *lines, protocol="http")
        + f'services "site" {{\n  load_balancer {{\n'
        f'    servers = [{{ url = "http://127.0.0.1:{origin.port}" }}]\n  }}\n}}\n'
        + 'routers "site" {\n  rule = "PathPrefix(`/`)"\n  service = "site"\n'
        '  entrypoints = ["web"]\n}\n'
    )


async def http_exchange(port: int, data: bytes) -> int | None:
    """Send ``data`` (a PROXY header and a request, say) on a fresh connection; the status of
    the answer, None if the gateway closed without one."""
    client = await RawClient.connect(port)
    try:
        await client.send(data)
        response = await client.response()
    finally:
        await client.aclose()
    return None if response is None else response.status


async def test_the_trusted_source_is_what_the_allowlist_checks_and_the_log_shows(
    echo: EchoBackend, tmp_path: Path
) -> None:
    port = free_port()
    allowed = 'tcp_allowed_ips = ["203.0.113.0/24", "2001:db8::/32"]'
    text = tcp_part(echo, port, TRUST_LOCAL, allowed)
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        admitted = (
            encode_v1(("203.0.113.7", 4000), FRONT) + b"over v1",
            encode_v2(("203.0.113.9", 4001), FRONT) + b"over v2",
            encode_v2(("2001:db8::5", 4002), FRONT6) + b"over v2, IPv6",
        )
        for data in admitted:
            payload = data[data.index(b"over") :]
            assert await echo_once(port, data) == payload + echo.trailer
        # The header is the gateway's: the backend gets only what follows it.
        assert [bytes(seen.data) for seen in echo.connections] == [
            b"over v1",
            b"over v2",
            b"over v2, IPv6",
        ]
        refused = (
            encode_v1(("198.51.100.5", 4003), FRONT) + b"not allowed",
            encode_v2(("198.51.100.6", 4004), FRONT) + b"not allowed",
            b"no header: the peer itself, 127.0.0.1, is not allowed",
            # Headers without addresses (v1 UNKNOWN, v2 LOCAL) keep the peer's own.
            encode_v1(None, None) + b"unknown source",
            encode_v2(None, None, local=True) + b"a health check",
        )
        for data in refused:
            assert await closed_at_once(port, data) == b""
        assert await gateway.rejected("tcp", "ip_not_allowed") == 5
        assert len(echo.connections) == 3
        lines = await gateway.log_lines(3)
    assert [line["client_ip"] for line in lines] == ["203.0.113.7", "203.0.113.9", "2001:db8::5"]
    assert [line["request_bytes"] for line in lines] == [7, 7, 13]


async def test_on_an_http_entrypoint_the_trusted_source_is_x_forwarded_for(
    origin: Origin, tmp_path: Path
) -> None:
    port = free_port()
    async with cli_gateway(tmp_path, http_part(origin, port, TRUST_LOCAL), free_port()) as gateway:
        sources = ("192.0.2.10", "198.51.100.20", "2001:db8::77")
        headers = (
            encode_v1((sources[0], 5555), FRONT),
            encode_v2((sources[1], 5556), FRONT),
            encode_v2((sources[2], 5557), FRONT6),
        )
        for header in headers:
            assert await http_exchange(port, header + REQUEST) == 200
        # A trusted peer may also send no header: then it is the client itself.
        assert await http_exchange(port, REQUEST) == 200
        lines = await gateway.log_lines(4)
    forwarded = [request.header(b"x-forwarded-for") for request in origin.requests]
    assert forwarded == [*(source.encode() for source in sources), b"127.0.0.1"]
    assert [line["client_ip"] for line in lines] == [*sources, "127.0.0.1"]


async def test_a_bad_header_from_a_trusted_peer_closes_the_connection(
    echo: EchoBackend, origin: Origin, tmp_path: Path
) -> None:
    tcp_port, web_port = free_port(), free_port()
    text = tcp_part(echo, tcp_port, TRUST_LOCAL) + http_part(origin, web_port, TRUST_LOCAL)
    bad_version = encode_v2(("203.0.113.1", 1), FRONT)
    bad_version = bad_version[:12] + b"\x31" + bad_version[13:]  # version nibble 3
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        # Malformed: an address that is none, a version 2 header of version 3.
        assert await closed_at_once(tcp_port, b"PROXY TCP4 999.0.0.1 127.0.0.1 1 2\r\n") == b""
        assert await closed_at_once(tcp_port, bad_version + b"data") == b""
        # Cut short by the peer's EOF.
        client = await PlainClient.connect(tcp_port)
        try:
            assert await client.send(b"PROXY TCP4 203.0.113.1")
            assert await client.half_close_and_read() == b""
        finally:
            await client.aclose()
        # Stalled: closed at the handshake deadline.
        began = trio.current_time()
        client = await PlainClient.connect(tcp_port)
        try:
            assert await client.send(b"PROXY TCP4 ")
            assert await read_until(client.stream, lambda _: False) == b""
        finally:
            await client.aclose()
        assert HANDSHAKE - 0.25 <= trio.current_time() - began <= HANDSHAKE + 5
        assert await gateway.rejected("tcp", "proxy_header") == 4
        # No header at all is fine: the bytes are the application's.
        assert await echo_once(tcp_port, b"plain bytes") == b"plain bytes" + echo.trailer
        assert len(echo.connections) == 1

        # On an http entrypoint too: closed without an answer, never an HTTP error.
        bad_port = b"PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n"
        assert await closed_at_once(web_port, bad_port + REQUEST) == b""
        assert await gateway.rejected("web", "proxy_header") == 1
        assert origin.requests == []


async def test_an_untrusted_peers_proxy_bytes_are_never_interpreted(
    echo: EchoBackend, origin: Origin, tmp_path: Path
) -> None:
    tcp_port, web_port = free_port(), free_port()
    text = tcp_part(echo, tcp_port, TRUST_OTHER) + http_part(origin, web_port, TRUST_OTHER)
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        # On a tcp entrypoint the backend receives the header's bytes as data.
        v1 = encode_v1(("203.0.113.7", 4000), FRONT) + b"after v1"
        v2 = encode_v2(("203.0.113.9", 4001), FRONT) + b"after v2"
        for data in (v1, v2):
            assert await echo_once(tcp_port, data) == data + echo.trailer
        assert [bytes(seen.data) for seen in echo.connections] == [v1, v2]
        # On an http entrypoint a PROXY line is a bad request line.
        assert await http_exchange(web_port, encode_v1(("203.0.113.7", 1), FRONT) + REQUEST) == 400
        assert origin.requests == []
        assert await gateway.rejected("tcp", "proxy_header") == 0
        lines = await gateway.log_lines(3)
    tcp_lines = [line for line in lines if line["type"] == "tcp"]
    assert [line["client_ip"] for line in tcp_lines] == ["127.0.0.1", "127.0.0.1"]
    assert [line["request_bytes"] for line in tcp_lines] == [len(v1), len(v2)]
