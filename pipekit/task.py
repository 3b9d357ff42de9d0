"""``Task``: ClearML's task API over the embedded store.

A :class:`Task` is a handle (an id); every property reads the store, so two processes looking
at one task agree. ``Task.init`` makes the running script a task: it records the script,
tees its output into the task log and gives the task exactly one final status at exit.
"""

from __future__ import annotations

import argparse
import atexit
import builtins
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

from . import params as P
from .artifacts import Artifact, Model, store_value
from .capture import StreamCapture, open_log
from .config import TASK_ENV
from .errors import (
    ParameterError,
    PipekitError,
    SerializationError,
    TaskNotFound,
    TaskStatusError,
    TaskTimeout,
)
from .hashing import digest_file
from .logger import Logger, flush_metrics
from .models import ParamInfo, Status, TaskInfo, TaskType, check_name
from .plugin_manager import has_impls, notify
from .store import get_store

#: what a thread runs as: the function step it executes, or the controller of the pipeline
#: whose logic it runs (steps of the inline and thread executors share the controller's
#: process, and a pipeline can run inside a step, so "the current task" is per thread)
_step = threading.local()


@contextmanager
def executing(task_id: str, *, controller: bool = False) -> Iterator[Task]:
    """Make ``task_id`` this thread's current task while a function step runs, or, with
    ``controller``, while this thread runs a pipeline's logic (then no step is current, even
    inside a step that started the pipeline).
    """
    previous = getattr(_step, "task", None)
    task = Task(task_id)
    task._executing = not controller
    task._controller = controller
    _step.task = task
    try:
        yield task
    finally:
        _step.task = previous


