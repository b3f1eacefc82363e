"""Live progress of a sweep, read from the study: each batch size, each worker, each new result.

Everything shown comes from the study's trials, so the panel is the same whether the trials
are trained in this process, by worker processes it started, or by workers on other machines.
On a terminal it is a rich live panel; elsewhere (CI, pipes, logs) one line per finished trial.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Sequence
from types import TracebackType

from optuna.trial import FrozenTrial, TrialState
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lrbatch.search import SweepPlan, TrialRun, format_lr, observations, point, summarize, trial_run

__all__ = ["SweepProgress", "describe_trial", "worker_label"]


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def worker_label(trial: FrozenTrial) -> str:
    """Which worker trains (trained) a trial: ``host:pid`` and its device slot."""
    return _worker_label(trial_run(trial))


def _worker_label(run: TrialRun) -> str:
    worker = run.worker
    if not worker:
        return "—"
    return f"{worker.get('host')}:{worker.get('pid')} {worker.get('slot', '')}".strip()


def _outcome(trial: FrozenTrial, run: TrialRun, metric: str) -> str:
    if trial.state == TrialState.FAIL:
        return f"failed ({run.error or 'killed or interrupted: it will be retried'})"
    ended = run.outcome
    if ended is None:
        return "no value"
    if ended.diverged:
        return f"diverged at step {run.steps}"
    if ended.reached_target is not None:
        return f"target in {run.steps} steps" if ended.reached_target else "target not reached"
    value = run.metrics.get(metric, ended.value)
    return f"{metric} {value:.4g}" if math.isfinite(value) else "no value"


def describe_trial(trial: FrozenTrial, metric: str, run: TrialRun | None = None) -> str:
    """One line for a finished trial: its number, point, reason, outcome, time and worker
    (``run``: its :func:`trial_run`, if read already)."""
    run = run or trial_run(trial)
    where = run.point
    what = (
        f"B={where.batch_size} lr={format_lr(where.lr)} seed={where.seed} ({where.reason})"
        if where
        else "(no point)"
    )
    took = f", {run.wall_time_s:.1f}s" if run.wall_time_s is not None else ""
    extra = ""
    if run.pack.get("trained_together", 1) > 1:
        extra = f", in a pack of {run.pack['trained_together']}"
    if run.oom_micro_batches:
        extra += f", out of memory at micro-batch {run.oom_micro_batches}"
    ended = _outcome(trial, run, metric)
    return f"#{trial.number} {what}: {ended}{took}{extra} [{_worker_label(run)}]"


def _pack_notes(run: TrialRun) -> list[str]:
    """How a trial's pack was chosen, and why its pack trained one at a time, if it did."""
    notes = []
    if run.pack.get("chosen") and run.point is not None:
        where = f" at B={run.point.batch_size}" if run.pack.get("trained_together", 1) > 1 else ""
        notes.append(f"hardware.pack=auto{where}: {run.pack['chosen']}")
    if run.pack.get("fallback"):
        notes.append(f"hardware.pack: trials train one at a time: {run.pack['fallback']}")
    return notes


class SweepProgress:
    """Shows a sweep's progress; use as a context manager around the worker loop.

    Args:
        console: where to draw.
        plan: the sweep's plan (its states are what is shown).
        metric: the study's metric name.
        title: a line naming the study and its storage (password redacted).
    """

    def __init__(self, console: Console, plan: SweepPlan, metric: str, title: str) -> None:
        self._console = console
        self._plan = plan
        self._metric = metric
        self._title = title
        self._started = time.monotonic()
        self._trials: Sequence[FrozenTrial] = ()
        self._reported: set[int] | None = None  # finished trials already shown
        self._last = ""
        self._live: Live | None = None
        self._notes: set[str] = set()  # lines said once (how trials were packed)

    def __enter__(self) -> SweepProgress:
        if self._console.is_terminal:
            self._live = Live(self._render(), console=self._console, refresh_per_second=4)
            self._live.__enter__()
        else:
            self._console.print(self._title)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(kind, error, traceback)

    def update(self, trials: Sequence[FrozenTrial]) -> None:
        """Show the study as it is now; report the trials that finished since the last call."""
        self._trials = trials
        finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)]
        if self._reported is None:  # trials of earlier runs are not news
            self._reported = {t.number for t in finished}
        for trial in finished:
            if trial.number in self._reported:
                continue
            self._reported.add(trial.number)
            run = trial_run(trial)
            for note in _pack_notes(run):
                if note not in self._notes:
                    self._notes.add(note)
                    self._console.print(note, highlight=False, markup=False)
            self._last = describe_trial(trial, self._metric, run)
            if self._live is None:
                self._console.print(self._last, highlight=False)
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        seen = observations(self._trials)
        rows = summarize(self._plan, seen)
        done = sum(o.value is not None for o in seen)
        table = Table(box=None, pad_edge=False)
        for column in ("batch", "status", "trials", "best lr", self._metric):
            table.add_column(column, justify="left" if column == "status" else "right")
        for row in rows:
            value = (
                "—"
                if row.best_value is None or not math.isfinite(row.best_value)
                else f"{row.best_value:.4g}"
            )
            table.add_row(
                str(row.batch_size), row.status, str(row.trials), format_lr(row.best_lr), value
            )
        header = Text(
            f"{self._title}\n{done} trials done of at most {self._plan.max_trials} · "
            f"{_duration(time.monotonic() - self._started)}",
            style="bold",
        )
        lines: list[Text | Table] = [header, table]
        running = [t for t in self._trials if t.state == TrialState.RUNNING and point(t)]
        if running:
            workers = Table(box=None, pad_edge=False, title="running now", title_justify="left")
            for column in ("worker", "trial", "batch", "lr", "seed", "why", "for"):
                workers.add_column(
                    column, justify="left" if column in ("worker", "why") else "right"
                )
            now = datetime.datetime.now()
            for trial in running:
                where = point(trial)
                assert where is not None
                started = trial.datetime_start or now
                workers.add_row(
                    worker_label(trial),
                    f"#{trial.number}",
                    str(where.batch_size),
                    format_lr(where.lr),
                    str(where.seed),
                    where.reason,
                    _duration((now - started).total_seconds()),
                )
            lines.append(workers)
        if self._last:
            lines.append(Text(f"last: {self._last}", style="dim"))
        return Group(*lines)
