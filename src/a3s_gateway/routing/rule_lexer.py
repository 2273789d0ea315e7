"""Lexing of routing rules: tokens, Go string literals, matcher-name spellings (SPEC §4.1–4.2).

Ring 0: pure functions over a ``str``; no I/O, no trio, sockets, TLS or clocks. Must not: know
the grammar (that is ``rules.py``), know which matchers exist (callers pass declared names in),
or compile regexes. Import the public names from ``rules.py``, which re-exports them.

Theory of operation. Traefik v3 hands the rule to Go's ``go/parser.ParseExpr``, so the tokens
are Go's, restricted to what a rule may contain: NAME, raw (backtick) and interpreted (``"``)
string literals, ``( ) , && || !``, and the whitespace space, tab, CR and LF. ``RuleLexer`` is
*lazy*: the parser pulls one token at a time, so the first error in reading order is the one
reported, whether it is lexical or grammatical (``Host(example.com)`` complains about the bare
name at column 6, not about the ``.`` further on).

Go's automatic-semicolon rule is reproduced in ``_skip_whitespace``: after a NAME, a string or
``)`` a newline ends the statement, which in an expression is an error unless nothing but
whitespace follows (``ParseExpr`` consumes one trailing automatic semicolon and then wants EOF).

Interpreted strings are decoded the way ``strconv.Unquote`` does: into *bytes*, because ``\\xHH``
and ``\\ooo`` escapes are bytes in Go. The bytes must then form valid UTF-8 (a Python ``str``
cannot hold anything else; Go would keep the raw bytes). Go's scanner also refuses NUL and a
byte-order mark anywhere but at the very start; a lone surrogate (possible in a Python ``str``,
not in UTF-8 source) is refused the same way.

Columns are 1-based character indexes into the whole rule text (not per line).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from a3s_gateway.config.suggest import closest

if TYPE_CHECKING:
    from collections.abc import Iterable

TokenKind: TypeAlias = Literal["name", "string", "(", ")", ",", "&&", "||", "!", "end"]

#: Tokens after which a newline would make Go insert a semicolon.
_OPERAND_ENDS: Final = frozenset({"name", "string", ")"})
_WHITESPACE: Final = " \t\r\n"
NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER: Final = re.compile(r"[0-9][0-9A-Za-z_.]*")
_SINGLE: Final[dict[str, TokenKind]] = {"(": "(", ")": ")", ",": ",", "!": "!"}
#: Characters Go's scanner refuses anywhere in the source (plus lone surrogates).
_FORBIDDEN: Final = re.compile("[\x00\ufeff\ud800-\udfff]")
#: A run of characters an interpreted string takes literally.
_PLAIN: Final = re.compile('[^"\\\\\n\x00\ufeff\ud800-\udfff]+')
_SIMPLE_ESCAPES: Final = {
    "a": 0x07, "b": 0x08, "f": 0x0C, "n": 0x0A, "r": 0x0D, "t": 0x09, "v": 0x0B, "\\": 0x5C,
    '"': 0x22,
}  # fmt: skip
_RENDER_ESCAPES: Final = {chr(code): "\\" + letter for letter, code in _SIMPLE_ESCAPES.items()}
_HEX: Final = frozenset(string.hexdigits)
_OCTAL: Final = frozenset(string.octdigits)
_BOM: Final = "\ufeff"


class RuleSyntaxError(ValueError):
    """A rule is malformed: bad token, bad grammar, unknown matcher or wrong arguments.

    ``message`` says what was wrong and what was expected; ``column`` is the 1-based character
    column in the rule text, or ``None`` when the error concerns the whole rule.
    """

    def __init__(self, message: str, column: int | None) -> None:
        self.message = message
        self.column = column
        super().__init__(f"column {column}: {message}" if column is not None else message)

    def __reduce__(self) -> tuple[type[RuleSyntaxError], tuple[str, int | None]]:
        return (type(self), (self.message, self.column))


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``text`` is the NAME, the *decoded* string value, or the operator itself."""

    kind: TokenKind
    text: str
    column: int


def describe_char(char: str) -> str:
    """``"x"`` for a printable character, ``U+0009`` otherwise (for error messages)."""
    return f'"{char}"' if char.isprintable() else f"U+{ord(char):04X}"


