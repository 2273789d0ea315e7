"""docs/configuration.md lists exactly the fields the schema accepts (generated, kept in sync)."""

from __future__ import annotations

from a3s_gateway.config.reference import render_reference, update_document
from a3s_gateway.config.schema_middlewares import MIDDLEWARE_TYPES
from tests.support.cli import ROOT


def test_the_document_is_up_to_date() -> None:
    document = (ROOT / "docs" / "configuration.md").read_text()
    assert update_document(document) == document, "run `just docs` and commit the result"


def test_every_middleware_type_has_a_table() -> None:
    reference = render_reference()
    for name in MIDDLEWARE_TYPES:
        assert f'`type = "{name}"`' in reference
    assert "| `redis_url` | redis URL | required |" in reference
    assert '| `connect_timeout` | duration | `"5s"` |' in reference
