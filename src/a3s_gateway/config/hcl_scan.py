"""Lexical scan of HCL source: positions, duplicates and template protection (SPEC §3.2).

Ring 0: pure functions over a ``str``; no I/O. python-hcl2 8.x reports no positions for valid
input and silently keeps the last of two equal attributes, so this module reads the text itself
(strings with escapes and nested ``${ }``, heredocs, ``#``, ``//`` and ``/* */`` comments) and
records where every block header, attribute, list element and object key starts, keyed by its
path in the *normalised* data. It also finds attributes and object keys set twice.

Second job: python-hcl2 rejects ``"${NAME:-default}"`` (SPEC §3.3.1) and rewrites other
template sequences, so every ``${…}``, ``%{…}``, ``$${`` and ``%%{`` inside a string or heredoc
is replaced by a same-length placeholder of private-use characters before parsing and restored,
verbatim, afterwards (``ProtectedText``). Lines and columns are unchanged by the swap.

Must not: raise on any input (positions are best effort; python-hcl2 is the authority on
syntax), know the config schema (list-typed block names are passed in), or interpret
``${…}``.
"""

from __future__ import annotations

import bisect
import re
import string
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Literal, TypeAlias

from a3s_gateway.config.problems import Path, Position, Problem, SourceMap, format_path

if TYPE_CHECKING:
    from collections.abc import Iterable

TokenKind: TypeAlias = Literal["name", "string", "heredoc", "number", "punct", "newline", "other"]

_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_NUMBER: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_HEREDOC_OPEN: Final = re.compile(r"<<(-?)([A-Za-z][A-Za-z0-9._-]*)\r?\n")
_PUNCT: Final = ("...", "==", "!=", "<=", ">=", "&&", "||", "=>", "::", *"{}[]()=:,?.+-*/%<>!~")
_OPENERS: Final = {"(": ")", "[": "]", "{": "}"}
_BINARY: Final = frozenset({"+", "-", "*", "/", "%", "==", "!=", "<", ">", "<=", ">=", "&&", "||"})
_ESCAPES: Final = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}
_HEX: Final = frozenset(string.hexdigits)
#: Nesting beyond this is skipped without recording positions (keeps recursion bounded).
_MAX_DEPTH: Final = 64

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


# --------------------------------------------------------------------------- structure


@dataclass(frozen=True, slots=True)
class SourceScan:
    """What the scan found: positions, duplicate problems, every block header, protected text."""

    sources: SourceMap
    problems: tuple[Problem, ...]
    headers: dict[Path, list[Position]]
    protected: ProtectedText


