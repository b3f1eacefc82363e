"""The package's map holds: each folder a stage, imports run one way (docs/development.md).

science ← (config, console, data, models, optim) ← search ← training ← workers ← report ← cli:
a module imports only from its own layer or those below it, never a circle; the numerical core
imports no torch, Optuna or Lightning; across folders, code imports a folder's public names
(``from lrbatch.science import fit_laws``), not the modules inside it.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from lrbatch._exports import declared_exports

PACKAGE = ROOT / "src" / "lrbatch"
FOLDERS = ("science", "search", "training", "workers", "report", "data")
# Layer of each folder or root module; a module may import its own layer and those below.
LAYERS = {
    "lrbatch": 0,  # the package itself: __version__ and lazy names, light at import
    "_exports": 0,
    "science": 0,
    "config": 1,
    "console": 1,
    "data": 1,
    "models": 1,
    "optim": 1,
    "search": 2,
    "training": 3,
    "workers": 4,
    "report": 5,
    "cli": 6,
    "__main__": 6,
}
HEAVY = ("torch", "optuna", "lightning", "hydra", "omegaconf", "sqlalchemy")


def _module(path: Path, package: Path = PACKAGE) -> str:
    return ".".join(("lrbatch", *path.relative_to(package).with_suffix("").parts)).removesuffix(
        ".__init__"
    )


def _import_nodes(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import a module runs, at its top or inside a function (only what ``if
    TYPE_CHECKING:`` guards is left out: it never runs)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _stated(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The lrbatch modules an import statement names (``from lrbatch.x import y``: lrbatch.x)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "lrbatch"]
    if node.level == 0 and node.module and node.module.split(".")[0] == "lrbatch":
        return [node.module]
    return []


def _loaded(node: ast.Import | ast.ImportFrom, package: Path) -> set[str]:
    """The lrbatch modules an import statement loads: a package's lazy name counts as the
    module it comes from (a circle through a package's ``__init__`` is still a circle)."""
    modules = set(_stated(node))
    if isinstance(node, ast.ImportFrom) and modules:
        init = package.parent.joinpath(*node.module.split("."), "__init__.py")  # type: ignore[union-attr]
        exported = declared_exports(init) if init.is_file() else {}
        for alias in node.names:
            if alias.name in exported:
                modules.add(exported[alias.name][0])
            elif (init.parent / f"{alias.name}.py").is_file():  # from a package import a module
                modules.add(f"{node.module}.{alias.name}")
    return modules


def _graph(package: Path) -> dict[str, set[str]]:
    return {
        _module(path, package): set().union(
            *(_loaded(node, package) for node in _import_nodes(ast.parse(path.read_text())))
        )
        for path in package.rglob("*.py")
    }


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1] if len(parts) > 1 else "lrbatch")


