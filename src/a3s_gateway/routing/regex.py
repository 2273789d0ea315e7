r"""RE2 regexes run by Python ``re`` with RE2's meaning (SPEC §4.6).

Ring 0: pure text work; no I/O, trio, sockets or clocks.

Rule regexes (``HostRegexp``, ``PathRegexp``, ``HeaderRegexp``, ``QueryRegexp``,
``HostSNIRegexp`` and v2 templates ``{name:re}``; SPEC §4.3, §4.9, §4.10) are written in RE2
syntax as Traefik's Go ``regexp`` reads it. ``translate`` rewrites one into Python syntax with
the same meaning; ``compile_regex`` compiles (and caches) the result.

Must not: hand any part of the pattern to Python unparsed (every literal is re-escaped and every
construct re-emitted), accept syntax RE2 rejects, evaluate anything, or raise anything but
``RegexError``.

Theory of operation. ``_Scanner`` reads the pattern once, left to right, dispatching on the
current character to a small handler (literal, escape, class, group open/close, ``|``,
quantifier, brace), mirroring Go's ``regexp/syntax`` parser. It keeps:

* ``flags``: the RE2 flags (``i``, ``m``, ``s``) at the current position. As in Go, ``(?i)``
  lasts until the enclosing group closes and ``|`` does not reset it.
* ``groups``: one ``_Group`` per open parenthesis (the first is the whole pattern), with the
  flags to restore at ``)`` and the Python flags in force in the output there.
* ``last``: the atom a following quantifier applies to, where it starts in the output and its
  repetition weight (RE2 caps the product of nested counts at 1000).

Python 3.11 takes global flags only at the very start, so flags become scoped groups
``(?i-ms:…)``, opened lazily just before the next atom whose flags differ from those in force
and closed at ``|``, ``)`` or the next change. Because opening is lazy, a quantifier right after
``(?i)`` still applies to the atom before it, as in RE2.

Rewrites where Python would differ: ``^``/``$`` without ``m`` → ``\A``/``\Z`` (Python's ``$``
also matches before a final newline); ``\z`` → ``\Z``; ``\d \w \s`` and POSIX classes →
explicit ASCII sets (RE2's ``\s`` has no ``\v``); ``\b``/``\B`` → ASCII-scoped ``(?a:…)``
(RE2's ``\B`` also holds in the empty text); octal and ``\x{…}`` escapes → code points; a ``{``
that starts no valid repetition → ``\{``; ``(?<n>…)`` → ``(?P<n>…)``; a repeated assertion
(``^*``) or a repeat of a repeat (``a*(?i)*``) → wrapped in ``(?:…)``.
"""

from __future__ import annotations

import enum
import functools
import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.scalar import quote_value
from a3s_gateway.routing.regex_sets import MAX_RUNE as _MAX_RUNE
from a3s_gateway.routing.regex_sets import PERL_CLASSES as _PERL
from a3s_gateway.routing.regex_sets import POSIX_CLASSES as _POSIX
from a3s_gateway.routing.regex_sets import Ranges as _Ranges
from a3s_gateway.routing.regex_sets import char_text as _char
from a3s_gateway.routing.regex_sets import class_text as _class_text
from a3s_gateway.routing.regex_sets import complement as _complement
from a3s_gateway.routing.regex_sets import folded as _folded

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["RegexError", "compile_regex", "translate"]

_MAX_REPEAT: Final = 1000  # RE2's limit on a count, and on the product of nested counts


class RegexError(ValueError):
    """An RE2 regex that is invalid, or uses a construct this gateway cannot honour."""


class _Flag(enum.IntFlag):
    NONE = 0
    FOLD_CASE = 1  # i
    MULTI_LINE = 2  # m: ^ and $ also match at line breaks
    DOT_NL = 4  # s: . also matches \n


_FLAG_LETTERS: Final = {"i": _Flag.FOLD_CASE, "m": _Flag.MULTI_LINE, "s": _Flag.DOT_NL}


