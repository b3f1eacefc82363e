"""What every ``lrbatch`` command is: a class with its options beside what it does, as in
Optuna's command line; and the options several commands take, each declared once here."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Command", "add_storage", "add_study"]


class Command:
    """One ``lrbatch`` command: :meth:`add_arguments` declares its options on its own parser,
    :meth:`take_action` runs it with what was parsed."""

    name: ClassVar[str]  # as typed: ``lrbatch NAME``
    help: ClassVar[str]  # its line in ``lrbatch --help``
    description: ClassVar[str | None] = None  # the top of ``lrbatch NAME --help``
    # The list the command gathers its positional arguments in, when they may come before,
    # between and after its options (`lrbatch sweep A --trial-limit 5 B`); None: it takes no
    # such list.
    gathers: ClassVar[str | None] = None

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Declare the command's arguments on its ``parser``."""

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        """Run the command.

        Args:
            args: its parsed arguments.
            console: where it prints.

        Returns:
            The exit status (see ``lrbatch.cli``).

        Raises:
            ConfigError: bad input (exit status 2, the message printed as one line).
        """
        raise NotImplementedError


def add_storage(
    parser: argparse.ArgumentParser,
    help: str = "SQLAlchemy URL (default: the last sweep's in ./runs/)",
    *,
    required: bool = False,
) -> None:
    """``--storage URL``: the storage that holds the study, a SQLAlchemy URL."""
    parser.add_argument("--storage", default=None, required=required, help=help)


def add_study(parser: argparse.ArgumentParser, help: str, *, required: bool = False) -> None:
    """``--study NAME``: the study's name (its ``study.name``)."""
    parser.add_argument("--study", default=None, required=required, help=help)
