"""Pipeline runs as a user handles them: look at one, start a script, run one again.

* :func:`run_view` — a run as plain data: its parameters, and its DAG with every step's
  status, timing, cache hit, parameters and outputs, pipelines nested in a step included.
  ``pipekit runs show`` prints it, ``--json`` dumps it, ``pipekit export`` draws it.
* :func:`launch_script` — ``pipekit run SCRIPT``: a draft controller task for the script,
  whose pipeline takes it over (:func:`pipekit.runner.Runner.start`), ``--param`` values
  becoming its ``Args``.
* :func:`clone_run` — ``Task.clone`` of a run with changed ``Args``: a draft run linked to
  its origin; :func:`execute` runs a draft (``pipekit rerun``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import params as P
from .config import MODE_ENV, NO_CACHE_ENV
from .errors import PipekitError
from .hashing import digest_file
from .models import ParamInfo, TaskInfo, TaskType
from .store import Store, get_store

__all__ = ["clone_run", "execute", "launch_script", "run_view"]

MODES = ("debug", "local")


def _require_run(store: Store, run_id: str) -> str:
    run_id = store.resolve_task_id(run_id)
    info = store.get_task(run_id)
    if info.type != TaskType.controller.value:
        raise PipekitError(f"task {run_id} is not a pipeline run")
    if not _has_run(store, run_id):
        why = f": {info.status_reason}" if info.status_reason else ""
        raise PipekitError(f"task {run_id} ({info.status}{why}) never started its pipeline "
                           f"(pipekit logs {run_id[:12]})")
    return run_id


def run_view(run_id: str, *, store: Store | None = None, depth: int = 3) -> dict[str, Any]:
    """Run ``run_id`` (an id or unique prefix) as plain, JSON-ready data.

    :param depth: how many levels of nested pipelines to include.
    """
    store = store or get_store()
    run_id = _require_run(store, run_id)
    task = store.get_task(run_id)
    run = store.get_run(run_id)
    nodes = []
    for node in store.list_nodes(run_id):
        entry: dict[str, Any] = {
            "name": node.name, "parents": node.parents, "status": node.status,
            "task": node.task, "started": node.started, "ended": node.ended,
            "duration": _duration(node.started, node.ended),
            "attempt": node.attempt, "cached": node.status == "cached",
            "cache_key": node.cache_key, "parameters": {}, "outputs": [], "runs": []}
        if node.task:
            step = store.get_task(node.task)
            entry["reason"] = step.status_reason
            entry["parameters"] = {key: p.value for key, p in
                                   store.get_parameters(node.task).items()}
            entry["outputs"] = [{"name": a.name, "type": a.ref.type, "size": a.ref.size,
                                 "digest": a.ref.digest, "preview": a.preview}
                                for a in store.list_artifacts(node.task)]
            if depth > 0:
                entry["runs"] = _nested(store, node.task, step, depth - 1)
        nodes.append(entry)
    return {
        "id": run_id, "name": task.name, "project": task.project, "status": task.status,
        "reason": task.status_reason, "version": run.version,
        "structure_hash": run.structure_hash, "origin": run.origin,
        "parent": task.parent, "created": task.created, "started": task.started,
        "ended": task.ended, "duration": _duration(task.started, task.ended),
        "parameters": {p.name: p.value for p in store.get_parameters(run_id).values()
                       if p.section == "Args"},
        "outputs": [{"name": a.name, "type": a.ref.type, "preview": a.preview}
                    for a in store.list_artifacts(run_id)],
        "nodes": nodes,
    }


def _nested(store: Store, task_id: str, step: TaskInfo, depth: int) -> list[dict[str, Any]]:
    """Pipelines run inside a step: the step is itself a run (a controller task as a step),
    or it started runs (a decorated pipeline called from a component).
    """
    ids = [task_id] if step.type == TaskType.controller.value and _has_run(store, task_id) \
        else []
    ids += [r.id for r in reversed(store.list_runs(parent=task_id))]
    return [run_view(i, store=store, depth=depth) for i in ids]


def _has_run(store: Store, task_id: str) -> bool:
    try:
        store.get_run(task_id)
        return True
    except PipekitError:
        return False


def _duration(started: float | None, ended: float | None) -> float | None:
    return None if started is None or ended is None else round(ended - started, 3)


def _args(store: Store, task_id: str, overrides: Mapping[str, str]) -> list[ParamInfo]:
    """``--param k=v`` values as ``Args`` parameters of ``task_id``, typed like the existing
    ones; a name may omit its ``Args/`` section.
    """
    named = {key if "/" in key else f"Args/{key}": value for key, value in overrides.items()}
    for key in named:
        if not key.startswith("Args/"):
            raise PipekitError(f"--param {key!r}: a pipeline's parameters are in section Args")
    existing = store.get_parameters(task_id)
    return P.as_params(P.typed_overrides(existing, named), existing)


def launch_script(script: str, args: list[str] | None = None,
                  params: Mapping[str, str] | None = None, *, project: str = "default",
                  store: Store | None = None) -> TaskInfo:
    """A draft controller task that runs ``script`` (see :func:`execute`).

    :raises PipekitError: the script does not exist.
    """
    store = store or get_store()
    path = Path(script).resolve()
    if not path.is_file():
        raise PipekitError(f"script not found: {script}")
    info = store.create_task(
        project=project, name=path.stem, type=TaskType.controller.value,
        script={"path": str(path), "argv": list(args or ()), "working_dir": os.getcwd(),
                "python": sys.executable, "entry_point": path.name,
                "digest": digest_file(path)},
        code_digest=digest_file(path), tags=["pipeline"])
    if params:
        store.set_parameters(info.id, _args(store, info.id, params))
    return info


def clone_run(run_id: str, params: Mapping[str, str] | None = None, *,
              store: Store | None = None) -> TaskInfo:
    """A draft copy of run ``run_id`` with ``Args`` changed by ``params``, linked to it.

    :raises PipekitError: not a run, a parameter it does not have, or a value its type
        cannot read.
    """
    store = store or get_store()
    run_id = _require_run(store, run_id)
    source = store.get_task(run_id)
    if not source.script.get("path"):
        raise PipekitError(f"run {run_id} has no script to run again "
                           f"(it was started from {source.script.get('entry_point')!r})")
    unknown = [k for k in (params or {}) if k.split("/")[-1] not in
               {p.name for p in store.get_parameters(run_id).values() if p.section == "Args"}]
    if unknown:
        raise PipekitError(f"run {run_id} has no parameter {unknown[0]!r}")
    args = _args(store, run_id, params) if params else []  # refused before anything is made
    clone = store.clone_task(run_id, name=source.name)
    if args:
        store.set_parameters(clone.id, args)
    return clone


def execute(task_id: str, *, mode: str | None = None, no_cache: bool = False,
            echo: Any = None, on_start: Callable[[int], None] | None = None) -> TaskInfo:
    """Run draft controller task ``task_id`` here: its script in a child process, whose
    pipeline takes the task over. Returns the task once final.

    :param mode: ``debug`` or ``local``, overriding the script's own choice.
    :param no_cache: run every cached step again.
    """
    from .worker import run_task

    if mode is not None and mode not in MODES:
        raise PipekitError(f"unknown mode {mode!r}: use one of {', '.join(MODES)}")
    env = {}  # (what the caller's environment already says, e.g. PIPEKIT_NO_CACHE=1, stays)
    if mode:
        env[MODE_ENV] = mode
    if no_cache:
        env[NO_CACHE_ENV] = "1"
    return run_task(task_id, echo=echo, on_start=on_start, env=env)
