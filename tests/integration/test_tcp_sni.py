"""TCP routing by the ClientHello through the real CLI (issue #20; SPEC §4.10, §4.11, §6.1, §6.2).

``python -m a3s_gateway run`` in front of in-process backends (``tests/support/tcp_peers.py``):
TLS echo backends that terminate with their own ``trustme`` certificates and report the SNI and
ALPN their handshake saw, and plain echo backends. Clients are Python ``ssl``, the ``openssl
s_client`` and ``curl`` binaries, and raw bytes. Covered: passthrough by SNI (the client verifies
the backend's certificate, the backend saw the SNI); termination on a tcp entrypoint, to a plain
backend and re-encrypted to a ``tls://`` one; HTTP and TCP routers sharing one TLS http
entrypoint; ``ALPN(…)`` rules; non-TLS clients reaching a catch-all (at once when they send,
after ``timeouts.peek`` when they wait for a server-speaks-first backend); garbage and truncated
hellos bounded by the peek. Every wait is bounded; none stands in for synchronisation.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import pytest
import trio

from tests.support.gateway import CLIENT_WAIT, curl, free_port, need_tool
from tests.support.origin import Origin
from tests.support.tcp_peers import (
    STOP,
    EchoBackend,
    PlainClient,
    TlsClient,
    TlsEchoBackend,
    cli_gateway,
    entrypoint,
    metric_sum,
    read_until,
    service,
    tcp_router,
)
from tests.support.tls import Authority

pytestmark = pytest.mark.integration

#: The ClientHello peek bound in these tests.
PEEK: Final = 2.0
TIMEOUTS: Final = f'timeouts {{\n    idle = "10s"\n    peek = "{PEEK}s"\n  }}'
#: The first bytes of a ClientHello record (handshake, TLS 1.0 record version, 512 bytes).
HELLO_START: Final = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
#: A whole handshake record whose message is not a ClientHello (type 2): malformed.
NOT_A_HELLO: Final = b"\x16\x03\x01\x00\x04\x02\x00\x00\x00"


@pytest.fixture
def backends_ca(tmp_path: Path) -> Authority:
    """The CA of the backends' own certificates (clients of passthrough trust only it)."""
    return Authority(tmp_path / "backends", name="backends")


@pytest.fixture
def gateway_ca(tmp_path: Path) -> Authority:
    """The CA of the gateway's certificates (termination)."""
    return Authority(tmp_path / "gateway", name="gateway")


async def started(nursery: trio.Nursery, *backends: EchoBackend | TlsEchoBackend) -> None:
    for backend in backends:
        await nursery.start(backend.serve)


def tls_lines(pairs: list[tuple[Path, Path]]) -> str:
    """An entrypoint's ``tls`` block: the first pair is the default, the others extra."""
    (cert, key), *others = pairs
    listed = ", ".join(f'{{ cert_file = "{c}", key_file = "{k}" }}' for c, k in others)
    return (
        f'tls {{\n    cert_file = "{cert}"\n    key_file = "{key}"\n'
        f"    certificates = [{listed}]\n  }}"
    )


def hello(backend: TlsEchoBackend, sni: str, alpn: str = "") -> bytes:
    return f"<hello:{backend.name} sni={sni} alpn={alpn}>\n".encode()


async def passthrough_session(
    port: int, name: str, authority: Authority, backend: TlsEchoBackend
) -> None:
    """A TLS session through the gateway to ``backend``: its certificate, its greeting (it saw
    ``name`` as SNI), an echo and its trailer."""
    client = await TlsClient.connect(port, name, authority.client_context())
    try:
        assert client.names == backend.names
        assert await client.greeting() == hello(backend, name)
        assert await client.echo(f"over {name}\n".encode()) == f"over {name}\n".encode()
        assert await client.stop(backend.trailer) == b"STOP\n" + backend.trailer
    finally:
        await client.aclose()


