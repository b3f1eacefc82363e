"""Reading a study's trials, in one place, for the sweep plan, the workers, the display and
the report alike; finding studies.

How a finished trial ended is read by :func:`outcome`: a run that missed its target (target
budget) is the worst at its learning rate but not a divergence, for every reader. Where a
trial trains is :func:`point` (the point its sampler recorded, before its parameters are set);
the plan's view of the trials is :func:`observations`; what the display shows of one trial is
:func:`trial_run`; whose worker ran it, :func:`ran_by`.

The gradient noise scale a trial recorded is written and read here too
(:func:`noise_user_attrs`, :func:`trial_noise`). Its user attributes:

- ``noise_scale``: a list, one entry per recorded point (``start``, ``10%``, ``50%``, ``end``
  of the planned steps; fewer where the run stopped early), each
  ``{"point", "first_step", "last_step", "samples", "b_simple", "grad_sq", "trace_sigma",
  "steps"}``: B_simple = tr(Σ)/|G|² in samples, |G|² and tr(Σ) of the per-example mean loss,
  averaged over the ``steps`` optimizer steps ``first_step``…``last_step`` (4; fewer in a
  trial of under 160 steps, :func:`lrbatch.science.noise.window_steps`), ``samples`` the examples
  trained on before the window's middle; a number that is not finite (B_simple where |G|² was
  not resolved) is null.
- ``grad_norms``: ``[[step, |G_B|], ...]``, the norm of the batch gradient the optimizer
  stepped with, at up to 32 evenly spaced steps (first and last included).

``lrbatch noise-scale --study NAME`` records its run on the study (user attribute
``lrbatch.noise_scale``: its ``--json`` object plus ``optimizer`` and ``plain_sgd``), so the
report can draw the SGD optimum it implies: :func:`record_noise_run`, :func:`recorded_noise_run`.
The pack size ``hardware.pack=auto`` chose per batch size and hardware is a study attribute
too, timed once for every worker and run: :func:`record_pack_choice`,
:func:`recorded_pack_choice`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.exceptions import OptunaError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from lrbatch.config import ConfigError
from lrbatch.science import NoiseEstimate, NoiseRecord, TrialPoint, saturating
from lrbatch.search.decisions import Observation, Proposal
from lrbatch.search.storage import open_storage, redact

__all__ = [
    "NOISE_RUN_ATTR",
    "PACK_CHOICE_ATTR",
    "PROPOSAL_ATTR",
    "NoiseRun",
    "Outcome",
    "TrialNoise",
    "TrialRun",
    "find_last_study",
    "is_diverged",
    "load_points",
    "noise_records",
    "noise_user_attrs",
    "observations",
    "open_study",
    "outcome",
    "placed",
    "planned",
    "point",
    "ran_by",
    "record_noise_run",
    "record_pack_choice",
    "recorded_noise_run",
    "recorded_pack_choice",
    "short_of_target",
    "study_names",
    "sweep_anchor",
    "trial_noise",
    "trial_run",
]

PROPOSAL_ATTR = "lrbatch:proposal"  # trial system attribute: the point, recorded at once
_ACTIVE = (TrialState.COMPLETE, TrialState.RUNNING)


@dataclass(frozen=True)
class Outcome:
    """How a finished trial ended.

    Attributes:
        value: the trial's value (nan if it has none): the metric, or steps to target, inf
            for a run that missed its target.
        diverged: the run diverged: its ``diverged`` user attribute, which lrbatch records on
            every trial it trains or imports; for a trial made otherwise, a value that is not
            finite (unless ``reached_target`` is False).
        reached_target: the ``reached_target`` user attribute (target budget), else None.
            False is a run that trained to its cap without reaching the target: the worst at
            its learning rate, not a divergence (it says nothing of the stability edge).
    """

    value: float
    diverged: bool
    reached_target: bool | None


def outcome(trial: FrozenTrial) -> Outcome:
    """How a finished trial ended, as the sweep plan and the analysis both read it."""
    value = math.nan if trial.value is None else float(trial.value)
    attrs = trial.user_attrs
    reached = None if attrs.get("reached_target") is None else bool(attrs["reached_target"])
    recorded = None if "diverged" not in attrs else bool(attrs["diverged"])
    return Outcome(value, is_diverged(recorded, value, reached), reached)


def is_diverged(recorded: bool | None, value: float, reached: bool | None) -> bool:
    """The recorded divergence where there is one; else a value that is not finite, unless
    the run only missed its target."""
    if recorded is not None:
        return recorded
    return not math.isfinite(value) and reached is not False


def point(trial: FrozenTrial) -> Proposal | None:
    """The (batch size, lr, seed) a trial trains and why: the proposal its sampler recorded
    (available before its parameters are), else its parameters; None if it has neither."""
    recorded = trial.system_attrs.get(PROPOSAL_ATTR)
    if recorded is not None:
        return Proposal(**recorded)
    params = trial.params
    if "batch_size" not in params or "lr" not in params:
        return None
    reason = str(trial.user_attrs.get("reason") or "")
    return Proposal(
        int(params["batch_size"]), float(params["lr"]), int(params.get("seed", 0)), reason
    )


def planned(reason: str) -> str:
    """The plan's reason for a point: ``bracket`` for ``retry of #12: bracket``."""
    return reason.split(": ", 1)[1] if reason.startswith("retry of #") else reason


