"""``lrbatch dashboard``: optuna-dashboard, with lrbatch's view of each study as its first page.

optuna-dashboard's study page is laid out by its bundled JavaScript and nothing reorders it:
Optuna's panels lead ("History", "Hyperparameter Importance", "Timeline"), then the figures
``lrbatch report`` saved into the study, each in a half-width card 450 px high, then "Best
Trial"; the verdict (the study's note) is on a tab of its own. For a sweep over batch sizes the
panels that lead mislead: the best trial and the importances pool every batch size. So the
server answers ``/`` itself with the study's report (the verdict, the tables, the figures at
full width, computed from the study when the page loads, as ``report.html`` is) and links to
Optuna's pages, which it serves unchanged under ``/dashboard/`` and ``/api/``.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import optuna
from optuna.storages import BaseStorage

__all__ = ["STUDY_PAGE", "serve", "wsgi_app"]

STUDY_PAGE = "/lrbatch/{study_id}"  # lrbatch's view of a study; Optuna's: /dashboard/studies/…
_PLOTLY_JS = "/lrbatch/plotly.min.js"  # the plotly.js the figures were made for, served here

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _study_page(storage: BaseStorage, study_id: int) -> str:
    from lrbatch.report.report import build_report, report_html

    name = storage.get_study_name_from_id(study_id)
    report = build_report(optuna.load_study(study_name=name, storage=storage))
    links = (
        "<p style='font-size:small'>Optuna's own views of this study: "
        f"<a href='/dashboard/studies/{study_id}'>history and trials</a> (its "
        "“Best Trial” and “Hyperparameter Importance” pool every batch size: the optimum per "
        "batch size is the one below), "
        f"<a href='/dashboard/studies/{study_id}/trials'>each trial</a>, "
        "<a href='/dashboard'>every study</a>.</p>"
    )
    return report_html(report, plotly_js=_PLOTLY_JS, links=links)


def _landing(storage: BaseStorage) -> str:
    """The study's page when the storage holds one study, else a list of them."""
    names = sorted(s.study_name for s in storage.get_all_studies())
    if len(names) == 1:
        return _study_page(storage, storage.get_study_id_from_name(names[0]))
    items = "".join(
        f"<li><a href='{STUDY_PAGE.format(study_id=storage.get_study_id_from_name(name))}'>"
        f"{html.escape(name)}</a></li>"
        for name in names
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>lrbatch</title></head>"
        "<body style='font-family:sans-serif;max-width:1000px;margin:auto'>"
        f"<h1>lrbatch: {len(names)} studies</h1><ul>{items}</ul>"
        "<p><a href='/dashboard'>Optuna's dashboard</a></p></body></html>"
    )


def wsgi_app(storage: BaseStorage) -> WSGIApp:
    """optuna-dashboard's WSGI app, with ``/`` and ``/lrbatch/…`` answered by lrbatch."""
    import plotly.offline
    from optuna_dashboard import wsgi

    optuna_pages = wsgi(storage)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/").rstrip("/")
        study = re.fullmatch(STUDY_PAGE.format(study_id=r"(\d+)"), path)
        kind = "text/html; charset=utf-8"
        try:
            if path == "":
                body = _landing(storage)
            elif path == _PLOTLY_JS:
                body, kind = plotly.offline.get_plotlyjs(), "text/javascript"
            elif study:
                body = _study_page(storage, int(study[1]))
            else:
                return optuna_pages(environ, start_response)
        except KeyError:  # no study with that id
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"no study at {path}".encode()]
        start_response("200 OK", [("Content-Type", kind)])
        return [body.encode()]

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Every request is not news (a page asks for dozens)."""


def serve(storage: BaseStorage, host: str, port: int) -> None:
    """Serve :func:`wsgi_app` on ``host``:``port`` until interrupted."""
    with make_server(host, port, wsgi_app(storage), handler_class=_Quiet) as server:
        server.serve_forever()
