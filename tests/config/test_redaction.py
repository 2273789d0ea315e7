"""Secrets in renderings of a config and in its problems (SPEC §14.4): the secret fields,
sensitive header values, and every interpolated value (unless its variable is listed in
``public_env``, it went into a file path, or it filled a number field), wherever it sits in a
string; kept through the ``--listen`` override. ``Redactor`` itself: spellings, cuts, pieces."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from a3s_gateway.config.load import load, load_config_text, load_text
from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.problems import Problem
from a3s_gateway.config.redaction import REDACTED, Redactor, Spot
from a3s_gateway.config.schema import redactor_of, remember_secrets, secrets_of
from a3s_gateway.config.values import Address

if TYPE_CHECKING:
    from pathlib import Path

TEXT = """
entrypoints "web" {
  address = "127.0.0.1:${PORT}"
}
routers "r" {
  rule        = "PathPrefix(`/`)"
  service     = "s"
  middlewares = ["hdr", "forward"]
}
services "s" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9000" }]
  }
}
middlewares "hdr" {
  type = "headers"
  request_headers = {
    "Authorization"   = "Bearer plain-bearer-value"
    "X-Api-Token"     = "plain-token-value"
    "X-Upstream-Key"  = "plain-key-value"
    "X-Upstream-Auth" = "${BACKEND_PASS}"
    "X-Trace"         = "${TRACE_TAG}"
    "X-Region"        = "${REGION}"
    "X-Visible"       = "shown"
  }
}
middlewares "forward" {
  type             = "forward-auth"
  forward_auth_url = "https://auth.internal/${TOKEN}/check"
}
management {
  tls {
    cert_file = "${CERT_DIR}/cert.pem"
    key_file  = "${CERT_DIR}/key.pem"
  }
}
observability {
  access_log_path = "${LOG_DIR}/access.log"
}
shutdown_timeout_secs = "${GRACE}"
public_env            = ["REGION"]
"""

ENV = {
    "PORT": "18443",
    "BACKEND_PASS": "hunter2-backend",
    "TRACE_TAG": "trace-tag-value",
    "REGION": "eu-west-7",
    "TOKEN": "t0ken-in-path",
    "CERT_DIR": "/etc/gw-certs",
    "LOG_DIR": "/var/log/gw",
    "GRACE": "17",
}
HIDDEN = ("hunter2-backend", "trace-tag-value", "t0ken-in-path", "18443")


def rendered(text: str = TEXT, env: dict[str, str] = ENV) -> str:
    return load_config_text(text, env=env).to_json().decode()


# ------------------------------------------------------------------------------ dumps


def test_sensitive_header_values_are_redacted() -> None:
    out = rendered()
    for secret in ("plain-bearer-value", "plain-token-value", "plain-key-value"):
        assert secret not in out
    assert "shown" in out


def test_every_interpolated_value_is_redacted_whatever_its_name() -> None:
    out = rendered()
    for secret in HIDDEN:
        assert secret not in out
    document = json.loads(out)
    headers = document["middlewares"]["hdr"]["request_headers"]
    assert headers["X-Upstream-Auth"] == REDACTED
    assert headers["X-Trace"] == REDACTED
    # Only the substituted part: the text the file wrote around it stays readable.
    assert document["middlewares"]["forward"]["forward_auth_url"] == (
        "https://auth.internal/<redacted>/check"
    )
    assert document["entrypoints"]["web"]["address"] == "127.0.0.1:<redacted>"


def test_public_variables_file_paths_and_numbers_stay_visible() -> None:
    document = json.loads(rendered())
    assert document["middlewares"]["hdr"]["request_headers"]["X-Region"] == "eu-west-7"
    assert document["management"]["tls"]["cert_file"] == "/etc/gw-certs/cert.pem"
    assert document["management"]["tls"]["key_file"] == "/etc/gw-certs/key.pem"
    assert document["observability"]["access_log_path"] == "/var/log/gw/access.log"
    assert document["shutdown_timeout_secs"] == 17
    assert document["public_env"] == ["REGION"]


def test_a_value_used_both_as_a_secret_and_in_a_path_is_hidden_everywhere() -> None:
    text = TEXT.replace('"X-Visible"       = "shown"', '"X-Visible" = "${CERT_DIR}"')
    out = rendered(text)
    assert "/etc/gw-certs" not in out
    assert '"cert_file":"<redacted>/cert.pem"' in out


def test_the_listen_override_keeps_the_redaction() -> None:
    config = load_config_text(TEXT, env=ENV)
    moved = apply_listen_override(config, Address("127.0.0.1:9999"))
    out = moved.to_json().decode()
    assert "hunter2-backend" not in out
    assert "127.0.0.1:9999" in out
    assert secrets_of(moved) == secrets_of(config)


def test_without_redaction_everything_is_there() -> None:
    config = load_config_text(TEXT, env=ENV)
    out = config.to_json(redact=False).decode()
    for secret in (*HIDDEN, "plain-bearer-value"):
        assert secret in out


def test_remembered_secrets_add_up() -> None:
    config = load_config_text(TEXT, env=ENV)
    remember_secrets(config, {"another-one", ""})
    assert "another-one" in secrets_of(config)
    assert "hunter2-backend" in secrets_of(config)
    assert "" not in secrets_of(config)
    assert redactor_of(config).text("x another-one y") == "x <redacted> y"


# ------------------------------------------------------------------------------ problems


def problems(text: str, env: dict[str, str]) -> list[str]:
    return [problem.format() for problem in load_text(text, env=env).problems]


def test_a_problem_quotes_the_value_with_the_secret_redacted() -> None:
    env = {**ENV, "TOKEN": "s3cr3t#fragment"}
    shown = problems(TEXT, env)
    assert any(
        'forward_auth_url: url "https://auth.internal/<redacted>/check" is invalid: '
        "a fragment is not allowed" in line
        for line in shown
    ), shown
    assert not any("s3cr3t" in line for line in shown)


def test_a_piece_of_a_secret_quoted_alone_is_redacted() -> None:
    # The whole host came from a variable; the parser quotes the host alone.
    text = TEXT.replace("https://auth.internal/${TOKEN}/check", "https://${AUTH_HOST}/check")
    shown = problems(text, {**ENV, "AUTH_HOST": "bad host.internal:8443"})
    line = next(line for line in shown if "forward_auth_url" in line)
    assert "bad host" not in line
    assert 'url "https://<redacted>/check" is invalid: "<redacted>" is not a valid host' in line


def test_the_file_s_own_text_in_a_quoted_piece_stays() -> None:
    text = TEXT.replace("https://auth.internal/${TOKEN}/check", "ftp://auth.internal/${TOKEN}")
    line = next(line for line in problems(text, ENV) if "forward_auth_url" in line)
    assert 'url "ftp://auth.internal/<redacted>" is invalid: unsupported scheme "ftp"' in line


def test_a_secret_cut_off_in_a_message_is_redacted() -> None:
    # quote_value cuts at 100 characters, in the middle of the secret here.
    secret = "Z" * 30 + "q" * 30
    prefix = "/" + "p" * 60  # with "https://auth internal": the secret starts at 82
    text = TEXT.replace(
        "https://auth.internal/${TOKEN}/check", f"https://auth internal{prefix}${{TOKEN}}"
    )
    line = next(line for line in problems(text, {**ENV, "TOKEN": secret}) if "forward_" in line)
    assert "ZZZ" not in line
    assert f'url "https://auth internal{prefix}<redacted>..." is invalid' in line
    assert '"auth internal" is not a valid host name' in line


def test_an_escaped_secret_is_redacted() -> None:
    text = TEXT.replace("https://auth.internal/${TOKEN}/check", "https://auth/${TOKEN}")
    line = next(
        line for line in problems(text, {**ENV, "TOKEN": "tab\there"}) if "forward_" in line
    )
    assert "tab" not in line
    assert "here" not in line


def test_semantic_problems_and_warnings_are_redacted() -> None:
    text = TEXT.replace('rule        = "PathPrefix(`/`)"', 'rule = "PathPrefix(`/${TOKEN}`"')
    shown = problems(text, {**ENV, "TOKEN": "rule-secret"})
    line = next(line for line in shown if 'routers["r"].rule' in line)
    assert "rule-secret" not in line
    assert "PathPrefix(`/<redacted>`" in line


def test_a_public_variable_is_quoted_as_it_is() -> None:
    text = TEXT.replace('public_env            = ["REGION"]', 'public_env = ["REGION", "TOKEN"]')
    line = next(line for line in problems(text, {**ENV, "TOKEN": "open#x"}) if "forward_" in line)
    assert "https://auth.internal/open#x/check" in line


def test_public_env_is_literal_main_file_only_and_warns_of_secret_names() -> None:
    text = TEXT.replace(
        'public_env            = ["REGION"]', 'public_env = ["REGION", "API_TOKEN", "${X}"]'
    )
    result = load_text(text, env={**ENV, "X": "REGION"})
    shown = {problem.path: problem for problem in result.problems}
    assert shown["public_env[2]"].severity == "error"
    assert "environment variable name" in shown["public_env[2]"].message
    assert shown["public_env[1]"].severity == "warning"
    assert "API_TOKEN looks like the name of a secret" in shown["public_env[1]"].message


def test_public_env_in_conf_d_is_refused(tmp_path: Path) -> None:
    root = tmp_path
    (root / "conf.d").mkdir()
    (root / "conf.d" / "x.hcl").write_text('public_env = ["TOKEN"]\n')
    main = root / "gateway.hcl"
    main.write_text('providers {\n  file {\n    directory = "conf.d"\n  }\n}\n')
    result = load(main, env={})
    assert "public_env" in [p.path for p in result.errors]


# ------------------------------------------------------------------------------ Redactor


def test_redactor_merges_overlapping_secrets_and_is_idempotent() -> None:
    redactor = Redactor({"abc", "bcdefgh", ""})
    assert redactor.text("xabcdefghy") == "x<redacted>y"
    assert redactor.text("ABC and abc") == "<redacted> and <redacted>"
    once = redactor.text("abc abc")
    assert redactor.text(once) == once
    assert Redactor().text("abc") == "abc"
    assert not Redactor({""})


def test_redactor_spellings_and_cuts_in_messages() -> None:
    redactor = Redactor({'tab\t"quote'})
    assert redactor.text('"tab\\t"quote"', message=True) == '"<redacted>"'
    assert redactor.text('x tab\\t\\"quote y', message=True) == "x <redacted> y"
    assert redactor.text('"xx tab\\t"q..."', message=True) == '"xx <redacted>..."'
    # Outside messages a trailing "..." is just text.
    assert redactor.text("tab...") == "tab..."


def test_redactor_pieces_at_a_spot() -> None:
    redactor = Redactor({"evil:1"}, [Spot('services["s"].url', ("http://", "/x"))])

    def message(path: str, text: str) -> str:
        problem = Problem(severity="error", file="f", line=1, column=1, path=path, message=text)
        return redactor.problem(problem).message

    at = 'services["s"].url'
    assert message(at, 'bad "http://evil:1/x": host "evil"') == (
        'bad "http://<redacted>/x": host "<redacted>"'
    )
    assert message(at, "scheme 'http://' and `/x`") == "scheme 'http://' and `/x`"
    assert message('services["s"]', 'block "evil"') == 'block "evil"'
    assert message("services", 'section "evil"') == 'section "evil"'
    assert message("", 'file "evil"') == 'file "evil"'
    assert message('services["s"].url[0]', 'x "evil"') == 'x "evil"'
    holder = Redactor({"v"}, [Spot('m["x"].command[1]', ())])
    problem = Problem(
        severity="error", file="f", line=1, column=1, path='m["x"].command', message='"w"'
    )
    assert holder.problem(problem).message == f'"{REDACTED}"'


def test_redactor_tree() -> None:
    redactor = Redactor({"s3"})
    tree = {"a": ["xs3x", 3, None, {"k": "S3"}], "s3": "kept key"}
    assert redactor.tree(tree) == {
        "a": ["x<redacted>x", 3, None, {"k": "<redacted>"}],
        "s3": "kept key",
    }
