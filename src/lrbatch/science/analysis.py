"""From finished trials to the answer: optimal learning rate against batch size, the law it
follows, what each published rule would have cost, and the critical batch.

Pure functions, numbers in and numbers out (no Optuna): the study, or an imported CSV, is
turned into :class:`TrialPoint` s by the caller. The data path::

    points ─ batch_optima ─ fit_laws ─ verdict
       │            └──── fit_edge ─ predict_at (with the optima)
       └──── rule_regrets (with the optima)
       └──── critical_batch (target budget: value is steps to target)

Estimators and thresholds are stated in each function; docs/science.md has the formulas and
their sources.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from lrbatch.science.edge import EdgeEstimate, EdgeFit, edge_at, fit_edge
from lrbatch.science.judge import LawFit, SurgeEvidence, Verdict, fit_laws, surge_evidence, verdict
from lrbatch.science.laws import LAWS, bootstrap_log_law, law_params
from lrbatch.science.optima import (
    BEST_POINT,
    SAME_LR,
    BatchAnalysis,
    BatchOptimum,
    TrialPoint,
    analyse_batch,
    batch_optima,
    group_levels,
)
from lrbatch.science.prediction import Prediction, predict_at
from lrbatch.science.rules import RULE_NAMES, predict

__all__ = [
    "LAWS",
    "BatchOptimum",
    "CriticalBatch",
    "EdgeEstimate",
    "EdgeFit",
    "LawFit",
    "Prediction",
    "RuleRegret",
    "SurgeEvidence",
    "TrialPoint",
    "Verdict",
    "batch_optima",
    "critical_batch",
    "edge_at",
    "fit_edge",
    "fit_laws",
    "predict_at",
    "rule_regrets",
    "surge_evidence",
    "verdict",
]

_STEPS_SIGMA_FLOOR = 0.02  # in ln steps: two seeds that agree closely are not trusted closer


@dataclass(frozen=True)
class RuleRegret:
    """What following one rule would have cost at one batch size.

    Attributes:
        rule: the rule's name (see :data:`lrbatch.science.rules.RULE_NAMES`).
        batch_size: effective batch size.
        predicted_lr: the rule's learning rate, anchored at (base_batch, base_lr).
        ratio: predicted_lr / lr_opt (1.0 is a perfect prediction).
        regret: metric at the predicted lr minus the best metric, like against like, with
            the sign that makes ≥ 0 worse (best − predicted for a metric to maximize): a
            measured or linearly interpolated metric against the best measured one (so the
            best tried lr has regret exactly 0), a metric read off the local parabola against
            the parabola's vertex. Clipped at 0; inf when a trial diverged or missed its
            target at the predicted lr, or it lies at or above the lowest lr that diverged at
            this batch size or a larger one (the stability edge rises with the batch size:
            the sweep trains no rule's prediction there); nan when it lies outside the lrs
            tried.
        measured: True when trials within 1% of the predicted lr exist (their seed-mean,
            adjusted for seed offsets, is used); otherwise the metric is interpolated: from
            the local parabola inside its window, else linearly in ln η between the
            neighbouring tried lrs.
    """

    rule: str
    batch_size: int
    predicted_lr: float
    ratio: float
    regret: float
    measured: bool


def _regret_at(
    lr: float, found: BatchAnalysis, optimum: BatchOptimum, edge: float
) -> tuple[float, bool]:
    """(loss at ``lr`` minus the best loss of the same kind, measured); lower loss is better;
    inf at or above the stability edge ``edge``.

    A measured or linearly interpolated loss is compared with the best measured one, a loss
    read off the parabola with the parabola's vertex: never one estimate against another.
    """
    best_measured = found.scores[found.best]
    level = next((lv for lv in found.levels if max(lr, lv.lr) / min(lr, lv.lr) < SAME_LR), None)
    if level is not None and level not in found.finite:  # a seed diverged or missed the target
        return math.inf, True
    if level is not None:
        return found.scores[found.finite.index(level)] - best_measured, True
    if lr * SAME_LR > edge:
        return math.inf, False
    lrs = [lv.lr for lv in found.finite]
    if not lrs[0] <= lr <= lrs[-1]:
        return math.nan, False
    fit = found.fit
    if optimum.method != BEST_POINT and fit is not None and fit.u_low <= math.log(lr) <= fit.u_high:
        return fit.loss(lr) - fit.loss(optimum.lr_opt), False  # lr_opt is the vertex
    log_lrs = np.log(lrs)
    return float(np.interp(math.log(lr), log_lrs, found.scores)) - best_measured, False


def rule_regrets(
    points: Sequence[TrialPoint],
    optima: Sequence[BatchOptimum],
    base_batch: int,
    base_lr: float,
    rules: Sequence[str] = RULE_NAMES,
    minimize: bool = True,
    b_noise: float | None = None,
    eps_max: float | None = None,
) -> list[RuleRegret]:
    """Each rule's predicted learning rate at each batch size, and what it cost.

    Args:
        points: the trials the optima were estimated from.
        optima: per-batch optima (:func:`batch_optima` of ``points``).
        base_batch: B0, the effective batch size the rules are anchored at.
        base_lr: η0, the learning rate taken as best at B0.
        rules: rule names (:data:`lrbatch.science.rules.RULE_NAMES`); saturating and surge need
            ``b_noise`` and are skipped without it.
        minimize: True when a lower metric is better.
        b_noise: B_noise (saturating, measured) or B_peak (surge), in samples.
        eps_max: ε_max of the ``measured`` rule (:func:`lrbatch.science.rules.predict`).

    Returns:
        One regret per (batch size of ``optima``, rule), by batch size then rule order.

    Raises:
        ValueError: an unknown rule, or a non-positive base point.
    """
    regrets = []
    for optimum in optima:
        found = analyse_batch([p for p in points if p.batch_size == optimum.batch_size], minimize)
        if found is None:
            continue
        unstable = (p.lr for p in points if p.diverged and p.batch_size >= optimum.batch_size)
        edge = min(unstable, default=math.inf)
        for rule, lr in predict(
            base_lr, base_batch, optimum.batch_size, rules, b_noise, eps_max
        ).items():
            regret, measured = _regret_at(lr, found, optimum, edge)
            regrets.append(
                RuleRegret(
                    rule=rule,
                    batch_size=optimum.batch_size,
                    predicted_lr=lr,
                    ratio=lr / optimum.lr_opt,
                    regret=max(regret, 0.0) if not math.isnan(regret) else regret,
                    measured=measured,
                )
            )
    return regrets


@dataclass(frozen=True)
class CriticalBatch:
    """Steps and samples to a target against batch size, and the batch scale they imply.

    McCandlish et al. 2018 (arXiv:1812.06162): S = S_min (1 + B_noise/B) optimizer steps and
    E = E_min (1 + B/B_noise) samples reach the target, with E_min = S_min · B_noise; the
    critical batch B_crit = E_min / S_min, which equals B_noise under this model.

    Attributes:
        steps_to_target: per batch size, the fewest seed-mean steps over the lrs where every
            seed reached the target.
        samples_to_target: the same in samples (steps × batch size).
        s_min: S_min, the fewest steps at any batch size (B → ∞).
        e_min: E_min, the fewest samples at any batch size (B → 0).
        b_noise: B_noise, in samples.
        b_crit: B_crit = E_min / S_min, in samples: identically ``b_noise`` under this
            model (E_min = S_min · B_noise), kept so a report can say B_crit = E_min/S_min =
            B_noise rather than imply a second estimate.
        b_noise_interval: 90% interval of B_noise (parametric bootstrap of the fit).
    """

    steps_to_target: dict[int, float]
    samples_to_target: dict[int, float]
    s_min: float
    e_min: float
    b_noise: float
    b_crit: float
    b_noise_interval: tuple[float, float]


def _reached(point: TrialPoint) -> bool:
    """Reached the target (an unknown ``reached_target`` counts if the value is finite)."""
    finite = not point.diverged and math.isfinite(point.value)
    return finite and point.reached_target is not False


def critical_batch(
    points: Sequence[TrialPoint], n_boot: int = 500, seed: int = 0
) -> CriticalBatch | None:
    """Fit S(B) = S_min (1 + B_noise/B) to the steps to target (McCandlish et al. 2018).

    The fit is least squares on ln S (the saturating law of :mod:`lrbatch.science.laws` fitted to
    1/S), each batch size weighted by 1/σ², σ the standard error of ln steps over the seeds
    at its best lr (at least 2%).

    Args:
        points: trials of a target budget: ``value`` is steps to target.
        n_boot: parametric-bootstrap replicates for the B_noise interval.
        seed: seeds the bootstrap.

    Returns:
        The critical batch, or None when fewer than 3 batch sizes reached the target.
    """
    steps: dict[int, float] = {}
    sigma: dict[int, float] = {}
    for batch in sorted({p.batch_size for p in points}):
        # a trial that missed the target counts as diverged: its lr is out of the running
        trials = [replace(p, diverged=not _reached(p)) for p in points if p.batch_size == batch]
        done = [lv for lv in group_levels(trials, minimize=True) if math.isfinite(lv.mean)]
        if not done:
            continue
        fastest = min(done, key=lambda lv: (lv.mean, lv.lr))
        steps[batch] = fastest.mean
        log_steps = np.log(fastest.losses)
        spread = 0.0  # one seed: no spread to measure, the floor stands
        if len(log_steps) > 1:
            spread = float(np.std(log_steps, ddof=1) / math.sqrt(len(log_steps)))
        sigma[batch] = max(spread, _STEPS_SIGMA_FLOOR)
    if len(steps) < 3:
        return None
    batches = np.array(sorted(steps), dtype=float)
    log_rate = -np.log([steps[b] for b in sorted(steps)])  # 1/S: saturating in B
    rng = np.random.default_rng(seed)
    theta, draws = bootstrap_log_law(
        "saturating", np.log(batches), log_rate, np.array(list(sigma.values())), n_boot, rng
    )
    fitted = law_params("saturating", theta)
    s_min, b_noise = 1.0 / fitted["lr_max"], fitted["b_noise"]  # steps; samples
    e_min = s_min * b_noise  # samples
    low, high = np.exp(np.quantile(draws[:, 1], [0.05, 0.95]))
    return CriticalBatch(
        steps_to_target=steps,
        samples_to_target={b: s * b for b, s in steps.items()},
        s_min=s_min,
        e_min=e_min,
        b_noise=b_noise,
        b_crit=e_min / s_min,
        b_noise_interval=(float(low), float(high)),
    )
