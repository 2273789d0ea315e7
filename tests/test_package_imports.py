"""Which package may import which (issue #16 item 7): each package's ``__init__`` docstring says
what lives there and what it may import, and this test holds the code to the same table.

Runtime imports only (module level and inside functions; ``if TYPE_CHECKING:`` blocks are
types, not dependencies). A module of the root (``app.py``, ``cli.py``, ``errors.py``, ...) is
its own "package" here. Importing within one's own package is always allowed. The module-level
rules (rings, cycles) are tests/test_layering.py's; this table is the coarser map a newcomer
reads first, and it fails when a new edge appears so that the edge is a decision, not an
accident.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Final

SRC: Final = Path(__file__).resolve().parents[1] / "src" / "a3s_gateway"

RING0: Final = frozenset(
    {"errors", "version", "state", "config", "routing", "protocols", "services", "middleware"}
    | {"observability", "runtime"}
)

#: package (or root module) -> the packages it may import at runtime, besides itself.
MAY_IMPORT: Final[dict[str, frozenset[str]]] = {
    # Ring 0
    "errors": frozenset(),
    "version": frozenset(),
    "state": frozenset(),
    "config": frozenset({"errors", "version", "routing"}),
    "routing": frozenset({"config"}),  # the value types and "did you mean" of config/
    "protocols": frozenset({"errors", "version", "routing"}),  # peer-address parsing
    "services": frozenset({"config", "upstream"}),  # upstream: the pure Peer only
    "middleware": frozenset({"config", "errors", "version", "protocols", "routing"}),
    "observability": frozenset({"config", "errors", "version", "middleware", "protocols"})
    | frozenset({"routing", "services", "runtime", "state"}),
    "runtime": RING0 | {"upstream", "scaling"},  # scaling: its pure modules (pools, split)
    # Ring 1
    "streams": frozenset(),
    "upstream": frozenset({"config", "errors", "version", "middleware", "protocols", "streams"}),
    "probes": frozenset({"config", "errors", "version", "protocols", "services", "upstream"})
    | {"observability"},  # the supervisor's probes count into its metrics
    "preflight": frozenset({"config", "errors"}),
    "providers": frozenset({"config", "errors", "version", "preflight", "runtime", "acme"}),
    # ACME: the plan reads the routers' rules; the manager is a provider publishing snapshots
    "acme": frozenset({"config", "errors", "version", "routing", "providers"}),
    "server": RING0 | {"upstream", "streams", "probes", "wsmux", "scaling", "acme"},
    # autoscaling: pure decider, split and rollout; the buffer, executors and loops (SPEC §11)
    "scaling": frozenset({"config", "errors", "version", "observability", "services"})
    | {"middleware", "protocols", "upstream"},
    # the multiplexer: its control protocol, hubs and upstream channels (SPEC §5.13)
    "wsmux": frozenset({"config", "errors", "version", "protocols", "upstream", "services"}),
    "management": RING0 | {"server", "supervisor", "providers", "upstream", "scaling"},
    "supervisor": RING0
    | {"app", "management", "preflight", "providers", "server", "probes", "upstream"}
    | {"scaling", "acme"},
    "demo": frozenset({"app", "config", "errors", "version", "protocols"}),
    # Ring 2
    "app": RING0
    | {"management", "preflight", "providers", "server", "upstream", "probes", "scaling"}
    | {"acme"},
    "cli": RING0 | {"app", "demo", "preflight", "providers", "supervisor", "acme"},
    "__main__": frozenset({"cli"}),
    "__init__": frozenset({"app", "config", "errors", "preflight", "state", "version"}),
}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def owner(path: Path) -> str:
    """The package a module belongs to (a root module is its own)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


def runtime_targets(path: Path) -> set[str]:
    """The first component below ``a3s_gateway`` of every runtime import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                typing_only.update(id(inner) for inner in ast.walk(statement))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "a3s_gateway":
                found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def violations() -> list[str]:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        me = owner(path)
        allowed = MAY_IMPORT.get(me)
        if allowed is None:
            wrong.append(f"{path.relative_to(SRC)}: package {me!r} is not in MAY_IMPORT")
            continue
        extra = sorted(runtime_targets(path) - {me} - allowed)
        wrong.extend(f"{path.relative_to(SRC)} imports {target}" for target in extra)
    return wrong


def test_every_import_is_in_the_table() -> None:
    assert violations() == []


def test_every_package_says_what_it_holds_and_may_import() -> None:
    """Each package's ``__init__`` has a docstring that names its ring and its imports."""
    missing = []
    for directory in sorted(p for p in SRC.rglob("*") if p.is_dir() and any(p.glob("*.py"))):
        init = directory / "__init__.py"
        if not init.exists():
            missing.append(f"{directory.relative_to(SRC)}: no __init__.py")
            continue
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        if "Ring" not in doc or "import" not in doc or len(doc.splitlines()) < 3:
            missing.append(f"{directory.relative_to(SRC)}: docstring lacks ring or imports")
    assert missing == []


def test_the_scan_sees_runtime_and_not_type_imports(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        "from typing import TYPE_CHECKING\n"
        "import a3s_gateway.server.listeners\n"
        "from a3s_gateway.app import Gateway\n"
        "if TYPE_CHECKING:\n"
        "    from a3s_gateway.supervisor.workers import Supervisor\n"
        "def later() -> None:\n"
        "    from a3s_gateway.cli import main\n",
        encoding="utf-8",
    )
    assert runtime_targets(planted) == {"server", "app", "cli"}
    assert owner(SRC / "server" / "exchange" / "handle.py") == "server"
    assert owner(SRC / "app.py") == "app"
