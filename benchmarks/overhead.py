"""Trial overhead: one lrbatch trial against a plain PyTorch loop doing the same training, and
what recording the gradient noise scale adds to a trial.

    python benchmarks/overhead.py                  # default trial at batch 32, 256 and 1024
    python benchmarks/overhead.py --threads 1
    python benchmarks/overhead.py --batch 64 --repeats 9 --device cuda

What is measured: wall-clock seconds of one whole trial as a user sees it. For lrbatch, the call
``train(cfg, batch, lr, seed, data=data, fabric=fabric)`` with the data and the Fabric made once
beforehand, as a worker runs trials; the same with ``noise_window=0``, which records no noise
scale (B_simple at 4 points from 24 measured steps, each split in two halves without
accumulation, :class:`lrbatch.training.gradient_noise.TrialNoise`; the gradient-norm curve is
recorded either way). For plain PyTorch, building the model and the optimizer, the training loop and
the final evaluation. All train the default config (MNIST-1D, MLP, SGD, its budget) from the
same initial weights, on the same example order, for the same number of optimizer steps, and
must end at the same validation loss: the script checks this.

The three are interleaved (lrbatch, lrbatch without noise, plain, ...) after one warm-up each,
so drifts of the machine fall on all alike. The table gives ratios of times, of the medians
and of the minimums over the repeats: lrbatch / plain (the loop's overhead, 1.00x: none) and
lrbatch / lrbatch without noise (what the noise scale costs; the goal is at most 1.03x).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime
from functools import partial

import lightning
import torch
import torch.nn.functional as F
from _machine import cpu_model
from omegaconf import DictConfig

from lrbatch.config import load_config
from lrbatch.data import TensorData
from lrbatch.models import MLP
from lrbatch.training.gradient_noise import TrialNoise
from lrbatch.training.loop import load_data, make_fabric, train

LR = 0.1  # peak learning rate, per optimizer step
SEED = 0  # fixes the initial weights and the example order
VAL_LOSS_RTOL = 1e-3  # relative: the two runs must end at the same val_loss to be comparable
SPLIT_RTOL = 1e-2  # relative: with the noise scale measured, split steps round differently


def _precision(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """The autocast lrbatch's hardware config uses: bf16 on a GPU (hardware=gpu), none on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def plain_trial(
    cfg: DictConfig, data: TensorData, batch_size: int, lr: float, seed: int
) -> tuple[int, float]:
    """Train as one would by hand: model, SGD, a loop of indexed batches, one final evaluation.

    Returns:
        (optimizer steps, mean per-example val_loss).
    """
    device = data.x_train.device
    num_examples = int(cfg.budget.epochs * data.num_train)  # samples budget, in examples
    steps = max(1, num_examples // batch_size)  # the last partial batch is dropped

    torch.manual_seed(seed)
    model = MLP(data.input_shape, data.num_outputs, cfg.model.hidden, cfg.model.activation)
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)

    # a fresh permutation each epoch, from the seed alone, cut into consecutive batches
    order_rng = torch.Generator().manual_seed(seed)
    epochs_needed = math.ceil(steps * batch_size / data.num_train)
    order = torch.cat(
        [torch.randperm(data.num_train, generator=order_rng) for _ in range(epochs_needed)]
    ).to(device)

    model.train()
    for step in range(steps):
        indices = order[step * batch_size : (step + 1) * batch_size]
        with _precision(device):
            loss = F.cross_entropy(model(data.x_train[indices]), data.y_train[indices])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.eval()
    with torch.no_grad(), _precision(device):
        outputs = model(data.x_val).float()
    return steps, F.cross_entropy(outputs, data.y_val).item()


def timed(trial: Callable[[], tuple[int, float]]) -> tuple[float, int, float]:
    """(seconds, steps, val_loss) of one call."""
    started = time.perf_counter()
    steps, val_loss = trial()
    return time.perf_counter() - started, steps, val_loss


def machine() -> str:
    """CPU model, cores, versions, torch threads and load (other work skews timings)."""
    return (
        f"{cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"torch {torch.__version__}, lightning {lightning.__version__}, "
        f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f} at start"
    )