class RuleLexer:
    """Reads a rule one token at a time; raises ``RuleSyntaxError`` at the first bad character."""

    def __init__(self, text: str) -> None:
        self._text = text
        # Go's scanner skips a byte-order mark at the very start of the source.
        self._pos = 1 if text.startswith(_BOM) else 0
        self._after_operand = False

    def next_token(self) -> Token:
        """The next token; ``end`` (column = length + 1) once the text is used up."""
        self._skip_whitespace()
        text, pos = self._text, self._pos
        if pos >= len(text):
            self._after_operand = False
            return Token("end", "", len(text) + 1)
        token = self._read_token(text, pos)
        self._after_operand = token.kind in _OPERAND_ENDS
        return token

    def _skip_whitespace(self) -> None:
        text, pos = self._text, self._pos
        while pos < len(text) and text[pos] in _WHITESPACE:
            if text[pos] == "\n" and self._after_operand:
                if text[pos:].strip(_WHITESPACE):
                    raise RuleSyntaxError(
                        'unexpected newline; break lines after "&&", "||", "(" or ","', pos + 1
                    )
                pos = len(text)
                break
            pos += 1
        self._pos = pos

    def _read_token(self, text: str, pos: int) -> Token:
        char = text[pos]
        if match := NAME_RE.match(text, pos):
            self._pos = match.end()
            return Token("name", match.group(), pos + 1)
        if char in _SINGLE:
            self._pos = pos + 1
            return Token(_SINGLE[char], char, pos + 1)
        if char in "&|" and text.startswith(char * 2, pos):
            self._pos = pos + 2
            return Token("&&" if char == "&" else "||", char * 2, pos + 1)
        if char == "`":
            value, self._pos = read_raw_string(text, pos)
            return Token("string", value, pos + 1)
        if char == '"':
            value, self._pos = read_interpreted_string(text, pos)
            return Token("string", value, pos + 1)
        raise RuleSyntaxError(_unexpected_char_message(text, pos), pos + 1)


def _unexpected_char_message(text: str, pos: int) -> str:
    char = text[pos]
    if char in "&|":
        return f'unexpected "{char}"; did you mean "{char * 2}"?'
    if char == "'":
        return 'unexpected "\'"; quote strings with backticks or double quotes'
    if number := _NUMBER.match(text, pos):
        return f'unexpected number "{number.group()}"; arguments are quoted strings'
    return f"unexpected character {describe_char(char)}"


def _check_allowed(text: str, start: int, end: int) -> None:
    """Refuse NUL, a byte-order mark or a lone surrogate in ``text[start:end]``."""
    if bad := _FORBIDDEN.search(text, start, end):
        raise RuleSyntaxError(
            f"character {describe_char(bad.group())} is not allowed in a rule", bad.start() + 1
        )


def read_raw_string(text: str, pos: int) -> tuple[str, int]:
    """Decode the backtick string opening at ``pos``: (value without CR, index after it)."""
    close = text.find("`", pos + 1)
    if close < 0:
        raise RuleSyntaxError("unterminated string", pos + 1)
    _check_allowed(text, pos + 1, close)
    return text[pos + 1 : close].replace("\r", ""), close + 1


def read_interpreted_string(text: str, pos: int) -> tuple[str, int]:
    """Decode the ``"`` string opening at ``pos`` with Go's escapes: (value, index after it)."""
    out = bytearray()
    index = pos + 1
    while index < len(text):
        char = text[index]
        if plain := _PLAIN.match(text, index):
            out += plain.group().encode()
            index = plain.end()
        elif char == "\\":
            if index + 1 == len(text):
                break
            index = _read_escape(text, index, out)
        elif char == '"':
            try:
                return out.decode(), index + 1
            except UnicodeDecodeError:
                message = "the escapes in this string do not form valid UTF-8"
                raise RuleSyntaxError(message, pos + 1) from None
        elif char == "\n":
            raise RuleSyntaxError('newline in string; write it as \\n in a "..." string', index + 1)
        else:  # NUL, byte-order mark or lone surrogate
            message = f"character {describe_char(char)} is not allowed in a rule"
            raise RuleSyntaxError(message, index + 1)
    raise RuleSyntaxError("unterminated string", pos + 1)


