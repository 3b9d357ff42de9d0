"""Issue 11 acceptance: ClearML's own ``examples/pipeline`` scripts complete on pipekit.

``tests/clearml_examples/`` holds each of them as in ClearML (each file's docstring says what
differs: the dataset URL, and NumPy stand-ins where ClearML uses scikit-learn or joblib, which
are not installed here). Every script runs in three setups:

``pipekit-run``
    its ``clearml`` imports changed to ``pipekit``, under ``pipekit run SCRIPT``: the script is
    the run's controller, and agents ``pipekit run`` starts serve the queues its steps use;
``python-agents``
    its imports changed, as ``python SCRIPT``, with ``pipekit agent`` processes this test
    starts for the queues the script uses (ClearML's remote default: the controller on
    ``services``, the steps on ``default``): ``pipe.start()`` enqueues the controller and
    returns, and the test waits for the run to finish;
``unmodified``
    the file exactly as it is (``from clearml import ...``), under ``pipekit run``, which makes
    ``clearml`` resolve to pipekit (the real clearml is not installed).

pipeline_from_tasks.py first needs its three template tasks: as in ClearML, step1..3 are run
once with ``python`` (each stops at ``execute_remotely()``, leaving a draft), in ``unmodified``
with the environment of the clearml alias (``pipekit.alias.clearml_env()``, what
``pipekit.install_as_clearml()`` gives child processes). Not ``pipekit run``: it runs a
``Task.init`` script as its run's task, so ``execute_remotely()`` does nothing there.

The scripts' dataset (ClearML downloads an iris pickle from github) comes from a loopback HTTP
server this module starts; nothing here uses the network. The test then reads the store: the
run, each step's task, where it ran, its parameters, artifacts and log.
"""

from __future__ import annotations

import functools
import http.server
import importlib.util
import os
import pickle
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import numpy as np
import pandas as pd
import pytest

from pipekit import Task
from pipekit.alias import clearml_env
from pipekit.config import get_settings
from pipekit.models import AgentInfo, TaskInfo
from pipekit.store import get_store
from pipekit.testing import wait_until

EXAMPLES = Path(__file__).resolve().parent / "clearml_examples"
PIPEKIT = str(Path(sys.executable).with_name("pipekit"))
URL_ENV = "PIPEKIT_TEST_IRIS_URL"  # where the example scripts read the dataset's URL from
SETUPS = ["pipekit-run", "python-agents", "unmodified"]
TEMPLATES = ["step1_dataset_artifact.py", "step2_data_processing.py", "step3_train_model.py"]
TIMEOUT = 120  # for one script, and for an enqueued run to finish

pytestmark = pytest.mark.timeout(300)

# -- the dataset, served on loopback -------------------------------------------------------------

FEATURES = ["sepal length (cm)", "sepal width (cm)", "petal length (cm)", "petal width (cm)"]
#: the three iris species' mean measurements; each flower is one of them plus a little noise
CENTERS = np.array([[5.0, 3.4, 1.5, 0.2], [5.9, 2.8, 4.3, 1.3], [6.6, 3.0, 5.6, 2.0]])
TARGET = np.repeat(np.arange(3), 50)
DATA = np.round(CENTERS[TARGET] + np.random.RandomState(0).uniform(-0.2, 0.2, (150, 4)), 1)


def iris_standin() -> pd.Series:
    """What ClearML's iris_dataset.pkl holds, without scikit-learn.

    The real file is sklearn's ``Bunch`` (a dict whose keys are attributes too), which cannot be
    unpickled without sklearn. A pandas Series of objects has the same keys, and the same two
    ways to read them: ``iris['data']`` (pipeline_from_functions) and ``iris.data`` (step 2).
    150 flowers of 3 well-separated species, so every classifier here scores 1.0.
    """
    return pd.Series({"data": DATA, "target": TARGET, "feature_names": FEATURES,
                      "target_names": np.array(["setosa", "versicolor", "virginica"])},
                     dtype=object)


