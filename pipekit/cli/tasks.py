"""``pipekit tasks``: list, inspect, clone, enqueue and run tasks."""

from __future__ import annotations

import sys

import click

from ..errors import PipekitError
from .options import listing_options
from .render import emit_json, json_option, listing, table, when


@click.group()
def tasks() -> None:
    """List, inspect, clone, enqueue and run tasks."""


@tasks.command("ls")
@listing_options("tasks", name="Only tasks with this name.", statuses=True, tags=True,
                 limit=True)
def ls(project: str | None, name: str | None, statuses: tuple[str, ...],
       tags: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List tasks, most recent first."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import get_store

    found = get_store().find_tasks(project=project, name=name, status=statuses, tags=tags,
                                   limit=limit)
    listing(found, as_json, "tasks", ["id", "project", "name", "type", "status", "created"],
            lambda t: [t.id[:12], t.project, t.name, t.type, t.status, when(t.created)],
            "no tasks")


def task_details(task_id: str) -> dict:
    """Everything ``tasks show`` prints, as plain data."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import get_store
    from ..task import Task

    store = get_store()
    task_id = store.resolve_task_id(task_id)
    info = store.get_task(task_id)
    task = Task(task_id)
    return {
        "task": info,
        "parameters": {k: p.value for k, p in store.get_parameters(task_id).items()},
        "configuration": sorted(store.list_configurations(task_id)),
        "artifacts": [{"name": a.name, "serializer": a.ref.serializer, "type": a.ref.type,
                       "size": a.ref.size, "digest": a.ref.digest, "preview": a.preview,
                       "metadata": a.metadata} for a in store.list_artifacts(task_id)],
        "models": [{"id": m.id, "name": m.name, "framework": m.framework, "size": m.ref.size,
                    "digest": m.ref.digest} for m in store.list_models(task_id)],
        "metrics": task.get_last_scalar_metrics(),
        "single_values": store.single_values(task_id),
        "plots": [report.data for report in store.reports(task_id, "plot")],
        "queue": store.queue_of(task_id),
    }


@tasks.command("show")
@click.argument("task_id", metavar="TASK")
@json_option
def show(task_id: str, as_json: bool) -> None:
    """Show a task: status, script, parameters, artifacts, models, metrics and plots."""
    details = task_details(task_id)
    if as_json:
        emit_json(details)
        return
    info = details["task"]
    reason = f" ({info.status_reason})" if info.status_reason else ""
    click.echo(f"task      {info.id}\nname      {info.name}\nproject   {info.project}\n"
               f"type      {info.type}\nstatus    {info.status}{reason}\n"
               f"created   {when(info.created)}\nstarted   {when(info.started)}\n"
               f"ended     {when(info.ended)}\nworker    {info.worker or ''}\n"
               f"parent    {info.parent or ''}\ntags      {', '.join(info.tags)}\n"
               f"script    {info.script.get('path') or info.script.get('entry_point', '')}\n"
               f"log       {info.log_path}")
    if details["parameters"]:
        table("parameters", ["name", "value"], sorted(details["parameters"].items()))
    if details["artifacts"]:
        table("artifacts", ["name", "serializer", "size", "digest", "preview"],
              [[a["name"], a["serializer"], a["size"], a["digest"][:12], a["preview"]]
               for a in details["artifacts"]])
    if details["models"]:
        table("models", ["id", "name", "framework", "size"],
              [[m["id"][:12], m["name"], m["framework"], m["size"]] for m in details["models"]])
    metrics = [[title, series, v["last"], v["min"], v["max"]]
               for title, by_series in details["metrics"].items()
               for series, v in by_series.items()]
    if metrics:
        table("scalars", ["title", "series", "last", "min", "max"], metrics)
    if details["single_values"]:
        table("single values", ["name", "value"], sorted(details["single_values"].items()))
    if details["plots"]:
        # lazy: `pipekit --help` and other commands load only what they use
        from ..plots import describe

        table("plots", ["kind", "title", "series", "iteration", "what"],
              [[p["kind"], p["title"], p["series"], p["iteration"], describe(p)]
               for p in details["plots"]])


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    """``("Args/lr=0.1", …)`` -> ``{"Args/lr": "0.1"}``; a bad pair is a one-line error."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise PipekitError(f"--param {pair!r}: expected key=value or Section/key=value "
                               "(e.g. --param lr=0.1, --param Args/lr=0.1)")
        out[key.strip()] = value
    return out


@tasks.command("clone")
@click.argument("task_id", metavar="TASK")
@click.option("--name", help="Name of the new task (default: 'Clone Of <name>').")
@click.option("--project", help="Project of the new task (default: the source's).")
@click.option("--param", "params", multiple=True, metavar="SECTION/KEY=VALUE",
              help="Override a parameter of the clone (repeatable).")
@json_option
def clone(task_id: str, name: str | None, project: str | None, params: tuple[str, ...],
          as_json: bool) -> None:
    """Clone a task into a new draft, optionally with changed parameters."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..params import typed_overrides
    from ..task import Task

    source = Task.get_task(task_id)
    overrides = typed_overrides(source.get_parameters_info(), parse_params(params))
    new = Task.clone(source, name=name, project=project)
    if overrides:
        new.set_parameters(overrides)
    if as_json:
        emit_json({"id": new.id, "source": task_id})
    else:
        click.echo(new.id)


@tasks.command("enqueue")
@click.argument("task_id", metavar="TASK")
@click.option("--queue", default="default", show_default=True, help="Queue name.")
def enqueue(task_id: str, queue: str) -> None:
    """Put a draft task on a queue for an agent."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..task import Task

    result = Task.enqueue(task_id, queue_name=queue)
    click.echo(f"task {result['task']} queued on {queue!r}")


@tasks.command("run")
@click.argument("task_id", metavar="TASK")
@click.option("--quiet", is_flag=True, help="Do not echo the task's output.")
def run(task_id: str, quiet: bool) -> None:
    """Execute a draft task here, as a subprocess, with its output captured in its log."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..worker import describe_end, run_task, succeeded

    info = run_task(task_id, echo=None if quiet else sys.stdout.buffer)
    if not succeeded(info):
        raise PipekitError(f"task {info.id} {describe_end(info)}")
    click.echo(f"task {info.id} completed", err=True)


@tasks.command("abort")
@click.argument("task_ids", nargs=-1, required=True, metavar="TASK...")
@click.option("--reason", default="aborted by user", show_default=True,
              help="Why, as the task's status reason.")
def abort(task_ids: tuple[str, ...], reason: str) -> None:
    """Stop tasks that have not finished. Aborting a pipeline run stops its running steps
    and ends it; aborting a step fails its run unless the step may fail.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..runs import abort as abort_task

    for task_id in task_ids:
        click.echo(f"task {abort_task(task_id, reason).id} stopped")


def register(cli: click.Group) -> None:
    cli.add_command(tasks)
