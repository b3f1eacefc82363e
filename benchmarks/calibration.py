"""Calibration: how far the per-batch optima are off, and how often their 90% intervals hold the
truth, on synthetic sweeps run by the real plan (the full version of tests/test_calibration.py).

    python benchmarks/calibration.py                      # 30 worlds per scenario
    python benchmarks/calibration.py --repeats 60
    python benchmarks/calibration.py --before d8562fb     # also the estimator of that commit
    python benchmarks/calibration.py --max-seeds 12       # more seeds where an optimum is loose

What is measured: for each scenario (a truth across batch sizes × a landscape shape, see
:class:`lrbatch.search.calibration.Landscape`), ``--repeats`` independent worlds (seed offsets and
shifts drawn anew); in each, the default sweep's plan (conf/config.yaml: batch sizes 16…1024,
lr 1e-3…30, tolerance 1.4, 3 seeds, η0 searched at B0 = 16, law seeds saturating and surge)
is run against the landscape as one worker would run it, then rerun with fresh trial noise
(another thread count). Every estimator is scored on the same simulated trials:

- *err q50/q90/q95*: quantiles of |log10(estimate / truth)| over every bracketed batch size;
- *≤0.1*: the fraction within 0.1 decade (goal ≥ 95%);
- *best q50/q95, ≤0.1*: the same for the best tried learning rate (the estimate to beat);
- *cover*: the fraction of 90% intervals that contain the truth (goal 80–97%);
- *rerun in*: the fraction of reruns whose estimate lands inside the first run's interval;
- *width*: the median interval width, in decades.

``--before REF`` loads the estimator's module (``src/lrbatch/science/optima.py``, before the
package's folders ``src/lrbatch/_optima.py``) as it was at a git commit and scores its
``batch_optima`` on the same trials, side by side (the estimator only: the sweeps are run by
this tree's plan). ``--max-seeds N`` runs the plan with ``sweep.max_seeds=N`` (default 0: no
seeds beyond ``sweep.seeds``, the plan before that setting existed).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
from _machine import cpu_model

from lrbatch.science import rules
from lrbatch.science.analysis import BatchOptimum, TrialPoint, batch_optima
from lrbatch.search.calibration import Calibration, Landscape, score, sweeps
from lrbatch.search.plan import SweepPlan

ROOT = Path(__file__).resolve().parents[1]
PLAN = SweepPlan(
    batch_sizes=(16, 32, 64, 128, 256, 512, 1024),
    base_batch=16,
    lr_min=1e-3,
    lr_max=30.0,
    tolerance=1.4,
    seeds=3,
)
TRUTHS: dict[str, Callable[[float], float]] = {
    "saturating": lambda b: rules.saturating(b, 2.0, 256.0),  # B_noise inside the range
    "surge": lambda b: rules.surge(b, 0.01, 128.0),  # peaks at 128, falls past it
}
SHAPES: dict[str, dict[str, float]] = {
    "skewed": {},  # κ = 1.5, edge 4×, trial noise 0.01, seed offset 0.03, seed shift 0.08
    "noisy": {"noise_growth": 0.3},  # trial noise ×3.5 at B = 1024
    "steep": {"skew": 3.0, "edge": 2.5},  # divergence close above the optimum
    "parabola": {"skew": 0.0, "seed_shift": 0.0},  # the estimator's own model
}
Estimator = Callable[[Sequence[TrialPoint]], list[BatchOptimum]]


def estimator_at(ref: str) -> Estimator:
    """``batch_optima`` of the estimator's module at git commit ``ref``."""
    for where in ("src/lrbatch/science/optima.py", "src/lrbatch/_optima.py"):  # after, before
        shown = subprocess.run(
            ["git", "show", f"{ref}:{where}"], cwd=ROOT, capture_output=True, text=True
        )
        if shown.returncode == 0:
            source = shown.stdout
            break
    else:
        raise SystemExit(f"--before {ref}: no estimator module at that commit ({shown.stderr})")
    path = Path(tempfile.mkdtemp()) / f"optima_{ref}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # (dataclasses look their module up)
    spec.loader.exec_module(module)

    def estimate(points: Sequence[TrialPoint]) -> list[BatchOptimum]:
        old = [module.TrialPoint(**vars(p)) for p in points]
        return module.batch_optima(old)  # type: ignore[no-any-return]

    return estimate


def row(name: str, result: Calibration) -> str:
    q = np.quantile(result.errors, [0.5, 0.9, 0.95])
    qb = np.quantile(result.best_errors, [0.5, 0.95])
    return (
        f"{name:28s} {len(result.errors):5d} | {q[0]:6.3f} {q[1]:6.3f} {q[2]:6.3f} "
        f"{result.within(0.1):6.2f} | {qb[0]:6.3f} {qb[1]:6.3f} "
        f"{np.mean(result.best_errors <= 0.1):6.2f} | {result.coverage:6.2f} "
        f"{np.mean(result.rerun_inside):8.2f} {np.median(result.widths):6.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="worlds per scenario")
    parser.add_argument("--before", default=None, help="git commit of an earlier estimator")
    parser.add_argument(
        "--max-seeds", type=int, default=PLAN.max_seeds, help="sweep.max_seeds of the plan"
    )
    parser.add_argument("--truths", nargs="*", default=list(TRUTHS), choices=list(TRUTHS))
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES))
    args = parser.parse_args()
    plan = dataclasses.replace(PLAN, max_seeds=args.max_seeds)
    estimators: dict[str, Estimator] = {"now": batch_optima}
    if args.before:
        estimators = {args.before: estimator_at(args.before), **estimators}
    print(
        f"# {datetime.now():%Y-%m-%d %H:%M}, {cpu_model()}, Python {platform.python_version()}; "
        f"{args.repeats} worlds per scenario, default plan, sweep.max_seeds={args.max_seeds}"
    )
    header = (
        f"{'scenario / estimator':28s} {'n':>5s} | {'err50':>6s} {'err90':>6s} {'err95':>6s} "
        f"{'≤0.1':>6s} | {'best50':>6s} {'best95':>6s} {'≤0.1':>6s} | {'cover':>6s} "
        f"{'rerun in':>8s} {'width':>6s}"
    )
    print(header)
    print("-" * len(header))
    totals: dict[str, list[Calibration]] = {name: [] for name in estimators}
    for truth in args.truths:
        for shape in args.shapes:
            landscape = Landscape(TRUTHS[truth], **SHAPES[shape])
            start = time.perf_counter()
            runs = sweeps(plan, landscape, args.repeats)
            seconds = time.perf_counter() - start
            for name, estimator in estimators.items():
                result = score(landscape, runs, estimator)
                totals[name].append(result)
                print(row(f"{truth}/{shape} {name}", result))
            print(
                f"{'':28s} ({np.mean([len(p) for p, _ in runs]):.0f} trials/sweep, "
                f"{seconds / (2 * args.repeats):.1f} s/sweep simulated)"
            )
    for name, results in totals.items():
        pooled = Calibration(
            *(np.concatenate([getattr(r, f) for r in results]) for f in Calibration.__annotations__)
        )
        print(row(f"all scenarios {name}", pooled))


if __name__ == "__main__":
    main()
