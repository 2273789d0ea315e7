"""The rule language's lexer, parser, renderer and name checks (SPEC §4.1–4.2)."""

from __future__ import annotations

import pickle

import pytest

from a3s_gateway.routing.rules import (
    MAX_DEPTH,
    MAX_NESTING,
    MAX_RULE_LENGTH,
    VARIADIC,
    And,
    Call,
    Node,
    Not,
    Or,
    RuleSyntaxError,
    check_calls,
    leaves,
    parse_rule,
    render_rule,
    resolve_name,
    spellings,
    strip_columns,
    unknown_matcher_message,
)

ARITY = {
    "Host": (1, 1),
    "PathPrefix": (1, 1),
    "Header": (2, 2),
    "HeaderRegexp": (2, 2),
    "Query": (1, 2),
    "QueryRegexp": (1, 3),
    "Any": (1, VARIADIC),
    "ALPN": (1, 1),
    "Nothing": (0, 0),
}
ALIASES = {"Headers": "Header", "HeadersRegexp": "HeaderRegexp", "HostHeader": "Host"}


def call(name: str, *args: str) -> Call:
    """A call with zeroed columns, to compare with ``strip_columns(parse_rule(...))``."""
    return Call(name, args, 0, (0,) * len(args))


def not_(operand: Node) -> Not:
    return Not(operand, 0)


def shape(text: str) -> Node:
    return strip_columns(parse_rule(text))


def error_of(text: str) -> tuple[int | None, str]:
    with pytest.raises(RuleSyntaxError) as caught:
        parse_rule(text)
    return caught.value.column, caught.value.message


def arg(text: str) -> str:
    """The single argument of the single call ``text`` parses to."""
    tree = parse_rule(text)
    assert isinstance(tree, Call)
    assert len(tree.args) == 1
    return tree.args[0]


A, B, C, D = call("a", "1"), call("b", "2"), call("c", "3"), call("d", "4")


# ------------------------------------------------------------------------------ seed rules


def test_a3s_readme_rules_parse() -> None:
    assert parse_rule("Host(`api.example.com`) && PathPrefix(`/v1`)") == And(
        Call("Host", ("api.example.com",), 1, (6,)), Call("PathPrefix", ("/v1",), 28, (39,))
    )
    assert parse_rule("PathPrefix(`/api`)") == Call("PathPrefix", ("/api",), 1, (12,))


# ---------------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", ["Host", "host", "_", "_a1", "a_B_9", "HostSNIRegexp"])
def test_name_token(name: str) -> None:
    assert shape(f"{name}(`x`)") == call(name, "x")


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("9Host(`x`)", 1, 'unexpected number "9Host"; arguments are quoted strings'),
        ("Hóst(`x`)", 2, 'unexpected character "ó"'),
        ("Host-x(`x`)", 5, 'unexpected character "-"'),
        ("Host.x(`x`)", 5, 'unexpected character "."'),
    ],
)
def test_name_token_errors(text: str, column: int, message: str) -> None:
    assert error_of(text) == (column, message)


# ---------------------------------------------------------------------------- raw strings


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("H(`plain`)", "plain"),
        ("H(``)", ""),
        (r"H(`\n\x41\q`)", r"\n\x41\q"),  # no escapes in raw strings
        ('H(`say "hi"`)', 'say "hi"'),
        ("H(`line1\nline2`)", "line1\nline2"),  # a raw newline inside is fine
        ("H(`a\r\nb\rc`)", "a\nbc"),  # CR characters are dropped
        ("H(`tab\there é €`)", "tab\there é €"),
    ],
)
def test_raw_string(text: str, value: str) -> None:
    assert arg(text) == value


def test_raw_string_errors() -> None:
    assert error_of("Host(`abc)") == (6, "unterminated string")
    # A backtick always ends the raw string; what follows it is then out of place.
    assert error_of("Host(`a`b`)") == (9, 'unexpected name "b"; expected "," or ")"')


# -------------------------------------------------------------------- interpreted strings


