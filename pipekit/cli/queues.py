"""``pipekit queues``: the store's execution queues."""

from __future__ import annotations

import click

from .render import json_option, listing


@click.group("queues")
def queues() -> None:
    """Inspect execution queues."""


@queues.command("ls")
@json_option
def ls(as_json: bool) -> None:
    """List queues: tasks waiting, tasks running, and live agents serving each."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import get_store

    listing(get_store().list_queues(), as_json, "queues",
            ["name", "pending", "running", "agents"],
            lambda q: [q.name, q.pending, q.running, q.agents], "no queues")


def register(cli: click.Group) -> None:
    cli.add_command(queues)
