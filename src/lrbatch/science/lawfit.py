"""Laws fitted to the per-batch optima, and compared on the optima's own uncertainty.

Each law of :mod:`lrbatch.science.laws` is fitted to the bracketed optima in log–log space, least
squares weighted by 1/σ², σ the standard error of ln η_opt from the optimum's 90% interval.

The σ are measured (each optimum's bootstrap), so the error scale is known, not fitted: a
law's χ² = Σ (residual/σ)² is −2 ln L up to a constant, and AIC = χ² + 2k counts only the
law's own k parameters. With a known variance this is Mallows' C_p up to a constant (Mallows
1973, *Technometrics* 15:661), an unbiased estimate of the expected prediction χ² of a linear
model at any n: no small-sample correction is due. Hurvich & Tsai's AICc (1989) corrects for
fitting the error scale too; with four batch sizes it scores every two-parameter law inf
(k = 3 with the scale: n − k − 1 = 0) and so names a one-parameter law even when it misses
three of four optima far beyond their intervals.

When the optima scatter about even the best-fitting law more than their σ say (σ from a few
seeds understates it, or no law fits), every χ² is divided by ĉ = χ²/(n − k) of that law, at
least 1: quasi-AIC (Burnham & Anderson 2002, *Model Selection and Multimodel Inference*,
§6.2), the inflation the parametric bootstrap applies to the intervals
(:func:`lrbatch.science.laws.bootstrap_log_law`), so the comparison and the free exponent's interval
judge with the same σ. ĉ is shared by every law, so counting it as a parameter (as Burnham &
Anderson do) adds the same to every score and changes no ranking.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lrbatch.science import rules
from lrbatch.science.laws import (
    EXPONENTS,
    LAWS,
    LIMITS,
    PARAMETERS,
    bootstrap_log_law,
    fit_exponent,
    fit_log_law,
    law_params,
    log_law,
)
from lrbatch.science.optima import BatchOptimum

__all__ = ["LawFit", "fit_laws", "log_sigma", "usable_optima"]

_Z90 = 1.6449  # standard-normal quantile: a 90% interval is ±1.645σ
_SIGMA_FLOOR = 0.05  # in ln η: a local parabola on a skewed curve is biased by a few percent


@dataclass(frozen=True)
class LawFit:
    """One law fitted to the optima.

    Attributes:
        law: one of :data:`lrbatch.science.laws.LAWS`.
        params: fitted parameters (see :data:`lrbatch.science.laws.PARAMETERS`): ``lr_ref``, η at
            ``b_ref``; ``alpha``, the exponent; ``lr_max``, the largest η; ``b_noise`` or
            ``b_peak``, in samples.
        intervals: 90% intervals of ``params``, by parametric bootstrap.
        n_params: free parameters of the law.
        rms_log_error: RMS residual in natural-log η, weighted by 1/σ² (σ from each
            optimum's log-interval width).
        aicc: the score laws are ranked by, lower better: χ²/ĉ + 2·n_params (quasi-AIC with
            known variance, which needs no small-sample correction: see the module
            docstring; the name is summary.json's). For saturating and surge, the better of
            their own and their limits' (``limit_exponent``).
        loo_rms: leave-one-batch-size-out RMS prediction error in natural-log η, weighted as
            ``rms_log_error``.
        b_ref: the batch size ``lr_ref`` refers to: the geometric mean of the fitted ones.
        n_points: optima fitted (bracketed ones only).
        limit_exponent: set when saturating or surge scored better as one of its limits, a
            one-parameter power law with this exponent (batch scale → 0 or ∞: 0 or 1; −½
            or ½), which fits as well for its parameters: the batch scale is not identified.
        chi2: Σ (residual/σ)² in ln η, σ each optimum's standard error (not divided by ĉ).
        overdispersion: ĉ ≥ 1, how many times the optima's variance about the best-fitting
            law exceeds what their intervals say; the same for every law of one comparison.
    """

    law: str
    params: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    n_params: int
    rms_log_error: float
    aicc: float
    loo_rms: float
    b_ref: float
    n_points: int
    limit_exponent: float | None = None
    chi2: float = math.nan
    overdispersion: float = 1.0

    @property
    def at_limit(self) -> bool:
        """Scored as a one-parameter limit (``limit_exponent``), not as a law of its own."""
        return self.limit_exponent is not None

    def predict(self, batch: float) -> float:
        """The fitted law's learning rate at effective batch size ``batch``."""
        p = self.params
        if self.law == "saturating":
            return rules.saturating(batch, p["lr_max"], p["b_noise"])
        if self.law == "surge":
            return rules.surge(batch, p["lr_max"], p["b_peak"])
        return rules.power_law(batch, self.b_ref, p["lr_ref"], self.exponent())

    def exponent(self, batch: float | None = None) -> float:
        """d ln η / d ln B at ``batch`` (the fit's own α for a power law, at any batch).

        Saturating: B_noise / (B + B_noise), from 1 (B ≪ B_noise) to 0. Surge:
        −½ (B − B_peak) / (B + B_peak), from ½ to −½ (Li et al. 2024, arXiv:2405.14578).
        """
        if self.law in EXPONENTS:
            return EXPONENTS[self.law]
        if self.law == "power_law":
            return self.params["alpha"]
        at = self.b_ref if batch is None else batch
        if self.law == "saturating":
            return self.params["b_noise"] / (at + self.params["b_noise"])
        return -0.5 * (at - self.params["b_peak"]) / (at + self.params["b_peak"])


def usable_optima(optima: Sequence[BatchOptimum]) -> list[BatchOptimum]:
    """Bracketed optima, ascending in batch size: an unbracketed one is only a bound."""
    return sorted((o for o in optima if o.bracketed), key=lambda o: o.batch_size)


def log_sigma(optimum: BatchOptimum) -> float:
    """Standard error of ln η_opt from its 90% interval, floored at ``_SIGMA_FLOOR``."""
    return max(math.log(optimum.lr_high / optimum.lr_low) / (2 * _Z90), _SIGMA_FLOOR)


def _points(usable: list[BatchOptimum]) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(ln B, ln η_opt, σ of ln η_opt, ln B_ref) of the usable optima."""
    log_b = np.log([o.batch_size for o in usable])
    sigma = np.array([log_sigma(o) for o in usable])
    return log_b, np.log([o.lr_opt for o in usable]), sigma, float(log_b.mean())


def _overdispersion(laws: Sequence[str], usable: list[BatchOptimum]) -> float:
    """ĉ = χ²/(n − k) of the best-fitting law with residual degrees of freedom, at least 1."""
    log_b, log_lr, sigma, ref = _points(usable)
    ratios = []
    for law in laws:
        dof = len(usable) - len(PARAMETERS[law])
        if dof > 0:
            theta = fit_log_law(law, log_b, log_lr, sigma**-2, ref)
            residuals = (log_lr - log_law(law, theta, log_b, ref)) / sigma
            ratios.append(float(np.sum(residuals**2)) / dof)
    return max(min(ratios, default=1.0), 1.0)


def _fit(
    law: str, usable: list[BatchOptimum], n_boot: int, rng: np.random.Generator, c_hat: float
) -> LawFit:
    """One law fitted to the usable optima and scored with overdispersion ``c_hat``."""
    n, n_params = len(usable), len(PARAMETERS[law])
    log_b, log_lr, sigma, ref = _points(usable)
    weights = 1.0 / sigma**2
    theta, draws = bootstrap_log_law(law, log_b, log_lr, sigma, n_boot, rng, ref)
    residuals = log_lr - log_law(law, theta, log_b, ref)
    chi2 = float(np.sum(weights * residuals**2))
    score, limit = chi2 / c_hat + 2 * n_params, None
    for alpha in LIMITS.get(law, ()):  # a law contains its limits: score it by the best of them
        offset = log_lr - alpha * (log_b - ref) - fit_exponent(alpha, log_b, log_lr, weights, ref)
        limit_score = float(np.sum(weights * offset**2)) / c_hat + 2  # one parameter
        if limit_score < score:
            score, limit = limit_score, alpha
    held_out = np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        theta_i = fit_log_law(law, log_b[keep], log_lr[keep], weights[keep], ref)
        held_out[i] = log_lr[i] - log_law(law, theta_i, log_b[i : i + 1], ref)[0]
    lows, highs = (law_params(law, q) for q in np.quantile(draws, [0.05, 0.95], axis=0))
    norm = weights / weights.mean()  # RMS in ln η, weighted at mean 1
    return LawFit(
        law=law,
        params=law_params(law, theta),
        intervals={name: (lows[name], highs[name]) for name in PARAMETERS[law]},
        n_params=n_params,
        rms_log_error=float(np.sqrt(np.mean(norm * residuals**2))),
        aicc=score,
        loo_rms=float(np.sqrt(np.mean(norm * held_out**2))),
        b_ref=float(np.exp(ref)),
        n_points=n,
        limit_exponent=limit,
        chi2=chi2,
        overdispersion=c_hat,
    )


def fit_laws(
    optima: Sequence[BatchOptimum], laws: Sequence[str] = LAWS, n_boot: int = 200, seed: int = 0
) -> list[LawFit]:
    """Fit each law to the bracketed optima, in log–log space, and score it.

    Least squares on ln η weighted by 1/σ², σ the optimum's 90% interval half-width in ln η
    / 1.645 (at least 0.05). Intervals: 5% and 95% quantiles over ``n_boot`` parametric
    bootstrap refits (:func:`lrbatch.science.laws.bootstrap_log_law`). Score (``LawFit.aicc``):
    χ²/ĉ + 2k, the quasi-AIC with known variance of the module docstring; saturating and
    surge are also scored as their one-parameter limits (batch scale → 0 or ∞) and keep the
    better score (``limit_exponent``). Laws with more parameters than points − 1 are left out.

    Args:
        optima: per-batch optima (:func:`lrbatch.science.analysis.batch_optima`); unbracketed ones
            are not used.
        laws: names from :data:`lrbatch.science.laws.LAWS`.
        n_boot: parametric-bootstrap replicates per law, for the intervals.
        seed: seeds the bootstrap.

    Returns:
        One fit per law that could be fitted, in the order of ``laws``.

    Raises:
        ValueError: an unknown law.
    """
    for law in laws:
        if law not in PARAMETERS:
            raise ValueError(f"unknown law {law!r}; accepted: {', '.join(LAWS)}")
    usable = usable_optima(optima)
    fitted = {i: law for i, law in enumerate(laws) if len(PARAMETERS[law]) <= len(usable) - 1}
    c_hat = _overdispersion(list(fitted.values()), usable)
    return [
        _fit(law, usable, n_boot, np.random.default_rng([seed, index]), c_hat)
        for index, law in fitted.items()
    ]
