"""gRPC through the gateway with real grpcio peers (issue #18 items 5 and 7; SPEC §5.10).

The backend is the demo's ``demo.Echo`` service (``a3s_gateway.demo.grpc_backend``) in its own
process; the client is grpcio's synchronous API in a worker thread
(``tests/support/grpc_peer.py``), speaking h2c prior knowledge to a plaintext entrypoint, or
TLS with ALPN ``h2`` to an entrypoint with ``tls``. The gateway is in-process
(``running_gateway``) except in the CLI test. Its service points at the backend as
``h2c://127.0.0.1:<port>`` and its router takes ``PathPrefix(`/demo.Echo/`)``.

``test_backend_direct`` and ``test_client_command_line_direct`` check the peers themselves,
without the gateway, so that a failure elsewhere in this file is the gateway's. Every call has
a grpcio deadline and every wait is bounded; the backend is stopped (or killed) after each test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Final

import pytest
import trio

from a3s_gateway.demo.grpc_backend import stream_message, summary
from a3s_gateway.demo.grpc_client import Outcome
from tests.support.cli import cli_env, start_gateway
from tests.support.gateway import LOCAL, free_port, running_gateway
from tests.support.grpc_peer import GrpcBackend, GrpcClient, grpc_backend, run_client
from tests.support.tls import Authority

pytestmark = pytest.mark.integration

MIB: Final = 1024 * 1024
#: "Many messages" in one stream.
MANY: Final = 500
#: Bound on the CLI gateway's start (interpreter, imports, bind).
STARTUP_WAIT: Final = 40.0
#: Bound on seeing the backend report a cancelled ``Slow`` call.
CANCEL_WAIT: Final = 15.0
USER: Final = "demo"
PASSWORD: Final = "s3cret:pass"  # a password may hold ':' (split at the first)
#: ``Fail``'s details: non-ASCII and '%' so that the percent-encoding of grpc-message shows.
DETAILS: Final = "no such thing – ü 100%"


def grpc_config(
    backend_port: int,
    *,
    port: int = 0,
    entrypoint: str = "",
    router: str = "",
    more: str = "",
) -> str:
    """Entrypoint ``web`` (h2c by default on plaintext), router ``grpc`` on
    ``PathPrefix(`/demo.Echo/`)`` → service ``echo`` at ``h2c://127.0.0.1:<backend_port>``.
    ``entrypoint`` and ``router`` add lines inside those blocks; ``more`` adds blocks."""
    return (
        'entrypoints "web" {\n'
        f'  address = "{LOCAL}:{port}"\n'
        f"{entrypoint}"
        "}\n\n"
        'routers "grpc" {\n'
        '  rule    = "PathPrefix(`/demo.Echo/`)"\n'
        '  service = "echo"\n'
        f"{router}"
        "}\n\n"
        'services "echo" {\n'
        "  load_balancer {\n"
        f'    servers = [{{ url = "h2c://{LOCAL}:{backend_port}" }}]\n'
        "  }\n"
        "}\n\n"
        f"{more}"
        "shutdown_timeout_secs = 5\n"
    )


LOGIN: Final = f"""middlewares "login" {{
  type     = "basic-auth"
  username = "{USER}"
  password = "{PASSWORD}"
}}

