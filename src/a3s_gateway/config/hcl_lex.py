"""Lexing of HCL source: tokens, escape decoding and template protection (SPEC §3.2).

Ring 0: pure functions over a ``str``; no I/O, no trio, sockets, TLS or clocks.

``tokenize`` reads the text the way python-hcl2 does (strings with escapes and nested ``${ }``,
heredocs, ``#``, ``//`` and ``/* */`` comments) into tokens with line and column; ``hcl_scan``
walks those tokens. ``decode_escapes`` decodes a quoted string's HCL escapes.

Template protection: python-hcl2 rejects ``"${NAME:-default}"`` (SPEC §3.3.1) and rewrites
other template sequences, so every ``${…}``, ``%{…}``, ``$${`` and ``%%{`` inside a string or
heredoc is replaced by a same-length placeholder of private-use characters before parsing and
restored, verbatim, afterwards (``ProtectedText``). Lines and columns are unchanged by the swap.

Must not: raise on any input (``decode_escapes`` alone raises, on a bad escape), know the
block/attribute structure or the config schema, or interpret ``${…}``.
"""

from __future__ import annotations

import bisect
import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Iterable

TokenKind: TypeAlias = Literal["name", "string", "heredoc", "number", "punct", "newline", "other"]

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_HEREDOC_OPEN: Final = re.compile(r"<<(-?)([A-Za-z][A-Za-z0-9._-]*)\r?\n")
_PUNCT: Final = ("...", "==", "!=", "<=", ">=", "&&", "||", "=>", "::", *"{}[]()=:,?.+-*/%<>!~")
_ESCAPES: Final = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_HEX: Final = frozenset(string.hexdigits)

# Placeholder alphabet: MARK, two base-6144 digits naming the span, then PAD to full length.
_MARK: Final = "\ue000"
_PAD: Final = "\ue001"
_DIGIT0: Final = 0xE100
_BASE: Final = 0xF900 - _DIGIT0
_PRIVATE_USE: Final = re.compile("[\ue000-\uf8ff]")
_PLACEHOLDER: Final = re.compile("\ue000([\ue100-\uf8ff]{2})\ue001*")


def decode_escapes(inner: str) -> str:
    """Decode the HCL escapes of a quoted string's content (without its quotes).

    Raises ``ValueError`` with a user-facing message on an unknown or malformed escape.
    """
    if "\\" not in inner:
        return inner
    out: list[str] = []
    start = 0
    while (slash := inner.find("\\", start)) >= 0:
        out.append(inner[start:slash])
        letter = inner[slash + 1 : slash + 2]
        if letter in _ESCAPES:
            out.append(_ESCAPES[letter])
            start = slash + 2
        elif letter in ("u", "U"):
            width = 4 if letter == "u" else 8
            out.append(_code_point(inner[slash : slash + 2 + width], width))
            start = slash + 2 + width
        else:
            raise ValueError(_bad_escape("\\" + letter))
    out.append(inner[start:])
    return "".join(out)


def _code_point(sequence: str, width: int) -> str:
    digits = sequence[2:]
    if len(digits) != width or not _HEX.issuperset(digits):
        raise ValueError(_bad_escape(sequence))
    value = int(digits, 16)
    if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
        raise ValueError(_bad_escape(sequence))
    return chr(value)


def _bad_escape(sequence: str) -> str:
    return (
        f'invalid escape sequence "{sequence}" '
        r"(HCL supports \\ \" \n \r \t \uNNNN \UNNNNNNNN)"
    )


def unquote_label(raw: str) -> str:
    """A label or object key as written (quoted or bare) → its text; best effort, never raises."""
    if len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"':
        try:
            return decode_escapes(raw[1:-1])
        except ValueError:
            return raw[1:-1]
    return raw


