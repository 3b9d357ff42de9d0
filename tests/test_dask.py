"""The dask executor (``plugins/executors/dask.py``) on real loopback ``LocalCluster``s: a
50-step pipeline on two workers, a decorated pipeline, failures, cancel, a worker SIGKILLed
mid-step (rescheduled, or given up on with ``KilledWorker``), refused addresses, the
missing extra, and the executor contract.

One cluster serves the module (its scheduler gives up on a job at the first worker that dies
under it, ``allowed_failures=0``); the executor connects to it by address, and each job
carries its test's store location. One test starts the executor's own ``LocalCluster``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# (not importorskip: the test extra installs dask, and CI must fail loudly without it)
import distributed
import psutil
import pytest
from pipeline_helpers import assert_cascade, node_statuses, run_locally, step_tasks

from pipekit import PipelineController, PipelineDecorator, Task
from pipekit.config import DASK_ADDRESS_ENV
from pipekit.errors import PluginError
from pipekit.executor import capabilities, make_executor
from pipekit.store import get_store
from pipekit.testing import ExecutorContract, wait_until

# One worker runs the module: its tests share the cluster below.
pytestmark = pytest.mark.xdist_group("dask")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address="127.0.0.1:0",
                                  scheduler_kwargs={"allowed_failures": 0}) as running:
        yield running


@pytest.fixture
def on_cluster(cluster, monkeypatch):
    """The run's executor connects to the module's cluster (``PIPEKIT_DASK_ADDRESS``)."""
    monkeypatch.setenv(DASK_ADDRESS_ENV, cluster.scheduler_address)
    return cluster


# -- step functions (module level: workers import them by reference) -------------------------------


def seed():
    return 1


def plus(x, n):
    return x + n


def total(a, b, c, d, e):
    return a + b + c + d + e


def pid_of_worker(base):
    return [base, os.getpid()]


def fail(message):
    raise ValueError(message)


def wait_for_release(pidfile, release, seconds=60.0):
    """Record this process's pid, then wait (bounded) for the test to let go."""
    Path(pidfile).write_text(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)  # a step's pace, not the test's synchronisation
    return "released"


@PipelineDecorator.component(return_values=["y"], cache=False)
def square(x):
    return x * x


@PipelineDecorator.component(return_values=["s"], cache=False)
def add_all(values):
    return sum(values)


@PipelineDecorator.pipeline(name="dask-decorated", project="dask")
def decorated(n=4):
    return add_all([square(i) for i in range(n)])


# -- pipelines on the cluster ----------------------------------------------------------------------


def test_fifty_function_steps_complete_on_two_workers(on_cluster):
    """seed -> 40 fan-out steps -> 8 sums of 5 -> 1 total: 50 steps, results in the store."""
    pipe = PipelineController("fifty", "dask")
    pipe.add_function_step("seed", seed, function_return=["out"])
    for i in range(40):
        pipe.add_function_step(f"fan_{i}", plus, function_kwargs={"x": "${seed.out}", "n": i},
                               function_return=["out"])
    for g in range(8):
        pipe.add_function_step(
            f"sum_{g}", total, function_return=["out"],
            function_kwargs={k: f"${{fan_{5 * g + j}.out}}" for j, k in enumerate("abcde")})
    pipe.add_function_step("total", pid_of_worker, function_kwargs={"base": 0},
                           parents=[f"sum_{g}" for g in range(8)], function_return=["out"])
    run_id = run_locally(pipe, "dask", max_workers=4)

    statuses = node_statuses(run_id)
    assert len(statuses) == 50 and set(statuses.values()) == {"completed"}, statuses
    tasks = step_tasks(run_id)
    assert all(t.status == "completed" for t in tasks.values())
    for i in range(40):
        assert Task(tasks[f"fan_{i}"].id).artifacts["out"].get() == 1 + i
    for g in range(8):
        assert Task(tasks[f"sum_{g}"].id).artifacts["out"].get() == sum(
            1 + 5 * g + j for j in range(5))
    worker_pids = {int(t.worker.rpartition(":")[2]) for t in tasks.values()}
    assert worker_pids <= _worker_pids(on_cluster)
    assert len(worker_pids) == 2, "the steps did not spread over both workers"
    assert os.getpid() not in worker_pids
    assert_cascade(run_id, pipe)


def big(n):
    return list(range(n))  # over 32 KiB as JSON: an object file, not inline


