"""Floors shared by the bench scripts: plain Python doing a workload's work with the least
honest machinery (PERFORMANCE.md), plus the timing helpers. Imports nothing from pipekit.
"""

from __future__ import annotations

import hashlib
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def timed_run(cmd: list[str]) -> float:
    """Wall time of running ``cmd`` to its end."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - start


def summarize(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the table reports of interleaved (floor, pipekit) pairs, each a dict with
    ``floor`` and ``ours`` (the same unit, e.g. seconds per step, or tasks per second):
    the median of each side, the ratio of the medians, and the lowest and highest ratio of
    a pair (one floor run next to one pipekit run).
    """
    ours = statistics.median(p["ours"] for p in pairs)
    floor = statistics.median(p["floor"] for p in pairs)
    ratios = [p["ours"] / p["floor"] for p in pairs]
    return {"ours": ours, "floor": floor, "ratio": ours / floor, "pair_min": min(ratios),
            "pair_max": max(ratios), "pairs": len(pairs)}


def interleaved(floor: Callable[[], float], ours: Callable[[], dict[str, Any]],
                repeat: int) -> list[dict[str, Any]]:
    """``repeat`` pairs: the floor, then pipekit, then the floor again, ... (so a change in
    the machine's load meets both sides alike). ``ours`` returns a dict holding ``ours``
    (and whatever else a workload records); each pair is that dict plus ``floor``.
    """
    pairs = []
    for _ in range(repeat):
        f = floor()
        pairs.append({"floor": f, **ours()})
    return pairs


def sqlite_floor(n: int) -> float:
    """Per-step seconds of the W1 floor: a plain loop committing one row insert and one
    update per step (autocommit) to SQLite in WAL mode with ``synchronous=NORMAL``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("PRAGMA synchronous=normal")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, status TEXT)")
        start = time.perf_counter()
        for i in range(n):
            cur = conn.execute("INSERT INTO t (name, status) VALUES (?, 'running')", (f"s{i}",))
            conn.execute("UPDATE t SET status='done' WHERE id=?", (cur.lastrowid,))
        elapsed = time.perf_counter() - start
        conn.close()
    return elapsed / n


def sqlite_lookup_floor(n: int) -> float:
    """Per-lookup seconds of the W3 floor: a plain ``sqlite3`` WAL database holding ``n``
    tasks keyed by a 64-hex-digit cache key (indexed), and one
    ``SELECT id FROM t WHERE key = ? AND status IN (...) LIMIT 1`` per step, every key found.
    The table is built and committed before the clock starts.
    """
    keys = [hashlib.blake2b(str(i).encode(), digest_size=32).hexdigest() for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("PRAGMA synchronous=normal")
        conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, key TEXT, status TEXT)")
        conn.execute("CREATE INDEX t_key ON t (key)")
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (id, key, status) VALUES (?, ?, 'completed')",
                         ((f"task{i:08d}", key) for i, key in enumerate(keys)))
        conn.execute("COMMIT")
        query = ("SELECT id FROM t WHERE key = ? AND status IN ('completed', 'published') "
                 "LIMIT 1")
        found = 0
        start = time.perf_counter()
        for key in keys:
            row = conn.execute(query, (key,)).fetchone()
            found += row is not None
        elapsed = time.perf_counter() - start
        conn.close()
    assert found == n, f"floor found {found} of {n} keys"
    return elapsed / n


def python_import_floor(module: str = "pipekit", count: int = 1) -> float:
    """Wall time of ``count`` sequential ``python -c "import <module>"`` processes."""
    start = time.perf_counter()
    for _ in range(count):
        subprocess.run([sys.executable, "-c", f"import {module}"], check=True,
                       capture_output=True)
    return time.perf_counter() - start


#: W2: one source fans out to this many steps, each sleeping this long, on this many threads
W2_FAN, W2_SLEEP, W2_WORKERS = 50, 0.010, 8
#: W5: the handed-off array's length (100 MiB of float64)
W5_LEN = 100 * 2**20 // 8

_W5_SAVE = ("import sys, numpy as np; "
            f"np.save(sys.argv[1], np.arange({W5_LEN}, dtype=np.float64))")
_W5_LOAD = "import sys, numpy as np; a = np.load(sys.argv[1]); float(a[-1])"


def w2_floor() -> float:
    """W2's floor: ``ThreadPoolExecutor(W2_WORKERS)`` over the same sleeps; seconds."""
    start = time.perf_counter()
    with ThreadPoolExecutor(W2_WORKERS) as pool:
        list(pool.map(lambda _: time.sleep(W2_SLEEP), range(W2_FAN)))
    return time.perf_counter() - start


def w5_floor(python: str = sys.executable, folder: Path | None = None) -> float:
    """W5's floor: one ``python`` process ``np.save``s the array to a file (in ``folder``:
    the disk pipekit's run writes to), another ``np.load``s it (as pipekit runs two step
    processes); seconds.
    """
    with tempfile.TemporaryDirectory(prefix="pipekit-bench-w5-", dir=folder) as tmp:
        path = str(Path(tmp) / "floor.npy")
        start = time.perf_counter()
        subprocess.run([python, "-c", _W5_SAVE, path], check=True)
        subprocess.run([python, "-c", _W5_LOAD, path], check=True)
        return time.perf_counter() - start
