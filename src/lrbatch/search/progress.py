"""Where a running sweep stands, per batch size: its status, trials and best point so far.

The live display shows these rows; the answer itself (optima with intervals, laws, rules'
regret) is :mod:`lrbatch.report.report`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lrbatch.search.decisions import Observation
from lrbatch.search.plan import SweepPlan

__all__ = ["BatchSummary", "format_lr", "summarize"]

_STATUS = {
    "done": "pinned",
    "replicate": "replicating",
    "tighten": "adding seeds",
    "search": "searching",
    "waiting": "waiting",
}


@dataclass(frozen=True)
class BatchSummary:
    """One batch size's progress.

    Attributes:
        batch_size: effective batch size.
        status: ``pinned``, ``at lr bound`` (the best lr is lr_min or lr_max: not bracketed),
            ``adding seeds`` (pinned and replicated, its optimum still loose), ``replicating``,
            ``searched`` (replicates to come), ``searching`` or ``waiting``.
        best_lr: the best learning rate found (pooled over seeds once replicated).
        best_value: the metric there (mean over seeds).
        trials: trials run at this batch size, diverged ones included.
        diverged: how many of them diverged.
    """

    batch_size: int
    status: str
    best_lr: float | None
    best_value: float | None
    trials: int
    diverged: int


def summarize(plan: SweepPlan, observations: Sequence[Observation]) -> list[BatchSummary]:
    """One :class:`BatchSummary` per batch size, in increasing batch size."""
    states = plan.states(observations)
    rows = []
    for batch, state in sorted(states.items()):
        status = _STATUS[state.phase]
        if state.phase == "done" and not state.bracketed:
            status = "at lr bound"
        here = [o for o in observations if o.batch_size == batch]
        if state.phase == "replicate" and not any(o.seed > 0 for o in here):
            status = "searched"  # replicates wait until every batch size is searched
        rows.append(
            BatchSummary(
                batch_size=batch,
                status=status,
                best_lr=state.best_lr,
                best_value=state.best_value,
                trials=len(here),
                diverged=sum(o.diverged for o in here),
            )
        )
    return rows


def format_lr(lr: float | None) -> str:
    return "—" if lr is None else f"{lr:.3g}"
