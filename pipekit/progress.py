"""Live progress of a pipeline run in the terminal, read from the store.

:func:`watch` follows a run by polling its nodes, so it works for a run driven by this
process, another process or an agent alike. On a terminal it draws a ``rich`` live table
(step, status, duration, cache hit); otherwise (a pipe, CI, ``NO_COLOR`` does not matter)
it prints one plain line per status change.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .models import NodeRecord, Status
from .store import get_store

__all__ = ["watch"]

_STYLE = {"completed": "green", "cached": "cyan", "failed": "red", "stopped": "yellow",
          "skipped": "dim", "in_progress": "bold blue", "pending": "dim"}


def _duration(node: NodeRecord, now: float) -> str:
    if node.started is None:
        return ""
    return f"{(node.ended or now) - node.started:.1f} s"


def _table(run_id: str, nodes: list[NodeRecord], status: str) -> Any:
    # lazy: rich is needed only when progress is drawn
    from rich.table import Table

    now = time.time()
    tbl = Table(title=f"run {run_id[:12]}  {status}", header_style="bold")
    for column in ("step", "status", "duration", "cached", "task"):
        tbl.add_column(column)
    for node in nodes:
        style = _STYLE.get(node.status, "")
        tbl.add_row(node.name, f"[{style}]{node.status}[/]" if style else node.status,
                    _duration(node, now), "yes" if node.status == "cached" else "",
                    (node.task or "")[:12])
    return tbl


def watch(run_id: str, *, until: Callable[[], bool] | None = None, interval: float = 0.2,
          stream: TextIO | None = None) -> str:
    """Show the run's steps until its controller task is final (or ``until()``); returns the
    run's status then.

    :param stream: where to write (default stdout); live drawing only if it is a terminal.
    """
    stream = stream or sys.stdout
    store = get_store()

    def status() -> str:
        return store.get_task(run_id).status

    def done() -> bool:
        return Status(status()).is_final or (until is not None and until())

    if stream.isatty():
        # lazy: rich is needed only when progress is drawn
        from rich.console import Console
        from rich.live import Live

        with Live(_table(run_id, store.list_nodes(run_id), status()),
                  console=Console(file=stream), refresh_per_second=8) as live:
            while not done():
                time.sleep(interval)
                live.update(_table(run_id, store.list_nodes(run_id), status()))
            live.update(_table(run_id, store.list_nodes(run_id), status()))
        return status()
    seen: dict[str, str] = {}
    while True:
        finished = done()
        now = time.time()
        for node in store.list_nodes(run_id):
            if seen.get(node.name) != node.status:
                seen[node.name] = node.status
                extra = f"  {_duration(node, now)}" if node.ended else ""
                stream.write(f"{node.name:<24} {node.status}{extra}\n")
                stream.flush()
        if finished:
            return status()
        time.sleep(interval)
