"""What tasks produce: artifacts, models, scalars and single values, text, table and plot
reports (their logs: :mod:`.logs`).

Artifact and model bytes are already in the blob store (or small enough to be inline) when
their rows are recorded here: nothing here reads or writes a blob.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pipekit.store.statements as sql
import pipekit.store.tables as t

from ..errors import ArtifactNotFound, ModelNotFound
from ..models import ArtifactInfo, Lease, ModelInfo, ObjectRef, ReportInfo, ScalarPoint
from .base import StoreBase, new_id

__all__ = ["OutputStore", "artifact_info", "artifact_row"]


def _ref(row: t.Artifact | t.OutputModel) -> ObjectRef:
    inline = bytes(row.inline) if row.inline is not None else None
    return ObjectRef(digest=row.digest, size=row.size, serializer=row.serializer,
                     type=row.type, filename=row.filename, inline=inline)


def artifact_info(task_id: str, name: str, ref: ObjectRef,
                  metadata: Mapping[str, Any] | None = None, preview: str = "") -> ArtifactInfo:
    """An artifact as it will be recorded now (its metadata as JSON keeps it)."""
    meta = json.loads(json.dumps(dict(metadata or {}), default=str))
    return ArtifactInfo(task=task_id, name=name, ref=ref, metadata=meta, preview=preview,
                        created=time.time())


def artifact_row(info: ArtifactInfo) -> tuple[Any, ...]:
    """The values :data:`~.statements.UPSERT_ARTIFACT` records ``info`` with."""
    ref = info.ref
    return (info.task, info.name, ref.digest, ref.size, ref.serializer, ref.type,
            ref.filename, ref.inline, json.dumps(info.metadata), info.preview, info.created)


class OutputStore(StoreBase):
    """Artifacts, models, metrics and reports of tasks."""

    # -- artifacts and models ---------------------------------------------------------------

    def put_artifact(self, task_id: str, name: str, ref: ObjectRef,
                     metadata: Mapping[str, Any] | None = None, preview: str = "",
                     lease: Lease | None = None) -> ArtifactInfo:
        """Record an artifact whose object is already stored; replaces one of the same name.

        :param ref: where the serialized object is (inline bytes or a blob digest).
        :param metadata: JSON-able user metadata (other values are stored as text).
        :param preview: a short text shown in listings.
        :param lease: the claim under which the task runs: recorded only while it is current.
        :raises LeaseLost: ``lease`` is no longer current.
        """
        info = artifact_info(task_id, name, ref, metadata, preview)
        row = artifact_row(info)

        def upsert() -> None:
            self._fence(task_id, lease)
            self._sql(sql.UPSERT_ARTIFACT, row)
            self._sql(sql.TOUCH_TASK, (info.created, task_id))

        self.write(upsert)
        return info

    def get_artifact(self, task_id: str, name: str) -> ArtifactInfo:
        """One artifact of a task by name.

        :raises ArtifactNotFound: the task has no artifact of that name.
        """
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
        """The task's artifacts in the order they were first recorded."""
        return self.artifacts_of([task_id]).get(task_id, [])

    def artifacts_of(self, task_ids: Sequence[str]) -> dict[str, list[ArtifactInfo]]:
        """``{task: its artifacts, first recorded first}`` for many tasks in one statement
        per 400 (a run's page reads every step's at once); tasks with none are left out.
        """
        self._check()
        ids = list(dict.fromkeys(task_ids))
        out: dict[str, list[ArtifactInfo]] = {}
        for start in range(0, len(ids), 400):  # under SQLite's bound-parameter limit
            query = (t.Artifact.select().where(t.Artifact.task.in_(ids[start:start + 400]))
                     .order_by(t.Artifact.id))
            for r in query:
                task = r.task_id
                out.setdefault(task, []).append(ArtifactInfo(
                    task=task, name=r.name, ref=_ref(r), metadata=json.loads(r.metadata),
                    preview=r.preview, created=r.created))
        return out

    def output_objects(self, task_id: str) -> list[tuple[str, str, str, bytes | None]]:
        """``(kind, name, digest, inline bytes or None)`` of each of the task's artifacts
        (kind ``artifact``) and models (``model``): what must verify before its outputs are
        reused. One statement: a cache hit asks this.
        """
        self._check()
        return [(kind, name, digest, bytes(inline) if inline is not None else None)
                for kind, name, digest, inline in
                self._sql(sql.SELECT_OUTPUT_OBJECTS, (task_id, task_id)).fetchall()]

    def add_model(self, task_id: str, name: str, ref: ObjectRef,
                  framework: str | None = None, lease: Lease | None = None) -> ModelInfo:
        """Record an output model (a new id each time) whose object is already stored.

        :param lease: as for :meth:`put_artifact`.
        """
        model_id = new_id()
        now = time.time()

        def insert() -> None:
            self._fence(task_id, lease)
            t.OutputModel.insert(
                id=model_id, task=task_id, name=name, framework=framework, digest=ref.digest,
                size=ref.size, serializer=ref.serializer, type=ref.type, filename=ref.filename,
                inline=ref.inline, created=now).execute()

        self.write(insert)
        return ModelInfo(id=model_id, task=task_id, name=name, ref=ref, framework=framework,
                         created=now)

    def _model_info(self, row: t.OutputModel) -> ModelInfo:
        return ModelInfo(id=row.id, task=row.task_id, name=row.name, ref=_ref(row),
                         framework=row.framework, created=row.created)

    def list_models(self, task_id: str) -> list[ModelInfo]:
        """The task's output models, oldest first."""
        self._check()
        query = (t.OutputModel.select().where(t.OutputModel.task == task_id)
                 .order_by(t.OutputModel.created, t.OutputModel.id))
        return [self._model_info(r) for r in query]

    def get_model(self, model_id: str) -> ModelInfo:
        """One output model by id.

        :raises ModelNotFound: no model has this id.
        """
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
        """Every scalar point of the task in the order they were stored."""
        self._check()
        query = (t.Scalar.select(t.Scalar.title, t.Scalar.series, t.Scalar.iteration,
                                 t.Scalar.value)
                 .where(t.Scalar.task == task_id).order_by(t.Scalar.id).tuples())
        return [ScalarPoint(*row) for row in query]

    def scalar_columns(self, task_id: str
                       ) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
        """``{title: {series: (iterations, values)}}``, each series by iteration (as a chart
        draws it): columns read without a record per point (a task may have 100,000).
        """
        self._check()
        out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
        current: tuple[str, str] | None = None
        xs: list[int] = []
        ys: list[float] = []
        for title, series, iteration, value in self._sql(sql.SCALAR_COLUMNS, (task_id,)):
            if (title, series) != current:
                current = (title, series)
                xs, ys = out.setdefault(title, {}).setdefault(series, ([], []))
            xs.append(iteration)
            ys.append(value)
        return out

    def count_scalars(self, task_id: str) -> int:
        """How many scalar points the task has."""
        self._check()
        return int(self._sql(sql.COUNT_SCALARS, (task_id,)).fetchone()[0])

    def last_scalars(self, task_id: str) -> dict[str, dict[str, dict[str, float]]]:
        """``{title: {series: {"last", "min", "max"}}}``; "last" is the highest iteration."""
        self._check()
        out: dict[str, dict[str, dict[str, float]]] = {}
        for title, series, vmin, vmax, last in self._sql(sql.LAST_SCALARS, (task_id,)):
            out.setdefault(title, {})[series] = {"last": last, "min": vmin, "max": vmax}
        return out

    def set_single_values(self, task_id: str, values: Mapping[str, float]) -> None:
        """Set (or replace) named single values of the task."""
        def upsert() -> None:
            for name, value in values.items():
                (t.SingleValue.insert(task=task_id, name=name, value=value)
                 .on_conflict(conflict_target=[t.SingleValue.task, t.SingleValue.name],
                              preserve=[t.SingleValue.value]).execute())

        self.write(upsert)

    def single_values(self, task_id: str) -> dict[str, float]:
        """``{name: value}`` of the task's single values."""
        self._check()
        return {r.name: r.value for r in
                t.SingleValue.select().where(t.SingleValue.task == task_id)}

    def add_report(self, task_id: str, kind: str, content: str, title: str = "",
                   series: str = "", iteration: int | None = None) -> ReportInfo:
        """Add a report of ``kind`` ``text``, ``table`` or ``plot`` (``content`` as text, or
        JSON). An image a plot shows is already in the blob store: its record names it by
        digest.
        """
        now = time.time()
        self.write(lambda: t.Report.insert(task=task_id, kind=kind, content=content,
                                           title=title, series=series, iteration=iteration,
                                           ts=now).execute())
        return ReportInfo(task=task_id, kind=kind, title=title, series=series,
                          iteration=iteration, content=content, created=now)

    def reports(self, task_id: str, kind: str | None = None) -> list[ReportInfo]:
        """The task's reports (of ``kind`` only, if given) in the order they were added."""
        self._check()
        query = t.Report.select().where(t.Report.task == task_id).order_by(t.Report.id)
        if kind is not None:
            query = query.where(t.Report.kind == kind)
        return [ReportInfo(task=task_id, kind=r.kind, title=r.title, series=r.series,
                           iteration=r.iteration, content=r.content, created=r.ts)
                for r in query]
