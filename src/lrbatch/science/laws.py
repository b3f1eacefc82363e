"""Laws of the optimal learning rate against batch size, fitted in log–log space.

Six laws (formulas and sources in docs/science.md, *Rules*; the formulas themselves in
:mod:`lrbatch.science.rules`):

==============  ========================================  =================================
law             log η(B)                                  fitting parameters θ
==============  ========================================  =================================
constant        log η_ref                                 log η_ref
square_root     log η_ref + ½ (log B − log B_ref)         log η_ref
linear          log η_ref + (log B − log B_ref)           log η_ref
power_law       log η_ref + α (log B − log B_ref)         log η_ref, α
saturating      log η_max − log(1 + B_noise/B)            log η_max, log B_noise
surge           log η_max − log cosh(½ log(B/B_peak))     log η_max, log B_peak
==============  ========================================  =================================

η_ref is the learning rate at a reference batch B_ref chosen by the caller (the analysis uses
the geometric mean of the fitted batch sizes, where η_ref is least correlated with α).

Fits minimise weighted squared error of log η, the scale on which optima are measured (a
factor of 2 too high weighs as much as a factor of 2 too low). Used by the sampler, to propose
what a law fitted to the optima found so far predicts (:func:`fit_law`), and by the analysis,
to compare laws and bound their parameters (:func:`fit_log_law`, :func:`bootstrap_log_law`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from lrbatch.science.rules import LAW_RULES

__all__ = [
    "EXPONENTS",
    "LAWS",
    "LIMITS",
    "PARAMETERS",
    "LawCurve",
    "bootstrap_log_law",
    "fit_exponent",
    "fit_law",
    "fit_log_law",
    "law_params",
    "log_law",
]

LAWS = ("constant", "square_root", "linear", "power_law", "saturating", "surge")
PARAMETERS: dict[str, tuple[str, ...]] = {
    "constant": ("lr_ref",),
    "square_root": ("lr_ref",),
    "linear": ("lr_ref",),
    "power_law": ("lr_ref", "alpha"),
    "saturating": ("lr_max", "b_noise"),
    "surge": ("lr_max", "b_peak"),
}
EXPONENTS = {"constant": 0.0, "square_root": 0.5, "linear": 1.0}  # fixed α of the anchored rules
# α that saturating and surge tend to over the batch range as their batch scale → 0 and → ∞
LIMITS = {"saturating": (0.0, 1.0), "surge": (-0.5, 0.5)}
_B_RANGE = 1000.0  # B_noise is searched within [min B / 1000, max B · 1000]
_STARTS = 7  # multistart in log B_noise: the saturating and surge fits have local minima


def _check_law(law: str) -> None:
    if law not in PARAMETERS:
        raise ValueError(f"unknown law {law!r}; accepted: {', '.join(LAWS)}")


def log_law(law: str, theta: np.ndarray, log_b: np.ndarray, log_b_ref: float = 0.0) -> np.ndarray:
    """log η predicted by ``law`` with fitting parameters ``theta`` (see the module table).

    Args:
        law: one of :data:`LAWS`.
        theta: the law's fitting parameters, in the order of the module table.
        log_b: natural log of effective batch sizes.
        log_b_ref: log B_ref, the batch size η_ref refers to (power laws only).

    Returns:
        Natural log of the learning rate at each batch size.

    Raises:
        ValueError: an unknown law.
    """
    _check_law(law)
    if law in EXPONENTS:
        return theta[0] + EXPONENTS[law] * (log_b - log_b_ref)
    if law == "power_law":
        return theta[0] + theta[1] * (log_b - log_b_ref)
    if law == "saturating":  # McCandlish et al. 2018, arXiv:1812.06162
        return theta[0] - np.logaddexp(0.0, theta[1] - log_b)
    # surge, Li et al. 2024, arXiv:2405.14578: ½(√(B_peak/B) + √(B/B_peak)) = cosh(½ log(B/B_peak))
    half_gap = np.abs(0.5 * (log_b - theta[1]))
    return theta[0] - (half_gap + np.log1p(np.exp(-2.0 * half_gap)) - math.log(2.0))


def law_params(law: str, theta: np.ndarray) -> dict[str, float]:
    """The fitting parameters ``theta`` in natural units: ``{name: value}`` (see
    :data:`PARAMETERS`); learning rates per step, batch sizes in samples."""
    _check_law(law)
    with np.errstate(over="ignore"):  # (a bound of a parameter the data do not pin: inf)
        return {
            name: float(value if name == "alpha" else np.exp(value))
            for name, value in zip(PARAMETERS[law], theta, strict=True)
        }


def fit_exponent(
    alpha: float,
    log_b: np.ndarray,
    log_lr: np.ndarray,
    weights: np.ndarray | None = None,
    log_b_ref: float = 0.0,
) -> float:
    """log η_ref of the weighted least-squares power law with fixed exponent ``alpha``."""
    offset = log_lr - alpha * (log_b - log_b_ref)
    return float(np.average(offset, weights=weights))


def fit_log_law(
    law: str,
    log_b: np.ndarray,
    log_lr: np.ndarray,
    weights: np.ndarray | None = None,
    log_b_ref: float = 0.0,
    start: np.ndarray | None = None,
) -> np.ndarray:
    """Weighted least-squares fit of ``law`` in log–log space.

    The power laws are linear in θ and solved exactly. Saturating and surge are fitted with
    bounds (B_noise within a factor 1000 of the measured batch range: beyond it both are a pure
    power law over the range and B_noise is not identified), from ``start`` or, without it,
    from several starting B_noise, keeping the best.

    Args:
        law: one of :data:`LAWS`.
        log_b: natural log of effective batch sizes.
        log_lr: natural log of the optimal learning rate at each.
        weights: per-point weights (1/σ² of log η); equal weights without.
        log_b_ref: log B_ref for the power laws.
        start: starting θ for saturating and surge (one local search instead of several).

    Returns:
        θ, the fitting parameters (see the module table).

    Raises:
        ValueError: an unknown law.
    """
    _check_law(law)
    if law in EXPONENTS:
        return np.array([fit_exponent(EXPONENTS[law], log_b, log_lr, weights, log_b_ref)])
    root_w = np.sqrt(np.ones_like(log_b) if weights is None else weights)
    if law == "power_law":
        design = np.column_stack([np.ones_like(log_b), log_b - log_b_ref]) * root_w[:, None]
        return np.linalg.lstsq(design, log_lr * root_w, rcond=None)[0]
    lower = np.array([log_lr.min() - 20.0, log_b.min() - math.log(_B_RANGE)])
    upper = np.array([log_lr.max() + 20.0, log_b.max() + math.log(_B_RANGE)])
    if start is not None:
        starts = [np.clip(start, lower + 1e-9, upper - 1e-9)]
    else:
        starts = [
            np.array([log_lr.max() + 0.5, start_b])
            for start_b in np.linspace(lower[1] + 0.1, upper[1] - 0.1, _STARTS)
        ]
    best = None
    for theta0 in starts:
        result = least_squares(
            lambda theta: root_w * (log_law(law, theta, log_b) - log_lr),
            theta0,
            bounds=(lower, upper),
        )
        if best is None or result.cost < best.cost:
            best = result
    assert best is not None
    return np.asarray(best.x)


def bootstrap_log_law(
    law: str,
    log_b: np.ndarray,
    log_lr: np.ndarray,
    sigma: np.ndarray,
    n_boot: int,
    rng: np.random.Generator,
    log_b_ref: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fit ``law`` weighted by 1/σ² and draw its parameters by a parametric bootstrap.

    Each replicate redraws every point as fit + σ'·z, z ~ N(0, 1), and refits from the point
    estimate. σ' = σ · max(1, √(χ²/dof)): when the points scatter about the law more than their
    own σ says (law misfit, or σ underestimated from few seeds), the scatter sets the width.

    Args:
        law: one of :data:`LAWS`.
        log_b: natural log of effective batch sizes.
        log_lr: natural log of the measured quantity at each (optimal η; or 1/steps).
        sigma: standard error of each ``log_lr``, > 0.
        n_boot: number of bootstrap replicates.
        rng: random generator (the caller seeds it).
        log_b_ref: log B_ref for the power laws.

    Returns:
        (θ, replicates): the point estimate and an ``(n_boot, len(θ))`` array of refits.
    """
    weights = 1.0 / sigma**2
    theta = fit_log_law(law, log_b, log_lr, weights, log_b_ref)
    fitted = log_law(law, theta, log_b, log_b_ref)
    dof = len(log_b) - len(theta)
    chi2 = float(np.sum(weights * (log_lr - fitted) ** 2))
    scale = max(1.0, math.sqrt(chi2 / dof)) if dof > 0 else 1.0
    draws = fitted + scale * sigma * rng.standard_normal((n_boot, len(log_b)))
    replicates = np.array(
        [fit_log_law(law, log_b, draw, weights, log_b_ref, start=theta) for draw in draws]
    )
    return theta, replicates.reshape(n_boot, len(theta))


@dataclass(frozen=True)
class LawCurve:
    """A saturating or surge law fitted by :func:`fit_law`, for the sampler's proposals.

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


def fit_law(law: str, batches: Sequence[float], optimal_lrs: Sequence[float]) -> LawCurve:
    """Unweighted least-squares fit of ``law`` to (batch, optimal lr) points in log–log space.

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
    theta = fit_log_law(law, log_b, log_lr)
    rms = float(np.sqrt(np.mean((log_law(law, theta, log_b) - log_lr) ** 2)))
    return LawCurve(law, float(np.exp(theta[0])), float(np.exp(theta[1])), rms)
