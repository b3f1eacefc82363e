"""The report: a study turned into the answer (tables, summary.json, figures drawn as PNG
and plotly), the dashboard, and the prediction view.
"""

from typing import TYPE_CHECKING

from lrbatch._exports import lazy_exports

if TYPE_CHECKING:
    from lrbatch.report.dashboard import serve
    from lrbatch.report.predictions import prediction_view
    from lrbatch.report.report import (
        Report,
        build_report,
        json_ready,
        publish,
        render,
        summary,
        write_report,
    )
else:
    __getattr__, __dir__ = lazy_exports(__name__, __file__)

__all__ = [
    "Report",
    "build_report",
    "json_ready",
    "prediction_view",
    "publish",
    "render",
    "serve",
    "summary",
    "write_report",
]
