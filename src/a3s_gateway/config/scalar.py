"""What every scalar value class of the config shares (SPEC §3.3.2): the base and its errors.

Ring 0: pure; no trio, sockets, TLS or clocks.

``ScalarValue`` is the immutable base of ``values.Duration``, ``values.Address``,
``urls.ServerUrl`` and the rest: each subclass parses its text once in ``__init__`` (a grammar
helper raises ``GrammarError``, the class turns it into a ``ValueError`` through ``_reject``),
keeps the text as written in ``.text`` and compares and hashes by the normalised value.
``quote_value`` shows a value in a message.

Must not: echo secrets. A value containing ``@`` may carry a password, so ``_reject`` names the
kind of value only; and it must not know any particular grammar (those live in ``values``,
``authority`` and ``urls``).
"""

from __future__ import annotations

from typing import ClassVar, NoReturn


def quote_value(text: str, *, limit: int = 100) -> str:
    """``text`` in double quotes for a message: control characters escaped, long text cut."""
    cut = text if len(text) <= limit else text[:limit] + "..."
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in cut)
    return f'"{shown}"'


class GrammarError(Exception):
    """A grammar violation; the value class turns the reason into its ``ValueError``."""


class ScalarValue:
    """Base of the value classes: immutable, compared and hashed by the normalised value."""

    __slots__ = ("text",)
    text: str
    #: Word for the kind of value in messages, e.g. ``duration``.
    kind: ClassVar[str]
    #: What ``dec_hook`` says it expected, e.g. ``a duration string like "10s"``.
    expected: ClassVar[str]
    #: Values of one family compare equal across subclasses (Duration and DurationOrZero).
    _family: ClassVar[type[ScalarValue]]

    def __init__(self, text: str) -> None:
        raise NotImplementedError  # each value class parses its own grammar

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        if ScalarValue in cls.__bases__:
            cls._family = cls

    def _key(self) -> tuple[object, ...]:
        raise NotImplementedError

    def _reject(self, text: str, reason: str) -> NoReturn:
        shown = self.kind if "@" in text else f"{self.kind} {quote_value(text)}"
        raise ValueError(f"{shown} is invalid: {reason}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScalarValue) or self._family is not other._family:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash((self._family.__name__, self._key()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.text!r})"

    def __str__(self) -> str:
        return self.text

    def __reduce__(self) -> tuple[type[ScalarValue], tuple[str]]:
        return (type(self), (self.text,))


def init_fields(value: ScalarValue, **fields: object) -> None:
    """Set the fields of an immutable value from its ``__init__`` (bypasses ``__setattr__``)."""
    for name, field in fields.items():
        object.__setattr__(value, name, field)
