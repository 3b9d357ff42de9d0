"""How a task ends: :func:`finish_task` is the one place a task execution gets its final status.

Whoever ran the task calls it — the worker for a script it ran as a child process, a function
step when its call returns, a ``Task.init`` script at exit — so every ending does the same
things in the same order: the task's buffered metrics are written, its log is copied into a
shared database (:meth:`~pipekit.store.Store.ship_log`), its log size is recorded,
and one final status (``completed``, ``failed`` or ``stopped``, with its reason) is set by a
conditional write, so of two parties racing to end a task exactly one wins. This is also
where a lease's fencing check belongs once remote agents run tasks.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import context, crash
from .logger import flush_metrics
from .models import ArtifactInfo, Lease, Status
from .redact import redact
from .store import get_store

__all__ = ["finish_task"]


def finish_task(task_id: str, status: Status, reason: str = "", *,
                log_size: int | None = None, lease: Lease | None = None,
                run: bool = False, owner: str | None = None,
                artifacts: Sequence[ArtifactInfo] = ()) -> bool:
    """End ``task_id`` with ``status`` (and ``reason``); returns whether this call set it.

    A task that already has a final status keeps it (a step stopped or timed out from outside
    is not turned ``completed`` by its late return). A task run under a lease ends only while
    that lease is current: the fencing check that keeps a presumed-dead worker's late result
    out.

    :param log_size: the size of the task's log, when the caller captured it.
    :param lease: the claim the caller ran the task under (default: this process's, if it
        was started by an agent to execute ``task_id``).
    :param run: the task is a pipeline's controller: its run ends with it, every step and
        node included, in the same transaction (a controller that died must not leave its
        steps running: RELIABILITY 12).
    :param owner: with ``run``: the controller owner ending it; a run another process has
        taken over since is left to it.
    :param artifacts: recorded with the status, in its transaction, only if this call sets
        it (a step's return values, their objects already stored): a step stopped or timed
        out meanwhile keeps none, and a completed one has them all.
    """
    reason = redact(reason)  # a step's error may quote the secrets it was given
    try:
        flush_metrics(task_id)
    finally:
        store = get_store()
        store.ship_log(task_id)  # the rest of its log, before anyone sees it ended
        if log_size is not None:
            store.set_log_size(task_id, log_size)
        lease = lease or context.lease_for(task_id)
        if run:
            moved = store.finish_run(task_id, status, reason, lease=lease, owner=owner)
        else:
            moved = store.set_status(task_id, status, reason=reason, lease=lease,
                                     artifacts=artifacts)
            if moved and status is Status.completed and crash.armed():
                crash.point("step-committed", store.get_task(task_id).name)
    return moved
