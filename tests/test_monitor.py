"""Pipeline monitoring (SPEC §3): a step's monitored metrics, artifacts and models appear on
the run's controller task while it runs, renamed as asked, each copied once.

The spec parser (``pipekit.monitoring``) is tested on its own; the ``monitor`` plugin end to
end through ``PipelineController`` in the thread and subprocess executors, and through its
hooks directly for what a run cannot easily show (a cached node, a failing poll).
"""

from __future__ import annotations

import collections
import logging
import sys
import time
import types
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from pipekit_plugins import monitor as plugin
from pipeline_helpers import assert_cascade, node_statuses, run_locally

from pipekit import PipelineController, PipelineDecorator, Task
from pipekit.errors import DefinitionError
from pipekit.monitoring import MonitorSpec, parse
from pipekit.nodes import Node, RunInfo
from pipekit.store import get_store

# Step functions travel to step processes by value (tests/ is not importable there).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EXECUTORS = ["inline", "thread", "process", "subprocess"]
DEADLINE = 30.0


def wait_for(condition, what: str, timeout: float = DEADLINE):
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def points(task_id: str) -> dict[tuple[str, str], dict[int, float]]:
    out: dict[tuple[str, str], dict[int, float]] = collections.defaultdict(dict)
    for p in get_store().scalars(task_id):
        out[(p.title, p.series)][p.iteration] = p.value
    return dict(out)


def keys(task_id: str) -> list[tuple[str, str, int]]:
    return [(p.title, p.series, p.iteration) for p in get_store().scalars(task_id)]


# -- step functions -------------------------------------------------------------------------


def train(epochs):
    from pipekit import Logger, Task

    logger = Logger.current_logger()
    for i in range(epochs):
        logger.report_scalar("train", "loss", 1.0 / (i + 1), iteration=i)
        logger.report_scalar("train", "acc", i / 10, iteration=i)
        logger.report_scalar("debug", "noise", 42.0, iteration=i)
    task = Task.current_task()
    task.upload_artifact("data", {"rows": [1, 2, 3]})
    task.upload_artifact("scratch", "not monitored")
    task.upload_model("weights", {"w": [0.5, 0.25]}, framework="custom")
    task.upload_model("extra", {"w": []})
    return "trained"


def export_models():
    from pipekit import Task

    task = Task.current_task()
    task.upload_model("encoder", {"layer": 1})
    task.upload_model("decoder", {"layer": 2})
    return None


def wait_for_gate(gate):
    import os
    import time

    from pipekit import Logger, Task

    logger = Logger.current_logger()
    logger.report_scalar("live", "loss", 0.75, iteration=1)
    logger.flush()
    Task.current_task().upload_artifact("state", "first")
    deadline = time.monotonic() + 60
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            raise RuntimeError("the test never opened the gate")
        time.sleep(0.01)
    logger.report_scalar("live", "loss", 0.25, iteration=2)
    Task.current_task().upload_artifact("state", "second")
    return 1


def report_then_fail():
    from pipekit import Logger, Task

    Logger.current_logger().report_scalar("fit", "loss", 3.0, iteration=7)
    Task.current_task().upload_artifact("partial", [1, 2])
    raise ValueError("diverged")


def fail_once(marker):
    import os

    from pipekit import Logger

    logger = Logger.current_logger()
    if not os.path.exists(marker):
        open(marker, "w").close()
        logger.report_scalar("fit", "loss", 1.0, iteration=0)
        raise RuntimeError("first attempt fails")
    logger.report_scalar("fit", "loss", 2.0, iteration=0)
    logger.report_scalar("fit", "loss", 3.0, iteration=1)
    return "ok"


@PipelineDecorator.component(return_values=["out"], monitor_metrics=[("dec", "value")],
                             monitor_artifacts=[("out", "result")])
def dec_report(n):
    from pipekit import Logger

    Logger.current_logger().report_scalar("dec", "value", n * 1.5, iteration=0)
    return n + 1


