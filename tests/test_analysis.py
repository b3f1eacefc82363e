"""The analysis on synthetic sweeps whose truth is planted: optimum per batch size, law, surge,
rule regrets and critical batch.

Metric: value = 0.1 · ln(η / η_opt(B))² + 1/√B + seed offset + noise, so a factor e off the
optimum costs 0.1; a trial above 5 η_opt(B) diverges. Each batch size is sampled as a sweep
would sample it: a log grid around the optimum, off-centre by up to ±20%, spaced ×1.5 near it
and ×2.25, ×4, ×8 further out, with three seeds at the best three points and one elsewhere.
"""

import math
import re
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

from lrbatch.science import rules
from lrbatch.science.analysis import (
    LAWS,
    BatchOptimum,
    LawFit,
    TrialPoint,
    Verdict,
    batch_optima,
    critical_batch,
    fit_laws,
    rule_regrets,
    verdict,
)
from lrbatch.science.laws import EXPONENTS
from lrbatch.search.plan import Finished, Observation, Proposal, SweepPlan

BATCHES = tuple(2**k for k in range(4, 13))  # 16 … 4096
OFFSETS = (-1.39, -0.81, -0.41, 0.0, 0.41, 0.81, 1.39, 2.08)  # ln η − ln(grid centre)
EDGE = 5.0  # η above EDGE · η_opt(B) diverges
TRUTHS: dict[str, Callable[[float], float]] = {
    "saturating": lambda b: rules.saturating(b, 0.4, 256.0),
    "surge": lambda b: rules.surge(b, 0.01, 256.0),
    "square_root": lambda b: rules.square_root(b, 128, 0.01),
    "linear": lambda b: rules.linear(b, 16, 0.001),
}


def metric(lr: float, optimum: float, batch: int, offset: float = 0.0) -> float:
    return 0.1 * math.log(lr / optimum) ** 2 + 1 / math.sqrt(batch) + offset


def sweep_like(
    optimum: Callable[[float], float], seed: int = 0, batches: tuple[int, ...] = BATCHES
) -> list[TrialPoint]:
    rng = np.random.default_rng(seed)
    points = []
    for batch in batches:
        truth = optimum(batch)
        centre = math.log(truth) + rng.uniform(-0.2, 0.2)
        offsets = rng.normal(0.0, 0.03, size=3)  # seed offsets: pairing must absorb them
        for k, shift in enumerate(OFFSETS):
            lr = math.exp(centre + shift)
            for seed_id in range(3) if 2 <= k <= 4 else range(1):
                diverged = lr > EDGE * truth
                noise = 0.01 * rng.normal()
                value = math.inf if diverged else metric(lr, truth, batch, offsets[seed_id]) + noise
                points.append(TrialPoint(batch, lr, seed_id, value, diverged))
    return points


@pytest.fixture(scope="module")
def planted() -> dict[str, tuple[list[TrialPoint], list[BatchOptimum], list[LawFit], Verdict]]:
    results = {}
    for data_seed, (law, optimum) in enumerate(TRUTHS.items()):
        points = sweep_like(optimum, data_seed)
        optima = batch_optima(points)
        fits = fit_laws(optima)
        results[law] = (points, optima, fits, verdict(fits, optima, 128, optimum(128)))
    return results


@pytest.mark.parametrize("law", TRUTHS)
def test_optima_recover_the_planted_optimum_and_intervals_cover_it(planted, law) -> None:
    points, optima, _, _ = planted[law]
    truth = TRUTHS[law]
    assert [o.batch_size for o in optima] == list(BATCHES)
    for o in optima:
        at_best = [p for p in points if (p.batch_size, p.lr) == (o.batch_size, o.best_lr_tried)]
        off = 0.1 * math.log(o.best_lr_tried / truth(o.batch_size)) ** 2
        floor = np.mean([p.value for p in at_best]) - off
        assert abs(math.log(o.lr_opt / truth(o.batch_size))) < 0.15, o  # within 16%
        assert o.lr_low <= o.lr_opt <= o.lr_high
        assert o.method == "local quadratic" and o.bracketed
        assert o.trials == 14 and o.seeds == 3 and o.diverged == 1
        assert o.stability_edge is not None and o.stability_edge > EDGE * truth(o.batch_size)
        assert o.value_opt == pytest.approx(floor, abs=0.02)  # 1/√B + the seeds' mean offset


