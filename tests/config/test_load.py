"""The loading pipeline end to end (SPEC §3.1, §3.5): files, conf.d, interpolation, nulls,
errors with file and line, the acceptance fixtures, redaction and hashing of ``Config``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from a3s_gateway import ConfigError, load_config, load_config_text
from a3s_gateway.config.load import LoadOptions, conf_d_files, load, load_text
from a3s_gateway.config.schema_middlewares import Jwt
from tests.support.cli import FIXTURES

SECRET = "an-hs256-secret-that-is-long-enough-0123456789"
MINIMAL = """
entrypoints "web" {
  address = ":8080"
}
routers "api" {
  rule    = "PathPrefix(`/api`)"
  service = "backend"
}
services "backend" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:8001" }]
  }
}
"""


def service_block(name: str, port: int) -> str:
    servers = f'servers = [{{ url = "http://127.0.0.1:{port}" }}]'
    return f'services "{name}" {{\n  load_balancer {{\n    {servers}\n  }}\n}}\n'


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_quickstart_loads_with_no_problems() -> None:
    result = load(FIXTURES / "quickstart.hcl")
    assert result.problems == ()
    assert result.config is not None
    server = result.config.services["backend"].load_balancer
    assert server is not None
    assert server.servers[0].url.port == 8001


def test_readme_example_loads_with_warnings_only() -> None:
    """The seed README's full example is valid config language, checked by every rule."""
    options = LoadOptions(refuse_unavailable=False)
    result = load(FIXTURES / "readme-example.hcl", env={"JWT_SECRET": SECRET}, options=options)
    assert result.errors == (), [p.format() for p in result.errors]
    assert result.config is not None
    middleware = result.config.middlewares["auth-jwt"]
    assert isinstance(middleware, Jwt)
    assert middleware.value == SECRET
    revisions = result.config.services["api-service"].revisions
    assert [r.traffic_percent for r in revisions] == [90, 10]


def test_readme_example_loads_with_every_feature_available() -> None:
    result = load(FIXTURES / "readme-example.hcl", env={"JWT_SECRET": SECRET})
    assert result.errors == (), [p.format() for p in result.errors]
    assert result.config is not None


def test_readme_example_without_the_variable_names_it_once() -> None:
    result = load(
        FIXTURES / "readme-example.hcl", env={}, options=LoadOptions(refuse_unavailable=False)
    )
    assert len(result.errors) == 1
    error = result.errors[0]
    assert "JWT_SECRET" in error.message
    assert error.path == 'middlewares["auth-jwt"].value'
    assert error.line is not None


def test_load_config_raises_config_error_with_every_problem() -> None:
    text = MINIMAL.replace('service = "backend"', 'service = "nope"').replace(
        'address = ":8080"', 'address = ":8080"\n  colour = "blue"'
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, filename="g.hcl")
    errors = [p for p in caught.value.problems if p.severity == "error"]
    assert {p.path for p in errors} == {'entrypoints["web"].colour', 'routers["api"].service'}
    assert all(p.file == "g.hcl" and p.line is not None for p in errors)
    assert "(and 1 more)" in str(caught.value)


def test_null_means_the_default() -> None:
    config = load_config_text(MINIMAL + "shutdown_timeout_secs = null\n")
    assert config.shutdown_timeout_secs == 30


def test_interpolation_whole_values_become_numbers() -> None:
    config = load_config_text(MINIMAL + 'shutdown_timeout_secs = "${GRACE}"\n', env={"GRACE": "45"})
    assert config.shutdown_timeout_secs == 45


def test_interpolation_error_points_at_the_field() -> None:
    result = load_text(MINIMAL.replace('":8080"', '"${BIND}"'), filename="g.hcl", env={})
    [error] = result.errors
    assert error.path == 'entrypoints["web"].address'
    assert error.line == 3
    assert "BIND" in error.message


def test_bom_is_skipped(tmp_path: Path) -> None:
    config = write(tmp_path / "g.hcl", "\ufeff" + MINIMAL)
    assert load_config(config).routers["api"].service == "backend"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe bad", "not valid UTF-8"),
        (b"x" * (16 * 1024 * 1024 + 1), "larger than 16 MiB"),
    ],
)
def test_unreadable_files_are_problems(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "g.hcl"
    path.write_bytes(content)
    result = load(path)
    assert result.config is None
    assert message in result.problems[0].message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert "directory" in load(tmp_path).problems[0].message


def test_syntax_error_reports_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path / "g.hcl", 'entrypoints "web" {\n  address = \n}\n')
    result = load(path)
    assert result.config is None
    [error] = result.errors
    assert error.file == str(path)
    assert error.line is not None


# -- conf.d (SPEC §3.5) ---------------------------------------------------------------------


