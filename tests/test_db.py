"""The database layer: a writer killed inside its transaction (RELIABILITY 3), fork safety
(RELIABILITY 5), the pragmas every connection gets, and private file modes."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pipekit.errors import ForkedHandleError
from pipekit.models import Status
from pipekit.store import Store, get_store
from pipekit.store import tables as t
from pipekit.testing import wait_until


def db_path(store: Store) -> Path:
    path = store.settings.sqlite_path
    assert path is not None
    return path


# -- RELIABILITY 3: writer SIGKILLed inside BEGIN IMMEDIATE -------------------------------------

KILLED_WRITER = """
import sys, threading
from pathlib import Path
from pipekit.store import get_store
from pipekit.store import tables as t

ready = Path(sys.argv[1])
store = get_store()

def fn():
    # ~24 MB of rows: more than the 16 MB page cache, so SQLite spills uncommitted pages
    # into the WAL before the commit that never comes.
    pad = "x" * 1200
    rows = [{"name": f"killed-{i}-{pad}", "created": 0.0} for i in range(20000)]
    for start in range(0, len(rows), 500):
        t.Project.insert_many(rows[start:start + 500]).execute()
    t.Queue.insert(name="killed-queue", created=0.0).execute()
    ready.write_text("in transaction")
    threading.Event().wait()  # hold the transaction open until SIGKILL

