"""Tasks, their parameters and configuration, and the projects they are filed under.

The per-step path runs through here (:meth:`TaskStore.create_task`, :meth:`TaskStore.set_status`,
:meth:`TaskStore.get_task`), so those use the prepared statements of :mod:`.statements`
rather than peewee's query builder.
"""

from __future__ import annotations

import getpass
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

import pipekit.store.statements as sql
import pipekit.store.tables as t

from ..errors import TaskIdPrefixError, TaskNotFound, TaskStateError
from ..models import ArtifactInfo, Lease, ParamInfo, Status, TaskInfo, sources_of
from .base import StoreBase, new_id
from .outputs import artifact_row

__all__ = ["MIN_PREFIX", "TaskStore", "task_info"]

#: The fewest hex digits of a task id that ``resolve_task_id`` takes as a prefix.
MIN_PREFIX = 6
#: How many ids starting with a prefix are read to say how many characters tell them apart.
_PREFIX_SCAN = 1000


def newest_first(query: Any, *, project: str | None = None, name: str | None = None,
                 status: Sequence[str] = (), parent: str | None = None) -> Any:
    """``query`` (over tasks joined to their project) filtered by the task fields every
    listing offers, newest first.
    """
    if project is not None:
        query = query.where(t.Project.name == project)
    if name is not None:
        query = query.where(t.Task.name == name)
    if status:
        query = query.where(t.Task.status.in_([str(s) for s in status]))
    if parent is not None:
        query = query.where(t.Task.parent == parent)
    return query.order_by(t.Task.created.desc(), t.Task.id.desc())


@cache
def who_runs() -> str | None:
    """The login name tasks created by this process are recorded under (shown as who ran a
    run); ``None`` where the system has none (a container's unnamed uid).
    """
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def task_info(row: Sequence[Any]) -> TaskInfo:
    """A ``TaskInfo`` from a row of :data:`statements.TASK_INFO_COLUMNS`."""
    (tid, project, name, type_, status, reason, parent, script, code_digest, created,
     started, ended, last_update, worker, tags, archived, comment, log_path, log_size,
     user) = row
    return TaskInfo(id=tid, project=project, name=name, type=type_, status=status,
                    status_reason=reason, parent=parent, script=json.loads(script),
                    code_digest=code_digest, created=created, started=started, ended=ended,
                    last_update=last_update, worker=worker, tags=tuple(json.loads(tags)),
                    archived=bool(archived), comment=comment, log_path=log_path,
                    log_size=log_size, user=user)


def _task_info_fields() -> list[Any]:
    """:data:`statements.TASK_INFO_COLUMNS` as peewee fields, for queries built with peewee."""
    tables = {"t": t.Task, "p": t.Project}
    fields = []
    for column in sql.TASK_INFO_COLUMNS:
        table, _, name = column.partition(".")
        fields.append(getattr(tables[table], name.strip('"')))
    return fields