def current_step() -> Task | None:
    """The pipeline step this thread executes: a function step run here, or the script
    task this process was launched to execute (never a controller).
    """
    step = getattr(_step, "task", None)
    if step is not None:
        return None if step._controller else step
    if os.environ.get(TASK_ENV):
        task = Task.current_task()
        if task is not None and task.data.type != TaskType.controller.value:
            return task
    return None


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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

    _current: ClassVar[Task | None] = None
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
        task (from ``Task.init`` or an executing step).
        """
        step = getattr(_step, "task", None)
        if step is not None:
            return step
        if cls._current is None and os.environ.get(TASK_ENV):
            task = cls(os.environ[TASK_ENV])
            task._executing = True
            cls._current = task
        if cls._current is None:
            from .runner import active_run  # (runner imports this module)

            run = active_run()
            if run is not None and run.run_id is not None:
                return cls(run.run_id)  # the pipeline logic runs as its controller task
        return cls._current

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
        step = getattr(_step, "task", None)
        if step is not None:
            return step  # a function step calling Task.init() gets its own task
        with cls._lock:
            if cls._current is not None and cls._current._lifecycle is not None:
                return cls._current
            store = get_store()
            env_id = os.environ.get(TASK_ENV)
            if env_id:
                task = cls(store.resolve_task_id(env_id))
                task._executing = True
                owner = task.data.status != Status.in_progress.value
                if owner:
                    # Nobody launched us as a worker: this process owns the final status.
                    store.transition(task.id, Status.in_progress, worker=worker_id())
                task._lifecycle = _Lifecycle(task, owner=owner,
                                             capture=owner and auto_connect_streams)
                if tags:
                    store.add_tags(task.id, tags)
            else:
                script = _script_info()
                info = store.create_task(
                    project=project_name or "default",
                    name=task_name or Path(script.get("path") or "task").stem,
                    type=str(TaskType(task_type)), status=Status.in_progress,
                    script=script, code_digest=script.get("digest"), tags=tags or (),
                )
                store.update_task(info.id, worker=worker_id())
                task = cls(info.id)
                task._lifecycle = _Lifecycle(task, owner=True, capture=auto_connect_streams)
            cls._current = task
            if auto_connect_arg_parser:
                _patch_argparse()
            return task

    _lifecycle: _Lifecycle | None = None

    @classmethod
    def create(cls, project_name: str | None = None, task_name: str | None = None,
               task_type: str | TaskType | None = None, script: str | None = None,
               working_directory: str | None = None,
               argparse_args: Sequence[tuple[str, Any]] | None = None,
               tags: Sequence[str] | None = None, **_clearml_only: Any) -> Task:
        """A draft (``created``) task that runs ``python script`` in its working directory.

        :param argparse_args: ``[(name, value)]`` stored in section ``Args``; they override
            the script's ``argparse`` arguments when it runs.
        """
        if not script:
            raise PipekitError("Task.create needs script= (the Python file to run)")
        workdir = Path(working_directory or os.getcwd()).expanduser().resolve()
        path = Path(script).expanduser()
        if not path.is_absolute():
            path = (workdir / path) if (workdir / path).exists() else path.resolve()
        if not path.is_file():
            raise PipekitError(f"script {script!r} does not exist")
        if not workdir.is_dir():
            raise PipekitError(f"working directory {str(workdir)!r} does not exist")
        digest = digest_file(path)
        args = [P.ParamInfo("Args", str(k), P.to_text(v), P.type_name(v))
                for k, v in (argparse_args or [])]
        info = get_store().create_task(
            project=project_name or "default", name=task_name or path.stem,
            type=str(TaskType(task_type or TaskType.training)),
            script={"path": str(path.resolve()), "argv": [], "working_dir": str(workdir),
                    "entry_point": path.name, "digest": digest},
            code_digest=digest, code=path.read_text(errors="replace"), tags=tags or (),
            params=args,
        )
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
    def enqueue(cls, task: Task | str, queue_name: str | None = None,
                queue_id: str | None = None) -> dict[str, str]:
        """Put a task on a queue for an agent to run; it becomes ``queued``.

        :raises QueueNotFound: no queue of that name (the message lists the known queues).
        """
        task_id = task.id if isinstance(task, Task) else task
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
        if isinstance(mutable, argparse.Namespace):
            section = name or "Args"
            _connect_attrs(self, mutable, section, vars(mutable))
        elif isinstance(mutable, dict):
            section = name or P.DEFAULT_SECTION
            _connect_dict(self, mutable, section)
        elif isinstance(mutable, (list, tuple, str, int, float, bool)) or mutable is None:
            raise ParameterError(f"connect() takes a dict, argparse.Namespace or object, "
                                 f"not {type(mutable).__name__}")
        else:
            section = name or P.DEFAULT_SECTION
            values = {k: v for k, v in _public_attrs(mutable).items()}
            _connect_attrs(self, mutable, section, values)
        return mutable

    def connect_configuration(self, configuration: Any, name: str | None = None,
                              description: str | None = None) -> Any:
        """Connect a named configuration: a dict (returned, overridden in place when
        executing) or a file path (returns the path of the file to read, which holds the
        stored text when executing).
        """
        name = name or P.DEFAULT_SECTION
        store = get_store()
        stored = store.get_configuration(self._id, name) if self._executing else None
        if isinstance(configuration, dict):
            if stored is not None and stored[1] == "json":
                configuration.clear()
                configuration.update(json.loads(stored[0]))
            else:
                store.set_configuration(self._id, name, json.dumps(configuration, default=str),
                                        "json")
            return configuration
        path = Path(configuration)
        if not path.is_file():
            raise ParameterError(f"configuration {name!r}: {str(configuration)!r} is neither "
                                 "a dict nor an existing file", name)
        if stored is not None:
            target = store.settings.cache_dir / "config" / self._id
            target.mkdir(parents=True, exist_ok=True, mode=0o700)
            out = target / path.name
            out.write_text(stored[0])
            return str(out) if isinstance(configuration, str) else out
        store.set_configuration(self._id, name, path.read_text(), "text")
        return configuration

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
        """
        check_name("artifact", name)
        if isinstance(artifact_object, os.PathLike) and not os.path.exists(artifact_object):
            raise SerializationError(f"artifact {name!r}: no such file or folder "
                                     f"{os.fspath(artifact_object)!r}", artifact=name)
        store = get_store()
        ref, auto_preview = store_value(store, artifact_object, name)
        info = store.put_artifact(self._id, name, ref, metadata,
                                  str(preview) if preview is not None else auto_preview)
        if delete_after_upload and isinstance(artifact_object, (str, os.PathLike)):
            Path(artifact_object).unlink(missing_ok=True)
        if has_impls("pipekit_artifact_uploaded"):
            notify("pipekit_artifact_uploaded", task=self.data, artifact=info)
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
        ref, _ = store_value(store, path_or_object, name)
        info = store.add_model(self._id, name, ref, framework)
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
        path = get_store().log_path(self._id)
        return path.read_text(errors="replace") if path.exists() else ""

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
        get_store().transition(self._id, Status.in_progress, worker=worker_id(), force=force)

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
        if Task._current is self:
            Task._current = None


