"""``lrbatch``: the command line.

lrbatch sweep [SWEEP_FILE] [OVERRIDES...]      run or resume a sweep
lrbatch predict --base-lr 0.01 --base-batch 128 --batch 512 [--batch ...]
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from lrbatch import __version__
from lrbatch.config import ConfigError
from lrbatch.rules import RULE_NAMES, power_law, predict

__all__ = ["main"]


def _quiet_libraries() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name in ("lightning", "lightning.fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings(
        "ignore", category=UserWarning, message=".*(num_workers|does not have many workers).*"
    )


def _sweep(args: argparse.Namespace, console: Console) -> int:
    from lrbatch.config import load_config
    from lrbatch.summary import summary_table
    from lrbatch.sweep import objective_name, run_sweep

    sweep_file = args.items[0] if args.items and args.items[0].endswith((".yaml", ".yml")) else None
    overrides = args.items[1:] if sweep_file else args.items
    cfg = load_config(sweep_file, overrides)
    try:
        outcome = run_sweep(cfg, console, trial_limit=args.trial_limit)
    except KeyboardInterrupt:
        console.print(
            "[yellow]Interrupted.[/] Finished trials are saved; run the same command to resume."
        )
        return 130
    console.print(summary_table(outcome.plan, outcome.observations, objective_name(cfg)))
    ends = {
        "complete": "Sweep complete: every optimum is pinned and replicated.",
        "budget": f"Sweep stopped: its trial budget (sweep.max_trials={outcome.plan.max_trials}) "
        "is spent; raise it and rerun to go on.",
        "paused": f"Paused after {outcome.trials_run} trials (--trial-limit); rerun to go on.",
    }
    console.print(
        f"{ends[outcome.why]} Trials this run: {outcome.trials_run}. "
        f"Study {outcome.study_name!r} in {outcome.storage}."
    )
    return 0


def _predict(args: argparse.Namespace, console: Console) -> int:
    table = Table(
        title=f"Learning rate by rule, anchored at η0 = {args.base_lr:g} for B0 = {args.base_batch}"
    )
    table.add_column("batch", justify="right")
    rules = [
        r
        for r in RULE_NAMES
        if r in ("constant", "linear", "square_root") or args.b_noise is not None
    ]
    for rule in rules:
        table.add_column(rule, justify="right")
    if args.alpha is not None:
        table.add_column(f"power α={args.alpha:g}", justify="right")
    for batch in args.batch:
        try:
            predicted = predict(args.base_lr, args.base_batch, batch, rules, args.b_noise)
        except ValueError as error:  # name the flags the user typed
            message = str(error)
            for name in ("base_lr", "base_batch", "b_noise", "batch"):
                message = message.replace(f"{name} must", f"--{name.replace('_', '-')} must")
            raise ConfigError(message) from None
        cells = [f"{predicted[r]:.4g}" for r in rules]
        if args.alpha is not None:
            cells.append(f"{power_law(batch, args.base_batch, args.base_lr, args.alpha):.4g}")
        table.add_row(str(batch), *cells)
    console.print(table)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrbatch",
        description="How the best learning rate changes with the batch size, measured.",
    )
    parser.add_argument("--version", action="version", version=f"lrbatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser(
        "sweep",
        help="run or resume a sweep",
        description="Run a sweep: `lrbatch sweep [sweeps/NAME.yaml] [key=value ...]` "
        "(Hydra override syntax).",
    )
    sweep.add_argument(
        "items",
        nargs="*",
        metavar="[SWEEP_FILE] OVERRIDE",
        help="a sweep YAML file, then overrides like optimizer=adam sweep.batch_sizes=[32,128]",
    )
    sweep.add_argument(
        "--trial-limit", type=int, default=None, help="train at most this many trials in this run"
    )

    pred = commands.add_parser(
        "predict", help="print each rule's learning rate at other batch sizes"
    )
    pred.add_argument(
        "--base-lr",
        type=float,
        required=True,
        help="η0: the learning rate known best at --base-batch",
    )
    pred.add_argument(
        "--base-batch", type=int, required=True, help="B0: effective batch size of the base point"
    )
    pred.add_argument(
        "--batch",
        type=int,
        action="append",
        required=True,
        help="effective batch size to predict for (repeatable)",
    )
    pred.add_argument(
        "--b-noise",
        type=float,
        default=None,
        help="B_noise (saturating) and B_peak (surge), in samples",
    )
    pred.add_argument("--alpha", type=float, default=None, help="exponent of a power-law rule")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lrbatch`` console script."""
    args = _parser().parse_args(argv)
    console = Console()
    _quiet_libraries()
    try:
        return _sweep(args, console) if args.command == "sweep" else _predict(args, console)
    except ConfigError as error:
        console.print(f"[bold red]error:[/] {error}", highlight=False)
        return 2


if __name__ == "__main__":
    sys.exit(main())
