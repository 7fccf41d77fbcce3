"""The package's layers import only downwards, and no module imports itself back in a loop.

ground (dsp, matching, inference) <- losses, backbones, data <- eval kernels, hub, streaming
<- system <- run <- cli (and the package's own ``__init__``). Imports inside functions count
too: a lazy import still ties the two modules together.
"""

import ast
from pathlib import Path

import pytest

import zoo

ROOT = Path(zoo.__file__).parent
LAYERS = {
    "zoo.errors": 0,
    "zoo.dsp": 0,
    "zoo.matching": 0,
    "zoo.inference": 0,
    "zoo.losses": 1,
    "zoo.optim": 1,
    "zoo.backbones": 1,
    "zoo.data": 1,
    "zoo.eval": 2,
    "zoo.hub": 2,
    "zoo.streaming": 2,
    "zoo.system": 3,
    "zoo.run": 4,
    "zoo.cli": 5,
    "zoo": 5,
}


def _module(path: Path) -> str:
    parts = ["zoo", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _imports() -> dict[str, set[str]]:
    modules = {_module(p): p for p in ROOT.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from .x import y` may import the submodule x.y
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                           for a in node.names]  # fmt: skip
            else:
                continue
            deps |= {t for t in targets if t == "zoo" or t.startswith("zoo.")}
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def test_layers_only_import_downwards():
    wrong = [
        f"{m} (layer {_layer(m)}) imports {d} (layer {_layer(d)})"
        for m, deps in _imports().items()
        for d in deps
        if _layer(d) > _layer(m) and not (m.startswith(d + ".") and d != "zoo")
    ]
    assert wrong == []


def test_no_import_loops():
    graph = _imports()
    # a package's __init__ re-exporting its own modules is not a loop
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state: dict[str, int] = {}
    loops = []

    def visit(m, path):
        state[m] = 1
        for d in edges[m]:
            if state.get(d) == 1:
                loops.append(" -> ".join([*path[path.index(d) :], d]))
            elif d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in edges:
        if m not in state:
            visit(m, [m])
    assert loops == []


def test_the_wheel_lists_every_package():
    """pyproject.toml lists the packages by hand (recipes/ and conf/ are mapped into the
    package): a new subpackage missing from it would be left out of the wheel."""
    from setuptools import find_packages

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    conf = tomllib.loads((ROOT.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_packages(str(ROOT.parent), include=["zoo", "zoo.*"]))
    assert set(conf["packages"]) == found | set(conf["package-dir"])
