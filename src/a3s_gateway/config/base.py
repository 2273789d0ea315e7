"""The base Struct and constrained aliases shared by every config schema module.

Ring 0: type definitions only. Policy (DESIGN.md §3.2): every config block is a frozen,
keyword-only msgspec Struct that forbids unknown fields; sequences are tuples so a snapshot is
immutable all the way down. Labelled blocks are plain ``dict`` maps keyed by their label: they
are never mutated after loading, and ``Block.__hash__`` hashes the canonical encoding so that
structs holding such maps are still hashable. Must not: read files, touch the environment, or
perform cross-field checks (those live in ``semantic.py`` so that all problems are reported).
"""

from __future__ import annotations

from typing import Annotated, Final, TypeAlias

import msgspec

from a3s_gateway.config.values import HEADER_NAME_PATTERN, enc_hook

_canonical: Final = msgspec.msgpack.Encoder(enc_hook=enc_hook, order="deterministic")


class Block(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every config block: frozen, keyword-only, unknown fields rejected.

    msgspec applies ``kw_only`` per class and mypy's dataclass view wants ``frozen`` stated
    again, so every subclass repeats ``frozen=True, kw_only=True``.
    """

    def __hash__(self) -> int:
        # Frozen structs hash their fields, which fails on the label maps; hashing the canonical
        # encoding covers them and agrees with ``__eq__`` (equal trees encode identically).
        return hash(_canonical.encode(self))


PositiveInt: TypeAlias = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]
Port: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=65535)]
Percent: TypeAlias = Annotated[int, msgspec.Meta(ge=0, le=100)]
StatusCode: TypeAlias = Annotated[int, msgspec.Meta(ge=100, le=599)]
HeaderName: TypeAlias = Annotated[str, msgspec.Meta(pattern=HEADER_NAME_PATTERN)]
NonEmptyStr: TypeAlias = Annotated[str, msgspec.Meta(min_length=1)]
Names: TypeAlias = tuple[str, ...]
