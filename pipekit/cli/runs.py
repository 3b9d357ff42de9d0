"""``pipekit run``, ``runs``, ``rerun``, ``pipelines`` and ``export``: pipeline runs."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import PipekitError, TaskNotFound
from .options import listing_options
from .render import console, emit_json, json_option, listing, when
from .tasks import parse_params

_mode_option = click.option("--mode", type=click.Choice(["debug", "local"]),
                            help="debug: every step in the pipeline's process, one at a time; "
                                 "local: every step in its own process here. Default: the "
                                 "script's choice.")
_cache_option = click.option("--no-cache", is_flag=True,
                             help="Run cached steps again (their results then serve later "
                                  "runs).")
_agents_option = click.option("--no-local-agents", "local_agents", flag_value=False,
                              default=True,
                              help="Do not start agents here for the queues the run's steps "
                                   "wait on that no agent serves (they then wait for agents "
                                   "you start, up to PIPEKIT_START_TIMEOUT).")
_alias_option = click.option("--no-clearml-alias", "clearml_alias", flag_value=False,
                             default=True,
                             help="Do not make `import clearml` resolve to pipekit for the "
                                  "script (it never does when clearml is installed).")
_echo_option = click.option("--echo", is_flag=True,
                            help="Show the script's own output instead of the live step view "
                                 "(it is always in the run's log).")


def _execute(task_id: str, mode: str | None, no_cache: bool, echo: bool,
             local_agents: bool = True, clearml_alias: bool = True) -> None:
    """Run a draft controller task with live progress; exit 1 unless it completes."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..runs import execute

    _drive(task_id, lambda **how: execute(task_id, mode=mode, no_cache=no_cache, **how),
           echo, local_agents, clearml_alias)


def _drive(task_id: str, go: Callable[..., Any], echo: bool, local_agents: bool,
           clearml_alias: bool) -> None:
    """Run controller task ``task_id`` by ``go(echo=, on_start=, env=)`` in a thread, with
    live progress and local agents for its queues; exit 1 unless it completes.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..agent import LocalAgents
    from ..alias import clearml_env
    from ..progress import watch
    from ..store import get_store
    from ..worker import describe_end, succeeded

    pid: list[int] = []
    result: list[Any] = []
    errors: list[BaseException] = []

    env = clearml_env() if clearml_alias else {}  # the script's `import clearml` gets pipekit

    def drive() -> None:
        try:
            result.append(go(echo=sys.stdout.buffer if echo else None,
                             on_start=pid.append, env=env))
        except BaseException as exc:  # re-raised below, in the main thread
            errors.append(exc)

    thread = threading.Thread(target=drive, name="pipekit-run", daemon=True)
    # as many steps at once as a local run would take (the local executors' default)
    workers = max(2, os.cpu_count() or 2)
    agents = LocalAgents(task_id, env=env, workers=workers).start() if local_agents else None
    thread.start()
    click.echo(f"run {task_id}")  # stdout: stderr is for the outcome, in one line
    try:
        if echo:
            thread.join()
        else:
            watch(task_id, until=lambda: not thread.is_alive())
            thread.join()
    except KeyboardInterrupt:
        if pid:  # the pipeline stops its steps and ends the run "stopped"
            os.kill(pid[0], signal.SIGINT)
        thread.join()
    finally:
        if agents is not None:
            agents.close()
    if errors:
        raise errors[0]
    store = get_store()
    info = store.get_task(task_id)
    if not succeeded(info):
        short = task_id[:12]
        try:
            store.get_run(task_id)
            look = f"pipekit runs show {short}"
        except TaskNotFound:  # the script died (or ended) before its pipeline started
            look = f"pipekit tasks show {short}"
        # The log to read is the failed step's, when a step failed; else the script's.
        failed = next((n.task for n in store.list_nodes(task_id)
                       if n.status == "failed" and n.task), None) \
            if info.status == "failed" else None
        raise PipekitError(f"run {task_id} {describe_end(info)} "
                           f"(pipekit logs {(failed or task_id)[:12]}; {look})")
    click.echo(f"run {task_id} completed: pipekit runs show {task_id[:12]}", err=True)


@click.command("run", context_settings={"ignore_unknown_options": True})
@click.argument("script", type=click.Path(dir_okay=False))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Set a pipeline parameter (repeatable); typed like its default.")
@click.option("--project", default="default", show_default=True,
              help="Project of the run until the pipeline names its own.")
@_mode_option
@_cache_option
@_agents_option
@_alias_option
@_echo_option
def run(script: str, script_args: tuple[str, ...], params: tuple[str, ...], project: str,
        mode: str | None, no_cache: bool, local_agents: bool, clearml_alias: bool,
        echo: bool) -> None:
    """Run a pipeline script and show its steps live.

    The script runs as it would with `python SCRIPT`; its pipeline becomes the run, with
    the --param values as its parameters. Steps the script sends to queues that no agent
    serves are run by agents started here for the run's duration. Unless clearml is
    installed, the script's `import clearml` gets pipekit, so ClearML scripts run unedited.
    Exits 1 unless the run completes and the script exits 0; a script that starts no
    pipeline fails. The error line gives the script's own error (type, message, its line).
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..runs import launch_script

    draft = launch_script(script, list(script_args), parse_params(params), project=project)
    _execute(draft.id, mode, no_cache, echo, local_agents, clearml_alias)