async def s_client(port: int, name: str, ca_file: Path, payload: bytes) -> str:
    """``openssl s_client`` to 127.0.0.1:``port`` with SNI ``name``, verifying against
    ``ca_file``; sends ``payload`` and prints until the server closes. Its stdout."""
    command = [
        "openssl",
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-servername",
        name,
        "-verify_hostname",
        name,
        "-CAfile",
        str(ca_file),
        "-verify_return_error",
        "-showcerts",
        "-ign_eof",
    ]
    with trio.fail_after(CLIENT_WAIT):
        done = await trio.run_process(
            command, stdin=payload, capture_stdout=True, capture_stderr=True, check=False
        )
    output = done.stdout.decode(errors="replace")
    assert done.returncode == 0, (output, done.stderr.decode(errors="replace"))
    return output


def first_certificate(text: str | bytes) -> str:
    """The first PEM certificate in ``text``, whitespace-normalised."""
    if isinstance(text, bytes):
        text = text.decode()
    begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
    start = text.index(begin)
    return "".join(text[start : text.index(end, start) + len(end)].split())


async def test_passthrough_by_sni_reaches_each_backend_with_its_certificate(
    nursery: trio.Nursery, backends_ca: Authority, tmp_path: Path
) -> None:
    need_tool("openssl", "as a second TLS client (s_client)")
    alpha = TlsEchoBackend("alpha", backends_ca, "alpha.example.test")
    beta = TlsEchoBackend("beta", backends_ca, "beta.example.test", "*.wild.example.test")
    await started(nursery, alpha, beta)
    port = free_port()
    text = (
        entrypoint("tcp", port, TIMEOUTS)
        + service("alpha", alpha.url)
        + service("beta", beta.url)
        + tcp_router("alpha", "HostSNI(`alpha.example.test`)", "alpha")
        + tcp_router(
            "beta", "HostSNI(`beta.example.test`) || HostSNI(`*.wild.example.test`)", "beta"
        )
    )
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        await passthrough_session(port, "alpha.example.test", backends_ca, alpha)
        await passthrough_session(port, "beta.example.test", backends_ca, beta)
        # The same through openssl: the chain it verified is the backend's own.
        for name, backend in (("beta.example.test", beta), ("one.wild.example.test", beta)):
            output = await s_client(port, name, backends_ca.ca_file, b"openssl says hi\n" + STOP)
            assert "Verify return code: 0 (ok)" in output, output
            assert first_certificate(output) == first_certificate(backend.certificate_pem)
            assert hello(backend, name).decode() in output
            assert "openssl says hi\nSTOP\n" + backend.trailer.decode() in output
        # One level of wildcard only: a deeper name matches no router.
        with pytest.raises((trio.BrokenResourceError, OSError)):
            await TlsClient.connect(port, "a.b.wild.example.test", backends_ca.client_context())
        assert await gateway.rejected("tcp", "no_route") == 1
        lines = await gateway.log_lines(4)
    assert [seen.sni for seen in alpha.connections] == ["alpha.example.test"]
    assert [seen.sni for seen in beta.connections] == [
        "beta.example.test",
        "beta.example.test",
        "one.wild.example.test",
    ]
    assert sorted(str(line["sni"]) for line in lines) == [
        "alpha.example.test",
        "beta.example.test",
        "beta.example.test",
        "one.wild.example.test",
    ]
    assert {line["type"] for line in lines} == {"tcp"}


