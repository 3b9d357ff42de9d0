"""The single run loop: every pipeline run, controller or decorator, goes through here.

For each node whose parents all succeeded, in order (SPEC §3):

    resolve references -> pre_execute / step_task_created callbacks (may veto or edit)
    -> create the step's task -> ``pipekit_step_created`` -> executor
    -> outcome -> post_execute / step_task_completed callbacks -> status change callbacks

The loop owns the failure policy: a failed node's descendants are skipped; the run fails
unless the node had ``continue_on_fail``; ``abort_on_failure`` stops everything at the first
failure; ``retry_on_failure`` re-runs a failed node as a fresh task; ``time_limit`` fails a
node that runs too long. The run ends with exactly one final status and, in the same
transaction, no step left non-terminal (:meth:`pipekit.store.Store.finish_run`).

One thread drives the loop at a time; others (the decorator's pipeline function, ``stop()``)
talk to it through :meth:`Runner.add`, :meth:`Runner.stop` and :meth:`Runner.wait_for`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from . import caching, functions
from . import params as P
from .capture import StreamCapture
from .config import NO_CACHE_ENV, TASK_ENV
from .dag import Dag
from .errors import (
    DefinitionError,
    PipekitError,
    PluginError,
    TaskNotFound,
    UnknownReference,
)
from .executor import Executor, Job, Outcome, make_executor
from .hashing import canonical_json, digest_params
from .models import ParamInfo, Status, TaskType
from .nodes import Node, NodeStatus, PipelineSpec, RunInfo
from .plugin_manager import call_each, call_first, has_impls, notify
from .references import Kind, Ref, check, find, resolve, step_dependencies
from .store import get_store
from .task import Task, _script_info, current_step
from .versioning import FIRST_VERSION, choose_version

log = logging.getLogger(__name__)

__all__ = ["Runner", "StepJob", "active_run", "build_dag"]

#: longest pause between two turns of the loop while steps run (it wakes early on events)
_MAX_IDLE = 0.02
#: how often the loop looks for the run or a step aborted from outside (``pipekit tasks abort``)
_OUTSIDE_EVERY = 0.5


_active: list[Runner] = []
_active_lock = threading.Lock()
#: controller tasks this process has taken over (each is run once)
_adopted: set[str] = set()


def _adoptable(store: Any) -> Any:
    """The controller task this process was started to execute, the first time it is asked.

    ``pipekit run`` and ``pipekit rerun`` create it (a draft, or a clone of a run with new
    ``Args``); a worker executing a pipeline that is a step of another passes its clone.
    """
    task_id = os.environ.get(TASK_ENV)
    if not task_id or task_id in _adopted:
        return None
    try:
        info = store.get_task(task_id)
    except TaskNotFound:
        return None
    if info.type != TaskType.controller.value or info.status not in (
            Status.created.value, Status.queued.value, Status.in_progress.value):
        return None
    _adopted.add(task_id)
    return info


def _hashable(value: Any) -> Any:
    """A parameter default as the structure hash sees it (an object by its type)."""
    try:
        canonical_json(value)
        return value
    except (TypeError, ValueError):
        return f"<{type(value).__module__}.{type(value).__qualname__}>"


def active_run() -> Runner | None:
    """The most recently started run this process is driving, if any."""
    with _active_lock:
        return _active[-1] if _active else None


class StepJob:
    """``node.job``: the step's task, with the few ``ClearmlJob`` methods callbacks use."""

    def __init__(self, task_id: str) -> None:
        self.task = Task(task_id)

    def task_id(self) -> str:
        return self.task.id

    def status(self) -> str:
        return self.task.get_status()

    def is_completed(self) -> bool:
        return self.status() in (Status.completed.value, Status.published.value)

    def is_failed(self) -> bool:
        return self.status() == Status.failed.value

    def is_stopped(self) -> bool:
        return Status(self.status()).is_final

    def __repr__(self) -> str:
        return f"<StepJob {self.task.id}>"


def build_dag(nodes: Iterable[Node]) -> Dag:
    """The DAG of ``nodes``: declared parents plus every step their references name."""
    dag = Dag()
    for node in nodes:
        dag.add(node.name, _all_parents(node))
    return dag


def _all_parents(node: Node) -> list[str]:
    refs = step_dependencies([node.parameters, node.configurations, node.task_overrides])
    return list(dict.fromkeys([*node.parents, *sorted(refs)]))


