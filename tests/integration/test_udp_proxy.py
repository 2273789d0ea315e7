"""UDP proxying through the real CLI (``python -m a3s_gateway run``) with real UDP peers.

Two echo backends answer each datagram with their name in front; clients are plain UDP
sockets. Covered: several clients, each keeping its backend for its session while the sessions
share the two backends; expiry (``udp_session_timeout_secs``) and re-creation on another
backend; an unreachable upstream (ICMP port unreachable) is a passive-health error and the
client's next datagram gets a new session elsewhere; the datagram sizes; the access-log line
per session and the ``a3s_udp_*`` metrics; IPv6.
"""

from __future__ import annotations

import json
import signal
import socket
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Final

import pytest
import trio

from tests.support.cli import RunningGateway, start_gateway
from tests.support.gateway import free_port

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.integration

BOUND: Final = 20.0
#: How long a client waits for one answer before sending again (UDP may drop).
ANSWER_WAIT: Final = 1.0


#: The sockets the running test opened (closed after it).
_OPEN: list[trio.socket.SocketType] = []


@pytest.fixture(autouse=True)
async def _close_sockets() -> AsyncIterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


class EchoBackend:
    """A UDP echo that answers ``<name>:`` + the datagram, and counts what it got."""

    def __init__(self, name: str, family: int = socket.AF_INET) -> None:
        self.name = name.encode()
        self.sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        _OPEN.append(self.sock)
        self.received = 0
        self.peers: set[object] = set()

    async def bind(self, host: str) -> int:
        await self.sock.bind((host, 0))
        return int(self.sock.getsockname()[1])

    async def serve(self) -> None:
        while True:
            data, peer = await self.sock.recvfrom(70000)
            self.received += 1
            self.peers.add(peer)
            await self.sock.sendto(self.name + b":" + data, peer)


class Client:
    """One UDP client socket talking to the gateway."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        _OPEN.append(self.sock)
        self.target = (host, port)

    async def ask(self, data: bytes) -> bytes:
        """Send ``data`` until an answer arrives; the answer."""
        while True:
            await self.sock.sendto(data, self.target)
            with trio.move_on_after(ANSWER_WAIT):
                answer, _ = await self.sock.recvfrom(70000)
                return answer

    def close(self) -> None:
        self.sock.close()


def config_text(
    port: int,
    backends: list[str],
    *,
    log: Path,
    host: str = "127.0.0.1",
    timeout: int = 30,
    admin: int,
) -> str:
    shown = f"[{host}]" if ":" in host else host
    servers = ", ".join(f'{{ url = "udp://{b}" }}' for b in backends)
    return f"""
