"""The package's own imports form no cycle (issue 12: cli -> sweep -> workers -> cli once did)."""

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "src" / "lrbatch"


def _module(path: Path) -> str:
    return ".".join(("lrbatch", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
        ".__init__"
    )


def _imports(tree: ast.AST) -> set[str]:
    """Every lrbatch module a module imports, at its top or inside a function (only what
    ``if TYPE_CHECKING:`` guards is left out: it never runs)."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "lrbatch")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.update({node.module} if node.module.split(".")[0] == "lrbatch" else ())
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_no_import_cycle_in_the_package() -> None:
    graph = {_module(path): _imports(ast.parse(path.read_text())) for path in PACKAGE.rglob("*.py")}
    assert "lrbatch.cli" in graph and "lrbatch.sweep" in graph["lrbatch.cli"]  # (lazy: seen)
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
