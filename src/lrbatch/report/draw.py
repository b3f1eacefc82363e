"""Drawing a :class:`lrbatch.report.spec.FigureSpec`: as a PNG (matplotlib) and as an interactive
plotly figure (the HTML report and optuna-dashboard).

A figure is one axes, or small multiples: one panel per :class:`lrbatch.report.spec.Panel` on a
grid, with one legend for all of them. Both renderers draw the same things the same way:
series (points, lines, error bars; faint ones light), marks (a vertical line at an x, with a
shaded interval; one outside the panel's x range is drawn at its edge, labelled with an arrow)
and heatmaps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lrbatch.report.spec import FigureSpec, Mark, Panel, Series

__all__ = ["log_ticks", "to_plotly", "to_png"]

_FAINT = 0.3  # opacity of faint series (individual trials behind their means)
_BAND = 0.15  # opacity of a mark's shaded interval
# matplotlib's markers, by plotly's names
_MARKERS = {"circle": "o", "x": "x", "triangle-up": "^", "triangle-down": "v", "diamond": "D"}
_LINES = {"solid": "-", "dash": "--", "dot": ":"}  # matplotlib's, by plotly's names


def _grid(n: int) -> tuple[int, int]:
    """(rows, columns) for ``n`` panels: at most 4 columns, rows as even as they go."""
    rows = math.ceil(n / 4)
    return rows, math.ceil(n / rows)


def _panels(spec: FigureSpec) -> Sequence[Panel]:
    return spec.panels or [Panel("", spec.series)]


def _label(mark: Mark, arrow: str) -> str:
    """A mark drawn at the panel's edge: its label, with an arrow towards where it lies."""
    text = mark.label or mark.name
    return f"{text} {arrow}" if arrow == "→" else f"{arrow} {text}"


def _clamped(mark: Mark, panel: Panel) -> tuple[float, str]:
    """Where a mark is drawn: at its x, or at the panel's edge with an arrow towards it."""
    if panel.x_range is None:
        return mark.x, ""
    low, high = panel.x_range
    if mark.x > high:
        return high, "→"
    if mark.x < low:
        return low, "←"
    return mark.x, ""


def _y_span(panel: Panel) -> tuple[float, float]:
    """The y extent marks span: the panel's y range, else its series'."""
    if panel.y_range is not None:
        return panel.y_range
    ys = [y for s in panel.series for y in s.y if math.isfinite(y)] or [0.0, 1.0]
    return min(ys), max(ys)


def log_ticks(low: float, high: float, base: int = 10) -> list[float]:
    """Where to label a log axis from ``low`` to ``high``: powers of 2 with ``base=2``; else the
    decades where it spans more than a factor 30, 1, 2 and 5 times them where it spans less,
    and every digit only where that would leave fewer than two labels."""
    if not 0 < low <= high < math.inf:
        return []
    if base == 2:
        return [2.0**k for k in range(math.ceil(math.log2(low)), math.floor(math.log2(high)) + 1)]
    decades = range(math.floor(math.log10(low)), math.floor(math.log10(high)) + 1)
    ticks: list[float] = []
    for digits in ((1,), (1, 2, 5), tuple(range(1, 10))):
        if len(digits) == 1 and high / low <= 30:
            continue
        ticks = [float(f"{d}e{k}") for k in decades for d in digits]
        ticks = [t for t in ticks if low <= t <= high]
        if len(ticks) >= 2:
            break
    return ticks


def _extent(values: Sequence[float]) -> tuple[float, float]:
    """The smallest and largest of the finite positive ``values`` (what a log axis shows)."""
    shown = [v for v in values if 0 < v < math.inf]
    return (min(shown), max(shown)) if shown else (1.0, 1.0)


def _series_png(ax: Any, s: Series) -> None:
    alpha = _FAINT if s.faint else 1.0
    marker = _MARKERS[s.symbol] if s.markers else None
    if s.y_low is not None and s.y_high is not None:
        low = [y - lo for y, lo in zip(s.y, s.y_low, strict=True)]
        high = [h - y for h, y in zip(s.y_high, s.y, strict=True)]
        ax.errorbar(
            s.x,
            s.y,
            yerr=[low, high],
            fmt=marker or "o",
            color=s.color,
            capsize=3,
            label=s.name,
            alpha=alpha,
        )
        return
    style = ("--" if s.dashed else "-") if s.lines else "none"
    size = 4 if s.faint else 6
    ax.plot(
        s.x,
        s.y,
        linestyle=style,
        marker=marker,
        color=s.color,
        label=s.name,
        alpha=alpha,
        markersize=size,
    )


