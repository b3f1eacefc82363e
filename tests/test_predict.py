"""The stability edge as a law, and the learning rate predicted past the measured batch sizes,
on synthetic optima whose truth is known (drawn as benchmarks/extrapolation.py draws them; the
benchmark is the full version of the goal test here)."""

import importlib.util
import itertools
import math
import sys

import numpy as np
import pytest
from conftest import ROOT

from lrbatch.science import rules
from lrbatch.science.analysis import BatchOptimum, edge_at, fit_edge, predict_at

_SPEC = importlib.util.spec_from_file_location(
    "extrapolation", ROOT / "benchmarks" / "extrapolation.py"
)
assert _SPEC is not None and _SPEC.loader is not None
extrapolation = sys.modules["extrapolation"] = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(extrapolation)

BATCHES = [16, 32, 64, 128, 256, 512, 1024]


def optimum(batch: int, lr: float, stable: float | None, diverged: float | None) -> BatchOptimum:
    """A bracketed optimum at ``lr`` (90% interval ×exp(±0.1)) with the edge's bracket."""
    return extrapolation.optimum(batch, lr, 0.1, stable, diverged)


def planted_edge(batch: float) -> float:
    return 3.0 * (batch / 64) ** 0.7


@pytest.mark.parametrize(
    "edge",
    [planted_edge, lambda b: rules.saturating(b, 10.0, 256.0)],
    ids=["power_law", "saturating"],
)
def test_edge_law_recovers_a_planted_edge_and_its_interval_covers_it(edge) -> None:
    errors, covered, low_above = [], [], []
    for repeat in range(200):
        rng = np.random.default_rng(repeat)
        optima = [optimum(b, 0.1, *extrapolation.measured_edge(edge(b), rng)) for b in BATCHES]
        fit = fit_edge(optima)
        if fit is None:  # fewer than two brackets (30% of batch sizes are bounds only)
            continue
        assert [law.law for law in fit.laws][:1] == ["power_law"]
        assert sum(law.weight for law in fit.laws) == pytest.approx(1.0)
        lr, low, high = fit.predict(4096)  # 4× the largest measured batch size
        errors.append(math.log(lr / edge(4096)))
        covered.append(low <= edge(4096) <= high)
        low_above.append(low > edge(4096))
    assert len(errors) > 190
    assert np.median(np.abs(errors)) < 0.35, np.quantile(errors, [0.1, 0.5, 0.9])
    assert 0.85 <= np.mean(covered) <= 0.99, np.mean(covered)
    assert np.mean(low_above) <= 0.1  # the low end is what caps a recommendation


def test_edge_law_is_pushed_above_a_batch_size_where_nothing_diverged() -> None:
    brackets = [optimum(b, 0.1, planted_edge(b) / 1.5, planted_edge(b) * 1.2) for b in BATCHES[:4]]
    alone = fit_edge(brackets)
    assert alone is not None and alone.laws[0].params["alpha"] == pytest.approx(0.7, abs=0.05)
    bound = 3 * planted_edge(1024)  # trained without diverging far above the brackets' line
    censored = fit_edge([*brackets, optimum(1024, 0.1, bound, None)])
    assert censored is not None and censored.lower_bounds == 1 and censored.brackets == 4
    assert alone.predict(1024)[0] < bound
    assert censored.predict(1024)[0] > 2 * alone.predict(1024)[0]
    assert censored.laws[0].params["alpha"] > alone.laws[0].params["alpha"] + 0.2
    at_bound = edge_at(1024, [*brackets, optimum(1024, 0.1, bound, None)], censored)
    assert at_bound is not None and at_bound.low >= bound


def test_edge_law_needs_brackets_at_two_batch_sizes() -> None:
    bounds = [optimum(b, 0.1, 1.0 * b / 16, None) for b in BATCHES]
    assert fit_edge(bounds) is None
    assert fit_edge([optimum(16, 0.1, 1.0, 2.0), *bounds[1:]]) is None


def test_edge_at_prefers_the_measured_bracket_then_the_law_then_a_bound() -> None:
    optima = [
        optimum(16, 0.1, 1.0, 2.0),
        optimum(64, 0.2, 2.0, 4.0),
        optimum(256, 0.4, 6.0, None),  # nothing diverged up to 6
    ]
    fit = fit_edge(optima)
    assert fit is not None
    measured = edge_at(64, optima, fit)
    assert measured is not None and measured.source == "measured"
    assert (measured.lr, measured.low, measured.high) == (4.0, 2.0, 4.0)
    at_bound = edge_at(256, optima, fit)
    assert at_bound is not None and at_bound.source == "fitted" and at_bound.low >= 6.0
    far = edge_at(4096, optima, fit)
    assert far is not None and far.source == "fitted" and far.low < far.lr < far.high
    without_law = edge_at(4096, optima, None)
    assert without_law is not None and without_law.source == "lower bound"
    assert (without_law.lr, without_law.high) == (6.0, math.inf)
    assert edge_at(32, optima, None) is not None and edge_at(32, optima, None).lr == 1.0
    assert edge_at(8, optima, None) is None  # below every measured batch size: unknown


