"""The Store contract: tasks, parameters, configuration, status, clones, queues, runs and
claims — within one process, across processes, and under the 8-process write stress of the
acceptance criteria.

Written once as :class:`StoreContract` and run over SQLite by :class:`TestSqliteStore`; a
second backend (PostgreSQL) subclasses the contract with its own ``store`` fixture and runs it
unchanged.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from strategies import param_dicts

from pipekit import params as P
from pipekit.errors import LeaseLost, QueueNotFound, TaskIdPrefixError, TaskNotFound, TaskStateError
from pipekit.models import (
    CacheEntry,
    Claim,
    Lease,
    NodeRecord,
    ObjectRef,
    ParamInfo,
    PipelineRecord,
    RunRecord,
    RunSummary,
    Status,
)
from pipekit.store import Store, get_store
from pipekit.store import tables as t
from pipekit.store.dialect import SQLITE
from pipekit.testing import wait_until


def start_children(tmp_path: Path, code: str, args_list: list[list[str]]
                   ) -> list[subprocess.Popen]:
    """Start one interpreter per argument list running ``code`` (stdout/stderr to files)."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    procs = []
    for n, args in enumerate(args_list):
        out = open(tmp_path / f"child{n}.out", "w")  # noqa: SIM115 - closed by finish()
        err = open(tmp_path / f"child{n}.err", "w")  # noqa: SIM115
        procs.append(subprocess.Popen([sys.executable, str(script), *args], stdout=out,
                                      stderr=err, cwd=tmp_path, env=dict(os.environ)))
        out.close()
        err.close()
    return procs


def finish_children(tmp_path: Path, procs: list[subprocess.Popen], timeout: float
                    ) -> list[tuple[int, str, str]]:
    """Wait for every child (killing any still alive at the deadline); returns
    ``(returncode, stdout, stderr)`` of each."""
    deadline = time.monotonic() + timeout
    try:
        for proc in procs:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [(proc.returncode, (tmp_path / f"child{n}.out").read_text(),
             (tmp_path / f"child{n}.err").read_text()) for n, proc in enumerate(procs)]


# -- what the child processes of the contract run ----------------------------------------------

FINISH_RACE = """
import json, sys, time
from pathlib import Path
from pipekit.store import get_store
from pipekit.models import Status

status, go, ids = Status(sys.argv[1]), Path(sys.argv[2]), json.loads(Path(sys.argv[3]).read_text())
store = get_store()
store.get_task(ids[0])
Path(sys.argv[4]).touch()  # ready
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.001)
won = [store.set_status(tid, status, reason=f"by {status.value}") for tid in ids]
print(json.dumps(won))
"""


CLAIM_RACE = """
import json, sys, time
from pathlib import Path
from pipekit.store import get_store

worker, go = sys.argv[1], Path(sys.argv[2])
store = get_store()
store.list_queues()  # connection open, schema checked, before the start line
Path(sys.argv[3]).touch()  # ready
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.001)
taken = []
while (claim := store.claim(["default"], worker)) is not None:
    taken.append(claim.task.id)
print(json.dumps(taken))
"""


CROSS_PROCESS = """
import json, sys
from pathlib import Path
import numpy as np
import pandas as pd
from pipekit import Task

folder = Path("tree")
(folder / "sub").mkdir(parents=True)
(folder / "a.txt").write_text("alpha")
(folder / "sub" / "b.bin").write_bytes(bytes(range(256)))
Path("report.csv").write_text("x,y\\n1,2\\n")

task = Task.init(project_name="xproc", task_name="writer")
config = task.connect({"lr": 0.01, "epochs": 3, "name": "résumé", "flags": [1, 2],
                       "nested": {"depth": 2}})
task.connect({"batch": 32}, name="Data")
task.connect_configuration({"model": {"layers": 4}}, name="model")
task.upload_artifact("as_json", {"ünï": "cödé", "n": [1, 2.5, None]})
task.upload_artifact("as_bytes", b"\\x00\\x01raw")
task.upload_artifact("as_numpy", np.arange(12, dtype=np.int32).reshape(3, 4))
task.upload_artifact("as_big_numpy", np.linspace(0, 1, 10_000))
task.upload_artifact("as_frame", pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
task.upload_artifact("as_file", Path("report.csv"))
task.upload_artifact("as_folder", folder)
task.upload_artifact("as_pickle", (1, "two", {3: 4}))
logger = task.get_logger()
for i in range(10):
    logger.report_scalar("loss", "train", 1.0 / (i + 1), iteration=i)
    logger.report_scalar("loss", "val", 2.0 / (i + 1), iteration=i)
logger.report_single_value("accuracy", 0.93)
print("hello from the child process")
print(json.dumps({"id": task.id}), file=sys.stderr)
"""


IN_FLIGHT_SCALARS = """
import json, threading, time
from pipekit.models import Status
from pipekit.store import get_store
from pipekit.task import Task

store = get_store()
taken = threading.Event()
original = store.add_scalars

def slow_add_scalars(task_id, points):
    if threading.current_thread().name == "pipekit-metrics":
        taken.set()  # the background flusher holds the batch now
        time.sleep(0.3)  # a slow commit (waiting for the write lock), not synchronisation
    return original(task_id, points)

store.add_scalars = slow_add_scalars
task = Task(store.create_task(project="p", name="t", status=Status.in_progress).id)
for i in range(50):
    task.get_logger().report_scalar("loss", "train", float(i), iteration=i)
assert taken.wait(30), "the background flusher never ran"
task.mark_completed()  # must not return before the in-flight batch is stored
print(json.dumps({"id": task.id, "seen": len(store.scalars(task.id))}))
"""


