"""Helpers for testing pipekit and its plugins: polling with a deadline (never sleeps as
synchronisation) and contract suites a plugin's own tests can reuse.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from .executor import Job, make_executor
from .task import Task

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, what: str,
               interval: float = 0.005) -> T:
    """Poll ``predicate`` until it returns a truthy value, which is returned.

    :param timeout: seconds before giving up with an ``AssertionError`` naming ``what``.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def script_task(folder: Path, body: str, name: str = "step") -> str:
    """A draft task that runs ``body`` as its script; returns its id."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return Task.create(project_name="contract", task_name=name, script=str(path)).id


class ExecutorContract:
    """What every executor must do; subclass it in a test module and set ``executor``.

    Each test gets a fresh store (the project's autouse fixture) and builds its executor
    with :func:`pipekit.executor.make_executor`. Plugin authors reuse it the same way.
    """

    #: the registered name of the executor under test
    executor: str = ""
    #: whether submit() returns only when the job has finished (inline)
    synchronous: bool = False

    def make(self) -> Any:
        return make_executor(self.executor, max_workers=4)

    def run_to_end(self, ex: Any, job: Any, timeout: float = 60) -> Any:
        handle = ex.submit(job)
        return wait_until(lambda: ex.poll(handle), timeout, f"job {job.task_id} to end")

    def test_a_job_completes_and_its_output_is_logged(self, tmp_path: Path) -> None:
        task_id = script_task(tmp_path, "print('hello from the step')\n")
        ex = self.make()
        try:
            outcome = self.run_to_end(ex, Job(task_id))
        finally:
            ex.shutdown()
        assert outcome.status == "completed" and outcome.ok
        assert "hello from the step" in Task(task_id).get_log()

    def test_a_failing_job_is_failed_with_its_reason(self, tmp_path: Path) -> None:
        task_id = script_task(tmp_path, "from pipekit import Task\nTask.init()\n"
                                        "raise ValueError('bad input 7')\n")
        ex = self.make()
        try:
            outcome = self.run_to_end(ex, Job(task_id))
        finally:
            ex.shutdown()
        assert outcome.status == "failed" and not outcome.ok
        assert "ValueError: bad input 7" in outcome.reason
        assert "Traceback" in Task(task_id).get_log()

    def test_a_step_killed_by_a_signal_is_failed_naming_it(self, tmp_path: Path) -> None:
        task_id = script_task(tmp_path, "import os, signal\nos.kill(os.getpid(), 9)\n")
        ex = self.make()
        try:
            outcome = self.run_to_end(ex, Job(task_id))
        finally:
            ex.shutdown()
        assert outcome.status == "failed"
        assert "killed by signal 9" in outcome.reason

    def test_cancel_stops_the_task_and_kills_its_process_tree(self, tmp_path: Path) -> None:
        if self.synchronous:
            return  # an inline job has ended before anyone can cancel it
        pidfile = tmp_path / "grandchild.pid"
        task_id = script_task(tmp_path, f"""
            import subprocess, sys, time
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            open({str(pidfile)!r}, "w").write(str(child.pid))
            time.sleep(60)
        """)
        ex = self.make()
        try:
            handle = ex.submit(Job(task_id))
            wait_until(lambda: pidfile.exists() and pidfile.read_text(), 30,
                       "the step to start its grandchild")
            grandchild = int(pidfile.read_text())
            ex.cancel(handle)
            outcome = wait_until(lambda: ex.poll(handle), 10, "the cancelled job to end")
        finally:
            ex.shutdown()
        assert outcome.status == "stopped"
        assert Task(task_id).get_status() == "stopped"
        wait_until(lambda: not psutil.pid_exists(grandchild)
                   or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE, 10,
                   "the grandchild to be gone")
