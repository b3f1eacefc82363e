"""How many learning rates to train together in one pack (``hardware.pack=auto``).

A pack (:func:`lrbatch.train.train_pack`) trains K learning rates at one (batch, seed) in one
forward and backward pass per micro-batch. Whether that is faster than K trials one after the
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
from lrbatch.train import train_pack

__all__ = ["PackChoice", "choose_pack"]

TIMED_SECONDS = 0.1  # about this long of timed steps per pack size
MEMORY_SHARE = 0.8  # of the free device memory a pack may plan to use


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
    cfg: DictConfig, data: TensorData, fabric: L.Fabric, batch_size: int, limit: int
) -> PackChoice:
    """The pack size with the most member-steps per second at ``batch_size``, at most ``limit``.

    Times about :data:`TIMED_SECONDS` of optimizer steps of packs of 1, 2, 4, 8… members (at
    most ``limit``; on a GPU also at most what fits in :data:`MEMORY_SHARE` of the free memory,
    from the measured peak of one member), each as the difference of two short runs (so
    building the models and evaluating cancel), on ``cfg``'s model, optimizer and micro-batch.
    Picks the smallest size within 10% of the best rate; stops doubling once a size is over 20%
    below the best. Runs no study and records nothing.

    Args:
        cfg: the composed lrbatch config (its budget is replaced by a few steps).
        data: the dataset, on ``fabric``'s device.
        fabric: the worker's Fabric.
        batch_size: effective batch size.
        limit: the most members a pack may have (≥ 1).
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
    steps = max(3, min(200, round(TIMED_SECONDS * single)))  # ~TIMED_SECONDS of steps
    rates = {1: rate(1, steps) or single}
    why = f"no pack size timed (up to {limit}) beat one trial at a time by over 10%"
    if fabric.device.type == "cuda":
        peak = max(1, torch.cuda.max_memory_allocated(fabric.device) - base_memory)
        fits = max(1, int(MEMORY_SHARE * torch.cuda.mem_get_info(fabric.device)[0] // peak))
        limit = min(limit, fits)
    members = 2
    while members <= limit:
        measured = rate(members, max(3, steps // members))
        if measured is None:
            why = f"a pack of {members} did not train as one (memory, packability or timing)"
            break
        rates[members] = measured
        if measured < 0.8 * max(rates.values()):
            break
        members *= 2
    best = max(rates.values())
    size = min(k for k, r in rates.items() if r >= 0.9 * best)
    if size > 1:
        why = (
            f"a pack of {size} does {rates[size] / rates[1]:.2f}× the member-steps/s of one "
            f"trial at a time (within 10% of the best size timed, up to {max(rates)})"
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
