"""The import layering of ``src/a3s_gateway`` (DESIGN.md §3.1, §3.13 rule 1; issue #15 item 6).

An AST walk over every module, no import of the code under test. Rules:

1. **Every module has a ring**, by the table ``RINGS`` below (longest matching prefix wins), so
   a new package must be placed before it can land.
2. **Ring 0 stays pure, transitively**: loading a Ring 0 module never loads ``trio``,
   ``socket``, ``ssl`` or ``time``. Followed: runtime imports (module level and inside
   functions; ``if TYPE_CHECKING:`` blocks do not run), ``from a3s_gateway.x import y`` as the
   module ``x.y`` when there is one (else ``x``), and the packages Python loads on the way (each
   ``__init__`` between the root and the module). Not followed: the root package
   ``a3s_gateway/__init__.py`` when only passed through (it is the public facade and imports
   the composition root; naming it in an import still counts), and third-party packages (their
   own imports are not ours to layer). The few edges that break the rule today are listed in
   ``ALLOWED_RING0_EDGES``, each with its reason, instead of weakening the rule (none today:
   the ``upstream`` package's ``__init__`` imports nothing, so its pure modules load alone).
3. **Ring 0 imports no Ring 1 or Ring 2 module** at runtime (types under ``TYPE_CHECKING`` are
   fine): a trio-free Ring 1 module is still the shell's, not the core's. The edges in
   ``ALLOWED_RING0_EDGES`` are the exceptions of rules 2 and 3.
4. **No import cycle among the modules of ``server/``**, runtime imports only (module level and
   in functions; a function-level import is still a cycle, only a deferred one). An import of
   ``a.b.c`` from outside ``a.b`` also depends on ``a/b/__init__``, which Python runs first.
5. **No cycle in ``server/`` even counting ``TYPE_CHECKING`` imports**, except the edges in
   ``ALLOWED_TYPE_CYCLE_EDGES``: a type-only knot (like the seven modules that once imported
   ``exchange.Downstream`` for its type) is where a runtime cycle grows next.

6. **No runtime import cycle anywhere in ``src/``** (issue #16), the facade included where a
   module names it.
7. **``config/`` is the floor**: it imports only itself, ``errors``, ``version`` and
   ``routing`` (even for types), never the runtime compiler that reads it (issue #16).
8. **Ring 0 has no side effects of its own** (issue #16 item 2): no Ring 0 module imports
   ``logging``, ``os`` (the environment), ``shutil``, ``subprocess`` or ``tempfile`` at runtime,
   nor calls ``open``, ``print`` or a file method (``.open``, ``.read_text``, ``.read_bytes``,
   ``.write_text``, ``.write_bytes``). Files are read, the environment is read and log lines
   are written by the shell, which hands the core what it read (``MiddlewareDeps.read_file``,
   ``config/load.py`` → ``config/assemble.py``) or takes the core's events
   (``MiddlewareDeps.warn``). What must stay is listed in ``ALLOWED_RING0_EFFECTS`` with its
   reason. The check is direct (rule 3 already keeps Ring 0 from importing the shell); it reads
   method calls by name, so a pure method named ``open`` would need an entry.

A failure prints the offending chain or cycle, module by module.
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Final

ROOT: Final = "a3s_gateway"
SRC: Final = Path(__file__).resolve().parents[1] / "src"
FORBIDDEN: Final = frozenset({"trio", "socket", "ssl", "time"})
#: Standard modules whose use is a side effect the shell owns (rule 8).
EFFECT_MODULES: Final = frozenset({"logging", "os", "shutil", "subprocess", "tempfile"})
#: Builtins and method names that read or write files or the terminal (rule 8).
EFFECT_CALLS: Final = frozenset({"open", "print"})
EFFECT_METHODS: Final = frozenset({"open", "read_text", "read_bytes", "write_text", "write_bytes"})

#: Ring by module-name prefix (``.`` ends a package prefix); the longest match wins.
RINGS: Final[dict[str, int]] = {
    # Ring 0: pure core.
    "a3s_gateway.errors": 0,
    "a3s_gateway.version": 0,
    "a3s_gateway.state": 0,
    "a3s_gateway.config": 0,
    # The config loader reads the files and os.environ and hands them to config/assemble.py;
    # only the facade, cli, preflight, providers, supervisor and demo import it (rule 3).
    "a3s_gateway.config.load": 1,
    "a3s_gateway.routing": 0,
    "a3s_gateway.protocols": 0,
    "a3s_gateway.services": 0,
    "a3s_gateway.middleware": 0,
    "a3s_gateway.observability": 0,
    # Ring 1: puts the application log's handler on stderr (install, called by the CLI and
    # each worker at start); the pure formatting it holds is no reason to keep logging in Ring 0.
    "a3s_gateway.observability.applog": 1,
    "a3s_gateway.runtime": 0,
    "a3s_gateway.management": 0,  # the package and api.py: the pure request -> answer
    "a3s_gateway.upstream": 0,  # the package's __init__ imports nothing
    "a3s_gateway.upstream.peer": 0,
    "a3s_gateway.upstream.pool_state": 0,
    "a3s_gateway.upstream.connect_errors": 0,
    # Ring 1: the trio shell.
    "a3s_gateway.server": 1,
    "a3s_gateway.providers": 1,
    "a3s_gateway.probes": 1,
    "a3s_gateway.supervisor": 1,
    "a3s_gateway.management.server": 1,
    "a3s_gateway.management.fleet": 1,
    "a3s_gateway.demo": 1,
    "a3s_gateway.streams": 1,
    "a3s_gateway.preflight": 1,
    "a3s_gateway.upstream.": 1,  # pool, dialer, pooled_connection, caller, redis, seam, and more
    # The WebSocket multiplexer: its session, hubs and upstream channels are the shell's; the
    # JSON control protocol is pure (the package's __init__ imports nothing).
    "a3s_gateway.wsmux": 1,
    "a3s_gateway.wsmux.protocol": 0,
    # Autoscaling: the decider, concurrency windows, revision split and rollout machine are
    # pure; the buffer, executors and the loop are the shell's (the __init__ imports nothing).
    "a3s_gateway.scaling": 0,
    "a3s_gateway.scaling.buffer": 1,
    "a3s_gateway.scaling.executors": 1,
    "a3s_gateway.scaling.executor_local": 1,
    "a3s_gateway.scaling.executor_http": 1,
    "a3s_gateway.scaling.loop": 1,
    "a3s_gateway.scaling.live": 1,
    "a3s_gateway.scaling.host": 1,
    # ACME: the plan (domains from rules), keys and certificates, and the challenge board are
    # pure; storage, the RFC 8555 client, the DNS-01 providers and the manager are the shell's.
    "a3s_gateway.acme": 0,
    "a3s_gateway.acme.storage": 1,
    "a3s_gateway.acme.issuer": 1,
    "a3s_gateway.acme.dns01": 1,
    "a3s_gateway.acme.manager": 1,
    "a3s_gateway.acme.solvers": 1,
    # Ring 2: composition.
    "a3s_gateway": 2,  # the root: the public facade over app.Gateway and load_config
    "a3s_gateway.app": 2,
    "a3s_gateway.cli": 2,
    "a3s_gateway.__main__": 2,
}

#: Import edges a Ring 0 module may follow although they lead to trio (rule 2), and why.
ALLOWED_RING0_EDGES: Final[dict[tuple[str, str], str]] = {}

#: Side effects a Ring 0 module may keep (rule 8): (module, what) → why.
ALLOWED_RING0_EFFECTS: Final[dict[tuple[str, str], str]] = {}

#: ``TYPE_CHECKING`` edges allowed to close a cycle in ``server/`` (rule 5), and why.
ALLOWED_TYPE_CYCLE_EDGES: Final[dict[tuple[str, str], str]] = {}

#: What ``config/`` may import besides itself (rule 7): the floor of the tree. ``routing`` is
#: there because validation compiles every rule to report a syntax error with its column.
CONFIG_MAY_IMPORT: Final = frozenset({f"{ROOT}.errors", f"{ROOT}.version", f"{ROOT}.routing"})


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target: ``kind`` is ``module`` (top level), ``function`` (inside
    a function: deferred, still runtime) or ``typing`` (an ``if TYPE_CHECKING:`` block)."""

    target: str
    kind: str
    line: int


