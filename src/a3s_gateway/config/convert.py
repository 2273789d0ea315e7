"""Schema conversion that reports every problem, not just the first (SPEC §3.1 step 4, §3.4).

Ring 0: pure. ``msgspec.convert`` stops at the first error and names dict entries ``[...]``.
This module runs it in a *repair loop*: convert; on a ``ValidationError`` resolve the error's
path against the data (finding which label a ``[...]`` stands for by converting each entry on
its own), record one problem in the user's words, remove the offending element, and convert
again, until the data converts. Removing elements keeps later errors meaningful; list indices
are mapped back to the user's original positions. Blocks that had to be removed entirely are
returned as *broken* so semantic checks do not also report references to them.

Values that were exactly one ``${VAR}`` interpolation are converted strictly to the integer,
number or bool the field wants (SPEC §3.3.1) when msgspec asks for one.

Must not: raise on any input (bounded by ``MAX_REPAIRS``), or echo secret values in messages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final, get_args, get_origin

import msgspec

from a3s_gateway.config.annotations import (
    field_names,
    field_type,
    find_failing_key,
    item_type,
    resolve_member,
    struct_type,
    value_type,
)
from a3s_gateway.config.interpolate import coerce_scalar
from a3s_gateway.config.problems import Path, PathPart, Problem, SourceMap, make_problem
from a3s_gateway.config.schema import LABELLED_SECTIONS, Config
from a3s_gateway.config.schema_messages import translate
from a3s_gateway.config.schema_middlewares import MIDDLEWARE_TYPES
from a3s_gateway.config.suggest import did_you_mean
from a3s_gateway.config.values import dec_hook

MAX_REPAIRS: Final = 500
_ERROR_AT = re.compile(
    r"^(?P<message>.*?)(?: - at (?P<key>`key` in )?`(?P<path>\$[^`]*)`)?$", re.DOTALL
)
_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+|\.\.\.)\]")
_NON_GOALS: Final = {
    "docker": "the docker provider is not supported (not a goal of a3s_gateway, SPEC §1.3)",
}


@dataclass(slots=True)
class ConversionResult:
    """The converted config (``None`` only if the root itself is unusable) and what was wrong."""

    config: Config | None
    problems: list[Problem] = field(default_factory=list)
    #: ``(section, label)`` of labelled blocks removed because they could not be converted.
    broken: set[tuple[str, str]] = field(default_factory=set)
    #: Paths of whole ``${VAR}`` strings converted to an int, float or bool.
    coerced: set[Path] = field(default_factory=set)


@dataclass(slots=True)
class _Located:
    """An error's target: the container holding it, its key there, and both path spellings."""

    parent: dict[str, object] | list[object] | None
    key: PathPart | None
    current: Path
    original: Path
    field_type: object


