"""``PooledHttpCaller`` against real trio + h11 servers on 127.0.0.1 (SPEC §5.7, §8.5).

Covers: connection reuse, the request it writes (``Host`` without the default port, no body,
no hop-by-hop fields), no redirect following, the ``within`` deadline, the ``max_body`` bound
(and that such a connection is not reused), resets and refusals, the stale-connection retry
(once, and only on a reused connection), and ``https`` with trustme certificates (verified:
an unknown CA fails). Real clock; the timeouts are short and every wait is bounded.
"""

from __future__ import annotations

import ssl

import pytest
import trio
import trustme

from a3s_gateway.config.urls import HttpUrl
from a3s_gateway.middleware.outbound import (
    HttpCaller,
    OutboundFailed,
    OutboundTimeout,
    ReplyTooLarge,
)
from a3s_gateway.upstream.caller import PooledHttpCaller, host_field
from tests.support.gateway import free_port
from tests.support.scripted import Drop, Hang, Reply, ScriptedServer, Seen

WITHIN = 10.0
MAX = 65536


def ok(seen: Seen) -> Reply:
    del seen
    return Reply(200, ((b"x-answer", b"yes"), (b"content-type", b"text/plain")), b"fine")


async def serving(nursery: trio.Nursery, server: ScriptedServer) -> ScriptedServer:
    await nursery.start(server.serve)
    return server


@pytest.fixture
async def caller(nursery: trio.Nursery) -> PooledHttpCaller:
    client = PooledHttpCaller()
    await nursery.start(client.run)
    return client


def test_it_is_an_http_caller() -> None:
    client: HttpCaller = PooledHttpCaller()  # mypy checks the protocol; this checks it runs
    assert callable(client.get)


async def test_two_calls_share_one_connection(
    nursery: trio.Nursery, caller: PooledHttpCaller
) -> None:
    server = await serving(nursery, ScriptedServer(ok))
    url = HttpUrl(server.url("/check?a=1"))
    first = await caller.get(url, [], within=WITHIN, max_body=MAX)
    second = await caller.get(url, [], within=WITHIN, max_body=MAX)
    assert (first.status, first.body) == (200, b"fine")
    assert (b"x-answer", b"yes") in first.headers
    assert second.body == b"fine"
    assert server.connections == 1
    assert [(seen.connection, seen.index) for seen in server.requests] == [(1, 0), (1, 1)]
    assert caller.stats(url) == (1, 0)  # back in the pool, idle


async def test_the_request_line_host_and_fields(
    nursery: trio.Nursery, caller: PooledHttpCaller
) -> None:
    server = await serving(nursery, ScriptedServer(ok))
    url = HttpUrl(server.url("/verify?next=%2Fa"))
    sent = [
        (b"authorization", b"Bearer t"),
        (b"host", b"client.example"),  # the caller's own Host wins
        (b"content-length", b"5"),  # a GET without a body
        (b"connection", b"x-hop"),
        (b"x-hop", b"dropped"),
        (b"keep-alive", b"timeout=5"),
        (b"x-kept", b"1"),
        (b"x-kept", b"2"),
    ]
    await caller.get(url, sent, within=WITHIN, max_body=MAX)
    [seen] = server.requests
    assert (seen.method, seen.target) == (b"GET", b"/verify?next=%2Fa")
    assert seen.headers[0] == (b"host", f"127.0.0.1:{server.port}".encode())
    assert seen.values(b"host") == [f"127.0.0.1:{server.port}".encode()]
    assert seen.values(b"authorization") == [b"Bearer t"]
    assert seen.values(b"x-kept") == [b"1", b"2"]
    for absent in (b"content-length", b"transfer-encoding", b"connection", b"x-hop", b"keep-alive"):
        assert seen.values(absent) == []


