"""The per-batch optimum and its 90% interval, checked against synthetic sweeps whose answer is
known, run by the real plan (the fast version of benchmarks/calibration.py)."""

import math

import numpy as np
import pytest

from lrbatch.science import rules
from lrbatch.science.analysis import TrialPoint, batch_optima
from lrbatch.search.calibration import Landscape, calibrate, simulate
from lrbatch.search.plan import SweepPlan

PLAN = SweepPlan(
    batch_sizes=(16, 128, 1024),
    base_batch=16,
    lr_min=1e-3,
    lr_max=30.0,
    tolerance=1.4,
    seeds=3,
    laws=(),
)
TRUTHS = {
    "saturating": lambda b: rules.saturating(b, 2.0, 256.0),
    "surge": lambda b: rules.surge(b, 0.01, 128.0),
}


def test_the_planted_optimum_is_the_minimum_of_the_seed_averaged_curve() -> None:
    landscape = Landscape(TRUTHS["surge"], skew=2.0, seed_shift=0.15)
    shifts = np.random.default_rng(0).normal(0.0, 0.15, size=20_000)
    x = np.linspace(-0.3, 0.3, 601)
    mean_loss = [np.mean(landscape.loss(v - shifts)) for v in x]
    found = math.exp(x[int(np.argmin(mean_loss))]) * landscape.optimum(128)
    assert found == pytest.approx(landscape.true_optimum(128), rel=2e-3)
    assert landscape.true_optimum(128) < landscape.optimum(128)  # skewed: a little lower


def test_a_landscape_diverges_above_its_edge_and_pairs_seeds() -> None:
    landscape = Landscape(TRUTHS["saturating"], trial_noise=0.0)
    edge = landscape.edge * landscape.optimum(64)
    rng = np.random.default_rng(0)
    assert landscape.trial(64, edge * 1.01, 0, 0, rng) == (math.inf, True)
    below, diverged = landscape.trial(64, edge * 0.99, 0, 0, rng)
    assert math.isfinite(below) and not diverged
    # a seed's offset is shared by its trials: the same seed, world and lr gives the same value
    assert landscape.trial(64, 0.1, 1, 3, rng) == landscape.trial(64, 0.1, 1, 3, rng)
    assert landscape.trial(64, 0.1, 1, 3, rng) != landscape.trial(64, 0.1, 2, 3, rng)


@pytest.mark.parametrize("truth", TRUTHS)
def test_optima_are_accurate_and_their_intervals_calibrated(truth: str) -> None:
    result = calibrate(PLAN, Landscape(TRUTHS[truth]), repeats=40)
    assert len(result.errors) == 40 * 3  # every batch size bracketed its optimum
    # accurate: nearly all within 0.1 decade, and better than the best tried lr
    assert result.within(0.1) >= 0.95
    assert np.median(result.errors) < 0.75 * np.median(result.best_errors)
    assert np.quantile(result.errors, 0.9) <= np.quantile(result.best_errors, 0.9)
    # calibrated: a 90% interval contains the truth about nine times in ten (120 intervals:
    # binomial sd 0.03), and a rerun with other trial noise mostly lands inside it
    assert 0.8 <= result.coverage <= 0.97
    assert np.mean(result.rerun_inside) >= 0.8
    assert np.median(result.widths) < 0.3  # decades: not calibrated by being useless


def test_noisier_trials_widen_the_interval_rather_than_miss() -> None:
    quiet = calibrate(PLAN, Landscape(TRUTHS["surge"]), repeats=15, reruns=False)
    noisy = calibrate(
        PLAN, Landscape(TRUTHS["surge"], trial_noise=0.03, seed_shift=0.15), 15, reruns=False
    )
    assert np.median(noisy.widths) > 1.3 * np.median(quiet.widths)
    assert noisy.coverage >= 0.8


def test_a_point_just_below_the_edge_does_not_drag_the_optimum() -> None:
    # the best level's upper neighbour sits just under the divergence edge, where the loss
    # climbs steeply: it must not pull the vertex down
    def loss(lr: float) -> float:
        x = math.log(lr / 0.1)
        return 1.0 + 0.1 * x**2 + (5.0 * (x - 0.3) ** 2 if x > 0.3 else 0.0)

    lrs = (0.05, 0.07, 0.1, 0.14, 0.2)
    points = [TrialPoint(64, lr, seed, loss(lr) + 0.001 * seed) for lr in lrs for seed in range(3)]
    points += [TrialPoint(64, 0.25, seed, math.inf, diverged=True) for seed in range(3)]
    (optimum,) = batch_optima(points)
    assert abs(math.log10(optimum.lr_opt / 0.1)) < 0.03
    assert optimum.stability_edge == 0.25 and optimum.stable_lr == 0.2


def test_simulated_sweeps_are_repeatable_and_a_rerun_differs_only_by_trial_noise() -> None:
    landscape = Landscape(TRUTHS["saturating"])
    first = simulate(PLAN, landscape, world=2)
    assert simulate(PLAN, landscape, world=2) == first
    rerun = simulate(PLAN, landscape, world=2, noise_seed=1)
    assert rerun != first
    assert {(p.batch_size, p.seed) for p in rerun} == {(p.batch_size, p.seed) for p in first}
