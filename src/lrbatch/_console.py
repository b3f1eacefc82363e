"""Where lrbatch prints: rich's console, sized to the content when it is not a terminal; and
what it prints, as HTML."""

from __future__ import annotations

import io

from rich.console import Console, RenderableType

__all__ = ["make_console", "terminal_html"]

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


_HTML_BLOCK = (  # scrolled sideways where a line is wider than the page (the prose lines)
    "<pre style=\"font-family:Menlo,'DejaVu Sans Mono',Consolas,monospace;font-size:13px;"
    'line-height:1.3;overflow-x:auto">{code}</pre>'
)


def terminal_html(renderable: RenderableType) -> str:
    """What ``renderable`` shows on a terminal (tables sized to their content), as an HTML
    ``<pre>`` block with inline styles, for a page such as ``report.html``."""
    console = Console(
        record=True, file=io.StringIO(), width=_UNBOUNDED_WIDTH, soft_wrap=True, color_system=None
    )
    console.print(renderable)
    return console.export_html(inline_styles=True, code_format=_HTML_BLOCK)
