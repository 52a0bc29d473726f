"""The packages' imports point one way: from the command line down to the base modules, never back
up, and no module reaches itself through others (imports inside functions count too: they run
the same code, only later).

The layers, lowest first, are `LAYERS` below; a module may import its own layer and the ones
under it. Changing the order is a design decision: say why in the commit.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from tests.packaging import package_folders

ROOT = Path(__file__).resolve().parents[1]
# `{package: folder}` as pyproject.toml's package-dir maps them: the one import root `depthkd`
PACKAGES = package_folders(ROOT)

LAYERS: tuple[tuple[str, ...], ...] = (
    # base: errors, files, processes, ports, storage URLs, console, metric names, joining Ray
    # (`depthkd` is the package's own __init__ only; every other module is listed)
    (
        "depthkd",
        "depthkd.errors",
        "depthkd.atomic",
        "depthkd.environ",
        "depthkd.ports",
        "depthkd.processes",
        "depthkd.locking",
        "depthkd.registry",
        "depthkd.storage",
        "depthkd.console",
        "depthkd.metric_names",
        "depthkd.raycluster",
        "depthkd.configs",  # the shipped config files (package data)
    ),
    ("depthkd.config",),
    ("depthkd.data",),
    ("depthkd.models",),
    ("depthkd.eval",),  # metrics, protocols, evaluation runs, previews, model cost
    ("depthkd.tracking",),  # every MLflow call
    ("depthkd.devcluster",),
    ("depthkd.inference",),
    ("depthkd.pseudolabel",),
    ("depthkd.train",),
    ("depthkd.promotion",),
    ("depthkd.tune",),
    ("depthkd.bench",),  # a leaf: nothing but the command line imports it
    ("depthkd.cli",),
    ("depthkd.pipelines",),
)


def module_files(root: Path, packages: Mapping[str, str]) -> dict[str, Path]:
    """`{dotted module name: file}` of every module under the folders of `root` that `packages`
    maps (`{package: folder}`), the files of a mapped subpackage under its own name only."""
    found = {}
    for package, folder in packages.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = path.relative_to(root / folder).with_suffix("").parts
            name = ".".join([package, *(parts[:-1] if parts[-1] == "__init__" else parts)])
            found.setdefault(name, path)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """`{module: modules it imports}` among `modules`, with the packages an import runs on the
    way (`a.b.c` runs `a` and `a.b` first); edges to a module's own packages (which Python
    imports before the module anyway) are left out."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*parent, *([node.module] if node.module else [])])
                # `from pkg import submodule` imports the submodule; a name, its module
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            for target in targets:
                while target:
                    if target in modules and not (name == target or name.startswith(target + ".")):
                        graph[name].add(target)
                    target = target.rpartition(".")[0]
    return graph


def layer_of(module: str, layers: Sequence[Sequence[str]]) -> int:
    """Index of the layer whose longest prefix matches `module` (a root package listed in
    `PACKAGES` with other entries under it stands for its `__init__` only)."""
    best, index = -1, None
    for i, prefixes in enumerate(layers):
        for prefix in prefixes:
            whole = module.startswith(prefix + ".") and prefix != "depthkd"
            if (module == prefix or whole) and len(prefix) > best:
                best, index = len(prefix), i
    if index is None:
        raise AssertionError(f"module {module} is in no layer: add it to LAYERS")
    return index


def upward_imports(graph: dict[str, set[str]], layers: Sequence[Sequence[str]]) -> list[str]:
    return sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if layer_of(target, layers) > layer_of(module, layers)
    )


def import_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    circles.append(sorted(component))
    return circles


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(module_files(ROOT, PACKAGES))


def test_no_import_circle(graph):
    assert import_circles(graph) == []


def test_no_import_runs_back_up(graph):
    assert upward_imports(graph, LAYERS) == []


def test_benchmarks_are_a_leaf_only_the_command_line_imports(graph):
    importers = {
        module
        for module, targets in graph.items()
        if any(t.startswith("depthkd.bench") for t in targets)
        and not module.startswith(("depthkd.bench", "depthkd.cli"))
    }
    assert importers == set()


def test_the_checker_finds_a_circle_and_an_upward_import(tmp_path):
    """The checks above on a tree made to break both rules: they fail where they must."""
    files = {
        "low/__init__.py": "",
        "low/a.py": "from high import b\n",  # up, and around: low.a -> high.b -> low.a
        "high/__init__.py": "",
        "high/b.py": "def f():\n    from low.a import g\n",
        "high/c.py": "from . import b\nfrom low import a\n",  # relative and down: fine
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph = import_graph(module_files(tmp_path, {"low": "low", "high": "high"}))
    assert graph["high.c"] == {"high.b", "low", "low.a"}  # `from low import a` runs low too
    assert import_circles(graph) == [["high.b", "low.a"]]
    assert upward_imports(graph, (("low",), ("high",))) == ["low.a -> high", "low.a -> high.b"]