class _Repairer:
    """One repair loop over one data tree (mutated in place)."""

    def __init__(
        self, data: dict[str, object], sources: SourceMap, default_file: str, whole: frozenset[Path]
    ) -> None:
        self.data = data
        self.sources = sources
        self.default_file = default_file
        self.whole = whole
        self.result = ConversionResult(config=None)
        self.index_maps: dict[int, tuple[list[object], list[int]]] = {}
        self.removed: set[tuple[int, PathPart]] = set()

    def drop(self, paths: frozenset[Path]) -> None:
        """Remove values already reported by an earlier stage (e.g. interpolation errors).

        Deepest and last list items go first so earlier indices stay valid.
        """
        for path in sorted(paths, key=_sort_key, reverse=True):
            located = self._locate([str(part) for part in path])
            if located is not None:
                self._remove(located)

    def run(self) -> ConversionResult:
        for _ in range(MAX_REPAIRS):
            try:
                self.result.config = msgspec.convert(self.data, Config, dec_hook=dec_hook)
            except msgspec.ValidationError as error:
                if not self._repair(str(error)):
                    self._problem((), f"invalid configuration: {error}")
                    return self.result
            else:
                return self.result
        self._problem((), f"too many problems: stopped after {MAX_REPAIRS}")
        return self.result

    def _problem(self, path: Path, message: str) -> None:
        self.result.problems.append(
            make_problem("error", path, message, self.sources, default_file=self.default_file)
        )

    # -- one error -------------------------------------------------------------------------

    def _repair(self, text: str) -> bool:
        matched = _ERROR_AT.match(text)
        assert matched is not None  # the pattern accepts every string
        message, raw_path = matched["message"], matched["path"] or "$"
        located = self._locate([m[1] or m[2] for m in _PATH_PART.finditer(raw_path)])
        if located is None:
            return False
        if matched["key"]:
            return self._bad_key(located, message)
        unknown = re.fullmatch(r"Object contains unknown field `(.+)`", message)
        if unknown is not None:
            return self._unknown_field(located, unknown[1])
        missing = re.fullmatch(r"Object missing required field `(.+)`", message)
        if missing is not None:
            return self._missing_field(located, missing[1])
        if message.startswith("Invalid value ") and located.key == "type":
            return self._bad_tag(located, message)
        if self._coerce(located, message):
            return True
        self._problem(located.original, translate(message, located.field_type))
        return self._remove(located)

    def _container(self, located: _Located) -> object:
        return self.data if located.current == () else _value_at(located)

    def _unknown_field(self, located: _Located, name: str) -> bool:
        container = self._container(located)
        if not isinstance(container, dict) or name not in container:
            return False
        self._problem((*located.original, name), self._unknown_message(located, name, container))
        del container[name]
        return True

    def _unknown_message(self, located: _Located, name: str, container: dict[str, object]) -> str:
        if name in _NON_GOALS and located.original == ("providers",):
            return _NON_GOALS[name]
        struct = struct_type(located.field_type, container)
        kind = "block" if isinstance(container[name], dict) else "field"
        if struct is not None and struct.__struct_config__.tag_field == "type":
            tag = struct.__struct_config__.tag
            accepted = ", ".join(field_names(struct))
            for other, other_type in MIDDLEWARE_TYPES.items():
                if other != tag and name in field_names(other_type):
                    return (
                        f'field "{name}" does not apply to middleware type "{tag}" '
                        f'(it belongs to "{other}"; "{tag}" accepts: {accepted})'
                    )
        known = field_names(struct) if struct is not None else ()
        return f'unknown {kind} "{name}"{did_you_mean(name, known)}'

    def _bad_key(self, located: _Located, message: str) -> bool:
        """An invalid map key (e.g. a header name in ``request_headers``): drop that entry."""
        container = self._container(located)
        resolved = resolve_member(located.field_type, container)
        if not isinstance(container, dict) or get_origin(resolved) is not dict:
            return False
        key_type = get_args(resolved)[0]
        for key in container:
            try:
                msgspec.convert(key, key_type, dec_hook=dec_hook)
            except msgspec.ValidationError:
                self._problem((*located.original, key), translate(message, key_type))
                del container[key]
                return True
        return False

    def _missing_field(self, located: _Located, name: str) -> bool:
        container = self._container(located)
        if located.current == () or not isinstance(container, dict):
            self._problem(located.original, f'missing required field "{name}"')
            return False
        if (id(container), name) not in self.removed:
            self._problem(located.original, f'missing required field "{name}"')
        self._mark_broken(located.original)
        return self._remove(located)

    def _bad_tag(self, located: _Located, message: str) -> bool:
        value = message.removeprefix("Invalid value ").strip("'")
        choices = ", ".join(MIDDLEWARE_TYPES)
        self._problem(
            located.original, f'unknown middleware type "{value}" (expected one of: {choices})'
        )
        block = self._locate_parent(located)
        if block is None:
            return False
        self._mark_broken(block.original)
        return self._remove(block)

    def _coerce(self, located: _Located, message: str) -> bool:
        wanted = re.fullmatch(r"Expected `(int|float|bool)(?: \| null)?`, got `str`", message)
        if wanted is None or located.original not in self.whole or located.parent is None:
            return False
        value = _value_at(located)
        assert isinstance(value, str)
        target = {"int": int, "float": float, "bool": bool}[wanted[1]]
        try:
            converted = coerce_scalar(value, target)
        except ValueError as error:
            self._problem(located.original, str(error))
            return self._remove(located)
        self.whole = self.whole - {located.original}
        self.result.coerced.add(located.original)
        _assign(located, converted)
        return True

    def _mark_broken(self, original: Path) -> None:
        if len(original) == 2 and original[0] in LABELLED_SECTIONS and isinstance(original[1], str):
            self.result.broken.add((str(original[0]), original[1]))

    def _remove(self, located: _Located) -> bool:
        parent, key = located.parent, located.key
        if isinstance(parent, dict) and isinstance(key, str) and key in parent:
            del parent[key]
            self.removed.add((id(parent), key))
            return True
        if isinstance(parent, list) and isinstance(key, int) and 0 <= key < len(parent):
            kept, originals = self.index_maps.setdefault(
                id(parent), (parent, list(range(len(parent))))
            )
            assert kept is parent
            del parent[key]
            del originals[key]
            return True
        return False

    # -- paths -----------------------------------------------------------------------------

    def _locate(self, parts: list[str]) -> _Located | None:
        node: object = self.data
        tp: object = Config
        located = _Located(None, None, (), (), Config)
        for part in parts:
            step = self._step(node, tp, part)
            if step is None:
                return None
            key, original_key, child_tp = step
            assert isinstance(node, dict | list)
            located = _Located(
                node,
                key,
                (*located.current, key),
                (*located.original, original_key),
                child_tp,
            )
            node = node[key] if isinstance(node, dict) else node[int(key)]
            tp = child_tp
        return located

    def _locate_parent(self, located: _Located) -> _Located | None:
        return self._locate([str(part) for part in located.current[:-1]])

    def _step(
        self, node: object, tp: object, part: str
    ) -> tuple[PathPart, PathPart, object] | None:
        if isinstance(node, list) and part.isdigit():
            index = int(part)
            if index >= len(node):
                return None
            maps = self.index_maps.get(id(node))
            original = maps[1][index] if maps is not None else index
            return index, original, item_type(tp, node[index])
        if not isinstance(node, dict):
            return None
        if part == "...":
            value_tp = value_type(tp, node)
            key = find_failing_key(node, value_tp)
            return None if key is None else (key, key, resolve_member(value_tp, node[key]))
        if part not in node:
            return None
        return part, part, resolve_member(field_type(tp, node, part), node[part])


