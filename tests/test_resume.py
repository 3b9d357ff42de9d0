"""``pipekit resume``: a run whose controller died continues as the same run (RELIABILITY 13,
14, 15 and the second half of 26).

The pipeline is ``tests/cli_scripts/recover.py``; its steps leave one file per execution in
``$PIPEKIT_TEST_MARKS``, so a test counts executions. A controller is crashed either by a
crash point (``PIPEKIT_TEST_CRASH_AT``: the controller SIGKILLs itself, or the step's process
kills it and then itself) or by a SIGKILL from the test. Nothing waits by sleeping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from pipeline_helpers import PIPEKIT, assert_cascade, executions, node_statuses, one_error
from postgres_helpers import SLOW_ON_POSTGRESQL

from pipekit.artifacts import load_value
from pipekit.crash import POINTS
from pipekit.store import get_store
from pipekit.testing import wait_until

SCRIPT = Path(__file__).resolve().parent / "cli_scripts" / "recover.py"
STEPS = ("first", "side", "second", "third", "last")
#: what an uninterrupted run of recover.py (n=4) produces, per step
OUTPUTS = {"first": ("values", [0, 1, 2, 3]), "side": ("extra", 40),
           "second": ("values", [0, 2, 4, 6]), "third": ("total", 12), "last": ("result", 52)}
pytestmark = pytest.mark.usefixtures("marks")  # (tests/conftest.py) for every script


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``python recover.py args`` (the controller) in a session of its own."""
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, **(env or {})})


def crashed(proc: subprocess.Popen) -> str:
    """Wait for a controller to die by SIGKILL; returns its run's id."""
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, out
    (run,) = get_store().list_runs()
    assert get_store().get_task(run.id).status == "in_progress"
    return run.id


def resume(run: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PIPEKIT, "resume", run, *args], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ))


def assert_completed_as_uninterrupted(run: str) -> None:
    """The run completed, every artifact verifies and equals an uninterrupted run's."""
    store = get_store()
    assert store.get_task(run).status == "completed"
    assert_cascade(run)
    assert set(node_statuses(run).values()) == {"completed"}, node_statuses(run)
    for node in store.list_nodes(run):
        name, value = OUTPUTS[node.name]
        (artifact,) = [a for a in store.list_artifacts(node.task) if a.name == name]
        assert load_value(store, artifact.ref, name) == value, node.name


def done_before(run: str) -> set[str]:
    return {n for n, s in node_statuses(run).items() if s == "completed"}


# -- RELIABILITY 13: a controller SIGKILLed at each crash point, then resumed -------------------


#: the crash point -> how many times "third" runs in all (1: never again; 2: once more)
THIRD_RUNS = {"step-claimed": 1, "step-started": 1, "artifact-written": 2,
              "step-committed": 1, "before-enqueue": 1, "run-finishing": 1}


@pytest.mark.parametrize("point", POINTS)
def test_a_controller_killed_at_each_crash_point_resumes_to_the_same_outputs(
        point: str, marks: Path) -> None:
    at = point if point == "run-finishing" else f"{point}:third"
    run = crashed(start(env={"PIPEKIT_TEST_CRASH_AT": at}))
    completed = done_before(run)
    before = {step: len(executions(marks, step)) for step in STEPS}
    assert before["third"] == (0 if point in ("step-claimed", "before-enqueue") else
                               1 if point in ("artifact-written", "step-committed") else
                               before["third"])

    done = resume(run)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"run {run} completed" in done.stderr
    assert_completed_as_uninterrupted(run)
    for step in completed:  # completed steps never run again
        assert len(executions(marks, step)) == before[step] == 1, step
    for step in STEPS:  # a step in flight runs at most once more
        assert 1 <= len(executions(marks, step)) <= 2, (step, len(executions(marks, step)))
    if point != "step-started":  # (its orphaned process may or may not finish first)
        assert len(executions(marks, "third")) == THIRD_RUNS[point]
    else:
        assert len(executions(marks, "third")) == 1  # waited for, never started again


def test_the_crash_point_names_are_the_documented_ones() -> None:
    assert POINTS == ("step-claimed", "step-started", "artifact-written", "step-committed",
                      "before-enqueue", "run-finishing")