@pytest.mark.parametrize(
    ("text", "host"),
    [
        ("http://auth.example/v", b"auth.example"),
        ("http://auth.example:80/v", b"auth.example"),
        ("http://auth.example:8080/v", b"auth.example:8080"),
        ("https://auth.example/v", b"auth.example"),
        ("https://auth.example:443/v", b"auth.example"),
        ("https://auth.example:80/v", b"auth.example:80"),
        ("http://[::1]:9000/v", b"[::1]:9000"),
        ("http://[::1]/v", b"[::1]"),
    ],
)
def test_host_omits_only_the_default_port(text: str, host: bytes) -> None:
    assert host_field(HttpUrl(text)) == host


async def test_redirects_are_returned_not_followed(
    nursery: trio.Nursery, caller: PooledHttpCaller
) -> None:
    def redirect(seen: Seen) -> Reply:
        if seen.target == b"/login":
            return Reply(200, body=b"followed")
        return Reply(302, ((b"location", b"/login"),), b"go")

    server = await serving(nursery, ScriptedServer(redirect))
    reply = await caller.get(HttpUrl(server.url("/start")), [], within=WITHIN, max_body=MAX)
    assert reply.status == 302
    assert (b"location", b"/login") in reply.headers
    assert reply.body == b"go"
    assert [seen.target for seen in server.requests] == [b"/start"]


async def test_a_slow_server_times_out_within_the_deadline(
    nursery: trio.Nursery, caller: PooledHttpCaller
) -> None:
    hang = Hang()
    server = await serving(nursery, ScriptedServer(lambda seen: hang))
    url = HttpUrl(server.url("/slow"))
    started = trio.current_time()
    with pytest.raises(OutboundTimeout):
        await caller.get(url, [], within=0.3, max_body=MAX)
    elapsed = trio.current_time() - started
    assert 0.3 <= elapsed < 3.0
    assert caller.stats(url) == (0, 0)  # the interrupted connection was closed
    hang.release.set()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_over_max_body_is_refused_and_its_connection_dropped(
    nursery: trio.Nursery, caller: PooledHttpCaller, chunked: bool
) -> None:
    def big(seen: Seen) -> Reply:
        size = 20000 if seen.target == b"/big" else 100
        return Reply(200, body=b"x" * size, chunked=chunked)

    server = await serving(nursery, ScriptedServer(big))
    with pytest.raises(ReplyTooLarge):
        await caller.get(HttpUrl(server.url("/big")), [], within=WITHIN, max_body=10000)
    assert caller.stats(HttpUrl(server.url("/"))) == (0, 0)
    exact = await caller.get(HttpUrl(server.url("/small")), [], within=WITHIN, max_body=100)
    assert len(exact.body) == 100  # the bound is inclusive
    assert [seen.connection for seen in server.requests] == [1, 2]


async def test_a_reset_before_the_reply_fails(
    nursery: trio.Nursery, caller: PooledHttpCaller
) -> None:
    server = await serving(nursery, ScriptedServer(lambda seen: Drop()))
    with pytest.raises(OutboundFailed) as caught:
        await caller.get(HttpUrl(server.url("/x")), [], within=WITHIN, max_body=MAX)
    assert not isinstance(caught.value, ReplyTooLarge)
    assert len(server.requests) == 1  # a fresh connection is not retried


async def test_garbage_is_a_failure(nursery: trio.Nursery, caller: PooledHttpCaller) -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]

    async def garbage() -> None:
        async with listener, await listener.accept() as stream:
            await stream.receive_some(65536)
            await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")

    nursery.start_soon(garbage)
    with pytest.raises(OutboundFailed):
        await caller.get(HttpUrl(f"http://127.0.0.1:{port}/"), [], within=WITHIN, max_body=MAX)