shutdown_timeout_secs = 1
entrypoints "dns" {{
  address                  = "{shown}:{port}"
  protocol                 = "udp"
  udp_session_timeout_secs = {timeout}
}}
services "echo" {{
  load_balancer {{
    servers = [{servers}]
    passive_health {{
      error_threshold = 1
      recovery_time   = "30s"
    }}
  }}
}}
udp_routers "echo" {{
  service     = "echo"
  entrypoints = ["dns"]
}}
management {{
  address = "127.0.0.1:{admin}"
}}
observability {{
  access_log_path = "{log}"
}}
"""


@asynccontextmanager
async def gateway_with(tmp_path: Path, text: str) -> AsyncIterator[RunningGateway]:
    config = tmp_path / "gateway.hcl"
    config.write_text(text)
    gateway = await start_gateway(str(config))
    try:
        with trio.fail_after(BOUND):
            await gateway.wait_for_line("gateway running")
        yield gateway
    finally:
        if gateway.process.returncode is None:
            gateway.process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await gateway.process.wait()
        if gateway.process.returncode is None:
            gateway.process.kill()
        with trio.CancelScope(shield=True):
            await gateway.process.wait()


async def metrics(admin: int) -> str:
    stream = await trio.open_tcp_stream("127.0.0.1", admin)
    async with stream:
        await stream.send_all(
            b"GET /api/gateway/metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        chunks = []
        while data := await stream.receive_some(65536):
            chunks.append(data)
    return b"".join(chunks).decode()


def value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def ended_sessions(log: Path, count: int) -> None:
    """Poll the access log (pacing: a file has no event to wait on) until ``count`` UDP
    sessions have ended; the caller bounds the wait."""
    for _ in range(1000):
        if sum(line["type"] == "udp" for line in access_lines(log)) >= count:
            return
        await trio.sleep(0.05)


def access_lines(log: Path) -> list[dict[str, object]]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


async def test_clients_share_two_backends_and_each_keeps_its_own(tmp_path: Path) -> None:
    a, b = EchoBackend("a"), EchoBackend("b")
    ports = [await a.bind("127.0.0.1"), await b.bind("127.0.0.1")]
    port, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    text = config_text(port, [f"127.0.0.1:{p}" for p in ports], log=log, admin=admin)
    clients = [Client(port) for _ in range(4)]
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.serve)
            nursery.start_soon(b.serve)
            async with gateway_with(tmp_path, text):
                first = [await client.ask(b"hello %d" % i) for i, client in enumerate(clients)]
                names = [answer.split(b":", 1)[0] for answer in first]
                assert sorted(names) == [b"a", b"a", b"b", b"b"]  # round robin over sessions
                for i, client in enumerate(clients):
                    for n in range(3):
                        answer = await client.ask(b"again %d" % n)
                        assert answer == names[i] + b":again %d" % n  # the same backend
                # Each backend sees one gateway socket per session, not one per datagram.
                assert len(a.peers) + len(b.peers) == 4
                scraped = await metrics(admin)
                assert value(scraped, 'a3s_udp_sessions_active{entrypoint="dns"}') == 4
                inbound = 'a3s_udp_datagrams_total{direction="in",entrypoint="dns"}'
                assert value(scraped, inbound) >= 16
            nursery.cancel_scope.cancel()
    for client in clients:
        client.close()
    lines = [line for line in access_lines(log) if line["type"] == "udp"]
    assert len(lines) == 4  # one per session, written when the drain's grace ended them
    assert {line["error"] for line in lines} == {"shutdown"}
    assert all(line["entrypoint"] == "dns" and line["router"] == "echo" for line in lines)
    assert sum(int(str(line["request_bytes"])) for line in lines) > 0


async def test_an_expired_session_is_created_again_on_the_next_backend(tmp_path: Path) -> None:
    a, b = EchoBackend("a"), EchoBackend("b")
    ports = [await a.bind("127.0.0.1"), await b.bind("127.0.0.1")]
    port, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    text = config_text(port, [f"127.0.0.1:{p}" for p in ports], log=log, timeout=1, admin=admin)
    client = Client(port)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.serve)
            nursery.start_soon(b.serve)
            async with gateway_with(tmp_path, text):
                first = (await client.ask(b"one")).split(b":", 1)[0]
                # Wait for the session's end: its access-log line is written then.
                await ended_sessions(log, 1)
                [ended] = access_lines(log)
                assert ended["error"] == "idle_timeout"
                second = (await client.ask(b"two")).split(b":", 1)[0]
                assert {first, second} == {b"a", b"b"}  # a new session, the next backend
                scraped = await metrics(admin)
                assert value(scraped, 'a3s_udp_sessions_total{entrypoint="dns"}') == 2
            nursery.cancel_scope.cancel()
    client.close()


async def test_an_unreachable_upstream_is_ejected_and_the_client_moves(tmp_path: Path) -> None:
    good = EchoBackend("good")
    good_port = await good.bind("127.0.0.1")
    closed = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await closed.bind(("127.0.0.1", 0))
    dead_port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: ICMP port unreachable
    port, admin = free_port(), free_port()
    log = tmp_path / "access.log"
    servers = [f"127.0.0.1:{dead_port}", f"127.0.0.1:{good_port}"]
    text = config_text(port, servers, log=log, admin=admin)
    client = Client(port)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(good.serve)
            async with gateway_with(tmp_path, text):
                # The first session may land on the dead backend; its refusal ends it and
                # ejects the backend, and the client's resend gets a session on the good one.
                for n in range(3):
                    assert await client.ask(b"x%d" % n) == b"good:x%d" % n
                scraped = await metrics(admin)
            nursery.cancel_scope.cancel()
    client.close()
    errors = [line["error"] for line in access_lines(log) if line["type"] == "udp"]
    if good.received < 4:  # the dead backend got the first session
        assert "upstream_refused" in errors
        ejected = f'a3s_backend_ejected{{backend="udp://127.0.0.1:{dead_port}",service="echo"}}'
        assert value(scraped, ejected) == 1


async def test_datagram_sizes_are_kept_and_never_merged(tmp_path: Path) -> None:
    a = EchoBackend("a")
    backend_port = await a.bind("127.0.0.1")
    port, admin = free_port(), free_port()
    text = config_text(port, [f"127.0.0.1:{backend_port}"], log=tmp_path / "a.log", admin=admin)
    client = Client(port)
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.serve)
            async with gateway_with(tmp_path, text):
                big = bytes(range(256)) * 250  # 64 000 bytes, under the IPv4 maximum
                assert await client.ask(big) == b"a:" + big
                for size in (1, 2, 3):
                    await client.sock.sendto(b"z" * size, client.target)
                sizes: list[int] = []
                while len(sizes) < 3:
                    answer, _ = await client.sock.recvfrom(70000)
                    sizes.append(len(answer) - 2)
                assert sorted(sizes) == [1, 2, 3]
            nursery.cancel_scope.cancel()
    client.close()


async def test_ipv6_listener_and_backend(tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    a = EchoBackend("six", socket.AF_INET6)
    backend_port = await a.bind("::1")
    port, admin = free_port(), free_port()
    text = config_text(
        port, [f"[::1]:{backend_port}"], log=tmp_path / "a.log", host="::1", admin=admin
    )
    client = Client(port, "::1")
    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.serve)
            async with gateway_with(tmp_path, text):
                assert await client.ask(b"v6") == b"six:v6"
            nursery.cancel_scope.cancel()
    client.close()
