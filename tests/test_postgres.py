"""The store on PostgreSQL: what only a database server brings (issue 14).

The store contract, and the queue, pipeline and recovery tests, run on PostgreSQL too (the
``backend`` fixture; ``TestPostgresStore`` in test_store.py). Here: the schema and its
migrations on a server (RELIABILITY 6), reconnecting after a lost connection, the bounded
pool, LISTEN/NOTIFY waking an idle agent, fork safety (RELIABILITY 5), ``pipekit db`` on a
server, and claims racing through the store API (RELIABILITY 1). Every test runs against the
session's throwaway server (tests/postgres_helpers.py), which also checks after each one that
no SQLite file appeared under ``PIPEKIT_HOME``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
from test_migrate import STORE_V1, UPGRADER, gen
from test_store import finish_children, start_children

from pipekit.errors import StoreError, StoreTooNew
from pipekit.models import ObjectRef, Status
from pipekit.store import Store, get_store, migrate
from pipekit.store import tables as t
from pipekit.store.dialect import POSTGRESQL
from pipekit.testing import wait_until

PIPEKIT = str(Path(sys.executable).with_name("pipekit"))

# Step functions reach the step process as cloudpickle; this module is not importable there.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.timeout(120)


def db_name(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?")[0]


def pk(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PIPEKIT, *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


# -- the schema ------------------------------------------------------------------------------------


def test_numbers_are_64_bit_times_are_doubles_and_text_has_no_length_limit(pg_store, postgres,
                                                                             store):
    columns = postgres.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name != 'schema_version'",
        database=db_name(pg_store))
    types = {(table, column): kind for table, column, kind in columns}
    assert {kind for kind in types.values()} == {"bigint", "double precision", "text",
                                                 "boolean", "bytea"}
    assert types["task", "created"] == types["queue_entry", "lease_expires"] == \
        "double precision"
    assert types["scalar", "id"] == types["artifact", "size"] == "bigint"
    assert types["task", "name"] == types["task", "id"] == "text"

    long_name = "n" * 1000  # beyond peewee's VARCHAR(255), as SQLite allows
    info = store.create_task(project="p" * 300, name=long_name)
    again = store.get_task(info.id)
    assert (again.name, again.created) == (long_name, info.created)  # the time, exactly
    ref = ObjectRef(digest="d" * 64, size=3 * 2 ** 30, serializer="bytes", type="bytes",
                    filename="big.bin", inline=None)
    store.put_artifact(info.id, "big", ref)
    assert store.get_artifact(info.id, "big").ref.size == 3 * 2 ** 30


def _pg_schema(cluster, database: str) -> dict:
    rows = lambda q: cluster.execute(q, database=database)  # noqa: E731
    columns = rows(
        "SELECT table_name, column_name, data_type, is_nullable, column_default "
        "FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name != 'schema_version' ORDER BY table_name, ordinal_position")
    indexes = rows(
        "SELECT r.relname, i.indisunique, i.indisprimary, "
        "array_to_string(array(SELECT a.attname FROM unnest(i.indkey) k "
        "JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum = k), ',') "
        "FROM pg_index i JOIN pg_class r ON r.oid = i.indrelid "
        "WHERE r.relnamespace = current_schema()::regnamespace AND r.relname != "
        "'schema_version'")
    keys = rows(
        "SELECT conrelid::regclass::text, confrelid::regclass::text, confdeltype, "
        "pg_get_constraintdef(oid) FROM pg_constraint WHERE contype = 'f' "
        "AND connamespace = current_schema()::regnamespace")
    # (tables.py says VARCHAR(n) where the migrated store has TEXT: see migrate.py)
    return {"columns": sorted((tb, c, "text" if k == "character varying" else k, n, d)
                              for tb, c, k, n, d in columns),
            "indexes": sorted(indexes), "foreign_keys": sorted(keys)}


def every_statement(dialect) -> list[str]:
    """Every hand-written statement the store runs, as this dialect runs it."""
    from pipekit.store import statements as sql

    texts = [v for k, v in vars(sql).items() if k.isupper() and isinstance(v, str)
             and v.lstrip().split()[0] in ("SELECT", "INSERT", "UPDATE")]
    texts = [sql.set_status(("status", "last_update"), 2),
             sql.set_status(("status",), 1) + sql.FENCE, sql.update_node(("status", "task")),
             sql.LEASE_HELD + dialect.row_lock, sql.SELECT_TAGS + dialect.row_lock,
             sql.SELECT_STATUS + dialect.row_lock, sql.RUN_OWNER + dialect.row_lock,
             sql.EXPIRED_LEASES + dialect.claim_lock,
             *[t for t in texts if t not in (sql.FENCE,)]]
    if dialect.notify:
        texts.append(dialect.notify)
    if dialect.migration_lock:
        texts.append(dialect.migration_lock)
    return [dialect.sql(text) for text in texts] + [dialect.claim(1), dialect.claim(3)]


@pytest.mark.usefixtures("backend")
def test_every_hand_written_statement_is_valid_sql_on_both(store):
    """Each one planned by the database itself (``EXPLAIN``: names, types, grouping are
    checked, nothing is run), with every parameter NULL."""
    statements = every_statement(store.dialect)
    assert len(statements) > 30
    for text in statements:
        params = [None] * text.count(store.dialect.param)
        try:
            store.db.execute_sql(f"EXPLAIN {text}", params).fetchall()
        except Exception as exc:
            raise AssertionError(f"{text}\n{exc}") from None


def test_tables_py_equals_the_schema_migrations_build(pg_store, postgres):
    from pipekit.store.postgres import open_postgres

    scratch = postgres.create_database(template="template0")
    try:
        db = open_postgres(postgres.url(scratch))
        with db.bind_ctx(t.ALL_TABLES):
            db.create_tables(t.ALL_TABLES)
        db.close_all()
        migrated, direct = (_pg_schema(postgres, db_name(pg_store)),
                            _pg_schema(postgres, scratch))
    finally:
        postgres.drop_database(scratch)
    assert direct == migrated


# -- migrations (RELIABILITY 6 on a server) --------------------------------------------------------

#: the columns migrations after version 1 add to existing tables, and what old rows get
ADDED = {("task", "cache_key"): None, ("queue_entry", "max_attempts"): 2,
         ("run", "owner"): None, ("run", "heartbeat"): None, ("task", "user"): None}


def store_at(version: int) -> Store:
    """This test's (empty) PostgreSQL store migrated to ``version``, holding every row of the
    checked-in version-1 store (tests/fixtures/make_v1_store.py), as an older pipekit would
    have written them; its objects and logs are copied into ``PIPEKIT_HOME``.
    """
    store = Store(upgrade=False)
    migrate.upgrade(store.db, store.dialect, store.location, to=version)
    # (immutable: a WAL-mode file opened read-only would still get -wal/-shm files beside it)
    source = sqlite3.connect(f"file:{STORE_V1 / 'pipekit.db'}?immutable=1", uri=True)
    boolean = {(table, column) for table, column in store.db.execute_sql(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND data_type = 'boolean'").fetchall()}

    def copy() -> None:
        store.db.execute_sql("DELETE FROM queue")  # (the fixture's own default queues replace
        for table in gen.EXPECTED_COUNTS:          # those migration 0001 made)
            if table == "schema_version":
                continue
            cursor = source.execute(f"SELECT * FROM {table} ORDER BY rowid")
            names = [d[0] for d in cursor.description]
            # what the pipekit of that version wrote in the columns added since version 1
            later = [n for n in columns_of(store, table) if (table, n) in ADDED]
            marks = ", ".join(["%s"] * (len(names) + len(later)))
            quoted = ", ".join(f'"{n}"' for n in [*names, *later])
            for row in cursor:
                values = [bool(v) if (table, n) in boolean else v for n, v in zip(names, row,
                                                                                    strict=True)]
                values += [ADDED[table, n] for n in later]
                store.db.execute_sql(f'INSERT INTO "{table}" ({quoted}) VALUES ({marks})',
                                     values)
            (sequence,) = store.db.execute_sql(
                "SELECT pg_get_serial_sequence(%s, 'id')", (table,)).fetchone() \
                if "id" in names else (None,)
            if sequence:  # the next id after the copied ones, as if they were inserted
                store.db.execute_sql(f'SELECT setval(%s, (SELECT MAX(id) FROM "{table}"))',
                                     (sequence,))

    try:
        store.write(copy)
    finally:
        source.close()
    home = store.settings.home
    for folder in ("artifacts", "logs"):
        shutil.copytree(STORE_V1 / folder, home / folder, dirs_exist_ok=True)
    return store


def dump(store: Store) -> dict[str, list[tuple]]:
    """Every row of every table, by primary key (``bytea`` as bytes)."""
    return dump_rows(lambda query: store.db.execute_sql(query).fetchall())


def dump_rows(rows) -> dict[str, list[tuple]]:
    out = {}
    tables = [name for (name,) in rows("SELECT tablename FROM pg_tables "
                                       "WHERE schemaname = current_schema()")]
    for table in sorted(tables):
        key = "version" if table == "schema_version" else (
            "task_id" if table == "run" else "id")
        out[table] = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                      for row in rows(f'SELECT * FROM "{table}" ORDER BY "{key}"')]
    return out


def columns_of(store: Store, table: str) -> list[str]:
    cursor = store.db.execute_sql(f'SELECT * FROM "{table}" LIMIT 0')
    return [d[0] for d in cursor.description]


@pytest.mark.parametrize("version", [1, migrate.newest_version() - 1],
                         ids=["from version 1", "from the previous version"])
def test_a_store_migrated_from_an_older_version_keeps_every_row(pg_blank, version):
    old = store_at(version)
    before = dump(old)
    before_columns = {table: columns_of(old, table) for table in before}
    old.close()
    store = get_store()  # opening upgrades
    assert migrate.current_version(store.db) == migrate.newest_version()
    after = dump(store)
    added = set(after) - set(before)  # tables of later migrations, empty
    assert set(after) >= set(before)
    assert added == ({"agent"} if version < 3 else set()) | {"log_chunk"}
    assert all(after[table] == [] for table in added)
    for table, rows in before.items():
        if table == "schema_version":
            assert after[table][:len(rows)] == rows
            assert [r[1] for r in after[table]] == [m.name for m in migrate.known_migrations()]
            continue
        names = columns_of(store, table)
        assert names[:len(before_columns[table])] == before_columns[table], table
        width = len(before_columns[table])
        assert [row[:width] for row in after[table]] == rows, table  # every row, unchanged
        for n, name in enumerate(names[width:], start=width):  # new columns: their defaults
            assert {row[n] for row in after[table]} <= {ADDED[table, name]}, (table, name)
    assert {table: len(rows) for table, rows in after.items()
            if table not in ("agent", "log_chunk")} == {
        **gen.EXPECTED_COUNTS, "schema_version": migrate.newest_version()}
    assert store.integrity_check() == "ok"

    # usable through the API: artifacts verify, the new columns work
    from pipekit import Task

    train = Task.get_task(task_id=gen.TASK_TRAIN)
    assert train.status == "completed" and train.get_tags() == ["v1", "gpu"]
    assert train.artifacts["metrics"].get() == gen.INLINE_JSON
    assert train.artifacts["weights"].get() == gen.BLOB_CONTENT
    assert train.get_log() == "epoch 1\nepoch 2\ndone: 42\n\n"
    assert store.queue_of(gen.TASK_QUEUED) == "gpu"
    store.update_task(gen.TASK_TRAIN, cache_key="c" * 64)
    assert store.find_cached("c" * 64) == gen.TASK_TRAIN
    new = store.create_task(project="another", name="after-upgrade")
    assert store.get_task(new.id).project == "another"

    # upgrading again is a no-op
    once = dump(store)
    assert store.upgrade() == [] and Store().upgrade() == []
    assert dump(store) == once


@pytest.mark.timeout(120)
def test_two_concurrent_upgrades_one_applies_the_other_waits(pg_blank, tmp_path):
    """The advisory lock: the second upgrader waits for the first's whole transaction."""
    store_at(1).close()
    work = tmp_path / "work"
    work.mkdir()
    script = tmp_path / "upgrader.py"
    script.write_text(textwrap.dedent(UPGRADER))
    procs = [subprocess.Popen([sys.executable, str(script), str(work)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        count = lambda pattern: len(list(work.glob(pattern)))  # noqa: E731
        alive = lambda: all(p.poll() is None for p in procs)  # noqa: E731
        wait_until(lambda: count("ready-*") == 2 or not alive(), 60, "both upgraders ready")
        (work / "go").touch()
        wait_until(lambda: (count("upgrading-*") == 2 and count("applying-*") >= 1)
                   or not alive(), 60, "both upgrading, one applying")
        assert alive(), [p.communicate() for p in procs]
        watch_until = time.monotonic() + 0.3  # an observation window, not synchronisation
        while time.monotonic() < watch_until:
            assert count("applying-*") == 1
            time.sleep(0.01)
        (work / "release").touch()
        results = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [0, 0], results
    applied = sorted((json.loads(out)["applied"] for out, _ in results), key=len)
    assert applied == [[], [m.name for m in migrate.known_migrations()[1:]]]
    store = get_store()
    assert migrate.current_version(store.db) == migrate.newest_version()
    assert store.integrity_check() == "ok"


def test_a_store_from_a_newer_pipekit_is_refused_and_left_untouched(pg_store, postgres):
    store = get_store()
    store.create_task(project="p", name="kept")
    store.write(lambda: store.db.execute_sql(
        "INSERT INTO schema_version (version, name, applied) VALUES (999, '0999_future', 0)"))
    before = dump(store)
    store.close()
    from pipekit.store import reset_store

    reset_store()
    with pytest.raises(StoreTooNew) as err:
        get_store()
    assert (err.value.found, err.value.known) == (999, migrate.newest_version())
    assert db_name(pg_store) in str(err.value)
    with pytest.raises(StoreTooNew):
        Store(upgrade=False)
    proc = pk("db", "status")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("Error: store postgresql://") and "999" in line
    # nothing changed (read with the administrator's connection: this pipekit refuses it)
    assert dump_rows(lambda query: postgres.execute(query, database=db_name(pg_store))) \
        == before


# -- pipekit db on a server -----------------------------------------------------------------------


def test_db_status_upgrade_and_check_on_postgres_never_show_the_password(pg_blank):
    url = pg_blank.replace("postgresql://postgres@", "postgresql://postgres:s3cret@")
    env = {"PIPEKIT_DB": url}  # (the throwaway server trusts any password)
    names = [m.name for m in migrate.known_migrations()]
    status = pk("db", "status", "--json", env=env)
    assert status.returncode == 0, status.stderr
    before = json.loads(status.stdout)
    assert (before["current"], before["pending"]) == (0, names)
    assert before["location"] == url.replace(":s3cret@", ":***@")
    upgraded = pk("db", "upgrade", env=env)
    assert upgraded.stdout.strip() == f"applied {len(names)} migration(s): {', '.join(names)}"
    assert "is up to date" in pk("db", "upgrade", env=env).stdout
    check = pk("db", "check", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    first = check.stdout.splitlines()[0]
    assert first.startswith("database postgresql://postgres:***@") and ": ok (" in first
    assert "tables read in full" in first and "amcheck is not installed" in first
    for proc in (status, upgraded, check):
        assert "s3cret" not in proc.stdout + proc.stderr


def test_the_integrity_check_verifies_indexes_with_amcheck_when_installed(pg_store, postgres,
                                                                         store):
    postgres.execute("CREATE EXTENSION amcheck", database=db_name(pg_store))
    store.create_task(project="p", name="a")
    verdict, checked = store.check_database()
    assert verdict == "ok"
    assert "indexes verified with amcheck" in checked
    assert int(checked.split(", ")[1].split()[0]) >= 20  # every B-tree of the store


def test_a_server_that_cannot_be_reached_is_one_line_at_once(pipekit_home):
    from postgres_helpers import _free_port

    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/nothing"
    began = time.monotonic()
    proc = pk("db", "status", env={"PIPEKIT_DB": url})
    assert time.monotonic() - began < 20
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot connect to the store {url}: ")


# -- lost connections ------------------------------------------------------------------------------


def backend_pid(store: Store) -> int:
    return store.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]


def terminate(postgres, pid: int) -> None:
    """End one server session, as an administrator or a crashed backend would (and wait)."""
    assert postgres.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)) == [(True,)]


def test_a_killed_connection_is_replaced_and_reads_and_writes_go_on(pg_store, postgres, store):
    task = store.create_task(project="p", name="before").id
    first = backend_pid(store)
    terminate(postgres, first)
    assert store.get_task(task).name == "before"  # a read: reconnected and retried
    second = backend_pid(store)
    assert second != first
    terminate(postgres, second)
    assert store.set_status(task, Status.in_progress)  # a write: retried on a new connection
    assert store.get_task(task).status == "in_progress"


def test_a_write_whose_connection_dies_inside_the_transaction_is_retried_whole(pg_store,
                                                                                postgres, store):
    calls = []

    def fn() -> int:
        calls.append(backend_pid(store))
        t.Project.insert(name=f"attempt-{len(calls)}", created=0.0).execute()
        if len(calls) == 1:
            terminate(postgres, calls[0])
            t.Project.insert(name="never", created=0.0).execute()  # the connection is gone
        return len(calls)

    assert store.write(fn) == 2
    assert calls[0] != calls[1]
    names = {p.name for p in t.Project.select()}
    assert "attempt-2" in names and not names & {"attempt-1", "never"}


def test_a_connection_lost_while_committing_is_an_error_not_a_second_write(pg_store, postgres,
                                                                           store):
    calls = []

    def fn() -> None:
        calls.append(1)
        t.Project.insert(name="maybe", created=0.0).execute()
        terminate(postgres, backend_pid(store))  # the COMMIT that follows finds it gone

    with pytest.raises(StoreError, match="while committing: the write may or may not"):
        store.write(fn)
    assert calls == [1]
    assert store.get_task(store.create_task(project="p", name="after").id).name == "after"


def test_a_deadlock_is_retried_whole_and_both_writes_land(pg_store, store):
    """Two writes locking two rows in opposite orders: the server aborts one (SQLSTATE 40P01,
    raised by psycopg2 as its own DeadlockDetected), which is retried and then succeeds."""
    a = store.create_task(project="p", name="a").id
    b = store.create_task(project="p", name="b").id
    both_hold_one = threading.Barrier(2, timeout=30)
    attempts: list[str] = []
    errors: list[BaseException] = []

    def writer(first: str, second: str) -> None:
        def fn() -> None:
            attempts.append(first)
            store._sql("SELECT 1 FROM task WHERE id = ? FOR UPDATE", (first,))
            if attempts.count(first) == 1:
                both_hold_one.wait()
            store._sql("UPDATE task SET comment = ? WHERE id = ?", (f"by {first}", second))

        try:
            store.write(fn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=pair) for pair in ((a, b), (b, a))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(attempts) == 3  # one of the two ran twice
    assert {store.get_task(a).comment, store.get_task(b).comment} == {f"by {a}", f"by {b}"}


def test_a_restarted_server_is_reconnected_to(pg_store, postgres, store):
    task = store.create_task(project="p", name="before-restart").id
    postgres.restart()
    assert store.get_task(task).name == "before-restart"
    store.set_status(task, Status.in_progress)
    assert store.get_task(task).status == "in_progress"


def test_a_read_only_database_refuses_writes_in_one_line(pg_store, postgres, store):
    task = store.create_task(project="p", name="a").id
    postgres.execute(f'ALTER DATABASE "{db_name(pg_store)}" SET default_transaction_read_only '
                     "= on")
    from pipekit.store import reset_store

    reset_store()
    store = get_store()  # new sessions start read-only
    assert store.get_task(task).name == "a"
    with pytest.raises(StoreError, match="is read-only here: .*read-only transaction"):
        store.set_status(task, Status.in_progress)
    postgres.execute(f'ALTER DATABASE "{db_name(pg_store)}" RESET default_transaction_read_only')


# -- the pool -------------------------------------------------------------------------------------


def test_the_pool_is_bounded_and_takes_back_the_connections_of_ended_threads(
        pg_store, postgres, monkeypatch):
    from pipekit.store import reset_store

    monkeypatch.setenv("PIPEKIT_DB", pg_store + "?max_connections=3")
    reset_store()
    store = get_store()
    task = store.create_task(project="p", name="a").id
    for _ in range(20):  # short-lived threads, one after another: one connection each
        thread = threading.Thread(target=lambda: store.get_task(task))
        thread.start()
        thread.join()
    assert store.db.in_use() == 1  # this thread's: the ended threads' went back to the pool

    release = threading.Event()
    done = []

    def hold() -> None:  # a thread that keeps its connection while it lives
        store.get_task(task)
        done.append("held")
        release.wait(60)

    holders = [threading.Thread(target=hold) for _ in range(2)]
    for thread in holders:
        thread.start()
    wait_until(lambda: len(done) == 2, 30, "two threads holding a connection")
    assert store.db.in_use() == 3
    late = threading.Thread(target=lambda: done.append(store.get_task(task).name))
    late.start()
    watch_until = time.monotonic() + 0.5  # it must wait for a free connection meanwhile
    while time.monotonic() < watch_until:
        assert len(done) == 2
        time.sleep(0.02)
    release.set()
    for thread in holders:
        thread.join()
    late.join(30)
    assert done[-1] == "a"  # it got a connection a thread that ended gave back
    sessions = postgres.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
        "application_name = 'pipekit'", (db_name(pg_store),))[0][0]
    assert sessions <= 3


