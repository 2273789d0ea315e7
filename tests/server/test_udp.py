"""UDP proxying (SPEC §4.12, §6.5) on real loopback sockets: a ``UdpGroup`` in front of echo
backends, driven by UDP clients; IPv4 and IPv6.

Sessions per client, stickiness, the idle timeout refreshed either way, ICMP refusals as
passive-health errors, the drops and their reasons, the drain, reloads and retirement, sizes
at the protocol's limits, and one access-log record per session. Real clock (DESIGN.md §3.6:
no autojump with real sockets); every wait is bounded, and tests wait for observable state
(a counter, a record, a reply), never for a guessed delay.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import AsyncIterator, Callable

import pytest
import trio

from a3s_gateway.config.assemble import LoadOptions
from a3s_gateway.config.load import load_text
from a3s_gateway.errors import StartError
from a3s_gateway.observability.record import ExchangeRecord
from a3s_gateway.runtime.compile import RuntimeConfig, UdpEntrypointRuntime, compile_runtime
from a3s_gateway.server.server_context import ServerContext
from a3s_gateway.server.udp import UdpGroup, open_udp_sockets
from a3s_gateway.server.udp_session import BUFFER_SIZE, UdpSession
from a3s_gateway.services import Backend
from a3s_gateway.upstream.pool import UpstreamPool

pytestmark = pytest.mark.integration

NAME = "dns"
#: Bound on any single wait for something that should happen at once.
WAIT = 5.0
#: A session timeout short enough to watch sessions expire.
SHORT = 0.3
#: The largest UDP payloads (65 535 minus the IPv4 and UDP headers; minus the UDP header
#: over IPv6, whose length field excludes its own header).
MAX_V4 = 65507
MAX_V6 = 65527


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


needs_ipv6 = pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback")


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on (bound, then released): datagrams to it are refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def url(host: str, port: int) -> str:
    return f"udp://[{host}]:{port}" if ":" in host else f"udp://{host}:{port}"


def runtime(
    servers: list[str],
    *,
    timeout: float | None = None,
    max_sessions: int | None = None,
    strategy: str = "round-robin",
    balancer: str = "",
    host: str = "127.0.0.1",
    routed: bool = True,
) -> RuntimeConfig:
    """A compiled snapshot with the UDP entrypoint ``NAME`` (its router, when ``routed``, to
    the service ``echo`` over ``servers``). The availability check is off: it still refuses
    ``protocol = "udp"`` until the feature is announced."""
    address = f"[{host}]:0" if ":" in host else f"{host}:0"
    limit = f"udp_max_sessions = {max_sessions}" if max_sessions else ""
    listed = ", ".join(f'{{ url = "{server}" }}' for server in servers)
    text = (
        f'entrypoints "{NAME}" {{\n  address = "{address}"\n  protocol = "udp"\n  {limit}\n}}\n'
        f'services "echo" {{\n  load_balancer {{\n    strategy = "{strategy}"\n'
        f"    servers = [{listed}]\n    {balancer}\n  }}\n}}\n"
    )
    if routed:
        text += f'udp_routers "{NAME}" {{\n  service = "echo"\n  entrypoints = ["{NAME}"]\n}}\n'
    result = load_text(text, env={}, options=LoadOptions(refuse_unavailable=False))
    assert result.config is not None, result.problems
    compiled = compile_runtime(result.config, 1)
    entry = compiled.udp_entrypoints[NAME]
    if timeout is not None:
        entry = dataclasses.replace(entry, session_timeout=timeout)
    if not routed:
        assert entry.router is None
    return dataclasses.replace(compiled, udp_entrypoints={NAME: entry})


class Records:
    """The observer: the records of ended sessions, in order."""

    def __init__(self) -> None:
        self.ended: list[ExchangeRecord] = []

    def stream_ended(self, record: ExchangeRecord) -> None:
        self.ended.append(record)

    def finish(self, record: ExchangeRecord) -> None:
        raise AssertionError("no HTTP exchange here")

    def middleware(self, name: str, kind: str, outcome: str, seconds: float) -> None:
        raise AssertionError("no middleware here")

    def attempt(self, service: str, backend: str, status: int, seconds: float | None) -> None:
        raise AssertionError("no HTTP attempt here")


class Echo:
    """A UDP backend: answers each datagram to its sender, prefixed with ``tag`` (or not at
    all with ``reply=False``), and remembers who sent what."""

    def __init__(self, sock: trio.socket.SocketType, tag: bytes, *, reply: bool) -> None:
        self.sock = sock
        self.tag = tag
        self.reply = reply
        self.seen: list[tuple[tuple[object, ...], bytes]] = []

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return url(str(self.sock.getsockname()[0]), self.port)

    @property
    def senders(self) -> set[tuple[object, ...]]:
        """The distinct upstream addresses (one per session) it heard from."""
        return {address for address, _ in self.seen}

    async def serve(self) -> None:
        try:
            while True:
                data, address = await self.sock.recvfrom(BUFFER_SIZE)
                self.seen.append((address, data))
                if self.reply:
                    await self.sock.sendto(self.tag + data, address)
        except trio.ClosedResourceError:
            return

    async def push(self, sender: tuple[object, ...], data: bytes) -> None:
        """Send ``data`` to an upstream socket unasked (a backend that talks first)."""
        await self.sock.sendto(data, sender)


class Client:
    """A UDP client of the gateway."""

    def __init__(self, sock: trio.socket.SocketType, target: tuple[str, int]) -> None:
        self.sock = sock
        self.target = target

    async def send(self, data: bytes) -> None:
        await self.sock.sendto(data, self.target)

    async def receive(self) -> bytes:
        with trio.fail_after(WAIT):
            return await self.sock.recv(BUFFER_SIZE)

    async def ask(self, data: bytes) -> bytes:
        await self.send(data)
        return await self.receive()


@dataclasses.dataclass
class Gateway:
    group: UdpGroup
    ctx: ServerContext
    records: Records
    address: tuple[str, int]

    def dropped(self, reason: str) -> int:
        return self.ctx.streams.udp_dropped.get((NAME, reason), 0)

    @property
    def opened(self) -> int:
        return self.ctx.streams.udp_sessions_total.get(NAME, 0)

    @property
    def active(self) -> int:
        return self.ctx.streams.udp_sessions.get(NAME, 0)


class Lab:
    """Makes backends, clients and gateways, and closes every socket at the end."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.sockets: list[trio.socket.SocketType] = []
        self.groups: list[UdpGroup] = []

    async def _bound(self, host: str) -> trio.socket.SocketType:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_DGRAM)
        self.sockets.append(sock)
        await sock.bind((host, 0))
        return sock

    async def echo(self, host: str = "127.0.0.1", tag: bytes = b"", *, reply: bool = True) -> Echo:
        echo = Echo(await self._bound(host), tag, reply=reply)
        self.nursery.start_soon(echo.serve)
        return echo

    async def client(self, gateway: Gateway) -> Client:
        host, _ = gateway.address
        return Client(await self._bound(host), gateway.address)

    async def gateway(
        self, snapshot: RuntimeConfig, handlers: trio.Nursery | None = None
    ) -> Gateway:
        entry = snapshot.udp_entrypoints[NAME]
        sockets = await open_udp_sockets({NAME: entry})
        group = UdpGroup(NAME, (entry.host, entry.port), sockets[NAME])
        self.groups.append(group)
        ctx = ServerContext(snapshot, UpstreamPool())
        records = Records()
        ctx.observer = records
        group.start(self.nursery if handlers is None else handlers, ctx)
        return Gateway(group, ctx, records, group.bound()[0])

    def close(self) -> None:
        for group in self.groups:
            group.close()
        for sock in self.sockets:
            sock.close()