def _read_escape(text: str, index: int, out: bytearray) -> int:
    r"""Append the escape at ``text[index]`` (a ``\``) to ``out``; return the index after it."""
    letter = text[index + 1]
    if letter in _SIMPLE_ESCAPES:
        out.append(_SIMPLE_ESCAPES[letter])
        return index + 2
    if letter in _OCTAL:
        digits = _digits(text, index + 1, 3, _OCTAL, "\\ooo needs 3 octal digits", index)
        if int(digits, 8) > 0xFF:
            raise RuleSyntaxError(f"octal escape \\{digits} is above \\377", index + 1)
        out.append(int(digits, 8))
        return index + 4
    if letter == "x":
        out.append(int(_digits(text, index + 2, 2, _HEX, "\\x needs 2 hex digits", index), 16))
        return index + 4
    if letter in "uU":
        width = 4 if letter == "u" else 8
        message = f"\\{letter} needs {width} hex digits"
        out += _code_point(_digits(text, index + 2, width, _HEX, message, index), letter, index)
        return index + 2 + width
    shown = f'"\\{letter}"' if letter.isprintable() else f'"\\" followed by {describe_char(letter)}'
    raise RuleSyntaxError(f"unknown escape sequence {shown}", index + 1)


def _digits(text: str, start: int, count: int, allowed: frozenset[str], what: str, at: int) -> str:
    digits = text[start : start + count]
    if len(digits) != count or not all(digit in allowed for digit in digits):
        raise RuleSyntaxError(f"invalid escape: {what}", at + 1)
    return digits


def _code_point(digits: str, letter: str, at: int) -> bytes:
    value = int(digits, 16)
    if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        message = f"escape \\{letter}{digits} is not a valid Unicode code point"
        raise RuleSyntaxError(message, at + 1)
    return chr(value).encode()


def quote_string(value: str) -> str:
    """Render ``value`` as a rule string that reads back as exactly ``value``.

    A raw backtick string when every character is printable and there is no backtick; otherwise
    an interpreted string with Go escapes. Raises ``ValueError`` for a lone surrogate, which no
    rule string can express.
    """
    if "`" not in value and value.isprintable():
        return f"`{value}`"
    return '"' + "".join(_escape_char(char) for char in value) + '"'


def _escape_char(char: str) -> str:
    if char in _RENDER_ESCAPES:
        return _RENDER_ESCAPES[char]
    if char.isprintable():
        return char
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        raise ValueError(f"U+{code:04X} (a lone surrogate) cannot appear in a rule string")
    if code < 0x80:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


# ------------------------------------------------------------------------ matcher-name spellings


def spellings(declared: str) -> tuple[str, str, str, str]:
    """The four accepted spellings of a matcher name (SPEC §4.2), duplicates included.

    As declared, lower case, upper case, and Go's ``strings.Title(strings.ToLower(name))``
    (which, for a NAME, upper-cases only the first character).
    """
    return (
        declared,
        declared.lower(),
        declared.upper(),
        declared[:1].upper() + declared[1:].lower(),
    )


def resolve_name(written: str, declared_names: Iterable[str]) -> str | None:
    """The first declared name whose four spellings include ``written``, else ``None``."""
    return next((name for name in declared_names if written in spellings(name)), None)


def unknown_matcher_message(written: str, declared_names: Iterable[str]) -> str:
    """``unknown matcher "x"``, with the accepted spellings of the nearest declared name.

    The nearest name is one equal to ``written`` ignoring case, else the closest within edit
    distance 2 (ignoring case); if there is none, nothing is suggested.
    """
    by_lower: dict[str, str] = {}
    for name in declared_names:
        by_lower.setdefault(name.lower(), name)
    lower = written.lower()
    if lower in by_lower:
        suggestion, prefix = by_lower[lower], ""
    elif (near := closest(lower, by_lower)) is not None:
        suggestion, prefix = by_lower[near], f'did you mean "{by_lower[near]}"? '
    else:
        return f'unknown matcher "{written}"'
    accepted = ", ".join(dict.fromkeys(spellings(suggestion)))
    return f'unknown matcher "{written}" ({prefix}accepted spellings: {accepted})'
