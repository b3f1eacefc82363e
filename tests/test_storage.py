"""Opening the study's storage for real: SQLite files shared by worker processes, and a
PostgreSQL server (tests/pg.py) reached with a password that no message may show."""

import multiprocessing
import socket
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from lrbatch.config import ConfigError
from lrbatch.search import storage
from lrbatch.search.storage import open_storage, planning_lock_path

STUDY = "sweep"
# The learning rate per example, the one parameter of these trials.
LR: dict[str, BaseDistribution] = {"lr": FloatDistribution(1e-4, 1.0, log=True)}


def _ask_and_tell(url: str, n_trials: int, barrier: Any, results: Any) -> None:
    """A worker: load the study, then run ``n_trials`` trials (objective: the lr itself)."""
    try:
        study = optuna.load_study(study_name=STUDY, storage=open_storage(url))
        barrier.wait(timeout=60)
        for _ in range(n_trials):
            trial = study.ask(LR)
            study.tell(trial, trial.params["lr"])
        results.put(["ok"])
    except Exception as error:
        results.put([f"{type(error).__name__}: {error}"])


def _open_each_together(urls: Sequence[str], barrier: Any, results: Any) -> None:
    """A worker: open each new storage in turn, at the same moment as the other workers."""
    outcomes = []
    for url in urls:
        barrier.wait(timeout=60)
        try:
            open_storage(url, heartbeat_interval=None)
            outcomes.append("ok")
        except Exception as error:
            outcomes.append(f"{type(error).__name__}: {error}")
    results.put(outcomes)


def _in_processes(target: Callable[..., None], n_processes: int, *args: Any) -> list[str]:
    """Run ``target(*args, barrier, results)`` in fresh (spawned) processes; their outcomes."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(n_processes)
    results = context.Queue()
    processes = [
        context.Process(target=target, args=(*args, barrier, results)) for _ in range(n_processes)
    ]
    for process in processes:
        process.start()
    outcomes = [outcome for _ in processes for outcome in results.get(timeout=120)]
    for process in processes:
        process.join(timeout=30)
    return outcomes


def _unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# SQLite


def test_sqlite_storage_is_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "study.db"
    open_storage(f"sqlite:///{path}")
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_sqlite_four_workers_write_one_study(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name=STUDY, storage=open_storage(url))

    outcomes = _in_processes(_ask_and_tell, 4, url, 25)

    assert outcomes == ["ok"] * 4, outcomes  # no "database is locked"
    trials = optuna.load_study(study_name=STUDY, storage=open_storage(url)).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 100
    assert sorted(t.number for t in trials) == list(range(100))


def test_sqlite_workers_create_the_schema_together(tmp_path: Path) -> None:
    urls = [f"sqlite:///{tmp_path / f'study{i}.db'}" for i in range(4)]
    assert _in_processes(_open_each_together, 2, urls) == ["ok"] * 8


# PostgreSQL


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study")
def test_postgres_trial_round_trips(fresh_postgres_url: str) -> None:
    study = optuna.create_study(study_name=STUDY, storage=open_storage(fresh_postgres_url))
    trial = study.ask(LR)
    study.tell(trial, 0.25)

    reader = open_storage(fresh_postgres_url, heartbeat_interval=None)
    (stored,) = optuna.load_study(study_name=STUDY, storage=reader).trials
    assert (stored.state, stored.value, stored.params) == (
        TrialState.COMPLETE,
        0.25,
        trial.params,
    )


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_postgres_url_without_driver_uses_psycopg(fresh_postgres_url: str, scheme: str) -> None:
    assert "psycopg2" not in sys.modules  # else SQLAlchemy's own default would do
    plain = make_url(fresh_postgres_url).set(drivername=scheme).render_as_string(False)
    assert plain.startswith(f"{scheme}://")

    optuna.create_study(study_name=STUDY, storage=open_storage(plain))

    assert optuna.get_all_study_names(open_storage(fresh_postgres_url)) == [STUDY]


def test_postgres_url_without_an_installed_driver(
    fresh_postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # neither driver can be imported
    monkeypatch.setitem(sys.modules, "psycopg2", None)
    plain = make_url(fresh_postgres_url).set(drivername="postgresql").render_as_string(False)

    with pytest.raises(ConfigError, match=r"pip install 'lrbatch\[postgres\]'"):
        open_storage(plain)


def _assert_redacted(message: str, *passwords: str) -> None:
    for password in passwords:
        assert password not in message
    assert "study.storage='postgresql" in message
    assert "://lrbatch:***@127.0.0.1:" in message


def test_postgres_wrong_password_is_never_shown(postgres_url: str) -> None:
    real = make_url(postgres_url)
    assert real.password
    wrong = real.set(password="wrong-horse-battery")

    with pytest.raises(ConfigError, match="password authentication failed") as raised:
        open_storage(wrong.render_as_string(hide_password=False))

    _assert_redacted(str(raised.value), str(real.password), "wrong-horse-battery")
    assert real.host and real.host in str(raised.value)


def test_postgres_missing_database(postgres_url: str) -> None:
    missing = make_url(postgres_url).set(database="lrbatch_no_such_database")

    with pytest.raises(ConfigError, match=r"lrbatch_no_such_database.*does not exist") as raised:
        open_storage(missing.render_as_string(hide_password=False))

    _assert_redacted(str(raised.value), str(missing.password))


def test_postgres_server_not_listening_fails_fast() -> None:
    url = f"postgresql://lrbatch:s3cret-pw@127.0.0.1:{_unused_port()}/lrbatch"
    started = time.monotonic()

    with pytest.raises(ConfigError, match=r"study\.storage=.*cannot be opened") as raised:
        open_storage(url)

    assert time.monotonic() - started < 5
    _assert_redacted(str(raised.value), "s3cret-pw")


def test_postgres_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "POSTGRES_CONNECT_TIMEOUT_S", 2)  # the default, shortened
    with socket.socket() as silent:  # accepts the TCP connection, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"postgresql://lrbatch:s3cret-pw@127.0.0.1:{silent.getsockname()[1]}/lrbatch"
        started = time.monotonic()

        with pytest.raises(ConfigError, match="timeout") as raised:
            open_storage(url)

    assert time.monotonic() - started < 10
    _assert_redacted(str(raised.value), "s3cret-pw")


def test_postgres_workers_create_the_schema_together(
    make_postgres_database: Callable[[], str],
) -> None:
    urls = [make_postgres_database() for _ in range(4)]  # each new: the tables do not exist yet

    assert _in_processes(_open_each_together, 2, urls) == ["ok"] * 8
    for url in urls:
        optuna.create_study(study_name=STUDY, storage=open_storage(url))


def test_the_planning_lock_is_one_file_per_database_however_it_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    beside = tmp_path.resolve() / "runs" / "s.db.plan-lock"
    for url in ("sqlite:///runs/s.db", f"sqlite:///{tmp_path}/runs/../runs/s.db"):
        assert planning_lock_path(url, "s") == beside
    server = "postgresql://lrbatch:secret-pw@127.0.0.1:5432/lrbatch"
    lock = planning_lock_path(server, "s")
    assert lock.parent == Path(tempfile.gettempdir()) and "secret-pw" not in str(lock)
    assert lock == planning_lock_path(server, "s") != planning_lock_path(server, "t")
