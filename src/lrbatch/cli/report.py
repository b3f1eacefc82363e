"""``lrbatch report`` and ``lrbatch dashboard``: a study's answer as tables, files and
figures, and served in the browser."""

from __future__ import annotations

import argparse
import errno
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from lrbatch.cli.command import Command, add_storage, add_study
from lrbatch.config import ConfigError

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["Dashboard", "Report"]


class Report(Command):
    name = "report"
    help = "analyse a study: optima, laws, rules' regret, plots"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_storage(parser)
        add_study(parser, "study name (default: the storage's most recent)")
        parser.add_argument(
            "--out",
            type=Path,
            default=None,
            help="report directory (default: runs/<study>-report)",
        )
        parser.add_argument(
            "--predict",
            type=int,
            action="append",
            default=[],
            metavar="BATCH",
            help="also predict the learning rate at this effective batch size (repeatable)",
        )
        parser.add_argument(
            "--no-dashboard",
            action="store_true",
            help="do not save the figures and verdict into the study",
        )

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from lrbatch.report import build_report, publish, render, write_report
        from lrbatch.search import find_last_study, open_study

        for batch in args.predict:
            if batch <= 0:
                raise ConfigError(f"--predict {batch}: accepted: a positive effective batch size")
        study = open_study(args.storage or find_last_study(), args.study)
        out = args.out or Path("runs") / f"{study.study_name}-report"
        _check_out(out)
        report = build_report(study, args.predict)
        console.print(render(report))
        try:
            written = write_report(report, study, out)
        except OSError as error:
            raise _unwritable(out, error) from None
        if not args.no_dashboard:
            publish(report, study)
        console.print(
            f"Wrote {len(written)} files to {out}/ (report.html, summary.json, trials.csv, plots)."
        )
        return 0


def _check_out(out: Path) -> None:
    """Raise ConfigError unless the report directory ``out`` exists or can be made, and can be
    written to (made here: the report goes there next)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as error:
        raise _unwritable(out, error) from None


def _unwritable(out: Path, error: OSError) -> ConfigError:
    reason = error.strerror or type(error).__name__
    return ConfigError(
        f"--out {out}: cannot write the report there ({reason}); accepted: a directory you "
        "can write to"
    )


class Dashboard(Command):
    name = "dashboard"
    help = "serve lrbatch's view of the study and optuna-dashboard on 127.0.0.1"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_storage(parser)
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8080)

    def take_action(self, args: argparse.Namespace, console: Console) -> int:
        from lrbatch.report import serve
        from lrbatch.search import find_last_study, open_storage, redact

        url = args.storage or find_last_study()
        storage = open_storage(url, heartbeat_interval=None, create=False)
        _check_port(args.host, args.port)
        address = f"http://{args.host}:{args.port}"
        console.print(
            f"lrbatch's view of {redact(url)} on {address}/ (the verdict and the figures), "
            f"optuna-dashboard's on {address}/dashboard/ (Ctrl-C stops it)"
        )
        serve(storage, args.host, args.port)
        return 0


def _check_port(host: str, port: int) -> None:
    """Raise ConfigError unless the dashboard can listen on ``host``:``port``."""
    import socket

    try:
        with socket.create_server((host, port)):  # (as the server binds: address reusable)
            pass
    except OSError as error:
        accepted = "a free port (--port 8081, say)"
        if error.errno != errno.EADDRINUSE:
            accepted = "an address of this machine (--host 127.0.0.1, or 0.0.0.0 for every one)"
        raise ConfigError(
            f"--host={host} --port={port}: cannot listen there ({os.strerror(error.errno or 0)}); "
            f"accepted: {accepted}"
        ) from None