def test_steps_on_the_cluster_write_their_objects_where_the_store_keeps_them(
        on_cluster, monkeypatch, tmp_path):
    """A store whose objects live elsewhere (PIPEKIT_ARTIFACTS) keeps them there, from the
    workers too."""
    objects = tmp_path / "shared-objects"
    monkeypatch.setenv("PIPEKIT_ARTIFACTS", str(objects))
    pipe = PipelineController("objects", "dask")
    pipe.add_function_step("big", big, function_kwargs={"n": 20_000}, function_return=["out"])
    run_id = run_locally(pipe, "dask", max_workers=2)
    [task] = step_tasks(run_id).values()
    digest = Task(task.id).artifacts["out"].digest
    assert (objects / digest[:2] / digest).is_file()
    assert not (get_store().settings.home / "artifacts" / digest[:2] / digest).exists()
    assert Task(task.id).artifacts["out"].get() == list(range(20_000))


def test_a_decorated_pipeline_runs_its_components_on_the_cluster(on_cluster):
    PipelineDecorator.run_locally(executor="dask")
    assert decorated(n=4) == 0 + 1 + 4 + 9
    (run,) = get_store().find_tasks(type=["controller"])
    run_id = run.id
    tasks = step_tasks(run_id)
    assert len(tasks) == 5 and {t.status for t in tasks.values()} == {"completed"}
    assert int(tasks["add_all"].worker.rpartition(":")[2]) in _worker_pids(on_cluster)
    assert_cascade(run_id)


def test_a_step_that_raises_is_failed_with_its_error(on_cluster):
    pipe = PipelineController("failing", "dask")
    pipe.add_function_step("bad", fail, function_kwargs={"message": "bad input 7"},
                           function_return=["out"])
    pipe.add_function_step("after", plus, function_kwargs={"x": "${bad.out}", "n": 1},
                           function_return=["out"])
    run_id = run_locally(pipe, "dask")

    assert node_statuses(run_id) == {"bad": "failed", "after": "skipped"}
    bad = step_tasks(run_id)["bad"]
    assert bad.status == "failed" and bad.status_reason == "ValueError: bad input 7"
    assert "Traceback" in Task(bad.id).get_log()
    assert get_store().get_task(run_id).status == "failed"
    assert_cascade(run_id, pipe)


def test_stopping_a_run_ends_its_running_step_stopped(on_cluster, tmp_path):
    pidfile, release = tmp_path / "step.pid", tmp_path / "release"
    pipe = PipelineController("cancelled", "dask")
    pipe.add_function_step("long", wait_for_release,
                           function_kwargs={"pidfile": str(pidfile), "release": str(release)},
                           function_return=["out"])
    pipe.add_function_step("after", plus, function_kwargs={"x": "${long.out}", "n": 1},
                           function_return=["out"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor="dask", wait=False)
    try:
        wait_until(lambda: pidfile.exists() and pidfile.read_text(), 30, "the step to start")
        pipe.stop(timeout=30)
        assert pipe.wait(30)
        run_id = pipe.id
        assert node_statuses(run_id) == {"long": "stopped", "after": "skipped"}
        long_task = step_tasks(run_id)["long"]
        assert long_task.status == "stopped"
        assert get_store().get_task(run_id).status == "stopped"
        assert_cascade(run_id, pipe)
    finally:
        release.write_text("")  # the abandoned worker thread ends (its result is discarded)
    # the late return changes nothing
    wait_until(lambda: not _busy(on_cluster), 30, "the abandoned step's thread to end")
    assert get_store().get_task(long_task.id).status == "stopped"
    assert "out" not in Task(long_task.id).artifacts


def test_a_worker_killed_mid_step_fails_the_step_killed_worker(on_cluster, tmp_path):
    """The module's scheduler gives up at the first worker that dies under a job: the step
    is failed ``worker lost: KilledWorker: …``, its descendant skipped, nothing left open."""
    pidfile, release = tmp_path / "step.pid", tmp_path / "release"
    pipe = PipelineController("killed", "dask")
    pipe.add_function_step("victim", wait_for_release,
                           function_kwargs={"pidfile": str(pidfile), "release": str(release)},
                           function_return=["out"])
    pipe.add_function_step("after", plus, function_kwargs={"x": "${victim.out}", "n": 1},
                           function_return=["out"])
    pipe.add_function_step("other", seed, function_return=["out"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor="dask", wait=False)
    try:
        pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), 30,
                             "the step to start"))
        assert pid in _worker_pids(on_cluster)
        os.kill(pid, signal.SIGKILL)
        assert pipe.wait(60), "the run did not end after its worker was killed"
    finally:
        release.write_text("")
    run_id = pipe.id
    victim = step_tasks(run_id)["victim"]
    assert victim.status == "failed", victim
    assert victim.status_reason.startswith("worker lost: KilledWorker: ")
    assert node_statuses(run_id) == {"victim": "failed", "after": "skipped",
                                     "other": "completed"}
    _assert_nothing_open(run_id)
    assert_cascade(run_id, pipe)
    # the nanny starts a fresh worker: the cluster is whole again for the next test
    on_cluster.wait_for_workers(2, timeout=30)


