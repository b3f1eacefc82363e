"""Live progress of a sweep: where each batch size stands, what runs now, what just finished.

On a terminal it is a rich live panel; elsewhere (CI, pipes, logs) one line per finished trial.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from types import TracebackType

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lrbatch.plan import Observation, Proposal, SweepPlan
from lrbatch.progress import format_lr, summarize
from lrbatch.train import TrialResult

__all__ = ["SweepProgress"]


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def _outcome(result: TrialResult, metric: str) -> str:
    if result.diverged:
        return f"diverged at step {result.steps}"
    if result.reached_target is not None:
        return f"target in {result.steps} steps" if result.reached_target else "target not reached"
    return f"{metric} {result.metrics.get(metric, math.nan):.4g}"


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
        self._observations: Sequence[Observation] = ()
        self._running: Proposal | None = None
        self._last = ""
        self._live: Live | None = None

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

    def update(self, observations: Sequence[Observation], running: Proposal | None = None) -> None:
        """Show the study's current trials and, if any, the trial starting now."""
        self._observations = observations
        self._running = running
        if self._live is not None:
            self._live.update(self._render())

    def finished(self, proposal: Proposal, result: TrialResult, trials_total: int) -> None:
        """Report a trial that just ended."""
        self._last = (
            f"#{trials_total} B={proposal.batch_size} lr={format_lr(proposal.lr)} "
            f"seed={proposal.seed} ({proposal.reason}): {_outcome(result, self._metric)}, "
            f"{result.wall_time_s:.1f}s"
        )
        if self._live is None:
            self._console.print(self._last, highlight=False)

    def _render(self) -> Group:
        rows = summarize(self._plan, self._observations)
        done = sum(o.value is not None for o in self._observations)
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
        if self._running is not None:
            p = self._running
            lines.append(
                Text(f"now:  B={p.batch_size} lr={format_lr(p.lr)} seed={p.seed} ({p.reason})")
            )
        if self._last:
            lines.append(Text(f"last: {self._last}", style="dim"))
        return Group(*lines)