def test_optimum_intervals_cover_the_truth_in_most_cases(planted) -> None:
    covered = [
        o.lr_low <= TRUTHS[law](o.batch_size) <= o.lr_high
        for law in TRUTHS
        for o in planted[law][1]
    ]
    # 90% intervals from 3 seeds cover ~85% on these sweeps; 2/3 leaves room for chance
    assert sum(covered) >= 2 / 3 * len(covered), f"{sum(covered)}/{len(covered)}"


def test_optima_are_deterministic_and_symmetric_in_direction() -> None:
    points = sweep_like(TRUTHS["surge"], seed=3)
    first = batch_optima(points)
    assert batch_optima(points) == first
    flipped = [replace(p, value=-p.value) for p in points]  # an accuracy-like metric
    for low, high in zip(first, batch_optima(flipped, minimize=False), strict=True):
        assert high.lr_opt == pytest.approx(low.lr_opt)
        assert high.value_opt == pytest.approx(-low.value_opt)


@pytest.mark.parametrize(
    ("law", "name", "planted_value", "factor"),
    [
        ("saturating", "b_noise", 256.0, 1.5),
        ("saturating", "lr_max", 0.4, 1.2),
        ("surge", "b_peak", 256.0, 1.5),
        ("surge", "lr_max", 0.01, 1.2),
    ],
)
def test_law_fit_recovers_planted_batch_scale(planted, law, name, planted_value, factor) -> None:
    fit = next(f for f in planted[law][2] if f.law == law)
    assert 1 / factor < fit.params[name] / planted_value < factor
    low, high = fit.intervals[name]
    assert low <= fit.params[name] <= high
    assert fit.predict(256.0) == pytest.approx(rules.LAW_RULES[law](256.0, *fit.params.values()))


@pytest.mark.parametrize(("law", "alpha"), [("square_root", 0.5), ("linear", 1.0)])
def test_power_law_recovers_planted_exponent(planted, law, alpha) -> None:
    fits = {f.law: f for f in planted[law][2]}
    assert fits["power_law"].params["alpha"] == pytest.approx(alpha, abs=0.1)
    assert fits[law].predict(fits[law].b_ref) == pytest.approx(fits[law].params["lr_ref"])
    assert fits[law].loo_rms < 0.15 < fits["constant"].loo_rms
    assert [f.law for f in planted[law][2]] == list(LAWS)


REJECTED = {  # laws the planted data must rule out (ΔAIC ≥ 2)
    "saturating": {"constant", "square_root", "linear", "power_law", "surge"},
    "surge": {"constant", "square_root", "linear", "power_law", "saturating"},
    "square_root": {"constant", "linear", "saturating"},
    "linear": {"constant", "square_root", "surge"},
}


def assert_consistent(result: Verdict, fits: list[LawFit]) -> None:
    """No law the verdict supports stands for an exponent its free exponent's interval
    excludes (a saturating or surge fit reduced to a limit stands for the limit's)."""
    by_law = {f.law: f for f in fits}
    assert result.alpha_interval == by_law["power_law"].intervals["alpha"]
    low, high = result.alpha_interval
    for law in result.supported:
        exponent = EXPONENTS.get(law, by_law[law].limit_exponent)
        assert exponent is None or low <= exponent <= high, (law, result.alpha_interval)


@pytest.mark.parametrize("law", TRUTHS)
def test_verdict_names_the_planted_law_and_rules_out_others(planted, law) -> None:
    _, _, fits, result = planted[law]
    assert result.best == law and result.supported[0] == law
    assert not REJECTED[law] & set(result.supported), result.supported
    assert_consistent(result, fits)


