"""The optimal learning rate of each batch size, from a local fit of the metric in log η.

Per batch size, trials are pooled over seeds and grouped by learning rate (within 1%, as the
sweep plan groups them). Around the learning rate with the best seed-mean metric (adjusted
for each seed's offset where seeds tried different learning rates), the metric is fitted by
least squares as a_seed + b·u + c·u², u = ln η: one intercept per seed, because a sweep
pairs its comparisons (for a given seed every learning rate starts from the same weights and
sees the same data, SCIENCE.md), so a seed's offset is shared by all its trials and must not
move the optimum. The vertex −b/2c is the optimum when the parabola opens
towards better values and its vertex lies within the fitted learning rates; otherwise the
best tried learning rate stands. The 90% interval comes from a residual bootstrap of that fit.

Internally every metric is a *loss*: lower is better, +inf for a diverged trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BatchAnalysis",
    "BatchOptimum",
    "Level",
    "LocalFit",
    "TrialPoint",
    "analyse_batch",
    "batch_optima",
    "group_levels",
]

SAME_LR = 1.01  # two learning rates within 1% are the same point (as in lrbatch.plan)
_WINDOW = 3.0  # the fit takes the best lr's second neighbours only within this factor of it
_QUANTILES = (0.05, 0.95)  # a 90% interval
LOCAL, BEST_POINT = "local quadratic", "best point"


@dataclass(frozen=True)
class TrialPoint:
    """One finished trial, from a study or an imported CSV.

    Attributes:
        batch_size: effective batch size (micro-batch × accumulation × replicas).
        lr: learning rate per optimizer step.
        seed: the trial's seed (its initial weights and data order).
        value: the metric, or steps to target in a target budget; ±inf or nan when diverged.
        diverged: the run diverged (its value is ignored).
        steps: optimizer steps trained.
        samples: samples trained (steps × batch_size).
        reached_target: whether the run reached the target metric (target budget only).
    """

    batch_size: int
    lr: float
    seed: int
    value: float
    diverged: bool = False
    steps: int | None = None
    samples: int | None = None
    reached_target: bool | None = None

    def __post_init__(self) -> None:
        if not (self.batch_size > 0 and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(
                f"TrialPoint needs batch_size > 0 and a positive finite lr, "
                f"got batch_size={self.batch_size!r}, lr={self.lr!r}"
            )

    def loss(self, minimize: bool) -> float:
        """The metric as a loss: lower is better, +inf when the trial diverged."""
        if self.diverged or not math.isfinite(self.value):
            return math.inf
        return self.value if minimize else -self.value


@dataclass(frozen=True)
class BatchOptimum:
    """The estimated optimal learning rate at one batch size.

    Attributes:
        batch_size: effective batch size.
        lr_opt: estimated optimal learning rate.
        lr_low: lower end of its bootstrap 90% interval.
        lr_high: upper end of its bootstrap 90% interval.
        value_opt: metric at the optimum, from the fit (the seed-mean at the best tried lr
            when ``method`` is ``"best point"``).
        best_lr_tried: the tried lr with the best seed-mean metric (adjusted for each seed's
            offset when the seeds tried different lrs).
        trials: trials at this batch size, diverged ones included.
        seeds: distinct seeds among them.
        diverged: how many trials diverged (``TrialPoint.diverged``; a run that only missed
            its target is not counted, though it scores as worst).
        stability_edge: the lowest lr where a trial diverged here, or None if none did.
        stable_lr: the highest lr below ``stability_edge`` where no trial diverged (with
            ``stability_edge``, the interval the edge lies in), or the highest lr tried when
            none diverged; None when every lr tried at or below the edge diverged.
        bracketed: False when the best tried lr is the smallest lr tried, or the largest with
            no diverged (or target-missing) lr above it: the optimum may lie beyond it, and
            ``lr_opt`` is a bound, not an estimate. A diverged lr above bounds it from above.
        method: ``"local quadratic"`` (the vertex of the fit) or ``"best point"`` (fallback:
            the parabola opens the wrong way, its vertex lies outside the fitted lrs, or fewer
            than three lrs trained without diverging).
    """

    batch_size: int
    lr_opt: float
    lr_low: float
    lr_high: float
    value_opt: float
    best_lr_tried: float
    trials: int
    seeds: int
    diverged: int
    stability_edge: float | None
    bracketed: bool
    method: str
    stable_lr: float | None = None


@dataclass(frozen=True)
class Level:
    """The trials at one learning rate of one batch size (losses: lower is better)."""

    lr: float
    seeds: tuple[int, ...]
    losses: tuple[float, ...]

    @property
    def mean(self) -> float:
        """Seed-mean loss; +inf when any seed diverged."""
        return sum(self.losses) / len(self.losses)

    def trials(self) -> list[tuple[int, float]]:
        """(seed, loss) of each trial."""
        return list(zip(self.seeds, self.losses, strict=True))


@dataclass(frozen=True)
class LocalFit:
    """The parabola a_seed + b·(u − u0) + c·(u − u0)² fitted in u = ln η over a window.

    ``design``, ``target`` and ``coef`` are the least-squares problem and its solution; the
    last two coefficients are b and c, the others the seeds' intercepts (or one shared one).
    """

    u0: float
    u_low: float
    u_high: float
    design: np.ndarray
    target: np.ndarray
    coef: np.ndarray

    def loss(self, lr: float) -> float:
        """Fitted loss at ``lr``, averaged over the seeds' intercepts."""
        du = math.log(lr) - self.u0
        return float(np.mean(self.coef[:-2]) + self.coef[-2] * du + self.coef[-1] * du**2)

    def vertex(self) -> float | None:
        """ln η of the minimum, if the parabola is convex and it lies within the window."""
        b, c = self.coef[-2], self.coef[-1]
        if c <= 0:
            return None
        u = self.u0 - b / (2.0 * c)
        return float(u) if self.u_low <= u <= self.u_high else None

    def bootstrap_argmin(self, n_boot: int, rng: np.random.Generator) -> np.ndarray | None:
        """ln η of the fitted minimum over the window in ``n_boot`` residual-bootstrap refits
        (None without residual degrees of freedom)."""
        n, p = self.design.shape
        if n <= p:
            return None
        fitted = self.design @ self.coef
        residuals = (self.target - fitted) * math.sqrt(n / (n - p))  # unbiased variance
        draws = fitted[:, None] + residuals[rng.integers(0, n, size=(n, n_boot))]
        coefs = np.linalg.pinv(self.design) @ draws
        b, c = coefs[-2], coefs[-1]
        low, high = self.u_low - self.u0, self.u_high - self.u0
        with np.errstate(divide="ignore", invalid="ignore"):
            vertex = np.clip(-b / (2.0 * c), low, high)
        edge = np.where(b * low + c * low**2 <= b * high + c * high**2, low, high)
        return self.u0 + np.where(c > 0, vertex, edge)


