"""Environment checks with real certificates made by trustme (SPEC §3.1 step 6)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from a3s_gateway import cli
from a3s_gateway.config.load import LoadOptions, load_text
from a3s_gateway.preflight import OTEL_MODULES, check, otel_missing, validate_config

ROUTES = """
routers "api" {
  rule    = "PathPrefix(`/`)"
  service = "backend"
}
services "backend" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:8001" }]
  }
}
"""


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def pem_files(ca: trustme.CA, tmp_path: Path) -> dict[str, Path]:
    cert = ca.issue_cert("gateway.test")
    other = ca.issue_cert("other.test")
    files = {
        "cert": tmp_path / "cert.pem",
        "key": tmp_path / "key.pem",
        "other_key": tmp_path / "other-key.pem",
        "ca": tmp_path / "ca.pem",
        "garbage": tmp_path / "garbage.pem",
        "public": tmp_path / "public.pem",
    }
    cert.cert_chain_pems[0].write_to_path(str(files["cert"]))
    cert.private_key_pem.write_to_path(str(files["key"]))
    other.private_key_pem.write_to_path(str(files["other_key"]))
    ca.cert_pem.write_to_path(str(files["ca"]))
    files["garbage"].write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    files["public"].write_bytes(
        public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return files


def tls_config(cert: Path | str, key: Path | str, extra: str = "") -> str:
    return (
        f"""
entrypoints "web" {{
  address = "127.0.0.1:8443"
  tls {{
    cert_file = "{cert}"
    key_file  = "{key}"
    {extra}
  }}
}}
"""
        + ROUTES
    )


def problems_of(text: str) -> list[tuple[str, str]]:
    # Entrypoint TLS is not available yet; its files are still checked the way it will use them.
    options = LoadOptions(refuse_unavailable=False)
    result = load_text(text, filename="t.hcl", env={}, options=options)
    assert result.errors == (), [p.format() for p in result.errors]
    return [(p.path, p.message) for p in check(result, offline=False) if p.severity == "error"]


def test_a_matching_pair_passes(pem_files: dict[str, Path]) -> None:
    extra = f'client_auth = "require"\n    client_ca_file = "{pem_files["ca"]}"'
    assert problems_of(tls_config(pem_files["cert"], pem_files["key"], extra)) == []


def test_offline_skips_the_files(tmp_path: Path) -> None:
    result = load_text(tls_config(tmp_path / "no.pem", tmp_path / "no-key.pem"), env={})
    assert check(result, offline=True) == result.problems


def test_missing_files_are_named(tmp_path: Path) -> None:
    cert, key = tmp_path / "missing.pem", tmp_path / "missing-key.pem"
    assert problems_of(tls_config(cert, key)) == [
        ('entrypoints["web"].tls.cert_file', f'file "{cert}" not found'),
        ('entrypoints["web"].tls.key_file', f'file "{key}" not found'),
    ]


def test_a_key_that_does_not_match_is_reported(pem_files: dict[str, Path]) -> None:
    [(path, message)] = problems_of(tls_config(pem_files["cert"], pem_files["other_key"]))
    assert path == 'entrypoints["web"].tls.cert_file'
    assert "does not match" in message


def test_garbage_pem_is_reported(pem_files: dict[str, Path]) -> None:
    [(path, message)] = problems_of(tls_config(pem_files["garbage"], pem_files["key"]))
    assert path == 'entrypoints["web"].tls.cert_file'
    assert "cannot be loaded" in message or "not valid PEM" in message


def test_a_ca_file_without_certificates_is_reported(pem_files: dict[str, Path]) -> None:
    extra = f'client_auth = "request"\n    client_ca_file = "{pem_files["key"]}"'
    [(path, message)] = problems_of(tls_config(pem_files["cert"], pem_files["key"], extra))
    assert path == 'entrypoints["web"].tls.client_ca_file'
    assert "no parseable PEM certificate" in message


def test_key_contents_never_appear_in_messages(pem_files: dict[str, Path]) -> None:
    key_text = pem_files["key"].read_text()
    body = key_text.splitlines()[1]
    for path, message in problems_of(tls_config(pem_files["cert"], pem_files["other_key"])):
        assert body not in message
        assert body not in path


def jwt_config(public_key_file: Path) -> str:
    return (
        f"""
entrypoints "web" {{
  address = "127.0.0.1:8080"
}}
middlewares "auth" {{
  type = "jwt"
  algorithms = ["ES256"]
  public_key_file = "{public_key_file}"
}}
"""
        + ROUTES
    )


def test_jwt_public_key_files_are_parsed(pem_files: dict[str, Path]) -> None:
    assert problems_of(jwt_config(pem_files["public"])) == []
    [(path, message)] = problems_of(jwt_config(pem_files["cert"]))
    assert path == 'middlewares["auth"].public_key_file'
    assert "not a PEM public key" in message


def test_validate_config_combines_both(tmp_path: Path, pem_files: dict[str, Path]) -> None:
    config = tmp_path / "gateway.hcl"
    management = f"""
