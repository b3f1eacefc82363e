"""Opening the study's storage: checked before anything is created, never leaking credentials.

SQLite is the default (one file under ``./runs/``); it is put in WAL mode with a busy timeout
so that several worker processes can write to it. PostgreSQL (for several machines) uses
psycopg 3 when the URL names no driver, with a connect timeout and pre-ping. Any other
SQLAlchemy URL is passed to Optuna's RDBStorage as it is.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sqlite3
import tempfile
import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import RDBStorage
from sqlalchemy.engine import URL, make_url

from lrbatch.config import ConfigError

__all__ = [
    "GRACE_PERIOD_S",
    "HEARTBEAT_INTERVAL_S",
    "SQLITE_BUSY_TIMEOUT_S",
    "check_storage",
    "default_url",
    "open_storage",
    "planning_lock_path",
    "redact",
]

SQLITE_BUSY_TIMEOUT_S = 60.0  # a writer waits this long for the lock before failing
HEARTBEAT_INTERVAL_S = 20  # a running trial records a heartbeat this often
GRACE_PERIOD_S = 120  # a trial without a heartbeat for this long is failed as stale
POSTGRES_CONNECT_TIMEOUT_S = 10  # give up on a server that does not answer after this long
SCHEMA_ATTEMPTS = 5  # workers opening a new database together race to create its tables


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


def planning_lock_path(url: str, study_name: str) -> Path:
    """The file this machine's workers of a study lock while they plan and create trials
    (:mod:`lrbatch.workers.worker`): beside a SQLite database (``runs/x.db.plan-lock``), whichever
    path names it; for a server's database, in the temporary directory, named by a hash of the URL
    and the study (never the password itself)."""
    parsed = _parse(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        database = Path(parsed.database).resolve()
        return database.with_name(f"{database.name}.plan-lock")
    digest = hashlib.sha256(f"{url}\0{study_name}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"lrbatch-{digest}.plan-lock"


def _writable_dir(directory: Path) -> bool:
    """Whether ``directory`` exists and is writable, or could be created."""
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            return False
        existing = existing.parent
    return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)


def check_storage(url: str, *, create: bool = True) -> None:
    """Raise :class:`ConfigError` if ``url`` cannot hold a study; create nothing.

    For SQLite the file's directory must be writable (or creatable) and an existing file
    writable; with ``create`` False (a reader: report, dashboard, worker) the file must exist.
    Other backends are checked when they are opened.
    """
    parsed = _parse(url)
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database
    if parsed.host:  # sqlite://runs/x.db: SQLite ignores the host, and would write ./x.db
        raise ConfigError(
            f"study.storage={url!r} has a host part ({parsed.host!r}), which SQLite ignores; "
            f"accepted: three slashes before a relative path (sqlite:///{parsed.host}/"
            f"{database}), four before an absolute one (sqlite:////abs/path.db)"
        )
    if not database or database == ":memory:":
        raise ConfigError(
            f"study.storage={url!r} is an in-memory SQLite database, which a sweep cannot "
            "resume or share; accepted: a file, e.g. sqlite:///runs/study.db"
        )
    path = Path(database)
    if path.is_dir():
        raise ConfigError(f"study.storage={url!r} names a directory; give a .db file path")
    if not create and not path.is_file():
        raise ConfigError(
            f"storage {url!r}: there is no file {path} (reading creates none); accepted: the "
            "storage of an existing study (`lrbatch studies` lists those in runs/)"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise ConfigError(f"study.storage={url!r}: the file is not writable")
    if not path.exists() and not _writable_dir(path.parent):
        raise ConfigError(
            f"study.storage={url!r}: cannot create {path.parent}/ (not writable); "
            "choose a directory you can write to"
        )


def _with_driver(url: str, parsed: URL) -> URL:
    """``parsed``, with psycopg 3 as its driver if it is a PostgreSQL URL naming none.

    SQLAlchemy's default PostgreSQL driver is psycopg2, which lrbatch does not depend on; the
    ``postgres`` extra installs psycopg 3. A driver named in the URL is kept.
    """
    if parsed.drivername not in ("postgresql", "postgres"):
        return parsed
    if importlib.util.find_spec("psycopg2") is not None:
        return parsed.set(drivername="postgresql")
    if importlib.util.find_spec("psycopg") is not None:
        return parsed.set(drivername="postgresql+psycopg")
    raise ConfigError(
        f"study.storage={redact(url)!r} needs a PostgreSQL driver and none is installed; "
        "accepted: pip install 'lrbatch[postgres]' (psycopg 3), or a URL naming an installed "
        "driver (postgresql+<driver>://...)"
    )


def _use_wal(url: str, path: Path) -> None:
    """Put the SQLite file at ``path`` in WAL mode, in which readers don't block the writer.

    The mode is stored in the file. Switching needs the file to itself and SQLite fails at once,
    without its busy timeout, when another process is creating the tables: try again until
    :data:`SQLITE_BUSY_TIMEOUT_S` has passed.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)
    except (OSError, sqlite3.Error) as error:  # (what _writable_dir cannot foresee: /proc)
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(
            f"study.storage={url!r}: cannot create {path} ({reason}); choose a directory you "
            "can write to"
        ) from None
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_S
    with closing(connection):
        while True:
            try:
                connection.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise ConfigError(
                        f"study.storage={url!r}: cannot put the file in WAL mode: {error}"
                    ) from None
                time.sleep(0.05)


