"""The package's shape: no import cycles (imports inside functions included), no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import tiled_unet

PACKAGE = Path(tiled_unet.__file__).parent
MAX_LINES = 400


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("tiled_unet",) + path.relative_to(PACKAGE).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its file."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                if f"{target}.{alias.name}" in modules:  # a module imported from its package
                    found.add(f"{target}.{alias.name}")
                elif target in modules:
                    found.add(target)
    # importing a.b.c runs a.b's __init__ first, unless a.b holds the importer (then it is running already)
    for target in list(found):
        parts = target.split(".")
        found.update(parent for n in range(2, len(parts)) if (parent := ".".join(parts[:n])) in modules
                     and not (name + ".").startswith(parent + "."))
    found.discard(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_imports_inside_functions(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def f():\n    from .a import x\n")
    modules = {"pkg": package / "__init__.py", "pkg.a": package / "a.py", "pkg.b": package / "b.py"}
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert graph["pkg.b"] == {"pkg.a"} and graph["pkg.a"] == {"pkg.b"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 40 and graph["tiled_unet.pipeline"], "the graph misses the package's modules"
    assert cycles(graph) == []


def test_no_module_over_400_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_core_imports_no_gui_toolkit():
    graph = import_graph()
    gui = ("napari", "magicgui", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6")
    for name, path in module_names().items():
        if name.startswith("tiled_unet._napari"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else (
                    [(node.module or "").split(".")[0]] if not node.level else [])
                assert not set(roots) & set(gui), f"{name} imports {roots}"
        assert not any(dep.startswith("tiled_unet._napari") for dep in graph[name]), name


#: imported inside functions: the optional extras (a missing one is an error only where it is used), and
#: dask, a core dependency whose import (0.3 s) would add to every ``import tiled_unet`` for what only
#: blockwise labelling and label counts use
IMPORTED_ON_USE = {"napari", "magicgui", "qtpy", "openvino", "distributed", "dask"}


def test_imports_inside_functions_are_only_optional_or_slow_to_import():
    found = []
    for name, path in module_names().items():
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Import):
                    roots = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    roots = {"." * node.level + (node.module or "").split(".")[0]}
                else:
                    continue
                found += [f"{name}.{function.name}: {root}" for root in roots - IMPORTED_ON_USE]
    assert found == []
