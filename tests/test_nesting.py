"""Nested pipelines (SPEC §3 Nesting): a pipeline run inside a step of another.

(a) A decorated pipeline called from inside a component: it is a run of its own whose
    controller task's parent is the calling step's task; its result is the component's
    return value, which flows on to the next step of the outer run.
(b) A controller task as a step (``add_step(base_task_id=<a run>)``): the step clones the run
    and executes its script with ``PIPEKIT_TASK_ID`` set; the script's pipeline takes the clone
    over, with the step's ``Args`` overrides.

In both, :func:`pipekit.views.run_view` of the outer run lists the inner run, with its nodes,
under the calling node's ``"runs"``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from pipeline_helpers import assert_cascade, node_statuses, step_tasks

from pipekit import PipelineController, PipelineDecorator, Task
from pipekit.models import RunSummary
from pipekit.store import get_store
from pipekit.views import run_view

# Components reach a step process as cloudpickle; this test module is not importable there
# (tests/ is no package), so its functions travel by value, as a script's do.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PROJECT = "nesting-tests"



@pytest.fixture(autouse=True)
def builtin_plugins_in_children(monkeypatch: pytest.MonkeyPatch) -> None:
    """Processes the tests start (step subprocesses, scripts) load pipekit's own plugins only,
    as this process does (``conftest.py``): installed example plugins stay out.
    """
    monkeypatch.setenv("PIPEKIT_PLUGINS", "")


def runs_named(name: str) -> list[RunSummary]:
    return get_store().list_runs(name=name)


def node_task(run_id: str, name: str) -> Any:
    """The task of node ``name`` of run ``run_id`` (a nested run renames its task)."""
    [task_id] = [n.task for n in get_store().list_nodes(run_id) if n.name == name]
    return get_store().get_task(task_id)


def view_node(view: dict[str, Any], name: str) -> dict[str, Any]:
    nodes = {n["name"]: n for n in view["nodes"]}
    return nodes[name]


def nested_summary(view: dict[str, Any]) -> list[tuple[str, str, str, dict[str, str]]]:
    """``(id, name, status, {node: status})`` of each run nested under each node."""
    return [(run["id"], run["name"], run["status"],
             {n["name"]: n["status"] for n in run["nodes"]})
            for node in view["nodes"] for run in node["runs"]]


# -- (a) a decorated pipeline called from a component -------------------------------------------


@PipelineDecorator.component(return_values=["out"])
def square(n):
    return n * n


@PipelineDecorator.component(return_values=["out"])
def add_one(n):
    return n + 1


@PipelineDecorator.pipeline(name="inner", project=PROJECT)
def inner_pipeline(n=1):
    return int(add_one(square(n)))


@PipelineDecorator.component(return_values=["out"])
def call_inner(n):
    return inner_pipeline(n=n)  # a pipeline run, nested in this step


@PipelineDecorator.component(return_values=["out"])
def times_ten(value):
    return value * 10


@PipelineDecorator.pipeline(name="outer", project=PROJECT)
def outer_pipeline(n=2):
    nested = call_inner(n)
    return int(times_ten(nested))


@pytest.mark.parametrize("mode", [
    "debug",
    "thread",
    "subprocess",
])
def test_a_decorated_pipeline_called_from_a_component_is_a_nested_run(mode):
    if mode == "debug":
        PipelineDecorator.debug_pipeline()
    else:
        PipelineDecorator.run_locally(executor=mode)

    assert outer_pipeline(n=3) == (3 * 3 + 1) * 10

    store = get_store()
    [outer] = runs_named("outer")
    [inner] = runs_named("inner")
    assert outer.status == "completed" and inner.status == "completed"
    outer_steps = step_tasks(outer.id)
    assert set(outer_steps) == {"call_inner", "times_ten"}  # the inner steps are not its own
    caller = outer_steps["call_inner"]
    # The inner run is a run of its own: its controller task is a child of the calling step.
    assert inner.id != outer.id
    inner_task = store.get_task(inner.id)
    assert inner_task.type == "controller" and inner_task.parent == caller.id
    assert store.get_parameters(inner.id)["Args/n"].value == "3"
    assert store.get_run(inner.id).version == "1.0.0"
    inner_steps = step_tasks(inner.id)
    assert {name: t.status for name, t in inner_steps.items()} == {
        "square": "completed", "add_one": "completed"}
    assert node_statuses(inner.id) == {"square": "completed", "add_one": "completed"}
    assert Task(inner_steps["add_one"].id).artifacts["out"].get() == 10
    # The inner pipeline's result is the component's return value, and flows to the next step.
    assert Task(caller.id).artifacts["out"].get() == 10
    consumer = store.get_parameters(outer_steps["times_ten"].id)
    assert consumer["kwargs_artifacts/value"].value == f"{caller.id}.out"
    assert Task(outer_steps["times_ten"].id).artifacts["out"].get() == 100
    assert node_statuses(outer.id) == {"call_inner": "completed", "times_ten": "completed"}
    assert_cascade(inner.id)
    assert_cascade(outer.id)

    view = run_view(outer.id)
    calling = view_node(view, "call_inner")
    assert [r["id"] for r in calling["runs"]] == [inner.id]
    nested = calling["runs"][0]
    assert (nested["name"], nested["status"], nested["parent"]) == (
        "inner", "completed", caller.id)
    assert nested["parameters"] == {"n": "3"}
    assert [(n["name"], n["status"], n["parents"]) for n in nested["nodes"]] == [
        ("square", "completed", []), ("add_one", "completed", ["square"])]
    assert nested_summary(view) == [
        (inner.id, "inner", "completed", {"square": "completed", "add_one": "completed"})]
    assert view_node(view, "times_ten")["runs"] == []


@PipelineDecorator.component(return_values=["out"])
def call_inner_twice(n):
    return inner_pipeline(n=n) + inner_pipeline(n=n + 1)


@PipelineDecorator.pipeline(name="outer-twice", project=PROJECT)
def outer_twice_pipeline(n=2):
    return int(call_inner_twice(n))


def test_each_nested_call_is_its_own_run_listed_under_the_calling_node():
    PipelineDecorator.run_locally(executor="thread")

    assert outer_twice_pipeline(n=1) == (1 + 1) + (4 + 1)

    [outer] = runs_named("outer-twice")
    inner = runs_named("inner")
    assert len(inner) == 2 and {r.status for r in inner} == {"completed"}
    caller = step_tasks(outer.id)["call_inner_twice"]
    assert {get_store().get_task(r.id).parent for r in inner} == {caller.id}
    calling = view_node(run_view(outer.id), "call_inner_twice")
    # In the order they ran, each with its own Args.
    assert [(r["id"], r["parameters"]) for r in calling["runs"]] == [
        (r.id, {"n": str(n)}) for r, n in zip(reversed(inner), (1, 2), strict=True)]


@PipelineDecorator.component(return_values=["out"])
def call_failing_inner(n):
    return failing_inner_pipeline(n=n)


@PipelineDecorator.component(return_values=["out"])
def refuse(n):
    raise ValueError(f"no {n}")


@PipelineDecorator.pipeline(name="failing-inner", project=PROJECT)
def failing_inner_pipeline(n=1):
    return int(refuse(n))


@PipelineDecorator.pipeline(name="outer-of-failing", project=PROJECT)
def outer_of_failing_pipeline(n=2):
    return int(times_ten(call_failing_inner(n)))


def test_a_failing_nested_run_fails_the_calling_step_and_the_outer_run():
    PipelineDecorator.run_locally(executor="thread")

    with pytest.raises(Exception, match="call_failing_inner"):
        outer_of_failing_pipeline(n=2)

    [outer] = runs_named("outer-of-failing")
    [inner] = runs_named("failing-inner")
    assert inner.status == "failed" and "refuse" in inner.status_reason
    assert outer.status == "failed"
    assert node_statuses(outer.id) == {"call_failing_inner": "failed",
                                          "times_ten": "skipped"}
    assert node_statuses(inner.id) == {"refuse": "failed"}
    calling = view_node(run_view(outer.id), "call_failing_inner")
    assert [(r["id"], r["status"]) for r in calling["runs"]] == [(inner.id, "failed")]
    assert_cascade(inner.id)
    assert_cascade(outer.id)


NESTED_SCRIPT = """
from pipekit import PipelineDecorator


