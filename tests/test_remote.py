"""Remote mode: a pipeline's steps go to queues and real ``pipekit agent`` processes run them.

``start_locally()`` runs the controller here and sends the steps to their queues;
``start(queue=...)`` enqueues the controller itself and exits, an agent runs it. A step on a
queue nobody serves fails after the start timeout (RELIABILITY 11); a step whose agent dies
is re-run on another agent and the pipeline still succeeds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cloudpickle
import pytest
from pipeline_helpers import node_statuses
from postgres_helpers import SLOW_ON_POSTGRESQL

from pipekit import PipelineController, Task
from pipekit.errors import DefinitionError
from pipekit.store import get_store
from pipekit.testing import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])

PIPEKIT = str(Path(sys.executable).with_name("pipekit"))

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(autouse=True)
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEKIT_LEASE_TTL", "3")


def square(x):
    return x * x


def add(a, b):
    return a + b


def slow_on_first_attempt(x, marker_dir):
    import os as _os
    import time as _time
    from pathlib import Path as _Path

    attempt = _os.environ["PIPEKIT_LEASE"].rpartition("#")[2]
    (_Path(marker_dir) / f"started-{attempt}").write_text(str(_os.getpid()))
    if attempt == "1":
        _time.sleep(120)
    return x + 1


def build(name: str, queue: str | None = "default") -> PipelineController:
    pipe = PipelineController(name=name, project="remote")
    if queue:
        pipe.set_default_execution_queue(queue)
    pipe.add_parameter("x", 3)
    pipe.add_function_step("a", square, {"x": "${pipeline.x}"}, ["y"])
    pipe.add_function_step("b", square, {"x": 4}, ["y"])
    pipe.add_function_step("total", add, {"a": "${a.y}", "b": "${b.y}"}, ["y"])
    return pipe


def test_start_locally_sends_the_steps_to_agents(agents):
    one, two = agents("--queue", "default"), agents("--queue", "default")
    pipe = build("remote-steps")
    pipe.start_locally()
    assert pipe.is_successful()
    total = Task.get_task(task_id=pipe.get_pipeline_dag()["total"].executed)
    assert total.artifacts["y"].get() == 25
    store = get_store()
    workers = {store.get_task(n.executed).worker.rpartition(":")[2]
               for n in pipe.get_pipeline_dag().values()}
    assert workers <= {str(one.pid), str(two.pid)} and workers  # agents ran every step
    assert store.get_task(pipe.id).worker is None or str(os.getpid()) in \
        store.get_task(pipe.id).worker  # the controller ran here


def test_a_step_without_a_queue_is_refused_before_anything_runs():
    pipe = build("no-queue", queue=None)
    with pytest.raises(ValueError, match=r"Node 'a' missing execution queue") as info:
        pipe.start_locally()
    assert isinstance(info.value, DefinitionError)
    assert get_store().list_runs() == []


def test_a_step_on_a_queue_no_agent_serves_fails_after_the_start_timeout(monkeypatch):
    """RELIABILITY 11: never a silent wait."""
    monkeypatch.setenv("PIPEKIT_START_TIMEOUT", "1")
    get_store().ensure_queue("gpu")
    pipe = build("nobody-listens", queue="gpu")
    began = time.monotonic()
    pipe.start_locally()
    assert time.monotonic() - began < 30
    assert not pipe.is_successful()
    statuses = node_statuses(pipe.id)
    assert statuses["a"] == "failed" and statuses["total"] == "skipped"
    reason = get_store().get_task(pipe.get_pipeline_dag()["a"].tasks[-1]).status_reason
    assert reason.startswith("no agent listening on queue 'gpu'")


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("backend", SLOW_ON_POSTGRESQL, indirect=True)
def test_a_step_whose_agent_dies_is_rerun_on_another_and_the_pipeline_succeeds(tmp_path,
                                                                              agents):
    first = agents("--queue", "default")
    pipe = PipelineController(name="agent-dies", project="remote")
    pipe.set_default_execution_queue("default")
    pipe.add_function_step("slow", slow_on_first_attempt,
                           {"x": 1, "marker_dir": str(tmp_path)}, ["y"])
    pipe.add_function_step("after", square, {"x": "${slow.y}"}, ["y"])
    pipe.start_locally(wait=False)
    started = tmp_path / "started-1"
    wait_until(lambda: started.exists() and started.read_text(), 60, "attempt 1 to start")
    os.killpg(first.pid, signal.SIGKILL)
    os.killpg(int(started.read_text()), signal.SIGKILL)
    killed = time.monotonic()
    agents("--queue", "default")
    assert pipe.wait(timeout=60)
    assert time.monotonic() - killed < 30
    assert pipe.is_successful()
    after = Task.get_task(task_id=pipe.get_pipeline_dag()["after"].executed)
    assert after.artifacts["y"].get() == 4


@pytest.mark.usefixtures("backend")
def test_start_enqueues_the_controller_and_agents_run_everything(tmp_path, agents):
    script = tmp_path / "remote_pipeline.py"
    script.write_text(textwrap.dedent(f"""
        import cloudpickle, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_remote
        cloudpickle.register_pickle_by_value(test_remote)
        pipe = test_remote.build("enqueued", queue="default")
        pipe.start(queue="services")
        print("not reached when enqueuing")
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "not reached" not in result.stdout
    assert "enqueued on 'services' as run" in result.stdout
    [run] = get_store().list_runs() or [None]
    run_id = result.stdout.split(" as run ")[1].split(":")[0]
    assert run is None  # nothing ran yet: the controller waits on 'services'
    assert get_store().get_task(run_id).status == "queued"
    services, default = agents("--queue", "services"), agents("--queue", "default")
    wait_until(lambda: get_store().get_task(run_id).status in ("completed", "failed"), 120,
               "the enqueued pipeline to finish")
    info = get_store().get_task(run_id)
    assert info.status == "completed", (info.status_reason, Task(run_id).get_log())
    assert info.worker.endswith(f":{services.pid}")
    assert node_statuses(run_id) == {"a": "completed", "b": "completed", "total": "completed"}
    steps = {n.name: n.task for n in get_store().list_nodes(run_id)}
    assert Task(steps["total"]).artifacts["y"].get() == 25
    assert {get_store().get_task(t).worker for t in steps.values()} == {
        f"{info.worker.rpartition(':')[0]}:{default.pid}"}


