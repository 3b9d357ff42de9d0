"""``pipekit agent``, as real processes: claiming, leases that expire when an agent dies
(RELIABILITY 8), a stale attempt fenced out (9), an abort killing a step's whole session (10),
graceful shutdown, and one-line errors.

Agents here run with a 3 s lease (``PIPEKIT_LEASE_TTL``) so that a lost one is reaped fast.
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
import psutil
import pytest
from pipeline_helpers import function_task

from pipekit import Task
from pipekit.store import get_store
from pipekit.testing import wait_until

# Step functions reach the step process as cloudpickle; this module is not importable there.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

PIPEKIT = str(Path(sys.executable).with_name("pipekit"))
TTL = "3"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def short_leases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPEKIT_LEASE_TTL", TTL)


def script_task(tmp_path: Path, body: str, name: str = "step") -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return Task.create(project_name="agents", task_name=name, script=str(path)).id


def status_of(task_id: str) -> str:
    return get_store().get_task(task_id).status


def attempt_and_result(marker_dir: str):
    """Record that this attempt started, wait for its gate, return which attempt it was."""
    import os as _os
    import time as _time
    from pathlib import Path as _Path

    attempt = _os.environ["PIPEKIT_LEASE"].rpartition("#")[2]
    folder = _Path(marker_dir)
    (folder / f"started-{attempt}").write_text(str(_os.getpid()))
    while not (folder / f"gate-{attempt}").exists():
        _time.sleep(0.05)
    return f"attempt {attempt}"


def double(x):
    print("doubling", x)
    return x * 2


def test_an_agent_runs_queued_script_and_function_tasks_as_itself(tmp_path, agents):
    script = script_task(tmp_path, """
        from pipekit import Task
        task = Task.init()
        print("hello from the script")
        task.upload_artifact("answer", 42)
    """)
    fn = function_task(double, "double", x=21)
    Task.enqueue(script, "default")
    Task.enqueue(fn, "default")
    agent = agents("--queue", "default", "--exit-when-idle", "1")
    out, _ = agent.communicate(timeout=90)
    assert agent.returncode == 0, out
    store = get_store()
    for task_id in (script, fn):
        info = store.get_task(task_id)
        assert info.status == "completed", (info.status_reason, out)
        assert info.worker.endswith(f":{agent.pid}")  # the agent that claimed it
    assert Task(script).artifacts["answer"].get() == 42
    assert "hello from the script" in Task(script).get_log()
    assert Task(fn).artifacts["out"].get() == 42 and "doubling 21" in Task(fn).get_log()
    [gone] = store.list_agents(include_gone=True)
    assert (gone.pid, gone.queues, gone.state) == (agent.pid, ("default",), "stopped")


def test_an_unknown_queue_is_a_one_line_error(agents):
    agent = agents("--queue", "nope")
    out, _ = agent.communicate(timeout=60)
    assert agent.returncode == 1
    assert out.strip().splitlines()[-1] == (
        "Error: unknown queue 'nope' (known queues: default, services)")
    assert "Traceback" not in out


def _sleeper(tmp_path: Path) -> str:
    """A script task that records its pid and attempt, then sleeps unless it is attempt 2."""
    return script_task(tmp_path, f"""
        import os, time
        attempt = os.environ["PIPEKIT_LEASE"].rpartition("#")[2]
        open({str(tmp_path)!r} + f"/started-{{attempt}}", "w").write(str(os.getpid()))
        if attempt == "1":
            time.sleep(60)
        print("finished attempt", attempt)
    """, name="sleeper")


@pytest.mark.exclusive
@pytest.mark.usefixtures("backend")
@pytest.mark.parametrize(("backend", "retries"), [
    ("sqlite", 1), ("sqlite", 0), ("postgresql", 1),
    pytest.param("postgresql", 0, marks=pytest.mark.slow)], indirect=["backend"])
def test_a_killed_agents_task_is_requeued_then_fails_worker_lost(tmp_path, agents, retries):
    """RELIABILITY 8: the lease expires, a live agent reaps it: attempt 2 when retries
    remain, else failed "worker lost"."""
    task_id = _sleeper(tmp_path)
    get_store().enqueue(task_id, "default", lost_retries=retries)
    first = agents("--queue", "default")
    started = tmp_path / "started-1"
    wait_until(lambda: started.exists() and started.read_text(), 60, "attempt 1 to start")
    os.killpg(first.pid, signal.SIGKILL)  # the agent ...
    os.killpg(int(started.read_text()), signal.SIGKILL)  # ... and its step die together
    killed = time.monotonic()
    agents("--queue", "default")
    if retries:
        wait_until(lambda: status_of(task_id) == "completed", 60, "attempt 2 to complete")
        assert time.monotonic() - killed < 10 + 5  # re-queued and run within 10 s (+ start)
        assert get_store().lease_of(task_id)[0].attempt == 2
        assert "finished attempt 2" in Task(task_id).get_log()
    else:
        wait_until(lambda: status_of(task_id) == "failed", 60, "the task to fail")
        reason = get_store().get_task(task_id).status_reason
        assert reason.startswith("worker lost:") and f":{first.pid} " in reason
        assert not (tmp_path / "started-2").exists()


@pytest.mark.usefixtures("backend")
def test_a_stale_attempt_is_fenced_out(tmp_path, agents):
    """RELIABILITY 9: an agent frozen past its lease comes back after attempt 2 completed;
    its step's late result and artifact are rejected."""
    task_id = function_task(attempt_and_result, "fenced", marker_dir=str(tmp_path))
    Task.enqueue(task_id, "default")
    frozen = agents("--queue", "default")
    # (the file exists a moment before its pid is written in it)
    stale_worker = int(wait_until(lambda: (tmp_path / "started-1").exists()
                                  and (tmp_path / "started-1").read_text().strip(), 60,
                                  "attempt 1 to start"))
    frozen.send_signal(signal.SIGSTOP)  # no more heartbeats; its step waits at its gate
    agents("--queue", "default")
    wait_until(lambda: (tmp_path / "started-2").exists(), 60, "attempt 2 to start")
    (tmp_path / "gate-1").touch()  # attempt 1 returns while attempt 2 runs: it may not commit
    wait_until(lambda: not psutil.pid_exists(stale_worker)
               or psutil.Process(stale_worker).status() == psutil.STATUS_ZOMBIE, 30,
               "the stale attempt to end")
    assert "LeaseLost: task" in Task(task_id).get_log()  # attempt 1 was told why
    assert status_of(task_id) == "in_progress" and "out" not in Task(task_id).artifacts
    (tmp_path / "gate-2").touch()
    wait_until(lambda: status_of(task_id) == "completed", 60, "attempt 2 to complete")
    frozen.send_signal(signal.SIGCONT)  # back, it finds its lease gone and writes nothing
    info = get_store().get_task(task_id)
    assert (info.status, info.status_reason) == ("completed", "")
    assert Task(task_id).artifacts["out"].get() == "attempt 2"


