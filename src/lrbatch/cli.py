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
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from omegaconf import DictConfig
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lrbatch import __version__
from lrbatch.config import ConfigError
from lrbatch.console import make_console, quiet_libraries
from lrbatch.science import ANCHORED_RULES, LAW_RULES, RULE_NAMES, power_law, predict

if TYPE_CHECKING:
    import optuna

    from lrbatch.search import Shortfall, SweepPlan
    from lrbatch.workers import SweepOutcome

__all__ = ["NO_ANSWER", "main"]

NO_ANSWER = 3  # exit status: the sweep ended without an optimum at some batch size


_YAML = (".yaml", ".yml")


def _sweep_items(items: list[str]) -> tuple[str | None, list[str]]:
    """(sweep file, overrides) of ``[SWEEP_FILE] [OVERRIDES...]``.

    Raises:
        ConfigError: an item that is neither (a sweep file after overrides, or without its
            ``.yaml``; a word without ``=``).
    """
    sweep_file = items[0] if items and items[0].endswith(_YAML) else None
    overrides = items[1:] if sweep_file else items
    for item in overrides:
        if "=" in item or item.startswith("~"):  # key=value, +key=value, ~key: Hydra's
            continue
        if item.endswith(_YAML):
            raise ConfigError(
                f"sweep file {item} comes after overrides; accepted: the sweep file first, "
                f"then the overrides that change it: lrbatch sweep {item} key=value ..."
            )
        named = [Path(f"{item}.yaml"), Path("sweeps") / f"{item}.yaml"]
        found = next((str(path) for path in named if path.is_file()), None)
        if found:
            raise ConfigError(f"{item!r} is not a sweep file; accepted: its file name, {found}")
        raise ConfigError(
            f"{item!r} is neither a sweep file nor an override; accepted: a sweep file "
            "(sweeps/NAME.yaml, first), then overrides key=value, +key=value or ~key"
        )
    return sweep_file, overrides


def _refuse_hydra_flags(args: argparse.Namespace) -> None:
    """Hydra's own flags that lrbatch, a Hydra-composed program but no Hydra app, has not."""
    flags = {"--info": args.info is not None, "--hydra-help": args.hydra_help}
    for flag in (flag for flag, given in flags.items() if given):
        raise ConfigError(
            f"{flag} is Hydra's (lrbatch composes conf/ with Hydra's compose API, it is not a "
            "Hydra app); accepted: --cfg job (print the composed config and the plan's first "
            "trials), --help (lrbatch's options)"
        )
    if args.cfg not in (None, "job"):
        raise ConfigError(
            f"--cfg {args.cfg}: accepted: --cfg job (lrbatch has no Hydra app config to print)"
        )


def _print_config(cfg: DictConfig, console: Console, *, plan_steps: bool = True) -> None:
    """`--cfg job`: the composed config, then the first trials its plan starts a new study
    with (before any result), as YAML comments. Trains and creates nothing."""
    from omegaconf import OmegaConf

    from lrbatch.search import Observation, SweepPlan
    from lrbatch.workers import objective_direction

    pack = cfg.hardware.pack
    plan = SweepPlan.from_config(cfg.sweep, objective_direction(cfg), pack)
    lines = [OmegaConf.to_yaml(cfg).rstrip()]
    if plan_steps:
        lines.append("# The plan's first trials in a new study (before any result):")
        if pack == "auto":
            lines.append(
                "#   (one at a time here: hardware.pack=auto times packs at each batch size "
                "when the sweep gets there)"
            )
    started: list[Observation] = []
    while plan_steps and len(started) < _FIRST_STEPS:
        decision = plan.next_pack(started)
        if not isinstance(decision, tuple):
            break
        together = f", trained together with {len(decision) - 1} more" if len(decision) > 1 else ""
        for step in decision:
            lines.append(
                f"#   B={step.batch_size} lr={step.lr:.4g} seed={step.seed} ({step.reason})"
                + (together if step is decision[0] else "")
            )
            started.append(
                Observation(step.batch_size, step.lr, step.seed, None, reason=step.reason)
            )
    if len(started) >= _FIRST_STEPS:
        lines.append("#   ... then as the results say")
    console.print("\n".join(lines), markup=False, highlight=False)


