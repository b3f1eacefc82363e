"""One attempt at a pack's trials, top to bottom: from the initial weights, each optimizer step,
the checks that stop a member and the probes, to each member's result.

:func:`lrbatch.training.loop.train_pack` makes the attempts (one that runs out of memory starts
again with a smaller pack or micro-batch). Lightning Fabric runs the loop (device placement,
precision, backward) and the loop itself is written out: the whole dataset sits on the device
and each step indexes it, so a tiny model is not drowned in DataLoader and per-step logging
overhead.

For a given (batch, seed), every learning rate starts from the same initial weights and sees
the examples in the same order (docs/science.md, *Measurement practice*).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from lrbatch.config import BudgetConfig, ScheduleConfig
from lrbatch.data import TensorData
from lrbatch.training.gradient_noise import TrialNoise
from lrbatch.training.pack import Pack, pack_models
from lrbatch.training.packed_step import packed_step
from lrbatch.training.trial import (
    Probe,
    TrialResult,
    build_model,
    evaluate_in_memory,
    lr_factor,
    target_met,
    training_length,
    uses_training_step,
)

__all__ = ["train_once"]


def train_once(
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
    """One attempt at the trials of :func:`lrbatch.training.loop.train_pack`, from the initial
    weights to the results.

    Every member starts from the same weights and reads the same examples; the pack trains
    them together (one forward and backward pass per micro-batch over all of them, each with its
    own optimizer). A member that diverges, or reaches the target, stops there: its result is
    taken, and the others go on as a smaller pack. One member is a plain trial
    (:func:`lrbatch.training.loop.train`).

    The arguments are those of :func:`lrbatch.training.loop.train_pack`, except:

    Args:
        micro: examples per forward/backward pass.
        accumulation: micro-batches per optimizer step (micro × accumulation == batch_size).
        eval_batches: see :func:`lrbatch.training.trial.evaluate_in_memory`; the last one is used.
        probe: as :func:`lrbatch.training.loop.train`'s (one member only).

    Raises:
        torch.OutOfMemoryError: in training; the caller may try again with a smaller pack or
            micro-batch.
        ModelDoesNotFitError: in evaluation, even at one example per pass.
    """
    run = _Run(
        cfg, batch_size, lrs, seed, data, fabric, micro, accumulation, eval_batches, noise_window
    )
    if probe is not None and 0 in probe.steps:  # at the initial weights
        run.probe(probe)
    for step in range(1, run.max_steps + 1):
        run.take_step(step)  # every member: forward, backward, its loss and noise, optimizer step
        if probe is not None and step in probe.steps:
            run.probe(probe)
        if step == 1 or step % run.check_every == 0 or step == run.max_steps:
            run.stop_diverged()
        if run.is_target and (step % run.eval_every == 0 or step == run.max_steps):
            run.stop_at_target()
        if not run.drop_stopped():  # those that stopped leave the pack; none left: done
            break
    return run.results()  # those still training finish at the last step


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


class _Run:
    """One attempt while it trains: its settings, the members still training, their pack, each
    member's loss at each step, and the results of the members that stopped."""

    def __init__(
        self,
        cfg: DictConfig,
        batch_size: int,
        lrs: Sequence[float],
        seed: int,
        data: TensorData,
        fabric: L.Fabric,
        micro: int,
        accumulation: int,
        eval_batches: list[int],
        noise_window: int | None,
    ) -> None:
        """Every member at the seed's initial weights with its own optimizer, their pack, and
        the order of the examples. The arguments are those of :func:`train_once`."""
        self.batch_size, self.lrs, self.data, self.fabric = batch_size, lrs, data, fabric
        self.micro, self.accumulation, self.eval_batches = micro, accumulation, eval_batches
        self.halves = math.ceil(batch_size / 2)  # a measured step without accumulation: two halves
        # Plain copies of the settings: an OmegaConf lookup inside the loop costs ~20 µs each.
        self.schedule = cast(ScheduleConfig, OmegaConf.to_object(cfg.schedule))
        budget = cast(BudgetConfig, OmegaConf.to_object(cfg.budget))
        self.check_every, self.divergence_factor = budget.check_every, budget.divergence_factor
        self.metric_name, self.direction = str(cfg.study.metric), str(cfg.study.direction)
        self.max_steps = training_length(cfg.budget, data.num_train, batch_size)
        self.total_samples = self.max_steps * batch_size  # the schedule's length, in samples
        self.eval_every = max(1, round(budget.eval_every_epochs * data.num_train / batch_size))
        self.is_target = budget.kind == "target"
        self.target = float(budget.target) if budget.target is not None else math.nan
        self.device = (
            torch.cuda.get_device_name(fabric.device) if fabric.device.type == "cuda" else "cpu"
        )

        torch.manual_seed(seed)  # same initial weights for every lr at this seed
        first_model = build_model(cfg, data)
        self.custom_loss = uses_training_step(first_model)
        scaler = getattr(fabric.strategy.precision, "scaler", None)  # float16's loss scaling
        loss_scale = scaler.get_scale if scaler else None
        self.members: list[_Member] = []  # those still training
        for row, lr in enumerate(lrs):
            model = first_model if row == 0 else copy.deepcopy(first_model)
            optimizer = instantiate(cfg.optimizer)(model.parameters(), lr=lr)
            wrapped, optimizer = fabric.setup(model, optimizer)
            # called inside fabric.autocast(): skips the wrapper's ~45 µs/step
            model = wrapped.module
            params = [p for p in model.parameters() if p.requires_grad]
            noise = TrialNoise(self.max_steps, batch_size, params, noise_window, loss_scale)
            self.members.append(_Member(row, lr, model.train(), optimizer, noise))
        self.pack = pack_models([member.model for member in self.members])
        # every member's optimizer step at once where it is written out (else one at a time; and
        # float16's loss scale steps through Fabric's optimizer, which unscales and skips)
        self.stepper = (
            packed_step(
                [cast(Any, m.optimizer).optimizer for m in self.members],
                self.pack.stacks,
                [self.pack.params(k) for k in range(len(self.members))],
            )
            if scaler is None
            else None
        )
        self.order = _example_order(seed, data.num_train, self.total_samples).to(fabric.device)

        # each member's loss per step, filled without a device sync
        self.step_losses = torch.zeros(len(lrs), self.max_steps, device=fabric.device)
        self.rows = torch.arange(len(lrs), device=fabric.device)  # the members still training
        self.finished: dict[int, TrialResult] = {}  # by row: the members that stopped
        self.step = 0  # optimizer steps taken

    def take_step(self, step: int) -> None:
        """Optimizer step ``step`` of every member: the schedule's learning rate, the forward and
        backward passes (one per micro-batch, or two halves where the noise scale measures),
        each member's loss and noise records, the optimizer steps."""
        self.step = step
        data, pack, stepper, members = self.data, self.pack, self.stepper, self.members
        first = (step - 1) * self.batch_size
        factor = lr_factor(self.schedule, first, self.total_samples)
        if stepper is None:
            for member in members:
                for group in member.optimizer.param_groups:
                    group["lr"] = member.lr * factor
        indices = self.order[first : first + self.batch_size]
        noise = members[0].noise
        measuring = step in noise.measured_steps  # a few dozen steps of the trial
        # each member's own gradient: for its optimizer, or where its noise record reads it
        sharing = stepper is None or measuring or step in noise.curve_steps
        if self.accumulation > 1:
            chunks = indices.split(self.micro)
        else:
            chunks = indices.split(self.halves) if measuring else (indices,)
        for chunk in chunks:
            x, y = data.x_train[chunk], data.y_train[chunk]
            with self.fabric.autocast():
                losses = _member_losses(pack, x, y, data.task, step, self.custom_loss)
            if len(chunks) > 1:  # each piece's share of the mean over the effective batch
                losses = losses.float() * (len(chunk) / self.batch_size)
            self.fabric.backward(losses.sum())  # members share no parameter: each its own gradient
            if sharing:
                pack.share_grads()
            self.step_losses[self.rows, step - 1] += losses.detach()
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

    def probe(self, probe: Probe) -> None:
        """Run ``probe`` at the steps taken, on the one member's parameters."""
        probe.call(self.step, self.probe_loss, self.members[0].noise.params)

    def probe_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The one member's mean training loss over ``(x, y)``, in the trial's precision."""
        with self.fabric.autocast():
            losses = _member_losses(self.pack, x, y, self.data.task, self.step, self.custom_loss)
        return losses[0].float()

    def stop_diverged(self) -> None:
        """Stop each member whose loss this step is NaN/inf or over ``divergence_factor`` × its
        loss at step 1 (one device sync)."""
        step = self.step
        current = self.step_losses[:, step - 1].tolist()
        for member in self.members:
            loss = current[member.row]
            member.initial_loss = loss if step == 1 else member.initial_loss
            if not math.isfinite(loss) or loss > self.divergence_factor * max(
                member.initial_loss, 1e-12
            ):
                self.finish(member, diverged=True, reached=None)

    def stop_at_target(self) -> None:
        """Evaluate each member still training; stop those that reached ``budget.target``."""
        for member in self.members:
            if member.row not in self.finished:
                member.metrics = evaluate_in_memory(
                    member.model, self.data, self.fabric, self.eval_batches
                )
                if target_met(member.metrics[self.metric_name], self.target, self.direction):
                    self.finish(member, diverged=False, reached=True)

    def drop_stopped(self) -> bool:
        """The members that stopped this step leave: the rest go on as a smaller pack.

        Returns:
            Whether any member trains on.
        """
        if len(self.finished) == len(self.lrs) - len(self.members):  # none stopped this step
            return True
        kept = [k for k, member in enumerate(self.members) if member.row not in self.finished]
        self.members = [self.members[k] for k in kept]
        if not self.members:
            return False
        stepper = self.stepper
        self.pack = pack_models(
            [member.model for member in self.members], stacked=stepper is not None
        )
        self.stepper = None if stepper is None else stepper.keep(kept, self.pack.stacks)
        self.rows = torch.tensor([member.row for member in self.members], device=self.fabric.device)
        return True

    def finish(self, member: _Member, diverged: bool, reached: bool | None) -> None:
        """Take ``member``'s result at the steps taken: evaluated (unless it diverged, or the
        target budget evaluated it at this step already) and its mean training loss."""
        step, metrics = self.step, member.metrics
        if not diverged:
            if not self.is_target:
                metrics = evaluate_in_memory(
                    member.model, self.data, self.fabric, self.eval_batches
                )
            tail = max(1, step // 10)  # train_loss: mean over the last 10% of the steps taken
            metrics["train_loss"] = self.step_losses[member.row, step - tail : step].mean().item()
        self.finished[member.row] = TrialResult(
            metrics=metrics,
            diverged=diverged,
            steps=step,
            samples=step * self.batch_size,
            micro_batch=self.micro,
            accumulation_steps=self.accumulation,
            eval_batch=self.eval_batches[-1],
            wall_time_s=math.nan,  # train_pack() times the pack, all attempts included
            device=self.device,
            reached_target=reached if self.is_target else None,
            oom_eval_batches=tuple(self.eval_batches[:-1]),
            noise_scale=member.noise.records(step),
            grad_norms=member.noise.grad_norms(),
            pack=len(self.lrs),
        )

    def results(self) -> list[TrialResult]:
        """Every member's result, in the order of the learning rates: those still training
        finish here, at the last planned step."""
        for member in self.members:
            self.finish(member, diverged=False, reached=False)
        return [self.finished[row] for row in range(len(self.lrs))]


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


def _example_order(seed: int, num_train: int, total_samples: int) -> torch.Tensor:
    """The indices of the training examples, in the order the steps read them.

    The order depends on the seed alone: a fresh permutation each epoch, read as one stream, so
    every step has exactly batch_size examples and the sample budget is exact at every batch
    size (a step that straddles two epochs may repeat an example).
    """
    order_rng = torch.Generator().manual_seed(seed)
    epochs_needed = math.ceil(total_samples / num_train)
    return torch.cat([torch.randperm(num_train, generator=order_rng) for _ in range(epochs_needed)])
