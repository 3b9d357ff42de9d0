"""The Task API end to end: ``Task.init``'s lifecycle in real interpreters, parameters and
their overrides, artifacts, models, metrics, drafts, clones, queues and statuses.

``Task.init`` patches ``sys.exit``, ``sys.excepthook``, SIGTERM and ``argparse`` in the
process that calls it, so every test of it runs a script in a fresh interpreter
(``run_py``) and then inspects the store from here.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pytest

from pipekit import Logger, Task
from pipekit.errors import (
    ArtifactNotFound,
    InvalidName,
    ParameterError,
    PipekitError,
    QueueNotFound,
    TaskNotFound,
    TaskStateError,
    TaskStatusError,
    TaskTimeout,
)
from pipekit.hashing import digest_bytes, digest_file
from pipekit.store import get_store
from pipekit.worker import run_task

PRELUDE = """\
import json, os, sys
from pipekit import Task
task = Task.init("proj", "script-task")
print("TASK_ID", task.id, flush=True)
"""


def init_script(body: str) -> str:
    """A script that calls ``Task.init`` and prints its id, then runs ``body``."""
    return PRELUDE + textwrap.dedent(body)


def task_of(proc: subprocess.CompletedProcess) -> Task:
    """The task whose id the script printed."""
    for line in proc.stdout.splitlines():
        if line.startswith("TASK_ID "):
            return Task(line.split()[1])
    raise AssertionError(f"no TASK_ID line in output:\n{proc.stdout}\n{proc.stderr}")


def write_script(folder: Path, body: str, name: str = "script.py") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(body))
    return path


@pytest.fixture
def draft(tmp_path: Path) -> Task:
    """A plain draft task (its script only prints), for in-process API tests."""
    script = write_script(tmp_path / "draft", "print('draft ran')\n")
    return Task.create(project_name="proj", task_name="draft", script=str(script))


@pytest.fixture
def executing(draft: Task, monkeypatch: pytest.MonkeyPatch) -> Task:
    """``draft`` as seen by a process launched to execute it (``PIPEKIT_TASK_ID`` set)."""
    monkeypatch.setenv("PIPEKIT_TASK_ID", draft.id)
    task = Task.current_task()
    assert task == draft
    return task


# -- Task.init: what is recorded, and the one final status --------------------------------------


def test_init_records_the_script_and_completes_at_normal_exit(run_py, tmp_path):
    proc = run_py(init_script("""
        print("hello on stdout")
        print("hello on stderr", file=sys.stderr)
        print("SCRIPT", os.path.abspath(__file__))
    """), "first", "--second=2")
    task = task_of(proc)
    info = task.data
    script = Path(next(line.split(" ", 1)[1] for line in proc.stdout.splitlines()
                       if line.startswith("SCRIPT ")))
    assert info.status == "completed"
    assert info.status_reason == ""
    assert (info.project, info.name, info.type) == ("proj", "script-task", "training")
    assert info.script["path"] == str(script)
    assert info.script["digest"] == digest_file(script) == info.code_digest
    assert info.script["argv"] == ["first", "--second=2"]
    assert info.script["working_dir"] == str(tmp_path.resolve())
    assert info.started is not None and info.ended is not None
    assert info.started <= info.ended
    assert info.worker
    # Output is teed: still on the console, and in the task's log.
    assert "hello on stdout" in proc.stdout and "hello on stderr" in proc.stderr
    log = task.get_log()
    assert "hello on stdout" in log and "hello on stderr" in log
    assert task.data.log_size == len(log.encode())


def test_uncaught_exception_fails_the_task_with_the_traceback_in_its_log(run_py):
    proc = run_py(init_script("""
        def inner():
            raise ValueError("boom 42")
        inner()
    """), check=False)
    assert proc.returncode == 1  # the exit code Python gives an uncaught exception
    task = task_of(proc)
    assert task.get_status() == "failed"
    assert task.data.status_reason == "ValueError: boom 42"
    log = task.get_log()
    assert log.count("Traceback (most recent call last)") == 1
    assert "in inner" in log and "ValueError: boom 42" in log
    assert "ValueError: boom 42" in proc.stderr  # still printed as usual


@pytest.mark.parametrize(("call", "code", "status", "reason"), [
    ("sys.exit(0)", 0, "completed", ""),
    ("sys.exit()", 0, "completed", ""),
    ("sys.exit(3)", 3, "failed", "exit code 3"),
    ("sys.exit('bye')", 1, "failed", "exit code 1"),
    ("exit(4)", 4, "failed", "exit code 4"),  # site's exit() bypasses sys.exit
])
def test_the_exit_code_decides_the_status_and_is_preserved(run_py, call, code, status,
                                                           reason):
    proc = run_py(init_script(f"""
        {call}
        print("not reached")
    """), check=False)
    assert proc.returncode == code
    task = task_of(proc)
    assert task.get_status() == status
    assert task.data.status_reason == reason
    assert "not reached" not in task.get_log()


def test_keyboard_interrupt_stops_the_task(run_py):
    proc = run_py(init_script("raise KeyboardInterrupt\n"), check=False)
    assert proc.returncode != 0
    task = task_of(proc)
    assert task.get_status() == "stopped"
    assert "KeyboardInterrupt" in task.data.status_reason


def test_sigterm_stops_the_task(tmp_path):
    script = write_script(tmp_path, init_script("""
        import time
        print("READY", flush=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            time.sleep(0.01)
        print("not reached")
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        task_line = proc.stdout.readline()
        assert proc.stdout.readline().strip() == "READY"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    task = Task(task_line.split()[1])
    assert task.get_status() == "stopped"
    assert task.data.status_reason == "terminated by signal 15"
    assert "not reached" not in task.get_log()


def test_init_with_pipekit_task_id_returns_that_task(run_py, draft):
    proc = run_py("""
        from pipekit import Task
        task = Task.init("another project", "another name")
        assert Task.init() is task and Task.current_task() is task
        print("TASK_ID", task.id)
        print("executing the draft")
    """, env={"PIPEKIT_TASK_ID": draft.id})
    assert task_of(proc) == draft
    assert [t.id for t in Task.get_tasks()] == [draft.id]  # no new task was made
    assert draft.get_status() == "completed"
    assert (draft.name, draft.project) == ("draft", "proj")
    assert "executing the draft" in draft.get_log()


# -- connect: fresh runs store, executions override --------------------------------------------


def test_connect_stores_dict_namespace_and_object_with_their_types(draft):
    class Config:
        def __init__(self) -> None:
            self.batch = 32
            self.dropout = 0.25
            self._private = "hidden"

        def method(self) -> None:  # pragma: no cover - never called
            pass

    cfg = {"lr": 0.1, "epochs": 3, "flag": True, "name": "adam", "layers": [64, 32],
           "opt": {"beta": 0.9, "eps": {"value": 1}}}
    assert draft.connect(cfg) is cfg
    draft.connect(argparse.Namespace(seed=7, out="x.txt"))
    obj = Config()
    assert draft.connect(obj, name="Model") is obj

    params = get_store().get_parameters(draft.id)
    stored = {key: (p.value, p.type) for key, p in params.items()}
    assert stored == {
        "General/lr": ("0.1", "float"), "General/epochs": ("3", "int"),
        "General/flag": ("True", "bool"), "General/name": ("adam", "str"),
        "General/layers": ("[64, 32]", "list"), "General/opt/beta": ("0.9", "float"),
        "General/opt/eps/value": ("1", "int"),
        "Args/seed": ("7", "int"), "Args/out": ("x.txt", "str"),
        "Model/batch": ("32", "int"), "Model/dropout": ("0.25", "float"),
    }
    # A fresh run leaves the connected values alone.
    assert cfg["lr"] == 0.1 and obj.batch == 32


def test_connect_rejects_values_that_are_not_containers(draft):
    with pytest.raises(ParameterError, match="list"):
        draft.connect([1, 2])


ORIGINAL = {"epochs": 1, "lr": 0.5, "flag": False, "name": "a", "layers": [1],
            "nested": {"inner": {"k": 2}, "keep": "same"}}
STORED = {"General/epochs": "7", "General/lr": "2.5", "General/flag": "true",
          "General/name": "b", "General/layers": "[3, 4]", "General/nested/inner/k": "9"}
EXPECTED = {"epochs": 7, "lr": 2.5, "flag": True, "name": "b", "layers": [3, 4],
            "nested": {"inner": {"k": 9}, "keep": "same"}}


def _assert_same_typed(actual: object, expected: object) -> None:
    assert actual == expected
    assert type(actual) is type(expected)
    if isinstance(expected, dict):
        for key in expected:
            _assert_same_typed(actual[key], expected[key])  # type: ignore[index]


def test_executing_task_overrides_a_dict_in_place_cast_to_original_types(executing):
    executing.set_parameters(STORED)
    cfg = json.loads(json.dumps(ORIGINAL))
    nested = cfg["nested"]
    assert executing.connect(cfg) is cfg
    _assert_same_typed(cfg, EXPECTED)
    assert cfg["nested"] is nested  # nested dicts are updated in place too
    # Keys the stored task lacked are added, stored ones kept as they were.
    assert executing.get_parameters()["General/nested/keep"] == "same"
    assert executing.get_parameters()["General/lr"] == "2.5"


def test_executing_task_overrides_namespace_and_object_attributes(executing):
    executing.set_parameters({"Args/epochs": "4", "Args/lr": "0.01", "Obj/verbose": "yes",
                              "Obj/tags": "['x', 'y']"})
    ns = argparse.Namespace(epochs=1, lr=0.1, untouched="u")
    executing.connect(ns)
    assert (ns.epochs, ns.lr, ns.untouched) == (4, 0.01, "u")
    assert type(ns.epochs) is int and type(ns.lr) is float

    class Obj:
        verbose = False
        tags: list = []

    obj = Obj()
    executing.connect(obj, name="Obj")
    assert obj.verbose is True and obj.tags == ["x", "y"]


def test_executing_task_rejects_a_stored_value_of_the_wrong_type(executing):
    executing.set_parameter("General/epochs", "abc")
    with pytest.raises(ParameterError, match="General/epochs") as info:
        executing.connect({"epochs": 3})
    assert "'abc'" in str(info.value) and "int" in str(info.value)
    assert info.value.parameter == "General/epochs"


CONNECT_SCRIPT = """
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--flag", action="store_true")
    args = parser.parse_args()
    cfg = {"batch": 16, "ratio": 0.5, "shuffle": True, "opt": "sgd", "layers": [8, 4],
           "sched": {"gamma": 0.9, "steps": [10]}}
    task.connect(cfg, name="Config")
    seen = {k: [v, type(v).__name__] for k, v in vars(args).items()}
    seen.update({k: [v, type(v).__name__] for k, v in cfg.items()})
    task.upload_artifact("seen", seen)
"""


def test_a_clone_run_by_the_worker_sees_its_overridden_parameters(run_py):
    source = task_of(run_py(init_script(CONNECT_SCRIPT), "--epochs", "5"))
    assert source.get_parameters() == {
        "Args/epochs": "5", "Args/lr": "0.1", "Args/flag": "False",
        "Config/batch": "16", "Config/ratio": "0.5", "Config/shuffle": "True",
        "Config/opt": "sgd", "Config/layers": "[8, 4]", "Config/sched/gamma": "0.9",
        "Config/sched/steps": "[10]",
    }
    assert source.artifacts["seen"].get()["epochs"] == [5, "int"]

    clone = Task.clone(source)
    clone.set_parameters({"Args/epochs": "8", "Args/flag": "True", "Args/lr": "1e-3",
                          "Config/batch": "64", "Config/ratio": "0.125",
                          "Config/shuffle": "False", "Config/opt": "adam",
                          "Config/layers": "[1, 2, 3]", "Config/sched/gamma": "0.5",
                          "Config/sched/steps": "[20, 30]"})
    info = run_task(clone.id)
    assert info.status == "completed", clone.get_log()
    assert clone.artifacts["seen"].get() == {
        "epochs": [8, "int"], "lr": [0.001, "float"], "flag": [True, "bool"],
        "batch": [64, "int"], "ratio": [0.125, "float"], "shuffle": [False, "bool"],
        "opt": ["adam", "str"], "layers": [[1, 2, 3], "list"],
        "sched": [{"gamma": 0.5, "steps": [20, 30]}, "dict"],
    }
    # The source is untouched by its clone's overrides.
    assert source.get_parameters()["Args/epochs"] == "5"
    assert source.artifacts["seen"].get()["epochs"] == [5, "int"]


def test_a_bad_stored_value_fails_the_task_naming_the_parameter(run_py):
    source = task_of(run_py(init_script(CONNECT_SCRIPT)))
    clone = Task.clone(source)
    clone.set_parameter("Args/epochs", "abc")
    info = run_task(clone.id)
    assert info.status == "failed"
    assert "Args/epochs" in info.status_reason and "'abc'" in info.status_reason
    assert "ParameterError" in clone.get_log()


REQUIRED_SCRIPT = """
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("count", type=int)
    args = parser.parse_args()
    task.upload_artifact("seen", [args.name, args.count])
"""


def test_stored_args_reach_the_script_including_required_ones(tmp_path):
    script = write_script(tmp_path / "code", init_script(REQUIRED_SCRIPT))
    task = Task.create(project_name="proj", task_name="req", script=str(script),
                       argparse_args=[("name", "from-store"), ("count", 7)])
    assert task.get_status() == "created"
    assert task.get_parameters() == {"Args/name": "from-store", "Args/count": "7"}
    info = run_task(task.id)
    assert info.status == "completed", task.get_log()
    assert task.artifacts["seen"].get() == ["from-store", 7]
    # A clone's changed Args reach the script the same way.
    clone = Task.clone(task)
    clone.set_parameters({"Args/name": "cloned", "Args/count": "8"})
    assert run_task(clone.id).status == "completed", clone.get_log()
    assert clone.artifacts["seen"].get() == ["cloned", 8]


def test_a_bad_stored_value_for_a_required_argument_names_the_parameter(tmp_path):
    script = write_script(tmp_path / "code", init_script(REQUIRED_SCRIPT))
    task = Task.create(project_name="proj", task_name="req", script=str(script),
                       argparse_args=[("name", "n"), ("count", "abc")])
    info = run_task(task.id)
    assert info.status == "failed"
    assert "Args/count" in info.status_reason and "'abc'" in info.status_reason


def test_connect_configuration_dict_is_stored_then_overridden(draft, monkeypatch):
    config = {"model": {"depth": 3}, "name": "resnet"}
    assert draft.connect_configuration(config, name="net") is config
    assert draft.get_configuration_object_as_dict("net") == config
    assert json.loads(draft.get_configuration_object("net")) == config

    clone = Task.clone(draft)
    get_store().set_configuration(clone.id, "net", json.dumps({"model": {"depth": 50}}),
                                  "json")
    monkeypatch.setenv("PIPEKIT_TASK_ID", clone.id)
    executing = Task.current_task()
    mine = {"model": {"depth": 3}, "name": "resnet"}
    assert executing.connect_configuration(mine, name="net") is mine
    assert mine == {"model": {"depth": 50}}
    assert draft.get_configuration_object_as_dict("net") == config  # source untouched


def test_connect_configuration_file_is_stored_then_served_from_the_store(draft, tmp_path,
                                                                         monkeypatch):
    path = tmp_path / "train.yaml"
    path.write_text("lr: 0.1\n")
    assert draft.connect_configuration(str(path), name="yaml") == str(path)
    assert draft.get_configuration_object("yaml") == "lr: 0.1\n"

    clone = Task.clone(draft)
    get_store().set_configuration(clone.id, "yaml", "lr: 0.5\n", "text")
    monkeypatch.setenv("PIPEKIT_TASK_ID", clone.id)
    served = Task.current_task().connect_configuration(path, name="yaml")
    assert isinstance(served, Path) and served != path
    assert served.read_text() == "lr: 0.5\n"
    assert path.read_text() == "lr: 0.1\n"  # the user's file is never rewritten


def test_connect_configuration_of_a_missing_file_names_it(draft, tmp_path):
    with pytest.raises(ParameterError, match="nope.yaml"):
        draft.connect_configuration(str(tmp_path / "nope.yaml"), name="cfg")


# -- parameters ---------------------------------------------------------------------------------


def test_set_and_get_parameters(draft):
    draft.set_parameter("Args/lr", 0.5, description="learning rate")
    draft.set_parameter("bare", 1)
    draft.set_parameters({"Data/path": "/tmp/x", "Data/shuffle": True},
                         **{"Data/split": [0.8, 0.2]})
    assert draft.get_parameters() == {
        "Args/lr": "0.5", "General/bare": "1", "Data/path": "/tmp/x", "Data/shuffle": "True",
        "Data/split": "[0.8, 0.2]",
    }
    assert draft.get_parameters(cast=True) == {
        "Args/lr": 0.5, "General/bare": 1, "Data/path": "/tmp/x", "Data/shuffle": True,
        "Data/split": [0.8, 0.2],
    }
    assert draft.get_parameters_as_dict() == {
        "Args": {"lr": "0.5"}, "General": {"bare": "1"},
        "Data": {"path": "/tmp/x", "shuffle": "True", "split": "[0.8, 0.2]"},
    }
    assert draft.get_parameters_as_dict(cast=True)["Data"]["shuffle"] is True
    assert draft.get_parameter("Args/lr", cast=True) == 0.5
    assert draft.get_parameter("Args/missing", default="d") == "d"
    assert get_store().get_parameters(draft.id)["Args/lr"].description == "learning rate"
    draft.set_parameter("Args/lr", 0.25)  # replaces
    assert draft.get_parameters()["Args/lr"] == "0.25"


@pytest.mark.parametrize("bad", ["/x", "a/", "a//b", "a/b//c", "a/b/", "", "   "])
def test_malformed_parameter_names_are_rejected_naming_the_value(draft, bad):
    with pytest.raises(ParameterError) as info:
        draft.set_parameter(bad, 1)
    assert repr(bad) in str(info.value)
    assert info.value.parameter == bad
    with pytest.raises(ParameterError, match="Section/key"):
        draft.set_parameters({"Good/one": 1, bad: 2})
    assert draft.get_parameters() == {}  # nothing half-written


# -- artifacts and models -----------------------------------------------------------------------


def test_upload_artifact_and_its_attributes(draft):
    value = {"rows": [1, 2, 3], "label": "train"}
    assert draft.upload_artifact("data", value, metadata={"source": "unit test"}) is True
    art = draft.artifacts["data"]
    assert art.name == "data"
    assert art.get() == value
    assert art.type == "json"
    assert art.value_type == "dict"
    assert art.metadata == {"source": "unit test"}
    assert "train" in art.preview
    local = Path(art.get_local_copy())
    content = local.read_bytes()
    assert json.loads(content) == value
    assert art.size == len(content)
    assert art.digest == digest_bytes(content)
    assert art.url.startswith("file://")
    assert digest_file(url2pathname(urlparse(art.url).path)) == art.digest
    assert list(draft.artifacts) == ["data"] and len(draft.artifacts) == 1


def test_upload_artifact_replaces_and_stores_files_as_paths(draft, tmp_path):
    draft.upload_artifact("data", [1])
    draft.upload_artifact("data", [2])
    assert draft.artifacts["data"].get() == [2]
    src = tmp_path / "table.csv"
    src.write_text("a,b\n1,2\n")
    draft.upload_artifact("table", src)
    art = draft.artifacts["table"]
    assert art.type == "file"
    got = Path(art.get())
    assert got != src and got.name == "table.csv" and got.read_text() == "a,b\n1,2\n"


def test_artifact_errors(draft):
    with pytest.raises(ArtifactNotFound, match="missing"):
        draft.artifacts["missing"]
    with pytest.raises(KeyError):  # a Mapping: .get() and `in` work
        draft.artifacts["missing"]
    assert "missing" not in draft.artifacts
    for bad in ("../x", "a/b", ".hidden", ""):
        with pytest.raises(InvalidName, match="invalid artifact name"):
            draft.upload_artifact(bad, 1)
    assert len(draft.artifacts) == 0


def test_upload_model_and_models_output(draft, tmp_path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\x00\x01weights")
    first = draft.upload_model("net", str(weights), framework="pytorch")
    second = draft.upload_model("head", {"w": [1.0]})
    models = draft.models
    assert models["input"] == []
    assert [m.id for m in models["output"]] == [first.id, second.id]
    net = models["output"][0]
    assert (net.name, net.framework, net.task) == ("net", "pytorch", draft.id)
    assert Path(net.get_local_copy()).read_bytes() == b"\x00\x01weights"
    assert net.url.startswith("file://")
    assert models["output"][1].get() == {"w": [1.0]}
    with pytest.raises(InvalidName, match="model"):
        draft.upload_model("../net", str(weights))


# -- metrics and logs ---------------------------------------------------------------------------


def test_logger_scalars_last_min_max_and_series(draft, store):
    logger = draft.get_logger()
    assert draft.get_logger() is logger
    # Reported out of order: "last" is the value at the highest iteration.
    for iteration, value in [(0, 1.0), (2, 0.25), (1, 0.5)]:
        logger.report_scalar("loss", "train", value, iteration)
    logger.report_scalar("loss", "val", 2.0, 0)
    logger.report_scalar("acc", "val", 0.75, iteration=5)
    assert draft.get_last_scalar_metrics() == {
        "loss": {"train": {"last": 0.25, "min": 0.25, "max": 1.0},
                 "val": {"last": 2.0, "min": 2.0, "max": 2.0}},
        "acc": {"val": {"last": 0.75, "min": 0.75, "max": 0.75}},
    }
    assert draft.get_reported_scalars() == {
        "loss": {"train": {"x": [0, 2, 1], "y": [1.0, 0.25, 0.5]},
                 "val": {"x": [0], "y": [2.0]}},
        "acc": {"val": {"x": [5], "y": [0.75]}},
    }


def test_logger_single_values_text_and_tables(draft, store, capsys):
    logger = draft.get_logger()
    logger.report_single_value("accuracy", 0.9)
    logger.report_single_value("accuracy", 0.95)
    logger.report_text("a line of text")
    logger.report_table("results", "summary", table_plot=[["a", 1], ["b", 2]])
    assert draft.get_reported_single_values() == {"accuracy": 0.95}
    assert "a line of text" in capsys.readouterr().out
    assert "a line of text" in draft.get_log()
    assert [r.content for r in store.reports(draft.id, "text")] == ["a line of text"]
    (table,) = store.reports(draft.id, "table")
    assert (table.task, table.kind, table.title, table.series) == (
        draft.id, "table", "results", "summary")
    assert json.loads(table.content)["data"] == table.data["data"] == [["a", 1], ["b", 2]]
    with pytest.raises(ValueError):
        logger.report_table("empty", "none")


def test_logger_report_table_from_a_dataframe(draft, store):
    pd = pytest.importorskip("pandas")
    draft.get_logger().report_table("df", "s", table_plot=pd.DataFrame({"x": [1, 2]}))
    (table,) = store.reports(draft.id, "table")
    assert json.loads(table.content)["data"] == [[1], [2]]


def test_current_logger_is_the_current_tasks(executing):
    logger = Logger.current_logger()
    logger.report_scalar("t", "s", 3.0, 1)
    assert executing.get_last_scalar_metrics() == {"t": {"s": {"last": 3.0, "min": 3.0,
                                                               "max": 3.0}}}


def test_current_logger_without_a_task_is_an_error():
    assert Task.current_task() is None
    with pytest.raises(PipekitError, match="Task.init"):
        Logger.current_logger()


def test_metrics_reported_by_a_script_are_flushed_at_exit(run_py):
    proc = run_py(init_script("""
        from pipekit import Logger
        for i in range(3):
            Logger.current_logger().report_scalar("loss", "train", 1.0 / (i + 1), i)
        task.get_logger().report_single_value("score", 7)
    """))
    task = task_of(proc)
    assert task.get_reported_scalars()["loss"]["train"]["x"] == [0, 1, 2]
    assert task.get_reported_single_values() == {"score": 7.0}


# -- drafts, lookup, clones and queues ----------------------------------------------------------


def test_create_runs_the_script_in_its_working_directory(tmp_path):
    code = tmp_path.resolve() / "code"
    workdir = tmp_path.resolve() / "work"
    workdir.mkdir()
    script = write_script(code, """
        import os
        from pathlib import Path
        Path("out.txt").write_text(os.environ["PIPEKIT_TASK_ID"])
        print("running in", os.getcwd())
    """)
    task = Task.create(project_name="proj", task_name="in-dir", script=str(script),
                       working_directory=str(workdir), task_type="data_processing")
    info = task.data
    assert (info.status, info.type, info.name) == ("created", "data_processing", "in-dir")
    assert info.script["path"] == str(script) and info.script["working_dir"] == str(workdir)
    assert info.code_digest == digest_file(script)
    assert info.started is None

    done = run_task(task.id)
    assert done.status == "completed"
    assert (workdir / "out.txt").read_text() == task.id
    assert f"running in {workdir}" in task.get_log()
    assert done.started is not None and done.ended >= done.started and done.worker
    with pytest.raises(TaskStateError, match="completed"):
        run_task(task.id)  # a finished task is not run again


def test_create_relative_script_and_errors(tmp_path, monkeypatch):
    tmp_path = tmp_path.resolve()
    write_script(tmp_path / "code", "print('x')\n", name="rel.py")
    task = Task.create(script="rel.py", working_directory=str(tmp_path / "code"))
    assert task.name == "rel" and task.project == "default"
    assert task.data.script["path"] == str(tmp_path / "code" / "rel.py")
    with pytest.raises(PipekitError, match="missing.py"):
        Task.create(script=str(tmp_path / "missing.py"))


def test_create_without_a_script_is_a_draft_that_holds_what_is_reported(tmp_path):
    """ClearML's ``Task.create`` takes ``script=None`` (task.py, ``Task.create``: populated
    with ``raise_on_missing_entries=False``): a draft holding parameters, metrics, artifacts.
    """
    task = Task.create(project_name="proj", task_name="holder", argparse_args=[("lr", 0.5)])
    info = task.data
    assert (info.status, info.name, info.project, info.type) == (
        "created", "holder", "proj", "training")
    assert info.script == {} and info.code_digest is None and not info.is_function
    assert Task.create(project_name="proj").name == "untitled"

    task.set_parameters({"General/epochs": 3})
    assert task.get_parameters(cast=True) == {"Args/lr": 0.5, "General/epochs": 3}
    assert task.connect_configuration({"depth": 2}, name="model") == {"depth": 2}
    task.get_logger().report_scalar("loss", "train", 0.25, iteration=1)
    task.logger.report_single_value("acc", 0.75)
    task.upload_artifact("table", {"rows": [1, 2]})
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"\x00\x01")
    task.upload_model("net", weights)

    again = Task.get_task(task.id)
    assert again.get_configuration_object_as_dict("model") == {"depth": 2}
    assert again.get_last_scalar_metrics() == {
        "loss": {"train": {"last": 0.25, "min": 0.25, "max": 0.25}}}
    assert again.get_reported_single_values() == {"acc": 0.75}
    assert again.artifacts["table"].get() == {"rows": [1, 2]}
    assert [m.name for m in again.models["output"]] == ["net"]
    assert again.get_status() == "created"
    clone = Task.clone(again)
    assert clone.data.script == {} and clone.get_parameters()["General/epochs"] == "3"


def test_running_a_task_without_a_script_fails_it_saying_why():
    task = Task.create(project_name="proj", task_name="holder")
    done = run_task(task.id)
    assert done.status == "failed"
    assert done.status_reason.startswith("no script to run: ")
    assert "Task.create() without script=" in done.status_reason


def test_the_worker_reports_a_task_without_a_script_in_one_line(tmp_path):
    task = Task.create(project_name="proj", task_name="holder")
    proc = subprocess.run([sys.executable, "-m", "pipekit.worker", task.id],
                          capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"task {task.id} failed: {task.data.status_reason}"]
    assert "no script to run" in proc.stderr and "Traceback" not in proc.stderr
    # A task that cannot run at all (already ended): one line too, not a traceback.
    proc = subprocess.run([sys.executable, "-m", "pipekit.worker", task.id],
                          capture_output=True, text=True, env=dict(os.environ), timeout=60)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"Error: cannot run task {task.id!r}: its status is 'failed'"]


