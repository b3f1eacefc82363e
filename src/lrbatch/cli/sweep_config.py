"""A sweep's config on the command line, for the commands that compose one (``sweep``,
``noise-scale``): ``[SWEEP_FILE] [OVERRIDES...]``, ``--cfg job``, and Hydra's own flags
answered with one line."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from lrbatch.config import ConfigError

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from rich.console import Console

__all__ = [
    "add_config_arguments",
    "add_hydra_flags",
    "print_config",
    "refuse_hydra_flags",
    "sweep_items",
]

_YAML = (".yaml", ".yml")
_FIRST_STEPS = 12  # trials of the plan that `--cfg job` shows


def add_config_arguments(parser: argparse.ArgumentParser, help: str) -> None:
    """``[SWEEP_FILE] OVERRIDE ...`` (``help`` says what they are, with examples)."""
    parser.add_argument("items", nargs="*", metavar="[SWEEP_FILE] OVERRIDE", help=help)


def add_hydra_flags(parser: argparse.ArgumentParser) -> None:
    """``--cfg job``, and Hydra's ``--info`` and ``--hydra-help`` to answer with one line."""
    parser.add_argument(
        "--cfg",
        default=None,
        metavar="job",
        help="print the composed config and the plan's first trials; train nothing",
    )
    parser.add_argument("--info", nargs="?", const="all", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--hydra-help", action="store_true", help=argparse.SUPPRESS)


def sweep_items(items: list[str]) -> tuple[str | None, list[str]]:
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


def refuse_hydra_flags(args: argparse.Namespace) -> None:
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


def print_config(cfg: DictConfig, console: Console, *, plan_steps: bool = True) -> None:
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
