"""``PipelineDecorator``: pipelines written as plain Python functions (ClearML's decorators).

``@PipelineDecorator.pipeline`` turns a function into a pipeline whose arguments are the run's
parameters (``Args``). Inside it, calling a ``@PipelineDecorator.component`` adds a node to
the run and returns at once with a lazy result; the run loop launches the node as soon as its
inputs are ready, so independent components run concurrently. A lazy result blocks only when
its value is used; passing it to another component makes a parent edge and hands the value
over as a stored artifact, never through the controller.

A component called while a step runs (a component calling a component) runs right there as a
child task of the calling step. Called outside any pipeline, a component is a plain function.

Modes: ``PipelineDecorator.debug_pipeline()`` runs every step synchronously in this process
(breakpoints work); ``run_locally()`` runs each step in its own subprocess (the default when
no queue is set). With a default queue and neither, the components go to their queues for
agents, and the pipeline itself first to ``pipeline_execution_queue`` (as ClearML).
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import lazy_object_proxy

from . import context, functions, monitoring
from .config import MODE_ENV
from .controller import PipelineController
from .definition import default_max_workers, function_node, refuse_queues
from .errors import PipekitError, StepFailed
from .executor import DEBUG_EXECUTOR, REMOTE_EXECUTOR
from .logger import Logger
from .nodes import NodeStatus, PipelineSpec
from .runner import Runner
from .runs import enqueue_controller
from .store import get_store
from .task import Task, current_step, executing
from .versioning import check_version

__all__ = ["LazyResult", "PipelineDecorator"]


class LazyResult(lazy_object_proxy.Proxy):
    """A component's return value: behaves as the value, fetched when first used.

    Passing one to another component does not fetch it: it becomes a reference to the
    producing step's artifact, and that step becomes a parent.
    """


class _Fetch:
    """The factory behind a :class:`LazyResult`: waits for the node, then loads its output."""

    def __init__(self, runner: Runner, step: str, output: str) -> None:
        self.runner, self.step, self.output = runner, step, output

    def __call__(self) -> Any:
        node = self.runner.nodes[self.step]
        if not NodeStatus(node.status).is_final:
            if self.runner.runs_in_caller and context.active_run() is self.runner:
                self.runner.run_until(lambda: NodeStatus(node.status).is_final)
            else:
                self.runner.wait_for(self.step)
        if not NodeStatus(node.status).is_success or not isinstance(node.executed, str):
            raise StepFailed(self.step, node.status, node.reason)
        return Task(node.executed).artifacts[self.output].get()


def _lazy_source(value: Any) -> _Fetch | None:
    if type(value) is LazyResult:  # type(), not isinstance(): that would fetch the value
        factory = value.__factory__
        if isinstance(factory, _Fetch):
            return factory
    return None


def _force_nested(value: Any) -> Any:
    """Lazy results inside lists, tuples and dicts are fetched (a nested component's
    arguments, which run here and now).
    """
    if type(value) is LazyResult:
        return value.__wrapped__
    if isinstance(value, list):
        return [_force_nested(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_force_nested(v) for v in value)
    if isinstance(value, dict):
        return {k: _force_nested(v) for k, v in value.items()}
    return value


def _referenced(value: Any) -> Any:
    """A component argument with every lazy result of this run, however deep in lists,
    tuples and dicts, replaced by a reference to the producing step's output: each producer
    becomes a parent (fan-in: "train three models, pick the best"), and the step receives
    the values. Other lazy results are fetched.
    """
    source = _lazy_source(value)
    if source is not None:
        return f"${{{source.step}.{source.output}}}"
    if type(value) is LazyResult:
        return value.__wrapped__
    if isinstance(value, list):
        return [_referenced(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_referenced(v) for v in value)
    if isinstance(value, dict):
        return {k: _referenced(v) for k, v in value.items()}
    return value


class _Component:
    """A decorated component: a plain function outside a pipeline, a step inside one."""

    def __init__(self, fn: Callable[..., Any], options: dict[str, Any]) -> None:
        self.fn = fn
        self.options = options
        self.name = options.get("name") or fn.__name__
        self.return_values = _names(options.get("return_values"))
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        step = current_step()
        runner = PipelineDecorator._current_run()
        if step is not None:
            return self._run_nested(step, args, kwargs)
        if runner is None:
            return self.fn(*args, **kwargs)
        return self._add(runner, args, kwargs)

    def _arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            bound = inspect.signature(self.fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise PipekitError(f"component {self.name!r}: {exc}") from None
        return dict(bound.arguments)

    def _add(self, runner: Runner, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        arguments = self._arguments(args, kwargs)
        parents = list(_names(self.options.get("parents")))
        values: dict[str, Any] = {}
        for arg, value in arguments.items():
            values[arg] = _referenced(value)
        with PipelineDecorator._lock:
            name = self.name
            calls = PipelineDecorator._local.calls
            count = calls.get(name, 0)
            calls[name] = count + 1
            if count:
                name = f"{name}_{count}"
        o = self.options
        if PipelineDecorator._chosen_mode() is None and not runner.uses_queues:
            refuse_queues(o.get("execution_queue"), f"component {self.name!r} is",
                          "set a default queue (pipeline(default_queue=...) or "
                          "set_default_execution_queue()), or call "
                          "PipelineDecorator.run_locally() or debug_pipeline()")
        node = function_node(
            name, self.fn, values, self.return_values, task_type=o.get("task_type"),
            parents=parents, queue=o.get("execution_queue"),
            monitor_metrics=o.get("monitor_metrics"),
            monitor_artifacts=o.get("monitor_artifacts"),
            monitor_models=o.get("monitor_models"), time_limit=o.get("time_limit"),
            continue_on_fail=bool(o.get("continue_on_fail")),
            pre_execute_callback=o.get("pre_execute_callback"),
            post_execute_callback=o.get("post_execute_callback"), cache=bool(o.get("cache")),
            retry_on_failure=o.get("retry_on_failure"),
            status_change_callback=o.get("status_change_callback"),
            helper_functions=o.get("helper_functions"), cache_version=o.get("cache_version"))
        node.parameters = {f"kwargs/{k}": v for k, v in values.items()}
        runner.add(node)
        if runner.runs_in_caller:  # debug: run it now, right here
            runner.run_until(lambda: NodeStatus(node.status).is_final)
        results = [LazyResult(_Fetch(runner, name, out)) for out in self.return_values]
        if not results:
            return None
        return results[0] if len(results) == 1 else tuple(results)

    def _run_nested(self, parent: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run as a child task of the step that called us, here and now."""
        store = get_store()
        arguments = {k: _force_nested(v) for k, v in self._arguments(args, kwargs).items()}
        data = functions.pack(self.fn, self.name)
        code = functions.code_of(self.fn, self.options.get("helper_functions") or (), data)
        # objects among the arguments are stored on the calling step, as the runner stores
        # a run's on its controller
        stored = functions.store_objects(arguments, name=self.name, owner=parent.id)
        info = functions.create_task(
            store, self.fn, data, code, stored, self.return_values,
            project=parent.project, name=self.name, type=self.options.get("task_type"),
            parent=parent.id)
        child = Task(info.id)
        done = functions.call(info.id)
        if done.status != "completed":
            raise StepFailed(self.name, done.status, done.status_reason)
        values = [child.artifacts[out].get() for out in self.return_values]
        if not values:
            return None
        return values[0] if len(values) == 1 else tuple(values)


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


