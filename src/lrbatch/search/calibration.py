"""Synthetic sweeps whose answer is known: how far lrbatch's optima are off, and how often
their 90% intervals contain the truth.

A :class:`Landscape` is a metric against learning rate at every batch size with a planted
optimum, shaped like real ones: in x = ln(η/η_opt), the loss rises like c·(e^{κx} − 1 − κx)/κ²
(curvature c at the optimum; gently, about linearly in x, towards small learning rates;
exponentially towards large ones) and the run diverges past ``edge`` × η_opt. Each seed adds
an offset shared by all its trials (initial weights and data order are paired across learning
rates) and shifts its own optimum a little (a seed's best learning rate is not the
population's); each trial adds independent noise (thread counts and float reductions).

:func:`simulate` runs the real sweep plan (:class:`lrbatch.search.plan.SweepPlan`) against a
landscape, one trial at a time as one worker would, and :func:`calibrate` repeats that and
measures :func:`lrbatch.science.analysis.batch_optima` against the truth.
``benchmarks/calibration.py`` prints the table; ``tests/test_calibration.py`` runs a fast version.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lrbatch.science import BatchOptimum, TrialPoint, batch_optima
from lrbatch.search.decisions import Finished, Observation, Proposal
from lrbatch.search.plan import SweepPlan

__all__ = ["Calibration", "Landscape", "Sweeps", "calibrate", "score", "simulate", "sweeps"]


@dataclass(frozen=True)
class Landscape:
    """A synthetic metric (a loss) with a known optimal learning rate at every batch size.

    Attributes:
        optimum: η_opt(B) of a seed with no shift (the population's optimum is a little
            lower on a skewed curve: :meth:`true_optimum`).
        curvature: c, the loss's second derivative in ln η at the optimum.
        skew: κ, how much faster the loss rises above the optimum than below (0: a parabola).
        edge: a learning rate above ``edge`` × η_opt(B) diverges.
        trial_noise: standard deviation of each trial's independent noise.
        seed_offset: standard deviation of a seed's offset, shared by its trials at one batch.
        seed_shift: standard deviation, in ln η, of a seed's own optimum about the population's.
        noise_growth: trial noise grows as (B / 16)^noise_growth (short runs at large batch
            sizes are noisier).
    """

    optimum: Callable[[float], float]
    curvature: float = 0.2
    skew: float = 1.5
    edge: float = 4.0
    trial_noise: float = 0.01
    seed_offset: float = 0.03
    seed_shift: float = 0.08
    noise_growth: float = 0.0

    def true_optimum(self, batch: float) -> float:
        """The optimum of the seed-averaged curve: with seed shifts δ ~ N(0, s²) the mean of
        e^{κ(x−δ)} is e^{κx + κ²s²/2}, which moves its minimum to x = −κ s²/2."""
        return self.optimum(batch) * math.exp(-self.skew * self.seed_shift**2 / 2)

    def loss(self, x: np.ndarray | float) -> np.ndarray | float:
        """The noiseless loss above its minimum at x = ln(η/η_opt)."""
        if self.skew == 0:
            return self.curvature * np.square(x) / 2
        k = self.skew
        return self.curvature * (np.exp(k * np.asarray(x)) - 1 - k * np.asarray(x)) / k**2

    def trial(
        self, batch: int, lr: float, seed: int, world: int, rng: np.random.Generator
    ) -> tuple[float, bool]:
        """(metric, diverged) of one trial. ``world`` fixes every seed's offset and shift (one
        repeat of the experiment); ``rng`` draws the trial's own noise."""
        seed_rng = np.random.default_rng([world, batch, seed])
        offset, shift = seed_rng.normal(size=2) * (self.seed_offset, self.seed_shift)
        if lr > self.edge * self.optimum(batch):
            return math.inf, True
        x = math.log(lr / self.optimum(batch)) - shift
        noise = self.trial_noise * (batch / 16) ** self.noise_growth * rng.normal()
        return 1 / math.sqrt(batch) + offset + float(self.loss(x)) + noise, False


