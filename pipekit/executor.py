"""What an executor is: it submits a job, reports when it is done, and can cancel it.

An executor only runs tasks; the single scheduling loop (``runner.py``) decides what runs
when. Executors are plugins: ``pipekit_executors(register)`` registers ``(name, factory)``,
and :func:`make_executor` builds one by name. A job is "execute task X", so every executor
runs every kind of task the worker knows (:mod:`pipekit.worker`, whose ``run_job`` and
``run_job_in_child`` are the helpers an executor runs a job with).

What an executor can do is said by class attributes the runner reads through
:func:`capabilities`, never by its name:

* ``runs_in_caller`` — ``submit`` runs the job to its end in the calling thread (debug mode:
  one step at a time, breakpoints work, a decorated pipeline's components run as called);
* ``kills_trees`` — ``cancel`` kills every process a job started (else a function step
  running in one of the executor's threads can only be abandoned);
* ``uses_queues`` — jobs go to their queue (``Job.queue``) for agents to run: remote mode.

An executor that can tell when a job ends declares an attribute ``wake = None``: the run loop
sets it to a callable, and the executor calls it (from any thread) whenever a job finishes,
so its outcome is collected at once rather than at the loop's next poll (which backs off to
20 ms while nothing happens). ``poll`` stays the source of truth; ``wake`` only hurries it.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import attrs

from .errors import PluginError
from .finish import finish_task
from .models import Job, Outcome, Status
from .plugin_manager import Registry
from .store import get_store

__all__ = ["DEBUG_EXECUTOR", "REMOTE_EXECUTOR", "Capabilities", "Executor", "Job", "Outcome",
           "capabilities", "executor_names", "is_function_job", "main_hidden", "make_executor",
           "outcome_of",
           "settle", "stop", "worker_of"]

#: the executor debug mode uses (every step synchronous, in the caller's thread)
DEBUG_EXECUTOR = "inline"
#: the executor remote mode uses (steps go to their queues, agents run them)
REMOTE_EXECUTOR = "queue"


@runtime_checkable
class Executor(Protocol):
    """The executor contract (``pipekit.testing.ExecutorContract`` checks it)."""

    def submit(self, job: Job) -> Any:
        """Start ``job``; returns a handle for :meth:`poll` and :meth:`cancel`."""

    def poll(self, handle: Any) -> Outcome | None:
        """The job's outcome once its task is final, else ``None``. Never blocks long."""

    def cancel(self, handle: Any) -> None:
        """Stop the job: its task ends ``stopped`` and none of its processes survive."""

    def shutdown(self, wait: bool = True) -> None:
        """Release workers (after cancelling nothing: call :meth:`cancel` first)."""


@attrs.frozen
class Capabilities:
    """What an executor (class or instance) says it can do; absent attributes are ``False``."""

    runs_in_caller: bool = False
    kills_trees: bool = False
    uses_queues: bool = False


def capabilities(executor: Any) -> Capabilities:
    """The capabilities of an executor, its factory, or a registered executor's name."""
    if isinstance(executor, str):
        executor = _factory(executor)
    return Capabilities(runs_in_caller=bool(getattr(executor, "runs_in_caller", False)),
                        kills_trees=bool(getattr(executor, "kills_trees", False)),
                        uses_queues=bool(getattr(executor, "uses_queues", False)))


def _accept(name: str, factory: Any) -> tuple[str, Any]:
    if not isinstance(name, str) or not name or not callable(factory):
        raise TypeError(f"executor {name!r} with factory {factory!r}: "
                        "expected register(name: str, factory: callable)")
    return name, factory


_registry = Registry("pipekit_executors", "executor", _accept,
                     lambda found: {r.name: r.value for r in found})


def executor_names() -> list[str]:
    return sorted(_registry.get())


def _factory(name: str) -> Any:
    factories = _registry.get()
    if name not in factories:
        known = ", ".join(sorted(factories)) or "none: is pipekit installed with pip install -e .?"
        raise PluginError(f"unknown executor {name!r} (known: {known})", plugin=name)
    return factories[name]


def make_executor(name: str, **options: Any) -> Executor:
    """A new executor registered under ``name``, built with ``options``.

    :raises PluginError: no plugin registered ``name`` (the message lists those that did).
    """
    return _factory(name)(**options)  # type: ignore[no-any-return]


def outcome_of(task_id: str) -> Outcome | None:
    """The task's outcome if its status is final, else ``None``."""
    info = get_store().get_task(task_id)
    if Status(info.status).is_final:
        return Outcome(info.status, info.status_reason)
    return None


def is_function_job(job: Job) -> bool:
    """Whether the job calls a Python function in the executing process (rather than
    running a script as a child process it could kill).
    """
    return get_store().get_task(job.task_id).is_function


def worker_of(job: Job) -> str | None:
    """The ``host:pid`` that runs (or ran) the job's task, as the task records it."""
    return get_store().get_task(job.task_id).worker


def settle(task_id: str, reason: str) -> Outcome:
    """Fail a task whose executor ended without giving it a final status (e.g. a worker
    process killed by a signal); returns the task's outcome, whoever set it.
    """
    finish_task(task_id, Status.failed, reason)
    outcome = outcome_of(task_id)
    assert outcome is not None
    return outcome


def stop(task_id: str, reason: str = "stopped") -> None:
    """Mark a task ``stopped`` before killing its processes, so the kill cannot be recorded
    as a failure (final statuses are set once, conditionally).
    """
    finish_task(task_id, Status.stopped, reason)


_main_lock = threading.Lock()


@contextlib.contextmanager
def main_hidden() -> Iterator[None]:
    """Start worker processes without re-running the user's script in them.

    A spawned process normally imports the parent's ``__main__`` first, which re-runs a
    pipeline script that lacks an ``if __name__ == "__main__"`` guard (ClearML scripts rarely
    have one). Steps travel as cloudpickle and need nothing from ``__main__``, so executors
    start their processes (a pool's, a local cluster's) while ``__main__`` shows no file or
    spec.
    """
    main = sys.modules.get("__main__")
    if main is None:
        yield
        return
    with _main_lock:
        saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
        main.__dict__.pop("__file__", None)
        main.__dict__["__spec__"] = None
        try:
            yield
        finally:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)