@pytest.mark.parametrize("law", TRUTHS)
@pytest.mark.parametrize("batches", [(16, 64, 256, 1024), (32, 64, 128, 256, 512)])
def test_verdict_on_few_batch_sizes_names_the_truth_or_its_shape(law, batches) -> None:
    # with 4 batch sizes AICc scored every two-parameter law inf and named square_root for
    # a saturating truth whose optima it missed far beyond their intervals
    truth = TRUTHS[law]
    for data_seed in range(3):
        optima = batch_optima(sweep_like(truth, data_seed, batches))
        fits = fit_laws(optima, n_boot=100)
        result = verdict(fits, optima, batches[0], truth(batches[0]))
        assert_consistent(result, fits)
        if law in ("saturating", "surge"):  # over a narrow range a power law may do
            assert result.best in (law, "power_law"), (batches, data_seed, result.text)
            named = next(f for f in fits if f.law == result.best)
            for o in optima:  # the named law misses no optimum by 3 of its σ
                sigma = math.log(o.lr_high / o.lr_low) / 3.29
                assert abs(math.log(named.predict(o.batch_size) / o.lr_opt)) < 3 * sigma + 0.15
        else:
            assert result.best == law, (batches, data_seed, result.text)
    if batches[0] == 16 and law == "saturating":
        assert result.best == "saturating"  # B_noise = 256 lies well inside 16–1024


def test_a_law_the_free_exponent_excludes_is_not_named(planted) -> None:
    # the case: linear scores best, but α = 0.86 (90% 0.78–0.93) excludes 1
    _, optima, fits, _ = planted["linear"]
    free = next(f for f in fits if f.law == "power_law")
    linear = next(f for f in fits if f.law == "linear")
    shifted = replace(
        free,
        params={**free.params, "alpha": 0.86},
        intervals={**free.intervals, "alpha": (0.78, 0.93)},
        aicc=linear.aicc + 1.0,
    )
    fits = [shifted if f is free else f for f in fits]
    result = verdict(fits, optima)
    assert result.best == "power_law" and result.alpha == 0.86
    assert "linear" not in result.supported and "saturating" not in result.supported
    assert_consistent(result, fits)
    assert "η ∝ B^0.86 (90% 0.78–0.93): between square-root and linear, closer to linear" in (
        result.text
    )
    assert "linear would fit (ΔAIC -1.0) but α's interval excludes 1" in result.text


def test_verdict_gives_what_the_common_rules_cost_at_the_farthest_batch(planted) -> None:
    _, optima, _, result = planted["square_root"]
    assert result.ratio_batch == 4096  # farthest from B0 = 128 (16 is 3 octaves, 4096 is 5)
    at_4096 = optima[-1]
    eta0 = TRUTHS["square_root"](128)
    assert result.ratios == {
        "linear": pytest.approx(rules.linear(4096, 128, eta0) / at_4096.lr_opt),
        "square_root": pytest.approx(rules.square_root(4096, 128, eta0) / at_4096.lr_opt),
    }
    assert result.ratios["square_root"] == pytest.approx(1, abs=0.1)
    assert result.ratios["linear"] == pytest.approx(math.sqrt(32), rel=0.1)
    assert f"linear overshoots ×{result.ratios['linear']:.2g} and square-root lands" in result.text
    _, surge_optima, _, surge = planted["surge"]  # linear is 65× the optimum at 4096
    edge = surge_optima[-1].stability_edge
    assert edge is not None and surge.ratios["linear"] * surge_optima[-1].lr_opt > edge
    assert "linear overshoots ×65 (at or past the stability edge)" in surge.text
    unanchored = verdict(planted["square_root"][2], optima)
    assert unanchored.ratio_batch is None and unanchored.ratios == {}
    assert "scaled from" not in unanchored.text


def test_verdict_text_gives_the_evidence(planted) -> None:
    text = planted["saturating"][3].text
    assert "B_noise = " in text and "90%" in text and "ΔAIC" in text
    assert "inside the measured 16–4096" in text
    assert re.search(r"free exponent α = 0\.[45]\d with 90% ", planted["square_root"][3].text)


def test_surge_fires_on_a_surge_and_not_on_saturation(planted) -> None:
    surge = planted["surge"][3].surge
    assert surge is not None and surge.significant
    assert surge.peak_batch in (128, 256, 512)
    assert surge.fall == pytest.approx(math.log(0.01 / TRUTHS["surge"](4096)), abs=0.2)
    assert "falls" in planted["surge"][3].text
    for law in ("saturating", "square_root", "linear"):
        evidence = planted[law][3].surge
        assert evidence is not None and not evidence.significant, law


def test_one_high_optimum_near_the_largest_batch_is_not_a_surge(planted) -> None:
    optima = planted["saturating"][1]
    assert optima[-2].batch_size == 2048
    outlier = replace(
        optima[-2], lr_opt=3 * optima[-2].lr_opt, lr_low=3 * optima[-2].lr_low,
        lr_high=3 * optima[-2].lr_high,
    )  # fmt: skip
    result = verdict([], [*optima[:-2], outlier, optima[-1]])
    assert result.surge is not None and result.surge.peak_batch == 2048
    assert result.surge.fall > 2 * result.surge.fall_uncertainty  # large, but one batch only
    assert not result.surge.significant and "falls" not in result.text


