"""The theory tested: the gradient noise scale the trials measured against the batch scales the
laws fitted to the swept optima.

McCandlish et al. 2018 (arXiv:1812.06162) put the SGD optimum at ε_max / (1 + B_noise/B) and
B_noise ≈ B_simple = tr(Σ)/|G|², measurable from gradients alone; Li et al. 2024
(arXiv:2405.14578) put the peak of Adam's and sign-based optimizers' optimum at B_peak ≈
B_noise. A sweep fits B_noise (saturating law) and B_peak (surge law) to the optima; every
trial measured B_simple along its run (:mod:`lrbatch.science.noise`, user attribute
``noise_scale``). Here the two meet.

*Measured.* Only trials near their batch size's optimum are read (learning rate within
:data:`NEAR` of it, not diverged): the noise scale depends on where training goes, and the
theory is about the trajectory of the optimal learning rate. At each recorded point of the
runs (start, 10%, 50%, end of the planned steps) the trials' |G|² and tr(Σ) estimates are
averaged separately (each is unbiased; their ratio is not) and B_simple is the ratio of the
averages; its 90% interval is Fieller's for a ratio of means, over trials (the trial is the
independent unit): a bootstrap of the ratio covered a known B_simple 58% of the time where
|G|² is barely resolved (B_simple ≫ the batch), Fieller's 92% (tests/test_theory.py).
B_simple grows as training goes on (the gradient shrinks faster than its noise), so the
comparison uses its span from the 10% point to the end, the lower end of the lowest interval
to the upper end of the highest: at initialization B_simple says little.

*Compared.* A fitted batch scale is set against B_simple at each point from 10% of the run
on: whether its 90% interval overlaps the point's, and by what factor it differs. It *agrees*
when it overlaps B_simple at mid-training (the 50% point): B_simple grows by orders of
magnitude over a run (×40 to ×100 from 10% to the end on the surge sweeps), so agreeing with
some point of the run would let almost any scale agree; the text says which points it matches.
A saturating or surge fit that scored as one of its limits (``LawFit.limit_exponent``: its
batch scale is not identified) is compared too, but said to be unidentified. The critical
batch of a target budget (:class:`lrbatch.science.analysis.CriticalBatch`) is one more batch scale,
compared alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import t as student_t

from lrbatch.science.analysis import CriticalBatch
from lrbatch.science.lawfit import LawFit
from lrbatch.science.noise import POINTS, NoiseRecord
from lrbatch.science.optima import BatchOptimum

__all__ = [
    "NEAR",
    "Comparison",
    "MeasuredNoise",
    "NoisePoint",
    "compare",
    "fieller",
    "measured_noise",
    "theory_text",
]

NEAR = 2.0  # trials within this factor of their batch size's optimum are read
_SCALES = {"saturating": "b_noise", "surge": "b_peak"}  # fitted laws with a batch scale


@dataclass(frozen=True)
class NoisePoint:
    """B_simple at one point of the runs, pooled over the trials read.

    Attributes:
        point: ``start``, ``10%``, ``50%`` or ``end`` of the planned steps.
        b_simple: mean tr(Σ) over mean |G|², in samples; inf where the mean |G|² is not
            positive (the gradient is not resolved from its noise).
        low: lower end of Fieller's 90% interval over trials.
        high: upper end (inf where the trials do not resolve |G|² from zero).
        trials: trials that recorded this point.
    """

    point: str
    b_simple: float
    low: float
    high: float
    trials: int


@dataclass(frozen=True)
class Comparison:
    """One fitted batch scale against the measured B_simple.

    Attributes:
        source: ``"saturating"``, ``"surge"`` or ``"critical batch"``.
        parameter: ``"b_noise"`` or ``"b_peak"``.
        fitted: the fitted value, in samples.
        low: lower end of its 90% interval.
        high: upper end.
        ratios: per point from ``10%`` on, fitted / B_simple there.
        matches: the points whose 90% interval overlaps the fitted one.
        agrees: it matches the mid-training (``50%``) point, or the last point before it
            where the run recorded no 50% point.
        identified: False for a law that scored as one of its limits (its scale is free).
    """

    source: str
    parameter: str
    fitted: float
    low: float
    high: float
    ratios: dict[str, float]
    matches: tuple[str, ...]
    agrees: bool
    identified: bool = True


@dataclass(frozen=True)
class MeasuredNoise:
    """The noise scale the trials near each optimum measured, and how the fits compare.

    Attributes:
        points: B_simple per recorded point, in the order of :data:`lrbatch.science.noise.POINTS`.
        span: (lowest low, highest high) over the points from ``10%`` on: the measured range.
        trials: trials read (each may have recorded several points).
        batch_sizes: their batch sizes.
        comparisons: each fitted batch scale against ``span`` (:func:`compare`).
    """

    points: tuple[NoisePoint, ...]
    span: tuple[float, float]
    trials: int
    batch_sizes: tuple[int, ...]
    comparisons: tuple[Comparison, ...] = ()


def _ratio(grad_sq: float, trace_sigma: float) -> float:
    return trace_sigma / grad_sq if grad_sq > 0 else math.inf


def fieller(
    numerator: np.ndarray, denominator: np.ndarray, level: float = 0.90
) -> tuple[float, float]:
    """Fieller's interval for mean(numerator) / mean(denominator), paired samples (Fieller
    1954): the ratios R with (t̄ − R ḡ)² ≤ q² var(t̄ − R ḡ), q the t quantile with n − 1
    degrees of freedom. Unbounded above (inf) where the denominator's mean is not resolved
    from zero at that level; (0, inf) where neither is."""
    n = len(numerator)
    if n < 2:
        return 0.0, math.inf
    t_mean, g_mean = float(numerator.mean()), float(denominator.mean())
    cov = np.cov(numerator, denominator) / n
    q2 = float(student_t.ppf(0.5 + level / 2, n - 1)) ** 2
    a = g_mean**2 - q2 * cov[1, 1]
    b = -2 * (t_mean * g_mean - q2 * cov[0, 1])
    c = t_mean**2 - q2 * cov[0, 0]
    if a <= 0:  # |G|² not resolved: the set is unbounded
        if g_mean > 0 and b * b - 4 * a * c > 0:
            return max(0.0, (-b - math.sqrt(b * b - 4 * a * c)) / (2 * a)), math.inf
        return 0.0, math.inf
    root = math.sqrt(max(b * b - 4 * a * c, 0.0))
    return max(0.0, (-b - root) / (2 * a)), (-b + root) / (2 * a)


def _pooled(point: str, records: Sequence[NoiseRecord]) -> NoisePoint:
    """B_simple at ``point`` from one record per trial, with Fieller's 90% interval."""
    grad_sq = np.array([r.estimate.grad_sq for r in records])
    trace = np.array([r.estimate.trace_sigma for r in records])
    low, high = fieller(trace, grad_sq)
    value = _ratio(float(grad_sq.mean()), float(trace.mean()))
    return NoisePoint(point, value, low, high, len(records))


