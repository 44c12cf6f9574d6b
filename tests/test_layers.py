"""The house in layers: imports only run downward (docs/architecture.md).

Every import in the package is read from the source, those inside functions
included, so a lazy import cannot hide a dependency that runs the wrong way.
The CLI folder (``xraygpt/cli``) is the top: nothing in the package imports it.
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
    "export": 2,
    "validate": 2,
    "components": 2,
    "apps": 3,
    "cli": 4,
    "__main__": 4,
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


def test_nothing_imports_the_cli():
    wrong = sorted(
        module
        for module, deps in GRAPH.items()
        if _package(module) not in ("cli", "__main__")
        and any(_package(dep) == "cli" for dep in deps)
    )
    assert not wrong, f"{wrong} import xraygpt.cli: the commands are the top of the house"


def _source(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_registering_module_is_listed_once_in_components():
    from xraygpt.components import COMPONENT_MODULES

    registering = sorted(
        module
        for module, path in _modules().items()
        if "registry.register_" in _source(path) and _package(module) != "common"
    )
    assert sorted(COMPONENT_MODULES) == registering
    assert len(set(COMPONENT_MODULES)) == len(COMPONENT_MODULES)
    # components imports them by name: they must sit at its layer or below
    above = [m for m in COMPONENT_MODULES if LAYERS[_package(m)] > LAYERS["components"]]
    assert not above, above


def test_no_module_imports_a_package_for_its_side_effect():
    """Registration is one explicit call (xraygpt.components), not an import ritual."""
    ritual = sorted(
        str(path.relative_to(PACKAGE.parent))
        for path in [*PACKAGE.rglob("*.py"), *PACKAGE.parent.glob("*.py")]
        if "registration side effect" in _source(path)
        or "registers every component" in _source(path)
    )
    assert not ritual, f"imports kept only to register components: {ritual}"


def _calls(tree: ast.AST, names: set[str]) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in names:
                return True
    return False


# The validator registers the components inside its first check, to report a component
# that does not import as a failed check (xraygpt/validate/config_checks.py).
VALIDATES_REGISTRATION = {"validate.py"}


def _cli_modules() -> list[Path]:
    return sorted((PACKAGE / "cli").glob("*.py"))


@pytest.mark.parametrize("path", _cli_modules(), ids=lambda p: p.name)
def test_a_command_that_reads_a_config_registers_the_components_first(path):
    """Config needs the registered models, builders and tasks: each command that takes a
    config (``--cfg-path``) calls ``register_components()`` itself, rather than relying on
    what some other import happened to load."""
    source = _source(path)
    takes_a_config = 'add_argument("--cfg-path"' in source or "launch import build_parser" in source
    if not takes_a_config or path.name in VALIDATES_REGISTRATION:
        return
    assert _calls(ast.parse(source), {"register_components"}), (
        f"{path.name} reads a config without calling register_components()"
    )


def test_the_scripts_are_thin_wrappers_of_the_commands():
    for name, command in [
        ("train.py", "train"),
        ("test.py", "evaluate"),
        ("demo.py", "demo"),
        ("validate_training_setup.py", "validate"),
    ]:
        tree = ast.parse(_source(PACKAGE.parent / name))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert f"xraygpt.cli.{command}" in imported, name
        assert len([n for n in tree.body if isinstance(n, ast.FunctionDef)]) == 0, name
