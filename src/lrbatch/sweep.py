"""Running a sweep: check everything, open or resume the study, train until the plan is done.

Everything that can be wrong with the input is found before the first trial and before the
storage is created: settings, dataset, model, optimizer, batch sizes against the data, the
storage itself, and, when resuming, that the study was run with the same training settings.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import optuna
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import Trial
from rich.console import Console

from lrbatch import __version__
from lrbatch.config import ConfigError, validate
from lrbatch.data import TensorData
from lrbatch.display import SweepProgress
from lrbatch.plan import WAIT, Finished, Observation, Proposal, SweepPlan
from lrbatch.sampler import LRBatchSampler, observations
from lrbatch.storage import check_storage, default_url, open_storage, redact
from lrbatch.train import build_model, load_data, make_fabric, train

__all__ = ["TRAINING_SETTINGS", "SweepOutcome", "Worker", "prepare", "run_sweep", "storage_url"]

# Settings that change what a trial measures: a study keeps one value of each for its life.
TRAINING_SETTINGS = (
    "dataset",
    "model",
    "optimizer",
    "schedule",
    "budget",
    "study.metric",
    "study.direction",
    "hardware.precision",
    "hardware.max_micro_batch",  # BatchNorm sees the micro-batch
)
# ...less where the data lives, which differs between machines sharing one study
_LOCAL_SETTINGS = ("data_dir", "download")
_POLL_S = 2.0  # how often a worker with nothing to do looks at the study again


@dataclass
class SweepOutcome:
    """How a sweep run ended.

    Attributes:
        why: ``complete`` (every optimum pinned and replicated), ``budget`` (sweep.max_trials
            spent) or ``paused`` (this run's own trial limit reached).
        trials_run: trials this run trained.
        observations: all finished trials of the study at the end.
    """

    study_name: str
    storage: str
    why: str
    trials_run: int
    plan: SweepPlan
    observations: list[Observation]


def storage_url(cfg: DictConfig) -> str:
    """``study.storage``, or the default SQLite file named after the study."""
    return str(cfg.study.storage or default_url(cfg.study.name))


def training_settings(cfg: DictConfig) -> dict[str, Any]:
    """The settings in :data:`TRAINING_SETTINGS`, resolved, as plain data."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(resolved, dict)
    settings: dict[str, Any] = {}
    for key in TRAINING_SETTINGS:
        value: Any = resolved
        for part in key.split("."):
            value = value[part]
        settings[key] = value
    settings["dataset"] = {k: v for k, v in settings["dataset"].items() if k not in _LOCAL_SETTINGS}
    return settings


def objective_name(cfg: DictConfig) -> str:
    """What a trial's value is: ``study.metric``, or steps to target."""
    return "steps to target" if cfg.budget.kind == "target" else str(cfg.study.metric)


def objective_direction(cfg: DictConfig) -> str:
    """The study's direction: ``study.direction``, except that with the target budget the
    objective is optimizer steps to reach the target, and fewer is better."""
    return "minimize" if cfg.budget.kind == "target" else str(cfg.study.direction)


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    changes = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changes += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            changes.append(f"{prefix}{key}: {json.dumps(a)} in the study, {json.dumps(b)} now")
    return changes


@dataclass
class Worker:
    """Everything a worker needs to train trials of one study."""

    cfg: DictConfig
    plan: SweepPlan
    data: TensorData
    fabric: L.Fabric
    study: optuna.Study
    sampler: LRBatchSampler

    def observations(self) -> list[Observation]:
        return observations(self.study.get_trials(deepcopy=False))


def _cause(error: BaseException) -> str:
    """The root error's message: Hydra wraps a builder's error in InstantiationException."""
    while isinstance(error, HydraException) and error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def _check_data_and_model(cfg: DictConfig, plan: SweepPlan, fabric: L.Fabric) -> TensorData:
    try:
        data = load_data(cfg)
    except Exception as error:
        raise ConfigError(f"dataset ({cfg.dataset._target_}): {_cause(error)}") from None
    too_big = [b for b in plan.batch_sizes if b > data.num_train]
    if too_big:
        raise ConfigError(
            f"sweep.batch_sizes={list(plan.batch_sizes)} is not accepted; {too_big} exceed the "
            f"training set ({data.num_train} examples of {data.name})"
        )
    measured = ["val_loss", "train_loss"] + (["val_acc"] if data.task == "classification" else [])
    if cfg.budget.kind == "target":
        measured.remove("train_loss")
    if cfg.study.metric not in measured:
        raise ConfigError(
            f"study.metric={cfg.study.metric!r} is not accepted; accepted: {', '.join(measured)}"
        )
    try:  # build once so that a model or optimizer error shows before any trial
        model = build_model(cfg, data)
        instantiate(cfg.optimizer)(model.parameters(), lr=plan.lr_min)
        with fabric.autocast():
            model(data.x_train[:2])
    except Exception as error:
        raise ConfigError(
            f"model ({cfg.model._target_}) or optimizer ({cfg.optimizer._target_}): {_cause(error)}"
        ) from None
    return data.to(fabric.device)


def prepare(cfg: DictConfig) -> Worker:
    """Check the config, data, model and storage; then open or create the study.

    Raises:
        ConfigError: any bad input, before anything is created or trained.
    """
    validate(cfg)
    plan = SweepPlan.from_config(cfg.sweep, objective_direction(cfg))
    url = storage_url(cfg)
    check_storage(url)
    try:
        fabric = make_fabric(cfg.hardware)
    except Exception as error:
        raise ConfigError(
            f"hardware (accelerator={cfg.hardware.accelerator!r}, "
            f"precision={cfg.hardware.precision!r}) cannot be used here: {error}"
        ) from None
    data = _check_data_and_model(cfg, plan, fabric)
    sampler = LRBatchSampler(plan)
    storage = open_storage(url)
    # with the target budget the objective is steps to reach the target: fewer is better
    direction: Any = objective_direction(cfg)
    study = optuna.create_study(
        storage=storage,
        study_name=cfg.study.name,
        direction=direction,
        sampler=sampler,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ConfigError(
            f"study.direction={direction!r} does not match study {cfg.study.name!r} in "
            f"{redact(url)}, which was created to {study.direction.name.lower()}"
        )
    settings = training_settings(cfg)
    recorded = study.user_attrs.get("lrbatch.training")
    if recorded is None:
        study.set_user_attr("lrbatch.training", settings)
    elif recorded != settings:
        changes = "; ".join(_differences(recorded, settings))
        raise ConfigError(
            f"study {cfg.study.name!r} in {redact(url)} was run with other training settings "
            f"({changes}). Resume it with its settings, or start a new study: study.name=NEW"
        )
    study.set_user_attr("lrbatch.config", OmegaConf.to_container(cfg, resolve=True))
    study.set_user_attr("lrbatch.version", __version__)
    return Worker(cfg, plan, data, fabric, study, sampler)


def _objective(
    worker: Worker, progress: SweepProgress, done: list[tuple[Proposal, Any]]
) -> Callable[[Trial], float]:
    plan = worker.plan

    def objective(trial: Trial) -> float:
        batch = trial.suggest_int(
            "batch_size", min(plan.batch_sizes), max(plan.batch_sizes), log=True
        )
        lr = trial.suggest_float("lr", plan.lr_min, plan.lr_max, log=True)
        seed = trial.suggest_int("seed", 0, plan.seeds - 1)
        proposal = worker.sampler.proposal(trial.number) or Proposal(batch, lr, seed, "fixed")
        if proposal.reason == "explore":  # another worker took the planned point meanwhile
            trial.set_user_attr("reason", "explore (skipped: the plan had nothing to propose)")
            raise optuna.TrialPruned()
        seen = worker.observations()
        progress.update(seen, proposal)
        anchor = plan.anchor_lr(seen)
        trial.set_user_attr("reason", proposal.reason)
        trial.set_user_attr("effective_batch", batch)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("base_lr", anchor)  # η0 the rules were anchored at, at B0
        trial.set_user_attr(
            "predictions", {} if anchor is None else plan.predictions(batch, anchor)
        )
        trial.set_user_attr("lrbatch_version", __version__)
        try:
            result = train(worker.cfg, batch, lr, seed, data=worker.data, fabric=worker.fabric)
        except Exception as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        for key in (
            "micro_batch",
            "accumulation_steps",
            "diverged",
            "steps",
            "samples",
            "wall_time_s",
            "device",
            "reached_target",
            "metrics",
        ):
            trial.set_user_attr(key, getattr(result, key))
        done.append((proposal, result))
        return result.value

    return objective


def run_sweep(
    cfg: DictConfig, console: Console | None = None, trial_limit: int | None = None
) -> SweepOutcome:
    """Run (or resume) the sweep described by ``cfg`` until its plan is done.

    Args:
        cfg: the composed config (see :func:`lrbatch.config.load_config`).
        console: where progress is shown (default: stdout).
        trial_limit: train at most this many trials in this run (the sweep can resume later).

    Returns:
        How the run ended, with the study's trials.

    Raises:
        ConfigError: bad input, found before any trial runs.
    """
    console = console or Console()
    worker = prepare(cfg)
    title = f"lrbatch sweep · study {cfg.study.name!r} in {redact(storage_url(cfg))}"
    done: list[tuple[Proposal, Any]] = []
    objective = _objective(
        worker, progress := SweepProgress(console, worker.plan, objective_name(cfg), title), done
    )
    why = "paused"
    with progress:
        while trial_limit is None or len(done) < trial_limit:
            seen = worker.observations()
            progress.update(seen)
            decision = worker.plan.next(seen)
            if isinstance(decision, Finished):
                why = decision.why
                break
            if decision is WAIT:  # other workers' trials are running; stale ones get failed
                optuna.storages.fail_stale_trials(worker.study)
                time.sleep(_POLL_S)
                continue
            before = len(done)
            worker.study.optimize(objective, n_trials=1)
            if len(done) > before:
                progress.finished(*done[-1], len(worker.study.get_trials(deepcopy=False)))
    return SweepOutcome(
        cfg.study.name, redact(storage_url(cfg)), why, len(done), worker.plan, worker.observations()
    )