def _later(points: Sequence[NoisePoint]) -> list[NoisePoint]:
    """The points from 10% of the run on (all of them where the run recorded only the start):
    at initialization B_simple says little."""
    return [p for p in points if p.point != "start"] or list(points)


def measured_noise(
    trials: Sequence[tuple[int, float, Sequence[NoiseRecord]]],
    optima: Sequence[BatchOptimum],
) -> MeasuredNoise | None:
    """B_simple along training, from the trials near each batch size's optimum.

    Args:
        trials: per finished, not diverged trial: (batch size, learning rate, its records).
        optima: per-batch optima (:func:`lrbatch.science.analysis.batch_optima`).

    Returns:
        None when no trial near an optimum recorded a finite point.
    """
    best = {o.batch_size: o.lr_opt for o in optima if math.isfinite(o.lr_opt)}
    near = [
        (batch, records)
        for batch, lr, records in trials
        if batch in best and 1 / NEAR <= lr / best[batch] <= NEAR and records
    ]
    points = []
    for point in POINTS:
        records = [
            r
            for _, rs in near
            for r in rs
            if r.point == point
            and math.isfinite(r.estimate.grad_sq)
            and math.isfinite(r.estimate.trace_sigma)
        ]
        if records:
            points.append(_pooled(point, records))
    later = _later(points)
    if not later:
        return None
    span = (min(p.low for p in later), max(p.high for p in later))
    batches = tuple(sorted({batch for batch, _ in near}))
    return MeasuredNoise(tuple(points), span, len(near), batches)


