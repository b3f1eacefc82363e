"""Worker scaling: one sweep run with 1, 2, ... workers, side by side, in trials per minute.

    python benchmarks/scaling.py                             # smoke sweep, 1 and 2 CPU workers
    python benchmarks/scaling.py --workers 1 1:1 2 --repeats 3  # 1:1 = 1 worker, 1 thread
    python benchmarks/scaling.py budget.epochs=10            # longer trials (any override)
    python benchmarks/scaling.py --sweep default --repeats 1 # the default sweep (~120 trials)
    python benchmarks/scaling.py --gpu --workers 1 2         # hardware=gpu, workers per GPU

What is measured: the whole command a user types, ``lrbatch sweep SWEEP hardware.workers=N``
(``hardware=gpu hardware.workers_per_gpu=N`` with ``--gpu``), run as a subprocess on a fresh
SQLite study in a temporary directory, from start to exit: Python start-up, worker processes
starting, every trial, the final report. Each run must end with its plan complete.

The time to finish the plan (*wall s*; its speed-up is how much sooner the sweep is done), and
two rates per run, both in complete trials per minute:

- *whole*: complete trials / the command's wall time;
- *steady*: complete trials / the span from the first trial's start to the last trial's end
  in the study: training with the workers up, without start-up and the final report.

Different worker counts may train slightly different trials (a law fitted to other batch
sizes' optima, proposed while fewer or more of them were known), so the table also gives the
count of complete trials and of trials skipped because another worker had taken the planned
point (pruned, reason ``explore``).
A column ``N:T`` runs N workers with T torch threads each (``hardware.threads=T``): ``1:1``
against ``2`` shows how close two workers come to twice what one worker does on one core, apart
from how well torch uses two threads in one worker. Runs are interleaved (1, 2, 1, 2...) so
that drifts of the machine fall on every column alike; the speed-up is the median rate against
the median rate of the first column. With ``--gpu`` it also samples ``nvidia-smi`` utilisation
every half second during each run.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna
from _machine import cpu_model
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Run:
    workers: int
    wall_s: float
    complete: int
    skipped: int
    steady_s: float
    gpu_util: float | None

    @property
    def whole_rate(self) -> float:
        return 60 * self.complete / self.wall_s

    @property
    def steady_rate(self) -> float:
        return 60 * self.complete / self.steady_s


class GpuSampler(threading.Thread):
    """Average GPU utilisation (all GPUs, percent) from ``nvidia-smi`` while it runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self.done.wait(0.5):
            out = subprocess.run(query, capture_output=True, text=True, check=False).stdout
            values = [float(v) for v in out.split() if v.strip()]
            if values:
                self.samples.append(statistics.fmean(values))

    def mean(self) -> float | None:
        self.done.set()
        self.join()
        return statistics.fmean(self.samples) if self.samples else None


def _command(sweep: Path, name: str, db: Path, hardware: list[str], rest: list[str]) -> list[str]:
    sweep_file = [] if sweep.name == "default" else [str(sweep)]  # default: conf/config.yaml
    return [
        sys.executable, "-m", "lrbatch", "sweep", *sweep_file, *hardware,
        f"study.name={name}", f"study.storage=sqlite:///{db}", *rest,
    ]  # fmt: skip


def warm_up(sweep: Path, overrides: list[str], where: Path) -> None:
    """One untimed start (``--trial-limit 0``): it fills the dataset cache and the system's
    file cache, as any earlier run on this machine would have."""
    db = where / "warm-up.db"
    command = _command(sweep, "warm-up", db, [], [*overrides, "--trial-limit", "0"])
    subprocess.run(command, cwd=where, capture_output=True, check=True)
    db.unlink()


