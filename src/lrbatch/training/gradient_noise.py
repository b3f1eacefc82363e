"""Measuring the gradient noise scale from a model's gradients, with torch.

The estimator itself (|G|², tr(Σ), their averages and ratio) is :mod:`lrbatch.science.noise`'s; here
are the two ways of getting the squared norms it needs:

- :func:`measure`, at fixed parameters, from a model's loss on given batches (used by
  ``lrbatch noise-scale``; usable on any model);
- :class:`TrialNoise`, inside every trial's training loop, from the gradients the step
  computes anyway (its docstring says which steps, and what they cost).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from lrbatch.science import (
    CURVE_POINTS,
    POINTS,
    GradientPair,
    NoiseEstimate,
    NoiseRecord,
    combine,
    gradient_pair,
    piece_sizes,
    window_steps,
)

__all__ = ["HVP_CHUNK", "LossFn", "TrialNoise", "flat_grad", "measure"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, y) -> mean loss, a scalar
HVP_CHUNK = 512  # examples per double-backward pass of the Hessian-vector product (memory)


def flat_grad(params: Sequence[torch.Tensor]) -> torch.Tensor:
    """The parameters' ``.grad`` as one float32 vector (zeros where a parameter has none)."""
    return _flat([p.grad for p in params], params)


def _flat(tensors: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One float32 vector of a tensor per parameter, zeros for a parameter's missing one."""
    return torch.cat(
        [
            (t if t is not None else torch.zeros_like(p)).reshape(-1).float()
            for t, p in zip(tensors, params, strict=True)
        ]
    )


def measure(
    loss_fn: LossFn,
    params: Sequence[torch.Tensor],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    parts: int = 2,
    curvature: bool = True,
) -> NoiseEstimate:
    """B_simple (and ε_max) at the current parameters, from the given batches.

    Each batch is split into ``parts`` consecutive pieces; each piece's gradient is taken
    (``torch.autograd.grad``: the parameters' ``.grad`` is left alone) and the batch's gradient
    is their size-weighted mean. One :class:`GradientPair` per batch; :func:`combine` averages
    them. The estimate's ``steps`` is the number of batches.

    ε_max: the batches' mean gradients over the even- and the odd-numbered batches, v_a and
    v_b, are independent estimates of G, so v_aᵀv_b and v_aᵀHv_b are unbiased for |G|² and
    GᵀHG; Hv_b is one Hessian-vector product (double backward, :data:`HVP_CHUNK` examples a
    pass) of the mean loss over all the batches. Needs two batches or more and a loss twice
    differentiable.

    Args:
        loss_fn: the mean loss of a batch ``(x, y)``, a scalar with a graph to ``params``.
        params: the parameters to differentiate (those that train).
        batches: ``(x, y)`` batches at the same parameters; disjoint ones, for independence.
        parts: pieces per batch (2 or more); more pieces give a steadier tr(Σ).
        curvature: also measure ε_max (else nan).

    Raises:
        ValueError: ``parts`` below 2, or a batch with fewer than ``parts`` examples.
    """
    if parts < 2:
        raise ValueError(f"parts={parts} is not accepted: it must be ≥ 2 (pieces per batch)")
    pairs, means = [], []
    for x, y in batches:
        if len(x) < parts:
            raise ValueError(f"a batch of {len(x)} examples cannot be split into {parts} pieces")
        sizes = piece_sizes(len(x), parts)
        big = torch.zeros((), device=x.device)
        piece_sq = []
        for xp, yp in zip(x.split(sizes[0]), y.split(sizes[0]), strict=True):
            grads = torch.autograd.grad(loss_fn(xp, yp), params, allow_unused=True)
            piece = _flat(grads, params)
            piece_sq.append(float(piece.square().sum()))
            big = big + piece * (len(xp) / len(x))
        pairs.append(gradient_pair(sizes, piece_sq, float(big.square().sum())))
        means.append((big, len(x)))
    eps_max = math.nan
    if curvature and len(batches) >= 2:
        eps_max = _eps_max(loss_fn, params, batches, means)
    return combine(pairs, eps_max)


def _eps_max(
    loss_fn: LossFn,
    params: Sequence[torch.Tensor],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    means: Sequence[tuple[torch.Tensor, int]],
) -> float:
    """v_aᵀv_b / v_aᵀHv_b (see :func:`measure`), H the Hessian of the mean loss of ``batches``."""
    halves = [means[0::2], means[1::2]]
    v_a, v_b = (sum(g * n for g, n in half) / sum(n for _, n in half) for half in halves)
    assert isinstance(v_a, torch.Tensor) and isinstance(v_b, torch.Tensor)
    shapes = [p.numel() for p in params]
    direction = [d.view_as(p).to(p.dtype) for d, p in zip(v_b.split(shapes), params, strict=True)]
    total = sum(len(x) for x, _ in batches)
    curvature = torch.zeros((), device=v_b.device)
    chunks = [
        chunk
        for x, y in batches
        for chunk in zip(x.split(HVP_CHUNK), y.split(HVP_CHUNK), strict=True)
    ]
    for x, y in chunks:
        grads = torch.autograd.grad(loss_fn(x, y), params, create_graph=True, allow_unused=True)
        along = sum((g * d).sum() for g, d in zip(grads, direction, strict=True) if g is not None)
        assert isinstance(along, torch.Tensor)
        hvp = torch.autograd.grad(along, params, allow_unused=True)
        curvature = curvature + (v_a @ _flat(hvp, params)) * (len(x) / total)
    return float(v_a @ v_b) / float(curvature)


class TrialNoise:
    """The noise scale and the gradient norm of one trial, from the steps it trains anyway.

    Which steps measure B_simple: for each point of :data:`POINTS`, a window of
    :data:`WINDOW_STEPS` (4) consecutive optimizer steps, the first at that fraction of the
    planned steps (clipped to the run): steps 1–4 (start), 4 steps from 10% and from 50% of
    the way, and the last 4 (end); in a trial of fewer than 160 steps, shorter windows, so that
    at most 10% of its steps measure (:func:`lrbatch.science.noise.window_steps`: 2 steps at 78
    steps, 1 under 60). Each recorded point averages the |G|² and the tr(Σ) estimates of its
    window's steps separately (:func:`combine`), so up to 4 steps per point: a rough value
    (one point's B_simple is off by 13% typically, see ``tests/test_noise.py``), unbiased, so
    points of several trials average. The cost, on the CPU: 2–3% of a trial
    (``benchmarks/overhead.py``); on a GPU, a small model's step, bound by kernel launches,
    may cost up to twice as much when split in two: up to 10% there.

    How a measured step measures: with gradient accumulation, each micro-batch's gradient
    against the accumulated one; without, the step runs as two halves (two backward passes of
    half the batch, their losses weighted by half: the same summed gradient, so the training
    is unchanged up to float rounding; with batch-norm layers, each half is normalised by its
    own statistics, as with accumulation). Each piece's gradient is the difference of the
    accumulated ``.grad`` before and after its backward pass: one gradient-sized copy and a
    few vector operations per piece. A batch of 1 measures nothing.

    The gradient-norm curve: |G_B|, the norm of the batch gradient the optimizer steps with
    (mean loss over the effective batch), at :data:`CURVE_POINTS` evenly spaced steps.

    Args:
        max_steps: the trial's planned optimizer steps.
        batch_size: effective batch size.
        params: the parameters that train.
        window: steps per window (0: measure no noise scale); None:
            :func:`lrbatch.science.noise.window_steps`.
        loss_scale: the factor the gradients carry before the optimizer step (float16's
            loss scaling), asked for at each measured step; None: 1.
    """

    def __init__(
        self,
        max_steps: int,
        batch_size: int,
        params: Sequence[torch.Tensor],
        window: int | None = None,
        loss_scale: Callable[[], float] | None = None,
    ) -> None:
        self.batch_size, self.params, self.loss_scale = batch_size, list(params), loss_scale
        self.windows: dict[str, range] = {}
        window = window_steps(max_steps) if window is None else window
        if window > 0 and batch_size >= 2:
            for point, fraction in POINTS.items():
                first = min(max(1, round(fraction * max_steps) + 1), max_steps - window + 1)
                self.windows[point] = range(max(1, first), min(max_steps, first + window - 1) + 1)
        self.measured_steps = frozenset(s for steps in self.windows.values() for s in steps)
        count = min(CURVE_POINTS, max_steps)
        self.curve_steps = frozenset(
            1 + round(k * (max_steps - 1) / max(1, count - 1)) for k in range(count)
        )
        self._sizes: list[int] = []
        self._piece_sq: list[torch.Tensor] = []
        self._previous: torch.Tensor | None = None
        self._pairs: dict[int, tuple[list[int], list[torch.Tensor], torch.Tensor, float]] = {}
        self._norms: dict[int, torch.Tensor] = {}

    def piece_done(self, size: int) -> None:
        """After the backward pass of a piece of ``size`` examples, at a measured step."""
        accumulated = flat_grad(self.params)
        piece = accumulated if self._previous is None else accumulated - self._previous
        # the piece's loss was weighted by size/batch_size: undo it for the piece's own gradient
        self._piece_sq.append(torch.dot(piece, piece) * (self.batch_size / size) ** 2)
        self._sizes.append(size)
        self._previous = accumulated

    def step_done(self, step: int) -> None:
        """After the last backward pass of ``step``, before the optimizer steps."""
        measured = step in self.measured_steps
        if not measured and step not in self.curve_steps:
            return
        big = self._previous if measured and self._previous is not None else flat_grad(self.params)
        big_sq = torch.dot(big, big)
        scale = self.loss_scale() ** 2 if self.loss_scale is not None else 1.0
        if measured:
            self._pairs[step] = (self._sizes, self._piece_sq, big_sq, scale)
        if step in self.curve_steps:
            self._norms[step] = big_sq / scale
        self._sizes, self._piece_sq, self._previous = [], [], None

    def records(self, steps_taken: int) -> tuple[NoiseRecord, ...]:
        """Each point's estimate, for the windows the run reached (``steps_taken`` steps)."""
        records = []
        for point, window in self.windows.items():
            steps = [s for s in window if s in self._pairs and s <= steps_taken]
            if not steps:
                continue
            pairs = [self._pair(self._pairs[s]) for s in steps]
            middle = (steps[0] + steps[-1]) // 2
            samples = (middle - 1) * self.batch_size
            records.append(NoiseRecord(point, steps[0], steps[-1], samples, combine(pairs)))
        return tuple(records)

    def grad_norms(self) -> tuple[tuple[int, float], ...]:
        """(step, |G_B|) at the curve's steps the run reached."""
        return tuple((step, math.sqrt(float(sq))) for step, sq in sorted(self._norms.items()))

    @staticmethod
    def _pair(measured: tuple[list[int], list[torch.Tensor], torch.Tensor, float]) -> GradientPair:
        sizes, piece_sq, big_sq, scale = measured
        return gradient_pair(sizes, [float(sq) / scale for sq in piece_sq], float(big_sq) / scale)
