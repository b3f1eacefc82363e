"""Running a sweep: open or resume the study, then train until the plan is done.

One worker trains in this process (:func:`lrbatch.workers.worker.work`); more (``hardware.workers``,
or one per visible GPU) run as processes of a :class:`lrbatch.workers.pool.ProcessPool`, each
entering :func:`lrbatch.workers.worker.main` on the same study, while this process shows the study
and watches them. ``lrbatch worker`` joins a study that already exists (:func:`join_sweep`) the
same way.

The pool's processes are watched here. One killed from outside (SIGKILL, the kernel's OOM
killer) has its running trials failed at once and is started again; the failed trials' points
are retried first, as a pack where they were one (:func:`lrbatch.search.sampler.next_pack`). One
whose trial raised an error, or that was given bad input, stops the sweep with the end of its log.
Ctrl-C interrupts every worker (each fails its running trials), waits a few seconds, and kills
those still running.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from lrbatch.console import make_console
from lrbatch.search import (
    Finished,
    Observation,
    SweepPlan,
    next_step,
    observations,
    ran_by,
    redact,
    short_of_target,
)
from lrbatch.workers.display import SweepProgress
from lrbatch.workers.interrupts import Interrupts
from lrbatch.workers.pool import ProcessPool, tail
from lrbatch.workers.prepare import SLOT_ENV, objective_name, prepare, recorded_config, storage_url
from lrbatch.workers.slots import PRELOAD, Slot, start_worker_server, worker_slots
from lrbatch.workers.worker import EXIT_BAD_INPUT, EXIT_FAILED, STORAGE_ENV, work

__all__ = ["MAX_RESTARTS", "SweepOutcome", "WorkerFailed", "join_sweep", "run_sweep"]

MAX_RESTARTS = 3  # restarts of one slot's worker after it was killed from outside
_WATCH_S = 0.1  # how often the pool's processes are looked at
_SHOW_S = 0.5  # how often the study is read for the display
_STOP_S = 15.0  # after Ctrl-C, how long workers get to fail their trials before being killed
_LOCAL_DATASET = ("data_dir", "download")  # dataset settings that differ between machines


class WorkerFailed(RuntimeError):
    """A worker process stopped with an error (its log's end is in the message)."""


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
            pool = _Workers(cfg, url, slots, worker.study, worker.plan)
            why, trained = pool.run(progress, trial_limit)
    trials = worker.study.get_trials(deepcopy=False)
    short = None
    if cfg.budget.kind == "target":
        short = short_of_target(trials, str(cfg.study.metric), str(cfg.study.direction))
    return SweepOutcome(
        cfg.study.name,
        redact(url),
        why,
        trained,
        worker.plan,
        observations(trials),
        len(slots),
        None if short is None else f"{short}; target {cfg.budget.target:g}",
    )


def _overrides(cfg: DictConfig, slot: Slot) -> list[str]:
    """``key=value`` settings a worker process gets on top of the study's recorded config:
    this machine's hardware and local data settings, one worker per process."""
    values: dict[str, Any] = {f"hardware.{k}": v for k, v in cfg.hardware.items()}
    values.update({"hardware.workers": 1, "hardware.workers_per_gpu": 1})
    values["hardware.threads"] = slot.threads
    for key in ("heartbeat_interval", "grace_period"):
        values[f"study.{key}"] = cfg.study[key]
    for key in _LOCAL_DATASET:
        if key in cfg.dataset:
            values[f"dataset.{key}"] = cfg.dataset[key]
    return [f"{key}={json.dumps(value)}" for key, value in values.items()]


def _shares(trial_limit: int | None, workers: int) -> list[int | None]:
    """Each worker's part of ``trial_limit`` (None: no limit)."""
    if trial_limit is None:
        return [None] * workers
    return [trial_limit // workers + (k < trial_limit % workers) for k in range(workers)]


class _Workers:
    """One worker process per slot on one study, started, watched and stopped.

    Args:
        cfg: the sweep's config (its hardware and local data settings go to each worker).
        url: the study's storage URL (passed in the environment, never on a command line).
        slots: from :func:`lrbatch.workers.slots.worker_slots`.
        study: the study.
        plan: its plan (whether it is finished decides whether a killed worker restarts).
    """

    def __init__(
        self, cfg: DictConfig, url: str, slots: Sequence[Slot], study: optuna.Study, plan: SweepPlan
    ) -> None:
        self._cfg, self._url, self._slots = cfg, url, list(slots)
        self._study, self._plan = study, plan
        log_dir = Path("runs") / f"{cfg.study.name}.workers"
        self._log_dir = log_dir
        self._pool = ProcessPool("lrbatch.workers.worker:main", PRELOAD, log_dir)
        self._host = socket.gethostname()

    def run(self, progress: SweepProgress, trial_limit: int | None) -> tuple[str, int]:
        """Run the workers until each has stopped; show the study meanwhile.

        Returns:
            Why the sweep stopped (``complete``, ``budget`` or ``paused``) and the number of
            trials the workers trained.

        Raises:
            WorkerFailed: a worker's trial raised an error, or every worker was killed.
            KeyboardInterrupt: after stopping every worker.
        """
        shares = _shares(trial_limit, len(self._slots))
        try:
            # Ctrl-C lands while the pool sleeps; starting a worker or failing a trial, it waits
            # for that to be done (a worker started but not yet known would be left running).
            with Interrupts().installed() as interrupts:
                for index, slot in enumerate(self._slots):
                    if shares[index] != 0:
                        self._start(slot, index, shares[index])
                shown = -math.inf
                while self._pool.members:  # (those not yet seen to end)
                    interrupts.check()
                    if time.monotonic() - shown >= _SHOW_S:
                        progress.update(self._study.get_trials(deepcopy=False))
                        shown = time.monotonic()
                    self._watch(trial_limit)
                    with interrupts.allowed():
                        time.sleep(_WATCH_S)
                interrupts.check()
        except BaseException:
            self._stop()  # (a second Ctrl-C here lands at once)
            raise
        trials = self._study.get_trials(deepcopy=False)
        progress.update(trials)
        decision = next_step(self._plan, trials)
        why = decision.why if isinstance(decision, Finished) else "paused"
        return why, self._trained(trials)

    def _start(self, slot: Slot, index: int, trial_limit: int | None, restarts: int = 0) -> int:
        """Start a worker on ``slot``; returns its pid."""
        argv = ["--study", self._cfg.study.name]
        if trial_limit is not None:
            argv += ["--trial-limit", str(trial_limit)]
        argv += _overrides(self._cfg, slot)
        env = {**slot.env, STORAGE_ENV: self._url, SLOT_ENV: slot.label}
        # (a GPU worker starts CUDA afresh: a new interpreter, not a fork)
        member = self._pool.start(slot.label, index, argv, env, fork=not slot.env)
        member.restarts = restarts
        return member.child.pid

    def _watch(self, trial_limit: int | None) -> None:
        for ended in self._pool.exited():
            member, code = ended.member, ended.code
            if code == 0:
                continue
            if code in (EXIT_FAILED, EXIT_BAD_INPUT):  # stopping is the answer
                self._stop()
                kind = "bad input" if code == EXIT_BAD_INPUT else "an error"
                raise WorkerFailed(
                    f"worker {member.label} (pid {member.child.pid}) stopped with {kind}; "
                    f"the end of its log {member.log}:\n{tail(member.log)}"
                )
            # killed from outside: fail its trials now (not after the heartbeat grace period)
            failed = self._fail_trials_of({member.child.pid})
            trials = self._study.get_trials(deepcopy=False)
            finished = isinstance(next_step(self._plan, trials), Finished)
            left = None if trial_limit is None else trial_limit - self._trained(trials)
            if finished or member.restarts >= MAX_RESTARTS or (left is not None and left <= 0):
                continue
            slot = self._slots[member.index]
            pid = self._start(slot, member.index, left, member.restarts + 1)
            with member.log.open("a") as log:
                log.write(
                    f"--- killed (exit {code}); failed trials {failed}; restarted as pid {pid}\n"
                )
        if not self._pool.members:
            trials = self._study.get_trials(deepcopy=False)
            left = None if trial_limit is None else trial_limit - self._trained(trials)
            finished = isinstance(next_step(self._plan, trials), Finished)
            if not finished and (left is None or left > 0):
                raise WorkerFailed(
                    f"every worker was killed {MAX_RESTARTS + 1} times; "
                    f"see the logs in {self._log_dir}/"
                )

    def _stop(self) -> None:
        """Interrupt every worker, give them :data:`_STOP_S` to fail their trials, kill the
        rest, and fail whatever trial of theirs still runs."""
        try:
            self._pool.stop(_STOP_S)
        finally:
            self._fail_trials_of(self._pool.pids)

    def _fail_trials_of(self, pids: set[int]) -> list[int]:
        failed = []
        for trial in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if ran_by(trial, self._host, pids):
                self._study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
                failed.append(trial.number)
        return failed

    def _trained(self, trials: Sequence[FrozenTrial]) -> int:
        return sum(
            t.state == TrialState.COMPLETE and ran_by(t, self._host, self._pool.pids)
            for t in trials
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
    cfg = recorded_config(url, study_name, overrides)
    return _run(cfg, console or make_console(), trial_limit, record=False)
