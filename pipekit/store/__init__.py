"""The store facade: the only persistence API the rest of pipekit calls.

:class:`Store` returns frozen records from :mod:`pipekit.models`, never peewee rows; peewee
stays inside this package. Every write is one short transaction (``BEGIN IMMEDIATE`` on
SQLite, :func:`pipekit.store.db.write`); no user code or file I/O happens inside one. A store
handle belongs to the process that opened it: :func:`get_store` gives each process its own,
and a handle carried across ``fork()`` raises :class:`~pipekit.errors.ForkedHandleError`.

The facade is composed of one class per section, each documenting its methods once:

* :class:`~.tasks.TaskStore` — tasks, status, parameters, configuration, projects;
* :class:`~.outputs.OutputStore` — artifacts, models, scalars, single values, reports;
* :class:`~.logs.LogStore` — task logs: the local file, and its copy in a shared database;
* :class:`~.runs.RunStore` — runs and their nodes, the step cache, pipeline versions;
* :class:`~.queues.QueueStore` — queues, enqueueing and claiming;

over :class:`~.base.StoreBase` (the database, its :mod:`~.dialect`, ``write``). What differs
between SQLite and PostgreSQL lives in the dialect only.
"""

from __future__ import annotations

import os
import threading

import pipekit.store.tables as t

from ..config import get_settings
from ..models import TaskInfo
from .logs import LogStore
from .outputs import OutputStore
from .queues import QueueStore
from .runs import RunStore
from .tasks import TaskStore

__all__ = ["Store", "get_store", "reset_store"]


class Store(TaskStore, OutputStore, LogStore, RunStore, QueueStore):
    """One opened store: a database and its ``artifacts/`` and ``logs/`` folders.

    :param settings: where the store is (default: the current settings).
    :param upgrade: apply pending migrations on opening.
    :raises StoreTooNew: the store was written by a newer pipekit.
    """

    # -- operations that span sections --------------------------------------------------------

    def clone_task(self, source_id: str, *, name: str | None = None, parent: str | None = None,
                   project: str | None = None, cache_key: str | None = None) -> TaskInfo:
        """A new ``created`` task with the source's code, parameters and configuration.

        The clone of a pipeline run is a draft run linked to it (``origin``), a sibling of
        its source; the clone of any other task is by default its child.

        :param name: default ``Clone Of <source name>``.
        :param parent: default as above.
        :param project: default the source's project.
        :param cache_key: the step cache key the clone runs under.
        :raises TaskNotFound: no task has id ``source_id``.
        """
        source = self.get_task(source_id)
        row = t.Task.get(t.Task.id == source_id)
        run = t.Run.get_or_none(t.Run.task == source_id)
        default_parent = source.parent if run is not None else (source.parent or source.id)
        new = self.create_task(
            project=project or source.project,
            name=name or f"Clone Of {source.name}",
            type=source.type, parent=parent or default_parent,
            script=source.script, code_digest=source.code_digest, code=row.code,
            tags=source.tags, params=self.get_parameters(source_id).values(),
            configurations={c.name: (c.value, c.kind) for c in
                            t.Configuration.select().where(t.Configuration.task == source_id)},
            cache_key=cache_key,
        )
        if run is not None:
            self.create_run(new.id, dag=self.get_run(source_id).dag, origin=source_id)
        return new


# -- one store per process ----------------------------------------------------------------------

_lock = threading.Lock()
_current: Store | None = None


def get_store() -> Store:
    """This process's store for the current settings, opened (and upgraded) on first use."""
    global _current
    settings = get_settings()
    store = _current
    if store is not None and store._pid == os.getpid() and store.settings == settings:
        return store
    with _lock:
        store = _current
        if store is None or store._pid != os.getpid() or store.settings != settings:
            if store is not None and store._pid == os.getpid():
                store.close()
            store = Store(settings)
            _current = store
    return store


def reset_store() -> None:
    """Forget this process's store (closing it if this process opened it)."""
    global _current
    with _lock:
        if _current is not None and _current._pid == os.getpid():
            _current.close()
        _current = None


def _after_fork_in_child() -> None:
    # Drop, never close, the parent's connection: SQLite handles must not cross fork().
    global _current, _lock
    _current = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)

