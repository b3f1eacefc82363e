"""``lrbatch sweep`` and ``lrbatch worker``: run a sweep, or join one, and say at the end what
it found."""

from __future__ import annotations

import argparse
import os
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

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from rich.console import Console

    from lrbatch.search import Shortfall, SweepPlan
    from lrbatch.workers import SweepOutcome

__all__ = ["NO_ANSWER", "Sweep", "Worker"]

NO_ANSWER = 3  # exit status: the sweep ended without an optimum at some batch size


class Sweep(Command):
    name = "sweep"
    help = "run or resume a sweep"
    description = (
        "Run a sweep: `lrbatch sweep [sweeps/NAME.yaml] [key=value ...]` (Hydra override syntax)."
    )
    gathers = "items"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_config_arguments(
            parser,
            "a sweep YAML file, then overrides like optimizer=adam sweep.batch_sizes=[32,128]",
        )
        parser.add_argument(
            "--trial-limit",
            type=int,
            default=None,
            help="train at most this many trials in this run",
        )
        add_hydra_flags(parser)

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from lrbatch.config import load_config, validate
        from lrbatch.workers import cpu_workers, start_worker_server

        refuse_hydra_flags(args)
        sweep_file, overrides = sweep_items(args.items)
        cfg = load_config(sweep_file, overrides, check=False)
        if args.cfg:
            from lrbatch.search import check_storage
            from lrbatch.workers import storage_url

            validate(cfg)
            check_storage(storage_url(cfg))
            print_config(cfg, console)
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
                "[yellow]Interrupted.[/] Finished trials are saved and running ones marked "
                "failed; run the same command to resume."
            )
            return 130
        if outcome.observations:  # (--trial-limit 0 only creates the study, for workers to join)
            _print_report(cfg, console)
        return _print_end(outcome, console)


class Worker(Command):
    name = "worker"
    help = "work on a sweep's study from this shell or machine"
    description = (
        "Join the study a `lrbatch sweep` created: train its next trials with its recorded "
        "settings until its plan is done. Run it on as many machines as you like against one "
        "PostgreSQL storage; with hardware.accelerator=gpu it starts one worker per visible GPU."
    )
    gathers = "overrides"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_storage(
            parser,
            "the study's SQLAlchemy URL (default: $LRBATCH_STORAGE, which keeps a password out "
            "of the process list)",
        )
        add_study(parser, "the study's name (study.name)", required=True)
        parser.add_argument(
            "--trial-limit", type=int, default=None, help="train at most this many trials"
        )
        parser.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="settings that differ on this machine: hardware.accelerator=gpu, "
            "hardware.workers=4, dataset.data_dir=/scratch/data",
        )

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from lrbatch.search import redact
        from lrbatch.workers import STORAGE_ENV, join_sweep

        url = args.storage or os.environ.get(STORAGE_ENV)
        if not url:
            raise ConfigError(
                f"--storage is missing and ${STORAGE_ENV} is not set; accepted: the study's "
                "SQLAlchemy URL, e.g. postgresql://user@host/lrbatch (a password is best kept "
                f"in ${STORAGE_ENV} or ~/.pgpass, out of the shell history)"
            )
        try:
            outcome = join_sweep(url, args.study, args.overrides, console, args.trial_limit)
        except KeyboardInterrupt:
            console.print("[yellow]Interrupted.[/] Running trials are marked failed and retried.")
            return 130
        console.print(f"Study {args.study!r} in {redact(url)}: ", end="")
        return _print_end(outcome, console)


def _print_report(cfg: DictConfig, console: Console) -> None:
    """After a sweep, what `lrbatch report` prints (files and dashboard: `lrbatch report`)."""
    from lrbatch.report import build_report, render
    from lrbatch.search import open_study
    from lrbatch.workers import storage_url

    console.print(render(build_report(open_study(storage_url(cfg), cfg.study.name))))


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
