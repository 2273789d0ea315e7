"""Config problems: the one value every loading step reports (SPEC §2.3, §3.4).

Ring 0: pure data and formatting; no I/O. Every stage of the config pipeline (HCL parsing,
normalising, interpolation, schema conversion, semantic checks, environment checks) returns
``Problem`` values instead of raising, so that a bad config is reported whole. This module also
owns the *path* vocabulary shared by those stages and its rendering as
``routers["api"].middlewares[1]``.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

import msgspec

#: One step into the config tree: a field or map key (``str``) or a list index (``int``).
PathPart: TypeAlias = str | int
#: A location in the normalised config tree, e.g. ``("routers", "api", "middlewares", 1)``.
Path: TypeAlias = tuple[PathPart, ...]

Severity: TypeAlias = Literal["error", "warning"]

#: Fields whose value is a map keyed by user-chosen names: the part after one of these in a path
#: is a label or key and is rendered in brackets (``routers["api"]``), not as ``.field``.
MAP_FIELDS: Final = frozenset(
    {
        "entrypoints",
        "routers",
        "tcp_routers",
        "udp_routers",
        "services",
        "middlewares",
        "channels",
        "request_headers",
        "response_headers",
        "claims_headers",
        "headers",
        "env",
    }
)


class Position(msgspec.Struct, frozen=True):
    """Where an element starts in a source file (1-based line and column)."""

    file: str
    line: int
    column: int | None = None


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One config error or warning, ready to print (SPEC §2.3)."""

    severity: Severity
    file: str
    line: int | None
    column: int | None
    path: str
    message: str

    def format(self) -> str:
        """Render as ``<file>:<line>[:<col>]: <severity>: <path>: <message>``."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where}: {self.severity}: {self.path}: {self.message}"
        return f"{where}: {self.severity}: {self.message}"

    def sort_key(self) -> tuple[str, int, int, str]:
        """File, then line (unknown lines last), then column, then path."""
        return (
            self.file,
            self.line if self.line is not None else 1 << 30,
            self.column or 0,
            self.path,
        )


def format_path(path: Path) -> str:
    """Render a path the way users read it: ``services["api"].load_balancer.servers[0].url``."""
    out: list[str] = []
    previous: PathPart | None = None
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif isinstance(previous, str) and previous in MAP_FIELDS and not _is_map_field_value(out):
            out.append(f'["{part}"]')
        elif out:
            out.append(f".{part}")
        else:
            out.append(part)
        previous = part
    return "".join(out)


def _is_map_field_value(rendered: list[str]) -> bool:
    # A map field's name rendered as a key (``routers["headers"]``) is a label, not a field,
    # so the part after it is a field again.
    return bool(rendered) and rendered[-1].startswith('["')


class SourceMap:
    """Positions of elements by path, filled by the HCL scanner, read by every later stage.

    ``locate(path)`` answers with the innermost known element on that path, so a problem deep
    inside a value still points at the attribute or block that holds it.
    """

    __slots__ = ("_positions",)

    def __init__(self) -> None:
        self._positions: dict[Path, Position] = {}

    def add(self, path: Path, position: Position) -> None:
        """Record a position; the first one recorded for a path wins."""
        self._positions.setdefault(path, position)

    def get(self, path: Path) -> Position | None:
        """The position recorded for exactly this path."""
        return self._positions.get(path)

    def update(self, other: SourceMap) -> None:
        """Merge another file's positions; existing entries win."""
        for path, position in other._positions.items():
            self._positions.setdefault(path, position)

    def locate(self, path: Path) -> Position | None:
        """The position of the longest prefix of ``path`` that has one."""
        for end in range(len(path), 0, -1):
            found = self._positions.get(path[:end])
            if found is not None:
                return found
        return None

    def __len__(self) -> int:
        return len(self._positions)


def make_problem(
    severity: Severity,
    path: Path,
    message: str,
    sources: SourceMap,
    *,
    default_file: str,
) -> Problem:
    """Build a problem located through ``sources`` (innermost known element on ``path``)."""
    position = sources.locate(path)
    return Problem(
        severity=severity,
        file=position.file if position is not None else default_file,
        line=position.line if position is not None else None,
        column=position.column if position is not None else None,
        path=format_path(path),
        message=message,
    )


def sort_problems(problems: list[Problem]) -> tuple[Problem, ...]:
    """Problems in output order (SPEC §2.3: by file, then line), duplicates removed."""
    unique = dict.fromkeys(problems)
    return tuple(sorted(unique, key=Problem.sort_key))