"""


def basic(user: str, password: str) -> str:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return f"Basic {token}"


def pattern(size: int, seed: int = 0) -> bytes:
    """``size`` bytes that are not all alike (a shifted or truncated relay would show)."""
    block = hashlib.sha256(b"%d" % seed).digest()
    return (block * (size // len(block) + 1))[:size]


def assert_ok(outcome: Outcome) -> None:
    assert outcome.code == "OK", (outcome.code, outcome.details, outcome.trailing)


def gateway_client(port: int) -> GrpcClient:
    return GrpcClient(f"{LOCAL}:{port}")


# -- the four kinds of call, checked against any target ----------------------------------------


async def check_unary(client: GrpcClient) -> None:
    """A 2 MiB message each way, with metadata both ways (headers and trailers)."""
    big = pattern(2 * MIB + 3)
    outcome = await client.unary(big, metadata=(("x-echo-token", "abc"), ("x-other", "no")))
    assert_ok(outcome)
    assert outcome.messages == (big,)
    assert ("x-echo-token", "abc") in outcome.initial
    assert not any(key == "x-other" for key, _ in outcome.initial)
    assert outcome.trailer("x-demo-size") == str(len(big))
    empty = await client.unary(b"")
    assert_ok(empty)
    assert empty.messages == (b"",)


async def check_server_stream(client: GrpcClient) -> None:
    many = await client.server_stream(b"%d" % MANY)
    assert_ok(many)
    assert many.messages == tuple(stream_message(number) for number in range(MANY))
    large = await client.server_stream(b"4:%d" % (MIB + 1))
    assert_ok(large)
    assert large.messages == tuple(stream_message(number, MIB + 1) for number in range(4))
    none = await client.server_stream(b"0")
    assert_ok(none)
    assert none.messages == ()


async def check_client_stream(client: GrpcClient) -> None:
    many = [pattern(100 + number % 7, number) for number in range(MANY)]
    outcome = await client.client_stream(many, metadata=(("x-echo-kind", "client"),))
    assert_ok(outcome)
    assert outcome.messages == (summary(many),)
    assert ("x-echo-kind", "client") in outcome.initial
    large = [pattern(MIB + number, number) for number in range(3)]
    big = await client.client_stream(large)
    assert_ok(big)
    assert json.loads(big.messages[0]) == json.loads(summary(large))


async def check_bidi(client: GrpcClient) -> None:
    """Lockstep: each message waits for the echo of the one before, so a relay that held
    messages back until the end of the stream would end in DEADLINE_EXCEEDED here."""
    many = [b"message %d" % number for number in range(MANY)]
    outcome = await client.bidi(many, metadata=(("x-echo-kind", "bidi"),))
    assert_ok(outcome)
    assert outcome.messages == tuple(many)
    assert ("x-echo-kind", "bidi") in outcome.initial
    large = [pattern(MIB + 5, number) for number in range(3)]
    big = await client.bidi(large)
    assert_ok(big)
    assert big.messages == tuple(large)


async def check_failure(client: GrpcClient) -> None:
    request = f"NOT_FOUND:{DETAILS}".encode()
    outcome = await client.unary(request, method="Fail")
    assert outcome.code == "NOT_FOUND"
    assert outcome.details == DETAILS
    assert outcome.messages == ()
    assert outcome.trailer("x-demo-detail") == "NOT_FOUND requested"
    assert outcome.trailer("x-demo-detail-bin") == request


async def check_deadline(client: GrpcClient, backend: GrpcBackend) -> None:
    """A 300 ms deadline on a call the backend answers after 10 s: DEADLINE_EXCEEDED, and the
    backend sees the call end long before its 10 s."""
    outcome = await client.unary(b"10000", method="Slow", deadline=0.3)
    assert outcome.code == "DEADLINE_EXCEEDED", outcome
    with trio.fail_after(CANCEL_WAIT):
        line = await backend.wait_for_line("Slow cancelled after")
    assert int(line.split()[3]) < 5_000


async def check_all_kinds(client: GrpcClient, backend: GrpcBackend) -> None:
    await check_unary(client)
    await check_server_stream(client)
    await check_client_stream(client)
    await check_bidi(client)
    await check_failure(client)
    await check_deadline(client, backend)


# -- the peers alone -----------------------------------------------------------------------------


async def test_backend_direct() -> None:
    async with grpc_backend() as backend:
        client = GrpcClient(backend.target)
        await check_all_kinds(client, backend)
        answered = await client.unary(b"20", method="Slow")
        assert_ok(answered)
        assert answered.messages == (b"slept 20 ms",)
        missing = await client.unary(b"x", full_path="/demo.Echo/Nope")
        assert missing.code == "UNIMPLEMENTED"
        bad = await client.server_stream(b"many")
        assert bad.code == "INVALID_ARGUMENT"
        wrong = await client.unary(b"OK:fine", method="Fail")
        assert wrong.code == "INVALID_ARGUMENT"
        assert await backend.stop() == 0  # SIGTERM is a clean stop


async def test_backend_refuses_a_port_already_taken() -> None:
    async with grpc_backend() as backend:
        command = [sys.executable, "-m", "a3s_gateway.demo.grpc_backend", "--port"]
        with trio.fail_after(30):
            second = await trio.run_process(
                [*command, str(backend.port)],
                stdin=b"",
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=cli_env(),
            )
    assert second.returncode == 1
    assert second.stdout == b""  # no "listening" line
    assert f"cannot listen on {LOCAL}:{backend.port}" in second.stderr.decode()


async def test_client_command_line_direct() -> None:
    async with grpc_backend() as backend:
        target = ("--target", backend.target, "--timeout", "10")
        with trio.fail_after(30):
            headers = ("--authority", "echo.test", "-H", "X-Echo-A=b")
            unary = await run_client(*target, *headers, "unary", "hello", "there")
            streamed = await run_client(*target, "server-stream", "3")
            bidi = await run_client(*target, "bidi", "x", "y")
            failed = await run_client(*target, "fail", "PERMISSION_DENIED:go away")
    assert unary.code == 0, unary.stderr
    assert unary.stdout.splitlines() == [
        "header x-echo-a: b",
        "message: hello there",
        "trailer x-demo-size: 11",
        "status: OK",
    ]
    assert streamed.stdout.splitlines() == ["message: 0", "message: 1", "message: 2", "status: OK"]
    assert bidi.stdout.splitlines() == ["message: x", "message: y", "status: OK"]
    assert failed.code == 1
    assert failed.stdout.splitlines()[-1] == "status: PERMISSION_DENIED (go away)"


# -- through the gateway -------------------------------------------------------------------------


async def test_all_call_kinds_through_the_gateway() -> None:
    async with grpc_backend() as backend, running_gateway(grpc_config(backend.port)) as gateway:
        await check_all_kinds(gateway_client(gateway.port), backend)


async def test_concurrent_calls_share_the_gateway() -> None:
    """Eight bidirectional streams at once, each relayed whole and in order."""
    async with grpc_backend() as backend, running_gateway(grpc_config(backend.port)) as gateway:
        client = gateway_client(gateway.port)
        results: list[Outcome] = []

        async def one(number: int) -> None:
            results.append(await client.bidi([b"%d-%d" % (number, n) for n in range(50)]))

        async with trio.open_nursery() as nursery:
            for number in range(8):
                nursery.start_soon(one, number)
    assert [outcome.code for outcome in results] == ["OK"] * 8, results[0]
    assert all(len(outcome.messages) == 50 for outcome in results)
    assert sorted(outcome.messages[0] for outcome in results) == [b"%d-0" % n for n in range(8)]


async def test_a_backend_nobody_listens_on_is_unavailable() -> None:
    async with running_gateway(grpc_config(free_port())) as gateway:
        outcome = await gateway_client(gateway.port).unary(b"hello")
    assert outcome.code == "UNAVAILABLE", outcome
    assert outcome.messages == ()


async def test_a_path_no_router_takes_is_unimplemented() -> None:
    async with grpc_backend() as backend, running_gateway(grpc_config(backend.port)) as gateway:
        outcome = await gateway_client(gateway.port).unary(b"x", full_path="/other.Service/Call")
    assert outcome.code == "UNIMPLEMENTED", outcome


async def test_basic_auth_rejects_with_unauthenticated_and_passes_good_credentials() -> None:
    async with grpc_backend() as backend:
        text = grpc_config(backend.port, router='  middlewares = ["login"]\n', more=LOGIN)
        async with running_gateway(text) as gateway:
            client = gateway_client(gateway.port)
            missing = await client.unary(b"hello")
            wrong = await client.unary(b"hello", metadata=(("authorization", basic(USER, "no")),))
            good = (("authorization", basic(USER, PASSWORD)),)
            passed = await client.unary(b"hello", metadata=good)
            streamed = await client.bidi([b"a", b"b"], metadata=good)
    for refused in (missing, wrong):
        assert refused.code == "UNAUTHENTICATED", refused
        assert refused.details != ""
        assert refused.messages == ()
    assert_ok(passed)
    assert passed.messages == (b"hello",)
    assert_ok(streamed)
    assert streamed.messages == (b"a", b"b")


async def test_grpc_over_tls_with_alpn_h2(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "pki")
    cert, key = authority.server_pair("gateway", "localhost", LOCAL)
    tls = f'  tls {{\n    cert_file = "{cert}"\n    key_file  = "{key}"\n  }}\n'
    ca = authority.ca_file.read_bytes()
    async with (
        grpc_backend() as backend,
        running_gateway(grpc_config(backend.port, entrypoint=tls)) as gateway,
    ):
        client = GrpcClient(f"{LOCAL}:{gateway.port}", tls_ca=ca, authority="localhost")
        await check_unary(client)
        await check_bidi(client)
        await check_failure(client)


async def test_grpc_through_the_cli_gateway(tmp_path: Path) -> None:
    async with grpc_backend() as backend:
        port = free_port()
        config = tmp_path / "gateway.hcl"
        config.write_text(grpc_config(backend.port, port=port), encoding="utf-8")
        gateway = await start_gateway(str(config))
        try:
            with trio.fail_after(STARTUP_WAIT):
                await gateway.wait_for_line("listening entrypoint=web")
            target = ("--target", f"{LOCAL}:{port}", "--timeout", "10")
            with trio.fail_after(30):
                unary = await run_client(*target, "unary", "through", "the", "cli")
            outcome = await gateway_client(port).server_stream(b"%d" % MANY)
        finally:
            if gateway.process.returncode is None:
                gateway.process.kill()
            with trio.CancelScope(shield=True):
                await gateway.process.wait()
    assert unary.code == 0, (unary.stdout, unary.stderr)
    assert "message: through the cli" in unary.stdout.splitlines()
    assert_ok(outcome)
    assert len(outcome.messages) == MANY
