"""Pipeline runs: a run's DAG and nodes, ending a run, the step cache, and the versions of
pipelines that runs are recorded under.

A run is keyed by its controller task's id. Everything here returns frozen records
(:class:`~pipekit.models.RunRecord`, :class:`~pipekit.models.NodeRecord` …), never rows.
The run loop that drives these lives in :mod:`pipekit.runner`; this module knows none of it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

from peewee import JOIN, fn

import pipekit.store.statements as sql
import pipekit.store.tables as t

from ..config import lease_ttl
from ..errors import StoreError, TaskNotFound
from ..models import (
    CacheEntry,
    Lease,
    NodeRecord,
    PipelineRecord,
    RunRecord,
    RunSummary,
    Status,
    sources_of,
)
from .base import StoreBase
from .tasks import newest_first

__all__ = ["RunStore"]


class RunStore(StoreBase):
    """Runs, their nodes, the step cache and pipeline versions."""

    # -- pipeline runs ----------------------------------------------------------------------

    def create_run(self, run_id: str, *, dag: Mapping[str, Any], version: str | None = None,
                   structure_hash: str | None = None, origin: str | None = None,
                   pipeline: tuple[str, str] | None = None) -> None:
        """Record that controller task ``run_id`` runs ``dag`` (:meth:`pipekit.dag.Dag.to_dict`);
        every node starts pending. A draft run (a cloned run not started yet) is replaced,
        keeping its ``origin`` unless one is given.

        :param version: the pipeline version the run is recorded under, if known yet.
        :param structure_hash: the DAG's :meth:`~pipekit.dag.Dag.structure_hash`.
        :param origin: the run this one reruns.
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

    def add_node(self, run_id: str, name: str, parents: Sequence[str]) -> None:
        """Add a node to a running run (a decorated pipeline grows as components are called).

        A node the run already has (a resumed run's pipeline function calling its components
        again) keeps its row and status; only its parents are updated. One statement: the
        run's DAG is its nodes (:meth:`get_run`), so adding one costs the same at the
        10,000th as at the first.
        """
        row = (run_id, name, json.dumps(list(parents)))
        self.write(lambda: self._sql(sql.UPSERT_NODE, row))

    def resume_run(self, run_id: str, *, dag: Mapping[str, Any]) -> None:
        """A run resumed by its script, run again: it now runs ``dag``. Nodes it had keep
        their rows and statuses (the run loop restores or re-runs each); new ones start
        pending.
        """
        def update() -> None:
            have = {n.name for n in t.Node.select(t.Node.name).where(t.Node.run == run_id)}
            rows = [{"run": run_id, "name": node["name"], "parents": json.dumps(node["parents"]),
                     "status": "pending"} for node in dag.get("nodes", ())
                    if node["name"] not in have]
            for start in range(0, len(rows), 500):
                t.Node.insert_many(rows[start:start + 500]).execute()
            t.Run.update(dag=json.dumps(dict(dag))).where(t.Run.task == run_id).execute()

        self.write(update)

    def set_node(self, run_id: str, name: str, status: str, *, task: str | None = None,
                 attempt: int | None = None, started: float | None = None,
                 ended: float | None = None, cache_key: str | None = None) -> None:
        """Update one node of a run (only the given fields).

        :param status: a task status, or ``pending``, ``skipped`` or ``cached``.
        :param task: the task running (or, when cached, serving) the node.
        :param attempt: the retry count of that task (0 for the first try).
        :raises StoreError: the run has no node of that name.
        """
        fields: dict[str, Any] = {"status": status}
        for key, value in (("task", task), ("attempt", attempt), ("started", started),
                           ("ended", ended), ("cache_key", cache_key)):
            if value is not None:
                fields[key] = value
        statement = sql.update_node(tuple(fields))
        params = (*fields.values(), run_id, name)
        if not self.write(lambda: self._sql(statement, params).rowcount):
            raise StoreError(f"run {run_id} has no node {name!r}")

    def get_run(self, run_id: str) -> RunRecord:
        """The run of controller task ``run_id``: its DAG, version and origin.

        :raises TaskNotFound: no run has this id.
        """
        self._check()
        row = t.Run.get_or_none(t.Run.task == run_id)
        if row is None:
            raise TaskNotFound(run_id, self.where)
        return RunRecord(id=run_id, version=row.version, structure_hash=row.structure_hash,
                         origin=row.origin, dag=self._dag(run_id, row.dag), created=row.created,
                         owner=row.owner, heartbeat=row.heartbeat)

    def _dag(self, run_id: str, recorded: str) -> dict[str, Any]:
        """The run's DAG (:meth:`pipekit.dag.Dag.to_dict`): its nodes, in the order they were
        added (the DAG recorded at its start, for a run with no node rows).
        """
        rows = self._sql(sql.SELECT_NODE_PARENTS, (run_id,)).fetchall()
        if not rows:
            return json.loads(recorded)
        return {"nodes": [{"name": name, "parents": json.loads(parents)}
                          for name, parents in rows]}

    def beat_run(self, run_id: str, owner: str) -> bool:
        """The controller ``owner`` still drives run ``run_id`` (a heartbeat). Returns
        ``False``, writing nothing, once another process has taken the run over
        (:meth:`take_run`): the run is no longer this owner's.
        """
        self._check()
        return bool(self.write(lambda: t.Run.update(owner=owner, heartbeat=time.time()).where(
            (t.Run.task == run_id) & (t.Run.owner.is_null() | (t.Run.owner == owner)))
            .execute()))

    def take_run(self, run_id: str, owner: str, *, previous: tuple[str | None, float | None]
                 ) -> bool:
        """Make ``owner`` the run's controller if its owner and heartbeat are still
        ``previous`` (what the caller read, and judged gone): of two processes taking the
        same run over, exactly one wins. Returns whether this call did.
        """
        self._check()
        before, beat = previous
        where = (t.Run.task == run_id) & (
            t.Run.owner.is_null() if before is None else t.Run.owner == before) & (
            t.Run.heartbeat.is_null() if beat is None else t.Run.heartbeat == beat)
        return bool(self.write(lambda: t.Run.update(owner=owner, heartbeat=time.time())
                               .where(where).execute()))

    def list_nodes(self, run_id: str) -> list[NodeRecord]:
        """The run's nodes in the order they were added."""
        self._check()
        query = t.Node.select().where(t.Node.run == run_id).order_by(t.Node.id)
        return [NodeRecord(name=n.name, task=n.task, status=n.status,
                           parents=json.loads(n.parents), cache_key=n.cache_key,
                           attempt=n.attempt, started=n.started, ended=n.ended)
                for n in query]

    def finish_run(self, run_id: str, status: Status, reason: str = "",
                   lease: Lease | None = None, owner: str | None = None) -> bool:
        """End a run in one transaction: its controller task gets ``status``, every step task
        of the run not yet final is stopped, and every unfinished node is skipped (or stopped
        if it was running).

        A terminal run never leaves a step non-terminal (RELIABILITY 12).

        :param reason: the controller task's status reason.
        :param lease: the claim under which an agent ran the controller: nothing changes
            unless it is still current (the fencing check).
        :returns: whether the controller task moved to ``status`` (its current status allowed
            it, and ``lease`` was current; see :meth:`set_status`).
        """
        status = Status(status)
        now = time.time()
        open_states = [s.value for s in (Status.created, Status.queued, Status.in_progress)]
        allowed = tuple(s.value for s in sources_of(status))

        def update() -> int:
            if lease is not None and not self._lease_held(run_id, lease):
                return 0  # a stale attempt: the run belongs to a newer one
            # (the run's row locked on PostgreSQL: a take-over waits until this ends)
            row = self._sql(sql.RUN_OWNER + self.dialect.row_lock, (run_id,)).fetchone()
            if owner is not None and row is not None and row[0] is not None \
                    and row[0] != owner:
                return 0  # taken over: the run is its new owner's to end
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
                      ) -> list[CacheEntry]:
        """Tasks that can serve a cache hit, newest first.

        :param project: only tasks of this project.
        :param name: only tasks of this name.
        """
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
        return [CacheEntry(key=key, task=task, project=proj, name=tname, status=status,
                           ended=ended)
                for key, task, proj, tname, status, ended in query.tuples()]

    def clear_cache(self, *, keys: Sequence[str] = (), tasks: Sequence[str] = (),
                    everything: bool = False) -> int:
        """Forget cache keys (the tasks and their outputs stay); returns how many tasks.

        :param keys: forget these cache keys.
        :param tasks: forget the keys of these tasks.
        :param everything: forget every cache key.
        """
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
            # (another run may record the same new version at once: the first one's stays)
            t.Pipeline.insert(project=project_id, name=name, version=version,
                              structure_hash=structure_hash, created=now
                              ).on_conflict_ignore().execute()
            row = t.Pipeline.get((t.Pipeline.project == project_id)
                                 & (t.Pipeline.name == name) & (t.Pipeline.version == version))
        pipeline_id = row.id
        t.Run.update(pipeline=pipeline_id, version=version,
                     structure_hash=structure_hash).where(t.Run.task == run_id).execute()

    def list_pipelines(self, project: str | None = None) -> list[PipelineRecord]:
        """Every pipeline version with its run count and last run, newest first."""
        self._check()
        runs = fn.COUNT(t.Run.task)
        query = (t.Pipeline.select(t.Project.name, t.Pipeline.name, t.Pipeline.version,
                                   t.Pipeline.structure_hash, t.Pipeline.created, runs,
                                   fn.MAX(t.Run.created))
                 .join(t.Project).switch(t.Pipeline)
                 .join(t.Run, JOIN.LEFT_OUTER, on=(t.Run.pipeline == t.Pipeline.id))
                 .group_by(t.Pipeline.id, t.Project.name)
                 .order_by(t.Project.name, t.Pipeline.name, t.Pipeline.created.desc()))
        if project is not None:
            query = query.where(t.Project.name == project)
        return [PipelineRecord(project=proj, name=name, version=version,
                               structure_hash=shash, created=created, runs=count,
                               last_run=last)
                for proj, name, version, shash, created, count, last in query.tuples()]

    def list_runs(self, *, project: str | None = None, name: str | None = None,
                  status: Sequence[str] = (), parent: str | None = None,
                  limit: int | None = None, offset: int = 0) -> list[RunSummary]:
        """Pipeline runs, newest first: the controller task's fields plus version and origin.

        :param project: only runs of this project.
        :param name: only runs of the pipeline of this name.
        :param status: only runs in one of these statuses.
        :param parent: only runs started by this task (a component calling a pipeline).
        :param limit: at most this many.
        :param offset: skip this many of the newest first (a page of a long list).
        """
        self._check()
        query = newest_first(
            t.Run.select(t.Task.id, t.Project.name, t.Task.name, t.Task.status,
                         t.Task.status_reason, t.Task.parent, t.Task.created, t.Task.started,
                         t.Task.ended, t.Run.version, t.Run.structure_hash, t.Run.origin,
                         t.Run.owner, t.Run.heartbeat).join(t.Task).join(t.Project),
            project=project, name=name, status=status, parent=parent)
        if limit is not None or offset:
            query = query.limit(limit).offset(offset)  # (no limit: SQLite's is LIMIT -1)
        lost_before = time.time() - lease_ttl()
        return [RunSummary(*row, controller_lost=row[3] == Status.in_progress.value
                           and (row[-1] or row[6]) < lost_before)
                for row in query.tuples()]

    def count_runs(self, *, project: str | None = None, name: str | None = None,
                   status: Sequence[str] = ()) -> int:
        """How many runs :meth:`list_runs` would list with these filters."""
        self._check()
        query = newest_first(t.Run.select(fn.COUNT(t.Run.task)).join(t.Task).join(t.Project),
                             project=project, name=name, status=status).order_by()
        return int(query.scalar() or 0)

    def runs_inside(self, task_ids: Sequence[str]) -> dict[str, list[str]]:
        """The pipeline runs inside each of the tasks ``task_ids``: ``{task: [run ids]}``,
        oldest first; a task that is itself a run (a pipeline as a step) lists its own id
        first, then the runs it started (a component calling a pipeline).
        """
        self._check()
        ids = list(dict.fromkeys(task_ids))
        out: dict[str, list[str]] = {}
        for start in range(0, len(ids), 400):  # under SQLite's bound-parameter limit
            chunk = ids[start:start + 400]
            rows = (t.Run.select(t.Run.task, t.Task.parent).join(t.Task)
                    .where(t.Run.task.in_(chunk) | t.Task.parent.in_(chunk))
                    .order_by(t.Task.created, t.Task.id).tuples())
            for run_id, parent in rows:
                if run_id in chunk:
                    out.setdefault(run_id, []).insert(0, run_id)
                if parent in chunk:
                    out.setdefault(parent, []).append(run_id)
        return out
