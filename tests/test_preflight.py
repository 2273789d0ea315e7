"""Environment checks with real certificates made by trustme (SPEC §3.1 step 6)."""

from __future__ import annotations

import datetime
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
from tests.support.certs import encrypted_key, issue, issue_ca, write_pair

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


def test_validate_config_checks_the_acme_ca_file(
    tmp_path: Path, pem_files: dict[str, Path]
) -> None:
    config = tmp_path / "gateway.hcl"
    missing = tmp_path / "missing-ca.pem"
    extra = (
        'alpn = ["h2", "http/1.1"]\n    acme = true\n    acme_email = "ops@example.com"\n'
        f'    acme_ca_file = "{missing}"\n    acme_storage_path = "{tmp_path / "acme"}"'
    )
    config.write_text(tls_config(pem_files["cert"], pem_files["key"], extra))
    errors = [p for p in validate_config(config) if p.severity == "error"]
    assert {p.path for p in errors} == {'entrypoints["web"].tls.acme_ca_file'}
    assert str(missing) in errors[0].message


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


# -- certificate validity, purpose and passphrases (issue #17 item 6) ---------------------------

YEAR = datetime.timedelta(days=365)


def _leaf_files(
    tmp_path: Path,
    ca: trustme.CA,
    stem: str,
    *,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
) -> Path:
    leaf = ca.issue_cert(f"{stem}.test", not_before=not_before, not_after=not_after)
    cert = tmp_path / f"{stem}.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(tmp_path / f"{stem}-key.pem"))
    return cert


