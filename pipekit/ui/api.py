"""What the web UI reads: JSON-ready views of runs and tasks, built from the store.

Each function takes the :class:`~pipekit.store.Store` and plain arguments and returns plain
data (``docs/ui-api.md`` gives every shape); :mod:`pipekit.ui.app` only maps URLs to them.
They never write, never run user code and never unpickle: previews are the ones stored with
each artifact, and downloads are the stored bytes after their digest verifies.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from ..errors import BadRequest, NotFound, PipekitError
from ..models import ParamInfo, Status, TaskInfo, TaskType
from ..render import layout
from ..store import Store
from ..views import controller_lost, duration, listed_lost, require_run, run_view

__all__ = ["FINAL", "LOG_CHUNK", "MAX_PAGE", "BadRequest", "compare", "image_of", "list_runs",
           "list_tasks", "meta", "page", "require_run", "run_page", "run_status", "task_log",
           "task_page", "task_plots", "task_scalars"]

#: statuses after which nothing about a task changes
FINAL = frozenset({Status.completed.value, Status.failed.value, Status.stopped.value,
                   "cached", "skipped"})
#: most rows a listing returns at once
MAX_PAGE = 500
#: most log bytes one response carries
LOG_CHUNK = 256 * 1024
#: how many runs or tasks a comparison takes
COMPARE = (2, 5)
_INPUT = re.compile(r"([0-9a-f]{32})\.([A-Za-z0-9][A-Za-z0-9._-]*)")


def page(offset: int, limit: int) -> tuple[int, int]:
    """``offset`` and ``limit`` checked: not negative, at most :data:`MAX_PAGE` rows."""
    if offset < 0 or limit < 1 or limit > MAX_PAGE:
        raise BadRequest(f"offset {offset} / limit {limit}: need offset >= 0 and "
                         f"1 <= limit <= {MAX_PAGE}")
    return offset, limit


# -- listings ------------------------------------------------------------------------------------


def meta(store: Store, *, version: str, token_ok: bool) -> dict[str, Any]:
    """The server's identity and the queues a New run may go to (those with live agents)."""
    # lazy: the config module's TTL is read per call, as agents read it
    from ..config import lease_ttl

    queues = store.list_queues(live_within=lease_ttl())
    return {"version": version, "store": store.where, "token_ok": token_ok,
            "queues": [{"name": q.name, "pending": q.pending, "agents": q.agents}
                       for q in queues]}