@pytest.mark.parametrize(
    ("escape", "value"),
    [
        (r"\a", "\x07"),
        (r"\b", "\x08"),
        (r"\f", "\x0c"),
        (r"\n", "\n"),
        (r"\r", "\r"),
        (r"\t", "\t"),
        (r"\v", "\x0b"),
        (r"\\", "\\"),
        (r"\"", '"'),
        (r"\x41", "A"),
        (r"\x7e", "~"),
        (r"\x7E", "~"),
        (r"\101", "A"),
        (r"\000", "\x00"),
        (r"\u00e9", "é"),
        (r"\u20AC", "€"),
        (r"\U0001F600", "\U0001f600"),
        (r"\U0010FFFF", "\U0010ffff"),
        (r"\xc3\xa9", "é"),  # \x and \ooo are bytes, which must form UTF-8
        (r"\303\251", "é"),
        (r"\xe2\x82\xac", "€"),
    ],
)
def test_interpreted_string_escapes(escape: str, value: str) -> None:
    assert arg(f'H("<{escape}>")') == f"<{value}>"


def test_interpreted_string_literal_characters() -> None:
    assert arg('H("a`b é\t c")') == "a`b é\t c"
    assert arg('H("a\rb")') == "a\rb"  # only raw strings drop CR
    assert arg('H("")') == ""


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (r'H("a\qb")', 5, r'unknown escape sequence "\q"'),
        (r'H("\'")', 4, r"""unknown escape sequence "\'" """.strip()),
        (r'H("\8")', 4, r'unknown escape sequence "\8"'),
        ('H("\\\n")', 4, 'unknown escape sequence "\\" followed by U+000A'),
        (r'H("\x4")', 4, r"invalid escape: \x needs 2 hex digits"),
        (r'H("\xZZ")', 4, r"invalid escape: \x needs 2 hex digits"),
        (r'H("\12")', 4, r"invalid escape: \ooo needs 3 octal digits"),
        (r'H("\18x")', 4, r"invalid escape: \ooo needs 3 octal digits"),
        (r'H("\400")', 4, r"octal escape \400 is above \377"),
        (r'H("\u12")', 4, r"invalid escape: \u needs 4 hex digits"),
        (r'H("\u12G4")', 4, r"invalid escape: \u needs 4 hex digits"),
        (r'H("\U0001F60")', 4, r"invalid escape: \U needs 8 hex digits"),
        (r'H("\uD800")', 4, r"escape \uD800 is not a valid Unicode code point"),
        (r'H("\udfff")', 4, r"escape \udfff is not a valid Unicode code point"),
        (r'H("\U00110000")', 4, r"escape \U00110000 is not a valid Unicode code point"),
        (r'H("\xff")', 3, "the escapes in this string do not form valid UTF-8"),
        (r'H("\xc3")', 3, "the escapes in this string do not form valid UTF-8"),
        ('H("a\nb")', 5, 'newline in string; write it as \\n in a "..." string'),
        ('H("abc)', 3, "unterminated string"),
        ('H("abc\\")', 3, "unterminated string"),
        ('H("abc\\', 3, "unterminated string"),
        ('H("a") && P("', 13, "unterminated string"),
    ],
)
def test_interpreted_string_errors(text: str, column: int, message: str) -> None:
    assert error_of(text) == (column, message)


@pytest.mark.parametrize(
    ("text", "column", "shown"),
    [
        ("H(`a\x00`)", 5, "U+0000"),
        ('H("a\x00")', 5, "U+0000"),
        ("H(`a\ufeff`)", 5, "U+FEFF"),
        ('H("\ufeff")', 4, "U+FEFF"),
        ("H(`\ud800`)", 4, "U+D800"),
        ('H("\udc80")', 4, "U+DC80"),
    ],
)
def test_characters_go_refuses_inside_strings(text: str, column: int, shown: str) -> None:
    assert error_of(text) == (column, f"character {shown} is not allowed in a rule")


def test_leading_byte_order_mark_is_skipped_like_go() -> None:
    assert parse_rule("\ufeffHost(`a`)") == Call("Host", ("a",), 2, (7,))
    assert error_of("Host(`a`)\ufeff") == (10, "unexpected character U+FEFF")


