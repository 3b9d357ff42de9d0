"""A store that machines share: objects in an object store (``PIPEKIT_ARTIFACTS=s3://…``) and
logs in the database server, so agents need nothing in common but the two URLs (issue 14).

The object store is a real S3 server on loopback: moto's (``moto[server]``), the S3 API over
HTTP that s3fs talks to exactly as it talks to AWS or MinIO (MinIO's server is in none of the
registries this project installs from). Each test gets a bucket of its own.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from postgres_helpers import Cluster, database_for_test, sqlite_files

import pipekit
from pipekit import PipelineController, Task
from pipekit.artifacts import load_value, store_value
from pipekit.errors import ArtifactCorrupt, ConfigError
from pipekit.store import Store, get_store, reset_store
from pipekit.testing import wait_until

cloudpickle.register_pickle_by_value(sys.modules[__name__])

PIPEKIT = str(Path(sys.executable).with_name("pipekit"))

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """An S3 server on 127.0.0.1 for the session; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket, with the settings every process of the test inherits (fsspec's own
    ``FSSPEC_S3_*`` configuration, as a user sets it); returns ``s3://bucket/pipekit``.
    """
    import fsspec
    import fsspec.config

    for name, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                        "AWS_DEFAULT_REGION": "us-east-1",
                        "FSSPEC_S3_ENDPOINT_URL": s3_endpoint}.items():
        monkeypatch.setenv(name, value)
    # (fsspec reads FSSPEC_* when it is imported: this process had imported it already)
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": s3_endpoint})
    bucket = f"pk-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", endpoint_url=s3_endpoint).mkdir(bucket)
    return f"s3://{bucket}/pipekit"


def bucket_fs(url: str):
    import fsspec

    fs, base = fsspec.core.url_to_fs(url)
    fs.invalidate_cache()
    return fs, base


def objects_in(url: str) -> set[str]:
    fs, base = bucket_fs(url)
    try:
        return {name.rsplit("/", 1)[1] for name in fs.find(base)
                if "/quarantine/" not in name and "/tmp/" not in name}
    except FileNotFoundError:
        return set()


def use_artifacts(url: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    monkeypatch.setenv("PIPEKIT_ARTIFACTS", url)
    reset_store()
    return get_store()


# -- step functions (pickled by value: agents import nothing of this module) -------------------

def make_rows(n):
    print(f"make_rows ran in pid {__import__('os').getpid()}")
    return [[i, i * i] for i in range(n)]  # over 32 KiB as JSON: an object, not inline


def total(rows):
    print(f"total of {len(rows)} rows")
    return sum(b for _, b in rows)


def ticking(marker):
    import pathlib
    import time

    print("tick 0", flush=True)
    deadline = time.monotonic() + 60
    while not pathlib.Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    print("tick 1", flush=True)
    return 1


# -- the object store -----------------------------------------------------------------------------

def test_objects_go_to_the_object_store_and_are_read_verified_from_another_home(
        s3, monkeypatch, tmp_path):
    store = use_artifacts(s3, monkeypatch)
    ref, _ = store_value(store, list(range(20_000)), "data")
    assert ref.inline is None
    assert objects_in(s3) == {ref.digest}
    assert not (store.settings.home / "artifacts").exists()  # no object files of its own

    # another machine: the same database file, a home of its own, nothing cached yet
    monkeypatch.setenv("PIPEKIT_DB", store.settings.db_url)
    monkeypatch.setenv("PIPEKIT_HOME", str(tmp_path / "other-machine"))
    reset_store()
    other = get_store()
    assert not other.blobs.path(ref.digest).exists()
    assert load_value(other, ref, "data") == list(range(20_000))
    assert other.blobs.path(ref.digest).exists()  # kept, verified, in its local cache


def test_a_corrupt_object_in_the_object_store_is_refused_moved_aside_and_healed(
        s3, monkeypatch):
    store = use_artifacts(s3, monkeypatch)
    value = {"rows": list(range(10_000))}
    ref, _ = store_value(store, value, "data")
    fs, base = bucket_fs(s3)
    key = f"{base}/{ref.digest[:2]}/{ref.digest}"
    bad = bytearray(fs.cat(key))
    bad[100] ^= 0xFF
    fs.pipe(key, bytes(bad))
    store.blobs.path(ref.digest).unlink()  # this machine's cached copy is gone too

    proc = subprocess.run([PIPEKIT, "db", "check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert re.search(rf"^corrupt\s+{ref.digest}", proc.stdout, re.M), proc.stdout
    assert f"1 file(s) in {s3}: 1 bad" in proc.stdout

    with pytest.raises(ArtifactCorrupt, match="'data' is corrupt"):
        load_value(store, ref, "data")
    assert ref.digest not in objects_in(s3)  # moved aside, not deleted
    assert any(ref.digest in name for name in fs.find(f"{base}/quarantine"))
    assert not store.blobs.path(ref.digest).exists()  # no bad bytes cached

    again, _ = store_value(store, value, "data")  # the same content, written by anyone
    assert again.digest == ref.digest
    store.blobs.path(ref.digest).unlink()
    assert load_value(store, ref, "data") == value  # read back from the object store
    assert subprocess.run([PIPEKIT, "db", "check"], capture_output=True, text=True,
                          timeout=60).returncode == 0


def test_a_cached_step_whose_remote_object_is_gone_runs_again(s3, monkeypatch):
    use_artifacts(s3, monkeypatch)

    def build() -> PipelineController:
        pipe = PipelineController(name="cached-remote", project="shared")
        pipe.add_function_step("rows", make_rows, {"n": 3000}, ["rows"], cache_executed_step=True)
        pipe.add_function_step("total", total, {"rows": "${rows.rows}"}, ["y"])
        return pipe

    first = build()
    first.start_locally(run_pipeline_steps_locally=True)
    assert first.is_successful()
    rows_task = Task.get_task(task_id=first.get_pipeline_dag()["rows"].executed)
    digest = rows_task.artifacts["rows"].digest
    fs, base = bucket_fs(s3)
    fs.rm(f"{base}/{digest[:2]}/{digest}")
    get_store().blobs.path(digest).unlink()

    second = build()
    second.start_locally(run_pipeline_steps_locally=True)
    assert second.is_successful()
    assert second.get_pipeline_dag()["rows"].executed != rows_task.id  # not a cache hit
    assert digest in objects_in(s3)  # written again


def test_bad_artifact_settings_are_one_line(monkeypatch, tmp_path):
    for url in ("http://example.com/objects", "s3://"):
        proc = subprocess.run([PIPEKIT, "runs", "ls"], capture_output=True, text=True,
                              timeout=60, env=dict(os.environ, PIPEKIT_ARTIFACTS=url))
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.strip() == (f"Error: PIPEKIT_ARTIFACTS={url!r} cannot hold objects: "
                                       "give a folder or an fsspec URL such as "
                                       "s3://bucket/prefix")
    monkeypatch.setenv("PIPEKIT_ARTIFACTS", "file://elsewhere/objects")
    with pytest.raises(ConfigError, match="a file:// URL names a local folder"):
        pipekit.config.get_settings()


def test_an_object_store_without_its_driver_names_the_extra(monkeypatch):
    from test_storage import hide_s3fs

    hide_s3fs(monkeypatch)
    store = use_artifacts("s3://bucket/objects", monkeypatch)
    with pytest.raises(ConfigError, match=r"^PIPEKIT_ARTIFACTS=s3://bucket/objects: .*s3fs.*"
                                          r"\(pip install 'pipekit\[s3\]'\)$"):
        store_value(store, os.urandom(50_000), "blob")


@pytest.mark.parametrize("executor", ["thread", "process", "subprocess"])
def test_every_executor_writes_a_steps_objects_where_the_store_keeps_them(
        executor, monkeypatch, tmp_path):
    objects = tmp_path / "objects"
    use_artifacts(str(objects), monkeypatch)
    pipe = PipelineController(name=f"objects-{executor}", project="shared")
    pipe.add_function_step("rows", make_rows, {"n": 3000}, ["rows"])
    pipe.add_function_step("total", total, {"rows": "${rows.rows}"}, ["y"])
    pipe.start_locally(run_pipeline_steps_locally=True, executor=executor)
    assert pipe.is_successful()
    digest = Task.get_task(task_id=pipe.get_pipeline_dag()["rows"].executed
                           ).artifacts["rows"].digest
    assert (objects / digest[:2] / digest).is_file()
    assert not (get_store().settings.home / "artifacts" / digest[:2]).exists()


def test_an_upload_is_retried_through_a_blip_and_gives_up_with_one_line(monkeypatch):
    import fsspec
    from test_storage import FlakyFS

    import pipekit.store.remote as remote
    from pipekit.errors import StoreError

    fsspec.register_implementation("flaky", FlakyFS, clobber=True)
    monkeypatch.setattr(remote, "RETRY_DELAY", 0)
    monkeypatch.setattr(FlakyFS, "calls", 0)
    monkeypatch.setattr(FlakyFS, "failures", 2)  # two resets, then it goes through
    store = use_artifacts(f"flaky://objects-{uuid.uuid4().hex[:8]}", monkeypatch)
    data = os.urandom(50_000)
    ref, _ = store_value(store, data, "blob")
    assert FlakyFS.calls == 3
    store.blobs.path(ref.digest).unlink()
    assert load_value(store, ref, "blob") == data  # read back from the flaky store

    monkeypatch.setattr(FlakyFS, "calls", 0)
    monkeypatch.setattr(FlakyFS, "failures", 99)
    with pytest.raises(StoreError, match=r"^could not store artifact 'other' in flaky://.*: "
                                         r"ConnectionError: connection reset \(after 4 "
                                         r"attempts\)"):
        store_value(store, os.urandom(50_000), "other")
    assert FlakyFS.calls == remote.RETRIES


def test_a_folder_or_file_url_holds_the_objects(monkeypatch, tmp_path):
    for raw in (str(tmp_path / "objects-a"), (tmp_path / "objects-b").as_uri()):
        store = use_artifacts(raw, monkeypatch)
        ref, _ = store_value(store, os.urandom(50_000), "blob")
        folder = Path(raw.removeprefix("file://"))
        assert (folder / ref.digest[:2] / ref.digest).is_file()
        assert load_value(store, ref, "blob") is not None


# -- logs in the database -------------------------------------------------------------------------

def test_copies_of_one_log_racing_store_every_byte_once(postgres: Cluster, pipekit_home,
                                                         monkeypatch):
    """Two processes' shippers (here: two store handles in threads) copying one growing file
    leave the database holding exactly the file, in order."""
    with database_for_test(postgres, pipekit_home, monkeypatch):
        store = get_store()
        task = store.create_task(project="shared", name="noisy")
        path = store.log_path(task.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        stores = [Store(store.settings, upgrade=False) for _ in range(2)]
        written = bytearray()
        done = threading.Event()

        def ship(handle: Store) -> None:
            while not done.is_set():
                handle.ship_log(task.id)

        threads = [threading.Thread(target=ship, args=(s,)) for s in stores]
        for thread in threads:
            thread.start()
        with open(path, "ab", buffering=0) as fh:
            for i in range(400):
                line = f"line {i} {'x' * (i % 97)}\n".encode()
                fh.write(line)
                written += line
        done.set()
        for thread in threads:
            thread.join()
        store.ship_log(task.id)
        assert store.read_log(task.id).data == bytes(written)
        path.unlink()  # what another machine sees: the database's copy only
        assert store.read_log(task.id).data == bytes(written)
        assert store.read_log(task.id, offset=10, limit=25).data == bytes(written[10:35])
        assert store.read_log(task.id, offset=len(written) + 5).data == b""
        for handle in stores:
            handle.close()


# -- agents that share only PostgreSQL and the object store --------------------------------------

@pytest.fixture
def shared(postgres: Cluster, s3: str, tmp_path: Path, pipekit_home: Path,
           monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """This test's store on PostgreSQL with objects in the bucket; yields the settings an
    agent on another machine is given (its own PIPEKIT_HOME is added per agent).
    """
    with database_for_test(postgres, pipekit_home, monkeypatch) as url:
        monkeypatch.setenv("PIPEKIT_ARTIFACTS", s3)
        monkeypatch.setenv("PIPEKIT_LEASE_TTL", "3")
        reset_store()
        yield {"PIPEKIT_DB": url, "PIPEKIT_ARTIFACTS": s3}
        found = sqlite_files(tmp_path)
        assert not found, f"SQLite files with a PostgreSQL store: {found}"


@pytest.fixture
def machine_agents(tmp_path: Path) -> Iterator:
    """Start ``pipekit agent`` processes as if on machines of their own: each with its own
    PIPEKIT_HOME and working folder, sharing only what the ``env`` given says."""
    started: list[subprocess.Popen] = []

    def start(name: str, env: dict[str, str], *args: str) -> subprocess.Popen:
        home = tmp_path / name
        home.mkdir()
        proc = subprocess.Popen([PIPEKIT, "agent", *args], cwd=home,
                                env=dict(os.environ, PIPEKIT_HOME=str(home / "store"), **env),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def test_a_remote_pipeline_on_agents_sharing_only_postgresql_and_an_object_store(
        shared, machine_agents, tmp_path, s3):
    one = machine_agents("machine-1", shared, "--queue", "default")
    two = machine_agents("machine-2", shared, "--queue", "default")
    pipe = PipelineController(name="shared-only", project="shared")
    pipe.set_default_execution_queue("default")
    pipe.add_function_step("rows", make_rows, {"n": 3000}, ["rows"])
    pipe.add_function_step("total", total, {"rows": "${rows.rows}"}, ["y"])
    pipe.start_locally()
    store = get_store()
    dag = pipe.get_pipeline_dag()
    assert pipe.is_successful(), [(store.get_task(t).status_reason, store.read_log(t).data[-3000:])
                                  for n in dag.values() for t in n.tasks]

    rows_task = store.get_task(dag["rows"].executed)
    total_task = Task.get_task(task_id=dag["total"].executed)
    assert total_task.artifacts["y"].get() == sum(i * i for i in range(3000))
    workers = {store.get_task(n.executed).worker.rpartition(":")[2] for n in dag.values()}
    assert workers and workers <= {str(one.pid), str(two.pid)}

    # the objects live in the bucket; the controller's home holds no object file of its own
    digest = Task.get_task(task_id=rows_task.id).artifacts["rows"].digest
    assert digest in objects_in(s3)
    assert not (store.settings.home / "artifacts").exists()

    # the steps' logs reached the database: read here, where no log file of theirs exists
    assert not store.log_path(rows_task.id).exists()
    assert "make_rows ran in pid" in Task.get_task(task_id=rows_task.id).get_log()
    proc = subprocess.run([PIPEKIT, "logs", total_task.id], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path,
                          env=dict(os.environ, PIPEKIT_HOME=str(tmp_path / "laptop")))
    assert proc.returncode == 0, proc.stderr
    assert "total of 3000 rows" in proc.stdout


def test_a_running_steps_log_is_followed_from_another_machine(shared, machine_agents, tmp_path):
    machine_agents("machine-1", shared, "--queue", "default")
    marker = tmp_path / "go-on"
    pipe = PipelineController(name="followed", project="shared")
    pipe.set_default_execution_queue("default")
    pipe.add_function_step("tick", ticking, {"marker": str(marker)}, ["y"])
    pipe.start_locally(wait=False)
    store = get_store()
    try:
        task_id = wait_until(lambda: pipe.get_pipeline_dag()["tick"].tasks[-1:], 60,
                             "the step to start")[0]
        wait_until(lambda: b"tick 0" in store.read_log(task_id).data, 60,
                   "the running step's first line in the database")
        assert store.get_task(task_id).status == "in_progress"
        assert not store.log_path(task_id).exists()  # read from the database, not a file
    finally:
        marker.write_text("go")
    pipe.wait()
    assert pipe.is_successful()
    lines = store.read_log(task_id).data.decode().splitlines()
    assert lines.index("tick 0") < lines.index("tick 1")  # every line, once, in order
    assert lines.count("tick 0") == lines.count("tick 1") == 1
