"""The gradient noise scale: against a quadratic whose answer is known in closed form, in every
trial, and from `lrbatch noise-scale`.

The quadratic (tests/plugins.py): linear regression on Gaussian inputs, 32 dimensions, at
weights 0: B_simple = 27.96, ε_max = 0.18998, |G|² = 152.03, tr(Σ) = 4251.1.
"""

import json
import math
import statistics

import optuna
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from plugins import LinearRegression, quadratic, quadratic_truth

from lrbatch.cli import main
from lrbatch.config import load_config
from lrbatch.science.noise import (
    GradientPair,
    NoiseEstimate,
    NoiseRecord,
    combine,
    gradient_pair,
    sgd_optimum,
    window_steps,
)
from lrbatch.search.study_io import noise_user_attrs, trial_noise
from lrbatch.training.gradient_noise import TrialNoise, measure
from lrbatch.training.loop import load_data, train

TRUTH = quadratic_truth()
QUADRATIC = [
    "dataset._target_=plugins.quadratic",
    "~dataset.train_split",
    "~dataset.num_samples",
    "~dataset.seed",
    "model._target_=plugins.LinearRegression",
    "~model.hidden",
    "~model.activation",
    "hardware.precision=32",
]
SMALL = ["dataset.num_samples=1000", "model.hidden=[32]", "budget.epochs=2"]


def test_estimator_on_a_worked_example() -> None:
    # |G|² = 1, tr(Σ) = 100: E|G_10|² = 1 + 100/10 = 11, E|G_100|² = 1 + 100/100 = 2.
    pair = GradientPair(batch_small=10, batch_big=100, grad_sq_small=11.0, grad_sq_big=2.0)
    assert pair.grad_sq == pytest.approx(1.0) and pair.trace_sigma == pytest.approx(100.0)
    # |G|² estimates 2 and 0.5, tr(Σ) 100 each: averaged separately, then divided (80), not
    # the mean of the two ratios (125).
    noisy = [GradientPair(10, 100, 12.0, 3.0), GradientPair(10, 100, 10.5, 1.5)]
    estimate = combine(noisy)
    assert estimate.grad_sq == pytest.approx(1.25) and estimate.trace_sigma == pytest.approx(100)
    assert estimate.b_simple == pytest.approx(80.0) and estimate.steps == 2
    assert math.isnan(combine([GradientPair(10, 100, 11.0, 0.5)]).b_simple)  # |G|² < 0: unresolved
    # pieces of unequal size: the harmonic mean of their sizes is the small batch
    assert gradient_pair([30, 10], [4.0, 6.0], 2.0) == GradientPair(15.0, 40, 5.0, 2.0)
    eps = NoiseEstimate(b_simple=100, grad_sq=1, trace_sigma=100, eps_max=2.0, steps=1)
    assert sgd_optimum(eps, 100) == pytest.approx(1.0)  # ε_max / (1 + 100/100)


def test_measure_finds_the_closed_form_noise_scale_and_curvature() -> None:
    # As `lrbatch noise-scale` measures: 2 batches of 8192 examples, pieces of 32. Over 100
    # datasets (seeds 0-99): |error| of B_simple median 1.8%, 90th percentile 3.8%, max 5.8%
    # (mean −0.0%, no bias); of ε_max median 0.9%, 90th percentile 2.4%, max 3.4%.
    model = LinearRegression((32,), 1)
    x, y, _, _ = quadratic(seed=0)
    batches = [(x[:8192], y[:8192]), (x[8192:16384], y[8192:16384])]

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(model(x), y.reshape(-1, 1))

    estimate = measure(loss_fn, list(model.parameters()), batches, parts=256)
    assert estimate.b_simple == pytest.approx(TRUTH["b_simple"], rel=0.1)
    assert estimate.eps_max == pytest.approx(TRUTH["eps_max"], rel=0.1)
    assert estimate.grad_sq == pytest.approx(TRUTH["grad_sq"], rel=0.1)
    assert estimate.trace_sigma == pytest.approx(TRUTH["trace_sigma"], rel=0.1)
    assert estimate.steps == 2 and model.linear.weight.grad is None  # .grad left alone