_MIDDLE = "50%"


def _comparison(
    source: str,
    parameter: str,
    value: float,
    interval: tuple[float, float],
    points: Sequence[NoisePoint],
    identified: bool,
) -> Comparison:
    low, high = float(interval[0]), float(interval[1])
    ratios = {p.point: float(value) / p.b_simple for p in points}
    matches = tuple(p.point for p in points if low <= p.high and high >= p.low)
    reference = next((p.point for p in points if p.point == _MIDDLE), points[-1].point)
    return Comparison(
        source,
        parameter,
        float(value),
        low,
        high,
        ratios,
        matches,
        reference in matches,
        identified,
    )


def compare(
    measured: MeasuredNoise, fits: Sequence[LawFit], critical: CriticalBatch | None = None
) -> MeasuredNoise:
    """``measured`` with its comparisons: each saturating or surge fit's batch scale, and the
    critical batch of a target budget, against B_simple at each point from 10% of the run on
    (module docstring)."""
    later = _later(measured.points)
    comparisons = []
    for fit in fits:
        parameter = _SCALES.get(fit.law)
        if parameter is None or parameter not in fit.params:
            continue
        interval = fit.intervals.get(parameter, (math.nan, math.nan))
        identified = fit.limit_exponent is None
        comparisons.append(
            _comparison(fit.law, parameter, fit.params[parameter], interval, later, identified)
        )
    if critical is not None and math.isfinite(critical.b_noise):
        comparisons.append(
            _comparison(
                "critical batch",
                "b_noise",
                critical.b_noise,
                critical.b_noise_interval,
                later,
                True,
            )
        )
    return MeasuredNoise(
        measured.points, measured.span, measured.trials, measured.batch_sizes, tuple(comparisons)
    )


def _scale_name(c: Comparison) -> str:
    symbol = {"b_noise": "B_noise", "b_peak": "B_peak"}[c.parameter]
    return (
        f"the critical batch's {symbol}"
        if c.source == "critical batch"
        else f"{c.source}'s {symbol}"
    )


def _times(ratio: float) -> str:
    if not math.isfinite(ratio) or ratio <= 0:
        return "against an unresolved B_simple"
    return f"×{ratio:.2g}" if ratio >= 1 else f"×1/{1 / ratio:.2g}"


def theory_text(measured: MeasuredNoise, supported: Sequence[str] = ()) -> str:
    """What the measurement says about the fits, in plain words: B_simple along the run, then
    per fitted batch scale which points it matches and whether it agrees at mid-training
    (laws the verdict supports first)."""
    values = ", ".join(f"{_point_value(p)} at {p.point}" for p in _later(measured.points))
    head = f"The gradients measured B_simple {values} ({measured.trials} trials near the optima)"
    ordered = sorted(measured.comparisons, key=lambda c: c.source not in supported)
    said = []
    for c in ordered:
        fitted = f"{_scale_name(c)} {c.fitted:.3g} ({c.low:.3g}–{c.high:.3g})"
        middle = c.ratios.get(_MIDDLE, next(iter(c.ratios.values()), math.nan))
        if not c.identified:
            said.append(f"{fitted} is not identified by the optima (it scored as a limit)")
        elif c.agrees:
            also = [m for m in c.matches if m != _MIDDLE]
            said.append(
                f"{fitted} agrees with mid-training's"
                + (f" (and with {', '.join(also)})" if also else "")
            )
        elif c.matches:
            said.append(
                f"{fitted} is {_times(middle)} mid-training's and matches only at "
                f"{' and '.join(c.matches)}: they disagree over most of the run"
            )
        else:
            said.append(
                f"{fitted} is {_times(middle)} mid-training's and matches no point: they disagree"
            )
    if not said:
        return head + "; no fitted law has a batch scale to compare it with."
    return head + "; " + "; ".join(said) + "."


def _point_value(p: NoisePoint) -> str:
    return f"{p.b_simple:.3g}" if math.isfinite(p.b_simple) else "unresolved"