def placed(trials: Iterable[FrozenTrial]) -> list[tuple[int, Proposal]]:
    """(number, :func:`point`) of every running or complete trial with a point: the points
    the study has taken."""
    return [
        (t.number, where) for t in trials if t.state in _ACTIVE and (where := point(t)) is not None
    ]


def observations(trials: Iterable[FrozenTrial], exclude: int | None = None) -> list[Observation]:
    """The plan's view of finished and running trials that have a :func:`point`; how a
    finished one ended is read by :func:`outcome`, as the analysis reads it."""
    seen = []
    for trial in trials:
        if trial.number == exclude or trial.state not in _ACTIVE:
            continue
        where = point(trial)
        if where is None:
            continue
        ended = outcome(trial) if trial.state == TrialState.COMPLETE else None
        seen.append(
            Observation(
                batch_size=where.batch_size,
                lr=where.lr,
                seed=where.seed,
                value=None if ended is None else ended.value,
                diverged=ended is not None and ended.diverged,
                reason=planned(where.reason) or None,
                reached_target=None if ended is None else ended.reached_target,
            )
        )
    return seen


@dataclass(frozen=True)
class TrialRun:
    """What the display shows of one trial.

    Attributes:
        point: where it trains (:func:`point`), or None.
        outcome: how it ended (:func:`outcome`), None unless it finished.
        error: the error it failed with, if it raised one.
        steps: optimizer steps taken.
        metrics: metrics measured at its end.
        wall_time_s: seconds it took.
        oom_micro_batches: micro-batches that ran out of memory.
        worker: ``{"host", "pid", "slot"}`` of the worker that ran it (empty if unknown).
        pack: ``{"trials", "trained_together", "chosen", "fallback"}``: the trials trained in
            one pass with it, how many trained together, why that pack size
            (``hardware.pack=auto``), and why they trained one at a time (empty if unknown).
    """

    point: Proposal | None
    outcome: Outcome | None
    error: str | None
    steps: int | None
    metrics: dict[str, float]
    wall_time_s: float | None
    oom_micro_batches: list[int]
    worker: dict[str, Any]
    pack: dict[str, Any]


def trial_run(trial: FrozenTrial) -> TrialRun:
    """What a trial recorded of its run (:class:`TrialRun`)."""
    attrs = trial.user_attrs
    wall = attrs.get("wall_time_s")
    return TrialRun(
        point=point(trial),
        outcome=outcome(trial) if trial.state == TrialState.COMPLETE else None,
        error=attrs.get("error"),
        steps=attrs.get("steps"),
        metrics=dict(attrs.get("metrics") or {}),
        wall_time_s=float(wall) if isinstance(wall, int | float) else None,
        oom_micro_batches=list(attrs.get("oom_micro_batches") or []),
        worker=dict(attrs.get("worker") or {}),
        pack=dict(attrs.get("pack") or {}),
    )


def ran_by(trial: FrozenTrial, host: str, pids: set[int]) -> bool:
    """Whether a worker process on ``host`` with one of ``pids`` ran (runs) the trial."""
    worker = trial.user_attrs.get("worker") or {}
    return bool(worker.get("host") == host and worker.get("pid") in pids)


def short_of_target(trials: Iterable[FrozenTrial], metric: str, direction: str) -> str | None:
    """With the target budget and no run that reached it: the best ``metric`` a run that did
    not diverge ended at, where, and the target (None when some run reached it or none ended
    short of it)."""
    ended = []
    for trial in trials:
        if trial.state != TrialState.COMPLETE:
            continue
        reached = outcome(trial).reached_target
        if reached:
            return None
        metrics = trial.user_attrs.get("metrics") or {}
        if reached is False and metric in metrics:
            ended.append((float(metrics[metric]), trial))
    if not ended:
        return None
    best = max if direction == "maximize" else min
    value, trial = best(ended, key=lambda e: e[0])
    where = point(trial)
    assert where is not None
    return f"{metric} {value:.4g} at B={where.batch_size}, lr {where.lr:.3g}"


