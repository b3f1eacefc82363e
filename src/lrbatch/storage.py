"""Opening the study's storage: checked before anything is created, never leaking credentials.

SQLite is the default (one file under ``./runs/``); it is put in WAL mode with a busy timeout
so that several worker processes can write to it. Any other SQLAlchemy URL (PostgreSQL for
several machines) is passed to Optuna's RDBStorage as it is.
"""

from __future__ import annotations

import os
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage
from sqlalchemy.engine import URL, make_url

from lrbatch.config import ConfigError

__all__ = ["SQLITE_BUSY_TIMEOUT_S", "default_url", "open_storage", "redact"]

SQLITE_BUSY_TIMEOUT_S = 60.0  # a writer waits this long for the lock before failing
HEARTBEAT_INTERVAL_S = 20  # a running trial records a heartbeat this often
GRACE_PERIOD_S = 120  # a trial without a heartbeat for this long is failed as stale


def default_url(study_name: str) -> str:
    """``sqlite:///runs/<study name>.db``, relative to the working directory."""
    return f"sqlite:///runs/{study_name}.db"


def redact(url: str) -> str:
    """The URL with its password replaced by ``***``, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return "<not a URL>"


def _parse(url: str) -> URL:
    try:
        return make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise ConfigError(
            f"study.storage={redact(url)!r} is not a SQLAlchemy URL; "
            "accepted: sqlite:///path/to/file.db or postgresql://user@host/database"
        ) from None


def _writable_dir(directory: Path) -> bool:
    """Whether ``directory`` exists and is writable, or could be created."""
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            return False
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def check_storage(url: str) -> None:
    """Raise :class:`ConfigError` if ``url`` cannot hold a study; create nothing.

    For SQLite the file's directory must be writable (or creatable) and an existing file
    writable; other backends are checked when they are opened.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database
    if not database or database == ":memory:":
        raise ConfigError(
            f"study.storage={url!r} is an in-memory SQLite database, which a sweep cannot "
            "resume or share; accepted: a file, e.g. sqlite:///runs/study.db"
        )
    path = Path(database)
    if path.is_dir():
        raise ConfigError(f"study.storage={url!r} names a directory; give a .db file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"study.storage={url!r}: the file is not writable")
    if not path.exists() and not _writable_dir(path.parent):
        raise ConfigError(
            f"study.storage={url!r}: cannot create {path.parent}/ (not writable); "
            "choose a directory you can write to"
        )


def open_storage(url: str, heartbeat: bool = True) -> RDBStorage:
    """Open (creating if needed) the storage at ``url``.

    Args:
        url: a SQLAlchemy URL.
        heartbeat: record heartbeats of running trials, so that a killed worker's trial is
            failed as stale after :data:`GRACE_PERIOD_S` seconds.

    Raises:
        ConfigError: the storage cannot be reached or written; the message never shows the
            password.
    """
    check_storage(url)
    parsed = _parse(url)
    engine_kwargs: dict[str, object] = {"pool_pre_ping": True}
    if parsed.get_backend_name() == "sqlite":
        path = Path(parsed.database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S) as connection:
            connection.execute("PRAGMA journal_mode=WAL")  # persistent: readers don't block writers
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S if heartbeat else None,
                grace_period=GRACE_PERIOD_S if heartbeat else None,
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        reason = reason.replace(url, redact(url))
        if parsed.password:
            reason = reason.replace(str(parsed.password), "***")
        raise ConfigError(f"study.storage={redact(url)!r} cannot be opened: {reason}") from None
