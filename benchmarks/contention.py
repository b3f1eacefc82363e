"""A sweep beside another job: idle, next to a torch job, next to a pure-Python job.

    python benchmarks/contention.py                        # smoke sweep, budget.epochs=10
    python benchmarks/contention.py --sweep default --variants default threads=1
    python benchmarks/contention.py --variants default passive threads=1 budget.epochs=5

What is measured: the command a user types, ``lrbatch sweep SWEEP [variant] [overrides]``, as
a subprocess on a fresh SQLite study, from start to exit, in three settings of the machine:

- *idle*: nothing else runs (besides whatever the machine was doing: see the load printed);
- *torch*: a neighbour process multiplies 512×512 float32 matrices in a loop with torch's
  default threads (another training job);
- *python*: a neighbour process runs a pure-Python busy loop (one core).

Variants, side by side: ``default`` (lrbatch's defaults as shipped: since 2026-12-01 one torch
thread per CPU worker, since 2026-12-07 one worker per core), ``one`` (one single-threaded
worker, the default from 2026-12-01 to 12-07), ``before`` (one worker, ``hardware.threads`` =
every core, as lrbatch ran until 2026-12-01), ``passive`` (the same with
``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads sleep instead of spinning while they wait),
``active`` (the same, spinning forced), ``spin20k`` (the same with ``GOMP_SPINCOUNT=20000``:
OpenMP threads spin a short while, then sleep). The
table gives each run's wall time as a ratio: against the same variant idle (how much the
neighbour costs it; its fair share of two cores is 2×) and against the first variant idle
(what the variant gains or costs on an idle machine). Runs are interleaved (every variant in
one setting, then the next setting) and repeated ``--repeats`` times; the median is shown.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import cpu_model

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = {"smoke": ROOT / "sweeps" / "smoke.yaml", "default": None}
NEIGHBOURS = {
    "idle": None,
    "torch": (
        "import torch\na = torch.randn(512, 512)\nwhile True:\n    a = torch.tanh(a @ a / 512)\n"
    ),
    "python": "x = 0\nwhile True:\n    x += 1\n",
}
ALL_CORES = [f"hardware.threads={os.cpu_count()}", "hardware.workers=1"]  # one worker, every core
VARIANTS: dict[str, tuple[dict[str, str], list[str]]] = {
    "default": ({}, []),
    "before": ({}, ALL_CORES),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, ALL_CORES),
    "active": ({"OMP_WAIT_POLICY": "ACTIVE"}, ALL_CORES),
    "spin20k": ({"GOMP_SPINCOUNT": "20000"}, ALL_CORES),
    "one": ({}, ["hardware.workers=1"]),
}


def run_sweep(sweep: str, variant: str, overrides: list[str], neighbour: str) -> float:
    """Wall seconds of one sweep, beside ``neighbour``."""
    env_extra, variant_overrides = VARIANTS[variant]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    env.update(env_extra)
    other = None
    if NEIGHBOURS[neighbour] is not None:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
        other = subprocess.Popen([sys.executable, "-c", NEIGHBOURS[neighbour]], env=clean)
        time.sleep(2.0)  # let it start (torch's import) and take its cores
    try:
        with tempfile.TemporaryDirectory() as tmp:
            storage = f"sqlite:///{tmp}/contention.db"
            command = [sys.executable, "-m", "lrbatch", "sweep"]
            command += [] if SWEEPS[sweep] is None else [str(SWEEPS[sweep])]
            command += [*variant_overrides, *overrides, f"study.storage={storage}"]
            command += ["study.name=contention"]
            start = time.perf_counter()
            done = subprocess.run(command, env=env, cwd=tmp, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}")
            return seconds
    finally:
        if other is not None:
            other.kill()
            other.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", choices=sorted(SWEEPS), default="smoke")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=None)
    parser.add_argument("--neighbours", nargs="+", choices=list(NEIGHBOURS), default=None)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every run")
    args = parser.parse_args()
    variants = args.variants or ["before", "default", "passive"]
    neighbours = args.neighbours or list(NEIGHBOURS)
    overrides = args.overrides or (["budget.epochs=10"] if args.sweep == "smoke" else [])
    print(f"{cpu_model()}, {os.cpu_count()} CPUs; load before: {os.getloadavg()[0]:.2f}")
    print(f"lrbatch sweep {args.sweep} {' '.join(overrides)}; median of {args.repeats}\n")
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.repeats):
        for neighbour in neighbours:
            for variant in variants:
                seconds = run_sweep(args.sweep, variant, overrides, neighbour)
                times.setdefault((neighbour, variant), []).append(seconds)
                print(f"  {neighbour:>7} {variant:>10}: {seconds:6.1f} s", flush=True)
    median = {key: statistics.median(values) for key, values in times.items()}
    base = median.get(("idle", variants[0]))
    print(f"\n{'variant':>10} │ " + " │ ".join(f"{n:^22}" for n in neighbours))
    print(f"{'':>10} │ " + " │ ".join(f"{'s':>6} {'×idle':>6} {'×first':>8}" for _ in neighbours))
    for variant in variants:
        cells = []
        for neighbour in neighbours:
            seconds = median[(neighbour, variant)]
            own = median.get(("idle", variant))
            vs_own = f"{seconds / own:6.2f}" if own else f"{'—':>6}"
            vs_base = f"{seconds / base:8.2f}" if base else f"{'—':>8}"
            cells.append(f"{seconds:6.1f} {vs_own} {vs_base}")
        print(f"{variant:>10} │ " + " │ ".join(cells))


if __name__ == "__main__":
    main()
