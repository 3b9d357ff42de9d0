"""The sample third-party executor, ``docs/examples/pipekit-example-executor``: installed as a
real distribution, it registers ``example-serial`` through the ``pipekit`` entry-point group,
runs a pipeline, and passes the same executor contract as the built-ins.

``make test`` installs it (editable); without it these tests are skipped, saying how to
install it.
"""

from __future__ import annotations

import os
import time
from importlib import metadata
from pathlib import Path

import pytest

from pipekit import PipelineController, Task, plugin_manager
from pipekit.executor import Job, executor_names, make_executor
from pipekit.testing import ExecutorContract, script_task, wait_until

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "docs" / "examples" / "pipekit-example-executor"
DIST = "pipekit-example-executor"

try:
    metadata.distribution(DIST)
except metadata.PackageNotFoundError:  # pragma: no cover - an environment problem
    pytest.skip(f"{DIST} is not installed: run `make test`, or `.venv/bin/pip install "
                f"--no-build-isolation --no-deps -e {PACKAGE.relative_to(ROOT)}`",
                allow_module_level=True)


@pytest.fixture(autouse=True)
def with_example_plugin(pipekit_home: Path) -> None:
    """pipekit's own plugins plus this one distribution's (conftest loads pipekit's only)."""
    plugin_manager.set_plugin_manager(
        plugin_manager.make_plugin_manager(dists={"pipekit", DIST}))


def square(x):
    return x * x


def pause_and_square(x):
    import time

    time.sleep(0.3)
    return x * x


def add(a, b):
    return a + b


def test_it_is_registered_by_its_distribution():
    assert "example-serial" in executor_names()
    info = {p.name: p for p in plugin_manager.list_plugins()}
    assert info["example_executor"].dist == DIST
    assert info["example_executor"].hooks == ("pipekit_executors",)


def test_it_is_absent_from_a_manager_of_pipekit_s_own_plugins():
    plugin_manager.set_plugin_manager(plugin_manager.make_plugin_manager(dists={"pipekit"}))
    assert "example-serial" not in executor_names()


def test_a_three_step_function_pipeline_runs_on_it(monkeypatch):
    # The steps are this module's functions, pickled by reference: the worker processes must
    # be able to import this module, which pytest found through a sys.path entry of its own.
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    pipe = PipelineController(name="serial", project="examples")
    pipe.add_parameter("x", 3)
    pipe.add_function_step("a", pause_and_square, {"x": 2}, ["y"])
    pipe.add_function_step("b", pause_and_square, {"x": "${pipeline.x}"}, ["y"])
    pipe.add_function_step("total", add, {"a": "${a.y}", "b": "${b.y}"}, ["sum"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor="example-serial")

    assert pipe.is_successful()
    dag = pipe.get_pipeline_dag()
    assert {name: node.status for name, node in dag.items()} == {
        "a": "completed", "b": "completed", "total": "completed"}
    assert Task.get_task(task_id=dag["total"].executed).artifacts["sum"].get() == 13
    steps = {name: Task.get_task(task_id=node.executed).data for name, node in dag.items()}
    # Each step ran in a process of its own, not in the controller.
    pids = {info.worker.rpartition(":")[2] for info in steps.values()}
    assert len(pids) == 3 and str(os.getpid()) not in pids
    # a and b are independent, yet the executor ran them one after the other.
    first, second = sorted((steps["a"], steps["b"]), key=lambda i: i.started)
    assert first.ended <= second.started


def test_jobs_run_one_at_a_time_in_submission_order(tmp_path):
    ids = [script_task(tmp_path / f"s{i}", "import time\ntime.sleep(0.2)\n", name=f"s{i}")
           for i in range(3)]
    ex = make_executor("example-serial", max_workers=8)
    try:
        handles = [ex.submit(Job(task_id)) for task_id in ids]
        assert [Task.get_task(task_id=i).get_status() for i in ids[1:]] == ["created"] * 2
        outcomes = wait_until(lambda: all(ex.poll(h) for h in handles)
                              and [ex.poll(h) for h in handles], 30, "the three jobs")
    finally:
        ex.shutdown()
    assert [o.status for o in outcomes] == ["completed"] * 3
    infos = [Task.get_task(task_id=i).data for i in ids]
    assert infos[0].ended <= infos[1].started and infos[1].ended <= infos[2].started


def test_cancelling_a_waiting_job_stops_it_without_running_it(tmp_path):
    first = script_task(tmp_path / "first", "import time\ntime.sleep(30)\n", name="first")
    second = script_task(tmp_path / "second", "print('never')\n", name="second")
    ex = make_executor("example-serial")
    try:
        running = ex.submit(Job(first))
        waiting = ex.submit(Job(second))
        ex.cancel(waiting)
        assert ex.poll(waiting).status == "stopped"
        ex.cancel(running)
        assert ex.poll(running).status == "stopped"
    finally:
        ex.shutdown()
    assert Task.get_task(task_id=second).get_status() == "stopped"
    assert Task.get_task(task_id=second).data.started is None


def test_shutdown_stops_jobs_that_never_started(tmp_path):
    first = script_task(tmp_path / "first", "print('runs')\n", name="first")
    second = script_task(tmp_path / "second", "print('never')\n", name="second")
    ex = make_executor("example-serial")
    ex.submit(Job(first))
    ex.submit(Job(second))
    start = time.monotonic()
    ex.shutdown(wait=True)
    assert time.monotonic() - start < 30
    assert Task.get_task(task_id=first).get_status() == "completed"
    second_task = Task.get_task(task_id=second)
    assert second_task.get_status() == "stopped"
    assert "shut down before it ran" in second_task.data.status_reason


class TestExampleSerial(ExecutorContract):
    executor = "example-serial"
