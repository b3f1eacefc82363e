"""The learning rate to use at a batch size, measured or not: the laws' predictions combined,
with a 90% interval that widens with extrapolation, kept below the stability edge.

Each law of :mod:`lrbatch.science.laws` is fitted to the bracketed optima as the verdict fits it
(weighted by 1/σ², σ from each optimum's 90% interval) and drawn by its parametric bootstrap
(:func:`lrbatch.science.laws.bootstrap_log_law`). The laws are weighted by their Akaike weights
(Burnham & Anderson 2002, *Model Selection and Multimodel Inference*, §2.9) with the known σ:
AIC = χ²/ĉ + 2k, k the law's parameters and ĉ = max(1, the smallest χ²/dof of a
two-parameter law), the overdispersion of quasi-AIC (§6.2) that keeps optima whose σ is too
small from rewarding the most flexible law. The error scale being known, there is no
small-sample term for it: AICc's, with five or six batch sizes, would rule out every
two-parameter law whatever the data.

The prediction at B is the weighted median of ln η over every law's draws, its interval their
weighted 5% and 95% quantiles: a mixture, so laws the data cannot tell apart (saturating and
surge past the measured range) and each law's parameter spread both widen it, the more the
further out. The recommended learning rate is that median, capped at the lower end of the
stability edge's interval at B (:func:`lrbatch.science.edge.edge_at`: a learning rate known, or
predicted with 95% confidence, to train without diverging) and at half the edge itself: close
under the edge, training is erratic (a learning rate that trained with one seed may diverge
with another), and an optimum is rarely there.

Past the largest measured batch size B_max the edge's laws (power, saturating) cannot fall,
but the edge can: with Adam and sign-like optimizers a larger batch shrinks the second-moment
estimate, which raises every step for the same learning rate (the mechanism of the surge;
Li et al. 2024, arXiv:2405.14578), and the benchmark's surge truths whose peak lies at or past
B_max put the edge 4–8× out below where the laws extrapolate it. So there the edge's lower end
is taken no higher than its lower end at B_max times the optimum's pessimistic growth from
B_max to B: the 5% quantile, over the laws' bootstrap draws, of η_opt(B) / η_opt(B_max) along
each draw. The edge grows with the optimum where the laws agree that it grows (linear,
saturating well inside the range) and falls with it where a surge past B_max is possible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from lrbatch.science.edge import LOWER_BOUND, EdgeEstimate, EdgeFit, edge_at
from lrbatch.science.lawfit import log_sigma, usable_optima
from lrbatch.science.laws import LAWS, PARAMETERS, bootstrap_log_law, log_law
from lrbatch.science.optima import BatchOptimum
from lrbatch.science.rules import RULE_NAMES, predict

__all__ = ["LawDraws", "Prediction", "law_draws", "predict_at"]

_QUANTILES = (0.5, 0.05, 0.95)  # the median and a 90% interval
EDGE_MARGIN = 0.5  # the recommendation stays at or below this fraction of the stability edge
_SCALED = {"saturating": "b_noise", "surge": "b_peak"}  # the laws with a batch scale
_MIXED = 0.05  # a law with at least this Akaike weight is named as mixed in


@dataclass(frozen=True)
class LawDraws:
    """One law fitted to the optima, with its bootstrap draws and its Akaike weight.

    Attributes:
        law: one of :data:`lrbatch.science.laws.LAWS`.
        theta: fitted parameters (see :func:`lrbatch.science.laws.log_law`).
        draws: ``(n_boot, len(theta))`` parametric-bootstrap refits.
        log_b_ref: ln B_ref of the power laws: the mean ln B of the fitted optima.
        chi2: Σ ((ln η_opt − law) / σ)².
        weight: Akaike weight among the laws fitted (they sum to 1).
    """

    law: str
    theta: np.ndarray
    draws: np.ndarray
    log_b_ref: float
    chi2: float
    weight: float

    def log_lr(self, batches: np.ndarray, theta: np.ndarray | None = None) -> np.ndarray:
        """ln η at ``batches``: of the fit, or of each row of ``theta`` (one row per draw)."""
        if theta is None:
            return log_law(self.law, self.theta, np.log(batches), self.log_b_ref)
        return log_law(self.law, theta.T[:, :, None], np.log(batches)[None, :], self.log_b_ref)


def law_draws(optima: Sequence[BatchOptimum], n_boot: int = 200, seed: int = 0) -> list[LawDraws]:
    """Fit and bootstrap every law the bracketed optima allow (one parameter fewer than
    optima), with their Akaike weights (module docstring).

    Args:
        optima: per-batch optima; only bracketed ones are fitted.
        n_boot: bootstrap draws per law.
        seed: seeds the bootstrap.

    Returns:
        One entry per law fitted, in the order of :data:`lrbatch.science.laws.LAWS`; empty with
        fewer than two bracketed optima.
    """
    usable = usable_optima(optima)
    n = len(usable)
    log_b = np.log([o.batch_size for o in usable])
    log_lr = np.log([o.lr_opt for o in usable])
    sigma = np.array([log_sigma(o) for o in usable])
    ref = float(log_b.mean()) if n else 0.0
    fitted = []
    for index, law in enumerate(L for L in LAWS if len(PARAMETERS[L]) <= n - 1):
        rng = np.random.default_rng([seed, index])
        theta, draws = bootstrap_log_law(law, log_b, log_lr, sigma, n_boot, rng, ref)
        chi2 = float(np.sum(((log_lr - log_law(law, theta, log_b, ref)) / sigma) ** 2))
        fitted.append((law, theta, draws, chi2))
    if not fitted:
        return []
    dispersion = [chi2 / (n - 2) for law, _, _, chi2 in fitted if len(PARAMETERS[law]) == 2]
    c_hat = max(1.0, min(dispersion, default=1.0))
    aic = np.array([chi2 / c_hat + 2 * len(PARAMETERS[law]) for law, _, _, chi2 in fitted])
    weights = np.exp(-(aic - aic.min()) / 2)
    return [
        LawDraws(law, theta, draws, ref, chi2, float(weight))
        for (law, theta, draws, chi2), weight in zip(fitted, weights / weights.sum(), strict=True)
    ]


@dataclass(frozen=True)
class Prediction:
    """The learning rate to use at one batch size.

    Attributes:
        batch_size: effective batch size.
        lr: the recommended learning rate: ``lr_laws``, capped at ``stability_edge_low``
            and at half ``stability_edge``.
        lr_laws: the laws' weighted median: the estimated optimum, before the cap.
        lr_low: lower end of the optimum's 90% interval (the laws' mixture).
        lr_high: upper end of it.
        law: the law with the largest weight.
        why: that law's weight and what else the value mixes in; the cap, if applied.
        capped: the laws' median lay above that cap and ``lr`` was lowered to it.
        stability_edge: the edge at this batch size (:class:`lrbatch.science.edge.EdgeEstimate`'s
            ``lr``); None when nothing is known.
        stability_edge_low: lower end of the edge's interval.
        stability_edge_high: upper end (inf when only a lower bound is known).
        stability_edge_source: ``"measured"``, ``"fitted"`` or ``"lower bound"``.
        extrapolation_octaves: how far outside the fitted batch sizes: log2(B / B_max) above,
            log2(B_min / B) below, 0 inside.
        laws: per law fitted: ``{"lr", "weight", "above_edge"}``; ``above_edge`` when its lr
            is at or above ``stability_edge_low`` (it may diverge).
        rules: per rule anchored at the base point: ``{"lr", "above_edge"}``.
        scales: per law with a batch scale (saturating: ``b_noise``, surge: ``b_peak``) and
            weight ≥ 5%: ``{"parameter", "value", "low", "high", "weight"}``, the scale and the
            5% and 95% quantiles of its bootstrap draws.
        scale_identified: False when a batch size past the measured ones is asked for and a
            scale's interval reaches the largest measured batch size: where the optimum stops
            growing (or starts falling) is then not known, and the laws part past it.
        warnings: what a user must know before using ``lr``, in plain words.
    """

    batch_size: int
    lr: float
    lr_laws: float
    lr_low: float
    lr_high: float
    law: str
    why: str
    capped: bool
    stability_edge: float | None
    stability_edge_low: float | None
    stability_edge_high: float | None
    stability_edge_source: str | None
    extrapolation_octaves: float
    laws: dict[str, dict[str, Any]]
    rules: dict[str, dict[str, Any]]
    scales: dict[str, dict[str, Any]]
    scale_identified: bool
    warnings: tuple[str, ...]


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray) -> list[float]:
    """The ``_QUANTILES`` of ``values`` (one column) under ``weights``."""
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    positions = np.searchsorted(cumulative / cumulative[-1], _QUANTILES)
    return [float(values[order][min(k, len(values) - 1)]) for k in positions]


def _scales(fits: Sequence[LawDraws]) -> dict[str, dict[str, Any]]:
    """The batch scales of the laws that have one (B_noise, B_peak), weight ≥ 5%."""
    scales = {}
    for f in fits:
        if f.law in _SCALED and f.weight >= _MIXED:
            low, high = np.exp(np.quantile(f.draws[:, 1], [0.05, 0.95]))
            value = float(np.exp(f.theta[1]))
            parameter = _SCALED[f.law]
            scales[f.law] = {"parameter": parameter, "value": value, "low": float(low)}
            scales[f.law] |= {"high": float(high), "weight": f.weight}
    return scales


def _flag(lr: float, edge: EdgeEstimate | None) -> bool:
    return edge is not None and lr >= edge.low


def predict_at(
    optima: Sequence[BatchOptimum],
    batches: Sequence[int],
    edge: EdgeFit | None,
    base_batch: int | None = None,
    base_lr: float | None = None,
    rules: Sequence[str] = RULE_NAMES,
    b_noise: float | None = None,
    n_boot: int = 200,
    eps_max: float | None = None,
    seed: int = 0,
) -> list[Prediction]:
    """The recommended learning rate at each of ``batches``, with the evidence (module
    docstring).

    Args:
        optima: per-batch optima (:func:`lrbatch.science.analysis.batch_optima`).
        batches: effective batch sizes to predict for.
        edge: the stability edge's law (:func:`lrbatch.science.edge.fit_edge`), or None.
        base_batch: B0 of the rules' base point (rules are left out without it).
        base_lr: η0, the learning rate the rules are anchored at.
        rules: rule names (:data:`lrbatch.science.rules.RULE_NAMES`).
        b_noise: B_noise for the saturating, surge and measured rules, in samples.
        n_boot: bootstrap draws per law.
        seed: seeds the bootstrap.
        eps_max: ε_max of the measured rule.

    Returns:
        One prediction per batch size, in the order given.

    Raises:
        ValueError: a batch size that is not positive, or fewer than two bracketed optima.
    """
    for batch in batches:
        if not batch > 0:
            raise ValueError(f"batch size {batch!r}: accepted: a positive effective batch size")
    fits = law_draws(optima, n_boot, seed)
    if not fits:
        bracketed = len(usable_optima(optima))
        raise ValueError(
            f"{bracketed} of {len(optima)} batch sizes bracketed their optimum: a prediction "
            "needs a law, and a law needs at least 2"
        )
    measured = [o.batch_size for o in usable_optima(optima)]
    b_max = max(measured)
    targets = np.array([*batches, b_max], dtype=float)
    draws = np.concatenate([f.log_lr(targets, f.draws) for f in fits])
    weights = np.concatenate([np.full(len(f.draws), f.weight / len(f.draws)) for f in fits])
    edge_at_max = edge_at(b_max, optima, edge)
    predictions = []
    for j, batch in enumerate(batches):
        median, low, high = np.exp(_weighted_quantiles(draws[:, j], weights))
        edge_here = edge_at(batch, optima, edge)
        held = False  # past B_max, the edge lowered to the optimum's pessimistic growth
        if batch > b_max and edge_here is not None and edge_at_max is not None:
            growth = _weighted_quantiles(draws[:, j] - draws[:, -1], weights)[1]
            bounded = _no_faster_than(edge_here, edge_at_max.low * math.exp(growth))
            held, edge_here = bounded != edge_here, bounded
        anchored = (
            {}
            if base_lr is None or base_batch is None
            else predict(base_lr, base_batch, batch, rules, b_noise, eps_max)
        )
        here = next((o for o in optima if o.batch_size == batch), None)
        prediction = _prediction(
            batch,
            (median, low, high),
            fits,
            edge_here,
            (min(measured), b_max),
            anchored,
            here,
        )
        if held and edge_here is not None:
            note = (
                f"past B = {b_max} the stability edge is taken to grow no faster than the "
                f"optimum may (its 5% quantile from B = {b_max}): its lower end here is held at "
                f"{edge_here.low:.3g}, not the edge laws' extrapolation; with Adam or a sign-like "
                "optimizer the edge can fall as the batch grows"
            )
            prediction = replace(prediction, warnings=(*prediction.warnings, note))
        predictions.append(prediction)
    return predictions


def _no_faster_than(edge: EdgeEstimate, bound: float) -> EdgeEstimate:
    """``edge`` past B_max with its lower end (and its value) held at or below ``bound``: the
    lower end at B_max times the optimum's pessimistic growth (module docstring)."""
    if edge.low <= bound:
        return edge
    return replace(edge, low=bound, lr=edge.lr * bound / edge.low)


