"""``pipekit logs``: print (and follow) a task's captured output."""

from __future__ import annotations

import sys
import time

import click


@click.command("logs")
@click.argument("task_id", metavar="TASK")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new output until the task reaches a final status.")
def logs(task_id: str, follow: bool) -> None:
    """Print a task's log (stdout and stderr of its execution)."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..models import Status
    from ..store import get_store

    store = get_store()
    task_id = store.resolve_task_id(task_id)
    out = sys.stdout.buffer
    offset = 0
    delay = 0.05
    while True:
        chunk = store.read_log(task_id, offset).data
        if chunk:
            out.write(chunk)
            out.flush()
            offset += len(chunk)
            delay = 0.05
        if not follow:
            return
        if Status(store.get_task(task_id).status).is_final:
            if store.read_log(task_id, limit=0).size > offset:
                continue  # drain what was written just before the end
            return
        time.sleep(delay)
        delay = min(0.5, delay * 2)


def register(cli: click.Group) -> None:
    cli.add_command(logs)