@pytest.mark.usefixtures("backend")
def test_aborting_a_task_kills_its_whole_session_double_forked_included(tmp_path, agents):
    """RELIABILITY 10 under an agent."""
    pidfile = tmp_path / "daemon.pid"
    task_id = script_task(tmp_path, f"""
        import os, time
        if os.fork() == 0:          # double fork: the grandchild leaves the process tree
            if os.fork() == 0:
                open({str(pidfile)!r}, "w").write(str(os.getpid()))
                time.sleep(120)
            os._exit(0)
        time.sleep(120)
    """, name="forker")
    Task.enqueue(task_id, "default")
    agent = agents("--queue", "default")
    wait_until(lambda: pidfile.exists() and pidfile.read_text(), 60, "the daemon to start")
    daemon = int(pidfile.read_text())
    assert psutil.Process(daemon).ppid() != psutil.Process(agent.pid).pid
    result = subprocess.run([PIPEKIT, "tasks", "abort", task_id], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: not psutil.pid_exists(daemon)
               or psutil.Process(daemon).status() == psutil.STATUS_ZOMBIE, 15,
               "the double-forked daemon to be killed")
    assert status_of(task_id) == "stopped"
    assert agent.poll() is None  # the agent lives on


def test_sigterm_finishes_a_short_task_and_gives_a_long_one_back(tmp_path, agents):
    task_id = _sleeper(tmp_path)
    Task.enqueue(task_id, "default")
    agent = agents("--queue", "default")
    wait_until(lambda: (tmp_path / "started-1").exists(), 60, "attempt 1 to start")
    agent.send_signal(signal.SIGTERM)
    wait_until(lambda: [a.state for a in get_store().list_agents()] == ["stopping"], 30,
               "the agent to start shutting down")
    agent.send_signal(signal.SIGTERM)  # the second: give it back now
    out, _ = agent.communicate(timeout=60)
    assert agent.returncode == 0, out
    info = get_store().get_task(task_id)
    assert info.status == "queued" and "shut down" in info.status_reason
    step = int((tmp_path / "started-1").read_text())
    wait_until(lambda: not psutil.pid_exists(step)
               or psutil.Process(step).status() == psutil.STATUS_ZOMBIE, 15, "the step to die")
    agents("--queue", "default", "--exit-when-idle", "1").communicate(timeout=90)
    assert status_of(task_id) == "completed"
    assert "finished attempt 2" in Task(task_id).get_log()


