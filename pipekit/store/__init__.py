"""The store facade: the only persistence API the rest of pipekit calls.

:class:`Store` returns frozen records from :mod:`pipekit.models`, never peewee rows; peewee
stays inside this package. Every write is one short ``BEGIN IMMEDIATE`` transaction
(:func:`pipekit.store.db.write`); no user code or file I/O happens inside one. A store handle
belongs to the process that opened it: :func:`get_store` gives each process its own, and a
handle carried across ``fork()`` raises :class:`~pipekit.errors.ForkedHandleError`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from peewee import JOIN, fn

from ..config import Settings, get_settings
from ..errors import (
    ArtifactNotFound,
    ForkedHandleError,
    ModelNotFound,
    QueueNotFound,
    StoreError,
    StoreTooNew,
    TaskNotFound,
    TaskStateError,
)
from ..models import (
    ArtifactInfo,
    ModelInfo,
    ObjectRef,
    ParamInfo,
    QueueInfo,
    ScalarPoint,
    Status,
    TaskInfo,
    sources_of,
)
from . import migrate
from . import statements as sql
from . import tables as t
from .blobs import BlobStore
from .db import open_database, read_schema_version, write
from .statements import for_db as sql_for

T = TypeVar("T")

__all__ = ["Store", "get_store", "reset_store"]


def new_id() -> str:
    return uuid.uuid4().hex


def _task_info(row: Sequence[Any]) -> TaskInfo:
    """A ``TaskInfo`` from a row of :data:`statements.TASK_INFO_COLUMNS`."""
    (tid, project, name, type_, status, reason, parent, script, code_digest, created,
     started, ended, last_update, worker, tags, archived, comment, log_path, log_size) = row
    return TaskInfo(id=tid, project=project, name=name, type=type_, status=status,
                    status_reason=reason, parent=parent, script=json.loads(script),
                    code_digest=code_digest, created=created, started=started, ended=ended,
                    last_update=last_update, worker=worker, tags=tuple(json.loads(tags)),
                    archived=bool(archived), comment=comment, log_path=log_path,
                    log_size=log_size)


def _task_info_fields() -> list[Any]:
    """:data:`statements.TASK_INFO_COLUMNS` as peewee fields, for queries built with peewee."""
    tables = {"t": t.Task, "p": t.Project}
    fields = []
    for column in sql.TASK_INFO_COLUMNS:
        table, _, name = column.partition(".")
        fields.append(getattr(tables[table], name))
    return fields


def _ref(row: t.Artifact | t.OutputModel) -> ObjectRef:
    inline = bytes(row.inline) if row.inline is not None else None
    return ObjectRef(digest=row.digest, size=row.size, serializer=row.serializer,
                     type=row.type, filename=row.filename, inline=inline)


class Store:
    """One opened store: a database and its ``artifacts/`` and ``logs/`` folders."""

    def __init__(self, settings: Settings | None = None, *, upgrade: bool = True) -> None:
        self.settings = settings or get_settings()
        self._pid = os.getpid()
        self.location = self.settings.db_url
        sqlite_path = self.settings.sqlite_path
        if sqlite_path is not None:
            # Refuse a newer store before the first write-capable connection touches it.
            found = read_schema_version(sqlite_path)
            newest = migrate.newest_version()
            if found is not None and found > newest:
                raise StoreTooNew(str(sqlite_path), found, newest)
        self.db = open_database(self.settings)
        t.proxy.initialize(self.db)
        self.blobs = BlobStore(self.settings.artifacts_dir)
        self._projects: dict[str, int] = {}
        if upgrade:
            self.upgrade()
            self.blobs.sweep_tmp()

    # -- lifecycle --------------------------------------------------------------------------

    def _check(self) -> None:
        if os.getpid() != self._pid:
            raise ForkedHandleError(
                f"store handle opened in process {self._pid} used in process {os.getpid()}; "
                "call pipekit.store.get_store() in the new process instead"
            )

    def write(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in one short IMMEDIATE transaction (retried whole on BUSY)."""
        self._check()
        return write(self.db, fn)

    def upgrade(self) -> list[str]:
        """Apply pending migrations; returns the names applied."""
        self._check()
        return migrate.upgrade(self.db, self.location)

    def schema_status(self) -> migrate.SchemaStatus:
        self._check()
        return migrate.status(self.db, self.location)

    def close(self) -> None:
        if os.getpid() == self._pid and not self.db.is_closed():
            self.db.close()

    def integrity_check(self) -> str:
        self._check()
        return self.db.execute_sql("PRAGMA integrity_check").fetchone()[0]

    # -- projects ---------------------------------------------------------------------------

    def _sql(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one of the hot-path statements of :mod:`.statements`; returns the cursor."""
        return self.db.execute_sql(sql_for(sql, self.db.param), params)

    def _project_id(self, name: str) -> int:
        # Projects are never deleted, so an id once seen committed stays valid. An id this
        # transaction inserts is not cached: a rollback would leave the cache pointing nowhere.
        project_id = self._projects.get(name)
        if project_id is not None:
            return project_id
        row = self._sql(sql.SELECT_PROJECT, (name,)).fetchone()
        if row is not None:
            self._projects[name] = row[0]
            return row[0]
        self._sql(sql.INSERT_PROJECT, (name, time.time()))
        return self._sql(sql.SELECT_PROJECT, (name,)).fetchone()[0]

    def list_projects(self) -> list[str]:
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
        """Create a task (with its parameters and configuration) in one transaction.

        :param cache_key: the step cache key it runs under (found by :meth:`find_cached`
            once the task completed).
        """
        task_id = task_id or new_id()
        now = time.time()
        log_path = str(self.settings.logs_dir / f"{task_id}.log")
        started = now if status == Status.in_progress else None

        script = dict(script or {})
        tags = tuple(dict.fromkeys(tags))
        row = (task_id, None, name, str(type), str(status), "", parent, json.dumps(script),
               code_digest, code, now, started, now, json.dumps(list(tags)), log_path,
               False, "", 0, cache_key)

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
                        last_update=now, tags=tags, log_path=log_path)

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
        """:raises TaskNotFound: no task has this id."""
        self._check()
        row = self._sql(sql.SELECT_TASK, (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(task_id)
        return _task_info(row)

    def find_tasks(self, *, project: str | None = None, name: str | None = None,
                   tags: Sequence[str] = (), status: Sequence[str] = (),
                   type: Sequence[str] = (), parent: str | None = None,
                   include_archived: bool = True, limit: int | None = None) -> list[TaskInfo]:
        """Tasks matching every given filter, most recent first."""
        self._check()
        query = (t.Task.select(*_task_info_fields())
                 .join(t.Project).order_by(t.Task.created.desc(), t.Task.id.desc()))
        if project is not None:
            query = query.where(t.Project.name == project)
        if name is not None:
            query = query.where(t.Task.name == name)
        if status:
            query = query.where(t.Task.status.in_([str(s) for s in status]))
        if type:
            query = query.where(t.Task.type.in_([str(s) for s in type]))
        if parent is not None:
            query = query.where(t.Task.parent == parent)
        if not include_archived:
            query = query.where(t.Task.archived == False)  # noqa: E712 - peewee expression
        wanted = set(tags)
        out = []
        for row in query.tuples():
            info = _task_info(row)
            if wanted and not wanted.issubset(info.tags):
                continue
            out.append(info)
            if limit is not None and len(out) >= limit:
                break
        return out

    def resolve_task_id(self, prefix: str) -> str:
        """A full task id from an id or a unique prefix of at least 6 characters."""
        self._check()
        if self._sql(sql.TASK_EXISTS, (prefix,)).fetchone() is not None:
            return prefix
        if len(prefix) >= 6 and all(c in "0123456789abcdef" for c in prefix):
            ids = [r.id for r in t.Task.select(t.Task.id)
                   .where(t.Task.id.startswith(prefix)).limit(2)]
            if len(ids) == 1:
                return ids[0]
            if len(ids) > 1:
                raise StoreError(f"task id prefix {prefix!r} is ambiguous")
        raise TaskNotFound(prefix)

    def update_task(self, task_id: str, **fields: Any) -> None:
        """Set plain fields (``name``, ``comment``, ``script``, ``code_digest`` …) of a task."""
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
            raise TaskNotFound(task_id)

    def add_tags(self, task_id: str, tags: Iterable[str]) -> tuple[str, ...]:
        def update() -> tuple[str, ...]:
            row = t.Task.get_or_none(t.Task.id == task_id)
            if row is None:
                raise TaskNotFound(task_id)
            merged = list(dict.fromkeys([*json.loads(row.tags), *tags]))
            t.Task.update(tags=json.dumps(merged), last_update=time.time()).where(
                t.Task.id == task_id).execute()
            return tuple(merged)

        return self.write(update)

    def set_status(self, task_id: str, new: Status, *, reason: str = "",
                   worker: str | None = None, force: bool = False) -> bool:
        """Move a task to ``new`` if its current status allows it; returns whether it moved.

        The check and the update are one conditional statement, so of two processes racing
        to finish a task exactly one wins and the task gets exactly one final status.
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
        params = (*fields.values(), task_id, *allowed)

        def update() -> int:
            return self._sql(statement, params).rowcount

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
        self.update_task(task_id, archived=archived)

    def set_log_size(self, task_id: str, size: int) -> None:
        self.write(lambda: t.Task.update(log_size=size).where(t.Task.id == task_id).execute())

    def clone_task(self, source_id: str, *, name: str | None = None, parent: str | None = None,
                   project: str | None = None, cache_key: str | None = None) -> TaskInfo:
        """A new ``created`` task with the source's code, parameters and configuration.

        The clone of a pipeline run is a draft run linked to it (``origin``), a sibling of
        its source; the clone of any other task is by default its child.
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
            self.create_run(new.id, dag=json.loads(run.dag), origin=source_id)
        return new

    # -- parameters and configuration -------------------------------------------------------

    def _put_params(self, task_id: str, params: Iterable[ParamInfo]) -> None:
        for p in params:
            self._sql(sql.UPSERT_PARAMETER,
                      (task_id, p.section, p.name, p.value, p.type, p.description))

    def set_parameters(self, task_id: str, params: Iterable[ParamInfo],
                       replace: bool = False) -> None:
        """Upsert parameters; with ``replace`` the task keeps only these."""
        params = list(params)

        def update() -> None:
            if self._sql(sql.TASK_EXISTS, (task_id,)).fetchone() is None:
                raise TaskNotFound(task_id)
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
        self._check()
        return {c.name: (c.value, c.kind) for c in
                t.Configuration.select().where(t.Configuration.task == task_id)}

    # -- artifacts and models ---------------------------------------------------------------

    def put_artifact(self, task_id: str, name: str, ref: ObjectRef,
                     metadata: Mapping[str, Any] | None = None, preview: str = "") -> ArtifactInfo:
        """Record an artifact whose object is already stored; replaces one of the same name."""
        now = time.time()
        meta = json.dumps(dict(metadata or {}), default=str)

        row = (task_id, name, ref.digest, ref.size, ref.serializer, ref.type, ref.filename,
               ref.inline, meta, preview, now)

        def upsert() -> None:
            self._sql(sql.UPSERT_ARTIFACT, row)
            self._sql(sql.TOUCH_TASK, (now, task_id))

        self.write(upsert)
        return ArtifactInfo(task=task_id, name=name, ref=ref, metadata=json.loads(meta),
                            preview=preview, created=now)

    def get_artifact(self, task_id: str, name: str) -> ArtifactInfo:
        self._check()
        row = self._sql(sql.SELECT_ARTIFACT, (task_id, name)).fetchone()
        if row is None:
            raise ArtifactNotFound(task_id, name)
        (name, digest, size, serializer, type_, filename, inline, metadata, preview,
         created) = row
        ref = ObjectRef(digest=digest, size=size, serializer=serializer, type=type_,
                        filename=filename, inline=bytes(inline) if inline is not None else None)
        return ArtifactInfo(task=task_id, name=name, ref=ref, metadata=json.loads(metadata),
                            preview=preview, created=created)

    def list_artifacts(self, task_id: str) -> list[ArtifactInfo]:
        self._check()
        query = t.Artifact.select().where(t.Artifact.task == task_id).order_by(t.Artifact.id)
        return [ArtifactInfo(task=task_id, name=r.name, ref=_ref(r),
                             metadata=json.loads(r.metadata), preview=r.preview,
                             created=r.created) for r in query]

    def add_model(self, task_id: str, name: str, ref: ObjectRef,
                  framework: str | None = None) -> ModelInfo:
        model_id = new_id()
        now = time.time()
        self.write(lambda: t.OutputModel.insert(
            id=model_id, task=task_id, name=name, framework=framework, digest=ref.digest,
            size=ref.size, serializer=ref.serializer, type=ref.type, filename=ref.filename,
            inline=ref.inline,
            created=now).execute())
        return ModelInfo(id=model_id, task=task_id, name=name, ref=ref, framework=framework,
                         created=now)

    def _model_info(self, row: t.OutputModel) -> ModelInfo:
        return ModelInfo(id=row.id, task=row.task_id, name=row.name, ref=_ref(row),
                         framework=row.framework, created=row.created)

    def list_models(self, task_id: str) -> list[ModelInfo]:
        self._check()
        query = (t.OutputModel.select().where(t.OutputModel.task == task_id)
                 .order_by(t.OutputModel.created, t.OutputModel.id))
        return [self._model_info(r) for r in query]

    def get_model(self, model_id: str) -> ModelInfo:
        self._check()
        row = t.OutputModel.get_or_none(t.OutputModel.id == model_id)
        if row is None:
            raise ModelNotFound(model_id)
        return self._model_info(row)

    # -- metrics and reports ----------------------------------------------------------------

    def add_scalars(self, task_id: str, points: Sequence[tuple[str, str, int, float, float]]
                    ) -> None:
        """Insert ``(title, series, iteration, value, ts)`` points in one transaction."""
        if not points:
            return
        rows = [{"task": task_id, "title": a, "series": b, "iteration": i, "value": v, "ts": ts}
                for a, b, i, v, ts in points]

        def insert() -> None:
            for start in range(0, len(rows), 500):
                t.Scalar.insert_many(rows[start:start + 500]).execute()

        self.write(insert)

    def scalars(self, task_id: str) -> list[ScalarPoint]:
        self._check()
        query = (t.Scalar.select(t.Scalar.title, t.Scalar.series, t.Scalar.iteration,
                                 t.Scalar.value)
                 .where(t.Scalar.task == task_id).order_by(t.Scalar.id).tuples())
        return [ScalarPoint(*row) for row in query]

    def last_scalars(self, task_id: str) -> dict[str, dict[str, dict[str, float]]]:
        """``{title: {series: {"last", "min", "max"}}}``; "last" is the highest iteration."""
        self._check()
        sql = (
            "SELECT title, series, MIN(value), MAX(value), "
            "(SELECT s2.value FROM scalar s2 WHERE s2.task_id = s.task_id "
            " AND s2.title = s.title AND s2.series = s.series "
            " ORDER BY s2.iteration DESC, s2.id DESC LIMIT 1) "
            "FROM scalar s WHERE task_id = ? GROUP BY title, series"
        )
        out: dict[str, dict[str, dict[str, float]]] = {}
        for title, series, vmin, vmax, last in self.db.execute_sql(sql, (task_id,)):
            out.setdefault(title, {})[series] = {"last": last, "min": vmin, "max": vmax}
        return out

    def set_single_values(self, task_id: str, values: Mapping[str, float]) -> None:
        def upsert() -> None:
            for name, value in values.items():
                (t.SingleValue.insert(task=task_id, name=name, value=value)
                 .on_conflict(conflict_target=[t.SingleValue.task, t.SingleValue.name],
                              preserve=[t.SingleValue.value]).execute())

        self.write(upsert)

    def single_values(self, task_id: str) -> dict[str, float]:
        self._check()
        return {r.name: r.value for r in
                t.SingleValue.select().where(t.SingleValue.task == task_id)}

    def add_report(self, task_id: str, kind: str, content: str, title: str = "",
                   series: str = "", iteration: int | None = None) -> None:
        self.write(lambda: t.Report.insert(task=task_id, kind=kind, content=content,
                                           title=title, series=series, iteration=iteration,
                                           ts=time.time()).execute())

    def reports(self, task_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        self._check()
        query = t.Report.select().where(t.Report.task == task_id).order_by(t.Report.id)
        if kind is not None:
            query = query.where(t.Report.kind == kind)
        return [{"kind": r.kind, "title": r.title, "series": r.series,
                 "iteration": r.iteration, "content": r.content} for r in query]

    # -- logs -------------------------------------------------------------------------------

    def log_path(self, task_id: str) -> Path:
        """The task's log file (created with its folder, mode 0600, on first write)."""
        return self.settings.logs_dir / f"{task_id}.log"

    # -- pipeline runs ----------------------------------------------------------------------

    def create_run(self, run_id: str, *, dag: Mapping[str, Any], version: str | None = None,
                   structure_hash: str | None = None, origin: str | None = None,
                   pipeline: tuple[str, str] | None = None) -> None:
        """Record that controller task ``run_id`` runs ``dag`` (:meth:`pipekit.dag.Dag.to_dict`);
        every node starts pending. A draft run (a cloned run not started yet) is replaced,
        keeping its ``origin`` unless one is given.

        :param pipeline: ``(project, name)`` to record ``version`` under (with the hash).
        """
        now = time.time()

        def insert() -> None:
            nonlocal origin
            draft = t.Run.get_or_none(t.Run.task == run_id)
            if draft is not None:
                origin = origin or draft.origin
                t.Node.delete().where(t.Node.run == run_id).execute()
                draft.delete_instance()
            t.Run.insert(task=run_id, version=version, structure_hash=structure_hash,
                         origin=origin, dag=json.dumps(dict(dag)), created=now).execute()
            rows = [{"run": run_id, "name": node["name"], "parents": json.dumps(node["parents"]),
                     "status": "pending"} for node in dag.get("nodes", ())]
            for start in range(0, len(rows), 500):
                t.Node.insert_many(rows[start:start + 500]).execute()
            if pipeline is not None and version and structure_hash:
                self._link_version(run_id, pipeline[0], pipeline[1], version, structure_hash,
                                   now)

        self.write(insert)

    def add_node(self, run_id: str, name: str, parents: Sequence[str],
                 dag: Mapping[str, Any]) -> None:
        """Add a node to a running run (a decorated pipeline grows as components are called)."""
        def insert() -> None:
            t.Node.insert(run=run_id, name=name, parents=json.dumps(list(parents)),
                          status="pending").execute()
            t.Run.update(dag=json.dumps(dict(dag))).where(t.Run.task == run_id).execute()

        self.write(insert)

    def set_node(self, run_id: str, name: str, status: str, *, task: str | None = None,
                 attempt: int | None = None, started: float | None = None,
                 ended: float | None = None, cache_key: str | None = None) -> None:
        """Update one node of a run (only the given fields)."""
        fields: dict[str, Any] = {"status": status}
        for key, value in (("task", task), ("attempt", attempt), ("started", started),
                           ("ended", ended), ("cache_key", cache_key)):
            if value is not None:
                fields[key] = value
        statement = sql.update_node(tuple(fields))
        params = (*fields.values(), run_id, name)
        if not self.write(lambda: self._sql(statement, params).rowcount):
            raise StoreError(f"run {run_id} has no node {name!r}")

    def get_run(self, run_id: str) -> dict[str, Any]:
        """``{"id", "version", "structure_hash", "origin", "dag", "created"}`` of a run.

        :raises TaskNotFound: no run has this id.
        """
        self._check()
        row = t.Run.get_or_none(t.Run.task == run_id)
        if row is None:
            raise TaskNotFound(run_id)
        return {"id": run_id, "version": row.version, "structure_hash": row.structure_hash,
                "origin": row.origin, "dag": json.loads(row.dag), "created": row.created}

    def list_nodes(self, run_id: str) -> list[dict[str, Any]]:
        """The run's nodes in the order they were added."""
        self._check()
        query = t.Node.select().where(t.Node.run == run_id).order_by(t.Node.id)
        return [{"name": n.name, "task": n.task, "status": n.status,
                 "parents": json.loads(n.parents), "cache_key": n.cache_key,
                 "attempt": n.attempt, "started": n.started, "ended": n.ended}
                for n in query]

    def finish_run(self, run_id: str, status: Status, reason: str = "") -> bool:
        """End a run in one transaction: its controller task gets ``status``, every step task
        of the run not yet final is stopped, and every unfinished node is skipped (or stopped
        if it was running). Returns whether the controller task moved to ``status``.

        A terminal run never leaves a step non-terminal (RELIABILITY 12).
        """
        status = Status(status)
        now = time.time()
        open_states = [s.value for s in (Status.created, Status.queued, Status.in_progress)]
        allowed = tuple(s.value for s in sources_of(status))

        def update() -> int:
            steps = [n.task for n in t.Node.select(t.Node.task)
                     .where((t.Node.run == run_id) & t.Node.task.is_null(False))]
            for start in range(0, len(steps), 500):
                (t.Task.update(status=Status.stopped.value, status_reason="pipeline run ended",
                               ended=now, last_update=now)
                 .where(t.Task.id.in_(steps[start:start + 500])
                        & t.Task.status.in_(open_states)).execute())
            t.Node.update(status="stopped", ended=now).where(
                (t.Node.run == run_id) & (t.Node.status == "in_progress")).execute()
            t.Node.update(status="skipped").where(
                (t.Node.run == run_id) & (t.Node.status == "pending")).execute()
            fields = {"status": status.value, "last_update": now, "ended": now}
            if reason or status in (Status.failed, Status.stopped):
                fields["status_reason"] = reason
            return (t.Task.update(**fields)
                    .where((t.Task.id == run_id) & t.Task.status.in_(allowed)).execute())

        return bool(self.write(update))

    # -- step cache -------------------------------------------------------------------------

    def find_cached(self, key: str) -> str | None:
        """The newest completed or published, non-archived task run under cache ``key``."""
        self._check()
        row = self._sql(sql.SELECT_CACHED, (key, False)).fetchone()
        return row[0] if row else None

    def artifact_files(self, task_id: str) -> list[str]:
        """Digests of the task's artifacts stored as files (not inline)."""
        self._check()
        return [row[0] for row in self._sql(sql.SELECT_ARTIFACT_FILES, (task_id,)).fetchall()]

    def cache_entries(self, *, project: str | None = None, name: str | None = None
                      ) -> list[dict[str, Any]]:
        """Tasks that can serve a cache hit (newest first): key, task, project, name, ended."""
        self._check()
        query = (t.Task.select(t.Task.cache_key, t.Task.id, t.Project.name, t.Task.name,
                               t.Task.status, t.Task.ended)
                 .join(t.Project)
                 .where(t.Task.cache_key.is_null(False)
                        & t.Task.status.in_([Status.completed.value, Status.published.value])
                        & (t.Task.archived == False))  # noqa: E712 - peewee expression
                 .order_by(t.Task.ended.desc(), t.Task.id))
        if project is not None:
            query = query.where(t.Project.name == project)
        if name is not None:
            query = query.where(t.Task.name == name)
        return [{"key": key, "task": task, "project": proj, "name": tname, "status": status,
                 "ended": ended} for key, task, proj, tname, status, ended in query.tuples()]

    def clear_cache(self, *, keys: Sequence[str] = (), tasks: Sequence[str] = (),
                    everything: bool = False) -> int:
        """Forget cache keys (the tasks and their outputs stay); returns how many tasks."""
        def update() -> int:
            query = t.Task.update(cache_key=None).where(t.Task.cache_key.is_null(False))
            if not everything:
                query = query.where(t.Task.cache_key.in_(list(keys)) | t.Task.id.in_(list(tasks)))
            return query.execute()

        if not (everything or keys or tasks):
            return 0
        return int(self.write(update))

    # -- pipelines and versions -------------------------------------------------------------

    def latest_pipeline_version(self, project: str, name: str) -> tuple[str, str] | None:
        """``(version, structure_hash)`` of the pipeline's newest recorded version."""
        self._check()
        query = (t.Pipeline.select(t.Pipeline.version, t.Pipeline.structure_hash)
                 .join(t.Project).where((t.Project.name == project) & (t.Pipeline.name == name))
                 .order_by(t.Pipeline.created.desc(), t.Pipeline.id.desc()).limit(1).tuples())
        row = query.first()
        return (row[0], row[1]) if row else None

    def record_run_version(self, run_id: str, *, project: str, name: str, version: str,
                           structure_hash: str) -> None:
        """Record a run's pipeline version (creating the version on first use)."""
        now = time.time()
        self.write(lambda: self._link_version(run_id, project, name, version, structure_hash,
                                              now))

    def _link_version(self, run_id: str, project: str, name: str, version: str,
                      structure_hash: str, now: float) -> None:
        project_id = self._project_id(project)
        row = t.Pipeline.get_or_none((t.Pipeline.project == project_id)
                                     & (t.Pipeline.name == name)
                                     & (t.Pipeline.version == version))
        if row is None:
            pipeline_id = t.Pipeline.insert(project=project_id, name=name, version=version,
                                            structure_hash=structure_hash, created=now).execute()
        else:
            pipeline_id = row.id
        t.Run.update(pipeline=pipeline_id, version=version,
                     structure_hash=structure_hash).where(t.Run.task == run_id).execute()

    def list_pipelines(self, project: str | None = None) -> list[dict[str, Any]]:
        """Every pipeline version with its run count and last run, newest first."""
        self._check()
        runs = fn.COUNT(t.Run.task)
        query = (t.Pipeline.select(t.Project.name, t.Pipeline.name, t.Pipeline.version,
                                   t.Pipeline.structure_hash, t.Pipeline.created, runs,
                                   fn.MAX(t.Run.created))
                 .join(t.Project).switch(t.Pipeline)
                 .join(t.Run, JOIN.LEFT_OUTER, on=(t.Run.pipeline == t.Pipeline.id))
                 .group_by(t.Pipeline.id)
                 .order_by(t.Project.name, t.Pipeline.name, t.Pipeline.created.desc()))
        if project is not None:
            query = query.where(t.Project.name == project)
        return [{"project": proj, "name": name, "version": version, "structure_hash": shash,
                 "created": created, "runs": count, "last_run": last}
                for proj, name, version, shash, created, count, last in query.tuples()]

    def list_runs(self, *, project: str | None = None, name: str | None = None,
                  status: Sequence[str] = (), parent: str | None = None,
                  limit: int | None = None) -> list[dict[str, Any]]:
        """Pipeline runs, newest first: the controller task's fields plus version and origin."""
        self._check()
        query = (t.Run.select(t.Task.id, t.Project.name, t.Task.name, t.Task.status,
                              t.Task.status_reason, t.Task.parent, t.Task.created,
                              t.Task.started, t.Task.ended, t.Run.version, t.Run.structure_hash,
                              t.Run.origin)
                 .join(t.Task).join(t.Project)
                 .order_by(t.Task.created.desc(), t.Task.id.desc()))
        if project is not None:
            query = query.where(t.Project.name == project)
        if name is not None:
            query = query.where(t.Task.name == name)
        if status:
            query = query.where(t.Task.status.in_([str(s) for s in status]))
        if parent is not None:
            query = query.where(t.Task.parent == parent)
        if limit is not None:
            query = query.limit(limit)
        keys = ("id", "project", "name", "status", "status_reason", "parent", "created",
                "started", "ended", "version", "structure_hash", "origin")
        return [dict(zip(keys, row, strict=True)) for row in query.tuples()]

    # -- queues -----------------------------------------------------------------------------

    def list_queues(self) -> list[QueueInfo]:
        self._check()
        out = []
        for q in t.Queue.select().order_by(t.Queue.name):
            pending = (t.QueueEntry.select().join(t.Task)
                       .where((t.QueueEntry.queue == q.id)
                              & (t.Task.status == Status.queued.value)).count())
            running = (t.QueueEntry.select().join(t.Task)
                       .where((t.QueueEntry.queue == q.id)
                              & (t.Task.status == Status.in_progress.value)).count())
            out.append(QueueInfo(name=q.name, pending=pending, running=running))
        return out

    def ensure_queue(self, name: str) -> None:
        self.write(lambda: t.Queue.insert(name=name, created=time.time())
                   .on_conflict_ignore().execute())

    def enqueue(self, task_id: str, queue: str, priority: int = 0) -> None:
        """Put a ``created``/``stopped``/``failed`` task on a queue and mark it ``queued``.

        :raises QueueNotFound: the queue does not exist (the message lists the known ones).
        :raises TaskStateError: the task is in a status that cannot be queued.
        """
        def put() -> None:
            q = t.Queue.get_or_none(t.Queue.name == queue)
            if q is None:
                raise QueueNotFound(queue, [r.name for r in t.Queue.select(t.Queue.name)])
            row = t.Task.get_or_none(t.Task.id == task_id)
            if row is None:
                raise TaskNotFound(task_id)
            if Status(row.status) not in sources_of(Status.queued):
                raise TaskStateError(task_id, row.status, "enqueue")
            now = time.time()
            (t.QueueEntry.insert(queue=q.id, task=task_id, priority=priority, enqueued=now)
             .on_conflict(conflict_target=[t.QueueEntry.task],
                          update={t.QueueEntry.queue: q.id, t.QueueEntry.enqueued: now,
                                  t.QueueEntry.priority: priority, t.QueueEntry.worker: None,
                                  t.QueueEntry.lease_expires: None})
             .execute())
            t.Task.update(status=Status.queued.value, status_reason="", last_update=now).where(
                t.Task.id == task_id).execute()

        self.write(put)

    def queue_of(self, task_id: str) -> str | None:
        self._check()
        row = (t.QueueEntry.select(t.Queue.name).join(t.Queue)
               .where(t.QueueEntry.task == task_id).tuples().first())
        return row[0] if row else None


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

