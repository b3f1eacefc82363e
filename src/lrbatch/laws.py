"""Fit the saturating and surge laws to measured optima, in log–log space.

Used by the sampler to propose, for a batch size not yet measured, what a law fitted to the
optima found so far predicts. Fits minimise squared error of log η, the scale on which the
optima are measured (a factor of 2 too high weighs as much as a factor of 2 too low).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from lrbatch.rules import LAW_RULES

__all__ = ["LawFit", "fit_law"]


@dataclass(frozen=True)
class LawFit:
    """A fitted two-parameter law.

    Attributes:
        law: ``"saturating"`` or ``"surge"``.
        lr_max: η_max, the law's largest learning rate.
        b_noise: B_noise (saturating) or B_peak (surge), in samples.
        rms_log_error: root-mean-square residual in natural-log learning rate.
    """

    law: str
    lr_max: float
    b_noise: float
    rms_log_error: float

    def predict(self, batch: float) -> float:
        """The fitted law's learning rate at ``batch``."""
        return LAW_RULES[self.law](batch, self.lr_max, self.b_noise)


def fit_law(law: str, batches: Sequence[float], optimal_lrs: Sequence[float]) -> LawFit:
    """Least-squares fit of ``law`` to (batch, optimal lr) points in log–log space.

    B_noise is bounded to [min B / 1000, max B · 1000]: outside it both laws are a pure power
    law over the measured range and B_noise is not identified.

    Args:
        law: ``"saturating"`` or ``"surge"``.
        batches: effective batch sizes, at least two distinct.
        optimal_lrs: the optimal learning rate measured at each batch size.

    Returns:
        The fit.

    Raises:
        ValueError: an unknown law, mismatched lengths, fewer than two distinct batch sizes, or
            non-positive values.
    """
    if law not in LAW_RULES:
        raise ValueError(f"unknown law {law!r}; accepted: {', '.join(LAW_RULES)}")
    if len(batches) != len(optimal_lrs):
        raise ValueError(f"got {len(batches)} batch sizes but {len(optimal_lrs)} learning rates")
    log_b = np.log(np.asarray(batches, dtype=float))
    log_lr = np.log(np.asarray(optimal_lrs, dtype=float))
    if not (np.all(np.isfinite(log_b)) and np.all(np.isfinite(log_lr))):
        raise ValueError("batch sizes and learning rates must be positive and finite")
    if len(set(batches)) < 2:
        raise ValueError("fitting a law needs optima at two or more distinct batch sizes")

    def log_law(params: np.ndarray) -> np.ndarray:
        log_lr_max, log_b_noise = params
        if law == "saturating":  # log η_max − log(1 + B_noise/B)
            return log_lr_max - np.logaddexp(0.0, log_b_noise - log_b)
        half_gap = 0.5 * (log_b - log_b_noise)  # surge: log η_max − log cosh(½ log(B/B_peak))
        return log_lr_max - (
            np.abs(half_gap) + np.log1p(np.exp(-2 * np.abs(half_gap))) - math.log(2)
        )

    lower = np.array([log_lr.min() - 20.0, log_b.min() - math.log(1000.0)])
    upper = np.array([log_lr.max() + 20.0, log_b.max() + math.log(1000.0)])
    best = None
    for start_b in np.linspace(lower[1] + 0.1, upper[1] - 0.1, 7):  # multistart: local minima
        start = np.array([log_lr.max() + 0.5, start_b])
        result = least_squares(lambda p: log_law(p) - log_lr, start, bounds=(lower, upper))
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    rms = float(np.sqrt(np.mean(best.fun**2)))
    return LawFit(law, float(np.exp(best.x[0])), float(np.exp(best.x[1])), rms)
