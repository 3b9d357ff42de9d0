"""Copy a process's stdout and stderr into a task's log file while still printing them.

Used by ``Task.init`` (Python-level tee of ``sys.stdout``/``sys.stderr``) and by the
worker, which pipes a child's output into the log (see :func:`pump`).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import IO, TextIO

from .redact import Redactor, redact_bytes


def open_log(path: Path) -> IO[bytes]:
    """Open a task log for appending, creating it (mode 0600) and its folder."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "ab", buffering=0)


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
