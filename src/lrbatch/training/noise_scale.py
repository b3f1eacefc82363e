"""``lrbatch noise-scale``: B_simple and ε_max at the initial weights and along one short run.

No sweep: the config's model and data are trained for a few hundred steps at one learning rate
and one batch size (B0, the sweep's base batch), with the trainer of every trial
(:func:`lrbatch.training.loop.train`); at evenly spaced steps the run stops to measure, at those
parameters, with :func:`lrbatch.training.gradient_noise.measure`:

- a fixed measurement set: the first :data:`MEASURE_EXAMPLES` examples of a seeded permutation
  of the training set (all of it if smaller), as two batches, each split into pieces of
  :data:`PIECE` examples. B_simple from the pieces against their batch (tr(Σ) from about
  examples/PIECE − 2 degrees of freedom), ε_max from one Hessian-vector product along the
  batches' gradients. The same examples at every step, so the trajectory shows the model
  changing, not the sample.

From the last point, McCandlish et al.'s SGD optimum ε_opt(B) = ε_max / (1 + B_simple/B) at the
sweep's batch sizes (:func:`lrbatch.science.noise.sgd_optimum`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Group
from rich.table import Table
from rich.text import Text

from lrbatch.config import ConfigError
from lrbatch.data import TensorData
from lrbatch.science import NoiseEstimate, sgd_optimum
from lrbatch.training.gradient_noise import LossFn, measure
from lrbatch.training.loop import Probe, load_data, make_fabric, train

__all__ = [
    "MEASURE_EXAMPLES",
    "PIECE",
    "NoiseScaleRun",
    "TrajectoryPoint",
    "base_batch",
    "measurement_batches",
    "noise_scale_json",
    "optimizer_name",
    "plain_sgd",
    "render_noise_scale",
    "run_noise_scale",
]

MEASURE_EXAMPLES = 16_384  # examples each measurement uses (the training set if smaller)
PIECE = 32  # examples per piece of a measurement batch
SEED = 0  # initial weights and example order: those of the sweep's first seed


@dataclass(frozen=True)
class TrajectoryPoint:
    """A measurement along the run.

    Attributes:
        step: optimizer steps taken before it (0: the initial weights).
        samples: examples trained on before it (step × batch).
        estimate: B_simple, |G|², tr(Σ) and ε_max there (``steps``: the 2 batches averaged).
    """

    step: int
    samples: int
    estimate: NoiseEstimate


@dataclass(frozen=True)
class NoiseScaleRun:
    """What ``lrbatch noise-scale`` measured.

    Attributes:
        batch_size: the run's effective batch (B0).
        lr: its peak learning rate, per optimizer step.
        lr_source: where the learning rate came from (``--lr``, a study's η0, ...).
        steps: optimizer steps planned; ``trajectory`` stops early where the run diverged.
        trajectory: the measurements, the first at the initial weights.
        predicted_lr: ε_opt(B) at the sweep's batch sizes, from the last measurement.
        diverged: the run diverged (its loss grew past ``budget.divergence_factor``).
        examples: examples in each measurement.
    """

    batch_size: int
    lr: float
    lr_source: str
    steps: int
    trajectory: tuple[TrajectoryPoint, ...]
    predicted_lr: dict[int, float]
    diverged: bool
    examples: int

    @property
    def init(self) -> NoiseEstimate:
        """The measurement at the initial weights."""
        return self.trajectory[0].estimate


def plain_sgd(cfg: DictConfig) -> bool:
    """Whether ``cfg.optimizer`` is plain SGD (no momentum), the optimizer ε_opt is about."""
    return cfg.optimizer._target_ == "torch.optim.SGD" and not cfg.optimizer.get("momentum")


def optimizer_name(cfg: DictConfig) -> str:
    """``cfg.optimizer``'s target, with its momentum if it has one."""
    momentum = cfg.optimizer.get("momentum")
    return str(cfg.optimizer._target_) + (f" (momentum {momentum})" if momentum else "")


def base_batch(cfg: DictConfig) -> int:
    """B0: ``sweep.base_batch``, else the smallest of ``sweep.batch_sizes``."""
    return int(cfg.sweep.base_batch or min(cfg.sweep.batch_sizes))


def measurement_batches(data: TensorData) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed measurement set as two equal batches (see the module's docstring)."""
    order = torch.randperm(data.num_train, generator=torch.Generator().manual_seed(SEED))
    half = min(MEASURE_EXAMPLES, data.num_train) // 2
    chosen = order[: 2 * half].to(data.x_train.device)
    return [(data.x_train[part], data.y_train[part]) for part in (chosen[:half], chosen[half:])]


def run_noise_scale(
    cfg: DictConfig,
    lr: float | None,
    lr_source: str,
    steps: int | None,
    points: int,
    batch_size: int | None = None,
    on_measured: Callable[[TrajectoryPoint], None] | None = None,
) -> NoiseScaleRun:
    """Measure at the initial weights, then along ``steps`` optimizer steps at ``lr``.

    Args:
        cfg: the composed config (model, data, optimizer, schedule, hardware; its budget is
            replaced by ``steps`` steps).
        lr: peak learning rate; None: ε_opt(B0) measured at the initial weights.
        lr_source: says where ``lr`` came from, for the output.
        steps: optimizer steps of the run (None: one epoch of the training set at B0).
        points: measurements after the initial one, evenly spaced, the last at ``steps``.
        batch_size: the run's effective batch (default: B0 of ``cfg``).
        on_measured: called after each measurement (a progress bar).

    Raises:
        ConfigError: the training set is too small to measure (fewer than 4 × PIECE examples),
            ``steps`` or ``points`` below 1, or no lr given where the initial weights give
            no SGD optimum.
    """
    if (steps is not None and steps < 1) or points < 1:
        raise ConfigError(f"steps={steps}, points={points}: accepted: both ≥ 1")
    batch = batch_size or base_batch(cfg)
    fabric = make_fabric(cfg.hardware)
    data = load_data(cfg).to(fabric.device)
    steps = steps or math.ceil(data.num_train / batch)
    batches = measurement_batches(data)
    parts = len(batches[0][0]) // PIECE
    if parts < 2:
        raise ConfigError(
            f"dataset: the training set has {data.num_train} examples; accepted: at least "
            f"{4 * PIECE} (two measurement batches of two pieces of {PIECE})"
        )
    measured: dict[int, NoiseEstimate] = {}

    def probe(step: int, loss_fn: LossFn, params: list[torch.Tensor]) -> None:
        measured[step] = measure(loss_fn, params, batches, parts)
        if on_measured is not None:
            on_measured(TrajectoryPoint(step, step * batch, measured[step]))

    at = frozenset(round(k * steps / points) for k in range(points + 1))
    if lr is None:  # the initial weights first (a 1-step run: same seed, same weights)
        first = Probe(frozenset({0}), probe)
        train(_steps(cfg, 1), batch, 1.0, SEED, data, fabric, noise_window=0, probe=first)
        lr = sgd_optimum(measured[0], batch)
        if not (math.isfinite(lr) and lr > 0):
            raise ConfigError(
                f"no learning rate given, and the initial weights give no SGD optimum to train "
                f"at (B_simple {measured[0].b_simple:.4g}, ε_max {measured[0].eps_max:.4g}): "
                "give --lr"
            )
    rest = Probe(at - measured.keys(), probe)
    result = train(_steps(cfg, steps), batch, lr, SEED, data, fabric, noise_window=0, probe=rest)
    trajectory = tuple(
        TrajectoryPoint(step, step * batch, estimate) for step, estimate in sorted(measured.items())
    )
    last = trajectory[-1].estimate
    predicted = {int(b): sgd_optimum(last, int(b)) for b in sorted(cfg.sweep.batch_sizes)}
    return NoiseScaleRun(
        batch_size=batch,
        lr=lr,
        lr_source=lr_source,
        steps=steps,
        trajectory=trajectory,
        predicted_lr=predicted,
        diverged=result.diverged,
        examples=2 * len(batches[0][0]),
    )


def _steps(cfg: DictConfig, steps: int) -> DictConfig:
    """``cfg`` with a budget of ``steps`` optimizer steps."""
    run_cfg = cfg.copy()
    OmegaConf.update(run_cfg, "budget", {"kind": "steps", "steps": steps}, merge=True)
    return run_cfg


def render_noise_scale(run: NoiseScaleRun, optimizer: str | None = None) -> Group:
    """What was run, the trajectory, and the SGD optimum it implies (``optimizer``: named in a
    note, unless it is plain SGD)."""
    header = Text(
        f"Trained {run.steps} steps at B0 = {run.batch_size}, lr {run.lr:.4g} ({run.lr_source}); "
        f"each measurement: {run.examples} training examples, pieces of {PIECE}."
    )
    trajectory = Table(title="Gradient noise scale along the run")
    for column in ("step", "samples", "B_simple", "|G|", "tr(Σ)", "ε_max"):
        trajectory.add_column(column, justify="right")
    for point in run.trajectory:
        e = point.estimate
        trajectory.add_row(
            str(point.step),
            str(point.samples),
            _number(e.b_simple),
            _number(e.grad_norm),
            _number(e.trace_sigma),
            _number(e.eps_max) if not e.eps_max <= 0 else f"{e.eps_max:.4g} (curves down)",
        )
    last = run.trajectory[-1]
    curve = Table(title="SGD optimum")
    curve.add_column("batch", justify="right")
    curve.add_column("ε_opt (lr)", justify="right")
    for batch, lr in run.predicted_lr.items():
        curve.add_row(str(batch), _number(lr))
    notes = [
        f"ε_opt(B) = ε_max / (1 + B_simple/B) (McCandlish et al. 2018), from step {last.step}."
    ]
    if run.diverged:
        notes.append(f"The run diverged after step {last.step}: lower --lr.")
    if optimizer is None and math.isfinite(sgd_optimum(last.estimate, run.batch_size)):
        notes.append(
            "To seed a sweep with it (the rule `measured`, trained and scored like the others): "
            "'sweep.rules=[constant,linear,square_root,measured]' "
            f"sweep.b_noise={last.estimate.b_simple:.4g} sweep.eps_max={last.estimate.eps_max:.4g}"
        )
    if optimizer is not None:
        notes.append(
            f"The optimizer is {optimizer}: ε_opt is plain SGD's optimum, a scale here, not a "
            "prediction."
        )
    return Group(header, trajectory, curve, *(Text(n) for n in notes))


def noise_scale_json(run: NoiseScaleRun) -> dict[str, Any]:
    """``--json``'s object (non-finite numbers as null)."""
    return {
        "batch_size": run.batch_size,
        "lr": run.lr,
        "lr_source": run.lr_source,
        "diverged": run.diverged,
        "b_simple_init": _finite(run.init.b_simple),
        "eps_max_init": _finite(run.init.eps_max),
        "trajectory": [
            {
                "step": p.step,
                "samples": p.samples,
                "b_simple": _finite(p.estimate.b_simple),
                "eps_max": _finite(p.estimate.eps_max),
                "grad_norm": _finite(p.estimate.grad_norm),
                "grad_sq": _finite(p.estimate.grad_sq),
                "trace_sigma": _finite(p.estimate.trace_sigma),
            }
            for p in run.trajectory
        ],
        "predicted_lr": {str(b): _finite(lr) for b, lr in run.predicted_lr.items()},
    }


def _number(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "—"


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None