def group_levels(points: Sequence[TrialPoint], minimize: bool) -> list[Level]:
    """Trials grouped by learning rate (within 1%), ascending."""
    levels: list[list[TrialPoint]] = []
    for point in sorted(points, key=lambda p: p.lr):
        if levels and point.lr / levels[-1][0].lr < SAME_LR:
            levels[-1].append(point)
        else:
            levels.append([point])
    return [
        Level(group[0].lr, tuple(p.seed for p in group), tuple(p.loss(minimize) for p in group))
        for group in levels
    ]


def _window(finite: list[Level], best: int) -> list[Level]:
    """The best level and its neighbours: at least three, the second neighbours when near."""
    low, high = max(best - 1, 0), min(best + 2, len(finite))
    low, high = max(min(low, high - 3), 0), min(max(high, low + 3), len(finite))
    if low == best - 1 and best >= 2 and finite[best].lr / finite[best - 2].lr <= _WINDOW:
        low -= 1
    if high == best + 2 and high < len(finite) and finite[high].lr / finite[best].lr <= _WINDOW:
        high += 1
    return finite[low:high]


def _local_fit(window: list[Level], u0: float) -> LocalFit | None:
    """Least squares over every trial in ``window``; None with fewer than three lrs."""
    if len(window) < 3:
        return None
    rows = [(s, math.log(lv.lr) - u0, y) for lv in window for s, y in lv.trials()]
    seeds = np.array([r[0] for r in rows])
    du = np.array([r[1] for r in rows])
    target = np.array([r[2] for r in rows])
    paired = np.column_stack([seeds == s for s in np.unique(seeds)] + [du, du**2]).astype(float)
    design = paired
    if np.linalg.matrix_rank(paired) < paired.shape[1]:  # seeds too sparse for own intercepts
        design = np.column_stack([np.ones_like(du), du, du**2])
    coef = np.linalg.lstsq(design, target, rcond=None)[0]
    u_low, u_high = math.log(window[0].lr), math.log(window[-1].lr)
    return LocalFit(u0, u_low, u_high, design, target, coef)


def _paired_means(finite: list[Level]) -> list[float]:
    """Seed-mean loss per level, adjusted for each seed's offset.

    Least squares of loss = μ_level + δ_seed over every trial, reported as μ_level + mean δ:
    the plain seed-mean when every seed tried every level, and otherwise fair to a level tried
    only with a lucky (or unlucky) seed. When the seeds share too few levels to separate their
    offsets from the levels' means (a rank-deficient design), the plain seed-means.
    """
    rows = [
        (k, s, y) for k, lv in enumerate(finite) for s, y in zip(lv.seeds, lv.losses, strict=True)
    ]
    seeds = sorted({s for _, s, _ in rows})
    design = np.zeros((len(rows), len(finite) + len(seeds) - 1))
    for i, (k, s, _) in enumerate(rows):
        design[i, k] = 1.0
        if s != seeds[0]:
            design[i, len(finite) + seeds.index(s) - 1] = 1.0
    if np.linalg.matrix_rank(design) < design.shape[1]:  # offsets not identified
        return [lv.mean for lv in finite]
    coef = np.linalg.lstsq(design, np.array([y for _, _, y in rows]), rcond=None)[0]
    offset = float(np.sum(coef[len(finite) :])) / len(seeds)  # mean δ, with δ_first = 0
    return [float(mu) + offset for mu in coef[: len(finite)]]