@dataclass(slots=True)
class _Body:
    """Names seen in one block body, for duplicate detection and list-block indices."""

    seen: dict[str, tuple[str, Position]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


class _Structure:
    """Walks the token list like HCL's grammar, recording positions by normalised path."""

    def __init__(self, tokens: list[Token], filename: str, list_fields: frozenset[str]) -> None:
        self.tokens = tokens
        self.filename = filename
        self.list_fields = list_fields
        self.i = 0
        self.sources = SourceMap()
        self.problems: list[Problem] = []
        self.headers: dict[Path, list[Position]] = {}

    # -- token helpers

    def _peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def _at(self, *texts: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == "punct" and token.text in texts

    def _is_for(self, token: Token) -> bool:
        """A ``for`` expression starts here (``for x in …``), not a key or value named "for"."""
        following = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
        return token.text == "for" and following is not None and following.kind == "name"

    def _skip_newlines(self) -> None:
        while (token := self._peek()) is not None and token.kind == "newline":
            self.i += 1

    def _position(self, token: Token) -> Position:
        return Position(self.filename, token.line, token.column)

    def _record(self, path: Path | None, token: Token) -> None:
        if path is not None:
            self.sources.add(path, self._position(token))

    def _skip_until_close(self) -> None:
        """Skip tokens up to and including the closer of the group we are inside."""
        depth = 0
        while (token := self._peek()) is not None:
            self.i += 1
            if token.kind != "punct":
                continue
            if token.text in _OPENERS:
                depth += 1
            elif token.text in ")]}":
                if depth == 0:
                    return
                depth -= 1

    def _skip_group(self) -> None:
        self.i += 1
        self._skip_until_close()

    def _duplicate(self, path: Path, token: Token, message: str, first: Position) -> None:
        self.problems.append(
            Problem(
                severity="error",
                file=self.filename,
                line=token.line,
                column=token.column,
                path=format_path(path),
                message=f"{message} (also at line {first.line})",
            )
        )

    # -- bodies and blocks

    def body(self, path: Path, depth: int, *, nested: bool) -> None:
        names = _Body()
        while (token := self._peek()) is not None:
            if token.kind == "punct" and token.text == "}" and nested:
                self.i += 1
                return
            if token.kind == "name":
                self._item(path, depth, names)
            else:
                self.i += 1

    def _item(self, path: Path, depth: int, names: _Body) -> None:
        name = self.tokens[self.i]
        self.i += 1
        if self._at("="):
            self.i += 1
            self._note_name(path, name, "attribute", names)
            self._record((*path, name.text), name)
            self.expression((*path, name.text), depth)
            return
        labels: list[str] = []
        while (token := self._peek()) is not None and token.kind in ("name", "string"):
            labels.append(unquote_label(token.text))
            self.i += 1
        self._skip_newlines()
        if not self._at("{"):
            self._resync()
            return
        self.i += 1
        self._note_name(path, name, "block", names)
        block_path = self._block_path(path, name, labels, names)
        if depth >= _MAX_DEPTH:
            self._skip_until_close()
        else:
            self.body(block_path, depth + 1, nested=True)

    def _note_name(self, path: Path, token: Token, kind: str, names: _Body) -> None:
        previous = names.seen.get(token.text)
        if previous is None:
            names.seen[token.text] = (kind, self._position(token))
        elif kind == "attribute" and previous[0] == "attribute":
            message = f'attribute "{token.text}" is set twice'
            self._duplicate((*path, token.text), token, message, previous[1])
        elif kind != previous[0]:
            message = f'"{token.text}" is defined both as a block and as an attribute'
            self._duplicate((*path, token.text), token, message, previous[1])

    def _block_path(self, path: Path, name: Token, labels: list[str], names: _Body) -> Path:
        base = (*path, name.text)
        if labels:
            block_path: Path = base + tuple(labels)
            self._record(base, name)
        elif name.text in self.list_fields:
            index = names.counts.get(name.text, 0)
            names.counts[name.text] = index + 1
            block_path = (*base, index)
            self._record(base, name)
        else:
            block_path = base
        self._record(block_path, name)
        self.headers.setdefault(block_path, []).append(self._position(name))
        return block_path

    def _resync(self) -> None:
        """After something unexpected in a body: skip to the end of the line."""
        while (token := self._peek()) is not None and token.kind != "newline":
            if token.kind == "punct" and token.text == "}":
                return
            if token.kind == "punct" and token.text in _OPENERS:
                self._skip_group()
            else:
                self.i += 1

    # -- expressions

    def expression(self, path: Path | None, depth: int) -> None:
        """Skip one expression, recording positions inside list and object values."""
        expect_operand, pending_conditionals = True, 0
        while (token := self._peek()) is not None:
            punct = token.text if token.kind == "punct" else ""
            if expect_operand:
                if token.kind == "newline" or punct in ("-", "!"):
                    self.i += 1
                    continue
                if not self._operand(token, path, depth):
                    return
                expect_operand = False
            elif punct in _BINARY or punct == "?":
                pending_conditionals += punct == "?"
                expect_operand = True
                self.i += 1
            elif punct == ":" and pending_conditionals:
                pending_conditionals -= 1
                expect_operand = True
                self.i += 1
            elif not self._suffix(punct):
                return

    def _operand(self, token: Token, path: Path | None, depth: int) -> bool:
        if token.kind == "punct" and token.text in ("[", "{") and depth < _MAX_DEPTH:
            self.i += 1
            if token.text == "[":
                self.list_value(path, depth + 1)
            else:
                self.object_value(path, depth + 1)
        elif token.kind == "punct" and token.text in _OPENERS:
            self._skip_group()
        elif token.kind in ("name", "string", "heredoc", "number"):
            self.i += 1
            if token.kind == "name" and self._at("("):
                self._skip_group()  # function call
        else:
            return False
        return True

    def _suffix(self, punct: str) -> bool:
        """Attribute access, index or splat after an operand; False when the expression ends."""
        if punct == ".":
            self.i += 1
            token = self._peek()
            if token is not None and (token.kind in ("name", "number") or token.text == "*"):
                self.i += 1
            return True
        if punct == "[":
            self._skip_group()
            return True
        return False

    def list_value(self, path: Path | None, depth: int) -> None:
        index = 0
        while True:
            self._skip_newlines()
            token = self._peek()
            if token is None:
                return
            if self._at("]"):
                self.i += 1
                return
            if index == 0 and self._is_for(token):
                self._skip_until_close()
                return
            element = None if path is None else (*path, index)
            self._record(element, token)
            self.expression(element, depth)
            self._skip_newlines()
            if not self._at(","):
                self._skip_until_close()
                return
            self.i += 1
            index += 1

    def object_value(self, path: Path | None, depth: int) -> None:
        keys: dict[str, Position] = {}
        while True:
            while self._at(",") or (
                (token := self._peek()) is not None and token.kind == "newline"
            ):
                self.i += 1
            token = self._peek()
            if token is None:
                return
            if self._at("}"):
                self.i += 1
                return
            if not self._object_item(token, path, depth, keys):
                self._skip_until_close()
                return

    def _object_item(
        self, token: Token, path: Path | None, depth: int, keys: dict[str, Position]
    ) -> bool:
        if not keys and self._is_for(token):
            return False
        key: str | None = None
        if token.kind in ("name", "string", "number"):
            key = unquote_label(token.text)
            self.i += 1
        elif token.kind == "punct" and token.text == "(":
            self._skip_group()
        else:
            return False
        if not self._at("=", ":"):
            return False
        self.i += 1
        key_path = None if path is None or key is None else (*path, key)
        if key is not None and key in keys and key_path is not None:
            self._duplicate(key_path, token, f'key "{key}" is set twice', keys[key])
        elif key is not None:
            keys[key] = self._position(token)
        self._record(key_path, token)
        self.expression(key_path, depth)
        return True


def scan_source(text: str, *, filename: str, list_fields: frozenset[str]) -> SourceScan:
    """Scan ``text`` (BOM already removed). ``list_fields`` are block names kept as lists.

    Never raises; on input it cannot follow, positions are simply missing.
    """
    lexer = _Lexer(text)
    lexer.run()
    structure = _Structure(lexer.tokens, filename, list_fields)
    structure.body((), 0, nested=False)
    return SourceScan(
        sources=structure.sources,
        problems=tuple(structure.problems),
        headers=structure.headers,
        protected=_protect(text, lexer.spans),
    )