# -- running_locally and reload ---------------------------------------------------------------


def test_running_locally_is_false_only_in_a_process_launched_to_execute_a_task(
        draft, monkeypatch, run_py):
    """ClearML: ``Task.running_locally()`` is a static method, ``not running_remotely()``
    (backend_interface/task/task.py), true unless an agent (``CLEARML_TASK_ID``) runs it.
    """
    assert Task.running_locally() is True
    assert draft.running_locally() is True
    monkeypatch.setenv("PIPEKIT_TASK_ID", draft.id)
    assert Task.running_locally() is False
    monkeypatch.delenv("PIPEKIT_TASK_ID")
    # A script run by the worker (`pipekit tasks run`) is not running locally.
    script = write_script(Path(draft.data.script["path"]).parent,
                          "from pipekit import Task\nprint('LOCAL', Task.running_locally())\n",
                          name="where.py")
    task = Task.create(project_name="proj", script=str(script))
    assert run_task(task.id).status == "completed"
    assert "LOCAL False" in task.get_log()
    assert "LOCAL True" in run_py("from pipekit import Task\n"
                                  "print('LOCAL', Task.running_locally())\n").stdout


def test_reload_rereads_the_task(draft):
    other = Task.get_task(draft.id)
    other.set_parameter("Args/lr", 0.01)
    other.mark_started()
    assert draft.reload() is None
    assert draft.get_status() == "in_progress"
    assert draft.get_parameter("Args/lr") == "0.01"
    with pytest.raises(TaskNotFound):
        Task("0" * 32).reload()