async def test_termination_on_a_tcp_entrypoint_plain_and_reencrypted(
    nursery: trio.Nursery, backends_ca: Authority, gateway_ca: Authority, tmp_path: Path
) -> None:
    plain = EchoBackend("plain")
    inner = TlsEchoBackend("inner", backends_ca, "inner.example.test")
    await started(nursery, plain, inner)
    port = free_port()
    front = gateway_ca.server_pair("front", "plain.example.test")
    secure = gateway_ca.server_pair("secure", "secure.example.test")
    upstream_tls = (
        f'    upstream_tls {{\n      ca_file = "{backends_ca.ca_file}"\n'
        '      server_name = "inner.example.test"\n    }\n'
    )
    text = (
        entrypoint("tls", port, TIMEOUTS, tls_lines([front, secure]))
        + service("plain", plain.url)
        + service("inner", f"tls://127.0.0.1:{inner.port}", extra=upstream_tls)
        + tcp_router("plain", "HostSNI(`plain.example.test`)", "plain")
        + tcp_router("inner", "HostSNI(`secure.example.test`)", "inner")
    )
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        # Termination with the gateway's certificate for the SNI, plaintext to the backend;
        # the entrypoint offers no ALPN protocol (a tcp entrypoint's default).
        context = gateway_ca.client_context()
        client = await TlsClient.connect(port, "plain.example.test", context, alpn=("h2",))
        try:
            assert client.names == ["plain.example.test"]
            assert client.stream.selected_alpn_protocol() is None
            assert await client.echo(b"in the clear behind\n") == b"in the clear behind\n"
        finally:
            await client.aclose()
        await plain.wait_for(lambda: plain.connections[0].ended.is_set())
        assert plain.connections[0].data == b"in the clear behind\n"
        assert plain.connections[0].eof  # the client's close reached the backend as EOF

        # Re-encryption: the gateway's certificate outside, a new TLS session to the backend
        # (SNI from upstream_tls.server_name, verified against its CA).
        client = await TlsClient.connect(port, "secure.example.test", gateway_ca.client_context())
        try:
            assert client.names == ["secure.example.test"]
            assert await client.greeting() == hello(inner, "inner.example.test")
            assert await client.echo(b"twice encrypted\n") == b"twice encrypted\n"
            assert await client.stop(inner.trailer) == b"STOP\n" + inner.trailer
        finally:
            await client.aclose()
        assert [seen.sni for seen in inner.connections] == ["inner.example.test"]
        lines = await gateway.log_lines(2)
    by_router = {line["router"]: line for line in lines}
    assert by_router["plain"]["sni"] == "plain.example.test"
    assert by_router["plain"]["request_bytes"] == len(b"in the clear behind\n")
    assert by_router["inner"]["sni"] == "secure.example.test"
    assert by_router["inner"]["backend"] == f"tls://127.0.0.1:{inner.port}"


async def test_http_and_tcp_routers_share_one_tls_entrypoint(
    nursery: trio.Nursery, backends_ca: Authority, gateway_ca: Authority, tmp_path: Path
) -> None:
    need_tool("curl", "as the HTTPS client")
    site = Origin("site")
    await nursery.start(site.serve)
    database = TlsEchoBackend("db", backends_ca, "db.example.test")
    await started(nursery, database)
    port = free_port()
    web = gateway_ca.server_pair("www", "www.example.test")
    text = (
        entrypoint("websecure", port, tls_lines([web]), protocol="http")
        + f'services "site" {{\n  load_balancer {{\n'
        f'    servers = [{{ url = "http://127.0.0.1:{site.port}" }}]\n  }}\n}}\n'
        + 'routers "site" {\n  rule = "Host(`www.example.test`)"\n  service = "site"\n}\n'
        + service("db", database.url)
        + tcp_router(
            "db",
            "HostSNI(`db.example.test`)",
            "db",
            'entrypoints = ["websecure"]',
            "tls_passthrough = true",
        )
    )
    async with cli_gateway(tmp_path, text, free_port()):
        # HTTPS with the HTTP router's name: terminated by the gateway, answered by the origin.
        with trio.fail_after(CLIENT_WAIT):
            done = await curl(
                "--resolve",
                f"www.example.test:{port}:127.0.0.1",
                "--cacert",
                str(gateway_ca.ca_file),
                f"https://www.example.test:{port}/over-https",
            )
        assert done.code == 0, done.stderr
        assert done.response.status == 200
        document = json.loads(done.response.body)
        assert document["origin"] == "site"
        assert document["target"] == "/over-https"
        # The TCP router's name on the same port: passed through to the backend's own TLS.
        await passthrough_session(port, "db.example.test", backends_ca, database)
    assert [seen.sni for seen in database.connections] == ["db.example.test"]
    assert len(site.requests) == 1


