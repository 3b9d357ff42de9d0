"""Objects heal (RELIABILITY 27): a stored object whose bytes changed fails its next read with
``ArtifactCorrupt``; a cache hit whose objects fail verification runs the step again instead
of serving it; the next write of the same content replaces the bad object; ``pipekit db
check`` reports it and ``--repair`` quarantines it. Nothing valid is ever deleted.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline_helpers import node_statuses, run_locally

from pipekit import PipelineController, Task
from pipekit.cli import cli
from pipekit.errors import ArtifactCorrupt
from pipekit.functions import pack_callable
from pipekit.hashing import digest_bytes, digest_file
from pipekit.store import Store
from pipekit.store.blobs import BlobStore

#: more than the inline limit: stored as a file under artifacts/
BIG = bytes(range(256)) * 200


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0x01
    path.write_bytes(bytes(data))


def object_files(home: Path) -> dict[str, bytes]:
    """Every object file under ``artifacts/`` (name -> content)."""
    return {p.name: p.read_bytes() for p in (home / "artifacts").glob("??/*")}


def pk(*args: str, code: int | None = None):
    result = CliRunner().invoke(cli, list(args))
    if code is not None:
        assert result.exit_code == code, (result.output, result.exception)
    return result


@pytest.fixture
def task(store: Store) -> Task:
    return Task(store.create_task(project="heal", name="owner").id)


# -- a write replaces a bad object of the same digest ---------------------------------------


def test_flipped_byte_fails_the_read_and_the_next_write_heals_it(task, store):
    task.upload_artifact("data", BIG)
    digest = store.get_artifact(task.id, "data").ref.digest
    path = store.blobs.path(digest)
    flip_byte(path)
    with pytest.raises(ArtifactCorrupt) as err:
        task.artifacts["data"].get()
    assert err.value.artifact == "data" and err.value.digest == digest
    # the same bytes, written again (by anyone, under any name): the bad file is replaced
    other = Task(store.create_task(project="heal", name="again").id)
    other.upload_artifact("copy", BIG)
    assert digest_file(path) == digest
    assert task.artifacts["data"].get() == BIG
    assert other.artifacts["copy"].get() == BIG


def test_a_file_artifact_heals_too(task, store, tmp_path):
    src = tmp_path / "weights.bin"
    src.write_bytes(os.urandom(100_000))
    task.upload_artifact("weights", src)
    digest = store.get_artifact(task.id, "weights").ref.digest
    flip_byte(store.blobs.path(digest), 0)
    with pytest.raises(ArtifactCorrupt, match="'weights'"):
        task.artifacts["weights"].get_local_copy()
    task.upload_model("weights", src)  # a model upload of the same file heals it
    assert Path(task.artifacts["weights"].get_local_copy()).read_bytes() == src.read_bytes()


def test_a_function_blob_heals_on_the_next_put(store):
    data = os.urandom(5_000)  # a function pickle is always a file, however small
    digest = pack_callable(store, len, data)
    path = store.blobs.path(digest)
    path.write_bytes(data[:-1])  # truncated
    with pytest.raises(ArtifactCorrupt):
        store.blobs.verified_path(digest, "fn (function)")
    assert pack_callable(store, len, data) == digest
    assert store.blobs.verified_path(digest, "fn (function)").read_bytes() == data


DAMAGE = st.one_of(
    st.tuples(st.just("flip"), st.integers(min_value=0)),
    st.tuples(st.just("truncate"), st.integers(min_value=0)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=8)),
)


@settings(max_examples=60, deadline=None)
@given(content=st.binary(min_size=1, max_size=4096), damage=DAMAGE,
       spill=st.booleans())
def test_writing_the_same_content_again_always_heals(content, damage, spill):
    """Any damage to an object file (a flipped byte, a truncation, bytes appended) is undone
    by the next write of the same content, through a sink or ``put_bytes``; a good object is
    left as it is (same file, not rewritten).
    """
    with tempfile.TemporaryDirectory() as root:
        blobs = BlobStore(Path(root) / "artifacts")
        path = blobs.put_bytes(content)
        digest = digest_bytes(content)
        inode = path.stat().st_ino

        def write_again() -> None:
            if spill:
                sink = blobs.sink(inline_limit=-1)
                sink.write(content)
                assert sink.commit().digest == digest
            else:
                blobs.put_bytes(content)

        write_again()
        assert path.stat().st_ino == inode  # a good object is kept, not replaced
        kind, arg = damage
        data = bytearray(content)
        if kind == "flip":
            data[arg % len(data)] ^= 0x01
        elif kind == "truncate":
            del data[arg % len(data):]
        else:
            data += arg
        path.write_bytes(bytes(data))
        with pytest.raises(ArtifactCorrupt):
            blobs.verified_path(digest, "x")
        write_again()
        assert blobs.verified_path(digest, "x").read_bytes() == content
        assert os.listdir(blobs.tmp_dir()) == []


# -- a cache hit whose objects fail verification runs the step again -------------------------

CALLS: list[str] = []


def produce(n: int) -> bytes:
    CALLS.append("produce")
    return bytes(range(256)) * n


def consume(data: bytes) -> int:
    CALLS.append("consume")
    return len(data)


def _pipeline() -> PipelineController:
    pipe = PipelineController("heal", "heal-tests")
    pipe.add_function_step("produce", produce, function_kwargs={"n": 200},
                           function_return=["data"], cache_executed_step=True)
    pipe.add_function_step("consume", consume, function_kwargs={"data": "${produce.data}"},
                           function_return=["size"])
    return pipe


def test_a_cache_hit_whose_object_is_corrupt_runs_the_step_again(store, caplog):
    CALLS.clear()
    first = _pipeline()
    run_locally(first)
    assert first.is_successful() and CALLS.count("produce") == 1
    second = _pipeline()
    run_locally(second)
    assert second.is_successful() and CALLS.count("produce") == 1  # served from the cache
    producer = {n.name: n.task for n in store.list_nodes(first.id)}["produce"]
    digest = store.get_artifact(producer, "data").ref.digest
    flip_byte(store.blobs.path(digest))

    third = _pipeline()
    with caplog.at_level(logging.WARNING):
        run_locally(third)
    assert CALLS.count("produce") == 2  # the bad hit was not served
    assert third.is_successful()
    assert node_statuses(third.id)["produce"] == "completed"
    warned = [r.getMessage() for r in caplog.records
              if r.levelno >= logging.WARNING and "'produce'" in r.getMessage()]
    assert len(warned) == 1, caplog.text  # naming the object: artifact, task and digest
    assert "'data'" in warned[0] and producer in warned[0] and digest in warned[0]
    # the re-run wrote the same bytes: the object healed, for the old task too
    assert digest_file(store.blobs.path(digest)) == digest
    assert Task(producer).artifacts["data"].get() == produce(200)
    fourth = _pipeline()
    run_locally(fourth)
    assert fourth.is_successful() and CALLS.count("produce") == 3  # (one call above)
    assert node_statuses(fourth.id)["produce"] == "cached"


# -- pipekit db check [--repair] --------------------------------------------------------------


@pytest.fixture
def populated(store, tmp_path):
    """A store with every kind of object: a pipeline run (function pickles, inputs, outputs),
    file and inline artifacts, a model, a plot image, and an object nothing references.
    """
    CALLS.clear()
    run_locally(_pipeline())
    task = Task(store.create_task(project="heal", name="owner").id)
    task.upload_artifact("good", os.urandom(50_000))
    task.upload_artifact("bad", os.urandom(50_000))
    task.upload_artifact("small", {"inline": True})
    weights = tmp_path / "weights.bin"
    weights.write_bytes(os.urandom(70_000))
    task.upload_model("net", weights)
    task.get_logger().report_image("img", "s", iteration=0,
                                   image=np.zeros((8, 8, 3), dtype=np.uint8))
    store.blobs.put_bytes(os.urandom(40_000))  # referenced by nothing, and valid
    return task


def _problem_lines(output: str, digest: str) -> list[str]:
    return [line for line in output.splitlines() if digest in line]


def test_db_check_passes_on_a_healthy_store(populated, pipekit_home):
    result = pk("db", "check", code=0)
    assert result.output.splitlines()[-1].endswith("all verify"), result.output
    assert not (pipekit_home / "quarantine").exists()


def test_db_check_reports_a_corrupt_object_and_repair_quarantines_only_it(
        populated, store, pipekit_home):
    digest = store.get_artifact(populated.id, "bad").ref.digest
    flip_byte(store.blobs.path(digest))
    before = object_files(pipekit_home)

    result = pk("db", "check", code=1)
    (line,) = _problem_lines(result.output, digest)
    assert "'bad'" in line and populated.id in line and "corrupt" in line
    assert sum(1 for ln in result.output.splitlines() if "corrupt" in ln) == 1, result.output
    assert object_files(pipekit_home) == before  # a check alone changes nothing

    result = pk("db", "check", "--repair", code=1)
    moved = pipekit_home / "quarantine" / digest
    assert moved.read_bytes() == before[digest]
    assert str(moved) in result.output
    after = object_files(pipekit_home)
    assert set(after) == set(before) - {digest}
    for name, content in after.items():  # everything else is still there, unchanged, valid
        assert content == before[name]
        assert digest_bytes(content) == name
    for name in ("good", "small"):
        populated.artifacts[name].get()
    populated.models["output"][0].get_local_copy()

    # what is left is a reference to a missing object, reported as such
    result = pk("db", "check", code=1)
    (line,) = _problem_lines(result.output, digest)
    assert "missing" in line and "'bad'" in line and populated.id in line
    # the same content written again: the store is whole
    populated.upload_artifact("bad", before[digest])
    pk("db", "check", code=0)


def test_db_check_sees_every_kind_of_reference(populated, store, pipekit_home):
    """A model, a function pickle and a plot image are checked like artifacts."""
    model = populated.models["output"][0]
    run_task = store.find_tasks(name="produce")[0]
    callable_digest = run_task.script["callable"]
    (plot,) = store.reports(populated.id, "plot")
    image_digest = json.loads(plot.content)["image"]["digest"]
    for digest in (model.digest, callable_digest, image_digest):
        store.blobs.path(digest).unlink()
    result = pk("db", "check", "--json", code=1)
    found = {p["digest"]: p for p in json.loads(result.output)["problems"]}
    assert set(found) == {model.digest, callable_digest, image_digest}
    assert all(p["state"] == "missing" for p in found.values())
    assert any("'net'" in use and populated.id in use for use in found[model.digest]["uses"])
    assert any(run_task.id in use for use in found[callable_digest]["uses"])
    assert any(populated.id in use for use in found[image_digest]["uses"])


def test_db_check_reports_a_corrupt_inline_object_and_leaves_it(populated, store):
    ref = store.get_artifact(populated.id, "small").ref
    assert ref.inline is not None
    db = sqlite3.connect(store.settings.sqlite_path)
    try:
        db.execute("UPDATE artifact SET inline = ? WHERE task_id = ? AND name = 'small'",
                   (ref.inline.replace(b"true", b"null"), populated.id))
        db.commit()
    finally:
        db.close()
    result = pk("db", "check", "--repair", code=1)
    (line,) = _problem_lines(result.output, ref.digest)
    assert "'small'" in line and "inline" in line


def test_db_check_reports_and_quarantines_a_corrupt_unreferenced_object(
        populated, store, pipekit_home):
    stray = os.urandom(40_000)
    path = store.blobs.put_bytes(stray)
    flip_byte(path)
    result = pk("db", "check", code=1)
    (line,) = _problem_lines(result.output, path.name)
    assert "referenced by nothing" in line
    pk("db", "check", "--repair", code=1)
    assert not path.exists()
    assert (pipekit_home / "quarantine" / path.name).exists()
    pk("db", "check", code=0)  # nothing references it: the store is whole again


def test_quarantine_never_moves_a_valid_object(store, pipekit_home, monkeypatch):
    """A writer may heal an object between the check and the repair: the repair verifies
    what it moved once more and puts a valid object back.
    """
    from pipekit.store.check import quarantine

    path = store.blobs.put_bytes(os.urandom(40_000))
    before = path.read_bytes()
    assert quarantine(store, path.name) is None  # it verifies: not moved
    assert path.read_bytes() == before
    # healed just after the check that found it bad: moved, found good, put back
    monkeypatch.setattr(type(store.blobs), "holds", lambda self, digest, size=None: False)
    assert quarantine(store, path.name) is None
    assert path.read_bytes() == before
    assert not any((pipekit_home / "quarantine").glob("*"))


def test_db_check_help_says_what_it_does():
    result = pk("db", "check", "--help", code=0)
    assert "--repair" in result.output and "quarantine" in result.output
