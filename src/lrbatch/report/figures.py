"""The report's figures, each described once as data and drawn twice: as a PNG (matplotlib)
and as an interactive plotly figure (the HTML report and optuna-dashboard), by
:mod:`lrbatch.report.draw`."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from lrbatch.report.curves import curves_figure
from lrbatch.report.draw import to_plotly, to_png
from lrbatch.report.spec import PALETTE, FigureSpec, Heatmap, Mark, Panel, Series, geomspace
from lrbatch.science import (
    BatchOptimum,
    CriticalBatch,
    EdgeFit,
    LawFit,
    Prediction,
    TrialPoint,
    saturating,
)

__all__ = [
    "FigureSpec",
    "Mark",
    "Panel",
    "Series",
    "curves_figure",
    "heatmap_figure",
    "optimum_figure",
    "target_figure",
    "to_plotly",
    "to_png",
]

_MEASURED = "#17becf"  # what the gradients measured (the fits take the palette from 4 on)


def optimum_figure(
    optima: Sequence[BatchOptimum],
    fits: Sequence[LawFit],
    rule_lines: Mapping[str, Sequence[float]],
    edge: EdgeFit | None = None,
    predictions: Sequence[Prediction] = (),
    measured: Mapping[str, tuple[float, float] | None] | None = None,
) -> FigureSpec:
    """Optimal learning rate against batch size (log–log), with 90% intervals, the rules
    (anchored at the base point), the fitted laws and the stability edge (▼ the lowest lr that
    diverged, ▲ the highest tried where none did, its law as a dotted line). With
    ``predictions`` the axis reaches their batch sizes: the laws are dashed past the measured
    ones, each prediction is a ◆ with its 90% interval, and a recommendation the edge capped
    is a ×. ``measured`` adds what the gradients measured (:func:`_measured_series`)."""
    batches = [o.batch_size for o in optima]
    if not batches:
        return FigureSpec("optimal_lr", "Optimal learning rate vs batch size", "", "", log_y=True)
    low, high = min(batches), max(batches)
    asked = [p.batch_size for p in predictions]
    first, last = min([low, *asked]), max([high, *asked])
    grid = geomspace(low, high, 60)
    # past the measured batch sizes, on either side (nan: a gap in the line)
    outside = [*geomspace(first, low, 20)[:-1], math.nan, *geomspace(high, last, 20)[1:]]
    series = [
        Series(
            "measured optimum (90% interval)",
            batches,
            [o.lr_opt for o in optima],
            y_low=[o.lr_low for o in optima],
            y_high=[o.lr_high for o in optima],
            color="black",
        )
    ]
    for i, (rule, lrs) in enumerate(rule_lines.items()):
        series.append(
            Series(
                f"rule: {rule}",
                batches,
                list(lrs),
                lines=True,
                markers=False,
                dashed=True,
                color=PALETTE[i % 10],
            )
        )
    for i, fit in enumerate(fits):
        color = PALETTE[(i + 4) % 10]
        values = [fit.predict(b) for b in grid]
        series.append(Series(f"fit: {fit.law}", grid, values, True, False, color=color))
        if predictions:
            values = [math.nan if math.isnan(b) else fit.predict(b) for b in outside]
            name = f"fit: {fit.law} (extrapolated)"
            series.append(Series(name, outside, values, True, False, dashed=True, color=color))
    series += _edge_series(optima, edge, geomspace(first, last, 60))
    series += _measured_series(optima, measured or {}, geomspace(first, last, 60))
    if predictions:
        series.append(
            Series(
                "predicted optimum (90% interval)",
                [p.batch_size for p in predictions],
                [p.lr_laws for p in predictions],
                y_low=[p.lr_low for p in predictions],
                y_high=[p.lr_high for p in predictions],
                symbol="diamond",
                color="#d62728",
            )
        )
        capped = [p for p in predictions if p.capped]
        if capped:
            x, y = [p.batch_size for p in capped], [p.lr for p in capped]
            name = "recommended: capped below the stability edge"
            series.append(Series(name, x, y, symbol="x", color="#d62728"))
    return FigureSpec(
        "optimal_lr",
        "Optimal learning rate vs batch size",
        "effective batch size",
        "learning rate",
        log_y=True,
        series=series,
    )


def _measured_series(
    optima: Sequence[BatchOptimum],
    measured: Mapping[str, tuple[float, float] | None],
    grid: Sequence[float],
) -> list[Series]:
    """From measurement alone: vertical lines at the B_simple the trials measured at
    mid-training (solid) and at the end of training (dashed), where they fall within a factor 4
    of the batch sizes drawn (the lower end of an unresolved one), and McCandlish et al.'s SGD
    optimum ε_max / (1 + B_simple/B) of a recorded noise-scale run."""
    series = []
    lrs = [lr for o in optima for lr in (o.lr_low, o.lr_high) if math.isfinite(lr)]
    for point, words, dashed in (("50%", "mid-training", False), ("end", "end of training", True)):
        found = measured.get(point)
        if found is None or not lrs:
            continue
        value = found[0] if math.isfinite(found[0]) else found[1]
        if not grid[0] / 4 <= value <= grid[-1] * 4:
            continue
        shown = f"{value:.3g}" if math.isfinite(found[0]) else f"≥ {value:.3g}"
        name = f"B_simple at {words} (trials): {shown}"
        x, y = [value, value], [min(lrs) / 2, max(lrs) * 2]
        series.append(Series(name, x, y, True, False, dashed=dashed, color=_MEASURED))
    curve = measured.get("sgd_optimum")
    if curve is not None:
        eps_max, b_simple = curve
        name = f"SGD optimum from ε_max {eps_max:.3g}, B_simple {b_simple:.3g} (noise-scale run)"
        values = [saturating(b, eps_max, b_simple) for b in grid]
        series.append(Series(name, list(grid), values, True, False, color=_MEASURED))
    return series


def _edge_series(
    optima: Sequence[BatchOptimum], edge: EdgeFit | None, grid: Sequence[float]
) -> list[Series]:
    """The stability edge: measured (▼), bounded below where nothing diverged (▲), its law."""
    diverged = [(o.batch_size, o.stability_edge) for o in optima if o.stability_edge is not None]
    bounded = [(o.batch_size, o.stable_lr) for o in optima if o.stability_edge is None]
    marks = (
        ("stability edge: lowest lr that diverged", diverged, "triangle-down", "#7f7f7f"),
        ("no divergence up to (edge above)", bounded, "triangle-up", "#bcbd22"),
    )
    series = [
        Series(
            name,
            [b for b, _ in points],
            [lr or math.nan for _, lr in points],
            symbol=symbol,
            color=color,
        )
        for name, points, symbol, color in marks
        if points
    ]
    if edge is not None:
        name = "stability edge law: " + " & ".join(law.law for law in edge.laws)
        values = [edge.predict(b)[0] for b in grid]
        series.append(Series(name, grid, values, True, False, dashed=True, color="#7f7f7f"))
    return series


def heatmap_figure(
    points: Sequence[TrialPoint], metric: str, minimize: bool = True, bins_per_decade: int = 4
) -> FigureSpec:
    """Mean metric over batch size × learning rate (lr binned in log space)."""
    batches = sorted({p.batch_size for p in points})
    lr_bins = sorted({round(math.log10(p.lr) * bins_per_decade) for p in points})
    cells: dict[tuple[int, int], list[float]] = defaultdict(list)
    marked = set()
    for p in points:
        cell = (
            batches.index(p.batch_size),
            lr_bins.index(round(math.log10(p.lr) * bins_per_decade)),
        )
        if p.diverged:
            marked.add(cell)
        else:
            cells[cell].append(p.value)
    z = [[_mean(cells.get((r, c), [])) for c in range(len(lr_bins))] for r in range(len(batches))]
    heatmap = Heatmap(
        [f"{10 ** (b / bins_per_decade):.2g}" for b in lr_bins],
        [str(b) for b in batches],
        z,
        sorted(marked),
        metric,
        low_is_good=minimize,
    )
    return FigureSpec(
        "heatmap",
        f"{metric} over batch size × learning rate (× = diverged)",
        "learning rate",
        "effective batch size",
        log_x=False,
        heatmap=heatmap,
    )


def target_figure(critical: CriticalBatch) -> FigureSpec:
    """Steps to target against batch size, with the fit S = S_min (1 + B_noise/B)
    (McCandlish et al. 2018, arXiv:1812.06162)."""
    batches = sorted(critical.steps_to_target)
    grid = geomspace(min(batches), max(batches), 60)
    fit = [critical.s_min * (1 + critical.b_noise / b) for b in grid]
    return FigureSpec(
        "steps_to_target",
        f"Steps to target (B_noise ≈ {critical.b_noise:.3g}, B_crit ≈ {critical.b_crit:.3g})",
        "effective batch size",
        "optimizer steps",
        log_y=True,
        series=[
            Series("measured (best lr)", batches, [critical.steps_to_target[b] for b in batches]),
            Series("S_min (1 + B_noise/B)", grid, fit, lines=True, markers=False),
        ],
    )


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