@pytest.fixture
async def lab(nursery: trio.Nursery) -> AsyncIterator[Lab]:
    made = Lab(nursery)
    try:
        yield made
    finally:
        made.close()


async def until(condition: Callable[[], bool]) -> None:
    """Wait, bounded, until ``condition()`` holds (state another task changes)."""
    with trio.fail_after(WAIT):
        while not condition():  # noqa: ASYNC110 -- the gateway's counters have no event
            await trio.sleep(0.005)


async def heard(echo: Echo, count: int) -> None:
    """Wait, bounded, until ``echo`` has received ``count`` datagrams."""
    await until(lambda: len(echo.seen) >= count)


def serving(group: UdpGroup) -> bool:
    """Whether ``group``'s loops run (a call, so that no earlier assertion narrows it)."""
    return group.serving


def backend(snapshot: RuntimeConfig, index: int) -> Backend:
    return snapshot.services["echo"].backends[index]


# --- relaying -------------------------------------------------------------------------------


async def test_each_client_gets_its_own_session_and_its_own_replies(lab: Lab) -> None:
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url]))
    clients = [await lab.client(gateway) for _ in range(3)]
    for round_ in range(2):
        for number, client in enumerate(clients):
            message = f"client {number} round {round_}".encode()
            assert await client.ask(message) == message
    assert gateway.group.session_count == 3
    assert gateway.opened == gateway.active == 3
    assert len(echo.senders) == 3  # one upstream socket per session
    streams = gateway.ctx.streams
    assert streams.udp_datagrams[(NAME, "in")] == streams.udp_datagrams[(NAME, "out")] == 6