def _engine_kwargs(url: str, parsed: URL, create: bool) -> dict[str, Any]:
    """SQLAlchemy engine settings for the backend of ``parsed`` (made ready for writing, if
    ``create``)."""
    if parsed.get_backend_name() == "sqlite":
        if create:
            _use_wal(url, Path(parsed.database or ""))
        return {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}  # drop connections the server closed
    libpq_driver = parsed.drivername in ("postgresql", "postgresql+psycopg", "postgresql+psycopg2")
    if libpq_driver and "connect_timeout" not in parsed.query:
        engine_kwargs["connect_args"] = {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S}
    return engine_kwargs


def _lost_schema_race(error: sqlalchemy.exc.SQLAlchemyError) -> bool:
    """Whether ``error`` comes from another process creating the same tables at the same time.

    Optuna creates its tables, enum types and version rows on the first open; workers that
    start together on a new database collide on them ("already exists", a unique violation).
    """
    reason = str(getattr(error, "orig", None) or error)
    return isinstance(error, sqlalchemy.exc.IntegrityError) or "already exists" in reason


def _cannot_open(url: str, parsed: URL, error: Exception) -> ConfigError:
    """The error for a storage that cannot be opened, its reason cleared of the password."""
    reason = str(getattr(error, "orig", None) or error).splitlines()[0]
    for spelling in (url, parsed.render_as_string(hide_password=False)):
        reason = reason.replace(spelling, redact(url))
    if parsed.password:
        reason = reason.replace(str(parsed.password), "***")
    if isinstance(error, ImportError) and parsed.get_backend_name() == "postgresql":
        reason += "; pip install 'lrbatch[postgres]' installs psycopg 3 (postgresql+psycopg://)"
    return ConfigError(f"study.storage={redact(url)!r} cannot be opened: {reason}")


def open_storage(
    url: str,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL_S,
    grace_period: int | None = GRACE_PERIOD_S,
    *,
    create: bool = True,
) -> RDBStorage:
    """Open (creating it if needed and ``create``) the storage at ``url``.

    Args:
        url: a SQLAlchemy URL. A PostgreSQL URL without a driver (``postgresql://``) uses
            psycopg 3 unless psycopg2 is installed.
        heartbeat_interval: seconds between heartbeats of a running trial, or None for no
            heartbeats (readers such as the dashboard, which run no trials).
        grace_period: seconds without a heartbeat after which a running trial is failed as
            stale (its worker was killed).
        create: create the database (a SQLite file) and Optuna's tables where missing;
            False for a reader, which never leaves a storage behind: a SQLite file must exist.

    Returns:
        Optuna's RDBStorage, its tables created; several processes may open a new database
        at the same time.

    Raises:
        ConfigError: the storage cannot be reached or written, or has no driver installed; the
            message never shows the password.
    """
    check_storage(url, create=create)
    parsed = _with_driver(url, _parse(url))
    engine_kwargs = _engine_kwargs(url, parsed, create)
    attempt = 1
    while True:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    parsed.render_as_string(hide_password=False),
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_interval,
                    grace_period=grace_period,
                    skip_table_creation=not create,
                )
        except sqlalchemy.exc.SQLAlchemyError as error:
            if attempt < SCHEMA_ATTEMPTS and _lost_schema_race(error):
                attempt += 1
                time.sleep(0.1 * attempt)  # the other process's schema commits meanwhile
                continue
            raise _cannot_open(url, parsed, error) from None
        except ImportError as error:  # the URL names a driver that is not installed
            raise _cannot_open(url, parsed, error) from None
        except optuna.exceptions.StorageInternalError:  # (a reader's: no tables to read)
            raise ConfigError(
                f"storage {redact(url)} holds no study (it has none of Optuna's tables)"
            ) from None
