"""The HCL lexer: escapes, tokens and template protection."""

from __future__ import annotations

import pytest

from a3s_gateway.config.hcl_lex import (
    ProtectedText,
    Token,
    decode_escapes,
    lex,
    tokenize,
    unquote_label,
)


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
    return lex(text)[1]


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