def validate(spec: PipelineSpec) -> Dag:
    """Check a whole pipeline before anything runs; returns its DAG.

    :raises DefinitionError: an unknown parent, a cycle, a malformed reference or one to an
        unknown step, pipeline parameter or return value; each names the step.
    """
    steps = list(spec.nodes)
    for node in spec.nodes.values():
        _check_node_refs(node, spec, steps)  # before the DAG: "unknown reference" says more
    dag = build_dag(spec.nodes.values())
    dag.validate()
    for node in spec.nodes.values():
        node.parents = list(dag.parents(node.name))  # as ClearML: referenced steps included
    return dag


def _check_node_refs(node: Node, spec: PipelineSpec, steps: list[str]) -> None:
    values = [node.parameters, node.configurations, node.task_overrides]
    check(values, steps, spec.parameters, node.name)
    for ref in find(values):
        if ref.kind is Kind.RETURN and ref.step in spec.nodes:
            source = spec.nodes[ref.step]
            if ref.name not in source.return_artifacts:
                names = source.return_artifacts
                raise UnknownReference(node.name, ref.text, names, missing=ref.name,
                                       what=f"return value of step {ref.step!r}")


class Runner:
    """Runs one pipeline: creates its controller task, drives its nodes, ends the run."""

    def __init__(self, spec: PipelineSpec, *, pipeline: Any = None, executor: str = "subprocess",
                 max_workers: int | None = None, dynamic: bool = False,
                 step_task_created_callback: Callable[..., Any] | None = None,
                 step_task_completed_callback: Callable[..., Any] | None = None,
                 script: dict[str, Any] | None = None, refresh: bool | None = None) -> None:
        self.spec = spec
        self.nodes: dict[str, Node] = spec.nodes
        self.pipeline = pipeline
        self.executor_name = executor
        self.max_workers = max(1, max_workers or (1 if executor == "inline" else 8))
        self.dynamic = dynamic
        self._created_cb = step_task_created_callback
        self._completed_cb = step_task_completed_callback
        self._script = script
        #: run every cached step again (its new result then serves later runs)
        self.refresh = os.environ.get(NO_CACHE_ENV, "") not in ("", "0") \
            if refresh is None else refresh
        self.dag = Dag()
        self.run_id: str | None = None
        self.info: RunInfo | None = None
        self.status: str | None = None
        self.reason = ""
        self.started: float | None = None
        self.ended: float | None = None
        self._executor: Executor | None = None
        self._capture: StreamCapture | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._ready: deque[str] = deque()
        #: pending node -> the parents it still waits for. A set, not a count: a node added to
        #: a dynamic run while a parent is between its status change and releasing its
        #: children must not be released twice.
        self._waiting: dict[str, set[str]] = {}
        self._running: dict[str, tuple[Any, float]] = {}  # node -> (handle, monotonic start)
        self._closed = not dynamic
        self._stop_reason: str | None = None
        self._aborting: str | None = None
        self._failed: list[str] = []
        self._next_outside_check = 0.0
        #: function step -> (its pickle, its code), made once per node
        self._functions: dict[str, tuple[bytes, functions.FunctionCode]] = {}
        self._made: dict[tuple[Any, ...], tuple[bytes, functions.FunctionCode]] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> str:
        """Validate, create the controller task and the run record; returns the run id.

        A process started to execute a controller task (``pipekit run``, ``pipekit rerun``, a
        pipeline that is a step of another) runs as that task, its ``Args`` overriding the
        parameters' values.
        """
        spec = self.spec
        self.dag = validate(spec)
        for node in spec.nodes.values():
            self._pickle(node)
        store = get_store()
        # A dynamic run's structure is known only once its pipeline function has returned.
        structure = None if self.dynamic else self._structure_hash()
        # Before anything is written: a version that cannot be chosen leaves nothing behind.
        if structure is not None:
            version = choose_version(store, project=spec.project, name=spec.name,
                                     requested=spec.version, auto_bump=spec.auto_version_bump,
                                     structure_hash=structure)
        else:  # provisional: settled by _finish once the structure is known
            latest = store.latest_pipeline_version(spec.project, spec.name)
            version = spec.version or (latest[0] if latest else FIRST_VERSION)
        caller = current_step()
        # A pipeline started inside a step is nested in it and never takes over the task this
        # process was launched for (a step's process inherits its controller's PIPEKIT_TASK_ID).
        adopted = _adoptable(store) if caller is None else None
        if adopted is not None:
            try:
                self._apply_args(store.get_parameters(adopted.id))
            except PipekitError as exc:  # the worker ends the task: tell it why
                store.update_task(adopted.id, status_reason=f"{type(exc).__name__}: {exc}")
                raise
        params = [ParamInfo("Args", name, P.to_text(value),
                            spec.parameter_types.get(name) or P.type_name(value),
                            spec.parameter_descriptions.get(name, ""))
                  for name, value in spec.parameters.items()]
        configurations = {name: config_text(value)
                          for name, value in spec.configurations.items()}
        if adopted is not None:
            info = self._take_over(store, adopted, params, configurations)
        else:
            script = self._script if self._script is not None else _script_info()
            info = store.create_task(project=spec.project, name=spec.name,
                                     type=TaskType.controller.value,
                                     status=Status.in_progress, script=script,
                                     code_digest=script.get("digest"),
                                     tags=["pipeline", *spec.tags], params=params,
                                     configurations=configurations,
                                     parent=caller.id if caller is not None else None)
        self.run_id = info.id
        if adopted is None and caller is None and not os.environ.get(TASK_ENV) \
                and Task._current is None:
            # The controller's console is its task's log (a worker running the controller as
            # a task, a step running a nested pipeline, or a Task.init() task capture it).
            self._capture = StreamCapture(store.log_path(info.id))
        store.create_run(info.id, dag=self.dag.to_dict(), version=version,
                         structure_hash=structure,
                         pipeline=(spec.project, spec.name) if structure else None)
        self.info = RunInfo(id=info.id, name=spec.name, project=spec.project, version=version,
                            pipeline=self.pipeline,
                            step_task_created_callback=self._created_cb,
                            step_task_completed_callback=self._completed_cb)
        self.started = time.time()
        with _active_lock:
            _active.append(self)
        with self._lock:
            for name in self.dag.order():
                self._enter(self.nodes[name])
        notify("pipekit_pipeline_started", run=self.info)
        return info.id

    def _apply_args(self, stored: dict[str, ParamInfo]) -> None:
        """Set parameter values from an adopted controller task's ``Args``."""
        for param in stored.values():
            if param.section != "Args":
                continue
            if param.name not in self.spec.parameters:
                known = ", ".join(sorted(self.spec.parameters)) or "none"
                raise DefinitionError(f"pipeline {self.spec.name!r} has no parameter "
                                      f"{param.name!r} (its parameters: {known})")
            default = self.spec.parameters[param.name]
            self.spec.parameters[param.name] = (
                P.cast(param.value, like=default, name=param.key)
                if default is not None and param.type == "str" else P.cast_param(param))

    def _take_over(self, store: Any, adopted: Any, params: list[ParamInfo],
                   configurations: dict[str, tuple[str, str]]) -> Any:
        spec = self.spec
        store.update_task(adopted.id, name=spec.name, project=spec.project)
        store.add_tags(adopted.id, ["pipeline", *spec.tags])
        store.set_parameters(adopted.id, params)
        for name, (text, kind) in configurations.items():
            store.set_configuration(adopted.id, name, text, kind)
        store.set_status(adopted.id, Status.in_progress)  # a worker may have done it already
        return store.get_task(adopted.id)

    def _structure_hash(self) -> str:
        """Step names, parents, code digests and parameter defaults (SPEC §3 Versioning)."""
        store = get_store()
        digests: dict[str, str] = {}
        for name, node in self.nodes.items():
            if node.function is not None:
                digests[name] = self._functions[name][1].digest
            elif node.base_task_id is not None:
                base = store.get_task(node.base_task_id)
                digests[name] = base.code_digest or digest_params(base.script)
        defaults = self.spec.defaults if self.spec.defaults is not None \
            else self.spec.parameters
        return self.dag.structure_hash(digests, {k: _hashable(v) for k, v in defaults.items()})

    def run(self) -> str:
        """Start (if needed) and drive the run to its end; returns its final status.

        Ctrl-C stops every running step and the run (``stopped``), then re-raises.
        """
        if self.run_id is None:
            self.start()
        try:
            self.run_until(lambda: self._finished())
        except KeyboardInterrupt:
            self.stop("stopped by user (KeyboardInterrupt)")
            try:
                self._cancel_all()
            finally:
                self._finish()
            raise
        except BaseException as exc:
            self._aborting = self._aborting or f"pipeline controller error: {exc}"
            try:
                self._cancel_all()
            finally:
                self._finish()
            raise
        return self._finish()

    def run_until(self, done: Callable[[], bool]) -> None:
        """Turn the loop until ``done()`` (checked under the lock) or the run can go no further."""
        if self._executor is None:
            self._executor = make_executor(self.executor_name, max_workers=self.max_workers)
        idle = 0.0005
        while True:
            with self._lock:
                if done() or self._finished():
                    return
            self._wake.clear()
            if self._turn():
                idle = 0.0005
                continue
            self._wake.wait(idle)
            idle = min(idle * 2, _MAX_IDLE)

    def stop(self, reason: str = "stopped by user") -> None:
        """Ask the loop to stop every running step and end the run ``stopped``."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
        self._wake.set()

    def abort(self, reason: str) -> None:
        """Ask the loop to stop every running step and end the run ``failed`` with ``reason``."""
        with self._lock:
            if self._aborting is None:
                self._aborting = reason
        self._wake.set()

    def add(self, node: Node) -> None:
        """Add a node to a running dynamic run (a decorated pipeline calling a component).

        :raises DefinitionError: a duplicate name, a parent that does not exist, or a bad
            reference.
        """
        with self._lock:
            if self.run_id is None:
                raise PipekitError("the run has not started")
            if node.name in self.nodes:
                from .errors import DuplicateStepError

                raise DuplicateStepError(node.name)
            _check_node_refs(node, self.spec, [*self.nodes, node.name])
            parents = _all_parents(node)
            for parent in parents:
                if parent not in self.nodes:
                    from .errors import UnknownParentError

                    raise UnknownParentError(node.name, parent, self.nodes)
            node.parents = parents
            self._pickle(node)
            self.dag.add(node.name, parents)
            self.nodes[node.name] = node
            get_store().add_node(self.run_id, node.name, parents, self.dag.to_dict())
            self._enter(node)
        self._wake.set()

    def close(self) -> None:
        """No more nodes will be added: the run ends once the last one finishes."""
        with self._lock:
            self._closed = True
        self._wake.set()

    def wait_for(self, name: str, timeout: float | None = None) -> Node:
        """Block until node ``name`` is final (driving nothing: another thread runs the loop)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not NodeStatus(self.nodes[name].status).is_final:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._changed.wait(remaining)
        return self.nodes[name]

    # -- the loop -----------------------------------------------------------------------------

    def _finished(self) -> bool:
        return (self._closed or self._stop_reason is not None or self._aborting is not None) \
            and not self._running and (not self._ready or self._halting())

    def _halting(self) -> bool:
        return self._stop_reason is not None or self._aborting is not None

    def _turn(self) -> bool:
        """One turn: halt if asked, collect outcomes, enforce time limits, launch ready
        nodes. Returns whether anything happened.
        """
        busy = False
        if self._halting():
            busy = self._cancel_all()
            with self._lock:
                while self._ready:
                    self._skip(self.nodes[self._ready.popleft()], self._stop_reason
                               or self._aborting or "")
            return busy
        assert self._executor is not None
        if self._running and time.monotonic() >= self._next_outside_check:
            self._next_outside_check = time.monotonic() + _OUTSIDE_EVERY
            if self._aborted_outside():
                return True
        for name, (handle, begun) in list(self._running.items()):
            outcome = self._executor.poll(handle)
            node = self.nodes[name]
            if outcome is None and node.timeout and time.monotonic() - begun > node.timeout:
                outcome = self._time_out(node, handle)
            if outcome is not None:
                del self._running[name]
                self._collect(node, outcome)
                busy = True
        while self._ready and len(self._running) < self.max_workers and not self._halting():
            with self._lock:
                name = self._ready.popleft()
            self._launch(self.nodes[name])
            busy = True
            if self.executor_name == "inline":
                break  # collect the outcome before launching the next one
        return busy

    def _enter(self, node: Node) -> None:
        """Place a pending node: ready, waiting on parents, or skipped (a parent can't succeed)."""
        parents = self.dag.parents(node.name)
        bad = [p for p in parents if NodeStatus(self.nodes[p].status).is_final
               and not NodeStatus(self.nodes[p].status).is_success]
        if bad:
            self._skip(node, f"parent {bad[0]!r} {self.nodes[bad[0]].status}")
            return
        missing = {p for p in parents if not NodeStatus(self.nodes[p].status).is_success}
        if missing:
            self._waiting[node.name] = missing
        else:
            self._ready.append(node.name)

    def _launch(self, node: Node) -> None:
        assert self.info is not None and self._executor is not None
        try:
            resolved = self._resolve(node)
            snapshot = dict(node.parameters)
            veto = call_each("pipekit_step_pre_execute", node=node, run=self.info,
                             parameters=resolved)
            if node.skip_job or any(v is False for v in veto):
                self._skip(node, "skipped by pre_execute callback", cascade=True)
                return
            if node.parameters != snapshot:  # a callback edited node.parameters: re-resolve
                edited = {k: v for k, v in node.parameters.items() if snapshot.get(k, _NO) != v}
                resolved.update(self._resolve(node, edited))
                for key in set(snapshot) - set(node.parameters):
                    resolved.pop(key, None)
            if node.function is not None:  # objects become artifacts: their digests are inputs
                assert self.run_id is not None
                kwargs = functions.store_objects(
                    {key.partition("/")[2]: value for key, value in resolved.items()},
                    name=node.task_name or node.name, owner=self.run_id)
                resolved = {f"{functions.KWARGS}/{arg}": value for arg, value in kwargs.items()}
            if node.cache_executed_step:
                node.cache_key = self._cache_key(node, resolved)
                hit = None if node.cache_key is None or self.refresh else call_first(
                    "pipekit_cache_lookup", key=node.cache_key, node=node)
                if hit is not None:
                    self._serve_cached(node, hit)
                    return
            task_id = self._create_task(node, resolved)
        except Exception as exc:
            self._fail(node, _hook_error(exc))
            return
        self._submit(node, task_id)

    def _cache_key(self, node: Node, resolved: dict[str, Any]) -> str | None:
        """The node's cache key, or ``None`` (with a warning) when it cannot have one."""
        store = get_store()
        params: dict[str, Any] = {}
        inputs: dict[str, str] = {}
        for key, value in resolved.items():
            if isinstance(value, functions.ArtifactInput):
                inputs[key] = store.get_artifact(value.task, value.name).ref.digest
            else:
                params[key] = value if node.function is not None else P.to_text(value)
        configuration: dict[str, Any] = {}
        if node.function is not None:
            code = self._functions[node.name][1]
            digest, entry_point = code.digest, code.entry_point
        elif node.base_task_factory is not None:
            log.warning("step %r runs uncached: a base_task_factory step's task is not known "
                        "before it is made", node.name)
            return None
        else:
            assert node.base_task_id is not None
            base = store.get_task(node.base_task_id)
            digest = base.code_digest or digest_params(base.script)
            entry_point = str(base.script.get("entry_point") or base.script.get("path") or "")
            stored = {f"{p.section}/{p.name}": p.value
                      for p in store.get_parameters(base.id).values()}
            params = {**stored, **{"/".join(P.split_name(k)): v for k, v in params.items()}}
            configuration = {name: value for name, (value, _) in
                             store.list_configurations(base.id).items()}
            configuration.update({name: config_text(value)[0] for name, value in
                                  resolve(node.configurations, self._lookup).items()})
            configuration["task_overrides"] = resolve(node.task_overrides, self._lookup)
        try:
            return caching.cache_key(
                code=digest, entry_point=entry_point, parameters=params, inputs=inputs,
                configuration=configuration, returns=node.return_artifacts,
                extra=caching.hook_parts(call_each("pipekit_cache_key", node=node)))
        except caching.CacheKeyError as exc:
            log.warning("step %r runs uncached: its inputs %s", node.name, exc)
            return None

    def _serve_cached(self, node: Node, task_id: str) -> None:
        """Plug a previous task's outputs into ``node``: nothing runs."""
        log.info("step %r: cache hit, reusing task %s", node.name, task_id)
        node.job = StepJob(task_id)
        node.job_started = node.job_ended = time.time()
        self._succeed(node, task_id, NodeStatus.cached)

    def _submit(self, node: Node, task_id: str) -> None:
        assert self.info is not None and self._executor is not None
        node.job = StepJob(task_id)
        node.tasks.append(task_id)
        node.job_started = time.time()
        node.job_ended = None
        if has_impls("pipekit_step_created"):
            notify("pipekit_step_created", node=node, task=get_store().get_task(task_id),
                   run=self.info)
        self._set_status(node, NodeStatus.in_progress, task=task_id)
        try:
            handle = self._executor.submit(Job(task_id, node.name))
        except Exception as exc:
            reason = f"executor {self.executor_name!r} could not start it: {_cause(exc)}"
            get_store().set_status(task_id, Status.failed, reason=reason)
            self._collect(node, Outcome(Status.failed.value, reason))
            return
        self._running[node.name] = (handle, time.monotonic())

    def _collect(self, node: Node, outcome: Outcome) -> None:
        node.job_ended = time.time()
        task_id = node.job.task_id() if node.job is not None else None
        if outcome.ok:
            assert task_id is not None
            self._succeed(node, task_id, NodeStatus.completed)
            return
        if outcome.status == Status.stopped.value and self._halting():
            node.executed = False
            self._fail(node, outcome.reason or "stopped", status=NodeStatus.stopped)
            return
        if outcome.status == Status.failed.value and self._retry(node, task_id):
            return
        node.executed = False
        status = NodeStatus.stopped if outcome.status == Status.stopped.value \
            else NodeStatus.failed
        self._fail(node, outcome.reason or outcome.status, status=status)

    def _succeed(self, node: Node, task_id: str, status: NodeStatus) -> None:
        """``node``'s outputs are task ``task_id``'s (it completed, or the cache served it):
        completion hooks, then status callbacks, then its children may launch.
        """
        node.executed = task_id
        old = self._set_status(node, status, task=task_id, quiet=True)
        try:
            call_each("pipekit_step_completed", node=node,
                      task=get_store().get_task(task_id), run=self.info)
        except Exception as exc:
            self._announce(node, old)
            node.executed = False
            self._fail(node, f"after the step succeeded, {_hook_error(exc)}")
            return
        self._announce(node, old)
        with self._lock:
            for child in self.dag.children(node.name):
                left = self._waiting.get(child)
                if left is None:
                    continue
                left.discard(node.name)
                if not left:
                    del self._waiting[child]
                    self._ready.append(child)

    def _retry(self, node: Node, task_id: str | None) -> bool:
        policy = node.retry_on_failure if node.retry_on_failure is not None \
            else self.spec.retry_on_failure
        if policy is None or task_id is None or self._halting():
            return False
        if callable(policy):
            again = bool(policy(self.pipeline, node, node.attempt))
        else:
            again = node.attempt < int(policy)
        if not again:
            return False
        node.attempt += 1
        log.warning("step %r failed; retrying (attempt %d)", node.name, node.attempt + 1)
        clone = get_store().clone_task(task_id, name=node.job.task.name, parent=self.run_id,
                                       cache_key=node.cache_key)
        self._submit(node, clone.id)
        return True

    def _aborted_outside(self) -> bool:
        """Stop the run if its controller task was ended from outside; cancel a step whose
        task was. Returns whether the run is stopping.
        """
        assert self.run_id is not None and self._executor is not None
        running = {self.nodes[name].job.task_id(): name for name in self._running}
        statuses = get_store().task_statuses([self.run_id, *running])
        status, reason = statuses.get(self.run_id, (Status.in_progress.value, ""))
        if Status(status).is_final:
            self.stop(f"run {status} from outside: {reason}" if reason
                      else f"run {status} from outside")
            return True
        for task_id, name in running.items():
            step_status, _ = statuses.get(task_id, (Status.in_progress.value, ""))
            # only "stopped": a completed or failed status may be the step's own last word,
            # written just before its process exits
            if step_status == Status.stopped.value and name in self._running:
                self._executor.cancel(self._running[name][0])
        return False

    def _time_out(self, node: Node, handle: Any) -> Outcome:
        assert self._executor is not None
        reason = f"time limit of {node.timeout:g} s exceeded"
        task_id = node.job.task_id()
        get_store().set_status(task_id, Status.failed, reason=reason)
        self._executor.cancel(handle)
        return Outcome(Status.failed.value, reason)

    def _cancel_all(self) -> bool:
        if not self._running or self._executor is None:
            return False
        for name, (handle, _) in list(self._running.items()):
            self._executor.cancel(handle)
            outcome = self._executor.poll(handle) or Outcome(Status.stopped.value)
            del self._running[name]
            node = self.nodes[name]
            node.job_ended = time.time()
            node.executed = False
            self._fail(node, self._stop_reason or self._aborting or outcome.reason or "stopped",
                       status=NodeStatus.stopped if outcome.status != Status.failed.value
                       else NodeStatus.failed)
        return True

    # -- node outcomes ------------------------------------------------------------------------

    def _fail(self, node: Node, reason: str, status: NodeStatus = NodeStatus.failed) -> None:
        node.reason = reason
        if node.executed is None:
            node.executed = False
        self._set_status(node, status)
        if not node.continue_on_fail:
            self._failed.append(node.name)
            if self.spec.abort_on_failure and self._aborting is None:
                self._aborting = f"step {node.name!r} failed: {reason}"
                self._wake.set()
        self._skip_descendants(node)

    def _skip(self, node: Node, reason: str, cascade: bool = True) -> None:
        node.reason = reason
        self._set_status(node, NodeStatus.skipped)
        if cascade:
            self._skip_descendants(node)

    def _skip_descendants(self, node: Node) -> None:
        with self._lock:
            below = self.dag.descendants(node.name)
            for name in self.dag.order():
                if name in below:
                    other = self.nodes[name]
                    if other.status == NodeStatus.pending.value:
                        self._waiting.pop(name, None)
                        if name in self._ready:
                            self._ready.remove(name)
                        self._skip(other, f"parent {node.name!r} {node.status}", cascade=False)

    def _set_status(self, node: Node, new: NodeStatus, task: str | None = None,
                    quiet: bool = False) -> str:
        """Record a node's new status; returns the old one. ``quiet`` defers the status
        change callbacks to :meth:`_announce` (post-execute callbacks run first).
        """
        old = node.status
        now = time.time()
        with self._changed:
            node.status = new.value
            self._changed.notify_all()
        assert self.run_id is not None
        get_store().set_node(self.run_id, node.name, new.value, task=task,
                             attempt=node.attempt, cache_key=node.cache_key,
                             started=now if new is NodeStatus.in_progress else None,
                             ended=now if new.is_final else None)
        if not quiet:
            self._announce(node, old)
        return old

    def _announce(self, node: Node, old: str) -> None:
        if has_impls("pipekit_step_status_changed"):
            task = node.job.task.data if node.job is not None else None
            notify("pipekit_step_status_changed", node=node, task=task, old=old,
                   new=node.status, run=self.info)

    def _finish(self) -> str:
        """End the run: one final status, no step left open; returns the status."""
        assert self.run_id is not None
        if self.status is not None:
            return self.status
        if self._stop_reason is not None:
            status, reason = Status.stopped, self._stop_reason
        elif self._aborting is not None:
            status, reason = Status.failed, self._aborting
        elif self._failed:
            first = self.nodes[self._failed[0]]
            status, reason = Status.failed, f"step {first.name!r} failed: {first.reason}"
        else:
            status, reason = Status.completed, ""
        for node in self.nodes.values():
            if not NodeStatus(node.status).is_final:
                self._skip(node, reason or "run ended", cascade=False)
        if self._capture is not None:
            capture, self._capture = self._capture, None
            get_store().set_log_size(self.run_id, capture.stop())
        if self.dynamic:
            self._settle_version()
        get_store().finish_run(self.run_id, status, reason)
        with _active_lock:
            if self in _active:
                _active.remove(self)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self.status, self.reason = status.value, reason
        self.ended = time.time()
        notify("pipekit_pipeline_finished", run=self.info, status=status.value)
        return status.value

    def _settle_version(self) -> None:
        """A dynamic run's version, now that its structure is known."""
        assert self.run_id is not None and self.info is not None
        spec, store = self.spec, get_store()
        try:
            structure = self._structure_hash()
            version = choose_version(store, project=spec.project, name=spec.name,
                                     requested=spec.version,
                                     auto_bump=spec.auto_version_bump, structure_hash=structure)
        except PipekitError as exc:
            log.warning("run %s: version not recorded: %s", self.run_id, exc)
            return
        store.record_run_version(self.run_id, project=spec.project, name=spec.name,
                                 version=version, structure_hash=structure)
        self.info = attrs.evolve(self.info, version=version)

    # -- resolving and creating a step's task -------------------------------------------------

    def _lookup(self, ref: Ref) -> Any:
        store = get_store()
        if ref.kind is Kind.PIPELINE:
            return self.spec.parameters[ref.name]
        node = self.nodes[ref.step]
        task_id = node.executed
        if not isinstance(task_id, str):
            raise PipekitError(f"{ref.text}: step {ref.step!r} has no task ({node.status})")
        if ref.kind is Kind.ID:
            return task_id
        if ref.kind is Kind.PARAMETER:
            section, key = P.split_name(ref.name or "")
            param = store.get_parameters(task_id).get(f"{section}/{key}")
            if param is None:
                raise PipekitError(f"{ref.text}: step {ref.step!r} has no parameter "
                                   f"{section}/{key}")
            return P.cast_param(param)
        if ref.kind in (Kind.ARTIFACT, Kind.RETURN):
            store.get_artifact(task_id, ref.name or "")  # raises ArtifactNotFound
            return functions.ArtifactInput(task_id, ref.name or "")
        if ref.kind is Kind.ARTIFACT_URL:
            return Task(task_id).artifacts[ref.name or ""].url
        if ref.kind is Kind.MODEL:
            models = Task(task_id).models["output"]
            try:
                model = models[ref.index or 0]
            except IndexError:
                raise PipekitError(f"{ref.text}: step {ref.step!r} has {len(models)} output "
                                   "models") from None
            return model.id if ref.attr == "id" else model.url
        raise PipekitError(f"{ref.text}: cannot be resolved by the controller")

    def _lookup_text(self, ref: Ref) -> Any:
        """A reference inside a longer string: a return value or artifact is loaded (its
        digest verified) so its text can be pasted in.
        """
        value = self._lookup(ref)
        if isinstance(value, functions.ArtifactInput):
            return Task(value.task).artifacts[value.name].get()
        return value

    def _resolve(self, node: Node, values: dict[str, Any] | None = None) -> dict[str, Any]:
        source = node.parameters if values is None else values
        return {key: resolve(value, self._lookup, text_lookup=self._lookup_text)
                for key, value in source.items()}

    def _pickle(self, node: Node) -> None:
        if node.function is None or node.name in self._functions:
            return
        # Many nodes may share one function (a fan-out, a decorator called in a loop): its
        # pickle and source are made once per run. The key holds the objects, not their ids,
        # so an id cannot be reused while the entry lives.
        key: tuple[Any, ...] | None = (node.function, *node.helper_functions)
        try:
            made = self._made.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable callable object: nothing to share
            made = key = None
        if made is None:
            data = functions.pack(node.function, node.name)
            made = (data, functions.code_of(node.function, node.helper_functions, data))
            if key is not None:
                self._made[key] = made
        self._functions[node.name] = made

    def _create_task(self, node: Node, resolved: dict[str, Any]) -> str:
        assert self.run_id is not None
        store = get_store()
        tags = [f"pipe: {self.run_id}"] if self.spec.add_pipeline_tags else []
        project = node.project_name or self.spec.target_project or self.spec.project
        if node.function is not None:
            data, code = self._functions[node.name]
            kwargs = {key.partition("/")[2]: value for key, value in resolved.items()
                      if key.startswith(f"{functions.KWARGS}/")}
            return functions.create_task(
                store, node.function, data, code, kwargs, node.return_artifacts,
                project=project, name=node.task_name or node.name, type=node.job_type,
                parent=self.run_id, inputs_on=self.run_id, tags=tags,
                cache_key=node.cache_key).id
        if node.base_task_factory is not None:
            made = node.base_task_factory(node)
            task_id = made.id if isinstance(made, Task) else str(made)
            store.update_task(task_id, parent=self.run_id)
        elif node.clone_task:
            assert node.base_task_id is not None
            task_id = store.clone_task(node.base_task_id, name=node.task_name or node.name,
                                       parent=self.run_id,
                                       project=node.project_name or self.spec.target_project,
                                       cache_key=node.cache_key).id
        else:
            assert node.base_task_id is not None
            task_id = node.base_task_id
            store.update_task(task_id, parent=self.run_id, cache_key=node.cache_key)
        if resolved:
            store.set_parameters(task_id, P.as_params(resolved, store.get_parameters(task_id)))
        for name, value in resolve(node.configurations, self._lookup).items():
            text, kind = config_text(value)
            store.set_configuration(task_id, name, text, kind)
        if node.task_overrides:
            _apply_task_overrides(task_id, resolve(node.task_overrides, self._lookup))
        if tags:
            store.add_tags(task_id, tags)
        return task_id


