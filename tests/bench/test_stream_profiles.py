"""The streaming profiles (WebSocket echo, SSE): their place in the plan, the NGINX and gateway
configs they render, their SPEC §15 rows and notes in the report, and the helpers of their
check requests (``streamcheck``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.harness import gateway, nginx, plan, report, runner, streamcheck, streamload

from a3s_gateway.config.load import load_config_text


def test_the_profiles_and_the_alias() -> None:
    names = [profile.name for profile in plan.select_profiles(["streams"])]
    assert names == ["ws-echo-32b-1w", "sse-events-1w"]
    ws, sse = plan.WS_ECHO_1W, plan.SSE_1W
    assert (ws.protocol, ws.body_bytes, ws.response_bytes) == ("websocket", 32, 32)
    assert (sse.protocol, sse.body_bytes, sse.response_bytes) == ("sse", 0, 40)
    assert (ws.streaming, sse.streaming) == (True, True)
    assert (ws.http2, sse.http2) == (False, False)
    assert (ws.unit, sse.unit, plan.GET_1W.unit) == ("msg", "event", "req")
    assert ws.nginx_workers == sse.nginx_workers == "1"
    # the HTTP/2 profiles are still h2load's, and nothing else is streamed
    assert all(profile.http2 for profile in (plan.H2_1W, plan.H2C_1W, plan.GRPC_1W))
    assert [p.name for p in plan.PROFILES if p.streaming] == names


def test_products() -> None:
    # `direct` is streamload straight at its own backend: the ceiling of each profile.
    assert plan.products_for(plan.WS_ECHO_1W, ("aiohttp-uvloop",), []) == [
        "direct",
        "nginx",
        "a3s-1w",
    ]
    assert plan.products_for(plan.SSE_1W, (), ["a3s-1w"]) == ["nginx", "a3s-1w"]


def test_the_gateways_server_scheme() -> None:
    assert runner.upstream_scheme(plan.WS_ECHO_1W) == "ws"
    assert runner.upstream_scheme(plan.SSE_1W) == "http"
    assert runner.upstream_scheme(plan.GRPC_1W) == "h2c"
    assert runner.upstream_scheme(plan.GET_1W) == "http"


def _gateway_config(profile: plan.Profile) -> str:
    table = gateway.routing(profile.routers, profile.path)
    return gateway.config_text(9000, 8000, table, scheme=runner.upstream_scheme(profile))


def test_the_gateways_websocket_config_has_a_ws_server() -> None:
    text = _gateway_config(plan.WS_ECHO_1W)
    assert 'url = "ws://127.0.0.1:8000"' in text
    assert "PathPrefix(`/`)" in text
    balancer = load_config_text(text).services["upstream"].load_balancer
    assert balancer is not None
    assert str(balancer.servers[0].url) == "ws://127.0.0.1:8000"


def test_the_gateways_sse_config_has_a_plain_http_server() -> None:
    text = _gateway_config(plan.SSE_1W)
    assert 'url = "http://127.0.0.1:8000"' in text
    assert "ws://" not in text
    load_config_text(text)


def test_the_nginx_websocket_proxy(tmp_path: Path) -> None:
    text = nginx.write_proxy(tmp_path, 9000, 8000, "1", stream="websocket").read_text()
    assert "worker_processes 1;" in text
    assert "server 127.0.0.1:8000;" in text
    assert "proxy_pass http://bench_upstream;" in text
    assert "proxy_http_version 1.1;" in text
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert 'proxy_set_header Connection "upgrade";' in text
    assert 'Connection ""' not in text
    assert "proxy_buffering" not in text


def test_the_nginx_sse_proxy(tmp_path: Path) -> None:
    text = nginx.write_proxy(tmp_path, 9000, 8000, "1", stream="sse").read_text()
    assert "proxy_buffering off;" in text
    assert "proxy_http_version 1.1;" in text
    assert 'proxy_set_header Connection "";' in text
    assert "Upgrade" not in text


def test_the_plain_proxy_is_unchanged(tmp_path: Path) -> None:
    text = nginx.write_proxy(tmp_path, 9000, 8000, "1").read_text()
    assert 'proxy_set_header Connection "";' in text
    assert "proxy_buffering" not in text
    assert "Upgrade" not in text
    with pytest.raises(ValueError, match="unknown stream kind"):
        nginx.write_proxy(tmp_path, 9000, 8000, "1", stream="tcp")


def _summary(profile: str, product: str, rps: float, p99: float) -> report.Summary:
    return report.Summary(
        profile=profile,
        product=product,
        status="ok",
        reason=None,
        trials=1,
        rps=rps,
        p50_ms=p99 / 2,
        p90_ms=p99,
        p99_ms=p99,
        errors=0,
        rps_ratio=None,
        p99_ratio=None,
        load_tool_cores=0.4,
        backend_cores=0.5,
    )


def test_the_spec_rows_of_the_streaming_profiles() -> None:
    summaries = [
        _summary("ws-echo-32b-1w", "nginx", 50_000, 2.0),
        _summary("ws-echo-32b-1w", "a3s-1w", 26_000, 5.8),  # 0.52, 2.9×: pass
        _summary("sse-events-1w", "nginx", 150_000, 8.0),
        _summary("sse-events-1w", "a3s-1w", 60_000, 40.0),  # 0.4 but p99 5× > 4×: miss
    ]
    rows = {row.scenario.split(",")[0]: row for row in report.verdicts(summaries, ())}
    ws = rows["WebSocket 32-byte echo"]
    assert (ws.throughput_target, ws.p99_target, ws.verdict) == ("≥ 0.5", "≤ 3", "PASS")
    assert ws.throughput_ratio == pytest.approx(0.52)
    sse = rows["SSE"]
    assert (sse.throughput_target, sse.p99_target) == ("≥ 0.3", "≤ 4")
    assert (sse.verdict, sse.note) == ("MISS", "p99")
    assert report.TARGET_LINES["ws-echo-32b-1w"] == 0.5
    assert report.TARGET_LINES["sse-events-1w"] == 0.3


def test_the_markdown_explains_the_streaming_rows() -> None:
    meta: dict[str, object] = {
        "command": "python bench/run_bench.py --profile streams",
        "started_utc": "2026-12-07T00:00:00+00:00",
        "trials": 1,
        "duration_s": 1.0,
        "warmup_s": 1.0,
        "connections": 64,
        "wrk_threads": 2,
        "streamload": {
            "connections": 64,
            "websocket_message_bytes": 32,
            "sse_event_bytes": 40,
            "sse_window": streamload.SSE_WINDOW,
        },
    }
    keys = "cpu_model cpu_count sched_getaffinity memory kernel pinning load_average_start"
    environment: dict[str, object] = dict.fromkeys([*keys.split(), "nginx", "wrk", "python"], "?")
    summaries = [_summary("ws-echo-32b-1w", "nginx", 50_000, 2.0)]
    text = report.markdown(
        meta=meta, environment=environment, summaries=summaries, rows=[], peer_notes={}
    )
    assert "streaming profiles: streamload 64 connections" in text
    assert "req/s is WebSocket messages echoed per second" in text
    assert "| ws-echo-32b-1w | nginx | 0.40 | 0.50 |" in text
    plain = report.markdown(
        meta={**meta, "streamload": None},
        environment=environment,
        summaries=[],
        rows=[],
        peer_notes={},
    )
    assert "streamload" not in plain


def test_the_websocket_accept_value() -> None:
    # RFC 6455 §1.3's example
    assert streamcheck.accept_value("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_client_frames_are_masked() -> None:
    frame = streamcheck.client_frame(b"Hello", b"\x37\xfa\x21\x3d", opcode=1)
    assert frame == bytes.fromhex("818537fa213d7f9f4d5158")  # RFC 6455 §5.7
    long = streamcheck.client_frame(b"x" * 300, b"\x00\x00\x00\x00")
    assert long[:4] == bytes([0x82, 0x80 | 126, 0x01, 0x2C])
    assert long[8:] == b"x" * 300


def test_server_frames() -> None:
    hello = bytes.fromhex("810548656c6c6f")  # RFC 6455 §5.7, unmasked "Hello"
    assert streamcheck.server_frame(hello + b"\x89") == (1, b"Hello", b"\x89")
    assert streamcheck.server_frame(hello[:4]) is None
    assert streamcheck.server_frame(b"\x82") is None
    medium = bytes([0x82, 126, 0x01, 0x00]) + b"y" * 256
    assert streamcheck.server_frame(medium) == (2, b"y" * 256, b"")
    assert streamcheck.server_frame(medium[:100]) is None
    with pytest.raises(streamcheck.CheckError, match="masked"):
        streamcheck.server_frame(bytes.fromhex("818537fa213d7f9f4d5158"))


def test_the_first_event_must_be_the_backends() -> None:
    good = b"data: 0000001a2b3c4d5e 000000000000042\n"
    assert streamcheck.judge_event([good]) is None
    assert streamcheck.judge_event([good.replace(b"\n", b"\r\n")]) is None
    assert "not the backend's" in (streamcheck.judge_event([b"data: hello\n"]) or "")
    assert "not the backend's" in (streamcheck.judge_event([good, b"id: 1\n"]) or "")


def test_a_closed_port_fails_the_checks() -> None:
    from bench.procs import free_port

    port = free_port()  # nothing listens there
    assert "WebSocket check failed: ConnectionRefusedError" in (
        streamcheck.websocket(port, "/ws", size=32, timeout=2) or ""
    )
    assert "SSE check failed: ConnectionRefusedError" in (
        streamcheck.sse(port, "/events", timeout=2) or ""
    )