@needs_ipv6
async def test_ipv6_listener_and_backends_of_either_family(lab: Lab) -> None:
    six = await lab.echo("::1", b"6:")
    four = await lab.echo("127.0.0.1", b"4:")
    gateway = await lab.gateway(runtime([six.url, four.url], host="::1"))
    assert gateway.address[0] == "::1"
    first, second = await lab.client(gateway), await lab.client(gateway)
    assert await first.ask(b"hello") == b"6:hello"
    assert await second.ask(b"hello") == b"4:hello"  # the upstream socket follows the backend
    assert str(next(iter(six.senders))[0]) == "::1"


async def test_round_robin_spreads_sessions_and_each_client_sticks_to_its_backend(
    lab: Lab,
) -> None:
    one, two = await lab.echo(tag=b"1:"), await lab.echo(tag=b"2:")
    gateway = await lab.gateway(runtime([one.url, two.url]))
    clients = [await lab.client(gateway) for _ in range(4)]
    tags: list[bytes] = []
    for client in clients:
        replies = {(await client.ask(b"x"))[:2] for _ in range(3)}
        assert len(replies) == 1  # every datagram of a session goes to the same backend
        tags.append(replies.pop())
    assert tags == [b"1:", b"2:", b"1:", b"2:"]
    assert len(one.senders) == len(two.senders) == 2


async def test_consistent_hash_keys_on_the_client_ip(lab: Lab) -> None:
    one, two = await lab.echo(tag=b"1:"), await lab.echo(tag=b"2:")
    gateway = await lab.gateway(runtime([one.url, two.url], strategy="consistent-hash"))
    tags = {(await (await lab.client(gateway)).ask(b"x"))[:2] for _ in range(4)}
    assert len(tags) == 1  # same IP, other ports: the same backend


async def test_a_name_is_resolved_for_the_session(lab: Lab) -> None:
    infos = await trio.socket.getaddrinfo("localhost", 0, type=socket.SOCK_DGRAM)
    first = str(infos[0][4][0])
    echo = await lab.echo(first)
    gateway = await lab.gateway(runtime([f"localhost:{echo.port}"]))
    client = await lab.client(gateway)
    assert await client.ask(b"one") == b"one"
    assert await client.ask(b"two") == b"two"
    assert len(echo.senders) == 1


async def test_the_largest_ipv4_datagram_goes_both_ways_unchanged(lab: Lab) -> None:
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url]))
    client = await lab.client(gateway)
    payload = bytes(range(256)) * (MAX_V4 // 256) + b"\xaa" * (MAX_V4 % 256)
    assert len(payload) == MAX_V4
    assert await client.ask(payload) == payload
    assert gateway.ctx.streams.udp_bytes[(NAME, "in")] == MAX_V4


@needs_ipv6
async def test_the_largest_ipv6_datagram_goes_both_ways_unchanged(lab: Lab) -> None:
    echo = await lab.echo("::1")
    gateway = await lab.gateway(runtime([echo.url], host="::1"))
    client = await lab.client(gateway)
    payload = b"\x00\xff" * (MAX_V6 // 2) + b"!"
    assert len(payload) == MAX_V6
    assert await client.ask(payload) == payload


async def test_datagrams_are_never_merged_or_split(lab: Lab) -> None:
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url]))
    client = await lab.client(gateway)
    sent = [b"a", b"b" * 3000, b"", b"cc"]
    for data in sent:
        await client.send(data)
    assert [await client.receive() for _ in sent] == sent
    assert [data for _, data in echo.seen] == sent


