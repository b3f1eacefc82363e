"""The sweep's answer in one table: per batch size, the best learning rate found and each
rule's prediction with its ratio to that best."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table

from lrbatch.plan import Observation, SweepPlan

__all__ = ["BatchSummary", "format_lr", "reference_lr", "summarize", "summary_table"]

_SHORT = {"constant": "const", "square_root": "sqrt", "saturating": "satur."}
_STATUS = {
    "done": "pinned",
    "replicate": "replicating",
    "search": "searching",
    "waiting": "waiting",
}


@dataclass(frozen=True)
class BatchSummary:
    """One row of the answer.

    Attributes:
        batch_size: effective batch size.
        status: ``pinned``, ``at lr bound`` (the best lr is lr_min or lr_max: not bracketed),
            ``replicating``, ``searched`` (replicates to come), ``searching`` or ``waiting``.
        best_lr: the best learning rate found (pooled over seeds once replicated).
        best_value: the metric there (mean over seeds).
        trials: trials run at this batch size, diverged ones included.
        diverged: how many of them diverged.
        predictions: each rule's learning rate here, anchored at (B0, η0).
    """

    batch_size: int
    status: str
    best_lr: float | None
    best_value: float | None
    trials: int
    diverged: int
    predictions: dict[str, float]

    def ratio(self, rule: str) -> float | None:
        """Predicted / best learning rate for ``rule`` (1.0 is a perfect prediction)."""
        if self.best_lr is None or rule not in self.predictions:
            return None
        return self.predictions[rule] / self.best_lr


def summarize(plan: SweepPlan, observations: Sequence[Observation]) -> list[BatchSummary]:
    """One :class:`BatchSummary` per batch size, in increasing batch size."""
    states = plan.states(observations)
    anchor = reference_lr(plan, observations)
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
                predictions={} if anchor is None else plan.predictions(batch, anchor),
            )
        )
    return rows


def reference_lr(plan: SweepPlan, observations: Sequence[Observation]) -> float | None:
    """η0 for judging the rules: the configured base lr, else B0's best (seed-pooled) optimum.

    The plan itself anchors its proposals at the first seed's optimum at B0 (known earlier);
    the answer uses the best estimate at the end.
    """
    return plan.base_lr or plan.states(observations)[plan.base_batch].best_lr


def format_lr(lr: float | None) -> str:
    return "—" if lr is None else f"{lr:.3g}"


def summary_table(plan: SweepPlan, observations: Sequence[Observation], metric: str) -> Table:
    """The answer as a rich table; the caption names the base point and the tolerance."""
    rows = summarize(plan, observations)
    anchor = reference_lr(plan, observations)
    rules = list(rows[0].predictions) if rows else []
    table = Table(title="Best learning rate per batch size", title_justify="left")
    for column in ("batch", "best lr", metric, "trials", "div."):
        table.add_column(column, justify="right")
    table.add_column("status")
    for rule in rules:
        table.add_column(_SHORT.get(rule, rule), justify="right")
    for row in rows:
        value = (
            "—"
            if row.best_value is None or not math.isfinite(row.best_value)
            else f"{row.best_value:.4g}"
        )
        cells = [
            str(row.batch_size),
            format_lr(row.best_lr),
            value,
            str(row.trials),
            str(row.diverged),
            row.status,
        ]
        for rule in rules:
            ratio = row.ratio(rule)
            cells.append(
                f"{format_lr(row.predictions[rule])} ×{ratio:.2g}"
                if ratio
                else format_lr(row.predictions.get(rule))
            )
        table.add_row(*cells)
    base = (
        f"η0 = {format_lr(anchor)} at B0 = {plan.base_batch}"
        if anchor
        else f"η0 not yet found at B0 = {plan.base_batch}"
    )
    table.caption = (
        f"{base}; rules anchored there. Optima pinned to within ×{plan.tolerance:g} "
        f"and replicated over {plan.seeds} seed(s). Rule columns: predicted lr and "
        "×(predicted/best); above 1 the rule overshoots."
    )
    table.caption_justify = "left"
    return table