def test_an_expired_certificate_is_an_error(ca: trustme.CA, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert = _leaf_files(tmp_path, ca, "old", not_before=now - 2 * YEAR, not_after=now - YEAR)
    [(path, message)] = problems_of(tls_config(cert, tmp_path / "old-key.pem"))
    assert path == 'entrypoints["web"].tls.cert_file'
    assert message.startswith(f'certificate "{cert}" has expired: not valid after ')


def test_a_certificate_not_valid_yet_is_an_error(ca: trustme.CA, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert = _leaf_files(tmp_path, ca, "new", not_before=now + YEAR, not_after=now + 2 * YEAR)
    [(path, message)] = problems_of(tls_config(cert, tmp_path / "new-key.pem"))
    assert path == 'entrypoints["web"].tls.cert_file'
    assert f'certificate "{cert}" is not valid yet: not valid before ' in message


def test_validity_is_judged_at_the_given_time(ca: trustme.CA, tmp_path: Path) -> None:
    """``check(now=...)``: the same pair is fine today and expired two years from now."""
    today = datetime.datetime.now(datetime.UTC)
    cert = _leaf_files(tmp_path, ca, "today", not_before=today - YEAR, not_after=today + YEAR)
    options = LoadOptions(refuse_unavailable=False)
    result = load_text(tls_config(cert, tmp_path / "today-key.pem"), env={}, options=options)
    assert check(result, offline=False, now=today) == result.problems
    [later] = check(result, offline=False, now=today + 2 * YEAR)
    assert "has expired" in later.message
    [earlier] = check(result, offline=False, now=today - 2 * YEAR)
    assert "is not valid yet" in earlier.message


def test_a_client_only_certificate_cannot_serve(ca: trustme.CA, tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, "client", issue(ca, "client.test", usages=("clientAuth",)))
    [(path, message)] = problems_of(tls_config(cert, key))
    assert path == 'entrypoints["web"].tls.cert_file'
    assert message == (
        f'certificate "{cert}" is not for TLS servers: its extended key usage (clientAuth) '
        "lacks serverAuth"
    )
    # Without an extended key usage a certificate may serve either side.
    cert, key = write_pair(tmp_path, "any", issue(ca, "any.test", usages=None))
    assert problems_of(tls_config(cert, key)) == []


def test_an_encrypted_key_is_a_clear_error_and_never_a_prompt(
    ca: trustme.CA, tmp_path: Path
) -> None:
    leaf = ca.issue_cert("locked.test")
    cert, key = tmp_path / "locked.pem", tmp_path / "locked-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    key.write_bytes(encrypted_key(leaf))
    [(path, message)] = problems_of(tls_config(cert, key))
    assert path == 'entrypoints["web"].tls.key_file'
    assert message.startswith(
        f'the key in "{key}" is encrypted; a passphrase-protected key is not supported'
    )


def test_a_client_ca_file_must_hold_cas(
    ca: trustme.CA, tmp_path: Path, pem_files: dict[str, Path]
) -> None:
    extra = f'client_auth = "require"\n    client_ca_file = "{pem_files["cert"]}"'
    [(path, message)] = problems_of(tls_config(pem_files["cert"], pem_files["key"], extra))
    assert path == 'entrypoints["web"].tls.client_ca_file'
    assert message.startswith(f'CA file "{pem_files["cert"]}" holds a certificate that is not a CA')


def test_an_expired_ca_bundle_is_an_error(ca: trustme.CA, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    old = tmp_path / "old-ca.pem"
    old.write_bytes(issue_ca(now - 2 * YEAR, now - YEAR))
    text = upstream_config(f'ca_file = "{old}"')
    [(path, message)] = problems_of(text)
    assert path == 'services["backend"].load_balancer.upstream_tls.ca_file'
    assert message.startswith(f'every certificate in CA file "{old}" has expired')


def upstream_config(lines: str) -> str:
    return (
        'entrypoints "web" {\n  address = "127.0.0.1:8080"\n}\n'
        'routers "api" {\n  rule    = "PathPrefix(`/`)"\n  service = "backend"\n}\n'
        'services "backend" {\n  load_balancer {\n'
        '    servers = [{ url = "https://127.0.0.1:8001" }]\n'
        f"    upstream_tls {{\n      {lines}\n    }}\n  }}\n}}\n"
    )


def test_upstream_client_certificates_need_client_auth(ca: trustme.CA, tmp_path: Path) -> None:
    cert, key = write_pair(tmp_path, "server", issue(ca, "server.test", usages=("serverAuth",)))
    text = upstream_config(f'cert_file = "{cert}"\n      key_file = "{key}"')
    [(path, message)] = problems_of(text)
    assert path == 'services["backend"].load_balancer.upstream_tls.cert_file'
    assert message == (
        f'certificate "{cert}" is not for TLS clients: its extended key usage (serverAuth) '
        "lacks clientAuth"
    )
    good, good_key = write_pair(tmp_path, "client", issue(ca, "c.test", usages=("clientAuth",)))
    assert (
        problems_of(upstream_config(f'cert_file = "{good}"\n      key_file = "{good_key}"')) == []
    )


def test_upstream_files_unreadable_and_mismatched(
    tmp_path: Path, pem_files: dict[str, Path]
) -> None:
    missing = tmp_path / "missing-ca.pem"
    text = upstream_config(
        f'ca_file = "{missing}"\n      cert_file = "{pem_files["cert"]}"\n'
        f'      key_file = "{pem_files["other_key"]}"'
    )
    assert problems_of(text) == [
        ('services["backend"].load_balancer.upstream_tls.ca_file', f'file "{missing}" not found'),
        (
            'services["backend"].load_balancer.upstream_tls.cert_file',
            f'key "{pem_files["other_key"]}" does not match certificate "{pem_files["cert"]}"',
        ),
    ]


def test_validate_config_reports_an_expired_management_certificate(
    ca: trustme.CA, tmp_path: Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert = _leaf_files(tmp_path, ca, "mgmt", not_before=now - 2 * YEAR, not_after=now - YEAR)
    config = tmp_path / "gateway.hcl"
    config.write_text(
        'entrypoints "web" {\n  address = "127.0.0.1:8080"\n}\n'
        + ROUTES
        + f'management {{\n  address = "127.0.0.1:0"\n  tls {{\n    cert_file = "{cert}"\n'
        f'    key_file  = "{tmp_path / "mgmt-key.pem"}"\n  }}\n}}\n'
    )
    [problem] = [p for p in validate_config(config) if p.severity == "error"]
    assert (problem.path, problem.file, problem.line) == (
        "management.tls.cert_file",
        str(config),
        17,
    )
    assert "has expired" in problem.message
    assert all(p.severity != "error" for p in validate_config(config, offline=True))
