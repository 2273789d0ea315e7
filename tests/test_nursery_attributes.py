"""No nursery is kept in an attribute that may be None (DESIGN.md §3.3, issue #16).

"Never keep a nursery in an ``Optional`` attribute that others poke at": a nursery that is set
once a task runs and cleared when it ends invites code elsewhere to check it for None and start
work in it while it is closing. Nurseries stay locals of the ``async with`` that opens them and
are handed explicitly to what needs them, or wrapped in a typed handle made inside the block
(``app._Serving``), or fed through a memory channel served inside the nursery
(``upstream/pool.py``).

An AST scan over ``src/``: every annotated attribute (``self.x: T`` in a method, a class-level
field such as a dataclass's) whose annotation names ``Nursery`` together with ``None`` or
``Optional``, string annotations included. mypy --strict makes an attribute that starts as
None carry such an annotation, so the scan sees what matters.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

SRC: Final = Path(__file__).resolve().parents[1] / "src" / "a3s_gateway"


def _annotation_text(annotation: ast.expr) -> str:
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return annotation.value
    return ast.unparse(annotation)


def is_optional_nursery(annotation: ast.expr) -> bool:
    """Whether ``annotation`` is a nursery type that admits None."""
    text = _annotation_text(annotation)
    return "Nursery" in text and ("None" in text or "Optional" in text)


def optional_nursery_attributes(tree: ast.Module) -> list[tuple[str, int]]:
    """(attribute, line) of each attribute of ``tree`` annotated as an optional nursery."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            found.extend(
                (f"{node.name}.{field.target.id}", field.lineno)
                for field in node.body
                if isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and is_optional_nursery(field.annotation)
            )
        elif (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Attribute)
            and is_optional_nursery(node.annotation)
        ):
            found.append((ast.unparse(node.target), node.lineno))
    return found


def test_no_attribute_in_src_holds_a_nursery_that_may_be_none() -> None:
    failures = [
        f"{path.relative_to(SRC.parent)}:{line} {name}"
        for path in sorted(SRC.rglob("*.py"))
        for name, line in optional_nursery_attributes(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert failures == [], (
        "nurseries in attributes that may be None (pass them explicitly, or hand out a typed "
        "handle made inside the nursery's block):\n" + "\n".join(failures)
    )


PLANTED: Final = """
from typing import Optional
import trio

class Owner:
    field: "trio.Nursery | None" = None
    kept: trio.Nursery

    def __init__(self) -> None:
        self._nursery: trio.Nursery | None = None
        self.other: Optional[trio.Nursery] = None
        self.fine: trio.Nursery
        self.scope: trio.CancelScope | None = None
        local: trio.Nursery | None = None
"""


def test_the_scan_sees_a_planted_attribute() -> None:
    found = optional_nursery_attributes(ast.parse(PLANTED))
    assert sorted(name for name, _ in found) == ["Owner.field", "self._nursery", "self.other"]
