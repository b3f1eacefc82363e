"""Packed trials: each member of a pack gets the result it gets trained alone."""

import pytest
import torch
from conftest import TINY
from plugins import LabelSmoothedNet

from lrbatch.config import load_config
from lrbatch.models import MLP
from lrbatch.training import pack as _pack
from lrbatch.training.loop import (
    TrialResult,
    load_data,
    make_fabric,
    train,
    train_pack,
    why_not_packable,
)
from lrbatch.workers.pack_choice import choose_pack, plan_trials

# MNIST-1D, 400 training examples: 12 steps of batch 32, in micro-batches of 16.
TRAINING = [*TINY, "dataset.num_samples=500", "budget.epochs=1", "hardware.max_micro_batch=16"]
SMALL = [*TRAINING, "model.hidden=[16]"]
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


@pytest.mark.parametrize(
    ("optimizer", "lrs", "stopped"),
    [("momentum", [0.1, 20.0, 60.0], [12, 3, 2]), ("adam", [0.003, 3.0, 30.0], [12, 2, 2])],
)
def test_members_left_in_a_shrinking_pack_keep_their_optimizer_state(
    optimizer: str, lrs: list[float], stopped: list[int]
) -> None:
    # Members leave at different steps (momentum: 3 -> 2 -> 1 member), the last one alone but
    # still stepped by the pack's optimizer step, with the momentum/averages it had.
    cfg = load_config(overrides=[*SMALL, f"optimizer={optimizer}", "budget.check_every=1"])
    packed = train_pack(cfg, 32, lrs, seed=0)
    assert [r.steps for r in packed] == stopped
    assert [r.diverged for r in packed] == [False, True, True]
    for lr, result in zip(lrs, packed, strict=True):
        assert_same(result, train(cfg, 32, lr, seed=0))


CONVOLUTIONAL = {
    "cnn": ["model=cnn", "model.channels=[4,8]", "model.hidden=16"],
    "resnet": [
        "dataset._target_=plugins.digit_images",
        "~dataset.train_split",
        "dataset.num_samples=400",
        "model=resnet",
        "model.width=4",
    ],
}


@pytest.mark.parametrize("model", CONVOLUTIONAL)
def test_convolutional_members_train_as_alone(model: str) -> None:
    """Grouped convolutions; ResNet's BatchNorm keeps each member's statistics (evaluation)."""
    overrides = [
        *TRAINING,
        *CONVOLUTIONAL[model],
        "optimizer=momentum",
        "optimizer.weight_decay=0.01",
    ]
    cfg = load_config(overrides=overrides)
    lrs = [0.01, 0.03, 0.1]
    packed = train_pack(cfg, 32, lrs, seed=0)
    assert [r.pack for r in packed] == [3, 3, 3] and packed[0].pack_fallback is None
    for lr, result in zip(lrs, packed, strict=True):
        assert_same(result, train(cfg, 32, lr, seed=0))


def user_model(target: str) -> list[str]:
    return [*TRAINING, f"model._target_={target}", "~model.hidden", "~model.activation"]


@pytest.mark.parametrize("target", ["mypkg.models.Net", "plugins.NormedNet"])
def test_a_users_model_packs_through_vmap(target: str) -> None:
    cfg = load_config(overrides=[*user_model(target), "optimizer=momentum"])
    lrs = [0.03, 0.1]
    packed = train_pack(cfg, 32, lrs, seed=0)
    assert [r.pack for r in packed] == [2, 2] and packed[0].pack_fallback is None
    for lr, result in zip(lrs, packed, strict=True):
        assert_same(result, train(cfg, 32, lr, seed=0))


def test_a_model_that_cannot_pack_trains_one_at_a_time_and_says_why() -> None:
    cfg = load_config(overrides=user_model("plugins.DropoutNet"))
    lrs = [0.1, 0.3]
    packed = train_pack(cfg, 32, lrs, seed=0)
    assert [r.pack for r in packed] == [1, 1]
    assert "DropoutNet" in packed[0].pack_fallback and "random" in packed[0].pack_fallback
    for lr, result in zip(lrs, packed, strict=True):
        assert_same(result, train(cfg, 32, lr, seed=0))


