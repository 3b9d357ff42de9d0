"""Output helpers shared by the CLI commands: ``--json`` or a rich table."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import click

json_option = click.option("--json", "as_json", is_flag=True,
                           help="Print machine-readable JSON instead of a table.")


def when(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def to_jsonable(value: Any) -> Any:
    if attrs.has(type(value)):
        return to_jsonable(attrs.asdict(value, recurse=False))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return None
    return value


def emit_json(value: Any) -> None:
    click.echo(json.dumps(to_jsonable(value), indent=2, default=str))


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    # lazy: `pipekit --help` and other commands load only what they use
    from rich.table import Table

    tbl = Table(title=title, show_lines=False, header_style="bold")
    for i, col in enumerate(columns):  # the first column is an id or name: never broken
        tbl.add_column(col, overflow="fold", no_wrap=i == 0)
    for row in rows:
        tbl.add_row(*["" if v is None else str(v) for v in row])
    console().print(tbl)


def console() -> Any:
    """A rich console for stdout; piped (not a terminal), lines are not wrapped at 80
    columns, so a table read by ``grep`` or ``cut`` keeps one row per line.
    """
    # lazy: `pipekit --help` and other commands load only what they use
    from rich.console import Console

    class PipedConsole(Console):
        def on_broken_pipe(self) -> None:
            """The reader of stdout left: the CLI ends quietly (cli.PipekitGroup)."""
            self.quiet = True
            raise BrokenPipeError

    return PipedConsole() if sys.stdout.isatty() else PipedConsole(width=100_000)


def listing(items: Sequence[Any], as_json: bool, title: str, columns: Sequence[str],
            row: Callable[[Any], Sequence[Any]], empty: str) -> None:
    """Print ``items`` as JSON or as a table (or the ``empty`` line)."""
    if as_json:
        emit_json(list(items))
    elif not items:
        click.echo(empty)
    else:
        table(title, columns, [row(item) for item in items])
