"""TCP relays and UDP sessions across a drain and a reload, in-process (``Gateway``).

The drain stops accepting at once, lets an open relay run to its end within the grace and cuts
one that outlives it; a reload that removes the entrypoint keeps its relays within the grace;
a reload that points the router elsewhere leaves open relays alone and sends new connections to
the new backend.
"""

from __future__ import annotations

import contextlib
import json
import socket
from typing import TYPE_CHECKING, Final

import trio

from a3s_gateway.app import Gateway
from tests.support.gateway import load, wait_refused

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

BOUND: Final = 15.0


async def echo_backend(listener: trio.SocketListener, tag: bytes) -> None:
    """Echo each connection with ``tag`` in front of every read, until the client's EOF."""

    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some(65536):
                    await stream.send_all(tag + data)
                await stream.send_eof()
            except trio.BrokenResourceError:
                return

    await trio.serve_listeners(one, [listener])


def config_text(backend: int, *, grace: int = 2, name: str = "db") -> str:
    return f"""
shutdown_timeout_secs = {grace}
entrypoints "{name}" {{
  address  = "127.0.0.1:0"
  protocol = "tcp"
}}
services "echo" {{
  load_balancer {{
    servers = [{{ url = "tcp://127.0.0.1:{backend}" }}]
  }}
}}
tcp_routers "echo" {{
  rule    = "HostSNI(`*`)"
  service = "echo"
}}
"""


async def roundtrip(stream: trio.SocketStream, data: bytes, expected: bytes) -> None:
    await stream.send_all(data)
    got = b""
    while len(got) < len(expected):
        more = await stream.receive_some(65536)
        assert more, f"EOF after {got!r}"
        got += more
    assert got == expected


async def refused(port: int) -> bool:
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


async def with_backends(
    test: Callable[[int, int], Awaitable[None]],
) -> None:
    listeners = [(await trio.open_tcp_listeners(0, host="127.0.0.1"))[0] for _ in range(2)]
    ports = [listener.socket.getsockname()[1] for listener in listeners]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(echo_backend, listeners[0], b"A")
        nursery.start_soon(echo_backend, listeners[1], b"B")
        await test(ports[0], ports[1])
        nursery.cancel_scope.cancel()


async def test_a_drain_lets_an_open_relay_finish_and_refuses_new_ones() -> None:
    async def test(backend: int, _: int) -> None:
        gateway = Gateway(load(config_text(backend, grace=5)))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            port = gateway.addresses()["db"][0][1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await roundtrip(client, b"one", b"Aone")
            nursery.start_soon(gateway.shutdown)
            await wait_refused(port)  # the listener closes first
            await roundtrip(client, b"two", b"Atwo")  # the relay goes on
            await client.send_eof()
            assert await client.receive_some(10) == b""  # the backend's EOF came through
            await client.aclose()
        # serve() returned well before the 5 s grace: the last relay had ended.

    with trio.fail_after(BOUND):
        start = trio.current_time()
        await with_backends(test)
        assert trio.current_time() - start < 4


async def test_a_relay_that_outlives_the_grace_is_cut() -> None:
    async def test(backend: int, _: int) -> None:
        gateway = Gateway(load(config_text(backend, grace=1)))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            port = gateway.addresses()["db"][0][1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await roundtrip(client, b"x", b"Ax")
            await gateway.shutdown()  # returns once the grace cut the relay
            with contextlib.suppress(trio.BrokenResourceError):  # a reset is a cut too
                assert await client.receive_some(10) == b""
            await client.aclose()

    with trio.fail_after(BOUND):
        await with_backends(test)


async def test_a_reload_sends_new_connections_to_the_new_backend_only() -> None:
    async def test(first: int, second: int) -> None:
        gateway = Gateway(load(config_text(first)))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            port = gateway.addresses()["db"][0][1]
            old = await trio.open_tcp_stream("127.0.0.1", port)
            await roundtrip(old, b"1", b"A1")
            await gateway.reload(load(config_text(second)))
            assert gateway.addresses()["db"][0][1] == port  # the same socket
            new = await trio.open_tcp_stream("127.0.0.1", port)
            await roundtrip(new, b"2", b"B2")
            await roundtrip(old, b"3", b"A3")  # the open relay is untouched
            for stream in (old, new):
                await stream.aclose()
            await gateway.shutdown()

    with trio.fail_after(BOUND):
        await with_backends(test)


async def test_a_reload_that_removes_the_entrypoint_keeps_its_relays_for_the_grace() -> None:
    async def test(backend: int, _: int) -> None:
        gateway = Gateway(load(config_text(backend, grace=5)))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            port = gateway.addresses()["db"][0][1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await roundtrip(client, b"1", b"A1")
            await gateway.reload(load(config_text(backend, name="other")))
            assert await refused(port)
            await roundtrip(client, b"2", b"A2")
            await client.aclose()
            await gateway.shutdown()

    with trio.fail_after(BOUND):
        await with_backends(test)


def test_udp_and_tcp_share_a_port_number() -> None:
    """A udp entrypoint may use a port number a TCP-based one uses (different protocols)."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    text = config_text(1).replace('address  = "127.0.0.1:0"', f'address  = "127.0.0.1:{port}"')
    text += f"""
entrypoints "dgram" {{
  address  = "127.0.0.1:{port}"
  protocol = "udp"
}}
"""
    assert load(text).entrypoints["dgram"].address.port == port


async def test_a_connection_is_traced_and_logged_once(tmp_path: Path) -> None:
    log = tmp_path / "access.log"

    async def test(backend: int, _: int) -> None:
        text = config_text(backend) + f'observability {{\n  access_log_path = "{log}"\n}}\n'
        gateway = Gateway(load(text))
        async with trio.open_nursery() as nursery:
            await nursery.start(gateway.serve)
            port = gateway.addresses()["db"][0][1]
            client = await trio.open_tcp_stream("127.0.0.1", port)
            await roundtrip(client, b"hi", b"Ahi")
            await client.send_eof()
            assert await client.receive_some(10) == b""
            await client.aclose()
            await gateway.shutdown()

    with trio.fail_after(BOUND):
        await with_backends(test)
    [line] = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["type"] == "tcp"
    assert (line["request_bytes"], line["response_bytes"]) == (2, 3)
    assert len(line["trace_id"]) == 32
    assert len(line["span_id"]) == 16