@pytest.mark.parametrize(
    ("micro_batch", "bias", "median"),
    # Over 50 seeds × 4 windows (200 windows of 4 steps, lr 0: every step at the initial
    # weights), |error| of one window's B_simple: two halves, median 13%, 90th percentile 30%,
    # max 65% (mean +1.0%); micro-batches of 32 (×8), median 6%, 90th percentile 16%, max 32%
    # (mean +1.9%: a ratio of noisy averages leans high). The 4 windows pooled: median 7%, max
    # 20% (halves); median 3%, max 9% (micro-batches).
    [(None, 0.07, 0.22), (32, 0.06, 0.12)],
)
def test_trials_record_the_closed_form_noise_scale(
    micro_batch: int | None, bias: float, median: float
) -> None:
    cfg = load_config(overrides=[*QUADRATIC, "budget=steps", "budget.steps=160"])
    data = load_data(cfg)
    errors = []
    for seed in range(20):
        result = train(cfg, 256, 0.0, seed, data=data, micro_batch=micro_batch)
        assert [r.point for r in result.noise_scale] == ["start", "10%", "50%", "end"]
        assert [(r.first_step, r.last_step) for r in result.noise_scale] == [
            (1, 4), (17, 20), (81, 84), (157, 160)
        ]  # fmt: skip
        assert all(r.estimate.steps == 4 for r in result.noise_scale)
        errors += [r.estimate.b_simple / TRUTH["b_simple"] - 1 for r in result.noise_scale]
    assert abs(statistics.mean(errors)) < bias  # unbiased: mean of 80 windows
    assert statistics.median(map(abs, errors)) < median


def test_grad_norms_are_the_batch_gradient_norm() -> None:
    # At fixed weights E|G_B|² = |G|² + tr(Σ)/B · (N − B)/(N − 1) (sampling without replacement).
    cfg = load_config(overrides=[*QUADRATIC, "budget=steps", "budget.steps=64"])
    result = train(cfg, 256, 0.0, seed=0)
    steps = [step for step, _ in result.grad_norms]
    assert len(steps) == 32 and steps[0] == 1 and steps[-1] == 64
    n = 32_768
    expected = TRUTH["grad_sq"] + TRUTH["trace_sigma"] / 256 * (n - 256) / (n - 1)
    mean_sq = statistics.mean(norm**2 for _, norm in result.grad_norms)
    assert mean_sq == pytest.approx(expected, rel=0.05)  # 32 steps: sd of the mean ≈ 1.5%


def test_measuring_in_halves_leaves_the_training_unchanged() -> None:
    cfg = load_config(overrides=SMALL)
    measured = train(cfg, 64, 0.1, seed=0)
    plain = train(cfg, 64, 0.1, seed=0, noise_window=0)
    assert len(measured.noise_scale) == 4 and plain.noise_scale == ()
    assert measured.metrics["val_loss"] == pytest.approx(plain.metrics["val_loss"], rel=1e-6)
    assert measured.metrics["train_loss"] == pytest.approx(plain.metrics["train_loss"], rel=1e-6)
    for (step, norm), (plain_step, plain_norm) in zip(
        measured.grad_norms, plain.grad_norms, strict=True
    ):
        assert step == plain_step and norm == pytest.approx(plain_norm, rel=1e-5)


def test_gradient_accumulation_is_the_same_batch() -> None:
    cfg = load_config(overrides=SMALL)
    whole = train(cfg, 64, 0.1, seed=0)  # measured steps in two halves of 32
    halves = train(cfg, 64, 0.1, seed=0, micro_batch=32)  # every step in two micro-batches
    quarters = train(cfg, 64, 0.1, seed=0, micro_batch=16)
    # The same split: the same B_simple, to float rounding, at every point.
    for a, b in zip(whole.noise_scale, halves.noise_scale, strict=True):
        assert (a.point, a.first_step, a.samples) == (b.point, b.first_step, b.samples)
        assert a.estimate.b_simple == pytest.approx(b.estimate.b_simple, rel=1e-4)
        assert a.estimate.trace_sigma == pytest.approx(b.estimate.trace_sigma, rel=1e-4)
    # Another split: the same training; B_simple estimated from other pieces (see
    # test_trials_record_the_closed_form_noise_scale for its noise against the truth).
    for result in (halves, quarters):
        assert result.metrics["val_loss"] == pytest.approx(whole.metrics["val_loss"], rel=1e-4)
    assert all(r.estimate.trace_sigma > 0 for r in quarters.noise_scale)


