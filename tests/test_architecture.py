"""The package's layering: no import cycles, and a pure core.

The import graph is read from the sources (every ``import`` statement, also those inside
functions, since a lazy import is still a dependency), so these tests need no imports of
optional extras.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "saxsdog"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(tree: ast.Module, module_level_only: bool) -> list[ast.Import | ast.ImportFrom]:
    """The import statements of a module, without those only type checkers run."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for n in ast.walk(node))
    nodes = tree.body if module_level_only else ast.walk(tree)
    return [n for n in nodes if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in skipped]


def import_graph(module_level_only: bool = False) -> dict[str, set[str]]:
    """Module → the saxsdog modules it imports (anywhere in its source, unless
    ``module_level_only``; imports under ``if TYPE_CHECKING`` do not count)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")), module_level_only):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                submodules = [f"{module}.{alias.name}" for alias in node.names]
                # ``from pkg import mod`` depends on the module, not on what pkg/__init__ imports
                if all(name in files for name in submodules):
                    targets = submodules
                else:
                    targets = [module] + submodules
            else:
                continue
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one node are the cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _subpackage(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_module_import_cycles():
    assert strongly_connected(import_graph()) == []


def test_no_import_cycles_between_subpackages():
    """``pipeline`` ↔ ``streams`` and the like: a lower layer never imports a higher one."""
    packages: dict[str, set[str]] = {}
    for module, targets in import_graph().items():
        if "." not in module.removeprefix("saxsdog."):
            continue  # top-level modules (calibration, merge, ...) are leaves of their own
        for target in targets:
            a, b = _subpackage(module), _subpackage(target)
            if a != b and "." in target.removeprefix("saxsdog."):
                packages.setdefault(a, set()).add(b)
    assert strongly_connected(packages) == []


@pytest.mark.parametrize("client, module_level_only", [
    ("saxsdog.protocol.client", False), ("saxsdog.cli.leash", False),
    ("saxsdog.cli.leash_web", True),  # only ``leash --local`` loads the server it starts
])
@pytest.mark.slow
def test_clients_do_not_import_the_server(client, module_level_only):
    """A leash client runs where no server is installed: it must not import ``saxsdog.server``."""
    graph = import_graph(module_level_only)
    seen, todo = set(), [client]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        todo.extend(graph.get(module, ()))
    assert not {m for m in seen if m.startswith("saxsdog.server")}


def test_core_is_pure():
    """``core/`` imports nothing of saxsdog outside itself and no file or network library."""
    impure = {"fabio", "h5py", "tifffile", "zmq", "starlette", "uvicorn", "sqlite3", "socket"}
    for path in (PACKAGE / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level >= 2:
                    names = [f"saxsdog.{node.module}"]
                elif node.level == 0:
                    names = [node.module or ""]
            for name in names:
                assert name.split(".")[0] not in impure, f"{path.name} imports {name}"
                assert not (name.startswith("saxsdog.") and not name.startswith("saxsdog.core")), \
                    f"{path.name} imports {name}"


def test_cycle_finder_finds_a_cycle():
    """The checks above can fail: a two-module loop is found."""
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_citations_of_documents_outside_the_repository():
    """Docstrings, schemas and the page cite the original's manual and paper by name, not by
    the file names of a reference folder that users do not have."""
    cited = []
    for path in PACKAGE.rglob("*"):
        if path.suffix in (".py", ".json", ".js", ".html", ".css"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if re.search(r"\bseeds?\b ?0\d\d", line):
                    cited.append(f"{path.relative_to(PACKAGE)}:{number}")
    assert cited == []
