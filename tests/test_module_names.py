"""No two modules in ``src/`` share a name (issue #16): a name says what a module holds, and a
reader who meets ``record.py`` or ``context.py`` should not have to ask "which one?"."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Final

SRC: Final = Path(__file__).resolve().parents[1] / "src" / "a3s_gateway"


def repeated_names() -> dict[str, list[str]]:
    """Module file names (``__init__.py`` aside) found more than once, with their places."""
    places: defaultdict[str, list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        if path.name != "__init__.py":
            places[path.name].append(str(path.relative_to(SRC)))
    return {name: where for name, where in places.items() if len(where) > 1}


def test_no_two_modules_share_a_name() -> None:
    assert repeated_names() == {}


def test_the_walk_sees_modules() -> None:
    assert len(list(SRC.rglob("*.py"))) > 100