_FIRST_STEPS = 12  # trials of the plan that `--cfg job` shows


def _sweep(args: argparse.Namespace, console: Console) -> int:
    from lrbatch.config import load_config, validate
    from lrbatch.workers import cpu_workers, start_worker_server

    _refuse_hydra_flags(args)
    sweep_file, overrides = _sweep_items(args.items)
    cfg = load_config(sweep_file, overrides, check=False)
    if args.cfg:
        from lrbatch.search import check_storage
        from lrbatch.workers import storage_url

        validate(cfg)
        check_storage(storage_url(cfg))
        _print_config(cfg, console)
        return 0
    try:
        several = cfg.hardware.accelerator == "cpu" and cpu_workers(cfg.hardware) > 1
    except (TypeError, ValueError):  # (a bad hardware.workers or threads: validate says so)
        several = False
    if several:
        start_worker_server()  # its imports (seconds) run beside this process's own
    validate(cfg)
    from lrbatch.workers import run_sweep

    try:
        outcome = run_sweep(cfg, console, trial_limit=args.trial_limit)
    except KeyboardInterrupt:
        console.print(
            "[yellow]Interrupted.[/] Finished trials are saved and running ones marked failed; "
            "run the same command to resume."
        )
        return 130
    if outcome.observations:  # (--trial-limit 0 only creates the study, for workers to join)
        _print_report(cfg, console)
    return _print_end(outcome, console)


def _worker(args: argparse.Namespace, console: Console) -> int:
    from lrbatch.search import redact
    from lrbatch.workers import STORAGE_ENV, join_sweep

    url = args.storage or os.environ.get(STORAGE_ENV)
    if not url:
        raise ConfigError(
            f"--storage is missing and ${STORAGE_ENV} is not set; accepted: the study's "
            "SQLAlchemy URL, e.g. postgresql://user@host/lrbatch (a password is best kept in "
            f"${STORAGE_ENV} or ~/.pgpass, out of the shell history)"
        )
    try:
        outcome = join_sweep(url, args.study, args.overrides, console, args.trial_limit)
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted.[/] Running trials are marked failed and retried.")
        return 130
    console.print(f"Study {args.study!r} in {redact(url)}: ", end="")
    return _print_end(outcome, console)


def _print_end(outcome: SweepOutcome, console: Console) -> int:
    """The sweep's last line, what it found; returns the exit status to match."""
    budget = f"its trial budget (sweep.max_trials={outcome.plan.max_trials}) is spent"
    missing = outcome.plan.shortfalls(outcome.observations)
    if outcome.why == "paused":
        found = f"Paused after {outcome.trials_run} trials (--trial-limit); rerun to go on."
    elif missing:
        found = _no_answer(outcome, missing)
        if outcome.why == "budget":
            found += f" Sweep stopped: {budget}."
    elif outcome.why == "budget" and (loose := _tightening(outcome)):
        found = (
            f"Sweep stopped: {budget}; every optimum is pinned and replicated, "
            f"but {loose} still loose: raise it and rerun to add seeds there "
            f"(up to sweep.max_seeds={outcome.plan.seed_limit})."
        )
    elif outcome.why == "budget":
        found = f"Sweep stopped: {budget}; raise it and rerun to pin every optimum."
    else:
        found = "Sweep complete: every optimum is pinned and replicated."
    workers = f" by {outcome.workers} workers" if outcome.workers > 1 else ""
    console.print(
        f"{found} Trials this run: {outcome.trials_run}{workers}. "
        f"Study {outcome.study_name!r} in {outcome.storage}.",
        highlight=False,
        markup=False,
    )
    return NO_ANSWER if missing and outcome.why != "paused" else 0