def discover() -> dict[str, Path]:
    """Every module under ``src/a3s_gateway`` by dotted name (packages by their name)."""
    found: dict[str, Path] = {}
    for path in (SRC / ROOT).rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES: Final = discover()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str) -> list[Import]:
    """The import targets of module ``name`` (relative imports resolved)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(ast.parse(path.read_text(encoding="utf-8")), package)


def imports_in(tree: ast.Module, package: str) -> list[Import]:
    """The import targets of the module ``tree`` inside ``package``."""
    found: list[Import] = []

    def visit(node: ast.AST, kind: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    visit_one(statement, "typing")
                for statement in child.orelse:
                    visit_one(statement, kind)
            else:
                visit_one(child, kind)

    def visit_one(node: ast.AST, kind: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            visit(node, "typing" if kind == "typing" else "function")
            return
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, kind, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(sub if sub in MODULES else base, kind, node.lineno))
        visit(node, kind)

    visit(tree, "module")
    return found


IMPORTS: Final = {name: imports_of(name) for name in MODULES}


def ring(name: str) -> int | None:
    """The ring of module ``name`` by the longest matching prefix of ``RINGS``."""
    best = ""
    for prefix in RINGS:
        if prefix.endswith("."):
            matches = name.startswith(prefix)
        else:
            matches = name == prefix or name.startswith(prefix + ".")
        if matches and len(prefix) > len(best):
            best = prefix
    return RINGS[best] if best else None


def _ancestors(name: str) -> list[str]:
    """The packages Python loads before ``name``, outermost first, without the root."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def runtime_edges(name: str, *, with_types: bool = False) -> dict[str, int]:
    """Our modules (and forbidden stdlib tops) that loading ``name`` loads directly, each
    with the line of the import: the import's target and the target's packages that are
    not ``name``'s own (those are loading already)."""
    edges: dict[str, int] = {}
    own = {*_ancestors(name), name}
    for found in IMPORTS[name]:
        if found.kind == "typing" and not with_types:
            continue
        top = found.target.split(".")[0]
        if top in FORBIDDEN:
            edges.setdefault(top, found.line)
        elif top == ROOT and found.target in MODULES:
            for package in _ancestors(found.target):
                if package not in own:
                    edges.setdefault(package, found.line)
            if found.target != name:
                edges.setdefault(found.target, found.line)
    return edges


