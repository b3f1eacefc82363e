"""The stability edge: the learning rate above which training diverges, per batch size and as
a law across batch sizes.

A sweep measures the edge of one batch size only as an interval (``BatchOptimum``): above the
highest lr that trained without diverging (``stable_lr``), at or below the lowest lr that
diverged (``stability_edge``). Where nothing diverged only the lower end is known; where every
lr up to the lowest diverged one diverged, only the upper end. Diverged runs are data
(Shallue et al. 2018, arXiv:1811.03600, record them as infeasible).

Two laws of :mod:`lrbatch.science.laws` are fitted in log–log space by maximum likelihood to these
censored data: a power law, and the saturating form η_max / (1 + B_noise/B) (McCandlish et al.
2018, arXiv:1812.06162), for an edge that stops growing with the batch (with SGD it cannot
exceed 2/λ_max, the full-batch limit of the curvature; Cohen et al. 2021, arXiv:2103.00065):

* a bracket (lo, hi] is a Gaussian measurement of its geometric middle with σ = its width in
  ln η / √12 (the standard deviation of a position uniform within it), at least 0.05;
* a bound on one side is censored: the likelihood of a lower bound lo is Φ((μ − ln lo)/σ̄), of
  an upper bound hi Φ((ln hi − μ)/σ̄), σ̄ the brackets' mean σ.

A law's covariance is the inverse Gauss–Newton Hessian of its negative log-likelihood, scaled
by max(1, χ²/dof) of the brackets (as :func:`lrbatch.science.laws.bootstrap_log_law` scales its
draws): edges that scatter about the law more than their brackets allow widen it. Brackets a factor
2 wide rarely tell the two laws apart, and past the measured batch sizes they part: the edge at
B is their Akaike-weighted geometric mean, its 90% interval the envelope of both laws'
intervals (lowest low end, highest high end), so that it holds the edge whichever law is
right. The power law needs brackets at two or more batch sizes (bounds alone leave it
unbounded on one side), the saturating law at three; a saturating fit whose B_noise runs to
the end of its range is its linear limit and is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_ndtr

from lrbatch.science.laws import PARAMETERS, law_params, log_law
from lrbatch.science.optima import BatchOptimum

__all__ = [
    "FITTED",
    "LOWER_BOUND",
    "MEASURED",
    "EdgeEstimate",
    "EdgeFit",
    "EdgeLaw",
    "edge_at",
    "fit_edge",
]

_Z90 = 1.6449  # standard-normal quantile: a 90% interval is ±1.645σ
_SIGMA_FLOOR = 0.05  # in ln η: a bracket narrower than 5% is not trusted closer
_B_RANGE = math.log(1000.0)  # B_noise is searched within [min B / 1000, max B · 1000]
_STARTS = 7  # multistart in ln B_noise (the saturating fit has local minima)
MEASURED, FITTED, LOWER_BOUND = "measured", "fitted", "lower bound"  # EdgeEstimate.source


@dataclass(frozen=True)
class EdgeLaw:
    """One law of the stability edge fitted to the censored edges (module docstring).

    Attributes:
        law: ``"power_law"`` or ``"saturating"``.
        params: its parameters in natural units (:data:`lrbatch.science.laws.PARAMETERS`):
        ``lr_ref``
            (the edge at ``b_ref``) and ``alpha``; or ``lr_max`` and ``b_noise``.
        intervals: 90% intervals of ``params``.
        theta: the fitting parameters (:func:`lrbatch.science.laws.log_law`).
        covariance: their covariance, as nested tuples.
        b_ref: the power law's reference batch size: the geometric mean of the fitted ones.
        aic: −2 log-likelihood + 2 × parameters, of the censored data.
        weight: its Akaike weight among the edge's laws.
    """

    law: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    theta: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    b_ref: float
    aic: float
    weight: float = 1.0

    def predict(self, batch: float) -> tuple[float, float, float]:
        """The edge at effective batch size ``batch`` and its 90% interval: (edge, low, high)."""
        log_b = np.array([math.log(batch)])
        theta, ref = np.array(self.theta), math.log(self.b_ref)
        mean = float(log_law(self.law, theta, log_b, ref)[0])
        slope = _jacobian(self.law, theta, log_b, ref)[0]
        spread = _Z90 * math.sqrt(max(float(slope @ np.array(self.covariance) @ slope), 0.0))
        return math.exp(mean), math.exp(mean - spread), math.exp(mean + spread)


@dataclass(frozen=True)
class EdgeFit:
    """The stability edge as a law of the batch size: the laws fitted, combined.

    Attributes:
        laws: the power law, and the saturating law where it could be fitted.
        brackets: batch sizes where the edge was bracketed (a divergence above a stable lr).
        lower_bounds: batch sizes where no lr diverged (the edge lies above the highest tried).
        upper_bounds: batch sizes where every lr up to the lowest diverged one diverged.
    """

    laws: tuple[EdgeLaw, ...]
    brackets: int
    lower_bounds: int
    upper_bounds: int

    def predict(self, batch: float) -> tuple[float, float, float]:
        """The edge at ``batch`` (the laws' weighted geometric mean) and the envelope of their
        90% intervals: (edge, low, high)."""
        predictions = [law.predict(batch) for law in self.laws]
        log_edge = sum(
            law.weight * math.log(p[0]) for law, p in zip(self.laws, predictions, strict=True)
        )
        return math.exp(log_edge), min(p[1] for p in predictions), max(p[2] for p in predictions)


def _jacobian(law: str, theta: np.ndarray, log_b: np.ndarray, ref: float) -> np.ndarray:
    """∂ ln e / ∂θ at each batch size, by central differences."""
    steps = 1e-6 * np.eye(len(theta))
    return np.column_stack(
        [
            (log_law(law, theta + h, log_b, ref) - log_law(law, theta - h, log_b, ref)) / 2e-6
            for h in steps
        ]
    )


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


class _Likelihood:
    """The censored likelihood of one law's ln e(B) (module docstring), in ln η."""

    def __init__(self, law: str, log_b: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        self.law, self.log_b, self.ref = law, log_b, float(log_b.mean())
        self.two_sided = np.isfinite(low) & np.isfinite(high)
        self.middle = np.where(self.two_sided, 0.5 * (low + high), 0.0)
        width = np.where(self.two_sided, high - low, 0.0) / math.sqrt(12.0)
        self.sigma = np.where(self.two_sided, np.maximum(width, _SIGMA_FLOOR), 1.0)
        self.sigma_bound = float(self.sigma[self.two_sided].mean())
        self.bound = np.where(np.isfinite(low), low, high)  # (read only where one-sided)
        self.side = np.where(np.isfinite(low), 1.0, -1.0)  # z > 0: on the bound's allowed side

    def terms(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per point: −log-likelihood, and its first and second derivatives in ln e."""
        mu = log_law(self.law, theta, self.log_b, self.ref)
        r = (mu - self.middle) / self.sigma
        z = self.side * (mu - self.bound) / self.sigma_bound
        log_cdf = log_ndtr(z)
        mills = np.exp(-0.5 * z**2 - 0.5 * math.log(2 * math.pi) - log_cdf)  # φ(z)/Φ(z)
        value = np.where(self.two_sided, 0.5 * r**2, -log_cdf)
        slope = np.where(self.two_sided, r / self.sigma, -self.side * mills / self.sigma_bound)
        curvature = np.where(
            self.two_sided, 1 / self.sigma**2, mills * (z + mills) / self.sigma_bound**2
        )
        return value, slope, curvature

    def objective(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, slope, _ = self.terms(theta)
        return float(value.sum()), _jacobian(self.law, theta, self.log_b, self.ref).T @ slope

    def covariance(self, theta: np.ndarray) -> np.ndarray:
        """Inverse Gauss–Newton Hessian, scaled by max(1, χ²/dof) of the brackets."""
        jacobian = _jacobian(self.law, theta, self.log_b, self.ref)
        covariance = np.linalg.inv(jacobian.T @ (self.terms(theta)[2][:, None] * jacobian))
        dof = int(np.count_nonzero(self.two_sided)) - len(theta)
        if dof > 0:
            residual = log_law(self.law, theta, self.log_b, self.ref) - self.middle
            chi2 = float(np.sum((residual / self.sigma)[self.two_sided] ** 2))
            covariance *= max(1.0, chi2 / dof)
        return covariance

    def starts_and_bounds(self) -> tuple[list[np.ndarray], list[tuple[float, float]] | None]:
        """Starting θ (the power law: the brackets' weighted least squares) and bounds."""
        weights = np.where(self.two_sided, 1 / self.sigma**2, 0.0)
        if self.law == "power_law":
            design = np.column_stack([np.ones_like(self.log_b), self.log_b - self.ref])
            normal = design.T @ (weights[:, None] * design)
            return [np.linalg.solve(normal, design.T @ (weights * self.middle))], None
        top = float(self.middle[self.two_sided].max())
        scale = (float(self.log_b.min()) - _B_RANGE, float(self.log_b.max()) + _B_RANGE)
        grid = np.linspace(scale[0] + 0.1, scale[1] - 0.1, _STARTS)
        return [np.array([top + 0.5, c]) for c in grid], [(top - 20.0, top + 20.0), scale]


def _fit(law: str, data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> EdgeLaw | None:
    """One law fitted to the censored edges; None for a saturating fit at its linear limit."""
    likelihood = _Likelihood(law, *data)
    starts, bounds = likelihood.starts_and_bounds()
    results = [
        minimize(likelihood.objective, start, jac=True, method="SLSQP", bounds=bounds)
        for start in starts
    ]
    theta = min(results, key=lambda result: result.fun).x
    if bounds is not None and not bounds[1][0] + 1e-3 < theta[1] < bounds[1][1] - 1e-3:
        return None  # B_noise beyond the batch range: not identified
    covariance = likelihood.covariance(theta)
    spread = _Z90 * np.sqrt(np.diag(covariance))
    low, high = law_params(law, theta - spread), law_params(law, theta + spread)
    return EdgeLaw(
        law=law,
        params=law_params(law, theta),
        intervals={name: (low[name], high[name]) for name in PARAMETERS[law]},
        theta=tuple(float(t) for t in theta),
        covariance=tuple(tuple(float(c) for c in row) for row in covariance),
        b_ref=math.exp(likelihood.ref),
        aic=2 * min(result.fun for result in results) + 2 * len(theta),
    )


def fit_edge(optima: Sequence[BatchOptimum]) -> EdgeFit | None:
    """Fit the stability edge across batch sizes (see the module docstring for the model).

    Args:
        optima: per-batch optima (:func:`lrbatch.science.analysis.batch_optima`), bracketed or not:
            their ``stable_lr`` and ``stability_edge``.

    Returns:
        The fit, or None when fewer than two batch sizes bracket their edge.
    """
    data = _censored(optima)
    log_b, low, high = data
    two_sided = np.isfinite(low) & np.isfinite(high)
    if len(np.unique(log_b[two_sided])) < 2:
        return None
    laws = [_fit("power_law", data)]
    if np.count_nonzero(two_sided) >= 3:
        laws.append(_fit("saturating", data))
    fitted = [law for law in laws if law is not None]
    aic = np.array([law.aic for law in fitted])
    weights = np.exp(-(aic - aic.min()) / 2)
    weighted = zip(fitted, weights / weights.sum(), strict=True)
    return EdgeFit(
        laws=tuple(replace(law, weight=float(weight)) for law, weight in weighted),
        brackets=int(np.count_nonzero(two_sided)),
        lower_bounds=int(np.count_nonzero(~two_sided & np.isfinite(low))),
        upper_bounds=int(np.count_nonzero(~two_sided & ~np.isfinite(low))),
    )


@dataclass(frozen=True)
class EdgeEstimate:
    """The stability edge at one batch size, from the best evidence there is.

    Attributes:
        batch_size: effective batch size.
        lr: the edge: the lowest lr that diverged at this batch size (``"measured"``), the
            law's (``"fitted"``), or the lower bound (``"lower bound"``).
        low: the lower end of its interval: the highest lr that trained without diverging
            here; the law's 5% quantile (raised to the lower bound); the lower bound (see
            :func:`edge_at`). A learning rate below it is not expected to diverge.
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
    law, else a lower bound.

    The lower bound is the highest lr that trained without diverging at any measured batch
    size up to ``batch``: it assumes the edge does not fall as the batch grows (a larger batch
    averages its gradient noise away). The law is raised to it where it lies below, and
    lowered to the lowest lr that diverged at ``batch``, if any.

    Args:
        batch: effective batch size.
        optima: per-batch optima, with their ``stable_lr`` and ``stability_edge``.
        fit: the edge law (:func:`fit_edge`), or None.

    Returns:
        The estimate, or None when nothing is known (no law, no measured batch size ≤ batch).
    """
    here = next((o for o in optima if o.batch_size == batch), None)
    diverged = None if here is None else here.stability_edge
    if here is not None and here.stable_lr is not None and diverged is not None:
        return EdgeEstimate(batch, diverged, here.stable_lr, diverged, MEASURED)
    trained = [o.stable_lr for o in optima if o.batch_size <= batch and o.stable_lr is not None]
    floor = max(trained, default=None)
    if fit is None:
        return None if floor is None else EdgeEstimate(batch, floor, floor, math.inf, LOWER_BOUND)
    lr, low, high = fit.predict(batch)
    if floor is not None:
        lr, low, high = max(lr, floor), max(low, floor), max(high, floor)
    if diverged is not None:  # everything up to ``diverged`` diverged here
        lr, low, high = min(lr, diverged), min(low, diverged), min(high, diverged)
    return EdgeEstimate(batch, lr, low, high, FITTED)
