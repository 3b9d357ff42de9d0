"""A pipeline run as plain, JSON-ready data: what ``pipekit runs show`` prints, ``--json``
dumps, ``pipekit export`` draws and the web UI shows.

:func:`run_view` reads a run in a fixed number of statements whatever its size (steps'
artifacts and nested runs are each read for all steps at once), so a 500-step run's page
costs the same few queries as a 5-step one.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

import attrs
import psutil

from . import context
from .config import lease_ttl
from .errors import PipekitError
from .models import NodeRecord, RunRecord, RunSummary, Status, TaskInfo, TaskType
from .store import Store, get_store

__all__ = ["LOG_TAIL_LINES", "controller_lost", "duration", "has_run", "listed_lost", "log_tail",
           "mark_lost", "owner_gone", "require_run", "run_view"]

#: how many of a failed step's last log lines ``runs show`` prints
LOG_TAIL_LINES = 12


def require_run(store: Store, run_id: str) -> str:
    """The full id of pipeline run ``run_id`` (an id or unique prefix).

    :raises TaskNotFound: no such task.
    :raises PipekitError: the task is not a pipeline run, or never started its pipeline.
    """
    run_id = store.resolve_task_id(run_id)
    info = store.get_task(run_id)
    if info.type != TaskType.controller.value:
        raise PipekitError(f"task {run_id} is not a pipeline run")
    if not has_run(store, run_id):
        why = f": {info.status_reason}" if info.status_reason else ""
        raise PipekitError(f"task {run_id} ({info.status}{why}) never started its pipeline "
                           f"(pipekit logs {run_id[:12]})")
    return run_id


def has_run(store: Store, task_id: str) -> bool:
    """Whether task ``task_id`` has a run record (it started a pipeline)."""
    try:
        store.get_run(task_id)
        return True
    except PipekitError:
        return False


def duration(started: float | None, ended: float | None) -> float | None:
    return None if started is None or ended is None else round(ended - started, 3)


def owner_gone(owner: str | None) -> bool:
    """Whether ``owner`` (a run's ``host:pid``) ran on this host and its process has ended
    (or exited and awaits its parent: a zombie). Another host's owner is never known gone
    here: only its heartbeat tells.
    """
    where = context.owner_process(owner) if owner else None
    if where is None or where[0] != socket.gethostname():
        return False
    try:
        return psutil.Process(where[1]).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:  # another user's: it exists
        return False


def controller_lost(task: TaskInfo, run: RunRecord) -> bool:
    """Whether a run is ``in_progress`` and nobody drives it: no controller heartbeat for a
    lease TTL, or its controller ran here and its process is gone (seen at once).
    """
    if task.status != Status.in_progress.value:
        return False
    last = run.heartbeat or task.created or 0.0
    return last < time.time() - lease_ttl() or owner_gone(run.owner)


def listed_lost(run: RunSummary) -> bool:
    """:func:`controller_lost` for a run as listed (the store counted the heartbeat)."""
    return run.controller_lost or (run.status == Status.in_progress.value
                                   and owner_gone(run.owner))


def mark_lost(runs: Sequence[RunSummary]) -> list[RunSummary]:
    """``runs`` with ``controller_lost`` as :func:`listed_lost` sees it."""
    return [attrs.evolve(r, controller_lost=True) if not r.controller_lost and listed_lost(r)
            else r for r in runs]


def run_view(run_id: str, *, store: Store | None = None, depth: int = 3) -> dict[str, Any]:
    """Run ``run_id`` (an id or unique prefix) as plain, JSON-ready data.

    :param depth: how many levels of nested pipelines to include.
    """
    store = store or get_store()
    return _view(store, require_run(store, run_id), depth)


def _view(store: Store, run_id: str, depth: int) -> dict[str, Any]:
    task = store.get_task(run_id)
    run = store.get_run(run_id)
    records = store.list_nodes(run_id)
    tasks = [n.task for n in records if n.task]
    artifacts = store.artifacts_of(tasks)
    inside = store.runs_inside(tasks) if depth > 0 else {}
    nodes = []
    for node in records:
        entry = _node(node)
        if node.task:
            step = store.get_task(node.task)
            entry["reason"] = step.status_reason
            if node.status == Status.failed.value:  # why, in the step's own words
                entry["log_tail"] = log_tail(store, node.task)
            entry["parameters"] = {key: p.value for key, p in
                                   store.get_parameters(node.task).items()}
            entry["outputs"] = [{"name": a.name, "type": a.ref.type, "size": a.ref.size,
                                 "digest": a.ref.digest, "preview": a.preview}
                                for a in artifacts.get(node.task, ())]
            entry["runs"] = [_view(store, nested, depth - 1)
                             for nested in _nested(step, inside.get(node.task, ()))]
        nodes.append(entry)
    return {
        "id": run_id, "name": task.name, "project": task.project, "status": task.status,
        "reason": task.status_reason, "version": run.version,
        "structure_hash": run.structure_hash, "origin": run.origin,
        "owner": run.owner, "controller_lost": controller_lost(task, run),
        "parent": task.parent, "created": task.created, "started": task.started,
        "ended": task.ended, "duration": duration(task.started, task.ended),
        "parameters": {p.name: p.value for p in store.get_parameters(run_id).values()
                       if p.section == "Args"},
        "outputs": [{"name": a.name, "type": a.ref.type, "preview": a.preview}
                    for a in store.list_artifacts(run_id)],
        "nodes": nodes,
    }


def _node(node: NodeRecord) -> dict[str, Any]:
    return {"name": node.name, "parents": node.parents, "status": node.status,
            "task": node.task, "started": node.started, "ended": node.ended,
            "duration": duration(node.started, node.ended), "attempt": node.attempt,
            "cached": node.status == "cached", "cache_key": node.cache_key,
            "parameters": {}, "outputs": [], "runs": []}


def _nested(step: TaskInfo, runs: Sequence[str]) -> list[str]:
    """Pipelines run inside a step: the step is itself a run (a controller task as a step),
    or it started runs (a decorated pipeline called from a component), in that order.
    ``runs`` lists both (:meth:`Store.runs_inside`); the step's own run counts only when the
    step is a controller task.
    """
    own = [step.id] if step.type == TaskType.controller.value and step.id in runs else []
    return own + [r for r in runs if r != step.id]


def log_tail(store: Store, task_id: str) -> list[str]:
    """The last :data:`LOG_TAIL_LINES` lines of a task's log (none if it has no log)."""
    size = store.read_log(task_id, limit=0).size
    text = store.read_log(task_id, offset=max(0, size - 64 * 1024)).data.decode(
        "utf-8", "replace")
    return text.splitlines()[-LOG_TAIL_LINES:]