def convert_config(
    data: dict[str, object],
    sources: SourceMap,
    *,
    default_file: str,
    whole: frozenset[Path],
    reported: frozenset[Path] = frozenset(),
) -> ConversionResult:
    """Convert normalised, interpolated data into ``Config``, collecting every schema problem.

    ``reported`` are paths an earlier stage already reported: their values are removed first
    and a required field missing because of that is not reported again. ``data`` itself is
    not changed (repairs work on a copy). Never raises.
    """
    repairer = _Repairer(_with_lists(data), sources, default_file, whole)
    repairer.drop(reported)
    return repairer.run()


def _sort_key(path: Path) -> tuple[tuple[int, int, str], ...]:
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in path)


def _with_lists(data: dict[str, object]) -> dict[str, object]:
    """Tuples (e.g. from ``msgspec.to_builtins``) become lists, so repairs can remove items."""

    def walk(node: object) -> object:
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list | tuple):
            return [walk(item) for item in node]
        return node

    converted = walk(data)
    assert isinstance(converted, dict)
    return converted


def _value_at(located: _Located) -> object:
    parent, key = located.parent, located.key
    if isinstance(parent, dict) and isinstance(key, str):
        return parent.get(key)
    if isinstance(parent, list) and isinstance(key, int) and key < len(parent):
        return parent[key]
    return None


def _assign(located: _Located, value: object) -> None:
    parent, key = located.parent, located.key
    # Two branches, not one `or`: each narrows the key to its container's index type.
    if isinstance(parent, dict) and isinstance(key, str):  # noqa: SIM114
        parent[key] = value
    elif isinstance(parent, list) and isinstance(key, int):
        parent[key] = value
