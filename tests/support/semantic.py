"""Shared helpers of the semantic-check tests (``tests/config/test_semantic_*.py``, SPEC §3.15).

Each case is an HCL snippet added to a minimal valid config (``BASE``: one http entrypoint, one
service, one router) and loaded through the whole pipeline. ``run_case`` asserts the problem's
path, severity, a key part of the message and its line, and that an error case reports no other
error (no false positives). The snippet builders at the end are shared by several test modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from a3s_gateway.config.load import LoadOptions, LoadResult, load_text

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Problem

BASE = """\
entrypoints "web" {
  address = "127.0.0.1:8080"
}
services "app" {
  load_balancer {
    servers = [{ url = "http://127.0.0.1:9000" }]
  }
}
routers "app" {
  rule    = "PathPrefix(`/`)"
  service = "app"
}
"""
BASE_LINES = BASE.count("\n")
TLS_ENTRYPOINT = """
entrypoints "secure" {
  address = "127.0.0.1:8443"
  tls {
    cert_file = "/c.pem"
    key_file  = "/k.pem"
  }
}
"""
TCP_SERVICE = """
services "db" {
  load_balancer {
    servers = [{ url = "tcp://127.0.0.1:5432" }]
  }
}
"""


def load(
    snippet: str, *, base: bool = True, env: dict[str, str] | None = None, workers: int = 1
) -> LoadResult:
    text = (BASE if base else "") + snippet
    # The rules of features that have not landed yet are checked too: their "not available yet"
    # refusal (tests/config/test_availability.py) is left out here.
    options = LoadOptions(workers=workers, refuse_unavailable=False)
    return load_text(text, filename="t.hcl", env=env or {}, options=options)


def line_of(snippet: str, needle: str, *, base: bool = True) -> int:
    """The 1-based line of the first line of ``snippet`` containing ``needle`` (after BASE)."""
    for number, line in enumerate(snippet.split("\n"), start=1):
        if needle in line:
            return number + (BASE_LINES if base else 0)
    raise AssertionError(f"{needle!r} not in snippet")


def find(result: LoadResult, path: str, severity: str, part: str) -> Problem:
    matches = [
        p
        for p in result.problems
        if p.path == path and p.severity == severity and part in p.message
    ]
    shown = "\n".join(p.format() for p in result.problems)
    assert len(matches) == 1, f"expected one {severity} at {path} with {part!r}, got:\n{shown}"
    return matches[0]


@dataclass(frozen=True)
class Case:
    """One rule: snippet → the problem it must produce."""

    id: str
    snippet: str
    path: str
    message: str
    #: Text on the problem's line in the snippet; ``None`` = the problem has no line.
    needle: str | None
    severity: str = "error"
    base: bool = True
    #: Other errors this snippet legitimately causes (an error case otherwise has exactly one).
    extra_errors: int = 0
    env: dict[str, str] = field(default_factory=dict)


def run_case(case: Case) -> None:
    result = load(case.snippet, base=case.base, env=case.env)
    problem = find(result, case.path, case.severity, case.message)
    assert problem.file == "t.hcl"
    expected = None if case.needle is None else line_of(case.snippet, case.needle, base=case.base)
    assert problem.line == expected
    if case.severity == "error":
        shown = "\n".join(p.format() for p in result.errors)
        assert len(result.errors) == 1 + case.extra_errors, shown


# -- snippet builders -----------------------------------------------------------------------------


def service_with(body: str, name: str = "api") -> str:
    return f'\nservices "{name}" {{\n{body}}}\n'


def balanced(body: str, name: str = "api") -> str:
    return service_with(
        '  load_balancer {\n    servers = [{ url = "http://10.0.0.1" }]\n' + body + "  }\n", name
    )


def tls_entrypoint(body: str) -> str:
    return f'\nentrypoints "secure" {{\n  address = "127.0.0.1:8443"\n  tls {{\n{body}  }}\n}}\n'


def middleware(name: str, body: str) -> str:
    return f'\nmiddlewares "{name}" {{\n{body}}}\n'
