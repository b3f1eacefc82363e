"""Packed trials: K learning rates trained as one pack against the same K trials one at a time.

    OMP_NUM_THREADS=1 python benchmarks/pack_steps.py            # K=4, 1 thread
    python benchmarks/pack_steps.py --members 8 --threads 2 --repeats 5

What is measured: wall-clock seconds of whole trials as a worker runs them, with the data and
the Fabric made once beforehand: ``train_pack(cfg, batch, lrs, seed)`` for the pack (its check
against members alone, training, every member's evaluation), and ``train(cfg, batch, lr, seed)``
for each of the K learning rates in turn. Same models, optimizer (SGD), example order, a fixed
number of optimizer steps (``--steps``), the noise scale recorded as in a sweep. The table
shows how far members end from their trials alone (largest relative val_loss difference): 0
for the MLP (bitwise on the CPU); the grouped convolutions round differently from single ones
(bitwise equal in float64), and a ResNet at lr 0.1 is chaotic enough in float32 that this
grows to percents over 40 steps, as much as running it alone on 2 threads instead of 1 does.

Models: ``mlp`` (the default MLP 256-256 on MNIST-1D), ``cnn`` (the default CNN, channels 32-64,
on MNIST-1D) and ``resnet`` (the default ResNet, width 16, on scikit-learn's digits as 1×8×8
images: no download). The two ways are interleaved after one warm-up each, so drifts of the
machine fall on both; the table gives the ratio of member-steps per second, pack / one at a
time (K × steps over each one's time), of the medians over the repeats: 1.00x is no gain.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from dataclasses import replace
from datetime import datetime

import torch
from _machine import cpu_model

from lrbatch.config import load_config
from lrbatch.data import TensorData, digits
from lrbatch.training.loop import load_data, make_fabric, train, train_pack

MODELS = {"mlp": [], "cnn": ["model=cnn"], "resnet": ["model=resnet"]}
LRS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # peak learning rates, per optimizer step
SEED = 0


def _data(model: str, cfg_data: TensorData) -> TensorData:
    if model != "resnet":
        return cfg_data
    images = digits()  # 8×8 digits, flat: as images for the ResNet
    return replace(
        images,
        x_train=images.x_train.view(-1, 1, 8, 8),
        x_val=images.x_val.view(-1, 1, 8, 8),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=4, help="K, learning rates per pack")
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--steps", type=int, default=40, help="optimizer steps per trial")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda: bf16")
    args = parser.parse_args()
    # (more members than LRS: log-spaced between its ends)
    lrs = (
        LRS[: args.members]
        if args.members <= len(LRS)
        else tuple(
            LRS[0] * (LRS[-1] / LRS[0]) ** (k / (args.members - 1)) for k in range(args.members)
        )
    )

    print(f"# {datetime.now():%Y-%m-%d %H:%M}, {cpu_model()}, {os.cpu_count()} cores, ", end="")
    print(f"torch {torch.__version__}, Python {platform.python_version()}")
    print(f"# load average before: {os.getloadavg()[0]:.2f}; threads {args.threads}; ", end="")
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"# pack of {args.members} vs {args.members} trials one at a time, {args.steps} steps, ")
    print(f"# SGD, lrs {list(lrs)}; medians of {args.repeats} interleaved repeats (seconds)")
    print(f"{'model':<8}{'batch':>6}{'pack s':>9}{'alone s':>9}{'ratio':>8}{'val_loss diff':>15}")
    for model in args.models:
        overrides = [
            "hardware=gpu" if args.device == "cuda" else "hardware.accelerator=cpu",
            f"hardware.threads={args.threads}",
            "budget=steps",
            f"budget.steps={args.steps}",
            *MODELS[model],
        ]
        cfg = load_config(overrides=overrides)
        fabric = make_fabric(cfg.hardware)
        data = _data(model, load_data(cfg)).to(fabric.device)
        for batch in args.batches:
            packed_times, alone_times = [], []
            for repeat in range(args.repeats + 1):  # the first is a warm-up
                started = time.perf_counter()
                packed = train_pack(cfg, batch, lrs, SEED, data, fabric)
                packed_s = time.perf_counter() - started
                started = time.perf_counter()
                alone = [train(cfg, batch, lr, SEED, data, fabric) for lr in lrs]
                alone_s = time.perf_counter() - started
                if any(member.pack != len(lrs) for member in packed):
                    raise SystemExit(f"{model} batch {batch}: did not pack: {packed[0]}")
                differs = max(
                    abs(member.metrics["val_loss"] - trial.metrics["val_loss"])
                    / abs(trial.metrics["val_loss"])
                    for member, trial in zip(packed, alone, strict=True)
                )
                if repeat:
                    packed_times.append(packed_s)
                    alone_times.append(alone_s)
            pack_s, alone_s = statistics.median(packed_times), statistics.median(alone_times)
            ratio = alone_s / pack_s  # member-steps/s of the pack over one at a time
            print(
                f"{model:<8}{batch:>6}{pack_s:>9.2f}{alone_s:>9.2f}{ratio:>7.2f}x{differs:>15.1e}"
            )
    print(f"# load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
