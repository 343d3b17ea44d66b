"""The package's shape: layers point one way, no import cycles, short library functions.

Layers, bottom to top (a module may import its own layer and the ones below):
errors, cache, fsutil, backend → data → runtime → graph → extract → fit → study →
report | check → cli. ``report`` and ``check`` sit side by side and do not import
each other. Only ``cli.py`` (and the lazy ``__init__``) import xnetmap modules
inside functions, to keep ``xnetmap --help`` instant; library code imports
xnetmap modules at module level, so the layering is visible to a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "xnetmap"
LAYERS = {
    "errors": 0, "cache": 0, "fsutil": 0, "backend": 0,
    "data": 1, "runtime": 2, "graph": 3, "extract": 4, "fit": 5, "study": 6,
    "report": 7, "check": 7, "cli": 8, "progress": 8, "__main__": 8,
    "__init__": 0,  # the root package: __version__ and a lazy table of names, no imports
}
#: Layers whose packages must not import each other.
EXCLUSIVE = {7}
MAX_FUNCTION_LINES = 80


def _modules():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        base = node.module or ""
    else:
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_pkg else 0)
        base = ".".join(parts[:keep] + ([node.module] if node.module else []))
    if not base.startswith("xnetmap"):
        return []
    # `from . import x` / `from ..study import statistics` may name submodules
    return [base] + [f"{base}.{a.name}" for a in node.names]


def _imports(module: str, path: Path):
    """(imported xnetmap module, inside a function?) for every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out = []

    def visit(node, in_func):
        for child in ast.iter_child_nodes(node):
            inner = in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, in_func) for a in child.names if a.name.startswith("xnetmap"))
            elif isinstance(child, ast.ImportFrom):
                out.extend((m, in_func) for m in _resolve(module, is_pkg, child))
            visit(child, inner)

    visit(tree, False)
    return out


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return top, LAYERS[top]


MODULES = dict(_modules())


def test_every_package_has_a_layer():
    assert {_layer(m)[0] for m in MODULES} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_import_points_up(module):
    top, level = _layer(module)
    bad = []
    for target, in_func in _imports(module, MODULES[module]):
        if target not in MODULES:
            continue  # a name imported from a module, already covered by its module
        t_top, t_level = _layer(target)
        if t_level > level or (t_level == level and t_top != top and level in EXCLUSIVE):
            bad.append(f"{target} (layer {t_top})" + (" inside a function" if in_func else ""))
    assert not bad, f"{module} (layer {top}) imports above or beside itself: {bad}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_library_imports_xnetmap_at_module_level(module):
    if _layer(module)[0] in ("cli", "__init__", "__main__"):
        return
    inside = sorted({t for t, in_func in _imports(module, MODULES[module]) if in_func})
    assert not inside, f"{module} imports xnetmap modules inside functions: {inside}"


def test_no_import_cycles():
    graph = {m: {t for t, in_func in _imports(m, p) if not in_func and t in MODULES and t != m}
             for m, p in MODULES.items()}
    # a package's __init__ importing its own submodules is not a cycle to report
    for m in graph:
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m):
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                dfs(t)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            dfs(m)


def _long_functions(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                yield f"{node.name} ({lines} lines)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_are_short(module):
    long = list(_long_functions(MODULES[module]))
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"
