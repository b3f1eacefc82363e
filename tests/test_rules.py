"""The scaling rules against docs/science.md's worked examples, and the law fits on planted laws."""

import math

import numpy as np
import pytest

from lrbatch.science import rules
from lrbatch.science.laws import fit_law


def test_worked_example_sgd_128_to_512() -> None:
    predicted = rules.predict(base_lr=0.01, base_batch=128, batch=512)
    assert predicted["linear"] == pytest.approx(0.04)
    assert predicted["square_root"] == pytest.approx(0.02)
    assert predicted["constant"] == pytest.approx(0.01)


def test_worked_example_imagenet_resnet50_linear() -> None:
    assert rules.linear(512, 256, 0.1) == pytest.approx(0.2)


def test_worked_example_adam_square_root() -> None:
    assert rules.square_root(8192, 4096, 1e-4) == pytest.approx(1.414e-4, rel=1e-3)


def test_power_law_spans_linear_and_square_root() -> None:
    assert rules.power_law(512, 128, 0.01, 1.0) == pytest.approx(rules.linear(512, 128, 0.01))
    assert rules.power_law(512, 128, 0.01, 0.5) == pytest.approx(rules.square_root(512, 128, 0.01))


def test_saturating_limits() -> None:
    # ≈ linear far below B_noise, flat at η_max far above it.
    assert rules.saturating(1, 1.0, 1e6) == pytest.approx(1e-6, rel=1e-5)
    assert rules.saturating(1e9, 1.0, 1e3) == pytest.approx(1.0, rel=1e-5)
    assert rules.saturating(1000, 1.0, 1000) == pytest.approx(0.5)


@pytest.mark.parametrize(("factor", "relative"), [(2, 0.943), (4, 0.80), (10, 0.575)])
def test_surge_relative_to_peak(factor: float, relative: float) -> None:
    # docs/science.md, *Rules*: 0.943 at 2× or ½×, 0.80 at 4× or ¼×, 0.575 at 10× or 1/10×.
    assert rules.surge(256 * factor, 1.0, 256) == pytest.approx(relative, abs=1e-3)
    assert rules.surge(256 / factor, 1.0, 256) == pytest.approx(relative, abs=1e-3)
    assert rules.surge(256, 0.3, 256) == pytest.approx(0.3)


def test_anchored_laws_pass_through_base_point() -> None:
    for law in ("saturating", "surge"):
        rule = rules.anchored(law, b_noise=300.0)
        assert rule(64, 64, 0.01) == pytest.approx(0.01)
    # saturating anchored well below B_noise behaves like linear
    assert rules.anchored("saturating", 1e7)(512, 128, 0.01) == pytest.approx(0.04, rel=1e-4)


def test_predict_skips_laws_without_b_noise_and_rejects_unknown_rules() -> None:
    assert set(rules.predict(0.01, 128, 512)) == {"constant", "linear", "square_root"}
    with_laws = rules.predict(0.01, 128, 512, b_noise=512)
    assert with_laws["saturating"] == pytest.approx(0.01 * (1 + 4) / (1 + 1))
    with pytest.raises(ValueError, match="unknown rule 'cubic'"):
        rules.predict(0.01, 128, 512, rules=["cubic"])
    # measured: McCandlish's SGD optimum from ε_max and B_noise alone, not anchored at (B0, η0)
    assert "measured" not in rules.predict(0.01, 128, 512, b_noise=512)  # needs ε_max too
    measured = rules.predict(0.01, 128, 512, ["measured"], b_noise=512, eps_max=0.3)["measured"]
    assert measured == pytest.approx(0.3 / (1 + 512 / 512))
    assert rules.predict(5.0, 16, 512, ["measured"], 512, 0.3)["measured"] == measured
    with pytest.raises(ValueError, match="base_lr must be a positive"):
        rules.linear(512, 128, -0.1)


@pytest.mark.parametrize("law", ["saturating", "surge"])
def test_fit_recovers_planted_law(law: str) -> None:
    batches = [16, 32, 64, 128, 256, 512, 1024, 2048]
    truth = rules.LAW_RULES[law]
    rng = np.random.default_rng(0)
    lrs = [truth(b, 0.5, 200.0) * math.exp(rng.normal(0, 0.05)) for b in batches]
    fit = fit_law(law, batches, lrs)
    assert fit.lr_max == pytest.approx(0.5, rel=0.15)
    assert fit.b_noise == pytest.approx(200.0, rel=0.3)
    assert fit.rms_log_error < 0.1
    assert fit.predict(200.0) == pytest.approx(truth(200.0, fit.lr_max, fit.b_noise))


def test_fit_rejects_too_few_points() -> None:
    with pytest.raises(ValueError, match="two or more distinct batch sizes"):
        fit_law("saturating", [64, 64], [0.1, 0.1])