def _tightening(outcome: SweepOutcome) -> str | None:
    """``B=256, B=512 and B=1024 are`` when every optimum is pinned and replicated with
    ``sweep.seeds`` and only those batch sizes wait for more seeds (loose); else None."""
    states = sorted(outcome.plan.states(outcome.observations).items())
    if not all(s.phase in ("tighten", "done") for _, s in states):
        return None
    loose = [f"B={batch}" for batch, s in states if s.phase == "tighten"]
    if not loose:
        return None
    if len(loose) == 1:
        return f"{loose[0]} is"
    return f"{', '.join(loose[:-1])} and {loose[-1]} are"


def _no_answer(outcome: SweepOutcome, missing: list[Shortfall]) -> str:
    """What the sweep found where some batch size has no optimum."""
    plan = outcome.plan
    finished = [o for o in outcome.observations if o.value is not None]
    if finished and all(o.diverged for o in finished):
        return (
            f"No trial finished: all {len(finished)} diverged, from lr "
            f"{min(o.lr for o in finished):.4g} up; lower sweep.lr_min (now {plan.lr_min:g})."
        )
    if not any(o.reached_target for o in finished) and any(
        o.reached_target is False for o in finished
    ):
        best = f" (best: {outcome.short_of_target})" if outcome.short_of_target else ""
        return f"No trial reached the target{best}: lower budget.target or raise budget.max_epochs."
    return (
        "Not every batch size has an optimum: "
        + "; ".join(_shortfall(s, plan) for s in missing)
        + "."
    )


def _shortfall(shortfall: Shortfall, plan: SweepPlan) -> str:
    """Why one batch size has no optimum, and the setting that would give it one."""
    at = f"B={shortfall.batch_size}"
    best = "" if shortfall.best_lr is None else f"{shortfall.best_lr:.3g}"
    return {
        "untried": f"{at}: no trial finished",
        "diverged": f"{at}: diverges down to sweep.lr_min={plan.lr_min:g} (lower it)",
        "missed_target": f"{at}: no lr reached the target with every seed",
        "at_lr_min": f"{at} never bracketed (best at sweep.lr_min={plan.lr_min:g}: lower it)",
        "at_lr_max": f"{at} never bracketed (best at sweep.lr_max={plan.lr_max:g}: raise it)",
        "below": f"{at} never bracketed (best at the lowest lr tried, {best})",
        "above": f"{at} never bracketed (best at the highest lr tried, {best})",
    }[shortfall.why]


def _print_report(cfg: DictConfig, console: Console) -> None:
    """After a sweep, what `lrbatch report` prints (files and dashboard: `lrbatch report`)."""
    from lrbatch.report import build_report, render
    from lrbatch.search import open_study
    from lrbatch.workers import storage_url

    console.print(render(build_report(open_study(storage_url(cfg), cfg.study.name))))


def _predict(args: argparse.Namespace, console: Console) -> int:
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
                f"{' and '.join(given)} given with --study: accepted: either --study NAME (the "
                "study's laws, stability edge and η0) or --base-lr and --base-batch (each rule "
                "from that base point)"
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
    console.print(table)
    return 0


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


def _noise_scale(args: argparse.Namespace, console: Console) -> int:
    """`lrbatch noise-scale`: B_simple and ε_max at the initial weights and along a short run."""
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(f"--lr {args.lr:g}: accepted: a positive learning rate, per step")
    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: accepted: a positive number of optimizer steps")
    if args.points < 1:
        raise ConfigError(f"--points {args.points}: accepted: a positive number of measurements")
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
        _print_config(cfg, console, plan_steps=False)
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
                task, advance=1, description=f"step {p.step}: B_simple {p.estimate.b_simple:.4g}"
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
                f"Recorded in study {study.study_name!r}: `lrbatch report` draws the SGD optimum "
                "it implies beside the swept optima."
            )
    return 0


