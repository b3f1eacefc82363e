"""The metric against the learning rate as small multiples: one panel per batch size."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from lrbatch.report.spec import PALETTE, FigureSpec, Mark, Panel, Series, geomspace
from lrbatch.science import LOCAL, BatchOptimum, TrialPoint, analyse_batch, group_levels

__all__ = ["curves_figure"]

_FIT_COLOR = "#9467bd"  # the local fit, as fitted curves are drawn in the optimal-lr figure
_EDGE_COLOR = "crimson"  # the stability edge and diverged trials
_X_PAD = 1.3  # a panel's x range reaches this factor past the lrs it shows
_EDGE_REACH = 3.0  # ... and the stability edge when it lies within this factor past them
_DEPTH = 2.5  # a panel's y range: the best trial to this many times the fitted curve's depth


def curves_figure(
    points: Sequence[TrialPoint],
    metric: str,
    minimize: bool = True,
    optima: Sequence[BatchOptimum] = (),
    rule_lines: Mapping[str, Sequence[float]] | None = None,
) -> FigureSpec:
    """The metric against the learning rate, one small panel per batch size.

    Each panel shows every trial (faint, a line per seed: a sweep pairs its seeds, so each
    seed's curve is offset, not scattered), the seed mean at each lr with its min–max over
    seeds, the local fit the optimum was read from (:func:`lrbatch.science.optima.analyse_batch`;
    fitted to losses, so negated for a metric to maximize), the optimum with its 90% interval
    (a line and a band), each rule's lr (dotted, in the rule's colour of the optimal-lr
    figure), the stability edge (the lowest lr that diverged; dashed) and the diverged trials
    (× at the worst end). A mark beyond the panel's x range is drawn at its edge, with an
    arrow (and a rule's ratio to the optimum).

    Each panel has its own ranges: y from the best trial to 2.5 times the fitted curve's
    depth (seed means beyond it sit at the edge as triangles), x the lrs of the means shown.
    The metric's level moves with the batch size (fewer steps at a larger batch) and the
    optimum moves by decades: shared ranges would flatten every curve but one. The level
    itself is in the optima table.

    Args:
        points: the study's trials.
        metric: the metric's name (the y label).
        minimize: True when a lower metric is better.
        optima: the per-batch optima (:func:`lrbatch.science.analysis.batch_optima`).
        rule_lines: each rule's lr at each batch size of ``optima``, in its order.

    Returns:
        The figure, key ``metric_vs_lr``.
    """
    by_batch: dict[int, list[TrialPoint]] = defaultdict(list)
    for p in points:
        by_batch[p.batch_size].append(p)
    lines = rule_lines or {}
    colors = {rule: PALETTE[i % 10] for i, rule in enumerate(lines)}  # as in optimum_figure
    marks: dict[int, list[Mark]] = defaultdict(list)
    titles = {batch: f"B = {batch}" for batch in by_batch}
    for i, o in enumerate(optima):
        titles[o.batch_size] += f": η* = {o.lr_opt:.3g}" + (
            "" if o.bracketed else " (not bracketed)"
        )
        marks[o.batch_size] = [Mark("optimum (90% interval)", o.lr_opt, o.lr_low, o.lr_high)]
        marks[o.batch_size] += [
            Mark(
                f"rule: {rule}",
                lrs[i],
                color=colors[rule],
                style="dot",
                label=f"{rule} ×{lrs[i] / o.lr_opt:.2g}",
            )
            for rule, lrs in lines.items()
        ]
        if o.stability_edge is not None:
            edge = Mark("stability edge", o.stability_edge, color=_EDGE_COLOR, style="dash")
            marks[o.batch_size].append(edge)
    optimum_at = {o.batch_size: o for o in optima}
    panels = [
        _curve_panel(titles[b], by_batch[b], optimum_at.get(b), marks[b], minimize)
        for b in sorted(by_batch)
    ]
    return FigureSpec(
        "metric_vs_lr",
        f"{metric} vs learning rate, per batch size",
        "learning rate",
        metric,
        panels=panels,
    )


def _curve_panel(
    title: str,
    points: list[TrialPoint],
    optimum: BatchOptimum | None,
    marks: list[Mark],
    minimize: bool,
) -> Panel:
    """One batch size's panel of :func:`curves_figure`; the local fit only where the optimum
    was read from it (not where it opens the wrong way and the best point stands)."""
    sign = 1.0 if minimize else -1.0  # metric = sign · loss
    ok = sorted((p for p in points if p.loss(minimize) < math.inf), key=lambda p: p.lr)
    series = [
        Series(
            "trials (a line per seed)",
            [p.lr for p in run],
            [p.value for p in run],
            lines=True,
            color="gray",
            faint=True,
        )
        for seed in sorted({p.seed for p in ok})
        for run in [[p for p in ok if p.seed == seed]]
    ]
    found = analyse_batch(points, minimize)
    fitted: list[float] = []
    if found is not None and found.fit is not None and optimum and optimum.method == LOCAL:
        fit = found.fit
        grid = geomspace(math.exp(fit.u_low), math.exp(fit.u_high), 40)
        fitted = [sign * fit.loss(lr) for lr in grid]
        series.append(
            Series("local fit", grid, fitted, lines=True, markers=False, color=_FIT_COLOR)
        )
    means = [(lv.lr, sign * lv.mean, lv.losses) for lv in group_levels(points, minimize)]
    means = [m for m in means if math.isfinite(m[1])]
    y_range = _curve_range([y for _, y, _ in means], [p.value for p in ok], fitted, minimize)
    shown = [m for m in means if y_range[0] <= m[1] <= y_range[1]]
    series.append(
        Series(
            "seed mean (min–max)",
            [lr for lr, _, _ in shown],
            [y for _, y, _ in shown],
            y_low=[min(sign * v for v in losses) for _, _, losses in shown],
            y_high=[max(sign * v for v in losses) for _, _, losses in shown],
            color="black",
        )
    )
    worst = y_range[1] if minimize else y_range[0]
    x_range = _curve_x_range([lr for lr, _, _ in shown or means], optimum)
    x_low, x_high = x_range or (0.0, math.inf)
    off = [lr for lr, y, _ in means if not y_range[0] <= y <= y_range[1] and x_low <= lr <= x_high]
    if off:
        symbol = "triangle-up" if minimize else "triangle-down"
        series.append(
            Series("seed mean, off scale", off, [worst] * len(off), symbol=symbol, color="black")
        )
    bad = [p.lr for p in points if p.diverged and x_low <= p.lr <= x_high]
    if bad:
        series.append(Series("diverged", bad, [worst] * len(bad), symbol="x", color=_EDGE_COLOR))
    return Panel(title, series, marks, x_range, y_range)


def _curve_range(
    means: Sequence[float], trials: Sequence[float], fitted: Sequence[float], minimize: bool
) -> tuple[float, float]:
    """A panel's y range: from the best trial to the best mean plus ``_DEPTH`` times the
    fitted curve's depth (the means' spread without a fit), or the worst mean if nearer."""
    if not means:
        return 0.0, 1.0
    sign = 1.0 if minimize else -1.0  # worked as losses: lower is better
    best = min(sign * y for y in means)
    depth = (max(fitted) - min(fitted)) if fitted else (max(means) - min(means))
    worst = min(max(sign * y for y in means), best + (_DEPTH * depth or 1.0))
    ends = sorted(sign * y for y in (min(sign * t for t in trials), worst))
    pad = 0.08 * ((ends[1] - ends[0]) or 1.0)
    return ends[0] - pad, ends[1] + pad


def _curve_x_range(
    lrs: Sequence[float], optimum: BatchOptimum | None
) -> tuple[float, float] | None:
    """A panel's x range: ``lrs`` (those of the means shown) and the optimum's interval, with
    the stability edge when it lies within ``_EDGE_REACH`` of them; ×/÷ ``_X_PAD``."""
    if optimum is not None:
        lrs = [*lrs, optimum.lr_low, optimum.lr_high]
    if not lrs:
        return None
    low, high = min(lrs), max(lrs)
    edge = None if optimum is None else optimum.stability_edge
    if edge is not None and edge <= high * _EDGE_REACH:
        high = max(high, edge)
    return low / _X_PAD, high * _X_PAD
