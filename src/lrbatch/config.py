"""Configuration: the typed schema, composition of ``conf/`` with a sweep file, validation.

The schema is a set of dataclasses registered in Hydra's ConfigStore, so a misspelt key fails
at load time. Sections that name a ``_target_`` (dataset, model, optimizer) are free-form and
are checked against the target's signature instead, which also covers users' own classes.
"""

from __future__ import annotations

import importlib
import inspect
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from lrbatch.science import LAW_RULES, MEASURED, RULE_NAMES

__all__ = [
    "BudgetConfig",
    "ConfigError",
    "HardwareConfig",
    "LRBatchConfig",
    "ScheduleConfig",
    "StudyConfig",
    "SweepConfig",
    "conf_dir",
    "config_of_study",
    "load_config",
    "validate",
]

SCHEDULES = ("constant", "warmup_cosine", "warmup_linear")
BUDGETS = ("samples", "steps", "target")
ACCELERATORS = ("cpu", "gpu", "auto")
PRECISIONS = ("32", "32-true", "bf16-mixed", "16-mixed")
DIRECTIONS = ("minimize", "maximize")


class ConfigError(ValueError):
    """A setting has a value lrbatch cannot use. The message names the setting, the value and
    what is accepted."""


@dataclass
class ScheduleConfig:
    """Learning-rate schedule, defined in samples so it means the same at every batch size."""

    name: str = "constant"  # constant | warmup_cosine | warmup_linear
    warmup_fraction: float = 0.0  # warmup length as a fraction of training, in [0, 1)
    warmup_samples: int = 0  # or as a number of samples (examples), not steps
    final_lr_fraction: float = 0.0  # lr at the end of decay, as a fraction of the peak lr


@dataclass
class BudgetConfig:
    """What is held fixed across batch sizes (docs/science.md, *Terms*)."""

    kind: str = "samples"  # samples (fixed epochs) | steps | target
    epochs: float = 10.0  # samples budget: epochs × training-set size samples at every B
    steps: int = 1000  # steps budget: optimizer steps at every B
    target: float | None = None  # target budget: train until study.metric reaches this
    max_epochs: float = 50.0  # target budget: cap, in epochs, for runs that never reach it
    eval_every_epochs: float = 0.5  # target budget: how often the metric is checked
    divergence_factor: float = 10.0  # diverged when the training loss exceeds this × its start
    check_every: int = 25  # steps between divergence checks (each one syncs the device)


@dataclass
class HardwareConfig:
    accelerator: str = "cpu"  # cpu | gpu | auto
    precision: str = "32"  # 32 | bf16-mixed (| 16-mixed)
    max_micro_batch: int | None = None  # larger effective batches use gradient accumulation
    threads: int | None = None  # torch CPU threads per worker; default: 1 per CPU worker
    eval_batch: int = 4096  # examples per forward pass when evaluating
    # cpu: worker processes on this machine; auto: one per core (hardware.threads each), at
    # most 8 (gpu: one per visible GPU, workers_per_gpu each)
    workers: Any = "auto"
    workers_per_gpu: int = 1  # gpu: worker processes sharing each GPU (small models)
    # trials a worker trains together at one batch size and seed (several learning rates in
    # one pass); auto: measured per batch size; 1: one trial at a time
    pack: Any = "auto"


@dataclass
class SweepConfig:
    batch_sizes: list[int] = field(default_factory=lambda: [32, 64, 128, 256, 512])
    base_batch: int | None = None  # B0; default: the smallest batch size
    base_lr: float | None = None  # η0; default: found by a broad search at B0
    lr_min: float = 1e-4  # hard bounds of the search, per optimizer step
    lr_max: float = 10.0
    base_grid_per_decade: int = 2  # density of the broad search at B0, points per decade
    rules: list[str] = field(default_factory=lambda: ["constant", "linear", "square_root"])
    b_noise: float | None = None  # B_noise/B_peak in samples, for saturating/surge/measured
    eps_max: float | None = None  # ε_max of the measured rule (`lrbatch noise-scale`)
    laws: list[str] = field(default_factory=lambda: ["saturating", "surge"])
    bracket_factor: float = 4.0  # step outward when the best lr sits at the edge
    tolerance: float = 1.5  # pinned when the neighbours on both sides are within this factor
    seeds: int = 2  # each batch size's best points are trained with this many seeds
    max_seeds: int = 0  # ...and up to this many where the optimum is loose (0: no more)
    max_trials: int = 200  # trial budget of the whole sweep


