"""Secrets in redacted renderings of a config (SPEC §14.4): sensitive header values and strings
interpolated from secret-named variables, besides the secret fields themselves; kept through
the ``--listen`` override."""

from __future__ import annotations

import json

from a3s_gateway.config.load import load_config_text
from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.values import Address

TEXT = """
entrypoints "web" {
  address = "127.0.0.1:8080"
}
routers "r" {
  rule        = "PathPrefix(`/`)"
  service     = "s"
  middlewares = ["hdr"]
}
services "s" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9000" }]
  }
}
middlewares "hdr" {
  type = "headers"
  request_headers = {
    "Authorization"  = "Bearer plain-bearer-value"
    "X-Api-Token"    = "plain-token-value"
    "X-Upstream-Key" = "plain-key-value"
    "X-Trace"        = "${TRACE_TAG}"
    "X-Client"       = "${CLIENT_CREDENTIAL}"
    "X-Visible"      = "shown"
  }
}
middlewares "forward" {
  type             = "forward-auth"
  forward_auth_url = "http://auth.internal${AUTH_SECRET_PATH}"
}
"""

ENV = {
    "TRACE_TAG": "not-a-secret",
    "CLIENT_CREDENTIAL": "cred-from-env",
    "AUTH_SECRET_PATH": "/verify-s3cr3t",
}


def rendered(text: str = TEXT) -> str:
    config = load_config_text(text, env=ENV)
    return config.to_json().decode()


def test_sensitive_header_values_are_redacted() -> None:
    out = rendered()
    for secret in ("plain-bearer-value", "plain-token-value", "plain-key-value"):
        assert secret not in out
    assert "shown" in out
    assert "not-a-secret" in out  # an ordinary variable stays visible


def test_strings_from_secret_named_variables_are_redacted() -> None:
    out = rendered()
    assert "cred-from-env" not in out
    assert "s3cr3t" not in out
    headers = json.loads(out)["middlewares"]["hdr"]["request_headers"]
    assert headers["X-Client"] == "<redacted>"


def test_the_listen_override_keeps_the_redaction() -> None:
    config = load_config_text(TEXT, env=ENV)
    moved = apply_listen_override(config, Address("127.0.0.1:9999"))
    out = moved.to_json().decode()
    assert "cred-from-env" not in out
    assert "127.0.0.1:9999" in out


def test_without_redaction_everything_is_there() -> None:
    config = load_config_text(TEXT, env=ENV)
    out = config.to_json(redact=False).decode()
    assert "cred-from-env" in out
    assert "plain-bearer-value" in out