def test_windows_are_at_start_10_50_percent_and_end() -> None:
    noise = TrialNoise(1000, 64, params=[])
    assert {p: (w.start, w.stop - 1) for p, w in noise.windows.items()} == {
        "start": (1, 4),
        "10%": (101, 104),
        "50%": (501, 504),
        "end": (997, 1000),
    }
    assert len(noise.measured_steps) == 16 and len(noise.curve_steps) == 32
    assert [window_steps(n) for n in (1, 59, 60, 78, 139, 140, 160, 10_000)] == [
        1,
        1,
        2,
        2,
        3,
        4,
        4,
        4,
    ]  # fmt: skip  (at most 10% of a trial's steps measure)
    short = TrialNoise(78, 64, params=[])  # 78 steps (the default sweep at B = 1024): 2 a window
    assert {p: (w.start, w.stop - 1) for p, w in short.windows.items()} == {
        "start": (1, 2),
        "10%": (9, 10),
        "50%": (40, 41),
        "end": (77, 78),
    }
    assert TrialNoise(100, 1, params=[]).measured_steps == frozenset()  # batch 1: no pieces
    assert TrialNoise(100, 64, params=[], window=0).measured_steps == frozenset()


def test_a_diverged_trial_keeps_the_windows_it_reached() -> None:
    result = train(load_config(overrides=SMALL), 32, 50.0, seed=0)
    assert result.diverged and result.steps <= 25  # of 50 planned: 50% and end never reached
    assert [r.point for r in result.noise_scale] == ["start", "10%"]
    assert all(r.last_step <= result.steps for r in result.noise_scale)
    assert all(step <= result.steps for step, _ in result.grad_norms)


def test_trial_attributes_read_back_as_recorded() -> None:
    records = (
        NoiseRecord("start", 1, 6, 160, NoiseEstimate(812.5, 0.04, 32.5, math.nan, 6)),
        NoiseRecord("end", 95, 100, 6240, NoiseEstimate(math.nan, -0.01, 30.0, math.nan, 6)),
    )
    attrs = noise_user_attrs(records, [(1, 0.5), (100, 0.25)])
    assert attrs["noise_scale"][1]["b_simple"] is None  # JSON-safe: not finite is null
    trial = optuna.trial.create_trial(
        params={"batch_size": 64},
        distributions={"batch_size": optuna.distributions.IntDistribution(16, 1024, log=True)},
        value=1.0,
        user_attrs=json.loads(json.dumps(attrs)),  # as a storage returns them
    )
    read = trial_noise(trial)
    assert read.batch_size == 64 and read.grad_norms == ((1, 0.5), (100, 0.25))
    assert read.records[0] == records[0]
    assert read.records[1].point == "end" and math.isnan(read.records[1].estimate.b_simple)
    assert read.records[1].estimate.grad_sq == -0.01
    assert trial_noise(optuna.trial.create_trial(value=1.0)).records == ()