# -- LISTEN/NOTIFY: an idle agent wakes at once ----------------------------------------------------


def noop():
    return None


def listening(postgres, url: str) -> bool:
    return bool(postgres.execute(
        "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN %%'",
        (db_name(url),)))


@pytest.mark.timeout(90)
def test_an_idle_agent_wakes_as_soon_as_a_task_is_queued(pg_store, postgres, monkeypatch):
    """The agent polls every 30 s here; the NOTIFY sent with the enqueue wakes it at once."""
    from pipeline_helpers import function_task

    from pipekit import Task
    from pipekit.agent import Agent

    monkeypatch.setenv("PIPEKIT_LEASE_TTL", "600")
    agent = Agent(["default"], poll=30)
    assert agent.poll == 30
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        store = get_store()
        wait_until(lambda: store.list_agents() and listening(postgres, pg_store), 30,
                   "the agent to listen")
        task_id = function_task(noop, "noop")
        queued = time.monotonic()
        Task.enqueue(task_id, "default")
        wait_until(lambda: store.get_task(task_id).status != "queued", 10,
                   "the agent to claim the task")
        assert time.monotonic() - queued < 5  # not the 30 s poll
        wait_until(lambda: store.get_task(task_id).status == "completed", 60, "the task")
    finally:
        # (its worker process gone: else the agent would notice that only at its next poll)
        wait_until(lambda: not any(slot.alive() for slot in list(agent._slots.values())), 30,
                   "the task's process to end")
        agent.stop(hurry=True)
        thread.join(30)
    assert not thread.is_alive()


