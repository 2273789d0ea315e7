"""Properties of the rule language's lexer, parser and renderer (SPEC §4.1–4.2)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hypothesis import example, given
from hypothesis import strategies as st

from a3s_gateway.routing.rule_lexer import RuleLexer, Token
from a3s_gateway.routing.rules import (
    VARIADIC,
    Call,
    Node,
    RuleSyntaxError,
    check_calls,
    leaves,
    parse_rule,
    render_rule,
    resolve_name,
    spellings,
    strip_columns,
)
from tests.property.strategies import (
    rule_like_text,
    rule_names,
    rule_spacing,
    rule_trees,
)

T = TypeVar("T")

#: Tokens after which a newline is an error unless only whitespace follows (Go's semicolons).
OPERAND_ENDS = frozenset({"name", "string", ")"})


def source_tokens(text: str) -> list[tuple[Token, str]]:
    """Each token of ``text`` with its source text (``text`` has no newlines between tokens)."""
    lexer = RuleLexer(text)
    tokens: list[Token] = []
    while (token := lexer.next_token()).kind != "end":
        tokens.append(token)
    ends = [token.column - 1 for token in tokens[1:]] + [len(text)]
    return [
        (token, text[token.column - 1 : end].rstrip(" "))
        for token, end in zip(tokens, ends, strict=True)
    ]


def outcome(function: Callable[[T], Node], value: T) -> Node | RuleSyntaxError:
    """``function(value)``, or the ``RuleSyntaxError`` it raised (any other error escapes)."""
    try:
        return function(value)
    except RuleSyntaxError as error:
        return error


@given(rule_trees())
@example(Call("H", ("`\r\n\x00\ufeff",), 0, (0,)))
def test_render_then_parse_gives_the_same_tree(tree: Node) -> None:
    assert strip_columns(parse_rule(render_rule(tree))) == tree


@given(rule_like_text())
@example("Host(`a`)\n&& Path(`/`)")
@example('"\\')
@example("(" * 150)
def test_parse_only_raises_rule_syntax_error(text: str) -> None:
    result = outcome(parse_rule, text)
    if isinstance(result, RuleSyntaxError):
        assert result.column is None or 1 <= result.column <= len(text) + 1
        assert str(result).endswith(result.message)
    else:
        # Whatever parses has a canonical form that parses back to the same tree.
        canonical = render_rule(result)
        assert strip_columns(parse_rule(canonical)) == strip_columns(result)
        assert render_rule(parse_rule(canonical)) == canonical


@given(rule_trees(), st.data())
def test_spaces_and_tabs_between_tokens_do_not_change_the_tree(
    tree: Node, data: st.DataObject
) -> None:
    pieces = [data.draw(rule_spacing())]
    for _, source in source_tokens(render_rule(tree)):
        pieces += [source, data.draw(rule_spacing())]
    assert strip_columns(parse_rule("".join(pieces))) == tree


@given(rule_trees(), st.data())
def test_newlines_where_go_inserts_no_semicolon_do_not_change_the_tree(
    tree: Node, data: st.DataObject
) -> None:
    newline_or_space = st.sampled_from(["", " ", "\n", "\r\n", " \n\t"])
    pieces: list[str] = []
    for token, source in source_tokens(render_rule(tree)):
        after = newline_or_space if token.kind not in OPERAND_ENDS else rule_spacing()
        pieces += [source, data.draw(after)]
    pieces.append(data.draw(st.sampled_from(["", "\n", "\n\n \t"])))
    assert strip_columns(parse_rule("".join(pieces))) == tree


@given(rule_trees())
def test_columns_point_at_names_and_quotes(tree: Node) -> None:
    text = render_rule(tree)
    for leaf in leaves(parse_rule(text)):
        assert text[leaf.column - 1 :].startswith(leaf.name + "(")
        assert all(text[column - 1] in '`"' for column in leaf.arg_columns)


@given(rule_trees())
def test_check_calls_agrees_with_resolve_name(tree: Node) -> None:
    declared = sorted({leaf.name for leaf in leaves(tree)})
    arity = dict.fromkeys(declared, (0, VARIADIC))
    checked = outcome(lambda node: check_calls(node, arity), tree)
    if isinstance(checked, RuleSyntaxError):
        assert "must not be empty" in checked.message
        assert any("" in leaf.args for leaf in leaves(tree))
        return
    expected = [(resolve_name(leaf.name, declared), leaf.args) for leaf in leaves(tree)]
    assert [(leaf.name, leaf.args) for leaf in leaves(checked)] == expected
    assert check_calls(checked, arity) == checked


@given(rule_names())
def test_every_spelling_resolves_to_its_declared_name(name: str) -> None:
    for spelling in spellings(name):
        assert resolve_name(spelling, [name]) == name
    assert resolve_name(name + "_", [name]) is None
