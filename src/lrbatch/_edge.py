"""The stability edge: the learning rate above which training diverges, per batch size and as
a law across batch sizes.

A sweep measures the edge of one batch size only as an interval (``BatchOptimum``): above the
highest lr that trained without diverging (``stable_lr``), at or below the lowest lr that
diverged (``stability_edge``). Where nothing diverged only the lower end is known; where every
lr up to the lowest diverged one diverged, only the upper end. Diverged runs are data
(Shallue et al. 2018, arXiv:1811.03600, record them as infeasible).

The law is a power law in log–log, ln e(B) = a + β (ln B − ln B_ref), fitted by maximum
likelihood to these censored data:

* a bracket (lo, hi] is a Gaussian measurement of its geometric middle with σ = its width in
  ln η / √12 (the standard deviation of a position uniform within it), at least 0.05;
* a bound on one side is censored: the likelihood of a lower bound lo is Φ((μ − ln lo)/σ̄), of
  an upper bound hi Φ((ln hi − μ)/σ̄), σ̄ the brackets' mean σ.

Its covariance is the inverse Hessian of the negative log-likelihood, scaled by max(1, χ²/dof)
of the brackets (as :func:`lrbatch.laws.bootstrap_log_law` scales its draws): edges that scatter
about the power law more than their brackets allow widen it. A law needs brackets at two or
more batch sizes: bounds alone leave it unbounded on one side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_ndtr

from lrbatch._optima import BatchOptimum

__all__ = ["FITTED", "LOWER_BOUND", "MEASURED", "EdgeEstimate", "EdgeFit", "edge_at", "fit_edge"]

_Z90 = 1.6449  # standard-normal quantile: a 90% interval is ±1.645σ
_SIGMA_FLOOR = 0.05  # in ln η: a bracket narrower than 5% is not trusted closer
MEASURED, FITTED, LOWER_BOUND = "measured", "fitted", "lower bound"  # EdgeEstimate.source


@dataclass(frozen=True)
class EdgeFit:
    """The stability edge as a power law of the batch size, e ∝ B^β.

    Attributes:
        lr_ref: the edge at ``b_ref``, per optimizer step.
        b_ref: the reference batch size: the geometric mean of the fitted ones.
        exponent: β.
        exponent_interval: 90% interval of β.
        covariance: 2×2 covariance of (ln ``lr_ref``, β).
        brackets: batch sizes where the edge was bracketed (a divergence above a stable lr).
        lower_bounds: batch sizes where no lr diverged (the edge lies above the highest tried).
        upper_bounds: batch sizes where every lr up to the lowest diverged one diverged.
    """

    lr_ref: float
    b_ref: float
    exponent: float
    exponent_interval: tuple[float, float]
    covariance: tuple[tuple[float, float], tuple[float, float]]
    brackets: int
    lower_bounds: int
    upper_bounds: int

    def predict(self, batch: float) -> tuple[float, float, float]:
        """The edge at effective batch size ``batch`` and its 90% interval: (edge, low, high)."""
        x = np.array([1.0, math.log(batch / self.b_ref)])
        mean = math.log(self.lr_ref) + self.exponent * x[1]
        spread = _Z90 * math.sqrt(float(x @ np.array(self.covariance) @ x))
        return math.exp(mean), math.exp(mean - spread), math.exp(mean + spread)


def _censored(optima: Sequence[BatchOptimum]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per batch size with an optimum: ln B, and the ln lower and ln upper end (±inf if open)."""
    log_b, low, high = [], [], []
    for o in optima:
        if o.stable_lr is None and o.stability_edge is None:
            continue
        log_b.append(math.log(o.batch_size))
        low.append(-math.inf if o.stable_lr is None else math.log(o.stable_lr))
        high.append(math.inf if o.stability_edge is None else math.log(o.stability_edge))
    return np.array(log_b), np.array(low), np.array(high)


