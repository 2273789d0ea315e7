"""What compiling a config with ACME entrypoints gives the listeners (runtime/compile.py,
SPEC §12.2, §12.5): ``TlsSettings.fallback`` (the storage of the self-signed default, only for
``acme = true`` without ``cert_file``) and ``RuntimeConfig.acme_storage`` (each HTTP-01
storage once, whose ``challenges/`` the plaintext entrypoints read)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from a3s_gateway.config.load import load_text
from a3s_gateway.runtime.compile import compile_runtime

if TYPE_CHECKING:
    from pathlib import Path

    from a3s_gateway.config.schema import Config
    from a3s_gateway.runtime.compile import RuntimeConfig, TlsSettings

ACME = '    acme = true\n    acme_email = "ops@example.test"\n'


def entrypoint(name: str, port: int, tls: str | None) -> str:
    block = "" if tls is None else f"  tls {{\n{tls}  }}\n"
    return f'entrypoints "{name}" {{\n  address = "127.0.0.1:{port}"\n{block}}}\n'


def acme(storage: Path, challenge: str = "http-01", extra: str = "") -> str:
    return f'{ACME}    acme_storage_path = "{storage}"\n    acme_challenge = "{challenge}"\n{extra}'


def files(tmp_path: Path) -> str:
    return f'    cert_file = "{tmp_path / "c.pem"}"\n    key_file = "{tmp_path / "k.pem"}"\n'


def compiled(text: str) -> RuntimeConfig:
    text += (
        'services "app" {\n  load_balancer {\n'
        '    servers = [{ url = "http://127.0.0.1:9000" }]\n  }\n}\n'
        'routers "app" {\n  rule = "Host(`shop.example.test`)"\n  service = "app"\n}\n'
    )
    result = load_text(text, filename="acme.hcl", env={})
    config: Config | None = result.config
    assert config is not None, [problem.format() for problem in result.errors]
    return compile_runtime(config, 1)


def tls_of(runtime: RuntimeConfig, name: str) -> TlsSettings:
    settings = runtime.entrypoints[name].tls_settings
    assert settings is not None
    return settings


def test_the_fallback_is_the_storage_of_an_acme_entrypoint_without_cert_file(
    tmp_path: Path,
) -> None:
    text = (
        entrypoint("auto", 8443, acme(tmp_path / "auto"))
        + entrypoint("both", 8444, files(tmp_path) + acme(tmp_path / "both"))
        + entrypoint("alpn", 8445, acme(tmp_path / "alpn", "tls-alpn-01"))
        + entrypoint("manual", 8446, files(tmp_path))
        + entrypoint("web", 8080, None)
    )
    runtime = compiled(text)
    assert tls_of(runtime, "auto").fallback == str(tmp_path / "auto")
    assert tls_of(runtime, "alpn").fallback == str(tmp_path / "alpn")
    assert tls_of(runtime, "both").fallback is None  # the configured certificate serves
    assert tls_of(runtime, "both").pairs == ((str(tmp_path / "c.pem"), str(tmp_path / "k.pem")),)
    assert tls_of(runtime, "manual").fallback is None
    assert runtime.entrypoints["web"].tls_settings is None


def test_the_default_storage_path_is_the_fallback_when_none_is_written() -> None:
    runtime = compiled(entrypoint("auto", 8443, ACME))
    assert tls_of(runtime, "auto").fallback == "/etc/gateway/acme"
    assert runtime.acme_storage == ("/etc/gateway/acme",)


def test_acme_storage_lists_each_http01_storage_once(tmp_path: Path) -> None:
    shared, other = tmp_path / "shared", tmp_path / "other"
    dns = '    acme_dns {\n      provider = "challtestsrv"\n    }\n'
    text = (
        entrypoint("a", 8443, acme(shared))
        + entrypoint("b", 8444, files(tmp_path) + acme(shared))  # the same storage again
        + entrypoint("c", 8445, acme(tmp_path / "alpn", "tls-alpn-01"))
        + entrypoint("d", 8446, acme(tmp_path / "dns", "dns-01", dns))
        + entrypoint("e", 8447, acme(other))
        + entrypoint("manual", 8448, files(tmp_path))
        + entrypoint("web", 8080, None)
    )
    runtime = compiled(text)
    assert runtime.acme_storage == (str(shared), str(other))


def test_no_acme_no_storage(tmp_path: Path) -> None:
    runtime = compiled(entrypoint("web", 8080, None) + entrypoint("tls", 8443, files(tmp_path)))
    assert runtime.acme_storage == ()
    runtime = compiled(entrypoint("alpn", 8443, acme(tmp_path / "alpn", "tls-alpn-01")))
    assert runtime.acme_storage == ()
