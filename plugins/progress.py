"""Progress without the CLI: ``python pipeline.py`` shows its run's steps live, as
``pipekit run`` does — a live table on a terminal, one line per step change otherwise (on
stderr, so the script's own output stays its own) — unless ``PIPEKIT_PROGRESS=0``.

Only the first run a process drives is followed, and never in a process that runs as a task
(``PIPEKIT_TASK_ID``: under ``pipekit run``, whose own view already shows the run, or on an
agent), so a nested pipeline never draws a second view.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any

import pipekit
from pipekit.config import TASK_ENV
from pipekit.progress import Follower

PROGRESS_ENV = "PIPEKIT_PROGRESS"

_following: dict[str, Follower] = {}
_lock = threading.Lock()


def _wanted() -> bool:
    return os.environ.get(PROGRESS_ENV, "1") not in ("0", "false", "no", "off") \
        and not os.environ.get(TASK_ENV)


@pipekit.hookimpl
def pipekit_pipeline_started(run: Any) -> None:
    if not _wanted():
        return
    with _lock:
        if _following:
            return
        stream = sys.__stdout__ if sys.__stdout__ is not None and sys.__stdout__.isatty() \
            else sys.__stderr__
        if stream is None:
            return
        _following[run.id] = Follower(run.id, stream).start()


@pipekit.hookimpl
def pipekit_pipeline_finished(run: Any, status: str) -> None:
    with _lock:
        follower = _following.pop(run.id, None)
    if follower is not None:
        follower.stop()
