"""Packed trials: each member of a pack gets the result it gets trained alone."""

import pytest
from conftest import TINY

from lrbatch.config import load_config
from lrbatch.train import TrialResult, train, train_pack

# MNIST-1D, 400 training examples: 12 steps of batch 32, in micro-batches of 16.
SMALL = [
    *TINY,
    "dataset.num_samples=500",
    "budget.epochs=1",
    "model.hidden=[16]",
    "hardware.max_micro_batch=16",
]
OPTIMIZERS = ["sgd", "momentum", "adam", "adamw", "rmsprop", "lion", "signsgd"]


def assert_same(packed: TrialResult, alone: TrialResult) -> None:
    """The packed member's result is the trial's alone (to float rounding)."""
    assert (packed.steps, packed.diverged, packed.reached_target) == (
        alone.steps,
        alone.diverged,
        alone.reached_target,
    )
    assert packed.metrics.keys() == alone.metrics.keys()
    for name, value in alone.metrics.items():
        assert packed.metrics[name] == pytest.approx(value, rel=1e-5), name
    assert packed.value == pytest.approx(alone.value, rel=1e-5)
    assert [s for s, _ in packed.grad_norms] == [s for s, _ in alone.grad_norms]
    assert [n for _, n in packed.grad_norms] == pytest.approx(
        [n for _, n in alone.grad_norms], rel=1e-5
    )
    assert [r.estimate.b_simple for r in packed.noise_scale] == pytest.approx(
        [r.estimate.b_simple for r in alone.noise_scale], rel=1e-4, nan_ok=True
    )


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_mlp_members_train_as_alone_with_every_optimizer(optimizer: str) -> None:
    decay = [] if optimizer == "signsgd" else ["optimizer.weight_decay=0.01"]
    cfg = load_config(overrides=[*SMALL, f"optimizer={optimizer}", *decay])
    lrs = [0.03, 0.1, 0.3] if optimizer in ("sgd", "momentum") else [0.001, 0.003, 0.01]
    packed = train_pack(cfg, 32, lrs, seed=0)
    assert [r.pack for r in packed] == [3, 3, 3] and packed[0].pack_fallback is None
    assert (packed[0].micro_batch, packed[0].accumulation_steps) == (16, 2)
    for lr, result in zip(lrs, packed, strict=True):
        assert_same(result, train(cfg, 32, lr, seed=0))
    assert len({r.metrics["val_loss"] for r in packed}) == 3  # the members did differ


def test_a_diverging_member_is_frozen_and_the_others_go_on_unaffected() -> None:
    cfg = load_config(overrides=[*SMALL, "budget.check_every=2"])
    lrs = [0.1, 50.0, 0.3]
    packed = train_pack(cfg, 32, lrs, seed=0)
    assert [r.pack for r in packed] == [3, 3, 3] and packed[0].pack_fallback is None
    assert packed[1].diverged and packed[1].steps < 12
    assert not packed[0].diverged and packed[0].steps == packed[2].steps == 12
    for lr, result in zip(lrs, packed, strict=True):
        assert_same(result, train(cfg, 32, lr, seed=0))
