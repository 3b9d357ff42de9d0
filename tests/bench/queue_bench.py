"""W6: queue throughput — 8 `pipekit agent` processes drain 2,000 queued no-op function tasks
(each run in the agent's own process, as agents run function tasks), against the floor: 8
processes claiming and completing rows of a bare SQLite table with `BEGIN IMMEDIATE`.

``python queue_bench.py [TASKS] [AGENTS]`` prints one JSON object: one floor run, then one
pipekit run (``run.py`` starts one such process per repetition, each with a fresh store).
Throughput is counted from the first claim to the last completion (the agents' start-up is
outside it, as the floor's is); every task must end `completed` exactly once.

With ``PIPEKIT_DB=postgresql://…`` the same run goes against PostgreSQL (the floor stays
SQLite's: it is the same bare loop PERFORMANCE.md defines).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: pipeline_helpers

QUEUE = "bench-w6"


def noop():
    return None


def _floor_worker(path: str, worker: int, out: multiprocessing.Queue) -> None:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("PRAGMA busy_timeout=60000")
    conn.execute("PRAGMA synchronous=NORMAL")
    done = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT id FROM q WHERE status = 'queued' ORDER BY id LIMIT 1"
                           ).fetchone()
        if row is None:
            conn.execute("COMMIT")
            break
        conn.execute("UPDATE q SET status = 'running', worker = ?, claimed = ? WHERE id = ?",
                     (worker, time.time(), row[0]))
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE q SET status = 'done', ended = ? WHERE id = ?",
                     (time.time(), row[0]))
        conn.execute("COMMIT")
        done += 1
    out.put(done)


def floor(tasks: int, workers: int) -> float:
    """Tasks per second of the bare claim/complete loop."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "q.db")
        conn = sqlite3.connect(path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE q (id INTEGER PRIMARY KEY, status TEXT, worker INTEGER, "
                     "claimed REAL, ended REAL)")
        conn.execute("CREATE INDEX q_status ON q (status)")
        conn.executemany("INSERT INTO q (status) VALUES ('queued')", [()] * tasks)
        conn.commit()
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        procs = [ctx.Process(target=_floor_worker, args=(path, i, out)) for i in range(workers)]
        for p in procs:
            p.start()
        total = sum(out.get(timeout=600) for _ in procs)
        for p in procs:
            p.join()
        first, last = conn.execute("SELECT MIN(claimed), MAX(ended) FROM q").fetchone()
        assert total == tasks, (total, tasks)
        assert conn.execute("SELECT COUNT(*) FROM q WHERE status = 'done'").fetchone()[0] \
            == tasks
        conn.close()
        return tasks / (last - first)


def pipekit_queue(tasks: int, agents: int) -> dict[str, float]:
    """Tasks per second of ``agents`` agent processes over ``tasks`` queued no-op tasks."""
    import cloudpickle
    from pipeline_helpers import function_task

    from pipekit import Task
    from pipekit.store import get_store

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    store = get_store()
    store.ensure_queue(QUEUE)
    ids = [function_task(noop, f"noop{i}") for i in range(tasks)]
    for task_id in ids:
        Task.enqueue(task_id, QUEUE)
    cli = str(Path(sys.executable).with_name("pipekit"))
    procs = [subprocess.Popen([cli, "agent", "--queue", QUEUE, "--exit-when-idle", "1",
                               "--in-process"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(agents)]
    errors = [p.communicate(timeout=1800)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    infos = [store.get_task(i) for i in ids]
    statuses = {i.status for i in infos}
    assert statuses == {"completed"}, statuses
    first = min(i.started for i in infos)
    last = max(i.ended for i in infos)
    return {"tasks_per_s": tasks / (last - first), "seconds": last - first,
            "locked": sum(e.lower().count("database is locked") for e in errors)}


def main() -> None:
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    agents = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    base = floor(tasks, agents)  # (the floor first, then pipekit: one pair, one moment)
    with tempfile.TemporaryDirectory(prefix="pipekit-bench-w6-") as tmp:
        os.environ.setdefault("PIPEKIT_HOME", tmp)
        import pipekit

        # (configure(home=) alone would drop a PIPEKIT_DB naming PostgreSQL)
        settings = pipekit.configure(home=os.environ["PIPEKIT_HOME"],
                                     db=os.environ.get("PIPEKIT_DB") or None)
        ours = pipekit_queue(tasks, agents)
    backend = "sqlite" if settings.sqlite_path is not None else "postgresql"
    print(json.dumps({"backend": backend, "tasks": tasks, "agents": agents, **ours,
                      "floor_tasks_per_s": base, "ratio": ours["tasks_per_s"] / base}))


if __name__ == "__main__":
    main()
