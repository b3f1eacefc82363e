"""``lrbatch``: the command line.

lrbatch sweep [SWEEP_FILE] [OVERRIDES...] [--cfg job]      run or resume a sweep (or print it)
lrbatch worker --storage URL --study NAME [KEY=VALUE...]    join a sweep's study
lrbatch predict --study NAME [--storage URL] --batch 4096 [--batch ...] [--json]
lrbatch predict --base-lr 0.01 --base-batch 128 --batch 512 [--batch ...]
lrbatch noise-scale [SWEEP_FILE] [OVERRIDES...] [--lr LR | --study NAME] [--json]
lrbatch report [--storage URL] [--study NAME] [--out DIR] [--predict 4096 ...]
lrbatch dashboard [--storage URL] [--port 8080]             the verdict, figures, optuna-dashboard
lrbatch studies [--storage URL] [--delete NAME [--yes]]      list (or delete) studies
lrbatch import FILE.csv --storage URL --study NAME          load a grid measured elsewhere

Exit status: 0 done (for ``sweep`` and ``worker``: every batch size has an optimum, or the run
paused at its --trial-limit), 1 a worker failed, 2 bad input, 3 the sweep ended without an
optimum at some batch size (its last line says where and why), 130 interrupted.

Each command is a :class:`~lrbatch.cli.command.Command`, its arguments beside what it does, in
the module of its group: ``sweep.py`` (sweep, worker), ``predict.py``, ``noise_scale.py``,
``report.py`` (report, dashboard), ``studies.py`` (studies, import).
"""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from typing import NoReturn

from rich.markup import escape

from lrbatch import __version__
from lrbatch.cli.command import Command
from lrbatch.cli.noise_scale import NoiseScale
from lrbatch.cli.predict import Predict
from lrbatch.cli.report import Dashboard, Report
from lrbatch.cli.studies import Import, Studies
from lrbatch.cli.sweep import NO_ANSWER, Sweep, Worker
from lrbatch.config import ConfigError
from lrbatch.console import make_console, quiet_libraries

__all__ = ["NO_ANSWER", "main"]

# Each command by its name, in the order `lrbatch --help` lists them.
_COMMANDS: dict[str, Command] = {
    command.name: command
    for command in (
        Sweep(),
        Worker(),
        Predict(),
        NoiseScale(),
        Report(),
        Studies(),
        Dashboard(),
        Import(),
    )
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lrbatch`` console script."""
    console = make_console()
    try:
        args = _parse(argv)
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return 2
    quiet_libraries()
    signal.signal(signal.SIGTERM, _interrupt)  # a scheduler's stop (SLURM): like Ctrl-C
    try:
        return _COMMANDS[args.command].take_action(args, console)
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return 2
    except KeyboardInterrupt:  # (before a command's own handling: while it imports, say)
        console.print("[yellow]Interrupted.[/]")
        return 130
    except RuntimeError as error:
        from lrbatch.workers import WorkerFailed

        if not isinstance(error, WorkerFailed):
            raise
        console.print(f"[bold red]error:[/] {error}", highlight=False, markup=False)
        return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


class _Parser(argparse.ArgumentParser):
    """argparse, its errors one line (a :class:`ConfigError`, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (`{self.prog} --help` lists what is accepted)")


def _parser() -> argparse.ArgumentParser:
    """``lrbatch``'s parser: each command's parser (a :class:`_Parser` too) declared by the
    command."""
    parser = _Parser(
        prog="lrbatch",
        description="How the best learning rate changes with the batch size, measured.",
    )
    parser.add_argument("--version", action="version", version=f"lrbatch {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in _COMMANDS.values():
        command.add_arguments(
            subparsers.add_parser(command.name, help=command.help, description=command.description)
        )
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    args, extras = _parser().parse_known_args(argv)
    gathered = _COMMANDS[args.command].gathers
    unknown = [e for e in extras if gathered is None or e.startswith("-")]
    if unknown:
        raise ConfigError(
            f"unrecognized arguments: {' '.join(unknown)} (`lrbatch {args.command} --help` lists "
            "what is accepted)"
        )
    if extras:
        getattr(args, str(gathered)).extend(extras)
    if getattr(args, "trial_limit", None) is not None and args.trial_limit < 0:
        raise ConfigError(
            f"--trial-limit {args.trial_limit}: accepted: 0 (create the study, train nothing) "
            "or a positive number of trials"
        )
    return args
