"""The queue executor: a step's task goes to its queue, and ``pipekit agent`` processes run it.

This is remote mode's executor (``PipelineController.start_locally()`` without
``run_pipeline_steps_locally``, and a controller started with ``start(queue=...)``):

* ``submit`` enqueues the task on the job's queue (``default`` if it names none);
* ``poll`` reads the task's status, reaps expired leases now and then (so a step whose agent
  died is re-queued or failed even when no other agent is looking), and fails a step that has
  waited ``PIPEKIT_START_TIMEOUT`` seconds on a queue no live agent serves, with "no agent
  listening on queue 'X'" — never a silent wait;
* ``cancel`` marks the task ``stopped``; the agent running it sees that and kills its session.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

import pipekit
from pipekit.config import lease_ttl, start_timeout
from pipekit.executor import Job, Outcome, outcome_of, stop
from pipekit.models import Status
from pipekit.store import get_store

DEFAULT_QUEUE = "default"


@attrs.define
class _Queued:
    job: Job
    queue: str
    enqueued: float  # monotonic


class QueueExecutor:
    """Send jobs to their queues; agents run them."""

    uses_queues = True

    def __init__(self, max_workers: int | None = None) -> None:
        """``max_workers`` is accepted for a uniform API: agents decide how many run."""
        self._next_reap = 0.0

    def submit(self, job: Job) -> _Queued:
        queue = job.queue or DEFAULT_QUEUE
        get_store().enqueue(job.task_id, queue)
        return _Queued(job, queue, time.monotonic())

    def poll(self, handle: _Queued) -> Outcome | None:
        store = get_store()
        now = time.monotonic()
        if now >= self._next_reap:
            self._next_reap = now + lease_ttl() / 3
            store.reap()
        outcome = outcome_of(handle.job.task_id)
        if outcome is not None:
            return outcome
        if now - handle.enqueued >= start_timeout() and \
                store.get_task(handle.job.task_id).status == Status.queued.value and \
                not any(q.agents for q in store.list_queues() if q.name == handle.queue):
            store.fail_queued(handle.job.task_id,
                              f"no agent listening on queue {handle.queue!r} (waited "
                              f"{start_timeout():g} s, PIPEKIT_START_TIMEOUT)")
            return outcome_of(handle.job.task_id)  # failed, or claimed just now: None
        return None

    def cancel(self, handle: _Queued) -> None:
        stop(handle.job.task_id)

    def shutdown(self, wait: bool = True) -> None:
        """Nothing to release: the queued tasks belong to the agents."""


@pipekit.hookimpl
def pipekit_executors(register: Any) -> None:
    register("queue", QueueExecutor)
