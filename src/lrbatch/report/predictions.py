"""The learning rate predicted at the batch sizes asked for, as a user reads it in a terminal
(``lrbatch predict --study``, ``lrbatch report --predict``): a table, then per batch size why,
the stability edge, each law's and rule's value, and the warnings, risky values flagged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from lrbatch.science import Prediction
from lrbatch.search import format_lr

__all__ = ["prediction_view"]


def _edge_text(p: Prediction) -> tuple[str, str]:
    """The stability edge at a prediction's batch size: a table cell and a sentence."""
    if p.stability_edge is None:
        return "unknown", "unknown: no law, and no batch size measured at or below this one"
    edge, low, high = (
        format_lr(v) for v in (p.stability_edge, p.stability_edge_low, p.stability_edge_high)
    )
    if p.stability_edge_source == "lower bound":
        return f"> {low}", f"above {low} (lower bound)"
    return edge, f"{edge} ({low}–{high}, {p.stability_edge_source})"


def _listed(entries: dict[str, dict[str, Any]]) -> str:
    """Laws' or rules' learning rates in a line, each flagged when it may diverge."""
    return ", ".join(
        f"{name} {format_lr(e['lr'])}"
        + (f" ({e['weight']:.0%})" if "weight" in e else "")
        + (" [may diverge]" if e["above_edge"] else "")
        for name, e in entries.items()
    )


def prediction_view(
    study_name: str, predictions: Sequence[Prediction], base_batch: int, base_lr: float | None
) -> Group:
    """The predictions of study ``study_name`` as a table, then per batch size the evidence:
    the edge, the laws, the rules (anchored at ``base_lr`` at ``base_batch``), the warnings."""
    table = Table(
        title=f"Recommended learning rate — study {study_name!r}",
        title_justify="left",
    )
    for column in ("batch", "lr", "90% interval", "law", "edge", "octaves out"):
        table.add_column(column, justify="right", no_wrap=True)
    for p in predictions:
        table.add_row(
            str(p.batch_size),
            format_lr(p.lr) + (" capped" if p.capped else ""),
            f"{format_lr(p.lr_low)}–{format_lr(p.lr_high)}",
            p.law,
            _edge_text(p)[0],
            f"{p.extrapolation_octaves:.1f}" if p.extrapolation_octaves else "—",
        )
    parts: list[Any] = [table]
    anchor = f"rules from η0 = {format_lr(base_lr)} at B0 = {base_batch}"
    for p in predictions:
        parts.append(Text(f"B = {p.batch_size}: {p.why}."))
        parts.append(Text(f"  stability edge: {_edge_text(p)[1]}"))
        parts.append(Text(f"  laws (weight): {_listed(p.laws)}"))
        if p.rules:
            parts.append(Text(f"  {anchor}: {_listed(p.rules)}"))
        for warning in p.warnings:
            style = "bold red" if warning.startswith("MAY DIVERGE") else "yellow"
            parts.append(Text(f"  warning: {warning}", style=style))
    return Group(*parts)
