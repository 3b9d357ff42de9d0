"""Schema migrations (RELIABILITY 6) against a checked-in store of schema version 1.

``tests/fixtures/store_v1/`` is built by ``tests/fixtures/make_v1_store.py`` (run it again
only when the fixture has to change, and commit the result). Each test works on a copy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import peewee
import pytest

from pipekit.errors import StoreTooNew
from pipekit.store import Store, get_store, migrate
from pipekit.store import tables as t
from pipekit.testing import wait_until

FIXTURES = Path(__file__).resolve().parent / "fixtures"
STORE_V1 = FIXTURES / "store_v1"
PIPEKIT = Path(sys.executable).parent / "pipekit"


def _load_generator():
    spec = importlib.util.spec_from_file_location("make_v1_store",
                                                  FIXTURES / "make_v1_store.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen = _load_generator()




def dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table (``schema_version`` too), read with plain sqlite3."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
            "ORDER BY name")]
        return {name: conn.execute(f"SELECT * FROM {name} ORDER BY rowid").fetchall()
                for name in tables}
    finally:
        conn.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def v1_home(pipekit_home: Path) -> Path:
    """A copy of the checked-in version-1 store as this test's PIPEKIT_HOME."""
    assert not any(STORE_V1.glob("pipekit.db-*")), "fixture must be checkpointed"
    shutil.copytree(STORE_V1, pipekit_home, dirs_exist_ok=True)
    return pipekit_home


def test_fixture_is_a_version_1_store_with_data(v1_home):
    db = v1_home / "pipekit.db"
    rows = dump(db)
    assert rows["schema_version"] == [(1, "0001_initial", gen.T0)]
    assert {name: len(r) for name, r in rows.items()} == gen.EXPECTED_COUNTS
    columns = [r[1] for r in sqlite3.connect(db).execute("PRAGMA table_info(task)")]
    assert "cache_key" not in columns
    blobs = [p for p in (v1_home / "artifacts").rglob("*") if p.is_file()]
    assert len(blobs) == 1 and blobs[0].stat().st_size > 32 * 1024


APPLIED_AFTER_V1 = ["0002_task_cache_key", "0003_agents_and_leases", "0004_run_owner",
                    "0005_task_user", "0006_log_chunks"]
#: table -> the values every existing row gets in the columns later migrations add (last)
ADDED_COLUMNS = {"task": (None, None), "queue_entry": (2,), "run": (None, None)}


def test_opening_upgrades_to_the_newest_version_keeping_every_row(v1_home):
    db = v1_home / "pipekit.db"
    before = dump(db)
    store = get_store()  # opening upgrades
    assert migrate.current_version(store.db) == migrate.newest_version() == 6
    after = dump(db)
    assert set(after) == set(before) | {"agent", "log_chunk"}
    assert after["agent"] == [] and after["log_chunk"] == []
    for table, rows in before.items():
        if table in ADDED_COLUMNS:
            # Same rows; each gained the new columns (last), with their defaults.
            added = len(ADDED_COLUMNS[table])
            assert [row[:-added] for row in after[table]] == rows, table
            assert all(row[-added:] == ADDED_COLUMNS[table] for row in after[table])
        elif table == "schema_version":
            assert after[table][0] == rows[0]
            assert [r[1] for r in after[table]] == ["0001_initial", *APPLIED_AFTER_V1]
        else:
            assert after[table] == rows, table
    assert store.integrity_check() == "ok"

    # The data is usable through the API, artifacts verify, and the new column works.
    from pipekit import Task

    train = Task.get_task(task_id=gen.TASK_TRAIN)
    assert train.status == "completed" and train.get_tags() == ["v1", "gpu"]
    assert train.get_parameters_as_dict(cast=True) == {
        "Args": {"lr": 0.01, "epochs": 10}, "General": {"label": "résumé", "flags": [1, 2]}}
    assert train.get_configuration_object_as_dict("model") == {"layers": 4, "act": "relu"}
    assert train.artifacts["metrics"].get() == gen.INLINE_JSON
    assert train.artifacts["weights"].get() == gen.BLOB_CONTENT
    assert Task.get_task(task_id=gen.TASK_STEP2).artifacts["return"].get() == (1, "two", 3.0)
    assert train.models["output"][0].get() == gen.BLOB_CONTENT
    assert train.get_last_scalar_metrics()["loss"]["train"] == {"last": 0.1, "min": 0.1,
                                                                "max": 1.0}
    assert train.get_log() == "epoch 1\nepoch 2\ndone: 42\n\n"
    assert store.queue_of(gen.TASK_QUEUED) == "gpu"
    assert [n.name for n in t.Node.select().order_by(t.Node.id)] == ["step_one", "step_two"]

    store.update_task(gen.TASK_TRAIN, cache_key="c" * 64)
    assert [r.id for r in t.Task.select().where(t.Task.cache_key == "c" * 64)] == [
        gen.TASK_TRAIN]
    indexes = {r[1] for r in store.db.execute_sql("PRAGMA index_list(task)")}
    assert any("cache_key" in name for name in indexes)
    new = store.create_task(project="fixture", name="after-upgrade")
    assert store.get_task(new.id).project == "fixture"


