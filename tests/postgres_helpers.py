"""A throwaway PostgreSQL server for the tests, and the fixtures that point a test at it.

Loaded by ``tests/conftest.py`` (``pytest_plugins``). The fixtures:

* ``postgres`` (session): a cluster made with ``initdb`` and started with ``pg_ctl`` in a
  temporary folder, listening on 127.0.0.1 on a free port, its unix socket in that folder;
  stopped and deleted at the end of the session. It is started only if a test asks for it.
* ``pg_store``: a fresh database for this test (``CREATE DATABASE … TEMPLATE`` a database
  migrated once per session: cheap) and ``PIPEKIT_DB`` pointing at it. At the end of the test
  it checks the cascade invariant (RELIABILITY 12) and that no SQLite file appeared under
  ``PIPEKIT_HOME``, then drops the database.
* ``backend``: parametrizes a test over ``sqlite`` and ``postgresql`` (use it with
  ``@pytest.mark.usefixtures("backend")``, which sets the store up before ``store``).

Where PostgreSQL is missing (no ``initdb``, or no psycopg2) the PostgreSQL tests are skipped
with the reason, unless ``PIPEKIT_REQUIRE_POSTGRES=1`` (CI sets it): then they fail.

The binaries are found through ``PIPEKIT_PG_BINDIR``, ``pg_config --bindir``, ``PATH`` or
``/usr/lib/postgresql/<newest>/bin``. ``initdb`` refuses to run as root; as root the server
runs as the ``postgres`` user (Debian's package creates it), else as ``nobody``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REQUIRE_ENV = "PIPEKIT_REQUIRE_POSTGRES"
BINDIR_ENV = "PIPEKIT_PG_BINDIR"
SUPERUSER = "postgres"
TEMPLATE = "pipekit_template"


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``."""
    candidates = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(Path(os.environ[BINDIR_ENV]))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=10, check=True).stdout.strip()
            candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    candidates.extend(reversed(versions))
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """One PostgreSQL server, its admin connection, and databases made from a template.

    :param bindir: where its binaries are.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="pipekit-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._admin: Any = None
        self.owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.owner = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self.owner is None:
                raise RuntimeError("running as root and no 'postgres' or 'nobody' user to "
                                   "run the PostgreSQL server as")
            os.chown(self.folder, self.owner.pw_uid, self.owner.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        extra: dict[str, Any] = {}
        if self.owner is not None:
            extra = {"user": self.owner.pw_uid, "group": self.owner.pw_gid,
                     "extra_groups": []}
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        env.pop("PGDATA", None)
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=self.folder, **extra)

    def start(self) -> None:
        result = self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                           "-E", "UTF8", "--locale=C", "--no-sync")
        if result.returncode:
            raise RuntimeError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        options = " ".join([
            f"-p {self.port}", "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.folder}",
            # a throwaway server: durability buys nothing here
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            "-c max_connections=300", "-c shared_buffers=32MB",
            "-c log_min_messages=warning", "-c log_connections=off",
        ])
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                           "-w", "-t", "60", "start")
        if result.returncode:
            raise RuntimeError(f"pg_ctl start failed:\n{result.stdout}\n{result.stderr}\n"
                               f"{self.server_log()}")
        self.create_database(TEMPLATE, template="template0")
        self._migrate(TEMPLATE)

    def server_log(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def restart(self) -> None:
        """Restart the server (``-m fast``: every session is ended, as a real restart does)."""
        self._close_admin()
        # (the same options again: pg_ctl keeps them in postmaster.opts)
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", "fast",
                           "-w", "-t", "60", "restart")
        if result.returncode:
            raise RuntimeError(f"pg_ctl restart failed:\n{result.stderr}\n{self.server_log()}")

    def stop(self) -> None:
        self._close_admin()
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- databases ----------------------------------------------------------------------------

    def url(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def admin(self) -> Any:
        """An autocommit connection to the ``postgres`` database."""
        import psycopg2

        if self._admin is None or self._admin.closed:
            self._admin = psycopg2.connect(self.url("postgres"))
            self._admin.autocommit = True
        return self._admin

    def _close_admin(self) -> None:
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def execute(self, statement: str, params: Any = None, *, database: str | None = None
                ) -> list[tuple]:
        """Run one statement (on ``database``, or as the admin); returns its rows."""
        import psycopg2

        if database is None:
            with self.admin().cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        conn = psycopg2.connect(self.url(database))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: str | None = None, *, template: str = TEMPLATE) -> str:
        """A new database copied from ``template`` (default: the migrated one); its name."""
        name = name or f"pk_{os.getpid()}_{next(self._names)}"
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _migrate(self, database: str) -> None:
        # in a child process: this one's store and its after-fork state stay untouched
        code = ("import sys; from pipekit.config import Settings; from pipekit.store import "
                "Store; Store(Settings(home=__import__('pathlib').Path(sys.argv[1]), "
                "db_url=sys.argv[2])).close()")
        home = self.folder / "template-home"
        result = subprocess.run([sys.executable, "-c", code, str(home), self.url(database)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"migrating the template failed:\n{result.stderr}")


# -- fixtures -------------------------------------------------------------------------------------


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"PostgreSQL is required ({REQUIRE_ENV}=1) but {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL tests skipped: {reason} (install Debian's postgresql package, "
                f"or set {BINDIR_ENV}; {REQUIRE_ENV}=1 makes this a failure)")


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """A PostgreSQL server for this test session (skips, or fails, when there is none)."""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        _unavailable("psycopg2 is not installed (pip install -e '.[postgres]')")
    bindir = find_bindir()
    if bindir is None:
        _unavailable("no initdb/pg_ctl/postgres binaries were found")
    cluster = Cluster(bindir)
    try:
        cluster.start()
    except Exception as exc:
        cluster.stop()
        _unavailable(f"the server did not start: {exc}")
    try:
        yield cluster
    finally:
        cluster.stop()


def sqlite_files(home: Path) -> list[Path]:
    """Every SQLite database file under ``home`` (by its header, whatever its name)."""
    found = []
    for path in home.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                with path.open("rb") as f:
                    if f.read(16) == b"SQLite format 3\x00":
                        found.append(path)
            except OSError:
                continue
    return found


@contextlib.contextmanager
def database_for_test(cluster: Cluster, home: Path, monkeypatch: pytest.MonkeyPatch, *,
                      template: str = TEMPLATE) -> Iterator[str]:
    """A new database (copied from ``template``) as this test's store; yields its URL. At the
    end: the cascade invariant holds, no SQLite file appeared under ``home``, and the
    database is dropped.
    """
    import pipekit
    from pipekit.logger import flush_metrics
    from pipekit.store import reset_store

    name = cluster.create_database(template=template)
    url = cluster.url(name)
    monkeypatch.setenv("PIPEKIT_DB", url)
    pipekit.configure(home=home, db=url)
    reset_store()
    try:
        yield url
        flush_metrics()
        check_cascade_invariant(cluster, name)
        found = sqlite_files(home)
        assert not found, f"SQLite files under PIPEKIT_HOME with a PostgreSQL store: {found}"
    finally:
        reset_store()
        monkeypatch.delenv("PIPEKIT_DB")
        pipekit.configure(home=home)
        cluster.drop_database(name)


@pytest.fixture
def pg_store(postgres: Cluster, pipekit_home: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[str]:
    """This test's store is a fresh, migrated PostgreSQL database; yields its URL."""
    with database_for_test(postgres, pipekit_home, monkeypatch) as url:
        yield url