@dataclass
class StudyConfig:
    name: str = "lrbatch"
    storage: str | None = None  # SQLAlchemy URL; default sqlite:///runs/<name>.db
    metric: str = "val_loss"  # val_loss | val_acc (classification) | train_loss
    direction: str = "minimize"  # minimize | maximize
    heartbeat_interval: int = 20  # seconds between a running trial's heartbeats
    grace_period: int = 120  # seconds without a heartbeat before a trial is failed as stale


@dataclass
class LRBatchConfig:
    dataset: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    study: StudyConfig = field(default_factory=StudyConfig)


_store = ConfigStore.instance()
_store.store(name="lrbatch_schema", node=LRBatchConfig)


def conf_dir() -> Path:
    """The directory of lrbatch's Hydra configs: inside the wheel, or ``conf/`` of a checkout."""
    packaged = Path(__file__).parent / "conf"
    return packaged if packaged.is_dir() else Path(__file__).parents[2] / "conf"


def load_config(
    sweep_file: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    check: bool = True,
) -> DictConfig:
    """Compose ``conf/config.yaml``, an optional sweep file, and Hydra-syntax overrides.

    Args:
        sweep_file: a YAML file like those in ``sweeps/``: a ``defaults`` list of group
            overrides (``- override /optimizer: adam``) and values.
        overrides: e.g. ``["optimizer=adam", "sweep.batch_sizes=[32,128]"]``.
        check: validate it (:func:`validate`, which imports each ``_target_``: torch and
            more; a caller with something to start first validates it afterwards).

    Returns:
        The composed config, validated unless ``check`` is False.

    Raises:
        ConfigError: an unknown key or option, a missing sweep file, or a value out of range.
    """
    overrides = list(overrides or [])
    explicit = _keys_set(overrides)
    with tempfile.TemporaryDirectory(prefix="lrbatch-sweep-") as search_dir:
        if sweep_file is not None:
            sweep_overrides, body = _sweep_file_overrides(Path(sweep_file), Path(search_dir))
            overrides = [*sweep_overrides, *overrides]
            for section in _TARGET_SECTIONS:
                if isinstance(body.get(section), dict):
                    explicit[section] |= set(body[section])
        cfg, choices = _compose(overrides)
    _start_replaced_targets(cfg, choices, explicit)
    if check:
        validate(cfg)
    return cfg


def config_of_study(recorded: dict[str, Any], overrides: list[str] | None = None) -> DictConfig:
    """The config a study was run with (its ``lrbatch.config``), with ``key=value`` overrides.

    A worker joining a study trains with the study's settings; the overrides are for what
    differs between machines (``hardware.*``, ``dataset.data_dir``), and training settings
    are checked against the study's afterwards.

    Raises:
        ConfigError: an override that is not ``key=value`` or names an unknown setting.
    """
    cfg = OmegaConf.merge(OmegaConf.structured(LRBatchConfig), recorded)
    assert isinstance(cfg, DictConfig)
    # a group choice first, then the settings in it, as Hydra does
    for override in sorted(overrides or [], key=lambda o: not o.startswith("hardware=")):
        key, equals, value = override.partition("=")
        _require(
            bool(equals) and bool(key) and not key.startswith(("+", "~")),
            "override",
            override,
            "key=value, e.g. hardware.threads=4, for a setting the study's config has",
        )
        _require(
            key.split(".")[0] == "hardware" or key in _MACHINE_SETTINGS,
            key,
            value,
            "a joining worker trains with the study's settings; accepted: this machine's "
            f"hardware (hardware=gpu, hardware.*), {', '.join(_MACHINE_SETTINGS)}",
        )
        if key == "hardware":  # a choice of the group: this machine's hardware, from conf/
            choices = sorted(p.stem for p in (conf_dir() / "hardware").glob("*.yaml"))
            _require(value in choices, key, value, f"one of {', '.join(choices)}")
            cfg.hardware = OmegaConf.merge(
                OmegaConf.structured(HardwareConfig),
                OmegaConf.load(conf_dir() / "hardware" / f"{value}.yaml"),
                {k: cfg.hardware[k] for k in _TRIAL_HARDWARE},  # the study's, binding
            )
            continue
        _require(
            OmegaConf.select(cfg, key, default=_MISSING_KEY) is not _MISSING_KEY,
            key,
            value,
            "a setting of the study's config (see `lrbatch report` or the dashboard)",
        )
        try:
            OmegaConf.update(cfg, key, yaml.safe_load(value) if value else None, merge=False)
        except (OmegaConfBaseException, yaml.YAMLError) as error:
            raise ConfigError(f"{key}={value} is not accepted: {_explain(error)}") from None
    validate(cfg)
    return cfg