def test_upgrading_twice_is_a_no_op(v1_home):
    store = get_store()
    once = dump(v1_home / "pipekit.db")
    assert store.upgrade() == []
    second = Store()
    assert second.upgrade() == []
    assert dump(v1_home / "pipekit.db") == once
    second.close()


UPGRADER = """
import importlib, json, os, sys, time
from pathlib import Path

work = Path(sys.argv[1])
me = os.getpid()
from pipekit.store import Store

store = Store(upgrade=False)

# Instrument migration 0002: note who applies it, and hold it (inside the upgrade's
# transaction) until the test says go, so the other process must be waiting meanwhile.
module = importlib.import_module("pipekit_migrations.0002_task_cache_key")
original = module.up

def up(migrator, db):
    (work / f"applying-{me}").touch()
    deadline = time.monotonic() + 60
    while not (work / "release").exists():
        if time.monotonic() > deadline:
            raise SystemExit("never released")
        time.sleep(0.002)
    original(migrator, db)

module.up = up
(work / f"ready-{me}").touch()
deadline = time.monotonic() + 60
while not (work / "go").exists():
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.001)
(work / f"upgrading-{me}").touch()
applied = store.upgrade()
print(json.dumps({"pid": me, "applied": applied}))
"""


@pytest.mark.timeout(120)
def test_two_concurrent_upgrades_one_applies_the_other_waits(v1_home, tmp_path):
    before = dump(v1_home / "pipekit.db")
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
        # While one holds the migration open the other cannot start applying it: watch a
        # little while (an observation window, not synchronisation).
        watch_until = time.monotonic() + 0.3
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
    outputs = sorted((json.loads(out) for out, _ in results), key=lambda r: r["applied"])
    assert [r["applied"] for r in outputs] == [[], APPLIED_AFTER_V1]
    assert count("applying-*") == 1
    assert (work / f"applying-{outputs[1]['pid']}").exists()

    after = dump(v1_home / "pipekit.db")
    assert [r[1] for r in after["schema_version"]] == ["0001_initial", *APPLIED_AFTER_V1]
    for table, added in ADDED_COLUMNS.items():
        assert [row[:-len(added)] for row in after[table]] == before[table], table
    for table in before:
        if table not in (*ADDED_COLUMNS, "schema_version"):
            assert after[table] == before[table], table
    assert get_store().integrity_check() == "ok"


@pytest.fixture
def too_new_home(pipekit_home: Path) -> Path:
    """A store whose schema_version says 999, closed and checkpointed."""
    shutil.copytree(STORE_V1, pipekit_home, dirs_exist_ok=True)
    conn = sqlite3.connect(pipekit_home / "pipekit.db")
    conn.execute("INSERT INTO schema_version (version, name, applied) "
                 "VALUES (999, '0999_future', 0)")
    conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert not any(pipekit_home.glob("pipekit.db-*"))
    return pipekit_home


