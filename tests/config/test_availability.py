"""Settings whose feature has not landed are refused by name (config/availability.py).

The table ``UNAVAILABLE`` drives these tests: each row's sample is valid configuration language
(it loads without errors when the refusal is off), and with the refusal on (the default, as in
``validate`` and ``run``) it fails with errors that name the field and the missing feature and
nothing else. A row removed from the table when its feature lands takes its test with it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from a3s_gateway import ConfigError, Gateway
from a3s_gateway.config.availability import UNAVAILABLE, Unavailable
from a3s_gateway.config.load import LoadOptions, load_text
from a3s_gateway.config.schema import Config
from a3s_gateway.errors import ReloadError
from tests.support.semantic import BASE

#: An ACME field: refused until ACME lands (one error).
REFUSED = """
entrypoints "secure" {
  address = "127.0.0.1:8443"
  tls {
    cert_file    = "/c.pem"
    key_file     = "/k.pem"
    acme_staging = true
  }
}
"""
REFUSED_PATH = 'entrypoints["secure"].tls.acme_staging'
REFUSED_MESSAGE = 'field "acme_staging" is not available yet'


#: An entrypoint offering HTTP/2 by ALPN: available since HTTP/2 landed (issue #18).
H2_ENTRYPOINT = """
entrypoints "secure" {
  address = "127.0.0.1:8443"
  tls {
    cert_file = "/c.pem"
    key_file  = "/k.pem"
    alpn      = ["h2", "http/1.1"]
  }
}
"""

DOCS = Path(__file__).parents[2] / "docs" / "configuration.md"
ROWS = pytest.mark.parametrize("row", UNAVAILABLE, ids=[row.where for row in UNAVAILABLE])


def _section(row: Unavailable) -> str:
    """``entrypoints`` of ``entrypoints.<name>.tls``: how the error's path must start."""
    return row.where.split(".", 1)[0]


@ROWS
def test_each_sample_is_valid_language(row: Unavailable) -> None:
    result = load_text(
        BASE + row.sample, filename="t.hcl", env={}, options=LoadOptions(refuse_unavailable=False)
    )
    assert result.errors == (), [p.format() for p in result.errors]


@ROWS
def test_each_setting_is_refused_by_name(row: Unavailable) -> None:
    result = load_text(BASE + row.sample, filename="t.hcl", env={})
    assert result.config is None
    errors = result.errors
    assert errors, "nothing refused"
    for problem in errors:
        assert "is not available yet" in problem.message, problem.format()
        assert problem.line is not None, problem.format()
    mine = [p for p in errors if f"({row.feature})" in p.message]
    assert mine, [p.format() for p in errors]
    assert any(p.path.startswith(_section(row)) for p in mine), [p.path for p in mine]


@ROWS
def test_the_docs_list_every_row(row: Unavailable) -> None:
    assert f"`{row.where}`" in DOCS.read_text(encoding="utf-8")


def test_the_message_names_the_setting_and_the_feature() -> None:
    result = load_text(BASE + REFUSED, filename="t.hcl", env={})
    [problem] = result.errors
    assert problem.path == REFUSED_PATH
    assert problem.message.startswith(REFUSED_MESSAGE)
    assert "(ACME certificates)" in problem.message
    assert problem.line == BASE.count("\n") + 7


def test_entrypoint_tls_and_http2_are_available() -> None:
    assert load_text(BASE + H2_ENTRYPOINT, filename="t.hcl", env={}).errors == ()
    snippet = H2_ENTRYPOINT.replace('alpn      = ["h2", "http/1.1"]', 'alpn = ["http/1.1"]')
    assert load_text(BASE + snippet, filename="t.hcl", env={}).errors == ()
    h2c = (
        'entrypoints "alt" {\n  address = "127.0.0.1:8081"\n  h2c = true\n'
        "  http2 {\n    max_concurrent_streams = 50\n  }\n}\n"
        'services "grpc" {\n  load_balancer {\n'
        '    servers = [{ url = "h2c://127.0.0.1:50051" }]\n  }\n}\n'
    )
    assert load_text(BASE + h2c, filename="t.hcl", env={}).errors == ()
    timeout = (
        'entrypoints "alt" {\n  address = "127.0.0.1:8081"\n'
        '  timeouts {\n    handshake = "5s"\n  }\n}\n'
    )
    assert load_text(BASE + timeout, filename="t.hcl", env={}).errors == ()