async def test_alpn_rules_route_passthrough(
    nursery: trio.Nursery, backends_ca: Authority, tmp_path: Path
) -> None:
    protocols = ("x-alpha", "x-beta")
    alpha = TlsEchoBackend("alpha", backends_ca, "svc.example.test", alpn=protocols)
    beta = TlsEchoBackend("beta", backends_ca, "svc.example.test", alpn=protocols)
    await started(nursery, alpha, beta)
    port = free_port()
    text = (
        entrypoint("tcp", port, TIMEOUTS)
        + service("alpha", alpha.url)
        + service("beta", beta.url)
        + tcp_router("alpha", "ALPN(`x-alpha`)", "alpha")
        + tcp_router("beta", "ALPN(`x-beta`)", "beta")
    )
    async with cli_gateway(tmp_path, text, free_port()) as gateway:
        for offered, backend, agreed in (
            (("x-beta",), beta, "x-beta"),
            (("x-gamma", "x-alpha"), alpha, "x-alpha"),
        ):
            context = backends_ca.client_context()
            client = await TlsClient.connect(port, "svc.example.test", context, alpn=offered)
            try:
                assert client.stream.selected_alpn_protocol() == agreed
                assert await client.greeting() == hello(backend, "svc.example.test", agreed)
            finally:
                await client.aclose()
        # No protocol offered: no ALPN rule matches.
        with pytest.raises((trio.BrokenResourceError, OSError)):
            await TlsClient.connect(port, "svc.example.test", backends_ca.client_context())
        assert await gateway.rejected("tcp", "no_route") == 1
    assert [seen.alpn for seen in alpha.connections] == ["x-alpha"]
    assert [seen.alpn for seen in beta.connections] == ["x-beta"]


async def test_non_tls_clients_reach_the_catch_all(
    nursery: trio.Nursery, backends_ca: Authority, tmp_path: Path
) -> None:
    secure = TlsEchoBackend("secure", backends_ca, "a.example.test")
    greeter = EchoBackend("greeter", greeting=b"<hello:greeter>\n")
    await started(nursery, secure, greeter)
    port, unpeeked = free_port(), free_port()
    text = (
        entrypoint("tcp", port, TIMEOUTS)
        + entrypoint("unpeeked", unpeeked, TIMEOUTS)
        + service("secure", secure.url)
        + service("greeter", greeter.url)
        + tcp_router("sni", "HostSNI(`a.example.test`)", "secure", 'entrypoints = ["tcp"]')
        + tcp_router("rest", "HostSNI(`*`)", "greeter")
    )
    waited: list[float] = []

    async def silent_client() -> None:
        """A client that waits for the server (SMTP-like): the peek gives up after its bound
        and the catch-all's backend speaks first."""
        began = trio.current_time()
        client = await PlainClient.connect(port)
        try:
            greeting = await read_until(client.stream, lambda got: got.endswith(b"\n"))
            assert greeting == b"<hello:greeter>\n"
            waited.append(trio.current_time() - began)
            assert await client.send(b"QUIT\n")
            assert await client.half_close_and_read() == b"QUIT\n" + greeter.trailer
        finally:
            await client.aclose()

    async with cli_gateway(tmp_path, text, free_port()), trio.open_nursery() as clients:
        clients.start_soon(silent_client)
        # Meanwhile a client that speaks first: not TLS at its first byte, so no peek wait.
        began = trio.current_time()
        client = await PlainClient.connect(port)
        try:
            assert await client.send(b"EHLO plain\n")
            expected = b"<hello:greeter>\nEHLO plain\n"
            assert await client.receive_exactly(len(expected)) == expected
            assert trio.current_time() - began < PEEK
        finally:
            await client.aclose()
        # And a TLS client with the SNI router's name still reaches the TLS backend.
        await passthrough_session(port, "a.example.test", backends_ca, secure)
        # Where only the catch-all listens there is no peek: the backend speaks at once.
        began = trio.current_time()
        client = await PlainClient.connect(unpeeked)
        try:
            greeting = await read_until(client.stream, lambda got: got.endswith(b"\n"))
            assert greeting == b"<hello:greeter>\n"
            assert trio.current_time() - began < PEEK
        finally:
            await client.aclose()
    assert len(waited) == 1
    assert PEEK - 0.25 <= waited[0] <= PEEK + 5, waited
    assert len(greeter.connections) == 3


