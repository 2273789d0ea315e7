"""The CLI's commands called in-process (the subprocess tests in tests/integration cover the
real process, signals and exit codes; these cover formatting paths cheaply)."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest

from a3s_gateway import cli
from a3s_gateway.config.load import LoadOptions, load
from a3s_gateway.config.summary import summary, summary_lines
from a3s_gateway.observability import applog
from tests.support.cli import FIXTURES

EXAMPLES = Path(__file__).parent.parent / "examples"


def test_validate_text_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["validate", str(FIXTURES / "quickstart.hcl")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == [
        "entrypoints:",
        "  web  0.0.0.0:8080  http  no tls",
        "routers (match order):",
        "  api  priority 18",
        "services:",
        "  backend  1 backend(s)  round-robin",
    ]


def test_validate_summary_lists_everything(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    assert cli.main(["validate", "--offline", str(EXAMPLES / "gateway.hcl")]) == 0
    out = capsys.readouterr().out
    assert "web  127.0.0.1:8080  http  no tls" in out
    assert "api  2 backend(s)  least-connections" in out
    assert "auth  (jwt)" in out
    assert "providers: file" in out


def test_summary_lines_name_tls_files_and_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed README's example: TLS files, a scaled service and both providers."""
    monkeypatch.setenv("JWT_SECRET", "x" * 40)
    options = LoadOptions(refuse_unavailable=False)
    config = load(FIXTURES / "readme-example.hcl", options=options).config
    assert config is not None
    lines = summary_lines(config)
    assert "  websecure  0.0.0.0:443  http  tls: /etc/certs/cert.pem" in lines
    assert "  api-service  4 backend(s)  round-robin, scaled by box" in lines
    assert "providers: file, discovery" in lines
    entrypoints = summary(config)["entrypoints"]
    assert isinstance(entrypoints, list)
    assert entrypoints[1]["tls"] == ["/etc/certs/cert.pem"]


def test_validate_json_summary(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("JWT_SECRET", raising=False)
    assert (
        cli.main(["validate", "--offline", "--format", "json", str(EXAMPLES / "gateway.hcl")]) == 0
    )
    document = json.loads(capsys.readouterr().out)
    assert document["valid"] is True
    assert document["problems"] == []
    summary = document["summary"]
    assert summary["routers"] == [
        {"name": "api", "priority": 39},
        {"name": "static", "priority": 1},
    ]
    assert summary["tcp_routers"] == []
    assert [m["type"] for m in summary["middlewares"]] == [
        "cors",
        "jwt",
        "rate-limit",
        "strip-prefix",
    ]
    assert summary["entrypoints"][0]["tls"] == []


def test_validate_accepts_the_seed_readme_example(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every feature of the seed README's example has landed (the discovery provider last)."""
    monkeypatch.setenv("JWT_SECRET", "x" * 40)
    assert cli.main(["validate", "--offline", str(FIXTURES / "readme-example.hcl")]) == 0
    captured = capsys.readouterr()
    assert "not available yet" not in captured.out + captured.err


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("value", "message"), [("-1", "0 (one per CPU) or more"), ("two", "whole")]
)
def test_a_bad_workers_count_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], value: str, message: str
) -> None:
    # A valid count starts the supervisor (tests/supervisor/test_workers.py runs it for real).
    assert cli.main(["run", str(FIXTURES / "quickstart.hcl"), "--workers", value]) == 2
    err = capsys.readouterr().err
    assert "--workers" in err
    assert message in err


def test_log_level_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("A3S_LOG_LEVEL", "chatty")
    assert cli.main(["run", str(tmp_path / "none.hcl")]) == 2
    assert 'invalid log level "chatty"' in capsys.readouterr().err


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    applog.install("debug", "json")  # undone after the test (tests/conftest.py)
    logging.getLogger("a3s_gateway.test").warning("hello %s", "world")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("a3s_gateway.test").exception("failed")
    first, second = capsys.readouterr().err.splitlines()
    entry = json.loads(first)
    assert entry["level"] == "warning"
    assert entry["message"] == "hello world"
    assert entry["logger"] == "a3s_gateway.test"
    assert "ValueError: boom" in json.loads(second)["exception"]


def test_validate_and_a_start_error_hide_interpolated_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC §14.4: the summary of a valid config, and the bind failure ``run`` reports, show
    an interpolated port as ``<redacted>``."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        monkeypatch.setenv("INPROC_SECRET_PORT", port)
        config = tmp_path / "gateway.hcl"
        config.write_text(
            (FIXTURES / "quickstart.hcl")
            .read_text()
            .replace("0.0.0.0:8080", "127.0.0.1:${INPROC_SECRET_PORT}"),
            encoding="utf-8",
        )
        assert cli.main(["validate", str(config)]) == 0
        shown = capsys.readouterr()
        assert "  web  127.0.0.1:<redacted>  http  no tls" in shown.out
        assert cli.main(["run", str(config)]) == cli.EXIT_START
    err = capsys.readouterr().err
    assert "cannot listen on 127.0.0.1:<redacted>" in err
    assert port not in err