# --- the idle timeout -----------------------------------------------------------------------


async def test_an_idle_session_ends_and_the_next_datagram_opens_another(lab: Lab) -> None:
    echo = await lab.echo()
    snapshot = runtime([echo.url], timeout=SHORT)
    gateway = await lab.gateway(snapshot)
    client = await lab.client(gateway)
    assert await client.ask(b"first") == b"first"
    assert backend(snapshot, 0).in_flight == 1  # the lease, for the session's life
    await until(lambda: gateway.group.session_count == 0)
    assert gateway.active == 0
    assert backend(snapshot, 0).in_flight == 0
    [record] = gateway.records.ended
    assert record.error == "idle_timeout"
    assert record.duration >= SHORT
    assert await client.ask(b"again") == b"again"
    assert gateway.opened == 2
    assert len(echo.senders) == 2  # a new upstream socket


async def test_client_traffic_alone_keeps_a_session_open(lab: Lab) -> None:
    sink = await lab.echo(reply=False)
    gateway = await lab.gateway(runtime([sink.url], timeout=2 * SHORT))
    client = await lab.client(gateway)
    start = trio.current_time()
    sent = 0
    while trio.current_time() - start < 3 * SHORT:
        await client.send(b"ping")
        sent += 1
        await heard(sink, sent)
        await trio.sleep(SHORT / 4)  # the client's pace, not a synchronisation
    assert gateway.opened == 1
    assert gateway.group.session_count == 1
    await until(lambda: gateway.group.session_count == 0)
    assert [record.error for record in gateway.records.ended] == ["idle_timeout"]


async def test_backend_traffic_alone_keeps_a_session_open(lab: Lab) -> None:
    talker = await lab.echo(reply=False)
    gateway = await lab.gateway(runtime([talker.url], timeout=2 * SHORT))
    client = await lab.client(gateway)
    await client.send(b"subscribe")
    await heard(talker, 1)
    [(upstream, _)] = talker.seen
    start = trio.current_time()
    while trio.current_time() - start < 3 * SHORT:
        await talker.push(upstream, b"tick")
        assert await client.receive() == b"tick"
        await trio.sleep(SHORT / 4)  # the backend's pace
    assert gateway.opened == 1
    assert gateway.group.session_count == 1
    await until(lambda: gateway.group.session_count == 0)


# --- failures and drops ---------------------------------------------------------------------


async def test_an_icmp_refusal_is_a_passive_error_and_the_next_datagram_goes_elsewhere(
    lab: Lab,
) -> None:
    live = await lab.echo()
    dead = url("127.0.0.1", free_udp_port())
    snapshot = runtime([dead, live.url], balancer="passive_health {\n error_threshold = 1\n }")
    gateway = await lab.gateway(snapshot)
    client = await lab.client(gateway)
    await client.send(b"hello?")
    await until(lambda: len(gateway.records.ended) == 1)
    [record] = gateway.records.ended
    assert record.error == "upstream_refused"
    assert record.backend == dead
    assert backend(snapshot, 0).passive_ejected  # error_threshold 1: ejected
    assert backend(snapshot, 0).in_flight == 0
    assert gateway.group.session_count == 0
    assert await client.ask(b"hello?") == b"hello?"
    assert gateway.opened == 2


async def test_max_sessions_drops_new_clients_until_a_session_expires(lab: Lab) -> None:
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url], timeout=SHORT, max_sessions=2))
    first, second, third = [await lab.client(gateway) for _ in range(3)]
    assert await first.ask(b"1") == b"1"
    assert await second.ask(b"2") == b"2"
    await third.send(b"3")
    await until(lambda: gateway.dropped("max_sessions") == 1)
    assert gateway.group.session_count == 2
    assert await first.ask(b"1 again") == b"1 again"  # the sessions open still relay
    await until(lambda: gateway.group.session_count == 0)
    assert await third.ask(b"3") == b"3"