def _mark_png(ax: Any, mark: Mark, panel: Panel) -> None:
    x, arrow = _clamped(mark, panel)
    if mark.low is not None and mark.high is not None and not arrow:
        ax.axvspan(mark.low, mark.high, color=mark.color, alpha=_BAND, linewidth=0)
    ax.axvline(x, color=mark.color, linestyle=_LINES[mark.style], linewidth=1.3, label=mark.name)
    if arrow:
        top = _y_span(panel)[1]
        align = "right" if arrow == "→" else "left"
        ax.text(x, top, _label(mark, arrow), color=mark.color, fontsize=7, ha=align, va="top")


def _heatmap_png(fig: Any, ax: Any, spec: FigureSpec) -> None:
    h = spec.heatmap
    assert h is not None
    image = ax.imshow(
        h.z, aspect="auto", origin="lower", cmap="viridis_r" if h.low_is_good else "viridis"
    )
    fig.colorbar(image, ax=ax, label=h.colorbar)
    ax.set_xticks(range(len(h.x_labels)), h.x_labels, rotation=45)
    ax.set_yticks(range(len(h.y_labels)), h.y_labels)
    for row, column in h.marked:
        ax.text(column, row, "×", ha="center", va="center", color="red", fontsize=14)


def to_png(spec: FigureSpec, path: Path) -> Path:
    """Draw ``spec`` to a PNG file with matplotlib (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    panels = _panels(spec)
    rows, cols = _grid(len(panels))
    size = (8, 5.5) if len(panels) == 1 else (3.3 * cols + 0.6, 2.8 * rows + 1.4)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=size,
        dpi=110,
        squeeze=False,
        layout="constrained",
    )
    for ax, panel in zip(axes.flat, panels, strict=False):
        for s in panel.series:
            _series_png(ax, s)
        for mark in panel.marks:
            _mark_png(ax, mark, panel)
        if spec.log_x and spec.heatmap is None and len(panels) == 1:
            ax.set_xscale("log", base=2)
        elif spec.log_x and spec.heatmap is None:  # 10^k (or 1, 2, 5 × 10^k), written plainly
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(ticker.FixedLocator(log_ticks(*(panel.x_range or (1, 1)))))
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if spec.log_y:
            ax.set_yscale("log")
        if panel.x_range is not None:
            ax.set_xlim(*panel.x_range)
        if panel.y_range is not None:
            ax.set_ylim(*panel.y_range)
        if panel.series:
            ax.grid(True, which="both", alpha=0.3)
        ax.set_title(panel.title, fontsize=9)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    if spec.heatmap is not None:
        _heatmap_png(fig, axes[0][0], spec)
    if len(panels) == 1:
        axes[0][0].set(title=spec.title, xlabel=spec.x_label, ylabel=spec.y_label)
        if spec.series:
            axes[0][0].legend(fontsize=8)
    else:
        fig.suptitle(spec.title)
        fig.supylabel(spec.y_label, fontsize=9)
        for ax in axes.flat[len(panels) - cols :]:  # the lowest panel of each column
            ax.set_xlabel(spec.x_label, fontsize=8)
        handles: dict[str, Any] = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(label, handle)
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside lower center",
            ncol=4,
            fontsize=8,
            frameon=False,
        )
    fig.savefig(path)
    plt.close(fig)
    return path


def _rgba(color: str | None, alpha: float) -> str:
    """A CSS colour (``#rrggbb`` or a name plotly knows) with opacity ``alpha``."""
    if color is None or not color.startswith("#"):
        return f"rgba(0,0,0,{alpha})"
    r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _series_plotly(s: Series) -> Any:
    import plotly.graph_objects as go

    error = None
    if s.y_low is not None and s.y_high is not None:
        error = dict(
            type="data",
            symmetric=False,
            array=[h - y for h, y in zip(s.y_high, s.y, strict=True)],
            arrayminus=[y - lo for y, lo in zip(s.y, s.y_low, strict=True)],
        )
    mode = "+".join(m for m, on in (("lines", s.lines), ("markers", s.markers)) if on)
    return go.Scatter(
        x=list(s.x),
        y=list(s.y),
        name=s.name,
        mode=mode,
        error_y=error,
        opacity=_FAINT if s.faint else 1.0,
        line=dict(dash="dash" if s.dashed else "solid", color=s.color),
        marker=dict(symbol=s.symbol, color=s.color, size=9 if s.symbol == "x" else 7),
    )


def _mark_plotly(mark: Mark, panel: Panel) -> list[Any]:
    """A mark as traces (so it has a legend entry and a hover): its band, then its line."""
    import plotly.graph_objects as go

    x, arrow = _clamped(mark, panel)
    y0, y1 = _y_span(panel)
    traces = []
    if mark.low is not None and mark.high is not None and not arrow:
        traces.append(
            go.Scatter(
                x=[mark.low, mark.high, mark.high, mark.low, mark.low],
                y=[y0, y0, y1, y1, y0],
                fill="toself",
                fillcolor=_rgba(mark.color, _BAND),
                line=dict(width=0),
                mode="lines",
                name=mark.name,
                hoverinfo="skip",
                showlegend=False,
            )
        )
    traces.append(
        go.Scatter(
            x=[x, x],
            y=[y0, y1],
            mode="lines+text" if arrow else "lines",
            text=["", _label(mark, arrow)] if arrow else None,
            textposition="bottom left" if arrow == "→" else "bottom right",
            textfont=dict(color=mark.color, size=9),
            line=dict(color=mark.color, dash=mark.style),
            name=mark.name,
            hovertext=f"{mark.label or mark.name}: {mark.x:.3g}",
            hoverinfo="text",
        )
    )
    return traces


def _axis(limits: tuple[float, float] | None, data: Sequence[float], log_base: int | None) -> Any:
    """A plotly axis over ``limits`` (else autoranged over ``data``): linear, or log with the
    labels :func:`log_ticks` puts there (plotly's own label every digit: 2 3 4 5 …)."""
    if log_base is None:
        return dict(range=None if limits is None else list(limits))
    axis: dict[str, Any] = dict(
        type="log", range=None if limits is None else [math.log10(v) for v in limits]
    )
    ticks = log_ticks(*(limits or _extent(data)), base=log_base)
    if ticks:
        axis.update(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])
    return axis


