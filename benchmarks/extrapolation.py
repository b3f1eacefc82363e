"""Extrapolation: how close `lrbatch predict --study` lands past the measured batch sizes.

    python benchmarks/extrapolation.py                  # every truth, 200 repeats each
    python benchmarks/extrapolation.py --repeats 50 --noise 0.1 --b-max 256

What is measured: :func:`lrbatch.science.analysis.predict_at` on synthetic per-batch optima whose
truth is known. Per repeat, at B = 16, 32, … B_max: the measured optimum is the true one times
exp(σ z) (σ = ``--noise`` in ln η, z ~ N(0, 1)), with a 90% interval of half-width 1.645 σ
times exp(0.25 z'), an optimum's own σ as lrbatch estimates it, right to within about 25%.
The true stability edge is k times the true optimum (k uniform in 3–5 per repeat), measured
as a sweep measures it: on a ×2 grid of learning rates with a random offset, the bracket
(highest lr below the edge, lowest lr above); at 30% of the batch sizes the sweep never
tried an lr that high, and only a lower bound (the edge ÷ 2–4) is known.

Predictions at 4× and 8× B_max are compared with the truth: the quantiles of |log10 error|
of the laws' optimum and of the recommended lr (the optimum, capped below the stability
edge), the share within 0.15 decade, how often the 90% interval contains the truth, how often
the stability edge capped the recommendation, how often it lay above the true edge (it
must never), how often the prediction warned that the batch scale (B_noise, B_peak) is not
pinned by the measured batch sizes, and the share within 0.15 decade of the others.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lrbatch.science import rules
from lrbatch.science.analysis import BatchOptimum, fit_edge, predict_at

TRUTHS: dict[str, Callable[[float], float]] = {
    "saturating B_noise=64": lambda b: rules.saturating(b, 0.4, 64.0),
    "saturating B_noise=256": lambda b: rules.saturating(b, 0.4, 256.0),
    "saturating B_noise=1024": lambda b: rules.saturating(b, 0.4, 1024.0),
    "surge B_peak=64": lambda b: rules.surge(b, 0.01, 64.0),
    "surge B_peak=128": lambda b: rules.surge(b, 0.01, 128.0),
    "surge B_peak=256": lambda b: rules.surge(b, 0.01, 256.0),
    "square_root": lambda b: rules.square_root(b, 128, 0.01),
    "linear": lambda b: rules.linear(b, 16, 0.001),
}
FACTORS = (4, 8)  # predictions at these multiples of B_max
DECADE = 0.15  # |log10 error| the goal allows


def measured_edge(edge: float, rng: np.random.Generator) -> tuple[float, float | None]:
    """(stable_lr, stability_edge) as a sweep finds a true ``edge``: the bracket of a ×2 grid
    with a random offset; 30% of the time only a lower bound (the sweep never went that high)."""
    if rng.uniform() < 0.3:
        return edge / rng.uniform(2.0, 4.0), None
    grid_above = math.exp(math.log(edge) + rng.uniform(0.0, math.log(2.0)))
    return grid_above / 2.0, grid_above


def optimum(
    batch: int, lr: float, half: float, stable: float | None, diverged: float | None
) -> BatchOptimum:
    """A bracketed optimum ``lr`` with a 90% interval ×exp(±``half``) and the stability edge's
    bracket (``stable``, ``diverged``] (``None``: that end unknown)."""
    return BatchOptimum(
        batch_size=batch,
        lr_opt=lr,
        lr_low=lr * math.exp(-half),
        lr_high=lr * math.exp(half),
        value_opt=0.0,
        best_lr_tried=lr,
        trials=14,
        seeds=3,
        diverged=0 if diverged is None else 1,
        stability_edge=diverged,
        bracketed=True,
        method="local quadratic",
        stable_lr=stable,
    )


def synthetic_optima(
    truth: Callable[[float], float], b_max: int, noise: float, rng: np.random.Generator
) -> tuple[list[BatchOptimum], float]:
    """Measured optima at 16 … ``b_max`` and the edge factor k (edge = k × truth)."""
    k = rng.uniform(3.0, 5.0)
    optima = []
    for batch in (2**e for e in range(4, int(math.log2(b_max)) + 1)):
        lr = truth(batch) * math.exp(noise * rng.normal())
        half = 1.645 * noise * math.exp(0.25 * rng.normal())
        optima.append(optimum(batch, lr, half, *measured_edge(k * truth(batch), rng)))
    return optima, k


@dataclass(frozen=True)
class Outcome:
    """Predictions at ``FACTORS`` × B_max over the repeats of one truth."""

    optimum_errors: np.ndarray  # log10(laws' median / true optimum), before the edge's cap
    errors: np.ndarray  # log10(recommended / true optimum)
    covered: np.ndarray  # the 90% interval contains the truth
    capped: np.ndarray  # the stability edge lowered the recommendation
    above_edge: np.ndarray  # the recommendation lay above the true edge
    identified: np.ndarray  # no "batch scale not pinned" warning came with the prediction
    seconds: float

    def row(self, name: str) -> str:
        cells = []
        for errors in (np.abs(self.optimum_errors), np.abs(self.errors)):
            q50, q90, q_max = np.quantile(errors, [0.5, 0.9, 1.0])
            cells.append(f"{q50:6.3f} {q90:6.3f} {q_max:6.3f} {np.mean(errors <= DECADE):6.0%}")
        pinned = np.abs(self.errors[self.identified])
        within = f"{np.mean(pinned <= DECADE):6.0%}" if len(pinned) else f"{'—':>6}"
        return (
            f"{name:<24} {cells[0]} │ {cells[1]} │ {np.mean(self.covered):5.0%} "
            f"{np.mean(self.capped):6.0%} {int(np.sum(self.above_edge)):>5} "
            f"{np.mean(~self.identified):6.0%} {within} {self.seconds:5.2f}"
        )


def measure(
    truth: Callable[[float], float],
    b_max: int,
    noise: float,
    repeats: int,
    n_boot: int = 100,
    seed: int = 0,
) -> Outcome:
    """Predict at ``FACTORS`` × ``b_max`` on ``repeats`` synthetic studies of ``truth``, with
    ``n_boot`` bootstrap draws per law."""
    records = []
    start = time.perf_counter()
    for repeat in range(repeats):
        rng = np.random.default_rng([seed, repeat])
        optima, k = synthetic_optima(truth, b_max, noise, rng)
        batches = [f * b_max for f in FACTORS]
        for p in predict_at(optima, batches, fit_edge(optima), n_boot=n_boot, seed=repeat):
            true_lr = truth(p.batch_size)
            records.append(
                (
                    math.log10(p.lr_laws / true_lr),
                    math.log10(p.lr / true_lr),
                    p.lr_low <= true_lr <= p.lr_high,
                    p.capped,
                    p.lr > k * true_lr,
                    p.scale_identified,
                )
            )
    columns = (np.array(column) for column in zip(*records, strict=True))
    return Outcome(*columns, seconds=(time.perf_counter() - start) / repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--noise", type=float, default=0.07, help="σ of ln η_opt per optimum")
    parser.add_argument("--b-max", type=int, default=512, help="largest measured batch size")
    args = parser.parse_args()
    print(
        f"B = 16 … {args.b_max}, σ = {args.noise} in ln η, predictions at "
        f"{' and '.join(f'{f}×' for f in FACTORS)} B_max, {args.repeats} repeats each\n"
    )
    print("|log10 error| (median, 90% quantile, max, share ≤ 0.15 decade) of the laws' optimum")
    print("and of the recommended lr (the optimum capped below the stability edge); share of")
    print("90% intervals holding the true optimum; share capped; count of lr above the true edge;")
    print("share warned that the batch scale is not pinned; recommended ≤ 0.15 decade unwarned\n")
    optimum, recommended = "laws' optimum", "recommended lr"
    print(f"{'':<24} {optimum:^27} │ {recommended:^27} │")
    quantiles = f"{'q50':>6} {'q90':>6} {'max':>6} {'≤0.15':>6}"
    print(
        f"{'truth':<24} {quantiles} │ {quantiles} │ {'cover':>5} {'capped':>6} {'>edge':>5} "
        f"{'warned':>6} {'≤0.15':>6} {'s/rep':>5}"
    )
    for name, truth in TRUTHS.items():
        print(measure(truth, args.b_max, args.noise, args.repeats).row(name))


if __name__ == "__main__":
    main()