def test_the_listener_comes_back_after_its_connection_is_killed(pg_store, postgres, store):
    woken = threading.Event()
    watch = store.watch_queues(["default"], woken.set)
    try:
        wait_until(lambda: listening(postgres, pg_store), 30, "listening")
        (pid,) = postgres.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
                                  "query LIKE 'LISTEN %%'", (db_name(pg_store),))[0]
        woken.clear()
        terminate(postgres, pid)
        wait_until(lambda: postgres.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE 'LISTEN %%' "
            "AND pid != %s", (db_name(pg_store), pid)), 30, "listening again")
        woken.clear()
        store.enqueue(store.create_task(project="p", name="a").id, "default")
        assert woken.wait(10)
        woken.clear()
        store.ensure_queue("other")
        store.enqueue(store.create_task(project="p", name="b").id, "other")
        assert not woken.wait(0.5)  # a queue it does not watch does not wake it
    finally:
        watch.close()


def test_on_sqlite_nothing_listens_and_the_agent_polls(store):
    assert store.dialect.notify is None
    called = []
    watch = store.watch_queues(["default"], lambda: called.append(1))
    store.enqueue(store.create_task(project="p", name="a").id, "default")
    watch.close()
    assert called == []


# -- fork (RELIABILITY 5 on a server) -------------------------------------------------------------


