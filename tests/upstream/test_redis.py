"""The Redis client (``upstream/redis.py``, SPEC §8.7 "Client") against a real redis-server,
plus scripted trio listeners for what a real server will not do (never answer, answer garbage).
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme

from a3s_gateway.config.urls import RedisUrl
from a3s_gateway.middleware.outbound import OutboundFailed, OutboundTimeout, RedisReplyError
from a3s_gateway.upstream.redis import RedisClients, encode_command
from tests.support.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def clients() -> AsyncIterator[RedisClients]:
    """A ``RedisClients`` closed at the end of the test, even a failed one."""
    made = RedisClients()
    try:
        yield made
    finally:
        await made.aclose()


def client_id(reply: object) -> int:
    assert isinstance(reply, int)
    return reply


# ----------------------------------------------------------------------------- encoding


def test_commands_are_resp_arrays_of_bulk_strings() -> None:
    assert encode_command((b"SET", "k\u00e9", 42, b"")) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$2\r\n42\r\n$0\r\n\r\n"
    )
    assert encode_command(()) == b"*0\r\n"


# ----------------------------------------------------------------------------- real server


async def test_commands_and_their_reply_types(redis: RedisServer, clients: RedisClients) -> None:
    client = clients.client(RedisUrl(redis.url))
    binary = bytes(range(256)) + b"\r\n$3\r\n"
    assert await client.execute("PING", within=5) == b"PONG"
    assert await client.execute("SET", b"bin", binary, within=5) == b"OK"
    assert await client.execute("GET", b"bin", within=5) == binary
    assert await client.execute("GET", "missing", within=5) is None
    assert await client.execute("INCRBY", "n", -7, within=5) == -7
    assert await client.execute("RPUSH", "l", "a", "b", within=5) == 2
    assert await client.execute("LRANGE", "l", 0, -1, within=5) == [b"a", b"b"]
    assert redis.command("GET", "n") == b"-7"


async def test_an_error_reply_raises_and_keeps_the_connection(
    redis: RedisServer, clients: RedisClients
) -> None:
    client = clients.client(RedisUrl(redis.url))
    first = client_id(await client.execute("CLIENT", "ID", within=5))
    await client.execute("SET", "s", "text", within=5)
    with pytest.raises(RedisReplyError) as raised:
        await client.execute("INCR", "s", within=5)
    assert str(raised.value).startswith("ERR value is not an integer")
    with pytest.raises(RedisReplyError, match=r"^ERR unknown command"):
        await client.execute("NO-SUCH-COMMAND", within=5)
    assert client_id(await client.execute("CLIENT", "ID", within=5)) == first
    assert client.open_connections == 1


async def test_password_auth_from_the_url() -> None:
    with running_redis(password="s3cret") as redis:
        clients = RedisClients()
        good = clients.client(RedisUrl(redis.url))
        assert await good.execute("PING", within=5) == b"PONG"
        wrong = clients.client(RedisUrl(f"redis://:nope@127.0.0.1:{redis.port}"))
        with pytest.raises(RedisReplyError, match=r"^AUTH refused: WRONGPASS") as raised:
            await wrong.execute("PING", within=5)
        assert "nope" not in str(raised.value)
        assert wrong.open_connections == 0  # a refused handshake closes its connection
        anonymous = clients.client(RedisUrl(f"redis://127.0.0.1:{redis.port}"))
        with pytest.raises(RedisReplyError, match=r"^NOAUTH"):
            await anonymous.execute("PING", within=5)
        await clients.aclose()


async def test_user_and_password_auth_from_the_url() -> None:
    users = [("alice", "on", ">al1ce", "~app:*", "+@all")]
    with running_redis(users=users) as redis:
        clients = RedisClients()
        alice = clients.client(RedisUrl(f"redis://alice:al1ce@127.0.0.1:{redis.port}"))
        assert await alice.execute("ACL", "WHOAMI", within=5) == b"alice"
        assert await alice.execute("SET", "app:x", "1", within=5) == b"OK"
        with pytest.raises(RedisReplyError, match=r"^NOPERM"):
            await alice.execute("SET", "other", "1", within=5)  # alice's ACL, so alice it is
        await clients.aclose()


async def test_select_from_the_url(redis: RedisServer, clients: RedisClients) -> None:
    db3 = clients.client(RedisUrl(f"{redis.url}/3"))
    assert await db3.execute("SET", "where", "three", within=5) == b"OK"
    assert redis.command("GET", "where", db=3) == b"three"
    assert redis.command("GET", "where") is None


async def test_a_bad_database_fails_the_connect(redis: RedisServer, clients: RedisClients) -> None:
    client = clients.client(RedisUrl(f"{redis.url}/99"))
    with pytest.raises(RedisReplyError, match=r"^SELECT refused: ERR DB index is out of range"):
        await client.execute("PING", within=5)
    assert client.open_connections == 0


async def test_a_restarted_server_is_reconnected_on_the_next_call(
    redis: RedisServer, clients: RedisClients
) -> None:
    client = clients.client(RedisUrl(redis.url))
    # Two connections in the pool: two calls in flight at once (each blocks 0.1 s in Redis).
    async with trio.open_nursery() as nursery:
        for name in ("a", "b"):
            nursery.start_soon(partial(client.execute, "BLPOP", name, "0.1", within=5))
    assert client.idle_connections == 2
    redis.stop()
    redis.start()
    assert await client.execute("SET", "after", "restart", within=5) == b"OK"
    assert redis.command("GET", "after") == b"restart"
    assert client.open_connections == client.idle_connections == 1  # the stale ones dropped


async def test_a_stopped_server_fails_calls_and_a_refused_connect_too(
    redis: RedisServer, clients: RedisClients
) -> None:
    client = clients.client(RedisUrl(redis.url))
    assert await client.execute("PING", within=5) == b"PONG"
    redis.stop()
    with pytest.raises(OutboundFailed, match=r"connect failed \(refused\)"):
        await client.execute("PING", within=5)  # the idle connection is dead; so is the port
    assert client.open_connections == 0


async def test_a_killed_connection_is_never_reused(
    redis: RedisServer, clients: RedisClients
) -> None:
    client = clients.client(RedisUrl(redis.url))
    blocked = client_id(await client.execute("CLIENT", "ID", within=5))
    async with trio.open_nursery() as nursery:
        failures: list[Exception] = []

        async def blocked_call() -> None:
            try:
                await client.execute("BLPOP", "never", "0", within=5)
            except OutboundFailed as error:
                failures.append(error)

        nursery.start_soon(blocked_call)
        # The server has the BLPOP when its client shows as blocked; the check goes through
        # the server, not through sleeping.
        while b"cmd=blpop" not in _client_info(redis, blocked):  # noqa: ASYNC110 -- polling
            await trio.sleep(0.01)  # another process' state; no event to wait for
        assert redis.command("CLIENT", "KILL", "ID", blocked) == 1
    assert len(failures) == 1
    assert "connection lost" in str(failures[0])
    assert client.open_connections == 0
    assert client_id(await client.execute("CLIENT", "ID", within=5)) != blocked


def _client_info(redis: RedisServer, wanted: int) -> bytes:
    listing = redis.command("CLIENT", "LIST", "ID", wanted)
    assert isinstance(listing, bytes)
    return listing


async def test_idle_connections_are_bounded(redis: RedisServer) -> None:
    clients = RedisClients(max_idle=1)
    client = clients.client(RedisUrl(redis.url))
    async with trio.open_nursery() as nursery:
        for name in ("a", "b", "c"):
            nursery.start_soon(partial(client.execute, "BLPOP", name, "0.05", within=5))
    assert client.open_connections == client.idle_connections == 1
    await clients.aclose()


async def test_aclose_closes_everything_and_later_calls_fail(
    redis: RedisServer, clients: RedisClients
) -> None:
    url = RedisUrl(redis.url)
    client = clients.client(url)
    assert clients.client(url) is client  # one pool per URL
    await client.execute("PING", within=5)
    assert client.open_connections == 1
    await clients.aclose()
    assert client.open_connections == 0
    with pytest.raises(OutboundFailed, match="client closed"):
        await client.execute("PING", within=5)
    with pytest.raises(OutboundFailed, match="client closed"):
        await clients.client(RedisUrl(f"{redis.url}/1")).execute("PING", within=5)


# ----------------------------------------------------------------------------- TLS


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


async def test_rediss_uses_tls_with_the_injected_context(tmp_path: Path, ca: trustme.CA) -> None:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    with running_redis(tls=(cert_file, key_file), client_context=context) as redis:
        assert redis.url.startswith("rediss://")
        trusting = RedisClients(ssl_context=context)
        client = trusting.client(RedisUrl(redis.url))
        assert await client.execute("SET", "tls", "yes", within=5) == b"OK"
        assert redis.command("GET", "tls") == b"yes"
        await trusting.aclose()
        default = RedisClients()  # the system's CAs do not know the test CA
        with pytest.raises(OutboundFailed, match="TLS handshake failed"):
            await default.client(RedisUrl(redis.url)).execute("PING", within=5)
        await default.aclose()


# ----------------------------------------------------------------------------- scripted peers


class Silent:
    """A listener that accepts connections, reads what comes and never answers."""

    def __init__(self, answer: bytes | None = None) -> None:
        self.answer = answer
        self.accepted = 0
        self.closed = 0
        self.received = b""

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        async with stream:
            while data := await stream.receive_some(65536):
                self.received += data
                if self.answer is not None:
                    await stream.send_all(self.answer)
        self.closed += 1


async def serve(nursery: trio.Nursery, peer: Silent) -> RedisUrl:
    listeners = await nursery.start(partial(trio.serve_tcp, peer.handle, 0, host="127.0.0.1"))
    return RedisUrl(f"redis://127.0.0.1:{listeners[0].socket.getsockname()[1]}")


async def test_a_server_that_never_answers_times_out_and_the_connection_is_closed(
    autojump_clock: trio.testing.MockClock, clients: RedisClients
) -> None:
    peer = Silent()
    async with trio.open_nursery() as nursery:
        client = clients.client(await serve(nursery, peer))
        started = trio.current_time()
        with pytest.raises(OutboundTimeout, match=r"no reply within 0\.25s"):
            await client.execute("PING", within=0.25)
        assert trio.current_time() - started == pytest.approx(0.25)
        assert peer.received == b"*1\r\n$4\r\nPING\r\n"
        assert client.open_connections == 0
        await trio.testing.wait_all_tasks_blocked()
        assert peer.closed == 1  # the timed-out connection was closed, not pooled
        with pytest.raises(OutboundTimeout):
            await client.execute("PING", within=0.25)
        assert peer.accepted == 2
        nursery.cancel_scope.cancel()


async def test_a_call_waiting_for_a_free_connection_times_out(
    autojump_clock: trio.testing.MockClock,
) -> None:
    peer = Silent()
    clients = RedisClients(max_open=2)
    async with trio.open_nursery() as nursery:
        client = clients.client(await serve(nursery, peer))
        outcomes: list[str] = []

        async def call(within: float) -> None:
            try:
                await client.execute("PING", within=within)
            except OutboundTimeout:
                outcomes.append(f"timeout {trio.current_time():g}")

        async with trio.open_nursery() as calls:
            calls.start_soon(call, 10.0)
            calls.start_soon(call, 10.0)
            await trio.testing.wait_all_tasks_blocked()
            calls.start_soon(call, 1.0)
        assert outcomes == ["timeout 1", "timeout 10", "timeout 10"]
        assert peer.accepted == 2  # never more than max_open connections
        nursery.cancel_scope.cancel()
    await clients.aclose()


async def test_a_cancelled_call_closes_its_connection(
    autojump_clock: trio.testing.MockClock, clients: RedisClients
) -> None:
    peer = Silent()
    async with trio.open_nursery() as nursery:
        client = clients.client(await serve(nursery, peer))
        with trio.move_on_after(0.5):
            await client.execute("PING", within=60)
        assert client.open_connections == 0
        await trio.testing.wait_all_tasks_blocked()
        assert peer.closed == 1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"?nonsense\r\n", "invalid reply"),
        (b"$5\r\nab", "connection lost"),  # half a reply, then the server closes
    ],
)
async def test_a_broken_reply_fails_and_the_connection_is_not_reused(
    answer: bytes, message: str, clients: RedisClients
) -> None:
    class Broken(Silent):
        async def handle(self, stream: trio.SocketStream) -> None:
            self.accepted += 1
            async with stream:
                await stream.receive_some(65536)
                await stream.send_all(answer)

    peer = Broken()
    async with trio.open_nursery() as nursery:
        client = clients.client(await serve(nursery, peer))
        for attempt in (1, 2):
            with pytest.raises(OutboundFailed, match=message):
                await client.execute("PING", within=5)
            assert peer.accepted == attempt
        assert client.open_connections == 0
        nursery.cancel_scope.cancel()


async def test_pipelined_answers_stay_with_their_calls(
    autojump_clock: trio.testing.MockClock, clients: RedisClients
) -> None:
    peer = Silent(answer=b"+OK\r\n")
    async with trio.open_nursery() as nursery:
        client = clients.client(await serve(nursery, peer))
        for _ in range(3):
            assert await client.execute("SET", "k", "v", within=1) == b"OK"
        assert peer.accepted == 1  # one pooled connection for sequential calls
        nursery.cancel_scope.cancel()