@pytest.mark.parametrize(
    "truth",
    [
        lambda b: rules.saturating(b, 0.4, 256.0),  # McCandlish et al., B_noise in range
        lambda b: rules.surge(b, 0.01, 128.0),  # Li et al., B_peak in range
    ],
    ids=["saturating", "surge"],
)
def test_predictions_at_4x_and_8x_the_largest_batch_meet_the_goal(truth) -> None:
    outcome = extrapolation.measure(truth, b_max=512, noise=0.07, repeats=30, n_boot=50)
    for errors in (np.abs(outcome.optimum_errors), np.abs(outcome.errors)):  # laws', recommended
        assert np.mean(errors <= extrapolation.DECADE) >= 0.85, np.quantile(errors, [0.5, 0.9])
        assert np.median(errors) < 0.05
    assert 0.75 <= np.mean(outcome.covered) <= 1.0, np.mean(outcome.covered)
    assert not outcome.above_edge.any()


def study_like(rng: np.random.Generator) -> list[BatchOptimum]:
    truth = lambda b: rules.saturating(b, 0.4, 256.0)  # noqa: E731
    return extrapolation.synthetic_optima(truth, 512, 0.07, rng)[0]


def test_interval_widens_with_extrapolation_and_octaves_say_how_far() -> None:
    optima = study_like(np.random.default_rng(1))
    batches = [8, 512, 1024, 2048, 4096]
    predictions = predict_at(optima, batches, fit_edge(optima), n_boot=100)
    assert [p.batch_size for p in predictions] == batches
    assert [p.extrapolation_octaves for p in predictions] == pytest.approx([1, 0, 1, 2, 3])
    widths = [math.log(p.lr_high / p.lr_low) for p in predictions[1:]]
    assert all(near < far for near, far in itertools.pairwise(widths))
    assert all(p.lr_low <= p.lr <= p.lr_high for p in predictions if not p.capped)
    assert not any("octaves" in w for w in predictions[1].warnings)
    assert any("3.0 octaves above" in w for w in predictions[-1].warnings)
    assert any("1.0 octaves below" in w for w in predictions[0].warnings)


def test_recommendation_stays_below_the_edge_and_risky_values_are_flagged() -> None:
    # optima rise linearly; the edge lies between 1.2 and 1.8 times the optimum
    optima = [optimum(b, 0.01 * b / 16, 0.012 * b / 16, 0.018 * b / 16) for b in BATCHES[:5]]
    predictions = predict_at(optima, [256, 2048], fit_edge(optima), 16, 0.02, n_boot=100)
    for p in predictions:
        assert p.stability_edge is not None and p.stability_edge_low is not None
        assert p.lr <= min(p.stability_edge_low, 0.5 * p.stability_edge) and p.capped
        assert p.rules["linear"]["above_edge"] and not p.rules["constant"]["above_edge"]
        assert any(w.startswith("MAY DIVERGE") and "rule linear" in w for w in p.warnings)
        assert any("capped" in w for w in p.warnings)
    measured, far = predictions
    assert measured.stability_edge_source == "measured"
    assert (measured.stability_edge, measured.stability_edge_low) == pytest.approx((0.288, 0.192))
    assert measured.lr == pytest.approx(0.144)  # half the edge
    assert far.stability_edge_source == "fitted"
    # the edge law says 1.88 at 2048; past B_max = 256 the edge grows no faster than the
    # optimum's 5% quantile of growth (×8 for a linear law, a little less in its draws), from
    # its lower end 0.192 at 256
    assert far.stability_edge_low is not None and far.stability_edge_low <= 0.192 * 8
    assert far.stability_edge_low > 0.192 * 8 * 0.6  # (measured: 1.15, the laws' 5% quantile)
    assert far.stability_edge < 0.01 * 128 * math.sqrt(1.2 * 1.8)
    assert any("grow no faster than the optimum" in w for w in far.warnings)
    assert not any("grow no faster" in w for w in measured.warnings)


def test_predict_at_says_what_it_needs() -> None:
    optima = study_like(np.random.default_rng(2))
    with pytest.raises(ValueError, match="batch size 0: accepted: a positive"):
        predict_at(optima, [0], None)
    with pytest.raises(ValueError, match="1 of 1 batch sizes bracketed"):
        predict_at(optima[:1], [4096], None)
    (unknown,) = predict_at(optima, [4096], None, n_boot=20)
    assert unknown.stability_edge is not None  # a lower bound from the measured batch sizes
    assert unknown.stability_edge_source == "lower bound"
    assert unknown.stability_edge_high == math.inf
