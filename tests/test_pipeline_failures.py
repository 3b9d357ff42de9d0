"""What a pipeline run does when things go wrong: the failure policy (skip descendants,
``continue_on_fail``, ``abort_on_failure``, retries, time limits), a step killed by SIGKILL
(RELIABILITY 7), ``stop()`` killing a step's whole process tree (RELIABILITY 10), the
cascade invariant after each of them (RELIABILITY 12), and upstream artifacts committed and
verified before a downstream step runs (RELIABILITY 18).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cloudpickle
import psutil
import pytest
from pipeline_helpers import assert_cascade, node_statuses, run_locally, step_tasks

from pipekit import PipelineController, Task
from pipekit.store import get_store
from pipekit.testing import wait_until

# Step functions travel to step processes by value (tests/ is not importable there).
cloudpickle.register_pickle_by_value(sys.modules[__name__])

def is_gone(pid: int) -> bool:
    """Dead, or a zombie waiting to be reaped (it runs nothing any more)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def processes_running(task_id: str) -> list[int]:
    """Live processes whose command line names the task (a step worker runs it)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if task_id in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc.info["pid"])
    return found


def read_pids(path: Path) -> list[int]:
    text = wait_until(lambda: path.exists() and path.read_text(), 30, f"{path.name} written")
    return [int(p) for p in text.split()]


# -- step functions (module level: they travel by value) --------------------------------------


def echo(x=None):
    return x


def fail(message):
    raise ValueError(message)


def write_atomically(path, text):
    with open(path + ".tmp", "w") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def write_pid_and_sleep(path, seconds):
    write_atomically(path, str(os.getpid()))
    time.sleep(seconds)
    return "woke up"


def fail_once_file_exists(path, message):
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    raise ValueError(message)


def flaky(counter, failures):
    count = int(open(counter).read()) if os.path.exists(counter) else 0
    write_atomically(counter, str(count + 1))
    if count < failures:
        raise RuntimeError(f"attempt {count + 1} fails")
    return count + 1


def sleep_unless_released(pidfile, release, done, seconds):
    """Sleep up to ``seconds``, or until ``release`` exists (so no thread outlives a test)."""
    write_atomically(pidfile, f"{os.getpid()} {threading.get_ident()}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not os.path.exists(release):
        time.sleep(0.02)
    open(done, "w").close()
    return "late"


def spawn_grandchild_and_sleep(path, seconds):
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    write_atomically(path, f"{os.getpid()} {child.pid}")
    time.sleep(seconds)


BIG = bytes(range(256)) * 160  # 40 KiB: stored as a file, not inline (limit 32 KiB)


def make_big():
    return BIG


def size_of(data, marker=None):
    if marker:
        open(marker, "w").close()
    return len(data), data == BIG


# -- 3. failure policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("executor", ["thread", "subprocess"])
def test_a_failed_step_skips_its_descendants_and_fails_the_run(executor):
    pipe = PipelineController("failing", "failure-tests")
    pipe.add_function_step("fine", echo, function_kwargs={"x": 1}, function_return=["out"])
    pipe.add_function_step("bad", fail, function_kwargs={"message": "bad value 7"},
                           parents=["fine"], function_return=["out"])
    pipe.add_function_step("after", echo, function_kwargs={"x": "${bad.out}"},
                           function_return=["out"])
    pipe.add_function_step("further", echo, parents=["after"])
    pipe.add_function_step("independent", echo, function_kwargs={"x": "${fine.out}"})
    run_id = run_locally(pipe, executor)
    store = get_store()

    bad = pipe.get_pipeline_dag()["bad"]
    assert bad.status == "failed"
    assert bad.reason.startswith("ValueError: bad value 7")
    task = store.get_task(bad.tasks[0])
    assert task.status == "failed" and task.status_reason.startswith("ValueError: bad value 7")
    log = Task(task.id).get_log()
    assert "Traceback" in log and "ValueError: bad value 7" in log
    assert node_statuses(run_id) == {"fine": "completed", "bad": "failed", "after": "skipped",
                                     "further": "skipped", "independent": "completed"}
    assert set(step_tasks(run_id)) == {"fine", "bad", "independent"}
    dag = pipe.get_pipeline_dag()
    assert all("parent 'bad' failed" in dag[n].reason for n in ("after", "further"))
    run = store.get_task(run_id)
    assert run.status == "failed" and "'bad'" in run.status_reason
    assert not pipe.is_successful()
    assert_cascade(run_id, pipe)


def test_continue_on_fail_completes_the_run_but_still_skips_descendants():
    pipe = PipelineController("tolerant", "failure-tests")
    pipe.add_function_step("bad", fail, function_kwargs={"message": "tolerated"},
                           function_return=["out"], continue_on_fail=True)
    pipe.add_function_step("after", echo, function_kwargs={"x": "${bad.out}"})
    pipe.add_function_step("independent", echo, function_kwargs={"x": 2})
    run_id = run_locally(pipe)

    assert node_statuses(run_id) == {"bad": "failed", "after": "skipped",
                                     "independent": "completed"}
    dag = pipe.get_pipeline_dag()
    assert dag["bad"].reason == "ValueError: tolerated"
    assert "parent 'bad' failed" in dag["after"].reason
    assert get_store().get_task(run_id).status == "completed"
    assert pipe.is_successful()
    assert_cascade(run_id, pipe)


@pytest.mark.exclusive
def test_abort_on_failure_stops_a_running_step_and_fails_the_run_quickly(tmp_path):
    pidfile = str(tmp_path / "long.pid")
    pipe = PipelineController("abort", "failure-tests", abort_on_failure=True)
    pipe.add_function_step("long", write_pid_and_sleep,
                           function_kwargs={"path": pidfile, "seconds": 60},
                           function_return=["out"])
    pipe.add_function_step("after_long", echo, function_kwargs={"x": "${long.out}"})
    # fails only once "long" runs, so the abort has something to stop
    pipe.add_function_step("bad", fail_once_file_exists,
                           function_kwargs={"path": pidfile, "message": "abort now"})
    begun = time.monotonic()
    run_id = run_locally(pipe, "subprocess")
    elapsed = time.monotonic() - begun

    assert elapsed < 10, f"the run took {elapsed:.1f} s to abort a 60 s step"
    (long_pid,) = read_pids(Path(pidfile))
    assert is_gone(long_pid)
    dag = pipe.get_pipeline_dag()
    assert dag["bad"].status == "failed" and "ValueError: abort now" in dag["bad"].reason
    assert dag["long"].status == "stopped"
    assert get_store().get_task(dag["long"].tasks[0]).status == "stopped"
    assert node_statuses(run_id) == {"long": "stopped", "after_long": "skipped",
                                     "bad": "failed"}
    run = get_store().get_task(run_id)
    assert run.status == "failed" and "'bad'" in run.status_reason
    assert_cascade(run_id, pipe)


@pytest.mark.parametrize("where", ["step", "pipeline"])
def test_retry_on_failure_runs_fresh_tasks_until_one_succeeds(where, tmp_path):
    counter = str(tmp_path / "attempts")
    pipe = PipelineController("retry", "failure-tests",
                              retry_on_failure=2 if where == "pipeline" else None)
    pipe.add_function_step("flaky", flaky, function_kwargs={"counter": counter, "failures": 2},
                           function_return=["attempts"],
                           retry_on_failure=2 if where == "step" else None)
    pipe.add_function_step("after", echo, function_kwargs={"x": "${flaky.attempts}"},
                           function_return=["out"])
    run_id = run_locally(pipe)
    store = get_store()

    node = pipe.get_pipeline_dag()["flaky"]
    assert node.status == "completed" and node.attempt == 2
    assert len(node.tasks) == 3 and len(set(node.tasks)) == 3
    tasks = [store.get_task(t) for t in node.tasks]
    assert [t.status for t in tasks] == ["failed", "failed", "completed"]
    assert [t.status_reason for t in tasks[:2]] == ["RuntimeError: attempt 1 fails",
                                                     "RuntimeError: attempt 2 fails"]
    assert all(t.parent == run_id for t in tasks)
    assert node.executed == node.tasks[-1]
    assert Task(node.tasks[-1]).artifacts["attempts"].get() == 3
    assert Task(pipe.get_pipeline_dag()["after"].executed).artifacts["out"].get() == 3
    (row,) = [n for n in store.list_nodes(run_id) if n.name == "flaky"]
    assert (row.status, row.attempt, row.task) == ("completed", 2, node.tasks[-1])
    assert store.get_task(run_id).status == "completed"
    assert_cascade(run_id, pipe)


def test_a_retry_callable_decides_with_increasing_retry_counts():
    calls: list[tuple[Any, str, int]] = []

    def policy(pipeline, node, retries):
        calls.append((pipeline, node.name, retries))
        return retries < 2

    pipe = PipelineController("retry-callable", "failure-tests")
    pipe.add_function_step("always", fail, function_kwargs={"message": "never works"},
                           retry_on_failure=policy)
    run_id = run_locally(pipe)

    assert [(name, retries) for _, name, retries in calls] == [("always", 0), ("always", 1),
                                                                ("always", 2)]
    assert all(p is pipe for p, _, _ in calls)
    node = pipe.get_pipeline_dag()["always"]
    assert node.status == "failed" and node.attempt == 2 and len(node.tasks) == 3
    assert {get_store().get_task(t).status for t in node.tasks} == {"failed"}
    assert get_store().get_task(run_id).status == "failed"
    assert_cascade(run_id, pipe)


@pytest.mark.exclusive
@pytest.mark.parametrize("executor", ["thread", "subprocess"])
def test_time_limit_fails_a_step_that_runs_too_long(executor, tmp_path):
    pidfile, release, done = (str(tmp_path / n) for n in ("step.pid", "release", "done"))
    pipe = PipelineController("time-limit", "failure-tests")
    pipe.add_function_step("slow", sleep_unless_released,
                           function_kwargs={"pidfile": pidfile, "release": release,
                                            "done": done, "seconds": 60},
                           function_return=["out"], time_limit=1)
    pipe.add_function_step("after", echo, function_kwargs={"x": "${slow.out}"})
    begun = time.monotonic()
    try:
        run_id = run_locally(pipe, executor)
        elapsed = time.monotonic() - begun
    finally:
        Path(release).touch()
    node = pipe.get_pipeline_dag()["slow"]
    pid, thread = read_pids(Path(pidfile))
    if executor == "thread":
        # Python cannot kill a thread: let it end, then check its late result was dropped.
        wait_until(lambda: thread not in {t.ident for t in threading.enumerate()}, 10,
                   "the released step's thread to end")
        assert os.path.exists(done)
        assert get_store().list_artifacts(node.tasks[0]) == []
    else:
        assert is_gone(pid)
        assert not os.path.exists(done)

    assert elapsed < 6, f"a 1 s time limit ended the run after {elapsed:.1f} s"
    assert node.status == "failed" and "time limit" in node.reason
    task = get_store().get_task(node.tasks[0])
    assert task.status == "failed" and "time limit" in task.status_reason
    assert node_statuses(run_id) == {"slow": "failed", "after": "skipped"}
    assert get_store().get_task(run_id).status == "failed"
    assert_cascade(run_id, pipe)


# -- 5. RELIABILITY 7: a step killed by SIGKILL --------------------------------------------------


@pytest.mark.exclusive
def test_a_step_killed_by_sigkill_fails_within_2_s_and_the_run_ends(tmp_path):
    pidfile = tmp_path / "victim.pid"
    pipe = PipelineController("sigkill", "failure-tests")
    pipe.add_function_step("victim", write_pid_and_sleep,
                           function_kwargs={"path": str(pidfile), "seconds": 60},
                           function_return=["out"])
    pipe.add_function_step("after", echo, function_kwargs={"x": "${victim.out}"},
                           function_return=["out"])
    pipe.add_function_step("further", echo, function_kwargs={"x": "${after.out}"})
    pipe.start_locally(run_pipeline_steps_locally=True, executor="subprocess", wait=False)
    try:
        (pid,) = read_pids(pidfile)
        node = pipe.get_pipeline_dag()["victim"]
        task_id = node.tasks[0]
        assert get_store().get_task(task_id).status == "in_progress"
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: get_store().get_task(task_id).status == "failed", 2,
                   "the killed step's task to be failed")
        wait_until(lambda: node.status == "failed", 2 - (time.monotonic() - killed),
                   "the killed step's node to be failed")
    finally:
        ended = pipe.wait(timeout=30)
    assert ended
    run_id = pipe.id
    assert "killed by signal 9" in node.reason
    assert "killed by signal 9" in get_store().get_task(task_id).status_reason
    assert node_statuses(run_id) == {"victim": "failed", "after": "skipped",
                                     "further": "skipped"}
    run = get_store().get_task(run_id)
    assert run.status == "failed" and "'victim'" in run.status_reason
    assert "killed by signal 9" in run.status_reason
    assert_cascade(run_id, pipe)


# -- 6. RELIABILITY 10: stop() kills the step's whole process tree -------------------------------


def test_stop_kills_every_process_of_a_running_step_and_stops_the_run(tmp_path):
    pidfile = tmp_path / "tree.pids"
    pipe = PipelineController("stop", "failure-tests")
    pipe.add_function_step("tree", spawn_grandchild_and_sleep,
                           function_kwargs={"path": str(pidfile), "seconds": 60},
                           function_return=["out"])
    pipe.add_function_step("after", echo, function_kwargs={"x": "${tree.out}"})
    pipe.start_locally(run_pipeline_steps_locally=True, executor="subprocess", wait=False)
    try:
        step_pid, grandchild = read_pids(pidfile)
        task_id = pipe.get_pipeline_dag()["tree"].tasks[0]
        assert processes_running(task_id) == [step_pid]
    finally:
        pipe.stop(timeout=30)
    assert not pipe.is_running()
    assert is_gone(step_pid), "the step's worker process survived stop()"
    assert is_gone(grandchild), "the step's grandchild process survived stop()"
    assert processes_running(task_id) == []

    run_id = pipe.id
    assert pipe.get_pipeline_dag()["tree"].status == "stopped"
    assert get_store().get_task(task_id).status == "stopped"
    assert node_statuses(run_id) == {"tree": "stopped", "after": "skipped"}
    assert get_store().get_task(run_id).status == "stopped"
    assert not pipe.is_successful()
    assert_cascade(run_id, pipe)


def test_stop_while_a_step_waits_for_a_pool_thread_still_ends_the_run(tmp_path):
    """A step submitted to the thread pool but not started yet (its one thread is still busy
    with a timed-out step, which Python cannot kill) is cancelled cleanly: the run ends.
    """
    pidfile, release, done = (str(tmp_path / n) for n in ("step.pid", "release", "done"))
    pipe = PipelineController("stop-queued", "failure-tests")
    pipe.add_function_step("slow", sleep_unless_released,
                           function_kwargs={"pidfile": pidfile, "release": release,
                                            "done": done, "seconds": 60}, time_limit=0.5)
    pipe.add_function_step("waiting", echo, function_kwargs={"x": 1})
    pipe.start_locally(run_pipeline_steps_locally=True, executor="thread", max_workers=1,
                       wait=False)
    try:
        _, thread = read_pids(Path(pidfile))
        dag = pipe.get_pipeline_dag()
        wait_until(lambda: dag["slow"].status == "failed"
                   and dag["waiting"].status == "in_progress", 10,
                   "the next step to be handed to the busy pool")
        pipe.stop(timeout=30)
        ended = pipe.wait(timeout=30)
    finally:
        Path(release).touch()
    wait_until(lambda: thread not in {t.ident for t in threading.enumerate()}, 10,
               "the released step's thread to end")
    assert ended
    run_id = pipe.id
    assert dag["waiting"].status == "stopped"
    assert get_store().get_task(dag["waiting"].tasks[0]).status == "stopped"
    assert node_statuses(run_id) == {"slow": "failed", "waiting": "stopped"}
    assert get_store().get_task(run_id).status == "stopped"
    assert_cascade(run_id, pipe)


# -- 8. RELIABILITY 18: upload/consume ordering --------------------------------------------------


@pytest.mark.parametrize("executor", ["thread", "subprocess"])
def test_a_downstream_step_starts_only_after_the_upstream_artifact_verifies(executor):
    seen: list[tuple[str, str, bool]] = []

    def on_status(pipeline, node, previous_status):
        if node.status != "in_progress":
            return
        # the consumer's task now exists and is about to be handed to the executor
        producer = pipeline.get_pipeline_dag()["produce"].executed
        store = get_store()
        store.get_artifact(producer, "blob")  # the row is committed (else ArtifactNotFound)
        value = Task(producer).artifacts["blob"].get()  # and its digest verifies
        params = store.get_parameters(node.job.task_id())
        assert params["kwargs_artifacts/data"].value == f"{producer}.blob"
        seen.append((node.name, store.get_task(producer).status, value == BIG))

    pipe = PipelineController("ordering", "failure-tests")
    pipe.add_function_step("produce", make_big, function_return=["blob"])
    pipe.add_function_step("consume", size_of, function_kwargs={"data": "${produce.blob}"},
                           function_return=["size", "same"], status_change_callback=on_status)
    run_id = run_locally(pipe, executor)

    assert seen == [("consume", "completed", True)]
    assert pipe.is_successful()
    consumer = Task(pipe.get_pipeline_dag()["consume"].executed)
    assert (consumer.artifacts["size"].get(), consumer.artifacts["same"].get()) == (len(BIG),
                                                                                    True)
    assert_cascade(run_id, pipe)


@pytest.mark.parametrize("executor", ["thread", "subprocess"])
def test_a_corrupted_upstream_object_fails_the_downstream_step(executor, tmp_path):
    marker = str(tmp_path / "consumer-ran")
    corrupted: list[Path] = []

    def corrupt(pipeline, node, parameters):
        producer = pipeline.get_pipeline_dag()["produce"].executed
        path = get_store().blobs.path(Task(producer).artifacts["blob"].digest)
        assert path.is_file()  # > 32 KiB: a file in the object store, not an inline value
        data = bytearray(path.read_bytes())
        data[1000] ^= 0xFF
        path.write_bytes(bytes(data))
        corrupted.append(path)

    pipe = PipelineController("corrupt", "failure-tests")
    pipe.add_function_step("produce", make_big, function_return=["blob"])
    pipe.add_function_step("consume", size_of,
                           function_kwargs={"data": "${produce.blob}", "marker": marker},
                           function_return=["size", "same"], pre_execute_callback=corrupt)
    pipe.add_function_step("after", echo, function_kwargs={"x": "${consume.size}"})
    run_id = run_locally(pipe, executor)

    assert len(corrupted) == 1
    node = pipe.get_pipeline_dag()["consume"]
    assert node.status == "failed" and "ArtifactCorrupt" in node.reason
    assert "'blob'" in node.reason
    assert not os.path.exists(marker), "the step ran on a corrupted input"
    assert get_store().list_artifacts(node.tasks[0]) == []
    assert node_statuses(run_id) == {"produce": "completed", "consume": "failed",
                                     "after": "skipped"}
    assert get_store().get_task(run_id).status == "failed"
    assert_cascade(run_id, pipe)
