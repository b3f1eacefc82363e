"""A study opened for work: everything checked, then the study created or resumed.

Everything that can be wrong with the input is found before the first trial and before the
storage is created: settings, dataset, model, optimizer, batch sizes against the data, the
storage itself, and, when resuming, that the study was run with the same training settings.
:func:`prepare` does it for ``lrbatch sweep`` and for every worker that joins the study.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import optuna
from hydra.errors import HydraException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.exceptions import OptunaError
from optuna.storages import BaseStorage
from sqlalchemy.exc import SQLAlchemyError

from lrbatch import __version__
from lrbatch.config import ConfigError, config_of_study, validate
from lrbatch.data import TensorData
from lrbatch.search import (
    LRBatchSampler,
    SweepPlan,
    check_storage,
    default_url,
    open_storage,
    planning_lock_path,
    redact,
    study_names,
)
from lrbatch.training import build_model, load_data, make_fabric
from lrbatch.workers.interrupts import Interrupts

__all__ = [
    "SLOT_ENV",
    "TRAINING_SETTINGS",
    "Worker",
    "objective_direction",
    "objective_name",
    "prepare",
    "recorded_config",
    "storage_url",
    "training_settings",
]

SLOT_ENV = "LRBATCH_WORKER_SLOT"  # a pool's worker learns its slot's label here
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
    storage: BaseStorage  # the study's (its heartbeats are recorded there)
    trained: int = 0  # trials this worker trained (not counting skipped ones)
    identity: dict[str, Any] = field(default_factory=dict)  # recorded on each trial: "worker"
    pack_choices: dict[int, str] = field(default_factory=dict)  # hardware.pack=auto: why
    planning_lock: Path | None = None  # held while planning (storage.planning_lock_path)
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
    plan = SweepPlan.from_config(cfg.sweep, objective_direction(cfg), cfg.hardware.pack)
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
    lock = planning_lock_path(url, cfg.study.name)
    return Worker(
        cfg, plan, data, fabric, study, sampler, storage, identity=identity, planning_lock=lock
    )


def recorded_config(url: str, study_name: str, overrides: list[str] | None = None) -> DictConfig:
    """The config a study made by ``lrbatch sweep`` was run with, for a worker to join it.

    Args:
        url: the study's storage (a SQLAlchemy URL).
        study_name: the study.
        overrides: ``key=value`` settings that differ on this machine (``hardware.*``,
            ``dataset.data_dir``); training settings must stay the study's.

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
    return cfg
