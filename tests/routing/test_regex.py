r"""The RE2 regex flavour (SPEC §4.6): each row of the table behaves as RE2 does.

Every expected result in the tables below is what RE2 gives (checked against RE2 itself);
where Go's ``regexp`` (Traefik's engine) and C++ RE2 disagree, Go wins and the case says so.
"""

from __future__ import annotations

import re
import string

import pytest

from a3s_gateway.routing.regex import RegexError, compile_regex, translate

ASCII = "".join(map(chr, range(128)))
ARABIC_INDIC_THREE = "\u0663"
KELVIN = "\u212a"


def span(pattern: str, subject: str, *, ignore_case: bool = False) -> tuple[int, int] | None:
    """Where RE2 semantics find ``pattern`` in ``subject`` (unanchored search)."""
    match = compile_regex(pattern, ignore_case=ignore_case).search(subject)
    return None if match is None else match.span()


def case(pattern: str, subject: str, expected: tuple[int, int] | None) -> object:
    return pytest.param(pattern, subject, expected, id=f"{pattern!r} in {subject!r}")


# (pattern, subject, span of RE2's leftmost-first match or None)
SEARCHES = [
    # \d \w \s \b are ASCII
    case(r"\d", ARABIC_INDIC_THREE, None),
    case(r"\d+", "a12", (1, 3)),
    case(r"\w", "\u00e9", None),
    case(r"\W", "\u00e9", (0, 1)),
    case(r"\s", "\v", None),  # RE2's \s is [\t\n\f\r ]
    case(r"\s", "\xa0", None),
    case(r"\s", "\f", (0, 1)),
    case(r"\S", "\v", (0, 1)),
    case(r"[\s]", "\v", None),
    case(r"[\S]", "\v", (0, 1)),
    case(r"x\b", "x\u00e9", (0, 1)),  # é is no word character
    case("\\b\u00e9", "\u00e9", None),
    case(r"\Ba", "ba", (1, 2)),
    case(r"\B", "", (0, 0)),  # Python's own \B fails in the empty text
    case(r"\b", "", None),
    # $ without (?m) is end of text only; \z is end of text; \A is start of text
    case(r"^a$", "a\n", None),
    case(r"^a$", "a", (0, 1)),
    case(r"a$", "a\nb", None),
    case(r"(?m)a$", "a\nb", (0, 1)),
    case(r"(?m)^b", "a\nb", (2, 3)),
    case(r"^b", "a\nb", None),
    case(r"a\z", "a\n", None),
    case(r"a\z", "ba", (1, 2)),
    case(r"\Ab", "ab", None),
    case(r"(?m)\Ab", "a\nb", None),
    case(r"(?m:a$)|b$", "a\nb", (0, 1)),
    case(r"(?m:x)a$", "xa\n", None),  # (?m:…) ends with its group
    case(r"\$", "a$", (1, 2)),
    case(r"[$]", "a$", (1, 2)),
    case(r"^*a", "a", (0, 1)),  # RE2 repeats assertions; Python needs a group
    case(r"$+", "ab", (2, 2)),
    # \Q…\E is literal text
    case(r"\Qa.b\E", "axb", None),
    case(r"\Qa.b\E", "a.b", (0, 3)),
    case(r"\Q(a)*\E", "(a)*", (0, 4)),
    case(r"\Qa.b", "xa.b", (1, 4)),  # without \E it runs to the end
    case(r"\Qab\E*", "abbb", (0, 4)),  # the quantifier takes the last character only
    case(r"a\Q\E*", "aaa", (0, 3)),  # an empty \Q\E leaves the quantifier on "a"
    # named groups, both spellings
    case(r"(?P<year>\d{4})", "in 2024", (3, 7)),
    case(r"(?<year>\d{4})", "in 2024", (3, 7)),
    case(r"(?P<1x>a)(?P<n>b)(?P<n>c)", "abc", (0, 3)),  # names Python cannot take (Go can)
    # flags i, m, s: until the group ends, across "|"
    case(r"(?i)abc", "xABC", (1, 4)),
    case(r"(?i:a)b", "AB", None),
    case(r"(?i:a)b", "Ab", (0, 2)),
    case(r"a(?i)b|c", "C", (0, 1)),
    case(r"(a(?i)b|c)d", "Cd", (0, 2)),
    case(r"(a(?i)b)c", "aBC", None),
    case(r"(?i)a(?-i)b", "Ab", (0, 2)),
    case(r"(?i)a(?-i)b", "AB", None),
    case(r"(?i-i)a", "A", None),
    case(r"(?)a", "a", (0, 1)),
    case(r".", "\n", None),
    case(r"(?s).", "\n", (0, 1)),
    case(r"(?s:.)\n.", "\n\n\n", None),
    case("(?i)\u00e9", "\u00c9", (0, 1)),  # RE2 folds non-ASCII letters too
    case(r"(?i)k", KELVIN, (0, 1)),
    case(r"(?i)[\W]", "k", None),
    case(r"(?i)[\W]", KELVIN, None),
    case(r"(?i)[^k]", KELVIN, None),
    case(r"a(?i)*", "aaa", (0, 3)),  # the quantifier still takes "a"
    # POSIX classes, negated too
    case(r"[[:digit:]]+", "ab123", (2, 5)),
    case(r"[[:^alpha:]]", "ab1", (2, 3)),
    case(r"[[:alpha:][:digit:]]+", "-a1-", (1, 3)),
    case(r"[^[:space:]]", " \v\tx", (3, 4)),
    case(r"[:alpha:]", "h", (0, 1)),  # outside a class it is a plain set of : a l p h
    case(r"(?i)[[:upper:]]", "a", (0, 1)),
    case(r"[[:word:]]", "\u00e9", None),
    # a "{" that starts no valid repetition is literal
    case(r"a{,3}", "aaa", None),
    case(r"a{,3}", "a{,3}", (0, 5)),
    case(r"a{x}", "a{x}", (0, 4)),
    case(r"a{01}", "a{01}", (0, 5)),  # no leading zeros
    case(r"a{1, 2}", "a{1, 2}", (0, 7)),
    case(r"a{", "a{", (0, 2)),
    case(r"a{2}", "aaa", (0, 2)),
    case(r"a{2,}", "aaaa", (0, 4)),
    case(r"a{1,2}?", "aa", (0, 1)),
    case(r"a}", "a}", (0, 2)),
    # escapes
    case(r"\12", "\n", (0, 1)),  # octal, not a back-reference
    case(r"\101\0", "A\0", (0, 2)),
    case(r"\08", "\x008", (0, 2)),
    case(r"\x41\x{42}\x{1F600}", "AB\U0001f600", (0, 3)),
    case(r"\a\f\t\n\r\v", "\a\f\t\n\r\v", (0, 6)),
    case(r"\_\-\#\ \&\~", "_-# &~", (0, 6)),
    # classes
    case(r"[]a]", "]", (0, 1)),
    case(r"[^]a]", "]ab", (2, 3)),
    case(r"[a-]", "-", (0, 1)),
    case(r"[-a]", "-", (0, 1)),
    case(r"[\d-z]", "-", (0, 1)),
    case(r"[a-c-e]", "d", None),
    case(r"[a-c-e]", "-", (0, 1)),
    case(r"[[]", "[", (0, 1)),
    case(r"[-&&~~||]", "~", (0, 1)),
    case(r"[\]\\\^]", "^", (0, 1)),
    case(r"[^a]", "\n", (0, 1)),
    case(r"[\x{41}-\x{43}]+", "ABCD", (0, 3)),
    # leftmost-first alternation and laziness
    case(r"a|ab", "ab", (0, 1)),
    case(r"a*?b", "aab", (0, 3)),
    case(r"(a+)(b*)", "aabbb", (0, 5)),
]