def simulate(
    plan: SweepPlan, landscape: Landscape, world: int, noise_seed: int = 0
) -> list[TrialPoint]:
    """Run ``plan`` against ``landscape`` until it finishes; every trial, as a study holds it.

    Args:
        plan: the sweep plan (minimizing).
        landscape: the truth.
        world: fixes the seeds' offsets and shifts.
        noise_seed: fixes the trials' own noise (another value: the same sweep rerun with other
            thread counts).
    """
    rng = np.random.default_rng([world, noise_seed, 7])
    observations: list[Observation] = []
    while not isinstance(decision := plan.next(observations), Finished):
        assert isinstance(decision, Proposal), decision  # one worker never waits
        value, diverged = landscape.trial(
            decision.batch_size, decision.lr, decision.seed, world, rng
        )
        observations.append(
            Observation(
                decision.batch_size, decision.lr, decision.seed, value, diverged, decision.reason
            )
        )
    return [
        TrialPoint(o.batch_size, o.lr, o.seed, math.nan if o.value is None else o.value, o.diverged)
        for o in observations
    ]


@dataclass(frozen=True)
class Calibration:
    """Errors and coverage over repeated synthetic sweeps (errors in decades, log10).

    Attributes:
        errors: |log10(estimate / truth)| of every bracketed optimum.
        best_errors: the same for the best tried learning rate (the estimate to beat).
        covered: whether each 90% interval contained the truth.
        rerun_inside: whether the same sweep rerun with fresh trial noise (same seeds) put its
            estimate inside the first run's 90% interval.
        widths: width of each 90% interval, in decades.
        trials: trials per sweep.
    """

    errors: np.ndarray
    best_errors: np.ndarray
    covered: np.ndarray
    rerun_inside: np.ndarray
    widths: np.ndarray
    trials: np.ndarray

    def within(self, decades: float) -> float:
        """Fraction of estimates within ``decades`` of the truth."""
        return float(np.mean(self.errors <= decades))

    @property
    def coverage(self) -> float:
        return float(np.mean(self.covered))


Sweeps = list[tuple[list[TrialPoint], list[TrialPoint]]]


def sweeps(plan: SweepPlan, landscape: Landscape, repeats: int, reruns: bool = True) -> Sweeps:
    """``repeats`` independent sweeps (worlds), each with its rerun under fresh trial noise
    (an empty list when ``reruns`` is False)."""
    return [
        (
            simulate(plan, landscape, world),
            simulate(plan, landscape, world, 1) if reruns else [],
        )
        for world in range(repeats)
    ]


def score(
    landscape: Landscape,
    runs: Sweeps,
    estimator: Callable[[Sequence[TrialPoint]], list[BatchOptimum]] = batch_optima,
) -> Calibration:
    """Score ``estimator`` against the truth on the bracketed optima of ``runs``."""
    errors, best, covered, inside, widths, trials = [], [], [], [], [], []
    for points, rerun in runs:
        again = {o.batch_size: o for o in estimator(rerun)} if rerun else {}
        trials.append(len(points))
        for o in estimator(points):
            if not o.bracketed:
                continue
            truth = landscape.true_optimum(o.batch_size)
            errors.append(abs(math.log10(o.lr_opt / truth)))
            best.append(abs(math.log10(o.best_lr_tried / truth)))
            covered.append(o.lr_low <= truth <= o.lr_high)
            widths.append(math.log10(o.lr_high / o.lr_low))
            if o.batch_size in again:
                inside.append(o.lr_low <= again[o.batch_size].lr_opt <= o.lr_high)
    return Calibration(*(np.array(v) for v in (errors, best, covered, inside, widths, trials)))


def calibrate(
    plan: SweepPlan,
    landscape: Landscape,
    repeats: int,
    estimator: Callable[[Sequence[TrialPoint]], list[BatchOptimum]] = batch_optima,
    reruns: bool = True,
) -> Calibration:
    """Repeat :func:`simulate` over ``repeats`` worlds and score ``estimator`` against the truth.

    Args:
        plan: the sweep plan.
        landscape: the truth.
        repeats: independent experiments (worlds).
        estimator: per-batch optima from trials (default :func:`batch_optima`).
        reruns: also rerun each sweep with fresh trial noise and check that its estimate lands
            inside the first run's interval.
    """
    return score(landscape, sweeps(plan, landscape, repeats, reruns), estimator)
