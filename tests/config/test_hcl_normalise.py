"""HCL normalisation rules (SPEC §3.2) and the problems they report.

Pins the public shape of ``parse_hcl``; how blocks, labels, list fields, strings, templates,
heredocs and scalars become plain data; that expressions and invalid escapes are reported and
dropped; and the rules for block labels and object keys.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from a3s_gateway.config.hcl import LIST_BLOCK_FIELDS, ParsedFile
from a3s_gateway.config.hcl_lex import decode_escapes
from tests.support.hcl import README_CONFIG, messages, ok, parse, raw

EXPRESSION = (
    'expressions are not supported; write a quoted string (use "${NAME}" for environment variables)'
)


# -------------------------------------------------------------------------- public shape


def test_public_contract() -> None:
    assert sorted(LIST_BLOCK_FIELDS) == ["certificates", "revisions", "seeds", "servers"]
    result = parse("")
    assert result == ParsedFile(result.data, result.sources, (), ok=True)
    assert result.data == {}
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False  # type: ignore[misc]  # the point: ParsedFile is frozen


# ---------------------------------------------------------------------------- normalising


def test_labelled_blocks_become_maps() -> None:
    assert ok('routers "api" { rule = "x" }\nrouters "web" {}\nrouters plain {}') == {
        "routers": {"api": {"rule": "x"}, "web": {}, "plain": {}}
    }


def test_nested_labelled_blocks_become_maps() -> None:
    text = """
services "chat" {
  websocket_mux {
    channels "a" { service = "x" }
    channels "b\\"q" { service = "y" }
  }
}
providers {
  dns {
    services "s" { hostname = "h" }
  }
}
"""
    assert ok(text) == {
        "services": {
            "chat": {
                "websocket_mux": {"channels": {"a": {"service": "x"}, 'b"q': {"service": "y"}}}
            }
        },
        "providers": {"dns": {"services": {"s": {"hostname": "h"}}}},
    }


def test_unlabelled_block_becomes_an_object() -> None:
    assert ok('e "w" {\n  tls {\n    cert_file = "a"\n  }\n}') == {
        "e": {"w": {"tls": {"cert_file": "a"}}}
    }


def test_object_attribute_is_accepted_where_a_block_is_expected() -> None:
    assert ok('e "w" {\n  tls = { cert_file = "a", "key file" = "b" }\n}') == {
        "e": {"w": {"tls": {"cert_file": "a", "key file": "b"}}}
    }


@pytest.mark.parametrize("name", sorted(LIST_BLOCK_FIELDS))
def test_list_fields_blocks_and_attribute_lists_are_equivalent(name: str) -> None:
    blocks = ok(f'lb {{\n  {name} {{ url = "a" }}\n  {name} {{\n    url = "b"\n  }}\n}}')
    attribute = ok(f'lb {{\n  {name} = [{{ url = "a" }}, {{ url = "b" }}]\n}}')
    assert blocks == attribute == {"lb": {name: [{"url": "a"}, {"url": "b"}]}}
    assert ok(f'{name} {{ url = "a" }}') == {name: [{"url": "a"}]}


def test_block_markers_are_stripped_everywhere() -> None:
    def has_marker(value: object) -> bool:
        if isinstance(value, dict):
            return "__is_block__" in value or any(has_marker(v) for v in value.values())
        if isinstance(value, list):
            return any(has_marker(v) for v in value)
        return False

    data = ok(README_CONFIG)
    assert not has_marker(data)
    assert ok("a {}\nb {\n c {\n d {}\n }\n}") == {"a": {}, "b": {"c": {"d": {}}}}


def test_strings_are_unquoted_and_decoded() -> None:
    assert ok(r'x = "a\\b \"q\" \n\r\t \u00e9 \U0001F600 é"') == {
        "x": 'a\\b "q" \n\r\t é \U0001f600 é'
    }
    assert ok('x = ""\ny = ["a", "b"]') == {"x": "", "y": ["a", "b"]}


def test_template_sequences_are_left_verbatim() -> None:
    text = r"""
