"""Packed trials against one trial at a time: the same sweeps, side by side.

    python benchmarks/packing.py                         # default sweep and adam_mnist1d
    python benchmarks/packing.py --sweeps smoke --repeats 3
    python benchmarks/packing.py --gpu                   # on a GPU machine (hardware=gpu)

What is measured: the command a user types, ``lrbatch sweep SWEEP hardware.pack=P``, as a
subprocess on a fresh SQLite study, from start to exit (the plan finished), for each pack
setting (``1``: one trial at a time, as before packing; ``auto``: the shipped default, which
times packs per batch size and records its choice; or a fixed number). Variants run
interleaved (every variant of a sweep, then the next repeat), so a machine that gets busier
affects them alike; the load is printed before and after.

Columns: wall seconds (median over repeats), how much sooner than the first variant (its wall
time over this one's), trials trained, trials per minute, the pack sizes ``auto`` chose per
batch size, and whether the optima agree with the first variant's: every batch size's optimum
of one lies inside the other's 90% interval or the intervals overlap (the answer a user reads
must not depend on how the trials were scheduled).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna
from _machine import cpu_model

from lrbatch.science.optima import BatchOptimum, batch_optima
from lrbatch.search.study_io import load_points, trial_run

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = {
    "default": None,
    "smoke": ROOT / "sweeps" / "smoke.yaml",
    "adam_mnist1d": ROOT / "sweeps" / "adam_mnist1d.yaml",
    "sgd_mnist1d": ROOT / "sweeps" / "sgd_mnist1d.yaml",
}


def run(sweep: str, pack: str, extra: list[str], workdir: Path, name: str) -> float:
    """Wall seconds of one sweep to its end."""
    command = [sys.executable, "-m", "lrbatch", "sweep"]
    if SWEEPS[sweep] is not None:
        command.append(str(SWEEPS[sweep]))
    command += [f"hardware.pack={pack}", f"study.name={name}", *extra]
    command.append(f"study.storage=sqlite:///{workdir / name}.db")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode not in (0, 3):  # (3: a batch size without an optimum, still an answer)
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}{done.stderr}")
    return took


def study_of(workdir: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{workdir / name}.db")


def optima(study: optuna.Study) -> dict[int, BatchOptimum]:
    minimize = study.direction == optuna.study.StudyDirection.MINIMIZE
    return {o.batch_size: o for o in batch_optima(load_points(study.trials), minimize)}


def apart(a: dict[int, BatchOptimum], b: dict[int, BatchOptimum]) -> list[str]:
    """The batch sizes whose 90% intervals do not overlap, both optima with their intervals."""

    def shown(o: BatchOptimum) -> str:
        return f"{o.lr_opt:.3g} [{o.lr_low:.3g}–{o.lr_high:.3g}] ({o.method})"

    return [
        f"B={k}: {shown(a[k])} vs {shown(b[k])}"
        for k in sorted(set(a) & set(b))
        if not (a[k].lr_low <= b[k].lr_high and b[k].lr_low <= a[k].lr_high)
    ]


def agree(a: dict[int, BatchOptimum], b: dict[int, BatchOptimum]) -> str:
    """``n/N`` batch sizes whose 90% intervals overlap, and the largest gap between optima in
    decades."""
    shared = sorted(set(a) & set(b))
    overlap = sum(a[k].lr_low <= b[k].lr_high and b[k].lr_low <= a[k].lr_high for k in shared)
    gap = max((abs(math.log10(a[k].lr_opt / b[k].lr_opt)) for k in shared), default=math.nan)
    return f"{overlap}/{len(shared)} (max {gap:.2f} dec)"


def chosen(study: optuna.Study) -> str:
    """The pack sizes the trials trained in, per batch size (most common)."""
    sizes: dict[int, Counter[int]] = {}
    for trial in study.trials:
        run_ = trial_run(trial)
        if run_.point is not None and run_.pack:
            together = int(run_.pack.get("trained_together", 1))
            sizes.setdefault(run_.point.batch_size, Counter())[together] += 1
    return " ".join(f"{b}:{c.most_common(1)[0][0]}" for b, c in sorted(sizes.items())) or "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweeps", nargs="+", default=["default", "adam_mnist1d"])
    parser.add_argument("--packs", nargs="+", default=["1", "auto"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (hardware=gpu)")
    parser.add_argument("overrides", nargs="*", help="key=value settings for every run")
    args = parser.parse_args()
    extra = (["hardware=gpu"] if args.gpu else []) + args.overrides
    print(f"# {cpu_model()}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}")
    print(f"# load before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"# overrides: {' '.join(extra) or '(none)'}; repeats {args.repeats}")
    header = (
        f"| sweep | hardware.pack | wall s | sooner | trials | trials/min | "
        f"pack per batch | optima agree with {args.packs[0]} |"
    )
    print(header)
    print("|" + "---|" * header.count(" | ") + "---|")
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for sweep in args.sweeps:
            walls: dict[str, list[float]] = {p: [] for p in args.packs}
            for repeat in range(args.repeats):
                for pack in args.packs:
                    name = f"{sweep}-{pack}-{repeat}"
                    walls[pack].append(run(sweep, pack, extra, workdir, name))
            first = optima(study_of(workdir, f"{sweep}-{args.packs[0]}-0"))
            base = statistics.median(walls[args.packs[0]])
            for pack in args.packs:
                study = study_of(workdir, f"{sweep}-{pack}-0")
                trials = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
                wall = statistics.median(walls[pack])
                print(
                    f"| {sweep} | {pack} | {wall:.1f} | ×{base / wall:.2f} | {trials} | "
                    f"{trials / (walls[pack][0] / 60):.1f} | {chosen(study)} | "
                    f"{agree(first, optima(study))} |",
                    flush=True,
                )
                notes += [f"# {sweep}, pack {pack}: {line}" for line in apart(first, optima(study))]
    print("\n".join(notes))
    print(f"# load after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
