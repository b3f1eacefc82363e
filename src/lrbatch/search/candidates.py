"""Where a batch size's search starts: the learning rates it tries before bracketing.

Each configured rule's prediction, anchored at the base point (B0, η0), rules that agree
merged into one point (``rule:constant+linear``); once three or more other batch sizes are
searched, what each law fitted to their optima predicts (``law:<name>``); without η0, at B0, a
broad log-spaced grid (``base_grid``) and the ``measured`` rule's point, which needs no anchor.

Pure: numbers in, candidates out (the laws' fits are :func:`lrbatch.science.fit_law`'s).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from lrbatch.science import fit_law
from lrbatch.search.decisions import SAME_LR, same_lr

__all__ = ["Candidate", "base_grid", "law_candidates", "rule_candidates"]


class Candidate(NamedTuple):
    """A learning rate to try, why, and how close (a factor) a tried one must be to count."""

    lr: float
    reason: str
    near: float


def base_grid(lr_min: float, lr_max: float, per_decade: int) -> list[Candidate]:
    """Learning rates 10^(k / ``per_decade``) within [lr_min, lr_max] (their geometric mean
    where the bounds are closer than the grid), for the search of η0 at B0."""
    lo = math.ceil(math.log10(lr_min) * per_decade - 1e-9)
    hi = math.floor(math.log10(lr_max) * per_decade + 1e-9)
    grid = [10 ** (k / per_decade) for k in range(lo, hi + 1)]
    grid = grid or [math.sqrt(lr_min * lr_max)]
    return [Candidate(lr, "base_grid", SAME_LR) for lr in grid]


def rule_candidates(
    predictions: dict[str, float], clip: Callable[[float], float]
) -> list[Candidate]:
    """Each rule's prediction, clipped into the bounds; rules at the same point share it,
    their names joined in its reason, in the order given."""
    merged: list[tuple[float, list[str]]] = []
    for name, lr in predictions.items():
        lr = clip(lr)
        match = next((m for m in merged if same_lr(m[0], lr)), None)
        if match:
            match[1].append(name)
        else:
            merged.append((lr, [name]))
    return [Candidate(lr, "rule:" + "+".join(names), SAME_LR) for lr, names in merged]


def law_candidates(
    laws: tuple[str, ...],
    searched: dict[int, float],
    batch: int,
    tolerance: float,
    clip: Callable[[float], float],
) -> list[Candidate]:
    """What each law fitted to three or more other batch sizes' optima (``searched``: batch
    size → optimum) predicts at ``batch``, clipped into the bounds; a law is a guide, not a
    rule under test, so it is skipped within √``tolerance`` of a tried point."""
    others = tuple(sorted((b, lr) for b, lr in searched.items() if b != batch))
    if len(others) < 3:
        return []
    near = math.sqrt(tolerance)
    return [Candidate(clip(_fitted(law, others, batch)), f"law:{law}", near) for law in laws]


@lru_cache(maxsize=256)
def _fitted(law: str, optima: tuple[tuple[int, float], ...], batch: int) -> float:
    batches, lrs = zip(*optima, strict=True)
    return fit_law(law, batches, lrs).predict(batch)
