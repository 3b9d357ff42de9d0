"""ClearML's pipeline monitoring: copy what a step reports to its run's controller task.

A step given ``monitor_metrics``, ``monitor_artifacts`` or ``monitor_models`` (parsed by
:mod:`pipekit.monitoring`) has those copied onto the pipeline's controller task *while it
runs*, so the run shows them in one place. The controller process polls the store, which
works whatever runs the step (a thread, a process pool, a step subprocess, an agent):

* ``pipekit_step_pre_execute`` checks the node's specs (a bad one fails the node before it
  gets a task); ``pipekit_step_created`` registers it (nothing at all for a node without
  monitor specs); one daemon thread per process syncs every registered node each
  :data:`POLL_INTERVAL` seconds;
* ``pipekit_step_completed`` (also for a node served from the cache) runs after the
  post-execute callbacks, does a last sync and stops polling the node; a final failure
  status (``failed``, ``stopped`` …) does the same, since values reported before a failure
  still tell something; ``pipekit_pipeline_finished`` forgets everything of the run.

A sync copies the scalar points not yet copied (one per source ``(title, series,
iteration)``, so nothing is copied twice, even across a retry), an artifact whenever its
digest changed, and each output model once. Artifacts and models are copied by reference:
the copy points at the same stored object, no bytes are duplicated. A node has a lock, so
the poller and the run loop never sync it at the same time; the poller skips a node that is
being synced and never holds a store transaction while doing anything else.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import attrs

import pipekit
from pipekit.errors import NotFound
from pipekit.monitoring import MonitorSpec, spec_of
from pipekit.nodes import NodeStatus
from pipekit.plugin_manager import has_impls, notify
from pipekit.store import Store, get_store

log = logging.getLogger("pipekit.monitor")

#: seconds between two syncs of the running monitored steps
POLL_INTERVAL = 0.5
#: a poll that took ``t`` seconds (a step with a long metric history is read whole) waits
#: ``BACKOFF * t`` more before the next one, so polling never takes over the controller
BACKOFF = 3.0


def _monitored(node: Any) -> bool:
    return bool(node.monitor_metrics or node.monitor_artifacts or node.monitor_models)


@attrs.define(eq=False)
class Watch:
    """One monitored node of one run, and what has been copied from it so far."""

    run_id: str
    step: str
    task_id: str
    spec: MonitorSpec
    store: Store
    lock: threading.Lock = attrs.Factory(threading.Lock)
    #: source ``(title, series, iteration)`` already copied
    points: set[tuple[str, str, int]] = attrs.Factory(set)
    #: target artifact name -> digest of the copy
    artifacts: dict[str, str] = attrs.Factory(dict)
    #: ids of the source models already copied
    models: set[str] = attrs.Factory(set)
    #: unregistered: the poller leaves it alone
    closed: bool = False
    #: the last error the poller logged for it (the same one is not logged every turn)
    error: str | None = None
    #: ``time.monotonic()`` before which the poller leaves it alone (see :data:`BACKOFF`)
    due: float = 0.0

    def sync(self) -> None:
        """Copy what is new on the step's task to the controller task (hold :attr:`lock`).

        A task that vanished meanwhile (deleted by hand) is logged and skipped; any other
        error propagates, and what was not copied is tried again next time.
        """
        try:
            if self.spec.metrics:
                self._sync_metrics()
            if self.spec.artifacts:
                self._sync_artifacts()
            if self.spec.models or self.spec.all_models:
                self._sync_models()
        except NotFound as exc:
            log.warning("monitoring step %r of run %s: %s; skipped", self.step, self.run_id, exc)

    def _sync_metrics(self) -> None:
        wanted = dict(self.spec.metrics)
        now = time.time()
        keys: list[tuple[str, str, int]] = []
        rows: list[tuple[str, str, int, float, float]] = []
        for point in self.store.scalars(self.task_id):
            target = wanted.get((point.title, point.series))
            key = (point.title, point.series, point.iteration)
            if target is None or key in self.points:
                continue
            self.points.add(key)  # taken back below if the write fails
            keys.append(key)
            rows.append((target[0], target[1], point.iteration, point.value, now))
        if not rows:
            return
        try:
            self.store.add_scalars(self.run_id, rows)
        except BaseException:
            self.points.difference_update(keys)
            raise
        if has_impls("pipekit_metric_reported"):
            info = self.store.get_task(self.run_id)
            for title, series, iteration, value, _ in rows:
                notify("pipekit_metric_reported", task=info, title=title, series=series,
                       iteration=iteration, value=value)

    def _sync_artifacts(self) -> None:
        for source, target in self.spec.artifacts:
            try:
                found = self.store.get_artifact(self.task_id, source)
            except NotFound:
                continue  # not reported yet
            if self.artifacts.get(target) == found.ref.digest:
                continue
            copy = self.store.put_artifact(self.run_id, target, found.ref, found.metadata,
                                           found.preview)
            self.artifacts[target] = found.ref.digest
            if has_impls("pipekit_artifact_uploaded"):
                notify("pipekit_artifact_uploaded", task=self.store.get_task(self.run_id),
                       artifact=copy)

    def _sync_models(self) -> None:
        targets = dict(self.spec.models)
        for model in self.store.list_models(self.task_id):
            if model.id in self.models:
                continue
            target = model.name if self.spec.all_models else targets.get(model.name)
            if target is None:
                continue
            copy = self.store.add_model(self.run_id, target, model.ref, model.framework)
            self.models.add(model.id)
            if has_impls("pipekit_model_uploaded"):
                notify("pipekit_model_uploaded", task=self.store.get_task(self.run_id),
                       model=copy)


class Monitor:
    """This process's monitored nodes and the one thread that polls them.

    A node's watch is *active* (polled) from ``pipekit_step_created`` until its final sync,
    then kept, unpolled, until its run finishes: a second final sync (the same node
    completed twice, a cached node) finds what was copied already and copies nothing again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], Watch] = {}
        self._done: dict[tuple[str, str], Watch] = {}
        self._thread: threading.Thread | None = None

    def get(self, run_id: str, step: str) -> Watch | None:
        """A node's watch, active or done."""
        with self._lock:
            return self._active.get((run_id, step)) or self._done.get((run_id, step))

    def watching(self, run_id: str | None = None) -> list[Watch]:
        """The active watches (of one run, or all)."""
        with self._lock:
            return [w for w in self._active.values() if run_id is None or w.run_id == run_id]

    def register(self, watch: Watch) -> None:
        """Poll ``watch`` (again, for a retried node) from now on."""
        key = (watch.run_id, watch.step)
        with self._lock:
            self._done.pop(key, None)
            self._active[key] = watch
            watch.closed = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._poll, name="pipekit-monitor",
                                                daemon=True)
                self._thread.start()

    def unregister(self, run_id: str, step: str) -> Watch | None:
        """Stop polling a node; returns its watch if it was active (close it under its lock)."""
        key = (run_id, step)
        with self._lock:
            watch = self._active.pop(key, None)
            if watch is not None:
                self._done[key] = watch
            return watch

    def remember(self, watch: Watch) -> None:
        """Keep an unpolled watch (a node that was never active) until its run finishes."""
        with self._lock:
            self._done.setdefault((watch.run_id, watch.step), watch)

    def forget(self, run_id: str) -> list[Watch]:
        """Drop every watch of a run; returns those that were still active."""
        with self._lock:
            active = [w for k, w in self._active.items() if k[0] == run_id]
            for table in (self._active, self._done):
                for key in [k for k in table if k[0] == run_id]:
                    del table[key]
            return active

    def _poll(self) -> None:
        try:
            while True:
                time.sleep(POLL_INTERVAL)
                with self._lock:
                    watches = list(self._active.values())
                    if not watches:
                        self._thread = None  # under the lock: register() starts a new one
                        return
                for watch in watches:
                    self._poll_one(watch)
        finally:  # also if this thread dies of a bug: the next register() starts another
            with self._lock:
                if self._thread is threading.current_thread():
                    self._thread = None

    @staticmethod
    def _poll_one(watch: Watch) -> None:
        if time.monotonic() < watch.due or not watch.lock.acquire(blocking=False):
            return  # backing off, or the run loop is syncing it right now
        began = time.monotonic()
        try:
            if not watch.closed:
                watch.sync()
                watch.error = None
        except Exception as exc:  # an observer: log and keep polling
            message = f"{type(exc).__name__}: {exc}"
            if message != watch.error:  # not the same traceback every turn
                log.warning("monitoring step %r of run %s failed; will retry",
                            watch.step, watch.run_id, exc_info=True)
                watch.error = message
        finally:
            watch.due = time.monotonic() + BACKOFF * (time.monotonic() - began)
            watch.lock.release()