_C_ESCAPES: Final = {"a": 7, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11}
_OCTAL: Final = frozenset("01234567")
_NAME_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_")
#: Group syntax that RE2 lacks, with the name given in the error.
_UNSUPPORTED_GROUPS: Final = (
    ("(?=", "look-ahead"),
    ("(?!", "look-ahead"),
    ("(?<=", "look-behind"),
    ("(?<!", "look-behind"),
    ("(?>", "an atomic group"),
    ("(?(", "a conditional group"),
    ("(?P=", "a back-reference (?P=…)"),
)


def translate(pattern: str) -> str:
    """``pattern`` (RE2 syntax) as Python ``re`` syntax with the same meaning.

    Compile the result without ``re.ASCII`` (see ``compile_regex``). Raises ``RegexError`` when
    RE2 would reject the pattern, or when it uses ``(?U)`` or Unicode classes (``\\pN``), which
    have no Python equivalent.
    """
    return _Scanner(pattern, _Flag.NONE).run()


def compile_regex(pattern: str, *, ignore_case: bool = False) -> re.Pattern[str]:
    """``pattern`` (RE2 syntax) compiled with RE2's meaning; cached, since configs repeat them.

    ``ignore_case`` acts as a leading ``(?i)`` (v2 host templates). The pattern is compiled
    without ``re.ASCII``: ``translate`` already spells ``\\d \\w \\s \\b`` as ASCII sets, and
    leaving Python in Unicode mode makes ``(?i)`` fold non-ASCII letters (``é``/``É``) as RE2
    does. Raises ``RegexError``, never ``re.error``.
    """
    return _compiled(pattern, ignore_case)


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    text = _Scanner(pattern, _Flag.FOLD_CASE if ignore_case else _Flag.NONE).run()
    try:
        return re.compile(text, re.IGNORECASE if ignore_case else 0)
    except re.error as error:  # not expected: the scanner rejects what Python would
        raise RegexError(f"regex {quote_value(pattern)} is invalid: {error.msg}") from None
    except RecursionError:  # Python's parser recurses per group; RE2 allows deeper nesting
        raise RegexError(f"regex {quote_value(pattern)} nests too deeply") from None


def _opener(flags: _Flag) -> str:
    """A scoped-flags group that sets exactly ``flags``: ``(?i-ms:``."""
    on = "".join(letter for letter, flag in _FLAG_LETTERS.items() if flags & flag)
    off = "".join(letter for letter, flag in _FLAG_LETTERS.items() if not flags & flag)
    return f"(?{on}-{off}:" if off else f"(?{on}:"


_REPEAT: Final = re.compile(r"\{(0|[1-9][0-9]*)(,(0|[1-9][0-9]*)?)?\}")


def _repeat_counts(text: str, start: int) -> tuple[int, int, int] | None:
    """``{n}``, ``{n,}``, ``{n,m}`` at ``start`` → (min, max or -1, end); None: a literal ``{``.

    As Go's ``parseRepeat``: digits only, no leading zeros, no spaces.
    """
    match = _REPEAT.match(text, start)
    if match is None:
        return None
    low_digits, comma, high_digits = match.groups()
    low = _count(low_digits)
    if comma is None:
        return low, low, match.end()
    return low, (-1 if high_digits is None else _count(high_digits)), match.end()


def _count(digits: str) -> int:
    """A repeat count; anything past the limit comes back as limit + 1 (no huge ints)."""
    return int(digits) if len(digits) <= 4 else _MAX_REPEAT + 1


# -- the scanner -----------------------------------------------------------------------------


@dataclass(slots=True)
class _Atom:
    start: int  # index in the output where the atom begins
    weight: int = 1  # product of the counted repetitions around its innermost part
    assertion: bool = False  # empty-width: Python will not repeat it unless grouped
    repeated: bool = False


@dataclass(slots=True)
class _Group:
    start: int  # pattern position of "("
    restore: _Flag  # RE2 flags to restore at ")"
    base: _Flag  # Python flags in force inside, outside any scope
    out_start: int  # output index of the group's opening text
    scope: _Flag | None = None  # flags of the lazily opened scope, while one is open
    weight: int = 1  # largest weight of the atoms inside that are complete