async def test_garbage_and_truncated_hellos_never_outlast_the_peek(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    catch = EchoBackend("catch")
    await started(nursery, catch)
    strict, lenient = free_port(), free_port()
    text = (
        entrypoint("strict", strict, TIMEOUTS)
        + entrypoint("lenient", lenient, TIMEOUTS)
        + service("catch", catch.url)
        + tcp_router("sni", "HostSNI(`a.example.test`)", "catch")
        + tcp_router("all", "HostSNI(`*`)", "catch", 'entrypoints = ["lenient"]')
    )
    async with cli_gateway(tmp_path, text, free_port()) as gateway:

        async def timed_close(payload: bytes, *, then_eof: bool = False) -> float:
            """Where only an SNI router listens: how long until the gateway closes."""
            began = trio.current_time()
            client = await PlainClient.connect(strict)
            try:
                assert await client.send(payload)
                if then_eof:
                    await client.stream.send_eof()
                assert await read_until(client.stream, lambda _: False) == b""
            finally:
                await client.aclose()
            return trio.current_time() - began

        async def timed_catch(payload: bytes) -> float:
            """Where a catch-all listens: how long until the backend echoes ``payload``."""
            began = trio.current_time()
            client = await PlainClient.connect(lenient)
            try:
                assert await client.send(payload)
                assert await client.receive_exactly(len(payload)) == payload
                waited = trio.current_time() - began
                assert await client.half_close_and_read() == catch.trailer
            finally:
                await client.aclose()
            return waited

        stalled: dict[str, float] = {}

        async def stall(name: str, timed: Callable[[bytes], Awaitable[float]]) -> None:
            stalled[name] = await timed(HELLO_START)

        async with trio.open_nursery() as clients:
            # A stalled hello waits for the peek bound, on both (at the same time) ...
            clients.start_soon(stall, "strict", timed_close)
            clients.start_soon(stall, "lenient", timed_catch)
            # ... while garbage, a malformed hello and a hello cut short by the client's EOF
            # are decided at once (no SNI): closed where only the SNI router listens ...
            assert await timed_close(b"\x00" * 64) < PEEK
            assert await timed_close(NOT_A_HELLO) < PEEK
            assert await timed_close(HELLO_START, then_eof=True) < PEEK
            # ... and relayed to the catch-all, every peeked byte unchanged, where it listens.
            assert await timed_catch(b"\x00" * 64) < PEEK
            assert await timed_catch(NOT_A_HELLO) < PEEK
        for name in ("strict", "lenient"):
            assert PEEK - 0.25 <= stalled[name] <= PEEK + 5, stalled
        assert await gateway.rejected("strict", "no_route") == 3
        assert sorted(bytes(seen.data) for seen in catch.connections) == sorted(
            [b"\x00" * 64, NOT_A_HELLO, HELLO_START]
        )
        # The malformed hello is counted once per entrypoint; garbage is "not TLS", no error.
        metrics = await gateway.metrics()
        for name in ("strict", "lenient"):
            counted = metric_sum(metrics, "a3s_tcp_client_hello_errors_total", entrypoint=name)
            assert counted == 1, metrics