def run_once(sweep: Path, column: str, gpu: bool, overrides: list[str], where: Path) -> Run:
    """Run the sweep with the workers of ``column`` (``N`` or ``N:T``) on a fresh study."""
    workers_text, _, threads = column.partition(":")
    workers = int(workers_text)
    name = f"scaling-{column.replace(':', 't')}"
    db = where / f"{name}.db"
    db.unlink(missing_ok=True)
    hardware = (
        ["hardware=gpu", f"hardware.workers_per_gpu={workers}"]
        if gpu
        else [f"hardware.workers={workers}"]
    )
    if threads:
        hardware.append(f"hardware.threads={int(threads)}")
    command = _command(sweep, name, db, hardware, overrides)
    sampler = GpuSampler() if gpu else None
    if sampler:
        sampler.start()
    started = time.perf_counter()
    done = subprocess.run(command, cwd=where, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    util = sampler.mean() if sampler else None
    if done.returncode != 0 or "Sweep complete" not in done.stdout:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    trials = optuna.load_study(study_name=name, storage=f"sqlite:///{db}").get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    skipped = sum(t.state == TrialState.PRUNED for t in trials)
    first = min(t.datetime_start for t in complete if t.datetime_start)
    last = max(t.datetime_complete for t in complete if t.datetime_complete)
    steady = (last - first).total_seconds()
    return Run(workers, wall, len(complete), skipped, steady, util)


def _median(runs: list[Run], attribute: str) -> float:
    return statistics.median(getattr(r, attribute) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sweep",
        type=Path,
        default=ROOT / "sweeps" / "smoke.yaml",
        help="a sweep file, or 'default' for the default sweep (no file)",
    )
    parser.add_argument(
        "--workers", nargs="+", default=["1", "2"], help="columns: N workers, or N:T with T threads"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu", action="store_true", help="hardware=gpu; --workers per GPU")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run")
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: dict[str, list[Run]] = {n: [] for n in args.workers}
    sweep = args.sweep if args.sweep.name == "default" else args.sweep.resolve()
    with tempfile.TemporaryDirectory(prefix="lrbatch-scaling-") as where:
        warm_up(sweep, args.overrides, Path(where))
        for repeat in range(args.repeats):
            for n in args.workers:
                run = run_once(sweep, n, args.gpu, args.overrides, Path(where))
                runs[n].append(run)
                print(
                    f"  repeat {repeat + 1} workers {n}: {run.wall_s:.1f} s, "
                    f"{run.complete} complete, {run.skipped} skipped",
                    file=sys.stderr,
                )

    import torch  # only for the header: the runs happen in subprocesses

    print(f"# {datetime.now():%Y-%m-%d %H:%M} · {cpu_model()}")
    print(
        f"# {os.cpu_count()} cores · Python {platform.python_version()} · torch "
        f"{torch.__version__} · optuna {optuna.__version__} · load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(f"# lrbatch sweep {args.sweep.name} {' '.join(args.overrides)}".rstrip())
    print(f"# {args.repeats} interleaved runs per column; medians; speed-up against the first\n")
    unit = "per GPU" if args.gpu else "workers"
    header = (
        f"{unit:>7} | complete skipped | wall s speed-up | whole /min speed-up "
        "| steady /min speed-up"
    )
    if args.gpu:
        header += " | GPU util %"
    print(header)
    print("-" * len(header))
    base_wall = _median(runs[args.workers[0]], "wall_s")
    base_whole = _median(runs[args.workers[0]], "whole_rate")
    base_steady = _median(runs[args.workers[0]], "steady_rate")
    for n in args.workers:
        whole, steady = _median(runs[n], "whole_rate"), _median(runs[n], "steady_rate")
        wall = _median(runs[n], "wall_s")
        line = (
            f"{n:>7} | {_median(runs[n], 'complete'):>8.0f} {_median(runs[n], 'skipped'):>7.0f} "
            f"| {wall:>6.1f} {base_wall / wall:>7.2f}x "
            f"| {whole:>10.1f} {whole / base_whole:>7.2f}x "
            f"| {steady:>11.1f} {steady / base_steady:>7.2f}x"
        )
        if args.gpu:
            utils = [r.gpu_util for r in runs[n] if r.gpu_util is not None]
            line += f" | {statistics.median(utils):>10.0f}" if utils else " |          -"
        print(line)


if __name__ == "__main__":
    main()
