"""The real command line as a subprocess (SPEC §1.4, §2.1–2.5)."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

import pytest
import trio

from tests.support.cli import FIXTURES, ROOT, cli_env, run_cli, start_gateway

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

README_EXAMPLE = str(FIXTURES / "readme-example.hcl")
QUICKSTART = str(FIXTURES / "quickstart.hcl")
SECRET = "an-hs256-secret-that-is-long-enough-0123456789"


def lines_with(text: str, severity: str) -> list[str]:
    return [line for line in text.splitlines() if f": {severity}: " in line]


def test_version_prints_the_package_and_engine_versions() -> None:
    for args in (("version",), ("--version",)):
        done = run_cli(*args)
        assert done.code == 0
        first, second = done.stdout.splitlines()
        assert first == "a3s-gateway 0.1.0"
        for name in ("python", "trio", "h11", "h2", "wsproto"):
            assert name in second


def test_quickstart_validates_with_no_warnings() -> None:
    done = run_cli("validate", QUICKSTART)
    assert done.code == 0, done.stderr
    assert done.stderr == ""
    assert "configuration is valid (0 warning(s))" in done.stdout
    assert "api  priority 18" in done.stdout  # len("PathPrefix(`/api`)"), SPEC §4.7


UNAVAILABLE = "is not available yet"


def test_readme_example_is_valid_now_that_every_feature_landed() -> None:
    """The seed README's example is valid: its TLS entrypoint (issue #17), TCP entrypoint
    (issue #20), scaling, revisions and rollout (issue #21) and its discovery provider (issue
    #22) have all landed; only warnings are left."""
    done = run_cli("validate", "--offline", README_EXAMPLE, env=cli_env({"JWT_SECRET": SECRET}))
    assert done.code == 0, done.stderr
    assert lines_with(done.stderr, "error") == []
    assert UNAVAILABLE not in done.stderr + done.stdout
    assert "configuration is valid" in done.stdout


def test_readme_example_without_jwt_secret_has_exactly_one_other_error_naming_it() -> None:
    done = run_cli("validate", "--offline", README_EXAMPLE, env=cli_env(drop=("JWT_SECRET",)))
    assert done.code == 1
    errors = [line for line in lines_with(done.stderr, "error") if UNAVAILABLE not in line]
    assert len(errors) == 1, done.stderr
    assert "JWT_SECRET" in errors[0]
    assert 'middlewares["auth-jwt"].value' in errors[0]


def test_readme_example_online_adds_only_the_missing_certificate_files() -> None:
    done = run_cli("validate", README_EXAMPLE, env=cli_env({"JWT_SECRET": SECRET}))
    assert done.code == 1
    errors = [line for line in lines_with(done.stderr, "error") if UNAVAILABLE not in line]
    assert errors, done.stderr
    assert all("/etc/certs/" in line and ".pem" in line for line in errors), errors


def test_five_mistakes_are_all_printed_with_file_and_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.hcl"
    config.write_text(
        "\n".join(
            [
                'entrypoints "web" {',
                '  address = "0.0.0.0:8080"',
                '  prtocol = "http"',  # 3: unknown field
                "}",
                'routers "api" {',
                '  rule    = "PathPrefix(`/api`)"',
                '  service = "billing"',  # 7: undefined service
                "}",
                'services "backend" {',
                "  load_balancer {",
                '    strategy = "fastest"',  # 11: bad enum
                '    servers  = [{ url = "http://127.0.0.1:8001" }]',
                '    connect_timeout = "1 s"',  # 13: bad duration
                "  }",
                "}",
                "shutdown_timeout_secs = 0",  # 16: out of range
                "",
            ]
        )
    )
    done = run_cli("validate", str(config))
    assert done.code == 1
    errors = lines_with(done.stderr, "error")
    assert [line.split(":")[1] for line in errors] == ["3", "7", "11", "13", "16"], done.stderr
    assert 'did you mean "protocol"' in errors[0]
    assert 'service "billing" is not defined' in errors[1]
    assert done.stderr.rstrip().endswith("5 error(s), 0 warning(s)")


def test_validate_json_output(tmp_path: Path) -> None:
    done = run_cli("validate", "--format", "json", QUICKSTART)
    assert done.code == 0
    document = json.loads(done.stdout)
    assert document["valid"] is True
    assert document["problems"] == []
    assert document["summary"]["services"] == [
        {"name": "backend", "backends": 1, "strategy": "round-robin"}
    ]
    bad = tmp_path / "bad.hcl"
    bad.write_text('entrypoints "web" {\n  address = "nowhere"\n}\n')
    done = run_cli("validate", "--format", "json", str(bad))
    assert done.code == 1
    document = json.loads(done.stdout)
    assert document["valid"] is False
    [problem] = document["problems"]
    assert problem["path"] == 'entrypoints["web"].address'
    assert problem["line"] == 2
    assert problem["severity"] == "error"


def test_missing_config_file_is_a_config_error() -> None:
    done = run_cli("validate", "no-such-file.hcl")
    assert done.code == 1
    assert "config file not found" in done.stderr
    done = run_cli("run", "no-such-file.hcl")
    assert done.code == 1


@pytest.mark.parametrize(
    "args",
    [
        ("validate",),
        ("run",),
        ("validate", QUICKSTART, "--config", QUICKSTART),
        ("run", QUICKSTART, "--log-level", "loud"),
        ("run", QUICKSTART, "--workers", "-1"),
        ("run", QUICKSTART, "--listen", "example.com:80"),
        ("frobnicate",),
        ("validate", QUICKSTART, "--format", "yaml"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...]) -> None:
    done = run_cli(*args)
    assert done.code == 2
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith("a3s-gateway: error: ")
    assert "Traceback" not in done.stderr


def test_a3s_compatibility_forms() -> None:
    done = run_cli("validate", "--config", QUICKSTART)
    assert done.code == 0
    done = run_cli("validate", "-c", QUICKSTART)
    assert done.code == 0


def test_run_with_a_bad_config_prints_problems_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.hcl"
    bad.write_text('entrypoints "web" {\n  address = ":80"\n  port = 1\n}\n')
    done = run_cli("run", str(bad))
    assert done.code == 1
    assert f"{bad}:3:3: error: " in done.stderr


async def test_run_drains_and_exits_0_on_sigterm() -> None:
    gateway = await start_gateway(QUICKSTART, "--log-format", "json", "--listen", "127.0.0.1:0")
    with trio.fail_after(30):
        line = await gateway.wait_for_line("gateway running")
        assert json.loads(line)["level"] == "info"
        gateway.process.send_signal(signal.SIGTERM)
        assert await gateway.process.wait() == 0
    await gateway.wait_for_line("gateway stopped")


async def test_run_in_compat_form_exits_0_on_sigint() -> None:
    gateway = await start_gateway("--config", QUICKSTART, "--listen", "127.0.0.1:0")
    with trio.fail_after(30):
        await gateway.wait_for_line("gateway running")
        gateway.process.send_signal(signal.SIGINT)
        assert await gateway.process.wait() == 0


async def test_sighup_reloads_and_a_bad_reload_keeps_running(tmp_path: Path) -> None:
    config = trio.Path(tmp_path / "gateway.hcl")
    await config.write_text(await trio.Path(QUICKSTART).read_text())
    gateway = await start_gateway(str(config), "--listen", "127.0.0.1:0")
    with trio.fail_after(30):
        await gateway.wait_for_line("gateway running")
        gateway.process.send_signal(signal.SIGHUP)
        await gateway.wait_for_line("config reloaded: generation 2")
        await config.write_text("routers {")
        gateway.process.send_signal(signal.SIGHUP)
        await gateway.wait_for_line("reload rejected")
        gateway.process.send_signal(signal.SIGTERM)
        assert await gateway.process.wait() == 0


def test_examples_gateway_hcl_is_valid() -> None:
    done = run_cli("validate", str(ROOT / "examples" / "gateway.hcl"))
    assert done.code == 0, done.stderr
    assert lines_with(done.stderr, "error") == []


SECRET_CONFIG = """
public_env = ["GW_PORT"]
entrypoints "web" {
  address = "127.0.0.1:${GW_PORT}"
}
routers "api" {
  rule        = "PathPrefix(`/`)"
  service     = "backend"
  middlewares = ["auth", "hdr"]
}
services "backend" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:8001/${TENANT}" }]
  }
}
middlewares "auth" {
  type             = "forward-auth"
  forward_auth_url = "https://auth.internal/${AUTH_TOKEN}/check"
}
middlewares "hdr" {
  type            = "headers"
  request_headers = { "X-Upstream-Auth" = "${BACKEND_PASS}" }
}
management {
  address        = "127.0.0.1:0"
  auth_token_env = "SECRET_TEST_ADMIN_TOKEN"
  tls {
    cert_file = "${CERT_DIR}/cert.pem"
    key_file  = "${CERT_DIR}/key.pem"
  }
}
observability {
  access_log_path = "${LOG_DIR}/access.log"
}
"""
SECRET_ENV = {
    "GW_PORT": "18099",
    "TENANT": "tenant-9d8c7b",
    "AUTH_TOKEN": "tok-s3cr3t#zq9",
    "BACKEND_PASS": "hunter2-backend",
    "LOG_DIR": "/var/log/gw-secret-test",
    "CERT_DIR": "/nonexistent/gw-certs",
}


@pytest.mark.parametrize("output", ["text", "json"])
def test_validate_never_prints_an_interpolated_value(tmp_path: Path, output: str) -> None:
    """SPEC §14.4: the fragment (``#``) in AUTH_TOKEN makes forward_auth_url invalid; the
    problem quotes the URL with the token redacted. A file path stays readable."""
    config = tmp_path / "gateway.hcl"
    config.write_text(SECRET_CONFIG, encoding="utf-8")
    done = run_cli("validate", "--format", output, str(config), env=cli_env(SECRET_ENV))
    assert done.code == 1, done.stderr
    everything = done.stdout + done.stderr
    for secret in ("tok-s3cr3t", "zq9", "hunter2", "tenant-9d8c7b"):
        assert secret not in everything
    expected = 'url "https://auth.internal/<redacted>/check" is invalid: a fragment is not allowed'
    if output == "json":
        document = json.loads(done.stdout)
        assert document["valid"] is False
        messages = [problem["message"] for problem in document["problems"]]
        assert expected in messages
        assert 'file "/nonexistent/gw-certs/cert.pem" not found' in messages
    else:
        assert expected in done.stderr
        assert 'file "/nonexistent/gw-certs/cert.pem" not found' in done.stderr


@pytest.mark.parametrize("output", ["text", "json"])
def test_a_valid_configs_summary_hides_interpolated_values(tmp_path: Path, output: str) -> None:
    config = tmp_path / "gateway.hcl"
    hidden = 'entrypoints "hidden" {\n  address = "${GW_HOST}"\n}\n'
    config.write_text(SECRET_CONFIG + hidden, encoding="utf-8")
    env = cli_env({**SECRET_ENV, "AUTH_TOKEN": "tok-s3cr3t", "GW_HOST": "127.0.0.1:18098"})
    done = run_cli("validate", "--offline", "--format", output, str(config), env=env)
    assert done.code == 0, done.stderr
    assert "18098" not in done.stdout
    assert "127.0.0.1:18099" in done.stdout  # GW_PORT is listed in public_env
    if output == "json":
        entrypoints = json.loads(done.stdout)["summary"]["entrypoints"]
        addresses = {entry["name"]: entry["address"] for entry in entrypoints}
        assert addresses == {"web": "127.0.0.1:18099", "hidden": "<redacted>"}
    else:
        assert "  hidden  <redacted>  http" in done.stdout