# --------------------------------------------------------------- operators and whitespace


def test_operators() -> None:
    assert shape("a(`1`)&&b(`2`)||!c(`3`)") == Or(And(A, B), not_(C))


@pytest.mark.parametrize(
    "text",
    [
        "a(`1`) && b(`2`)",
        " \t a ( `1` , ) \t&&\tb(`2`)\t ",
        "a(\r\n`1`,\r\n) &&\nb(`2`)",
        "a(`1`) &&\n\n  b(`2`)\n",
        "a(`1`) &&\r\nb(`2`)\r\n\r\n",
    ],
)
def test_whitespace_between_tokens(text: str) -> None:
    assert shape(text) == And(A, B)


def test_newline_after_operand_at_end_is_allowed() -> None:
    assert shape("a(`1`)\n") == A
    assert shape("a(`1`) \t\r\n \n\t") == A
    assert shape("(a(`1`))\n") == A
    assert shape("!\na(`1`)") == not_(A)
    assert shape("(\na(`1`))") == A


@pytest.mark.parametrize(
    ("text", "column"),
    [
        ("a(`1`)\n&& b(`2`)", 7),  # after ")"
        ("a(`1`) \r\n|| b(`2`)", 9),  # CR and spaces before the newline do not help
        ("a\n(`1`)", 2),  # after a NAME
        ("a(`1`\n)", 6),  # after a string: Go wants a trailing comma
        ('a("1"\n, `2`)', 6),
        ("(a(`1`)\n)", 8),
        ("a(`1`)\nb", 7),
    ],
)
def test_newline_after_operand_is_an_error(text: str, column: int) -> None:
    message = 'unexpected newline; break lines after "&&", "||", "(" or ","'
    assert error_of(text) == (column, message)


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("Host('a')", 6, 'unexpected "\'"; quote strings with backticks or double quotes'),
        (
            "Host(example.com)",
            6,
            'unexpected name "example"; expected a string argument (quote it with backticks)',
        ),
        ("Query(42)", 7, 'unexpected number "42"; arguments are quoted strings'),
        ("Query(`a`, 1.5)", 12, 'unexpected number "1.5"; arguments are quoted strings'),
        ("a(`1`) & b(`2`)", 8, 'unexpected "&"; did you mean "&&"?'),
        ("a(`1`) | b(`2`)", 8, 'unexpected "|"; did you mean "||"?'),
        ("a(`1`) == b(`2`)", 8, 'unexpected character "="'),
        ("a(`1`) != b(`2`)", 8, 'unexpected "!"; expected "&&", "||" or end of rule'),
        ("a(`1`).b(`2`)", 7, 'unexpected character "."'),
        ("a(`1`);", 7, 'unexpected character ";"'),
        ("a(`1`) // c", 8, 'unexpected character "/"'),
        ("a(`1`)\u00a0", 7, "unexpected character U+00A0"),  # no-break space
        ("a(`1`)\f", 7, "unexpected character U+000C"),
        ("a(`1`)\v", 7, "unexpected character U+000B"),
        ("a[`1`]", 2, 'unexpected character "["'),
        ("a(`1`) && b(`2`) + c", 18, 'unexpected character "+"'),
    ],
)
def test_anything_else_is_an_error(text: str, column: int, message: str) -> None:
    assert error_of(text) == (column, message)


# ------------------------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("a(`1`) || b(`2`) && c(`3`)", Or(A, And(B, C))),
        ("a(`1`) && b(`2`) || c(`3`)", Or(And(A, B), C)),
        ("a(`1`) && b(`2`) && c(`3`)", And(And(A, B), C)),
        ("a(`1`) || b(`2`) || c(`3`)", Or(Or(A, B), C)),
        ("a(`1`) && (b(`2`) && c(`3`))", And(A, And(B, C))),
        ("(a(`1`) || b(`2`)) && c(`3`)", And(Or(A, B), C)),
        ("!a(`1`) && b(`2`)", And(not_(A), B)),
        ("!a(`1`) || !b(`2`)", Or(not_(A), not_(B))),
        ("!(a(`1`) && b(`2`))", not_(And(A, B))),
        ("!!a(`1`)", not_(not_(A))),
        ("((((a(`1`)))))", A),
        ("a(`1`) || b(`2`) && c(`3`) || d(`4`)", Or(Or(A, And(B, C)), D)),
        ("a(`1`) && !b(`2`) || !(c(`3`) || d(`4`))", Or(And(A, not_(B)), not_(Or(C, D)))),
    ],
)
def test_precedence_and_associativity(text: str, tree: Node) -> None:
    assert shape(text) == tree


