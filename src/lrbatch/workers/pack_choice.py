"""How many learning rates to train together in one pack (``hardware.pack=auto``).

A pack (:func:`lrbatch.training.loop.train_pack`) trains K learning rates at one (batch, seed) in
one forward and backward pass per micro-batch. Whether that is faster than K trials one after the
other depends on the model, the batch and the device: a small model on a GPU gains nearly K
times (its steps are bound by kernel launches); on a CPU a layer that already fills the cores
gains little. :func:`choose_pack` measures it, on the real model, optimizer and data.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, replace

import lightning as L
import torch
from omegaconf import DictConfig

from lrbatch.data import TensorData
from lrbatch.training import train_pack, training_length
from lrbatch.workers.slots import cpu_model

__all__ = ["PLAN_TRIALS", "PackChoice", "choose_pack", "plan_trials", "timing_hardware"]

TIMED_SECONDS = 0.1  # about this long of timed steps per pack size
# Timing packs costs about a second per batch size (on a CPU core: ~16 short runs, each
# building its models): where one trial trains in less than this, packs cannot save as much.
MIN_TRIAL_SECONDS = 0.5
MEMORY_SHARE = 0.8  # of the free device memory a pack may plan to use
# Trials a sweep trains with packs of K, relative to one trial at a time: packs bracket and
# refine several points at once, some of which one trial at a time would have skipped. Measured
# on synthetic sweeps run by the real plan (saturating, square-root and linear optima, 2 seeds,
# 6 batch sizes: tests/test_plan.py's run_packs): K=2 1.07-1.15, 4 1.10-1.34, 8 1.42-1.54,
# 16 and 32 1.75-2.00 (while the passes fall from 54-67 to 33-43, 19-26, 17-19 and 16-18).
PLAN_TRIALS = {1: 1.0, 2: 1.1, 4: 1.25, 8: 1.5}
_PLAN_TRIALS_MORE = 1.9  # K >= 16


def timing_hardware(fabric: L.Fabric) -> str:
    """What a pack's timing depends on besides the settings a study fixes for its life (model,
    optimizer, budget, precision, micro-batch: :data:`lrbatch.workers.prepare.TRAINING_SETTINGS`):
    the device (a GPU's name, or the CPU's model) and torch's CPU threads, e.g. ``cpu Intel(R)
    Xeon(R), 1 thread``. Workers that share it share :func:`choose_pack`'s choice."""
    if fabric.device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(fabric.device)}"
    threads = torch.get_num_threads()
    return f"{fabric.device.type} {cpu_model()}, {threads} thread{'s' * (threads != 1)}"


def plan_trials(size: int) -> float:
    """:data:`PLAN_TRIALS` at ``size`` (K between two listed sizes: the larger's)."""
    return next((f for k, f in sorted(PLAN_TRIALS.items()) if k >= size), _PLAN_TRIALS_MORE)


@dataclass(frozen=True)
class PackChoice:
    """How many members to train together at one batch size, and the measurements behind it.

    Attributes:
        size: members per pack (1: one trial at a time).
        member_steps_per_s: pack size -> optimizer steps per second summed over its members
            (a pack of K taking s steps/s does K × s member-steps/s), for each size timed.
        why: one line saying what decided ``size``.
    """

    size: int
    member_steps_per_s: dict[int, float]
    why: str


