"""The report's figures, each described once as data and drawn twice: as a PNG (matplotlib)
and as an interactive plotly figure (the HTML report and optuna-dashboard), by
:mod:`lrbatch._render`."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

from lrbatch._curves import curves_figure
from lrbatch._render import to_plotly, to_png
from lrbatch._spec import PALETTE, FigureSpec, Heatmap, Mark, Panel, Series, geomspace
from lrbatch.analysis import BatchOptimum, CriticalBatch, LawFit, TrialPoint

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


def optimum_figure(
    optima: Sequence[BatchOptimum],
    fits: Sequence[LawFit],
    rule_lines: Mapping[str, Sequence[float]],
) -> FigureSpec:
    """Optimal learning rate against batch size (log–log), with 90% intervals, the rules
    (anchored at the base point) and the fitted laws."""
    batches = [o.batch_size for o in optima]
    grid = geomspace(min(batches), max(batches), 60) if batches else []
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
        series.append(
            Series(
                f"fit: {fit.law}",
                grid,
                [fit.predict(b) for b in grid],
                lines=True,
                markers=False,
                color=PALETTE[(i + 4) % 10],
            )
        )
    return FigureSpec(
        "optimal_lr",
        "Optimal learning rate vs batch size",
        "effective batch size",
        "learning rate",
        log_y=True,
        series=series,
    )


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