@pytest.mark.parametrize(
    ("text", "tree"),
    [
        ("Host()", call("Host")),  # zero arguments parse; check_calls rejects them
        ("Host(`a`,)", call("Host", "a")),  # Go allows a trailing comma
        ('Header(`a`, "b",)', call("Header", "a", "b")),
        ("Q(`a`,`b`,`c`)", call("Q", "a", "b", "c")),
        ("Host (`a`)", call("Host", "a")),
    ],
)
def test_call_forms(text: str, tree: Node) -> None:
    assert shape(text) == tree


def test_columns() -> None:
    tree = parse_rule('!Host(`a`) &&\n ( Header("k" ,  `v`))')
    assert tree == And(
        Not(Call("Host", ("a",), 2, (7,)), 1),
        Call("Header", ("k", "v"), 18, (25, 32)),
    )


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        ("Host(,)", 6, 'unexpected ","; expected a string argument or ")"'),
        ("Host(`a`,,)", 10, 'unexpected ","; expected a string argument or ")"'),
        ("Host(`a` `b`)", 10, 'unexpected string; expected "," or ")"'),
        ("Host(`a`", 9, 'unexpected end of rule; expected "," or ")"'),
        ("Host(`a`,", 10, 'unexpected end of rule; expected a string argument or ")"'),
        ("Host(", 6, 'unexpected end of rule; expected a string argument or ")"'),
        ("Host(&&)", 6, 'unexpected "&&"; expected a string argument or ")"'),
        (
            "Host(Path(`a`))",
            6,
            'unexpected name "Path"; expected a string argument (quote it with backticks)',
        ),
        ("Host", 5, 'unexpected end of rule; expected "(" after Host'),
        ("Host && Path(`a`)", 6, 'unexpected "&&"; expected "(" after Host'),
        ("Host`a`", 5, 'unexpected string; expected "(" after Host'),
        ("`a`", 1, "unexpected string; expected a matcher"),
        ("&& a(`1`)", 1, 'unexpected "&&"; expected a matcher'),
        ("a(`1`) &&", 10, "unexpected end of rule; expected a matcher"),
        ("a(`1`) || ", 11, "unexpected end of rule; expected a matcher"),
        ("a(`1`) && || b(`2`)", 11, 'unexpected "||"; expected a matcher'),
        ("!", 2, "unexpected end of rule; expected a matcher"),
        ("a(`1`) && !", 12, "unexpected end of rule; expected a matcher"),
        ("()", 2, 'unexpected ")"; expected a matcher'),
        ("a(`1`) && ()", 12, 'unexpected ")"; expected a matcher'),
        ("(a(`1`)", 8, 'unexpected end of rule; expected ")" (unbalanced parentheses)'),
        ("((a(`1`))", 10, 'unexpected end of rule; expected ")" (unbalanced parentheses)'),
        ("(a(`1`) b(`2`))", 9, 'unexpected name "b"; expected "&&", "||" or ")"'),
        ("a(`1`))", 7, 'unexpected ")"; unbalanced parentheses'),
        ("a(`1`) b(`2`)", 8, 'unexpected name "b"; expected "&&", "||" or end of rule'),
        ("a(`1`) (b(`2`))", 8, 'unexpected "("; expected "&&", "||" or end of rule'),
        ("a(`1`) `x`", 8, 'unexpected string; expected "&&", "||" or end of rule'),
        ("a(`1`),", 7, 'unexpected ","; expected "&&", "||" or end of rule'),
        (",", 1, 'unexpected ","; expected a matcher'),
    ],
)
def test_grammar_errors(text: str, column: int, message: str) -> None:
    assert error_of(text) == (column, message)


