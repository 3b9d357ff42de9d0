"""What an executor is: it submits a job, reports when it is done, and can cancel it.

An executor only runs tasks; the single scheduling loop (``runner.py``) decides what runs
when. Executors are plugins: ``pipekit_executors(register)`` registers ``(name, factory)``,
and :func:`make_executor` builds one by name. A job is "execute task X", so every executor
runs every kind of task the worker knows (:mod:`pipekit.worker`).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol, runtime_checkable

import attrs

from .errors import PluginError
from .models import Status
from .store import get_store


@attrs.frozen
class Job:
    """Execute task ``task_id`` (the task of step ``step``, if any)."""

    task_id: str
    step: str = ""


@attrs.frozen
class Outcome:
    """How a job ended: the task's final status and why."""

    status: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status in (Status.completed.value, Status.published.value)


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


_lock = threading.Lock()
_factories: dict[str, Any] | None = None


def reset_registry() -> None:
    global _factories
    with _lock:
        _factories = None


def _registry() -> dict[str, Any]:
    global _factories
    if _factories is None:
        with _lock:
            if _factories is None:
                from .plugin_manager import collect

                def accept(name: str, factory: Any) -> tuple[str, Any]:
                    if not isinstance(name, str) or not name or not callable(factory):
                        raise TypeError(f"executor {name!r} with factory {factory!r}: "
                                        "expected register(name: str, factory: callable)")
                    return name, factory

                _factories = {r.name: r.value
                              for r in collect("pipekit_executors", "executor", accept)}
    return _factories


def executor_names() -> list[str]:
    return sorted(_registry())


def make_executor(name: str, **options: Any) -> Executor:
    """A new executor registered under ``name``, built with ``options``.

    :raises PluginError: no plugin registered ``name`` (the message lists those that did).
    """
    factories = _registry()
    if name not in factories:
        known = ", ".join(sorted(factories)) or "none: is pipekit installed with pip install -e .?"
        raise PluginError(f"unknown executor {name!r} (known: {known})", plugin=name)
    return factories[name](**options)


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
    from .functions import is_function_task

    return is_function_task(get_store().get_task(job.task_id))


def worker_of(job: Job) -> str | None:
    """The ``host:pid`` that runs (or ran) the job's task, as the task records it."""
    return get_store().get_task(job.task_id).worker


def settle(task_id: str, reason: str) -> Outcome:
    """Fail a task whose executor ended without giving it a final status (e.g. a worker
    process killed by a signal); returns the task's outcome, whoever set it.
    """
    get_store().set_status(task_id, Status.failed, reason=reason)
    outcome = outcome_of(task_id)
    assert outcome is not None
    return outcome


def stop(task_id: str, reason: str = "stopped") -> None:
    """Mark a task ``stopped`` before killing its processes, so the kill cannot be recorded
    as a failure (final statuses are set once, conditionally).
    """
    get_store().set_status(task_id, Status.stopped, reason=reason)
