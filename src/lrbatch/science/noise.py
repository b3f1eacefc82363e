"""The gradient noise scale B_simple and the curvature step ε_max (docs/science.md, *Gradient
noise scale*; McCandlish et al. 2018, arXiv:1812.06162, appendix A).

B_simple = tr(Σ) / |G|², in samples: G is the expected per-example gradient, Σ the covariance
of per-example gradients. Both come from squared gradient norms at two batch sizes taken at the
same parameters: the gradients of the pieces of a batch (micro-batches, or two halves) against
the whole batch's gradient, which is their size-weighted mean. Each piece's and each batch's
loss is the *mean* over its examples, so |G_B|² has expectation |G|² + tr(Σ)/B.

One measurement (:class:`GradientPair`) gives unbiased but noisy estimates of |G|² and tr(Σ);
:func:`combine` averages each separately over several measurements, then divides.

ε_max = |G|² / (Gᵀ H G) is the best step along the full-batch gradient on the local quadratic
(H: the Hessian of the mean loss), one Hessian-vector product (double backward). McCandlish et
al.'s SGD optimum at batch B is then ε_opt(B) = ε_max / (1 + B_noise/B), B_noise ≈ B_simple
(:func:`sgd_optimum`).

This module holds the estimator, on numbers (no torch: the report reads it). Two places
measure, in :mod:`lrbatch.training.gradient_noise`, and both hand their norms to it:

- :func:`lrbatch.training.gradient_noise.measure`, at fixed parameters, from a model's loss on given
  batches (used by ``lrbatch noise-scale``; usable on any model);
- :class:`lrbatch.training.gradient_noise.TrialNoise`, inside every trial's training loop, from the
  gradients the step computes anyway.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lrbatch.science.rules import saturating

__all__ = [
    "CURVE_POINTS",
    "MEASURED_FRACTION",
    "POINTS",
    "WINDOW_STEPS",
    "GradientPair",
    "NoiseEstimate",
    "NoiseRecord",
    "combine",
    "gradient_pair",
    "piece_sizes",
    "sgd_optimum",
    "window_steps",
]

WINDOW_STEPS = 4  # optimizer steps each recorded point of a trial averages over (at most)
MEASURED_FRACTION = 0.1  # of a trial's steps, at most, that measure (shorter windows if need be)
POINTS = {"start": 0.0, "10%": 0.1, "50%": 0.5, "end": 1.0}  # where, as a fraction of the steps
CURVE_POINTS = 32  # gradient-norm curve: steps recorded, evenly spaced, first and last included


@dataclass(frozen=True)
class GradientPair:
    """One measurement: squared gradient norms at two batch sizes, at the same parameters.

    Attributes:
        batch_small: examples per small batch (piece); with pieces of unequal size, the harmonic
            mean of their sizes (E mean_i |g_i|² = |G|² + tr(Σ)·mean_i(1/b_i)).
        batch_big: examples in the whole batch, the pieces together.
        grad_sq_small: mean over the pieces of |g_i|², each the gradient of its mean loss.
        grad_sq_big: |G_B|², the gradient of the whole batch's mean loss.
    """

    batch_small: float
    batch_big: float
    grad_sq_small: float
    grad_sq_big: float

    @property
    def grad_sq(self) -> float:
        """Unbiased estimate of |G|²: (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)."""
        big, small = self.batch_big, self.batch_small
        return (big * self.grad_sq_big - small * self.grad_sq_small) / (big - small)

    @property
    def trace_sigma(self) -> float:
        """Unbiased estimate of tr(Σ): (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)."""
        return (self.grad_sq_small - self.grad_sq_big) / (1 / self.batch_small - 1 / self.batch_big)


@dataclass(frozen=True)
class NoiseEstimate:
    """The noise scale at some parameters, from ``steps`` measurements averaged.

    Attributes:
        b_simple: tr(Σ)/|G|², in samples (examples); nan where the averaged |G|² is not positive
            (the gradient is not resolved from its noise by these measurements).
        grad_sq: |G|², the squared norm of the expected gradient of the mean loss (averaged
            unbiased estimates; may come out negative where noise dominates).
        trace_sigma: tr(Σ), the trace of the per-example gradient covariance (averaged).
        eps_max: |G|²/(GᵀHG), the best step along G on the local quadratic, per optimizer step;
            nan where not measured (trials do not measure it).
        steps: measurements averaged (optimizer steps in a trial; batches in :func:`measure`).
    """

    b_simple: float
    grad_sq: float
    trace_sigma: float
    eps_max: float
    steps: int

    @property
    def grad_norm(self) -> float:
        """|G|, the norm of the expected (full-batch) gradient; nan where |G|² is not positive."""
        return math.sqrt(self.grad_sq) if self.grad_sq > 0 else math.nan


def combine(pairs: Sequence[GradientPair], eps_max: float = math.nan) -> NoiseEstimate:
    """Average the |G|² and tr(Σ) estimates of ``pairs`` separately, then take their ratio.

    Measurements that are not finite (an overflowed float16 step) are left out.
    """
    finite = [p for p in pairs if math.isfinite(p.grad_sq_small) and math.isfinite(p.grad_sq_big)]
    if not finite:
        return NoiseEstimate(math.nan, math.nan, math.nan, eps_max, 0)
    grad_sq = sum(p.grad_sq for p in finite) / len(finite)
    trace_sigma = sum(p.trace_sigma for p in finite) / len(finite)
    b_simple = trace_sigma / grad_sq if grad_sq > 0 else math.nan
    return NoiseEstimate(b_simple, grad_sq, trace_sigma, eps_max, len(finite))


def sgd_optimum(estimate: NoiseEstimate, batch_size: int) -> float:
    """McCandlish et al.'s SGD optimum ε_opt(B) = ε_max / (1 + B_noise/B), B_noise ≈ B_simple;
    nan where ε_max is not positive (the loss curves down along G there: the local quadratic
    has no minimum along it, early in training or where two batches disagree) or B_simple is
    not, and where either is infinite."""
    if not (0 < estimate.eps_max < math.inf and 0 < estimate.b_simple < math.inf):
        return math.nan
    return saturating(batch_size, estimate.eps_max, estimate.b_simple)


def window_steps(max_steps: int) -> int:
    """Steps per recorded point of a trial of ``max_steps`` steps: :data:`WINDOW_STEPS`, fewer
    where the four windows would measure more than :data:`MEASURED_FRACTION` of the steps
    (at least 1)."""
    return min(WINDOW_STEPS, max(1, round(MEASURED_FRACTION * max_steps / len(POINTS))))


def piece_sizes(batch: int, parts: int) -> list[int]:
    """Sizes of the consecutive pieces ``Tensor.split`` cuts a batch into, to get ``parts``:
    ceil(batch/parts) examples each, the last one smaller (at most ``parts`` pieces)."""
    size = math.ceil(batch / parts)
    return [min(size, batch - start) for start in range(0, batch, size)]


def gradient_pair(sizes: Sequence[int], piece_sq: Sequence[float], big_sq: float) -> GradientPair:
    """The measurement from each piece's |g_i|² (pieces of ``sizes`` examples) and |G_B|²."""
    harmonic = len(sizes) / sum(1 / s for s in sizes)
    return GradientPair(harmonic, sum(sizes), sum(piece_sq) / len(piece_sq), big_sq)


@dataclass(frozen=True)
class NoiseRecord:
    """B_simple at one point of a trial (its ``noise_scale`` user attribute holds these).

    Attributes:
        point: ``start``, ``10%``, ``50%`` or ``end`` of the trial's planned steps.
        first_step: the window's first optimizer step (1-based); each measured step's gradient
            is taken at the parameters before that step's update.
        last_step: its last step (a run that stopped early may have a shorter window).
        samples: examples trained on before the window's middle step.
        estimate: the window's averages (``steps``: steps averaged; ``eps_max`` nan).
    """

    point: str
    first_step: int
    last_step: int
    samples: int
    estimate: NoiseEstimate
