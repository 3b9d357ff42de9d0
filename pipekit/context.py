"""Who runs here: this process's task, each thread's scope, the runs being driven, the worker id.

A process may be a script that called ``Task.init`` (its *process task*), a worker launched to
execute one task (``PIPEKIT_TASK_ID``), or a pipeline controller driving runs whose steps may
execute in its own threads. "The current task" therefore depends on the thread asking:

1. a thread executing a function step, or running a pipeline's logic, has a :class:`Scope`;
2. else the process task, or the task the process was launched for;
3. else the most recent run this process drives (its logic runs as the controller task).

This module only keeps these facts; the objects it holds (``Task`` handles, runners) belong
to the modules above it, which is why it imports nothing but :mod:`pipekit.config` and
:mod:`pipekit.models`.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import attrs

from .config import LEASE_ENV, OWNER_ENV, TASK_ENV
from .models import Lease

__all__ = ["Scope", "active_run", "current_task_id", "launched_task_id", "lease_for", "pop_run",
           "process_task", "push_run", "scope", "set_process_task", "thread_scope",
           "worker_id"]


@attrs.frozen
class Scope:
    """What one thread runs as.

    :param task_id: the function step it executes, or the controller task whose pipeline
        logic it runs.
    :param controller: it runs a pipeline's logic: no step is current, even inside a step
        that started the pipeline.
    :param handle: the ``Task`` object the scope was opened with (what
        ``Task.current_task()`` returns in this thread).
    """

    task_id: str
    controller: bool = False
    handle: Any = None


_thread = threading.local()


@contextmanager
def scope(task_id: str, *, controller: bool = False, handle: Any = None) -> Iterator[Scope]:
    """Make this thread run as ``task_id`` for the ``with`` block (scopes nest)."""
    previous = getattr(_thread, "scope", None)
    current = Scope(task_id, controller, handle)
    _thread.scope = current
    try:
        yield current
    finally:
        _thread.scope = previous


def thread_scope() -> Scope | None:
    return getattr(_thread, "scope", None)


# -- the process's task ---------------------------------------------------------------------------

_process_task: Any = None


def process_task() -> Any:
    """The ``Task`` this process runs as (``Task.init``, or the task it was launched for), once
    something asked for it; ``None`` before.
    """
    return _process_task


def set_process_task(task: Any) -> None:
    global _process_task
    _process_task = task


def launched_task_id() -> str | None:
    """The task this process was started to execute (``PIPEKIT_TASK_ID``), if any."""
    return os.environ.get(TASK_ENV) or None


def lease_for(task_id: str) -> Lease | None:
    """The lease under which this process executes ``task_id``: set by the agent that
    claimed it (``PIPEKIT_LEASE``), for that task only (a pipeline run inside the step makes
    tasks of its own, which no lease covers).
    """
    raw = os.environ.get(LEASE_ENV)
    if not raw or task_id != launched_task_id():
        return None
    worker, _, attempt = raw.rpartition("#")
    return Lease(worker, int(attempt)) if worker and attempt.isdigit() else None


def lease_env(lease: Lease) -> str:
    """``PIPEKIT_LEASE``'s value for ``lease`` (what :func:`lease_for` reads back)."""
    return f"{lease.worker}#{lease.attempt}"


# -- runs this process drives -------------------------------------------------------------------

_runs: list[Any] = []
_runs_lock = threading.Lock()


def push_run(run: Any) -> None:
    with _runs_lock:
        _runs.append(run)


def pop_run(run: Any) -> None:
    with _runs_lock:
        if run in _runs:
            _runs.remove(run)


def active_run() -> Any:
    """The most recently started run this process is driving, if any."""
    with _runs_lock:
        return _runs[-1] if _runs else None


def current_task_id() -> str | None:
    """The id of the task this thread runs as (see the module docstring for the order)."""
    current = thread_scope()
    if current is not None:
        return current.task_id
    if _process_task is not None:
        return str(_process_task.id)
    launched = launched_task_id()
    if launched:
        return launched
    run = active_run()
    return getattr(run, "run_id", None) if run is not None else None


def worker_id() -> str:
    """``host:pid``: how a task records the process that runs it."""
    return f"{socket.gethostname()}:{os.getpid()}"


#: how a resuming process marks itself as a run's owner (``host:pid (resume)``)
RESUME_MARK = " (resume)"


def run_owner(run_id: str) -> str:
    """Who this process drives run ``run_id`` as: the owner ``pipekit resume`` took it for
    (``PIPEKIT_RUN_OWNER``, when this process was started to execute that run), else this
    process (:func:`worker_id`), as for any other run (one nested in a step, say).
    """
    resumed = os.environ.get(OWNER_ENV)
    return resumed if resumed and launched_task_id() == run_id else worker_id()


def owner_process(owner: str) -> tuple[str, int] | None:
    """``(host, pid)`` of an owner string, if it names one."""
    host, _, pid = owner.removesuffix(RESUME_MARK).rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else None