def list_runs(store: Store, *, project: str | None = None, pipeline: str | None = None,
              status: Sequence[str] = (), offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """One page of pipeline runs, newest first, with the filters' choices."""
    offset, limit = page(offset, limit)
    runs = store.list_runs(project=project, name=pipeline, status=status, limit=limit,
                           offset=offset)
    users = {r.id: store.get_task(r.id).user for r in runs}
    return {
        "total": store.count_runs(project=project, name=pipeline, status=status),
        "offset": offset, "limit": limit,
        "runs": [{"id": r.id, "project": r.project, "pipeline": r.name, "version": r.version,
                  "status": r.status, "reason": r.status_reason,
                  "controller_lost": listed_lost(r), "created": r.created,
                  "started": r.started, "ended": r.ended,
                  "duration": duration(r.started, r.ended), "user": users.get(r.id),
                  "origin": r.origin, "parent": r.parent} for r in runs],
        "projects": store.list_projects(),
        "pipelines": sorted({p.name for p in store.list_pipelines(project)}),
    }


def list_tasks(store: Store, *, project: str | None = None, status: Sequence[str] = (),
               standalone: bool = False, offset: int = 0, limit: int = 50) -> dict[str, Any]:
    """One page of tasks, newest first; ``standalone`` keeps those outside any pipeline."""
    offset, limit = page(offset, limit)
    found = store.find_tasks(project=project, status=status)
    if standalone:
        found = [t for t in found if t.parent is None and t.type != TaskType.controller.value]
    chosen = found[offset:offset + limit]
    return {"total": len(found), "offset": offset, "limit": limit,
            "tasks": [_task_row(t) for t in chosen], "projects": store.list_projects()}


def _task_row(info: TaskInfo) -> dict[str, Any]:
    return {"id": info.id, "project": info.project, "name": info.name, "type": info.type,
            "status": info.status, "reason": info.status_reason, "created": info.created,
            "started": info.started, "ended": info.ended,
            "duration": duration(info.started, info.ended), "parent": info.parent,
            "user": info.user}


# -- a run -------------------------------------------------------------------------------------


def run_page(store: Store, run_id: str) -> dict[str, Any]:
    """The run view of ``pipekit runs show --json``, plus typed ``args`` and a left-to-right
    ``layout`` for the run and each nested run.
    """
    view = run_view(run_id, store=store)
    params = store.get_parameters(view["id"])
    view["args"] = [{"name": p.name, "value": p.value, "type": p.type,
                     "description": p.description}
                    for p in params.values() if p.section == "Args"]
    view["user"] = store.get_task(view["id"]).user
    view["dashboards"] = dashboards(params.values())
    _add_layouts(view)
    return view


def dashboards(params: Iterable[ParamInfo]) -> list[dict[str, str]]:
    """Links an executor recorded on the run: each ``properties/<name>_dashboard`` parameter
    holding an http(s) URL (the dask executor's ``dask_dashboard``), as ``{name, url}``.
    Anything else there is not a link: a ``javascript:`` value must never become one.
    """
    out = []
    for p in params:
        if p.section == "properties" and p.name.endswith("_dashboard") and \
                urlsplit(str(p.value)).scheme in ("http", "https"):
            out.append({"name": p.name.removesuffix("_dashboard").replace("_", " "),
                        "url": str(p.value)})
    return out


def _add_layouts(view: dict[str, Any]) -> None:
    view["layout"] = layout(view["nodes"], "LR").to_dict()
    for node in view["nodes"]:
        for nested in node.get("runs") or ():
            _add_layouts(nested)


def run_status(store: Store, run_id: str, *, depth: int = 3) -> dict[str, Any]:
    """What changes while run ``run_id`` goes: its status and each node's, and the same for
    the runs nested in its steps (``depth`` levels), in a few queries.
    """
    run_id = store.resolve_task_id(run_id)
    task = store.get_task(run_id)
    run = store.get_run(run_id)
    nodes = store.list_nodes(run_id)
    out: dict[str, Any] = {
        "id": run_id, "status": task.status, "reason": task.status_reason,
        "ended": task.ended, "duration": duration(task.started, task.ended),
        "controller_lost": controller_lost(task, run),
        "nodes": {n.name: {"status": n.status, "task": n.task, "attempt": n.attempt,
                           "started": n.started, "ended": n.ended,
                           "duration": duration(n.started, n.ended),
                           "cached": n.status == "cached"} for n in nodes},
        "runs": {}}
    if depth > 0:
        inside = store.runs_inside([n.task for n in nodes if n.task])
        for ids in inside.values():
            for nested in ids:
                if nested != run_id:
                    inner = run_status(store, nested, depth=depth - 1)
                    out["runs"][nested] = {"status": inner["status"], "nodes": inner["nodes"]}
                    out["runs"].update(inner["runs"])
    return out


# -- a task ------------------------------------------------------------------------------------


def task_page(store: Store, task_id: str, run_id: str | None = None) -> dict[str, Any]:
    """Everything the step panel shows of one task but its scalars, plots and log.

    :param run_id: the run the task is shown as a step of: a cached step's task was made by
        an earlier run, and its cache block is about this one.
    """
    task_id = store.resolve_task_id(task_id)
    info = store.get_task(task_id)
    run_id, node = _node_of(store, info, run_id)
    params = list(store.get_parameters(task_id).values())
    artifacts = store.list_artifacts(task_id)
    reports = store.reports(task_id)
    return {
        **_task_row(info), "worker": info.worker, "run": run_id,
        "node": node.name if node else None,
        "parameters": [{"section": p.section, "name": p.name, "value": p.value,
                        "type": p.type, "description": p.description} for p in params],
        "inputs": _inputs(store, params, run_id),
        "artifacts": [{"name": a.name, "type": a.ref.type, "size": a.ref.size,
                       "digest": a.ref.digest, "preview": a.preview,
                       "url": f"/api/tasks/{task_id}/artifacts/{_quote(a.name)}"}
                      for a in artifacts],
        "models": [{"id": m.id, "name": m.name, "framework": m.framework,
                    "url": f"/api/models/{m.id}"} for m in store.list_models(task_id)],
        "single_values": store.single_values(task_id),
        "plots": sum(1 for r in reports if r.kind == "plot"),
        "scalars": store.count_scalars(task_id),
        "code": store.task_code(task_id),
        "script": {k: v for k, v in info.script.items() if k != "callable"},
        "cache": _cache(store, info, node),
    }


def _quote(name: str) -> str:
    # lazy: only task pages build download links
    from urllib.parse import quote

    return quote(name, safe="")


def _node_of(store: Store, info: TaskInfo, run_id: str | None) -> tuple[str | None, Any]:
    """The run and node a task is a step of (``(None, None)`` outside a pipeline): of
    ``run_id`` when given (a cached node names the earlier task it reused), else of the run
    that made it.
    """
    for run in ((store.resolve_task_id(run_id),) if run_id else ()) + (info.parent,):
        if run is None:
            continue
        try:
            nodes = store.list_nodes(run)
        except PipekitError:
            continue
        node = next((n for n in nodes if n.task == info.id), None)
        if node is not None:
            return run, node
    return info.parent, None


def _inputs(store: Store, params: Sequence[Any], run_id: str | None) -> list[dict[str, Any]]:
    """Artifact inputs with the step and task that made each."""
    steps = {n.task: n.name for n in store.list_nodes(run_id)} if run_id else {}
    out = []
    for p in params:
        if p.section != "kwargs_artifacts":
            continue
        for task, artifact in _INPUT.findall(p.value) or [(None, None)]:
            out.append({"name": p.name, "reference": p.value, "task": task,
                        "artifact": artifact, "step": steps.get(task)})
    return out


def _cache(store: Store, info: TaskInfo, node: Any) -> dict[str, Any]:
    """The step's cache key and why its result was or was not reused."""
    key = node.cache_key if node is not None else None
    if node is not None and node.status == "cached":
        return {"key": key, "cached": True, "source": node.task,
                "reason": "served from the earlier task with the same cache key"}
    if key is None:
        reason = "caching is off for this step" if info.parent else "not a pipeline step"
        return {"key": None, "cached": False, "source": None, "reason": reason}
    source = store.find_cached(key)
    reason = ("ran: no completed task had this cache key yet" if source in (None, info.id)
              else f"ran: cache refreshed or the earlier result did not verify "
                   f"(task {source} has this key)")
    return {"key": key, "cached": False, "source": None, "reason": reason}


def task_scalars(store: Store, task_id: str) -> dict[str, Any]:
    """``{"charts": {title: {series: {"x": [...], "y": [...]}}}}`` in stored order."""
    task_id = store.resolve_task_id(task_id)
    store.get_task(task_id)
    return {"charts": {title: {name: {"x": xs, "y": ys} for name, (xs, ys) in series.items()}
                       for title, series in store.scalar_columns(task_id).items()}}


def task_plots(store: Store, task_id: str) -> dict[str, Any]:
    """The task's plot, table and text reports, each with its record as ``data`` and, for
    an image kept in the store, the URL that serves it.
    """
    task_id = store.resolve_task_id(task_id)
    store.get_task(task_id)
    plots = []
    for report in store.reports(task_id):
        data: Any = report.content
        if report.kind != "text":
            try:
                data = json.loads(report.content)
            except ValueError:
                data = report.content
        kind = data.get("kind", report.kind) if isinstance(data, Mapping) else report.kind
        image = data.get("image") if isinstance(data, Mapping) else None
        url = None
        if isinstance(image, Mapping):
            url = image.get("url") or (f"/api/tasks/{task_id}/images/{image['digest']}"
                                       if image.get("digest") else None)
        plots.append({"kind": kind, "title": report.title, "series": report.series,
                      "iteration": report.iteration, "data": data, "image": url})
    return {"plots": plots}


def image_of(store: Store, task_id: str, digest: str) -> tuple[str, bytes]:
    """An image a plot report of the task shows: its type and verified bytes.

    :raises NotFound: no such task, or no report of it shows that image.
    """
    # lazy: only image requests verify blobs
    from ..store.blobs import verify_inline

    task_id = store.resolve_task_id(task_id)
    for report in store.reports(task_id, "plot"):
        try:
            image = json.loads(report.content).get("image") or {}
        except (ValueError, AttributeError):
            continue
        if image.get("digest") == digest:
            path = store.blobs.verified_path(digest, report.title or "image")
            data = verify_inline(path.read_bytes(), digest, report.title or "image")
            return str(image.get("mime") or "application/octet-stream"), data
    raise NotFound(f"task {task_id} shows no image {digest!r}")


def task_log(store: Store, task_id: str, offset: int = 0) -> dict[str, Any]:
    """Up to :data:`LOG_CHUNK` bytes of the task's log from byte ``offset``; poll again from
    the returned ``offset`` to follow it. ``final`` says the task has ended.
    """
    task_id = store.resolve_task_id(task_id)
    info = store.get_task(task_id)
    if offset < 0:
        raise BadRequest(f"log offset {offset}: must be >= 0")
    read = store.read_log(task_id, offset, LOG_CHUNK)
    size, chunk = read.size, read.data
    cut = _whole_characters(chunk)
    text = chunk[:cut].decode("utf-8", "replace")
    return {"text": text, "offset": min(offset, size) + cut, "size": size,
            "final": info.status in FINAL}


def _whole_characters(chunk: bytes) -> int:
    """How much of ``chunk`` ends on a UTF-8 character boundary: a character cut by the end
    of the chunk (a writer mid-line, or the size limit) is left for the next poll.
    """
    for back in range(1, min(4, len(chunk)) + 1):
        byte = chunk[-back]
        if byte < 0x80:  # ASCII: the last character is whole
            return len(chunk)
        if byte >= 0xC0:  # the lead byte of the last character says how long it is
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(chunk) if back >= need else len(chunk) - back
    return len(chunk)  # not UTF-8 at all: shown with replacement characters


# -- comparing -------------------------------------------------------------------------------


def compare(store: Store, *, runs: Sequence[str] = (), tasks: Sequence[str] = ()
            ) -> dict[str, Any]:
    """2–5 runs (their ``Args``, each step's parameters and every scalar) or 2–5 tasks side
    by side; a parameter ``differs`` when its values are not all equal.
    """
    if bool(runs) == bool(tasks):
        raise BadRequest("compare takes runs=A,B,... or tasks=A,B,... (one of them)")
    ids = list(runs or tasks)
    low, high = COMPARE
    if not low <= len(ids) <= high:
        raise BadRequest(f"compare takes {low} to {high} ids, got {len(ids)}")
    ids = [store.resolve_task_id(i) for i in ids]
    items, params, charts = [], [], {}
    for item in ids:
        info = store.get_task(item)
        label = f"{info.name} {item[:8]}"
        if runs:
            run_view_of = run_view(item, store=store, depth=0)
            if run_view_of.get("version"):
                label = f"{info.name} v{run_view_of['version']} {item[:8]}"
            values, sources = _run_values(store, run_view_of)
        else:
            values = {p.key: p.value for p in store.get_parameters(item).values()}
            sources = [("", item)]
        items.append({"id": item, "label": label, "status": info.status})
        params.append(values)
        for prefix, task in sources:
            for title, series in task_scalars(store, task)["charts"].items():
                shown = f"{prefix}: {title}" if prefix else title
                for name, xy in series.items():
                    charts.setdefault(shown, {}).setdefault(name, []).append(
                        {"item": item, "x": xy["x"], "y": xy["y"]})
    names = list(dict.fromkeys(k for values in params for k in values))
    rows = []
    for name in names:
        values = [p.get(name) for p in params]
        rows.append({"name": name, "values": values, "differs": len(set(values)) > 1})
    return {"items": items, "parameters": rows, "charts": charts}


def _run_values(store: Store, view: Mapping[str, Any]
                ) -> tuple[dict[str, str], list[tuple[str, str]]]:
    values = dict(view["parameters"])
    sources = [("", view["id"])]
    for node in view["nodes"]:
        for key, value in (node.get("parameters") or {}).items():
            values[f"{node['name']}/{key}"] = value
        if node.get("task"):
            sources.append((node["name"], node["task"]))
    return values, sources