_MISSING_KEY = object()
# Settings besides hardware.* that may differ between the machines working on one study.
_MACHINE_SETTINGS = (
    "dataset.data_dir",
    "dataset.download",
    "study.heartbeat_interval",
    "study.grace_period",
)
# Hardware settings that change what a trial measures: a joining worker keeps the study's.
_TRIAL_HARDWARE = ("precision", "max_micro_batch")


def _compose(overrides: list[str]) -> tuple[DictConfig, dict[str, str | None]]:
    """(config, the option chosen in each group); a key unknown to a ``_target_`` section is
    added, so that :func:`check_target` can name the settings the target accepts."""
    while True:
        try:
            with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
                cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
            choices = dict(cfg.hydra.runtime.choices)
            with open_dict(cfg):
                del cfg["hydra"]
            return cfg, choices
        except yaml.YAMLError as error:
            raise ConfigError(f"a config file is not valid YAML: {error}") from None
        except (HydraException, OmegaConfBaseException) as error:
            unknown = re.search(r"Could not override '((\w+)\.[\w.]+)'", str(error))
            if not unknown or unknown.group(2) not in _TARGET_SECTIONS:
                raise ConfigError(_explain(error)) from None
            overrides = [f"+{o}" if o.startswith(unknown.group(1) + "=") else o for o in overrides]


def _keys_set(overrides: list[str]) -> dict[str, set[str]]:
    """The keys of each ``_target_`` section that ``overrides`` name (``+model.depth=4``,
    ``~model.hidden``: ``depth``, ``hidden`` of ``model``)."""
    keys: dict[str, set[str]] = {section: set() for section in _TARGET_SECTIONS}
    for override in overrides:
        path = override.lstrip("+~").partition("=")[0].split(".")
        if len(path) > 1 and path[0] in keys:
            keys[path[0]].add(path[1])
    return keys


def _start_replaced_targets(
    cfg: DictConfig, choices: dict[str, str | None], explicit: dict[str, set[str]]
) -> None:
    """A section whose ``_target_`` replaces its option's (``model._target_=mypkg.Net``)
    starts from that target's own arguments: the option file's settings are dropped, except
    those set explicitly (``explicit``: on the command line or in the sweep file)."""
    for section in _TARGET_SECTIONS:
        option = choices.get(section)
        path = conf_dir() / section / f"{option}.yaml"
        if option is None or not path.is_file() or section not in cfg:
            continue
        inherited = OmegaConf.load(path)
        assert isinstance(inherited, DictConfig)
        if cfg[section].get("_target_") == inherited.get("_target_"):
            continue
        with open_dict(cfg):
            for key in {str(k) for k in inherited} - explicit[section] - {"_target_"}:
                cfg[section].pop(key, None)


def _sweep_file_overrides(path: Path, search_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """(the overrides that compose the sweep file at ``path``, the file's values)."""
    if not path.is_file():
        raise ConfigError(f"sweep file {str(path)!r} does not exist; give a path to a YAML file")
    group = search_dir / "lrbatch_sweep"
    group.mkdir()
    text = path.read_text()
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"sweep file {str(path)!r} is not valid YAML: {error}") from None
    if not isinstance(body, dict) or not body:
        raise ConfigError(
            f"sweep file {str(path)!r} holds {'nothing' if body is None else type(body).__name__}"
            "; accepted: a mapping of settings, like those in sweeps/ (sweep:, defaults:, ...)"
        )
    if "@package" not in text.split("\n", 1)[0]:
        text = "# @package _global_\n" + text
    (group / "sweep.yaml").write_text(text)
    return (
        [f"hydra.searchpath=[file://{search_dir}]", "+lrbatch_sweep=sweep"],
        body,
    )


def _explain(error: BaseException) -> str:
    message = f"{error} {error.__cause__ or ''}".strip()
    key = re.search(r"Key '([^']+)' not in '(\w+)'", message)
    if key:
        schema = {c.__name__: c for c in _SECTIONS.values()}.get(key.group(2))
        accepted = ", ".join(schema.__dataclass_fields__) if schema else ""
        return f"unknown setting {key.group(1)!r} in {key.group(2)}; accepted: {accepted}"
    option = re.search(r"Could not find '(\w+)/(\w+)'", message)
    if option:
        group = option.group(1)
        names = sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
        return f"unknown {group} {option.group(2)!r}; accepted: {', '.join(names)}"
    return message.splitlines()[0] if message else type(error).__name__