def split(n_test: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) of sklearn's ``train_test_split(random_state=42)``, which
    the examples' steps call (here through their NumPy stand-in)."""
    permutation = np.random.RandomState(42).permutation(len(TARGET))
    return permutation[n_test:], permutation[:n_test]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def iris_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A loopback HTTP server (port 0) serving ``iris_dataset.pkl``; yields its URL."""
    root = tmp_path_factory.mktemp("www")
    (root / "iris_dataset.pkl").write_bytes(pickle.dumps(iris_standin()))
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/iris_dataset.pkl"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def iris_url(iris_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(URL_ENV, iris_server)
    return iris_server


# -- running an example in one of the setups -----------------------------------------------------

_IMPORT = re.compile(r"^(\s*(?:from|import) )clearml\b", re.MULTILINE)


def with_pipekit_imports(source: Path, folder: Path) -> Path:
    """``source`` copied into ``folder`` with its ``clearml`` imports made ``pipekit`` ones
    (``from clearml.automation import X`` becomes ``from pipekit.automation import X``)."""
    text, count = _IMPORT.subn(r"\1pipekit", source.read_text())
    assert count and not re.search(r"^\s*(from|import) clearml", text, re.MULTILINE)
    folder.mkdir(exist_ok=True)
    target = folder / source.name
    target.write_text(text)
    return target


def run_all(commands: list[list[str]], cwd: Path, env: dict[str, str] | None = None
            ) -> list[subprocess.CompletedProcess[str]]:
    """Run ``commands`` at once from ``cwd``; each must exit 0."""
    procs = [subprocess.Popen(c, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **(env or {})}) for c in commands]
    done = []
    try:
        for command, proc in zip(commands, procs, strict=True):
            out, err = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, (f"{' '.join(command)} exited {proc.returncode}\n"
                                          f"--- stdout\n{out}\n--- stderr\n{err}")
            done.append(subprocess.CompletedProcess(command, 0, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done


def run(*command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    [proc] = run_all([list(command)], cwd)
    return proc


@attrs.frozen
class Ran:
    """One example run: the controller task and its step tasks (by node name) as stored."""

    setup: str
    controller: TaskInfo
    steps: dict[str, TaskInfo]
    agents: dict[str, AgentInfo]  # the agents this test started, by queue ("python-agents")
    stdout: str

    def task(self, step: str) -> Task:
        return Task(self.steps[step].id)

    def log(self) -> str:
        """The controller's log, or what the script printed where it ran the pipeline."""
        return Task(self.controller.id).get_log() + self.stdout


def run_example(name: str, setup: str, tmp_path: Path, start_agent: Callable,
                queues: tuple[str, ...] = ()) -> Ran:
    """Run ``tests/clearml_examples/<name>`` in ``setup`` from ``tmp_path``: its templates
    first for pipeline_from_tasks; for ``python-agents`` an agent on each of ``queues``."""
    unmodified = setup == "unmodified"
    scripts = tmp_path / "scripts"

    def script(file: str) -> str:
        return str(EXAMPLES / file if unmodified else with_pipekit_imports(EXAMPLES / file,
                                                                           scripts))

    if name == "pipeline_from_tasks.py":
        # registering a template is running its script once, up to execute_remotely(): as in
        # ClearML with `python`, given the clearml alias when its imports are clearml's (the
        # three at once, to save time; the order does not matter)
        alias = clearml_env() if unmodified else {}
        run_all([[sys.executable, script(t)] for t in TEMPLATES], cwd=tmp_path, env=alias)

    started: dict[str, AgentInfo] = {}
    if setup == "python-agents":
        procs = {q: start_agent("--queue", q, "--create-queue") for q in queues}
        proc = run(sys.executable, script(name), cwd=tmp_path)
        if queues:  # pipe.start() enqueued the controller and returned
            assert "enqueued on 'services' as run" in proc.stdout, proc.stdout
            run_id = proc.stdout.split(" as run ")[1].split(":")[0]
            wait_until(lambda: get_store().get_task(run_id).status
                       in ("completed", "failed", "stopped"), TIMEOUT, f"run {run_id} to end")
        agents = {a.pid: a for a in get_store().list_agents(include_gone=True)}
        started = {q: agents[p.pid] for q, p in procs.items()}
    else:
        proc = run(PIPEKIT, "run", script(name), cwd=tmp_path)

    [summary] = get_store().list_runs()
    controller = get_store().get_task(summary.id)
    assert controller.status == "completed", (controller.status_reason,
                                              Task(controller.id).get_log())
    if setup != "python-agents":
        assert proc.stdout.split()[:2] == ["run", controller.id]
    steps = {n.name: get_store().get_task(n.task) for n in get_store().list_nodes(controller.id)}
    for step in steps.values():
        assert step.status == "completed", (step.name, step.status_reason,
                                            Task(step.id).get_log())
        assert step.parent == controller.id
    return Ran(setup, controller, steps, started, proc.stdout)


