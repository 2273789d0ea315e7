"""Hiding interpolated values wherever a config is shown (SPEC §14.4): ``Redactor``.

Ring 0: pure string work; no I/O, trio, sockets or clocks.

Every value a ``${NAME}`` put into a config string is a secret unless ``NAME`` is listed in
``public_env`` (or the string is a file path, or the value filled a number or bool field; the
loader decides, ``config/load.py``). A ``Redactor`` holds those values and replaces them with
``<redacted>`` in any text: a config dump keeps the text around them
(``"https://auth/<redacted>/check"``), and so does a problem message, which is harder, because
messages do not always quote a value as it is:

1. *Spellings.* A value is found as it is, case-insensitively, and as ``quote_value``,
   ``repr`` and JSON spell it (control characters and quotes escaped).
2. *Cuts.* A message may cut a long value (``"…"`` or ``"..."`` after it): text just before
   the cut that starts a secret is redacted too.
3. *Pieces.* A parser may quote a piece of a value (the host of a URL that came whole from a
   variable). For a problem located at a string that holds secret text (or at the list or map
   holding it), every quoted part of the message (``"…"``, ``'…'`` or ``` `…` ```) is kept
   only if, outside its ``<redacted>`` marks, it is text the file itself wrote around the
   secrets (a ``Spot``); otherwise the whole quoted part becomes ``<redacted>``.

Whatever a redacted text shows is thus the file's own text or a public variable's value. A
secret that is itself part of ``<redacted>`` (``"red"``) or spells ``<``/``>`` can of course
still be read in the marks. Empty values hide nothing and are ignored.

Must not: log, or keep anything but the values given to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from a3s_gateway.config.problems import Problem

__all__ = ["REDACTED", "Redactor", "Spot"]

REDACTED: Final = "<redacted>"
#: What messages put after a value they cut (``quote_value``, rules, regex errors).
_CUT_MARKS: Final = ("...", "…")
#: The rest of a path below a list or map: indexes and keys only (``[0]``, ``["X-A"]``).
_ITEMS: Final = re.compile(r'(?:\[(?:\d+|"[^"]*")\])*')
#: A quoted part of a message.
_QUOTED: Final = re.compile(r'"[^"]*"|\'[^\']*\'|`[^`]*`')


@dataclass(frozen=True, slots=True)
class Spot:
    """A config string that holds secret text: its rendered path (``format_path``) and the text
    around the secrets (the file's own text and public variables' values)."""

    path: str
    shown: tuple[str, ...]

    def covers(self, problem_path: str) -> bool:
        """Whether a problem at ``problem_path`` is about this string: it is located at the
        string itself, or at a list or map holding it (the rest of the path is only indexes
        and keys). Problems of the whole file (path ``""``) are not."""
        if not problem_path or not self.path.startswith(problem_path):
            return False
        return _ITEMS.fullmatch(self.path, len(problem_path)) is not None


def _spellings(secret: str) -> set[str]:
    """``secret`` as messages and documents may write it."""
    quoted = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in secret)
    as_json = json.dumps(secret, ensure_ascii=False)[1:-1]
    return {secret, quoted, repr(secret)[1:-1], as_json, json.dumps(secret)[1:-1]}


class Redactor:
    """Replaces secret values with ``<redacted>`` (module docstring). Immutable; cheap when it
    holds nothing."""

    __slots__ = ("_any", "_forms", "_spots", "secrets")

    def __init__(self, secrets: Iterable[str] = (), spots: Iterable[Spot] = ()) -> None:
        #: The values hidden (empty ones dropped).
        self.secrets: frozenset[str] = frozenset(secret for secret in secrets if secret)
        forms = {form for secret in self.secrets for form in _spellings(secret) if form}
        # Longest first: a search stops at its first hit, and the longer form covers more.
        self._forms: tuple[str, ...] = tuple(sorted(forms, key=lambda f: (-len(f), f)))
        self._any = (
            re.compile("|".join(re.escape(form) for form in self._forms), re.IGNORECASE)
            if self._forms
            else None
        )
        self._spots: tuple[Spot, ...] = tuple(spots) if self.secrets else ()

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, text: str, *, message: bool = False) -> str:
        """``text`` with every secret replaced by ``<redacted>``; ``message``: also text cut
        off in the middle of a secret (module docstring, rule 2). Marks already in ``text``
        are kept as they are, so redacting twice changes nothing."""
        if self._any is None or not text:
            return text
        if REDACTED in text:
            parts = text.split(REDACTED)
            return REDACTED.join(self.text(part, message=message) for part in parts)
        cut = message and any(mark in text for mark in _CUT_MARKS)
        if not cut and self._any.search(text) is None:
            return text
        spans = self._occurrences(text)
        if cut:
            spans += self._cut_prefixes(text)
        return _replace(text, spans)

    def problem(self, problem: Problem) -> Problem:
        """``problem`` with its message redacted (rules 1–3)."""
        if not self.secrets:
            return problem
        message = self.text(problem.message, message=True)
        spots = [spot for spot in self._spots if spot.covers(problem.path)]
        if spots:
            shown = [text for spot in spots for text in spot.shown]
            message = _QUOTED.sub(lambda quoted: _kept(quoted[0], shown), message)
        if message == problem.message:
            return problem
        return msgspec.structs.replace(problem, message=message)

    def problems(self, problems: Sequence[Problem]) -> tuple[Problem, ...]:
        """Every problem redacted, in the same order."""
        return tuple(self.problem(problem) for problem in problems)

    def tree(self, node: object) -> object:
        """A copy of a builtins tree (dicts, lists, strings, numbers) with every string value
        redacted; keys (the file's own names) are kept."""
        if not self.secrets:
            return node
        if isinstance(node, str):
            return self.text(node)
        if isinstance(node, dict):
            return {key: self.tree(value) for key, value in node.items()}
        if isinstance(node, list | tuple):
            return [self.tree(item) for item in node]
        return node

    # -- matching ------------------------------------------------------------------------

    def _occurrences(self, text: str) -> list[tuple[int, int]]:
        """Every (start, end) of every spelling, overlapping ones included."""
        spans: list[tuple[int, int]] = []
        for form in self._forms:
            pattern = re.compile(re.escape(form), re.IGNORECASE)
            found = pattern.search(text)
            while found is not None:
                spans.append(found.span())
                found = pattern.search(text, found.start() + 1)
        return spans

    def _cut_prefixes(self, text: str) -> list[tuple[int, int]]:
        """Text just before a cut mark that starts a spelling of a secret."""
        spans: list[tuple[int, int]] = []
        for mark in _CUT_MARKS:
            at = text.find(mark)
            while at >= 0:
                for form in self._forms:
                    longest = _longest_start(text[:at], form)
                    if longest:
                        spans.append((at - longest, at))
                        break
                at = text.find(mark, at + 1)
        return spans


def _longest_start(before: str, form: str) -> int:
    """The length of the longest proper start of ``form`` that ``before`` ends with (case
    ignored)."""
    for length in range(min(len(form) - 1, len(before)), 0, -1):
        if before[-length:].casefold() == form[:length].casefold():
            return length
    return 0


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    """``text`` with the union of ``spans`` replaced, one mark per run of joined spans."""
    if not spans:
        return text
    out: list[str] = []
    position = 0
    start, end = -1, -1
    for span_start, span_end in sorted(spans):
        if span_start <= end:
            end = max(end, span_end)
            continue
        if end >= 0:
            out += (text[position:start], REDACTED)
            position = end
        start, end = span_start, span_end
    out += (text[position:start], REDACTED, text[end:])
    return "".join(out)


def _kept(quoted: str, shown: Sequence[str]) -> str:
    """A quoted part of a message at a secret's spot: kept if every piece outside the marks
    is text written around the secrets, else its content becomes one mark."""
    inside = quoted[1:-1]
    for mark in _CUT_MARKS:  # a cut value: the mark is the message's, not the value's
        inside = inside.removesuffix(mark)
    pieces = [piece for piece in inside.split(REDACTED) if piece]
    if all(any(piece in text for text in shown) for piece in pieces):
        return quoted
    return quoted[0] + REDACTED + quoted[-1]
