"""The pipeline run loop end to end: values between steps in every executor, the callbacks
and their order, concurrency, bad definitions, and ``PipelineDecorator``.

Failure handling, kills, stop and artifact ordering are in ``test_pipeline_failures.py``.
Every run is checked against the cascade invariant (RELIABILITY 12) when it ends.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from pipeline_helpers import assert_cascade, node_statuses, run_locally, step_tasks

import pipekit
from pipekit import PipelineController, PipelineDecorator, Task
from pipekit.decorator import LazyResult
from pipekit.errors import (
    BadReference,
    DefinitionError,
    DuplicateStepError,
    PipelineCycleError,
    StepFailed,
    UnknownParentError,
    UnknownReference,
)
from pipekit.store import get_store

# A step's function reaches a step process as cloudpickle; this test module is not importable
# there (tests/ is no package), so its functions travel by value, as a script's do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

EXECUTORS = ["inline", "thread", "process", "subprocess"]
# -- step functions (module level: they travel by value) --------------------------------------


def double(n):
    return n * 2


def combine(a, b):
    return a + b, a * b


def echo(x=None):
    return x


def nap(seconds, value=None):
    time.sleep(seconds)
    return value


def two_values():
    return 1, 2


def one_value():
    return 5


# -- 1. values between steps, in every executor -----------------------------------------------


@pytest.mark.parametrize("executor", EXECUTORS)
def test_function_steps_pass_values_and_are_child_tasks_in_every_executor(executor):
    pipe = PipelineController("values", "runner-tests")
    pipe.add_parameter("n", 3)
    pipe.add_function_step("source", double, function_kwargs={"n": "${pipeline.n}"},
                           function_return=["out"])
    pipe.add_function_step("combine", combine,
                           function_kwargs={"a": "${source.out}", "b": "${pipeline.n}"},
                           function_return=["total", "product"])
    run_id = run_locally(pipe, executor)
    store = get_store()

    assert pipe.is_successful()
    run = store.get_task(run_id)
    assert (run.type, run.status) == ("controller", "completed")
    assert store.get_parameters(run_id)["Args/n"].value == "3"

    tasks = step_tasks(run_id)
    assert set(tasks) == {"source", "combine"}
    assert {t.status for t in tasks.values()} == {"completed"}
    source, comb = tasks["source"], tasks["combine"]
    assert store.get_parameters(source.id)["kwargs/n"].value == "3"
    params = store.get_parameters(comb.id)
    assert params["kwargs/b"].value == "3"
    assert params["kwargs_artifacts/a"].value == f"{source.id}.out"

    assert Task(source.id).artifacts["out"].get() == 6
    assert Task(comb.id).artifacts["total"].get() == 9
    assert Task(comb.id).artifacts["product"].get() == 18

    dag = pipe.get_pipeline_dag()
    assert (dag["source"].executed, dag["combine"].executed) == (source.id, comb.id)
    nodes = {n.name: (n.status, n.task, n.parents) for n in store.list_nodes(run_id)}
    assert nodes == {"source": ("completed", source.id, []),
                     "combine": ("completed", comb.id, ["source"])}
    assert_cascade(run_id, pipe)


def test_a_return_value_inside_a_longer_string_is_its_text():
    """SPEC §3: references work anywhere inside a string; ``${step.return}`` is the value."""
    pipe = PipelineController("embedded", "runner-tests")
    pipe.add_parameter("n", 3)
    pipe.add_function_step("source", double, function_kwargs={"n": 3}, function_return=["out"])
    pipe.add_function_step("label", echo,
                           function_kwargs={"x": "n=${pipeline.n} out=${source.out}"},
                           function_return=["text"])
    run_id = run_locally(pipe)
    assert pipe.is_successful()
    assert Task(step_tasks(run_id)["label"].id).artifacts["text"].get() == "n=3 out=6"
    assert_cascade(run_id, pipe)


# -- 2. callbacks -----------------------------------------------------------------------------


def test_callbacks_are_called_in_order_around_each_step():
    events: list[tuple[Any, ...]] = []
    pipelines: list[Any] = []

    def created(pipeline, node, parameters):
        pipelines.append(pipeline)
        events.append(("step_task_created", node.name, dict(parameters)))

    def pre(pipeline, node, parameters):
        pipelines.append(pipeline)
        events.append(("pre_execute", node.name, dict(parameters)))

    def completed(pipeline, node):
        pipelines.append(pipeline)
        events.append(("step_task_completed", node.name, node.executed))

    def post(pipeline, node):
        pipelines.append(pipeline)
        events.append(("post_execute", node.name, node.executed))

    def status(pipeline, node, previous_status):
        pipelines.append(pipeline)
        events.append(("status", node.name, previous_status, node.status))

    pipe = PipelineController("callbacks", "runner-tests")
    for name, parents in (("first", None), ("second", ["first"])):
        pipe.add_function_step(name, echo, function_kwargs={"x": 3}, function_return=["out"],
                               parents=parents, pre_execute_callback=pre,
                               post_execute_callback=post, status_change_callback=status)
    run_id = run_locally(pipe, step_task_created_callback=created,
                         step_task_completed_callback=completed)

    assert pipe.is_successful()
    tasks = step_tasks(run_id)
    expected: list[tuple[Any, ...]] = []
    for name in ("first", "second"):
        task_id = tasks[name].id
        expected += [("step_task_created", name, {"kwargs/x": 3}),
                     ("pre_execute", name, {"kwargs/x": 3}),
                     ("status", name, "pending", "in_progress"),
                     ("step_task_completed", name, task_id),
                     ("post_execute", name, task_id),
                     ("status", name, "in_progress", "completed")]
    assert events == expected
    assert all(p is pipe for p in pipelines)
    assert_cascade(run_id, pipe)


def test_pre_execute_callback_edits_reach_the_step():
    seen: list[dict[str, Any]] = []

    def via_parameters(pipeline, node, parameters):
        seen.append(dict(parameters))
        parameters["kwargs/x"] = 10

    def via_node(pipeline, node, parameters):
        node.parameters["kwargs/x"] = "${pipeline.n}"

    pipe = PipelineController("edits", "runner-tests")
    pipe.add_parameter("n", 20)
    pipe.add_function_step("by_parameters", echo, function_kwargs={"x": 3},
                           function_return=["out"], pre_execute_callback=via_parameters)
    pipe.add_function_step("by_node", echo, function_kwargs={"x": 3},
                           function_return=["out"], pre_execute_callback=via_node)
    run_id = run_locally(pipe)

    assert pipe.is_successful()
    assert seen == [{"kwargs/x": 3}]
    tasks = step_tasks(run_id)
    store = get_store()
    assert Task(tasks["by_parameters"].id).artifacts["out"].get() == 10
    assert store.get_parameters(tasks["by_parameters"].id)["kwargs/x"].value == "10"
    assert Task(tasks["by_node"].id).artifacts["out"].get() == 20
    assert store.get_parameters(tasks["by_node"].id)["kwargs/x"].value == "20"
    assert_cascade(run_id, pipe)


@pytest.mark.parametrize("how", ["pre_execute_callback", "step_task_created_callback",
                                 "node.skip_job"])
def test_a_vetoed_step_and_its_descendants_are_skipped_others_run(how):
    def veto(pipeline, node, parameters):
        if node.name != "vetoed":
            return None
        if how == "node.skip_job":
            node.skip_job = True
            return None
        return False

    pipe = PipelineController("veto", "runner-tests")
    pipe.add_function_step("root", echo, function_kwargs={"x": 1}, function_return=["out"])
    pipe.add_function_step("vetoed", echo, function_kwargs={"x": "${root.out}"},
                           function_return=["out"],
                           pre_execute_callback=veto if how != "step_task_created_callback"
                           else None)
    pipe.add_function_step("below", echo, function_kwargs={"x": "${vetoed.out}"},
                           function_return=["out"])
    pipe.add_function_step("further_below", echo, parents=["below"])
    pipe.add_function_step("independent", echo, function_kwargs={"x": 2})
    pipe.add_function_step("sibling", echo, function_kwargs={"x": "${root.out}"},
                           parents=["independent"])
    created = veto if how == "step_task_created_callback" else None
    run_id = run_locally(pipe, step_task_created_callback=created)

    assert node_statuses(run_id) == {"root": "completed", "vetoed": "skipped",
                                     "below": "skipped", "further_below": "skipped",
                                     "independent": "completed", "sibling": "completed"}
    assert set(step_tasks(run_id)) == {"root", "independent", "sibling"}
    dag = pipe.get_pipeline_dag()
    assert all(not dag[n].tasks and not dag[n].executed
               for n in ("vetoed", "below", "further_below"))
    assert "vetoed" in dag["below"].reason
    assert get_store().get_task(run_id).status == "completed"
    assert pipe.is_successful()
    assert_cascade(run_id, pipe)


def _raise_in_callback(pipeline, node, parameters):
    raise ValueError("bad tuning 7")


@pytest.mark.parametrize("where", ["callback", "reference"])
def test_a_step_that_fails_at_launch_keeps_its_traceback(where, caplog):
    """Its reason is one line; the traceback is logged at DEBUG and kept in the run's log
    (no step task exists yet)."""
    pipe = PipelineController(name="launch-fails", project="runner")
    pipe.add_function_step("root", echo, function_kwargs={"x": 1}, function_return=["out"])
    if where == "callback":
        pipe.add_function_step("tuned", echo, function_kwargs={"x": "${root.out}"},
                               pre_execute_callback=_raise_in_callback)
        says = "callback raised ValueError: bad tuning 7"
    else:
        pipe.add_function_step("tuned", echo,
                               function_kwargs={"x": "${root.parameters.General/none}"})
        says = "${root.parameters.General/none}: step 'root' has no parameter General/none"
    with caplog.at_level("DEBUG", logger="pipekit.runner"):
        run_id = run_locally(pipe, executor="inline")
    node = pipe.get_pipeline_dag()["tuned"]
    assert node.status == "failed" and says in node.reason and "\n" not in node.reason
    assert node.tasks == []  # it never became a task
    [record] = [r for r in caplog.records if "failed at launch" in r.getMessage()]
    assert "Traceback (most recent call last)" in record.getMessage()
    log = Task(run_id).get_log()
    assert f"step 'tuned' failed at launch: {says}" in log and "Traceback" in log


# -- 4. fan-out ---------------------------------------------------------------------------------


@pytest.mark.exclusive
@pytest.mark.parametrize("executor", ["thread", "subprocess"])
def test_independent_steps_run_concurrently(executor):
    pipe = PipelineController("fan-out", "runner-tests")
    pipe.add_function_step("source", double, function_kwargs={"n": 1}, function_return=["out"])
    for i in range(6):
        pipe.add_function_step(f"sleeper{i}", nap,
                               function_kwargs={"seconds": 0.5, "value": "${source.out}"},
                               function_return=["out"])
    begun = time.monotonic()
    run_id = run_locally(pipe, executor)
    elapsed = time.monotonic() - begun

    assert pipe.is_successful()
    tasks = [t for t in step_tasks(run_id).values() if t.name.startswith("sleeper")]
    assert len(tasks) == 6
    assert all(Task(t.id).artifacts["out"].get() == 2 for t in tasks)
    # every sleeper had started before the first one ended: they overlapped
    assert max(t.started for t in tasks) < min(t.ended for t in tasks)
    assert elapsed < 3.0, f"1 + 6 x 0.5 s steps took {elapsed:.2f} s: not concurrent"
    assert_cascade(run_id, pipe)


# -- 9. bad definitions: clear errors before anything runs ------------------------------------


def assert_nothing_ran() -> None:
    assert get_store().find_tasks() == []


def test_a_duplicate_step_name_is_refused_when_added():
    pipe = PipelineController("bad", "runner-tests")
    pipe.add_function_step("twice", echo)
    with pytest.raises(DuplicateStepError) as caught:
        pipe.add_function_step("twice", double)
    assert "'twice'" in str(caught.value) and caught.value.step == "twice"
    assert_nothing_ran()


def test_an_unknown_parent_is_refused_at_start():
    pipe = PipelineController("bad", "runner-tests")
    pipe.add_function_step("a", echo)
    pipe.add_function_step("b", echo, parents=["a", "nope"])
    with pytest.raises(UnknownParentError) as caught:
        run_locally(pipe)
    assert "'b'" in str(caught.value) and "'nope'" in str(caught.value)
    assert caught.value.step == "b"
    assert_nothing_ran()


@pytest.mark.parametrize(("kwargs", "missing"), [
    ({"x": "${nope.x}"}, "nope"),
    ({"x": "${a.undeclared}"}, "undeclared"),
    ({"x": "${pipeline.nope}"}, "nope"),
])
def test_an_unknown_reference_is_refused_before_anything_runs(kwargs, missing):
    pipe = PipelineController("bad", "runner-tests")
    with pytest.raises(UnknownReference) as caught:
        pipe.add_function_step("a", echo, function_return=["out"])
        pipe.add_function_step("b", echo, function_kwargs=kwargs)
        run_locally(pipe)
    message = str(caught.value)
    assert "'b'" in message and repr(missing) in message and kwargs["x"] in message
    assert caught.value.step == "b" and caught.value.missing == missing
    assert_nothing_ran()


# ClearML (automation/controller.py, ``_add_function_step``, running locally) verifies an
# argument that is a reference as the function step is added: it may name only a pipeline
# parameter or a step added before. ``add_step``'s references, and one inside a longer
# string, are verified by ``start()`` (``_verify``), so they may name steps added later.

@pytest.mark.parametrize(("kwargs", "missing", "fragment"), [
    ({"x": "${nope.out}"}, "nope", "may refer only to a step added before it (added so far: "
                                   "'a')"),
    ({"x": "${later.id}"}, "later", "added before it"),
    ({"x": "${aa.out}"}, "aa", "did you mean 'a'?"),
    ({"x": "${a.undeclared}"}, "undeclared", "'out'"),
    ({"x": "${pipeline.rows}"}, "rows", "add_parameter() before the step"),
])
def test_a_function_step_argument_naming_what_was_not_added_yet_fails_when_added(
        kwargs, missing, fragment):
    pipe = PipelineController("bad", "runner-tests")
    pipe.add_function_step("a", echo, function_return=["out"])
    with pytest.raises(ValueError) as caught:  # what ClearML raises
        pipe.add_function_step("b", echo, function_kwargs=kwargs)
    error = caught.value
    assert isinstance(error, UnknownReference)
    assert (error.step, error.missing) == ("b", missing)
    assert "step 'b'" in str(error) and repr(missing) in str(error)
    assert kwargs["x"] in str(error) and fragment in str(error)
    assert list(pipe.get_pipeline_dag()) == ["a"]
    assert_nothing_ran()


def test_a_function_step_argument_may_name_steps_and_parameters_added_before():
    pipe = PipelineController("ordered", "runner-tests")
    pipe.add_parameter("n", 4)
    pipe.add_function_step("a", double, function_kwargs={"n": "${pipeline.n}"},
                           function_return=["out"])
    pipe.add_function_step("b", echo, function_kwargs={"x": "${a.out}"},
                           function_return=["out"])
    pipe.add_function_step("c", echo, function_kwargs={"x": "${b.id}"}, function_return=["out"])
    with pytest.raises(BadReference, match="itself"):
        pipe.add_function_step("d", echo, function_kwargs={"x": "${d.id}"})
    run_id = run_locally(pipe)
    assert pipe.is_successful()
    tasks = step_tasks(run_id)
    assert Task(tasks["b"].id).artifacts["out"].get() == 8
    assert Task(tasks["c"].id).artifacts["out"].get() == tasks["b"].id


def test_references_clearml_checks_at_start_may_name_steps_added_later():
    pipe = PipelineController("later", "runner-tests")
    pipe.add_function_step("label", echo, function_kwargs={"x": "from ${source.id}"},
                           function_return=["text"])
    pipe.add_function_step("source", double, function_kwargs={"n": 2}, function_return=["out"])
    run_id = run_locally(pipe)
    assert pipe.is_successful()
    tasks = step_tasks(run_id)
    assert Task(tasks["label"].id).artifacts["text"].get() == f"from {tasks['source'].id}"

    template = Task.create(project_name="runner-tests", task_name="template")
    steps = PipelineController("steps", "runner-tests")
    steps.add_step("first", base_task_id=template.id,
                   parameter_override={"Args/after": "${second.id}"})  # added next: fine
    steps.add_step("second", base_task_id=template.id)
    steps.add_step("ghostly", base_task_id=template.id,
                   parameter_override={"Args/x": "${ghost.id}"})  # never added
    with pytest.raises(UnknownReference) as caught:  # ... refused by start()
        steps.start_locally(run_pipeline_steps_locally=True, executor="inline")
    assert (caught.value.step, caught.value.missing) == ("ghostly", "ghost")
    assert [t.id for t in get_store().find_tasks(project="runner-tests",
                                                 type=["controller"])] == [run_id]


def test_a_cycle_is_refused_naming_its_steps():
    pipe = PipelineController("bad", "runner-tests")
    with pytest.raises(PipelineCycleError) as caught:
        pipe.add_function_step("a", echo, function_return=["out"], parents=["c"])
        pipe.add_function_step("b", echo, function_kwargs={"x": "${a.out}"},
                               function_return=["out"])
        pipe.add_function_step("c", echo, function_kwargs={"x": "${b.out}"})
        run_locally(pipe)
    assert set(caught.value.cycle) >= {"a", "b", "c"}
    assert all(f"{n}" in str(caught.value) for n in "abc")
    assert_nothing_ran()


def test_a_function_that_cannot_be_pickled_is_refused_when_added():
    lock = threading.Lock()

    def uses_lock():
        with lock:
            return 1

    with pytest.raises(TypeError):
        cloudpickle.dumps(uses_lock)  # the premise: cloudpickle really fails on it
    pipe = PipelineController("bad", "runner-tests")
    with pytest.raises(DefinitionError) as caught:
        pipe.add_function_step("locked", uses_lock)
    message = str(caught.value)
    assert "'locked'" in message and "uses_lock" in message and "pickle" in message
    assert caught.value.step == "locked"
    assert "locked" not in pipe.get_pipeline_dag()
    assert_nothing_ran()


@pytest.mark.parametrize("value", ["${a.", "${}", "x ${a.out"])
def test_a_malformed_reference_is_refused_when_added(value):
    pipe = PipelineController("bad", "runner-tests")
    pipe.add_function_step("a", echo, function_return=["out"])
    with pytest.raises(BadReference) as caught:
        pipe.add_function_step("b", echo, function_kwargs={"x": value})
    reference = value[value.index("${"):]
    assert "'b'" in str(caught.value) and reference in str(caught.value)
    assert caught.value.step == "b" and caught.value.value == reference
    assert_nothing_ran()


@pytest.mark.parametrize(("function", "says"), [
    (two_values, "returned 2 values but function_return names 3"),
    (one_value, "returned one int but function_return names 3 values"),
])
def test_a_step_returning_too_few_values_fails_saying_how_many(function, says):
    pipe = PipelineController("short", "runner-tests")
    pipe.add_function_step("short", function, function_return=["a", "b", "c"])
    pipe.add_function_step("after", echo, function_kwargs={"x": "${short.a}"})
    run_id = run_locally(pipe)

    node = pipe.get_pipeline_dag()["short"]
    assert node.status == "failed" and says in node.reason
    task = get_store().get_task(node.tasks[0])
    assert task.status == "failed" and says in task.status_reason
    assert get_store().list_artifacts(task.id) == []
    assert node_statuses(run_id) == {"short": "failed", "after": "skipped"}
    assert get_store().get_task(run_id).status == "failed"
    assert not pipe.is_successful()
    assert_cascade(run_id, pipe)


# -- 10. PipelineDecorator ---------------------------------------------------------------------


@PipelineDecorator.component(return_values=["out"])
def dec_double(n):
    return n * 2


@PipelineDecorator.component(return_values=["total"])
def dec_add(a, b):
    return a + b


@PipelineDecorator.component(return_values=["out"])
def dec_nap(seconds, value):
    time.sleep(seconds)
    return value


@PipelineDecorator.component(return_values=["out"])
def dec_fail(message):
    raise ValueError(message)


@PipelineDecorator.component(return_values=["out"])
def dec_outer(n):
    return dec_double(n) + 1  # a component calling a component


@PipelineDecorator.pipeline(name="dec-values", project="runner-tests")
def values_pipeline(n=3):
    doubled = dec_double(n)
    return int(dec_add(doubled, n))


@PipelineDecorator.pipeline(name="dec-fan", project="runner-tests")
def fan_pipeline(seconds=0.5):
    begun = time.monotonic()
    results = [dec_nap(seconds, i) for i in range(3)]
    launched = time.monotonic() - begun
    lazy = [type(r) is LazyResult for r in results]
    return launched, lazy, sum(results)


@PipelineDecorator.pipeline(name="dec-nested", project="runner-tests")
def nested_pipeline(n=4):
    return int(dec_outer(n))


@PipelineDecorator.pipeline(name="dec-failing", project="runner-tests")
def failing_pipeline():
    bad = dec_fail("no good")
    fine = dec_double(1)
    return int(bad) + int(fine)



def the_run() -> Any:
    runs = get_store().find_tasks(type=["controller"])
    assert len(runs) == 1
    return runs[0]


def set_mode(mode: str) -> None:
    if mode == "debug":
        PipelineDecorator.debug_pipeline()
    else:
        PipelineDecorator.run_locally(executor=mode)


@pytest.mark.parametrize("mode", ["debug", "thread"])
def test_decorated_pipeline_runs_components_as_child_tasks(mode):
    set_mode(mode)
    assert values_pipeline(n=3) == 9

    run = the_run()
    assert (run.name, run.status) == ("dec-values", "completed")
    assert get_store().get_parameters(run.id)["Args/n"].value == "3"
    tasks = step_tasks(run.id)
    assert set(tasks) == {"dec_double", "dec_add"}
    assert {t.status for t in tasks.values()} == {"completed"}
    assert Task(tasks["dec_double"].id).artifacts["out"].get() == 6
    assert Task(tasks["dec_add"].id).artifacts["total"].get() == 9
    assert node_statuses(run.id) == {"dec_double": "completed", "dec_add": "completed"}
    assert_cascade(run.id)


@pytest.mark.exclusive
def test_decorated_components_are_lazy_and_independent_ones_concurrent():
    PipelineDecorator.run_locally(executor="thread")
    begun = time.monotonic()
    launched, lazy, total = fan_pipeline(seconds=0.5)
    elapsed = time.monotonic() - begun

    assert lazy == [True, True, True]
    assert launched < 0.4, f"calling 3 components took {launched:.2f} s: not lazy"
    assert total == 0 + 1 + 2
    assert elapsed < 1.4, f"3 x 0.5 s components took {elapsed:.2f} s: not concurrent"
    run = the_run()
    assert run.status == "completed"
    tasks = list(step_tasks(run.id).values())
    assert len(tasks) == 3
    assert max(t.started for t in tasks) < min(t.ended for t in tasks)
    assert_cascade(run.id)


@pytest.mark.parametrize("mode", ["debug", "thread"])
def test_a_component_called_by_a_component_is_a_child_task_of_its_caller(mode):
    set_mode(mode)
    assert nested_pipeline(n=4) == 9

    store = get_store()
    run = the_run()
    assert run.status == "completed"
    tasks = step_tasks(run.id)
    assert set(tasks) == {"dec_outer"}
    outer = tasks["dec_outer"]
    inner = store.find_tasks(parent=outer.id)
    assert [(t.name, t.status) for t in inner] == [("dec_double", "completed")]
    assert Task(inner[0].id).artifacts["out"].get() == 8
    assert Task(outer.id).artifacts["out"].get() == 9
    assert_cascade(run.id)


@pytest.mark.parametrize("mode", ["debug", "thread"])
def test_using_a_failed_components_value_raises_step_failed(mode):
    set_mode(mode)
    with pytest.raises(StepFailed) as caught:
        failing_pipeline()
    assert caught.value.step == "dec_fail"
    assert "ValueError: no good" in caught.value.reason

    run = the_run()
    assert run.status == "failed"
    statuses = node_statuses(run.id)
    assert statuses["dec_fail"] == "failed"
    assert get_store().get_task(step_tasks(run.id)["dec_fail"].id).status == "failed"
    assert_cascade(run.id)


# -- a node added while a parent is releasing its children ----------------------------------

RACE_GATE = Path(tempfile.gettempdir()) / f"pipekit-race-gate-{os.getpid()}"


@PipelineDecorator.component(return_values=["v"])
def race_fast() -> int:
    return 1


@PipelineDecorator.component(return_values=["v"])
def race_slow() -> int:
    # released as soon as the joiner runs (which it must not do before this returns)
    deadline = time.monotonic() + 1.5
    while not RACE_GATE.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    return 2


@PipelineDecorator.component(return_values=["v"])
def race_join(a: int, b: int) -> int:
    RACE_GATE.touch()
    return a + b


@PipelineDecorator.pipeline(name="release-race", project="runner-tests")
def release_race() -> int:
    fast, slow = race_fast(), race_slow()
    dag = PipelineDecorator.get_current_pipeline().get_pipeline_dag()
    deadline = time.monotonic() + 10
    while dag["race_fast"].status != "completed":  # completed, its hooks still running
        assert time.monotonic() < deadline, "race_fast never completed"
        time.sleep(0.001)
    return race_join(fast, slow)


def test_a_node_added_while_its_parent_finishes_waits_for_its_other_parents() -> None:
    """The decorator adds ``race_join`` while ``race_fast`` is completed but still running its
    completion hooks: ``race_join`` must still wait for ``race_slow`` (it was once released
    twice by ``race_fast``, and launched with a parent still running).
    """
    from pipekit.plugin_manager import get_plugin_manager

    class HoldFast:
        @pipekit.hookimpl
        def pipekit_step_completed(self, node: Any, run: Any) -> None:
            if node.name != "race_fast":
                return
            deadline = time.monotonic() + 10
            while "race_join" not in run.pipeline._runner.nodes:
                assert time.monotonic() < deadline, "race_join was never added"
                time.sleep(0.001)

    RACE_GATE.unlink(missing_ok=True)
    get_plugin_manager().register(HoldFast(), name="hold-fast")
    PipelineDecorator.run_locally(executor="thread")
    try:
        assert release_race() == 3
    finally:
        RACE_GATE.unlink(missing_ok=True)
    assert set(node_statuses(the_run().id).values()) == {"completed"}
