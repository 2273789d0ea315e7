"""The HTTP/2 profiles (issue #18): their place in the plan, the NGINX and gateway configs they
render, and their SPEC §15 rows in the report."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from bench.harness import gateway, nginx, plan, report

from a3s_gateway.config.load import load_config_text

PAIR = (Path("/run/chain.pem"), Path("/run/key.pem"))


def test_the_profiles_and_the_alias() -> None:
    names = [profile.name for profile in plan.select_profiles(["http2"])]
    assert names == ["h2-get-42b-1w", "h2c-get-42b-1w", "grpc-unary-1w"]
    assert (plan.H2_1W.tls, plan.H2_1W.protocol) == (True, "h2")
    assert (plan.H2C_1W.tls, plan.H2C_1W.protocol) == (False, "h2")
    assert (plan.GRPC_1W.tls, plan.GRPC_1W.protocol) == (False, "grpc")
    assert all(profile.http2 for profile in (plan.H2_1W, plan.H2C_1W, plan.GRPC_1W))
    assert not plan.GET_1W.http2
    assert plan.H2_1W.response_bytes == plan.H2C_1W.response_bytes == 42
    assert plan.GRPC_1W.response_bytes == len(nginx.GRPC_FRAME) == 49


def test_products() -> None:
    # The gRPC profile measures the backend itself (`direct`); the HTTP/2 GETs cannot, their
    # upstream speaks HTTP/1.1 only.
    assert plan.products_for(plan.GRPC_1W, (), []) == ["direct", "nginx", "a3s-1w"]
    assert plan.products_for(plan.H2C_1W, ("aiohttp-uvloop",), []) == ["nginx", "a3s-1w"]
    assert plan.products_for(plan.H2_1W, (), ["a3s-1w"]) == ["nginx", "a3s-1w"]


def test_the_grpc_frame() -> None:
    frame = nginx.GRPC_FRAME
    assert frame[0] == 0  # not compressed
    assert int.from_bytes(frame[1:5], "big") == len(frame) - 5 == 44
    assert frame[5:7] == b"\x0a\x2a"  # field 1, bytes, 42 long
    assert frame[7:] == nginx.BODY_42.encode()
    assert nginx.grpc_frame(b"") == b"\x00\x00\x00\x00\x00"


def test_nginx_strings_keep_control_bytes() -> None:
    assert nginx.nginx_string(b'a"b\\c\n\x00') == '"a\\"b\\\\c\\n\x00"'
    with pytest.raises(ValueError, match="ASCII"):
        nginx.nginx_string(b"$host")
    with pytest.raises(ValueError, match="ASCII"):
        nginx.nginx_string(b"\xff")


def test_the_upstream_serves_the_grpc_backend_only_when_asked(tmp_path: Path) -> None:
    plain = nginx.write_upstream(tmp_path / "plain", 8000).read_text()
    assert "http2" not in plain
    assert "grpc" not in plain
    text = nginx.write_upstream(tmp_path / "grpc", 8000, 8001).read_text()
    assert "listen 127.0.0.1:8000 backlog=4096;" in text
    assert "listen 127.0.0.1:8001 http2 backlog=4096;" in text
    assert "mirror_request_body on;" in text
    assert "error_page 404 405 =200 @grpc_reply;" in text
    assert "default_type application/grpc;" in text
    assert "add_trailer grpc-status 0 always;" in text
    assert f"return 200 {nginx.nginx_string(nginx.GRPC_FRAME)};" in text
    assert (tmp_path / "grpc" / "grpc-root").is_dir()


@pytest.mark.parametrize(
    ("tls", "http2", "grpc", "listen"),
    [
        (None, False, False, "listen 127.0.0.1:9000 backlog=4096;"),
        (PAIR, False, False, "listen 127.0.0.1:9000 ssl backlog=4096;"),
        (PAIR, True, False, "listen 127.0.0.1:9000 ssl http2 backlog=4096;"),
        (None, True, False, "listen 127.0.0.1:9000 http2 backlog=4096;"),
        (None, False, True, "listen 127.0.0.1:9000 http2 backlog=4096;"),
    ],
)
def test_the_proxy_listener(
    tmp_path: Path, tls: tuple[Path, Path] | None, http2: bool, grpc: bool, listen: str
) -> None:
    text = nginx.write_proxy(tmp_path, 9000, 8000, "1", tls, http2=http2, grpc=grpc).read_text()
    assert listen in text
    assert "server 127.0.0.1:8000;" in text
    assert "keepalive 128;" in text
    if grpc:
        assert "grpc_pass grpc://bench_upstream;" in text
        assert "proxy_pass" not in text
    else:
        assert "proxy_pass http://bench_upstream;" in text
        assert "proxy_http_version 1.1;" in text
        assert "grpc_pass" not in text


def _gateway_config(tls: tuple[Path, Path] | None = None, scheme: str = "http") -> str:
    return gateway.config_text(9000, 8000, gateway.routing(1, "/"), tls=tls, scheme=scheme)


def test_the_gateways_config_for_h2c_needs_nothing_more() -> None:
    text = _gateway_config()
    assert "h2c" not in text  # a plain entrypoint accepts h2c prior knowledge by default
    config = load_config_text(text)
    entrypoint = config.entrypoints["web"]
    assert entrypoint.tls is None
    assert entrypoint.h2c in (None, True)


def test_the_gateways_config_for_h2_over_tls() -> None:
    text = _gateway_config(tls=PAIR)
    config = load_config_text(text)  # certificate files are checked at start, not here
    tls = config.entrypoints["web"].tls
    assert tls is not None
    assert tls.alpn is None or "h2" in tls.alpn  # the default offers h2


def test_the_gateways_config_for_grpc_has_an_h2c_server() -> None:
    text = _gateway_config(scheme="h2c")
    assert 'url = "h2c://127.0.0.1:8000"' in text
    load_config_text(text)


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
    )


def test_the_spec_rows_of_the_http2_profiles() -> None:
    summaries = [
        _summary("h2-get-42b-1w", "nginx", 10_000, 10.0),
        _summary("h2-get-42b-1w", "a3s-1w", 1_600, 50.0),  # 0.16, 5×: pass
        _summary("h2c-get-42b-1w", "nginx", 10_000, 10.0),
        _summary("h2c-get-42b-1w", "a3s-1w", 1_000, 50.0),  # 0.10: miss
        _summary("grpc-unary-1w", "nginx", 10_000, 10.0),
        _summary("grpc-unary-1w", "a3s-1w", 2_500, 60.0),  # 0.25 but p99 6× > 5×: miss
    ]
    rows = {row.scenario.split(",")[0]: row for row in report.verdicts(summaries, ())}
    h2 = rows["HTTP/2 over TLS GET 42 B"]
    assert (h2.verdict, h2.throughput_target, h2.p99_target) == ("PASS", "≥ 0.15", "≤ 6")
    h2c = rows["h2c prior knowledge GET 42 B"]
    assert (h2c.verdict, h2c.note) == ("MISS", "throughput")
    grpc = rows["gRPC unary"]
    assert (grpc.throughput_target, grpc.p99_target) == ("≥ 0.2", "≤ 5")
    assert (grpc.verdict, grpc.note) == ("MISS", "p99")
    assert report.TARGET_LINES["grpc-unary-1w"] == 0.2


def test_the_markdown_names_h2loads_shape() -> None:
    meta: dict[str, object] = {
        "command": "python bench/run_bench.py --profile http2",
        "started_utc": "2026-12-07T00:00:00+00:00",
        "trials": 1,
        "duration_s": 1.0,
        "warmup_s": 1.0,
        "connections": 64,
        "wrk_threads": 2,
        "h2load": {"clients": 4, "streams": 16, "threads": 2},
    }
    keys = "cpu_model cpu_count sched_getaffinity memory kernel pinning load_average_start"
    environment: dict[str, object] = dict.fromkeys([*keys.split(), "nginx", "wrk", "python"], "?")
    environment["h2load"] = "h2load nghttp2/1.52.0"
    text = report.markdown(meta=meta, environment=environment, summaries=[], rows=[], peer_notes={})
    assert "HTTP/2 profiles: h2load 4 connections × 16 streams, 2 threads" in text
    assert "h2load nghttp2/1.52.0" in text


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (nginx-light)")
def test_nginx_accepts_the_rendered_configs(tmp_path: Path) -> None:
    # `nginx -t` on each config: the grpc and http2 modules are there, the NUL bytes of the
    # gRPC answer parse, the certificate files exist.
    import trustme

    authority = trustme.CA()
    issued = authority.issue_cert("127.0.0.1")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    issued.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    configs = {
        "upstream": nginx.write_upstream(tmp_path / "upstream", 18000, 18001),
        "h2": nginx.write_proxy(tmp_path / "h2", 18002, 18000, "1", (chain, key), http2=True),
        "h2c": nginx.write_proxy(tmp_path / "h2c", 18003, 18000, "1", http2=True),
        "grpc": nginx.write_proxy(tmp_path / "grpc", 18004, 18001, "1", grpc=True),
    }
    for name, conf in configs.items():
        prefix = conf.parent
        result = subprocess.run(
            [*nginx.command(conf, prefix), "-t", "-q"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, f"{name}: {result.stderr}"