def assert_ran_on_queues(ran: Ran) -> None:
    """Where a remote-default script ran: its steps on an agent serving ``default``; its
    controller on the ``services`` agent when enqueued by ``python SCRIPT``, else in the
    script's own process (``pipekit run`` makes the script the run)."""
    host_pid = "{0.host}:{0.pid}".format
    if ran.setup == "python-agents":
        assert ran.controller.worker == host_pid(ran.agents["services"])
        assert {s.worker for s in ran.steps.values()} == {host_pid(ran.agents["default"])}
        return
    # `pipekit run` started one agent for 'default' (nobody served it) and stopped it after
    found = get_store().list_agents(include_gone=True)
    assert len(found) == 1, found
    agent = found[0]
    assert agent.queues == ("default",) and agent.state == "stopped"
    assert {s.worker for s in ran.steps.values()} == {host_pid(agent)}
    assert ran.controller.worker != host_pid(agent)


def assert_ran_locally(ran: Ran) -> None:
    """Where a run_locally() / start_locally() script ran: no queue, no agent; each step in a
    process of its own, not the controller's."""
    assert get_store().list_agents(include_gone=True) == []
    workers = [s.worker for s in ran.steps.values()]
    assert None not in workers and ran.controller.worker not in workers
    assert len(set(workers)) == len(workers)


def assert_setup(ran: Ran, name: str) -> None:
    """In ``unmodified``, the script imported ``clearml`` and got pipekit: the real clearml
    is not installed, and the only ``clearml`` the script could import is pipekit's stand-in
    (``pipekit.install_as_clearml``) under this store's cache."""
    source = (EXAMPLES / name).read_text()
    assert re.search(r"^from clearml(\.automation(\.controller)?)? import ", source, re.M)
    if ran.setup != "unmodified":
        return
    assert importlib.util.find_spec("clearml") is None
    shim = get_settings().cache_dir / "clearml-alias" / "clearml" / "__init__.py"
    assert "from pipekit import *" in shim.read_text()


# -- the examples --------------------------------------------------------------------------------


