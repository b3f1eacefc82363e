"""What the sweep plan decides from, and what it decides: the trials as it reads them
(:class:`Observation`), its answer (a :class:`Proposal` or a pack of them, :data:`WAIT` or
:class:`Finished`), where each batch size stands (:class:`BatchState`) and why one has no
optimum to report (:class:`Shortfall`); and when two learning rates are the same point.

Pure: plain values, no Optuna, no I/O (:func:`lrbatch.search.observations` reads a study's
trials into observations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = [
    "SAME_LR",
    "WAIT",
    "BatchState",
    "Finished",
    "Observation",
    "Proposal",
    "Shortfall",
    "Wait",
    "below",
    "same_lr",
    "same_point",
]

SAME_LR = 1.01  # two learning rates within 1% are the same point


@dataclass(frozen=True)
class Observation:
    """One trial, as the plan sees it. ``value`` is None while the trial runs."""

    batch_size: int
    lr: float
    seed: int
    value: float | None
    diverged: bool = False
    reason: str | None = None  # why it was proposed, where the study recorded it
    reached_target: bool | None = None  # target budget: False for a run that missed it


@dataclass(frozen=True)
class Proposal:
    """What to train next, and why (``rule:<names>``, ``law:<name>``, ``base_grid``,
    ``bracket``, ``refine``, ``replicate`` or ``explore``)."""

    batch_size: int
    lr: float
    seed: int
    reason: str


@dataclass(frozen=True)
class Wait:
    """Nothing can be proposed until a running trial finishes."""


@dataclass(frozen=True)
class Finished:
    """The sweep is over: ``why`` is ``"complete"`` or ``"budget"`` (``max_trials`` spent)."""

    why: str


WAIT = Wait()


@dataclass(frozen=True)
class BatchState:
    """Where one batch size stands.

    Attributes:
        phase: ``waiting`` (for η0), ``search`` (seeding, bracketing, refining), ``replicate``
            (with ``seeds``), ``tighten`` (pinned and replicated with ``seeds``, but loose:
            more seeds, up to ``max_seeds``) or ``done``.
        best_lr: best learning rate so far (seed-pooled once replicated), or None.
        best_value: its metric.
        bracketed: False when the best learning rate sits at ``lr_min`` or ``lr_max``, or no
            learning rate within the bounds lies below the stability edge.
        trials: finished and running trials at this batch size.
        proposal: what this batch size needs next, if anything can be proposed now.
        pack: the proposals that can train together with it (same batch size and seed; it
            first), up to the plan's pack size here (:attr:`lrbatch.SweepPlan.pack`).
        edge: the stability edge here (:meth:`lrbatch.SweepPlan.stability_edge`; inf when
            none).
    """

    batch_size: int
    phase: str
    best_lr: float | None = None
    best_value: float | None = None
    bracketed: bool = True
    trials: int = 0
    proposal: Proposal | None = field(default=None, compare=False)
    edge: float = math.inf
    pack: tuple[Proposal, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class Shortfall:
    """Why a batch size has no optimum to report (see :meth:`lrbatch.SweepPlan.shortfalls`).

    Attributes:
        batch_size: effective batch size.
        why: ``untried`` (no trial finished here), ``diverged`` (every trial diverged, or every
            learning rate within the bounds lies above the stability edge), ``missed_target``
            (no learning rate reached the target with every seed without diverging),
            ``at_lr_min`` or ``at_lr_max`` (the best learning rate is that bound: the optimum
            may lie beyond it), ``below`` or ``above`` (the best is the lowest, or the
            highest, tried, within the bounds: the search stopped before bracketing it).
        best_lr: the best learning rate tried, where there is one.
    """

    batch_size: int
    why: str
    best_lr: float | None = None


def same_point(a: Proposal, b: Proposal) -> bool:
    """Whether two proposals train the same trial (batch size, seed and lr to 1e-9)."""
    return (a.batch_size, a.seed) == (b.batch_size, b.seed) and math.isclose(
        a.lr, b.lr, rel_tol=1e-9
    )


def same_lr(a: float, b: float) -> bool:
    """Whether two learning rates are the same point: within :data:`SAME_LR` of each other."""
    return max(a, b) / min(a, b) < SAME_LR


def below(lr: float, edge: float) -> bool:
    """Whether ``lr`` lies below the stability edge ``edge`` (and is not the same point)."""
    return lr * SAME_LR <= edge