def test_get_task_by_id_prefix_and_name(draft, tmp_path):
    assert Task.get_task(task_id=draft.id) == draft
    assert Task.get_task(task_id=draft.id[:10]) == draft
    script = draft.data.script["path"]
    newer = Task.create(project_name="proj", task_name="draft", script=script)
    Task.create(project_name="other", task_name="draft", script=script)
    assert Task.get_task(project_name="proj", task_name="draft") == newer
    with pytest.raises(TaskNotFound, match="'0123456789abcdef'"):
        Task.get_task(task_id="0123456789abcdef")
    with pytest.raises(TaskNotFound, match="nope"):
        Task.get_task(project_name="proj", task_name="nope")


def test_get_tasks_filters(draft):
    script = draft.data.script["path"]
    a = Task.create(project_name="p1", task_name="a", script=script, tags=["x", "y"])
    b = Task.create(project_name="p1", task_name="b", script=script, tags=["x"])
    b.mark_started()
    assert Task.get_tasks(project_name="p1") == [b, a]  # most recent first
    assert Task.get_tasks(project_name="p1", task_name="a") == [a]
    assert Task.get_tasks(tags=["x"]) == [b, a]
    assert Task.get_tasks(tags=["x", "y"]) == [a]
    assert Task.get_tasks(status="in_progress") == [b]
    assert Task.get_tasks(status=["created"], project_name="p1") == [a]
    assert Task.get_tasks(task_ids=[a.id, draft.id]) == [a, draft]


