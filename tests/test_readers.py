"""RELIABILITY 2: readers during writes. The queue stress of RELIABILITY 1 (agents claiming
and completing queued tasks) and pipelines running, while two processes loop
``pipekit runs ls --json`` and ``runs show --json`` and the web UI's JSON API (``/api/runs``
and ``/api/runs/RUN``): writers see no errors, readers never an
error nor a run half-ended; afterwards a ``wal_checkpoint(TRUNCATE)`` leaves the WAL under
1 MB and ``integrity_check`` is ``ok``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cloudpickle
from pipeline_helpers import function_task

from pipekit import Task
from pipekit.store import get_store

SCRIPTS = Path(__file__).resolve().parent / "cli_scripts"
# agents load the step functions of this module by value: it is not importable there
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def noop():
    return None


def test_readers_during_the_queue_stress_and_pipelines_see_no_error_nor_a_half_ended_run(
        tmp_path: Path, agents, monkeypatch) -> None:
    monkeypatch.setenv("PIPEKIT_TEST_MARKS", str(tmp_path))
    monkeypatch.setenv("PIPEKIT_PROGRESS", "0")
    store = get_store()
    ids = [function_task(noop, f"noop{i}") for i in range(30)]  # ten for each agent
    readers = [subprocess.Popen([sys.executable, str(SCRIPTS / "reader.py"), str(tmp_path),
                                 how], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
               for how in ("cli", "ui")]
    try:
        for task_id in ids:
            Task.enqueue(task_id, "default")
        procs = [agents("--queue", "default", "--exit-when-idle", "2") for _ in range(3)]
        for _ in range(3):  # pipelines run and end while the readers read
            done = subprocess.run([sys.executable, str(SCRIPTS / "three_steps.py")],
                                  capture_output=True, text=True, timeout=120,
                                  env=dict(os.environ))
            assert done.returncode == 0, done.stderr
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        (tmp_path / "stop").touch()
        reader_out = [r.communicate(timeout=120)[0] for r in readers]
    assert all(p.returncode == 0 for p in procs), outputs
    for out in outputs:
        assert "locked" not in out.lower() and "Traceback" not in out, out
    assert {s for s, _ in store.task_statuses(ids).values()} == {"completed"}, \
        list(store.task_statuses(ids).values())[:3]
    reports = [p.read_text() for p in tmp_path.glob("reader.*.txt")]
    assert len(reports) == 2, reader_out
    for report in reports:
        head, *problems = report.splitlines()
        assert problems == [], problems
        assert int(head.split()[1]) > 10, report  # they did read, all along
    assert len(store.list_runs()) == 3
    store.db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = Path(f"{store.settings.sqlite_path}-wal")
    assert not wal.exists() or wal.stat().st_size < 1024 * 1024
    assert store.integrity_check() == "ok"

