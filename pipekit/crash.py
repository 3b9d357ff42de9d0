"""Crash-point injection, for tests: ``PIPEKIT_TEST_CRASH_AT=<point>[:<step>]`` SIGKILLs a
run's controller the moment it reaches ``<point>`` (for ``<step>`` only, if named), so the
recovery tests (RELIABILITY 13) can crash it exactly where a real crash hurts most:

* ``step-claimed`` — a step's task exists and its node is ``in_progress``, nothing started;
* ``step-started`` — the step's executor has started it;
* ``artifact-written`` — a step's output object is in the object store, its row not yet
  committed (the step's process dies too, with its controller);
* ``step-committed`` — a step's task ended ``completed``, its controller has not seen it
  (the step's process dies too);
* ``before-enqueue`` — a step's parents succeeded, it is about to be launched;
* ``run-finishing`` — every step ended, the run's final status not yet written.

A point reached in a step's own process kills the controller that launched it
(``PIPEKIT_CONTROLLER_PID``) and then the step's process. With the variable unset, a point
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

from .config import CONTROLLER_PID_ENV, CRASH_ENV

__all__ = ["POINTS", "armed", "point"]

POINTS = ("step-claimed", "step-started", "artifact-written", "step-committed",
          "before-enqueue", "run-finishing")


def armed() -> bool:
    """Whether a crash point is set (callers skip work that only names a point's step)."""
    return bool(os.environ.get(CRASH_ENV))


def point(name: str, step: str | None = None) -> None:
    """SIGKILL this run's controller (and this process) if ``PIPEKIT_TEST_CRASH_AT`` names
    ``name`` (and ``step``, when it names one).
    """
    wanted = os.environ.get(CRASH_ENV)
    if not wanted:
        return
    at, _, only = wanted.partition(":")
    if at != name or (only and only != step):
        return
    controller = os.environ.get(CONTROLLER_PID_ENV)
    if controller and controller.isdigit() and int(controller) != os.getpid():
        try:
            os.kill(int(controller), signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.kill(os.getpid(), signal.SIGKILL)
