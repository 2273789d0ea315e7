"""The HCL lexical scanner: escapes, tokens, template protection, positions, duplicates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3s_gateway.config.hcl_scan import (
    ProtectedText,
    SourceScan,
    Token,
    decode_escapes,
    scan_source,
    tokenize,
    unquote_label,
)

if TYPE_CHECKING:
    from a3s_gateway.config.problems import Path

LIST_FIELDS = frozenset({"servers", "revisions", "seeds", "certificates"})


def scan(text: str) -> SourceScan:
    return scan_source(text, filename="g.hcl", list_fields=LIST_FIELDS)


def where(result: SourceScan, path: Path) -> tuple[int, int | None] | None:
    position = result.sources.get(path)
    return None if position is None else (position.line, position.column)


def kinds(text: str) -> list[tuple[str, str]]:
    return [(token.kind, token.text) for token in tokenize(text)]


# ------------------------------------------------------------------------------- escapes


@pytest.mark.parametrize(
    ("inner", "decoded"),
    [
        ("plain", "plain"),
        (r"a\\b", "a\\b"),
        (r"say \"hi\"", 'say "hi"'),
        (r"l1\nl2\r\tx", "l1\nl2\r\tx"),
        (r"\u00e9\u20AC", "é€"),
        (r"\U0001F600", "\U0001f600"),
        (r"${X} $${Y} %{ if }", "${X} $${Y} %{ if }"),
        ("", ""),
    ],
)
def test_decode_escapes(inner: str, decoded: str) -> None:
    assert decode_escapes(inner) == decoded


@pytest.mark.parametrize(
    ("inner", "sequence"),
    [
        (r"a\qb", r"\q"),
        (r"\u12", r"\u12"),
        (r"\u12G4", r"\u12G4"),
        (r"\uD800", r"\uD800"),
        (r"\U00110000", r"\U00110000"),
        (r"\u+123", r"\u+123"),
        ("end\\", "\\"),
    ],
)
def test_decode_escapes_rejects_bad_sequences(inner: str, sequence: str) -> None:
    with pytest.raises(ValueError, match="invalid escape sequence") as caught:
        decode_escapes(inner)
    assert f'"{sequence}"' in str(caught.value)


def test_unquote_label() -> None:
    assert unquote_label('"a\\"b"') == 'a"b'
    assert unquote_label("bare") == "bare"
    assert unquote_label('"bad\\q"') == "bad\\q"  # best effort, never raises


# -------------------------------------------------------------------------------- tokens


def test_tokens_and_positions() -> None:
    tokens = tokenize('a "b" {\n  c = 1.5e3 # note\n}')
    assert tokens[0] == Token("name", "a", 1, 1)
    assert tokens[1] == Token("string", '"b"', 1, 3)
    assert tokens[5] == Token("punct", "=", 2, 5)
    assert tokens[6] == Token("number", "1.5e3", 2, 7)
    assert [t.kind for t in tokens] == [
        "name", "string", "punct", "newline", "name", "punct", "number", "newline", "punct",
    ]  # fmt: skip


def test_tokens_skip_comments() -> None:
    assert kinds("a = 1 // x \"y\n# z { \nb") == [
        ("name", "a"), ("punct", "="), ("number", "1"), ("newline", "\n"), ("newline", "\n"),
        ("name", "b"),
    ]  # fmt: skip
    # python-hcl2 reads a block comment as a line break.
    assert kinds('/* " { */x') == [("newline", "/"), ("name", "x")]


def test_tokens_strings_with_nested_templates() -> None:
    assert kinds('x = "${ "}" } # not a comment" y') == [
        ("name", "x"), ("punct", "="), ("string", '"${ "}" } # not a comment"'), ("name", "y"),
    ]  # fmt: skip
    assert kinds(r'"a\"b" c') == [("string", r'"a\"b"'), ("name", "c")]


def test_tokens_heredoc() -> None:
    text = 'x = <<-EOF\n  "quoted" # { [\n  EOF\ny = 1'
    assert kinds(text) == [
        ("name", "x"), ("punct", "="), ("heredoc", '<<-EOF\n  "quoted" # { [\n  EOF'),
        ("newline", "\n"), ("name", "y"), ("punct", "="), ("number", "1"),
    ]  # fmt: skip


def test_tokens_heredoc_without_end_is_not_a_heredoc() -> None:
    assert kinds("x = <<EOF\nnever closed")[:4] == [
        ("name", "x"), ("punct", "="), ("punct", "<"), ("punct", "<"),
    ]  # fmt: skip


def test_tokens_multi_char_punctuation_and_other() -> None:
    assert kinds("a == b && c ... ; é") == [
        ("name", "a"), ("punct", "=="), ("name", "b"), ("punct", "&&"), ("name", "c"),
        ("punct", "..."), ("other", ";"), ("other", "é"),
    ]  # fmt: skip


# ---------------------------------------------------------------------------- protection


def protect(text: str) -> ProtectedText:
    return scan(text).protected


@pytest.mark.parametrize(
    "value",
    [
        "${NAME:-default}",
        "${NAME:-http://x:80/p}",
        '${ "}" }',
        "$${literal}",
        "$${",
        "%%{",
        "%{ if x }",
        "a${A}b${B:-}c$${d}",
        "${ {a = 1} }",
    ],
)
def test_protection_round_trips_template_sequences(value: str) -> None:
    text = f'x = "{value}"\ny = 2'
    protected = protect(text)
    assert len(protected.text) == len(text)
    assert protected.text.split("\n")[1] == "y = 2"
    assert "${" not in protected.text
    assert "%{" not in protected.text
    assert protected.restore(protected.text) == text


def test_protection_in_heredoc_and_labels() -> None:
    text = 'routers "${x}" {\n  v = <<EOF\n  ${A:-b} %{ for }\n  EOF\n}\n'
    protected = protect(text)
    assert "${" not in protected.text
    assert "%{" not in protected.text
    assert protected.restore(protected.text) == text


def test_protection_spans_nested_strings_and_escapes() -> None:
    for text in ('x = "${ "$${" }"', 'x = "${ f("}", "${ y }") }"', 'x = "${ "\\"}" }"'):
        protected = protect(text)
        assert protected.text.count("\ue000") == 1, text
        assert protected.text.endswith('"')
        assert protected.restore(protected.text) == text


def test_protection_leaves_code_and_unclosed_templates_alone() -> None:
    for text in ('x = "${unclosed"', 'x = "${\nNAME}"', "x = var.x", 'x = "plain $ and % {"'):
        assert protect(text).text == text


def test_protection_skipped_when_text_uses_private_use_characters() -> None:
    text = 'x = "\ue000 ${A:-b}"'
    protected = protect(text)
    assert protected.text == text
    assert protected.restore("\ue000\ue100\ue100") == "\ue000\ue100\ue100"


def test_protection_restores_many_spans_in_order() -> None:
    text = "\n".join(f'k{i} = "${{V{i}}}"' for i in range(7000))
    protected = protect(text)
    assert "${" not in protected.text
    assert protected.restore(protected.text) == text


# ----------------------------------------------------------------------------- positions


CONFIG = """\
entrypoints "web" {
  address = "0.0.0.0:80"
  tls {
    cert_file = "a"
  }
}
services "x\\"y" {
  load_balancer {
    servers { url = "http://a" }
    servers {
      url = "http://b"
    }
    list = [1,
      [2, 3], { k = "v", "q k": 4 }]
  }
}
"""


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (("entrypoints",), (1, 1)),
        (("entrypoints", "web"), (1, 1)),
        (("entrypoints", "web", "address"), (2, 3)),
        (("entrypoints", "web", "tls"), (3, 3)),
        (("entrypoints", "web", "tls", "cert_file"), (4, 5)),
        (("services", 'x"y'), (7, 1)),
        (("services", 'x"y', "load_balancer"), (8, 3)),
        (("services", 'x"y', "load_balancer", "servers"), (9, 5)),
        (("services", 'x"y', "load_balancer", "servers", 0), (9, 5)),
        (("services", 'x"y', "load_balancer", "servers", 0, "url"), (9, 15)),
        (("services", 'x"y', "load_balancer", "servers", 1), (10, 5)),
        (("services", 'x"y', "load_balancer", "servers", 1, "url"), (11, 7)),
        (("services", 'x"y', "load_balancer", "list"), (13, 5)),
        (("services", 'x"y', "load_balancer", "list", 0), (13, 13)),
        (("services", 'x"y', "load_balancer", "list", 1), (14, 7)),
        (("services", 'x"y', "load_balancer", "list", 1, 1), (14, 11)),
        (("services", 'x"y', "load_balancer", "list", 2), (14, 15)),
        (("services", 'x"y', "load_balancer", "list", 2, "k"), (14, 17)),
        (("services", 'x"y', "load_balancer", "list", 2, "q k"), (14, 26)),
    ],
)
def test_positions(path: Path, expected: tuple[int, int]) -> None:
    assert where(scan(CONFIG), path) == expected


def test_positions_headers_keep_every_occurrence() -> None:
    result = scan('a "x" {}\nb {}\na "x" {}\n')
    assert [p.line for p in result.headers[("a", "x")]] == [1, 3]
    assert [p.line for p in result.headers[("b",)]] == [2]


def test_positions_one_line_body_and_conditional_in_object() -> None:
    result = scan("a { b = 1 c = { d = x ? 1 : 2, e = f(1, [2]) } g = h.i[0] }\nj = 1")
    assert where(result, ("a", "c")) == (1, 11)
    assert where(result, ("a", "c", "e")) == (1, 32)
    assert where(result, ("a", "g")) == (1, 48)
    assert where(result, ("j",)) == (2, 1)


def test_positions_survive_for_expressions_and_odd_keys() -> None:
    text = "a = [for x in y : x]\nb = {for k, v in m : k => v}\nc = { (k) = 1, for = 2 }\nd = 1"
    result = scan(text)
    assert where(result, ("c", "for")) == (3, 16)
    assert where(result, ("d",)) == (4, 1)
    assert result.problems == ()


def test_positions_deep_nesting_is_bounded() -> None:
    depth = 500
    text = "a = " + "[" * depth + "]" * depth + "\nb = " + "{x = " * depth + "}" * depth
    result = scan(text + "\nc {\n" * depth + "}\n" * depth + "d = 1\n")
    assert where(result, ("b",)) == (2, 1)
    assert where(result, ("d",)) is not None


# ---------------------------------------------------------------------------- duplicates


def test_duplicate_attribute() -> None:
    (problem,) = scan('a {\n  x = 1\n  x = "2"\n}\n').problems
    assert (problem.line, problem.column, problem.path) == (3, 3, "a.x")
    assert problem.message == 'attribute "x" is set twice (also at line 2)'


def test_duplicate_object_key() -> None:
    (problem,) = scan('o = {\n  k = 1,\n  "k" = 2\n}').problems
    assert (problem.line, problem.path) == (3, "o.k")
    assert problem.message == 'key "k" is set twice (also at line 2)'


@pytest.mark.parametrize("text", ["tls = {}\ntls {}", "tls {}\ntls = {}"])
def test_duplicate_block_and_attribute(text: str) -> None:
    (problem,) = scan(text).problems
    assert problem.line == 2
    expected = '"tls" is defined both as a block and as an attribute (also at line 1)'
    assert problem.message == expected


def test_repeated_blocks_are_not_scanner_duplicates() -> None:
    assert scan('servers {}\nservers {}\nr "a" {}\nr "a" {}\nt {}\nt {}').problems == ()


# ----------------------------------------------------------------------------- tolerance


@pytest.mark.parametrize(
    "text",
    [
        "",
        "}}}]])",
        "a = ",
        'a "b',
        "a = [1,",
        "a = {",
        "a = {b",
        "a = { (",
        "a = <<EOF\n",
        "<<",
        '"${',
        "/*",
        "x = 1 ; y = 2",
        "= = =",
        "a b c",
        "a.b = 1",
    ],
)
def test_never_raises_on_broken_input(text: str) -> None:
    scan(text)


HCL_ALPHABET = st.sampled_from(
    [*'{}[]()=:,?."\\#/*<-$% \n\tab1', "${", "%{", "<<EOF\n", "\nEOF\n", "x = ", '"a"']
)


@settings(max_examples=300, deadline=None)
@given(st.lists(HCL_ALPHABET, max_size=60).map("".join))
def test_never_raises_on_hcl_like_noise(text: str) -> None:
    result = scan(text)
    assert result.protected.restore(result.protected.text) == text
    assert len(result.protected.text) == len(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_never_raises_on_any_text(text: str) -> None:
    result = scan(text)
    assert result.protected.restore(result.protected.text) == text