@PipelineDecorator.pipeline(name="dec-monitored", project="monitor-tests")
def dec_pipeline(n=2):
    return int(dec_report(n))


# -- the spec parser ------------------------------------------------------------------------


def test_parse_normalizes_every_clearml_form():
    spec = parse("train",
                 [("a", "b"), (("c", "d"), ("e", "f")), [["g", "h"], ["i", "j"]]],
                 ["data", ("model.pkl", "best.pkl")],
                 ["weights", ("enc", "encoder")])
    assert spec == MonitorSpec(
        metrics=((("a", "b"), ("a", "b")), (("c", "d"), ("e", "f")), (("g", "h"), ("i", "j"))),
        artifacts=(("data", "data"), ("model.pkl", "best.pkl")),
        models=(("weights", "weights"), ("enc", "encoder")), all_models=False)
    assert parse("s", monitor_models=["*"]) == MonitorSpec(all_models=True)
    assert not parse("s") and not parse("s", [], (), [])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"monitor_metrics": "loss"}, "monitor_metrics must be a list"),
    ({"monitor_metrics": ["loss"]}, "monitor_metrics[0]"),
    ({"monitor_metrics": [("loss",)]}, "monitor_metrics[0]"),
    ({"monitor_metrics": [("a", "b", "c")]}, "monitor_metrics[0]"),
    ({"monitor_metrics": [("a", 1)]}, "monitor_metrics[0]"),
    ({"monitor_metrics": [("a", ("b", "c"))]}, "monitor_metrics[0]"),
    ({"monitor_metrics": [(("a", "b"), ("c", ""))]}, "monitor_metrics[0]"),
    ({"monitor_metrics": [("a", "b"), (("c", "d"), ("a", "b"))]}, "copy to ('a', 'b')"),
    ({"monitor_artifacts": "data"}, "monitor_artifacts must be a list"),
    ({"monitor_artifacts": {"data": "x"}}, "monitor_artifacts must be a list"),
    ({"monitor_artifacts": [("a", "b", "c")]}, "monitor_artifacts[0]"),
    ({"monitor_artifacts": [3]}, "monitor_artifacts[0]"),
    ({"monitor_artifacts": ["ok", "bad/name"]}, "'bad/name' is not a valid name"),
    ({"monitor_artifacts": ["x", ("y", "x")]}, "copy to 'x'"),
    ({"monitor_models": ["model_*"]}, "only '*' alone"),
    ({"monitor_models": [("*", "all")]}, "only '*' alone"),
    ({"monitor_models": ["*", "weights"]}, "combines '*'"),
    ({"monitor_models": 5}, "monitor_models must be a list"),
])
def test_parse_rejects_bad_values_naming_the_step_and_value(kwargs, fragment):
    with pytest.raises(DefinitionError) as info:
        parse("train", **kwargs)
    assert info.value.step == "train"
    assert "step 'train'" in str(info.value)
    assert fragment in str(info.value)


def test_bad_spec_on_a_node_fails_it_before_it_runs():
    pipe = PipelineController("bad-spec", "monitor-tests")
    pipe.add_function_step("train", train, {"epochs": 1}, ["out"])
    pipe.get_pipeline_dag()["train"].monitor_metrics = ["loss"]  # past the controller's check
    run_id = run_locally(pipe, "thread")

    assert node_statuses(run_id) == {"train": "failed"}
    reason = pipe.get_pipeline_dag()["train"].reason
    assert "step 'train'" in reason and "'loss'" in reason
    assert not get_store().find_tasks(parent=run_id)  # it never got a task
    assert_cascade(run_id, pipe)