@click.command("rerun")
@click.argument("run_id", metavar="RUN")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE",
              help="Change a parameter of the new run (repeatable).")
@_mode_option
@_cache_option
@_agents_option
@_echo_option
def rerun(run_id: str, params: tuple[str, ...], mode: str | None, no_cache: bool,
          local_agents: bool, echo: bool) -> None:
    """Run a pipeline again as a new run linked to RUN, optionally with changed parameters.

    Steps with caching on are served from RUN's results unless their inputs changed.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..runs import clone_run

    clone = clone_run(run_id, parse_params(params))
    _execute(clone.id, mode, no_cache, echo, local_agents)


@click.command("resume")
@click.argument("run_id", metavar="RUN")
@click.option("--force", is_flag=True,
              help="Take the run over even while its controller looks alive (it then stops "
                   "driving it).")
@_agents_option
@_alias_option
@_echo_option
def resume(run_id: str, force: bool, local_agents: bool, clearml_alias: bool,
           echo: bool) -> None:
    """Continue a run whose controller was lost (killed, crashed, its machine gone).

    Runs the run's script again here as the same run: steps that completed, and whose
    artifacts verify, are kept and never run again; a step still running is waited for;
    the rest run. Refused while the run's controller is alive (unless --force) and for a
    run that has ended (pipekit rerun runs one again). Exits 1 unless the run completes.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..runs import resume_as, take_for_resume

    run_id, owner = take_for_resume(run_id, force=force)
    _drive(run_id, lambda **how: resume_as(run_id, owner, **how), echo, local_agents,
           clearml_alias)


@click.group()
def runs() -> None:
    """List and inspect pipeline runs."""


@runs.command("ls")
@listing_options("runs", name="Only runs of this pipeline.", statuses=True, limit=True)
def runs_ls(project: str | None, name: str | None, statuses: tuple[str, ...], limit: int,
            as_json: bool) -> None:
    """List pipeline runs, most recent first."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import get_store
    from ..views import mark_lost

    found = mark_lost(get_store().list_runs(project=project, name=name, status=statuses,
                                            limit=limit))
    listing(found, as_json, "runs",
            ["id", "project", "pipeline", "version", "status", "started", "origin"],
            lambda r: [r.id[:12], r.project, r.name, r.version or "",
                       "controller lost" if r.controller_lost else r.status,
                       when(r.started or r.created), (r.origin or "")[:12]],
            "no runs")


@runs.command("show")
@click.argument("run_id", metavar="RUN")
@json_option
def runs_show(run_id: str, as_json: bool) -> None:
    """Show a run's parameters and every step's status, timing and outputs.

    Each step also shows its cache hit and parameters; pipelines nested in a step are
    shown under it.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..views import run_view

    view = run_view(run_id)
    if as_json:
        emit_json(view)
        return
    _print_view(view)


@runs.command("start")
@click.argument("task_id", metavar="TASK")
@_mode_option
@_cache_option
@_agents_option
@_alias_option
@_echo_option
def runs_start(task_id: str, mode: str | None, no_cache: bool, local_agents: bool,
               clearml_alias: bool, echo: bool) -> None:
    """Start a draft pipeline task (a clone, or the web UI's New run) and show its steps live.

    Exits 1 unless the run completes.
    """
    _execute(task_id, mode, no_cache, echo, local_agents, clearml_alias)


