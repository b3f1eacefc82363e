"""The worker stage: ask the plan, train, tell the study; until the plan is finished.

A worker reads the study's trials, asks the plan once what to train next (a pack of learning
rates at one batch size and seed: :meth:`lrbatch.search.plan.SweepPlan.next_pack`), creates one
Optuna trial per point (ask), trains them together (:func:`lrbatch.training.loop.train_pack`), turns
what the trainer measured into each trial's value and records it (tell). Any number of
workers, here or on other machines, run this on one study: the study is all they share.

``lrbatch worker`` and a sweep's worker processes run it; a pool's process enters at
:func:`main`, whose exit status says how it ended (:data:`EXIT_OK` ... :data:`EXIT_INTERRUPTED`).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig
from optuna.trial import Trial, TrialState

from lrbatch import __version__
from lrbatch.config import ConfigError
from lrbatch.console import make_console, quiet_libraries
from lrbatch.search import (
    Finished,
    Proposal,
    next_pack,
    noise_user_attrs,
    observations,
    placed,
    record_pack_choice,
    recorded_pack_choice,
    same_point,
)
from lrbatch.training import TrialResult, train_pack
from lrbatch.workers.pack_choice import choose_pack, timing_hardware
from lrbatch.workers.pool import stop_with_parent
from lrbatch.workers.prepare import Worker, prepare, recorded_config

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    from lrbatch.workers.display import SweepProgress

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "STORAGE_ENV",
    "main",
    "trial_value",
    "work",
]

EXIT_OK = 0  # the plan is finished, or the worker's trial limit reached
EXIT_FAILED = 1  # a trial raised an error (the pool stops: the same error would recur)
EXIT_BAD_INPUT = 2  # a setting, the study or the storage is wrong (one line says which)
EXIT_INTERRUPTED = 130  # Ctrl-C or SIGTERM: its running trials failed, to be retried
STORAGE_ENV = "LRBATCH_STORAGE"  # the storage URL reaches workers here, never on a command line
# A worker with nothing to do looks at the study again after _POLL_MIN_S, then less and less
# often, up to every _POLL_MAX_S: short trials are not held up, long waits cost few queries.
_POLL_MIN_S = 0.05
_POLL_MAX_S = 2.0
# hardware.pack=auto times packs up to this size (docs/benchmarks.md, "Packed trials"): on a CPU
# core the default MLP's pack of 4 trains ×1.8-2.1 the member-steps/s of one trial at a time at
# batch 16-64 and ×0.9-1.3 from 256 up, a pack of 8 little more than 4 for ~1.5× the trials.
_PACK_LIMIT = {"cuda": 32, "cpu": 4}
# What a trial records of its result, besides its metrics' noise scale (TrialResult's fields)
_RECORDED = (
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
)


def trial_value(cfg: DictConfig, result: TrialResult) -> float:
    """The value a trial records in the study, from what its run measured: ``study.metric``
    at the end of training; a diverged run the worst value (inf, or -inf when maximizing);
    with the target budget, optimizer steps to reach ``budget.target`` (inf if never).

    Raises:
        KeyError: ``study.metric`` is not among the measured metrics.
    """
    if cfg.budget.kind == "target":
        return float(result.steps) if result.reached_target else math.inf
    if result.diverged:
        return math.inf if cfg.study.direction == "minimize" else -math.inf
    metric = str(cfg.study.metric)
    if metric not in result.metrics:
        measured = ", ".join(result.metrics)
        raise KeyError(f"study.metric={metric!r} was not measured; measured: {measured}")
    return result.metrics[metric]


def work(
    worker: Worker, progress: SweepProgress | None = None, trial_limit: int | None = None
) -> str:
    """Train the study's next trials in this process until the plan is finished.

    Args:
        worker: from :func:`lrbatch.workers.prepare.prepare`.
        progress: shows the study after each step, if given.
        trial_limit: train at most this many trials.

    Returns:
        ``complete`` or ``budget`` (the plan is finished), or ``paused`` (trial limit reached).

    Raises:
        KeyboardInterrupt: on Ctrl-C or SIGTERM, at once while training (the trials are
            failed) or waiting, else once the study has recorded the step under way.
    """
    with worker.interrupts.installed():
        why = _work(worker, progress, trial_limit)
        worker.interrupts.check()  # (one held in the last look at the study: stop, say so)
        return why


def _work(worker: Worker, progress: SweepProgress | None, trial_limit: int | None) -> str:
    poll = _POLL_MIN_S
    with _Planning(worker.planning_lock) as planning:
        while trial_limit is None or worker.trained < trial_limit:
            _fail_stale(worker)  # (a dead worker's trials: failed, to be retried)
            planning.acquire()  # (held from reading the study until its trials exist)
            try:
                trials = worker.study.get_trials(deepcopy=False)
                if progress is not None:
                    progress.update(trials)
                decision = next_pack(worker.plan, trials)
                if isinstance(decision, Finished):
                    return decision.why
                if not isinstance(decision, tuple):  # other workers' trials are running
                    planning.release()
                    with worker.interrupts.allowed():
                        time.sleep(poll)
                    poll = min(2 * poll, _POLL_MAX_S)
                    continue
                poll = _POLL_MIN_S
                if _to_choose(worker, decision[0].batch_size):
                    planning.release()  # (timing takes seconds; the study may change meanwhile)
                    with worker.interrupts.allowed():  # (no trial exists yet: Ctrl-C at once)
                        _choose_pack(worker, decision[0].batch_size)
                    continue  # (asked again, with the pack size chosen there)
                left = None if trial_limit is None else trial_limit - worker.trained
                pack = decision[:left]
                base_lr = worker.plan.anchor_lr(observations(trials))
                worker.interrupts.check()  # (before trials are created that would only fail)
                _run_pack(worker, pack, base_lr, asked=planning.release)
            finally:
                planning.release()
            worker.interrupts.check()
    if progress is not None:
        progress.update(worker.study.get_trials(deepcopy=False))
    return "paused"


class _Planning:
    """The lock that this machine's workers of one study hold from reading the study until
    the trials the plan proposed exist (:func:`lrbatch.search.storage.planning_lock_path`), so that
    two of them never choose the same point in the same instant (with 8 workers on a short
    sweep, half the trials once did, and ended pruned). Workers on other machines still can:
    :func:`_keep_untaken` keeps one. An advisory ``flock``: the system lets it go when its
    process dies, however it dies; a no-op where there is no ``fcntl`` or the file cannot be
    opened."""

    def __init__(self, path: Path | None) -> None:
        self._path, self._held = path, False
        self._file: IO[str] | None = None

    def __enter__(self) -> _Planning:
        if self._path is not None and sys.platform != "win32":
            with contextlib.suppress(OSError):
                self._file = open(self._path, "a")  # (closed by __exit__)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        if self._file is not None:
            self._file.close()
            self._file = None

    def acquire(self) -> None:
        if self._file is not None and not self._held:
            fcntl.flock(self._file, fcntl.LOCK_EX)
            self._held = True

    def release(self) -> None:
        if self._file is not None and self._held:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._held = False


def _to_choose(worker: Worker, batch: int) -> bool:
    """Whether ``hardware.pack=auto`` has yet to choose this worker's pack size at ``batch``."""
    return worker.cfg.hardware.pack == "auto" and batch not in dict(worker.plan.pack)