def test_every_module_has_a_ring() -> None:
    unplaced = sorted(name for name in MODULES if ring(name) is None)
    assert not unplaced, f"modules without a ring (add them to RINGS): {unplaced}"


def _chain_to_forbidden(start: str) -> list[str] | None:
    """The shortest chain of runtime loads from ``start`` to a forbidden module, if any."""
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    for package in _ancestors(start):  # Python loads the module's own packages first
        if (start, package) not in ALLOWED_RING0_EDGES:
            came_from[package] = start
            queue.append(package)
    while queue:
        current = queue.popleft()
        if current in FORBIDDEN:
            chain = [current]
            while (previous := came_from[chain[-1]]) is not None:
                chain.append(previous)
            return chain[::-1]
        if current not in MODULES:
            continue
        for target in runtime_edges(current):
            if (current, target) in ALLOWED_RING0_EDGES or target in came_from:
                continue
            came_from[target] = current
            queue.append(target)
    return None


def test_ring0_never_loads_trio_socket_ssl_or_time() -> None:
    failures = []
    for name in sorted(MODULES):
        if ring(name) != 0:
            continue
        chain = _chain_to_forbidden(name)
        if chain is not None:
            failures.append(" -> ".join(chain))
    assert not failures, "Ring 0 modules that load forbidden modules:\n" + "\n".join(failures)


def test_the_allowed_ring0_edges_still_exist() -> None:
    """An exception that no longer applies is removed, so the list stays the truth."""
    stale = [
        edge
        for edge in ALLOWED_RING0_EDGES
        if edge[0] not in MODULES or edge[1] not in {*_ancestors(edge[0]), *runtime_edges(edge[0])}
    ]
    assert not stale, f"remove these from ALLOWED_RING0_EDGES: {stale}"


def test_ring0_imports_no_ring1_or_ring2_module() -> None:
    failures = []
    for name in sorted(MODULES):
        if ring(name) != 0:
            continue
        for found in IMPORTS[name]:
            target = found.target
            if found.kind == "typing" or (name, target) in ALLOWED_RING0_EDGES:
                continue
            if target in MODULES and (ring(target) or 0) > 0:
                failures.append(f"{name}:{found.line} imports {target} (ring {ring(target)})")
    assert not failures, "\n".join(failures)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a closed path, or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path = [root]
        stack = [iter(sorted(graph[root]))]
        state[root] = 1
        while stack:
            following = next(stack[-1], None)
            if following is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(following) == 1:
                return [*path[path.index(following) :], following]
            elif following not in state:
                state[following] = 1
                path.append(following)
                stack.append(iter(sorted(graph.get(following, ()))))
    return None


def _server_graph(*, with_types: bool) -> dict[str, set[str]]:
    prefix = f"{ROOT}.server."
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        if name.startswith(prefix):
            graph[name] = {
                target
                for target in runtime_edges(name, with_types=with_types)
                if target.startswith(prefix)
                and (not with_types or (name, target) not in ALLOWED_TYPE_CYCLE_EDGES)
            }
    return graph


def test_server_has_no_runtime_import_cycle() -> None:
    cycle = _cycle(_server_graph(with_types=False))
    assert cycle is None, "import cycle in server/: " + " -> ".join(cycle)


def test_server_has_no_import_cycle_even_through_type_imports() -> None:
    cycle = _cycle(_server_graph(with_types=True))
    assert cycle is None, "import cycle (with TYPE_CHECKING imports): " + " -> ".join(cycle)


