"""The search for one batch size's best learning rate, in log η within [lr_min, lr_max].

Its candidates first (:mod:`lrbatch.search.candidates`: the rules' predictions, the fitted
laws', a grid), then, from the mean score of each learning rate tried, one step at a time:
*bracket* while the best sits at the low or high end of those tried, stepping outward by
``bracket_factor``; *refine* a gap next to the best wider than ``tolerance`` (a factor) at its
log midpoint, until both neighbours are within it: the optimum is then *pinned*. The stability
edge counts as a diverged learning rate, and nothing at or above it is proposed.

A pack of k trials trained together (several learning rates at one batch size and seed) takes
k steps at once: bracketing goes k steps outward; refining puts k log-spaced points into the
two gaps next to the best; seeding fills the pack's room left after the candidates with
bracket steps outward from them.

Pure: numbers in, proposals out (no Optuna, no I/O).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from lrbatch.search.candidates import Candidate
from lrbatch.search.decisions import SAME_LR, Observation, Proposal, below, same_lr

__all__ = ["LineSearch", "best_lr"]


def best_lr(scores: dict[float, float]) -> float:
    """The learning rate with the lowest score (the lower lr on a tie)."""
    return min(scores, key=lambda lr: (scores[lr], lr))


@dataclass(frozen=True)
class LineSearch:
    """How the plan searches one batch size (its ``sweep.*`` settings of the same names).

    Attributes:
        lr_min: the lowest learning rate ever proposed.
        lr_max: the highest.
        bracket_factor: one bracket step, a factor in η.
        tolerance: the optimum is pinned once both neighbours of the best are within this
            factor of it.
        minimize: whether a lower metric is better.
    """

    lr_min: float
    lr_max: float
    bracket_factor: float
    tolerance: float
    minimize: bool

    def clip(self, lr: float) -> float:
        """``lr`` moved into [lr_min, lr_max]."""
        return min(max(lr, self.lr_min), self.lr_max)

    def scores(self, observations: Iterable[Observation]) -> dict[float, float]:
        """Mean score per learning rate, in increasing lr (lower is better; diverged is +inf)."""
        grouped: dict[float, list[float]] = {}
        for obs in observations:
            if obs.value is None:
                continue
            key = next((lr for lr in grouped if same_lr(lr, obs.lr)), obs.lr)
            if obs.diverged or math.isnan(obs.value):
                score = math.inf
            else:
                score = obs.value if self.minimize else -obs.value
            grouped.setdefault(key, []).append(score)
        return {lr: sum(v) / len(v) for lr, v in sorted(grouped.items())}

    def value(self, score: float) -> float:
        """The metric of a score."""
        return score if self.minimize else -score

    def bracketed(self, best: float, lrs: list[float]) -> bool:
        """False when the best lr is the lowest tried at lr_min, or the highest at lr_max."""
        return not (
            (best == lrs[0] and best <= self.lr_min * SAME_LR)
            or (best == lrs[-1] and best >= self.lr_max / SAME_LR)
        )

    def best(self, first_seed: list[Observation]) -> tuple[float | None, float | None, bool]:
        """The best learning rate of ``first_seed``'s finished trials, its metric, and whether
        it is bracketed; (None, None, True) before any finished."""
        scores = self.scores(first_seed)
        if not scores:
            return None, None, True
        best = best_lr(scores)
        return best, self.value(scores[best]), self.bracketed(best, list(scores))

    def next(
        self,
        batch: int,
        first_seed: list[Observation],
        candidates: list[Candidate],
        edge: float,
        room: int,
    ) -> tuple[tuple[Proposal, ...], bool]:
        """The next search points at ``batch`` (one, or up to ``room``, the pack size here),
        and whether the search still goes on. Candidates at or above the stability edge are
        skipped.

        A pack with room beyond the candidates not yet tried takes bracket steps outward from
        them too, below and above in turn: should the best lie at either end, its next step
        has run already."""
        tried = [o.lr for o in first_seed]
        pack: list[Proposal] = []
        for lr, reason, near in candidates:
            taken = tried + [p.lr for p in pack]
            if below(lr, edge) and not any(max(lr, t) / min(lr, t) < near for t in taken):
                pack.append(Proposal(batch, lr, 0, reason))
        if pack:
            pack = pack[:room]
            lrs = sorted(tried + [p.lr for p in pack])
            low, high = lrs[0], lrs[-1]
            for j in range(2 * room):
                if len(pack) >= room:
                    break
                if j % 2 == 0 and low > self.lr_min * SAME_LR:
                    low = self.clip(low / self.bracket_factor)
                    pack.append(Proposal(batch, low, 0, "bracket"))
                elif j % 2 == 1 and high < self.lr_max / SAME_LR:
                    high = self.clip(high * self.bracket_factor)
                    if below(high, edge):
                        pack.append(Proposal(batch, high, 0, "bracket"))
            return tuple(pack), True
        if any(o.value is None for o in first_seed):
            return (), True  # the next step depends on a running trial
        steps = self.step(batch, 0, self.scores(first_seed), edge, room)
        return steps, bool(steps)

    def step(
        self, batch: int, seed: int, scores: dict[float, float], edge: float, room: int
    ) -> tuple[Proposal, ...]:
        """Bracket (best at an edge) or refine (a gap next to the best wider than the
        tolerance) around the best of ``scores``, the stability edge counting as a diverged
        lr; none when the optimum is pinned, or the step would lie above the edge.

        One step, or with ``room`` k > 1 (the pack size here), k at once: bracketing goes k
        steps of ``bracket_factor`` outward; refining puts k log-spaced points into the two
        gaps next to the best, each new point to the gap whose parts are then widest, so that
        one pack narrows both gaps as far as k points can (k = 1: the wider gap's midpoint)."""
        if math.isfinite(edge) and not any(same_lr(edge, lr) for lr in scores):
            scores = dict(sorted({**scores, edge: math.inf}.items()))
        lrs = list(scores)
        i = lrs.index(best_lr(scores))
        steps: list[tuple[float, str]] = []
        if i == 0 and lrs[0] > self.lr_min * SAME_LR:
            steps = [(lrs[0] / self.bracket_factor**j, "bracket") for j in range(1, room + 1)]
        elif i == len(lrs) - 1 and lrs[-1] < self.lr_max / SAME_LR:
            steps = [(lrs[-1] * self.bracket_factor**j, "bracket") for j in range(1, room + 1)]
        else:
            steps = [(lr, "refine") for lr in self._refinements(lrs, i, room)]
        pack: list[Proposal] = []
        for lr, reason in steps:
            lr = self.clip(lr)
            if below(lr, edge) and not any(same_lr(lr, p.lr) for p in pack):
                pack.append(Proposal(batch, lr, seed, reason))
        return tuple(pack)

    def _refinements(self, lrs: list[float], i: int, room: int) -> list[float]:
        """Up to ``room`` points into the gaps either side of ``lrs[i]``, the best, each to
        the gap whose parts are then widest, until every part is within the tolerance."""
        gaps = [(lrs[i - 1], lrs[i]) if i > 0 else None]
        gaps.append((lrs[i], lrs[i + 1]) if i < len(lrs) - 1 else None)
        parts = [0, 0]  # points put into the low and the high gap
        for _ in range(room):
            widths = [
                (g[1] / g[0]) ** (1 / (n + 1)) if g else 0.0
                for g, n in zip(gaps, parts, strict=True)
            ]
            if max(widths) <= self.tolerance:
                break
            parts[0 if widths[0] >= widths[1] else 1] += 1
        points: list[float] = []
        for gap, n in zip(gaps, parts, strict=True):
            if gap and n == 1:  # (the midpoint, as one trial at a time computes it)
                points.append(math.sqrt(gap[0] * gap[1]))
            elif gap and n:
                ratio = gap[1] / gap[0]
                points += [gap[0] * ratio ** (j / (n + 1)) for j in range(1, n + 1)]
        return points