# -- connecting ---------------------------------------------------------------------------------


def _public_attrs(obj: Any) -> dict[str, Any]:
    names = vars(obj) if hasattr(obj, "__dict__") else {}
    if not names:
        names = {n: getattr(obj, n) for n in dir(obj) if not n.startswith("_")}
    return {k: v for k, v in names.items() if not k.startswith("_") and not callable(v)}


def _stored(task: Task, section: str) -> dict[str, ParamInfo]:
    if not task._executing:
        return {}
    prefix = f"{section}/"
    return {key[len(prefix):]: p for key, p in get_store().get_parameters(task.id).items()
            if key.startswith(prefix)}


def _connect_dict(task: Task, mapping: dict[str, Any], section: str) -> None:
    stored = _stored(task, section)
    if stored:
        _override_nested(mapping, stored, section)
    missing = [p for p in P.to_params(section, mapping) if p.name not in stored]
    if missing:
        get_store().set_parameters(task.id, missing)


def _override_nested(mapping: dict[str, Any], stored: dict[str, ParamInfo], section: str,
                     prefix: str = "") -> None:
    for key, value in list(mapping.items()):
        full = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            _override_nested(value, stored, section, f"{full}/")
        elif full in stored:
            p = stored[full]
            mapping[key] = P.cast(p.value, like=value, stored_type=p.type, name=p.key)


def _connect_attrs(task: Task, obj: Any, section: str, values: dict[str, Any]) -> None:
    stored = _stored(task, section)
    for key, value in values.items():
        if key in stored:
            p = stored[key]
            setattr(obj, key, P.cast(p.value, like=value, stored_type=p.type, name=p.key))
    missing = [p for p in P.to_params(section, values) if p.name not in stored]
    if missing:
        get_store().set_parameters(task.id, missing)


# -- argparse capture -----------------------------------------------------------------------------

_argparse_state = threading.local()
_original_parse_known_args = argparse.ArgumentParser.parse_known_args


def _patch_argparse() -> None:
    """Capture arguments parsed after ``Task.init`` into section ``Args`` (as ClearML does)."""
    if argparse.ArgumentParser.parse_known_args is not _original_parse_known_args:
        return

    def parse_known_args(self: argparse.ArgumentParser, args: Any = None,
                         namespace: Any = None) -> Any:
        task = Task._current
        if task is None or getattr(_argparse_state, "depth", 0):
            return _original_parse_known_args(self, args, namespace)
        _argparse_state.depth = 1
        stored = _stored(task, "Args")
        saved = []
        try:
            for action in self._actions:
                if action.dest in stored and action.dest != argparse.SUPPRESS:
                    # A stored value satisfies a required argument the command line lacks.
                    saved.append((action, action.required, action.nargs))
                    action.required = False
                    if not action.option_strings and action.nargs is None:
                        action.nargs = "?"
            ns, extras = _original_parse_known_args(self, args, namespace)
        finally:
            for action, required, nargs in saved:
                action.required, action.nargs = required, nargs
            _argparse_state.depth = 0
        values = {k: v for k, v in vars(ns).items()}
        for action in self._actions:
            if action.dest in stored and action.dest in values and values[action.dest] is None \
                    and callable(action.type):
                p = stored[action.dest]
                try:
                    setattr(ns, action.dest, action.type(p.value))
                except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
                    raise ParameterError(f"parameter {p.key!r}: cannot read {p.value!r} "
                                         f"for argument {action.dest!r} ({exc})", p.key) from exc
                values.pop(action.dest)
        _connect_attrs(task, ns, "Args", values)
        return ns, extras

    argparse.ArgumentParser.parse_known_args = parse_known_args  # type: ignore[method-assign]


