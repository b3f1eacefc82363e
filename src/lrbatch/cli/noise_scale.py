"""``lrbatch noise-scale``: the gradient noise scale B_simple and ε_max along one short run,
without a sweep."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from lrbatch.cli.command import Command, add_storage, add_study
from lrbatch.cli.sweep_config import (
    add_config_arguments,
    add_hydra_flags,
    print_config,
    refuse_hydra_flags,
    sweep_items,
)
from lrbatch.config import ConfigError
from lrbatch.console import make_console

if TYPE_CHECKING:
    import optuna
    from omegaconf import DictConfig
    from rich.console import Console

__all__ = ["NoiseScale"]


class NoiseScale(Command):
    name = "noise-scale"
    help = "measure the gradient noise scale B_simple and ε_max, without a sweep"
    description = (
        "Measure B_simple = tr(Σ)/|G|² and ε_max = |G|²/(GᵀHG) at the initial weights and "
        "along one short run at B0, and print the SGD optimum they imply at the sweep's batch "
        "sizes. Takes the config a sweep takes: `lrbatch noise-scale [sweeps/NAME.yaml] "
        "[key=value ...]`."
    )
    gathers = "items"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_config_arguments(
            parser, "a sweep YAML file, then overrides like optimizer=adam model.hidden=[64]"
        )
        parser.add_argument(
            "--lr",
            type=float,
            default=None,
            help="peak learning rate of the run, per step (default: the study's η0 with "
            "--study, else sweep.base_lr, else ε_opt(B0) measured at the initial weights)",
        )
        add_study(parser, "train at this study's η0, B0 and config")
        add_storage(parser, "the study's SQLAlchemy URL (default: the last sweep's)")
        parser.add_argument(
            "--steps",
            type=int,
            default=None,
            help="optimizer steps of the run (default: one epoch of the training set at B0)",
        )
        parser.add_argument(
            "--points",
            type=int,
            default=8,
            help="measurements along the run, after the one at the initial weights (default 8)",
        )
        parser.add_argument("--json", action="store_true", help="print one JSON object")
        add_hydra_flags(parser)

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
            raise ConfigError(f"--lr {args.lr:g}: accepted: a positive learning rate, per step")
        if args.steps is not None and args.steps < 1:
            raise ConfigError(
                f"--steps {args.steps}: accepted: a positive number of optimizer steps"
            )
        if args.points < 1:
            raise ConfigError(
                f"--points {args.points}: accepted: a positive number of measurements"
            )
        if args.lr is not None and (args.study is not None or args.storage is not None):
            raise ConfigError(
                "--lr given with --study: accepted: one of them (--study trains at the study's η0)"
            )
        import json

        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from lrbatch.training import (
            base_batch,
            noise_scale_json,
            optimizer_name,
            plain_sgd,
            render_noise_scale,
            run_noise_scale,
        )

        cfg, lr, source, batch, study = _noise_scale_config(args)
        if args.cfg:
            print_config(cfg, console, plan_steps=False)
            return 0
        progress = Progress(
            TextColumn("measuring the noise scale"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=make_console(stderr=True) if args.json else console,
            transient=True,
        )
        with progress:
            task = progress.add_task("", total=args.points + 1)
            run = run_noise_scale(
                cfg,
                lr,
                source,
                args.steps,
                args.points,
                batch or base_batch(cfg),
                on_measured=lambda p: progress.update(
                    task,
                    advance=1,
                    description=f"step {p.step}: B_simple {p.estimate.b_simple:.4g}",
                ),
            )
        if study is not None:  # the report draws the SGD optimum this run implies
            from lrbatch.search import record_noise_run

            record_noise_run(study, noise_scale_json(run), optimizer_name(cfg), plain_sgd(cfg))
        if args.json:
            print(json.dumps(noise_scale_json(run), indent=2, allow_nan=False, ensure_ascii=False))
        else:
            console.print(render_noise_scale(run, None if plain_sgd(cfg) else optimizer_name(cfg)))
            if study is not None:
                console.print(
                    f"Recorded in study {study.study_name!r}: `lrbatch report` draws the SGD "
                    "optimum it implies beside the swept optima."
                )
        return 0


def _noise_scale_config(
    args: argparse.Namespace,
) -> tuple[DictConfig, float | None, str, int | None, optuna.Study | None]:
    """(config, lr, where the lr comes from, B0, the study of --study) of `lrbatch
    noise-scale`'s arguments; lr None: none was given or configured (the run measures one)."""
    from lrbatch.config import config_of_study, load_config

    refuse_hydra_flags(args)
    sweep_file, overrides = sweep_items(args.items)
    if args.study is None and args.storage is None:
        cfg = load_config(sweep_file, overrides)
        if args.lr is not None:
            return cfg, args.lr, "--lr", None, None
        if cfg.sweep.base_lr is not None:
            return cfg, float(cfg.sweep.base_lr), "sweep.base_lr", None, None
        from lrbatch.training import optimizer_name, plain_sgd

        if not plain_sgd(cfg):
            raise ConfigError(
                f"--lr missing with optimizer {optimizer_name(cfg)}: accepted: --lr, --study "
                "or sweep.base_lr (the default, ε_opt(B0), is plain SGD's optimum)"
            )
        return (
            cfg,
            None,
            "ε_opt(B0) at the initial weights: no --lr, --study or base_lr",
            None,
            None,
        )
    if sweep_file is not None:
        raise ConfigError(
            f"sweep file {sweep_file} given with --study: accepted: key=value overrides of the "
            "study's settings (the study's config is used)"
        )
    from lrbatch.report import build_report
    from lrbatch.search import find_last_study, open_study

    study = open_study(args.storage or find_last_study(), args.study)
    recorded = study.user_attrs.get("lrbatch.config")
    cfg = config_of_study(recorded, overrides) if recorded else load_config(None, overrides)
    report = build_report(study)
    if report.base_lr is None:
        raise ConfigError(
            f"--study {study.study_name}: it has no η0 yet (no optimum at B0 = "
            f"{report.base_batch}): give --lr instead, or run the sweep further"
        )
    source = f"η0 of study {study.study_name!r}"
    return cfg, float(report.base_lr), source, report.base_batch or None, study
