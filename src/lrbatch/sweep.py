"""Running a sweep: check everything, open or resume the study, train until the plan is done.

Everything that can be wrong with the input is found before the first trial and before the
storage is created: settings, dataset, model, optimizer, batch sizes against the data, the
storage itself, and, when resuming, that the study was run with the same training settings.

One worker trains in this process; more (``hardware.workers``, or one per visible GPU) are
started as processes by :mod:`lrbatch.workers`, each running :func:`work` on the same study.
``lrbatch worker`` joins a study that already exists (:func:`join_sweep`) the same way.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import optuna
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import OptunaError
from optuna.trial import FrozenTrial, Trial
from rich.console import Console
from sqlalchemy.exc import SQLAlchemyError

from lrbatch import __version__
from lrbatch._console import make_console
from lrbatch.config import ConfigError, config_of_study, validate
from lrbatch.data import TensorData
from lrbatch.display import SweepProgress
from lrbatch.interrupts import Interrupts
from lrbatch.plan import WAIT, Finished, Observation, Proposal, SweepPlan
from lrbatch.sampler import LRBatchSampler, next_step, observations
from lrbatch.storage import check_storage, default_url, open_storage, redact
from lrbatch.study_io import noise_user_attrs, study_names
from lrbatch.train import build_model, load_data, make_fabric, train
from lrbatch.workers import SLOT_ENV, WorkerPool, start_worker_server, worker_slots

__all__ = [
    "TRAINING_SETTINGS",
    "SweepOutcome",
    "Worker",
    "join_sweep",
    "prepare",
    "run_sweep",
    "storage_url",
    "work",
]

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
# A worker with nothing to do looks at the study again after _POLL_MIN_S, then less and less
# often, up to every _POLL_MAX_S: short trials are not held up, long waits cost few queries.
_POLL_MIN_S = 0.05
_POLL_MAX_S = 2.0


@dataclass
class SweepOutcome:
    """How a sweep run ended.

    Attributes:
        why: ``complete`` (the plan is finished: every optimum pinned and replicated as far as
            the trials allow; :meth:`SweepPlan.shortfalls` says where there is none),
            ``budget`` (sweep.max_trials spent) or ``paused`` (this run's own trial limit
            reached).
        trials_run: trials this run trained.
        observations: all finished trials of the study at the end.
        short_of_target: target budget where no run reached the target: the best
            ``study.metric`` a run that did not diverge ended at, where, and the target.
    """

    study_name: str
    storage: str
    why: str
    trials_run: int
    plan: SweepPlan
    observations: list[Observation]
    workers: int = 1
    short_of_target: str | None = None


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
    trained: int = 0  # trials this worker trained (not counting skipped ones)
    identity: dict[str, Any] = field(default_factory=dict)  # recorded on each trial: "worker"
    interrupts: Interrupts = field(default_factory=Interrupts)  # Ctrl-C: when it may land


def _cause(error: BaseException) -> str:
    """The root error's message: Hydra wraps a builder's error in InstantiationException."""
    while isinstance(error, HydraException) and error.__cause__ is not None:
        error = error.__cause__
    return f"{type(error).__name__}: {error}"


def _check_data_and_model(
    cfg: DictConfig, plan: SweepPlan, fabric: L.Fabric, on_device: bool
) -> TensorData:
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
    # (a process that only starts worker processes leaves the GPUs to them)
    return data.to(fabric.device) if on_device else data


def prepare(cfg: DictConfig, *, record: bool = True, on_device: bool = True) -> Worker:
    """Check the config, data, model and storage; then open or create the study.

    Args:
        cfg: the composed config.
        record: save the config into the study (a worker joining the study does not).
        on_device: put the data on the training device (False in a process that only starts
            worker processes: the model is then checked on the CPU).

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
    data = _check_data_and_model(cfg, plan, fabric, on_device)
    sampler = LRBatchSampler(plan)
    storage = open_storage(
        url, heartbeat_interval=cfg.study.heartbeat_interval, grace_period=cfg.study.grace_period
    )
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
    if record:
        config = OmegaConf.to_container(cfg, resolve=True)
        assert isinstance(config, dict)
        config["study"]["storage"] = redact(url) if cfg.study.storage else None
        study.set_user_attr("lrbatch.config", config)
        study.set_user_attr("lrbatch.version", __version__)
    slot = os.environ.get(SLOT_ENV) or str(fabric.device)
    identity = {"host": socket.gethostname(), "pid": os.getpid(), "slot": slot}
    return Worker(cfg, plan, data, fabric, study, sampler, identity=identity)


def _objective(worker: Worker) -> Callable[[Trial], float]:
    plan = worker.plan

    def objective(trial: Trial) -> float:
        trial.set_user_attr("worker", worker.identity)  # first: whose trial, if this dies
        batch = trial.suggest_int(
            "batch_size", min(plan.batch_sizes), max(plan.batch_sizes), log=True
        )
        lr = trial.suggest_float("lr", plan.lr_min, plan.lr_max, log=True)
        seed = trial.suggest_int("seed", 0, plan.seed_limit - 1)
        proposal = worker.sampler.proposal(trial.number) or Proposal(batch, lr, seed, "fixed")
        if proposal.reason == "explore":  # another worker took the planned point meanwhile
            trial.set_user_attr("reason", "explore (skipped: the plan had nothing to propose)")
            raise optuna.TrialPruned()
        # (the sampler recorded base_lr, η0 the rules were anchored at, and their predictions)
        trial.set_user_attr("reason", proposal.reason)
        trial.set_user_attr("effective_batch", batch)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("lrbatch_version", __version__)
        try:
            with worker.interrupts.allowed():
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
            "eval_batch",
            "oom_micro_batches",  # the micro-batches that ran out of memory, then halved
            "oom_eval_batches",
        ):
            trial.set_user_attr(key, getattr(result, key))
        for key, value in noise_user_attrs(result.noise_scale, result.grad_norms).items():
            trial.set_user_attr(key, value)
        worker.trained += 1
        return result.value

    return objective