def test_saturation_beyond_the_batch_range_is_reported_as_its_linear_limit() -> None:
    optima = batch_optima(sweep_like(lambda b: rules.saturating(b, 1.0, 1e6), seed=5))
    result = verdict(fit_laws(optima, n_boot=50), optima)
    assert result.best == "linear" and "saturating" not in result.supported
    assert "saturating reduces to η ∝ B^1 (B_noise out of range)" in result.text


def test_verdict_says_a_nested_law_is_not_needed_rather_than_ruled_out(planted) -> None:
    result = planted["linear"][3]
    assert re.search(r"power_law is not needed \(ΔAIC \+\d", result.text), result.text
    assert "ruled out, power_law" not in result.text
    assert "power_law" not in result.supported  # one more parameter, no better: uninformative


def test_fit_laws_skips_laws_with_more_parameters_than_points_minus_one(planted) -> None:
    two = planted["linear"][1][:2]
    fits = fit_laws(two, n_boot=20)
    assert [f.law for f in fits] == ["constant", "square_root", "linear"]
    assert verdict(fits, two).best in ("square_root", "linear", "constant")
    assert verdict([], two[:1]).best == "none"
    with pytest.raises(ValueError, match="unknown law 'cubic'"):
        fit_laws(two, laws=["cubic"])


def test_not_bracketed_when_the_optimum_lies_below_the_lrs_tried() -> None:
    points = [
        TrialPoint(64, lr, seed, metric(lr, 0.001, 64) + 0.001 * seed)
        for lr in (0.01, 0.02, 0.04, 0.08)
        for seed in range(2)
    ]
    (optimum,) = batch_optima(points)
    assert not optimum.bracketed and optimum.method == "best point"
    assert optimum.lr_opt == optimum.best_lr_tried == 0.01
    result = verdict([], [optimum])
    assert "1 unbracketed batch size(s) left out" in result.text


def test_verdict_with_fewer_than_two_bracketed_optima_says_so(planted) -> None:
    optima = planted["linear"][1]
    one = [optima[0], *(replace(o, bracketed=False) for o in optima[1:])]
    assert fit_laws(one) == []
    result = verdict(fit_laws(one), one)
    assert result.best == "none" and result.supported == [] and result.surge is None
    assert "1 of 9 batch size(s) bracketed their optimum: no law can be fitted" in result.text
    assert "8 unbracketed batch size(s) left out" in result.text


def test_divergence_sets_stability_edge_and_infinite_regret() -> None:
    lrs = (0.01, 0.02, 0.04, 0.06, 0.08, 0.16)
    points = [
        TrialPoint(128, lr, seed, metric(lr, 0.04, 128), diverged=unstable)
        for lr in lrs
        for seed in range(2)
        for unstable in [lr > 0.1 or (lr, seed) == (0.08, 1)]
    ]
    (optimum,) = batch_optima(points)
    assert optimum.stability_edge == 0.08  # one seed of two diverged there
    assert optimum.diverged == 3 and optimum.bracketed
    assert optimum.lr_opt == pytest.approx(0.04, rel=0.01)
    # anchored at (64, 0.02): linear predicts 0.04 (the optimum), square root 0.028 (between
    # tried lrs), and at ×4 the base batch linear's 0.08 diverged.
    regrets = {r.rule: r for r in rule_regrets(points, [optimum], 64, 0.02, rules.RULE_NAMES)}
    assert regrets["linear"].measured and regrets["linear"].regret == pytest.approx(0, abs=1e-9)
    sqrt = regrets["square_root"]
    assert not sqrt.measured and sqrt.ratio == pytest.approx(math.sqrt(0.5))
    assert sqrt.regret == pytest.approx(0.1 * math.log(math.sqrt(0.5)) ** 2, rel=0.05)
    (unstable,) = rule_regrets(points, [optimum], 32, 0.02, ["linear"])
    assert unstable.measured and unstable.regret == math.inf
    (above,) = rule_regrets(points, [optimum], 128, 0.1, ["constant"])  # untried, above the edge
    assert not above.measured and above.regret == math.inf
    (below,) = rule_regrets(points, [optimum], 128, 0.001, ["constant"])
    assert math.isnan(below.regret) and not below.measured
    # an accuracy-like metric (maximize) gives the same regrets
    flipped = [replace(p, value=-p.value) for p in points]
    (best_flipped,) = batch_optima(flipped, minimize=False)
    again = rule_regrets(flipped, [best_flipped], 64, 0.02, rules.RULE_NAMES, minimize=False)
    assert [r.regret for r in again] == pytest.approx([r.regret for r in regrets.values()])


