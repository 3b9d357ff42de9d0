"""The single run loop: every pipeline run, controller or decorator, goes through here.

Each turn: collect outcomes from the executors, enforce time limits, and launch ready nodes
(a node is ready once all its parents succeeded). Launching — references, callbacks, cache,
the step's task — is :mod:`pipekit.launch`; opening the run — its controller task, version
and record — is :func:`pipekit.runs.open_run`; this module keeps the loop and what a node's
outcome means (SPEC §3):

    launched -> executor -> outcome -> post_execute / step_task_completed callbacks
    -> status change callbacks -> children become ready

The loop owns the failure policy: a failed node's descendants are skipped; the run fails
unless the node had ``continue_on_fail``; ``abort_on_failure`` stops everything at the first
failure; ``retry_on_failure`` re-runs a failed node as a fresh task; ``time_limit`` fails a
node that runs too long. The run ends with exactly one final status and, in the same
transaction, no step left non-terminal (:meth:`pipekit.store.Store.finish_run`).

One thread drives the loop at a time; others (the decorator's pipeline function, ``stop()``)
talk to it through :meth:`Runner.add`, :meth:`Runner.stop` and :meth:`Runner.wait_for`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from . import context, crash
from .capture import StreamCapture
from .config import NO_CACHE_ENV
from .dag import Dag
from .definition import check_added, validate
from .errors import PipekitError
from .executor import Executor, capabilities, make_executor
from .finish import finish_task
from .launch import FunctionCodes, Launcher, StepJob, cause, hook_error
from .models import Job, Outcome, Status
from .nodes import Node, NodeStatus, PipelineSpec, RunInfo
from .plugin_manager import call_each, has_impls, lazy, notify
from .restore import LOST, Restored, Watch, plan, resume_node
from .runs import Ownership, open_run, settle_version
from .store import get_store
from .versioning import structure_hash

log = logging.getLogger(__name__)

__all__ = ["Runner", "StepJob"]

#: longest pause between two turns of the loop while steps run (it wakes early on events)
_MAX_IDLE = 0.02
#: how often the loop looks for the run or a step aborted from outside (``pipekit tasks abort``)
_OUTSIDE_EVERY = 0.5


@attrs.define
class _Running:
    """A node handed to an executor."""

    executor: Executor
    handle: Any
    begun: float  # monotonic


@attrs.define
class _Started:
    """What a run has once :meth:`Runner.start` returned."""

    info: RunInfo
    launcher: Launcher
    capture: StreamCapture | None
    ownership: Ownership
    executors: dict[str, Executor] = attrs.Factory(dict)
    #: a resumed run's recorded nodes not placed yet, by name (:mod:`pipekit.restore`)
    restored: dict[str, Restored] = attrs.Factory(dict)


class Runner:
    """Runs one pipeline: opens its run, drives its nodes, ends the run."""

    def __init__(self, spec: PipelineSpec, *, pipeline: Any = None, executor: str = "subprocess",
                 max_workers: int | None = None, dynamic: bool = False,
                 step_task_created_callback: Callable[..., Any] | None = None,
                 step_task_completed_callback: Callable[..., Any] | None = None,
                 script: dict[str, Any] | None = None, refresh: bool | None = None) -> None:
        self.spec = spec
        self.nodes: dict[str, Node] = spec.nodes
        self.pipeline = pipeline
        self.executor_name = executor
        self._max_workers = max_workers
        self.max_workers = 1
        self.dynamic = dynamic
        self._created_cb = step_task_created_callback
        self._completed_cb = step_task_completed_callback
        self._script = script
        #: run every cached step again (its new result then serves later runs)
        self.refresh = os.environ.get(NO_CACHE_ENV, "") not in ("", "0") \
            if refresh is None else refresh
        #: the executor runs each step to its end in the calling thread (debug mode)
        self.runs_in_caller = False
        #: the executor sends steps to their queues, for agents (remote mode)
        self.uses_queues = False
        self.dag = Dag()
        self.status: str | None = None
        self.reason = ""
        self.started: float | None = None
        self.ended: float | None = None
        self._run: _Started | None = None
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._ready: deque[str] = deque()
        #: pending node -> the parents it still waits for. A set, not a count: a node added to
        #: a dynamic run while a parent is between its status change and releasing its
        #: children must not be released twice.
        self._waiting: dict[str, set[str]] = {}
        self._running: dict[str, _Running] = {}
        self._closed = not dynamic
        self._stop_reason: str | None = None
        self._aborting: str | None = None
        self._failed: list[str] = []
        self._next_outside_check = 0.0
        self._code = FunctionCodes()

    @property
    def run_id(self) -> str | None:
        """The run's controller task id, once started."""
        return self._run.info.id if self._run is not None else None

    @property
    def info(self) -> RunInfo | None:
        return self._run.info if self._run is not None else None

    @property
    def _live(self) -> _Started:
        if self._run is None:
            raise PipekitError("the run has not started")
        return self._run

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> RunInfo:
        """Validate, open the run (controller task, version, run record); returns the run.

        A process started to execute a controller task (``pipekit run``, ``pipekit rerun``, a
        pipeline that is a step of another) runs as that task, its ``Args`` overriding the
        parameters' values (:func:`pipekit.runs.open_run`).
        """
        spec = self.spec
        caps = capabilities(self.executor_name)  # an unknown executor fails before any write
        self.runs_in_caller, self.uses_queues = caps.runs_in_caller, caps.uses_queues
        self.max_workers = max(1, self._max_workers or (1 if caps.runs_in_caller else 8))
        self.dag = validate(spec)
        for node in spec.nodes.values():
            if node.function is not None:
                self._code(node)
        # A dynamic run's structure is known only once its pipeline function has returned.
        structure = None if self.dynamic else self._structure_hash()
        opened = open_run(spec, self.dag, structure=structure, script=self._script,
                          pipeline=self.pipeline,
                          step_task_created_callback=self._created_cb,
                          step_task_completed_callback=self._completed_cb)
        self._run = _Started(opened.info, Launcher(spec, opened.info, refresh=self.refresh,
                                                   code=self._code), opened.capture,
                             Ownership(opened.info.id).start(),
                             restored=plan(opened.info.id) if opened.resumed else {})
        self.started = time.time()
        context.push_run(self)
        with self._lock:
            for name in self.dag.order():
                self._enter(self.nodes[name])
        notify("pipekit_pipeline_started", run=opened.info)
        return opened.info

    def _structure_hash(self) -> str:
        digests = {name: self._code(node)[1].digest for name, node in self.nodes.items()
                   if node.function is not None}
        return structure_hash(get_store(), self.spec, self.dag, digests)

    def run(self) -> str:
        """Start (if needed) and drive the run to its end; returns its final status.

        Ctrl-C stops every running step and the run (``stopped``), then re-raises.
        """
        if self._run is None:
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
            run = self._live
            node.parents = check_added(node, self.spec)
            if node.function is not None:
                self._code(node)
            self.dag.add(node.name, node.parents)
            self.nodes[node.name] = node
            get_store().add_node(run.info.id, node.name, node.parents)
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
        if self._running and time.monotonic() >= self._next_outside_check:
            self._next_outside_check = time.monotonic() + _OUTSIDE_EVERY
            if self._aborted_outside():
                return True
        for name, running in list(self._running.items()):
            outcome = running.executor.poll(running.handle)
            node = self.nodes[name]
            if outcome is None and node.timeout and \
                    time.monotonic() - running.begun > node.timeout:
                outcome = self._time_out(node, running)
            if outcome is not None:
                del self._running[name]
                self._collect(node, outcome)
                busy = True
        while self._ready and len(self._running) < self.max_workers and not self._halting():
            with self._lock:
                name = self._ready.popleft()
            self._launch(self.nodes[name])
            busy = True
            if self.runs_in_caller:
                break  # collect the outcome before launching the next one
        return busy

    def _executor_for(self, node: Node) -> tuple[str, Executor]:
        """The executor a node runs on, made on first use and shared by the run's nodes.

        Every node of a run uses the run's executor: a local one, or the ``queue`` executor
        when its steps go to queues (the job then carries the node's queue, else the
        pipeline's default).
        """
        name = self.executor_name
        executors = self._live.executors
        if name not in executors:
            executor = executors[name] = make_executor(name, max_workers=self.max_workers)
            if hasattr(executor, "wake"):  # it can tell when a job ends: no waiting for a poll
                executor.wake = self._wake.set
        return name, executors[name]

    def _enter(self, node: Node) -> None:
        """Place a pending node: ready, waiting on parents, or skipped (a parent can't succeed).
        A node a resumed run had is kept, watched or run again first (:meth:`_restore`).
        """
        restored = self._live.restored.pop(node.name, None)
        if restored is not None and self._restore(node, restored):
            return
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

    def _restore(self, node: Node, restored: Restored) -> bool:
        """Give a resumed run's node what it had (:func:`pipekit.restore.resume_node`);
        returns whether it is placed (kept, or watched while in flight), else it runs again.
        """
        parents_ok = all(NodeStatus(self.nodes[p].status).is_success
                         for p in self.dag.parents(node.name))
        with self._changed:
            watch = resume_node(node, restored, self._live.info.id, parents_ok=parents_ok)
            self._changed.notify_all()
        if isinstance(watch, Watch):
            self._running[node.name] = _Running(watch, watch, time.monotonic())  # type: ignore[arg-type]
        return watch is not None

    def _launch(self, node: Node) -> None:
        if self.dag.parents(node.name):
            crash.point("before-enqueue", node.name)
        launched = self._live.launcher.launch(node)
        if launched.failed is not None:
            self._fail(node, launched.failed)
        elif launched.skipped is not None:
            self._skip(node, launched.skipped, cascade=True)
        elif launched.cached is not None:
            log.info("step %r: cache hit, reusing task %s", node.name, launched.cached)
            node.job = StepJob(launched.cached)
            node.job_started = node.job_ended = time.time()
            self._succeed(node, launched.cached, NodeStatus.cached)
        else:
            assert launched.task is not None
            self._submit(node, launched.task)

    def _submit(self, node: Node, task_id: str) -> None:
        run = self._live
        node.job = StepJob(task_id)
        node.tasks.append(task_id)
        node.job_started = time.time()
        node.job_ended = None
        if has_impls("pipekit_step_created"):
            notify("pipekit_step_created", node=node,
                   task=lazy(lambda: get_store().get_task(task_id)), run=run.info)
        self._set_status(node, NodeStatus.in_progress, task=task_id)
        crash.point("step-claimed", node.name)
        try:
            _, executor = self._executor_for(node)
            handle = executor.submit(Job(task_id, node.name,
                                         queue=node.queue or self.spec.default_queue))
        except Exception as exc:
            reason = f"executor {self.executor_name!r} could not start it: {cause(exc)}"
            finish_task(task_id, Status.failed, reason)
            self._collect(node, Outcome(Status.failed.value, reason))
            return
        self._running[node.name] = _Running(executor, handle, time.monotonic())
        crash.point("step-started", node.name)

    def _collect(self, node: Node, outcome: Outcome) -> None:
        if outcome.status == LOST:  # a step watched since the resume died without a result
            self._launch(node)
            return
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
        clone = get_store().clone_task(task_id, name=node.job.task.name,
                                       parent=self._live.info.id, cache_key=node.cache_key)
        self._submit(node, clone.id)
        return True

    def _aborted_outside(self) -> bool:
        """Stop the run if its controller task was ended from outside; cancel a step whose
        task was. Returns whether the run is stopping.
        """
        run_id, taken = self._live.info.id, self._live.ownership.taken_by
        if taken:  # another process resumed the run (--force): it is theirs to drive
            self.abort(f"run taken over by {taken}")
            return True
        running = {self.nodes[name].job.task_id(): name for name in self._running}
        statuses = get_store().task_statuses([run_id, *running])
        status, reason = statuses.get(run_id, (Status.in_progress.value, ""))
        if Status(status).is_final:
            self.stop(f"run {status} from outside: {reason}" if reason
                      else f"run {status} from outside")
            return True
        for task_id, name in running.items():
            step_status, _ = statuses.get(task_id, (Status.in_progress.value, ""))
            # only "stopped": a completed or failed status may be the step's own last word,
            # written just before its process exits
            if step_status == Status.stopped.value and name in self._running:
                running_node = self._running[name]
                running_node.executor.cancel(running_node.handle)
        return False

    def _time_out(self, node: Node, running: _Running) -> Outcome:
        reason = f"time limit of {node.timeout:g} s exceeded"
        finish_task(node.job.task_id(), Status.failed, reason)
        running.executor.cancel(running.handle)
        return Outcome(Status.failed.value, reason)

    def _cancel_all(self) -> bool:
        if not self._running:
            return False
        for name, running in list(self._running.items()):
            running.executor.cancel(running.handle)
            outcome = running.executor.poll(running.handle) or Outcome(Status.stopped.value)
            del self._running[name]
            node = self.nodes[name]
            node.job_ended = time.time()
            node.executed = False
            self._fail(node, self._stop_reason or self._aborting or outcome.reason or "stopped",
                       status=NodeStatus.stopped if outcome.status != Status.failed.value
                       else NodeStatus.failed)
        return True

    # -- node outcomes ------------------------------------------------------------------------

    def _succeed(self, node: Node, task_id: str, status: NodeStatus) -> None:
        """``node``'s outputs are task ``task_id``'s (it completed, or the cache served it):
        completion hooks, then status callbacks, then its children may launch.
        """
        node.executed = task_id
        old = self._set_status(node, status, task=task_id, quiet=True)
        try:
            call_each("pipekit_step_completed", node=node,
                      task=lazy(lambda: get_store().get_task(task_id)), run=self._live.info)
        except Exception as exc:
            self._announce(node, old)
            node.executed = False
            self._fail(node, f"after the step succeeded, {hook_error(exc)}")
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
        self._live.launcher.store.set_node(self._live.info.id, node.name, new.value, task=task,
                             attempt=node.attempt, cache_key=node.cache_key,
                             started=now if new is NodeStatus.in_progress else None,
                             ended=now if new.is_final else None)
        if not quiet:
            self._announce(node, old)
        return old

    def _announce(self, node: Node, old: str) -> None:
        if has_impls("pipekit_step_status_changed"):
            job = node.job
            task = lazy(lambda: job.task.data) if job is not None else None
            notify("pipekit_step_status_changed", node=node, task=task, old=old,
                   new=node.status, run=self._live.info)

    def _finish(self) -> str:
        """End the run: one final status, no step left open; returns the status."""
        run = self._live
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
        if run.capture is not None:
            capture, run.capture = run.capture, None
            get_store().set_log_size(run.info.id, capture.stop())
        if self.dynamic:  # its version, now that its structure is known
            run.info = settle_version(run.info, self.spec, self._structure_hash)
        crash.point("run-finishing")
        get_store().finish_run(run.info.id, status, reason, owner=run.ownership.owner)
        run.ownership.stop()
        context.pop_run(self)
        for executor in run.executors.values():
            executor.shutdown(wait=False)
        self.status, self.reason = status.value, reason
        self.ended = time.time()
        notify("pipekit_pipeline_finished", run=self._live.info, status=status.value)
        return status.value