@PipelineDecorator.component(return_values=["out"])
def square(n):
    return n * n


@PipelineDecorator.pipeline(name="inner", project="nesting-tests")
def inner(n=1):
    return int(square(n))


@PipelineDecorator.component(return_values=["out"])
def call_inner(n):
    return inner(n=n)


@PipelineDecorator.pipeline(name="outer", project="nesting-tests")
def outer(n=2):
    return int(call_inner(n))


PipelineDecorator.run_locally(executor={executor!r})
print("result", outer(n=3))
"""

@pytest.mark.parametrize("executor", [
    "thread",
    "subprocess",
])
def test_a_nested_decorated_pipeline_under_pipekit_run_is_its_own_run(tmp_path, executor):
    script = tmp_path / "nested.py"
    script.write_text(textwrap.dedent(NESTED_SCRIPT.format(executor=executor)))
    pipekit = str(Path(sys.executable).with_name("pipekit"))
    proc = subprocess.run([pipekit, "run", "--echo", str(script)], capture_output=True,
                          text=True, cwd=tmp_path, env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "result 9" in proc.stdout

    runs = {r.name: r for r in get_store().list_runs()}
    assert set(runs) == {"outer", "inner"}, sorted(runs)
    assert {r.status for r in runs.values()} == {"completed"}
    assert node_statuses(runs["outer"].id) == {"call_inner": "completed"}
    assert node_statuses(runs["inner"].id) == {"square": "completed"}
    caller = node_task(runs["outer"].id, "call_inner")
    assert get_store().get_task(runs["inner"].id).parent == caller.id
    assert [r["id"] for r in view_node(run_view(runs["outer"].id), "call_inner")["runs"]] \
        == [runs["inner"].id]


# -- (b) a controller task as a step of another pipeline ----------------------------------------

INNER_CONTROLLER = """
from pipekit import PipelineController


