"""``PipelineController``: ClearML's pipeline-from-tasks and pipeline-from-functions API.

The controller only *defines*: ``add_parameter``/``add_step``/``add_function_step`` build a
:class:`~pipekit.nodes.PipelineSpec`, checking each step as it is added (name, base task,
picklable function, reference syntax). ``start*`` checks the whole DAG (unknown parents and
references, cycles) and hands it to :class:`~pipekit.runner.Runner`, which runs it.

Modes (SPEC §3): ``start_locally(run_pipeline_steps_locally=True)`` runs every step on this
machine with an executor plugin (``subprocess`` by default; ``inline`` is debug mode, every
step synchronous in this process). Steps on a queue run remotely, by ``pipekit agent``
processes.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import context, monitoring
from . import params as P
from .config import MODE_ENV
from .dag import Dag
from .definition import (
    check_arguments,
    check_queues,
    check_retry,
    check_task_overrides,
    default_max_workers,
    function_node,
    validate,
)
from .errors import (
    BadReference,
    DefinitionError,
    DuplicateStepError,
    PipekitError,
    TaskNotFound,
)
from .executor import DEBUG_EXECUTOR, REMOTE_EXECUTOR
from .logger import Logger
from .models import NAME_RE, TaskType
from .nodes import Node, NodeStatus, PipelineSpec
from .references import find
from .runner import Runner
from .runs import enqueue_controller
from .store import get_store
from .task import Task
from .versioning import check_version

__all__ = ["PipelineController"]


class PipelineController:
    """A pipeline of steps (ClearML's ``PipelineController``); its runs are controller tasks."""

    Node = Node

    def __init__(self, name: str, project: str, version: str | None = None,
                 auto_version_bump: bool = False, abort_on_failure: bool = False,
                 add_pipeline_tags: bool = False, target_project: str | bool | None = None,
                 retry_on_failure: int | Callable[..., bool] | None = None,
                 default_execution_queue: str | None = None, **_clearml_only: Any) -> None:
        if not isinstance(name, str) or not name.strip():
            raise DefinitionError(f"pipeline name must be a non-empty string, not {name!r}")
        check_retry(retry_on_failure, "pipeline")
        # ClearML (automation/controller.py, __init__): a blank version means "not set".
        version = check_version(version) if version else None
        self._spec = PipelineSpec(
            name=name, project=project or "default", version=version,
            auto_version_bump=auto_version_bump,
            abort_on_failure=abort_on_failure, retry_on_failure=retry_on_failure,
            target_project=target_project if isinstance(target_project, str) else None,
            add_pipeline_tags=add_pipeline_tags, default_queue=default_execution_queue)
        self._runner: Runner | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- definition ---------------------------------------------------------------------------

    def add_parameter(self, name: str, default: Any = None, description: str | None = None,
                      param_type: str | None = None) -> None:
        """A pipeline parameter (``${pipeline.<name>}``), stored in the run's ``Args``."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise DefinitionError(f"invalid pipeline parameter name {name!r}")
        self._spec.parameters[name] = default
        if description:
            self._spec.parameter_descriptions[name] = description
        if param_type:
            self._spec.parameter_types[name] = str(param_type)

    def add_step(self, name: str, base_task_id: str | None = None,
                 parents: Sequence[str] | None = None,
                 parameter_override: Mapping[str, Any] | None = None,
                 configuration_overrides: Mapping[str, Any] | None = None,
                 task_overrides: Mapping[str, Any] | None = None,
                 execution_queue: str | None = None,
                 monitor_metrics: Sequence[Any] | None = None,
                 monitor_artifacts: Sequence[Any] | None = None,
                 monitor_models: Sequence[Any] | None = None,
                 time_limit: float | None = None, base_task_project: str | None = None,
                 base_task_name: str | None = None, clone_base_task: bool = True,
                 continue_on_fail: bool = False,
                 pre_execute_callback: Callable[..., Any] | None = None,
                 post_execute_callback: Callable[..., Any] | None = None,
                 cache_executed_step: bool = False,
                 base_task_factory: Callable[[Node], Any] | None = None,
                 retry_on_failure: int | Callable[..., bool] | None = None,
                 status_change_callback: Callable[..., Any] | None = None,
                 cache_version: str | None = None, **_clearml_only: Any) -> bool:
        """A step that runs a clone of an existing task, with overrides.

        ``cache_version`` (pipekit's own) is part of the step's cache key: change it to stop
        reusing cached results after a change the key cannot see.

        The template is ``base_task_id``, or the most recent task named ``base_task_name``
        in ``base_task_project``, or what ``base_task_factory(node)`` returns at launch.

        :raises DefinitionError: a bad or duplicate name, no template, a malformed reference.
        """
        self._check_name(name)
        monitoring.parse(name, monitor_metrics, monitor_artifacts, monitor_models)
        if base_task_factory is None:
            base_task_id = self._find_template(name, base_task_id, base_task_project,
                                               base_task_name)
            if not clone_base_task:
                status = get_store().get_task(base_task_id).status
                if status != "created":
                    raise DefinitionError(f"step {name!r}: clone_base_task=False needs a draft "
                                          f"(created) task, but {base_task_id} is {status}",
                                          step=name)
        overrides = dict(task_overrides or {})
        check_task_overrides(name, overrides)
        parameters = dict(parameter_override or {})
        for key in parameters:
            P.split_name(key)
        node = Node(name=name, base_task_id=base_task_id, queue=execution_queue,
                    parents=list(parents or ()), timeout=time_limit,
                    parameters=parameters, configurations=dict(configuration_overrides or {}),
                    task_overrides=overrides, clone_task=clone_base_task,
                    continue_on_fail=continue_on_fail, cache_executed_step=cache_executed_step,
                    monitor_metrics=list(monitor_metrics or ()),
                    monitor_artifacts=list(monitor_artifacts or ()),
                    monitor_models=list(monitor_models or ()),
                    retry_on_failure=retry_on_failure,
                    pre_execute_callback=pre_execute_callback,
                    post_execute_callback=post_execute_callback,
                    status_change_callback=status_change_callback,
                    base_task_factory=base_task_factory,
                    cache_version=None if cache_version is None else str(cache_version))
        self._add(node)
        return True

    def add_function_step(self, name: str, function: Callable[..., Any],
                          function_kwargs: Mapping[str, Any] | None = None,
                          function_return: Sequence[str] | None = None,
                          project_name: str | None = None, task_name: str | None = None,
                          task_type: str | None = None, parents: Sequence[str] | None = None,
                          execution_queue: str | None = None,
                          monitor_metrics: Sequence[Any] | None = None,
                          monitor_artifacts: Sequence[Any] | None = None,
                          monitor_models: Sequence[Any] | None = None,
                          time_limit: float | None = None, continue_on_fail: bool = False,
                          pre_execute_callback: Callable[..., Any] | None = None,
                          post_execute_callback: Callable[..., Any] | None = None,
                          cache_executed_step: bool = False,
                          retry_on_failure: int | Callable[..., bool] | None = None,
                          status_change_callback: Callable[..., Any] | None = None,
                          helper_functions: Sequence[Callable[..., Any]] | None = None,
                          cache_version: str | None = None, **_clearml_only: Any) -> bool:
        """A step that calls ``function(**function_kwargs)`` as its own task.

        The function's source (and ``helper_functions``') is the task's code; each name in
        ``function_return`` becomes an artifact of the task holding that return value
        (``${<name>.<return>}`` passes it to another step).

        As in ClearML, an argument that is a reference (``"${step.out}"``,
        ``"${pipeline.rows}"``) must name a step or parameter added before this step; other
        references are checked by ``start``.

        :raises DefinitionError: a bad or duplicate name, a function that cannot be pickled,
            a bad return name, a malformed reference, or an argument referring to a step or
            pipeline parameter not added yet (a ``ValueError``, as ClearML raises).
        """
        if not callable(function):
            raise DefinitionError(f"step {name!r}: function must be callable, not "
                                  f"{type(function).__name__}", step=name)
        self._check_name(name)
        check_arguments(name, function_kwargs, self._spec)
        node = function_node(
            name, function, function_kwargs, function_return, project_name=project_name,
            task_name=task_name, task_type=task_type, parents=parents, queue=execution_queue,
            monitor_metrics=monitor_metrics, monitor_artifacts=monitor_artifacts,
            monitor_models=monitor_models, time_limit=time_limit,
            continue_on_fail=continue_on_fail, pre_execute_callback=pre_execute_callback,
            post_execute_callback=post_execute_callback, cache=cache_executed_step,
            retry_on_failure=retry_on_failure, status_change_callback=status_change_callback,
            helper_functions=helper_functions, cache_version=cache_version)
        self._add(node)
        return True

    def _check_name(self, name: str) -> None:
        if name in self._spec.nodes:
            raise DuplicateStepError(name)
        Dag().add(name)  # the naming rule lives with the DAG

    def _add(self, node: Node) -> None:
        try:
            find([node.parameters, node.configurations, node.task_overrides])
        except BadReference as exc:
            raise BadReference(exc.value, exc.reason, step=node.name) from None
        check_retry(node.retry_on_failure, f"step {node.name!r}")
        self._spec.nodes[node.name] = node

    def _find_template(self, step: str, task_id: str | None, project: str | None,
                       name: str | None) -> str:
        store = get_store()
        try:
            if task_id:
                return store.resolve_task_id(task_id)
            if name:
                return Task.get_task(project_name=project, task_name=name).id
        except TaskNotFound as exc:
            raise DefinitionError(f"step {step!r}: base task not found: {exc}",
                                  step=step) from None
        raise DefinitionError(f"step {step!r} needs base_task_id, base_task_project + "
                              "base_task_name, or base_task_factory", step=step)

    def set_default_execution_queue(self, default_execution_queue: str | None) -> None:
        self._spec.default_queue = default_execution_queue

    def connect_configuration(self, configuration: Any, name: str | None = None,
                              description: str | None = None) -> Any:
        """Keep ``configuration`` (a dict, or text) on the run's controller task."""
        name = name or "General"
        self._spec.configurations[name] = configuration
        if self._runner is not None and self._runner.run_id is not None:
            text, kind = P.config_text(configuration)  # the run exists: write it now
            get_store().set_configuration(self._runner.run_id, name, text, kind)
        return configuration

    def add_tags(self, tags: Sequence[str] | str) -> None:
        new = [tags] if isinstance(tags, str) else list(tags)
        self._spec.tags.extend(new)
        if self._runner is not None and self._runner.run_id is not None:
            get_store().add_tags(self._runner.run_id, new)

    def get_parameters(self) -> dict[str, Any]:
        return dict(self._spec.parameters)

    # -- running ------------------------------------------------------------------------------

    def start(self, queue: str | None = "services",
              step_task_created_callback: Callable[..., Any] | None = None,
              step_task_completed_callback: Callable[..., Any] | None = None,
              wait: bool = True) -> bool:
        """Run the pipeline remotely, as ClearML does: its controller goes to ``queue`` and
        this process exits; an agent serving ``queue`` runs this script again as the
        controller, which sends each step to its queue (``execution_queue``, else the default
        queue) for agents to run.

        In the process an agent started to execute the controller (or under ``pipekit run``)
        the pipeline runs here, its steps on their queues; ``pipekit run --mode local`` or
        ``debug`` runs the steps here too.

        :raises DefinitionError: a step has no queue and there is no default queue; a bad
            DAG. Raised before anything is enqueued.
        """
        mode = os.environ.get(MODE_ENV)
        if mode is None and not self._executing_controller():
            validate(self._spec)
            check_queues(self._spec)
            info = enqueue_controller(self._spec, queue or "services")
            print(f"pipeline {self._spec.name!r} enqueued on {queue or 'services'!r} as run "
                  f"{info.id}: an agent serving it runs the controller "
                  f"(`pipekit agent --queue {queue or 'services'}`); watch it with "
                  f"`pipekit runs show {info.id[:12]}`", flush=True)
            sys.exit(0)
        self._launch(remote=True, executor=None, max_workers=None, wait=wait,
                     created=step_task_created_callback, completed=step_task_completed_callback)
        return True

    @staticmethod
    def _executing_controller() -> bool:
        """Whether this process was started to execute a controller task (an agent running
        a pipeline enqueued with ``start(queue=...)``, ``pipekit run``, a rerun).
        """
        launched = context.launched_task_id()
        if not launched:
            return False
        try:
            return get_store().get_task(launched).type == TaskType.controller.value
        except TaskNotFound:
            return False

    def start_locally(self, run_pipeline_steps_locally: bool = False,
                      executor: str | None = None, max_workers: int | None = None,
                      step_task_created_callback: Callable[..., Any] | None = None,
                      step_task_completed_callback: Callable[..., Any] | None = None,
                      wait: bool = True) -> None:
        """Run the controller here. Its steps go to their queues (``execution_queue``, else
        the default queue) for ``pipekit agent`` processes to run, as in ClearML; with
        ``run_pipeline_steps_locally=True`` every step runs on this machine instead.

        :param executor: the executor plugin for local steps: ``subprocess`` (default),
            ``thread``, ``process``, ``inline`` (debug: synchronous, in this process) or one
            a plugin registers.
        :param max_workers: how many steps run at once (default ``PIPEKIT_MAX_WORKERS``,
            else 8; ``inline`` runs one).
        """
        self._launch(remote=not run_pipeline_steps_locally, executor=executor,
                     max_workers=max_workers, wait=wait, created=step_task_created_callback,
                     completed=step_task_completed_callback)

    def _launch(self, *, remote: bool, executor: str | None, max_workers: int | None,
                wait: bool, created: Callable[..., Any] | None,
                completed: Callable[..., Any] | None) -> None:
        if self._runner is not None:
            raise PipekitError(f"pipeline {self._spec.name!r} was already started; create a "
                               "new PipelineController to run it again")
        mode = os.environ.get(MODE_ENV)  # `pipekit run --mode` overrides the script's choice
        if mode == "debug":
            remote, executor = False, DEBUG_EXECUTOR
        elif mode == "local":
            remote = False
        if remote:  # the steps go to their queues, for agents
            check_queues(self._spec)
            executor = REMOTE_EXECUTOR
        runner = Runner(self._spec, pipeline=self, executor=executor or "subprocess",
                        max_workers=max_workers or default_max_workers(),
                        step_task_created_callback=created,
                        step_task_completed_callback=completed)
        runner.start()
        self._runner = runner
        if wait:
            runner.run()
            return
        self._thread = threading.Thread(target=self._run_in_background, daemon=True,
                                        name=f"pipekit-run-{runner.run_id}")
        self._thread.start()

    def _run_in_background(self) -> None:
        assert self._runner is not None
        try:
            self._runner.run()
        except BaseException as exc:  # kept for wait() to re-raise
            self._error = exc

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a run started with ``wait=False``; returns whether it has ended."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                return False
            if self._error is not None:
                error, self._error = self._error, None
                raise error
        return self._runner is not None and self._runner.status is not None

    def stop(self, timeout: float | None = None, mark_failed: bool = False,
             mark_aborted: bool = False) -> None:
        """Stop every running step and end the run ``stopped``."""
        if self._runner is None:
            return
        self._runner.stop("stopped by PipelineController.stop()")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def is_running(self) -> bool:
        return self._runner is not None and self._runner.status is None

    def is_successful(self, fail_on_step_fail: bool = True, fail_condition: str = "all") -> bool:
        """Whether the run completed (a ``continue_on_fail`` step's failure still counts as
        success, as does a step served from the cache).
        """
        return self._runner is not None and self._runner.status == "completed"

    def elapsed(self) -> float:
        """Seconds since the run started (-1 before it starts)."""
        if self._runner is None or self._runner.started is None:
            return -1.0
        return (self._runner.ended or time.time()) - self._runner.started

    def get_pipeline_dag(self) -> dict[str, Node]:
        """Every step's :class:`Node`, in the order they were added."""
        return dict(self._spec.nodes)

    def get_processed_nodes(self) -> list[Node]:
        """Nodes that have finished (completed, failed, stopped, skipped or cached)."""
        return [n for n in self._spec.nodes.values() if NodeStatus(n.status).is_final]

    def get_running_nodes(self) -> list[Node]:
        return [n for n in self._spec.nodes.values() if n.status == NodeStatus.in_progress.value]

    @classmethod
    def _attach(cls, spec: PipelineSpec) -> PipelineController:
        """A controller view of a run the decorator drives (what its callbacks receive);
        the caller sets its ``_runner``.
        """
        self = cls.__new__(cls)
        self._spec, self._runner = spec, None
        self._thread, self._error = None, None
        return self

    @property
    def id(self) -> str | None:
        """The current run's controller task id (``None`` before ``start``)."""
        return self._runner.run_id if self._runner is not None else None

    @property
    def version(self) -> str | None:
        """The pipeline version (ClearML's ``PipelineController.version``): the one given as
        ``version=`` until the run starts, then the version the run records (chosen as
        docs/versioning.md says; a decorated pipeline's is settled when it ends).
        """
        info = self._runner.info if self._runner is not None else None
        return info.version if info is not None else self._spec.version

    @property
    def task(self) -> Task | None:
        return Task(self.id) if self.id is not None else None

    # -- acting on the controller task from a step --------------------------------------------

    @classmethod
    def _controller_task(cls) -> Task:
        current = Task.current_task()
        if current is not None:
            info = current.data
            if info.type == TaskType.controller.value:
                return current
            if info.parent is not None:
                parent = get_store().get_task(info.parent)
                if parent.type == TaskType.controller.value:
                    return Task(parent.id)
        running = context.active_run()
        if running is not None and running.run_id is not None:
            return Task(running.run_id)
        raise PipekitError("no pipeline is running here: PipelineController.upload_artifact, "
                           "upload_model and get_logger work inside a pipeline step or while "
                           "a pipeline runs")

    @classmethod
    def upload_artifact(cls, name: str, artifact_object: Any,
                        metadata: Mapping[str, Any] | None = None,
                        delete_after_upload: bool = False, auto_pickle: bool = True,
                        preview: Any = None, wait_on_upload: bool = False,
                        **_clearml_only: Any) -> bool:
        """Upload an artifact to the pipeline's controller task (from a step or the run)."""
        return cls._controller_task().upload_artifact(
            name, artifact_object, metadata=metadata, delete_after_upload=delete_after_upload,
            preview=preview)

    @classmethod
    def upload_model(cls, model_name: str, model_local_path: Any,
                     upload_uri: str | None = None, framework: str | None = None,
                     **_clearml_only: Any) -> Any:
        """Upload a model to the pipeline's controller task."""
        return cls._controller_task().upload_model(model_name, model_local_path,
                                                   framework=framework)

    @classmethod
    def get_logger(cls) -> Logger:
        """The controller task's logger (scalars and text shown on the run)."""
        return cls._controller_task().get_logger()