@pytest.mark.parametrize("setup", SETUPS)
def test_pipeline_from_tasks(setup: str, tmp_path: Path, iris_url: str, agents) -> None:
    ran = run_example("pipeline_from_tasks.py", setup, tmp_path, agents, ("services", "default"))
    assert_setup(ran, "pipeline_from_tasks.py")
    assert_ran_on_queues(ran)
    store = get_store()
    assert (ran.controller.project, ran.controller.name) == ("examples", "Pipeline demo")
    assert store.get_run(ran.controller.id).version == "0.0.1"
    assert Task(ran.controller.id).get_parameters() == {"Args/url": iris_url}
    assert set(ran.steps) == {"stage_data", "stage_process", "stage_train"}

    # each step is a clone of its template, which the template scripts left as drafts
    templates = {t.name: t for t in store.find_tasks(project="examples", status=["created"])}
    assert set(templates) == {"Pipeline step 1 dataset artifact",
                              "Pipeline step 2 process dataset", "Pipeline step 3 train model"}
    for step, template in zip(["stage_data", "stage_process", "stage_train"], sorted(templates),
                              strict=True):
        assert ran.steps[step].code_digest == templates[template].code_digest
    data, process, train = (ran.task(s) for s in ("stage_data", "stage_process", "stage_train"))

    # stage_data downloaded the dataset from the loopback server and uploaded the file
    assert data.get_parameters() == {"General/dataset_url": iris_url}
    with open(data.artifacts["dataset"].get(), "rb") as f:
        pd.testing.assert_series_equal(pickle.load(f), iris_standin())

    # stage_process read it through ${stage_data.artifacts.dataset.url}, split with
    # test_size=0.25 (the override) and random_state=42 (its own default)
    assert process.get_parameters() == {
        "General/dataset_task_id": "", "General/dataset_url": data.artifacts["dataset"].url,
        "General/random_state": "42", "General/test_size": "0.25"}
    train_rows, test_rows = split(38)
    np.testing.assert_array_equal(process.artifacts["X_train"].get(), DATA[train_rows])
    np.testing.assert_array_equal(process.artifacts["X_test"].get(), DATA[test_rows])
    np.testing.assert_array_equal(process.artifacts["y_train"].get(), TARGET[train_rows])
    np.testing.assert_array_equal(process.artifacts["y_test"].get(), TARGET[test_rows])

    # stage_train read them from ${stage_process.id} and trained
    assert train.get_parameters() == {"General/dataset_task_id": process.id}
    assert "Iris dataset loaded\nmodel trained & stored\nDone" in train.get_log()

    # the callbacks ran in the controller, with the template's id and the resolved overrides
    log = ran.log()
    assert (f"Cloning Task id={templates['Pipeline step 2 process dataset'].id} with "
            f"parameters: {{'General/dataset_url': '{data.artifacts['dataset'].url}', "
            f"'General/test_size': 0.25}}") in log
    assert f"Completed Task id={process.id}" in log
    assert "done" in log.splitlines()


@pytest.mark.parametrize("setup", SETUPS)
def test_pipeline_from_functions(setup: str, tmp_path: Path, iris_url: str, agents) -> None:
    ran = run_example("pipeline_from_functions.py", setup, tmp_path, agents,
                      ("services", "default"))
    assert_setup(ran, "pipeline_from_functions.py")
    assert_ran_on_queues(ran)
    assert (ran.controller.project, ran.controller.name) == ("examples", "Pipeline demo")
    assert get_store().get_run(ran.controller.id).version == "1.1"
    assert Task(ran.controller.id).get_parameters() == {"Args/url": iris_url}
    assert set(ran.steps) == {"step_one", "step_two", "step_three"}
    one, two, three = (ran.task(s) for s in ("step_one", "step_two", "step_three"))

    assert one.get_parameters() == {"kwargs/pickle_data_url": iris_url}
    frame = one.artifacts["data_frame"].get()
    assert list(frame.columns) == [*FEATURES, "target"]
    np.testing.assert_array_equal(frame[FEATURES].to_numpy(), DATA)
    np.testing.assert_array_equal(frame["target"].to_numpy(), TARGET)

    # one return name: the four parts of the split are one artifact
    # (ClearML also records the defaults not passed, kwargs/test_size and kwargs/random_state)
    assert two.get_parameters()["kwargs_artifacts/data_frame"] == f"{one.id}.data_frame"
    X_train, X_test, y_train, y_test = two.artifacts["processed_data"].get()
    train_rows, test_rows = split(30)  # step_two's own test_size=0.2
    assert list(X_train.index) == list(y_train.index) == list(train_rows)
    assert list(X_test.index) == list(y_test.index) == list(test_rows)

    assert three.get_parameters() == {"kwargs_artifacts/data": f"{two.id}.processed_data"}
    model = three.artifacts["model"].get()
    np.testing.assert_array_equal(model.predict(DATA), TARGET)
    assert "pipeline completed" in ran.log().splitlines()


