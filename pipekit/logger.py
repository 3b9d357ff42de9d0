"""``Logger``: scalars, single values, text and tables reported by a task.

Scalars are buffered per process and written in batches (every 250 ms or 500 points, and at
exit), so many steps reporting at once hold the write lock briefly and rarely. Reads through
the task API flush first, so a task always sees its own reports.
"""

from __future__ import annotations

import atexit
import csv as csvmod
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from . import context
from .capture import open_log
from .errors import PipekitError
from .plugin_manager import has_impls, notify
from .store import get_store

log = logging.getLogger("pipekit.logger")

FLUSH_INTERVAL = 0.25
FLUSH_POINTS = 500


class _ScalarBuffer:
    """Pending ``(title, series, iteration, value, ts)`` points of every task in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flushing = threading.RLock()  # one flush at a time (RLock: a hook may report)
        self._points: dict[str, list[tuple[str, str, int, float, float]]] = {}
        self._count = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, task_id: str, point: tuple[str, str, int, float, float]) -> None:
        with self._lock:
            self._points.setdefault(task_id, []).append(point)
            self._count += 1
            full = self._count >= FLUSH_POINTS
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pipekit-metrics",
                                                daemon=True)
                self._thread.start()
        if full:
            self.flush()

    def _run(self) -> None:
        while True:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # keep flushing later; the next flush retries the points
                log.exception("could not write metrics; will retry")
            with self._lock:
                if not self._points:
                    self._thread = None
                    return

    def flush(self, task_id: str | None = None) -> None:
        """Write pending points (of one task, or all) in one transaction per task.

        Waits for a flush already under way in another thread (it may hold this task's
        points), so when this returns every point added before the call is stored.
        """
        with self._flushing:
            self._flush(task_id)

    def _flush(self, task_id: str | None) -> None:
        with self._lock:
            if task_id is None:
                batches, self._points = self._points, {}
            else:
                batches = {task_id: self._points.pop(task_id, [])}
            self._count = sum(len(v) for v in self._points.values())
        if not any(batches.values()):
            return  # nothing to write: do not open (or fail to open) the store
        store = get_store()
        for tid, points in batches.items():
            if not points:
                continue
            try:
                store.add_scalars(tid, points)
            except Exception:
                with self._lock:  # put them back so nothing is lost
                    self._points.setdefault(tid, [])[:0] = points
                    self._count += len(points)
                raise
            if has_impls("pipekit_metric_reported"):
                info = store.get_task(tid)
                for title, series, iteration, value, _ in points:
                    notify("pipekit_metric_reported", task=info, title=title, series=series,
                           iteration=iteration, value=value)


_buffer = _ScalarBuffer()


def flush_metrics(task_id: str | None = None) -> None:
    if _buffer._pid != os.getpid():
        return
    _buffer.flush(task_id)


def _reset_after_fork() -> None:
    global _buffer
    _buffer = _ScalarBuffer()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(lambda: flush_metrics())


class Logger:
    """Report metrics and text for one task (ClearML's ``Logger``)."""

    def __init__(self, task_id: str) -> None:
        self._task_id = task_id

    @classmethod
    def current_logger(cls) -> Logger:
        """The logger of this process's current task (``Task.init`` or an executing step)."""
        task_id = context.current_task_id()
        if task_id is None:
            raise PipekitError("no current task: call Task.init() first")
        return cls(task_id)

    def report_scalar(self, title: str, series: str, value: float, iteration: int = 0) -> None:
        """Record ``value`` of ``title/series`` at ``iteration``."""
        _buffer.add(self._task_id, (str(title), str(series), int(iteration), float(value),
                                    time.time()))

    def report_single_value(self, name: str, value: float) -> None:
        """Record a single named number (a summary metric such as accuracy)."""
        get_store().set_single_values(self._task_id, {str(name): float(value)})

    def report_text(self, msg: str, level: int = logging.INFO, print_console: bool = True
                    ) -> None:
        """Write a line to the task's log (and the console) and keep it as a text report."""
        text = str(msg)
        if print_console and context.current_task_id() == self._task_id:
            print(text)  # the console is captured into this task's log
        else:
            if print_console:
                print(text)
            with open_log(get_store().log_path(self._task_id)) as fh:
                fh.write((text + "\n").encode())
        get_store().add_report(self._task_id, "text", text)

    def report_table(self, title: str, series: str, iteration: int | None = None,
                     table_plot: Any = None, csv: str | None = None, url: str | None = None,
                     extra_layout: Any = None) -> None:
        """Record a table: a pandas DataFrame, a list of rows, or a CSV file/URL."""
        if table_plot is None and csv is None and url is None:
            raise ValueError("report_table needs table_plot, csv or url")
        pd = sys.modules.get("pandas")
        if table_plot is not None and pd is not None and isinstance(table_plot, pd.DataFrame):
            content = table_plot.to_json(orient="split", date_format="iso")
        elif table_plot is not None:
            content = json.dumps({"data": [list(row) for row in table_plot]}, default=str)
        else:
            source = csv or url
            assert source is not None
            # lazy: storage pulls in urllib, tarfile and zipfile (~35 ms), which every step
            # process would pay at import; only a table read from a file or URL needs it
            from .storage import StorageManager

            with open(StorageManager.get_local_copy(source), newline="") as fh:
                rows = list(csvmod.reader(fh))
            content = json.dumps({"columns": rows[0] if rows else [], "data": rows[1:]})
        get_store().add_report(self._task_id, "table", content, title=str(title),
                               series=str(series), iteration=iteration)

    def flush(self, wait: bool = True) -> bool:
        flush_metrics(self._task_id)
        return True
