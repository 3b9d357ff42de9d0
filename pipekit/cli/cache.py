"""``pipekit cache``: the step results that cached steps can reuse."""

from __future__ import annotations

import click

from ..errors import PipekitError
from .options import listing_options
from .render import emit_json, json_option, listing, when


@click.group()
def cache() -> None:
    """List or forget cached step results."""


@cache.command("ls")
@listing_options("results", name="Only results of steps with this task name.")
def cache_ls(project: str | None, name: str | None, as_json: bool) -> None:
    """List the task results a cached step with the same key would reuse, newest first."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import get_store

    found = get_store().cache_entries(project=project, name=name)
    listing(found, as_json, "step cache", ["key", "task", "project", "step", "finished"],
            lambda e: [e.key[:16], e.task[:12], e.project, e.name, when(e.ended)],
            "the step cache is empty")


@cache.command("clear")
@click.argument("keys", nargs=-1)
@click.option("--task", "tasks", multiple=True, metavar="TASK",
              help="Forget this task's result (repeatable).")
@click.option("--all", "everything", is_flag=True, help="Forget every cached result.")
@json_option
def cache_clear(keys: tuple[str, ...], tasks: tuple[str, ...], everything: bool,
                as_json: bool) -> None:
    """Forget cached results (by KEY, --task or --all): the next run of those steps runs
    them again. The tasks and their outputs are kept.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import get_store

    if not (keys or tasks or everything):
        raise PipekitError("say what to clear: cache keys, --task TASK or --all")
    store = get_store()
    task_ids = [store.resolve_task_id(task) for task in tasks]
    cleared = store.clear_cache(keys=keys, tasks=task_ids, everything=everything)
    if as_json:
        emit_json({"cleared": cleared})
    else:
        click.echo(f"forgot {cleared} cached result{'s' if cleared != 1 else ''}")


def register(cli: click.Group) -> None:
    cli.add_command(cache)
