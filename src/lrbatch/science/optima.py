"""The optimal learning rate of each batch size, from a local fit of the metric in log η.

Per batch size, trials are pooled over seeds and grouped by learning rate (within 1%, as the
sweep plan groups them). Around the learning rate with the best seed-mean metric (adjusted
for each seed's offset where seeds tried different learning rates), the metric is fitted by
least squares as a_s + b_s·u + c·u², u = ln η: one intercept per seed, because a sweep
pairs its comparisons (for a given seed every learning rate starts from the same weights and
sees the same data, docs/science.md, *Measurement practice*), so a seed's offset is shared by
all its trials and must not move the optimum; and one slope per seed, because each seed also
has its own best learning rate, and the population's optimum is what a new seed meets. The seeds'
vertices −b_s/2c are pooled as a random-effects mean with a t interval that carries the
seed-to-seed scatter. When the parabola does not open towards better values, or its vertex
lies outside the fitted learning rates, the best tried learning rate stands.

Internally every metric is a *loss*: lower is better, +inf for a diverged trial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "BEST_POINT",
    "LOCAL",
    "SAME_LR",
    "BatchAnalysis",
    "BatchOptimum",
    "Level",
    "LocalFit",
    "TrialPoint",
    "analyse_batch",
    "batch_optima",
    "group_levels",
]

SAME_LR = 1.01  # two learning rates within 1% are the same point (as in lrbatch.search.decisions)
# The window: the best level, its neighbours, and further levels within this factor of it.
# Wider windows let a skewed curve (steeper towards divergence) pull the vertex; narrower
# ones leave too few trials (chosen on benchmarks/calibration.py: 2.0–3.0 behave alike).
_WINDOW = 2.5
_EDGE_MARGIN = 1.5  # levels within this factor below the lowest diverged lr are left out
_T_LEVEL = 0.95  # a two-sided 90% interval: the t distribution's 95% quantile
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
        lr_low: lower end of its 90% interval.
        lr_high: upper end of its 90% interval.
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
    """The local fit a_s + b_s·(u − u0) + c·(u − u0)² in u = ln η over a window of levels.

    Each seed s has its own intercept a_s (its offset) and, where it tried two or more
    learning rates in the window, its own slope b_s (its own optimum: a seed's best
    learning rate is not the population's); the curvature c is shared. Each seed's vertex
    u0 − b_s/2c estimates the optimum; :func:`_pool` combines them.

    Attributes:
        u0: ln η of the best tried level (the fit's origin).
        u_low: ln η of the lowest level in the window.
        u_high: ln η of the highest level in the window.
        intercept: the seeds' mean intercept a.
        curvature: c (> 0 for a minimum), per (ln η)².
        vertex: ln η of the estimated optimum, or None when the fit has no minimum within
            the window (c ≤ 0, or its vertex outside the learning rates fitted).
        se: standard error of ``vertex`` (ln η); nan without a noise estimate.
        dof: degrees of freedom of ``se`` (its t quantile); 0 without a noise estimate.
        seeds: seeds whose own vertex went into ``vertex``.
    """

    u0: float
    u_low: float
    u_high: float
    intercept: float
    curvature: float
    vertex: float | None
    se: float
    dof: int
    seeds: int

    def loss(self, lr: float) -> float:
        """Fitted loss at ``lr``: the seeds' mean intercept and a parabola whose minimum lies
        at the pooled optimum (at the best tried level when there is none)."""
        du = math.log(lr) - self.u0
        centre = 0.0 if self.vertex is None else self.vertex - self.u0
        return self.intercept + self.curvature * (du**2 - 2 * centre * du)


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


def _window(finite: list[Level], best: int, edge: float | None) -> list[Level]:
    """The levels the local fit uses: the best, its neighbours (three levels at least,
    shifted inward at the edge of the tried range), and further levels within
    :data:`_WINDOW` of the best; less any level within :data:`_EDGE_MARGIN` below the
    stability edge other than the best, when three levels remain without it."""
    low, high = max(best - 1, 0), min(best + 2, len(finite))
    low, high = max(min(low, high - 3), 0), min(max(high, low + 3), len(finite))
    while low > 0 and finite[best].lr / finite[low - 1].lr <= _WINDOW:
        low -= 1
    while high < len(finite) and finite[high].lr / finite[best].lr <= _WINDOW:
        high += 1
    window = finite[low:high]
    if edge is not None:
        clear = [lv for lv in window if lv.lr * _EDGE_MARGIN <= edge or lv is finite[best]]
        window = clear if len(clear) >= 3 else window
    return window


def _local_fit(window: list[Level], u0: float) -> LocalFit | None:
    """Least squares over every trial in ``window`` (see :class:`LocalFit`); None with fewer
    than three levels, or too few trials to fit a curvature."""
    if len(window) < 3:
        return None
    rows = [(s, math.log(lv.lr) - u0, y) for lv in window for s, y in lv.trials()]
    seed_of = np.array([r[0] for r in rows])
    du = np.array([r[1] for r in rows])
    target = np.array([r[2] for r in rows])
    seeds = list(np.unique(seed_of))
    sloped = [s for s in seeds if len(np.unique(du[seed_of == s])) >= 2]
    intercepts = [(seed_of == s).astype(float) for s in seeds]
    slopes = [np.where(seed_of == s, du, 0.0) for s in sloped] if len(sloped) >= 2 else [du]
    design = np.column_stack([*intercepts, *slopes, du**2])
    if np.linalg.matrix_rank(design) < design.shape[1]:  # seeds too sparse for their own terms
        intercepts, slopes = [np.ones_like(du)], [du]
        design = np.column_stack([*intercepts, *slopes, du**2])
        if np.linalg.matrix_rank(design) < design.shape[1]:
            return None
    coef = np.linalg.lstsq(design, target, rcond=None)[0]
    n, p = design.shape
    k, c = len(intercepts), float(coef[-1])
    u_low, u_high = math.log(window[0].lr), math.log(window[-1].lr)
    intercept = float(np.mean(coef[:k]))
    if c <= 0:
        return LocalFit(u0, u_low, u_high, intercept, c, None, math.nan, 0, 0)
    residuals = target - design @ coef
    cov = (
        float(residuals @ residuals) / (n - p) * np.linalg.pinv(design.T @ design)
        if n > p
        else None
    )
    vertices, variances = [], []
    for j in range(len(slopes)):  # each seed's vertex, and its variance by the delta method
        b = float(coef[k + j])
        vertices.append(-b / (2 * c))
        gradient = np.zeros(p)
        gradient[k + j], gradient[-1] = -1 / (2 * c), b / (2 * c * c)
        variances.append(math.nan if cov is None else float(gradient @ cov @ gradient))
    centre, se, dof = _pool(np.array(vertices), np.array(variances), n - p)
    vertex = u0 + centre if u_low <= u0 + centre <= u_high else None
    return LocalFit(u0, u_low, u_high, intercept, c, vertex, se, dof, len(vertices))


def _pool(
    vertices: np.ndarray, variances: np.ndarray, residual_dof: int
) -> tuple[float, float, int]:
    """Combine the seeds' vertices into the population's optimum: (centre, se, dof).

    One seed: its vertex, with the residual degrees of freedom. Several: a random-effects
    mean, because each seed has its own optimum (its initial weights and data order), so the
    seeds scatter more than their own noise says: between-seed variance τ² by DerSimonian &
    Laird (1986), weights 1/(v_s + τ²), and the standard error of Hartung & Knapp (2001) /
    Sidik & Jonkman (2002) with S − 1 degrees of freedom, never below the weights' own
    1/√Σw (the modification of Röver, Knapp & Friede 2015, BMC Med. Res. Methodol. 15:99).
    Without a residual noise estimate (a fit with no spare degrees of freedom) the seeds'
    scatter alone sets it.
    """
    if len(vertices) == 1:
        se = math.sqrt(variances[0]) if math.isfinite(variances[0]) else math.nan
        return float(vertices[0]), se, residual_dof if math.isfinite(se) else 0
    dof = len(vertices) - 1
    if not np.all(np.isfinite(variances) & (variances > 0)):
        mean = float(np.mean(vertices))
        return mean, float(np.std(vertices, ddof=1) / math.sqrt(len(vertices))), dof
    w = 1 / variances
    fixed = float(np.sum(w * vertices) / np.sum(w))
    q = float(np.sum(w * (vertices - fixed) ** 2))
    tau2 = max(0.0, (q - dof) / (np.sum(w) - np.sum(w**2) / np.sum(w)))
    w = 1 / (variances + tau2)
    centre = float(np.sum(w * vertices) / np.sum(w))
    hartung_knapp = float(np.sum(w * (vertices - centre) ** 2)) / (dof * float(np.sum(w)))
    return centre, math.sqrt(max(hartung_knapp, 1 / float(np.sum(w)))), dof


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
    edge = _stability_edge(points)
    fit = _local_fit(_window(finite, best, edge), u0)
    return BatchAnalysis(levels, finite, scores, best, fit)


def _stability_edge(points: Sequence[TrialPoint]) -> float | None:
    """The lowest learning rate that diverged (not one that only missed its target)."""
    unstable = [p.lr for p in points if p.diverged]
    return min(unstable) if unstable else None


def _optimum(batch: int, points: Sequence[TrialPoint], minimize: bool) -> BatchOptimum | None:
    found = analyse_batch(points, minimize)
    if found is None:
        return None
    best = found.finite[found.best]
    sign = 1.0 if minimize else -1.0
    fit = found.fit
    k = found.levels.index(best)
    # where the optimum must lie if nothing better is known: between the best's neighbours
    low_bound = found.levels[max(k - 1, 0)].lr
    high_bound = found.levels[min(k + 1, len(found.levels) - 1)].lr
    if fit is not None and fit.vertex is not None and fit.dof > 0:
        lr_opt, method = math.exp(fit.vertex), LOCAL
        value_opt = fit.loss(lr_opt)
        half = float(stats.t.ppf(_T_LEVEL, fit.dof)) * fit.se
        # (never past the lrs tried: the best has a worse level, or a divergence, each side)
        lr_low = max(math.exp(fit.vertex - half), found.levels[0].lr)
        lr_high = min(math.exp(fit.vertex + half), found.levels[-1].lr)
    else:
        lr_opt, value_opt, method = best.lr, found.scores[found.best], BEST_POINT
        lr_low, lr_high = low_bound, high_bound
    edge = _stability_edge(points)
    stable = [p.lr for p in points if not p.diverged and (edge is None or p.lr < edge)]
    return BatchOptimum(
        batch_size=batch,
        lr_opt=lr_opt,
        lr_low=min(lr_low, lr_opt),
        lr_high=max(lr_high, lr_opt),
        value_opt=sign * value_opt,
        best_lr_tried=best.lr,
        trials=len(points),
        seeds=len({p.seed for p in points}),
        diverged=sum(p.diverged for p in points),
        stability_edge=edge,
        # every other tried lr scores worse, a diverged one too: one each side bounds the best
        bracketed=found.levels[0] is not best and found.levels[-1] is not best,
        method=method,
        stable_lr=max(stable) if stable else None,
    )


def batch_optima(points: Sequence[TrialPoint], minimize: bool = True) -> list[BatchOptimum]:
    """The optimal learning rate of each batch size, with a 90% interval.

    Window: the best tried lr (by seed-mean metric, adjusted for seed offsets), its two
    neighbours, and further lrs within a factor 2.5 of it; three lrs at least (shifted inward
    at the edge of the tried range); lrs where any seed diverged are left out, and so are lrs
    within a factor 1.5 below the lowest that diverged while three remain without them.
    Fit: a_s + b_s·u + c·u² in u = ln η by least squares over every trial of the window
    (:class:`LocalFit`); each seed's vertex −b_s/2c, pooled as a random-effects mean
    (:func:`_pool`). Interval: vertex ± t(dof, 0.95) · se, within the lrs tried. Without a
    minimum inside the window, or without a noise estimate: the best tried lr, between its
    tried neighbours (``method`` says which).

    Calibrated on synthetic sweeps run by the real plan (:mod:`lrbatch.search.calibration`,
    ``benchmarks/calibration.py``): see docs/benchmarks.md for errors and coverage.

    Args:
        points: finished trials; any number of batch sizes, seeds and learning rates.
        minimize: True when a lower metric is better.

    Returns:
        One optimum per batch size with at least one trial that did not diverge, ascending.
    """
    by_batch: dict[int, list[TrialPoint]] = {}
    for point in points:
        by_batch.setdefault(point.batch_size, []).append(point)
    optima = (_optimum(b, by_batch[b], minimize) for b in sorted(by_batch))
    return [optimum for optimum in optima if optimum is not None]