@runs.command("abort")
@click.argument("run_id", metavar="RUN")
@click.option("--reason", default="aborted by user", show_default=True,
              help="Why, as the run's status reason.")
def runs_abort(run_id: str, reason: str) -> None:
    """Stop a run: it and every step end `stopped` at once; its controller and agents then
    kill the steps' processes.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..runs import abort_run

    click.echo(f"run {abort_run(run_id, reason).id} stopped")


_STATUS_STYLE = {"completed": "green", "cached": "cyan", "failed": "red", "stopped": "yellow",
                 "skipped": "dim", "in_progress": "bold blue", "pending": "dim"}


def _print_view(view: dict[str, Any]) -> None:
    # lazy: `pipekit --help` and other commands load only what they use
    from rich.tree import Tree

    status = "controller lost" if view.get("controller_lost") else view["status"]
    head = (f"[bold]{view['name']}[/] {view['version'] or ''}  run {view['id']}  "
            f"[{_STATUS_STYLE.get(view['status'], '')}]{status}[/]")
    if view["reason"]:
        head += f"  ({view['reason']})"
    tree = Tree(head)
    if view["origin"]:
        tree.add(f"rerun of {view['origin']}")
    if view["parameters"]:
        params = tree.add("parameters")
        for key, value in view["parameters"].items():
            params.add(f"{key} = {value}")
    _add_steps(tree, view)
    console().print(tree)


def _add_steps(tree: Any, view: dict[str, Any]) -> None:
    # lazy: `pipekit --help` and other commands load only what they use
    from rich.text import Text

    steps = tree.add("steps")
    for node in view["nodes"]:
        style = _STATUS_STYLE.get(node["status"], "")
        duration = f"  {node['duration']:.2f} s" if node["duration"] is not None else ""
        parents = f"  after {', '.join(node['parents'])}" if node["parents"] else ""
        label = f"[bold]{node['name']}[/]  [{style}]{node['status']}[/]{duration}{parents}"
        if node["task"]:
            label += f"  task {node['task'][:12]}"
        branch = steps.add(label)
        if node.get("reason") and node["status"] in ("failed", "stopped", "skipped"):
            branch.add(f"reason: {node['reason']}")
        if node.get("log_tail"):
            tail = branch.add(f"last log lines (pipekit logs {node['task'][:12]}):")
            for line in node["log_tail"]:
                tail.add(Text(line))
        for key, value in node["parameters"].items():
            branch.add(f"{key} = {value}")
        for output in node["outputs"]:
            branch.add(f"→ {output['name']}: {output['preview'] or output['type']}")
        for nested in node["runs"]:
            sub = branch.add(f"[bold]{nested['name']}[/] run {nested['id'][:12]}  "
                             f"[{_STATUS_STYLE.get(nested['status'], '')}]"
                             f"{nested['status']}[/]")
            _add_steps(sub, nested)


@click.group()
def pipelines() -> None:
    """List pipelines and their versions."""


@pipelines.command("ls")
@listing_options("pipelines")
def pipelines_ls(project: str | None, as_json: bool) -> None:
    """List every pipeline version with its structure hash and number of runs."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import get_store

    found = get_store().list_pipelines(project)
    listing(found, as_json, "pipelines",
            ["project", "pipeline", "version", "structure", "runs", "last run"],
            lambda p: [p.project, p.name, p.version, p.structure_hash[:12], p.runs,
                       when(p.last_run)],
            "no pipelines")


@click.command("export")
@click.argument("run_id", metavar="RUN")
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot", "html"]),
              default="mermaid", show_default=True, help="What to draw the DAG as.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file instead of stdout.")
def export(run_id: str, fmt: str, output: str | None) -> None:
    """Draw a run's DAG with each step's status as Mermaid, Graphviz DOT or an HTML page.

    The HTML page is self-contained: it loads nothing from the network.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..render import render
    from ..views import run_view

    text = render(run_view(run_id), fmt)
    if output is None:
        click.echo(text, nl=not text.endswith("\n"))
        return
    path = Path(output)
    if not path.parent.is_dir():
        raise PipekitError(f"cannot write {path}: no folder {path.parent}")
    tmp = path.with_name(f".{path.name}.partial")  # (readers never see half a file)
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PipekitError(f"cannot write {path}: {exc.strerror}") from exc
    click.echo(f"wrote {path}", err=True)


def register(cli: click.Group) -> None:
    for command in (run, rerun, resume, runs, pipelines, export):
        cli.add_command(command)

