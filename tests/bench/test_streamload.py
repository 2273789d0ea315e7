"""``bench.harness.streamload``: the summary line of ``bench/tools/streamload.c`` → the run's
numbers, its command lines, and (integration) the tool built and run against its own servers.

The ``streamload-*.txt`` files are the tool's real output: a clean WebSocket echo run and a
clean SSE run (64 connections, 1 s, straight at its own servers), a WebSocket client pointed at
the SSE server (every handshake answered 200), an SSE client at a closed port, and a WebSocket
run whose echo server was stopped (SIGSTOP) after a second: every connection timed out.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Final

import pytest
from bench.harness import streamcheck, streamload
from bench.harness.wrk import WrkError
from bench.procs import Child, Children, free_port

from tests.support.gateway import need_tool

HERE: Final = Path(__file__).resolve().parent


def _output(name: str) -> str:
    return (HERE / f"streamload-{name}.txt").read_text()


def test_the_summary_of_a_clean_websocket_run() -> None:
    summary = streamload.parse(_output("ws-clean"))
    assert summary == streamload.Summary(
        mode="ws-client",
        connections=64,
        open=64,
        count=40111,
        duration_us=1000017,
        cpu_us=303472,
        bytes=1363774,
        errors=dict.fromkeys(streamload.ERROR_KINDS, 0),
        min_us=16,
        mean_us=1593.4,
        p50_us=858,
        p90_us=4183,
        p99_us=8991,
        max_us=12741,
        first_error="",
    )
    assert summary.bytes == summary.count * (2 + streamload.MESSAGE_BYTES)  # unmasked echoes


def test_the_result_of_a_clean_sse_run() -> None:
    result = streamload.result(streamload.parse(_output("sse-clean")))
    assert isinstance(result, streamload.StreamResult)
    assert result.requests == 90172
    assert result.rps == pytest.approx(90172 / 1.0008)
    assert (result.p50_us, result.p90_us, result.p99_us, result.max_us) == (1661, 3719, 7063, 65291)
    assert result.mean_us == pytest.approx(1978.3)
    assert result.error_count == 0
    assert result.load_cpu_us == 232726
    # every event is 40 bytes in a chunk of its own: "28\r\n" + event + "\r\n"
    assert result.bytes == result.requests * (streamload.EVENT_BYTES + 6)


def test_a_run_that_counted_nothing_says_why() -> None:
    handshake = streamload.parse(_output("ws-handshake"))
    assert (handshake.open, handshake.errors["handshake"]) == (0, 4)
    with pytest.raises(streamload.StreamloadError, match=r"answered HTTP/1\.1 200 OK") as caught:
        streamload.result(handshake)
    assert "no message was echoed: 0 of 4 connections" in str(caught.value)
    refused = streamload.parse(_output("sse-refused"))
    with pytest.raises(streamload.StreamloadError, match=r"no event arrived.*Connection refused"):
        streamload.result(refused)
    # The runner catches WrkError around every load tool.
    assert issubclass(streamload.StreamloadError, WrkError)


def test_timeouts_are_load_errors() -> None:
    result = streamload.result(streamload.parse(_output("ws-stalled")))
    assert result.requests == 65982
    assert result.errors["timeout"] == 8
    assert result.error_count == 8


def test_output_without_the_summary_is_an_error() -> None:
    with pytest.raises(streamload.StreamloadError, match="no STREAMLOAD line"):
        streamload.parse("streamload: epoll_create1: Too many open files\n")


def test_the_client_command() -> None:
    argv = streamload.client_command(
        Path("/tmp/b/streamload"),
        "sse-client",
        "http://127.0.0.1:8080/events",
        seconds=3.0,
        connections=64,
        credits=Path("/tmp/run/sse-credits.sock"),
    )
    assert argv == [
        "/tmp/b/streamload",
        "--mode",
        "sse-client",
        "--host",
        "127.0.0.1",
        "--port",
        "8080",
        "--path",
        "/events",
        "--connections",
        "64",
        "--duration",
        "3",
        "--size",
        "32",
        "--timeout",
        "5",
        "--credits",
        "/tmp/run/sse-credits.sock",
    ]
    ws = streamload.client_command(
        Path("s"), "ws-client", "http://127.0.0.1:9/", seconds=1.5, connections=1, size=100
    )
    assert ws[ws.index("--duration") + 1] == "1.5"
    assert ws[ws.index("--size") + 1] == "100"
    assert "--credits" not in ws
    with pytest.raises(ValueError, match="http://IPv4:port"):
        streamload.client_command(Path("s"), "ws-client", "https://x/", seconds=1, connections=1)


def test_the_server_commands() -> None:
    binary = Path("/tmp/b/streamload")
    assert streamload.server_command(binary, "ws-echo-server", 9000) == [
        "/tmp/b/streamload",
        "--mode",
        "ws-echo-server",
        "--host",
        "127.0.0.1",
        "--port",
        "9000",
    ]
    sse = streamload.server_command(binary, "sse-server", 9001, credits=Path("/tmp/c.sock"))
    assert sse[-4:] == ["--credits", "/tmp/c.sock", "--window", str(streamload.SSE_WINDOW)]


def test_the_event_size() -> None:
    assert streamload.EVENT_BYTES == len(b"data: ") + 32 + 2 == 40


def test_a_missing_compiler_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(streamload.BuildError, match="no-such-cc is needed"):
        streamload.build(tmp_path, cc="no-such-cc")


@pytest.mark.integration
def test_the_tool_against_its_own_servers(tmp_path: Path) -> None:
    # Build as the harness does (-Werror), check SHA-1 and the RFC 6455 accept value, then one
    # second of each client straight at its server, and the Python checks against both.
    need_tool("gcc", "to build bench/tools/streamload.c")
    binary = streamload.build(tmp_path / "build")
    selftest = subprocess.run(
        [str(binary), "--self-test"], capture_output=True, text=True, timeout=30, check=False
    )
    assert selftest.returncode == 0, selftest.stdout + selftest.stderr
    credits = tmp_path / "credits.sock"
    ws_port, sse_port = free_port(), free_port()
    with Children() as scope:
        for mode, port, argv in (
            (
                "ws-echo-server",
                ws_port,
                streamload.server_command(binary, "ws-echo-server", ws_port),
            ),
            (
                "sse-server",
                sse_port,
                streamload.server_command(binary, "sse-server", sse_port, credits=credits),
            ),
        ):
            child = scope.start(Child(mode, argv, log_path=tmp_path / f"{mode}.log"))
            child.wait_for_port(port, timeout=10)
        echoed = streamload.run(
            binary, "ws-client", f"http://127.0.0.1:{ws_port}/ws", seconds=1, connections=4
        )
        events = streamload.run(
            binary,
            "sse-client",
            f"http://127.0.0.1:{sse_port}/events",
            seconds=1,
            connections=4,
            credits=credits,
        )
        assert streamcheck.websocket(ws_port, "/ws", size=streamload.MESSAGE_BYTES) is None
        assert streamcheck.sse(sse_port, "/events") is None
        wrong = streamcheck.websocket(sse_port, "/events", size=32) or ""
        assert "answered b'HTTP/1.1 200 OK' (expected 101)" in wrong
    for result in (echoed, events):
        assert result.requests > 0
        assert result.error_count == 0, result.errors
        assert 0 < result.p50_us <= result.p99_us <= result.max_us
        assert result.load_cpu_us > 0
