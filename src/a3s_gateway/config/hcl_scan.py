"""Structural scan of HCL source: positions of blocks, attributes and values, and duplicates.

Ring 0: pure functions over a ``str``; no I/O, no trio, sockets, TLS or clocks. python-hcl2 8.x
reports no positions for valid input and silently keeps the last of two equal attributes, so
this module walks the tokens of ``hcl_lex`` like HCL's grammar and records where every block
header, attribute, list element and object key starts, keyed by its path in the *normalised*
data. It also finds attributes and object keys set twice. ``scan_source`` hands back the
template-protected text from ``hcl_lex`` along with what it found.

Must not: raise on any input (positions are best effort; python-hcl2 is the authority on
syntax), know the config schema (list-typed block names are passed in), or interpret
``${…}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.hcl_lex import ProtectedText, lex, unquote_label
from a3s_gateway.config.problems import Path, Position, Problem, SourceMap, format_path

if TYPE_CHECKING:
    from a3s_gateway.config.hcl_lex import Token

_OPENERS: Final = {"(": ")", "[": "]", "{": "}"}
_BINARY: Final = frozenset({"+", "-", "*", "/", "%", "==", "!=", "<", ">", "<=", ">=", "&&", "||"})
#: Nesting beyond this is skipped without recording positions (keeps recursion bounded).
_MAX_DEPTH: Final = 64


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
    tokens, protected = lex(text)
    structure = _Structure(tokens, filename, list_fields)
    structure.body((), 0, nested=False)
    return SourceScan(
        sources=structure.sources,
        problems=tuple(structure.problems),
        headers=structure.headers,
        protected=protected,
    )
