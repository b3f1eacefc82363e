"""What a figure is, as data: the report's figures are built as these
(:mod:`lrbatch.report.figures`) and drawn from them twice (:mod:`lrbatch.report.draw`); and what the
builders share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["PALETTE", "FigureSpec", "Heatmap", "Mark", "Panel", "Series", "geomspace"]

PALETTE = (
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
    symbol: str = "circle"  # circle | x | triangle-up | triangle-down | diamond
    color: str | None = None
    faint: bool = False  # drawn light: individual trials behind their means


@dataclass(frozen=True)
class Mark:
    """A vertical line across a panel at ``x``, with a shaded interval ``low``–``high``.

    ``name`` is the legend entry (the same name in every panel is one entry); ``label``, a
    short text drawn beside the line when ``x`` lies outside the panel's x range and the line
    is drawn at its edge (default: ``name``).
    """

    name: str
    x: float
    low: float | None = None
    high: float | None = None
    color: str = "black"
    style: str = "solid"  # solid | dash | dot
    label: str = ""


@dataclass(frozen=True)
class Panel:
    """One small plot of a figure drawn as small multiples (``FigureSpec.panels``)."""

    title: str
    series: Sequence[Series] = ()
    marks: Sequence[Mark] = ()
    x_range: tuple[float, float] | None = None  # data units
    y_range: tuple[float, float] | None = None


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
    panels: Sequence[Panel] = ()  # small multiples, drawn instead of ``series``


def geomspace(low: float, high: float, n: int) -> list[float]:
    if low == high:
        return [low]
    step = (math.log(high) - math.log(low)) / (n - 1)
    return [math.exp(math.log(low) + i * step) for i in range(n)]