class _Scanner:
    """One left-to-right pass over an RE2 pattern, building the Python text in ``out``."""

    def __init__(self, pattern: str, flags: _Flag) -> None:
        self.text = pattern
        self.pos = 0
        self.out: list[str] = []
        self.flags = flags
        self.groups = [_Group(0, flags, flags, 0)]
        self.last: _Atom | None = None
        self.last_repeat = ""  # the quantifier just read (RE2 rejects a quantifier after it)
        self.previous_repeat = ""
        self.previous_lazy = False
        self.names: set[str] = set()

    def run(self) -> str:
        while self.pos < len(self.text):
            self.previous_repeat, self.last_repeat = self.last_repeat, ""
            _HANDLERS.get(self.text[self.pos], _Scanner._literal)(self)
        if len(self.groups) > 1:
            raise self._invalid("missing closing ) for the group", self.groups[-1].start)
        self._end_level()
        return "".join(self.out)

    # errors

    def _invalid(self, what: str, at: int) -> RegexError:
        return RegexError(f"regex {quote_value(self.text)} is invalid: {what} at position {at}")

    def _unsupported(self, what: str, *, by_re2: bool = True) -> RegexError:
        which = "not supported by RE2" if by_re2 else "not supported"
        return RegexError(f"regex {quote_value(self.text)} uses {what}, which is {which}")

    # atoms and flag scopes

    def _atom(self, text: str, *, assertion: bool = False) -> None:
        self._commit()
        self._sync_scope()
        self.last = _Atom(len(self.out), assertion=assertion)
        self.out.append(text)

    def _commit(self) -> None:
        """The last atom can no longer be repeated: fold its weight into its group's."""
        if self.last is not None:
            group = self.groups[-1]
            group.weight = max(group.weight, self.last.weight)
            self.last = None

    def _sync_scope(self) -> None:
        group = self.groups[-1]
        in_force = group.base if group.scope is None else group.scope
        if in_force != self.flags:
            self._close_scope()
            if self.flags != group.base:
                self.out.append(_opener(self.flags))
                group.scope = self.flags

    def _close_scope(self) -> None:
        group = self.groups[-1]
        if group.scope is not None:
            self.out.append(")")
            group.scope = None

    def _end_level(self) -> None:
        self._commit()
        self._close_scope()

    # single characters

    def _literal(self) -> None:
        self._atom(_char(ord(self.text[self.pos])))
        self.pos += 1

    def _caret(self) -> None:
        self._atom("^" if self.flags & _Flag.MULTI_LINE else r"\A", assertion=True)
        self.pos += 1

    def _dollar(self) -> None:
        self._atom("$" if self.flags & _Flag.MULTI_LINE else r"\Z", assertion=True)
        self.pos += 1

    def _dot(self) -> None:
        self._atom(".")  # the scope in force carries the s flag
        self.pos += 1

    def _bar(self) -> None:
        self._end_level()
        self.out.append("|")
        self.pos += 1

    # groups

    def _open(self) -> None:
        start = self.pos
        if not self.text.startswith("(?", start):
            self.pos += 1
            self._push_group(start, "(")
            return
        for prefix, construct in _UNSUPPORTED_GROUPS:
            if self.text.startswith(prefix, start):
                raise self._unsupported(construct)
        if self.text.startswith(("(?P<", "(?<"), start):
            self._named_group(start)
        else:
            self._flag_group(start)

    def _push_group(self, start: int, opener: str | None, flags: _Flag | None = None) -> None:
        self._commit()
        self._sync_scope()
        inner = self.flags if flags is None else flags
        if opener is None:
            opener = "(?:" if inner == self.flags else _opener(inner)
        self.groups.append(_Group(start, self.flags, inner, len(self.out)))
        self.out.append(opener)
        self.flags = inner

    def _named_group(self, start: int) -> None:
        name_start = self.text.index("<", start) + 1
        end = self.text.find(">", name_start)
        if end < 0:
            raise self._invalid("invalid named capture (no closing >)", start)
        name = self.text[name_start:end]
        if not name or not _NAME_CHARS.issuperset(name):
            raise self._invalid(f"invalid named capture {self.text[start : end + 1]}", start)
        self.pos = end + 1
        # Go also accepts names Python cannot take (a leading digit, a repeated name); names
        # never affect matching, so such a group is emitted unnamed.
        usable = not name[0].isdigit() and name not in self.names
        self.names.add(name)
        self._push_group(start, f"(?P<{name}>" if usable else "(")

    def _flag_group(self, start: int) -> None:
        """``(?flags)`` or ``(?flags:``, as Go's ``parsePerlFlags``."""
        flags, negate, saw_flag = self.flags, False, False
        index = start + 2
        while index < len(self.text):
            char = self.text[index]
            index += 1
            if char in _FLAG_LETTERS:
                bit = _FLAG_LETTERS[char]
                flags, saw_flag = (flags & ~bit if negate else flags | bit), True
            elif char == "U":
                if not negate:
                    raise self._unsupported("the ungreedy flag (?U)", by_re2=False)
                saw_flag = True  # (?-U) turns off what is never on
            elif char == "-" and not negate:
                negate, saw_flag = True, False
            elif char in ":)" and (saw_flag or not negate):
                self.pos = index
                if char == ")":
                    self.flags = flags
                else:
                    self._push_group(start, None, flags)
                return
            else:
                break
        syntax = self.text[start:index]
        raise self._invalid(f"invalid or unsupported Perl syntax {syntax}", start)

    def _close(self) -> None:
        if len(self.groups) == 1:
            raise self._invalid("unexpected )", self.pos)
        self._end_level()
        group = self.groups.pop()
        self.out.append(")")
        self.flags = group.restore
        self.last = _Atom(group.out_start, group.weight)
        self.pos += 1

    # repetition

    def _star(self) -> None:
        start = self.pos
        self.pos += 1
        self._repeat(start, self.text[start], None)

    def _brace(self) -> None:
        counts = _repeat_counts(self.text, self.pos)
        if counts is None:
            self._literal()  # RE2: a "{" that starts no repetition is literal
            return
        low, high, end = counts
        start, self.pos = self.pos, end
        if low > _MAX_REPEAT or high > _MAX_REPEAT or (high >= 0 and low > high):
            what = f"invalid repeat count {self.text[start:end]}"
            raise self._invalid(f"{what} (at most {_MAX_REPEAT}, min <= max)", start)
        text = f"{{{low}}}" if low == high else f"{{{low},{high if high >= 0 else ''}}}"
        self._repeat(start, text, (low, high))

    def _repeat(self, start: int, operator: str, counts: tuple[int, int] | None) -> None:
        lazy = self.text.startswith("?", self.pos)
        if lazy:
            self.pos += 1
        if self.previous_repeat:
            if self.text[start] == "+" and not self.previous_lazy:
                raise self._unsupported(f"a possessive quantifier {self.previous_repeat}+")
            nested = self.previous_repeat + self.text[start : self.pos]
            raise self._invalid(f"invalid nested repetition operator {nested}", start)
        atom = self.last
        if atom is None:
            operator_text = self.text[start : self.pos]
            raise self._invalid(f"missing argument to repetition operator {operator_text}", start)
        if counts is not None:
            atom.weight = self._repeated_weight(atom.weight, counts, start)
        if atom.assertion or atom.repeated:
            self.out.insert(atom.start, "(?:")
            self.out.append(")")
        self.out.append(operator + ("?" if lazy else ""))
        atom.assertion, atom.repeated = False, True
        self.last_repeat, self.previous_lazy = self.text[start : self.pos], lazy

    def _repeated_weight(self, weight: int, counts: tuple[int, int], start: int) -> int:
        """Go's ``repeatIsValid``: counted repeats multiply along a path, ``{0}`` cuts it."""
        low, high = counts
        if high == 0:
            return 1
        count = high if high > 0 else low
        if count == 0:
            return weight
        if count * weight > _MAX_REPEAT:
            what = f"invalid repeat count {self.text[start : self.pos]}"
            raise self._invalid(f"{what} (nested counts multiply past {_MAX_REPEAT})", start)
        return count * weight

    # character classes

    def _class(self) -> None:
        start = self.pos
        self.pos += 1
        negated = self.text.startswith("^", self.pos)
        if negated:
            self.pos += 1
        ranges: list[tuple[int, int]] = []
        first = True  # a "]" right after "[" or "[^" is literal
        while first or not self.text.startswith("]", self.pos):
            if self.pos >= len(self.text):
                raise self._invalid("missing closing ] for the character class", start)
            first = False
            self._class_item(ranges)
        self.pos += 1
        self._atom(_class_text(negated, ranges))

    def _class_item(self, ranges: list[tuple[int, int]]) -> None:
        text, start = self.text, self.pos
        if text.startswith("[:", start) and len(text) - start > 2 and self._posix(ranges):
            return
        if text.startswith("\\", start) and start + 1 < len(text):
            letter = text[start + 1]
            if letter in _PERL:
                self._add_group(ranges, *_PERL[letter])
                self.pos += 2
                return
            if letter in "pP":
                raise self._unicode_class(start)
        low = high = self._class_char()
        # "[a-]" is "a" and "-": a "-" makes a range only when something other than "]" follows.
        if text.startswith("-", self.pos) and text[self.pos + 1 : self.pos + 2] not in ("", "]"):
            self.pos += 1
            high = self._class_char()
            if high < low:
                what = f"invalid character class range {text[start : self.pos]}"
                raise self._invalid(what, start)
        ranges.append((low, high))

    def _posix(self, ranges: list[tuple[int, int]]) -> bool:
        """``[:name:]`` or ``[:^name:]``; as in Go, ``[:`` … ``:]`` must name a class."""
        end = self.text.find(":]", self.pos + 2)
        if end < 0:
            return False
        spelled = self.text[self.pos : end + 2]
        negated = spelled.startswith("[:^")
        name = spelled[3 if negated else 2 : -2]
        if name not in _POSIX:
            raise self._invalid(f"invalid character class range {spelled}", self.pos)
        self._add_group(ranges, negated, _POSIX[name])
        self.pos = end + 2
        return True

    def _add_group(self, ranges: list[tuple[int, int]], negated: bool, group: _Ranges) -> None:
        if not negated:
            ranges.extend(group)
        elif self.flags & _Flag.FOLD_CASE:
            # RE2 negates the case-folded set. Python folds the whole class again, so the
            # complement must leave out every partner of the group's letters (a Kelvin sign
            # left in would make "(?i)[\W]" match "k").
            ranges.extend(_complement(_folded(group)))
        else:
            ranges.extend(_complement(group))

    def _class_char(self) -> int:
        if self.pos >= len(self.text):
            raise self._invalid("missing closing ] for the character class", self.pos)
        if self.text[self.pos] == "\\":
            return self._escaped_char(in_class=True)
        self.pos += 1
        return ord(self.text[self.pos - 1])

    # escapes

    def _escape(self) -> None:
        start = self.pos
        if start + 1 >= len(self.text):
            raise self._invalid("trailing backslash at end of regex", start)
        letter = self.text[start + 1]
        special = _SPECIAL_ESCAPES.get(letter)
        if special is not None:
            special(self)
        elif letter in _PERL:
            self.pos += 2
            self._atom(_class_text(*_PERL[letter]))
        else:
            self._atom(_char(self._escaped_char(in_class=False)))

    def _quote(self) -> None:
        r"""``\Q…\E``: literal text; without ``\E`` it runs to the end."""
        body_start = self.pos + 2
        end = self.text.find(r"\E", body_start)
        stop = len(self.text) if end < 0 else end
        for char in self.text[body_start:stop]:
            self._atom(_char(ord(char)))
        self.pos = stop if end < 0 else end + 2

    def _unsupported_escape(self) -> None:
        letter = self.text[self.pos + 1]
        if letter == "Z":
            raise self._invalid(r"\Z is not RE2 syntax (RE2 writes end of text as \z)", self.pos)
        if letter in "pP":
            raise self._unicode_class(self.pos)
        if letter in "kg" and self.text[self.pos + 2 : self.pos + 3] in ("<", "{", "'"):
            raise self._unsupported(f"a back-reference \\{letter}")
        raise self._invalid(f"invalid escape sequence \\{letter}", self.pos)

    def _unicode_class(self, start: int) -> RegexError:
        r"""The error for ``\pN``, ``\p{Greek}``, ``\PN``: Python has no Unicode classes."""
        braced = self.text.startswith("{", start + 2)
        end = self.text.find("}", start) + 1 if braced else start + 3
        spelled = self.text[start : end or None]
        return self._unsupported(f"the Unicode class {spelled}", by_re2=False)

    def _escaped_char(self, *, in_class: bool) -> int:
        """A single-character escape (as Go's ``parseEscape``); ``pos`` moves past it."""
        start = self.pos
        if start + 1 >= len(self.text):
            raise self._invalid("trailing backslash at end of regex", start)
        letter = self.text[start + 1]
        self.pos = start + 2
        if letter in _C_ESCAPES:
            return _C_ESCAPES[letter]
        if letter.isascii() and not letter.isalnum():
            return ord(letter)
        if letter == "x":
            return self._hex(start)
        if letter in _OCTAL and (letter == "0" or self.text[self.pos : self.pos + 1] in _OCTAL):
            digits = letter
            while len(digits) < 3 and self.text[self.pos : self.pos + 1] in _OCTAL:
                digits += self.text[self.pos]
                self.pos += 1
            return int(digits, 8)
        if letter in "123456789" and not in_class:
            raise self._unsupported(f"a back-reference \\{letter}")
        raise self._invalid(f"invalid escape sequence \\{letter}", start)

    def _hex(self, start: int) -> int:
        r"""``\xHH`` or ``\x{H…}`` (at most U+10FFFF); ``pos`` is just after ``\x``."""
        if self.text.startswith("{", self.pos):
            end = self.text.find("}", self.pos)
            digits = self.text[self.pos + 1 : end] if end >= 0 else ""
            self.pos = end + 1
        else:
            digits = self.text[self.pos : self.pos + 2]
            self.pos += 2
            if len(digits) < 2:
                digits = ""
        significant = digits.lstrip("0")
        if digits and len(significant) <= 6 and all(c in string.hexdigits for c in digits):
            code = int(significant or "0", 16)
            if code <= _MAX_RUNE:
                return code
        raise self._invalid(f"invalid escape sequence {self.text[start : start + 2]}…", start)