def _prediction(
    batch: int,
    interval: tuple[float, float, float],
    fits: list[LawDraws],
    edge: EdgeEstimate | None,
    measured: tuple[int, int],
    anchored: dict[str, float],
    here: BatchOptimum | None,
) -> Prediction:
    """One :class:`Prediction` from the laws' mixture at ``batch``, the edge there, the fitted
    batch sizes' range, the rules' values and the optimum measured at ``batch`` (if any)."""
    median, low, high = interval
    octaves = max(math.log2(batch / measured[1]), math.log2(measured[0] / batch), 0.0)
    ranked = sorted(fits, key=lambda f: -f.weight)
    cap = math.inf if edge is None else min(edge.low, EDGE_MARGIN * edge.lr)
    lr = min(median, cap)
    capped = lr < median
    laws = {}
    for f in fits:
        lr_law = float(np.exp(f.log_lr(np.array([float(batch)]))[0]))
        laws[f.law] = {"lr": lr_law, "weight": f.weight, "above_edge": _flag(lr_law, edge)}
    rules = {name: {"lr": r, "above_edge": _flag(r, edge)} for name, r in anchored.items()}
    mixed = [f"{f.law} {f.weight:.0%}" for f in ranked[1:] if f.weight >= _MIXED]
    why = (
        f"{ranked[0].law} carries {ranked[0].weight:.0%} of the weight of the laws fitted "
        "(Akaike weights of their χ² with the optima's own σ)"
        + (f"; the value and interval also mix in {', '.join(mixed)}" if mixed else "")
    )
    if here is not None:
        why += (
            f"; measured at this batch size: {here.lr_opt:.3g} "
            f"(90% {here.lr_low:.3g}–{here.lr_high:.3g})"
        )
    warnings = []
    if octaves > 0:
        side = "above the largest" if batch > measured[1] else "below the smallest"
        warnings.append(
            f"B = {batch} is {octaves:.1f} octaves {side} batch size measured "
            f"({measured[1] if batch > measured[1] else measured[0]}): every law is "
            "extrapolated there; the interval says how far to trust it"
        )
    scales = _scales(fits)
    unpinned = [
        f"{s['parameter']} of {law} ({s['weight']:.0%} weight) {s['low']:.3g}–{s['high']:.3g}"
        for law, s in scales.items()
        if s["high"] >= measured[1]
    ]
    identified = batch <= measured[1] or not unpinned
    if not identified:
        spread = ", ".join(f"{name} {e['lr']:.3g}" for name, e in laws.items())
        warnings.append(
            f"the batch scale is not pinned: 90% {'; '.join(unpinned)} reaches the largest "
            f"batch size measured ({measured[1]}), so where the optimum stops growing, or "
            f"starts to fall, is not known; at B = {batch} the laws say {spread}: measure a "
            f"batch size past {measured[1]} before trusting this"
        )
    if edge is None:
        warnings.append(f"no stability edge is known at B = {batch}: lr is not capped by it")
    elif capped:
        why += f"; capped at {cap:.3g}, below the stability edge {edge.lr:.3g} ({edge.source})"
        warnings.append(
            f"the laws put the optimum at {median:.3g}, too close to the stability edge "
            f"{edge.lr:.3g} ({edge.source}, interval from {edge.low:.3g}): lr is capped at "
            f"{cap:.3g}, the lower of the interval's end and half the edge"
        )
    elif edge.source == LOWER_BOUND:
        warnings.append(
            f"the stability edge at B = {batch} is known only to lie above {edge.low:.3g}, the "
            "highest lr that trained at a batch size up to this one, assuming the edge does "
            "not fall as the batch grows"
        )
    risky = [
        f"{kind} {name} {e['lr']:.3g}"
        for kind, entries in (("law", laws), ("rule", rules))
        for name, e in entries.items()
        if e["above_edge"]
    ]
    if edge is not None and risky:
        warnings.append(
            f"MAY DIVERGE: {', '.join(risky)} at or above the stability edge's lower end "
            f"{edge.low:.3g} ({edge.source})"
        )
    return Prediction(
        batch_size=batch,
        lr=float(lr),
        lr_laws=float(median),
        lr_low=float(low),
        lr_high=float(high),
        law=ranked[0].law,
        why=why,
        capped=bool(capped),
        stability_edge=None if edge is None else edge.lr,
        stability_edge_low=None if edge is None else edge.low,
        stability_edge_high=None if edge is None else edge.high,
        stability_edge_source=None if edge is None else edge.source,
        extrapolation_octaves=octaves,
        laws=laws,
        rules=rules,
        scales=scales,
        scale_identified=identified,
        warnings=tuple(warnings),
    )
