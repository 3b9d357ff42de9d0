"""``example-serial``: a sample third-party executor for pipekit.

It runs one job at a time, each in a fresh ``python -m pipekit.worker --quiet TASK``
subprocess in its own session, in the order they were submitted. It is built only on
pipekit's public API:

* :data:`pipekit.hookimpl` and the ``pipekit_executors(register)`` hook;
* :class:`pipekit.executor.Job` / :class:`~pipekit.executor.Outcome` and the helpers
  :func:`~pipekit.executor.outcome_of`, :func:`~pipekit.executor.settle` and
  :func:`~pipekit.executor.stop`;
* :func:`pipekit.worker.kill_tree` and :func:`pipekit.worker.describe_exit`.

The worker process owns the task's final status (``completed``, ``failed`` or ``stopped``)
and its log; the executor only starts it, watches it and kills it. There is no background
thread: the queue advances whenever :meth:`SerialExecutor.submit` or
:meth:`SerialExecutor.poll` is called, which pipekit's run loop does continuously.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import deque
from typing import Any

import pipekit
from pipekit.executor import Job, Outcome, outcome_of, settle, stop
from pipekit.worker import describe_exit, kill_tree

__all__ = ["SerialExecutor"]

NAME = "example-serial"


class _Handle:
    """One submitted job: waiting (no process yet), running, or ended (``outcome`` set)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.proc: subprocess.Popen[bytes] | None = None
        self.outcome: Outcome | None = None

    def __repr__(self) -> str:
        state = "ended" if self.outcome else "running" if self.proc else "waiting"
        return f"<{NAME} job {self.job.task_id} {state}>"


class SerialExecutor:
    """Run jobs one after another, each in its own ``python -m pipekit.worker`` process.

    :param max_workers: accepted, as every executor factory must; ignored (one at a time).
    :param python: the interpreter for the worker processes (default: this one).
    """

    def __init__(self, max_workers: int | None = None, python: str | None = None) -> None:
        self._python = python or sys.executable
        self._waiting: deque[_Handle] = deque()
        self._current: _Handle | None = None
        self._lock = threading.Lock()

    # -- the executor contract ------------------------------------------------------------

    def submit(self, job: Job) -> _Handle:
        """Queue ``job``; it starts at once if nothing else is running."""
        handle = _Handle(job)
        with self._lock:
            self._waiting.append(handle)
            self._advance()
        return handle

    def poll(self, handle: _Handle) -> Outcome | None:
        """The job's outcome once its worker process has ended, else ``None``."""
        with self._lock:
            self._advance()
            return handle.outcome

    def cancel(self, handle: _Handle) -> None:
        """Stop the job: mark its task ``stopped``, then kill its process tree if it runs."""
        with self._lock:
            if handle.outcome is not None:
                return
            stop(handle.job.task_id)  # first, so the kill is not recorded as a failure
            if handle.proc is None:
                self._waiting.remove(handle)
            else:
                kill_tree(handle.proc.pid)
                handle.proc.wait()
                self._current = None
            handle.outcome = outcome_of(handle.job.task_id) or Outcome("stopped")
            self._advance()

    def shutdown(self, wait: bool = True) -> None:
        """Drop jobs that never started (their tasks end ``stopped``); with ``wait``, also
        wait for the running one.
        """
        with self._lock:
            while self._waiting:
                handle = self._waiting.popleft()
                stop(handle.job.task_id, reason=f"{NAME} executor shut down before it ran")
                handle.outcome = outcome_of(handle.job.task_id) or Outcome("stopped")
            current = self._current
        if wait and current is not None and current.proc is not None:
            current.proc.wait()
            self.poll(current)

    # -- internals --------------------------------------------------------------------------

    def _advance(self) -> None:
        """Collect the running job if its process ended; start the next one if idle."""
        current = self._current
        if current is not None and current.proc is not None:
            code = current.proc.poll()
            if code is None:
                return
            # The worker gives the task its final status; if it died before it could (a
            # signal, an interpreter crash), settle the task from the exit code.
            current.outcome = outcome_of(current.job.task_id) or settle(
                current.job.task_id, describe_exit(code))
            self._current = None
        while self._current is None and self._waiting:
            handle = self._waiting.popleft()
            try:
                handle.proc = subprocess.Popen(
                    [self._python, "-m", "pipekit.worker", "--quiet", handle.job.task_id],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                handle.outcome = settle(handle.job.task_id,
                                        f"{NAME} could not start a worker: {exc}")
                continue
            self._current = handle


@pipekit.hookimpl
def pipekit_executors(register: Any) -> None:
    register(NAME, SerialExecutor)
