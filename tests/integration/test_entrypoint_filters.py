"""Entrypoint connection filters on an ``http`` entrypoint (SPEC §3.7, §6.4, §8.16):
``tcp_allowed_ips`` and ``max_connections`` close a connection at accept, before any byte, and
count it; a reload changes the allowlist for the next connection. Driven by real curl and raw
sockets against an in-process gateway."""

from __future__ import annotations

import pytest
import trio

from tests.support.gateway import (
    LOCAL,
    config_text,
    curl,
    load,
    running_gateway,
    server_entry,
)
from tests.support.origin import Origin

pytestmark = pytest.mark.integration


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin("a")
    await nursery.start(server.serve)
    return server


def _config(origin: Origin, entrypoint: str) -> str:
    return config_text([server_entry(origin)], entrypoint=entrypoint)


async def test_allowed_peer_is_served(origin: Origin) -> None:
    text = _config(origin, '  tcp_allowed_ips = ["10.0.0.0/8", "127.0.0.0/8"]')
    async with running_gateway(text) as gateway:
        result = await curl(gateway.url("/hello"))
    assert result.code == 0, result.stderr
    assert result.response.status == 200
    assert origin.requests, "the allowed request reached the origin"


async def test_peer_outside_the_allowlist_is_closed_without_a_byte(origin: Origin) -> None:
    text = _config(origin, '  tcp_allowed_ips = ["10.0.0.0/8", "::1/128"]')
    async with running_gateway(text) as gateway:
        result = await curl(gateway.url("/hello"))
        # A raw client sees the connection end with no response bytes at all.
        stream = await trio.open_tcp_stream(LOCAL, gateway.port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            try:
                data = await stream.receive_some(1024)
            except trio.BrokenResourceError:  # reset: also no bytes
                data = b""
        ctx = gateway.gateway._context
        assert ctx is not None
        rejected = ctx.rejected_connections.get(("web", "ip_not_allowed"))
    assert result.code in {52, 56}, (result.code, result.stderr)  # empty reply / reset
    assert data == b""
    assert rejected == 2
    assert not origin.requests


async def test_reload_changes_the_allowlist_for_new_connections(origin: Origin) -> None:
    closed = _config(origin, '  tcp_allowed_ips = ["10.0.0.0/8"]')
    opened = _config(origin, '  tcp_allowed_ips = ["127.0.0.1/32"]')
    async with running_gateway(closed) as gateway:
        before = await curl(gateway.url("/"))
        await gateway.gateway.reload(load(opened))
        after = await curl(gateway.url("/"))
    assert before.code in {52, 56}
    assert after.code == 0, after.stderr
    assert after.response.status == 200


async def test_connections_over_max_connections_are_closed(origin: Origin) -> None:
    text = _config(origin, "  max_connections = 1")
    async with running_gateway(text) as gateway:
        first = await trio.open_tcp_stream(LOCAL, gateway.port)
        async with first:
            # The first connection is served (and stays open, keep-alive).
            await first.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            head = await first.receive_some(65536)
            assert head.startswith(b"HTTP/1.1 200")
            second = await curl(gateway.url("/"))
            ctx = gateway.gateway._context
            assert ctx is not None
            rejected = ctx.rejected_connections.get(("web", "max_connections"))
        # Once the first connection has gone, a new one is served again.
        served = await _eventually_served(gateway.url("/"))
    assert second.code in {52, 56}, (second.code, second.stderr)
    assert rejected == 1
    assert served


async def _eventually_served(url: str) -> bool:
    """The gateway notices a closed connection asynchronously: retry a few times, each
    attempt waiting on the server's own handling (no fixed sleep decides the outcome)."""
    for _ in range(50):
        result = await curl(url)
        if result.code == 0 and result.response.status == 200:
            return True
        await trio.sleep(0.02)
    return False
