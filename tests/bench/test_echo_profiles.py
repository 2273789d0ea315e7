"""The TCP and UDP echo profiles (issue #20): their place in the plan, streamload's echo modes
(the summary line, with the UDP losses, and the command lines), the NGINX ``stream`` and gateway
configs they render, their check requests, their SPEC §15 rows and loss table in the report.

The ``streamload-tcp-*.txt`` and ``streamload-udp-*.txt`` files are the tool's real output: a
clean TCP echo run (64 connections, 1 s, straight at its echo server), a TCP client at a closed
port, a UDP run of 2 s whose echo server was stopped (SIGSTOP) for half a second after 1.2 s (two
datagrams of each of the 64 sockets lost, their echoes late once it went on), and a UDP client
at a closed port (every datagram answered by ICMP port unreachable).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Final, cast

import pytest
from bench.harness import (
    cli,
    environment,
    gateway,
    nginx,
    plan,
    report,
    runner,
    streamcheck,
    streamload,
)
from bench.harness.runner import ProductRun, ProfileRun, Settings, Trial
from bench.procs import Child, Children, free_port

from a3s_gateway.config.load import load_config_text
from tests.support.gateway import need_tool

if TYPE_CHECKING:
    from bench.harness.runner import Runner

HERE: Final = Path(__file__).resolve().parent


def _output(name: str) -> str:
    return (HERE / f"streamload-{name}.txt").read_text()


# -- the plan -------------------------------------------------------------------------------------


def test_the_profiles_and_the_alias() -> None:
    names = [profile.name for profile in plan.select_profiles(["tcp-udp"])]
    assert names == ["tcp-echo-32b-1w", "udp-echo-32b-1w"]
    tcp, udp = plan.TCP_ECHO_1W, plan.UDP_ECHO_1W
    assert (tcp.protocol, udp.protocol) == ("tcp", "udp")
    assert tcp.body_bytes == tcp.response_bytes == udp.body_bytes == udp.response_bytes == 32
    assert (tcp.layer4, udp.layer4, tcp.uses_streamload, udp.uses_streamload) == (True,) * 4
    assert (tcp.streaming, udp.streaming, tcp.http2, udp.http2) == (False,) * 4
    assert (tcp.unit, udp.unit) == ("msg", "msg")
    assert tcp.nginx_workers == udp.nginx_workers == "1"
    assert "200 ms" in udp.description
    # the streaming profiles use streamload too, but are not layer 4
    assert plan.WS_ECHO_1W.uses_streamload
    assert not plan.WS_ECHO_1W.layer4
    assert not plan.GET_1W.uses_streamload
    assert [p.name for p in plan.PROFILES if p.layer4] == names
    assert "tcp-udp" in plan.profile_names()


def test_products() -> None:
    # `direct` is streamload straight at its echo backend: the ceiling of each profile.
    assert plan.products_for(plan.TCP_ECHO_1W, ("aiohttp-uvloop",), []) == [
        "direct",
        "nginx",
        "a3s-1w",
    ]
    assert plan.products_for(plan.UDP_ECHO_1W, (), ["a3s-1w"]) == ["nginx", "a3s-1w"]


def test_the_runners_modes_and_urls() -> None:
    assert runner.CLIENT_MODES["tcp"] == "tcp-client"
    assert runner.CLIENT_MODES["udp"] == "udp-client"
    assert runner.BACKEND_PROTOCOLS["tcp-echo-server"] == "tcp"
    assert runner.BACKEND_PROTOCOLS["udp-echo-server"] == "udp"
    assert set(runner.CLIENT_MODES) == set(runner.BACKEND_PROTOCOLS.values())


# -- streamload's echo modes ----------------------------------------------------------------------


def test_the_summary_of_a_clean_tcp_run() -> None:
    summary = streamload.parse(_output("tcp-clean"))
    assert (summary.mode, summary.connections, summary.open) == ("tcp-client", 64, 64)
    assert (summary.count, summary.duration_us, summary.cpu_us) == (44260, 1000809, 312397)
    assert summary.bytes == summary.count * streamload.MESSAGE_BYTES  # raw echoes, no framing
    assert (summary.p50_us, summary.p90_us, summary.p99_us, summary.max_us) == (
        811,
        3615,
        8751,
        13097,
    )
    assert (summary.lost, summary.late) == (0, 0)
    result = streamload.result(summary)
    assert result.requests == 44260
    assert result.rps == pytest.approx(44260 / 1.000809)
    assert result.error_count == 0
    assert (result.lost, result.late, result.load_cpu_us) == (0, 0, 312397)


def test_udp_losses_are_counted_apart_from_errors() -> None:
    summary = streamload.parse(_output("udp-stalled"))
    assert (summary.mode, summary.open, summary.count) == ("udp-client", 64, 55723)
    # half a second stopped: two datagrams of every socket given up after 200 ms each, and
    # their echoes came once the server went on
    assert (summary.lost, summary.late) == (128, 128)
    result = streamload.result(summary)
    assert (result.lost, result.late) == (128, 128)
    assert result.error_count == 0
    assert result.max_us == 114561
    assert result.bytes == result.requests * streamload.MESSAGE_BYTES


def test_echo_runs_that_counted_nothing_say_why() -> None:
    tcp = streamload.parse(_output("tcp-refused"))
    assert tcp.errors["connect"] == 64
    with pytest.raises(streamload.StreamloadError, match=r"no message was echoed: 0 of 64"):
        streamload.result(tcp)
    udp = streamload.parse(_output("udp-refused"))
    assert (udp.errors["handshake"], udp.errors["read"]) == (4, 20)
    with pytest.raises(streamload.StreamloadError, match=r"no message.*Connection refused"):
        streamload.result(udp)


def test_older_summaries_have_no_losses() -> None:
    # the streaming modes' outputs from before the echo modes have no "lost" or "late"
    summary = streamload.parse(_output("sse-refused"))
    assert (summary.lost, summary.late) == (0, 0)


def test_the_echo_client_commands() -> None:
    binary = Path("/tmp/b/streamload")
    tcp = streamload.client_command(
        binary, "tcp-client", "tcp://127.0.0.1:7000/", seconds=3.0, connections=64
    )
    assert tcp == [
        "/tmp/b/streamload",
        "--mode",
        "tcp-client",
        "--host",
        "127.0.0.1",
        "--port",
        "7000",
        "--connections",
        "64",
        "--duration",
        "3",
        "--size",
        "32",
        "--timeout",
        "5",
    ]
    udp = streamload.client_command(
        binary, "udp-client", "udp://127.0.0.1:7001", seconds=1, connections=8, retry=0.05
    )
    assert udp[udp.index("--retry") + 1] == "0.05"
    assert "--path" not in udp
    default = streamload.client_command(
        binary, "udp-client", "udp://127.0.0.1:7001", seconds=1, connections=8
    )
    assert default[default.index("--retry") + 1] == "0.2"
    with pytest.raises(ValueError, match="tcp://IPv4:port"):
        streamload.client_command(
            binary, "tcp-client", "http://127.0.0.1:1/", seconds=1, connections=1
        )
    with pytest.raises(ValueError, match="udp://IPv4:port"):
        streamload.client_command(
            binary, "udp-client", "tcp://127.0.0.1:1", seconds=1, connections=1
        )
    with pytest.raises(ValueError, match="server mode"):
        streamload.client_command(
            binary, "udp-echo-server", "udp://127.0.0.1:1", seconds=1, connections=1
        )


def test_the_echo_server_commands() -> None:
    binary = Path("/tmp/b/streamload")
    for mode in ("tcp-echo-server", "udp-echo-server"):
        argv = streamload.server_command(binary, mode, 9100)
        assert argv == [str(binary), "--mode", mode, "--host", "127.0.0.1", "--port", "9100"]


# -- the products' configs ------------------------------------------------------------------------


def _fake_module(directory: Path) -> Path:
    module = directory / "ngx_stream_module.so"
    module.write_bytes(b"")
    return module


def test_the_nginx_tcp_proxy(tmp_path: Path) -> None:
    module = _fake_module(tmp_path)
    text = nginx.write_stream_proxy(tmp_path, 9000, 8000, "1", "tcp", module=module).read_text()
    assert text.startswith(f"load_module {module};\n")
    assert "worker_processes 1;" in text
    assert "stream {" in text
    assert "http {" not in text
    assert "server 127.0.0.1:8000;" in text
    assert "listen 127.0.0.1:9000 backlog=4096;" in text
    assert "proxy_pass bench_backend;" in text
    assert "udp" not in text


def test_the_nginx_udp_proxy(tmp_path: Path) -> None:
    module = _fake_module(tmp_path)
    text = nginx.write_stream_proxy(tmp_path, 9001, 8001, "1", "udp", module=module).read_text()
    assert "listen 127.0.0.1:9001 udp;" in text
    assert f"proxy_timeout {nginx.UDP_SESSION_TIMEOUT};" in text
    # a long-lived echo session: no limit on answers or requests per session
    assert "proxy_responses" not in text
    assert "proxy_requests" not in text


def test_a_missing_stream_module_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "none.so"
    with pytest.raises(RuntimeError, match="install the Debian package libnginx-mod-stream"):
        nginx.write_stream_proxy(tmp_path, 9000, 8000, "1", "tcp", module=missing)
    assert environment.missing_tools(stream_module=True, module=missing)[-1] == (
        f"{missing} (libnginx-mod-stream)"
    )
    assert environment.missing_tools(module=missing) == environment.missing_tools()


def _loads_or_waits(text: str) -> None:
    """The config loads, or is refused only because its feature has not landed yet."""
    problems: list[str] = []
    try:
        load_config_text(text)
    except Exception as error:  # the loader's error lists every problem
        problems = [line for line in str(error).splitlines() if "error:" in line] or [str(error)]
    assert all("is not available yet" in line for line in problems), problems


def test_the_gateways_tcp_config() -> None:
    text = gateway.layer4_config_text("tcp", 9000, 8000)
    assert 'entrypoints "tcp" {' in text
    assert 'protocol = "tcp"' in text
    assert 'url = "tcp://127.0.0.1:8000"' in text
    assert 'tcp_routers "echo" {' in text
    assert "HostSNI(`*`)" in text
    assert 'entrypoints = ["tcp"]' in text
    assert "access_log_enabled = false" in text
    _loads_or_waits(text)


def test_the_gateways_udp_config() -> None:
    text = gateway.layer4_config_text("udp", 9001, 8001)
    assert 'entrypoints "dgram" {' in text
    assert 'protocol = "udp"' in text
    assert 'url = "udp://127.0.0.1:8001"' in text
    assert 'udp_routers "uecho" {' in text
    assert "rule" not in text
    _loads_or_waits(text)
    with pytest.raises(ValueError, match="no layer-4 config"):
        gateway.layer4_config_text("http", 1, 2)


# -- the check requests ---------------------------------------------------------------------------


def test_closed_ports_fail_the_echo_checks() -> None:
    port = free_port()  # nothing listens there
    assert "TCP check failed: ConnectionRefusedError" in (
        streamcheck.tcp(port, size=32, timeout=2) or ""
    )
    reason = streamcheck.udp(free_port(udp=True), size=32, attempts=2, wait=0.2) or ""
    assert reason.startswith("UDP check: ")
    assert reason.endswith("(2 datagrams sent)")


@pytest.mark.integration
def test_the_echo_servers_answer_the_checks(tmp_path: Path) -> None:
    # Build as the harness does (-Werror) and check both echo servers with the Python checks
    # and the readiness probe (no load is run).
    need_tool("gcc", "to build bench/tools/streamload.c")
    binary = streamload.build(tmp_path / "build")
    tcp_port, udp_port = free_port(), free_port(udp=True)
    with Children() as scope:
        tcp = scope.start(
            Child(
                "tcp",
                streamload.server_command(binary, "tcp-echo-server", tcp_port),
                log_path=tmp_path / "tcp.log",
            )
        )
        udp = scope.start(
            Child(
                "udp",
                streamload.server_command(binary, "udp-echo-server", udp_port),
                log_path=tmp_path / "udp.log",
            )
        )
        runner.wait_ready(tcp, tcp_port)
        runner.wait_ready(udp, udp_port, udp=True)
        assert streamcheck.tcp(tcp_port, size=32) is None
        assert streamcheck.tcp(tcp_port, size=4096) is None
        assert streamcheck.udp(udp_port, size=32) is None
        assert streamcheck.udp_answers(udp_port, size=1000)


# -- the report -----------------------------------------------------------------------------------


def _trial(requests: int, lost: int | None, late: int | None, p99: float = 2.0) -> Trial:
    return Trial(
        trial=1,
        position=1,
        rps=requests / 10,
        requests=requests,
        duration_s=10.0,
        mean_ms=1.0,
        p50_ms=1.0,
        p90_ms=1.5,
        p99_ms=p99,
        max_ms=9.0,
        errors={},
        error_total=0,
        warmup_requests=1,
        warmup_errors=0,
        load_average=[],
        lost=lost,
        late=late,
    )


def _product(name: str, trials: list[Trial]) -> ProductRun:
    return ProductRun(name, name, [], 1, trials=trials)


def test_losses_are_summed_and_judged_apart() -> None:
    udp = ProfileRun(plan.UDP_ECHO_1W, None, "/", 2)
    udp.products = [
        _product("nginx", [_trial(400_000, 0, 0), _trial(420_000, 0, 0)]),
        _product("a3s-1w", [_trial(150_000, 3, 1, p99=6.0), _trial(140_000, 2, 2, p99=7.0)]),
    ]
    tcp = ProfileRun(plan.TCP_ECHO_1W, None, "/", 2)
    tcp.products = [
        _product("nginx", [_trial(500_000, None, None)]),
        _product("a3s-1w", [_trial(200_000, None, None, p99=7.0)]),
    ]
    summaries = report.summarise([udp, tcp])
    found = {(s.profile, s.product): s for s in summaries}
    gateway_udp = found["udp-echo-32b-1w", "a3s-1w"]
    assert (gateway_udp.lost, gateway_udp.late) == (5, 3)
    assert gateway_udp.loss_rate == pytest.approx(5 / 290_005)
    assert found["udp-echo-32b-1w", "nginx"].loss_rate == 0
    assert found["tcp-echo-32b-1w", "a3s-1w"].lost is None
    assert gateway_udp.rps_ratio == pytest.approx(14_500 / 41_000)
    rows = {row.scenario.split(" ")[0]: row for row in report.verdicts(summaries, ())}
    # UDP: 0.354 ≥ 0.3 and p99 6.5 / 2 = 3.25 ≤ 4: a pass; the losses are named, not errors
    assert (rows["UDP"].verdict, rows["UDP"].note) == ("PASS", "datagrams lost: a3s-1w 5")
    assert (rows["UDP"].throughput_target, rows["UDP"].p99_target) == ("≥ 0.3", "≤ 4")
    # TCP: 0.4 < 0.5 and p99 3.5× > 3×
    assert (rows["TCP"].verdict, rows["TCP"].note) == ("MISS", "throughput, p99")
    assert (rows["TCP"].throughput_target, rows["TCP"].p99_target) == ("≥ 0.5", "≤ 3")
    assert report.TARGET_LINES["tcp-echo-32b-1w"] == 0.5
    assert report.TARGET_LINES["udp-echo-32b-1w"] == 0.3


def _environment() -> dict[str, object]:
    keys = "cpu_model cpu_count sched_getaffinity memory kernel pinning load_average_start"
    return dict.fromkeys([*keys.split(), "nginx", "wrk", "python"], "?")


def _meta(streamload_record: dict[str, object]) -> dict[str, object]:
    return {
        "command": "python bench/run_bench.py --profile tcp-udp",
        "started_utc": "2026-12-07T00:00:00+00:00",
        "trials": 1,
        "duration_s": 1.0,
        "warmup_s": 1.0,
        "connections": 64,
        "wrk_threads": 2,
        "streamload": streamload_record,
    }


def test_the_markdown_explains_the_echo_rows_and_losses() -> None:
    record: dict[str, object] = {"connections": 64, "echo_message_bytes": 32, "udp_retry_s": 0.2}
    summary = report.Summary(
        profile="udp-echo-32b-1w",
        product="a3s-1w",
        status="ok",
        reason=None,
        trials=3,
        rps=20_000.0,
        p50_ms=1.0,
        p90_ms=2.0,
        p99_ms=3.0,
        errors=0,
        rps_ratio=0.4,
        p99_ratio=2.0,
        cpu_us_per_req=40.0,
        lost=12_345,
        late=7,
        loss_rate=0.00123,
    )
    text = report.markdown(
        meta=_meta(record), environment=_environment(), summaries=[summary], rows=[], peer_notes={}
    )
    assert "echo profiles: streamload 64 TCP connections or UDP sockets" in text
    assert "UDP retry after 200 ms" in text
    assert "In the echo profiles (`tcp-echo-32b-1w`, `udp-echo-32b-1w`" in text
    assert "| udp-echo-32b-1w | a3s-1w | 12,345 | 7 | 0.123 % |" in text
    # only the echo kinds were run: nothing about WebSocket or SSE
    assert "WebSocket messages" not in text
    assert "streaming profiles:" not in text


def test_the_streamload_record_of_a_run() -> None:
    def record(profiles: list[plan.Profile]) -> dict[str, object]:
        fake = SimpleNamespace(profiles=profiles, stream_backends={"tcp-echo-server": ["x"]})
        return cli._streamload_meta(Settings(1, 1.0, 1.0), cast("Runner", fake))

    echo = record([plan.TCP_ECHO_1W, plan.UDP_ECHO_1W])
    assert (echo["echo_message_bytes"], echo["udp_retry_s"]) == (32, 0.2)
    assert echo["nginx_stream_module"] == str(nginx.STREAM_MODULE)
    assert "websocket_message_bytes" not in echo
    assert "TCP and UDP: send to echo" in str(echo["latency"])
    assert echo["backends"] == {"tcp-echo-server": ["x"]}
    both = record([plan.WS_ECHO_1W, plan.UDP_ECHO_1W])
    assert both["websocket_message_bytes"] == 32
    assert both["echo_message_bytes"] == 32
    streams = record([plan.SSE_1W])
    assert "echo_message_bytes" not in streams


def test_the_source_digest_names_the_code_that_ran(tmp_path: Path) -> None:
    tree = tmp_path / "src"
    (tree / "pkg" / "__pycache__").mkdir(parents=True)
    (tree / "pkg" / "a.py").write_text("x = 1\n")
    (tree / "pkg" / "__pycache__" / "a.cpython-311.py").write_text("ignored")
    (tree / "README").write_text("not code")
    first = gateway.source_digest(tree)
    assert len(first) == 16
    (tree / "pkg" / "__pycache__" / "a.cpython-311.py").write_text("still ignored")
    (tree / "README").write_text("still not code")
    assert gateway.source_digest(tree) == first
    (tree / "pkg" / "a.py").write_text("x = 2\n")
    assert gateway.source_digest(tree) != first
