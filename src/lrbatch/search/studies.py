"""The studies a storage holds, each with where its sweep stands: ``lrbatch studies``.

A study's state is read from its trials and, for a study ``lrbatch sweep`` made, its recorded
sweep settings (the plan is a pure function of the trials, so it says whether the sweep is
done): ``running`` (a trial is running), ``complete`` (every optimum pinned and replicated),
``budget spent`` (``sweep.max_trials`` reached), ``paused`` (the plan has more to train: rerun
the sweep or start a worker), ``imported`` (``lrbatch import``) or ``not lrbatch`` (another
tool's study).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from lrbatch.search.decisions import Finished
from lrbatch.search.plan import SweepPlan
from lrbatch.search.storage import open_storage, redact
from lrbatch.search.study_io import observations, outcome, study_names

__all__ = ["StudyRow", "delete_study", "runs_storages", "study_rows"]


@dataclass(frozen=True)
class StudyRow:
    """One study, as ``lrbatch studies`` lists it.

    Attributes:
        storage: its storage's URL, password hidden.
        name: the study's name.
        state: where its sweep stands (see the module).
        finished: trials that finished (diverged ones included).
        diverged: finished trials that diverged.
        running: trials running now (or whose worker died unnoticed so far).
        failed: failed trials (retried when the sweep resumes).
        last: when its last trial started, if any.
    """

    storage: str
    name: str
    state: str
    finished: int
    diverged: int
    running: int
    failed: int
    last: datetime.datetime | None


def runs_storages(runs_dir: Path = Path("runs")) -> list[str]:
    """The URLs of the SQLite files under ``runs_dir`` (where sweeps keep their studies by
    default), oldest first; empty files are none."""
    files = [p for p in runs_dir.glob("*.db") if p.stat().st_size > 0]
    return [f"sqlite:///{p}" for p in sorted(files, key=lambda p: p.stat().st_mtime)]


def study_rows(url: str) -> list[StudyRow]:
    """Every study in the storage at ``url`` (created by nothing: it must exist).

    Raises:
        ConfigError: the storage cannot be opened, or does not exist.
    """
    storage = open_storage(url, heartbeat_interval=None, create=False)
    rows = []
    for name in study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state == TrialState.COMPLETE]
        starts = [t.datetime_start for t in trials if t.datetime_start is not None]
        rows.append(
            StudyRow(
                storage=redact(url),
                name=name,
                state=_state(study, trials),
                finished=len(finished),
                diverged=sum(outcome(t).diverged for t in finished),
                running=sum(t.state == TrialState.RUNNING for t in trials),
                failed=sum(t.state == TrialState.FAIL for t in trials),
                last=max(starts, default=None),
            )
        )
    return rows


def _state(study: optuna.Study, trials: list[FrozenTrial]) -> str:
    attrs = study.user_attrs
    config = attrs.get("lrbatch.config")
    if config is None:
        return "imported" if "lrbatch.imported_from" in attrs else "not lrbatch"
    if any(t.state == TrialState.RUNNING for t in trials):
        return "running"
    direction = study.direction.name.lower()
    plan = SweepPlan.from_config(OmegaConf.create(config["sweep"]), direction)
    step = plan.next(observations(trials))
    if isinstance(step, Finished):
        return "complete" if step.why == "complete" else "budget spent"
    return "paused"


def delete_study(url: str, name: str) -> None:
    """Delete study ``name`` and its trials from the storage at ``url``."""
    optuna.delete_study(
        study_name=name, storage=open_storage(url, heartbeat_interval=None, create=False)
    )
