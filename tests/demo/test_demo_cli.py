"""``a3s-gateway demo`` (SPEC §2.1): the command line, ``run_demo`` in-process, and the whole
demo end to end through the gateway.
"""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import subprocess
import sys
from functools import partial
from typing import TYPE_CHECKING

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from a3s_gateway import cli
from a3s_gateway.demo import BackendPorts, RunningDemo, run_demo
from a3s_gateway.demo.run import banner
from tests.demo.client import BANNER_END, curl, read_until
from tests.support.cli import ROOT, cli_env, run_cli

if TYPE_CHECKING:
    from pathlib import Path


async def start_demo(nursery: trio.Nursery, out: io.StringIO) -> RunningDemo:
    running: RunningDemo = await nursery.start(partial(run_demo, 0, out=out))
    return running


def test_demo_help() -> None:
    done = run_cli("demo", "--help")
    assert done.code == 0, done.stderr
    assert "--port" in done.stdout


@pytest.mark.parametrize("port", ["70000", "-1", "eighty"])
def test_a_bad_port_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["demo", "--port", port]) == 2
    assert "--port" in capsys.readouterr().err


MANAGEMENT_URL = re.compile(r"curl -s (http://127\.0\.0\.1:\d+/api/gateway)/health\n")


def test_the_banner_lists_urls_and_commands() -> None:
    text = banner(
        "http://127.0.0.1:8080",
        BackendPorts(9101, 9102, 9103, 9104, 9105, 9106),
        listening=True,
        management="http://127.0.0.1:9901/api/gateway",
    )
    for line in (
        "curl -i http://127.0.0.1:8080/api/hello",
        "curl -N http://127.0.0.1:8080/events",
        "curl -i --data 'name=demo' http://127.0.0.1:8080/api/orders",
        "curl -i http://127.0.0.1:8080/api/status/503",
        "echo-a    http://127.0.0.1:9101",
        "  websocat ws://127.0.0.1:8080/ws\n",
        "  websocat ws://127.0.0.1:8080/mux\n",
        '    {"type":"subscribe","channel":"chat","id":1}\n',
        "/ws -> ws",
        "/mux -> mux",
        "curl -s http://127.0.0.1:9901/api/gateway/health\n",
        "curl -s http://127.0.0.1:9901/api/gateway/metrics",
    ):
        assert line in text
    # Every WebSocket URL is the gateway's: none on the stream backend's own port.
    assert "ws://127.0.0.1:9103" not in text
    assert "later release" not in text
    assert "issue" not in text
    # The banner ends with the management lines (the CLI test reads up to the last one).
    assert text.endswith(BANNER_END + "\n")
    assert text.index("/mux\n") < text.index("/api/gateway/metrics")
    without = banner(
        "http://127.0.0.1:8080", BackendPorts(9101, 9102, 9103, 9104, 9105, 9106), listening=True
    )
    assert "api/gateway" not in without
    assert "Management API" not in without
    assert "opens no listeners" in banner("x", BackendPorts(1, 2, 3, 4, 5, 6), listening=False)


async def check_management(printed: str) -> None:
    """The management URL the banner names answers: health says running, and the metrics
    count the requests the gateway served."""
    found = MANAGEMENT_URL.search(printed)
    assert found is not None, printed
    base = found.group(1)
    health = json.loads(await curl(f"{base}/health"))
    assert health["state"] == "running"
    assert health["workers"] == 1
    metrics = await curl(f"{base}/metrics")
    assert "# TYPE a3s_http_requests_total counter" in metrics
    assert "a3s_build_info{" in metrics


async def test_run_demo_starts_backends_and_stops_after_shutdown() -> None:
    out = io.StringIO()
    async with trio.open_nursery() as nursery:
        running = await start_demo(nursery, out)
        document = json.loads(await curl(f"http://127.0.0.1:{running.backends.echo_a}/x"))
        assert document["service"] == "echo-a"
        await running.gateway.shutdown()
    # run_demo returned on its own: the backends were cancelled once the gateway stopped.
    text = out.getvalue()
    assert f"curl -i {running.url}/api/hello" in text
    assert f"websocat {running.url.replace('http://', 'ws://')}/ws\n" in text
    assert f"ws://127.0.0.1:{running.backends.stream}" not in text
    assert running.management is not None
    assert f"curl -s {running.management}/health" in text
    assert running.tcp_port is not None
    assert f"| nc -N 127.0.0.1 {running.tcp_port}\n" in text