def test_a_forked_child_closing_what_it_inherited_leaves_the_parents_session_alone(pg_store,
                                                                                  store):
    task = store.create_task(project="fork", name="parent").id
    before = backend_pid(store)
    inherited = store.db.connection()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            inherited.close()  # what dropping or garbage-collecting it would do
            get_store().create_task(project="fork", name="child")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend_pid(store) == before  # the same session: nobody ended it
    assert {x.name for x in store.find_tasks(project="fork")} == {"parent", "child"}
    assert store.get_task(task).name == "parent"


KILLED_WRITER = """
import sys, threading
from pathlib import Path
from pipekit.store import get_store
from pipekit.store import tables as t

ready, task = Path(sys.argv[1]), sys.argv[2]
store = get_store()

def fn():
    store._sql("SELECT 1 FROM task WHERE id = ? FOR UPDATE", (task,))  # the row, locked
    t.Project.insert_many([{"name": f"killed-{i}", "created": 0.0} for i in range(500)]
                          ).execute()
    ready.write_text("in transaction")
    threading.Event().wait()  # hold the transaction open until SIGKILL

store.write(fn)
"""


@pytest.mark.timeout(60)
def test_a_writer_killed_inside_its_transaction_leaves_nothing_and_frees_its_locks(
        pg_store, store, tmp_path):
    """RELIABILITY 3 on a server: the server ends the dead client's transaction."""
    import signal

    task = store.create_task(project="kept", name="locked").id
    ready = tmp_path / "ready"
    script = tmp_path / "killed_writer.py"
    script.write_text(KILLED_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(ready), task],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: ready.exists() or proc.poll() is not None, 60,
                   "the child to be inside its transaction")
        assert proc.poll() is None, proc.stderr.read()
        assert not t.Project.select().where(t.Project.name.startswith("killed-")).exists()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    start = time.monotonic()
    assert store.set_status(task, Status.in_progress)  # the row it held is free again
    assert time.monotonic() - start < 2.0
    assert not t.Project.select().where(t.Project.name.startswith("killed-")).exists()
    assert store.integrity_check() == "ok"