def test_noise_scale_command_finds_the_closed_form(capsys) -> None:
    # 2 batches of 8192 examples, pieces of 32: see test_measure_finds_the_closed_form_...
    argv = ["noise-scale", *QUADRATIC, "sweep.batch_sizes=[64,256]", "--steps", "4"]
    assert main([*argv, "--points", "2", "--lr", "1e-6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["b_simple_init"] == pytest.approx(TRUTH["b_simple"], rel=0.1)
    assert out["eps_max_init"] == pytest.approx(TRUTH["eps_max"], rel=0.1)
    assert out["lr"] == 1e-6 and out["batch_size"] == 64 and not out["diverged"]
    assert [(p["step"], p["samples"]) for p in out["trajectory"]] == [(0, 0), (2, 128), (4, 256)]
    init = out["trajectory"][0]
    assert init["grad_norm"] == pytest.approx(math.sqrt(TRUTH["grad_sq"]), rel=0.05)
    last = out["trajectory"][-1]
    for batch in (64, 256):
        implied = last["eps_max"] / (1 + last["b_simple"] / batch)
        assert out["predicted_lr"][str(batch)] == pytest.approx(implied)
    # Without --lr (nor study or sweep.base_lr) it trains at ε_opt(B0) measured at the start.
    assert main([*argv, "--points", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lr"] == pytest.approx(out["eps_max_init"] / (1 + out["b_simple_init"] / 64))


def test_noise_scale_command_prints_tables(capsys) -> None:
    assert main(["noise-scale", *SMALL, "--steps", "10", "--points", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "Trained 10 steps at B0 = 16" in out and "SGD optimum" in out and "1024" in out
    assert "each measurement: 800 training examples, pieces of 32" in out
    assert "The optimizer is" not in out  # plain SGD: ε_opt is its optimum
    assert main(["noise-scale", *SMALL, "optimizer=adam", "--lr", "1e-3", "--steps", "2"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "The optimizer is torch.optim.Adam: ε_opt is plain SGD's optimum, a scale" in out


def test_noise_scale_command_trains_at_a_studys_eta0(tmp_path, capsys) -> None:
    url = f"sqlite:///{tmp_path}/ref.db"
    trials = ROOT / "docs" / "results" / "sgd_mnist1d" / "trials.csv"
    assert main(["import", str(trials), "--storage", url, "--study", "sgd"]) == 0
    from lrbatch.report.report import build_report
    from lrbatch.search.study_io import open_study

    report = build_report(open_study(url, "sgd"))
    capsys.readouterr()
    argv = ["noise-scale", *SMALL, "--study", "sgd", "--storage", url, "--steps", "2"]
    assert main([*argv, "--points", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["lr"] == pytest.approx(report.base_lr) and out["batch_size"] == report.base_batch
    assert out["lr_source"] == "η0 of study 'sgd'"
    # recorded on the study: the report draws the SGD optimum it implies
    after = build_report(open_study(url, "sgd"))
    run = after.noise_run
    last = out["trajectory"][-1]
    assert run is not None and run.plain_sgd and run.step == last["step"] == 2
    assert (run.b_simple, run.eps_max) == pytest.approx((last["b_simple"], last["eps_max"]))
    assert run.sgd_optimum(64) == pytest.approx(last["eps_max"] / (1 + last["b_simple"] / 64))
    figure = after.figures()[0]
    (curve,) = [s for s in figure.series if s.name.startswith("SGD optimum from ε_max")]
    assert curve.y[0] == pytest.approx(run.sgd_optimum(curve.x[0]))
    assert after.noise is None  # imported trials recorded no noise scale: nothing to compare


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "-1"], "--lr -1: accepted: a positive learning rate"),
        (["--lr", "nan"], "--lr nan: accepted: a positive learning rate"),
        (["--steps", "0"], "--steps 0: accepted: a positive number of optimizer steps"),
        (["--points", "0"], "--points 0: accepted: a positive number of measurements"),
        (["--lr", "0.1", "--study", "x"], "--lr given with --study: accepted: one of them"),
        (["sweep.batch_sizes=[0]"], "sweep.batch_sizes=[0] is not accepted"),
        (["model.hiden=3"], "model.hiden=3 is not accepted; lrbatch.models.MLP accepts"),
        (["optimizer=adam"], "--lr missing with optimizer torch.optim.Adam: accepted: --lr"),
        (["optimizer=momentum"], "--lr missing with optimizer torch.optim.SGD (momentum 0.9)"),
    ],
)
def test_noise_scale_bad_input_is_one_line_and_exit_code_2(
    argv: list[str], message: str, capsys
) -> None:
    assert main(["noise-scale", *argv]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("error: ") and message in out
