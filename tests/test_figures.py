"""The metric-against-lr figure as small multiples, on a planted sweep (see test_analysis):
one panel per batch size with what a reader looks for there, drawn by both renderers."""

import math
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from test_analysis import TRUTHS, sweep_like

from lrbatch.report.figures import (
    FigureSpec,
    Panel,
    curves_figure,
    heatmap_figure,
    optimum_figure,
    to_plotly,
    to_png,
)
from lrbatch.science import rules
from lrbatch.science.analysis import BatchOptimum, TrialPoint, batch_optima

BATCHES = (16, 64, 256, 1024)
BASE_BATCH = 64
RULES = ("constant", "linear", "square_root")

Planted = tuple[list[TrialPoint], list[BatchOptimum], dict[str, list[float]], FigureSpec]


def figure(minimize: bool = True) -> Planted:
    points = sweep_like(TRUTHS["square_root"], seed=0, batches=BATCHES)
    if not minimize:  # an accuracy-like metric: the same sweep, higher is better
        points = [replace(p, value=-p.value) for p in points]
    optima = batch_optima(points, minimize=minimize)
    base_lr = optima[1].lr_opt  # the optimum at B0 = 64
    lines = {
        rule: [rules.predict(base_lr, BASE_BATCH, o.batch_size, [rule])[rule] for o in optima]
        for rule in RULES
    }
    return points, optima, lines, curves_figure(points, "val_loss", minimize, optima, lines)


@pytest.fixture(scope="module")
def planted() -> Planted:
    return figure()


def test_one_panel_per_batch_size_with_optimum_interval_rules_and_edge(planted) -> None:
    _, optima, lines, spec = planted
    assert spec.key == "metric_vs_lr" and not spec.series
    assert [p.title for p in spec.panels] == [
        f"B = {o.batch_size}: η* = {o.lr_opt:.3g}" for o in optima
    ]
    for i, (panel, optimum) in enumerate(zip(spec.panels, optima, strict=True)):
        marks = {m.name: m for m in panel.marks}
        best = marks["optimum (90% interval)"]
        assert (best.x, best.low, best.high) == (optimum.lr_opt, optimum.lr_low, optimum.lr_high)
        assert optimum.stability_edge is not None
        assert marks["stability edge"].x == optimum.stability_edge
        for rule in RULES:
            assert marks[f"rule: {rule}"].x == lines[rule][i]
            assert marks[f"rule: {rule}"].label == f"{rule} ×{lines[rule][i] / optimum.lr_opt:.2g}"
        # the rules keep the colours they have in the optimal-lr figure
        in_optimum_figure = {s.name: s.color for s in optimum_figure(optima, [], lines).series}
        assert all(marks[f"rule: {r}"].color == in_optimum_figure[f"rule: {r}"] for r in RULES)
        assert panel.x_range is not None and panel.y_range is not None
        assert panel.x_range[0] < optimum.lr_low <= optimum.lr_high < panel.x_range[1]


def test_panels_show_trials_seed_means_the_local_fit_and_divergences(planted) -> None:
    points, optima, _, spec = planted
    for panel, optimum in zip(spec.panels, optima, strict=True):
        here = [p for p in points if p.batch_size == optimum.batch_size]
        series = {s.name: s for s in panel.series}
        seeds = [s for s in panel.series if s.name == "trials (a line per seed)"]
        assert len(seeds) == 3 and all(s.faint and s.lines for s in seeds)
        assert sum(len(s.x) for s in seeds) == sum(not p.diverged for p in here)
        means = series["seed mean (min–max)"]
        for lr, mean, low, high in zip(means.x, means.y, means.y_low, means.y_high, strict=True):
            at = [p.value for p in here if p.lr == lr]
            assert mean == pytest.approx(np.mean(at)) and (low, high) == (min(at), max(at))
        fit = series["local fit"]  # the parabola the optimum was read from: lowest at lr_opt
        lowest = fit.x[int(np.argmin(fit.y))]
        assert abs(math.log(lowest / optimum.lr_opt)) < 0.05
        assert min(fit.y) >= panel.y_range[0]
        # × at the worst end (the top for a loss) where the x range reaches the edge; beyond
        # it, the edge is drawn at the panel's edge with an arrow
        shown = [p.lr for p in here if p.diverged and p.lr <= panel.x_range[1]]
        assert bool(shown) == (optimum.stability_edge <= panel.x_range[1])
        if shown:
            assert series["diverged"].x == shown
            assert set(series["diverged"].y) == {panel.y_range[1]}
    reached = [p for p, o in zip(spec.panels, optima, strict=True) if "diverged" in names(p)]
    assert 1 <= len(reached) < len(optima)  # both cases are drawn