_TARGET_SECTIONS = ("dataset", "model", "optimizer")
_SECTIONS: dict[str, Any] = {
    "schedule": ScheduleConfig,
    "budget": BudgetConfig,
    "hardware": HardwareConfig,
    "sweep": SweepConfig,
    "study": StudyConfig,
    "config": LRBatchConfig,
}


def _require(ok: bool, setting: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ConfigError(f"{setting}={value!r} is not accepted; {accepted}")


def _choice(cfg: DictConfig, setting: str, choices: tuple[str, ...]) -> None:
    value = OmegaConf.select(cfg, setting)
    _require(value in choices, setting, value, f"accepted: {', '.join(choices)}")


def _positive(cfg: DictConfig, setting: str, *, allow_none: bool = False) -> None:
    value = OmegaConf.select(cfg, setting)
    if value is None and allow_none:
        return
    ok = isinstance(value, int | float) and math.isfinite(value) and value > 0
    _require(ok, setting, value, "a positive number is needed")


def validate(cfg: DictConfig) -> None:
    """Check every setting that can be checked without data; raise one clear error.

    Raises:
        ConfigError: naming the setting, the value and what is accepted.
    """
    sweep = cfg.sweep
    _require(
        len(sweep.batch_sizes) > 0, "sweep.batch_sizes", list(sweep.batch_sizes), "give one or more"
    )
    for batch in sweep.batch_sizes:
        _require(batch > 0, "sweep.batch_sizes", list(sweep.batch_sizes), "batch sizes must be > 0")
    if sweep.base_batch is not None:
        _require(
            sweep.base_batch in sweep.batch_sizes,
            "sweep.base_batch",
            sweep.base_batch,
            f"it must be one of sweep.batch_sizes={list(sweep.batch_sizes)}",
        )
    for setting in ("sweep.lr_min", "sweep.lr_max", "sweep.bracket_factor", "sweep.tolerance"):
        _positive(cfg, setting)
    _positive(cfg, "sweep.base_lr", allow_none=True)
    _positive(cfg, "sweep.b_noise", allow_none=True)
    _positive(cfg, "sweep.eps_max", allow_none=True)
    _require(
        sweep.lr_min < sweep.lr_max,
        "sweep.lr_min",
        sweep.lr_min,
        f"it must be below sweep.lr_max={sweep.lr_max}",
    )
    if sweep.base_lr is not None:
        _require(
            sweep.lr_min <= sweep.base_lr <= sweep.lr_max,
            "sweep.base_lr",
            sweep.base_lr,
            f"it must lie within [sweep.lr_min, sweep.lr_max] = [{sweep.lr_min}, {sweep.lr_max}]",
        )
    _require(
        sweep.bracket_factor >= 1.1,
        "sweep.bracket_factor",
        sweep.bracket_factor,
        "it must be ≥ 1.1",
    )
    _require(
        sweep.tolerance >= 1.05, "sweep.tolerance", sweep.tolerance, "it must be ≥ 1.05 (a factor)"
    )
    _require(
        len(sweep.rules) > 0,
        "sweep.rules",
        list(sweep.rules),
        f"give one or more of {', '.join(RULE_NAMES)}",
    )
    _require(sweep.seeds >= 1, "sweep.seeds", sweep.seeds, "it must be ≥ 1")
    _require(
        sweep.max_seeds >= 0,
        "sweep.max_seeds",
        sweep.max_seeds,
        f"the most seeds a batch size gets where its optimum is loose: more than sweep.seeds "
        f"(now {sweep.seeds}) to add seeds there, or 0 (or ≤ sweep.seeds) for none",
    )
    _require(sweep.max_trials >= 1, "sweep.max_trials", sweep.max_trials, "it must be ≥ 1")
    _require(
        sweep.base_grid_per_decade >= 1,
        "sweep.base_grid_per_decade",
        sweep.base_grid_per_decade,
        "it must be ≥ 1",
    )
    for rule in sweep.rules:
        _require(rule in RULE_NAMES, "sweep.rules", rule, f"accepted: {', '.join(RULE_NAMES)}")
        _require(
            rule not in LAW_RULES or sweep.b_noise is not None,
            "sweep.rules",
            rule,
            "saturating and surge need sweep.b_noise (B_noise or B_peak, in samples)",
        )
        _require(
            rule != MEASURED or (sweep.b_noise is not None and sweep.eps_max is not None),
            "sweep.rules",
            rule,
            "measured needs sweep.b_noise and sweep.eps_max (B_simple and ε_max, as "
            "`lrbatch noise-scale` prints them)",
        )
    for law in sweep.laws:
        _require(law in LAW_RULES, "sweep.laws", law, f"accepted: {', '.join(LAW_RULES)}")

    _choice(cfg, "schedule.name", SCHEDULES)
    _require(
        0 <= cfg.schedule.warmup_fraction < 1,
        "schedule.warmup_fraction",
        cfg.schedule.warmup_fraction,
        "it must lie in [0, 1)",
    )
    _require(
        cfg.schedule.warmup_samples >= 0,
        "schedule.warmup_samples",
        cfg.schedule.warmup_samples,
        "it must be ≥ 0",
    )
    _require(
        not (cfg.schedule.warmup_samples and cfg.schedule.warmup_fraction),
        "schedule.warmup_samples",
        cfg.schedule.warmup_samples,
        "set warmup_samples or warmup_fraction, not both",
    )
    _require(
        0 <= cfg.schedule.final_lr_fraction <= 1,
        "schedule.final_lr_fraction",
        cfg.schedule.final_lr_fraction,
        "it must lie in [0, 1]",
    )

    _choice(cfg, "budget.kind", BUDGETS)
    for setting in (
        "budget.epochs",
        "budget.steps",
        "budget.max_epochs",
        "budget.eval_every_epochs",
        "budget.divergence_factor",
        "budget.check_every",
    ):
        _positive(cfg, setting)
    if cfg.budget.kind == "target":
        _require(
            cfg.budget.target is not None,
            "budget.target",
            None,
            "the target budget needs a metric value to reach",
        )

    _choice(cfg, "hardware.accelerator", ACCELERATORS)
    _choice(cfg, "hardware.precision", PRECISIONS)
    _positive(cfg, "hardware.max_micro_batch", allow_none=True)
    _positive(cfg, "hardware.threads", allow_none=True)
    _positive(cfg, "hardware.eval_batch")
    workers = cfg.hardware.workers
    _require(
        workers == "auto"
        or (isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1),
        "hardware.workers",
        workers,
        "accepted: auto (one per CPU core, at most 8), or a whole number of processes >= 1",
    )
    _positive(cfg, "hardware.workers_per_gpu")
    pack = cfg.hardware.pack
    _require(
        pack == "auto" or (isinstance(pack, int) and not isinstance(pack, bool) and pack >= 1),
        "hardware.pack",
        pack,
        "accepted: auto, or a whole number of trials >= 1 (1: one trial at a time)",
    )

    _choice(cfg, "study.direction", DIRECTIONS)
    _positive(cfg, "study.heartbeat_interval")
    _require(
        cfg.study.grace_period > cfg.study.heartbeat_interval,
        "study.grace_period",
        cfg.study.grace_period,
        f"it must exceed study.heartbeat_interval ({cfg.study.heartbeat_interval} s)",
    )
    _require(bool(cfg.study.name), "study.name", cfg.study.name, "give a non-empty name")
    for section in _TARGET_SECTIONS:
        check_target(cfg[section], section)


def check_target(
    node: DictConfig,
    section: str,
    passed: tuple[str, ...] = ("in_shape", "num_outputs", "params", "lr"),
) -> None:
    """Check that a ``_target_`` exists and accepts the settings given for it.

    Args:
        node: the config section, e.g. ``cfg.model``.
        section: its name, for the message.
        passed: keyword arguments lrbatch supplies itself (never an error to omit).

    Raises:
        ConfigError: the target cannot be imported, or a setting is not one of its arguments.
    """
    target = node.get("_target_")
    _require(
        isinstance(target, str) and bool(target),
        f"{section}._target_",
        target,
        "give an import path",
    )
    try:
        factory = _import(target)
    except Exception as error:
        raise ConfigError(f"{section}._target_={target!r} cannot be imported: {error}") from None
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return  # builtins without a signature: nothing to check
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [name for name in parameters if name not in ("self", *passed)]
    for key in node:
        if str(key).startswith("_") or key in passed:
            continue
        _require(
            key in parameters,
            f"{section}.{key!s}",
            node[key],
            f"{target} accepts: {', '.join(accepted) or 'no settings'}",
        )


def _import(path: str) -> Any:
    module_name, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module_name), attr)