def sweep_anchor(trials: Sequence[FrozenTrial]) -> tuple[int | None, float | None]:
    """(B0, η0) the sampler anchored its rule predictions at (and so trained them at), from
    the last trial that recorded them (:class:`lrbatch.search.sampler.LRBatchSampler`); None where
    not recorded, as in a study imported from CSV."""
    batch = next((int(b) for t in reversed(trials) if (b := t.user_attrs.get("base_batch"))), None)
    lr = next((float(a) for t in reversed(trials) if (a := t.user_attrs.get("base_lr"))), None)
    return batch, lr


def trial_point(trial: FrozenTrial) -> TrialPoint | None:
    """The analysis' view of a finished trial, or None for one without batch size and lr."""
    if trial.state != TrialState.COMPLETE or not {"batch_size", "lr"} <= set(trial.params):
        return None
    ended = outcome(trial)
    attrs = trial.user_attrs
    return TrialPoint(
        batch_size=int(trial.params["batch_size"]),
        lr=float(trial.params["lr"]),
        seed=int(trial.params.get("seed", attrs.get("seed", 0))),
        value=ended.value,
        diverged=ended.diverged,
        steps=attrs.get("steps"),
        samples=attrs.get("samples"),
        reached_target=ended.reached_target,
    )


@dataclass(frozen=True)
class TrialNoise:
    """The noise scale and gradient norms a trial recorded (empty for one that recorded none).

    Attributes:
        batch_size: the trial's effective batch (None where it has no ``batch_size``).
        records: B_simple at each recorded point, in order (``estimate.eps_max`` is nan).
        grad_norms: (step, |G_B|) along the run.
    """

    batch_size: int | None
    records: tuple[NoiseRecord, ...]
    grad_norms: tuple[tuple[int, float], ...]


def noise_user_attrs(
    records: Iterable[NoiseRecord], grad_norms: Iterable[tuple[int, float]]
) -> dict[str, Any]:
    """The ``noise_scale`` and ``grad_norms`` user attributes of a trial (see the module)."""
    return {
        "noise_scale": [
            {
                "point": r.point,
                "first_step": r.first_step,
                "last_step": r.last_step,
                "samples": r.samples,
                "b_simple": _json_number(r.estimate.b_simple),
                "grad_sq": _json_number(r.estimate.grad_sq),
                "trace_sigma": _json_number(r.estimate.trace_sigma),
                "steps": r.estimate.steps,
            }
            for r in records
        ],
        "grad_norms": [[step, _json_number(norm)] for step, norm in grad_norms],
    }


def trial_noise(trial: FrozenTrial) -> TrialNoise:
    """The noise scale and gradient norms ``trial`` recorded (:func:`noise_user_attrs`)."""
    attrs = trial.user_attrs
    records = tuple(
        NoiseRecord(
            point=str(r["point"]),
            first_step=int(r["first_step"]),
            last_step=int(r["last_step"]),
            samples=int(r["samples"]),
            estimate=NoiseEstimate(
                b_simple=_number(r["b_simple"]),
                grad_sq=_number(r["grad_sq"]),
                trace_sigma=_number(r["trace_sigma"]),
                eps_max=math.nan,
                steps=int(r["steps"]),
            ),
        )
        for r in attrs.get("noise_scale") or ()
    )
    norms = tuple((int(step), _number(norm)) for step, norm in attrs.get("grad_norms") or ())
    batch = trial.params.get("batch_size", attrs.get("effective_batch"))
    return TrialNoise(None if batch is None else int(batch), records, norms)


def noise_records(
    trials: Iterable[FrozenTrial],
) -> list[tuple[int, float, tuple[NoiseRecord, ...]]]:
    """(batch size, learning rate, records) of every finished trial that did not diverge and
    recorded its noise scale: what :func:`lrbatch.science.theory.measured_noise` reads."""
    read = []
    for trial in trials:
        if trial.state != TrialState.COMPLETE or outcome(trial).diverged:
            continue
        noise = trial_noise(trial)
        if noise.records and noise.batch_size is not None and "lr" in trial.params:
            read.append((noise.batch_size, float(trial.params["lr"]), noise.records))
    return read


NOISE_RUN_ATTR = "lrbatch.noise_scale"


@dataclass(frozen=True)
class NoiseRun:
    """What a ``lrbatch noise-scale --study`` run recorded, as the report reads it.

    Attributes:
        batch_size: the run's effective batch (B0).
        lr: its learning rate.
        b_simple: B_simple at its last measurement.
        eps_max: ε_max there.
        step: the last measurement's step.
        plain_sgd: the study's optimizer is plain SGD, the one ε_opt(B) is about.
        optimizer: the optimizer, in words.
    """

    batch_size: int
    lr: float
    b_simple: float
    eps_max: float
    step: int
    plain_sgd: bool
    optimizer: str

    def sgd_optimum(self, batch: float) -> float:
        """ε_opt(B) = ε_max / (1 + B_simple/B) from the last measurement."""
        return saturating(batch, self.eps_max, self.b_simple)