def _choose_pack(worker: Worker, batch: int) -> None:
    """With ``hardware.pack=auto``, the first time the plan works at ``batch``: the pack size
    the study records for this hardware there, or else measure how many trials train there
    together fastest (:func:`lrbatch.workers.pack_choice.choose_pack`) and record it; give the plan
    that pack size."""
    hardware = timing_hardware(worker.fabric)
    recorded = recorded_pack_choice(worker.study, hardware, batch)
    if recorded is None:
        limit = _PACK_LIMIT.get(worker.fabric.device.type, 8)
        choice = choose_pack(worker.cfg, worker.data, worker.fabric, batch, limit)
        size, why = record_pack_choice(worker.study, hardware, batch, choice.size, choice.why)
    else:
        size, why = recorded
    worker.plan = replace(worker.plan, pack=(*worker.plan.pack, (batch, size)))
    worker.pack_choices[batch] = why


def _fail_stale(worker: Worker) -> None:
    """Fail trials whose worker went silent past the heartbeat grace period (retried)."""
    if _heartbeat_interval(worker) is None:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(worker.study)


def _heartbeat_interval(worker: Worker) -> int | None:
    """Seconds between heartbeats where the storage keeps them (RDB storage), else None."""
    storage: Any = worker.storage
    return storage.get_heartbeat_interval() if hasattr(storage, "record_heartbeat") else None


