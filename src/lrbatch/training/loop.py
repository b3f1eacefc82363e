"""One trial, or a pack of learning rates at one (effective batch, seed), trained and measured:
:func:`train` and :func:`train_pack`.

The training loop itself, top to bottom, is :func:`lrbatch.training.attempt.train_once`: one
attempt from the initial weights to the results. Here the attempts are made: a pack that runs
out of GPU memory in training is halved and its halves train one after the other; a single
trial starts again from the beginning with half the micro-batch and more gradient accumulation
(the same effective batch, the same result); one that runs out in evaluation halves the
evaluation batch and evaluates again.

Every trial also records its gradient noise scale B_simple at four points and its gradient
norm along the run, from the gradients its steps compute anyway
(:class:`lrbatch.training.gradient_noise.TrialNoise`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import lightning as L
import torch
from omegaconf import DictConfig
from torch import nn

from lrbatch.data import TensorData
from lrbatch.training.attempt import train_once
from lrbatch.training.pack import check_pack
from lrbatch.training.trial import (
    ModelDoesNotFitError,
    Probe,
    TrialResult,
    build_model,
    evaluate,
    free_memory,
    load_data,
    lr_factor,
    make_fabric,
    split_batch,
    training_length,
    uses_training_step,
)

__all__ = [
    "ModelDoesNotFitError",
    "Probe",
    "TrialResult",
    "build_model",
    "evaluate",
    "load_data",
    "lr_factor",
    "make_fabric",
    "split_batch",
    "train",
    "train_pack",
    "training_length",
    "why_not_packable",
]


def why_not_packable(cfg: DictConfig, model: nn.Module, example: torch.Tensor) -> str | None:
    """Why learning rates of ``cfg`` cannot train together in a pack, or None when they can.

    Float16 mixed precision scales every member's loss with one GradScaler (it would couple
    them); a LightningModule with its own ``training_step`` computes one loss per model; any
    other model is packed and checked against its members alone on ``example`` inputs
    (:func:`lrbatch.training.pack.check_pack`).
    """
    if str(cfg.hardware.precision) == "16-mixed":
        return (
            "hardware.precision=16-mixed scales the loss with one GradScaler, which would "
            "couple the members"
        )
    if uses_training_step(model):
        return f"{type(model).__name__} computes its own loss in training_step"
    reason = check_pack(model, example)
    return None if reason is None else f"{type(model).__name__}: {reason}"


def train(
    cfg: DictConfig,
    batch_size: int,
    lr: float,
    seed: int,
    data: TensorData | None = None,
    fabric: L.Fabric | None = None,
    micro_batch: int | None = None,
    noise_window: int | None = None,
    probe: Probe | None = None,
) -> TrialResult:
    """Train one model and measure it: a pack of one learning rate (:func:`train_pack`).

    A run out of memory in training starts again, from the same initial weights and example
    order, with at most half the micro-batch; one out of memory in evaluation evaluates again
    at half the evaluation batch. ``oom_micro_batches`` and ``oom_eval_batches`` record it.

    Args:
        cfg: the composed lrbatch config.
        batch_size: effective batch size (examples per optimizer step).
        lr: peak learning rate, per optimizer step.
        seed: fixes the initial weights and the order of examples.
        data: the dataset, already on the device (built from ``cfg.dataset`` if None).
        fabric: this worker's Fabric (made from ``cfg.hardware`` if None).
        micro_batch: override of the micro-batch (default: from ``hardware.max_micro_batch``).
        noise_window: optimizer steps each recorded B_simple point averages over (0: record
            none; None: up to 4, :class:`lrbatch.training.gradient_noise.TrialNoise`).
        probe: run at chosen steps (``lrbatch noise-scale`` measures there); a run that starts
            again after running out of memory calls it again from the start.

    Returns:
        The trial's result; a diverged run returns early with ``diverged=True``.

    Raises:
        ModelDoesNotFitError: out of memory even at one example per forward pass.
    """
    return _train(cfg, batch_size, [lr], seed, data, fabric, micro_batch, noise_window, probe)[0]


def train_pack(
    cfg: DictConfig,
    batch_size: int,
    lrs: Sequence[float],
    seed: int,
    data: TensorData | None = None,
    fabric: L.Fabric | None = None,
    micro_batch: int | None = None,
    noise_window: int | None = None,
) -> list[TrialResult]:
    """Train one model per learning rate, together as one pack, and measure each.

    Each member's result is the one :func:`train` gives that learning rate alone (the same
    initial weights, examples, optimizer and schedule arithmetic, up to float rounding): the
    pack only runs their forward and backward passes together. A member that diverges, or
    reaches the target budget's target, stops there and the others go on without it.

    A pack out of memory in training is halved: its halves train one after the other, each
    halved again while out of memory, and only a single member halves its micro-batch
    (``oom_packs`` and ``oom_micro_batches`` record it). Where the members cannot train together
    (:func:`why_not_packable`) they train one at a time, with the reason in ``pack_fallback``.

    Args:
        lrs: the members' peak learning rates, per optimizer step.
        The others: as :func:`train`'s.

    Returns:
        One result per learning rate, in order; ``wall_time_s`` is this call's time divided by
        the number of learning rates.

    Raises:
        ModelDoesNotFitError: out of memory even at one example per forward pass.
    """
    return _train(cfg, batch_size, lrs, seed, data, fabric, micro_batch, noise_window, None)


def _train(
    cfg: DictConfig,
    batch_size: int,
    lrs: Sequence[float],
    seed: int,
    data: TensorData | None,
    fabric: L.Fabric | None,
    micro_batch: int | None,
    noise_window: int | None,
    probe: Probe | None,
) -> list[TrialResult]:
    """:func:`train_pack` with :func:`train`'s probe (one member only)."""
    started = time.perf_counter()
    if probe is not None and len(lrs) != 1:
        raise ValueError(f"a probe watches one trial: it was given a pack of {len(lrs)}")
    if not lrs:
        return []
    fabric = fabric if fabric is not None else make_fabric(cfg.hardware)
    data = (data if data is not None else load_data(cfg)).to(fabric.device)
    micro = split_batch(batch_size, micro_batch or cfg.hardware.max_micro_batch)[0]
    eval_batches = [min(int(cfg.hardware.eval_batch), len(data.x_val))]
    fallback = None
    if len(lrs) > 1:
        model = build_model(cfg, data).to(fabric.device)
        fallback = why_not_packable(cfg, model, data.x_train[: min(8, data.num_train)])
        del model
    packs = [[lr] for lr in lrs] if fallback else [list(lrs)]

    def fit(lrs: list[float], micro: int, oom_packs: tuple[int, ...]) -> list[TrialResult]:
        """The pack's results, halving the pack, then the micro-batch, while out of memory."""
        accumulation = split_batch(batch_size, micro)[1]
        oom_micro_batches: list[int] = []
        while True:
            try:
                results = train_once(
                    cfg,
                    batch_size,
                    lrs,
                    seed,
                    data,
                    fabric,
                    micro,
                    accumulation,
                    eval_batches,
                    noise_window,
                    probe,
                )
            except ModelDoesNotFitError:  # in evaluation: a smaller micro-batch would not help
                raise
            except torch.OutOfMemoryError as error:
                if len(lrs) == 1 and micro == 1:
                    raise ModelDoesNotFitError(
                        f"the model does not fit in {fabric.device} memory in training even at "
                        f"micro-batch 1 (effective batch {batch_size}; out of memory at "
                        f"micro-batches {[*oom_micro_batches, micro]})"
                    ) from error
            else:
                return [
                    replace(r, oom_micro_batches=tuple(oom_micro_batches), oom_packs=oom_packs)
                    for r in results
                ]
            # (outside the except block, so the failed attempt's models and tensors are free)
            free_memory(fabric)
            if len(lrs) > 1:
                half, smaller = (len(lrs) + 1) // 2, (*oom_packs, len(lrs))
                return fit(lrs[:half], micro, smaller) + fit(lrs[half:], micro, smaller)
            oom_micro_batches.append(micro)
            micro, accumulation = split_batch(batch_size, micro // 2)

    results = [result for pack in packs for result in fit(pack, micro, ())]
    wall_time_s = (time.perf_counter() - started) / len(lrs)
    return [replace(r, wall_time_s=wall_time_s, pack_fallback=fallback) for r in results]
