"""The base Struct and constrained aliases shared by every config schema module.

Ring 0: type definitions only. Policy (DESIGN.md §3.2): every config block is a frozen,
keyword-only msgspec Struct that forbids unknown fields; sequences are tuples so a snapshot is
immutable all the way down. Labelled blocks are plain ``dict`` maps keyed by their label: they
are never mutated after loading, and ``Block.__hash__`` hashes a frozen view of the tree so that
structs holding such maps are still hashable. Must not: read files, touch the environment, or
perform cross-field checks (those live in ``semantic.py`` so that all problems are reported).
"""

from __future__ import annotations

from typing import Annotated, TypeAlias

import msgspec

from a3s_gateway.config.values import HEADER_NAME_PATTERN


class Block(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config block: frozen, keyword-only, unknown fields rejected.

    msgspec applies ``kw_only`` per class and mypy's dataclass view wants ``frozen`` stated
    again, so every subclass repeats ``frozen=True, kw_only=True``.
    """

    def __hash__(self) -> int:
        # Frozen structs hash their fields, which fails on the label maps. Hash a frozen view
        # instead, built from the values themselves so it agrees with ``__eq__`` (``50 == 50.0``
        # and ``Duration("60s") == Duration("1m")`` must hash alike; encodings would not).
        return hash(_frozen(self))


def _frozen(value: object) -> object:
    if isinstance(value, msgspec.Struct):
        fields = value.__struct_fields__
        return (type(value), tuple(_frozen(getattr(value, name)) for name in fields))
    if isinstance(value, dict):
        return frozenset((key, _frozen(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


PositiveInt: TypeAlias = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]
Port: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Percent: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=100)]
StatusCode: TypeAlias = Annotated[int, msgspec.Meta(ge=100, le=599)]
HeaderName: TypeAlias = Annotated[str, msgspec.Meta(pattern=HEADER_NAME_PATTERN)]
NonEmptyStr: TypeAlias = Annotated[str, msgspec.Meta(min_length=1)]
Names: TypeAlias = tuple[str, ...]
