"""HCL text → plain, normalised Python builtins, a source-position table and problems (SPEC §3.2).

Ring 0: synchronous and pure; the caller reads the file and hands over its text. This module
runs python-hcl2 (pinned 8.1.4; its output shapes are pinned by ``tests/config/test_hcl.py``)
and reshapes what it returns: labelled blocks become ``label → body`` maps, unlabelled blocks
become one object (or a list, for the names in ``LIST_BLOCK_FIELDS``), quoted strings lose
their quotes and have their HCL escapes decoded, expressions are rejected. Positions and
duplicate attributes come from ``hcl_scan``, template protection and escapes from ``hcl_lex``,
and the wording of a failed parse from ``hcl_errors``.

Must not: interpolate ``${…}`` (the text is left verbatim for ``interpolate.py``), know the
schema beyond ``LIST_BLOCK_FIELDS``, read files, or let any exception from python-hcl2 escape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

import hcl2
from hcl2.utils import SerializationOptions

from a3s_gateway.config.hcl_errors import parse_failure
from a3s_gateway.config.hcl_lex import ProtectedText, decode_escapes
from a3s_gateway.config.hcl_scan import SourceScan, scan_source
from a3s_gateway.config.problems import (
    Path,
    Position,
    Problem,
    SourceMap,
    format_path,
    make_problem,
    sort_problems,
)

__all__ = ["LIST_BLOCK_FIELDS", "ParsedFile", "parse_hcl"]

#: Block names kept as lists: repeated blocks and an attribute list of objects are equivalent.
LIST_BLOCK_FIELDS: Final = frozenset({"servers", "revisions", "seeds", "certificates"})

EXPRESSION_MESSAGE: Final = (
    'expressions are not supported; write a quoted string (use "${NAME}" for environment variables)'
)

_OPTIONS: Final = SerializationOptions(
    strip_string_quotes=False,
    explicit_blocks=True,
    with_comments=False,
    preserve_heredocs=False,
    preserve_scientific_notation=False,
)
_BLOCK_MARKER: Final = "__is_block__"
_BOM: Final = "\ufeff"

#: A python-hcl2 table after narrowing: its keys are strings, its values anything it emits.
_RawTable: TypeAlias = dict[object, object]
#: A block as python-hcl2 emits it: its labels (still quoted when quoted) and its body.
_RawBlock: TypeAlias = tuple[tuple[str, ...], _RawTable]


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """One parsed file: normalised data, where things are, and what is wrong."""

    data: dict[str, object]
    sources: SourceMap
    problems: tuple[Problem, ...]
    ok: bool


def parse_hcl(text: str, *, filename: str) -> ParsedFile:
    """Parse and normalise one HCL file. Never raises.

    ``ok`` is False when the text could not be parsed at all; then ``data`` is empty and
    ``problems`` explains why (one syntax error with line and column where python-hcl2 gave
    them). Otherwise every problem found while normalising is listed and the offending keys are
    left out of ``data``. ``null`` values are kept as ``None`` ("use the default").
    """
    text = text.removeprefix(_BOM)
    scan = _scan(text, filename)
    raw = _run_python_hcl2(scan.protected.text)
    if isinstance(raw, Exception):
        problems = parse_failure(raw, text, filename, scan.problems)
        return ParsedFile({}, scan.sources, problems, ok=False)
    normaliser = _Normaliser(filename, scan)
    try:
        data = normaliser.body(raw, ())
    except RecursionError:
        normaliser.error((), "the file nests values too deeply")
        data = {}
    problems = sort_problems([*scan.problems, *normaliser.problems])
    return ParsedFile(data, scan.sources, problems, ok=True)


def _scan(text: str, filename: str) -> SourceScan:
    try:
        return scan_source(text, filename=filename, list_fields=LIST_BLOCK_FIELDS)
    except Exception:  # pragma: no cover - the scanner is tolerant by design; this is a backstop
        # Positions are best effort: without them problems still name the file and path.
        return SourceScan(SourceMap(), (), {}, ProtectedText(text))


def _run_python_hcl2(text: str) -> _RawTable | Exception:
    """Call python-hcl2; any exception it raises is returned, never propagated."""
    try:
        loaded: object = hcl2.loads(text, serialization_options=_OPTIONS)
    except Exception as exc:  # python-hcl2 raises lark errors, RuntimeError and more
        return exc
    if not isinstance(loaded, dict):
        return TypeError(f"python-hcl2 returned {type(loaded).__name__}, not a table")
    return loaded


# --------------------------------------------------------------------------- normalising


class _Dropped:
    """Marks a value that was reported as a problem and is left out of the data."""


_DROPPED: Final = _Dropped()


def _block_form(entry: object) -> _RawBlock | None:
    """Labels and body if ``entry`` is how python-hcl2 emits a block, else None."""
    labels: list[str] = []
    current = entry
    while isinstance(current, dict):
        if current.get(_BLOCK_MARKER) is True:
            return tuple(labels), current
        if len(current) != 1:
            return None
        ((label, current),) = current.items()
        labels.append(str(label))
    return None


def _block_group(value: object) -> list[_RawBlock] | None:
    """All entries of a block name, or None when ``value`` is an attribute's value."""
    if not isinstance(value, list) or not value:
        return None
    blocks = [_block_form(entry) for entry in value]
    if any(block is None for block in blocks):
        return None
    return [block for block in blocks if block is not None]


