"""What the web UI changes: abort, resume and New run, each through :mod:`pipekit.runs`.

A run the UI starts (New run here, or a resume) runs as ``pipekit runs start`` / ``pipekit
resume`` in its own session, detached from the server: closing the UI does not stop it,
and its output goes to the run's log like any other run's. The server reaps the child when
it ends, so none is left a zombie.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import Any

from ..config import lease_ttl
from ..errors import BadRequest, NotFound, PipekitError
from ..models import Status
from ..runs import abort, abort_run, busy, clone_run, owner_alive
from ..store import Store

__all__ = ["abort_task", "new_run", "resume_run", "stop_run"]


def stop_run(store: Store, run_id: str) -> dict[str, Any]:
    """Abort run ``run_id``: it ends ``stopped`` with every step, at once.

    :raises PipekitError: it is not a run, or it has already ended.
    """
    info = abort_run(run_id, "aborted from the web UI")
    return {"id": info.id, "status": info.status}


def abort_task(store: Store, task_id: str) -> dict[str, Any]:
    """Abort a task that has not finished (a run: :func:`stop_run`)."""
    info = abort(task_id, "aborted from the web UI", store=store)
    return {"id": info.id, "status": info.status}


def resume_run(store: Store, run_id: str) -> dict[str, Any]:
    """Start ``pipekit resume RUN`` in the background for a run whose controller is lost.

    :raises RunBusy: its controller is alive.
    :raises PipekitError: it has ended.
    """
    run_id = store.resolve_task_id(run_id)
    info = store.get_task(run_id)
    if info.status != Status.in_progress.value:
        raise PipekitError(f"run {run_id} has already ended ({info.status}): nothing to "
                           "resume; use New run to run it again")
    run = store.get_run(run_id)
    if owner_alive(run):
        raise busy(run_id, run.owner)
    _detach(["resume", run_id])
    return {"id": run_id}


def new_run(store: Store, run_id: str, params: Mapping[str, Any],
            queue: str | None = None) -> dict[str, Any]:
    """Clone run ``run_id`` with ``params`` changed (texts, typed like the run's ``Args``)
    and start the clone: here, in the background, or on ``queue`` for its agents.

    :raises BadRequest: a parameter value that is not text, or a queue no live agent serves.
    :raises PipekitError: not a run, or a parameter it does not have or cannot read.
    """
    if not isinstance(params, Mapping):
        raise BadRequest("params must be an object of parameter name -> value text")
    bad = [k for k, v in params.items() if not isinstance(v, str)]
    if bad:
        raise BadRequest(f"parameter {bad[0]!r}: values are sent as text")
    if queue:
        live = {q.name: q.agents for q in store.list_queues(live_within=lease_ttl())}
        if not live.get(queue):
            raise BadRequest(f"queue {queue!r} has no live agent: run it here, or start "
                             f"`pipekit agent --queue {queue}` first")
    try:
        clone = clone_run(run_id, dict(params), store=store)
    except NotFound:
        raise
    except PipekitError as exc:  # not a run, a parameter it lacks, a value it cannot read
        raise BadRequest(str(exc)) from exc
    if queue:
        store.enqueue(clone.id, queue)
    else:
        _detach(["runs", "start", clone.id])
    return {"id": clone.id}


def _detach(args: list[str]) -> None:
    """Run ``pipekit ARGS`` in its own session; a thread reaps it when it ends."""
    env = dict(os.environ)
    env.pop("PIPEKIT_TASK_ID", None)  # the child is a run of its own, not a step of ours
    try:
        child = subprocess.Popen([sys.executable, "-m", "pipekit", *args],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, start_new_session=True, env=env)
    except OSError as exc:
        raise PipekitError(f"could not start `pipekit {' '.join(args)}`: {exc}") from exc
    threading.Thread(target=child.wait, name=f"pipekit-ui-reap-{child.pid}",
                     daemon=True).start()