# -- RELIABILITY 1 through the store: claims racing on the server ----------------------------------

CLAIMER = """
import json, sys, time
from pathlib import Path
from pipekit.models import Status
from pipekit.store import get_store

worker, go = sys.argv[1], Path(sys.argv[2])
store = get_store()
store.list_queues()
Path(sys.argv[3]).touch()
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.001)
done = []
began = time.monotonic()
while (claim := store.claim(["default"], worker, lease=60)) is not None:
    assert store.set_status(claim.task.id, Status.completed, lease=claim.lease)
    done.append(claim.task.id)
print(json.dumps({"done": done, "seconds": time.monotonic() - began}))
"""


@pytest.mark.timeout(180)
def test_eight_processes_claim_and_complete_every_task_exactly_once(pg_store, store, tmp_path):
    n_tasks, claimers = 400, 8

    def queue_them() -> list[str]:  # (in one transaction: the setup is not what is tested)
        ids = [store.create_task(project="claims", name=f"t{i}").id for i in range(n_tasks)]
        for i, tid in enumerate(ids):
            store.enqueue(tid, "default", priority=i % 3)
        return ids

    ids = store.write(queue_them)
    go = tmp_path / "go"
    procs = start_children(tmp_path, CLAIMER, [
        [f"w{n}", str(go), str(tmp_path / f"ready{n}")] for n in range(claimers)])
    try:
        wait_until(lambda: all((tmp_path / f"ready{n}").exists() for n in range(claimers))
                   or any(p.poll() is not None for p in procs), 60, "claimers ready")
        go.touch()
    finally:
        results = finish_children(tmp_path, procs, 120)
    for code, _, err in results:
        assert code == 0, err
        assert "Traceback" not in err and "deadlock" not in err.lower(), err
    reports = [json.loads(out) for _, out, _ in results]
    done = [tid for report in reports for tid in report["done"]]
    assert len(done) == len(set(done)) == n_tasks and set(done) == set(ids)  # once each
    statuses = store.task_statuses(ids)
    assert {status for status, _ in statuses.values()} == {"completed"}
    assert {store.lease_of(tid)[0].attempt for tid in ids} == {1}  # one claim each
    assert sum(1 for report in reports if report["done"]) > 1  # the claimers shared them
    seconds = max(report["seconds"] for report in reports)
    print(f"\n{n_tasks} claims + completions by {claimers} processes: {seconds:.2f} s "
          f"({n_tasks / seconds:.0f}/s)")


def test_the_dialect_sends_claims_through_skip_locked(pg_store, store):
    """What the race above relies on: the claim statement as the server runs it."""
    assert store.dialect is POSTGRESQL
    assert store.dialect.claim(1).endswith("FOR UPDATE OF e SKIP LOCKED")