def names(panel: Panel) -> list[str]:
    return [s.name for s in panel.series]


def test_a_metric_to_maximize_flips_the_fit_and_puts_divergences_at_the_bottom(planted) -> None:
    _, _, _, flipped = figure(minimize=False)
    for low, high in zip(planted[3].panels, flipped.panels, strict=True):
        fit_low = next(s for s in low.series if s.name == "local fit")
        fit_high = next(s for s in high.series if s.name == "local fit")
        assert fit_high.y == pytest.approx([-y for y in fit_low.y])
        diverged = [s for s in high.series if s.name == "diverged"]
        assert all(set(s.y) == {high.y_range[0]} for s in diverged)
    assert any(s.name == "diverged" for p in flipped.panels for s in p.series)


def test_a_batch_size_where_everything_diverged_gets_a_panel_of_crosses() -> None:
    points = [TrialPoint(32, lr, 0, math.inf, diverged=True) for lr in (0.1, 0.2)]
    (panel,) = curves_figure(points, "val_loss").panels
    assert panel.title == "B = 32" and panel.marks == []
    assert names(panel) == ["seed mean (min–max)", "diverged"]  # no mean: nothing finished
    assert panel.series[0].x == [] and panel.series[1].x == [0.1, 0.2]


def test_both_renderers_draw_the_panels(planted, tmp_path: Path) -> None:
    spec = planted[3]
    image = matplotlib.image.imread(to_png(spec, tmp_path / "curves.png"))
    assert image.shape[0] > 300 and image.shape[1] > 800
    assert image[..., :3].std() > 0.05  # not blank
    plotly = to_plotly(spec)
    axes = sorted(k for k in plotly.layout.to_plotly_json() if k.startswith("xaxis"))
    assert len(axes) == len(BATCHES)
    assert all(plotly.layout[k].type == "log" for k in axes)
    assert [a.text for a in plotly.layout.annotations] == [p.title for p in spec.panels]
    in_last = [t for t in plotly.data if t.xaxis == f"x{len(BATCHES)}"]
    assert {t.name for t in in_last} >= {"local fit", "optimum (90% interval)", "stability edge"}
    legend = [t.name for t in plotly.data if t.showlegend]
    assert len(legend) == len(set(legend))  # one entry per name, across the panels


def test_the_interactive_heatmap_marks_the_cell_that_diverged(planted) -> None:
    points = [*planted[0], TrialPoint(256, 10.0, 0, math.inf, diverged=True)]
    spec = heatmap_figure(points, "val_loss")
    assert spec.heatmap is not None
    row, column = spec.heatmap.y_labels.index("256"), spec.heatmap.x_labels.index("10")
    marks = {(a.x, a.y) for a in to_plotly(spec).layout.annotations if a.text == "×"}
    # by position on the category axes: the label "256" would be read as row 256, stretching
    # the axis until every row but the first was a sliver
    assert (column, row) in marks
    assert marks == {(c, r) for r, c in spec.heatmap.marked}


def test_log_axes_are_labelled_at_decades_or_1_2_5(planted) -> None:
    _, optima, lines, curves = planted
    optimum = to_plotly(optimum_figure(optima, [], lines))
    assert optimum.layout.xaxis.tickvals == (16, 32, 64, 128, 256, 512, 1024)  # as the PNG
    lrs = optimum.layout.yaxis.tickvals
    assert lrs and {f"{v:.0e}"[0] for v in lrs} <= {"1", "2", "5"}
    panels = to_plotly(curves).layout
    for axis in (panels[k] for k in panels.to_plotly_json() if k.startswith("xaxis")):
        assert axis.ticktext and {t.lstrip("0.")[0] for t in axis.ticktext} <= {"1", "2", "5"}
