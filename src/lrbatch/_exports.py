"""A package's public names, importable from the package and imported when first used.

Importing ``lrbatch.workers.slots`` runs ``lrbatch/workers/__init__.py`` first. Were that file
to import every module of its folder, the light modules would pull in the heavy ones: the
command line would import torch before it prints its help, and the CPU workers' fork server,
started before torch is imported so that forked workers do not wait for its imports, could not
be. So each package declares its public names once, as imports under ``if TYPE_CHECKING:``
(what readers and type checkers see), and :func:`lazy_exports` reads that block and imports a
name's module the first time the name is asked for (PEP 562's module ``__getattr__``)::

    if TYPE_CHECKING:
        from lrbatch.workers.slots import start_worker_server
    else:
        __getattr__, __dir__ = lazy_exports(__name__, __file__)
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["declared_exports", "lazy_exports"]


def declared_exports(init_file: str | Path) -> dict[str, tuple[str, str]]:
    """The names a package's ``__init__.py`` imports under ``if TYPE_CHECKING:``.

    Returns:
        Each exported name → (the module it comes from, its name there).
    """
    tree = ast.parse(Path(init_file).read_text())
    found: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and statement.module:
                    for alias in statement.names:
                        found[alias.asname or alias.name] = (statement.module, alias.name)
    return found


def lazy_exports(
    package: str, init_file: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose public names load when used.

    Args:
        package: the package's ``__name__``.
        init_file: its ``__init__.py`` (``__file__``), whose ``TYPE_CHECKING`` imports declare
            the names.

    Returns:
        ``(__getattr__, __dir__)`` for the package's module namespace.
    """
    where = declared_exports(init_file)

    def __getattr__(name: str) -> Any:
        if name not in where:  # (a submodule not yet imported: ``from pkg import module`` then
            # imports it, as for any package)
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = where[name]
        value = getattr(importlib.import_module(module), attribute)
        setattr(sys.modules[package], name, value)  # asked once: a plain attribute from now on
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *where})

    return __getattr__, __dir__
