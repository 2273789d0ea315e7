"""python-hcl2 8.1.4's raw output shapes pinned (SPEC §3.2).

The ``test_pinned_python_hcl2_shape_*`` tests describe what python-hcl2 returns with the
options the loader uses. An upgrade of python-hcl2 must keep them passing (or come with a
normaliser change).
"""

from __future__ import annotations

import dataclasses

import hcl2
import pytest
from lark.exceptions import UnexpectedToken, VisitError

from tests.support.hcl import OPTIONS, raw

# ------------------------------------------------------------------- python-hcl2 shapes


def test_pinned_python_hcl2_shape_top_level_labelled_blocks() -> None:
    assert raw('routers "api" { rule = "x" }\nrouters "b" {}') == {
        "routers": [
            {'"api"': {"rule": '"x"', "__is_block__": True}},
            {'"b"': {"__is_block__": True}},
        ]
    }


def test_pinned_python_hcl2_shape_nested_labelled_blocks_and_two_labels() -> None:
    assert raw('s { websocket_mux { channels "x" {} } }') == {
        "s": [
            {
                "websocket_mux": [
                    {"channels": [{'"x"': {"__is_block__": True}}], "__is_block__": True}
                ],
                "__is_block__": True,
            }
        ]
    }
    assert raw('a "b" c {}') == {"a": [{'"b"': {"c": {"__is_block__": True}}}]}


def test_pinned_python_hcl2_shape_unlabelled_blocks() -> None:
    assert raw("a {\n tls { x = 1 }\n tls { y = 2 }\n}") == {
        "a": [
            {
                "tls": [{"x": 1, "__is_block__": True}, {"y": 2, "__is_block__": True}],
                "__is_block__": True,
            }
        ]
    }
    assert raw("a {}") == {"a": [{"__is_block__": True}]}


def test_pinned_python_hcl2_shape_object_attribute_and_keys() -> None:
    assert raw('tls = { cert_file = "a", "q" = 2 }') == {"tls": {"cert_file": '"a"', '"q"': 2}}
    assert raw('a = { (b) = 1, c.d = 2, 1 = 3, "x" = 4, true = 5, "${e}" = 6 }') == {
        "a": {"${(b)}": 1, "${c.d}": 2, "1": 3, '"x"': 4, "true": 5, '"${e}"': 6}
    }


def test_pinned_python_hcl2_shape_quoted_strings_keep_quotes_and_escapes() -> None:
    assert raw(r'x = "a\"b\n\u00e9 é"') == {"x": r'"a\"b\n\u00e9 é"'}
    # Unknown and malformed escapes are not rejected; the normaliser must do it.
    assert raw(r'x = "\q \u12 \uD800"') == {"x": r'"\q \u12 \uD800"'}
    # A raw newline inside quotes is accepted.
    assert raw('x = "a\nb"') == {"x": '"a\nb"'}


def test_pinned_python_hcl2_shape_heredocs() -> None:
    assert raw('x = <<EOF\nhello "q" \\n ${x}\nEOF\n') == {"x": '"hello \\"q\\" \\\\n ${x}"'}
    # No trailing newline; "<<-" strips the common indentation.
    assert raw("x = <<-EOF\n    hello\n      there\n    EOF\n") == {"x": '"hello\\n  there"'}


def test_pinned_python_hcl2_shape_expressions_are_unquoted_text() -> None:
    assert raw("x = JWT_SECRET") == {"x": "JWT_SECRET"}
    assert raw("x = var.x") == {"x": "${var.x}"}
    assert raw('x = env("X")') == {"x": '${env("X")}'}
    assert raw("x = 1 + 2") == {"x": "${1 + 2}"}
    assert raw('x = a ? "b" : "c"') == {"x": '${a ? "b" : "c"}'}
    assert raw("x = (1)") == {"x": "${(1)}"}


def test_pinned_python_hcl2_shape_scalars() -> None:
    text = "a = 1\nb = -1\nc = 1.5\nd = 1.5e3\ne = 5e-1\nf = true\ng = false\nh = null\ni = 01"
    assert raw(text) == {
        "a": 1, "b": -1, "c": 1.5, "d": 1500.0, "e": 0.5, "f": True, "g": False, "h": None, "i": 1,
    }  # fmt: skip
    assert raw("x = 1e400") == {"x": float("inf")}


def test_pinned_python_hcl2_shape_duplicates_are_silent() -> None:
    assert raw("x = 1\nx = 2") == {"x": 2}
    assert raw("x = {a = 1, a = 2}") == {"x": {"a": 2}}
    assert raw('a "x" {}\na "x" {}') == {
        "a": [{'"x"': {"__is_block__": True}}, {'"x"': {"__is_block__": True}}]
    }
    # A block followed by an attribute of the same name: the block is silently lost...
    assert raw("tls { b = 2 }\ntls = { a = 1 }") == {"tls": {"a": 1}}
    # ...the other way round is a RuntimeError without a position.
    with pytest.raises(RuntimeError, match="already defined"):
        raw("tls = { a = 1 }\ntls { b = 2 }")


def test_pinned_python_hcl2_shape_semicolon_is_a_syntax_error() -> None:
    with pytest.raises(UnexpectedToken) as caught:
        raw("x = 1; y = 2")
    assert (caught.value.line, caught.value.column) == (1, 6)


def test_pinned_python_hcl2_shape_template_sequences() -> None:
    # Escapes are kept verbatim.
    assert raw('x = "$${a} %%{b}"') == {"x": '"$${a} %%{b}"'}
    # Interpolations and directives are re-formatted...
    assert raw('x = "${ NAME }"') == {"x": '"${NAME}"'}
    assert raw('x = "%{if true}a%{else}b%{endif}"') == {"x": '"%{ if true }a%{ else }b%{ endif }"'}
    # ...an unterminated directive raises a VisitError...
    with pytest.raises(VisitError):
        raw('x = "a %{ if x } b"')
    # ...and the SPEC's default syntax is not HCL, hence the loader's template protection.
    with pytest.raises(UnexpectedToken):
        raw('x = "${NAME:-default}"')


def test_pinned_python_hcl2_shape_escaped_interpolation_runs_to_the_next_brace() -> None:
    assert raw('x = "$${"\ny = "}"') == {"x": '"$${"\ny = "}"'}


def test_pinned_python_hcl2_shape_no_positions_even_with_meta() -> None:
    options = dataclasses.replace(OPTIONS, with_meta=True)
    loaded: object = hcl2.loads('a "x" {\n b = 1\n}', serialization_options=options)
    assert loaded == {"a": [{'"x"': {"b": 1, "__is_block__": True}}]}


def test_pinned_python_hcl2_shape_misc() -> None:
    assert raw("") == {}
    assert raw("routers api { a = 1 }") == {"routers": [{"api": {"a": 1, "__is_block__": True}}]}
    assert raw("a { b = 1 c = 2 }") == {"a": [{"b": 1, "c": 2, "__is_block__": True}]}
    assert raw('from = "v1"\nfor = 1\ntrue = 2') == {"from": '"v1"', "for": 1, "true": 2}
    with pytest.raises(UnexpectedToken):
        raw("x = /* comment */ 1")
