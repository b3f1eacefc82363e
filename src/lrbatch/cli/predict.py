"""``lrbatch predict``: the learning rate at other batch sizes, from a study's fitted laws or
from each rule at a base point."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from rich.table import Table

from lrbatch.cli.command import Command, add_storage, add_study
from lrbatch.config import ConfigError
from lrbatch.science import ANCHORED_RULES, LAW_RULES, RULE_NAMES, power_law, predict

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Predict"]


class Predict(Command):
    name = "predict"
    help = "the learning rate at other batch sizes: from a study, or each rule from a base point"
    description = (
        "`lrbatch predict --study NAME --batch 4096`: the recommended learning rate with its "
        "90% interval from the study's fitted laws, kept below the stability edge, each law's "
        "and rule's value, and how far outside the measured batch sizes. "
        "`lrbatch predict --base-lr 0.01 --base-batch 128 --batch 512`: each rule's value."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_study(parser, "predict from this study's optima (its name, study.name)")
        add_storage(parser)
        parser.add_argument(
            "--base-lr",
            type=float,
            default=None,
            help="η0: the learning rate known best at --base-batch",
        )
        parser.add_argument(
            "--base-batch",
            type=int,
            default=None,
            help="B0: effective batch size of the base point",
        )
        parser.add_argument(
            "--batch",
            type=int,
            action="append",
            required=True,
            help="effective batch size to predict for (repeatable)",
        )
        parser.add_argument(
            "--b-noise",
            type=float,
            default=None,
            help="B_noise (saturating) and B_peak (surge), in samples",
        )
        parser.add_argument(
            "--alpha", type=float, default=None, help="exponent of a power-law rule"
        )
        parser.add_argument(
            "--json", action="store_true", help="with --study: print one JSON object"
        )

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        for batch in args.batch:
            if batch <= 0:
                raise ConfigError(f"--batch {batch}: accepted: a positive effective batch size")
        rule_flags = {
            "--base-lr": args.base_lr,
            "--base-batch": args.base_batch,
            "--b-noise": args.b_noise,
            "--alpha": args.alpha,
        }
        if args.study is not None or args.storage is not None:
            given = [flag for flag, value in rule_flags.items() if value is not None]
            if given:
                raise ConfigError(
                    f"{' and '.join(given)} given with --study: accepted: either --study NAME "
                    "(the study's laws, stability edge and η0) or --base-lr and --base-batch "
                    "(each rule from that base point)"
                )
            return _predict_study(args, console)
        missing = [flag for flag in ("--base-lr", "--base-batch") if rule_flags[flag] is None]
        if missing:
            raise ConfigError(
                f"{' and '.join(missing)} missing: accepted: --study NAME, or --base-lr and "
                "--base-batch"
            )
        if args.json:
            raise ConfigError("--json: accepted with --study only")
        console.print(_rule_table(args))
        return 0


def _rule_table(args: argparse.Namespace) -> Table:
    """Each rule's learning rate at each --batch, from the base point (--base-lr, --base-batch)."""
    table = Table(
        title=f"Learning rate by rule, anchored at η0 = {args.base_lr:g} for B0 = {args.base_batch}"
    )
    table.add_column("batch", justify="right")
    rules = [
        r
        for r in RULE_NAMES
        if r in ANCHORED_RULES or (args.b_noise is not None and r in LAW_RULES)
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
    return table


def _predict_study(args: argparse.Namespace, console: Console) -> int:
    """`lrbatch predict --study`: the learning rate at each --batch from a study's analysis."""
    import json
    from dataclasses import asdict

    from lrbatch.report import build_report, json_ready, prediction_view
    from lrbatch.search import find_last_study, open_study

    study = open_study(args.storage or find_last_study(), args.study)
    report = build_report(study, args.batch)
    if not report.predictions:
        bracketed = sum(o.bracketed for o in report.optima)
        raise ConfigError(
            f"--study {study.study_name}: {bracketed} of {len(report.optima)} batch sizes "
            "bracketed their optimum; a prediction needs at least 2 (run the sweep further)"
        )
    if args.json:
        anchor = {"batch_size": report.base_batch, "lr": report.base_lr}
        predictions = [asdict(p) for p in report.predictions]
        data = {"study": study.study_name, "base_point": anchor, "predictions": predictions}
        print(json.dumps(json_ready(data), indent=2, allow_nan=False))
    else:
        view = prediction_view(
            study.study_name, report.predictions, report.base_batch, report.base_lr
        )
        console.print(view)
    return 0