def _folder(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in FOLDERS else None


def map_violations(package: Path) -> list[str]:
    """What breaks the map in a tree of lrbatch's shape: imports up a layer, imports into
    another folder's modules, heavy imports in science, modules of no layer."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = _module(path, package)
        layer = _layer(module)
        if layer is None:
            found.append(f"{module}: in no layer (add it to a folder, or to LAYERS)")
            continue
        for node in _import_nodes(ast.parse(path.read_text())):
            line = f"{module}:{node.lineno}"
            for target in _stated(node):
                target_layer = _layer(target)
                if target_layer is not None and target_layer > layer:
                    found.append(f"{line} imports {target}, a layer above it")
                folder = _folder(target)
                if folder and folder != _folder(module) and target != f"lrbatch.{folder}":
                    found.append(f"{line} imports {target}: import lrbatch.{folder}'s names")
            if _folder(module) == "science":
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                for name in names:
                    if name.split(".")[0] in HEAVY:
                        found.append(f"{line} imports {name}: science is pure numerics")
    return found


def test_the_package_keeps_its_map() -> None:
    assert map_violations(PACKAGE) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "lrbatch"
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_the_map_check_finds_each_kind_of_break(tmp_path: Path) -> None:
    """The check fires: an import up a layer (lazy, in a function), into another folder's
    module, torch in science, a module of no layer; a package import and TYPE_CHECKING pass."""
    package = _tree(
        tmp_path,
        {
            "science/__init__.py": "",
            "science/laws.py": "import numpy\ndef f():\n    import torch.nn\n",
            "search/__init__.py": "",
            "search/plan.py": "from lrbatch.science import laws\n",
            "training/__init__.py": "",
            "training/loop.py": "from lrbatch.search.plan import SweepPlan\n",
            "report/__init__.py": "",
            "report/view.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from lrbatch.cli import main\n",
            "workers/__init__.py": "",
            "workers/sweep.py": "def f():\n    from lrbatch.report import view\n",
            "stray.py": "",
        },
    )
    assert map_violations(package) == [
        "lrbatch.science.laws:3 imports torch.nn: science is pure numerics",
        "lrbatch.stray: in no layer (add it to a folder, or to LAYERS)",
        "lrbatch.training.loop:1 imports lrbatch.search.plan: import lrbatch.search's names",
        "lrbatch.workers.sweep:2 imports lrbatch.report, a layer above it",
    ]


def test_no_import_cycle_in_the_package() -> None:
    graph = _graph(PACKAGE)
    assert "lrbatch.workers.sweep" in graph["lrbatch.cli.sweep"]  # lazy, through the package: seen
    done: set[str] = set()

    def walk(module: str, path: list[str]) -> None:
        if module in path:
            cycle = " -> ".join([*path[path.index(module) :], module])
            raise AssertionError(f"import cycle: {cycle}")
        if module in done or module not in graph:
            return
        for imported in sorted(graph[module] - {module}):
            walk(imported, [*path, module])
        done.add(module)

    for module in sorted(graph):
        walk(module, [])


def test_a_cycle_through_a_package_name_is_seen(tmp_path: Path) -> None:
    package = _tree(
        tmp_path,
        {
            "search/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from lrbatch.search.plan import SweepPlan\n",
            "search/plan.py": "from lrbatch.training import train\n",
            "training/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from lrbatch.training.loop import train\n",
            "training/loop.py": "from lrbatch.search import SweepPlan\n",
        },
    )
    graph = _graph(package)
    assert "lrbatch.search.plan" in graph["lrbatch.training.loop"]
    assert "lrbatch.training.loop" in graph["lrbatch.search.plan"]


PACKAGES = ["lrbatch", *(f"lrbatch.{folder}" for folder in FOLDERS)]


@pytest.mark.parametrize("name", PACKAGES)
def test_each_package_exports_what_it_declares(name: str) -> None:
    package = importlib.import_module(name)
    init = Path(package.__file__)  # type: ignore[arg-type]
    declared = declared_exports(init)
    assert sorted(package.__all__) == sorted({*declared, *(["__version__"] * (name == "lrbatch"))})
    submodules = {path.stem for path in init.parent.iterdir()} - {"__init__"}
    assert not set(declared) & submodules, "a name that is also a module is shadowed by it"
    for exported, (module, attribute) in declared.items():
        assert getattr(package, exported) is getattr(importlib.import_module(module), attribute)
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        package.no_such_name  # noqa: B018


@pytest.mark.parametrize(
    ("statement", "unloaded"),
    [
        ("import lrbatch.cli", ("torch", "lightning", "optuna", "lrbatch.search.plan")),
        ("from lrbatch.workers.slots import start_worker_server", ("torch", "lightning")),
        ("from lrbatch.science import fit_laws", ("torch", "optuna", "lrbatch.science.theory")),
        ("from lrbatch import LRBatchSampler", ("torch", "lightning")),
    ],
)
def test_importing_a_name_loads_only_its_module(statement: str, unloaded: tuple[str, ...]) -> None:
    """Light imports stay light: the command line starts, and the CPU workers' fork server is
    started, before torch is imported (lrbatch.workers.slots)."""
    check = f"import sys\n{statement}\nprint(' '.join(m for m in {unloaded!r} if m in sys.modules))"
    run = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert run.stdout.split() == []