async def test_an_entrypoint_without_router_drops_and_counts(lab: Lab) -> None:
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url], routed=False))
    client = await lab.client(gateway)
    await client.send(b"anyone?")
    await client.send(b"anyone?")
    await until(lambda: gateway.dropped("no_router") == 2)
    assert gateway.opened == 0
    assert echo.seen == []


async def test_a_service_without_available_backend_drops_with_no_backend(lab: Lab) -> None:
    echo = await lab.echo()
    snapshot = runtime([echo.url])
    backend(snapshot, 0).active_healthy = False
    gateway = await lab.gateway(snapshot)
    await (await lab.client(gateway)).send(b"x")
    await until(lambda: gateway.dropped("no_backend") == 1)
    assert gateway.opened == 0


async def test_a_full_upstream_send_buffer_drops_the_datagram(lab: Lab) -> None:
    # A datagram socket pair whose far end never reads: its buffer fills, and the session's
    # send then drops instead of waiting.
    echo = await lab.echo()
    snapshot = runtime([echo.url])
    gateway = await lab.gateway(snapshot)
    near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    near.setblocking(False)
    try:
        while True:
            near.send(b"x" * 1024)
    except BlockingIOError:
        pass
    session = UdpSession(
        owner=gateway.group,
        ctx=gateway.ctx,
        downstream=near,
        table={},
        view=memoryview(bytearray(BUFFER_SIZE)),
        client=("127.0.0.1", 9),
        entrypoint=NAME,
        router=NAME,
        timeout=SHORT,
        runtime=snapshot,
        service=snapshot.services["echo"],
        backend=backend(snapshot, 0),
        upstream=near,
        now=trio.current_time(),
    )
    session.forward(memoryview(b"dropped"))
    assert gateway.dropped("send_buffer_full") == 1
    session.end("test")
    far.close()
    assert session.ended
    assert backend(snapshot, 0).in_flight == 0
    assert [record.error for record in gateway.records.ended] == ["test"]


async def test_at_the_limit_expired_sessions_are_purged_first(lab: Lab) -> None:
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url], max_sessions=1))
    first, second = await lab.client(gateway), await lab.client(gateway)
    assert await first.ask(b"1") == b"1"
    # The first session's idle time has passed, but its task has not noticed yet (it waits
    # until the deadline it set, 30 s away): the purge at the limit ends it.
    [open_session] = gateway.group.sessions()
    open_session.last -= open_session.timeout + 1.0
    assert await second.ask(b"2") == b"2"
    assert [record.error for record in gateway.records.ended] == ["idle_timeout"]
    assert gateway.group.session_count == 1
    assert gateway.dropped("max_sessions") == 0


async def test_an_unresolvable_backend_name_ends_the_session(lab: Lab) -> None:
    snapshot = runtime(["udp://no-such-backend.invalid:53"], balancer='connect_timeout = "2s"')
    gateway = await lab.gateway(snapshot)
    client = await lab.client(gateway)
    await client.send(b"one")
    await until(lambda: len(gateway.records.ended) == 1)
    assert gateway.records.ended[0].error == "resolve_failed"
    assert gateway.dropped("upstream_error") == 1  # the datagram held for the resolution
    assert backend(snapshot, 0).in_flight == 0


async def test_in_panic_sessions_are_opened_and_kept_on_unavailable_backends(lab: Lab) -> None:
    one, two = await lab.echo(tag=b"1:"), await lab.echo(tag=b"2:")
    snapshot = runtime([one.url, two.url], balancer="panic_threshold = 50")
    gateway = await lab.gateway(snapshot)
    client = await lab.client(gateway)
    assert await client.ask(b"x") == b"1:x"
    for index in (0, 1):
        backend(snapshot, index).active_healthy = False
    assert await client.ask(b"y") == b"1:y"  # kept: panic spreads over every backend
    assert await (await lab.client(gateway)).ask(b"z") == b"2:z"  # and opens sessions
    assert gateway.records.ended == []


# --- health and reloads ---------------------------------------------------------------------