@dataclass(frozen=True)
class BatchAnalysis:
    """Everything :func:`batch_optima` derives at one batch size (also used for regrets).

    ``scores`` are the seed-offset-adjusted mean losses of the ``finite`` levels (those
    where no seed diverged); ``best`` indexes the lowest.
    """

    levels: list[Level]
    finite: list[Level]
    scores: list[float]
    best: int
    fit: LocalFit | None


def analyse_batch(points: Sequence[TrialPoint], minimize: bool) -> BatchAnalysis | None:
    """Group one batch size's trials and fit the parabola; None if every trial diverged."""
    levels = group_levels(points, minimize)
    finite = [lv for lv in levels if math.isfinite(lv.mean)]
    if not finite:
        return None
    scores = _paired_means(finite)
    best = min(range(len(finite)), key=lambda k: (scores[k], finite[k].lr))
    u0 = math.log(finite[best].lr)
    return BatchAnalysis(levels, finite, scores, best, _local_fit(_window(finite, best), u0))


def _optimum(
    batch: int, points: Sequence[TrialPoint], minimize: bool, n_boot: int, seed: int
) -> BatchOptimum | None:
    found = analyse_batch(points, minimize)
    if found is None:
        return None
    best = found.finite[found.best]
    sign = 1.0 if minimize else -1.0
    vertex = None if found.fit is None else found.fit.vertex()
    if found.fit is not None and vertex is not None:
        lr_opt, value_opt, method = math.exp(vertex), found.fit.loss(math.exp(vertex)), LOCAL
    else:
        lr_opt, value_opt, method = best.lr, found.scores[found.best], BEST_POINT
    rng = np.random.default_rng([seed, batch])
    draws = None if found.fit is None else found.fit.bootstrap_argmin(n_boot, rng)
    if draws is not None:
        lr_low, lr_high = (float(np.exp(np.quantile(draws, q))) for q in _QUANTILES)
    else:  # no noise estimate: the optimum lies between the best lr's tried neighbours
        k = found.levels.index(best)
        lr_low = found.levels[max(k - 1, 0)].lr
        lr_high = found.levels[min(k + 1, len(found.levels) - 1)].lr
    unstable = [p.lr for p in points if p.diverged]  # not a run that only missed its target
    edge = min(unstable) if unstable else math.inf
    stable = [p.lr for p in points if not p.diverged and p.lr < edge]
    return BatchOptimum(
        batch_size=batch,
        lr_opt=lr_opt,
        lr_low=min(lr_low, lr_opt),
        lr_high=max(lr_high, lr_opt),
        value_opt=sign * value_opt,
        best_lr_tried=best.lr,
        trials=len(points),
        seeds=len({p.seed for p in points}),
        diverged=len(unstable),
        stability_edge=min(unstable) if unstable else None,
        stable_lr=max(stable) if stable else None,
        # every other tried lr scores worse, a diverged one too: one each side bounds the best
        bracketed=found.levels[0] is not best and found.levels[-1] is not best,
        method=method,
    )


def batch_optima(
    points: Sequence[TrialPoint], minimize: bool = True, n_boot: int = 500, seed: int = 0
) -> list[BatchOptimum]:
    """The optimal learning rate of each batch size, with a bootstrap 90% interval.

    Window: the best tried lr (by seed-mean metric, adjusted for seed offsets), its two
    neighbours, and its second neighbours when within a factor 3 of it; three lrs at least
    (shifted inward at the edge of the tried range); lrs where any seed diverged are left out.
    Fit: a_seed + b·u + c·u² in u = ln η by least squares over every trial of the window (one
    shared intercept when the seeds are too sparse for one each). Interval: 5% and 95%
    quantiles, over ``n_boot`` refits to fitted + resampled residuals, of the minimum of each
    refit within the window; between the best lr's tried neighbours when the fit leaves no
    residual degrees of freedom.

    Args:
        points: finished trials; any number of batch sizes, seeds and learning rates.
        minimize: True when a lower metric is better.
        n_boot: bootstrap replicates per batch size.
        seed: seeds the bootstrap; the result is a deterministic function of the arguments.

    Returns:
        One optimum per batch size with at least one trial that did not diverge, ascending.
    """
    by_batch: dict[int, list[TrialPoint]] = {}
    for point in points:
        by_batch.setdefault(point.batch_size, []).append(point)
    optima = (_optimum(b, by_batch[b], minimize, n_boot, seed) for b in sorted(by_batch))
    return [optimum for optimum in optima if optimum is not None]
