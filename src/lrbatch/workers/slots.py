"""Where worker processes run on this machine: one per GPU (or several per GPU), or N CPU
workers sharing the cores, each with its share of the CPU threads."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field

from omegaconf import DictConfig

from lrbatch.workers.pool import start_server

__all__ = [
    "AUTO_CPU_WORKERS",
    "PRELOAD",
    "Slot",
    "cpu_count",
    "cpu_model",
    "cpu_workers",
    "start_worker_server",
    "visible_gpus",
    "worker_slots",
]

# hardware.workers=auto on a CPU: one single-threaded worker per core, up to this many. On 2
# cores two workers finish the default sweep ×1.7-1.8 sooner than one, and beside a busy
# neighbour take ×1.4-1.8 their idle time (docs/benchmarks.md, "A sweep beside another job");
# more than 8 are untested, and the plan rarely has that many points to train at once.
AUTO_CPU_WORKERS = 8

# What the server CPU workers are forked from imports once: torch, Lightning, Optuna's RDB
# storage (whose schema check imports alembic), MNIST-1D's generator. (Kept here, away from
# those imports, so that the server starts before the caller has imported them itself.)
PRELOAD = [
    "lrbatch.workers.worker",
    "lrbatch.models",
    "optuna.storages._rdb.storage",
    "alembic.command",
    "alembic.context",
    "alembic.migration",
    "mnist1d.data",
]


@dataclass(frozen=True)
class Slot:
    """Where one worker process runs.

    Attributes:
        label: shown in the progress panel and recorded on its trials (``GPU 1``, ``cpu 2/4``).
        env: environment it is started with (``CUDA_VISIBLE_DEVICES`` for a GPU slot).
        threads: torch CPU threads it uses (None: torch's default, all cores).
    """

    label: str
    env: dict[str, str] = field(default_factory=dict)
    threads: int | None = None


def cpu_count() -> int:
    """Cores this process may run on (respects affinity masks, e.g. SLURM's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what Python knows of it."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_workers(hardware: DictConfig, cpus: int | None = None) -> int:
    """How many CPU worker processes ``hardware.workers`` asks for: the number given, or for
    ``auto`` one per ``hardware.threads`` cores (one thread each by default) of ``cpus``
    (default: :func:`cpu_count`), at most :data:`AUTO_CPU_WORKERS`."""
    if hardware.workers != "auto":
        return int(hardware.workers)
    threads = int(hardware.threads or 1)
    return max(1, min(AUTO_CPU_WORKERS, (cpus or cpu_count()) // threads))


def visible_gpus() -> list[str]:
    """The CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_slots(
    hardware: DictConfig, cpus: int | None = None, gpus: Sequence[str] | None = None
) -> list[Slot]:
    """The worker processes ``hardware`` asks for on this machine.

    ``gpu`` (or ``auto`` with GPUs visible): ``workers_per_gpu`` per visible GPU. ``cpu``:
    :func:`cpu_workers` processes, one torch thread each unless ``hardware.threads`` is set
    (:func:`lrbatch.training.loop.make_fabric`); GPU workers share the cores out. A single slot
    trains in the calling process.

    Args:
        hardware: the ``hardware`` config section.
        cpus: cores available (default: :func:`cpu_count`).
        gpus: visible GPUs (default: :func:`visible_gpus`, asked only for ``gpu``/``auto``).
    """
    cpus = cpus or cpu_count()
    if hardware.accelerator in ("gpu", "auto"):
        gpus = list(gpus if gpus is not None else visible_gpus())
        if gpus:
            per_gpu = int(hardware.workers_per_gpu)
            count = len(gpus) * per_gpu
            threads = hardware.threads or max(1, cpus // count)
            return [
                Slot(
                    f"GPU {gpu}" + (f" #{k + 1}" if per_gpu > 1 else ""),
                    {"CUDA_VISIBLE_DEVICES": gpu},
                    threads if count > 1 else hardware.threads,
                )
                for gpu in gpus
                for k in range(per_gpu)
            ]
        if hardware.accelerator == "gpu":
            return [Slot("GPU")]  # none visible: the worker's own check says so
    count = cpu_workers(hardware, cpus)
    if count == 1:
        return [Slot("cpu", threads=hardware.threads)]
    return [Slot(f"cpu {k + 1}/{count}", threads=hardware.threads or 1) for k in range(count)]


def start_worker_server() -> None:
    """Start the server CPU workers are forked from; its imports (seconds of torch and
    Lightning) run beside the caller's."""
    start_server(PRELOAD)
