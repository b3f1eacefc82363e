"""The verdict: which law the optima follow, in one sentence a user can act on.

The laws are fitted and scored by :mod:`lrbatch.science.lawfit` (quasi-AIC with the optima's own σ).
The verdict names the simplest law within ΔAIC < 2 of the best (Burnham & Anderson 2002,
§2.6: a smaller difference does not tell two laws apart), with one veto: a fixed-exponent law
(constant, square root, linear; or saturating or surge reduced to such a limit) whose exponent
the free exponent's 90% interval excludes is not what the data follow, whatever its score.
A surge (Li et al. 2024, arXiv:2405.14578) is also checked without a model: does the optimum
fall, beyond its uncertainty, after its peak?
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from lrbatch.science import rules
from lrbatch.science.lawfit import LawFit, fit_laws, log_sigma, usable_optima
from lrbatch.science.laws import EXPONENTS, LIMITS
from lrbatch.science.optima import BatchOptimum

__all__ = ["LawFit", "SurgeEvidence", "Verdict", "fit_laws", "surge_evidence", "verdict"]

_Z90 = 1.6449  # standard-normal quantile: a one-sided 95% bound is 1.645σ
MARGIN = 2.0  # ΔAIC below which two laws are not told apart (Burnham & Anderson 2002)
COMMON_RULES = ("linear", "square_root")  # the rules a user is most likely to follow
_WORDS = {"constant": "constant", "square_root": "square-root", "linear": "linear"}
_SHAPES = {"constant": "η constant in B", "square_root": "η ∝ √B", "linear": "η ∝ B"}
_SCALES = {"saturating": ("b_noise", "B_noise"), "surge": ("b_peak", "B_peak")}


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
    usable = usable_optima(optima)
    if len(usable) < 2:
        return None
    peak = max(usable, key=lambda o: (o.lr_opt, -o.batch_size))
    last = usable[-1]
    fall = math.log(peak.lr_opt / last.lr_opt)
    sigma = math.hypot(log_sigma(peak), log_sigma(last))
    after = [o for o in usable if o.batch_size > peak.batch_size]
    falls = len(after) >= 2 and all(o.lr_opt < peak.lr_opt for o in after)
    significant = falls and fall > _Z90 * sigma
    return SurgeEvidence(peak.batch_size, peak.lr_opt, fall, sigma, significant)


@dataclass(frozen=True)
class Verdict:
    """The answer: which law the optima follow, and what the common rules would cost.

    Attributes:
        best: the law named: the fewest parameters among the laws within ΔAIC < 2 of the
            best score, leaving out a fixed-exponent law the free exponent's 90% interval
            excludes; ``"none"`` when no law could be fitted.
        supported: ``best`` first, then the other laws within ΔAIC < 2 that the free
            exponent does not exclude; saturating or surge scored as a limit
            (``LawFit.at_limit``) is that limit, not a law of its own, and is left out.
        text: what a user reads: one sentence with the shape (exponent or batch scale, with
            90% intervals), where it lies among the published rules and what the linear and
            square-root rules cost at ``ratio_batch``; then the evidence and notes.
        surge: the model-free surge check, or None with fewer than two bracketed optima.
        alpha: the free exponent (the power-law fit's α), or None when it was not fitted.
        alpha_interval: its 90% interval, or None.
        ratio_batch: the bracketed batch size farthest from B0, where ``ratios`` are taken;
            None without a base point.
        ratios: each common rule's learning rate there, anchored at (B0, η0), over the
            optimum (1.0 is perfect; ``linear`` and ``square_root``).
    """

    best: str
    supported: list[str]
    text: str
    surge: SurgeEvidence | None
    alpha: float | None = None
    alpha_interval: tuple[float, float] | None = None
    ratio_batch: int | None = None
    ratios: dict[str, float] = field(default_factory=dict)


def stands_for(fit: LawFit) -> float | None:
    """The exponent of the one-parameter power law ``fit`` amounts to: its own for constant,
    square root and linear, its limit's when scored at a limit; None otherwise."""
    return EXPONENTS.get(fit.law, fit.limit_exponent)


def _excluded(fit: LawFit, free: LawFit | None) -> bool:
    """The free exponent's 90% interval excludes the exponent ``fit`` stands for."""
    exponent = stands_for(fit)
    if free is None or exponent is None:
        return False
    low, high = free.intervals["alpha"]
    return not low <= exponent <= high


def _nests(wider: LawFit, fit: LawFit) -> bool:
    """``wider`` has one parameter more than ``fit`` and contains it as a special case."""
    exponent = stands_for(fit)
    if exponent is None or wider.at_limit:
        return False
    return wider.law == "power_law" or exponent in LIMITS.get(wider.law, ())


def _not_needed(wider: LawFit, best: LawFit) -> bool:
    """``wider`` nests ``best`` and scores no better: its extra parameter is uninformative,
    and ΔAIC < 2 says nothing for it, since a law with one parameter more never scores more
    than 2 worse than a law it nests (Arnold 2010, *J. Wildlife Management* 74:1175)."""
    return _nests(wider, best) and wider.aicc >= best.aicc


def _between(alpha: float) -> str:
    """Where an exponent lies among the published rules' (0, ½, 1)."""
    if alpha > 1:
        return "steeper than linear"
    if alpha < 0:
        return "falling as B grows"
    low, high = (0.0, 0.5) if alpha < 0.5 else (0.5, 1.0)
    names = {0.0: "constant", 0.5: "square-root", 1.0: "linear"}
    closer = names[low] if alpha - low <= high - alpha else names[high]
    return f"between {names[low]} and {names[high]}, closer to {closer}"


def _interval(fit: LawFit, name: str, digits: str = ".3g", parens: bool = True) -> str:
    low, high = fit.intervals[name]
    interval = f"90% {low:{digits}}–{high:{digits}}"
    return f"{fit.params[name]:{digits}} " + (f"({interval})" if parens else f"with {interval}")


def _shape(best: LawFit, free: LawFit | None, usable: list[BatchOptimum]) -> str:
    """(a) the shape with its parameters and (b) where it lies among the published rules."""
    first, last = usable[0].batch_size, usable[-1].batch_size
    if best.law in EXPONENTS:
        alpha = (
            ""
            if free is None
            else f" (free exponent α = {_interval(free, 'alpha', '.2f', parens=False)})"
        )
        return f"{_SHAPES[best.law]}, the {_WORDS[best.law]} rule{alpha}"
    if best.law == "power_law":
        return f"η ∝ B^{_interval(best, 'alpha', '.2f')}: {_between(best.params['alpha'])}"
    key, name = _SCALES[best.law]
    exponent = stands_for(best)
    if exponent is not None:
        return (
            f"η ∝ B^{exponent:g} over the measured {first}–{last} ({best.law} with {name}"
            " beyond it: not identified)"
        )
    scale = best.params[key]
    where = "inside" if first <= scale <= last else "below" if scale < first else "above"
    shape = "saturates" if best.law == "saturating" else "peaks and then falls (surge)"
    slope = best.exponent(last)
    return (
        f"η {shape}, {name} = {_interval(best, key)} {where} the measured {first}–{last},"
        f" η_max = {_interval(best, 'lr_max')}; at B = {last} it goes as B^{slope:.2f},"
        f" {_between(slope)}"
    )


def _ratios(
    usable: list[BatchOptimum], base_batch: int | None, base_lr: float | None
) -> tuple[BatchOptimum | None, dict[str, float]]:
    """The bracketed optimum farthest from B0, and each common rule's lr over it there."""
    if base_batch is None or base_lr is None:
        return None, {}
    far = max(usable, key=lambda o: (abs(math.log(o.batch_size / base_batch)), o.batch_size))
    if far.batch_size == base_batch:
        return None, {}
    predicted = rules.predict(base_lr, base_batch, far.batch_size, COMMON_RULES)
    return far, {rule: lr / far.lr_opt for rule, lr in predicted.items()}


def _cost(far: BatchOptimum, ratios: dict[str, float], base_batch: int, base_lr: float) -> str:
    """(c) what following each common rule from (B0, η0) would set at ``far``."""
    parts = []
    for rule, ratio in ratios.items():
        lr = ratio * far.lr_opt
        if far.lr_low <= lr <= far.lr_high:
            part = f"{_WORDS[rule]} lands inside the optimum's 90% interval (×{ratio:.2g})"
        else:
            part = f"{_WORDS[rule]} {'overshoots' if ratio > 1 else 'undershoots'} ×{ratio:.2g}"
        if far.stability_edge is not None and lr >= far.stability_edge:
            part += " (at or past the stability edge)"
        parts.append(part)
    scaled = f"scaled from η0 = {base_lr:.3g} at B0 = {base_batch} to B = {far.batch_size}"
    return f"; {scaled}, " + " and ".join(parts)


def _score(fit: LawFit) -> tuple[float, float, int]:
    """Ranking key: AIC, then held-out error, then fewer parameters."""
    return fit.aicc, fit.loo_rms, fit.n_params


def _evidence(best: LawFit, ranked: list[LawFit], excluded: list[LawFit]) -> str:
    """How the named law compares with the others, in one sentence."""
    top = ranked[0].aicc
    items = []
    for f in ranked:
        delta = f"ΔAIC {f.aicc - best.aicc:+.1f}"
        if f is best:
            continue
        if _not_needed(f, best):
            items.append(f"{f.law} is not needed ({delta})")
        elif f.aicc - top < MARGIN and f.limit_exponent is not None:
            scale = _SCALES[f.law][1]
            items.append(f"{f.law} reduces to η ∝ B^{f.limit_exponent:g} ({scale} out of range)")
        elif f.aicc - top < MARGIN:
            items.append(f"{f.law} fits as well ({delta})")
    worse = sorted((f for f in [*ranked, *excluded] if f.aicc - top >= MARGIN), key=_score)
    rival = next((f for f in worse if not f.at_limit and not _nests(f, best)), None)
    if rival is not None:
        delta = f"ΔAIC {rival.aicc - best.aicc:+.1f}"
        items.append(f"the closest law ruled out, {rival.law}, scores {delta}")
    items += [
        f"{f.law} would fit (ΔAIC {f.aicc - best.aicc:+.1f}) but α's interval excludes"
        f" {stands_for(f):g}"
        for f in excluded
        if f.aicc - top < MARGIN
    ]
    items.append(f"held-out error ×{math.exp(best.loo_rms):.2f} in lr")
    c_hat = best.overdispersion
    scatter = f" (the optima scatter ×{math.sqrt(c_hat):.2g} more than their intervals say)"
    return (
        f"Laws compared by AIC on the optima's own uncertainty{scatter if c_hat > 1 else ''}:"
        f" {'; '.join(items)}."
    )


def verdict(
    fits: Sequence[LawFit],
    optima: Sequence[BatchOptimum],
    base_batch: int | None = None,
    base_lr: float | None = None,
) -> Verdict:
    """Name the law the data support, with the evidence, and check for a surge.

    Args:
        fits: law fits (:func:`fit_laws`) of ``optima``.
        optima: the per-batch optima the fits came from.
        base_batch: B0, the effective batch size the rules are anchored at.
        base_lr: η0, the learning rate taken as best at B0; without it (or B0) the verdict
            leaves out what the rules would cost.

    Returns:
        The verdict.
    """
    surge = surge_evidence(optima)
    usable = usable_optima(optima)
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
    free = next((f for f in fits if f.law == "power_law"), None)
    excluded = [f for f in fits if _excluded(f, free)]
    ranked = sorted((f for f in fits if f not in excluded), key=_score)
    close = [f for f in ranked if f.aicc - ranked[0].aicc < MARGIN]
    best = min(close, key=lambda f: (f.n_params, f.aicc))  # parsimony among the indistinguishable
    others = [f for f in close if f is not best and not f.at_limit and not _not_needed(f, best)]
    supported = [best.law, *(f.law for f in others)]
    far, ratios = _ratios(usable, base_batch, base_lr)
    cost = "" if far is None else _cost(far, ratios, base_batch or 0, base_lr or 0.0)
    text = f"{_shape(best, free, usable)}{cost}."
    if free is None:
        notes.append(f"With {len(usable)} bracketed optima the exponent is not bounded.")
    if best.law == "surge" and surge is not None and not surge.significant:
        notes.append("Yet the fall after the peak is within its uncertainty.")
    return Verdict(
        best=best.law,
        supported=supported,
        text=" ".join([text, _evidence(best, ranked, excluded), *notes]),
        surge=surge,
        alpha=None if free is None else free.params["alpha"],
        alpha_interval=None if free is None else free.intervals["alpha"],
        ratio_batch=None if far is None else far.batch_size,
        ratios=ratios,
    )