def choose_pack(
    cfg: DictConfig,
    data: TensorData,
    fabric: L.Fabric,
    batch_size: int,
    limit: int,
    min_trial_seconds: float = MIN_TRIAL_SECONDS,
) -> PackChoice:
    """The pack size that should finish a sweep soonest at ``batch_size``, at most ``limit``:
    the most member-steps per second, divided by the trials the plan needs with that pack size
    (:data:`PLAN_TRIALS`).

    Times about :data:`TIMED_SECONDS` of optimizer steps of packs of 1, 2, 4, 8… members (at
    most ``limit``; on a GPU also at most what fits in :data:`MEMORY_SHARE` of the free memory,
    from the measured peak of one member), each as the difference of two short runs (so
    building the models and evaluating cancel), on ``cfg``'s model, optimizer and micro-batch.
    Picks the smallest size within 10% of the best; a pack only where it beats one trial at a
    time by over 10%; stops doubling once a size is over 20% below the best. Where one trial's
    steps would take under ``min_trial_seconds`` (timed first), times nothing more and trains
    one trial at a time. Runs no study and records nothing.

    Args:
        cfg: the composed lrbatch config (its budget is replaced by a few steps).
        data: the dataset, on ``fabric``'s device.
        fabric: the worker's Fabric.
        batch_size: effective batch size.
        limit: the most members a pack may have (≥ 1).
        min_trial_seconds: see above (default :data:`MIN_TRIAL_SECONDS`).
    """
    lr = float(cfg.sweep.lr_min) if "sweep" in cfg else 1e-3  # small: no member diverges
    tiny_val = replace(data, x_val=data.x_val[:1], y_val=data.y_val[:1])  # evaluation: ~free

    def seconds(members: int, steps: int) -> tuple[float, bool]:
        """Seconds for a run of ``steps`` steps, and whether it trained as one pack."""
        timed = copy.deepcopy(cfg)
        timed.budget.kind, timed.budget.steps, timed.budget.check_every = "steps", steps, steps
        _sync(fabric)
        started = time.perf_counter()
        results = train_pack(timed, batch_size, [lr] * members, 0, tiny_val, fabric, None, 0)
        _sync(fabric)
        packed = members == 1 or (results[0].pack == members and not results[0].oom_packs)
        return time.perf_counter() - started, packed

    def rate(members: int, steps: int) -> float | None:
        """Member-steps per second of a pack, None when it could not train as one.

        The faster of two runs of each length (the machine may be busy); steps double while
        the difference is lost in the noise (at most twice).
        """
        for _ in range(3):
            short, long = (min(seconds(members, n) for _ in range(2)) for n in (1, 1 + steps))
            if not (short[1] and long[1]):
                return None
            if long[0] > short[0]:
                return members * steps / (long[0] - short[0])
            steps *= 2
        return None

    base_memory = _allocated(fabric)
    single = rate(1, 3)
    assert single is not None
    trial_seconds = training_length(cfg.budget, data.num_train, batch_size) / single
    if trial_seconds < min_trial_seconds:
        why = (
            f"no pack size: a trial here trains in ~{trial_seconds:.2g} s, less than timing "
            f"packs would cost (one trial at a time)"
        )
        return PackChoice(1, {1: single}, why)
    steps = max(3, min(200, round(TIMED_SECONDS * single)))  # ~TIMED_SECONDS of steps
    rates = {1: rate(1, steps) or single}
    note = ""
    if fabric.device.type == "cuda":
        peak = max(1, torch.cuda.max_memory_allocated(fabric.device) - base_memory)
        fits = max(1, int(MEMORY_SHARE * torch.cuda.mem_get_info(fabric.device)[0] // peak))
        limit = min(limit, fits)
    members = 2
    while members <= limit:
        measured = rate(members, max(3, steps // members))
        if measured is None:
            note = f"; a pack of {members} did not train as one (memory, packability or timing)"
            break
        rates[members] = measured
        if measured < 0.8 * max(rates.values()):
            break
        members *= 2
    worth = {k: r / plan_trials(k) for k, r in rates.items()}  # sweeps finished per second
    best = max(worth.values())
    size = min(k for k, w in worth.items() if w >= 0.9 * best)
    if size > 1 and worth[size] <= 1.1 * worth[1]:
        size = 1
    if size > 1:
        why = (
            f"a pack of {size} does {rates[size] / rates[1]:.2f}× the member-steps/s of one "
            f"trial at a time, for ~{plan_trials(size):.2f}× the trials (the best of the sizes "
            f"timed, up to {max(rates)})"
        )
    else:
        faster = ", ".join(f"{k}: ×{rates[k] / rates[1]:.2f}" for k in sorted(rates) if k > 1)
        why = (
            f"no pack size beat one trial at a time by over 10% once the plan's extra trials "
            f"are counted (member-steps/s {faster or 'not timed'}){note}"
        )
    return PackChoice(size, rates, why)


def _sync(fabric: L.Fabric) -> None:
    if fabric.device.type == "cuda":
        torch.cuda.synchronize(fabric.device)


def _allocated(fabric: L.Fabric) -> int:
    if fabric.device.type != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats(fabric.device)
    return int(torch.cuda.memory_allocated(fabric.device))