def _is_quoted(raw: str) -> bool:
    return len(raw) >= 2 and raw[0] == '"' and raw[-1] == '"'


class _Normaliser:
    """Reshapes python-hcl2's output into the normalised tree, collecting problems."""

    def __init__(self, filename: str, scan: SourceScan) -> None:
        self.filename = filename
        self.scan = scan
        self.problems: list[Problem] = []

    def error(self, path: Path, message: str, at: Position | None = None) -> None:
        if at is None:
            problem = make_problem(
                "error", path, message, self.scan.sources, default_file=self.filename
            )
        else:
            problem = Problem(
                severity="error",
                file=at.file,
                line=at.line,
                column=at.column,
                path=format_path(path),
                message=message,
            )
        self.problems.append(problem)

    def _header(self, path: Path, occurrence: int) -> Position | None:
        positions = self.scan.headers.get(path, [])
        return positions[occurrence] if occurrence < len(positions) else None

    # -- bodies and blocks

    def body(self, raw: _RawTable, path: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for raw_key, value in raw.items():
            key = str(raw_key)
            if key == _BLOCK_MARKER:
                continue
            blocks = _block_group(value)
            if blocks is not None:
                self._blocks(key, blocks, path, out)
                continue
            result = self.value(value, (*path, key))
            if result is not _DROPPED:
                out[key] = result
        return out

    def _blocks(
        self, name: str, blocks: list[_RawBlock], path: Path, out: dict[str, object]
    ) -> None:
        label_counts = {len(labels) for labels, _ in blocks}
        if label_counts == {0}:
            self._unlabelled(name, [body for _, body in blocks], path, out)
        elif label_counts == {1}:
            out[name] = self._labelled(name, blocks, path)
        elif 0 in label_counts and 1 in label_counts:
            self.error((*path, name), f'block "{name}" is written both with and without a label')
        else:
            count = max(label_counts)
            self.error((*path, name), f'block "{name}" has {count} labels; at most one is allowed')

    def _unlabelled(
        self, name: str, bodies: list[_RawTable], path: Path, out: dict[str, object]
    ) -> None:
        if name in LIST_BLOCK_FIELDS:
            out[name] = [self.body(body, (*path, name, i)) for i, body in enumerate(bodies)]
            return
        out[name] = self.body(bodies[0], (*path, name))
        if len(bodies) > 1:
            at = self._header((*path, name), 1)
            self.error((*path, name), f'block "{name}" may appear only once', at)

    def _labelled(self, name: str, blocks: list[_RawBlock], path: Path) -> dict[str, object]:
        mapping: dict[str, object] = {}
        seen: dict[str, int] = {}
        for labels, body in blocks:
            label = self._literal(labels[0], (*path, name), "block label")
            if label is None:
                continue
            block_path = (*path, name, label)
            occurrence = seen.get(label, 0)
            seen[label] = occurrence + 1
            if occurrence == 0:
                mapping[label] = self.body(body, block_path)
                continue
            first = self._header(block_path, 0)
            also = f" (also at {first.file}:{first.line})" if first is not None else ""
            message = f'{name} "{label}" is defined twice{also}'
            self.error(block_path, message, self._header(block_path, occurrence))
        return mapping

    def _literal(self, raw: str, path: Path, what: str) -> str | None:
        """A label or object key: unquoted, decoded, restored, and free of ``${``."""
        if raw.startswith("${"):
            self.error(path, f"{what}: {EXPRESSION_MESSAGE}")
            return None
        text = self._decode(raw[1:-1], path) if _is_quoted(raw) else raw
        if text is None:
            return None
        if "${" in text:
            self.error(
                path, f'{what} "{text}" contains "${{": block labels and object keys are literal'
            )
            return None
        return text

    def _decode(self, inner: str, path: Path) -> str | None:
        try:
            decoded = decode_escapes(inner)
        except ValueError as exc:
            self.error(path, str(exc))
            return None
        return self.scan.protected.restore(decoded)

    # -- values

    def value(self, value: object, path: Path) -> object:
        """A normalised attribute value, or ``_DROPPED`` after reporting a problem."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, str):
            if not _is_quoted(value):
                self.error(path, EXPRESSION_MESSAGE)
                return _DROPPED
            decoded = self._decode(value[1:-1], path)
            return _DROPPED if decoded is None else decoded
        if isinstance(value, list):
            items = [self.value(item, (*path, i)) for i, item in enumerate(value)]
            # Dropping one element would shift the indices later problems report.
            return _DROPPED if any(item is _DROPPED for item in items) else items
        if isinstance(value, dict):
            return self._object(value, path)
        self.error(path, f"unsupported value of type {type(value).__name__}")
        return _DROPPED

    def _object(self, raw: _RawTable, path: Path) -> dict[str, object]:
        out: dict[str, object] = {}
        for raw_key, value in raw.items():
            if raw_key == _BLOCK_MARKER:
                continue
            key = self._literal(str(raw_key), path, "object key")
            if key is None or key in out:  # a repeated key is reported by the scanner
                continue
            result = self.value(value, (*path, key))
            if result is not _DROPPED:
                out[key] = result
        return out