@pytest.mark.parametrize(("pattern", "subject", "expected"), SEARCHES)
def test_search_agrees_with_re2(
    pattern: str, subject: str, expected: tuple[int, int] | None
) -> None:
    assert span(pattern, subject) == expected


POSIX_CLASSES = {
    "alnum": string.ascii_letters + string.digits,
    "alpha": string.ascii_letters,
    "ascii": ASCII,
    "blank": " \t",
    "cntrl": ASCII[:32] + "\x7f",
    "digit": string.digits,
    "graph": ASCII[33:127],
    "lower": string.ascii_lowercase,
    "print": ASCII[32:127],
    "punct": string.punctuation,
    "space": " \t\n\v\f\r",
    "upper": string.ascii_uppercase,
    "word": string.ascii_letters + string.digits + "_",
    "xdigit": string.hexdigits,
}


@pytest.mark.parametrize("name", sorted(POSIX_CLASSES))
def test_posix_class_is_its_ascii_set(name: str) -> None:
    positive = compile_regex(f"[[:{name}:]]")
    negated = compile_regex(f"[[:^{name}:]]")
    candidates = ASCII + "\u00e9\u0663\xa0\u2192"  # no class holds non-ASCII characters
    members = set(POSIX_CLASSES[name])
    assert {c for c in candidates if positive.fullmatch(c)} == members
    assert {c for c in candidates if negated.fullmatch(c)} == set(candidates) - members