def _beat(worker: Worker, trial: Trial) -> None:
    """Record one heartbeat of ``trial`` (a storage error is let go: the next beat retries)."""
    storage: Any = worker.storage
    with contextlib.suppress(Exception):
        storage.record_heartbeat(trial._trial_id)


def _run_pack(
    worker: Worker,
    pack: Sequence[Proposal],
    base_lr: float | None,
    asked: Callable[[], None] = lambda: None,
) -> None:
    """Ask one trial per point of ``pack``, train them together, tell their results; call
    ``asked`` once the trials exist, their points recorded, before training."""
    study, identity = worker.study, worker.identity
    members: list[Trial] = []
    try:
        worker.sampler.assign(pack, base_lr)
        for _ in pack:
            with warnings.catch_warnings():  # (the heartbeats are ours: _heartbeats)
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
                trial = study.ask()
            members.append(trial)
            if _heartbeat_interval(worker):  # (a worker killed from here on: found stale)
                _beat(worker, trial)
            trial.set_user_attr("worker", identity)  # first: whose trial, if this dies
            _suggest(trial, worker)
        members = _keep_untaken(worker, members)
        asked()
        if not members:
            return
        first = pack[0]
        lrs = [trial.params["lr"] for trial in members]
        for trial in members:
            proposal = worker.sampler.proposal(trial.number) or first
            # (the sampler recorded base_lr, η0 the rules were anchored at, and predictions)
            trial.set_user_attr("reason", proposal.reason)
            trial.set_user_attr("effective_batch", first.batch_size)
            trial.set_user_attr("seed", first.seed)
            trial.set_user_attr("lrbatch_version", __version__)
        with _heartbeats(worker, members), worker.interrupts.allowed():
            results = train_pack(
                worker.cfg,
                first.batch_size,
                lrs,
                first.seed,
                data=worker.data,
                fabric=worker.fabric,
            )
    except BaseException as error:
        for trial in members:  # (interrupted or killed: no error of its own, so retried)
            if _finished(worker, trial):
                continue
            if isinstance(error, Exception):
                trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        raise
    finally:
        worker.sampler.assign((), None)  # (no point left over for a later trial)
    numbers = [trial.number for trial in members]
    for k, (trial, result) in enumerate(zip(members, results, strict=True)):
        if _finished(worker, trial):  # failed as stale meanwhile (this worker was silent)
            continue  # (and retried by others: its result is let go)
        _record(trial, result, numbers, worker.pack_choices.get(first.batch_size))
        try:
            value = trial_value(worker.cfg, result)
        except KeyError as error:
            for failed in members[k:]:  # (none of the pack is left running)
                failed.set_user_attr("error", f"KeyError: {error}")
                study.tell(failed, state=TrialState.FAIL)
            raise
        study.tell(trial, value)
        worker.trained += 1


def _finished(worker: Worker, trial: Trial) -> bool:
    """Whether the study already holds the trial as finished (failed as stale, say)."""
    return bool(worker.storage.get_trial(trial._trial_id).state.is_finished())


