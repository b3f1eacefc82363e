"""One trial: train a model at one (effective batch, learning rate, seed) and measure it.

Lightning Fabric runs the loop (device placement, precision, backward) and the loop itself is
written out, top to bottom: the whole dataset sits on the device and each step indexes it, so
a tiny model is not drowned in DataLoader and per-step logging overhead.

For a given (batch, seed), every learning rate starts from the same initial weights and sees
the examples in the same order (docs/science.md, *Measurement practice*).

A trial that runs out of GPU memory in training starts again from the beginning with half the
micro-batch and more gradient accumulation (the same effective batch, the same result); one
that runs out in evaluation halves the evaluation batch and evaluates again.

Every trial also records its gradient noise scale B_simple at four points and its gradient
norm along the run, from the gradients its steps compute anyway
(:class:`lrbatch.training.gradient_noise.TrialNoise`).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lrbatch.config import BudgetConfig, ScheduleConfig
from lrbatch.data import TensorData
from lrbatch.science import NoiseRecord
from lrbatch.training.gradient_noise import TrialNoise
from lrbatch.training.pack import Pack, check_pack, pack_models
from lrbatch.training.packed_step import packed_step
from lrbatch.training.trial import (
    ModelDoesNotFitError,
    Probe,
    build_model,
    evaluate,
    evaluate_in_memory,
    free_memory,
    load_data,
    lr_factor,
    make_fabric,
    split_batch,
    target_met,
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


@dataclass(frozen=True)
class TrialResult:
    """What one trial measured (the value the study records is the worker's to choose from
    it: :func:`lrbatch.workers.worker.trial_value`).

    Attributes:
        metrics: every metric measured at the end (``val_loss``, ``val_acc``, ``train_loss``...).
        diverged: the loss became NaN/inf or exceeded ``divergence_factor`` × its start.
        steps: optimizer steps taken.
        samples: training examples processed (steps × effective batch).
        micro_batch: examples per forward/backward pass in the run that finished.
        accumulation_steps: micro-batches per optimizer step (micro × steps == effective batch).
        eval_batch: examples per forward pass in the evaluations that counted (at most the
            validation split's size).
        wall_time_s: seconds for the whole trial, every attempt that ran out of memory included;
            for a member of :func:`train_pack`, the call's seconds divided by its learning rates
            (what the trial cost, so that the members' times add up to the call's).
        device: the device's name (``cpu`` or the GPU model).
        reached_target: target budget only: whether ``budget.target`` was reached.
        oom_micro_batches: micro-batches (examples) that ran out of memory in training, in order;
            each one restarted the trial with a smaller one. Empty when none did.
        oom_eval_batches: evaluation batches (examples) that ran out of memory, in order; each
            one was halved and the evaluation repeated. Empty when none did.
        noise_scale: B_simple at the start, 10%, 50% and end of the planned steps, each averaged
            over a window of up to 4 steps (:class:`lrbatch.training.gradient_noise.TrialNoise`);
            windows a run that stopped early never reached are left out.
        grad_norms: (step, |G_B|): the norm of the batch gradient the optimizer stepped with
            (mean loss over the effective batch), at up to 32 evenly spaced steps.
        pack: members the trial trained with, at the start (1: alone); members that stop
            early (diverged, or reached the target) leave the pack at their last step.
        oom_packs: sizes of the packs that ran out of memory in training, in order; each was
            halved and its halves trained one after the other. Empty when none did.
        pack_fallback: why the learning rates of a :func:`train_pack` call trained one at a
            time instead of as a pack; None when they packed (or there was one).
    """

    metrics: dict[str, float]
    diverged: bool
    steps: int
    samples: int
    micro_batch: int
    accumulation_steps: int
    eval_batch: int
    wall_time_s: float
    device: str
    reached_target: bool | None = None
    oom_micro_batches: tuple[int, ...] = ()
    oom_eval_batches: tuple[int, ...] = ()
    noise_scale: tuple[NoiseRecord, ...] = ()
    grad_norms: tuple[tuple[int, float], ...] = ()
    pack: int = 1
    oom_packs: tuple[int, ...] = ()
    pack_fallback: str | None = None


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


@dataclass
class _Member:
    """One learning rate of a pack while it trains."""

    row: int  # its place in the pack's learning rates (and in step_losses)
    lr: float
    model: nn.Module
    optimizer: Any  # Fabric's wrapper of the optimizer over this member's own parameters
    noise: TrialNoise
    initial_loss: float = math.inf
    metrics: dict[str, float] = field(default_factory=dict)  # its last evaluation


def _member_losses(
    pack: Pack, x: torch.Tensor, y: torch.Tensor, task: str, step: int, custom: bool
) -> torch.Tensor:
    """Each member's mean loss over the examples ``(x, y)``: ``[K]``."""
    if custom:  # a user's LightningModule computes its own loss (never packed: one member)
        out = cast(Any, pack.members[0]).training_step((x, y), step)
        return (out["loss"] if isinstance(out, dict) else out).reshape(1)
    outputs = pack(x)  # [K, N, ...]
    if len(outputs) == 1:
        loss = F.cross_entropy if task == "classification" else F.mse_loss
        return loss(outputs[0], y).reshape(1)
    # every member at once: the same per-example losses, each member's mean over its own
    k = len(outputs)
    if task == "classification":
        targets = y.expand(k, *y.shape).flatten(0, 1)
        each = F.cross_entropy(outputs.flatten(0, 1), targets, reduction="none")
    else:
        each = F.mse_loss(outputs, y.expand_as(outputs), reduction="none")
    return each.reshape(k, -1).mean(1)


def _train_once(
    cfg: DictConfig,
    batch_size: int,
    lrs: Sequence[float],
    seed: int,
    data: TensorData,
    fabric: L.Fabric,
    micro: int,
    accumulation: int,
    eval_batches: list[int],
    noise_window: int | None = None,
    probe: Probe | None = None,
) -> list[TrialResult]:
    """One attempt at the trials of :func:`train_pack`, from the initial weights to the results.

    Every member starts from the same weights and reads the same examples; the pack trains
    them together (one forward and backward pass per micro-batch over all of them, each with its
    own optimizer). A member that diverges, or reaches the target, stops there: its result is
    taken, and the others go on as a smaller pack. One member is a plain trial (:func:`train`).

    The arguments are those of :func:`train_pack`, except:

    Args:
        micro: examples per forward/backward pass.
        accumulation: micro-batches per optimizer step (micro × accumulation == batch_size).
        eval_batches: see :func:`evaluate_in_memory`; the last one is used.
        probe: as :func:`train`'s (one member only).

    Raises:
        torch.OutOfMemoryError: in training; the caller may try again with a smaller pack or
            micro-batch.
        ModelDoesNotFitError: in evaluation, even at one example per pass.
    """
    # Plain copies of the settings: an OmegaConf lookup inside the loop costs ~20 µs each.
    schedule = cast(ScheduleConfig, OmegaConf.to_object(cfg.schedule))
    budget = cast(BudgetConfig, OmegaConf.to_object(cfg.budget))
    metric_name, direction = str(cfg.study.metric), str(cfg.study.direction)
    max_steps = training_length(cfg.budget, data.num_train, batch_size)
    total_samples = max_steps * batch_size  # the schedule's length, in samples
    eval_every = max(1, round(budget.eval_every_epochs * data.num_train / batch_size))
    is_target = budget.kind == "target"
    target = float(budget.target) if budget.target is not None else math.nan
    device = torch.cuda.get_device_name(fabric.device) if fabric.device.type == "cuda" else "cpu"

    torch.manual_seed(seed)  # same initial weights for every lr at this seed
    first_model = build_model(cfg, data)
    custom_loss = uses_training_step(first_model)
    scaler = getattr(fabric.strategy.precision, "scaler", None)  # float16's loss scaling
    members: list[_Member] = []
    for row, lr in enumerate(lrs):
        model = first_model if row == 0 else copy.deepcopy(first_model)
        optimizer = instantiate(cfg.optimizer)(model.parameters(), lr=lr)
        wrapped, optimizer = fabric.setup(model, optimizer)
        model = wrapped.module  # called inside fabric.autocast(): skips the wrapper's ~45 µs/step
        params = [p for p in model.parameters() if p.requires_grad]
        noise = TrialNoise(
            max_steps, batch_size, params, noise_window, scaler.get_scale if scaler else None
        )
        members.append(_Member(row, lr, model.train(), optimizer, noise))
    pack = pack_models([member.model for member in members])
    # every member's optimizer step at once where it is written out (else one at a time; and
    # float16's loss scale steps through Fabric's optimizer, which unscales and skips)
    stepper = (
        packed_step(
            [cast(Any, m.optimizer).optimizer for m in members],
            pack.stacks,
            [pack.params(k) for k in range(len(members))],
        )
        if scaler is None
        else None
    )
    halves = math.ceil(batch_size / 2)  # a measured step without accumulation: two halves

    # The order of examples depends on the seed alone: a fresh permutation each epoch, read as
    # one stream, so every step has exactly batch_size examples and the sample budget is exact
    # at every batch size (a step that straddles two epochs may repeat an example).
    order_rng = torch.Generator().manual_seed(seed)
    epochs_needed = math.ceil(total_samples / data.num_train)
    order = torch.cat(
        [torch.randperm(data.num_train, generator=order_rng) for _ in range(epochs_needed)]
    ).to(fabric.device)

    # each member's loss per step, filled without a device sync
    step_losses = torch.zeros(len(lrs), max_steps, device=fabric.device)
    rows = torch.arange(len(lrs), device=fabric.device)  # the members still training
    results: dict[int, TrialResult] = {}
    step = 0

    def finish(member: _Member, diverged: bool, reached: bool | None) -> None:
        metrics = member.metrics
        if not diverged:
            if not is_target:  # (the target budget evaluated at its last step already)
                metrics = evaluate_in_memory(member.model, data, fabric, eval_batches)
            tail = max(1, step // 10)  # train_loss: mean over the last 10% of the steps taken
            metrics["train_loss"] = step_losses[member.row, step - tail : step].mean().item()
        results[member.row] = TrialResult(
            metrics=metrics,
            diverged=diverged,
            steps=step,
            samples=step * batch_size,
            micro_batch=micro,
            accumulation_steps=accumulation,
            eval_batch=eval_batches[-1],
            wall_time_s=math.nan,  # train_pack() times the pack, all attempts included
            device=device,
            reached_target=reached if is_target else None,
            oom_eval_batches=tuple(eval_batches[:-1]),
            noise_scale=member.noise.records(step),
            grad_norms=member.noise.grad_norms(),
            pack=len(lrs),
        )

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # for a probe
        with fabric.autocast():
            return _member_losses(pack, x, y, data.task, step, custom_loss)[0].float()

    if probe is not None and 0 in probe.steps:
        probe.call(0, loss_fn, members[0].noise.params)
    for step in range(1, max_steps + 1):
        first = (step - 1) * batch_size
        factor = lr_factor(schedule, first, total_samples)
        if stepper is None:
            for member in members:
                for group in member.optimizer.param_groups:
                    group["lr"] = member.lr * factor
        indices = order[first : first + batch_size]
        noise = members[0].noise
        measuring = step in noise.measured_steps  # a few dozen steps of the trial
        # each member's own gradient: for its optimizer, or where its noise record reads it
        sharing = stepper is None or measuring or step in noise.curve_steps
        if accumulation > 1:
            chunks = indices.split(micro)
        else:
            chunks = indices.split(halves) if measuring else (indices,)
        for chunk in chunks:
            x, y = data.x_train[chunk], data.y_train[chunk]
            with fabric.autocast():
                losses = _member_losses(pack, x, y, data.task, step, custom_loss)
            if len(chunks) > 1:  # each piece's share of the mean over the effective batch
                losses = losses.float() * (len(chunk) / batch_size)
            fabric.backward(losses.sum())  # members share no parameter: each its own gradient
            if sharing:
                pack.share_grads()
            step_losses[rows, step - 1] += losses.detach()
            if measuring:
                for member in members:
                    member.noise.piece_done(len(chunk))
        for member in members:
            member.noise.step_done(step)
            if stepper is None:
                member.optimizer.step()
        if stepper is not None:
            stepper.step([member.lr * factor for member in members])
        pack.zero_grad()  # (every member's gradients: stepped together or one at a time)
        if probe is not None and step in probe.steps:
            probe.call(step, loss_fn, members[0].noise.params)
        if step == 1 or step % budget.check_every == 0 or step == max_steps:
            current = step_losses[:, step - 1].tolist()
            for member in members:
                loss = current[member.row]
                member.initial_loss = loss if step == 1 else member.initial_loss
                if not math.isfinite(loss) or loss > budget.divergence_factor * max(
                    member.initial_loss, 1e-12
                ):
                    finish(member, diverged=True, reached=None)
        if is_target and (step % eval_every == 0 or step == max_steps):
            for member in members:
                if member.row not in results:
                    member.metrics = evaluate_in_memory(member.model, data, fabric, eval_batches)
                    if target_met(member.metrics[metric_name], target, direction):
                        finish(member, diverged=False, reached=True)
        if len(results) > len(lrs) - len(members):  # members stopped: the rest go on as a pack
            kept = [k for k, member in enumerate(members) if member.row not in results]
            members = [members[k] for k in kept]
            if not members:
                break
            pack = pack_models([member.model for member in members], stacked=stepper is not None)
            stepper = None if stepper is None else stepper.keep(kept, pack.stacks)
            rows = torch.tensor([member.row for member in members], device=fabric.device)
    for member in members:
        if member.row not in results:
            finish(member, diverged=False, reached=False)
    return [results[row] for row in range(len(lrs))]


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
                results = _train_once(
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