async def test_a_refused_connection_fails(caller: PooledHttpCaller) -> None:
    url = HttpUrl(f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(OutboundFailed, match="refused"):
        await caller.get(url, [], within=WITHIN, max_body=MAX)


async def test_a_stale_pooled_connection_is_replaced_once(
    nursery: trio.Nursery, caller: PooledHttpCaller
) -> None:
    # The first connection answers once, then takes the next request and closes without a
    # reply (a keep-alive connection the server had given up on); later connections answer.
    def script(seen: Seen) -> Reply | Drop:
        if seen.connection == 1 and seen.index == 1:
            return Drop()
        return Reply(200, body=f"conn {seen.connection}".encode())

    server = await serving(nursery, ScriptedServer(script))
    url = HttpUrl(server.url("/"))
    assert (await caller.get(url, [], within=WITHIN, max_body=MAX)).body == b"conn 1"
    assert (await caller.get(url, [], within=WITHIN, max_body=MAX)).body == b"conn 2"
    assert [(seen.connection, seen.index) for seen in server.requests] == [(1, 0), (1, 1), (2, 0)]


async def test_the_stale_retry_happens_only_once(
    nursery: trio.Nursery, caller: PooledHttpCaller
) -> None:
    def script(seen: Seen) -> Reply | Drop:
        return Reply(200) if seen.connection == 1 and seen.index == 0 else Drop()

    server = await serving(nursery, ScriptedServer(script))
    url = HttpUrl(server.url("/"))
    await caller.get(url, [], within=WITHIN, max_body=MAX)
    with pytest.raises(OutboundFailed):
        await caller.get(url, [], within=WITHIN, max_body=MAX)
    assert [(seen.connection, seen.index) for seen in server.requests] == [(1, 0), (1, 1), (2, 0)]


async def test_calls_after_aclose_fail(nursery: trio.Nursery) -> None:
    server = await serving(nursery, ScriptedServer(ok))
    client = PooledHttpCaller()
    await nursery.start(client.run)
    await client.get(HttpUrl(server.url()), [], within=WITHIN, max_body=MAX)
    await client.aclose()
    with pytest.raises(OutboundFailed):
        await client.get(HttpUrl(server.url()), [], within=WITHIN, max_body=MAX)


# --------------------------------------------------------------------------- https


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


async def test_https_with_a_trusted_certificate(nursery: trio.Nursery, ca: trustme.CA) -> None:
    server = await serving(nursery, ScriptedServer(ok, ssl_context=server_context(ca)))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client = PooledHttpCaller(ssl_context=client_context)
    await nursery.start(client.run)
    url = HttpUrl(server.url("/tls"))
    assert url.scheme == "https"
    first = await client.get(url, [(b"x-a", b"1")], within=WITHIN, max_body=MAX)
    second = await client.get(url, [], within=WITHIN, max_body=MAX)
    assert (first.status, first.body, second.body) == (200, b"fine", b"fine")
    assert server.connections == 1  # TLS connections are pooled too
    assert server.requests[0].values(b"host") == [f"127.0.0.1:{server.port}".encode()]
    assert server.requests[0].values(b"x-a") == [b"1"]


async def test_https_refuses_an_unknown_certificate_authority(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    server = await serving(nursery, ScriptedServer(ok, ssl_context=server_context(ca)))
    client = PooledHttpCaller()  # the system trust store does not know the test CA
    await nursery.start(client.run)
    with pytest.raises(OutboundFailed):
        await client.get(HttpUrl(server.url("/tls")), [], within=WITHIN, max_body=MAX)
    assert server.requests == []


async def test_https_handshake_counts_against_the_deadline(
    nursery: trio.Nursery, ca: trustme.CA
) -> None:
    # A TCP server that accepts and never speaks TLS: the handshake hangs until the deadline.
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []

    async def silent() -> None:
        async with listener:
            stream = await listener.accept()
            accepted.append(stream)
            async with stream:
                await trio.sleep_forever()

    nursery.start_soon(silent)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    client = PooledHttpCaller(ssl_context=client_context)
    with pytest.raises(OutboundTimeout):
        await client.get(HttpUrl(f"https://127.0.0.1:{port}/"), [], within=0.3, max_body=MAX)
    assert len(accepted) == 1