a = "${JWT_SECRET}"
b = "${NAME:-default value}"
c = "$${literal} %%{literal}"
d = "${ var.x } %{ if x }y%{ endif }"
e = "${ "}" }"
f = "cost $${"
g = "}"
h = "${NAME:-http://x:80/p} and \"${X}\""
"""
    assert ok(text) == {
        "a": "${JWT_SECRET}",
        "b": "${NAME:-default value}",
        "c": "$${literal} %%{literal}",
        "d": "${ var.x } %{ if x }y%{ endif }",
        "e": '${ "}" }',
        "f": "cost $${",
        "g": "}",
        "h": '${NAME:-http://x:80/p} and "${X}"',
    }


STRING_PIECES = st.sampled_from(
    ["a", " ", "é", "${A}", "${B_1}", "$${C}", "%%{D}", "$", "%", r"\n", r"\"", r"\\", r"\u00e9"]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(STRING_PIECES, max_size=12).map("".join))
def test_template_protection_agrees_with_python_hcl2(value: str) -> None:
    """Where python-hcl2 itself copes, protecting templates changes nothing."""
    text = f'x = "{value}"\nrouters "r" {{\n  y = ["{value}"]\n}}'
    loaded = raw(text)
    assert isinstance(loaded, dict)
    expected = decode_escapes(loaded["x"][1:-1])
    assert ok(text) == {"x": expected, "routers": {"r": {"y": [expected]}}}


def test_heredocs_become_strings() -> None:
    text = 'a = <<EOF\nline "1" \\n\n${X:-y}\nEOF\nb = <<-EOT\n    x\n      y\n    EOT\n'
    assert ok(text) == {"a": 'line "1" \\n\n${X:-y}', "b": "x\n  y"}


def test_scalars_are_native() -> None:
    assert ok("a = 1\nb = -2\nc = 0.7\nd = 1.5e3\ne = true\nf = false\ng = null") == {
        "a": 1, "b": -2, "c": 0.7, "d": 1500.0, "e": True, "f": False, "g": None,
    }  # fmt: skip


def test_nested_values() -> None:
    assert ok('x = [1, [true, null], { a = { "b" = ["c"] } }]\ny = {}\nz = []') == {
        "x": [1, [True, None], {"a": {"b": ["c"]}}],
        "y": {},
        "z": [],
    }


@pytest.mark.parametrize(
    "value",
    ["JWT_SECRET", "var.x", 'env("X")', "1 + 2", 'a ? "b" : "c"', "(1)", '"a" + "b"', "!true"],
)
def test_expressions_are_rejected(value: str) -> None:
    result = parse(f'middlewares "jwt" {{\n  type = "jwt"\n  value = {value}\n}}')
    assert result.ok
    assert result.data == {"middlewares": {"jwt": {"type": "jwt"}}}
    assert [(p.line, p.column, p.path, p.message) for p in result.problems] == [
        (3, 3, 'middlewares["jwt"].value', EXPRESSION)
    ]


def test_expression_in_a_list_drops_the_list() -> None:
    result = parse('x = ["a", b, "c"]\ny = [{ u = c, v = "d" }]')
    assert result.data == {"y": [{"v": "d"}]}
    assert [(p.line, p.column, p.path) for p in result.problems] == [
        (1, 11, "x[1]"),
        (2, 8, "y[0].u"),
    ]


def test_invalid_escape_is_reported_and_dropped() -> None:
    result = parse('a = "ok"\nb = "bad \\q"')
    assert result.data == {"a": "ok"}
    (problem,) = result.problems
    assert (problem.line, problem.path) == (2, "b")
    assert problem.message.startswith('invalid escape sequence "\\q"')


# ------------------------------------------------------------------- labels and keys


def test_label_with_interpolation_is_an_error() -> None:
    result = parse('routers "${x}" {}\nrouters "ok" {}')
    assert result.data == {"routers": {"ok": {}}}
    assert messages('routers "${x}" {}') == [
        (1, "routers", 'block label "${x}" contains "${": block labels and object keys are literal')
    ]


def test_object_key_with_interpolation_or_expression_is_an_error() -> None:
    result = parse('x = { "a${b}" = 1, (c) = 2, d = 3 }')
    assert result.data == {"x": {"d": 3}}
    assert sorted(p.message for p in result.problems) == [
        'object key "a${b}" contains "${": block labels and object keys are literal',
        f"object key: {EXPRESSION}",
    ]


def test_two_labels_are_an_error() -> None:
    assert messages('a "b" "c" {}\nd = 1') == [
        (1, "a", 'block "a" has 2 labels; at most one is allowed')
    ]
    assert parse('a "b" "c" {}\nd = 1').data == {"d": 1}


def test_mixed_labelled_and_unlabelled_is_an_error() -> None:
    assert messages('routers "a" {}\nrouters {}') == [
        (1, "routers", 'block "routers" is written both with and without a label')
    ]
