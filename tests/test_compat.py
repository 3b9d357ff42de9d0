"""ClearML compatibility: ClearML-style scripts run on pipekit with only their import changed.

Each script under ``tests/compat/`` is written as a ClearML user would write it (see ClearML's
``examples/pipeline``), with ``from pipekit import ...`` where ClearML's imports ``clearml``.
The test runs it in a fresh interpreter against this test's store (``PIPEKIT_HOME``), then
inspects the store from here: the run's controller task, its step tasks, their parameters,
artifacts, models, metrics and logs.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from pipekit import PipelineController, Task
from pipekit.models import NodeRecord, TaskInfo
from pipekit.store import get_store

COMPAT = Path(__file__).resolve().parent / "compat"

#: what every linear-fit example learns from y = 3x + 2
FIT = {"slope": 3.0, "intercept": 2.0}


def run_script(cwd: Path, name: str, *args: str, timeout: float = 60
               ) -> subprocess.CompletedProcess[str]:
    """Run ``tests/compat/<name>`` as ``python <name> args`` in ``cwd``; it must exit 0."""
    proc = subprocess.run([sys.executable, str(COMPAT / name), *args], cwd=cwd,
                          env=dict(os.environ), capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (f"{name} {' '.join(args)} exited {proc.returncode}\n"
                                  f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def lines(out: str, key: str) -> list[str]:
    """The rest of every output line that starts with ``key`` and a space."""
    return [line[len(key) + 1:] for line in out.splitlines() if line.startswith(key + " ")]


def one(out: str, key: str) -> str:
    found = lines(out, key)
    assert len(found) == 1, f"expected one {key!r} line, got {found}\n{out}"
    return found[0]


def only_controller() -> TaskInfo:
    controllers = get_store().find_tasks(type=["controller"])
    assert len(controllers) == 1, controllers
    return controllers[0]


def steps_of(run_id: str) -> dict[str, TaskInfo]:
    """The run's step tasks by name (each name once)."""
    found = get_store().find_tasks(parent=run_id)
    by_name = {t.name: t for t in found}
    assert len(by_name) == len(found), [t.name for t in found]
    return by_name


def params(task_id: str) -> dict[str, str]:
    return Task(task_id).get_parameters()


def nodes(run_id: str) -> dict[str, NodeRecord]:
    return {n.name: n for n in get_store().list_nodes(run_id)}


# -- PipelineDecorator ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["debug", "local"])
def test_pipeline_from_decorator(tmp_path: Path, mode: str) -> None:
    proc = run_script(tmp_path, "pipeline_from_decorator.py", mode)
    model = {**FIT, "test_error": 0.0, "n_train": 15, "n_test": 5}
    assert json.loads(one(proc.stdout, "RESULT")) == model
    assert "pipeline completed with model:" in proc.stdout
    pid = one(proc.stdout, "PID")

    # the controller task: the run, with the pipeline function's arguments as Args
    run = only_controller()
    assert run.name == "compat decorator pipeline"
    assert run.project == "compat examples"
    assert run.status == "completed", run.status_reason
    assert params(run.id) == {"Args/rows": "20", "Args/mock_parameter": "mock"}
    assert Task(run.id).get_parameters(cast=True)["Args/rows"] == 20
    assert get_store().get_run(run.id).version == "1.0.0"

    # one task per component, children of the controller task, each completed
    steps = steps_of(run.id)
    assert set(steps) == {"step_one", "step_two", "step_three"}
    for step in steps.values():
        assert step.status == "completed", (step.name, step.status_reason)
        assert step.project == "compat examples"
    assert steps["step_one"].type == "data_processing"
    assert steps["step_two"].type == "data_processing"
    assert steps["step_three"].type == "training"

    # return values are artifacts of the step tasks, named by return_values
    one_, two, three = (Task(steps[n].id) for n in ("step_one", "step_two", "step_three"))
    assert sorted(one_.artifacts) == ["data_frame"]
    assert sorted(two.artifacts) == ["X_test", "X_train"]
    assert sorted(three.artifacts) == ["model"]
    data_frame = one_.artifacts["data_frame"].get()
    assert len(data_frame) == 20 and data_frame[4] == {"x": 4.0, "y": 14.0}
    assert len(two.artifacts["X_train"].get()) == 15
    assert len(two.artifacts["X_test"].get()) == 5
    assert three.artifacts["model"].get() == model

    # arguments: plain values are parameters; a component's result is passed as a reference
    # to the producing step's artifact, which makes that step a parent
    assert params(one_.id) == {"kwargs/rows": "20"}
    assert params(two.id)["kwargs_artifacts/data_frame"] == f"{one_.id}.data_frame"
    assert nodes(run.id)["step_two"].parents == ["step_one"]
    assert all(n.status == "completed" for n in nodes(run.id).values())

    # PipelineDecorator.get_logger / upload_artifact inside a step act on the controller
    assert Task(run.id).artifacts["model_card"].get() == {"kind": "linear", "rows": 20}
    assert Task(run.id).get_last_scalar_metrics()["model"]["test_error"]["last"] == 0.0
    assert "model_card" not in three.artifacts

    # each step's output is in its own log
    assert "step_one: generating 20 rows" in one_.get_log()
    assert "step_three: fitting" in three.get_log()

    # debug: every step ran in the script's own process; local: each in a subprocess
    workers = {s.worker for s in steps.values()}
    if mode == "debug":
        assert all(w is not None and w.endswith(f":{pid}") for w in workers), (workers, pid)
    else:
        assert not any(w is None or w.endswith(f":{pid}") for w in workers), (workers, pid)
        assert len(workers) == 3