def with_conf_d(main: str, directory: str = "conf.d") -> str:
    return main + f'providers {{\n  file {{\n    directory = "{directory}"\n  }}\n}}\n'


def test_conf_d_files_are_merged_in_path_order(tmp_path: Path) -> None:
    main = write(tmp_path / "gateway.hcl", with_conf_d(MINIMAL))
    write(
        tmp_path / "conf.d" / "b" / "svc.hcl",
        service_block("two", 2),
    )
    write(
        tmp_path / "conf.d" / "a.hcl",
        'routers "two" {\n  rule = "Path(`/two`)"\n  service = "two"\n}\n',
    )
    write(tmp_path / "conf.d" / ".hidden.hcl", "this is not read {")
    write(tmp_path / "conf.d" / "notes.txt", "neither is this {")
    result = load(main)
    assert result.errors == (), [p.format() for p in result.problems]
    assert result.config is not None
    assert set(result.config.routers) == {"api", "two"}
    assert set(result.config.services) == {"backend", "two"}
    assert [Path(f).name for f in result.files] == ["gateway.hcl", "a.hcl", "svc.hcl"]


def test_conf_d_order_is_bytewise(tmp_path: Path) -> None:
    for name in ("b.hcl", "B.hcl", "a/z.hcl", "a.hcl"):
        write(tmp_path / name, "")
    assert [p.relative_to(tmp_path).as_posix() for p in conf_d_files(tmp_path)] == [
        "B.hcl",
        "a.hcl",
        "a/z.hcl",
        "b.hcl",
    ]


def test_a_name_defined_in_two_files_names_both(tmp_path: Path) -> None:
    main = write(tmp_path / "gateway.hcl", with_conf_d(MINIMAL))
    extra = write(
        tmp_path / "conf.d" / "dup.hcl",
        'routers "api" {\n  rule = "Path(`/x`)"\n  service = "backend"\n}\n',
    )
    result = load(main)
    [error] = result.errors
    assert error.file == str(extra)
    assert error.line == 1
    assert f"also at {main}:5" in error.message


def test_singletons_are_only_allowed_in_the_main_file(tmp_path: Path) -> None:
    main = write(tmp_path / "gateway.hcl", with_conf_d(MINIMAL))
    write(tmp_path / "conf.d" / "x.hcl", "shutdown_timeout_secs = 3\nmanagement {\n}\n")
    result = load(main)
    assert sorted(p.path for p in result.errors) == ["management", "shutdown_timeout_secs"]
    assert all("only in the main config file" in p.message for p in result.errors)


def test_references_resolve_across_files(tmp_path: Path) -> None:
    main = write(tmp_path / "gateway.hcl", with_conf_d(MINIMAL.replace('"backend"', '"shared"', 1)))
    write(
        tmp_path / "conf.d" / "svc.hcl",
        service_block("shared", 9),
    )
    result = load(main)
    assert result.errors == ()


def test_missing_conf_d_directory_is_a_warning(tmp_path: Path) -> None:
    main = write(tmp_path / "gateway.hcl", with_conf_d(MINIMAL, "nowhere"))
    result = load(main)
    assert result.config is not None
    [warning] = result.warnings
    assert "nowhere" in warning.message


# -- the Config value ---------------------------------------------------------------------------


def test_config_is_hashable_and_equal_by_value() -> None:
    one = load_config_text(MINIMAL)
    two = load_config_text(MINIMAL)
    assert one == two
    assert hash(one) == hash(two)
    assert hash(one) != hash(load_config_text(MINIMAL.replace("8001", "8002")))


def test_to_json_redacts_secrets() -> None:
    text = (
        MINIMAL
        + """
middlewares "keys" {
  type = "api-key"
  keys = ["k-123456"]
}
middlewares "basic" {
  type = "basic-auth"
  username = "admin"
  password = "p4ssw0rd-secret"
}
middlewares "jwt" {
  type = "jwt"
  value = "jwt-signing-secret-jwt-signing-secret"
}
middlewares "redis" {
  type = "rate-limit-redis"
  rate = 5
  redis_url = "redis://user:redis-pass@127.0.0.1:6379/0"
}
"""
    )
    config = load_config_text(text)
    rendered = config.to_json().decode()
    for secret in ("k-123456", "p4ssw0rd-secret", "jwt-signing-secret", "redis-pass"):
        assert secret not in rendered
    document = json.loads(rendered)
    assert document["middlewares"]["basic"]["username"] == "admin"
    assert "redis-pass" in config.to_json(redact=False).decode()


def test_an_interpolation_error_in_a_required_field_is_reported_once() -> None:
    text = 'entrypoints "web-1.a" {\n  address = "${BIND}"\n}\n'
    result = load_text(text, filename="g.hcl", env={})
    assert [(p.path, p.line) for p in result.problems] == [('entrypoints["web-1.a"].address', 2)]
