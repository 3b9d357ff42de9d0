"""Queues: where tasks wait for an agent, how an agent takes one, and its lease on it.

A task on a queue has one ``queue_entry`` row (re-enqueueing moves it). :meth:`QueueStore.claim`
is the one operation that differs by database: SQLite serializes claimers with its IMMEDIATE
write lock, PostgreSQL locks the chosen entry ``FOR UPDATE SKIP LOCKED``
(:attr:`pipekit.store.dialect.Dialect.claim_lock`).

A claim is a **lease**: the entry records the worker, the attempt (one more per claim, never
reset: it is the fencing token) and when the lease expires. The holder extends it with
:meth:`QueueStore.heartbeat`; :meth:`QueueStore.reap` turns an expired lease into another
attempt while ``max_attempts`` allows, else into ``failed`` with "worker lost". Writes made
under a lease (status, artifacts, models) land only while it is current, so a worker that
was presumed dead and comes back cannot overwrite the next attempt's results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

import pipekit.store.statements as sql
import pipekit.store.tables as t

from ..errors import QueueNotFound, TaskNotFound, TaskStateError
from ..models import Claim, Lease, QueueInfo, Reaped, Status, sources_of
from .agents import AgentStore
from .postgres import PostgresDatabase, WorkListener
from .tasks import task_info

__all__ = ["QueueStore", "QueueWatch"]


class QueueWatch(Protocol):
    """What :meth:`QueueStore.watch_queues` returns."""

    def close(self) -> None:
        """Stop watching."""


class _Polling:
    """The watch of a database that cannot tell: the caller polls."""

    def close(self) -> None:
        pass

#: what a claim sets on the task, as :meth:`~pipekit.store.tasks.TaskStore.set_status` does
#: when a task starts
_CLAIM_FIELDS = ("status", "status_reason", "last_update", "started", "ended", "worker")
#: claims of a task whose worker is lost, beyond the first, before it fails "worker lost"
LOST_WORKER_RETRIES = 1


class QueueStore(AgentStore):
    """Queues, enqueueing, claiming the next queued task, and the leases claims are."""

    def list_queues(self, *, live_within: float | None = None) -> list[QueueInfo]:
        """Every queue by name, with how many of its tasks wait, how many run, and how many
        agents that heartbeat within ``live_within`` seconds serve it (default: the lease TTL).
        """
        self._check()
        serving: dict[str, int] = {}
        for agent in self.list_agents(live_within=live_within):
            for name in agent.queues:
                serving[name] = serving.get(name, 0) + 1
        out = []
        for q in t.Queue.select().order_by(t.Queue.name):
            pending = (t.QueueEntry.select().join(t.Task)
                       .where((t.QueueEntry.queue == q.id)
                              & (t.Task.status == Status.queued.value)).count())
            running = (t.QueueEntry.select().join(t.Task)
                       .where((t.QueueEntry.queue == q.id)
                              & (t.Task.status == Status.in_progress.value)).count())
            out.append(QueueInfo(name=q.name, pending=pending, running=running,
                                 agents=serving.get(q.name, 0)))
        return out

    def ensure_queue(self, name: str) -> None:
        """Create queue ``name`` unless it exists."""
        self.write(lambda: t.Queue.insert(name=name, created=time.time())
                   .on_conflict_ignore().execute())

    def enqueue(self, task_id: str, queue: str, priority: int = 0, *,
                lost_retries: int = LOST_WORKER_RETRIES) -> None:
        """Put a ``created``/``stopped``/``failed`` task on a queue and mark it ``queued``;
        a task already on a queue moves to this one.

        :param priority: higher is taken first by :meth:`claim`.
        :param lost_retries: how many more claims the task gets when its worker is lost.
        :raises QueueNotFound: the queue does not exist (the message lists the known ones).
        :raises TaskNotFound: no task has this id.
        :raises TaskStateError: the task is in a status that cannot be queued.
        """

        def put() -> None:
            q = t.Queue.get_or_none(t.Queue.name == queue)
            if q is None:
                raise QueueNotFound(queue, [r.name for r in t.Queue.select(t.Queue.name)])
            row = self._sql(sql.SELECT_STATUS + self.dialect.row_lock, (task_id,)).fetchone()
            if row is None:
                raise TaskNotFound(task_id, self.where)
            if Status(row[0]) not in sources_of(Status.queued):
                raise TaskStateError(task_id, row[0], "enqueue")
            now = time.time()
            # Attempts are never reset (they fence); the budget counts from the current one.
            (t.QueueEntry.insert(queue=q.id, task=task_id, priority=priority, enqueued=now,
                                 max_attempts=1 + lost_retries)
             .on_conflict(conflict_target=[t.QueueEntry.task],
                          update={t.QueueEntry.queue: q.id, t.QueueEntry.enqueued: now,
                                  t.QueueEntry.priority: priority, t.QueueEntry.worker: None,
                                  t.QueueEntry.lease_expires: None,
                                  t.QueueEntry.max_attempts:
                                      t.QueueEntry.attempt + 1 + lost_retries})
             .execute())
            t.Task.update(status=Status.queued.value, status_reason="", last_update=now).where(
                t.Task.id == task_id).execute()
            self._announce_work(queue)

        self.write(put)

    def watch_queues(self, queues: Sequence[str], wake: Callable[[], None]) -> QueueWatch:
        """Call ``wake`` (from a thread of the store's) soon after any process queues a task
        on one of ``queues``, until the returned watch is closed: the "wait for work" seam.

        On PostgreSQL the store listens for the ``NOTIFY`` sent by the transaction that
        queued it (:class:`~pipekit.store.postgres.WorkListener`); on SQLite there is no such
        signal and nothing calls ``wake``: the caller's polling finds the task.
        """
        self._check()
        if self.dialect.notify is None or not isinstance(self.db, PostgresDatabase):
            return _Polling()
        return WorkListener(self.db, queues, wake)

    def fail_queued(self, task_id: str, reason: str) -> bool:
        """Fail a task that is still ``queued`` (none took it in time); returns whether it
        was. A task an agent claimed meanwhile is left to run.
        """
        self._check()
        now = time.time()
        fields = {"status": Status.failed.value, "status_reason": reason, "last_update": now,
                  "ended": now}
        statement = sql.set_status(tuple(fields), 1)
        return bool(self.write(lambda: self._sql(
            statement, (*fields.values(), task_id, Status.queued.value)).rowcount))

    def queues_waited_on(self, parent: str) -> list[str]:
        """The queues on which tasks of ``parent`` (a run's steps) wait to be claimed."""
        self._check()
        query = (t.QueueEntry.select(t.Queue.name).join(t.Queue).switch(t.QueueEntry)
                 .join(t.Task).where((t.Task.parent == parent)
                                     & (t.Task.status == Status.queued.value))
                 .distinct().tuples())
        return sorted(name for (name,) in query)

    def waiting(self, queues: Sequence[str]) -> int:
        """How many tasks are ``queued`` on ``queues`` (a read: no write lock taken)."""
        names = list(dict.fromkeys(queues))
        if not names:
            return 0
        self._check()
        return (t.QueueEntry.select().join(t.Queue).switch(t.QueueEntry).join(t.Task)
                .where(t.Queue.name.in_(names) & (t.Task.status == Status.queued.value))
                .count())

    def queue_of(self, task_id: str) -> str | None:
        """The queue the task was last put on, or ``None``."""
        self._check()
        row = (t.QueueEntry.select(t.Queue.name).join(t.Queue)
               .where(t.QueueEntry.task == task_id).tuples().first())
        return row[0] if row else None

    def claim(self, queues: Sequence[str], worker: str, *,
              lease: float | None = None) -> Claim | None:
        """Take the next queued task of ``queues`` for ``worker``, in one short write: the
        highest-priority, then oldest, entry whose task is still ``queued``. The task becomes
        ``in_progress`` with ``worker``; its entry records the worker, one more attempt and
        the lease. Of processes claiming at once, each gets a different task.

        :param queues: the queues to take from, by name (unknown names hold nothing).
        :param lease: seconds until the entry's lease expires (default: no expiry).
        :returns: the claimed task as it is now, its queue and lease, or ``None`` when
            nothing waits.
        """
        names = list(dict.fromkeys(queues))
        if not names:
            return None
        self._check()
        pick = self.dialect.claim(len(names))  # placeholders already in the driver's style
        start = sql.set_status(_CLAIM_FIELDS, 1)

        def take() -> Claim | None:
            now = time.time()
            expires = None if lease is None else now + lease
            while True:
                row = self.db.execute_sql(pick, names).fetchone()
                if row is None:
                    return None
                entry_id, task_id, queue = row
                # Conditional, like set_status: a task stopped meanwhile is not taken (on
                # PostgreSQL only the entry is locked); the next candidate is tried instead.
                moved = self._sql(start, (Status.in_progress.value, "", now, now, None, worker,
                                          task_id, Status.queued.value)).rowcount
                if moved:
                    self._sql(sql.CLAIM_ENTRY, (worker, expires, entry_id))
                    attempt = self._sql("SELECT attempt FROM queue_entry WHERE id = ?",
                                        (entry_id,)).fetchone()[0]
                    info = task_info(self._sql(sql.SELECT_TASK, (task_id,)).fetchone())
                    return Claim(info, queue, Lease(worker, attempt), expires)

        return self.write(take)

    def heartbeat(self, held: Iterable[tuple[str, Lease]], ttl: float) -> set[str]:
        """Extend the leases ``held`` (``(task id, lease)`` pairs) to ``ttl`` seconds from now,
        in one write; returns the ids of the tasks whose lease is still this holder's. A
        task missing from the answer was reaped, stopped or finished: its holder must stop.
        """
        pairs = list(held)
        if not pairs:
            return set()
        self._check()

        def extend() -> set[str]:
            until = time.time() + ttl
            return {task_id for task_id, lease in pairs
                    if self._sql(sql.EXTEND_LEASE, (until, task_id, lease.worker,
                                                    lease.attempt)).rowcount}

        return self.write(extend)

    def lease_of(self, task_id: str) -> tuple[Lease | None, float | None]:
        """The current claim on a task (``None`` if unclaimed) and when it expires."""
        self._check()
        row = (t.QueueEntry.select(t.QueueEntry.worker, t.QueueEntry.attempt,
                                   t.QueueEntry.lease_expires)
               .where(t.QueueEntry.task == task_id).tuples().first())
        if row is None or row[0] is None:
            return None, None
        return Lease(row[0], row[1]), row[2]

    def reap(self, now: float | None = None) -> list[Reaped]:
        """Turn every expired lease of a running task into another attempt (the task is
        ``queued`` again) while its ``max_attempts`` allows, else fail it "worker lost"; one
        write. Run by agents and controllers alike: two reapers never act on one lease twice.
        """
        self._check()

        def sweep() -> list[Reaped]:
            at = time.time() if now is None else now
            # (locked on PostgreSQL, skipping what another reaper holds: each lease is
            # reaped once, and its entry is locked before its task, as a claim does)
            expired = self._sql(sql.EXPIRED_LEASES + self.dialect.claim_lock, (at,)).fetchall()
            done = []
            for entry_id, task_id, worker, attempt, max_attempts, queue in expired:
                lease = Lease(worker, attempt)
                if attempt < max_attempts:
                    reason = (f"worker {worker} lost (its lease expired); re-queued for "
                              f"attempt {attempt + 1} of {max_attempts}")
                    status, action = Status.queued, "requeued"
                else:
                    reason = (f"worker lost: {worker} stopped heartbeating on attempt "
                              f"{attempt} of {max_attempts}")
                    status, action = Status.failed, "failed"
                fields = {"status": status.value, "status_reason": reason, "last_update": at,
                          "ended": at if status is Status.failed else None}
                moved = self._sql(sql.set_status(tuple(fields), 1),
                                  (*fields.values(), task_id, Status.in_progress.value)
                                  ).rowcount
                if moved:
                    t.QueueEntry.update(worker=None, lease_expires=None).where(
                        t.QueueEntry.id == entry_id).execute()
                    if status is Status.queued:
                        self._announce_work(queue)
                    done.append(Reaped(task_id, action, lease, reason))
            return done

        return self.write(sweep)

    def release(self, task_id: str, lease: Lease, reason: str) -> bool:
        """Give a claimed task back to its queue (an agent shutting down): ``queued`` again,
        without using up an attempt of its budget. Fenced: returns whether ``lease`` was
        current.
        """
        self._check()

        def back() -> bool:
            now = time.time()
            fields = {"status": Status.queued.value, "status_reason": reason,
                      "last_update": now, "started": None}
            moved = self._sql(sql.set_status(tuple(fields), 1) + sql.FENCE,
                              (*fields.values(), task_id, Status.in_progress.value, task_id,
                               lease.worker, lease.attempt)).rowcount
            if moved:
                t.QueueEntry.update(worker=None, lease_expires=None,
                                    max_attempts=t.QueueEntry.max_attempts + 1).where(
                    t.QueueEntry.task == task_id).execute()
                queue = self._sql(sql.QUEUE_OF_TASK, (task_id,)).fetchone()
                if queue is not None:
                    self._announce_work(queue[0])
            return bool(moved)

        return self.write(back)

    def release_claim(self, task_id: str) -> bool:
        """Take a task off its queue for good, whoever holds it: its agent's lease stops
        being current (its heartbeats and late results are refused) and no reaper retries it.
        What ``pipekit resume`` does to a controller task it takes over. Returns whether the
        task had an entry.
        """
        self._check()
        return bool(self.write(lambda: t.QueueEntry.delete()
                               .where(t.QueueEntry.task == task_id).execute()))

