"""``lrbatch studies`` and ``lrbatch import``: the studies a storage holds, deleting one, and
a grid measured elsewhere loaded as a study."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from lrbatch.cli.command import Command, add_storage, add_study
from lrbatch.config import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Import", "Studies"]


class Studies(Command):
    name = "studies"
    help = "list the studies in a storage with their state and trials; delete one"
    description = (
        "List the studies in --storage (default: every SQLite file in runs/), each with its "
        "state (running, paused, complete, budget spent, imported) and trial counts."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_storage(parser, "SQLAlchemy URL (default: every file in ./runs/)")
        parser.add_argument("--delete", default=None, metavar="NAME", help="delete this study")
        parser.add_argument("--yes", action="store_true", help="delete without asking")

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from lrbatch.search import delete_study, redact, runs_storages, study_rows

        urls = [args.storage] if args.storage else runs_storages()
        if not urls:
            raise ConfigError(
                "no study found in runs/: run `lrbatch sweep` first, or give --storage"
            )
        rows = [row for url in urls for row in study_rows(url)]
        if args.delete is None and not rows:
            console.print(f"No study in {', '.join(redact(url) for url in urls)}.", highlight=False)
            return 0
        if args.delete is None:
            table = Table(title="Studies", title_justify="left")
            columns = ("storage", "study", "state", "finished", "diverged", "running", "failed")
            for column in columns:
                table.add_column(
                    column, justify="left" if column in ("storage", "study", "state") else "right"
                )
            table.add_column("last trial started")
            for row in rows:
                last = "—" if row.last is None else row.last.strftime("%Y-%m-%d %H:%M")
                counts = (row.finished, row.diverged, row.running, row.failed)
                table.add_row(row.storage, row.name, row.state, *map(str, counts), last)
            console.print(table)
            return 0
        holding = [(url, row) for url in urls for row in study_rows(url) if row.name == args.delete]
        if len(holding) != 1:
            where = f"in {args.storage}" if args.storage else "in runs/"
            names = ", ".join(sorted({row.name for row in rows})) or "none"
            raise ConfigError(
                f"--delete {args.delete}: {len(holding) or 'no'} studies of that name {where}; "
                f"accepted: one study's name ({names}){', with --storage' if holding else ''}"
            )
        url, row = holding[0]
        trials = row.finished + row.running + row.failed
        question = f"Delete study {row.name!r} and its {trials} trials from {row.storage}?"
        if not args.yes and not _confirm(question, f"--delete {args.delete}"):
            console.print("Nothing deleted.")
            return 0
        delete_study(url, row.name)
        console.print(f"Deleted study {row.name!r} ({trials} trials) from {row.storage}.")
        return 0


def _confirm(question: str, command: str) -> bool:
    """Whether the user answers yes to ``question`` on the terminal.

    Raises:
        ConfigError: there is no terminal to ask on (``command`` then needs --yes).
    """
    if not sys.stdin.isatty():
        raise ConfigError(f"{command}: no terminal to confirm on; accepted: --yes to confirm")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


class Import(Command):
    name = "import"
    help = "load a CSV grid (batch_size, lr, metric[, seed, steps, diverged]) into a study"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("csv", type=Path)
        add_storage(parser, "SQLAlchemy URL, e.g. sqlite:///runs/paper.db", required=True)
        add_study(parser, "study name", required=True)
        parser.add_argument(
            "--direction",
            choices=("minimize", "maximize"),
            default="minimize",
            help="of the metric column",
        )

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from optuna.trial import TrialState

        from lrbatch.search import import_csv, open_study, outcome, redact

        added = import_csv(args.csv, args.storage, args.study, args.direction)
        trials = open_study(args.storage, args.study).trials
        diverged = sum(t.state == TrialState.COMPLETE and outcome(t).diverged for t in trials)
        read = (
            f" ({diverged} diverged: said so, or an empty or infinite metric)" if diverged else ""
        )
        console.print(
            f"Imported {added} trials{read} into study {args.study!r} in {redact(args.storage)}; "
            f"see them with: lrbatch report --storage {redact(args.storage)} --study {args.study}",
            highlight=False,
        )
        return 0
