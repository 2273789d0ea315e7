"""Character sets for the RE2 translation in ``regex.py``: ranges, RE2's ASCII classes, case
folding, and the Python text of a set or a single code point.

Ring 0: pure. Must not: depend on the scanner (``regex.py`` imports this module, not the other
way round).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable

MAX_RUNE: Final = 0x10FFFF
Ranges: TypeAlias = tuple[tuple[int, int], ...]


def parse_ranges(spec: str) -> Ranges:
    """``"0-9A-Z_"`` → ``((48, 57), (65, 90), (95, 95))``."""
    out: list[tuple[int, int]] = []
    index = 0
    while index < len(spec):
        if index + 2 < len(spec) and spec[index + 1] == "-":
            out.append((ord(spec[index]), ord(spec[index + 2])))
            index += 3
        else:
            out.append((ord(spec[index]), ord(spec[index])))
            index += 1
    return tuple(out)


#: RE2's fourteen ASCII classes, ``[[:name:]]`` (Go ``regexp/syntax/perl_groups.go``).
POSIX_CLASSES: Final = {
    "alnum": parse_ranges("0-9A-Za-z"),
    "alpha": parse_ranges("A-Za-z"),
    "ascii": parse_ranges("\x00-\x7f"),
    "blank": parse_ranges("\t "),
    "cntrl": parse_ranges("\x00-\x1f\x7f"),
    "digit": parse_ranges("0-9"),
    "graph": parse_ranges("!-~"),
    "lower": parse_ranges("a-z"),
    "print": parse_ranges(" -~"),
    "punct": parse_ranges("!-/:-@[-`{-~"),
    "space": parse_ranges("\t-\r "),
    "upper": parse_ranges("A-Z"),
    "word": parse_ranges("0-9A-Za-z_"),
    "xdigit": parse_ranges("0-9A-Fa-f"),
}
#: Perl classes: letter → (negated, set). RE2's ``\s`` is ``[\t\n\f\r ]``, without ``\v``.
PERL_CLASSES: Final = {
    "d": (False, POSIX_CLASSES["digit"]),
    "D": (True, POSIX_CLASSES["digit"]),
    "s": (False, parse_ranges("\t\n\f\r ")),
    "S": (True, parse_ranges("\t\n\f\r ")),
    "w": (False, POSIX_CLASSES["word"]),
    "W": (True, POSIX_CLASSES["word"]),
}
#: Non-ASCII characters whose case partners are ASCII letters. RE2 folds ``k`` with the Kelvin
#: sign and ``s`` with the long s; Python also folds ``i`` with the Turkish dotted and dotless i.
FOLD_PARTNERS: Final = (("kK", (0x212A,)), ("sS", (0x17F,)), ("iI", (0x130, 0x131)))


def char_text(code: int) -> str:
    """One code point as Python regex text that matches exactly it, in or out of a class."""
    char = chr(code)
    if char.isascii():
        if char.isalnum():
            return char
        if char.isprintable():
            return "\\" + char
    elif char.isprintable():
        return char
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def normalised(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, merged, non-adjacent ranges."""
    out: list[tuple[int, int]] = []
    for low, high in sorted(ranges):
        if out and low <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def complement(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    next_low = 0
    for low, high in normalised(ranges):
        if low > next_low:
            out.append((next_low, low - 1))
        next_low = high + 1
    if next_low <= MAX_RUNE:
        out.append((next_low, MAX_RUNE))
    return out


def folded(group: Ranges) -> list[tuple[int, int]]:
    """An ASCII set with every case partner RE2 (or Python's ``re.IGNORECASE``) gives it."""
    codes = {code for low, high in group for code in range(low, high + 1)}
    codes |= {ord(chr(code).swapcase()) for code in codes if chr(code).isalpha()}
    for letters, partners in FOLD_PARTNERS:
        if any(ord(letter) in codes for letter in letters):
            codes.update(partners)
    return [(code, code) for code in codes]


def class_text(negated: bool, ranges: Iterable[tuple[int, int]]) -> str:
    items = [
        char_text(low) if low == high else f"{char_text(low)}-{char_text(high)}"
        for low, high in normalised(ranges)
    ]
    return "[" + ("^" if negated else "") + "".join(items) + "]"