def fit_edge(optima: Sequence[BatchOptimum]) -> EdgeFit | None:
    """Fit the stability edge across batch sizes (see the module docstring for the model).

    Args:
        optima: per-batch optima (:func:`lrbatch.analysis.batch_optima`), bracketed or not:
            their ``stable_lr`` and ``stability_edge``.

    Returns:
        The fit, or None when fewer than two batch sizes bracket their edge.
    """
    log_b, low, high = _censored(optima)
    two_sided = np.isfinite(low) & np.isfinite(high)
    if len(np.unique(log_b[two_sided])) < 2:
        return None
    ref = float(log_b.mean())
    design = np.column_stack([np.ones_like(log_b), log_b - ref])
    middle = np.where(two_sided, 0.5 * (low + high), 0.0)
    sigma = np.where(two_sided, np.maximum((high - low) / math.sqrt(12.0), _SIGMA_FLOOR), 1.0)
    sigma_bound = float(sigma[two_sided].mean())
    bound = np.where(np.isfinite(low), low, high)  # (only read where one-sided)
    side = np.where(np.isfinite(low), 1.0, -1.0)  # z > 0: the law on the bound's allowed side

    def terms(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per point: −log-likelihood, its first and second derivatives in μ."""
        mu = design @ theta
        r = (mu - middle) / sigma
        z = side * (mu - bound) / sigma_bound
        log_cdf = log_ndtr(z)
        mills = np.exp(-0.5 * z**2 - 0.5 * math.log(2 * math.pi) - log_cdf)  # φ(z)/Φ(z)
        value = np.where(two_sided, 0.5 * r**2, -log_cdf)
        slope = np.where(two_sided, r / sigma, -side * mills / sigma_bound)
        curvature = np.where(two_sided, 1 / sigma**2, mills * (z + mills) / sigma_bound**2)
        return value, slope, curvature

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, slope, _ = terms(theta)
        return float(value.sum()), design.T @ slope

    def hessian(theta: np.ndarray) -> np.ndarray:
        return design.T @ (terms(theta)[2][:, None] * design)

    weights = np.where(two_sided, 1 / sigma**2, 0.0)  # start: the brackets alone
    start = np.linalg.solve(design.T @ (weights[:, None] * design), design.T @ (weights * middle))
    theta = minimize(objective, start, jac=True, hess=hessian, method="trust-exact").x
    covariance = np.linalg.inv(hessian(theta))
    dof = int(np.count_nonzero(two_sided)) - 2
    if dof > 0:
        chi2 = float(np.sum(((design @ theta - middle) / sigma)[two_sided] ** 2))
        covariance *= max(1.0, chi2 / dof)
    spread = _Z90 * math.sqrt(covariance[1, 1])
    return EdgeFit(
        lr_ref=math.exp(theta[0]),
        b_ref=math.exp(ref),
        exponent=float(theta[1]),
        exponent_interval=(float(theta[1] - spread), float(theta[1] + spread)),
        covariance=((covariance[0, 0], covariance[0, 1]), (covariance[1, 0], covariance[1, 1])),
        brackets=int(np.count_nonzero(two_sided)),
        lower_bounds=int(np.count_nonzero(~two_sided & np.isfinite(low))),
        upper_bounds=int(np.count_nonzero(~two_sided & np.isfinite(high))),
    )


@dataclass(frozen=True)
class EdgeEstimate:
    """The stability edge at one batch size, from the best evidence there is.

    Attributes:
        batch_size: effective batch size.
        lr: the edge: the lowest lr that diverged at this batch size (``"measured"``), the
            law's (``"fitted"``), or the lower bound (``"lower bound"``).
        low: the lower end of its interval: the highest lr that trained without diverging
            here; the law's 5% quantile (raised to the highest lr that trained here, if
            any); the bound. A learning rate below it is not expected to diverge.
        high: the upper end: the lowest lr that diverged here; the law's 95% quantile
            (lowered to it); inf for a bound.
        source: ``"measured"``, ``"fitted"`` or ``"lower bound"``.
    """

    batch_size: int
    lr: float
    low: float
    high: float
    source: str


def edge_at(batch: int, optima: Sequence[BatchOptimum], fit: EdgeFit | None) -> EdgeEstimate | None:
    """The stability edge at ``batch``: measured where this batch size bracketed it, else the
    law (kept consistent with a one-sided measurement here), else a lower bound.

    The lower bound, without a law, is the highest lr that trained without diverging at any
    measured batch size up to ``batch``: it assumes the edge does not fall as the batch grows
    (a larger batch averages its gradient noise away).

    Args:
        batch: effective batch size.
        optima: per-batch optima, with their ``stable_lr`` and ``stability_edge``.
        fit: the edge law (:func:`fit_edge`), or None.

    Returns:
        The estimate, or None when nothing is known (no law, no measured batch size ≤ batch).
    """
    here = next((o for o in optima if o.batch_size == batch), None)
    stable = None if here is None else here.stable_lr
    diverged = None if here is None else here.stability_edge
    if stable is not None and diverged is not None:
        return EdgeEstimate(batch, diverged, stable, diverged, MEASURED)
    if fit is not None:
        lr, low, high = fit.predict(batch)
        if stable is not None:  # nothing diverged here, up to ``stable``
            lr, low, high = max(lr, stable), max(low, stable), max(high, stable)
        if diverged is not None:  # everything up to ``diverged`` diverged here
            lr, low, high = min(lr, diverged), min(low, diverged), min(high, diverged)
        return EdgeEstimate(batch, lr, low, high, FITTED)
    trained = [o.stable_lr for o in optima if o.batch_size <= batch and o.stable_lr is not None]
    if not trained:
        return None
    return EdgeEstimate(batch, max(trained), max(trained), math.inf, LOWER_BOUND)
