"""Queues: where tasks wait for an agent, and how an agent takes the next one.

A task on a queue has one ``queue_entry`` row (re-enqueueing moves it). :meth:`QueueStore.claim`
is the one operation that differs by database: SQLite serializes claimers with its IMMEDIATE
write lock, PostgreSQL locks the chosen entry ``FOR UPDATE SKIP LOCKED``
(:attr:`pipekit.store.dialect.Dialect.claim_lock`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..errors import QueueNotFound, TaskNotFound, TaskStateError
from ..models import QueueInfo, Status, TaskInfo, sources_of
from . import statements as sql
from . import tables as t
from .base import StoreBase
from .tasks import task_info

__all__ = ["QueueStore"]

#: what a claim sets on the task, as :meth:`~pipekit.store.tasks.TaskStore.set_status` does
#: when a task starts
_CLAIM_FIELDS = ("status", "last_update", "started", "ended", "worker")


class QueueStore(StoreBase):
    """Queues, enqueueing, and claiming the next queued task."""

    def list_queues(self) -> list[QueueInfo]:
        """Every queue by name, with how many of its tasks wait and how many run."""
        self._check()
        out = []
        for q in t.Queue.select().order_by(t.Queue.name):
            pending = (t.QueueEntry.select().join(t.Task)
                       .where((t.QueueEntry.queue == q.id)
                              & (t.Task.status == Status.queued.value)).count())
            running = (t.QueueEntry.select().join(t.Task)
                       .where((t.QueueEntry.queue == q.id)
                              & (t.Task.status == Status.in_progress.value)).count())
            out.append(QueueInfo(name=q.name, pending=pending, running=running))
        return out

    def ensure_queue(self, name: str) -> None:
        """Create queue ``name`` unless it exists."""
        self.write(lambda: t.Queue.insert(name=name, created=time.time())
                   .on_conflict_ignore().execute())

    def enqueue(self, task_id: str, queue: str, priority: int = 0) -> None:
        """Put a ``created``/``stopped``/``failed`` task on a queue and mark it ``queued``;
        a task already on a queue moves to this one.

        :param priority: higher is taken first by :meth:`claim`.
        :raises QueueNotFound: the queue does not exist (the message lists the known ones).
        :raises TaskNotFound: no task has this id.
        :raises TaskStateError: the task is in a status that cannot be queued.
        """

        def put() -> None:
            q = t.Queue.get_or_none(t.Queue.name == queue)
            if q is None:
                raise QueueNotFound(queue, [r.name for r in t.Queue.select(t.Queue.name)])
            row = t.Task.get_or_none(t.Task.id == task_id)
            if row is None:
                raise TaskNotFound(task_id)
            if Status(row.status) not in sources_of(Status.queued):
                raise TaskStateError(task_id, row.status, "enqueue")
            now = time.time()
            (t.QueueEntry.insert(queue=q.id, task=task_id, priority=priority, enqueued=now)
             .on_conflict(conflict_target=[t.QueueEntry.task],
                          update={t.QueueEntry.queue: q.id, t.QueueEntry.enqueued: now,
                                  t.QueueEntry.priority: priority, t.QueueEntry.worker: None,
                                  t.QueueEntry.lease_expires: None})
             .execute())
            t.Task.update(status=Status.queued.value, status_reason="", last_update=now).where(
                t.Task.id == task_id).execute()

        self.write(put)

    def queue_of(self, task_id: str) -> str | None:
        """The queue the task was last put on, or ``None``."""
        self._check()
        row = (t.QueueEntry.select(t.Queue.name).join(t.Queue)
               .where(t.QueueEntry.task == task_id).tuples().first())
        return row[0] if row else None

    def claim(self, queues: Sequence[str], worker: str, *,
              lease: float | None = None) -> TaskInfo | None:
        """Take the next queued task of ``queues`` for ``worker``, in one short write: the
        highest-priority, then oldest, entry whose task is still ``queued``. The task becomes
        ``in_progress`` with ``worker``; its entry records the worker, one more attempt and
        the lease. Of processes claiming at once, each gets a different task.

        :param queues: the queues to take from, by name (unknown names hold nothing).
        :param lease: seconds until the entry's lease expires (default: no expiry).
        :returns: the claimed task as it is now, or ``None`` when nothing waits.
        """
        names = list(dict.fromkeys(queues))
        if not names:
            return None
        self._check()
        pick = self.dialect.claim(len(names))  # placeholders already in the driver's style
        start = sql.set_status(_CLAIM_FIELDS, 1)

        def take() -> TaskInfo | None:
            now = time.time()
            expires = None if lease is None else now + lease
            while True:
                row = self.db.execute_sql(pick, names).fetchone()
                if row is None:
                    return None
                entry_id, task_id, _queue = row
                # Conditional, like set_status: a task stopped meanwhile is not taken (on
                # PostgreSQL only the entry is locked); the next candidate is tried instead.
                moved = self._sql(start, (Status.in_progress.value, now, now, None, worker,
                                          task_id, Status.queued.value)).rowcount
                if moved:
                    self._sql(sql.CLAIM_ENTRY, (worker, expires, entry_id))
                    return task_info(self._sql(sql.SELECT_TASK, (task_id,)).fetchone())

        return self.write(take)
