"""Environment interpolation of config strings (SPEC §3.3.1).

Ring 0: pure string work over an ``env`` mapping passed in; no ``os.environ`` here (the loader
chooses the environment), no trio, sockets or clocks.

The only expressions are ``${NAME}`` and ``${NAME:-default}``; ``$${`` and ``%%{`` escape
``${`` and ``%{``; an unescaped ``%{`` (an HCL template directive) and every other ``${…}`` are
errors. Substituted text is never scanned again, so an environment value cannot inject an
expression. ``interpolate_tree`` also notes where substituted values landed: every value is a
secret (SPEC §14.4) unless its variable is public (``public_env``) or the string is a file path
field; ``config/redaction.py`` hides them wherever the config is shown.

Must not: evaluate anything but variable names (no ``eval``, no ``str.format``), interpolate
keys (labels, attribute names and object keys are literal), or raise from ``interpolate_tree``
(it collects one problem per string value instead).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, overload

from a3s_gateway.config.problems import MAP_FIELDS
from a3s_gateway.config.values import quote_value

if TYPE_CHECKING:
    from collections.abc import Collection, Mapping

    from a3s_gateway.config.problems import Path

_TOKEN: Final = re.compile(r"\$\$\{|\$\{|%%\{|%\{")
_EXPRESSION: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?")
_WHOLE: Final = re.compile(r"\$\{[^}]*\}")
_DIRECTIVE: Final = 'template directives ("%{") are not supported; write "%%{" for a literal "%{"'
_KEY_EXPRESSION: Final = (
    '"${" is not allowed in block labels, attribute names or object keys; they are literal'
)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """``text`` with ``${NAME}`` and ``${NAME:-default}`` replaced from ``env``.

    Raises ``ValueError`` with a SPEC §2.3 message at the first problem: an unset variable, an
    unsupported or unterminated expression, or an unescaped ``%{``.
    """
    if "$" not in text and "%" not in text:
        return text
    return "".join(piece for piece, _ in _pieces(text, env))


def _pieces(text: str, env: Mapping[str, str]) -> list[tuple[str, str | None]]:
    """``text`` interpolated, as pieces: (the file's text, ``None``) or (a substituted value,
    the variable's name). Raises ``ValueError`` as ``interpolate`` does."""
    out: list[tuple[str, str | None]] = []
    pos = 0
    while (token := _TOKEN.search(text, pos)) is not None:
        out.append((text[pos : token.start()], None))
        pos = token.end()
        match token.group():
            case "$${":
                out.append(("${", None))
            case "%%{":
                out.append(("%{", None))
            case "%{":
                raise ValueError(_DIRECTIVE)
            case _:
                end = text.find("}", pos)
                if end < 0:
                    fragment = quote_value(text[token.start() :], limit=40)
                    raise ValueError(f'unterminated expression {fragment}: expected "}}"')
                out.append(_substitute(text[token.start() : end + 1], env))
                pos = end + 1
    out.append((text[pos:], None))
    return out


def _substitute(expression: str, env: Mapping[str, str]) -> tuple[str, str]:
    """The value of one ``${…}`` (``expression`` includes ``${`` and ``}``) and the name."""
    match = _EXPRESSION.fullmatch(expression, 2, len(expression) - 1)
    if match is None or "${" in (match[2] or ""):  # a default is literal: no nesting
        raise ValueError(
            f"unsupported expression {quote_value(expression)}: "
            "only ${NAME} and ${NAME:-default} are supported"
        )
    name, default = match[1], match[2]
    value = env.get(name)
    if default is not None:
        return value or default, name
    if value is None:
        raise ValueError(f"environment variable {name} is not set")
    return value, name


@dataclass(frozen=True, slots=True)
class Substituted:
    """A string that received secret text (SPEC §14.4): where it is, the values substituted
    into it, and the text around them (the file's own text and public variables' values)."""

    path: Path
    values: tuple[str, ...]
    shown: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class InterpolationResult:
    """The interpolated tree and what happened on the way.

    ``data`` has the input's shape (a string that failed keeps its text); ``errors`` holds
    (path, message) pairs, at most one per string value; ``whole`` holds the paths of strings
    that were exactly one successful ``${…}``, which a later stage may convert strictly to an
    int, float or bool (``coerce_scalar``); ``substituted`` lists the strings that received
    secret text: every non-empty value of a variable not named in ``public``, except in file
    path fields (``FILE_PATH_FIELDS``).
    """

    data: object
    errors: tuple[tuple[Path, str], ...]
    whole: frozenset[Path]
    substituted: tuple[Substituted, ...] = ()

    def secrets(self, *, besides: frozenset[Path] = frozenset()) -> frozenset[str]:
        """The secret values, except those of the strings at ``besides`` (values that filled
        a number or bool field: the loader's choice, SPEC §14.4)."""
        return frozenset(
            value for item in self.substituted if item.path not in besides for value in item.values
        )


def interpolate_tree(
    data: object, env: Mapping[str, str], *, public: Collection[str] = ()
) -> InterpolationResult:
    """Interpolate every string value in nested dicts, lists and tuples; never raises.

    ``public``: names of variables whose values are not secrets (``public_env``).
    """
    walker = _TreeWalker(env, frozenset(public))
    result = walker.walk(data, ())
    return InterpolationResult(
        result, tuple(walker.errors), frozenset(walker.whole), tuple(walker.substituted)
    )


#: Fields that hold file paths, besides every ``*_file`` field: their interpolated text is not
#: secret (``${CERT_DIR}/cert.pem`` stays readable in ``/config`` and in problems).
FILE_PATH_FIELDS: Final = frozenset(
    {"directory", "access_log_path", "acme_storage_path", "kubeconfig", "cwd"}
)


def is_file_path(path: Path) -> bool:
    """Whether ``path`` names a file path field (not a key of a map such as ``env``)."""
    if not path or not isinstance(path[-1], str):
        return False
    name = path[-1]
    in_map = len(path) >= 2 and path[-2] in MAP_FIELDS
    return not in_map and (name.endswith("_file") or name in FILE_PATH_FIELDS)


class _TreeWalker:
    __slots__ = ("env", "errors", "public", "substituted", "whole")

    def __init__(self, env: Mapping[str, str], public: frozenset[str]) -> None:
        self.env = env
        self.public = public
        self.errors: list[tuple[Path, str]] = []
        self.whole: list[Path] = []
        self.substituted: list[Substituted] = []

    def walk(self, node: object, path: Path) -> object:
        match node:
            case str():
                return self._string(node, path)
            case dict():
                return self._mapping(node, path)
            case list():
                return [self.walk(item, (*path, index)) for index, item in enumerate(node)]
            case tuple():
                return tuple(self.walk(item, (*path, index)) for index, item in enumerate(node))
            case _:
                return node

    def _mapping(self, node: dict[object, object], path: Path) -> dict[object, object]:
        out: dict[object, object] = {}
        for key, value in node.items():
            key_path = (*path, key if isinstance(key, str | int) else repr(key))
            if isinstance(key, str) and "${" in key:
                self.errors.append((key_path, _KEY_EXPRESSION))
            out[key] = self.walk(value, key_path)
        return out

    def _string(self, text: str, path: Path) -> str:
        if "$" not in text and "%" not in text:
            return text
        try:
            pieces = _pieces(text, self.env)
        except ValueError as error:
            self.errors.append((path, str(error)))
            return text
        if _WHOLE.fullmatch(text) is not None:
            self.whole.append(path)
        if not is_file_path(path):
            self._note_secrets(pieces, path)
        return "".join(piece for piece, _ in pieces)

    def _note_secrets(self, pieces: list[tuple[str, str | None]], path: Path) -> None:
        values: list[str] = []
        shown: list[str] = [""]
        for piece, name in pieces:
            if name is None or name in self.public or not piece:
                shown[-1] += piece
            else:
                values.append(piece)
                shown.append("")
        if values:
            kept = tuple(text for text in shown if text)
            self.substituted.append(Substituted(path, tuple(values), kept))


_INTEGER: Final = re.compile(r"-?[0-9]+")
_DECIMAL: Final = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")


@overload
def coerce_scalar(text: str, target: type[bool]) -> bool: ...
@overload
def coerce_scalar(text: str, target: type[int]) -> int: ...
@overload
def coerce_scalar(text: str, target: type[float]) -> float: ...
def coerce_scalar(text: str, target: type[int] | type[float] | type[bool]) -> int | float | bool:
    """Convert an interpolated string strictly for an integer, number or bool field.

    Integers are ``-?[0-9]+``, numbers are decimal (an integer literal is a number too, and an
    exponent is allowed), bools are ``true``/``false``. Raises ``ValueError`` otherwise.
    """
    shown = quote_value(text)
    if target is bool:
        if text in ("true", "false"):
            return text == "true"
        raise ValueError(f"expected true or false, got {shown}")
    if target is int:
        if _INTEGER.fullmatch(text) is not None and len(text) <= 64:
            return int(text)
        raise ValueError(f"expected an integer, got {shown}")
    if target is float:
        if _DECIMAL.fullmatch(text) is not None and math.isfinite(value := float(text)):
            return value
        raise ValueError(f"expected a number, got {shown}")
    raise TypeError(f"coerce_scalar converts to int, float or bool, not {target!r}")