# -- the executor's own LocalCluster ---------------------------------------------------------------


def test_its_own_local_cluster_reschedules_a_lost_step_fenced(tmp_path, capfd):
    """No address: the executor starts a loopback LocalCluster (2 workers, dashboard on
    127.0.0.1, printed and recorded on the run) and closes it at the end. A worker SIGKILLed
    mid-step: dask reschedules the job, whose rerun finds the step started and fails it
    ``worker lost`` instead of running it twice; the other steps complete."""
    pidfile, release = tmp_path / "step.pid", tmp_path / "release"
    pipe = PipelineController("own-cluster", "dask")
    pipe.add_function_step("victim", wait_for_release,
                           function_kwargs={"pidfile": str(pidfile), "release": str(release)},
                           function_return=["out"], continue_on_fail=True)
    pipe.add_function_step("other", pid_of_worker, function_kwargs={"base": 1},
                           function_return=["out"])
    pipe.add_function_step("later", pid_of_worker, function_kwargs={"base": 2},
                           parents=["other"], function_return=["out"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor="dask", max_workers=2,
                       wait=False)
    try:
        pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), 60,
                             "the step to start"))
        os.kill(pid, signal.SIGKILL)
        assert pipe.wait(60), "the run did not end after its worker was killed"
    finally:
        release.write_text("")
    run_id = pipe.id
    tasks = step_tasks(run_id)
    victim = tasks["victim"]
    assert victim.status == "failed", victim
    assert victim.status_reason.startswith(f"worker lost: the dask worker running it "
                                           f"({victim.worker}) was lost mid-step")
    assert tasks["other"].status == "completed" and tasks["later"].status == "completed"
    _assert_nothing_open(run_id)
    assert_cascade(run_id, pipe)

    err = capfd.readouterr().err
    dashboards = [line for line in err.splitlines() if line.startswith("pipekit: dask dashboard")]
    assert len(dashboards) == 1 and "http://127.0.0.1:" in dashboards[0], err
    recorded = get_store().get_parameters(run_id)["properties/dask_dashboard"].value
    assert dashboards[0] == f"pipekit: dask dashboard {recorded}"
    # shut down with the run: the cluster's worker processes are gone
    workers = {int(tasks[name].worker.rpartition(":")[2]) for name in ("other", "later")}
    wait_until(lambda: not any(psutil.pid_exists(w) for w in workers), 30,
               "the LocalCluster's workers to exit")


# -- addresses, the extra, capabilities ------------------------------------------------------------


@pytest.mark.parametrize("address", ["tcp://10.1.2.3:8786", "10.1.2.3:8786",
                                     "tcp://dask.example.com:8786", "ws://192.168.7.7:8786"])
def test_an_unencrypted_address_off_this_machine_is_refused(address):
    with pytest.raises(PluginError) as caught:
        make_executor("dask", address=address)
    message = str(caught.value)
    assert message.startswith(f"dask executor: refusing {address}: ")
    assert "TLS" in message and "\n" not in message


def test_the_address_setting_is_checked_and_a_refused_step_fails_naming_it(monkeypatch):
    monkeypatch.setenv(DASK_ADDRESS_ENV, "tcp://10.1.2.3:8786")
    pipe = PipelineController("refused", "dask")
    pipe.add_function_step("one", seed, function_return=["out"])
    run_id = run_locally(pipe, "dask")
    one = step_tasks(run_id)["one"]
    assert one.status == "failed"
    assert "dask executor: refusing tcp://10.1.2.3:8786: " in one.status_reason
    assert_cascade(run_id, pipe)


