"""``pipekit agent`` and ``pipekit agents ls``: processes that run queued tasks."""

from __future__ import annotations

import logging
import time

import click

from .render import json_option, listing, when


@click.command("agent")
@click.option("--queue", "-q", "queues", multiple=True, required=True, metavar="QUEUE",
              help="A queue to serve (repeat for several; earlier ones are not preferred: "
                   "tasks are taken by priority, then age).")
@click.option("--workers", "-w", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many tasks to run at once.")
@click.option("--create-queue", is_flag=True,
              help="Create the queues that do not exist yet (else they are an error).")
@click.option("--exit-when-idle", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Stop once nothing has been queued or running for this long.")
@click.option("--in-process", is_flag=True,
              help="Run function tasks in the agent's own process instead of one worker process "
                   "each: much faster for many small trusted tasks, but a running task cannot "
                   "be killed (an abort discards its result instead).")
def agent(queues: tuple[str, ...], workers: int, create_queue: bool,
          exit_when_idle: float | None, in_process: bool) -> None:
    """Run queued tasks: claim each under a lease, run it in its own session, heartbeat.

    Stops gracefully on Ctrl-C or SIGTERM: it finishes what it runs (within one lease TTL,
    PIPEKIT_LEASE_TTL), then gives the rest back to their queues; a second signal gives them
    back at once.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from ..agent import Agent

    if not logging.getLogger().isEnabledFor(logging.INFO):
        logging.getLogger("pipekit.agent").setLevel(logging.INFO)
        logging.getLogger().setLevel(logging.INFO)
    # (it logs what it serves once registered)
    Agent(list(queues), workers=workers, create_queues=create_queue,
          exit_when_idle=exit_when_idle, in_process=in_process).run()


@click.group("agents")
def agents() -> None:
    """Inspect the agents serving queues."""


@agents.command("ls")
@click.option("--all", "include_gone", is_flag=True,
              help="Include agents that stopped or stopped heartbeating.")
@json_option
def ls(include_gone: bool, as_json: bool) -> None:
    """List live agents: their queues, what they run, and their last heartbeat."""
    # lazy: `pipekit --help` and other commands load only what they use
    from ..store import get_store

    found = get_store().list_agents(include_gone=include_gone)
    now = time.time()
    listing(found, as_json, "agents", ["id", "host:pid", "queues", "running", "heartbeat",
                                       "state"],
            lambda a: [a.id[:12], f"{a.host}:{a.pid}", ", ".join(a.queues),
                       ", ".join(t[:12] for t in a.tasks) or "-",
                       f"{when(a.heartbeat)} ({now - a.heartbeat:.0f} s ago)", a.state],
            "no live agents" if not include_gone else "no agents")


def register(cli: click.Group) -> None:
    cli.add_command(agent)
    cli.add_command(agents)