@pytest.mark.parametrize("setup", SETUPS)
def test_pipeline_from_decorator(setup: str, tmp_path: Path, iris_url: str, agents) -> None:
    ran = run_example("pipeline_from_decorator.py", setup, tmp_path, agents)
    assert_setup(ran, "pipeline_from_decorator.py")
    assert_ran_locally(ran)  # PipelineDecorator.run_locally(): steps as subprocesses here
    assert (ran.controller.project, ran.controller.name) == ("examples",
                                                             "custom pipeline logic")
    assert get_store().get_run(ran.controller.id).version == "0.0.5"
    assert Task(ran.controller.id).get_parameters() == {"Args/pickle_url": iris_url,
                                                        "Args/mock_parameter": "mock"}
    assert {n: s.type for n, s in ran.steps.items()} == {
        "step_one": "data_processing", "step_two": "data_processing",
        "step_three": "training", "step_four": "qc"}
    one, two, three, four = (ran.task(s)
                             for s in ("step_one", "step_two", "step_three", "step_four"))

    frame = one.artifacts["data_frame"].get()
    np.testing.assert_array_equal(frame[FEATURES].to_numpy(), DATA)
    train_rows, test_rows = split(30)
    assert list(two.artifacts["X_train"].get().index) == list(train_rows)
    assert list(two.artifacts["y_test"].get().index) == list(test_rows)
    assert three.get_parameters() == {"kwargs_artifacts/X_train": f"{two.id}.X_train",
                                      "kwargs_artifacts/y_train": f"{two.id}.y_train"}
    np.testing.assert_array_equal(three.artifacts["model"].get().predict(DATA), TARGET)
    assert four.get_parameters() == {"kwargs_artifacts/model": f"{three.id}.model",
                                     "kwargs_artifacts/X_data": f"{two.id}.X_test",
                                     "kwargs_artifacts/Y_data": f"{two.id}.y_test"}
    assert four.artifacts["accuracy"].get() == 1.0
    for step in ("step_one", "step_two", "step_three"):
        assert step in ran.task(step).get_log().splitlines()

    log = ran.log().splitlines()
    assert f"pipeline args: {iris_url} mock" in log
    assert "Accuracy=100.0%" in log
    assert "process completed" in log


@pytest.mark.parametrize("setup", SETUPS)
def test_decorated_pipeline_step_decorators(setup: str, tmp_path: Path, agents) -> None:
    """A component under a decorator of the user's own: the step returns 1 + 1."""
    ran = run_example("decorated_pipeline_step_decorators.py", setup, tmp_path, agents)
    assert_setup(ran, "decorated_pipeline_step_decorators.py")
    assert_ran_locally(ran)
    assert (ran.controller.project, ran.controller.name) == ("test_decorated",
                                                             "test_decorated")
    # the component is the wrapper our_decorator returned (no functools.wraps), as in ClearML
    assert list(ran.steps) == ["function_wrapper"]
    assert ran.task("function_wrapper").artifacts["return_object"].get() == 2


@pytest.mark.parametrize("setup", SETUPS)
def test_decorated_pipeline_step_functions(setup: str, tmp_path: Path, agents) -> None:
    """A decorated function as a function step; start_locally(run_pipeline_steps_locally)."""
    ran = run_example("decorated_pipeline_step_functions.py", setup, tmp_path, agents)
    assert_setup(ran, "decorated_pipeline_step_functions.py")
    assert_ran_locally(ran)
    assert (ran.controller.project, ran.controller.name) == ("test_decorated",
                                                             "test_decorated")
    assert set(ran.steps) == {"step", "evaluate"}
    step, evaluate = ran.task("step"), ran.task("evaluate")
    assert step.artifacts["step_return"].get() == 2
    assert evaluate.get_parameters() == {"kwargs_artifacts/step_return": f"{step.id}.step_return"}
