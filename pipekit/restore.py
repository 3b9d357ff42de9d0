"""Resuming a run: what each node it already had becomes when its script runs again.

``pipekit resume`` re-executes a run's controller script as the same run
(:func:`pipekit.runs.resume`); the run loop asks :func:`plan` about every node the run
recorded before, and then, per node:

* **keep** — its task completed (or the cache served it) and every artifact and model of
  that task still verifies (:func:`pipekit.artifacts.unverified`): the node is done, nothing
  runs again, its children may start. A step whose orphaned process committed after its
  controller died counts too.
* **watch** — its task is still in flight under a live owner: an agent holding (or about to
  claim) it on a queue, or the step's own process, still alive on this host. The loop waits
  for that task (:class:`Watch`) instead of starting it again; if the process then dies
  without a result, the node runs once more.
* **run again** — anything else (never started, failed, stopped, or in flight with nobody
  left to finish it: that attempt is failed first, with why). So a step in flight at the
  crash runs at most once more, and a completed step never does.
"""

from __future__ import annotations

import logging
import time

import attrs
import psutil

from . import context
from .artifacts import unverified
from .config import lease_ttl
from .errors import TaskNotFound
from .executor import outcome_of, stop
from .launch import StepJob
from .models import NodeRecord, Outcome, Status, TaskInfo
from .nodes import Node, NodeStatus
from .store import Store, get_store
from .worker import kill_tree

__all__ = ["LOST", "Restored", "Watch", "plan", "resume_node"]

log = logging.getLogger(__name__)

#: a watched task's process ended without a final status: the node runs again
LOST = "lost"

_DONE = (Status.completed.value, Status.published.value)
_IN_FLIGHT = (Status.queued.value, Status.in_progress.value)


@attrs.frozen
class Restored:
    """What a node of a resumed run becomes: kept as ``keep`` (with ``status``), ``watch``ed
    (its process ``pid`` here, or an agent's when ``None``), or, with neither, run again.
    """

    record: NodeRecord
    keep: str | None = None
    status: str = "completed"
    watch: str | None = None
    pid: int | None = None
    #: when the kept task ended (its controller may not have recorded it on the node)
    ended: float | None = None


def plan(run_id: str, store: Store | None = None) -> dict[str, Restored]:
    """How each node ``run_id`` recorded is restored (see the module docstring)."""
    store = store or get_store()
    return {record.name: _restore(store, record) for record in store.list_nodes(run_id)}


def _restore(store: Store, record: NodeRecord) -> Restored:
    if not record.task:
        return Restored(record)
    try:
        info = store.get_task(record.task)
    except TaskNotFound:
        return Restored(record)
    if info.status in _DONE:
        bad = unverified(store, info.id)
        if bad is None:
            return Restored(record, keep=info.id, ended=info.ended,
                            status="cached" if record.status == "cached" else "completed")
        log.warning("step %r: %s; it runs again", record.name, bad)
        return Restored(record)
    if info.status in _IN_FLIGHT:
        if store.queue_of(info.id) is not None:
            return Restored(record, watch=info.id)  # an agent has it, or the reaper will
        pid = _live_process(info)
        if pid is not None:
            return Restored(record, watch=info.id, pid=pid)
    if not Status(info.status).is_final:  # nobody will ever finish this attempt
        store.set_status(info.id, Status.failed,
                         reason="its controller was lost before it finished; the resumed "
                                "run runs the step again")
    return Restored(record)


def resume_node(node: Node, restored: Restored, run_id: str, *, parents_ok: bool
                ) -> Watch | bool | None:
    """Give ``node`` of resumed run ``run_id`` what it had: its completed task (returns
    ``True``), or its task in flight (returns the :class:`Watch` to poll); ``None`` when it
    runs again (its row is reset to pending). ``parents_ok``: every parent succeeded.
    """
    record = restored.record
    node.attempt = record.attempt
    task_id = restored.keep or restored.watch
    if task_id is None or not parents_ok:
        if record.status != NodeStatus.pending.value:
            get_store().set_node(run_id, node.name, NodeStatus.pending.value)
        return None
    node.job = StepJob(task_id)
    node.tasks.append(task_id)
    node.job_started, node.cache_key = record.started, record.cache_key
    if restored.keep is None:
        log.info("step %r: still running since before the resume (task %s); waiting for it",
                 node.name, task_id)
        node.status = NodeStatus.in_progress.value
        return Watch(task_id, restored.pid)
    log.info("step %r: kept from before the resume (task %s)", node.name, task_id)
    node.executed = task_id
    node.job_ended = record.ended or restored.ended
    node.status = restored.status
    if record.status != restored.status or record.task != task_id:
        get_store().set_node(run_id, node.name, restored.status, task=task_id,
                             ended=node.job_ended or time.time())
    return True


def _live_process(info: TaskInfo) -> int | None:
    """The pid of the process running ``info`` on this host, if it is still alive (and is
    not a later process that reused the pid).
    """
    where = context.owner_process(info.worker or "")
    if where is None or where[0] != context.worker_id().rpartition(":")[0]:
        return None
    try:
        proc = psutil.Process(where[1])
        if proc.status() == psutil.STATUS_ZOMBIE or \
                proc.create_time() > (info.started or time.time()) + 1:
            return None
    except psutil.Error:
        return None
    return where[1]


class Watch:
    """A step in flight when the run was resumed, waited for instead of started again: an
    executor-like handle for the run loop (``poll`` and ``cancel``; it is its own handle).
    """

    def __init__(self, task_id: str, pid: int | None) -> None:
        self.task_id = task_id
        self.pid = pid
        self._next_reap = 0.0

    def poll(self, _handle: object = None) -> Outcome | None:
        outcome = outcome_of(self.task_id)
        if outcome is not None:
            return outcome
        if self.pid is None:  # an agent's lease: reap it if the agent is gone
            now = time.monotonic()
            if now >= self._next_reap:
                self._next_reap = now + lease_ttl() / 3
                get_store().reap()
            return None
        if psutil.pid_exists(self.pid) and not _zombie(self.pid):
            return None
        outcome = outcome_of(self.task_id)  # it may have committed just before it exited
        if outcome is not None:
            return outcome
        reason = "its process ended without a result; the resumed run runs the step again"
        get_store().set_status(self.task_id, Status.failed, reason=reason)
        return Outcome(LOST, reason)

    def cancel(self, _handle: object = None) -> None:
        stop(self.task_id)
        if self.pid is not None:
            kill_tree(self.pid)


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
