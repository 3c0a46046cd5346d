"""The package layout rules of issue 11: no import loop inside ``mosr/`` and no module over 500 lines.

The import graph is read from the source with :mod:`ast`, counting every import statement wherever it
stands (module level and inside functions), except those under ``if TYPE_CHECKING:``, which never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "mosr"
MAX_LINES = 500
#: modules allowed over MAX_LINES for now
LONG_MODULES: set[str] = set()  # modules allowed over the limit (none: mosr/train.py is the package mosr/train/)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree``, skipping ``if TYPE_CHECKING:`` bodies."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph() -> dict[str, set[str]]:
    """``module -> mosr modules it imports`` (``from a import b`` counts as ``a.b`` when that is a module)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base for alias in node.names]
            for target in targets:
                while target and target not in mods:  # `import mosr.x.y` where only mosr.x is ours
                    target = target.rpartition(".")[0]
                if target and target.split(".")[0] == "mosr" and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_import_graph_reads_function_level_imports():
    graph = import_graph()
    assert "mosr.models" in graph["mosr.capture"]  # module level
    assert "mosr.models" in graph["mosr.evaluation.run"]
    assert "mosr.datasets" in graph["mosr.evaluation.run"]  # only imported inside functions there
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_loops():
    found = cycles(import_graph())
    assert not found, "import loops inside mosr/ (function-level imports included): " + "; ".join(
        " <-> ".join(c) for c in found
    )


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for w in graph[stack.pop()]:
            if w not in seen:
                seen.add(w)
                stack.append(w)
    return seen


def _in(package: str, name: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_training_imports_no_module_that_imports_training():
    """``mosr.train`` depends on the layers below it only: nothing it imports (directly or not) imports
    ``mosr.train`` back."""
    graph = import_graph()
    importers = {
        m for m, targets in graph.items() if not _in("mosr.train", m) and any(_in("mosr.train", t) for t in targets)
    }
    upward = {m: sorted(_reachable(graph, m) & importers) for m in graph if _in("mosr.train", m)}
    assert not {m: u for m, u in upward.items() if u}, upward


def test_evaluation_does_not_import_training():
    """Evaluation shares the example encoder with training through :mod:`mosr.encoding`, not through ``mosr.train``."""
    graph = import_graph()
    found = {
        m: sorted(t for t in _reachable(graph, m) if _in("mosr.train", t)) for m in graph if _in("mosr.evaluation", m)
    }
    assert not {m: t for m, t in found.items() if t}, found


@pytest.mark.parametrize("name", sorted(modules()))
def test_module_length(name):
    path = modules()[name]
    rel = path.relative_to(ROOT).as_posix()
    n = len(path.read_text(encoding="utf-8").splitlines())
    if rel in LONG_MODULES:
        pytest.skip(f"{rel}: {n} lines, allowed for now")
    assert n <= MAX_LINES, f"{rel} has {n} lines (at most {MAX_LINES}): split it by concept"


def test_tiny_loader_is_registered_by_testing_not_imported_by_models():
    graph = import_graph()
    assert "mosr.testing" not in graph["mosr.models"]
    import mosr
    from mosr.models import LOADERS

    assert "tiny" in LOADERS and mosr.load("tiny:gpt2").name == "tiny:gpt2"
