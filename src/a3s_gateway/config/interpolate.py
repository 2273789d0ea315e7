"""Environment interpolation of config strings (SPEC §3.3.1).

Ring 0: pure string work over an ``env`` mapping passed in; no ``os.environ`` here (the loader
chooses the environment), no trio, sockets or clocks.

The only expressions are ``${NAME}`` and ``${NAME:-default}``; ``$${`` and ``%%{`` escape
``${`` and ``%{``; an unescaped ``%{`` (an HCL template directive) and every other ``${…}`` are
errors. Substituted text is never scanned again, so an environment value cannot inject an
expression.

Must not: evaluate anything but variable names (no ``eval``, no ``str.format``), interpolate
keys (labels, attribute names and object keys are literal), or raise from ``interpolate_tree``
(it collects one problem per string value instead).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, overload

from a3s_gateway.config.values import quote_value

if TYPE_CHECKING:
    from collections.abc import Mapping

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
    out: list[str] = []
    pos = 0
    while (token := _TOKEN.search(text, pos)) is not None:
        out.append(text[pos : token.start()])
        pos = token.end()
        match token.group():
            case "$${":
                out.append("${")
            case "%%{":
                out.append("%{")
            case "%{":
                raise ValueError(_DIRECTIVE)
            case _:
                end = text.find("}", pos)
                if end < 0:
                    fragment = quote_value(text[token.start() :], limit=40)
                    raise ValueError(f'unterminated expression {fragment}: expected "}}"')
                out.append(_substitute(text[token.start() : end + 1], env))
                pos = end + 1
    out.append(text[pos:])
    return "".join(out)


def _substitute(expression: str, env: Mapping[str, str]) -> str:
    """The value of one ``${…}`` (``expression`` includes ``${`` and ``}``)."""
    match = _EXPRESSION.fullmatch(expression, 2, len(expression) - 1)
    if match is None or "${" in (match[2] or ""):  # a default is literal: no nesting
        raise ValueError(
            f"unsupported expression {quote_value(expression)}: "
            "only ${NAME} and ${NAME:-default} are supported"
        )
    name, default = match[1], match[2]
    value = env.get(name)
    if default is not None:
        return value or default
    if value is None:
        raise ValueError(f"environment variable {name} is not set")
    return value


@dataclass(frozen=True, slots=True)
class InterpolationResult:
    """The interpolated tree and what happened on the way.

    ``data`` has the input's shape (a string that failed keeps its text); ``errors`` holds
    (path, message) pairs, at most one per string value; ``whole`` holds the paths of strings
    that were exactly one successful ``${…}``, which a later stage may convert strictly to an
    int, float or bool (``coerce_scalar``).
    """

    data: object
    errors: tuple[tuple[Path, str], ...]
    whole: frozenset[Path]
    #: Strings produced by interpolating a variable whose name marks a secret (SPEC §14.4:
    #: ``SECRET``, ``TOKEN``, ``PASSWORD``, ``PASSWD``, ``KEY``, ``CREDENTIAL``).
    secrets: frozenset[str] = frozenset()


def interpolate_tree(data: object, env: Mapping[str, str]) -> InterpolationResult:
    """Interpolate every string value in nested dicts, lists and tuples; never raises."""
    walker = _TreeWalker(env)
    result = walker.walk(data, ())
    return InterpolationResult(
        result, tuple(walker.errors), frozenset(walker.whole), frozenset(walker.secrets)
    )


#: A variable reference whose name marks its value as a secret (SPEC §14.4).
_SECRET_REFERENCE: Final = re.compile(
    r"\$\{[A-Za-z0-9_]*(?:SECRET|TOKEN|PASSWORD|PASSWD|KEY|CREDENTIAL)", re.IGNORECASE
)


class _TreeWalker:
    __slots__ = ("env", "errors", "secrets", "whole")

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.errors: list[tuple[Path, str]] = []
        self.whole: list[Path] = []
        self.secrets: set[str] = set()

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
        try:
            result = interpolate(text, self.env)
        except ValueError as error:
            self.errors.append((path, str(error)))
            return text
        if _WHOLE.fullmatch(text) is not None:
            self.whole.append(path)
        if result and _SECRET_REFERENCE.search(text) is not None:
            self.secrets.add(result)
        return result


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