def _ratio(seconds: dict[str, list[float]], a: str, b: str) -> str:
    """Time of ``a`` over time of ``b``: of the medians, then of the minimums."""
    median = statistics.median(seconds[a]) / statistics.median(seconds[b])
    return f"{median:>16.3f}x {min(seconds[a]) / min(seconds[b]):>6.3f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--batch", type=int, action="append", help="batch size (repeatable; default 32 and 256)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each, after warm-up")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    batch_sizes = args.batch or [32, 256, 1024]
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here; use --device cpu")
    if args.repeats < 1:
        parser.error(f"--repeats {args.repeats}: give at least 1")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    cfg = load_config(overrides=["hardware=gpu"] if args.device == "cuda" else [])
    fabric = make_fabric(cfg.hardware)
    data = load_data(cfg).to(fabric.device)
    device = torch.cuda.get_device_name(fabric.device) if args.device == "cuda" else "cpu"

    def lrbatch_trial(batch_size: int, noise_window: int | None = None) -> tuple[int, float]:
        result = train(
            cfg, batch_size, LR, SEED, data=data, fabric=fabric, noise_window=noise_window
        )
        return result.steps, result.metrics.get("val_loss", math.nan)

    def plain(batch_size: int) -> tuple[int, float]:
        return plain_trial(cfg, data, batch_size, LR, SEED)

    print(
        "# Trial overhead: lrbatch.training.loop.train (noise scale recorded, and not) vs a plain "
        f"PyTorch loop, {datetime.now():%F %R}"
    )
    print(f"# machine: {machine()}")
    print(
        f"# trial: {cfg.dataset._target_} ({data.num_train} train / {len(data.x_val)} val), "
        f"{cfg.model._target_} hidden={list(cfg.model.hidden)}, {cfg.optimizer._target_}, "
        f"lr {LR}, seed {SEED}, {cfg.budget.epochs:g} epochs, device {device} "
        f"(precision {cfg.hardware.precision})"
    )
    print(
        f"# measured: seconds per whole trial, data and Fabric made beforehand; 1 warm-up, then "
        f"{args.repeats} interleaved runs of each\n"
    )

    header = (
        f"{'batch':>5} {'steps':>6} {'measured':>8} | {'lrbatch/plain med':>17} {'min':>6} | "
        f"{'noise on/off med':>16} {'min':>6} | {'projected med':>13} {'min':>6}"
    )
    rows, checks = [header, "-" * len(header)], []
    for batch_size in batch_sizes:
        runs = {
            "lrbatch": partial(lrbatch_trial, batch_size),
            "no noise": partial(lrbatch_trial, batch_size, 0),
            "all measured": partial(lrbatch_trial, batch_size, 1 << 30),  # windows of every step
            "plain": partial(plain, batch_size),
        }
        for run in runs.values():
            timed(run)  # warm-up: allocator, kernels, caches
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        ended: dict[str, tuple[int, float]] = {}
        for _ in range(args.repeats):
            for name, run in runs.items():
                elapsed, steps, val_loss = timed(run)
                seconds[name].append(elapsed)
                ended[name] = (steps, val_loss)
        steps = ended["lrbatch"][0]
        if {s for s, _ in ended.values()} != {steps}:
            sys.exit(f"batch {batch_size}: steps differ: {ended}")
        checks.append((batch_size, {name: loss for name, (_, loss) in ended.items()}))
        measured = len(TrialNoise(steps, batch_size, []).measured_steps)
        rows.append(
            f"{batch_size:>5} {steps:>6} {measured:>8} | {_ratio(seconds, 'lrbatch', 'plain')} | "
            f"{_ratio(seconds, 'lrbatch', 'no noise'):>23} | "
            f"{_projected(seconds, measured / steps):>20}"
        )
    print("\n".join(rows))
    print(
        "\nmeasured: steps that measure the noise scale; noise on/off: lrbatch / lrbatch "
        "without it;\nprojected: 1 + measured/steps × (every step measured / none measured − 1), "
        "the same cost\nfrom a difference large enough to stand out of the machine's noise"
    )

    print(
        f"\n# same training? final val_loss (last run): without the noise scale as plain, to "
        f"{VAL_LOSS_RTOL:g}; with it, to {SPLIT_RTOL:g}\n# (its split steps round differently, "
        "and a long run compounds the rounding)"
    )
    print(f"{'batch':>5} | {'lrbatch':>10} {'no noise':>10} {'plain':>10} | {'rel. diffs':>19}")
    mismatched = []
    for batch_size, losses in checks:
        plain_loss, off, on = losses["plain"], losses["no noise"], losses["lrbatch"]
        difference, split = abs(off - plain_loss) / abs(plain_loss), abs(on - off) / abs(off)
        print(
            f"{batch_size:>5} | {on:>10.6f} {off:>10.6f} {plain_loss:>10.6f} | "
            f"{difference:>9.1e} {split:>9.1e}"
        )
        if not (difference <= VAL_LOSS_RTOL and split <= SPLIT_RTOL):  # also catches NaN
            mismatched.append(batch_size)
    if mismatched:
        sys.exit(f"val_loss differs at batch {mismatched}: the loops did not train alike")


def _projected(seconds: dict[str, list[float]], fraction: float) -> str:
    """1 + fraction × (all measured / none − 1): of the medians, then of the minimums."""
    all_median = statistics.median(seconds["all measured"]) / statistics.median(seconds["no noise"])
    all_min = min(seconds["all measured"]) / min(seconds["no noise"])
    return f"{1 + fraction * (all_median - 1):.3f}x {1 + fraction * (all_min - 1):>6.3f}x"


if __name__ == "__main__":
    main()