_NO = object()


def config_text(value: Any) -> tuple[str, str]:
    if isinstance(value, str):
        return value, "text"
    return json.dumps(value, default=str, indent=2), "json"


#: ``task_overrides`` keys besides ``script.<field>`` (the controller checks them when a step
#: is added)
TASK_OVERRIDE_KEYS = ("name", "comment", "tags")


def _apply_task_overrides(task_id: str, overrides: dict[str, Any]) -> None:
    """``task_overrides`` as ClearML names them: ``name``, ``comment``, ``tags`` and
    ``script.<field>`` (e.g. ``script.argv``, ``script.working_dir``).
    """
    store = get_store()
    info = store.get_task(task_id)
    script = dict(info.script)
    fields: dict[str, Any] = {}
    for key, value in overrides.items():
        if key == "tags":
            store.add_tags(task_id, [value] if isinstance(value, str) else list(value))
        elif key.startswith("script."):
            script[key.partition(".")[2]] = value
        elif key in TASK_OVERRIDE_KEYS:
            fields[key] = str(value)
        else:
            raise DefinitionError(f"task_overrides key {key!r} is not supported: use name, "
                                  "comment, tags or script.<field>")
    if script != info.script:
        fields["script"] = script
    if fields:
        store.update_task(task_id, **fields)


def _cause(exc: BaseException) -> str:
    inner = exc.__cause__ or exc
    return f"{type(inner).__name__}: {inner}"


def _hook_error(exc: BaseException) -> str:
    """Why launching or finishing a node failed: a ClearML callback's own error, another
    plugin's error naming the plugin, or pipekit's own message.
    """
    if isinstance(exc, PluginError):
        if exc.plugin == "callbacks":
            return f"callback raised {_cause(exc)}"
        return str(exc)
    if isinstance(exc, PipekitError) and exc.__cause__ is None:
        return str(exc)
    return _cause(exc)