store.write(fn)
"""


@pytest.mark.exclusive
@pytest.mark.timeout(120)
def test_writer_killed_inside_transaction_leaves_nothing_and_frees_the_lock(store, tmp_path):
    before = store.create_task(project="kept", name="committed-before").id
    ready = tmp_path / "ready"
    script = tmp_path / "killed_writer.py"
    script.write_text(textwrap.dedent(KILLED_WRITER))
    proc = subprocess.Popen([sys.executable, str(script), str(ready)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, 60,
                   "the child to be inside its transaction")
        assert proc.poll() is None, proc.stderr.read()
        # The child really holds the write lock: another BEGIN IMMEDIATE is refused at once.
        probe = sqlite3.connect(db_path(store), timeout=0, isolation_level=None)
        try:
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                probe.execute("BEGIN IMMEDIATE")
            # ... and readers see none of its uncommitted rows meanwhile.
            assert probe.execute("SELECT COUNT(*) FROM project WHERE name LIKE 'killed-%'"
                                 ).fetchone() == (0,)
        finally:
            probe.close()
        wal = db_path(store).with_name(db_path(store).name + "-wal")
        assert wal.stat().st_size > 1_000_000, "the transaction should have spilled to the WAL"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # Another process writes within 1 s of the kill.
    start = time.monotonic()
    after = store.create_task(project="kept", name="written-after").id
    assert time.monotonic() - start < 1.0

    # Nothing of the killed transaction is visible, to this or to a fresh connection.
    assert t.Project.select().where(t.Project.name.startswith("killed-")).count() == 0
    assert not t.Queue.select().where(t.Queue.name == "killed-queue").exists()
    fresh = sqlite3.connect(db_path(store))
    try:
        assert fresh.execute("SELECT COUNT(*) FROM project WHERE name LIKE 'killed-%'"
                             ).fetchone() == (0,)
        assert fresh.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        fresh.close()
    assert store.integrity_check() == "ok"
    assert {x.id for x in store.find_tasks(project="kept")} == {before, after}


# -- RELIABILITY 5: fork safety -----------------------------------------------------------------


def _in_forked_child(body) -> int:
    """Run ``body()`` in a forked child; returns its exit code (``body``'s return value)."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 99
        try:
            code = body()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 98
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


@pytest.mark.usefixtures("backend")
@pytest.mark.timeout(60)
def test_store_handle_used_after_fork_raises_and_get_store_gives_a_new_one(store):
    task_id = store.create_task(project="fork", name="parent").id
    assert get_store() is store

    calls = [
        lambda: store.get_task(task_id),
        lambda: store.find_tasks(),
        lambda: store.create_task(project="fork", name="from-old-handle"),
        lambda: store.set_status(task_id, Status.completed),
        lambda: store.write(lambda: None),
        lambda: store.upgrade(),
        lambda: store.list_queues(),
        lambda: store.integrity_check(),
    ]

    def child() -> int:
        for n, call in enumerate(calls):
            try:
                call()
            except ForkedHandleError as exc:
                if str(os.getpid()) not in str(exc):
                    return 20 + n
            else:
                return 10 + n  # the parent's handle worked in the child: not allowed
        fresh = get_store()
        if fresh is store or fresh._pid != os.getpid():
            return 2
        if fresh.get_task(task_id).name != "parent":
            return 3
        fresh.create_task(project="fork", name="from-child")
        if get_store() is not fresh:
            return 4
        return 0

    assert _in_forked_child(child) == 0
    # The parent's handle is untouched by the child, and sees the child's commit.
    assert get_store() is store
    names = sorted(x.name for x in store.find_tasks(project="fork"))
    assert names == ["from-child", "parent"]
    store.create_task(project="fork", name="parent-again")
    assert store.integrity_check() == "ok"


@pytest.mark.usefixtures("backend")
@pytest.mark.timeout(60)
def test_store_handle_in_multiprocessing_fork_child(store):
    import multiprocessing

    store.create_task(project="fork", name="parent")
    ctx = multiprocessing.get_context("fork")

    def target() -> None:
        try:
            store.find_tasks()
        except ForkedHandleError:
            get_store().create_task(project="fork", name="mp-child")
            os._exit(0)
        os._exit(1)

    proc = ctx.Process(target=target)
    proc.start()
    proc.join(30)
    if proc.is_alive():  # pragma: no cover - only on failure
        proc.kill()
        proc.join()
    assert proc.exitcode == 0
    assert {x.name for x in store.find_tasks(project="fork")} == {"parent", "mp-child"}


# -- pragmas and file modes ---------------------------------------------------------------------


def _pragmas(db) -> dict[str, object]:
    return {name: db.execute_sql(f"PRAGMA {name}").fetchone()[0]
            for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")}


def test_connection_pragmas(store):
    expected = {"journal_mode": "wal", "foreign_keys": 1, "synchronous": 1}  # 1 = NORMAL
    got = _pragmas(store.db)
    assert got["busy_timeout"] >= 5000
    assert {k: got[k] for k in expected} == expected
    # peewee opens one connection per thread: each must get the same pragmas.
    seen = {}

    def other_thread() -> None:
        seen.update(_pragmas(store.db))
        store.db.close()

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen["busy_timeout"] >= 5000
    assert {k: seen[k] for k in expected} == expected
    # The journal mode is persistent in the file: a plain connection sees WAL too.
    plain = sqlite3.connect(db_path(store))
    try:
        assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        plain.close()


def test_foreign_keys_are_enforced(store):
    import peewee

    with pytest.raises(peewee.IntegrityError):
        store.write(lambda: t.Parameter.insert(task="no-such-task", section="General",
                                               name="x", value="1").execute())


def test_db_file_is_private_even_with_a_permissive_umask(run_py, tmp_path):
    home = tmp_path / "umask-home"
    run_py("""
        import os
        os.umask(0)
        from pipekit.store import get_store
        store = get_store()
        store.create_task(project="p", name="a")
        os.umask(0o022)
        print("ok")
    """, env={"PIPEKIT_HOME": str(home)})
    mode = lambda p: stat.S_IMODE(p.stat().st_mode)  # noqa: E731
    assert mode(home / "pipekit.db") == 0o600
    assert mode(home) == 0o700
    for suffix in ("-wal", "-shm"):
        side = home / f"pipekit.db{suffix}"
        if side.exists():
            assert mode(side) == 0o600, suffix


def test_db_file_mode_in_this_process(store):
    assert stat.S_IMODE(db_path(store).stat().st_mode) == 0o600


# -- the dialect: what differs between SQLite and PostgreSQL -----------------------------------


def test_the_dialect_is_picked_from_the_database_class(store):
    import peewee
    from playhouse.db_url import connect
    from playhouse.postgres_ext import PostgresqlExtDatabase

    from pipekit.errors import StoreError
    from pipekit.store.dialect import POSTGRESQL, SQLITE, dialect_for

    assert store.dialect is SQLITE
    assert dialect_for(peewee.SqliteDatabase(":memory:")) is SQLITE
    # Built without connecting: PostgreSQL is not needed to pick its dialect.
    assert dialect_for(peewee.PostgresqlDatabase("pipekit")) is POSTGRESQL
    assert dialect_for(connect("postgresql://someone@localhost:5432/pipekit")) is POSTGRESQL
    assert dialect_for(PostgresqlExtDatabase("pipekit")) is POSTGRESQL
    with pytest.raises(StoreError, match="SQLite or PostgreSQL"):
        dialect_for(peewee.MySQLDatabase("pipekit"))


def test_the_dialects_hold_what_differs():
    from pipekit.store.dialect import POSTGRESQL, SQLITE

    assert (SQLITE.begin, SQLITE.param, SQLITE.integrity_check) == (
        "IMMEDIATE", "?", "PRAGMA integrity_check")
    assert (POSTGRESQL.begin, POSTGRESQL.param, POSTGRESQL.integrity_check) == (
        None, "%s", "SELECT 'ok'")
    assert SQLITE.claim_lock == ""
    assert POSTGRESQL.claim(2).endswith(" FOR UPDATE OF e SKIP LOCKED")
    assert POSTGRESQL.claim(2).count("%s") == 2 and "?" not in POSTGRESQL.claim(2)
    assert SQLITE.claim(3).count("?") == 3


def test_every_statement_gets_the_postgresql_placeholders():
    from pipekit.store import statements
    from pipekit.store.dialect import POSTGRESQL, SQLITE

    texts = [v for k, v in vars(statements).items() if k.isupper() and isinstance(v, str)]
    texts += [statements.set_status(("status", "last_update"), 2),
              statements.update_node(("status", "task")), statements.claim(2)]
    assert "LAST_SCALARS" in vars(statements)  # Store.last_scalars goes through the dialect too
    for text in texts:
        assert SQLITE.sql(text) is text
        rewritten = POSTGRESQL.sql(text)
        assert "?" not in rewritten and rewritten.count("%s") == text.count("?"), text


class _DriverError(Exception):
    """What psycopg2 (``pgcode``) or psycopg 3 (``sqlstate``) raises."""

    def __init__(self, message: str, pgcode: str | None = None, sqlstate: str | None = None):
        super().__init__(message)
        self.pgcode = pgcode
        self.sqlstate = sqlstate


def _wrapped(driver_error: Exception):
    """The error as peewee re-raises it: its own class, made from the driver's error."""
    import peewee

    return peewee.OperationalError(driver_error, *driver_error.args)


def test_which_errors_retry_the_whole_transaction():
    import peewee

    from pipekit.store.dialect import POSTGRESQL, SQLITE

    assert SQLITE.is_retryable(peewee.OperationalError("database is locked"))
    assert SQLITE.is_retryable(peewee.OperationalError("database is busy"))
    assert not SQLITE.is_retryable(peewee.OperationalError("no such table: task"))
    assert not SQLITE.is_retryable(_wrapped(_DriverError("could not serialize", "40001")))
    for code in ("40001", "40P01", "55P03"):  # serialization, deadlock, lock not available
        assert POSTGRESQL.is_retryable(_wrapped(_DriverError("retry me", pgcode=code)))
        assert POSTGRESQL.is_retryable(_wrapped(_DriverError("retry me", sqlstate=code)))
    assert not POSTGRESQL.is_retryable(_wrapped(_DriverError("duplicate key", "23505")))
    assert not POSTGRESQL.is_retryable(peewee.OperationalError("database is locked"))


def test_write_retries_what_the_dialect_calls_contention(store):
    import attrs

    from pipekit.store.db import write

    dialect = attrs.evolve(store.dialect, retry_sqlstates=("40001",))
    calls = []

    def fn() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise _wrapped(_DriverError("could not serialize access", "40001"))
        return "done"

    assert write(store.db, fn, dialect) == "done"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(Exception, match="could not serialize"):  # not retried by SQLite's
        write(store.db, fn, store.dialect)
    assert len(calls) == 1