# -- ClearML scripts with no edit, under `pipekit run` -------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
UNMODIFIED = ROOT / "tests" / "cli_scripts" / "clearml_unmodified.py"


def pk(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PIPEKIT, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env={**os.environ, **env})


def test_an_unmodified_clearml_remote_script_runs_under_pipekit_run():
    """`import clearml`, a default queue and `pipe.start()`: the controller runs as the run,
    its steps go to 'default', and an agent started for the run's duration runs them."""
    result = pk("run", str(UNMODIFIED))
    assert result.returncode == 0, (result.stdout, result.stderr)
    run_id = result.stdout.split()[1]
    assert node_statuses(run_id) == {"step_one": "completed", "step_two": "completed",
                                     "step_three": "completed"}
    steps = {n.name: n.task for n in get_store().list_nodes(run_id)}
    assert Task(steps["step_three"]).artifacts["model"].get() == {"trained_on": 6,
                                                                  "tested_on": 2}
    assert "pipeline completed" in Task(run_id).get_log()
    [agent] = get_store().list_agents(include_gone=True)  # started for the run, then stopped
    assert agent.state == "stopped" and agent.queues == ("default",)
    assert {get_store().get_task(t).worker for t in steps.values()} == {
        f"{agent.host}:{agent.pid}"}


def test_without_local_agents_the_steps_wait_for_an_agent_then_fail():
    result = pk("run", str(UNMODIFIED), "--no-local-agents", PIPEKIT_START_TIMEOUT="1")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "failed" in last and "no agent listening on queue 'default'" in last
    assert get_store().list_agents(include_gone=True) == []


def test_without_the_alias_an_unmodified_script_says_clearml_is_missing():
    result = pk("run", str(UNMODIFIED), "--no-clearml-alias")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    run_id = result.stdout.split()[1]  # (issue 12 brings the script's own error to stderr)
    assert "ModuleNotFoundError: No module named 'clearml'" in Task(run_id).get_log()


