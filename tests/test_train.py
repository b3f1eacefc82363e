"""One trial: the same training whatever the micro-batch, deterministic, budgets and plug-ins."""

import math

import pytest
import torch
from conftest import TINY
from omegaconf import DictConfig

from lrbatch.config import load_config
from lrbatch.training.loop import (
    ModelDoesNotFitError,
    lr_factor,
    split_batch,
    train,
    training_length,
)
from lrbatch.workers.worker import trial_value

SMALL = ["dataset.num_samples=1000", "model.hidden=[32]", "budget.epochs=2"]


@pytest.mark.parametrize(
    ("batch", "limit", "expected"),
    [
        (512, None, (512, 1)),
        (512, 512, (512, 1)),
        (512, 128, (128, 4)),
        (96, 64, (48, 2)),
        (100, 30, (25, 4)),
    ],
)
def test_split_batch(batch: int, limit: int | None, expected: tuple[int, int]) -> None:
    assert split_batch(batch, limit) == expected


def test_accumulation_trains_the_same_model_as_one_big_batch() -> None:
    cfg = load_config(overrides=SMALL)
    whole = train(cfg, 64, 0.1, seed=0)
    accumulated = train(cfg, 64, 0.1, seed=0, micro_batch=16)
    assert (accumulated.micro_batch, accumulated.accumulation_steps) == (16, 4)
    assert accumulated.steps == whole.steps == 2 * 800 // 64
    assert accumulated.metrics["val_loss"] == pytest.approx(whole.metrics["val_loss"], rel=1e-4)


def test_same_seed_same_result_other_seed_other_result() -> None:
    cfg = load_config(overrides=SMALL)
    a, b, c = train(cfg, 32, 0.1, seed=0), train(cfg, 32, 0.1, seed=0), train(cfg, 32, 0.1, seed=1)
    assert a.metrics == b.metrics and a.metrics != c.metrics


def test_budgets_hold_samples_or_steps_fixed() -> None:
    cfg = load_config(overrides=SMALL)
    assert (
        training_length(cfg.budget, 800, 32) == 50 and training_length(cfg.budget, 800, 128) == 12
    )
    steps = load_config(overrides=[*SMALL, "budget=steps", "budget.steps=30"])
    assert train(steps, 128, 0.1, seed=0).steps == 30


def test_schedules_are_defined_in_samples() -> None:
    cfg = load_config(overrides=["schedule=warmup_cosine", "schedule.warmup_fraction=0.1"])
    total = 10_000
    assert lr_factor(cfg.schedule, 0, total) == pytest.approx(1 / 1000)
    assert lr_factor(cfg.schedule, 999, total) == pytest.approx(1.0)
    assert lr_factor(cfg.schedule, 1000 + 4500, total) == pytest.approx(0.5)
    assert lr_factor(cfg.schedule, total, total) == pytest.approx(0.0)
    linear = load_config(
        overrides=[
            "schedule=warmup_linear",
            "schedule.warmup_fraction=0",
            "schedule.warmup_samples=500",
            "schedule.final_lr_fraction=0.1",
        ]
    )
    assert lr_factor(linear.schedule, 499, total) == pytest.approx(1.0)
    assert lr_factor(linear.schedule, total, total) == pytest.approx(0.1)
    assert lr_factor(load_config().schedule, 5, total) == 1.0


TARGET = [
    "dataset=teacher",
    "dataset.num_samples=1000",
    "budget=target",
    "study.metric=val_acc",
    "study.direction=maximize",
    "budget.eval_every_epochs=0.5",
]


def test_target_budget_records_steps_to_reach_it() -> None:
    cfg = load_config(overrides=[*TARGET, "budget.target=0.3", "budget.max_epochs=20"])
    reached = train(cfg, 32, 0.1, seed=0)
    assert reached.reached_target and trial_value(cfg, reached) == reached.steps < training_length(
        cfg.budget, 800, 32
    )
    assert reached.steps % round(0.5 * 800 / 32) == 0  # checked every half epoch
    never_cfg = load_config(overrides=[*TARGET, "budget.target=1.01", "budget.max_epochs=1"])
    never = train(never_cfg, 32, 0.1, seed=0)
    assert never.reached_target is False and never.steps == 25
    assert math.isinf(trial_value(never_cfg, never))


def test_divergence_stops_early() -> None:
    cfg = load_config(overrides=SMALL)
    result = train(cfg, 32, 50.0, seed=0)
    assert result.diverged and math.isinf(trial_value(cfg, result)) and result.steps <= 25


def test_users_lightning_module_and_tensors_plug_in() -> None:
    cfg = load_config(
        overrides=[
            *TINY,
            "dataset._target_=plugins.blobs",
            "~dataset.train_split",
            "~dataset.num_samples",
            "~dataset.seed",
            "model._target_=plugins.LabelSmoothedNet",
            "~model.hidden",
            "~model.activation",
            "+model.smoothing=0.2",
            "budget.epochs=3",
        ]
    )
    result = train(cfg, 16, 0.5, seed=0)
    assert not result.diverged and result.metrics["val_acc"] > 0.6  # (chance: 1/3)


def memory_limited(*limits: str) -> DictConfig:
    """MNIST-1D (800 train, 200 val) on ``plugins.MemoryLimitedMLP`` with the given row limits."""
    return load_config(
        overrides=[
            *TINY,
            "dataset.num_samples=1000",
            "budget.epochs=2",
            "model._target_=plugins.MemoryLimitedMLP",
            "~model.hidden",
            "~model.activation",
            *limits,
        ]
    )


def test_out_of_memory_retries_with_smaller_micro_batch_and_same_result() -> None:
    retried = train(memory_limited("+model.max_rows=16"), 64, 0.1, seed=0)
    assert retried.oom_micro_batches == (64, 32)
    assert (retried.micro_batch, retried.accumulation_steps) == (16, 4)
    assert retried.steps == 2 * 800 // 64 and retried.oom_eval_batches == ()
    # As if it had run at micro-batch 16 from the start: same initial weights, same order.
    from_start = train(memory_limited("+model.max_rows=64"), 64, 0.1, seed=0, micro_batch=16)
    assert from_start.oom_micro_batches == ()
    assert retried.metrics["val_loss"] == pytest.approx(from_start.metrics["val_loss"], rel=1e-4)


@pytest.mark.parametrize(
    ("limit", "message"),
    [
        ("+model.max_rows=0", "in training even at micro-batch 1"),
        ("+model.max_eval_rows=0", "in evaluation even at hardware.eval_batch=1"),
    ],
)
def test_model_that_does_not_fit_at_one_example_says_so(limit: str, message: str) -> None:
    with pytest.raises(ModelDoesNotFitError, match=f"does not fit .* {message}") as raised:
        train(memory_limited(limit), 8, 0.1, seed=0)
    assert isinstance(raised.value, torch.OutOfMemoryError)
    assert isinstance(raised.value.__cause__, torch.OutOfMemoryError)


def test_out_of_memory_in_evaluation_shrinks_only_the_eval_batch() -> None:
    cfg = memory_limited("+model.max_eval_rows=50")
    result = train(cfg, 64, 0.1, seed=0)
    assert result.oom_eval_batches == (200, 100) and result.eval_batch == 50  # 200 val examples
    assert result.oom_micro_batches == () and result.micro_batch == 64
    unlimited = train(memory_limited(), 64, 0.1, seed=0)
    assert result.metrics["val_loss"] == pytest.approx(unlimited.metrics["val_loss"], rel=1e-4)
