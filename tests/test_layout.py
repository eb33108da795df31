"""The package's shape: no import cycle among modelport's modules, no private module used
from outside its package.

For cycles only imports at module level count (an import inside a function runs when it is
called, after both modules are loaded). A cycle means two modules cannot be understood, or
loaded, one without the other.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "modelport").rglob("*.py"):
        if "migrations" in path.parts:
            continue
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph(*, nested: bool = False) -> dict[str, set[str]]:
    """Module -> the modelport modules it imports at module level (``nested``: anywhere)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree) if nested else tree.body:
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1])
                    module = f"{base}.{node.module}" if node.module else base
                else:
                    module = node.module or ""
                for alias in node.names:
                    sub = f"{module}.{alias.name}"
                    targets.append(sub if sub in modules else module)
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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


def test_the_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 50 and graph["modelport.cli.main"] >= {"modelport.cli.common"}
    assert cycles(graph) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_private_module_is_imported_from_outside_its_package() -> None:
    outside = sorted(
        f"{importer} imports {module}"
        for importer, imported in import_graph(nested=True).items()
        for module in imported
        if module.rpartition(".")[2].startswith("_")
        and not module.endswith("__main__")
        and not importer.startswith(module.rpartition(".")[0] + ".")
    )
    assert outside == []


def test_importing_the_server_imports_no_training_or_data_frame_library() -> None:
    # Serving loads what a model needs when it loads it; the server itself needs none of these.
    import subprocess
    import sys

    heavy = ("pandas", "sklearn", "scipy", "alembic", "pyarrow", "skops")
    code = (
        "import sys, modelport.api.app, modelport.api.server, modelport.service.core\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the server imported {out.stdout.strip()}"


def test_every_relative_import_names_a_module_that_exists() -> None:
    # Imports inside functions run late: a wrong one fails only when its route is called.
    modules = _modules()
    missing = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
                if module not in modules:
                    missing.append(f"{name}: {'.' * node.level}{node.module or ''}")
    assert missing == []