def work(
    worker: Worker, progress: SweepProgress | None = None, trial_limit: int | None = None
) -> str:
    """Train the study's next trials in this process until the plan is finished.

    Any number of workers, here or on other machines, may run this on one study at once.

    Args:
        worker: from :func:`prepare`.
        progress: shows the study after each step, if given.
        trial_limit: train at most this many trials.

    Returns:
        ``complete`` or ``budget`` (the plan is finished), or ``paused`` (trial limit reached).

    Raises:
        KeyboardInterrupt: on Ctrl-C or SIGTERM, at once while training (the trial is failed)
            or waiting, else once Optuna has recorded the step under way.
    """
    with worker.interrupts.installed():
        why = _work(worker, progress, trial_limit)
        worker.interrupts.check()  # (one held in the last look at the study: stop, say so)
        return why


def _work(worker: Worker, progress: SweepProgress | None, trial_limit: int | None) -> str:
    objective = _objective(worker)
    poll = _POLL_MIN_S
    while trial_limit is None or worker.trained < trial_limit:
        trials = worker.study.get_trials(deepcopy=False)
        if progress is not None:
            progress.update(trials)
        decision = next_step(worker.plan, trials)
        if isinstance(decision, Finished):
            return decision.why
        if decision is WAIT:  # other workers' trials are running; stale ones get failed
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(worker.study)
            with worker.interrupts.allowed():
                time.sleep(poll)
            poll = min(2 * poll, _POLL_MAX_S)
            continue
        poll = _POLL_MIN_S
        worker.interrupts.check()  # (before Optuna creates a trial that would only be failed)
        worker.study.optimize(objective, n_trials=1)
        worker.interrupts.check()
    if progress is not None:
        progress.update(worker.study.get_trials(deepcopy=False))
    return "paused"


def _run(cfg: DictConfig, console: Console, trial_limit: int | None, record: bool) -> SweepOutcome:
    slots = worker_slots(cfg.hardware)
    if len(slots) > 1 and any(not slot.env for slot in slots):
        start_worker_server()  # (CPU workers are forked from it: it imports while we prepare)
    worker = prepare(cfg, record=record, on_device=len(slots) == 1)
    url = storage_url(cfg)
    title = f"lrbatch · study {cfg.study.name!r} in {redact(url)}"
    if len(slots) > 1:
        title += f" · {len(slots)} workers"
    progress = SweepProgress(console, worker.plan, objective_name(cfg), title)
    with progress:
        if len(slots) == 1:
            why, trained = work(worker, progress, trial_limit), worker.trained
        else:
            why, trained = WorkerPool(cfg, url, slots).run(worker, progress, trial_limit)
    trials = worker.study.get_trials(deepcopy=False)
    return SweepOutcome(
        cfg.study.name,
        redact(url),
        why,
        trained,
        worker.plan,
        observations(trials),
        len(slots),
        _short_of_target(cfg, trials),
    )


def _short_of_target(cfg: DictConfig, trials: list[FrozenTrial]) -> str | None:
    """With the target budget and no run that reached it: the best ``study.metric`` a run
    that did not diverge ended at, where, and the target."""
    if cfg.budget.kind != "target" or any(t.user_attrs.get("reached_target") for t in trials):
        return None
    metric = str(cfg.study.metric)
    ended = [
        (t.user_attrs["metrics"][metric], t)
        for t in trials
        if t.user_attrs.get("reached_target") is False and metric in t.user_attrs["metrics"]
    ]
    if not ended:
        return None
    best = max if cfg.study.direction == "maximize" else min
    value, trial = best(ended, key=lambda e: e[0])
    return (
        f"{metric} {value:.4g} at B={trial.params['batch_size']}, lr {trial.params['lr']:.3g}; "
        f"target {cfg.budget.target:g}"
    )


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
    return _run(cfg, console or make_console(), trial_limit, record=True)


def join_sweep(
    url: str,
    study_name: str,
    overrides: list[str] | None = None,
    console: Console | None = None,
    trial_limit: int | None = None,
) -> SweepOutcome:
    """Work on a study that ``lrbatch sweep`` created, with its recorded settings.

    Args:
        url: the study's storage (a SQLAlchemy URL).
        study_name: the study.
        overrides: ``key=value`` settings that differ on this machine (``hardware.*``,
            ``dataset.data_dir``); training settings must stay the study's.
        console: where progress is shown.
        trial_limit: train at most this many trials.

    Raises:
        ConfigError: no such study, it was not made by ``lrbatch sweep``, or bad overrides.
    """
    storage = open_storage(url, heartbeat_interval=None, create=False)
    try:
        recorded = optuna.load_study(study_name=study_name, storage=storage).user_attrs
    except (KeyError, OptunaError, SQLAlchemyError):  # (no such study; no tables at all)
        names = ", ".join(study_names(storage)) or "none"
        raise ConfigError(
            f"--study={study_name!r} is not in {redact(url)}; its studies: {names}. "
            "Start a sweep there first: lrbatch sweep study.storage=URL study.name=NAME"
        ) from None
    if "lrbatch.config" not in recorded:
        raise ConfigError(
            f"study {study_name!r} in {redact(url)} was not made by lrbatch sweep "
            "(it has no lrbatch.config): there is no sweep to join"
        )
    cfg = config_of_study(recorded["lrbatch.config"], overrides)
    cfg.study.storage = url
    return _run(cfg, console or make_console(), trial_limit, record=False)