class PipelineDecorator:
    """ClearML's ``PipelineDecorator``: ``component``, ``pipeline`` and the run modes."""

    _mode: ClassVar[str | None] = None        # "debug", "local" or None (by queues)
    _executor: ClassVar[str] = "subprocess"
    _max_workers: ClassVar[int | None] = None
    _default_queue: ClassVar[str | None] = None
    #: the run whose pipeline logic this thread executes, and its component call counts
    _local: ClassVar[threading.local] = threading.local()
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def component(cls, _func: Callable[..., Any] | None = None, *,
                  return_values: Sequence[str] | str | None = ("return_object",),
                  name: str | None = None, cache: bool = False, task_type: str | None = None,
                  execution_queue: str | None = None, parents: Sequence[str] | None = None,
                  monitor_metrics: Sequence[Any] | None = None,
                  monitor_artifacts: Sequence[Any] | None = None,
                  monitor_models: Sequence[Any] | None = None,
                  retry_on_failure: int | Callable[..., bool] | None = None,
                  pre_execute_callback: Callable[..., Any] | None = None,
                  post_execute_callback: Callable[..., Any] | None = None,
                  status_change_callback: Callable[..., Any] | None = None,
                  helper_functions: Sequence[Callable[..., Any]] | None = None,
                  time_limit: float | None = None, continue_on_fail: bool = False,
                  cache_version: str | None = None, **_clearml_only: Any) -> Any:
        """Make a function a pipeline component (a step when called inside a pipeline).

        :param return_values: names of the return values, each stored as an artifact of
            the step's task (several names: the function returns a tuple).
        :param cache_version: (pipekit's own) part of the step's cache key: change it to
            stop reusing cached results after a change the key cannot see.
        """
        options = dict(return_values=return_values, name=name, cache=cache,
                       task_type=task_type, execution_queue=execution_queue, parents=parents,
                       monitor_metrics=monitor_metrics, monitor_artifacts=monitor_artifacts,
                       monitor_models=monitor_models, retry_on_failure=retry_on_failure,
                       pre_execute_callback=pre_execute_callback,
                       post_execute_callback=post_execute_callback,
                       status_change_callback=status_change_callback,
                       helper_functions=helper_functions, time_limit=time_limit,
                       continue_on_fail=continue_on_fail, cache_version=cache_version)

        def decorate(fn: Callable[..., Any]) -> _Component:
            monitoring.parse(name or fn.__name__, monitor_metrics, monitor_artifacts,
                             monitor_models)
            return _Component(fn, options)

        return decorate(_func) if _func is not None else decorate

    @classmethod
    def pipeline(cls, name: str, project: str, version: str | None = None,
                 default_queue: str | None = None,
                 pipeline_execution_queue: str | None = "services",
                 abort_on_failure: bool = False, add_pipeline_tags: bool = False,
                 auto_version_bump: bool = False,
                 retry_on_failure: int | Callable[..., bool] | None = None,
                 multi_instance_support: bool = False, **_clearml_only: Any
                 ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Make a function a pipeline: calling it runs one pipeline run and returns the
        function's return value.

        :param version: numbers separated by dots (``'1.0.0'``, ``'1.2'``, ``'23'``); ``None``
            or empty: the pipeline's newest version (``1.0.0`` for a new one).
        :raises DefinitionError: ``version`` is not such a version.
        """
        version = check_version(version) if version else None

        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(fn)
            def run_pipeline(*args: Any, **kwargs: Any) -> Any:
                signature = inspect.signature(fn)
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                defaults = {p.name: None if p.default is p.empty else p.default
                            for p in signature.parameters.values()}
                spec = PipelineSpec(name=name, project=project, version=version,
                                    parameters=dict(bound.arguments), defaults=defaults,
                                    auto_version_bump=auto_version_bump,
                                    abort_on_failure=abort_on_failure,
                                    retry_on_failure=retry_on_failure,
                                    add_pipeline_tags=add_pipeline_tags,
                                    default_queue=default_queue or cls._default_queue)
                return cls._execute(fn, spec, bound, pipeline_execution_queue)

            return run_pipeline

        return decorate

    @classmethod
    def _execute(cls, fn: Callable[..., Any], spec: PipelineSpec,
                 bound: inspect.BoundArguments, controller_queue: str | None = None) -> Any:
        outer = cls._current_run()
        if outer is not None and current_step() is None:
            # (a step running in this thread -- debug mode -- may nest a pipeline)
            raise PipekitError(f"pipeline {spec.name!r} called by the logic of pipeline "
                               f"{outer.spec.name!r}: call it from a component to nest it")
        mode = cls._chosen_mode()
        executor = DEBUG_EXECUTOR if mode == "debug" else cls._executor
        if mode is None and spec.default_queue:
            # Remote, as ClearML: the components go to their queues; unless this process
            # already executes the controller, it goes to `pipeline_execution_queue` first.
            executor = REMOTE_EXECUTOR
            if controller_queue and outer is None and \
                    not PipelineController._executing_controller():
                info = enqueue_controller(spec, controller_queue)
                print(f"pipeline {spec.name!r} enqueued on {controller_queue!r} as run "
                      f"{info.id}: an agent serving it runs the controller; watch it with "
                      f"`pipekit runs show {info.id[:12]}`", flush=True)
                sys.exit(0)
        view = PipelineController._attach(spec)
        runner = Runner(spec, pipeline=view, executor=executor, dynamic=True,
                        max_workers=cls._max_workers or default_max_workers())
        view._runner = runner
        runner.start()
        for arg in bound.arguments:  # a rerun or `pipekit run --param` changed the Args
            bound.arguments[arg] = spec.parameters[arg]
        loop: threading.Thread | None = None
        errors: list[BaseException] = []
        if not runner.runs_in_caller:
            def drive() -> None:
                try:
                    runner.run()
                except BaseException as exc:  # re-raised in the caller's thread
                    errors.append(exc)

            loop = threading.Thread(target=drive, daemon=True,
                                    name=f"pipekit-run-{runner.run_id}")
            loop.start()
        saved = getattr(cls._local, "run", None), getattr(cls._local, "calls", {})
        cls._local.run, cls._local.calls = runner, {}
        try:
            with executing(runner.run_id, controller=True):
                result = fn(*bound.args, **bound.kwargs)
        except KeyboardInterrupt:
            runner.stop("stopped by user (KeyboardInterrupt)")
            raise
        except BaseException as exc:
            runner.abort(f"pipeline function raised {type(exc).__name__}: {exc}")
            raise
        finally:
            cls._local.run, cls._local.calls = saved  # a nested run gives the outer one back
            runner.close()
            if loop is not None:
                loop.join()
            else:
                runner.run()
        if errors:
            raise errors[0]
        return result

    @classmethod
    def run_locally(cls, executor: str = "subprocess", max_workers: int | None = None) -> None:
        """Run the controller here and every step on this machine (each its own subprocess
        by default; ``executor`` picks another executor plugin).
        """
        cls._mode, cls._executor, cls._max_workers = "local", executor, max_workers

    @classmethod
    def debug_pipeline(cls) -> None:
        """Run every step synchronously in this process (breakpoints work); each step is
        still recorded as a task.
        """
        cls._mode = "debug"

    @classmethod
    def set_default_execution_queue(cls, default_execution_queue: str | None) -> None:
        cls._default_queue = default_execution_queue

    @classmethod
    def get_logger(cls) -> Logger:
        return PipelineController.get_logger()

    @classmethod
    def upload_artifact(cls, name: str, artifact_object: Any, **kwargs: Any) -> bool:
        return PipelineController.upload_artifact(name, artifact_object, **kwargs)

    @classmethod
    def upload_model(cls, model_name: str, model_local_path: Any, **kwargs: Any) -> Any:
        return PipelineController.upload_model(model_name, model_local_path, **kwargs)

    @classmethod
    def get_current_pipeline(cls) -> PipelineController | None:
        """The running pipeline, as ClearML returns it: a controller (``.id``, ``add_tags``,
        ``connect_configuration``, ``get_parameters`` ...), or ``None`` outside a pipeline.
        """
        run = cls._current_run() or context.active_run()
        return run.pipeline if run is not None else None

    @classmethod
    def _current_run(cls) -> Runner | None:
        return getattr(cls._local, "run", None)

    @classmethod
    def _chosen_mode(cls) -> str | None:
        """``debug`` or ``local`` as chosen by ``pipekit run --mode``, else in code."""
        return os.environ.get(MODE_ENV) or cls._mode or None

