"""The measured noise scale against the fitted batch scales (lrbatch.science.theory): its interval
against a known B_simple, many repeats; which trials it reads; what it says about the fits."""

import math

import numpy as np
import pytest

from lrbatch.science.lawfit import LawFit
from lrbatch.science.noise import POINTS, NoiseRecord, combine, gradient_pair
from lrbatch.science.optima import BatchOptimum
from lrbatch.science.theory import NEAR, compare, measured_noise, theory_text

DIM = 16
PIECES = 4


def world(b_simple: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per-example gradients ~ N(G, diag(s²)) with tr(Σ)/|G|² = ``b_simple``."""
    mean = rng.normal(size=DIM)
    scales = rng.uniform(0.5, 2.0, size=DIM)
    scales *= math.sqrt(b_simple * float(mean @ mean) / float(scales @ scales))
    return mean, scales


def records(
    truth: tuple[np.ndarray, np.ndarray], batch: int, steps: int, rng: np.random.Generator
) -> tuple[NoiseRecord, ...]:
    """One trial's records: at each point, ``steps`` measurements of a batch of ``batch``
    examples cut into pieces, as a trial's training loop makes them."""
    mean, scales = truth
    out = []
    for point in POINTS:
        pairs = []
        for _ in range(steps):
            examples = mean + scales * rng.normal(size=(batch, DIM))
            pieces = np.split(examples, PIECES)
            piece_sq = [float(np.sum(p.mean(axis=0) ** 2)) for p in pieces]
            big_sq = float(np.sum(examples.mean(axis=0) ** 2))
            pairs.append(gradient_pair([batch // PIECES] * PIECES, piece_sq, big_sq))
        out.append(NoiseRecord(point, 1, steps, 0, combine(pairs)))
    return tuple(out)


def optimum(batch: int, lr: float) -> BatchOptimum:
    return BatchOptimum(
        batch_size=batch,
        lr_opt=lr,
        lr_low=lr / 1.3,
        lr_high=lr * 1.3,
        value_opt=0.0,
        best_lr_tried=lr,
        trials=10,
        seeds=3,
        diverged=0,
        stability_edge=None,
        bracketed=True,
        method="local quadratic",
        stable_lr=None,
    )


@pytest.mark.parametrize(("b_simple", "median_error"), [(20.0, 0.15), (200.0, 0.5)])
def test_measured_b_simple_and_its_interval_against_the_truth(
    b_simple: float, median_error: float
) -> None:
    # 300 sweeps of 12 trials near the optima (4 batch sizes × 3 seeds), 4 steps per point.
    # Measured: B_simple 20: coverage 0.92, median |ln error| 0.06; 200 (≫ every batch, |G|²
    # barely resolved): coverage 0.92, median |ln error| 0.37.
    covered, errors = [], []
    for repeat in range(300):
        rng = np.random.default_rng(repeat)
        truth = world(b_simple, rng)
        batches = (16, 32, 64, 128)
        optima = [optimum(b, 0.01 * b) for b in batches]
        trials = [(b, 0.01 * b, records(truth, b, 4, rng)) for b in batches for _ in range(3)]
        measured = measured_noise(trials, optima)
        assert measured is not None and measured.trials == 12
        assert [p.point for p in measured.points] == list(POINTS)
        for p in measured.points:
            covered.append(p.low <= b_simple <= p.high)
            errors.append(abs(math.log(p.b_simple / b_simple)))
    coverage = np.mean(covered)
    assert 0.84 <= coverage <= 0.96, coverage
    print(f"coverage {coverage:.3f}, median |ln error| {np.median(errors):.3f}")
    assert np.median(errors) < median_error, np.median(errors)


def test_only_trials_near_their_optimum_are_read() -> None:
    rng = np.random.default_rng(0)
    near, far = world(50.0, rng), world(5000.0, rng)
    optima = [optimum(64, 0.1)]
    trials = [
        (64, 0.1 * NEAR * 0.99, records(near, 64, 4, rng)),
        (64, 0.1, records(near, 64, 4, rng)),
        (64, 0.1 * NEAR * 1.5, records(far, 64, 4, rng)),  # too far above the optimum
        (64, 0.1 / NEAR / 1.5, records(far, 64, 4, rng)),  # too far below
        (32, 0.1, records(far, 32, 4, rng)),  # a batch size without an optimum
    ]
    measured = measured_noise(trials, optima)
    assert measured is not None and measured.trials == 2 and measured.batch_sizes == (64,)
    assert all(p.b_simple < 200 for p in measured.points)
    assert measured_noise(trials[2:], optima) is None


def law(name: str, parameter: str, value: float, low: float, high: float, limit=None) -> LawFit:
    return LawFit(
        law=name,
        params={"lr_max": 1.0, parameter: value},
        intervals={"lr_max": (0.9, 1.1), parameter: (low, high)},
        n_params=2,
        rms_log_error=0.1,
        aicc=0.0,
        loo_rms=0.1,
        b_ref=64.0,
        n_points=5,
        limit_exponent=limit,
    )


def test_fitted_scales_are_compared_with_b_simple_at_each_point() -> None:
    # B_simple grows ×8 from 10% to the end of the run, as it does in real training
    rng = np.random.default_rng(1)
    growth = {"start": 30.0, "10%": 25.0, "50%": 60.0, "end": 200.0}
    optima = [optimum(b, 0.01 * b) for b in (32, 64)]
    worlds = {point: world(value, rng) for point, value in growth.items()}
    trials = []
    for b in (32, 64):
        for _ in range(6):
            records_by_point = []
            for point, truth in worlds.items():
                (record,) = [r for r in records(truth, b, 4, rng) if r.point == point]
                records_by_point.append(record)
            trials.append((b, 0.01 * b, tuple(records_by_point)))
    measured = measured_noise(trials, optima)
    assert measured is not None
    middle = next(p for p in measured.points if p.point == "50%")
    end = next(p for p in measured.points if p.point == "end")
    assert middle.low < 60 < middle.high and end.low < 200 < end.high
    assert middle.high < end.low  # the points are told apart
    fits = [
        law("saturating", "b_noise", 60.0, 45.0, 80.0),  # mid-training's
        law("surge", "b_peak", 200.0, 150.0, 260.0),  # the end's only
        law("surge", "b_peak", 2.0, 1.0, 4.0),  # none (the end's interval is open above)
        law("saturating", "b_noise", 1e3, 500.0, 2e3, limit=1.0),  # a limit
    ]
    checked = compare(measured, fits)
    mid, late, none, limit = checked.comparisons
    assert mid.agrees and "50%" in mid.matches and "end" not in mid.matches
    assert not late.agrees and late.matches == ("end",)
    assert late.ratios["50%"] == pytest.approx(200.0 / middle.b_simple)
    assert not none.agrees and none.matches == ()
    assert not limit.identified
    text = theory_text(checked, supported=("surge",))
    assert text.index("surge's B_peak 200") < text.index("saturating's B_noise 60")
    assert "saturating's B_noise 60 (45–80) agrees with mid-training's" in text
    assert "matches only at end: they disagree over most of the run" in text
    assert "surge's B_peak 2 (1–4) is ×1/" in text and "matches no point: they disagree" in text
    assert "is not identified by the optima" in text
