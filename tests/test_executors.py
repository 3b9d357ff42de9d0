"""The built-in executors: each passes the executor contract; pools run steps concurrently."""

from __future__ import annotations

import time

import pytest

from pipekit.errors import PluginError
from pipekit.executor import Executor, Job, executor_names, make_executor
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
