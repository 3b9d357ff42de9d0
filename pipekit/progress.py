"""Live progress of a pipeline run in the terminal, read from the store.

:func:`watch` follows a run by polling its nodes, so it works for a run driven by this
process, another process or an agent alike. On a terminal it draws a ``rich`` live table
(step, status, duration, cache hit) under a title with ``n of m done`` and the elapsed
time; otherwise (a pipe, CI) it prints one plain line per status change. ``pipekit run``
watches the run its script drives; a script run as ``python pipeline.py`` watches its own
runs through the ``progress`` plugin (:class:`Follower`), unless ``PIPEKIT_PROGRESS=0``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from .models import NodeRecord, Status
from .store import get_store

__all__ = ["Follower", "watch"]

_STYLE = {"completed": "green", "cached": "cyan", "failed": "red", "stopped": "yellow",
          "skipped": "dim", "in_progress": "bold blue", "pending": "dim"}
_DONE = {"completed", "cached", "failed", "stopped", "skipped"}


def _duration(node: NodeRecord, now: float) -> str:
    if node.started is None:
        return ""
    return f"{(node.ended or now) - node.started:.1f} s"


def _title(run_id: str, nodes: list[NodeRecord], status: str, elapsed: float) -> str:
    done = sum(1 for n in nodes if n.status in _DONE)
    return f"run {run_id[:12]}  {status}  {done} of {len(nodes)} done  {elapsed:.1f} s"


def _table(run_id: str, nodes: list[NodeRecord], status: str, elapsed: float) -> Any:
    # lazy: rich is needed only when progress is drawn
    from rich.table import Table

    now = time.time()
    tbl = Table(title=_title(run_id, nodes, status, elapsed), header_style="bold")
    for column in ("step", "status", "duration", "cached", "task"):
        tbl.add_column(column)
    for node in nodes:
        style = _STYLE.get(node.status, "")
        tbl.add_row(node.name, f"[{style}]{node.status}[/]" if style else node.status,
                    _duration(node, now), "yes" if node.status == "cached" else "",
                    (node.task or "")[:12])
    return tbl


def watch(run_id: str, *, until: Callable[[], bool] | None = None, interval: float = 0.2,
          stream: TextIO | None = None, drawn: Callable[[], None] | None = None) -> str:
    """Show the run's steps until its controller task is final (or ``until()``); returns the
    run's status then.

    :param stream: where to write (default stdout); live drawing only if it is a terminal.
    :param drawn: called once the first state is shown.
    """
    stream = stream or sys.stdout
    store = get_store()
    begun = time.monotonic()

    def status() -> str:
        return store.get_task(run_id).status

    def done() -> bool:
        return Status(status()).is_final or (until is not None and until())

    def table() -> Any:
        return _table(run_id, store.list_nodes(run_id), status(), time.monotonic() - begun)

    if stream.isatty():
        # lazy: rich is needed only when progress is drawn
        from rich.console import Console
        from rich.live import Live

        with Live(table(), console=Console(file=stream), refresh_per_second=8,
                  redirect_stdout=False, redirect_stderr=False) as live:
            if drawn is not None:
                drawn()
            while not done():
                time.sleep(interval)  # a display's pace, not synchronisation
                live.update(table())
            live.update(table())  # the final state, also after Ctrl-C
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
        if drawn is not None:
            drawn()
            drawn = None
        if finished:
            return status()
        time.sleep(interval)


class Follower:
    """:func:`watch` of one run on a thread of its own, until :meth:`stop` (which waits for
    the final state to be drawn).
    """

    def __init__(self, run_id: str, stream: TextIO) -> None:
        self._stop = threading.Event()
        self._drawn = threading.Event()
        self._thread = threading.Thread(
            target=lambda: watch(run_id, until=self._stop.is_set, stream=stream,
                                 drawn=self._drawn.set),
            name=f"pipekit-progress-{run_id}", daemon=True)

    def start(self) -> Follower:
        """Start following; returns once the run's first state is drawn (every step pending,
        when the run has just started), or after a second at most.
        """
        self._thread.start()
        self._drawn.wait(1.0)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
