"""Shared helpers of the HCL parser tests (``tests/config/test_hcl_*.py``, SPEC §3.2).

``raw`` calls python-hcl2 directly with the loader's options (``OPTIONS``), for the pinned-shape
tests and for comparing against it; ``parse``, ``ok`` and ``messages`` run the project's
``parse_hcl`` on a file named ``gateway.hcl``. ``README_CONFIG`` is the README's example config
(flush-left, so line and column numbers are easy to read off), which both the normalisation and
the position tests use.
"""

from __future__ import annotations

import hcl2
from hcl2.utils import SerializationOptions

from a3s_gateway.config.hcl import ParsedFile, parse_hcl
from tests.support.cli import FIXTURES

OPTIONS = SerializationOptions(
    strip_string_quotes=False,
    explicit_blocks=True,
    with_comments=False,
    preserve_heredocs=False,
    preserve_scientific_notation=False,
)


def raw(text: str) -> object:
    loaded: object = hcl2.loads(text, serialization_options=OPTIONS)
    return loaded


def parse(text: str) -> ParsedFile:
    return parse_hcl(text, filename="gateway.hcl")


def ok(text: str) -> dict[str, object]:
    """Parse text that must be valid and problem-free."""
    result = parse(text)
    assert result.ok
    assert result.problems == ()
    return result.data


def messages(text: str) -> list[tuple[int | None, str, str]]:
    return [(p.line, p.path, p.message) for p in parse(text).problems]


README_CONFIG = (FIXTURES / "readme-example.hcl").read_text(encoding="utf-8")