def test_group_names_survive() -> None:
    match = compile_regex(r"(?P<year>\d{4})-(?<month>\d\d)").search("on 2024-05-01")
    assert match is not None
    assert match.groupdict() == {"year": "2024", "month": "05"}


def test_ignore_case_is_a_leading_i_flag() -> None:
    assert span("abc", "xABC", ignore_case=True) == (1, 4)
    assert span("a(?-i)b", "Ab", ignore_case=True) == (0, 2)
    assert span("a(?-i)b", "AB", ignore_case=True) is None
    assert span("abc", "ABC") is None


def test_compiled_patterns_are_cached() -> None:
    assert compile_regex("a+b") is compile_regex("a+b")
    assert compile_regex("a+b", ignore_case=True) is not compile_regex("a+b")


def test_translation_examples() -> None:
    assert translate("^a$") == r"\Aa\Z"
    assert translate("(?<n>x)") == "(?P<n>x)"
    assert translate(r"\Qa.b\E") == r"a\.b"
    assert translate("a{,3}") == r"a\{\,3\}"
    assert translate("(?i)a|b") == "(?i-ms:a)|(?i-ms:b)"
    assert translate(r"[[:digit:]x]") == "[0-9x]"


def test_repetition_limits() -> None:
    compile_regex("a{1000}")
    compile_regex("(a{500}){2}")
    compile_regex("((a{10}){0}){200}")  # Go: {0} cuts the product (C++ RE2 rejects this)
    with pytest.raises(RegexError, match=r"invalid repeat count \{1001\}"):
        compile_regex("a{1001}")
    with pytest.raises(RegexError, match=r"invalid repeat count \{3\}"):
        compile_regex("(a{500}){3}")
    with pytest.raises(RegexError, match=r"invalid repeat count \{2,1\}"):
        compile_regex("a{2,1}")


UNSUPPORTED_BY_RE2 = [
    (r"(a)\1", r"a back-reference \1"),
    (r"(?P<n>a)\k<n>", r"a back-reference \k"),
    (r"(?P<n>a)(?P=n)", "a back-reference (?P=…)"),
    (r"(?=x)", "look-ahead"),
    (r"a(?!x)", "look-ahead"),
    (r"(?<=x)a", "look-behind"),
    (r"(?<!x)a", "look-behind"),
    (r"(?>a+)", "an atomic group"),
    (r"a*+", "a possessive quantifier *+"),
    (r"a++", "a possessive quantifier ++"),
    (r"a?+", "a possessive quantifier ?+"),
    (r"a{2}+", "a possessive quantifier {2}+"),
    (r"(a)?(?(1)b|c)", "a conditional group"),
]


@pytest.mark.parametrize(("pattern", "construct"), UNSUPPORTED_BY_RE2)
def test_constructs_re2_lacks_are_errors_naming_them(pattern: str, construct: str) -> None:
    with pytest.raises(RegexError) as raised:
        compile_regex(pattern)
    assert str(raised.value).endswith(f"uses {construct}, which is not supported by RE2")


NOT_SUPPORTED = [
    ("(?U)a*", "the ungreedy flag (?U)"),
    (r"\pN", r"the Unicode class \pN"),
    (r"\PL", r"the Unicode class \PL"),
    (r"\p{Greek}+", r"the Unicode class \p{Greek}"),
    (r"[\p{Lu}a]", r"the Unicode class \p{Lu}"),
]


@pytest.mark.parametrize(("pattern", "construct"), NOT_SUPPORTED)
def test_re2_constructs_python_lacks_are_errors(pattern: str, construct: str) -> None:
    with pytest.raises(RegexError) as raised:
        compile_regex(pattern)
    assert str(raised.value).endswith(f"uses {construct}, which is not supported")