STRESS_WORKERS = 8
STRESS_TASKS = 200
STRESS_SCALARS = 50

STRESS_CHILD = """
import json, logging, sys, time, traceback
from pathlib import Path

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)  # anything above DEBUG shows
worker, go, n_tasks, n_scalars = int(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), \\
    int(sys.argv[4])
from pipekit.models import Status
from pipekit.store import get_store
from pipekit.task import Task

store = get_store()
store.list_queues()  # connection open, schema checked, before the start line
Path(f"ready{worker}").touch()
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("never got the go signal")
    time.sleep(0.001)

errors, ids = [], []
started = time.monotonic()
for i in range(n_tasks):
    try:
        info = store.create_task(project="stress", name=f"w{worker}-t{i}",
                                 status=Status.in_progress)
        ids.append(info.id)
        task = Task(info.id)
        logger = task.get_logger()
        for j in range(n_scalars):
            logger.report_scalar("loss", "train", worker + i / 1000 + j / 1e6, iteration=j)
        task.upload_artifact("result", {"worker": worker, "i": i})
        task.mark_completed()
    except BaseException as exc:
        errors.append("".join(traceback.format_exception(exc)))
print(json.dumps({"worker": worker, "ids": ids, "errors": errors,
                  "seconds": time.monotonic() - started}))
"""