def test_the_agents_page_example_runs_with_an_agent(tmp_path, agents):
    """docs/agents.md's example, as written, with an agent serving the default queue."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "agents.md").read_text()
    example = page.rsplit("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "example.py").write_text(example)
    agent = agents("--queue", "default", "--exit-when-idle", "5")
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello from an agent"
    agent.communicate(timeout=60)
    assert agent.returncode == 0


def noop():
    return None


def _stress(n_tasks: int, n_agents: int, workers: int, timeout: float, agents) -> None:
    """RELIABILITY 1 through agents: every task completed exactly once (one claim each),
    none lost, and no lock error reaching an agent's output."""
    ids = [function_task(noop, f"noop{i}") for i in range(n_tasks)]
    for task_id in ids:
        Task.enqueue(task_id, "default")
    procs = [agents("--queue", "default", "--workers", str(workers), "--exit-when-idle", "2")
             for _ in range(n_agents)]
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    store = get_store()
    statuses = store.task_statuses(ids)
    assert sorted({s for s, _ in statuses.values()}) == ["completed"], (
        [o[-2000:] for o in outputs])
    assert {store.lease_of(task_id)[0].attempt for task_id in ids} == {1}  # claimed once each
    assert all(p.returncode == 0 for p in procs)
    for out in outputs:
        assert "locked" not in out.lower() and "Traceback" not in out
    served = {store.get_task(task_id).worker for task_id in ids}
    assert len(served) > 1  # the agents shared the work


def test_agents_complete_queued_tasks_exactly_once(agents, backend):
    """RELIABILITY 1 at a size for every run: 8 claimers (4 agents x 2 workers) racing for
    48 tasks (the full size is the slow test below). On PostgreSQL too, with agents in
    separate processes sharing only the database server (no SQLite file anywhere: the
    ``pg_store`` fixture checks), on fewer tasks: the store's own claim race, with more
    contention, is in test_postgres.py."""
    _stress(48 if backend == "sqlite" else 24, 4, 2, 300, agents)


def pid_of_runner():
    import os as _os

    return _os.getpid()


def test_in_process_agents_run_function_tasks_in_their_own_process_exactly_once(agents):
    """``--in-process``: no worker process per function task; each still claimed once,
    completed once, its result and log stored like any other.
    """
    ids = [function_task(pid_of_runner, f"pid{i}") for i in range(60)]
    for task_id in ids:
        Task.enqueue(task_id, "default")
    procs = [agents("--queue", "default", "--exit-when-idle", "1", "--in-process")
             for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    store = get_store()
    pids = {p.pid for p in procs}
    for task_id in ids:
        info = store.get_task(task_id)
        assert info.status == "completed", (info.status_reason, outputs)
        assert store.lease_of(task_id)[0].attempt == 1
        ran_in = Task(task_id).artifacts["out"].get()
        assert ran_in in pids and info.worker.endswith(f":{ran_in}")  # the agent itself


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.usefixtures("backend")
def test_eight_agents_complete_5000_queued_tasks_exactly_once(agents):
    """RELIABILITY 1 at full size (make test-all)."""
    _stress(5000, 8, 1, 3500, agents)


def test_the_custom_random_search_example_runs_on_agents(tmp_path, agents):
    """docs/examples/custom_random_search.py: clones of a template task, run by agents."""
    example = Path(__file__).resolve().parents[1] / "docs" / "examples" / \
        "custom_random_search.py"
    agent = agents("--queue", "default", "--workers", "2", "--exit-when-idle", "5")
    result = subprocess.run([sys.executable, str(example)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert sum(line.startswith("enqueued ") for line in lines) == 4
    assert lines[-1].startswith("best: lr=")
    best = lines[-1].rsplit("(task ", 1)[1].rstrip(")")
    losses = [float(line.split("final_loss=")[1].split()[0]) for line in lines
              if "final_loss=" in line]
    assert losses == sorted(losses) and len(losses) == 4
    info = get_store().get_task(best)
    assert info.status == "completed" and info.worker.endswith(f":{agent.pid}")
    agent.communicate(timeout=60)