def test_clone_copies_code_parameters_and_configuration(draft):
    draft.set_parameters({"Args/lr": 0.1})
    draft.connect_configuration({"k": 1}, name="cfg")
    draft.add_tags(["t1"])
    run_task(draft.id)
    clone = Task.clone(draft)
    info = clone.data
    assert info.name == "Clone Of draft" and info.project == "proj"
    assert info.status == "created" and info.status_reason == ""
    assert info.parent == draft.id
    assert info.script == draft.data.script and info.code_digest == draft.data.code_digest
    assert clone.get_parameters() == {"Args/lr": "0.1"}
    assert clone.get_configuration_object_as_dict("cfg") == {"k": 1}
    assert clone.get_tags() == ["t1"]
    assert clone.get_log() == "" and len(clone.artifacts) == 0
    # Clones are independent of their source.
    clone.set_parameter("Args/lr", 0.2)
    assert draft.get_parameters() == {"Args/lr": "0.1"}
    # The lineage: a clone of a clone keeps the first parent unless told otherwise.
    assert Task.clone(clone).parent == draft.id
    named = Task.clone(clone.id, name="mine", project="elsewhere", parent=clone.id)
    assert (named.name, named.project, named.parent) == ("mine", "elsewhere", clone.id)
    assert run_task(clone.id).status == "completed"