def record_noise_run(
    study: optuna.Study, run: dict[str, Any], optimizer: str, plain_sgd: bool
) -> None:
    """Record a ``lrbatch noise-scale`` run (its ``--json`` object) on ``study``."""
    study.set_user_attr(NOISE_RUN_ATTR, {**run, "optimizer": optimizer, "plain_sgd": plain_sgd})


def recorded_noise_run(study: optuna.Study) -> NoiseRun | None:
    """The last ``lrbatch noise-scale`` run recorded on ``study``; None where there is none or
    its last measurement has no positive, finite B_simple and ε_max."""
    run = study.user_attrs.get(NOISE_RUN_ATTR)
    if not run or not run.get("trajectory"):
        return None
    last = run["trajectory"][-1]
    b_simple, eps_max = _number(last.get("b_simple")), _number(last.get("eps_max"))
    if not (0 < b_simple < math.inf and 0 < eps_max < math.inf):  # no SGD optimum to draw
        return None
    return NoiseRun(
        batch_size=int(run["batch_size"]),
        lr=float(run["lr"]),
        b_simple=b_simple,
        eps_max=eps_max,
        step=int(last["step"]),
        plain_sgd=bool(run.get("plain_sgd")),
        optimizer=str(run.get("optimizer", "")),
    )


PACK_CHOICE_ATTR = "lrbatch.pack_choice"  # + "/<hardware>/B=<batch size>"


def _pack_choice_key(hardware: str, batch_size: int) -> str:
    return f"{PACK_CHOICE_ATTR}/{hardware}/B={batch_size}"


def recorded_pack_choice(
    study: optuna.Study, hardware: str, batch_size: int
) -> tuple[int, str] | None:
    """The pack size ``hardware.pack=auto`` chose at ``batch_size`` on ``hardware`` (see
    :func:`record_pack_choice`) and why, as first recorded on ``study``; None where none is."""
    recorded = study.user_attrs.get(_pack_choice_key(hardware, batch_size))
    if not isinstance(recorded, dict) or not isinstance(recorded.get("size"), int):
        return None
    return int(recorded["size"]), str(recorded.get("why", ""))


def record_pack_choice(
    study: optuna.Study, hardware: str, batch_size: int, size: int, why: str
) -> tuple[int, str]:
    """Record on ``study`` the pack size chosen at ``batch_size`` on ``hardware`` (a device
    and thread count: :func:`lrbatch.workers.pack_choice.timing_hardware`), unless a choice is
    recorded there already (another worker timed it meanwhile): the choice that stands, and why.
    Every worker on that hardware, and a resumed sweep, reads it instead of timing packs again."""
    first = recorded_pack_choice(study, hardware, batch_size)
    if first is not None:
        return first
    study.set_user_attr(_pack_choice_key(hardware, batch_size), {"size": size, "why": why})
    return size, why


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _number(value: float | None) -> float:
    return math.nan if value is None else float(value)


def load_points(trials: Iterable[FrozenTrial]) -> list[TrialPoint]:
    """Every finished trial with a batch size and a learning rate."""
    return [p for p in map(trial_point, trials) if p is not None]


def open_study(storage_url: str, study_name: str | None) -> optuna.Study:
    """Load a study; with no name, the storage's only (or most recently created) study.

    Raises:
        ConfigError: no such study, or the storage holds none.
    """
    storage = open_storage(storage_url, heartbeat_interval=None, create=False)
    names = study_names(storage)
    if not names:
        raise ConfigError(f"storage {redact(storage_url)} holds no study")
    if study_name is None:
        study_name = names[-1]
    elif study_name not in names:
        raise ConfigError(
            f"study {study_name!r} is not in {redact(storage_url)}; it holds: {', '.join(names)}"
        )
    return optuna.load_study(study_name=study_name, storage=storage)


def study_names(storage: BaseStorage) -> list[str]:
    """The names of the studies in ``storage``, oldest first; none where it has no tables
    (a database no study was ever created in)."""
    try:
        summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    except (OptunaError, SQLAlchemyError):
        return []
    return [s.study_name for s in summaries]


def find_last_study(runs_dir: Path = Path("runs")) -> str:
    """The storage URL of the most recently written SQLite study under ``runs_dir``.

    Raises:
        ConfigError: there is none.
    """
    candidates = sorted(
        (p for p in runs_dir.glob("*.db") if p.stat().st_size > 0),  # (not an empty file)
        key=lambda p: p.stat().st_mtime,
    )
    if not candidates:
        raise ConfigError(
            f"no study found in {runs_dir}/: run `lrbatch sweep` first, or give --storage"
        )
    return f"sqlite:///{candidates[-1]}"
