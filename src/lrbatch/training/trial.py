"""The parts of one trial: its micro-batches, length and schedule, its device, data and model,
its evaluation and what it measured (:mod:`lrbatch.training.attempt` runs the loop that puts
them together)."""

from __future__ import annotations

import gc
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from lrbatch.data import TensorData, load_tensors
from lrbatch.science import NoiseRecord
from lrbatch.training.gradient_noise import LossFn

__all__ = [
    "ModelDoesNotFitError",
    "Probe",
    "TrialResult",
    "build_model",
    "evaluate",
    "evaluate_in_memory",
    "free_memory",
    "load_data",
    "lr_factor",
    "make_fabric",
    "split_batch",
    "step_loss",
    "target_met",
    "training_length",
    "uses_training_step",
]


@dataclass(frozen=True)
class Probe:
    """Something to run during a trial at chosen steps, on the parameters after that step.

    Attributes:
        steps: optimizer steps taken when it runs (0: at the initial weights, before training).
        call: ``call(steps_taken, loss_fn, params)``; ``loss_fn(x, y)`` is the training loss
            (mean over the examples, in the trial's precision), ``params`` those that train.
            It must leave the parameters and their ``.grad`` alone (``torch.autograd.grad``).
    """

    steps: frozenset[int]
    call: Callable[[int, LossFn, list[torch.Tensor]], None]


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
            for a member of :func:`lrbatch.training.loop.train_pack`, the call's seconds divided
            by its learning rates (what the trial cost, so that the members' times add up to the
            call's).
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
        pack_fallback: why the learning rates of a :func:`lrbatch.training.loop.train_pack`
            call trained one at a time instead of as a pack; None when they packed (or there
            was one).
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


class ModelDoesNotFitError(torch.OutOfMemoryError):
    """Out of memory even at one example per forward pass: no smaller batch can help."""


def split_batch(effective_batch: int, max_micro_batch: int | None) -> tuple[int, int]:
    """(micro-batch, accumulation steps) with micro × accumulation == effective batch.

    Uses the fewest accumulation steps that divide the batch evenly and keep the micro-batch
    at or below ``max_micro_batch``.
    """
    if max_micro_batch is None or effective_batch <= max_micro_batch:
        return effective_batch, 1
    for steps in range(math.ceil(effective_batch / max_micro_batch), effective_batch + 1):
        if effective_batch % steps == 0:
            return effective_batch // steps, steps
    raise AssertionError("unreachable: steps == effective_batch always divides")


def training_length(budget: DictConfig, num_train: int, batch: int) -> int:
    """Optimizer steps a run of effective batch ``batch`` may take under the budget."""
    if budget.kind == "steps":
        return int(budget.steps)
    epochs = budget.max_epochs if budget.kind == "target" else budget.epochs
    return max(1, int(epochs * num_train) // batch)


def lr_factor(schedule: Any, samples_seen: int, total_samples: int) -> float:
    """Multiplier of the peak learning rate after ``samples_seen`` of ``total_samples`` examples.

    Warmup and decay are measured in samples, so they mean the same at every batch size.
    """
    warmup = schedule.warmup_samples or schedule.warmup_fraction * total_samples
    if samples_seen < warmup:
        return (samples_seen + 1) / warmup if warmup >= 1 else 1.0
    if schedule.name == "constant":
        return 1.0
    progress = min(1.0, (samples_seen - warmup) / max(1.0, total_samples - warmup))
    floor = schedule.final_lr_fraction
    if schedule.name == "warmup_cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return floor + (1 - floor) * (1 - progress)  # warmup_linear


def make_fabric(hardware: DictConfig) -> L.Fabric:
    """A single-device Fabric for this worker, with CPU threads set: ``hardware.threads``, and
    one on the CPU when it is not set. Torch's default (all cores) spins its OpenMP threads
    while they wait: beside another torch job a sweep ran ×4–10 slower, with one thread ×1.2–1.6
    (docs/benchmarks.md, "A sweep beside another job"), and idle one thread costs the default
    sweep 4% and makes the smoke sweep 17% faster (small models gain little from a second
    thread). A GPU worker keeps torch's default for its CPU-side work.

    Raises:
        ValueError: float16 mixed precision asked for on the CPU (Lightning would use bf16).
    """
    if hardware.precision == "16-mixed" and hardware.accelerator == "cpu":
        raise ValueError(
            "hardware.precision='16-mixed' needs a GPU; on the CPU use 32 or bf16-mixed"
        )
    threads = hardware.threads or (1 if hardware.accelerator == "cpu" else None)
    if threads:
        torch.set_num_threads(int(threads))
    precision: Any = (
        "32-true" if hardware.precision in ("32", "32-true") else str(hardware.precision)
    )
    accelerator = "cuda" if hardware.accelerator == "gpu" else hardware.accelerator
    return L.Fabric(accelerator=accelerator, devices=1, precision=precision)


def load_data(cfg: DictConfig) -> TensorData:
    """Build the dataset from ``cfg.dataset`` (any ``_target_`` return in docs/configuration.md)."""
    return load_tensors(instantiate(cfg.dataset))


def build_model(cfg: DictConfig, data: TensorData) -> nn.Module:
    """The model of ``cfg.model``, given ``in_shape`` and ``num_outputs`` if it accepts them."""
    target = instantiate(cfg.model, _partial_=True)
    accepted = inspect.signature(target.func).parameters
    supplied = {"in_shape": data.input_shape, "num_outputs": data.num_outputs}
    model: nn.Module = target(**{k: v for k, v in supplied.items() if k in accepted})
    return model


def uses_training_step(model: nn.Module) -> bool:
    return isinstance(model, L.LightningModule) and (
        type(model).training_step is not L.LightningModule.training_step
    )


def step_loss(
    model: Any, x: torch.Tensor, y: torch.Tensor, task: str, step: int, custom: bool
) -> torch.Tensor:
    if custom:  # a user's LightningModule computes its own loss
        out = model.training_step((x, y), step)
        return out["loss"] if isinstance(out, dict) else out
    outputs = model(x)
    return F.cross_entropy(outputs, y) if task == "classification" else F.mse_loss(outputs, y)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: TensorData, fabric: L.Fabric, eval_batch: int
) -> dict[str, float]:
    """Mean per-example validation loss (and accuracy for classification) over the val split."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=fabric.device)
    correct = torch.zeros((), device=fabric.device)
    try:
        for start in range(0, len(data.x_val), eval_batch):
            x, y = data.x_val[start : start + eval_batch], data.y_val[start : start + eval_batch]
            with fabric.autocast():
                outputs = model(x).float()
            if data.task == "classification":
                loss_sum += F.cross_entropy(outputs, y, reduction="sum")
                correct += (outputs.argmax(dim=1) == y).sum()
            else:
                loss_sum += F.mse_loss(outputs, y, reduction="sum") / outputs[0].numel()
    finally:  # also when out of memory: the caller may evaluate again, then train on
        model.train(was_training)
    metrics = {"val_loss": (loss_sum / len(data.x_val)).item()}
    if data.task == "classification":
        metrics["val_acc"] = (correct / len(data.x_val)).item()
    return metrics


def free_memory(fabric: L.Fabric) -> None:
    """Release what a failed attempt left: call once nothing refers to its tensors any more."""
    gc.collect()  # models and optimizers may sit in reference cycles
    if fabric.device.type == "cuda":
        torch.cuda.empty_cache()


def evaluate_in_memory(
    model: nn.Module, data: TensorData, fabric: L.Fabric, eval_batches: list[int]
) -> dict[str, float]:
    """:func:`evaluate` at ``eval_batches[-1]`` examples per pass, halved while out of memory.

    Each halved batch is appended to ``eval_batches`` and stays in use for later evaluations.

    Raises:
        ModelDoesNotFitError: out of memory even at one example per pass.
    """
    while True:
        try:
            return evaluate(model, data, fabric, eval_batches[-1])
        except torch.OutOfMemoryError as error:
            if eval_batches[-1] == 1:
                raise ModelDoesNotFitError(
                    f"the model does not fit in {fabric.device} memory in evaluation even at "
                    f"hardware.eval_batch=1 (out of memory at eval batches {eval_batches})"
                ) from error
        # (outside the except block, so the failed pass's tensors are free to go)
        free_memory(fabric)
        eval_batches.append(eval_batches[-1] // 2)


def target_met(metric: float, target: float, direction: str) -> bool:
    return metric <= target if direction == "minimize" else metric >= target