def _noise_scale_config(
    args: argparse.Namespace,
) -> tuple[DictConfig, float | None, str, int | None, optuna.Study | None]:
    """(config, lr, where the lr comes from, B0, the study of --study) of `lrbatch
    noise-scale`'s arguments; lr None: none was given or configured (the run measures one)."""
    from lrbatch.config import config_of_study, load_config

    _refuse_hydra_flags(args)
    sweep_file, overrides = _sweep_items(args.items)
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


class _Parser(argparse.ArgumentParser):
    """argparse, its errors one line (a :class:`ConfigError`, exit status 2)."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (`{self.prog} --help` lists what is accepted)")


def _hydra_flags(parser: argparse.ArgumentParser) -> None:
    """``--cfg job``, and Hydra's ``--info`` and ``--hydra-help`` to answer with one line."""
    parser.add_argument(
        "--cfg",
        default=None,
        metavar="job",
        help="print the composed config and the plan's first trials; train nothing",
    )
    parser.add_argument("--info", nargs="?", const="all", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hydra-help", action="store_true", help=argparse.SUPPRESS)


# The list each command gathers its positional arguments in: overrides may come before,
# between and after its options (`lrbatch sweep A --trial-limit 5 B`).
_POSITIONALS = {"sweep": "items", "noise-scale": "items", "worker": "overrides"}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _parser()
    args, extras = parser.parse_known_args(argv)
    gathered = _POSITIONALS.get(args.command)
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


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    _hydra_flags(sweep)

    worker = commands.add_parser(
        "worker",
        help="work on a sweep's study from this shell or machine",
        description="Join the study a `lrbatch sweep` created: train its next trials with "
        "its recorded settings until its plan is done. Run it on as many machines as you like "
        "against one PostgreSQL storage; with hardware.accelerator=gpu it starts one worker "
        "per visible GPU.",
    )
    worker.add_argument(
        "--storage",
        default=None,
        help="the study's SQLAlchemy URL (default: $LRBATCH_STORAGE, which keeps a password "
        "out of the process list)",
    )
    worker.add_argument("--study", required=True, help="the study's name (study.name)")
    worker.add_argument(
        "--trial-limit", type=int, default=None, help="train at most this many trials"
    )
    worker.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="settings that differ on this machine: hardware.accelerator=gpu, "
        "hardware.workers=4, dataset.data_dir=/scratch/data",
    )

    pred = commands.add_parser(
        "predict",
        help="the learning rate at other batch sizes: from a study, or each rule from a base point",
        description="`lrbatch predict --study NAME --batch 4096`: the recommended learning rate "
        "with its 90% interval from the study's fitted laws, kept below the stability edge, "
        "each law's and rule's value, and how far outside the measured batch sizes. "
        "`lrbatch predict --base-lr 0.01 --base-batch 128 --batch 512`: each rule's value.",
    )
    pred.add_argument(
        "--study", default=None, help="predict from this study's optima (its name, study.name)"
    )
    pred.add_argument(
        "--storage", default=None, help="SQLAlchemy URL (default: the last sweep's in ./runs/)"
    )
    pred.add_argument(
        "--base-lr",
        type=float,
        default=None,
        help="η0: the learning rate known best at --base-batch",
    )
    pred.add_argument(
        "--base-batch", type=int, default=None, help="B0: effective batch size of the base point"
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
    pred.add_argument("--json", action="store_true", help="with --study: print one JSON object")

    noise = commands.add_parser(
        "noise-scale",
        help="measure the gradient noise scale B_simple and ε_max, without a sweep",
        description="Measure B_simple = tr(Σ)/|G|² and ε_max = |G|²/(GᵀHG) at the initial "
        "weights and along one short run at B0, and print the SGD optimum they imply at the "
        "sweep's batch sizes. Takes the config a sweep takes: `lrbatch noise-scale "
        "[sweeps/NAME.yaml] [key=value ...]`.",
    )
    noise.add_argument(
        "items",
        nargs="*",
        metavar="[SWEEP_FILE] OVERRIDE",
        help="a sweep YAML file, then overrides like optimizer=adam model.hidden=[64]",
    )
    noise.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak learning rate of the run, per step (default: the study's η0 with --study, "
        "else sweep.base_lr, else ε_opt(B0) measured at the initial weights)",
    )
    noise.add_argument("--study", default=None, help="train at this study's η0, B0 and config")
    noise.add_argument(
        "--storage", default=None, help="the study's SQLAlchemy URL (default: the last sweep's)"
    )
    noise.add_argument(
        "--steps",
        type=int,
        default=None,
        help="optimizer steps of the run (default: one epoch of the training set at B0)",
    )
    noise.add_argument(
        "--points",
        type=int,
        default=8,
        help="measurements along the run, after the one at the initial weights (default 8)",
    )
    noise.add_argument("--json", action="store_true", help="print one JSON object")
    _hydra_flags(noise)

    report = commands.add_parser(
        "report", help="analyse a study: optima, laws, rules' regret, plots"
    )
    _study_arguments(report)
    report.add_argument(
        "--out", type=Path, default=None, help="report directory (default: runs/<study>-report)"
    )
    report.add_argument(
        "--predict",
        type=int,
        action="append",
        default=[],
        metavar="BATCH",
        help="also predict the learning rate at this effective batch size (repeatable)",
    )
    report.add_argument(
        "--no-dashboard",
        action="store_true",
        help="do not save the figures and verdict into the study",
    )

    studies = commands.add_parser(
        "studies",
        help="list the studies in a storage with their state and trials; delete one",
        description="List the studies in --storage (default: every SQLite file in runs/), each "
        "with its state (running, paused, complete, budget spent, imported) and trial counts.",
    )
    studies.add_argument(
        "--storage", default=None, help="SQLAlchemy URL (default: every file in ./runs/)"
    )
    studies.add_argument("--delete", default=None, metavar="NAME", help="delete this study")
    studies.add_argument("--yes", action="store_true", help="delete without asking")

    dashboard = commands.add_parser(
        "dashboard", help="serve lrbatch's view of the study and optuna-dashboard on 127.0.0.1"
    )
    dashboard.add_argument(
        "--storage", default=None, help="SQLAlchemy URL (default: the last sweep's in ./runs/)"
    )
    dashboard.add_argument("--host", default="127.0.0.1")
    dashboard.add_argument("--port", type=int, default=8080)

    imported = commands.add_parser(
        "import",
        help="load a CSV grid (batch_size, lr, metric[, seed, steps, diverged]) into a study",
    )
    imported.add_argument("csv", type=Path)
    imported.add_argument(
        "--storage", required=True, help="SQLAlchemy URL, e.g. sqlite:///runs/paper.db"
    )
    imported.add_argument("--study", required=True, help="study name")
    imported.add_argument(
        "--direction",
        choices=("minimize", "maximize"),
        default="minimize",
        help="of the metric column",
    )
    return parser


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage", default=None, help="SQLAlchemy URL (default: the last sweep's in ./runs/)"
    )
    parser.add_argument(
        "--study", default=None, help="study name (default: the storage's most recent)"
    )


def _report(args: argparse.Namespace, console: Console) -> int:
    from lrbatch.report import build_report, publish, render, write_report
    from lrbatch.search import find_last_study, open_study

    for batch in args.predict:
        if batch <= 0:
            raise ConfigError(f"--predict {batch}: accepted: a positive effective batch size")
    study = open_study(args.storage or find_last_study(), args.study)
    out = args.out or Path("runs") / f"{study.study_name}-report"
    _check_out(out)
    report = build_report(study, args.predict)
    console.print(render(report))
    try:
        written = write_report(report, study, out)
    except OSError as error:
        raise _unwritable(out, error) from None
    if not args.no_dashboard:
        publish(report, study)
    console.print(
        f"Wrote {len(written)} files to {out}/ (report.html, summary.json, trials.csv, plots)."
    )
    return 0


def _studies(args: argparse.Namespace, console: Console) -> int:
    """`lrbatch studies`: the studies in a storage (default: every file in runs/), each with
    its state and trial counts; `--delete NAME` deletes one, once confirmed."""
    from lrbatch.search import delete_study, redact, runs_storages, study_rows

    urls = [args.storage] if args.storage else runs_storages()
    if not urls:
        raise ConfigError("no study found in runs/: run `lrbatch sweep` first, or give --storage")
    rows = [row for url in urls for row in study_rows(url)]
    if args.delete is None and not rows:
        console.print(f"No study in {', '.join(redact(url) for url in urls)}.", highlight=False)
        return 0
    if args.delete is None:
        table = Table(title="Studies", title_justify="left")
        for column in ("storage", "study", "state", "finished", "diverged", "running", "failed"):
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


def _check_out(out: Path) -> None:
    """Raise ConfigError unless the report directory ``out`` exists or can be made, and can be
    written to (made here: the report goes there next)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise _unwritable(out, error) from None


def _unwritable(out: Path, error: OSError) -> ConfigError:
    reason = error.strerror or type(error).__name__
    return ConfigError(
        f"--out {out}: cannot write the report there ({reason}); accepted: a directory you "
        "can write to"
    )


def _dashboard(args: argparse.Namespace, console: Console) -> int:
    from lrbatch.report import serve
    from lrbatch.search import find_last_study, open_storage, redact

    url = args.storage or find_last_study()
    storage = open_storage(url, heartbeat_interval=None, create=False)
    _check_port(args.host, args.port)
    address = f"http://{args.host}:{args.port}"
    console.print(
        f"lrbatch's view of {redact(url)} on {address}/ (the verdict and the figures), "
        f"optuna-dashboard's on {address}/dashboard/ (Ctrl-C stops it)"
    )
    serve(storage, args.host, args.port)
    return 0


def _check_port(host: str, port: int) -> None:
    """Raise ConfigError unless the dashboard can listen on ``host``:``port``."""
    import socket

    try:
        with socket.create_server((host, port)):  # (as the server binds: address reusable)
            pass
    except OSError as error:
        accepted = "a free port (--port 8081, say)"
        if error.errno != errno.EADDRINUSE:
            accepted = "an address of this machine (--host 127.0.0.1, or 0.0.0.0 for every one)"
        raise ConfigError(
            f"--host={host} --port={port}: cannot listen there ({os.strerror(error.errno or 0)}); "
            f"accepted: {accepted}"
        ) from None


def _import(args: argparse.Namespace, console: Console) -> int:
    from optuna.trial import TrialState

    from lrbatch.search import import_csv, open_study, outcome, redact

    added = import_csv(args.csv, args.storage, args.study, args.direction)
    trials = open_study(args.storage, args.study).trials
    diverged = sum(t.state == TrialState.COMPLETE and outcome(t).diverged for t in trials)
    read = f" ({diverged} diverged: said so, or an empty or infinite metric)" if diverged else ""
    console.print(
        f"Imported {added} trials{read} into study {args.study!r} in {redact(args.storage)}; "
        f"see them with: lrbatch report --storage {redact(args.storage)} --study {args.study}",
        highlight=False,
    )
    return 0


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
        commands = {
            "sweep": _sweep,
            "worker": _worker,
            "predict": _predict,
            "report": _report,
            "dashboard": _dashboard,
            "studies": _studies,
            "import": _import,
            "noise-scale": _noise_scale,
        }
        return commands[args.command](args, console)
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


if __name__ == "__main__":
    sys.exit(main())