def run_plan(
    optimum: Callable[[float], float], batches: tuple[int, ...], edge: float
) -> list[TrialPoint]:
    """Drive the real sweep plan on the planted metric until it finishes."""
    plan = SweepPlan(
        batch_sizes=batches, base_batch=256, base_lr=optimum(256), lr_min=1e-5, lr_max=10.0,
        seeds=2, max_trials=500, laws=(),
    )  # fmt: skip
    rng = np.random.default_rng(0)
    observations: list[Observation] = []
    points: list[TrialPoint] = []
    while not isinstance(decision := plan.next(observations), Finished):
        assert isinstance(decision, Proposal)
        b, lr = decision.batch_size, decision.lr
        diverged = lr > edge * optimum(b)
        value = math.inf if diverged else metric(lr, optimum(b), b) + 0.005 * rng.normal()
        observations.append(Observation(b, lr, decision.seed, value, diverged))
        points.append(TrialPoint(b, lr, decision.seed, value, diverged))
    return points


def test_regrets_on_a_real_sweep_are_zero_for_the_true_rule_and_positive_for_others() -> None:
    truth = TRUTHS["square_root"]
    batches = (16, 64, 256, 1024, 4096)
    points = run_plan(truth, batches, edge=3.0)
    optima = batch_optima(points)
    assert all(abs(math.log(o.lr_opt / truth(o.batch_size))) < 0.15 for o in optima)
    regrets = rule_regrets(points, optima, 256, truth(256), ["constant", "linear", "square_root"])
    assert len(regrets) == 3 * len(batches)
    for regret in regrets:
        assert regret.measured, regret  # the plan evaluates every rule's prediction exactly
        if regret.rule == "square_root" or regret.batch_size == 256:
            assert regret.regret < 0.015 and regret.ratio == pytest.approx(1, abs=0.15)
        else:
            assert regret.regret > 0.03, regret
    at_4096 = {r.rule: r for r in regrets if r.batch_size == 4096}
    assert at_4096["linear"].regret == math.inf  # 4× the optimum: past the stability edge
    assert at_4096["constant"].ratio == pytest.approx(0.25, rel=0.15)


def target_points(s_min: float, b_noise: float, seeds: int = 3) -> list[TrialPoint]:
    """Steps to target S(B) = S_min (1 + B_noise/B) at the best lr, more away from it."""
    rng = np.random.default_rng(0)
    points = []
    for batch in (16, 64, 256, 1024, 4096):
        for lr in (0.025, 0.05, 0.1, 0.2, 0.4):
            for seed in range(seeds):
                steps = s_min * (1 + b_noise / batch) * (1 + math.log(lr / 0.1) ** 2)
                steps *= math.exp(0.03 * rng.normal())
                reached = lr < 0.4
                points.append(
                    TrialPoint(batch, lr, seed, steps if reached else math.inf, False,
                               steps=int(steps), samples=int(steps) * batch,
                               reached_target=reached)
                )  # fmt: skip
    return points


def test_critical_batch_recovers_planted_s_min_and_b_noise() -> None:
    result = critical_batch(target_points(s_min=1000.0, b_noise=300.0))
    assert result is not None
    assert result.s_min == pytest.approx(1000.0, rel=0.1)
    assert 300 / 1.3 < result.b_noise < 300 * 1.3
    low, high = result.b_noise_interval
    assert low < 300.0 < high
    assert result.b_crit == pytest.approx(result.b_noise)
    assert result.e_min == pytest.approx(result.s_min * result.b_noise)
    assert result.steps_to_target[16] == pytest.approx(1000 * (1 + 300 / 16), rel=0.1)
    assert result.samples_to_target[16] == pytest.approx(16 * result.steps_to_target[16])