_monitor = Monitor()


def _reset_after_fork() -> None:
    # A forked child has none of the parent's threads, and maybe a lock held by one of them.
    global _monitor
    _monitor = Monitor()


os.register_at_fork(after_in_child=_reset_after_fork)


def get_monitor() -> Monitor:
    """This process's :class:`Monitor` (tests inspect it)."""
    return _monitor


def _finish(watch: Watch, sync: bool = True) -> None:
    """Last sync of an unregistered watch (waiting for a poll under way) and close it."""
    with watch.lock:
        try:
            if sync and not watch.closed:
                watch.sync()
        finally:
            watch.closed = True


# -- hooks ----------------------------------------------------------------------------------


@pipekit.hookimpl
def pipekit_step_pre_execute(node: Any) -> None:
    """Check the node's monitor specs before it gets a task (a node built without the
    controller's checks fails here, naming the step and the value, rather than running
    unmonitored).
    """
    if _monitored(node):
        spec_of(node)


@pipekit.hookimpl
def pipekit_step_created(node: Any, task: Any, run: Any) -> None:
    if not _monitored(node):
        return
    watch = _monitor.get(run.id, node.name)
    if watch is None:
        watch = Watch(run_id=run.id, step=node.name, task_id=task.id, spec=spec_of(node),
                      store=get_store())
    elif watch.task_id != task.id:  # a retry: finish copying the failed attempt first
        with watch.lock:
            try:
                watch.sync()
            finally:
                watch.task_id = task.id
    _monitor.register(watch)


@pipekit.hookimpl(trylast=True)
def pipekit_step_completed(node: Any, task: Any, run: Any) -> None:
    """Last sync, after the post-execute callbacks (SPEC §3 order). A node served from the
    cache was never active: its outputs are copied here in one go.
    """
    if not _monitored(node):
        return
    task_id = node.executed if isinstance(node.executed, str) else task.id
    watch = _monitor.unregister(run.id, node.name) or _monitor.get(run.id, node.name)
    if watch is None:
        watch = Watch(run_id=run.id, step=node.name, task_id=task_id, spec=spec_of(node),
                      store=get_store())
        _monitor.remember(watch)
    with watch.lock:
        watch.task_id = task_id
    _finish(watch)


@pipekit.hookimpl
def pipekit_step_status_changed(node: Any, new: str, run: Any) -> None:
    if NodeStatus(new).is_final:
        watch = _monitor.unregister(run.id, node.name)
        if watch is not None:  # failed, stopped, skipped: keep what it reported
            _finish(watch)


@pipekit.hookimpl
def pipekit_pipeline_finished(run: Any) -> None:
    for watch in _monitor.forget(run.id):
        _finish(watch, sync=False)  # waits for a poll under way