# -- RELIABILITY 15 and 26: continue is not restart ---------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_long_step_that_finished_after_its_controller_died_is_never_run_again(
        marks: Path, sig: int) -> None:
    proc = start(env={"PIPEKIT_TEST_GATE": "second"})
    try:
        step = int(wait_until(lambda: (marks / "second.started").exists()
                              and (marks / "second.started").read_text(), 30,
                              "the long step to start"))
        (run,) = get_store().list_runs()
        os.killpg(proc.pid, sig)  # the controller (its steps run in sessions of their own)
        proc.communicate(timeout=30)
        # The orphaned step finishes and commits: resume will keep it.
        (marks / "go").touch()
        wait_until(lambda: not psutil.pid_exists(step) or
                   psutil.Process(step).status() == psutil.STATUS_ZOMBIE, 30,
                   "the orphaned step to finish")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert get_store().get_task(run.id).status == "in_progress"
    done = resume(run.id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_completed_as_uninterrupted(run.id)
    assert {step: len(executions(marks, step)) for step in STEPS} == dict.fromkeys(STEPS, 1)


def test_a_step_still_running_at_resume_is_waited_for_not_started_again(marks: Path) -> None:
    proc = start(env={"PIPEKIT_TEST_GATE": "second"})
    wait_until(lambda: (marks / "second.started").exists(), 30, "the long step to start")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    (run,) = get_store().list_runs()
    resuming = subprocess.Popen([PIPEKIT, "resume", run.id], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: get_store().get_run(run.id).owner.endswith(" (resume)"), 30,
                   "the resume to take the run")
        assert len(executions(marks, "second")) == 1
        (marks / "go").touch()  # the orphaned step now finishes; the resumed run keeps it
        out, err = resuming.communicate(timeout=60)
    finally:
        if resuming.poll() is None:
            resuming.kill()
            resuming.communicate()
    assert resuming.returncode == 0, out + err
    assert_completed_as_uninterrupted(run.id)
    assert {step: len(executions(marks, step)) for step in STEPS} == dict.fromkeys(STEPS, 1)


# -- RELIABILITY 14: two resumes at once --------------------------------------------------------


def test_of_two_resumes_at_once_one_takes_the_run_and_the_other_says_who(
        marks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = crashed(start(env={"PIPEKIT_TEST_CRASH_AT": "before-enqueue:second"}))
    monkeypatch.setenv("PIPEKIT_TEST_GATE", "second")  # the winner waits there
    procs = [subprocess.Popen([PIPEKIT, "resume", run], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        loser = wait_until(lambda: [p for p in procs if p.poll() is not None], 60,
                           "one resume to give up")[0]
        out, err = loser.communicate()
        winner = next(p for p in procs if p is not loser)
        assert loser.returncode == 1, out + err
        assert err.strip() == f"Error: run {run} is being resumed by PID {winner.pid} on " \
                              f"{os.uname().nodename}", err
        assert "Traceback" not in err
        assert winner.poll() is None
        (marks / "go").touch()
        out, err = winner.communicate(timeout=60)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert winner.returncode == 0, out + err
    assert_completed_as_uninterrupted(run)
    assert len(executions(marks, "second")) == 1


# -- bad input: one line, nothing changed -------------------------------------------------------


def test_resume_is_refused_while_the_controller_lives_unless_forced(marks: Path) -> None:
    proc = start(env={"PIPEKIT_TEST_GATE": "second"})
    try:
        wait_until(lambda: (marks / "second.started").exists(), 30, "the run to be under way")
        (run,) = get_store().list_runs()
        assert one_error(resume(run.id), alone=True) == (
            f"Error: run {run.id} is still driven by its controller, PID {proc.pid} on "
            f"{os.uname().nodename}: wait for it to end, or take it over with --force")
        assert get_store().get_run(run.id).owner.endswith(f":{proc.pid}")
        (marks / "go").touch()
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    # A finished run: nothing to resume.
    assert one_error(resume(run.id), alone=True) == (
        f"Error: run {run.id} has already ended (completed): nothing to resume; pipekit rerun "
        f"{run.id[:12]} runs it again")


def test_resume_of_a_run_whose_script_is_gone_says_so(marks: Path, tmp_path: Path) -> None:
    script = tmp_path / "recover_copy.py"
    script.write_text(SCRIPT.read_text())
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PIPEKIT_TEST_CRASH_AT": "before-enqueue:third"})
    run = crashed(proc)
    script.unlink()
    assert one_error(resume(run), alone=True) == (
        f"Error: run {run} cannot be resumed: its script {str(script)!r} is gone")
    assert get_store().get_task(run).status == "in_progress"  # untouched: still resumable
    assert get_store().get_run(run).owner is not None
    script.write_text(SCRIPT.read_text())
    assert resume(run).returncode == 0
    assert_completed_as_uninterrupted(run)


# -- decorator pipelines and remote runs resume too ---------------------------------------------


@pytest.mark.parametrize("point", ["before-enqueue:add", "step-committed:add"])
def test_a_decorated_pipeline_resumes_by_component_name_and_call_order(
        point: str, marks: Path) -> None:
    script = Path(__file__).resolve().parent / "cli_scripts" / "decorated.py"
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PIPEKIT_TEST_CRASH_AT": point})
    run = crashed(proc)
    assert len(executions(marks, "square")) == 1
    done = resume(run)
    assert done.returncode == 0, done.stdout + done.stderr
    store = get_store()
    assert store.get_task(run).status == "completed"
    assert_cascade(run)
    # square's stored result served the component call: it never ran again
    assert len(executions(marks, "square")) == 1
    assert len(executions(marks, "add")) == 1
    nodes = {n.name: n for n in store.list_nodes(run)}
    assert {n: x.status for n, x in nodes.items()} == {"square": "completed",
                                                       "add": "completed"}
    (total,) = store.list_artifacts(nodes["add"].task)
    assert load_value(store, total.ref, total.name) == 5  # 2 * 2 + 1


def test_a_remote_run_resumes_and_keeps_the_step_an_agent_finished(
        marks: Path, agents, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEKIT_LEASE_TTL", "6")
    monkeypatch.setenv("PIPEKIT_TEST_GATE", "second")  # (for the agent's steps)
    agents("--queue", "steps", "--create-queue", "--workers", "2")
    wait_until(lambda: any(q.name == "steps" and q.agents for q in get_store().list_queues()),
               30, "the agent to serve its queue")
    run = crashed(start("--remote", env={"PIPEKIT_TEST_CRASH_AT": "step-started:second"}))
    # The agent runs "second" on: the run's controller is gone, not its steps.
    wait_until(lambda: (marks / "second.started").exists(), 30, "the agent to run second")
    resuming = subprocess.Popen([PIPEKIT, "resume", run], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: get_store().get_run(run).owner.endswith(" (resume)"), 30,
                   "the resume to take the run")
        (marks / "go").touch()
        out, err = resuming.communicate(timeout=60)
    finally:
        if resuming.poll() is None:
            resuming.kill()
            resuming.communicate()
    assert resuming.returncode == 0, out + err
    assert_completed_as_uninterrupted(run)
    assert {step: len(executions(marks, step)) for step in STEPS} == dict.fromkeys(STEPS, 1)
    # every step ran on the agent (not in the controller's or the resume's process)
    (agent,) = get_store().list_agents()
    assert {t.worker for t in get_store().find_tasks(parent=run)} == {
        f"{agent.host}:{agent.pid}"}


def test_the_documented_example_resumes_running_only_what_was_left(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "docs" / "examples" / "resume.py"
    proc = subprocess.run([sys.executable, str(example)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "controller exited with -9" in proc.stdout
    assert proc.stdout.rstrip().endswith("executions: ['prepare', 'train', 'report']")


@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize("backend", SLOW_ON_POSTGRESQL, indirect=True)
def test_a_controller_lost_with_its_agent_is_resumed_by_the_next_agent(
        marks: Path, agents, monkeypatch: pytest.MonkeyPatch) -> None:
    """``start(queue=...)``: the agent running the controller dies with it; the lease reaper
    queues the controller again, and the agent that takes it resumes the same run.
    """
    monkeypatch.setenv("PIPEKIT_LEASE_TTL", "3")
    monkeypatch.setenv("PIPEKIT_TEST_GATE", "second")
    store = get_store()
    agents("--queue", "steps", "--create-queue", "--workers", "2")
    first_agent = agents("--queue", "services", "--create-queue")
    wait_until(lambda: {q.name for q in store.list_queues() if q.agents} >= {"steps",
                                                                               "services"},
               30, "the agents to serve their queues")
    enqueued = subprocess.run([sys.executable, str(SCRIPT), "--enqueue"], capture_output=True,
                              text=True, timeout=60, env=dict(os.environ))
    assert enqueued.returncode == 0, enqueued.stdout + enqueued.stderr
    wait_until(lambda: (marks / "second.started").exists(), 60, "the run to reach second")
    (run,) = store.list_runs()
    controller = int(store.get_run(run.id).owner.rpartition(":")[2])
    os.killpg(first_agent.pid, signal.SIGKILL)  # the agent, and the controller it ran
    os.kill(controller, signal.SIGKILL)
    agents("--queue", "services")
    # The next agent takes the controller again (attempt 2) and resumes the run: it waits
    # for "second", still running on the steps' agent, instead of starting it again.
    wait_until(lambda: store.get_run(run.id).owner not in (None, f"{os.uname().nodename}:"
                                                                 f"{controller}"),
               30, "another controller to take the run")
    (marks / "go").touch()
    wait_until(lambda: store.get_task(run.id).status != "in_progress", 60, "the run to end")
    assert_completed_as_uninterrupted(run.id)
    assert {step: len(executions(marks, step)) for step in STEPS} == dict.fromkeys(STEPS, 1)


@pytest.mark.usefixtures("backend")
def test_resume_from_python(marks: Path) -> None:
    from pipekit.errors import PipekitError
    from pipekit.runs import resume as resume_run

    run = crashed(start(env={"PIPEKIT_TEST_CRASH_AT": "step-committed:second"}))
    info = resume_run(run[:10])
    assert (info.id, info.status) == (run, "completed")
    assert_completed_as_uninterrupted(run)
    assert len(executions(marks, "second")) == 1
    with pytest.raises(PipekitError, match="has already ended"):
        resume_run(run)