def _suggest(trial: Trial, worker: Worker) -> None:
    """The trial's parameters: the point the sampler was assigned (recorded at once)."""
    plan = worker.plan
    trial.suggest_int("batch_size", min(plan.batch_sizes), max(plan.batch_sizes), log=True)
    trial.suggest_float("lr", plan.lr_min, plan.lr_max, log=True)
    trial.suggest_int("seed", 0, plan.seed_limit - 1)


def _keep_untaken(worker: Worker, members: list[Trial]) -> list[Trial]:
    """The members whose point no lower-numbered trial of another worker took meanwhile (it
    read the study before these were created), and that the trial budget still allows; the
    others end pruned, with the reason. Two workers that chose the same point keep it once:
    the lower trial number wins; so does the budget (``sweep.max_trials``)."""
    ours = {trial.number for trial in members}
    taken = placed(worker.sampler.after_earlier_trials(worker.study, max(ours)))
    dropped: set[int] = set()
    for trial in members:
        mine = worker.sampler.proposal(trial.number)
        earlier = [(n, where) for n, where in taken if n < trial.number and n not in dropped]
        took = mine is not None and any(
            n not in ours and same_point(mine, where) for n, where in earlier
        )
        over = len(earlier) >= worker.plan.max_trials
        if took or over:
            why = "another worker took this point" if took else "sweep.max_trials reached"
            trial.set_user_attr("reason", f"skipped: {why}")
            worker.study.tell(trial, state=TrialState.PRUNED)
            dropped.add(trial.number)
    return [trial for trial in members if trial.number not in dropped]


def _record(trial: Trial, result: TrialResult, pack: list[int], chosen: str | None) -> None:
    """Everything the run measured, as the trial's user attributes (read back by
    :mod:`lrbatch.search.study_io`)."""
    for key in _RECORDED:
        trial.set_user_attr(key, getattr(result, key))
    for key, value in noise_user_attrs(result.noise_scale, result.grad_norms).items():
        trial.set_user_attr(key, value)
    together = {
        "trials": pack,  # the trials trained in one pass with it (their numbers)
        "trained_together": result.pack,  # members it started with (1: alone)
        "chosen": chosen,  # hardware.pack=auto: why this pack size at this batch size
        "fallback": result.pack_fallback,  # why the members trained one at a time instead
    }
    trial.set_user_attr("pack", together)


@contextlib.contextmanager
def _heartbeats(worker: Worker, trials: Sequence[Trial]) -> Iterator[None]:
    """While training: each trial's heartbeat, where the storage keeps them (RDB storage with
    ``study.heartbeat_interval``), so that a worker that goes silent has its trials failed
    and retried by the others after the grace period."""
    interval = _heartbeat_interval(worker)
    if not interval:
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            for trial in trials:
                _beat(worker, trial)
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name="lrbatch-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lrbatch-worker", add_help=False)
    parser.add_argument("--study", required=True)
    parser.add_argument("--trial-limit", type=int)
    parser.add_argument("overrides", nargs="*")
    return parser.parse_args(list(argv))


def main(argv: Sequence[str]) -> int:
    """A pool's worker process: join the study named in ``argv`` (its storage in
    ``$LRBATCH_STORAGE``) with the overrides given there, and work on it in this process.

    Args:
        argv: ``--study NAME [--trial-limit N] [key=value ...]``.

    Returns:
        The exit status (:data:`EXIT_OK`, :data:`EXIT_FAILED`, :data:`EXIT_BAD_INPUT`,
        :data:`EXIT_INTERRUPTED`).
    """
    import signal

    console = make_console()
    quiet_libraries()
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # the pool's stop: as Ctrl-C
    stop_with_parent()
    try:
        args = _arguments(argv)
        cfg = recorded_config(os.environ[STORAGE_ENV], args.study, args.overrides)
        why = work(prepare(cfg, record=False), trial_limit=args.trial_limit)
    except ConfigError as error:
        console.print(f"error: {error}", highlight=False, markup=False)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        console.print("Interrupted. Running trials are marked failed and retried.")
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        return EXIT_FAILED
    console.print(f"Stopped: {why}.", highlight=False)
    return EXIT_OK
