"""Which law the per-batch optima follow: fits, a penalised comparison, and the verdict.

Each law of :mod:`lrbatch.laws` is fitted to the bracketed optima in log–log space, weighted
by 1/σ², σ from each optimum's 90% interval. Laws are compared by the corrected Akaike
criterion (AICc; Hurvich & Tsai 1989, Burnham & Anderson 2002) of those weighted residuals,
and by the leave-one-batch-size-out error; a difference in AICc below 2 does not tell two laws
apart (Burnham & Anderson 2002, §2.6). A surge (Li et al. 2024, arXiv:2405.14578) is also
checked without a model: does the optimum fall, beyond its uncertainty, after its peak?
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lrbatch import rules
from lrbatch._optima import BatchOptimum
from lrbatch.laws import (
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

__all__ = ["LawFit", "SurgeEvidence", "Verdict", "fit_laws", "surge_evidence", "verdict"]

_Z90 = 1.6449  # standard-normal quantile: a 90% interval is ±1.645σ
_SIGMA_FLOOR = 0.05  # in ln η: a local parabola on a skewed curve is biased by a few percent
MARGIN = 2.0  # ΔAICc below which two laws are not told apart (Burnham & Anderson 2002)


@dataclass(frozen=True)
class LawFit:
    """One law fitted to the optima.

    Attributes:
        law: one of :data:`lrbatch.laws.LAWS`.
        params: fitted parameters (see :data:`lrbatch.laws.PARAMETERS`): ``lr_ref``, η at
            ``b_ref``; ``alpha``, the exponent; ``lr_max``, the largest η; ``b_noise`` or
            ``b_peak``, in samples.
        intervals: 90% intervals of ``params``, by parametric bootstrap.
        n_params: free parameters of the law.
        rms_log_error: RMS residual in natural-log η, weighted by 1/σ² (σ from each
            optimum's log-interval width).
        aicc: corrected AIC of the weighted log-η residuals (inf with too few points); for
            saturating and surge, the better of their own and their limits' (``at_limit``).
        loo_rms: leave-one-batch-size-out RMS prediction error in natural-log η, weighted as
            ``rms_log_error``.
        b_ref: the batch size ``lr_ref`` refers to: the geometric mean of the fitted ones.
        n_points: optima fitted (bracketed ones only).
        at_limit: saturating or surge scored as its limit, a one-parameter power law (batch
            scale → 0 or ∞: constant or linear; 1/√B or √B), which fits as well for its
            parameters: the batch scale lies outside the batch range, not identified.
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
    at_limit: bool = False

    def predict(self, batch: float) -> float:
        """The fitted law's learning rate at effective batch size ``batch``."""
        p = self.params
        if self.law == "saturating":
            return rules.saturating(batch, p["lr_max"], p["b_noise"])
        if self.law == "surge":
            return rules.surge(batch, p["lr_max"], p["b_peak"])
        alpha = p["alpha"] if self.law == "power_law" else EXPONENTS[self.law]
        return rules.power_law(batch, self.b_ref, p["lr_ref"], alpha)


def _usable(optima: Sequence[BatchOptimum]) -> list[BatchOptimum]:
    """Bracketed optima, ascending in batch size: an unbracketed one is only a bound."""
    return sorted((o for o in optima if o.bracketed), key=lambda o: o.batch_size)


def _log_sigma(optimum: BatchOptimum) -> float:
    """Standard error of ln η_opt from its 90% interval, floored at ``_SIGMA_FLOOR``."""
    return max(math.log(optimum.lr_high / optimum.lr_low) / (2 * _Z90), _SIGMA_FLOOR)


def _aicc(weighted_rss: float, n: int, n_params: int) -> float:
    """AICc of a least-squares fit with unknown error scale (k counts it too)."""
    k = n_params + 1
    if n - k - 1 <= 0:
        return math.inf
    return n * math.log(max(weighted_rss, 1e-300) / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def _fit(law: str, usable: list[BatchOptimum], n_boot: int, rng: np.random.Generator) -> LawFit:
    """One law fitted to the usable optima (see :func:`fit_laws`)."""
    n, n_params = len(usable), len(PARAMETERS[law])
    log_b = np.log([o.batch_size for o in usable])
    log_lr = np.log([o.lr_opt for o in usable])
    sigma = np.array([_log_sigma(o) for o in usable])
    weights = 1.0 / sigma**2
    norm = weights / weights.mean()  # AICc and RMS in ln η, weighted at mean 1
    ref = float(log_b.mean())
    theta, draws = bootstrap_log_law(law, log_b, log_lr, sigma, n_boot, rng, ref)
    aicc = _aicc(float(np.sum(norm * (log_lr - log_law(law, theta, log_b, ref)) ** 2)), n, n_params)
    limit_aicc = math.inf  # a law contains its limits: score it by the best of them too
    for alpha in LIMITS.get(law, ()):
        offset = log_lr - alpha * (log_b - ref) - fit_exponent(alpha, log_b, log_lr, weights, ref)
        limit_aicc = min(limit_aicc, _aicc(float(np.sum(norm * offset**2)), n, 1))
    held_out = np.empty(n)
    for i in range(n):
        keep = np.arange(n) != i
        theta_i = fit_log_law(law, log_b[keep], log_lr[keep], weights[keep], ref)
        held_out[i] = log_lr[i] - log_law(law, theta_i, log_b[i : i + 1], ref)[0]
    lows, highs = (law_params(law, q) for q in np.quantile(draws, [0.05, 0.95], axis=0))
    residuals = log_lr - log_law(law, theta, log_b, ref)
    return LawFit(
        law=law,
        params=law_params(law, theta),
        intervals={name: (lows[name], highs[name]) for name in PARAMETERS[law]},
        n_params=n_params,
        rms_log_error=float(np.sqrt(np.mean(norm * residuals**2))),
        aicc=min(aicc, limit_aicc),
        loo_rms=float(np.sqrt(np.mean(norm * held_out**2))),
        b_ref=float(np.exp(ref)),
        n_points=n,
        at_limit=limit_aicc < aicc,
    )


def fit_laws(
    optima: Sequence[BatchOptimum], laws: Sequence[str] = LAWS, n_boot: int = 200, seed: int = 0
) -> list[LawFit]:
    """Fit each law to the bracketed optima, in log–log space.

    Least squares on ln η weighted by 1/σ², σ the optimum's 90% interval half-width in ln η
    / 1.645 (at least 0.05). Intervals: 5% and 95% quantiles over ``n_boot`` parametric
    bootstrap refits (:func:`lrbatch.laws.bootstrap_log_law`). AICc counts the error scale as
    a parameter; saturating and surge are also scored as their one-parameter limits (batch
    scale → 0 or ∞) and keep the better score (``at_limit``). Laws with more parameters than
    points − 1 are left out of the result.

    Args:
        optima: per-batch optima (:func:`batch_optima`); unbracketed ones are not used.
        laws: names from :data:`lrbatch.laws.LAWS`.
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
    usable = _usable(optima)
    return [
        _fit(law, usable, n_boot, np.random.default_rng([seed, index]))
        for index, law in enumerate(laws)
        if len(PARAMETERS[law]) <= len(usable) - 1
    ]


@dataclass(frozen=True)
class SurgeEvidence:
    """Does the optimal learning rate fall after a peak? (Li et al. 2024, arXiv:2405.14578)

    Attributes:
        peak_batch: the batch size with the largest optimal lr.
        peak_lr: that optimal lr.
        fall: ln(η_opt at the peak / η_opt at the largest batch size); 0 at the peak itself.
        fall_uncertainty: standard error (1σ) of ``fall``: the two optima's σ (90% interval
            half-widths in ln η / 1.645) combined in quadrature.
        significant: at least two batch sizes follow the peak, each with a lower optimal lr
            (one high outlier is not a surge), and ``fall`` > 1.645 × that σ (one-sided 95%).
    """

    peak_batch: int
    peak_lr: float
    fall: float
    fall_uncertainty: float
    significant: bool


def surge_evidence(optima: Sequence[BatchOptimum]) -> SurgeEvidence | None:
    """Surge evidence from the bracketed optima; None with fewer than two of them."""
    usable = _usable(optima)
    if len(usable) < 2:
        return None
    peak = max(usable, key=lambda o: (o.lr_opt, -o.batch_size))
    last = usable[-1]
    fall = math.log(peak.lr_opt / last.lr_opt)
    sigma = math.hypot(_log_sigma(peak), _log_sigma(last))
    after = [o for o in usable if o.batch_size > peak.batch_size]
    falls = len(after) >= 2 and all(o.lr_opt < peak.lr_opt for o in after)
    significant = falls and fall > _Z90 * sigma
    return SurgeEvidence(peak.batch_size, peak.lr_opt, fall, sigma, significant)


@dataclass(frozen=True)
class Verdict:
    """The answer: which law the optima follow.

    Attributes:
        best: among the laws within ΔAICc < 2 of the lowest AICc, the one with the fewest
            parameters (then the lowest AICc): a published rule the data cannot tell from a
            free fit is named. With too few optima for AICc, the lowest leave-one-out error;
            ``"none"`` when no law could be fitted.
        supported: the laws within ΔAICc < 2 of the lowest AICc, best first (every fitted law
            when AICc is undefined); saturating or surge scored as its limit (``at_limit``) is
            that limit, not a law of its own, and is left out (the text says so).
        text: what a user reads: the law, its parameters with intervals, and the evidence.
        surge: the model-free surge check, or None with fewer than two bracketed optima.
    """

    best: str
    supported: list[str]
    text: str
    surge: SurgeEvidence | None


def _interval(fit: LawFit, name: str) -> str:
    low, high = fit.intervals[name]
    return f"{fit.params[name]:.3g} (90% {low:.3g}–{high:.3g})"


def _limit(fit: LawFit) -> str:
    """The one-parameter law a saturating or surge fit reduces to, its batch scale out of range:
    B ≪ B_noise is linear, B ≫ B_noise constant; B ≪ B_peak is η ∝ √B, B ≫ B_peak η ∝ 1/√B."""
    scale = fit.params["b_noise" if fit.law == "saturating" else "b_peak"]
    below = fit.b_ref < scale  # the batch sizes lie below the batch scale
    if fit.law == "saturating":
        return "linear" if below else "constant"
    return "square_root" if below else "1/√B"


def _reduction(fit: LawFit) -> str:
    name = "B_noise" if fit.law == "saturating" else "B_peak"
    return f"{fit.law} reduces to {_limit(fit)} here: {name} beyond the measured range"


def _nests(wider: LawFit, law: str) -> bool:
    """``wider`` contains ``law`` as a special case (power law: any fixed exponent)."""
    if law not in EXPONENTS:
        return False
    return wider.law == "power_law" or EXPONENTS[law] in LIMITS.get(wider.law, ())


def _describe(fit: LawFit, fits: Sequence[LawFit]) -> str:
    """The best law in words, with its parameters."""
    shapes = {"constant": "η constant", "square_root": "η ∝ √B", "linear": "η ∝ B"}
    if fit.law == "power_law":
        return f"power law η ∝ B^α, α = {_interval(fit, 'alpha')}"
    if fit.law in shapes:
        free = next((f for f in fits if f.law == "power_law"), None)
        exponent = ""
        if free is not None:
            alpha = f"free exponent α = {_interval(free, 'alpha')}"
            low, high = free.intervals["alpha"]
            named = EXPONENTS[fit.law]
            exponent = f"; {alpha}"
            if not low <= named <= high:
                pace = "slower" if high < named else "faster"
                exponent = f", though {pace}: {alpha} excludes {named:g}"
        return f"{fit.law} ({shapes[fit.law]}){exponent}"
    scale = "b_noise" if fit.law == "saturating" else "b_peak"
    name = "B_noise" if fit.law == "saturating" else "B_peak"
    note = ", beyond the measured batch range: not identified" if fit.at_limit else ""
    return f"{fit.law}, η_max = {_interval(fit, 'lr_max')}, {name} = {_interval(fit, scale)}{note}"


def verdict(fits: Sequence[LawFit], optima: Sequence[BatchOptimum]) -> Verdict:
    """Name the law the data support, with the evidence, and check for a surge.

    Args:
        fits: law fits (:func:`fit_laws`) of ``optima``.
        optima: the per-batch optima the fits came from.

    Returns:
        The verdict.
    """
    surge = surge_evidence(optima)
    usable = _usable(optima)
    left_out = len(optima) - len(usable)
    notes = [f"{left_out} unbracketed batch size(s) left out."] if left_out else []
    if surge is not None and surge.significant:
        notes.insert(
            0,
            f"The optimum peaks at B = {surge.peak_batch} and then falls"
            f" ×{math.exp(surge.fall):.2f} (σ ×{math.exp(surge.fall_uncertainty):.2f})"
            f" by B = {usable[-1].batch_size}.",
        )
    if not fits:
        text = (
            f"{len(usable)} of {len(optima)} batch size(s) bracketed their optimum:"
            " no law can be fitted (at least 2 are needed)."
        )
        return Verdict("none", [], " ".join([text, *notes]), surge)
    ranked = sorted(fits, key=lambda f: (f.aicc, f.loo_rms, f.n_params))
    best = ranked[0]
    if not math.isfinite(best.aicc):
        best = min(fits, key=lambda f: (f.loo_rms, f.n_params))
        text = (
            f"Only {len(usable)} bracketed optima: too few to tell the laws apart; "
            f"{_describe(best, fits)} predicts held-out batch sizes best "
            f"(error ×{math.exp(best.loo_rms):.2f})."
        )
        supported = [best.law] + [f.law for f in fits if f is not best]
        return Verdict(best.law, supported, " ".join([text, *notes]), surge)
    close = [f for f in ranked if f.aicc - best.aicc < MARGIN]
    best = min(close, key=lambda f: (f.n_params, f.aicc))  # parsimony among the indistinguishable
    reduced = [f for f in close if f is not best and f.at_limit]  # the limit, not a law of its own
    others = [f for f in close if f is not best and not f.at_limit]
    supported = [best.law] + [f.law for f in others]
    worse = [f for f in ranked if f not in close and math.isfinite(f.aicc)]
    evidence = [
        f"{f.law} is not needed (ΔAICc {f.aicc - best.aicc:+.1f})"
        for f in worse[:1]
        if _nests(f, best.law)
    ]
    rival = next((f for f in worse if not _nests(f, best.law)), None)
    if rival is not None:
        evidence.append(
            f"the closest law ruled out, {rival.law}, scores ΔAICc {rival.aicc - best.aicc:+.1f}"
        )
    evidence.append(f"typical held-out error ×{math.exp(best.loo_rms):.2f} in lr")
    limits = "".join(f" ({_reduction(f)})" for f in reduced)
    follows = f"{_describe(best, fits)} ({'; '.join(evidence)}){limits}"
    text = f"The optimal learning rate follows {follows}."
    if best.law == "surge" and surge is not None and not surge.significant:
        text += " Yet the fall after the peak is within its uncertainty."
    if others:
        names = ", ".join(f.law for f in others)
        text += f" The data cannot tell {best.law} and {names} apart (ΔAICc < {MARGIN:g})."
    return Verdict(best.law, supported, " ".join([text, *notes]), surge)