# -- end to end -----------------------------------------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_monitored_outputs_are_copied_to_the_controller_task(executor):
    pipe = PipelineController("monitored", "monitor-tests")
    pipe.add_function_step(
        "train", train, {"epochs": 4}, ["out"],
        monitor_metrics=[(("train", "loss"), ("summary", "train loss")), ("train", "acc")],
        monitor_artifacts=[("data", "train_data"), "out"],
        monitor_models=[("weights", "best_weights")])
    pipe.add_function_step("export", export_models, monitor_models=["*"])
    pipe.add_function_step("plain", train, {"epochs": 2}, ["out"])
    run_id = run_locally(pipe, executor)
    assert pipe.is_successful(), pipe.get_pipeline_dag()
    store = get_store()
    steps = {t.name: t.id for t in store.find_tasks(parent=run_id)}

    got = points(run_id)
    assert got == {("summary", "train loss"): {0: 1.0, 1: 0.5, 2: 1 / 3, 3: 0.25},
                   ("train", "acc"): {0: 0.0, 1: 0.1, 2: 0.2, 3: 0.3}}
    assert len(keys(run_id)) == 8  # one point per iteration: nothing copied twice

    run = Task(run_id)
    assert set(run.artifacts) == {"train_data", "out"}
    assert run.artifacts["train_data"].get() == {"rows": [1, 2, 3]}
    assert run.artifacts["out"].get() == "trained"
    source = Task(steps["train"]).artifacts["data"]
    assert run.artifacts["train_data"].digest == source.digest  # the same stored object

    models = {m.name: m for m in run.models["output"]}
    assert set(models) == {"best_weights", "encoder", "decoder"}
    assert models["best_weights"].get() == {"w": [0.5, 0.25]}
    assert models["best_weights"].framework == "custom"
    assert models["encoder"].get() == {"layer": 1} and models["decoder"].get() == {"layer": 2}
    step_weights = Task(steps["train"]).models["output"][0]
    assert models["best_weights"].digest == step_weights.digest
    assert not plugin.get_monitor().watching(run_id)
    assert_cascade(run_id, pipe)


