"""Options that several commands share, declared once: the filters of the ``ls`` commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

from ..models import Status
from .render import json_option

F = TypeVar("F", bound=Callable[..., object])


def listing_options(of: str, *, name: str | None = None, statuses: bool = False,
                    tags: bool = False, limit: bool = False) -> Callable[[F], F]:
    """The filters of an ``ls`` command, in the order ``--help`` lists them, then ``--json``.

    The command receives ``project``, then each filter asked for (``name``, ``statuses``,
    ``tags``, ``limit``), then ``as_json``.

    :param of: what is listed, in the help text: ``"tasks"`` gives "Only tasks of this
        project."
    :param name: the help text of ``--name`` (what a name means differs by listing); None:
        no ``--name``.
    :param statuses: add ``--status`` (repeatable, one of the task statuses).
    :param tags: add ``--tag`` (repeatable, every given tag must be carried).
    :param limit: add ``--limit`` (default 50).
    """
    options = [click.option("--project", help=f"Only {of} of this project.")]
    if name is not None:
        options.append(click.option("--name", help=name))
    if statuses:
        options.append(click.option("--status", "statuses", multiple=True,
                                    type=click.Choice([s.value for s in Status]),
                                    help="Only these statuses."))
    if tags:
        options.append(click.option("--tag", "tags", multiple=True,
                                    help=f"Only {of} carrying every given tag."))
    if limit:
        options.append(click.option("--limit", type=int, default=50, show_default=True,
                                    help="At most this many."))
    options.append(json_option)

    def decorate(command: F) -> F:
        for option in reversed(options):  # click lists the last one applied first
            command = option(command)
        return command

    return decorate