@pytest.mark.integration
async def test_demo_end_to_end(nursery: trio.Nursery) -> None:
    out = io.StringIO()
    running = await start_demo(nursery, out)
    try:
        url = running.url
        seen = [json.loads(await curl(f"{url}/api/hello"))["service"] for _ in range(4)]
        assert sorted(seen) == ["echo-a", "echo-a", "echo-b", "echo-b"]  # round-robin
        posted = json.loads(await curl("--data", "name=demo", f"{url}/api/orders?x=1"))
        assert (posted["method"], posted["path"], posted["query"]) == ("POST", "/api/orders", "x=1")
        assert posted["body_bytes"] == len("name=demo")
        headers = {name.lower(): value for name, value in posted["headers"].items()}
        assert headers["x-forwarded-for"] == "127.0.0.1"  # SPEC §5.4
        status = await curl("-o", "/dev/null", "-w", "%{http_code}", f"{url}/api/status/503")
        assert status == "503"
        assert len(await curl(f"{url}/api/bytes/1048576")) == 1048576
        assert json.loads(await curl(f"{url}/hello"))["path"] == "/hello"  # fallback router
        events = await curl("-N", f"{url}/events?count=3&interval_ms=10")
        assert re.findall(r'"count": (\d+)', events) == ["1", "2", "3"]
        await check_management(out.getvalue())
        assert running.management is not None
        metrics = await curl(f"{running.management}/metrics")
        route = {"entrypoint": "web", "router": "api", "service": "api"}
        served = [
            sample.value
            for family in text_string_to_metric_families(metrics)
            for sample in family.samples
            if sample.name == "a3s_http_requests_total"
            and sample.labels == {**route, "method": "GET", "code": "200"}
        ]
        assert served == [5]  # the four /api/hello and the /api/bytes above
    finally:
        await running.gateway.shutdown()


@pytest.mark.integration
async def test_an_admin_token_in_the_shell_does_not_lock_the_banner_commands(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # demo.hcl reads its own token variable, so the production one changes nothing here...
    monkeypatch.setenv("A3S_GATEWAY_ADMIN_TOKEN", "not-for-the-demo")
    async with trio.open_nursery() as nursery:
        out = io.StringIO()
        running = await start_demo(nursery, out)
        try:
            await check_management(out.getvalue())
        finally:
            await running.gateway.shutdown()
    # ...while the demo's own variable does put the API behind a token.
    monkeypatch.setenv("A3S_DEMO_ADMIN_TOKEN", "demo-token")
    async with trio.open_nursery() as nursery:
        running = await start_demo(nursery, io.StringIO())
        try:
            assert running.management is not None
            code = await curl(
                "-o", "/dev/null", "-w", "%{http_code}", f"{running.management}/metrics"
            )
            assert code == "401"
        finally:
            await running.gateway.shutdown()


async def check_tcp_echo(printed: str) -> None:
    """The TCP entrypoint the banner names echoes a half-closing client."""
    found = re.search(r"\| nc -N 127\.0\.0\.1 (\d+)\n", printed)
    assert found is not None, printed
    with trio.fail_after(10):
        async with await trio.open_tcp_stream("127.0.0.1", int(found.group(1))) as stream:
            await stream.send_all(b"hello\n")
            await stream.send_eof()
            received = b""
            while chunk := await stream.receive_some(65536):
                received += chunk
    assert received == b"hello\n"


@pytest.mark.integration
async def test_demo_on_a_taken_port_exits_3() -> None:
    async with trio.open_nursery() as nursery:
        running = await start_demo(nursery, io.StringIO())
        await running.gateway.shutdown()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = await trio.run_process(
            [sys.executable, "-m", "a3s_gateway", "demo", "--port", port],
            capture_stdout=True,
            capture_stderr=True,
            env=cli_env(),
            cwd=ROOT,
            check=False,
        )
    assert done.returncode == 3, done.stderr
    assert port in done.stderr.decode()


@pytest.mark.integration
async def test_the_demo_command_runs_until_sigint(tmp_path: Path) -> None:
    with (tmp_path / "stderr").open("wb") as errors:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "a3s_gateway", "demo", "--port", "0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=cli_env(),
            cwd=ROOT,
        )
    try:
        printed = await read_until(process, BANNER_END.encode())
        echo_b = re.search(r"echo-b +http://127\.0\.0\.1:(\d+)", printed)
        assert echo_b is not None, printed
        document = json.loads(await curl(f"http://127.0.0.1:{echo_b.group(1)}/direct"))
        assert document["service"] == "echo-b"
        await check_management(printed)
        await check_tcp_echo(printed)
        grpc = re.search(r"grpc +h2c://127\.0\.0\.1:(\d+) ", printed)
        assert grpc is not None, printed  # grpcio is in the test group: the backend runs
        grpc_port = int(grpc.group(1))
        await (await trio.open_tcp_stream("127.0.0.1", grpc_port)).aclose()
        process.send_signal(signal.SIGINT)
        with trio.fail_after(20):
            assert await process.wait() == 0, (tmp_path / "stderr").read_text()
        # The demo stopped its gRPC backend (a child process) before it exited.
        with pytest.raises(OSError, match="all attempts to connect"):
            await trio.open_tcp_stream("127.0.0.1", grpc_port)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