@pytest.mark.parametrize("text", ["", " ", "\n", " \t\r\n ", "\ufeff"])
def test_empty_rule(text: str) -> None:
    assert error_of(text) == (None, "empty rule")


def test_first_error_in_reading_order_wins() -> None:
    # The bare name comes before the "." and the "'" further on.
    assert error_of("Host(example.com) && 'x'")[0] == 6
    # A grammar error comes before a lexical error further on.
    assert error_of("a(`1`) b(`2`) 'x'")[0] == 8


# -------------------------------------------------------------------------------- limits


def test_rule_length_limit() -> None:
    body = "a(`" + "x" * (MAX_RULE_LENGTH - 5) + "`)"
    assert len(body) == MAX_RULE_LENGTH
    assert isinstance(parse_rule(body), Call)
    assert error_of(body + " ") == (
        None,
        f"rule is too long: {MAX_RULE_LENGTH + 1} characters (the limit is {MAX_RULE_LENGTH})",
    )


def test_nesting_limit_for_parentheses() -> None:
    depth_ok = "(" * MAX_NESTING + "a(`1`)" + ")" * MAX_NESTING
    assert shape(depth_ok) == A
    too_deep = "(" * (MAX_NESTING + 1) + "a(`1`)" + ")" * (MAX_NESTING + 1)
    message = f'rule is nested too deeply: more than {MAX_NESTING} levels of "(" and "!"'
    assert error_of(too_deep) == (MAX_NESTING + 1, message)


def test_nesting_limit_for_not() -> None:
    assert isinstance(parse_rule("!" * MAX_NESTING + "a(`1`)"), Not)
    message = f'rule is nested too deeply: more than {MAX_NESTING} levels of "(" and "!"'
    assert error_of("!" * (MAX_NESTING + 1) + "a(`1`)") == (MAX_NESTING + 1, message)
    assert error_of("(!" * 51 + "a(`1`)")[1] == message


def test_tree_depth_limit() -> None:
    chain = " || ".join(["a(`1`)"] * (MAX_DEPTH + 1))
    tree = parse_rule(chain)
    assert sum(1 for _ in leaves(tree)) == MAX_DEPTH + 1
    assert parse_rule(render_rule(tree)) == tree
    assert check_calls(tree, {"a": (1, 1)}) == tree
    too_deep = chain + " || a(`1`)"
    message = f"rule is too complex: more than {MAX_DEPTH} nested operators"
    assert error_of(too_deep) == (len(chain) + 2, message)


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_RULE_LENGTH - 1),
        "!" * (MAX_RULE_LENGTH - 1),
        "a(`1`)&&" * (MAX_RULE_LENGTH // 8),
        "(!" * (MAX_RULE_LENGTH // 2),
    ],
)
def test_hostile_rules_fail_cleanly(text: str) -> None:
    with pytest.raises(RuleSyntaxError):
        parse_rule(text)


# ------------------------------------------------------------------------------ the error


def test_rule_syntax_error_format() -> None:
    located = RuleSyntaxError("unexpected newline", 7)
    assert (located.message, located.column, str(located)) == (
        "unexpected newline",
        7,
        "column 7: unexpected newline",
    )
    whole = RuleSyntaxError("empty rule", None)
    assert (whole.column, str(whole)) == (None, "empty rule")
    assert isinstance(whole, ValueError)


def test_rule_syntax_error_pickles() -> None:
    copy = pickle.loads(pickle.dumps(RuleSyntaxError("bad", 3)))
    assert (copy.message, copy.column, str(copy)) == ("bad", 3, "column 3: bad")


# ------------------------------------------------------------------------------- leaves


def test_leaves_in_reading_order() -> None:
    tree = parse_rule("a(`1`) || !(b(`2`) && c(`3`)) && d(`4`)")
    assert [leaf.name for leaf in leaves(tree)] == ["a", "b", "c", "d"]
    assert list(leaves(parse_rule("a(`1`)"))) == [Call("a", ("1",), 1, (3,))]