def _assertion(python_text: str, *, assertion: bool = True) -> Callable[[_Scanner], None]:
    def handle(scanner: _Scanner) -> None:
        scanner.pos += 2
        scanner._atom(python_text, assertion=assertion)

    return handle


_HANDLERS: Final[dict[str, Callable[[_Scanner], None]]] = {
    "(": _Scanner._open,
    ")": _Scanner._close,
    "|": _Scanner._bar,
    "[": _Scanner._class,
    "\\": _Scanner._escape,
    "^": _Scanner._caret,
    "$": _Scanner._dollar,
    ".": _Scanner._dot,
    "*": _Scanner._star,
    "+": _Scanner._star,
    "?": _Scanner._star,
    "{": _Scanner._brace,
}
_SPECIAL_ESCAPES: Final[dict[str, Callable[[_Scanner], None]]] = {
    "A": _assertion(r"\A"),
    "z": _assertion(r"\Z"),
    # ASCII word boundaries; Python's \B fails in the empty text, RE2's holds there.
    "b": _assertion(r"(?a:\b)", assertion=False),
    "B": _assertion(r"(?a:\B|\A\Z)", assertion=False),
    "Q": _Scanner._quote,
    "Z": _Scanner._unsupported_escape,
    "p": _Scanner._unsupported_escape,
    "P": _Scanner._unsupported_escape,
    "k": _Scanner._unsupported_escape,
    "g": _Scanner._unsupported_escape,
    "C": _Scanner._unsupported_escape,
}