class StoreContract:
    """What every store backend must do, through :class:`~pipekit.store.Store` only.

    A backend's test class subclasses this and provides a ``store`` fixture: that backend's
    store, opened by :func:`~pipekit.store.get_store` under settings that the processes a test
    starts inherit through the environment (``PIPEKIT_HOME``, ``PIPEKIT_DB``). Row counts are
    read through the peewee tables, which are bound to whichever database the store opened.
    """

    # -- tasks ---------------------------------------------------------------------------------

    def test_create_and_get_task_round_trips_every_field(self, store: Store):
        info = store.create_task(
            project="proj", name="train", type="testing", tags=["a", "b", "a"],
            script={"path": "/x/train.py", "argv": ["--lr", "0.1"]}, code_digest="d" * 64,
            code="print('hi')",
            params=[ParamInfo("Args", "lr", "0.1", "float"), ParamInfo("General", "n", "3", "int")],
            configurations={"cfg": ('{"k": 1}', "json")},
        )
        got = store.get_task(info.id)
        assert got == info
        assert got.user == getpass.getuser()  # who created it (of a run: who ran it)
        assert (got.project, got.name, got.type, got.status) == ("proj", "train", "testing",
                                                                 "created")
        assert got.tags == ("a", "b")  # de-duplicated, order kept
        assert got.script == {"path": "/x/train.py", "argv": ["--lr", "0.1"]}
        assert got.code_digest == "d" * 64
        assert got.started is None and got.ended is None
        assert got.log_path == str(store.log_path(info.id))
        assert list(store.get_parameters(info.id)) == ["Args/lr", "General/n"]
        assert store.get_configuration(info.id, "cfg") == ('{"k": 1}', "json")
        assert store.list_projects() == ["proj"]

    def test_get_unknown_task_raises_task_not_found_naming_it(self, store: Store):
        with pytest.raises(TaskNotFound, match="nope"):
            store.get_task("nope")
        with pytest.raises(TaskNotFound):
            store.set_parameters("nope", [ParamInfo("General", "x", "1", "int")])
        with pytest.raises(TaskNotFound):
            store.update_task("nope", comment="x")

    def test_find_tasks_filters_and_orders_newest_first(self, store: Store):
        a = store.create_task(project="p1", name="a", tags=["x"])
        b = store.create_task(project="p1", name="b", tags=["x", "y"], type="testing")
        c = store.create_task(project="p2", name="a", parent=a.id)
        store.set_status(b.id, Status.in_progress)
        store.set_archived(c.id, True)
        ids = lambda tasks: [x.id for x in tasks]  # noqa: E731
        assert ids(store.find_tasks()) == [c.id, b.id, a.id]
        assert ids(store.find_tasks(project="p1")) == [b.id, a.id]
        assert ids(store.find_tasks(name="a")) == [c.id, a.id]
        assert ids(store.find_tasks(tags=["x"])) == [b.id, a.id]
        assert ids(store.find_tasks(tags=["x", "y"])) == [b.id]
        assert ids(store.find_tasks(status=["in_progress"])) == [b.id]
        assert ids(store.find_tasks(type=["testing"])) == [b.id]
        assert ids(store.find_tasks(parent=a.id)) == [c.id]
        assert ids(store.find_tasks(include_archived=False)) == [b.id, a.id]
        assert ids(store.find_tasks(limit=2)) == [c.id, b.id]
        assert store.find_tasks(project="none") == []

    def test_resolve_task_id_by_unique_prefix(self, store: Store):
        info = store.create_task(project="p", name="a")
        assert store.resolve_task_id(info.id) == info.id
        assert store.resolve_task_id(info.id[:8]) == info.id
        with pytest.raises(TaskNotFound):
            store.resolve_task_id(info.id[:3])  # too short to be a prefix
        with pytest.raises(TaskNotFound):
            store.resolve_task_id("ffffffffffff")

    def test_a_short_or_shared_prefix_says_how_many_characters_it_needs(self, store: Store):
        one = store.create_task(project="p", name="a", task_id="abcdef01" + "0" * 24)
        with pytest.raises(TaskIdPrefixError) as info:
            store.resolve_task_id("abc")
        assert str(info.value) == ("task id prefix 'abc' is too short (1 task starts with it): "
                                   "give at least 6 characters of the id")
        assert (info.value.matches, info.value.needed) == (1, 6)
        assert isinstance(info.value, TaskNotFound)  # still a lookup that found no task
        assert store.resolve_task_id("abcdef") == one.id
        store.create_task(project="p", name="b", task_id="abcdef0123" + "0" * 22)
        store.create_task(project="p", name="c", task_id="abcdef9" + "0" * 25)
        with pytest.raises(TaskIdPrefixError) as info:
            store.resolve_task_id("abcdef")  # long enough, but three tasks share it
        assert str(info.value) == ("task id prefix 'abcdef' is ambiguous (3 tasks start with "
                                   "it): give at least 9 characters of the id")
        assert store.resolve_task_id("abcdef01" + "0" * 2) == one.id
        with pytest.raises(TaskIdPrefixError, match="ambiguous .* at least 9 characters"):
            store.resolve_task_id("abcdef01")  # still two
        with pytest.raises(TaskIdPrefixError, match=r"too short \(3 tasks .* at least 9"):
            store.resolve_task_id("ab")
        with pytest.raises(TaskNotFound, match="unknown task 'abd'"):
            store.resolve_task_id("abd")  # short, and nothing starts with it
        with pytest.raises(TaskNotFound, match="unknown task 'ABCDEF'"):
            store.resolve_task_id("ABCDEF")  # ids are lower-case hex

    def test_a_rolled_back_project_is_not_remembered(self, store):
        """A task insert that fails must not leave a cached id for a project that was rolled
        back with it."""
        store.create_task(project="p", name="first", task_id="a" * 32)
        with pytest.raises(Exception, match="(?i)unique"):  # SQLite: UNIQUE, PostgreSQL: unique
            store.create_task(project="fresh", name="dup", task_id="a" * 32)
        assert "fresh" not in store.list_projects()
        info = store.create_task(project="fresh", name="ok")
        assert store.get_task(info.id).project == "fresh"

    # -- parameters and configuration ----------------------------------------------------------

    def test_parameters_upsert_and_replace(self, store: Store):
        tid = store.create_task(project="p", name="a").id
        store.set_parameters(tid, [ParamInfo("General", "x", "1", "int"),
                                   ParamInfo("General", "y", "a", "str")])
        store.set_parameters(tid, [ParamInfo("General", "x", "2", "int", "updated"),
                                   ParamInfo("Args", "z", "True", "bool")])
        params = store.get_parameters(tid)
        assert list(params) == ["General/x", "General/y", "Args/z"]  # insertion order, no dupes
        assert params["General/x"] == ParamInfo("General", "x", "2", "int", "updated")
        assert params["General/y"].value == "a"
        assert t.Parameter.select().where(t.Parameter.task == tid).count() == 3
        store.set_parameters(tid, [ParamInfo("Args", "only", "1", "int")], replace=True)
        assert list(store.get_parameters(tid)) == ["Args/only"]

    # (one contract, run by a subclass per backend: the differing "executors" are by design)
    @settings(max_examples=40, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.differing_executors])
    @given(mapping=param_dicts())
    def test_parameters_round_trip_as_connect_flattens_them(self, store: Store, mapping):
        tid = store.create_task(project="p", name="params").id
        expected = P.to_params("General", mapping)
        store.set_parameters(tid, expected)
        got = store.get_parameters(tid)
        assert list(got.values()) == expected
        for p in expected:  # every value reads back as the type it was stored with
            value = P.cast_param(got[p.key])
            assert P.to_text(value) == p.value

    def test_configuration_set_get_upsert(self, store: Store):
        tid = store.create_task(project="p", name="a").id
        assert store.get_configuration(tid, "cfg") is None
        store.set_configuration(tid, "cfg", '{"a": 1}', "json")
        store.set_configuration(tid, "notes", "free text\nü", "text")
        store.set_configuration(tid, "cfg", '{"a": 2}', "json")
        assert store.get_configuration(tid, "cfg") == ('{"a": 2}', "json")
        assert store.list_configurations(tid) == {"cfg": ('{"a": 2}', "json"),
                                                  "notes": ("free text\nü", "text")}

    # -- status --------------------------------------------------------------------------------

    def test_status_transitions_record_times_and_refuse_illegal_moves(self, store: Store):
        tid = store.create_task(project="p", name="a").id
        assert store.set_status(tid, Status.in_progress, worker="w1")
        running = store.get_task(tid)
        assert running.status == "in_progress" and running.started and running.worker == "w1"
        assert store.set_status(tid, Status.completed)
        done = store.get_task(tid)
        assert done.status == "completed" and done.ended >= done.started
        # A final status is final: neither a second finish nor a late failure moves it.
        assert not store.set_status(tid, Status.failed, reason="late")
        assert not store.set_status(tid, Status.completed)
        assert store.get_task(tid).status == "completed"
        assert store.get_task(tid).status_reason == ""
        with pytest.raises(TaskStateError, match="completed"):
            store.transition(tid, Status.failed)
        store.transition(tid, Status.completed)  # already there: not an error
        # Reset is the explicit way back; it clears the run times.
        assert store.set_status(tid, Status.created)
        reset = store.get_task(tid)
        assert (reset.status, reset.started, reset.ended) == ("created", None, None)
        assert store.set_status(tid, Status.failed, reason="boom")
        assert store.get_task(tid).status_reason == "boom"
        assert store.set_status(tid, Status.completed, force=True)
        with pytest.raises(TaskNotFound):
            store.set_status("missing", Status.completed)

    def test_published_is_terminal(self, store: Store):
        tid = store.create_task(project="p", name="a", status=Status.in_progress).id
        store.transition(tid, Status.completed)
        store.transition(tid, Status.published)
        for status in Status:
            if status != Status.published:
                assert not store.set_status(tid, status)
        assert store.get_task(tid).status == "published"

    @pytest.mark.timeout(90)
    def test_racing_processes_finishing_the_same_tasks_exactly_one_wins(self, store: Store,
                                                                         tmp_path):
        ids = [store.create_task(project="race", name=f"t{i}", status=Status.in_progress).id
               for i in range(150)]
        (tmp_path / "ids.json").write_text(json.dumps(ids))
        go = tmp_path / "go"
        contenders = [Status.completed, Status.failed, Status.stopped]
        procs = start_children(tmp_path, FINISH_RACE, [
            [s.value, str(go), str(tmp_path / "ids.json"), str(tmp_path / f"ready{n}")]
            for n, s in enumerate(contenders)])
        try:
            wait_until(lambda: all((tmp_path / f"ready{n}").exists()
                                   for n in range(len(contenders))), 60, "children ready")
            go.touch()
        finally:
            results = finish_children(tmp_path, procs, 60)
        assert [r[0] for r in results] == [0] * len(contenders), results
        won = [json.loads(out) for _, out, _ in results]
        for i, tid in enumerate(ids):
            winners = [s for s, w in zip(contenders, won, strict=True) if w[i]]
            assert len(winners) == 1, (tid, winners)
            info = store.get_task(tid)
            assert info.status == winners[0].value
            assert info.status_reason == f"by {winners[0].value}"

    # -- clone ---------------------------------------------------------------------------------

    def test_clone_copies_parameters_configuration_and_sets_parent(self, store: Store):
        src = store.create_task(
            project="p", name="orig", script={"path": "/a.py"}, code_digest="c" * 64, code="x=1",
            tags=["t"], params=[ParamInfo("Args", "lr", "0.1", "float", "learning rate")],
            configurations={"cfg": ('{"a": 1}', "json"), "txt": ("hello", "text")},
            status=Status.in_progress)
        store.set_status(src.id, Status.completed)
        clone = store.clone_task(src.id)
        assert clone.id != src.id
        assert clone.name == "Clone Of orig"
        assert clone.status == "created" and clone.started is None and clone.ended is None
        assert clone.parent == src.id
        assert (clone.project, clone.type, clone.script, clone.code_digest, clone.tags) == (
            src.project, src.type, src.script, src.code_digest, src.tags)
        assert store.get_parameters(clone.id) == store.get_parameters(src.id)
        assert store.list_configurations(clone.id) == store.list_configurations(src.id)
        assert t.Task.get_by_id(clone.id).code == "x=1"
        # The copy is independent: changing it leaves the source alone.
        store.set_parameters(clone.id, [ParamInfo("Args", "lr", "0.5", "float")])
        assert store.get_parameters(src.id)["Args/lr"].value == "0.1"
        named = store.clone_task(src.id, name="again", project="other", parent="abc")
        assert (named.name, named.project, named.parent) == ("again", "other", "abc")

    # -- runs ----------------------------------------------------------------------------------

    def test_runs_nodes_pipelines_and_cache_entries_are_frozen_records(self, store: Store):
        run = store.create_task(project="p", name="pipe", type="controller",
                                status=Status.in_progress).id
        dag = {"nodes": [{"name": "a", "parents": []}, {"name": "b", "parents": ["a"]}]}
        store.create_run(run, dag=dag, version="1.0.0", structure_hash="h" * 64,
                         pipeline=("p", "pipe"))
        got = store.get_run(run)
        assert isinstance(got, RunRecord)
        assert (got.id, got.version, got.structure_hash, got.origin, got.dag) == (
            run, "1.0.0", "h" * 64, None, dag)
        step = store.create_task(project="p", name="a", parent=run, cache_key="k" * 64,
                                 status=Status.in_progress).id
        store.set_node(run, "a", "in_progress", task=step, started=1.0)
        store.set_status(step, Status.completed)
        store.set_node(run, "a", "completed", ended=2.5)
        assert store.list_nodes(run) == [
            NodeRecord(name="a", task=step, status="completed", parents=[], cache_key=None,
                       attempt=0, started=1.0, ended=2.5),
            NodeRecord(name="b", task=None, status="pending", parents=["a"], cache_key=None,
                       attempt=0, started=None, ended=None)]
        [summary] = store.list_runs()
        assert isinstance(summary, RunSummary)
        assert (summary.id, summary.name, summary.status, summary.version) == (
            run, "pipe", "in_progress", "1.0.0")
        [pipeline] = store.list_pipelines()
        assert isinstance(pipeline, PipelineRecord)
        assert (pipeline.project, pipeline.name, pipeline.version, pipeline.runs) == (
            "p", "pipe", "1.0.0", 1)
        [entry] = store.cache_entries()
        assert isinstance(entry, CacheEntry)
        assert (entry.key, entry.task, entry.name, entry.status) == (
            "k" * 64, step, "a", "completed")
        for record in (got, summary, pipeline, entry, store.list_nodes(run)[0]):
            with pytest.raises(attrs.exceptions.FrozenInstanceError):
                setattr(record, attrs.fields(type(record))[0].name, "x")
        assert store.finish_run(run, Status.completed)
        assert [n.status for n in store.list_nodes(run)] == ["completed", "skipped"]

    # -- queues --------------------------------------------------------------------------------

    def test_enqueue_to_unknown_queue_names_it_and_lists_known_ones(self, store: Store):
        tid = store.create_task(project="p", name="a").id
        with pytest.raises(QueueNotFound) as err:
            store.enqueue(tid, "gpu-nowhere")
        message = str(err.value)
        assert "'gpu-nowhere'" in message
        assert "default" in message and "services" in message
        assert err.value.queue == "gpu-nowhere"
        assert store.get_task(tid).status == "created"  # nothing changed
        assert store.queue_of(tid) is None

    def test_enqueue_and_queues_ls(self, store: Store):
        assert [(q.name, q.pending, q.running) for q in store.list_queues()] == [
            ("default", 0, 0), ("services", 0, 0)]
        store.ensure_queue("gpu")
        store.ensure_queue("gpu")  # idempotent
        a = store.create_task(project="p", name="a").id
        b = store.create_task(project="p", name="b").id
        store.enqueue(a, "gpu")
        store.enqueue(b, "gpu", priority=5)
        assert store.get_task(a).status == "queued"
        assert store.queue_of(a) == "gpu"
        store.set_status(b, Status.in_progress)
        assert [(q.name, q.pending, q.running) for q in store.list_queues()] == [
            ("default", 0, 0), ("gpu", 1, 1), ("services", 0, 0)]
        # A running task cannot be queued again; a failed one can, onto another queue.
        with pytest.raises(TaskStateError):
            store.enqueue(b, "default")
        store.set_status(b, Status.failed)
        store.enqueue(b, "default")
        assert store.queue_of(b) == "default"
        assert t.QueueEntry.select().where(t.QueueEntry.task == b).count() == 1

    def test_queues_ls_cli_json(self, store: Store):
        store.ensure_queue("gpu")
        proc = subprocess.run([str(Path(sys.executable).parent / "pipekit"), "queues", "ls",
                               "--json"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        names = json.dumps(json.loads(proc.stdout))
        for name in ("default", "gpu", "services"):
            assert name in names

    def test_claim_takes_the_highest_priority_then_the_oldest_and_starts_it(self, store: Store):
        store.ensure_queue("gpu")
        assert store.claim(["gpu"], "w1") is None  # nothing waits
        assert store.claim([], "w1") is None
        low, high, later, other = (store.create_task(project="p", name=n).id
                                   for n in ("low", "high", "later", "other"))
        store.enqueue(low, "gpu")
        store.enqueue(high, "gpu", priority=5)
        store.enqueue(later, "gpu", priority=5)
        store.enqueue(other, "default")
        before = time.time()
        claim = store.claim(["gpu"], "w1", lease=30)
        assert claim is not None and (claim.queue, claim.lease) == ("gpu", Lease("w1", 1))
        got = claim.task
        assert got.id == high
        assert (got.status, got.worker) == ("in_progress", "w1")
        assert got.started >= before and got.ended is None
        assert got == store.get_task(high)
        entry = t.QueueEntry.get(t.QueueEntry.task == high)
        assert (entry.worker, entry.attempt) == ("w1", 1)
        assert before + 30 <= entry.lease_expires <= time.time() + 30
        assert store.queue_of(high) == "gpu"  # the entry stays: the task ran from this queue
        assert [store.claim(["gpu"], "w2").task.id for _ in range(2)] == [later, low]
        assert store.claim(["gpu", "nowhere"], "w2") is None  # unknown queues hold nothing
        assert store.claim(["nowhere", "default"], "w3").task.id == other
        assert [(q.name, q.pending, q.running) for q in store.list_queues()] == [
            ("default", 0, 1), ("gpu", 0, 3), ("services", 0, 0)]

    def test_claim_passes_over_tasks_no_longer_queued(self, store: Store):
        stopped, waiting = (store.create_task(project="p", name=n).id
                            for n in ("stopped", "waiting"))
        store.enqueue(stopped, "default", priority=9)
        store.enqueue(waiting, "default")
        assert store.set_status(stopped, Status.stopped)
        assert store.claim(["default"], "w1").task.id == waiting
        assert store.claim(["default"], "w1") is None
        assert store.get_task(stopped).status == "stopped"
        # Re-enqueued, it is claimable again, as its second attempt.
        store.enqueue(stopped, "default")
        assert store.claim(["default"], "w2").task.id == stopped
        assert t.QueueEntry.get(t.QueueEntry.task == stopped).attempt == 1
        store.set_status(stopped, Status.failed)
        store.enqueue(stopped, "default")
        assert store.claim(["default"], "w3").task.id == stopped
        assert t.QueueEntry.get(t.QueueEntry.task == stopped).attempt == 2

    # -- leases: heartbeat, reaping, fencing, giving back --------------------------------

    def _claimed(self, store: Store, name: str = "leased", lost_retries: int = 1,
                 lease: float = 30) -> Claim:
        task_id = store.create_task(project="leases", name=name).id
        store.enqueue(task_id, "default", lost_retries=lost_retries)
        claim = store.claim(["default"], "agent-a", lease=lease)
        assert claim is not None and claim.task.id == task_id
        return claim

    def test_a_heartbeat_extends_only_the_holders_current_lease(self, store: Store):
        claim = self._claimed(store)
        task_id, lease = claim.task.id, claim.lease
        _, first = store.lease_of(task_id)
        assert store.heartbeat([(task_id, lease)], ttl=100) == {task_id}
        held, expires = store.lease_of(task_id)
        assert held == lease and expires > first + 60
        assert store.heartbeat([(task_id, Lease("agent-b", 1))], ttl=100) == set()
        assert store.heartbeat([(task_id, Lease("agent-a", 2))], ttl=100) == set()
        store.set_status(task_id, Status.completed)
        assert store.heartbeat([(task_id, lease)], ttl=100) == set()  # nothing left to hold

    def test_an_expired_lease_is_requeued_while_attempts_remain_then_fails_worker_lost(
            self, store: Store):
        claim = self._claimed(store, lost_retries=1, lease=10)
        task_id = claim.task.id
        assert store.reap(now=time.time() + 5) == []  # not expired yet
        [reaped] = store.reap(now=time.time() + 11)
        assert (reaped.task, reaped.action, reaped.lease) == (task_id, "requeued",
                                                             Lease("agent-a", 1))
        info = store.get_task(task_id)
        assert info.status == "queued" and "agent-a lost" in info.status_reason
        assert store.reap(now=time.time() + 11) == []  # reaped once, by whoever came first
        again = store.claim(["default"], "agent-b", lease=10)
        assert again.lease == Lease("agent-b", 2) and again.task.status_reason == ""
        [reaped] = store.reap(now=time.time() + 11)
        assert reaped.action == "failed"
        info = store.get_task(task_id)
        assert info.status == "failed" and info.status_reason.startswith("worker lost:")
        assert "agent-b" in info.status_reason and info.ended is not None

    def test_a_stale_attempt_can_commit_nothing(self, store: Store):
        """RELIABILITY 9 at the store: once attempt 2 holds the task, attempt 1's status,
        artifacts and models are refused and attempt 2's stand."""
        claim = self._claimed(store, lease=10)
        task_id, stale = claim.task.id, claim.lease
        store.reap(now=time.time() + 11)
        current = store.claim(["default"], "agent-b", lease=30).lease
        ref = ObjectRef(digest="d" * 64, size=1, serializer="json", type="int",
                        filename="x.json", inline=b"1")
        with pytest.raises(LeaseLost, match=r"lease agent-a#1 is no longer current"):
            store.put_artifact(task_id, "out", ref, lease=stale)
        with pytest.raises(LeaseLost):
            store.add_model(task_id, "net", ref, lease=stale)
        assert store.set_status(task_id, Status.completed, lease=stale) is False
        assert store.get_task(task_id).status == "in_progress"
        store.put_artifact(task_id, "out", ref, lease=current)
        assert store.set_status(task_id, Status.completed, lease=current) is True
        assert [a.name for a in store.list_artifacts(task_id)] == ["out"]
        assert store.list_models(task_id) == []

    def test_a_stale_attempt_cannot_end_a_run(self, store: Store):
        claim = self._claimed(store, lease=10)
        run_id, stale = claim.task.id, claim.lease
        store.create_run(run_id, dag={"nodes": {}})
        store.reap(now=time.time() + 11)
        current = store.claim(["default"], "agent-b", lease=30).lease
        assert store.finish_run(run_id, Status.failed, "killed", lease=stale) is False
        assert store.get_task(run_id).status == "in_progress"
        assert store.finish_run(run_id, Status.completed, lease=current) is True

    def test_a_released_task_is_queued_again_without_using_an_attempt(self, store: Store):
        claim = self._claimed(store, lost_retries=1, lease=10)
        task_id = claim.task.id
        assert store.release(task_id, Lease("agent-b", 1), "nope") is False  # not its holder
        assert store.release(task_id, claim.lease, "agent shut down") is True
        info = store.get_task(task_id)
        assert (info.status, info.status_reason) == ("queued", "agent shut down")
        assert store.release(task_id, claim.lease, "twice") is False
        again = store.claim(["default"], "agent-b", lease=10)
        assert again.lease.attempt == 2
        [reaped] = store.reap(now=time.time() + 11)
        assert reaped.action == "requeued"  # the give-back did not use up its one retry

    def test_agents_register_heartbeat_and_count_on_their_queues(self, store: Store):
        store.ensure_queue("gpu")
        with pytest.raises(QueueNotFound, match=r"unknown queue 'tpu' \(known queues: .*gpu"):
            store.register_agent(["tpu"], host="h", pid=1, pid_started=0.0)
        a = store.register_agent(["gpu", "default"], host="h", pid=1, pid_started=0.0)
        store.register_agent(["tpu"], host="h", pid=2, pid_started=0.0, create_queues=True)
        counts = {q.name: q.agents for q in store.list_queues()}
        assert counts == {"default": 1, "gpu": 1, "services": 0, "tpu": 1}
        store.agent_heartbeat(a, ["t1"], state="stopping")
        [info] = [x for x in store.list_agents() if x.id == a]
        assert (info.queues, info.tasks, info.state) == (("gpu", "default"), ("t1",),
                                                         "stopping")
        store.agent_heartbeat(a, [], state="stopped")
        assert a not in {x.id for x in store.list_agents()}
        assert a in {x.id for x in store.list_agents(include_gone=True)}
        assert {q.name: q.agents for q in store.list_queues(live_within=0)}["tpu"] == 0

    @pytest.mark.timeout(90)
    def test_processes_claiming_at_once_each_take_different_tasks(self, store: Store,
                                                                 tmp_path):
        ids = [store.create_task(project="claims", name=f"t{i}").id for i in range(120)]
        for i, tid in enumerate(ids):
            store.enqueue(tid, "default", priority=i % 3)
        go = tmp_path / "go"
        claimers = 4
        procs = start_children(tmp_path, CLAIM_RACE, [
            [f"w{n}", str(go), str(tmp_path / f"ready{n}")] for n in range(claimers)])
        try:
            wait_until(lambda: all((tmp_path / f"ready{n}").exists() for n in range(claimers))
                       or any(p.poll() is not None for p in procs), 60, "claimers ready")
            go.touch()
        finally:
            results = finish_children(tmp_path, procs, 60)
        assert [r[0] for r in results] == [0] * claimers, results
        taken = {f"w{n}": json.loads(out) for n, (_, out, _) in enumerate(results)}
        every = [tid for got in taken.values() for tid in got]
        assert sorted(every) == sorted(ids)  # each task claimed exactly once
        for worker, got in taken.items():
            for tid in got:
                info = store.get_task(tid)
                assert (info.status, info.worker) == ("in_progress", worker)
        assert [(q.name, q.pending, q.running) for q in store.list_queues()
                if q.name == "default"] == [("default", 0, len(ids))]

    # -- outputs -------------------------------------------------------------------------------

    def test_last_scalars_are_min_max_and_the_value_at_the_highest_iteration(self, store: Store):
        tid = store.create_task(project="p", name="a").id
        assert store.last_scalars(tid) == {}
        store.add_scalars(tid, [("loss", "train", 2, 0.5, 1.0), ("loss", "train", 0, 2.0, 2.0),
                                ("loss", "train", 1, 0.1, 3.0), ("acc", "val", 0, 0.7, 4.0)])
        assert store.last_scalars(tid) == {
            "loss": {"train": {"last": 0.5, "min": 0.1, "max": 2.0}},
            "acc": {"val": {"last": 0.7, "min": 0.7, "max": 0.7}}}
        assert [p.iteration for p in store.scalars(tid)] == [2, 0, 1, 0]  # as stored

    # -- across processes ----------------------------------------------------------------------

    def test_task_written_in_another_process_reads_back_fully(self, store: Store, run_py):
        # (``store``: the backend's fixture, which the child process inherits)
        import numpy as np
        import pandas as pd
        from strategies import read_tree

        from pipekit import Task

        proc = run_py(CROSS_PROCESS)
        task_id = json.loads(proc.stderr.strip().splitlines()[-1])["id"]
        assert "hello from the child process" in proc.stdout
        task = Task.get_task(task_id=task_id)
        assert task.data.status == "completed"
        assert (task.project, task.name) == ("xproc", "writer")
        assert task.data.script["entry_point"].startswith("snippet_")

        assert task.get_parameters_as_dict(cast=True) == {
            "General": {"lr": 0.01, "epochs": 3, "name": "résumé", "flags": [1, 2],
                        "nested/depth": 2},
            "Data": {"batch": 32},
        }
        assert task.get_configuration_object_as_dict("model") == {"model": {"layers": 4}}

        arts = task.artifacts
        assert sorted(arts) == sorted(["as_json", "as_bytes", "as_numpy", "as_big_numpy",
                                       "as_frame", "as_file", "as_folder", "as_pickle"])
        assert {name: arts[name].type for name in arts} == {
            "as_json": "json", "as_bytes": "bytes", "as_numpy": "numpy", "as_big_numpy": "numpy",
            "as_frame": "pandas.parquet", "as_file": "file", "as_folder": "folder",
            "as_pickle": "pickle"}
        assert arts["as_json"].get() == {"ünï": "cödé", "n": [1, 2.5, None]}
        assert arts["as_bytes"].get() == b"\x00\x01raw"
        np.testing.assert_array_equal(arts["as_numpy"].get(),
                                      np.arange(12, dtype=np.int32).reshape(3, 4))
        np.testing.assert_array_equal(arts["as_big_numpy"].get(), np.linspace(0, 1, 10_000))
        pd.testing.assert_frame_equal(arts["as_frame"].get(),
                                      pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
        csv = Path(arts["as_file"].get())
        assert csv.name == "report.csv" and csv.read_text() == "x,y\n1,2\n"
        tree = Path(arts["as_folder"].get())
        assert tree.name == "tree"
        assert read_tree(tree) == {"a.txt": b"alpha", "sub/b.bin": bytes(range(256))}
        assert arts["as_pickle"].get() == (1, "two", {3: 4})

        scalars = task.get_reported_scalars()
        assert scalars["loss"]["train"] == {"x": list(range(10)),
                                            "y": [1.0 / (i + 1) for i in range(10)]}
        assert scalars["loss"]["val"]["y"][-1] == pytest.approx(0.2)
        assert task.get_last_scalar_metrics()["loss"]["train"] == {
            "last": 0.1, "min": 0.1, "max": 1.0}
        assert task.get_reported_single_values() == {"accuracy": 0.93}
        log = task.get_log()
        assert "hello from the child process" in log
        assert task.data.log_size == len(log.encode())

    def test_scalars_in_flight_in_the_background_flusher_are_never_lost(self, run_py, store):
        """mark_completed (and the exit flush) wait for a batch the background flusher is still
        writing; before the fix the process could exit with that batch unwritten."""
        report = json.loads(run_py(IN_FLIGHT_SCALARS).stdout.strip().splitlines()[-1])
        assert report["seen"] == 50
        assert len(store.scalars(report["id"])) == 50

    # -- stress (acceptance) -------------------------------------------------------------------

    @pytest.mark.timeout(180)
    def test_stress_8_processes_lose_nothing_and_never_see_lock_errors(self, store: Store,
                                                                        tmp_path):
        """Acceptance: 8 processes x 200 tasks x (50 scalars + 1 artifact) against one store."""
        go = tmp_path / "go"
        procs = start_children(tmp_path, STRESS_CHILD, [
            [str(w), str(go), str(STRESS_TASKS), str(STRESS_SCALARS)]
            for w in range(STRESS_WORKERS)])
        try:
            wait_until(lambda: all((tmp_path / f"ready{w}").exists()
                                   for w in range(STRESS_WORKERS))
                       or any(p.poll() is not None for p in procs), 90, "workers ready")
            go.touch()
        finally:
            results = finish_children(tmp_path, procs, 150)

        reports = []
        for returncode, out, err in results:
            assert returncode == 0, err
            assert "database is locked" not in err.lower(), err
            assert "busy" not in err.lower(), err
            assert "Traceback" not in err, err
            report = json.loads(out.strip().splitlines()[-1])
            assert report["errors"] == [], report["errors"][0]
            reports.append(report)
        all_ids = [tid for r in reports for tid in r["ids"]]
        n_tasks = STRESS_WORKERS * STRESS_TASKS
        assert len(all_ids) == len(set(all_ids)) == n_tasks

        # Every row is present, exactly once.
        assert t.Task.select().join(t.Project).where(t.Project.name == "stress").count() == n_tasks
        assert t.Task.select().where(t.Task.status == "completed").count() == n_tasks
        assert t.Scalar.select().count() == n_tasks * STRESS_SCALARS
        per_task = {tid: n for tid, n in store.db.execute_sql(
            "SELECT task_id, COUNT(*) FROM scalar GROUP BY task_id")}
        assert per_task == {tid: STRESS_SCALARS for tid in all_ids}
        assert t.Artifact.select().count() == n_tasks
        from pipekit.artifacts import load_value

        by_task = {a.task_id: a for a in t.Artifact.select()}
        for report in reports:
            for i, tid in enumerate(report["ids"]):
                info = store.get_artifact(tid, "result")
                assert info.ref.digest == by_task[tid].digest
                assert load_value(store, info.ref, "result") == {"worker": report["worker"],
                                                                  "i": i}
        assert store.integrity_check() == "ok"


class TestSqliteStore(StoreContract):
    """The contract over SQLite: the test's ``PIPEKIT_HOME`` holds the database."""

    @pytest.fixture
    def store(self) -> Store:
        store = get_store()
        assert store.dialect is SQLITE
        return store


class TestPostgresStore(StoreContract):
    """The contract over PostgreSQL: a fresh database of the session's throwaway server
    (tests/postgres_helpers.py), which the processes a test starts reach through PIPEKIT_DB.
    """

    @pytest.fixture
    def store(self, pg_store: str) -> Store:
        from pipekit.store.dialect import POSTGRESQL

        store = get_store()
        assert store.dialect is POSTGRESQL and store.settings.db_url == pg_store
        return store

    @pytest.mark.slow  # (the queue stress through agents runs on PostgreSQL in the quick set)
    @pytest.mark.timeout(180)
    def test_stress_8_processes_lose_nothing_and_never_see_lock_errors(self, store: Store,
                                                                        tmp_path):
        super().test_stress_8_processes_lose_nothing_and_never_see_lock_errors(store, tmp_path)
