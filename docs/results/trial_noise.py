"""B_simple along training at each batch size's optimum, from what the sweep's trials recorded.

    python docs/results/trial_noise.py surge_adam   # reads runs/surge_adam.db and the report

Every trial records B_simple at the start, 10%, 50% and end of its training (the trial user
attribute ``noise_scale``, read with ``lrbatch.trial_noise``). For each batch size this
pools the trials whose lr is within ×1.5 of the report's optimum (all seeds): tr(Σ) and |G|² are
summed over them, then divided, as one trial's estimate is noisy. An empty cell: the pooled |G|²
estimate was not positive (the noise swamps the mean gradient there). Writes
``docs/results/NAME/trial_noise.csv`` and prints it.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import optuna

from lrbatch import trial_noise

POINTS = ("start", "10%", "50%", "end")
NEAR = 1.5  # a trial counts when its lr is within this factor of the optimum


def main(name: str) -> None:
    folder = Path(__file__).resolve().parent / name
    summary = json.loads((folder / "summary.json").read_text())
    optima = {int(o["batch_size"]): float(o["lr_opt"]) for o in summary["optima"]}
    study = optuna.load_study(study_name=name, storage=f"sqlite:///runs/{name}.db")
    pooled: dict[tuple[int, str], list[float]] = {}
    trials: dict[int, int] = {}
    for trial in study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.COMPLETE]):
        batch, lr = int(trial.params["batch_size"]), float(trial.params["lr"])
        if batch not in optima or abs(math.log(lr / optima[batch])) > math.log(NEAR):
            continue
        trials[batch] = trials.get(batch, 0) + 1
        for record in trial_noise(trial).records:
            trace_sigma, grad_sq = record.estimate.trace_sigma, record.estimate.grad_sq
            if math.isfinite(trace_sigma) and math.isfinite(grad_sq):
                sums = pooled.setdefault((batch, record.point), [0.0, 0.0])
                sums[0] += trace_sigma
                sums[1] += grad_sq
    rows = []
    for batch in sorted(trials):
        row = {"batch_size": batch, "lr_opt": f"{optima[batch]:.3g}", "trials": trials[batch]}
        for point in POINTS:
            trace_sigma, grad_sq = pooled.get((batch, point), (math.nan, math.nan))
            row[f"b_simple_{point}"] = f"{trace_sigma / grad_sq:.0f}" if grad_sq > 0 else ""
        rows.append(row)
    with open(folder / "trial_noise.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print((folder / "trial_noise.csv").read_text(), end="")


if __name__ == "__main__":
    main(sys.argv[1])
