"""The house in layers: imports only run downward (docs/architecture.md).

Every import in the package is read from the source, those inside functions
included, so a lazy import cannot hide a dependency that runs the wrong way.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "xraygpt"

# Each package's layer; a module may import its own layer's packages and every layer below.
LAYERS = {
    "common": 0,
    "models": 1,
    "processors": 1,
    "conversation": 1,
    "data": 1,
    "train": 2,
    "eval": 2,
    "apps": 3,
    "tools": 3,
    "evaluate": 3,
    "export": 3,
}
# Pairs in the same layer that must not meet (importer, imported).
FORBIDDEN = {
    ("models", "data"),
    ("data", "models"),
    ("processors", "models"),
    ("processors", "data"),
    ("conversation", "data"),
    ("train", "eval"),
    ("eval", "train"),
}


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``module`` imports, resolved to the longest known name."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name != "xraygpt":
                found.add(name)
    return found


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


GRAPH = {m: _imports(m, p, _modules()) for m, p in _modules().items()}


def test_every_package_has_a_layer():
    packages = {_package(m) for m in GRAPH if m != "xraygpt"}
    assert packages <= set(LAYERS), f"packages without a layer: {sorted(packages - set(LAYERS))}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m != "xraygpt"))
def test_imports_only_run_downward(module):
    mine = _package(module)
    wrong = []
    for dep in sorted(GRAPH[module]):
        theirs = _package(dep)
        if theirs == mine:
            continue
        if LAYERS[theirs] > LAYERS[mine] or (mine, theirs) in FORBIDDEN:
            wrong.append(dep)
    assert not wrong, f"{module} (layer {LAYERS[mine]}) imports {wrong}: imports must run downward"


def test_no_import_circle():
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_checker_sees_lazy_imports(tmp_path):
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from xraygpt.train.runner import RunnerBase\n")
    assert "xraygpt.train.runner" in _imports("xraygpt.models.lazy", source, _modules())


def _builds_a_config(tree: ast.AST) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in ("Config", "load_config"):
                return True
    return False


def _scripts() -> list[Path]:
    root = PACKAGE.parent
    top = [p for p in PACKAGE.rglob("*.py") if _package(_module_name(p)) in TOP]
    return sorted([*top, *root.glob("*.py"), *(root / "benchmarks").glob("*.py")])


TOP = {name for name, layer in LAYERS.items() if layer == 3}


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)


@pytest.mark.parametrize("path", _scripts(), ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_what_builds_a_config_registers_the_components_first(path):
    """Config needs the registered models, builders and tasks: a top-level module that
    builds one imports ``xraygpt.train`` (which registers everything) itself, rather
    than relying on what some other import happened to load."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if not _builds_a_config(tree):
        return
    imports = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert "xraygpt.train" in imports, f"{path.name} builds a Config without import xraygpt.train"