# -- the script's task lifecycle ------------------------------------------------------------------


def _script_info() -> dict[str, Any]:
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else ""
    path = Path(argv0).resolve() if argv0 and argv0 not in ("-c", "-m") else None
    info: dict[str, Any] = {"argv": list(sys.argv[1:]), "working_dir": os.getcwd(),
                            "python": sys.executable}
    if path is not None and path.is_file():
        info.update(path=str(path), entry_point=path.name, digest=digest_file(path))
    else:
        info.update(path=None, entry_point=argv0 or "<interactive>")
    return info


class _Lifecycle:
    """A ``Task.init`` task's end: flush its metrics, and give it its one final status.

    When a worker launched this process (the task was already ``in_progress``), the worker
    owns the final status from the exit code; this process only records why it failed.
    """

    def __init__(self, task: Task, owner: bool, capture: bool) -> None:
        self.task = task
        self.owner = owner
        self.capture = StreamCapture(get_store().log_path(task.id)) if capture else None
        self.exit_code: int | None = None
        self.failure: str | None = None
        self.stopped: str | None = None
        self.done = False
        self._orig_exit = sys.exit
        self._orig_excepthook = sys.excepthook
        sys.exit = self._exit  # type: ignore[assignment]
        sys.excepthook = self._excepthook
        # site's exit()/quit() raise SystemExit themselves, bypassing sys.exit.
        self._orig_builtins = {n: getattr(builtins, n) for n in ("exit", "quit")
                               if hasattr(builtins, n)}
        for n in self._orig_builtins:
            setattr(builtins, n, self._exit)
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, self._sigterm)
        atexit.register(self.finish)

    def _exit(self, code: Any = None) -> None:
        self.exit_code = code if isinstance(code, int) else (0 if code is None else 1)
        self._orig_exit(code)

    def _excepthook(self, etype: type[BaseException], value: BaseException, tb: Any) -> None:
        self._orig_excepthook(etype, value, tb)  # prints to stderr, which the log captures
        if issubclass(etype, KeyboardInterrupt):
            self.stopped = "interrupted (KeyboardInterrupt)"
        else:
            self.failure = f"{etype.__name__}: {value}"
            if self.capture is None and self.owner:
                with open_log(get_store().log_path(self.task.id)) as fh:
                    fh.write("".join(traceback.format_exception(etype, value, tb)).encode())

    def _sigterm(self, signum: int, frame: Any) -> None:
        self.stopped = "terminated by signal 15"
        self._orig_exit(128 + signum)

    def _restore(self) -> None:
        sys.exit = self._orig_exit
        sys.excepthook = self._orig_excepthook
        for n, fn in self._orig_builtins.items():
            setattr(builtins, n, fn)

    def release(self) -> None:
        """Stop watching the process and capturing its output, leaving the task's status
        alone (``execute_remotely``).
        """
        if self.done:
            return
        self.done = True
        self._restore()
        flush_metrics(self.task.id)
        if self.capture is not None:
            get_store().set_log_size(self.task.id, self.capture.stop())

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._restore()
        try:
            flush_metrics(self.task.id)
        finally:
            size = self.capture.stop() if self.capture is not None else None
            store = get_store()
            if size is not None:
                store.set_log_size(self.task.id, size)
            if not self.owner:
                if self.failure or self.stopped:
                    store.update_task(self.task.id, status_reason=self.failure or self.stopped)
            elif self.stopped:
                store.set_status(self.task.id, Status.stopped, reason=self.stopped)
            elif self.failure:
                store.set_status(self.task.id, Status.failed, reason=self.failure)
            elif self.exit_code not in (None, 0):
                store.set_status(self.task.id, Status.failed,
                                 reason=f"exit code {self.exit_code}")
            else:
                store.set_status(self.task.id, Status.completed)