def test_critical_batch_needs_three_batch_sizes_that_reached_the_target() -> None:
    points = [p for p in target_points(1000.0, 300.0) if p.batch_size <= 64]
    assert critical_batch(points) is None
    missed = [replace(p, reached_target=False) for p in target_points(1000.0, 300.0)]
    assert critical_batch(missed) is None


def test_trial_point_rejects_a_non_positive_lr() -> None:
    with pytest.raises(ValueError, match=r"positive finite lr, got batch_size=64, lr=0\.0"):
        TrialPoint(64, 0.0, 0, 1.0)


def test_regret_is_zero_for_the_true_rule_on_an_asymmetric_curve() -> None:
    # steeper above the optimum than below: no parabola fits exactly, and the fitted minimum
    # lies below every measured mean; the best measured lr must still cost exactly 0
    def skewed(lr: float, seed: int) -> float:
        x = math.log(lr / 0.04)
        return 0.1 * x**2 + 0.08 * max(x, 0.0) ** 3 + 0.02 * seed

    lrs = (0.01, 0.02, 0.04, 0.08, 0.16)
    points = [TrialPoint(128, lr, seed, skewed(lr, seed)) for lr in lrs for seed in range(3)]
    (optimum,) = batch_optima(points)
    assert optimum.best_lr_tried == 0.04
    # anchored at (64, 0.02): linear predicts 0.04 (measured, the best), constant 0.02
    # (measured), square root 0.028 (from the parabola)
    regrets = {r.rule: r for r in rule_regrets(points, [optimum], 64, 0.02, rules.RULE_NAMES)}
    assert regrets["linear"].measured and regrets["linear"].regret == 0.0
    assert regrets["constant"].measured
    assert regrets["constant"].regret == pytest.approx(0.1 * math.log(0.5) ** 2)
    assert not regrets["square_root"].measured and regrets["square_root"].regret > 0.005


def test_seeds_on_alternating_lrs_are_compared_by_plain_means() -> None:
    # each seed tried every other lr: their offsets cannot be told from the lrs' means
    lrs = (0.01, 0.02, 0.04, 0.08, 0.16)
    points = [TrialPoint(64, lr, k % 2, 1.0 + metric(lr, 0.04, 64)) for k, lr in enumerate(lrs)]
    (optimum,) = batch_optima(points)
    assert optimum.best_lr_tried == 0.04 and optimum.bracketed


def test_a_missed_target_is_not_a_divergence() -> None:
    points = [
        replace(p, diverged=True, reached_target=False)
        if p.lr == 0.4
        else replace(p, value=math.inf, reached_target=False)
        if p.lr == 0.025
        else p
        for p in target_points(s_min=1000.0, b_noise=300.0)
        if p.batch_size == 256
    ]  # too slow at 0.025: missed the target; 0.4 diverged
    (optimum,) = batch_optima(points)
    assert optimum.stability_edge == 0.4 and optimum.diverged == 3
    assert optimum.best_lr_tried == pytest.approx(0.1, rel=0.01) and optimum.bracketed
    missed_only = [replace(p, diverged=False) for p in points]
    (optimum,) = batch_optima(missed_only)
    assert optimum.stability_edge is None and optimum.diverged == 0
    # an untried lr between the missed 0.025 and 0.05 is outside the finite range, not inf
    (below,) = rule_regrets(missed_only, [optimum], 256, 0.03, ["constant"])
    assert math.isnan(below.regret)
    (at_missed,) = rule_regrets(missed_only, [optimum], 256, 0.025, ["constant"])
    assert at_missed.measured and at_missed.regret == math.inf  # still scores as worst


def test_a_best_lr_just_below_a_diverged_one_is_bracketed() -> None:
    lrs = (0.005, 0.01, 0.02, 0.04)
    points = [
        TrialPoint(64, lr, seed, metric(lr, 0.03, 64), diverged=lr == 0.04)
        for lr in lrs
        for seed in range(2)
    ]
    (optimum,) = batch_optima(points)
    assert optimum.best_lr_tried == 0.02 and optimum.stability_edge == 0.04
    assert optimum.bracketed  # divergence bounds it from above
    tried = [p for p in points if not p.diverged]
    (at_top,) = batch_optima(tried)
    assert at_top.best_lr_tried == 0.02 and not at_top.bracketed  # nothing above it
