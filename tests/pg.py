"""A real PostgreSQL server for the tests, on loopback, with a password.

``LRBATCH_TEST_POSTGRES_URL`` names a server to use instead (a SQLAlchemy URL whose role may
create databases). Otherwise the server binaries are looked up (``PATH``, then
``/usr/lib/postgresql/<version>/bin``, highest version first) and a throwaway cluster is
started in a temporary directory for the test session, then stopped and removed. Run as root,
the server runs as the ``postgres`` system user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy.engine import URL, make_url

__all__ = [
    "ENV_VAR",
    "create_database",
    "fresh_postgres_url",
    "make_postgres_database",
    "postgres_url",
]

ENV_VAR = "LRBATCH_TEST_POSTGRES_URL"
ROLE = "lrbatch"
DATABASE = "lrbatch_test"
SERVER_USER = "postgres"  # the system user a root test run starts the server as
HOW_TO_GET_ONE = (
    "no PostgreSQL server for the tests: install the server binaries "
    "(Debian: apt-get install postgresql; they are found under /usr/lib/postgresql/*/bin or on "
    f"PATH), or set {ENV_VAR}=postgresql+psycopg://user:password@host:port/database "
    "for a role that may create databases"
)


def _bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``, or None if there is none."""
    on_path = shutil.which("initdb")
    if on_path and (Path(on_path).parent / "pg_ctl").exists():
        return Path(on_path).parent
    found = [
        initdb.parent
        for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if (initdb.parent / "pg_ctl").exists() and initdb.parent.parent.name.isdigit()
    ]
    return max(found, key=lambda bin_dir: int(bin_dir.parent.name), default=None)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _with_driver(url: URL) -> URL:
    """``url`` with psycopg 3 as its driver when it names none (psycopg2 is not installed)."""
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+psycopg")
    return url


def create_database(url: URL, name: str) -> URL:
    """Create database ``name`` through ``url`` and return the URL that points at it."""
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return url.set(database=name)


def _drop_database(url: URL, name: str) -> None:
    """Drop database ``name`` through ``url`` (another database), closing its connections."""
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


class _Cluster:
    """A PostgreSQL cluster in a temporary directory, serving on a free loopback port."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="lrbatch-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = _free_port()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, user=SERVER_USER)
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"  # util-linux
            self.prefix = [runuser, "-u", SERVER_USER, "--"]

    def _run(self, tool: str, *args: str) -> None:
        command = [*self.prefix, str(self.bin_dir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}"
            )

    def start(self) -> None:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C", "--no-sync",
            "--no-instructions",
        )  # fmt: skip
        for attempt in range(3):
            options = (
                f"-k {self.root} -p {self.port} -c listen_addresses=127.0.0.1 "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w",
                    "start",
                )  # fmt: skip
                return
            except RuntimeError as error:  # the free port was taken meanwhile: another one
                if attempt == 2 or "could not bind" not in str(error):
                    raise
                self.port = _free_port()

    def create_role(self, password: str) -> URL:
        """Create a login role that may create databases, and its database; its URL."""
        # Over the Unix socket, where the superuser is trusted (TCP asks for a password).
        superuser = URL.create(
            "postgresql+psycopg",
            username="postgres",
            database="postgres",
            query={"host": str(self.root), "port": str(self.port)},
        )
        engine = sqlalchemy.create_engine(superuser, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(
                    sqlalchemy.text(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{password}'")
                )
                connection.execute(sqlalchemy.text(f"CREATE DATABASE {DATABASE} OWNER {ROLE}"))
        finally:
            engine.dispose()
        return URL.create(
            "postgresql+psycopg",
            username=ROLE,
            password=password,
            host="127.0.0.1",
            port=self.port,
            database=DATABASE,
        )

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A SQLAlchemy URL (``postgresql+psycopg://lrbatch:<password>@127.0.0.1:<port>/...``).

    The role has a password and may create databases; tests that must not see each other's
    studies use :func:`fresh_postgres_url` or :func:`make_postgres_database`.
    """
    from_env = os.environ.get(ENV_VAR)
    if from_env:
        yield _with_driver(make_url(from_env)).render_as_string(hide_password=False)
        return
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip(HOW_TO_GET_ONE)
    cluster = _Cluster(bin_dir)
    try:
        cluster.start()
        url = cluster.create_role(password=f"pw-{secrets.token_hex(8)}")
        yield url.render_as_string(hide_password=False)
    finally:
        cluster.stop()


@pytest.fixture
def make_postgres_database(postgres_url: str) -> Iterator[Callable[[], str]]:
    """A function returning the URL of a new, empty database ``lrbatch_<hex>`` on each call.

    The databases are dropped when the test ends.
    """
    server = make_url(postgres_url)
    names: list[str] = []

    def make() -> str:
        names.append(f"lrbatch_{uuid.uuid4().hex}")
        return create_database(server, names[-1]).render_as_string(hide_password=False)

    yield make
    for name in names:
        _drop_database(server, name)


@pytest.fixture
def fresh_postgres_url(make_postgres_database: Callable[[], str]) -> str:
    """The URL of a new, empty database on that server, for this test alone."""
    return make_postgres_database()