def test_every_acme_field_is_refused_by_name() -> None:
    snippet = (
        'entrypoints "secure" {\n  address = "127.0.0.1:8443"\n  tls {\n'
        '    acme = true\n    acme_email = "ops@example.com"\n    acme_renewal_days = 20\n'
        "  }\n}\n"
    )
    errors = load_text(BASE + snippet, filename="t.hcl", env={}).errors
    assert [p.path for p in errors] == [
        'entrypoints["secure"].tls.acme',
        'entrypoints["secure"].tls.acme_email',
        'entrypoints["secure"].tls.acme_renewal_days',
    ]
    assert all("(ACME certificates)" in p.message for p in errors)


def test_a_written_default_still_counts() -> None:
    """Writing ``acme_renewal_days = 30`` (its default) still asks for the feature."""
    snippet = (
        'entrypoints "secure" {\n  address = "127.0.0.1:8443"\n  tls {\n'
        '    cert_file = "/etc/gateway/cert.pem"\n    key_file = "/etc/gateway/key.pem"\n'
        "    acme_renewal_days = 30\n  }\n}\n"
    )
    [problem] = load_text(BASE + snippet, filename="t.hcl", env={}).errors
    assert problem.path == 'entrypoints["secure"].tls.acme_renewal_days'


def test_secrets_are_not_echoed() -> None:
    snippet = REFUSED.replace("acme_staging = true", 'acme_email = "ops@secret.example"')
    problems = load_text(BASE + snippet, filename="t.hcl", env={}).errors
    assert any("is not available yet" in problem.message for problem in problems)
    assert not any("secret.example" in problem.format() for problem in problems)


def _config_in_code(snippet: str) -> Config:
    result = load_text(
        BASE + snippet, filename="t.hcl", env={}, options=LoadOptions(refuse_unavailable=False)
    )
    assert result.config is not None
    return result.config


def test_a_gateway_built_in_code_refuses_it() -> None:
    config = load_text(
        BASE + REFUSED,
        filename="t.hcl",
        env={},
        options=LoadOptions(refuse_unavailable=False),
    ).config
    assert config is not None
    with pytest.raises(ConfigError) as caught:
        Gateway(config)
    [problem] = caught.value.problems
    assert problem.path == REFUSED_PATH
    assert problem.file == "<config>"


async def test_a_reload_built_in_code_refuses_it() -> None:
    plain = load_text(BASE, filename="t.hcl", env={}).config
    assert plain is not None
    with_refused = load_text(
        BASE + REFUSED,
        filename="t.hcl",
        env={},
        options=LoadOptions(refuse_unavailable=False),
    ).config
    assert with_refused is not None
    gateway = Gateway(plain)
    with pytest.raises(ReloadError, match="ACME certificates"):
        await gateway.reload(with_refused)
    assert gateway.health().last_reload is not None


@pytest.mark.integration
def test_run_refuses_it_before_binding(tmp_path: Path) -> None:
    config = tmp_path / "gateway.hcl"
    config.write_text(BASE.replace("127.0.0.1:8080", "127.0.0.1:0") + REFUSED)
    done = subprocess.run(
        [sys.executable, "-m", "a3s_gateway", "run", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert f"{REFUSED_PATH}: {REFUSED_MESSAGE}" in done.stderr
    assert "listening" not in done.stderr


def test_redirect_to_is_available() -> None:
    """``redirect_to`` to a TLS entrypoint loads without an availability error (issue #17)."""
    snippet = (
        'entrypoints "secure" {\n  address = "127.0.0.1:8443"\n  tls {\n'
        '    cert_file = "/etc/gateway/cert.pem"\n    key_file  = "/etc/gateway/key.pem"\n'
        '  }\n}\nentrypoints "alt" {\n  address = "127.0.0.1:8081"\n  redirect_to = "secure"\n}\n'
    )
    assert load_text(BASE + snippet, filename="t.hcl", env={}).errors == ()


def test_https_and_wss_backends_and_upstream_tls_are_available() -> None:
    """``https://`` and ``wss://`` servers and ``upstream_tls`` load (issue #17 item 3, issue
    #19: WebSocket proxying), and so does ``stream_idle_timeout``."""
    snippet = (
        'services "tls-app" {\n  load_balancer {\n'
        '    servers = [{ url = "https://127.0.0.1:9443" }]\n'
        '    stream_idle_timeout = "10m"\n'
        '    upstream_tls {\n      ca_file = "/etc/gateway/ca.pem"\n'
        '      server_name = "app.internal"\n      insecure_skip_verify = false\n    }\n'
        "  }\n}\n"
    )
    assert load_text(BASE + snippet, filename="t.hcl", env={}).errors == ()
    for scheme in ("wss://", "ws://"):
        changed = snippet.replace("https://", scheme)
        assert load_text(BASE + changed, filename="t.hcl", env={}).errors == ()