def test_strip_columns() -> None:
    assert strip_columns(parse_rule("!a(`1`,`2`)")) == Not(Call("a", ("1", "2"), 0, (0, 0)), 0)


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize(
    ("tree", "text"),
    [
        (And(A, B), "a(`1`) && b(`2`)"),
        (Or(A, And(B, C)), "a(`1`) || b(`2`) && c(`3`)"),
        (And(Or(A, B), C), "(a(`1`) || b(`2`)) && c(`3`)"),
        (And(A, And(B, C)), "a(`1`) && (b(`2`) && c(`3`))"),
        (And(And(A, B), C), "a(`1`) && b(`2`) && c(`3`)"),
        (Or(A, Or(B, C)), "a(`1`) || (b(`2`) || c(`3`))"),
        (not_(And(A, B)), "!(a(`1`) && b(`2`))"),
        (not_(not_(A)), "!!a(`1`)"),
        (And(not_(A), not_(Or(B, C))), "!a(`1`) && !(b(`2`) || c(`3`))"),
        (call("Host"), "Host()"),
        (call("Header", "k", ""), "Header(`k`, ``)"),
    ],
)
def test_render_rule(tree: Node, text: str) -> None:
    assert render_rule(tree) == text
    assert shape(text) == tree


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("a b/é€", "`a b/é€`"),
        ('say "hi" \\', '`say "hi" \\`'),
        ("a`b", '"a`b"'),
        ("a\tb\nc\rd", r'"a\tb\nc\rd"'),
        ('`"\\', r'"`\"\\"'),
        ("\x00\x07\x08\x0c\x0b\x1f\x7f", r'"\x00\a\b\f\v\x1f\x7f"'),
        ("\ufeff\u2028\x85", r'"\ufeff\u2028\u0085"'),
        ("\U000e0001", r'"\U000e0001"'),
    ],
)
def test_render_strings(value: str, rendered: str) -> None:
    text = render_rule(call("H", value))
    assert text == f"H({rendered})"
    assert arg(text) == value


def test_render_refuses_what_no_rule_can_express() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        render_rule(call("H", "\ud800"))
    with pytest.raises(ValueError, match="is not a matcher name"):
        render_rule(call("Host-x", "a"))


# ---------------------------------------------------------------------------- spellings


def test_spellings() -> None:
    assert spellings("PathPrefix") == ("PathPrefix", "pathprefix", "PATHPREFIX", "Pathprefix")
    assert spellings("ALPN") == ("ALPN", "alpn", "ALPN", "Alpn")
    assert spellings("HostSNIRegexp") == (
        "HostSNIRegexp",
        "hostsniregexp",
        "HOSTSNIREGEXP",
        "Hostsniregexp",
    )


@pytest.mark.parametrize("written", ["PathPrefix", "pathprefix", "PATHPREFIX", "Pathprefix"])
def test_resolve_name_accepts_four_spellings(written: str) -> None:
    assert resolve_name(written, ["Host", "PathPrefix"]) == "PathPrefix"


@pytest.mark.parametrize("written", ["pathPrefix", "PATHprefix", "Path_Prefix", "PathPrefi", ""])
def test_resolve_name_rejects_other_spellings(written: str) -> None:
    assert resolve_name(written, ["Host", "PathPrefix"]) is None


def test_unknown_matcher_message() -> None:
    names = ["Host", "PathPrefix", "ALPN"]
    assert unknown_matcher_message("pathPrefix", names) == (
        'unknown matcher "pathPrefix" (accepted spellings: PathPrefix, pathprefix, PATHPREFIX, '
        "Pathprefix)"
    )
    assert unknown_matcher_message("alPN", names) == (
        'unknown matcher "alPN" (accepted spellings: ALPN, alpn, Alpn)'
    )
    assert unknown_matcher_message("Hots", names) == (
        'unknown matcher "Hots" (did you mean "Host"? accepted spellings: Host, host, HOST)'
    )
    assert unknown_matcher_message("pathprefx", names) == (
        'unknown matcher "pathprefx" (did you mean "PathPrefix"? accepted spellings: '
        "PathPrefix, pathprefix, PATHPREFIX, Pathprefix)"
    )
    assert unknown_matcher_message("Frobnicate", names) == 'unknown matcher "Frobnicate"'
    assert unknown_matcher_message("Host", []) == 'unknown matcher "Host"'