async def test_a_session_leaves_a_backend_that_became_unavailable(lab: Lab) -> None:
    one, two = await lab.echo(tag=b"1:"), await lab.echo(tag=b"2:")
    snapshot = runtime([one.url, two.url])
    gateway = await lab.gateway(snapshot)
    client = await lab.client(gateway)
    assert await client.ask(b"x") == b"1:x"
    backend(snapshot, 0).active_healthy = False
    assert await client.ask(b"x") == b"2:x"
    assert [record.error for record in gateway.records.ended] == ["backend_unavailable"]
    assert (backend(snapshot, 0).in_flight, backend(snapshot, 1).in_flight) == (0, 1)


async def test_a_reload_keeping_the_backend_keeps_the_session(lab: Lab) -> None:
    one, two = await lab.echo(tag=b"1:"), await lab.echo(tag=b"2:")
    before = runtime([one.url, two.url])
    gateway = await lab.gateway(before)
    client = await lab.client(gateway)
    assert await client.ask(b"x") == b"1:x"
    after = runtime([two.url, one.url])  # new Backend objects, the same URLs
    gateway.ctx.runtime = after
    assert await client.ask(b"y") == b"1:y"
    assert len(one.senders) == 1  # the same upstream socket
    assert gateway.opened == 1
    assert backend(before, 0).in_flight == 0  # the lease moved to the new generation
    assert backend(after, 1).in_flight == 1


async def test_a_reload_removing_the_backend_moves_the_session(lab: Lab) -> None:
    one, two = await lab.echo(tag=b"1:"), await lab.echo(tag=b"2:")
    gateway = await lab.gateway(runtime([one.url, two.url]))
    client = await lab.client(gateway)
    assert await client.ask(b"x") == b"1:x"
    gateway.ctx.runtime = runtime([two.url])
    assert await client.ask(b"x") == b"2:x"
    assert [record.error for record in gateway.records.ended] == ["backend_removed"]


async def test_a_renamed_entrypoint_keeps_its_sockets_and_sessions(lab: Lab) -> None:
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url]))
    client = await lab.client(gateway)
    assert await client.ask(b"x") == b"x"
    renamed = gateway.ctx.runtime
    entry = dataclasses.replace(renamed.udp_entrypoints[NAME], name="dns2")
    gateway.ctx.runtime = dataclasses.replace(renamed, udp_entrypoints={"dns2": entry})
    gateway.group.name = "dns2"
    gateway.group.start(lab.nursery, gateway.ctx)
    assert await client.ask(b"y") == b"y"
    assert len(echo.senders) == 1
    assert gateway.group.session_count == 1
    assert gateway.group.bound()[0] == gateway.address


# --- drain, retirement, shutdown ------------------------------------------------------------


async def test_the_drain_keeps_sessions_refuses_new_ones_and_ends_with_the_last(lab: Lab) -> None:
    echo = await lab.echo()
    async with trio.open_nursery() as handlers:
        gateway = await lab.gateway(runtime([echo.url], timeout=SHORT), handlers)
        old = await lab.client(gateway)
        assert await old.ask(b"before") == b"before"
        gateway.ctx.drain.start()
        assert await old.ask(b"during") == b"during"  # the session still relays
        await (await lab.client(gateway)).send(b"new")
        await until(lambda: gateway.dropped("draining") == 1)
        assert serving(gateway.group)
        # The loops end once the session expires: the nursery closes without a cancel.
    assert gateway.group.session_count == 0
    assert not serving(gateway.group)
    assert [record.error for record in gateway.records.ended] == ["idle_timeout"]


async def test_a_drain_with_no_session_ends_the_loops_at_once(lab: Lab) -> None:
    echo = await lab.echo()
    async with trio.open_nursery() as handlers:
        gateway = await lab.gateway(runtime([echo.url]), handlers)
        gateway.ctx.drain.start()
    assert not serving(gateway.group)


async def test_a_group_started_during_the_drain_serves_nothing_new(lab: Lab) -> None:
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url]))
    gateway.ctx.drain.start()
    assert not serving(gateway.group)
    gateway.group.start(lab.nursery, gateway.ctx)
    assert not serving(gateway.group)


