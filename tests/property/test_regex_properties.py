r"""Properties of the RE2 regex flavour (SPEC §4.6, ``routing/regex.py``).

The agreement property compares the translator with a naive reference built from the same syntax
tree: every atom in its own scoped-flags group, every class (and ``\d``-style class) written out
as the explicit set of alphabet characters RE2 puts in it, ``$`` as ``\Z`` outside ``(?m)``,
compiled with ``re.ASCII``. The reference never parses RE2 text, so the translator's scanner
(escapes, class syntax, flag scoping, braces) is what is being checked.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import string
import warnings
from collections.abc import Callable

from hypothesis import example, given, settings
from hypothesis import strategies as st

from a3s_gateway.routing.regex import RegexError, compile_regex, translate
from tests.property.strategies import (
    RE2_ALPHABET,
    ReAlternation,
    ReAtom,
    ReClass,
    ReClassItem,
    ReGroup,
    ReSetFlags,
    re2_pattern_text,
    re2_subjects,
    re2_trees,
    render_re2,
)

_ASCII = "".join(map(chr, range(128)))
#: What each RE2 class name contains, written independently of the translator's tables.
_NAMED_SETS = {
    "alnum": string.ascii_letters + string.digits,
    "alpha": string.ascii_letters,
    "ascii": _ASCII,
    "blank": " \t",
    "cntrl": _ASCII[:32] + "\x7f",
    "digit": string.digits,
    "graph": _ASCII[33:127],
    "lower": string.ascii_lowercase,
    "print": _ASCII[32:127],
    "punct": string.punctuation,
    "space": " \t\n\v\f\r",
    "upper": string.ascii_uppercase,
    "word": string.ascii_letters + string.digits + "_",
    "xdigit": string.hexdigits,
    # Perl classes: RE2's \s has no \v.
    "d": string.digits,
    "s": " \t\n\f\r",
    "w": string.ascii_letters + string.digits + "_",
}


# -- the reference ----------------------------------------------------------------------------


def reference_pattern(tree: ReAlternation) -> str:
    """``tree`` as a Python pattern (for ``re.ASCII``) that means what RE2 means by it."""
    return _alternation(tree, frozenset())[0]


def _alternation(tree: ReAlternation, flags: frozenset[str]) -> tuple[str, frozenset[str]]:
    # RE2 keeps a (?i) in force across "|" until the group ends.
    branches: list[str] = []
    for branch in tree.branches:
        parts: list[str] = []
        for element in branch:
            if isinstance(element, ReSetFlags):
                flags = _set_flags(flags, element.flags)
            else:
                parts.append(f"(?:{_atom(element.atom, flags)}){element.quantifier}")
        branches.append("".join(parts))
    return "|".join(branches), flags


def _set_flags(flags: frozenset[str], spec: str) -> frozenset[str]:
    on, _, off = spec.partition("-")
    return (flags | set(on)) - set(off)


def _scoped(text: str, flags: frozenset[str]) -> str:
    on = "".join(sorted(flags))
    off = "".join(sorted(set("ims") - flags))
    return f"(?{on}-{off}:{text})" if off else f"(?{on}:{text})"


def _atom(atom: ReAtom | ReClass | ReGroup, flags: frozenset[str]) -> str:
    if isinstance(atom, ReGroup):
        inner_flags = _set_flags(flags, atom.flags) if atom.kind == "flags" else flags
        body = _alternation(atom.body, inner_flags)[0]
        capturing = atom.kind in ("capture", "named_p", "named_angle")
        return f"({body})" if capturing else f"(?:{body})"
    if isinstance(atom, ReClass):
        return _explicit_set(lambda char: _in_class(char, atom, "i" in flags))
    match atom.kind:
        case "lit" | "braces" | "quote":
            return _scoped(re.escape(atom.text), flags)
        case "dot":
            return _scoped(".", flags)
        case "perl":
            item = ReClassItem("perl", atom.text)
            return _explicit_set(lambda char: _in_item(char, item, "i" in flags))
        case _:
            return _anchor(atom.text, flags)


def _anchor(text: str, flags: frozenset[str]) -> str:
    if text == "$":
        return _scoped("$", flags) if "m" in flags else r"\Z"
    # Python's \B fails in the empty text, where RE2's holds.
    python = {"^": "^", r"\A": r"\A", r"\z": r"\Z", r"\b": r"\b", r"\B": r"(?:\B|\A\Z)"}[text]
    return _scoped(python, flags)


def _explicit_set(member: Callable[[str], bool]) -> str:
    chars = [char for char in RE2_ALPHABET if member(char)]
    return "[" + "".join(map(re.escape, chars)) + "]" if chars else "(?!)"


def _in_class(char: str, node: ReClass, fold: bool) -> bool:
    return any(_in_item(char, item, fold) for item in node.items) != node.negated


def _in_item(char: str, item: ReClassItem, fold: bool) -> bool:
    """RE2 folds each item (a negated group is the complement of the folded group)."""
    candidates = {char, char.swapcase()} if fold and char.isascii() else {char}
    if item.kind == "range":
        return any(item.low <= candidate <= item.high for candidate in candidates)
    negated = item.negated or (item.kind == "perl" and item.low.isupper())
    members = _NAMED_SETS[item.low if item.kind == "posix" else item.low.lower()]
    return any(candidate in members for candidate in candidates) != negated


# -- properties --------------------------------------------------------------------------------


@given(re2_pattern_text())
@example("(?i)[\\W]")
@example("a*(?i)*")
@example("[[:a]b:]]")
def test_only_regex_error_escapes_and_python_accepts_every_translation(pattern: str) -> None:
    try:
        translated = translate(pattern)
    except RegexError:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. FutureWarning "possible nested set"
        re.compile(translated)


@given(st.text(max_size=30))
def test_compile_regex_raises_nothing_but_regex_error(pattern: str) -> None:
    with contextlib.suppress(RegexError):
        compile_regex(pattern)


# The tree grammar is wide (each quirk is one choice among many), so this property draws four
# times the profile's examples, up to 5000 (about a minute).
@settings(max_examples=min(4 * settings().max_examples, 5000))
@given(re2_trees(), st.data())
def test_translation_agrees_with_the_reference(tree: ReAlternation, data: st.DataObject) -> None:
    pattern = render_re2(tree)
    ours = compile_regex(pattern)
    reference = re.compile(reference_pattern(tree), re.ASCII)
    for subject in data.draw(st.lists(re2_subjects(tree), min_size=1, max_size=8)):
        found = [(m.span(), m.groups()) for m in ours.finditer(subject)]
        expected = [(m.span(), m.groups()) for m in reference.finditer(subject)]
        assert found == expected, (pattern, subject)
        # Which substrings match as a whole: the language, beyond leftmost-first choices.
        for start, end in itertools.combinations(range(len(subject) + 1), 2):
            part = subject[start:end]
            assert bool(ours.fullmatch(part)) == bool(reference.fullmatch(part)), (pattern, part)


@given(st.text(string.printable, max_size=30) | st.text(max_size=30), st.text(max_size=30))
def test_escaped_text_matches_exactly_itself(text: str, other: str) -> None:
    pattern = compile_regex(re.escape(text))
    assert pattern.fullmatch(text) is not None
    assert (pattern.fullmatch(other) is not None) == (other == text)
