"""The built-in executors: each passes the executor contract; pools run steps concurrently."""

from __future__ import annotations

import threading
import time

import pytest

import pipekit
from pipekit import PipelineDecorator
from pipekit.errors import PluginError
from pipekit.executor import Executor, Job, executor_names, make_executor
from pipekit.plugin_manager import get_plugin_manager
from pipekit.testing import ExecutorContract, script_task, wait_until


class TestInline(ExecutorContract):
    executor = "inline"
    synchronous = True


class TestThread(ExecutorContract):
    executor = "thread"


class TestProcess(ExecutorContract):
    executor = "process"


class TestSubprocess(ExecutorContract):
    executor = "subprocess"


def test_the_built_in_executors_are_registered():
    assert {"inline", "thread", "process", "subprocess"} <= set(executor_names())
    for name in ("inline", "thread", "process", "subprocess"):
        ex = make_executor(name)
        assert isinstance(ex, Executor)
        ex.shutdown()


def test_an_unknown_executor_is_a_plugin_error_listing_the_known_ones():
    with pytest.raises(PluginError, match=r"unknown executor 'gpu'.*inline.*subprocess"):
        make_executor("gpu")


@pytest.mark.exclusive
@pytest.mark.parametrize("name", ["thread", "subprocess"])
def test_independent_steps_run_concurrently(name, tmp_path):
    ids = [script_task(tmp_path / f"s{i}", "import time\ntime.sleep(0.5)\n", name=f"s{i}")
           for i in range(6)]
    ex = make_executor(name, max_workers=6)
    start = time.monotonic()
    try:
        handles = [ex.submit(Job(i)) for i in ids]
        outcomes = wait_until(lambda: all(ex.poll(h) for h in handles) and
                              [ex.poll(h) for h in handles], 30, "all six steps")
    finally:
        ex.shutdown()
    elapsed = time.monotonic() - start
    assert [o.status for o in outcomes] == ["completed"] * 6
    assert elapsed < 3.0, f"6 x 0.5 s steps took {elapsed:.2f} s: not concurrent"


# -- capabilities, not names ------------------------------------------------------------------


def test_capabilities_come_from_the_executor_not_its_name():
    from pipekit.executor import capabilities

    assert capabilities("inline").runs_in_caller
    assert not capabilities("thread").runs_in_caller
    assert capabilities("subprocess").kills_trees and capabilities("process").kills_trees
    assert not capabilities("thread").kills_trees
    assert capabilities(object()) == capabilities(type("Bare", (), {}))  # absent: False


class _InCaller:
    """A third-party executor that runs each job where it is submitted, under its own name."""

    runs_in_caller = True

    def __init__(self, max_workers=None):
        pass

    def submit(self, job):
        from pipekit.worker import run_job

        return run_job(job)

    def poll(self, handle):
        return handle

    def cancel(self, handle):
        pass

    def shutdown(self, wait=True):
        pass


class _InCallerPlugin:
    @pipekit.hookimpl
    def pipekit_executors(self, register):
        register("in-caller", _InCaller)


THREADS: list[int] = []


@PipelineDecorator.component(return_values=["x"])
def where_am_i(x):
    THREADS.append(threading.get_ident())
    return x


@PipelineDecorator.pipeline(name="capabilities", project="executors")
def caller_pipeline():
    return where_am_i(1) + where_am_i(2)


def test_an_executor_that_runs_in_the_caller_gets_debug_semantics_whatever_its_name():
    """Components run as they are called, in the pipeline's own thread."""
    get_plugin_manager().register(_InCallerPlugin(), name="in-caller")
    THREADS.clear()
    PipelineDecorator.run_locally(executor="in-caller")
    assert caller_pipeline() == 3
    assert THREADS == [threading.get_ident()] * 2


@pytest.mark.timeout(120)
def test_pool_workers_exit_once_their_controller_is_gone(tmp_path):
    """A process-pool worker finishes (and commits) its job, then exits when its controller
    has died, instead of waiting for a next job forever."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    import psutil

    script = tmp_path / "pool_pipeline.py"
    script.write_text(textwrap.dedent(f"""
        from pathlib import Path
        from pipekit import PipelineController

        def gated(x):
            import os, time
            from pathlib import Path
            Path({str(tmp_path)!r}, "started").write_text(str(os.getpid()))
            while not Path({str(tmp_path)!r}, "gate").exists():
                time.sleep(0.05)
            return x

        if __name__ == "__main__":
            pipe = PipelineController(name="pool", project="executors")
            pipe.add_function_step("gated", gated, {{"x": 1}}, ["y"])
            pipe.start_locally(run_pipeline_steps_locally=True, executor="process",
                               max_workers=2)
    """))
    controller = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path)
    try:
        started = tmp_path / "started"
        wait_until(lambda: started.exists() and started.read_text(), 60, "the step to start")
        worker = psutil.Process(int(started.read_text()))
        pool = [p for p in psutil.Process(controller.pid).children(recursive=True)
                if "multiprocessing" in " ".join(p.cmdline())]
        assert worker in pool
        controller.send_signal(signal.SIGKILL)
        controller.wait()
        assert worker.is_running()  # its job is still running: it is not cut short
        (tmp_path / "gate").touch()
        wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE
                                   for p in pool), 15, "the pool's workers to exit")
    finally:
        for p in psutil.Process(os.getpid()).children(recursive=True):
            if p.pid == controller.pid:
                p.kill()