def test_float16_and_a_models_own_training_step_do_not_pack() -> None:
    cfg = load_config(overrides=[*SMALL, "hardware.precision=16-mixed"])
    model = MLP((40,), 10, [16])
    assert "GradScaler" in why_not_packable(cfg, model, torch.zeros(8, 40))
    assert why_not_packable(load_config(overrides=SMALL), model, torch.zeros(8, 40)) is None
    smoothed = LabelSmoothedNet((40,), 10)
    assert "training_step" in why_not_packable(
        load_config(overrides=SMALL), smoothed, torch.zeros(8, 40)
    )


def test_a_member_reaching_the_target_stops_there_as_alone() -> None:
    cfg = load_config(
        overrides=[
            *TINY,
            "dataset=teacher",
            "dataset.num_samples=1000",
            "model.hidden=[16]",
            "budget=target",
            "budget.target=0.3",
            "budget.max_epochs=4",
            "budget.eval_every_epochs=0.5",
            "study.metric=val_acc",
            "study.direction=maximize",
        ]
    )
    lrs = [0.003, 0.3, 1.0]
    packed = train_pack(cfg, 32, lrs, seed=0)
    assert packed[0].reached_target is False and packed[0].steps == 100
    assert packed[2].reached_target and packed[2].steps < 100
    for lr, result in zip(lrs, packed, strict=True):
        assert_same(result, train(cfg, 32, lr, seed=0))


def test_out_of_memory_halves_the_pack_before_the_micro_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pretend GPU that holds 64 rows (members × examples) per forward pass."""
    packed_forward = _pack._Layered.__call__

    def limited(self: _pack._Layered, x: torch.Tensor) -> torch.Tensor:
        if self.size * len(x) > 64:
            raise torch.OutOfMemoryError(f"CUDA out of memory: {self.size} × {len(x)} rows")
        return packed_forward(self, x)

    monkeypatch.setattr(_pack._Layered, "__call__", limited)
    cfg = load_config(overrides=SMALL)  # micro-batch 16
    lrs = [0.03, 0.1, 0.3, 1.0, 3.0, 0.01]
    packed = train_pack(cfg, 32, lrs, seed=0)
    assert [r.oom_packs for r in packed] == [(6,)] * 6
    assert [r.pack for r in packed] == [3] * 6 and packed[0].oom_micro_batches == ()
    for lr, result in zip(lrs, packed, strict=True):
        assert_same(result, train(cfg, 32, lr, seed=0))


def test_choose_pack_times_pack_sizes_up_to_the_limit() -> None:
    cfg = load_config(overrides=SMALL)
    fabric = make_fabric(cfg.hardware)
    choice = choose_pack(cfg, load_data(cfg), fabric, 32, limit=4, min_trial_seconds=0)
    assert set(choice.member_steps_per_s) <= {1, 2, 4} and 1 in choice.member_steps_per_s
    assert len(choice.member_steps_per_s) > 1  # (a pack of 2 at least was timed)
    assert all(rate > 0 for rate in choice.member_steps_per_s.values())
    assert choice.size in choice.member_steps_per_s and choice.why
    # the size that finishes a sweep soonest: rate over the trials the plan needs at that size
    worth = {k: r / plan_trials(k) for k, r in choice.member_steps_per_s.items()}
    assert worth[choice.size] >= 0.9 * max(worth.values())
    assert choice.size == 1 or worth[choice.size] > 1.1 * worth[1]
    assert choose_pack(cfg, load_data(cfg), fabric, 32, limit=1, min_trial_seconds=0).size == 1


def test_choose_pack_times_no_pack_where_a_trial_is_quicker_than_the_timing() -> None:
    cfg = load_config(overrides=SMALL)  # (a trial of a few milliseconds)
    fabric = make_fabric(cfg.hardware)
    quick = choose_pack(cfg, load_data(cfg), fabric, 32, limit=4)
    assert quick.size == 1 and list(quick.member_steps_per_s) == [1]
    assert quick.why.startswith("no pack size: a trial here trains in ~")
    # (the same trials with no threshold have packs timed: the test above)
