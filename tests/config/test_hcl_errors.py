"""HCL syntax errors, input text handling and robustness (SPEC §3.2).

Pins the message and position of each syntax error, how other python-hcl2 failures become
problems, BOM / CRLF / empty / private-use input, and that ``parse_hcl`` never raises on
pathological input, HCL-like noise or arbitrary text (Hypothesis).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3s_gateway.config.hcl import ParsedFile
from tests.support.hcl import ok, parse

# -------------------------------------------------------------------------- syntax errors


@pytest.mark.parametrize(
    ("text", "line", "column", "message"),
    [
        (
            "x = 1; y = 2",
            1,
            6,
            'syntax error: unexpected ";": HCL has no ";" separator; write one attribute per line',
        ),
        (
            'routers "r" {\n  rule = "a"\n  service = "b"; priority = 2\n}\n',
            3,
            16,
            'syntax error: unexpected ";": HCL has no ";" separator; write one attribute per line',
        ),
        (
            'mirror { service = "x", percentage = 10 }',
            1,
            23,
            'syntax error: unexpected ",": attributes of a block are not separated by ","; '
            "write one attribute per line",
        ),
        ("x = [1,,2]", 1, 8, 'syntax error: unexpected "," (expected a value)'),
        ("a {", 1, 4, 'syntax error: unexpected end of file (expected "}")'),
        ("a {\n  x = 1\n", 3, 1, 'syntax error: unexpected end of file (expected "}")'),
        (
            'x = "open',
            1,
            10,
            "syntax error: unexpected end of file inside a string (missing closing '\"')",
        ),
        ("x = \ny = 1", 1, 5, "syntax error: unexpected end of line (expected a value)"),
        ("x = [1 2]", 1, 8, 'syntax error: unexpected "2" (expected "," or "]" or a new line)'),
        ("x == 1", 1, 3, 'syntax error: unexpected "=="'),
        ("x = @", 1, 5, 'syntax error: unexpected "@" (expected a value)'),
        ('x = "a" "b"', 1, 9, "syntax error: unexpected '\"'"),
        ("}", 1, 1, 'syntax error: unexpected "}" (expected a name or a new line)'),
        ("x\n= 1", 2, 1, 'syntax error: unexpected "=" (expected "{")'),
    ],
)
def test_syntax_errors(text: str, line: int, column: int, message: str) -> None:
    result = parse(text)
    assert not result.ok
    assert result.data == {}
    (problem,) = result.problems
    assert (problem.file, problem.line, problem.column, problem.path) == (
        "gateway.hcl",
        line,
        column,
        "",
    )
    assert problem.message == message
    assert problem.severity == "error"


def test_other_python_hcl2_failures_become_problems() -> None:
    # Only reachable without template protection (see the private-use test below).
    result = parse('x = "\ue000 %{ if x } b"')
    assert not result.ok
    (problem,) = result.problems
    assert (problem.line, problem.column) == (None, None)
    assert problem.message == "could not parse the file: Unterminated template if directive"
    nested = parse("a = " + "[" * 3000 + "]" * 3000)
    assert [p.message for p in nested.problems] == [
        "could not parse the file: values are nested too deeply"
    ]


def test_syntax_error_problem_format() -> None:
    (problem,) = parse("a {\n  x = 1;\n}").problems
    assert problem.format().startswith('gateway.hcl:2:8: error: syntax error: unexpected ";"')


# ------------------------------------------------------------------------ text handling


def test_bom_is_skipped_and_positions_unchanged() -> None:
    result = parse('\ufeffrouters "a" {\n  rule = "x"\n}')
    assert result.ok
    assert result.data == {"routers": {"a": {"rule": "x"}}}
    position = result.sources.get(("routers", "a"))
    assert position is not None
    assert (position.line, position.column) == (1, 1)


def test_empty_and_comment_only_text() -> None:
    assert ok("") == {}
    assert ok("# nothing\n// here\n/* at\nall */\n") == {}


def test_crlf_line_endings() -> None:
    assert ok('a "b" {\r\n  x = "y"\r\n  z = <<EOF\r\nh\r\nEOF\r\n}\r\n')["a"] == {
        "b": {"x": "y", "z": "h"}
    }


def test_template_protection_is_skipped_for_private_use_text() -> None:
    # The placeholders use the private-use area; text already using it keeps python-hcl2's
    # own template handling (so the SPEC's default syntax is then a syntax error).
    assert ok('x = "\ue000 ${A}"') == {"x": "\ue000 ${A}"}
    assert not parse('x = "\ue000 ${A:-b}"').ok


# ------------------------------------------------------------------------------ robustness


@pytest.mark.parametrize(
    "text",
    [
        "[" * 3000,
        "a = " + "[" * 3000 + "]" * 3000,
        "a " * 2000 + "{}",
        'x = "\\',
        "<<EOF",
        "x = <<EOF\n${\nEOF\n",
        "\x00",
        "a = {\n" * 50 + "}\n" * 50,
    ],
)
def test_never_raises_on_pathological_input(text: str) -> None:
    result = parse(text)
    assert result.ok or result.problems


HCL_PIECES = st.sampled_from(
    [
        *'{}[]()=:,?."\\#*<-$% \n\tab1;',
        'x = "',
        "${",
        "%{",
        "$${",
        "<<EOF\n",
        "\nEOF\n",
        'r "a" {\n',
        "}\n",
        "tls {\n",
        "servers {",
        "= [",
        "// c\n",
        "/*",
        "*/",
        "null",
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.lists(HCL_PIECES, max_size=40).map("".join))
def test_never_raises_on_hcl_like_noise(text: str) -> None:
    result = parse(text)
    assert isinstance(result, ParsedFile)
    if not result.ok:
        assert result.data == {}
        assert result.problems


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=120))
def test_never_raises_on_any_text(text: str) -> None:
    assert isinstance(parse(text), ParsedFile)