INVALID = [
    ("(a", "missing closing ) for the group at position 0"),
    ("a)", "unexpected ) at position 1"),
    ("[a", "missing closing ] for the character class at position 0"),
    ("[]", "missing closing ] for the character class at position 0"),
    ("[[:alpha:]", "missing closing ] for the character class at position 0"),
    ("[[:foo:]]", "invalid character class range [:foo:] at position 1"),
    ("[z-a]", "invalid character class range z-a at position 1"),
    (r"[a-\d]", r"invalid escape sequence \d at position 3"),
    (r"[\b]", r"invalid escape sequence \b at position 1"),
    (r"[\1]", r"invalid escape sequence \1 at position 1"),
    ("*a", "missing argument to repetition operator * at position 0"),
    ("{2}", "missing argument to repetition operator {2} at position 0"),
    ("a|*", "missing argument to repetition operator * at position 2"),
    ("(?i)*", "missing argument to repetition operator * at position 4"),
    ("a**", "invalid nested repetition operator ** at position 2"),
    ("a*?*", "invalid nested repetition operator *?* at position 3"),
    ("a{2}{3}", "invalid nested repetition operator {2}{3} at position 4"),
    (r"a\Z", r"\Z is not RE2 syntax (RE2 writes end of text as \z) at position 1"),
    (r"\8", r"a back-reference \8"),
    (r"\q", r"invalid escape sequence \q at position 0"),
    (r"\E", r"invalid escape sequence \E at position 0"),
    (r"\C", r"invalid escape sequence \C at position 0"),  # Go; C++ RE2 reads any byte
    (r"\u0041", r"invalid escape sequence \u at position 0"),
    (r"\N{DIGIT ONE}", r"invalid escape sequence \N at position 0"),
    ("\\\u00e9", "invalid escape sequence \\\u00e9 at position 0"),
    (r"\x4", r"invalid escape sequence \x… at position 0"),
    (r"\x{110000}", r"invalid escape sequence \x… at position 0"),
    (r"\x{}", r"invalid escape sequence \x… at position 0"),
    ("a\\", "trailing backslash at end of regex at position 1"),
    ("(?P<a-b>x)", "invalid named capture (?P<a-b> at position 0"),
    ("(?P<>x)", "invalid named capture (?P<> at position 0"),
    ("(?<n", "invalid named capture (no closing >) at position 0"),
    ("(?x)a", "invalid or unsupported Perl syntax (?x at position 0"),
    ("(?#note)a", "invalid or unsupported Perl syntax (?# at position 0"),
    ("(?i-)a", "invalid or unsupported Perl syntax (?i-) at position 0"),
    ("(?--i)a", "invalid or unsupported Perl syntax (?-- at position 0"),
    ("(?", "invalid or unsupported Perl syntax (? at position 0"),
]


@pytest.mark.parametrize(("pattern", "message"), INVALID)
def test_invalid_regexes(pattern: str, message: str) -> None:
    with pytest.raises(RegexError) as raised:
        compile_regex(pattern)
    assert message in str(raised.value)
    assert str(raised.value).startswith("regex ")


def test_error_messages_are_whole_sentences() -> None:
    with pytest.raises(RegexError) as raised:
        compile_regex("(a")
    message = 'regex "(a" is invalid: missing closing ) for the group at position 0'
    assert str(raised.value) == message
    with pytest.raises(RegexError) as raised:
        compile_regex("(?=x)")
    assert str(raised.value) == 'regex "(?=x)" uses look-ahead, which is not supported by RE2'
    assert isinstance(raised.value, ValueError)


def test_nesting_python_cannot_compile_is_a_regex_error() -> None:
    # Go rejects nesting deeper than 1000; Python's parser gives up far earlier.
    with pytest.raises(RegexError, match="nests too deeply"):
        compile_regex("(" * 1500 + ")" * 1500)


def test_translation_leaves_no_python_only_meaning() -> None:
    # Python would read these as its own syntax if they were passed through.
    assert compile_regex(r"a{,2}").fullmatch("aa") is None  # Python: a{0,2}
    assert compile_regex(r"[[:digit:]]").fullmatch(":") is None  # Python: a set with ":"
    assert compile_regex(r"\12").fullmatch("\n") is not None  # Python: group 12
    assert re.compile(translate(r"[\d-z]")).fullmatch("-") is not None  # Python: bad range