management {{
  address = "127.0.0.1:0"
  tls {{
    cert_file = "{pem_files["cert"]}"
    key_file  = "{tmp_path / "nope.pem"}"
  }}
}}
"""
    config.write_text(
        'entrypoints "web" {\n  address = "127.0.0.1:8080"\n}\n' + ROUTES + management
    )
    online = validate_config(config)
    assert [p.path for p in online if p.severity == "error"] == ["management.tls.key_file"]
    assert all(p.severity != "error" for p in validate_config(config, offline=True))


def test_validate_config_refuses_what_is_not_available_yet(
    tmp_path: Path, pem_files: dict[str, Path]
) -> None:
    config = tmp_path / "gateway.hcl"
    config.write_text(tls_config(pem_files["cert"], pem_files["key"]))
    errors = [p for p in validate_config(config) if p.severity == "error"]
    assert [p.path for p in errors] == ['entrypoints["web"].tls']
    assert "TLS termination" in errors[0].message


def otlp_config(endpoint: str, *, tracing: bool = True) -> str:
    return (
        f"""
entrypoints "web" {{
  address = "127.0.0.1:8080"
}}
observability {{
  otlp_endpoint   = "{endpoint}"
  tracing_enabled = {"true" if tracing else "false"}
}}
"""
        + ROUTES
    )


def test_an_otlp_endpoint_with_the_otel_extra_installed_passes() -> None:
    missing = otel_missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the otel extra must be installed in CI: {missing}")
        pytest.skip(f"the otel extra is not installed: {missing}")
    assert problems_of(otlp_config("http://collector.internal:4318")) == []


@pytest.mark.parametrize("module", OTEL_MODULES)
def test_an_otlp_endpoint_without_the_otel_extra_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, module: str
) -> None:
    """SPEC §9.4: a config error naming the ``otel`` extra, in ``validate`` and at start."""
    monkeypatch.setitem(sys.modules, module, None)  # "import module" now fails
    [(path, message)] = problems_of(otlp_config("http://collector.internal:4318"))
    assert path == "observability.otlp_endpoint"
    assert '"otel" extra' in message
    assert "a3s-gateway[otel]" in message
    assert module in message
    # With tracing off nothing is exported, so the packages are not needed.
    assert problems_of(otlp_config("http://collector.internal:4318", tracing=False)) == []


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("collector:4318", "expected http:// or https://"),
        ("grpc://collector:4317", 'unsupported scheme "grpc"'),
        ("http://user:pw@collector:4318", "userinfo"),
    ],
)
def test_an_otlp_endpoint_must_be_an_http_url(endpoint: str, reason: str) -> None:
    [(path, message)] = problems_of(otlp_config(endpoint, tracing=False))
    assert path == "observability.otlp_endpoint"
    assert reason in message
    assert "pw" not in message  # a URL with userinfo may carry a password


def test_validate_reports_a_missing_otel_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gateway.hcl"
    config.write_text(otlp_config("https://otel.example/v1/traces"))
    monkeypatch.setitem(sys.modules, OTEL_MODULES[0], None)
    [problem] = [p for p in validate_config(config) if p.severity == "error"]
    assert problem.path == "observability.otlp_endpoint"
    assert problem.file == str(config)
    assert problem.line == 6
    assert all(p.severity != "error" for p in validate_config(config, offline=True))


@pytest.fixture
def app_logger() -> Iterator[None]:
    """``run`` installs the application log on the ``a3s_gateway`` logger: put it back."""
    logger = logging.getLogger("a3s_gateway")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


@pytest.mark.usefixtures("app_logger")
@pytest.mark.parametrize("command", ["validate", "run"])
def test_the_cli_refuses_an_otlp_endpoint_without_the_otel_extra(
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "gateway.hcl"
    config.write_text(otlp_config("http://collector.internal:4318"))
    monkeypatch.setitem(sys.modules, OTEL_MODULES[1], None)
    assert cli.main([command, str(config)]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "observability.otlp_endpoint" in err
    assert 'install the "otel" extra' in err


def test_environment_problems_redact_interpolated_values_but_not_file_paths(
    tmp_path: Path,
) -> None:
    """SPEC §14.4: an interpolated value in an environment check's message is redacted, a file
    path stays readable (``${CERT_DIR}/cert.pem``)."""
    text = tls_config("${CERT_DIR}/cert.pem", "${CERT_DIR}/key.pem") + (
        'observability {\n  otlp_endpoint = "collector.${OTLP_SECRET}:4318"\n'
        "  tracing_enabled = false\n}\n"
    )
    env = {"CERT_DIR": str(tmp_path / "certs"), "OTLP_SECRET": "zone-s3cr3t"}
    options = LoadOptions(refuse_unavailable=False)
    result = load_text(text, filename="t.hcl", env=env, options=options)
    shown = {p.path: p.message for p in check(result, offline=False)}
    assert shown['entrypoints["web"].tls.cert_file'] == (
        f'file "{tmp_path}/certs/cert.pem" not found'
    )
    assert "s3cr3t" not in shown["observability.otlp_endpoint"]
    assert '"collector.<redacted>:4318"' in shown["observability.otlp_endpoint"]