def test_tls_needs_its_files(monkeypatch, tmp_path):
    with pytest.raises(PluginError, match=r"tls://10.1.2.3:8786 needs TLS files: set "
                                          r"PIPEKIT_DASK_TLS_CA"):
        make_executor("dask", address="tls://10.1.2.3:8786")
    monkeypatch.setenv("PIPEKIT_DASK_TLS_CA", str(tmp_path / "ca.pem"))
    with pytest.raises(PluginError, match=r"needs PIPEKIT_DASK_TLS_CERT, PIPEKIT_DASK_TLS_KEY"):
        make_executor("dask", address="tls://10.1.2.3:8786")


def test_a_loopback_address_needs_no_tls():
    ex = make_executor("dask", address="tcp://127.0.0.1:8786")  # nothing connects before submit
    ex.shutdown()
    assert not capabilities("dask").kills_trees and not capabilities("dask").runs_in_caller


def test_without_the_extra_one_clear_line(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['distributed'] = None\n"  # as if the dask extra were not installed
        "import pipekit, pipekit_plugins.executors.dask\n"
        "assert 'dask' not in sys.modules, 'the plugin imported dask at import time'\n"
        "from pipekit.errors import PluginError\n"
        "from pipekit.executor import make_executor\n"
        "try:\n"
        "    make_executor('dask')\n"
        "except PluginError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "the dask executor needs the dask extra: pip install 'pipekit[dask]'\n"


# -- the executor contract -------------------------------------------------------------------------


class TestDaskContract(ExecutorContract):
    """Script tasks too: the worker runs them as child processes, and kills their tree once
    the task is stopped."""

    executor = "dask"

    @pytest.fixture(autouse=True)
    def _on_cluster(self, on_cluster):
        return on_cluster


# -- helpers ---------------------------------------------------------------------------------------


def _worker_pids(cluster) -> set[int]:
    client = distributed.Client(cluster, set_as_default=False)
    try:
        return {pid for pid in client.run(os.getpid).values()}
    finally:
        client.close()


def _threads_busy(dask_worker) -> int:
    return len(dask_worker.active_threads)


def _busy(cluster) -> bool:
    """Whether a worker thread runs a job (a cancelled one included: dask cannot stop it)."""
    client = distributed.Client(cluster, set_as_default=False)
    try:
        return any(client.run(_threads_busy).values())
    finally:
        client.close()


def _assert_nothing_open(run_id: str) -> None:
    left = [t for t in get_store().find_tasks(parent=run_id)
            if t.status in ("created", "queued", "in_progress")]
    assert not left, left



@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_a_tls_scheduler_is_reached_with_the_configured_files(tmp_path, monkeypatch):
    """A ``tls://`` address with PIPEKIT_DASK_TLS_*: the certificates made as
    docs/scaling.md makes them (one CA, a pair per role; here one pair serves all)."""
    ca, cert, key = (str(tmp_path / name) for name in ("ca.pem", "node.pem", "node.key"))
    for args in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                  "/CN=pipekit-dask-ca", "-keyout", str(tmp_path / "ca.key"), "-out", ca],
                 ["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=node", "-keyout", key,
                  "-out", str(tmp_path / "node.csr")],
                 ["x509", "-req", "-in", str(tmp_path / "node.csr"), "-CA", ca, "-CAkey",
                  str(tmp_path / "ca.key"), "-CAcreateserial", "-days", "2", "-out", cert]):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)
    roles = {f"tls_{role}_{kind}": path for role in ("scheduler", "worker", "client")
             for kind, path in (("cert", cert), ("key", key))}
    security = distributed.Security(tls_ca_file=ca, require_encryption=True, **roles)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", protocol="tls", security=security,
                                  dashboard_address="127.0.0.1:0") as tls_cluster:
        assert tls_cluster.scheduler_address.startswith("tls://127.0.0.1:")
        monkeypatch.setenv(DASK_ADDRESS_ENV, tls_cluster.scheduler_address)
        for env, path in (("CA", ca), ("CERT", cert), ("KEY", key)):
            monkeypatch.setenv(f"PIPEKIT_DASK_TLS_{env}", path)
        pipe = PipelineController("over-tls", "dask")
        pipe.add_function_step("one", plus, function_kwargs={"x": 1, "n": 2},
                               function_return=["out"])
        run_id = run_locally(pipe, "dask")
    one = step_tasks(run_id)["one"]
    assert one.status == "completed", one
    assert Task(one.id).artifacts["out"].get() == 3
    assert_cascade(run_id, pipe)