# -- PipelineController from functions -----------------------------------------------------------


def test_pipeline_from_functions(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "pipeline_from_functions.py")
    assert one(proc.stdout, "SUCCESS") == "True"
    run = only_controller()
    assert one(proc.stdout, "RUN") == run.id
    assert run.name == "compat functions pipeline"
    assert run.status == "completed", run.status_reason
    assert get_store().get_run(run.id).version == "1.1"  # ClearML's version='1.1'
    assert params(run.id) == {"Args/rows": "40", "Args/test_size": "0.25",
                              "Args/run_label": "nightly"}

    steps = steps_of(run.id)
    assert set(steps) == {"step_one", "step_two", "step_three"}
    for step in steps.values():
        assert step.status == "completed", (step.name, step.status_reason)
        assert step.parent == run.id
    one_, two, three = (Task(steps[n].id) for n in ("step_one", "step_two", "step_three"))

    # ${pipeline.x} as a whole value keeps its type; inside a string it is substituted
    assert one_.get_parameters(cast=True)["kwargs/rows"] == 40
    assert two.get_parameters(cast=True)["kwargs/test_size"] == 0.25
    assert params(two.id)["kwargs/tag"] == "nightly-split"
    # ${step.return} passes the artifact; ${step.id} the producing task's id
    assert params(two.id)["kwargs_artifacts/data_frame"] == f"{one_.id}.data_frame"
    assert params(three.id)["kwargs/data_task_id"] == one_.id

    # function_return: each name an artifact (a returned tuple is unpacked)
    assert len(one_.artifacts["data_frame"].get()) == 40
    assert sorted(two.artifacts) == ["X_test", "X_train", "tag"]
    assert len(two.artifacts["X_train"].get()) == 30  # split by the helper function
    assert len(two.artifacts["X_test"].get()) == 10
    assert two.artifacts["tag"].get() == "nightly-split"
    model = {**FIT, "n_train": 30, "n_test": 10, "data_task_id": one_.id}
    assert three.artifacts["model"].get() == model

    # the DAG: parents found from the references alone
    dag = nodes(run.id)
    assert dag["step_two"].parents == ["step_one"]
    assert set(dag["step_three"].parents) == {"step_one", "step_two"}

    # PipelineController.upload_artifact / get_logger() from inside a step land on the
    # controller task; the step's own logger stays on the step
    controller = Task(run.id)
    assert sorted(controller.artifacts) == ["final_model"]
    assert controller.artifacts["final_model"].get() == model
    assert controller.get_last_scalar_metrics() == {
        "model": {"slope": {"last": 3.0, "min": 3.0, "max": 3.0}}}
    assert three.get_last_scalar_metrics() == {
        "train": {"rows": {"last": 30.0, "min": 30.0, "max": 30.0}}}
    assert "final_model" not in three.artifacts
    assert f"step_three: training on 30 rows (data from task {one_.id})" in three.get_log()


# -- PipelineController from tasks ---------------------------------------------------------------