# ---------------------------------------------------------------------------------- lexing


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token; ``text`` is the exact source text (strings keep their quotes)."""

    kind: TokenKind
    text: str
    line: int
    column: int


def _template_end(text: str, start: int, limit: int) -> int | None:
    """End (exclusive) of the ``${…}``/``%{…}`` starting at ``start``, or None if unclosed.

    Inside, braces nest and quoted strings (with their own templates) are skipped. A newline
    ends the search: python-hcl2 rejects it there, and placeholders must not span lines.
    """
    stack = [0]  # brace depth per open template; -1 marks a nested quoted string
    i = start + 2
    while i < limit:
        ch = text[i]
        if ch == "\n":
            return None
        if stack[-1] < 0:
            if ch == "\\":
                i += 1
            elif ch == '"':
                stack.pop()
            elif ch in "$%" and text.startswith(ch + "{", i + 1):
                i += 2  # an escaped "$${" / "%%{" opens nothing
            elif ch in "$%" and text.startswith("{", i + 1):
                stack.append(0)
                i += 1
        elif ch == '"':
            stack.append(-1)
        elif ch == "{":
            stack[-1] += 1
        elif ch == "}":
            if stack[-1] > 0:
                stack[-1] -= 1
            else:
                stack.pop()
                if not stack:
                    return i + 1
        i += 1
    return None


class _Lexer:
    """Turns source text into tokens and collects the template spans to protect."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[Token] = []
        self.spans: list[tuple[int, int]] = []
        self._newlines = [match.start() for match in re.finditer("\n", text)]

    def run(self) -> None:
        i = 0
        while i < len(self.text):
            i = self._step(i)

    def _step(self, i: int) -> int:
        text = self.text
        ch = text[i]
        if ch == "\n":
            return self._emit("newline", i, i + 1)
        if ch in " \t\r\f\v":
            return i + 1
        if ch == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            return len(text) if end < 0 else end
        if text.startswith("/*", i):
            return self._block_comment(i)
        if ch == '"':
            return self._emit("string", i, self._template_literal(i + 1, len(text), quoted=True))
        if text.startswith("<<", i):
            return self._heredoc(i)
        return self._word(i)

    def _word(self, i: int) -> int:
        text = self.text
        number = _NUMBER.match(text, i)
        if number is not None:
            return self._emit("number", i, number.end())
        name = _NAME.match(text, i)
        if name is not None:
            return self._emit("name", i, name.end())
        for punct in _PUNCT:
            if text.startswith(punct, i):
                return self._emit("punct", i, i + len(punct))
        return self._emit("other", i, i + 1)

    def _emit(self, kind: TokenKind, start: int, end: int) -> int:
        index = bisect.bisect_left(self._newlines, start)
        line_start = self._newlines[index - 1] + 1 if index else 0
        self.tokens.append(Token(kind, self.text[start:end], index + 1, start - line_start + 1))
        return end

    def _block_comment(self, i: int) -> int:
        close = self.text.find("*/", i + 2)
        end = len(self.text) if close < 0 else close + 2
        # python-hcl2 reads any block comment as a line break (NL_OR_COMMENT).
        self._emit("newline", i, i + 1)
        return end

    def _template_literal(self, i: int, limit: int, *, quoted: bool) -> int:
        """Scan string or heredoc content from ``i``; returns the end (after a closing quote)."""
        text = self.text
        while i < limit:
            ch = text[i]
            if quoted and ch == "\\":
                i += 2
            elif quoted and ch == '"':
                return i + 1
            elif ch in "$%" and text.startswith("{", i + 1):
                i = self._template(i, limit)
            elif ch in "$%" and text.startswith(ch + "{", i + 1):
                self.spans.append((i, i + 3))  # "$${" / "%%{": escaped, literal
                i += 3
            else:
                i += 1
        return limit

    def _template(self, i: int, limit: int) -> int:
        end = _template_end(self.text, i, limit)
        if end is None:
            return i + 2
        self.spans.append((i, end))
        return end

    def _heredoc(self, i: int) -> int:
        text = self.text
        opener = _HEREDOC_OPEN.match(text, i)
        if opener is None:
            return self._emit("punct", i, i + 1)
        marker, body_start = opener.group(2), opener.end()
        line_start = body_start
        while line_start <= len(text):
            line_end = text.find("\n", line_start)
            line_end = len(text) if line_end < 0 else line_end
            if text[line_start:line_end].rstrip("\r").lstrip() == marker:
                self._template_literal(body_start, line_start, quoted=False)
                return self._emit("heredoc", i, line_end)
            line_start = line_end + 1
        return self._emit("punct", i, i + 1)


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text`` (comments and spaces dropped; newlines kept). Never raises."""
    lexer = _Lexer(text)
    lexer.run()
    return lexer.tokens


# -------------------------------------------------------------------------- protection


@dataclass(frozen=True, slots=True)
class ProtectedText:
    """Source text with template sequences swapped for placeholders, and the way back."""

    text: str
    originals: tuple[str, ...] = ()

    def restore(self, value: str) -> str:
        """Put the original template sequences back into a string from the parser."""
        if not self.originals or _MARK not in value:
            return value
        return _PLACEHOLDER.sub(self._original, value)

    def _original(self, match: re.Match[str]) -> str:
        high, low = (ord(ch) - _DIGIT0 for ch in match.group(1))
        index = high * _BASE + low
        return self.originals[index] if index < len(self.originals) else match.group(0)


def _protect(text: str, spans: Iterable[tuple[int, int]]) -> ProtectedText:
    ordered = sorted(spans)
    if not ordered or _PRIVATE_USE.search(text) is not None or len(ordered) >= _BASE * _BASE:
        # Source already uses the placeholder alphabet: leave it alone (then python-hcl2 decides
        # about ``${NAME:-default}`` on its own, i.e. rejects it).
        return ProtectedText(text)
    parts: list[str] = []
    originals: list[str] = []
    cursor = 0
    for start, end in ordered:
        index = len(originals)
        originals.append(text[start:end])
        digits = chr(_DIGIT0 + index // _BASE) + chr(_DIGIT0 + index % _BASE)
        parts.extend((text[cursor:start], _MARK, digits, _PAD * (end - start - 3)))
        cursor = end
    parts.append(text[cursor:])
    return ProtectedText("".join(parts), tuple(originals))


def lex(text: str) -> tuple[list[Token], ProtectedText]:
    """The tokens of ``text`` (as ``tokenize``) and its template-protected form. Never raises."""
    lexer = _Lexer(text)
    lexer.run()
    return lexer.tokens, _protect(text, lexer.spans)
