"""Where lrbatch prints: rich's console, sized to the content when it is not a terminal; and
what it prints, as HTML."""

from __future__ import annotations

import io
import logging
import warnings

from rich.console import Console, RenderableType

__all__ = ["make_console", "quiet_libraries", "terminal_html"]

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


class _NoInterruptTraceback(logging.Filter):
    """Drops a log record that carries a KeyboardInterrupt (Optuna's "Trial N failed ...",
    with 40 lines of traceback): an interrupted run says so in one line of its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        kind = record.exc_info[0] if record.exc_info else None
        return kind is None or not issubclass(kind, KeyboardInterrupt)


_NO_INTERRUPT_TRACEBACK = _NoInterruptTraceback()


def quiet_libraries() -> None:
    """Optuna and Lightning say only what matters: warnings, without a Ctrl-C's traceback."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:
        handler.addFilter(_NO_INTERRUPT_TRACEBACK)
    for name in ("lightning", "lightning.fabric", "lightning.pytorch"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="lightning")
    warnings.filterwarnings(
        "ignore", category=UserWarning, message=".*(num_workers|does not have many workers).*"
    )