async def test_a_retired_group_cancels_its_sessions_at_the_deadline(lab: Lab) -> None:
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url]))
    client = await lab.client(gateway)
    assert await client.ask(b"x") == b"x"
    gateway.group.retire(trio.current_time() + 0.1)
    assert gateway.group.closed
    await until(lambda: len(gateway.records.ended) == 1)
    assert gateway.records.ended[0].error == "shutdown"
    gateway.group.retire(0.0)  # idempotent
    # The port is free again: nothing holds it (the duplicate descriptor is closed too).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(gateway.address)


async def test_cancelled_sessions_end_once_with_shutdown(lab: Lab) -> None:
    echo = await lab.echo()
    snapshot = runtime([echo.url])
    async with trio.open_nursery() as handlers:
        gateway = await lab.gateway(snapshot, handlers)
        clients = [await lab.client(gateway) for _ in range(2)]
        for client in clients:
            assert await client.ask(b"x") == b"x"
        handlers.cancel_scope.cancel()  # the drain's grace ran out
    assert [record.error for record in gateway.records.ended] == ["shutdown", "shutdown"]
    assert gateway.active == 0
    assert backend(snapshot, 0).in_flight == 0


# --- the access log -------------------------------------------------------------------------


async def test_one_record_per_session_with_its_bytes(lab: Lab) -> None:
    echo = await lab.echo(tag=b"ok:")
    gateway = await lab.gateway(runtime([echo.url], timeout=SHORT))
    client = await lab.client(gateway)
    assert await client.ask(b"0123456789") == b"ok:0123456789"
    assert await client.ask(b"abc") == b"ok:abc"
    await until(lambda: gateway.group.session_count == 0)
    [record] = gateway.records.ended
    assert record.transport == "udp"
    assert (record.entrypoint, record.router, record.service) == (NAME, NAME, "echo")
    assert record.backend == echo.url
    assert record.client_ip == record.peer_ip == "127.0.0.1"
    assert (record.request_bytes, record.response_bytes) == (13, 19)
    assert record.attempts == 1
    assert record.error == "idle_timeout"
    assert record.ended > record.started
    assert record.wall > 0


# --- binding --------------------------------------------------------------------------------


async def test_open_udp_sockets_binds_all_or_nothing() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        free = free_udp_port()
        entries = {
            "a": UdpEntrypointRuntime(name="a", host="127.0.0.1", port=free),
            "b": UdpEntrypointRuntime(name="b", host="127.0.0.1", port=port),
        }
        with pytest.raises(StartError, match=rf'entrypoint "b": cannot listen on 127.0.0.1:{port}'):
            await open_udp_sockets(entries)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as again:
        again.bind(("127.0.0.1", free))  # "a" was released


async def test_reuse_port_lets_two_groups_share_an_address() -> None:
    entry = UdpEntrypointRuntime(name=NAME, host="127.0.0.1", port=0)
    first = await open_udp_sockets({NAME: entry}, reuse_port=True)
    try:
        port = first[NAME][0].getsockname()[1]
        second = await open_udp_sockets(
            {NAME: dataclasses.replace(entry, port=port)}, reuse_port=True
        )
        for sock in second[NAME]:
            sock.close()
    finally:
        for sock in first[NAME]:
            sock.close()


@needs_ipv6
async def test_ipv6_sockets_are_v6_only() -> None:
    entry = UdpEntrypointRuntime(name=NAME, host="::1", port=0)
    opened = await open_udp_sockets({NAME: entry})
    [sock] = opened[NAME]
    try:
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        sock.close()


async def test_a_datagram_to_a_refusing_client_does_not_end_the_session(lab: Lab) -> None:
    # The client goes away between its datagram and the reply: the listening socket is not
    # connected, so no error comes back to the gateway and the session simply idles out.
    echo = await lab.echo()
    gateway = await lab.gateway(runtime([echo.url], timeout=SHORT))
    client = await lab.client(gateway)
    await client.send(b"x")
    await heard(echo, 1)
    client.sock.close()
    await until(lambda: gateway.group.session_count == 0)
    assert [record.error for record in gateway.records.ended] == ["idle_timeout"]