@pytest.fixture
def pg_blank(postgres: Cluster, pipekit_home: Path, monkeypatch: pytest.MonkeyPatch
             ) -> Iterator[str]:
    """This test's store is an empty PostgreSQL database (no schema yet); yields its URL."""
    with database_for_test(postgres, pipekit_home, monkeypatch, template="template0") as url:
        yield url


#: ``@pytest.mark.parametrize("backend", SLOW_ON_POSTGRESQL, indirect=True)``: a test run on
#: both, whose PostgreSQL run only ``make test-all`` makes (it is long, and what it shows on
#: PostgreSQL a quicker test shows too)
SLOW_ON_POSTGRESQL = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The store's database, each in turn: the test's SQLite file, then a PostgreSQL one."""
    if request.param == "postgresql":
        request.getfixturevalue("pg_store")
    return request.param


def check_cascade_invariant(cluster: Cluster, database: str) -> None:
    """RELIABILITY 12 on a PostgreSQL store: what ``conftest._check_cascade_invariant`` checks
    on the SQLite file.
    """
    import conftest

    def rows(statement: str) -> list[tuple]:
        return cluster.execute(statement, database=database)

    columns = set(rows("SELECT table_name || '.' || column_name FROM information_schema.columns "
                       "WHERE table_schema = current_schema()"))
    if ("node.run_id",) not in columns or ("run.owner",) not in columns:
        return  # (a store of an older schema, from a migration test)
    open_, final = conftest._OPEN, conftest._FINAL
    open_tasks = rows(
        f"SELECT c.id, c.status, p.id FROM task c JOIN task p ON c.parent = p.id "
        f"WHERE p.type = 'controller' AND p.status IN {final} AND c.status IN {open_}")
    open_nodes = rows(
        f"SELECT n.name, n.status, r.task_id FROM node n JOIN run r ON n.run_id = r.task_id "
        f"JOIN task p ON p.id = r.task_id WHERE p.status IN {final} "
        f"AND n.status IN ('pending', 'in_progress')")
    running = rows(
        "SELECT c.id, c.name, c.worker, e.worker, e.lease_expires, p.id, r.owner "
        "FROM task c JOIN task p ON c.parent = p.id "
        "LEFT JOIN queue_entry e ON e.task_id = c.id LEFT JOIN run r ON r.task_id = p.id "
        "WHERE p.type = 'controller' AND c.status = 'in_progress'")
    assert not open_tasks, f"terminal runs with non-terminal step tasks: {open_tasks}"
    assert not open_nodes, f"terminal runs with non-terminal nodes: {open_nodes}"
    now = time.time()
    unowned = [
        (task_id, name, worker, leased, expires, run_id, owner)
        for task_id, name, worker, leased, expires, run_id, owner in running
        if not (leased is not None and (expires is None or expires > now))
        and not conftest._alive_here(worker) and not conftest._alive_here(owner)]
    assert not unowned, f"in_progress steps with no live owner: {unowned}"