def to_plotly(spec: FigureSpec) -> Any:
    """An interactive plotly figure of ``spec``: one subplot per panel."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = _panels(spec)
    rows, cols = _grid(len(panels))
    if len(panels) == 1:
        figure = go.Figure()
    else:
        cells: list[list[dict[str, Any] | None]] = [
            [{} if r * cols + c < len(panels) else None for c in range(cols)] for r in range(rows)
        ]
        figure = make_subplots(
            rows,
            cols,
            specs=cells,
            subplot_titles=[p.title for p in panels],
            horizontal_spacing=0.05,
            vertical_spacing=0.12,
        )
        figure.update_layout(height=260 * rows + 160)
    shown: set[str] = set()
    for index, panel in enumerate(panels):
        where = {} if len(panels) == 1 else dict(row=index // cols + 1, col=index % cols + 1)
        traces = [_series_plotly(s) for s in panel.series]
        traces += [t for mark in panel.marks for t in _mark_plotly(mark, panel)]
        for trace in traces:  # one legend entry per name, toggling it in every panel
            first = trace.name not in shown and trace.showlegend is not False
            trace.update(legendgroup=trace.name, showlegend=first)
            if first:
                shown.add(trace.name)
            figure.add_trace(trace, **where)
        if len(panels) > 1 and index >= len(panels) - cols:  # the lowest panel of its column
            figure.update_xaxes(title_text=spec.x_label, **where)
        xs = [x for s in panel.series for x in s.x] + [m.x for m in panel.marks]
        ys = [y for s in panel.series for y in (*s.y, *(s.y_low or ()), *(s.y_high or ()))]
        x_base = (2 if len(panels) == 1 else 10) if spec.log_x and spec.heatmap is None else None
        figure.update_xaxes(_axis(panel.x_range, xs, x_base), **where)
        figure.update_yaxes(_axis(panel.y_range, ys, 10 if spec.log_y else None), **where)
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
        for row, column in h.marked:  # by position: plotly reads the label "32" as row 32
            figure.add_annotation(
                x=column,
                y=row,
                text="×",
                showarrow=False,
                font=dict(color="red", size=16),
            )
        figure.update_xaxes(type="category")
        figure.update_yaxes(type="category")
    figure.update_layout(title=spec.title, template="plotly_white")
    if len(panels) == 1:
        figure.update_layout(xaxis_title=spec.x_label, yaxis_title=spec.y_label)
    else:
        figure.update_yaxes(title_text=spec.y_label, col=1)
    return figure