# -------------------------------------------------------------------------- check_calls


def check(text: str) -> Node:
    return check_calls(parse_rule(text), ARITY, aliases=ALIASES)


def check_error(text: str) -> tuple[int | None, str]:
    with pytest.raises(RuleSyntaxError) as caught:
        check(text)
    return caught.value.column, caught.value.message


def test_check_calls_canonicalises_names_and_keeps_the_rest() -> None:
    tree = check("HOST(`a`) && !(pathprefix(`/b`) || HEADERS(`k`, `v`))")
    assert tree == And(
        Call("Host", ("a",), 1, (6,)),
        Not(
            Or(Call("PathPrefix", ("/b",), 16, (27,)), Call("Header", ("k", "v"), 36, (44, 49))), 14
        ),
    )


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("Headers", "Header"),
        ("headers", "Header"),
        ("HeadersRegexp", "HeaderRegexp"),
        ("Headersregexp", "HeaderRegexp"),
        ("HostHeader", "Host"),
        ("HOSTHEADER", "Host"),
    ],
)
def test_check_calls_aliases(written: str, canonical: str) -> None:
    args = "`k`, `v`" if written.lower().startswith("headers") else "`h`"
    tree = check(f"{written}({args})")
    assert isinstance(tree, Call)
    assert tree.name == canonical


def test_check_calls_without_aliases() -> None:
    assert check_calls(parse_rule("host(`a`)"), ARITY) == Call("Host", ("a",), 1, (6,))
    with pytest.raises(RuleSyntaxError, match='unknown matcher "Headers"'):
        check_calls(parse_rule("Headers(`k`, `v`)"), ARITY)


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (
            "Host(`a`) && pathPrefix(`/`)",
            14,
            'unknown matcher "pathPrefix" (accepted spellings: PathPrefix, pathprefix, '
            "PATHPREFIX, Pathprefix)",
        ),
        (
            "HEADERSregexp(`k`, `v`)",
            1,
            'unknown matcher "HEADERSregexp" (accepted spellings: HeadersRegexp, '
            "headersregexp, HEADERSREGEXP, Headersregexp)",
        ),
        ("Nope(`a`)", 1, 'unknown matcher "Nope"'),
        ("Query(`a`, `b`, `c`)", 1, "Query() expects 1 or 2 arguments, got 3"),
        ("Host(`a`, `b`)", 1, "Host() expects 1 argument, got 2"),
        ("host()", 1, "Host() expects 1 argument, got 0"),
        ("Header(`k`)", 1, "Header() expects 2 arguments, got 1"),
        ("headers(`k`)", 1, "Headers() expects 2 arguments, got 1"),
        ("QueryRegexp()", 1, "QueryRegexp() expects 1 to 3 arguments, got 0"),
        ("Any()", 1, "Any() expects at least 1 argument, got 0"),
        ("Nothing(`a`)", 1, "Nothing() expects no arguments, got 1"),
        ("Host(``)", 1, "Host() argument 1 must not be empty"),
        ("Header(`k`, ``)", 1, "Header() argument 2 must not be empty"),
        ('Host(`1`) || Header(`k`, "")', 14, "Header() argument 2 must not be empty"),
        ("HostHeader(``)", 1, "HostHeader() argument 1 must not be empty"),
    ],
)
def test_check_calls_errors(text: str, column: int, message: str) -> None:
    assert check_error(text) == (column, message)


def test_check_calls_reports_the_first_bad_call_in_reading_order() -> None:
    assert check_error("Host(`a`) && (Nope(`x`) || Host())") == (15, 'unknown matcher "Nope"')
    assert check_error("Host() || Nope(`x`)") == (1, "Host() expects 1 argument, got 0")


def test_check_calls_variadic_accepts_many_arguments() -> None:
    many = ", ".join(f"`{n}`" for n in range(500))
    tree = check(f"Any({many})")
    assert isinstance(tree, Call)
    assert len(tree.args) == 500