def test_enqueue(draft):
    result = Task.enqueue(draft, queue_name="default")
    assert result == {"task": draft.id, "queue": "default", "status": "queued"}
    assert draft.get_status() == "queued"
    with pytest.raises(QueueNotFound) as info:
        Task.enqueue(draft.id, queue_name="gpu")
    assert "'gpu'" in str(info.value)
    assert "default" in str(info.value) and "services" in str(info.value)
    assert draft.get_status() == "queued"


def test_enqueue_of_a_completed_task_is_refused(draft):
    run_task(draft.id)
    with pytest.raises(TaskStateError, match="completed"):
        Task.enqueue(draft)
    assert draft.get_status() == "completed"
    draft.reset()
    Task.enqueue(draft)
    assert draft.get_status() == "queued"


# -- statuses -----------------------------------------------------------------------------------


def test_wait_for_status_returns_when_another_thread_finishes_the_task(draft):
    runner = threading.Thread(target=run_task, args=(draft.id,))
    runner.start()
    try:
        assert draft.wait_for_status(timeout=30) == "completed"
    finally:
        runner.join(30)
    assert draft.wait_for_status(status=["completed"]) == "completed"  # already there


def test_wait_for_status_raises_on_failure_and_timeout(draft):
    draft.mark_started()
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="in_progress"):
        draft.wait_for_status(timeout=0.1)
    assert time.monotonic() - started < 5
    draft.mark_failed(status_reason="it broke")
    with pytest.raises(TaskStatusError, match="it broke") as info:
        draft.wait_for_status(timeout=5)
    assert info.value.status == "failed"
    assert draft.wait_for_status(status=["failed"], raise_on_status=None) == "failed"