def test_install_as_clearml_reaches_child_processes_and_never_shadows_clearml(tmp_path):
    probe = textwrap.dedent("""
        import subprocess, sys
        import pipekit
        print(pipekit.install_as_clearml())
        import clearml
        from clearml import Task
        from clearml.automation import PipelineController
        from clearml.automation.controller import PipelineDecorator
        print(Task is pipekit.Task, PipelineController is pipekit.PipelineController,
              PipelineDecorator is pipekit.PipelineDecorator)
        child = "import clearml, pipekit; print(clearml.Task is pipekit.Task)"
        print(subprocess.run([sys.executable, "-c", child], capture_output=True,
                             text=True).stdout.strip())
    """)
    alias = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           timeout=60, cwd=tmp_path)
    assert alias.returncode == 0, alias.stderr
    assert alias.stdout.split() == ["True", "True", "True", "True", "True"]
    real = tmp_path / "site" / "clearml"
    real.mkdir(parents=True)
    (real / "__init__.py").write_text("REAL = True\n")
    shadow = subprocess.run(
        [sys.executable, "-c", "import pipekit, clearml; "
                               "print(pipekit.install_as_clearml(), clearml.REAL)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")})
    assert shadow.returncode == 0, shadow.stderr
    assert shadow.stdout.split() == ["False", "True"]


def test_pipekit_run_leaves_its_own_process_without_the_alias():
    """The alias is the script's and its processes', never the caller's (an in-process
    `pipekit run`, as from CliRunner, must not change this interpreter)."""
    from click.testing import CliRunner

    from pipekit.cli import cli

    before = (os.environ.get("PYTHONPATH"), list(sys.path))
    result = CliRunner().invoke(cli, ["run", str(UNMODIFIED)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (os.environ.get("PYTHONPATH"), list(sys.path)) == before
    assert "clearml" not in sys.modules


# -- decorated pipelines on queues --------------------------------------------------------------

from pipekit import PipelineDecorator  # noqa: E402


@PipelineDecorator.component(return_values=["y"])
def dec_square(x):
    import os as _os
    return x * x, _os.getpid()


@PipelineDecorator.component(return_values=["total"])
def dec_add(a, b):
    return a[0] + b[0]


@PipelineDecorator.pipeline(name="decorated-remote", project="remote", default_queue="default",
                            pipeline_execution_queue=None)
def decorated_remote(x=3):
    return dec_add(dec_square(x), dec_square(4))


def test_a_decorated_pipeline_with_a_default_queue_sends_its_components_to_agents(agents):
    """As ClearML: with a default queue and neither run_locally() nor debug_pipeline(), the
    components go to their queue; with pipeline_execution_queue=None the logic runs here."""
    agent = agents("--queue", "default")
    assert decorated_remote(x=5) == 41
    [run] = get_store().list_runs(name="decorated-remote")
    tasks = [n.task for n in get_store().list_nodes(run.id)]
    assert len(tasks) == 3
    assert {get_store().get_task(t).worker.rpartition(":")[2] for t in tasks} == {
        str(agent.pid)}


def test_a_component_on_a_queue_without_a_default_queue_or_a_mode_is_refused():
    @PipelineDecorator.component(execution_queue="gpu")
    def on_gpu():
        return 1

    @PipelineDecorator.pipeline(name="half-remote", project="remote")
    def half_remote():
        return on_gpu()

    with pytest.raises(Exception, match=r"component 'on_gpu' is assigned to queue 'gpu'.*"
                                        r"set a default queue"):
        half_remote()


def test_a_decorated_pipeline_goes_to_its_execution_queue_first(tmp_path, agents):
    script = tmp_path / "decorated.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import cloudpickle, test_remote
        from pipekit import PipelineDecorator
        cloudpickle.register_pickle_by_value(test_remote)

        @PipelineDecorator.pipeline(name="decorated-enqueued", project="remote",
                                    default_queue="default")
        def enqueued(x=2):
            print("result", test_remote.dec_add(test_remote.dec_square(x),
                                                test_remote.dec_square(1)))

        enqueued()
        print("not reached when enqueuing")
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "enqueued on 'services'" in result.stdout and "not reached" not in result.stdout
    run_id = result.stdout.split(" as run ")[1].split(":")[0]
    agents("--queue", "services"), agents("--queue", "default")
    wait_until(lambda: get_store().get_task(run_id).status in ("completed", "failed"), 120,
               "the enqueued decorated pipeline to finish")
    assert get_store().get_task(run_id).status == "completed", Task(run_id).get_log()
    # The run ends (its controller says so) a moment before the agent has copied the
    # script's last lines into the log: they arrive, but not in the same instant.
    wait_until(lambda: "result 5" in Task(run_id).get_log(), 30, "the log's last lines")
