"""Where lrbatch prints: rich's console, sized to the content when it is not a terminal."""

from __future__ import annotations

from rich.console import Console

__all__ = ["make_console"]

# Columns of a console that is not a terminal (a pipe, a log): wide enough that no table is cut
# and no line wrapped, so a table is as wide as its content.
_UNBOUNDED_WIDTH = 100_000


def make_console(*, stderr: bool = False) -> Console:
    """On a terminal, rich's console at the terminal's width; piped or logged, one that sizes
    every table to its content and wraps no line (rich would otherwise cut tables at 80
    columns there, ``0.0328–0…``)."""
    console = Console(stderr=stderr)
    if console.is_terminal:
        return console
    return Console(stderr=stderr, width=_UNBOUNDED_WIDTH, soft_wrap=True)