def test_pipeline_from_tasks(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "pipeline_from_tasks.py")
    assert one(proc.stdout, "SUCCESS") == "True"
    templates = dict(line.rsplit(" ", 1) for line in lines(proc.stdout, "TEMPLATE"))
    assert len(templates) == 3
    run = only_controller()
    assert one(proc.stdout, "RUN") == run.id
    assert run.status == "completed", run.status_reason
    assert params(run.id) == {"Args/rows": "40", "Args/scale": "2"}

    store = get_store()
    steps = steps_of(run.id)
    assert set(steps) == {"stage_data", "stage_process", "stage_train"}
    bases = {"stage_data": "pipeline step 1 dataset artifact",
             "stage_process": "pipeline step 2 process dataset",
             "stage_train": "pipeline step 3 train model"}
    for name, step in steps.items():
        # a clone of its template, run as a child of the controller
        template = store.get_task(templates[bases[name]])
        assert step.status == "completed", (name, step.status_reason, Task(step.id).get_log())
        assert step.parent == run.id
        assert step.id != template.id
        assert step.code_digest == template.code_digest
        assert step.script["path"] == template.script["path"]
        # the template itself is left as it was: a draft without parameters
        assert template.status == "created"
        assert params(template.id) == {}
    data, process, train = (Task(steps[n].id)
                            for n in ("stage_data", "stage_process", "stage_train"))

    # parameter_override: ${pipeline.x}, ${step.id}, ${step.artifacts.name.url} and plain
    # values, merged with what each script connects (task.connect(dict) -> General/...)
    assert params(data.id) == {"General/rows": "40", "General/noise": "0.0"}
    assert params(process.id) == {
        "General/dataset_url": data.artifacts["dataset"].url,
        "General/dataset_task_id": data.id,
        "General/test_size": "0.25",
        "General/random_state": "42",
    }
    assert params(process.id)["General/dataset_url"].startswith("file://")
    assert params(train.id) == {"General/dataset_task_id": process.id, "General/scale": "2"}
    assert train.get_parameters(cast=True)["General/scale"] == 2

    # the artifacts each script uploaded, and what step 2 read from step 1
    with open(data.artifacts["dataset"].get(), "rb") as f:
        assert len(pickle.load(f)["data"]) == 40
    assert f"Input task id={data.id} artifacts ['dataset']" in process.get_log()
    assert f"Input url {data.artifacts['dataset'].url}" in process.get_log()
    assert len(process.artifacts["X_train"].get()) == 30
    assert len(process.artifacts["y_test"].get()) == 10
    model = {"slope": 6.0, "intercept": 2.0, "n_train": 30, "n_test": 10, "scale": 2}
    assert train.artifacts["model"].get() == model
    [output_model] = train.models["output"]
    assert output_model.name == "linear"
    assert json.loads(Path(output_model.get_local_copy()).read_text()) == model
    assert train.get_last_scalar_metrics()["test"]["max_error"]["last"] == 0.0

    dag = nodes(run.id)
    assert dag["stage_process"].parents == ["stage_data"]
    assert dag["stage_train"].parents == ["stage_process"]
    assert {n: d.task for n, d in dag.items()} == {n: s.id for n, s in steps.items()}


# -- callbacks -----------------------------------------------------------------------------------