@pytest.mark.parametrize("executor", EXECUTORS)
def test_values_appear_on_the_controller_while_the_step_runs(executor, tmp_path: Path):
    gate = tmp_path / "gate"
    pipe = PipelineController("live", "monitor-tests")
    pipe.add_function_step("slow", wait_for_gate, {"gate": str(gate)}, ["out"],
                           monitor_metrics=[(("live", "loss"), ("run", "loss"))],
                           monitor_artifacts=["state"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor=executor, wait=False)
    try:
        run_id = wait_for(lambda: pipe.id, "the run to start")
        wait_for(lambda: ("run", "loss") in points(run_id), "the first point on the run")
        wait_for(lambda: "state" in Task(run_id).artifacts, "the first artifact on the run")
        node = pipe.get_pipeline_dag()["slow"]
        assert node.status == "in_progress" and not gate.exists()
        assert points(run_id) == {("run", "loss"): {1: 0.75}}
        assert Task(run_id).artifacts["state"].get() == "first"
    finally:
        gate.touch()
        assert wait_for(lambda: pipe.wait(timeout=1), "the run to end")
    assert pipe.is_successful()
    assert points(run_id) == {("run", "loss"): {1: 0.75, 2: 0.25}}
    assert len(keys(run_id)) == 2
    assert Task(run_id).artifacts["state"].get() == "second"  # re-copied: its digest changed
    assert_cascade(run_id, pipe)


def test_a_failed_step_still_shows_what_it_reported():
    pipe = PipelineController("failing", "monitor-tests")
    pipe.add_function_step("fit", report_then_fail,
                           monitor_metrics=[("fit", "loss")], monitor_artifacts=["partial"])
    run_id = run_locally(pipe, "thread")

    assert node_statuses(run_id) == {"fit": "failed"}
    assert points(run_id) == {("fit", "loss"): {7: 3.0}}
    assert Task(run_id).artifacts["partial"].get() == [1, 2]
    assert not plugin.get_monitor().watching(run_id)
    assert_cascade(run_id, pipe)


def test_a_step_served_from_the_cache_is_copied_to_the_new_run():
    def build() -> PipelineController:
        pipe = PipelineController("cached", "monitor-tests")
        pipe.add_function_step("train", train, {"epochs": 2}, ["out"], cache_executed_step=True,
                               monitor_metrics=[("train", "loss")], monitor_artifacts=["data"],
                               monitor_models=["weights"])
        return pipe

    first = run_locally(build(), "thread")
    second_pipe = build()
    second = run_locally(second_pipe, "thread")

    assert node_statuses(second) == {"train": "cached"}
    for run_id in (first, second):
        assert points(run_id) == {("train", "loss"): {0: 1.0, 1: 0.5}}
        assert len(keys(run_id)) == 2
        assert Task(run_id).artifacts["data"].get() == {"rows": [1, 2, 3]}
        assert [m.name for m in Task(run_id).models["output"]] == ["weights"]
    assert_cascade(second, second_pipe)


def test_a_retried_step_continues_the_same_series(tmp_path: Path):
    pipe = PipelineController("retried", "monitor-tests")
    pipe.add_function_step("fit", fail_once, {"marker": str(tmp_path / "tried")}, ["out"],
                           retry_on_failure=1, monitor_metrics=[("fit", "loss")])
    run_id = run_locally(pipe, "thread")

    assert pipe.is_successful()
    assert len(pipe.get_pipeline_dag()["fit"].tasks) == 2
    # iteration 0 came from the failed attempt and is not copied again; 1 from the retry
    assert points(run_id) == {("fit", "loss"): {0: 1.0, 1: 3.0}}
    assert len(keys(run_id)) == 2
    assert_cascade(run_id, pipe)



def test_decorated_components_are_monitored(decorator_state):
    PipelineDecorator.run_locally(executor="thread")
    assert dec_pipeline(n=2) == 3

    (run,) = get_store().find_tasks(type=["controller"])
    assert points(run.id) == {("dec", "value"): {0: 3.0}}
    assert Task(run.id).artifacts["result"].get() == 3


def test_steps_without_monitor_specs_are_not_watched(monkeypatch):
    registered: list[Any] = []
    monkeypatch.setattr(plugin.Monitor, "register",
                        lambda self, watch: registered.append(watch))
    pipe = PipelineController("unmonitored", "monitor-tests")
    pipe.add_function_step("plain", train, {"epochs": 2}, ["out"])
    run_id = run_locally(pipe, "thread")

    assert pipe.is_successful()
    assert registered == []
    assert get_store().scalars(run_id) == [] and not Task(run_id).artifacts
    assert not Task(run_id).models["output"]


# -- the hooks directly ---------------------------------------------------------------------


def _controller_and_step(store) -> tuple[str, str]:
    run_id = store.create_task(project="monitor-tests", name="run", type="controller").id
    step_id = store.create_task(project="monitor-tests", name="step", parent=run_id).id
    return run_id, step_id


def test_a_cached_node_is_copied_in_one_go_and_only_once(store):
    run_id, cached_id = _controller_and_step(store)
    store.add_scalars(cached_id, [("m", "s", i, float(i), 0.0) for i in range(3)])
    Task(cached_id).upload_artifact("table", {"x": 1})
    Task(cached_id).upload_model("net", b"weights")
    node = Node(name="cached", executed=cached_id, monitor_metrics=[("m", "s")],
                monitor_artifacts=["table"], monitor_models=["net"])
    run = RunInfo(id=run_id, name="run", project="monitor-tests", version="1.0.0")
    task = store.get_task(cached_id)

    plugin.pipekit_step_completed(node=node, task=task, run=run)
    plugin.pipekit_step_completed(node=node, task=task, run=run)  # again: nothing new

    assert points(run_id) == {("m", "s"): {0: 0.0, 1: 1.0, 2: 2.0}}
    assert len(keys(run_id)) == 3
    assert Task(run_id).artifacts["table"].get() == {"x": 1}
    assert [m.name for m in Task(run_id).models["output"]] == ["net"]
    assert Task(run_id).models["output"][0].get() == b"weights"


def test_syncing_twice_copies_nothing_twice(store):
    run_id, step_id = _controller_and_step(store)
    node = Node(name="step", monitor_metrics=[("m", "s")], monitor_artifacts=["a"],
                monitor_models=["*"])
    run = RunInfo(id=run_id, name="run", project="monitor-tests", version="1.0.0")
    plugin.pipekit_step_created(node=node, task=store.get_task(step_id), run=run)
    try:
        watch = plugin.get_monitor().get(run_id, "step")
        assert watch is not None
        store.add_scalars(step_id, [("m", "s", 0, 1.0, 0.0), ("m", "other", 0, 9.0, 0.0)])
        Task(step_id).upload_artifact("a", 1)
        Task(step_id).upload_model("net", b"w1")
        with watch.lock:
            watch.sync()
            watch.sync()
        store.add_scalars(step_id, [("m", "s", 0, 5.0, 0.0), ("m", "s", 1, 2.0, 0.0)])
        node.executed = step_id
        plugin.pipekit_step_completed(node=node, task=store.get_task(step_id), run=run)
    finally:
        plugin.pipekit_pipeline_finished(run=run)

    assert keys(run_id) == [("m", "s", 0), ("m", "s", 1)]
    assert points(run_id) == {("m", "s"): {0: 1.0, 1: 2.0}}  # the first value of an iteration
    assert [m.name for m in Task(run_id).models["output"]] == ["net"]
    assert plugin.get_monitor().get(run_id, "step") is None


def test_the_poller_logs_an_error_and_keeps_polling(store, monkeypatch, caplog):
    run_id, step_id = _controller_and_step(store)
    node = Node(name="step", monitor_metrics=[("m", "s")])
    run = RunInfo(id=run_id, name="run", project="monitor-tests", version="1.0.0")
    monkeypatch.setattr(plugin, "POLL_INTERVAL", 0.02)
    real = type(store).scalars
    calls = {"n": 0}

    def flaky(self, task_id):
        if task_id == step_id:
            calls["n"] += 1
        if task_id == step_id and calls["n"] <= 3:
            raise RuntimeError("store hiccup")
        return real(self, task_id)

    monkeypatch.setattr(type(store), "scalars", flaky)
    store.add_scalars(step_id, [("m", "s", 0, 1.5, 0.0)])
    with caplog.at_level(logging.WARNING, logger="pipekit.monitor"):
        plugin.pipekit_step_created(node=node, task=store.get_task(step_id), run=run)
        try:
            wait_for(lambda: points(run_id), "the poller to recover")
        finally:
            plugin.pipekit_pipeline_finished(run=run)

    assert points(run_id) == {("m", "s"): {0: 1.5}}
    failures = [r for r in caplog.records if "monitoring step 'step'" in r.getMessage()]
    assert len(failures) == 1  # the same error is logged once, not every turn
    assert plugin.get_monitor().get(run_id, "step") is None


def test_a_slow_poll_backs_off_so_polling_never_takes_over(store, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(plugin, "time", types.SimpleNamespace(
        monotonic=lambda: clock[0], time=time.time, sleep=time.sleep))
    synced: list[float] = []

    def slow_sync(self):  # a step with a long metric history: reading it takes 2 s
        synced.append(clock[0])
        clock[0] += 2.0

    monkeypatch.setattr(plugin.Watch, "sync", slow_sync)
    watch = plugin.Watch(run_id="run", step="step", task_id="task", spec=MonitorSpec(),
                         store=store)
    for now in (100.0, 102.0, 107.9, 108.0):
        clock[0] = max(clock[0], now)
        plugin.Monitor._poll_one(watch)

    assert synced == [100.0, 108.0]  # 2 s of work, then 3 x 2 s of rest
