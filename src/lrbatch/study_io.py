"""Reading a study's trials, importing grids measured elsewhere, finding studies.

How a finished trial ended is read in one place, :func:`outcome`, for the sweep plan and the
analysis alike: a run that missed its target (target budget) is the worst at its learning rate
but not a divergence, for both.

A grid measured with another tool (or published in a paper) becomes an Optuna study with the
same parameters and attributes as a sweep's, so the same report runs on it.

The gradient noise scale a trial recorded is written and read here too
(:func:`noise_user_attrs`, :func:`trial_noise`). Its user attributes:

- ``noise_scale``: a list, one entry per recorded point (``start``, ``10%``, ``50%``, ``end``
  of the planned steps; fewer where the run stopped early), each
  ``{"point", "first_step", "last_step", "samples", "b_simple", "grad_sq", "trace_sigma",
  "steps"}``: B_simple = tr(Σ)/|G|² in samples, |G|² and tr(Σ) of the per-example mean loss,
  averaged over the ``steps`` optimizer steps ``first_step``…``last_step`` (4; fewer in a
  trial of under 160 steps, :func:`lrbatch.noise.window_steps`), ``samples`` the examples
  trained on before the window's middle; a number that is not finite (B_simple where |G|² was
  not resolved) is null.
- ``grad_norms``: ``[[step, |G_B|], ...]``, the norm of the batch gradient the optimizer
  stepped with, at up to 32 evenly spaced steps (first and last included).

``lrbatch noise-scale --study NAME`` records its run on the study (user attribute
``lrbatch.noise_scale``: its ``--json`` object plus ``optimizer`` and ``plain_sgd``), so the
report can draw the SGD optimum it implies: :func:`record_noise_run`, :func:`recorded_noise_run`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import optuna
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.exceptions import OptunaError
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from lrbatch.analysis import TrialPoint
from lrbatch.config import ConfigError
from lrbatch.noise import NoiseEstimate, NoiseRecord
from lrbatch.rules import saturating
from lrbatch.storage import open_storage, redact

__all__ = [
    "NOISE_RUN_ATTR",
    "NoiseRun",
    "Outcome",
    "TrialNoise",
    "find_last_study",
    "import_csv",
    "load_points",
    "noise_records",
    "noise_user_attrs",
    "open_study",
    "outcome",
    "record_noise_run",
    "recorded_noise_run",
    "study_names",
    "trial_noise",
]

_REQUIRED = ("batch_size", "lr", "metric")
_OPTIONAL = ("seed", "steps", "diverged", "reached_target")
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f"}


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
    return Outcome(value, _diverged(recorded, value, reached), reached)


def _diverged(recorded: bool | None, value: float, reached: bool | None) -> bool:
    """The recorded divergence where there is one; else a value that is not finite, unless
    the run only missed its target."""
    if recorded is not None:
        return recorded
    return not math.isfinite(value) and reached is not False


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
    recorded its noise scale: what :func:`lrbatch.theory.measured_noise` reads."""
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


class _Row(NamedTuple):
    batch: int
    lr: float
    metric: float
    seed: int
    steps: int | None
    diverged: bool
    reached_target: bool | None


def _parse_row(row: dict[str, str], line: int, path: Path) -> _Row:
    def bad(column: str, accepted: str) -> ConfigError:
        return ConfigError(
            f"{path}:{line}: {column}={row.get(column)!r} is not accepted; {accepted}"
        )

    if None in row or None in row.values():  # (csv: more fields than the header, or fewer)
        raise ConfigError(
            f"{path}:{line}: the row's fields do not match the header's {len(row) - (None in row)}"
            " columns; accepted: one value per column (empty for none)"
        )
    try:
        batch = int(row["batch_size"])
        if batch <= 0:
            raise ValueError
    except ValueError:
        raise bad("batch_size", "a positive integer is needed") from None
    try:
        lr = float(row["lr"])
        if not (lr > 0 and math.isfinite(lr)):
            raise ValueError
    except ValueError:
        raise bad("lr", "a positive number is needed") from None
    said = (row.get("diverged") or "").strip().lower()
    if said and said not in _TRUE | _FALSE:
        raise bad("diverged", "true, false or empty (read from the metric) is needed")
    recorded = True if said in _TRUE else None
    reached = (row.get("reached_target") or "").strip().lower()
    if reached and reached not in _TRUE | _FALSE:
        raise bad("reached_target", "true, false or empty (no target) is needed")
    try:
        metric = float(row["metric"]) if (row["metric"] or "").strip() else math.nan
    except ValueError:
        raise bad("metric", "a number (or empty for a diverged run) is needed") from None
    try:
        seed = int(row.get("seed") or 0)
        steps = int(row["steps"]) if (row.get("steps") or "").strip() else None
    except ValueError:
        raise bad("seed/steps", "integers are needed") from None
    reached_target = None if not reached else reached in _TRUE
    if said in _FALSE and math.isnan(metric) and reached_target is not False:
        raise bad("metric", "a number: the row says it did not diverge (diverged=false)")
    diverged = _diverged(recorded, metric, reached_target)
    return _Row(batch, lr, metric, seed, steps, diverged, reached_target)