def _snapshot(home: Path) -> dict[str, str]:
    return {str(p.relative_to(home)): sha256(p) for p in sorted(home.rglob("*"))
            if p.is_file()}


def test_newer_store_is_refused_and_left_untouched(too_new_home):
    db = too_new_home / "pipekit.db"
    before = _snapshot(too_new_home)
    with pytest.raises(StoreTooNew) as err:
        get_store()
    message = str(err.value)
    assert str(db) in message
    assert "999" in message and f"({migrate.newest_version()})" in message
    assert (err.value.found, err.value.known) == (999, migrate.newest_version())
    with pytest.raises(StoreTooNew):
        Store(upgrade=False)
    assert sha256(db) == before["pipekit.db"]
    after = _snapshot(too_new_home)
    # The read-only version probe may leave SQLite's WAL side files (an empty -wal and the
    # -shm index) next to a WAL-mode store; every existing file is byte-for-byte unchanged.
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) <= {"pipekit.db-wal", "pipekit.db-shm"}
    wal = too_new_home / "pipekit.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


@pytest.mark.parametrize("command", [["db", "status"], ["agent", "--queue", "default"]],
                         ids=["db status", "agent"])
def test_cli_refuses_newer_store_with_one_line_and_no_traceback(too_new_home, command):
    db = too_new_home / "pipekit.db"
    before = sha256(db)
    proc = subprocess.run([str(PIPEKIT), *command], capture_output=True, text=True,
                          timeout=60, env={**__import__("os").environ,
                                           "PIPEKIT_HOME": str(too_new_home)})
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error:") and "999" in lines[0] and str(db) in lines[0]
    assert sha256(db) == before


def test_refused_under_the_lock_too(too_new_home):
    """A store that turns newer between the check on open and the upgrade is refused by the
    re-check inside the upgrade's transaction."""
    conn = sqlite3.connect(too_new_home / "pipekit.db")
    conn.execute("DELETE FROM schema_version WHERE version = 999")
    conn.commit()
    conn.close()
    store = Store(upgrade=False)  # version 1: opens fine
    conn = sqlite3.connect(too_new_home / "pipekit.db")
    conn.execute("INSERT INTO schema_version VALUES (999, '0999_future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreTooNew):
        store.upgrade()
    assert [r[0] for r in dump(too_new_home / "pipekit.db")["schema_version"]] == [1, 999]
    store.close()


# -- tables.py describes what the migrations build ----------------------------------------------


def _schema(conn: sqlite3.Connection) -> dict[str, dict]:
    tables = [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
        "AND name != 'schema_version' ORDER BY name")]
    out = {}
    for name in tables:
        indexes = {}
        for _, iname, unique, origin, _partial in conn.execute(f"PRAGMA index_list({name})"):
            cols = tuple(r[2] for r in conn.execute(f"PRAGMA index_info({iname})"))
            indexes[cols] = (bool(unique), origin)
        out[name] = {
            "columns": conn.execute(f"PRAGMA table_info({name})").fetchall(),
            "foreign_keys": sorted(r[2:] for r in
                                   conn.execute(f"PRAGMA foreign_key_list({name})")),
            "indexes": indexes,
        }
    return out


def test_tables_py_equals_the_schema_migrations_build(store, tmp_path):
    migrated = sqlite3.connect(store.settings.sqlite_path)
    scratch_path = tmp_path / "scratch.db"
    scratch = peewee.SqliteDatabase(str(scratch_path))
    with scratch.bind_ctx(t.ALL_TABLES):
        scratch.create_tables(t.ALL_TABLES)
    scratch.close()
    direct = sqlite3.connect(scratch_path)
    try:
        from_migrations, from_tables = _schema(migrated), _schema(direct)
    finally:
        migrated.close()
        direct.close()
    assert sorted(from_tables) == sorted(from_migrations)
    for name in from_tables:
        assert from_tables[name] == from_migrations[name], name
