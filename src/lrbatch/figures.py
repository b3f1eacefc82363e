"""The report's figures, each described once as data and drawn twice: as a PNG (matplotlib)
and as an interactive plotly figure (the HTML report and optuna-dashboard)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrbatch.analysis import BatchOptimum, CriticalBatch, EdgeFit, LawFit, Prediction, TrialPoint

__all__ = [
    "FigureSpec",
    "Series",
    "curves_figure",
    "heatmap_figure",
    "optimum_figure",
    "target_figure",
    "to_plotly",
    "to_png",
]

_MARKERS = {"circle": "o", "x": "x", "triangle-down": "v", "triangle-up": "^", "diamond": "D"}
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass(frozen=True)
class Series:
    """One trace: points or a line, optionally with vertical error bars."""

    name: str
    x: Sequence[float]
    y: Sequence[float]
    lines: bool = False
    markers: bool = True
    y_low: Sequence[float] | None = None
    y_high: Sequence[float] | None = None
    dashed: bool = False
    symbol: str = "circle"  # circle | x | triangle-down | triangle-up | diamond (plotly's names)
    color: str | None = None


@dataclass(frozen=True)
class Heatmap:
    """Mean metric on a batch × learning-rate grid; ``marked`` cells held a diverged run."""

    x_labels: Sequence[str]
    y_labels: Sequence[str]
    z: Sequence[Sequence[float]]  # z[row=batch][column=lr bin], nan where nothing was tried
    marked: Sequence[tuple[int, int]] = ()
    colorbar: str = ""
    low_is_good: bool = True  # the bright end of the colour scale marks the good values


@dataclass(frozen=True)
class FigureSpec:
    key: str  # file stem and dashboard graph id
    title: str
    x_label: str
    y_label: str
    log_x: bool = True
    log_y: bool = False
    series: Sequence[Series] = field(default_factory=tuple)
    heatmap: Heatmap | None = None


def optimum_figure(
    optima: Sequence[BatchOptimum],
    fits: Sequence[LawFit],
    rule_lines: Mapping[str, Sequence[float]],
    edge: EdgeFit | None = None,
    predictions: Sequence[Prediction] = (),
) -> FigureSpec:
    """Optimal learning rate against batch size (log–log), with 90% intervals, the rules
    (anchored at the base point), the fitted laws and the stability edge (▼ the lowest lr that
    diverged, ▲ the highest tried where none did, its law as a dotted line). With
    ``predictions`` the axis reaches their batch sizes: the laws are dashed past the measured
    ones, each prediction is a ◆ with its 90% interval, and a recommendation the edge capped
    is a ×."""
    batches = [o.batch_size for o in optima]
    if not batches:
        return FigureSpec("optimal_lr", "Optimal learning rate vs batch size", "", "", log_y=True)
    low, high = min(batches), max(batches)
    asked = [p.batch_size for p in predictions]
    first, last = min([low, *asked]), max([high, *asked])
    grid = _geomspace(low, high, 60)
    # past the measured batch sizes, on either side (nan: a gap in the line)
    outside = [*_geomspace(first, low, 20)[:-1], math.nan, *_geomspace(high, last, 20)[1:]]
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
                color=_PALETTE[i % 10],
            )
        )
    for i, fit in enumerate(fits):
        color = _PALETTE[(i + 4) % 10]
        values = [fit.predict(b) for b in grid]
        series.append(Series(f"fit: {fit.law}", grid, values, True, False, color=color))
        if predictions:
            values = [math.nan if math.isnan(b) else fit.predict(b) for b in outside]
            name = f"fit: {fit.law} (extrapolated)"
            series.append(Series(name, outside, values, True, False, dashed=True, color=color))
    series += _edge_series(optima, edge, _geomspace(first, last, 60))
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


def curves_figure(points: Sequence[TrialPoint], metric: str, minimize: bool = True) -> FigureSpec:
    """The metric against the learning rate, one colour per batch size; diverged runs as ×
    at the worst end of the plot."""
    by_batch: dict[int, list[TrialPoint]] = defaultdict(list)
    for p in points:
        by_batch[p.batch_size].append(p)
    finite = [p.value for p in points if not p.diverged and math.isfinite(p.value)]
    worst = (max(finite) if minimize else min(finite)) if finite else 1.0  # where × marks go
    series = []
    for i, (batch, here) in enumerate(sorted(by_batch.items())):
        color = _PALETTE[i % 10]
        ok = sorted((p for p in here if not p.diverged), key=lambda p: p.lr)
        series.append(
            Series(
                f"B={batch}", [p.lr for p in ok], [p.value for p in ok], lines=False, color=color
            )
        )
        bad = [p for p in here if p.diverged]
        if bad:
            series.append(
                Series(
                    f"B={batch} diverged",
                    [p.lr for p in bad],
                    [worst] * len(bad),
                    symbol="x",
                    color=color,
                )
            )
    return FigureSpec(
        "metric_vs_lr",
        f"{metric} vs learning rate, per batch size",
        "learning rate",
        metric,
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
    grid = _geomspace(min(batches), max(batches), 60)
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


def _geomspace(low: float, high: float, n: int) -> list[float]:
    if low == high:
        return [low]
    step = (math.log(high) - math.log(low)) / (n - 1)
    return [math.exp(math.log(low) + i * step) for i in range(n)]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def to_plotly(spec: FigureSpec) -> Any:
    """An interactive plotly figure of ``spec``."""
    import plotly.graph_objects as go

    figure = go.Figure()
    for s in spec.series:
        error = None
        if s.y_low is not None and s.y_high is not None:
            error = dict(
                type="data",
                symmetric=False,
                array=[h - y for h, y in zip(s.y_high, s.y, strict=True)],
                arrayminus=[y - lo for y, lo in zip(s.y, s.y_low, strict=True)],
            )
        mode = "+".join(m for m, on in (("lines", s.lines), ("markers", s.markers)) if on)
        figure.add_trace(
            go.Scatter(
                x=list(s.x),
                y=list(s.y),
                name=s.name,
                mode=mode,
                error_y=error,
                line=dict(dash="dash" if s.dashed else "solid", color=s.color),
                marker=dict(symbol=s.symbol, color=s.color, size=9 if s.symbol == "x" else 7),
            )
        )
    if spec.heatmap is not None:
        h = spec.heatmap
        figure.add_trace(
            go.Heatmap(
                x=list(h.x_labels),
                y=list(h.y_labels),
                z=[list(row) for row in h.z],
                colorbar=dict(title=h.colorbar),
                colorscale="Viridis_r" if h.low_is_good else "Viridis",
            )
        )
        for row, column in h.marked:
            figure.add_annotation(
                x=h.x_labels[column],
                y=h.y_labels[row],
                text="×",
                showarrow=False,
                font=dict(color="red", size=16),
            )
    figure.update_layout(
        title=spec.title,
        xaxis_title=spec.x_label,
        yaxis_title=spec.y_label,
        template="plotly_white",
    )
    if spec.log_x:
        figure.update_xaxes(type="log")
    if spec.log_y:
        figure.update_yaxes(type="log")
    if spec.heatmap is not None:
        figure.update_xaxes(type="category")
        figure.update_yaxes(type="category")
    return figure


def to_png(spec: FigureSpec, path: Path) -> Path:
    """Draw ``spec`` to a PNG file with matplotlib (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    for s in spec.series:
        style = ("--" if s.dashed else "-") if s.lines else "none"
        marker = _MARKERS[s.symbol] if s.markers else None
        if s.y_low is not None and s.y_high is not None:
            low = [y - lo for y, lo in zip(s.y, s.y_low, strict=True)]
            high = [h - y for h, y in zip(s.y_high, s.y, strict=True)]
            fmt = marker or "o"
            ax.errorbar(s.x, s.y, yerr=[low, high], fmt=fmt, color=s.color, capsize=3, label=s.name)
        else:
            ax.plot(s.x, s.y, linestyle=style, marker=marker, color=s.color, label=s.name)
    if spec.heatmap is not None:
        h = spec.heatmap
        image = ax.imshow(
            h.z, aspect="auto", origin="lower", cmap="viridis_r" if h.low_is_good else "viridis"
        )
        fig.colorbar(image, ax=ax, label=h.colorbar)
        ax.set_xticks(range(len(h.x_labels)), h.x_labels, rotation=45)
        ax.set_yticks(range(len(h.y_labels)), h.y_labels)
        for row, column in h.marked:
            ax.text(column, row, "×", ha="center", va="center", color="red", fontsize=14)
    if spec.log_x and spec.heatmap is None:
        ax.set_xscale("log", base=2)
    if spec.log_y:
        ax.set_yscale("log")
    ax.set(title=spec.title, xlabel=spec.x_label, ylabel=spec.y_label)
    if spec.series:
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
