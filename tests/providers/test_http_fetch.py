"""The providers' one-shot GET (``providers/http_fetch.py``) against real sockets: the test
origin of ``tests/support/origin.py``, the HTTPS origin of ``tests/support/tls_origin.py`` with a
``trustme`` CA, and a raw server that answers whatever bytes a test gives it (for answers an h11
server would refuse to produce).

Real clock throughout (real sockets; DESIGN.md §3.6 item 3): timeouts are a fraction of a second.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
import trio
import trustme

from a3s_gateway.providers.http_fetch import Fetched, FetchError, fetch, one_line
from tests.support.origin import Download, Fixed, Garbage, Origin, SlowHead
from tests.support.tls_origin import TlsOrigin, write_leaf

WAIT = 5.0


@pytest.fixture
async def origin(nursery: trio.Nursery) -> Origin:
    server = Origin()
    await nursery.start(server.serve)
    return server


class RawServer:
    """Accepts connections, reads until the end of the request head, sends ``answer``, closes
    (or, with ``hang``, keeps the connection open without sending anything more)."""

    def __init__(self, answer: bytes, *, hang: bool = False) -> None:
        self.answer = answer
        self.hang = hang
        self.port = 0
        self.heads: list[bytes] = []

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = int(listeners[0].socket.getsockname()[1])
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started()

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
            self.heads.append(head)
            await stream.send_all(self.answer)
            if self.hang:
                await trio.sleep_forever()


async def serving(nursery: trio.Nursery, answer: bytes, *, hang: bool = False) -> RawServer:
    server = RawServer(answer, hang=hang)
    await nursery.start(server.serve)
    return server


def url(port: int, path: str) -> str:
    return f"http://127.0.0.1:{port}{path}"


# -- answers --------------------------------------------------------------------------------


async def test_a_2xx_answer_comes_back_with_its_headers_and_body(origin: Origin) -> None:
    origin.on("/doc", Fixed(200, b'{"a": 1}', ((b"x-thing", b"yes"),)))
    got = await fetch(url(origin.port, "/doc?q=1"), timeout=WAIT, max_body=100)
    assert got.status == 200
    assert got.body == b'{"a": 1}'
    assert got.header("X-Thing") == "yes"
    assert got.header("content-length") == "8"
    assert got.header("absent") is None
    [request] = origin.requests
    assert request.method == b"GET"
    assert request.target == b"/doc?q=1"
    assert request.header(b"host") == f"127.0.0.1:{origin.port}".encode()
    assert request.header(b"connection") == b"close"
    assert (request.header(b"user-agent") or b"").startswith(b"a3s-gateway/")


async def test_extra_headers_are_sent_and_may_replace_host_and_user_agent(origin: Origin) -> None:
    headers = [("Host", "svc.example"), ("User-Agent", "probe/1"), ("Accept", "application/json")]
    await fetch(url(origin.port, "/"), timeout=WAIT, max_body=10_000, headers=headers)
    [request] = origin.requests
    assert request.values(b"host") == [b"svc.example"]
    assert request.values(b"user-agent") == [b"probe/1"]
    assert request.header(b"accept") == b"application/json"


async def test_each_call_uses_its_own_connection(origin: Origin) -> None:
    for _ in range(3):
        await fetch(url(origin.port, "/"), timeout=WAIT, max_body=10_000)
    assert [request.connection for request in origin.requests] == [1, 2, 3]


async def test_a_redirect_is_returned_as_it_came_and_not_followed(origin: Origin) -> None:
    location = url(origin.port, "/elsewhere")
    origin.on("/old", Fixed(302, b"moved", ((b"location", location.encode()),)))
    got = await fetch(url(origin.port, "/old"), timeout=WAIT, max_body=100)
    assert (got.status, got.body, got.header("location")) == (302, b"moved", location)
    assert [request.path for request in origin.requests] == [b"/old"]


async def test_a_body_of_exactly_the_cap_is_accepted(origin: Origin) -> None:
    origin.on("/big", Download(1000))
    got = await fetch(url(origin.port, "/big"), timeout=WAIT, max_body=1000)
    assert len(got.body) == 1000


@pytest.mark.parametrize("chunked", [False, True])
async def test_a_body_over_the_cap_fails(origin: Origin, chunked: bool) -> None:
    origin.on("/big", Download(1001, chunked=chunked))
    with pytest.raises(FetchError, match="longer than 1000 bytes"):
        await fetch(url(origin.port, "/big"), timeout=WAIT, max_body=1000)


async def test_a_declared_length_over_the_cap_fails_before_the_body_is_read(
    nursery: trio.Nursery,
) -> None:
    # The server declares 10 MB and sends none of it: only the head can have been read.
    server = await serving(
        nursery, b"HTTP/1.1 200 OK\r\ncontent-length: 10000000\r\n\r\n", hang=True
    )
    with trio.fail_after(WAIT), pytest.raises(FetchError, match=r"\(10000000 bytes\) is longer"):
        await fetch(url(server.port, "/"), timeout=WAIT, max_body=1000)


async def test_a_body_without_framing_is_read_to_the_end_of_the_connection(
    nursery: trio.Nursery,
) -> None:
    server = await serving(nursery, b"HTTP/1.0 200 OK\r\n\r\nuntil close")
    got = await fetch(url(server.port, "/"), timeout=WAIT, max_body=100)
    assert (got.status, got.body) == (200, b"until close")


async def test_interim_answers_are_skipped(nursery: trio.Nursery) -> None:
    answer = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    server = await serving(nursery, answer)
    got = await fetch(url(server.port, "/"), timeout=WAIT, max_body=100)
    assert (got.status, got.body) == (204, b"")


# -- failures -------------------------------------------------------------------------------


async def test_a_bad_status_line_fails(origin: Origin) -> None:
    origin.on("/bad", Garbage())
    with pytest.raises(FetchError, match="invalid HTTP answer") as caught:
        await fetch(url(origin.port, "/bad"), timeout=WAIT, max_body=100)
    assert str(caught.value).startswith(f"GET http://127.0.0.1:{origin.port}/bad: ")


async def test_a_connection_closed_before_an_answer_fails(nursery: trio.Nursery) -> None:
    server = await serving(nursery, b"")
    with pytest.raises(FetchError, match=f"GET http://127.0.0.1:{server.port}/"):
        await fetch(url(server.port, "/"), timeout=WAIT, max_body=100)


async def test_a_body_cut_short_fails(nursery: trio.Nursery) -> None:
    server = await serving(nursery, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
    with pytest.raises(FetchError):
        await fetch(url(server.port, "/"), timeout=WAIT, max_body=100)


async def test_the_whole_call_is_bounded_by_the_timeout(origin: Origin) -> None:
    release = trio.Event()
    origin.on("/slow", SlowHead(release))
    started = trio.current_time()
    try:
        with pytest.raises(FetchError, match=r"no complete answer within 0\.3 s"):
            await fetch(url(origin.port, "/slow"), timeout=0.3, max_body=100)
    finally:
        release.set()
    assert 0.3 <= trio.current_time() - started < 2


async def test_a_slow_body_counts_against_the_same_timeout(nursery: trio.Nursery) -> None:
    server = await serving(nursery, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc", hang=True)
    with pytest.raises(FetchError, match=r"within 0\.3 s"):
        await fetch(url(server.port, "/"), timeout=0.3, max_body=100)


async def test_a_refused_connection_fails() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = int(listener.socket.getsockname()[1])
    await listener.aclose()
    with pytest.raises(FetchError, match=f"GET http://127.0.0.1:{port}/x: "):
        await fetch(url(port, "/x"), timeout=WAIT, max_body=100)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("ftp://example.test/x", "unsupported scheme"),
        ("not a url", "expected http:// or https://"),
        ("http://user:secret@example.test/", "userinfo"),
        ("http://example.test:99999/", "port"),
    ],
)
async def test_an_invalid_url_fails_without_quoting_a_password(text: str, reason: str) -> None:
    with pytest.raises(FetchError, match=reason) as caught:
        await fetch(text, timeout=WAIT, max_body=100)
    assert "secret" not in str(caught.value)


async def test_the_query_and_header_values_stay_out_of_messages(origin: Origin) -> None:
    origin.on("/bad", Garbage())
    with pytest.raises(FetchError) as caught:
        await fetch(url(origin.port, "/bad?token=s3cret"), timeout=WAIT, max_body=100)
    assert "s3cret" not in str(caught.value)
    headers = [("Authorization", "Bearer s3cret\nx")]
    with pytest.raises(FetchError, match="could not be encoded") as caught:
        await fetch(url(origin.port, "/"), timeout=WAIT, max_body=100, headers=headers)
    assert "s3cret" not in str(caught.value)


def test_messages_are_one_line() -> None:
    assert one_line("a\nb\r\n  c\x00d") == "a b c d"
    assert len(one_line("x" * 1000)) == 300
    assert str(FetchError("first\nsecond")) == "first second"


def test_fetched_header_lookup_is_case_insensitive() -> None:
    got = Fetched(200, (("location", "/a"), ("location", "/b")), b"")
    assert got.header("Location") == "/a"


# -- TLS ------------------------------------------------------------------------------------


async def tls_origin(nursery: trio.Nursery, tmp_path: Path, ca: trustme.CA) -> TlsOrigin:
    files = write_leaf(ca.issue_cert("127.0.0.1", "localhost"), tmp_path, "server")
    server = TlsOrigin(files)
    await nursery.start(server.serve)
    return server


async def test_https_is_verified_against_the_given_context(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server = await tls_origin(nursery, tmp_path, ca)
    context = trio_client_context(ca)
    got = await fetch(server.url("/doc"), timeout=WAIT, max_body=10_000, ssl_context=context)
    assert got.status == 200
    assert b'"target": "/doc"' in got.body
    [connection] = server.connections
    assert connection.targets == ["/doc"]


async def test_https_with_an_untrusted_certificate_fails_with_a_tls_reason(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await tls_origin(nursery, tmp_path, trustme.CA())
    # No context: the system's trust store, which does not know the test CA.
    with pytest.raises(FetchError, match=r"TLS: .*CERTIFICATE_VERIFY_FAILED"):
        await fetch(server.url("/doc"), timeout=WAIT, max_body=10_000)
    other = trio_client_context(trustme.CA())
    with pytest.raises(FetchError, match="TLS: "):
        await fetch(server.url("/doc"), timeout=WAIT, max_body=10_000, ssl_context=other)
    assert server.connections == []


async def test_https_checks_the_host_name(nursery: trio.Nursery, tmp_path: Path) -> None:
    ca = trustme.CA()
    files = write_leaf(ca.issue_cert("other.test"), tmp_path, "server")
    server = TlsOrigin(files)
    await nursery.start(server.serve)
    with pytest.raises(FetchError, match="TLS: "):
        await fetch(
            server.url("/"), timeout=WAIT, max_body=100, ssl_context=trio_client_context(ca)
        )


def trio_client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context
