"""Objects heal (RELIABILITY 27): a stored object whose bytes changed fails its next read with
``ArtifactCorrupt``; a cache hit whose objects fail verification runs the step again instead
of serving it; the next write of the same content replaces the bad object; ``pipekit db
check`` reports it and ``--repair`` quarantines it. Nothing valid is ever deleted.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pipeline_helpers import node_statuses, run_locally

from pipekit import PipelineController, Task
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
