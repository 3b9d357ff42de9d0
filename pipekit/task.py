"""``Task``: ClearML's task API over the embedded store.

A :class:`Task` is a handle (an id); every property reads the store, so two processes looking
at one task agree. ``Task.init`` makes the running script a task: it records the script,
tees its output into the task log and gives the task exactly one final status at exit.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from . import context
from . import params as P
from .artifacts import Artifact, Model, store_artifact, store_value
from .connect import connect, connect_configuration
from .errors import (
    PipekitError,
    TaskNotFound,
    TaskStatusError,
    TaskTimeout,
)
from .logger import Logger, flush_metrics
from .models import ParamInfo, Status, TaskInfo, TaskType, check_name
from .plugin_manager import has_impls, notify
from .script import ScriptLifecycle, patch_argparse, script_file, script_info
from .store import get_store

__all__ = ["Task", "current_step", "executing"]


@contextmanager
def executing(task_id: str, *, controller: bool = False) -> Iterator[Task]:
    """Make ``task_id`` this thread's current task while a function step runs, or, with
    ``controller``, while this thread runs a pipeline's logic (then no step is current, even
    inside a step that started the pipeline).
    """
    task = Task(task_id)
    task._executing = not controller
    task._controller = controller
    with context.scope(task_id, controller=controller, handle=task):
        yield task


def current_step() -> Task | None:
    """The pipeline step this thread executes: a function step run here, or the script
    task this process was launched to execute (never a controller).
    """
    scope = context.thread_scope()
    if scope is not None:
        return None if scope.controller else scope.handle
    if context.launched_task_id():
        task = Task.current_task()
        if task is not None and task.data.type != TaskType.controller.value:
            return task
    return None


class _Artifacts(Mapping[str, Artifact]):
    """``task.artifacts``: a live, read-only mapping of name -> :class:`Artifact`."""

    def __init__(self, task_id: str) -> None:
        self._task_id = task_id

    def __getitem__(self, name: str) -> Artifact:
        store = get_store()
        return Artifact(store, store.get_artifact(self._task_id, name))

    def __iter__(self) -> Iterator[str]:
        return iter([a.name for a in get_store().list_artifacts(self._task_id)])

    def __len__(self) -> int:
        return len(get_store().list_artifacts(self._task_id))


class Task:
    """One unit of work: parameters, code, status, artifacts, metrics, models and log."""

    TaskTypes = TaskType
    TaskStatusEnum = Status

    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, task_id: str) -> None:
        self._id = task_id
        self._executing = False  # launched to execute this task (PIPEKIT_TASK_ID)
        self._controller = False  # the pipeline logic of this controller task runs here
        self._logger: Logger | None = None

    # -- identity ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._id

    @property
    def data(self) -> TaskInfo:
        """The task as stored now."""
        return get_store().get_task(self._id)

    @property
    def name(self) -> str:
        return self.data.name

    @property
    def project(self) -> str:
        """The project's name (pipekit's projects are identified by name)."""
        return self.data.project

    def get_project_name(self) -> str:
        return self.data.project

    @property
    def task_type(self) -> str:
        return self.data.type

    @property
    def parent(self) -> str | None:
        return self.data.parent

    def get_status(self) -> str:
        return self.data.status

    @property
    def status(self) -> str:
        return self.get_status()

    def get_tags(self) -> list[str]:
        return list(self.data.tags)

    def reload(self) -> None:
        """Re-read the task (ClearML's ``Task.reload``). Every property of a pipekit task
        reads the store when asked, so this only checks that the task still exists.

        :raises TaskNotFound: the task was deleted.
        """
        get_store().get_task(self._id)

    @staticmethod
    def running_locally() -> bool:
        """Whether this process runs on its own rather than launched to execute a task (by
        a worker, an agent or a pipeline's subprocess step: ``PIPEKIT_TASK_ID`` is set), as
        ClearML's ``Task.running_locally()`` is ``not running_remotely()``.
        """
        return not context.launched_task_id()

    def __repr__(self) -> str:
        return f"<Task {self._id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other._id == self._id

    def __hash__(self) -> int:
        return hash(self._id)

    # -- creating and finding tasks ---------------------------------------------------------

    @classmethod
    def current_task(cls) -> Task | None:
        """The task this thread runs as: the function step it executes, else the process's
        task (from ``Task.init`` or an executing step), else the controller task of the
        pipeline whose logic runs here.
        """
        scope = context.thread_scope()
        if scope is not None:
            return scope.handle
        current = context.process_task()
        launched = context.launched_task_id()
        if current is None and launched:
            current = cls(launched)
            current._executing = True
            context.set_process_task(current)
        if current is None:
            run = context.active_run()
            if run is not None and run.run_id is not None:
                return cls(run.run_id)  # the pipeline logic runs as its controller task
        return current

    @classmethod
    def init(cls, project_name: str | None = None, task_name: str | None = None,
             task_type: str | TaskType = TaskType.training, tags: Sequence[str] | None = None,
             reuse_last_task_id: bool | str = True, continue_last_task: bool = False,
             output_uri: str | None = None, auto_connect_arg_parser: bool = True,
             auto_connect_frameworks: Any = True, auto_resource_monitoring: Any = True,
             auto_connect_streams: bool = True, **_clearml_only: Any) -> Task:
        """Make this process a task, or return the task it was launched to execute.

        Outside an execution: creates a task recording the script (path, digest, argv,
        working dir), marks it ``in_progress``, tees stdout/stderr into its log, and gives
        it one final status at exit (``completed``; ``failed`` with the traceback on an
        uncaught exception or a non-zero exit code; ``stopped`` on Ctrl-C or SIGTERM).
        With ``PIPEKIT_TASK_ID`` set it returns that task.
        """
        scope = context.thread_scope()
        if scope is not None:
            return scope.handle  # a function step calling Task.init() gets its own task
        with cls._lock:
            current = context.process_task()
            if current is not None and current._lifecycle is not None:
                return current
            store = get_store()
            env_id = context.launched_task_id()
            if env_id:
                task = cls(store.resolve_task_id(env_id))
                task._executing = True
                owner = task.data.status != Status.in_progress.value
                if owner:
                    # Nobody launched us as a worker: this process owns the final status.
                    store.transition(task.id, Status.in_progress,
                                     worker=context.worker_id())
                task._lifecycle = ScriptLifecycle(task, owner=owner,
                                             capture=owner and auto_connect_streams)
                if tags:
                    store.add_tags(task.id, tags)
            else:
                script = script_info()
                info = store.create_task(
                    project=project_name or "default",
                    name=task_name or Path(script.get("path") or "task").stem,
                    type=str(TaskType(task_type)), status=Status.in_progress,
                    script=script, code_digest=script.get("digest"), tags=tags or (),
                )
                store.update_task(info.id, worker=context.worker_id())
                task = cls(info.id)
                task._lifecycle = ScriptLifecycle(task, owner=True, capture=auto_connect_streams)
            context.set_process_task(task)
            if auto_connect_arg_parser:
                patch_argparse()
            return task

    _lifecycle: ScriptLifecycle | None = None

    @classmethod
    def create(cls, project_name: str | None = None, task_name: str | None = None,
               task_type: str | TaskType | None = None, script: str | None = None,
               working_directory: str | None = None,
               argparse_args: Sequence[tuple[str, Any]] | None = None,
               tags: Sequence[str] | None = None, **_clearml_only: Any) -> Task:
        """A new draft (``created``) task that runs ``python script`` in its working directory.

        Without ``script`` (ClearML allows it) the draft runs nothing: it holds parameters,
        configuration, metrics, artifacts and models, and running it fails saying so.

        :param argparse_args: ``[(name, value)]`` stored in section ``Args``; they override
            the script's ``argparse`` arguments when it runs.
        :raises PipekitError: ``script`` or ``working_directory`` does not exist.
        """
        record, code = script_file(script, working_directory) if script else ({}, None)
        args = [P.ParamInfo("Args", str(k), P.to_text(v), P.type_name(v))
                for k, v in (argparse_args or [])]
        info = get_store().create_task(
            project=project_name or "default",
            name=task_name or (Path(record["path"]).stem if script else "untitled"),
            type=str(TaskType(task_type or TaskType.training)), script=record,
            code_digest=record.get("digest"), code=code, tags=tags or (), params=args)
        return cls(info.id)

    @classmethod
    def get_task(cls, task_id: str | None = None, project_name: str | None = None,
                 task_name: str | None = None, include_archived: bool = True,
                 **_clearml_only: Any) -> Task:
        """A task by id (or unique id prefix), or the most recent task of that name.

        :raises TaskNotFound: nothing matches.
        """
        store = get_store()
        if task_id:
            return cls(store.resolve_task_id(task_id))
        if not task_name:
            raise PipekitError("Task.get_task needs task_id, or task_name (and project_name)")
        found = store.find_tasks(project=project_name, name=task_name,
                                 include_archived=include_archived, limit=1)
        if not found:
            where = f" in project {project_name!r}" if project_name else ""
            raise TaskNotFound(f"{task_name}{where}")
        return cls(found[0].id)

    @classmethod
    def get_tasks(cls, task_ids: Sequence[str] | None = None, project_name: str | None = None,
                  task_name: str | None = None, tags: Sequence[str] | None = None,
                  status: Sequence[str] | str | None = None,
                  task_filter: Mapping[str, Any] | None = None, **_clearml_only: Any
                  ) -> list[Task]:
        """Tasks matching every given filter, most recent first."""
        if task_ids:
            return [cls.get_task(task_id=t) for t in task_ids]
        statuses = [status] if isinstance(status, str) else list(status or ())
        task_filter = dict(task_filter or {})
        statuses += list(task_filter.get("status", ()))
        found = get_store().find_tasks(project=project_name, name=task_name, tags=tags or (),
                                       status=statuses, type=task_filter.get("type", ()))
        return [cls(info.id) for info in found]

    @classmethod
    def clone(cls, source_task: Task | str, name: str | None = None,
              comment: str | None = None, parent: str | None = None,
              project: str | None = None) -> Task:
        """A new ``created`` task with the source's code, parameters and configuration.

        ``parent`` defaults to the source's parent, else the source itself.
        """
        source_id = source_task.id if isinstance(source_task, Task) else source_task
        store = get_store()
        info = store.clone_task(store.resolve_task_id(source_id), name=name, parent=parent,
                                project=project)
        if comment:
            store.update_task(info.id, comment=comment)
        return cls(info.id)

    @classmethod
    def enqueue(cls, task: Task | TaskInfo | str, queue_name: str | None = None,
                queue_id: str | None = None) -> dict[str, str]:
        """Put a task (a :class:`Task`, a record or an id) on a queue; it becomes ``queued``.

        :raises QueueNotFound: no queue of that name (the message lists the known queues).
        """
        task_id = task.id if isinstance(task, (Task, TaskInfo)) else task
        if not isinstance(task_id, str):
            raise TaskNotFound(repr(task))
        queue = queue_name or queue_id or "default"
        store = get_store()
        task_id = store.resolve_task_id(task_id)
        store.enqueue(task_id, queue)
        return {"task": task_id, "queue": queue, "status": Status.queued.value}

    # -- parameters -------------------------------------------------------------------------

    def connect(self, mutable: Any, name: str | None = None) -> Any:
        """Connect a dict, ``argparse.Namespace`` or object as parameters of ``name``.

        In a fresh run its values are stored as ``name/key``; when this process executes an
        existing task, stored values override ``mutable`` in place, cast back to each
        original value's type. Returns ``mutable``.
        """
        return connect(self, mutable, name)

    def connect_configuration(self, configuration: Any, name: str | None = None,
                              description: str | None = None) -> Any:
        """Connect a named configuration: a dict (returned, overridden in place when
        executing) or a file path (returns the path of the file to read, which holds the
        stored text when executing).
        """
        return connect_configuration(self, configuration, name)

    def get_configuration_object(self, name: str) -> str | None:
        stored = get_store().get_configuration(self._id, name)
        return None if stored is None else stored[0]

    def get_configuration_object_as_dict(self, name: str) -> Any:
        stored = get_store().get_configuration(self._id, name)
        return None if stored is None else json.loads(stored[0]) if stored[1] == "json" \
            else stored[0]

    def get_parameters(self, backwards_compatibility: bool = True, cast: bool = False
                       ) -> dict[str, Any]:
        """Flat ``{"Section/key": "value"}`` (values cast to their types with ``cast``)."""
        return {key: P.cast_param(p) if cast else p.value
                for key, p in get_store().get_parameters(self._id).items()}

    def get_parameters_info(self) -> dict[str, ParamInfo]:
        """``{"Section/key": ParamInfo}``: each parameter's text, type and description."""
        return get_store().get_parameters(self._id)

    def get_parameters_as_dict(self, cast: bool = False) -> dict[str, dict[str, Any]]:
        """Nested ``{"Section": {"key": value}}``."""
        out: dict[str, dict[str, Any]] = {}
        for p in get_store().get_parameters(self._id).values():
            out.setdefault(p.section, {})[p.name] = P.cast_param(p) if cast else p.value
        return out

    def get_parameter(self, name: str, default: Any = None, cast: bool = False) -> Any:
        section, key = P.split_name(name)
        param = get_store().get_parameters(self._id).get(f"{section}/{key}")
        if param is None:
            return default
        return P.cast_param(param) if cast else param.value

    def set_parameter(self, name: str, value: Any, description: str | None = None,
                      value_type: Any = None) -> None:
        """Set one parameter, ``"Section/key"`` (a bare key goes to ``General``)."""
        self._set_params({name: value}, {name: description or ""})

    def set_parameters(self, *args: Mapping[str, Any], **kwargs: Any) -> None:
        """Set many parameters at once from a ``{"Section/key": value}`` mapping."""
        values: dict[str, Any] = {}
        for mapping in args:
            values.update(mapping)
        values.update(kwargs)
        self._set_params(values, {})

    def _set_params(self, values: Mapping[str, Any], descriptions: Mapping[str, str]) -> None:
        rows = []
        for full, value in values.items():
            section, key = P.split_name(full)
            rows.append(ParamInfo(section, key, P.to_text(value), P.type_name(value),
                                  descriptions.get(full, "")))
        get_store().set_parameters(self._id, rows)

    # -- artifacts and models ---------------------------------------------------------------

    def upload_artifact(self, name: str, artifact_object: Any,
                        metadata: Mapping[str, Any] | None = None, delete_after_upload: bool =
                        False, auto_pickle: bool = True, preview: Any = None,
                        wait_on_upload: bool = True, **_clearml_only: Any) -> bool:
        """Store ``artifact_object`` as artifact ``name`` of this task (replacing one of the
        same name). Identical content is stored once; small values live in the database.

        As in ClearML, a ``str`` naming an existing file or folder uploads that file or
        folder (a folder as a zip); a ``pathlib.Path`` always names one. Any other string is
        stored as the string.
        """
        check_name("artifact", name)
        artifact_object = _path_if_named(artifact_object)
        store_artifact(self._id, name, artifact_object, metadata, preview)
        if delete_after_upload and isinstance(artifact_object, os.PathLike):
            Path(artifact_object).unlink(missing_ok=True)
        return True

    @property
    def artifacts(self) -> Mapping[str, Artifact]:
        """``task.artifacts[name]`` -> :class:`~pipekit.artifacts.Artifact`."""
        return _Artifacts(self._id)

    def upload_model(self, name: str, path_or_object: Any, framework: str | None = None
                     ) -> Model:
        """Store a model (a weights file/folder, or any object) as an output model."""
        check_name("model", name)
        store = get_store()
        ref, _ = store_value(store, _path_if_named(path_or_object), name)
        info = store.add_model(self._id, name, ref, framework,
                               lease=context.lease_for(self._id))
        if has_impls("pipekit_model_uploaded"):
            notify("pipekit_model_uploaded", task=self.data, model=info)
        return Model(store, info)

    @property
    def models(self) -> dict[str, list[Model]]:
        """``{"input": [], "output": [Model, …]}`` in upload order."""
        store = get_store()
        return {"input": [], "output": [Model(store, m) for m in store.list_models(self._id)]}

    # -- metrics and log --------------------------------------------------------------------

    def get_logger(self) -> Logger:
        if self._logger is None:
            self._logger = Logger(self._id)
        return self._logger

    @property
    def logger(self) -> Logger:
        """The task's :class:`Logger` (ClearML's ``task.logger``)."""
        return self.get_logger()

    def get_last_scalar_metrics(self) -> dict[str, dict[str, dict[str, float]]]:
        """``{title: {series: {"last", "min", "max"}}}``."""
        flush_metrics(self._id)
        return get_store().last_scalars(self._id)

    def get_reported_scalars(self, max_samples: int = 0, x_axis: str = "iter"
                             ) -> dict[str, dict[str, dict[str, list[float]]]]:
        """``{title: {series: {"x": [iterations], "y": [values]}}}`` in report order."""
        flush_metrics(self._id)
        out: dict[str, dict[str, dict[str, list[float]]]] = {}
        for p in get_store().scalars(self._id):
            series = out.setdefault(p.title, {}).setdefault(p.series, {"x": [], "y": []})
            series["x"].append(p.iteration)
            series["y"].append(p.value)
        return out

    def get_reported_single_values(self) -> dict[str, float]:
        return get_store().single_values(self._id)

    def get_log(self) -> str:
        """The task's captured console output so far."""
        return get_store().read_log(self._id).data.decode("utf-8", "replace")

    # -- status -----------------------------------------------------------------------------

    def wait_for_status(self, status: Iterable[str] = (Status.completed,),
                        raise_on_status: Iterable[str] | None = (Status.failed, Status.stopped),
                        check_interval_sec: float = 0.1, timeout: float | None = None) -> str:
        """Block until the task reaches one of ``status``; returns it.

        :raises TaskStatusError: it reached one of ``raise_on_status`` instead.
        :raises TaskTimeout: ``timeout`` seconds passed.
        """
        wanted = {str(s) for s in status}
        bad = {str(s) for s in raise_on_status or ()}
        deadline = None if timeout is None else time.monotonic() + timeout
        interval = min(0.02, check_interval_sec)
        while True:
            info = self.data
            if info.status in wanted:
                return info.status
            if info.status in bad:
                raise TaskStatusError(self._id, info.status, info.status_reason)
            if deadline is not None and time.monotonic() >= deadline:
                raise TaskTimeout(self._id, timeout or 0, info.status)
            time.sleep(interval)
            interval = min(check_interval_sec, interval * 2)

    def mark_started(self, force: bool = False) -> None:
        get_store().transition(self._id, Status.in_progress, worker=context.worker_id(),
                              force=force)

    def mark_completed(self, ignore_errors: bool = True, status_message: str | None = None,
                       force: bool = False) -> None:
        flush_metrics(self._id)
        get_store().transition(self._id, Status.completed, reason=status_message or "",
                               force=force)

    def mark_failed(self, ignore_errors: bool = True, status_reason: str | None = None,
                    status_message: str | None = None, force: bool = False) -> None:
        flush_metrics(self._id)
        get_store().transition(self._id, Status.failed,
                               reason=status_reason or status_message or "", force=force)

    def mark_stopped(self, force: bool = False, status_message: str | None = None) -> None:
        flush_metrics(self._id)
        get_store().transition(self._id, Status.stopped, reason=status_message or "",
                               force=force)

    def publish(self) -> None:
        get_store().transition(self._id, Status.published)

    def reset(self) -> None:
        """Back to ``created`` so the task can be run or enqueued again."""
        get_store().transition(self._id, Status.created)

    def set_archived(self, archive: bool) -> None:
        get_store().set_archived(self._id, bool(archive))

    def get_archived(self) -> bool:
        return self.data.archived

    def add_tags(self, tags: Sequence[str] | str) -> None:
        get_store().add_tags(self._id, [tags] if isinstance(tags, str) else list(tags))

    def set_comment(self, comment: str) -> None:
        get_store().update_task(self._id, comment=comment)

    def execute_remotely(self, queue_name: str | None = None, clone: bool = False,
                         exit_process: bool = True) -> Task | None:
        """Stop running this script here and leave its task to be run elsewhere (ClearML's
        way to register a template: run the script once, up to this call).

        When this process executes the task (a pipeline step, an agent) the call does
        nothing and returns ``None``. Otherwise the task (with ``clone``, a copy of it) is
        left a draft (``created``) holding what was connected so far, enqueued on
        ``queue_name`` if given; with ``exit_process`` the process then exits with code 0.

        :raises PipekitError: ``clone=False`` with ``exit_process=False`` (the script cannot
            go on running a task that is now a draft).
        """
        if self._executing:
            return None
        if not clone and not exit_process:
            raise PipekitError("execute_remotely(clone=False) must exit the process "
                               "(exit_process=True)")
        flush_metrics(self._id)
        if clone:
            target = Task.clone(self, name=self.name)
        else:
            if self._lifecycle is not None:
                self._lifecycle.release()
            get_store().transition(self._id, Status.created, force=True)
            target = self
        if queue_name:
            Task.enqueue(target, queue_name)
        if exit_process:
            sys.exit(0)
        return target

    def close(self) -> None:
        """Finish this process's task now (as at exit) and stop capturing its output."""
        lifecycle = self._lifecycle
        if lifecycle is not None:
            lifecycle.finish()
        else:
            flush_metrics(self._id)
        if context.process_task() is self:
            context.set_process_task(None)


def _path_if_named(value: Any) -> Any:
    """ClearML's reading of a string where a file may go: an existing file or folder's path."""
    if isinstance(value, str) and 0 < len(value) < 2048 and "\0" not in value \
            and os.path.exists(value):
        return Path(value)
    return value

