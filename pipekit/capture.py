"""Copy a process's stdout and stderr into a task's log file while still printing them.

Used by ``Task.init`` (Python-level tee of ``sys.stdout``/``sys.stderr``) and by the
worker, which pipes a child's output into the log (see :func:`pump`). On a shared store
(a database server), every log this process has open is copied into the database as it
grows (:class:`_Shipper`), so other machines can read and follow it.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from pathlib import Path
from typing import IO, TextIO

from .config import get_settings
from .redact import Redactor, redact_bytes
from .store import get_store

log = logging.getLogger(__name__)

#: seconds between copies of a growing log into a shared database
SHIP_EVERY = 0.5


def open_log(path: Path) -> IO[bytes]:
    """Open a task log for appending, creating it (mode 0600) and its folder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    if not get_settings().shared:
        return os.fdopen(fd, "ab", buffering=0)
    return _ShippedLog(fd, path)


class _ShippedLog(io.FileIO):
    """A log file whose bytes are copied into the shared database while it is open, and
    once more when it closes.
    """

    def __init__(self, fd: int, path: Path) -> None:
        super().__init__(fd, "ab")
        self.task_id = path.stem
        _shipper.watch(self.task_id)

    def close(self) -> None:
        if not self.closed:
            super().close()
            _shipper.unwatch(self.task_id)


class _Shipper:
    """One thread per process that copies its open logs into the shared database every
    :data:`SHIP_EVERY` seconds (:meth:`pipekit.store.Store.ship_log`). A failed copy (the
    database restarting) is retried on the next round; ``finish_task`` copies the rest.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}  # task id -> open log files
        self._pace = threading.Event()  # never set: its timed wait is the copying pace
        self._thread: threading.Thread | None = None

    def watch(self, task_id: str) -> None:
        with self._lock:
            self._open[task_id] = self._open.get(task_id, 0) + 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="pipekit-log-shipper",
                                                daemon=True)
                self._thread.start()

    def unwatch(self, task_id: str) -> None:
        with self._lock:
            left = self._open.get(task_id, 1) - 1
            if left > 0:
                self._open[task_id] = left
            else:
                self._open.pop(task_id, None)
        self._ship(task_id)

    def _run(self) -> None:
        while True:
            self._pace.wait(SHIP_EVERY)
            with self._lock:
                tasks = list(self._open)
            for task_id in tasks:
                self._ship(task_id)

    @staticmethod
    def _ship(task_id: str) -> None:
        try:
            get_store().ship_log(task_id)
        except Exception:  # the next round (or finish_task) copies what this one could not
            log.debug("could not copy the log of task %s yet", task_id, exc_info=True)


_shipper = _Shipper()


def _after_fork_in_child() -> None:
    # The parent's shipper thread does not exist here: start afresh.
    global _shipper
    _shipper = _Shipper()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Tee:
    """A text stream that writes to the stream it replaces and copies the text to a log
    (:meth:`_copy`); everything else is the original stream's.
    """

    def __init__(self, original: TextIO, log: IO[bytes] | None = None,
                 lock: threading.Lock | None = None) -> None:
        self._original = original
        self._log = log
        self._lock = lock or threading.Lock()

    def write(self, text: str) -> int:
        n = self._original.write(text)
        if text:
            try:
                self._copy(redact_bytes(text.encode("utf-8", "replace")))
            except ValueError:  # the log was closed (the step ended, or interpreter shutdown)
                pass
        return n

    def _copy(self, data: bytes) -> None:
        assert self._log is not None
        with self._lock:
            self._log.write(data)

    def flush(self) -> None:
        self._original.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self._original, name)


class StreamCapture:
    """Tee ``sys.stdout`` and ``sys.stderr`` into ``path`` until :meth:`stop`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._log = open_log(path)
        self._lock = threading.Lock()
        self._saved = (sys.stdout, sys.stderr)
        sys.stdout = Tee(sys.stdout, self._log, self._lock)  # type: ignore[assignment]
        sys.stderr = Tee(sys.stderr, self._log, self._lock)  # type: ignore[assignment]

    def write_log(self, text: str) -> None:
        """Write to the log only (e.g. a traceback already printed elsewhere)."""
        with self._lock:
            self._log.write(redact_bytes(text.encode("utf-8", "replace")))

    def stop(self) -> int:
        """Restore the streams, close the log and return its size."""
        if isinstance(sys.stdout, Tee):
            sys.stdout.flush()
        sys.stdout, sys.stderr = self._saved
        with self._lock:
            self._log.close()
        return self.path.stat().st_size


def pump(stream: IO[bytes], log_path: Path, echo: IO[bytes] | None = None) -> int:
    """Copy a child's output to its task log (and ``echo``) until EOF, secrets this process
    knows masked (:mod:`pipekit.redact`); returns bytes read.
    """
    total = 0
    redactor = Redactor()
    with open_log(log_path) as log:
        for chunk in iter(lambda: stream.read1(65536) if hasattr(stream, "read1")
                          else stream.read(65536), b""):
            total += len(chunk)
            _write(redactor.feed(chunk), log, echo)
        _write(redactor.flush(), log, echo)
    return total


def _write(data: bytes, log: IO[bytes], echo: IO[bytes] | None) -> None:
    if not data:
        return
    log.write(data)
    if echo is not None:
        echo.write(data)
        echo.flush()


# -- per-thread capture, for steps that run inside the controller process ---------------------

_route = threading.local()
_router_lock = threading.Lock()


class _Router(Tee):
    """Stands in for ``sys.stdout``/``sys.stderr``: writes go to the stream it replaced and,
    when the writing thread is running a step, to that step's log too.
    """

    def _copy(self, data: bytes) -> None:
        log = getattr(_route, "log", None)
        if log is not None:
            log.write(data)


def _install_router() -> None:
    with _router_lock:
        if not isinstance(sys.stdout, _Router):
            sys.stdout = _Router(sys.stdout)  # type: ignore[assignment]
        if not isinstance(sys.stderr, _Router):
            sys.stderr = _Router(sys.stderr)  # type: ignore[assignment]


class ThreadCapture:
    """Copy what the current thread prints into ``path`` until :meth:`stop`.

    Steps run by the inline and thread executors share the process's streams; each thread's
    output goes to its own step's log, and still reaches the console. The log file is
    created on the first write, so a silent step costs no file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        _install_router()
        self._log: IO[bytes] | None = None
        self._previous = getattr(_route, "log", None)
        _route.log = self

    def write(self, data: bytes) -> None:
        if self._log is None:
            self._log = open_log(self.path)
        self._log.write(redact_bytes(data))

    def write_log(self, text: str) -> None:
        self.write(text.encode("utf-8", "replace"))

    def stop(self) -> int | None:
        """Stop copying; returns the log's size, or ``None`` if nothing was written."""
        _route.log = self._previous
        if self._log is None:
            return None
        self._log.close()
        return self.path.stat().st_size