def square(x):
    return x * x


def add_one(y):
    from pipekit import PipelineController

    PipelineController.upload_artifact("result", y + 1)  # on the run's controller task
    return y + 1


pipe = PipelineController("inner-script", "nesting-tests")
pipe.add_parameter("x", 2)
pipe.add_function_step("square", square, function_kwargs={"x": "${pipeline.x}"},
                       function_return=["y"])
pipe.add_function_step("add_one", add_one, function_kwargs={"y": "${square.y}"},
                       function_return=["z"])
pipe.start_locally(run_pipeline_steps_locally=True)
print("inner run", pipe.id, pipe.is_successful())
"""

INNER_DECORATED = """
from pipekit import PipelineDecorator


@PipelineDecorator.component(return_values=["y"])
def square(x):
    return x * x


@PipelineDecorator.component(return_values=["z"])
def add_one(y):
    from pipekit import PipelineDecorator

    PipelineDecorator.upload_artifact("result", y + 1)  # on the run's controller task
    return y + 1


@PipelineDecorator.pipeline(name="inner-script", project="nesting-tests")
def pipeline(x=2):
    return add_one(square(x))


PipelineDecorator.run_locally()
print("inner result", pipeline(x=2))
"""


def double(value):
    return value * 2


def run_script(path: Path) -> str:
    """Run a pipeline script once, as a user would; returns the id of the run it made."""
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          cwd=path.parent, env=dict(os.environ), timeout=120)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    [run] = runs_named("inner-script")
    assert run.status == "completed"
    return run.id


@pytest.mark.parametrize("script", [INNER_CONTROLLER, INNER_DECORATED],
                         ids=["controller", "decorated"])
def test_a_finished_run_as_a_step_reruns_its_script_with_the_overrides(tmp_path, script):
    path = tmp_path / "inner_pipeline.py"
    path.write_text(textwrap.dedent(script))
    template = run_script(path)
    store = get_store()
    template_nodes = node_statuses(template)

    pipe = PipelineController("outer-of-tasks", PROJECT)
    pipe.add_step(name="inner", base_task_id=template, parameter_override={"Args/x": 5})
    pipe.add_function_step("after", double, function_kwargs={"value": "${inner.artifacts.result}"},
                           function_return=["out"])
    pipe.start_locally(run_pipeline_steps_locally=True)

    assert pipe.is_successful(), store.get_task(pipe.id).status_reason
    assert node_statuses(pipe.id) == {"inner": "completed", "after": "completed"}
    step = node_task(pipe.id, "inner")
    # The step's task is a clone of the run: a controller task, a run of its own, with the
    # overridden Args, whose pipeline ran its nodes.
    assert step.id != template and step.type == "controller" and step.parent == pipe.id
    assert step.status == "completed"
    run = store.get_run(step.id)
    assert run.origin == template
    assert run.version == "1.0.0"
    assert run.structure_hash == store.get_run(template).structure_hash
    assert store.get_parameters(step.id)["Args/x"].value == "5"
    assert node_statuses(step.id) == {"square": "completed", "add_one": "completed"}
    inner_steps = step_tasks(step.id)
    assert Task(inner_steps["square"].id).artifacts["y"].get() == 25
    assert Task(inner_steps["add_one"].id).artifacts["z"].get() == 26
    # What the nested run stored on its controller task is the step's output.
    assert Task(step.id).artifacts["result"].get() == 26
    assert Task(node_task(pipe.id, "after").id).artifacts["out"].get() == 52
    assert_cascade(step.id)
    assert_cascade(pipe.id)
    # The template run is untouched.
    assert store.get_task(template).status == "completed"
    assert store.get_parameters(template)["Args/x"].value == "2"
    assert node_statuses(template) == template_nodes
    assert {t.parent for t in store.find_tasks(parent=template)} == {template}
    assert len(store.find_tasks(parent=template)) == 2

    view = run_view(pipe.id)
    node = view_node(view, "inner")
    assert node["task"] == step.id
    assert [r["id"] for r in node["runs"]] == [step.id]
    assert [(o["name"], o["preview"]) for o in node["outputs"]] == [("result", "26")]
    assert view_node(view, "after")["runs"] == []
    nested = node["runs"][0]
    assert (nested["name"], nested["status"], nested["origin"]) == (
        "inner-script", "completed", template)
    assert nested["parameters"] == {"x": "5"}
    assert [(n["name"], n["status"]) for n in nested["nodes"]] == [
        ("square", "completed"), ("add_one", "completed")]
    add_one_outputs = view_node(nested, "add_one")["outputs"]
    assert [(o["name"], o["preview"]) for o in add_one_outputs] == [("z", "26")]


def test_a_nested_run_that_fails_fails_its_step(tmp_path):
    path = tmp_path / "inner_pipeline.py"
    path.write_text(textwrap.dedent(INNER_CONTROLLER).replace(
        "    return x * x", "    if x == 5:\n        raise ValueError('five')\n    return x * x"))
    template = run_script(path)

    pipe = PipelineController("outer-of-tasks", PROJECT)
    pipe.add_step(name="inner", base_task_id=template, parameter_override={"Args/x": 5})
    pipe.add_step(name="after", base_task_id=template, parents=["inner"])
    pipe.start_locally(run_pipeline_steps_locally=True)

    assert not pipe.is_successful()
    assert node_statuses(pipe.id) == {"inner": "failed", "after": "skipped"}
    step = node_task(pipe.id, "inner")
    assert step.status == "failed"
    assert node_statuses(step.id) == {"square": "failed", "add_one": "skipped"}
    nested = view_node(run_view(pipe.id), "inner")["runs"]
    assert [(r["id"], r["status"]) for r in nested] == [(step.id, "failed")]
    assert_cascade(step.id)
    assert_cascade(pipe.id)