def test_mark_transitions_allow_exactly_one_final_status(draft):
    assert draft.get_status() == "created"
    draft.mark_started()
    assert draft.get_status() == "in_progress" and draft.data.worker
    draft.mark_completed()
    ended = draft.data.ended
    assert draft.get_status() == "completed" and ended is not None
    for mark in (draft.mark_failed, draft.mark_stopped, draft.mark_started):
        with pytest.raises(TaskStateError, match="'completed'"):
            mark()
    assert draft.get_status() == "completed" and draft.data.ended == ended
    draft.mark_completed()  # already there: not an error
    draft.publish()
    assert draft.get_status() == "published"
    with pytest.raises(TaskStateError):
        draft.reset()  # published is frozen
    draft.mark_failed(status_reason="forced", force=True)
    assert (draft.get_status(), draft.data.status_reason) == ("failed", "forced")


def test_racing_finishers_leave_exactly_one_final_status(draft, store):
    draft.mark_started()
    finals = ["completed", "failed", "stopped"] * 4
    barrier = threading.Barrier(len(finals))
    results: dict[int, bool] = {}

    def finish(i: int, status: str) -> None:
        barrier.wait()
        results[i] = store.set_status(draft.id, status, reason=f"finisher {i}")

    threads = [threading.Thread(target=finish, args=(i, s)) for i, s in enumerate(finals)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [i for i, moved in results.items() if moved]
    assert len(results) == len(finals) and len(winners) == 1
    (winner,) = winners
    assert draft.get_status() == finals[winner]
    if finals[winner] != "completed":
        assert draft.data.status_reason == f"finisher {winner}"


def test_archive_and_tags(draft):
    assert draft.get_archived() is False
    draft.set_archived(True)
    assert draft.get_archived() is True
    assert Task.get_tasks(project_name="proj") == [draft]
    with pytest.raises(TaskNotFound):
        Task.get_task(project_name="proj", task_name="draft", include_archived=False)
    draft.set_archived(False)
    draft.add_tags(["a", "b"])
    draft.add_tags("a")
    draft.add_tags(["c"])
    assert draft.get_tags() == ["a", "b", "c"]


# -- the worker owns the final status -------------------------------------------------------------


def _worker_run(tmp_path: Path, body: str) -> Task:
    script = write_script(tmp_path / "code", body)
    task = Task.create(project_name="proj", task_name="worker", script=str(script))
    run_task(task.id)
    return task


def test_worker_records_a_child_killed_by_a_signal(tmp_path):
    task = _worker_run(tmp_path, """
        import os
        print("about to die", flush=True)
        os.kill(os.getpid(), 9)
    """)
    info = task.data
    assert info.status == "failed"
    assert info.status_reason == "killed by signal 9"
    assert "about to die" in task.get_log()
    assert info.ended is not None


def test_worker_records_a_child_exception_once_with_its_traceback(tmp_path):
    task = _worker_run(tmp_path, init_script("raise RuntimeError('child broke')\n"))
    info = task.data
    assert info.status == "failed"
    assert info.status_reason == "RuntimeError: child broke (script.py:5)"  # where it raised
    log = task.get_log()
    assert log.count("Traceback (most recent call last)") == 1
    assert "RuntimeError: child broke" in log


def test_worker_records_a_child_exit_code(tmp_path):
    task = _worker_run(tmp_path, init_script("sys.exit(3)\n"))
    assert (task.get_status(), task.data.status_reason) == ("failed", "exit code 3")


def test_worker_child_sees_its_task_and_store(tmp_path):
    task = _worker_run(tmp_path, init_script("""
        task.get_logger().report_scalar("m", "s", 1.5, 0)
        task.upload_artifact("env", [os.environ["PIPEKIT_TASK_ID"], os.environ["PIPEKIT_HOME"]])
    """))
    assert task.get_status() == "completed"
    assert task.get_last_scalar_metrics()["m"]["s"]["last"] == 1.5
    assert task.artifacts["env"].get() == [task.id, os.environ["PIPEKIT_HOME"]]