def import_csv(
    path: Path,
    storage_url: str,
    study_name: str,
    direction: Literal["minimize", "maximize"] = "minimize",
) -> int:
    """Load a CSV grid (columns ``batch_size, lr, metric``; optional ``seed, steps, diverged,
    reached_target``) into a new study; returns the number of trials added. A row with an
    empty or infinite metric diverged, unless ``reached_target`` is false (a target budget's
    run that never reached it: worst at its lr, not a divergence). ``lrbatch report``'s
    ``trials.csv`` is accepted as it is (``value`` for ``metric``; only COMPLETE rows).

    Every row is checked before anything is written: a bad row adds nothing.

    Raises:
        ConfigError: a missing column or a bad value, naming the line.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or "not UTF-8 text"
        raise ConfigError(
            f"{path}: cannot be read ({reason}); accepted: a CSV file with columns "
            f"{', '.join(_REQUIRED)}"
        ) from None
    with io.StringIO(text, newline="") as file:
        reader = csv.DictReader(file)
        columns = set(reader.fieldnames or ())
        if "metric" not in columns and "value" in columns:  # lrbatch report's trials.csv
            reader.fieldnames = ["metric" if c == "value" else c for c in reader.fieldnames or ()]
            columns = set(reader.fieldnames)
        missing = [c for c in _REQUIRED if c not in columns]
        if missing:
            raise ConfigError(
                f"{path} lacks column(s) {', '.join(missing)}; needed: {', '.join(_REQUIRED)}, "
                f"optional: {', '.join(_OPTIONAL)}"
            )
        rows = [
            _parse_row(row, line, path)
            for line, row in enumerate(reader, start=2)
            if row.get("state", "COMPLETE") == "COMPLETE"  # trials.csv also lists failed ones
        ]
    if not rows:
        raise ConfigError(f"{path} has no rows")
    worst = math.inf if direction == "minimize" else -math.inf
    batches = [r.batch for r in rows]
    lrs = [r.lr for r in rows]
    seeds = [r.seed for r in rows]
    distributions = {
        "batch_size": IntDistribution(min(batches), max(batches), log=True),
        "lr": FloatDistribution(min(lrs), max(lrs), log=True),
        "seed": IntDistribution(min(seeds), max(seeds)),
    }
    storage = open_storage(storage_url, heartbeat_interval=None)
    existing = [s.study_name for s in optuna.get_all_study_summaries(storage, False)]
    if study_name in existing:  # importing twice would duplicate every row
        raise ConfigError(
            f"study {study_name!r} already exists in {redact(storage_url)}; import into a new study"
        )
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction)
    trials = []
    for batch, lr, metric, seed, steps, diverged, reached in rows:
        attrs = {"effective_batch": batch, "seed": seed, "diverged": diverged, "reason": "imported"}
        if steps is not None:
            attrs |= {"steps": steps, "samples": steps * batch}
        if reached is not None:
            attrs["reached_target"] = reached
        trials.append(
            optuna.trial.create_trial(
                params={"batch_size": batch, "lr": lr, "seed": seed},
                distributions=distributions,
                value=worst if diverged or reached is False else metric,
                user_attrs=attrs,
            )
        )
    study.add_trials(trials)
    study.set_user_attr("lrbatch.imported_from", str(path))
    return len(trials)
