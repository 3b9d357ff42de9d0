"""A store that cannot be used says why in one line, and is left as it was: a PIPEKIT_HOME
that is a file, a read-only store (readable by ls/show/logs/export; writes refused), a full
disk, and ``export -o`` into a folder that does not exist (issue 12, item 5).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pipeline_helpers import PIPEKIT, one_error, pk

from pipekit import PipelineController
from pipekit.errors import StoreError
from pipekit.store import get_store, reset_store


def at(home: Path) -> dict[str, str]:
    """The environment of a command on the store at ``home``."""
    return {"PIPEKIT_HOME": str(home)}


def add(a, b):
    return a + b


def a_run() -> str:
    pipe = PipelineController(name="tiny", project="store-errors", version="1.0.0")
    pipe.add_function_step("add", add, {"a": 1, "b": 2}, ["total"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor="thread")
    assert pipe.id is not None
    return pipe.id


def test_a_pipekit_home_that_is_a_file_is_named(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("not a folder")
    assert one_error(pk("runs", "ls", env=at(home)), alone=True) == (
        f"Error: PIPEKIT_HOME={home} is a file, not a folder: point it at a folder (one that "
        "does not exist yet is created)")
    below = home / "store"
    assert one_error(pk("runs", "ls", env=at(below)), alone=True) == (
        f"Error: cannot create the store's folder PIPEKIT_HOME={below}: Not a directory")
    assert home.read_text() == "not a folder"


def test_a_full_disk_says_so_and_names_the_store() -> None:
    store = get_store()
    run = a_run()
    # SQLite's own limit on the file's size: a write past it fails as on a full disk.
    pages = store.db.execute_sql("PRAGMA page_count").fetchone()[0]
    store.db.execute_sql(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError) as raised:
        for _ in range(100):
            store.create_task(project="p", name="x" * 4000, type="training")
    assert str(raised.value) == (
        f"the disk is full: cannot write to the store {store.settings.sqlite_path} (nothing "
        "was written; free some space and run the command again)")
    assert store.integrity_check() == "ok"
    assert store.get_task(run).status == "completed"


def test_export_into_a_missing_folder_names_the_folder(tmp_path: Path) -> None:
    run = a_run()
    target = tmp_path / "missing" / "run.md"
    assert one_error(pk("export", run, "-o", str(target)), alone=True) == (
        f"Error: cannot write {target}: no folder {target.parent}")
    assert not target.parent.exists()


def _read_only(home: Path, *args: str) -> subprocess.CompletedProcess:
    """``pipekit args`` on the store at ``home`` made read-only: by its permissions, or, for
    root (whom permissions do not stop), by a read-only bind mount in a mount namespace.
    """
    if os.geteuid() != 0:
        for path in [home, *home.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o222)
        try:
            return pk(*args, env=at(home))
        finally:
            for path in [home, *home.rglob("*")]:
                path.chmod(path.stat().st_mode | 0o200)
    if not shutil.which("unshare") or subprocess.run(
            ["unshare", "-m", "true"], capture_output=True).returncode != 0:
        pytest.skip("running as root without mount namespaces (unshare -m): cannot make the "
                    "store read-only")
    script = f'mount --bind -o ro "{home}" "{home}" && exec "$@"'
    return subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", PIPEKIT, *args],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PIPEKIT_HOME": str(home)})


def test_a_read_only_store_is_read_and_refuses_writes_saying_so() -> None:
    run = a_run()
    store = get_store()
    home = store.settings.home
    step = store.find_tasks(parent=run)[0].id
    reset_store()  # (the store is closed, as by a process that ended)
    before = {p: p.read_bytes() for p in home.rglob("*") if p.is_file()}
    listed = _read_only(home, "runs", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    assert run in listed.stdout
    for args in (["runs", "show", run], ["tasks", "show", step], ["logs", run],
                 ["export", run]):
        shown = _read_only(home, *args)
        assert shown.returncode == 0, (args, shown.stderr)
    assert one_error(_read_only(home, "tasks", "clone", step), alone=True) == (
        f"Error: the store {home / 'pipekit.db'} is read-only: this needs to write to it (ls, "
        "show, logs and export only read)")
    assert {p: p.read_bytes() for p in home.rglob("*") if p.is_file()} == before