def test_pipeline_callbacks(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "pipeline_callbacks.py")
    out = proc.stdout
    assert one(out, "SUCCESS") == "True"
    templates = dict(line.rsplit(" ", 1) for line in lines(out, "TEMPLATE"))
    run = only_controller()
    assert one(out, "RUN") == run.id
    assert run.status == "completed", run.status_reason
    steps = steps_of(run.id)
    # a step vetoed by its pre_execute_callback, and its subtree, never get a task
    assert set(steps) == {"stage_data", "stage_process", "summary"}

    pre = {line.split(" ", 1)[0]: line for line in lines(out, "PRE")}
    assert set(pre) == {"stage_data", "stage_process", "stage_skipped", "summary"}
    # pre_execute_callback(a_pipeline, a_node, current_param_override): the template id
    # and the overrides with their references resolved
    assert pre["stage_data"] == (f'stage_data base={templates["callbacks step 1"]} '
                                 'params={"General/rows": 12}')
    assert pre["stage_process"] == (
        f'stage_process base={templates["callbacks step 2"]} params='
        + json.dumps({"General/dataset_task_id": steps["stage_data"].id,
                      "General/test_size": 0.25}, sort_keys=True))
    assert pre["stage_skipped"].startswith(f'stage_skipped base={templates["callbacks step 2"]} ')

    # post_execute_callback(a_pipeline, a_node): a_node.executed is the step's task id
    post = {line.split(" ", 1)[0]: line for line in lines(out, "POST")}
    assert set(post) == {"stage_data", "stage_process", "summary"}
    for name in post:
        task_id = steps[name].id
        assert post[name] == f"{name} executed={task_id} job={task_id}"
    post_tasks = {line.split(" ", 1)[0]: line for line in lines(out, "POSTTASK")}
    assert post_tasks["stage_data"] == "stage_data status=completed artifacts=['dataset']"
    assert post_tasks["stage_process"] == (
        "stage_process status=completed artifacts=['X_test', 'X_train', 'y_test', 'y_train']")

    # the callback's edit of current_param_override reached the launched task
    assert params(steps["stage_process"].id)["General/test_size"] == "0.5"
    assert len(Task(steps["stage_process"].id).artifacts["X_train"].get()) == 6

    # callbacks run in order: a step's pre before its post, a child after its parent's post
    order = [line for line in out.splitlines() if line.startswith(("PRE ", "POST "))]
    assert order.index(f"PRE {pre['stage_data']}") < order.index(f"POST {post['stage_data']}")
    assert order.index(f"POST {post['stage_data']}") \
        < order.index(f"PRE {pre['stage_process']}")

    # status_change_callback(a_pipeline, a_node, previous_status)
    changes = [line for line in lines(out, "STATUS") if line.startswith("stage_data ")]
    assert len(changes) >= 2 and changes[-1].endswith("->completed"), changes

    node_lines = {line.split(" ", 1)[0]: line for line in lines(out, "NODE")}
    assert node_lines["stage_skipped"] == "stage_skipped status=skipped executed=None"
    assert node_lines["after_skipped"] == "after_skipped status=skipped executed=None"
    assert nodes(run.id)["stage_skipped"].status == "skipped"
    assert nodes(run.id)["stage_skipped"].task is None

    # a function step reading a task step's artifact through its url
    assert Task(steps["summary"].id).artifacts["summary"].get() == {"rows": 12}


# -- ClearML idioms beyond the pipeline API ------------------------------------------------------


def test_decorator_pipeline_logic_idioms(tmp_path: Path) -> None:
    proc = run_script(tmp_path, "pipeline_decorator_idioms.py")
    run = only_controller()
    assert one(proc.stdout, "PIPELINE") == run.id
    assert one(proc.stdout, "CONTROLLER") == run.id
    assert one(proc.stdout, "TOTAL") == "42"
    controller = Task(run.id)
    assert {"idioms", "lr-0.1"} <= set(controller.get_tags())
    assert controller.get_configuration_object_as_dict("train config") == {"lr": 0.1,
                                                                           "epochs": 3}


def test_controller_log_has_pipeline_logic_output(tmp_path: Path) -> None:
    run_script(tmp_path, "pipeline_from_decorator.py", "debug")
    log = Task(only_controller().id).get_log()
    assert "pipeline args: 20 mock" in log
    assert "pipeline completed with model:" in log


def test_step_script_registers_itself_with_execute_remotely(tmp_path: Path) -> None:
    # Run by hand: the task is left as a draft holding its connected arguments, and the
    # process ends at execute_remotely() without doing the work.
    proc = run_script(tmp_path, "step_execute_remotely.py")
    assert "computing" not in proc.stdout
    template = Task.get_task(project_name="compat examples", task_name="compat registered step")
    assert template.get_status() == "created"
    assert template.get_parameters() == {"General/value": "1"}
    assert list(template.artifacts) == []

    # Run as a pipeline step (a clone of the draft), the call does nothing.
    pipe = PipelineController(name="registered", project="compat examples", version="1.0.0")
    pipe.add_step(name="double", base_task_project="compat examples",
                  base_task_name="compat registered step",
                  parameter_override={"General/value": 21})
    pipe.start_locally(run_pipeline_steps_locally=True)
    assert pipe.is_successful()
    [step] = get_store().find_tasks(parent=pipe.id)
    assert Task(step.id).artifacts["doubled"].get() == 42


def test_clearml_automation_import_paths() -> None:
    import pipekit

    automation = importlib.import_module("pipekit.automation")
    controller = importlib.import_module("pipekit.automation.controller")
    assert automation.PipelineController is pipekit.PipelineController
    assert controller.PipelineController is pipekit.PipelineController
    assert controller.PipelineDecorator is pipekit.PipelineDecorator