class TaskStore(StoreBase):
    """Tasks, parameters, configuration and projects."""

    # -- projects ---------------------------------------------------------------------------

    def list_projects(self) -> list[str]:
        """Every project's name, in alphabetical order (projects appear with their first task)."""
        self._check()
        return [p.name for p in t.Project.select(t.Project.name).order_by(t.Project.name)]

    # -- tasks ------------------------------------------------------------------------------

    def create_task(self, *, project: str, name: str, type: str = "training",
                    status: Status = Status.created, parent: str | None = None,
                    script: Mapping[str, Any] | None = None, code_digest: str | None = None,
                    code: str | None = None, tags: Sequence[str] = (),
                    params: Iterable[ParamInfo] = (),
                    configurations: Mapping[str, tuple[str, str]] | None = None,
                    task_id: str | None = None, cache_key: str | None = None) -> TaskInfo:
        """Create a task (with its parameters and configuration) in one transaction; its
        project is created on first use.

        :param status: ``created``, or ``in_progress`` for a task that starts at once (its
            ``started`` time is then now).
        :param script: how to run it again (JSON-able: path, argv, entry point …).
        :param code: a function step's source, kept for :meth:`clone_task`.
        :param tags: de-duplicated, order kept.
        :param params: its parameters (:class:`~pipekit.models.ParamInfo`).
        :param configurations: ``{name: (value, kind)}``.
        :param task_id: the id to use (default: a new one).
        :param cache_key: the step cache key it runs under (found by :meth:`find_cached`
            once the task completed).
        :returns: the task as stored.
        """
        task_id = task_id or new_id()
        now = time.time()
        log_path = str(self.settings.logs_dir / f"{task_id}.log")
        started = now if status == Status.in_progress else None

        script = dict(script or {})
        tags = tuple(dict.fromkeys(tags))
        row = (task_id, None, name, str(type), str(status), "", parent, json.dumps(script),
               code_digest, code, now, started, now, json.dumps(list(tags)), log_path,
               False, "", 0, cache_key, who_runs())  # user last: read back below

        def insert() -> None:
            self._sql(sql.INSERT_TASK, (row[0], self._project_id(project), *row[2:]))
            self._put_params(task_id, params)
            for cname, (value, kind) in (configurations or {}).items():
                t.Configuration.insert(task=task_id, name=cname, value=value,
                                       kind=kind).execute()

        self.write(insert)
        return TaskInfo(id=task_id, project=project, name=name, type=str(type),
                        status=str(status), parent=parent, script=script,
                        code_digest=code_digest, created=now, started=started,
                        last_update=now, tags=tags, log_path=log_path, user=row[-1])

    def task_statuses(self, task_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """``{id: (status, status_reason)}`` of the given tasks (missing ones left out)."""
        self._check()
        out: dict[str, tuple[str, str]] = {}
        ids = list(task_ids)
        for start in range(0, len(ids), 500):
            query = (t.Task.select(t.Task.id, t.Task.status, t.Task.status_reason)
                     .where(t.Task.id.in_(ids[start:start + 500])).tuples())
            out.update({task_id: (status, reason) for task_id, status, reason in query})
        return out

    def get_task(self, task_id: str) -> TaskInfo:
        """One task by its full id.

        :raises TaskNotFound: no task has this id.
        """
        self._check()
        row = self._sql(sql.SELECT_TASK, (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id, self.where)
        return task_info(row)

    def task_code(self, task_id: str) -> str | None:
        """A function step's source as recorded (``None`` for script tasks)."""
        self._check()
        row = t.Task.select(t.Task.code).where(t.Task.id == task_id).tuples().first()
        if row is None:
            raise TaskNotFound(task_id)
        return row[0]

    def find_tasks(self, *, project: str | None = None, name: str | None = None,
                   tags: Sequence[str] = (), status: Sequence[str] = (),
                   type: Sequence[str] = (), parent: str | None = None,
                   include_archived: bool = True, limit: int | None = None) -> list[TaskInfo]:
        """Tasks matching every given filter, most recent first.

        :param tags: tasks carrying all of these tags.
        :param status: tasks in any of these statuses.
        :param type: tasks of any of these types.
        :param parent: children of this task.
        :param include_archived: ``False`` leaves archived tasks out.
        :param limit: at most this many.
        """
        self._check()
        query = newest_first(t.Task.select(*_task_info_fields()).join(t.Project),
                             project=project, name=name, status=status, parent=parent)
        if type:
            query = query.where(t.Task.type.in_([str(s) for s in type]))
        if not include_archived:
            query = query.where(t.Task.archived == False)  # noqa: E712 - peewee expression
        wanted = set(tags)
        out = []
        for row in query.tuples():
            info = task_info(row)
            if wanted and not wanted.issubset(info.tags):
                continue
            out.append(info)
            if limit is not None and len(out) >= limit:
                break
        return out

    def task_status(self, task_id: str) -> str:
        """The task's status alone (one indexed read: what a running step checks).

        :raises TaskNotFound: no task has this id.
        """
        self._check()
        row = self._sql(sql.SELECT_STATUS, (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id, self.where)
        return row[0]

    def resolve_task_id(self, prefix: str) -> str:
        """A full task id from an id, or from a unique prefix of at least
        :data:`MIN_PREFIX` (6) hex digits.

        :raises TaskIdPrefixError: tasks start with ``prefix`` but it is too short, or more
            than one does; the message says how many characters are needed.
        :raises TaskNotFound: no task matches.
        """
        self._check()
        if self._sql(sql.TASK_EXISTS, (prefix,)).fetchone() is not None:
            return prefix
        if not prefix or not all(c in "0123456789abcdef" for c in prefix):
            raise TaskNotFound(prefix, self.where)
        ids = [r.id for r in t.Task.select(t.Task.id).where(t.Task.id.startswith(prefix))
               .order_by(t.Task.id).limit(_PREFIX_SCAN)]
        if len(ids) == 1 and len(prefix) >= MIN_PREFIX:
            return ids[0]
        if not ids:
            raise TaskNotFound(prefix, self.where)
        # Sorted ids: the longest prefix two neighbours share, plus one, tells all apart.
        shared = max((len(os.path.commonprefix([a, b]))
                      for a, b in zip(ids, ids[1:], strict=False)), default=0)
        count = len(ids) if len(ids) < _PREFIX_SCAN else self._count_prefixed(prefix)
        raise TaskIdPrefixError(prefix, count, max(MIN_PREFIX, shared + 1), MIN_PREFIX)

    def _count_prefixed(self, prefix: str) -> int:
        return t.Task.select().where(t.Task.id.startswith(prefix)).count()

    def update_task(self, task_id: str, **fields: Any) -> None:
        """Set plain fields (``name``, ``comment``, ``script``, ``code_digest``, ``tags``,
        ``project`` by name …) of a task; its ``last_update`` becomes now.

        :raises TaskNotFound: no task has this id.
        """
        if "script" in fields:
            fields["script"] = json.dumps(fields["script"])
        if "tags" in fields:
            fields["tags"] = json.dumps(list(dict.fromkeys(fields["tags"])))
        fields["last_update"] = time.time()

        def update() -> int:
            values = dict(fields)  # (a retried transaction starts from the names again)
            if "project" in values:
                values["project"] = self._project_id(values["project"])
            return t.Task.update(**values).where(t.Task.id == task_id).execute()

        if not self.write(update):
            raise TaskNotFound(task_id, self.where)

    def add_tags(self, task_id: str, tags: Iterable[str]) -> tuple[str, ...]:
        """Add tags to a task (those it has keep their place); returns all its tags.

        :raises TaskNotFound: no task has this id.
        """
        def update() -> tuple[str, ...]:
            row = self._sql(sql.SELECT_TAGS + self.dialect.row_lock, (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(task_id, self.where)
            merged = list(dict.fromkeys([*json.loads(row[0]), *tags]))
            t.Task.update(tags=json.dumps(merged), last_update=time.time()).where(
                t.Task.id == task_id).execute()
            return tuple(merged)

        return self.write(update)

    def set_status(self, task_id: str, new: Status, *, reason: str = "",
                   worker: str | None = None, force: bool = False,
                   lease: Lease | None = None, artifacts: Sequence[ArtifactInfo] = ()
                   ) -> bool:
        """Move a task to ``new`` if its current status allows it; returns whether it moved.

        The check and the update are one conditional statement, so of two processes racing
        to finish a task exactly one wins and the task gets exactly one final status.
        Moving to ``in_progress`` records ``started`` (and ``worker``); to a final status,
        ``ended``; back to ``created`` clears both.

        :param reason: the status reason (a failure's error, a stop's cause).
        :param worker: who runs it (with ``in_progress``).
        :param force: move whatever the current status.
        :param lease: the claim under which the caller ran the task: the move happens only
            while it is current (the fencing check).
        :param artifacts: recorded (their objects already stored) in the same transaction,
            if and only if the task moves: a completed step's return values, which so exist
            exactly when it counts as completed.
        :raises TaskNotFound: no task has this id.
        """
        new = Status(new)
        now = time.time()
        fields: dict[str, Any] = {"status": new.value, "last_update": now}
        if reason or new in (Status.failed, Status.stopped, Status.created, Status.queued):
            fields["status_reason"] = reason
        if new == Status.in_progress:
            fields["started"] = now
            fields["ended"] = None
            if worker is not None:
                fields["worker"] = worker
        elif new.is_final and new != Status.published:
            fields["ended"] = now
        elif new == Status.created:
            fields.update(started=None, ended=None)
        allowed = () if force else tuple(s.value for s in sources_of(new))
        statement = sql.set_status(tuple(fields), len(allowed))
        params: tuple[Any, ...] = (*fields.values(), task_id, *allowed)
        if lease is not None:
            statement += sql.FENCE
            params += (task_id, lease.worker, lease.attempt)

        rows = [artifact_row(a) for a in artifacts]

        def update() -> int:
            moved = self._sql(statement, params).rowcount
            if moved:
                for row in rows:
                    self._sql(sql.UPSERT_ARTIFACT, row)
            return moved

        moved = bool(self.write(update))
        if not moved:
            self.get_task(task_id)  # raises TaskNotFound for a missing task
        return moved

    def transition(self, task_id: str, new: Status, *, reason: str = "",
                   worker: str | None = None, force: bool = False) -> None:
        """:meth:`set_status`, raising :class:`TaskStateError` when the move is not allowed."""
        if not self.set_status(task_id, new, reason=reason, worker=worker, force=force):
            current = self.get_task(task_id).status
            if current != Status(new).value:
                raise TaskStateError(task_id, current, f"mark {Status(new).value}")

    def set_archived(self, task_id: str, archived: bool) -> None:
        """Archive (hide from listings and the step cache) or unarchive a task."""
        self.update_task(task_id, archived=archived)

    def set_log_size(self, task_id: str, size: int) -> None:
        """Record the size in bytes of the task's log file (:meth:`log_path`)."""
        self.write(lambda: t.Task.update(log_size=size).where(t.Task.id == task_id).execute())

    # -- parameters and configuration -------------------------------------------------------

    def _put_params(self, task_id: str, params: Iterable[ParamInfo]) -> None:
        for p in params:
            self._sql(sql.UPSERT_PARAMETER,
                      (task_id, p.section, p.name, p.value, p.type, p.description))

    def set_parameters(self, task_id: str, params: Iterable[ParamInfo],
                       replace: bool = False) -> None:
        """Upsert parameters; with ``replace`` the task keeps only these.

        :raises TaskNotFound: no task has this id.
        """
        params = list(params)

        def update() -> None:
            if self._sql(sql.TASK_EXISTS, (task_id,)).fetchone() is None:
                raise TaskNotFound(task_id, self.where)
            if replace:
                t.Parameter.delete().where(t.Parameter.task == task_id).execute()
            self._put_params(task_id, params)

        self.write(update)

    def get_parameters(self, task_id: str) -> dict[str, ParamInfo]:
        """``{"Section/name": ParamInfo}`` in insertion order."""
        self._check()
        return {f"{section}/{name}": ParamInfo(section, name, value, type_, description)
                for section, name, value, type_, description
                in self._sql(sql.SELECT_PARAMETERS, (task_id,)).fetchall()}

    def set_configuration(self, task_id: str, name: str, value: str, kind: str) -> None:
        """Set (or replace) a named configuration of ``kind`` ``json`` or ``text``."""
        def upsert() -> None:
            (t.Configuration.insert(task=task_id, name=name, value=value, kind=kind)
             .on_conflict(conflict_target=[t.Configuration.task, t.Configuration.name],
                          preserve=[t.Configuration.value, t.Configuration.kind])
             .execute())

        self.write(upsert)

    def get_configuration(self, task_id: str, name: str) -> tuple[str, str] | None:
        """``(value, kind)`` of a named configuration, or ``None``."""
        self._check()
        row = t.Configuration.get_or_none((t.Configuration.task == task_id)
                                          & (t.Configuration.name == name))
        return None if row is None else (row.value, row.kind)

    def list_configurations(self, task_id: str) -> dict[str, tuple[str, str]]:
        """Every configuration of the task: ``{name: (value, kind)}``."""
        self._check()
        return {c.name: (c.value, c.kind) for c in
                t.Configuration.select().where(t.Configuration.task == task_id)}