def test_no_runtime_import_cycle_anywhere_in_src() -> None:
    """Rule 6 (issue #16): what holds for ``server/`` holds for the whole tree, runtime imports
    only (module level and in functions). The facade ``a3s_gateway/__init__`` counts where a
    module names it: importing ``__version__`` from it closed a knot of sixteen modules."""
    graph = {name: {t for t in runtime_edges(name) if t in MODULES} for name in MODULES}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_config_is_the_floor() -> None:
    """Rule 7: the validated config is built from nothing above it."""
    prefix = f"{ROOT}.config"
    wrong = sorted(
        (name, found.target)
        for name in MODULES
        if name == prefix or name.startswith(prefix + ".")
        for found in IMPORTS[name]
        if found.target.startswith(ROOT + ".")
        and not found.target.startswith(prefix)
        and not any(
            found.target == allowed or found.target.startswith(allowed + ".")
            for allowed in CONFIG_MAY_IMPORT
        )
    )
    assert wrong == [], f"config/ reaches above itself: {wrong}"


def effects_in(tree: ast.Module, imports: list[Import]) -> list[tuple[str, int]]:
    """Rule 8's findings in one module: (what, line) for each runtime import of an effect
    module (``what`` is the module) and each call of an effect builtin or file method."""
    found = [
        (top, imported.line)
        for imported in imports
        if imported.kind != "typing" and (top := imported.target.split(".")[0]) in EFFECT_MODULES
    ]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        called = node.func
        if isinstance(called, ast.Name) and called.id in EFFECT_CALLS:
            found.append((called.id, node.lineno))
        elif isinstance(called, ast.Attribute) and called.attr in EFFECT_METHODS:
            found.append((f".{called.attr}", node.lineno))
    return found


def effects_of(name: str) -> list[tuple[str, int]]:
    """Rule 8's findings in module ``name``."""
    return effects_in(ast.parse(MODULES[name].read_text(encoding="utf-8")), IMPORTS[name])


def test_ring0_reads_no_file_or_environment_and_writes_no_log() -> None:
    failures = [
        f"{name}:{line} uses {what}"
        for name in sorted(MODULES)
        if ring(name) == 0
        for what, line in effects_of(name)
        if (name, what) not in ALLOWED_RING0_EFFECTS
    ]
    assert not failures, "Ring 0 side effects (hand them to the shell):\n" + "\n".join(failures)


def test_the_allowed_ring0_effects_still_exist() -> None:
    """An allowed effect that is gone, or whose module left Ring 0, is removed from the list."""
    stale = [
        (name, what)
        for name, what in ALLOWED_RING0_EFFECTS
        if name not in MODULES
        or ring(name) != 0
        or what not in {found for found, _ in effects_of(name)}
    ]
    assert not stale, f"remove these from ALLOWED_RING0_EFFECTS: {stale}"


#: A made-up Ring 0 module with one of each effect of rule 8, and an import for types only.
PLANTED: Final = """
import logging
from os import environ
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import shutil

def settings(path):
    import subprocess
    print("reading", path)
    with open(path) as handle:
        handle.read()
    return Path(path).read_text(), key.read_bytes(), environ
"""


def test_the_effect_check_sees_a_planted_violation() -> None:
    tree = ast.parse(PLANTED)
    found = effects_in(tree, imports_in(tree, f"{ROOT}.config"))
    assert sorted(found) == sorted(
        [
            ("logging", 2),
            ("os", 3),
            ("subprocess", 10),
            ("print", 11),
            ("open", 12),
            (".read_text", 14),
            (".read_bytes", 14),
        ]
    )
    # The real tree: the loader and the shell's reader are seen (they are Ring 1, so allowed).
    assert {"os", "open"} <= {what for what, _ in effects_of(f"{ROOT}.config.load")}
    assert ring(f"{ROOT}.config.load") == 1
    assert ring(f"{ROOT}.config.assemble") == 0
    assert "open" in {what for what, _ in effects_of(f"{ROOT}.server.outbound_clients")}


def test_the_checks_see_what_they_should() -> None:
    """The walker itself: it finds a known runtime edge, a known type-only edge, a function-
    level import, and a cycle in a made-up graph."""
    connection = runtime_edges(f"{ROOT}.server.http1_driver")
    assert f"{ROOT}.server.exchange" in connection  # handle_request
    assert "trio" in connection
    kinds = {(i.target, i.kind) for i in IMPORTS[f"{ROOT}.server.exchange.dispatch"]}
    assert (f"{ROOT}.server.exchange.context", "typing") in kinds
    assert any(i.kind == "function" for name in MODULES for i in IMPORTS[name])
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    assert ring(f"{ROOT}.runtime.compile") == 0
    assert ring(f"{ROOT}.config.schema") == 0
    assert ring(f"{ROOT}.probes.checker") == 1
    assert ring(f"{ROOT}.management.api") == 0
    assert ring(f"{ROOT}.management.fleet") == 1
    assert ring(f"{ROOT}.upstream") == 0
    assert ring(f"{ROOT}.upstream.pool") == 1
