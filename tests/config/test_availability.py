"""The refusal of settings whose feature has not landed (config/availability.py).

Every setting of the language works since ACME landed, so ``UNAVAILABLE`` is empty; the
mechanism stays for the next feature whose schema lands before its implementation. These tests
install a stand-in row (``acme_staging`` refused as if ACME had not landed) and check what a
row does: ``load`` names the field and the feature, a written default still counts, a
``Gateway`` or reload built in code refuses it, and no configured value is echoed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from a3s_gateway import ConfigError, Gateway
from a3s_gateway.config import availability
from a3s_gateway.config.availability import UNAVAILABLE, Unavailable, written
from a3s_gateway.config.load import LoadOptions, load_text
from a3s_gateway.errors import ReloadError
from tests.support.semantic import BASE

if TYPE_CHECKING:
    from collections.abc import Iterator

    from a3s_gateway.config.problems import Path, SourceMap
    from a3s_gateway.config.schema import Config

SNIPPET = """
entrypoints "secure" {
  address = "127.0.0.1:8443"
  tls {
    cert_file    = "/c.pem"
    key_file     = "/k.pem"
    acme_staging = %s
  }
}
"""
REFUSED = SNIPPET % "true"
REFUSED_PATH = 'entrypoints["secure"].tls.acme_staging'
REFUSED_MESSAGE = 'field "acme_staging" is not available yet'


def _staging(config: Config, sources: SourceMap) -> Iterator[tuple[Path, str]]:
    for name, entry in config.entrypoints.items():
        if entry.tls is None:
            continue
        path: Path = ("entrypoints", name, "tls", "acme_staging")
        if written(sources, path, differs=entry.tls.acme_staging):
            yield path, 'field "acme_staging"'


ROW = Unavailable("entrypoints.<name>.tls.acme_staging", "a stand-in feature", _staging, REFUSED)


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(availability, "UNAVAILABLE", (ROW,))


def test_nothing_is_refused_since_acme_landed() -> None:
    assert UNAVAILABLE == ()
    acme = (
        'entrypoints "secure" {\n  address = "127.0.0.1:8443"\n  tls {\n'
        '    acme = true\n    acme_email = "ops@example.com"\n    acme_renewal_days = 20\n'
        "  }\n}\n"
    )
    assert load_text(BASE + acme, filename="t.hcl", env={}).errors == ()


@pytest.mark.usefixtures("refused")
def test_the_message_names_the_setting_and_the_feature() -> None:
    result = load_text(BASE + REFUSED, filename="t.hcl", env={})
    assert result.config is None
    [problem] = result.errors
    assert problem.path == REFUSED_PATH
    assert problem.message.startswith(REFUSED_MESSAGE)
    assert "(a stand-in feature)" in problem.message
    assert problem.line == BASE.count("\n") + 7
    options = LoadOptions(refuse_unavailable=False)
    assert load_text(BASE + REFUSED, filename="t.hcl", env={}, options=options).errors == ()


@pytest.mark.usefixtures("refused")
def test_a_written_default_still_counts() -> None:
    [problem] = load_text(BASE + SNIPPET % "false", filename="t.hcl", env={}).errors
    assert problem.path == REFUSED_PATH


@pytest.mark.usefixtures("refused")
def test_secrets_are_not_echoed() -> None:
    snippet = REFUSED.replace('key_file     = "/k.pem"', 'key_file = "/secret.example"')
    problems = load_text(BASE + snippet, filename="t.hcl", env={}).errors
    assert problems
    assert not any("secret.example" in problem.format() for problem in problems)


def _config_in_code(snippet: str) -> Config:
    options = LoadOptions(refuse_unavailable=False)
    config = load_text(BASE + snippet, filename="t.hcl", env={}, options=options).config
    assert config is not None
    return config


@pytest.mark.usefixtures("refused")
def test_a_gateway_built_in_code_refuses_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Gateway(_config_in_code(REFUSED))
    [problem] = caught.value.problems
    assert problem.path == REFUSED_PATH
    assert problem.file == "<config>"


@pytest.mark.usefixtures("refused")
async def test_a_reload_built_in_code_refuses_it() -> None:
    gateway = Gateway(_config_in_code(""))
    with pytest.raises(ReloadError, match="a stand-in feature"):
        await gateway.reload(_config_in_code(REFUSED))
    assert gateway.health().last_reload is not None
